//! Integer products for Q8_0 and Q4_0 weights: the rows of `A` are quantized once per product
//! into 8-bit blocks of 32 values (an f32 scale per block, as ggml's Q8_0 activations), and
//! each block's dot products with the weights' blocks are summed in 32-bit integers
//! (`vpdpbusd` with AVX-512 VNNI), then scaled by both blocks' scales into f32 accumulators.
//! This is what llama.cpp does for these formats on CPUs; it trades a small error (the
//! activations' rounding, documented in `tests/int8.rs` of this crate) for reading each weight
//! byte once per 64 multiply-adds.
//!
//! Weights of these formats are stored interleaved for it (same bytes per block as the file):
//! for each panel of 16 rows and each block of 32 values along `k`, the 16 rows' f16 scales,
//! then the quants in groups of 4 consecutive values, `[group][row][4]`, so that one 64-byte
//! load holds 4 values of each of 16 rows. Q8_0 keeps its signed bytes (8 groups of 64 bytes);
//! Q4_0 keeps its 4-bit codes (0..=15, value = code − 8), two groups per byte: 4 runs of 64
//! bytes, group `2j` in the low nibbles and group `2j + 1` in the high ones.

#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
pub(super) mod vnni;

use half::f16;

use super::kernels::Tile;
use super::{Block, COLUMN_BLOCK, KC, MatRef, NR, PanelData, Rhs, Segment};
use crate::quant::QuantType;

/// Values per activation block (and per weight block of both formats).
pub(crate) const QK: usize = 32;
/// Rows of a register tile of the integer kernels.
pub(crate) const MR: usize = 6;

/// Whether `ty`'s panels are stored interleaved for the integer kernels.
pub(crate) const fn is_interleaved(ty: QuantType) -> bool {
    matches!(ty, QuantType::Q8_0 | QuantType::Q4_0)
}

/// Rewrites one panel's block of 16 rows (`16 × ty.block_bytes()` bytes: the rows' ggml blocks
/// one after the other) into the interleaved layout, in place.
pub(crate) fn interleave(ty: QuantType, blocks: &mut [u8]) {
    let bytes = ty.block_bytes();
    debug_assert!(is_interleaved(ty) && blocks.len() == NR * bytes);
    let mut out = [0u8; NR * 34];
    for c in 0..NR {
        out[2 * c..2 * c + 2].copy_from_slice(&blocks[c * bytes..c * bytes + 2]);
        let quants = &blocks[c * bytes + 2..(c + 1) * bytes];
        for k in 0..QK {
            match ty {
                QuantType::Q8_0 => out[2 * NR + (k / 4) * 64 + c * 4 + k % 4] = quants[k],
                _ => {
                    let code = if k < 16 {
                        quants[k] & 0x0F
                    } else {
                        quants[k - 16] >> 4
                    };
                    out[2 * NR + (k / 8) * 64 + c * 4 + k % 4] |= code << (4 * ((k / 4) % 2));
                }
            }
        }
    }
    blocks.copy_from_slice(&out[..NR * bytes]);
}

/// Widens one interleaved panel block into `out` as `[32][16]` f32 (the values ggml's
/// dequantization gives).
pub(crate) fn widen_interleaved(ty: QuantType, block: &[u8], out: &mut [f32]) {
    let scales: [f32; NR] =
        std::array::from_fn(|c| f16::from_le_bytes([block[2 * c], block[2 * c + 1]]).to_f32());
    let quants = &block[2 * NR..];
    for k in 0..QK {
        for (c, &d) in scales.iter().enumerate() {
            let q = match ty {
                QuantType::Q8_0 => i32::from(quants[(k / 4) * 64 + c * 4 + k % 4] as i8),
                _ => {
                    let byte = quants[(k / 8) * 64 + c * 4 + k % 4];
                    i32::from((byte >> (4 * ((k / 4) % 2))) & 0x0F) - 8
                }
            };
            out[k * NR + c] = q as f32 * d;
        }
    }
}

/// Rows of `A` quantized to 8-bit blocks: per row, `k` signed bytes, and per block its scale
/// and the sum of its quants. Kept in a thread's scratch and reused by the tasks of one
/// product that share the rows.
#[derive(Debug, Default)]
pub(crate) struct QuantizedRows {
    quants: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
    /// (product, first row, rows, k) of what the buffers hold.
    holds: Option<(u64, usize, usize, usize)>,
}

impl QuantizedRows {
    /// Quantizes rows `rows` of `a` unless they are what the buffers hold for `product`.
    fn quantize(&mut self, product: u64, a: &MatRef<'_>, rows: std::ops::Range<usize>) {
        let k = a.cols;
        let key = (product, rows.start, rows.len(), k);
        if self.holds == Some(key) {
            return;
        }
        let blocks = k / QK;
        let (n, nb) = (rows.len() * k, rows.len() * blocks);
        if self.quants.len() < n {
            self.quants.resize(n, 0);
        }
        if self.scales.len() < nb {
            self.scales.resize(nb, 0.0);
            self.sums.resize(nb, 0);
        }
        let mut gathered = [0.0f32; QK];
        for (i, r) in rows.enumerate() {
            for b in 0..blocks {
                let values: &[f32; QK] = if a.col_stride == 1 {
                    let at = r * a.row_stride + b * QK;
                    a.data[at..at + QK].try_into().expect("32 values")
                } else {
                    for (j, v) in gathered.iter_mut().enumerate() {
                        *v = a.at(r, b * QK + j);
                    }
                    &gathered
                };
                let q = &mut self.quants[i * k + b * QK..][..QK];
                let (scale, sum) = quantize_block(values, q);
                self.scales[i * blocks + b] = scale;
                self.sums[i * blocks + b] = sum;
            }
        }
        self.holds = Some(key);
    }
}

/// ggml's Q8_0 quantization of 32 values (scale `max |x| / 127`), with the scale kept in f32
/// and the quants rounded half to even (ggml's vector paths do the same; its scalar reference
/// rounds half away from zero); returns the scale and the quants' sum.
fn quantize_block(values: &[f32; QK], out: &mut [i8]) -> (f32, i32) {
    // Adding and subtracting 1.5 · 2²³ rounds a float of magnitude below 2²² to an integer,
    // half to even, in plain float arithmetic that compilers vectorise.
    const ROUND: f32 = 12_582_912.0;
    let amax = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = amax / 127.0;
    let inverse = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let mut sum = 0;
    for (o, &v) in out.iter_mut().zip(values) {
        // In -127..=127: |v · inverse| ≤ 127 (a NaN saturates to 0).
        let q = ((v * inverse + ROUND) - ROUND) as i8;
        *o = q;
        sum += i32::from(q);
    }
    (scale, sum)
}

/// The operands of one integer micro-kernel call: `rows` quantized rows (`lda` bytes apart,
/// their block scales and sums `ldb` apart) and one or two panels, `blocks` blocks deep.
#[derive(Clone, Copy)]
pub(crate) struct IntTile<'a> {
    pub(crate) ty: QuantType,
    pub(crate) blocks: usize,
    pub(crate) quants: &'a [i8],
    pub(crate) lda: usize,
    pub(crate) scales: &'a [f32],
    pub(crate) sums: &'a [i32],
    pub(crate) ldb: usize,
    /// Each panel's first block; `NR · ty.block_bytes()` bytes per block.
    pub(crate) panels: [Option<&'a [u8]>; 2],
    pub(crate) tile: Tile<'a>,
}

impl IntTile<'_> {
    fn check(&self) {
        let rows = self.tile.rows;
        assert!((1..=MR).contains(&rows) && self.panels[0].is_some());
        assert!(self.quants.len() >= (rows - 1) * self.lda + self.blocks * QK);
        assert!(self.scales.len() >= (rows - 1) * self.ldb + self.blocks);
        assert!(self.sums.len() >= (rows - 1) * self.ldb + self.blocks);
        let bytes = self.blocks * NR * self.ty.block_bytes();
        assert!(self.panels.iter().flatten().all(|p| p.len() >= bytes));
        assert!(self.tile.cols <= NR * self.panels.iter().flatten().count());
    }
}

/// The integer kernels' reference: the same sums in plain Rust (tests compare the vector
/// kernels with it, and it shows what they compute).
pub(crate) fn reference_kernel(t: IntTile<'_>) {
    t.check();
    let bytes = NR * t.ty.block_bytes();
    let offset = if t.ty == QuantType::Q8_0 { 0 } else { 8 };
    let mut acc = [0.0f32; MR * 2 * NR];
    let mut widened = [0.0f32; QK * NR];
    for (n, panel) in t.panels.iter().enumerate() {
        let Some(panel) = panel else { continue };
        for b in 0..t.blocks {
            let block = &panel[b * bytes..(b + 1) * bytes];
            let scales: [f32; NR] = std::array::from_fn(|c| {
                f16::from_le_bytes([block[2 * c], block[2 * c + 1]]).to_f32()
            });
            // The codes (value + offset), from the widened values over the scales.
            widen_codes(t.ty, block, &mut widened);
            for r in 0..t.tile.rows {
                let q = &t.quants[r * t.lda + b * QK..][..QK];
                let (da, sa) = (t.scales[r * t.ldb + b], t.sums[r * t.ldb + b]);
                for (c, &dw) in scales.iter().enumerate() {
                    let dot: i32 = (0..QK)
                        .map(|k| widened[k * NR + c] as i32 * i32::from(q[k]))
                        .sum();
                    let at = r * 2 * NR + n * NR + c;
                    acc[at] = ((dot - offset * sa) as f32).mul_add(dw * da, acc[at]);
                }
            }
        }
    }
    t.tile.store(&acc, 2 * NR);
}

/// The codes of an interleaved block as f32 `[32][16]`: Q8_0's quants, Q4_0's 0..=15.
fn widen_codes(ty: QuantType, block: &[u8], out: &mut [f32]) {
    let quants = &block[2 * NR..];
    for k in 0..QK {
        for c in 0..NR {
            out[k * NR + c] = match ty {
                QuantType::Q8_0 => f32::from(quants[(k / 4) * 64 + c * 4 + k % 4] as i8),
                _ => f32::from((quants[(k / 8) * 64 + c * 4 + k % 4] >> (4 * ((k / 4) % 2))) & 15),
            };
        }
    }
}

/// The kernel an integer product runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntKernel {
    /// [`reference_kernel`] (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Reference,
    /// AVX-512 with VNNI.
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

impl IntKernel {
    /// # Safety
    /// The CPU runs the kernel.
    unsafe fn run(self, t: IntTile<'_>) {
        match self {
            IntKernel::Reference => reference_kernel(t),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller's contract.
            IntKernel::Vnni => unsafe { vnni::run(t) },
        }
    }
}

/// Whether the columns of `block` that lie in interleaved Q8_0/Q4_0 segments go through the
/// integer kernels: `b` is a packed weight, and `k` a whole number of blocks.
pub(super) fn applies(b: &Rhs<'_>) -> bool {
    let Rhs::Packed(w) = b else { return false };
    w.k % QK == 0
        && w.segments
            .iter()
            .any(|s| matches!(&s.data, PanelData::Quant { ty, .. } if is_interleaved(*ty)))
}

/// Runs `block`, whose columns lie in `segment` (interleaved `ty` panels `data`), with
/// `kernel`; the rows of `A` are quantized into `rows_scratch` once per `product`.
///
/// # Safety
/// The CPU runs `kernel`.
pub(super) unsafe fn task(
    kernel: IntKernel,
    product: u64,
    block: &Block<'_, '_>,
    segment: &Segment,
    ty: QuantType,
    data: &[u8],
    rows_scratch: &mut QuantizedRows,
) {
    let (rows, cols) = (block.rows.clone(), block.cols.clone());
    debug_assert!(
        cols.start % NR == 0
            && segment.panels.start * NR <= cols.start
            && cols.end <= segment.panels.end * NR
    );
    if rows.is_empty() || cols.is_empty() {
        return;
    }
    let k = block.a.cols;
    let blocks = k / QK;
    rows_scratch.quantize(product, block.a, rows.clone());
    let q = &*rows_scratch;
    let block_bytes = NR * ty.block_bytes();
    let panel_bytes = blocks * block_bytes;
    let mut p0 = cols.start / NR;
    let p_last = cols.end.div_ceil(NR);
    while p0 < p_last {
        let p_end = (p0 + COLUMN_BLOCK).min(p_last);
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            let (b0, nb) = (k0 / QK, kc / QK);
            let panel = |p: usize| {
                let at = (p - segment.panels.start) * panel_bytes + b0 * block_bytes;
                &data[at..at + nb * block_bytes]
            };
            let mut row0 = rows.start;
            while row0 < rows.end {
                let tile_rows = MR.min(rows.end - row0);
                let i = row0 - rows.start;
                let mut p = p0;
                while p < p_end {
                    let pair = p + 1 < p_end;
                    let j0 = p * NR;
                    let t = IntTile {
                        ty,
                        blocks: nb,
                        quants: &q.quants[i * k + k0..],
                        lda: k,
                        scales: &q.scales[i * blocks + b0..],
                        sums: &q.sums[i * blocks + b0..],
                        ldb: blocks,
                        panels: [Some(panel(p)), pair.then(|| panel(p + 1))],
                        tile: Tile {
                            c: block.c,
                            row: row0,
                            col: j0,
                            rows: tile_rows,
                            cols: (if pair { 2 * NR } else { NR }).min(cols.end - j0),
                            add: block.accumulate || k0 > 0,
                        },
                    };
                    t.check();
                    // SAFETY: the CPU runs `kernel` (this function's contract); the operands
                    // were checked; the tile lies in this task's rectangle of C.
                    unsafe { kernel.run(t) };
                    p += if pair { 2 } else { 1 };
                }
                row0 += tile_rows;
            }
            k0 += kc;
        }
        p0 = p_end;
    }
}
