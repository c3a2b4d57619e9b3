//! The C ABI of llada: `include/llada.h`, generated from this crate by cbindgen.
//!
//! C and C++ hosts load a model directory once ([`llada_model_load`]), create one context per
//! thread ([`llada_context_new`]) and generate from ids or text, with a step callback for
//! progress, streaming and cancellation. Conventions (statuses, last error, buffers, handles)
//! follow llama.cpp's `llama.h` and rustls-ffi; see the header's preamble.
#![allow(clippy::missing_safety_doc)] // every unsafe export documents its contract in `# Safety`

mod params;
mod status;

use std::ffi::{CString, c_char, c_void};
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use llada::ndarray::Quantization;
use llada::{
    BackendChoice, LikelihoodOptions, LoadOptions, Message, Model, OrtOptions, Pipeline, Progress,
};

pub use params::*;
use status::{Failure, guard};
pub use status::{LladaStatus, llada_last_error, llada_last_error_copy, llada_status_str};

/// Major version of the library (the crate's).
pub const LLADA_VERSION_MAJOR: u32 = 0;
/// Minor version of the library.
pub const LLADA_VERSION_MINOR: u32 = 1;
/// Patch version of the library.
pub const LLADA_VERSION_PATCH: u32 = 0;
/// Version of the C ABI: incremented on every incompatible change of this header (a field added
/// to a struct, a signature changed). Compare with llada_abi_version() at start-up.
pub const LLADA_ABI_VERSION: u32 = 3;

/// A loaded model: tokenizer, chat template, special ids and weights. Shared by contexts;
/// thread-safe.
pub struct LladaModel {
    inner: Arc<Model>,
}

/// Per-thread generation state over a model. Use a context from one thread at a time.
pub struct LladaContext {
    pipeline: Pipeline,
}

/// What a step callback sees.
#[repr(C)]
#[derive(Debug)]
pub struct LladaStepEvent {
    /// Index of the block being denoised.
    pub block: u32,
    /// Number of blocks.
    pub num_blocks: u32,
    /// Step within the block.
    pub step: u32,
    /// Steps per block.
    pub steps_per_block: u32,
    /// Forward passes so far.
    pub forward_passes: u32,
    /// Rows being generated.
    pub batch: u32,
    /// Generated positions per row.
    pub gen_length: u32,
    /// The generated ids so far, `batch × gen_length`, row-major (the mask id where masked).
    pub tokens: *const u32,
    /// Row 0's partially denoised text (masked positions shown as "░"), UTF-8, NUL-terminated.
    pub text: *const c_char,
}

/// Called after every denoising step with the event and the caller's `user_data`; return true
/// to continue, false to cancel (the call then returns LLADA_STATUS_CANCELLED). The event and
/// its pointers are valid only during the call. Must not unwind.
pub type LladaStepCallback =
    Option<extern "C" fn(event: *const LladaStepEvent, user_data: *mut c_void) -> bool>;

/// The library's version, e.g. "0.1.0" (static string).
#[unsafe(no_mangle)]
pub extern "C" fn llada_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version this library implements. A host checks once, at start-up, that it equals
/// the LLADA_ABI_VERSION of the header it was compiled with, and refuses to run otherwise:
///
/// ```c
/// if (llada_abi_version() != LLADA_ABI_VERSION) { /* rebuild against the matching llada.h */ }
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn llada_abi_version() -> u32 {
    LLADA_ABI_VERSION
}

/// A pointer argument that must not be NULL, writable (an output or a context); NULL is a
/// NULL_ARG failure naming `name`.
unsafe fn non_null_mut<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: the caller passes NULL or a valid, writable pointer.
    unsafe { ptr.as_mut() }.ok_or_else(|| Failure::null(name))
}

/// A pointer argument that must not be NULL, read only (a model).
unsafe fn non_null<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: the caller passes NULL or a valid pointer.
    unsafe { ptr.as_ref() }.ok_or_else(|| Failure::null(name))
}

/// Frees a handle made by `Box::into_raw`: NULL is a no-op, and a panic in a destructor stays
/// on this side of the ABI.
unsafe fn free_handle<T>(handle: *mut T) {
    if !handle.is_null() {
        // SAFETY: the pointer came from Box::into_raw and is not freed yet (caller's contract).
        let _ =
            std::panic::catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(handle) })));
    }
}

/// Writes `values` to a caller buffer of `capacity`, and their count to `len`.
unsafe fn write_slice<T: Copy>(
    values: &[T],
    out: *mut T,
    capacity: usize,
    len: *mut usize,
) -> Result<(), Failure> {
    // SAFETY: the caller's contract for `len`.
    let len = unsafe { non_null_mut(len, "out_len") }?;
    if values.len() > capacity {
        *len = values.len();
        return Err(Failure::new(
            LladaStatus::BufferTooSmall,
            format!(
                "the output needs {} elements, the buffer holds {capacity}",
                values.len()
            ),
        ));
    }
    if out.is_null() && !values.is_empty() {
        return Err(Failure::null("out"));
    }
    if !values.is_empty() {
        // SAFETY: `out` holds `capacity >= values.len()` elements (caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out, values.len()) };
    }
    *len = values.len();
    Ok(())
}

/// Writes `text` NUL-terminated; `needed` receives its size with the NUL.
unsafe fn write_text(
    text: &str,
    out: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> Result<(), Failure> {
    let bytes = text.as_bytes();
    let size = bytes.len() + 1;
    // SAFETY: the caller's contract for `needed`.
    let needed = unsafe { non_null_mut(needed, "out_size") }?;
    if size > capacity {
        *needed = size;
        return Err(Failure::new(
            LladaStatus::BufferTooSmall,
            format!("the text needs {size} bytes with its NUL, the buffer holds {capacity}"),
        ));
    }
    if out.is_null() {
        return Err(Failure::null("out"));
    }
    // SAFETY: `out` holds `capacity >= size` bytes (caller's contract).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), out, bytes.len());
        *out.add(bytes.len()) = 0;
    }
    *needed = size;
    Ok(())
}

/// Loads a model directory: config.json, tokenizer.json, tokenizer_config.json and the weights
/// (model.safetensors or model.safetensors.index.json with its shards for ndarray,
/// model.onnx for ORT), each read once; or a GGUF file (ndarray), the whole model in one file.
/// `params->quantize` quantizes the weights while loading. `params` may be NULL for the defaults. On success
/// `*out_model` receives the model (free it with llada_model_free); on failure `*out_model`
/// is left untouched and llada_last_error() names what failed (the file, tensor or runtime
/// library) with its causes. A missing or unloadable ONNX Runtime is
/// LLADA_STATUS_BACKEND; a malformed model file LLADA_STATUS_MODEL.
///
/// # Safety
/// `dir` must be a NUL-terminated string, `params` NULL or valid, `out_model` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llada_model_load(
    dir: *const c_char,
    params: *const LladaModelParams,
    out_model: *mut *mut LladaModel,
) -> LladaStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let dir = unsafe { params::text_arg(dir, "dir") }?;
        // SAFETY: caller's contract.
        let out_model = unsafe { non_null_mut(out_model, "out_model") }?;
        // SAFETY: caller's contract.
        let params = unsafe { params.as_ref() }
            .copied()
            .unwrap_or_else(|| llada_model_default_params());
        let choice = match params.backend {
            LLADA_BACKEND_NDARRAY => BackendChoice::Ndarray,
            LLADA_BACKEND_ORT => {
                let cuda = match params.execution_provider {
                    LLADA_PROVIDER_CPU => false,
                    LLADA_PROVIDER_CUDA => true,
                    other => {
                        return Err(Failure::invalid(format!(
                            "unknown execution provider {other}"
                        )));
                    }
                };
                // SAFETY: caller's contract.
                let library = unsafe { params::path_arg(params.ort_library, "ort_library") }?;
                BackendChoice::Ort(OrtOptions::default().with_library(library).with_cuda(cuda))
            }
            other => return Err(Failure::invalid(format!("unknown backend {other}"))),
        };
        let quantize = match params.quantize {
            LLADA_QUANTIZE_NONE => None,
            LLADA_QUANTIZE_Q8_0 => Some(Quantization::Q8_0),
            LLADA_QUANTIZE_Q4_0 => Some(Quantization::Q4_0),
            LLADA_QUANTIZE_Q4_K => Some(Quantization::Q4K),
            LLADA_QUANTIZE_Q6_K => Some(Quantization::Q6K),
            other => return Err(Failure::invalid(format!("unknown quantization {other}"))),
        };
        let options = LoadOptions::default().with_quantize(quantize);
        let model = Model::load_with(dir, &choice, &options)?;
        *out_model = Box::into_raw(Box::new(LladaModel { inner: model }));
        Ok(())
    })
}

/// Releases a model. NULL is a no-op. Contexts created from it stay valid.
///
/// # Safety
/// `model` must be NULL or a pointer from llada_model_load, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llada_model_free(model: *mut LladaModel) {
    // SAFETY: NULL or a pointer from llada_model_load, not freed before (caller's contract).
    unsafe { free_handle(model) }
}

/// Creates a context over `model` (one per thread that generates). `params` may be NULL.
///
/// # Safety
/// `model` must be a live model, `params` NULL or valid, `out_context` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llada_context_new(
    model: *const LladaModel,
    params: *const LladaContextParams,
    out_context: *mut *mut LladaContext,
) -> LladaStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let model = unsafe { non_null(model, "model") }?;
        // SAFETY: caller's contract.
        let out_context = unsafe { non_null_mut(out_context, "out_context") }?;
        // SAFETY: caller's contract.
        let params = unsafe { params.as_ref() }
            .copied()
            .unwrap_or_else(|| llada_context_default_params());
        let threads = (params.threads > 0).then_some(params.threads as usize);
        let pipeline = Pipeline::with_threads(Arc::clone(&model.inner), threads)?;
        *out_context = Box::into_raw(Box::new(LladaContext { pipeline }));
        Ok(())
    })
}

/// Releases a context. NULL is a no-op.
///
/// # Safety
/// `context` must be NULL or a pointer from llada_context_new, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llada_context_free(context: *mut LladaContext) {
    // SAFETY: NULL or a pointer from llada_context_new, not freed before (caller's contract).
    unsafe { free_handle(context) }
}

/// The model's vocabulary facts: mask, EOS, EOT, BOS (UINT32_MAX if none) and pad ids, and its
/// maximum sequence length. Any output pointer may be NULL.
///
/// # Safety
/// `model` must be a live model; each output NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llada_model_special_tokens(
    model: *const LladaModel,
    mask_id: *mut u32,
    eos_id: *mut u32,
    eot_id: *mut u32,
    bos_id: *mut u32,
    pad_id: *mut u32,
) -> LladaStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let model = unsafe { non_null(model, "model") }?;
        let s = model.inner.special_tokens();
        for (ptr, value) in [
            (mask_id, s.mask),
            (eos_id, s.eos),
            (eot_id, s.eot),
            (bos_id, s.bos.unwrap_or(u32::MAX)),
            (pad_id, s.pad),
        ] {
            // SAFETY: caller's contract.
            if let Some(out) = unsafe { ptr.as_mut() } {
                *out = value;
            }
        }
        Ok(())
    })
}

/// The generation parameters that fit `model`: the lengths it declares (its
/// generation_config.json `llada_decoding`), else the reference chat settings (gen_length 128,
/// steps 128, blocks of 32), with its special ids; for a Dream model its own decoding
/// (LLADA_COMMIT_TIMESTEPS with its eps, its `alg` as the remasking, its steps, temperature,
/// top_p, top_k, alg_temp); the rest as llada_generate_default_params.
///
/// # Safety
/// `model` must be a live model, `out` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llada_model_default_generate_params(
    model: *const LladaModel,
    out: *mut LladaGenerateParams,
) -> LladaStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let model = unsafe { non_null(model, "model") }?;
        // SAFETY: caller's contract.
        let out = unsafe { non_null_mut(out, "out") }?;
        *out = LladaGenerateParams::from_rust(&model.inner.default_params());
        Ok(())
    })
}

/// Token ids of `text` (UTF-8). On success `*out_len` ids were written to `out`; on
/// LLADA_STATUS_BUFFER_TOO_SMALL `*out_len` is the count needed.
///
/// # Safety
/// `model` live, `text` NUL-terminated, `out` valid for `capacity` ids (or NULL with 0),
/// `out_len` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llada_tokenize(
    model: *const LladaModel,
    text: *const c_char,
    out: *mut u32,
    capacity: usize,
    out_len: *mut usize,
) -> LladaStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let model = unsafe { non_null(model, "model") }?;
        // SAFETY: caller's contract.
        let text = unsafe { params::text_arg(text, "text") }?;
        let ids = model.inner.tokenizer().encode(text)?;
        // SAFETY: caller's contract.
        unsafe { write_slice(&ids, out, capacity, out_len) }
    })
}

/// Text of `ids`; special tokens skipped when `skip_special`. On success the NUL-terminated text
/// is in `out` and `*out_size` is its size with the NUL; on LLADA_STATUS_BUFFER_TOO_SMALL
/// `*out_size` is the size needed.
///
/// # Safety
/// `model` live, `ids` valid for `n_ids`, `out` valid for `capacity` bytes, `out_size` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llada_detokenize(
    model: *const LladaModel,
    ids: *const u32,
    n_ids: usize,
    out: *mut c_char,
    capacity: usize,
    out_size: *mut usize,
    skip_special: bool,
) -> LladaStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let model = unsafe { non_null(model, "model") }?;
        // SAFETY: caller's contract.
        let ids = unsafe { params::slice_arg(ids, n_ids, "ids") }?;
        let text = model.inner.tokenizer().decode(ids, skip_special)?;
        // SAFETY: caller's contract.
        unsafe { write_text(&text, out, capacity, out_size) }
    })
}

/// Reads `n` chat messages.
unsafe fn messages_arg(
    messages: *const LladaChatMessage,
    n: usize,
) -> Result<Vec<Message>, Failure> {
    // SAFETY: caller's contract.
    let raw = unsafe { params::slice_arg(messages, n, "messages") }?;
    raw.iter()
        .map(|m| {
            // SAFETY: caller's contract (NUL-terminated strings).
            let role = unsafe { params::text_arg(m.role, "role") }?;
            // SAFETY: as above.
            let content = unsafe { params::text_arg(m.content, "content") }?;
            Ok(Message::new(role, content))
        })
        .collect()
}

/// Renders `messages` with the model's own chat template (ending with the assistant prompt
/// when `add_generation_prompt`). Output as llada_detokenize.
///
/// # Safety
/// `model` live, `messages` valid for `n_messages`, `out`/`out_size` as llada_detokenize.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llada_chat_apply_template(
    model: *const LladaModel,
    messages: *const LladaChatMessage,
    n_messages: usize,
    out: *mut c_char,
    capacity: usize,
    out_size: *mut usize,
    add_generation_prompt: bool,
) -> LladaStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let model = unsafe { non_null(model, "model") }?;
        // SAFETY: caller's contract.
        let messages = unsafe { messages_arg(messages, n_messages) }?;
        let template = model
            .inner
            .chat_template()
            .ok_or_else(|| Failure::from(llada::Error::NoChatTemplate))?;
        let text = template.render(&messages, add_generation_prompt)?;
        // SAFETY: caller's contract.
        unsafe { write_text(&text, out, capacity, out_size) }
    })
}

/// Runs a batch through the pipeline with the C callback.
fn run_batch(
    context: &mut LladaContext,
    prompts: &[Vec<u32>],
    params: *const LladaGenerateParams,
    callback: LladaStepCallback,
    user_data: *mut c_void,
) -> Result<Vec<llada::Generated>, Failure> {
    // SAFETY: the exports check `params` is valid or NULL before calling (caller's contract).
    let raw = unsafe { params.as_ref() }
        .copied()
        .unwrap_or_else(|| llada_generate_default_params());
    let params = raw.to_rust(&context.pipeline.default_params())?;
    let gen_length = params.gen_length;
    let mut tokens: Vec<u32> = Vec::new();
    let on_step = |p: &Progress<'_>| {
        let Some(callback) = callback else {
            return ControlFlow::Continue(());
        };
        tokens.clear();
        for row in 0..p.batch() {
            tokens.extend_from_slice(p.output_ids(row));
        }
        let text = CString::new(p.partial_text(0).replace('\0', "")).unwrap_or_default();
        let (block, num_blocks) = p.block();
        let (step, steps_per_block) = p.step();
        let event = LladaStepEvent {
            block: block as u32,
            num_blocks: num_blocks as u32,
            step: step as u32,
            steps_per_block: steps_per_block as u32,
            forward_passes: p.forward_passes() as u32,
            batch: p.batch() as u32,
            gen_length: gen_length as u32,
            tokens: tokens.as_ptr(),
            text: text.as_ptr(),
        };
        if callback(&event, user_data) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    };
    Ok(context.pipeline.generate_ids(prompts, &params, on_step)?)
}

/// Generates `params->gen_length` ids after `prompt` (token ids, used as given). On success
/// `out` holds all generated ids (EOS padding included) and `*out_len` their count; use
/// llada_detokenize, or llada_generate_chat for text. `params` may be NULL for the defaults;
/// `callback` may be NULL.
///
/// # Safety
/// `context` live and not used by another thread meanwhile, `prompt` valid for `n_prompt`,
/// `params` NULL or valid, `out` valid for `capacity` ids, `out_len` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llada_generate_ids(
    context: *mut LladaContext,
    prompt: *const u32,
    n_prompt: usize,
    params: *const LladaGenerateParams,
    callback: LladaStepCallback,
    user_data: *mut c_void,
    out: *mut u32,
    capacity: usize,
    out_len: *mut usize,
) -> LladaStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let context = unsafe { non_null_mut(context, "context") }?;
        // SAFETY: caller's contract.
        let prompt = unsafe { params::slice_arg(prompt, n_prompt, "prompt") }?.to_vec();
        if out_len.is_null() {
            return Err(Failure::null("out_len"));
        }
        let generated = run_batch(context, &[prompt], params, callback, user_data)?;
        // SAFETY: caller's contract.
        unsafe { write_slice(&generated[0].output_ids, out, capacity, out_len) }
    })
}

/// Generates for `batch` prompts at once (left-padded behind an attention mask). `prompts[i]`
/// points to `prompt_lens[i]` ids. On success `out` holds `batch × gen_length` ids, row by
/// row, and `*out_len` their count.
///
/// # Safety
/// `prompts` and `prompt_lens` valid for `batch` entries, each prompt for its length; the rest
/// as llada_generate_ids.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llada_generate_batch_ids(
    context: *mut LladaContext,
    prompts: *const *const u32,
    prompt_lens: *const usize,
    batch: usize,
    params: *const LladaGenerateParams,
    callback: LladaStepCallback,
    user_data: *mut c_void,
    out: *mut u32,
    capacity: usize,
    out_len: *mut usize,
) -> LladaStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let context = unsafe { non_null_mut(context, "context") }?;
        // SAFETY: caller's contract.
        let pointers = unsafe { params::slice_arg(prompts, batch, "prompts") }?;
        // SAFETY: caller's contract.
        let lens = unsafe { params::slice_arg(prompt_lens, batch, "prompt_lens") }?;
        if batch == 0 {
            return Err(Failure::invalid("batch is 0"));
        }
        if out_len.is_null() {
            return Err(Failure::null("out_len"));
        }
        let rows = pointers
            .iter()
            .zip(lens)
            // SAFETY: caller's contract for each prompt.
            .map(|(&p, &n)| unsafe { params::slice_arg(p, n, "prompts[i]") }.map(<[u32]>::to_vec))
            .collect::<Result<Vec<_>, _>>()?;
        let generated = run_batch(context, &rows, params, callback, user_data)?;
        let all: Vec<u32> = generated
            .iter()
            .flat_map(|g| g.output_ids.iter().copied())
            .collect();
        // SAFETY: caller's contract.
        unsafe { write_slice(&all, out, capacity, out_len) }
    })
}

/// Generates the assistant's answer to a conversation, formatted with the model's chat
/// template. On success `out` holds the answer text (up to EOS/EOT, special tokens skipped),
/// NUL-terminated, and `*out_size` its size with the NUL; on LLADA_STATUS_BUFFER_TOO_SMALL
/// `*out_size` is the size needed (generate again with a larger buffer, or keep capacity
/// generous).
///
/// # Safety
/// `messages` valid for `n_messages`; the rest as llada_generate_ids and llada_detokenize.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llada_generate_chat(
    context: *mut LladaContext,
    messages: *const LladaChatMessage,
    n_messages: usize,
    params: *const LladaGenerateParams,
    callback: LladaStepCallback,
    user_data: *mut c_void,
    out: *mut c_char,
    capacity: usize,
    out_size: *mut usize,
) -> LladaStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let context = unsafe { non_null_mut(context, "context") }?;
        // SAFETY: caller's contract.
        let messages = unsafe { messages_arg(messages, n_messages) }?;
        if out_size.is_null() {
            return Err(Failure::null("out_size"));
        }
        let model = context.pipeline.model();
        let prompt = model.tokenizer().encode(&model.format_chat(&messages)?)?;
        let generated = run_batch(context, &[prompt], params, callback, user_data)?;
        // SAFETY: caller's contract.
        unsafe { write_text(&generated[0].text, out, capacity, out_size) }
    })
}

/// Generates a continuation of raw `text` (no chat template). Output as llada_generate_chat.
///
/// # Safety
/// As llada_generate_chat, with `text` NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llada_generate_text(
    context: *mut LladaContext,
    text: *const c_char,
    params: *const LladaGenerateParams,
    callback: LladaStepCallback,
    user_data: *mut c_void,
    out: *mut c_char,
    capacity: usize,
    out_size: *mut usize,
) -> LladaStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let context = unsafe { non_null_mut(context, "context") }?;
        // SAFETY: caller's contract.
        let text = unsafe { params::text_arg(text, "text") }?;
        if out_size.is_null() {
            return Err(Failure::null("out_size"));
        }
        let prompt = context.pipeline.model().tokenizer().encode(text)?;
        let generated = run_batch(context, &[prompt], params, callback, user_data)?;
        // SAFETY: caller's contract.
        unsafe { write_text(&generated[0].text, out, capacity, out_size) }
    })
}

/// Monte Carlo estimate of log p(answer | prompt) (token ids), as LLaDA scores multiple-choice
/// answers. `params` may be NULL for the defaults. On success `*out` holds the estimate.
///
/// # Safety
/// `context` live, `prompt`/`answer` valid for their lengths, `params` NULL or valid, `out`
/// valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llada_log_likelihood(
    context: *mut LladaContext,
    prompt: *const u32,
    n_prompt: usize,
    answer: *const u32,
    n_answer: usize,
    params: *const LladaLikelihoodParams,
    out: *mut f64,
) -> LladaStatus {
    guard(|| {
        // SAFETY: caller's contract.
        let context = unsafe { non_null_mut(context, "context") }?;
        // SAFETY: caller's contract.
        let prompt = unsafe { params::slice_arg(prompt, n_prompt, "prompt") }?;
        // SAFETY: caller's contract.
        let answer = unsafe { params::slice_arg(answer, n_answer, "answer") }?;
        // SAFETY: caller's contract.
        let out = unsafe { non_null_mut(out, "out") }?;
        // SAFETY: caller's contract.
        let p = unsafe { params.as_ref() }
            .copied()
            .unwrap_or_else(|| llada_likelihood_default_params());
        let options = LikelihoodOptions::default()
            .with_mc_samples(p.mc_samples as usize)
            .with_batch(p.batch as usize)
            .with_cfg_scale(p.cfg_scale)
            .with_seed(p.seed);
        let value = context.pipeline.log_likelihood(prompt, answer, &options)?;
        *out = value;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_constants_match_the_crate_version() {
        let parts: Vec<u32> = env!("CARGO_PKG_VERSION")
            .split('.')
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(
            parts,
            [
                LLADA_VERSION_MAJOR,
                LLADA_VERSION_MINOR,
                LLADA_VERSION_PATCH
            ]
        );
        // SAFETY: llada_version returns a static NUL-terminated string.
        let version = unsafe { std::ffi::CStr::from_ptr(llada_version()) };
        assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn statuses_are_mapped_not_transmuted() {
        let name = |v: u32| {
            // SAFETY: llada_status_str returns static strings.
            unsafe { std::ffi::CStr::from_ptr(llada_status_str(v)) }
                .to_str()
                .unwrap()
        };
        assert_eq!(name(LladaStatus::BufferTooSmall as u32), "buffer too small");
        assert_eq!(name(LladaStatus::InvalidUtf8 as u32), "invalid utf-8");
        assert_eq!(name(11), "unknown status");
        assert_eq!(name(u32::MAX), "unknown status");
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let status = guard(|| panic!("boom"));
        assert_eq!(status, LladaStatus::Panic);
        // SAFETY: llada_last_error returns this thread's message.
        let message = unsafe { std::ffi::CStr::from_ptr(llada_last_error()) };
        assert_eq!(message.to_str().unwrap(), "internal panic: boom");
    }
}
