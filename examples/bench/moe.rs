//! The benchmark's mixture-of-experts rows: the mid-size LLaDA-MoE-shaped model
//! (`examples/bench/make_bench_moe.py`, random weights) in the GGUF files llama.cpp's converter
//! and `llama-quantize` made of it: resident memory, a step beside `llama-diffusion-cli` on the
//! same files, a 32-token dual-cache step beside a full one, and where a full step's time goes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use llada::core::{ForwardRequest, MaskPredictor};
use llada::ndarray::{Context, Model, MoeProfile};

use crate::llama_cpp;

/// The model's GGUF files in `dir` (`moe-{q8_0,q4_k_m}.gguf`), those present.
pub(crate) fn files(dir: &Path) -> Vec<(String, PathBuf)> {
    ["q8_0", "q4_k_m"]
        .iter()
        .map(|ty| {
            (
                format!("GGUF {}", ty.to_uppercase()),
                dir.join(format!("moe-{ty}.gguf")),
            )
        })
        .filter(|(_, path)| path.is_file())
        .collect()
}

/// Median of `samples`.
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// One full forward pass of `seq` tokens (logits of the last 32 only, as a sampler's block
/// asks), its wall time, and the mixture layers' share of it.
fn profiled_step(context: &mut Context, ids: &[u32]) -> anyhow::Result<(f64, MoeProfile)> {
    let seq = ids.len();
    let window = seq - 32..seq;
    let request = ForwardRequest::new(ids, 1, seq)?.with_window(window)?;
    let mut logits = vec![0.0f32; 32 * context.vocab_size()];
    context.reset_moe_profile();
    let start = Instant::now();
    context.forward(&request, &mut logits)?;
    Ok((start.elapsed().as_secs_f64(), context.moe_profile()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The report's section, or `None` without the model's files.
pub(crate) fn section(
    machine: &str,
    gguf_dir: &Path,
    llama_cpp_exe: Option<&Path>,
    threads: usize,
    repeats: usize,
    time_cached_steps: impl Fn(
        &mut Context,
        usize,
        usize,
        u32,
        usize,
    ) -> anyhow::Result<(f64, f64, f64)>,
) -> anyhow::Result<Option<String>> {
    let files = files(gguf_dir);
    if files.is_empty() {
        return Ok(None);
    }
    let mut md = String::new();
    let about = Model::load(&files[0].1)?;
    let c = about.config();
    let moe = c
        .moe
        .as_ref()
        .context("the MoE benchmark files have no experts")?;
    let mask = c
        .mask_token_id
        .context("the MoE benchmark files have no mask id")?;
    writeln!(
        md,
        "\n## Mixture of experts (LLaDA-MoE architecture)\n\nThe mid-size LLaDA-MoE-shaped model of `examples/bench/make_bench_moe.py` (random weights; d_model {}, {} layers, {} heads, {} experts of width {}, top-{}, per-head q/k norms; {:.0} M parameters, about {:.0} M active per token), converted by llama.cpp's `convert_hf_to_gguf.py` (architecture `llada-moe`) and quantized by its `llama-quantize`. {machine}, {threads} threads; `cargo run --release --example benchmark -- --only-moe` measures this section alone.\n",
        c.d_model,
        c.n_layers,
        c.n_heads,
        moe.experts,
        moe.expert_hidden_size,
        moe.experts_per_token,
        c.parameter_count() as f64 / 1e6,
        (c.parameter_count()
            - c.n_layers
                * (moe.experts - moe.experts_per_token)
                * 3
                * c.d_model
                * moe.expert_hidden_size) as f64
            / 1e6,
    )?;
    drop(about);

    // Memory.
    writeln!(
        md,
        "| file | file (MiB) | resident weights (MiB) | weights / file | process growth while loading (MiB) |\n|---|---:|---:|---:|---:|"
    )?;
    for (label, path) in &files {
        let (before, _) = crate::rss_mib();
        let model = Model::load(path)?;
        let (after, _) = crate::rss_mib();
        let (file, weights) = (
            model.checkpoint_bytes() as f64,
            model.weights_bytes() as f64,
        );
        writeln!(
            md,
            "| {label} | {:.1} | {:.1} | {:.3} | {:.1} |",
            file / (1 << 20) as f64,
            weights / (1 << 20) as f64,
            weights / file,
            after - before
        )?;
    }

    // Beside llama.cpp.
    if let Some(exe) = llama_cpp_exe {
        let (rows, _, prompt) = llama_cpp::compare(
            exe,
            &files,
            threads,
            repeats.min(3),
            llama_cpp::CANVAS,
            false,
        )?;
        writeln!(
            md,
            "\nBeside `llama-diffusion-cli` on the same files: prompt {prompt} ({} tokens), canvas {}, blocks of {}, {} steps per block, greedy (`--top-k 1`), medians of {} interleaved runs; time per step = generation wall time over forward passes:\n\n| weights | llama.cpp (s/step) | ours (s/step) | ours / llama.cpp |\n|---|---:|---:|---:|",
            llama_cpp::PROMPT,
            llama_cpp::CANVAS,
            llama_cpp::BLOCK,
            llama_cpp::STEPS_PER_BLOCK,
            repeats.min(3),
        )?;
        for r in &rows {
            writeln!(
                md,
                "| {} | {:.4} | {:.4} | **{:.2}x** |",
                r.label,
                r.llama_step_s,
                r.ours_step_s,
                r.ours_step_s / r.llama_step_s
            )?;
        }
    }

    // Cached steps and the profile of a full step.
    writeln!(
        md,
        "\nA full step of the 256-token canvas (prompt 64 + 192) beside a 32-token step with Fast-dLLM's dual cache (the block's keys and values recomputed, the rest cached), medians of {repeats}; and where a full step's time goes (one full pass, the mixture layers' phases summed over layers):\n\n| weights | full step (s) | dual-cache step (s) | speed-up | router | routing | gather | expert products | combine | rest (attention, norms, head) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for (label, path) in &files {
        let model = Arc::new(Model::load(path)?);
        let mut context = Context::with_threads(model, threads)?;
        let (full, dual, _) = time_cached_steps(&mut context, 64, 192, mask, repeats)?;
        let ids: Vec<u32> = (0..256u32)
            .map(|i| if i < 64 { (i * 7919) % 30000 } else { mask })
            .collect();
        let mut samples = Vec::new();
        let mut profile = MoeProfile::default();
        for _ in 0..repeats.max(1) {
            let (t, p) = profiled_step(&mut context, &ids)?;
            samples.push(t);
            profile = p;
        }
        let total = median(samples);
        let moe =
            profile.router + profile.routing + profile.gather + profile.experts + profile.combine;
        let share =
            |d: Duration| format!("{:.1} ms ({:.0}%)", ms(d), 100.0 * d.as_secs_f64() / total);
        writeln!(
            md,
            "| {label} | {full:.4} | {dual:.4} | **{:.1}x** | {} | {} | {} | {} | {} | {} |",
            full / dual,
            share(profile.router),
            share(profile.routing),
            share(profile.gather),
            share(profile.experts),
            share(profile.combine),
            share(Duration::from_secs_f64(
                (total - moe.as_secs_f64()).max(0.0)
            )),
        )?;
    }
    Ok(Some(md))
}
