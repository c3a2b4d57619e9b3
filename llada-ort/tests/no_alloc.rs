//! What a warm step of the cached graph allocates on the Rust side: nothing. Its tensors are
//! bound once per shape (`IoBinding`), the token ids written into the bound input in place, the
//! logits read from the bound output, and the run goes straight to ONNX Runtime's C API.
//! ONNX Runtime's own memory (its arena, in C++) is not counted here.
//!
//! Needs `libonnxruntime` through `ORT_DYLIB_PATH` (the test command installs it).

use llada_core::{CacheHint, CacheMode, ForwardRequest};
use llada_ort::OrtPredictor;
use llada_test_support::{CountingAllocator, bundled_model as fixture, ort_library, padded_canvas};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const VOCAB: usize = 640;

#[test]
fn a_warm_cached_step_allocates_nothing() {
    let mut ort = OrtPredictor::builder(fixture().join("model.onnx"))
        .library(ort_library())
        .intra_threads(2)
        .build()
        .unwrap();
    let (mut ids, mask) = padded_canvas();
    let block = 36..52;
    let mut logits = vec![0.0; 2 * block.len() * VOCAB];
    let mut step = |ids: &[u32], refresh: bool| {
        let request = ForwardRequest::new(ids, 2, ids.len() / 2)
            .unwrap()
            .with_window(block.clone())
            .unwrap()
            .with_attention_mask(&mask)
            .unwrap()
            .with_cache(CacheHint {
                mode: CacheMode::Dual,
                span: block.clone(),
                refresh,
            })
            .unwrap();
        ort.forward(&request, &mut logits).unwrap();
    };
    step(&ids, true);
    step(&ids, false); // binds the cached step's tensors
    let mut counts = Vec::new();
    for p in [38, 44, 47] {
        ids[p] = 300;
        counts.push(CountingAllocator::during(|| step(&ids, false)).1);
    }
    // The count works: a refresh (a new cache, new bound tensors) allocates.
    let refresh = CountingAllocator::during(|| step(&ids, true)).1;
    assert!(
        refresh > 0,
        "a refresh allocated nothing: the count is broken"
    );
    assert_eq!(counts, [0, 0, 0], "allocations per warm cached step");
}
