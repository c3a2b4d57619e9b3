//! The forward (noising) process used in training, and the masked-diffusion loss, so users can
//! build training batches and check a model's loss without Python.
//!
//! Pretraining masks every token independently with probability `p = (1 − ε)·t + ε`,
//! `t ~ U(0, 1]`, one `t` per row; supervised fine-tuning does the same on the response only.
//! The loss is the cross-entropy on masked positions weighted by `1/p`, normalised as in the
//! LLaDA paper and its guidelines: by `batch × seq_len` for pretraining, and per row by the
//! response length, then by `batch`, for fine-tuning.

use rand_core::Rng;

use crate::error::{Error, ShapeError};
use crate::likelihood::cross_entropy;
use crate::params::check_id;
use crate::predictor::TokenId;
use crate::rng::unit;

/// The ε of the LLaDA guidelines: the smallest masking probability.
pub const DEFAULT_MASK_EPS: f32 = 1e-3;

/// How [`diffusion_loss`] normalises the weighted sum of cross-entropies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossNormalization<'a> {
    /// Divide by `batch × seq_len` (pretraining).
    Pretraining,
    /// Divide each row by its response length (`seq_len − prompt_lengths[row]`), then by
    /// `batch` (supervised fine-tuning).
    Sft {
        /// Prompt length of each row.
        prompt_lengths: &'a [usize],
    },
}

fn rows_of(len: usize, batch: usize, what: &'static str) -> Result<usize, Error> {
    if batch == 0 {
        return Err(Error::Zero { name: "batch" });
    }
    if len == 0 || !len.is_multiple_of(batch) {
        return Err(ShapeError::Length {
            what,
            expected: batch * (len / batch).max(1),
            found: len,
        }
        .into());
    }
    Ok(len / batch)
}

fn check_len(what: &'static str, found: usize, expected: usize) -> Result<(), Error> {
    if found == expected {
        Ok(())
    } else {
        Err(ShapeError::Length {
            what,
            expected,
            found,
        }
        .into())
    }
}

fn check_eps(eps: f32) -> Result<(), Error> {
    if (0.0..1.0).contains(&eps) {
        Ok(())
    } else {
        Err(Error::OutOfRange {
            name: "eps",
            range: "[0, 1)",
            value: f64::from(eps),
        })
    }
}

fn check_prompt_lengths(prompt_lengths: &[usize], batch: usize, seq: usize) -> Result<(), Error> {
    check_len("prompt lengths", prompt_lengths.len(), batch)?;
    for &p in prompt_lengths {
        if p >= seq {
            return Err(Error::OutOfRange {
                name: "prompt length",
                range: "0..seq_len (a response must remain)",
                value: p as f64,
            });
        }
    }
    Ok(())
}

/// Pretraining noise: row `r` of `tokens` (`[batch, seq_len]`) is copied to `noisy` with each
/// token replaced by `mask_id` with probability `p_mask[r] = (1 − eps)·t + eps`, `t ~ U(0, 1]`.
pub fn mask_for_pretraining<R: Rng + ?Sized>(
    tokens: &[TokenId],
    batch: usize,
    mask_id: TokenId,
    eps: f32,
    rng: &mut R,
    noisy: &mut [TokenId],
    p_mask: &mut [f32],
) -> Result<(), Error> {
    mask_rows(tokens, batch, None, mask_id, eps, rng, noisy, p_mask)
}

/// Fine-tuning noise: like [`mask_for_pretraining`], but the first `prompt_lengths[r]` tokens of
/// row `r` are never masked.
#[allow(clippy::too_many_arguments)]
pub fn mask_for_sft<R: Rng + ?Sized>(
    tokens: &[TokenId],
    batch: usize,
    prompt_lengths: &[usize],
    mask_id: TokenId,
    eps: f32,
    rng: &mut R,
    noisy: &mut [TokenId],
    p_mask: &mut [f32],
) -> Result<(), Error> {
    mask_rows(
        tokens,
        batch,
        Some(prompt_lengths),
        mask_id,
        eps,
        rng,
        noisy,
        p_mask,
    )
}

#[allow(clippy::too_many_arguments)]
fn mask_rows<R: Rng + ?Sized>(
    tokens: &[TokenId],
    batch: usize,
    prompt_lengths: Option<&[usize]>,
    mask_id: TokenId,
    eps: f32,
    rng: &mut R,
    noisy: &mut [TokenId],
    p_mask: &mut [f32],
) -> Result<(), Error> {
    let seq = rows_of(tokens.len(), batch, "tokens")?;
    check_len("noisy", noisy.len(), tokens.len())?;
    check_len("p_mask", p_mask.len(), batch)?;
    check_eps(eps)?;
    if let Some(lengths) = prompt_lengths {
        check_prompt_lengths(lengths, batch, seq)?;
    }
    for row in 0..batch {
        let t = 1.0 - unit(rng); // (0, 1]
        let p = (1.0 - f64::from(eps)) * t + f64::from(eps);
        p_mask[row] = p as f32;
        let keep = prompt_lengths.map_or(0, |l| l[row]);
        let src = &tokens[row * seq..(row + 1) * seq];
        let dst = &mut noisy[row * seq..(row + 1) * seq];
        dst.copy_from_slice(src);
        for slot in &mut dst[keep..] {
            if unit(rng) < p {
                *slot = mask_id;
            }
        }
    }
    Ok(())
}

/// The masked-diffusion loss of `logits` (`[batch, seq_len, vocab]`, the model's output on
/// `noisy`) against the clean `targets`: Σ over positions where `noisy` holds `mask_id` of the
/// cross-entropy divided by the row's `p_mask`, normalised by `normalization`.
#[allow(clippy::too_many_arguments)]
pub fn diffusion_loss(
    logits: &[f32],
    vocab: usize,
    targets: &[TokenId],
    noisy: &[TokenId],
    p_mask: &[f32],
    batch: usize,
    mask_id: TokenId,
    normalization: LossNormalization<'_>,
) -> Result<f64, Error> {
    let seq = rows_of(targets.len(), batch, "targets")?;
    check_len("noisy", noisy.len(), targets.len())?;
    check_len("p_mask", p_mask.len(), batch)?;
    check_len("logits", logits.len(), targets.len().saturating_mul(vocab))?;
    if let LossNormalization::Sft { prompt_lengths } = normalization {
        check_prompt_lengths(prompt_lengths, batch, seq)?;
    }
    for &t in targets {
        check_id("target", t, vocab)?;
    }
    let mut total = 0.0f64;
    for row in 0..batch {
        let p = f64::from(p_mask[row]);
        if !(p > 0.0 && p <= 1.0) {
            return Err(Error::OutOfRange {
                name: "p_mask",
                range: "(0, 1]",
                value: p,
            });
        }
        let mut row_loss = 0.0f64;
        for i in 0..seq {
            let at = row * seq + i;
            if noisy[at] == mask_id {
                row_loss +=
                    cross_entropy(&logits[at * vocab..(at + 1) * vocab], targets[at] as usize) / p;
            }
        }
        total += match normalization {
            LossNormalization::Pretraining => row_loss,
            LossNormalization::Sft { prompt_lengths } => {
                row_loss / (seq - prompt_lengths[row]) as f64
            }
        };
    }
    Ok(match normalization {
        LossNormalization::Pretraining => total / (batch * seq) as f64,
        LossNormalization::Sft { .. } => total / batch as f64,
    })
}
