//! LLaDA2.0 and LLaDA2.1 (inclusionAI, `LLaDA2MoeModelLM`, `model_type` `llada2_moe`; a
//! BailingMoeV2 / Ling-2.0 body trained for block diffusion). What differs from LLaDA-MoE:
//! - **block-causal attention**: bidirectional inside a block, causal across blocks, on the
//!   absolute grid of blocks from position 0; the sampler asks for it
//!   ([`Config::block_causal`]) and a prefix cache is exact;
//! - one fused `attention.query_key_value` projection (rows: the query heads, the key heads,
//!   the value heads; grouped-query), with a bias when `use_qkv_bias`, and the output
//!   projection `attention.dense` with a bias when `use_bias` (the class's default is true);
//! - RMSNorm over each head's query and key (`query_layernorm`, `key_layernorm`), then
//!   rotate-half RoPE on the first `head_dim · partial_rotary_factor` dimensions (0.5);
//! - the first `first_k_dense_replace` layers keep a dense SwiGLU of `intermediate_size`; the
//!   others are a mixture of `num_experts` experts of `moe_intermediate_size`: router logits
//!   in f32 through a **sigmoid**, the per-expert `mlp.gate.expert_bias` (a buffer of the
//!   checkpoint) added only to choose, group-limited top-k (`n_group` groups scored by the sum
//!   of their two best, `topk_group` kept), the weights the unbiased scores divided by their
//!   sum (for k > 1) and multiplied by `routed_scaling_factor`; plus a shared expert of
//!   `moe_intermediate_size · num_shared_experts` on the same input;
//! - the multi-token-prediction layers of the checkpoint (`num_nextn_predict_layers`, stored
//!   as layers after the last) are not used in inference and not read.
//!
//! GGUF: llama.cpp has no diffusion architecture for it; ours is `llada2`, with the key and
//! tensor names llama.cpp uses for `bailingmoe2` under that prefix (all in this file and in
//! [`Tensor::gguf_name`]).

use serde::Deserialize;

use super::{Family, GgufConfig, GgufKeys, Id, Tensor, gguf_keys};
use crate::config::{
    Config, Gating, Keys, MoeConfig, invalid, positive, raw, require, silu_and_plain_rope,
    unsupported,
};
use crate::error::LoadError;

/// `model_type` values of LLaDA2's `config.json`.
pub(super) const MODEL_TYPES: &[&str] = &["llada2_moe", "llada2"];
/// `architectures` classes of LLaDA2's `config.json`.
pub(super) const ARCHITECTURES: &[&str] = &["LLaDA2MoeModelLM", "LLaDA2MoeModel"];
/// Our architecture name (llama.cpp has none yet).
pub(super) const GGUF_ARCH: &str = "llada2";
/// The query and key rows stay as the checkpoint has them (rotate-half).
pub(super) const GGUF_INTERLEAVED_QK: bool = false;
/// The metadata keys of architecture `llada2`: llama.cpp's `bailingmoe2` names.
pub(super) const GGUF_KEYS: GgufKeys = gguf_keys!("llada2");
/// `<arch>.leading_dense_block_count`: the dense layers before the mixtures.
pub(crate) const GGUF_DENSE_LAYERS: &str = "llada2.leading_dense_block_count";
/// `<arch>.expert_weights_scale`: `routed_scaling_factor`.
pub(crate) const GGUF_WEIGHTS_SCALE: &str = "llada2.expert_weights_scale";
/// `<arch>.expert_weights_norm`: whether the chosen weights are renormalised.
pub(crate) const GGUF_WEIGHTS_NORM: &str = "llada2.expert_weights_norm";
/// `<arch>.expert_gating_func`: llama.cpp's enum, 2 = sigmoid.
pub(crate) const GGUF_GATING: &str = "llada2.expert_gating_func";
/// `<arch>.expert_group_count` and `<arch>.expert_group_used_count`.
pub(crate) const GGUF_GROUPS: &str = "llada2.expert_group_count";
pub(crate) const GGUF_USED_GROUPS: &str = "llada2.expert_group_used_count";
/// `<arch>.expert_shared_feed_forward_length` and `<arch>.expert_shared_count`.
pub(crate) const GGUF_SHARED_WIDTH: &str = "llada2.expert_shared_feed_forward_length";
pub(crate) const GGUF_SHARED_COUNT: &str = "llada2.expert_shared_count";
/// llama.cpp's `LLAMA_EXPERT_GATING_FUNC_TYPE_SIGMOID`.
pub(crate) const GATING_SIGMOID: u64 = 2;

/// The mask and end-of-text ids of the release (the defaults of its `generate`).
const RELEASE_MASK_ID: u32 = 156_895;
const RELEASE_EOS_ID: u32 = 156_892;

/// The most experts a layer may declare.
const MAX_EXPERTS: usize = 1 << 14;

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
    "num_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
    "vocab_size",
    "max_position_embeddings",
];

/// The fields read from LLaDA2's `config.json` (`LLaDA2MoeConfig`), with the class's
/// defaults where a key may be absent.
#[derive(Clone, Debug, Deserialize, PartialEq)]
struct RawConfig {
    hidden_size: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    num_hidden_layers: usize,
    #[serde(default)]
    intermediate_size: Option<i64>,
    moe_intermediate_size: i64,
    num_experts: i64,
    num_experts_per_tok: i64,
    #[serde(default)]
    num_shared_experts: Option<i64>,
    #[serde(default)]
    n_group: Option<i64>,
    #[serde(default)]
    topk_group: Option<i64>,
    #[serde(default)]
    routed_scaling_factor: Option<f64>,
    #[serde(default)]
    first_k_dense_replace: Option<usize>,
    vocab_size: usize,
    max_position_embeddings: usize,
    #[serde(default)]
    rms_norm_eps: Option<f64>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    use_qkv_bias: Option<bool>,
    #[serde(default)]
    use_bias: Option<bool>,
    #[serde(default)]
    use_qk_norm: Option<bool>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
    #[serde(default)]
    score_function: Option<String>,
    #[serde(default)]
    mask_token_id: Option<Id>,
    #[serde(default)]
    eos_token_id: Option<Id>,
    #[serde(default)]
    pad_token_id: Option<Id>,
}

/// Reads and checks a LLaDA2 `config.json`.
pub(super) fn config(value: serde_json::Value) -> Result<Config, LoadError> {
    let object = value
        .as_object()
        .ok_or_else(|| invalid("config", "is not a JSON object".into()))?;
    require(object, &REQUIRED)?;
    let raw: RawConfig = raw(value)?;
    silu_and_plain_rope(raw.hidden_act.as_deref(), raw.rope_scaling.as_ref())?;
    if let Some(f) = raw.score_function.as_deref().filter(|&f| f != "sigmoid") {
        return Err(unsupported(
            "score_function",
            f,
            "LLaDA2's router is a sigmoid per expert",
        ));
    }
    let heads = raw.num_attention_heads.max(1);
    let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / heads);
    let rotary_dim = match raw.partial_rotary_factor.unwrap_or(0.5) {
        // The reference truncates `head_dim * factor`; the margin keeps a factor written as
        // rotary / head_dim (a GGUF file's) from landing one below.
        f if f > 0.0 && f <= 1.0 => (head_dim as f64 * f + 1e-9) as usize,
        f => {
            return Err(invalid(
                "partial_rotary_factor",
                format!("{f} must be in (0, 1]"),
            ));
        }
    };
    let experts = positive("num_experts", raw.num_experts)?;
    if experts > MAX_EXPERTS {
        return Err(invalid(
            "num_experts",
            format!("{experts} is more than {MAX_EXPERTS}"),
        ));
    }
    let experts_per_token = positive("num_experts_per_tok", raw.num_experts_per_tok)?;
    let expert_hidden_size = positive("moe_intermediate_size", raw.moe_intermediate_size)?;
    let shared_expert_hidden_size = match raw.num_shared_experts {
        None | Some(0) => None,
        Some(n) => Some(positive("num_shared_experts", n)?.saturating_mul(expert_hidden_size)),
    };
    let groups = positive("n_group", raw.n_group.unwrap_or(8))?;
    let used_groups = positive("topk_group", raw.topk_group.unwrap_or(4))?;
    let dense_layers = raw.first_k_dense_replace.unwrap_or(0);
    let layers = (dense_layers > 0).then(|| {
        (0..raw.num_hidden_layers.min(MAX_EXPERTS))
            .map(|i| i >= dense_layers)
            .collect::<Vec<bool>>()
    });
    let mlp_hidden_size = match raw.intermediate_size.filter(|&n| n > 0) {
        Some(n) => n as usize,
        None if dense_layers == 0 => expert_hidden_size,
        None => {
            return Err(invalid(
                "intermediate_size",
                "must be positive: first_k_dense_replace asks for dense layers".into(),
            ));
        }
    };
    let id = |id: Option<Id>, release: u32| match id.and_then(|id| id.first()) {
        Some(id) => Some(id),
        None => (raw.vocab_size > release as usize).then_some(release),
    };
    let moe = MoeConfig {
        experts,
        experts_per_token,
        expert_hidden_size,
        shared_expert_hidden_size,
        // The gate registers `expert_bias` as a buffer whatever the config says: it is in
        // every checkpoint.
        expert_bias: true,
        normalize_weights: experts_per_token > 1,
        gating: Gating::Sigmoid {
            groups,
            used_groups,
        },
        weight_scale: raw.routed_scaling_factor.unwrap_or(2.5) as f32,
        layers,
    };
    moe.check()?;
    Config {
        family: Family::Llada2,
        d_model: raw.hidden_size,
        n_heads: raw.num_attention_heads,
        n_kv_heads: raw
            .num_key_value_heads
            .filter(|&n| n > 0)
            .unwrap_or(raw.num_attention_heads),
        head_dim,
        n_layers: raw.num_hidden_layers,
        mlp_hidden_size,
        vocab_size: raw.vocab_size,
        embedding_size: raw.vocab_size,
        rope_theta: raw.rope_theta.unwrap_or(10_000.0),
        rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-5),
        max_sequence_length: raw.max_position_embeddings,
        weight_tying: raw.tie_word_embeddings.unwrap_or(false),
        qkv_bias: raw.use_qkv_bias.unwrap_or(false),
        rotary_dim,
        shifted_logits: false,
        mask_token_id: id(raw.mask_token_id, RELEASE_MASK_ID),
        eos_token_id: id(raw.eos_token_id, RELEASE_EOS_ID),
        pad_token_id: raw.pad_token_id.and_then(|id| id.first()),
        qk_norm: raw.use_qk_norm.unwrap_or(true),
        fused_qkv: true,
        attn_out_bias: raw.use_bias.unwrap_or(true),
        block_causal: true,
        moe: Some(moe),
    }
    .checked(&KEYS)
}

/// The checkpoint's name of a tensor.
pub(super) fn checkpoint_name(tensor: Tensor, layer: usize) -> String {
    let layer_tensor = |name: &str| format!("model.layers.{layer}.{name}");
    let expert = |e: usize, name: &str| format!("model.layers.{layer}.mlp.experts.{e}.{name}");
    match tensor {
        Tensor::Embedding => "model.word_embeddings.weight".into(),
        Tensor::FinalNorm => "model.norm.weight".into(),
        Tensor::Head => "lm_head.weight".into(),
        Tensor::AttnNorm => layer_tensor("input_layernorm.weight"),
        Tensor::Qkv => layer_tensor("attention.query_key_value.weight"),
        Tensor::QkvBias => layer_tensor("attention.query_key_value.bias"),
        Tensor::QueryNorm => layer_tensor("attention.query_layernorm.weight"),
        Tensor::KeyNorm => layer_tensor("attention.key_layernorm.weight"),
        Tensor::AttnOut => layer_tensor("attention.dense.weight"),
        Tensor::AttnOutBias => layer_tensor("attention.dense.bias"),
        Tensor::MlpNorm => layer_tensor("post_attention_layernorm.weight"),
        Tensor::Gate => layer_tensor("mlp.gate_proj.weight"),
        Tensor::Up => layer_tensor("mlp.up_proj.weight"),
        Tensor::Down => layer_tensor("mlp.down_proj.weight"),
        Tensor::Router => layer_tensor("mlp.gate.weight"),
        Tensor::ExpertBias => layer_tensor("mlp.gate.expert_bias"),
        Tensor::ExpertGate(e) => expert(e, "gate_proj.weight"),
        Tensor::ExpertUp(e) => expert(e, "up_proj.weight"),
        Tensor::ExpertDown(e) => expert(e, "down_proj.weight"),
        Tensor::SharedGate => layer_tensor("mlp.shared_experts.gate_proj.weight"),
        Tensor::SharedUp => layer_tensor("mlp.shared_experts.up_proj.weight"),
        Tensor::SharedDown => layer_tensor("mlp.shared_experts.down_proj.weight"),
        // The unfused names, which LLaDA2's checkpoints do not use.
        Tensor::Query => layer_tensor("attention.query.weight"),
        Tensor::Key => layer_tensor("attention.key.weight"),
        Tensor::Value => layer_tensor("attention.value.weight"),
        Tensor::QueryBias => layer_tensor("attention.query.bias"),
        Tensor::KeyBias => layer_tensor("attention.key.bias"),
        Tensor::ValueBias => layer_tensor("attention.value.bias"),
    }
}

/// The `config.json` of a `llada2` GGUF file's hyper-parameters, in LLaDA2's keys.
pub(super) fn gguf_config(g: &GgufConfig) -> serde_json::Value {
    let head_dim = g.d_model.checked_div(g.n_heads).unwrap_or(0);
    let mut config = serde_json::json!({
        "architectures": ["LLaDA2MoeModelLM"],
        "model_type": "llada2_moe",
        "hidden_size": g.d_model,
        "num_attention_heads": g.n_heads,
        "num_key_value_heads": g.n_kv_heads,
        "num_hidden_layers": g.n_layers,
        "vocab_size": g.embedding_size,
        "max_position_embeddings": g.max_sequence_length,
        "rms_norm_eps": g.rms_norm_eps,
        "rope_theta": g.rope_theta,
        "hidden_act": "silu",
        "tie_word_embeddings": g.weight_tying,
        "use_qk_norm": g.qk_norm,
        "use_qkv_bias": g.qkv_bias,
        "use_bias": g.attn_out_bias,
        // llama.cpp's gating ids: 1 softmax, 2 sigmoid (3 sqrt-softplus); only the sigmoid is
        // LLaDA2's, and the config reader refuses the others by name.
        "score_function": match g.gating {
            None | Some(GATING_SIGMOID) => "sigmoid",
            Some(1) => "softmax",
            Some(_) => "other",
        },
    });
    let numbers: [(&str, Option<u64>); 7] = [
        (
            "intermediate_size",
            Some(g.mlp_hidden_size).filter(|&n| n > 0),
        ),
        ("num_experts", g.expert_count),
        ("num_experts_per_tok", g.expert_used_count),
        ("moe_intermediate_size", g.expert_feed_forward_length),
        ("first_k_dense_replace", g.dense_layers),
        ("n_group", g.expert_groups),
        ("topk_group", g.expert_used_groups),
    ];
    for (field, value) in numbers {
        if let Some(v) = value {
            config[field] = v.into();
        }
    }
    if let (Some(shared), Some(width)) = (g.shared_width, g.expert_feed_forward_length) {
        config["num_shared_experts"] = shared.checked_div(width).unwrap_or(0).into();
    }
    if let Some(scale) = g.weights_scale {
        config["routed_scaling_factor"] = scale.into();
    }
    if let Some(rotary) = g.rotary_dim.filter(|_| head_dim > 0) {
        config["partial_rotary_factor"] = (rotary as f64 / head_dim as f64).into();
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

/// The GGUF metadata of a LLaDA2 configuration beyond the keys every architecture has.
pub(crate) fn gguf_metadata(c: &Config) -> Vec<(&'static str, crate::gguf::Value)> {
    use crate::gguf::Value;
    let Some(moe) = &c.moe else {
        return Vec::new();
    };
    let dense_layers = (0..c.n_layers)
        .take_while(|&i| !moe.is_moe_layer(i))
        .count();
    let (groups, used) = match moe.gating {
        Gating::Sigmoid {
            groups,
            used_groups,
        } => (groups, used_groups),
        Gating::Softmax => (1, 1),
    };
    let mut keys = vec![
        (GGUF_DENSE_LAYERS, Value::Uint(dense_layers as u64)),
        (
            GGUF_WEIGHTS_SCALE,
            Value::Float(f64::from(moe.weight_scale)),
        ),
        (GGUF_WEIGHTS_NORM, Value::Bool(moe.normalize_weights)),
        (GGUF_GATING, Value::Uint(GATING_SIGMOID)),
        (GGUF_GROUPS, Value::Uint(groups as u64)),
        (GGUF_USED_GROUPS, Value::Uint(used as u64)),
    ];
    if let Some(shared) = moe.shared_expert_hidden_size {
        keys.push((GGUF_SHARED_WIDTH, Value::Uint(shared as u64)));
        keys.push((
            GGUF_SHARED_COUNT,
            Value::Uint((shared / moe.expert_hidden_size.max(1)) as u64),
        ));
    }
    keys
}
