//! Test support for code built on this crate (feature `testing`): mock predictors (the golden
//! conformance suite's hash predictor, an oracle that is certain of a known sequence, a
//! uniform predictor), which allocate nothing, and, with `alloc`, [`check_predictor`]: the
//! conformance suite a backend runs to show it answers the sampler's requests correctly.

#[cfg(feature = "alloc")]
mod conformance;

#[cfg(feature = "alloc")]
pub use conformance::{CheckFailure, Expectations, check_predictor};

use crate::error::{ErrorKind, ShapeError};
use crate::predictor::{ForwardRequest, MaskPredictor, PredictorError, TokenId};

/// A mock predictor refused a request.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    /// Wrong logits length or an impossible shape.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// An input id outside the vocabulary.
    #[error("input id {id} is outside the vocabulary of {vocab}")]
    Token {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// The sequence is longer than the mock's maximum.
    #[error("sequence length {seq_len} exceeds the maximum {max}")]
    TooLong {
        /// Requested length.
        seq_len: usize,
        /// The maximum.
        max: usize,
    },
}

impl PredictorError for MockError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

fn check_request(
    request: &ForwardRequest<'_>,
    logits: &[f32],
    vocab: usize,
    max: usize,
) -> Result<(), MockError> {
    request.check_logits(logits, vocab)?;
    if request.seq_len() > max {
        return Err(MockError::TooLong {
            seq_len: request.seq_len(),
            max,
        });
    }
    if let Some((_, _, id)) = request.first_id_outside(vocab) {
        return Err(MockError::Token { id, vocab });
    }
    Ok(())
}

/// SplitMix64's output function.
pub fn splitmix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The golden vectors' predictor (`hash-predictor-v1`): logits that depend on the whole row
/// (every token and its position) through a hash, exactly representable in `f32`, so any
/// implementation of the reverse process can be checked token for token.
///
/// For a row `x` of length `L`: `c = splitmix64(Σ x[j]·(j+1))`, `h(i, v) = splitmix64(seed ^ c ^
/// i·0x100000001B3 ^ v·0xC2B2AE3D27D4EB4F)` and `logit[i][v] = (h >> 40) / 2^24 · scale`, except
/// `logit[i][mask_id] = −scale`. The attention mask does not enter.
#[derive(Clone, Copy, Debug)]
pub struct HashPredictor {
    /// Vocabulary size.
    pub vocab: usize,
    /// The mask id, whose logit is always `-scale`.
    pub mask_id: TokenId,
    /// Hash seed.
    pub seed: u64,
    /// Logit scale (8.0 in the golden file).
    pub scale: f32,
    /// Longest sequence accepted.
    pub max_len: usize,
}

impl HashPredictor {
    /// The golden file's predictor: scale 8, sequences up to 4096.
    pub fn new(vocab: usize, mask_id: TokenId, seed: u64) -> Self {
        Self {
            vocab,
            mask_id,
            seed,
            scale: 8.0,
            max_len: 4096,
        }
    }
}

impl MaskPredictor for HashPredictor {
    type Error = MockError;

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_sequence_length(&self) -> usize {
        self.max_len
    }

    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), MockError> {
        check_request(request, logits, self.vocab, self.max_len)?;
        let window = request.window();
        let per_row = window.len() * self.vocab;
        for (b, out) in logits.chunks_exact_mut(per_row).enumerate() {
            let row = request.row(b);
            let sum = row.iter().enumerate().fold(0u64, |acc, (j, &x)| {
                acc.wrapping_add(u64::from(x).wrapping_mul(j as u64 + 1))
            });
            let c = splitmix64(sum);
            for (i, position_logits) in window.clone().zip(out.chunks_exact_mut(self.vocab)) {
                let base = self.seed ^ c ^ (i as u64).wrapping_mul(0x0000_0100_0000_01B3);
                for (v, l) in position_logits.iter_mut().enumerate() {
                    let h = splitmix64(base ^ (v as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
                    *l = (h >> 40) as f32 / (1u32 << 24) as f32 * self.scale;
                }
                position_logits[self.mask_id as usize] = -self.scale;
            }
        }
        Ok(())
    }
}

/// A predictor certain of one known sequence: at position `i` the logit of `sequence[i]` is 0
/// and every other logit is negative infinity, whatever the input.
#[derive(Clone, Copy, Debug)]
pub struct OraclePredictor<'a> {
    /// The sequence it predicts, one id per position.
    pub sequence: &'a [TokenId],
    /// Vocabulary size.
    pub vocab: usize,
}

impl MaskPredictor for OraclePredictor<'_> {
    type Error = MockError;

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_sequence_length(&self) -> usize {
        self.sequence.len()
    }

    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), MockError> {
        check_request(request, logits, self.vocab, self.sequence.len())?;
        let window = request.window();
        for out in logits.chunks_exact_mut(window.len() * self.vocab) {
            for (i, position_logits) in window.clone().zip(out.chunks_exact_mut(self.vocab)) {
                position_logits.fill(f32::NEG_INFINITY);
                position_logits[self.sequence[i] as usize] = 0.0;
            }
        }
        Ok(())
    }
}

/// A predictor that knows nothing: every logit is 0.
#[derive(Clone, Copy, Debug)]
pub struct UniformPredictor {
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest sequence accepted.
    pub max_len: usize,
}

impl MaskPredictor for UniformPredictor {
    type Error = MockError;

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_sequence_length(&self) -> usize {
        self.max_len
    }

    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), MockError> {
        check_request(request, logits, self.vocab, self.max_len)?;
        logits.fill(0.0);
        Ok(())
    }
}

/// Any predictor made into one with [shifted logits](MaskPredictor::shifted_logits), as Dream
/// is: its output row `r` is the wrapped predictor's prediction for position `r + 1` (the last
/// row of a sequence, which predicts nothing, repeats the one before). Generating with
/// `ShiftedPredictor(p)` therefore gives exactly what generating with `p` gives, through the
/// sampler's shifted windows.
#[derive(Clone, Copy, Debug)]
pub struct ShiftedPredictor<P>(pub P);

impl<P: MaskPredictor> MaskPredictor for ShiftedPredictor<P> {
    type Error = P::Error;

    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }

    fn max_sequence_length(&self) -> usize {
        self.0.max_sequence_length()
    }

    fn shifted_logits(&self) -> bool {
        true
    }

    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), P::Error> {
        let window = request.window();
        if window.end < request.seq_len()
            && let Ok(next) = request
                .clone()
                .with_window(window.start + 1..window.end + 1)
        {
            return self.0.forward(&next, logits);
        }
        // The window reaches the end: the wrapped rows of the same positions, moved up one.
        self.0.forward(request, logits)?;
        let vocab = self.0.vocab_size();
        let per_row = window.len() * vocab;
        if per_row > 0 {
            // Row r takes row r + 1; the last keeps its own, now repeated.
            for rows in logits.chunks_exact_mut(per_row) {
                rows.copy_within(vocab.., 0);
            }
        }
        Ok(())
    }
}
