//! The sampler's own cost per denoising step, without any model: LLaDA-8B's vocabulary
//! (126,464), blocks of 32, 256 generated tokens, one token per step. The logits are fixed
//! pseudo-random values written once, so only the sampler (softmax/argmax over every masked
//! position of the block, ranking and committing) is timed. Compare with a backend's forward
//! time to get the sampler's share of a step.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use llada_core::testing::splitmix64;
use llada_core::{Canvas, GenerateParams, Generation, Limits, WorkspaceBuf, WorkspaceSizes};

const VOCAB: usize = 126_464;
const PROMPT: usize = 64;

fn per_step(c: &mut Criterion, name: &str, params: GenerateParams) {
    let sizes = WorkspaceSizes::for_generation(&params, 1, PROMPT, VOCAB).unwrap();
    let mut ws = WorkspaceBuf::new(&sizes);
    for (i, l) in ws.as_workspace().logits.iter_mut().enumerate() {
        *l = (splitmix64(i as u64) >> 40) as f32 / (1u32 << 24) as f32 * 16.0;
    }
    let prompt: Vec<u32> = (0..PROMPT as u32).collect();
    let mut canvas = vec![0u32; PROMPT + params.gen_length];
    let limits = Limits {
        block_causal: false,
        vocab_size: VOCAB,
        max_sequence_length: 4096,
        shifted_logits: false,
    };
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                Canvas::fill(&mut canvas, &prompt, 1, params.gen_length, params.mask_id).unwrap();
                let mut generation = Generation::new(
                    &params,
                    Canvas::new(&mut canvas, 1, PROMPT),
                    ws.as_workspace(),
                    limits,
                )
                .unwrap();
                while done < iters && generation.next_forward().is_some() {
                    let start = Instant::now();
                    std::hint::black_box(generation.complete_step().unwrap());
                    total += start.elapsed();
                    done += 1;
                }
            }
            total
        })
    });
}

fn benches(c: &mut Criterion) {
    let base = GenerateParams::default()
        .with_steps(256)
        .with_gen_length(256)
        .with_block_length(32);
    per_step(
        c,
        "sampler_step/argmax_low_confidence/vocab126464_block32",
        base,
    );
    per_step(
        c,
        "sampler_step/gumbel_t1/vocab126464_block32",
        base.with_temperature(1.0),
    );
}

criterion_group! {
    name = sampler;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(sampler);
