//! The portable kernel: plain safe Rust over fixed-width lanes, so that the compiler emits
//! SIMD for whatever the target has (SSE2 on baseline x86-64, NEON, wasm `simd128`, RISC-V V)
//! and scalar code where it has none. A tile is up to 4 rows × 16 columns of `[f32; 16]`
//! accumulators (16 vectors of SSE2 or NEON): on the mid-size model at 256 tokens, built for
//! baseline x86-64, 4 × 16 ran at 3.1× the AVX2 kernel's time, 3 × 16 and 2 × 16 at 3.3×,
//! 6 × 8 at 3.4×. Products and sums are separate operations (`a * b + c`): Rust never fuses
//! them, and `f32::mul_add` is a libm call per element on a target without FMA (the kernel
//! before this one used it: a generation took 28× the AVX2 kernel's time).

use super::{MicroKernel, Panel, Sliver, Tile, with_rows};
use crate::gemm::NR;

/// The portable kernel.
pub(crate) struct Portable;

impl MicroKernel for Portable {
    const MR: usize = 4;
    const SHORT_TILES: bool = true;
    const PAIRS: bool = false;

    unsafe fn run(
        kc: usize,
        a: Sliver<'_>,
        first: Panel<'_>,
        second: Option<Panel<'_>>,
        tile: Tile<'_>,
    ) {
        for (b, tile) in [Some(first), second]
            .into_iter()
            .flatten()
            .zip([tile, tile.columns_from(NR)])
        {
            with_rows!(tile.rows, M in [1, 2, 3, 4], tile_rows::<M>(kc, a, b, tile));
        }
    }
}

/// `tile (+)= a · b` for one panel and `M` rows of `A`, one loop per element type, each with
/// its own accumulators (sharing them across the three loops, LLVM's SLP vectoriser left all
/// rows but the first as scalar code: 16× slower than AVX2).
fn tile_rows<const M: usize>(kc: usize, a: Sliver<'_>, b: Panel<'_>, tile: Tile<'_>) {
    let rows: [&[f32]; M] = std::array::from_fn(|r| &a.data[r * a.lda..r * a.lda + kc]);
    match b {
        Panel::F32(p) => accumulate(rows, p[..kc * NR].chunks_exact(NR), tile, |w| {
            w.try_into().expect("16 values")
        }),
        // bf16 is the upper half of an f32: a shift, which vectorises.
        Panel::Bf16(p) => accumulate(rows, p[..kc * NR].chunks_exact(NR), tile, |w| {
            std::array::from_fn(|j| f32::from_bits(u32::from(w[j].to_bits()) << 16))
        }),
        Panel::F16(p) => accumulate(rows, p[..kc * NR].chunks_exact(NR), tile, |w| {
            std::array::from_fn(|j| w[j].to_f32())
        }),
    }
}

/// `tile (+)= Σₖ rows[·][k] · widen(panel row k)` over the panel rows `b`.
#[inline(always)]
fn accumulate<'b, const M: usize, T: 'b>(
    rows: [&[f32]; M],
    b: std::slice::ChunksExact<'b, T>,
    tile: Tile<'_>,
    widen: impl Fn(&'b [T]) -> [f32; NR],
) {
    let mut acc = [[0.0f32; NR]; M];
    for (kk, w) in b.enumerate() {
        step(&mut acc, rows.map(|row| row[kk]), &widen(w));
    }
    tile.store(acc.as_flattened(), NR);
}

/// `acc[r] += x[r] · w` for every row: 16 independent lanes per row.
#[inline(always)]
fn step<const M: usize>(acc: &mut [[f32; NR]; M], x: [f32; M], w: &[f32; NR]) {
    for (acc, x) in acc.iter_mut().zip(x) {
        for (acc, &w) in acc.iter_mut().zip(w) {
            *acc += x * w;
        }
    }
}
