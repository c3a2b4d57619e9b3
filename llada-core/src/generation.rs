//! The reverse process as a sans-IO state machine ([`Generation`]) and as a function
//! ([`generate`]).

use core::ops::{ControlFlow, Range};

use rand_core::SeedableRng;

use crate::error::{Error, GenerateError, ShapeError};
use crate::params::{BlockGrid, CacheMode, CommitRule, GenerateParams, Remasking, check_id};
use crate::predictor::{CacheHint, ForwardRequest, LogitRows, MaskPredictor, TokenId};
use crate::rng::{SamplerRng, open01, unit};
use crate::sampler::propose;
use crate::schedule::{BlockSchedule, timesteps_to_commit, tokens_to_commit, transfer_fraction};
use crate::workspace::{Workspace, WorkspaceSizes, take};

/// What a predictor can take: the width of its logits rows and its longest sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Logits per position (the model's `embedding_size`).
    pub vocab_size: usize,
    /// Longest sequence accepted.
    pub max_sequence_length: usize,
    /// Whether position `i`'s prediction is output row `i − 1`
    /// ([`MaskPredictor::shifted_logits`]).
    pub shifted_logits: bool,
    /// Whether the model attends block-causally ([`MaskPredictor::block_causal`]).
    pub block_causal: bool,
}

impl Limits {
    /// The limits a predictor reports.
    pub fn of<P: MaskPredictor + ?Sized>(predictor: &P) -> Self {
        Self {
            vocab_size: predictor.vocab_size(),
            max_sequence_length: predictor.max_sequence_length(),
            shifted_logits: predictor.shifted_logits(),
            block_causal: predictor.block_causal(),
        }
    }
}

/// The sequences being denoised: `batch` rows of `prompt_len` prompt tokens followed by
/// `gen_length` positions that hold the mask id (or, for infilling, fixed tokens of a template
/// with masked holes), row-major `[batch, prompt_len + gen_length]`.
///
/// Every position that is not the mask id when generation starts counts as prompt: it is never
/// changed and classifier-free guidance masks it in the unconditional input. Left padding is
/// part of the prompt; pass an attention mask (non-zero = real token) to hide it from the model.
#[derive(Debug)]
pub struct Canvas<'a> {
    tokens: &'a mut [TokenId],
    batch: usize,
    prompt_len: usize,
    attention_mask: Option<&'a [u8]>,
}

impl<'a> Canvas<'a> {
    /// A canvas over `tokens` (`[batch, prompt_len + gen_length]`); shapes are checked when a
    /// [`Generation`] starts.
    pub fn new(tokens: &'a mut [TokenId], batch: usize, prompt_len: usize) -> Self {
        Self {
            tokens,
            batch,
            prompt_len,
            attention_mask: None,
        }
    }

    /// Adds an attention mask over the whole canvas, `[batch, prompt_len + gen_length]`,
    /// non-zero for real tokens (the generated positions included) and 0 for left padding.
    pub fn with_attention_mask(mut self, mask: &'a [u8]) -> Self {
        self.attention_mask = Some(mask);
        self
    }

    /// Writes `prompts` (`[batch, prompt_len]`) followed by `gen_length` mask ids per row into
    /// `tokens`, which must hold exactly `batch * (prompt_len + gen_length)` ids.
    pub fn fill(
        tokens: &mut [TokenId],
        prompts: &[TokenId],
        batch: usize,
        gen_length: usize,
        mask_id: TokenId,
    ) -> Result<(), Error> {
        if batch == 0 {
            return Err(Error::Zero { name: "batch" });
        }
        if !prompts.len().is_multiple_of(batch) {
            return Err(ShapeError::Length {
                what: "prompts",
                expected: (prompts.len() / batch + 1) * batch,
                found: prompts.len(),
            }
            .into());
        }
        let prompt_len = prompts.len() / batch;
        let seq = prompt_len + gen_length;
        if tokens.len() != batch * seq {
            return Err(ShapeError::Length {
                what: "canvas",
                expected: batch * seq,
                found: tokens.len(),
            }
            .into());
        }
        for (r, row) in tokens.chunks_exact_mut(seq).enumerate() {
            row[..prompt_len].copy_from_slice(&prompts[r * prompt_len..(r + 1) * prompt_len]);
            row[prompt_len..].fill(mask_id);
        }
        Ok(())
    }

    /// A canvas of `batch` prompts of one length (`prompts`, `[batch, prompt_len]` row-major),
    /// each followed by `gen_length` mask ids, written into `tokens` (exactly `batch ×
    /// (prompt_len + gen_length)` ids). Checks the shapes and that no prompt holds the mask
    /// id.
    ///
    /// ```
    /// use llada_core::Canvas;
    ///
    /// let mut tokens = [0u32; 2 * (3 + 4)];
    /// let canvas = Canvas::from_prompts(&mut tokens, &[1, 2, 3, 4, 5, 6], 2, 4, 9)?;
    /// assert_eq!(canvas.prompt_len(), 3);
    /// assert_eq!(tokens[..7], [1, 2, 3, 9, 9, 9, 9]);
    /// # Ok::<(), llada_core::Error>(())
    /// ```
    pub fn from_prompts(
        tokens: &'a mut [TokenId],
        prompts: &[TokenId],
        batch: usize,
        gen_length: usize,
        mask_id: TokenId,
    ) -> Result<Self, Error> {
        Self::fill(tokens, prompts, batch, gen_length, mask_id)?;
        let prompt_len = prompts.len() / batch;
        check_prompts(prompts.chunks_exact(prompt_len.max(1)), mask_id)?;
        Ok(Self::new(tokens, batch, prompt_len))
    }

    /// A canvas of prompts of any lengths: shorter ones are left-padded with `pad_id` to the
    /// longest, and `attention` (as long as `tokens`) becomes the mask that hides the
    /// padding (attached only when some prompt is padded). `tokens` must hold exactly
    /// `prompts.len() × (longest + gen_length)` ids. Checks the shapes and that no prompt
    /// holds the mask id.
    ///
    /// ```
    /// use llada_core::Canvas;
    ///
    /// let (mut tokens, mut attention) = ([0u32; 2 * (3 + 2)], [0u8; 2 * (3 + 2)]);
    /// let prompts: [&[u32]; 2] = [&[1, 2, 3], &[4]];
    /// let canvas = Canvas::left_padded(&mut tokens, &mut attention, &prompts, 2, 9, 0)?;
    /// assert_eq!(canvas.prompt_len(), 3);
    /// assert_eq!(tokens[5..], [0, 0, 4, 9, 9]);
    /// assert_eq!(attention[5..], [0, 0, 1, 1, 1]);
    /// # Ok::<(), llada_core::Error>(())
    /// ```
    pub fn left_padded<P: AsRef<[TokenId]>>(
        tokens: &'a mut [TokenId],
        attention: &'a mut [u8],
        prompts: &[P],
        gen_length: usize,
        mask_id: TokenId,
        pad_id: TokenId,
    ) -> Result<Self, Error> {
        let batch = prompts.len();
        if batch == 0 {
            return Err(Error::Zero { name: "batch" });
        }
        check_prompts(prompts.iter().map(AsRef::as_ref), mask_id)?;
        let prompt_len = prompts.iter().map(|p| p.as_ref().len()).max().unwrap_or(0);
        let seq = prompt_len
            .checked_add(gen_length)
            .and_then(|s| s.checked_mul(batch))
            .ok_or(ShapeError::Overflow)?;
        for (what, found) in [
            ("canvas", tokens.len()),
            ("attention mask", attention.len()),
        ] {
            if found != seq {
                return Err(ShapeError::Length {
                    what,
                    expected: seq,
                    found,
                }
                .into());
            }
        }
        let seq = prompt_len + gen_length;
        let mut padded = false;
        for ((prompt, row), mask) in prompts
            .iter()
            .zip(tokens.chunks_exact_mut(seq))
            .zip(attention.chunks_exact_mut(seq))
        {
            let prompt = prompt.as_ref();
            let pad = prompt_len - prompt.len();
            padded |= pad > 0;
            row[..pad].fill(pad_id);
            row[pad..prompt_len].copy_from_slice(prompt);
            row[prompt_len..].fill(mask_id);
            mask[..pad].fill(0);
            mask[pad..].fill(1);
        }
        let canvas = Self::new(tokens, batch, prompt_len);
        Ok(if padded {
            canvas.with_attention_mask(attention)
        } else {
            canvas
        })
    }

    /// Rows of the canvas.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Prompt tokens per row (left padding included).
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }
}

/// A row of a block that LLaDA2.1's editing has finished (a pass without masks changed
/// nothing).
const ROW_DONE: u32 = u32::MAX;

/// Mask ids in `ids`.
fn masks_in(ids: &[TokenId], mask_id: TokenId) -> usize {
    ids.iter().filter(|&&id| id == mask_id).count()
}

/// The first prompt position holding the mask id is an error.
fn check_prompts<'p>(
    prompts: impl Iterator<Item = &'p [TokenId]>,
    mask_id: TokenId,
) -> Result<(), Error> {
    for (row, prompt) in prompts.enumerate() {
        if let Some(position) = prompt.iter().position(|&id| id == mask_id) {
            return Err(Error::MaskInPrompt { row, position });
        }
    }
    Ok(())
}

/// A forward pass the state machine asks for: run the predictor on `request` and write the
/// logits into `logits`, then call [`Generation::complete_step`].
#[derive(Debug)]
pub struct ForwardJob<'g> {
    /// Inputs, attention mask and logits window.
    pub request: ForwardRequest<'g>,
    /// Where the logits go: `request.logits_len(vocab)` values.
    pub logits: &'g mut [f32],
}

/// What happened in one denoising step, shown to a [`StepObserver`].
#[derive(Debug)]
pub struct StepEvent<'a> {
    block: usize,
    num_blocks: usize,
    step: usize,
    steps_per_block: usize,
    forward_passes: usize,
    block_span: Range<usize>,
    batch: usize,
    seq_len: usize,
    canvas: &'a [TokenId],
    committed: &'a [u32],
    committed_len: &'a [u32],
    edited: &'a [u32],
    edited_len: &'a [u32],
    block_length: usize,
}

impl<'a> StepEvent<'a> {
    /// Index of the block being denoised.
    pub fn block(&self) -> usize {
        self.block
    }

    /// Number of blocks.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Index of this step within its block.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Steps per block: the schedule's, or with an adaptive [`CommitRule`] the most a block
    /// may take (`max_passes_per_block`, else the block length; most blocks take fewer).
    pub fn steps_per_block(&self) -> usize {
        self.steps_per_block
    }

    /// Forward passes (predictor calls) so far, this one included.
    pub fn forward_passes(&self) -> usize {
        self.forward_passes
    }

    /// Canvas positions of the current block.
    pub fn block_span(&self) -> Range<usize> {
        self.block_span.clone()
    }

    /// Number of rows.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The whole canvas after this step, `[batch, seq_len]`.
    pub fn canvas(&self) -> &'a [TokenId] {
        self.canvas
    }

    /// One row of the canvas after this step.
    ///
    /// # Panics
    /// If `row >= batch`.
    pub fn row(&self, row: usize) -> &'a [TokenId] {
        &self.canvas[row * self.seq_len..(row + 1) * self.seq_len]
    }

    /// Canvas positions of `row` committed in this step, most confident first.
    ///
    /// # Panics
    /// If `row >= batch`.
    pub fn committed(&self, row: usize) -> &'a [u32] {
        let start = row * self.block_length;
        &self.committed[start..start + self.committed_len[row] as usize]
    }

    /// Canvas positions of `row` whose token this step rewrote (LLaDA2.1's
    /// [editing](crate::Editing)), in position order; empty without editing.
    ///
    /// # Panics
    /// If `row >= batch`.
    pub fn edited(&self, row: usize) -> &'a [u32] {
        if self.edited_len.is_empty() {
            return &[];
        }
        let start = row * self.block_length;
        &self.edited[start..start + self.edited_len[row] as usize]
    }
}

/// Sees every step of a generation and may stop it.
pub trait StepObserver {
    /// Called after each step; return [`ControlFlow::Break`] to cancel.
    fn on_step(&mut self, event: &StepEvent<'_>) -> ControlFlow<()>;
}

impl<F: FnMut(&StepEvent<'_>) -> ControlFlow<()>> StepObserver for F {
    fn on_step(&mut self, event: &StepEvent<'_>) -> ControlFlow<()> {
        self(event)
    }
}

/// The observer that watches nothing.
impl StepObserver for () {
    fn on_step(&mut self, _: &StepEvent<'_>) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

/// Totals of a finished generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenerationStats {
    /// Predictor calls made (steps with nothing to commit in any row are skipped).
    pub forward_passes: usize,
}

/// The reverse process as a sans-IO state machine. It owns no memory: the canvas and the
/// scratch buffers are borrowed from the caller.
///
/// ```text
/// while let Some(job) = generation.next_forward() {
///     predictor.forward(&job.request, job.logits)?;   // or on a GPU, another thread, ...
///     let event = generation.complete_step()?;        // commits this step's tokens
/// }
/// ```
///
/// The schedule is the reference one: blocks left to right, `steps / num_blocks` steps per
/// block, each step committing the most confident masked positions of the block, as many as
/// `n / s` (plus one in the first `n % s` steps) for `n` masks in the block at its start. Ties
/// between equal confidences go to the lower position. Steps in which no row has anything to
/// commit are skipped without a forward pass; they cannot change the result. With an adaptive
/// [`CommitRule`] a block instead takes passes until no row has a mask left in it, each
/// committing the top-1 of every row and what the rule admits. With Dream's
/// [`CommitRule::Timesteps`] each step commits its share of the masks left (see there). With a
/// predictor whose logits are [shifted](MaskPredictor::shifted_logits), each pass asks for the
/// rows one position before the block.
#[derive(Debug)]
pub struct Generation<'a> {
    params: GenerateParams,
    batch: usize,
    prompt_len: usize,
    seq_len: usize,
    vocab: usize,
    canvas: &'a mut [TokenId],
    attention: Option<&'a [u8]>,
    /// `[rows, block_length, vocab]`; rows `batch..2*batch` are the unconditional half.
    logits: &'a mut [f32],
    /// One vocabulary row for top-k/top-p, or empty.
    sample_scratch: &'a mut [f32],
    /// With guidance: the doubled input, `[2 * batch, seq_len]`.
    model_input: &'a mut [TokenId],
    /// With guidance and an attention mask: the doubled mask.
    model_attention: &'a mut [u8],
    /// 1 where the canvas held a non-mask token at the start.
    is_prompt: &'a mut [u8],
    proposals: &'a mut [TokenId],
    confidence: &'a mut [f64],
    committed: &'a mut [u32],
    committed_len: &'a mut [u32],
    block_masks: &'a mut [u32],
    /// With editing: positions rewritten in the last step, `[batch, block_length]`.
    edited: &'a mut [u32],
    edited_len: &'a mut [u32],
    /// With editing: per row, the edit-only passes run in the current block, or
    /// [`ROW_DONE`] once a pass changed nothing.
    post_steps: &'a mut [u32],
    rng: SamplerRng,
    schedule: BlockSchedule,
    block: usize,
    step: usize,
    /// Forward passes run in the current block (0 until its first step completes).
    block_forwards: usize,
    pending: bool,
    finished: bool,
    forward_passes: usize,
    /// Whether position `i`'s prediction is output row `i − 1`.
    shifted: bool,
}

impl<'a> Generation<'a> {
    /// Checks everything (parameters, shapes, token ids, buffer sizes) and prepares the first
    /// step. Nothing is written to the canvas.
    pub fn new(
        params: &GenerateParams,
        canvas: Canvas<'a>,
        workspace: Workspace<'a>,
        limits: Limits,
    ) -> Result<Self, Error> {
        let Canvas {
            tokens,
            batch,
            prompt_len,
            attention_mask,
        } = canvas;
        let vocab = limits.vocab_size;
        params.validate_for(vocab, limits.max_sequence_length, prompt_len)?;
        if limits.block_causal && params.grid != BlockGrid::Absolute {
            return Err(Error::Combination {
                what: "a block-causal model (LLaDA2.x)",
                needs: "the absolute block grid (GenerateParams::grid = BlockGrid::Absolute)",
            });
        }
        if limits.shifted_logits && params.grid == BlockGrid::Absolute {
            return Err(Error::Combination {
                what: "the absolute block grid",
                needs: "a model with unshifted logits",
            });
        }
        if limits.shifted_logits && prompt_len == 0 {
            // Position 0 would read row 0 along with position 1.
            return Err(Error::Zero {
                name: "prompt length (a model with shifted logits reads position i from row i - 1)",
            });
        }
        let sizes = WorkspaceSizes::for_generation(params, batch, prompt_len, vocab)?;
        workspace.check(&sizes)?;
        let seq_len = params.canvas_len(prompt_len);
        if tokens.len() != batch * seq_len {
            return Err(ShapeError::Length {
                what: "canvas",
                expected: batch * seq_len,
                found: tokens.len(),
            }
            .into());
        }
        if let Some(mask) = attention_mask
            && mask.len() != tokens.len()
        {
            return Err(ShapeError::Length {
                what: "attention mask",
                expected: tokens.len(),
                found: mask.len(),
            }
            .into());
        }
        for (i, &id) in tokens.iter().enumerate() {
            check_id("canvas token", id, vocab)?;
            let (row, position) = (i / seq_len, i % seq_len);
            if position < prompt_len && id == params.mask_id {
                return Err(Error::MaskInPrompt { row, position });
            }
        }

        let rows = if params.uses_cfg() { 2 * batch } else { batch };
        let block = params.block_length;
        let Workspace {
            mut logits,
            tokens: mut ints,
            mut flags,
            mut scores,
        } = workspace;
        let cfg_inputs = if params.uses_cfg() { rows * seq_len } else { 0 };
        let logits_all = take(&mut logits, rows * block * vocab);
        let sample_scratch = take(
            &mut logits,
            if params.filters_vocabulary() {
                vocab
            } else {
                0
            },
        );
        let model_input = take(&mut ints, cfg_inputs);
        let proposals = take(&mut ints, batch * block);
        let committed = take(&mut ints, batch * block);
        let committed_len = take(&mut ints, batch);
        let block_masks = take(&mut ints, batch);
        let editing = params.editing.is_some();
        let edited = take(&mut ints, if editing { batch * block } else { 0 });
        let edited_len = take(&mut ints, if editing { batch } else { 0 });
        let post_steps = take(&mut ints, if editing { batch } else { 0 });
        let is_prompt = take(&mut flags, batch * seq_len);
        let model_attention = take(&mut flags, cfg_inputs);
        let confidence = take(&mut scores, batch * block);

        for (flag, &id) in is_prompt.iter_mut().zip(tokens.iter()) {
            *flag = u8::from(id != params.mask_id);
        }
        if let (true, Some(mask)) = (params.uses_cfg(), attention_mask) {
            model_attention[..mask.len()].copy_from_slice(mask);
            model_attention[mask.len()..].copy_from_slice(mask);
        }
        committed_len.fill(0);
        edited_len.fill(0);

        let mut generation = Self {
            params: *params,
            batch,
            prompt_len,
            seq_len,
            vocab,
            canvas: tokens,
            attention: attention_mask,
            logits: logits_all,
            sample_scratch,
            model_input,
            model_attention,
            is_prompt,
            proposals,
            confidence,
            committed,
            committed_len,
            block_masks,
            edited,
            edited_len,
            post_steps,
            rng: SamplerRng::seed_from_u64(params.seed),
            schedule: BlockSchedule::new(params, prompt_len),
            block: 0,
            step: 0,
            block_forwards: 0,
            pending: false,
            finished: false,
            forward_passes: 0,
            shifted: limits.shifted_logits,
        };
        generation.start_block();
        generation.skip_idle_steps();
        Ok(generation)
    }

    /// Puts the canvas back as it was when the generation started: every position masked then
    /// is masked again. For a caller that gives up after an error or a cancellation, so that
    /// nothing half-generated is left behind.
    pub fn rollback(&mut self) {
        let mask = self.params.mask_id;
        for (id, &was_given) in self.canvas.iter_mut().zip(self.is_prompt.iter()) {
            if was_given == 0 {
                *id = mask;
            }
        }
        self.finished = true;
        self.pending = false;
    }

    /// The canvas as it stands.
    pub fn canvas(&self) -> &[TokenId] {
        self.canvas
    }

    /// Whether every block is done.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Forward passes completed so far.
    pub fn forward_passes(&self) -> usize {
        self.forward_passes
    }

    /// The block being denoised and the step within it (the next step to run).
    pub fn position(&self) -> (usize, usize) {
        (self.block, self.step)
    }

    fn block_span(&self) -> Range<usize> {
        let length = self.params.block_length;
        let start = match self.params.grid {
            BlockGrid::FromPrompt => self.prompt_len + self.block * length,
            BlockGrid::Absolute => (self.prompt_len / length + self.block) * length,
        };
        start..start + length
    }

    /// Counts the masks of every row in the block that starts: the schedule's counts come
    /// from them, and under Dream's rule they are kept up to date as the masks left.
    fn start_block(&mut self) {
        self.block_forwards = 0;
        // A block that starts with no mask (a row stopped at end of text, or a template with
        // nothing to fill there) is not decoded, so not edited either.
        for row in 0..self.post_steps.len() {
            self.post_steps[row] = if self.remaining_masks(row) == 0 {
                ROW_DONE
            } else {
                0
            };
        }
        for row in 0..self.batch {
            self.block_masks[row] = self.remaining_masks(row) as u32;
        }
    }

    /// Masked positions of `row` left in the current block.
    fn remaining_masks(&self, row: usize) -> usize {
        let span = self.block_span();
        let base = row * self.seq_len;
        masks_in(
            &self.canvas[base + span.start..base + span.end],
            self.params.mask_id,
        )
    }

    /// Steps (forward passes) a block may take: the schedule's, or with an adaptive rule its
    /// cap (every pass commits at least one mask, so never more than the block's length).
    fn steps_per_block(&self) -> usize {
        if let (CommitRule::Llada2(_), Some(editing)) = (self.params.commit, self.params.editing) {
            // LLaDA2.1 passes while masks remain (each commits at least one) and then edits
            // for at most `max_post_steps` passes; this bound only stops a model that keeps
            // proposing the mask id, on which the reference would loop forever.
            return self
                .params
                .block_length
                .max(self.schedule.steps_per_block)
                .saturating_add(editing.max_post_steps);
        }
        if !self.params.commit.is_adaptive() {
            return self.schedule.steps_per_block;
        }
        match self.params.max_passes_per_block {
            0 => self.params.block_length,
            cap => cap.min(self.params.block_length),
        }
    }

    /// Whether `row` commits anything at the current step.
    fn row_has_work(&self, row: usize) -> bool {
        match self.params.commit {
            // Dream's origin may commit any mask at any step.
            // `block_masks` holds the masks left in the block under this rule.
            CommitRule::Timesteps(_) if self.params.remasking == Remasking::Origin => {
                self.block_masks[row] > 0
            }
            CommitRule::Timesteps(eps) => {
                timesteps_to_commit(
                    self.block_masks[row] as usize,
                    self.schedule.steps_per_block,
                    self.step,
                    eps as f32,
                ) > 0
            }
            CommitRule::Schedule => {
                tokens_to_commit(
                    self.block_masks[row] as usize,
                    self.schedule.steps_per_block,
                    self.step,
                ) > 0
            }
            // LLaDA2.1: masks to fill, or edit-only passes left until one changes nothing.
            CommitRule::Llada2(_) if self.params.editing.is_some() => {
                let post = self.post_steps[row];
                let max = self.params.editing.map_or(0, |e| e.max_post_steps);
                post != ROW_DONE && (self.remaining_masks(row) > 0 || (post as usize) < max)
            }
            // Rules commit at least one token per pass: work remains while masks do.
            _ => self.remaining_masks(row) > 0,
        }
    }

    /// Whether the current block is done: its steps are spent (schedule), or no row has a
    /// mask left in it (adaptive rules), or the rule has taken the most passes a block may
    /// take. Each pass commits at least one mask, so that bound is only reached when the
    /// predictor keeps proposing the mask id itself, which would otherwise loop forever.
    fn block_done(&self) -> bool {
        if matches!(self.params.commit, CommitRule::Llada2(_)) {
            self.step >= self.steps_per_block() || (0..self.batch).all(|r| !self.row_has_work(r))
        } else if self.params.commit.is_adaptive() {
            self.step >= self.steps_per_block()
                || (0..self.batch).all(|row| self.remaining_masks(row) == 0)
        } else {
            self.step == self.schedule.steps_per_block
        }
    }

    /// With `stop_at_eos`: every row whose just completed block holds EOS or EOT gets its
    /// later masked positions filled with EOS.
    fn stop_rows_at_eos(&mut self) {
        let span = self.block_span();
        let (eos, mask) = (self.params.eos_id, self.params.mask_id);
        // LLaDA2's `generate` stops on end of text only.
        let eot = match self.params.commit {
            CommitRule::Llada2(_) => eos,
            _ => self.params.eot_id,
        };
        // On the absolute grid the prompt's tail may share the block: only generated
        // positions count (the reference looks from the prompt's end).
        let absolute = self.params.grid == BlockGrid::Absolute;
        for (row, given) in self
            .canvas
            .chunks_exact_mut(self.seq_len)
            .zip(self.is_prompt.chunks_exact(self.seq_len))
        {
            let ends = row[span.clone()]
                .iter()
                .zip(&given[span.clone()])
                .any(|(&id, &g)| (g == 0 || !absolute) && (id == eos || id == eot));
            if ends {
                for id in &mut row[span.end..] {
                    if *id == mask {
                        *id = eos;
                    }
                }
            }
        }
    }

    /// Moves past steps in which no row commits anything, past finished blocks, and past the
    /// end.
    fn skip_idle_steps(&mut self) {
        loop {
            if self.block == self.schedule.num_blocks {
                self.finished = true;
                return;
            }
            if self.block_done() {
                if self.params.stop_at_eos {
                    self.stop_rows_at_eos();
                }
                self.block += 1;
                self.step = 0;
                if self.block < self.schedule.num_blocks {
                    self.start_block();
                }
                continue;
            }
            if (0..self.batch).any(|row| self.row_has_work(row)) {
                return;
            }
            // Dream's counts grow as time runs out (and the last step takes every mask left):
            // while masks remain, the next step may have work (at most MAX_TIMESTEPS steps).
            let counts_grow = matches!(self.params.commit, CommitRule::Timesteps(_))
                && self.block_masks[..self.batch].iter().any(|&m| m > 0);
            if counts_grow {
                self.step += 1;
                continue;
            }
            // No row commits anything now, and none will later in this block: a schedule's
            // counts never grow from one step to the next, and an adaptive rule has work
            // while masks remain. Jump to the block's end rather than count up to it (a
            // schedule of billions of steps per block would otherwise spin here).
            self.step = self.steps_per_block();
        }
    }

    /// The next forward pass to run, or `None` when the generation is finished. Calling it
    /// again before [`complete_step`](Self::complete_step) returns the same job.
    pub fn next_forward(&mut self) -> Option<ForwardJob<'_>> {
        if self.finished {
            return None;
        }
        self.pending = true;
        let span = self.block_span();
        let rows = if self.params.uses_cfg() {
            2 * self.batch
        } else {
            self.batch
        };
        let (ids, attention): (&[TokenId], Option<&[u8]>) = if self.params.uses_cfg() {
            let (cond, uncond) = self.model_input.split_at_mut(self.canvas.len());
            cond.copy_from_slice(self.canvas);
            for ((u, &id), &prompt) in uncond
                .iter_mut()
                .zip(self.canvas.iter())
                .zip(self.is_prompt.iter())
            {
                *u = if prompt != 0 { self.params.mask_id } else { id };
            }
            let attention = self.attention.map(|_| &*self.model_attention);
            (&*self.model_input, attention)
        } else {
            (&*self.canvas, self.attention)
        };
        // Shapes were checked in `new`. With shifted logits the window starts one position
        // earlier, and so does the span a cache recomputes (that position's row is read).
        let window = LogitRows::new(span.clone(), self.shifted).window;
        let cache_span = window.start.min(span.start)..span.end;
        let mut request = ForwardRequest::from_parts(ids, rows, self.seq_len, attention, window);
        if self.params.grid == BlockGrid::Absolute {
            request = request.with_block_causal(self.params.block_length).ok()?;
        }
        if self.params.cache != CacheMode::None {
            let hint = CacheHint {
                mode: self.params.cache,
                span: cache_span,
                refresh: self.block_forwards == 0,
            };
            request = request.with_cache(hint).ok()?;
        }
        let len = request.logits_len(self.vocab);
        Some(ForwardJob {
            request,
            logits: &mut self.logits[..len],
        })
    }

    /// Reads the logits the predictor wrote for the pending job, commits this step's tokens
    /// and moves to the next step. The returned event borrows the updated canvas.
    pub fn complete_step(&mut self) -> Result<StepEvent<'_>, Error> {
        if !self.pending {
            return Err(Error::NoPendingForward);
        }
        self.pending = false;
        self.forward_passes += 1;
        let span = self.block_span();
        let block = self.params.block_length;
        let vocab = self.vocab;
        let mask_id = self.params.mask_id;
        let guidance = self.params.cfg_scale + 1.0;
        let steps_per_block = self.steps_per_block();
        let rows_of = LogitRows::new(span.clone(), self.shifted);
        let window = rows_of.len();
        let (cond, uncond) = self.logits.split_at_mut(self.batch * window * vocab);

        // A NaN among the logits of a position being decided fails the step before anything
        // is committed (the predictor is broken; ±infinity is a legitimate logit).
        let halves: &[&[f32]] = if self.params.uses_cfg() {
            &[&*cond, &*uncond]
        } else {
            &[&*cond]
        };
        let editing = self.params.editing;
        for row in 0..self.batch {
            let base = row * self.seq_len;
            for position in span.clone() {
                // Editing reads the predictions of the generated tokens too.
                let read = self.canvas[base + position] == mask_id
                    || (editing.is_some() && self.is_prompt[base + position] == 0);
                if !read {
                    continue;
                }
                let at = (row * window + rows_of.row(position)) * vocab;
                if halves
                    .iter()
                    .any(|h| h[at..at + vocab].iter().any(|v| v.is_nan()))
                {
                    return Err(Error::NanLogits {
                        block: self.block,
                        step: self.step,
                        row,
                        position,
                    });
                }
            }
        }

        let rule = self.params.commit;
        // The last pass an adaptive rule may take in this block commits every mask left.
        let last_pass = rule.is_adaptive() && self.step + 1 >= steps_per_block;
        let origin = self.params.remasking == Remasking::Origin;
        for row in 0..self.batch {
            self.committed_len[row] = 0;
            if editing.is_some() {
                self.edited_len[row] = 0;
            }
            // How many to commit whatever the rule says: the schedule's count, Dream's
            // count, or the top-1 (all that is left on the last pass) for a rule.
            let base = row * self.seq_len;
            let left = masks_in(&self.canvas[base + span.start..base + span.end], mask_id);
            let k = match rule {
                // LLaDA2: the pass's share of the block, counted on the whole block; with
                // editing a pass may have no mask and still edit.
                // (`row_has_work`, inline: the logits are borrowed.)
                CommitRule::Llada2(_)
                    if editing.is_some_and(|e| {
                        let post = self.post_steps[row];
                        post == ROW_DONE || (left == 0 && post as usize >= e.max_post_steps)
                    }) =>
                {
                    continue;
                }
                CommitRule::Llada2(_) if left == 0 && editing.is_none() => continue,
                CommitRule::Llada2(_) if left == 0 => 0,
                // LLaDA2.1 falls back to `num_to_transfer` per pass however long the block runs.
                CommitRule::Llada2(_) if editing.is_some() => {
                    editing.map_or(1, |e| e.num_to_transfer.max(1))
                }
                CommitRule::Llada2(_) => {
                    tokens_to_commit(block, self.schedule.steps_per_block, self.step)
                }
                _ if left == 0 => continue,
                // Dream's origin decides each position on its own below.
                CommitRule::Timesteps(_) if origin => left,
                CommitRule::Timesteps(eps) => {
                    timesteps_to_commit(left, self.schedule.steps_per_block, self.step, eps as f32)
                }
                CommitRule::Schedule => tokens_to_commit(
                    self.block_masks[row] as usize,
                    self.schedule.steps_per_block,
                    self.step,
                ),
                _ if last_pass => left,
                _ => 1,
            };
            if k == 0 && !matches!(rule, CommitRule::Llada2(_)) {
                continue;
            }
            let canvas_row = &mut self.canvas[row * self.seq_len..(row + 1) * self.seq_len];
            let confidence = &mut self.confidence[row * block..(row + 1) * block];
            let proposals = &mut self.proposals[row * block..(row + 1) * block];
            // Dream's origin: one uniform draw per masked position, in position order, before
            // anything is sampled; a position is committed iff its draw is below 1 − s/t.
            let transfer = match rule {
                CommitRule::Timesteps(eps) if origin => f64::from(transfer_fraction(
                    self.schedule.steps_per_block,
                    self.step,
                    eps as f32,
                )),
                _ => 1.0,
            };
            let mut k = k;
            let given = &self.is_prompt[row * self.seq_len..(row + 1) * self.seq_len];
            for (j, position) in span.clone().enumerate() {
                let candidate =
                    canvas_row[position] == mask_id && (!origin || unit(&mut self.rng) < transfer);
                // LLaDA2.1 also predicts every generated token of the block, to edit it.
                let editable = editing.is_some() && !candidate && given[position] == 0;
                confidence[j] = if candidate || editable {
                    0.0
                } else {
                    f64::NEG_INFINITY
                };
            }
            if origin {
                k = confidence.iter().filter(|&&c| c == 0.0).count();
            }
            for (j, position) in span.clone().enumerate() {
                if confidence[j] == f64::NEG_INFINITY {
                    continue;
                }
                let at = (row * window + rows_of.row(position)) * vocab;
                let logits = &mut cond[at..at + vocab];
                if self.params.uses_cfg() {
                    let un = &uncond[at..at + vocab];
                    for (c, &u) in logits.iter_mut().zip(un) {
                        *c = u + guidance * (*c - u);
                    }
                }
                let (token, score) =
                    propose(logits, &self.params, &mut self.rng, self.sample_scratch);
                proposals[j] = token;
                // Candidates always outrank non-candidates, even with a NaN or -inf score;
                // origin's candidates are all committed, in position order.
                confidence[j] = if origin {
                    0.0
                } else if score.is_nan() || score == f64::NEG_INFINITY {
                    f64::MIN
                } else {
                    score
                };
            }
            // Dream's alg_temp: the k drawn without replacement from softmax(score / alg_temp),
            // as the k largest of score / alg_temp plus Gumbel noise.
            if self.params.alg_temp > 0.0 && !origin {
                let temperature = f64::from(self.params.alg_temp);
                for c in confidence.iter_mut().filter(|c| **c > f64::NEG_INFINITY) {
                    let key = *c / temperature - libm::log(-libm::log(open01(&mut self.rng)));
                    *c = if key.is_finite() { key } else { f64::MIN };
                }
            }
            // LLaDA2.1's edits: generated tokens the model now predicts differently, with a
            // probability above the editing threshold, decided on the tokens before this pass
            // and taken out of the ranking of the masks.
            let mut edits = 0;
            if let Some(editing) = editing {
                let edited = &mut self.edited[row * block..(row + 1) * block];
                for (j, position) in span.clone().enumerate() {
                    let written = canvas_row[position] != mask_id && given[position] == 0;
                    if !written {
                        continue;
                    }
                    if proposals[j] != canvas_row[position] && confidence[j] > editing.threshold {
                        edited[edits] = position as u32;
                        edits += 1;
                    }
                    confidence[j] = f64::NEG_INFINITY;
                }
                self.edited_len[row] = edits as u32;
            }
            // LLaDA2: every mask above the threshold when there are at least `k`, else the
            // `k` most confident.
            let above = match rule {
                CommitRule::Llada2(t) => confidence.iter().filter(|&&c| c > t).count(),
                _ => 0,
            };
            let committed = &mut self.committed[row * block..(row + 1) * block];
            let mut count = 0;
            // Entropy of the positions committed so far (the entropy-bounded rule's sum).
            let mut entropy = 0.0f64;
            // Most confident first (lower position on ties): `k`, then whatever the rule
            // admits; confidences only fall along the way, so the first refusal ends it.
            loop {
                let mut best: Option<usize> = None;
                for j in 0..block {
                    let better = match best {
                        None => confidence[j] > f64::NEG_INFINITY,
                        Some(b) => confidence[j] > confidence[b],
                    };
                    if better {
                        best = Some(j);
                    }
                }
                let Some(j) = best else { break };
                let c = confidence[j];
                let admitted = count < k
                    || match rule {
                        CommitRule::Threshold(t) => c >= t,
                        // This candidate would be the n-th: (n + 1)(1 − c₍ₙ₎) < factor.
                        CommitRule::Factor(f) => (count + 2) as f64 * (1.0 - c) < f,
                        // The prefix's entropy minus its largest (this candidate's) ≤ γ.
                        CommitRule::EntropyBounded(gamma) => entropy <= gamma,
                        _ => false,
                    };
                let admitted = match rule {
                    CommitRule::Llada2(t) if above >= k => c > t,
                    CommitRule::Llada2(_) => count < k,
                    _ => admitted,
                };
                if !admitted {
                    break;
                }
                // With the entropy-bounded rule the score is minus the entropy.
                entropy -= c;
                confidence[j] = f64::NEG_INFINITY;
                canvas_row[span.start + j] = proposals[j];
                committed[count] = (span.start + j) as u32;
                count += 1;
            }
            self.committed_len[row] = count as u32;
            if editing.is_some() {
                for &position in &self.edited[row * block..row * block + edits] {
                    let j = position as usize - span.start;
                    canvas_row[position as usize] = proposals[j];
                }
                // A pass that began without masks is an edit-only pass; one that changed
                // nothing ends the row's block.
                if left == 0 {
                    self.post_steps[row] = if edits == 0 {
                        ROW_DONE
                    } else {
                        self.post_steps[row] + 1
                    };
                }
            }
        }
        if matches!(rule, CommitRule::Timesteps(_)) {
            // Dream's counts are shares of the masks left: keep them for the steps to come
            // (a proposal may be the mask id itself, so count rather than subtract).
            for row in 0..self.batch {
                self.block_masks[row] = self.remaining_masks(row) as u32;
            }
        }

        let (block_index, step_index) = (self.block, self.step);
        self.block_forwards += 1;
        self.step += 1;
        self.skip_idle_steps();
        Ok(StepEvent {
            block: block_index,
            num_blocks: self.schedule.num_blocks,
            step: step_index,
            steps_per_block: self.steps_per_block(),
            forward_passes: self.forward_passes,
            block_span: span,
            batch: self.batch,
            seq_len: self.seq_len,
            canvas: self.canvas,
            committed: self.committed,
            committed_len: self.committed_len,
            edited: self.edited,
            edited_len: self.edited_len,
            block_length: block,
        })
    }
}

/// Runs the reverse process to the end with `predictor`, writing the result into the canvas.
///
/// The observer sees every step and may cancel. On any error after the start (the
/// predictor's, NaN logits, a cancellation) the canvas is put back as it was
/// ([`Generation::rollback`]): nothing half-generated is left, and a caller that wants a
/// cancelled run's partial answer takes it from the observer. See [`Generation`] for the
/// schedule.
pub fn generate<P, O>(
    predictor: &mut P,
    params: &GenerateParams,
    canvas: Canvas<'_>,
    workspace: Workspace<'_>,
    observer: &mut O,
) -> Result<GenerationStats, GenerateError<P::Error>>
where
    P: MaskPredictor + ?Sized,
    O: StepObserver + ?Sized,
{
    let mut generation = Generation::new(params, canvas, workspace, Limits::of(predictor))?;
    while let Some(job) = generation.next_forward() {
        if let Err(e) = predictor.forward(&job.request, job.logits) {
            generation.rollback();
            return Err(GenerateError::Predictor(e));
        }
        let event = match generation.complete_step() {
            Ok(event) => event,
            Err(e) => {
                generation.rollback();
                return Err(e.into());
            }
        };
        if observer.on_step(&event).is_break() {
            generation.rollback();
            return Err(GenerateError::Cancelled);
        }
    }
    Ok(GenerationStats {
        forward_passes: generation.forward_passes,
    })
}
