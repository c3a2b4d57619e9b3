//! A LLaDA backend on ONNX Runtime: point it at an ONNX export of a LLaDA model and at your own
//! `libonnxruntime`, and `llada_core::generate` runs on it.
//!
//! The runtime is loaded at run time (`ort`'s `load-dynamic`): from the path given to the
//! builder, else from `ORT_DYLIB_PATH`. Nothing is downloaded at build time. When no library
//! can be loaded the error lists the paths tried and how to get one
//! (`pip install onnxruntime==1.31.1`).
//!
//! Models come from the project's exporter (`llada-ort/export/export_onnx.py`), whose default
//! *cached graph* takes the key/value cache as inputs and outputs: with it, the sampler's
//! [`CacheMode::Prefix`](llada_core::CacheMode) and `Dual` (and LLaDA2.x's exact prefix cache)
//! compute only the block, as on the ndarray backend, and a warm step allocates nothing (its
//! tensors are bound once per shape through `IoBinding`; with CUDA the cache stays in GPU
//! memory). A plain graph (`input_ids`, `attention_mask` → `logits`, also other exporters')
//! runs every pass in full. Weights may be f32, f16, bf16 or 4-bit `MatMulNBits`.
//!
//! The process's ONNX Runtime environment is created with telemetry off, and its log goes to
//! `tracing` (target `ort`) at the most detailed level the subscriber in place at that moment
//! records, warnings at least.
//!
//! ```no_run
//! use llada_ort::{ExecutionProvider, OrtPredictor};
//!
//! let predictor = OrtPredictor::builder("tests/fixtures/tiny-llada/model.onnx")
//!     .library("/opt/onnxruntime/lib/libonnxruntime.so")
//!     .intra_threads(4)
//!     .execution_provider(ExecutionProvider::Cuda { device_id: 0 }) // falls back to CPU
//!     .build()?;
//! println!("running on {:?}", predictor.providers());
//! # Ok::<(), llada_ort::OrtError>(())
//! ```
//!
//! # Features
//! - `cuda`: the CUDA execution provider (falls back to CPU with a warning when it cannot start).
//! - `tensorrt`, `coreml`, `directml`, `nnapi`, `xnnpack`: the other execution providers,
//!   passed through to `ort`.

mod error;
mod kv;
mod predictor;
mod runtime;

pub use error::{OrtError, RUNTIME_HINT};
pub use kv::{LOGITS_WINDOW_INPUT, POSITION_START_INPUT};
pub use predictor::{
    BLOCK_LENGTH_INPUT, ExecutionProvider, GraphOptimization, OrtPredictor, OrtPredictorBuilder,
    sessions_created,
};
pub use runtime::loaded_library;
