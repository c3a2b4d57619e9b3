//! The routes: OpenAI's chat and completions endpoints (whole answers and server-sent events),
//! the model list, health, and the page.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use llada::Model;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::{ApiError, Limits, Prepared, Request};
use crate::common::SamplingArgs;
use crate::engine::{Engine, Event, Job, Refused};
use crate::text::{Detokenizer, Finish};

/// The page served at `/`: one file, nothing fetched from elsewhere.
const PAGE: &str = include_str!("page.html");

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) engine: Arc<Engine>,
    pub(crate) model: Arc<Model>,
    /// The server's decoding defaults (the model's, then the server's flags).
    pub(crate) defaults: SamplingArgs,
    /// The name `/v1/models` lists and responses carry.
    pub(crate) model_id: String,
    pub(crate) limits: Limits,
    pub(crate) api_key: Option<String>,
    /// Listening on loopback only: requests must name a loopback host (a web page that
    /// rebinds its own name to 127.0.0.1 does not reach the server).
    pub(crate) loopback: bool,
    pub(crate) max_body: usize,
    pub(crate) next_id: AtomicU64,
    pub(crate) created: u64,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        match self.status {
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // The generation handlers read their bodies themselves, under `max_body`, so that an
        // oversized one gets an OpenAI-style error.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn health(State(s): State<Arc<AppState>>) -> axum::Json<Value> {
    let (waiting, running) = s.engine.load();
    let served = s.engine.served();
    axum::Json(json!({
        "status": "ok",
        "waiting": waiting,
        "running": running,
        "served": {
            "batches": served.batches,
            "rows": served.rows,
            "largest_batch": served.largest_batch,
            "stopped_early": served.stopped_early,
        },
    }))
}

async fn models(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = s.authorize(&headers) {
        return e.into_response();
    }
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": s.model_id,
            "object": "model",
            "created": s.created,
            "owned_by": "llada",
            "llada": {
                "family": s.model.files().family(),
                "context_length": s.limits.max_seq,
            },
        }],
    }))
    .into_response()
}

async fn not_found() -> ApiError {
    ApiError::invalid("no such route", None).with_code(StatusCode::NOT_FOUND, "not_found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::invalid("method not allowed on this route", None)
        .with_code(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completion,
}

async fn chat(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    generate(s, headers, body, Endpoint::Chat)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    generate(s, headers, body, Endpoint::Completion)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

impl AppState {
    /// On loopback, the `Host` header must name a loopback host.
    fn check_host(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if !self.loopback {
            return Ok(());
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // `name:port`, `[v6]:port`, or a bare name.
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(n, _)| n),
        };
        let loopback = name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            Ok(())
        } else {
            Err(ApiError::invalid(
                format!("host `{host}` is not this loopback server (start it with --host to serve other names)"),
                None,
            )
            .with_code(StatusCode::FORBIDDEN, "forbidden_host"))
        }
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.check_host(headers)?;
        let Some(key) = &self.api_key else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        // Compared in constant time: the position of a first difference does not show.
        let equal = given.is_some_and(|g| {
            g.len() == key.len()
                && g.bytes()
                    .zip(key.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if equal {
            Ok(())
        } else {
            Err(ApiError::invalid(
                "missing or wrong API key (Authorization: Bearer <key>)",
                None,
            )
            .with_code(StatusCode::UNAUTHORIZED, "invalid_api_key"))
        }
    }
}

/// Reads and checks the body, queues the job, and answers whole or streamed.
async fn generate(
    s: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    // JSON only: a cross-site page cannot send it without a CORS preflight, which this
    // server does not grant.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::invalid(
            "send the body as JSON, with `content-type: application/json`",
            None,
        )
        .with_code(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"));
    }
    let too_large = || {
        ApiError::invalid(
            format!("the request body is over the limit of {} bytes", s.max_body),
            None,
        )
        .with_code(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.max_body as u64) {
        drain(body, s.max_body.saturating_mul(DRAIN_FACTOR)).await;
        return Err(too_large());
    }
    let bytes = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, s.max_body))
        .await
        .map_err(|_| {
            ApiError::invalid("the request body did not arrive in time", None)
                .with_code(StatusCode::REQUEST_TIMEOUT, "request_timeout")
        })?
        .map_err(|_| too_large())?;
    // Tokenizing a long prompt is CPU work: off the async threads.
    let state = s.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let request = Request::parse(&bytes)?;
        match endpoint {
            Endpoint::Chat => request.chat(&state.model, &state.defaults, state.limits),
            Endpoint::Completion => request.completion(&state.model, &state.defaults, state.limits),
        }
    })
    .await
    .map_err(|_| {
        ApiError::invalid("internal error", None)
            .with_code(StatusCode::INTERNAL_SERVER_ERROR, "internal")
    })??;
    let (tx, rx) = mpsc::unbounded_channel();
    let Prepared {
        prompt_ids,
        params,
        max_tokens,
        stops,
        stream,
        include_usage,
        visual,
    } = prepared;
    let prompt_tokens = prompt_ids.len();
    s.engine
        .submit(Job {
            prompt_ids,
            params,
            visual: visual && stream,
            events: tx,
        })
        .map_err(|refused| match refused {
            Refused::QueueFull => {
                ApiError::invalid("the server is busy: the queue is full, retry later", None)
                    .with_code(StatusCode::SERVICE_UNAVAILABLE, "queue_full")
            }
            Refused::Closing => ApiError::invalid("the server is shutting down", None)
                .with_code(StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        })?;
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    let reply = Reply {
        id: match endpoint {
            Endpoint::Chat => format!("chatcmpl-{id}"),
            Endpoint::Completion => format!("cmpl-{id}"),
        },
        created: now(),
        endpoint,
        prompt_tokens,
        detok: Detokenizer::new(&s.model, max_tokens, stops),
        pending: None,
        state: s,
    };
    if stream {
        Ok(reply.stream(rx, include_usage))
    } else {
        reply.whole(rx).await
    }
}

/// How long a request body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An oversized body is read (and dropped, chunk by chunk) up to this many times the limit
/// before the refusal, so that a client that sends its whole body before reading the answer
/// gets the 413 rather than a broken connection; beyond it the connection is closed.
const DRAIN_FACTOR: usize = 16;

async fn drain(body: Body, most: usize) {
    use futures_util::StreamExt;
    let mut chunks = body.into_data_stream();
    let mut read = 0usize;
    while read <= most {
        match chunks.next().await {
            Some(Ok(chunk)) => read += chunk.len(),
            _ => return,
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One answer on its way to the client.
struct Reply {
    id: String,
    created: u64,
    endpoint: Endpoint,
    prompt_tokens: usize,
    detok: Detokenizer,
    /// The finish that came with the last text, told next.
    pending: Option<Finish>,
    state: Arc<AppState>,
}

/// What the engine's events come to for the client.
enum Step {
    Text(String),
    Canvas(Value),
    Finished(Finish),
}

impl Reply {
    /// Waits for the next thing to tell the client. The answer is complete as soon as its final
    /// ids hold end of text or `max_tokens` (or a stop string): the rest of the generation is
    /// not waited for, and dropping the receiver then frees the row.
    async fn next(&mut self, rx: &mut mpsc::UnboundedReceiver<Event>) -> Result<Step, ApiError> {
        if let Some(f) = self.pending.take() {
            return Ok(Step::Finished(f));
        }
        let model = self.state.model.clone();
        loop {
            let (ids, done) = match rx.recv().await {
                Some(Event::Final(ids)) => (ids, false),
                Some(Event::Done(Ok(ids))) => (ids, true),
                Some(Event::Canvas {
                    text,
                    step,
                    forward_passes,
                }) => {
                    return Ok(Step::Canvas(
                        json!({ "text": text, "step": step, "forward_passes": forward_passes }),
                    ));
                }
                Some(Event::Done(Err(failure))) => {
                    let error = ApiError::invalid(failure.message, Some("llada"));
                    return Err(if failure.bad_request {
                        error
                    } else {
                        error.with_code(StatusCode::INTERNAL_SERVER_ERROR, "generation_failed")
                    });
                }
                None => {
                    return Err(ApiError::invalid("the generation stopped", None)
                        .with_code(StatusCode::INTERNAL_SERVER_ERROR, "generation_failed"));
                }
            };
            let (delta, finish) = self.detok.update(&model, &ids, done);
            if !delta.is_empty() {
                // The finish, if any, comes with the next call (the ids are the same).
                if let Some(f) = finish {
                    self.pending = Some(f);
                }
                return Ok(Step::Text(delta));
            }
            if let Some(f) = finish {
                return Ok(Step::Finished(f));
            }
        }
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.detok.tokens(),
            "total_tokens": self.prompt_tokens + self.detok.tokens(),
        })
    }

    /// The whole answer in one JSON body.
    async fn whole(mut self, mut rx: mpsc::UnboundedReceiver<Event>) -> Result<Response, ApiError> {
        let finish = loop {
            if let Step::Finished(f) = self.next(&mut rx).await? {
                break f;
            }
        };
        drop(rx);
        let text = self.detok.text();
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "logprobs": null,
                "finish_reason": finish.as_str(),
            }),
            Endpoint::Completion => json!({
                "index": 0,
                "text": text,
                "logprobs": null,
                "finish_reason": finish.as_str(),
            }),
        };
        Ok(axum::Json(json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.state.model_id,
            "choices": [choice],
            "usage": self.usage(),
        }))
        .into_response())
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    /// One chunk of the stream: `delta` text, or the finish.
    fn chunk(&self, delta: Option<&str>, finish: Option<Finish>, role: bool) -> SseEvent {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let mut d = serde_json::Map::new();
                if role {
                    d.insert("role".into(), "assistant".into());
                }
                if let Some(t) = delta {
                    d.insert("content".into(), t.into());
                }
                json!({
                    "index": 0,
                    "delta": d,
                    "logprobs": null,
                    "finish_reason": finish.map(Finish::as_str),
                })
            }
            Endpoint::Completion => json!({
                "index": 0,
                "text": delta.unwrap_or(""),
                "logprobs": null,
                "finish_reason": finish.map(Finish::as_str),
            }),
        };
        self.event(json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.state.model_id,
            "choices": [choice],
        }))
    }

    fn event(&self, value: Value) -> SseEvent {
        SseEvent::default().data(value.to_string())
    }

    /// Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`. Text is sent
    /// as it becomes final, never text that a later step changes; with `llada.visual`, each
    /// step's canvas comes as an `event: llada.canvas` frame.
    fn stream(mut self, mut rx: mpsc::UnboundedReceiver<Event>, include_usage: bool) -> Response {
        let (out, mut events) = mpsc::channel::<SseEvent>(64);
        tokio::spawn(async move {
            let send = |e: SseEvent| {
                let out = out.clone();
                async move { out.send(e).await.is_ok() }
            };
            if self.endpoint == Endpoint::Chat && !send(self.chunk(Some(""), None, true)).await {
                return;
            }
            loop {
                let step = tokio::select! {
                    step = self.next(&mut rx) => step,
                    // The client went away: dropping `rx` frees its row.
                    () = out.closed() => return,
                };
                let event = match step {
                    Ok(Step::Text(t)) => self.chunk(Some(&t), None, false),
                    // A frame that finds the client's buffer full is dropped (the next one
                    // shows the canvas anew): a client that does not read never makes this
                    // task wait, so the engine's events for it never pile up.
                    Ok(Step::Canvas(c)) => {
                        match out.try_send(self.event(c).event("llada.canvas")) {
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                            _ => continue,
                        }
                    }
                    Ok(Step::Finished(f)) => {
                        drop(rx);
                        let mut last = vec![self.chunk(None, Some(f), false)];
                        if include_usage {
                            last.push(self.event(json!({
                                "id": self.id,
                                "object": self.object(true),
                                "created": self.created,
                                "model": self.state.model_id,
                                "choices": [],
                                "usage": self.usage(),
                            })));
                        }
                        last.push(SseEvent::default().data("[DONE]"));
                        for e in last {
                            if !send(e).await {
                                return;
                            }
                        }
                        return;
                    }
                    Err(e) => {
                        let _ = send(self.event(e.body())).await;
                        let _ = send(SseEvent::default().data("[DONE]")).await;
                        return;
                    }
                };
                if !send(event).await {
                    return;
                }
            }
        });
        let body = futures_util::stream::poll_fn(move |cx| {
            events.poll_recv(cx).map(|e| e.map(Ok::<_, Infallible>))
        });
        Sse::new(body)
            .keep_alive(KeepAlive::default())
            .into_response()
    }
}
