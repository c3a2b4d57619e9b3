//! The NEON integer kernels (aarch64). A panel block's 64-byte groups hold 4 codes of each of
//! its 16 rows (see [`layout`](super::layout)); one 16-byte vector is 4 rows × 4 codes, which
//! is exactly the operand of `sdot vd.4s, vn.16b, vm.4b[lane]`: each 32-bit lane gets the dot
//! product of one row's 4 codes with the 4 activation quants at `lane`. Two ways to do it:
//!
//! - [`Sdot`] where the CPU has `dotprod` (ARMv8.2 and later: Apple M1 onwards, Cortex-A55/A76
//!   and newer phones): one `sdot` per 16 products. The intrinsic is not stable Rust, so it
//!   is one line of inline assembly.
//! - [`Widening`] on plain ARMv8.0 NEON (Cortex-A53/A72): `smull`/`smull2` multiply 8 byte
//!   pairs into 16 bits, `smlal`/`smlal2` add a second group's, and `sadalp` adds neighbouring
//!   16-bit lanes into 32-bit ones, so each weight vector has two accumulators (rows 0–1 and
//!   2–3 of its four), added pairwise at the end of each sub-block (`addp`).
//!
//! Every format's codes fit signed bytes (Q8_0 −128..127, Q4_0/Q4_K 0..15, Q6_K 0..63) and
//! activations are −127..127, so signed products need no offset trick; the sums of 32-bit
//! integers are exact in any order, and the scaling is
//! [`reference_kernel`](super::reference_kernel)'s operation for operation, so both kernels
//! equal it bit for bit. Tiles are walked one panel and a few rows at a time
//! ([`Products::ROWS`]: 3 with `sdot`, 2 when widening, whose accumulators are twice as many),
//! so that the integer and float accumulators can stay in the 32 vector registers. Neither
//! shape was timed on Arm hardware (none was at hand; qemu checks correctness only).

use std::arch::aarch64::*;
use std::arch::asm;

use super::layout::{code_offset, panel_block_bytes, q4k, q6k, sub_len};
use super::{IntTile, MR};
use crate::gemm::NR;
use crate::gemm::kernels::neon::f16_to_f32;
use crate::gemm::kernels::with_rows;
use crate::quant::QuantType;

/// The formats, as a const parameter.
const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_K: u8 = 2;
const Q6_K: u8 = 3;

/// How 4 × 4 byte products are summed into 32-bit lanes.
trait Products {
    /// Running sums of 4 weight rows × one activation row.
    type Acc: Copy;
    /// Rows of `A` per pass over a panel.
    const ROWS: usize;
    fn zero() -> Self::Acc;
    /// Two groups of 4 values: `acc[c] += Σ a[4c + i] · x[4A + i] + Σ b[4c + i] · x[4B + i]`
    /// for the 4 rows `c` of the weight vectors `a` and `b`.
    ///
    /// # Safety
    /// The CPU runs the instructions (see [`run_sdot`], [`run_widening`]).
    unsafe fn add<const A: i32, const B: i32>(
        acc: Self::Acc,
        a: int8x16_t,
        b: int8x16_t,
        x: int8x16_t,
    ) -> Self::Acc;
    /// The 4 rows' sums.
    fn finish(acc: Self::Acc) -> int32x4_t;
}

/// `sdot` (the `dotprod` extension).
struct Sdot;

impl Products for Sdot {
    type Acc = int32x4_t;
    const ROWS: usize = 3;

    #[inline(always)]
    fn zero() -> int32x4_t {
        // SAFETY: NEON is the aarch64 baseline.
        unsafe { vdupq_n_s32(0) }
    }

    #[inline(always)]
    unsafe fn add<const A: i32, const B: i32>(
        acc: int32x4_t,
        a: int8x16_t,
        b: int8x16_t,
        x: int8x16_t,
    ) -> int32x4_t {
        // SAFETY: the caller's contract.
        unsafe { sdot::<B>(sdot::<A>(acc, a, x), b, x) }
    }

    #[inline(always)]
    fn finish(acc: int32x4_t) -> int32x4_t {
        acc
    }
}

/// `acc[c] += Σ w[4c + i] · x[4L + i]`: one `sdot`.
///
/// # Safety
/// The CPU has `dotprod`.
#[inline(always)]
unsafe fn sdot<const L: i32>(mut acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    // SAFETY: register-only; the caller's contract. The directive lets the assembler take the
    // instruction inside functions built without the feature.
    unsafe {
        asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[{lane}]",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            x = in(vreg) x,
            lane = const L,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// `smull`, `smlal` and `sadalp` (plain NEON).
struct Widening;

impl Products for Widening {
    /// Lanes (row 0, row 0, row 1, row 1) and (row 2, row 2, row 3, row 3): two products each.
    type Acc = [int32x4_t; 2];
    const ROWS: usize = 2;

    #[inline(always)]
    fn zero() -> [int32x4_t; 2] {
        // SAFETY: NEON is the aarch64 baseline.
        unsafe { [vdupq_n_s32(0); 2] }
    }

    #[inline(always)]
    unsafe fn add<const A: i32, const B: i32>(
        acc: [int32x4_t; 2],
        a: int8x16_t,
        b: int8x16_t,
        x: int8x16_t,
    ) -> [int32x4_t; 2] {
        // SAFETY: NEON is the aarch64 baseline. A byte product is at most 128 · 127 in
        // magnitude, so two of them fit 16 bits before `sadalp` widens the pairs.
        unsafe {
            let x32 = vreinterpretq_s32_s8(x);
            let (qa, qb) = (
                vreinterpretq_s8_s32(vdupq_laneq_s32::<A>(x32)),
                vreinterpretq_s8_s32(vdupq_laneq_s32::<B>(x32)),
            );
            let low = vmlal_s8(
                vmull_s8(vget_low_s8(a), vget_low_s8(qa)),
                vget_low_s8(b),
                vget_low_s8(qb),
            );
            let high = vmlal_high_s8(vmull_high_s8(a, qa), b, qb);
            [vpadalq_s16(acc[0], low), vpadalq_s16(acc[1], high)]
        }
    }

    #[inline(always)]
    fn finish(acc: [int32x4_t; 2]) -> int32x4_t {
        // SAFETY: NEON is the aarch64 baseline.
        unsafe { vpaddq_s32(acc[0], acc[1]) }
    }
}

/// Runs `t` (see [`IntTile`]) with `sdot`.
///
/// # Safety
/// The CPU has NEON and `dotprod`; `t` passed [`IntTile::check`].
#[target_feature(enable = "dotprod")]
pub(super) unsafe fn run_sdot(t: IntTile<'_>) {
    // SAFETY: the caller's contract.
    unsafe { run::<Sdot>(t) }
}

/// Runs `t` (see [`IntTile`]) with plain NEON.
///
/// # Safety
/// `t` passed [`IntTile::check`] (NEON is the aarch64 baseline).
pub(super) unsafe fn run_widening(t: IntTile<'_>) {
    // SAFETY: the caller's contract.
    unsafe { run::<Widening>(t) }
}

/// # Safety
/// As [`run_sdot`] or [`run_widening`], for `P`.
#[inline(always)]
unsafe fn run<P: Products>(t: IntTile<'_>) {
    let mut out = [0.0f32; MR * 2 * NR];
    for (n, panel) in t.panels.iter().enumerate() {
        let Some(panel) = panel else { continue };
        let mut r = 0;
        while r < t.tile.rows {
            let rows = P::ROWS.min(t.tile.rows - r);
            macro_rules! by_rows {
                ($f:expr) => {
                    // SAFETY: the caller's contract; rows `r..r + rows` lie in the tile.
                    unsafe {
                        with_rows!(
                            rows,
                            R in [1, 2, 3],
                            rows_of::<P, { $f }, R>(&t, panel.as_ptr(), r, n, &mut out)
                        )
                    }
                };
            }
            match t.ty {
                QuantType::Q8_0 => by_rows!(Q8_0),
                QuantType::Q4_0 => by_rows!(Q4_0),
                QuantType::Q4_K => by_rows!(Q4_K),
                QuantType::Q6_K => by_rows!(Q6_K),
                ty => unreachable!("no integer kernel for {ty:?}"),
            }
            r += rows;
        }
    }
    t.tile.store(&out, 2 * NR);
}

/// Two groups of 4 values: every row's quads `A` and `B` of `x` against the weight vectors
/// `a` and `b` (4 each, for the panel's 16 rows).
///
/// # Safety
/// As [`Products::add`].
#[inline(always)]
unsafe fn groups<P: Products, const A: i32, const B: i32, const R: usize>(
    dot: &mut [[P::Acc; 4]; R],
    a: &[int8x16_t; 4],
    b: &[int8x16_t; 4],
    x: &[int8x16_t; R],
) {
    for (dot, &x) in dot.iter_mut().zip(x) {
        for (d, (&a, &b)) in dot.iter_mut().zip(a.iter().zip(b)) {
            // SAFETY: the caller's contract.
            *d = unsafe { P::add::<A, B>(*d, a, b, x) };
        }
    }
}

/// 16 half-precision values at `p`, as f32.
///
/// # Safety
/// 32 readable bytes at `p`.
#[inline(always)]
unsafe fn halves(p: *const u8) -> [float32x4_t; 4] {
    // SAFETY: the caller's contract.
    std::array::from_fn(|j| unsafe { f16_to_f32(vld1_u16(p.add(8 * j).cast())) })
}

/// 16 bytes at `p` (unsigned, or signed when `SIGNED`), as f32.
///
/// # Safety
/// 16 readable bytes at `p`.
#[inline(always)]
unsafe fn bytes16<const SIGNED: bool>(p: *const u8) -> [float32x4_t; 4] {
    // SAFETY: the caller's contract.
    unsafe {
        if SIGNED {
            let v = vld1q_s8(p.cast());
            let h = [vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v)];
            std::array::from_fn(|j| {
                let h = h[j / 2];
                vcvtq_f32_s32(if j % 2 == 0 {
                    vmovl_s16(vget_low_s16(h))
                } else {
                    vmovl_high_s16(h)
                })
            })
        } else {
            let v = vld1q_u8(p);
            let h = [vmovl_u8(vget_low_u8(v)), vmovl_high_u8(v)];
            std::array::from_fn(|j| {
                let h = h[j / 2];
                vcvtq_f32_u32(if j % 2 == 0 {
                    vmovl_u16(vget_low_u16(h))
                } else {
                    vmovl_high_u16(h)
                })
            })
        }
    }
}

/// Rows `r0..r0 + R` of the tile against panel `n` (whose data starts at `panel`), format `F`,
/// into `out` (rows `2 · NR` apart, the panel's columns at `n · NR`).
///
/// # Safety
/// As [`run`]; `r0 + R ≤ t.tile.rows`.
#[inline(always)]
unsafe fn rows_of<P: Products, const F: u8, const R: usize>(
    t: &IntTile<'_>,
    panel: *const u8,
    r0: usize,
    n: usize,
    out: &mut [f32; MR * 2 * NR],
) {
    let ty = t.ty;
    let bytes = panel_block_bytes(ty);
    let (sub, offset) = (sub_len(ty), code_offset(ty));
    // SAFETY: (whole body) the operands hold `t.blocks` blocks of the panel and the
    // activations of the tile's depth for its rows (`IntTile::check`); every load below stays
    // inside them.
    unsafe {
        let x16 = |r: usize, v: usize| vld1q_s8(t.quants.as_ptr().add((r0 + r) * t.lda + v));
        let load4 = |p: *const u8| -> [int8x16_t; 4] {
            std::array::from_fn(|j| vld1q_s8(p.add(16 * j).cast()))
        };
        let nibbles = vdupq_n_u8(0x0F);
        let mut total = [[vdupq_n_f32(0.0); 4]; R];
        for b in 0..t.blocks {
            let base = panel.add(b * bytes);
            for s in 0..ty.block_len() / sub {
                // Values `v0..v0 + sub` of the tile's depth.
                let v0 = b * ty.block_len() + s * sub;
                let mut dot = [[P::zero(); 4]; R];
                match F {
                    Q8_0 => {
                        let q = base.add(2 * NR);
                        for h in 0..2 {
                            let x: [int8x16_t; R] = std::array::from_fn(|r| x16(r, v0 + 16 * h));
                            let g = |i: usize| load4(q.add(256 * h + 64 * i));
                            groups::<P, 0, 1, R>(&mut dot, &g(0), &g(1), &x);
                            groups::<P, 2, 3, R>(&mut dot, &g(2), &g(3), &x);
                        }
                    }
                    Q4_0 | Q4_K => {
                        // Run `i` of 64 bytes: group 2i in the low nibbles, 2i + 1 in the high.
                        let q = base.add(if F == Q4_K { q4k::Q + 256 * s } else { 2 * NR });
                        for h in 0..2 {
                            let x: [int8x16_t; R] = std::array::from_fn(|r| x16(r, v0 + 16 * h));
                            for i in 0..2 {
                                let v = load4(q.add(128 * h + 64 * i));
                                let lo = v.map(|v| {
                                    vreinterpretq_s8_u8(vandq_u8(vreinterpretq_u8_s8(v), nibbles))
                                });
                                let hi = v.map(|v| {
                                    vreinterpretq_s8_u8(vshrq_n_u8::<4>(vreinterpretq_u8_s8(v)))
                                });
                                if i == 0 {
                                    groups::<P, 0, 1, R>(&mut dot, &lo, &hi, &x);
                                } else {
                                    groups::<P, 2, 3, R>(&mut dot, &lo, &hi, &x);
                                }
                            }
                        }
                    }
                    _ => {
                        // Q6_K, 16 values: two runs of low nibbles (groups 0–1, 2–3) and the
                        // 2-bit highs of group g at bits 2g.
                        let q = base.add(q6k::Q + q6k::SUB * s);
                        let x: [int8x16_t; R] = std::array::from_fn(|r| x16(r, v0));
                        let highs = load4(q.add(128)).map(|v| vreinterpretq_u8_s8(v));
                        let top = vdupq_n_u8(0x30);
                        let code = |low: uint8x16_t, high: uint8x16_t| {
                            vreinterpretq_s8_u8(vorrq_u8(low, vandq_u8(high, top)))
                        };
                        for i in 0..2 {
                            let v = load4(q.add(64 * i)).map(|v| vreinterpretq_u8_s8(v));
                            let (mut c0, mut c1) = ([vdupq_n_s8(0); 4], [vdupq_n_s8(0); 4]);
                            for j in 0..4 {
                                let (lo, hi) = (vandq_u8(v[j], nibbles), vshrq_n_u8::<4>(v[j]));
                                if i == 0 {
                                    c0[j] = code(lo, vshlq_n_u8::<4>(highs[j]));
                                    c1[j] = code(hi, vshlq_n_u8::<2>(highs[j]));
                                } else {
                                    c0[j] = code(lo, highs[j]);
                                    c1[j] = code(hi, vshrq_n_u8::<2>(highs[j]));
                                }
                            }
                            if i == 0 {
                                groups::<P, 0, 1, R>(&mut dot, &c0, &c1, &x);
                            } else {
                                groups::<P, 2, 3, R>(&mut dot, &c0, &c1, &x);
                            }
                        }
                    }
                }
                // The scaling, as the reference does it.
                let d = halves(base);
                let mul = match F {
                    Q4_K => {
                        let sc = bytes16::<false>(base.add(q4k::SC + NR * s));
                        std::array::from_fn(|j| vmulq_f32(d[j], sc[j]))
                    }
                    Q6_K => {
                        let sc = bytes16::<true>(base.add(q6k::SC + NR * s));
                        std::array::from_fn(|j| vmulq_f32(d[j], sc[j]))
                    }
                    _ => d,
                };
                let min = if F == Q4_K {
                    let dmin = halves(base.add(q4k::DMIN));
                    let m = bytes16::<false>(base.add(q4k::M + NR * s));
                    std::array::from_fn(|j| vmulq_f32(dmin[j], m[j]))
                } else {
                    [vdupq_n_f32(0.0); 4]
                };
                for (r, (total, dot)) in total.iter_mut().zip(&dot).enumerate() {
                    let (da, sum) = t.scale_and_sum(r0 + r, v0);
                    let correction = vdupq_n_s32(offset * sum);
                    let da_sum = vdupq_n_f32(da * sum as f32);
                    for j in 0..4 {
                        let exact = vcvtq_f32_s32(vsubq_s32(P::finish(dot[j]), correction));
                        total[j] = vfmaq_f32(total[j], exact, vmulq_n_f32(mul[j], da));
                        if F == Q4_K {
                            total[j] = vfmsq_f32(total[j], min[j], da_sum);
                        }
                    }
                }
            }
        }
        for (r, total) in total.iter().enumerate() {
            let at = (r0 + r) * 2 * NR + n * NR;
            for (j, &v) in total.iter().enumerate() {
                vst1q_f32(out[at + 4 * j..].as_mut_ptr(), v);
            }
        }
    }
}
