//! A small fork-join pool that allocates nothing per call: `n − 1` persistent workers plus the
//! calling thread, each with its own scratch value, and tasks handed out by an atomic counter.
//!
//! A general pool (rayon) would do, but its injector queue allocates as jobs arrive, and the
//! forward pass must not allocate once warm. Calls must not nest.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

type Job<S> = dyn Fn(usize, &mut S) + Sync;

/// Below this much work (multiply-adds, or elements for row-wise passes) a job runs on the
/// calling thread: a round trip to the workers costs tens of microseconds.
pub(crate) const INLINE_WORK: usize = 1 << 18;

/// A lifetime-erased pointer to the job of the current round.
struct JobPtr<S: 'static>(*const Job<S>);

// SAFETY: the pointee is `Sync`, and `Pool::run` keeps it alive until every worker has
// finished the round (it waits for them before returning, also when unwinding).
unsafe impl<S> Send for JobPtr<S> {}

impl<S> Clone for JobPtr<S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for JobPtr<S> {}

/// How long a thread spins (checking an atomic) before it sleeps on a condition variable, in
/// spin-loop hints: tens of microseconds, the gap between two rounds of a forward pass, so
/// consecutive rounds do not pay a sleep and a wake-up each.
const SPIN: usize = 4000;

struct State<S: 'static> {
    round: u64,
    job: Option<JobPtr<S>>,
    tasks: usize,
    panic: Option<Box<dyn std::any::Any + Send>>,
    shutdown: bool,
}

struct Shared<S: 'static> {
    state: Mutex<State<S>>,
    start: Condvar,
    finished: Condvar,
    next_task: AtomicUsize,
    /// The latest round (mirrors `State::round`, for spinning without the lock).
    published: AtomicU64,
    /// Workers still in the current round.
    busy: AtomicUsize,
    shutdown: AtomicBool,
    scratch: Vec<Mutex<S>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The pool. Thread 0 is the caller of [`Pool::run`]; workers are threads `1..threads`.
pub(crate) struct Pool<S: Send + 'static> {
    shared: Arc<Shared<S>>,
    workers: Vec<JoinHandle<()>>,
}

impl<S: Send + 'static> Pool<S> {
    /// Starts `scratch.len() − 1` workers; `scratch[t]` belongs to thread `t`.
    pub(crate) fn new(scratch: Vec<S>) -> std::io::Result<Self> {
        let threads = scratch.len().max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                round: 0,
                job: None,
                tasks: 0,
                panic: None,
                shutdown: false,
            }),
            start: Condvar::new(),
            finished: Condvar::new(),
            next_task: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            scratch: scratch.into_iter().map(Mutex::new).collect(),
        });
        let mut workers = Vec::with_capacity(threads - 1);
        for t in 1..threads {
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("llada-ndarray-{t}"))
                .spawn(move || worker(&shared, t))?;
            workers.push(handle);
        }
        Ok(Self { shared, workers })
    }

    /// Calls `f` on every thread's scratch, between runs (to size it).
    pub(crate) fn for_each_scratch(&self, mut f: impl FnMut(&mut S)) {
        for scratch in &self.shared.scratch {
            f(&mut lock(scratch));
        }
    }

    /// Number of threads, the caller included.
    pub(crate) fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Like [`run`](Self::run), but on the calling thread alone when `work` (in any unit) is
    /// below [`INLINE_WORK`]: waking the workers costs more than small jobs save.
    pub(crate) fn run_sized(&self, tasks: usize, work: usize, f: &(dyn Fn(usize, &mut S) + Sync)) {
        if work < INLINE_WORK {
            self.run_inline(tasks, f);
        } else {
            self.run(tasks, f);
        }
    }

    fn run_inline(&self, tasks: usize, f: &(dyn Fn(usize, &mut S) + Sync)) {
        let mut scratch = lock(&self.shared.scratch[0]);
        for task in 0..tasks {
            f(task, &mut scratch);
        }
    }

    /// Runs `f(task, scratch)` for every task in `0..tasks` across the threads and returns when
    /// all are done. A panic in any task is resumed here after every thread has stopped.
    pub(crate) fn run(&self, tasks: usize, f: &(dyn Fn(usize, &mut S) + Sync)) {
        if tasks == 0 {
            return;
        }
        if self.workers.is_empty() || tasks == 1 {
            let mut scratch = lock(&self.shared.scratch[0]);
            for task in 0..tasks {
                f(task, &mut scratch);
            }
            return;
        }
        // SAFETY: only the lifetime is erased; `Round::drop` below waits until no worker can
        // touch the job any more, before `f` goes out of scope, even if this thread panics.
        let job: *const Job<S> = unsafe {
            std::mem::transmute::<&(dyn Fn(usize, &mut S) + Sync + '_), &'static Job<S>>(f)
        };
        {
            let mut state = lock(&self.shared.state);
            self.shared.next_task.store(0, Ordering::SeqCst);
            state.job = Some(JobPtr(job));
            state.tasks = tasks;
            state.round += 1;
            self.shared.busy.store(self.workers.len(), Ordering::SeqCst);
            self.shared.published.store(state.round, Ordering::SeqCst);
        }
        self.shared.start.notify_all();
        let round = Round {
            shared: &self.shared,
        };
        {
            let mut scratch = lock(&self.shared.scratch[0]);
            run_tasks(&self.shared, tasks, f, &mut scratch);
        }
        drop(round);
        if let Some(payload) = lock(&self.shared.state).panic.take() {
            resume_unwind(payload);
        }
    }
}

/// Waits for the workers of the current round when dropped.
struct Round<'a, S: 'static> {
    shared: &'a Shared<S>,
}

impl<S> Drop for Round<'_, S> {
    fn drop(&mut self) {
        let shared = self.shared;
        for _ in 0..SPIN {
            if shared.busy.load(Ordering::SeqCst) == 0 {
                break;
            }
            std::hint::spin_loop();
        }
        let mut state = lock(&shared.state);
        while shared.busy.load(Ordering::SeqCst) > 0 {
            state = shared
                .finished
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.job = None;
    }
}

fn run_tasks<S>(
    shared: &Shared<S>,
    tasks: usize,
    f: &(dyn Fn(usize, &mut S) + Sync + '_),
    scratch: &mut S,
) {
    loop {
        let task = shared.next_task.fetch_add(1, Ordering::SeqCst);
        if task >= tasks {
            return;
        }
        f(task, scratch);
    }
}

fn worker<S: Send>(shared: &Shared<S>, index: usize) {
    let mut seen = 0;
    loop {
        for _ in 0..SPIN {
            if shared.published.load(Ordering::SeqCst) != seen
                || shared.shutdown.load(Ordering::SeqCst)
            {
                break;
            }
            std::hint::spin_loop();
        }
        let (job, tasks) = {
            let mut state = lock(&shared.state);
            while state.round == seen && !state.shutdown {
                state = shared
                    .start
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.shutdown {
                return;
            }
            seen = state.round;
            match state.job {
                Some(job) => (job, state.tasks),
                None => continue,
            }
        };
        let result = {
            let mut scratch = lock(&shared.scratch[index]);
            // SAFETY: the job outlives the round (see `Pool::run`).
            let f = unsafe { &*job.0 };
            catch_unwind(AssertUnwindSafe(|| {
                run_tasks(shared, tasks, f, &mut scratch)
            }))
        };
        if let Err(payload) = result {
            lock(&shared.state).panic.get_or_insert(payload);
            // Let the other threads skip the remaining tasks.
            shared.next_task.store(usize::MAX / 2, Ordering::SeqCst);
        }
        if shared.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            // Under the lock, so a caller about to wait cannot miss the wake-up.
            let _state = lock(&shared.state);
            shared.finished.notify_all();
        }
    }
}

impl<S: Send + 'static> Drop for Pool<S> {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.start.notify_all();
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_with_its_threads_scratch() {
        let pool = Pool::new(vec![0usize; 3]).unwrap();
        let hits: Vec<AtomicUsize> = (0..100).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..50 {
            pool.run(100, &|task, count: &mut usize| {
                hits[task].fetch_add(1, Ordering::SeqCst);
                *count += 1;
            });
        }
        assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 50));
        let total: usize = pool.shared.scratch.iter().map(|s| *lock(s)).sum();
        assert_eq!(total, 5000);
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_pool_survives() {
        let pool = Pool::new(vec![(); 2]).unwrap();
        let result = catch_unwind(AssertUnwindSafe(|| {
            pool.run(8, &|task, _| assert_ne!(task, 5, "task five fails"));
        }));
        assert!(result.is_err());
        let count = AtomicUsize::new(0);
        pool.run(8, &|_, _| {
            count.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(count.load(Ordering::SeqCst), 8);
    }
}
