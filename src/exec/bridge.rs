//! The bridged event loop: how a sync caller runs a step that has only an async implementation.
//!
//! One fastlcel-owned loop runs in a background thread, started on first use, stopped at exit,
//! made anew in a forked child. A blocked caller hands it the step's future with one
//! `call_soon_threadsafe` and waits (GIL released, Ctrl-C noticed) for the task's outcome; on
//! its deadline or on Ctrl-C it cancels the task. A pool thread working for an awaiting caller
//! uses that caller's loop instead (the step may use objects bound to it). A thread that is
//! itself running the target loop cannot wait for it: the step then runs on a private loop on a
//! pool thread.
//!
// NOTE: this hands a Rust future to the loop directly. `asyncio.run(f(x))` measured ~82 µs per
// call here, as did `run_coroutine_threadsafe` on a loop thread (a coroutine wrapper, a
// concurrent Future and its callbacks); pyo3-async-runtimes would add a Rust runtime and a
// oneshot channel per call on top of the same loop hop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use pyo3::exceptions::asyncio::CancelledError;
use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;

use super::aio::{running_loop, Home};
use super::context::{self, Context};
use super::coro::{Coroutine, StepFuture};
use super::pool::{self, Busy, InFlight, Owner};
use super::wait::{self, Mailbox, Signal};
use crate::errors::FastLcelError;

/// The bridged loop, once started (stored by its thread).
static BRIDGE: Mutex<Option<Py<PyAny>>> = Mutex::new(None);
/// Held (GIL released) by the one caller that starts the bridge thread.
static STARTING: Mutex<()> = Mutex::new(());

/// The bridged loop, started on first use.
fn bridge_loop(py: Python<'_>) -> PyResult<Py<PyAny>> {
    if pool::shutting_down() {
        return Err(shutting_down());
    }
    if let Some(event_loop) = BRIDGE.lock().as_ref() {
        return Ok(event_loop.clone_ref(py));
    }
    py.detach(|| {
        let _starting = STARTING.lock();
        if BRIDGE.lock().is_some() {
            return Ok(());
        }
        let (tx, rx) = crossbeam_channel::bounded::<Result<(), String>>(1);
        std::thread::Builder::new()
            .name("fastlcel-loop".into())
            .spawn(move || bridge_main(&tx))
            .map_err(|e| format!("cannot start fastlcel's event loop thread: {e}"))?;
        rx.recv()
            .unwrap_or_else(|_| Err("fastlcel's event loop thread ended at start".to_owned()))
    })
    .map_err(FastLcelError::new_err)?;
    BRIDGE
        .lock()
        .as_ref()
        .map(|l| l.clone_ref(py))
        .ok_or_else(shutting_down)
}

fn shutting_down() -> PyErr {
    FastLcelError::new_err("the interpreter is shutting down; fastlcel's event loop is stopped")
}

/// The bridge thread: makes the loop, publishes it, runs it until [`stop`], then closes it.
fn bridge_main(started: &crossbeam_channel::Sender<Result<(), String>>) {
    // Held for the thread's life: the atexit hook stops the loop, then waits for this.
    let Some(_in_flight) = InFlight::enter() else {
        let _ = started.send(Err("the interpreter is shutting down".to_owned()));
        return;
    };
    Python::attach(|py| {
        let made = py
            .import("asyncio")
            .and_then(|asyncio| asyncio.call_method0("new_event_loop"));
        let event_loop = match made {
            Ok(l) => l,
            Err(err) => {
                let _ = started.send(Err(format!("cannot make fastlcel's event loop: {err}")));
                return;
            }
        };
        *BRIDGE.lock() = Some(event_loop.clone().unbind());
        let _ = started.send(Ok(()));
        // A task whose step raised KeyboardInterrupt or SystemExit re-raises it out of the loop
        // (asyncio does so, its outcome already set): run on, so that its done callback hands it
        // to the waiting caller. Only `stop` ends the loop.
        loop {
            let ran = event_loop.call_method0(intern!(py, "run_forever"));
            let stopped = !BRIDGE.lock().as_ref().is_some_and(|l| l.is(&event_loop));
            match ran {
                // A step's, taken by its caller: the loop runs on.
                Err(err) if !stopped && !err.is_instance_of::<PyException>(py) => continue,
                // The loop itself failed: nothing can run on it any more.
                Err(err) => err.write_unraisable(py, Some(&event_loop)),
                Ok(_) if stopped => {}
                Ok(_) => continue,
            }
            break;
        }
        let _ = event_loop.call_method0(intern!(py, "close"));
    });
}

/// Stops the bridged loop (at exit): its tasks are cancelled and given a moment to unwind.
pub(crate) fn stop(py: Python<'_>) {
    let Some(event_loop) = BRIDGE.lock().take() else {
        return;
    };
    let stopper = match py
        .import("fastlcel._core")
        .and_then(|m| m.getattr("_stop_loop"))
    {
        Ok(f) => f,
        Err(_) => return,
    };
    let _ = event_loop
        .bind(py)
        .call_method1(intern!(py, "call_soon_threadsafe"), (stopper, &event_loop));
}

/// Runs on the bridged loop at exit: cancels its tasks, lets them unwind, stops the loop.
#[pyfunction]
fn _stop_loop(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<()> {
    let asyncio = py.import("asyncio")?;
    let tasks = asyncio.call_method1("all_tasks", (event_loop,))?;
    for task in tasks.try_iter()? {
        task?.call_method0(intern!(py, "cancel"))?;
    }
    // Cancelled tasks run their handlers on the next iterations; stop after those.
    let stop = event_loop.getattr(intern!(py, "stop"))?;
    event_loop.call_method1(intern!(py, "call_later"), (0.05, stop))?;
    Ok(())
}

/// Registered with `os.register_at_fork`: the child has no bridge thread; it starts its own on
/// first use (the parent's loop object is leaked: its thread is gone).
pub(crate) fn forget_after_fork() {
    if STARTING.is_locked() {
        // SAFETY: only the forking thread exists in the child; the thread that held the lock
        // in the parent is gone and will never release it.
        unsafe { STARTING.force_unlock() };
    }
    std::mem::forget(BRIDGE.lock().take());
}

/// Where a blocked caller's step runs.
enum Target {
    Loop(Py<PyAny>),
    /// The caller is that loop's own thread: a fresh loop on a pool thread.
    Private,
}

fn target(py: Python<'_>) -> PyResult<Target> {
    let event_loop = match Home::for_helpers(py) {
        Some(Home::Loop(l)) => l,
        Some(Home::Private) => return Ok(Target::Private),
        None => bridge_loop(py)?,
    };
    let here = running_loop(py)?.is_some_and(|l| l.is(&event_loop));
    Ok(if here {
        Target::Private
    } else {
        Target::Loop(event_loop)
    })
}

/// Whether `event_loop` is the bridged loop.
pub(crate) fn is_bridge(event_loop: &Bound<'_, PyAny>) -> bool {
    BRIDGE.lock().as_ref().is_some_and(|l| event_loop.is(l))
}

/// One blocked call's state, shared by the waiting thread and the loop.
#[derive(Default)]
struct Blocked {
    done: Arc<Signal>,
    outcome: Mutex<Option<PyResult<Py<PyAny>>>>,
    /// The task and its loop once started; `cancelled` stops it, or keeps it from starting.
    task: Mutex<Option<(Py<PyAny>, Py<PyAny>)>>,
    cancelled: AtomicBool,
}

impl Blocked {
    fn finish(&self, outcome: PyResult<Py<PyAny>>) {
        *self.outcome.lock() = Some(outcome);
        self.done.set();
    }

    /// Stops the step: its task is cancelled on its loop (from this, another thread).
    fn cancel(&self, py: Python<'_>) {
        self.cancelled.store(true, Ordering::SeqCst);
        let task = self.task.lock().take();
        if let Some((event_loop, task)) = task {
            let _ = event_loop.bind(py).call_method1(
                intern!(py, "call_soon_threadsafe"),
                (task.bind(py).getattr(intern!(py, "cancel")).ok(),),
            );
        }
    }
}

/// Runs `fut` (a future for an awaiting caller) to its end from a thread that may block: on
/// the caller's loop or the bridged one. `Ok(None)` if `deadline` passes first; then the step's
/// task is cancelled.
///
/// The jobs the step hands to the pool (its sync steps) belong to this thread: it runs them
/// itself while it waits when the pool has no thread for them, or, when it must give up at a
/// deadline, they get a thread beyond the pool's soft limit (see `pool::Owner`).
pub(crate) fn run_blocking(
    py: Python<'_>,
    fut: StepFuture,
    deadline: Option<Instant>,
) -> PyResult<Option<Py<PyAny>>> {
    let blocked = Arc::new(Blocked::default());
    let mailbox = deadline.is_none().then(Mailbox::new);
    let owner = match &mailbox {
        Some(mailbox) => Owner::Waiter(Arc::clone(mailbox)),
        None => Owner::Escalate,
    };
    let start = Start {
        fut: Mutex::new(Some(fut)),
        blocked: Arc::clone(&blocked),
        ctx: Context::capture(py)?,
        owner,
    };
    match target(py)? {
        Target::Loop(event_loop) => {
            event_loop
                .bind(py)
                .call_method1(intern!(py, "call_soon_threadsafe"), (start,))?;
        }
        Target::Private => {
            // This thread runs the loop the step would need: a thread of its own, at once.
            let start = Py::new(py, start)?;
            if pool::submit(Box::new(move || run_private(start)), Owner::Escalate).is_err() {
                return Err(pool::exhausted());
            }
        }
    }
    let waited = match &mailbox {
        Some(mailbox) => {
            let waited = wait::wait_running(py, &blocked.done, mailbox).map(|()| true);
            mailbox.close();
            waited
        }
        None => wait::wait_until(py, &blocked.done, deadline),
    };
    match waited {
        Ok(true) => blocked
            .outcome
            .lock()
            .take()
            .unwrap_or_else(|| Err(FastLcelError::new_err("fastlcel: bridged result missing")))
            .map(Some),
        Ok(false) => {
            blocked.cancel(py);
            Ok(None)
        }
        Err(interrupt) => {
            blocked.cancel(py);
            Err(interrupt)
        }
    }
}

/// A thread-mode future of `fut` (an awaiting caller's future), run with [`run_blocking`].
pub(crate) fn on_home_loop(fut: StepFuture) -> StepFuture {
    Box::pin(async move {
        Python::attach(|py| {
            run_blocking(py, fut, None)?.ok_or_else(|| {
                FastLcelError::new_err("fastlcel: bridged call ended without result")
            })
        })
    })
}

/// A private loop on a pool thread, for a caller that is the target loop's own thread.
fn run_private(start: Py<Start>) {
    let Some(_in_flight) = InFlight::enter() else {
        return;
    };
    Python::attach(|py| {
        let _busy = Busy::enter();
        let blocked = Arc::clone(&start.get().blocked);
        let run = || -> PyResult<()> {
            let event_loop = py.import("asyncio")?.call_method0("new_event_loop")?;
            let started = start.get().start(&event_loop);
            let task = blocked.task.lock().as_ref().map(|(_, t)| t.clone_ref(py));
            if let (Ok(()), Some(task)) = (&started, task) {
                // Its outcome reaches `blocked` through the task's done callback; a
                // KeyboardInterrupt or SystemExit of the step comes out of the loop before that
                // callback runs: then the task's outcome is taken here.
                let ran = event_loop.call_method1(intern!(py, "run_until_complete"), (&task,));
                if ran.is_err() && !blocked.done.is_set() {
                    let done = task.bind(py).call_method0(intern!(py, "done"))?;
                    if done.is_truthy()? {
                        let outcome = task.bind(py).call_method0(intern!(py, "result"));
                        blocked.finish(outcome.map(Bound::unbind));
                    }
                }
            }
            event_loop.call_method0(intern!(py, "close"))?;
            started
        };
        if let Err(err) = run() {
            if !blocked.done.is_set() {
                blocked.finish(Err(err));
            }
        }
    });
}

/// Scheduled on the target loop: starts the step as a task there.
#[pyclass(frozen)]
struct Start {
    fut: Mutex<Option<StepFuture>>,
    blocked: Arc<Blocked>,
    ctx: Context,
    /// The blocked thread, as the owner of the jobs the task and those it starts hand to the
    /// pool.
    owner: Owner,
}

impl Start {
    fn start(&self, event_loop: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = event_loop.py();
        let Some(fut) = self.fut.lock().take() else {
            return Ok(());
        };
        if self.blocked.cancelled.load(Ordering::SeqCst) {
            self.blocked.finish(Err(CancelledError::new_err(())));
            return Ok(());
        }
        let coro = Py::new(py, Coroutine::for_task(fut))?;
        // The task copies the current context: the caller's, as a fresh copy.
        let task = context::enter(&self.ctx.fresh(py)?, || {
            self.owner.set_in_context(py)?;
            event_loop.call_method1(intern!(py, "create_task"), (coro,))
        })?;
        let done = Finish {
            blocked: Arc::clone(&self.blocked),
        };
        task.call_method1(intern!(py, "add_done_callback"), (done,))?;
        *self.blocked.task.lock() = Some((event_loop.clone().unbind(), task.clone().unbind()));
        if self.blocked.cancelled.load(Ordering::SeqCst) {
            task.call_method0(intern!(py, "cancel"))?;
        }
        Ok(())
    }
}

#[pymethods]
impl Start {
    fn __call__(&self, py: Python<'_>) {
        let started = running_loop(py)
            .and_then(|l| l.ok_or_else(|| FastLcelError::new_err("no running loop")))
            .and_then(|l| self.start(&l));
        if let Err(err) = started {
            self.blocked.finish(Err(err));
        }
    }
}

/// The step's task is done: hand its outcome to the waiting thread.
#[pyclass(frozen)]
struct Finish {
    blocked: Arc<Blocked>,
}

#[pymethods]
impl Finish {
    fn __call__(&self, py: Python<'_>, task: &Bound<'_, PyAny>) {
        let outcome = task.call_method0(intern!(py, "result")).map(Bound::unbind);
        self.blocked.finish(outcome);
    }
}

pub(crate) fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_stop_loop, m)?)
}
