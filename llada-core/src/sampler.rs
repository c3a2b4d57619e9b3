//! One position at a time: the proposed token (argmax or Gumbel-max, with optional top-k/top-p)
//! and its confidence under the chosen [`Remasking`] strategy.

use core::cmp::Ordering;

use rand_core::Rng;

pub(crate) use crate::math::{LANES, exp_f32, max_value};
use crate::params::{CommitRule, GenerateParams, Remasking};
use crate::rng::{open01, unit};

/// Index of the first maximum (`torch.argmax` semantics for ties). NaN never wins; a row with
/// no comparable value gives 0.
pub(crate) fn argmax(row: &[f32]) -> usize {
    let max = max_value(row);
    row.iter().position(|&v| v == max).unwrap_or(0)
}

/// Σ exp(l − max) over a row, lane-wise in f32 per chunk and across chunks in f64.
pub(crate) fn sum_exp(row: &[f32], max: f32) -> f64 {
    let mut total = 0.0f64;
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut lanes = [0.0f32; LANES];
        for (s, &v) in lanes.iter_mut().zip(chunk) {
            *s = exp_f32(v - max);
        }
        total += f64::from(lanes.iter().sum::<f32>());
    }
    total
        + tail
            .iter()
            .map(|&v| f64::from(exp_f32(v - max)))
            .sum::<f64>()
}

/// (Σ e, Σ e·d) with `d = l − max`, `e = exp(d)`; terms with `e = 0` add nothing.
fn sum_exp_weighted(row: &[f32], max: f32) -> (f64, f64) {
    let mut sum = 0.0f64;
    let mut weighted = 0.0f64;
    for &v in row {
        let d = v - max;
        let e = exp_f32(d);
        if e > 0.0 {
            sum += f64::from(e);
            weighted += f64::from(e) * f64::from(d);
        }
    }
    (sum, weighted)
}

/// Descending order for floats, NaN last.
fn descending(a: &f32, b: &f32) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => b.partial_cmp(a).unwrap_or(Ordering::Equal),
    }
}

/// The smallest logit still eligible under top-k and top-p, or negative infinity when neither
/// filter removes anything. `scratch` holds at least one vocabulary row.
fn filter_threshold(row: &[f32], top_k: usize, top_p: f32, scratch: &mut [f32]) -> f32 {
    let vocab = row.len();
    let mut threshold = f32::NEG_INFINITY;
    let scratch = &mut scratch[..vocab];
    scratch.copy_from_slice(row);
    // Candidates after top-k live in scratch[..kept].
    let mut kept = vocab;
    if top_k > 0 && top_k < vocab {
        scratch.select_nth_unstable_by(top_k - 1, descending);
        threshold = scratch[top_k - 1];
        kept = top_k;
    }
    if top_p < 1.0 {
        let candidates = &mut scratch[..kept];
        candidates.sort_unstable_by(descending);
        let max = candidates[0];
        if max.is_finite() {
            let total = sum_exp(candidates, max);
            let target = f64::from(top_p) * total;
            let mut cumulative = 0.0;
            for &l in candidates.iter() {
                cumulative += f64::from(exp_f32(l - max));
                if cumulative >= target {
                    threshold = threshold.max(l);
                    break;
                }
            }
        }
    }
    threshold
}

/// Proposes a token for one position and scores it.
///
/// `row` is the position's logits (already combined for classifier-free guidance); it is
/// modified in place (EOS and EOT set to negative infinity as the options ask). `scratch` holds
/// one vocabulary row when top-k/top-p filtering is on, else it may be empty.
pub(crate) fn propose<R: Rng + ?Sized>(
    row: &mut [f32],
    params: &GenerateParams,
    rng: &mut R,
    scratch: &mut [f32],
) -> (u32, f64) {
    if params.logits_eos_inf {
        row[params.eos_id as usize] = f32::NEG_INFINITY;
    }
    if matches!(params.commit, CommitRule::Timesteps(_)) {
        return propose_dream(row, params, rng, scratch);
    }
    if matches!(params.commit, CommitRule::Llada2(_)) && params.temperature > 0.0 {
        return propose_llada2(row, params, rng, scratch);
    }
    let (token, mut max) = if params.temperature > 0.0 {
        (gumbel_argmax(row, params, rng, scratch), f32::NAN)
    } else {
        let max = max_value(row);
        (row.iter().position(|&v| v == max).unwrap_or(0), max)
    };
    // The entropy-bounded rule ranks and counts by entropy, whatever the remasking.
    let strategy = if matches!(params.commit, CommitRule::EntropyBounded(_)) {
        Remasking::Entropy
    } else {
        params.remasking
    };
    if strategy == Remasking::Random {
        return (token as u32, unit(rng));
    }
    if params.confidence_eos_eot_inf {
        let (eos, eot) = (params.eos_id as usize, params.eot_id as usize);
        if strategy == Remasking::LowConfidence && (token == eos || token == eot) {
            return (token as u32, 0.0);
        }
        row[eos] = f32::NEG_INFINITY;
        row[eot] = f32::NEG_INFINITY;
        max = f32::NAN;
    }
    if max.is_nan() {
        max = max_value(row);
    }
    if !max.is_finite() {
        return (token as u32, 0.0);
    }
    let confidence = match strategy {
        Remasking::LowConfidence => f64::from(exp_f32(row[token] - max)) / sum_exp(row, max),
        Remasking::Margin => margin(row, max, sum_exp(row, max)),
        // Σ p ln p = Σ e·d / s − ln s. (Origin needs the timesteps rule, which proposes
        // through `propose_dream`; it never gets here.)
        Remasking::Entropy | Remasking::Random | Remasking::Origin => {
            let (sum, weighted) = sum_exp_weighted(row, max);
            weighted / sum - libm::log(sum)
        }
    };
    (token as u32, confidence)
}

/// Top-1 minus top-2 probability of a row whose largest logit is `max` and whose
/// `Σ exp(l − max)` is `sum` (0 when the two largest are equal).
fn margin(row: &[f32], max: f32, sum: f64) -> f64 {
    let top = argmax(row);
    let second = row
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != top)
        .fold(f32::NEG_INFINITY, |m, (_, &v)| m.max(v));
    (1.0 - f64::from(exp_f32(second - max))) / sum
}

/// Dream's `sample_tokens`: the logits divided by the temperature, filtered by top-p and then
/// top-k (at every temperature), and the token and its confidence taken from the softmax of
/// what is left: the argmax at temperature 0, else a draw; the probability of that token, the
/// top-1 minus top-2 probability, or `Σ p·ln(p + 10⁻¹⁰)` (Dream's negative entropy, with its
/// epsilon).
fn propose_dream<R: Rng + ?Sized>(
    row: &mut [f32],
    params: &GenerateParams,
    rng: &mut R,
    scratch: &mut [f32],
) -> (u32, f64) {
    if params.temperature > 0.0 {
        row.iter_mut().for_each(|l| *l /= params.temperature);
    }
    if params.top_p < 1.0 || params.top_k > 0 {
        let threshold = dream_filter_threshold(row, params.top_k, params.top_p, scratch);
        row.iter_mut()
            .filter(|l| **l < threshold)
            .for_each(|l| *l = f32::NEG_INFINITY);
    }
    let max = max_value(row);
    let token = if params.temperature > 0.0 {
        gumbel_max(row, 1.0, f32::NEG_INFINITY, rng)
    } else {
        argmax(row)
    };
    match params.remasking {
        Remasking::Random => return (token as u32, unit(rng)),
        // Origin's coins decide what is committed: no confidence is needed.
        Remasking::Origin => return (token as u32, 0.0),
        _ => {}
    }
    if !max.is_finite() {
        return (token as u32, 0.0);
    }
    let sum = sum_exp(row, max);
    let confidence = match params.remasking {
        Remasking::Margin => margin(row, max, sum),
        Remasking::Entropy => row
            .iter()
            .map(|&l| {
                let p = f64::from(exp_f32(l - max)) / sum;
                if p > 0.0 {
                    p * libm::log(p + 1e-10)
                } else {
                    0.0
                }
            })
            .sum(),
        _ => f64::from(exp_f32(row[token] - max)) / sum,
    };
    (token as u32, confidence)
}

/// LLaDA2's `_sample_with_temperature_topk_topp` at temperature > 0: the logits divided by
/// the temperature, the `top_k` largest kept, then among those the smallest set whose
/// preceding cumulative probability does not exceed `top_p`, a draw from the softmax of what
/// is left, and that token's probability there as its confidence.
fn propose_llada2<R: Rng + ?Sized>(
    row: &mut [f32],
    params: &GenerateParams,
    rng: &mut R,
    scratch: &mut [f32],
) -> (u32, f64) {
    if params.temperature != 1.0 {
        row.iter_mut().for_each(|l| *l /= params.temperature);
    }
    if params.top_p < 1.0 || params.top_k > 0 {
        let threshold = llada2_filter_threshold(row, params.top_k, params.top_p, scratch);
        row.iter_mut()
            .filter(|l| **l < threshold)
            .for_each(|l| *l = f32::NEG_INFINITY);
    }
    let max = max_value(row);
    let token = gumbel_max(row, 1.0, f32::NEG_INFINITY, rng);
    if !max.is_finite() {
        return (token as u32, 0.0);
    }
    let confidence = f64::from(exp_f32(row[token] - max)) / sum_exp(row, max);
    (token as u32, confidence)
}

/// The smallest logit LLaDA2's filters keep: the `top_k` largest first (ties at the cut
/// kept), then, sorted descending, every one whose preceding cumulative probability (over
/// the survivors) does not exceed `top_p`. `scratch` holds a vocabulary row.
fn llada2_filter_threshold(row: &[f32], top_k: usize, top_p: f32, scratch: &mut [f32]) -> f32 {
    let vocab = row.len();
    let scratch = &mut scratch[..vocab];
    scratch.copy_from_slice(row);
    let mut kept = vocab;
    if top_k > 0 && top_k < vocab {
        scratch.select_nth_unstable_by(top_k - 1, descending);
        let cut = scratch[top_k - 1];
        if top_p >= 1.0 {
            // Every logit tied with the k-th survives, as `logits < min_values` keeps them.
            return cut;
        }
        kept = 0;
        for &l in row.iter().filter(|&&l| l >= cut) {
            scratch[kept] = l;
            kept += 1;
        }
    } else if top_p >= 1.0 {
        return f32::NEG_INFINITY;
    }
    let candidates = &mut scratch[..kept];
    candidates.sort_unstable_by(descending);
    let max = candidates[0];
    if !max.is_finite() {
        return f32::NEG_INFINITY;
    }
    let total = sum_exp(candidates, max);
    let mut cumulative = 0.0f64;
    for &l in candidates.iter() {
        cumulative += f64::from(exp_f32(l - max));
        if cumulative / total > f64::from(top_p) {
            return l;
        }
    }
    candidates[kept - 1]
}

/// The smallest logit Dream's filters keep: top-p first (sorted descending, every token whose
/// preceding cumulative probability does not exceed `top_p`, so the one that crosses it stays),
/// then the `top_k` largest of those. Ties at the cut are kept. `scratch` holds a vocabulary
/// row.
fn dream_filter_threshold(row: &[f32], top_k: usize, top_p: f32, scratch: &mut [f32]) -> f32 {
    let vocab = row.len();
    let scratch = &mut scratch[..vocab];
    scratch.copy_from_slice(row);
    // How many of the largest survive.
    let mut kept = vocab;
    if top_p < 1.0 {
        scratch.sort_unstable_by(descending);
        let max = scratch[0];
        if max.is_finite() {
            let total = sum_exp(scratch, max);
            let mut cumulative = 0.0f64;
            for (i, &l) in scratch.iter().enumerate() {
                cumulative += f64::from(exp_f32(l - max));
                if cumulative / total > f64::from(top_p) {
                    kept = i + 1;
                    break;
                }
            }
        }
    } else if top_k > 0 && top_k < vocab {
        scratch.select_nth_unstable_by(top_k - 1, descending);
        return scratch[top_k - 1];
    }
    if top_k > 0 {
        kept = kept.min(top_k);
    }
    if kept >= vocab {
        return f32::NEG_INFINITY;
    }
    scratch[kept - 1]
}

/// Gumbel-max sampling: the argmax of `exp(l) / (−ln u)^T`, computed in f64 in log space
/// (`l − T·ln(−ln u)`, the same order without overflow), over the ids that survive top-k/top-p.
fn gumbel_argmax<R: Rng + ?Sized>(
    row: &[f32],
    params: &GenerateParams,
    rng: &mut R,
    scratch: &mut [f32],
) -> usize {
    let threshold = if params.filters_vocabulary() {
        filter_threshold(row, params.top_k, params.top_p, scratch)
    } else {
        f32::NEG_INFINITY
    };
    gumbel_max(row, f64::from(params.temperature), threshold, rng)
}

/// The argmax of `l − T·ln(−ln u)` over the ids whose logit reaches `threshold`.
fn gumbel_max<R: Rng + ?Sized>(
    row: &[f32],
    temperature: f64,
    threshold: f32,
    rng: &mut R,
) -> usize {
    let mut best = f64::NEG_INFINITY;
    let mut index = argmax(row);
    for (i, &l) in row.iter().enumerate() {
        // Ids below the threshold (and -inf logits) cannot win; they draw no noise.
        if l < threshold || l.is_nan() || l == f32::NEG_INFINITY {
            continue;
        }
        let u = open01(rng);
        let score = f64::from(l) - temperature * libm::log(-libm::log(u));
        if score > best {
            best = score;
            index = i;
        }
    }
    index
}

#[cfg(test)]
mod tests {
    use rand_core::SeedableRng;

    use super::*;
    use crate::rng::SamplerRng;

    #[test]
    fn llada2_filters_keep_the_top_k_then_the_top_p_of_those() {
        let row = [1.0f32, 3.0, 0.0, 2.0, 2.0];
        let mut scratch = [0.0f32; 5];
        // Top-2 alone: the cut is the second largest, and its tie survives.
        assert_eq!(llada2_filter_threshold(&row, 2, 1.0, &mut scratch), 2.0);
        assert_eq!(
            llada2_filter_threshold(&row, 0, 1.0, &mut scratch),
            f32::NEG_INFINITY
        );
        // Top-3 keeps 3, 2, 2 (the tie at the cut too). Their softmax: 0.576, 0.212, 0.212:
        // with top-p 0.5 the first crosses it and alone stays; with 0.7 the second joins.
        assert_eq!(llada2_filter_threshold(&row, 3, 0.5, &mut scratch), 3.0);
        assert_eq!(llada2_filter_threshold(&row, 3, 0.7, &mut scratch), 2.0);
        // Top-p alone, over the whole row.
        assert_eq!(llada2_filter_threshold(&row, 0, 0.3, &mut scratch), 3.0);
    }

    fn params() -> GenerateParams {
        GenerateParams {
            eos_id: 3,
            eot_id: 4,
            ..GenerateParams::default()
        }
    }

    #[test]
    fn exp_f32_is_accurate_to_about_an_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let exact = libm::exp(f64::from(x));
            worst = worst.max(((f64::from(exp_f32(x)) - exact) / exact).abs());
            x += 0.001_37;
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn sums_cover_the_tail() {
        let row: [f32; 37] = core::array::from_fn(|i| i as f32 * -0.1);
        let exact: f64 = row.iter().map(|&l| libm::exp(f64::from(l))).sum();
        assert!((sum_exp(&row, 0.0) - exact).abs() < 1e-6);
        assert_eq!(max_value(&row), 0.0);
        assert_eq!(max_value(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, f32::NAN]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
    }

    #[test]
    fn low_confidence_is_the_softmax_probability_of_the_argmax() {
        let mut rng = SamplerRng::seed_from_u64(1);
        let mut row = [0.0f32, 1.0, 2.0, 0.5, -1.0];
        let (token, confidence) = propose(&mut row, &params(), &mut rng, &mut []);
        let z: f64 = row.iter().map(|&l| (f64::from(l) - 2.0).exp()).sum();
        assert_eq!(token, 2);
        assert!((confidence - 1.0 / z).abs() < 1e-7);
    }

    #[test]
    fn eos_and_eot_get_zero_confidence_and_eos_can_be_forbidden() {
        let mut rng = SamplerRng::seed_from_u64(1);
        let mut p = params();
        p.confidence_eos_eot_inf = true;
        let mut row = [0.0f32, 1.0, 2.0, 5.0, 0.0];
        let (token, confidence) = propose(&mut row, &p, &mut rng, &mut []);
        assert_eq!((token, confidence), (3, 0.0));
        p.logits_eos_inf = true;
        let (token, confidence) = propose(&mut row, &p, &mut rng, &mut []);
        assert_eq!(token, 2);
        let z: f64 = [0.0f64, 1.0, 2.0].iter().map(|l| (l - 2.0).exp()).sum();
        assert!((confidence - 1.0 / z).abs() < 1e-7);
    }

    #[test]
    fn margin_and_entropy() {
        let mut rng = SamplerRng::seed_from_u64(1);
        let mut p = params();
        p.remasking = Remasking::Margin;
        let mut row = [0.0f32, 2.0_f32.ln(), 0.0, 0.0, 0.0];
        // Probabilities 1/6, 2/6, 1/6, 1/6, 1/6.
        let (_, margin) = propose(&mut row, &p, &mut rng, &mut []);
        assert!((margin - 1.0 / 6.0).abs() < 1e-7);
        p.remasking = Remasking::Entropy;
        let (_, neg_entropy) = propose(&mut row, &p, &mut rng, &mut []);
        let expected =
            4.0 * (1.0f64 / 6.0) * (1.0f64 / 6.0).ln() + (2.0 / 6.0) * (2.0f64 / 6.0).ln();
        assert!(
            (neg_entropy - expected).abs() < 1e-6,
            "{neg_entropy} vs {expected}"
        );
    }

    #[test]
    fn sampling_follows_the_distribution_and_respects_top_k_and_top_p() {
        let mut rng = SamplerRng::seed_from_u64(3);
        let mut p = params();
        p.temperature = 1.0;
        // Probabilities proportional to 1, 2, 4, 8, 1 (the last is id 4).
        let base = [0.0f32, 2.0_f32.ln(), 4.0_f32.ln(), 8.0_f32.ln(), 0.0];
        let mut scratch = [0.0f32; 5];
        let mut counts = [0u32; 5];
        let n = 32_000;
        for _ in 0..n {
            let mut row = base;
            counts[propose(&mut row, &p, &mut rng, &mut scratch).0 as usize] += 1;
        }
        for (i, w) in [1.0, 2.0, 4.0, 8.0, 1.0].iter().enumerate() {
            let expected = f64::from(n) * w / 16.0;
            assert!(
                (f64::from(counts[i]) - expected).abs() < 5.0 * expected.sqrt() + 10.0,
                "{counts:?}"
            );
        }
        p.top_k = 2;
        for _ in 0..2_000 {
            let mut row = base;
            let t = propose(&mut row, &p, &mut rng, &mut scratch).0;
            assert!(t == 2 || t == 3);
        }
        p.top_k = 0;
        p.top_p = 0.5; // the top token alone carries 8/16
        for _ in 0..2_000 {
            let mut row = base;
            assert_eq!(propose(&mut row, &p, &mut rng, &mut scratch).0, 3);
        }
        p.top_p = 0.6; // needs the two largest
        for _ in 0..2_000 {
            let mut row = base;
            let t = propose(&mut row, &p, &mut rng, &mut scratch).0;
            assert!(t == 2 || t == 3);
        }
    }
}
