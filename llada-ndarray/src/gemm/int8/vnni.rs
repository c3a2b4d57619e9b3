//! The AVX-512 VNNI integer kernel: up to 6 rows × 32 columns. Per block of 32 values and per
//! row, one 32-bit integer accumulator per panel gathers `vpdpbusd` products (unsigned weight
//! codes × signed activation quants, 4 at a time per lane), then is scaled into an f32
//! accumulator: `(dot − offset · Σ quants) · d_w · d_a`. Q8_0's signed quants become unsigned
//! codes by adding 128 (an xor of the sign bit), Q4_0's codes are its 4-bit values (offset 8).

use std::arch::x86_64::*;

use super::{IntTile, MR, QK};
use crate::gemm::NR;
use crate::quant::QuantType;

/// Runs `t` (see [`IntTile`]).
///
/// # Safety
/// The CPU has AVX-512F, AVX-512BW, AVX-512 VNNI and F16C; `t` passed [`IntTile::check`].
pub(super) unsafe fn run(t: IntTile<'_>) {
    let pair = t.panels[1].is_some();
    // SAFETY: the caller's contract.
    unsafe {
        match (t.ty == QuantType::Q8_0, pair) {
            (true, true) => rows::<true, 2>(t),
            (true, false) => rows::<true, 1>(t),
            (false, true) => rows::<false, 2>(t),
            (false, false) => rows::<false, 1>(t),
        }
    }
}

/// Dispatches on the tile's row count.
///
/// # Safety
/// As [`run`].
unsafe fn rows<const Q8: bool, const N: usize>(t: IntTile<'_>) {
    // SAFETY: the caller's contract.
    unsafe {
        match t.tile.rows {
            6 => kernel::<Q8, N, 6>(t),
            5 => kernel::<Q8, N, 5>(t),
            4 => kernel::<Q8, N, 4>(t),
            3 => kernel::<Q8, N, 3>(t),
            2 => kernel::<Q8, N, 2>(t),
            _ => kernel::<Q8, N, 1>(t),
        }
    }
}

/// `R` rows × `N` panels.
///
/// # Safety
/// As [`run`], with `t.tile.rows == R` and `N` panels given.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn kernel<const Q8: bool, const N: usize, const R: usize>(t: IntTile<'_>) {
    debug_assert!(R <= MR && t.tile.rows == R);
    let bytes = NR * t.ty.block_bytes();
    let panels: [*const u8; N] = std::array::from_fn(|n| t.panels[n].unwrap().as_ptr());
    let offset = if Q8 { 128 } else { 8 };
    // SAFETY: (whole body) the operands hold `t.blocks` blocks for `R` rows and `N` panels
    // (`IntTile::check`); every load below stays inside them; the tile is the caller's.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); N]; R];
        let sign = _mm512_set1_epi8(-128);
        let low = _mm512_set1_epi8(0x0F);
        for b in 0..t.blocks {
            let mut dot = [[_mm512_setzero_si512(); N]; R];
            let a = |r: usize, group: usize| {
                let at = t.quants.as_ptr().add(r * t.lda + b * QK + group * 4);
                _mm512_set1_epi32(at.cast::<i32>().read_unaligned())
            };
            if Q8 {
                for g in 0..8 {
                    let mut w = [_mm512_setzero_si512(); N];
                    for (w, &p) in w.iter_mut().zip(&panels) {
                        let v = _mm512_loadu_si512(p.add(b * bytes + 2 * NR + g * 64).cast());
                        *w = _mm512_xor_si512(v, sign);
                    }
                    for (r, dot) in dot.iter_mut().enumerate() {
                        let x = a(r, g);
                        for (d, &w) in dot.iter_mut().zip(&w) {
                            *d = _mm512_dpbusd_epi32(*d, w, x);
                        }
                    }
                }
            } else {
                for j in 0..4 {
                    let mut lo = [_mm512_setzero_si512(); N];
                    let mut hi = [_mm512_setzero_si512(); N];
                    for n in 0..N {
                        let v =
                            _mm512_loadu_si512(panels[n].add(b * bytes + 2 * NR + j * 64).cast());
                        lo[n] = _mm512_and_si512(v, low);
                        hi[n] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                    }
                    for (r, dot) in dot.iter_mut().enumerate() {
                        let (x0, x1) = (a(r, 2 * j), a(r, 2 * j + 1));
                        for n in 0..N {
                            dot[n] = _mm512_dpbusd_epi32(dot[n], lo[n], x0);
                            dot[n] = _mm512_dpbusd_epi32(dot[n], hi[n], x1);
                        }
                    }
                }
            }
            let mut dw = [_mm512_setzero_ps(); N];
            for (d, &p) in dw.iter_mut().zip(&panels) {
                *d = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(b * bytes).cast()));
            }
            for r in 0..R {
                let da = _mm512_set1_ps(*t.scales.as_ptr().add(r * t.ldb + b));
                let correction = _mm512_set1_epi32(offset * *t.sums.as_ptr().add(r * t.ldb + b));
                for n in 0..N {
                    let exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(dot[r][n], correction));
                    acc[r][n] = _mm512_fmadd_ps(exact, _mm512_mul_ps(dw[n], da), acc[r][n]);
                }
            }
        }
        let tile = t.tile;
        if tile.cols == N * NR {
            for (r, vectors) in acc.iter().enumerate() {
                let dst = tile.row_ptr(r);
                for (n, &v) in vectors.iter().enumerate() {
                    let at = dst.add(n * NR);
                    let v = if tile.add {
                        _mm512_add_ps(_mm512_loadu_ps(at), v)
                    } else {
                        v
                    };
                    _mm512_storeu_ps(at, v);
                }
            }
        } else {
            let mut out = [0.0f32; MR * 2 * NR];
            for (r, vectors) in acc.iter().enumerate() {
                for (n, &v) in vectors.iter().enumerate() {
                    _mm512_storeu_ps(out.as_mut_ptr().add(r * 2 * NR + n * NR), v);
                }
            }
            tile.store(&out, 2 * NR);
        }
    }
}
