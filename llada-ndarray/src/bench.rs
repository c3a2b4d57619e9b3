//! Entry points for the criterion micro-benchmarks of the hot kernels: the same functions the
//! forward pass calls, with the kernel a default [`Context`](crate::Context) would pick. Not a
//! stable API.

use crate::attention::{KvSource, Queries, attention, kv_block, pack_keys_values};
use crate::config::Config;
use crate::context::{ThreadScratch, grow};
use crate::gemm::{Dtype, GemmScratch, Isa, MatRef, Out, PackedMatrix, Rhs, gemm};
use crate::ops::{par_bias_rope, par_rms_norm};
use crate::threads::Pool;

/// Per-thread packing memory for [`matmul`].
pub struct Scratch(GemmScratch);

impl AsMut<GemmScratch> for Scratch {
    fn as_mut(&mut self) -> &mut GemmScratch {
        &mut self.0
    }
}

/// A worker pool of `threads` threads and the kernel it runs.
pub struct Threads {
    pool: Pool<Scratch>,
    isa: Isa,
}

/// Starts a pool.
///
/// # Panics
/// If the threads cannot start or `LLADA_KERNEL` names a kernel this CPU cannot run.
pub fn threads(threads: usize) -> Threads {
    Threads {
        pool: Pool::new(
            (0..threads.max(1))
                .map(|_| Scratch(GemmScratch::new()))
                .collect(),
        )
        .expect("threads start"),
        isa: Isa::choose(None, None).expect("a kernel this CPU runs"),
    }
}

impl Threads {
    /// The same pool, multiplying Q8_0 and Q4_0 weights in integers where the CPU has an
    /// integer kernel (what a default [`Context`](crate::Context) does).
    pub fn with_integer_products(mut self) -> Self {
        self.isa = self.isa.with_integer_products();
        self
    }

    /// Whether Q8_0 and Q4_0 weights are multiplied in integers.
    pub fn integer_products(&self) -> bool {
        self.isa.int8().is_some()
    }
}

/// A weight `[n, k]` (row-major) packed for the kernel.
pub struct Weight(PackedMatrix);

/// Packs `w` (`[n, k]`, row-major) as f32, or as bf16 when `bf16`.
pub fn pack(w: &[f32], n: usize, k: usize, bf16: bool) -> Weight {
    let dtype = if bf16 { Dtype::Bf16 } else { Dtype::F32 };
    Weight(PackedMatrix::from_f32(w, n, k, dtype))
}

/// Packs `w` (`[n, k]`, row-major) quantized to `format` with ggml's reference quantizer, as
/// [`LoadOptions::with_quantize`](crate::LoadOptions::with_quantize) does.
///
/// # Panics
/// If `k` is not a multiple of the format's block.
pub fn pack_quantized(w: &[f32], n: usize, k: usize, format: crate::Quantization) -> Weight {
    let ty = format.quant_type();
    assert!(k.is_multiple_of(ty.block_len()), "k must be whole blocks");
    let data = PackedMatrix::quantize_rows(n, k, ty, |r, out| {
        out.copy_from_slice(&w[r * k..(r + 1) * k]);
    });
    Weight(PackedMatrix::single(k, n, data))
}

/// `out [m, n] = a [m, k] · wᵀ` on the pool.
pub fn matmul(threads: &Threads, a: &[f32], m: usize, w: &Weight, out: &mut [f32]) {
    let (k, n) = (w.0.k, w.0.n);
    gemm(
        &threads.pool,
        threads.isa,
        MatRef::rows(a, m, k, k),
        Rhs::Packed(&w.0),
        Out::new(out, m, n, n),
        false,
    );
}

/// One layer's RMSNorm + rotary embedding and attention, with their own pool.
pub struct Layer {
    pool: Pool<ThreadScratch>,
    isa: Isa,
    config: Config,
    cos: Vec<f32>,
    sin: Vec<f32>,
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl Layer {
    /// A layer of the model `config` describes, computed with `threads` threads.
    ///
    /// # Panics
    /// As [`threads`].
    pub fn new(config: Config, threads: usize) -> Self {
        let (cos, sin) = crate::model::rope_tables(&config, config.max_sequence_length);
        Self {
            pool: ThreadScratch::pool(threads).expect("threads start"),
            isa: Isa::choose(None, None).expect("a kernel this CPU runs"),
            config,
            cos,
            sin,
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    /// `h = rms_norm(x)` (`[tokens, d_model]`), then the rotary embedding of the queries
    /// and keys of `qkv` (`[tokens, (n_heads + 2 n_kv_heads) · head_dim]`) at positions
    /// `0..tokens`.
    pub fn norm_rope(
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
        par_bias_rope(
            &self.pool,
            c,
            (&self.cos, &self.sin),
            None,
            None,
            qkv,
            tokens,
            &(0..tokens),
        );
    }

    /// Bidirectional attention of one row of `seq` tokens from `qkv` into `out`
    /// (`[seq, d_model]`).
    pub fn attention(&mut self, qkv: &[f32], seq: usize, out: &mut [f32]) {
        let c = &self.config;
        let panels = c.n_kv_heads * kv_block(c, seq);
        grow(&mut self.keys, panels);
        grow(&mut self.values, panels);
        self.pool.for_each_scratch(|s| s.reserve_scores(seq));
        let source = KvSource::in_qkv(c, qkv);
        let packed = pack_keys_values(
            &self.pool,
            c,
            &source,
            1,
            (seq, seq),
            &mut self.keys,
            &mut self.values,
        );
        let queries = Queries {
            qkv,
            width: source.row_stride,
            positions: 0..seq,
        };
        let out = Out::new(out, seq, c.d_model, c.d_model);
        attention(
            &self.pool,
            self.isa,
            c,
            &queries,
            &packed,
            (None, seq),
            None,
            1,
            seq,
            out,
        );
    }
}
