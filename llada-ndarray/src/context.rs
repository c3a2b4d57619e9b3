//! A per-thread inference context: the activation buffers and worker threads of one caller,
//! over a shared [`Model`]. It implements [`MaskPredictor`].

use std::ops::Range;
use std::sync::Arc;

use llada_core::{CacheMode, ForwardRequest, MaskPredictor, ShapeError};
use ndarray::{ArrayView2, ArrayViewMut2, s};

use crate::error::{ForwardError, LoadError};
use crate::gemm::{GemmScratch, MatRef, NR, Out, Rhs, gemm, gemm_serial, pack_panels};
use crate::model::Model;
use crate::ops::{masked_softmax, rms_norm, rope, silu_mul};
use crate::threads::Pool;

/// Query rows per attention task: scores never exceed `QUERY_TILE × seq_len` per thread.
const QUERY_TILE: usize = 128;

/// Rows per task of the row-wise operations (norms, rotary embedding, SwiGLU).
const ROW_CHUNK: usize = 32;

/// Scratch memory of one thread.
pub(crate) struct ThreadScratch {
    gemm: GemmScratch,
    /// `[QUERY_TILE, max_sequence_length]` attention scores.
    scores: Vec<f32>,
}

impl ThreadScratch {
    /// A pool of `threads` threads (at least 1), each with scratch for `config`'s longest
    /// sequence.
    fn pool(config: &crate::Config, threads: usize) -> std::io::Result<Pool<Self>> {
        let scratch = (0..threads.max(1))
            .map(|_| ThreadScratch {
                gemm: GemmScratch::new(),
                scores: vec![0.0; QUERY_TILE * config.max_sequence_length],
            })
            .collect();
        Pool::new(scratch)
    }
}

impl AsMut<GemmScratch> for ThreadScratch {
    fn as_mut(&mut self) -> &mut GemmScratch {
        &mut self.gemm
    }
}

/// Activations, reused between calls; they only grow.
#[derive(Default)]
struct Buffers {
    /// Residual stream `[tokens, d_model]`.
    x: Vec<f32>,
    /// Normalised input of a sub-layer `[tokens, d_model]`.
    h: Vec<f32>,
    /// Queries, keys and values `[tokens, (n_heads + 2 n_kv_heads) · head_dim]`.
    qkv: Vec<f32>,
    /// Attention output `[tokens, d_model]`.
    attn: Vec<f32>,
    /// Gate and up projections `[tokens, 2 · mlp_hidden_size]`.
    gate_up: Vec<f32>,
    /// Final-norm rows of the logits window `[batch · window, d_model]`.
    head_in: Vec<f32>,
    /// Keys of every (row, kv head), transposed and packed into kernel panels.
    keys: Vec<f32>,
    /// Values of every (row, kv head), packed into kernel panels.
    values: Vec<f32>,
}

fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

/// Runs a [`Model`] on one thread's requests (with its own worker threads). Create one per
/// thread that generates; they share the model's weights.
pub struct Context {
    model: Arc<Model>,
    pool: Pool<ThreadScratch>,
    buffers: Buffers,
    cache: KvCache,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("threads", &self.pool.threads())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context using every core the operating system offers.
    pub fn new(model: Arc<Model>) -> Result<Self, LoadError> {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        Self::with_threads(model, threads)
    }

    /// A context with `threads` threads (the calling thread included; at least 1).
    pub fn with_threads(model: Arc<Model>, threads: usize) -> Result<Self, LoadError> {
        let pool = ThreadScratch::pool(&model.config, threads).map_err(LoadError::Threads)?;
        Ok(Self {
            model,
            pool,
            buffers: Buffers::default(),
            cache: KvCache::default(),
        })
    }

    /// The shared model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Threads this context computes with.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Sizes the buffers for `batch` rows of `seq_len` tokens (with a logits window as long as
    /// the sequence), so that later calls up to that size allocate nothing.
    pub fn reserve(&mut self, batch: usize, seq_len: usize) {
        let c = &self.model.config;
        let tokens = batch * seq_len;
        let b = &mut self.buffers;
        grow(&mut b.x, tokens * c.d_model);
        grow(&mut b.h, tokens * c.d_model);
        grow(
            &mut b.qkv,
            tokens * (c.n_heads + 2 * c.n_kv_heads) * c.head_dim,
        );
        grow(&mut b.attn, tokens * c.d_model);
        grow(&mut b.gate_up, tokens * 2 * c.mlp_hidden_size);
        grow(&mut b.head_in, tokens * c.d_model);
        let panels = batch * c.n_kv_heads * kv_block(c, seq_len);
        grow(&mut b.keys, panels);
        grow(&mut b.values, panels);
    }

    fn validate(&self, request: &ForwardRequest<'_>, logits: &[f32]) -> Result<(), ForwardError> {
        let c = &self.model.config;
        if request.seq_len() > c.max_sequence_length {
            return Err(ForwardError::TooLong {
                seq_len: request.seq_len(),
                max: c.max_sequence_length,
            });
        }
        request.check_logits(logits, c.embedding_size)?;
        if let Some((row, position, id)) = request.first_id_outside(c.embedding_size) {
            return Err(ForwardError::TokenOutOfVocab {
                id,
                row,
                position,
                vocab: c.embedding_size,
            });
        }
        let seq = request.seq_len();
        if let Some(mask) = request.attention_mask() {
            for (row, m) in mask.chunks_exact(seq).enumerate() {
                if m.iter().all(|&v| v == 0) {
                    return Err(ForwardError::EmptyRow { row });
                }
            }
        }
        Ok(())
    }

    /// The forward pass: logits of the requested window, `[batch, window, embedding_size]`.
    ///
    /// With a cache hint from the sampler (Fast-dLLM's block-wise cache), the first step of a
    /// block runs in full and keeps every position's keys and values; the following steps
    /// recompute only the block (dual cache) or the block and what follows it (prefix cache)
    /// and take the other positions' keys and values from the cache.
    pub fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), ForwardError> {
        self.validate(request, logits)?;
        let (batch, seq) = (request.batch(), request.seq_len());
        let (positions, kv) = match request.cache() {
            None => (0..seq, KvUse::Plain),
            Some(hint) => {
                if !hint.refresh && self.cache.holds(batch, seq) {
                    let positions = match hint.mode {
                        CacheMode::Dual => hint.span.clone(),
                        CacheMode::Prefix => hint.span.start..seq,
                        CacheMode::None => 0..seq,
                    };
                    (positions, KvUse::Read)
                } else {
                    (0..seq, KvUse::Fill)
                }
            }
        };
        let window = request.window();
        if window.start < positions.start || window.end > positions.end {
            return Err(ShapeError::Window {
                start: window.start,
                end: window.end,
                seq_len: seq,
            }
            .into());
        }
        self.reserve(batch, seq);
        if kv != KvUse::Plain {
            self.cache.prepare(&self.model.config, batch, seq);
        }
        self.run(request, positions, kv, logits);
        if kv == KvUse::Fill {
            self.cache.shape = Some((batch, seq));
        }
        Ok(())
    }

    /// The blocks over `positions` of every row (all of them without a cache).
    fn run(
        &mut self,
        request: &ForwardRequest<'_>,
        positions: Range<usize>,
        kv: KvUse,
        logits: &mut [f32],
    ) {
        let (batch, seq) = (request.batch(), request.seq_len());
        let model = &*self.model;
        let c = &model.config;
        let (d, hd) = (c.d_model, c.head_dim);
        let span = positions.len();
        let tokens = batch * span;
        let qkv_width = (c.n_heads + 2 * c.n_kv_heads) * hd;
        let kv_dim = c.n_kv_heads * hd;
        let mlp = c.mlp_hidden_size;
        let eps = c.rms_norm_eps as f32;
        let b = &mut self.buffers;
        let cache = &mut self.cache;
        let pool = &self.pool;

        // Embedding of the computed positions.
        for r in 0..batch {
            for (i, p) in positions.clone().enumerate() {
                let t = r * span + i;
                model
                    .embedding
                    .row(request.row(r)[p] as usize, &mut b.x[t * d..(t + 1) * d]);
            }
        }

        for (layer, block) in model.blocks.iter().enumerate() {
            // Attention sub-layer: x += attn_out(attention(rope(qkv(norm(x))))).
            par_rms_norm(pool, &b.x, &block.attn_norm, eps, &mut b.h, tokens, d);
            gemm(
                pool,
                MatRef::rows(&b.h, tokens, d, d),
                Rhs::Packed(&block.qkv),
                Out::new(&mut b.qkv, tokens, qkv_width, qkv_width),
                false,
            );
            par_rope(
                pool,
                c,
                (&model.rope_cos, &model.rope_sin),
                &mut b.qkv,
                tokens,
                &positions,
            );
            // Keys and values: straight from this pass, or through the cache (rotated keys).
            let keys_values = if kv == KvUse::Plain {
                KvSource {
                    data: &b.qkv,
                    row_stride: qkv_width,
                    k: c.n_heads * hd,
                    v: (c.n_heads + c.n_kv_heads) * hd,
                }
            } else {
                let layer_cache = cache.layer_mut(layer);
                for t in 0..tokens {
                    let (r, p) = (t / span, positions.start + t % span);
                    let src = &b.qkv[t * qkv_width + c.n_heads * hd..(t + 1) * qkv_width];
                    layer_cache[(r * seq + p) * 2 * kv_dim..(r * seq + p + 1) * 2 * kv_dim]
                        .copy_from_slice(src);
                }
                KvSource {
                    data: cache.layer(layer),
                    row_stride: 2 * kv_dim,
                    k: 0,
                    v: kv_dim,
                }
            };
            let packed = pack_keys_values(
                pool,
                c,
                &keys_values,
                batch,
                seq,
                &mut b.keys,
                &mut b.values,
            );
            let queries = Queries {
                qkv: &b.qkv,
                width: qkv_width,
                positions: positions.clone(),
            };
            attention(
                pool,
                c,
                &queries,
                &packed,
                request.attention_mask(),
                batch,
                seq,
                Out::new(&mut b.attn, tokens, d, d),
            );
            gemm(
                pool,
                MatRef::rows(&b.attn, tokens, d, d),
                Rhs::Packed(&block.attn_out),
                Out::new(&mut b.x, tokens, d, d),
                true,
            );

            // MLP sub-layer: x += ff_out(silu(ff_proj(norm(x))) · up_proj(norm(x))).
            par_rms_norm(pool, &b.x, &block.ff_norm, eps, &mut b.h, tokens, d);
            gemm(
                pool,
                MatRef::rows(&b.h, tokens, d, d),
                Rhs::Packed(&block.gate_up),
                Out::new(&mut b.gate_up, tokens, 2 * mlp, 2 * mlp),
                false,
            );
            par_rows(pool, &mut b.gate_up, tokens, 2 * mlp, &|_, row| {
                let (gate, up) = row.split_at_mut(mlp);
                silu_mul(gate, up);
            });
            gemm(
                pool,
                MatRef::rows(&b.gate_up, tokens, mlp, 2 * mlp),
                Rhs::Packed(&block.ff_out),
                Out::new(&mut b.x, tokens, d, d),
                true,
            );
        }

        // Final norm and LM head, on the requested window only.
        let window = request.window();
        let rows = batch * window.len();
        {
            let x = view(&b.x, tokens, d);
            let mut head_in = view_mut(&mut b.head_in, rows, d);
            let offset = window.start - positions.start;
            for r in 0..batch {
                let src = x.slice(s![r * span + offset..r * span + offset + window.len(), ..]);
                let dst = head_in.slice_mut(s![r * window.len()..(r + 1) * window.len(), ..]);
                rms_norm(src, &model.ln_f, eps, dst);
            }
        }
        let vocab = c.embedding_size;
        gemm(
            pool,
            MatRef::rows(&b.head_in, rows, d, d),
            Rhs::Packed(&model.head),
            Out::new(logits, rows, vocab, vocab),
            false,
        );
    }
}

/// A buffer that parallel tasks write at disjoint ranges.
#[derive(Clone, Copy)]
struct Disjoint {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks only ever take disjoint ranges (see `range`).
unsafe impl Send for Disjoint {}
// SAFETY: as above.
unsafe impl Sync for Disjoint {}

impl Disjoint {
    fn new(data: &mut [f32]) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
        }
    }

    /// # Safety
    /// No two live results may overlap.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, range: Range<usize>) -> &mut [f32] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range out of bounds"
        );
        // SAFETY: in bounds (checked), and disjoint from every other live range (the caller's
        // contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

/// Runs `f(row index, row)` over the first `rows` rows of `data` (rows of `cols` values), in
/// chunks of rows across the pool.
fn par_rows(
    pool: &Pool<ThreadScratch>,
    data: &mut [f32],
    rows: usize,
    cols: usize,
    f: &(dyn Fn(usize, &mut [f32]) + Sync),
) {
    let out = Disjoint::new(&mut data[..rows * cols]);
    pool.run_sized(rows.div_ceil(ROW_CHUNK), rows * cols * 4, &|task, _| {
        let chunk = task * ROW_CHUNK..((task + 1) * ROW_CHUNK).min(rows);
        // SAFETY: each task owns its own rows.
        let part = unsafe { out.range(chunk.start * cols..chunk.end * cols) };
        for (i, row) in part.chunks_exact_mut(cols).enumerate() {
            f(chunk.start + i, row);
        }
    });
}

/// `out = rms_norm(x)` row by row across the pool.
fn par_rms_norm(
    pool: &Pool<ThreadScratch>,
    x: &[f32],
    weight: &[f32],
    eps: f32,
    out: &mut [f32],
    rows: usize,
    d: usize,
) {
    par_rows(pool, out, rows, d, &|r, row| {
        let src = ArrayView2::from_shape((1, d), &x[r * d..(r + 1) * d]).expect("one row");
        let dst = ArrayViewMut2::from_shape((1, d), row).expect("one row");
        rms_norm(src, weight, eps, dst);
    });
}

/// Rotary embedding of the queries and keys (not the values) of `tokens` rows of `qkv`
/// (`[tokens, (n_heads + 2 n_kv_heads) · head_dim]`): the computed `positions` of each batch
/// row, one after the other.
fn par_rope(
    pool: &Pool<ThreadScratch>,
    c: &crate::Config,
    (cos, sin): (&[f32], &[f32]),
    qkv: &mut [f32],
    tokens: usize,
    positions: &Range<usize>,
) {
    let hd = c.head_dim;
    let half = hd / 2;
    let width = (c.n_heads + 2 * c.n_kv_heads) * hd;
    let rotated = (c.n_heads + c.n_kv_heads) * hd;
    let span = positions.len();
    par_rows(pool, qkv, tokens, width, &|t, row| {
        let position = positions.start + t % span;
        let (cos, sin) = (
            &cos[position * half..][..half],
            &sin[position * half..][..half],
        );
        for head in row[..rotated].chunks_exact_mut(hd) {
            rope(head, cos, sin);
        }
    });
}

/// One layer's row operations and attention on their own, for the criterion benchmarks
/// (through [`crate::bench`]): the same functions the forward pass calls.
pub(crate) struct LayerKernels {
    pool: Pool<ThreadScratch>,
    config: crate::Config,
    cos: Vec<f32>,
    sin: Vec<f32>,
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl LayerKernels {
    pub(crate) fn new(config: crate::Config, threads: usize) -> std::io::Result<Self> {
        let (cos, sin) = crate::model::rope_tables(&config);
        Ok(Self {
            pool: ThreadScratch::pool(&config, threads)?,
            config,
            cos,
            sin,
            keys: Vec::new(),
            values: Vec::new(),
        })
    }

    /// `h = rms_norm(x)` over `tokens` rows, then the rotary embedding of `qkv`'s queries and
    /// keys at positions `0..tokens`.
    pub(crate) fn norm_rope(
        &self,
        x: &[f32],
        weight: &[f32],
        h: &mut [f32],
        qkv: &mut [f32],
        tokens: usize,
    ) {
        let c = &self.config;
        par_rms_norm(
            &self.pool,
            x,
            weight,
            c.rms_norm_eps as f32,
            h,
            tokens,
            c.d_model,
        );
        par_rope(
            &self.pool,
            c,
            (&self.cos, &self.sin),
            qkv,
            tokens,
            &(0..tokens),
        );
    }

    /// Attention of one batch row of `seq` tokens: keys and values packed from `qkv`, then
    /// `softmax(q·kᵀ/√d) · v` into `out` (`[seq, d_model]`).
    pub(crate) fn attention(&mut self, qkv: &[f32], seq: usize, out: &mut [f32]) {
        let c = &self.config;
        let width = (c.n_heads + 2 * c.n_kv_heads) * c.head_dim;
        let panels = c.n_kv_heads * kv_block(c, seq);
        grow(&mut self.keys, panels);
        grow(&mut self.values, panels);
        let source = KvSource {
            data: qkv,
            row_stride: width,
            k: c.n_heads * c.head_dim,
            v: (c.n_heads + c.n_kv_heads) * c.head_dim,
        };
        let packed = pack_keys_values(
            &self.pool,
            c,
            &source,
            1,
            seq,
            &mut self.keys,
            &mut self.values,
        );
        let queries = Queries {
            qkv,
            width,
            positions: 0..seq,
        };
        attention(
            &self.pool,
            c,
            &queries,
            &packed,
            None,
            1,
            seq,
            Out::new(out, seq, c.d_model, c.d_model),
        );
    }
}

/// Keys (transposed) and values of every (row, kv head), packed once per layer into the
/// kernel's panel layout, so the attention tasks of all query tiles and all heads of a group
/// read them without repacking.
struct PackedKv<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    /// Values per (row, kv head) block.
    block: usize,
}

/// Values per (batch row, kv head) in the packed key and value buffers: `seq` positions
/// rounded up to whole panels, times the head dimension.
fn kv_block(c: &crate::Config, seq: usize) -> usize {
    seq.div_ceil(NR) * NR * c.head_dim
}

fn pack_keys_values<'a>(
    pool: &Pool<ThreadScratch>,
    c: &crate::Config,
    kv: &KvSource<'_>,
    batch: usize,
    seq: usize,
    keys: &'a mut [f32],
    values: &'a mut [f32],
) -> PackedKv<'a> {
    let hd = c.head_dim;
    let block = kv_block(c, seq);
    let (k_out, v_out) = (Disjoint::new(keys), Disjoint::new(values));
    pool.run_sized(
        batch * c.n_kv_heads,
        batch * seq * 2 * c.n_kv_heads * hd * 4,
        &|task, _| {
            let (b, g) = (task / c.n_kv_heads, task % c.n_kv_heads);
            let base = b * seq * kv.row_stride;
            // qᵀ-side operand: B = Kᵀ (hd × seq), a column per position.
            let keys_t = MatRef {
                data: &kv.data[base + kv.k + g * hd..],
                rows: hd,
                cols: seq,
                row_stride: 1,
                col_stride: kv.row_stride,
            };
            let values = MatRef::rows(&kv.data[base + kv.v + g * hd..], seq, hd, kv.row_stride);
            // SAFETY: each task owns block `task` of both buffers.
            let (k_dst, v_dst) = unsafe {
                (
                    k_out.range(task * block..(task + 1) * block),
                    v_out.range(task * block..(task + 1) * block),
                )
            };
            pack_panels(&keys_t, k_dst);
            pack_panels(&values, v_dst);
        },
    );
    PackedKv {
        keys,
        values,
        block,
    }
}

/// How a pass gets the keys and values of the positions it does not compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KvUse {
    /// Every position is computed; no cache.
    Plain,
    /// Every position is computed and its keys and values are kept.
    Fill,
    /// Only some positions are computed; the others come from the cache.
    Read,
}

/// Keys and values per layer, `[batch, seq, 2 · kv_dim]` (rotated keys, then values), kept
/// between the steps of a block.
#[derive(Default)]
struct KvCache {
    data: Vec<f32>,
    layer_len: usize,
    /// The (batch, seq) it was filled for.
    shape: Option<(usize, usize)>,
}

impl KvCache {
    fn holds(&self, batch: usize, seq: usize) -> bool {
        self.shape == Some((batch, seq))
    }

    /// Sizes the cache for `batch × seq`; forgets its content if the shape changes.
    fn prepare(&mut self, c: &crate::Config, batch: usize, seq: usize) {
        if !self.holds(batch, seq) {
            self.shape = None;
        }
        self.layer_len = batch * seq * 2 * c.n_kv_heads * c.head_dim;
        grow(&mut self.data, self.layer_len * c.n_layers);
    }

    fn layer(&self, layer: usize) -> &[f32] {
        &self.data[layer * self.layer_len..(layer + 1) * self.layer_len]
    }

    fn layer_mut(&mut self, layer: usize) -> &mut [f32] {
        &mut self.data[layer * self.layer_len..(layer + 1) * self.layer_len]
    }
}

/// Where the keys and values of every position of a row are: rows `row_stride` apart, keys
/// at column `k`, values at column `v`, `seq` rows per batch row.
struct KvSource<'a> {
    data: &'a [f32],
    row_stride: usize,
    k: usize,
    v: usize,
}

/// The queries of the computed positions: rows of the `qkv` buffer.
struct Queries<'a> {
    qkv: &'a [f32],
    width: usize,
    positions: Range<usize>,
}

fn view(data: &[f32], rows: usize, cols: usize) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((rows, cols), &data[..rows * cols]).expect("buffer holds rows × cols")
}

fn view_mut(data: &mut [f32], rows: usize, cols: usize) -> ArrayViewMut2<'_, f32> {
    ArrayViewMut2::from_shape((rows, cols), &mut data[..rows * cols])
        .expect("buffer holds rows × cols")
}

/// Bidirectional multi-head attention with a key padding mask, one task per (row, head,
/// query tile): `softmax(q·kᵀ/√d + mask) · v` for the computed positions' queries against
/// every position's keys and values, into `out` (`[batch · positions, d_model]`).
#[allow(clippy::too_many_arguments)]
fn attention(
    pool: &Pool<ThreadScratch>,
    c: &crate::Config,
    queries: &Queries<'_>,
    kv: &PackedKv<'_>,
    mask: Option<&[u8]>,
    batch: usize,
    seq: usize,
    out: Out,
) {
    let hd = c.head_dim;
    let group = c.n_heads / c.n_kv_heads;
    let span = queries.positions.len();
    let tiles = span.div_ceil(QUERY_TILE);
    let scale = 1.0 / (hd as f32).sqrt();
    pool.run(
        batch * c.n_heads * tiles,
        &|task, scratch: &mut ThreadScratch| {
            let (b, rest) = (task / (c.n_heads * tiles), task % (c.n_heads * tiles));
            let (head, tile) = (rest / tiles, rest % tiles);
            let slot = b * c.n_kv_heads + head / group;
            let q0 = tile * QUERY_TILE;
            let rows = QUERY_TILE.min(span - q0);
            let q = MatRef::rows(
                &queries.qkv[(b * span + q0) * queries.width + head * hd..],
                rows,
                hd,
                queries.width,
            );
            let keys_t = Rhs::Panels {
                data: &kv.keys[slot * kv.block..(slot + 1) * kv.block],
                k: hd,
                n: seq,
            };
            let values = Rhs::Panels {
                data: &kv.values[slot * kv.block..(slot + 1) * kv.block],
                k: seq,
                n: hd,
            };
            let ThreadScratch {
                gemm: gemm_scratch,
                scores,
            } = scratch;
            let scores = &mut scores[..rows * seq];
            gemm_serial(
                q,
                keys_t,
                Out::new(scores, rows, seq, seq),
                false,
                gemm_scratch,
            );
            let key_mask = mask.map(|m| &m[b * seq..(b + 1) * seq]);
            masked_softmax(
                ArrayViewMut2::from_shape((rows, seq), &mut *scores).expect("tile shape"),
                scale,
                key_mask,
            );
            let target = out.sub(b * span + q0, head * hd, rows, hd);
            gemm_serial(
                MatRef::rows(scores, rows, seq, seq),
                values,
                target,
                false,
                gemm_scratch,
            );
        },
    );
}

impl MaskPredictor for Context {
    type Error = ForwardError;

    /// The width of a logits row: the model's `embedding_size` (which may exceed the
    /// tokenizer's `vocab_size`).
    #[allow(clippy::misnamed_getters)]
    fn vocab_size(&self) -> usize {
        self.model.config.embedding_size
    }

    fn max_sequence_length(&self) -> usize {
        self.model.config.max_sequence_length
    }

    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), ForwardError> {
        Context::forward(self, request, logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_shared_and_contexts_move_between_threads() {
        fn shared<T: Send + Sync>() {}
        fn movable<T: Send>() {}
        shared::<Model>();
        movable::<Context>();
    }
}
