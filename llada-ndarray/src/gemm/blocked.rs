//! The floating-point products' blocked loops: passes over the depth, column blocks of `B`
//! read once and serving every row of `A`, and the micro-kernel of the context's [`Isa`] (or
//! the AMX kernel's own loops) on each tile.

use super::blocking::MAX_COLUMN_PANELS;
use super::kernels::{self, MicroKernel, Sliver, Tile};
use super::pack::{self, copy_rows, panel};
use super::{Block, Blocking, GemmScratch, Isa, KC, NR, Rhs};
use crate::Kernel;

/// Depth of each pass of the floating-point kernels over a product of inner dimension `k`:
/// as few passes as `most` (the [`Blocking`]'s depth, a multiple of 16) allows, of equal depth
/// (a multiple of 16, so that each pass starts `A`'s rows on a cache line).
///
/// Every pass but the first reads and writes the task's block of `C` again, and that block
/// (rows × 128 columns, 512 KB at 1024 rows) does not stay in L2 beside the rows of `A`
/// streaming through. With passes 256 deep (this code's `KC` before), the 220 M model's
/// forward at 1024 tokens on AMD Zen 4 ran in two states that came and went in time, about
/// 2.17 and 2.55 s, the slow one spending its extra time on the stores of `C`; with passes
/// 1024 deep, alternated run by run in one process, it ran 2.19–2.24 s in the slow state
/// (2.50–2.64 s with 256). Side by side on 2 threads, fastest-state medians, 256 → 1024 deep:
/// 0.0694 → 0.0631 s at 32 tokens, 0.127 → 0.120 s at 64, 0.499 → 0.468 s at 256, 2.19 →
/// 2.11 s at 1024; the AVX2 kernel 0.082 → 0.070 s at 32 and 0.525 → 0.476 s at 256. The
/// default passes stay at most 1024 deep so that a column block of `B` (kc × 128 values,
/// 512 KB in f32) still fits L2.
pub(super) fn pass_depth(k: usize, most: usize) -> usize {
    let passes = k.div_ceil(most).max(1);
    k.div_ceil(passes).next_multiple_of(16).min(most)
}

/// Runs one rectangle with `isa`'s floating-point kernel (`product` numbers the product, for
/// kernels that keep rows of `A` converted for its other tasks).
pub(super) fn float_task(isa: Isa, product: u64, block: Block<'_, '_>, scratch: &mut GemmScratch) {
    if block.is_trivial() {
        return;
    }
    // Only the AMX kernel (x86-64) keeps converted rows per product.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = product;
    // SAFETY: an `Isa` exists only for kernels this CPU runs.
    unsafe {
        match isa.kernel() {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => kernels::amx::task(block, product, scratch),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => task::<kernels::avx512::Avx512>(block, isa.blocking(), scratch),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => task::<kernels::avx2::Avx2>(block, isa.blocking(), scratch),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => task::<kernels::neon::Neon>(block, isa.blocking(), scratch),
            _ => task::<kernels::portable::Portable>(block, isa.blocking(), scratch),
        }
    }
}

/// The blocked loops around kernel `K`, in `blocking`'s blocks, on a rectangle that is not
/// [trivial](Block::is_trivial).
///
/// # Safety
/// The CPU runs `K`.
unsafe fn task<K: MicroKernel>(
    block: Block<'_, '_>,
    blocking: Blocking,
    scratch: &mut GemmScratch,
) {
    let Block {
        a,
        b,
        c,
        rows,
        cols,
        accumulate,
    } = block;
    let k = a.cols;
    let mr = K::MR;
    let GemmScratch {
        a: apack,
        b: widened,
        ..
    } = scratch;
    let quantized = pack::has_quantized(b);
    let column_panels = blocking.panels(rows.len());
    if quantized && widened.len() < column_panels * KC * NR {
        widened.resize(column_panels * KC * NR, 0.0);
    }
    debug_assert_eq!(
        cols.start % NR,
        0,
        "column chunks start on panel boundaries"
    );
    // Loop order (as MLAS does for weights): a block of columns of B (column_panels panels,
    // kc deep: L2) is read from memory once and serves every row of A; the A sliver (mr rows,
    // kc deep: L1 or L2) serves every panel of the block.
    let depth = if quantized {
        KC
    } else {
        pass_depth(k, blocking.depth())
    };
    let mut p0 = cols.start / NR;
    while p0 * NR < cols.end {
        let p_end = (p0 + column_panels).min(cols.end.div_ceil(NR));
        let mut k0 = 0;
        while k0 < k {
            let kc = depth.min(k - k0);
            let add = accumulate || k0 > 0;
            // Quantized panels of this block are widened once, for every row tile, and every
            // panel slice is looked up once, not once per row tile.
            if quantized {
                pack::widen_quantized(b, p0..p_end, k0, kc, widened);
            }
            let widened: &[f32] = widened;
            let mut block_panels = [None; MAX_COLUMN_PANELS];
            for (slot, p) in (p0..p_end).enumerate() {
                block_panels[slot] = Some(panel(b, p, k0, kc, widened, slot));
            }
            let block_panel = |p: usize| block_panels[p - p0].expect("a panel of this block");
            let ahead = if K::PREFETCHES_AHEAD && !quantized {
                // What this task reads after this pass: this block's next pass, or its next
                // block's first.
                let next = if k0 + kc < k {
                    (p0..p_end, k0 + kc)
                } else {
                    (p_end..(p_end + column_panels).min(cols.end.div_ceil(NR)), 0)
                };
                let calls = (rows.end - rows.start).div_ceil(mr) * (p_end - p0).div_ceil(2);
                Ahead::new(b, next, depth, calls, kc)
            } else {
                Ahead::NONE
            };
            let mut calls = 0;
            let mut row0 = rows.start;
            while row0 < rows.end {
                let tile_rows = mr.min(rows.end - row0);
                let sliver = if (tile_rows == mr || K::SHORT_TILES) && a.col_stride == 1 {
                    // The kernel reads the rows of A where they are (a kernel with short
                    // tiles reads a short last sliver in place too).
                    Sliver {
                        data: &a.data[row0 * a.row_stride + k0..],
                        lda: a.row_stride,
                    }
                } else {
                    // A strided A, or a short last sliver for a kernel without short tiles.
                    copy_rows(a, row0, tile_rows, k0, kc, mr, apack);
                    Sliver {
                        data: &apack[..mr * kc],
                        lda: kc,
                    }
                };
                let mut p = p0;
                while p < p_end {
                    let j0 = p * NR;
                    let pair = K::PAIRS && p + 1 < p_end;
                    let nc = (if pair { 2 * NR } else { NR }).min(cols.end - j0);
                    let first = block_panel(p);
                    let second = pair.then(|| block_panel(p + 1));
                    let tile = Tile {
                        c,
                        row: row0,
                        col: j0,
                        rows: tile_rows,
                        cols: nc,
                        add,
                        prefetch: row0 == rows.start,
                        ahead: ahead.for_call(calls),
                    };
                    calls += 1;
                    // SAFETY: the CPU runs K (this function's contract); the sliver and the
                    // panels hold `kc` rows in K's layout; the tile is inside this task's
                    // rectangle of C.
                    unsafe { K::run(kc, sliver, first, second, tile) };
                    p += if pair { 2 } else { 1 };
                }
                row0 += tile_rows;
            }
            k0 += kc;
        }
        p0 = p_end;
    }
}

/// The f32 panel slices of `B` a task reads after the current pass, and how a pass's kernel
/// calls share prefetching them into L2 ([`Tile::ahead`]): every `spread`-th call takes the
/// next [`kernels::ahead_lines`] lines, so that the lines come in evenly over the pass rather
/// than all in its first calls.
struct Ahead {
    slices: [(*const u8, usize); MAX_COLUMN_PANELS],
    lines_per_call: usize,
    /// 0: nothing to prefetch.
    spread: usize,
}

impl Ahead {
    const NONE: Self = Self {
        slices: [(std::ptr::null(), 0); MAX_COLUMN_PANELS],
        lines_per_call: 0,
        spread: 0,
    };

    /// `next`: the panels and first row of the next pass (each at most `depth` deep, as the
    /// passes are); `calls`: the kernel calls of the current pass, each `kc` deep.
    fn new(
        b: &Rhs<'_>,
        (panels, k0): (std::ops::Range<usize>, usize),
        depth: usize,
        calls: usize,
        kc: usize,
    ) -> Self {
        let (k, _) = b.dims();
        let next_kc = depth.min(k - k0);
        let mut slices = [(std::ptr::null(), 0); MAX_COLUMN_PANELS];
        for (slot, q) in panels.enumerate() {
            // Quantized panels are widened per pass (no prefetching them); the caller passes
            // none.
            if let (kernels::F32, ptr, len) = panel(b, q, k0, next_kc, &[], 0).parts() {
                slices[slot] = (ptr, len * 4 / 64);
            }
        }
        let lines: usize = slices.iter().map(|&(_, lines)| lines).sum();
        let lines_per_call = kernels::ahead_lines(kc);
        Self {
            slices,
            lines_per_call,
            spread: (calls * lines_per_call / lines.max(1)).max(1),
        }
    }

    /// Where call `call` of the pass prefetches from (null: nothing).
    fn for_call(&self, call: usize) -> *const u8 {
        if self.spread == 0 || !call.is_multiple_of(self.spread) {
            return std::ptr::null();
        }
        let mut line = call / self.spread * self.lines_per_call;
        for &(at, lines) in &self.slices {
            if line < lines {
                return at.wrapping_add(line * 64);
            }
            line -= lines;
        }
        std::ptr::null()
    }
}
