//! Text in, text out: a model directory opened with its tokenizer, chat template and backend.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llada_core::rand_core::SeedableRng;
use llada_core::{
    Canvas, GenerateParams, LikelihoodParams, MaskPredictor, SamplerRng, StepEvent, WorkspaceBuf,
    WorkspaceSizes, generate, log_likelihood,
};

use crate::backend::{Backend, BackendChoice, SharedWeights};
use crate::chat::{ChatTemplate, Message};
use crate::error::Error;
use crate::files::ModelFiles;
use crate::tokenizer::{SpecialTokens, Tokenizer};

/// What the placeholder of a still-masked position looks like in partial text.
pub const MASK_PLACEHOLDER: &str = "░";

/// The result of one prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// The prompt ids the model saw (chat-formatted unless raw).
    pub prompt_ids: Vec<u32>,
    /// All `gen_length` generated ids.
    pub output_ids: Vec<u32>,
    /// The generated ids up to the first EOS or EOT.
    pub answer_ids: Vec<u32>,
    /// `answer_ids` decoded, special tokens skipped.
    pub text: String,
    /// Forward passes the generation took (shared by the rows of a batch).
    pub forward_passes: usize,
    /// Wall-clock time of the generation (shared by the rows of a batch).
    pub elapsed: Duration,
}

impl Generated {
    /// Generated tokens per second (`gen_length` per row over the elapsed time).
    pub fn tokens_per_second(&self) -> f64 {
        self.output_ids.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One denoising step, as a UI sees it.
pub struct Progress<'a> {
    event: &'a StepEvent<'a>,
    tokenizer: &'a Tokenizer,
    prompt_len: usize,
    /// Generated positions shown (the canvas may run further, to the end of a block).
    gen_length: usize,
    mask: u32,
}

impl Progress<'_> {
    /// The block being denoised (0-based) and the number of blocks.
    pub fn block(&self) -> (usize, usize) {
        (self.event.block(), self.event.num_blocks())
    }

    /// The step within the block (0-based) and the steps per block.
    pub fn step(&self) -> (usize, usize) {
        (self.event.step(), self.event.steps_per_block())
    }

    /// Forward passes so far.
    pub fn forward_passes(&self) -> usize {
        self.event.forward_passes()
    }

    /// Rows in the batch.
    pub fn batch(&self) -> usize {
        self.event.batch()
    }

    /// The generated ids of `row` so far (the mask id where still masked).
    pub fn output_ids(&self, row: usize) -> &[u32] {
        &self.event.row(row)[self.prompt_len..self.prompt_len + self.gen_length]
    }

    /// Positions (0-based, within the generation) of the current block; on LLaDA2's
    /// absolute grid the first block starts inside the prompt, and its range here starts at 0.
    pub fn block_positions(&self) -> std::ops::Range<usize> {
        let span = self.event.block_span();
        let at = |p: usize| p.saturating_sub(self.prompt_len).min(self.gen_length);
        at(span.start)..at(span.end)
    }

    /// Positions (within the generation) of `row` whose token this step rewrote (LLaDA2.1's
    /// editing).
    pub fn edited(&self, row: usize) -> impl Iterator<Item = usize> + '_ {
        self.event
            .edited(row)
            .iter()
            .map(|&p| p as usize - self.prompt_len)
            .filter(|&p| p < self.gen_length)
    }

    /// Positions (within the generation) of `row` committed in this step.
    pub fn committed(&self, row: usize) -> impl Iterator<Item = usize> + '_ {
        self.event
            .committed(row)
            .iter()
            .map(|&p| p as usize - self.prompt_len)
            // On LLaDA2's grid the canvas may run past the answer, to the end of a block.
            .filter(|&p| p < self.gen_length)
    }

    /// The partially denoised text of `row`: decoded tokens with [`MASK_PLACEHOLDER`] for every
    /// masked position.
    pub fn partial_text(&self, row: usize) -> String {
        partial_text(self.tokenizer, self.output_ids(row), self.mask)
    }
}

/// Decodes runs of committed ids and shows each mask as a placeholder.
fn partial_text(tokenizer: &Tokenizer, ids: &[u32], mask: u32) -> String {
    let mut text = String::new();
    let mut run = Vec::new();
    for &id in ids {
        if id == mask {
            if !run.is_empty() {
                text.push_str(&tokenizer.decode(&run, true).unwrap_or_default());
                run.clear();
            }
            text.push_str(MASK_PLACEHOLDER);
        } else {
            run.push(id);
        }
    }
    if !run.is_empty() {
        text.push_str(&tokenizer.decode(&run, true).unwrap_or_default());
    }
    text
}

/// A multi-turn conversation. For LLaDA models it is kept the way LLaDA's reference chat loop
/// keeps it: as token ids, each previous answer appended without its EOS padding. For other
/// families (Dream's ChatML) each turn renders the whole conversation with the chat template,
/// the previous answers as assistant messages, as their own chat code does.
#[derive(Clone, Debug, Default)]
pub struct Conversation {
    history: Vec<u32>,
    turns: usize,
    messages: Vec<Message>,
}

impl Conversation {
    /// An empty conversation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Completed turns.
    pub fn turns(&self) -> usize {
        self.turns
    }

    /// The ids of the conversation so far (prompts and answers, EOS dropped): what LLaDA's
    /// next turn builds on. Other families render their next prompt from the messages.
    pub fn history(&self) -> &[u32] {
        &self.history
    }
}

/// A model loaded once and shared (in an [`Arc`]) by any number of [`Pipeline`]s, one per
/// thread: its [`ModelFiles`] (tokenizer, chat template, special ids) and the backend's
/// weights.
#[derive(Debug)]
pub struct Model {
    files: ModelFiles,
    weights: SharedWeights,
}

impl Model {
    /// Loads a model directory for the chosen backend: `config.json`, `tokenizer.json`,
    /// `tokenizer_config.json` and the weights (`model.safetensors` or its shard index for
    /// ndarray, `model.onnx` for ONNX Runtime), each read once.
    pub fn load(dir: impl AsRef<Path>, backend: &BackendChoice) -> Result<Arc<Self>, Error> {
        Self::load_with(dir, backend, &LoadOptions::default())
    }

    /// [`load`](Self::load) with options (quantizing while loading).
    pub fn load_with(
        dir: impl AsRef<Path>,
        backend: &BackendChoice,
        options: &LoadOptions,
    ) -> Result<Arc<Self>, Error> {
        Self::from_files_with(ModelFiles::open(dir, backend)?, backend, options)
    }

    /// Loads the weights `files` names with the chosen backend. Nothing but the weights is
    /// read from disk.
    pub fn from_files(files: ModelFiles, backend: &BackendChoice) -> Result<Arc<Self>, Error> {
        Self::from_files_with(files, backend, &LoadOptions::default())
    }

    /// [`from_files`](Self::from_files) with options.
    pub fn from_files_with(
        files: ModelFiles,
        backend: &BackendChoice,
        options: &LoadOptions,
    ) -> Result<Arc<Self>, Error> {
        let weights = SharedWeights::load(&files, backend, options)?;
        Ok(Arc::new(Self { files, weights }))
    }

    /// The model's sources: configuration, tokenizer, special ids, weights.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        self.files.tokenizer()
    }

    /// The special-token ids from the model's files.
    pub fn special_tokens(&self) -> SpecialTokens {
        self.files.special_tokens()
    }

    /// The model's chat template, if it has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.files.chat_template()
    }

    /// The parameters that fit the model: the decoding lengths it declares (else the
    /// reference chat settings, 128 tokens, 128 steps, blocks of 32) and its special ids.
    pub fn default_params(&self) -> GenerateParams {
        self.files.default_params()
    }

    /// Renders `messages` with the model's chat template, ending with the assistant prompt.
    pub fn format_chat(&self, messages: &[Message]) -> Result<String, Error> {
        self.chat_template()
            .ok_or(Error::NoChatTemplate)?
            .render(messages, true)
    }

    /// Token ids of a one-turn chat prompt.
    pub fn chat_prompt_ids(&self, user: &str) -> Result<Vec<u32>, Error> {
        self.tokenizer()
            .encode(&self.format_chat(&[Message::user(user)])?)
    }

    /// The generated ids up to the first EOS or EOT.
    pub fn answer_ids<'a>(&self, output: &'a [u32]) -> &'a [u32] {
        let special = self.special_tokens();
        let end = output
            .iter()
            .position(|&t| t == special.eos || t == special.eot)
            .unwrap_or(output.len());
        &output[..end]
    }
}

/// How a [`Model`] loads its weights. `#[non_exhaustive]`: start from [`Default::default()`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Quantize the linear layers and the embedding while loading (ndarray backend; see
    /// [`llada_ndarray::Quantization`]): a safetensors checkpoint runs in Q8_0, Q4_0, Q4_K or
    /// Q6_K with no other tool.
    #[cfg(feature = "ndarray")]
    pub quantize: Option<llada_ndarray::Quantization>,
}

impl LoadOptions {
    /// These options with `quantize`.
    #[cfg(feature = "ndarray")]
    #[must_use]
    pub fn with_quantize(mut self, quantize: Option<llada_ndarray::Quantization>) -> Self {
        self.quantize = quantize;
        self
    }

    /// Whether any option asks the backend to change the weights (the ONNX Runtime backend
    /// cannot).
    #[cfg_attr(not(feature = "ort"), allow(dead_code))]
    pub(crate) fn changes_weights(&self) -> bool {
        #[cfg(feature = "ndarray")]
        if self.quantize.is_some() {
            return true;
        }
        false
    }
}

/// How [`Pipeline::log_likelihood`] estimates `log p(answer | prompt)`: the reference's 128
/// masked samples in mini-batches of 16, no guidance, seed 0. `#[non_exhaustive]`: start from
/// [`Default::default()`] and chain the `with_*` methods.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct LikelihoodOptions {
    /// Masked samples in total; a positive multiple of `batch`.
    pub mc_samples: usize,
    /// Rows per forward pass.
    pub batch: usize,
    /// Classifier-free guidance scale; `0` disables.
    pub cfg_scale: f32,
    /// Seed of the masking, for a reproducible estimate.
    pub seed: u64,
}

impl Default for LikelihoodOptions {
    fn default() -> Self {
        let core = LikelihoodParams::default();
        Self {
            mc_samples: core.mc_samples,
            batch: core.batch,
            cfg_scale: core.cfg_scale,
            seed: 0,
        }
    }
}

impl LikelihoodOptions {
    /// These options with `mc_samples` masked samples.
    #[must_use]
    pub fn with_mc_samples(mut self, mc_samples: usize) -> Self {
        self.mc_samples = mc_samples;
        self
    }

    /// These options with mini-batches of `batch` rows.
    #[must_use]
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// These options with guidance scale `cfg_scale`.
    #[must_use]
    pub fn with_cfg_scale(mut self, cfg_scale: f32) -> Self {
        self.cfg_scale = cfg_scale;
        self
    }

    /// These options with `seed`.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Generates text on one thread: a shared [`Model`] with this thread's backend state
/// (activation buffers, an ONNX Runtime session) and scratch memory.
#[derive(Debug)]
pub struct Pipeline {
    model: Arc<Model>,
    backend: Backend,
    workspace: WorkspaceBuf,
}

impl Pipeline {
    /// Opens a model directory with the chosen backend (a [`Model`] and one pipeline over it).
    pub fn open(dir: impl AsRef<Path>, backend: &BackendChoice) -> Result<Self, Error> {
        Self::new(Model::load(dir, backend)?)
    }

    /// A pipeline over a loaded model; create one per thread.
    pub fn new(model: Arc<Model>) -> Result<Self, Error> {
        Self::with_threads(model, None)
    }

    /// A pipeline computing with `threads` threads (`None`: the backend's default).
    pub fn with_threads(model: Arc<Model>, threads: Option<usize>) -> Result<Self, Error> {
        let backend = model.weights.backend(threads)?;
        Ok(Self {
            model,
            backend,
            workspace: WorkspaceBuf::default(),
        })
    }

    /// The shared model (tokenizer, chat template, special ids, default parameters).
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The model's default parameters (shorthand for `model().default_params()`).
    pub fn default_params(&self) -> GenerateParams {
        self.model.default_params()
    }

    /// The backend (a [`MaskPredictor`]).
    pub fn backend(&mut self) -> &mut Backend {
        &mut self.backend
    }

    /// The model's longest sequence.
    pub fn max_sequence_length(&self) -> usize {
        self.backend.max_sequence_length()
    }

    /// The name of the backend in use (`"ndarray"` or `"ort"`).
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Generates an answer to one user message, formatted with the chat template.
    pub fn generate(&mut self, user: &str, params: &GenerateParams) -> Result<Generated, Error> {
        let ids = self.model.chat_prompt_ids(user)?;
        self.generate_ids(&[ids], params, |_| ControlFlow::Continue(()))
            .map(|mut v| v.remove(0))
    }

    /// Generates from raw text, without the chat template.
    pub fn generate_raw(
        &mut self,
        text: &str,
        params: &GenerateParams,
    ) -> Result<Generated, Error> {
        let ids = self.model.tokenizer().encode(text)?;
        self.generate_ids(&[ids], params, |_| ControlFlow::Continue(()))
            .map(|mut v| v.remove(0))
    }

    /// Generates for a batch of prompts (token ids), left-padding shorter ones with the pad id
    /// behind an attention mask. `on_step` sees every denoising step and may cancel with
    /// [`ControlFlow::Break`], which returns [`Error::Cancelled`].
    pub fn generate_ids(
        &mut self,
        prompts: &[Vec<u32>],
        params: &GenerateParams,
        mut on_step: impl FnMut(&Progress<'_>) -> ControlFlow<()>,
    ) -> Result<Vec<Generated>, Error> {
        if prompts.is_empty() {
            return Err(Error::EmptyInput("no prompts to generate from"));
        }
        if prompts.iter().any(Vec::is_empty) {
            return Err(Error::EmptyInput("a prompt is empty"));
        }
        let batch = prompts.len();
        let prompt_len = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let max = self.backend.max_sequence_length();
        // On LLaDA2's absolute grid the canvas runs to the end of the last block.
        let seq = params.canvas_len(prompt_len);
        if seq > max {
            return Err(Error::PromptTooLong {
                prompt_len,
                gen_length: seq - prompt_len,
                max,
            });
        }
        let mut canvas = vec![0; batch * seq];
        let mut attention = vec![0; batch * seq];
        let pad = self.model.special_tokens().pad;
        let c = Canvas::left_padded(
            &mut canvas,
            &mut attention,
            prompts,
            seq - prompt_len,
            params.mask_id,
            pad,
        )?;
        let vocab = self.backend.vocab_size();
        self.workspace.ensure(&WorkspaceSizes::for_generation(
            params, batch, prompt_len, vocab,
        )?);
        let start = Instant::now();
        let tokenizer = self.model.tokenizer();
        let mask = params.mask_id;
        let gen_length = params.gen_length;
        let mut observer = |event: &StepEvent<'_>| {
            on_step(&Progress {
                event,
                tokenizer,
                prompt_len,
                gen_length,
                mask,
            })
        };
        let stats = generate(
            &mut self.backend,
            params,
            c,
            self.workspace.as_workspace(),
            &mut observer,
        )?;
        let elapsed = start.elapsed();
        prompts
            .iter()
            .enumerate()
            .map(|(row, prompt)| {
                let start = row * seq + prompt_len;
                let output_ids = canvas[start..start + params.gen_length].to_vec();
                let answer_ids = self.model.answer_ids(&output_ids).to_vec();
                Ok(Generated {
                    prompt_ids: prompt.clone(),
                    text: self.model.tokenizer().decode(&answer_ids, true)?,
                    output_ids,
                    answer_ids,
                    forward_passes: stats.forward_passes,
                    elapsed,
                })
            })
            .collect()
    }

    /// One turn of a multi-turn chat: the user's message is formatted with the chat template
    /// and appended to the conversation (its BOS dropped after the first turn), the answer is
    /// generated, and the conversation keeps prompt and answer minus EOS tokens, as LLaDA's
    /// reference chat loop does. For other families (Dream, LLaDA-MoE) the whole conversation, previous
    /// answers as assistant messages, is rendered again by the chat template each turn, as
    /// Hugging Face's `apply_chat_template` does (Dream's template adds its default system
    /// message once, before the first turn).
    pub fn chat(
        &mut self,
        conversation: &mut Conversation,
        user: &str,
        params: &GenerateParams,
        on_step: impl FnMut(&Progress<'_>) -> ControlFlow<()>,
    ) -> Result<Generated, Error> {
        let special = self.model.special_tokens();
        let by_ids = self.model.files().family() == "llada";
        let prompt = if !by_ids {
            let mut messages = conversation.messages.clone();
            messages.push(Message::user(user));
            self.model
                .tokenizer()
                .encode(&self.model.format_chat(&messages)?)?
        } else if conversation.turns == 0 {
            self.model.chat_prompt_ids(user)?
        } else {
            let turn = self.model.chat_prompt_ids(user)?;
            let bos = special.bos;
            let skip = usize::from(bos.is_some() && turn.first() == bos.as_ref());
            [conversation.history.as_slice(), &turn[skip..]].concat()
        };
        let generated = self
            .generate_ids(std::slice::from_ref(&prompt), params, on_step)?
            .remove(0);
        if !by_ids {
            conversation.messages.push(Message::user(user));
            conversation
                .messages
                .push(Message::new("assistant", generated.text.clone()));
        }
        conversation.history = prompt
            .iter()
            .chain(&generated.output_ids)
            .copied()
            .filter(|&t| t != special.eos)
            .collect();
        conversation.turns += 1;
        Ok(generated)
    }

    /// Monte Carlo estimate of `log p(answer | prompt)` (the paper's multiple-choice score),
    /// with this model's mask id; reproducible from `options.seed`.
    pub fn log_likelihood(
        &mut self,
        prompt: &[u32],
        answer: &[u32],
        options: &LikelihoodOptions,
    ) -> Result<f64, Error> {
        let params = LikelihoodParams::default()
            .with_mc_samples(options.mc_samples)
            .with_batch(options.batch)
            .with_cfg_scale(options.cfg_scale)
            .with_mask_id(self.model.special_tokens().mask);
        let vocab = self.backend.vocab_size();
        self.workspace.ensure(&WorkspaceSizes::for_likelihood(
            prompt.len(),
            answer.len(),
            options.batch,
            options.cfg_scale > 0.0,
            vocab,
        )?);
        let mut rng = SamplerRng::seed_from_u64(options.seed);
        Ok(log_likelihood(
            &mut self.backend,
            prompt,
            answer,
            &params,
            &mut rng,
            self.workspace.as_workspace(),
        )?)
    }
}
