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

    /// Adds a metadata entry (`u32` for [`Value::Uint`], `i32` for [`Value::Int`], `f32` for
    /// [`Value::Float`], as llama.cpp writes hyper-parameters; wider values keep 64 bits).
    pub fn metadata(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        self.metadata.push((key.into(), value));
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

    /// Writes the file.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut header = Vec::new();
        header.extend_from_slice(&super::MAGIC);
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut header, key);
            put_value(&mut header, value, true);
        }
        let mut offset = 0usize;
        for (name, dims, ty, data) in &self.tensors {
            put_string(&mut header, name);
            header.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&ty.0.to_le_bytes());
            header.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = (offset + data.len()).div_ceil(ALIGNMENT) * ALIGNMENT;
        }
        header.resize(header.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
        out.write_all(&header)?;
        for (_, _, _, data) in &self.tensors {
            out.write_all(data)?;
            let pad = data.len().div_ceil(ALIGNMENT) * ALIGNMENT - data.len();
            out.write_all(&[0u8; ALIGNMENT][..pad])?;
        }
        Ok(())
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
