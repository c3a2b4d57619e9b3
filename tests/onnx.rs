//! The ONNX deployment path through the whole library, on the bundled model's exports
//! (`llada-ort/export/export_onnx.py`): the 4-bit export (`model-int4.onnx`, MatMulNBits)
//! answers the held-out prompts within 2 points of the f32 cached graph, opened as a file of
//! the model's directory; and the `generate` example runs Fast-dLLM's threshold rule with the
//! dual cache on ONNX Runtime as the README says.

use std::ops::ControlFlow;

use llada::core::GenerateParams;
use llada::{BackendChoice, OrtOptions, Pipeline};
use llada_test_support::{bundled_model, eval_set, example_binary as example, ort_library};

fn ort(model: &std::path::Path) -> Pipeline {
    let choice = BackendChoice::Ort(OrtOptions::default().with_library(Some(ort_library())));
    Pipeline::open(model, &choice).unwrap()
}

/// Exact matches on the held-out set with the reference schedule.
fn exact_matches(pipeline: &mut Pipeline, params: &GenerateParams) -> usize {
    let eval = eval_set();
    eval.items
        .iter()
        .filter(|item| {
            let out = pipeline
                .generate_ids(std::slice::from_ref(&item.prompt_ids), params, |_| {
                    ControlFlow::Continue(())
                })
                .unwrap()
                .remove(0);
            out.answer_ids == item.answer_ids
        })
        .count()
}

#[test]
fn the_4_bit_export_answers_within_2_points_of_f32() {
    let mut f32_graph = ort(&bundled_model());
    let mut int4 = ort(&bundled_model().join("model-int4.onnx"));
    let params = f32_graph.default_params();
    assert_eq!(
        params,
        int4.default_params(),
        "the same directory's defaults"
    );
    let total = eval_set().items.len();
    let (a, b) = (
        exact_matches(&mut f32_graph, &params),
        exact_matches(&mut int4, &params),
    );
    eprintln!("exact match: f32 {a}/{total}, 4-bit {b}/{total}");
    assert!(a * 100 >= total * 95, "f32: {a}/{total}");
    assert!(
        (b + total * 2 / 100) >= a,
        "4-bit {b}/{total} is more than 2 points below f32's {a}/{total}"
    );
}

#[test]
fn the_generate_example_runs_the_dual_cache_on_onnx_runtime() {
    let output = std::process::Command::new(example("generate"))
        .env_remove("RUST_LOG")
        .env("ORT_DYLIB_PATH", ort_library())
        .args(["--backend", "ort", "--cache", "dual", "--threshold", "0.9"])
        .args(["--prompt", "reverse:pen,frog,rock", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["text"], "rock,frog,pen");
    let passes = json["forward_passes"].as_u64().unwrap();
    assert!(
        passes < 16,
        "the threshold rule took {passes} passes (16 is the reference schedule's)"
    );
}
