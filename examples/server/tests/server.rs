//! The server as its users meet it: started on the bundled model on a free loopback port, and
//! driven by the official `openai` Python package (plain, streamed, concurrent, cancelled and
//! hostile requests), by headless Chromium on its page, and stopped by SIGTERM mid-answer.
//!
//! Needs the test virtualenv (`.venv`, with `openai` and `websocket-client`) and Debian's
//! `chromium`: `./.ci/test` installs both. `LLADA_TEST_PYTHON` and `LLADA_CHROMIUM` point
//! elsewhere.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// The workspace root (this package is `examples/server`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    let python = std::env::var_os("LLADA_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", "import openai, websocket"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import openai and websocket: run the tests through ./.ci/test, which installs them into .venv (or set LLADA_TEST_PYTHON)",
        python.display()
    );
    python
}

fn chromium() -> PathBuf {
    let chromium = std::env::var_os("LLADA_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| "chromium".into());
    let ok = Command::new(&chromium)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} does not run: ./.ci/test installs Debian's chromium (or set LLADA_CHROMIUM)",
        chromium.display()
    );
    chromium
}

/// A running server, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(args: &[&str]) -> Self {
        let model = root().join("tests/fixtures/tiny-llada");
        let mut child = Command::new(env!("CARGO_BIN_EXE_llada-server"))
            .arg("--model")
            .arg(&model)
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the server binary starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server prints its address");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Self { child, url }
    }

    fn address(&self) -> &str {
        self.url.strip_prefix("http://").expect("an http URL")
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_script(script: &str, args: &[&str]) {
    let status = Command::new(python())
        .arg("-u")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests")
                .join(script),
        )
        .args(args)
        .status()
        .expect("python runs");
    assert!(
        status.success(),
        "{script} failed (its output above names the check)"
    );
}

#[test]
fn the_openai_client_gets_answers_streamed_concurrent_cancelled_and_refusals() {
    let main = Server::start(&[]);
    // Slow enough that requests meet in the queue and a client can leave mid-answer.
    let slow = Server::start(&["--step-delay-ms", "30"]);
    let small = Server::start(&[
        "--max-batch",
        "1",
        "--queue",
        "1",
        "--api-key",
        "test-key",
        "--step-delay-ms",
        "30",
    ]);
    let eval = root().join("tests/fixtures/tiny-llada/eval.json");
    run_script(
        "openai_client.py",
        &[
            &main.url,
            &slow.url,
            &small.url,
            "test-key",
            eval.to_str().expect("UTF-8 path"),
        ],
    );
}

#[test]
fn sigterm_lets_the_answer_in_flight_finish() {
    let server = Server::start(&["--step-delay-ms", "30"]);
    let mut stream = TcpStream::connect(server.address()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let body = r#"{"messages": [{"role": "user", "content": "reverse:pen,frog,rock"}], "stream": true, "llada": {"visual": true}}"#;
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        server.address(),
        body.len()
    )
    .expect("send");
    // The stream is read on its own thread while the server shuts down; it reports when the
    // first step has come, and counts the steps that come after the signal.
    let killed = Arc::new(AtomicBool::new(false));
    let (started, first_step) = mpsc::channel();
    let reader = {
        let killed = killed.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut after_signal = 0;
            let mut buf = [0u8; 4096];
            let mut told = false;
            loop {
                let n = stream.read(&mut buf).expect("read");
                if n == 0 {
                    return (text, after_signal);
                }
                let chunk = String::from_utf8_lossy(&buf[..n]);
                if killed.load(Ordering::SeqCst) {
                    after_signal += chunk.matches("llada.canvas").count();
                }
                text.push_str(&chunk);
                if !told && text.contains("llada.canvas") {
                    told = true;
                    let _ = started.send(());
                }
            }
        })
    };
    first_step
        .recv_timeout(Duration::from_secs(60))
        .expect("the generation starts");
    killed.store(true, Ordering::SeqCst);
    let status = server.terminate();
    let (text, after_signal) = reader.join().expect("the reader");
    assert!(
        status.success(),
        "the server exits cleanly on SIGTERM: {status}"
    );
    assert!(
        after_signal > 0,
        "the generation went on after the signal: {text}"
    );
    assert!(
        text.contains(r#""finish_reason":"stop""#),
        "the answer in flight finished: {text}"
    );
    assert!(
        text.contains("rock,frog,pen"),
        "with its whole text: {text}"
    );
    assert!(
        !text.contains(r#""error""#),
        "no error in the stream: {text}"
    );
    assert!(
        text.contains("data: [DONE]"),
        "the stream ends with [DONE]: {text}"
    );
}

#[test]
fn the_page_streams_the_answer_in_headless_chromium() {
    let server = Server::start(&[]);
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("llada-server-page.png");
    let _ = std::fs::remove_file(&shot);
    run_script(
        "browser.py",
        &[
            &format!("{}/", server.url),
            chromium().to_str().expect("UTF-8 path"),
            shot.to_str().expect("UTF-8 path"),
        ],
    );
    assert!(
        shot.exists(),
        "the screenshot is kept at {}",
        shot.display()
    );
}

/// One chat request over a fresh connection: the answer's text.
fn chat(address: &str, prompt: &str, llada: &str) -> String {
    let body =
        format!(r#"{{"messages": [{{"role": "user", "content": "{prompt}"}}], "llada": {llada}}}"#);
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, json) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    let reply: serde_json::Value = serde_json::from_str(json).expect("JSON");
    reply["choices"][0]["message"]["content"]
        .as_str()
        .expect("an answer")
        .to_string()
}

#[test]
fn onnx_runtime_serves_batches_with_its_cached_graph() {
    // The bundled model.onnx is a cached graph: batched rows that leave between blocks change
    // the batch the graph's cache is bound for.
    let server = Server::start(&["--backend", "ort", "--step-delay-ms", "20"]);
    let prompts = [
        "reverse:pen,frog,rock",
        "copy:ant,bee",
        "sort:fox,cat,dog",
        "larger:12,31",
    ];
    for llada in ["{}", r#"{"threshold": 0.9, "cache": "dual"}"#] {
        let single: Vec<String> = prompts
            .iter()
            .map(|p| chat(server.address(), p, llada))
            .collect();
        assert_eq!(single[0], "rock,frog,pen", "{llada}");
        let barrier = std::sync::Barrier::new(prompts.len());
        let together: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = prompts
                .iter()
                .map(|p| {
                    let barrier = &barrier;
                    let address = server.address();
                    s.spawn(move || {
                        barrier.wait();
                        chat(address, p, llada)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a client"))
                .collect()
        });
        assert_eq!(together, single, "{llada}: batched on ONNX Runtime");
    }
    let mut stream = TcpStream::connect(server.address()).expect("connect");
    write!(
        stream,
        "GET /health HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        server.address()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let health: serde_json::Value =
        serde_json::from_str(response.split_once("\r\n\r\n").expect("a body").1).expect("JSON");
    assert!(
        // The first batch takes the requests that have arrived, the second the rest: a 2 + 2
        // split is batching too; one request at a time would leave 1.
        health["served"]["largest_batch"].as_u64() >= Some(2),
        "the concurrent requests shared batches: {health}"
    );
}
