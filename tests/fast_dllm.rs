//! Fast-dLLM on the bundled model's held-out set: confidence-threshold decoding with the
//! block-wise cache keeps the reference schedule's accuracy (within a point) with at least
//! three times fewer forward passes. Speed is measured by the benchmark, not here.

mod common;

use std::ops::ControlFlow;

use llada::core::{CacheMode, CommitRule, GenerateParams};
use llada::{BackendChoice, Pipeline};
use llada_test_support::{EvalSet, bundled_model, eval_set, fast_dllm_configs};

/// Exact-match accuracy and mean forward passes per answer.
fn score(pipeline: &mut Pipeline, eval: &EvalSet, params: &GenerateParams) -> (f64, f64) {
    let (exact, passes) = common::score(pipeline, params, eval);
    (exact as f64 / eval.items.len() as f64, passes)
}

#[test]
fn threshold_decoding_with_a_dual_cache_keeps_accuracy_with_fewer_passes() {
    let mut pipeline = Pipeline::open(bundled_model(), &BackendChoice::Ndarray).unwrap();
    let eval = eval_set();
    let reference = eval.params(pipeline.default_params());
    let (ref_accuracy, ref_passes) = score(&mut pipeline, &eval, &reference);
    assert_eq!(ref_passes, eval.steps as f64);
    assert!(ref_accuracy >= 0.9, "reference accuracy {ref_accuracy}");
    for (name, params) in fast_dllm_configs(reference) {
        let (accuracy, passes) = score(&mut pipeline, &eval, &params);
        eprintln!(
            "{name}: accuracy {accuracy:.3} (reference {ref_accuracy:.3}), {passes:.2} forward passes per answer"
        );
        assert!(
            accuracy >= ref_accuracy - 0.01,
            "{name}: accuracy {accuracy} vs {ref_accuracy}"
        );
        assert!(
            passes * 3.0 <= ref_passes,
            "{name}: {passes} passes per answer vs {ref_passes}"
        );
    }
}

/// One run of the transcription: generated ids and forward passes.
#[derive(serde::Deserialize)]
struct Runs {
    outputs: Vec<Vec<u32>>,
    passes: Vec<usize>,
}

#[derive(serde::Deserialize)]
struct BatchRun {
    outputs: Vec<Vec<u32>>,
    passes: usize,
}

#[derive(serde::Deserialize)]
struct Batch {
    items: Vec<usize>,
    f32: BatchRun,
    f64: BatchRun,
}

#[derive(serde::Deserialize)]
struct Config {
    threshold: f64,
    cache: String,
    f32: Runs,
    f64: Runs,
    batch: Batch,
}

#[derive(serde::Deserialize)]
struct Upstream {
    gen_length: usize,
    block_length: usize,
    configs: Vec<Config>,
}

/// Fast-dLLM's threshold decoder as NVlabs ships it (`llada/generate.py`), transcribed and run
/// in PyTorch on the bundled model by `tests/fixtures/fast_dllm_reference.py`: ours gives the
/// same tokens on every eval prompt and on a padded batch of three, with `steps` set to
/// Fast-dLLM's recipe (gen_length / block_length) or to gen_length (a rule ignores it), the
/// same number of forward passes without a cache and never more with one (upstream runs a
/// cached pass even after the block's first, full pass filled it). A float32 near-tie that
/// decides differently is settled by the transcription's float64 run; such cases are listed.
#[test]
fn threshold_decoding_matches_a_transcription_of_upstream_fast_dllm() {
    let text = std::fs::read_to_string(bundled_model().join("fast_dllm_reference.json")).unwrap();
    let upstream: Upstream = serde_json::from_str(&text).unwrap();
    let mut pipeline = Pipeline::open(bundled_model(), &BackendChoice::Ndarray).unwrap();
    let eval = eval_set();
    assert_eq!(
        (upstream.gen_length, upstream.block_length),
        (eval.gen_length, eval.block_length)
    );
    assert!(upstream.configs.len() >= 6);
    let mut near_ties = Vec::new();
    for config in &upstream.configs {
        let cache = match config.cache.as_str() {
            "none" => CacheMode::None,
            "prefix" => CacheMode::Prefix,
            "dual" => CacheMode::Dual,
            other => panic!("unknown cache {other}"),
        };
        let recipes = [eval.gen_length / eval.block_length, eval.gen_length];
        for steps in recipes {
            let params = eval
                .params(pipeline.default_params())
                .with_steps(steps)
                .with_commit(CommitRule::Threshold(config.threshold))
                .with_cache(cache);
            let name = format!(
                "threshold {} cache {} steps {steps}",
                config.threshold, config.cache
            );
            let check_passes = |ours: usize, theirs: usize, what: &str| {
                if cache == CacheMode::None {
                    assert_eq!(ours, theirs, "{name}, {what}: forward passes");
                } else {
                    assert!(
                        ours <= theirs,
                        "{name}, {what}: {ours} passes, upstream {theirs}"
                    );
                }
            };
            for (i, item) in eval.items.iter().enumerate() {
                let out = pipeline
                    .generate_ids(std::slice::from_ref(&item.prompt_ids), &params, |_| {
                        ControlFlow::Continue(())
                    })
                    .unwrap()
                    .remove(0);
                let run = if out.output_ids == config.f32.outputs[i] {
                    &config.f32
                } else {
                    assert_eq!(
                        out.output_ids, config.f64.outputs[i],
                        "{name}, item {i} {:?}: differs from upstream in float32 and float64",
                        item.prompt
                    );
                    near_ties.push(format!("{name}, item {i}"));
                    &config.f64
                };
                check_passes(out.forward_passes, run.passes[i], &format!("item {i}"));
            }
            let prompts: Vec<Vec<u32>> = config
                .batch
                .items
                .iter()
                .map(|&i| eval.items[i].prompt_ids.clone())
                .collect();
            assert!(prompts.iter().any(|p| p.len() != prompts[0].len()));
            let outs = pipeline
                .generate_ids(&prompts, &params, |_| ControlFlow::Continue(()))
                .unwrap();
            let ours: Vec<Vec<u32>> = outs.iter().map(|o| o.output_ids.clone()).collect();
            let run = if ours == config.batch.f32.outputs {
                &config.batch.f32
            } else {
                assert_eq!(ours, config.batch.f64.outputs, "{name}, padded batch");
                near_ties.push(format!("{name}, padded batch"));
                &config.batch.f64
            };
            check_passes(outs[0].forward_passes, run.passes, "padded batch");
        }
    }
    eprintln!(
        "float32 near-ties settled by the float64 transcription: {}",
        if near_ties.is_empty() {
            "none".to_string()
        } else {
            near_ties.join("; ")
        }
    );
}
