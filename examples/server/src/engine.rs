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
use std::time::Instant;

use llada::core::{GenerateParams, Remasking};
use llada::{Generated, Pipeline, Progress};
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
    /// The generation ended.
    Done(Result<Generated, String>),
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

    fn cancelled(&self) -> bool {
        self.events.is_closed()
    }
}

/// The queue was full: the request is refused with 503.
#[derive(Debug)]
pub(crate) struct QueueFull;

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
    pub(crate) fn new(capacity: usize, max_batch: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            capacity,
            max_batch: max_batch.max(1),
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
    pub(crate) fn submit(&self, job: Job) -> Result<(), QueueFull> {
        let mut state = self.lock();
        // Jobs whose client already left do not hold places.
        state.waiting.retain(|j| !j.cancelled());
        if state.closing || state.waiting.len() >= self.capacity {
            return Err(QueueFull);
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

    /// The next batch: the oldest live job and the later ones that can share its canvas.
    /// `None` once closed and empty.
    fn next_batch(&self) -> Option<Vec<Job>> {
        let mut state = self.lock();
        loop {
            state.waiting.retain(|j| !j.cancelled());
            if self.abort.load(Ordering::Relaxed) {
                for job in state.waiting.drain(..) {
                    let _ = job
                        .events
                        .send(Event::Done(Err("the server is shutting down".into())));
                }
            }
            if let Some(first) = state.waiting.pop_front() {
                let mut batch = vec![first];
                if batch[0].batchable() {
                    let mut i = 0;
                    while i < state.waiting.len() && batch.len() < self.max_batch {
                        let job = &state.waiting[i];
                        if job.batchable() && job.params == batch[0].params {
                            batch.extend(state.waiting.remove(i));
                        } else {
                            i += 1;
                        }
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
    while let Some(batch) = engine.next_batch() {
        engine.running.store(batch.len(), Ordering::Relaxed);
        let start = Instant::now();
        // A panic in the library would be a bug; it must not take the server down with it:
        // the batch gets an error and the next batch runs.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_batch(engine, &mut pipeline, &batch)
        }));
        engine.running.store(0, Ordering::Relaxed);
        engine.batches.fetch_add(1, Ordering::Relaxed);
        engine.rows.fetch_add(batch.len(), Ordering::Relaxed);
        engine.largest.fetch_max(batch.len(), Ordering::Relaxed);
        tracing::info!(
            rows = batch.len(),
            seconds = start.elapsed().as_secs_f64(),
            "batch done"
        );
        if outcome.is_err() {
            for job in &batch {
                let _ = job.events.send(Event::Done(Err(
                    "internal error: the generation panicked".into(),
                )));
            }
        }
    }
}

fn run_batch(engine: &Engine, pipeline: &mut Pipeline, batch: &[Job]) {
    let prompts: Vec<Vec<u32>> = batch.iter().map(|j| j.prompt_ids.clone()).collect();
    let params = batch[0].params;
    let mask = params.mask_id;
    // How many ids of each row have been sent as final.
    let mut sent = vec![0usize; batch.len()];
    let on_step = |progress: &Progress<'_>| {
        if engine.abort.load(Ordering::Relaxed) {
            return ControlFlow::Break(());
        }
        let mut live = false;
        for (row, job) in batch.iter().enumerate() {
            if job.cancelled() {
                continue;
            }
            live = true;
            let ids = progress.output_ids(row);
            let mut end = ids.iter().position(|&t| t == mask).unwrap_or(ids.len());
            // With LLaDA2.1's editing a committed token of the current block may still be
            // rewritten: only finished blocks are final.
            if params.editing.is_some() {
                end = end.min(progress.block_positions().start);
            }
            // The canvas first: the final ids may complete the answer, after which the
            // request reads nothing more.
            if job.visual {
                let _ = job.events.send(Event::Canvas {
                    text: progress.partial_text(row),
                    step: progress.step().0,
                    forward_passes: progress.forward_passes(),
                });
            }
            if end > sent[row] {
                sent[row] = end;
                let _ = job.events.send(Event::Final(ids[..end].to_vec()));
            }
        }
        if live {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    };
    match pipeline.generate_ids(&prompts, &params, on_step) {
        Ok(rows) => {
            for (job, generated) in batch.iter().zip(rows) {
                let _ = job.events.send(Event::Done(Ok(generated)));
            }
        }
        Err(e) => {
            let message = match e {
                llada::Error::Cancelled if engine.abort.load(Ordering::Relaxed) => {
                    "the server is shutting down".to_string()
                }
                llada::Error::Cancelled => {
                    engine.cancelled.fetch_add(1, Ordering::Relaxed);
                    "cancelled".to_string()
                }
                e => llada::report(&e),
            };
            for job in batch {
                let _ = job.events.send(Event::Done(Err(message.clone())));
            }
        }
    }
}
