//! The thread pool behind every sync step.
//!
//! Threads are made on demand up to [`SOFT_LIMIT`] for new work and kept [`IDLE_TIMEOUT`] when
//! idle. Each keeps one Python thread state for its whole life, so attaching to run a step is
//! only a GIL acquire (making and freeing a thread state per attach measured 2x slower
//! fan-outs).
//!
//! A thread that blocks for work it handed to the pool must not starve that work of threads
//! (a step that fans out inside itself, 2,000 times at once, would hold every thread while the
//! steps it waits for queue behind them). So every job says who waits for it ([`Owner`]):
//! when the pool is at its limit with every thread busy, a job its owner can run is handed to
//! that owner (`wait::Mailbox`), which runs it while it waits, and a job whose owner cannot
//! (it waits with a deadline) gets a thread beyond the soft limit, up to [`HARD_LIMIT`]; past
//! that the submitter gets the job back and raises [`exhausted`].
//!
// NOTE: an own pool rather than tokio's blocking pool: the fan-out needs "wake exactly one idle
// thread or start one" (the idle count below), permanent thread states, owners that run their
// own queued work, and a reset after fork(); tokio would bring a runtime for a queue and a
// spawner (DESIGN.md: both perform alike).

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use super::wait::Mailbox;
use crate::errors::FastLcelError;

/// Like tokio's blocking pool: enough for hundreds of steps blocked on IO at once. New work
/// waits for a thread once this many exist.
pub(crate) const SOFT_LIMIT: usize = 512;
/// Threads in all, those made for work that a caller waits for with a deadline included.
const HARD_LIMIT: usize = 4096;
/// [`HARD_LIMIT`], unless a test lowered it (`_debug_set_hard_limit`).
static HARD: AtomicUsize = AtomicUsize::new(HARD_LIMIT);
/// 10 s caused hundreds of respawns in a benchmark; 60 s did not.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Who waits for a job, which decides what happens when no pool thread can take it.
#[derive(Clone)]
pub(crate) enum Owner {
    /// Nobody blocks on it (a caller on an event loop awaits it): it waits for a thread.
    None,
    /// A thread that waits for it and runs it itself when no pool thread can.
    Waiter(Arc<Mailbox>),
    /// A thread that waits for it but cannot run it (it must give up at a deadline): it gets a
    /// thread at once, beyond the soft limit if need be.
    Escalate,
}

thread_local! {
    /// How deep this thread is in `Busy` guards (only the outermost counts).
    static BUSY_DEPTH: Cell<usize> = const { Cell::new(0) };
    /// Whether this thread is a pool thread.
    static WORKER: Cell<bool> = const { Cell::new(false) };
}

/// The value of [`OWNER_VAR`].
#[pyclass(frozen)]
struct OwnerCell {
    owner: Owner,
    /// The address of the pool it was set for: a forked child's pool (another) has no thread
    /// of the parent's.
    pool: usize,
}

fn pool_id() -> usize {
    ptr::from_ref(pool()) as usize
}

/// A `contextvars.ContextVar`: the owner of the jobs that code running on an event loop for a
/// blocked thread hands to the pool. Set in the context of the task that runs a blocked call
/// (`bridge::run_blocking`), it reaches every task that one starts, as asyncio copies contexts.
static OWNER_VAR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn owner_var(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    OWNER_VAR
        .get_or_try_init(py, || {
            let var = py
                .import("contextvars")?
                .getattr("ContextVar")?
                .call1(("fastlcel_pool_owner",))?;
            Ok::<_, PyErr>(var.unbind())
        })
        .map(|var| var.bind(py))
}

impl Owner {
    /// The owner of jobs started here, on an event loop: the blocked thread whose call this
    /// task runs (or one it started), if any.
    pub(crate) fn current(py: Python<'_>) -> Self {
        let found = owner_var(py).and_then(|var| var.call_method1("get", (py.None(),)));
        match found.ok().as_ref().and_then(|v| v.cast::<OwnerCell>().ok()) {
            Some(cell) if cell.get().pool == pool_id() => match &cell.get().owner {
                Owner::Waiter(mailbox) if mailbox.is_closed() => Owner::None,
                owner => owner.clone(),
            },
            _ => Owner::None,
        }
    }

    /// Makes `self` the owner of the jobs that code in the current context hands to the pool
    /// (call it in a fresh context: the setting stays in it).
    pub(crate) fn set_in_context(&self, py: Python<'_>) -> PyResult<()> {
        let cell = OwnerCell {
            owner: self.clone(),
            pool: pool_id(),
        };
        let cell = Py::new(py, cell)?;
        owner_var(py)?.call_method1("set", (cell,)).map(drop)
    }
}

/// The error of a job that could get no thread although a blocked caller waits for it.
pub(crate) fn exhausted() -> PyErr {
    FastLcelError::new_err(format!(
        "fastlcel could not start a thread for a step that a blocked caller waits for (a step \
         under a timeout, or an async step called from a running event loop's thread): \
         {} pool threads exist (its hard limit) or the OS refused a new thread. \
         Too many such waits are nested or run at once; bound them with \
         config={{'max_concurrency': n}}",
        HARD.load(SeqCst)
    ))
}

#[derive(Default)]
struct Queue {
    /// Jobs with a waiting owner, taken first.
    owned: VecDeque<(Job, Arc<Mailbox>)>,
    plain: VecDeque<Job>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.owned.is_empty() && self.plain.is_empty()
    }

    fn pop(&mut self) -> Option<Job> {
        self.owned
            .pop_front()
            .map(|(job, _)| job)
            .or_else(|| self.plain.pop_front())
    }
}

struct Pool {
    /// Jobs for threads that were counted idle; every send here was preceded by taking one
    /// from `idle`, so a job sent here always has a waiting thread.
    tx: Sender<Job>,
    rx: Receiver<Job>,
    /// Jobs no thread was claimed for; a thread takes them before it counts itself idle.
    queue: Mutex<Queue>,
    /// Threads blocked in `recv` that no submitter has claimed yet.
    idle: AtomicUsize,
    /// Threads inside user code (a step), as opposed to idle or between jobs.
    working: AtomicUsize,
    /// The pool's threads, at most [`SOFT_LIMIT`].
    threads: AtomicUsize,
    /// Threads made beyond them for one `Escalate` job each, which end with it; the two counts
    /// together stay within [`HARD_LIMIT`].
    extra: AtomicUsize,
}

impl Pool {
    fn new() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Self {
            tx,
            rx,
            queue: Mutex::new(Queue::default()),
            idle: AtomicUsize::new(0),
            working: AtomicUsize::new(0),
            threads: AtomicUsize::new(0),
            extra: AtomicUsize::new(0),
        }
    }

    fn claim_idle(&self) -> bool {
        self.idle
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Threads between jobs (neither idle nor in user code): each takes queued jobs before it
    /// idles or runs user code again.
    fn in_transit(&self) -> usize {
        let threads = self.threads.load(SeqCst);
        threads.saturating_sub(self.idle.load(SeqCst) + self.working.load(SeqCst))
    }

    /// Starts a thread if queued jobs have nobody to take them soon; at the soft limit, hands
    /// the jobs that have a waiting owner to it.
    fn spawn_if_stalled(&'static self) {
        if self.queue.lock().is_empty() || self.in_transit() > 0 {
            return;
        }
        if self.threads.fetch_add(1, SeqCst) < SOFT_LIMIT {
            if self.spawn(None).is_ok() {
                return;
            }
        } else {
            self.threads.fetch_sub(1, SeqCst);
        }
        if self.claim_idle() {
            // A thread went idle meanwhile: wake it to look at the queue.
            let _ = self.tx.send(Box::new(|| {}));
            return;
        }
        // No thread is coming: the owners run their jobs themselves.
        let owned = std::mem::take(&mut self.queue.lock().owned);
        for (job, mailbox) in owned {
            if let Err(job) = mailbox.deliver(job) {
                self.queue.lock().plain.push_back(job);
            }
        }
    }

    /// Starts a thread (already counted in `threads`) whose first job is `first`; on failure
    /// uncounts it and gives the job back.
    fn spawn(&'static self, first: Option<Job>) -> Result<(), Option<Job>> {
        let first = Arc::new(Mutex::new(first));
        let job = Arc::clone(&first);
        let spawned = std::thread::Builder::new()
            .name("fastlcel-worker".into())
            .spawn(move || worker(self, job.lock().take()));
        spawned.map(drop).map_err(|_| {
            // Out of OS threads: a queued job waits for a busy thread.
            self.threads.fetch_sub(1, SeqCst);
            first.lock().take()
        })
    }

    /// Runs `job` on a thread of its own beyond the soft limit, which ends with it; gives it
    /// back at the hard limit (or if the OS refuses a thread).
    fn spawn_extra(&'static self, job: Job) -> Result<(), Job> {
        if self.extra.fetch_add(1, SeqCst) + self.threads.load(SeqCst) >= HARD.load(SeqCst) {
            self.extra.fetch_sub(1, SeqCst);
            return Err(job);
        }
        let job = Arc::new(Mutex::new(Some(job)));
        let taken = Arc::clone(&job);
        let spawned = std::thread::Builder::new()
            .name("fastlcel-extra".into())
            .spawn(move || extra_worker(self, taken.lock().take()));
        spawned.map(drop).map_err(|_| {
            self.extra.fetch_sub(1, SeqCst);
            job.lock()
                .take()
                .expect("a thread that did not start did not take its job")
        })
    }
}

/// The current pool. A pool is never freed (after a fork the child leaks the parent's and makes
/// its own), so a reference to it lives as long as the process.
static POOL: AtomicPtr<Pool> = AtomicPtr::new(ptr::null_mut());

fn pool() -> &'static Pool {
    let p = POOL.load(SeqCst);
    if !p.is_null() {
        // SAFETY: non-null pointers in POOL come from Box::into_raw and are never freed.
        return unsafe { &*p };
    }
    let fresh = Box::into_raw(Box::new(Pool::new()));
    match POOL.compare_exchange(ptr::null_mut(), fresh, SeqCst, SeqCst) {
        // SAFETY: we just stored `fresh`, a leaked Box.
        Ok(_) => unsafe { &*fresh },
        Err(winner) => {
            // SAFETY: `fresh` was never shared; `winner` is a leaked Box like any in POOL.
            unsafe {
                drop(Box::from_raw(fresh));
                &*winner
            }
        }
    }
}

/// Runs `job` on a pool thread: an idle one if any; else the next thread to finish its job, if
/// one is between jobs (a fan-out of trivial steps re-waking a helper that is just finishing
/// must not start a thread per call); else a new thread. At the soft limit, `owner` decides
/// (see [`Owner`]); only an `Escalate` job can come back, when no thread can be had for it.
///
/// Every order below is SeqCst and pairs with one in `worker` or `Busy::enter`: whichever side
/// acts second sees the other, so a queued job is never left with every thread blocked.
pub(crate) fn submit(job: Job, owner: Owner) -> Result<(), Job> {
    let pool = pool();
    if pool.claim_idle() {
        // The receiver lives in `pool` forever, so the send cannot fail.
        let _ = pool.tx.send(job);
        return Ok(());
    }
    match owner {
        Owner::Escalate => return pool.spawn_extra(job),
        Owner::Waiter(mailbox) if !mailbox.is_closed() => {
            pool.queue.lock().owned.push_back((job, mailbox))
        }
        _ => pool.queue.lock().plain.push_back(job),
    }
    if pool.claim_idle() {
        // A thread went idle meanwhile: wake it to look at the queue.
        let _ = pool.tx.send(Box::new(|| {}));
        return Ok(());
    }
    pool.spawn_if_stalled();
    Ok(())
}

/// Marks a pool thread as inside user code while alive. Entering it, the thread makes sure that
/// queued jobs are not left waiting for it. Nested guards (a thread running a job it is owed,
/// inside a step) count once; on other threads it does nothing.
pub(crate) struct Busy(Option<&'static Pool>);

impl Busy {
    pub(crate) fn enter() -> Self {
        if !WORKER.with(Cell::get) {
            return Self(None);
        }
        let depth = BUSY_DEPTH.with(|d| d.replace(d.get() + 1));
        let pool = pool();
        if depth == 0 {
            pool.working.fetch_add(1, SeqCst);
        }
        pool.spawn_if_stalled();
        Self(Some(pool))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(pool) = self.0 {
            if BUSY_DEPTH.with(|d| d.replace(d.get() - 1)) == 1 {
                pool.working.fetch_sub(1, SeqCst);
            }
        }
    }
}

fn worker(pool: &'static Pool, first: Option<Job>) {
    WORKER.with(|w| w.set(true));
    let state = ThreadState::new();
    if let Some(job) = first {
        run_job(job);
    }
    loop {
        let next = pool.queue.lock().pop();
        if let Some(job) = next {
            run_job(job);
            continue;
        }
        pool.idle.fetch_add(1, SeqCst);
        // A job queued just before we counted ourselves idle: take it back from the queue.
        if !pool.queue.lock().is_empty() && pool.claim_idle() {
            continue;
        }
        match pool.rx.recv_timeout(IDLE_TIMEOUT) {
            Ok(job) => run_job(job),
            Err(RecvTimeoutError::Timeout) => {
                if pool.claim_idle() {
                    break;
                }
                // A submitter counted us idle and is sending a job: take it.
                if let Ok(job) = pool.rx.recv() {
                    run_job(job);
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    pool.threads.fetch_sub(1, SeqCst);
    drop(state);
}

/// A thread beyond the soft limit: its one job, then it ends (taking more work would block
/// more callers and grow the pool further). `Busy` does not count it: the soft limit's
/// arithmetic is about the pool's own threads.
fn extra_worker(pool: &'static Pool, job: Option<Job>) {
    let state = ThreadState::new();
    if let Some(job) = job {
        run_job(job);
    }
    drop(state);
    pool.extra.fetch_sub(1, SeqCst);
}

/// Runs a job, keeping its thread alive if it panics (jobs catch their own panics where they
/// can report them).
pub(crate) fn run_job(job: Job) {
    let _ = catch_unwind(AssertUnwindSafe(job));
}

/// The Python thread state a pool thread keeps for its life, created detached.
struct ThreadState(Option<(ffi::PyGILState_STATE, *mut ffi::PyThreadState)>);

impl ThreadState {
    fn new() -> Self {
        let Some(_guard) = InFlight::enter() else {
            return Self(None);
        };
        // SAFETY: the interpreter is initialized (this module is loaded) and not finalizing (the
        // in-flight guard holds off our atexit hook). Ensure creates this thread's state and takes
        // the GIL; SaveThread releases the GIL and keeps the state, so later `Python::attach`
        // calls only re-take the GIL.
        unsafe {
            let gstate = ffi::PyGILState_Ensure();
            let tstate = ffi::PyEval_SaveThread();
            Self(Some((gstate, tstate)))
        }
    }
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        let Some((gstate, tstate)) = self.0.take() else {
            return;
        };
        // After shutdown began the state is left to the interpreter's own cleanup: restoring it
        // could block on, or be killed by, finalization.
        let Some(_guard) = InFlight::enter() else {
            return;
        };
        // SAFETY: `tstate` is this thread's state saved by `new`; the guard keeps the interpreter
        // alive. Release with the counter from Ensure deletes the state and drops the GIL.
        unsafe {
            ffi::PyEval_RestoreThread(tstate);
            ffi::PyGILState_Release(gstate);
        }
    }
}

// Interpreter shutdown: a thread woken inside Python after finalization began is ended by
// CPython (3.10-3.13) with a forced unwind; through Rust frames it aborts the process ("FATAL:
// exception not rethrown") or, running destructors without the GIL, corrupts memory. So no
// thread runs Python code inside fastlcel's frames once finalization may begin: a thread holds an
// `InFlight` guard while it does (pool threads for their life in Python, any thread while it
// polls a step), our atexit hook sets SHUTDOWN and then waits (GIL released) until no guard is
// held, and a thread bumps IN_FLIGHT *before* checking SHUTDOWN, so either the hook sees it or
// it sees the flag and stays out of Python. A thread lends its guards back while it waits for
// other threads with the GIL released (`Lent`), so waiting never holds off exit.
static SHUTDOWN: AtomicBool = AtomicBool::new(false);
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The `InFlight` guards this thread holds.
    static IN_FLIGHT_HERE: Cell<usize> = const { Cell::new(0) };
}

/// Permission for a thread to enter Python inside fastlcel's frames; `None` once shutdown
/// began.
pub(crate) struct InFlight(());

impl InFlight {
    pub(crate) fn enter() -> Option<Self> {
        IN_FLIGHT.fetch_add(1, SeqCst);
        if SHUTDOWN.load(SeqCst) {
            IN_FLIGHT.fetch_sub(1, SeqCst);
            return None;
        }
        IN_FLIGHT_HERE.with(|n| n.set(n.get() + 1));
        Some(Self(()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT_HERE.with(|n| n.set(n.get() - 1));
        IN_FLIGHT.fetch_sub(1, SeqCst);
    }
}

/// Permission for an attached thread to run a step: a guard, or `None` where finalization waits
/// for the thread anyway (it holds a guard already, as the bridged loop's thread does while it
/// cancels its tasks, or it runs the atexit hook). Any other thread asking after shutdown began
/// (a daemon thread: non-daemon ones were joined before atexit) releases the GIL and never runs
/// again: the process is ending, and Python would end the thread at its next GIL acquire.
pub(crate) fn hold_off_exit() -> Option<InFlight> {
    if let Some(guard) = InFlight::enter() {
        return Some(guard);
    }
    if IN_FLIGHT_HERE.with(Cell::get) > 0 || is_exiting_thread() {
        return None;
    }
    Python::attach(|py| py.detach(park_forever))
}

fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

/// This thread's `InFlight` guards, handed back while it waits with the GIL released.
pub(crate) struct Lent(usize);

impl Lent {
    pub(crate) fn lend() -> Self {
        let held = IN_FLIGHT_HERE.with(|n| n.replace(0));
        if held > 0 {
            IN_FLIGHT.fetch_sub(held, SeqCst);
        }
        Self(held)
    }

    /// Takes the guards back before the thread attaches again. If shutdown began meanwhile, a
    /// thread other than the exiting one never attaches again (see [`hold_off_exit`]).
    pub(crate) fn resume(self) {
        if self.0 > 0 {
            IN_FLIGHT.fetch_add(self.0, SeqCst);
            IN_FLIGHT_HERE.with(|n| n.set(self.0));
        }
        if SHUTDOWN.load(SeqCst) && !is_exiting_thread() {
            if self.0 > 0 {
                IN_FLIGHT.fetch_sub(self.0, SeqCst);
            }
            park_forever();
        }
    }
}

pub(crate) fn shutting_down() -> bool {
    SHUTDOWN.load(SeqCst)
}

/// The thread that runs the atexit hook (the main thread), once shutdown began.
static EXITING_THREAD: Mutex<Option<std::thread::ThreadId>> = Mutex::new(None);

fn is_exiting_thread() -> bool {
    *EXITING_THREAD.lock() == Some(std::thread::current().id())
}

/// Registered with `atexit`: lets running steps finish, then keeps pool threads out of Python.
///
/// Steps not yet started never start. Running ones are waited for, as `concurrent.futures` does:
/// a pool thread woken inside Python after finalization began would be ended by CPython with a
/// forced unwind through Rust frames, which aborts the process. But a program dying of Ctrl-C
/// (an unhandled KeyboardInterrupt) waits only [`INTERRUPT_GRACE`], and a second Ctrl-C while
/// waiting ends any wait: then the process exits at once, skipping finalization (stdout, stderr
/// and logging are flushed first), with status 130.
#[pyfunction]
fn _shutdown(py: Python<'_>) -> PyResult<()> {
    const NOTE_AFTER: Duration = Duration::from_secs(1);
    const INTERRUPT_GRACE: Duration = Duration::from_millis(500);
    *EXITING_THREAD.lock() = Some(std::thread::current().id());
    SHUTDOWN.store(true, SeqCst);
    // Its tasks are cancelled and its thread ends: it is in flight until then.
    super::bridge::stop(py);
    let sys = py.import("sys")?;
    let interrupted = match sys.getattr("last_type") {
        Ok(t) => t.cast::<pyo3::types::PyType>().is_ok_and(|t| {
            t.is_subclass_of::<pyo3::exceptions::PyKeyboardInterrupt>()
                .unwrap_or(false)
        }),
        Err(_) => false,
    };
    let started = std::time::Instant::now();
    let mut noted = false;
    loop {
        let idle = py.detach(|| {
            for _ in 0..50 {
                if IN_FLIGHT.load(SeqCst) == 0 {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            false
        });
        if idle {
            return Ok(());
        }
        if (interrupted && started.elapsed() > INTERRUPT_GRACE) || py.check_signals().is_err() {
            return exit_now(py);
        }
        if !noted && started.elapsed() > NOTE_AFTER {
            noted = true;
            sys.getattr("stderr")?.call_method1(
                "write",
                ("fastlcel: waiting for running steps to finish before exit \
                  (press Ctrl-C again to exit now)\n",),
            )?;
        }
    }
}

/// Exits the process without finalization (which running pool threads would crash).
fn exit_now(py: Python<'_>) -> PyResult<()> {
    let sys = py.import("sys")?;
    if let Ok(logging) = sys.getattr("modules")?.get_item("logging") {
        let _ = logging.call_method0("shutdown");
    }
    for stream in ["stdout", "stderr"] {
        if let Ok(s) = sys.getattr(stream) {
            let _ = s.call_method0("flush");
        }
    }
    py.import("os")?.call_method1("_exit", (130,))?;
    Ok(())
}

/// Registered with `os.register_at_fork`: the child has none of the parent's threads, so it
/// starts an empty pool (the parent's is leaked: its locks may be held by threads that are gone).
#[pyfunction]
fn _after_fork_in_child() {
    POOL.store(Box::into_raw(Box::new(Pool::new())), SeqCst);
    IN_FLIGHT.store(0, SeqCst);
    super::bridge::forget_after_fork();
}

/// A test hook: lowers the pool's hard limit (threads in all), so that a test can reach it.
#[pyfunction]
fn _debug_set_hard_limit(threads: usize) {
    HARD.store(threads, SeqCst);
}

pub(crate) fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(_shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(_debug_set_hard_limit, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    py.import("atexit")?
        .call_method1("register", (m.getattr("_shutdown")?,))?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("after_in_child", m.getattr("_after_fork_in_child")?)?;
    py.import("os")?
        .call_method("register_at_fork", (), Some(&kwargs))?;
    Ok(())
}
