//! `llada`: run LLaDA-style masked diffusion language models.
//!
//! This facade re-exports the workspace's crates: [`core`] (the reverse process, always
//! present). Backends and the text pipeline join it as they land.
#![forbid(unsafe_code)]

pub use llada_core as core;
