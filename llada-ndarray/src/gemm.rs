//! Single-precision matrix multiplication `C (+)= A · B` for the model's shapes.
//!
//! `B` is either a weight, packed once at load time into panels of [`NR`] columns in its own
//! dtype (f32, bf16 or f16: half-precision weights are widened inside the kernel, so they are
//! never expanded into an f32 copy), or any strided f32 matrix, packed on the fly (attention).
//! `A` is packed into slivers of the kernel's rows for AVX-512, and read in place by the AVX2
//! and portable kernels (copied only when it is strided, or for the portable kernel's short
//! last sliver). Blocking: `KC` deep, a column block of `B` in L2 serving every row of `A`,
//! one `B` panel slice in L1; the micro-kernel keeps a tile of `C` in registers (12 × 32 with
//! AVX-512, up to 6 × 16 with AVX2 + FMA, chosen at run time; a portable kernel otherwise), and
//! all packing memory is caller-owned scratch: no allocation per call.

use half::{bf16, f16};

use crate::threads::Pool;

/// Most rows of a register tile (the AVX-512 kernel's; AVX2 and portable use at most 6).
const MR_MAX: usize = 12;
/// Columns of a packed panel (the AVX-512 kernel takes two panels at once).
pub(crate) const NR: usize = 16;
/// Depth of a block.
const KC: usize = 256;
/// Rows of `A` per block (a multiple of every kernel's rows): the size of the packing buffer.
const MC: usize = 96;
/// Panels of `B` per column block (128 columns).
const COLUMN_BLOCK: usize = 8;

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
    /// f32 panels in the packed layout, `[panels][k][16]` (attention's keys and values, packed
    /// once per layer and read by many tasks).
    Panels {
        /// The panels.
        data: &'a [f32],
        /// Rows of `B`.
        k: usize,
        /// Columns of `B`.
        n: usize,
    },
}

impl Rhs<'_> {
    fn dims(&self) -> (usize, usize) {
        match self {
            Rhs::Packed(w) => (w.k, w.n),
            Rhs::Panels { k, n, .. } => (*k, *n),
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
}

impl GemmScratch {
    pub(crate) fn new() -> Self {
        Self {
            a: vec![0.0; MC * KC],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// Rows of the register tile.
    fn mr(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 12,
            _ => 6,
        }
    }

    /// Whether the kernel reads `A` packed (AVX-512) rather than in place.
    fn packs_a(self) -> bool {
        self.pairs()
    }

    /// Whether the kernel has tiles of fewer rows for the last rows of `A`.
    fn short_tiles(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Isa::Avx2Fma {
            return true;
        }
        false
    }

    /// Whether the kernel takes two panels (32 columns) at once.
    fn pairs(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Isa::Avx512 {
            return true;
        }
        false
    }
}

fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let forced = std::env::var("LLADA_KERNEL").ok();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            let avx512 = avx2 && has!("avx512f");
            match forced.as_deref() {
                Some("portable") => return Isa::Portable,
                Some("avx2") if avx2 => return Isa::Avx2Fma,
                _ if avx512 => return Isa::Avx512,
                _ if avx2 => return Isa::Avx2Fma,
                _ => {}
            }
        }
        let _ = forced;
        Isa::Portable
    })
}

/// Whether AVX2 and FMA are available (and not switched off with `LLADA_KERNEL=portable`).
pub(crate) fn has_avx2() -> bool {
    isa() != Isa::Portable
}

/// Name of the micro-kernel in use, for benchmarks and logs (`LLADA_KERNEL=portable|avx2`
/// forces a narrower one).
pub(crate) fn kernel_name() -> &'static str {
    match isa() {
        Isa::Portable => "portable",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => "avx2+fma",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => "avx512f",
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
    // too few panels to keep every thread busy. Column chunks are as small as one block of
    // the task loop (COLUMN_BLOCK panels: smaller ones would not save reading A again), so
    // that threads slowed by others on the machine still finish together: with only two
    // chunks per thread, a thread idled for half a chunk, 10–20% of a product, at the end.
    let col_chunks = panels
        .div_ceil(COLUMN_BLOCK)
        .max(panels.min(threads * 2))
        .max(1);
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
    if let Rhs::Panels { data, k, n } = b {
        assert!(
            data.len() >= n.div_ceil(NR) * k * NR,
            "panels out of bounds"
        );
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
    let work = c.rows * c.cols * a.cols;
    pool.run_sized(p.row_chunks * p.col_chunks, work, &|task, scratch| {
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
    let mr = isa.mr();
    let apack = &mut scratch.a;
    let packs = isa.packs_a();
    // Loop order (as MLAS does for weights): a block of columns of B (COLUMN_BLOCK panels,
    // kc deep, about 128 KB: L2) is read from memory once and serves every row of A; the A
    // sliver (mr rows, kc deep: L1) serves every panel of the block.
    let mut p0 = panel_start(cols.start);
    while p0 * NR < cols.end {
        let p_end = (p0 + COLUMN_BLOCK).min(cols.end.div_ceil(NR));
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            let add = accumulate || k0 > 0;
            let mut row0 = rows.start;
            while row0 < rows.end {
                let tile_rows = mr.min(rows.end - row0);
                let sliver = if packs {
                    pack_a(a, row0, tile_rows, k0, kc, mr, apack);
                    Sliver::Packed(&apack[..kc * mr])
                } else if (tile_rows == mr || isa.short_tiles()) && a.col_stride == 1 {
                    // The kernel reads the rows of A where they are (the AVX2 kernel reads
                    // a short last sliver in place too, with a tile of that many rows).
                    Sliver::Rows {
                        data: &a.data[row0 * a.row_stride + k0..],
                        lda: a.row_stride,
                    }
                } else {
                    // A strided A, or the portable kernel's short last sliver: the rows,
                    // zero-padded to `mr`, row-major.
                    let buf = &mut apack[..mr * kc];
                    for r in 0..mr {
                        for kk in 0..kc {
                            buf[r * kc + kk] = if r < tile_rows {
                                a.at(row0 + r, k0 + kk)
                            } else {
                                0.0
                            };
                        }
                    }
                    Sliver::Rows {
                        data: &apack[..mr * kc],
                        lda: kc,
                    }
                };
                let mut p = p0;
                while p < p_end {
                    let j0 = p * NR;
                    let pair = isa.pairs() && p + 1 < p_end;
                    let nc = (if pair { 2 * NR } else { NR }).min(cols.end - j0);
                    let first = panel(b, p, k0, kc);
                    let second = if pair {
                        Some(panel(b, p + 1, k0, kc))
                    } else {
                        None
                    };
                    let tile = Tile {
                        c,
                        row: row0,
                        col: j0,
                        rows: tile_rows,
                        cols: nc,
                        add,
                    };
                    micro_kernel(isa, kc, sliver, first, second, tile);
                    p += if pair { 2 } else { 1 };
                }
                row0 += tile_rows;
            }
            k0 += kc;
        }
        p0 = p_end;
    }
}

/// The `A` operand of one micro-kernel call: the tile's rows (at most `mr`) by `kc` columns.
#[derive(Clone, Copy)]
enum Sliver<'a> {
    /// Packed `[kc][mr]` (the AVX-512 kernel's layout).
    Packed(&'a [f32]),
    /// Row-major, rows `lda` apart (read in place by the AVX2 and portable kernels).
    Rows { data: &'a [f32], lda: usize },
}

impl Sliver<'_> {
    #[inline(always)]
    fn at(&self, mr: usize, r: usize, kk: usize) -> f32 {
        match self {
            Sliver::Packed(d) => d[kk * mr + r],
            Sliver::Rows { data, lda } => data[r * lda + kk],
        }
    }
}

/// Rows `k0..k0 + kc` of panel `p` of `B`.
fn panel<'s>(b: &'s Rhs<'_>, p: usize, k0: usize, kc: usize) -> Panel<'s> {
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

fn panel_start(col: usize) -> usize {
    debug_assert_eq!(col % NR, 0, "column chunks start on panel boundaries");
    col / NR
}

/// Packs `A[i0.., k0..]` (`mc × kc`) into slivers `[kc][mr]`, zero-padding missing rows.
#[allow(clippy::too_many_arguments)]
fn pack_a(a: &MatRef<'_>, i0: usize, mc: usize, k0: usize, kc: usize, mr: usize, out: &mut [f32]) {
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
    /// Writes (or adds) `acc` (row-major, rows `ld` apart) to the valid part of the tile.
    fn store(&self, acc: &[f32], ld: usize) {
        for r in 0..self.rows {
            let at = (self.row + r) * self.c.row_stride + self.col;
            debug_assert!(at + self.cols <= self.c.len);
            // SAFETY: the tile lies inside the checked output view, and no other task writes
            // this tile (tasks own disjoint rectangles of C).
            let dst = unsafe { std::slice::from_raw_parts_mut(self.c.ptr.add(at), self.cols) };
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
    fn columns_from(&self, from: usize) -> Tile {
        Tile {
            col: self.col + from,
            cols: self.cols.saturating_sub(from),
            ..*self
        }
    }
}

/// Element type of a panel, as a const parameter of the kernels.
const F32: u8 = 0;
const BF16: u8 = 1;
const F16: u8 = 2;

fn panel_parts(b: Panel<'_>) -> (u8, *const u8, usize) {
    match b {
        Panel::F32(p) => (F32, p.as_ptr().cast(), p.len()),
        Panel::Bf16(p) => (BF16, p.as_ptr().cast(), p.len()),
        Panel::F16(p) => (F16, p.as_ptr().cast(), p.len()),
    }
}

fn micro_kernel(
    isa: Isa,
    kc: usize,
    a: Sliver<'_>,
    first: Panel<'_>,
    second: Option<Panel<'_>>,
    tile: Tile,
) {
    match (isa, a) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Sliver::Packed(a)) => {
            debug_assert!(a.len() >= kc * 12);
            let (dtype, p0, len0) = panel_parts(first);
            debug_assert!(len0 >= kc * NR);
            let p1 = second.map(|s| panel_parts(s).1);
            // SAFETY: `isa()` returned Avx512 only after detecting AVX-512F (and AVX2, FMA,
            // F16C); `a` holds `kc × 12` values and each panel `kc × 16` (the callers' slicing).
            unsafe {
                match (dtype, p1) {
                    (F32, Some(p1)) => avx512::kernel::<F32, 2>(kc, a, [p0, p1], tile),
                    (BF16, Some(p1)) => avx512::kernel::<BF16, 2>(kc, a, [p0, p1], tile),
                    (_, Some(p1)) => avx512::kernel::<F16, 2>(kc, a, [p0, p1], tile),
                    (F32, None) => avx512::kernel::<F32, 1>(kc, a, [p0], tile),
                    (BF16, None) => avx512::kernel::<BF16, 1>(kc, a, [p0], tile),
                    (_, None) => avx512::kernel::<F16, 1>(kc, a, [p0], tile),
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2Fma, a) => {
            let (dtype, p0, len0) = panel_parts(first);
            debug_assert!(len0 >= kc * NR && second.is_none());
            let (data, rs, ks) = match a {
                Sliver::Rows { data, lda } => (data, lda, 1),
                Sliver::Packed(data) => (data, 1, 6),
            };
            assert!(
                (1..=6).contains(&tile.rows) && data.len() > (tile.rows - 1) * rs + (kc - 1) * ks,
                "A sliver out of bounds"
            );
            // SAFETY: `isa()` returned Avx2Fma only after detecting AVX2, FMA and F16C; the
            // tile's rows of `kc` values lie inside `data` (asserted) and the panel holds
            // `kc × 16`.
            unsafe {
                match dtype {
                    F32 => avx2::kernel_rows::<F32>(kc, data.as_ptr(), rs, ks, p0, tile),
                    BF16 => avx2::kernel_rows::<BF16>(kc, data.as_ptr(), rs, ks, p0, tile),
                    _ => avx2::kernel_rows::<F16>(kc, data.as_ptr(), rs, ks, p0, tile),
                }
            }
        }
        _ => {
            portable_kernel(kc, isa.mr(), a, first, tile);
            if let Some(second) = second {
                portable_kernel(kc, isa.mr(), a, second, tile.columns_from(NR));
            }
        }
    }
}

fn portable_kernel(kc: usize, mr: usize, a: Sliver<'_>, b: Panel<'_>, tile: Tile) {
    let mut acc = [0.0f32; MR_MAX * NR];
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
        for r in 0..mr {
            let x = a.at(mr, r, kk);
            for (acc, &w) in acc[r * NR..(r + 1) * NR].iter_mut().zip(&row) {
                *acc = x.mul_add(w, *acc);
            }
        }
    }
    tile.store(&acc, NR);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BF16, F16, F32, NR, Tile};

    /// Loads the 16 `B` values of row `kk` of a panel of element type `D` as two vectors.
    #[inline(always)]
    unsafe fn load_b<const D: u8>(b: *const u8, kk: usize) -> (__m256, __m256) {
        // SAFETY: the caller guarantees `kk < kc` on a panel of `kc × 16` elements of type `D`;
        // unaligned loads.
        unsafe {
            match D {
                F32 => {
                    let ptr = b.cast::<f32>().add(kk * NR);
                    (_mm256_loadu_ps(ptr), _mm256_loadu_ps(ptr.add(8)))
                }
                BF16 => {
                    let ptr = b.cast::<u16>().add(kk * NR).cast::<__m128i>();
                    let lo = _mm256_cvtepu16_epi32(_mm_loadu_si128(ptr));
                    let hi = _mm256_cvtepu16_epi32(_mm_loadu_si128(ptr.add(1)));
                    (
                        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(lo)),
                        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(hi)),
                    )
                }
                _ => {
                    debug_assert_eq!(D, F16);
                    let ptr = b.cast::<u16>().add(kk * NR).cast::<__m128i>();
                    (
                        _mm256_cvtph_ps(_mm_loadu_si128(ptr)),
                        _mm256_cvtph_ps(_mm_loadu_si128(ptr.add(1))),
                    )
                }
            }
        }
    }

    /// The `M × 16` register tile (`M` ≤ 6): up to 12 accumulators, two `B` vectors, one
    /// broadcast; `A` is read in place, `M` rows `lda` apart (as MLAS does: no packing). Six
    /// rows is the main tile; fewer serve the last rows of `A` without computing padding
    /// (at 32 rows, a cached Fast-dLLM step, padding to 36 wasted 11% of the work).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn kernel<const D: u8, const M: usize>(
        kc: usize,
        a: *const f32,
        row_stride: usize,
        k_stride: usize,
        b: *const u8,
        tile: Tile,
    ) {
        const MR: usize = 6;
        const { assert!(M >= 1 && M <= MR) };
        // The full-width store below writes M rows: a tile of fewer would be overrun.
        assert_eq!(tile.rows, M, "tile rows");
        let mut acc = [[_mm256_setzero_ps(); 2]; M];
        // SAFETY: element (r, kk) of A is at `a + r·row_stride + kk·k_stride` (micro_kernel).
        let rows: [*const f32; M] = std::array::from_fn(|r| unsafe { a.add(r * row_stride) });
        for kk in 0..kc {
            // SAFETY: `kk < kc` on every row and on the panel of `kc × 16` (see `micro_kernel`).
            unsafe {
                let (b0, b1) = load_b::<D>(b, kk);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*rows[r].add(kk * k_stride));
                    acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
                }
            }
        }
        if tile.cols == NR {
            for (r, [lo, hi]) in acc.iter().enumerate() {
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
            let mut out = [0.0f32; MR * NR];
            let out = &mut out[..M * NR];
            for (r, [lo, hi]) in acc.iter().enumerate() {
                // SAFETY: `out` has room for 16 values at `r * NR`.
                unsafe {
                    _mm256_storeu_ps(out.as_mut_ptr().add(r * NR), *lo);
                    _mm256_storeu_ps(out.as_mut_ptr().add(r * NR + 8), *hi);
                }
            }
            tile.store(out, NR);
        }
    }

    /// [`kernel`] with as many rows as the tile has.
    ///
    /// # Safety
    /// As for [`kernel`]: AVX2, FMA and F16C present; `tile.rows` (1 to 6) rows of `kc`
    /// values of `A` readable at `a`, `row_stride` and `k_stride` apart; a `kc × 16` panel of
    /// type `D` at `b`; the tile inside `C` and owned by the caller.
    #[inline(always)]
    pub(super) unsafe fn kernel_rows<const D: u8>(
        kc: usize,
        a: *const f32,
        row_stride: usize,
        k_stride: usize,
        b: *const u8,
        tile: Tile,
    ) {
        // SAFETY: forwarded; the row count matches the tile.
        unsafe {
            match tile.rows {
                1 => kernel::<D, 1>(kc, a, row_stride, k_stride, b, tile),
                2 => kernel::<D, 2>(kc, a, row_stride, k_stride, b, tile),
                3 => kernel::<D, 3>(kc, a, row_stride, k_stride, b, tile),
                4 => kernel::<D, 4>(kc, a, row_stride, k_stride, b, tile),
                5 => kernel::<D, 5>(kc, a, row_stride, k_stride, b, tile),
                6 => kernel::<D, 6>(kc, a, row_stride, k_stride, b, tile),
                rows => unreachable!("a tile of {rows} rows"),
            }
        }
    }
}

/// The 16-lane vector operations of the AVX-512 kernel. The kernel is written once over this
/// trait: with `__m512` it is the real kernel; with [`Lanes16`] it runs anywhere, so its
/// indexing is tested on machines without AVX-512.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
trait Vec16: Copy {
    unsafe fn zero() -> Self;
    unsafe fn splat(x: f32) -> Self;
    /// 16 values of row `kk` of a panel of element type `D`.
    unsafe fn load_panel<const D: u8>(b: *const u8, kk: usize) -> Self;
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    /// `*dst = self` or `*dst += self` (16 unaligned values).
    unsafe fn store(self, dst: *mut f32, add: bool);
}

/// The portable stand-in of a 512-bit vector.
#[cfg(test)]
#[derive(Clone, Copy)]
struct Lanes16([f32; 16]);

#[cfg(test)]
impl Vec16 for Lanes16 {
    unsafe fn zero() -> Self {
        Lanes16([0.0; 16])
    }
    unsafe fn splat(x: f32) -> Self {
        Lanes16([x; 16])
    }
    unsafe fn load_panel<const D: u8>(b: *const u8, kk: usize) -> Self {
        let mut v = [0.0f32; 16];
        for (j, v) in v.iter_mut().enumerate() {
            // SAFETY: the caller guarantees a panel of `kc × 16` elements of type `D`, `kk < kc`.
            *v = unsafe {
                match D {
                    F32 => *b.cast::<f32>().add(kk * NR + j),
                    BF16 => bf16::from_bits(*b.cast::<u16>().add(kk * NR + j)).to_f32(),
                    _ => f16::from_bits(*b.cast::<u16>().add(kk * NR + j)).to_f32(),
                }
            };
        }
        Lanes16(v)
    }
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        Lanes16(std::array::from_fn(|i| a.0[i].mul_add(b.0[i], c.0[i])))
    }
    unsafe fn store(self, dst: *mut f32, add: bool) {
        for (j, &v) in self.0.iter().enumerate() {
            // SAFETY: the caller guarantees 16 writable values at `dst`.
            unsafe { *dst.add(j) = if add { *dst.add(j) + v } else { v } };
        }
    }
}

/// The `12 × 16N` register tile over 16-lane vectors: `12 N` accumulators (24 with two
/// panels), `N` `B` vectors and one broadcast.
///
/// # Safety
/// `a` holds `kc × 12` values, each `b[n]` a panel of `kc × 16` elements of type `D`, and the
/// tile lies inside its output view; `V`'s instructions are available.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
unsafe fn kernel_12x16n<V: Vec16, const D: u8, const N: usize>(
    kc: usize,
    a: &[f32],
    b: [*const u8; N],
    tile: Tile,
) {
    const MR: usize = 12;
    // SAFETY: (whole body) the function's contract.
    unsafe {
        let mut acc = [[V::zero(); N]; MR];
        let ap = a.as_ptr();
        for kk in 0..kc {
            let mut bv = [V::zero(); N];
            for (v, &p) in bv.iter_mut().zip(&b) {
                *v = V::load_panel::<D>(p, kk);
            }
            let row = ap.add(kk * MR);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = V::splat(*row.add(r));
                for (acc, &v) in acc.iter_mut().zip(&bv) {
                    *acc = V::fma(x, v, *acc);
                }
            }
        }
        if tile.rows == MR && tile.cols == N * NR {
            for (r, vectors) in acc.iter().enumerate() {
                let at = (tile.row + r) * tile.c.row_stride + tile.col;
                for (n, v) in vectors.iter().enumerate() {
                    v.store(tile.c.ptr.add(at + n * NR), tile.add);
                }
            }
        } else {
            let mut out = [0.0f32; MR * 2 * NR];
            for (r, vectors) in acc.iter().enumerate() {
                for (n, v) in vectors.iter().enumerate() {
                    v.store(out.as_mut_ptr().add(r * 2 * NR + n * NR), false);
                }
            }
            tile.store(&out, 2 * NR);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{BF16, F32, NR, Tile, Vec16, kernel_12x16n};

    impl Vec16 for __m512 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: AVX-512F is available (the kernel's contract).
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: as above.
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load_panel<const D: u8>(b: *const u8, kk: usize) -> Self {
            // SAFETY: a panel of `kc × 16` elements of type `D`, `kk < kc`; unaligned loads.
            unsafe {
                match D {
                    F32 => _mm512_loadu_ps(b.cast::<f32>().add(kk * NR)),
                    BF16 => {
                        let half =
                            _mm256_loadu_si256(b.cast::<u16>().add(kk * NR).cast::<__m256i>());
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(half)))
                    }
                    _ => _mm512_cvtph_ps(_mm256_loadu_si256(
                        b.cast::<u16>().add(kk * NR).cast::<__m256i>(),
                    )),
                }
            }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: AVX-512F is available.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn store(self, dst: *mut f32, add: bool) {
            // SAFETY: 16 writable values at `dst` (the caller's contract).
            unsafe {
                if add {
                    _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), self));
                } else {
                    _mm512_storeu_ps(dst, self);
                }
            }
        }
    }

    /// The AVX-512 kernel (see [`kernel_12x16n`]).
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn kernel<const D: u8, const N: usize>(
        kc: usize,
        a: &[f32],
        b: [*const u8; N],
        tile: Tile,
    ) {
        // SAFETY: the caller's contract, and AVX-512F is enabled here.
        unsafe { kernel_12x16n::<__m512, D, N>(kc, a, b, tile) }
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
            // With the shapes above (1 and 4 rows left), every short last sliver of the
            // 6-row AVX2 tile: 3, 5 and 2 rows left.
            (3, 40, 20),
            (5, 70, 48),
            (32, 260, 40),
        ] {
            let a = values(m * k, 1);
            let w = values(n * k, 2);
            let expected = reference(&a, &w, m, k, n);
            let packed = PackedMatrix::from_f32(&w, n, k, Dtype::F32);
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
            // The same B = Wᵀ as a transposed strided view, packed into panels (attention's keys).
            let mut panels = vec![f32::NAN; n.div_ceil(NR) * k * NR];
            pack_panels(&bt, &mut panels);
            let mut c2 = vec![0.0f32; m * n];
            let mut scratch = GemmScratch::new();
            gemm_serial(
                MatRef::rows(&a, m, k, k),
                Rhs::Panels {
                    data: &panels,
                    k,
                    n,
                },
                Out::new(&mut c2, m, n, n),
                false,
                &mut scratch,
            );
            for (x, y) in c2.iter().zip(&expected) {
                assert!((x - y).abs() < tol, "panels {m}x{k}x{n}: {x} vs {y}");
            }
        }
    }

    /// The AVX-512 kernel's code, run on 16-lane arrays: the same tiles as the reference.
    #[test]
    fn the_12x32_kernel_logic_matches_a_reference() {
        let (m, k, n) = (12, 37, 32);
        let a = values(m * k, 5);
        let w = values(n * k, 6);
        let expected = reference(&a, &w, m, k, n);
        let panels = PackedMatrix::pack(n, k, |r, out: &mut [f32]| {
            out.copy_from_slice(&w[r * k..(r + 1) * k])
        });
        let mut apack = vec![0.0f32; k * 12];
        pack_a(&MatRef::rows(&a, m, k, k), 0, m, 0, k, 12, &mut apack);
        for (rows, cols, add) in [
            (12, 32, false),
            (7, 32, false),
            (12, 21, false),
            (12, 16, true),
        ] {
            let mut c = vec![1.0f32; m * n];
            let tile = Tile {
                c: Out::new(&mut c, m, n, n),
                row: 0,
                col: 0,
                rows,
                cols,
                add,
            };
            let b = [
                panels.as_ptr().cast::<u8>(),
                panels[k * NR..].as_ptr().cast::<u8>(),
            ];
            // SAFETY: the buffers have the kernel's shapes; Lanes16 needs no CPU feature.
            unsafe {
                if cols > NR {
                    kernel_12x16n::<Lanes16, F32, 2>(k, &apack, b, tile);
                } else {
                    kernel_12x16n::<Lanes16, F32, 1>(k, &apack, [b[0]], tile);
                }
            }
            for i in 0..m {
                for j in 0..n {
                    let got = c[i * n + j];
                    let want = if i < rows && j < cols {
                        expected[i * n + j] + f32::from(u8::from(add))
                    } else {
                        1.0
                    };
                    assert!(
                        (got - want).abs() < 1e-4,
                        "({i}, {j}) rows {rows} cols {cols}: {got} vs {want}"
                    );
                }
            }
        }
        // Half-precision panels through the emulated loads.
        let half = PackedMatrix::pack(n, k, |r, out: &mut [bf16]| {
            for (o, &v) in out.iter_mut().zip(&w[r * k..]) {
                *o = bf16::from_f32(v);
            }
        });
        let mut c = vec![0.0f32; m * n];
        let tile = Tile {
            c: Out::new(&mut c, m, n, n),
            row: 0,
            col: 0,
            rows: 12,
            cols: 32,
            add: false,
        };
        let b = [
            half.as_ptr().cast::<u8>(),
            half[k * NR..].as_ptr().cast::<u8>(),
        ];
        // SAFETY: as above.
        unsafe { kernel_12x16n::<Lanes16, BF16, 2>(k, &apack, b, tile) };
        for (x, y) in c.iter().zip(&expected) {
            assert!((x - y).abs() < 2e-2, "{x} vs {y}");
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
            let packed = PackedMatrix::from_f32(&w, n, k, dtype);
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
