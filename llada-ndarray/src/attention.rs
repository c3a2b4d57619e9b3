//! Bidirectional multi-head attention (grouped-query heads, a key padding mask): keys and
//! values packed once per layer into the kernel's panels, then one task per (row, head, query
//! tile) computes `softmax(q·kᵀ/√d + mask) · v` with the matrix kernel.

use std::ops::Range;

use ndarray::ArrayViewMut2;

use crate::config::Config;
use crate::context::ThreadScratch;
use crate::gemm::{Isa, MatRef, NR, Out, Rhs, gemm_serial, pack_panels};
use crate::ops::masked_softmax;
use crate::parallel::Disjoint;
use crate::threads::Pool;

/// Query rows per attention task: scores never exceed `QUERY_TILE × seq_len` per thread.
pub(crate) const QUERY_TILE: usize = 128;

/// Where the keys and values of every position of a row are: rows `row_stride` apart, keys
/// at column `k`, values at column `v`, `seq` rows per batch row.
pub(crate) struct KvSource<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) row_stride: usize,
    pub(crate) k: usize,
    pub(crate) v: usize,
}

impl<'a> KvSource<'a> {
    /// The keys and values inside a `qkv` buffer (`[tokens, (n_heads + 2 n_kv_heads) · hd]`).
    pub(crate) fn in_qkv(c: &Config, qkv: &'a [f32]) -> Self {
        let hd = c.head_dim;
        Self {
            data: qkv,
            row_stride: (c.n_heads + 2 * c.n_kv_heads) * hd,
            k: c.n_heads * hd,
            v: (c.n_heads + c.n_kv_heads) * hd,
        }
    }
}

/// The queries of the computed positions: rows of the `qkv` buffer.
pub(crate) struct Queries<'a> {
    pub(crate) qkv: &'a [f32],
    pub(crate) width: usize,
    pub(crate) positions: Range<usize>,
}

/// Keys (transposed) and values of every (row, kv head), packed once per layer into the
/// kernel's panel layout, so the attention tasks of all query tiles and all heads of a group
/// read them without repacking.
pub(crate) struct PackedKv<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    /// Values per (row, kv head) block.
    block: usize,
}

/// Values per (batch row, kv head) in the packed key and value buffers: the keys are `seq`
/// positions rounded up to whole panels times the head dimension, the values `seq` positions
/// times the head dimension rounded up to whole panels (more than the keys' for heads
/// narrower than a panel).
pub(crate) fn kv_block(c: &Config, seq: usize) -> usize {
    let keys = seq.div_ceil(NR) * NR * c.head_dim;
    let values = seq * c.head_dim.div_ceil(NR) * NR;
    keys.max(values)
}

/// Packs the keys and values of the first `seq` of the `rows` positions of each of `batch`
/// rows into `keys` and `values` (each at least `batch · n_kv_heads · kv_block(seq)` long).
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_keys_values<'a>(
    pool: &Pool<ThreadScratch>,
    c: &Config,
    kv: &KvSource<'_>,
    batch: usize,
    (rows, seq): (usize, usize),
    keys: &'a mut [f32],
    values: &'a mut [f32],
) -> PackedKv<'a> {
    let hd = c.head_dim;
    let block = kv_block(c, seq);
    let (k_out, v_out) = (Disjoint::new(&mut *keys), Disjoint::new(&mut *values));
    pool.run_sized(
        batch * c.n_kv_heads,
        batch * seq * 2 * c.n_kv_heads * hd * 4,
        &|task, _| {
            let (b, g) = (task / c.n_kv_heads, task % c.n_kv_heads);
            let base = b * rows * kv.row_stride;
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

/// Multi-head attention with a key padding mask (`[batch, mask_stride]`), one task per
/// (row, head, query tile): `softmax(q·kᵀ/√d + mask) · v` for the computed positions'
/// queries against the keys and values of the first `seq` positions, into `out`
/// (`[batch · positions, d_model]`). Bidirectional, or with `causal_block` block-causal:
/// a query sees the keys up to the end of its block.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    pool: &Pool<ThreadScratch>,
    isa: Isa,
    c: &Config,
    queries: &Queries<'_>,
    kv: &PackedKv<'_>,
    (mask, mask_stride): (Option<&[u8]>, usize),
    causal_block: Option<usize>,
    batch: usize,
    seq: usize,
    out: Out<'_>,
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
                isa,
                q,
                keys_t,
                Out::new(scores, rows, seq, seq),
                false,
                gemm_scratch,
            );
            let key_mask = mask.map(|m| &m[b * mask_stride..b * mask_stride + seq]);
            let causal = causal_block.map(|block| (queries.positions.start + q0, block));
            masked_softmax(
                isa,
                ArrayViewMut2::from_shape((rows, seq), &mut *scores).expect("tile shape"),
                scale,
                key_mask,
                causal,
            );
            let target = out.sub(b * span + q0, head * hd, rows, hd);
            gemm_serial(
                isa,
                MatRef::rows(scores, rows, seq, seq),
                values,
                target,
                false,
                gemm_scratch,
            );
        },
    );
}
