//! The AVX-512 kernel: an 8 × 32 tile (16 accumulators, two `B` vectors, one broadcast), and
//! tiles of 1–7 rows for the last rows of `A`. `A` is read where it is (rows `lda` apart;
//! packing it cost a third of the kernel's own time, as the same rows were packed again for
//! every column block). It is written once over [`Vec16`]: with `__m512` it is the real
//! kernel; with the portable `Lanes16` (tests) it runs anywhere, so its indexing is tested on
//! machines without AVX-512. The full tile over f32 panels, the hot loop, is also written in
//! assembly ([`x86::f32_8x32`]), with the same FMAs in the same order.
//!
//! Why 8 rows and not 12 (24 accumulators, the usual AVX-512 choice, and this kernel's until
//! it was measured): on AMD Zen 4 the 12-row tile ran the 220 M model's forward 10% slower at
//! 256 and 1024 tokens, 7% at 64 and 1% at 32 (fastest of interleaved runs, 2 threads), and
//! it lost to the AVX2 kernel's 6 × 16 tile at 256 and 1024. 16 accumulators still cover
//! the FMA latency twice over on a core with two 512-bit FMA units (4 cycles × 2 in flight).
//! On an Intel Xeon (AMX host, two 512-bit FMA units) a 12 × 32 tile in assembly ran no faster
//! than the 8 × 32 one: 248 against 244–250 GFLOP/s over the mid-size model's products at 256
//! tokens (2 threads), with passes 256, 512 or 1024 deep.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

#[cfg(test)]
use half::{bf16, f16};

use super::{BF16, F32, MR_MAX, Sliver, Tile};
#[cfg(target_arch = "x86_64")]
use super::{F16, MicroKernel, Panel, with_rows};
use crate::gemm::NR;

/// The AVX-512 kernel.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl MicroKernel for Avx512 {
    const MR: usize = 8;
    const SHORT_TILES: bool = true;
    const PAIRS: bool = true;
    const PREFETCHES_AHEAD: bool = true;

    unsafe fn run(
        kc: usize,
        a: Sliver<'_>,
        first: Panel<'_>,
        second: Option<Panel<'_>>,
        tile: Tile<'_>,
    ) {
        a.rows_ptr(tile.rows, kc);
        let (dtype, p0, len0) = first.parts();
        assert!(len0 >= kc * NR, "B panel out of bounds");
        let p1 = second.map(|s| {
            let (_, p1, len1) = s.parts();
            assert!(len1 >= kc * NR, "B panel out of bounds");
            p1
        });
        // SAFETY: the CPU has AVX-512F, AVX2, FMA and F16C (the caller's contract); `a` holds
        // the tile's rows of `kc` values and each panel `kc × 16` (asserted).
        unsafe {
            with_rows!(
                tile.rows,
                M in [1, 2, 3, 4, 5, 6, 7, 8],
                match (dtype, p1) {
                    (F32, Some(p1)) if M == 8 => x86::f32_8x32(kc, a, [p0, p1], tile),
                    (F32, Some(p1)) => x86::kernel::<F32, 2, M>(kc, a, [p0, p1], tile),
                    (BF16, Some(p1)) => x86::kernel::<BF16, 2, M>(kc, a, [p0, p1], tile),
                    (_, Some(p1)) => x86::kernel::<F16, 2, M>(kc, a, [p0, p1], tile),
                    (F32, None) => x86::kernel::<F32, 1, M>(kc, a, [p0], tile),
                    (BF16, None) => x86::kernel::<BF16, 1, M>(kc, a, [p0], tile),
                    (_, None) => x86::kernel::<F16, 1, M>(kc, a, [p0], tile),
                }
            )
        }
    }
}

/// The 16-lane vector operations the kernel needs.
pub(crate) trait Vec16: Copy {
    unsafe fn zero() -> Self;
    unsafe fn splat(x: f32) -> Self;
    /// 16 values of row `kk` of a panel of element type `D`.
    unsafe fn load_panel<const D: u8>(b: *const u8, kk: usize) -> Self;
    /// Prefetches `B` ahead of row `kk` of a panel of element type `D` (a hint: nothing is
    /// read; see [`prefetch_panel_row`](super::prefetch_panel_row)).
    unsafe fn prefetch_panel<const D: u8>(_b: *const u8, _kk: usize) {}
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    /// `*dst = self` or `*dst += self` (16 unaligned values).
    unsafe fn store(self, dst: *mut f32, add: bool);
}

/// The portable stand-in of a 512-bit vector.
#[cfg(test)]
#[derive(Clone, Copy)]
pub(crate) struct Lanes16([f32; 16]);

#[cfg(test)]
impl Vec16 for Lanes16 {
    unsafe fn zero() -> Self {
        Lanes16([0.0; 16])
    }
    unsafe fn splat(x: f32) -> Self {
        Lanes16([x; 16])
    }
    unsafe fn load_panel<const D: u8>(b: *const u8, kk: usize) -> Self {
        let mut v = [0.0f32; 16];
        for (j, v) in v.iter_mut().enumerate() {
            // SAFETY: the caller guarantees a panel of `kc × 16` elements of type `D`, `kk < kc`.
            *v = unsafe {
                match D {
                    F32 => *b.cast::<f32>().add(kk * NR + j),
                    BF16 => bf16::from_bits(*b.cast::<u16>().add(kk * NR + j)).to_f32(),
                    _ => f16::from_bits(*b.cast::<u16>().add(kk * NR + j)).to_f32(),
                }
            };
        }
        Lanes16(v)
    }
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        Lanes16(std::array::from_fn(|i| a.0[i].mul_add(b.0[i], c.0[i])))
    }
    unsafe fn store(self, dst: *mut f32, add: bool) {
        for (j, &v) in self.0.iter().enumerate() {
            // SAFETY: the caller guarantees 16 writable values at `dst`.
            unsafe { *dst.add(j) = if add { *dst.add(j) + v } else { v } };
        }
    }
}

/// The `M × 16N` register tile over 16-lane vectors (`M` ≤ [`MR_MAX`], 8): `M N` accumulators
/// (16 with 8 rows and two panels), `N` `B` vectors and one broadcast. Fewer rows serve
/// the last rows of `A` without computing padding (at 32 or 64 rows, padding the last tile
/// to a full one computed 11–12% more).
///
/// # Safety
/// `a` holds `M` rows of `kc` values, each `b[n]` a panel of `kc × 16` elements of type `D`,
/// the tile (of `M` rows) is owned by the caller; `V`'s instructions are available.
#[inline(always)]
pub(crate) unsafe fn kernel_m16n<V: Vec16, const D: u8, const N: usize, const M: usize>(
    kc: usize,
    a: Sliver<'_>,
    b: [*const u8; N],
    tile: Tile<'_>,
) {
    const MR: usize = MR_MAX;
    const { assert!(M >= 1 && M <= MR) };
    // The full-width store below writes M rows: a tile of fewer would be overrun.
    assert_eq!(tile.rows, M, "tile rows");
    // SAFETY: (whole body) the function's contract.
    unsafe {
        let mut acc = [[V::zero(); N]; M];
        let ap = a.data.as_ptr();
        for kk in 0..kc {
            let mut bv = [V::zero(); N];
            for (v, &p) in bv.iter_mut().zip(&b) {
                if tile.prefetch {
                    V::prefetch_panel::<D>(p, kk);
                }
                *v = V::load_panel::<D>(p, kk);
            }
            let at = ap.add(kk);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = V::splat(*at.add(r * a.lda));
                for (acc, &v) in acc.iter_mut().zip(&bv) {
                    *acc = V::fma(x, v, *acc);
                }
            }
        }
        store_tile(&acc, tile);
    }
}

/// Writes (or adds) the accumulators of an `M × 16N` tile to `tile`, whose columns may be
/// fewer than `16N` (the last panel of a product).
///
/// # Safety
/// The tile has `M` rows and is the caller's; `V`'s instructions are available.
#[inline(always)]
pub(crate) unsafe fn store_tile<V: Vec16, const N: usize, const M: usize>(
    acc: &[[V; N]; M],
    tile: Tile<'_>,
) {
    const MR: usize = MR_MAX;
    // SAFETY: (whole body) the function's contract; full rows are stored only when the tile
    // has all `16N` columns.
    unsafe {
        if tile.cols == N * NR {
            for (r, vectors) in acc.iter().enumerate() {
                let dst = tile.row_ptr(r);
                for (n, v) in vectors.iter().enumerate() {
                    v.store(dst.add(n * NR), tile.add);
                }
            }
        } else {
            let mut out = [0.0f32; MR * 2 * NR];
            let out = &mut out[..M * 2 * NR];
            for (r, vectors) in acc.iter().enumerate() {
                for (n, v) in vectors.iter().enumerate() {
                    v.store(out.as_mut_ptr().add(r * 2 * NR + n * NR), false);
                }
            }
            tile.store(out, 2 * NR);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use std::arch::asm;

    use super::{BF16, F32, NR, Sliver, Tile, Vec16, kernel_m16n, store_tile};

    impl Vec16 for __m512 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: AVX-512F is available (the kernel's contract).
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: as above.
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load_panel<const D: u8>(b: *const u8, kk: usize) -> Self {
            // SAFETY: a panel of `kc × 16` elements of type `D`, `kk < kc`; unaligned loads.
            unsafe {
                match D {
                    F32 => _mm512_loadu_ps(b.cast::<f32>().add(kk * NR)),
                    BF16 => {
                        let half =
                            _mm256_loadu_si256(b.cast::<u16>().add(kk * NR).cast::<__m256i>());
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(half)))
                    }
                    _ => _mm512_cvtph_ps(_mm256_loadu_si256(
                        b.cast::<u16>().add(kk * NR).cast::<__m256i>(),
                    )),
                }
            }
        }
        #[inline(always)]
        unsafe fn prefetch_panel<const D: u8>(b: *const u8, kk: usize) {
            // SAFETY: an x86-64 CPU; a prefetch cannot fault.
            unsafe { super::super::prefetch_panel_row::<D>(b, kk) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: AVX-512F is available.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn store(self, dst: *mut f32, add: bool) {
            // SAFETY: 16 writable values at `dst` (the caller's contract).
            unsafe {
                if add {
                    _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), self));
                } else {
                    _mm512_storeu_ps(dst, self);
                }
            }
        }
    }

    /// One step of `k` of the 8 × 32 tile: two `B` vectors, eight broadcasts, 16 FMAs
    /// (accumulator `2r + n` for row `r`, panel `n`), at byte offsets `$a` into the rows and
    /// `$b` into the panels; with `pf`, first prefetches of both panels at offset `$p`
    /// (`PREFETCH_STEPS` rows ahead).
    macro_rules! step {
        (pf, $a:literal, $b:literal, $p:literal) => {
            concat!(prefetch!($p), step!(nopf, $a, $b, $p))
        };
        (nopf, $a:literal, $b:literal, $p:literal) => {
            concat!(
                "vmovups zmm16, zmmword ptr [{b0} + ",
                $b,
                "]\n",
                "vmovups zmm17, zmmword ptr [{b1} + ",
                $b,
                "]\n",
                "vbroadcastss zmm18, dword ptr [{a} + ",
                $a,
                "]\n",
                "vfmadd231ps zmm0, zmm18, zmm16\n",
                "vfmadd231ps zmm1, zmm18, zmm17\n",
                "vbroadcastss zmm19, dword ptr [{a} + {l} + ",
                $a,
                "]\n",
                "vfmadd231ps zmm2, zmm19, zmm16\n",
                "vfmadd231ps zmm3, zmm19, zmm17\n",
                "vbroadcastss zmm18, dword ptr [{a} + {l}*2 + ",
                $a,
                "]\n",
                "vfmadd231ps zmm4, zmm18, zmm16\n",
                "vfmadd231ps zmm5, zmm18, zmm17\n",
                "vbroadcastss zmm19, dword ptr [{a} + {l3} + ",
                $a,
                "]\n",
                "vfmadd231ps zmm6, zmm19, zmm16\n",
                "vfmadd231ps zmm7, zmm19, zmm17\n",
                "vbroadcastss zmm18, dword ptr [{a4} + ",
                $a,
                "]\n",
                "vfmadd231ps zmm8, zmm18, zmm16\n",
                "vfmadd231ps zmm9, zmm18, zmm17\n",
                "vbroadcastss zmm19, dword ptr [{a4} + {l} + ",
                $a,
                "]\n",
                "vfmadd231ps zmm10, zmm19, zmm16\n",
                "vfmadd231ps zmm11, zmm19, zmm17\n",
                "vbroadcastss zmm18, dword ptr [{a4} + {l}*2 + ",
                $a,
                "]\n",
                "vfmadd231ps zmm12, zmm18, zmm16\n",
                "vfmadd231ps zmm13, zmm18, zmm17\n",
                "vbroadcastss zmm19, dword ptr [{a4} + {l3} + ",
                $a,
                "]\n",
                "vfmadd231ps zmm14, zmm19, zmm16\n",
                "vfmadd231ps zmm15, zmm19, zmm17\n",
            )
        };
    }

    /// Prefetches of both panels at byte offset `$b`.
    macro_rules! prefetch {
        ($b:literal) => {
            concat!(
                "prefetcht0 byte ptr [{b0} + ",
                $b,
                "]\n",
                "prefetcht0 byte ptr [{b1} + ",
                $b,
                "]\n",
            )
        };
    }

    /// The 8 × 32 f32 tile's loop, four steps of `k` per turn, then one at a time; with or
    /// without prefetches of `B`.
    macro_rules! tile_8x32 {
        ($mode:ident, $kc:expr, $rows:expr, $lda:expr, $b:expr, $out:expr,
         $ahead:expr, $ahead_step:expr) => {
            asm!(
                "vpxord zmm0, zmm0, zmm0",
                "vpxord zmm1, zmm1, zmm1",
                "vpxord zmm2, zmm2, zmm2",
                "vpxord zmm3, zmm3, zmm3",
                "vpxord zmm4, zmm4, zmm4",
                "vpxord zmm5, zmm5, zmm5",
                "vpxord zmm6, zmm6, zmm6",
                "vpxord zmm7, zmm7, zmm7",
                "vpxord zmm8, zmm8, zmm8",
                "vpxord zmm9, zmm9, zmm9",
                "vpxord zmm10, zmm10, zmm10",
                "vpxord zmm11, zmm11, zmm11",
                "vpxord zmm12, zmm12, zmm12",
                "vpxord zmm13, zmm13, zmm13",
                "vpxord zmm14, zmm14, zmm14",
                "vpxord zmm15, zmm15, zmm15",
                "test {n4}, {n4}",
                "jz 3f",
                "2:",
                step!($mode, "0", "0", "1024"),
                step!($mode, "4", "64", "1088"),
                step!($mode, "8", "128", "1152"),
                step!($mode, "12", "192", "1216"),
                "prefetcht1 byte ptr [{pf}]",
                "prefetcht1 byte ptr [{pf} + {ps}]",
                "lea {pf}, [{pf} + {ps}*2]",
                "add {a}, 16",
                "add {a4}, 16",
                "add {b0}, 256",
                "add {b1}, 256",
                "dec {n4}",
                "jnz 2b",
                "3:",
                "test {n1}, {n1}",
                "jz 5f",
                "4:",
                step!($mode, "0", "0", "1024"),
                "add {a}, 4",
                "add {a4}, 4",
                "add {b0}, 64",
                "add {b1}, 64",
                "dec {n1}",
                "jnz 4b",
                "5:",
                "vmovups zmmword ptr [{out}], zmm0",
                "vmovups zmmword ptr [{out} + 64], zmm1",
                "vmovups zmmword ptr [{out} + 128], zmm2",
                "vmovups zmmword ptr [{out} + 192], zmm3",
                "vmovups zmmword ptr [{out} + 256], zmm4",
                "vmovups zmmword ptr [{out} + 320], zmm5",
                "vmovups zmmword ptr [{out} + 384], zmm6",
                "vmovups zmmword ptr [{out} + 448], zmm7",
                "vmovups zmmword ptr [{out} + 512], zmm8",
                "vmovups zmmword ptr [{out} + 576], zmm9",
                "vmovups zmmword ptr [{out} + 640], zmm10",
                "vmovups zmmword ptr [{out} + 704], zmm11",
                "vmovups zmmword ptr [{out} + 768], zmm12",
                "vmovups zmmword ptr [{out} + 832], zmm13",
                "vmovups zmmword ptr [{out} + 896], zmm14",
                "vmovups zmmword ptr [{out} + 960], zmm15",
                a = inout(reg) $rows => _,
                a4 = inout(reg) $rows.wrapping_add(4 * $lda) => _,
                l = in(reg) $lda * 4,
                l3 = in(reg) $lda * 12,
                b0 = inout(reg) $b[0] => _,
                b1 = inout(reg) $b[1] => _,
                n4 = inout(reg) $kc / 4 => _,
                n1 = inout(reg) $kc % 4 => _,
                out = in(reg) $out,
                pf = inout(reg) $ahead => _,
                ps = in(reg) $ahead_step,
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
                out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
                options(nostack),
            )
        };
    }

    /// The full 8 × 32 tile over f32 panels, the hot loop of every product with f32 weights,
    /// in assembly: the same FMAs in the same order as [`kernel_m16n`] (so the same sums,
    /// bit for bit), with `k` unrolled four times and every row addressed from two bases
    /// (the compiled loop recomputed row addresses each step: 40 instructions per 16 FMAs).
    ///
    /// # Safety
    /// As [`kernel_m16n`] with `M = 8`, `N = 2`, `D = F32`, with AVX-512F present.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn f32_8x32(kc: usize, a: Sliver<'_>, b: [*const u8; 2], tile: Tile<'_>) {
        // The loop's prefetch offsets (1024 bytes) are `PREFETCH_STEPS` rows of an f32 panel.
        const { assert!(super::super::PREFETCH_STEPS * NR * 4 == 1024) };
        let rows = a.rows_ptr(8, kc);
        let lda = a.lda;
        let mut out = [_mm512_setzero_ps(); 16];
        let dst = out.as_mut_ptr();
        // Two lines of `tile.ahead` per four steps; with nothing ahead, the first panel's
        // first line again and again (a prefetch of a cached line costs one load slot).
        let (ahead, step) = if tile.ahead.is_null() {
            (b[0], 0usize)
        } else {
            (tile.ahead, 64usize)
        };
        // SAFETY: `rows_ptr` checked 8 rows of `kc` values `lda` apart; each panel holds
        // `kc × 16` f32 (the caller's contract); `out` has room for the 16 accumulators;
        // prefetches cannot fault.
        unsafe {
            if tile.prefetch {
                tile_8x32!(pf, kc, rows, lda, b, dst, ahead, step);
            } else {
                tile_8x32!(nopf, kc, rows, lda, b, dst, ahead, step);
            }
        }
        let acc: [[__m512; 2]; 8] = std::array::from_fn(|r| [out[2 * r], out[2 * r + 1]]);
        // SAFETY: the tile is the caller's (its contract).
        unsafe { store_tile(&acc, tile) }
    }

    /// The AVX-512 kernel (see [`kernel_m16n`]).
    ///
    /// # Safety
    /// As [`kernel_m16n`], with AVX-512F, AVX2, FMA and F16C present.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn kernel<const D: u8, const N: usize, const M: usize>(
        kc: usize,
        a: Sliver<'_>,
        b: [*const u8; N],
        tile: Tile<'_>,
    ) {
        // SAFETY: the caller's contract, and AVX-512F is enabled here.
        unsafe { kernel_m16n::<__m512, D, N, M>(kc, a, b, tile) }
    }
}
