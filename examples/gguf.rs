//! Write a LLaDA checkpoint as one GGUF file: llama.cpp runs it (`llama-diffusion-cli`), and
//! so does this library (`generate --model model.gguf`), with no other file beside it. Given
//! a GGUF file instead, quantize it as `llama-quantize` would.
//!
//! ```sh
//! cargo run --release --example gguf -- --type q4_k_m --out tiny-q4_k_m.gguf
//! cargo run --release --example gguf -- --model ~/LLaDA-8B-Instruct --type q4_k_m \
//!     --out llada-8b-instruct-q4_k_m.gguf
//! cargo run --release --example gguf -- --model llada-8b-instruct-f16.gguf --type q8_0 \
//!     --out llada-8b-instruct-q8_0.gguf
//! ```

mod common;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use llada::ndarray::gguf::FileType;
use llada::{BackendChoice, ModelFiles};

/// Write a model directory (config.json, tokenizer files, safetensors weights) as a GGUF file,
/// or quantize a GGUF file.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Model directory, or a GGUF file (its F32/F16/BF16 tensors are quantized).
    #[arg(long, default_value_os_t = llada_test_support::bundled_model())]
    model: PathBuf,
    /// Tensor types: f32, f16, q8_0, q4_0, q4_k_m or q6_k, as llama.cpp's converter (f32,
    /// f16) or llama-quantize (the others) would give them.
    #[arg(long = "type", default_value = "q8_0")]
    file_type: FileType,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    common::init_logging();
    let cli = Cli::parse();
    let files = ModelFiles::open(&cli.model, &BackendChoice::Ndarray)
        .with_context(|| format!("reading {}", cli.model.display()))?;
    let written = files.write_gguf(&cli.out, cli.file_type)?;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for t in &written.tensors {
        let name = t.ty.name();
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 += 1,
            None => counts.push((name, 1)),
        }
    }
    let counts: Vec<String> = counts.iter().map(|(n, c)| format!("{c} {n}")).collect();
    println!(
        "wrote {} ({:.1} MiB, {} tensors: {})",
        written.path.display(),
        written.bytes as f64 / (1 << 20) as f64,
        written.tensors.len(),
        counts.join(", ")
    );
    Ok(())
}
