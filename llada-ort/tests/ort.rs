//! The ONNX Runtime backend on the fixture's ONNX export: the same logits as the ndarray
//! backend, the same tokens from `generate`, and typed errors for bad models.
//!
//! These tests need `libonnxruntime` through `ORT_DYLIB_PATH` (the test command installs
//! `onnxruntime==1.31.1` from PyPI into `.venv` and sets it); without it they fail, loudly.

use std::sync::Arc;

use llada_core::testing::{Expectations, check_predictor};
use llada_core::{
    Canvas, ForwardRequest, GenerateParams, MaskPredictor, WorkspaceBuf, WorkspaceSizes, generate,
};
use llada_ort::{OrtError, OrtPredictor};
use llada_test_support::{
    FnPredictor, bundled_mask_id, bundled_model as fixture, eval_set, ort_library,
};

/// The bundled model's `max_sequence_length` (its config.json).
const MAX_LEN: usize = 256;

fn ort() -> OrtPredictor {
    OrtPredictor::builder(fixture().join("model.onnx"))
        .library(ort_library())
        .intra_threads(2)
        .max_sequence_length(MAX_LEN)
        .build()
        .unwrap()
}

fn ndarray() -> llada_ndarray::Context {
    let model = Arc::new(llada_ndarray::Model::load(fixture()).unwrap());
    llada_ndarray::Context::new(model).unwrap()
}

fn logits<P: MaskPredictor>(
    p: &mut P,
    ids: &[u32],
    batch: usize,
    mask: Option<&[u8]>,
    window: std::ops::Range<usize>,
) -> Vec<f32> {
    let seq = ids.len() / batch;
    let mut request = ForwardRequest::new(ids, batch, seq)
        .unwrap()
        .with_window(window)
        .unwrap();
    if let Some(mask) = mask {
        request = request.with_attention_mask(mask).unwrap();
    }
    let mut out = vec![0.0; request.logits_len(p.vocab_size())];
    p.forward(&request, &mut out).unwrap();
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn ort_and_ndarray_logits_agree_within_1e4_with_and_without_padding() {
    let (mut ort, mut nd) = (ort(), ndarray());
    assert_eq!(ort.vocab_size(), nd.vocab_size());
    assert_eq!(ort.max_sequence_length(), nd.max_sequence_length());
    assert_eq!(ort.input_ids_name(), "input_ids");
    assert_eq!(ort.attention_mask_name(), Some("attention_mask"));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
            .unwrap();
    let (mask_id, pad) = (
        config["mask_token_id"].as_u64().unwrap() as u32,
        config["pad_token_id"].as_u64().unwrap() as u32,
    );
    // One unpadded row; then three rows, two of them left-padded, with masks after the prompt.
    let single: Vec<u32> = (5..25).chain(std::iter::repeat_n(mask_id, 8)).collect();
    let diff = max_abs_diff(
        &logits(&mut ort, &single, 1, None, 0..28),
        &logits(&mut nd, &single, 1, None, 0..28),
    );
    assert!(diff < 1e-4, "unpadded: {diff}");
    let mut batch = Vec::new();
    let mut mask = Vec::new();
    for pad_len in [0usize, 4, 11] {
        for i in 0..20usize {
            let real = i >= pad_len;
            batch.push(if !real {
                pad
            } else if i < 14 {
                30 + i as u32 * 3
            } else {
                mask_id
            });
            mask.push(u8::from(real));
        }
    }
    for window in [0..20, 14..20] {
        let a = logits(&mut ort, &batch, 3, Some(&mask), window.clone());
        let b = logits(&mut nd, &batch, 3, Some(&mask), window.clone());
        let diff = max_abs_diff(&a, &b);
        assert!(diff < 1e-4, "padded, window {window:?}: {diff}");
    }
}

#[test]
fn generate_gives_identical_tokens_on_both_backends_over_the_eval_set() {
    let (mut ort, mut nd) = (ort(), ndarray());
    let eval = eval_set();
    let params = eval.params(GenerateParams::default().with_mask_id(bundled_mask_id()));
    let mut ws = WorkspaceBuf::default();
    let mut run = |p: &mut dyn FnMut(&ForwardRequest<'_>, &mut [f32]), prompt: &[u32]| {
        let mut canvas = vec![0; prompt.len() + params.gen_length];
        ws.ensure(
            &WorkspaceSizes::for_generation(
                &params,
                1,
                prompt.len(),
                640.max(params.mask_id as usize + 1),
            )
            .unwrap(),
        );
        let mut predictor = FnPredictor(p, 640, MAX_LEN);
        let c = Canvas::from_prompts(&mut canvas, prompt, 1, params.gen_length, params.mask_id)
            .unwrap();
        generate(&mut predictor, &params, c, ws.as_workspace(), &mut ()).unwrap();
        canvas
    };
    let mut differ = 0;
    for item in &eval.items {
        let a = run(&mut |r, l| ort.forward(r, l).unwrap(), &item.prompt_ids);
        let b = run(&mut |r, l| nd.forward(r, l).unwrap(), &item.prompt_ids);
        differ += usize::from(a != b);
    }
    assert_eq!(
        differ,
        0,
        "{differ} of {} generations differ between ONNX Runtime and ndarray",
        eval.items.len()
    );
}

#[test]
fn random_bytes_wrong_inputs_and_missing_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(
        &junk,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let err = OrtPredictor::builder(&junk)
        .library(ort_library())
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, OrtError::Model { path, .. } if *path == junk),
        "{err}"
    );
    // ONNX Runtime's own error is the source, not repeated in the message.
    let source = std::error::Error::source(&err).expect("ONNX Runtime's error");
    assert!(!err.to_string().contains(&source.to_string()), "{err}");

    let wrong = fixture().join("../onnx/wrong_inputs.onnx");
    let err = OrtPredictor::builder(&wrong)
        .library(ort_library())
        .build()
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, OrtError::Signature { .. }), "{message}");
    assert!(message.contains("tokens"), "names the input: {message}");

    let err = OrtPredictor::builder(&wrong)
        .library(ort_library())
        .input_ids_name("tokens")
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("float32") || err.to_string().contains("f32"),
        "{err}"
    );

    let err = OrtPredictor::builder(dir.path().join("absent.onnx"))
        .library(ort_library())
        .build()
        .unwrap_err();
    assert!(matches!(err, OrtError::ModelNotFound { .. }), "{err}");

    // Bad requests: a logits slice of the wrong size, an id outside the vocabulary.
    let mut ort = ort();
    let request = ForwardRequest::new(&[1, 2, 3], 1, 3).unwrap();
    assert!(matches!(
        ort.forward(&request, &mut [0.0; 7]),
        Err(OrtError::Shape(_))
    ));
    let request = ForwardRequest::new(&[1, 2, 100_000], 1, 3).unwrap();
    let mut out = vec![0.0; 3 * ort.vocab_size()];
    assert!(matches!(
        ort.forward(&request, &mut out),
        Err(OrtError::TokenOutOfVocab { id: 100_000, .. })
    ));
}

#[test]
fn the_backend_passes_the_conformance_suite() {
    check_predictor(&mut ort(), &Expectations::default()).unwrap();
}

#[test]
fn a_graph_without_an_attention_mask_refuses_a_padded_request() {
    let path = llada_test_support::fixture("onnx/no_mask.onnx");
    let mut ort = OrtPredictor::builder(&path)
        .library(ort_library())
        .build()
        .unwrap();
    assert_eq!(ort.attention_mask_name(), None);
    assert_eq!(ort.vocab_size(), 8);
    // Unpadded rows run, with or without an all-ones mask.
    let ids = [1, 2, 3, 4, 5, 6];
    let plain = logits(&mut ort, &ids, 2, None, 0..3);
    assert_eq!(logits(&mut ort, &ids, 2, Some(&[1; 6]), 0..3), plain);
    // A mask that hides padding cannot be honoured: a typed error naming the model.
    let mask = [0, 1, 1, 1, 1, 1];
    let request = ForwardRequest::new(&ids, 2, 3)
        .unwrap()
        .with_attention_mask(&mask)
        .unwrap();
    let mut out = vec![f32::NAN; request.logits_len(8)];
    let err = ort.forward(&request, &mut out).unwrap_err();
    assert!(
        matches!(&err, OrtError::NoAttentionMask { path: p } if *p == path),
        "{err}"
    );
    assert_eq!(
        llada_core::PredictorError::kind(&err),
        llada_core::ErrorKind::Unsupported
    );
    assert!(out.iter().all(|v| v.is_nan()), "nothing written on error");
}
