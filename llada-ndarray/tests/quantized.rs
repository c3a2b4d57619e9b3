//! Quantizing while loading: a safetensors checkpoint runs in ggml's block formats with no
//! other tool, in a fraction of the memory, and still answers the held-out set.

mod common;

use std::sync::Arc;

use common::max_abs_diff;
use llada_core::{GenerateParams, WorkspaceBuf};
use llada_ndarray::{Context, LoadError, LoadOptions, Model, Quantization};
use llada_test_support::{answer_of, bundled_mask_id, bundled_model, eval_set};

/// Held-out prompts each format answers (the first of the eval set; enough to see a
/// format that broke the model).
const ITEMS: usize = 80;

/// Exact match on the first [`ITEMS`] of the bundled eval set.
fn exact_match(model: Arc<Model>) -> f64 {
    let mut context = Context::with_threads(model, 2).unwrap();
    let eval = eval_set();
    let params = eval.params(GenerateParams::default().with_mask_id(bundled_mask_id()));
    let mut workspace = WorkspaceBuf::default();
    let mut correct = 0;
    let items = &eval.items[..ITEMS];
    for item in items {
        let canvas =
            common::generate_canvas(&mut context, &params, &item.prompt_ids, &mut workspace);
        let generated = &canvas[item.prompt_ids.len()..];
        correct += usize::from(answer_of(generated) == item.answer_ids.as_slice());
    }
    correct as f64 / items.len() as f64
}

fn logits(model: &Arc<Model>) -> Vec<Vec<f32>> {
    common::golden_case_logits(model)
}

#[test]
fn a_checkpoint_quantized_while_loading_runs_in_a_fraction_of_the_memory() {
    let f32_model = Arc::new(Model::load(bundled_model()).unwrap());
    let reference = logits(&f32_model);
    let f32_bytes = f32_model.weights_bytes() as f64;
    let f32_match = exact_match(f32_model);
    // (format, most bytes relative to f32, largest logit difference relative to the logits'
    // range, least exact match). The bundled model's rows are 128 and 352 wide, not multiples
    // of 256: its K-quant requests fall back as llama.cpp's do (Q4_K to Q5_0, Q6_K to Q8_0).
    for (q, bytes, drift, accuracy) in [
        (Quantization::Q8_0, 0.29, 0.02, f32_match - 0.01),
        (Quantization::Q6K, 0.29, 0.02, f32_match - 0.01),
        (Quantization::Q4K, 0.19, 0.15, 0.85),
        (Quantization::Q4_0, 0.16, 0.2, 0.8),
    ] {
        let options = LoadOptions::default().with_quantize(Some(q));
        let model = Arc::new(Model::load_with(bundled_model(), &options).unwrap());
        let ratio = model.weights_bytes() as f64 / f32_bytes;
        let worst = logits(&model)
            .iter()
            .zip(&reference)
            .map(|(a, b)| {
                let range = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                max_abs_diff(a, b) / range
            })
            .fold(0.0f32, f32::max);
        let matched = exact_match(model);
        eprintln!(
            "{q}: weights {ratio:.3} x f32, logits off by {:.2}% of their range, exact match {matched:.3} (f32 {f32_match:.3})",
            100.0 * worst
        );
        assert!(ratio <= bytes, "{q}: {ratio}");
        assert!(worst <= drift, "{q}: {worst}");
        assert!(matched >= accuracy, "{q}: exact match {matched}");
    }
    assert!(matches!(
        "q3_k".parse::<Quantization>(),
        Err(LoadError::UnknownQuantization { .. })
    ));
}
