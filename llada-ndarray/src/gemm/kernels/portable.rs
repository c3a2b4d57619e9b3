//! The portable kernel: plain Rust, any CPU, a 6 × 16 tile accumulated with `mul_add`.

use super::{MR_MAX, MicroKernel, Panel, Sliver, Tile};
use crate::gemm::NR;

/// The portable kernel.
pub(crate) struct Portable;

impl MicroKernel for Portable {
    const MR: usize = 6;
    const PACKS_A: bool = false;
    const SHORT_TILES: bool = false;
    const PAIRS: bool = false;

    unsafe fn run(
        kc: usize,
        a: Sliver<'_>,
        first: Panel<'_>,
        second: Option<Panel<'_>>,
        tile: Tile<'_>,
    ) {
        tile_16(kc, a, first, tile);
        if let Some(second) = second {
            tile_16(kc, a, second, tile.columns_from(NR));
        }
    }
}

/// `tile (+)= a · b` for one panel: `MR` rows of `A` (zero-padded by the driver) by 16.
fn tile_16(kc: usize, a: Sliver<'_>, b: Panel<'_>, tile: Tile<'_>) {
    const MR: usize = Portable::MR;
    let mut acc = [0.0f32; MR_MAX * NR];
    let mut row = [0.0f32; NR];
    for kk in 0..kc {
        b.row(kk, &mut row);
        for r in 0..MR {
            let x = a.at(MR, r, kk);
            for (acc, &w) in acc[r * NR..(r + 1) * NR].iter_mut().zip(&row) {
                *acc = x.mul_add(w, *acc);
            }
        }
    }
    tile.store(&acc, NR);
}
