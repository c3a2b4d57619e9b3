//! The portable matrix kernel (what runs on CPUs without AVX2) gives the fixture's golden
//! logits too. Its own test binary: the kernel is chosen once per process.

mod common;

use std::sync::Arc;

use llada_core::ForwardRequest;
use llada_ndarray::{Context, Model};

#[test]
fn the_portable_kernel_matches_pytorch() {
    // SAFETY: set before any thread starts and before the kernel is chosen.
    unsafe { std::env::set_var("LLADA_KERNEL", "portable") };
    let model = Arc::new(Model::load(common::fixture_dir()).unwrap());
    let mut context = Context::with_threads(model.clone(), 2).unwrap();
    assert_eq!(llada_ndarray::kernel_name(), "portable");
    let vocab = model.config().embedding_size;
    for case in common::golden_cases() {
        let request = ForwardRequest::new(&case.ids, case.batch, case.seq)
            .unwrap()
            .with_attention_mask(&case.mask)
            .unwrap();
        let mut logits = vec![0.0; case.batch * case.seq * vocab];
        context.forward(&request, &mut logits).unwrap();
        let diff = common::max_abs_diff(&logits, &case.logits);
        assert!(diff < 1e-4, "{}: {diff}", case.name);
    }
}
