//! The generation thread: a bounded queue of jobs, batched into one canvas when they can share
//! it, run on one [`Pipeline`].
//!
//! Scheduling: first come, first served. When the pipeline is free, the oldest waiting job
//! starts, and with it every later waiting job that can share its canvas (the same parameters,
//! up to `max_batch` rows). A job that arrives while a batch runs waits for that batch to end:
//! it does not join mid-generation, so a batch is exactly the generation each of its requests
//! would get alone (the reference process, left-padded). No request waits behind one that came
//! later, so a long request delays short ones by at most its own length and never starves them.
//!
//! Jobs whose result depends on the random number generator (temperature above 0, random
//! remasking, Dream's `origin` and `alg_temp`) run alone, so that a request's `seed` gives the
//! same answer whatever else is being served.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use llada::Pipeline;
use llada::core::{
    BlockGrid, Canvas, ForwardRequest, GenerateError, GenerateParams, MaskPredictor, Remasking,
    StepEvent, WorkspaceBuf, WorkspaceSizes, generate,
};
use tokio::sync::mpsc::UnboundedSender;

/// What the engine tells the request that owns a row.
#[derive(Debug)]
pub(crate) enum Event {
    /// The generated ids that are final so far (a longer prefix than the last event's).
    Final(Vec<u32>),
    /// The canvas after a step, masked positions as `░` (asked for by `llada.visual`).
    Canvas {
        text: String,
        step: usize,
        forward_passes: usize,
    },
    /// The generation ended: all the generated ids.
    Done(Result<Vec<u32>, Failure>),
}

/// Why a generation gave no answer.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    /// The request's fault (parameters the library refused): 400 rather than 500.
    pub(crate) bad_request: bool,
}

impl Failure {
    fn server(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            bad_request: false,
        }
    }
}

/// One request's row.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) prompt_ids: Vec<u32>,
    pub(crate) params: GenerateParams,
    /// Send canvas events.
    pub(crate) visual: bool,
    /// Closed when the request goes away (the client disconnected, or its answer is complete
    /// early: an end of text or a stop string): the row is dropped, and its batch stops when
    /// every row is.
    pub(crate) events: UnboundedSender<Event>,
}

impl Job {
    /// Whether the answer is the same in any batch: no draw from the random number generator.
    fn batchable(&self) -> bool {
        let p = &self.params;
        p.temperature == 0.0
            && p.alg_temp == 0.0
            && !matches!(p.remasking, Remasking::Random | Remasking::Origin)
    }

    /// Whether `other` can share this job's canvas and give both the answers they would get
    /// alone: the same parameters (the seed aside: neither draws from it), and on the
    /// absolute block grid (LLaDA2.x) the same prompt length, as left padding would move a
    /// shorter prompt's answer onto other block boundaries.
    fn shares_canvas_with(&self, other: &Job) -> bool {
        self.batchable()
            && other.batchable()
            && self.params.with_seed(0) == other.params.with_seed(0)
            && (self.params.grid != BlockGrid::Absolute
                || self.prompt_ids.len() == other.prompt_ids.len())
    }

    fn cancelled(&self) -> bool {
        self.events.is_closed()
    }
}

/// Why a job was not queued (both are 503).
#[derive(Debug)]
pub(crate) enum Refused {
    /// `capacity` jobs already wait.
    QueueFull,
    /// The server is shutting down.
    Closing,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Job>,
    /// No more jobs are accepted; the thread ends when the queue is empty.
    closing: bool,
}

/// The handle the HTTP side holds.
pub(crate) struct Engine {
    state: Mutex<State>,
    wake: Condvar,
    capacity: usize,
    max_batch: usize,
    /// The most bytes of sampler workspace a batch may take (`--workspace-mib`).
    workspace_budget: usize,
    /// The backend's logits per position.
    vocab: usize,
    /// A pause after every step (`--step-delay-ms`).
    step_delay: Duration,
    /// Set on a second signal or after the shutdown grace period: running batches stop.
    abort: AtomicBool,
    /// Rows in the batch now running (for /health).
    running: AtomicUsize,
    /// Batches run, rows served, the largest batch, and batches stopped early because no row
    /// was wanted any more (clients gone, or answers complete before the canvas): for /health
    /// and the log at shutdown.
    batches: AtomicUsize,
    rows: AtomicUsize,
    largest: AtomicUsize,
    cancelled: AtomicUsize,
}

/// What the engine has done so far.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Served {
    pub(crate) batches: usize,
    pub(crate) rows: usize,
    pub(crate) largest_batch: usize,
    pub(crate) stopped_early: usize,
}

impl Engine {
    pub(crate) fn new(
        capacity: usize,
        max_batch: usize,
        workspace_budget: usize,
        vocab: usize,
        step_delay: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            capacity,
            max_batch: max_batch.max(1),
            workspace_budget,
            vocab,
            step_delay,
            abort: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            batches: AtomicUsize::new(0),
            rows: AtomicUsize::new(0),
            largest: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
        })
    }

    /// Queues a job, or refuses it when `capacity` jobs already wait (or the server is
    /// shutting down).
    pub(crate) fn submit(&self, job: Job) -> Result<(), Refused> {
        let mut state = self.lock();
        // Jobs whose client already left do not hold places.
        state.waiting.retain(|j| !j.cancelled());
        if state.closing {
            return Err(Refused::Closing);
        }
        if state.waiting.len() >= self.capacity {
            return Err(Refused::QueueFull);
        }
        state.waiting.push_back(job);
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    /// Jobs waiting and rows running.
    pub(crate) fn load(&self) -> (usize, usize) {
        (
            self.lock().waiting.len(),
            self.running.load(Ordering::Relaxed),
        )
    }

    /// What the engine has done so far.
    pub(crate) fn served(&self) -> Served {
        Served {
            batches: self.batches.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            largest_batch: self.largest.load(Ordering::Relaxed),
            stopped_early: self.cancelled.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting jobs; the queued ones still run.
    pub(crate) fn close(&self) {
        self.lock().closing = true;
        self.wake.notify_all();
    }

    /// Stops the running batch and every queued job: each gets an error.
    pub(crate) fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
        self.close();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue inconsistent (each operation is
        // one VecDeque call), so a poisoned lock is still good.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `batch` and `job` together stay within the workspace budget.
    fn fits(&self, batch: &[Job], job: &Job) -> bool {
        let prompt_len = batch
            .iter()
            .chain([job])
            .map(|j| j.prompt_ids.len())
            .max()
            .unwrap_or(0);
        WorkspaceSizes::for_generation(&job.params, batch.len() + 1, prompt_len, self.vocab)
            .is_ok_and(|w| w.bytes() <= self.workspace_budget)
    }

    /// The next batch: the oldest live job and the later ones that can share its canvas.
    /// `None` once closed and empty.
    fn next_batch(&self) -> Option<Vec<Job>> {
        let mut state = self.lock();
        loop {
            state.waiting.retain(|j| !j.cancelled());
            if self.abort.load(Ordering::Relaxed) {
                for job in state.waiting.drain(..) {
                    let _ = job.events.send(Event::Done(Err(Failure::server(
                        "the server is shutting down",
                    ))));
                }
            }
            if let Some(first) = state.waiting.pop_front() {
                let mut batch = vec![first];
                let mut i = 0;
                while i < state.waiting.len() && batch.len() < self.max_batch {
                    let job = &state.waiting[i];
                    if batch[0].shares_canvas_with(job) && self.fits(&batch, job) {
                        batch.extend(state.waiting.remove(i));
                    } else {
                        i += 1;
                    }
                }
                return Some(batch);
            }
            if state.closing {
                return None;
            }
            state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Runs batches until the engine is closed and drained.
pub(crate) fn run(engine: &Engine, mut pipeline: Pipeline) {
    let mut workspace = WorkspaceBuf::default();
    while let Some(batch) = engine.next_batch() {
        engine.running.store(batch.len(), Ordering::SeqCst);
        let start = Instant::now();
        // A panic in the library would be a bug; it must not take the server down with it:
        // the batch gets an error and the next batch runs.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_batch(engine, &mut pipeline, &mut workspace, &batch)
        }));
        // The counts first: a client that sees nothing running sees them complete.
        engine.batches.fetch_add(1, Ordering::Relaxed);
        engine.rows.fetch_add(batch.len(), Ordering::Relaxed);
        engine.largest.fetch_max(batch.len(), Ordering::Relaxed);
        engine.running.store(0, Ordering::SeqCst);
        tracing::info!(
            rows = batch.len(),
            seconds = start.elapsed().as_secs_f64(),
            "batch done"
        );
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(failure)) => Some(failure),
            Err(_) => Some(Failure::server("internal error: the generation panicked")),
        };
        if let Some(failure) = failure {
            for job in &batch {
                let _ = job.events.send(Event::Done(Err(failure.clone())));
            }
        }
    }
}

/// The backend, minus the rows nobody wants any more: a row whose client went away or whose
/// answer is complete is left out of the forward passes that follow, so a batch runs as long
/// as its longest row but costs only what its live rows cost. Rows are independent (each
/// sees only itself through the attention mask), so a live row's logits are the same in any
/// sub-batch. Under a key/value cache the rows are chosen when a block's cache is filled and
/// kept until the next block: the backend's cache holds those rows.
struct LiveRows<'a, P> {
    inner: &'a mut P,
    jobs: &'a [Job],
    /// A dropped row's logits put all their mass on this token (not end of text, which the
    /// sampler may suppress), so that any commit rule fills its masks at once rather than
    /// stretching the block.
    filler: u32,
    /// The rows the backend's cache was filled for (under a cache).
    cached_rows: Vec<usize>,
    ids: Vec<u32>,
    attention: Vec<u8>,
    logits: Vec<f32>,
}

impl<P: MaskPredictor> LiveRows<'_, P> {
    /// The rows to compute in this pass.
    fn rows(&mut self, request: &ForwardRequest<'_>) -> Vec<usize> {
        let live = || {
            (0..request.batch())
                .filter(|&r| !self.jobs[r].cancelled())
                .collect::<Vec<_>>()
        };
        match request.cache() {
            None => live(),
            Some(hint) if hint.refresh => {
                self.cached_rows = live();
                self.cached_rows.clone()
            }
            Some(_) => self.cached_rows.clone(),
        }
    }
}

impl<P: MaskPredictor> MaskPredictor for LiveRows<'_, P> {
    type Error = P::Error;

    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    fn max_sequence_length(&self) -> usize {
        self.inner.max_sequence_length()
    }

    fn shifted_logits(&self) -> bool {
        self.inner.shifted_logits()
    }

    fn block_causal(&self) -> bool {
        self.inner.block_causal()
    }

    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), Self::Error> {
        // With classifier-free guidance the sampler sends each row twice (with and without
        // its prompt): those passes keep every row.
        if request.batch() != self.jobs.len() {
            return self.inner.forward(request, logits);
        }
        let rows = self.rows(request);
        // Every row live, or none (the step's observer stops the batch).
        if rows.len() == request.batch() || rows.is_empty() {
            return self.inner.forward(request, logits);
        }
        let seq = request.seq_len();
        let vocab = self.inner.vocab_size();
        let per_row = request.window().len() * vocab;
        self.ids.clear();
        self.attention.clear();
        for &r in &rows {
            self.ids.extend_from_slice(request.row(r));
            if let Some(mask) = request.attention_mask() {
                self.attention
                    .extend_from_slice(&mask[r * seq..(r + 1) * seq]);
            }
        }
        // The request the sampler built, for fewer rows: its shapes were checked already, so
        // these cannot fail.
        let mut sub = ForwardRequest::new(&self.ids, rows.len(), seq)
            .and_then(|q| q.with_window(request.window()))
            .expect("a sub-batch of a valid request");
        if request.attention_mask().is_some() {
            sub = sub
                .with_attention_mask(&self.attention)
                .expect("a sub-batch of a valid mask");
        }
        if let Some(hint) = request.cache() {
            sub = sub.with_cache(hint.clone()).expect("the same span");
        }
        if let Some(block) = request.block_causal() {
            sub = sub.with_block_causal(block).expect("the same block");
        }
        self.logits.resize(rows.len() * per_row, 0.0);
        self.inner.forward(&sub, &mut self.logits)?;
        let mut computed = rows
            .iter()
            .zip(self.logits.chunks_exact(per_row))
            .peekable();
        for (r, out) in logits.chunks_exact_mut(per_row).enumerate() {
            match computed.next_if(|&(&row, _)| row == r) {
                Some((_, row_logits)) => out.copy_from_slice(row_logits),
                None => {
                    for position in out.chunks_exact_mut(vocab) {
                        position.fill(-1e30);
                        if let Some(l) = position.get_mut(self.filler as usize) {
                            *l = 0.0;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The canvas of `row` with masked positions shown as `░` (what `--visual` draws).
fn partial_text(tokenizer: &llada::Tokenizer, ids: &[u32], mask: u32) -> String {
    let mut text = String::new();
    for (is_mask, run) in ids
        .chunk_by(|a, b| (*a == mask) == (*b == mask))
        .map(|r| (r[0] == mask, r))
    {
        if is_mask {
            text.push_str(&llada::MASK_PLACEHOLDER.repeat(run.len()));
        } else {
            text.push_str(&tokenizer.decode(run, true).unwrap_or_default());
        }
    }
    text
}

fn run_batch(
    engine: &Engine,
    pipeline: &mut Pipeline,
    workspace: &mut WorkspaceBuf,
    batch: &[Job],
) -> Result<(), Failure> {
    let model = pipeline.model().clone();
    let prompts: Vec<&[u32]> = batch.iter().map(|j| j.prompt_ids.as_slice()).collect();
    let params = batch[0].params;
    let mask = params.mask_id;
    let rows = batch.len();
    let prompt_len = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let seq = params.canvas_len(prompt_len);
    let max = pipeline.max_sequence_length();
    if seq > max {
        return Err(Failure {
            message: format!("the canvas needs {seq} positions; the model's context is {max}"),
            bad_request: true,
        });
    }
    let mut canvas = vec![0; rows * seq];
    let mut attention = vec![0; rows * seq];
    let special = model.special_tokens();
    let c = Canvas::left_padded(
        &mut canvas,
        &mut attention,
        &prompts,
        seq - prompt_len,
        mask,
        special.pad,
    )
    .map_err(|e| Failure {
        message: e.to_string(),
        bad_request: true,
    })?;
    let backend = pipeline.backend();
    let vocab = backend.vocab_size();
    workspace.ensure(
        &WorkspaceSizes::for_generation(&params, rows, prompt_len, vocab).map_err(|e| Failure {
            message: e.to_string(),
            bad_request: true,
        })?,
    );
    let tokenizer = model.tokenizer();
    let gen_length = params.gen_length;
    // How many ids of each row have been sent as final.
    let mut sent = vec![0usize; rows];
    let mut on_step = |event: &StepEvent<'_>| {
        if engine.abort.load(Ordering::Relaxed) {
            return ControlFlow::Break(());
        }
        let block = event.block_span().start.saturating_sub(prompt_len);
        let mut live = false;
        for (row, job) in batch.iter().enumerate() {
            if job.cancelled() {
                continue;
            }
            live = true;
            let ids = &event.row(row)[prompt_len..prompt_len + gen_length];
            let mut end = ids.iter().position(|&t| t == mask).unwrap_or(ids.len());
            // With LLaDA2.1's editing a committed token of the current block may still be
            // rewritten: only finished blocks are final.
            if params.editing.is_some() {
                end = end.min(block);
            }
            // The canvas first: the final ids may complete the answer, after which the
            // request reads nothing more.
            if job.visual {
                let _ = job.events.send(Event::Canvas {
                    text: partial_text(tokenizer, ids, mask),
                    step: event.step(),
                    forward_passes: event.forward_passes(),
                });
            }
            if end > sent[row] {
                sent[row] = end;
                let _ = job.events.send(Event::Final(ids[..end].to_vec()));
            }
        }
        if !engine.step_delay.is_zero() {
            std::thread::sleep(engine.step_delay);
        }
        if live {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    };
    let mut live_rows = LiveRows {
        inner: backend,
        jobs: batch,
        filler: (0..vocab as u32)
            .find(|t| ![special.eos, special.eot, mask].contains(t))
            .unwrap_or(0),
        cached_rows: Vec::new(),
        ids: Vec::new(),
        attention: Vec::new(),
        logits: Vec::new(),
    };
    match generate(
        &mut live_rows,
        &params,
        c,
        workspace.as_workspace(),
        &mut on_step,
    ) {
        Ok(_) => {
            for (row, job) in batch.iter().enumerate() {
                let start = row * seq + prompt_len;
                let _ = job
                    .events
                    .send(Event::Done(Ok(canvas[start..start + gen_length].to_vec())));
            }
            Ok(())
        }
        Err(GenerateError::Cancelled) if engine.abort.load(Ordering::Relaxed) => {
            Err(Failure::server("the server is shutting down"))
        }
        Err(GenerateError::Cancelled) => {
            engine.cancelled.fetch_add(1, Ordering::Relaxed);
            Err(Failure::server("cancelled"))
        }
        // Parameters the library refused are the request's fault; a step that produced
        // NaN logits is the model's.
        Err(GenerateError::Invalid(e)) => Err(Failure {
            bad_request: !matches!(e, llada::core::Error::NanLogits { .. }),
            message: e.to_string(),
        }),
        Err(e) => Err(Failure::server(e.to_string())),
    }
}
