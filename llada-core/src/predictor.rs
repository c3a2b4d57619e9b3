//! The backend interface: [`MaskPredictor`] and the [`ForwardRequest`] it answers.

use core::ops::Range;

use crate::error::{ErrorKind, ShapeError};

/// A token id. Ids are `u32` everywhere in this crate (backends convert to the `i64` or `i32` their
/// runtime wants); every id a caller passes is checked against the predictor's vocabulary.
pub type TokenId = u32;

/// The error type of a backend: its own error type (with its own causes as
/// [`source`](core::error::Error::source)s), mapped onto the shared [`ErrorKind`] so generic
/// code (the sampler, the C ABI) can act on it without knowing the backend.
pub trait PredictorError: core::error::Error {
    /// The broad category of this error.
    fn kind(&self) -> ErrorKind;
}

impl PredictorError for core::convert::Infallible {
    fn kind(&self) -> ErrorKind {
        match *self {}
    }
}

/// One forward pass the sampler needs: a batch of token sequences, an optional attention mask
/// and the window of positions whose logits it will read.
///
/// Layout: `ids` is row-major `[batch, seq_len]`; `attention_mask`, when present, has the same
/// shape with `1` for a real token and `0` for left padding. The logits a predictor writes are
/// row-major `[batch, window.len(), vocab]`: only the rows of the requested window, which on
/// real LLaDA models saves most of the LM head (a 126,464-wide row per position).
///
/// The struct is `#[non_exhaustive]` and built through [`ForwardRequest::new`] and the `with_*`
/// methods, so later versions can add hints (for example the span being denoised, for backends
/// with a key/value cache) without breaking backends that ignore them.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ForwardRequest<'a> {
    ids: &'a [TokenId],
    batch: usize,
    seq_len: usize,
    attention_mask: Option<&'a [u8]>,
    window: Range<usize>,
    cache: Option<CacheHint>,
    block_causal: Option<usize>,
}

/// What the sampler tells a backend that keeps a key/value cache (see
/// [`CacheMode`](crate::CacheMode)). A backend without a cache ignores it: a full forward pass
/// is always a correct answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheHint {
    /// Which positions the cache may freeze.
    pub mode: crate::CacheMode,
    /// The block being denoised (canvas positions), and with shifted logits the position
    /// before it, whose output row holds the block's first prediction.
    pub span: Range<usize>,
    /// The first step of a block: run the full forward pass and (re)fill the cache. Otherwise
    /// only the tokens inside `span` changed since the last call.
    pub refresh: bool,
}

impl<'a> ForwardRequest<'a> {
    /// A request over `ids` (`[batch, seq_len]`, row-major) with no attention mask and the whole
    /// sequence as the logits window.
    pub fn new(ids: &'a [TokenId], batch: usize, seq_len: usize) -> Result<Self, ShapeError> {
        let needed = batch.checked_mul(seq_len).ok_or(ShapeError::Overflow)?;
        if batch == 0 || seq_len == 0 {
            return Err(ShapeError::Empty {
                what: "forward request",
            });
        }
        if ids.len() != needed {
            return Err(ShapeError::Length {
                what: "input ids",
                expected: needed,
                found: ids.len(),
            });
        }
        Ok(Self {
            ids,
            batch,
            seq_len,
            attention_mask: None,
            window: 0..seq_len,
            cache: None,
            block_causal: None,
        })
    }

    /// A request from parts already checked by the caller.
    pub(crate) fn from_parts(
        ids: &'a [TokenId],
        batch: usize,
        seq_len: usize,
        attention_mask: Option<&'a [u8]>,
        window: Range<usize>,
    ) -> Self {
        debug_assert_eq!(ids.len(), batch * seq_len);
        Self {
            ids,
            batch,
            seq_len,
            attention_mask,
            window,
            cache: None,
            block_causal: None,
        }
    }

    /// Adds an attention mask of shape `[batch, seq_len]` (non-zero = real token, 0 = padding).
    pub fn with_attention_mask(mut self, mask: &'a [u8]) -> Result<Self, ShapeError> {
        if mask.len() != self.ids.len() {
            return Err(ShapeError::Length {
                what: "attention mask",
                expected: self.ids.len(),
                found: mask.len(),
            });
        }
        self.attention_mask = Some(mask);
        Ok(self)
    }

    /// Restricts the logits to positions `window` of every row.
    pub fn with_window(mut self, window: Range<usize>) -> Result<Self, ShapeError> {
        if window.start >= window.end || window.end > self.seq_len {
            return Err(ShapeError::Window {
                start: window.start,
                end: window.end,
                seq_len: self.seq_len,
            });
        }
        self.window = window;
        Ok(self)
    }

    /// Attaches a cache hint; the window must lie inside its span.
    pub fn with_cache(mut self, hint: CacheHint) -> Result<Self, ShapeError> {
        if hint.span.start >= hint.span.end || hint.span.end > self.seq_len {
            return Err(ShapeError::Window {
                start: hint.span.start,
                end: hint.span.end,
                seq_len: self.seq_len,
            });
        }
        self.cache = Some(hint);
        Ok(self)
    }

    /// Asks for block-causal attention on the absolute grid of blocks of `block` positions
    /// (LLaDA2.x's block diffusion): position `p` attends to every position of its own block
    /// and of the blocks before it, `0..(p / block + 1) · block`, and to nothing after. The
    /// logits of the window then depend only on the positions up to the end of its last
    /// block ([`attended_end`](Self::attended_end)); a backend may skip the rest.
    pub fn with_block_causal(mut self, block: usize) -> Result<Self, ShapeError> {
        if block == 0 {
            return Err(ShapeError::Empty {
                what: "attention block",
            });
        }
        self.block_causal = Some(block);
        Ok(self)
    }

    /// The block of block-causal attention, or `None` for bidirectional attention.
    pub fn block_causal(&self) -> Option<usize> {
        self.block_causal
    }

    /// The positions whose keys position `position` attends to end here: the end of its
    /// block (at most `seq_len`) with block-causal attention, else `seq_len`.
    pub fn visible_end(&self, position: usize) -> usize {
        match self.block_causal {
            Some(block) => (position / block + 1)
                .saturating_mul(block)
                .min(self.seq_len),
            None => self.seq_len,
        }
    }

    /// Every position the window's logits depend on lies before this: the end of the window's
    /// last block with block-causal attention, else `seq_len`.
    pub fn attended_end(&self) -> usize {
        self.visible_end(self.window.end - 1)
    }

    /// The cache hint, when the sampler runs with a cache mode.
    pub fn cache(&self) -> Option<&CacheHint> {
        self.cache.as_ref()
    }

    /// All input ids, `[batch, seq_len]` row-major.
    pub fn ids(&self) -> &'a [TokenId] {
        self.ids
    }

    /// The ids of one row.
    ///
    /// # Panics
    /// If `row >= batch`.
    pub fn row(&self, row: usize) -> &'a [TokenId] {
        &self.ids[row * self.seq_len..(row + 1) * self.seq_len]
    }

    /// Number of rows.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Length of every row.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The attention mask, if any: `[batch, seq_len]`, non-zero = real token.
    pub fn attention_mask(&self) -> Option<&'a [u8]> {
        self.attention_mask
    }

    /// The positions whose logits the caller reads.
    pub fn window(&self) -> Range<usize> {
        self.window.clone()
    }

    /// The number of `f32` values the logits output must hold for a vocabulary of `vocab`:
    /// `batch * window.len() * vocab`.
    pub fn logits_len(&self, vocab: usize) -> usize {
        self.batch * self.window.len() * vocab
    }

    /// Checks that `logits` holds exactly [`logits_len`](Self::logits_len)`(vocab)` values:
    /// what every backend checks before it writes.
    pub fn check_logits(&self, logits: &[f32], vocab: usize) -> Result<(), ShapeError> {
        let expected = self.logits_len(vocab);
        if logits.len() == expected {
            Ok(())
        } else {
            Err(ShapeError::Length {
                what: "logits",
                expected,
                found: logits.len(),
            })
        }
    }

    /// The first input id that is not below `vocab` (one a `vocab`-row embedding cannot look
    /// up), as `(row, position, id)`.
    pub fn first_id_outside(&self, vocab: usize) -> Option<(usize, usize, TokenId)> {
        let i = self.ids.iter().position(|&id| id as usize >= vocab)?;
        Some((i / self.seq_len, i % self.seq_len, self.ids[i]))
    }
}

/// Where the predictions for positions `positions` are among a model's output rows: the same
/// rows, or with [shifted logits](MaskPredictor::shifted_logits) the rows one position earlier
/// (position 0 reading row 0). `window` is the range of rows to ask for; `row(p)` the row that
/// holds position `p`'s prediction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LogitRows {
    pub(crate) window: Range<usize>,
    shifted: bool,
}

impl LogitRows {
    pub(crate) fn new(positions: Range<usize>, shifted: bool) -> Self {
        let window = if shifted {
            let start = positions.start.saturating_sub(1);
            start..(positions.end - 1).max(start + 1)
        } else {
            positions
        };
        Self { window, shifted }
    }

    /// The index, within the window, of the row holding the prediction for `position`.
    pub(crate) fn row(&self, position: usize) -> usize {
        let source = if self.shifted {
            position.saturating_sub(1)
        } else {
            position
        };
        source - self.window.start
    }

    /// Rows in the window.
    pub(crate) fn len(&self) -> usize {
        self.window.len()
    }
}

/// What an exact prefix cache of a block-causal model holds (LLaDA2.x): the keys and values of
/// the first [`len`](Self::len) positions (whole blocks) of every row, computed from tokens the
/// backend keeps beside them ([`record`](Self::record)). Nothing after a block changes its keys
/// and values, so they stay exact for as long as its tokens, and those of every block before it,
/// stay the same ([`reusable`](Self::reusable)). The bookkeeping is shared by the backends; the
/// storage (the keys and values, the tokens) is theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CausalPrefix {
    batch: usize,
    seq: usize,
    block: usize,
    prefix: usize,
}

impl CausalPrefix {
    /// What a block-causal pass over `request` (blocks of `block`) leaves exact: it computed
    /// every position before `computed_end`, and the positions before `final_end` will not
    /// change (the cache hint's span start), so the whole blocks before the smaller of the two.
    pub fn after_pass(
        request: &ForwardRequest<'_>,
        block: usize,
        computed_end: usize,
        final_end: usize,
    ) -> Self {
        let block = block.max(1);
        Self {
            batch: request.batch(),
            seq: request.seq_len(),
            block,
            prefix: computed_end.min(final_end).min(request.seq_len()) / block * block,
        }
    }

    /// Positions held per row.
    pub fn len(&self) -> usize {
        self.prefix
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.prefix == 0
    }

    /// Whether it was recorded for passes of `batch` rows of `seq` positions.
    pub fn holds_shape(&self, batch: usize, seq: usize) -> bool {
        (self.batch, self.seq) == (batch, seq)
    }

    /// Tokens (and padding flags) to keep: `batch · len`.
    pub fn tokens(&self) -> usize {
        self.batch * self.prefix
    }

    /// Copies the held positions' tokens and padding flags (1 = real) of `request`, row after
    /// row, into `ids` and `real` (each [`tokens`](Self::tokens) long).
    pub fn record(&self, request: &ForwardRequest<'_>, ids: &mut [TokenId], real: &mut [u8]) {
        let (prefix, seq) = (self.prefix, self.seq);
        for r in 0..self.batch {
            ids[r * prefix..(r + 1) * prefix].copy_from_slice(&request.row(r)[..prefix]);
            let out = &mut real[r * prefix..(r + 1) * prefix];
            match request.attention_mask() {
                Some(m) => out
                    .iter_mut()
                    .zip(&m[r * seq..r * seq + prefix])
                    .for_each(|(o, &v)| *o = u8::from(v != 0)),
                None => out.fill(1),
            }
        }
    }

    /// How many leading positions of every row of `request` (block-causal, blocks of `block`)
    /// are still held exactly, given the tokens and flags [`record`](Self::record)ed: whole
    /// blocks whose tokens and padding, and those of every block before them, are unchanged, and
    /// none of the window's block or later. A pass computes the positions from there on. 0 when
    /// the request has another shape or block.
    pub fn reusable(
        &self,
        request: &ForwardRequest<'_>,
        block: usize,
        ids: &[TokenId],
        real: &[u8],
    ) -> usize {
        let (batch, seq) = (request.batch(), request.seq_len());
        if (self.batch, self.seq, self.block) != (batch, seq, block) {
            return 0;
        }
        let held = self.prefix;
        let window_block = request.window().start / block * block;
        let mut prefix = held.min(window_block);
        let mask = request.attention_mask();
        for r in 0..batch {
            let row = &request.row(r)[..prefix];
            let kept = &ids[r * held..r * held + prefix];
            let flags = &real[r * held..r * held + prefix];
            // A token or its padding flag changed: its block and everything after it is stale.
            let changed = (0..prefix).find(|&p| {
                let is_real = mask.is_none_or(|m| m[r * seq + p] != 0);
                row[p] != kept[p] || is_real != (flags[p] != 0)
            });
            if let Some(p) = changed {
                prefix = p / block * block;
            }
        }
        prefix
    }
}

/// A mask predictor: the bidirectional transformer that, given a partially masked sequence,
/// predicts every position at once. Backends (ndarray, ONNX Runtime, a GPU runtime, a mock)
/// implement this one trait, and the sampler drives any of them.
///
/// `forward` takes `&mut self` so a backend can own and reuse its scratch memory; share the
/// immutable weights between threads and give each thread its own predictor.
pub trait MaskPredictor {
    /// The backend's own error type.
    type Error: PredictorError;

    /// Width of a logits row (the model's `embedding_size`, which may exceed the tokenizer's
    /// vocabulary).
    fn vocab_size(&self) -> usize;

    /// The longest sequence the predictor accepts.
    fn max_sequence_length(&self) -> usize;

    /// Whether the model's prediction for position `i` is its output row `i − 1` (position 0
    /// reads row 0): Dream and DiffuCoder, which were adapted from left-to-right models, are
    /// trained that way. The sampler and the likelihood apply the shift, asking for the
    /// window one position earlier; a predictor only declares it. `false` by default.
    fn shifted_logits(&self) -> bool {
        false
    }

    /// Whether the model was trained with block-causal attention (LLaDA2.x's block
    /// diffusion): the sampler then decodes on the [absolute grid](crate::BlockGrid::Absolute)
    /// and asks for block-causal passes. `false` by default.
    fn block_causal(&self) -> bool {
        false
    }

    /// Runs the model on `request` and writes the logits of the requested window into
    /// `logits`, row-major `[batch, window.len(), vocab_size]`. `logits.len()` is exactly
    /// `request.logits_len(self.vocab_size())`; a predictor must check this and the ids
    /// (inside the vocabulary, sequence not longer than its maximum) and return an error
    /// rather than panic.
    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), Self::Error>;
}

impl<P: MaskPredictor + ?Sized> MaskPredictor for &mut P {
    type Error = P::Error;

    fn vocab_size(&self) -> usize {
        (**self).vocab_size()
    }

    fn max_sequence_length(&self) -> usize {
        (**self).max_sequence_length()
    }

    fn shifted_logits(&self) -> bool {
        (**self).shifted_logits()
    }

    fn block_causal(&self) -> bool {
        (**self).block_causal()
    }

    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), Self::Error> {
        (**self).forward(request, logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_rows_are_one_earlier_and_position_zero_reads_row_zero() {
        let plain = LogitRows::new(5..9, false);
        assert_eq!(
            (plain.window.clone(), plain.row(5), plain.row(8)),
            (5..9, 0, 3)
        );
        let shifted = LogitRows::new(5..9, true);
        assert_eq!(
            (shifted.window.clone(), shifted.row(5), shifted.row(8)),
            (4..8, 0, 3)
        );
        let from_zero = LogitRows::new(0..3, true);
        assert_eq!(from_zero.window, 0..2);
        assert_eq!([0, 1, 2].map(|p| from_zero.row(p)), [0, 0, 1]);
        assert_eq!(LogitRows::new(0..1, true).window, 0..1);
    }

    #[test]
    fn the_shared_request_checks_name_what_is_wrong() {
        let ids = [1, 2, 3, 4, 9, 6];
        let request = ForwardRequest::new(&ids, 2, 3)
            .unwrap()
            .with_window(1..3)
            .unwrap();
        assert_eq!(request.check_logits(&[0.0; 2 * 2 * 5], 5), Ok(()));
        assert_eq!(
            request.check_logits(&[0.0; 7], 5),
            Err(ShapeError::Length {
                what: "logits",
                expected: 20,
                found: 7
            })
        );
        assert_eq!(request.first_id_outside(10), None);
        assert_eq!(request.first_id_outside(5), Some((1, 1, 9)));
    }
}
