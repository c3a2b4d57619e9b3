//! The immutable model: configuration and packed weights, shared by every [`Context`].
//!
//! [`Context`]: crate::Context

use std::path::Path;

use half::{bf16, f16};

use crate::config::Config;
use crate::error::LoadError;
use crate::gemm::{Dtype, PackedMatrix};
use crate::models::Tensor;
pub use crate::quant::Quantization;
use crate::quant::{QuantType, dequantize_row, format_for, quantize_row};

/// How to load a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Quantize the linear layers and the token embedding while loading (`None`: keep the
    /// checkpoint's types).
    pub quantize: Option<Quantization>,
}

impl LoadOptions {
    /// These options with `quantize`.
    #[must_use]
    pub fn with_quantize(mut self, quantize: Option<Quantization>) -> Self {
        self.quantize = quantize;
        self
    }
}
use crate::weights::{self, Checkpoint, TensorData};

/// Token embedding rows in the checkpoint's dtype.
#[derive(Debug)]
pub(crate) enum Table {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
    /// Rows of ggml blocks (a GGUF file's quantized `token_embd`).
    Quant {
        ty: QuantType,
        data: Vec<u8>,
    },
}

impl Table {
    /// `rows` rows of `d` values, quantized to `quantize` when asked (and the rows fit a
    /// format), else in the checkpoint's dtype.
    fn load(data: TensorData<'_>, d: usize, quantize: Option<QuantType>) -> Self {
        if let Some(ty) = quantize.and_then(|q| format_for(q, d)) {
            return Self::quantized(ty, d, data.to_f32_vec());
        }
        match data.dtype {
            Dtype::F32 => Table::F32(data.to_f32_vec()),
            Dtype::Bf16 => Table::Bf16(data.bits().map(bf16::from_bits).collect()),
            Dtype::F16 => Table::F16(data.bits().map(f16::from_bits).collect()),
        }
    }

    /// Rows of `d` values of `values`, quantized to `ty`.
    pub(crate) fn quantized(ty: QuantType, d: usize, values: Vec<f32>) -> Self {
        let bytes = ty.row_bytes(d);
        let mut data = vec![0u8; values.len() / d * bytes];
        for (row, out) in values.chunks_exact(d).zip(data.chunks_exact_mut(bytes)) {
            quantize_row(ty, row, out);
        }
        Table::Quant { ty, data }
    }

    /// Writes row `id` (of width `out.len()`) into `out`.
    pub(crate) fn row(&self, id: usize, out: &mut [f32]) {
        let d = out.len();
        let range = id * d..(id + 1) * d;
        match self {
            Table::F32(t) => out.copy_from_slice(&t[range]),
            Table::Bf16(t) => out
                .iter_mut()
                .zip(&t[range])
                .for_each(|(o, v)| *o = v.to_f32()),
            Table::F16(t) => out
                .iter_mut()
                .zip(&t[range])
                .for_each(|(o, v)| *o = v.to_f32()),
            Table::Quant { ty, data } => {
                let bytes = ty.row_bytes(d);
                dequantize_row(*ty, &data[id * bytes..(id + 1) * bytes], out);
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Table::F32(t) => t.len() * 4,
            Table::Bf16(t) => t.len() * 2,
            Table::F16(t) => t.len() * 2,
            Table::Quant { data, .. } => data.len(),
        }
    }
}

/// A SwiGLU: the dense MLP of a block, or one expert of a mixture.
#[derive(Debug)]
pub(crate) struct Swiglu {
    /// The gate and up projections stacked (`[2 · hidden, d_model]`): one multiplication
    /// gives both.
    pub(crate) gate_up: PackedMatrix,
    /// The down projection, `[d_model, hidden]`.
    pub(crate) down: PackedMatrix,
}

impl Swiglu {
    fn bytes(&self) -> usize {
        self.gate_up.bytes() + self.down.bytes()
    }
}

/// A mixture of experts: the router and every expert of one layer.
#[derive(Debug)]
pub(crate) struct Experts {
    /// The router, `[experts, d_model]`, kept in the file's type (never quantized at load: the
    /// choice of experts is a comparison of its outputs).
    pub(crate) router: PackedMatrix,
    /// Added to the router's probabilities (LLaDA-MoE's `expert_bias`).
    pub(crate) bias: Option<Vec<f32>>,
    pub(crate) experts: Vec<Swiglu>,
    /// The expert every token goes through, when the model has one.
    pub(crate) shared: Option<Swiglu>,
}

/// A block's MLP.
#[derive(Debug)]
pub(crate) enum Mlp {
    Dense(Swiglu),
    Experts(Experts),
}

impl Mlp {
    fn bytes(&self) -> usize {
        match self {
            Mlp::Dense(s) => s.bytes(),
            Mlp::Experts(m) => {
                m.router.bytes()
                    + m.bias.as_ref().map_or(0, |b| b.len() * 4)
                    + m.experts.iter().map(Swiglu::bytes).sum::<usize>()
                    + m.shared.as_ref().map_or(0, Swiglu::bytes)
            }
        }
    }
}

/// One transformer block.
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) attn_norm: Vec<f32>,
    /// `q_proj`, `k_proj` and `v_proj` stacked: one multiplication gives all three.
    pub(crate) qkv: PackedMatrix,
    /// Their biases, stacked the same way (Dream's), added after the multiplication.
    pub(crate) qkv_bias: Option<Vec<f32>>,
    /// The per-head RMSNorm weights of the queries and of the keys (LLaDA-MoE's).
    pub(crate) qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    pub(crate) attn_out: PackedMatrix,
    /// The output projection's bias (LLaDA2's `use_bias`).
    pub(crate) attn_out_bias: Option<Vec<f32>>,
    pub(crate) ff_norm: Vec<f32>,
    pub(crate) mlp: Mlp,
}

/// A loaded LLaDA model. Immutable and `Sync`: share it (in an `Arc`) between the
/// [`Context`](crate::Context)s of several threads.
#[derive(Debug)]
pub struct Model {
    pub(crate) config: Config,
    pub(crate) embedding: Table,
    pub(crate) blocks: Vec<Block>,
    pub(crate) ln_f: Vec<f32>,
    pub(crate) head: PackedMatrix,
    /// `cos` and `sin` of every position's rotary angles, `[max_len, head_dim / 2]` each.
    /// The rotary embedding's inverse frequencies (each context grows its own tables).
    pub(crate) rope_inv_freq: Vec<f32>,
    checkpoint_bytes: usize,
    weights_dtype: &'static str,
}

impl Model {
    /// Loads a checkpoint directory: `config.json` and `model.safetensors` (or
    /// `model.safetensors.index.json` and its shards), f32, bf16 or f16; or a GGUF file (see
    /// [`from_gguf`](Self::from_gguf)). Every tensor's name, shape and dtype is checked against
    /// the configuration before anything is packed.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, LoadError> {
        Self::load_with(dir, &LoadOptions::default())
    }

    /// [`load`](Self::load) with options (quantizing while loading).
    pub fn load_with(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        if dir.is_file() && crate::gguf::is_gguf(dir) {
            let file = crate::gguf::GgufFile::open(dir)?;
            return Self::from_gguf_file_with(&file, options);
        }
        if !dir.is_dir() {
            return Err(LoadError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "model directory not found",
                ),
            });
        }
        let config = Config::from_file(dir.join("config.json"))?;
        Self::from_safetensors_with(config, weights::find_in(dir)?, options)
    }

    /// Loads the weights of `config` from `weights`: a safetensors file, or a shard index
    /// (`*.index.json`) with its shards beside it. For callers that have read the
    /// configuration already (the `llada` pipeline reads each of a model's files once).
    pub fn from_safetensors(config: Config, weights: impl AsRef<Path>) -> Result<Self, LoadError> {
        Self::from_safetensors_with(config, weights, &LoadOptions::default())
    }

    /// [`from_safetensors`](Self::from_safetensors) with options.
    pub fn from_safetensors_with(
        config: Config,
        weights: impl AsRef<Path>,
        options: &LoadOptions,
    ) -> Result<Self, LoadError> {
        let checkpoint = Checkpoint::open(weights.as_ref())?;
        Self::from_checkpoint(
            config,
            &checkpoint,
            options.quantize.map(Quantization::quant_type),
        )
    }

    fn from_checkpoint(
        config: Config,
        ckpt: &Checkpoint,
        quantize: Option<QuantType>,
    ) -> Result<Self, LoadError> {
        ckpt.check(&config)?;
        if let Some(moe) = &config.moe {
            moe.check()?;
        }
        let family = config.family;
        let name = |tensor: Tensor, layer: usize| family.checkpoint_name(tensor, layer);
        let vector = |tensor: Tensor, layer: usize| -> Result<Vec<f32>, LoadError> {
            Ok(ckpt.tensor(&name(tensor, layer))?.to_f32_vec())
        };
        let wte = ckpt.tensor(&name(Tensor::Embedding, 0))?;
        let embedding = Table::load(wte, config.d_model, quantize);
        let q = quantize;
        let head = if config.weight_tying {
            ckpt.pack(&[name(Tensor::Embedding, 0)], q)?
        } else {
            ckpt.pack(&[name(Tensor::Head, 0)], q)?
        };
        let mut blocks = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let b = |tensor: Tensor| name(tensor, i);
            let qkv_bias = if config.qkv_bias && config.fused_qkv {
                Some(vector(Tensor::QkvBias, i)?)
            } else if config.qkv_bias {
                let mut bias = vector(Tensor::QueryBias, i)?;
                bias.extend(vector(Tensor::KeyBias, i)?);
                bias.extend(vector(Tensor::ValueBias, i)?);
                Some(bias)
            } else {
                None
            };
            let qk_norm = if config.qk_norm {
                Some((vector(Tensor::QueryNorm, i)?, vector(Tensor::KeyNorm, i)?))
            } else {
                None
            };
            let swiglu = |gate: Tensor, up: Tensor, down: Tensor| -> Result<Swiglu, LoadError> {
                Ok(Swiglu {
                    gate_up: ckpt.pack(&[b(gate), b(up)], q)?,
                    down: ckpt.pack(&[b(down)], q)?,
                })
            };
            let mlp = match config.moe.as_ref().filter(|m| m.is_moe_layer(i)) {
                None => Mlp::Dense(swiglu(Tensor::Gate, Tensor::Up, Tensor::Down)?),
                Some(moe) => {
                    let mut experts = Vec::new();
                    for e in 0..moe.experts {
                        experts.push(swiglu(
                            Tensor::ExpertGate(e),
                            Tensor::ExpertUp(e),
                            Tensor::ExpertDown(e),
                        )?);
                    }
                    let shared = match moe.shared_expert_hidden_size {
                        Some(_) => Some(swiglu(
                            Tensor::SharedGate,
                            Tensor::SharedUp,
                            Tensor::SharedDown,
                        )?),
                        None => None,
                    };
                    Mlp::Experts(Experts {
                        router: ckpt.pack(&[b(Tensor::Router)], None)?,
                        bias: if moe.expert_bias {
                            Some(vector(Tensor::ExpertBias, i)?)
                        } else {
                            None
                        },
                        experts,
                        shared,
                    })
                }
            };
            blocks.push(Block {
                attn_norm: vector(Tensor::AttnNorm, i)?,
                qkv: if config.fused_qkv {
                    ckpt.pack(&[b(Tensor::Qkv)], q)?
                } else {
                    ckpt.pack(&[b(Tensor::Query), b(Tensor::Key), b(Tensor::Value)], q)?
                },
                qkv_bias,
                qk_norm,
                attn_out: ckpt.pack(&[b(Tensor::AttnOut)], q)?,
                attn_out_bias: if config.attn_out_bias {
                    Some(vector(Tensor::AttnOutBias, i)?)
                } else {
                    None
                },
                ff_norm: vector(Tensor::MlpNorm, i)?,
                mlp,
            });
        }
        let ln_f = vector(Tensor::FinalNorm, 0)?;
        Ok(Self::assemble(
            config,
            embedding,
            blocks,
            ln_f,
            head,
            ckpt.file_bytes(),
        ))
    }

    /// A model from its parts, loaded from files of `checkpoint_bytes` bytes.
    pub(crate) fn assemble(
        config: Config,
        embedding: Table,
        blocks: Vec<Block>,
        ln_f: Vec<f32>,
        head: PackedMatrix,
        checkpoint_bytes: usize,
    ) -> Self {
        let rope_inv_freq = rope_inv_freq(&config);
        let weights_dtype = head.type_name();
        Self {
            config,
            embedding,
            blocks,
            ln_f,
            head,
            rope_inv_freq,
            checkpoint_bytes,
            weights_dtype,
        }
    }

    /// Loads a GGUF file written by llama.cpp's converter for LLaDA (architecture `llada`),
    /// LLaDA-MoE (`llada-moe`: its 3-D expert tensors sliced per expert, or the fused gate/up
    /// layout) or
    /// Dream (`dream`): one file is the whole model. F32, F16 and BF16 tensors are kept in their type, the
    /// block-quantized ones (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) in their blocks,
    /// widened inside the matrix kernel; any other type is [`LoadError::Dtype`] naming the
    /// tensor. The file's map is released once the weights are packed.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let file = crate::gguf::GgufFile::open(path)?;
        Self::from_gguf_file_with(&file, &LoadOptions::default())
    }

    /// [`from_gguf`](Self::from_gguf) for a file already opened (for the metadata), with
    /// options: quantizing its float tensors while loading.
    pub fn from_gguf_file_with(
        file: &crate::gguf::GgufFile,
        options: &LoadOptions,
    ) -> Result<Self, LoadError> {
        let config = Config::from_value(crate::gguf::config_json(file)?)?;
        crate::gguf::load_model(file, config, options.quantize.map(Quantization::quant_type))
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Bytes held by the weights (packed matrices, embedding, norms): compare with
    /// [`checkpoint_bytes`](Self::checkpoint_bytes).
    pub fn weights_bytes(&self) -> usize {
        let matrices: usize = self
            .blocks
            .iter()
            .map(|b| b.qkv.bytes() + b.attn_out.bytes() + b.mlp.bytes())
            .sum();
        let norms: usize = self
            .blocks
            .iter()
            .map(|b| {
                (b.attn_norm.len()
                    + b.ff_norm.len()
                    + b.qkv_bias.as_ref().map_or(0, Vec::len)
                    + b.attn_out_bias.as_ref().map_or(0, Vec::len)
                    + b.qk_norm.as_ref().map_or(0, |(q, k)| q.len() + k.len()))
                    * 4
            })
            .sum();
        matrices + norms + self.embedding.bytes() + self.head.bytes() + self.ln_f.len() * 4
    }

    /// Size of the checkpoint files that were loaded.
    pub fn checkpoint_bytes(&self) -> usize {
        self.checkpoint_bytes
    }

    /// The type the LM head (and, in files made by one tool, the other linear layers) is
    /// stored in: `"f32"`, `"bf16"`, `"f16"`, a ggml format (`"Q8_0"`, ...) or `"mixed"`.
    pub fn weights_dtype(&self) -> &'static str {
        self.weights_dtype
    }
}

/// The rotary embedding's inverse frequencies, computed the way the reference computes them
/// in f32: `inv_freq[i] = 1 / θ^(2i/d)`, `d` the rotated dimensions of a head.
pub(crate) fn rope_inv_freq(config: &Config) -> Vec<f32> {
    let half = config.rotary_dim / 2;
    (0..half)
        .map(|i| {
            let exponent = (2 * i) as f32 / config.rotary_dim as f32;
            (1.0 / (config.rope_theta as f32 as f64).powf(f64::from(exponent))) as f32
        })
        .collect()
}

/// Extends rotary tables (`[position, head_dim / 2]`) to `positions` positions: angle =
/// `position · inv_freq[i]` rounded to f32, then cos and sin, as the reference. Tables grow
/// with the longest sequence asked for, never with what a configuration claims.
pub(crate) fn grow_rope(
    inv_freq: &[f32],
    (cos, sin): (&mut Vec<f32>, &mut Vec<f32>),
    positions: usize,
) {
    let half = inv_freq.len().max(1);
    for position in cos.len() / half..positions {
        for &f in inv_freq {
            let angle = f64::from(position as f32 * f);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
}

/// Rotary tables for `positions` positions.
pub(crate) fn rope_tables(config: &Config, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    grow_rope(&rope_inv_freq(config), (&mut cos, &mut sin), positions);
    (cos, sin)
}
