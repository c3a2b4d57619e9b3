//! The benchmark's block-diffusion rows: the mid-size LLaDA2-shaped model
//! (`examples/bench/make_bench_llada2.py`, random weights) at Q4_K_M, beside the LLaDA-MoE-shaped
//! model of the same active size (`make_bench_moe.py`, llama.cpp's Q4_K_M file): resident
//! memory; tokens per second end to end for 256 tokens, LLaDA2.0's decoding (blocks of 32 on
//! the absolute grid, threshold 0.95, the exact prefix cache) beside LLaDA-MoE with Fast-dLLM's
//! threshold 0.9 and dual cache; and a cached block step beside a full forward pass.

use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use llada::core::{
    CacheHint, CacheMode, Canvas, CommitRule, ForwardRequest, GenerateParams, MaskPredictor,
    StepEvent, WorkspaceBuf, WorkspaceSizes, generate,
};
use llada::ndarray::{Context, Model};

/// The LLaDA2-shaped file and the LLaDA-MoE-shaped one in `dir`.
pub(crate) fn files(dir: &Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let llada2 = dir.join("llada2-q4_k_m.gguf");
    let moe = dir.join("moe-q4_k_m.gguf");
    (llada2.is_file() && moe.is_file()).then_some((llada2, moe))
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// One generation of `gen_length` tokens after a `prompt` (ids): seconds, forward passes.
fn run(
    context: &mut Context,
    params: &GenerateParams,
    prompt: &[u32],
) -> anyhow::Result<(f64, usize)> {
    let len = params.canvas_len(prompt.len());
    let mut tokens = vec![0; len];
    let canvas = Canvas::from_prompts(&mut tokens, prompt, 1, len - prompt.len(), params.mask_id)?;
    let vocab = context.vocab_size();
    let mut ws = WorkspaceBuf::new(&WorkspaceSizes::for_generation(
        params,
        1,
        prompt.len(),
        vocab,
    )?);
    let start = Instant::now();
    let stats = generate(
        context,
        params,
        canvas,
        ws.as_workspace(),
        &mut |_: &StepEvent<'_>| ControlFlow::Continue(()),
    )?;
    Ok((start.elapsed().as_secs_f64(), stats.forward_passes))
}

/// A 32-token block step against the exact prefix cache of everything before it, and a full
/// (uncached) forward pass of the same canvas: medians of `repeats`, seconds.
fn cached_step(
    context: &mut Context,
    ids: &[u32],
    block: usize,
    repeats: usize,
) -> anyhow::Result<(f64, f64)> {
    let seq = ids.len();
    let window = seq - block..seq;
    let vocab = context.vocab_size();
    let mut logits = vec![0.0f32; block * vocab];
    let plain = ForwardRequest::new(ids, 1, seq)?
        .with_window(window.clone())?
        .with_block_causal(block)?;
    let cached = plain.clone().with_cache(CacheHint {
        mode: CacheMode::Prefix,
        span: window,
        refresh: false,
    })?;
    // The first cached call fills the cache; the ones after it compute the block alone.
    context.forward(&cached, &mut logits)?;
    let (mut full, mut step) = (Vec::new(), Vec::new());
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        context.forward(&plain, &mut logits)?;
        full.push(t.elapsed().as_secs_f64());
        context.forward(&cached, &mut logits)?;
        let t = Instant::now();
        context.forward(&cached, &mut logits)?;
        step.push(t.elapsed().as_secs_f64());
    }
    Ok((median(full), median(step)))
}

/// The report's section, or `None` without the files.
pub(crate) fn section(
    machine: &str,
    gguf_dir: &Path,
    threads: usize,
    repeats: usize,
) -> anyhow::Result<Option<String>> {
    let Some((llada2_path, moe_path)) = files(gguf_dir) else {
        return Ok(None);
    };
    let mut md = String::new();
    let llada2 = Arc::new(Model::load(&llada2_path)?);
    let moe = Arc::new(Model::load(&moe_path)?);
    let active = |m: &Model| {
        let c = m.config();
        let x = c.moe.as_ref().map_or(0, |x| {
            c.n_layers
                .saturating_sub((0..c.n_layers).filter(|&i| !c.is_moe_layer(i)).count())
                * (x.experts - x.experts_per_token)
                * 3
                * c.d_model
                * x.expert_hidden_size
        });
        (c.parameter_count() - x) as f64 / 1e6
    };
    let c = llada2.config();
    let gate = c.moe.as_ref().context("the LLaDA2 file has no experts")?;
    writeln!(
        md,
        "\n## Block diffusion (LLaDA2.x architecture)\n\nThe mid-size LLaDA2-shaped model of `examples/bench/make_bench_llada2.py` (random weights; d_model {}, {} layers, {} heads / {} key-value heads, fused QKV, partial rotary {}/{}, layer 0 dense, {} experts of width {} in groups, top-{} sigmoid routing plus a shared expert; {:.0} M parameters, about {:.0} M active per token), written at Q4_K_M by this library (`--example gguf`, architecture `llada2`), beside the LLaDA-MoE-shaped model of the section above at Q4_K_M (llama.cpp's file; about {:.0} M active per token). {machine}, {threads} threads; `cargo run --release --example benchmark -- --only-llada2` measures this section alone.\n",
        c.d_model,
        c.n_layers,
        c.n_heads,
        c.n_kv_heads,
        c.rotary_dim,
        c.head_dim,
        gate.experts,
        gate.expert_hidden_size,
        gate.experts_per_token,
        c.parameter_count() as f64 / 1e6,
        active(&llada2),
        active(&moe),
    )?;
    writeln!(
        md,
        "| file | file (MiB) | resident weights (MiB) | weights / file |\n|---|---:|---:|---:|"
    )?;
    for (label, m) in [("LLaDA2 Q4_K_M", &llada2), ("LLaDA-MoE Q4_K_M", &moe)] {
        let (file, weights) = (m.checkpoint_bytes() as f64, m.weights_bytes() as f64);
        writeln!(
            md,
            "| {label} | {:.1} | {:.1} | {:.3} |",
            file / (1 << 20) as f64,
            weights / (1 << 20) as f64,
            weights / file
        )?;
    }

    // End to end: 256 tokens after a 64-token prompt.
    let prompt: Vec<u32> = (0..64u32).map(|i| (i * 7919) % 600).collect();
    let mask2 = c.mask_token_id.context("mask id")?;
    let eos2 = c.eos_token_id.context("eos id")?;
    let llada2_params = GenerateParams::llada2()
        .with_gen_length(256)
        .with_mask_id(mask2)
        .with_eos_id(eos2)
        .with_eot_id(eos2)
        .with_cache(CacheMode::Prefix);
    let cm = moe.config();
    let moe_params = GenerateParams::default()
        .with_gen_length(256)
        .with_block_length(32)
        .with_steps(256)
        .with_mask_id(cm.mask_token_id.context("mask id")?)
        .with_commit(CommitRule::Threshold(0.9))
        .with_cache(CacheMode::Dual);
    let mut ctx2 = Context::with_threads(llada2.clone(), threads)?;
    let mut ctx_moe = Context::with_threads(moe.clone(), threads)?;
    let runs = repeats.clamp(1, 3);
    let (mut t2, mut tm, mut p2, mut pm) = (Vec::new(), Vec::new(), 0, 0);
    for _ in 0..runs {
        let (t, p) = run(&mut ctx2, &llada2_params, &prompt)?;
        t2.push(t);
        p2 = p;
        let (t, p) = run(&mut ctx_moe, &moe_params, &prompt)?;
        tm.push(t);
        pm = p;
    }
    let (t2, tm) = (median(t2), median(tm));
    writeln!(
        md,
        "\nEnd to end, 256 tokens after a 64-token prompt, greedy, medians of {runs} interleaved runs (random weights are rarely sure of a token, so both rules mostly commit one per pass: the passes count the same work on both sides):\n\n| model and decoding | passes | seconds | tokens/s | s/pass |\n|---|---:|---:|---:|---:|\n| LLaDA2 Q4_K_M, LLaDA2.0's decoding (blocks of 32 on the absolute grid, threshold 0.95, exact prefix cache) | {p2} | {t2:.2} | **{:.1}** | {:.4} |\n| LLaDA-MoE Q4_K_M, Fast-dLLM threshold 0.9 + dual cache, blocks of 32 | {pm} | {tm:.2} | **{:.1}** | {:.4} |",
        256.0 / t2,
        t2 / p2 as f64,
        256.0 / tm,
        tm / pm as f64,
    )?;

    // A cached block step beside a full forward pass.
    writeln!(
        md,
        "\nA 32-token block step against the exact prefix cache beside a full block-causal forward pass of the same canvas (the last block's logits), medians of {repeats}:\n\n| canvas | full forward (s) | cached block step (s) | speed-up |\n|---|---:|---:|---:|"
    )?;
    for seq in [128usize, 320, 1024] {
        let ids: Vec<u32> = (0..seq as u32)
            .map(|i| {
                if i + 32 < seq as u32 {
                    (i * 7919) % 600
                } else {
                    mask2
                }
            })
            .collect();
        let (full, step) = cached_step(&mut ctx2, &ids, 32, repeats)?;
        writeln!(
            md,
            "| {seq} tokens | {full:.4} | {step:.4} | **{:.1}x** |",
            full / step
        )?;
    }
    Ok(Some(md))
}
