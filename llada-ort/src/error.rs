//! Errors of the ONNX Runtime backend.

use std::path::PathBuf;

use llada_core::{ErrorKind, PredictorError, ShapeError};
use thiserror::Error;

/// How to get the runtime library, shown whenever it cannot be loaded.
pub const RUNTIME_HINT: &str = "install it with `pip install onnxruntime==1.31.1` and set ORT_DYLIB_PATH to \
    <site-packages>/onnxruntime/capi/libonnxruntime.so.1.31.1 (or pass the path to the builder); \
    ONNX Runtime 1.31 or newer is required";

fn tried_list(tried: &[(PathBuf, String)]) -> String {
    if tried.is_empty() {
        return "no path was given (builder path unset, ORT_DYLIB_PATH unset)".into();
    }
    tried
        .iter()
        .map(|(p, why)| format!("{} ({why})", p.display()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The ONNX Runtime backend failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OrtError {
    /// No runtime library could be loaded.
    #[error("cannot load ONNX Runtime: tried {}; {RUNTIME_HINT}", tried_list(.tried))]
    RuntimeNotFound {
        /// Each path tried, with the reason it failed.
        tried: Vec<(PathBuf, String)>,
    },
    /// A runtime library is already loaded in this process and another one was asked for
    /// (ONNX Runtime can be loaded once per process).
    #[error("ONNX Runtime is already loaded from {loaded}; cannot also load {requested}")]
    RuntimeConflict {
        /// The library in use.
        loaded: PathBuf,
        /// The library asked for.
        requested: PathBuf,
    },
    /// ONNX Runtime's environment could not be created.
    #[error("cannot create the ONNX Runtime environment")]
    Environment(#[source] ort::Error),
    /// The model file is missing.
    #[error("model file {path} does not exist")]
    ModelNotFound {
        /// The file.
        path: PathBuf,
    },
    /// ONNX Runtime refused the model file (not an ONNX model, corrupted, unsupported ops).
    #[error("cannot load ONNX model {path}")]
    Model {
        /// The file.
        path: PathBuf,
        /// ONNX Runtime's error.
        source: ort::Error,
    },
    /// The model's inputs or output do not fit a mask predictor.
    #[error("ONNX model {path} does not fit: {reason}")]
    Signature {
        /// The file.
        path: PathBuf,
        /// What does not fit, naming the inputs and outputs.
        reason: String,
    },
    /// An execution provider was asked for but is not compiled in.
    #[error(
        "execution provider {0} is not compiled in; enable the llada-ort cargo feature of that name"
    )]
    ProviderNotCompiled(&'static str),
    /// An execution provider failed to start and fallback was disabled.
    #[error("execution provider {name} failed to start: {message}")]
    Provider {
        /// The provider.
        name: &'static str,
        /// ONNX Runtime's message.
        message: String,
    },
    /// A request does not fit.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// The request hides left padding behind an attention mask, but the model has no
    /// attention-mask input to pass it to (its logits would see the padding).
    #[error(
        "ONNX model {path} has no attention-mask input, so it cannot run a left-padded request; export it with `attention_mask`, or run the prompts one at a time"
    )]
    NoAttentionMask {
        /// The model file.
        path: PathBuf,
    },
    /// The request asks for block-causal attention (LLaDA2.x's block diffusion), which the
    /// exported graphs (bidirectional, a key padding mask only) cannot compute.
    #[error(
        "ONNX model {path} attends bidirectionally; a block-causal request (LLaDA2.x, blocks of {block}) needs the block mask as a graph input, which this backend's exports do not have: run LLaDA2.x on the ndarray backend"
    )]
    BlockCausal {
        /// The model file.
        path: PathBuf,
        /// The block asked for.
        block: usize,
    },
    /// The model attends block-causally (it has the block-length input) and the request
    /// asks for bidirectional attention.
    #[error(
        "ONNX model {path} attends block-causally (LLaDA2.x): decode it on the absolute block grid, whose requests say their block"
    )]
    BidirectionalRequest {
        /// The model file.
        path: PathBuf,
    },
    /// An input id is outside the vocabulary.
    #[error("input id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfVocab {
        /// The id.
        id: u32,
        /// The vocabulary.
        vocab: usize,
    },
    /// The sequence is longer than the configured maximum.
    #[error("sequence length {seq_len} exceeds the maximum of {max}")]
    TooLong {
        /// Requested length.
        seq_len: usize,
        /// The maximum.
        max: usize,
    },
    /// The session failed to run.
    #[error("ONNX Runtime run failed")]
    Run(#[source] ort::Error),
    /// The session returned no logits, or logits of the wrong shape.
    #[error("the session's output does not fit: {0}")]
    Output(String),
}

impl PredictorError for OrtError {
    fn kind(&self) -> ErrorKind {
        match self {
            OrtError::RuntimeNotFound { .. }
            | OrtError::RuntimeConflict { .. }
            | OrtError::Environment(_)
            | OrtError::Provider { .. }
            | OrtError::Run(_)
            | OrtError::Output(_) => ErrorKind::Backend,
            OrtError::ModelNotFound { .. } => ErrorKind::Io,
            OrtError::Model { .. } | OrtError::Signature { .. } => ErrorKind::Model,
            OrtError::ProviderNotCompiled(_)
            | OrtError::NoAttentionMask { .. }
            | OrtError::BlockCausal { .. }
            | OrtError::BidirectionalRequest { .. } => ErrorKind::Unsupported,
            OrtError::Shape(_) | OrtError::TokenOutOfVocab { .. } | OrtError::TooLong { .. } => {
                ErrorKind::InvalidInput
            }
        }
    }
}
