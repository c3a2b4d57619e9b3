//! `llada`: run LLaDA-style masked diffusion language models, text in and text out.
//!
//! A [`Pipeline`] opens a model directory (the bundled tiny model or a real LLaDA-8B-Instruct
//! download): the tokenizer, the model's own chat template, the special-token ids from its
//! files, and a backend: the pure-Rust [`ndarray`] one or ONNX Runtime ([`ort`]). Generation is
//! [`core`]'s reverse process, token for token the reference sampler.
//!
//! ```no_run
//! use llada::{BackendChoice, Pipeline};
//!
//! let mut pipeline = Pipeline::open("tests/fixtures/tiny-llada", &BackendChoice::Ndarray)?;
//! let params = llada::core::GenerateParams {
//!     steps: 16,
//!     gen_length: 16,
//!     block_length: 8,
//!     ..pipeline.default_params()
//! };
//! let answer = pipeline.generate("reverse:pen,frog,rock", &params)?;
//! println!("{}", answer.text);
//! # Ok::<(), llada::Error>(())
//! ```
//!
//! # Features
//! - `ndarray` (default): the pure-Rust backend, [`llada_ndarray`].
//! - `ort` (default): the ONNX Runtime backend, [`llada_ort`]; the runtime library is loaded at
//!   run time, nothing is downloaded at build time.
#![forbid(unsafe_code)]

mod backend;
mod chat;
mod error;
mod pipeline;
mod tokenizer;

pub use backend::{Backend, BackendChoice, BackendError, OrtOptions};
pub use chat::{ChatTemplate, Message};
pub use error::Error;
pub use llada_core as core;
#[cfg(feature = "ndarray")]
pub use llada_ndarray as ndarray;
#[cfg(feature = "ort")]
pub use llada_ort as ort;
pub use pipeline::{Conversation, Generated, MASK_PLACEHOLDER, Model, Pipeline, Progress};
pub use tokenizer::{SpecialTokens, Tokenizer};
