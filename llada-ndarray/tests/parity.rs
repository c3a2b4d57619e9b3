//! The ndarray backend against the fixture's golden PyTorch logits, in f32 and bf16, and
//! through the `MaskPredictor` conformance suite, with every kernel this CPU runs.

mod common;

use std::sync::Arc;

use common::{golden_cases, max_abs_diff};
use llada_core::ForwardRequest;
use llada_core::testing::{Expectations, check_predictor};
use llada_ndarray::{Context, ContextOptions, Kernel, Model};
use llada_test_support::bundled_model;

/// Runs every golden case through `context` with the logits window `window(seq)`.
fn run(
    context: &mut Context,
    case: &common::GoldenCase,
    window: std::ops::Range<usize>,
) -> Vec<f32> {
    let vocab = context.model().config().embedding_size;
    let request = ForwardRequest::new(&case.ids, case.batch, case.seq)
        .unwrap()
        .with_attention_mask(&case.mask)
        .unwrap()
        .with_window(window.clone())
        .unwrap();
    let mut logits = vec![f32::NAN; case.batch * window.len() * vocab];
    context.forward(&request, &mut logits).unwrap();
    logits
}

#[test]
fn f32_logits_match_pytorch_within_1e4() {
    let model = Arc::new(Model::load(bundled_model()).unwrap());
    let mut context = Context::new(model.clone()).unwrap();
    let cases = golden_cases();
    assert!(cases.len() >= 3);
    assert!(
        cases.iter().any(|c| c.batch > 1 && c.mask.contains(&0)),
        "a left-padded batch is covered"
    );
    for case in &cases {
        let logits = run(&mut context, case, 0..case.seq);
        let diff = max_abs_diff(&logits, &case.logits);
        eprintln!("{}: f32 max abs diff {diff:e}", case.name);
        assert!(diff < 1e-4, "{}: max abs diff {diff}", case.name);
    }
    assert_eq!(model.weights_dtype(), "f32");
    assert!(model.weights_bytes() as f64 <= 1.1 * model.checkpoint_bytes() as f64);
}

#[test]
fn a_logits_window_is_the_same_rows_of_the_full_output() {
    let model = Arc::new(Model::load(bundled_model()).unwrap());
    let vocab = model.config().embedding_size;
    let mut context = Context::with_threads(model, 2).unwrap();
    for case in golden_cases() {
        let window = case.seq / 2..case.seq - 1;
        let logits = run(&mut context, &case, window.clone());
        for b in 0..case.batch {
            let got = &logits[b * window.len() * vocab..(b + 1) * window.len() * vocab];
            let want = &case.logits
                [(b * case.seq + window.start) * vocab..(b * case.seq + window.end) * vocab];
            assert!(max_abs_diff(got, want) < 1e-4, "{} row {b}", case.name);
        }
    }
}

#[test]
fn thread_count_does_not_change_the_result() {
    let model = Arc::new(Model::load(bundled_model()).unwrap());
    let case = &golden_cases()[1];
    let one = run(
        &mut Context::with_threads(model.clone(), 1).unwrap(),
        case,
        0..case.seq,
    );
    let three = run(
        &mut Context::with_threads(model, 3).unwrap(),
        case,
        0..case.seq,
    );
    assert_eq!(one, three);
}

#[test]
fn every_kernel_this_cpu_runs_matches_pytorch() {
    let model = Arc::new(Model::load(bundled_model()).unwrap());
    // The kernels that compute in f32 (`amx` has its bound in tests/amx.rs).
    let supported: Vec<Kernel> = Kernel::supported()
        .into_iter()
        .filter(|k| !k.rounds_to_bf16())
        .collect();
    assert_eq!(supported.last(), Some(&Kernel::Portable));
    eprintln!("kernels on this CPU: {supported:?}");
    // Every aarch64 CPU has NEON: the aarch64 tests must run its kernel, not only the
    // portable one.
    if cfg!(target_arch = "aarch64") {
        assert_eq!(supported[0], Kernel::Neon);
    }
    for kernel in supported {
        let options = ContextOptions::default()
            .with_threads(2)
            .with_kernel(kernel);
        let mut context = Context::with_options(model.clone(), options).unwrap();
        assert_eq!(context.kernel(), kernel);
        for case in golden_cases() {
            let logits = run(&mut context, &case, 0..case.seq);
            let diff = max_abs_diff(&logits, &case.logits);
            assert!(diff < 1e-4, "{kernel} kernel, {}: {diff}", case.name);
        }
        check_predictor(&mut context, &Expectations::default())
            .unwrap_or_else(|e| panic!("{kernel} kernel: {e}"));
    }
}
