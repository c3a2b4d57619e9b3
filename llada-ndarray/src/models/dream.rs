//! Dream-v0-7B (HKUNLP) and the models built on it (DiffuCoder, Dream-Coder): a Qwen2 body run
//! bidirectionally. What differs from LLaDA:
//! - `config.json` has Qwen2's keys (`hidden_size`, `num_attention_heads`, ...) and
//!   `model_type: "Dream"`; the checkpoint's tensors are Qwen2's (`model.layers.N.self_attn.*`,
//!   `lm_head.weight`);
//! - the query, key and value projections have **biases** (the output projection none);
//! - the logits are **shifted**: Dream was adapted from a left-to-right model, so its
//!   prediction for position i is output row i − 1 (position 0 reads row 0). Dream's sampler
//!   applies the shift, and so does ours ([`Config::shifted_logits`]);
//! - llama.cpp's converter (architecture `dream`) keeps the query and key rows as they are,
//!   and writes no `diffusion.shift_logits` key, which `llama-diffusion-cli` reads as shifted.
//!
//! Rotate-half rotary embedding over the whole head with the config's θ, RMSNorm, SwiGLU,
//! grouped-query attention, as LLaDA.

use serde::Deserialize;

use super::{Family, GgufConfig, GgufKeys, Id, Tensor, gguf_keys};
use crate::config::{Config, Keys, invalid, raw, require, silu_and_plain_rope, unsupported};
use crate::error::LoadError;

/// `model_type` values of Dream's `config.json`.
pub(super) const MODEL_TYPES: &[&str] = &["Dream"];
/// `architectures` classes of Dream's `config.json`.
pub(super) const ARCHITECTURES: &[&str] = &["DreamModel", "DreamForCausalLM"];
/// llama.cpp's architecture name.
pub(super) const GGUF_ARCH: &str = "dream";
/// llama.cpp's converter keeps the query and key rows of Qwen2 bodies.
pub(super) const GGUF_INTERLEAVED_QK: bool = false;
/// The metadata keys of architecture `dream`.
pub(super) const GGUF_KEYS: GgufKeys = gguf_keys!("dream");

/// The keys errors name.
const KEYS: Keys = Keys {
    d_model: "hidden_size",
    n_heads: "num_attention_heads",
    n_kv_heads: "num_key_value_heads",
    n_layers: "num_hidden_layers",
    mlp_hidden_size: "intermediate_size",
    vocab_size: "vocab_size",
    max_sequence_length: "max_position_embeddings",
};

/// Fields that must be present.
const REQUIRED: [&str; 8] = [
    "hidden_size",
    "num_attention_heads",
    "num_hidden_layers",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
];

/// The fields read from Dream's `config.json` (`DreamConfig`), as written there.
#[derive(Clone, Debug, Deserialize, PartialEq)]
struct RawConfig {
    hidden_size: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    num_hidden_layers: usize,
    intermediate_size: usize,
    vocab_size: usize,
    max_position_embeddings: usize,
    rms_norm_eps: f64,
    rope_theta: f64,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    use_sliding_window: Option<bool>,
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
    #[serde(default)]
    mask_token_id: Option<Id>,
    #[serde(default)]
    eos_token_id: Option<Id>,
    #[serde(default)]
    pad_token_id: Option<Id>,
    /// Not a Dream key: a GGUF file's `diffusion.shift_logits`, when it says `false`.
    #[serde(default)]
    shift_logits: Option<bool>,
}

/// Reads and checks a Dream `config.json`.
pub(super) fn config(value: serde_json::Value) -> Result<Config, LoadError> {
    let object = value
        .as_object()
        .ok_or_else(|| invalid("config", "is not a JSON object".into()))?;
    require(object, &REQUIRED)?;
    let raw: RawConfig = raw(value)?;
    silu_and_plain_rope(raw.hidden_act.as_deref(), raw.rope_scaling.as_ref())?;
    if raw.use_sliding_window == Some(true) {
        return Err(unsupported(
            "use_sliding_window",
            true,
            "sliding-window attention is not implemented",
        ));
    }
    if let Some(factor) = raw.partial_rotary_factor.filter(|&f| f != 1.0) {
        return Err(unsupported(
            "partial_rotary_factor",
            factor,
            "Dream rotates the whole head",
        ));
    }
    let heads = raw.num_attention_heads.max(1);
    Config {
        family: Family::Dream,
        d_model: raw.hidden_size,
        n_heads: raw.num_attention_heads,
        n_kv_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
        head_dim: raw.head_dim.unwrap_or(raw.hidden_size / heads),
        n_layers: raw.num_hidden_layers,
        mlp_hidden_size: raw.intermediate_size,
        vocab_size: raw.vocab_size,
        embedding_size: raw.vocab_size,
        rope_theta: raw.rope_theta,
        rms_norm_eps: raw.rms_norm_eps,
        max_sequence_length: raw.max_position_embeddings,
        weight_tying: raw.tie_word_embeddings.unwrap_or(false),
        // `DreamAttention` builds q/k/v with biases whatever the config says; a config that
        // says `attention_bias: false` (models converted to Dream's format from bias-free
        // bodies) has none in its checkpoint.
        qkv_bias: raw.attention_bias.unwrap_or(true),
        rotary_dim: raw.hidden_size / heads,
        shifted_logits: raw.shift_logits.unwrap_or(true),
        mask_token_id: raw.mask_token_id.and_then(|id| id.first()),
        eos_token_id: raw.eos_token_id.and_then(|id| id.first()),
        pad_token_id: raw.pad_token_id.and_then(|id| id.first()),
        qk_norm: false,
        fused_qkv: false,
        attn_out_bias: false,
        block_causal: false,
        moe: None,
    }
    .checked(&KEYS)
}

/// The checkpoint's name of a tensor (Qwen2's).
pub(super) fn checkpoint_name(tensor: Tensor, layer: usize) -> String {
    let layer_tensor = |name: &str| format!("model.layers.{layer}.{name}");
    match tensor {
        Tensor::Embedding => "model.embed_tokens.weight".into(),
        Tensor::FinalNorm => "model.norm.weight".into(),
        Tensor::Head => "lm_head.weight".into(),
        Tensor::AttnNorm => layer_tensor("input_layernorm.weight"),
        Tensor::Query => layer_tensor("self_attn.q_proj.weight"),
        Tensor::Key => layer_tensor("self_attn.k_proj.weight"),
        Tensor::Value => layer_tensor("self_attn.v_proj.weight"),
        Tensor::QueryBias => layer_tensor("self_attn.q_proj.bias"),
        Tensor::KeyBias => layer_tensor("self_attn.k_proj.bias"),
        Tensor::ValueBias => layer_tensor("self_attn.v_proj.bias"),
        Tensor::AttnOut => layer_tensor("self_attn.o_proj.weight"),
        Tensor::MlpNorm => layer_tensor("post_attention_layernorm.weight"),
        Tensor::Gate => layer_tensor("mlp.gate_proj.weight"),
        Tensor::Up => layer_tensor("mlp.up_proj.weight"),
        Tensor::Down => layer_tensor("mlp.down_proj.weight"),
        // Dream has none of these; named as the Qwen-style families name them.
        Tensor::QueryNorm => layer_tensor("self_attn.q_norm.weight"),
        Tensor::KeyNorm => layer_tensor("self_attn.k_norm.weight"),
        Tensor::Router => layer_tensor("mlp.gate.weight"),
        Tensor::ExpertBias => layer_tensor("mlp.expert_bias"),
        Tensor::ExpertGate(e) => layer_tensor(&format!("mlp.experts.{e}.gate_proj.weight")),
        Tensor::ExpertUp(e) => layer_tensor(&format!("mlp.experts.{e}.up_proj.weight")),
        Tensor::ExpertDown(e) => layer_tensor(&format!("mlp.experts.{e}.down_proj.weight")),
        Tensor::SharedGate => layer_tensor("shared_expert.gate_proj.weight"),
        Tensor::SharedUp => layer_tensor("shared_expert.up_proj.weight"),
        Tensor::SharedDown => layer_tensor("shared_expert.down_proj.weight"),
        // Names for the fused layout and output bias, which this family's checkpoints do not
        // use.
        Tensor::Qkv => layer_tensor("self_attn.qkv_proj.weight"),
        Tensor::QkvBias => layer_tensor("self_attn.qkv_proj.bias"),
        Tensor::AttnOutBias => layer_tensor("self_attn.o_proj.bias"),
    }
}

/// The `config.json` of a `dream` GGUF file's hyper-parameters, in Dream's keys.
pub(super) fn gguf_config(g: &GgufConfig) -> serde_json::Value {
    let mut config = serde_json::json!({
        "architectures": ["DreamModel"],
        "model_type": "Dream",
        "hidden_size": g.d_model,
        "num_attention_heads": g.n_heads,
        "num_key_value_heads": g.n_kv_heads,
        "num_hidden_layers": g.n_layers,
        "intermediate_size": g.mlp_hidden_size,
        // Rows of the embedding: the logits' width (the tokenizer may have fewer tokens).
        "vocab_size": g.embedding_size,
        "max_position_embeddings": g.max_sequence_length,
        "rms_norm_eps": g.rms_norm_eps,
        "rope_theta": g.rope_theta,
        "hidden_act": "silu",
        "tie_word_embeddings": g.weight_tying,
    });
    if let Some(rotary) = g
        .rotary_dim
        .filter(|&r| g.n_heads > 0 && r != g.d_model / g.n_heads)
    {
        config["partial_rotary_factor"] = (rotary as f64 / (g.d_model / g.n_heads) as f64).into();
    }
    // No key is what llama.cpp writes for Dream, and `llama-diffusion-cli` then shifts.
    if g.shift_logits == Some(false) {
        config["shift_logits"] = false.into();
    }
    for (field, id) in [
        ("mask_token_id", g.mask_token_id),
        ("eos_token_id", g.eos_token_id),
        ("pad_token_id", g.pad_token_id),
        ("bos_token_id", g.bos_token_id),
    ] {
        if let Some(id) = id {
            config[field] = id.into();
        }
    }
    config
}
