//! A model from a GGUF file written by llama.cpp's converter (architecture `llada`,
//! `llada-moe` or `dream`): hyper-parameters from the architecture's metadata, tensors by llama.cpp's names
//! (LLaDA's `attn_q` / `attn_k` rows put back in the checkpoint's order), quantized weights
//! kept quantized.

use half::{bf16, f16};

use super::{GgufFile, TensorInfo, TensorType};
use crate::config::Config;
use crate::error::LoadError;
use crate::gemm::{NR, PackedMatrix, PanelData, Segment};
use crate::model::{Block, Experts, Mlp, Model, Swiglu, Table};
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
        reason: "the ndarray backend runs LLaDA (\"llada\"), LLaDA-MoE (\"llada-moe\") and Dream (\"dream\") files",
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
/// and of a type this backend reads; or rows `first_row..first_row + rows` of one (an expert
/// of a three-dimensional `*_exps` tensor).
#[derive(Clone, Copy)]
struct Weight<'f> {
    info: &'f TensorInfo,
    first_row: usize,
    rows: usize,
    cols: usize,
}

/// A three-dimensional tensor `[experts, rows, cols]` (llama.cpp's `*_exps`), checked, as one
/// matrix of `experts · rows` rows.
fn experts_weight<'f>(
    file: &'f GgufFile,
    name: &str,
    [experts, rows, cols]: [usize; 3],
) -> Result<Weight<'f>, LoadError> {
    let all = rows
        .checked_mul(experts)
        .ok_or_else(|| LoadError::TensorShape {
            name: name.to_string(),
            expected: vec![experts, rows, cols],
            found: Vec::new(),
        })?;
    let mut w = weight_dims(file, name, &[experts, rows, cols])?;
    w.rows = all;
    Ok(w)
}

fn weight<'f>(file: &'f GgufFile, name: &str, shape: &[usize]) -> Result<Weight<'f>, LoadError> {
    weight_dims(file, name, shape)
}

fn weight_dims<'f>(
    file: &'f GgufFile,
    name: &str,
    shape: &[usize],
) -> Result<Weight<'f>, LoadError> {
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
        [experts, rows, cols] => (experts * rows, cols),
        _ => unreachable!("vectors, matrices and stacks of matrices only"),
    };
    Ok(Weight {
        info,
        first_row: 0,
        rows,
        cols,
    })
}

impl<'f> Weight<'f> {
    /// Rows `first..first + rows` of this weight.
    fn slice(&self, first: usize, rows: usize) -> Weight<'f> {
        debug_assert!(first + rows <= self.rows);
        Weight {
            first_row: self.first_row + first,
            rows,
            ..*self
        }
    }

    /// Row `r` widened into `out` (`cols` values).
    fn row_f32(&self, file: &GgufFile, r: usize, out: &mut [f32]) {
        read_row(file, self.info, self.cols, self.first_row + r, out);
    }

    fn to_f32_vec(self, file: &GgufFile) -> Vec<f32> {
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
                    let first = part.0.first_row;
                    PackedMatrix::pack_quantized(rows, k, *q, |r, out| {
                        let s = first + source(part, r);
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
        for part in parts {
            file.release(part.0.info);
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
            let at = ((part.0.first_row + s) * k + j) * 2;
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
    for part in parts {
        file.release(part.0.info);
    }
    Ok(PackedMatrix::single(k, n, data))
}

/// The token embedding, kept in the file's type (or quantized to `quantize` if it is floats).
fn table(file: &GgufFile, w: &Weight<'_>, quantize: Option<QuantType>) -> Table {
    let table = copy_table(file, w, quantize);
    file.release(w.info);
    table
}

fn copy_table(file: &GgufFile, w: &Weight<'_>, quantize: Option<QuantType>) -> Table {
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

/// A layer's expert gate and up projections: two `[experts, width, d]` tensors, or one
/// `[experts, 2 · width, d]` (the converter's `--fuse-gate-up-exps`: each expert's gate rows,
/// then its up rows).
#[derive(Clone, Copy)]
enum ExpertRows<'f> {
    Separate(Weight<'f>, Weight<'f>),
    Fused(Weight<'f>),
}

/// llama.cpp's name of the fused gate and up projections of layer `layer`'s experts.
fn gate_up_exps(layer: usize) -> String {
    format!("blk.{layer}.ffn_gate_up_exps.weight")
}

/// A layer's MLP tensors, checked.
enum MlpWeights<'f> {
    Dense([Weight<'f>; 3]),
    Experts {
        router: Weight<'f>,
        bias: Option<Weight<'f>>,
        gate_up: ExpertRows<'f>,
        down: Weight<'f>,
        shared: Option<[Weight<'f>; 3]>,
    },
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
    if let Some(moe) = &c.moe {
        moe.check()?;
        // Tensors of pieces the architecture's metadata cannot declare (llama.cpp's
        // `llada-moe` has none): a file holding them is another model, not this one.
        let unused = file.tensors().iter().map(|t| t.name.as_str()).find(|n| {
            (moe.shared_expert_hidden_size.is_none() && n.contains("_shexp."))
                || (!moe.expert_bias && n.contains(".exp_probs_b."))
        });
        if let Some(name) = unused {
            return Err(LoadError::Unsupported {
                field: "general.architecture",
                value: format!("{} with {name}", c.family.gguf_arch()),
                reason: "the file has shared-expert or expert-bias tensors its architecture does not use",
            });
        }
    }
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
        // In checkpoint order: the first missing tensor of a layer is its first.
        let attn_norm = w(Tensor::AttnNorm, i)?;
        let projections = if c.fused_qkv {
            vec![w(Tensor::Qkv, i)?]
        } else {
            vec![
                w(Tensor::Query, i)?,
                w(Tensor::Key, i)?,
                w(Tensor::Value, i)?,
            ]
        };
        let attention = (
            attn_norm,
            projections,
            w(Tensor::AttnOut, i)?,
            w(Tensor::MlpNorm, i)?,
        );
        let biases = match (c.qkv_bias, c.fused_qkv) {
            (false, _) => None,
            (true, true) => Some(vec![w(Tensor::QkvBias, i)?]),
            (true, false) => Some(vec![
                w(Tensor::QueryBias, i)?,
                w(Tensor::KeyBias, i)?,
                w(Tensor::ValueBias, i)?,
            ]),
        };
        let out_bias = if c.attn_out_bias {
            Some(w(Tensor::AttnOutBias, i)?)
        } else {
            None
        };
        let qk_norm = if c.qk_norm {
            Some([w(Tensor::QueryNorm, i)?, w(Tensor::KeyNorm, i)?])
        } else {
            None
        };
        let mlp = match c.moe.as_ref().filter(|m| m.is_moe_layer(i)) {
            None => {
                MlpWeights::Dense([w(Tensor::Gate, i)?, w(Tensor::Up, i)?, w(Tensor::Down, i)?])
            }
            Some(moe) => {
                let (e, width, d) = (moe.experts, moe.expert_hidden_size, c.d_model);
                let gate_up = match file.tensor(&gate_up_exps(i)) {
                    Some(_) => ExpertRows::Fused(experts_weight(
                        file,
                        &gate_up_exps(i),
                        [e, width.saturating_mul(2), d],
                    )?),
                    None => ExpertRows::Separate(
                        experts_weight(file, &Tensor::ExpertGate(0).gguf_name(i), [e, width, d])?,
                        experts_weight(file, &Tensor::ExpertUp(0).gguf_name(i), [e, width, d])?,
                    ),
                };
                let down =
                    experts_weight(file, &Tensor::ExpertDown(0).gguf_name(i), [e, d, width])?;
                let shared = match moe.shared_expert_hidden_size {
                    Some(_) => Some([
                        w(Tensor::SharedGate, i)?,
                        w(Tensor::SharedUp, i)?,
                        w(Tensor::SharedDown, i)?,
                    ]),
                    None => None,
                };
                MlpWeights::Experts {
                    router: w(Tensor::Router, i)?,
                    bias: if moe.expert_bias {
                        Some(w(Tensor::ExpertBias, i)?)
                    } else {
                        None
                    },
                    gate_up,
                    down,
                    shared,
                }
            }
        };
        layers.push((attention, biases, out_bias, qk_norm, mlp));
    }
    // LLaDA's query and key rows are interleaved per head in its files.
    let qk_order = c.family.gguf_interleaves_qk().then_some(c.head_dim);
    let mut blocks = Vec::with_capacity(c.n_layers);
    for ((attn_norm, projections, out, ff_norm), biases, out_bias, qk_norm, mlp) in layers {
        let qkv_bias = biases.map(|b| {
            let mut bias = Vec::with_capacity(b.iter().map(|t| t.cols).sum());
            for t in &b {
                bias.extend(t.to_f32_vec(file));
            }
            bias
        });
        let swiglu = |[gate, up, down]: [Weight<'_>; 3]| -> Result<Swiglu, LoadError> {
            Ok(Swiglu {
                gate_up: stack(file, &[(gate, None), (up, None)], q)?,
                down: stack(file, &[(down, None)], q)?,
            })
        };
        let mlp = match mlp {
            MlpWeights::Dense(weights) => Mlp::Dense(swiglu(weights)?),
            MlpWeights::Experts {
                router,
                bias,
                gate_up,
                down,
                shared,
            } => {
                let moe = c
                    .moe
                    .as_ref()
                    .expect("a mixture layer has a mixture config");
                let width = moe.expert_hidden_size;
                let mut experts = Vec::with_capacity(moe.experts);
                for e in 0..moe.experts {
                    let (gate, up) = match gate_up {
                        ExpertRows::Separate(gate, up) => {
                            (gate.slice(e * width, width), up.slice(e * width, width))
                        }
                        ExpertRows::Fused(both) => (
                            both.slice(2 * e * width, width),
                            both.slice((2 * e + 1) * width, width),
                        ),
                    };
                    let down = down.slice(e * c.d_model, c.d_model);
                    experts.push(swiglu([gate, up, down])?);
                }
                Mlp::Experts(Experts {
                    router: stack(file, &[(router, None)], None)?,
                    bias: bias.map(|b| b.to_f32_vec(file)),
                    experts,
                    shared: shared.map(swiglu).transpose()?,
                })
            }
        };
        blocks.push(Block {
            attn_norm: attn_norm.to_f32_vec(file),
            qkv: match <[Weight<'_>; 3]>::try_from(projections) {
                Ok([wq, k, v]) => stack(file, &[(wq, qk_order), (k, qk_order), (v, None)], q)?,
                Err(fused) => stack(file, &[(fused[0], None)], q)?,
            },
            qkv_bias,
            qk_norm: qk_norm.map(|[qn, kn]| (qn.to_f32_vec(file), kn.to_f32_vec(file))),
            attn_out: stack(file, &[(out, None)], q)?,
            attn_out_bias: out_bias.map(|b| b.to_f32_vec(file)),
            ff_norm: ff_norm.to_f32_vec(file),
            mlp,
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
