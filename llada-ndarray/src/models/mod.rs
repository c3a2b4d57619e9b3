//! Model families. Each file here reads one family's files onto the shared [`Config`]: its
//! `config.json` keys, its checkpoint's tensor names, and its GGUF architecture; the forward
//! pass (`context.rs`) reads only the description. Adding a dense family is a file here, a
//! variant of [`Family`] with its arms below, its fixture and its tests.
//!
//! | | LLaDA | Dream | LLaDA-MoE |
//! |---|---|---|---|
//! | attention | grouped-query, no biases | grouped-query, q/k/v biases | grouped-query, no biases, RMSNorm over each head's q and k |
//! | rotary embedding | rotate-half, whole head; GGUF q/k rows interleaved for llama.cpp | rotate-half, whole head; GGUF rows as the checkpoint | rotate-half (partial if the config says); GGUF rows as the checkpoint |
//! | mask | bidirectional | bidirectional | bidirectional |
//! | MLP | SwiGLU | SwiGLU | mixture of SwiGLU experts: softmax router, top-k, weights not renormalised |
//! | head | untied (or tied) | untied (or tied) | untied (or tied) |
//! | logits | unshifted | shifted: position i reads row i − 1 | unshifted |

mod dream;
mod llada;
pub(crate) mod llada2;
mod llada_moe;

use crate::config::Config;
use crate::error::LoadError;
use crate::gguf::{GgufFile, Value};

/// A token id field: Hugging Face configs allow a list (the first is used).
#[derive(Clone, Debug, serde::Deserialize, PartialEq)]
#[serde(untagged)]
pub(super) enum Id {
    One(u32),
    Many(Vec<u32>),
}

impl Id {
    pub(super) fn first(&self) -> Option<u32> {
        match self {
            Id::One(id) => Some(*id),
            Id::Many(ids) => ids.first().copied(),
        }
    }
}

/// A model family this backend runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Family {
    /// LLaDA-8B and LLaDA-1.5 (GSAI-ML): `config.json` with OLMo's keys (`model_type`
    /// `llada`), GGUF architecture `llada`.
    Llada,
    /// Dream-v0-7B (HKUNLP), DiffuCoder, Dream-Coder: a Qwen2 body (`model_type` `Dream`),
    /// GGUF architecture `dream`, logits shifted by one position.
    Dream,
    /// LLaDA-MoE-7B-A1B (inclusionAI / GSAI-ML): `config.json` with `model_type` `llada` and
    /// `architectures` `LLaDAMoEModelLM`, GGUF architecture `llada-moe`; a mixture-of-experts
    /// MLP and per-head query/key norms.
    LladaMoe,
    /// LLaDA2.0 and LLaDA2.1 (inclusionAI): `config.json` with `model_type` `llada2_moe`,
    /// our GGUF architecture `llada2`; block diffusion (block-causal attention), a fused
    /// query/key/value projection, sigmoid group-limited routing with a shared expert.
    Llada2,
}

/// One tensor of a model, by what it is for (every family has these; a family's file names
/// them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tensor {
    Embedding,
    AttnNorm,
    Query,
    Key,
    Value,
    QueryBias,
    KeyBias,
    ValueBias,
    AttnOut,
    MlpNorm,
    Gate,
    Up,
    Down,
    FinalNorm,
    Head,
    /// RMSNorm weight of each query head (`head_dim`).
    QueryNorm,
    /// RMSNorm weight of each key head (`head_dim`).
    KeyNorm,
    /// The mixture's router, `[experts, d_model]`.
    Router,
    /// The router's per-expert bias, `[experts]`.
    ExpertBias,
    /// Expert `e`'s gate projection.
    ExpertGate(usize),
    /// Expert `e`'s up projection.
    ExpertUp(usize),
    /// Expert `e`'s down projection.
    ExpertDown(usize),
    /// The shared expert's gate projection.
    SharedGate,
    /// The shared expert's up projection.
    SharedUp,
    /// The shared expert's down projection.
    SharedDown,
    /// The query, key and value projections fused (LLaDA2's `query_key_value`).
    Qkv,
    /// Their biases, fused the same way.
    QkvBias,
    /// The attention output projection's bias.
    AttnOutBias,
}

impl Tensor {
    /// A block's attention tensors, in checkpoint order (biases and norms only where the
    /// family has them).
    pub(crate) const ATTENTION: [Tensor; 10] = [
        Tensor::AttnNorm,
        Tensor::Query,
        Tensor::Key,
        Tensor::Value,
        Tensor::QueryBias,
        Tensor::KeyBias,
        Tensor::ValueBias,
        Tensor::QueryNorm,
        Tensor::KeyNorm,
        Tensor::AttnOut,
    ];

    /// A dense MLP's projections.
    pub(crate) const DENSE_MLP: [Tensor; 3] = [Tensor::Gate, Tensor::Up, Tensor::Down];

    /// The shared expert's projections.
    pub(crate) const SHARED_EXPERT: [Tensor; 3] =
        [Tensor::SharedGate, Tensor::SharedUp, Tensor::SharedDown];

    /// The fused attention tensors, in checkpoint order (LLaDA2).
    pub(crate) const FUSED_ATTENTION: [Tensor; 7] = [
        Tensor::AttnNorm,
        Tensor::Qkv,
        Tensor::QkvBias,
        Tensor::QueryNorm,
        Tensor::KeyNorm,
        Tensor::AttnOut,
        Tensor::AttnOutBias,
    ];

    pub(crate) fn is_bias(self) -> bool {
        matches!(
            self,
            Tensor::QueryBias | Tensor::KeyBias | Tensor::ValueBias | Tensor::QkvBias
        )
    }

    pub(crate) fn is_qk_norm(self) -> bool {
        matches!(self, Tensor::QueryNorm | Tensor::KeyNorm)
    }

    /// llama.cpp's name of this tensor (of block `layer`), the same for every architecture.
    /// The experts of a layer are one three-dimensional tensor in llama.cpp's files
    /// (`ffn_gate_exps` and so on, `[experts, rows, cols]`): every expert's name is that
    /// tensor's.
    pub(crate) fn gguf_name(self, layer: usize) -> String {
        let block = |name: &str| format!("blk.{layer}.{name}");
        match self {
            Tensor::Embedding => "token_embd.weight".into(),
            Tensor::FinalNorm => "output_norm.weight".into(),
            Tensor::Head => "output.weight".into(),
            Tensor::AttnNorm => block("attn_norm.weight"),
            Tensor::Query => block("attn_q.weight"),
            Tensor::Key => block("attn_k.weight"),
            Tensor::Value => block("attn_v.weight"),
            Tensor::QueryBias => block("attn_q.bias"),
            Tensor::KeyBias => block("attn_k.bias"),
            Tensor::ValueBias => block("attn_v.bias"),
            Tensor::AttnOut => block("attn_output.weight"),
            Tensor::MlpNorm => block("ffn_norm.weight"),
            Tensor::Gate => block("ffn_gate.weight"),
            Tensor::Up => block("ffn_up.weight"),
            Tensor::Down => block("ffn_down.weight"),
            Tensor::QueryNorm => block("attn_q_norm.weight"),
            Tensor::KeyNorm => block("attn_k_norm.weight"),
            Tensor::Router => block("ffn_gate_inp.weight"),
            Tensor::ExpertBias => block("exp_probs_b.bias"),
            Tensor::ExpertGate(_) => block("ffn_gate_exps.weight"),
            Tensor::ExpertUp(_) => block("ffn_up_exps.weight"),
            Tensor::ExpertDown(_) => block("ffn_down_exps.weight"),
            Tensor::SharedGate => block("ffn_gate_shexp.weight"),
            Tensor::SharedUp => block("ffn_up_shexp.weight"),
            Tensor::SharedDown => block("ffn_down_shexp.weight"),
            Tensor::Qkv => block("attn_qkv.weight"),
            Tensor::QkvBias => block("attn_qkv.bias"),
            Tensor::AttnOutBias => block("attn_output.bias"),
        }
    }
}

impl Family {
    /// The name used in files and messages: `"llada"`, `"dream"`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Llada => "llada",
            Family::Dream => "dream",
            Family::LladaMoe => "llada-moe",
            Family::Llada2 => "llada2",
        }
    }

    /// The family of a `config.json`: its `model_type` or `architectures`, else LLaDA's OLMo
    /// keys (`d_model`, whatever the `model_type`: LLaDA fine-tunes rename it). Anything else
    /// is [`LoadError::Unsupported`].
    pub(crate) fn of_config(value: &serde_json::Value) -> Result<Self, LoadError> {
        let model_type = value.get("model_type").and_then(serde_json::Value::as_str);
        let architectures: Vec<&str> = value
            .get("architectures")
            .and_then(serde_json::Value::as_array)
            .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        let is = |types: &[&str], classes: &[&str]| {
            model_type.is_some_and(|t| types.iter().any(|k| k.eq_ignore_ascii_case(t)))
                || architectures.iter().any(|a| classes.contains(a))
        };
        if is(dream::MODEL_TYPES, dream::ARCHITECTURES) {
            Ok(Family::Dream)
        } else if is(llada2::MODEL_TYPES, llada2::ARCHITECTURES) {
            Ok(Family::Llada2)
        } else if is(llada_moe::MODEL_TYPES, llada_moe::ARCHITECTURES)
            || (is(llada::MODEL_TYPES, &[])
                && value.get("num_experts").is_some()
                && value.get("d_model").is_none())
        {
            // LLaDA-MoE's `config.json` says `model_type: "llada"` as LLaDA-8B's does; its
            // class (or its Qwen-style keys with experts) tells them apart.
            Ok(Family::LladaMoe)
        } else if is(llada::MODEL_TYPES, llada::ARCHITECTURES) || value.get("d_model").is_some() {
            Ok(Family::Llada)
        } else {
            Err(LoadError::Unsupported {
                field: "model_type",
                value: model_type.unwrap_or("(none)").to_string(),
                reason: "the ndarray backend runs LLaDA (\"llada\"), LLaDA-MoE (\"llada\" with `LLaDAMoEModelLM`), LLaDA2.x (\"llada2_moe\") and Dream (\"Dream\") models",
            })
        }
    }

    /// The family of a GGUF architecture name, if this backend runs it.
    pub(crate) fn of_gguf_arch(arch: &str) -> Option<Self> {
        [
            Family::Llada,
            Family::Dream,
            Family::LladaMoe,
            Family::Llada2,
        ]
        .into_iter()
        .find(|f| f.gguf_arch() == arch)
    }

    /// Reads and checks a `config.json` of this family.
    pub(crate) fn config(self, value: serde_json::Value) -> Result<Config, LoadError> {
        match self {
            Family::Llada => llada::config(value),
            Family::Dream => dream::config(value),
            Family::LladaMoe => llada_moe::config(value),
            Family::Llada2 => llada2::config(value),
        }
    }

    /// The name of `tensor` (of block `layer`) in this family's safetensors checkpoints.
    pub(crate) fn checkpoint_name(self, tensor: Tensor, layer: usize) -> String {
        match self {
            Family::Llada => llada::checkpoint_name(tensor, layer),
            Family::Dream => dream::checkpoint_name(tensor, layer),
            Family::LladaMoe => llada_moe::checkpoint_name(tensor, layer),
            Family::Llada2 => llada2::checkpoint_name(tensor, layer),
        }
    }

    /// llama.cpp's architecture name (`general.architecture`).
    pub fn gguf_arch(self) -> &'static str {
        match self {
            Family::Llada => llada::GGUF_ARCH,
            Family::Dream => dream::GGUF_ARCH,
            Family::LladaMoe => llada_moe::GGUF_ARCH,
            Family::Llada2 => llada2::GGUF_ARCH,
        }
    }

    /// Whether llama.cpp's converter interleaves the rows of each query and key head (for its
    /// "normal" rotary layout): LLaDA's files, whose rows the loader puts back.
    pub(crate) fn gguf_interleaves_qk(self) -> bool {
        match self {
            Family::Llada => llada::GGUF_INTERLEAVED_QK,
            Family::Dream => dream::GGUF_INTERLEAVED_QK,
            Family::LladaMoe => llada_moe::GGUF_INTERLEAVED_QK,
            Family::Llada2 => llada2::GGUF_INTERLEAVED_QK,
        }
    }

    /// The metadata keys of its GGUF architecture.
    pub(crate) fn gguf_keys(self) -> GgufKeys {
        match self {
            Family::Llada => llada::GGUF_KEYS,
            Family::Dream => dream::GGUF_KEYS,
            Family::LladaMoe => llada_moe::GGUF_KEYS,
            Family::Llada2 => llada2::GGUF_KEYS,
        }
    }

    /// The `config.json` a checkpoint with a GGUF file's hyper-parameters would have, in this
    /// family's keys.
    pub(crate) fn gguf_config(self, gguf: &GgufConfig) -> serde_json::Value {
        match self {
            Family::Llada => llada::gguf_config(gguf),
            Family::Dream => dream::gguf_config(gguf),
            Family::LladaMoe => llada_moe::gguf_config(gguf),
            Family::Llada2 => llada2::gguf_config(gguf),
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The hyper-parameters llama.cpp writes for every architecture (`<arch>.*` keys), the special
/// ids of `tokenizer.ggml.*`, and `diffusion.shift_logits` when the file has it.
#[derive(Clone, Debug)]
pub(crate) struct GgufConfig {
    pub(crate) d_model: u64,
    pub(crate) n_heads: u64,
    pub(crate) n_kv_heads: u64,
    pub(crate) n_layers: u64,
    pub(crate) mlp_hidden_size: u64,
    pub(crate) vocab_size: u64,
    pub(crate) embedding_size: u64,
    pub(crate) rope_theta: f64,
    pub(crate) rms_norm_eps: f64,
    pub(crate) max_sequence_length: u64,
    pub(crate) rotary_dim: Option<u64>,
    pub(crate) weight_tying: bool,
    pub(crate) shift_logits: Option<bool>,
    pub(crate) mask_token_id: Option<u64>,
    pub(crate) eos_token_id: Option<u64>,
    pub(crate) pad_token_id: Option<u64>,
    pub(crate) bos_token_id: Option<u64>,
    /// `<arch>.expert_count`, `<arch>.expert_used_count` and
    /// `<arch>.expert_feed_forward_length`, for the architectures with experts.
    pub(crate) expert_count: Option<u64>,
    pub(crate) expert_used_count: Option<u64>,
    pub(crate) expert_feed_forward_length: Option<u64>,
    /// LLaDA2's (`llada2.*`, llama.cpp's `bailingmoe2` names): dense layers first, expert
    /// groups, shared expert width, weight scale, and which biases the file has.
    pub(crate) dense_layers: Option<u64>,
    pub(crate) expert_groups: Option<u64>,
    pub(crate) expert_used_groups: Option<u64>,
    pub(crate) shared_width: Option<u64>,
    pub(crate) weights_scale: Option<f64>,
    pub(crate) qkv_bias: bool,
    pub(crate) attn_out_bias: bool,
    /// Whether the file has per-head query norms, and llama.cpp's gating function id.
    pub(crate) qk_norm: bool,
    pub(crate) gating: Option<u64>,
}

/// The metadata keys of one architecture, `<arch>.embedding_length` and so on.
pub(crate) struct GgufKeys {
    pub(crate) d_model: &'static str,
    pub(crate) n_heads: &'static str,
    pub(crate) n_kv_heads: &'static str,
    pub(crate) n_layers: &'static str,
    pub(crate) mlp_hidden_size: &'static str,
    pub(crate) rope_theta: &'static str,
    pub(crate) rms_norm_eps: &'static str,
    pub(crate) max_sequence_length: &'static str,
    pub(crate) rotary_dim: &'static str,
    pub(crate) expert_count: &'static str,
    pub(crate) expert_used_count: &'static str,
    pub(crate) expert_feed_forward_length: &'static str,
    /// Whether `feed_forward_length` must be there (LLaDA-MoE's converter writes none: every
    /// layer is a mixture).
    pub(crate) dense_mlp_required: bool,
}

/// The [`GgufKeys`] of architecture `$arch`.
macro_rules! gguf_keys {
    ($arch:literal) => {
        $crate::models::GgufKeys {
            d_model: concat!($arch, ".embedding_length"),
            n_heads: concat!($arch, ".attention.head_count"),
            n_kv_heads: concat!($arch, ".attention.head_count_kv"),
            n_layers: concat!($arch, ".block_count"),
            mlp_hidden_size: concat!($arch, ".feed_forward_length"),
            rope_theta: concat!($arch, ".rope.freq_base"),
            rms_norm_eps: concat!($arch, ".attention.layer_norm_rms_epsilon"),
            max_sequence_length: concat!($arch, ".context_length"),
            rotary_dim: concat!($arch, ".rope.dimension_count"),
            expert_count: concat!($arch, ".expert_count"),
            expert_used_count: concat!($arch, ".expert_used_count"),
            expert_feed_forward_length: concat!($arch, ".expert_feed_forward_length"),
            dense_mlp_required: true,
        }
    };
}
use gguf_keys;

fn meta<'a>(file: &'a GgufFile, key: &'static str) -> Result<&'a Value, LoadError> {
    file.get(key).ok_or(LoadError::MissingField { field: key })
}

fn meta_u64(file: &GgufFile, key: &'static str) -> Result<u64, LoadError> {
    meta(file, key)?
        .as_u64()
        .ok_or_else(|| LoadError::ConfigField {
            field: key.to_string(),
            reason: "expected an unsigned integer".into(),
        })
}

fn meta_f64(file: &GgufFile, key: &'static str) -> Result<f64, LoadError> {
    meta(file, key)?
        .as_f64()
        .ok_or_else(|| LoadError::ConfigField {
            field: key.to_string(),
            reason: "expected a number".into(),
        })
}

impl GgufConfig {
    /// Reads the hyper-parameters of a file whose architecture's keys are `keys`.
    pub(crate) fn read(file: &GgufFile, keys: &GgufKeys) -> Result<Self, LoadError> {
        let embedding =
            file.tensor("token_embd.weight")
                .ok_or_else(|| LoadError::MissingTensor {
                    name: "token_embd.weight".into(),
                    expected: Vec::new(),
                })?;
        let embedding_size = embedding.dims.get(1).copied().unwrap_or(0);
        let vocab_size = file
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .map_or(embedding_size, |t| t.len() as u64);
        let n_heads = meta_u64(file, keys.n_heads)?;
        let id = |name: &str| file.get(name).and_then(Value::as_u64);
        let shift_logits = match file.get("diffusion.shift_logits") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                return Err(LoadError::ConfigField {
                    field: "diffusion.shift_logits".into(),
                    reason: "expected a boolean".into(),
                });
            }
        };
        Ok(Self {
            d_model: meta_u64(file, keys.d_model)?,
            n_heads,
            n_kv_heads: file
                .get(keys.n_kv_heads)
                .and_then(Value::as_u64)
                .unwrap_or(n_heads),
            n_layers: meta_u64(file, keys.n_layers)?,
            mlp_hidden_size: if keys.dense_mlp_required {
                meta_u64(file, keys.mlp_hidden_size)?
            } else {
                file.get(keys.mlp_hidden_size)
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            },
            vocab_size,
            embedding_size,
            rope_theta: meta_f64(file, keys.rope_theta)?,
            rms_norm_eps: meta_f64(file, keys.rms_norm_eps)?,
            max_sequence_length: meta_u64(file, keys.max_sequence_length)?,
            rotary_dim: file.get(keys.rotary_dim).and_then(Value::as_u64),
            weight_tying: file.tensor("output.weight").is_none(),
            shift_logits,
            mask_token_id: id("tokenizer.ggml.mask_token_id"),
            eos_token_id: id("tokenizer.ggml.eos_token_id"),
            pad_token_id: id("tokenizer.ggml.padding_token_id"),
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            expert_count: file.get(keys.expert_count).and_then(Value::as_u64),
            expert_used_count: file.get(keys.expert_used_count).and_then(Value::as_u64),
            expert_feed_forward_length: file
                .get(keys.expert_feed_forward_length)
                .and_then(Value::as_u64),
            dense_layers: file.get(llada2::GGUF_DENSE_LAYERS).and_then(Value::as_u64),
            expert_groups: file.get(llada2::GGUF_GROUPS).and_then(Value::as_u64),
            expert_used_groups: file.get(llada2::GGUF_USED_GROUPS).and_then(Value::as_u64),
            shared_width: file.get(llada2::GGUF_SHARED_WIDTH).and_then(Value::as_u64),
            weights_scale: file.get(llada2::GGUF_WEIGHTS_SCALE).and_then(Value::as_f64),
            qkv_bias: file.tensor("blk.0.attn_qkv.bias").is_some(),
            attn_out_bias: file.tensor("blk.0.attn_output.bias").is_some(),
            qk_norm: file.tensor("blk.0.attn_q_norm.weight").is_some(),
            gating: file.get(llada2::GGUF_GATING).and_then(Value::as_u64),
        })
    }
}
