//! Single-precision matrix multiplication `C (+)= A · B` for the model's shapes.
//!
//! `B` is either a weight, packed once at load time into panels of [`NR`] columns in its own
//! dtype (f32, bf16 or f16: half-precision weights are widened inside the kernel, so they are
//! never expanded into an f32 copy), or f32 panels packed on the fly (attention). Blocking:
//! `KC` deep, a column block of `B` in L2 serving every row of `A`, one `B` panel slice in L1;
//! the micro-kernel ([`kernels`]) keeps a tile of `C` in registers. Which kernel runs is a
//! value, an [`Isa`], chosen per context; all packing memory is caller-owned scratch: no
//! allocation per call.

mod blocked;
pub(crate) mod blocking;
mod int8;
pub(crate) mod isa;
pub(crate) mod kernels;
mod pack;
#[cfg(test)]
mod tests;

use half::{bf16, f16};

use crate::quant::QuantType;
use blocked::float_task;
#[cfg(test)]
use blocked::pass_depth;
pub(crate) use blocking::Blocking;
use blocking::MAX_DEPTH;
pub(crate) use isa::Isa;
use kernels::MR_MAX;
pub(crate) use pack::pack_panels;

use crate::parallel::Disjoint;
use crate::threads::Pool;

/// Columns of a packed panel (the AVX-512 kernel takes two panels at once).
pub(crate) const NR: usize = 16;
/// Depth of a block of quantized panels (widened a block at a time) and of the integer
/// kernels' blocks.
pub(crate) const KC: usize = 256;
/// Rows of `A` per block (a multiple of every kernel's rows): the size of the packing buffer.
const MC: usize = 96;
/// Panels of `B` per column block of the integer kernels and the AMX kernel (128 columns);
/// the other kernels' blocks are their [`Isa`]'s [`Blocking`].
const COLUMN_BLOCK: usize = 8;

/// Element type of a packed weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dtype {
    F32,
    Bf16,
    F16,
}

/// Storage of packed panels.
#[derive(Debug)]
pub(crate) enum PanelData {
    /// `[panels][k][16]` values.
    F32(Vec<f32>),
    /// As `F32`, in bf16.
    Bf16(Vec<bf16>),
    /// As `F32`, in f16.
    F16(Vec<f16>),
    /// ggml blocks, kept as the file has them: for each panel and each run of
    /// `ty.block_len()` values along `k`, the 16 rows' blocks one after the other (zero
    /// blocks past `n`). Widened a panel slice at a time inside the product.
    Quant { ty: QuantType, data: Vec<u8> },
}

impl PanelData {
    /// The element type's name: `"f32"`, `"bf16"`, `"f16"` or the ggml format's.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            PanelData::F32(_) => "f32",
            PanelData::Bf16(_) => "bf16",
            PanelData::F16(_) => "f16",
            PanelData::Quant { ty, .. } => ty.name(),
        }
    }

    /// Bytes of weight data.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            PanelData::F32(v) => v.len() * 4,
            PanelData::Bf16(v) => v.len() * 2,
            PanelData::F16(v) => v.len() * 2,
            PanelData::Quant { data, .. } => data.len(),
        }
    }
}

/// Consecutive panels of a weight stored alike.
#[derive(Debug)]
pub(crate) struct Segment {
    /// The panels (indices into the whole matrix).
    pub(crate) panels: std::ops::Range<usize>,
    pub(crate) data: PanelData,
}

/// A weight `W [n, k]` (`nn.Linear` layout) packed for `x · Wᵀ`: panel `p` holds columns
/// `16p .. 16p + 16` of `Wᵀ` (rows of `W`), zero-padded past `n`. Its panels are stored in one
/// segment, or, for weights stacked from parts stored differently (a GGUF file's q, k and v in
/// two quantized formats), one segment per part.
#[derive(Debug)]
pub(crate) struct PackedMatrix {
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) segments: Vec<Segment>,
}

impl PackedMatrix {
    /// A matrix stored in one segment.
    pub(crate) fn single(k: usize, n: usize, data: PanelData) -> Self {
        Self {
            k,
            n,
            segments: vec![Segment {
                panels: 0..n.div_ceil(NR),
                data,
            }],
        }
    }

    /// The stored type's name when every segment shares it, else `"mixed"`.
    pub(crate) fn type_name(&self) -> &'static str {
        let first = self.segments[0].data.type_name();
        if self.segments.iter().all(|s| s.data.type_name() == first) {
            first
        } else {
            "mixed"
        }
    }

    /// Bytes of weight data.
    pub(crate) fn bytes(&self) -> usize {
        self.segments.iter().map(|s| s.data.bytes()).sum()
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

/// The output `C [m, n]`, row-major with rows `row_stride` apart, in a buffer that parallel
/// tasks write at disjoint tiles.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Out<'a> {
    data: Disjoint<'a, f32>,
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a> Out<'a> {
    pub(crate) fn new(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        if rows > 0 && cols > 0 {
            assert!(
                (rows - 1) * row_stride + cols <= data.len(),
                "output view out of bounds"
            );
        }
        Self {
            data: Disjoint::new(data),
            offset: 0,
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
        Self {
            offset: self.offset + row * self.row_stride + col,
            rows,
            cols,
            ..*self
        }
    }

    /// Values `col..col + len` of row `row`.
    ///
    /// # Safety
    /// No other task reads or writes them meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn row_mut(&self, row: usize, col: usize, len: usize) -> &'a mut [f32] {
        debug_assert!(row < self.rows && col + len <= self.cols);
        let at = self.offset + row * self.row_stride + col;
        // SAFETY: the caller's contract; `range` checks the bounds.
        unsafe { self.data.range(at..at + len) }
    }

    /// A pointer to values `col..col + len` of row `row`, for kernels that store vectors.
    ///
    /// # Safety
    /// As [`row_mut`](Self::row_mut).
    pub(crate) unsafe fn at(&self, row: usize, col: usize, len: usize) -> *mut f32 {
        debug_assert!(row < self.rows && col + len <= self.cols);
        // SAFETY: the caller's contract; `at` checks the bounds.
        unsafe { self.data.at(self.offset + row * self.row_stride + col, len) }
    }
}

/// Per-thread packing memory.
#[derive(Debug)]
pub(crate) struct GemmScratch {
    a: Vec<f32>,
    /// Quantized panels of a column block, widened (grown on the first quantized product).
    b: Vec<f32>,
    /// Rows of `A` quantized for the integer kernels (grown on the first integer product).
    quantized: int8::QuantizedRows,
    /// Rows of `A` and panels of `B` in bf16 for the AMX kernel (grown on its first product).
    #[cfg(target_arch = "x86_64")]
    amx: kernels::amx::AmxScratch,
}

impl GemmScratch {
    pub(crate) fn new() -> Self {
        Self {
            a: vec![0.0; (MC.max(MR_MAX) * KC).max(MR_MAX * MAX_DEPTH)],
            b: Vec::new(),
            quantized: int8::QuantizedRows::default(),
            #[cfg(target_arch = "x86_64")]
            amx: kernels::amx::AmxScratch::default(),
        }
    }
}

/// Numbers each product, so that a thread's quantized rows of `A` are reused by the tasks of
/// one product and never by another's.
static PRODUCTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_product() -> u64 {
    PRODUCTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Tasks: `row_chunks × col_chunks` rectangles of `C`.
struct Plan {
    row_chunk: usize,
    col_chunk: usize,
    row_chunks: usize,
    col_chunks: usize,
}

/// Column tasks per thread of a product wide enough (see [`plan`]).
const TASKS_PER_THREAD: usize = 4;

/// Panels per column block of the kernel that multiplies `rows` rows by `b` with `isa`: the
/// integer and AMX kernels' [`COLUMN_BLOCK`], else the [`Blocking`]'s.
fn column_panels(isa: Isa, b: &Rhs<'_>, rows: usize) -> usize {
    let integer = isa.int8().is_some() && int8::applies(b);
    if integer || isa.kernel() == crate::Kernel::Amx {
        COLUMN_BLOCK
    } else {
        isa.blocking().panels(rows)
    }
}

/// Cuts `C` (`m × n`) into tasks for `threads` threads, in column blocks of `column_panels`.
fn plan(m: usize, n: usize, threads: usize, column_panels: usize) -> Plan {
    let panels = n.div_ceil(NR);
    let row_blocks = m.div_ceil(MC);
    // Prefer splitting columns (weights are read once per thread); split rows when there are
    // too few panels to keep every thread busy. A task is a run of column blocks of the task
    // loop (column_panels panels each), about TASKS_PER_THREAD of them per thread:
    // - several blocks, because a task's kernels prefetch its next block into L2 while they
    //   work on one (`Tile::ahead`), so that only a task's first block comes from memory all
    //   at once, in its first row tile. With one block per task every block did, and such a
    //   tile waits on memory: on an Intel Xeon (AMX host), one thread multiplied the LM head
    //   (1024 × 32000, f32) at 61 GFLOP/s with only that tile (12 rows), against 143 with
    //   256 rows. The mid-size model's five products at 256 tokens, 2 threads, side by side:
    //   87–90 ms with prefetching ahead over 4 tasks per thread, 90–92 ms with one block per
    //   task (both with the assembly tile);
    // - several tasks per thread, so that threads slowed by others on the machine still
    //   finish together: with only two chunks per thread, a thread idled for half a chunk,
    //   10–20% of a product, at the end.
    let blocks_per_task = panels
        .div_ceil(column_panels)
        .div_ceil(threads * TASKS_PER_THREAD)
        .max(1);
    let col_chunks = panels
        .div_ceil(column_panels * blocks_per_task)
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

fn check(a: &MatRef<'_>, b: &Rhs<'_>, c: &Out<'_>) {
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

/// `C (+)= A · B` on the pool's threads with `isa`'s kernel.
pub(crate) fn gemm(
    pool: &Pool<impl AsMut<GemmScratch> + Send>,
    isa: Isa,
    a: MatRef<'_>,
    b: Rhs<'_>,
    c: Out<'_>,
    accumulate: bool,
) {
    check(&a, &b, &c);
    let p = plan(
        c.rows,
        c.cols,
        pool.threads(),
        column_panels(isa, &b, c.rows),
    );
    let work = c.rows * c.cols * a.cols;
    let product = next_product();
    pool.run_sized(p.row_chunks * p.col_chunks, work, &|task, scratch| {
        let (ri, ci) = (task / p.col_chunks, task % p.col_chunks);
        let rows = ri * p.row_chunk..((ri + 1) * p.row_chunk).min(c.rows);
        let cols = ci * p.col_chunk..((ci + 1) * p.col_chunk).min(c.cols);
        let block = Block {
            a: &a,
            b: &b,
            c,
            rows,
            cols,
            accumulate,
        };
        gemm_task(isa, product, block, scratch.as_mut());
    });
}

/// Rows of `A` per task of [`gemm_groups`]: a popular expert's rows are split, so that one
/// expert does not keep one thread busy while the others wait.
const GROUP_ROWS: usize = 2 * MC;

/// `C_g (+)= A_g · B_g` for every group `g < groups` (a mixture's experts: `job(g)` gives the
/// rows routed to expert `g`, its weight, and where its rows go), as one parallel run: every
/// group's product is cut into column blocks (and long groups into row blocks), and the
/// threads take those tasks from one queue, so that neither a popular expert nor many small
/// ones leave a thread idle. Every `B_g` is `[k, n]`; a group with no rows costs nothing.
pub(crate) fn gemm_groups<'a, F>(
    pool: &Pool<impl AsMut<GemmScratch> + Send>,
    isa: Isa,
    groups: usize,
    (k, n): (usize, usize),
    most_rows: usize,
    job: &F,
    accumulate: bool,
) where
    F: Fn(usize) -> (MatRef<'a>, Rhs<'a>, Out<'a>) + Sync,
{
    if groups == 0 || most_rows == 0 || n == 0 {
        return;
    }
    let col_chunk = COLUMN_BLOCK * NR;
    let col_chunks = n.div_ceil(col_chunk);
    let row_chunks = most_rows.div_ceil(GROUP_ROWS);
    let per_group = col_chunks * row_chunks;
    // One product number per group, so that the integer kernels quantize each group's rows
    // once per thread and never reuse another group's.
    let first_product = PRODUCTS.fetch_add(groups as u64, std::sync::atomic::Ordering::Relaxed);
    let work = most_rows * n * k * groups.min(8);
    pool.run_sized(groups * per_group, work, &|task, scratch| {
        let (g, chunk) = (task / per_group, task % per_group);
        let (ri, ci) = (chunk / col_chunks, chunk % col_chunks);
        let (a, b, c) = job(g);
        let rows = ri * GROUP_ROWS..((ri + 1) * GROUP_ROWS).min(c.rows);
        if rows.is_empty() {
            return;
        }
        check(&a, &b, &c);
        let cols = ci * col_chunk..((ci + 1) * col_chunk).min(c.cols);
        let block = Block {
            a: &a,
            b: &b,
            c,
            rows,
            cols,
            accumulate,
        };
        gemm_task(isa, first_product + g as u64, block, scratch.as_mut());
    });
}

/// `C (+)= A · B` on the calling thread.
pub(crate) fn gemm_serial(
    isa: Isa,
    a: MatRef<'_>,
    b: Rhs<'_>,
    c: Out<'_>,
    accumulate: bool,
    scratch: &mut GemmScratch,
) {
    check(&a, &b, &c);
    let block = Block {
        a: &a,
        b: &b,
        c,
        rows: 0..c.rows,
        cols: 0..c.cols,
        accumulate,
    };
    gemm_task(isa, next_product(), block, scratch);
}

/// One task's rectangle of `C`; `cols` starts on a panel boundary.
struct Block<'t, 'a> {
    a: &'t MatRef<'a>,
    b: &'t Rhs<'a>,
    c: Out<'t>,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    accumulate: bool,
}

impl Block<'_, '_> {
    /// Whether the rectangle needs no kernel: it is empty, or the depth is 0 (then `C` is
    /// zeroed unless the product accumulates).
    fn is_trivial(&self) -> bool {
        if self.rows.is_empty() || self.cols.is_empty() {
            return true;
        }
        if self.a.cols > 0 {
            return false;
        }
        if !self.accumulate {
            for r in self.rows.clone() {
                // SAFETY: this task owns its rectangle of C.
                unsafe { self.c.row_mut(r, self.cols.start, self.cols.len()) }.fill(0.0);
            }
        }
        true
    }
}

/// Runs one rectangle with the kernel `isa` names: Q8_0 and Q4_0 panels through the integer
/// kernels when `isa` has them, everything else through the floating-point ones.
fn gemm_task(isa: Isa, product: u64, block: Block<'_, '_>, scratch: &mut GemmScratch) {
    let (Some(kernel), Rhs::Packed(w)) = (isa.int8(), block.b) else {
        return float_task(isa, product, block, scratch);
    };
    if !int8::applies(block.b) {
        return float_task(isa, product, block, scratch);
    }
    // Segment by segment (they are panel ranges): the interleaved ones through the integer
    // kernel, the others through the floating-point one.
    for segment in &w.segments {
        let cols = (segment.panels.start * NR).max(block.cols.start)
            ..(segment.panels.end * NR).min(block.cols.end);
        if cols.is_empty() {
            continue;
        }
        let part = Block {
            a: block.a,
            b: block.b,
            c: block.c,
            rows: block.rows.clone(),
            cols,
            accumulate: block.accumulate,
        };
        match &segment.data {
            PanelData::Quant { ty, data }
                if int8::is_interleaved(*ty) && int8::worth_it(kernel, *ty, part.rows.len()) =>
            {
                // SAFETY: an `Isa` has an integer kernel only if this CPU runs it.
                unsafe {
                    int8::task(
                        kernel,
                        product,
                        &part,
                        segment,
                        *ty,
                        data,
                        &mut scratch.quantized,
                    )
                }
            }
            _ => float_task(isa, product, part, scratch),
        }
    }
}
