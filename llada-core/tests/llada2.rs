//! LLaDA2.x's decoding on scripted predictors: the absolute block grid and the block-causal
//! requests, LLaDA2's threshold rule and its fallback share, LLaDA2.1's editing and its
//! edit-only passes. (Token-for-token agreement with the reference transcriptions is checked
//! on a real model in `llada-ndarray/tests/llada2.rs`.)

use core::ops::ControlFlow;

use llada_core::{
    BlockGrid, Canvas, CommitRule, Editing, Error, ForwardRequest, GenerateError, GenerateParams,
    MaskPredictor, StepEvent, WorkspaceBuf, WorkspaceSizes, generate,
};

const VOCAB: usize = 8;
const MASK: u32 = 7;

/// Proposes `token(call, position)` at every position with probability
/// `e^gap / (e^gap + 7)`, `gap = gap(call, position)`; records every request.
struct Scripted<T, G> {
    token: T,
    gap: G,
    calls: usize,
    block_causal: bool,
    /// (window, block of block-causal attention, attended end) of each call.
    requests: Vec<(core::ops::Range<usize>, Option<usize>, usize)>,
}

impl<T, G> Scripted<T, G>
where
    T: FnMut(usize, usize) -> u32,
    G: FnMut(usize, usize) -> f32,
{
    fn new(token: T, gap: G) -> Self {
        Self {
            token,
            gap,
            calls: 0,
            block_causal: true,
            requests: Vec::new(),
        }
    }
}

impl<T, G> MaskPredictor for Scripted<T, G>
where
    T: FnMut(usize, usize) -> u32,
    G: FnMut(usize, usize) -> f32,
{
    type Error = core::convert::Infallible;

    fn vocab_size(&self) -> usize {
        VOCAB
    }

    fn max_sequence_length(&self) -> usize {
        256
    }

    fn block_causal(&self) -> bool {
        self.block_causal
    }

    fn forward(&mut self, req: &ForwardRequest<'_>, logits: &mut [f32]) -> Result<(), Self::Error> {
        let window = req.window();
        self.requests
            .push((window.clone(), req.block_causal(), req.attended_end()));
        for (k, row) in logits.chunks_exact_mut(VOCAB).enumerate() {
            let position = window.start + k % window.len();
            row.fill(0.0);
            row[(self.token)(self.calls, position) as usize] = (self.gap)(self.calls, position);
        }
        self.calls += 1;
        Ok(())
    }
}

fn llada2(gen_length: usize, block: usize, steps: usize) -> GenerateParams {
    GenerateParams::llada2()
        .with_gen_length(gen_length)
        .with_block_length(block)
        .with_steps(steps)
        .with_mask_id(MASK)
        .with_eos_id(6)
        .with_eot_id(6)
        .with_stop_at_eos(false)
}

/// Per pass: (block, committed positions, edited positions).
type Pass = (usize, Vec<u32>, Vec<u32>);

fn run<P: MaskPredictor<Error = core::convert::Infallible>>(
    predictor: &mut P,
    params: &GenerateParams,
    prompt: &[u32],
) -> Result<(Vec<u32>, Vec<Pass>), GenerateError<core::convert::Infallible>> {
    let len = params.canvas_len(prompt.len());
    let mut tokens = vec![0; len];
    let canvas = Canvas::from_prompts(&mut tokens, prompt, 1, len - prompt.len(), params.mask_id)?;
    let mut ws = WorkspaceBuf::new(&WorkspaceSizes::for_generation(
        params,
        1,
        prompt.len(),
        VOCAB,
    )?);
    let mut passes = Vec::new();
    let mut observer = |e: &StepEvent<'_>| {
        let mut committed = e.committed(0).to_vec();
        committed.sort_unstable();
        passes.push((e.block(), committed, e.edited(0).to_vec()));
        ControlFlow::Continue(())
    };
    generate(predictor, params, canvas, ws.as_workspace(), &mut observer)?;
    Ok((tokens, passes))
}

#[test]
fn blocks_lie_on_the_absolute_grid_and_each_pass_asks_for_block_causal_attention() {
    // Prompt of 5, blocks of 4: the prompt's tail (position 4) shares the first block; 5 + 6
    // = 11 positions round up to 12, so position 11 is decoded with the last block.
    let params = llada2(6, 4, 4);
    assert_eq!((params.canvas_len(5), params.blocks_for(5)), (12, 2));
    let mut p = Scripted::new(|_, position| (position % 6) as u32, |_, _| 10.0);
    let (tokens, passes) = run(&mut p, &params, &[1, 2, 3, 4, 5]).unwrap();
    assert_eq!(tokens, [1, 2, 3, 4, 5, 5, 0, 1, 2, 3, 4, 5]);
    // Every mask of a block is above 0.95 at once: one pass per block.
    assert_eq!(
        passes,
        [(0, vec![5, 6, 7], vec![]), (1, vec![8, 9, 10, 11], vec![])]
    );
    assert_eq!(
        p.requests,
        [(4..8, Some(4), 8), (8..12, Some(4), 12)],
        "the window is the block; nothing after it is attended to"
    );
}

#[test]
fn below_the_threshold_a_pass_takes_its_share_most_confident_first() {
    // Blocks of 4 in 2 steps: shares of 2. Probabilities below 0.95, rising with the
    // position, except at position 2 in the first pass (above): one is not enough.
    let params = llada2(4, 4, 2);
    let gap = |call: usize, position: usize| {
        if call == 0 && position == 2 {
            10.0
        } else {
            position as f32 * 0.1
        }
    };
    let mut p = Scripted::new(|_, _| 3, gap);
    let (tokens, passes) = run(&mut p, &params, &[1, 2]).unwrap();
    assert_eq!(tokens, [1, 2, 3, 3, 3, 3, 3, 3]);
    assert_eq!(
        passes,
        [
            (0, vec![2, 3], vec![]),
            (1, vec![6, 7], vec![]),
            (1, vec![4, 5], vec![]),
        ],
        "one above the threshold is fewer than the share of 2: the two most confident"
    );

    // Three above the threshold, share 2: all three in one pass.
    let params = llada2(8, 8, 4);
    let mut p = Scripted::new(
        |_, _| 3,
        |_, position| if position % 3 == 0 { 10.0 } else { 0.0 },
    );
    let (_, passes) = run(&mut p, &params, &[1]).unwrap();
    assert_eq!(passes[0].1, [3, 6]);
}

#[test]
fn editing_rewrites_generated_tokens_and_stops_after_max_post_steps() {
    // A predictor that changes its mind at every call, always surely: each pass after the
    // first rewrites every generated token, and the block stops after 3 edit-only passes.
    let params = llada2(4, 4, 4).with_editing(Some(Editing {
        threshold: 0.9,
        max_post_steps: 3,
        num_to_transfer: 1,
    }));
    let mut p = Scripted::new(|call, _| (call % 5) as u32, |_, _| 10.0);
    let (tokens, passes) = run(&mut p, &params, &[6, 6, 6, 6]).unwrap();
    assert_eq!(
        passes,
        [
            (0, vec![4, 5, 6, 7], vec![]),
            (0, vec![], vec![4, 5, 6, 7]),
            (0, vec![], vec![4, 5, 6, 7]),
            (0, vec![], vec![4, 5, 6, 7]),
        ]
    );
    assert_eq!(&tokens[4..], [3, 3, 3, 3], "the last edit stays");
    assert_eq!(&tokens[..4], [6, 6, 6, 6], "the prompt is never edited");

    // A predictor that keeps its answer: one edit-only pass finds nothing and ends the block.
    let mut p = Scripted::new(|_, _| 2, |_, _| 10.0);
    let (_, passes) = run(&mut p, &params, &[6, 6, 6, 6]).unwrap();
    assert_eq!(passes, [(0, vec![4, 5, 6, 7], vec![]), (0, vec![], vec![])]);

    // Editing below its threshold changes nothing.
    let strict = params.with_editing(Some(Editing {
        threshold: 0.99999,
        max_post_steps: 3,
        num_to_transfer: 1,
    }));
    let mut p = Scripted::new(|call, _| (call % 5) as u32, |_, _| 10.0);
    let (_, passes) = run(&mut p, &strict, &[6, 6, 6, 6]).unwrap();
    assert_eq!(passes.len(), 2);
}

#[test]
fn end_of_text_in_a_finished_block_stops_the_generation() {
    // The prompt's EOS (6, position 0) shares the first block and does not count; the one
    // written at position 5, in the second block, ends the generation: the third never runs.
    let params = llada2(8, 4, 4).with_stop_at_eos(true);
    let mut p = Scripted::new(|_, position| if position == 5 { 6 } else { 1 }, |_, _| 10.0);
    let (tokens, passes) = run(&mut p, &params, &[6, 2, 3]).unwrap();
    assert_eq!(passes.len(), 2);
    assert_eq!(tokens, [6, 2, 3, 1, 1, 6, 1, 1, 6, 6, 6, 6]);
}

#[test]
fn a_block_causal_model_needs_the_absolute_grid() {
    let mut p = Scripted::new(|_, _| 1, |_, _| 10.0);
    let params = GenerateParams::default()
        .with_gen_length(4)
        .with_block_length(4)
        .with_steps(4)
        .with_mask_id(MASK);
    let err = run(&mut p, &params, &[1, 2]).unwrap_err();
    assert!(
        matches!(err, GenerateError::Invalid(Error::Combination { .. })),
        "{err:?}"
    );
    // Editing needs LLaDA2's rule.
    let editing = params
        .with_grid(BlockGrid::Absolute)
        .with_commit(CommitRule::Threshold(0.9))
        .with_editing(Some(Editing::LLADA21));
    assert!(matches!(editing.validate(), Err(Error::Combination { .. })));
}

#[test]
fn both_thresholds_are_strict() {
    // Probability exactly 1 (a gap of 100) is not above a threshold of 1: the pass takes its
    // share (2 of 4), and a changed token at probability 1 is not above an editing threshold
    // of 1.
    let params = llada2(4, 4, 2).with_commit(CommitRule::Llada2(1.0));
    let mut p = Scripted::new(|_, _| 3, |_, _| 100.0);
    let (_, passes) = run(&mut p, &params, &[1, 2, 3, 4]).unwrap();
    assert_eq!(passes.iter().map(|p| p.1.len()).collect::<Vec<_>>(), [2, 2]);
    let editing = params.with_editing(Some(Editing {
        threshold: 1.0,
        max_post_steps: 3,
        num_to_transfer: 2,
    }));
    let mut p = Scripted::new(|call, _| (call % 5) as u32, |_, _| 100.0);
    let (_, passes) = run(&mut p, &editing, &[1, 2, 3, 4]).unwrap();
    assert!(passes.iter().all(|p| p.2.is_empty()), "{passes:?}");
    // num_to_transfer 2: two masks per pass, then one edit-only pass that changes nothing.
    assert_eq!(
        passes.iter().map(|p| p.1.len()).collect::<Vec<_>>(),
        [2, 2, 0]
    );
}
