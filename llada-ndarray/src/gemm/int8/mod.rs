//! Integer products for Q8_0, Q4_0, Q4_K and Q6_K weights: the rows of `A` are quantized once
//! per product into 8-bit blocks of 32 values (an f32 scale per block, as ggml's Q8_0
//! activations; with the sums of their quants per 16 and per 32), and each weight sub-block's
//! dot products with them are summed in 32-bit integers (`vpdpbusd` with AVX-512 VNNI,
//! `vpmaddubsw` with AVX2, `sdot` with Arm's dotprod, `smull`/`sadalp` on plain NEON), then scaled by both sides' scales into f32 accumulators. This is what llama.cpp does on CPUs; it
//! trades a small error (the activations' rounding, documented in `tests/int8.rs` of this
//! crate) for reading each weight byte once per 64 multiply-adds. The weights' layout is in
//! [`layout`].

#[cfg(target_arch = "x86_64")]
pub(super) mod amx;
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2;
pub(crate) mod layout;
#[cfg(target_arch = "aarch64")]
pub(super) mod neon;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
pub(super) mod vnni;

pub(crate) use layout::{interleave, is_interleaved, panel_block_bytes};

use super::kernels::Tile;
use super::{Block, COLUMN_BLOCK, KC, MatRef, NR, PanelData, Rhs, Segment};
use crate::quant::QuantType;

/// Values per activation block.
pub(crate) const QK: usize = 32;
/// Rows of a register tile of the integer kernels.
pub(crate) const MR: usize = 6;

/// Rows of `A` quantized to 8-bit blocks: per row, `k` signed bytes, and per block its scale
/// and the sum of its quants. Kept in a thread's scratch and reused by the tasks of one
/// product that share the rows.
#[derive(Debug, Default)]
pub(crate) struct QuantizedRows {
    quants: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
    /// Sums of each half block's quants (Q6_K's sub-blocks are 16 values).
    sums16: Vec<i32>,
    /// (product, first row, rows, k) of what the buffers hold.
    holds: Option<(u64, usize, usize, usize)>,
    /// The AMX kernel's sums and accumulators.
    #[cfg(target_arch = "x86_64")]
    amx: amx::AmxInt,
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
            self.sums16.resize(2 * nb, 0);
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
                let scale = quantize_block(values, q);
                let half = |h: usize| q[16 * h..16 * h + 16].iter().map(|&v| i32::from(v)).sum();
                let (first, second): (i32, i32) = (half(0), half(1));
                self.scales[i * blocks + b] = scale;
                self.sums[i * blocks + b] = first + second;
                self.sums16[2 * (i * blocks + b)] = first;
                self.sums16[2 * (i * blocks + b) + 1] = second;
            }
        }
        self.holds = Some(key);
    }
}

/// ggml's Q8_0 quantization of 32 values (scale `max |x| / 127`), with the scale kept in f32
/// and the quants rounded half to even (ggml's vector paths do the same; its scalar reference
/// rounds half away from zero); returns the scale. A block holding a NaN gets a NaN scale (an
/// infinity an infinite one), so that the products it enters are NaN as in f32 and the
/// sampler's NaN check still sees them.
fn quantize_block(values: &[f32; QK], out: &mut [i8]) -> f32 {
    // Adding and subtracting 1.5 · 2²³ rounds a float of magnitude below 2²² to an integer,
    // half to even, in plain float arithmetic that compilers vectorise.
    const ROUND: f32 = 12_582_912.0;
    // Eight independent lanes, so that compilers vectorise the maximum (`max` skips NaN,
    // hence the separate flag).
    let (mut lanes, mut nan) = ([0.0f32; 8], [false; 8]);
    for chunk in values.chunks_exact(8) {
        for i in 0..8 {
            lanes[i] = lanes[i].max(chunk[i].abs());
            nan[i] |= chunk[i].is_nan();
        }
    }
    let amax = lanes.iter().fold(0.0f32, |m, &v| m.max(v));
    let scale = if nan.contains(&true) {
        f32::NAN
    } else {
        amax / 127.0
    };
    let inverse = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    for (o, &v) in out.iter_mut().zip(values) {
        // In -127..=127: |v · inverse| ≤ 127 (a NaN saturates to 0).
        *o = ((v * inverse + ROUND) - ROUND) as i8;
    }
    scale
}

/// The operands of one integer micro-kernel call: `rows` quantized rows (`lda` bytes apart;
/// their activation blocks' scales and sums `ldb` apart, the half-block sums `2 · ldb`) and one
/// or two panels, `blocks` weight blocks deep (each `panel_block_bytes(ty)` bytes).
#[derive(Clone, Copy)]
pub(crate) struct IntTile<'a> {
    pub(crate) ty: QuantType,
    pub(crate) blocks: usize,
    pub(crate) quants: &'a [i8],
    pub(crate) lda: usize,
    pub(crate) scales: &'a [f32],
    pub(crate) sums: &'a [i32],
    pub(crate) sums16: &'a [i32],
    pub(crate) ldb: usize,
    pub(crate) panels: [Option<&'a [u8]>; 2],
    pub(crate) tile: Tile<'a>,
}

impl IntTile<'_> {
    /// Activation blocks the tile spans.
    fn act_blocks(&self) -> usize {
        self.blocks * self.ty.block_len() / QK
    }

    /// For row `r` of the tile and the sub-block of `layout::sub_len(self.ty)` values from
    /// `v0` of its depth: the scale of the activation block holding it, and the sum of the
    /// quants it covers (the block's, or its half's for Q6_K's sub-blocks of 16).
    #[inline(always)]
    pub(super) fn scale_and_sum(&self, r: usize, v0: usize) -> (f32, i32) {
        let at = r * self.ldb + v0 / QK;
        let sum = if layout::sub_len(self.ty) == QK {
            self.sums[at]
        } else {
            self.sums16[2 * at + (v0 % QK) / 16]
        };
        (self.scales[at], sum)
    }

    fn check(&self) {
        let rows = self.tile.rows;
        assert!((1..=MR).contains(&rows) && self.panels[0].is_some());
        let act = self.act_blocks();
        assert!(self.quants.len() >= (rows - 1) * self.lda + act * QK);
        assert!(self.scales.len() >= (rows - 1) * self.ldb + act);
        assert!(self.sums.len() >= (rows - 1) * self.ldb + act);
        assert!(self.sums16.len() >= 2 * ((rows - 1) * self.ldb + act));
        let bytes = self.blocks * panel_block_bytes(self.ty);
        assert!(self.panels.iter().flatten().all(|p| p.len() >= bytes));
        assert!(self.tile.cols <= NR * self.panels.iter().flatten().count());
    }
}

/// The integer kernels' reference: the same sums in plain Rust, in the same order (tests
/// compare the vector kernels with it bit for bit, and it shows what they compute).
pub(crate) fn reference_kernel(t: IntTile<'_>) {
    t.check();
    let ty = t.ty;
    let (len, offset) = (layout::sub_len(ty), layout::code_offset(ty));
    let mut acc = [0.0f32; MR * 2 * NR];
    let mut codes = [0i32; 32];
    for (n, panel) in t.panels.iter().enumerate() {
        let Some(panel) = panel else { continue };
        for b in 0..t.blocks {
            let block = &panel[b * panel_block_bytes(ty)..(b + 1) * panel_block_bytes(ty)];
            for s in 0..ty.block_len() / len {
                // Values from `v0` of the tile's depth: activation block `v0 / 32`.
                let v0 = b * ty.block_len() + s * len;
                for c in 0..NR {
                    let (mul, min) = layout::sub_block(ty, block, c, s, &mut codes);
                    for r in 0..t.tile.rows {
                        let q = &t.quants[r * t.lda + v0..][..len];
                        let (da, sum) = t.scale_and_sum(r, v0);
                        let dot: i32 = q.iter().zip(&codes).map(|(&a, &w)| i32::from(a) * w).sum();
                        let at = r * 2 * NR + n * NR + c;
                        acc[at] = ((dot - offset * sum) as f32).mul_add(mul * da, acc[at]);
                        if ty == QuantType::Q4_K {
                            acc[at] = (-min).mul_add(da * sum as f32, acc[at]);
                        }
                    }
                }
            }
        }
    }
    t.tile.store(&acc, 2 * NR);
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
    /// AMX's integer tiles for Q8_0 (`tdpbssd`), VNNI for the other formats.
    #[cfg(target_arch = "x86_64")]
    Amx,
    /// AVX2 (`vpmaddubsw`).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// NEON with the `dotprod` extension (`sdot`).
    #[cfg(target_arch = "aarch64")]
    NeonDot,
    /// Plain NEON (`smull`, `sadalp`).
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl IntKernel {
    /// What [`Context::integer_kernel`](crate::Context::integer_kernel) calls it.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            IntKernel::Reference => "reference",
            #[cfg(target_arch = "x86_64")]
            IntKernel::Vnni => "avx512-vnni",
            #[cfg(target_arch = "x86_64")]
            IntKernel::Amx => "amx-int8",
            #[cfg(target_arch = "x86_64")]
            IntKernel::Avx2 => "avx2",
            #[cfg(target_arch = "aarch64")]
            IntKernel::NeonDot => "neon-dotprod",
            #[cfg(target_arch = "aarch64")]
            IntKernel::Neon => "neon",
        }
    }

    /// # Safety
    /// The CPU runs the kernel.
    unsafe fn run(self, t: IntTile<'_>) {
        match self {
            IntKernel::Reference => reference_kernel(t),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller's contract.
            IntKernel::Vnni => unsafe { vnni::run(t) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller's contract (an AMX host has VNNI: `Isa` checks both).
            IntKernel::Amx => unsafe { vnni::run(t) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller's contract.
            IntKernel::Avx2 => unsafe { avx2::run(t) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: the caller's contract.
            IntKernel::NeonDot => unsafe { neon::run_sdot(t) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: the caller's contract.
            IntKernel::Neon => unsafe { neon::run_widening(t) },
        }
    }
}

/// Whether `kernel` beats widening `ty` to f32 for `rows` rows of `A`: everywhere but the AVX2
/// kernel on Q8_0 at many rows (`vpsignb` and one widening per group make it about 10% slower
/// than the f32 kernel at 256 rows, and 1.5x faster at 32; `benches/kernels.rs`). The NEON
/// kernels always run: they read a quarter of the bytes (Q8_0) of the widening f32 kernel,
/// but no Arm hardware was at hand to time them.
pub(super) fn worth_it(kernel: IntKernel, ty: QuantType, rows: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if kernel == IntKernel::Avx2 && ty == QuantType::Q8_0 {
        return rows < 96;
    }
    let _ = (kernel, ty, rows);
    true
}

/// Whether some columns of `b` lie in interleaved segments, for the integer kernels: `b` is a
/// packed weight (whose `k` is a whole number of its formats' blocks).
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
    #[cfg(target_arch = "x86_64")]
    if kernel == IntKernel::Amx && ty == QuantType::Q8_0 {
        // SAFETY: the CPU runs the AMX kernel (this function's contract).
        return unsafe { amx::task(product, block, segment, data, rows_scratch) };
    }
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
    // Activation blocks per row, and the weight's blocks.
    let blocks = k / QK;
    let len = ty.block_len();
    rows_scratch.quantize(product, block.a, rows.clone());
    let q = &*rows_scratch;
    let block_bytes = panel_block_bytes(ty);
    let panel_bytes = k / len * block_bytes;
    let mut p0 = cols.start / NR;
    let p_last = cols.end.div_ceil(NR);
    while p0 < p_last {
        let p_end = (p0 + COLUMN_BLOCK).min(p_last);
        let mut k0 = 0;
        while k0 < k {
            // KC is a whole number of every format's blocks.
            let kc = KC.min(k - k0);
            let (b0, wb0, nb) = (k0 / QK, k0 / len, kc / len);
            let panel = |p: usize| {
                let at = (p - segment.panels.start) * panel_bytes + wb0 * block_bytes;
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
                        sums16: &q.sums16[2 * (i * blocks + b0)..],
                        ldb: blocks,
                        panels: [Some(panel(p)), pair.then(|| panel(p + 1))],
                        tile: Tile {
                            c: block.c,
                            row: row0,
                            col: j0,
                            rows: tile_rows,
                            cols: (if pair { 2 * NR } else { NR }).min(cols.end - j0),
                            add: block.accumulate || k0 > 0,
                            prefetch: false,
                            ahead: std::ptr::null(),
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
