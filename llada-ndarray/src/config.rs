//! The checked description of a model that the forward pass reads, whatever family's files it
//! came from: sizes, special ids, and what the family does differently (biases, rotary
//! dimensions, shifted logits). Each family's `config.json` keys are read in its own file
//! under `models/`.

use std::path::Path;

use crate::error::LoadError;
use crate::models::{Family, Tensor};

/// A checked model configuration: the shared description every family's files map onto.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The family whose files these are.
    pub family: Family,
    /// Hidden size.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// `d_model / n_heads`.
    pub head_dim: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Width of the SwiGLU hidden layer.
    pub mlp_hidden_size: usize,
    /// Tokenizer vocabulary size.
    pub vocab_size: usize,
    /// Rows of the embedding and of the LM head (the width of a logits row).
    pub embedding_size: usize,
    /// Rotary embedding base.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Longest sequence.
    pub max_sequence_length: usize,
    /// Whether the LM head reuses the token embedding.
    pub weight_tying: bool,
    /// Whether the query, key and value projections have biases (Dream's, Qwen2's).
    pub qkv_bias: bool,
    /// Leading dimensions of each query and key head that are rotated (rotate-half, over pairs
    /// `rotary_dim / 2` apart); the rest pass through. `head_dim` for LLaDA and Dream.
    pub rotary_dim: usize,
    /// Whether position `i`'s prediction is output row `i − 1` (Dream), which the sampler
    /// applies ([`llada_core::MaskPredictor::shifted_logits`]).
    pub shifted_logits: bool,
    /// `mask_token_id`, if the file has it.
    pub mask_token_id: Option<u32>,
    /// `eos_token_id`, if the file has it.
    pub eos_token_id: Option<u32>,
    /// `pad_token_id`, if the file has it.
    pub pad_token_id: Option<u32>,
    /// Whether each head's queries and keys go through an RMSNorm of their own (over the
    /// head's dimensions, one weight per dimension shared by the heads) before the rotary
    /// embedding: LLaDA-MoE's `qk_layernorm`.
    pub qk_norm: bool,
    /// Whether the checkpoint stores the query, key and value projections as one fused
    /// matrix (rows: the query heads, then the key heads, then the value heads; LLaDA2's
    /// `query_key_value`), with its bias fused the same way when `qkv_bias` is set.
    pub fused_qkv: bool,
    /// Whether the attention's output projection has a bias (LLaDA2's `use_bias`).
    pub attn_out_bias: bool,
    /// Whether the model was trained with block-causal attention (LLaDA2.x's block
    /// diffusion): it is decoded on the absolute block grid and a prefix cache is exact.
    pub block_causal: bool,
    /// The mixture-of-experts MLP, for the families that have one (LLaDA-MoE); `None`: every
    /// layer's MLP is the dense SwiGLU of `mlp_hidden_size`.
    pub moe: Option<MoeConfig>,
}

/// A mixture-of-experts MLP: a router picks `experts_per_token` of `experts` SwiGLU experts
/// for each token and the layer's output is their weighted sum (plus a shared expert that
/// every token goes through, when the model has one).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MoeConfig {
    /// Experts per layer.
    pub experts: usize,
    /// Experts each token goes through (top-k of the router's scores).
    pub experts_per_token: usize,
    /// Width of each expert's SwiGLU hidden layer.
    pub expert_hidden_size: usize,
    /// Width of the shared expert's hidden layer, if the layers have one.
    pub shared_expert_hidden_size: Option<usize>,
    /// Whether a per-expert bias (a tensor of the checkpoint) is added to the router's
    /// probabilities before the choice, and stays in the weights (LLaDA-MoE's `expert_bias`).
    pub expert_bias: bool,
    /// Whether the chosen experts' weights are divided by their sum (`norm_topk_prob`);
    /// LLaDA-MoE's are not.
    pub normalize_weights: bool,
    /// How the router's logits become scores.
    pub gating: Gating,
    /// Every chosen expert's weight is multiplied by this (`routed_scaling_factor`; 1 for
    /// LLaDA-MoE, 2.5 in LLaDA2's release).
    pub weight_scale: f32,
    /// Per layer, whether its MLP is the mixture (else the dense SwiGLU of
    /// [`Config::mlp_hidden_size`]); `None`: every layer's is (nothing is allocated per layer
    /// for a configuration that claims a trillion of them).
    pub layers: Option<Vec<bool>>,
}

/// How a router turns its logits into the scores experts are chosen by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Gating {
    /// A softmax over every expert (f32); the expert bias, if any, is added to the
    /// probabilities and stays in the weights (LLaDA-MoE).
    Softmax,
    /// A sigmoid per expert (f32); the expert bias, if any, is added only to choose, and the
    /// weights are the unbiased scores. The experts are in `groups` groups of equal size; each
    /// group is scored by the sum of its two best biased scores, the `used_groups` best
    /// groups are kept and the top-k taken among their experts (LLaDA2's
    /// `group_limited_topk`; one group is plain top-k).
    Sigmoid {
        /// Groups of experts (`n_group`).
        groups: usize,
        /// Groups kept per token (`topk_group`).
        used_groups: usize,
    },
}

impl MoeConfig {
    /// Whether layer `layer`'s MLP is the mixture.
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        self.layers
            .as_ref()
            .is_none_or(|l| l.get(layer).copied().unwrap_or(false))
    }

    /// The invariants the forward pass relies on, for a configuration built or changed by
    /// hand (a `config.json` is checked when read): at least one expert per token, no more
    /// than there are, experts of positive width.
    pub(crate) fn check(&self) -> Result<(), LoadError> {
        if self.experts == 0 || self.experts_per_token == 0 || self.experts_per_token > self.experts
        {
            return Err(invalid(
                "num_experts_per_tok",
                format!(
                    "{} must be between 1 and the {} experts",
                    self.experts_per_token, self.experts
                ),
            ));
        }
        if let Gating::Sigmoid {
            groups,
            used_groups,
        } = self.gating
        {
            let size = self.experts.checked_div(groups).unwrap_or(0);
            if groups == 0 || !self.experts.is_multiple_of(groups) || (groups > 1 && size < 2) {
                return Err(invalid(
                    "n_group",
                    format!(
                        "{groups} groups must split the {} experts evenly, at least two per group",
                        self.experts
                    ),
                ));
            }
            if used_groups == 0
                || used_groups > groups
                || used_groups * size < self.experts_per_token
            {
                return Err(invalid(
                    "topk_group",
                    format!(
                        "{used_groups} groups of {size} experts must be between 1 and the {groups} groups and hold the {} experts per token",
                        self.experts_per_token
                    ),
                ));
            }
        }
        if !(self.weight_scale.is_finite()) {
            return Err(invalid(
                "routed_scaling_factor",
                format!("{} must be finite", self.weight_scale),
            ));
        }
        if self.expert_hidden_size == 0 || self.shared_expert_hidden_size == Some(0) {
            return Err(invalid(
                "expert_intermediate_size",
                "experts must be wider than 0".into(),
            ));
        }
        Ok(())
    }
}

pub(crate) fn unsupported(
    field: &'static str,
    value: impl ToString,
    reason: &'static str,
) -> LoadError {
    LoadError::Unsupported {
        field,
        value: value.to_string(),
        reason,
    }
}

pub(crate) fn invalid(field: &'static str, reason: String) -> LoadError {
    LoadError::InvalidConfig { field, reason }
}

/// A positive size, or the key named as invalid.
pub(crate) fn positive(field: &'static str, value: i64) -> Result<usize, LoadError> {
    usize::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| invalid(field, format!("{value} must be positive")))
}

/// What every Hugging Face family's forward pass here assumes, refused by name otherwise: a
/// SiLU-gated MLP (`hidden_act`) and unscaled rotary embeddings (`rope_scaling` null).
pub(crate) fn silu_and_plain_rope(
    hidden_act: Option<&str>,
    rope_scaling: Option<&serde_json::Value>,
) -> Result<(), LoadError> {
    if let Some(act) = hidden_act.filter(|&a| a != "silu") {
        return Err(unsupported(
            "hidden_act",
            act,
            "only SiLU-gated MLPs are implemented",
        ));
    }
    if let Some(scaling) = rope_scaling.filter(|v| !v.is_null()) {
        return Err(unsupported(
            "rope_scaling",
            scaling,
            "scaled rotary embeddings are not implemented",
        ));
    }
    Ok(())
}

/// A family's `config.json` names for the sizes every family has, so that errors name the
/// key the user's file has.
pub(crate) struct Keys {
    pub(crate) d_model: &'static str,
    pub(crate) n_heads: &'static str,
    pub(crate) n_kv_heads: &'static str,
    pub(crate) n_layers: &'static str,
    pub(crate) mlp_hidden_size: &'static str,
    pub(crate) vocab_size: &'static str,
    pub(crate) max_sequence_length: &'static str,
}

/// Every `field` of `object` that must be there (present and not null).
pub(crate) fn require(
    object: &serde_json::Map<String, serde_json::Value>,
    fields: &[&'static str],
) -> Result<(), LoadError> {
    for &field in fields {
        if object.get(field).is_none_or(serde_json::Value::is_null) {
            return Err(LoadError::MissingField { field });
        }
    }
    Ok(())
}

/// Deserialises a family's raw `config.json` fields, naming the field whose value has the wrong
/// type.
pub(crate) fn raw<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, LoadError> {
    serde_path_to_error::deserialize(value).map_err(|e| LoadError::ConfigField {
        field: e.path().to_string(),
        reason: e.into_inner().to_string(),
    })
}

impl Config {
    /// Reads and checks `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text).map_err(|e| match e {
            LoadError::ConfigJson { path: _, source } => LoadError::ConfigJson {
                path: Some(path.to_path_buf()),
                source,
            },
            other => other,
        })
    }

    /// Parses and checks the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self, LoadError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|source| LoadError::ConfigJson { path: None, source })?;
        Self::from_value(value)
    }

    /// Checks an already parsed `config.json` (so that a caller that reads the file once for
    /// other fields hands the same value to the backend). The family comes from its
    /// `model_type` (or `architectures`); a LLaDA file is recognised by its OLMo keys.
    pub fn from_value(value: serde_json::Value) -> Result<Self, LoadError> {
        if !value.is_object() {
            return Err(invalid("config", "is not a JSON object".into()));
        }
        Family::of_config(&value)?.config(value)
    }

    /// The invariants every family shares, with errors that name the family's own keys:
    /// positive sizes, heads that divide the hidden size and the key/value heads, even rotary
    /// dimensions, finite θ and epsilon, special ids inside the embedding.
    pub(crate) fn checked(self, keys: &Keys) -> Result<Self, LoadError> {
        for (field, value) in [
            (keys.d_model, self.d_model),
            (keys.n_heads, self.n_heads),
            (keys.n_layers, self.n_layers),
            (keys.vocab_size, self.vocab_size),
            (keys.max_sequence_length, self.max_sequence_length),
            (keys.mlp_hidden_size, self.mlp_hidden_size),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be positive".into()));
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(invalid(
                keys.n_heads,
                format!(
                    "{} does not divide {} {}",
                    self.n_heads, keys.d_model, self.d_model
                ),
            ));
        }
        if self.head_dim != self.d_model / self.n_heads {
            return Err(unsupported(
                "head_dim",
                self.head_dim,
                "only heads of hidden size / attention heads are implemented",
            ));
        }
        if self.rotary_dim == 0
            || !self.rotary_dim.is_multiple_of(2)
            || self.rotary_dim > self.head_dim
        {
            // A rotary part of the head comes from `partial_rotary_factor`.
            let field = if self.rotary_dim == self.head_dim {
                keys.n_heads
            } else {
                "partial_rotary_factor"
            };
            return Err(invalid(
                field,
                format!(
                    "rotary dimensions {} must be even, positive and at most the head dimension {}",
                    self.rotary_dim, self.head_dim
                ),
            ));
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(invalid(
                keys.n_kv_heads,
                format!(
                    "{} does not divide {} {}",
                    self.n_kv_heads, keys.n_heads, self.n_heads
                ),
            ));
        }
        if self.embedding_size < self.vocab_size {
            return Err(invalid(
                "embedding_size",
                format!(
                    "{} is smaller than vocab_size {}",
                    self.embedding_size, self.vocab_size
                ),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(invalid(
                "rope_theta",
                format!("{} must be positive", self.rope_theta),
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(invalid(
                "rms_norm_eps",
                format!("{} must be non-negative", self.rms_norm_eps),
            ));
        }
        for (field, id) in [
            ("mask_token_id", self.mask_token_id),
            ("eos_token_id", self.eos_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            if let Some(id) = id
                && id as usize >= self.embedding_size
            {
                return Err(invalid(
                    field,
                    format!(
                        "{id} is outside the embedding of {} rows",
                        self.embedding_size
                    ),
                ));
            }
        }
        Ok(self)
    }

    /// Width of an expert's hidden layer (0 without experts).
    pub(crate) fn expert_width(&self) -> usize {
        self.moe.as_ref().map_or(0, |m| m.expert_hidden_size)
    }

    /// Width of the shared expert's hidden layer (0 without one).
    pub(crate) fn shared_width(&self) -> usize {
        self.moe
            .as_ref()
            .and_then(|m| m.shared_expert_hidden_size)
            .unwrap_or(0)
    }

    /// Whether layer `layer`'s MLP is a mixture of experts.
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| m.is_moe_layer(layer))
    }

    /// Parameter count of the weights this configuration implies (saturating: a
    /// configuration that claims more than `usize` holds reports `usize::MAX`).
    pub fn parameter_count(&self) -> usize {
        self.tensors().fold(0usize, |total, (_, shape)| {
            total.saturating_add(shape.iter().fold(1usize, |n, &d| n.saturating_mul(d)))
        })
    }

    /// Every tensor name of a checkpoint with this configuration and its expected shape, in
    /// the order the family's own code declares them.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors().collect()
    }

    /// [`tensor_shapes`](Self::tensor_shapes), one at a time: checking a file against a
    /// configuration that claims a billion layers stops at the first missing tensor instead of
    /// listing them all first.
    pub fn tensors(&self) -> impl Iterator<Item = (String, Vec<usize>)> + '_ {
        self.roles().map(|(tensor, layer)| {
            (
                self.family.checkpoint_name(tensor, layer),
                self.shape(tensor),
            )
        })
    }

    /// Every tensor of the model by role (and layer, 0 for the others), in the order of the
    /// family's checkpoints: the embedding, each block, the final norm, the head (when not
    /// tied).
    pub(crate) fn roles(&self) -> impl Iterator<Item = (Tensor, usize)> + '_ {
        let blocks = (0..self.n_layers).flat_map(move |i| self.block_roles(i).map(move |t| (t, i)));
        let head = (!self.weight_tying).then_some((Tensor::Head, 0));
        std::iter::once((Tensor::Embedding, 0))
            .chain(blocks)
            .chain(std::iter::once((Tensor::FinalNorm, 0)))
            .chain(head)
    }

    /// The tensors of block `layer`, in checkpoint order: attention (biases and query/key
    /// norms where the model has them), then the dense MLP or the router and the experts.
    pub(crate) fn block_roles(&self, layer: usize) -> Box<dyn Iterator<Item = Tensor> + '_> {
        let attention = if self.fused_qkv {
            &Tensor::FUSED_ATTENTION[..]
        } else {
            &Tensor::ATTENTION[..]
        };
        let attention = attention
            .iter()
            .copied()
            .filter(move |t| self.qkv_bias || !t.is_bias())
            .filter(move |t| self.qk_norm || !t.is_qk_norm())
            .filter(move |t| self.attn_out_bias || *t != Tensor::AttnOutBias);
        let mlp_norm = std::iter::once(Tensor::MlpNorm);
        match self.moe.as_ref().filter(|m| m.is_moe_layer(layer)) {
            None => Box::new(attention.chain(mlp_norm).chain(Tensor::DENSE_MLP)),
            Some(moe) => {
                let bias = moe.expert_bias.then_some(Tensor::ExpertBias);
                let experts = (0..moe.experts).flat_map(|e| {
                    [
                        Tensor::ExpertGate(e),
                        Tensor::ExpertUp(e),
                        Tensor::ExpertDown(e),
                    ]
                });
                let shared = moe
                    .shared_expert_hidden_size
                    .map(|_| Tensor::SHARED_EXPERT)
                    .into_iter()
                    .flatten();
                Box::new(
                    attention
                        .chain(mlp_norm)
                        .chain(std::iter::once(Tensor::Router))
                        .chain(bias)
                        .chain(experts)
                        .chain(shared),
                )
            }
        }
    }

    /// The shape of a tensor, `[rows, cols]` as PyTorch stores a linear layer (`[out, in]`).
    pub(crate) fn shape(&self, tensor: Tensor) -> Vec<usize> {
        let (d, q, kv, mlp) = (
            self.d_model,
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
            self.mlp_hidden_size,
        );
        match tensor {
            Tensor::Embedding | Tensor::Head => vec![self.embedding_size, d],
            Tensor::FinalNorm | Tensor::AttnNorm | Tensor::MlpNorm => vec![d],
            Tensor::Query => vec![q, d],
            Tensor::Key | Tensor::Value => vec![kv, d],
            Tensor::QueryBias => vec![q],
            Tensor::Qkv => vec![q + 2 * kv, d],
            Tensor::QkvBias => vec![q + 2 * kv],
            Tensor::AttnOutBias => vec![d],
            Tensor::KeyBias | Tensor::ValueBias => vec![kv],
            Tensor::AttnOut => vec![d, q],
            Tensor::Gate | Tensor::Up => vec![mlp, d],
            Tensor::Down => vec![d, mlp],
            Tensor::QueryNorm | Tensor::KeyNorm => vec![self.head_dim],
            Tensor::Router | Tensor::ExpertBias => {
                let experts = self.moe.as_ref().map_or(0, |m| m.experts);
                if tensor == Tensor::Router {
                    vec![experts, d]
                } else {
                    vec![experts]
                }
            }
            Tensor::ExpertGate(_) | Tensor::ExpertUp(_) => vec![self.expert_width(), d],
            Tensor::ExpertDown(_) => vec![d, self.expert_width()],
            Tensor::SharedGate | Tensor::SharedUp => vec![self.shared_width(), d],
            Tensor::SharedDown => vec![d, self.shared_width()],
        }
    }
}
