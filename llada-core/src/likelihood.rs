//! Monte Carlo estimate of the conditional log-likelihood `log p(answer | prompt)`, the way the
//! LLaDA paper scores multiple-choice benchmarks.

use rand_core::Rng;

use crate::error::{Error, GenerateError};
use crate::params::{LLADA_8B_MASK_ID, check_id};
use crate::predictor::{ForwardRequest, LogitRows, MaskPredictor, TokenId};
use crate::rng::below;
use crate::workspace::{Workspace, WorkspaceSizes, take};

/// Parameters of [`log_likelihood`]; the defaults are the reference's (128 samples in
/// mini-batches of 16, no guidance, LLaDA-8B's mask id). `#[non_exhaustive]`: start from
/// [`Default::default()`] and set fields or chain the `with_*` methods.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct LikelihoodParams {
    /// Total masked samples; a positive multiple of `batch`.
    pub mc_samples: usize,
    /// Rows per forward pass.
    pub batch: usize,
    /// Classifier-free guidance scale; `0` disables.
    pub cfg_scale: f32,
    /// The mask token id.
    pub mask_id: TokenId,
}

impl Default for LikelihoodParams {
    fn default() -> Self {
        Self {
            mc_samples: 128,
            batch: 16,
            cfg_scale: 0.0,
            mask_id: LLADA_8B_MASK_ID,
        }
    }
}

crate::params::setters!(LikelihoodParams {
    with_mc_samples => mc_samples: usize,
    with_batch => batch: usize,
    with_cfg_scale => cfg_scale: f32,
    with_mask_id => mask_id: TokenId,
});

/// Natural log of Σ exp(row), and the cross-entropy of `target` under `row`, in f64.
pub(crate) fn cross_entropy(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return f64::INFINITY;
    }
    let sum: f64 = row.iter().map(|&l| f64::from(libm::expf(l - max))).sum();
    f64::from(max) + libm::log(sum) - f64::from(row[target])
}

/// Estimates `log p(answer | prompt)` with `params.mc_samples` masked samples.
///
/// Each mini-batch draws `k` uniformly in `1..=L` (`L` = answer length); row `i` masks exactly
/// `round(k + i·L/batch)` answer tokens (rounded half to even, wrapped back into `1..=L`), chosen
/// uniformly without replacement. The estimate is minus the mean over mini-batches of
/// Σ over rows of (Σ over masked positions of the cross-entropy, divided by the row's mask
/// ratio), divided by `batch`. Prompt tokens are never masked; with `cfg_scale > 0` the logits
/// are `uncond + (cfg_scale + 1)(cond − uncond)` with the prompt masked in the unconditional
/// input. Neither the prompt nor the answer may contain the mask id.
pub fn log_likelihood<P, R>(
    predictor: &mut P,
    prompt: &[TokenId],
    answer: &[TokenId],
    params: &LikelihoodParams,
    rng: &mut R,
    workspace: Workspace<'_>,
) -> Result<f64, GenerateError<P::Error>>
where
    P: MaskPredictor + ?Sized,
    R: Rng + ?Sized,
{
    let vocab = predictor.vocab_size();
    let (p_len, a_len, batch) = (prompt.len(), answer.len(), params.batch);
    if a_len == 0 {
        return Err(Error::Zero {
            name: "answer length",
        }
        .into());
    }
    if batch == 0 || params.mc_samples == 0 || !params.mc_samples.is_multiple_of(batch) {
        return Err(Error::McSamples {
            mc_samples: params.mc_samples,
            batch,
        }
        .into());
    }
    if !params.cfg_scale.is_finite() || params.cfg_scale < 0.0 {
        return Err(Error::NotFiniteNonNegative {
            name: "cfg_scale",
            value: params.cfg_scale,
        }
        .into());
    }
    check_id("mask_id", params.mask_id, vocab)?;
    for (position, &id) in prompt.iter().chain(answer).enumerate() {
        check_id("token", id, vocab)?;
        if id == params.mask_id {
            return Err(Error::MaskInPrompt { row: 0, position }.into());
        }
    }
    let seq = p_len + a_len;
    let shifted = predictor.shifted_logits();
    if shifted && p_len == 0 {
        return Err(Error::Zero {
            name: "prompt length (a model with shifted logits reads position i from row i - 1)",
        }
        .into());
    }
    let rows_of = LogitRows::new(p_len..seq, shifted);
    if seq > predictor.max_sequence_length() {
        return Err(Error::TooLong {
            length: seq,
            prompt_len: p_len,
            gen_length: a_len,
            max: predictor.max_sequence_length(),
        }
        .into());
    }
    let cfg = params.cfg_scale > 0.0;
    let sizes = WorkspaceSizes::for_likelihood(p_len, a_len, batch, cfg, vocab)?;
    workspace.check(&sizes)?;
    let rows = if cfg { 2 * batch } else { batch };
    let Workspace {
        mut logits,
        mut tokens,
        ..
    } = workspace;
    let logits = take(&mut logits, rows * a_len * vocab);
    let ids = take(&mut tokens, rows * seq);
    let order = take(&mut tokens, a_len);
    let guidance = params.cfg_scale + 1.0;

    let mini_batches = params.mc_samples / batch;
    let mut total = 0.0f64;
    for _ in 0..mini_batches {
        let k = 1 + below(rng, a_len as u64) as usize;
        for row in 0..batch {
            let masked = mask_count(k, row, a_len, batch);
            let x = &mut ids[row * seq..(row + 1) * seq];
            x[..p_len].copy_from_slice(prompt);
            x[p_len..].copy_from_slice(answer);
            for (i, o) in order.iter_mut().enumerate() {
                *o = i as u32;
            }
            // Partial Fisher-Yates: the first `masked` entries are a uniform sample.
            for t in 0..masked {
                let j = t + below(rng, (a_len - t) as u64) as usize;
                order.swap(t, j);
            }
            for &a in &order[..masked] {
                x[p_len + a as usize] = params.mask_id;
            }
        }
        if cfg {
            let (cond, uncond) = ids.split_at_mut(batch * seq);
            uncond.copy_from_slice(cond);
            for row in uncond.chunks_exact_mut(seq) {
                row[..p_len].fill(params.mask_id);
            }
        }
        let request = ForwardRequest::new(ids, rows, seq)
            .and_then(|r| r.with_window(rows_of.window.clone()))
            .map_err(Error::from)?;
        predictor
            .forward(&request, logits)
            .map_err(GenerateError::Predictor)?;

        let (cond, uncond) = logits.split_at_mut(batch * a_len * vocab);
        let mut batch_loss = 0.0f64;
        for row in 0..batch {
            let masked = mask_count(k, row, a_len, batch);
            let ratio = masked as f64 / a_len as f64;
            let mut row_loss = 0.0f64;
            for a in 0..a_len {
                if ids[row * seq + p_len + a] != params.mask_id {
                    continue;
                }
                let at = (row * a_len + rows_of.row(p_len + a)) * vocab;
                let l = &mut cond[at..at + vocab];
                if cfg {
                    for (c, &u) in l.iter_mut().zip(&uncond[at..at + vocab]) {
                        *c = u + guidance * (*c - u);
                    }
                }
                row_loss += cross_entropy(l, answer[a] as usize);
            }
            batch_loss += row_loss / ratio;
        }
        total += batch_loss / batch as f64;
    }
    Ok(-(total / mini_batches as f64))
}

/// Answer tokens masked in `row`: `round(k + row·L/batch)` (half to even, like `torch.round`
/// of the reference's `linspace`), wrapped back into `1..=L`.
fn mask_count(k: usize, row: usize, answer_len: usize, batch: usize) -> usize {
    let x = libm::rint(k as f64 + row as f64 * (answer_len as f64 / batch as f64)) as usize;
    (x - 1) % answer_len + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_counts_spread_over_the_answer_and_wrap() {
        // L = 8, batch 4: k, k+2, k+4, k+6 wrapped into 1..=8.
        assert_eq!([0, 1, 2, 3].map(|r| mask_count(5, r, 8, 4)), [5, 7, 1, 3]);
        // Ties round to even: 1 + 1.5 = 2.5 -> 2.
        assert_eq!(mask_count(1, 1, 3, 2), 2);
        for k in 1..=7 {
            for r in 0..5 {
                assert!((1..=7).contains(&mask_count(k, r, 7, 5)));
            }
        }
    }

    #[test]
    fn cross_entropy_of_a_uniform_row_is_ln_v() {
        let row = [0.0f32; 10];
        assert!((cross_entropy(&row, 3) - 10f64.ln()).abs() < 1e-12);
    }
}
