//! Quantizing f32 rows into ggml's blocks, with ggml's reference algorithms (what
//! `llama-quantize` runs without an importance matrix), so that a checkpoint quantized here
//! has the blocks llama.cpp would write for it: Q8_0, Q4_0, Q4_K and Q6_K.

use half::f16;

use super::QuantType;

/// Rounds to the nearest integer, ties to even (ggml's `nearest_int`), as ggml does it: adding
/// 1.5 · 2^23 leaves the rounded integer in the low mantissa bits. On baseline x86-64 (no SSE4.1
/// `roundss`) `round_ties_even` is a call to `rintf`, which took a quarter of the Q4_K writer's
/// time. Beyond ±(2^22 − 1), where ggml asserts, it rounds plainly.
fn nearest_int(v: f32) -> i32 {
    if v.abs() <= 4_194_303.0 {
        let bits = (v + 12_582_912.0).to_bits() as i32;
        (bits & 0x007f_ffff) - 0x0040_0000
    } else {
        v.round_ties_even() as i32
    }
}

fn put_half(out: &mut [u8], at: usize, v: f32) {
    out[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

fn half(bytes: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// Quantizes `row` (a multiple of `ty`'s block length) into `out` (`ty.row_bytes(len)`
/// bytes). Only the formats this crate can produce: see [`can_quantize`].
///
/// # Panics
/// If `ty` is not one of them, or the lengths do not fit.
pub(crate) fn quantize_row(ty: QuantType, row: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), ty.row_bytes(row.len()), "output size");
    for (x, block) in row
        .chunks_exact(ty.block_len())
        .zip(out.chunks_exact_mut(ty.block_bytes()))
    {
        match ty {
            QuantType::Q8_0 => q8_0(x, block),
            QuantType::Q4_0 => q4_0(x, block),
            QuantType::Q5_0 => q5_0(x, block),
            QuantType::Q4_K => q4_k(x, block),
            QuantType::Q6_K => q6_k(x, block),
            other => panic!("no quantizer for {}", other.name()),
        }
    }
}

/// The format a row of `len` values gets when `ty` is asked for: `ty` itself, or, when `len`
/// is not a multiple of its block, llama.cpp's fallback (Q4_K to Q5_0, Q6_K to Q8_0); `None`
/// when not even that fits (the row stays in floats).
pub(crate) fn format_for(ty: QuantType, len: usize) -> Option<QuantType> {
    let fallback = match ty {
        QuantType::Q4_K => QuantType::Q5_0,
        QuantType::Q6_K => QuantType::Q8_0,
        other => other,
    };
    [ty, fallback]
        .into_iter()
        .find(|t| len.is_multiple_of(t.block_len()))
}

fn q8_0(x: &[f32], block: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_half(block, 0, d);
    for (q, &v) in block[2..].iter_mut().zip(x) {
        *q = ((v * id).round() as i8) as u8;
    }
}

fn q4_0(x: &[f32], block: &mut [u8]) {
    // The value of largest magnitude, with its sign.
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_half(block, 0, d);
    for j in 0..16 {
        let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
        block[2 + j] = q0 | (q1 << 4);
    }
}

fn q5_0(x: &[f32], block: &mut [u8]) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_half(block, 0, d);
    let mut qh = 0u32;
    for j in 0..16 {
        let q0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
        let q1 = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
        block[6 + j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
        qh |= u32::from((q0 & 0x10) >> 4) << j;
        qh |= u32::from((q1 & 0x10) >> 4) << (j + 16);
    }
    block[2..6].copy_from_slice(&qh.to_le_bytes());
}

/// Below this every value of a group counts as zero (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// A scale and a minimum for `x` with `nmax + 1` levels, weighted least squares over a small
/// search of scales (ggml's `make_qkx2_quants`); `levels` receives the quants. Returns
/// `(scale, minimum to subtract)`.
#[allow(clippy::too_many_arguments)]
fn scale_min(
    x: &[f32],
    weights: &[f32],
    nmax: i32,
    levels: &mut [u8],
    rmin: f32,
    rdelta: f32,
    steps: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = min.min(x[i]);
        max = max.max(x[i]);
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        levels[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * diff * diff;
    }
    let mut trial = [0u8; 32];
    for step in 0..=steps {
        iscale = (rmin + rdelta * step as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            trial[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * trial[i] as f32 + this_min - x[i];
                error += weights[i] * diff * diff;
            }
            if error < best_error {
                levels[..n].copy_from_slice(&trial[..n]);
                best_error = error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

fn q4_k(x: &[f32], block: &mut [u8]) {
    block.fill(0);
    let mut levels = [0u8; 256];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut weights = [0.0f32; 32];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let x = &x[32 * j..32 * (j + 1)];
        let sum_x2: f32 = x.iter().map(|v| v * v).sum();
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(x) {
            *w = av_x + v.abs();
        }
        let (scale, min) = scale_min(x, &weights, 15, &mut levels[32 * j..], -1.0, 0.1, 20);
        scales[j] = scale;
        mins[j] = min;
        max_scale = max_scale.max(scale);
        max_min = max_min.max(min);
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let packed = &mut block[4..16];
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    put_half(block, 0, max_scale / 63.0);
    put_half(block, 2, max_min / 63.0);
    let (d, dmin) = (half(block, 0), half(block, 2));
    for j in 0..8 {
        let (sc, m) = super::scale_min_k4(j, &block[4..16]);
        let d = d * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        let dm = dmin * f32::from(m);
        for i in 0..32 {
            levels[32 * j + i] = nearest_int((x[32 * j + i] + dm) / d).clamp(0, 15) as u8;
        }
    }
    let qs = &mut block[16..144];
    for (chunk, q) in qs.chunks_exact_mut(32).enumerate() {
        for (l, q) in q.iter_mut().enumerate() {
            *q = levels[64 * chunk + l] | (levels[64 * chunk + l + 32] << 4);
        }
    }
}

/// A symmetric scale for `x` with levels `-nmax..nmax`, weighted by `x²`, over a small search
/// of scales (ggml's `make_qx_quants` with `rmse_type` 1); `levels` receives `l + nmax`.
fn symmetric_scale(x: &[f32], nmax: i32, levels: &mut [i8]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let quantize = |iscale: f32, levels: Option<&mut [i8]>| {
        let (mut sum_lx, mut sum_l2) = (0.0f32, 0.0f32);
        let mut levels = levels;
        for (i, &v) in x.iter().enumerate() {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            if let Some(levels) = levels.as_deref_mut() {
                levels[i] = (l + nmax) as i8;
            }
            let w = v * v;
            sum_lx += w * v * l as f32;
            sum_l2 += w * (l * l) as f32;
        }
        (sum_lx, sum_l2)
    };
    let iscale = -(nmax as f32) / max;
    let (sum_lx, sum_l2) = quantize(iscale, Some(levels));
    let mut scale = if sum_l2 != 0.0 { sum_lx / sum_l2 } else { 0.0 };
    let mut best = scale * sum_lx;
    for step in -9..=9 {
        if step == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * step as f32) / max;
        let (sum_lx, sum_l2) = quantize(iscale, None);
        if sum_l2 > 0.0 && sum_lx * sum_lx > best * sum_l2 {
            quantize(iscale, Some(levels));
            scale = sum_lx / sum_l2;
            best = scale * sum_lx;
        }
    }
    scale
}

fn q6_k(x: &[f32], block: &mut [u8]) {
    block.fill(0);
    let mut levels = [0i8; 256];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for ib in 0..16 {
        let scale = symmetric_scale(
            &x[16 * ib..16 * (ib + 1)],
            32,
            &mut levels[16 * ib..16 * (ib + 1)],
        );
        scales[ib] = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        return;
    }
    let iscale = -128.0 / max_scale;
    put_half(block, 208, 1.0 / iscale);
    for ib in 0..16 {
        block[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let d = half(block, 208);
    for j in 0..16 {
        let d = d * f32::from(block[192 + j] as i8);
        if d == 0.0 {
            continue;
        }
        for i in 0..16 {
            let l = nearest_int(x[16 * j + i] / d).clamp(-32, 31);
            levels[16 * j + i] = (l + 32) as i8;
        }
    }
    let l = |i: usize| levels[i] as u8;
    for half_block in 0..2 {
        let (j, ql, qh) = (128 * half_block, 64 * half_block, 128 + 32 * half_block);
        for i in 0..32 {
            let (q1, q2, q3, q4) = (l(j + i), l(j + i + 32), l(j + i + 64), l(j + i + 96));
            block[ql + i] = (q1 & 0x0F) | ((q3 & 0x0F) << 4);
            block[ql + i + 32] = (q2 & 0x0F) | ((q4 & 0x0F) << 4);
            block[qh + i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize_row;

    fn row(len: usize, seed: u64) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = llada_core::testing::splitmix64(seed ^ i as u64);
                // A heavy-ish tailed spread, like trained weights: mostly small, a few large.
                let u = (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                u * u * u * 0.4 + u * 0.02
            })
            .collect()
    }

    /// Root mean square of the error after a round trip.
    fn rms_error(ty: QuantType, x: &[f32]) -> f32 {
        let mut blocks = vec![0u8; ty.row_bytes(x.len())];
        quantize_row(ty, x, &mut blocks);
        let mut back = vec![0.0; x.len()];
        dequantize_row(ty, &blocks, &mut back);
        let sum: f32 = x.iter().zip(&back).map(|(a, b)| (a - b) * (a - b)).sum();
        (sum / x.len() as f32).sqrt()
    }

    #[test]
    fn round_trips_lose_what_the_formats_bits_allow() {
        let x = row(4096, 3);
        let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
        // Relative RMS error per format: more bits, less error.
        let errors: Vec<f32> = [
            QuantType::Q8_0,
            QuantType::Q6_K,
            QuantType::Q5_0,
            QuantType::Q4_K,
            QuantType::Q4_0,
        ]
        .iter()
        .map(|&ty| rms_error(ty, &x) / rms)
        .collect();
        assert!(errors[0] < 0.01, "{errors:?}");
        assert!(errors[1] < 0.03, "{errors:?}");
        assert!(errors[4] < 0.2, "{errors:?}");
        assert!(errors.windows(2).all(|w| w[0] < w[1]), "{errors:?}");
    }

    #[test]
    fn nearest_int_rounds_half_to_even_everywhere() {
        let mut state = 7u64;
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            4_194_303.0,
            -4_194_303.0,
        ];
        values.extend([
            4_194_302.5,
            -4_194_302.5,
            4_194_304.0,
            -1e9,
            1e9,
            f32::MAX,
            f32::NAN,
        ]);
        for _ in 0..100_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            let scale = [1.0, 16.0, 300.0, 70_000.0, 5_000_000.0][(state >> 20) as usize % 5];
            let v = (unit - 0.5) * 2.0 * scale;
            values.extend([v, v.trunc() + 0.5, v.trunc() - 0.5]);
        }
        for v in values {
            assert_eq!(nearest_int(v), v.round_ties_even() as i32, "{v}");
        }
    }

    #[test]
    fn zero_rows_quantize_to_zero() {
        for ty in [
            QuantType::Q8_0,
            QuantType::Q4_0,
            QuantType::Q5_0,
            QuantType::Q4_K,
            QuantType::Q6_K,
        ] {
            assert_eq!(rms_error(ty, &[0.0; 256]), 0.0, "{ty:?}");
        }
    }
}
