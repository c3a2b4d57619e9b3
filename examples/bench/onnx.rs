//! The benchmark's ONNX Runtime rows, on the mid-size model's cached graph
//! (`bench-models/mid/model.onnx`) and its 4-bit copy (`model-int4.onnx`, both written by
//! `examples/bench/make_bench_model.py`): a Fast-dLLM cached step against a full pass, from
//! Rust and from Python; 4-bit weights against f32 and against the ndarray backend's Q4_0 and
//! Q4_K_M files; and what a warm step allocates.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use llada::core::{CacheHint, CacheMode, ForwardRequest, MaskPredictor};
use llada::ort::OrtPredictor;
use llada_test_support::CountingAllocator;

use crate::{random_ids, time_cached_steps, time_forwards};

/// Where the pieces are.
pub(crate) struct Inputs<'a> {
    pub model: &'a Path,
    pub gguf_dir: &'a Path,
    pub python: &'a Path,
    pub library: Option<PathBuf>,
    pub threads: usize,
    pub repeats: usize,
    pub skip_python: bool,
}

/// The 256-token canvas of the cached-step rows: a 128-token prompt and 128 masks, the logits
/// window on the first 32-token block.
const PROMPT: usize = 128;
const GEN: usize = 128;

fn ort(inputs: &Inputs<'_>, file: &str) -> anyhow::Result<OrtPredictor> {
    let path = inputs.model.join(file);
    let mut builder = OrtPredictor::builder(&path).intra_threads(inputs.threads);
    if let Some(library) = &inputs.library {
        builder = builder.library(library);
    }
    let predictor = builder
        .build()
        .with_context(|| format!("loading {}", path.display()))?;
    if !predictor.has_cache() {
        bail!(
            "{} is not a cached graph: rerun examples/bench/make_bench_model.py {}",
            path.display(),
            inputs.model.display()
        );
    }
    Ok(predictor)
}

/// Rust-side allocations of `steps` warm dual-cache steps (after a refresh and one step).
fn warm_step_allocations<P: MaskPredictor>(p: &mut P, mask_id: u32, steps: usize) -> usize
where
    P::Error: std::fmt::Debug,
{
    let seq = PROMPT + GEN;
    let mut ids = random_ids(3, PROMPT, p.vocab_size());
    ids.resize(seq, mask_id);
    let span = PROMPT..PROMPT + 32;
    let mut logits = vec![0.0f32; 32 * p.vocab_size()];
    let mut step = |p: &mut P, ids: &[u32], refresh: bool| {
        let request = ForwardRequest::new(ids, 1, seq)
            .and_then(|r| r.with_window(span.clone()))
            .and_then(|r| {
                r.with_cache(CacheHint {
                    mode: CacheMode::Dual,
                    span: span.clone(),
                    refresh,
                })
            })
            .expect("a valid request");
        p.forward(&request, &mut logits).expect("a step");
    };
    step(p, &ids, true);
    step(p, &ids, false);
    let mut total = 0;
    for i in 0..steps {
        ids[PROMPT + i] = 5;
        total += CountingAllocator::during(|| step(p, &ids, false)).1;
    }
    total
}

/// `ort_cached_step.py`'s medians: (full, dual, prefix, onnxruntime version).
fn python_steps(inputs: &Inputs<'_>) -> anyhow::Result<(f64, f64, f64, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bench/ort_cached_step.py");
    let output = Command::new(inputs.python)
        .arg(&script)
        .arg(inputs.model.join("model.onnx"))
        .args(["--prompt", &PROMPT.to_string(), "--gen", &GEN.to_string()])
        .args(["--threads", &inputs.threads.to_string()])
        .args(["--repeats", &inputs.repeats.to_string()])
        .output()
        .with_context(|| format!("running {}", inputs.python.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let get = |k: &str| v[k].as_f64().with_context(|| format!("no `{k}` in {v}"));
    Ok((
        get("full")?,
        get("dual")?,
        get("prefix")?,
        v["onnxruntime"].as_str().unwrap_or("?").to_string(),
    ))
}

/// The section, from its heading.
pub(crate) fn section(inputs: &Inputs<'_>, cpu: &str, mask_id: u32) -> anyhow::Result<String> {
    let mut f32_graph = ort(inputs, "model.onnx")?;
    let mut int4_graph = ort(inputs, "model-int4.onnx")?;
    let safetensors = Arc::new(llada::ndarray::Model::load(inputs.model)?);
    let mut ndarray = llada::ndarray::Context::with_threads(safetensors, inputs.threads)?;
    let mut gguf = Vec::new();
    for ty in ["q4_0", "q4_k_m"] {
        let path = inputs.gguf_dir.join(format!("mid-{ty}.gguf"));
        if path.is_file() {
            let model = Arc::new(llada::ndarray::Model::load(&path)?);
            gguf.push((
                format!("llada ndarray, GGUF {}", ty.to_uppercase()),
                llada::ndarray::Context::with_threads(model, inputs.threads)?,
            ));
        }
    }

    eprintln!("ONNX Runtime: cached steps");
    let mut steps = Vec::new();
    let (full, dual, prefix) =
        time_cached_steps(&mut f32_graph, PROMPT, GEN, mask_id, inputs.repeats)?;
    steps.push(("llada ort, f32 (Rust)", full, dual, prefix));
    let (full, dual, prefix) =
        time_cached_steps(&mut int4_graph, PROMPT, GEN, mask_id, inputs.repeats)?;
    steps.push(("llada ort, 4-bit MatMulNBits (Rust)", full, dual, prefix));
    let (full, dual, prefix) =
        time_cached_steps(&mut ndarray, PROMPT, GEN, mask_id, inputs.repeats)?;
    steps.push(("llada ndarray, f32", full, dual, prefix));
    let mut python_version = None;
    if !inputs.skip_python {
        eprintln!("ONNX Runtime from Python: cached steps");
        let (full, dual, prefix, version) = python_steps(inputs)?;
        steps.push((
            "onnxruntime from Python, f32, `sess.run`",
            full,
            dual,
            prefix,
        ));
        python_version = Some(version);
    }

    let mut forwards = Vec::new();
    for len in [32, 256] {
        eprintln!("ONNX Runtime: forward, {len} tokens");
        let mut engines: Vec<(&str, &mut dyn crate::Forward)> = vec![
            ("llada ort, f32", &mut f32_graph),
            ("llada ort, 4-bit MatMulNBits", &mut int4_graph),
        ];
        for (label, context) in &mut gguf {
            engines.push((label.as_str(), context));
        }
        let (labels, mut engines): (Vec<&str>, Vec<&mut dyn crate::Forward>) =
            engines.into_iter().unzip();
        let timings = time_forwards(&mut engines, len, inputs.repeats)?;
        for (label, timing) in labels.into_iter().zip(timings) {
            forwards.push((label.to_string(), len, timing.median));
        }
    }
    let allocations = warm_step_allocations(&mut f32_graph, mask_id, 8);

    let mut md = String::new();
    writeln!(md, "\n## ONNX Runtime\n")?;
    writeln!(
        md,
        "Produced by `cargo run --release --example benchmark -- --only-onnx` (one run) on {cpu}, {} threads per engine, on the mid-size model's cached graph (`examples/bench/make_bench_model.py`: the exporter's `--graph cached`, f32) and its 4-bit copy (ONNX Runtime's `MatMulNBits` quantizer: blocks of 128, symmetric, `accuracy_level` 4, every projection and the LM head; the embedding stays f32){}.\n",
        inputs.threads,
        python_version
            .as_ref()
            .map(|v| format!("; onnxruntime {v} from Python"))
            .unwrap_or_default()
    )?;
    writeln!(
        md,
        "One denoising step at a {}-token canvas (prompt {PROMPT}, {GEN} masks), logits of the first 32-token block, median of {} runs each (a full pass, then a step against the keys and values of the full pass: the block alone for the dual cache, the block and what follows for the prefix cache):\n",
        PROMPT + GEN,
        inputs.repeats
    )?;
    writeln!(
        md,
        "| engine | full pass (s) | dual-cache step (s) | prefix-cache step (s) | dual speed-up | prefix speed-up |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|")?;
    for (label, full, dual, prefix) in &steps {
        writeln!(
            md,
            "| {label} | {full:.4} | {dual:.4} | {prefix:.4} | {:.1}x | {:.1}x |",
            full / dual,
            full / prefix
        )?;
    }
    writeln!(
        md,
        "\nOne forward pass (batch 1, full logits), median of {} interleaved runs:\n",
        inputs.repeats
    )?;
    writeln!(md, "| engine | tokens | median (s) | ratio to ORT f32 |")?;
    writeln!(md, "|---|---:|---:|---:|")?;
    for &(ref label, len, t) in &forwards {
        let base = forwards
            .iter()
            .find(|r| r.0 == "llada ort, f32" && r.1 == len)
            .map_or(f64::NAN, |r| r.2);
        writeln!(md, "| {label} | {len} | {t:.4} | {:.2}x |", t / base)?;
    }
    writeln!(
        md,
        "\nAllocations on the Rust side per warm ORT step (dual cache, 8 steps after a refresh): {:.1}. The tensors are bound once per shape through `IoBinding`, the ids written into the bound input in place, the logits read from the bound output, and the run goes to ONNX Runtime's `RunWithBinding` directly; ONNX Runtime's own arena (C++) is not counted.",
        allocations as f64 / 8.0
    )?;
    Ok(md)
}
