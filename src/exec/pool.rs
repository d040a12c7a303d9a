//! The thread pool behind every sync step.
//!
//! Threads are made on demand up to [`MAX_THREADS`] and kept [`IDLE_TIMEOUT`] when idle. Each
//! keeps one Python thread state for its whole life, so attaching to run a step is only a GIL
//! acquire (making and freeing a thread state per attach measured 2x slower fan-outs).
//!
// NOTE: an own pool rather than tokio's blocking pool: the fan-out needs "wake exactly one idle
// thread or start one" (the idle count below), permanent thread states and a reset after
// fork(); tokio would bring a runtime for a queue and a spawner (DESIGN.md: both perform alike).

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use pyo3::ffi;
use pyo3::prelude::*;

/// Like tokio's blocking pool: enough for hundreds of steps blocked on IO at once.
pub(crate) const MAX_THREADS: usize = 512;
/// 10 s caused hundreds of respawns in a benchmark; 60 s did not.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    /// Jobs for threads that were counted idle; every send here was preceded by taking one
    /// from `idle`, so a job sent here always has a waiting thread.
    tx: Sender<Job>,
    rx: Receiver<Job>,
    /// Jobs no thread was claimed for; a thread takes them before it counts itself idle.
    queue: Mutex<VecDeque<Job>>,
    /// Threads blocked in `recv` that no submitter has claimed yet.
    idle: AtomicUsize,
    /// Threads inside user code (a step), as opposed to idle or between jobs.
    working: AtomicUsize,
    threads: AtomicUsize,
}

impl Pool {
    fn new() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Self {
            tx,
            rx,
            queue: Mutex::new(VecDeque::new()),
            idle: AtomicUsize::new(0),
            working: AtomicUsize::new(0),
            threads: AtomicUsize::new(0),
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

    /// Starts a thread if queued jobs have nobody to take them soon.
    fn spawn_if_stalled(&'static self) {
        if self.queue.lock().is_empty() || self.in_transit() > 0 {
            return;
        }
        if self.threads.fetch_add(1, SeqCst) >= MAX_THREADS {
            self.threads.fetch_sub(1, SeqCst);
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("fastlcel-worker".into())
            .spawn(move || worker(self));
        if spawned.is_err() {
            // Out of OS threads: the queued job waits for a busy thread.
            self.threads.fetch_sub(1, SeqCst);
        }
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
/// must not start a thread per call); else a new thread.
///
/// Every order below is SeqCst and pairs with one in `worker` or `Busy::enter`: whichever side
/// acts second sees the other, so a queued job is never left with every thread blocked.
pub(crate) fn submit(job: Job) {
    let pool = pool();
    if pool.claim_idle() {
        // The receiver lives in `pool` forever, so the send cannot fail.
        let _ = pool.tx.send(job);
        return;
    }
    pool.queue.lock().push_back(job);
    if pool.claim_idle() {
        // A thread went idle meanwhile: wake it to look at the queue.
        let _ = pool.tx.send(Box::new(|| {}));
        return;
    }
    pool.spawn_if_stalled();
}

/// Marks a pool thread as inside user code while alive. Entering it, the thread makes sure that
/// queued jobs are not left waiting for it.
pub(crate) struct Busy(&'static Pool);

impl Busy {
    pub(crate) fn enter() -> Self {
        let pool = pool();
        pool.working.fetch_add(1, SeqCst);
        pool.spawn_if_stalled();
        Self(pool)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.working.fetch_sub(1, SeqCst);
    }
}

fn worker(pool: &'static Pool) {
    let state = ThreadState::new();
    loop {
        let next = pool.queue.lock().pop_front();
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

fn run_job(job: Job) {
    // Jobs catch their own panics where they can report them; this keeps the thread alive.
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

pub(crate) fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(_shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    py.import("atexit")?
        .call_method1("register", (m.getattr("_shutdown")?,))?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("after_in_child", m.getattr("_after_fork_in_child")?)?;
    py.import("os")?
        .call_method("register_at_fork", (), Some(&kwargs))?;
    Ok(())
}
