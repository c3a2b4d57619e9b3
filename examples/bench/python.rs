//! The Python engines (ONNX Runtime and PyTorch eager), each loaded once in a child process of
//! its own (`python_bench.py`) that runs one forward pass per request, so that their runs
//! interleave with the Rust engines' in the same rounds: the machine's slow and quiet spells
//! fall on every engine alike. One process per engine, so that neither shares its address
//! space, allocator or OpenMP threads with the other while it is timed.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context as _, bail};
use llada::core::ForwardRequest;
use serde_json::{Value, json};

use super::Forward;

/// The engines' names, as the script and the report call them.
pub(crate) const ORT: &str = "onnxruntime-python";
pub(crate) const TORCH: &str = "pytorch-eager";

/// The child process and its pipes.
pub(crate) struct Server {
    /// The engines it loaded: `ORT`, `TORCH` or both.
    engines: &'static [&'static str],
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub(crate) torch_version: String,
    pub(crate) onnxruntime_version: String,
}

impl Server {
    /// Starts `python_bench.py` on `model` with `threads` intra-op threads per engine, loading
    /// only `engines` (`ORT`, `TORCH` or both), and waits until they are loaded.
    pub(crate) fn start(
        python: &Path,
        model: &Path,
        threads: usize,
        engines: &'static [&'static str],
    ) -> anyhow::Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bench/python_bench.py");
        let mut command = Command::new(python);
        command
            .arg(&script)
            .arg(model)
            .args(["--threads", &threads.to_string()]);
        if !engines.contains(&ORT) {
            command.arg("--skip-ort");
        }
        if !engines.contains(&TORCH) {
            command.arg("--skip-torch");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {} {}", python.display(), script.display()))?;
        let stdin = child.stdin.take().context("the script's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("the script's stdout")?);
        let mut server = Self {
            engines,
            child,
            stdin,
            stdout,
            torch_version: String::new(),
            onnxruntime_version: String::new(),
        };
        let ready = server.answer()?;
        let version = |key: &str| ready[key].as_str().unwrap_or_default().to_string();
        server.torch_version = version("torch_version");
        server.onnxruntime_version = version("onnxruntime_version");
        Ok(server)
    }

    /// The next line the script writes, parsed.
    fn answer(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            bail!("python_bench.py ended ({status}); its errors are above");
        }
        serde_json::from_str(&line).with_context(|| format!("python_bench.py wrote {line:?}"))
    }

    fn request(&mut self, request: &Value) -> anyhow::Result<Value> {
        writeln!(self.stdin, "{request}")?;
        self.stdin.flush()?;
        self.answer()
    }

    /// Whether both engines' logits over `ids` agree (the script's tolerance), and by how much.
    /// Only a server with both engines can answer.
    pub(crate) fn check(&mut self, ids: &[u32]) -> anyhow::Result<(bool, f64)> {
        if self.engines.len() != 2 {
            bail!("the check needs a server with both Python engines");
        }
        let answer = self.request(&json!({ "check": ids }))?;
        Ok((
            answer["passed"].as_bool().context("check: passed")?,
            answer["max_abs_diff"].as_f64().unwrap_or(f64::INFINITY),
        ))
    }

    /// The child's peak resident set, MiB.
    pub(crate) fn peak_rss_mib(&mut self) -> anyhow::Result<f64> {
        self.request(&json!({ "report": true }))?["peak_rss_mb"]
            .as_f64()
            .context("report: peak_rss_mb")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The script keeps nothing that needs finishing (its report was asked for already).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One Python engine in a server of its own, timed by the script itself (`time.perf_counter`
/// around the call, inputs built before): the pipes' time is not counted.
pub(crate) struct Engine {
    pub(crate) server: Server,
    pub(crate) name: &'static str,
    pub(crate) vocab: usize,
}

impl Engine {
    /// Starts a server with only the engine `name` (`ORT` or `TORCH`).
    pub(crate) fn start(
        python: &Path,
        model: &Path,
        threads: usize,
        name: &'static str,
        vocab: usize,
    ) -> anyhow::Result<Self> {
        let engines: &'static [&'static str] = match name {
            ORT => &[ORT],
            TORCH => &[TORCH],
            _ => bail!("no Python engine {name:?} (there are {ORT} and {TORCH})"),
        };
        Ok(Self {
            server: Server::start(python, model, threads, engines)?,
            name,
            vocab,
        })
    }

    /// The engine's Python package and its version.
    pub(crate) fn package(&self) -> (&'static str, &str) {
        if self.name == ORT {
            ("ONNX Runtime (Python)", &self.server.onnxruntime_version)
        } else {
            ("PyTorch", &self.server.torch_version)
        }
    }
}

impl Forward for Engine {
    fn vocab(&self) -> usize {
        self.vocab
    }

    fn run(&mut self, request: &ForwardRequest<'_>, logits: &mut [f32]) -> anyhow::Result<()> {
        self.timed(request, logits).map(drop)
    }

    fn timed(&mut self, request: &ForwardRequest<'_>, _logits: &mut [f32]) -> anyhow::Result<f64> {
        if request.batch() != 1 || request.attention_mask().is_some() {
            bail!("the Python engines run batch 1 without padding");
        }
        let answer = self
            .server
            .request(&json!({ "engine": self.name, "ids": request.ids() }))?;
        answer["seconds"]
            .as_f64()
            .with_context(|| format!("{}: no time in {answer}", self.name))
    }
}
