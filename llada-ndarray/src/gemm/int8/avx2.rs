//! The AVX2 integer kernels (no VNNI): `vpmaddubsw` multiplies unsigned weight codes by
//! signed activation quants and adds pairs into 16 bits, `vpmaddwd` with ones adds those pairs
//! into 32 bits. The 4-bit formats' products are small enough (15 · 127 · 2 per pair) to sum a
//! whole sub-block in 16 bits before widening; Q6_K's (63 · 127 · 2) two groups at a time;
//! Q8_0 multiplies |w| by the activation with w's sign (`vpsignb`), one group at a time. Two
//! rows × one panel at a time; the scaling is [`reference_kernel`](super::reference_kernel)'s,
//! operation for operation, so both agree bit for bit.

use std::arch::x86_64::*;

use super::layout::{panel_block_bytes, q4k, q6k};
use super::{IntTile, MR};
use crate::gemm::NR;
use crate::quant::QuantType;

/// Runs `t` (see [`IntTile`]).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `t` passed [`IntTile::check`].
pub(super) unsafe fn run(t: IntTile<'_>) {
    let mut acc = [[0.0f32; NR]; 2 * MR];
    let mut r = 0;
    while r < t.tile.rows {
        let rows = 2.min(t.tile.rows - r);
        for (n, panel) in t.panels.iter().enumerate() {
            let Some(panel) = panel else { continue };
            // SAFETY: the caller's contract; rows `r..r + rows` lie in the tile.
            unsafe { panel_rows(&t, panel.as_ptr(), r, rows, &mut acc[n * MR + r..]) };
        }
        r += rows;
    }
    let mut out = [0.0f32; MR * 2 * NR];
    for r in 0..t.tile.rows {
        for n in 0..2 {
            out[r * 2 * NR + n * NR..][..NR].copy_from_slice(&acc[n * MR + r]);
        }
    }
    t.tile.store(&out, 2 * NR);
}

/// Rows `r0..r0 + rows` (1 or 2) of the tile against one panel, into `acc[0..rows]`.
///
/// # Safety
/// As [`run`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn panel_rows(
    t: &IntTile<'_>,
    panel: *const u8,
    r0: usize,
    rows: usize,
    acc: &mut [[f32; NR]],
) {
    let ty = t.ty;
    let bytes = panel_block_bytes(ty);
    let sub = super::layout::sub_len(ty);
    let offset = super::layout::code_offset(ty);
    // SAFETY: (whole body) the operands hold `t.blocks` blocks (`IntTile::check`) and every
    // load below stays inside them.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let low = _mm256_set1_epi8(0x0F);
        let high = _mm256_set1_epi8(0x30);
        let mut total = [[_mm256_setzero_ps(); 2]; 2];
        let quad = |r: usize, v: usize| {
            let at = t.quants.as_ptr().add((r0 + r) * t.lda + v);
            _mm256_set1_epi32(at.cast::<i32>().read_unaligned())
        };
        for b in 0..t.blocks {
            let base = panel.add(b * bytes);
            for s in 0..ty.block_len() / sub {
                // Values `v0..v0 + sub` of the tile's depth.
                let v0 = b * ty.block_len() + s * sub;
                let mut dot = [[_mm256_setzero_si256(); 2]; 2];
                match ty {
                    QuantType::Q8_0 => {
                        for g in 0..8 {
                            let w = [0, 1].map(|h| {
                                _mm256_loadu_si256(base.add(2 * NR + 64 * g + 32 * h).cast())
                            });
                            for (r, dot) in dot.iter_mut().enumerate().take(rows) {
                                let x = quad(r, v0 + 4 * g);
                                for h in 0..2 {
                                    let p = _mm256_maddubs_epi16(
                                        _mm256_abs_epi8(w[h]),
                                        _mm256_sign_epi8(x, w[h]),
                                    );
                                    dot[h] = _mm256_add_epi32(dot[h], _mm256_madd_epi16(p, ones));
                                }
                            }
                        }
                    }
                    QuantType::Q6_K => {
                        let q = base.add(q6k::Q + q6k::SUB * s);
                        let highs = [0, 1].map(|h| _mm256_loadu_si256(q.add(128 + 32 * h).cast()));
                        for i in 0..2 {
                            let mut codes = [[_mm256_setzero_si256(); 2]; 2];
                            for h in 0..2 {
                                let v = _mm256_loadu_si256(q.add(64 * i + 32 * h).cast());
                                let (h0, h1) = if i == 0 {
                                    (
                                        _mm256_slli_epi16::<4>(highs[h]),
                                        _mm256_slli_epi16::<2>(highs[h]),
                                    )
                                } else {
                                    (highs[h], _mm256_srli_epi16::<2>(highs[h]))
                                };
                                codes[0][h] = _mm256_or_si256(
                                    _mm256_and_si256(v, low),
                                    _mm256_and_si256(h0, high),
                                );
                                codes[1][h] = _mm256_or_si256(
                                    _mm256_and_si256(_mm256_srli_epi16::<4>(v), low),
                                    _mm256_and_si256(h1, high),
                                );
                            }
                            for (r, dot) in dot.iter_mut().enumerate().take(rows) {
                                let (x0, x1) = (quad(r, v0 + 8 * i), quad(r, v0 + 8 * i + 4));
                                for h in 0..2 {
                                    let p = _mm256_add_epi16(
                                        _mm256_maddubs_epi16(codes[0][h], x0),
                                        _mm256_maddubs_epi16(codes[1][h], x1),
                                    );
                                    dot[h] = _mm256_add_epi32(dot[h], _mm256_madd_epi16(p, ones));
                                }
                            }
                        }
                    }
                    _ => {
                        // Q4_0 (one sub-block per block) and Q4_K (eight).
                        let q = base.add(if ty == QuantType::Q4_K {
                            q4k::Q + 256 * s
                        } else {
                            2 * NR
                        });
                        let mut sums = [[_mm256_setzero_si256(); 2]; 2];
                        for i in 0..4 {
                            let v =
                                [0, 1].map(|h| _mm256_loadu_si256(q.add(64 * i + 32 * h).cast()));
                            let lo = v.map(|v| _mm256_and_si256(v, low));
                            let hi = v.map(|v| _mm256_and_si256(_mm256_srli_epi16::<4>(v), low));
                            for (r, sums) in sums.iter_mut().enumerate().take(rows) {
                                let (x0, x1) = (quad(r, v0 + 8 * i), quad(r, v0 + 8 * i + 4));
                                for h in 0..2 {
                                    sums[h] =
                                        _mm256_add_epi16(sums[h], _mm256_maddubs_epi16(lo[h], x0));
                                    sums[h] =
                                        _mm256_add_epi16(sums[h], _mm256_maddubs_epi16(hi[h], x1));
                                }
                            }
                        }
                        for (dot, sums) in dot.iter_mut().zip(&sums).take(rows) {
                            for h in 0..2 {
                                dot[h] = _mm256_madd_epi16(sums[h], ones);
                            }
                        }
                    }
                }
                // The scaling, as the reference does it.
                let (mut mul, mut min) = ([_mm256_setzero_ps(); 2], [_mm256_setzero_ps(); 2]);
                for h in 0..2 {
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(base.add(16 * h).cast()));
                    mul[h] = match ty {
                        QuantType::Q4_K => {
                            _mm256_mul_ps(d, bytes8::<false>(base.add(q4k::SC + NR * s + 8 * h)))
                        }
                        QuantType::Q6_K => {
                            _mm256_mul_ps(d, bytes8::<true>(base.add(q6k::SC + NR * s + 8 * h)))
                        }
                        _ => d,
                    };
                    if ty == QuantType::Q4_K {
                        let dmin =
                            _mm256_cvtph_ps(_mm_loadu_si128(base.add(q4k::DMIN + 16 * h).cast()));
                        min[h] =
                            _mm256_mul_ps(dmin, bytes8::<false>(base.add(q4k::M + NR * s + 8 * h)));
                    }
                }
                for (r, dot) in dot.iter().enumerate().take(rows) {
                    let (da, sum) = t.scale_and_sum(r0 + r, v0);
                    let correction = _mm256_set1_epi32(offset * sum);
                    let (da_v, da_sum) = (_mm256_set1_ps(da), _mm256_set1_ps(da * sum as f32));
                    for h in 0..2 {
                        let exact = _mm256_cvtepi32_ps(_mm256_sub_epi32(dot[h], correction));
                        total[r][h] =
                            _mm256_fmadd_ps(exact, _mm256_mul_ps(mul[h], da_v), total[r][h]);
                        if ty == QuantType::Q4_K {
                            total[r][h] = _mm256_fnmadd_ps(min[h], da_sum, total[r][h]);
                        }
                    }
                }
            }
        }
        for (r, total) in total.iter().enumerate().take(rows) {
            for h in 0..2 {
                _mm256_storeu_ps(acc[r][8 * h..].as_mut_ptr(), total[h]);
            }
        }
    }
}

/// 8 bytes from `p` widened to f32 (unsigned, or signed when `SIGNED`).
///
/// # Safety
/// 8 readable bytes at `p`; AVX2 is available.
#[inline(always)]
unsafe fn bytes8<const SIGNED: bool>(p: *const u8) -> __m256 {
    // SAFETY: the caller's contract.
    unsafe {
        let v = _mm_loadl_epi64(p.cast());
        _mm256_cvtepi32_ps(if SIGNED {
            _mm256_cvtepi8_epi32(v)
        } else {
            _mm256_cvtepu8_epi32(v)
        })
    }
}
