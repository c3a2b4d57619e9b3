//! A model from a GGUF file written by llama.cpp's converter (architecture `llada` or
//! `dream`): hyper-parameters from the architecture's metadata, tensors by llama.cpp's names
//! (LLaDA's `attn_q` / `attn_k` rows put back in the checkpoint's order), quantized weights
//! kept quantized.

use half::{bf16, f16};

use super::{GgufFile, TensorInfo, TensorType};
use crate::config::Config;
use crate::error::LoadError;
use crate::gemm::{NR, PackedMatrix, PanelData, Segment};
use crate::model::{Block, Model, Table};
use crate::models::{Family, GgufConfig, Tensor};
use crate::quant::{QuantType, dequantize_row, format_for};

/// The quantized formats this backend runs, by ggml type code.
pub(super) fn quant_type(ty: TensorType) -> Option<QuantType> {
    Some(match ty.0 {
        2 => QuantType::Q4_0,
        3 => QuantType::Q4_1,
        6 => QuantType::Q5_0,
        7 => QuantType::Q5_1,
        8 => QuantType::Q8_0,
        12 => QuantType::Q4_K,
        13 => QuantType::Q5_K,
        14 => QuantType::Q6_K,
        _ => return None,
    })
}

/// The family of a GGUF file (its `general.architecture`), if this backend runs it.
pub(crate) fn family_of(file: &GgufFile) -> Result<Family, LoadError> {
    let arch = file
        .get("general.architecture")
        .ok_or(LoadError::MissingField {
            field: "general.architecture",
        })?
        .as_str()
        .unwrap_or_default();
    Family::of_gguf_arch(arch).ok_or_else(|| LoadError::Unsupported {
        field: "general.architecture",
        value: arch.to_string(),
        reason: "the ndarray backend runs LLaDA (\"llada\") and Dream (\"dream\") files",
    })
}

/// The `config.json` a checkpoint with this file's hyper-parameters would have, in its
/// family's keys: what [`Config::from_value`] and the `llada` pipeline read, so a GGUF file and
/// a checkpoint directory describe a model the same way. Special ids come from the
/// `tokenizer.ggml.*` ids when the file has them, and `diffusion.shift_logits` is followed
/// when present (llama.cpp writes `false` for LLaDA and nothing for Dream, whose logits
/// are shifted).
pub fn config_json(file: &GgufFile) -> Result<serde_json::Value, LoadError> {
    let family = family_of(file)?;
    let hyper = GgufConfig::read(file, &family.gguf_keys())?;
    Ok(family.gguf_config(&hyper))
}

/// A tensor the model needs, checked: present, of its shape (checkpoint order `[rows, cols]`)
/// and of a type this backend reads.
struct Weight<'f> {
    info: &'f TensorInfo,
    rows: usize,
    cols: usize,
}

fn weight<'f>(file: &'f GgufFile, name: &str, shape: &[usize]) -> Result<Weight<'f>, LoadError> {
    let info = file.tensor(name).ok_or_else(|| LoadError::MissingTensor {
        name: name.to_string(),
        expected: shape.to_vec(),
    })?;
    // GGUF lists the fastest-varying dimension first.
    let found: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
    if found != shape {
        return Err(LoadError::TensorShape {
            name: name.to_string(),
            expected: shape.to_vec(),
            found,
        });
    }
    let known = matches!(
        info.ty,
        TensorType::F32 | TensorType::F16 | TensorType::BF16
    ) || quant_type(info.ty).is_some();
    if !known {
        return Err(LoadError::Dtype {
            name: name.to_string(),
            dtype: info.ty.name(),
        });
    }
    let (rows, cols) = match *shape {
        [cols] => (1, cols),
        [rows, cols] => (rows, cols),
        _ => unreachable!("vectors and matrices only"),
    };
    Ok(Weight { info, rows, cols })
}

impl Weight<'_> {
    /// Row `r` widened into `out` (`cols` values).
    fn row_f32(&self, file: &GgufFile, r: usize, out: &mut [f32]) {
        read_row(file, self.info, self.cols, r, out);
    }

    fn to_f32_vec(&self, file: &GgufFile) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.row_f32(file, r, row);
        }
        out
    }
}

/// Row `r` of a tensor of `cols` columns in a type this backend reads, widened into `out`.
pub(super) fn read_row(file: &GgufFile, info: &TensorInfo, cols: usize, r: usize, out: &mut [f32]) {
    let data = file.data(info);
    match info.ty {
        TensorType::F32 => {
            for (o, b) in out.iter_mut().zip(data[r * cols * 4..].chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        TensorType::F16 | TensorType::BF16 => {
            let bf = info.ty == TensorType::BF16;
            for (o, b) in out.iter_mut().zip(data[r * cols * 2..].chunks_exact(2)) {
                let bits = u16::from_le_bytes([b[0], b[1]]);
                *o = if bf {
                    bf16::from_bits(bits).to_f32()
                } else {
                    f16::from_bits(bits).to_f32()
                };
            }
        }
        ty => {
            let q = quant_type(ty).expect("a type this backend reads");
            let bytes = q.row_bytes(cols);
            dequantize_row(q, &data[r * bytes..(r + 1) * bytes], out);
        }
    }
}

/// Row `r` of the checkpoint's `q_proj` / `k_proj` is row `source(r)` of llama.cpp's
/// `attn_q` / `attn_k`: its converter interleaves the two halves of every head (for its
/// rotary layout), row `h·hd + t·hd/2 + i` going to `h·hd + 2i + t`.
pub(super) fn unpermute(r: usize, head_dim: usize) -> usize {
    let (head, j) = (r / head_dim, r % head_dim);
    let half = head_dim / 2;
    head * head_dim + 2 * (j % half) + j / half
}

/// A stacked weight: `parts` (each `[rows_i, k]`, rows mapped through `order`) one after the
/// other. Float parts of one dtype make one panel segment in that dtype; quantized parts keep
/// their blocks, one segment per part (panels never straddle parts when each part's rows are
/// a multiple of 16; otherwise everything is widened to f32).
fn stack(
    file: &GgufFile,
    parts: &[(Weight<'_>, Option<usize>)],
    quantize: Option<QuantType>,
) -> Result<PackedMatrix, LoadError> {
    let k = parts[0].0.cols;
    let n: usize = parts.iter().map(|p| p.0.rows).sum();
    let source = |part: &(Weight<'_>, Option<usize>), r: usize| match part.1 {
        Some(head_dim) => unpermute(r, head_dim),
        None => r,
    };
    // Each part's blocks: the file's, or, for a float part, the format asked for.
    let target = quantize.and_then(|q| format_for(q, k));
    let quantized: Vec<Option<QuantType>> = parts
        .iter()
        .map(|p| quant_type(p.0.info.ty).or(target))
        .collect();
    let aligned = parts.len() == 1 || parts.iter().all(|p| p.0.rows % NR == 0);
    if quantized.iter().any(Option::is_some) && aligned {
        let mut segments = Vec::with_capacity(parts.len());
        let mut first_panel = 0;
        for (part, q) in parts.iter().zip(&quantized) {
            let rows = part.0.rows;
            let native = quant_type(part.0.info.ty).is_some();
            let data = match q {
                Some(q) if native => {
                    let bytes = q.row_bytes(k);
                    let raw = file.data(part.0.info);
                    PackedMatrix::pack_quantized(rows, k, *q, |r, out| {
                        let s = source(part, r);
                        out.copy_from_slice(&raw[s * bytes..(s + 1) * bytes]);
                    })
                }
                Some(q) => PackedMatrix::quantize_rows(rows, k, *q, |r, out| {
                    part.0.row_f32(file, source(part, r), out)
                }),
                None => PanelData::F32(PackedMatrix::pack(rows, k, |r, out: &mut [f32]| {
                    part.0.row_f32(file, source(part, r), out)
                })),
            };
            let panels = rows.div_ceil(NR);
            segments.push(Segment {
                panels: first_panel..first_panel + panels,
                data,
            });
            first_panel += panels;
        }
        return Ok(PackedMatrix { k, n, segments });
    }
    // Row r of the stack: (part, row within it).
    let locate = |mut r: usize| {
        for part in parts {
            if r < part.0.rows {
                return (part, source(part, r));
            }
            r -= part.0.rows;
        }
        unreachable!("row inside the stack")
    };
    let same = |ty| parts.iter().all(|p| p.0.info.ty == ty);
    let data = if same(TensorType::F16) || same(TensorType::BF16) {
        let bf = same(TensorType::BF16);
        let bits = |r: usize, j: usize| {
            let (part, s) = locate(r);
            let data = file.data(part.0.info);
            let at = (s * k + j) * 2;
            u16::from_le_bytes([data[at], data[at + 1]])
        };
        if bf {
            PanelData::Bf16(PackedMatrix::pack(n, k, |r, out: &mut [bf16]| {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = bf16::from_bits(bits(r, j));
                }
            }))
        } else {
            PanelData::F16(PackedMatrix::pack(n, k, |r, out: &mut [f16]| {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = f16::from_bits(bits(r, j));
                }
            }))
        }
    } else {
        PanelData::F32(PackedMatrix::pack(n, k, |r, out: &mut [f32]| {
            let (part, s) = locate(r);
            part.0.row_f32(file, s, out);
        }))
    };
    Ok(PackedMatrix::single(k, n, data))
}

/// The token embedding, kept in the file's type (or quantized to `quantize` if it is floats).
fn table(file: &GgufFile, w: &Weight<'_>, quantize: Option<QuantType>) -> Table {
    let data = file.data(w.info);
    let float = matches!(
        w.info.ty,
        TensorType::F32 | TensorType::F16 | TensorType::BF16
    );
    if let Some(ty) = quantize
        .and_then(|q| format_for(q, w.cols))
        .filter(|_| float)
    {
        return Table::quantized(ty, w.cols, w.to_f32_vec(file));
    }
    match w.info.ty {
        TensorType::F16 => Table::F16(
            data.chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]))
                .collect(),
        ),
        TensorType::BF16 => Table::Bf16(
            data.chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]))
                .collect(),
        ),
        ty => match quant_type(ty) {
            Some(q) => Table::Quant {
                ty: q,
                data: data.to_vec(),
            },
            None => Table::F32(w.to_f32_vec(file)),
        },
    }
}

/// Loads the model a GGUF file holds, with `config` (from [`config_json`]): every tensor of the
/// family checked (present, shape, type) before any is packed.
pub(crate) fn load_model(
    file: &GgufFile,
    config: Config,
    quantize: Option<QuantType>,
) -> Result<Model, LoadError> {
    let q = quantize;
    let c = &config;
    let w = |tensor: Tensor, layer: usize| weight(file, &tensor.gguf_name(layer), &c.shape(tensor));
    // Check every tensor before packing any.
    let embedding = w(Tensor::Embedding, 0)?;
    let head = if c.weight_tying {
        None
    } else {
        Some(w(Tensor::Head, 0)?)
    };
    let ln_f = w(Tensor::FinalNorm, 0)?;
    // Grown as the tensors are found: a file that claims a billion layers fails at the first
    // missing one, having allocated nothing for the others.
    let mut layers = Vec::new();
    for i in 0..c.n_layers {
        let biases = if c.qkv_bias {
            Some([
                w(Tensor::QueryBias, i)?,
                w(Tensor::KeyBias, i)?,
                w(Tensor::ValueBias, i)?,
            ])
        } else {
            None
        };
        layers.push((
            [
                w(Tensor::AttnNorm, i)?,
                w(Tensor::Query, i)?,
                w(Tensor::Key, i)?,
                w(Tensor::Value, i)?,
                w(Tensor::AttnOut, i)?,
                w(Tensor::MlpNorm, i)?,
                w(Tensor::Gate, i)?,
                w(Tensor::Up, i)?,
                w(Tensor::Down, i)?,
            ],
            biases,
        ));
    }
    // LLaDA's query and key rows are interleaved per head in its files.
    let qk_order = c.family.gguf_interleaves_qk().then_some(c.head_dim);
    let mut blocks = Vec::with_capacity(c.n_layers);
    for ([attn_norm, wq, k, v, out, ff_norm, gate, up, down], biases) in layers {
        let qkv_bias = biases.map(|b| {
            let mut bias = Vec::with_capacity(b.iter().map(|t| t.cols).sum());
            for t in &b {
                bias.extend(t.to_f32_vec(file));
            }
            bias
        });
        blocks.push(Block {
            attn_norm: attn_norm.to_f32_vec(file),
            qkv: stack(file, &[(wq, qk_order), (k, qk_order), (v, None)], q)?,
            qkv_bias,
            attn_out: stack(file, &[(out, None)], q)?,
            ff_norm: ff_norm.to_f32_vec(file),
            gate_up: stack(file, &[(gate, None), (up, None)], q)?,
            ff_out: stack(file, &[(down, None)], q)?,
        });
    }
    let head = match head {
        Some(h) => stack(file, &[(h, None)], q)?,
        None => stack(file, &[(w(Tensor::Embedding, 0)?, None)], q)?,
    };
    let embedding = table(file, &embedding, q);
    let ln_f = ln_f.to_f32_vec(file);
    Ok(Model::assemble(
        config,
        embedding,
        blocks,
        ln_f,
        head,
        file.file_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpps_head_interleaving() {
        // llama.cpp's permute: w.reshape(heads, 2, hd / 2, k).swapaxes(1, 2).reshape(w.shape),
        // i.e. permuted[h][i][t] = original[h][t][i]. Simulate it on row indices.
        let (hd, heads) = (8, 3);
        let half = hd / 2;
        let mut permuted = Vec::new();
        for h in 0..heads {
            for i in 0..half {
                for t in 0..2 {
                    permuted.push(h * hd + t * half + i);
                }
            }
        }
        for r in 0..hd * heads {
            assert_eq!(permuted[unpermute(r, hd)], r, "checkpoint row {r}");
        }
    }
}
