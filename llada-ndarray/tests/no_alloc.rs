//! Once its buffers have grown, a forward pass allocates nothing, with or without the
//! block-wise key/value cache (a counting global allocator watches; this file is its own test
//! binary).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use llada_core::{
    CacheMode, Canvas, CommitRule, ForwardRequest, GenerateParams, WorkspaceBuf, WorkspaceSizes,
    generate,
};
use llada_ndarray::{Context, Model};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn warm_forward_passes_and_whole_generations_allocate_nothing() {
    let model = Arc::new(Model::load(common::fixture_dir()).unwrap());
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

    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..5 {
        context.forward(&request, &mut logits).unwrap();
    }
    let forward_allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
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
        Canvas::fill(&mut canvas, prompt, 1, 16, mask_id).unwrap();
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        generate(
            &mut context,
            params,
            Canvas::new(&mut canvas, 1, prompt.len()),
            ws.as_workspace(),
            &mut (),
        )
        .unwrap();
        ALLOCATIONS.load(Ordering::SeqCst) - before
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
