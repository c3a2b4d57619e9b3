//! Reading safetensors checkpoints, single-file or sharded, from memory maps.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::SafeTensors;

use crate::config::Config;
use crate::error::LoadError;
use crate::gemm::{Dtype, PackedMatrix, PanelData};
use crate::quant::{QuantType, format_for};

/// The file names a checkpoint directory uses.
pub(crate) const SINGLE_FILE: &str = "model.safetensors";
pub(crate) const INDEX_FILE: &str = "model.safetensors.index.json";

struct Shard {
    map: Mmap,
}

#[derive(Clone, Debug)]
struct Entry {
    shard: usize,
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    offset: usize,
    len: usize,
}

/// A tensor's bytes in one of the dtypes this backend reads.
#[derive(Clone, Copy)]
pub(crate) struct TensorData<'a> {
    pub(crate) dtype: Dtype,
    bytes: &'a [u8],
}

impl TensorData<'_> {
    fn element(&self, i: usize) -> f32 {
        match self.dtype {
            Dtype::F32 => {
                let b = &self.bytes[i * 4..i * 4 + 4];
                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }
            Dtype::Bf16 => bf16::from_bits(self.bits16(i)).to_f32(),
            Dtype::F16 => f16::from_bits(self.bits16(i)).to_f32(),
        }
    }

    fn bits16(&self, i: usize) -> u16 {
        u16::from_le_bytes([self.bytes[i * 2], self.bytes[i * 2 + 1]])
    }

    /// The raw 16-bit patterns of a half-precision tensor.
    pub(crate) fn bits(&self) -> impl Iterator<Item = u16> + '_ {
        self.bytes
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    /// Widens elements `start..start + out.len()` into `out`.
    pub(crate) fn read_f32(&self, start: usize, out: &mut [f32]) {
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.element(start + j);
        }
    }

    /// All elements, widened.
    pub(crate) fn to_f32_vec(self) -> Vec<f32> {
        let len = self.bytes.len() / if self.dtype == Dtype::F32 { 4 } else { 2 };
        let mut out = vec![0.0; len];
        self.read_f32(0, &mut out);
        out
    }
}

/// The memory-mapped shards of a checkpoint and where each tensor lies in them.
pub(crate) struct Checkpoint {
    shards: Vec<Shard>,
    entries: HashMap<String, Entry>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The weights file of a checkpoint directory: `model.safetensors`, else
/// `model.safetensors.index.json`.
pub(crate) fn find_in(dir: &Path) -> Result<PathBuf, LoadError> {
    [SINGLE_FILE, INDEX_FILE]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| LoadError::NoWeights {
            dir: dir.to_path_buf(),
        })
}

/// Whether `path` names a shard index (`*.index.json`) rather than a safetensors file.
fn is_index(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".index.json"))
}

impl Checkpoint {
    /// Maps a safetensors file, or every shard named by a shard index (`*.index.json`, its
    /// shards beside it).
    pub(crate) fn open(path: &Path) -> Result<Self, LoadError> {
        let files = if is_index(path) {
            shard_files(path)?
        } else {
            vec![path.to_path_buf()]
        };
        let mut shards = Vec::with_capacity(files.len());
        let mut entries = HashMap::new();
        for path in files {
            let file = File::open(&path).map_err(io(&path))?;
            // SAFETY: the map is read-only and private; a checkpoint modified by another process
            // while loading could change the values read, but not memory safety of this
            // process beyond what reading a changing file gives.
            let map = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
            let parsed =
                SafeTensors::deserialize(&map).map_err(|source| LoadError::Safetensors {
                    path: path.clone(),
                    source,
                })?;
            let base = map.as_ptr() as usize;
            for (name, view) in parsed.iter() {
                let data = view.data();
                entries.insert(
                    name.to_string(),
                    Entry {
                        shard: shards.len(),
                        dtype: view.dtype(),
                        shape: view.shape().to_vec(),
                        offset: data.as_ptr() as usize - base,
                        len: data.len(),
                    },
                );
            }
            shards.push(Shard { map });
        }
        Ok(Self { shards, entries })
    }

    /// Bytes of every shard together.
    pub(crate) fn file_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.map.len()).sum()
    }

    /// Checks that every tensor the configuration needs is present, with its shape and a
    /// supported dtype.
    pub(crate) fn check(&self, config: &Config) -> Result<(), LoadError> {
        for (name, expected) in config.tensors() {
            let entry = self
                .entries
                .get(&name)
                .ok_or_else(|| LoadError::MissingTensor {
                    name: name.clone(),
                    expected: expected.clone(),
                })?;
            if entry.shape != expected {
                return Err(LoadError::TensorShape {
                    name,
                    expected,
                    found: entry.shape.clone(),
                });
            }
            dtype_of(&name, entry.dtype)?;
        }
        Ok(())
    }

    /// The bytes of a tensor checked by [`check`](Self::check).
    pub(crate) fn tensor(&self, name: &str) -> Result<TensorData<'_>, LoadError> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| LoadError::MissingTensor {
                name: name.to_string(),
                expected: Vec::new(),
            })?;
        let dtype = dtype_of(name, entry.dtype)?;
        let bytes = &self.shards[entry.shard].map[entry.offset..entry.offset + entry.len];
        Ok(TensorData { dtype, bytes })
    }

    /// Tells the kernel the pages of `name` are no longer needed, so that loading a large
    /// checkpoint does not hold both the file pages and the packed copy. Best effort.
    pub(crate) fn release(&self, name: &str) {
        let Some(entry) = self.entries.get(name) else {
            return;
        };
        release_pages(&self.shards[entry.shard].map, entry.offset, entry.len);
    }

    /// Packs the row-wise concatenation of `names` (each `[n_i, k]`) for `x · Wᵀ`, keeping the
    /// checkpoint's dtype when all parts share it, or quantized to `quantize` (see
    /// [`crate::Quantization`] for the fallbacks).
    pub(crate) fn pack(
        &self,
        names: &[String],
        quantize: Option<QuantType>,
    ) -> Result<PackedMatrix, LoadError> {
        let mut parts = Vec::with_capacity(names.len());
        for name in names {
            let entry = &self.entries[name.as_str()];
            parts.push((self.tensor(name)?, entry.shape[0], entry.shape[1]));
        }
        let k = parts[0].2;
        let n: usize = parts.iter().map(|p| p.1).sum();
        let dtype = if parts.iter().all(|p| p.0.dtype == parts[0].0.dtype) {
            parts[0].0.dtype
        } else {
            Dtype::F32
        };
        // Row r of the concatenation: (part, row within it).
        let locate = |mut r: usize| {
            for (i, p) in parts.iter().enumerate() {
                if r < p.1 {
                    return (i, r);
                }
                r -= p.1;
            }
            unreachable!("row inside the concatenation")
        };
        if let Some(q) = quantize.and_then(|q| format_for(q, k)) {
            let data = PackedMatrix::quantize_rows(n, k, q, |r, out| {
                let (i, row) = locate(r);
                parts[i].0.read_f32(row * k, out);
            });
            for name in names {
                self.release(name);
            }
            return Ok(PackedMatrix::single(k, n, data));
        }
        let data = match dtype {
            Dtype::F32 => PanelData::F32(PackedMatrix::pack(n, k, |r, out: &mut [f32]| {
                let (i, row) = locate(r);
                parts[i].0.read_f32(row * k, out);
            })),
            Dtype::Bf16 => PanelData::Bf16(PackedMatrix::pack(n, k, |r, out: &mut [bf16]| {
                let (i, row) = locate(r);
                for (j, o) in out.iter_mut().enumerate() {
                    *o = bf16::from_bits(parts[i].0.bits16(row * k + j));
                }
            })),
            Dtype::F16 => PanelData::F16(PackedMatrix::pack(n, k, |r, out: &mut [f16]| {
                let (i, row) = locate(r);
                for (j, o) in out.iter_mut().enumerate() {
                    *o = f16::from_bits(parts[i].0.bits16(row * k + j));
                }
            })),
        };
        for name in names {
            self.release(name);
        }
        Ok(PackedMatrix::single(k, n, data))
    }
}

fn dtype_of(name: &str, dtype: safetensors::Dtype) -> Result<Dtype, LoadError> {
    match dtype {
        safetensors::Dtype::F32 => Ok(Dtype::F32),
        safetensors::Dtype::BF16 => Ok(Dtype::Bf16),
        safetensors::Dtype::F16 => Ok(Dtype::F16),
        other => Err(LoadError::Dtype {
            name: name.to_string(),
            dtype: format!("{other:?}"),
        }),
    }
}

/// The shard files an index names (beside it), each once, in order of first appearance.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let dir = index.parent().unwrap_or(Path::new("."));
    let text = std::fs::read_to_string(index).map_err(io(index))?;
    let bad = |reason: String| LoadError::ShardIndex {
        path: index.to_path_buf(),
        reason,
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = value
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("shard of {tensor} is not a string")))?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(bad(format!(
                "shard name {file:?} must be a file in the model directory"
            )));
        }
        let path = dir.join(file);
        if !files.contains(&path) {
            if !path.is_file() {
                return Err(bad(format!(
                    "shard {file} (holding {tensor}) does not exist"
                )));
            }
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(bad("`weight_map` is empty".into()));
    }
    Ok(files)
}

/// Drops the whole pages of `map[offset..offset + len]` from this process's mapping
/// (`MADV_DONTNEED`) once their values live elsewhere: the page cache keeps them, and touching
/// them again reads them back. Best effort; the safetensors and GGUF loaders both use it.
pub(crate) fn release_pages(map: &Mmap, offset: usize, len: usize) {
    let page = 4096;
    let start = offset.div_ceil(page) * page;
    let end = (offset + len) / page * page;
    if end > start {
        // SAFETY: the mapping is read-only and backed by the file; dropped pages are read
        // again from the file if touched, so no data can be lost.
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
        };
    }
}
