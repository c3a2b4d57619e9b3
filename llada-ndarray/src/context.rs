//! A per-thread inference context: the activation buffers, worker threads and kernel choice
//! of one caller, over a shared [`Model`]. It implements [`MaskPredictor`].

use std::ops::Range;
use std::sync::Arc;

use llada_core::{CacheMode, ForwardRequest, MaskPredictor, ShapeError};
use ndarray::{ArrayView2, ArrayViewMut2, s};

use crate::attention::{KvSource, PackedKv, QUERY_TILE, Queries, attention, kv_block};
use crate::error::{ForwardError, LoadError};
use crate::gemm::{GemmScratch, Isa, MatRef, Out, Rhs, gemm};
use crate::kv_cache::{KvCache, KvUse};
use crate::mlp::{MoeProfile, Routes, add_experts, add_swiglu};
use crate::model::{Mlp, Model};
use crate::ops::{par_bias_rope, par_rms_norm, rms_norm};
use crate::parallel::par_rows;
use crate::threads::Pool;
use crate::{Blocking, Kernel, attention};

/// Scratch memory of one thread.
pub(crate) struct ThreadScratch {
    pub(crate) gemm: GemmScratch,
    /// `[QUERY_TILE, seq_len]` attention scores, grown with the longest sequence.
    pub(crate) scores: Vec<f32>,
}

impl ThreadScratch {
    /// A pool of `threads` threads (at least 1); their scratch grows with the requests
    /// ([`Context::reserve`]), never with what a configuration claims.
    pub(crate) fn pool(threads: usize) -> std::io::Result<Pool<Self>> {
        let scratch = (0..threads.max(1))
            .map(|_| ThreadScratch {
                gemm: GemmScratch::new(),
                scores: Vec::new(),
            })
            .collect();
        Pool::new(scratch)
    }

    /// Room for the attention scores of `seq_len` keys.
    pub(crate) fn reserve_scores(&mut self, seq_len: usize) {
        grow(&mut self.scores, QUERY_TILE * seq_len);
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
    /// Gate and up projections `[tokens, 2 · mlp_hidden_size]` (of the dense MLP or the
    /// shared expert), or of the rows routed to the experts `[tokens · k, 2 · expert width]`.
    gate_up: Vec<f32>,
    /// A mixture's routing tables, kept here so that a warm step allocates nothing (boxed:
    /// dense models keep a context small).
    routes: Box<Routes>,
    /// Where the mixture layers' time went.
    moe_profile: MoeProfile,
    /// Final-norm rows of the logits window `[batch · window, d_model]`.
    head_in: Vec<f32>,
    /// Keys of every (row, kv head), transposed and packed into kernel panels.
    keys: Vec<f32>,
    /// Values of every (row, kv head), packed into kernel panels.
    values: Vec<f32>,
    /// Rotary cos and sin `[position, head_dim / 2]` of the longest sequence so far.
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
}

/// Grows `v` to at least `len` values (it never shrinks).
pub(crate) fn grow<T: Clone + Default>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}

/// The most threads a context starts (a count from a host's parameters is checked against it
/// before anything is allocated per thread).
pub const MAX_THREADS: usize = 1024;

/// How a [`Context`] computes: threads and kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContextOptions {
    /// Threads, the calling thread included (`None`: every core the operating system offers).
    pub threads: Option<usize>,
    /// The matrix kernel (`None`: `LLADA_KERNEL` if set, else the fastest this CPU runs that
    /// computes in f32, so never `Kernel::Amx` unless asked for).
    /// Asking for one the CPU lacks is an error.
    pub kernel: Option<Kernel>,
    /// How the floating-point products are cut into blocks (`None`: `LLADA_BLOCKING` if
    /// set, else [`Blocking::for_cpu`]'s choice for this CPU and kernel). Pinned (with the
    /// kernel), it keeps the rounding of the products the same on CPUs whose table entries
    /// differ: the depth of the blocks rounds deep products differently in their last bits.
    pub blocking: Option<Blocking>,
    /// Multiply Q8_0, Q4_0, Q4_K and Q6_K weights in f32 (widened inside the kernel) even
    /// where integer kernels exist. By default (`false`) the AVX-512 and AVX2 kernel families
    /// multiply them in integers, as llama.cpp does: activations are quantized to 8-bit
    /// blocks of 32 first, which is several times faster and moves logits by about 1% of
    /// their row's spread (see `tests/int8.rs`); with `true` the logits are those of the
    /// dequantized weights within 1e-4. The portable kernel always widens.
    pub dequantized_products: bool,
}

impl ContextOptions {
    /// Computes with `threads` threads (at least 1).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Computes with `kernel`.
    pub fn with_kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = Some(kernel);
        self
    }

    /// Cuts the floating-point products into `blocking`'s blocks.
    pub fn with_blocking(mut self, blocking: Blocking) -> Self {
        self.blocking = Some(blocking);
        self
    }

    /// Multiplies quantized weights in f32, never in integers (see
    /// [`dequantized_products`](Self::dequantized_products)).
    pub fn with_dequantized_products(mut self) -> Self {
        self.dequantized_products = true;
        self
    }
}

/// Runs a [`Model`] on one thread's requests (with its own worker threads). Create one per
/// thread that generates; they share the model's weights.
pub struct Context {
    model: Arc<Model>,
    pool: Pool<ThreadScratch>,
    isa: Isa,
    buffers: Buffers,
    /// Boxed: a context stays small beside the other backends.
    cache: Box<KvCache>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("threads", &self.pool.threads())
            .field("kernel", &self.isa.kernel())
            .field("blocking", &self.isa.blocking())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context with the default options: every core, the fastest kernel (or `LLADA_KERNEL`).
    pub fn new(model: Arc<Model>) -> Result<Self, LoadError> {
        Self::with_options(model, ContextOptions::default())
    }

    /// A context with `threads` threads (the calling thread included; at least 1).
    pub fn with_threads(model: Arc<Model>, threads: usize) -> Result<Self, LoadError> {
        Self::with_options(model, ContextOptions::default().with_threads(threads))
    }

    /// A context with the given threads and kernel. A kernel this CPU cannot run (asked for
    /// here or through `LLADA_KERNEL`) is [`LoadError::KernelUnsupported`].
    pub fn with_options(model: Arc<Model>, options: ContextOptions) -> Result<Self, LoadError> {
        let mut isa = Isa::choose(options.kernel, options.blocking)?;
        if !options.dequantized_products {
            isa = isa.with_integer_products();
        }
        let threads = options
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        if threads > MAX_THREADS {
            return Err(LoadError::ThreadCount {
                threads,
                max: MAX_THREADS,
            });
        }
        let pool = ThreadScratch::pool(threads).map_err(LoadError::Threads)?;
        Ok(Self {
            model,
            pool,
            isa,
            buffers: Buffers::default(),
            cache: Box::default(),
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

    /// The matrix kernel this context runs.
    pub fn kernel(&self) -> Kernel {
        self.isa.kernel()
    }

    /// How this context's floating-point products are cut into blocks.
    pub fn blocking(&self) -> Blocking {
        self.isa.blocking()
    }

    /// Whether Q8_0, Q4_0, Q4_K and Q6_K weights are multiplied in integers (see
    /// [`ContextOptions::dequantized_products`]).
    pub fn integer_products(&self) -> bool {
        self.isa.int8().is_some()
    }

    /// The integer kernel those products run, if any: `amx-int8` (Q8_0 on AMX tiles, the other
    /// formats through VNNI; with [`Kernel::Amx`] only), `avx512-vnni` or `avx2` on x86-64,
    /// `neon-dotprod` (`sdot`) or `neon` (plain NEON) on aarch64.
    pub fn integer_kernel(&self) -> Option<&'static str> {
        self.isa.int8().map(|k| k.name())
    }

    /// Where the mixture-of-experts layers' time went since the context was made or the last
    /// [`reset_moe_profile`](Self::reset_moe_profile).
    pub fn moe_profile(&self) -> MoeProfile {
        self.buffers.moe_profile
    }

    /// Starts [`moe_profile`](Self::moe_profile) again from zero.
    pub fn reset_moe_profile(&mut self) {
        self.buffers.moe_profile = MoeProfile::default();
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
        let mut hidden = 2 * c.mlp_hidden_size;
        if let Some(moe) = &c.moe {
            hidden = hidden
                .max(2 * moe.experts_per_token * moe.expert_hidden_size)
                .max(2 * c.shared_width());
            b.routes.reserve(moe, tokens, c.d_model);
        }
        grow(&mut b.gate_up, tokens * hidden);
        grow(&mut b.head_in, tokens * c.d_model);
        let panels = batch * c.n_kv_heads * kv_block(c, seq_len);
        grow(&mut b.keys, panels);
        grow(&mut b.values, panels);
        crate::model::grow_rope(
            &self.model.rope_inv_freq,
            (&mut b.rope_cos, &mut b.rope_sin),
            seq_len,
        );
        self.pool.for_each_scratch(|s| s.reserve_scores(seq_len));
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
        if let Some(block) = request.block_causal() {
            return self.forward_block_causal(request, block, logits);
        }
        let (positions, kv) = match request.cache() {
            None => (0..seq, KvUse::Plain),
            Some(hint) => {
                if !hint.refresh && self.cache.holds(batch, seq) {
                    let positions = match hint.mode {
                        CacheMode::Dual => hint.span.clone(),
                        CacheMode::Prefix => hint.span.start..seq,
                        _ => 0..seq,
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
        self.run(request, positions, seq, kv, logits);
        if kv == KvUse::Fill {
            self.cache.filled(batch, seq);
        }
        Ok(())
    }

    /// A block-causal pass (LLaDA2.x): only the positions up to the end of the window's block
    /// matter. Without a cache hint they are all computed; with one, the whole blocks the
    /// cache holds for these tokens are not, and the blocks before the hint's span (final:
    /// nothing after them can change them) are kept for the next pass. Exact either way.
    fn forward_block_causal(
        &mut self,
        request: &ForwardRequest<'_>,
        block: usize,
        logits: &mut [f32],
    ) -> Result<(), ForwardError> {
        let (batch, seq) = (request.batch(), request.seq_len());
        let end = request.attended_end();
        let Some(hint) = request.cache() else {
            self.reserve(batch, end);
            self.run(request, 0..end, end, KvUse::Plain, logits);
            return Ok(());
        };
        self.reserve(batch, end);
        self.cache.prepare(&self.model.config, batch, seq);
        let start = self.cache.causal_reuse(request, block);
        self.run(request, start..end, end, KvUse::Read, logits);
        self.cache
            .causal_filled(request, block, end, hint.span.start);
        Ok(())
    }

    /// The blocks over `positions` of every row (all of them without a cache), attending to
    /// the first `keys` positions (block-causally when the request says so).
    fn run(
        &mut self,
        request: &ForwardRequest<'_>,
        positions: Range<usize>,
        keys: usize,
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
        let eps = c.rms_norm_eps as f32;
        let b = &mut self.buffers;
        let cache = &mut self.cache;
        let pool = &self.pool;
        let isa = self.isa;

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
                isa,
                MatRef::rows(&b.h, tokens, d, d),
                Rhs::Packed(&block.qkv),
                Out::new(&mut b.qkv, tokens, qkv_width, qkv_width),
                false,
            );
            par_bias_rope(
                pool,
                c,
                (&b.rope_cos, &b.rope_sin),
                block.qkv_bias.as_deref(),
                block
                    .qk_norm
                    .as_ref()
                    .map(|(q, k)| (q.as_slice(), k.as_slice())),
                &mut b.qkv,
                tokens,
                &positions,
            );
            // Keys and values: straight from this pass, or through the cache (rotated keys).
            let keys_values = if kv == KvUse::Plain {
                KvSource::in_qkv(c, &b.qkv)
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
            // Rows per batch row of the source: the computed positions, or the cache's.
            let source_rows = if kv == KvUse::Plain { span } else { seq };
            let packed: PackedKv<'_> = attention::pack_keys_values(
                pool,
                c,
                &keys_values,
                batch,
                (source_rows, keys),
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
                isa,
                c,
                &queries,
                &packed,
                (request.attention_mask(), seq),
                request.block_causal(),
                batch,
                keys,
                Out::new(&mut b.attn, tokens, d, d),
            );
            gemm(
                pool,
                isa,
                MatRef::rows(&b.attn, tokens, d, d),
                Rhs::Packed(&block.attn_out),
                Out::new(&mut b.x, tokens, d, d),
                true,
            );
            if let Some(bias) = &block.attn_out_bias {
                par_rows(pool, &mut b.x, tokens, d, &|_, row| {
                    row.iter_mut().zip(bias).for_each(|(x, &b)| *x += b);
                });
            }

            // MLP sub-layer: x += mlp(norm(x)), a SwiGLU or a mixture of them.
            par_rms_norm(pool, &b.x, &block.ff_norm, eps, &mut b.h, tokens, d);
            match &block.mlp {
                Mlp::Dense(swiglu) => {
                    add_swiglu(pool, isa, swiglu, &b.h, &mut b.gate_up, &mut b.x, tokens, d);
                }
                Mlp::Experts(experts) => {
                    let moe = c
                        .moe
                        .as_ref()
                        .expect("a mixture layer has a mixture config");
                    add_experts(
                        pool,
                        isa,
                        moe,
                        experts,
                        (&b.h, &mut b.x, &mut b.gate_up),
                        &mut b.routes,
                        &mut b.moe_profile,
                        tokens,
                        d,
                    );
                }
            }
        }

        // Final norm and LM head, on the requested window only.
        let window = request.window();
        let rows = batch * window.len();
        {
            let x = ArrayView2::from_shape((tokens, d), &b.x[..tokens * d])
                .expect("buffer holds tokens × d");
            let mut head_in = ArrayViewMut2::from_shape((rows, d), &mut b.head_in[..rows * d])
                .expect("buffer holds rows × d");
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
            isa,
            MatRef::rows(&b.head_in, rows, d, d),
            Rhs::Packed(&model.head),
            Out::new(logits, rows, vocab, vocab),
            false,
        );
    }
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

    fn shifted_logits(&self) -> bool {
        self.model.config.shifted_logits
    }

    fn block_causal(&self) -> bool {
        self.model.config.block_causal
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
