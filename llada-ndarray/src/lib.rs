//! A pure-Rust LLaDA backend: loads LLaDA checkpoints exactly as published (Hugging Face
//! safetensors, single-file or sharded, f32, bf16 or f16) and runs the mask predictor on the
//! CPU with `ndarray`, using every core.
//!
//! A [`Model`] holds the weights and is shared between threads; each thread that generates
//! creates a [`Context`], which owns the activation buffers and worker threads and implements
//! [`llada_core::MaskPredictor`], so `llada_core::generate` runs on it unchanged.
//!
//! ```no_run
//! use std::sync::Arc;
//! use llada_core::{generate, Canvas, GenerateParams, MaskPredictor, WorkspaceBuf, WorkspaceSizes};
//! use llada_ndarray::{Context, Model};
//!
//! let model = Arc::new(Model::load("path/to/LLaDA-8B-Instruct")?);
//! let mut context = Context::new(model.clone())?;
//! let mask_id = model.config().mask_token_id.unwrap_or(llada_core::LLADA_8B_MASK_ID);
//! let params = GenerateParams { steps: 64, gen_length: 64, block_length: 32, mask_id, ..Default::default() };
//! let prompt: Vec<u32> = vec![126080, 198, 3219]; // ids from the model's tokenizer
//! let mut canvas = vec![0; prompt.len() + params.gen_length];
//! Canvas::fill(&mut canvas, &prompt, 1, params.gen_length, mask_id)?;
//! let sizes = WorkspaceSizes::for_generation(&params, 1, prompt.len(), context.vocab_size())?;
//! let mut workspace = WorkspaceBuf::new(&sizes);
//! generate(&mut context, &params, Canvas::new(&mut canvas, 1, prompt.len()), workspace.as_workspace(), &mut ())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Linear layers are packed once at load time for the matrix kernel, in the checkpoint's own
//! dtype: a bf16 checkpoint stays bf16 in memory and is widened to f32 inside the kernel, so
//! the weights take about the checkpoint's size. The forward pass allocates nothing once its
//! buffers have grown to the largest request seen (or [`Context::reserve`]).

mod config;
mod context;
mod error;
mod gemm;
mod model;
mod ops;
mod threads;
mod weights;

pub use config::Config;
pub use context::Context;
pub use error::{ForwardError, LoadError};
pub use model::Model;

/// The matrix micro-kernel chosen for this CPU at run time (`"avx2+fma"` or `"portable"`).
pub fn kernel_name() -> &'static str {
    gemm::kernel_name()
}

/// Entry points for the criterion micro-benchmarks of the hot kernels. Not a stable API.
#[doc(hidden)]
pub mod bench {
    use crate::gemm::{Dtype, GemmScratch, MatRef, Out, PackedMatrix, Rhs, gemm};
    use crate::threads::Pool;

    /// Per-thread packing memory for [`matmul`].
    pub struct Scratch(GemmScratch);

    impl AsMut<GemmScratch> for Scratch {
        fn as_mut(&mut self) -> &mut GemmScratch {
            &mut self.0
        }
    }

    /// A worker pool of `threads` threads.
    pub struct Threads(Pool<Scratch>);

    /// Starts a pool.
    pub fn threads(threads: usize) -> Threads {
        Threads(
            Pool::new(
                (0..threads.max(1))
                    .map(|_| Scratch(GemmScratch::new()))
                    .collect(),
            )
            .expect("threads start"),
        )
    }

    /// A weight `[n, k]` (row-major) packed for the kernel.
    pub struct Weight(PackedMatrix);

    /// Packs `w` (`[n, k]`, row-major) as f32, or as bf16 when `bf16`.
    pub fn pack(w: &[f32], n: usize, k: usize, bf16: bool) -> Weight {
        let dtype = if bf16 { Dtype::Bf16 } else { Dtype::F32 };
        Weight(PackedMatrix::from_f32(w, n, k, dtype))
    }

    /// One layer's RMSNorm + rotary embedding and attention, with their own pool.
    pub struct Layer(crate::context::LayerKernels);

    impl Layer {
        /// A layer of the model `config` describes, computed with `threads` threads.
        pub fn new(config: crate::Config, threads: usize) -> Self {
            Self(crate::context::LayerKernels::new(config, threads).expect("threads start"))
        }

        /// `h = rms_norm(x)` (`[tokens, d_model]`), then the rotary embedding of the queries
        /// and keys of `qkv` (`[tokens, (n_heads + 2 n_kv_heads) · head_dim]`).
        pub fn norm_rope(
            &self,
            x: &[f32],
            weight: &[f32],
            h: &mut [f32],
            qkv: &mut [f32],
            tokens: usize,
        ) {
            self.0.norm_rope(x, weight, h, qkv, tokens);
        }

        /// Bidirectional attention of `seq` tokens from `qkv` into `out` (`[seq, d_model]`).
        pub fn attention(&mut self, qkv: &[f32], seq: usize, out: &mut [f32]) {
            self.0.attention(qkv, seq, out);
        }
    }

    /// `out [m, n] = a [m, k] · wᵀ` on the pool.
    pub fn matmul(threads: &Threads, a: &[f32], m: usize, w: &Weight, out: &mut [f32]) {
        let (k, n) = (w.0.k, w.0.n);
        gemm(
            &threads.0,
            MatRef::rows(a, m, k, k),
            Rhs::Packed(&w.0),
            Out::new(out, m, n, n),
            false,
        );
    }
}
