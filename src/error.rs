//! Errors of the text pipeline.

use std::path::PathBuf;

use llada_core::{ErrorKind, PredictorError};
use thiserror::Error;

/// Anything that can go wrong between text in and text out.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
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
    #[error("invalid JSON in {path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The tokenizer failed.
    #[error("tokenizer error{}: {message}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Tokenizer {
        /// The file, when loading.
        path: Option<PathBuf>,
        /// The tokenizer's message.
        message: String,
    },
    /// The chat template failed to compile or render.
    #[error("chat template: {0}")]
    Template(String),
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
    /// The backend could not load the model.
    #[error(transparent)]
    Load(Box<dyn std::error::Error + Send + Sync>),
    /// Invalid generation parameters.
    #[error(transparent)]
    Params(#[from] llada_core::Error),
    /// The backend failed during a forward pass.
    #[error("backend: {0}")]
    Backend(String, ErrorKind),
    /// The step callback cancelled the generation.
    #[error("generation cancelled")]
    Cancelled,
}

impl Error {
    /// The broad category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } | Error::MissingDirectory { .. } | Error::MissingFile { .. } => {
                ErrorKind::Io
            }
            Error::Json { .. }
            | Error::Tokenizer { .. }
            | Error::Template(_)
            | Error::MissingSpecialToken { .. } => ErrorKind::Model,
            Error::NoChatTemplate => ErrorKind::Unsupported,
            Error::PromptTooLong { .. } | Error::EmptyInput(_) => ErrorKind::InvalidInput,
            Error::Load(_) => ErrorKind::Model,
            Error::Params(e) => e.kind(),
            Error::Backend(_, kind) => *kind,
            Error::Cancelled => ErrorKind::Cancelled,
        }
    }
}

impl<E: PredictorError> From<llada_core::GenerateError<E>> for Error {
    fn from(e: llada_core::GenerateError<E>) -> Self {
        match e {
            llada_core::GenerateError::Invalid(e) => Error::Params(e),
            llada_core::GenerateError::Predictor(e) => Error::Backend(e.to_string(), e.kind()),
            llada_core::GenerateError::Cancelled => Error::Cancelled,
            _ => Error::Backend(e.to_string(), ErrorKind::Other),
        }
    }
}
