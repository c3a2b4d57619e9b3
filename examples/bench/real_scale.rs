//! The benchmark's "Real scale" section: GGUF files with the exact tensors, names and metadata
//! of LLaDA-8B-Instruct (its real `config.json` and tokenizer configuration, bundled in
//! `tests/fixtures/llada-8b-instruct`) and of LLaDA-MoE-7B-A1B (its shape, gathered in
//! `tests/fixtures/llada-moe-7b-a1b`), filled with seeded random weights (speed and memory do
//! not depend on the values), written one slice of rows at a time into a directory outside the
//! repository and reused when present; then ours beside llama.cpp's `llama-diffusion-cli` on
//! the same files: time per full step, our dual-cache step against the memory bandwidth, time
//! to first step from a cold and a warm page cache, resident memory, and end to end.
//!
//! Writing and the cold starts run in child processes of this binary (`--write-shape`,
//! `--probe`), so that their peak memory and their start are their own.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use llada::core::{CacheMode, ForwardRequest, MaskPredictor};
use llada::ndarray::gguf::{FileType, GgufFile};
use llada::{Backend, BackendChoice, Model, ModelFiles, Pipeline};
use serde_json::{Value, json};

use crate::llama_cpp;

/// A real model whose shape is written.
#[derive(Clone, Copy)]
struct Shape {
    label: &'static str,
    /// Its directory of configuration files under `tests/fixtures`.
    fixture: &'static str,
    /// The bundled tiny model of its family whose tokenizer's ordinary tokens it borrows.
    tokenizer_of: &'static str,
}

/// The shapes written and measured.
const SHAPES: [Shape; 2] = [
    Shape {
        label: "LLaDA-8B-Instruct",
        fixture: "llada-8b-instruct",
        tokenizer_of: "tiny-llada",
    },
    Shape {
        label: "LLaDA-MoE-7B-A1B",
        fixture: "llada-moe-7b-a1b",
        tokenizer_of: "tiny-llada-moe",
    },
];
/// The file types written and measured.
const TYPES: [FileType; 2] = [FileType::Q4KM, FileType::Q8_0];
/// The seed of the random weights.
const SEED: u64 = 8;
/// The canvases of the per-step comparison (prompt 64 and the answer).
const CANVASES: [usize; 2] = [128, 256];
/// Tokens generated end to end, with the reference schedule at this many steps per block.
const E2E_TOKENS: usize = 128;
const E2E_STEPS_PER_BLOCK: usize = 8;

/// What the section needs from the benchmark's command line.
pub(crate) struct Inputs<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) llama_cpp: Option<&'a Path>,
    pub(crate) threads: usize,
    pub(crate) machine: &'a str,
    /// Timed repetitions of the cached steps.
    pub(crate) repeats: usize,
    /// Also generate 128 tokens end to end with each engine.
    pub(crate) end_to_end: bool,
}

/// Where the real-scale files go when `--real-scale-dir` is not given: the user's cache, outside
/// any repository.
pub(crate) fn default_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("llada/real-scale")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A model directory of the real model's configuration files and a tokenizer with its
/// vocabulary size and special tokens at their real ids (the bundled tiny model's byte-level
/// BPE for the ordinary tokens, reserved placeholders up to the vocabulary size): what a GGUF
/// file's metadata needs. The weights index is copied too, or an empty one written where the
/// fixture has none (only its presence marks the directory as a model's): shards are never read.
fn model_dir(out: &Path, shape: Shape) -> anyhow::Result<PathBuf> {
    let source = fixtures().join(shape.fixture);
    let dir = out.join(shape.fixture);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in [
        "config.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ] {
        std::fs::copy(source.join(name), dir.join(name))
            .with_context(|| format!("copying {name} from {}", source.display()))?;
    }
    let index = "model.safetensors.index.json";
    if source.join(index).is_file() {
        std::fs::copy(source.join(index), dir.join(index))
            .with_context(|| format!("copying {index} from {}", source.display()))?;
    } else {
        std::fs::write(dir.join(index), r#"{"metadata": {}, "weight_map": {}}"#)?;
    }
    let read = |path: PathBuf| -> anyhow::Result<Value> {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    };
    let config = read(source.join("config.json"))?;
    let vocab_size = config["vocab_size"]
        .as_u64()
        .context("config.json has no vocab_size")? as usize;
    let added = read(source.join("tokenizer_config.json"))?["added_tokens_decoder"].clone();
    let mut tokenizer = read(fixtures().join(shape.tokenizer_of).join("tokenizer.json"))?;
    let base = tokenizer["model"]["vocab"]
        .as_object()
        .context("the tiny tokenizer has no vocabulary")?
        .clone();
    let specials: Vec<(usize, Value)> = added
        .as_object()
        .context("tokenizer_config.json has no added_tokens_decoder")?
        .iter()
        .map(|(id, token)| Ok((id.parse::<usize>()?, token.clone())))
        .collect::<anyhow::Result<_>>()?;
    let mut vocab = serde_json::Map::new();
    let mut names = vec![None; vocab_size];
    for (text, id) in &base {
        let id = id.as_u64().context("a vocabulary id")? as usize;
        names[id] = Some(text.clone());
    }
    for (id, token) in &specials {
        if *id >= vocab_size {
            bail!("special token id {id} is past the vocabulary size {vocab_size}");
        }
        names[*id] = Some(token["content"].as_str().unwrap_or_default().to_string());
    }
    for (id, name) in names.into_iter().enumerate() {
        vocab.insert(
            name.unwrap_or_else(|| format!("<|reserved_{id}|>")),
            json!(id),
        );
    }
    tokenizer["model"]["vocab"] = Value::Object(vocab);
    tokenizer["added_tokens"] = Value::Array(
        specials
            .iter()
            .map(|(id, t)| {
                json!({
                    "id": id,
                    "content": t["content"],
                    "single_word": t["single_word"],
                    "lstrip": t["lstrip"],
                    "rstrip": t["rstrip"],
                    "normalized": t["normalized"],
                    "special": t["special"],
                })
            })
            .collect(),
    );
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec(&tokenizer)?)?;
    Ok(dir)
}

fn file_path(dir: &Path, shape: Shape, ty: FileType) -> PathBuf {
    dir.join(format!("{}-shape-{}.gguf", shape.fixture, ty.name()))
}

/// `--write-shape`: writes one file in this process and prints its size, the time and this
/// process's peak resident memory as JSON.
pub(crate) fn write_child(model_dir: &Path, ty: FileType, out: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    let files = ModelFiles::open(model_dir, &BackendChoice::Ndarray)?;
    let written = files.write_gguf_random(out, ty, SEED)?;
    let (_, peak) = crate::rss_mib();
    println!(
        "{}",
        json!({"bytes": written.bytes, "seconds": start.elapsed().as_secs_f64(), "peak_mib": peak})
    );
    Ok(())
}

/// One written file: its shape and type, its path, and the writer's report (kept beside the
/// file for later runs).
struct Written {
    shape: Shape,
    ty: FileType,
    path: PathBuf,
    report: Option<Value>,
}

/// The files, written by child processes when missing.
fn ensure_files(dir: &Path) -> anyhow::Result<Vec<Written>> {
    let exe = std::env::current_exe()?;
    let mut out = Vec::new();
    for (shape, ty) in SHAPES
        .iter()
        .flat_map(|&shape| TYPES.iter().map(move |&ty| (shape, ty)))
    {
        let model = model_dir(dir, shape)?;
        let path = file_path(dir, shape, ty);
        let report = if path.is_file() {
            None
        } else {
            eprintln!("writing {} (random weights)", path.display());
            let report = child_report(
                Command::new(&exe)
                    .arg("--write-shape")
                    .arg(&model)
                    .args(["--write-type", ty.name()])
                    .arg("--write-out")
                    .arg(&path),
                "writing",
                &path,
            )?;
            std::fs::write(report_path(&path), report.to_string())?;
            Some(report)
        };
        // A file written by an earlier run: that run's report, kept beside it.
        let report = report.or_else(|| {
            std::fs::read_to_string(report_path(&path))
                .ok()
                .and_then(|text| serde_json::from_str(&text).ok())
        });
        out.push(Written {
            shape,
            ty,
            path,
            report,
        });
    }
    Ok(out)
}

/// Where the writer's report (time, peak memory) is kept beside a file it wrote.
fn report_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".written.json");
    PathBuf::from(name)
}

/// Runs one of this benchmark's child processes (`doing` `path`) and returns the JSON report
/// it prints last; a failure is an error carrying its standard error.
fn child_report(command: &mut Command, doing: &str, path: &Path) -> anyhow::Result<Value> {
    let output = command.output()?;
    if !output.status.success() {
        bail!(
            "{doing} {} failed:\n{}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    last_json(&output.stdout)
}

fn last_json(stdout: &[u8]) -> anyhow::Result<Value> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("no report in the child's output:\n{text}"))?;
    Ok(serde_json::from_str(line)?)
}

/// `--probe`: from this process's start, loads `file`, runs one full step of the 128-token
/// canvas (logits of one 32-token block) and prints the times and the resident memory as JSON.
pub(crate) fn probe_child(file: &Path, threads: usize, started: Instant) -> anyhow::Result<()> {
    let model = std::sync::Arc::new(llada::ndarray::Model::load(file)?);
    let loaded = started.elapsed().as_secs_f64();
    let mut context = llada::ndarray::Context::with_threads(model.clone(), threads)?;
    let seq = CANVASES[0];
    let mask = model.config().mask_token_id.unwrap_or(0);
    let vocab = context.vocab_size() as u32;
    let ids: Vec<u32> = (0..seq as u32)
        .map(|i| if i < 64 { (i * 7919) % vocab } else { mask })
        .collect();
    let request = ForwardRequest::new(&ids, 1, seq)?.with_window(seq - 32..seq)?;
    let mut logits = vec![0.0f32; 32 * context.vocab_size()];
    context.forward(&request, &mut logits)?;
    let first_step = started.elapsed().as_secs_f64();
    let (anon, file_backed) = (crate::status_mib("RssAnon:"), crate::status_mib("RssFile:"));
    let (rss, peak) = crate::rss_mib();
    println!(
        "{}",
        json!({
            "load_s": loaded,
            "first_step_s": first_step,
            "rss_mib": rss,
            "peak_mib": peak,
            "anon_mib": anon,
            "file_mib": file_backed,
            "weights_mib": model.weights_bytes() as f64 / (1 << 20) as f64,
            "logits_mib": (logits.len() * 4) as f64 / (1 << 20) as f64,
        })
    );
    Ok(())
}

/// Drops `path`'s pages from the page cache (`POSIX_FADV_DONTNEED`: clean pages of a file no
/// process maps are evicted), so the next read comes from the disk.
fn evict(path: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    // SAFETY: a valid descriptor, the whole file; the call only advises the kernel.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        bail!("posix_fadvise on {}: error {rc}", path.display());
    }
    Ok(())
}

/// Bytes of `path` resident in the page cache (`mincore` over a fresh mapping).
fn cached_fraction(path: &Path) -> anyhow::Result<f64> {
    let file = std::fs::File::open(path)?;
    // SAFETY: read-only mapping of a file this benchmark wrote; only its residency is asked.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let page = 4096usize;
    let pages = map.len().div_ceil(page);
    let mut resident = vec![0u8; pages];
    // SAFETY: the range is the mapping; the vector has one byte per page.
    let rc = unsafe {
        libc::mincore(
            map.as_ptr() as *mut libc::c_void,
            map.len(),
            resident.as_mut_ptr(),
        )
    };
    if rc != 0 {
        bail!("mincore on {}", path.display());
    }
    Ok(resident.iter().filter(|&&b| b & 1 == 1).count() as f64 / pages as f64)
}

fn probe(file: &Path, threads: usize, cold: bool) -> anyhow::Result<(Value, f64)> {
    if cold {
        evict(file)?;
    }
    let cached = cached_fraction(file)?;
    let report = child_report(
        Command::new(std::env::current_exe()?)
            .arg("--probe")
            .arg(file)
            .args(["--threads", &threads.to_string()]),
        "probing",
        file,
    )?;
    Ok((report, cached))
}

/// The machine's memory read bandwidth with `threads` threads: each sums its part of a 1 GiB
/// buffer; the best of 5 passes, in bytes per second.
fn read_bandwidth(threads: usize) -> f64 {
    let data = vec![1u64; 1 << 27];
    let per = data.len().div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = data
                .chunks(per)
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .chunks(8)
                            .fold([0u64; 8], |mut acc, c| {
                                for (a, v) in acc.iter_mut().zip(c) {
                                    *a = a.wrapping_add(*v);
                                }
                                acc
                            })
                            .iter()
                            .sum::<u64>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        std::hint::black_box(total);
        best = best.min(start.elapsed().as_secs_f64());
    }
    (data.len() * 8) as f64 / best
}

/// Bytes of the file's matrices a step may read, as (the experts' stacked tensors, every other
/// one): all but the token embedding (of which a step gathers only its tokens' rows). A step
/// reads the others whole, and of the experts only those its tokens choose.
fn matrix_bytes(path: &Path) -> anyhow::Result<(u64, u64)> {
    let file = GgufFile::open(path)?;
    let (mut experts, mut rest) = (0, 0);
    for t in file
        .tensors()
        .iter()
        .filter(|t| !t.name.starts_with("token_embd"))
    {
        let bytes = file.data(t).len() as u64;
        if t.name.contains("_exps.") {
            experts += bytes;
        } else {
            rest += bytes;
        }
    }
    Ok((experts, rest))
}

/// Of a mixture of experts, the experts per layer that the 32-token dual-cache step of the
/// 256-token canvas (as [`crate::time_cached_steps`] runs it) chose, on average, how many there
/// are, and how many 32 tokens would reach if each chose its experts uniformly at random (what
/// a router trained for balanced load approaches); `None` for a dense model.
fn experts_run(
    context: &mut llada::ndarray::Context,
    mask: u32,
) -> anyhow::Result<Option<ExpertsRun>> {
    let Some((experts, k)) = context
        .model()
        .config()
        .moe
        .as_ref()
        .map(|m| (m.experts, m.experts_per_token))
    else {
        return Ok(None);
    };
    let prompt = llama_cpp::PROMPT;
    let ids = crate::cached_step_canvas(prompt, 256 - prompt, mask, context.vocab_size());
    let mut logits = vec![0.0f32; 32 * context.vocab_size()];
    crate::block_step(
        context,
        &ids,
        prompt,
        Some((CacheMode::Dual, true)),
        &mut logits,
    )?;
    context.reset_moe_profile();
    crate::block_step(
        context,
        &ids,
        prompt,
        Some((CacheMode::Dual, false)),
        &mut logits,
    )?;
    let profile = context.moe_profile();
    let missed = 1.0 - k as f64 / experts as f64;
    Ok(Some(ExpertsRun {
        run: profile.experts_run as f64 / profile.layers.max(1) as f64,
        of: experts,
        // The block's 32 tokens, each missing a given expert with probability `missed`.
        uniform: experts as f64 * (1.0 - missed.powi(32)),
    }))
}

/// Experts per layer of a cached step: run, of how many, and expected of uniform choices.
#[derive(Clone, Copy)]
struct ExpertsRun {
    run: f64,
    of: usize,
    uniform: f64,
}

fn gib(bytes: f64) -> f64 {
    bytes / (1u64 << 30) as f64
}

/// One file's measurements.
struct Measured {
    label: String,
    file_bytes: u64,
    write: Option<Value>,
    cold: (Value, f64),
    warm: (Value, f64),
    /// Per canvas: (ours s/step, llama.cpp s/step).
    steps: Vec<(usize, f64, Option<f64>)>,
    full_256: f64,
    dual: f64,
    /// Bytes of the matrices a cached step reads: the dense ones, plus the experts' share.
    step_bytes: f64,
    /// Experts per layer the cached step ran (a mixture of experts).
    experts_run: Option<ExpertsRun>,
    /// (engine, passes, seconds).
    e2e: Vec<(String, usize, f64)>,
}

fn measure(inputs: &Inputs<'_>, file: Written) -> anyhow::Result<Measured> {
    let Written {
        shape,
        ty,
        ref path,
        report: write,
    } = file;
    let label = format!("{} Q{}", shape.label, &ty.name().to_uppercase()[1..]);
    eprintln!("real scale: {label}: cold and warm starts");
    let cold = probe(path, inputs.threads, true)?;
    let warm = probe(path, inputs.threads, false)?;

    eprintln!("real scale: {label}: ours");
    let model = Model::load(path, &BackendChoice::Ndarray)?;
    let text = llama_cpp::prompt_text(&model)?;
    let ids = model.chat_prompt_ids(&text)?;
    let mut pipeline = Pipeline::with_threads(model, Some(inputs.threads))?;
    let mut ours = Vec::new();
    for canvas in CANVASES {
        let (s, p, _) = llama_cpp::run_ours(&mut pipeline, &ids, canvas, false, 1)?;
        ours.push(s / p as f64);
    }
    let mask = pipeline.default_params().mask_id;
    let (full_256, dual, experts_run) = match pipeline.backend() {
        Backend::Ndarray(context) => {
            let (full, dual, _) = crate::time_cached_steps(
                context,
                llama_cpp::PROMPT,
                256 - llama_cpp::PROMPT,
                mask,
                inputs.repeats,
            )?;
            (full, dual, experts_run(context, mask)?)
        }
        #[allow(unreachable_patterns)]
        _ => bail!("the real-scale files run on the ndarray backend"),
    };
    let mut e2e = Vec::new();
    let canvas_e2e = llama_cpp::PROMPT + E2E_TOKENS;
    // End to end on the Q4_K_M file only: the per-step rows carry the Q8_0 comparison, and
    // each end-to-end run at 8 B takes minutes.
    let end_to_end = inputs.end_to_end && ty == FileType::Q4KM;
    if end_to_end {
        let (s, p, _) =
            llama_cpp::run_ours(&mut pipeline, &ids, canvas_e2e, false, E2E_STEPS_PER_BLOCK)?;
        e2e.push(("ours".to_string(), p, s));
    }
    drop(pipeline);

    let mut llama = vec![None; CANVASES.len()];
    if let Some(exe) = inputs.llama_cpp {
        eprintln!("real scale: {label}: llama.cpp");
        for (slot, canvas) in llama.iter_mut().zip(CANVASES) {
            let (s, p, _) = llama_cpp::run_llama(exe, path, &text, inputs.threads, canvas, 1)?;
            *slot = Some(s / p as f64);
        }
        if end_to_end {
            let (s, p, _) = llama_cpp::run_llama(
                exe,
                path,
                &text,
                inputs.threads,
                canvas_e2e,
                E2E_STEPS_PER_BLOCK,
            )?;
            e2e.push(("llama.cpp".to_string(), p, s));
        }
    }
    Ok(Measured {
        label,
        file_bytes: std::fs::metadata(path)?.len(),
        write,
        cold,
        warm,
        steps: CANVASES
            .iter()
            .zip(ours)
            .zip(llama)
            .map(|((&c, o), l)| (c, o, l))
            .collect(),
        full_256,
        dual,
        step_bytes: {
            let (experts, rest) = matrix_bytes(path)?;
            let share = experts_run.map_or(1.0, |e| e.run / e.of as f64);
            rest as f64 + share * experts as f64
        },
        experts_run,
        e2e,
    })
}

/// The report's section.
pub(crate) fn section(inputs: &Inputs<'_>) -> anyhow::Result<String> {
    let files = ensure_files(inputs.dir)?;
    let bandwidth = read_bandwidth(inputs.threads);
    let mut rows = Vec::new();
    for file in files {
        rows.push(measure(inputs, file)?);
    }
    let f = |v: &Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    let mut md = String::new();
    writeln!(
        md,
        "\n## Real scale\n\nLLaDA-8B-Instruct's exact shape (its `config.json`: vocabulary 126 464, d_model 4096, 32 layers, 32 heads, MLP 12 288) and LLaDA-MoE-7B-A1B's (vocabulary 157 184, hidden 2048, 16 layers, 16 heads, 64 experts of 1024 with 8 per token, as gathered with their sources in `tests/fixtures/llada-moe-7b-a1b`), with llama.cpp's tensor names and Q4_K_M / Q8_0 type choices, written by `ModelFiles::write_gguf_random` from seeded random weights (uniform, standard deviation 0.02) one slice of rows at a time into `{}`, reused when present (the writing time and the writer's peak resident memory below are those of the run that wrote each file, kept beside it); llama.cpp's `llama-diffusion-cli` runs the same files. {}, {} threads per engine; `cargo run --release --example benchmark -- --only-real-scale` measures this section alone. Memory read bandwidth measured here (each thread summing its half of a 1 GiB buffer, best of 5): {:.1} GB/s.\n",
        inputs.dir.display(),
        inputs.machine,
        inputs.threads,
        bandwidth / 1e9,
    )?;
    writeln!(
        md,
        "| file | size (GiB) | written in (s) | writer's peak memory (MiB) |\n|---|---:|---:|---:|"
    )?;
    for r in &rows {
        let (secs, peak) = r
            .write
            .as_ref()
            .map_or(("(reused)".into(), "".into()), |w| {
                (
                    format!("{:.0}", f(w, "seconds")),
                    format!("{:.0}", f(w, "peak_mib")),
                )
            });
        writeln!(
            md,
            "| {} | {:.2} | {secs} | {peak} |",
            r.label,
            gib(r.file_bytes as f64)
        )?;
    }
    writeln!(
        md,
        "\nTime to first step: a fresh process loads the file and runs one full step of the 128-token canvas (the logits of one 32-token block), from the process's start; cold = the file's pages dropped from the page cache first (`posix_fadvise(DONTNEED)`; the share still cached is measured with `mincore`), warm = the file cached. Resident memory after that step (anonymous: the weights as our kernels hold them, activations, caches, logits; file-backed: pages of the file still mapped):\n\n| file | cold: cached before | cold: load (s) | cold: first step (s) | warm: load (s) | warm: first step (s) | resident (MiB) | of which anonymous | weights held (MiB) | resident / file |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for r in &rows {
        let (cold, cold_cached) = &r.cold;
        let (warm, _) = &r.warm;
        let file_mib = r.file_bytes as f64 / (1 << 20) as f64;
        writeln!(
            md,
            "| {} | {:.0}% | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.3}x |",
            r.label,
            100.0 * cold_cached,
            f(cold, "load_s"),
            f(cold, "first_step_s"),
            f(warm, "load_s"),
            f(warm, "first_step_s"),
            f(warm, "rss_mib"),
            f(warm, "anon_mib"),
            f(warm, "weights_mib"),
            f(warm, "rss_mib") / file_mib,
        )?;
    }
    writeln!(
        md,
        "\nTime per full step (prompt {} + answer, blocks of {}, one step per block so every pass is a full forward of the canvas; time per step = generation wall time over forward passes, loading excluded, as in the llama.cpp section above):\n\n| file | canvas | llama.cpp (s/step) | ours (s/step) | ours / llama.cpp |\n|---|---:|---:|---:|---:|",
        llama_cpp::PROMPT,
        llama_cpp::BLOCK,
    )?;
    for r in &rows {
        for &(canvas, ours, llama) in &r.steps {
            let (l, ratio) = llama.map_or(("-".into(), "-".into()), |l| {
                (format!("{l:.2}"), format!("**{:.2}x**", ours / l))
            });
            writeln!(md, "| {} | {canvas} | {l} | {ours:.2} | {ratio} |", r.label)?;
        }
    }
    writeln!(
        md,
        "\nA 32-token step with Fast-dLLM's dual cache (canvas 256, the block's keys and values recomputed, the rest cached) beside a full step of the same canvas, medians of {}. A cached step reads every matrix once (all but the token embedding), and of a mixture's experts those its 32 tokens choose, counted in the step (in brackets, how many 32 tokens would reach choosing uniformly at random, as a router trained for balanced load tends to: where random weights route to fewer, a real model's step reads more); bytes read per second against the measured bandwidth says how close to the memory's limit it runs:\n\n| file | full step (s) | dual-cache step (s) | speed-up | experts run per layer | matrices read per step (GiB) | achieved (GB/s) | of measured bandwidth |\n|---|---:|---:|---:|---:|---:|---:|---:|",
        inputs.repeats
    )?;
    for r in &rows {
        let achieved = r.step_bytes / r.dual;
        let experts = r.experts_run.map_or("(dense)".to_string(), |e| {
            format!("{:.1} of {} ({:.1})", e.run, e.of, e.uniform)
        });
        writeln!(
            md,
            "| {} | {:.2} | {:.3} | {:.1}x | {experts} | {:.2} | {:.1} | {:.0}% |",
            r.label,
            r.full_256,
            r.dual,
            r.full_256 / r.dual,
            gib(r.step_bytes),
            achieved / 1e9,
            100.0 * achieved / bandwidth,
        )?;
    }
    if rows.iter().any(|r| !r.e2e.is_empty()) {
        writeln!(
            md,
            "\nEnd to end: {E2E_TOKENS} tokens after the {}-token prompt, blocks of {}, the reference schedule at {E2E_STEPS_PER_BLOCK} steps per block (4 tokens per pass), greedy; tokens/s over the generation's wall time (loading excluded; llama.cpp also runs one pass for each of its blocks past the canvas). With random weights the threshold rule admits about one token per pass, so Fast-dLLM's speed on a real model is the dual-cache step above times the passes its threshold needs:\n\n| file | engine | passes | seconds | tokens/s |\n|---|---|---:|---:|---:|",
            llama_cpp::PROMPT,
            llama_cpp::BLOCK,
        )?;
        for r in &rows {
            for (engine, passes, secs) in &r.e2e {
                writeln!(
                    md,
                    "| {} | {engine} | {passes} | {secs:.1} | {:.2} |",
                    r.label,
                    E2E_TOKENS as f64 / secs
                )?;
            }
        }
    }
    Ok(md)
}
