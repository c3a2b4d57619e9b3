//! Writing GGUF files (version 3): metadata and tensors, laid out as llama.cpp reads them.

use std::io::{self, Write};

use super::{TensorType, Value};

/// Alignment of the data section and of every tensor in it (GGUF's default).
const ALIGNMENT: usize = 32;

/// A GGUF file under construction: metadata entries and tensors, written in the order given.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, TensorType, Vec<u8>)>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a metadata entry (`u32` for [`Value::Uint`], `i32` for [`Value::Int`], `f32` for
    /// [`Value::Float`], as llama.cpp writes hyper-parameters; wider values keep 64 bits). A
    /// key set again keeps its place and takes the new value.
    pub fn metadata(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key, value)),
        }
        self
    }

    /// Adds a tensor: `dims` fastest-varying first (ggml's `ne`), `data` its bytes.
    pub fn tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: TensorType,
        data: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push((name.into(), dims.to_vec(), ty, data));
        self
    }

    /// Writes the file, each tensor's data as given (even when it does not fit its dims and
    /// type: tests write malformed files this way).
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let table: Vec<_> = self
            .tensors
            .iter()
            .map(|(name, dims, ty, data)| (name.as_str(), dims.as_slice(), *ty, data.len()))
            .collect();
        self.write_with(out, &table, |i, sink| sink.write_all(&self.tensors[i].3))
    }

    /// Writes the metadata, the tensor table of `tensors` (name, dims fastest first, type) and
    /// then each tensor's data, which `data(i, sink)` writes into `sink` as it makes it, so
    /// that a file larger than memory never has to be held whole (tensors added with
    /// [`tensor`](Self::tensor) are not written here). A tensor whose data is not exactly
    /// its size is an [`io::ErrorKind::InvalidData`] error.
    pub fn write_streaming<E: From<io::Error>>(
        &self,
        out: &mut impl Write,
        tensors: &[(String, Vec<u64>, TensorType)],
        data: impl FnMut(usize, &mut dyn Write) -> Result<(), E>,
    ) -> Result<(), E> {
        let table = tensors
            .iter()
            .map(|(name, dims, ty)| {
                let size = tensor_bytes(dims, *ty).ok_or_else(|| {
                    invalid(
                        name,
                        "a type of unknown layout or a row that is not whole blocks",
                    )
                })?;
                Ok((name.as_str(), dims.as_slice(), *ty, size))
            })
            .collect::<io::Result<Vec<_>>>()?;
        self.write_with(out, &table, data)
    }

    /// Writes the header for `tensors` (name, dims, type, bytes) and then their data.
    fn write_with<E: From<io::Error>>(
        &self,
        out: &mut impl Write,
        tensors: &[(&str, &[u64], TensorType, usize)],
        mut data: impl FnMut(usize, &mut dyn Write) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut header = Vec::new();
        header.extend_from_slice(&super::MAGIC);
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut header, key);
            put_value(&mut header, value, true);
        }
        let mut offset = 0usize;
        for &(name, dims, ty, size) in tensors {
            put_string(&mut header, name);
            header.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&ty.0.to_le_bytes());
            header.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = (offset + size).div_ceil(ALIGNMENT) * ALIGNMENT;
        }
        header.resize(header.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
        out.write_all(&header)?;
        for (i, &(name, _, _, size)) in tensors.iter().enumerate() {
            let mut sink = Counted {
                inner: &mut *out,
                written: 0,
            };
            data(i, &mut sink)?;
            if sink.written != size {
                let found = sink.written;
                return Err(
                    invalid(name, &format!("{found} bytes of data, expected {size}")).into(),
                );
            }
            let pad = size.div_ceil(ALIGNMENT) * ALIGNMENT - size;
            out.write_all(&[0u8; ALIGNMENT][..pad])?;
        }
        Ok(())
    }
}

/// Bytes of a tensor of `dims` in `ty`: `None` for a type of unknown layout or rows that are
/// not whole blocks.
fn tensor_bytes(dims: &[u64], ty: TensorType) -> Option<usize> {
    let (block, bytes) = ty.layout()?;
    let row = *dims.first().unwrap_or(&1);
    if !row.is_multiple_of(block) {
        return None;
    }
    let count = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d))?;
    usize::try_from(count / block * bytes).ok()
}

fn invalid(tensor: &str, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("tensor {tensor}: {what}"),
    )
}

/// A writer that counts what passes through it.
struct Counted<'w, W: Write + ?Sized> {
    inner: &'w mut W,
    written: usize,
}

impl<W: Write + ?Sized> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The type code and bytes of a value; `tagged` writes the type code first.
fn put_value(out: &mut Vec<u8>, value: &Value, tagged: bool) {
    let code = |out: &mut Vec<u8>, c: u32| {
        if tagged {
            out.extend_from_slice(&c.to_le_bytes());
        }
    };
    match value {
        Value::Uint(v) => match u32::try_from(*v) {
            Ok(v32) => {
                code(out, 4);
                out.extend_from_slice(&v32.to_le_bytes());
            }
            Err(_) => {
                code(out, 10);
                out.extend_from_slice(&v.to_le_bytes());
            }
        },
        Value::Int(v) => match i32::try_from(*v) {
            Ok(v32) => {
                code(out, 5);
                out.extend_from_slice(&v32.to_le_bytes());
            }
            Err(_) => {
                code(out, 11);
                out.extend_from_slice(&v.to_le_bytes());
            }
        },
        Value::Float(v) => {
            code(out, 6);
            out.extend_from_slice(&(*v as f32).to_le_bytes());
        }
        Value::Bool(b) => {
            code(out, 7);
            out.push(u8::from(*b));
        }
        Value::String(s) => {
            code(out, 8);
            put_string(out, s);
        }
        Value::Array(items) => {
            code(out, 9);
            // Arrays are homogeneous: the first item's type stands for all (strings if empty).
            let inner = match items.first() {
                Some(first) => {
                    let mut probe = Vec::new();
                    put_value(&mut probe, first, true);
                    u32::from_le_bytes(probe[..4].try_into().expect("a type code"))
                }
                None => 8,
            };
            out.extend_from_slice(&inner.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item, false);
            }
        }
    }
}
