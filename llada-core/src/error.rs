//! Errors: a small shared [`ErrorKind`], the crate's own [`Error`] for invalid parameters,
//! shapes and buffers, and [`GenerateError`] which adds the predictor's error and cancellation.

use thiserror::Error as ThisError;

use crate::predictor::PredictorError;

/// The broad category of any error in this project, shared by all backends so generic code (the
/// sampler, the C ABI) can act on an error without knowing its concrete type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A parameter, shape or token id is out of range.
    InvalidInput,
    /// A caller-provided buffer is smaller than needed.
    BufferTooSmall,
    /// A file could not be read.
    Io,
    /// A model file is malformed, or does not match its configuration.
    Model,
    /// The backend (runtime, device, kernel) failed.
    Backend,
    /// The model or request uses a feature this backend does not support.
    Unsupported,
    /// The caller stopped the operation.
    Cancelled,
    /// Anything else.
    Other,
}

/// A tensor shape or length that does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ThisError)]
#[non_exhaustive]
pub enum ShapeError {
    /// A dimension is zero.
    #[error("{what} is empty")]
    Empty {
        /// What is empty.
        what: &'static str,
    },
    /// A size computation overflowed `usize`.
    #[error("size overflows usize")]
    Overflow,
    /// A slice has the wrong length.
    #[error("{what} has length {found}, expected {expected}")]
    Length {
        /// Which slice.
        what: &'static str,
        /// The length the shape implies.
        expected: usize,
        /// The length given.
        found: usize,
    },
    /// A logits window outside the sequence, or empty.
    #[error("logits window {start}..{end} is empty or outside a sequence of length {seq_len}")]
    Window {
        /// First position.
        start: usize,
        /// One past the last position.
        end: usize,
        /// Sequence length.
        seq_len: usize,
    },
}

/// Invalid parameters, shapes, token ids or buffers: everything this crate checks before it
/// runs a predictor.
#[derive(Clone, Copy, Debug, PartialEq, ThisError)]
#[non_exhaustive]
pub enum Error {
    /// A length or count that must be positive is zero.
    #[error("`{name}` must be greater than zero")]
    Zero {
        /// The parameter's name.
        name: &'static str,
    },
    /// `gen_length` is not a multiple of `block_length`.
    #[error("gen_length {gen_length} is not divisible by block_length {block_length}")]
    BlockLength {
        /// The generation length.
        gen_length: usize,
        /// The block length.
        block_length: usize,
    },
    /// `steps` is not a multiple of the number of blocks.
    #[error("steps {steps} is not divisible by the number of blocks {num_blocks}")]
    Steps {
        /// Total steps.
        steps: usize,
        /// `gen_length / block_length`.
        num_blocks: usize,
    },
    /// A token id is outside the predictor's vocabulary.
    #[error("{name} {id} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfVocab {
        /// Which id (`mask_id`, `eos_id`, `prompt token`, ...).
        name: &'static str,
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// The sequence is longer than the predictor accepts.
    #[error(
        "sequence of {length} tokens (prompt {prompt_len} + generation {gen_length}) exceeds the model's maximum of {max}"
    )]
    TooLong {
        /// Prompt plus generation.
        length: usize,
        /// The prompt part.
        prompt_len: usize,
        /// The generation part.
        gen_length: usize,
        /// The predictor's maximum.
        max: usize,
    },
    /// A floating-point parameter is negative, infinite or NaN.
    #[error("`{name}` must be finite and non-negative, got {value}")]
    NotFiniteNonNegative {
        /// The parameter's name.
        name: &'static str,
        /// The value given.
        value: f32,
    },
    /// A probability parameter is outside its range.
    #[error("`{name}` must be in {range}, got {value}")]
    OutOfRange {
        /// The parameter's name.
        name: &'static str,
        /// The allowed range, in words.
        range: &'static str,
        /// The value given.
        value: f64,
    },
    /// Two parameters that do not go together.
    #[error("{what} needs {needs}")]
    Combination {
        /// The parameter set.
        what: &'static str,
        /// What it needs.
        needs: &'static str,
    },
    /// The prompt part of the canvas holds a mask token.
    #[error(
        "row {row} holds the mask id at prompt position {position}; masks belong after the prompt"
    )]
    MaskInPrompt {
        /// The batch row.
        row: usize,
        /// The position.
        position: usize,
    },
    /// `mc_samples` is not a positive multiple of the mini-batch size.
    #[error("mc_samples {mc_samples} is not a positive multiple of the batch size {batch}")]
    McSamples {
        /// Monte Carlo samples.
        mc_samples: usize,
        /// Mini-batch size.
        batch: usize,
    },
    /// A caller-provided buffer is too small.
    #[error("buffer `{buffer}` holds {found} elements, {needed} needed")]
    BufferTooSmall {
        /// Which buffer of the workspace.
        buffer: &'static str,
        /// Elements needed.
        needed: usize,
        /// Elements provided.
        found: usize,
    },
    /// A shape does not fit.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// The predictor's logits for a position being decided hold a NaN (±infinity is allowed):
    /// nothing of that step was committed.
    #[error(
        "the predictor's logits are NaN at row {row}, position {position} (block {block}, step {step})"
    )]
    NanLogits {
        /// The block being denoised.
        block: usize,
        /// The step within the block.
        step: usize,
        /// The batch row.
        row: usize,
        /// The canvas position.
        position: usize,
    },
    /// [`Generation::complete_step`](crate::Generation::complete_step) was called without a
    /// pending forward pass.
    #[error("no forward pass is pending: call next_forward() first")]
    NoPendingForward,
}

impl Error {
    /// The broad category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BufferTooSmall { .. } => ErrorKind::BufferTooSmall,
            Error::NanLogits { .. } => ErrorKind::Backend,
            _ => ErrorKind::InvalidInput,
        }
    }
}

/// The error of a whole operation that drives a predictor: invalid input, the predictor's own
/// error, or cancellation by the observer.
#[derive(Debug, ThisError)]
#[non_exhaustive]
pub enum GenerateError<E> {
    /// The parameters, shapes or buffers are invalid (nothing was run), or a step could not
    /// be completed ([`Error::NanLogits`]).
    #[error(transparent)]
    Invalid(#[from] Error),
    /// The predictor failed; its error is the source.
    #[error("predictor failed")]
    Predictor(#[source] E),
    /// The observer stopped the generation. As on every error, the canvas is back as it was
    /// (the observer saw each step's canvas, for a caller that wants a partial answer).
    #[error("generation cancelled")]
    Cancelled,
}

impl<E: PredictorError> GenerateError<E> {
    /// The broad category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            GenerateError::Invalid(e) => e.kind(),
            GenerateError::Predictor(e) => e.kind(),
            GenerateError::Cancelled => ErrorKind::Cancelled,
        }
    }
}
