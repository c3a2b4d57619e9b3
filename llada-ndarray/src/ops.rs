//! Row-wise operations of the block: RMSNorm, rotary embedding, SwiGLU, softmax. All in f32,
//! written over ndarray views so each reads as the formula it implements.

use std::ops::Range;

use llada_core::math::{exp_f32, exp_in_place, max_value};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2, Axis, Zip};

use crate::config::Config;
use crate::gemm::Isa;
use crate::parallel::par_rows;
use crate::threads::Pool;

/// Runs `f` compiled for AVX2 + FMA when `isa` has them. The row operations are plain loops
/// that the compiler vectorises; without this they get only the x86-64 baseline's SSE2, and
/// the softmax of the attention scores (an exp per score) ran at a third of the speed.
/// No fused multiply-adds are formed (Rust does not contract `a * b + c`), so the results are
/// the same bits either way.
#[inline(always)]
fn wide<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has AVX2 and FMA (an `Isa` with them exists only when it does).
        return unsafe { run(f) };
    }
    let _ = isa;
    f()
}

/// `out = x · rsqrt(mean(x²) + eps) · weight`, row by row (`x`, `out`: `[rows, d]`).
pub(crate) fn rms_norm(
    x: ArrayView2<'_, f32>,
    weight: &[f32],
    eps: f32,
    mut out: ArrayViewMut2<'_, f32>,
) {
    let weight = ArrayView1::from(weight);
    Zip::from(x.rows())
        .and(out.rows_mut())
        .for_each(|x, mut out| {
            let mean_square = sum_of_squares(x) / x.len() as f32;
            let scale = 1.0 / (mean_square + eps).sqrt();
            Zip::from(&mut out)
                .and(&x)
                .and(&weight)
                .for_each(|o, &v, &w| *o = v * scale * w);
        });
}

/// `x ← x · rsqrt(mean(x²) + eps) · weight` in place (one head's queries or keys).
pub(crate) fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let mean_square = sum_of_squares(ArrayView1::from(&*x)) / x.len() as f32;
    let scale = 1.0 / (mean_square + eps).sqrt();
    for (v, &w) in x.iter_mut().zip(weight) {
        *v = *v * scale * w;
    }
}

/// Σ v², in lanes so that it vectorises.
fn sum_of_squares(x: ArrayView1<'_, f32>) -> f32 {
    match x.as_slice() {
        Some(s) => {
            let mut lanes = [0.0f32; 16];
            let chunks = s.chunks_exact(16);
            let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
            for c in chunks {
                for (l, v) in lanes.iter_mut().zip(c) {
                    *l += v * v;
                }
            }
            lanes.iter().sum::<f32>() + tail
        }
        None => x.iter().map(|v| v * v).sum(),
    }
}

/// Rotates one head vector in place (rotate-half convention): for `i < d/2`,
/// `(x[i], x[i + d/2]) ← (x[i]·cos − x[i + d/2]·sin, x[i + d/2]·cos + x[i]·sin)`.
pub(crate) fn rope(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = head.len() / 2;
    let (first, second) = head.split_at_mut(half);
    for (((a, b), &c), &s) in first.iter_mut().zip(second.iter_mut()).zip(cos).zip(sin) {
        let (x1, x2) = (*a, *b);
        *a = x1 * c - x2 * s;
        *b = x2 * c + x1 * s;
    }
}

/// `gate ← silu(gate) · up`, the SwiGLU of LLaDA's MLP (slices, so the loop vectorises).
pub(crate) fn silu_mul(isa: Isa, gate: &mut [f32], up: &[f32]) {
    wide(
        isa,
        #[inline(always)]
        || {
            for (g, &u) in gate.iter_mut().zip(up) {
                *g = *g / (1.0 + exp_f32(-*g)) * u;
            }
        },
    );
}

/// In-place softmax of every row of `scores` after scaling by `scale` and hiding the keys
/// whose `key_mask` entry is 0.
pub(crate) fn masked_softmax(
    isa: Isa,
    mut scores: ArrayViewMut2<'_, f32>,
    scale: f32,
    key_mask: Option<&[u8]>,
    causal: Option<(usize, usize)>,
) {
    wide(
        isa,
        #[inline(always)]
        || {
            for (i, mut row) in scores.axis_iter_mut(Axis(0)).enumerate() {
                let Some(row) = row.as_slice_mut() else {
                    continue;
                };
                // Block-causal attention: row i (position first + i) sees the keys up to the
                // end of its block; the others weigh nothing.
                let row = match causal {
                    Some((first, block)) => {
                        let visible = ((first + i) / block + 1) * block;
                        let (seen, hidden) = row.split_at_mut(visible.min(row.len()));
                        hidden.fill(0.0);
                        seen
                    }
                    None => row,
                };
                match key_mask {
                    Some(mask) => {
                        for (s, &m) in row.iter_mut().zip(mask) {
                            *s = if m != 0 {
                                *s * scale
                            } else {
                                f32::NEG_INFINITY
                            };
                        }
                    }
                    None => row.iter_mut().for_each(|s| *s *= scale),
                }
                let max = max_value(row);
                if max == f32::NEG_INFINITY {
                    // Every key it sees is padding (block-causal attention behind a left
                    // padding longer than a block): a padding position, whose output no real
                    // position reads; zeros keep NaN out of the keys and values it passes on.
                    row.fill(0.0);
                    continue;
                }
                let sum = exp_in_place(row, max);
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|s| *s *= inv);
            }
        },
    );
}

/// `out = rms_norm(x)` row by row across the pool.
pub(crate) fn par_rms_norm<S: Send>(
    pool: &Pool<S>,
    x: &[f32],
    weight: &[f32],
    eps: f32,
    out: &mut [f32],
    rows: usize,
    d: usize,
) {
    par_rows(pool, out, rows, d, &|r, row| {
        let src = ArrayView2::from_shape((1, d), &x[r * d..(r + 1) * d]).expect("one row");
        let dst = ArrayViewMut2::from_shape((1, d), row).expect("one row");
        rms_norm(src, weight, eps, dst);
    });
}

/// The projections' biases (when the model has them: `bias` as wide as a row) added to, each
/// query and key head normalised (when the model has per-head norms: `qk_norm`, the query's
/// and the key's weights), and the rotary embedding applied to the queries and keys (not the
/// values) of, `tokens` rows of `qkv` (`[tokens, (n_heads + 2 n_kv_heads) · head_dim]`): the
/// computed `positions` of each batch row, one after the other. The first `rotary_dim`
/// dimensions of each head rotate.
#[allow(clippy::too_many_arguments)]
pub(crate) fn par_bias_rope<S: Send>(
    pool: &Pool<S>,
    c: &Config,
    (cos, sin): (&[f32], &[f32]),
    bias: Option<&[f32]>,
    qk_norm: Option<(&[f32], &[f32])>,
    qkv: &mut [f32],
    tokens: usize,
    positions: &Range<usize>,
) {
    let eps = c.rms_norm_eps as f32;
    let queries = c.n_heads * c.head_dim;
    let hd = c.head_dim;
    let half = c.rotary_dim / 2;
    let width = (c.n_heads + 2 * c.n_kv_heads) * hd;
    let rotated = (c.n_heads + c.n_kv_heads) * hd;
    let span = positions.len();
    par_rows(pool, qkv, tokens, width, &|t, row| {
        if let Some(bias) = bias {
            row.iter_mut().zip(bias).for_each(|(x, &b)| *x += b);
        }
        if let Some((q_norm, k_norm)) = qk_norm {
            let (q, k) = row[..rotated].split_at_mut(queries);
            for head in q.chunks_exact_mut(hd) {
                rms_norm_in_place(head, q_norm, eps);
            }
            for head in k.chunks_exact_mut(hd) {
                rms_norm_in_place(head, k_norm, eps);
            }
        }
        let position = positions.start + t % span;
        let (cos, sin) = (
            &cos[position * half..][..half],
            &sin[position * half..][..half],
        );
        for head in row[..rotated].chunks_exact_mut(hd) {
            rope(&mut head[..2 * half], cos, sin);
        }
    });
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, array};

    use super::*;

    #[test]
    fn rms_norm_matches_the_formula() {
        let x = array![[1.0f32, 2.0, 3.0, 4.0]];
        let mut out = Array2::zeros((1, 4));
        rms_norm(x.view(), &[1.0, 0.5, 2.0, 1.0], 1e-5, out.view_mut());
        let scale = 1.0 / ((1.0f32 + 4.0 + 9.0 + 16.0) / 4.0 + 1e-5).sqrt();
        for (o, e) in out.iter().zip([scale, scale, 6.0 * scale, 4.0 * scale]) {
            assert!((o - e).abs() < 1e-6);
        }
    }

    #[test]
    fn rope_rotates_pairs_half_a_vector_apart() {
        let mut head = [1.0f32, 0.0, 0.0, 1.0];
        let angle = 0.3f32;
        rope(&mut head, &[angle.cos(), 1.0], &[angle.sin(), 0.0]);
        assert!((head[0] - angle.cos()).abs() < 1e-7 && (head[2] - angle.sin()).abs() < 1e-7);
        assert_eq!((head[1], head[3]), (0.0, 1.0));
    }

    #[test]
    fn biases_are_added_before_the_rotation_and_only_the_rotary_dimensions_turn() {
        let text = r#"{"model_type": "Dream", "hidden_size": 8, "num_attention_heads": 1,
            "num_key_value_heads": 1, "num_hidden_layers": 1, "intermediate_size": 4,
            "vocab_size": 4, "max_position_embeddings": 8, "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0}"#;
        let mut c = Config::from_json(text).unwrap();
        c.rotary_dim = 4;
        let inv_freq = crate::model::rope_inv_freq(&c);
        assert_eq!(inv_freq.len(), 2);
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        crate::model::grow_rope(&inv_freq, (&mut cos, &mut sin), 4);
        let pool = Pool::new(vec![(), ()]).unwrap();
        // One token at position 3: q, k, v of one head of 8.
        let row: Vec<f32> = (0..24).map(|i| i as f32 / 10.0).collect();
        let bias: Vec<f32> = (0..24).map(|i| 1.0 - i as f32 / 50.0).collect();
        let mut qkv = row.clone();
        par_bias_rope(
            &pool,
            &c,
            (&cos, &sin),
            Some(&bias),
            None,
            &mut qkv,
            1,
            &(3..4),
        );
        let biased: Vec<f32> = row.iter().zip(&bias).map(|(x, b)| x + b).collect();
        for head in 0..2 {
            let (got, want) = (
                &qkv[head * 8..(head + 1) * 8],
                &biased[head * 8..(head + 1) * 8],
            );
            let mut turned = want[..4].to_vec();
            rope(&mut turned, &cos[6..8], &sin[6..8]);
            assert_eq!(got[..4], turned[..], "head {head}: the rotary half");
            assert_eq!(got[4..], want[4..], "head {head}: the rest passes through");
        }
        assert_eq!(qkv[16..], biased[16..], "values are not rotated");
    }

    #[test]
    fn masked_softmax_ignores_hidden_keys() {
        let mut s = array![[1.0f32, 2.0, 100.0]];
        masked_softmax(Isa::detect(), s.view_mut(), 1.0, Some(&[1, 1, 0]), None);
        let e = 1.0f32.exp();
        assert!((s[[0, 0]] - 1.0 / (1.0 + e)).abs() < 1e-6);
        assert_eq!(s[[0, 2]], 0.0);
    }

    #[test]
    fn block_causal_rows_see_their_blocks_and_a_row_of_padding_alone_is_zero() {
        // Blocks of 2 from position 0; keys 0 and 1 are padding.
        let mut s = array![[5.0f32, 5.0, 1.0, 1.0], [5.0, 5.0, 1.0, 3.0]];
        masked_softmax(
            Isa::detect(),
            s.view_mut(),
            1.0,
            Some(&[0, 0, 1, 1]),
            Some((1, 2)),
        );
        // Row 0 is position 1: it sees keys 0 and 1, both padding.
        assert_eq!(s.row(0).to_vec(), [0.0; 4]);
        // Row 1 is position 2: it sees keys 0..4, of which 2 and 3.
        let e = 2.0f32.exp();
        assert!((s[[1, 3]] - e / (1.0 + e)).abs() < 1e-6 && s[[1, 0]] == 0.0);
    }
}
