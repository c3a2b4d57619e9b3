//! The micro-kernels: each keeps a tile of `C` in registers while it walks `kc` rows of one or
//! two `B` panels. A new instruction set is one new file here implementing [`MicroKernel`],
//! one [`Kernel`](crate::Kernel) variant and one arm in [`super::gemm_task`]'s dispatch.

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
pub(crate) mod avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
pub(crate) mod portable;

use half::{bf16, f16};

use super::Out;

/// `$call` with the const `$m` set to `$rows`, one of the literals listed (a kernel's tile
/// heights, each its own instance); any other count is a bug of the caller and panics.
macro_rules! with_rows {
    ($rows:expr, $m:ident in [$($n:literal),+], $call:expr) => {
        match $rows {
            $($n => {
                const $m: usize = $n;
                $call
            })+
            rows => unreachable!("a tile of {rows} rows"),
        }
    };
}
pub(crate) use with_rows;

/// What the blocked driver needs to know of a kernel, and the kernel itself.
pub(crate) trait MicroKernel {
    /// Rows of the register tile (at most [`MR_MAX`]).
    const MR: usize;
    /// Whether the kernel has tiles of fewer rows for the last rows of `A`, read in place
    /// (else they are copied and zero-padded to `MR` rows).
    const SHORT_TILES: bool;
    /// Whether the kernel takes two panels (32 columns) at once.
    const PAIRS: bool;
    /// Whether the kernel prefetches [`Tile::ahead`] (its f32 tile of two panels does).
    const PREFETCHES_AHEAD: bool = false;

    /// `tile (+)= a · [first | second]` over `kc` values of depth.
    ///
    /// # Safety
    /// The CPU has the kernel's instructions (an [`Isa`](super::isa::Isa) of this kernel was
    /// made); `a` holds the tile's rows of `kc` values (`MR` of them unless `SHORT_TILES`);
    /// each panel holds `kc × 16` values; the tile lies inside its output view and no other
    /// task writes it.
    unsafe fn run(
        kc: usize,
        a: Sliver<'_>,
        first: Panel<'_>,
        second: Option<Panel<'_>>,
        tile: Tile<'_>,
    );
}

/// Asks for row `kk + PREFETCH_STEPS` of a panel of element type `D` (one of [`F32`],
/// [`BF16`], [`F16`]) at `b` to be brought into L1: what the x86 kernels do on a tile whose
/// [`Tile::prefetch`] is set.
///
/// # Safety
/// SSE is available (any x86-64 CPU). The address may lie past the panel's end: a prefetch
/// reads nothing and cannot fault, and `wrapping_add` keeps the arithmetic defined.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn prefetch_panel_row<const D: u8>(b: *const u8, kk: usize) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    let bytes = if D == F32 { 4 } else { 2 };
    let at = b.wrapping_add((kk + PREFETCH_STEPS) * super::NR * bytes);
    // SAFETY: the function's contract.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) }
}

/// Steps of `k` ahead that the x86 kernels prefetch `B` (1 KB of an f32 panel).
#[cfg(target_arch = "x86_64")]
const PREFETCH_STEPS: usize = 16;

/// Most rows of any kernel's register tile (the AVX-512 kernel's).
pub(crate) const MR_MAX: usize = 8;

/// Cache lines of [`Tile::ahead`] a kernel that [prefetches ahead](MicroKernel::PREFETCHES_AHEAD)
/// fetches in a call `kc` deep: two per four steps.
pub(crate) const fn ahead_lines(kc: usize) -> usize {
    kc / 4 * 2
}

/// Element type of a panel, as a const parameter of the kernels.
pub(crate) const F32: u8 = 0;
pub(crate) const BF16: u8 = 1;
pub(crate) const F16: u8 = 2;

/// The `A` operand of one micro-kernel call: the tile's rows (at most `MR`) by `kc` columns,
/// row-major, rows `lda` apart, read where they are (packing them cost the AVX-512 kernel a
/// third of its time, as the same rows were packed again for every column block).
#[derive(Clone, Copy)]
pub(crate) struct Sliver<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) lda: usize,
}

impl Sliver<'_> {
    /// The first row's address, once checked that `rows` rows of `kc` values (`lda` apart)
    /// lie inside `data`: what the unsafe kernels read.
    pub(crate) fn rows_ptr(&self, rows: usize, kc: usize) -> *const f32 {
        assert!(
            rows > 0 && kc > 0 && self.data.len() >= (rows - 1) * self.lda + kc,
            "A sliver out of bounds: {rows} rows of {kc} values, {} apart, in {}",
            self.lda,
            self.data.len()
        );
        self.data.as_ptr()
    }
}

/// A `B` panel slice handed to the micro-kernel: `kc × 16` values.
#[derive(Clone, Copy)]
pub(crate) enum Panel<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
}

impl Panel<'_> {
    /// The element type (one of [`F32`], [`BF16`], [`F16`]), the data and its length.
    pub(crate) fn parts(self) -> (u8, *const u8, usize) {
        match self {
            Panel::F32(p) => (F32, p.as_ptr().cast(), p.len()),
            Panel::Bf16(p) => (BF16, p.as_ptr().cast(), p.len()),
            Panel::F16(p) => (F16, p.as_ptr().cast(), p.len()),
        }
    }
}

/// Where a register tile goes: `rows × cols` of `c` at (`row`, `col`), written or added.
#[derive(Clone, Copy)]
pub(crate) struct Tile<'a> {
    pub(crate) c: Out<'a>,
    pub(crate) row: usize,
    pub(crate) col: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) add: bool,
    /// Whether the kernel should prefetch `B`: the first row tile of a column block reads its
    /// panels from memory (a model's weights fit no cache), and the hardware prefetcher
    /// alone leaves it waiting; later tiles find them in L2.
    pub(crate) prefetch: bool,
    /// Where the kernel may prefetch into L2, as it goes, the next part of `B` its task will
    /// read ([`ahead_lines`] cache lines from here per call), so that the task's next column
    /// block does not come from memory all at once; null where there is none. Only kernels that
    /// [prefetch ahead](MicroKernel::PREFETCHES_AHEAD) read it: none outside x86-64.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) ahead: *const u8,
}

impl Tile<'_> {
    /// A pointer to row `r` of the tile, valid for `self.cols` values.
    ///
    /// # Safety
    /// No other task writes this tile (tasks own disjoint rectangles of `C`).
    #[inline(always)]
    pub(crate) unsafe fn row_ptr(&self, r: usize) -> *mut f32 {
        debug_assert!(r < self.rows);
        // SAFETY: the caller's contract; bounds are checked by `Out::at`.
        unsafe { self.c.at(self.row + r, self.col, self.cols) }
    }

    /// Writes (or adds) `acc` (row-major, rows `ld` apart) to the valid part of the tile.
    pub(crate) fn store(&self, acc: &[f32], ld: usize) {
        for r in 0..self.rows {
            // SAFETY: no other task writes this tile (tasks own disjoint rectangles of C).
            let dst = unsafe { self.c.row_mut(self.row + r, self.col, self.cols) };
            let src = &acc[r * ld..r * ld + self.cols];
            if self.add {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d += s;
                }
            } else {
                dst.copy_from_slice(src);
            }
        }
    }

    /// The same rows, columns `from..` only.
    pub(crate) fn columns_from(&self, from: usize) -> Self {
        Self {
            col: self.col + from,
            cols: self.cols.saturating_sub(from),
            ..*self
        }
    }
}
