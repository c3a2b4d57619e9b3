//! Test support shared by every crate's tests, the examples and the benchmark: the bundled
//! fixtures and their paths, the `eval.json` schema, the PyTorch reference outputs, a counting
//! global allocator and the Fast-dLLM configurations. Each of these is declared here once.

mod alloc;

use std::path::{Path, PathBuf};

use llada_core::{CacheMode, CommitRule, GenerateParams};
use serde::Deserialize;

pub use alloc::CountingAllocator;

/// `tests/fixtures/<name>` of the workspace.
pub fn fixture(name: &str) -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/support is inside tests/");
    tests.join("fixtures").join(name)
}

/// The bundled tiny LLaDA model (`tests/fixtures/tiny-llada`).
pub fn bundled_model() -> PathBuf {
    fixture("tiny-llada")
}

/// The bundled tiny Dream-shaped model (`tests/fixtures/tiny-dream`): a Qwen2 body with q/k/v
/// biases and shifted logits, saved as Dream's release is (bf16, two shards).
pub fn dream_model() -> PathBuf {
    fixture("tiny-dream")
}

/// An `eval.json` set: prompts with their answers and token ids, and the generation lengths
/// the model was trained for.
#[derive(Clone, Debug, Deserialize)]
pub struct EvalSet {
    /// Tokens to generate.
    pub gen_length: usize,
    /// Block length.
    pub block_length: usize,
    /// Denoising steps.
    pub steps: usize,
    /// The items.
    pub items: Vec<EvalItem>,
}

/// One held-out prompt.
#[derive(Clone, Debug, Deserialize)]
pub struct EvalItem {
    /// The user's message.
    pub prompt: String,
    /// The expected answer.
    pub answer: String,
    /// The chat-formatted prompt's ids.
    pub prompt_ids: Vec<u32>,
    /// The answer's ids (without end-of-text).
    pub answer_ids: Vec<u32>,
}

impl EvalSet {
    /// Reads an `eval.json`.
    pub fn load(path: &Path) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(serde_json::from_str(&text)
            .map_err(|e| format!("invalid eval set {}: {e}", path.display()))?)
    }

    /// The reference schedule these lengths imply, on top of `base` (a model's defaults).
    pub fn params(&self, base: GenerateParams) -> GenerateParams {
        base.with_steps(self.steps)
            .with_gen_length(self.gen_length)
            .with_block_length(self.block_length)
    }
}

/// The bundled model's held-out set.
///
/// # Panics
/// If the fixture is missing or malformed.
pub fn eval_set() -> EvalSet {
    EvalSet::load(&bundled_model().join("eval.json")).expect("the bundled eval set")
}

/// The PyTorch sampler's generated ids for every item of the bundled eval set.
///
/// # Panics
/// If the fixture is missing or malformed.
pub fn reference_outputs() -> Vec<Vec<u32>> {
    let text = std::fs::read_to_string(bundled_model().join("reference_outputs.json"))
        .expect("the bundled reference outputs");
    let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    serde_json::from_value(value["outputs"].clone()).expect("a list of id lists")
}

/// The id of a special token of the bundled model, from its `tokenizer_config.json`.
///
/// # Panics
/// If the model has no such token.
pub fn special_id(content: &str) -> u32 {
    let text = std::fs::read_to_string(bundled_model().join("tokenizer_config.json"))
        .expect("the bundled tokenizer_config.json");
    let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let (id, _) = value["added_tokens_decoder"]
        .as_object()
        .expect("added_tokens_decoder")
        .iter()
        .find(|(_, t)| t["content"] == content)
        .unwrap_or_else(|| panic!("{content} is not a special token of the bundled model"));
    id.parse().expect("a numeric id")
}

/// The bundled model's mask id (`mask_token_id` of its `config.json`).
pub fn bundled_mask_id() -> u32 {
    special_id("<|mdm_mask|>")
}

/// A left-padded batch of two rows for the bundled model: a 20-token prompt (ids from 5 on),
/// then 32 masks; row 1 padded by 6 (id 0, mask 0). Ids `[2, 52]` and the attention mask.
pub fn padded_canvas() -> (Vec<u32>, Vec<u8>) {
    let mask_id = bundled_mask_id();
    let seq = 20 + 32;
    let mut ids = Vec::with_capacity(2 * seq);
    let mut mask = Vec::with_capacity(2 * seq);
    for (r, pad) in [0usize, 6].into_iter().enumerate() {
        for p in 0..seq {
            let id = match p {
                p if p < pad => 0,
                p if p < 20 => 5 + ((p * 7 + r * 3) % 500) as u32,
                _ => mask_id,
            };
            ids.push(id);
            mask.push(u8::from(p >= pad));
        }
    }
    (ids, mask)
}

/// Generated ids up to the first EOS or EOT of the bundled model.
pub fn answer_of(output: &[u32]) -> &[u32] {
    let (eos, eot) = (special_id("<|endoftext|>"), special_id("<|eot_id|>"));
    let end = output
        .iter()
        .position(|&t| t == eos || t == eot)
        .unwrap_or(output.len());
    &output[..end]
}

/// One golden forward pass of a fixture: inputs and reference logits.
#[derive(Clone, Debug)]
pub struct GoldenCase {
    /// `case{N}`.
    pub name: String,
    /// Rows.
    pub batch: usize,
    /// Tokens per row.
    pub seq: usize,
    /// Input ids, `[batch, seq]`.
    pub ids: Vec<u32>,
    /// Attention mask, `[batch, seq]` (0 = padding).
    pub mask: Vec<u8>,
    /// Reference logits, `[batch, seq, vocab]`.
    pub logits: Vec<f32>,
}

/// The cases of a golden-logits file: `case{N}.input_ids` and `case{N}.attention_mask` (int64
/// `[B, L]`) with the logits `{prefix}case{N}.logits` (float32 `[B, L, V]`): `prefix` is empty
/// for a model's `golden_logits.safetensors`, the file type (`"f16."`) for a GGUF reference.
///
/// # Panics
/// If the file is missing or malformed.
pub fn golden_cases_in(path: &Path, prefix: &str) -> Vec<GoldenCase> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("golden logits {}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("golden logits parse");
    let tensor = |name: &str| {
        st.tensor(name)
            .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()))
    };
    let ints = |name: &str| -> (Vec<usize>, Vec<i64>) {
        let t = tensor(name);
        let v = t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        (t.shape().to_vec(), v)
    };
    let mut names: Vec<String> = st
        .names()
        .iter()
        .filter_map(|n| n.strip_suffix(".input_ids").map(str::to_string))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let (shape, ids) = ints(&format!("{name}.input_ids"));
            let (_, mask) = ints(&format!("{name}.attention_mask"));
            let logits = tensor(&format!("{prefix}{name}.logits"))
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect();
            GoldenCase {
                name,
                batch: shape[0],
                seq: shape[1],
                ids: ids.iter().map(|&i| i as u32).collect(),
                mask: mask.iter().map(|&m| m as u8).collect(),
                logits,
            }
        })
        .collect()
}

/// Path of an example binary that `cargo test` built beside the running test binary.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in <profile>/deps");
    profile.join("examples").join(name)
}

/// `ORT_DYLIB_PATH`, which the test command sets.
///
/// # Panics
/// If it is not set: the ONNX Runtime tests must fail loudly, not pass silently.
pub fn ort_library() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).expect(
        "ORT_DYLIB_PATH is not set: run the tests through ./.ci/test, which installs onnxruntime==1.31.1 into .venv",
    )
}

/// Fast-dLLM's decoding configurations on top of `reference` (the reference schedule), as
/// the tests and the benchmark compare them: name and parameters.
pub fn fast_dllm_configs(reference: GenerateParams) -> Vec<(&'static str, GenerateParams)> {
    let threshold = reference.with_commit(CommitRule::Threshold(0.9));
    vec![
        ("threshold 0.9", threshold),
        ("factor 1.0", reference.with_commit(CommitRule::Factor(1.0))),
        (
            "threshold 0.9 + prefix cache",
            threshold.with_cache(CacheMode::Prefix),
        ),
        (
            "threshold 0.9 + dual cache",
            threshold.with_cache(CacheMode::Dual),
        ),
    ]
}

/// The first held-out item of the bundled set that the PyTorch reference answers correctly,
/// with the reference's generated ids.
///
/// # Panics
/// If the reference answers none.
pub fn held_out_answered() -> (EvalItem, Vec<u32>) {
    eval_set()
        .items
        .into_iter()
        .zip(reference_outputs())
        .find(|(item, out)| answer_of(out) == item.answer_ids.as_slice())
        .expect("the reference answers some held-out prompt")
}

/// The bundled tiny LLaDA-MoE-shaped model (`tests/fixtures/tiny-llada-moe`): a mixture of
/// experts with per-head query/key norms, saved as LLaDA-MoE's release is (bf16, two shards,
/// one tensor per expert).
pub fn llada_moe_model() -> PathBuf {
    fixture("tiny-llada-moe")
}

/// The bundled tiny LLaDA2-shaped model (`tests/fixtures/tiny-llada2`): block diffusion with a
/// fused query/key/value projection, sigmoid group-limited routing, a shared expert and a
/// dense first layer, saved as LLaDA2's release is (bf16, two shards, one tensor per expert,
/// a multi-token-prediction layer inference ignores).
pub fn llada2_model() -> PathBuf {
    fixture("tiny-llada2")
}

/// One tensor of a safetensors file: its shape and its values widened to `f64`, for int64
/// and float32 tensors.
///
/// # Panics
/// If the file, the tensor or its type is not there.
pub fn safetensors_tensor(path: &Path, name: &str) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors parse");
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
    let values = match t.dtype() {
        safetensors::Dtype::I64 => t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f64)
            .collect(),
        safetensors::Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes(b.try_into().expect("4 bytes"))))
            .collect(),
        other => panic!("{name}: {other:?} tensors are not read here"),
    };
    (t.shape().to_vec(), values)
}

/// Adapts a forward closure (over any backend, its errors unwrapped) to `MaskPredictor`, so that
/// two backends run one generic code path with one set of buffers.
pub struct FnPredictor<'a>(
    pub &'a mut dyn FnMut(&llada_core::ForwardRequest<'_>, &mut [f32]),
    /// The vocabulary.
    pub usize,
    /// The longest sequence.
    pub usize,
);

impl llada_core::MaskPredictor for FnPredictor<'_> {
    type Error = core::convert::Infallible;
    fn vocab_size(&self) -> usize {
        self.1
    }
    fn max_sequence_length(&self) -> usize {
        self.2
    }
    fn forward(
        &mut self,
        request: &llada_core::ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), Self::Error> {
        (self.0)(request, logits);
        Ok(())
    }
}
