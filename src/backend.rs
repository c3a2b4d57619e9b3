//! The backends a [`Pipeline`](crate::Pipeline) can run on, behind one [`MaskPredictor`].

#[cfg(feature = "ort")]
use std::path::PathBuf;
#[cfg(feature = "ndarray")]
use std::sync::Arc;
#[cfg(feature = "ort")]
use std::sync::Mutex;

use llada_core::{ForwardRequest, MaskPredictor};

use crate::error::{BackendError, Error, Stage};
#[allow(unused_imports)]
use crate::files::{ModelFiles, WeightSource};
use crate::pipeline::LoadOptions;

/// Which backend runs the model.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum BackendChoice {
    /// The pure-Rust backend on safetensors weights (feature `ndarray`).
    #[default]
    Ndarray,
    /// ONNX Runtime on an ONNX export (feature `ort`).
    Ort(OrtOptions),
}

/// Options of the ONNX Runtime backend. `#[non_exhaustive]`: start from
/// [`Default::default()`] and chain the `with_*` methods.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct OrtOptions {
    /// Path of `libonnxruntime`; `None` uses `ORT_DYLIB_PATH`.
    pub library: Option<std::path::PathBuf>,
    /// Use the CUDA execution provider when it starts (falls back to CPU otherwise).
    pub cuda: bool,
    /// Intra-op threads; `None` lets ONNX Runtime decide.
    pub threads: Option<usize>,
}

impl OrtOptions {
    /// Loads the runtime from `library` (else `ORT_DYLIB_PATH`).
    #[must_use]
    pub fn with_library(mut self, library: Option<std::path::PathBuf>) -> Self {
        self.library = library;
        self
    }

    /// Asks for the CUDA execution provider.
    #[must_use]
    pub fn with_cuda(mut self, cuda: bool) -> Self {
        self.cuda = cuda;
        self
    }

    /// Intra-op threads.
    #[must_use]
    pub fn with_threads(mut self, threads: Option<usize>) -> Self {
        self.threads = threads;
        self
    }
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

/// A loaded backend: one per [`Pipeline`](crate::Pipeline). Its variants depend on cargo
/// features, which unify across a dependency graph, so match it with a wildcard arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum Backend {
    /// The ndarray backend.
    #[cfg(feature = "ndarray")]
    Ndarray(llada_ndarray::Context),
    /// The ONNX Runtime backend.
    #[cfg(feature = "ort")]
    Ort(llada_ort::OrtPredictor),
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
    Ort(Box<OrtWeights>),
}

/// An ONNX model and how to open sessions on it.
#[cfg(feature = "ort")]
#[derive(Debug)]
pub(crate) struct OrtWeights {
    path: PathBuf,
    options: OrtOptions,
    max_len: Option<usize>,
    /// What the model's `config.json` says of its logits (Dream's are shifted), if anything;
    /// otherwise the export's metadata decides.
    shifted: Option<bool>,
    /// The session opened at load time (so a bad model or a missing runtime fails there),
    /// handed to the first pipeline: one session per pipeline, none thrown away.
    first: Mutex<Option<llada_ort::OrtPredictor>>,
}

#[cfg(feature = "ort")]
impl OrtWeights {
    /// A new session with `threads` intra-op threads.
    fn session(&self, threads: Option<usize>) -> Result<llada_ort::OrtPredictor, Error> {
        let mut builder = llada_ort::OrtPredictor::builder(&self.path);
        if let Some(library) = &self.options.library {
            builder = builder.library(library);
        }
        if let Some(threads) = threads {
            builder = builder.intra_threads(threads);
        }
        if self.options.cuda {
            builder =
                builder.execution_provider(llada_ort::ExecutionProvider::Cuda { device_id: 0 });
        }
        if let Some(max_len) = self.max_len {
            builder = builder.max_sequence_length(max_len);
        }
        if let Some(shifted) = self.shifted {
            builder = builder.shifted_logits(shifted);
        }
        builder
            .build()
            .map_err(|e| BackendError::wrap("ort", Stage::Load, e).into())
    }

    /// The session opened at load time if it fits `threads` and no pipeline took it yet,
    /// else a new one.
    fn take_or_open(&self, threads: Option<usize>) -> Result<llada_ort::OrtPredictor, Error> {
        let threads = threads.or(self.options.threads);
        if threads == self.options.threads {
            let spare = self.first.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(session) = spare {
                return Ok(session);
            }
        }
        self.session(threads)
    }
}

impl SharedWeights {
    /// Loads the weights `files` names for `choice`.
    pub(crate) fn load(
        files: &ModelFiles,
        choice: &BackendChoice,
        load: &LoadOptions,
    ) -> Result<Self, Error> {
        let wrong_format = || Error::WeightsFormat {
            backend: choice.name(),
            format: files.weights().format(),
            path: files.weights().path().to_path_buf(),
        };
        match choice {
            #[cfg(feature = "ndarray")]
            BackendChoice::Ndarray => {
                let ndarray_options =
                    llada_ndarray::LoadOptions::default().with_quantize(load.quantize);
                let open = || match files.weights() {
                    WeightSource::Safetensors(path) => {
                        let config = llada_ndarray::Config::from_value(files.config().clone())?;
                        llada_ndarray::Model::from_safetensors_with(config, path, &ndarray_options)
                            .map(Some)
                    }
                    WeightSource::Gguf(path) => {
                        llada_ndarray::Model::load_with(path, &ndarray_options).map(Some)
                    }
                    _ => Ok(None),
                };
                let model = open()
                    .map_err(|e| BackendError::wrap("ndarray", Stage::Load, e))?
                    .ok_or_else(wrong_format)?;
                Ok(SharedWeights::Ndarray(Arc::new(model)))
            }
            #[cfg(feature = "ort")]
            BackendChoice::Ort(options) => {
                let WeightSource::Onnx(path) = files.weights() else {
                    return Err(wrong_format());
                };
                if load.changes_weights() {
                    return Err(Error::OptionUnsupported {
                        backend: "ort",
                        option: "quantize",
                    });
                }
                let weights = OrtWeights {
                    path: path.clone(),
                    options: options.clone(),
                    max_len: files.max_sequence_length(),
                    shifted: files.declared_shift(),
                    first: Mutex::new(None),
                };
                let session = weights.session(options.threads)?;
                *weights.first.lock().unwrap_or_else(|e| e.into_inner()) = Some(session);
                Ok(SharedWeights::Ort(Box::new(weights)))
            }
            #[allow(unreachable_patterns)]
            other => Err(Error::BackendNotCompiled {
                backend: other.name(),
            }),
        }
    }

    /// A backend for one pipeline, computing with `threads` threads (default: every core for
    /// ndarray, ONNX Runtime's choice or the model options' for ORT).
    pub(crate) fn backend(&self, threads: Option<usize>) -> Result<Backend, Error> {
        // A thread count from a host's parameters, checked before any backend sizes
        // anything by it.
        if let Some(threads) = threads.filter(|&t| t > MAX_THREADS) {
            return Err(Error::ThreadCount {
                threads,
                max: MAX_THREADS,
            });
        }
        match self {
            #[cfg(feature = "ndarray")]
            SharedWeights::Ndarray(model) => {
                let mut options = llada_ndarray::ContextOptions::default();
                options.threads = threads;
                let context = llada_ndarray::Context::with_options(Arc::clone(model), options)
                    .map_err(|e| BackendError::wrap("ndarray", Stage::Load, e))?;
                Ok(Backend::Ndarray(context))
            }
            #[cfg(feature = "ort")]
            SharedWeights::Ort(weights) => Ok(Backend::Ort(weights.take_or_open(threads)?)),
        }
    }
}

/// The most threads a pipeline computes with (the ndarray backend's limit, for every backend).
pub const MAX_THREADS: usize = 1024;

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

    fn shifted_logits(&self) -> bool {
        match self {
            #[cfg(feature = "ndarray")]
            Backend::Ndarray(b) => b.shifted_logits(),
            #[cfg(feature = "ort")]
            Backend::Ort(b) => b.shifted_logits(),
        }
    }

    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), BackendError> {
        match self {
            #[cfg(feature = "ndarray")]
            Backend::Ndarray(b) => MaskPredictor::forward(b, request, logits)
                .map_err(|e| BackendError::wrap("ndarray", Stage::Run, e)),
            #[cfg(feature = "ort")]
            Backend::Ort(b) => b
                .forward(request, logits)
                .map_err(|e| BackendError::wrap("ort", Stage::Run, e)),
        }
    }
}
