//! The fuzz targets' bodies: each takes arbitrary bytes and must return, never panic, abort or
//! hang, whatever the bytes. `tests/fuzz` runs them under libFuzzer (nightly, `cargo fuzz`);
//! `tests/replay.rs` runs every seed and every saved finding through them on stable.
//!
//! - [`gguf`]: the bytes are a GGUF file: parsed, turned into a model and a tokenizer, run.
//! - [`safetensors`]: the bytes are `model.safetensors` beside the bundled `config.json`.
//! - [`config`]: the bytes are `config.json` beside the bundled weights.
//! - [`chat`]: the bytes are a `tokenizer_config.json` (its chat template) and messages.
//! - [`c_abi`]: the bytes are the C ABI's parameter structs, a prompt and a buffer size, for a
//!   generation on the bundled model through the C entry points.
//! - [`sampler`]: the bytes are generation parameters, a canvas and the logits a predictor
//!   returns; the reverse process's invariants are checked at every step.

use std::path::PathBuf;
use std::sync::OnceLock;

mod c_abi;
mod files;
mod sampler;
mod seeds;

pub use c_abi::c_abi;
pub use files::{chat, config, gguf, safetensors};
pub use sampler::sampler;
pub use seeds::seeds;

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its fuzz target and corpus folder.
pub const TARGETS: [(&str, Target); 6] = [
    ("gguf", gguf),
    ("safetensors", safetensors),
    ("config", config),
    ("chat", chat),
    ("c_abi", c_abi),
    ("sampler", sampler),
];

/// Reads fields from the fuzzer's bytes; past the end every read is zero.
pub(crate) struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    pub(crate) fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    pub(crate) fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let head = self.take(4);
        b[..head.len()].copy_from_slice(head);
        u32::from_le_bytes(b)
    }

    pub(crate) fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let head = self.take(8);
        b[..head.len()].copy_from_slice(head);
        u64::from_le_bytes(b)
    }

    pub(crate) fn f32(&mut self) -> f32 {
        f32::from_bits(self.u32())
    }

    pub(crate) fn f64(&mut self) -> f64 {
        f64::from_bits(self.u64())
    }

    pub(crate) fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A number in `0..=max`.
    pub(crate) fn below(&mut self, max: usize) -> usize {
        self.u32() as usize % (max + 1)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }
}

/// A file of this process for a target to write its input to (one per target and thread).
pub(crate) fn scratch_path(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("llada-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    });
    let thread = format!("{:?}", std::thread::current().id())
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>();
    dir.join(format!("{thread}-{name}"))
}
