//! Behaviour of the reverse process beyond the golden cases: validation, cancellation, the
//! sans-IO protocol, infilling, batches, sampling, tie-breaking and the EOS options.

use core::ops::ControlFlow;

use llada_core::testing::{HashPredictor, MockError, UniformPredictor};
use llada_core::{
    Canvas, Error, ForwardRequest, GenerateError, GenerateParams, Generation, Limits,
    MaskPredictor, Remasking, StepEvent, Workspace, WorkspaceBuf, WorkspaceSizes, generate,
    tokens_to_commit,
};

const VOCAB: usize = 64;
const MASK: u32 = 63;

fn params() -> GenerateParams {
    GenerateParams::default()
        .with_steps(8)
        .with_gen_length(16)
        .with_block_length(8)
        .with_mask_id(MASK)
}

/// Block, step and the positions each row committed.
type Event = (usize, usize, Vec<Vec<u32>>);

/// Runs `generate` on the hash predictor; returns the canvas and the events seen.
fn run(
    params: &GenerateParams,
    prompts: &[u32],
    batch: usize,
    attention: Option<&[u8]>,
) -> Result<(Vec<u32>, Vec<Event>), GenerateError<MockError>> {
    let prompt_len = prompts.len() / batch;
    let mut tokens = vec![0; batch * (prompt_len + params.gen_length)];
    Canvas::fill(
        &mut tokens,
        prompts,
        batch,
        params.gen_length,
        params.mask_id,
    )?;
    let mut ws = WorkspaceBuf::new(&WorkspaceSizes::for_generation(
        params, batch, prompt_len, VOCAB,
    )?);
    let mut events = Vec::new();
    let mut observer = |e: &StepEvent<'_>| {
        events.push((
            e.block(),
            e.step(),
            (0..e.batch()).map(|r| e.committed(r).to_vec()).collect(),
        ));
        ControlFlow::Continue(())
    };
    let mut canvas = Canvas::new(&mut tokens, batch, prompt_len);
    if let Some(mask) = attention {
        canvas = canvas.with_attention_mask(mask);
    }
    generate(
        &mut HashPredictor::new(VOCAB, MASK, 9),
        params,
        canvas,
        ws.as_workspace(),
        &mut observer,
    )?;
    Ok((tokens, events))
}

fn invalid(params: GenerateParams) -> Error {
    match run(&params, &[1, 2, 3], 1, None) {
        Err(GenerateError::Invalid(e)) => e,
        other => panic!("expected a parameter error, got {other:?}"),
    }
}

#[test]
fn every_parameter_constraint_is_a_typed_error() {
    let p = params();
    assert_eq!(invalid(p.with_steps(0)), Error::Zero { name: "steps" });
    assert_eq!(
        invalid(p.with_block_length(0)),
        Error::Zero {
            name: "block_length"
        }
    );
    assert_eq!(
        invalid(p.with_block_length(5)),
        Error::BlockLength {
            gen_length: 16,
            block_length: 5
        }
    );
    assert_eq!(
        invalid(p.with_steps(7)),
        Error::Steps {
            steps: 7,
            num_blocks: 2
        }
    );
    assert_eq!(
        invalid(p.with_mask_id(64)),
        Error::TokenOutOfVocab {
            name: "mask_id",
            id: 64,
            vocab: 64
        }
    );
    assert_eq!(
        invalid(p.with_logits_eos_inf(true).with_eos_id(100)),
        Error::TokenOutOfVocab {
            name: "eos_id",
            id: 100,
            vocab: 64
        }
    );
    assert!(matches!(
        invalid(p.with_temperature(-1.0)),
        Error::NotFiniteNonNegative {
            name: "temperature",
            ..
        }
    ));
    assert!(matches!(
        invalid(p.with_cfg_scale(f32::NAN)),
        Error::NotFiniteNonNegative {
            name: "cfg_scale",
            ..
        }
    ));
    assert!(matches!(
        invalid(p.with_top_p(0.0)),
        Error::OutOfRange { name: "top_p", .. }
    ));
    assert!(matches!(
        invalid(p.with_top_p(1.5)),
        Error::OutOfRange { name: "top_p", .. }
    ));
    let long = p
        .with_gen_length(4096)
        .with_block_length(4096)
        .with_steps(8);
    assert_eq!(
        invalid(long),
        Error::TooLong {
            length: 4099,
            prompt_len: 3,
            gen_length: 4096,
            max: 4096
        }
    );
    let message = invalid(long).to_string();
    assert!(
        message.contains("4099") && message.contains("4096"),
        "{message}"
    );
}

#[test]
fn bad_canvases_and_small_buffers_are_typed_errors() {
    let p = params();
    let mut predictor = HashPredictor::new(VOCAB, MASK, 1);
    let limits = Limits::of(&predictor);
    let sizes = WorkspaceSizes::for_generation(&p, 1, 3, VOCAB).unwrap();
    let mut ws = WorkspaceBuf::new(&sizes);

    let mut short = vec![MASK; 10];
    let err =
        Generation::new(&p, Canvas::new(&mut short, 1, 3), ws.as_workspace(), limits).unwrap_err();
    assert_eq!(err.to_string(), "canvas has length 10, expected 19");

    let mut with_mask_in_prompt = vec![MASK; 19];
    let err = Generation::new(
        &p,
        Canvas::new(&mut with_mask_in_prompt, 1, 3),
        ws.as_workspace(),
        limits,
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::MaskInPrompt {
            row: 0,
            position: 0
        }
    );

    let mut out_of_vocab = vec![MASK; 19];
    out_of_vocab[..3].copy_from_slice(&[1, 2, 99]);
    let err = Generation::new(
        &p,
        Canvas::new(&mut out_of_vocab, 1, 3),
        ws.as_workspace(),
        limits,
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::TokenOutOfVocab {
            name: "canvas token",
            id: 99,
            vocab: 64
        }
    );

    let mut tokens = vec![MASK; 19];
    tokens[..3].copy_from_slice(&[1, 2, 3]);
    let mask = [1u8; 5];
    let err = Generation::new(
        &p,
        Canvas::new(&mut tokens, 1, 3).with_attention_mask(&mask),
        ws.as_workspace(),
        limits,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "attention mask has length 5, expected 19");

    let (mut l, mut t, mut f, mut s) = (
        vec![0f32; sizes.logits - 1],
        vec![0u32; sizes.tokens],
        vec![0u8; sizes.flags],
        vec![0f64; sizes.scores],
    );
    let err = Generation::new(
        &p,
        Canvas::new(&mut tokens, 1, 3),
        Workspace::new(&mut l, &mut t, &mut f, &mut s),
        limits,
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::BufferTooSmall {
            buffer: "logits",
            needed: sizes.logits,
            found: sizes.logits - 1
        }
    );
    assert_eq!(err.kind(), llada_core::ErrorKind::BufferTooSmall);

    // Nothing was written by the failed attempts.
    assert_eq!(&tokens[3..], &[MASK; 16]);
    // And the same canvas generates fine with the right workspace.
    generate(
        &mut predictor,
        &p,
        Canvas::new(&mut tokens, 1, 3),
        ws.as_workspace(),
        &mut (),
    )
    .unwrap();
}

#[test]
fn the_schedule_commits_the_reference_counts_inside_the_current_block() {
    // 8 steps over 2 blocks of 8: 4 steps per block, 2 tokens each.
    let p = params()
        .with_steps(8)
        .with_gen_length(16)
        .with_block_length(8);
    let (canvas, events) = run(&p, &[1, 2, 3], 1, None).unwrap();
    assert!(!canvas.contains(&MASK));
    assert_eq!(events.len(), 8);
    let mut seen = Vec::new();
    for (i, (block, step, committed)) in events.iter().enumerate() {
        assert_eq!((*block, *step), (i / 4, i % 4));
        assert_eq!(committed[0].len(), 2);
        for &position in &committed[0] {
            let span = 3 + block * 8..3 + (block + 1) * 8;
            assert!(
                span.contains(&(position as usize)),
                "position {position} outside block {block}"
            );
            assert!(!seen.contains(&position));
            seen.push(position);
        }
    }

    // 6 steps per block of 8 masks: 2, 2, 1, 1, 1, 1.
    let p = params()
        .with_steps(6)
        .with_gen_length(8)
        .with_block_length(8);
    let (_, events) = run(&p, &[1, 2, 3], 1, None).unwrap();
    let counts: Vec<usize> = events.iter().map(|(_, _, c)| c[0].len()).collect();
    assert_eq!(
        counts,
        [0, 1, 2, 3, 4, 5].map(|s| tokens_to_commit(8, 6, s))
    );
    assert_eq!(counts, [2, 2, 1, 1, 1, 1]);
}

#[test]
fn steps_with_nothing_to_commit_cost_no_forward_pass() {
    // 16 steps for 8 masks: the last 8 steps commit nothing.
    let p = params()
        .with_steps(16)
        .with_gen_length(8)
        .with_block_length(8);
    let (canvas, events) = run(&p, &[1, 2, 3], 1, None).unwrap();
    assert_eq!(events.len(), 8);
    // Same tokens as the schedule with steps == masks.
    let (reference, _) = run(&p.with_steps(8), &[1, 2, 3], 1, None).unwrap();
    assert_eq!(canvas, reference);
    // Billions of steps for two blocks of 8 (found by fuzzing the C ABI: the idle steps were
    // once skipped one at a time, so this call spun for most of an hour): the same 16 passes.
    let (canvas, events) = run(&params().with_steps(1 << 40), &[1, 2, 3], 1, None).unwrap();
    assert_eq!(events.len(), 16);
    let (reference, _) = run(&params().with_steps(16), &[1, 2, 3], 1, None).unwrap();
    assert_eq!(canvas, reference);
}

#[test]
fn rows_of_a_batch_follow_their_own_schedule() {
    let p = params();
    let (batched, _) = run(
        &p,
        &[1, 1, 7, 2, 3, 4],
        2,
        Some(&[&[0u8, 0, 1][..], &[1; 16], &[1; 19]].concat()),
    )
    .unwrap();
    let (first, _) = run(&p, &[1, 1, 7], 1, None).unwrap();
    let (second, _) = run(&p, &[2, 3, 4], 1, None).unwrap();
    assert_eq!(batched, [first, second].concat());

    let cfg = p.with_cfg_scale(2.0);
    let (batched, _) = run(&cfg, &[1, 1, 7, 2, 3, 4], 2, None).unwrap();
    let (first, _) = run(&cfg, &[1, 1, 7], 1, None).unwrap();
    let (second, _) = run(&cfg, &[2, 3, 4], 1, None).unwrap();
    assert_eq!(batched, [first, second].concat());
    let (unguided, _) = run(&p, &[1, 1, 7, 2, 3, 4], 2, None).unwrap();
    assert_ne!(
        batched, unguided,
        "guidance changes the answer of the hash predictor"
    );
}

#[test]
fn cancelling_puts_the_canvas_back_and_the_observer_saw_the_partial_answer() {
    let p = params();
    let mut tokens = vec![0; 19];
    Canvas::fill(&mut tokens, &[1, 2, 3], 1, 16, MASK).unwrap();
    let start = tokens.clone();
    let mut ws = WorkspaceBuf::new(&WorkspaceSizes::for_generation(&p, 1, 3, VOCAB).unwrap());
    let mut steps = 0;
    let mut partial = Vec::new();
    let mut stop_after_three = |e: &StepEvent<'_>| {
        steps += 1;
        if steps == 3 {
            partial = e.canvas().to_vec();
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let result = generate(
        &mut HashPredictor::new(VOCAB, MASK, 9),
        &p,
        Canvas::new(&mut tokens, 1, 3),
        ws.as_workspace(),
        &mut stop_after_three,
    );
    assert!(matches!(result, Err(GenerateError::Cancelled)));
    assert_eq!(result.unwrap_err().kind(), llada_core::ErrorKind::Cancelled);
    assert_eq!(tokens, start, "the canvas is back as it was");
    // Three steps of two tokens each, all in the first block, equal to the full run there.
    let (full, _) = run(&p, &[1, 2, 3], 1, None).unwrap();
    let committed: Vec<usize> = (3..19).filter(|&i| partial[i] != MASK).collect();
    assert_eq!(committed.len(), 6);
    assert!(committed.iter().all(|&i| i < 11 && partial[i] == full[i]));
}

/// The hash predictor, failing at pass `fail_at` (an error, or NaN logits at one position).
struct FailsAt {
    inner: HashPredictor,
    pass: usize,
    fail_at: usize,
    nan_at: Option<usize>,
}

impl MaskPredictor for FailsAt {
    type Error = MockError;
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn max_sequence_length(&self) -> usize {
        self.inner.max_sequence_length()
    }
    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), Self::Error> {
        self.inner.forward(request, logits)?;
        self.pass += 1;
        if self.pass == self.fail_at {
            match self.nan_at {
                // One logit of every window position from `k` on.
                Some(k) => {
                    for row in logits.chunks_exact_mut(VOCAB).skip(k) {
                        row[5] = f32::NAN;
                    }
                }
                // Any error of the predictor's own.
                None => {
                    return Err(MockError::Token {
                        id: u32::MAX,
                        vocab: VOCAB,
                    });
                }
            }
        }
        Ok(())
    }
}

#[test]
fn a_failing_predictor_or_nan_logits_leave_the_canvas_as_it_was() {
    let p = params();
    for (fail_at, nan_at) in [(1, None), (5, None), (8, None), (2, Some(7)), (6, Some(0))] {
        let mut tokens = vec![0; 19];
        Canvas::fill(&mut tokens, &[1, 2, 3], 1, 16, MASK).unwrap();
        let start = tokens.clone();
        let mut ws = WorkspaceBuf::new(&WorkspaceSizes::for_generation(&p, 1, 3, VOCAB).unwrap());
        let mut predictor = FailsAt {
            inner: HashPredictor::new(VOCAB, MASK, 9),
            pass: 0,
            fail_at,
            nan_at,
        };
        let err = generate(
            &mut predictor,
            &p,
            Canvas::new(&mut tokens, 1, 3),
            ws.as_workspace(),
            &mut |_: &StepEvent<'_>| ControlFlow::Continue(()),
        )
        .unwrap_err();
        assert_eq!(
            tokens, start,
            "pass {fail_at}: the canvas is back as it was"
        );
        match nan_at {
            None => assert!(matches!(
                err,
                GenerateError::Predictor(MockError::Token { .. })
            )),
            Some(_) => {
                // Only the window's last position, or every position: some masked one is named.
                let text = err.to_string();
                assert_eq!(err.kind(), llada_core::ErrorKind::Backend, "{text}");
                assert!(
                    matches!(err, GenerateError::Invalid(Error::NanLogits { row: 0, .. })),
                    "{text}"
                );
                assert!(text.contains("NaN") && text.contains("position"), "{text}");
            }
        }
        // The same canvas then generates what a fresh one does.
        let (full, _) = run(&p, &[1, 2, 3], 1, None).unwrap();
        generate(
            &mut HashPredictor::new(VOCAB, MASK, 9),
            &p,
            Canvas::new(&mut tokens, 1, 3),
            ws.as_workspace(),
            &mut |_: &StepEvent<'_>| ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(tokens, full);
    }
}

#[test]
fn infinite_logits_are_allowed() {
    struct Infinite;
    impl MaskPredictor for Infinite {
        type Error = core::convert::Infallible;
        fn vocab_size(&self) -> usize {
            4
        }
        fn max_sequence_length(&self) -> usize {
            64
        }
        fn forward(
            &mut self,
            _request: &ForwardRequest<'_>,
            logits: &mut [f32],
        ) -> Result<(), Self::Error> {
            for row in logits.chunks_exact_mut(4) {
                row.copy_from_slice(&[f32::NEG_INFINITY, f32::INFINITY, 0.0, f32::NEG_INFINITY]);
            }
            Ok(())
        }
    }
    let params = GenerateParams::default()
        .with_gen_length(4)
        .with_block_length(4)
        .with_steps(4)
        .with_mask_id(3);
    let mut tokens = vec![0u32; 6];
    Canvas::fill(&mut tokens, &[2, 2], 1, 4, 3).unwrap();
    let mut ws = WorkspaceBuf::new(&WorkspaceSizes::for_generation(&params, 1, 2, 4).unwrap());
    generate(
        &mut Infinite,
        &params,
        Canvas::new(&mut tokens, 1, 2),
        ws.as_workspace(),
        &mut |_: &StepEvent<'_>| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(tokens, [2, 2, 1, 1, 1, 1]);
}

/// Drives the state machine by hand, as an async or GPU host would.
#[test]
fn the_sans_io_protocol_gives_the_same_tokens_as_generate() {
    let p = params().with_cfg_scale(1.0);
    let mut predictor = HashPredictor::new(VOCAB, MASK, 9);
    let mut tokens = vec![0; 19];
    Canvas::fill(&mut tokens, &[1, 2, 3], 1, 16, MASK).unwrap();
    let mut ws = WorkspaceBuf::new(&WorkspaceSizes::for_generation(&p, 1, 3, VOCAB).unwrap());
    let mut generation = Generation::new(
        &p,
        Canvas::new(&mut tokens, 1, 3),
        ws.as_workspace(),
        Limits::of(&predictor),
    )
    .unwrap();
    assert_eq!(
        generation.complete_step().unwrap_err(),
        Error::NoPendingForward
    );
    let mut passes = 0;
    while let Some(job) = generation.next_forward() {
        // With guidance the batch is doubled and the window is the current block.
        assert_eq!(job.request.batch(), 2);
        assert_eq!(job.request.window().len(), 8);
        assert!(
            job.request.row(1)[..3].iter().all(|&t| t == MASK),
            "prompt masked in the unconditional row"
        );
        predictor.forward(&job.request, job.logits).unwrap();
        generation.complete_step().unwrap();
        passes += 1;
    }
    assert!(generation.is_finished());
    assert_eq!((passes, generation.forward_passes()), (8, 8));
    let (expected, _) = run(&p, &[1, 2, 3], 1, None).unwrap();
    assert_eq!(tokens, expected);
}

#[test]
fn infilling_keeps_the_template_and_fills_only_the_holes() {
    let p = params()
        .with_steps(4)
        .with_gen_length(8)
        .with_block_length(4);
    let mut tokens = vec![1, 2, 3, 10, MASK, 11, MASK, MASK, MASK, 12, 13];
    let template = tokens.clone();
    let mut ws = WorkspaceBuf::new(&WorkspaceSizes::for_generation(&p, 1, 3, VOCAB).unwrap());
    let mut per_step = Vec::new();
    let mut observer = |e: &StepEvent<'_>| {
        per_step.push(e.committed(0).len());
        ControlFlow::Continue(())
    };
    let stats = generate(
        &mut HashPredictor::new(VOCAB, MASK, 5),
        &p,
        Canvas::new(&mut tokens, 1, 3),
        ws.as_workspace(),
        &mut observer,
    )
    .unwrap();
    for (i, (&t, &orig)) in tokens.iter().zip(&template).enumerate() {
        if orig == MASK {
            assert_ne!(t, MASK, "hole at {i} filled");
        } else {
            assert_eq!(t, orig, "template token at {i} kept");
        }
    }
    // Block one holds 2 masks, block two 2 masks: 2 steps each, one token per step.
    assert_eq!(per_step, [1, 1, 1, 1]);
    assert_eq!(stats.forward_passes, 4);
}

#[test]
fn equal_confidences_commit_the_lower_position_first() {
    let p = GenerateParams::default()
        .with_steps(8)
        .with_gen_length(8)
        .with_block_length(8)
        .with_mask_id(3);
    let mut predictor = UniformPredictor {
        vocab: 4,
        max_len: 64,
    };
    let mut tokens = vec![0; 10];
    Canvas::fill(&mut tokens, &[1, 2], 1, 8, 3).unwrap();
    let mut ws = WorkspaceBuf::new(&WorkspaceSizes::for_generation(&p, 1, 2, 4).unwrap());
    let mut order = Vec::new();
    let mut observer = |e: &StepEvent<'_>| {
        order.extend_from_slice(e.committed(0));
        ControlFlow::Continue(())
    };
    generate(
        &mut predictor,
        &p,
        Canvas::new(&mut tokens, 1, 2),
        ws.as_workspace(),
        &mut observer,
    )
    .unwrap();
    assert_eq!(order, (2..10).collect::<Vec<u32>>());
    assert_eq!(&tokens[2..], &[0; 8], "argmax ties go to the first id");

    let no_eos = p.with_logits_eos_inf(true).with_eos_id(0);
    Canvas::fill(&mut tokens, &[1, 2], 1, 8, 3).unwrap();
    generate(
        &mut predictor,
        &no_eos,
        Canvas::new(&mut tokens, 1, 2),
        ws.as_workspace(),
        &mut (),
    )
    .unwrap();
    assert_eq!(&tokens[2..], &[1; 8], "EOS forbidden");
}

/// Proposes EOS (id 0) with high probability at even positions, id 1 elsewhere.
struct EosAtEven;

impl MaskPredictor for EosAtEven {
    type Error = core::convert::Infallible;
    fn vocab_size(&self) -> usize {
        4
    }
    fn max_sequence_length(&self) -> usize {
        64
    }
    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), Self::Error> {
        let window = request.window();
        for (k, row) in logits.chunks_exact_mut(4).enumerate() {
            let position = window.start + k % window.len();
            row.copy_from_slice(if position % 2 == 0 {
                &[9.0, 0.0, 0.0, 0.0]
            } else {
                &[0.0, 3.0, 0.0, 0.0]
            });
        }
        Ok(())
    }
}

#[test]
fn eos_and_eot_proposals_are_committed_last_with_confidence_eos_eot_inf() {
    let base = GenerateParams::default()
        .with_steps(6)
        .with_gen_length(6)
        .with_block_length(6)
        .with_mask_id(3)
        .with_eos_id(0)
        .with_eot_id(2);
    for (flag, expected) in [
        (false, vec![2u32, 4, 6, 3, 5, 7]),
        (true, vec![3, 5, 7, 2, 4, 6]),
    ] {
        let p = base.with_confidence_eos_eot_inf(flag);
        let mut tokens = vec![0; 8];
        Canvas::fill(&mut tokens, &[1, 1], 1, 6, 3).unwrap();
        let mut ws = WorkspaceBuf::new(&WorkspaceSizes::for_generation(&p, 1, 2, 4).unwrap());
        let mut order = Vec::new();
        let mut observer = |e: &StepEvent<'_>| {
            order.extend_from_slice(e.committed(0));
            ControlFlow::Continue(())
        };
        generate(
            &mut EosAtEven,
            &p,
            Canvas::new(&mut tokens, 1, 2),
            ws.as_workspace(),
            &mut observer,
        )
        .unwrap();
        assert_eq!(order, expected, "confidence_eos_eot_inf = {flag}");
        assert_eq!(tokens, [1, 1, 0, 1, 0, 1, 0, 1]);
    }
}

#[test]
fn sampling_is_reproducible_from_the_seed() {
    let p = params()
        .with_temperature(1.0)
        .with_top_k(20)
        .with_top_p(0.95);
    let (a, _) = run(&p, &[1, 2, 3], 1, None).unwrap();
    let (b, _) = run(&p, &[1, 2, 3], 1, None).unwrap();
    assert_eq!(a, b);
    let outputs: Vec<Vec<u32>> = (0..8)
        .map(|seed| run(&p.with_seed(seed), &[1, 2, 3], 1, None).unwrap().0)
        .collect();
    assert!(
        outputs.iter().any(|o| *o != outputs[0]),
        "different seeds give different samples"
    );
    for strategy in [Remasking::Random, Remasking::Margin, Remasking::Entropy] {
        let (canvas, events) = run(&p.with_remasking(strategy), &[1, 2, 3], 1, None).unwrap();
        assert!(!canvas.contains(&MASK), "{strategy} fills every position");
        assert_eq!(events.len(), 8);
    }
}

/// Sure of token `position % 5` everywhere (probability ~0.98), except at positions that are
/// multiples of 4, where two tokens tie (probability ~0.5 each).
struct MostlySure;

impl MaskPredictor for MostlySure {
    type Error = core::convert::Infallible;
    fn vocab_size(&self) -> usize {
        8
    }
    fn max_sequence_length(&self) -> usize {
        128
    }
    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), Self::Error> {
        let window = request.window();
        for (k, row) in logits.chunks_exact_mut(8).enumerate() {
            let position = window.start + k % window.len();
            row.fill(0.0);
            row[position % 5] = 8.0;
            if position % 4 == 0 {
                row[(position + 1) % 5] = 8.0;
            }
        }
        Ok(())
    }
}

fn run_mostly_sure(params: &GenerateParams) -> (Vec<u32>, Vec<usize>, usize) {
    let mut tokens = vec![0; 2 + params.gen_length];
    Canvas::fill(&mut tokens, &[5, 6], 1, params.gen_length, 7).unwrap();
    let mut ws = WorkspaceBuf::new(&WorkspaceSizes::for_generation(params, 1, 2, 8).unwrap());
    let mut per_step = Vec::new();
    let mut observer = |e: &StepEvent<'_>| {
        per_step.push(e.committed(0).len());
        ControlFlow::Continue(())
    };
    let stats = generate(
        &mut MostlySure,
        params,
        Canvas::new(&mut tokens, 1, 2),
        ws.as_workspace(),
        &mut observer,
    )
    .unwrap();
    (tokens, per_step, stats.forward_passes)
}

#[test]
fn threshold_and_factor_rules_commit_confident_tokens_in_parallel() {
    let base = GenerateParams::default()
        .with_steps(16)
        .with_gen_length(16)
        .with_block_length(8)
        .with_mask_id(7);
    let (reference, per_step, passes) = run_mostly_sure(&base);
    assert_eq!((passes, per_step.iter().max().copied()), (16, Some(1)));

    let threshold = base.with_commit(llada_core::CommitRule::Threshold(0.9));
    let (tokens, per_step, passes) = run_mostly_sure(&threshold);
    assert_eq!(tokens, reference, "same answer");
    // Per block: the six sure positions in one step, then the two ties one by one.
    assert_eq!(per_step, [6, 1, 1, 6, 1, 1]);
    assert_eq!(passes, 6);

    // The factor rule admits the n-th token while (n + 1)(1 - c) < f: the six sure positions
    // (c = 0.9977), not the ties (c = 0.4995).
    let factor = base.with_commit(llada_core::CommitRule::Factor(1.0));
    let (tokens, per_step, passes) = run_mostly_sure(&factor);
    assert_eq!(tokens, reference);
    assert_eq!((per_step, passes), (vec![6, 1, 1, 6, 1, 1], 6));

    // The entropy-bounded rule: a prefix (lowest entropy first) whose entropy minus its
    // largest stays within gamma. Sure positions have entropy 0.0211, ties 0.7022: with
    // gamma 0.5 the six sure ones and one tie (0.1265 before it), not the second (0.8287).
    let eb = base.with_commit(llada_core::CommitRule::EntropyBounded(0.5));
    let (tokens, per_step, passes) = run_mostly_sure(&eb);
    assert_eq!(tokens, reference);
    assert_eq!((per_step, passes), (vec![7, 1, 7, 1], 4));
    // Gamma 0 commits one token a pass, as the reference schedule with steps = gen_length.
    let (tokens, per_step, _) =
        run_mostly_sure(&base.with_commit(llada_core::CommitRule::EntropyBounded(0.0)));
    assert_eq!((tokens, per_step), (reference.clone(), vec![1; 16]));

    // `steps` plays no part for a rule: with 2 steps per block, a threshold no position
    // reaches still commits one token a pass, 8 passes a block...
    let strict = base
        .with_steps(4)
        .with_commit(llada_core::CommitRule::Threshold(0.999));
    let (tokens, per_step, passes) = run_mostly_sure(&strict);
    assert_eq!(
        (tokens, per_step, passes),
        (reference.clone(), vec![1; 16], 16)
    );
    // ...unless the passes are capped: the last pass commits what is left.
    let capped = strict.with_max_passes_per_block(2);
    let (_, per_step, passes) = run_mostly_sure(&capped);
    assert_eq!((per_step, passes), (vec![1, 7, 1, 7], 4));

    for bad in [
        llada_core::CommitRule::Threshold(0.0),
        llada_core::CommitRule::Threshold(1.5),
        llada_core::CommitRule::Factor(-1.0),
        llada_core::CommitRule::EntropyBounded(-0.1),
        llada_core::CommitRule::EntropyBounded(f64::NAN),
    ] {
        assert!(base.with_commit(bad).validate().is_err(), "{bad:?}");
    }
}

/// Records the cache hints it receives.
struct Recorder(Vec<Option<llada_core::CacheHint>>);

impl MaskPredictor for Recorder {
    type Error = core::convert::Infallible;
    fn vocab_size(&self) -> usize {
        8
    }
    fn max_sequence_length(&self) -> usize {
        128
    }
    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), Self::Error> {
        self.0.push(request.cache().cloned());
        MostlySure.forward(request, logits)
    }
}

#[test]
fn cache_hints_mark_the_block_and_its_first_step() {
    let params = GenerateParams::default()
        .with_steps(8)
        .with_gen_length(8)
        .with_block_length(4)
        .with_mask_id(7)
        .with_cache(llada_core::CacheMode::Dual);
    let mut tokens = vec![0; 10];
    Canvas::fill(&mut tokens, &[5, 6], 1, 8, 7).unwrap();
    let mut ws = WorkspaceBuf::new(&WorkspaceSizes::for_generation(&params, 1, 2, 8).unwrap());
    let mut recorder = Recorder(Vec::new());
    generate(
        &mut recorder,
        &params,
        Canvas::new(&mut tokens, 1, 2),
        ws.as_workspace(),
        &mut (),
    )
    .unwrap();
    let hints: Vec<_> = recorder.0.into_iter().map(Option::unwrap).collect();
    assert_eq!(hints.len(), 8);
    for (i, hint) in hints.iter().enumerate() {
        assert_eq!(hint.mode, llada_core::CacheMode::Dual);
        assert_eq!(hint.span, if i < 4 { 2..6 } else { 6..10 });
        assert_eq!(hint.refresh, i % 4 == 0, "step {i}");
    }
    // Without a cache mode, no hint.
    let mut recorder = Recorder(Vec::new());
    Canvas::fill(&mut tokens, &[5, 6], 1, 8, 7).unwrap();
    let plain = params.with_cache(llada_core::CacheMode::None);
    generate(
        &mut recorder,
        &plain,
        Canvas::new(&mut tokens, 1, 2),
        ws.as_workspace(),
        &mut (),
    )
    .unwrap();
    assert!(recorder.0.iter().all(Option::is_none));
}

#[test]
fn canvas_constructors_check_the_prompts_and_pad_on_the_left() {
    let mut tokens = vec![0; 2 * (3 + 4)];
    assert_eq!(
        Canvas::from_prompts(&mut tokens, &[1, 2, 3, 4, MASK, 6], 2, 4, MASK).unwrap_err(),
        Error::MaskInPrompt {
            row: 1,
            position: 1
        }
    );
    assert!(matches!(
        Canvas::from_prompts(&mut tokens, &[1, 2, 3, 4, 5], 2, 4, MASK),
        Err(Error::Shape(_))
    ));

    // Left padding: the mask hides it, and a batch of equal lengths carries no mask at all.
    let prompts: [&[u32]; 3] = [&[1, 2, 3], &[4], &[5, 6]];
    let (mut tokens, mut attention) = (vec![0; 3 * 5], vec![9; 3 * 5]);
    let canvas = Canvas::left_padded(&mut tokens, &mut attention, &prompts, 2, MASK, 0).unwrap();
    assert_eq!((canvas.batch(), canvas.prompt_len()), (3, 3));
    assert_eq!(
        tokens,
        [
            1, 2, 3, MASK, MASK, 0, 0, 4, MASK, MASK, 0, 5, 6, MASK, MASK
        ]
    );
    assert_eq!(attention, [1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1]);
    let short = [MASK, 2];
    let bad: [&[u32]; 2] = [&[1, 2, 3], &short];
    assert_eq!(
        Canvas::left_padded(&mut tokens, &mut attention, &bad, 2, MASK, 0).unwrap_err(),
        Error::MaskInPrompt {
            row: 1,
            position: 0
        }
    );
    assert!(matches!(
        Canvas::left_padded(&mut tokens[..14], &mut attention, &prompts, 2, MASK, 0),
        Err(Error::Shape(_))
    ));
    let none: [&[u32]; 0] = [];
    assert_eq!(
        Canvas::left_padded(&mut tokens, &mut attention, &none, 2, MASK, 0).unwrap_err(),
        Error::Zero { name: "batch" }
    );

    // The padded canvas generates like the rows alone (the hash predictor sees the padding,
    // so compare with the same padded rows run through `fill`).
    let params = params()
        .with_gen_length(2)
        .with_block_length(2)
        .with_steps(2);
    let sizes = WorkspaceSizes::for_generation(&params, 3, 3, VOCAB).unwrap();
    let mut workspace = WorkspaceBuf::new(&sizes);
    let canvas = Canvas::left_padded(&mut tokens, &mut attention, &prompts, 2, MASK, 0).unwrap();
    generate(
        &mut HashPredictor::new(VOCAB, MASK, 5),
        &params,
        canvas,
        workspace.as_workspace(),
        &mut (),
    )
    .unwrap();
    assert!(tokens.iter().all(|&t| t != MASK));
    assert_eq!(&tokens[5..8], &[0, 0, 4]);
}

/// Certain of `position % 5` until the end of text, then of EOS (id 5): the end comes at
/// canvas position 4 × (the row's first prompt id) + 3, so the row's first id picks the block
/// that first holds EOS.
struct EndsEarly;

impl MaskPredictor for EndsEarly {
    type Error = core::convert::Infallible;
    fn vocab_size(&self) -> usize {
        8
    }
    fn max_sequence_length(&self) -> usize {
        128
    }
    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), Self::Error> {
        let window = request.window();
        let per_row = window.len() * 8;
        for (r, rows) in logits.chunks_exact_mut(per_row).enumerate() {
            let end = 4 * request.row(r)[0] as usize + 3;
            for (position, row) in window.clone().zip(rows.chunks_exact_mut(8)) {
                row.fill(0.0);
                row[if position >= end { 5 } else { position % 5 }] = 9.0;
            }
        }
        Ok(())
    }
}

#[test]
fn stop_at_eos_fills_the_rest_and_skips_its_blocks_row_by_row() {
    // Two rows, prompt length 2, blocks of 4 at canvas positions 2..6, 6..10, 10..14, 14..18.
    // Row 0 ends at position 7 (block 1), row 1 at position 11 (block 2).
    let params = GenerateParams::default()
        .with_steps(16)
        .with_gen_length(16)
        .with_block_length(4)
        .with_mask_id(7)
        .with_eos_id(5)
        .with_eot_id(6);
    let run = |params: &GenerateParams| {
        let mut tokens = vec![0; 2 * 18];
        let canvas = Canvas::from_prompts(&mut tokens, &[1, 0, 2, 0], 2, 16, 7).unwrap();
        let sizes = WorkspaceSizes::for_generation(params, 2, 2, 8).unwrap();
        let mut ws = WorkspaceBuf::new(&sizes);
        let stats = generate(&mut EndsEarly, params, canvas, ws.as_workspace(), &mut ()).unwrap();
        (tokens, stats.forward_passes)
    };
    let (full, full_passes) = run(&params);
    let (stopped, passes) = run(&params.with_stop_at_eos(true));
    assert_eq!(full_passes, 16);
    // Blocks 0-2 run (row 1 needs block 2), block 3 does not: 12 passes.
    assert_eq!(passes, 12);
    // This predictor writes EOS after its end anyway, so the canvases agree.
    assert_eq!(stopped, full);
    assert!(stopped[7..18].iter().all(|&t| t == 5));

    // An adaptive rule stops the same way, and EOT counts as end of text too.
    let threshold = params
        .with_commit(llada_core::CommitRule::Threshold(0.9))
        .with_stop_at_eos(true);
    let (tokens, passes) = run(&threshold);
    assert_eq!((tokens, passes), (full.clone(), 3));
    let eot = params.with_eos_id(1).with_eot_id(5).with_stop_at_eos(true);
    let (tokens, _) = run(&eot);
    // Filled with the EOS id (1 here) after the block that held EOT.
    assert!(tokens[10..18].iter().all(|&t| t == 1), "{tokens:?}");
}

/// Proposes the mask id itself at every position (a broken or hostile model).
struct ProposesTheMask;

impl MaskPredictor for ProposesTheMask {
    type Error = core::convert::Infallible;
    fn vocab_size(&self) -> usize {
        4
    }
    fn max_sequence_length(&self) -> usize {
        64
    }
    fn forward(
        &mut self,
        _request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), Self::Error> {
        for row in logits.chunks_exact_mut(4) {
            row.copy_from_slice(&[0.0, 0.0, 0.0, 9.0]);
        }
        Ok(())
    }
}

#[test]
fn a_predictor_proposing_the_mask_id_cannot_make_a_rule_loop_forever() {
    // A committed mask id leaves its position masked; an adaptive rule would propose it
    // again forever. A block ends after as many passes as it has positions, as it does when
    // every pass commits (found by the sampler fuzz target).
    for rule in [
        llada_core::CommitRule::Threshold(0.9),
        llada_core::CommitRule::Factor(1.0),
        llada_core::CommitRule::EntropyBounded(1e-300),
    ] {
        let params = GenerateParams::default()
            .with_gen_length(8)
            .with_block_length(4)
            .with_steps(8)
            .with_mask_id(3)
            .with_commit(rule);
        let mut tokens = vec![0u32; 2 + 8];
        Canvas::fill(&mut tokens, &[1, 2], 1, 8, 3).unwrap();
        let mut ws = WorkspaceBuf::new(&WorkspaceSizes::for_generation(&params, 1, 2, 4).unwrap());
        let stats = generate(
            &mut ProposesTheMask,
            &params,
            Canvas::new(&mut tokens, 1, 2),
            ws.as_workspace(),
            &mut |_: &StepEvent<'_>| ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(stats.forward_passes, 8, "{rule:?}");
        assert_eq!(tokens, [1, 2, 3, 3, 3, 3, 3, 3, 3, 3]);
    }
}
