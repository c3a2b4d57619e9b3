//! A full generation and a likelihood estimate perform zero heap allocations: a counting global
//! allocator watches them (this file is its own test binary, so the count is this test's alone).

use llada_core::testing::HashPredictor;
use llada_core::{
    Canvas, GenerateParams, LikelihoodParams, Remasking, SamplerRng, WorkspaceBuf, WorkspaceSizes,
    generate, log_likelihood, rand_core::SeedableRng,
};
use llada_test_support::CountingAllocator;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> usize {
    CountingAllocator::during(f).1
}

#[test]
fn generation_and_likelihood_allocate_nothing() {
    let vocab = 512;
    let mut predictor = HashPredictor::new(vocab, 511, 42);
    // Guidance, batch with padding, several blocks, sampling with top-k/top-p: every path.
    let params = GenerateParams::default()
        .with_steps(16)
        .with_gen_length(32)
        .with_block_length(8)
        .with_temperature(0.7)
        .with_cfg_scale(1.0)
        .with_remasking(Remasking::LowConfidence)
        .with_mask_id(511)
        .with_top_k(50)
        .with_top_p(0.9)
        .with_confidence_eos_eot_inf(true)
        .with_eos_id(1)
        .with_eot_id(2);
    let prompt_len = 6;
    let batch = 2;
    let seq = prompt_len + params.gen_length;
    let prompts = [1, 1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14];
    let mut tokens = vec![0u32; batch * seq];
    Canvas::fill(
        &mut tokens,
        &prompts,
        batch,
        params.gen_length,
        params.mask_id,
    )
    .unwrap();
    let mut attention = vec![1u8; batch * seq];
    attention[..2].fill(0);
    let sizes = WorkspaceSizes::for_generation(&params, batch, prompt_len, vocab)
        .unwrap()
        .max(WorkspaceSizes::for_likelihood(4, 8, 4, true, vocab).unwrap());
    let mut workspace = WorkspaceBuf::new(&sizes);
    let mut steps = 0;

    let count = allocations_during(|| {
        let mut observer = |_: &llada_core::StepEvent<'_>| {
            steps += 1;
            core::ops::ControlFlow::Continue(())
        };
        let canvas = Canvas::new(&mut tokens, batch, prompt_len).with_attention_mask(&attention);
        generate(
            &mut predictor,
            &params,
            canvas,
            workspace.as_workspace(),
            &mut observer,
        )
        .unwrap();
    });
    assert_eq!(count, 0, "generation allocated {count} times");
    assert_eq!(steps, params.steps);
    assert!(!tokens.contains(&params.mask_id));

    let mut rng = SamplerRng::seed_from_u64(3);
    let lp = LikelihoodParams::default()
        .with_mc_samples(8)
        .with_batch(4)
        .with_cfg_scale(1.0)
        .with_mask_id(511);
    let count = allocations_during(|| {
        let ll = log_likelihood(
            &mut predictor,
            &[3, 4, 5, 6],
            &[7, 8, 9, 10, 11, 12, 13, 14],
            &lp,
            &mut rng,
            workspace.as_workspace(),
        )
        .unwrap();
        assert!(ll.is_finite() && ll < 0.0);
    });
    assert_eq!(count, 0, "log_likelihood allocated {count} times");
}
