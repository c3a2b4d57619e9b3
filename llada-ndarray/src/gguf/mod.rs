//! Reading GGUF files (format versions 2 and 3, little-endian), as llama.cpp's converter and
//! `llama-quantize` write them: the header, the metadata and the tensor table, from a memory
//! map. Every count, length and offset is checked against the file before anything is
//! allocated or read, so a hostile file is a [`GgufError`], never a panic or an allocation it
//! asks for.

mod export;
mod load;
mod plan;
mod random;
mod write;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use thiserror::Error;

pub use export::{FileType, Written, WrittenTensor, requantize, write_checkpoint};
pub use load::config_json;
pub(crate) use load::load_model;
pub use random::write_random;
pub use write::GgufWriter;

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";

/// Whether `path` is a GGUF file (it starts with the GGUF magic); `false` if it cannot be
/// read.
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == MAGIC
}

/// What is wrong with a GGUF file.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum GgufError {
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file (starts with {found:02x?}, expected \"GGUF\")")]
    Magic {
        /// The first bytes.
        found: Vec<u8>,
    },
    /// A format version this reader does not know.
    #[error("GGUF version {0} is not supported (2 and 3 are)")]
    Version(u32),
    /// The file ends inside a structure.
    #[error("truncated at byte {at}: {what} needs {needed} more bytes, {left} left")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where.
        at: usize,
        /// Bytes it needs.
        needed: u64,
        /// Bytes left in the file.
        left: usize,
    },
    /// A count (tensors, metadata entries, array elements) the file cannot hold.
    #[error("{what} count {count} cannot fit in the {left} bytes left")]
    Count {
        /// What is counted.
        what: &'static str,
        /// The count in the file.
        count: u64,
        /// Bytes left in the file.
        left: usize,
    },
    /// A string that is not UTF-8.
    #[error("{what} at byte {at} is not valid UTF-8")]
    Utf8 {
        /// What string.
        what: &'static str,
        /// Where.
        at: usize,
    },
    /// An unknown metadata value type.
    #[error("metadata {key:?} has unknown value type {ty}")]
    ValueType {
        /// The key.
        key: String,
        /// The type code.
        ty: u32,
    },
    /// Nested arrays deeper than this reader follows.
    #[error("metadata {key:?} nests arrays too deeply")]
    Nesting {
        /// The key.
        key: String,
    },
    /// A metadata key appears twice.
    #[error("metadata key {0:?} appears twice")]
    DuplicateKey(String),
    /// `general.alignment` is not a power of two.
    #[error("general.alignment {0} is not a power of two")]
    Alignment(u64),
    /// A tensor's description is impossible.
    #[error("tensor {name:?}: {reason}")]
    Tensor {
        /// The tensor.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// An unsigned integer (of any width in the file).
    Uint(u64),
    /// A signed integer (of any width).
    Int(i64),
    /// A float (f32 or f64).
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Uint(v) => Some(v),
            Value::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Float(v) => Some(v),
            Value::Uint(v) => Some(v as f64),
            Value::Int(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// A tensor's element type, by its ggml code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorType(pub u32);

impl TensorType {
    /// f32.
    pub const F32: Self = Self(0);
    /// f16.
    pub const F16: Self = Self(1);
    /// bf16.
    pub const BF16: Self = Self(30);

    /// ggml's name for the type (`"Q4_K"`, ...), or `"type N"` for a code it does not know.
    pub fn name(self) -> String {
        const NAMES: [&str; 31] = [
            "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
            "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
            "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
            "BF16",
        ];
        NAMES
            .get(self.0 as usize)
            .map_or_else(|| format!("type {}", self.0), |n| (*n).to_string())
    }

    /// `(values per block, bytes per block)` for the types whose layout this reader knows.
    pub(crate) fn layout(self) -> Option<(u64, u64)> {
        Some(match self.0 {
            0 => (1, 4),
            1 | 30 => (1, 2),
            2 => (32, 18),
            3 => (32, 20),
            6 => (32, 22),
            7 => (32, 24),
            8 => (32, 34),
            9 => (32, 36),
            10 => (256, 84),
            11 => (256, 110),
            12 => (256, 144),
            13 => (256, 176),
            14 => (256, 210),
            15 => (256, 292),
            24 => (1, 1),
            25 => (1, 2),
            26 => (1, 4),
            27 | 28 => (1, 8),
            _ => return None,
        })
    }
}

/// One tensor of the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Its name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Its dimensions, fastest-varying first (ggml's `ne`): a `[rows, cols]` matrix is
    /// `[cols, rows]`.
    pub dims: Vec<u64>,
    /// Its element type.
    pub ty: TensorType,
    /// Where its data starts in the file.
    pub offset: usize,
    /// Its size in bytes.
    pub bytes: usize,
}

/// An opened GGUF file: its metadata and tensor table, and a read-only map of its data.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    version: u32,
    metadata: HashMap<String, Value>,
    tensors: Vec<TensorInfo>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Deepest array nesting followed (llama.cpp writes flat arrays).
const MAX_NESTING: usize = 4;

/// A bounds-checked little-endian reader over the file.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.data.len() - self.at
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], GgufError> {
        if n > self.left() as u64 {
            return Err(GgufError::Truncated {
                what,
                at: self.at,
                needed: n,
                left: self.left(),
            });
        }
        let bytes = &self.data[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A count of items of at least `min_bytes` each, checked against the bytes left.
    fn count(&mut self, what: &'static str, min_bytes: u64) -> Result<usize, GgufError> {
        let count = self.u64(what)?;
        if count.saturating_mul(min_bytes) > self.left() as u64 {
            return Err(GgufError::Count {
                what,
                count,
                left: self.left(),
            });
        }
        Ok(count as usize)
    }

    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let at = self.at;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::Utf8 { what, at })
    }

    fn value(&mut self, key: &str, ty: u32, depth: usize) -> Result<Value, GgufError> {
        const WHAT: &str = "metadata value";
        Ok(match ty {
            0 => Value::Uint(u64::from(self.array::<1>(WHAT)?[0])),
            1 => Value::Int(i64::from(self.array::<1>(WHAT)?[0] as i8)),
            2 => Value::Uint(u64::from(u16::from_le_bytes(self.array(WHAT)?))),
            3 => Value::Int(i64::from(i16::from_le_bytes(self.array(WHAT)?))),
            4 => Value::Uint(u64::from(self.u32(WHAT)?)),
            5 => Value::Int(i64::from(i32::from_le_bytes(self.array(WHAT)?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.array(WHAT)?))),
            7 => Value::Bool(self.array::<1>(WHAT)?[0] != 0),
            8 => Value::String(self.string("metadata string")?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(GgufError::Nesting { key: key.into() });
                }
                let inner = self.u32("array type")?;
                let min = match inner {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => {
                        return Err(GgufError::ValueType {
                            key: key.into(),
                            ty: other,
                        });
                    }
                };
                let count = self.count("array element", min)?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.value(key, inner, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::Uint(self.u64(WHAT)?),
            11 => Value::Int(i64::from_le_bytes(self.array(WHAT)?)),
            12 => Value::Float(f64::from_le_bytes(self.array(WHAT)?)),
            other => {
                return Err(GgufError::ValueType {
                    key: key.into(),
                    ty: other,
                });
            }
        })
    }
}

impl GgufFile {
    /// Maps and parses `path`. Errors are [`crate::LoadError::Gguf`] (a malformed file) or
    /// [`crate::LoadError::Io`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, crate::LoadError> {
        let path = path.as_ref();
        let io = |source| crate::LoadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private; a file changed by another process while
        // mapped can change the values read, not this process's memory safety beyond that.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(path, map).map_err(|source| crate::LoadError::Gguf {
            path: path.to_path_buf(),
            source,
        })
    }

    fn parse(path: &Path, map: Mmap) -> Result<Self, GgufError> {
        let mut c = Cursor { data: &map, at: 0 };
        let magic = c.array::<4>("magic").map_err(|_| GgufError::Magic {
            found: map.iter().take(4).copied().collect(),
        })?;
        if magic != MAGIC {
            return Err(GgufError::Magic {
                found: magic.to_vec(),
            });
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        // Each tensor description takes at least 28 bytes, each metadata entry 13.
        let n_tensors = c.count("tensor", 28)?;
        let n_metadata = c.count("metadata entry", 13)?;
        let mut metadata = HashMap::with_capacity(n_metadata);
        for _ in 0..n_metadata {
            let key = c.string("metadata key")?;
            let ty = c.u32("metadata type")?;
            let value = c.value(&key, ty, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => return Err(GgufError::Alignment(v.as_u64().unwrap_or(0))),
            },
        };
        let mut raw = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32("tensor dimensions")?;
            if !(1..=4).contains(&n_dims) {
                return Err(GgufError::Tensor {
                    name,
                    reason: format!("{n_dims} dimensions (1 to 4 allowed)"),
                });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64("tensor dimension")?);
            }
            let ty = TensorType(c.u32("tensor type")?);
            let offset = c.u64("tensor offset")?;
            raw.push((name, dims, ty, offset));
        }
        // The data section starts at the next multiple of the alignment.
        let data_start = (c.at as u64).div_ceil(alignment) * alignment;
        let file_len = map.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut names = std::collections::HashSet::new();
        for (name, dims, ty, offset) in raw {
            let bad = |reason: String| GgufError::Tensor {
                name: name.clone(),
                reason,
            };
            if !names.insert(name.clone()) {
                return Err(bad("appears twice".into()));
            }
            let elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
            // Unknown types are kept (and refused by name when a model needs them), so their
            // size is unknown: 0 bytes.
            let bytes = match ty.layout() {
                Some((block, block_bytes)) => {
                    if dims[0] % block != 0 {
                        return Err(bad(format!(
                            "first dimension {} is not a multiple of {}'s block of {block}",
                            dims[0],
                            ty.name()
                        )));
                    }
                    (elements / block)
                        .checked_mul(block_bytes)
                        .ok_or_else(|| bad("size overflows".into()))?
                }
                None => 0,
            };
            if offset % alignment != 0 {
                return Err(bad(format!(
                    "data offset {offset} is not a multiple of the alignment {alignment}"
                )));
            }
            let start = data_start
                .checked_add(offset)
                .filter(|&s| s <= file_len)
                .ok_or_else(|| {
                    bad(format!(
                        "data offset {offset} lies past the end of the file"
                    ))
                })?;
            if bytes > file_len - start {
                return Err(bad(format!(
                    "its {bytes} bytes at {start} run past the end of the {file_len}-byte file"
                )));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset: start as usize,
                bytes: bytes as usize,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            map,
            version,
            metadata,
            tensors,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Size of the file in bytes.
    pub fn file_bytes(&self) -> usize {
        self.map.len()
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// Every metadata key.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.metadata.keys().map(String::as_str)
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's bytes (checked against the file when it was opened).
    pub fn data(&self, tensor: &TensorInfo) -> &[u8] {
        &self.map[tensor.offset..tensor.offset + tensor.bytes]
    }

    /// Drops `tensor`'s pages from this process's mapping once its values are packed
    /// elsewhere, so that a loaded model does not hold both the file's pages and its packed
    /// copy at once (the page cache keeps them; touching them again reads them back). Best
    /// effort.
    pub(crate) fn release(&self, tensor: &TensorInfo) {
        crate::weights::release_pages(&self.map, tensor.offset, tensor.bytes);
    }

    /// A tensor's values widened to f32, in the file's order (rows of `dims[0]` values), for
    /// every type this backend reads; another type is [`crate::LoadError::Dtype`] naming the
    /// tensor.
    pub fn tensor_f32(&self, tensor: &TensorInfo) -> Result<Vec<f32>, crate::LoadError> {
        let cols = tensor.dims.first().copied().unwrap_or(1) as usize;
        let rows = tensor.dims.iter().skip(1).product::<u64>() as usize;
        if !matches!(
            tensor.ty,
            TensorType::F32 | TensorType::F16 | TensorType::BF16
        ) && load::quant_type(tensor.ty).is_none()
        {
            return Err(crate::LoadError::Dtype {
                name: tensor.name.clone(),
                dtype: tensor.ty.name(),
            });
        }
        let mut out = vec![0.0; rows * cols];
        for (r, row) in out.chunks_exact_mut(cols.max(1)).enumerate() {
            load::read_row(self, tensor, cols, r, row);
        }
        Ok(out)
    }
}
