//! OpenAI's request bodies, checked and turned into a prompt and the reverse process's
//! parameters; the error object of every refusal.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use llada::core::{BlockGrid, GenerateParams, WorkspaceSizes};
use llada::{Message, Model};
use serde::Deserialize;

use crate::common::{AlgFlag, CacheFlag, RemaskingFlag, SamplingArgs};

/// An OpenAI-style error: the status and `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) param: Option<String>,
    pub(crate) code: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: param.map(str::to_string),
            code: None,
        }
    }

    pub(crate) fn with_code(mut self, status: StatusCode, code: &'static str) -> Self {
        self.status = status;
        self.code = Some(code);
        self
    }

    /// The kind of error, as OpenAI names it.
    pub(crate) fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            429 | 503 => "server_overloaded",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        }
    }

    pub(crate) fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

/// `stop`: one string or up to four.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

/// A chat message's content: a string or a list of text parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChatMessage {
    role: String,
    content: Content,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
}

/// `prompt` of /v1/completions: a string, or a list holding one.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Cache {
    None,
    Prefix,
    Dual,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RemaskingName {
    LowConfidence,
    Random,
    Margin,
    Entropy,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Algorithm {
    Origin,
    MaskgitPlus,
    TopkMargin,
    Entropy,
}

/// The diffusion fields, under `"llada": {...}` (what the command-line flags of the examples
/// set). Unset fields keep the server's defaults, which are the model's unless the server was
/// started with flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Extension {
    steps: Option<usize>,
    block_length: Option<usize>,
    /// Fast-dLLM's threshold rule (LLaDA2's on a LLaDA2.x model).
    threshold: Option<f64>,
    factor: Option<f64>,
    eb_gamma: Option<f64>,
    max_passes_per_block: Option<usize>,
    cache: Option<Cache>,
    remasking: Option<RemaskingName>,
    /// Dream's `alg`.
    algorithm: Option<Algorithm>,
    eps: Option<f64>,
    alg_temp: Option<f32>,
    top_k: Option<usize>,
    editing_threshold: Option<f64>,
    stop_at_eos: Option<bool>,
    cfg_scale: Option<f32>,
    /// Send `event: llada.canvas` frames with the canvas after every step.
    #[serde(default)]
    pub(crate) visual: bool,
}

/// The body of both endpoints; which fields an endpoint takes is checked by [`Request::chat`]
/// and [`Request::completion`]. Unknown fields are refused by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Request {
    #[serde(default)]
    #[allow(dead_code)]
    model: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    prompt: Option<Prompt>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    n: Option<u64>,
    stop: Option<Stop>,
    seed: Option<i64>,
    #[serde(default)]
    pub(crate) stream: bool,
    stream_options: Option<StreamOptions>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    logit_bias: Option<BTreeMap<String, f32>>,
    logprobs: Option<serde_json::Value>,
    top_logprobs: Option<u32>,
    echo: Option<bool>,
    suffix: Option<String>,
    best_of: Option<u64>,
    response_format: Option<serde_json::Value>,
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
    #[serde(default)]
    pub(crate) llada: Extension,
}

/// What the server allows a request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// The model's context.
    pub(crate) max_seq: usize,
    /// The backend's logits per position.
    pub(crate) vocab: usize,
    /// The most bytes of sampler workspace one batch may take (`--workspace-mib`).
    pub(crate) workspace: usize,
}

/// A request checked and ready to queue.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) prompt_ids: Vec<u32>,
    pub(crate) params: GenerateParams,
    /// The answer is cut here (the canvas may be longer: whole blocks).
    pub(crate) max_tokens: usize,
    pub(crate) stops: Vec<String>,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) visual: bool,
}

/// The most steps a request may ask for: more steps than masked positions are passes that
/// commit nothing.
fn max_steps(params: &GenerateParams) -> usize {
    if params.grid == BlockGrid::Absolute {
        params.block_length
    } else {
        params.gen_length
    }
}

impl Request {
    /// Parses a body, naming the field at fault.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let request = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let param = (path != ".").then_some(path.as_str());
            ApiError::invalid(format!("invalid request body: {}", e.inner()), param)
        })?;
        de.end()
            .map_err(|e| ApiError::invalid(format!("invalid request body: {e}"), None))?;
        Ok(request)
    }

    /// A /v1/chat/completions request: the messages rendered by the model's chat template.
    pub(crate) fn chat(
        self,
        model: &Model,
        defaults: &SamplingArgs,
        limits: Limits,
    ) -> Result<Prepared, ApiError> {
        for (field, given) in [
            ("prompt", self.prompt.is_some()),
            ("echo", self.echo.is_some()),
            ("suffix", self.suffix.is_some()),
            ("best_of", self.best_of.is_some()),
        ] {
            if given {
                return Err(ApiError::invalid(
                    format!("`{field}` belongs to /v1/completions, not /v1/chat/completions"),
                    Some(field),
                ));
            }
        }
        let Some(messages) = &self.messages else {
            return Err(ApiError::invalid(
                "`messages` is required",
                Some("messages"),
            ));
        };
        if messages.is_empty() {
            return Err(ApiError::invalid("`messages` is empty", Some("messages")));
        }
        let mut turns = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let content = match &m.content {
                Content::Text(t) => t.clone(),
                Content::Parts(parts) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.kind.as_str(), &part.text) {
                            ("text", Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    format!(
                                        "content parts of type `{kind}` are not supported: this model reads text"
                                    ),
                                    Some(&format!("messages[{i}].content")),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            let role = match m.role.as_str() {
                "developer" => "system",
                r @ ("system" | "user" | "assistant") => r,
                other => {
                    return Err(ApiError::invalid(
                        format!("unknown role `{other}` (system, developer, user or assistant)"),
                        Some(&format!("messages[{i}].role")),
                    ));
                }
            };
            turns.push(Message::new(role, content));
        }
        let text = model.format_chat(&turns).map_err(|e| {
            ApiError::invalid(
                format!("cannot format the chat: {}", llada::report(&e)),
                Some("messages"),
            )
        })?;
        let prompt_ids = model
            .tokenizer()
            .encode(&text)
            .map_err(|e| ApiError::invalid(llada::report(&e), Some("messages")))?;
        self.prepare(prompt_ids, model, defaults, limits)
    }

    /// A /v1/completions request: the prompt as raw text, no chat template.
    pub(crate) fn completion(
        self,
        model: &Model,
        defaults: &SamplingArgs,
        limits: Limits,
    ) -> Result<Prepared, ApiError> {
        if self.messages.is_some() {
            return Err(ApiError::invalid(
                "`messages` belongs to /v1/chat/completions, not /v1/completions",
                Some("messages"),
            ));
        }
        if self.echo == Some(true) {
            return Err(ApiError::invalid("`echo` is not supported", Some("echo")));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid(
                "`suffix` is not supported",
                Some("suffix"),
            ));
        }
        if self.best_of.is_some_and(|b| b != 1) {
            return Err(ApiError::invalid("`best_of` must be 1", Some("best_of")));
        }
        let prompt = match &self.prompt {
            None => return Err(ApiError::invalid("`prompt` is required", Some("prompt"))),
            Some(Prompt::One(p)) => p.clone(),
            Some(Prompt::Many(list)) if list.len() == 1 => list[0].clone(),
            Some(Prompt::Many(_)) => {
                return Err(ApiError::invalid(
                    "`prompt` must be one string (send one request per prompt: requests that arrive together share a batch)",
                    Some("prompt"),
                ));
            }
        };
        let prompt_ids = model
            .tokenizer()
            .encode(&prompt)
            .map_err(|e| ApiError::invalid(llada::report(&e), Some("prompt")))?;
        self.prepare(prompt_ids, model, defaults, limits)
    }

    /// The checks and the parameters both endpoints share.
    fn prepare(
        self,
        prompt_ids: Vec<u32>,
        model: &Model,
        defaults: &SamplingArgs,
        limits: Limits,
    ) -> Result<Prepared, ApiError> {
        let Limits {
            max_seq,
            vocab,
            workspace,
        } = limits;
        if prompt_ids.is_empty() {
            return Err(ApiError::invalid("the prompt is empty", Some("prompt")));
        }
        // The tokenizer turns special-token text into its id: the mask token in a prompt
        // would be taken for a position to fill.
        if prompt_ids.contains(&model.special_tokens().mask) {
            return Err(ApiError::invalid(
                "the prompt holds the mask token, which only the model's canvas may hold",
                Some("prompt"),
            ));
        }
        if let Some(&id) = prompt_ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(ApiError::invalid(
                format!("the prompt holds token {id}, outside the model's vocabulary of {vocab}"),
                Some("prompt"),
            ));
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid(
                "`n` must be 1: send one request per answer (requests that arrive together share a batch)",
                Some("n"),
            ));
        }
        for (field, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if value.is_some_and(|v| v != 0.0) {
                return Err(ApiError::invalid(
                    format!(
                        "`{field}` is not supported (a diffusion model has no generated history to penalize)"
                    ),
                    Some(field),
                ));
            }
        }
        if self.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
            return Err(ApiError::invalid(
                "`logit_bias` is not supported",
                Some("logit_bias"),
            ));
        }
        let logprobs = match &self.logprobs {
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => false,
            Some(_) => true,
        };
        if logprobs || self.top_logprobs.is_some_and(|n| n > 0) {
            return Err(ApiError::invalid(
                "`logprobs` is not supported",
                Some("logprobs"),
            ));
        }
        if let Some(format) = &self.response_format
            && format.get("type").and_then(|t| t.as_str()) != Some("text")
        {
            return Err(ApiError::invalid(
                "`response_format` must be {\"type\": \"text\"}",
                Some("response_format"),
            ));
        }
        let stops = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        if stops.len() > 4 || stops.iter().any(|s| s.is_empty() || s.len() > 256) {
            return Err(ApiError::invalid(
                "`stop` takes up to 4 non-empty strings of at most 256 bytes",
                Some("stop"),
            ));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(ApiError::invalid(
                format!("`temperature` {t} is outside 0..=2"),
                Some("temperature"),
            ));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(ApiError::invalid(
                format!("`top_p` {p} is outside (0, 1]"),
                Some("top_p"),
            ));
        }
        let ext = self.llada;
        let mut args = defaults.clone();
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => None,
            Some(0) => {
                return Err(ApiError::invalid(
                    "`max_tokens` must be at least 1",
                    Some("max_tokens"),
                ));
            }
            Some(n) if n as usize > max_seq || n > u32::MAX as u64 => {
                return Err(ApiError::invalid(
                    format!(
                        "`max_tokens` {n} is more than this model's context of {max_seq} tokens"
                    ),
                    Some("max_tokens"),
                )
                .with_code(StatusCode::BAD_REQUEST, "context_length_exceeded"));
            }
            Some(n) => Some(n as usize),
        };
        if max_tokens.is_some() {
            args.gen_length = max_tokens;
        }
        for (field, value) in [("steps", ext.steps), ("block_length", ext.block_length)] {
            if value.is_some_and(|v| v == 0 || v > max_seq) {
                return Err(ApiError::invalid(
                    format!("`llada.{field}` must be between 1 and the model's context, {max_seq}"),
                    Some(&format!("llada.{field}")),
                ));
            }
        }
        args.steps = ext.steps.or(args.steps);
        args.block_length = ext.block_length.or(args.block_length);
        args.temperature = self.temperature.or(args.temperature);
        args.top_p = self.top_p.or(args.top_p);
        args.top_k = ext.top_k.or(args.top_k);
        if let Some(seed) = self.seed {
            args.seed = seed as u64;
        }
        // A rule asked for replaces the server's.
        if ext.threshold.is_some() || ext.factor.is_some() || ext.eb_gamma.is_some() {
            args.threshold = ext.threshold;
            args.factor = ext.factor;
            args.eb_gamma = ext.eb_gamma;
            args.alg = None;
            args.eps = None;
        }
        if let Some(alg) = ext.algorithm {
            args.alg = Some(match alg {
                Algorithm::Origin => AlgFlag::Origin,
                Algorithm::MaskgitPlus => AlgFlag::MaskgitPlus,
                Algorithm::TopkMargin => AlgFlag::TopkMargin,
                Algorithm::Entropy => AlgFlag::Entropy,
            });
            args.threshold = None;
            args.factor = None;
            args.eb_gamma = None;
        }
        args.eps = ext.eps.or(args.eps);
        args.alg_temp = ext.alg_temp.or(args.alg_temp);
        if let Some(m) = ext.max_passes_per_block {
            args.max_passes_per_block = m;
        }
        if let Some(cache) = ext.cache {
            args.cache = Some(match cache {
                Cache::None => CacheFlag::None,
                Cache::Prefix => CacheFlag::Prefix,
                Cache::Dual => CacheFlag::Dual,
            });
        }
        if let Some(r) = ext.remasking {
            args.remasking = Some(match r {
                RemaskingName::LowConfidence => RemaskingFlag::LowConfidence,
                RemaskingName::Random => RemaskingFlag::Random,
                RemaskingName::Margin => RemaskingFlag::Margin,
                RemaskingName::Entropy => RemaskingFlag::Entropy,
            });
        }
        args.editing_threshold = ext.editing_threshold.or(args.editing_threshold);
        if let Some(s) = ext.stop_at_eos {
            args.stop_at_eos = s;
        }
        if let Some(c) = ext.cfg_scale {
            args.cfg_scale = c;
        }
        let mut params = args.params(model);
        let max_tokens = max_tokens.unwrap_or(params.gen_length);
        // LLaDA's blocks must tile the answer: an answer length that is not a multiple of the
        // block runs to the end of its last block and is cut at `max_tokens`.
        if params.grid == BlockGrid::FromPrompt
            && ext.block_length.is_none()
            && params.block_length > 0
            && !params.gen_length.is_multiple_of(params.block_length)
        {
            args.gen_length =
                Some(params.gen_length.div_ceil(params.block_length) * params.block_length);
            params = args.params(model);
        }
        params.validate().map_err(|e| {
            ApiError::invalid(format!("invalid decoding parameters: {e}"), Some("llada"))
        })?;
        if params.steps > max_steps(&params) {
            return Err(ApiError::invalid(
                format!(
                    "`llada.steps` {} is more than the {} masked positions it would unmask: the extra passes would commit nothing",
                    params.steps,
                    max_steps(&params)
                ),
                Some("llada.steps"),
            ));
        }
        let canvas = params.canvas_len(prompt_ids.len());
        if canvas > max_seq {
            return Err(ApiError::invalid(
                format!(
                    "the prompt ({} tokens) and the answer ({} tokens) need {canvas} positions; this model's context is {max_seq}",
                    prompt_ids.len(),
                    canvas - prompt_ids.len()
                ),
                Some("messages"),
            )
            .with_code(StatusCode::BAD_REQUEST, "context_length_exceeded"));
        }
        let needed = WorkspaceSizes::for_generation(&params, 1, prompt_ids.len(), vocab)
            .map_err(|e| {
                ApiError::invalid(format!("invalid decoding parameters: {e}"), Some("llada"))
            })?
            .bytes();
        if needed > workspace {
            return Err(ApiError::invalid(
                format!(
                    "this request needs {} MiB of sampler workspace (blocks of {} over a vocabulary of {vocab}); the server allows {} MiB per batch (--workspace-mib): ask for shorter blocks",
                    needed.div_ceil(1 << 20),
                    params.block_length,
                    workspace >> 20
                ),
                Some("llada.block_length"),
            ));
        }
        Ok(Prepared {
            prompt_ids,
            params,
            max_tokens,
            stops,
            stream: self.stream,
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
            visual: ext.visual,
        })
    }
}
