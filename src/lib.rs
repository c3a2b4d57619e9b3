//! `llada`: run LLaDA-style masked diffusion language models, text in and text out.
//!
//! A [`Pipeline`] opens a model directory (the bundled tiny model or a real LLaDA-8B-Instruct
//! download): its [`ModelFiles`] (tokenizer, the model's own chat template, the special-token
//! ids), each read once, and a backend: the pure-Rust [`ndarray`] one or ONNX Runtime
//! ([`ort`]). Generation is [`core`]'s reverse process, token for token the reference sampler.
//!
//! ```no_run
//! use llada::{BackendChoice, Pipeline};
//!
//! let mut pipeline = Pipeline::open("tests/fixtures/tiny-llada", &BackendChoice::Ndarray)?;
//! let params = pipeline
//!     .default_params()
//!     .with_gen_length(16)
//!     .with_block_length(8)
//!     .with_steps(16);
//! let answer = pipeline.generate("reverse:pen,frog,rock", &params)?;
//! println!("{}", answer.text);
//! # Ok::<(), llada::Error>(())
//! ```
//!
//! Errors keep their cause: [`Error::kind`] says what kind of failure it is (a missing ONNX
//! Runtime library is a backend failure, a malformed checkpoint a model one) and
//! [`report`] prints the whole chain.
//!
//! # Features
//! - `ndarray` (default): the pure-Rust backend, [`llada_ndarray`].
//! - `ort` (default): the ONNX Runtime backend, [`llada_ort`]; the runtime library is loaded at
//!   run time, nothing is downloaded at build time.
#![forbid(unsafe_code)]

mod backend;
mod chat;
mod error;
mod files;
#[cfg(feature = "ndarray")]
mod gguf;
mod pipeline;
mod tokenizer;

pub use backend::{Backend, BackendChoice, MAX_THREADS, OrtOptions};
pub use chat::{ChatTemplate, Message};
pub use error::{BackendError, Error, report};
pub use files::{DECODING_KEY, DecodingDefaults, ModelFiles, WeightSource};
pub use llada_core as core;
#[cfg(feature = "ndarray")]
pub use llada_ndarray as ndarray;
#[cfg(feature = "ort")]
pub use llada_ort as ort;
pub use pipeline::{
    Conversation, Generated, LikelihoodOptions, LoadOptions, MASK_PLACEHOLDER, Model, Pipeline,
    Progress,
};
pub use tokenizer::{SpecialTokens, Tokenizer};
