//! Once its buffers have grown, a forward pass allocates nothing, with or without the
//! block-wise key/value cache (a counting global allocator watches; this file is its own test
//! binary).

mod common;

use std::sync::Arc;

use llada_core::{
    CacheMode, Canvas, CommitRule, ForwardRequest, GenerateParams, WorkspaceBuf, WorkspaceSizes,
    generate,
};
use llada_ndarray::{Context, Model};
use llada_test_support::CountingAllocator;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[test]
fn warm_forward_passes_and_whole_generations_allocate_nothing() {
    let model = Arc::new(Model::load(llada_test_support::bundled_model()).unwrap());
    let mut context = Context::with_threads(model.clone(), 2).unwrap();
    let vocab = model.config().embedding_size;
    let case = &common::golden_cases()[1];
    let request = ForwardRequest::new(&case.ids, case.batch, case.seq)
        .unwrap()
        .with_attention_mask(&case.mask)
        .unwrap()
        .with_window(10..26)
        .unwrap();
    let mut logits = vec![0.0; request.logits_len(vocab)];
    context.forward(&request, &mut logits).unwrap(); // warm-up: buffers grow here

    let ((), forward_allocations) = CountingAllocator::during(|| {
        for _ in 0..5 {
            context.forward(&request, &mut logits).unwrap();
        }
    });
    assert_eq!(
        forward_allocations, 0,
        "warm forward passes allocated {forward_allocations} times"
    );

    // A whole generation over the warm context, with the workspace allocated up front.
    let mask_id = model.config().mask_token_id.unwrap();
    let params = GenerateParams::default()
        .with_steps(16)
        .with_gen_length(16)
        .with_block_length(8)
        .with_mask_id(mask_id);
    let prompt = &case.ids[..case.seq - 16];
    let mut canvas = vec![0; case.seq];
    let mut ws = WorkspaceBuf::new(
        &WorkspaceSizes::for_generation(&params, 1, prompt.len(), vocab).unwrap(),
    );
    // Allocations during one whole generation from a freshly masked canvas.
    let mut generation_allocations = |params: &GenerateParams| {
        let c = Canvas::from_prompts(&mut canvas, prompt, 1, 16, mask_id).unwrap();
        let (result, allocations) = CountingAllocator::during(|| {
            generate(&mut context, params, c, ws.as_workspace(), &mut ())
        });
        result.unwrap();
        allocations
    };
    let allocations = generation_allocations(&params);
    assert_eq!(allocations, 0, "a generation allocated {allocations} times");

    // Fast-dLLM: threshold decoding over the prefix and dual caches. The first generation of
    // each sizes the cache; the second must allocate nothing.
    for cache in [CacheMode::Prefix, CacheMode::Dual] {
        let params = params
            .with_commit(CommitRule::Threshold(0.9))
            .with_cache(cache);
        generation_allocations(&params);
        let allocations = generation_allocations(&params);
        assert_eq!(
            allocations, 0,
            "a warm generation with the {cache:?} cache allocated {allocations} times"
        );
    }
}
