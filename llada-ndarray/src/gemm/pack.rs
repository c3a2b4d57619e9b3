//! Packing: weights into panels once at load time, attention's keys and values into panels
//! once per layer, and copies of `A`'s slivers where a kernel cannot read them in place.

use half::{bf16, f16};

use super::int8;
use super::kernels::Panel;
use super::{Dtype, KC, MatRef, NR, PackedMatrix, PanelData, Rhs, Segment};
use crate::quant::{QuantType, dequantize_block, quantize_row};

/// A buffer of `len` copies of `value` for a packed weight, whose 2 MiB-aligned part Linux is
/// asked to back with transparent huge pages before anything is written to it, where the
/// system leaves that to the program (`madvise` mode, a common default). Advice after the
/// first write comes too late: `vec![x; len]` writes every element unless `x` is a primitive
/// zero, and bf16 and f16 are not. The kernels stream every weight once per product; with
/// 4 KiB pages a 131 MB LM head spans 32,000 pages, and at 256 tokens its product ran 4–8%
/// slower than with huge pages (2 threads, Intel Xeon with AMX). A refusal changes nothing,
/// so its result is not looked at; elsewhere this is `vec![value; len]`.
fn weight_buffer<T: Clone>(len: usize, value: T) -> Vec<T> {
    let mut data = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let spare = data.spare_capacity_mut();
        let start = spare.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(spare);
        let (from, to) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if from < to {
            // SAFETY: the range lies inside the buffer's allocation, which nothing else
            // refers to yet; MADV_HUGEPAGE changes how its pages are backed, never their
            // contents.
            unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
        }
    }
    data.resize(len, value);
    data
}

impl PackedMatrix {
    /// Packs row-major `[n, k]` weights given row by row: `rows(r, out)` writes row `r`.
    pub(crate) fn pack<T: Copy + Default>(
        n: usize,
        k: usize,
        mut rows: impl FnMut(usize, &mut [T]),
    ) -> Vec<T> {
        let panels = n.div_ceil(NR);
        let mut data = weight_buffer(panels * k * NR, T::default());
        let mut row = vec![T::default(); k];
        for r in 0..n {
            rows(r, &mut row);
            let (p, j) = (r / NR, r % NR);
            let panel = &mut data[p * k * NR..(p + 1) * k * NR];
            for (kk, &v) in row.iter().enumerate() {
                panel[kk * NR + j] = v;
            }
        }
        data
    }

    /// Packs row-major f32 weights `w` (`[n, k]`) stored as `dtype` (rounded to it): for the
    /// benchmarks and tests; checkpoints go through `Checkpoint::pack`, which keeps their bits.
    pub(crate) fn from_f32(w: &[f32], n: usize, k: usize, dtype: Dtype) -> Self {
        let row = |r: usize| &w[r * k..(r + 1) * k];
        let data = match dtype {
            Dtype::F32 => PanelData::F32(Self::pack(n, k, |r, out| out.copy_from_slice(row(r)))),
            Dtype::Bf16 => PanelData::Bf16(Self::pack(n, k, |r, out: &mut [bf16]| {
                for (o, &v) in out.iter_mut().zip(row(r)) {
                    *o = bf16::from_f32(v);
                }
            })),
            Dtype::F16 => PanelData::F16(Self::pack(n, k, |r, out: &mut [f16]| {
                for (o, &v) in out.iter_mut().zip(row(r)) {
                    *o = f16::from_f32(v);
                }
            })),
        };
        Self::single(k, n, data)
    }

    /// Packs `[n, k]` weights whose rows are runs of `ty` blocks into quantized panels:
    /// `rows(r, out)` writes row `r`'s `ty.row_bytes(k)` bytes; rows past `n` are zero blocks.
    /// Q8_0, Q4_0, Q4_K and Q6_K panels are then interleaved for the integer kernels (see
    /// [`int8::layout`]). Panels are packed on all cores, each straight into its place: at
    /// 8 B parameters this is most of a model's load time.
    pub(crate) fn pack_quantized(
        n: usize,
        k: usize,
        ty: QuantType,
        rows: impl Fn(usize, &mut [u8]) + Sync,
    ) -> PanelData {
        let (len, bytes) = (ty.block_len(), ty.block_bytes());
        let blocks = k / len;
        let interleaved = int8::is_interleaved(ty);
        // Bytes of one panel block (16 rows × one block) as stored.
        let stored = if interleaved {
            int8::panel_block_bytes(ty)
        } else {
            NR * bytes
        };
        let panels = n.div_ceil(NR);
        let mut data = weight_buffer(panels * blocks * stored, 0u8);
        if data.is_empty() {
            return PanelData::Quant { ty, data };
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(panels);
        let per_thread = panels.div_ceil(threads);
        std::thread::scope(|s| {
            for (t, chunk) in data.chunks_mut(per_thread * blocks * stored).enumerate() {
                let rows = &rows;
                s.spawn(move || {
                    let mut row = vec![0u8; ty.row_bytes(k)];
                    // One panel in ggml blocks, `[block][row]`: what `interleave` reads.
                    let mut raw = vec![0u8; blocks * NR * bytes];
                    for (i, panel) in chunk.chunks_exact_mut(blocks * stored).enumerate() {
                        let p = t * per_thread + i;
                        let target = if interleaved {
                            &mut raw[..]
                        } else {
                            &mut panel[..]
                        };
                        for col in 0..NR {
                            let r = p * NR + col;
                            if r >= n {
                                for kb in 0..blocks {
                                    target[(kb * NR + col) * bytes..][..bytes].fill(0);
                                }
                                continue;
                            }
                            rows(r, &mut row);
                            for kb in 0..blocks {
                                target[(kb * NR + col) * bytes..][..bytes]
                                    .copy_from_slice(&row[kb * bytes..(kb + 1) * bytes]);
                            }
                        }
                        if interleaved {
                            for (blocks, out) in raw
                                .chunks_exact(NR * bytes)
                                .zip(panel.chunks_exact_mut(stored))
                            {
                                int8::interleave(ty, blocks, out);
                            }
                        }
                    }
                });
            }
        });
        PanelData::Quant { ty, data }
    }

    /// Quantizes `[n, k]` f32 weights (`rows(r, out)` writes row `r`) into `ty`'s blocks with
    /// ggml's reference quantization, packed as [`pack_quantized`](Self::pack_quantized).
    pub(crate) fn quantize_rows(
        n: usize,
        k: usize,
        ty: QuantType,
        rows: impl Fn(usize, &mut [f32]) + Sync,
    ) -> PanelData {
        Self::pack_quantized(n, k, ty, |r, out| {
            let mut values = vec![0.0f32; k];
            rows(r, &mut values);
            quantize_row(ty, &values, out);
        })
    }

    /// The segment holding panel `p`, and `p`'s index within it.
    fn segment(&self, p: usize) -> (&Segment, usize) {
        let segment = self
            .segments
            .iter()
            .find(|s| s.panels.contains(&p))
            .expect("every panel lies in a segment");
        (segment, p - segment.panels.start)
    }
}

/// Whether `b` holds quantized panels (that need widening).
pub(super) fn has_quantized(b: &Rhs<'_>) -> bool {
    let Rhs::Packed(w) = b else { return false };
    w.segments
        .iter()
        .any(|s| matches!(s.data, PanelData::Quant { .. }))
}

/// Widens rows `k0..k0 + kc` of the quantized ones among panels `panels` of `b` into `out`,
/// panel `p` at `(p - panels.start) · KC · 16`, as `[kc][16]` f32.
pub(super) fn widen_quantized(
    b: &Rhs<'_>,
    panels: std::ops::Range<usize>,
    k0: usize,
    kc: usize,
    out: &mut [f32],
) {
    let Rhs::Packed(w) = b else { return };
    let mut block = [0.0f32; 256];
    for p in panels.clone() {
        let (segment, q) = w.segment(p);
        let PanelData::Quant { ty, data } = &segment.data else {
            continue;
        };
        let (len, bytes) = (ty.block_len(), ty.block_bytes());
        let blocks = w.k / len;
        let dst = &mut out[(p - panels.start) * KC * NR..][..kc * NR];
        for kb in k0 / len..(k0 + kc) / len {
            if int8::is_interleaved(*ty) {
                let size = int8::panel_block_bytes(*ty);
                let at = (q * blocks + kb) * size;
                let rows = &mut dst[(kb * len - k0) * NR..][..len * NR];
                int8::layout::widen(*ty, &data[at..at + size], rows);
                continue;
            }
            let base = (q * blocks + kb) * NR * bytes;
            for col in 0..NR {
                let at = base + col * bytes;
                dequantize_block(*ty, &data[at..at + bytes], &mut block[..len]);
                for (i, &v) in block[..len].iter().enumerate() {
                    dst[(kb * len - k0 + i) * NR + col] = v;
                }
            }
        }
    }
}

/// Rows `k0..k0 + kc` of panel `p` of `B`; a quantized panel's are slot `slot` of `widened`
/// (see [`widen_quantized`]).
pub(super) fn panel<'s>(
    b: &'s Rhs<'_>,
    p: usize,
    k0: usize,
    kc: usize,
    widened: &'s [f32],
    slot: usize,
) -> Panel<'s> {
    match b {
        Rhs::Packed(w) => {
            let (segment, q) = w.segment(p);
            let at = (q * w.k + k0) * NR;
            match &segment.data {
                PanelData::F32(d) => Panel::F32(&d[at..at + kc * NR]),
                PanelData::Bf16(d) => Panel::Bf16(&d[at..at + kc * NR]),
                PanelData::F16(d) => Panel::F16(&d[at..at + kc * NR]),
                PanelData::Quant { .. } => Panel::F32(&widened[slot * KC * NR..][..kc * NR]),
            }
        }
        Rhs::Panels { data, k, .. } => {
            let at = (p * k + k0) * NR;
            Panel::F32(&data[at..at + kc * NR])
        }
    }
}

/// Packs the columns of a strided `B` (`k × n`) into the panel layout `[panels][k][16]`,
/// zero-padding the last panel: what [`Rhs::Panels`] reads.
pub(crate) fn pack_panels(b: &MatRef<'_>, out: &mut [f32]) {
    let (k, n) = (b.rows, b.cols);
    if b.row_stride == 1 && b.col_stride != 1 {
        // A transposed source (keys for q·kᵀ): each column is contiguous; scatter it.
        let panels = n.div_ceil(NR);
        out[..panels * k * NR].fill(0.0);
        for j in 0..n {
            let (p, lane) = (j / NR, j % NR);
            let column = &b.data[j * b.col_stride..j * b.col_stride + k];
            let panel = &mut out[p * k * NR..(p + 1) * k * NR];
            for (kk, &v) in column.iter().enumerate() {
                panel[kk * NR + lane] = v;
            }
        }
        return;
    }
    for p in 0..n.div_ceil(NR) {
        let j0 = p * NR;
        pack_b(
            b,
            0,
            k,
            j0,
            NR.min(n - j0),
            &mut out[p * k * NR..(p + 1) * k * NR],
        );
    }
}

/// Copies rows `i0..i0 + rows` of `A` (`kc` columns from `k0`) row-major into `out`,
/// zero-padded to `mr` rows: the slivers of a strided `A` or of a kernel without short tiles.
pub(super) fn copy_rows(
    a: &MatRef<'_>,
    i0: usize,
    rows: usize,
    k0: usize,
    kc: usize,
    mr: usize,
    out: &mut [f32],
) {
    for r in 0..mr {
        for kk in 0..kc {
            out[r * kc + kk] = if r < rows { a.at(i0 + r, k0 + kk) } else { 0.0 };
        }
    }
}

/// Packs `B[k0.., j0..]` (`kc × nc`, `nc ≤ 16`) into `[kc][16]`, zero-padding missing columns.
fn pack_b(b: &MatRef<'_>, k0: usize, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
    for kk in 0..kc {
        let dst = &mut out[kk * NR..(kk + 1) * NR];
        if b.col_stride == 1 && nc == NR {
            let at = (k0 + kk) * b.row_stride + j0;
            dst.copy_from_slice(&b.data[at..at + NR]);
        } else {
            for (j, d) in dst.iter_mut().enumerate() {
                *d = if j < nc { b.at(k0 + kk, j0 + j) } else { 0.0 };
            }
        }
    }
}
