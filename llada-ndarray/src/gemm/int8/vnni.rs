//! The AVX-512 VNNI integer kernels: up to 6 rows × 32 columns. Per weight sub-block and per
//! row, one 32-bit integer accumulator per panel gathers `vpdpbusd` products (unsigned weight
//! codes × signed activation quants, 4 at a time per lane), then is scaled into an f32
//! accumulator: `(dot − offset · Σ quants) · mul · d_a (− min · d_a · Σ quants)`, in the
//! order of [`reference_kernel`](super::reference_kernel), so that both agree bit for bit.
//! Q8_0's signed quants become unsigned codes by adding 128 (an xor of the sign bit); the
//! other formats' codes are unsigned already (see [`layout`](super::layout)).

use std::arch::x86_64::*;

use super::layout::{panel_block_bytes, q4k, q6k};
use super::{IntTile, MR, QK};
use crate::gemm::NR;
use crate::gemm::kernels::with_rows;
use crate::quant::QuantType;

/// The formats, as a const parameter.
const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_K: u8 = 2;
const Q6_K: u8 = 3;

/// Runs `t` (see [`IntTile`]).
///
/// # Safety
/// The CPU has AVX-512F, AVX-512BW, AVX-512 VNNI and F16C; `t` passed [`IntTile::check`].
pub(super) unsafe fn run(t: IntTile<'_>) {
    let pair = t.panels[1].is_some();
    // SAFETY: the caller's contract.
    unsafe {
        match (t.ty, pair) {
            (QuantType::Q8_0, true) => rows::<Q8_0, 2>(t),
            (QuantType::Q8_0, false) => rows::<Q8_0, 1>(t),
            (QuantType::Q4_0, true) => rows::<Q4_0, 2>(t),
            (QuantType::Q4_0, false) => rows::<Q4_0, 1>(t),
            (QuantType::Q4_K, true) => rows::<Q4_K, 2>(t),
            (QuantType::Q4_K, false) => rows::<Q4_K, 1>(t),
            (QuantType::Q6_K, true) => rows::<Q6_K, 2>(t),
            (QuantType::Q6_K, false) => rows::<Q6_K, 1>(t),
            (ty, _) => unreachable!("no integer kernel for {ty:?}"),
        }
    }
}

/// Dispatches on the format and the tile's row count.
///
/// # Safety
/// As [`run`].
unsafe fn rows<const F: u8, const N: usize>(t: IntTile<'_>) {
    macro_rules! by_rows {
        ($kernel:ident) => {
            with_rows!(t.tile.rows, R in [1, 2, 3, 4, 5, 6], $kernel::<N, R>(t))
        };
    }
    // SAFETY: the caller's contract.
    unsafe {
        match F {
            Q8_0 => by_rows!(kernel_q8_0),
            Q4_0 => by_rows!(kernel_q4_0),
            Q4_K => by_rows!(kernel_q4_k),
            _ => by_rows!(kernel_q6_k),
        }
    }
}

/// Four quants of row `r` from value `v` of the tile's depth, in every lane.
///
/// # Safety
/// `r < t.tile.rows` and `v + 4` within the tile's depth.
#[inline(always)]
unsafe fn quad(t: &IntTile<'_>, r: usize, v: usize) -> __m512i {
    // SAFETY: the caller's contract, and `IntTile::check`.
    unsafe {
        let at = t.quants.as_ptr().add(r * t.lda + v);
        _mm512_set1_epi32(at.cast::<i32>().read_unaligned())
    }
}

/// `acc[r][n] (+)=` into the tile.
///
/// # Safety
/// The tile is the caller's; AVX-512F is available.
#[inline(always)]
unsafe fn store<const N: usize, const R: usize>(t: &IntTile<'_>, acc: &[[__m512; N]; R]) {
    let tile = t.tile;
    // SAFETY: the caller's contract; the tile holds `R` rows of `tile.cols` values.
    unsafe {
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

/// 16 bytes from `p` widened to f32 (unsigned, or signed when `SIGNED`).
///
/// # Safety
/// 16 readable bytes at `p`; AVX-512F is available.
#[inline(always)]
unsafe fn bytes_to_f32<const SIGNED: bool>(p: *const u8) -> __m512 {
    // SAFETY: the caller's contract.
    unsafe {
        let v = _mm_loadu_si128(p.cast());
        _mm512_cvtepi32_ps(if SIGNED {
            _mm512_cvtepi8_epi32(v)
        } else {
            _mm512_cvtepu8_epi32(v)
        })
    }
}

/// Q8_0: `R` rows × `N` panels.
///
/// # Safety
/// As [`run`], with `t.tile.rows == R` and `N` panels given.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn kernel_q8_0<const N: usize, const R: usize>(t: IntTile<'_>) {
    // SAFETY: the caller's contract.
    unsafe { kernel::<true, N, R>(t) }
}

/// Q4_0: `R` rows × `N` panels.
///
/// # Safety
/// As [`run`], with `t.tile.rows == R` and `N` panels given.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn kernel_q4_0<const N: usize, const R: usize>(t: IntTile<'_>) {
    // SAFETY: the caller's contract.
    unsafe { kernel::<false, N, R>(t) }
}

/// Q8_0 or Q4_0 (32-value blocks, one scale each): `R` rows × `N` panels.
///
/// # Safety
/// As [`run`], with `t.tile.rows == R` and `N` panels given; inlined into a function with
/// the target features.
#[inline(always)]
unsafe fn kernel<const Q8: bool, const N: usize, const R: usize>(t: IntTile<'_>) {
    debug_assert!(R <= MR && t.tile.rows == R);
    let bytes = panel_block_bytes(t.ty);
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
            let a = |r: usize, group: usize| quad(&t, r, b * QK + group * 4);
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
        store(&t, &acc);
    }
}

/// Q4_K: `R` rows × `N` panels; per 256-value block, 8 sub-blocks of 32 with a scale and a
/// minimum each (the activations' blocks of 32 line up with them).
///
/// # Safety
/// As [`run`], with `t.tile.rows == R` and `N` panels given.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn kernel_q4_k<const N: usize, const R: usize>(t: IntTile<'_>) {
    let bytes = panel_block_bytes(QuantType::Q4_K);
    let panels: [*const u8; N] = std::array::from_fn(|n| t.panels[n].unwrap().as_ptr());
    // SAFETY: (whole body) the operands hold `t.blocks` blocks for `R` rows and `N` panels
    // (`IntTile::check`); every load below stays inside them; the tile is the caller's.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); N]; R];
        let low = _mm512_set1_epi8(0x0F);
        for b in 0..t.blocks {
            let base: [*const u8; N] = std::array::from_fn(|n| panels[n].add(b * bytes));
            for j in 0..8 {
                let ab = b * 8 + j;
                let mut dot = [[_mm512_setzero_si512(); N]; R];
                for i in 0..4 {
                    let mut lo = [_mm512_setzero_si512(); N];
                    let mut hi = [_mm512_setzero_si512(); N];
                    for n in 0..N {
                        let v = _mm512_loadu_si512(base[n].add(q4k::Q + 256 * j + 64 * i).cast());
                        lo[n] = _mm512_and_si512(v, low);
                        hi[n] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                    }
                    for (r, dot) in dot.iter_mut().enumerate() {
                        let (x0, x1) = (
                            quad(&t, r, ab * QK + 8 * i),
                            quad(&t, r, ab * QK + 8 * i + 4),
                        );
                        for n in 0..N {
                            dot[n] = _mm512_dpbusd_epi32(dot[n], lo[n], x0);
                            dot[n] = _mm512_dpbusd_epi32(dot[n], hi[n], x1);
                        }
                    }
                }
                let mut mul = [_mm512_setzero_ps(); N];
                let mut min = [_mm512_setzero_ps(); N];
                for n in 0..N {
                    let d = _mm512_cvtph_ps(_mm256_loadu_si256(base[n].cast()));
                    let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(base[n].add(q4k::DMIN).cast()));
                    mul[n] = _mm512_mul_ps(d, bytes_to_f32::<false>(base[n].add(q4k::SC + NR * j)));
                    min[n] =
                        _mm512_mul_ps(dmin, bytes_to_f32::<false>(base[n].add(q4k::M + NR * j)));
                }
                for r in 0..R {
                    let da = *t.scales.as_ptr().add(r * t.ldb + ab);
                    let sum = *t.sums.as_ptr().add(r * t.ldb + ab);
                    let (da_v, da_sum) = (_mm512_set1_ps(da), _mm512_set1_ps(da * sum as f32));
                    for n in 0..N {
                        let exact = _mm512_cvtepi32_ps(dot[r][n]);
                        acc[r][n] = _mm512_fmadd_ps(exact, _mm512_mul_ps(mul[n], da_v), acc[r][n]);
                        acc[r][n] = _mm512_fnmadd_ps(min[n], da_sum, acc[r][n]);
                    }
                }
            }
        }
        store(&t, &acc);
    }
}

/// Q6_K: `R` rows × `N` panels; per 256-value block, 16 sub-blocks of 16 with a signed scale
/// each, 6-bit codes offset by 32 (low nibbles and 2-bit highs stored apart).
///
/// # Safety
/// As [`run`], with `t.tile.rows == R` and `N` panels given.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn kernel_q6_k<const N: usize, const R: usize>(t: IntTile<'_>) {
    let bytes = panel_block_bytes(QuantType::Q6_K);
    let panels: [*const u8; N] = std::array::from_fn(|n| t.panels[n].unwrap().as_ptr());
    // SAFETY: (whole body) as in `kernel_q4_k`.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); N]; R];
        let low = _mm512_set1_epi8(0x0F);
        let high = _mm512_set1_epi8(0x30);
        for b in 0..t.blocks {
            let base: [*const u8; N] = std::array::from_fn(|n| panels[n].add(b * bytes));
            for j in 0..16 {
                // Values `v0..v0 + 16` of the tile's depth: half `j % 2` of activation block `ab`.
                let (ab, v0) = (b * 8 + j / 2, b * 256 + 16 * j);
                let mut dot = [[_mm512_setzero_si512(); N]; R];
                let mut highs = [_mm512_setzero_si512(); N];
                for n in 0..N {
                    highs[n] = _mm512_loadu_si512(base[n].add(q6k::Q + q6k::SUB * j + 128).cast());
                }
                for i in 0..2 {
                    let mut c0 = [_mm512_setzero_si512(); N];
                    let mut c1 = [_mm512_setzero_si512(); N];
                    for n in 0..N {
                        let v =
                            _mm512_loadu_si512(base[n].add(q6k::Q + q6k::SUB * j + 64 * i).cast());
                        let h = highs[n];
                        // Group g's two high bits sit at bits 2g; they go to bits 4 and 5.
                        let (h0, h1) = if i == 0 {
                            (_mm512_slli_epi16::<4>(h), _mm512_slli_epi16::<2>(h))
                        } else {
                            (h, _mm512_srli_epi16::<2>(h))
                        };
                        c0[n] =
                            _mm512_or_si512(_mm512_and_si512(v, low), _mm512_and_si512(h0, high));
                        c1[n] = _mm512_or_si512(
                            _mm512_and_si512(_mm512_srli_epi16::<4>(v), low),
                            _mm512_and_si512(h1, high),
                        );
                    }
                    for (r, dot) in dot.iter_mut().enumerate() {
                        let (x0, x1) = (quad(&t, r, v0 + 8 * i), quad(&t, r, v0 + 8 * i + 4));
                        for n in 0..N {
                            dot[n] = _mm512_dpbusd_epi32(dot[n], c0[n], x0);
                            dot[n] = _mm512_dpbusd_epi32(dot[n], c1[n], x1);
                        }
                    }
                }
                let mut mul = [_mm512_setzero_ps(); N];
                for n in 0..N {
                    let d = _mm512_cvtph_ps(_mm256_loadu_si256(base[n].cast()));
                    mul[n] = _mm512_mul_ps(d, bytes_to_f32::<true>(base[n].add(q6k::SC + NR * j)));
                }
                for r in 0..R {
                    let da = _mm512_set1_ps(*t.scales.as_ptr().add(r * t.ldb + ab));
                    let sum = *t.sums16.as_ptr().add(2 * (r * t.ldb + ab) + j % 2);
                    let correction = _mm512_set1_epi32(32 * sum);
                    for n in 0..N {
                        let exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(dot[r][n], correction));
                        acc[r][n] = _mm512_fmadd_ps(exact, _mm512_mul_ps(mul[n], da), acc[r][n]);
                    }
                }
            }
        }
        store(&t, &acc);
    }
}
