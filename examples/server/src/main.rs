//! `llada-server`: a local HTTP server speaking OpenAI's API, for apps and editor plugins that
//! talk to a model over HTTP rather than link a library.
//!
//! ```sh
//! cargo run --release -p llada-server -- --model tests/fixtures/tiny-llada
//! curl http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \
//!     -d '{"messages": [{"role": "user", "content": "reverse:pen,frog,rock"}]}'
//! ```
//!
//! Endpoints: `POST /v1/chat/completions` and `POST /v1/completions` (whole, or `stream: true`
//! as server-sent events), `GET /v1/models`, `GET /health`, and `GET /`, a page that streams
//! the answer and can show the canvas unmasking. Diffusion settings go under `"llada": {...}`
//! in a request (`steps`, `block_length`, `threshold`, `cache`, `remasking`, `algorithm`,
//! `visual`, ...); the server's flags set their defaults, as for the `generate` example.
//!
//! Requests that arrive together share one forward pass (rows of one left-padded canvas,
//! `--max-batch`); see `engine.rs` for the scheduling. SIGINT or SIGTERM stops accepting
//! connections and lets the requests in flight finish (at most `--shutdown-grace` seconds, or
//! until a second signal; then they are cancelled with an error).

#![forbid(unsafe_code)]

#[path = "../../common/mod.rs"]
mod common;

mod api;
mod engine;
mod http;
mod text;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

/// Serve a LLaDA-style diffusion model over OpenAI's HTTP API.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    model: common::ModelArgs,
    /// The decoding defaults of every request (a request's own fields win).
    #[command(flatten)]
    sampling: common::SamplingArgs,
    /// Address to listen on. Anything but loopback needs --api-key (or --no-api-key).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port (0: any free one; the address is printed on stdout).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer <key>` on /v1/ routes [env: LLADA_API_KEY].
    #[arg(long, env = "LLADA_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Listen beyond loopback without an API key.
    #[arg(long)]
    no_api_key: bool,
    /// The most requests decoded together in one canvas.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// The most requests waiting; more are refused with 503 and Retry-After.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// The largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// The most sampler workspace a batch may take, in MiB (the logits of a block's
    /// positions over the vocabulary, per row; the rows' activations come on top).
    #[arg(long, default_value_t = 2048)]
    workspace_mib: usize,
    /// Pause this many milliseconds after every denoising step: to watch the canvas unmask
    /// in the page at a human pace, and for tests that need requests to meet in the queue.
    #[arg(long, default_value_t = 0)]
    step_delay_ms: u64,
    /// Compute threads [default: the backend's].
    #[arg(long)]
    threads: Option<usize>,
    /// The model name listed by /v1/models [default: the model's directory or file name].
    #[arg(long)]
    model_id: Option<String>,
    /// Seconds the requests in flight get to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 30)]
    shutdown_grace: u64,
}

fn main() -> anyhow::Result<()> {
    common::init_logging();
    let cli = Cli::parse();
    if !cli.host.is_loopback() && cli.api_key.is_none() && !cli.no_api_key {
        bail!(
            "listening on {} reaches beyond this machine: give --api-key (or LLADA_API_KEY), or --no-api-key to serve without one",
            cli.host
        );
    }
    if cli.max_batch == 0 || cli.queue == 0 {
        bail!("--max-batch and --queue must be at least 1");
    }
    let model = cli
        .model
        .load()
        .map_err(|e| anyhow::anyhow!(llada::report(&e)))
        .with_context(|| format!("loading {}", cli.model.model.display()))?;
    // Created here, so that a backend that cannot start stops the server before it listens;
    // the request checks need its context length.
    let mut pipeline = llada::Pipeline::with_threads(model.clone(), cli.threads)
        .map_err(|e| anyhow::anyhow!(llada::report(&e)))?;
    let limits = api::Limits {
        max_seq: pipeline.max_sequence_length(),
        vocab: llada::core::MaskPredictor::vocab_size(pipeline.backend()),
        workspace: cli.workspace_mib.saturating_mul(1 << 20),
    };
    // The server's defaults must make a valid request on their own.
    let defaults = cli.sampling.params(&model);
    defaults
        .validate()
        .context("the decoding flags do not make valid parameters")?;
    let engine = engine::Engine::new(
        cli.queue,
        cli.max_batch,
        limits.workspace,
        limits.vocab,
        Duration::from_millis(cli.step_delay_ms),
    );
    let worker = {
        let engine = engine.clone();
        std::thread::Builder::new()
            .name("llada-engine".into())
            .spawn(move || engine::run(&engine, pipeline))?
    };
    let state = Arc::new(http::AppState {
        engine: engine.clone(),
        model,
        defaults: cli.sampling.clone(),
        model_id: cli
            .model_id
            .clone()
            .unwrap_or_else(|| model_name(&cli.model.model)),
        limits,
        api_key: cli.api_key.clone(),
        loopback: cli.host.is_loopback(),
        max_body: cli.max_body_bytes,
        next_id: AtomicU64::new(1),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(
        state,
        SocketAddr::new(cli.host, cli.port),
        Duration::from_secs(cli.shutdown_grace),
    ))?;
    engine.close();
    let _ = worker.join();
    let served = engine.served();
    tracing::info!(?served, "stopped");
    Ok(())
}

/// The name of a model directory or file, for /v1/models.
fn model_name(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "llada".into())
}

async fn serve(
    state: Arc<http::AppState>,
    addr: SocketAddr,
    grace: Duration,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    // The one line on stdout: scripts and tests read the address from it.
    println!("listening on http://{local}");
    tracing::info!(model = %state.model_id, "serving");
    let engine = state.engine.clone();
    // Fires once the grace period is over (or on a second signal) and the requests still in
    // flight have had a moment to send their errors.
    let deadline = Arc::new(tokio::sync::Notify::new());
    let hard_stop = deadline.clone();
    let shutdown = async move {
        signal().await;
        tracing::info!("shutting down: finishing the requests in flight");
        engine.close();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(grace) => {}
                () = signal() => {}
            }
            tracing::warn!("cancelling the requests still in flight");
            engine.abort();
            tokio::time::sleep(Duration::from_secs(2)).await;
            deadline.notify_one();
        });
    };
    let server = axum::serve(listener, http::router(state)).with_graceful_shutdown(shutdown);
    // Connections that stay open after that (a client that stops reading) do not keep the
    // process alive.
    tokio::select! {
        served = server => served?,
        () = hard_stop.notified() => tracing::warn!("closing the connections left"),
    }
    Ok(())
}

/// SIGINT or SIGTERM.
async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
