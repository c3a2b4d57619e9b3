//! The benchmark's server rows: `llada-server` on the bundled model under 1, 4 and 16
//! concurrent clients, with batching (`--max-batch 16`) and one request at a time
//! (`--max-batch 1`): requests per second, p50/p99 latency, and the rows per batch it formed.
//! The clients are plain HTTP/1.1 over loopback (one connection per request), so the figures
//! are the server's, not a client library's.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Requests per measurement (a multiple of every client count).
const REQUESTS: usize = 96;
const CLIENTS: [usize; 3] = [1, 4, 16];
/// Alternating rounds per measurement (the median round's throughput is reported).
const ROUNDS: usize = 3;
/// The server's decoding: the model's reference schedule, and Fast-dLLM's threshold rule with
/// the dual cache.
const DECODINGS: [(&str, &[&str]); 2] = [
    ("reference schedule", &[]),
    (
        "threshold 0.9, dual cache",
        &["--threshold", "0.9", "--cache", "dual"],
    ),
];

struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(
        exe: &Path,
        model: &Path,
        threads: usize,
        max_batch: usize,
        decoding: &[&str],
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(exe)
            .arg("--model")
            .arg(model)
            .args(decoding)
            .args(["--port", "0", "--queue", "1024"])
            .args(["--threads", &threads.to_string()])
            .args(["--max-batch", &max_batch.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let address = line
            .trim()
            .strip_prefix("listening on http://")
            .with_context(|| format!("the server said {line:?}"))?
            .to_string();
        Ok(Self { child, address })
    }

    /// One request: the status code and the body.
    fn request(&self, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
        let mut stream = TcpStream::connect(&self.address)?;
        stream.set_read_timeout(Some(Duration::from_secs(300)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.address,
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .context("an HTTP status line")?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// Batches and rows served so far.
    fn served(&self) -> anyhow::Result<(usize, usize)> {
        let (_, body) = self.request("GET", "/health", "")?;
        let health: serde_json::Value = serde_json::from_str(&body)?;
        let n = |k: &str| health["served"][k].as_u64().unwrap_or(0) as usize;
        Ok((n("batches"), n("rows")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One server's rounds at one client count.
#[derive(Clone, Default)]
struct Runs {
    /// Requests per second of each round.
    rates: Vec<f64>,
    /// Every request's latency (s).
    latencies: Vec<f64>,
    rows: usize,
    batches: usize,
    correct: usize,
}

struct Row {
    decoding: &'static str,
    clients: usize,
    max_batch: usize,
    per_second: f64,
    p50: f64,
    p99: f64,
    rows_per_batch: f64,
    correct: usize,
}

fn chat_body(prompt: &str) -> String {
    serde_json::json!({ "messages": [{ "role": "user", "content": prompt }] }).to_string()
}

/// `REQUESTS` requests from `clients` threads, each taking the next eval prompt.
fn measure(
    server: &Server,
    clients: usize,
    prompts: &Arc<Vec<(String, String)>>,
) -> anyhow::Result<(f64, Vec<f64>, usize)> {
    let next = Arc::new(AtomicUsize::new(0));
    let correct = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let latencies = std::thread::scope(|scope| -> anyhow::Result<Vec<f64>> {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let (next, correct, prompts) = (next.clone(), correct.clone(), prompts.clone());
                scope.spawn(move || -> anyhow::Result<Vec<f64>> {
                    let mut latencies = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= REQUESTS {
                            return Ok(latencies);
                        }
                        let (prompt, expected) = &prompts[i % prompts.len()];
                        let sent = Instant::now();
                        let (status, body) =
                            server.request("POST", "/v1/chat/completions", &chat_body(prompt))?;
                        latencies.push(sent.elapsed().as_secs_f64());
                        if status != 200 {
                            bail!("status {status}: {body}");
                        }
                        let reply: serde_json::Value = serde_json::from_str(&body)?;
                        if reply["choices"][0]["message"]["content"].as_str() == Some(expected) {
                            correct.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client panicked"))??,
            );
        }
        Ok(all)
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    Ok((elapsed, latencies, correct.load(Ordering::Relaxed)))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Builds the server (release) and returns its path.
fn build_server() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "llada-server"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("cargo build -p llada-server failed");
    }
    // A relative target directory is relative to where cargo ran: here, the root.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release/llada-server"))
}

/// The report's section.
pub(crate) fn section(machine: &str, threads: usize) -> anyhow::Result<String> {
    let exe = build_server()?;
    let model = llada_test_support::bundled_model();
    let eval = llada_test_support::eval_set();
    let prompts: Arc<Vec<(String, String)>> = Arc::new(
        eval.items
            .iter()
            .take(REQUESTS)
            .map(|item| (item.prompt.clone(), item.answer.clone()))
            .collect(),
    );
    if prompts.is_empty() {
        bail!("the bundled eval set has no prompts");
    }
    let mut rows = Vec::new();
    for (decoding, flags) in DECODINGS {
        // Both servers up at once (the idle one costs nothing), measured in alternating rounds.
        let servers = [16, 1].map(|max_batch| {
            Server::start(&exe, &model, threads, max_batch, flags).map(|s| (max_batch, s))
        });
        let mut started = Vec::new();
        for s in servers {
            started.push(s?);
        }
        for (_, server) in &started {
            // Warm-up: the first requests pay for page faults and buffer growth.
            measure(server, 4, &prompts)?;
        }
        for clients in CLIENTS {
            let mut runs = vec![Runs::default(); started.len()];
            for _ in 0..ROUNDS {
                for (i, (_, server)) in started.iter().enumerate() {
                    let (batches_before, rows_before) = server.served()?;
                    let (elapsed, latencies, correct) = measure(server, clients, &prompts)?;
                    let (batches, served) = server.served()?;
                    let run = &mut runs[i];
                    run.rates.push(REQUESTS as f64 / elapsed);
                    run.latencies.extend(latencies);
                    run.rows += served - rows_before;
                    run.batches += batches - batches_before;
                    run.correct += correct;
                }
            }
            for ((max_batch, _), run) in started.iter().zip(runs) {
                let Runs {
                    mut rates,
                    mut latencies,
                    rows: served,
                    batches,
                    correct,
                } = run;
                rates.sort_by(f64::total_cmp);
                latencies.sort_by(f64::total_cmp);
                let row = Row {
                    decoding,
                    clients,
                    max_batch: *max_batch,
                    per_second: rates[rates.len() / 2],
                    p50: percentile(&latencies, 0.5) * 1e3,
                    p99: percentile(&latencies, 0.99) * 1e3,
                    rows_per_batch: served as f64 / batches.max(1) as f64,
                    correct,
                };
                eprintln!(
                    "server {decoding}, --max-batch {max_batch}, {clients} clients: {:.1} requests/s (rounds {rates:.1?}), p50 {:.1} ms, p99 {:.1} ms, {:.1} rows per batch, {correct}/{} correct",
                    row.per_second,
                    row.p50,
                    row.p99,
                    row.rows_per_batch,
                    REQUESTS * ROUNDS
                );
                rows.push(row);
            }
        }
    }
    let mut s = String::new();
    writeln!(s, "\n## Local server (load)\n")?;
    writeln!(
        s,
        "`cargo run --release --example benchmark -- --only-server --threads {threads}`: {machine}. \
         `llada-server` on the bundled model (its defaults: 16 tokens, 16 steps, blocks of 8), \
         {REQUESTS} chat requests per round over loopback HTTP/1.1 (one connection each), from \
         the eval set's prompts, after a warm-up; `--max-batch 16` batches requests that \
         arrive together into one canvas, `--max-batch 1` serves one at a time. Both servers \
         run side by side, measured in {ROUNDS} alternating rounds: requests/s is the median \
         round's, the latencies (from sending a request to its whole answer) are over all \
         rounds; rows per batch is what the server formed. \
         The answers are checked against the eval set's (the model's 98.8% shows as a few \
         misses)."
    )?;
    writeln!(
        s,
        "\n| decoding | clients | server | requests/s | p50 latency (ms) | p99 latency (ms) | rows per batch | correct |"
    )?;
    writeln!(s, "|---|---:|---|---:|---:|---:|---:|---:|")?;
    for r in &rows {
        writeln!(
            s,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {}/{} |",
            r.decoding,
            r.clients,
            if r.max_batch > 1 {
                format!("batched (--max-batch {})", r.max_batch)
            } else {
                "one at a time (--max-batch 1)".to_string()
            },
            r.per_second,
            r.p50,
            r.p99,
            r.rows_per_batch,
            r.correct,
            REQUESTS * ROUNDS
        )?;
    }
    for (decoding, _) in DECODINGS {
        let at = |clients: usize, max_batch: usize| {
            rows.iter()
                .find(|r| {
                    r.decoding == decoding && r.clients == clients && r.max_batch == max_batch
                })
                .map_or(f64::NAN, |r| r.per_second)
        };
        writeln!(
            s,
            "\nBatching's gain in throughput over one request at a time, {decoding}: {:.2}x at 16 clients, {:.2}x at 4, {:.2}x at 1.",
            at(16, 16) / at(16, 1),
            at(4, 16) / at(4, 1),
            at(1, 16) / at(1, 1)
        )?;
    }
    Ok(s)
}
