//! Packing: weights into panels once at load time, attention's keys and values into panels
//! once per layer, and slivers of `A` for the kernels that read it packed.

use half::{bf16, f16};

use super::kernels::Panel;
use super::{Dtype, MatRef, NR, PackedMatrix, PanelData, Rhs};

impl PackedMatrix {
    /// Packs row-major `[n, k]` weights given row by row: `rows(r, out)` writes row `r`.
    pub(crate) fn pack<T: Copy + Default>(
        n: usize,
        k: usize,
        mut rows: impl FnMut(usize, &mut [T]),
    ) -> Vec<T> {
        let panels = n.div_ceil(NR);
        let mut data = vec![T::default(); panels * k * NR];
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
        Self { k, n, data }
    }

    /// Bytes of weight data.
    pub(crate) fn bytes(&self) -> usize {
        match &self.data {
            PanelData::F32(v) => v.len() * 4,
            PanelData::Bf16(v) => v.len() * 2,
            PanelData::F16(v) => v.len() * 2,
        }
    }
}

/// Rows `k0..k0 + kc` of panel `p` of `B`.
pub(super) fn panel<'s>(b: &'s Rhs<'_>, p: usize, k0: usize, kc: usize) -> Panel<'s> {
    match b {
        Rhs::Packed(w) => {
            let at = (p * w.k + k0) * NR;
            match &w.data {
                PanelData::F32(d) => Panel::F32(&d[at..at + kc * NR]),
                PanelData::Bf16(d) => Panel::Bf16(&d[at..at + kc * NR]),
                PanelData::F16(d) => Panel::F16(&d[at..at + kc * NR]),
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

/// Packs `A[i0.., k0..]` (`mc × kc`) into slivers `[kc][mr]`, zero-padding missing rows.
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_a(
    a: &MatRef<'_>,
    i0: usize,
    mc: usize,
    k0: usize,
    kc: usize,
    mr: usize,
    out: &mut [f32],
) {
    let slivers = mc.div_ceil(mr);
    for s in 0..slivers {
        let dst = &mut out[s * kc * mr..(s + 1) * kc * mr];
        for r in 0..mr {
            let row = i0 + s * mr + r;
            if s * mr + r < mc {
                if a.col_stride == 1 {
                    let src = &a.data[row * a.row_stride + k0..row * a.row_stride + k0 + kc];
                    for (kk, &v) in src.iter().enumerate() {
                        dst[kk * mr + r] = v;
                    }
                } else {
                    for kk in 0..kc {
                        dst[kk * mr + r] = a.at(row, k0 + kk);
                    }
                }
            } else {
                for kk in 0..kc {
                    dst[kk * mr + r] = 0.0;
                }
            }
        }
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
