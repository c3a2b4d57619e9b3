//! Writing a checkpoint as a GGUF file that llama.cpp runs: the family's architecture (`llada`,
//! `llada-moe`, `dream`) and hyper-parameter keys, llama.cpp's tensor names (with the rows of LLaDA's
//! `attn_q` / `attn_k` interleaved for its rotary layout), and each matrix in the type
//! llama.cpp's converter (`f32`, `f16`) or `llama-quantize` (`q8_0`, `q4_0`, `q4_k_m`, `q6_k`)
//! would give it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use half::f16;

pub use super::plan::FileType;
use super::plan::{Planned, checkpoint_row, plan, quant_type};
use super::{GgufFile, GgufWriter, TensorType, Value};
use crate::config::Config;
use crate::error::LoadError;
use crate::models::Family;
use crate::quant::quantize_row;
use crate::weights::Checkpoint;

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

/// Where a written file's rows come from.
pub(super) enum Source<'a> {
    /// A safetensors checkpoint: checkpoint names, q/k rows in the checkpoint's order.
    Checkpoint(&'a Checkpoint),
    /// A GGUF file: llama.cpp's names and row order already.
    Gguf(&'a GgufFile),
    /// Seeded random values (see [`write_random`](super::random::write_random)).
    Random { seed: u64 },
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

pub(super) fn write(
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
        &Source::Random { seed } => Box::new(move |r, row: &mut [f32]| {
            super::random::random_row(seed, &p.name, p.vector, r, row)
        }),
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
