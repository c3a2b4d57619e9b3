//! Flags shared by the examples.

#![allow(dead_code)]

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use llada::core::{CacheMode, CommitRule, GenerateParams, Remasking};
use llada::{BackendChoice, OrtOptions, Pipeline};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendFlag {
    /// Pure Rust on model.safetensors.
    Ndarray,
    /// ONNX Runtime on model.onnx (needs libonnxruntime: --ort-lib or ORT_DYLIB_PATH).
    Ort,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum CacheFlag {
    /// Every step is a full forward pass (the reference).
    None,
    /// Keys and values before the current block are reused within the block.
    Prefix,
    /// Keys and values outside the current block are reused within the block.
    Dual,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum RemaskingFlag {
    LowConfidence,
    Random,
    Margin,
    Entropy,
}

/// Where the model is and what runs it.
#[derive(Args, Debug)]
pub(crate) struct ModelArgs {
    /// Model directory (config.json, tokenizer.json, tokenizer_config.json, weights).
    #[arg(long, default_value_os_t = llada_test_support::bundled_model())]
    pub(crate) model: PathBuf,
    /// Backend.
    #[arg(long, value_enum, default_value_t = BackendFlag::Ndarray)]
    pub(crate) backend: BackendFlag,
    /// Path of libonnxruntime for --backend ort (default: ORT_DYLIB_PATH).
    #[arg(long)]
    pub(crate) ort_lib: Option<PathBuf>,
    /// Use ONNX Runtime's CUDA execution provider (falls back to CPU).
    #[arg(long)]
    pub(crate) cuda: bool,
}

impl ModelArgs {
    pub(crate) fn open(&self) -> Result<Pipeline, llada::Error> {
        let choice = match self.backend {
            BackendFlag::Ndarray => BackendChoice::Ndarray,
            BackendFlag::Ort => BackendChoice::Ort(
                OrtOptions::default()
                    .with_library(self.ort_lib.clone())
                    .with_cuda(self.cuda),
            ),
        };
        Pipeline::open(&self.model, &choice)
    }
}

/// Sampling flags; the defaults fit the bundled model (answers of at most 16 tokens: 16 steps,
/// blocks of 8).
#[derive(Args, Debug)]
pub(crate) struct SamplingArgs {
    /// Denoising steps in total.
    #[arg(long, default_value_t = 16)]
    pub(crate) steps: usize,
    /// Tokens to generate.
    #[arg(long, default_value_t = 16)]
    pub(crate) gen_length: usize,
    /// Semi-autoregressive block length.
    #[arg(long, default_value_t = 8)]
    pub(crate) block_length: usize,
    /// Sampling temperature (0 = argmax).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) temperature: f32,
    /// Classifier-free guidance scale (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) cfg_scale: f32,
    /// How to pick the positions to commit.
    #[arg(long, value_enum, default_value_t = RemaskingFlag::LowConfidence)]
    pub(crate) remasking: RemaskingFlag,
    /// Sample among the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub(crate) top_k: usize,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) top_p: f32,
    /// Random seed (temperature > 0, random remasking).
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Fast-dLLM parallel decoding: also commit every masked token whose confidence reaches
    /// this threshold (e.g. 0.9); `--steps` becomes an upper bound per block.
    #[arg(long, conflicts_with = "factor")]
    pub(crate) threshold: Option<f32>,
    /// Fast-dLLM's factor rule instead of a threshold (e.g. 1.0).
    #[arg(long)]
    pub(crate) factor: Option<f32>,
    /// Block-wise key/value cache (approximate; ndarray backend).
    #[arg(long, value_enum, default_value_t = CacheFlag::None)]
    pub(crate) cache: CacheFlag,
}

impl SamplingArgs {
    pub(crate) fn params(&self, pipeline: &Pipeline) -> GenerateParams {
        let remasking = match self.remasking {
            RemaskingFlag::LowConfidence => Remasking::LowConfidence,
            RemaskingFlag::Random => Remasking::Random,
            RemaskingFlag::Margin => Remasking::Margin,
            RemaskingFlag::Entropy => Remasking::Entropy,
        };
        let commit = match (self.threshold, self.factor) {
            (Some(t), _) => CommitRule::Threshold(t),
            (None, Some(f)) => CommitRule::Factor(f),
            (None, None) => CommitRule::Schedule,
        };
        let cache = match self.cache {
            CacheFlag::None => CacheMode::None,
            CacheFlag::Prefix => CacheMode::Prefix,
            CacheFlag::Dual => CacheMode::Dual,
        };
        pipeline
            .default_params()
            .with_steps(self.steps)
            .with_gen_length(self.gen_length)
            .with_block_length(self.block_length)
            .with_temperature(self.temperature)
            .with_cfg_scale(self.cfg_scale)
            .with_remasking(remasking)
            .with_top_k(self.top_k)
            .with_top_p(self.top_p)
            .with_seed(self.seed)
            .with_commit(commit)
            .with_cache(cache)
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings).
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
