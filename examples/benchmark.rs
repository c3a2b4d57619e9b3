//! The benchmark command: forward-pass time of the ndarray backend, the ORT backend, ONNX
//! Runtime from Python and PyTorch eager on one mid-size LLaDA-architecture model (random
//! weights, about 220 M parameters), end-to-end generation speed of both Rust backends, the
//! sampler's share of a step, allocations per step and memory; printed as a table and written
//! to BENCHMARKS.md.
//!
//! ```sh
//! python3 -m venv .venv-bench && .venv-bench/bin/pip install -r examples/bench/requirements.txt
//! cargo run --release --example benchmark
//! ```
//! The model is generated on first use into `bench-models/` (git-ignored) by
//! `examples/bench/make_bench_model.py`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Parser;
use llada::core::rand_core::{Rng, SeedableRng};
use llada::core::{
    CacheHint, CacheMode, Canvas, CommitRule, ForwardRequest, GenerateParams, Generation, Limits,
    MaskPredictor, SamplerRng, WorkspaceBuf, WorkspaceSizes,
};
use llada_test_support::CountingAllocator;

#[path = "bench/llada2.rs"]
mod llada2;
#[path = "bench/llama_cpp.rs"]
mod llama_cpp;
#[path = "bench/moe.rs"]
mod moe;
#[path = "bench/onnx.rs"]
mod onnx;
#[path = "bench/python.rs"]
mod python;
#[path = "bench/real_scale.rs"]
mod real_scale;
#[path = "bench/server.rs"]
mod server;

/// Counts heap allocations, to report allocations per denoising step.
#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Benchmark the backends side by side on the mid-size model.
#[derive(Parser, Debug)]
struct Cli {
    /// Directory of the f32 benchmark model (created if missing).
    #[arg(long, default_value = "bench-models/mid")]
    model: PathBuf,
    /// Directory of its bf16 copy, for the memory check (created if missing).
    #[arg(long, default_value = "bench-models/mid-bf16")]
    model_bf16: PathBuf,
    /// Directory of the benchmark model's GGUF files, made by llama.cpp's converter and
    /// `llama-quantize` (`tests/fixtures/make_gguf.py`): mid-{f32,q8_0,q4_0,q4_k_m}.gguf;
    /// those present are measured (memory, and a forward pass beside the f32 one).
    #[arg(long, default_value = "bench-models/gguf")]
    gguf_dir: PathBuf,
    /// llama.cpp's `llama-diffusion-cli`, run beside ours on the GGUF files (built by
    /// `tests/fixtures/make_gguf.py --steps build` into this path's folder when missing).
    #[arg(
        long,
        default_value = "bench-models/llama.cpp/build/bin/llama-diffusion-cli"
    )]
    llama_cpp: PathBuf,
    /// Leave llama.cpp out.
    #[arg(long)]
    skip_llama_cpp: bool,
    /// Threads for every engine.
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(1, usize::from))]
    threads: usize,
    /// Sequence lengths of the forward-pass comparison.
    #[arg(long, value_delimiter = ',', default_value = "32,64,256,1024")]
    lengths: Vec<usize>,
    /// Timed repetitions per forward-pass measurement (after one warm-up).
    #[arg(long, default_value_t = 11)]
    repeats: usize,
    /// Generation lengths of the end-to-end measurement (block 32, steps = gen length).
    #[arg(long, value_delimiter = ',', default_value = "128,256")]
    gen_lengths: Vec<usize>,
    /// Prompt length of the end-to-end measurement.
    #[arg(long, default_value_t = 64)]
    prompt_len: usize,
    /// Python with torch, onnx and onnxruntime (examples/bench/requirements.txt).
    #[arg(long, default_value = ".venv-bench/bin/python")]
    python: PathBuf,
    /// Skip the Python engines.
    #[arg(long)]
    skip_python: bool,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Measure only the mixture-of-experts model (its GGUF files `moe-*.gguf` in `--gguf-dir`,
    /// made by `examples/bench/make_bench_moe.py`), and replace that section of `--out`.
    #[arg(long)]
    only_moe: bool,
    /// Measure only the block-diffusion model (`llada2-q4_k_m.gguf` in `--gguf-dir`, made by
    /// `examples/bench/make_bench_llada2.py`, beside `moe-q4_k_m.gguf`), and replace that
    /// section of `--out`.
    #[arg(long)]
    only_llada2: bool,
    /// Measure only ONNX Runtime on the mid-size model's cached graph and its 4-bit copy
    /// (cached steps from Rust and Python, 4-bit against f32 and the GGUF files, allocations
    /// per warm step), and replace that section of `--out`.
    #[arg(long)]
    only_onnx: bool,
    /// Measure only the real-scale files (the shapes of LLaDA-8B-Instruct and LLaDA-MoE-7B-A1B,
    /// random weights, Q4_K_M and Q8_0; written into `--real-scale-dir` when missing, about 24
    /// GiB) beside llama.cpp, and replace that section of `--out`. Takes about 40 minutes on 2
    /// cores once the files exist (writing them about 10 more).
    #[arg(long)]
    only_real_scale: bool,
    /// Measure only the local server under load (`llada-server` on the bundled model: 1, 4 and
    /// 16 concurrent clients, batched and one request at a time), and replace that section of
    /// `--out`.
    #[arg(long)]
    only_server: bool,
    /// Measure only the matrix kernels: a forward pass of the mid-size model with every kernel
    /// this CPU runs (`amx`, `avx512`, `avx2`, `portable`) and the default kernel with every
    /// candidate blocking (`LLADA_BLOCKING`), the tuned choice named, and ONNX Runtime (Rust)
    /// beside them at `--lengths`, then a dual-cache step with each blocking; replace that
    /// section of `--out`.
    #[arg(long)]
    only_kernels: bool,
    /// Also measure the real-scale files in a full run.
    #[arg(long)]
    real_scale: bool,
    /// Where the real-scale files are written and reused (default: the user's cache,
    /// `~/.cache/llada/real-scale`).
    #[arg(long)]
    real_scale_dir: Option<PathBuf>,
    /// Leave out the real-scale end-to-end generations (the longest part of that section).
    #[arg(long)]
    real_scale_skip_end_to_end: bool,
    /// Internal: write one real-scale file from this model directory (a child process).
    #[arg(long, hide = true, requires_all = ["write_type", "write_out"])]
    write_shape: Option<PathBuf>,
    #[arg(long, hide = true)]
    write_type: Option<llada::ndarray::gguf::FileType>,
    #[arg(long, hide = true)]
    write_out: Option<PathBuf>,
    /// Internal: time to first step and memory of one GGUF file (a child process).
    #[arg(long, hide = true)]
    probe: Option<PathBuf>,
}

impl Cli {
    fn real_scale_inputs<'a>(&'a self, dir: &'a Path, machine: &'a str) -> real_scale::Inputs<'a> {
        real_scale::Inputs {
            dir,
            llama_cpp: (!self.skip_llama_cpp).then_some(self.llama_cpp.as_path()),
            threads: self.threads,
            machine,
            repeats: self.repeats.min(3),
            end_to_end: !self.real_scale_skip_end_to_end,
        }
    }
}

/// The heading of the mixture-of-experts section.
const MOE_HEADING: &str = "\n## Mixture of experts";

/// Replaces the section under `heading` of the report at `out` by `section` (appended when
/// the report has none), and says so.
fn write_section(out: &Path, heading: &str, section: &str) -> anyhow::Result<()> {
    let report = std::fs::read_to_string(out).unwrap_or_default();
    std::fs::write(out, splice_section(&report, heading, section))
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("{section}\nwrote {}", out.display());
    Ok(())
}

/// `report` with the section under `heading` (to the next `## `) replaced by `section`, or
/// `section` appended.
fn splice_section(report: &str, heading: &str, section: &str) -> String {
    match report.find(heading) {
        Some(start) => {
            let rest = &report[start + 1..];
            let end = rest.find("\n## ").map_or(report.len(), |e| start + 1 + e);
            // A blank line before the section and before the next one, whatever the section's
            // own leading and trailing newlines (a section written without its heading's
            // leading newline once ran into the paragraph above it).
            format!(
                "{}\n\n{}\n{}",
                report[..start].trim_end(),
                section.trim(),
                &report[end..]
            )
        }
        None => format!("{}\n\n{}\n", report.trim_end(), section.trim()),
    }
}

fn moe_section(cli: &Cli) -> anyhow::Result<Option<String>> {
    let llama = (!cli.skip_llama_cpp).then_some(cli.llama_cpp.as_path());
    if llama.is_some() {
        ensure_llama_cpp(cli)?;
        if moe::files(&cli.gguf_dir).is_empty() {
            // The model and llama.cpp's conversions of it (llama.cpp's converter and
            // llama-quantize, from the build `ensure_llama_cpp` made).
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bench/make_bench_moe.py");
            let build = cli
                .llama_cpp
                .parent()
                .and_then(Path::parent)
                .context("--llama-cpp names a file in a build folder's bin/")?;
            eprintln!("generating the mixture-of-experts benchmark model and its GGUF files");
            let status = Command::new(&cli.python)
                .arg(&script)
                .arg("--gguf-dir")
                .arg(&cli.gguf_dir)
                .arg("--llama-build")
                .arg(build)
                .args(["--threads", &cli.threads.to_string()])
                .status()
                .with_context(|| format!("running {}", cli.python.display()))?;
            if !status.success() {
                bail!("{} failed", script.display());
            }
        }
    }
    let (cpu, _) = cpu_description();
    moe::section(
        &cpu,
        &cli.gguf_dir,
        llama,
        cli.threads,
        cli.repeats,
        time_cached_steps,
    )
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

/// `len` token ids drawn with `seed` below `vocab − 2` (clear of the top ids, where models
/// keep special tokens).
fn random_ids(seed: u64, len: usize, vocab: usize) -> Vec<u32> {
    let mut rng = SamplerRng::seed_from_u64(seed);
    (0..len)
        .map(|_| (rng.next_u64() % (vocab as u64 - 2)) as u32)
        .collect()
}

/// Resident memory: current and peak, in MiB, from /proc/self/status.
fn rss_mib() -> (f64, f64) {
    (status_mib("VmRSS:"), status_mib("VmHWM:"))
}

/// A field of /proc/self/status given in kB (`VmRSS:`, `RssAnon:`, ...), in MiB; NaN where
/// the system has no such file or field.
fn status_mib(name: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The `libonnxruntime.so` of the `onnxruntime` wheel in the bench venv (`--python`), for when
/// `ORT_DYLIB_PATH` is not set: the benchmark runs as the README writes it.
fn bench_venv_onnxruntime(python: &Path) -> Option<PathBuf> {
    let script = "import glob, os, onnxruntime; \
        print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*')))[0])";
    let output = Command::new(python).args(["-c", script]).output().ok()?;
    let path = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    (output.status.success() && path.is_file()).then_some(path)
}

fn cpu_description() -> (String, Vec<String>) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim();
    let flags: Vec<String> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .split_whitespace()
        .filter(|f| {
            ["sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni"].contains(f)
                || f.starts_with("avx512")
                || f.starts_with("amx")
        })
        .map(str::to_string)
        .collect();
    (model.to_string(), flags)
}

fn ensure_models(cli: &Cli) -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bench/make_bench_model.py");
    for (dir, args) in [
        (&cli.model, vec!["--dtype", "f32"]),
        (&cli.model_bf16, vec!["--dtype", "bf16", "--no-onnx"]),
    ] {
        let complete = dir.join("config.json").exists()
            && dir.join("model.safetensors").exists()
            && (args.contains(&"--no-onnx")
                || (dir.join("model.onnx").exists() && dir.join("model-int4.onnx").exists()));
        if complete {
            continue;
        }
        eprintln!("generating the benchmark model into {}", dir.display());
        let status = Command::new(&cli.python)
            .arg(&script)
            .arg(dir)
            .args(&args)
            .status()
            .with_context(|| {
                format!(
                    "running {} (create it with examples/bench/requirements.txt)",
                    cli.python.display()
                )
            })?;
        if !status.success() {
            bail!("{} failed", script.display());
        }
    }
    Ok(())
}

/// Builds llama.cpp's diffusion example into the folder of `--llama-cpp` when it is missing.
fn ensure_llama_cpp(cli: &Cli) -> anyhow::Result<()> {
    if cli.llama_cpp.is_file() {
        return Ok(());
    }
    let build = cli
        .llama_cpp
        .parent()
        .and_then(Path::parent)
        .context("--llama-cpp names a file in a build folder's bin/")?;
    eprintln!("building llama.cpp into {}", build.display());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_gguf.py");
    let status = Command::new(&cli.python)
        .arg(&script)
        .args(["--steps", "build", "--llama-build"])
        .arg(build)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() || !cli.llama_cpp.is_file() {
        bail!("could not build llama.cpp (see above); pass --skip-llama-cpp to leave it out");
    }
    Ok(())
}

/// Times of one measurement: the median and the spread of the timed runs.
#[derive(Clone, Copy, Debug)]
struct Timing {
    median: f64,
    min: f64,
    max: f64,
}

impl Timing {
    fn of(samples: &mut [f64]) -> Self {
        Self {
            median: median(samples),
            min: samples.iter().copied().fold(f64::INFINITY, f64::min),
            max: samples.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// A forward pass to time, whatever the backend's error type.
trait Forward {
    fn vocab(&self) -> usize;
    fn run(&mut self, request: &ForwardRequest<'_>, logits: &mut [f32]) -> anyhow::Result<()>;

    /// Seconds of one forward pass: `run`'s wall time, or what an engine in another process
    /// measured there (without the time its request and answer spent in pipes).
    fn timed(&mut self, request: &ForwardRequest<'_>, logits: &mut [f32]) -> anyhow::Result<f64> {
        let start = Instant::now();
        self.run(request, logits)?;
        Ok(start.elapsed().as_secs_f64())
    }
}

impl<P: MaskPredictor> Forward for P
where
    P::Error: std::error::Error + Send + Sync + 'static,
{
    fn vocab(&self) -> usize {
        self.vocab_size()
    }

    fn run(&mut self, request: &ForwardRequest<'_>, logits: &mut [f32]) -> anyhow::Result<()> {
        Ok(self.forward(request, logits)?)
    }
}

/// One forward pass of `len` tokens on each engine: a warm-up each, then `repeats` rounds in
/// which every engine runs once in turn, so that the machine's slow and quiet spells fall on
/// all of them alike.
/// The portable kernel's forward row, run to this many tokens.
const PORTABLE_ROW: &str = "llada ndarray (LLADA_KERNEL=portable)";
const PORTABLE_MAX_TOKENS: usize = 256;

const KERNELS_HEADING: &str = "\n## Matrix kernels on this host";

/// The forward pass of the mid-size model with every kernel this CPU runs, ONNX Runtime (Rust)
/// beside them, interleaved as in the main table; the portable kernel to
/// [`PORTABLE_MAX_TOKENS`].
fn kernels_section(cli: &Cli) -> anyhow::Result<String> {
    use llada::ndarray::{Blocking, Context, ContextOptions, Kernel, Model};
    let (cpu, flags) = cpu_description();
    let requested = std::env::var_os("LLADA_KERNEL");
    let default = Kernel::from_env()?.unwrap_or_else(Kernel::detect);
    // Quantized files beside llama.cpp, first: the kernel is chosen through LLADA_KERNEL, which
    // the pipelines read when they start, and no other thread of this process runs yet.
    let quantized: Vec<(String, PathBuf)> = ["q8_0", "q4_k_m"]
        .iter()
        .map(|ty| {
            let path = cli.gguf_dir.join(format!("mid-{ty}.gguf"));
            (format!("GGUF {}", ty.to_uppercase()), path)
        })
        .filter(|(_, path)| path.is_file())
        .collect();
    let mut quantized_rows = Vec::new();
    if !cli.skip_llama_cpp && !quantized.is_empty() {
        ensure_llama_cpp(cli)?;
        for kernel in Kernel::supported() {
            if kernel != default && kernel != Kernel::Amx {
                continue;
            }
            // SAFETY: no other thread of this process runs (see above; the pipelines of the
            // previous kernel have ended with their threads).
            unsafe { std::env::set_var("LLADA_KERNEL", kernel.name()) };
            let (rows, _, _) = llama_cpp::compare(
                &cli.llama_cpp,
                &quantized,
                cli.threads,
                cli.repeats.min(3),
                llama_cpp::CANVAS,
                false,
            )?;
            quantized_rows.extend(rows.into_iter().map(|row| (kernel, row)));
        }
        // SAFETY: as above.
        unsafe {
            match &requested {
                Some(name) => std::env::set_var("LLADA_KERNEL", name),
                None => std::env::remove_var("LLADA_KERNEL"),
            }
        }
    }
    let model = Arc::new(Model::load(&cli.model)?);
    // Every kernel with its blocks for this CPU (or LLADA_BLOCKING's), and the default kernel
    // with every other candidate blocking too.
    let mut contexts = Vec::new();
    for kernel in Kernel::supported() {
        let options = ContextOptions::default()
            .with_threads(cli.threads)
            .with_kernel(kernel);
        let context = Context::with_options(Arc::clone(&model), options)?;
        let blocking = context.blocking();
        let mut label = format!("llada ndarray (LLADA_KERNEL={kernel}");
        if kernel != Kernel::Amx {
            write!(label, " LLADA_BLOCKING={blocking}")?;
        }
        if kernel == default {
            label.push_str(", the default");
        }
        label.push(')');
        contexts.push((kernel, label, context));
        if kernel != default {
            continue;
        }
        for other in Blocking::CANDIDATES.into_iter().filter(|&b| b != blocking) {
            let options = options.with_blocking(other);
            contexts.push((
                kernel,
                format!("llada ndarray (LLADA_KERNEL={kernel} LLADA_BLOCKING={other})"),
                Context::with_options(Arc::clone(&model), options)?,
            ));
        }
    }
    // The default kernel's first context has the blocks a default context takes.
    let tuned = contexts
        .iter()
        .find(|(kernel, ..)| *kernel == default)
        .map_or(Blocking::DEFAULT, |(_, _, context)| context.blocking());
    let cpu_family = llada::ndarray::cpu_family()
        .map(|(vendor, family)| format!("{vendor}, family {family}"))
        .unwrap_or_else(|| String::from("not x86-64"));
    let library = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .or_else(|| bench_venv_onnxruntime(&cli.python));
    let mut builder =
        llada::ort::OrtPredictor::builder(cli.model.join("model.onnx")).intra_threads(cli.threads);
    if let Some(library) = &library {
        builder = builder.library(library);
    }
    let mut ort = builder.build()?;
    let mut md = String::new();
    writeln!(
        md,
        "{}\n\nProduced by `cargo run --release --example benchmark -- --only-kernels` on {cpu} ({cpu_family}; {} threads per engine; AMX: {}). The mid-size model's forward pass (batch 1, full logits, f32 weights), median of {} interleaved runs, with every matrix kernel this CPU runs, the default kernel with every candidate blocking (`LLADA_BLOCKING=COLUMNSxDEPTH`: column blocks of `B` and passes over the depth), and ONNX Runtime (Rust) beside them. Tuned choice here: `{default}` (the fastest kernel that computes in f32; `amx` rounds the operands of its products to bf16 and runs only when asked for) with blocks `{tuned}` ({}).\n",
        KERNELS_HEADING.trim_start(),
        cli.threads,
        if flags.iter().any(|f| f.starts_with("amx")) {
            "present"
        } else {
            "absent"
        },
        cli.repeats,
        if Blocking::from_env()?.is_some() {
            "pinned by LLADA_BLOCKING"
        } else {
            "the table's entry for this CPU"
        },
    )?;
    writeln!(
        md,
        "| engine | tokens | median (s) | spread (s) | ratio to ORT (Rust) |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|")?;
    for &len in &cli.lengths {
        eprintln!("kernels, {len} tokens");
        let mut labels = vec![String::from("llada ort (CPU)")];
        let mut engines: Vec<&mut dyn Forward> = vec![&mut ort];
        for (kernel, label, context) in &mut contexts {
            if *kernel == Kernel::Portable && len > PORTABLE_MAX_TOKENS {
                continue;
            }
            labels.push(label.clone());
            engines.push(context);
        }
        let timings = time_forwards(&mut engines, len, cli.repeats)?;
        let ort_time = timings[0].median;
        for (label, t) in labels.iter().zip(&timings) {
            writeln!(
                md,
                "| {label} | {len} | {:.4} | {:.4}–{:.4} | {:.2}x |",
                t.median,
                t.min,
                t.max,
                t.median / ort_time
            )?;
        }
    }
    // A dual-cache step (the logits of one 32-token block, the rest of the canvas from the
    // cache): the short products the blocks' short width is for, with each blocking of the
    // default kernel, interleaved round by round.
    let mask_id = model
        .config()
        .mask_token_id
        .context("the mid-size model has a mask token")?;
    let (prompt, gen_length) = (128, 256);
    let vocab = contexts[0].2.vocab_size();
    let ids = cached_step_canvas(prompt, gen_length, mask_id, vocab);
    let mut logits = vec![0.0f32; 32 * vocab];
    let mut steps: Vec<(&str, &mut Context, Vec<f64>)> = Vec::new();
    for (kernel, label, context) in &mut contexts {
        if *kernel == default {
            // Each context's cache filled once; every timed step reuses it.
            block_step(
                context,
                &ids,
                prompt,
                Some((CacheMode::Dual, true)),
                &mut logits,
            )?;
            steps.push((label.as_str(), context, Vec::new()));
        }
    }
    eprintln!("kernels, dual-cache steps");
    for _ in 0..cli.repeats {
        for (_, context, times) in &mut steps {
            let hint = Some((CacheMode::Dual, false));
            times.push(block_step(*context, &ids, prompt, hint, &mut logits)?);
        }
    }
    writeln!(
        md,
        "\nA dual-cache step of the same model with the default kernel and each blocking: the logits of one 32-token block of a {}-token canvas (prompt {prompt}), the rest from the cache, so that every product has 32 rows; median of {} interleaved rounds.\n",
        prompt + gen_length,
        cli.repeats,
    )?;
    writeln!(
        md,
        "| engine | step (s) | spread (s) | ratio to the tuned choice |"
    )?;
    writeln!(md, "|---|---:|---:|---:|")?;
    let mut first = None;
    for (label, _, times) in &mut steps {
        let step = median(times);
        let base = *first.get_or_insert(step);
        writeln!(
            md,
            "| {label} | {step:.4} | {:.4}–{:.4} | {:.2}x |",
            times[0],
            times[times.len() - 1],
            step / base
        )?;
    }
    if !quantized_rows.is_empty() {
        writeln!(
            md,
            "\nQuantized files of the same model (`--gguf-dir`) beside llama.cpp's `llama-diffusion-cli` on the same files: time per step of a {}-token canvas (prompt {}, blocks of {}, {} steps per block, temperature 0), medians of {} interleaved runs; our integer products run `{}` with the default kernel, and Q8_0 on the AMX tiles (`amx-int8`, the other formats through VNNI) with `amx`, whose other products also round to bf16.\n",
            llama_cpp::CANVAS,
            llama_cpp::PROMPT,
            llama_cpp::BLOCK,
            llama_cpp::STEPS_PER_BLOCK,
            cli.repeats.min(3),
            Context::with_threads(Arc::clone(&model), 1)?
                .integer_kernel()
                .unwrap_or("none"),
        )?;
        writeln!(
            md,
            "| file | our kernel | llama.cpp step (s) | our step (s) | ours / llama.cpp |"
        )?;
        writeln!(md, "|---|---|---:|---:|---:|")?;
        for (kernel, row) in &quantized_rows {
            writeln!(
                md,
                "| {} | {kernel} | {:.4} | {:.4} | {:.2}x |",
                row.label,
                row.llama_step_s,
                row.ours_step_s,
                row.ours_step_s / row.llama_step_s
            )?;
        }
    }
    Ok(md)
}

fn time_forwards(
    engines: &mut [&mut dyn Forward],
    len: usize,
    repeats: usize,
) -> anyhow::Result<Vec<Timing>> {
    let vocab_min = engines.iter().map(|e| e.vocab()).min().unwrap_or(0);
    let vocab_max = engines.iter().map(|e| e.vocab()).max().unwrap_or(0);
    let ids = random_ids(len as u64, len, vocab_min);
    let request = ForwardRequest::new(&ids, 1, len)?;
    let mut logits = vec![0.0f32; request.logits_len(vocab_max)];
    for engine in engines.iter_mut() {
        let n = request.logits_len(engine.vocab());
        engine.run(&request, &mut logits[..n])?;
    }
    let mut samples = vec![Vec::with_capacity(repeats); engines.len()];
    // Runtimes keep their worker threads spinning for a while after a call (ONNX Runtime does
    // by default); a pause before each switch keeps one engine's spinning off the other's time.
    let settle = || std::thread::sleep(std::time::Duration::from_millis(250));
    // Each round starts one engine later, so that every engine takes each place in a round in
    // turn (first after the previous length's runs, last before the next). Its neighbours stay
    // the same but for the rounds' seams: the pause before every run is what keeps one
    // engine's aftermath off the next one's time.
    let count = engines.len();
    for round in 0..repeats {
        for i in (0..count).map(|i| (i + round) % count) {
            let engine = &mut engines[i];
            let n = request.logits_len(engine.vocab());
            settle();
            samples[i].push(engine.timed(&request, &mut logits[..n])?);
        }
    }
    Ok(samples.iter_mut().map(|s| Timing::of(s)).collect())
}

/// End-to-end generation driven through the sans-IO state machine, so forward and sampler time
/// are measured apart.
struct GenerationRun {
    tokens_per_s: f64,
    sampler_share: f64,
    /// None when the run had no step after its first block (gen length ≤ 32).
    allocations_per_step: Option<f64>,
    forward_passes: usize,
}

fn time_generation<P: MaskPredictor>(
    p: &mut P,
    prompt_len: usize,
    gen_length: usize,
    mask_id: u32,
) -> anyhow::Result<GenerationRun>
where
    P::Error: std::error::Error + Send + Sync + 'static,
{
    let params = GenerateParams::default()
        .with_steps(gen_length)
        .with_gen_length(gen_length)
        .with_block_length(32)
        .with_mask_id(mask_id);
    let prompt = random_ids(7, prompt_len, p.vocab_size());
    let mut canvas = vec![0u32; prompt_len + gen_length];
    let mut ws = WorkspaceBuf::new(&WorkspaceSizes::for_generation(
        &params,
        1,
        prompt_len,
        p.vocab_size(),
    )?);
    let limits = Limits::of(p);
    let run = |p: &mut P,
               canvas: &mut Vec<u32>,
               ws: &mut WorkspaceBuf|
     -> anyhow::Result<(f64, f64, f64, usize, usize)> {
        Canvas::fill(canvas, &prompt, 1, gen_length, mask_id)?;
        let mut generation = Generation::new(
            &params,
            Canvas::new(canvas, 1, prompt_len),
            ws.as_workspace(),
            limits,
        )?;
        let (mut forward, mut sampler) = (0.0, 0.0);
        let mut steady_allocations = 0;
        let mut steady_steps = 0;
        let start = Instant::now();
        while let Some(job) = generation.next_forward() {
            let before = CountingAllocator::allocations();
            let t = Instant::now();
            p.forward(&job.request, job.logits)?;
            forward += t.elapsed().as_secs_f64();
            let t = Instant::now();
            generation.complete_step()?;
            sampler += t.elapsed().as_secs_f64();
            // Steps after the first block are "warm": every buffer has its size.
            if generation.forward_passes() > 32 {
                steady_allocations += CountingAllocator::allocations() - before;
                steady_steps += 1;
            }
        }
        Ok((
            start.elapsed().as_secs_f64(),
            forward,
            sampler,
            steady_allocations,
            steady_steps,
        ))
    };
    // One run (the backends' buffers are already warm from the forward-pass timings at up to
    // 1024 tokens); allocations are counted after its first block.
    let (total, forward, sampler, allocations, steps) = run(p, &mut canvas, &mut ws)?;
    Ok(GenerationRun {
        tokens_per_s: gen_length as f64 / total,
        sampler_share: sampler / (forward + sampler),
        allocations_per_step: (steps > 0).then(|| allocations as f64 / steps as f64),
        forward_passes: params.steps,
    })
}

/// The canvas of [`time_cached_steps`]: `prompt_len` random tokens, then `gen_length` masks.
fn cached_step_canvas(
    prompt_len: usize,
    gen_length: usize,
    mask_id: u32,
    vocab: usize,
) -> Vec<u32> {
    let mut ids = random_ids(11, prompt_len, vocab);
    ids.resize(prompt_len + gen_length, mask_id);
    ids
}

/// One forward pass over the canvas `ids` for the logits of the block (32 tokens) after the
/// prompt, with the block-wise cache `hint` gives (mode, refresh), if any; its time in seconds.
fn block_step<P: MaskPredictor>(
    context: &mut P,
    ids: &[u32],
    prompt_len: usize,
    hint: Option<(CacheMode, bool)>,
    logits: &mut [f32],
) -> anyhow::Result<f64>
where
    P::Error: std::error::Error + Send + Sync + 'static,
{
    let span = prompt_len..prompt_len + 32;
    let mut request = ForwardRequest::new(ids, 1, ids.len())?.with_window(span.clone())?;
    if let Some((mode, refresh)) = hint {
        request = request.with_cache(CacheHint {
            mode,
            span,
            refresh,
        })?;
    }
    let start = Instant::now();
    context.forward(&request, logits)?;
    Ok(start.elapsed().as_secs_f64())
}

/// One denoising step on the ndarray backend at `prompt_len + gen_length` tokens with the
/// logits window on the first block (32 tokens): a full forward pass, and a step that reuses
/// the block-wise cache (dual and prefix), each a median of `repeats`.
fn time_cached_steps<P: MaskPredictor>(
    context: &mut P,
    prompt_len: usize,
    gen_length: usize,
    mask_id: u32,
    repeats: usize,
) -> anyhow::Result<(f64, f64, f64)>
where
    P::Error: std::error::Error + Send + Sync + 'static,
{
    let ids = cached_step_canvas(prompt_len, gen_length, mask_id, context.vocab_size());
    let mut logits = vec![0.0f32; 32 * context.vocab_size()];
    let mut time = |hint, context: &mut P| block_step(context, &ids, prompt_len, hint, &mut logits);
    let (mut full, mut dual, mut prefix) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeats {
        full.push(time(None, context)?);
        time(Some((CacheMode::Dual, true)), context)?;
        dual.push(time(Some((CacheMode::Dual, false)), context)?);
        time(Some((CacheMode::Prefix, true)), context)?;
        prefix.push(time(Some((CacheMode::Prefix, false)), context)?);
    }
    Ok((median(&mut full), median(&mut dual), median(&mut prefix)))
}

/// Exact match, forward passes per answer and tokens/s of one decoding configuration.
#[derive(Clone, Copy)]
struct Score {
    accuracy: f64,
    passes: f64,
    tokens_per_s: f64,
}

/// Fast-dLLM and the other decoding rules on the bundled model's held-out set.
struct FastDllm {
    about: String,
    /// (rule, cache, [Fast-dLLM's recipe, steps = gen_length]).
    rules: Vec<(&'static str, &'static str, [Score; 2])>,
    /// Stop at end of text at a longer gen length: (rule, cache, without, with).
    stop: Vec<(&'static str, &'static str, Score, Score)>,
    stop_about: String,
}

/// Runs every held-out prompt alone (as a user counts passes) after a warm-up of 4.
fn score(
    pipeline: &mut llada::Pipeline,
    items: &[llada_test_support::EvalItem],
    params: &GenerateParams,
) -> anyhow::Result<Score> {
    let mut run = |item: &llada_test_support::EvalItem| {
        pipeline
            .generate_ids(std::slice::from_ref(&item.prompt_ids), params, |_| {
                std::ops::ControlFlow::Continue(())
            })
            .map(|mut out| out.remove(0))
    };
    for item in items.iter().take(4) {
        run(item)?;
    }
    let (mut correct, mut passes) = (0usize, 0usize);
    let start = Instant::now();
    for item in items {
        let out = run(item)?;
        correct += usize::from(out.answer_ids == item.answer_ids);
        passes += out.forward_passes;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = items.len() as f64;
    Ok(Score {
        accuracy: correct as f64 / n,
        passes: passes as f64 / n,
        tokens_per_s: n * params.gen_length as f64 / elapsed,
    })
}

/// The decoding rules compared: the reference schedule, Fast-dLLM's threshold and factor
/// rules, and the entropy-bounded sampler at two gammas (this model is very sure of itself:
/// larger gammas commit whole blocks at once, like the threshold).
const RULES: [(&str, CommitRule); 5] = [
    ("reference schedule", CommitRule::Schedule),
    ("threshold 0.9", CommitRule::Threshold(0.9)),
    ("factor 1.0", CommitRule::Factor(1.0)),
    ("EB, gamma 0.001", CommitRule::EntropyBounded(0.001)),
    ("EB, gamma 0.01", CommitRule::EntropyBounded(0.01)),
];

const CACHES: [(&str, CacheMode); 3] = [
    ("none", CacheMode::None),
    ("prefix", CacheMode::Prefix),
    ("dual", CacheMode::Dual),
];

fn fast_dllm_rows(threads: usize) -> anyhow::Result<FastDllm> {
    let eval = llada_test_support::eval_set();
    let model = llada::Model::load(
        llada_test_support::bundled_model(),
        &llada::BackendChoice::Ndarray,
    )?;
    let mut pipeline = llada::Pipeline::with_threads(model, Some(threads))?;
    let base = eval.params(pipeline.default_params());
    let recipes = [eval.gen_length / eval.block_length, eval.gen_length];
    let mut rules = Vec::new();
    for (rule_name, rule) in RULES {
        for (cache_name, cache) in CACHES {
            let mut scores = [None; 2];
            for (slot, steps) in scores.iter_mut().zip(recipes) {
                let params = base.with_steps(steps).with_commit(rule).with_cache(cache);
                *slot = Some(score(&mut pipeline, &eval.items, &params)?);
            }
            rules.push((rule_name, cache_name, scores.map(|s| s.expect("scored"))));
        }
    }
    let long = base.with_gen_length(32).with_steps(32);
    let mut stop = Vec::new();
    for (rule_name, rule, cache_name, cache) in [
        (RULES[0].0, RULES[0].1, CACHES[0].0, CACHES[0].1),
        (RULES[1].0, RULES[1].1, CACHES[0].0, CACHES[0].1),
        (RULES[1].0, RULES[1].1, CACHES[2].0, CACHES[2].1),
        (RULES[4].0, RULES[4].1, CACHES[2].0, CACHES[2].1),
    ] {
        let params = long.with_commit(rule).with_cache(cache);
        let without = score(&mut pipeline, &eval.items, &params)?;
        let with = score(&mut pipeline, &eval.items, &params.with_stop_at_eos(true))?;
        stop.push((rule_name, cache_name, without, with));
    }
    Ok(FastDllm {
        about: format!(
            "the bundled tiny model's {} held-out prompts, one at a time (ndarray backend, gen length {}, blocks of {}; each configuration warmed up on 4 prompts first)",
            eval.items.len(),
            eval.gen_length,
            eval.block_length,
        ),
        rules,
        stop,
        stop_about: format!(
            "gen length {}, blocks of {}, steps {} (the model was trained on 16-token answers, so its exact match is lower at 32)",
            long.gen_length, long.block_length, long.steps
        ),
    })
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let cli = Cli::parse();
    if let Some(file) = &cli.probe {
        return real_scale::probe_child(file, cli.threads, started);
    }
    if let (Some(dir), Some(ty), Some(out)) = (&cli.write_shape, cli.write_type, &cli.write_out) {
        return real_scale::write_child(dir, ty, out);
    }
    let real_scale_dir = cli
        .real_scale_dir
        .clone()
        .unwrap_or_else(real_scale::default_dir);
    if cli.only_real_scale {
        if !cli.skip_llama_cpp {
            ensure_llama_cpp(&cli)?;
        }
        let (cpu, _) = cpu_description();
        let section = real_scale::section(&cli.real_scale_inputs(&real_scale_dir, &cpu))?;
        return write_section(&cli.out, "\n## Real scale", &section);
    }
    if cli.only_server {
        let (cpu, _) = cpu_description();
        let section = server::section(&cpu, cli.threads)?;
        return write_section(&cli.out, "\n## Local server (load)", &section);
    }
    if cli.only_kernels {
        ensure_models(&cli)?;
        let section = kernels_section(&cli)?;
        return write_section(&cli.out, KERNELS_HEADING, &section);
    }
    if cli.only_llada2 {
        let (cpu, _) = cpu_description();
        let section = llada2::section(&cpu, &cli.gguf_dir, cli.threads, cli.repeats)?
            .with_context(|| {
                format!(
                    "no llada2-q4_k_m.gguf and moe-q4_k_m.gguf in {} (make them with examples/bench/make_bench_llada2.py and make_bench_moe.py)",
                    cli.gguf_dir.display()
                )
            })?;
        return write_section(&cli.out, "\n## Block diffusion", &section);
    }
    if cli.only_onnx {
        ensure_models(&cli)?;
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(cli.model.join("config.json"))?)?;
        let mask_id = config["mask_token_id"].as_u64().context("mask_token_id")? as u32;
        let (cpu, _) = cpu_description();
        let inputs = onnx::Inputs {
            model: &cli.model,
            gguf_dir: &cli.gguf_dir,
            python: &cli.python,
            library: std::env::var_os("ORT_DYLIB_PATH")
                .map(PathBuf::from)
                .or_else(|| bench_venv_onnxruntime(&cli.python)),
            threads: cli.threads,
            repeats: cli.repeats,
            skip_python: cli.skip_python,
        };
        let section = onnx::section(&inputs, &cpu, mask_id)?;
        return write_section(&cli.out, "\n## ONNX Runtime", &section);
    }
    if cli.only_moe {
        let section = moe_section(&cli)?.with_context(|| {
            format!(
                "no moe-*.gguf in {} (make them with examples/bench/make_bench_moe.py)",
                cli.gguf_dir.display()
            )
        })?;
        return write_section(&cli.out, MOE_HEADING, &section);
    }
    ensure_models(&cli)?;
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cli.model.join("config.json"))?)?;
    let mask_id = config["mask_token_id"].as_u64().context("mask_token_id")? as u32;
    let (cpu, flags) = cpu_description();
    let kernel = llada::ndarray::Kernel::from_env()?.unwrap_or_else(llada::ndarray::Kernel::detect);
    eprintln!("{cpu}, {} threads, kernel {}", cli.threads, kernel);

    // Memory of the weights: the f32 and bf16 checkpoints, and the GGUF files present.
    let gguf_files: Vec<(String, PathBuf)> = ["f32", "q8_0", "q4_0", "q4_k_m"]
        .iter()
        .map(|ty| {
            (
                format!("GGUF {}", ty.to_uppercase()),
                cli.gguf_dir.join(format!("mid-{ty}.gguf")),
            )
        })
        .filter(|(_, path)| path.is_file())
        .collect();
    let mut memory = Vec::new();
    let sources = [
        (String::from("safetensors f32"), cli.model.clone()),
        (String::from("safetensors bf16"), cli.model_bf16.clone()),
    ];
    for (label, path) in sources.iter().chain(&gguf_files) {
        let (before, _) = rss_mib();
        let model = llada::ndarray::Model::load(path)?;
        let (after, _) = rss_mib();
        memory.push((
            label.clone(),
            model.checkpoint_bytes() as f64 / (1 << 20) as f64,
            model.weights_bytes() as f64 / (1 << 20) as f64,
            after - before,
        ));
    }

    // Forward passes, Rust backends.
    let model = Arc::new(llada::ndarray::Model::load(&cli.model)?);
    let mut ndarray = llada::ndarray::Context::with_threads(Arc::clone(&model), cli.threads)?;
    let library = match std::env::var_os("ORT_DYLIB_PATH") {
        Some(path) => Some(PathBuf::from(path)),
        None => bench_venv_onnxruntime(&cli.python),
    };
    let mut builder =
        llada::ort::OrtPredictor::builder(cli.model.join("model.onnx")).intra_threads(cli.threads);
    if let Some(library) = &library {
        builder = builder.library(library);
    }
    let mut ort = builder.build()?;
    // Every other kernel this CPU runs but the portable one (below): on an AVX-512 host the
    // AVX2 kernel (what AVX2-only hosts run), on an AMX host the AMX kernel too.
    let mut other_kernels = Vec::new();
    for other in llada::ndarray::Kernel::supported() {
        if other == kernel || other == llada::ndarray::Kernel::Portable {
            continue;
        }
        let options = llada::ndarray::ContextOptions::default()
            .with_threads(cli.threads)
            .with_kernel(other);
        other_kernels.push((
            format!("llada ndarray (LLADA_KERNEL={other})"),
            llada::ndarray::Context::with_options(Arc::clone(&model), options)?,
        ));
    }
    let mut ndarray_portable = llada::ndarray::Context::with_options(
        Arc::clone(&model),
        llada::ndarray::ContextOptions::default()
            .with_threads(cli.threads)
            .with_kernel(llada::ndarray::Kernel::Portable),
    )?;
    let vocab = ndarray.vocab_size();
    // The Python engines, each in a child process of its own that runs one forward pass per
    // request. First a process with both, to check that they compute the same logits; it ends
    // before anything is timed.
    let mut python_engines: Vec<python::Engine> = Vec::new();
    if !cli.skip_python {
        if let Some(&len) = cli.lengths.first() {
            eprintln!("checking the Python engines against each other");
            let mut both = python::Server::start(
                &cli.python,
                &cli.model,
                cli.threads,
                &[python::ORT, python::TORCH],
            )?;
            let (passed, diff) = both.check(&random_ids(len as u64, len, vocab))?;
            if !passed {
                bail!("ONNX Runtime and PyTorch disagree from Python: max |difference| {diff:.3e}");
            }
        }
        for name in [python::ORT, python::TORCH] {
            eprintln!("loading {name}");
            python_engines.push(python::Engine::start(
                &cli.python,
                &cli.model,
                cli.threads,
                name,
                vocab,
            )?);
        }
    }
    let mut rows: Vec<(String, usize, Timing)> = Vec::new();
    for &len in &cli.lengths {
        eprintln!("forward, {len} tokens");
        let mut engines: Vec<(&str, &mut dyn Forward)> = vec![
            ("llada ndarray", &mut ndarray),
            ("llada ort (CPU)", &mut ort),
        ];
        for engine in &mut python_engines {
            engines.push((engine.name, engine));
        }
        for (label, context) in &mut other_kernels {
            engines.push((label, context));
        }
        // The portable kernel as any CPU without a kernel of its own runs it, compiled for
        // this build's target (baseline x86-64: SSE2); to 256 tokens, as it is slower.
        if len <= PORTABLE_MAX_TOKENS {
            engines.push((PORTABLE_ROW, &mut ndarray_portable));
        }
        let (labels, mut engines): (Vec<&str>, Vec<&mut dyn Forward>) = engines.into_iter().unzip();
        let timings = time_forwards(&mut engines, len, cli.repeats)?;
        for (label, timing) in labels.into_iter().zip(timings) {
            rows.push((label.into(), len, timing));
        }
    }
    let mut versions = String::new();
    // Peak resident set of each Python engine's process, MiB.
    let mut python_rss = Vec::new();
    for mut engine in python_engines {
        let (package, version) = engine.package();
        if !versions.is_empty() {
            versions.push_str(", ");
        }
        versions.push_str(&format!("{package} {version}"));
        python_rss.push((package, engine.server.peak_rss_mib()?));
    }

    // GGUF weights against the f32 checkpoint, side by side: (label, tokens, gguf s, f32 s).
    let integer_products = ndarray.integer_products();
    let mut gguf_rows: Vec<(String, usize, f64, f64)> = Vec::new();
    // Dual-cache steps (prompt 128 + 256, a 32-token block) on a quantized file and on f32.
    let mut gguf_cached: Vec<(String, f64, f64)> = Vec::new();
    for (label, path) in &gguf_files {
        let model = Arc::new(llada::ndarray::Model::load(path)?);
        let mut context = llada::ndarray::Context::with_threads(model, cli.threads)?;
        for len in [32, 256] {
            eprintln!("forward, {label}, {len} tokens");
            let t = time_forwards(&mut [&mut context, &mut ndarray], len, cli.repeats)?;
            gguf_rows.push((label.clone(), len, t[0].median, t[1].median));
        }
        if label.contains("Q4_K_M") || label.contains("Q8_0") {
            eprintln!("dual-cache step, {label}");
            let (_, ours, _) = time_cached_steps(&mut context, 128, 256, mask_id, cli.repeats)?;
            let (_, f32_step, _) = time_cached_steps(&mut ndarray, 128, 256, mask_id, cli.repeats)?;
            gguf_cached.push((label.clone(), ours, f32_step));
        }
    }

    // llama.cpp's diffusion example on the same GGUF files.
    let mut llama_rows = None;
    if !cli.skip_llama_cpp && !gguf_files.is_empty() {
        ensure_llama_cpp(&cli)?;
        let (rows, _, prompt) = llama_cpp::compare(
            &cli.llama_cpp,
            &gguf_files,
            cli.threads,
            cli.repeats.min(3),
            llama_cpp::CANVAS,
            false,
        )?;
        let q4_k_m: Vec<_> = gguf_files
            .iter()
            .filter(|(label, _)| label.contains("Q4_K_M"))
            .cloned()
            .collect();
        let (e2e, fast, _) = llama_cpp::compare(
            &cli.llama_cpp,
            &q4_k_m,
            cli.threads,
            cli.repeats.min(3),
            llama_cpp::CANVAS_E2E,
            true,
        )?;
        llama_rows = Some((rows, e2e, fast, prompt));
    }

    // End to end.
    let mut generation = Vec::new();
    for &gen_length in &cli.gen_lengths {
        eprintln!("generation, {gen_length} tokens");
        generation.push((
            "llada ndarray",
            gen_length,
            time_generation(&mut ndarray, cli.prompt_len, gen_length, mask_id)?,
        ));
        generation.push((
            "llada ort (CPU)",
            gen_length,
            time_generation(&mut ort, cli.prompt_len, gen_length, mask_id)?,
        ));
    }
    // Fast-dLLM: cached steps on the mid-size model, and the decoding rules on the bundled one.
    let mut cached = Vec::new();
    for gen_length in [256, 512] {
        eprintln!("cached steps, prompt 128 + {gen_length}");
        cached.push((
            gen_length,
            time_cached_steps(&mut ndarray, 128, gen_length, mask_id, cli.repeats)?,
        ));
    }
    eprintln!("Fast-dLLM decoding on the bundled model");
    let fast = fast_dllm_rows(cli.threads)?;
    let (_, peak) = rss_mib();

    // The report.
    let params = model.config().parameter_count();
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Produced by `cargo run --release --example benchmark` (one process tree, one run).\n"
    )?;
    writeln!(
        md,
        "- Machine: {cpu}, {} cores, ISA extensions: {}",
        std::thread::available_parallelism().map_or(1, usize::from),
        flags.join(" ")
    )?;
    writeln!(
        md,
        "- Threads per engine: {}; ndarray matrix kernel: {}",
        cli.threads, kernel
    )?;
    writeln!(
        md,
        "- Model: LLaDA architecture, d_model 1024, 12 layers, 16 heads, mlp 2816, vocab 32000, {:.0} M parameters, random weights (f32)",
        params as f64 / 1e6
    )?;
    if !versions.is_empty() {
        writeln!(
            md,
            "- {versions}; ONNX Runtime (Rust) through `ort` 2.0.0-rc.15, library {}",
            // The file name only: a report names no paths of the machine that wrote it.
            llada::ort::loaded_library()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default()
        )?;
    }
    writeln!(
        md,
        "\n## One forward pass (batch 1, full logits), median of {} runs\n\nEvery engine's runs are interleaved (each round runs every engine once, after a 250 ms pause, starting with the next engine each round); the Python engines run each in a child process of its own that times each pass itself. Spread: the fastest and slowest of the timed runs.\n",
        cli.repeats
    )?;
    writeln!(
        md,
        "| engine | tokens | median (s) | spread (s) | GFLOP/s | ratio to ORT (Rust) |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|")?;
    // The median of the row `label` at `len` tokens, if it ran.
    let median_of = |label: &str, len: usize| {
        rows.iter()
            .find(|r| r.0 == label && r.1 == len)
            .map(|r| r.2.median)
    };
    for &len in &cli.lengths {
        let ort_time = median_of("llada ort (CPU)", len).unwrap_or(f64::NAN);
        for (engine, l, timing) in rows.iter().filter(|r| r.1 == len) {
            let t = timing.median;
            // Matrix products (every parameter but the embedding lookup) and attention (q·kᵀ and p·v).
            let c = model.config();
            let d = c.d_model as f64;
            let matmul = (params - c.embedding_size * c.d_model) as f64;
            let flops =
                2.0 * matmul * *l as f64 + 4.0 * c.n_layers as f64 * (*l as f64).powi(2) * d;
            writeln!(
                md,
                "| {engine} | {l} | {t:.4} | {:.4}–{:.4} | {:.0} | {:.2}x |",
                timing.min,
                timing.max,
                flops / t / 1e9,
                t / ort_time
            )?;
        }
    }
    writeln!(
        md,
        "\nRatio: time divided by ONNX Runtime's (from Rust) at the same length; below 1 is faster.\n"
    )?;
    // The portable kernel against the AVX2 kernel (the row of that name, or the default
    // kernel's on an AVX2-only host), at each length both ran.
    let avx2_label = if other_kernels
        .iter()
        .any(|(_, c)| c.kernel() == llada::ndarray::Kernel::Avx2)
    {
        "llada ndarray (LLADA_KERNEL=avx2)"
    } else {
        "llada ndarray"
    };
    let portable_ratios: Vec<String> = cli
        .lengths
        .iter()
        .filter_map(|&len| {
            let ratio = median_of(PORTABLE_ROW, len)? / median_of(avx2_label, len)?;
            Some(format!("{ratio:.2}x at {len} tokens"))
        })
        .collect();
    if !portable_ratios.is_empty() && kernel != llada::ndarray::Kernel::Portable {
        writeln!(
            md,
            "Portable kernel (built for this binary's target, `{}`), time divided by the `{}` row's: {}.\n",
            std::env::consts::ARCH,
            avx2_label,
            portable_ratios.join(", ")
        )?;
    }
    writeln!(
        md,
        "## Generation (prompt {}, block 32, steps = gen length, temperature 0)\n",
        cli.prompt_len
    )?;
    writeln!(
        md,
        "| engine | gen length | tokens/s | forward passes | sampler share of a step | allocations per step (warm) |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|")?;
    for (engine, gen_length, r) in &generation {
        writeln!(
            md,
            "| {engine} | {gen_length} | {:.1} | {} | {:.2}% | {} |",
            r.tokens_per_s,
            r.forward_passes,
            100.0 * r.sampler_share,
            r.allocations_per_step
                .map_or_else(|| "n/a".to_string(), |a| format!("{a:.1}"))
        )?;
    }
    writeln!(md, "\n## Fast-dLLM\n")?;
    writeln!(
        md,
        "Decoding rules on {}. With a rule other than the reference schedule a block runs until it is filled and `steps` plays no part, so both recipes give the same tokens; tokens/s is the same run's speed, compare rows within one run:\n",
        fast.about
    )?;
    writeln!(
        md,
        "| decoding | cache | exact match | passes per answer (steps = gen/block) | tokens/s (steps = gen/block) | exact match (steps = gen) | passes per answer (steps = gen) | tokens/s (steps = gen) |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|")?;
    for (rule, cache, [recipe, per_token]) in &fast.rules {
        writeln!(
            md,
            "| {rule} | {cache} | {:.1}% | {:.2} | {:.0} | {:.1}% | {:.2} | {:.0} |",
            100.0 * recipe.accuracy,
            recipe.passes,
            recipe.tokens_per_s,
            100.0 * per_token.accuracy,
            per_token.passes,
            per_token.tokens_per_s
        )?;
    }
    writeln!(
        md,
        "\nStop at end of text (`--stop-at-eos`) at {}: the answer up to the first EOS/EOT cannot change, the passes after it are saved:\n",
        fast.stop_about
    )?;
    writeln!(
        md,
        "| decoding | cache | exact match | passes per answer | with --stop-at-eos: exact match | passes per answer | passes saved | tokens/s speed-up |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|")?;
    for (rule, cache, without, with) in &fast.stop {
        writeln!(
            md,
            "| {rule} | {cache} | {:.1}% | {:.2} | {:.1}% | {:.2} | {:.0}% | {:.1}x |",
            100.0 * without.accuracy,
            without.passes,
            100.0 * with.accuracy,
            with.passes,
            100.0 * (1.0 - with.passes / without.passes),
            with.tokens_per_s / without.tokens_per_s
        )?;
    }
    writeln!(
        md,
        "\nOne denoising step on the mid-size model (ndarray, prompt 128, logits for the first 32-token block), median of {} runs:\n",
        cli.repeats
    )?;
    writeln!(
        md,
        "| gen length | full forward (s) | dual-cache step (s) | prefix-cache step (s) | dual speed-up | prefix speed-up |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---:|---:|")?;
    for (gen_length, (full, dual, prefix)) in &cached {
        writeln!(
            md,
            "| {gen_length} | {full:.4} | {dual:.4} | {prefix:.4} | {:.1}x | {:.1}x |",
            full / dual,
            full / prefix
        )?;
    }
    if !gguf_rows.is_empty() {
        writeln!(
            md,
            "\n## GGUF weights (ndarray backend)\n\nThe same model converted by llama.cpp's `convert_hf_to_gguf.py` and quantized by its `llama-quantize` (`tests/fixtures/make_gguf.py`). Q8_0, Q4_0, Q4_K and Q6_K weights are multiplied in integers (activations quantized to 8-bit blocks; `vpdpbusd` with AVX-512 VNNI, else `vpmaddubsw` with AVX2), the other block formats widened to f32 inside the matrix kernel; {}. One forward pass, median of {} runs, interleaved with the f32 safetensors checkpoint's:\n",
            if integer_products {
                "this run used the integer kernels"
            } else {
                "this run's kernel has none: it widened them"
            },
            cli.repeats
        )?;
        writeln!(
            md,
            "| weights | tokens | GGUF (s) | f32 safetensors (s) | ratio |"
        )?;
        writeln!(md, "|---|---:|---:|---:|---:|")?;
        for (label, len, g, f) in &gguf_rows {
            writeln!(md, "| {label} | {len} | {g:.4} | {f:.4} | {:.2}x |", g / f)?;
        }
        if !gguf_cached.is_empty() {
            writeln!(
                md,
                "\nA Fast-dLLM dual-cache step (prompt 128 + 256 answer tokens, the 32 positions of one block against the cached keys and values), median of {} runs:\n",
                cli.repeats
            )?;
            writeln!(
                md,
                "| weights | dual-cache step (s) | f32 safetensors (s) | speed-up over f32 |"
            )?;
            writeln!(md, "|---|---:|---:|---:|")?;
            for (label, q, f) in &gguf_cached {
                writeln!(md, "| {label} | {q:.4} | {f:.4} | {:.2}x |", f / q)?;
            }
        }
    }
    if let Some((rows, e2e, fast, prompt)) = &llama_rows {
        writeln!(
            md,
            "\n## llama.cpp side by side (same GGUF files)\n\n`llama-diffusion-cli` (llama.cpp from the `llama-cpp-python` 0.3.36 sdist, built by `tests/fixtures/make_gguf.py --steps build`) and ours on the same file, prompt {prompt} ({} tokens with the chat template), canvas {}, blocks of {}, {} steps per block, temperature 0, {} threads each, medians of interleaved runs. Ours multiplies Q8_0, Q4_0, Q4_K and Q6_K weights in integers ({}), as llama.cpp does. Time per step: generation wall time (loading excluded) over the forward passes each ran (llama.cpp counts its blocks from the prompt's end, so its last {} blocks fall past the canvas and run one pass each). llama.cpp needs `--top-k 1` for greedy tokens, which sets every confidence to 1 (it then commits left to right within a block), so on these random weights the answers are not expected to agree:\n",
            llama_cpp::PROMPT,
            llama_cpp::CANVAS,
            llama_cpp::BLOCK,
            llama_cpp::STEPS_PER_BLOCK,
            cli.threads,
            if integer_products {
                "in this run"
            } else {
                "not in this run: widened to f32"
            },
            llama_cpp::CANVAS / llama_cpp::BLOCK
                - (llama_cpp::CANVAS - llama_cpp::PROMPT).div_ceil(llama_cpp::BLOCK),
        )?;
        writeln!(
            md,
            "| weights | llama.cpp (s/step) | ours (s/step) | ours / llama.cpp | llama.cpp tokens/s | ours tokens/s | same answer |"
        )?;
        writeln!(md, "|---|---:|---:|---:|---:|---:|---|")?;
        for r in rows {
            writeln!(
                md,
                "| {} | {:.4} | {:.4} | {:.2}x | {:.1} | {:.1} | {} |",
                r.label,
                r.llama_step_s,
                r.ours_step_s,
                r.ours_step_s / r.llama_step_s,
                r.llama_tokens_per_s,
                r.ours_tokens_per_s,
                if r.same_answer { "yes" } else { "no" }
            )?;
        }
        let answer = llama_cpp::CANVAS_E2E - llama_cpp::PROMPT;
        writeln!(
            md,
            "\nEnd to end: {answer} tokens after the {}-token prompt (canvas {}), blocks of {}, same settings; tokens/s over the generation's wall time:\n",
            llama_cpp::PROMPT,
            llama_cpp::CANVAS_E2E,
            llama_cpp::BLOCK
        )?;
        writeln!(
            md,
            "| weights | engine and decoding | forward passes | tokens/s | speed-up over llama.cpp |"
        )?;
        writeln!(md, "|---|---|---:|---:|---:|")?;
        let steps = |canvas: usize| {
            let real = (canvas - llama_cpp::PROMPT).div_ceil(llama_cpp::BLOCK);
            (
                real * llama_cpp::STEPS_PER_BLOCK + (canvas / llama_cpp::BLOCK - real),
                real * llama_cpp::STEPS_PER_BLOCK,
            )
        };
        let (llama_passes, our_passes) = steps(llama_cpp::CANVAS_E2E);
        for r in e2e {
            writeln!(
                md,
                "| {} | llama.cpp, reference schedule | {llama_passes} | {:.1} | 1.00x |",
                r.label, r.llama_tokens_per_s
            )?;
            writeln!(
                md,
                "| {} | ours, reference schedule | {our_passes} | {:.1} | {:.2}x |",
                r.label,
                r.ours_tokens_per_s,
                r.ours_tokens_per_s / r.llama_tokens_per_s
            )?;
            if let Some(f) = fast.as_ref().filter(|f| f.label == r.label) {
                writeln!(
                    md,
                    "| {} | ours, threshold 0.9 + dual cache | {} | {:.1} | {:.2}x |",
                    f.label,
                    f.passes,
                    f.tokens_per_s,
                    f.tokens_per_s / r.llama_tokens_per_s
                )?;
            }
        }
    }
    writeln!(md, "\n## Memory (ndarray backend)\n")?;
    writeln!(
        md,
        "| checkpoint | file (MiB) | weights in memory (MiB) | ratio | RSS growth on load (MiB) |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|")?;
    for (dtype, file, weights, rss) in &memory {
        writeln!(
            md,
            "| {dtype} | {file:.0} | {weights:.0} | {:.3}x | {rss:.0} |",
            weights / file
        )?;
    }
    write!(
        md,
        "\nPeak resident memory of the benchmark process (both Rust backends loaded): {peak:.0} MiB"
    )?;
    for (i, (package, rss)) in python_rss.iter().enumerate() {
        let lead = if i == 0 {
            "; of the Python processes (one per engine): "
        } else {
            ", "
        };
        write!(md, "{lead}{package} {rss:.0} MiB")?;
    }
    writeln!(md, ".")?;
    print!("{md}");
    if let Some(section) = moe_section(&cli)? {
        md.push_str(&section);
    }
    // The sections measured apart (--only-llada2, --only-onnx, --only-real-scale without
    // --real-scale) stay as the last report has them.
    let previous = std::fs::read_to_string(&cli.out).unwrap_or_default();
    let real_scale = if cli.real_scale {
        let (cpu, _) = cpu_description();
        Some(real_scale::section(
            &cli.real_scale_inputs(&real_scale_dir, &cpu),
        )?)
    } else {
        None
    };
    for heading in [
        "\n## Block diffusion",
        "\n## ONNX Runtime",
        "\n## Real scale",
    ] {
        if let (Some(section), "\n## Real scale") = (&real_scale, heading) {
            md.push_str(section);
            continue;
        }
        if let Some(start) = previous.find(heading) {
            let rest = &previous[start + 1..];
            let end = rest.find("\n## ").map_or(rest.len(), |e| e + 1);
            md.push('\n');
            md.push_str(rest[..end].trim_end());
            md.push('\n');
        }
    }
    std::fs::write(&cli.out, &md).with_context(|| format!("writing {}", cli.out.display()))?;
    eprintln!("wrote {}", cli.out.display());
    Ok(())
}
