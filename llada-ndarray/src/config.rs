//! `config.json` of a LLaDA checkpoint, with the checkpoint's own field names.

use std::path::Path;

use serde::Deserialize;

use crate::error::LoadError;

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

/// A checked LLaDA model configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
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
    /// `mask_token_id`, if the file has it.
    pub mask_token_id: Option<u32>,
    /// `eos_token_id`, if the file has it.
    pub eos_token_id: Option<u32>,
    /// `pad_token_id`, if the file has it.
    pub pad_token_id: Option<u32>,
}

fn unsupported(field: &'static str, value: impl ToString, reason: &'static str) -> LoadError {
    LoadError::Unsupported {
        field,
        value: value.to_string(),
        reason,
    }
}

fn invalid(field: &'static str, reason: String) -> LoadError {
    LoadError::InvalidConfig { field, reason }
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
    /// other fields hands the same value to the backend).
    pub fn from_value(value: serde_json::Value) -> Result<Self, LoadError> {
        let object = value
            .as_object()
            .ok_or_else(|| invalid("config", "is not a JSON object".into()))?;
        for field in REQUIRED {
            if object.get(field).is_none_or(serde_json::Value::is_null) {
                return Err(LoadError::MissingField { field });
            }
        }
        // serde_path_to_error names the field whose value has the wrong type.
        let raw: RawConfig =
            serde_path_to_error::deserialize(value).map_err(|e| LoadError::ConfigField {
                field: e.path().to_string(),
                reason: e.into_inner().to_string(),
            })?;
        Self::check(raw)
    }

    fn check(raw: RawConfig) -> Result<Self, LoadError> {
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
        Ok(Self {
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
            mask_token_id: raw.mask_token_id,
            eos_token_id: raw.eos_token_id,
            pad_token_id: raw.pad_token_id,
        })
    }

    /// Parameter count of the weights this configuration implies (saturating: a
    /// configuration that claims more than `usize` holds reports `usize::MAX`).
    pub fn parameter_count(&self) -> usize {
        self.tensors().fold(0usize, |total, (_, shape)| {
            total.saturating_add(shape.iter().fold(1usize, |n, &d| n.saturating_mul(d)))
        })
    }

    /// Every tensor name of a checkpoint with this configuration and its expected shape, in
    /// the order LLaDA's own code declares them.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors().collect()
    }

    /// [`tensor_shapes`](Self::tensor_shapes), one at a time: checking a file against a
    /// configuration that claims a billion layers stops at the first missing tensor instead of
    /// listing them all first.
    pub fn tensors(&self) -> impl Iterator<Item = (String, Vec<usize>)> + '_ {
        let (d, kv, mlp) = (
            self.d_model,
            self.n_kv_heads * self.head_dim,
            self.mlp_hidden_size,
        );
        let t = |name: &str| format!("model.transformer.{name}.weight");
        let blocks = (0..self.n_layers).flat_map(move |i| {
            let p = move |name: &str| format!("model.transformer.blocks.{i}.{name}.weight");
            [
                (p("attn_norm"), vec![d]),
                (p("q_proj"), vec![d, d]),
                (p("k_proj"), vec![kv, d]),
                (p("v_proj"), vec![kv, d]),
                (p("attn_out"), vec![d, d]),
                (p("ff_norm"), vec![d]),
                (p("ff_proj"), vec![mlp, d]),
                (p("up_proj"), vec![mlp, d]),
                (p("ff_out"), vec![d, mlp]),
            ]
        });
        let head = (!self.weight_tying).then(|| (t("ff_out"), vec![self.embedding_size, d]));
        std::iter::once((t("wte"), vec![self.embedding_size, d]))
            .chain(blocks)
            .chain(std::iter::once((t("ln_f"), vec![d])))
            .chain(head)
    }
}
