//! What a GGUF file this library writes holds: its file types, and for each tensor of a
//! model the name, shape and type llama.cpp's converter (`f32`, `f16`) or `llama-quantize`
//! (`q8_0`, `q4_0`, `q4_k_m`, `q6_k`) would give it.

use super::TensorType;
use crate::config::Config;
use crate::error::LoadError;
use crate::models::Tensor;
use crate::quant::QuantType;

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
    pub(super) const fn code(self) -> u64 {
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

pub(super) fn quant_type(ty: TensorType) -> Option<QuantType> {
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
pub(super) struct Planned {
    /// The tensors whose rows it stacks, `source_rows` rows each: one, or every expert of a
    /// layer (llama.cpp's `*_exps` tensors are `[experts, rows, cols]`).
    pub(super) sources: Vec<String>,
    pub(super) source_rows: usize,
    pub(super) name: String,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) ty: TensorType,
    /// `Some(head_dim)` for LLaDA's `attn_q` / `attn_k`, whose rows llama.cpp interleaves.
    pub(super) interleave: Option<usize>,
    /// A vector (norm, bias): one GGUF dimension.
    pub(super) vector: bool,
}

/// The tensors of `config`'s checkpoint, in file order, with llama.cpp's names and the types
/// `file_type` gives them.
pub(super) fn plan(config: &Config, file_type: FileType) -> Vec<Planned> {
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
pub(super) fn checkpoint_row(g: usize, head_dim: usize) -> usize {
    let (head, j) = (g / head_dim, g % head_dim);
    head * head_dim + (j % 2) * (head_dim / 2) + j / 2
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
