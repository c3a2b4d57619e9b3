//! LLaDA-MoE-7B-A1B (inclusionAI / GSAI-ML): LLaDA's diffusion recipe on a mixture-of-experts
//! body (`LLaDAMoEModelLM`). What differs from LLaDA-8B:
//! - `config.json` has Qwen-style keys (`hidden_size`, `num_attention_heads`, ...) under the
//!   same `model_type: "llada"`; its class `LLaDAMoEModelLM` (or its `num_experts` without
//!   LLaDA's `d_model`) tells them apart. The checkpoint's tensors are `model.layers.N.*`, each
//!   expert under `mlp.experts.E.{gate,up,down}_proj`;
//! - each layer's MLP is a **mixture of experts**: a router (`mlp.gate`) scores every expert,
//!   a softmax over all of them in f32, the `num_experts_per_tok` best are taken **without
//!   renormalising** their probabilities (the reference hard-codes `norm_topk_prob = False`)
//!   and without scaling, and the output is the weighted sum of those experts' SwiGLUs
//!   (`expert_intermediate_size` wide). Layers whose `moe_layer_freq` entry is 0 keep a dense
//!   SwiGLU of `dense_intermediate_size`; an optional `expert_bias` is added to the
//!   probabilities (so it counts in the choice and in the weights), and an optional shared
//!   expert (`shared_expert_intermediate_size`) is added for every token;
//! - **RMSNorm over each head's queries and keys** (`qk_layernorm`, one weight of `head_dim`)
//!   before the rotary embedding, which is rotate-half over the first
//!   `head_dim · partial_rotary_factor` dimensions;
//! - llama.cpp's converter (architecture `llada-moe`) keeps the query and key rows as they
//!   are, stacks each layer's experts into three-dimensional `ffn_{gate,up,down}_exps`
//!   tensors (or `ffn_gate_up_exps` with `--fuse-gate-up-exps`), and writes the mask id
//!   156895 whatever the tokenizer says.
//!
//! Bidirectional attention, untied head, unshifted logits, as LLaDA.

use serde::Deserialize;

use super::{Family, GgufConfig, GgufKeys, Id, Tensor, gguf_keys};
use crate::config::{
    Config, Gating, Keys, MoeConfig, invalid, positive, raw, require, silu_and_plain_rope,
    unsupported,
};
use crate::error::LoadError;

/// `model_type` values that name LLaDA-MoE alone (its release says `llada`, which the
/// dispatcher checks with the keys).
pub(super) const MODEL_TYPES: &[&str] = &["lladamoe", "llada_moe"];
/// `architectures` classes of LLaDA-MoE's `config.json`.
pub(super) const ARCHITECTURES: &[&str] = &["LLaDAMoEModelLM", "LLaDAMoEModel"];
/// llama.cpp's architecture name.
pub(super) const GGUF_ARCH: &str = "llada-moe";
/// llama.cpp's converter keeps the query and key rows (its rotary layout is rotate-half).
pub(super) const GGUF_INTERLEAVED_QK: bool = false;
/// The metadata keys of architecture `llada-moe` (no `feed_forward_length` is written when
/// the config has no `intermediate_size`).
pub(super) const GGUF_KEYS: GgufKeys = GgufKeys {
    dense_mlp_required: false,
    ..gguf_keys!("llada-moe")
};

/// The mask id of the release: `generate` and llama.cpp's converter hard-code it, and the
/// release's `config.json` does not say it.
const RELEASE_MASK_ID: u32 = 156_895;

/// The most experts a layer may declare (the largest releases have a few hundred).
const MAX_EXPERTS: usize = 1 << 14;

/// The keys errors name.
const KEYS: Keys = Keys {
    d_model: "hidden_size",
    n_heads: "num_attention_heads",
    n_kv_heads: "num_key_value_heads",
    n_layers: "num_hidden_layers",
    mlp_hidden_size: "dense_intermediate_size",
    vocab_size: "vocab_size",
    max_sequence_length: "max_position_embeddings",
};

/// Fields that must be present.
const REQUIRED: [&str; 10] = [
    "hidden_size",
    "num_attention_heads",
    "num_hidden_layers",
    "expert_intermediate_size",
    "num_experts",
    "num_experts_per_tok",
    "vocab_size",
    "rms_norm_eps",
    "rope_theta",
    "max_position_embeddings",
];

/// The fields read from LLaDA-MoE's `config.json` (`LLaDAConfig` of its remote code), as
/// written there. Sizes the class defaults to -1 are read as signed numbers so that a
/// placeholder is refused by name rather than by type.
#[derive(Clone, Debug, Deserialize, PartialEq)]
struct RawConfig {
    hidden_size: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    num_hidden_layers: usize,
    #[serde(default)]
    dense_intermediate_size: Option<i64>,
    expert_intermediate_size: i64,
    #[serde(default)]
    shared_expert_intermediate_size: Option<i64>,
    num_experts: i64,
    num_experts_per_tok: i64,
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
    clip_qkv: Option<serde_json::Value>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
    #[serde(default)]
    qk_layernorm: Option<bool>,
    #[serde(default)]
    norm_topk_prob: Option<bool>,
    /// One entry per layer (1: mixture, 0: dense), as the reference indexes it.
    #[serde(default)]
    moe_layer_freq: Option<Vec<i64>>,
    #[serde(default)]
    moe_router_enable_expert_bias: Option<bool>,
    #[serde(default)]
    moe_router_score_function: Option<String>,
    #[serde(default)]
    routed_scaling_factor: Option<f64>,
    #[serde(default)]
    router_num_group: Option<i64>,
    #[serde(default)]
    router_topk_group: Option<i64>,
    #[serde(default)]
    mask_token_id: Option<Id>,
    #[serde(default)]
    eos_token_id: Option<Id>,
    #[serde(default)]
    pad_token_id: Option<Id>,
    /// Not a LLaDA-MoE key: a GGUF file's `diffusion.shift_logits`, when it says `true`.
    #[serde(default)]
    shift_logits: Option<bool>,
}

/// Reads and checks a LLaDA-MoE `config.json`.
pub(super) fn config(value: serde_json::Value) -> Result<Config, LoadError> {
    let object = value
        .as_object()
        .ok_or_else(|| invalid("config", "is not a JSON object".into()))?;
    require(object, &REQUIRED)?;
    let raw: RawConfig = raw(value)?;
    silu_and_plain_rope(raw.hidden_act.as_deref(), raw.rope_scaling.as_ref())?;
    if raw.attention_bias == Some(true) {
        return Err(unsupported(
            "attention_bias",
            true,
            "LLaDA-MoE's attention biases (on q, k, v and the output) are not implemented",
        ));
    }
    if let Some(clip) = raw.clip_qkv.as_ref().filter(|v| !v.is_null()) {
        return Err(unsupported(
            "clip_qkv",
            clip,
            "query/key/value clipping is not implemented",
        ));
    }
    if let Some(f) = raw
        .moe_router_score_function
        .as_deref()
        .filter(|&f| f != "softmax")
    {
        return Err(unsupported(
            "moe_router_score_function",
            f,
            "LLaDA-MoE's router is a softmax over the experts",
        ));
    }
    // The reference's mixture block hard-codes `norm_topk_prob = False` and applies no
    // scaling and no expert groups whatever the config says: a file asking for them asks for
    // a model the reference does not compute, so it is refused rather than half-followed.
    if raw.norm_topk_prob == Some(true) {
        return Err(unsupported(
            "norm_topk_prob",
            true,
            "LLaDA-MoE's reference never renormalises the chosen experts' weights",
        ));
    }
    if let Some(scale) = raw.routed_scaling_factor.filter(|&s| s != 1.0) {
        return Err(unsupported(
            "routed_scaling_factor",
            scale,
            "LLaDA-MoE's reference does not scale the experts' weights",
        ));
    }
    for (field, groups) in [
        ("router_num_group", raw.router_num_group),
        ("router_topk_group", raw.router_topk_group),
    ] {
        if let Some(g) = groups.filter(|&g| g > 1) {
            return Err(unsupported(
                field,
                g,
                "LLaDA-MoE's reference routes without expert groups",
            ));
        }
    }
    let heads = raw.num_attention_heads.max(1);
    let head_dim = raw.hidden_size / heads;
    if let Some(hd) = raw.head_dim.filter(|&hd| hd != head_dim) {
        return Err(unsupported(
            "head_dim",
            hd,
            "LLaDA-MoE's heads are hidden_size / num_attention_heads wide",
        ));
    }
    let rotary_dim = match raw.partial_rotary_factor {
        None => head_dim,
        // The reference truncates `head_dim * factor`; the small margin keeps a factor written
        // as rotary / head_dim (a GGUF file's) from landing one below.
        Some(f) if f > 0.0 && f <= 1.0 => (head_dim as f64 * f + 1e-9) as usize,
        Some(f) => {
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
    if experts_per_token > experts {
        return Err(invalid(
            "num_experts_per_tok",
            format!("{experts_per_token} is more than num_experts {experts}"),
        ));
    }
    let expert_hidden_size = positive("expert_intermediate_size", raw.expert_intermediate_size)?;
    // Null, absent or the class's -1: no shared expert. (The reference builds one whenever
    // the key is not null; a -1 there would not build at all.)
    let shared_expert_hidden_size = match raw.shared_expert_intermediate_size {
        None | Some(0) => None,
        Some(n) if n < 0 => None,
        Some(n) => Some(positive("shared_expert_intermediate_size", n)?),
    };
    let layers: Option<Vec<bool>> = match &raw.moe_layer_freq {
        None => None,
        Some(v) => {
            if v.len() != raw.num_hidden_layers {
                return Err(invalid(
                    "moe_layer_freq",
                    format!(
                        "has {} entries for num_hidden_layers {}",
                        v.len(),
                        raw.num_hidden_layers
                    ),
                ));
            }
            let layers = v
                .iter()
                .map(|&f| match f {
                    0 => Ok(false),
                    1 => Ok(true),
                    other => Err(invalid(
                        "moe_layer_freq",
                        format!("entry {other} must be 0 (dense) or 1 (mixture)"),
                    )),
                })
                .collect::<Result<Vec<bool>, _>>()?;
            // Every layer a mixture: the same as no list.
            (!layers.iter().all(|&m| m)).then_some(layers)
        }
    };
    let dense = raw.dense_intermediate_size.filter(|&n| n > 0);
    let mlp_hidden_size = match dense {
        Some(n) => n as usize,
        None if layers.is_none() => expert_hidden_size,
        None => {
            return Err(invalid(
                "dense_intermediate_size",
                "must be positive: moe_layer_freq has dense layers".into(),
            ));
        }
    };
    let mask_token_id = match raw.mask_token_id.and_then(|id| id.first()) {
        Some(id) => Some(id),
        None => (raw.vocab_size > RELEASE_MASK_ID as usize).then_some(RELEASE_MASK_ID),
    };
    Config {
        family: Family::LladaMoe,
        d_model: raw.hidden_size,
        n_heads: raw.num_attention_heads,
        n_kv_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
        head_dim,
        n_layers: raw.num_hidden_layers,
        mlp_hidden_size,
        vocab_size: raw.vocab_size,
        embedding_size: raw.vocab_size,
        rope_theta: raw.rope_theta,
        rms_norm_eps: raw.rms_norm_eps,
        max_sequence_length: raw.max_position_embeddings,
        weight_tying: raw.tie_word_embeddings.unwrap_or(false),
        qkv_bias: false,
        rotary_dim,
        shifted_logits: raw.shift_logits.unwrap_or(false),
        mask_token_id,
        eos_token_id: raw.eos_token_id.and_then(|id| id.first()),
        pad_token_id: raw.pad_token_id.and_then(|id| id.first()),
        qk_norm: raw.qk_layernorm.unwrap_or(false),
        fused_qkv: false,
        attn_out_bias: false,
        block_causal: false,
        moe: Some(MoeConfig {
            experts,
            experts_per_token,
            expert_hidden_size,
            shared_expert_hidden_size,
            expert_bias: raw.moe_router_enable_expert_bias.unwrap_or(false),
            normalize_weights: false,
            gating: Gating::Softmax,
            weight_scale: 1.0,
            layers,
        }),
    }
    .checked(&KEYS)
}

/// The checkpoint's name of a tensor.
pub(super) fn checkpoint_name(tensor: Tensor, layer: usize) -> String {
    let layer_tensor = |name: &str| format!("model.layers.{layer}.{name}");
    let expert = |e: usize, name: &str| format!("model.layers.{layer}.mlp.experts.{e}.{name}");
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
        Tensor::QueryNorm => layer_tensor("self_attn.q_norm.weight"),
        Tensor::KeyNorm => layer_tensor("self_attn.k_norm.weight"),
        Tensor::AttnOut => layer_tensor("self_attn.o_proj.weight"),
        Tensor::MlpNorm => layer_tensor("post_attention_layernorm.weight"),
        Tensor::Gate => layer_tensor("mlp.gate_proj.weight"),
        Tensor::Up => layer_tensor("mlp.up_proj.weight"),
        Tensor::Down => layer_tensor("mlp.down_proj.weight"),
        Tensor::Router => layer_tensor("mlp.gate.weight"),
        Tensor::ExpertBias => layer_tensor("mlp.expert_bias"),
        Tensor::ExpertGate(e) => expert(e, "gate_proj.weight"),
        Tensor::ExpertUp(e) => expert(e, "up_proj.weight"),
        Tensor::ExpertDown(e) => expert(e, "down_proj.weight"),
        // The reference hangs the shared expert on the decoder layer, beside `mlp`.
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

/// The `config.json` of a `llada-moe` GGUF file's hyper-parameters, in LLaDA-MoE's keys.
pub(super) fn gguf_config(g: &GgufConfig) -> serde_json::Value {
    let mut config = serde_json::json!({
        "architectures": ["LLaDAMoEModelLM"],
        "model_type": "llada",
        "hidden_size": g.d_model,
        "num_attention_heads": g.n_heads,
        "num_key_value_heads": g.n_kv_heads,
        "num_hidden_layers": g.n_layers,
        // Rows of the embedding: the logits' width (the tokenizer may have fewer tokens).
        "vocab_size": g.embedding_size,
        "max_position_embeddings": g.max_sequence_length,
        "rms_norm_eps": g.rms_norm_eps,
        "rope_theta": g.rope_theta,
        "hidden_act": "silu",
        "tie_word_embeddings": g.weight_tying,
        // llama.cpp's graph always normalises q and k per head for this architecture.
        "qk_layernorm": true,
        "norm_topk_prob": false,
    });
    if g.mlp_hidden_size > 0 {
        config["dense_intermediate_size"] = g.mlp_hidden_size.into();
    }
    if let Some(n) = g.expert_count {
        config["num_experts"] = n.into();
    }
    if let Some(k) = g.expert_used_count {
        config["num_experts_per_tok"] = k.into();
    }
    // llama.cpp's fallback when the file has no expert width: n_ff / n_expert_used.
    let width = g.expert_feed_forward_length.or_else(|| {
        g.expert_used_count
            .filter(|&k| k > 0 && g.mlp_hidden_size > 0)
            .map(|k| g.mlp_hidden_size / k)
    });
    if let Some(w) = width {
        config["expert_intermediate_size"] = w.into();
    }
    if let Some(rotary) = g
        .rotary_dim
        .filter(|&r| g.n_heads > 0 && r != g.d_model / g.n_heads)
    {
        config["partial_rotary_factor"] = (rotary as f64 / (g.d_model / g.n_heads) as f64).into();
    }
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
