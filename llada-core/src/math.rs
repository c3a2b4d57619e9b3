//! Small numeric kernels shared with the backends.

/// `exp(x)` for `f32`, branch-free so that loops over it vectorise: Cody-Waite range
/// reduction to `r = x − n·ln 2`, `|r| ≤ ln 2 / 2`, a degree-6 polynomial for `e^r` (the
/// Cephes `expf` coefficients) and `2^n` built in the exponent bits. Relative error below
/// 2e-7 (about one ulp); exactly 0 below −87.3, so `exp(−∞) = 0`.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting rounds to an integer
    let underflow = x < -87.336_54;
    let x = x.clamp(-87.336_54, 88.722_83);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r2 + r + 1.0;
    // n in [-126, 128]: 2^n through the exponent field. n = 128 gives +inf, from x ≈ 88.38
    // (true overflow is at 88.72): the callers take exp of values ≤ 0 (softmax after the
    // maximum) or of -x in SiLU, where the difference does not show.
    // `shifted` is 1.5·2^23 + n, whose bits are 0x4B40_0000 + n: integer arithmetic on them
    // gives n + 127 without a float-to-int conversion, which does not vectorise.
    let scale = f32::from_bits(shifted.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    if underflow { 0.0 } else { e * scale }
}

/// Lanes of the vectorisable reductions below: wide enough for AVX-512, harmless elsewhere.
pub(crate) const LANES: usize = 16;

/// Largest value, NaN ignored (negative infinity for an empty or all-NaN row).
// Always inlined, so that a caller compiled for wider vectors (the ndarray backend's AVX2 row
// operations) gets them in this loop too.
#[inline(always)]
pub fn max_value(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(v);
        }
    }
    let head = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    tail.iter().copied().fold(head, f32::max)
}

/// `row[i] ← exp(row[i] − max)`, returning the sum of the new values (lane-wise, so it
/// vectorises): the core of a softmax.
// Always inlined: see `max_value`.
#[inline(always)]
pub fn exp_in_place(row: &mut [f32], max: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, v) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *v = exp_f32(*v - max);
            *s += *v;
        }
    }
    let mut total: f32 = lanes.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp_f32(*v - max);
        total += *v;
    }
    total
}
