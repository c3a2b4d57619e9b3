//! A pure-Rust backend for LLaDA-style diffusion models: loads LLaDA, LLaDA-MoE and Dream checkpoints
//! exactly as published (Hugging Face safetensors, single-file or sharded, f32, bf16 or f16;
//! llama.cpp's GGUF files) and runs the mask predictor on the CPU with `ndarray`, using every
//! core. Each family's files are read in `models/` onto one [`Config`] that the forward pass
//! reads.
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
//! let params = GenerateParams::default()
//!     .with_gen_length(64)
//!     .with_block_length(32)
//!     .with_steps(64)
//!     .with_mask_id(mask_id);
//! let prompt: Vec<u32> = vec![126080, 198, 3219]; // ids from the model's tokenizer
//! let mut tokens = vec![0; prompt.len() + params.gen_length];
//! let canvas = Canvas::from_prompts(&mut tokens, &prompt, 1, params.gen_length, mask_id)?;
//! let sizes = WorkspaceSizes::for_generation(&params, 1, prompt.len(), context.vocab_size())?;
//! let mut workspace = WorkspaceBuf::new(&sizes);
//! generate(&mut context, &params, canvas, workspace.as_workspace(), &mut ())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Linear layers are packed once at load time for the matrix kernel, in the checkpoint's own
//! dtype: a bf16 checkpoint stays bf16 in memory and is widened to f32 inside the kernel, so
//! the weights take about the checkpoint's size. The forward pass allocates nothing once its
//! buffers have grown to the largest request seen (or [`Context::reserve`]).

mod attention;
#[doc(hidden)]
pub mod bench;
mod config;
mod context;
mod error;
mod gemm;
pub mod gguf;
mod kv_cache;
mod mlp;
mod model;
mod models;
mod ops;
mod parallel;
mod quant;
mod threads;
mod weights;

pub use config::{Config, MoeConfig};
pub use context::{Context, ContextOptions, MAX_THREADS};
pub use error::{ForwardError, LoadError};
pub use gemm::blocking::{Blocking, cpu_family};
pub use gemm::isa::Kernel;
pub use mlp::MoeProfile;
pub use model::{LoadOptions, Model, Quantization};
pub use models::Family;
