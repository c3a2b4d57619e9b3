//! Fast-dLLM on the bundled model's held-out set: confidence-threshold decoding with the
//! block-wise cache keeps the reference schedule's accuracy (within a point) with at least
//! three times fewer forward passes. Speed is measured by the benchmark, not here.

mod common;

use std::ops::ControlFlow;

use common::{bundled_model, eval_set};
use llada::core::{CacheMode, CommitRule, GenerateParams};
use llada::{BackendChoice, Pipeline};

/// Exact-match accuracy and mean forward passes per answer.
fn score(pipeline: &mut Pipeline, params: &GenerateParams) -> (f64, f64) {
    let eval = eval_set();
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
    let reference = pipeline
        .default_params()
        .with_steps(eval.steps)
        .with_gen_length(eval.gen_length)
        .with_block_length(eval.block_length);
    let (ref_accuracy, ref_passes) = score(&mut pipeline, &reference);
    assert_eq!(ref_passes, eval.steps as f64);
    assert!(ref_accuracy >= 0.9, "reference accuracy {ref_accuracy}");
    for (name, params) in [
        (
            "threshold 0.9",
            reference.with_commit(CommitRule::Threshold(0.9)),
        ),
        ("factor 1.0", reference.with_commit(CommitRule::Factor(1.0))),
        (
            "threshold 0.9 + prefix cache",
            reference
                .with_commit(CommitRule::Threshold(0.9))
                .with_cache(CacheMode::Prefix),
        ),
        (
            "threshold 0.9 + dual cache",
            reference
                .with_commit(CommitRule::Threshold(0.9))
                .with_cache(CacheMode::Dual),
        ),
    ] {
        let (accuracy, passes) = score(&mut pipeline, &params);
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
