//! The reverse process with arbitrary parameters, canvases and logits, its invariants checked
//! at every step: the prompt never changes, a step commits only positions that were masked
//! and changes nothing else, the schedule commits the counts it promises, and the run ends
//! within its bound of forward passes.

use std::convert::Infallible;

use llada_core::{
    BlockGrid, CacheMode, Canvas, CommitRule, Editing, ForwardRequest, GenerateParams, Generation,
    Limits, MaskPredictor, Remasking, WorkspaceBuf, WorkspaceSizes, timesteps_to_commit,
    tokens_to_commit,
};

use crate::Bytes;

/// Logits drawn from the fuzzer's bytes: a seed, and how often a value is NaN or infinite.
struct ArbitraryLogits {
    vocab: usize,
    max_len: usize,
    state: u64,
    special: u8,
    passes: usize,
    /// Whether it declares shifted logits (Dream's).
    shifted: bool,
    /// Whether it declares block-causal attention (LLaDA2's).
    block_causal: bool,
}

impl ArbitraryLogits {
    fn next(&mut self) -> f32 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        match (z % 256) as u8 {
            v if v < self.special / 4 => f32::NAN,
            v if v < self.special / 2 => f32::INFINITY,
            v if v < self.special => f32::NEG_INFINITY,
            _ => ((z >> 16) % 2000) as f32 / 100.0 - 10.0,
        }
    }
}

impl MaskPredictor for ArbitraryLogits {
    type Error = Infallible;

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_sequence_length(&self) -> usize {
        self.max_len
    }

    fn shifted_logits(&self) -> bool {
        self.shifted
    }

    fn block_causal(&self) -> bool {
        self.block_causal
    }

    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), Infallible> {
        assert_eq!(
            logits.len(),
            request.logits_len(self.vocab),
            "logits buffer size"
        );
        assert!(request.seq_len() <= self.max_len);
        self.passes += 1;
        for v in logits {
            *v = self.next();
        }
        Ok(())
    }
}

/// Generation parameters, read in this order: steps, gen_length, block_length, the mask,
/// EOS and EOT ids, remasking, commit rule (and its value; the rule's byte also gives Dream's
/// eps, origin and alg_temp), cache, temperature, cfg scale, top_p, top_k, seed, pass cap,
/// three flags.
fn params(b: &mut Bytes<'_>, vocab: usize) -> GenerateParams {
    let id = |b: &mut Bytes<'_>| {
        let raw = b.u32();
        if raw.is_multiple_of(7) {
            raw
        } else {
            raw % vocab as u32
        }
    };
    let value = |b: &mut Bytes<'_>| match b.u8() % 4 {
        0 => b.f64(),
        _ => f64::from(b.u8()) / 128.0,
    };
    let float = |b: &mut Bytes<'_>| match b.u8() % 4 {
        0 => b.f32(),
        1 => 0.0,
        _ => f32::from(b.u8()) / 64.0,
    };
    let steps = b.below(12);
    let gen_length = b.below(12);
    let block_length = b.below(12);
    let (mask, eos, eot) = (id(b), id(b), id(b));
    let remasking = [
        Remasking::LowConfidence,
        Remasking::Random,
        Remasking::Margin,
        Remasking::Entropy,
    ][b.below(3)];
    // The rule's byte also picks Dream's schedule (no byte read for it, so the committed
    // seeds keep their meaning): its eps, origin and alg_temp from the byte's other bits.
    let rule = b.u8();
    let commit = match rule % 4 {
        0 if rule >= 128 => CommitRule::Timesteps(f64::from(rule - 128) / 128.0),
        0 => CommitRule::Schedule,
        1 => CommitRule::Threshold(value(b)),
        2 => CommitRule::Factor(value(b)),
        _ => CommitRule::EntropyBounded(value(b)),
    };
    let timesteps = matches!(commit, CommitRule::Timesteps(_));
    let remasking = if timesteps && rule & 4 != 0 {
        Remasking::Origin
    } else {
        remasking
    };
    let alg_temp = if rule & 8 != 0 && !commit.is_adaptive() {
        0.5
    } else {
        0.0
    };
    let cache = [CacheMode::None, CacheMode::Prefix, CacheMode::Dual][b.below(2)];
    let temperature = float(b);
    let cfg_scale = float(b);
    let top_p = float(b);
    let top_k = b.below(vocab + 1);
    let seed = b.u64();
    let max_passes = b.below(6);
    GenerateParams::default()
        .with_steps(steps)
        .with_gen_length(gen_length)
        .with_block_length(block_length)
        .with_mask_id(mask)
        .with_eos_id(eos)
        .with_eot_id(eot)
        .with_remasking(remasking)
        .with_commit(commit)
        .with_cache(cache)
        .with_temperature(temperature)
        .with_cfg_scale(cfg_scale)
        .with_top_p(top_p)
        .with_top_k(top_k)
        .with_seed(seed)
        .with_max_passes_per_block(max_passes)
        .with_logits_eos_inf(b.bool())
        .with_confidence_eos_eot_inf(b.bool())
        .with_stop_at_eos(b.bool())
        .with_alg_temp(alg_temp)
}

/// The bytes: vocabulary, prompts, parameters and the logits' seed.
pub fn sampler(data: &[u8]) {
    let mut b = Bytes::new(data);
    let vocab = 2 + b.below(30);
    let max_len = 1 + b.below(40);
    let batch = 1 + b.below(2);
    let mut params = params(&mut b, vocab);
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            let len = 1 + b.below(5);
            (0..len).map(|_| b.u32() % vocab as u32).collect()
        })
        .collect();
    let pad = b.u32() % vocab as u32;
    let state = b.u64();
    // One byte: how often logits are special, and (a bit the seeds left clear) a shift.
    let special = b.u8();
    let mut predictor = ArbitraryLogits {
        vocab,
        max_len,
        state,
        special: special % 64,
        passes: 0,
        shifted: special & 64 != 0,
        block_causal: false,
    };
    if b.bool() {
        params = params.with_steps(params.gen_length);
    }
    // LLaDA2's block diffusion, from the special byte's top bit (the seeds leave it clear):
    // the absolute grid, LLaDA2's rule, and LLaDA2.1's editing on odd seeds.
    if special & 128 != 0 {
        params = params
            .with_grid(BlockGrid::Absolute)
            .with_commit(CommitRule::Llada2(
                0.5 + ((params.seed >> 1) & 15) as f64 / 32.0,
            ))
            .with_remasking(Remasking::LowConfidence)
            .with_alg_temp(0.0)
            .with_confidence_eos_eot_inf(false)
            .with_editing((params.seed & 1 == 1).then_some(Editing {
                threshold: 0.6,
                max_post_steps: 2,
                num_to_transfer: 1 + ((params.seed >> 5) & 1) as usize,
            }));
        predictor.block_causal = true;
    }

    let prompt_len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let seq = params.canvas_len(prompt_len);
    let mut tokens = vec![0u32; batch * seq];
    let mut attention = vec![0u8; batch * seq];
    let Ok(canvas) = Canvas::left_padded(
        &mut tokens,
        &mut attention,
        &prompts,
        seq - prompt_len,
        params.mask_id,
        pad,
    ) else {
        return;
    };
    let Ok(sizes) = WorkspaceSizes::for_generation(&params, batch, prompt_len, vocab) else {
        return;
    };
    let mut workspace = WorkspaceBuf::new(&sizes);
    let Ok(mut generation) = Generation::new(
        &params,
        canvas,
        workspace.as_workspace(),
        Limits::of(&predictor),
    ) else {
        return;
    };

    let mask = params.mask_id;
    let start: Vec<u32> = generation.canvas().to_vec();
    let mut before = start.clone();
    let num_blocks = params.blocks_for(prompt_len);
    let bound = if let Some(editing) = params.editing {
        num_blocks * (params.block_length.max(params.steps) + editing.max_post_steps)
    } else if params.grid == BlockGrid::Absolute {
        num_blocks * params.steps_per_block()
    } else if params.commit.is_adaptive() {
        num_blocks
            * match params.max_passes_per_block {
                0 => params.block_length,
                n => n.min(params.block_length),
            }
    } else {
        params.steps
    };
    // Masks of each row's block when the block started.
    let mut block_masks = vec![0usize; batch];
    let mut current_block = usize::MAX;
    while let Some(job) = generation.next_forward() {
        assert!(
            predictor.passes < bound.max(1),
            "more than {bound} forward passes: {params:?}, prompts {prompts:?}, canvas {before:?}"
        );
        predictor.forward(&job.request, job.logits).unwrap();
        let event = match generation.complete_step() {
            Ok(event) => event,
            Err(llada_core::Error::NanLogits { row, position, .. }) => {
                // A NaN among a masked position's logits: the step committed nothing, and a
                // rollback puts the canvas back.
                assert!(row < batch && position >= prompt_len);
                assert_eq!(generation.canvas(), &before[..], "a failed step wrote");
                generation.rollback();
                assert_eq!(generation.canvas(), &start[..], "the rollback");
                return;
            }
            Err(e) => panic!("a checked generation failed a step: {e}"),
        };
        let span = event.block_span();
        if event.block() != current_block {
            current_block = event.block();
            for (r, m) in block_masks.iter_mut().enumerate() {
                *m = before[r * seq..][span.clone()]
                    .iter()
                    .filter(|&&t| t == mask)
                    .count();
            }
        }
        for r in 0..batch {
            let (old, new) = (&before[r * seq..(r + 1) * seq], event.row(r));
            assert_eq!(
                new[..prompt_len],
                start[r * seq..r * seq + prompt_len],
                "the prompt changed"
            );
            let committed = event.committed(r);
            for &p in committed {
                let p = p as usize;
                assert!(
                    span.contains(&p),
                    "committed {p} outside the block {span:?}"
                );
                assert_eq!(old[p], mask, "committed {p}, which was not masked");
            }
            let edited = event.edited(r);
            for &p in edited {
                let p = p as usize;
                assert!(
                    span.contains(&p) && p >= prompt_len,
                    "edited {p} outside the answer's block"
                );
                assert_ne!(old[p], mask, "edited {p}, which was masked");
            }
            for p in prompt_len..seq {
                let chosen = committed.contains(&(p as u32)) || edited.contains(&(p as u32));
                let filled = params.stop_at_eos && old[p] == mask && new[p] == params.eos_id;
                assert!(
                    chosen || filled || old[p] == new[p],
                    "position {p} changed uncommitted"
                );
            }
            let left = old[span.clone()].iter().filter(|&&t| t == mask).count();
            if let (CommitRule::Timesteps(eps), false) =
                (params.commit, params.remasking == Remasking::Origin)
            {
                // Dream's count on the masks left (the proposals may be the mask id itself).
                let expected =
                    timesteps_to_commit(left, event.steps_per_block(), event.step(), eps as f32);
                assert!(committed.len() <= expected, "row {r} step {}", event.step());
            }
            if params.commit == CommitRule::Schedule && !params.stop_at_eos {
                let expected =
                    tokens_to_commit(block_masks[r], event.steps_per_block(), event.step())
                        .min(old[span.clone()].iter().filter(|&&t| t == mask).count());
                assert_eq!(committed.len(), expected, "row {r} step {}", event.step());
            }
        }
        before.copy_from_slice(event.canvas());
    }
    assert!(predictor.passes <= bound.max(1));
}
