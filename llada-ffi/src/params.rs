//! Plain parameter structs with their defaults, and their translation into the Rust API.

use std::ffi::{CStr, c_char};
use std::path::PathBuf;

use llada::core::{BlockGrid, CacheMode, CommitRule, Editing, GenerateParams, Remasking};

use crate::status::Failure;

/// Backend: the pure-Rust one on `model.safetensors`.
pub const LLADA_BACKEND_NDARRAY: u32 = 0;
/// Backend: ONNX Runtime on `model.onnx`.
pub const LLADA_BACKEND_ORT: u32 = 1;

/// Keep the weights' types.
pub const LLADA_QUANTIZE_NONE: u32 = 0;
/// Quantize the weights to Q8_0 while loading (8-bit blocks of 32).
pub const LLADA_QUANTIZE_Q8_0: u32 = 1;
/// Quantize the weights to Q4_0 while loading (4-bit blocks of 32).
pub const LLADA_QUANTIZE_Q4_0: u32 = 2;
/// Quantize the weights to Q4_K while loading (4-bit super-blocks of 256).
pub const LLADA_QUANTIZE_Q4_K: u32 = 3;
/// Quantize the weights to Q6_K while loading (6-bit super-blocks of 256).
pub const LLADA_QUANTIZE_Q6_K: u32 = 4;

/// ONNX Runtime execution provider: CPU.
pub const LLADA_PROVIDER_CPU: u32 = 0;
/// ONNX Runtime execution provider: CUDA (falls back to CPU when it cannot start).
pub const LLADA_PROVIDER_CUDA: u32 = 1;

/// Remasking: the softmax probability of the proposed token (the reference default).
pub const LLADA_REMASKING_LOW_CONFIDENCE: u32 = 0;
/// Remasking: a uniform random number.
pub const LLADA_REMASKING_RANDOM: u32 = 1;
/// Remasking: top-1 minus top-2 probability.
pub const LLADA_REMASKING_MARGIN: u32 = 2;
/// Remasking: negative entropy.
pub const LLADA_REMASKING_ENTROPY: u32 = 3;
/// Remasking: Dream's `origin`, with LLADA_COMMIT_TIMESTEPS only: each masked position is
/// committed with probability 1 - s/t at each step.
pub const LLADA_REMASKING_ORIGIN: u32 = 4;

/// Commit rule: the reference schedule (`commit_value` unused).
pub const LLADA_COMMIT_SCHEDULE: u32 = 0;
/// Commit rule: Fast-dLLM's confidence threshold (`commit_value`, e.g. 0.9); `steps` unused.
pub const LLADA_COMMIT_THRESHOLD: u32 = 1;
/// Commit rule: Fast-dLLM's factor rule (`commit_value`, e.g. 1.0); `steps` unused.
pub const LLADA_COMMIT_FACTOR: u32 = 2;
/// Commit rule: the entropy-bounded sampler (`commit_value` is gamma, e.g. 0.1); `steps`
/// unused.
pub const LLADA_COMMIT_ENTROPY_BOUNDED: u32 = 3;
/// Commit rule: Dream's time schedule (`commit_value` is its `eps`, e.g. 0.001): times from 1
/// to eps over the steps, int(m (1 - s/t)) of the m masks left committed per step, ranked by
/// `remasking` (LLADA_REMASKING_LOW_CONFIDENCE is Dream's `maskgit_plus`,
/// LLADA_REMASKING_MARGIN its `topk_margin`, LLADA_REMASKING_ENTROPY its `entropy`,
/// LLADA_REMASKING_ORIGIN its `origin`); temperature, top_k and top_p as Dream applies them.
pub const LLADA_COMMIT_TIMESTEPS: u32 = 4;
/// Commit rule: LLaDA2.x's (`commit_value` is its threshold, 0.95 in the release): every
/// masked position of the block above the threshold when there are at least the pass's share
/// (`block_length / steps`), else that share, most confident first; `steps` per block.
pub const LLADA_COMMIT_LLADA2: u32 = 5;

/// Block grid: LLaDA's blocks from the end of the prompt, bidirectional attention.
pub const LLADA_GRID_FROM_PROMPT: u32 = 0;
/// Block grid: block diffusion (LLaDA2.x): blocks from position 0, block-causal attention,
/// `steps` per block.
pub const LLADA_GRID_ABSOLUTE: u32 = 1;

/// Key/value cache: none (every step a full forward pass).
pub const LLADA_CACHE_NONE: u32 = 0;
/// Key/value cache: reuse the positions before the current block.
pub const LLADA_CACHE_PREFIX: u32 = 1;
/// Key/value cache: reuse every position outside the current block.
pub const LLADA_CACHE_DUAL: u32 = 2;

/// A token id field left to the model's own value (mask, EOS, EOT from its files).
pub const LLADA_TOKEN_FROM_MODEL: u32 = u32::MAX;

/// How to load a model.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LladaModelParams {
    /// LLADA_BACKEND_NDARRAY or LLADA_BACKEND_ORT.
    pub backend: u32,
    /// LLADA_PROVIDER_CPU or LLADA_PROVIDER_CUDA (ORT only).
    pub execution_provider: u32,
    /// Path of libonnxruntime (ORT only); NULL uses the ORT_DYLIB_PATH environment variable.
    pub ort_library: *const c_char,
    /// One of LLADA_QUANTIZE_*: quantize the weights while loading (ndarray only).
    pub quantize: u32,
}

/// Per-context settings.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LladaContextParams {
    /// Threads this context computes with; 0 uses every core (ndarray) or ONNX Runtime's
    /// default.
    pub threads: u32,
}

/// Generation parameters, named as in LLaDA's reference `generate()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LladaGenerateParams {
    /// Total denoising steps (a multiple of gen_length / block_length); used by the
    /// LLADA_COMMIT_SCHEDULE rule only.
    pub steps: u32,
    /// Tokens to generate.
    pub gen_length: u32,
    /// Semi-autoregressive block length (divides gen_length).
    pub block_length: u32,
    /// One of LLADA_REMASKING_*.
    pub remasking: u32,
    /// Mask token id, or LLADA_TOKEN_FROM_MODEL.
    pub mask_id: u32,
    /// End-of-text id, or LLADA_TOKEN_FROM_MODEL.
    pub eos_id: u32,
    /// End-of-turn id, or LLADA_TOKEN_FROM_MODEL.
    pub eot_id: u32,
    /// Sample among the k most likely tokens; 0 disables.
    pub top_k: u32,
    /// One of LLADA_COMMIT_* (how many tokens a step commits).
    pub commit_rule: u32,
    /// One of LLADA_CACHE_*.
    pub cache: u32,
    /// Seed of the sampler's random numbers.
    pub seed: u64,
    /// Gumbel-max temperature; 0 takes the argmax.
    pub temperature: f32,
    /// Classifier-free guidance scale; 0 disables.
    pub cfg_scale: f32,
    /// Nucleus sampling threshold in (0, 1]; 1 disables.
    pub top_p: f32,
    /// The threshold, factor or gamma of the commit rule.
    pub commit_value: f64,
    /// With an adaptive commit rule, the most forward passes per block (the last commits what
    /// is left); 0 sets no cap.
    pub max_passes_per_block: u32,
    /// Forbid end-of-text (its logit is set to -infinity).
    pub logits_eos_inf: bool,
    /// Leave EOS and EOT out of the confidence softmax (committed last).
    pub confidence_eos_eot_inf: bool,
    /// Stop at end of text: once a completed block holds EOS or EOT, fill the rest with EOS
    /// without running its blocks (the answer up to EOS/EOT is the same).
    pub stop_at_eos: bool,
    /// Dream's `alg_temp`: with LLADA_COMMIT_SCHEDULE or LLADA_COMMIT_TIMESTEPS, draw the
    /// positions to commit from softmax(confidence / alg_temp); 0 takes the most confident.
    pub alg_temp: f32,
    /// One of LLADA_GRID_*.
    pub block_grid: u32,
    /// LLaDA2.1's token editing (with LLADA_COMMIT_LLADA2): rewrite a generated token of the
    /// block when the model's token there differs with probability above editing_threshold.
    pub editing: bool,
    /// The editing threshold (0.9 in LLaDA2.1).
    pub editing_threshold: f64,
    /// The most edit-only passes after a block's last mask (16 in LLaDA2.1).
    pub max_post_steps: u32,
    /// With editing: masks a pass commits when none is above the threshold (1 in LLaDA2.1).
    pub num_to_transfer: u32,
}

/// Monte Carlo log-likelihood parameters.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LladaLikelihoodParams {
    /// Masked samples in total (a multiple of batch).
    pub mc_samples: u32,
    /// Rows per forward pass.
    pub batch: u32,
    /// Seed of the masking.
    pub seed: u64,
    /// Classifier-free guidance scale; 0 disables.
    pub cfg_scale: f32,
}

/// One chat message.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LladaChatMessage {
    /// "system", "user" or "assistant" (UTF-8, NUL-terminated).
    pub role: *const c_char,
    /// The text (UTF-8, NUL-terminated).
    pub content: *const c_char,
}

/// Defaults: the ndarray backend on the CPU.
#[unsafe(no_mangle)]
pub extern "C" fn llada_model_default_params() -> LladaModelParams {
    LladaModelParams {
        backend: LLADA_BACKEND_NDARRAY,
        execution_provider: LLADA_PROVIDER_CPU,
        ort_library: std::ptr::null(),
        quantize: LLADA_QUANTIZE_NONE,
    }
}

/// Defaults: every core.
#[unsafe(no_mangle)]
pub extern "C" fn llada_context_default_params() -> LladaContextParams {
    LladaContextParams { threads: 0 }
}

/// The reference sampler's defaults, whatever the model (128 steps, 128 tokens, one block of
/// 128, temperature 0, low-confidence remasking) with the model's own special token ids. For
/// the defaults a loaded model declares, use llada_model_default_generate_params.
#[unsafe(no_mangle)]
pub extern "C" fn llada_generate_default_params() -> LladaGenerateParams {
    let d = GenerateParams::default();
    LladaGenerateParams {
        steps: d.steps as u32,
        gen_length: d.gen_length as u32,
        block_length: d.block_length as u32,
        remasking: LLADA_REMASKING_LOW_CONFIDENCE,
        mask_id: LLADA_TOKEN_FROM_MODEL,
        eos_id: LLADA_TOKEN_FROM_MODEL,
        eot_id: LLADA_TOKEN_FROM_MODEL,
        top_k: 0,
        commit_rule: LLADA_COMMIT_SCHEDULE,
        cache: LLADA_CACHE_NONE,
        seed: 0,
        temperature: d.temperature,
        cfg_scale: d.cfg_scale,
        top_p: d.top_p,
        commit_value: 0.0,
        max_passes_per_block: 0,
        logits_eos_inf: false,
        confidence_eos_eot_inf: false,
        stop_at_eos: false,
        alg_temp: 0.0,
        block_grid: LLADA_GRID_FROM_PROMPT,
        editing: false,
        editing_threshold: Editing::LLADA21.threshold,
        max_post_steps: Editing::LLADA21.max_post_steps as u32,
        num_to_transfer: Editing::LLADA21.num_to_transfer as u32,
    }
}

/// The reference's defaults: 128 samples in mini-batches of 16, no guidance.
#[unsafe(no_mangle)]
pub extern "C" fn llada_likelihood_default_params() -> LladaLikelihoodParams {
    LladaLikelihoodParams {
        mc_samples: 128,
        batch: 16,
        seed: 0,
        cfg_scale: 0.0,
    }
}

impl LladaGenerateParams {
    /// The Rust parameters, with `model`'s ids where asked; unknown enum values are errors.
    pub(crate) fn to_rust(self, model: &GenerateParams) -> Result<GenerateParams, Failure> {
        let remasking = match self.remasking {
            LLADA_REMASKING_LOW_CONFIDENCE => Remasking::LowConfidence,
            LLADA_REMASKING_RANDOM => Remasking::Random,
            LLADA_REMASKING_MARGIN => Remasking::Margin,
            LLADA_REMASKING_ENTROPY => Remasking::Entropy,
            LLADA_REMASKING_ORIGIN => Remasking::Origin,
            other => return Err(Failure::invalid(format!("unknown remasking value {other}"))),
        };
        let commit = match self.commit_rule {
            LLADA_COMMIT_SCHEDULE => CommitRule::Schedule,
            LLADA_COMMIT_THRESHOLD => CommitRule::Threshold(self.commit_value),
            LLADA_COMMIT_FACTOR => CommitRule::Factor(self.commit_value),
            LLADA_COMMIT_ENTROPY_BOUNDED => CommitRule::EntropyBounded(self.commit_value),
            LLADA_COMMIT_TIMESTEPS => CommitRule::Timesteps(self.commit_value),
            LLADA_COMMIT_LLADA2 => CommitRule::Llada2(self.commit_value),
            other => return Err(Failure::invalid(format!("unknown commit rule {other}"))),
        };
        let grid = match self.block_grid {
            LLADA_GRID_FROM_PROMPT => BlockGrid::FromPrompt,
            LLADA_GRID_ABSOLUTE => BlockGrid::Absolute,
            other => return Err(Failure::invalid(format!("unknown block grid {other}"))),
        };
        let editing = self.editing.then_some(Editing {
            threshold: self.editing_threshold,
            max_post_steps: self.max_post_steps as usize,
            num_to_transfer: self.num_to_transfer as usize,
        });
        let cache = match self.cache {
            LLADA_CACHE_NONE => CacheMode::None,
            LLADA_CACHE_PREFIX => CacheMode::Prefix,
            LLADA_CACHE_DUAL => CacheMode::Dual,
            other => return Err(Failure::invalid(format!("unknown cache mode {other}"))),
        };
        let id = |v: u32, default: u32| {
            if v == LLADA_TOKEN_FROM_MODEL {
                default
            } else {
                v
            }
        };
        let params = GenerateParams::default()
            .with_steps(self.steps as usize)
            .with_gen_length(self.gen_length as usize)
            .with_block_length(self.block_length as usize)
            .with_temperature(self.temperature)
            .with_cfg_scale(self.cfg_scale)
            .with_remasking(remasking)
            .with_mask_id(id(self.mask_id, model.mask_id))
            .with_seed(self.seed)
            .with_logits_eos_inf(self.logits_eos_inf)
            .with_confidence_eos_eot_inf(self.confidence_eos_eot_inf)
            .with_eos_id(id(self.eos_id, model.eos_id))
            .with_eot_id(id(self.eot_id, model.eot_id))
            .with_top_k(self.top_k as usize)
            .with_top_p(self.top_p)
            .with_commit(commit)
            .with_cache(cache)
            .with_max_passes_per_block(self.max_passes_per_block as usize)
            .with_stop_at_eos(self.stop_at_eos)
            .with_alg_temp(self.alg_temp)
            .with_grid(grid)
            .with_editing(editing);
        params.validate()?;
        Ok(params)
    }
}

/// A NUL-terminated UTF-8 argument.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string valid for the call.
pub(crate) unsafe fn text_arg<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: the caller's contract.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str().map_err(|_| {
        Failure::new(
            crate::status::LladaStatus::InvalidUtf8,
            format!("`{name}` is not valid UTF-8"),
        )
    })
}

/// An optional path argument.
///
/// # Safety
/// As [`text_arg`].
pub(crate) unsafe fn path_arg(ptr: *const c_char, name: &str) -> Result<Option<PathBuf>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract.
    Ok(Some(PathBuf::from(unsafe { text_arg(ptr, name) }?)))
}

/// A `(pointer, length)` array argument; NULL is allowed for an empty array.
///
/// # Safety
/// `ptr` must be valid for `len` elements unless `len` is 0.
pub(crate) unsafe fn slice_arg<'a, T>(
    ptr: *const T,
    len: usize,
    name: &str,
) -> Result<&'a [T], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

impl LladaGenerateParams {
    /// The C form of `params` (the model's defaults): its rule, ranking and sampling settings
    /// with the enum values above.
    pub(crate) fn from_rust(params: &GenerateParams) -> Self {
        let (commit_rule, commit_value) = match params.commit {
            CommitRule::Threshold(t) => (LLADA_COMMIT_THRESHOLD, t),
            CommitRule::Factor(f) => (LLADA_COMMIT_FACTOR, f),
            CommitRule::EntropyBounded(g) => (LLADA_COMMIT_ENTROPY_BOUNDED, g),
            CommitRule::Timesteps(eps) => (LLADA_COMMIT_TIMESTEPS, eps),
            CommitRule::Llada2(t) => (LLADA_COMMIT_LLADA2, t),
            _ => (LLADA_COMMIT_SCHEDULE, 0.0),
        };
        let editing = params.editing.unwrap_or(Editing::LLADA21);
        let remasking = match params.remasking {
            Remasking::Random => LLADA_REMASKING_RANDOM,
            Remasking::Margin => LLADA_REMASKING_MARGIN,
            Remasking::Entropy => LLADA_REMASKING_ENTROPY,
            Remasking::Origin => LLADA_REMASKING_ORIGIN,
            _ => LLADA_REMASKING_LOW_CONFIDENCE,
        };
        LladaGenerateParams {
            steps: params.steps as u32,
            gen_length: params.gen_length as u32,
            block_length: params.block_length as u32,
            remasking,
            mask_id: params.mask_id,
            eos_id: params.eos_id,
            eot_id: params.eot_id,
            // Wider than the C field: u32::MAX filters nothing, as any k past the vocabulary.
            top_k: u32::try_from(params.top_k).unwrap_or(u32::MAX),
            commit_rule,
            commit_value,
            temperature: params.temperature,
            top_p: params.top_p,
            alg_temp: params.alg_temp,
            cache: match params.cache {
                CacheMode::Prefix => LLADA_CACHE_PREFIX,
                CacheMode::Dual => LLADA_CACHE_DUAL,
                _ => LLADA_CACHE_NONE,
            },
            stop_at_eos: params.stop_at_eos,
            block_grid: match params.grid {
                BlockGrid::Absolute => LLADA_GRID_ABSOLUTE,
                _ => LLADA_GRID_FROM_PROMPT,
            },
            editing: params.editing.is_some(),
            editing_threshold: editing.threshold,
            max_post_steps: editing.max_post_steps as u32,
            num_to_transfer: editing.num_to_transfer as u32,
            ..llada_generate_default_params()
        }
    }
}
