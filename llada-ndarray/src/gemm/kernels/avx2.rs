//! The AVX2 + FMA kernel: tiles of up to 6 × 16 (12 accumulators, two `B` vectors, one
//! broadcast), `A` read in place as MLAS does; half-precision weights widened on load (F16C).

use std::arch::x86_64::*;

use super::{BF16, F16, F32, MicroKernel, Panel, Sliver, Tile, prefetch_panel_row, with_rows};
use crate::gemm::NR;

/// The AVX2 + FMA kernel.
pub(crate) struct Avx2;

impl MicroKernel for Avx2 {
    const MR: usize = 6;
    const SHORT_TILES: bool = true;
    const PAIRS: bool = false;

    unsafe fn run(
        kc: usize,
        a: Sliver<'_>,
        first: Panel<'_>,
        second: Option<Panel<'_>>,
        tile: Tile<'_>,
    ) {
        let (dtype, b, len) = first.parts();
        assert!(len >= kc * NR && second.is_none(), "B panel out of bounds");
        let (ptr, lda) = (a.rows_ptr(tile.rows, kc), a.lda);
        // SAFETY: the CPU has AVX2, FMA and F16C (the caller's contract); the tile's rows of
        // `kc` values lie inside the sliver and the panel holds `kc × 16` (asserted).
        unsafe {
            match dtype {
                F32 => kernel_rows::<F32>(kc, ptr, lda, b, tile),
                BF16 => kernel_rows::<BF16>(kc, ptr, lda, b, tile),
                _ => kernel_rows::<F16>(kc, ptr, lda, b, tile),
            }
        }
    }
}

/// Loads the 16 `B` values of row `kk` of a panel of element type `D` as two vectors.
#[inline(always)]
unsafe fn load_b<const D: u8>(b: *const u8, kk: usize) -> (__m256, __m256) {
    // SAFETY: the caller guarantees `kk < kc` on a panel of `kc × 16` elements of type `D`;
    // unaligned loads.
    unsafe {
        match D {
            F32 => {
                let ptr = b.cast::<f32>().add(kk * NR);
                (_mm256_loadu_ps(ptr), _mm256_loadu_ps(ptr.add(8)))
            }
            BF16 => {
                let ptr = b.cast::<u16>().add(kk * NR).cast::<__m128i>();
                let lo = _mm256_cvtepu16_epi32(_mm_loadu_si128(ptr));
                let hi = _mm256_cvtepu16_epi32(_mm_loadu_si128(ptr.add(1)));
                (
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(lo)),
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(hi)),
                )
            }
            _ => {
                debug_assert_eq!(D, F16);
                let ptr = b.cast::<u16>().add(kk * NR).cast::<__m128i>();
                (
                    _mm256_cvtph_ps(_mm_loadu_si128(ptr)),
                    _mm256_cvtph_ps(_mm_loadu_si128(ptr.add(1))),
                )
            }
        }
    }
}

/// The `M × 16` register tile (`M` ≤ 6): up to 12 accumulators, two `B` vectors, one
/// broadcast; `A` is read in place, `M` rows `lda` apart. Six rows is the main tile;
/// fewer serve the last rows of `A` without computing padding (at 32 rows, a cached Fast-dLLM
/// step, padding to 36 wasted 11% of the work).
///
/// # Safety
/// AVX2, FMA and F16C present; `M` rows of `kc` values of `A` readable at `a`, `lda` apart;
/// a `kc × 16` panel of type `D` at `b`; the tile owned by the caller.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn kernel<const D: u8, const M: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const u8,
    tile: Tile<'_>,
) {
    const MR: usize = Avx2::MR;
    const { assert!(M >= 1 && M <= MR) };
    // The full-width store below writes M rows: a tile of fewer would be overrun.
    assert_eq!(tile.rows, M, "tile rows");
    let mut acc = [[_mm256_setzero_ps(); 2]; M];
    // SAFETY: element (r, kk) of A is at `a + r·lda + kk` (the contract).
    let rows: [*const f32; M] = std::array::from_fn(|r| unsafe { a.add(r * lda) });
    for kk in 0..kc {
        // SAFETY: `kk < kc` on every row and on the panel of `kc × 16` (the contract).
        unsafe {
            // As the AVX-512 kernel does (see `kernel_m16n`): a weight's panels stream from
            // memory for a column block's first row tile.
            if tile.prefetch {
                prefetch_panel_row::<D>(b, kk);
            }
            let (b0, b1) = load_b::<D>(b, kk);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*rows[r].add(kk));
                acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
            }
        }
    }
    if tile.cols == NR {
        for (r, [lo, hi]) in acc.iter().enumerate() {
            // SAFETY: a full-width row of the tile (16 values, checked by `row_ptr`), owned
            // by this task.
            unsafe {
                let dst = tile.row_ptr(r);
                if tile.add {
                    _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_loadu_ps(dst), *lo));
                    _mm256_storeu_ps(dst.add(8), _mm256_add_ps(_mm256_loadu_ps(dst.add(8)), *hi));
                } else {
                    _mm256_storeu_ps(dst, *lo);
                    _mm256_storeu_ps(dst.add(8), *hi);
                }
            }
        }
    } else {
        let mut out = [0.0f32; MR * NR];
        let out = &mut out[..M * NR];
        for (r, [lo, hi]) in acc.iter().enumerate() {
            // SAFETY: `out` has room for 16 values at `r * NR`.
            unsafe {
                _mm256_storeu_ps(out.as_mut_ptr().add(r * NR), *lo);
                _mm256_storeu_ps(out.as_mut_ptr().add(r * NR + 8), *hi);
            }
        }
        tile.store(out, NR);
    }
}

/// [`kernel`] with as many rows as the tile has.
///
/// # Safety
/// As for [`kernel`], with `tile.rows` (1 to 6) rows of `A`.
#[inline(always)]
unsafe fn kernel_rows<const D: u8>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const u8,
    tile: Tile<'_>,
) {
    // SAFETY: forwarded; the row count matches the tile.
    unsafe { with_rows!(tile.rows, M in [1, 2, 3, 4, 5, 6], kernel::<D, M>(kc, a, lda, b, tile)) }
}
