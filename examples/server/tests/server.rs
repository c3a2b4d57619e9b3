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
    let small = Server::start(&["--max-batch", "1", "--queue", "1", "--api-key", "test-key"]);
    let eval = root().join("tests/fixtures/tiny-llada/eval.json");
    run_script(
        "openai_client.py",
        &[
            &main.url,
            &small.url,
            "test-key",
            eval.to_str().expect("UTF-8 path"),
        ],
    );
}

#[test]
fn sigterm_lets_the_answer_in_flight_finish() {
    let server = Server::start(&[]);
    let mut stream = TcpStream::connect(server.address()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let body = r#"{"messages": [{"role": "user", "content": "reverse:pen,frog,rock"}], "stream": true, "max_tokens": 200, "llada": {"steps": 200, "block_length": 200, "visual": true}}"#;
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        server.address(),
        body.len()
    )
    .expect("send");
    // Wait until the generation is under way.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("llada.canvas") {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "the stream ended before its first step");
        seen.extend_from_slice(&buf[..n]);
    }
    let status = server.terminate();
    stream
        .read_to_end(&mut seen)
        .expect("the rest of the stream");
    let text = String::from_utf8_lossy(&seen);
    assert!(
        status.success(),
        "the server exits cleanly on SIGTERM: {status}"
    );
    assert!(
        text.contains(r#""finish_reason":"stop""#) || text.contains(r#""finish_reason":"length""#),
        "the answer in flight finished: {text}"
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
