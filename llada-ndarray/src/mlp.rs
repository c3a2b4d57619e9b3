//! The MLP sub-layer of a block: a SwiGLU, or a mixture of SwiGLU experts (the router's
//! choice, each expert's rows gathered, all experts' products in one parallel run, the
//! weighted outputs added back), with the routing tables a context keeps between calls and
//! the time the mixture layers took.

use llada_core::math::{exp_in_place, max_value};

use crate::config::{Gating, MoeConfig};
use crate::context::{ThreadScratch, grow};
use crate::gemm::{Isa, MatRef, Out, Rhs, gemm, gemm_groups};
use crate::model::{Experts, Swiglu};
use crate::ops::silu_mul;
use crate::parallel::par_rows;
use crate::threads::Pool;

/// Where the mixture-of-experts layers of a context's forward passes spent their time, summed
/// over layers and passes since the context was made (or [`Context::reset_moe_profile`](crate::Context::reset_moe_profile)):
/// the router's product, the choice of experts (softmax, top-k, grouping the rows), gathering
/// each expert's rows, the experts' products (gate and up, SwiGLU, down; the shared expert's
/// included), and adding the weighted outputs back. Zero for dense models.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct MoeProfile {
    /// The router's product.
    pub router: std::time::Duration,
    /// Softmax, top-k and grouping the (token, expert) pairs by expert.
    pub routing: std::time::Duration,
    /// Copying each expert's input rows together.
    pub gather: std::time::Duration,
    /// The experts' gate/up products, SwiGLU and down products.
    pub experts: std::time::Duration,
    /// Adding each token's weighted expert outputs to its residual.
    pub combine: std::time::Duration,
    /// Mixture layers run (one per layer per forward pass).
    pub layers: u64,
    /// Experts that had at least one row, summed over those layers: the experts whose weights
    /// the passes read (of `layers × experts`).
    pub experts_run: u64,
}

/// What the router of a mixture layer decided, and the rows it gathers.
#[derive(Default)]
pub(crate) struct Routes {
    /// Router scores, then probabilities, `[tokens, experts]`.
    scores: Vec<f32>,
    /// Each token's chosen experts, in expert order, `[tokens, k]`.
    expert: Vec<u32>,
    /// Their weights, `[tokens, k]`.
    weight: Vec<f32>,
    /// The row of each (token, choice) among the gathered rows, `[tokens, k]`.
    row: Vec<u32>,
    /// The token of each gathered row, `[tokens · k]`.
    token: Vec<u32>,
    /// Scratch of the top-k selection, `[experts]`.
    order: Vec<u32>,
    /// What the choice ranks (scores, biased as the gating says), `[experts]`.
    choice: Vec<f32>,
    /// Rows per expert, then the next free row of each while rows are handed out.
    rows: Vec<usize>,
    /// First gathered row of each expert, `[experts + 1]`.
    start: Vec<usize>,
    /// The inputs of every (token, choice), grouped by expert, `[tokens · k, d_model]`.
    gathered: Vec<f32>,
    /// The experts' outputs of those rows, `[tokens · k, d_model]`.
    out: Vec<f32>,
}

impl Routes {
    /// Room for the routing of `tokens` tokens through `moe`'s experts (`d_model` wide).
    pub(crate) fn reserve(&mut self, moe: &MoeConfig, tokens: usize, d_model: usize) {
        let (e, k) = (moe.experts, moe.experts_per_token);
        grow(&mut self.scores, tokens * e);
        grow(&mut self.expert, tokens * k);
        grow(&mut self.weight, tokens * k);
        grow(&mut self.row, tokens * k);
        grow(&mut self.token, tokens * k);
        grow(&mut self.rows, e);
        grow(&mut self.order, e);
        grow(&mut self.choice, e);
        grow(&mut self.start, e + 1);
        grow(&mut self.gathered, tokens * k * d_model);
        grow(&mut self.out, tokens * k * d_model);
    }
}

/// `x += down(silu(gate(h)) · up(h))` for `tokens` rows (`gate_up`: scratch of
/// `tokens · 2 · hidden` values).
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_swiglu(
    pool: &Pool<ThreadScratch>,
    isa: Isa,
    swiglu: &Swiglu,
    h: &[f32],
    gate_up: &mut [f32],
    x: &mut [f32],
    tokens: usize,
    d: usize,
) {
    let hidden = swiglu.gate_up.n / 2;
    gemm(
        pool,
        isa,
        MatRef::rows(h, tokens, d, d),
        Rhs::Packed(&swiglu.gate_up),
        Out::new(gate_up, tokens, 2 * hidden, 2 * hidden),
        false,
    );
    par_rows(pool, gate_up, tokens, 2 * hidden, &|_, row| {
        let (gate, up) = row.split_at_mut(hidden);
        silu_mul(isa, gate, up);
    });
    gemm(
        pool,
        isa,
        MatRef::rows(gate_up, tokens, hidden, 2 * hidden),
        Rhs::Packed(&swiglu.down),
        Out::new(x, tokens, d, d),
        true,
    );
}

/// Chooses each token's experts from its router scores (`scores`, `[tokens, experts]`,
/// turned into probabilities in place) by the model's [`Gating`]:
/// - softmax: over every expert in f32, plus the expert bias when the model has one, the `k`
///   largest, weighted by those (biased) probabilities;
/// - sigmoid: per expert in f32; the bias (if any) added only to choose, in `groups` groups
///   (each scored by the sum of its two best, the `used_groups` best kept, the others out),
///   the `k` largest among what is left, weighted by their unbiased scores.
///
/// Ties go to the lower index, NaN ranks before any number (as `torch.topk`). The weights are
/// divided by their sum when `normalize` (plus 10⁻²⁰ for the sigmoid, LLaDA2's) and multiplied
/// by `scale`. The choices are written in expert order (`expert`, `weight`: `[tokens, k]`),
/// the order in which the reference adds the experts' outputs up. `order` and `choice` are
/// scratch of `experts` values: the choice is a selection, O(experts + k log k) per token.
#[allow(clippy::too_many_arguments)]
fn route(
    scores: &mut [f32],
    moe: &MoeConfig,
    bias: Option<&[f32]>,
    order: &mut [u32],
    choice: &mut [f32],
    expert: &mut [u32],
    weight: &mut [f32],
) {
    let (experts, k) = (moe.experts, moe.experts_per_token);
    for ((p, chosen), weights) in scores
        .chunks_exact_mut(experts)
        .zip(expert.chunks_exact_mut(k))
        .zip(weight.chunks_exact_mut(k))
    {
        // What the choice ranks: `choice` (the probabilities, biased as the gating says).
        match moe.gating {
            Gating::Softmax => {
                let sum = exp_in_place(p, max_value(p));
                let inv = 1.0 / sum;
                p.iter_mut().for_each(|v| *v *= inv);
                if let Some(bias) = bias {
                    p.iter_mut().zip(bias).for_each(|(v, &b)| *v += b);
                }
                choice.copy_from_slice(p);
            }
            Gating::Sigmoid {
                groups,
                used_groups,
            } => {
                p.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
                choice.copy_from_slice(p);
                if let Some(bias) = bias {
                    choice.iter_mut().zip(bias).for_each(|(v, &b)| *v += b);
                }
                if groups > 1 && used_groups < groups {
                    keep_best_groups(choice, groups, used_groups, order);
                }
            }
        }
        let rank = |v: f32| if v.is_nan() { f32::INFINITY } else { v };
        let better = |a: &u32, b: &u32| {
            let (x, y) = (choice[*a as usize], choice[*b as usize]);
            rank(y)
                .total_cmp(&rank(x))
                .then_with(|| y.is_nan().cmp(&x.is_nan()))
                .then(a.cmp(b))
        };
        for (i, o) in order.iter_mut().enumerate() {
            *o = i as u32;
        }
        if k < experts {
            order.select_nth_unstable_by(k - 1, better);
        }
        chosen.copy_from_slice(&order[..k]);
        chosen.sort_unstable();
        for (w, &e) in weights.iter_mut().zip(chosen.iter()) {
            *w = p[e as usize];
        }
        let sigmoid = matches!(moe.gating, Gating::Sigmoid { .. });
        if moe.normalize_weights && (k > 1 || !sigmoid) {
            let total: f32 = weights.iter().sum();
            let total = if sigmoid { total + 1e-20 } else { total };
            weights.iter_mut().for_each(|w| *w /= total);
        }
        if moe.weight_scale != 1.0 {
            weights.iter_mut().for_each(|w| *w *= moe.weight_scale);
        }
    }
}

/// Group-limited choice: the experts of `choice` in `groups` equal groups, each scored by the
/// sum of its two largest values; all but the `used` best groups (the lower index first among
/// equals) are set to negative infinity. `picked` is scratch of at least `groups` values.
fn keep_best_groups(choice: &mut [f32], groups: usize, used: usize, picked: &mut [u32]) {
    let size = choice.len() / groups;
    let score = |g: usize| {
        let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for &v in &choice[g * size..(g + 1) * size] {
            if v > first {
                second = first;
                first = v;
            } else if v > second {
                second = v;
            }
        }
        first + second
    };
    let picked = &mut picked[..groups];
    picked.fill(0);
    for _ in 0..used {
        let mut best: Option<(f32, usize)> = None;
        for (g, _) in picked.iter().enumerate().filter(|(_, p)| **p == 0) {
            let s = score(g);
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, g));
            }
        }
        if let Some((_, g)) = best {
            picked[g] = 1;
        }
    }
    for (g, _) in picked.iter().enumerate().filter(|(_, p)| **p == 0) {
        choice[g * size..(g + 1) * size].fill(f32::NEG_INFINITY);
    }
}

/// `x += Σ weight · expert(h)` over each token's chosen experts (plus the shared expert):
/// the router's choice, the rows of each expert gathered together, each expert's SwiGLU run
/// on its rows (all experts' products in one parallel run), and the weighted outputs added
/// back to their tokens.
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_experts(
    pool: &Pool<ThreadScratch>,
    isa: Isa,
    moe: &MoeConfig,
    m: &Experts,
    (h, x, gate_up): (&[f32], &mut [f32], &mut [f32]),
    r: &mut Routes,
    profile: &mut MoeProfile,
    tokens: usize,
    d: usize,
) {
    let (n_experts, k, width) = (moe.experts, moe.experts_per_token, moe.expert_hidden_size);
    let mut clock = std::time::Instant::now();
    let mut lap = |phase: &mut std::time::Duration| {
        let now = std::time::Instant::now();
        *phase += now - clock;
        clock = now;
    };
    profile.layers += 1;
    gemm(
        pool,
        isa,
        MatRef::rows(h, tokens, d, d),
        Rhs::Packed(&m.router),
        Out::new(&mut r.scores, tokens, n_experts, n_experts),
        false,
    );
    lap(&mut profile.router);
    let slots = tokens * k;
    route(
        &mut r.scores[..tokens * n_experts],
        moe,
        m.bias.as_deref(),
        &mut r.order[..n_experts],
        &mut r.choice[..n_experts],
        &mut r.expert[..slots],
        &mut r.weight[..slots],
    );
    // Rows per expert, their first rows, and each (token, choice)'s row.
    let (rows, start) = (&mut r.rows[..n_experts], &mut r.start[..=n_experts]);
    rows.fill(0);
    for &e in &r.expert[..slots] {
        rows[e as usize] += 1;
    }
    profile.experts_run += rows.iter().filter(|&&n| n > 0).count() as u64;
    start[0] = 0;
    for e in 0..n_experts {
        start[e + 1] = start[e] + rows[e];
    }
    let most_rows = rows.iter().copied().max().unwrap_or(0);
    rows.copy_from_slice(&start[..n_experts]);
    for (slot, &e) in r.expert[..slots].iter().enumerate() {
        let row = rows[e as usize];
        rows[e as usize] += 1;
        r.row[slot] = row as u32;
        r.token[row] = (slot / k) as u32;
    }
    lap(&mut profile.routing);
    let token = &r.token;
    par_rows(pool, &mut r.gathered, slots, d, &|row, out| {
        let t = token[row] as usize;
        out.copy_from_slice(&h[t * d..(t + 1) * d]);
    });
    lap(&mut profile.gather);
    // Each expert's gate and up projections of its rows, the SwiGLU, its down projection.
    let start = &r.start;
    let gathered = &r.gathered;
    let hidden = Out::new(gate_up, slots, 2 * width, 2 * width);
    gemm_groups(
        pool,
        isa,
        n_experts,
        (d, 2 * width),
        most_rows,
        &|e| {
            let (first, len) = (start[e], start[e + 1] - start[e]);
            (
                MatRef::rows(&gathered[first * d..(first + len) * d], len, d, d),
                Rhs::Packed(&m.experts[e].gate_up),
                hidden.sub(first, 0, len, 2 * width),
            )
        },
        false,
    );
    par_rows(pool, gate_up, slots, 2 * width, &|_, row| {
        let (gate, up) = row.split_at_mut(width);
        silu_mul(isa, gate, up);
    });
    let activated = &*gate_up;
    let out = Out::new(&mut r.out, slots, d, d);
    gemm_groups(
        pool,
        isa,
        n_experts,
        (width, d),
        most_rows,
        &|e| {
            let (first, len) = (start[e], start[e + 1] - start[e]);
            (
                MatRef::rows(
                    &activated[first * 2 * width..(first + len) * 2 * width],
                    len,
                    width,
                    2 * width,
                ),
                Rhs::Packed(&m.experts[e].down),
                out.sub(first, 0, len, d),
            )
        },
        false,
    );
    // The shared expert, on every token.
    if let Some(shared) = &m.shared {
        add_swiglu(pool, isa, shared, h, gate_up, x, tokens, d);
    }
    lap(&mut profile.experts);
    // Each token's weighted outputs, added to its residual in expert order.
    let (expert_out, row, weight) = (&r.out, &r.row, &r.weight);
    par_rows(pool, x, tokens, d, &|t, x| {
        for j in 0..k {
            let (slot, w) = (row[t * k + j] as usize, weight[t * k + j]);
            let y = &expert_out[slot * d..(slot + 1) * d];
            x.iter_mut().zip(y).for_each(|(x, &y)| *x += w * y);
        }
    });
    lap(&mut profile.combine);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The top-k of the router: the largest probabilities, the lower index among equals,
    /// in expert order, weights not renormalised unless asked; every expert when k is all.
    #[test]
    fn routing_takes_the_k_largest_in_expert_order() {
        let route_with =
            |logits: &[f32], k: usize, bias: Option<&[f32]>, normalize: bool, gating| {
                let e = logits.len();
                let moe = MoeConfig {
                    experts: e,
                    experts_per_token: k,
                    expert_hidden_size: 1,
                    shared_expert_hidden_size: None,
                    expert_bias: bias.is_some(),
                    normalize_weights: normalize,
                    gating,
                    weight_scale: 1.0,
                    layers: None,
                };
                let mut scores = logits.to_vec();
                let (mut order, mut choice) = (vec![0; e], vec![0.0; e]);
                let (mut expert, mut weight) = (vec![0; k], vec![0.0; k]);
                route(
                    &mut scores,
                    &moe,
                    bias,
                    &mut order,
                    &mut choice,
                    &mut expert,
                    &mut weight,
                );
                (expert, weight, scores)
            };
        let run = |logits: &[f32], k: usize, bias: Option<&[f32]>, normalize: bool| {
            route_with(logits, k, bias, normalize, Gating::Softmax)
        };
        let (expert, weight, p) = run(&[0.0, 2.0, 1.0, 2.0, -1.0], 2, None, false);
        assert_eq!(expert, [1, 3], "the tie goes to both, in index order");
        assert_eq!(weight, [p[1], p[3]]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let (expert, _, _) = run(&[0.0, 2.0, 2.0, 2.0], 2, None, false);
        assert_eq!(expert, [1, 2], "among equals the lower indices");
        let (expert, weight, _) = run(&[3.0, 1.0, 2.0], 2, None, true);
        assert_eq!(expert, [0, 2]);
        assert!((weight.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let (expert, _, _) = run(&[3.0, 1.0, 2.0], 3, None, false);
        assert_eq!(expert, [0, 1, 2]);
        // The bias counts in the choice and stays in the weights.
        let (expert, weight, p) = run(&[3.0, 1.0, 2.0], 1, Some(&[0.0, 0.9, 0.0]), false);
        assert_eq!(expert, [1]);
        assert_eq!(weight, [p[1]]);
        assert!(p[1] > 0.9);

        // LLaDA2's sigmoid routing: the bias chooses, the unbiased scores weigh; groups of
        // two scored by their sum, one group kept.
        let groups = Gating::Sigmoid {
            groups: 2,
            used_groups: 1,
        };
        let logits = [2.0, -1.0, 1.0, 1.5];
        let (expert, weight, p) = route_with(&logits, 2, Some(&[0.0, 0.0, 0.0, 0.0]), true, groups);
        assert_eq!(
            expert,
            [2, 3],
            "group 1 (0.73 + 0.82) beats group 0 (0.88 + 0.27)"
        );
        let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
        assert!((p[0] - sigmoid(2.0)).abs() < 1e-6);
        let total = sigmoid(1.0) + sigmoid(1.5);
        assert!((weight[0] - sigmoid(1.0) / total).abs() < 1e-6);
        let bias = [0.0, 5.0, 0.0, 0.0];
        let (expert, weight, _) = route_with(&logits, 2, Some(&bias), true, groups);
        assert_eq!(expert, [0, 1], "the bias moves the choice to group 0");
        let total = sigmoid(2.0) + sigmoid(-1.0);
        assert!(
            (weight[1] - sigmoid(-1.0) / total).abs() < 1e-6,
            "not the weight"
        );
    }
}
