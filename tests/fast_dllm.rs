//! Fast-dLLM on the bundled model's held-out set: confidence-threshold decoding with the
//! block-wise cache keeps the reference schedule's accuracy (within a point) with at least
//! three times fewer forward passes. Speed is measured by the benchmark, not here.

use std::ops::ControlFlow;

use llada::core::GenerateParams;
use llada::{BackendChoice, Pipeline};
use llada_test_support::{EvalSet, bundled_model, eval_set, fast_dllm_configs};

/// Exact-match accuracy and mean forward passes per answer.
fn score(pipeline: &mut Pipeline, eval: &EvalSet, params: &GenerateParams) -> (f64, f64) {
    let (mut correct, mut passes) = (0usize, 0usize);
    // One prompt per call: forward passes per answer, as a user counts them.
    for item in &eval.items {
        let out = pipeline
            .generate_ids(std::slice::from_ref(&item.prompt_ids), params, |_| {
                ControlFlow::Continue(())
            })
            .unwrap()
            .remove(0);
        correct += usize::from(out.answer_ids == item.answer_ids);
        passes += out.forward_passes;
    }
    let n = eval.items.len() as f64;
    (correct as f64 / n, passes as f64 / n)
}

#[test]
fn threshold_decoding_with_a_dual_cache_keeps_accuracy_with_fewer_passes() {
    let mut pipeline = Pipeline::open(bundled_model(), &BackendChoice::Ndarray).unwrap();
    let eval = eval_set();
    let reference = eval.params(pipeline.default_params());
    let (ref_accuracy, ref_passes) = score(&mut pipeline, &eval, &reference);
    assert_eq!(ref_passes, eval.steps as f64);
    assert!(ref_accuracy >= 0.9, "reference accuracy {ref_accuracy}");
    for (name, params) in fast_dllm_configs(reference) {
        let (accuracy, passes) = score(&mut pipeline, &eval, &params);
        eprintln!(
            "{name}: accuracy {accuracy:.3} (reference {ref_accuracy:.3}), {passes:.2} forward passes per answer"
        );
        assert!(
            accuracy >= ref_accuracy - 0.01,
            "{name}: accuracy {accuracy} vs {ref_accuracy}"
        );
        assert!(
            passes * 3.0 <= ref_passes,
            "{name}: {passes} passes per answer vs {ref_passes}"
        );
    }
}
