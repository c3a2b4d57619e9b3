//! Writing a checkpoint as a GGUF file that llama.cpp runs: the family's architecture (`llada`,
//! `llada-moe`, `dream`) and hyper-parameter keys, llama.cpp's tensor names (with the rows of LLaDA's
//! `attn_q` / `attn_k` interleaved for its rotary layout), and each matrix in the type
//! llama.cpp's converter (`f32`, `f16`) or `llama-quantize` (`q8_0`, `q4_0`, `q4_k_m`, `q6_k`)
//! would give it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use half::f16;

use super::{GgufFile, GgufWriter, TensorType, Value};
use crate::config::Config;
use crate::error::LoadError;
use crate::models::{Family, Tensor};
use crate::quant::{QuantType, quantize_row};
use crate::weights::Checkpoint;

/// What a written file's matrices are stored as; norms always stay f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileType {
    /// Every tensor f32 (the converter's `--outtype f32`).
    F32,
    /// Matrices f16 (the converter's `--outtype f16`).
    F16,
    /// Matrices Q8_0 (`llama-quantize … Q8_0`).
    Q8_0,
    /// Matrices Q4_0, the output layer Q6_K (`llama-quantize … Q4_0`).
    Q4_0,
    /// llama.cpp's Q4_K_M mix: Q4_K, with Q6_K for the output layer and for `attn_v` and
    /// `ffn_down` in the layers llama.cpp gives more bits (`llama-quantize … Q4_K_M`).
    Q4KM,
    /// Matrices Q6_K (`llama-quantize … Q6_K`).
    Q6K,
}

impl FileType {
    /// Every file type.
    pub const ALL: [FileType; 6] = [
        FileType::F32,
        FileType::F16,
        FileType::Q8_0,
        FileType::Q4_0,
        FileType::Q4KM,
        FileType::Q6K,
    ];

    /// The name the command line takes: `f32`, `f16`, `q8_0`, `q4_0`, `q4_k_m` or `q6_k`.
    pub const fn name(self) -> &'static str {
        match self {
            FileType::F32 => "f32",
            FileType::F16 => "f16",
            FileType::Q8_0 => "q8_0",
            FileType::Q4_0 => "q4_0",
            FileType::Q4KM => "q4_k_m",
            FileType::Q6K => "q6_k",
        }
    }

    /// llama.cpp's `llama_ftype` code, written as `general.file_type`.
    const fn code(self) -> u64 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q8_0 => 7,
            FileType::Q4KM => 15,
            FileType::Q6K => 18,
        }
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FileType {
    type Err = LoadError;

    fn from_str(name: &str) -> Result<Self, LoadError> {
        let lower = name.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|t| t.name() == lower)
            .ok_or_else(|| LoadError::UnknownFileType {
                name: name.to_string(),
            })
    }
}

/// What a matrix is in the model, for the choice of its type.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Norms, biases and a mixture's router (`llama-quantize` leaves `ffn_gate_inp` alone):
    /// always f32.
    Norm,
    /// The output layer, or the token embedding when it is also the output layer.
    Output,
    /// `attn_v` and `ffn_down`: the matrices Q4_K_M gives more bits in some layers.
    MoreBits,
    /// A fused `attn_qkv`: Q4_K_M gives it more bits (llama.cpp: Q5_K; here Q6_K, the next
    /// type this writer makes).
    FusedQkv,
    Other,
}

/// Whether Q4_K_M gives layer `i` of `n` more bits (llama.cpp's `use_more_bits`: the first
/// and last eighth, and every third layer between).
fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

fn tensor_type(q: QuantType) -> TensorType {
    TensorType(match q {
        QuantType::Q4_0 => 2,
        QuantType::Q4_1 => 3,
        QuantType::Q5_0 => 6,
        QuantType::Q5_1 => 7,
        QuantType::Q8_0 => 8,
        QuantType::Q4_K => 12,
        QuantType::Q5_K => 13,
        QuantType::Q6_K => 14,
    })
}

/// The type llama.cpp gives a `[rows, cols]` tensor of `role` in layer `layer` of
/// `n_layers`: the file type's choice, then its fallback when `cols` is not whole blocks (Q4_K
/// to Q5_0, Q6_K to Q8_0), then f16 when not even that fits.
fn choose(
    file_type: FileType,
    role: Role,
    layer: usize,
    n_layers: usize,
    cols: usize,
) -> TensorType {
    if role == Role::Norm || file_type == FileType::F32 {
        return TensorType::F32;
    }
    let wanted = match file_type {
        FileType::F32 | FileType::F16 => return TensorType::F16,
        FileType::Q8_0 => QuantType::Q8_0,
        // The output layer: Q6_K, or Q8_0 when its rows are not whole super-blocks.
        FileType::Q4_0 | FileType::Q4KM | FileType::Q6K if role == Role::Output => {
            if cols.is_multiple_of(256) {
                QuantType::Q6_K
            } else {
                QuantType::Q8_0
            }
        }
        FileType::Q4_0 => QuantType::Q4_0,
        FileType::Q4KM if role == Role::MoreBits && use_more_bits(layer, n_layers) => {
            QuantType::Q6_K
        }
        FileType::Q4KM if role == Role::FusedQkv => QuantType::Q6_K,
        FileType::Q4KM => QuantType::Q4_K,
        FileType::Q6K => QuantType::Q6_K,
    };
    let fallback = match wanted {
        QuantType::Q4_K => QuantType::Q5_0,
        QuantType::Q6_K => QuantType::Q8_0,
        other => other,
    };
    [wanted, fallback]
        .into_iter()
        .find(|t| cols.is_multiple_of(t.block_len()))
        .map_or(TensorType::F16, tensor_type)
}

fn quant_type(ty: TensorType) -> Option<QuantType> {
    [
        QuantType::Q4_0,
        QuantType::Q5_0,
        QuantType::Q8_0,
        QuantType::Q4_K,
        QuantType::Q6_K,
    ]
    .into_iter()
    .find(|&q| tensor_type(q) == ty)
}

/// One tensor to write: its checkpoint sources and its GGUF form.
struct Planned {
    /// The tensors whose rows it stacks, `source_rows` rows each: one, or every expert of a
    /// layer (llama.cpp's `*_exps` tensors are `[experts, rows, cols]`).
    sources: Vec<String>,
    source_rows: usize,
    name: String,
    rows: usize,
    cols: usize,
    ty: TensorType,
    /// `Some(head_dim)` for LLaDA's `attn_q` / `attn_k`, whose rows llama.cpp interleaves.
    interleave: Option<usize>,
    /// A vector (norm, bias): one GGUF dimension.
    vector: bool,
}

/// The tensors of `config`'s checkpoint, in file order, with llama.cpp's names and the types
/// `file_type` gives them.
fn plan(config: &Config, file_type: FileType) -> Vec<Planned> {
    let n = config.n_layers;
    let interleaved = config.family.gguf_interleaves_qk();
    let experts = config.moe.as_ref().map_or(0, |m| m.experts);
    let mut out = Vec::new();
    for (tensor, layer) in config.roles() {
        // A layer's experts are one tensor of llama.cpp's, planned at the first expert.
        let expert_sources = |of: fn(usize) -> Tensor| -> Vec<String> {
            (0..experts)
                .map(|e| config.family.checkpoint_name(of(e), layer))
                .collect()
        };
        let sources = match tensor {
            Tensor::ExpertGate(0) => expert_sources(Tensor::ExpertGate),
            Tensor::ExpertUp(0) => expert_sources(Tensor::ExpertUp),
            Tensor::ExpertDown(0) => expert_sources(Tensor::ExpertDown),
            Tensor::ExpertGate(_) | Tensor::ExpertUp(_) | Tensor::ExpertDown(_) => continue,
            _ => vec![config.family.checkpoint_name(tensor, layer)],
        };
        let shape = config.shape(tensor);
        let (source_rows, cols) = match shape[..] {
            [cols] => (1, cols),
            [rows, cols] => (rows, cols),
            _ => unreachable!("the configuration has vectors and matrices only"),
        };
        let vector = shape.len() == 1;
        let role = match tensor {
            _ if vector => Role::Norm,
            Tensor::Router => Role::Norm,
            Tensor::Embedding if config.weight_tying => Role::Output,
            Tensor::Head => Role::Output,
            Tensor::Value | Tensor::Down | Tensor::ExpertDown(_) | Tensor::SharedDown => {
                Role::MoreBits
            }
            Tensor::Qkv => Role::FusedQkv,
            // A token embedding that is not the output layer is quantized like any matrix.
            _ => Role::Other,
        };
        let interleave = (interleaved && matches!(tensor, Tensor::Query | Tensor::Key))
            .then_some(config.head_dim);
        out.push(Planned {
            ty: choose(file_type, role, layer, n, cols),
            rows: source_rows * sources.len(),
            sources,
            source_rows,
            name: tensor.gguf_name(layer),
            cols,
            interleave,
            vector,
        });
    }
    out
}

/// Row `g` of llama.cpp's `attn_q` / `attn_k` is row `checkpoint_row(g)` of the checkpoint's
/// `q_proj` / `k_proj`: within each head, llama.cpp puts the two rotary halves side by side
/// (row `h·hd + 2i + t` holds checkpoint row `h·hd + t·hd/2 + i`).
fn checkpoint_row(g: usize, head_dim: usize) -> usize {
    let (head, j) = (g / head_dim, g % head_dim);
    head * head_dim + (j % 2) * (head_dim / 2) + j / 2
}

/// One written tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenTensor {
    /// Its name in the file (`blk.0.attn_q.weight`).
    pub name: String,
    /// Its type.
    pub ty: TensorType,
    /// Its dimensions, fastest-varying first.
    pub dims: Vec<u64>,
}

/// What [`write_checkpoint`] wrote.
#[derive(Clone, Debug)]
pub struct Written {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its tensors, in file order.
    pub tensors: Vec<WrittenTensor>,
}

/// Writes the checkpoint `weights` (a safetensors file or shard index) of `config` as a GGUF
/// file at `out` with `file_type`'s tensor types and llama.cpp's metadata for the family's
/// architecture (`llada`, `llada-moe`, `dream`; a LLaDA-MoE configuration llama.cpp's
/// architecture cannot express is [`LoadError::Unsupported`]), plus
/// `extra` metadata (the tokenizer, chat template, name: whatever the caller has). Rows are
/// converted a slice at a time on all cores, so the file is never held in memory. The file
/// appears whole or not at all: it is written beside `out` under a temporary name and
/// renamed at the end.
pub fn write_checkpoint(
    config: &Config,
    weights: &Path,
    file_type: FileType,
    extra: &[(String, Value)],
    out: &Path,
) -> Result<Written, LoadError> {
    let checkpoint = Checkpoint::open(weights)?;
    checkpoint.check(config)?;
    write(
        &Source::Checkpoint(&checkpoint),
        config,
        file_type,
        extra,
        out,
    )
}

/// Writes the model of a GGUF file again with `file_type`'s tensor types, as
/// `llama-quantize` does: its float tensors (F32, F16, BF16) are converted, its metadata
/// (tokenizer, chat template, ...) is kept except the file type, and `extra` is added. A
/// tensor already quantized is copied when it keeps its type; quantizing it into another
/// one would compound two roundings, so that is [`LoadError::Requantize`] (write from the
/// F16 or F32 file instead). Whole or not at all, as [`write_checkpoint`].
pub fn requantize(
    file: &GgufFile,
    file_type: FileType,
    extra: &[(String, Value)],
    out: &Path,
) -> Result<Written, LoadError> {
    let config = Config::from_value(super::config_json(file)?)?;
    if let Some(fused) = file
        .tensors()
        .iter()
        .map(|t| t.name.as_str())
        .find(|n| n.ends_with("ffn_gate_up_exps.weight"))
    {
        return Err(LoadError::Unsupported {
            field: "ffn_gate_up_exps",
            value: fused.to_string(),
            reason: "files with fused expert gate/up tensors are read but not rewritten: write from the checkpoint or an unfused file",
        });
    }
    let arch = format!("{}.", config.family.gguf_arch());
    for p in plan(&config, FileType::F32) {
        let shape: Vec<usize> = dims(&p).iter().rev().map(|&d| d as usize).collect();
        let info = file
            .tensor(&p.name)
            .ok_or_else(|| LoadError::MissingTensor {
                name: p.name.clone(),
                expected: shape.clone(),
            })?;
        let found: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        if found != shape {
            return Err(LoadError::TensorShape {
                name: p.name,
                expected: shape,
                found,
            });
        }
    }
    let mut kept: Vec<(String, Value)> = file
        .keys()
        // What `metadata` writes from the configuration and the file type is written anew.
        .filter(|k| !matches!(*k, "general.file_type" | "general.quantization_version"))
        .filter(|k| !k.starts_with(arch.as_str()) || k.starts_with("llada.decoding."))
        .filter(|k| !k.starts_with("diffusion."))
        .map(|k| (k.to_string(), file.get(k).expect("a listed key").clone()))
        .collect();
    // The file's own keys in a fixed order, so the same input writes the same bytes.
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    kept.extend_from_slice(extra);
    write(&Source::Gguf(file), &config, file_type, &kept, out)
}

/// Writes a GGUF file with exactly the tensors, names, types and metadata that
/// [`write_checkpoint`] would write for `config`, filled with seeded random weights instead of
/// a checkpoint's: a real model's shape when its weights are not at hand, for speed and memory
/// (which do not depend on the values). Matrices are uniform with `config`'s
/// initialisation scale (standard deviation 0.02), norm weights 1, other vectors (biases) 0;
/// the same `seed` writes the same bytes. Each slice of rows is drawn, quantized and written in
/// turn, so the writer's memory stays a few MiB whatever the file's size. Whole or not at all,
/// as [`write_checkpoint`].
pub fn write_random(
    config: &Config,
    file_type: FileType,
    seed: u64,
    extra: &[(String, Value)],
    out: &Path,
) -> Result<Written, LoadError> {
    write(&Source::Random { seed }, config, file_type, extra, out)
}

/// Where a written file's rows come from.
enum Source<'a> {
    /// A safetensors checkpoint: checkpoint names, q/k rows in the checkpoint's order.
    Checkpoint(&'a Checkpoint),
    /// A GGUF file: llama.cpp's names and row order already.
    Gguf(&'a GgufFile),
    /// Seeded random values (see [`write_random`]).
    Random { seed: u64 },
}

/// Standard deviation of [`write_random`]'s matrices: LLaDA's `init_std`.
const RANDOM_STD: f32 = 0.02;

/// SplitMix64's finaliser: a well-mixed 64-bit value of `x`.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Row `r` of the random tensor `name`: uniform on ±√3·[`RANDOM_STD`] for a matrix, 1 for a
/// norm's weight, 0 for any other vector. Depends on the seed, the name and the row only, so
/// rows can be drawn on any thread in any order.
fn random_row(seed: u64, name: &str, vector: bool, r: usize, row: &mut [f32]) {
    if vector {
        row.fill(if name.contains("norm") { 1.0 } else { 0.0 });
        return;
    }
    let key = name.bytes().fold(mix(seed), |h, b| mix(h ^ u64::from(b)));
    let mut state = mix(key ^ (r as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let half_width = 3f32.sqrt() * RANDOM_STD;
    for pair in row.chunks_mut(2) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let bits = mix(state);
        for (k, v) in pair.iter_mut().enumerate() {
            // 24 random bits per value: uniform on [-1, 1).
            let u = ((bits >> (32 * k + 8)) & 0xff_ffff) as f32 / (1 << 23) as f32 - 1.0;
            *v = u * half_width;
        }
    }
}

/// What llama.cpp's `llada-moe` architecture cannot express: a file written with them would
/// load as another model (here, and in llama.cpp), so writing one is refused.
fn expressible(config: &Config) -> Result<(), LoadError> {
    let Some(moe) = config
        .moe
        .as_ref()
        .filter(|_| config.family == Family::LladaMoe)
    else {
        return Ok(());
    };
    let refuse = |field: &'static str, value: String| LoadError::Unsupported {
        field,
        value,
        reason: "llama.cpp's llada-moe files have no shared experts, expert biases, dense layers or missing q/k norms",
    };
    if let Some(width) = moe.shared_expert_hidden_size {
        return Err(refuse("shared_expert_intermediate_size", width.to_string()));
    }
    if moe.expert_bias {
        return Err(refuse("moe_router_enable_expert_bias", "true".into()));
    }
    if let Some(layers) = &moe.layers {
        return Err(refuse("moe_layer_freq", format!("{layers:?}")));
    }
    if !config.qk_norm {
        return Err(refuse("qk_layernorm", "false".into()));
    }
    Ok(())
}

fn write(
    source: &Source<'_>,
    config: &Config,
    file_type: FileType,
    extra: &[(String, Value)],
    out: &Path,
) -> Result<Written, LoadError> {
    expressible(config)?;
    let mut planned = plan(config, file_type);
    if let Source::Gguf(file) = source {
        for p in &mut planned {
            // Its rows are the file's tensor's, in order (`source_rows` keeps the expert
            // tensors' three dimensions).
            p.sources = vec![p.name.clone()];
            p.interleave = None;
            let from = file.tensor(&p.name).expect("checked").ty;
            let float = matches!(from, TensorType::F32 | TensorType::F16 | TensorType::BF16);
            if !float && from != p.ty {
                return Err(LoadError::Requantize {
                    name: p.name.clone(),
                    from: from.name(),
                    to: p.ty.name(),
                });
            }
        }
    }

    let mut writer = GgufWriter::new();
    for (key, value) in metadata(config, file_type) {
        writer.metadata(key, value);
    }
    for (key, value) in extra {
        writer.metadata(key.clone(), value.clone());
    }
    let declared: Vec<(String, Vec<u64>, TensorType)> = planned
        .iter()
        .map(|p| (p.name.clone(), dims(p), p.ty))
        .collect();

    let partial = partial_path(out);
    let write_err = |source: std::io::Error| LoadError::Write {
        path: out.to_path_buf(),
        source,
    };
    let result = (|| {
        let file = File::create(&partial).map_err(write_err)?;
        let mut sink = BufWriter::with_capacity(1 << 20, file);
        writer
            .write_streaming(&mut sink, &declared, |i, sink| {
                write_tensor(source, &planned[i], sink)
            })
            .map_err(|e| match e {
                Failure::Read(e) => e,
                Failure::Write(e) => write_err(e),
            })?;
        let file = sink.into_inner().map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        std::fs::rename(&partial, out).map_err(write_err)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let bytes = std::fs::metadata(out).map_err(write_err)?.len();
    Ok(Written {
        path: out.to_path_buf(),
        bytes,
        tensors: planned
            .iter()
            .map(|p| WrittenTensor {
                name: p.name.clone(),
                ty: p.ty,
                dims: dims(p),
            })
            .collect(),
    })
}

fn dims(p: &Planned) -> Vec<u64> {
    if p.vector {
        vec![p.cols as u64]
    } else if p.source_rows < p.rows || p.name.contains("_exps.") {
        vec![
            p.cols as u64,
            p.source_rows as u64,
            (p.rows / p.source_rows.max(1)) as u64,
        ]
    } else {
        vec![p.cols as u64, p.rows as u64]
    }
}

/// `out` with `.partial` appended to its file name.
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// llama.cpp's hyper-parameters of the family's architecture for `config`, as its converter
/// writes them.
fn metadata(config: &Config, file_type: FileType) -> Vec<(String, Value)> {
    let u = |v: usize| Value::Uint(v as u64);
    let arch = config.family.gguf_arch();
    let k = config.family.gguf_keys();
    let key = |name: &str| format!("{arch}.{name}");
    let mut out: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.type".into(), Value::String("model".into())),
        ("general.file_type".into(), Value::Uint(file_type.code())),
        ("general.quantization_version".into(), Value::Uint(2)),
        (key("vocab_size"), u(config.vocab_size)),
        (k.max_sequence_length.into(), u(config.max_sequence_length)),
        (k.d_model.into(), u(config.d_model)),
        (k.mlp_hidden_size.into(), u(config.mlp_hidden_size)),
        (k.n_layers.into(), u(config.n_layers)),
        (k.n_heads.into(), u(config.n_heads)),
        (k.n_kv_heads.into(), u(config.n_kv_heads)),
        (k.rope_theta.into(), Value::Float(config.rope_theta)),
        (k.rotary_dim.into(), u(config.rotary_dim)),
        (k.rms_norm_eps.into(), Value::Float(config.rms_norm_eps)),
        (key("attention.causal"), Value::Bool(false)),
    ];
    if let Some(moe) = &config.moe {
        out.extend([
            (k.expert_count.into(), u(moe.experts)),
            (k.expert_used_count.into(), u(moe.experts_per_token)),
            (
                k.expert_feed_forward_length.into(),
                u(moe.expert_hidden_size),
            ),
        ]);
    }
    if config.family == Family::Llada2 {
        out.extend(
            crate::models::llada2::gguf_metadata(config)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
        );
    }
    // llama.cpp writes `false` for LLaDA and no key for Dream (which `llama-diffusion-cli`
    // reads as shifted): write the key when it is not what the architecture implies.
    let implied = config.family == Family::Dream;
    if config.shifted_logits != implied
        || matches!(
            config.family,
            Family::Llada | Family::LladaMoe | Family::Llada2
        )
    {
        out.push((
            "diffusion.shift_logits".into(),
            Value::Bool(config.shifted_logits),
        ));
    }
    for (key, id) in [
        ("tokenizer.ggml.mask_token_id", config.mask_token_id),
        ("tokenizer.ggml.eos_token_id", config.eos_token_id),
        ("tokenizer.ggml.padding_token_id", config.pad_token_id),
    ] {
        if let Some(id) = id {
            out.push((key.into(), Value::Uint(id.into())));
        }
    }
    out
}

/// Why a tensor could not be written: its source, or the destination.
enum Failure {
    Read(LoadError),
    Write(std::io::Error),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Write(e)
    }
}

/// Rows converted per slice: bounded memory whatever the tensor's size.
const SLICE_ROWS: usize = 256;

/// Converts `p`'s rows into its type, a slice at a time, and writes them.
/// Reads row `r` of a source tensor into a buffer, widened.
type ReadRow<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

fn write_tensor(source: &Source<'_>, p: &Planned, sink: &mut dyn Write) -> Result<(), Failure> {
    let row_bytes = match p.ty {
        TensorType::F32 => p.cols * 4,
        TensorType::F16 => p.cols * 2,
        ty => quant_type(ty).expect("planned types").row_bytes(p.cols),
    };
    // A quantized GGUF tensor that keeps its type is copied as it is.
    if let Source::Gguf(file) = source {
        let info = file.tensor(&p.sources[0]).expect("checked");
        if info.ty == p.ty {
            sink.write_all(file.data(info))?;
            return Ok(());
        }
    }
    let per = p.source_rows.max(1);
    let read: Box<ReadRow<'_>> = match source {
        Source::Checkpoint(checkpoint) => {
            let data = p
                .sources
                .iter()
                .map(|name| checkpoint.tensor(name))
                .collect::<Result<Vec<_>, _>>()
                .map_err(Failure::Read)?;
            Box::new(move |r, row: &mut [f32]| data[r / per].read_f32(r % per * p.cols, row))
        }
        Source::Gguf(file) => {
            let info = file.tensor(&p.sources[0]).expect("checked");
            Box::new(move |r, row: &mut [f32]| super::load::read_row(file, info, p.cols, r, row))
        }
        &Source::Random { seed } => {
            Box::new(move |r, row: &mut [f32]| random_row(seed, &p.name, p.vector, r, row))
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut bytes = vec![0u8; SLICE_ROWS.min(p.rows) * row_bytes];
    for first in (0..p.rows).step_by(SLICE_ROWS) {
        let rows = SLICE_ROWS.min(p.rows - first);
        let slice = &mut bytes[..rows * row_bytes];
        let per_thread = rows.div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for (t, chunk) in slice.chunks_mut(per_thread * row_bytes).enumerate() {
                let read = &read;
                s.spawn(move || {
                    let mut row = vec![0.0f32; p.cols];
                    for (j, out) in chunk.chunks_exact_mut(row_bytes).enumerate() {
                        let g = first + t * per_thread + j;
                        read(p.interleave.map_or(g, |hd| checkpoint_row(g, hd)), &mut row);
                        convert(&row, p.ty, out);
                    }
                });
            }
        });
        sink.write_all(slice)?;
    }
    if let Source::Checkpoint(checkpoint) = source {
        for name in &p.sources {
            checkpoint.release(name);
        }
    }
    Ok(())
}

/// One row in `ty`.
fn convert(row: &[f32], ty: TensorType, out: &mut [u8]) {
    match ty {
        TensorType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(row) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        TensorType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(row) {
                o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        ty => quantize_row(quant_type(ty).expect("planned types"), row, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_is_the_inverse_of_the_loaders() {
        let hd = 8;
        for g in 0..3 * hd {
            assert_eq!(super::super::load::unpermute(checkpoint_row(g, hd), hd), g);
        }
    }

    #[test]
    fn q4_k_m_gives_llama_cpps_layers_more_bits() {
        // llama.cpp's choice for 32 layers (LLaDA-8B): layers 0-3, 28-31 and every third
        // between, starting at 6.
        let more: Vec<usize> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            more,
            [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
        let t = |role, layer, cols| choose(FileType::Q4KM, role, layer, 32, cols);
        assert_eq!(t(Role::MoreBits, 0, 4096), TensorType(14));
        assert_eq!(t(Role::MoreBits, 4, 4096), TensorType(12));
        assert_eq!(t(Role::Other, 0, 4096), TensorType(12));
        assert_eq!(t(Role::Output, 0, 4096), TensorType(14));
        assert_eq!(t(Role::Norm, 0, 4096), TensorType::F32);
        // Rows that are not whole super-blocks fall back: Q4_K to Q5_0, Q6_K to Q8_0, and a
        // row not even of 32 to f16.
        assert_eq!(t(Role::Other, 4, 128), TensorType(6));
        assert_eq!(t(Role::MoreBits, 0, 128), TensorType(8));
        assert_eq!(t(Role::Output, 0, 128), TensorType(8));
        assert_eq!(t(Role::Other, 4, 48), TensorType::F16);
    }
}
