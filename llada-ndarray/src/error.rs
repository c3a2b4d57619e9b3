//! Errors of loading a checkpoint and of running it.

use std::path::PathBuf;

use llada_core::{ErrorKind, PredictorError, ShapeError};
use thiserror::Error;

/// A checkpoint directory could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The directory has neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error("no weights in {dir}: expected model.safetensors or model.safetensors.index.json")]
    NoWeights {
        /// The model directory.
        dir: PathBuf,
    },
    /// `config.json` is not valid JSON or a field has the wrong type.
    #[error("invalid config{}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    ConfigJson {
        /// The file, when read from disk.
        path: Option<PathBuf>,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A configuration field has a value of the wrong type.
    #[error("config.json field `{field}`: {reason}")]
    ConfigField {
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A required configuration field is missing.
    #[error("config.json has no `{field}`")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// The configuration asks for something this backend does not implement.
    #[error("unsupported config `{field}` = {value}: {reason}")]
    Unsupported {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is not implemented.
        reason: &'static str,
    },
    /// A configuration value is impossible.
    #[error("invalid config `{field}`: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A safetensors file is malformed (truncated, corrupted header, offsets out of range).
    #[error("invalid safetensors file {path}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: safetensors::SafeTensorError,
    },
    /// The shard index is malformed or names a missing shard.
    #[error("invalid shard index {path}: {reason}")]
    ShardIndex {
        /// The index file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A tensor the configuration needs is not in the checkpoint.
    #[error("tensor {name} is missing (expected shape {expected:?})")]
    MissingTensor {
        /// The tensor name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
    },
    /// A tensor has the wrong shape.
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// The tensor name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has a dtype this backend does not read.
    #[error(
        "tensor {name} has type {dtype}; supported: F32, BF16, F16 (and in GGUF files Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)"
    )]
    Dtype {
        /// The tensor name.
        name: String,
        /// The dtype in the file.
        dtype: String,
    },
    /// A GGUF file is malformed (bad magic or version, truncated, impossible counts, a tensor
    /// past the end or misaligned).
    #[error("invalid GGUF file {path}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: crate::gguf::GgufError,
    },
    /// More threads asked for than a context starts.
    #[error("{threads} threads asked for; a context runs at most {max}")]
    ThreadCount {
        /// The count given.
        threads: usize,
        /// The most allowed.
        max: usize,
    },
    /// Could not start the worker threads.
    #[error("cannot start worker threads")]
    Threads(#[source] std::io::Error),
    /// `LLADA_KERNEL` (or a kernel name) is not a kernel of this backend.
    #[error("unknown kernel {name:?}; expected portable, avx2, avx512, amx or neon")]
    UnknownKernel {
        /// The name given.
        name: String,
    },
    /// `LLADA_BLOCKING` (or a blocking's text) is not blocks the kernels can run.
    #[error("invalid blocking {text:?}: {why}")]
    InvalidBlocking {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A quantization format name that is not one of `q8_0`, `q4_0`, `q4_k`, `q6_k`.
    #[error("unknown quantization {name:?}; expected q8_0, q4_0, q4_k or q6_k")]
    UnknownQuantization {
        /// The name given.
        name: String,
    },
    /// A GGUF file type name that is not one of `f32`, `f16`, `q8_0`, `q4_0`, `q4_k_m`, `q6_k`.
    #[error("unknown GGUF file type {name:?}; expected f32, f16, q8_0, q4_0, q4_k_m or q6_k")]
    UnknownFileType {
        /// The name given.
        name: String,
    },
    /// A tensor is already quantized, in another type than the one asked for: quantizing it
    /// again would compound two roundings.
    #[error(
        "tensor {name} is {from}; quantizing it to {to} would round it twice (write from the F16 or F32 file)"
    )]
    Requantize {
        /// The tensor.
        name: String,
        /// Its type.
        from: String,
        /// The type asked for.
        to: String,
    },
    /// A file could not be written (nothing is left at its path).
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The kernel asked for needs instructions this CPU lacks.
    #[error("this CPU cannot run the {kernel} kernel; it runs {supported:?}")]
    KernelUnsupported {
        /// The kernel asked for.
        kernel: &'static str,
        /// The kernels this CPU runs.
        supported: Vec<&'static str>,
    },
}

impl LoadError {
    /// The broad category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LoadError::Io { .. } | LoadError::Write { .. } => ErrorKind::Io,
            LoadError::Unsupported { .. }
            | LoadError::Dtype { .. }
            | LoadError::Requantize { .. }
            | LoadError::KernelUnsupported { .. } => ErrorKind::Unsupported,
            LoadError::UnknownKernel { .. }
            | LoadError::InvalidBlocking { .. }
            | LoadError::ThreadCount { .. }
            | LoadError::UnknownQuantization { .. }
            | LoadError::UnknownFileType { .. } => ErrorKind::InvalidInput,
            LoadError::Threads(_) => ErrorKind::Backend,
            _ => ErrorKind::Model,
        }
    }
}

impl PredictorError for LoadError {
    fn kind(&self) -> ErrorKind {
        LoadError::kind(self)
    }
}

/// A forward pass was refused.
#[derive(Clone, Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum ForwardError {
    /// The request's shape does not fit (for example the logits slice has the wrong length).
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// An input id is outside the embedding.
    #[error(
        "input id {id} at row {row}, position {position} is outside the embedding of {vocab} rows"
    )]
    TokenOutOfVocab {
        /// The id.
        id: u32,
        /// Its row.
        row: usize,
        /// Its position.
        position: usize,
        /// The embedding size.
        vocab: usize,
    },
    /// The sequence is longer than the model's maximum.
    #[error("sequence length {seq_len} exceeds the model's maximum of {max}")]
    TooLong {
        /// Requested length.
        seq_len: usize,
        /// The model's `max_sequence_length`.
        max: usize,
    },
    /// A row whose attention mask hides every token.
    #[error("row {row} of the attention mask hides every token")]
    EmptyRow {
        /// The row.
        row: usize,
    },
}

impl PredictorError for ForwardError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}
