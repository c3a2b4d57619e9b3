//! The backends a [`Pipeline`](crate::Pipeline) can run on, behind one [`MaskPredictor`].

use std::path::Path;
use std::sync::Arc;

use llada_core::{ErrorKind, ForwardRequest, MaskPredictor, PredictorError};

use crate::error::Error;

/// Which backend runs the model.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum BackendChoice {
    /// The pure-Rust backend on `model.safetensors` (feature `ndarray`).
    #[default]
    Ndarray,
    /// ONNX Runtime on `model.onnx` (feature `ort`).
    Ort(OrtOptions),
}

/// Options of the ONNX Runtime backend.
#[derive(Clone, Debug, Default)]
pub struct OrtOptions {
    /// Path of `libonnxruntime`; `None` uses `ORT_DYLIB_PATH`.
    pub library: Option<std::path::PathBuf>,
    /// Use the CUDA execution provider when it starts (falls back to CPU otherwise).
    pub cuda: bool,
    /// Intra-op threads; `None` lets ONNX Runtime decide.
    pub threads: Option<usize>,
}

impl BackendChoice {
    /// `"ndarray"` or `"ort"`.
    pub fn name(&self) -> &'static str {
        match self {
            BackendChoice::Ndarray => "ndarray",
            BackendChoice::Ort(_) => "ort",
        }
    }
}

/// A loaded backend.
#[derive(Debug)]
pub enum Backend {
    /// The ndarray backend.
    #[cfg(feature = "ndarray")]
    Ndarray(llada_ndarray::Context),
    /// The ONNX Runtime backend.
    #[cfg(feature = "ort")]
    Ort(llada_ort::OrtPredictor),
}

/// A backend's forward-pass error.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    message: String,
    kind: ErrorKind,
}

impl PredictorError for BackendError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

fn wrap<E: PredictorError>(e: E) -> BackendError {
    BackendError {
        message: e.to_string(),
        kind: e.kind(),
    }
}

impl Backend {
    /// `"ndarray"` or `"ort"`.
    pub fn name(&self) -> &'static str {
        match self {
            #[cfg(feature = "ndarray")]
            Backend::Ndarray(_) => "ndarray",
            #[cfg(feature = "ort")]
            Backend::Ort(_) => "ort",
        }
    }
}

/// What a [`Model`](crate::Model) keeps of its backend, shared by every pipeline: the ndarray
/// weights, or what each pipeline needs to open its own ONNX Runtime session.
#[derive(Debug)]
pub(crate) enum SharedWeights {
    #[cfg(feature = "ndarray")]
    Ndarray(Arc<llada_ndarray::Model>),
    #[cfg(feature = "ort")]
    Ort {
        path: std::path::PathBuf,
        options: OrtOptions,
        max_len: Option<usize>,
    },
}

impl SharedWeights {
    /// Loads the weights in `dir` for `choice`.
    pub(crate) fn load(dir: &Path, choice: &BackendChoice) -> Result<Self, Error> {
        match choice {
            #[cfg(feature = "ndarray")]
            BackendChoice::Ndarray => {
                let model =
                    llada_ndarray::Model::load(dir).map_err(|e| Error::Load(Box::new(e)))?;
                Ok(SharedWeights::Ndarray(Arc::new(model)))
            }
            #[cfg(feature = "ort")]
            BackendChoice::Ort(options) => {
                let path = dir.join("model.onnx");
                if !path.is_file() {
                    return Err(Error::MissingFile {
                        path,
                        expected: "the ONNX export of the model (model.onnx)",
                    });
                }
                let max_len = crate::pipeline::read_config(dir)?
                    .get("max_sequence_length")
                    .and_then(serde_json::Value::as_u64)
                    .map(|v| v as usize);
                let weights = SharedWeights::Ort {
                    path,
                    options: options.clone(),
                    max_len,
                };
                // Open one session now, so a bad model or a missing runtime fails at load time.
                weights.backend(None)?;
                Ok(weights)
            }
            #[allow(unreachable_patterns)]
            other => Err(Error::Load(
                format!(
                    "backend `{}` was not compiled in (enable its cargo feature)",
                    other.name()
                )
                .into(),
            )),
        }
    }

    /// A backend for one pipeline, computing with `threads` threads (default: every core for
    /// ndarray, ONNX Runtime's choice or the model options' for ORT).
    pub(crate) fn backend(&self, threads: Option<usize>) -> Result<Backend, Error> {
        match self {
            #[cfg(feature = "ndarray")]
            SharedWeights::Ndarray(model) => {
                let context = match threads {
                    Some(n) => llada_ndarray::Context::with_threads(Arc::clone(model), n),
                    None => llada_ndarray::Context::new(Arc::clone(model)),
                }
                .map_err(|e| Error::Load(Box::new(e)))?;
                Ok(Backend::Ndarray(context))
            }
            #[cfg(feature = "ort")]
            SharedWeights::Ort {
                path,
                options,
                max_len,
            } => {
                let mut builder = llada_ort::OrtPredictor::builder(path);
                if let Some(library) = &options.library {
                    builder = builder.library(library);
                }
                if let Some(threads) = threads.or(options.threads) {
                    builder = builder.intra_threads(threads);
                }
                if options.cuda {
                    builder = builder
                        .execution_provider(llada_ort::ExecutionProvider::Cuda { device_id: 0 });
                }
                if let Some(max_len) = max_len {
                    builder = builder.max_sequence_length(*max_len);
                }
                Ok(Backend::Ort(
                    builder.build().map_err(|e| Error::Load(Box::new(e)))?,
                ))
            }
        }
    }
}

impl MaskPredictor for Backend {
    type Error = BackendError;

    fn vocab_size(&self) -> usize {
        match self {
            #[cfg(feature = "ndarray")]
            Backend::Ndarray(b) => b.vocab_size(),
            #[cfg(feature = "ort")]
            Backend::Ort(b) => b.vocab_size(),
        }
    }

    fn max_sequence_length(&self) -> usize {
        match self {
            #[cfg(feature = "ndarray")]
            Backend::Ndarray(b) => b.max_sequence_length(),
            #[cfg(feature = "ort")]
            Backend::Ort(b) => b.max_sequence_length(),
        }
    }

    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), BackendError> {
        match self {
            #[cfg(feature = "ndarray")]
            Backend::Ndarray(b) => MaskPredictor::forward(b, request, logits).map_err(wrap),
            #[cfg(feature = "ort")]
            Backend::Ort(b) => b.forward(request, logits).map_err(wrap),
        }
    }
}
