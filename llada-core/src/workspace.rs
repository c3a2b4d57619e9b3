//! Caller-provided scratch memory. Nothing in this crate allocates: a [`WorkspaceSizes`] says how
//! many elements each buffer needs for given parameters, and a [`Workspace`] lends them.

use crate::error::{Error, ShapeError};
use crate::params::GenerateParams;

/// Element counts of the four buffers of a [`Workspace`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkspaceSizes {
    /// `f32` values: the predictor's logits output and, when top-k/top-p sampling is on, one
    /// vocabulary row of scratch.
    pub logits: usize,
    /// `u32` values: model inputs built by the sampler, proposals, positions.
    pub tokens: usize,
    /// `u8` values: per-position flags and attention masks.
    pub flags: usize,
    /// `f64` values: per-position confidences.
    pub scores: usize,
}

fn mul(values: &[usize]) -> Result<usize, Error> {
    values
        .iter()
        .try_fold(1usize, |acc, &v| acc.checked_mul(v))
        .ok_or(Error::Shape(ShapeError::Overflow))
}

fn add(values: &[usize]) -> Result<usize, Error> {
    values
        .iter()
        .try_fold(0usize, |acc, &v| acc.checked_add(v))
        .ok_or(Error::Shape(ShapeError::Overflow))
}

impl WorkspaceSizes {
    /// The sizes [`Generation`](crate::Generation) needs for `batch` rows of `prompt_len`
    /// prompt tokens with a predictor of `vocab` logits per position. The parameters are
    /// validated first.
    ///
    /// The logits buffer dominates: `batch × (2 if cfg_scale > 0 else 1) × block_length ×
    /// vocab` floats (16 MB per row for LLaDA-8B with 32-token blocks).
    pub fn for_generation(
        params: &GenerateParams,
        batch: usize,
        prompt_len: usize,
        vocab: usize,
    ) -> Result<Self, Error> {
        params.validate()?;
        if batch == 0 {
            return Err(Error::Zero { name: "batch" });
        }
        if vocab == 0 {
            return Err(Error::Zero { name: "vocab" });
        }
        let rows = mul(&[batch, if params.uses_cfg() { 2 } else { 1 }])?;
        let seq = params.canvas_len(prompt_len);
        if seq == usize::MAX {
            return Err(Error::Shape(ShapeError::Overflow));
        }
        let block = params.block_length;
        let editing = params.editing.is_some();
        let cfg_inputs = if params.uses_cfg() {
            mul(&[rows, seq])?
        } else {
            0
        };
        Ok(Self {
            logits: add(&[
                mul(&[rows, block, vocab])?,
                if params.filters_vocabulary() {
                    vocab
                } else {
                    0
                },
            ])?,
            // Proposals, committed positions (and edited ones), their counts, block counters.
            tokens: add(&[
                cfg_inputs,
                mul(&[batch, block, if editing { 3 } else { 2 }])?,
                mul(&[batch, if editing { 4 } else { 2 }])?,
            ])?,
            flags: add(&[mul(&[batch, seq])?, cfg_inputs])?,
            scores: mul(&[batch, block])?,
        })
    }

    /// The sizes [`log_likelihood`](crate::log_likelihood) needs for a prompt of `prompt_len`
    /// and an answer of `answer_len` tokens, `batch` rows per mini-batch, with or without
    /// classifier-free guidance.
    pub fn for_likelihood(
        prompt_len: usize,
        answer_len: usize,
        batch: usize,
        cfg: bool,
        vocab: usize,
    ) -> Result<Self, Error> {
        let rows = mul(&[batch, if cfg { 2 } else { 1 }])?;
        let seq = add(&[prompt_len, answer_len])?;
        Ok(Self {
            logits: mul(&[rows, answer_len, vocab])?,
            tokens: add(&[mul(&[rows, seq])?, answer_len])?,
            flags: 0,
            scores: 0,
        })
    }

    /// Element-wise maximum, for one workspace that serves several operations.
    pub fn max(self, other: Self) -> Self {
        Self {
            logits: self.logits.max(other.logits),
            tokens: self.tokens.max(other.tokens),
            flags: self.flags.max(other.flags),
            scores: self.scores.max(other.scores),
        }
    }

    /// Total bytes of the four buffers.
    pub fn bytes(&self) -> usize {
        self.logits * 4 + self.tokens * 4 + self.flags + self.scores * 8
    }
}

/// Scratch memory lent by the caller. Buffers may be larger than needed.
#[derive(Debug)]
pub struct Workspace<'a> {
    /// See [`WorkspaceSizes::logits`].
    pub logits: &'a mut [f32],
    /// See [`WorkspaceSizes::tokens`].
    pub tokens: &'a mut [u32],
    /// See [`WorkspaceSizes::flags`].
    pub flags: &'a mut [u8],
    /// See [`WorkspaceSizes::scores`].
    pub scores: &'a mut [f64],
}

impl<'a> Workspace<'a> {
    /// Bundles four caller-owned buffers.
    pub fn new(
        logits: &'a mut [f32],
        tokens: &'a mut [u32],
        flags: &'a mut [u8],
        scores: &'a mut [f64],
    ) -> Self {
        Self {
            logits,
            tokens,
            flags,
            scores,
        }
    }

    /// Checks every buffer against `sizes`; the error names the first buffer that is too
    /// small and the size it needs.
    pub fn check(&self, sizes: &WorkspaceSizes) -> Result<(), Error> {
        let have = [
            ("logits", self.logits.len(), sizes.logits),
            ("tokens", self.tokens.len(), sizes.tokens),
            ("flags", self.flags.len(), sizes.flags),
            ("scores", self.scores.len(), sizes.scores),
        ];
        for (buffer, found, needed) in have {
            if found < needed {
                return Err(Error::BufferTooSmall {
                    buffer,
                    needed,
                    found,
                });
            }
        }
        Ok(())
    }
}

/// Splits `n` elements off the front of a borrowed slice, moving the borrow forward.
pub(crate) fn take<'a, T>(slice: &mut &'a mut [T], n: usize) -> &'a mut [T] {
    let whole = core::mem::take(slice);
    let (head, tail) = whole.split_at_mut(n);
    *slice = tail;
    head
}

#[cfg(feature = "alloc")]
mod owned {
    extern crate alloc;
    use alloc::vec;
    use alloc::vec::Vec;

    use super::{Workspace, WorkspaceSizes};

    /// A heap-allocated workspace, for hosts that have an allocator (feature `alloc`).
    /// Allocate it once and reuse it: [`ensure`](Self::ensure) grows it only when needed.
    #[derive(Clone, Debug, Default)]
    pub struct WorkspaceBuf {
        logits: Vec<f32>,
        tokens: Vec<u32>,
        flags: Vec<u8>,
        scores: Vec<f64>,
    }

    impl WorkspaceBuf {
        /// A workspace of exactly `sizes`.
        pub fn new(sizes: &WorkspaceSizes) -> Self {
            Self {
                logits: vec![0.0; sizes.logits],
                tokens: vec![0; sizes.tokens],
                flags: vec![0; sizes.flags],
                scores: vec![0.0; sizes.scores],
            }
        }

        /// Grows the buffers to at least `sizes` (never shrinks).
        pub fn ensure(&mut self, sizes: &WorkspaceSizes) {
            fn grow<T: Copy + Default>(v: &mut Vec<T>, n: usize) {
                if v.len() < n {
                    v.resize(n, T::default());
                }
            }
            grow(&mut self.logits, sizes.logits);
            grow(&mut self.tokens, sizes.tokens);
            grow(&mut self.flags, sizes.flags);
            grow(&mut self.scores, sizes.scores);
        }

        /// Lends the buffers.
        pub fn as_workspace(&mut self) -> Workspace<'_> {
            Workspace::new(
                &mut self.logits,
                &mut self.tokens,
                &mut self.flags,
                &mut self.scores,
            )
        }
    }
}

#[cfg(feature = "alloc")]
pub use owned::WorkspaceBuf;
