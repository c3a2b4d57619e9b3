//! Flags shared by the examples.

#![allow(dead_code)]

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use llada::core::{BlockGrid, CacheMode, CommitRule, Editing, GenerateParams, Remasking};
use llada::ndarray::Quantization;
use llada::{BackendChoice, LoadOptions, Model, OrtOptions, Pipeline};

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

/// Dream's algorithms (`alg` of its `diffusion_generate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[clap(rename_all = "snake_case")]
pub(crate) enum AlgFlag {
    /// Each mask is committed with probability 1 - s/t at each step.
    Origin,
    /// The most probable first (the probability of the proposed token).
    MaskgitPlus,
    /// The largest top-1 minus top-2 probability first.
    TopkMargin,
    /// The lowest entropy first.
    Entropy,
}

/// Where the model is and what runs it.
#[derive(Args, Debug)]
pub(crate) struct ModelArgs {
    /// Model directory (config.json, tokenizer.json, tokenizer_config.json, weights), a GGUF
    /// file (llama.cpp's format: the whole model in one file; ndarray backend), or an ONNX
    /// export in a model directory other than its model.onnx (say model-int4.onnx; --backend
    /// ort).
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
    /// Quantize the weights while loading (ndarray backend): q8_0, q4_0, q4_k or q6_k, as
    /// llama-quantize would, with no other tool.
    #[arg(long)]
    pub(crate) quantize: Option<Quantization>,
}

impl ModelArgs {
    pub(crate) fn open(&self) -> Result<Pipeline, llada::Error> {
        Pipeline::new(self.load()?)
    }

    /// The model, shared by the pipelines of any number of threads.
    pub(crate) fn load(&self) -> Result<std::sync::Arc<Model>, llada::Error> {
        let choice = match self.backend {
            BackendFlag::Ndarray => BackendChoice::Ndarray,
            BackendFlag::Ort => BackendChoice::Ort(
                OrtOptions::default()
                    .with_library(self.ort_lib.clone())
                    .with_cuda(self.cuda),
            ),
        };
        let options = LoadOptions::default().with_quantize(self.quantize);
        Model::load_with(&self.model, &choice, &options)
    }
}

/// Sampling flags. The lengths default to what the model declares (`llada_decoding` in its
/// generation_config.json; the bundled model declares 16 tokens, 16 steps, blocks of 8), else
/// to the reference chat settings (128 tokens, 128 steps, blocks of 32). A Dream model's
/// defaults are its own (`alg`, `steps`, `eps`, ... of its generation_config.json).
#[derive(Args, Clone, Debug)]
pub(crate) struct SamplingArgs {
    /// Tokens to generate [default: the model's generation_config.json `llada_decoding`, else
    /// 128].
    #[arg(long)]
    pub(crate) gen_length: Option<usize>,
    /// Denoising steps in total, for the reference schedule [default: the model's
    /// `llada_decoding`, else 128; with --gen-length alone, as many per token as the model's].
    #[arg(long)]
    pub(crate) steps: Option<usize>,
    /// Semi-autoregressive block length [default: the model's `llada_decoding`, else 32; one
    /// block (the whole answer) with Dream's rule: Dream models, --alg, --eps].
    #[arg(long)]
    pub(crate) block_length: Option<usize>,
    /// Sampling temperature (0 = argmax) [default: the model's, else 0].
    #[arg(long)]
    pub(crate) temperature: Option<f32>,
    /// Classifier-free guidance scale (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) cfg_scale: f32,
    /// How to pick the positions to commit [default: the model's, else low-confidence].
    #[arg(long, value_enum)]
    pub(crate) remasking: Option<RemaskingFlag>,
    /// Sample among the k most likely tokens (0 = off) [default: the model's, else 0].
    #[arg(long)]
    pub(crate) top_k: Option<usize>,
    /// Nucleus sampling threshold (1 = off) [default: the model's, else 1].
    #[arg(long)]
    pub(crate) top_p: Option<f32>,
    /// Dream's decoding (its `diffusion_generate`): the time schedule from 1 to --eps over
    /// --steps, committing int(m (1 - s/t)) of the m masks left per step, ranked by this
    /// algorithm [default for Dream models: the model's `alg`].
    #[arg(long, value_enum, conflicts_with_all = ["threshold", "factor", "eb_gamma", "remasking"])]
    pub(crate) alg: Option<AlgFlag>,
    /// The last time of Dream's schedule (asks for Dream's rule, ranked by --remasking)
    /// [default: the model's, else 0.001].
    #[arg(long, conflicts_with_all = ["threshold", "factor", "eb_gamma"])]
    pub(crate) eps: Option<f64>,
    /// Dream's alg_temp: draw the positions to commit from softmax(confidence / alg_temp)
    /// instead of taking the most confident (0 = off) [default: the model's, else 0].
    #[arg(long)]
    pub(crate) alg_temp: Option<f32>,
    /// Random seed (temperature > 0, random remasking).
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Fast-dLLM's threshold rule: each pass commits the most confident masked token and
    /// every other whose confidence reaches this (e.g. 0.9), until the block is filled;
    /// --steps plays no part. On a LLaDA2.x model, LLaDA2's rule with this threshold
    /// [default there: 0.95]: every mask above it when there are at least the pass's share
    /// of the block, else that share.
    #[arg(long, conflicts_with_all = ["factor", "eb_gamma"])]
    pub(crate) threshold: Option<f64>,
    /// Fast-dLLM's factor rule (its paper's): the n most confident while (n+1)(1-c_n) <
    /// factor (e.g. 1.0).
    #[arg(long, conflicts_with = "eb_gamma")]
    pub(crate) factor: Option<f64>,
    /// The entropy-bounded sampler: the lowest-entropy masked tokens whose summed entropy,
    /// less the largest, stays within gamma (e.g. 0.1).
    #[arg(long)]
    pub(crate) eb_gamma: Option<f64>,
    /// With --threshold, --factor or --eb-gamma: at most this many passes per block, the last
    /// committing what is left (0 = no cap).
    #[arg(long, default_value_t = 0)]
    pub(crate) max_passes_per_block: usize,
    /// LLaDA2.1's token editing: a generated token of the block is rewritten when the model
    /// now prefers another with a probability above this (LLaDA2.1: 0.9).
    #[arg(long)]
    pub(crate) editing_threshold: Option<f64>,
    /// With --editing-threshold: the most edit-only passes after a block's last mask.
    #[arg(long, default_value_t = 16)]
    pub(crate) max_post_steps: usize,
    /// Key/value cache (ndarray backend, and ONNX Runtime on the exporter's cached graph):
    /// Fast-dLLM's block-wise cache (approximate) on LLaDA, LLaDA-MoE and Dream; on LLaDA2.x
    /// the prefix cache is exact [default: the model's: prefix for LLaDA2.x, else none].
    #[arg(long, value_enum)]
    pub(crate) cache: Option<CacheFlag>,
    /// Stop once a finished block holds end of text (EOS or EOT): the rest is filled with EOS
    /// without running its blocks. The answer up to EOS/EOT is the same; the tokens after it
    /// can differ.
    #[arg(long)]
    pub(crate) stop_at_eos: bool,
    /// Forbid end of text (EOS's logit set to -infinity).
    #[arg(long)]
    pub(crate) logits_eos_inf: bool,
    /// Leave EOS and EOT out of the confidence softmax, so they are committed last (at every
    /// temperature; upstream's does so for EOS only at temperature 0).
    #[arg(long)]
    pub(crate) confidence_eos_eot_inf: bool,
}

impl SamplingArgs {
    /// The parameters: the model's defaults, then the flags given.
    pub(crate) fn params(&self, model: &Model) -> GenerateParams {
        let defaults = model.default_params();
        if defaults.grid == BlockGrid::Absolute {
            return self.block_diffusion_params(defaults);
        }
        let gen_length = self.gen_length.unwrap_or(defaults.gen_length);
        // With only --gen-length, keep the model's steps per token (one, for the reference),
        // and a model that decodes its answer as one block (Dream) keeps one block; so does
        // Dream's rule asked for by --alg or --eps; a shorter answer than a block is one block.
        let steps = self
            .steps
            .unwrap_or(gen_length * defaults.steps / defaults.gen_length.max(1));
        let model_rule = defaults.commit.timesteps_eps().is_some();
        let asked = self.alg.is_some() || self.eps.is_some();
        let dream_rule = asked || model_rule;
        let one_block = asked || (model_rule && defaults.block_length == defaults.gen_length);
        // A default block longer than the answer asked for is the answer (`--gen-length 16` on
        // a model whose blocks are 32).
        let block_length = self.block_length.unwrap_or(if one_block {
            gen_length
        } else {
            defaults.block_length.min(gen_length)
        });
        let eps = self.eps.or(defaults.commit.timesteps_eps()).unwrap_or(1e-3);
        let mut remasking = match self.remasking {
            Some(RemaskingFlag::LowConfidence) => Remasking::LowConfidence,
            Some(RemaskingFlag::Random) => Remasking::Random,
            Some(RemaskingFlag::Margin) => Remasking::Margin,
            Some(RemaskingFlag::Entropy) => Remasking::Entropy,
            None => defaults.remasking,
        };
        let commit = match (self.threshold, self.factor, self.eb_gamma, self.alg) {
            (Some(t), _, _, _) => CommitRule::Threshold(t),
            (_, Some(f), _, _) => CommitRule::Factor(f),
            (_, _, Some(g), _) => CommitRule::EntropyBounded(g),
            (_, _, _, Some(alg)) => {
                remasking = match alg {
                    AlgFlag::Origin => Remasking::Origin,
                    AlgFlag::MaskgitPlus => Remasking::LowConfidence,
                    AlgFlag::TopkMargin => Remasking::Margin,
                    AlgFlag::Entropy => Remasking::Entropy,
                };
                CommitRule::Timesteps(eps)
            }
            _ if dream_rule => CommitRule::Timesteps(eps),
            _ => CommitRule::Schedule,
        };
        // A model's alg_temp (Dream's) goes with its fixed counts, not with an adaptive rule
        // asked for on the command line.
        let alg_temp = match self.alg_temp {
            Some(t) => t,
            None if commit.is_adaptive() => 0.0,
            None => defaults.alg_temp,
        };
        // Dream's origin has no meaning outside its schedule: another rule ranks by
        // confidence.
        if remasking == Remasking::Origin && commit.timesteps_eps().is_none() {
            remasking = Remasking::LowConfidence;
        }
        let cache = self.cache_mode(defaults.cache);
        defaults
            .with_gen_length(gen_length)
            .with_steps(steps)
            .with_block_length(block_length)
            .with_temperature(self.temperature.unwrap_or(defaults.temperature))
            .with_cfg_scale(self.cfg_scale)
            .with_remasking(remasking)
            .with_top_k(self.top_k.unwrap_or(defaults.top_k))
            .with_top_p(self.top_p.unwrap_or(defaults.top_p))
            .with_alg_temp(alg_temp)
            .with_seed(self.seed)
            .with_commit(commit)
            .with_max_passes_per_block(self.max_passes_per_block)
            .with_cache(cache)
            .with_stop_at_eos(self.stop_at_eos)
            .with_logits_eos_inf(self.logits_eos_inf)
            .with_confidence_eos_eot_inf(self.confidence_eos_eot_inf)
            // Editing is LLaDA2.1's: asked of another model it is refused by name when the
            // generation checks its parameters.
            .with_editing(self.editing())
    }

    /// LLaDA2.1's editing, when `--editing-threshold` asks for it.
    fn editing(&self) -> Option<Editing> {
        self.editing_threshold.map(|threshold| Editing {
            threshold,
            max_post_steps: self.max_post_steps,
            num_to_transfer: 1,
        })
    }

    /// The cache asked for, else the model's.
    fn cache_mode(&self, default: CacheMode) -> CacheMode {
        match self.cache {
            None => default,
            Some(CacheFlag::None) => CacheMode::None,
            Some(CacheFlag::Prefix) => CacheMode::Prefix,
            Some(CacheFlag::Dual) => CacheMode::Dual,
        }
    }

    /// A block-diffusion model's parameters (LLaDA2.x): its grid and rule, with the flags
    /// given. `--steps` counts per block; the answer need not fill whole blocks.
    fn block_diffusion_params(&self, defaults: GenerateParams) -> GenerateParams {
        let threshold = match defaults.commit {
            CommitRule::Llada2(t) => t,
            _ => 0.95,
        };
        let editing = self.editing();
        defaults
            .with_gen_length(self.gen_length.unwrap_or(defaults.gen_length))
            .with_steps(self.steps.unwrap_or(defaults.steps))
            .with_block_length(self.block_length.unwrap_or(defaults.block_length))
            .with_temperature(self.temperature.unwrap_or(defaults.temperature))
            .with_cfg_scale(self.cfg_scale)
            .with_top_k(self.top_k.unwrap_or(defaults.top_k))
            .with_top_p(self.top_p.unwrap_or(defaults.top_p))
            .with_seed(self.seed)
            .with_commit(CommitRule::Llada2(self.threshold.unwrap_or(threshold)))
            .with_editing(editing.or(defaults.editing))
            .with_cache(self.cache_mode(defaults.cache))
            .with_stop_at_eos(defaults.stop_at_eos || self.stop_at_eos)
            .with_logits_eos_inf(self.logits_eos_inf)
    }

    /// One line saying which lengths run and where they come from.
    pub(crate) fn describe(&self, model: &Model, params: &GenerateParams) -> String {
        let defaults = model.files().decoding_defaults();
        let given =
            self.gen_length.is_some() || self.steps.is_some() || self.block_length.is_some();
        let rule = match params.commit {
            CommitRule::Timesteps(eps) => format!(
                ", Dream's schedule with eps {eps} and {}",
                match params.remasking {
                    Remasking::Origin => "origin",
                    Remasking::LowConfidence => "maskgit_plus",
                    Remasking::Margin => "topk_margin",
                    other => other.as_str(),
                }
            ),
            CommitRule::Llada2(t) => format!(
                ", LLaDA2's block diffusion (threshold {t}{}, {} cache)",
                params
                    .editing
                    .map(|e| format!(", editing above {}", e.threshold))
                    .unwrap_or_default(),
                params.cache.as_str()
            ),
            _ => String::new(),
        };
        let per_block = if params.grid == BlockGrid::Absolute {
            " per block"
        } else {
            ""
        };
        format!(
            "gen_length {}, steps {}{per_block}, blocks of {}{rule} ({})",
            params.gen_length,
            params.steps,
            params.block_length,
            if given {
                "from the flags"
            } else {
                defaults.source()
            }
        )
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
