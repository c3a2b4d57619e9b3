//! [`check_predictor`]: what a [`MaskPredictor`] must do for the sampler, checked on any
//! backend. The one page a third party implementing the trait (a GPU crate, a phone NPU)
//! needs: run it in a test against a loaded model.

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use crate::error::ErrorKind;
use crate::params::CacheMode;
use crate::predictor::{CacheHint, ForwardRequest, MaskPredictor, PredictorError, TokenId};
use crate::testing::splitmix64;

/// What [`check_predictor`] may expect of a predictor.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Expectations {
    /// Largest absolute difference between logits that must agree: a row run alone and in a
    /// batch, a window and the same rows of the whole output, a left-padded row and the same
    /// row unpadded, a cached pass and a plain one. Equal infinities agree.
    pub tolerance: f32,
    /// Whether the predictor hides left padding behind the attention mask, as a transformer
    /// does (rotary positions are relative, so a padded row gives the logits of the unpadded
    /// one). Mocks that ignore the mask skip the padding checks.
    pub attention_mask: bool,
    /// Length of the test sequences (at most the predictor's maximum; at least 4).
    pub seq_len: usize,
}

impl Default for Expectations {
    /// `1e-4`, the attention mask honoured, sequences of 12 tokens.
    fn default() -> Self {
        Self {
            tolerance: 1e-4,
            attention_mask: true,
            seq_len: 12,
        }
    }
}

impl Expectations {
    /// These expectations with `tolerance`.
    #[must_use]
    pub fn with_tolerance(mut self, tolerance: f32) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// These expectations for a predictor that ignores the attention mask.
    #[must_use]
    pub fn ignoring_attention_mask(mut self) -> Self {
        self.attention_mask = false;
        self
    }

    /// These expectations with test sequences of `seq_len` tokens.
    #[must_use]
    pub fn with_seq_len(mut self, seq_len: usize) -> Self {
        self.seq_len = seq_len;
        self
    }
}

/// A check of [`check_predictor`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFailure {
    /// Which check (`"determinism"`, `"window"`, `"batch"`, ...).
    pub check: &'static str,
    /// What was expected and what came back.
    pub detail: String,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conformance check `{}` failed: {}",
            self.check, self.detail
        )
    }
}

impl core::error::Error for CheckFailure {}

fn fail(check: &'static str, detail: String) -> CheckFailure {
    CheckFailure { check, detail }
}

/// Checks that `predictor` answers every kind of request the sampler makes, and refuses the
/// bad ones with an error instead of a panic:
///
/// - **limits**: a vocabulary of at least 2 and sequences of at least 4;
/// - **determinism**: the same request twice gives the same logits, bit for bit, none NaN;
/// - **windows**: the logits of a window are the window's rows of the whole output;
/// - **batch rows**: each row of a batch gets the logits it gets alone;
/// - **padding masks** (when [`Expectations::attention_mask`]): a left-padded row behind its
///   mask gets the logits of the unpadded row, whatever the padding ids;
/// - **cache hints**, honoured or ignored: a refreshing pass equals a plain one, a
///   following pass over unchanged ids equals the plain pass's window, for the prefix and the
///   dual cache, and a plain pass afterwards is plain again;
/// - **wrong-size logits buffers**, **ids outside the vocabulary** and **sequences over the
///   maximum**: an error of kind [`ErrorKind::InvalidInput`] or
///   [`ErrorKind::BufferTooSmall`].
///
/// Test ids are drawn from the first `min(vocab, 256)` ids. Returns the first failure.
///
/// ```
/// use llada_core::testing::{Expectations, HashPredictor, check_predictor};
///
/// // The hash predictor ignores the attention mask (it hashes whole rows).
/// let mut predictor = HashPredictor::new(50, 49, 7);
/// check_predictor(&mut predictor, &Expectations::default().ignoring_attention_mask())?;
/// # Ok::<(), llada_core::testing::CheckFailure>(())
/// ```
pub fn check_predictor<P: MaskPredictor + ?Sized>(
    predictor: &mut P,
    expect: &Expectations,
) -> Result<(), CheckFailure> {
    let vocab = predictor.vocab_size();
    let max = predictor.max_sequence_length();
    if vocab < 2 || max < 4 {
        return Err(fail(
            "limits",
            format!("vocab_size {vocab} and max_sequence_length {max}: need at least 2 and 4"),
        ));
    }
    let seq = expect.seq_len.clamp(4, max);
    let mut suite = Suite {
        predictor,
        vocab,
        tolerance: expect.tolerance,
    };
    let a = ids(1, seq, vocab);
    let b = ids(2, seq, vocab);

    // Determinism, and the reference every other check compares with.
    let full_a = suite.run("determinism", &Request::plain(&a, 1, seq))?;
    let again = suite.run("determinism", &Request::plain(&a, 1, seq))?;
    if let Some(i) = full_a.iter().position(|v| v.is_nan()) {
        return Err(fail("determinism", format!("logit {i} is NaN")));
    }
    if full_a
        .iter()
        .zip(&again)
        .any(|(x, y)| x.to_bits() != y.to_bits())
    {
        return Err(fail(
            "determinism",
            "the same request gave different logits".into(),
        ));
    }
    let full_b = suite.run("batch", &Request::plain(&b, 1, seq))?;

    // Windows.
    for window in [0..1, seq / 2..seq - 1, seq - 1..seq] {
        let got = suite.run("window", &Request::plain(&a, 1, seq).window(window.clone()))?;
        suite.agree("window", &got, rows(&full_a, &window, vocab))?;
    }

    // Batch rows, whole and windowed.
    let both = [a.as_slice(), b.as_slice()].concat();
    let got = suite.run("batch", &Request::plain(&both, 2, seq))?;
    suite.agree("batch", &got[..seq * vocab], &full_a)?;
    suite.agree("batch", &got[seq * vocab..], &full_b)?;
    let window = 1..seq - 1;
    let got = suite.run(
        "batch",
        &Request::plain(&both, 2, seq).window(window.clone()),
    )?;
    let per_row = window.len() * vocab;
    suite.agree("batch", &got[..per_row], rows(&full_a, &window, vocab))?;
    suite.agree("batch", &got[per_row..], rows(&full_b, &window, vocab))?;

    // Left padding behind the attention mask.
    if expect.attention_mask {
        let pad = seq / 3;
        let short = &a[..seq - pad];
        let alone = suite.run("padding", &Request::plain(short, 1, seq - pad))?;
        let mut mask = vec![1u8; 2 * seq];
        mask[..pad].fill(0);
        for pad_id in [0, vocab as TokenId - 1] {
            // Row 0 padded, row 1 unpadded: the mixed batch the pipeline builds.
            let mut padded = vec![pad_id; pad];
            padded.extend_from_slice(short);
            padded.extend_from_slice(&b);
            let request = Request::plain(&padded, 2, seq).mask(&mask);
            let got = suite.run("padding", &request)?;
            suite.agree("padding", &got[pad * vocab..seq * vocab], &alone)?;
            suite.agree("padding", &got[seq * vocab..], &full_b)?;
        }
    }

    // Cache hints: honoured or ignored, the answers stay those of plain passes.
    let span = seq / 2..seq / 2 + (seq / 4).max(1);
    for mode in [CacheMode::Dual, CacheMode::Prefix] {
        let hint = |refresh| CacheHint {
            mode,
            span: span.clone(),
            refresh,
        };
        let request = Request::plain(&a, 1, seq).window(span.clone());
        let fresh = suite.run("cache", &request.clone().cache(hint(true)))?;
        suite.agree("cache", &fresh, rows(&full_a, &span, vocab))?;
        let reused = suite.run("cache", &request.cache(hint(false)))?;
        suite.agree("cache", &reused, rows(&full_a, &span, vocab))?;
    }
    let plain = suite.run("cache", &Request::plain(&b, 1, seq))?;
    suite.agree("cache", &plain, &full_b)?;

    // Requests the predictor must refuse.
    let request = ForwardRequest::new(&a, 1, seq).expect("a valid shape");
    for len in [seq * vocab - 1, seq * vocab + 1] {
        let mut logits = vec![0.0; len];
        suite.refuse("wrong-size logits", &request, &mut logits)?;
    }
    let mut outside = a.clone();
    outside[seq / 2] = vocab as TokenId;
    let request = ForwardRequest::new(&outside, 1, seq).expect("a valid shape");
    suite.refuse(
        "id outside the vocabulary",
        &request,
        &mut vec![0.0; seq * vocab],
    )?;
    if max < 1 << 16 {
        let long = ids(3, max + 1, vocab);
        let request = ForwardRequest::new(&long, 1, max + 1)
            .and_then(|r| r.with_window(max..max + 1))
            .expect("a valid shape");
        suite.refuse("sequence over the maximum", &request, &mut vec![0.0; vocab])?;
    }
    Ok(())
}

/// `len` deterministic ids below `min(vocab, 256)`.
fn ids(seed: u64, len: usize, vocab: usize) -> Vec<TokenId> {
    let range = vocab.min(256) as u64;
    (0..len as u64)
        .map(|i| (splitmix64(seed.wrapping_mul(0x9E37) ^ i) % range) as TokenId)
        .collect()
}

/// The rows of `window` in a one-row output of `vocab`-wide logits.
fn rows<'l>(logits: &'l [f32], window: &Range<usize>, vocab: usize) -> &'l [f32] {
    &logits[window.start * vocab..window.end * vocab]
}

/// A request under construction (shapes are right by construction).
#[derive(Clone)]
struct Request<'a> {
    ids: &'a [TokenId],
    batch: usize,
    seq: usize,
    mask: Option<&'a [u8]>,
    window: Option<Range<usize>>,
    cache: Option<CacheHint>,
}

impl<'a> Request<'a> {
    fn plain(ids: &'a [TokenId], batch: usize, seq: usize) -> Self {
        Self {
            ids,
            batch,
            seq,
            mask: None,
            window: None,
            cache: None,
        }
    }

    fn window(mut self, window: Range<usize>) -> Self {
        self.window = Some(window);
        self
    }

    fn mask(mut self, mask: &'a [u8]) -> Self {
        self.mask = Some(mask);
        self
    }

    fn cache(mut self, hint: CacheHint) -> Self {
        self.cache = Some(hint);
        self
    }

    fn build(&self) -> ForwardRequest<'a> {
        let mut request = ForwardRequest::new(self.ids, self.batch, self.seq).expect("shape");
        if let Some(mask) = self.mask {
            request = request.with_attention_mask(mask).expect("mask shape");
        }
        if let Some(window) = &self.window {
            request = request.with_window(window.clone()).expect("window");
        }
        if let Some(hint) = &self.cache {
            request = request.with_cache(hint.clone()).expect("span");
        }
        request
    }
}

struct Suite<'p, P: ?Sized> {
    predictor: &'p mut P,
    vocab: usize,
    tolerance: f32,
}

impl<P: MaskPredictor + ?Sized> Suite<'_, P> {
    /// Runs a request that must succeed.
    fn run(
        &mut self,
        check: &'static str,
        request: &Request<'_>,
    ) -> Result<Vec<f32>, CheckFailure> {
        let request = request.build();
        let mut logits = vec![f32::NAN; request.logits_len(self.vocab)];
        self.predictor
            .forward(&request, &mut logits)
            .map_err(|e| fail(check, format!("a valid request failed: {e}")))?;
        Ok(logits)
    }

    /// Logits that must agree within the tolerance.
    fn agree(&self, check: &'static str, got: &[f32], want: &[f32]) -> Result<(), CheckFailure> {
        if got.len() != want.len() {
            return Err(fail(
                check,
                format!("{} logits, expected {}", got.len(), want.len()),
            ));
        }
        for (i, (&x, &y)) in got.iter().zip(want).enumerate() {
            // NaN differences (a NaN logit, or infinities of opposite signs) never agree.
            let close = (x - y).abs() <= self.tolerance;
            if x != y && !close {
                let (row, token) = (i / self.vocab, i % self.vocab);
                return Err(fail(
                    check,
                    format!(
                        "logit of token {token} at row {row} is {x}, expected {y} (tolerance {})",
                        self.tolerance
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A request that must be refused with an error of a caller's kind.
    fn refuse(
        &mut self,
        check: &'static str,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), CheckFailure> {
        match self.predictor.forward(request, logits) {
            Ok(()) => Err(fail(check, "accepted instead of an error".into())),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::InvalidInput | ErrorKind::BufferTooSmall
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(fail(
                check,
                format!("error of kind {:?} ({e}), expected InvalidInput", e.kind()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{HashPredictor, OraclePredictor, UniformPredictor};

    #[test]
    fn the_mocks_conform() {
        let lenient = Expectations::default().ignoring_attention_mask();
        check_predictor(&mut HashPredictor::new(40, 39, 3), &lenient).unwrap();
        check_predictor(
            &mut UniformPredictor {
                vocab: 9,
                max_len: 20,
            },
            &Expectations::default(),
        )
        .unwrap();
        let sequence: Vec<u32> = (0..16).map(|i| i % 5).collect();
        let mut oracle = OraclePredictor {
            sequence: &sequence,
            vocab: 5,
        };
        check_predictor(&mut oracle, &lenient).unwrap();
    }

    /// A predictor whose rows see each other: every logit is the sum of row 0's ids.
    struct Leaky;

    impl MaskPredictor for Leaky {
        type Error = crate::testing::MockError;
        fn vocab_size(&self) -> usize {
            4
        }
        fn max_sequence_length(&self) -> usize {
            32
        }
        fn forward(
            &mut self,
            request: &ForwardRequest<'_>,
            logits: &mut [f32],
        ) -> Result<(), Self::Error> {
            request.check_logits(logits, 4)?;
            if let Some((_, _, id)) = request.first_id_outside(4) {
                return Err(crate::testing::MockError::Token { id, vocab: 4 });
            }
            let sum: u32 = request.row(0).iter().sum();
            logits.fill(sum as f32);
            Ok(())
        }
    }

    #[test]
    fn a_predictor_whose_rows_leak_fails_the_batch_check() {
        let err = check_predictor(
            &mut Leaky,
            &Expectations::default().ignoring_attention_mask(),
        )
        .unwrap_err();
        assert_eq!(err.check, "batch", "{err}");
    }
}
