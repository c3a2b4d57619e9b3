//! LLaDA-8B and LLaDA-1.5 (GSAI-ML): the dense baseline. `config.json` follows OLMo's
//! (`d_model`, `n_heads`, `block_type: "llama"`, ...); the checkpoint's tensors live under
//! `model.transformer.`; llama.cpp's converter writes architecture `llada` with each query and
//! key head's rows interleaved for its "normal" rotary layout. Bidirectional attention without
//! biases, rotate-half rotary embedding over the whole head, SwiGLU, unshifted logits.

use serde::Deserialize;

use super::{Family, GgufConfig, GgufKeys, Tensor, gguf_keys};
use crate::config::{Config, Keys, invalid, raw, require, unsupported};
use crate::error::LoadError;

/// `model_type` values of LLaDA's `config.json`.
pub(super) const MODEL_TYPES: &[&str] = &["llada"];
/// `architectures` classes of LLaDA's `config.json`.
pub(super) const ARCHITECTURES: &[&str] = &["LLaDAModelLM"];
/// llama.cpp's architecture name.
pub(super) const GGUF_ARCH: &str = "llada";
/// llama.cpp's converter interleaves the rows of each query and key head (`undo_permute`).
pub(super) const GGUF_INTERLEAVED_QK: bool = true;
/// The metadata keys of architecture `llada`.
pub(super) const GGUF_KEYS: GgufKeys = gguf_keys!("llada");

/// The keys errors name.
const KEYS: Keys = Keys {
    d_model: "d_model",
    n_heads: "n_heads",
    n_kv_heads: "n_kv_heads",
    n_layers: "n_layers",
    mlp_hidden_size: "mlp_hidden_size",
    vocab_size: "vocab_size",
    max_sequence_length: "max_sequence_length",
};

/// The fields this backend reads from `config.json`, as written there (LLaDA's configuration
/// follows OLMo's). Unknown fields are ignored; use [`Config::from_file`] or
/// [`Config::from_json`], which also check that the model is one this backend runs.
#[derive(Clone, Debug, Deserialize, PartialEq)]
struct RawConfig {
    d_model: usize,
    n_heads: usize,
    #[serde(default)]
    n_kv_heads: Option<usize>,
    #[serde(default)]
    multi_query_attention: Option<bool>,
    n_layers: usize,
    #[serde(default)]
    mlp_hidden_size: Option<usize>,
    #[serde(default)]
    mlp_ratio: Option<f64>,
    vocab_size: usize,
    #[serde(default)]
    embedding_size: Option<usize>,
    rope_theta: f64,
    rms_norm_eps: f64,
    max_sequence_length: usize,
    block_type: String,
    activation_type: String,
    layer_norm_type: String,
    #[serde(default)]
    rope: Option<bool>,
    #[serde(default)]
    alibi: Option<bool>,
    #[serde(default)]
    include_bias: Option<bool>,
    #[serde(default)]
    include_qkv_bias: Option<bool>,
    #[serde(default)]
    bias_for_layer_norm: Option<bool>,
    #[serde(default)]
    layer_norm_with_affine: Option<bool>,
    #[serde(default)]
    attention_layer_norm: Option<bool>,
    #[serde(default)]
    input_emb_norm: Option<bool>,
    #[serde(default)]
    scale_logits: Option<bool>,
    #[serde(default)]
    clip_qkv: Option<f64>,
    #[serde(default)]
    weight_tying: Option<bool>,
    #[serde(default)]
    mask_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<u32>,
    #[serde(default)]
    pad_token_id: Option<u32>,
    /// Not a LLaDA key: set by a GGUF file whose `diffusion.shift_logits` is true.
    #[serde(default)]
    shift_logits: Option<bool>,
}

/// Fields that must be present: the ones whose absence would leave the architecture ambiguous.
const REQUIRED: [&str; 10] = [
    "d_model",
    "n_heads",
    "n_layers",
    "vocab_size",
    "rope_theta",
    "rms_norm_eps",
    "max_sequence_length",
    "block_type",
    "activation_type",
    "layer_norm_type",
];

fn check(raw: RawConfig) -> Result<Config, LoadError> {
    if raw.block_type != "llama" {
        return Err(unsupported(
            "block_type",
            &raw.block_type,
            "only \"llama\" blocks are implemented",
        ));
    }
    if raw.activation_type != "silu" && raw.activation_type != "swiglu" {
        return Err(unsupported(
            "activation_type",
            &raw.activation_type,
            "only SiLU-gated MLPs are implemented",
        ));
    }
    if raw.layer_norm_type != "rms" {
        return Err(unsupported(
            "layer_norm_type",
            &raw.layer_norm_type,
            "only RMSNorm is implemented",
        ));
    }
    let flags = [
        (
            "alibi",
            raw.alibi,
            "ALiBi attention biases are not implemented",
        ),
        (
            "include_bias",
            raw.include_bias,
            "linear biases are not implemented",
        ),
        (
            "include_qkv_bias",
            raw.include_qkv_bias,
            "query/key/value biases are not implemented",
        ),
        (
            "bias_for_layer_norm",
            raw.bias_for_layer_norm,
            "norm biases are not implemented",
        ),
        (
            "attention_layer_norm",
            raw.attention_layer_norm,
            "query/key norms are not implemented",
        ),
        (
            "input_emb_norm",
            raw.input_emb_norm,
            "embedding norms are not implemented",
        ),
        (
            "scale_logits",
            raw.scale_logits,
            "logit scaling is not implemented",
        ),
    ];
    for (field, value, reason) in flags {
        if value == Some(true) {
            return Err(unsupported(field, true, reason));
        }
    }
    if raw.rope == Some(false) {
        return Err(unsupported(
            "rope",
            false,
            "only rotary position embeddings are implemented",
        ));
    }
    if raw.layer_norm_with_affine == Some(false) {
        return Err(unsupported(
            "layer_norm_with_affine",
            false,
            "norms without weights are not implemented",
        ));
    }
    if let Some(clip) = raw.clip_qkv {
        return Err(unsupported(
            "clip_qkv",
            clip,
            "query/key/value clipping is not implemented",
        ));
    }
    for (field, value) in [
        ("d_model", raw.d_model),
        ("n_heads", raw.n_heads),
        ("n_layers", raw.n_layers),
        ("vocab_size", raw.vocab_size),
        ("max_sequence_length", raw.max_sequence_length),
    ] {
        if value == 0 {
            return Err(invalid(field, "must be positive".into()));
        }
    }
    if !raw.d_model.is_multiple_of(raw.n_heads) {
        return Err(invalid(
            "n_heads",
            format!("{} does not divide d_model {}", raw.n_heads, raw.d_model),
        ));
    }
    let head_dim = raw.d_model / raw.n_heads;
    if !head_dim.is_multiple_of(2) {
        return Err(invalid(
            "n_heads",
            format!("head dimension {head_dim} must be even for rotary embeddings"),
        ));
    }
    let n_kv_heads = match (raw.n_kv_heads, raw.multi_query_attention) {
        (Some(n), _) => n,
        (None, Some(true)) => 1,
        (None, _) => raw.n_heads,
    };
    if n_kv_heads == 0 || !raw.n_heads.is_multiple_of(n_kv_heads) {
        return Err(invalid(
            "n_kv_heads",
            format!("{n_kv_heads} does not divide n_heads {}", raw.n_heads),
        ));
    }
    let mlp_hidden_size = match (raw.mlp_hidden_size, raw.mlp_ratio) {
        (Some(n), _) if n > 0 => n,
        (None, Some(ratio)) if ratio > 0.0 => (ratio * raw.d_model as f64) as usize,
        _ => {
            return Err(LoadError::MissingField {
                field: "mlp_hidden_size",
            });
        }
    };
    let embedding_size = raw.embedding_size.unwrap_or(raw.vocab_size);
    if embedding_size < raw.vocab_size {
        return Err(invalid(
            "embedding_size",
            format!(
                "{embedding_size} is smaller than vocab_size {}",
                raw.vocab_size
            ),
        ));
    }
    if !(raw.rope_theta.is_finite() && raw.rope_theta > 0.0) {
        return Err(invalid(
            "rope_theta",
            format!("{} must be positive", raw.rope_theta),
        ));
    }
    if !(raw.rms_norm_eps.is_finite() && raw.rms_norm_eps >= 0.0) {
        return Err(invalid(
            "rms_norm_eps",
            format!("{} must be non-negative", raw.rms_norm_eps),
        ));
    }
    for (field, id) in [
        ("mask_token_id", raw.mask_token_id),
        ("eos_token_id", raw.eos_token_id),
        ("pad_token_id", raw.pad_token_id),
    ] {
        if let Some(id) = id
            && id as usize >= embedding_size
        {
            return Err(invalid(
                field,
                format!("{id} is outside the embedding of {embedding_size} rows"),
            ));
        }
    }
    Config {
        family: Family::Llada,
        d_model: raw.d_model,
        n_heads: raw.n_heads,
        n_kv_heads,
        head_dim,
        n_layers: raw.n_layers,
        mlp_hidden_size,
        vocab_size: raw.vocab_size,
        embedding_size,
        rope_theta: raw.rope_theta,
        rms_norm_eps: raw.rms_norm_eps,
        max_sequence_length: raw.max_sequence_length,
        weight_tying: raw.weight_tying.unwrap_or(false),
        qkv_bias: false,
        rotary_dim: head_dim,
        shifted_logits: raw.shift_logits.unwrap_or(false),
        mask_token_id: raw.mask_token_id,
        eos_token_id: raw.eos_token_id,
        pad_token_id: raw.pad_token_id,
        qk_norm: false,
        fused_qkv: false,
        attn_out_bias: false,
        block_causal: false,
        moe: None,
    }
    .checked(&KEYS)
}

/// Reads and checks a LLaDA `config.json`.
pub(super) fn config(value: serde_json::Value) -> Result<Config, LoadError> {
    let object = value
        .as_object()
        .ok_or_else(|| invalid("config", "is not a JSON object".into()))?;
    require(object, &REQUIRED)?;
    check(raw(value)?)
}

/// The checkpoint's name of a tensor.
pub(super) fn checkpoint_name(tensor: Tensor, layer: usize) -> String {
    let top = |name: &str| format!("model.transformer.{name}.weight");
    let block = |name: &str| format!("model.transformer.blocks.{layer}.{name}.weight");
    match tensor {
        Tensor::Embedding => top("wte"),
        Tensor::FinalNorm => top("ln_f"),
        Tensor::Head => top("ff_out"),
        Tensor::AttnNorm => block("attn_norm"),
        Tensor::Query => block("q_proj"),
        Tensor::Key => block("k_proj"),
        Tensor::Value => block("v_proj"),
        // LLaDA has none (`include_qkv_bias` is refused); named as OLMo would.
        Tensor::QueryBias => format!("model.transformer.blocks.{layer}.q_proj.bias"),
        Tensor::KeyBias => format!("model.transformer.blocks.{layer}.k_proj.bias"),
        Tensor::ValueBias => format!("model.transformer.blocks.{layer}.v_proj.bias"),
        Tensor::AttnOut => block("attn_out"),
        Tensor::MlpNorm => block("ff_norm"),
        Tensor::Gate => block("ff_proj"),
        Tensor::Up => block("up_proj"),
        Tensor::Down => block("ff_out"),
        // LLaDA has none of these; named as OLMo's blocks would name them.
        Tensor::QueryNorm => block("q_norm"),
        Tensor::KeyNorm => block("k_norm"),
        Tensor::Router => block("router"),
        Tensor::ExpertBias => format!("model.transformer.blocks.{layer}.expert_bias"),
        Tensor::ExpertGate(e) => block(&format!("experts.{e}.ff_proj")),
        Tensor::ExpertUp(e) => block(&format!("experts.{e}.up_proj")),
        Tensor::ExpertDown(e) => block(&format!("experts.{e}.ff_out")),
        Tensor::SharedGate => block("shared_expert.ff_proj"),
        Tensor::SharedUp => block("shared_expert.up_proj"),
        Tensor::SharedDown => block("shared_expert.ff_out"),
        // Names for the fused layout, which this family's checkpoints do not use.
        Tensor::Qkv => block("att_proj"),
        Tensor::QkvBias => format!("model.transformer.blocks.{layer}.att_proj.bias"),
        Tensor::AttnOutBias => format!("model.transformer.blocks.{layer}.attn_out.bias"),
    }
}

/// The `config.json` of a `llada` GGUF file's hyper-parameters.
pub(super) fn gguf_config(g: &GgufConfig) -> serde_json::Value {
    let mut config = serde_json::json!({
        "model_type": "llada",
        "d_model": g.d_model,
        "n_heads": g.n_heads,
        "n_kv_heads": g.n_kv_heads,
        "n_layers": g.n_layers,
        "mlp_hidden_size": g.mlp_hidden_size,
        "vocab_size": g.vocab_size,
        "embedding_size": g.embedding_size,
        "rope_theta": g.rope_theta,
        "rms_norm_eps": g.rms_norm_eps,
        "max_sequence_length": g.max_sequence_length,
        "block_type": "llama",
        "activation_type": "silu",
        "layer_norm_type": "rms",
        "weight_tying": g.weight_tying,
    });
    // llama.cpp writes `false` for LLaDA; a file that says otherwise is followed.
    if g.shift_logits == Some(true) {
        config["shift_logits"] = true.into();
    }
    for (field, id) in [
        ("mask_token_id", g.mask_token_id),
        ("eos_token_id", g.eos_token_id),
        ("pad_token_id", g.pad_token_id),
    ] {
        if let Some(id) = id {
            config[field] = id.into();
        }
    }
    config
}
