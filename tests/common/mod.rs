//! Helpers shared by the cross-crate tests of the model families: one prompt's generation,
//! the score of a held-out set, and agreement with llama.cpp's answers on its own files.
#![allow(dead_code)] // each test binary uses some of them

use std::ops::ControlFlow;

use llada::core::{CommitRule, GenerateParams, Remasking};
use llada::{BackendChoice, Model, Pipeline};
use llada_test_support::{EvalSet, fixture};

/// The generated ids of one prompt, and the forward passes they took.
pub(crate) fn generate(
    pipeline: &mut Pipeline,
    prompt: &[u32],
    params: &GenerateParams,
) -> (Vec<u32>, usize) {
    let out = pipeline
        .generate_ids(&[prompt.to_vec()], params, |_| ControlFlow::Continue(()))
        .unwrap()
        .remove(0);
    (out.output_ids, out.forward_passes)
}

/// Exact matches on the held-out set, and forward passes per answer (one prompt per call, as
/// a user counts them).
pub(crate) fn score(
    pipeline: &mut Pipeline,
    params: &GenerateParams,
    eval: &EvalSet,
) -> (usize, f64) {
    let (mut exact, mut passes) = (0usize, 0usize);
    for item in &eval.items {
        let out = pipeline
            .generate_ids(std::slice::from_ref(&item.prompt_ids), params, |_| {
                ControlFlow::Continue(())
            })
            .unwrap()
            .remove(0);
        exact += usize::from(out.answer_ids == item.answer_ids);
        passes += out.forward_passes;
    }
    (exact, passes as f64 / eval.items.len() as f64)
}

/// How many of `eval`'s prompts get llama.cpp's answer on the `ty` file its converter made of
/// the fixture `model` (`tests/fixtures/{model}/gguf/{model}-{ty}.gguf`, answers in
/// `llama_cpp_answers.json` beside it). Blocks of one token, one step each, so both engines
/// decode left to right on the same weights and every algorithm ranks a single candidate. Our
/// sampler runs on the file alone in a directory (tokenizer and template from its metadata).
pub(crate) fn agreement_with_llama_cpp(model: &str, ty: &str, eval: &EvalSet) -> usize {
    let path = fixture(&format!("{model}/gguf/llama_cpp_answers.json"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let answers: Vec<String> = json["files"][ty]["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(answers.len(), eval.items.len());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{model}-{ty}.gguf"));
    std::fs::copy(fixture(&format!("{model}/gguf/{model}-{ty}.gguf")), &file).unwrap();
    let loaded = Model::load(&file, &BackendChoice::Ndarray).unwrap();
    let mut pipeline = Pipeline::with_threads(loaded.clone(), Some(1)).unwrap();
    let params = pipeline
        .default_params()
        .with_commit(CommitRule::Schedule)
        .with_remasking(Remasking::LowConfidence)
        .with_gen_length(16)
        .with_steps(16)
        .with_block_length(1);
    let mut same = 0;
    for (item, theirs) in eval.items.iter().zip(&answers) {
        assert_eq!(
            loaded.chat_prompt_ids(&item.prompt).unwrap(),
            item.prompt_ids
        );
        let (out, passes) = generate(&mut pipeline, &item.prompt_ids, &params);
        assert_eq!(passes, 16);
        // llama.cpp prints every non-special token of the answer positions.
        let ours = loaded.tokenizer().decode(&out, true).unwrap();
        same += usize::from(&ours == theirs);
    }
    let n = eval.items.len();
    eprintln!("{model} {ty}: same answer as llama-diffusion-cli {same}/{n}");
    same
}
