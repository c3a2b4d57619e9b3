//! The C entry points with arbitrary parameter structs, prompts and buffers.

use std::ffi::{CString, c_char, c_void};
use std::sync::Mutex;

use ffi::{
    LladaChatMessage, LladaContext, LladaContextParams, LladaGenerateParams, LladaModel,
    LladaModelParams, LladaStatus, LladaStepEvent,
};
use llada_test_support::bundled_model;

use crate::Bytes;

/// Guard bytes after every output buffer: a write past `capacity` would change them.
const CANARY: [u8; 16] = [0xA5; 16];

/// Loaded models by quantization code, kept for the process (loading per input would make
/// the target slow).
static MODELS: Mutex<Vec<(u32, usize)>> = Mutex::new(Vec::new());

fn model(params: &LladaModelParams) -> Result<*mut LladaModel, LladaStatus> {
    let mut models = MODELS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(&(_, ptr)) = models.iter().find(|m| m.0 == params.quantize) {
        return Ok(ptr as *mut LladaModel);
    }
    let dir = CString::new(bundled_model().to_string_lossy().into_owned()).expect("a path");
    let mut out: *mut LladaModel = std::ptr::null_mut();
    // SAFETY: a NUL-terminated path, a valid params struct and out pointer.
    let status = unsafe { ffi::llada_model_load(dir.as_ptr(), params, &mut out) };
    assert_ne!(status, LladaStatus::Panic, "llada_model_load panicked");
    if status != LladaStatus::Ok {
        assert!(out.is_null(), "a failed load wrote a model");
        return Err(status);
    }
    models.push((params.quantize, out as usize));
    Ok(out)
}

/// Cancels at the step `user_data` points to (counting down).
extern "C" fn cancel_at(event: *const LladaStepEvent, user_data: *mut c_void) -> bool {
    // SAFETY: the library passes a valid event; `user_data` is the target's counter.
    let (event, left) = unsafe { (&*event, &mut *user_data.cast::<u32>()) };
    assert!(!event.text.is_null() && !event.tokens.is_null());
    if *left == 0 {
        return false;
    }
    *left -= 1;
    true
}

fn generate_params(b: &mut Bytes<'_>) -> LladaGenerateParams {
    // Lengths mostly small (the bundled model holds 256 tokens), sometimes anything.
    let length = |b: &mut Bytes<'_>| {
        let raw = b.u32();
        if raw & 0x8000_0000 != 0 {
            raw
        } else {
            raw % 40
        }
    };
    let (steps, gen_length, block_length) = (length(b), length(b), length(b));
    // The remasking word's upper bits give Dream's alg_temp (no byte read for it, so the
    // committed seeds keep their meaning).
    let remasking = b.u32();
    LladaGenerateParams {
        steps,
        gen_length,
        block_length,
        remasking: remasking % 6,
        mask_id: b.u32(),
        eos_id: b.u32(),
        eot_id: b.u32(),
        top_k: b.u32(),
        commit_rule: b.u32() % 6,
        cache: b.u32() % 5,
        seed: b.u64(),
        temperature: b.f32(),
        cfg_scale: b.f32(),
        top_p: b.f32(),
        commit_value: b.f64(),
        max_passes_per_block: b.u32() % 50,
        logits_eos_inf: b.bool(),
        confidence_eos_eot_inf: b.bool(),
        stop_at_eos: b.bool(),
        alg_temp: ((remasking >> 8) & 0xff) as f32 / 64.0,
        // LLaDA2's grid and editing, from the same word's upper bits (2 is an unknown grid).
        block_grid: (remasking >> 16) % 3,
        editing: (remasking >> 18) & 1 == 1,
        editing_threshold: f64::from((remasking >> 20) & 0xff) / 200.0,
        max_post_steps: (remasking >> 28) & 0xf,
        num_to_transfer: 1 + ((remasking >> 26) & 3),
    }
}

/// Token ids in the model's mostly: a fifth of them anywhere in `u32`.
fn from_model_or_any(raw: u32) -> u32 {
    if raw.is_multiple_of(5) { raw } else { u32::MAX }
}

/// The bytes: model parameters, context parameters, generation parameters, a mode, a buffer
/// capacity, a cancel step and a prompt (any bytes; an interior NUL ends it).
pub fn c_abi(data: &[u8]) {
    let mut b = Bytes::new(data);
    let model_params = LladaModelParams {
        // Mostly the ndarray backend; ONNX Runtime with a library that does not exist.
        backend: match b.u8() % 8 {
            0 => 1,
            1 => u32::from(b.u8()),
            _ => 0,
        },
        execution_provider: b.u32() % 3,
        ort_library: c"/nonexistent/libonnxruntime.so".as_ptr(),
        quantize: match b.u8() % 16 {
            v @ 0..=4 => u32::from(v) % 5,
            15 => u32::from(b.u8()),
            _ => 0,
        },
    };
    let threads = match b.u32() {
        t @ 9..=1024 => t % 3,
        t => t,
    };
    let context_params = LladaContextParams { threads };
    let mut params = generate_params(&mut b);
    params.mask_id = from_model_or_any(params.mask_id);
    params.eos_id = from_model_or_any(params.eos_id);
    params.eot_id = from_model_or_any(params.eot_id);
    let mode = b.u8() % 4;
    let capacity = b.below(600);
    let mut cancel_after = u32::from(b.u8());
    let with_callback = b.bool();
    let prompt = CString::new(
        b.rest()
            .split(|&c| c == 0)
            .next()
            .unwrap_or_default()
            .to_vec(),
    )
    .expect("no interior NUL");

    let Ok(model) = model(&model_params) else {
        return;
    };
    let mut context: *mut LladaContext = std::ptr::null_mut();
    // SAFETY: a live model, valid params and out pointer.
    let status = unsafe { ffi::llada_context_new(model, &context_params, &mut context) };
    assert_ne!(status, LladaStatus::Panic, "llada_context_new panicked");
    if status != LladaStatus::Ok {
        assert!(context.is_null());
        return;
    }
    let mut out = vec![0u8; capacity + CANARY.len()];
    out[capacity..].copy_from_slice(&CANARY);
    let out_ptr = if capacity == 0 {
        std::ptr::null_mut()
    } else {
        out.as_mut_ptr().cast::<c_char>()
    };
    let mut size = usize::MAX;
    let callback: ffi::LladaStepCallback = with_callback.then_some(cancel_at as _);
    let user_data = (&raw mut cancel_after).cast::<c_void>();
    // SAFETY: live handles, valid strings, `out` holds `capacity` bytes.
    let status = unsafe {
        match mode {
            0 => ffi::llada_generate_text(
                context,
                prompt.as_ptr(),
                &params,
                callback,
                user_data,
                out_ptr,
                capacity,
                &mut size,
            ),
            1 => {
                let message = LladaChatMessage {
                    role: c"user".as_ptr(),
                    content: prompt.as_ptr(),
                };
                ffi::llada_generate_chat(
                    context, &message, 1, &params, callback, user_data, out_ptr, capacity,
                    &mut size,
                )
            }
            2 => {
                let message = LladaChatMessage {
                    role: prompt.as_ptr(),
                    content: c"reverse:pen,frog,rock".as_ptr(),
                };
                ffi::llada_chat_apply_template(
                    model, &message, 1, out_ptr, capacity, &mut size, true,
                )
            }
            _ => {
                let mut ids = vec![0u32; capacity];
                let mut len = usize::MAX;
                let status = ffi::llada_tokenize(
                    model,
                    prompt.as_ptr(),
                    if capacity == 0 {
                        std::ptr::null_mut()
                    } else {
                        ids.as_mut_ptr()
                    },
                    capacity,
                    &mut len,
                );
                if status == LladaStatus::Ok {
                    assert!(len <= capacity);
                    let status = ffi::llada_detokenize(
                        model,
                        ids.as_ptr(),
                        len,
                        out_ptr,
                        capacity,
                        &mut size,
                        mode & 1 == 1,
                    );
                    assert_ne!(status, LladaStatus::Panic, "llada_detokenize panicked");
                }
                status
            }
        }
    };
    assert_ne!(status, LladaStatus::Panic, "mode {mode} panicked");
    assert_eq!(&out[capacity..], &CANARY, "a write past the buffer");
    match status {
        LladaStatus::Ok if mode < 3 => {
            assert!(size <= capacity, "size {size} > capacity {capacity}");
            assert_eq!(out[size - 1], 0, "no NUL at the end");
        }
        LladaStatus::BufferTooSmall => assert!(size > capacity),
        _ => {}
    }
    // SAFETY: a live context, freed once.
    unsafe { ffi::llada_context_free(context) };
}
