//! llama.cpp's `llama-diffusion-cli` beside our engine on the same GGUF files, the same prompt,
//! canvas, blocks and steps at temperature 0.
//!
//! llama.cpp counts `canvas / block` blocks from the prompt's end, so with a 64-token prompt
//! its last two blocks fall past the canvas and each runs one forward pass that decides
//! nothing; the answer's positions get the same blocks of 32 with 8 steps each in both
//! engines. Two canvases: 256 tokens (192 answer tokens; every step a 256-token forward) for
//! the per-step comparison of every file, 320 (256 answer tokens) end to end. Time per step is the generation's wall time (loading
//! excluded: llama.cpp's own `total time`, our `generate` call) divided by the forward passes
//! each ran. With `--top-k 1` (needed for greedy tokens) llama.cpp's confidences are all 1, so
//! it commits left to right inside a block where LLaDA commits the most probable first: on a
//! model with random weights the answers differ, and the table says whether they agree.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use llada::core::{CacheMode, CommitRule};
use llada::{BackendChoice, Model, Pipeline};

/// The canvas of the per-step comparison (prompt and answer): 256-token forward passes.
pub(crate) const CANVAS: usize = 256;
/// The canvas of the end-to-end comparison: 256 answer tokens.
pub(crate) const CANVAS_E2E: usize = PROMPT + 256;
pub(crate) const PROMPT: usize = 64;
pub(crate) const BLOCK: usize = 32;
/// Steps per block; llama.cpp takes `CANVAS / BLOCK` times as many in all.
pub(crate) const STEPS_PER_BLOCK: usize = 8;

/// One file's side-by-side timing (medians over the repeats, interleaved).
pub(crate) struct Row {
    pub(crate) label: String,
    pub(crate) llama_step_s: f64,
    pub(crate) ours_step_s: f64,
    pub(crate) llama_tokens_per_s: f64,
    pub(crate) ours_tokens_per_s: f64,
    pub(crate) same_answer: bool,
}

/// Ours with Fast-dLLM's threshold 0.9 and the dual cache on one file.
pub(crate) struct FastRow {
    pub(crate) label: String,
    pub(crate) passes: usize,
    pub(crate) tokens_per_s: f64,
}

/// A prompt whose chat-formatted ids are exactly [`PROMPT`] tokens for this model.
pub(crate) fn prompt_text(model: &Model) -> anyhow::Result<String> {
    let words = [
        "apple", "river", "stone", "lamp", "fox", "rain", "ship", "tree", "bird", "drum", "boat",
        "nest", "cat", "dog", "milk", "map", "rose", "hill", "owl", "hat", "wind", "ring", "bread",
        "rock", "door", "sock", "frog", "pen", "lake", "wolf",
    ];
    // Words (with their commas) while they fit, then single characters to land on the length.
    let mut pieces: Vec<String> = words[1..].iter().map(|w| format!(",{w}")).collect();
    pieces.extend([",", "a", "s", "e"].map(String::from));
    let mut text = format!("sort:{}", words[0]);
    let mut used = 0;
    loop {
        let len = model.chat_prompt_ids(&text)?.len();
        if len == PROMPT {
            return Ok(text);
        }
        let next = pieces
            .iter()
            .skip(used.min(words.len() - 1))
            .find_map(|piece| {
                let candidate = format!("{text}{piece}");
                match model.chat_prompt_ids(&candidate) {
                    Ok(ids) if ids.len() <= PROMPT && ids.len() > len => Some(Ok(candidate)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            });
        match next {
            Some(candidate) => text = candidate?,
            None => bail!("no prompt of exactly {PROMPT} tokens ({len} with {text:?})"),
        }
        used += 1;
    }
}

/// One `llama-diffusion-cli` run with `steps_per_block` steps in each of its blocks:
/// (generation seconds, forward passes, answer text).
pub(crate) fn run_llama(
    exe: &Path,
    file: &Path,
    prompt: &str,
    threads: usize,
    canvas: usize,
    steps_per_block: usize,
) -> anyhow::Result<(f64, usize, String)> {
    let steps = canvas / BLOCK * steps_per_block;
    let n = canvas.to_string();
    let output = Command::new(exe)
        .args(["-m"])
        .arg(file)
        .args(["-p", prompt, "-ub", &n, "-c", &n, "-b", &n])
        .args(["--diffusion-steps", &steps.to_string()])
        .args(["--diffusion-block-length", &BLOCK.to_string()])
        .args([
            "--diffusion-algorithm",
            "4",
            "--temp",
            "0",
            "--top-k",
            "1",
            "--seed",
            "0",
        ])
        .args(["-t", &threads.to_string()])
        .args([
            "--no-log-prefix",
            "--no-log-timestamps",
            "--log-colors",
            "off",
        ])
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!("{} failed on {}:\n{text}", exe.display(), file.display());
    }
    let (_, after) = text
        .split_once("total time: ")
        .with_context(|| format!("no timing in llama-diffusion-cli's output:\n{text}"))?;
    let ms: f64 = after
        .split("ms")
        .next()
        .and_then(|v| v.trim().parse().ok())
        .context("llama-diffusion-cli's total time")?;
    let answer = after
        .split_once('\n')
        .map_or("", |(_, rest)| rest)
        .trim_matches('\n')
        .to_string();
    // Blocks whose start lies inside the canvas run their steps; the rest one pass each.
    let blocks = canvas / BLOCK;
    let real = (canvas - PROMPT).div_ceil(BLOCK);
    Ok((ms / 1e3, real * steps_per_block + (blocks - real), answer))
}

/// One run of ours on the same file with `steps_per_block` steps in each block: (seconds,
/// forward passes, answer text).
pub(crate) fn run_ours(
    pipeline: &mut Pipeline,
    prompt: &[u32],
    canvas: usize,
    fast: bool,
    steps_per_block: usize,
) -> anyhow::Result<(f64, usize, String)> {
    let gen_length = canvas - PROMPT;
    let mut params = pipeline
        .default_params()
        .with_gen_length(gen_length)
        .with_block_length(BLOCK)
        .with_steps(gen_length / BLOCK * steps_per_block);
    if fast {
        params = params
            .with_commit(CommitRule::Threshold(0.9))
            .with_cache(CacheMode::Dual);
    }
    let start = Instant::now();
    let out = pipeline
        .generate_ids(&[prompt.to_vec()], &params, |_| {
            std::ops::ControlFlow::Continue(())
        })?
        .remove(0);
    let seconds = start.elapsed().as_secs_f64();
    let text = pipeline.model().tokenizer().decode(&out.output_ids, true)?;
    Ok((seconds, out.forward_passes, text))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Every file side by side on a `canvas`-token canvas, `repeats` interleaved runs each; with
/// `fast`, also ours with Fast-dLLM's decoding on the Q4_K_M file.
pub(crate) fn compare(
    exe: &Path,
    files: &[(String, PathBuf)],
    threads: usize,
    repeats: usize,
    canvas: usize,
    fast_row: bool,
) -> anyhow::Result<(Vec<Row>, Option<FastRow>, String)> {
    let mut rows = Vec::new();
    let mut fast = None;
    let mut prompt_about = String::new();
    for (label, file) in files {
        let model = Model::load(file, &BackendChoice::Ndarray)?;
        let text = prompt_text(&model)?;
        let ids = model.chat_prompt_ids(&text)?;
        prompt_about = format!("{text:?}");
        let mut pipeline = Pipeline::with_threads(model, Some(threads))?;
        let (mut llama, mut ours) = (Vec::new(), Vec::new());
        let (mut llama_answer, mut our_answer) = (String::new(), String::new());
        let (mut llama_passes, mut our_passes) = (0, 0);
        for _ in 0..repeats {
            eprintln!("llama.cpp vs ours, {label}");
            let (s, p, a) = run_llama(exe, file, &text, threads, canvas, STEPS_PER_BLOCK)?;
            llama.push(s / p as f64);
            (llama_passes, llama_answer) = (p, a);
            let (s, p, a) = run_ours(&mut pipeline, &ids, canvas, false, STEPS_PER_BLOCK)?;
            ours.push(s / p as f64);
            (our_passes, our_answer) = (p, a);
        }
        let (l, o) = (median(llama), median(ours));
        let answer_tokens = (canvas - PROMPT) as f64;
        rows.push(Row {
            label: label.clone(),
            llama_step_s: l,
            ours_step_s: o,
            llama_tokens_per_s: answer_tokens / (l * llama_passes as f64),
            ours_tokens_per_s: answer_tokens / (o * our_passes as f64),
            same_answer: llama_answer == our_answer,
        });
        if fast_row && label.contains("Q4_K_M") {
            let mut times = Vec::new();
            let mut passes = 0;
            for _ in 0..repeats {
                let (s, p, _) = run_ours(&mut pipeline, &ids, canvas, true, STEPS_PER_BLOCK)?;
                times.push(s);
                passes = p;
            }
            fast = Some(FastRow {
                label: label.clone(),
                passes,
                tokens_per_s: answer_tokens / median(times),
            });
        }
    }
    Ok((rows, fast, prompt_about))
}
