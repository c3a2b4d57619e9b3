//! LLaDA backend on ONNX Runtime.
//!
//! Not implemented yet: this crate is an empty placeholder in the workspace layout. It exports
//! nothing, so nothing can be mistaken for a working backend.
