//! Single-precision matrix multiplication `C (+)= A · B` for the model's shapes.
//!
//! `B` is either a weight, packed once at load time into panels of [`NR`] columns in its own
//! dtype (f32, bf16 or f16: half-precision weights are widened inside the kernel, so they are
//! never expanded into an f32 copy), or any strided f32 matrix, packed on the fly (attention).
//! `A` is packed per block into slivers of [`MR`] rows. Blocking follows the usual scheme
//! (`KC` deep, `MC` rows of `A` in L2, one `B` panel slice in L1), the micro-kernel keeps a
//! `6 × 16` tile of `C` in registers (AVX2 + FMA, chosen at run time; a portable kernel
//! otherwise), and all packing memory is caller-owned scratch: no allocation per call.

use half::{bf16, f16};

use crate::threads::Pool;

/// Rows of the register tile.
pub(crate) const MR: usize = 6;
/// Columns of the register tile and of a packed panel.
pub(crate) const NR: usize = 16;
/// Depth of a block.
const KC: usize = 256;
/// Rows of `A` per block (a multiple of `MR`).
const MC: usize = 96;

/// Element type of a packed weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dtype {
    F32,
    Bf16,
    F16,
}

/// Storage of a packed weight.
#[derive(Debug)]
pub(crate) enum PanelData {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
}

/// A weight `W [n, k]` (`nn.Linear` layout) packed for `x · Wᵀ`: panel `p` holds columns
/// `16p .. 16p + 16` of `Wᵀ` as `[k][16]`, zero-padded past `n`.
#[derive(Debug)]
pub(crate) struct PackedMatrix {
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) data: PanelData,
}

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

    /// Bytes of weight data.
    pub(crate) fn bytes(&self) -> usize {
        match &self.data {
            PanelData::F32(v) => v.len() * 4,
            PanelData::Bf16(v) => v.len() * 2,
            PanelData::F16(v) => v.len() * 2,
        }
    }
}

/// A read-only strided f32 matrix.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatRef<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix with rows `row_stride` apart.
    pub(crate) fn rows(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    #[inline(always)]
    fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.row_stride + c * self.col_stride]
    }

    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// The right-hand side `B [k, n]`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rhs<'a> {
    /// A packed weight: `B = Wᵀ`.
    Packed(&'a PackedMatrix),
    /// A strided matrix, packed per block.
    Strided(MatRef<'a>),
}

impl Rhs<'_> {
    fn dims(&self) -> (usize, usize) {
        match self {
            Rhs::Packed(w) => (w.k, w.n),
            Rhs::Strided(m) => (m.rows, m.cols),
        }
    }
}

/// The output `C [m, n]`, row-major with rows `row_stride` apart, written through a raw
/// pointer because parallel tasks write disjoint tiles of it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Out {
    ptr: *mut f32,
    len: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
}

// SAFETY: tasks of one multiplication write disjoint tiles (see `gemm_task`).
unsafe impl Send for Out {}
// SAFETY: as above.
unsafe impl Sync for Out {}

impl Out {
    pub(crate) fn new(data: &mut [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        if rows > 0 && cols > 0 {
            assert!(
                (rows - 1) * row_stride + cols <= data.len(),
                "output view out of bounds"
            );
        }
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            rows,
            cols,
            row_stride,
        }
    }

    /// The `rows × cols` block at (`row`, `col`).
    pub(crate) fn sub(&self, row: usize, col: usize, rows: usize, cols: usize) -> Self {
        assert!(
            row + rows <= self.rows && col + cols <= self.cols,
            "sub-block out of bounds"
        );
        let offset = row * self.row_stride + col;
        Self {
            // SAFETY: the offset is inside the view (checked above, and the view inside its
            // slice since `new`).
            ptr: unsafe { self.ptr.add(offset) },
            len: self.len - offset,
            rows,
            cols,
            row_stride: self.row_stride,
        }
    }
}

/// Per-thread packing memory.
#[derive(Debug)]
pub(crate) struct GemmScratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

impl GemmScratch {
    pub(crate) fn new() -> Self {
        Self {
            a: vec![0.0; MC * KC],
            b: vec![0.0; KC * NR],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
            && std::env::var_os("LLADA_PORTABLE_KERNELS").is_none()
        {
            return Isa::Avx2Fma;
        }
        Isa::Portable
    })
}

/// Name of the micro-kernel in use, for benchmarks and logs.
pub(crate) fn kernel_name() -> &'static str {
    match isa() {
        Isa::Portable => "portable",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => "avx2+fma",
    }
}

/// A `B` panel slice handed to the micro-kernel: `kc × 16` values.
#[derive(Clone, Copy)]
enum Panel<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
}

/// Tasks: `row_chunks × col_chunks` rectangles of `C`.
struct Plan {
    row_chunk: usize,
    col_chunk: usize,
    row_chunks: usize,
    col_chunks: usize,
}

fn plan(m: usize, n: usize, threads: usize) -> Plan {
    let panels = n.div_ceil(NR);
    let row_blocks = m.div_ceil(MC);
    // Prefer splitting columns (weights are read once per thread); split rows when there are
    // too few panels to keep every thread busy.
    let col_chunks = panels.min(threads * 2).max(1);
    let row_chunks = if panels >= threads * 2 {
        1
    } else {
        row_blocks.min(threads * 2).max(1)
    };
    let col_chunk = panels.div_ceil(col_chunks) * NR;
    let row_chunk = row_blocks.div_ceil(row_chunks) * MC;
    Plan {
        row_chunk,
        col_chunk,
        row_chunks: m.div_ceil(row_chunk.max(1)).max(1),
        col_chunks: n.div_ceil(col_chunk.max(1)).max(1),
    }
}

fn check(a: &MatRef<'_>, b: &Rhs<'_>, c: &Out) {
    a.check();
    if let Rhs::Strided(m) = b {
        m.check();
    }
    let (k, n) = b.dims();
    assert_eq!(a.cols, k, "inner dimensions differ");
    assert_eq!((c.rows, c.cols), (a.rows, n), "output shape differs");
}

/// `C (+)= A · B` on the pool's threads.
pub(crate) fn gemm(
    pool: &Pool<impl AsMut<GemmScratch> + Send>,
    a: MatRef<'_>,
    b: Rhs<'_>,
    c: Out,
    accumulate: bool,
) {
    check(&a, &b, &c);
    let p = plan(c.rows, c.cols, pool.threads());
    pool.run(p.row_chunks * p.col_chunks, &|task, scratch| {
        let (ri, ci) = (task / p.col_chunks, task % p.col_chunks);
        let rows = ri * p.row_chunk..((ri + 1) * p.row_chunk).min(c.rows);
        let cols = ci * p.col_chunk..((ci + 1) * p.col_chunk).min(c.cols);
        gemm_task(&a, &b, c, rows, cols, accumulate, scratch.as_mut());
    });
}

/// `C (+)= A · B` on the calling thread.
pub(crate) fn gemm_serial(
    a: MatRef<'_>,
    b: Rhs<'_>,
    c: Out,
    accumulate: bool,
    scratch: &mut GemmScratch,
) {
    check(&a, &b, &c);
    gemm_task(&a, &b, c, 0..c.rows, 0..c.cols, accumulate, scratch);
}

/// One rectangle of `C`; `cols` starts on a panel boundary.
fn gemm_task(
    a: &MatRef<'_>,
    b: &Rhs<'_>,
    c: Out,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    accumulate: bool,
    scratch: &mut GemmScratch,
) {
    let k = a.cols;
    if rows.is_empty() || cols.is_empty() {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in rows {
                for col in cols.clone() {
                    // SAFETY: (r, col) is inside the checked output view.
                    unsafe { *c.ptr.add(r * c.row_stride + col) = 0.0 };
                }
            }
        }
        return;
    }
    let isa = isa();
    let GemmScratch { a: apack, b: bpack } = scratch;
    let mut i0 = rows.start;
    while i0 < rows.end {
        let mc = MC.min(rows.end - i0);
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            pack_a(a, i0, mc, k0, kc, apack);
            let first = panel_start(cols.start);
            let mut p = first;
            while p * NR < cols.end {
                let j0 = p * NR;
                let nc = NR.min(cols.end - j0);
                let panel = match b {
                    Rhs::Packed(w) => {
                        let at = (p * w.k + k0) * NR;
                        match &w.data {
                            PanelData::F32(d) => Panel::F32(&d[at..at + kc * NR]),
                            PanelData::Bf16(d) => Panel::Bf16(&d[at..at + kc * NR]),
                            PanelData::F16(d) => Panel::F16(&d[at..at + kc * NR]),
                        }
                    }
                    Rhs::Strided(m) => {
                        pack_b(m, k0, kc, j0, nc, bpack);
                        Panel::F32(&bpack[..kc * NR])
                    }
                };
                let add = accumulate || k0 > 0;
                let mut s = 0;
                while s * MR < mc {
                    let mr = MR.min(mc - s * MR);
                    let ap = &apack[s * kc * MR..(s + 1) * kc * MR];
                    let tile = Tile {
                        c,
                        row: i0 + s * MR,
                        col: j0,
                        rows: mr,
                        cols: nc,
                        add,
                    };
                    micro_kernel(isa, kc, ap, panel, tile);
                    s += 1;
                }
                p += 1;
            }
            k0 += kc;
        }
        i0 += mc;
    }
}

fn panel_start(col: usize) -> usize {
    debug_assert_eq!(col % NR, 0, "column chunks start on panel boundaries");
    col / NR
}

/// Packs `A[i0.., k0..]` (`mc × kc`) into slivers `[kc][MR]`, zero-padding missing rows.
fn pack_a(a: &MatRef<'_>, i0: usize, mc: usize, k0: usize, kc: usize, out: &mut [f32]) {
    let slivers = mc.div_ceil(MR);
    for s in 0..slivers {
        let dst = &mut out[s * kc * MR..(s + 1) * kc * MR];
        for r in 0..MR {
            let row = i0 + s * MR + r;
            if s * MR + r < mc {
                if a.col_stride == 1 {
                    let src = &a.data[row * a.row_stride + k0..row * a.row_stride + k0 + kc];
                    for (kk, &v) in src.iter().enumerate() {
                        dst[kk * MR + r] = v;
                    }
                } else {
                    for kk in 0..kc {
                        dst[kk * MR + r] = a.at(row, k0 + kk);
                    }
                }
            } else {
                for kk in 0..kc {
                    dst[kk * MR + r] = 0.0;
                }
            }
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

/// Where a register tile goes.
#[derive(Clone, Copy)]
struct Tile {
    c: Out,
    row: usize,
    col: usize,
    rows: usize,
    cols: usize,
    add: bool,
}

impl Tile {
    /// Writes (or adds) `acc` (`MR × NR`, row-major) to the valid part of the tile.
    fn store(&self, acc: &[f32; MR * NR]) {
        for r in 0..self.rows {
            let at = (self.row + r) * self.c.row_stride + self.col;
            debug_assert!(at + self.cols <= self.c.len);
            // SAFETY: the tile lies inside the checked output view, and no other task writes
            // this tile (tasks own disjoint rectangles of C).
            let dst = unsafe { std::slice::from_raw_parts_mut(self.c.ptr.add(at), self.cols) };
            let src = &acc[r * NR..r * NR + self.cols];
            if self.add {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d += s;
                }
            } else {
                dst.copy_from_slice(src);
            }
        }
    }
}

fn micro_kernel(isa: Isa, kc: usize, a: &[f32], b: Panel<'_>, tile: Tile) {
    debug_assert!(a.len() >= kc * MR);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx2Fma only after detecting AVX2, FMA and F16C; the slices
        // hold `kc` rows of the packed layouts (checked by the callers' slicing).
        Isa::Avx2Fma => unsafe { avx2::kernel(kc, a, b, tile) },
        Isa::Portable => portable_kernel(kc, a, b, tile),
    }
}

fn portable_kernel(kc: usize, a: &[f32], b: Panel<'_>, tile: Tile) {
    let mut acc = [0.0f32; MR * NR];
    let mut row = [0.0f32; NR];
    for kk in 0..kc {
        match b {
            Panel::F32(p) => row.copy_from_slice(&p[kk * NR..(kk + 1) * NR]),
            Panel::Bf16(p) => {
                for (d, s) in row.iter_mut().zip(&p[kk * NR..(kk + 1) * NR]) {
                    *d = s.to_f32();
                }
            }
            Panel::F16(p) => {
                for (d, s) in row.iter_mut().zip(&p[kk * NR..(kk + 1) * NR]) {
                    *d = s.to_f32();
                }
            }
        }
        for r in 0..MR {
            let x = a[kk * MR + r];
            for (acc, &w) in acc[r * NR..(r + 1) * NR].iter_mut().zip(&row) {
                *acc = x.mul_add(w, *acc);
            }
        }
    }
    tile.store(&acc);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{MR, NR, Panel, Tile};

    /// Loads 16 `B` values of row `kk` as two vectors of 8.
    #[inline(always)]
    unsafe fn load_b(b: Panel<'_>, kk: usize) -> (__m256, __m256) {
        // SAFETY: (all arms) the caller guarantees `kk < kc` and panels of `kc × 16` values;
        // unaligned loads.
        unsafe {
            match b {
                Panel::F32(p) => {
                    let ptr = p.as_ptr().add(kk * NR);
                    (_mm256_loadu_ps(ptr), _mm256_loadu_ps(ptr.add(8)))
                }
                Panel::Bf16(p) => {
                    let ptr = p.as_ptr().add(kk * NR) as *const __m128i;
                    let lo = _mm256_cvtepu16_epi32(_mm_loadu_si128(ptr));
                    let hi = _mm256_cvtepu16_epi32(_mm_loadu_si128(ptr.add(1)));
                    (
                        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(lo)),
                        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(hi)),
                    )
                }
                Panel::F16(p) => {
                    let ptr = p.as_ptr().add(kk * NR) as *const __m128i;
                    (
                        _mm256_cvtph_ps(_mm_loadu_si128(ptr)),
                        _mm256_cvtph_ps(_mm_loadu_si128(ptr.add(1))),
                    )
                }
            }
        }
    }

    /// The `6 × 16` register tile: 12 accumulators, two `B` vectors, one broadcast.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn kernel(kc: usize, a: &[f32], b: Panel<'_>, tile: Tile) {
        let mut c00 = _mm256_setzero_ps();
        let mut c01 = _mm256_setzero_ps();
        let mut c10 = _mm256_setzero_ps();
        let mut c11 = _mm256_setzero_ps();
        let mut c20 = _mm256_setzero_ps();
        let mut c21 = _mm256_setzero_ps();
        let mut c30 = _mm256_setzero_ps();
        let mut c31 = _mm256_setzero_ps();
        let mut c40 = _mm256_setzero_ps();
        let mut c41 = _mm256_setzero_ps();
        let mut c50 = _mm256_setzero_ps();
        let mut c51 = _mm256_setzero_ps();
        let ap = a.as_ptr();
        for kk in 0..kc {
            // SAFETY: `a` holds `kc × MR` values and `b` `kc × 16` (see `micro_kernel`).
            unsafe {
                let (b0, b1) = load_b(b, kk);
                let row = ap.add(kk * MR);
                let x = _mm256_broadcast_ss(&*row);
                c00 = _mm256_fmadd_ps(x, b0, c00);
                c01 = _mm256_fmadd_ps(x, b1, c01);
                let x = _mm256_broadcast_ss(&*row.add(1));
                c10 = _mm256_fmadd_ps(x, b0, c10);
                c11 = _mm256_fmadd_ps(x, b1, c11);
                let x = _mm256_broadcast_ss(&*row.add(2));
                c20 = _mm256_fmadd_ps(x, b0, c20);
                c21 = _mm256_fmadd_ps(x, b1, c21);
                let x = _mm256_broadcast_ss(&*row.add(3));
                c30 = _mm256_fmadd_ps(x, b0, c30);
                c31 = _mm256_fmadd_ps(x, b1, c31);
                let x = _mm256_broadcast_ss(&*row.add(4));
                c40 = _mm256_fmadd_ps(x, b0, c40);
                c41 = _mm256_fmadd_ps(x, b1, c41);
                let x = _mm256_broadcast_ss(&*row.add(5));
                c50 = _mm256_fmadd_ps(x, b0, c50);
                c51 = _mm256_fmadd_ps(x, b1, c51);
            }
        }
        let rows = [
            [c00, c01],
            [c10, c11],
            [c20, c21],
            [c30, c31],
            [c40, c41],
            [c50, c51],
        ];
        let full = tile.rows == MR && tile.cols == NR;
        if full {
            for (r, [lo, hi]) in rows.iter().enumerate() {
                let at = (tile.row + r) * tile.c.row_stride + tile.col;
                // SAFETY: a full tile lies inside the checked output view; this task owns it.
                unsafe {
                    let dst = tile.c.ptr.add(at);
                    if tile.add {
                        _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_loadu_ps(dst), *lo));
                        _mm256_storeu_ps(
                            dst.add(8),
                            _mm256_add_ps(_mm256_loadu_ps(dst.add(8)), *hi),
                        );
                    } else {
                        _mm256_storeu_ps(dst, *lo);
                        _mm256_storeu_ps(dst.add(8), *hi);
                    }
                }
            }
        } else {
            let mut acc = [0.0f32; MR * NR];
            for (r, [lo, hi]) in rows.iter().enumerate() {
                // SAFETY: `acc` has room for 16 values at `r * NR`.
                unsafe {
                    _mm256_storeu_ps(acc.as_mut_ptr().add(r * NR), *lo);
                    _mm256_storeu_ps(acc.as_mut_ptr().add(r * NR + 8), *hi);
                }
            }
            tile.store(&acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for kk in 0..k {
                    s += f64::from(a[i * k + kk]) * f64::from(w[j * k + kk]);
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((llada_core::testing::splitmix64(seed ^ i as u64) >> 40) as f32 / (1 << 24) as f32)
                    - 0.5
            })
            .collect()
    }

    struct S(GemmScratch);
    impl AsMut<GemmScratch> for S {
        fn as_mut(&mut self) -> &mut GemmScratch {
            &mut self.0
        }
    }

    #[test]
    fn packed_and_strided_products_match_a_reference_on_awkward_shapes() {
        let pool = Pool::new((0..3).map(|_| S(GemmScratch::new())).collect()).unwrap();
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 300, 33),
            (100, 17, 5),
            (13, 513, 64),
            (200, 64, 130),
        ] {
            let a = values(m * k, 1);
            let w = values(n * k, 2);
            let expected = reference(&a, &w, m, k, n);
            let packed = PackedMatrix {
                k,
                n,
                data: PanelData::F32(PackedMatrix::pack(n, k, |r, out| {
                    out.copy_from_slice(&w[r * k..(r + 1) * k])
                })),
            };
            let tol = 1e-4 * (k as f32).sqrt();
            let mut c = vec![0.0f32; m * n];
            gemm(
                &pool,
                MatRef::rows(&a, m, k, k),
                Rhs::Packed(&packed),
                Out::new(&mut c, m, n, n),
                false,
            );
            for (x, y) in c.iter().zip(&expected) {
                assert!((x - y).abs() < tol, "packed {m}x{k}x{n}: {x} vs {y}");
            }
            // Accumulating adds the product again.
            gemm(
                &pool,
                MatRef::rows(&a, m, k, k),
                Rhs::Packed(&packed),
                Out::new(&mut c, m, n, n),
                true,
            );
            for (x, y) in c.iter().zip(&expected) {
                assert!((x - 2.0 * y).abs() < 2.0 * tol);
            }
            // Strided B = Wᵀ (rows of W are columns of B).
            let bt = MatRef {
                data: &w,
                rows: k,
                cols: n,
                row_stride: 1,
                col_stride: k,
            };
            let mut c2 = vec![0.0f32; m * n];
            let mut scratch = GemmScratch::new();
            gemm_serial(
                MatRef::rows(&a, m, k, k),
                Rhs::Strided(bt),
                Out::new(&mut c2, m, n, n),
                false,
                &mut scratch,
            );
            for (x, y) in c2.iter().zip(&expected) {
                assert!((x - y).abs() < tol, "strided {m}x{k}x{n}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn half_precision_weights_are_widened_in_the_kernel() {
        let pool = Pool::new(vec![S(GemmScratch::new()), S(GemmScratch::new())]).unwrap();
        let (m, k, n) = (9, 70, 40);
        let a = values(m * k, 3);
        let w: Vec<f32> = values(n * k, 4)
            .iter()
            .map(|&v| bf16::from_f32(v).to_f32())
            .collect();
        let expected = reference(&a, &w, m, k, n);
        for dtype in [Dtype::Bf16, Dtype::F16] {
            let data = match dtype {
                Dtype::Bf16 => PanelData::Bf16(PackedMatrix::pack(n, k, |r, out: &mut [bf16]| {
                    for (o, &v) in out.iter_mut().zip(&w[r * k..]) {
                        *o = bf16::from_f32(v);
                    }
                })),
                _ => PanelData::F16(PackedMatrix::pack(n, k, |r, out: &mut [f16]| {
                    for (o, &v) in out.iter_mut().zip(&w[r * k..]) {
                        *o = f16::from_f32(v);
                    }
                })),
            };
            let packed = PackedMatrix { k, n, data };
            let mut c = vec![0.0f32; m * n];
            gemm(
                &pool,
                MatRef::rows(&a, m, k, k),
                Rhs::Packed(&packed),
                Out::new(&mut c, m, n, n),
                false,
            );
            for (x, y) in c.iter().zip(&expected) {
                // bf16 values are exact in f16 only approximately (f16 has 10 mantissa bits).
                assert!((x - y).abs() < 2e-3, "{dtype:?}: {x} vs {y}");
            }
        }
    }
}
