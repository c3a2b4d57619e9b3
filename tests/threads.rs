//! One loaded model shared by several threads, each with its own pipeline and its own prompts
//! and decoding settings: every answer equals the one-thread run's, token for token. (The C
//! version is llada-ffi/tests/c/threads.c.)

use std::sync::Arc;

use llada::core::{CacheMode, CommitRule, GenerateParams};
use llada::{BackendChoice, Model, Pipeline};
use llada_test_support::{bundled_model, eval_set, fixture};

/// Thread `t`'s jobs: eval prompts `t, t + THREADS, ...` under settings that differ by thread.
const THREADS: usize = 4;
const PER_THREAD: usize = 6;

fn settings(base: GenerateParams, t: usize) -> GenerateParams {
    match t % 4 {
        0 => base,
        1 => base
            .with_commit(CommitRule::Threshold(0.9))
            .with_cache(CacheMode::Dual),
        2 => base.with_cache(CacheMode::Prefix),
        _ => base.with_temperature(0.7).with_seed(t as u64),
    }
}

fn jobs(model: &Arc<Model>, t: usize) -> Vec<(Vec<u32>, GenerateParams)> {
    let eval = eval_set();
    let base = eval.params(model.default_params());
    (0..PER_THREAD)
        .map(|i| {
            let item = &eval.items[t + i * THREADS];
            (item.prompt_ids.clone(), settings(base, t))
        })
        .collect()
}

fn answers(pipeline: &mut Pipeline, jobs: &[(Vec<u32>, GenerateParams)]) -> Vec<Vec<u32>> {
    jobs.iter()
        .map(|(prompt, params)| {
            pipeline
                .generate_ids(std::slice::from_ref(prompt), params, |_| {
                    std::ops::ControlFlow::Continue(())
                })
                .unwrap()
                .remove(0)
                .output_ids
        })
        .collect()
}

fn shared_model_matches_one_thread(model: Arc<Model>) {
    let all: Vec<_> = (0..THREADS).map(|t| jobs(&model, t)).collect();
    let mut one = Pipeline::with_threads(Arc::clone(&model), Some(1)).unwrap();
    let expected: Vec<_> = all.iter().map(|j| answers(&mut one, j)).collect();
    let got: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = all
            .iter()
            .map(|jobs| {
                let model = Arc::clone(&model);
                s.spawn(move || {
                    let mut pipeline = Pipeline::with_threads(model, Some(1)).unwrap();
                    answers(&mut pipeline, jobs)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(got, expected);
}

#[test]
fn a_model_shared_by_threads_answers_as_one_thread_does() {
    shared_model_matches_one_thread(Model::load(bundled_model(), &BackendChoice::Ndarray).unwrap());
}

#[test]
fn a_quantized_gguf_model_shared_by_threads_answers_as_one_thread_does() {
    let path = fixture("tiny-llada/gguf/tiny-llada-q4_0.gguf");
    shared_model_matches_one_thread(Model::load(path, &BackendChoice::Ndarray).unwrap());
}
