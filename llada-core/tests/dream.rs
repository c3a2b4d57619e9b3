//! Dream's decoding in the sampler: shifted logits, the time schedule and its counts, the
//! `origin` algorithm, `alg_temp`, and the parameters that do not go together.

use core::ops::ControlFlow;

use llada_core::testing::{HashPredictor, MockError, ShiftedPredictor};
use llada_core::{
    Canvas, CommitRule, Error, ForwardRequest, GenerateError, GenerateParams, LikelihoodParams,
    MaskPredictor, Remasking, SamplerRng, StepEvent, WorkspaceBuf, WorkspaceSizes, generate,
    log_likelihood, rand_core::SeedableRng, timesteps_to_commit,
};

const VOCAB: usize = 64;
const MASK: u32 = 63;
const PROMPT: [u32; 5] = [3, 1, 4, 1, 5];

fn dream() -> GenerateParams {
    GenerateParams::default()
        .with_steps(16)
        .with_gen_length(16)
        .with_block_length(16)
        .with_mask_id(MASK)
        .with_commit(CommitRule::Timesteps(1e-3))
}

/// The canvas after `generate`, the committed positions of every step, and the forward passes.
type Run = (Vec<u32>, Vec<Vec<u32>>, usize);

fn run<P: MaskPredictor<Error = MockError>>(
    predictor: &mut P,
    params: &GenerateParams,
) -> Result<Run, GenerateError<MockError>> {
    let mut tokens = vec![0; PROMPT.len() + params.gen_length];
    let canvas = Canvas::from_prompts(&mut tokens, &PROMPT, 1, params.gen_length, MASK)?;
    let sizes = WorkspaceSizes::for_generation(params, 1, PROMPT.len(), VOCAB)?;
    let mut workspace = WorkspaceBuf::new(&sizes);
    let mut steps = Vec::new();
    let mut observer = |e: &StepEvent<'_>| {
        steps.push(e.committed(0).to_vec());
        ControlFlow::Continue(())
    };
    let stats = generate(
        predictor,
        params,
        canvas,
        workspace.as_workspace(),
        &mut observer,
    )?;
    Ok((tokens, steps, stats.forward_passes))
}

/// Records the logits windows it is asked for.
struct Windows<P> {
    inner: P,
    seen: Vec<core::ops::Range<usize>>,
}

impl<P: MaskPredictor<Error = MockError>> MaskPredictor for Windows<P> {
    type Error = MockError;
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn max_sequence_length(&self) -> usize {
        self.inner.max_sequence_length()
    }
    fn shifted_logits(&self) -> bool {
        self.inner.shifted_logits()
    }
    fn forward(&mut self, r: &ForwardRequest<'_>, logits: &mut [f32]) -> Result<(), MockError> {
        self.seen.push(r.window());
        self.inner.forward(r, logits)
    }
}

#[test]
fn shifted_logits_read_the_row_before_and_ask_for_that_window() {
    let hash = HashPredictor::new(VOCAB, MASK, 9);
    let semi_ar = GenerateParams::default()
        .with_steps(8)
        .with_gen_length(16)
        .with_block_length(8)
        .with_mask_id(MASK);
    for params in [
        semi_ar,
        dream(),
        semi_ar.with_commit(CommitRule::Threshold(0.2)),
    ] {
        let plain = run(&mut hash.clone(), &params).unwrap();
        let mut shifted = Windows {
            inner: ShiftedPredictor(hash),
            seen: Vec::new(),
        };
        assert_eq!(run(&mut shifted, &params).unwrap(), plain, "{params:?}");
        // Every window starts one position before its block and is as long.
        let prompt = PROMPT.len();
        for window in &shifted.seen {
            assert_eq!(window.len(), params.block_length);
            assert_eq!((window.start + 1 - prompt) % params.block_length, 0);
        }
    }
}

#[test]
fn the_likelihood_of_a_shifted_model_reads_the_same_rows() {
    let hash = HashPredictor::new(VOCAB, MASK, 9);
    let answer = [7, 8, 9, 10];
    let params = LikelihoodParams::default()
        .with_mc_samples(8)
        .with_batch(4)
        .with_mask_id(MASK);
    let likelihood = |predictor: &mut dyn MaskPredictor<Error = MockError>| {
        let sizes =
            WorkspaceSizes::for_likelihood(PROMPT.len(), answer.len(), 4, false, VOCAB).unwrap();
        let mut ws = WorkspaceBuf::new(&sizes);
        let mut rng = SamplerRng::seed_from_u64(5);
        log_likelihood(
            predictor,
            &PROMPT,
            &answer,
            &params,
            &mut rng,
            ws.as_workspace(),
        )
        .unwrap()
    };
    let plain = likelihood(&mut hash.clone());
    assert_eq!(likelihood(&mut ShiftedPredictor(hash)), plain);
}

#[test]
fn a_shifted_model_needs_a_prompt() {
    let params = dream();
    let mut tokens = vec![MASK; params.gen_length];
    let canvas = Canvas::new(&mut tokens, 1, 0);
    let sizes = WorkspaceSizes::for_generation(&params, 1, 0, VOCAB).unwrap();
    let mut ws = WorkspaceBuf::new(&sizes);
    let mut predictor = ShiftedPredictor(HashPredictor::new(VOCAB, MASK, 9));
    let err = generate(&mut predictor, &params, canvas, ws.as_workspace(), &mut ()).unwrap_err();
    assert!(matches!(
        err,
        GenerateError::Invalid(Error::Zero { name }) if name.starts_with("prompt length")
    ));
}

#[test]
fn dreams_schedule_commits_its_counts_and_skips_empty_steps() {
    for steps in [16, 5, 40] {
        let params = dream().with_steps(steps);
        let (canvas, committed, passes) =
            run(&mut HashPredictor::new(VOCAB, MASK, 9), &params).unwrap();
        assert!(!canvas.contains(&MASK));
        // Replay the counts: masks left, step by step, with the steps that commit nothing
        // skipped (no event, no forward pass).
        let mut left = params.gen_length;
        let mut expected = Vec::new();
        for step in 0..steps {
            let n = timesteps_to_commit(left, steps, step, 1e-3);
            if n > 0 {
                expected.push(n);
                left -= n;
            }
        }
        let counts: Vec<usize> = committed.iter().map(Vec::len).collect();
        assert_eq!(counts, expected, "steps {steps}");
        assert_eq!(passes, expected.len());
        if steps >= params.gen_length {
            assert!(
                passes < steps,
                "steps {steps}: the first steps commit nothing"
            );
        }
    }
    // With eps near 1 every step but the last commits nothing: one pass.
    let late = dream().with_commit(CommitRule::Timesteps(0.999));
    let (_, committed, passes) = run(&mut HashPredictor::new(VOCAB, MASK, 9), &late).unwrap();
    assert_eq!((passes, committed[0].len()), (1, 16));
}

#[test]
fn dreams_rankings_are_llada_ones_at_temperature_zero() {
    // maskgit_plus and topk_margin rank by the same scores as low_confidence and margin: with
    // the time schedule's counts, the committed positions of each step are the most confident.
    let hash = HashPredictor::new(VOCAB, MASK, 9);
    for remasking in [
        Remasking::LowConfidence,
        Remasking::Margin,
        Remasking::Entropy,
    ] {
        let params = dream().with_remasking(remasking);
        let (_, committed, _) = run(&mut hash.clone(), &params).unwrap();
        let total: usize = committed.iter().map(Vec::len).sum();
        assert_eq!(total, 16, "{remasking}");
    }
}

#[test]
fn origin_commits_each_mask_with_probability_one_minus_s_over_t() {
    // Over many seeds, the share committed at each step follows 1 - s/t of the masks left.
    let steps = 4;
    let params = dream().with_steps(steps).with_remasking(Remasking::Origin);
    let mut committed_at = vec![0usize; steps];
    let mut left_at = vec![0usize; steps];
    for seed in 0..400 {
        let mut tokens = vec![0; PROMPT.len() + 16];
        let canvas = Canvas::from_prompts(&mut tokens, &PROMPT, 1, 16, MASK).unwrap();
        let sizes = WorkspaceSizes::for_generation(&params, 1, PROMPT.len(), VOCAB).unwrap();
        let mut ws = WorkspaceBuf::new(&sizes);
        let mut left = 16;
        let mut observer = |e: &StepEvent<'_>| {
            left_at[e.step()] += left;
            committed_at[e.step()] += e.committed(0).len();
            left -= e.committed(0).len();
            ControlFlow::Continue(())
        };
        let p = params.with_seed(seed);
        generate(
            &mut HashPredictor::new(VOCAB, MASK, 9),
            &p,
            canvas,
            ws.as_workspace(),
            &mut observer,
        )
        .unwrap();
        assert!(!tokens.contains(&MASK));
    }
    for step in 0..steps - 1 {
        let p = f64::from(llada_core::transfer_fraction(steps, step, 1e-3));
        let share = committed_at[step] as f64 / left_at[step] as f64;
        let sd = (p * (1.0 - p) / left_at[step] as f64).sqrt();
        assert!((share - p).abs() < 5.0 * sd, "step {step}: {share} vs {p}");
    }
    assert_eq!(committed_at[steps - 1], left_at[steps - 1]);
    // Reproducible for one seed.
    let once = run(&mut HashPredictor::new(VOCAB, MASK, 9), &params).unwrap();
    assert_eq!(
        run(&mut HashPredictor::new(VOCAB, MASK, 9), &params).unwrap(),
        once
    );
}

/// Position p proposes token 1 with a logit of `p % 4 + 1` (others 0): its confidence grows
/// with `p % 4`.
struct Ramp;

impl MaskPredictor for Ramp {
    type Error = MockError;
    fn vocab_size(&self) -> usize {
        VOCAB
    }
    fn max_sequence_length(&self) -> usize {
        4096
    }
    fn forward(&mut self, r: &ForwardRequest<'_>, logits: &mut [f32]) -> Result<(), MockError> {
        let window = r.window();
        logits.fill(0.0);
        for (i, row) in logits.chunks_exact_mut(VOCAB).enumerate() {
            let position = window.start + i % window.len();
            row[1] = (position % 4 + 1) as f32;
        }
        Ok(())
    }
}

#[test]
fn alg_temp_draws_the_first_commit_from_the_softmax_of_the_confidences() {
    // One commit per step over a block of 4 (the schedule), alg_temp 0.5: the first pick's
    // position follows softmax(confidence / 0.5).
    let params = GenerateParams::default()
        .with_steps(4)
        .with_gen_length(4)
        .with_block_length(4)
        .with_mask_id(MASK)
        .with_alg_temp(0.5);
    let prompt = [2u32, 2, 2, 2];
    let mut firsts = [0usize; 4];
    let trials = 4000;
    for seed in 0..trials {
        let mut tokens = vec![0; 8];
        let canvas = Canvas::from_prompts(&mut tokens, &prompt, 1, 4, MASK).unwrap();
        let sizes = WorkspaceSizes::for_generation(&params, 1, 4, VOCAB).unwrap();
        let mut ws = WorkspaceBuf::new(&sizes);
        let mut first = None;
        let mut observer = |e: &StepEvent<'_>| {
            first.get_or_insert(e.committed(0)[0] as usize - 4);
            ControlFlow::Continue(())
        };
        generate(
            &mut Ramp,
            &params.with_seed(seed),
            canvas,
            ws.as_workspace(),
            &mut observer,
        )
        .unwrap();
        firsts[first.unwrap()] += 1;
    }
    // Confidence of position j: e^(j+1) / (e^(j+1) + 63).
    let conf: Vec<f64> = (0..4)
        .map(|j| {
            let e = (j as f64 + 1.0).exp();
            e / (e + 63.0)
        })
        .collect();
    let z: f64 = conf.iter().map(|c| (c / 0.5).exp()).sum();
    for j in 0..4 {
        let p = (conf[j] / 0.5).exp() / z;
        let share = firsts[j] as f64 / f64::from(trials as u32);
        let sd = (p * (1.0 - p) / f64::from(trials as u32)).sqrt();
        assert!(
            (share - p).abs() < 5.0 * sd,
            "{firsts:?} position {j}: {share} vs {p}"
        );
    }
    // alg_temp 0 takes the most confident: position 3 first.
    let mut tokens = vec![0; 8];
    let canvas = Canvas::from_prompts(&mut tokens, &prompt, 1, 4, MASK).unwrap();
    let p0 = params.with_alg_temp(0.0);
    let sizes = WorkspaceSizes::for_generation(&p0, 1, 4, VOCAB).unwrap();
    let mut ws = WorkspaceBuf::new(&sizes);
    let mut order = Vec::new();
    let mut observer = |e: &StepEvent<'_>| {
        order.extend_from_slice(e.committed(0));
        ControlFlow::Continue(())
    };
    generate(&mut Ramp, &p0, canvas, ws.as_workspace(), &mut observer).unwrap();
    assert_eq!(order, [7, 6, 5, 4]);
}

#[test]
fn dream_top_p_and_top_k_shape_the_confidences_at_temperature_zero() {
    // Under the time schedule the filters apply at temperature 0 too: with top-k 1 every
    // confidence is 1, so the ranking falls back to position order.
    let params = GenerateParams::default()
        .with_steps(4)
        .with_gen_length(4)
        .with_block_length(4)
        .with_mask_id(MASK)
        .with_commit(CommitRule::Timesteps(0.0))
        .with_top_k(1);
    let prompt = [2u32, 2, 2, 2];
    let mut tokens = vec![0; 8];
    let canvas = Canvas::from_prompts(&mut tokens, &prompt, 1, 4, MASK).unwrap();
    let sizes = WorkspaceSizes::for_generation(&params, 1, 4, VOCAB).unwrap();
    let mut ws = WorkspaceBuf::new(&sizes);
    let mut order = Vec::new();
    let mut observer = |e: &StepEvent<'_>| {
        order.extend_from_slice(e.committed(0));
        ControlFlow::Continue(())
    };
    generate(&mut Ramp, &params, canvas, ws.as_workspace(), &mut observer).unwrap();
    assert_eq!(order, [4, 5, 6, 7]);
    // Without the filter the most confident goes first.
    let mut tokens = vec![0; 8];
    let canvas = Canvas::from_prompts(&mut tokens, &prompt, 1, 4, MASK).unwrap();
    let mut order = Vec::new();
    let mut observer = |e: &StepEvent<'_>| {
        order.extend_from_slice(e.committed(0));
        ControlFlow::Continue(())
    };
    let p = params.with_top_k(0);
    generate(&mut Ramp, &p, canvas, ws.as_workspace(), &mut observer).unwrap();
    assert_eq!(order, [7, 6, 5, 4]);
}

#[test]
fn combinations_that_do_not_go_together_are_typed_errors() {
    let base = dream();
    let cases = [
        (
            base.with_commit(CommitRule::Schedule)
                .with_remasking(Remasking::Origin),
            "origin remasking",
        ),
        (
            base.with_commit(CommitRule::Threshold(0.9))
                .with_alg_temp(0.5),
            "alg_temp",
        ),
        (
            base.with_confidence_eos_eot_inf(true),
            "confidence_eos_eot_inf",
        ),
    ];
    for (params, name) in cases {
        assert!(
            matches!(params.validate(), Err(Error::Combination { what, .. }) if what == name),
            "{name}: {:?}",
            params.validate()
        );
    }
    for eps in [-0.1, 1.0, f64::NAN] {
        assert!(matches!(
            base.with_commit(CommitRule::Timesteps(eps)).validate(),
            Err(Error::OutOfRange { name: "eps", .. })
        ));
    }
    assert!(matches!(
        base.with_steps(1 << 21).validate(),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        base.with_alg_temp(f32::NAN).validate(),
        Err(Error::NotFiniteNonNegative {
            name: "alg_temp",
            ..
        })
    ));
    assert_eq!("maskgit_plus".parse(), Ok(Remasking::LowConfidence));
    assert_eq!("topk_margin".parse(), Ok(Remasking::Margin));
    assert_eq!("origin".parse(), Ok(Remasking::Origin));
}

#[test]
fn a_million_steps_walk_their_empty_ones_without_passes() {
    // Most of 2^20 steps commit nothing: they are stepped over on the counts kept per row
    // (no scan of the block per step), and each pass commits at least one token.
    let params = dream()
        .with_steps(llada_core::MAX_TIMESTEPS)
        .with_gen_length(64)
        .with_block_length(64);
    let (canvas, committed, passes) =
        run(&mut HashPredictor::new(VOCAB, MASK, 9), &params).unwrap();
    assert!(!canvas.contains(&MASK));
    assert!(
        passes <= 64 && committed.iter().all(|c| !c.is_empty()),
        "{passes}"
    );
    assert!(matches!(
        dream().with_steps(llada_core::MAX_TIMESTEPS + 1).validate(),
        Err(Error::OutOfRange { .. })
    ));
}
