//! Helpers of the cross-crate tests: the bundled model and its evaluation set.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub(crate) fn bundled_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llada")
}

#[derive(Deserialize)]
pub(crate) struct Eval {
    pub(crate) gen_length: usize,
    pub(crate) block_length: usize,
    pub(crate) steps: usize,
    pub(crate) items: Vec<Item>,
}

#[derive(Deserialize, Clone)]
pub(crate) struct Item {
    pub(crate) prompt: String,
    pub(crate) answer: String,
    pub(crate) prompt_ids: Vec<u32>,
    pub(crate) answer_ids: Vec<u32>,
}

pub(crate) fn eval_set() -> Eval {
    serde_json::from_str(&std::fs::read_to_string(bundled_model().join("eval.json")).unwrap())
        .unwrap()
}

/// The PyTorch sampler's generated ids for every eval item.
pub(crate) fn reference_outputs() -> Vec<Vec<u32>> {
    let value: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bundled_model().join("reference_outputs.json")).unwrap(),
    )
    .unwrap();
    serde_json::from_value(value["outputs"].clone()).unwrap()
}

/// Path of an example binary built by `cargo test` next to the test binaries.
pub(crate) fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    dir.join("examples").join(name)
}

/// `ORT_DYLIB_PATH`, which the test command sets; ORT tests fail loudly without it.
pub(crate) fn ort_library() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).expect(
        "ORT_DYLIB_PATH is not set: run the tests through ./.ci/test, which installs onnxruntime==1.31.1 into .venv",
    )
}

/// The id of a special token of the bundled model, from its `tokenizer_config.json`.
pub(crate) fn special_id(content: &str) -> u32 {
    let value: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bundled_model().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    let (id, _) = value["added_tokens_decoder"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, t)| t["content"] == content)
        .unwrap_or_else(|| panic!("{content} is not a special token of the bundled model"));
    id.parse().unwrap()
}

/// Generated ids up to the first EOS or EOT.
pub(crate) fn answer_of(output: &[u32]) -> &[u32] {
    let (eos, eot) = (special_id("<|endoftext|>"), special_id("<|eot_id|>"));
    let end = output
        .iter()
        .position(|&t| t == eos || t == eot)
        .unwrap_or(output.len());
    &output[..end]
}
