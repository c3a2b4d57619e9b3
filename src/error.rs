//! Errors of the text pipeline.
//!
//! One rule for messages: an error's `Display` says what failed at its own level and never
//! repeats its cause; the cause is its [`source`](std::error::Error::source), and
//! [`report`] (what the examples and `llada_last_error()` print) walks the chain.

use std::path::PathBuf;

use llada_core::{ErrorKind, PredictorError};
use thiserror::Error;

/// A boxed error from a backend or a parser, kept whole as a source.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Anything that can go wrong between text in and text out.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The model directory does not exist.
    #[error(
        "model directory {path} does not exist (expected a directory with config.json, tokenizer.json, tokenizer_config.json and the weights)"
    )]
    MissingDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// A file the pipeline needs is missing.
    #[error("{path} is missing: expected {expected}")]
    MissingFile {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        expected: &'static str,
    },
    /// A JSON file is malformed.
    #[error("invalid JSON in {path}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// The tokenizer could not be loaded, or failed.
    #[error("{}", match path {
        Some(path) => format!("cannot load the tokenizer {}", path.display()),
        None => "the tokenizer failed".to_string(),
    })]
    Tokenizer {
        /// The file, when loading.
        path: Option<PathBuf>,
        /// The tokenizer's error.
        source: BoxError,
    },
    /// The chat template failed to compile or render.
    #[error("chat template")]
    Template(#[source] minijinja::Error),
    /// The model has no chat template but one was needed.
    #[error("the model has no chat_template in tokenizer_config.json; use raw prompts")]
    NoChatTemplate,
    /// A special token id could not be found in the model's files.
    #[error("the model's files do not define the {name} token")]
    MissingSpecialToken {
        /// Which token.
        name: &'static str,
    },
    /// Prompt plus generation exceed the model's maximum length.
    #[error(
        "prompt of {prompt_len} tokens plus {gen_length} generated tokens exceeds the model's maximum of {max} tokens"
    )]
    PromptTooLong {
        /// Prompt tokens.
        prompt_len: usize,
        /// Tokens to generate.
        gen_length: usize,
        /// The model's maximum sequence length.
        max: usize,
    },
    /// An empty batch or an empty prompt.
    #[error("{0}")]
    EmptyInput(&'static str),
    /// A GGUF file's tokenizer metadata cannot be turned into a tokenizer.
    #[error("GGUF file {path}: {reason}")]
    GgufTokenizer {
        /// The file.
        path: PathBuf,
        /// What is missing or not supported.
        reason: String,
    },
    /// A model's declaration (its decoding lengths) is malformed.
    #[error("{path}: `{key}` is invalid: {reason}")]
    Declaration {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The backend asked for is not compiled in (its cargo feature is off).
    #[error("backend `{backend}` was not compiled in (enable the `{backend}` cargo feature)")]
    BackendNotCompiled {
        /// The backend.
        backend: &'static str,
    },
    /// The model's weights are in a format the chosen backend does not run.
    #[error("the {backend} backend cannot run {format} weights ({path})")]
    WeightsFormat {
        /// The backend.
        backend: &'static str,
        /// The weights' format.
        format: &'static str,
        /// The weights.
        path: PathBuf,
    },
    /// More threads asked for than a pipeline runs ([`crate::MAX_THREADS`]).
    #[error("{threads} threads asked for; a pipeline runs at most {max}")]
    ThreadCount {
        /// The count given.
        threads: usize,
        /// The most allowed.
        max: usize,
    },
    /// A GGUF file is written from a safetensors checkpoint; these weights are not one.
    #[error(
        "cannot write {format} weights ({path}) as GGUF; the writer reads safetensors checkpoints"
    )]
    ExportSource {
        /// The weights' format.
        format: &'static str,
        /// The weights.
        path: PathBuf,
    },
    /// A load option the chosen backend does not offer.
    #[error("the {backend} backend has no `{option}` option")]
    OptionUnsupported {
        /// The backend.
        backend: &'static str,
        /// The option.
        option: &'static str,
    },
    /// A backend failed to load the model or to run it; its error is the source.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Invalid generation parameters.
    #[error(transparent)]
    Params(#[from] llada_core::Error),
    /// The step callback cancelled the generation.
    #[error("generation cancelled")]
    Cancelled,
}

impl Error {
    /// The broad category of this error: the backend's own for backend errors (a missing
    /// ONNX Runtime library is [`ErrorKind::Backend`], a malformed checkpoint
    /// [`ErrorKind::Model`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } | Error::MissingDirectory { .. } | Error::MissingFile { .. } => {
                ErrorKind::Io
            }
            Error::Json { .. }
            | Error::Tokenizer { .. }
            | Error::Template(_)
            | Error::Declaration { .. }
            | Error::MissingSpecialToken { .. } => ErrorKind::Model,
            Error::NoChatTemplate
            | Error::BackendNotCompiled { .. }
            | Error::GgufTokenizer { .. }
            | Error::OptionUnsupported { .. }
            | Error::WeightsFormat { .. }
            | Error::ExportSource { .. } => ErrorKind::Unsupported,
            Error::PromptTooLong { .. } | Error::EmptyInput(_) | Error::ThreadCount { .. } => {
                ErrorKind::InvalidInput
            }
            Error::Backend(e) => e.kind,
            Error::Params(e) => e.kind(),
            Error::Cancelled => ErrorKind::Cancelled,
        }
    }
}

impl From<llada_core::GenerateError<BackendError>> for Error {
    fn from(e: llada_core::GenerateError<BackendError>) -> Self {
        match e {
            llada_core::GenerateError::Invalid(e) => Error::Params(e),
            llada_core::GenerateError::Predictor(e) => Error::Backend(e),
            llada_core::GenerateError::Cancelled => Error::Cancelled,
            other => Error::Backend(BackendError::new(
                "llada",
                Stage::Run,
                ErrorKind::Other,
                other,
            )),
        }
    }
}

/// What a backend was doing when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    Load,
    Run,
    Write,
}

/// A backend's error, kept whole: the backend's own error type is the
/// [`source`](std::error::Error::source) and its [`ErrorKind`] is kept.
#[derive(Debug, Error)]
#[error("the {backend} backend {}", match stage {
    Stage::Load => "could not load the model",
    Stage::Run => "failed in a forward pass",
    Stage::Write => "could not write the GGUF file",
})]
pub struct BackendError {
    backend: &'static str,
    stage: Stage,
    kind: ErrorKind,
    #[source]
    source: BoxError,
}

impl BackendError {
    pub(crate) fn new(
        backend: &'static str,
        stage: Stage,
        kind: ErrorKind,
        source: impl Into<BoxError>,
    ) -> Self {
        Self {
            backend,
            stage,
            kind,
            source: source.into(),
        }
    }

    /// Wraps a backend's own error, keeping its kind.
    pub(crate) fn wrap<E>(backend: &'static str, stage: Stage, e: E) -> Self
    where
        E: PredictorError + Send + Sync + 'static,
    {
        Self::new(backend, stage, e.kind(), e)
    }

    /// `"ndarray"` or `"ort"`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The backend's error, to downcast to its own type (`llada_ndarray::LoadError`,
    /// `llada_ort::OrtError`, ...).
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl PredictorError for BackendError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// The whole chain of `error`: its message, then each source's, joined by `": "`. What the
/// examples print and what the C ABI's `llada_last_error()` returns.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
