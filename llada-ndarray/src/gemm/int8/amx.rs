//! Q8_0 products on AMX's integer tiles (`TDPBSSD`, signed × signed bytes into 32-bit sums):
//! the same sums as the reference kernel, bit for bit. Per 32-value block, one tile product
//! gives the exact integer dot products of 16 rows and 16 columns (the panel block's 8 groups of
//! 64 bytes are a `B` tile as they lie); they are then scaled by both sides' scales into f32
//! accumulators with AVX-512, `acc = fma(dot, d_w · d_a, acc)`, as the reference does. Blocks of
//! 16 rows × 16 columns, whose accumulators stay in 16 vector registers over the depth: the
//! scaling, not the tile product, is most of the work, and keeping them in memory (32 × 32
//! blocks, four tiles) ran no faster than the VNNI kernel. The other formats go through the VNNI
//! kernel.

use std::arch::asm;
use std::arch::x86_64::*;

use super::{QK, QuantizedRows, panel_block_bytes};
use crate::gemm::{Block, COLUMN_BLOCK, KC, NR, Segment};
use crate::quant::QuantType;

/// Rows of `C` per block: one tile.
const ROWS: usize = 16;

/// The tile configuration: tmm0–1 16 rows of 16 i32, tmm4 16 rows of 32 bytes (one activation
/// block of 16 rows), tmm6 8 rows of 64 bytes (a Q8_0 panel block's codes).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

static CONFIG: TileConfig = {
    let mut bytes = [0u8; 64];
    bytes[0] = 1;
    let tiles: [(usize, u8, u8); 4] = [(0, 64, 16), (1, 64, 16), (4, 32, 16), (6, 64, 8)];
    let mut i = 0;
    while i < tiles.len() {
        let (t, colsb, rows) = tiles[i];
        bytes[16 + 2 * t] = colsb;
        bytes[48 + t] = rows;
        i += 1;
    }
    TileConfig(bytes)
};

/// Per-thread memory: the integer sums of two blocks (16 × 16 each).
#[derive(Debug, Default)]
pub(crate) struct AmxInt {
    sums: Vec<i32>,
}

/// Runs `block`'s columns of Q8_0 `segment` (panels `data`, interleaved) on the tiles.
///
/// # Safety
/// The CPU has AMX-INT8 and AVX-512F/BW/VNNI and the tile state is granted (an `Isa` with
/// [`IntKernel::Amx`](super::IntKernel::Amx) exists).
pub(super) unsafe fn task(
    product: u64,
    block: &Block<'_, '_>,
    segment: &Segment,
    data: &[u8],
    rows_scratch: &mut QuantizedRows,
) {
    let mut scratch = std::mem::take(&mut rows_scratch.amx);
    // SAFETY: this function's contract.
    unsafe { run(product, block, segment, data, rows_scratch, &mut scratch) };
    rows_scratch.amx = scratch;
}

/// [`task`] with its scratch apart.
///
/// # Safety
/// As [`task`].
#[target_feature(enable = "avx512f,f16c,avx2")]
unsafe fn run(
    product: u64,
    block: &Block<'_, '_>,
    segment: &Segment,
    data: &[u8],
    rows_scratch: &mut QuantizedRows,
    scratch: &mut AmxInt,
) {
    let (rows, cols) = (block.rows.clone(), block.cols.clone());
    if rows.is_empty() || cols.is_empty() {
        return;
    }
    let k = block.a.cols;
    let blocks = k / QK;
    rows_scratch.quantize(product, block.a, rows.clone());
    // Tiles read 16 rows at a time: rows past the last one must lie inside the buffer (their
    // sums are computed and dropped).
    let padded = rows.len().next_multiple_of(ROWS);
    if rows_scratch.quants.len() < padded * k {
        rows_scratch.quants.resize(padded * k, 0);
    }
    let q = &*rows_scratch;
    let block_bytes = panel_block_bytes(QuantType::Q8_0);
    let panel_bytes = blocks * block_bytes;
    scratch.sums.resize(2 * ROWS * NR, 0);
    let sums = &mut scratch.sums[..];
    // SAFETY: the tile state is granted (this function's contract); CONFIG is 64 bytes.
    unsafe { asm!("ldtilecfg [{}]", in(reg) &raw const CONFIG, options(nostack, readonly)) };
    let mut p0 = cols.start / NR;
    let p_last = cols.end.div_ceil(NR);
    while p0 < p_last {
        let p_end = (p0 + COLUMN_BLOCK).min(p_last);
        let mut k0 = 0;
        while k0 < k {
            // As the other integer kernels: passes of KC, each summed from zero, then added.
            let kc = KC.min(k - k0);
            let (b0, nb) = (k0 / QK, kc / QK);
            let mut r0 = 0;
            while r0 < rows.len() {
                let valid = ROWS.min(rows.len() - r0);
                let quants = &q.quants[r0 * k + k0..];
                assert!(quants.len() >= (ROWS - 1) * k + kc);
                // Row r's scales: the blocks from b0 of row r0 + r (the rows past `valid` reuse
                // the last valid row's, and are dropped).
                let scales: [&[f32]; ROWS] = std::array::from_fn(|r| {
                    let at = (r0 + r.min(valid - 1)) * blocks + b0;
                    &q.scales[at..at + nb]
                });
                for p in p0..p_end {
                    let at = (p - segment.panels.start) * panel_bytes + b0 * block_bytes;
                    let panel = &data[at..at + nb * block_bytes];
                    let mut acc = [_mm512_setzero_ps(); ROWS];
                    for b in 0..nb {
                        let weights = &panel[b * block_bytes..(b + 1) * block_bytes];
                        let sums = &mut sums[(b % 2) * ROWS * NR..][..ROWS * NR];
                        // SAFETY: 16 rows of 32 bytes `k` apart (asserted), a panel block of 16
                        // scales and 8 × 64 bytes; `sums` holds 16 × 16 values. Tiles 0 and 1
                        // alternate, so that a block's tile product need not wait for the
                        // previous block's sums to be read.
                        unsafe {
                            dot_block(quants[b * QK..].as_ptr(), k, weights, b % 2 == 1, sums)
                        };
                        // SAFETY: 16 values at each address (the panel block's first 32 bytes
                        // are its 16 f16 scales; `sums` holds 16 × 16).
                        unsafe {
                            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(weights.as_ptr().cast()));
                            for (r, acc) in acc.iter_mut().enumerate() {
                                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(scales[r][b]));
                                let dot = _mm512_cvtepi32_ps(_mm512_loadu_si512(
                                    sums.as_ptr().add(r * NR).cast(),
                                ));
                                *acc = _mm512_fmadd_ps(dot, scale, *acc);
                            }
                        }
                    }
                    let j0 = p * NR;
                    let ncols = NR.min(cols.end - j0);
                    let add = block.accumulate || k0 > 0;
                    for (r, acc) in acc.iter().enumerate().take(valid) {
                        // SAFETY: this task owns its rectangle of C; 16 values are written only
                        // where 16 columns lie in it.
                        unsafe {
                            let dst = block.c.at(rows.start + r0 + r, j0, ncols);
                            if ncols == NR {
                                let sum = if add {
                                    _mm512_add_ps(_mm512_loadu_ps(dst), *acc)
                                } else {
                                    *acc
                                };
                                _mm512_storeu_ps(dst, sum);
                            } else {
                                let mut out = [0.0f32; NR];
                                _mm512_storeu_ps(out.as_mut_ptr(), *acc);
                                let dst = std::slice::from_raw_parts_mut(dst, ncols);
                                if add {
                                    dst.iter_mut().zip(&out).for_each(|(d, s)| *d += s);
                                } else {
                                    dst.copy_from_slice(&out[..ncols]);
                                }
                            }
                        }
                    }
                }
                r0 += ROWS;
            }
            k0 += kc;
        }
        p0 = p_end;
    }
    // SAFETY: as ldtilecfg above.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// The integer dot products of one 32-value block: 16 rows of quants (`lda` bytes apart) by
/// the 16 columns of a Q8_0 panel block, into `sums` (16 rows of 16), through tile 1 if `odd`
/// else tile 0.
///
/// # Safety
/// The tile configuration is loaded; `a` holds 16 rows of 32 bytes `lda` apart.
#[inline(always)]
unsafe fn dot_block(a: *const i8, lda: usize, w: &[u8], odd: bool, sums: &mut [i32]) {
    assert!(w.len() >= 32 + 8 * 64 && sums.len() >= ROWS * NR);
    let (b, s) = (w[32..].as_ptr(), sums.as_mut_ptr());
    // SAFETY: the caller's contract, and the lengths asserted.
    unsafe {
        if odd {
            asm!(
                "tilezero tmm1",
                "tileloadd tmm4, [{a} + {lda}*1]",
                "tileloadd tmm6, [{b} + {ldb}*1]",
                "tdpbssd tmm1, tmm4, tmm6",
                "tilestored [{s} + {lds}*1], tmm1",
                a = in(reg) a, lda = in(reg) lda, b = in(reg) b, ldb = in(reg) 64usize,
                s = in(reg) s, lds = in(reg) NR * 4,
                options(nostack),
            );
        } else {
            asm!(
                "tilezero tmm0",
                "tileloadd tmm4, [{a} + {lda}*1]",
                "tileloadd tmm6, [{b} + {ldb}*1]",
                "tdpbssd tmm0, tmm4, tmm6",
                "tilestored [{s} + {lds}*1], tmm0",
                a = in(reg) a, lda = in(reg) lda, b = in(reg) b, ldb = in(reg) 64usize,
                s = in(reg) s, lds = in(reg) NR * 4,
                options(nostack),
            );
        }
    }
}
