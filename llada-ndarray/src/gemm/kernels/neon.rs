//! The NEON kernel (aarch64): tiles of up to 6 × 16 (24 accumulators, four `B` vectors, one
//! broadcast per row), `A` read in place; bf16 and f16 weights widened on load with integer
//! operations (the `float16x4_t` conversions are not stable Rust yet, and bf16 is a shift).

use std::arch::aarch64::*;

use super::{BF16, F16, F32, MicroKernel, Panel, Sliver, Tile, with_rows};
use crate::gemm::NR;

/// The NEON kernel.
pub(crate) struct Neon;

impl MicroKernel for Neon {
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
        // SAFETY: the CPU has NEON (the caller's contract); the tile's rows of `kc` values lie
        // inside the sliver and the panel holds `kc × 16` (asserted).
        unsafe {
            match dtype {
                F32 => kernel_rows::<F32>(kc, ptr, lda, b, tile),
                BF16 => kernel_rows::<BF16>(kc, ptr, lda, b, tile),
                _ => kernel_rows::<F16>(kc, ptr, lda, b, tile),
            }
        }
    }
}

/// bf16 bits (four lanes) to f32: the bits are the f32's upper half.
#[inline(always)]
fn bf16_to_f32(h: uint16x4_t) -> float32x4_t {
    // SAFETY: register-only operations of the NEON base set (the module is aarch64-only).
    unsafe { vreinterpretq_f32_u32(vshll_n_u16::<16>(h)) }
}

/// IEEE half bits (four lanes) to f32, exactly, with integer operations: the exponent and
/// mantissa moved into place and scaled by 2¹¹² (which also normalises subnormals), infinities
/// and NaNs given the all-ones exponent, then the sign.
#[inline(always)]
pub(crate) fn f16_to_f32(h: uint16x4_t) -> float32x4_t {
    // SAFETY: register-only operations of the NEON base set.
    unsafe {
        let h = vmovl_u16(h);
        let sign = vshlq_n_u32::<16>(vandq_u32(h, vdupq_n_u32(0x8000)));
        let magnitude = vandq_u32(h, vdupq_n_u32(0x7fff));
        let shifted = vshlq_n_u32::<13>(magnitude);
        let scaled = vmulq_f32(
            vreinterpretq_f32_u32(shifted),
            vreinterpretq_f32_u32(vdupq_n_u32(0x7780_0000)), // 2^112
        );
        let special = vcgeq_u32(magnitude, vdupq_n_u32(0x7c00));
        let inf_nan = vorrq_u32(shifted, vdupq_n_u32(0x7f80_0000));
        let bits = vbslq_u32(special, inf_nan, vreinterpretq_u32_f32(scaled));
        vreinterpretq_f32_u32(vorrq_u32(bits, sign))
    }
}

/// Loads the 16 `B` values of row `kk` of a panel of element type `D` as four vectors.
#[inline(always)]
unsafe fn load_b<const D: u8>(b: *const u8, kk: usize) -> [float32x4_t; 4] {
    // SAFETY: the caller guarantees `kk < kc` on a panel of `kc × 16` elements of type `D`;
    // NEON loads have no alignment requirement beyond the element's.
    unsafe {
        match D {
            F32 => {
                let p = b.cast::<f32>().add(kk * NR);
                [
                    vld1q_f32(p),
                    vld1q_f32(p.add(4)),
                    vld1q_f32(p.add(8)),
                    vld1q_f32(p.add(12)),
                ]
            }
            _ => {
                let p = b.cast::<u16>().add(kk * NR);
                let (lo, hi) = (vld1q_u16(p), vld1q_u16(p.add(8)));
                let halves = [
                    vget_low_u16(lo),
                    vget_high_u16(lo),
                    vget_low_u16(hi),
                    vget_high_u16(hi),
                ];
                if D == BF16 {
                    halves.map(bf16_to_f32)
                } else {
                    debug_assert_eq!(D, F16);
                    halves.map(f16_to_f32)
                }
            }
        }
    }
}

/// The `M × 16` register tile (`M` ≤ 6): `4M` accumulators; `A` read in place, `M` rows
/// `lda` apart, one value broadcast per row and step.
///
/// # Safety
/// NEON present; `M` rows of `kc` values of `A` readable at `a`, `lda` apart; a `kc × 16`
/// panel of type `D` at `b`; the tile owned by the caller.
#[target_feature(enable = "neon")]
unsafe fn kernel<const D: u8, const M: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const u8,
    tile: Tile<'_>,
) {
    const MR: usize = Neon::MR;
    const { assert!(M >= 1 && M <= MR) };
    // The full-width store below writes M rows: a tile of fewer would be overrun.
    assert_eq!(tile.rows, M, "tile rows");
    let mut acc = [[vdupq_n_f32(0.0); 4]; M];
    // SAFETY: element (r, kk) of A is at `a + r·lda + kk` (the contract).
    let rows: [*const f32; M] = std::array::from_fn(|r| unsafe { a.add(r * lda) });
    for kk in 0..kc {
        // SAFETY: `kk < kc` on every row and on the panel of `kc × 16` (the contract).
        unsafe {
            let w = load_b::<D>(b, kk);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = *rows[r].add(kk);
                for (acc, &w) in acc.iter_mut().zip(&w) {
                    *acc = vfmaq_n_f32(*acc, w, x);
                }
            }
        }
    }
    if tile.cols == NR {
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: a full-width row of the tile (16 values, checked by `row_ptr`), owned
            // by this task.
            unsafe {
                let dst = tile.row_ptr(r);
                for (i, &v) in acc.iter().enumerate() {
                    let at = dst.add(4 * i);
                    let v = if tile.add {
                        vaddq_f32(vld1q_f32(at), v)
                    } else {
                        v
                    };
                    vst1q_f32(at, v);
                }
            }
        }
    } else {
        let mut out = [0.0f32; MR * NR];
        for (r, acc) in acc.iter().enumerate() {
            for (i, &v) in acc.iter().enumerate() {
                // SAFETY: `out` has room for 16 values at `r * NR`.
                unsafe { vst1q_f32(out.as_mut_ptr().add(r * NR + 4 * i), v) };
            }
        }
        tile.store(&out[..M * NR], NR);
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

#[cfg(test)]
mod tests {
    use half::{bf16, f16};

    use super::*;

    /// Every f16 and bf16 bit pattern widens to the same f32 as `half` gives (NaNs to NaNs).
    #[test]
    fn half_widening_is_exact_for_every_bit_pattern() {
        for start in (0..=u16::MAX).step_by(4) {
            let bits = [start, start + 1, start + 2, start + 3];
            // SAFETY: NEON is part of every aarch64 target this crate builds for.
            let (h, b) = unsafe {
                let v = vld1_u16(bits.as_ptr());
                let mut h = [0.0f32; 4];
                let mut b = [0.0f32; 4];
                vst1q_f32(h.as_mut_ptr(), f16_to_f32(v));
                vst1q_f32(b.as_mut_ptr(), bf16_to_f32(v));
                (h, b)
            };
            for i in 0..4 {
                let want = f16::from_bits(bits[i]).to_f32();
                assert!(
                    h[i].to_bits() == want.to_bits() || (h[i].is_nan() && want.is_nan()),
                    "f16 {:#06x}: {} vs {want}",
                    bits[i],
                    h[i]
                );
                let want = bf16::from_bits(bits[i]).to_f32();
                assert!(
                    b[i].to_bits() == want.to_bits() || (b[i].is_nan() && want.is_nan()),
                    "bf16 {:#06x}",
                    bits[i]
                );
            }
        }
    }
}
