//! The asyncio side of exec: the running loop and its futures, hops from a loop to the pool,
//! sleeps and timeouts that wait on the loop.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::asyncio::CancelledError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use super::context::Context;
use super::coro::{block_on, py_await, StepFuture};
use super::pool::{self, Busy, InFlight, Owner};
use super::wait;
use super::Caller;
use crate::errors::step_timeout_error;

/// Where a pool thread's blocking calls run their async-only steps, when not on the bridged
/// loop: it is set for the pool threads doing a caller's work.
pub(crate) enum Home {
    /// The loop of the awaiting caller the thread works for (which is free: it awaits).
    Loop(Py<PyAny>),
    /// A loop of their own: the caller is the bridged loop's own thread, blocked.
    Private,
}

impl Home {
    fn clone_ref(&self, py: Python<'_>) -> Self {
        match self {
            Home::Loop(l) => Home::Loop(l.clone_ref(py)),
            Home::Private => Home::Private,
        }
    }

    /// Where the helpers of a caller on this thread go: this thread's home if it has one; a
    /// private loop if this thread is the bridged loop's (it is about to block); else none.
    pub(crate) fn for_helpers(py: Python<'_>) -> Option<Home> {
        if let Some(home) = HOME.with(|h| h.borrow().as_ref().map(|h| h.clone_ref(py))) {
            return Some(home);
        }
        let on_bridge = running_loop(py)
            .ok()
            .flatten()
            .is_some_and(|l| super::bridge::is_bridge(&l));
        on_bridge.then_some(Home::Private)
    }

    /// Runs `f` with `home` as this thread's.
    pub(crate) fn enter<R>(home: Option<&Home>, py: Python<'_>, f: impl FnOnce() -> R) -> R {
        let home = home.map(|h| h.clone_ref(py));
        let previous = HOME.with(|h| h.replace(home));
        let result = f();
        HOME.with(|h| *h.borrow_mut() = previous);
        result
    }

    /// This thread's home.
    pub(crate) fn current(py: Python<'_>) -> Option<Home> {
        HOME.with(|h| h.borrow().as_ref().map(|h| h.clone_ref(py)))
    }
}

thread_local! {
    static HOME: RefCell<Option<Home>> = const { RefCell::new(None) };
}

/// The loop of the awaiting caller this pool thread works for, if it works for one.
pub(crate) fn caller_loop(py: Python<'_>) -> Option<Py<PyAny>> {
    match Home::current(py)? {
        Home::Loop(l) => Some(l),
        Home::Private => None,
    }
}

/// The loop running on this thread, if any.
pub(crate) fn running_loop(py: Python<'_>) -> PyResult<Option<Bound<'_, PyAny>>> {
    static GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    // Where asyncio was never imported no loop runs: a sync program's first fan-out must not
    // import it (on a daemon thread, an import still running when the interpreter exits ends
    // the thread inside our frames, which aborts the process).
    if GET.get(py).is_none() && !imported(py, "asyncio")? {
        return Ok(None);
    }
    let found = GET.import(py, "asyncio", "_get_running_loop")?.call0()?;
    Ok((!found.is_none()).then_some(found))
}

/// Whether module `name` was imported (without importing it).
fn imported(py: Python<'_>, name: &str) -> PyResult<bool> {
    static MODULES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    MODULES.import(py, "sys", "modules")?.contains(name)
}

/// The running event loop and a new future of it (RuntimeError if no loop runs).
pub(crate) fn loop_future(py: Python<'_>) -> PyResult<(Bound<'_, PyAny>, Bound<'_, PyAny>)> {
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let event_loop = GET_RUNNING_LOOP
        .import(py, "asyncio", "get_running_loop")?
        .call0()?;
    let future = event_loop.call_method0(intern!(py, "create_future"))?;
    Ok((event_loop, future))
}

/// Sets `future`'s outcome unless it is done already (cancelled). Runs on its loop's thread.
#[pyfunction]
fn _settle(future: &Bound<'_, PyAny>, ok: bool, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = future.py();
    if future.call_method0(intern!(py, "done"))?.is_truthy()? {
        return Ok(());
    }
    let method = if ok {
        intern!(py, "set_result")
    } else {
        intern!(py, "set_exception")
    };
    future.call_method1(method, (value,)).map(drop)
}

/// Settles `future` (of `event_loop`) with `outcome`, from any thread: directly on the loop's
/// own thread, else through `call_soon_threadsafe`. A future done already (cancelled) is left
/// alone; a closed loop has nobody left to tell.
pub(crate) fn settle(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
    future: &Bound<'_, PyAny>,
    outcome: PyResult<Py<PyAny>>,
) {
    static SETTLE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let (ok, value) = match outcome {
        Ok(value) => (true, value),
        Err(err) => (false, err.into_value(py).into_any()),
    };
    let here = running_loop(py)
        .ok()
        .flatten()
        .is_some_and(|l| l.is(event_loop));
    if here {
        // An error here (a broken future) has nobody to go to either.
        let _ = _settle(future, ok, value.bind(py));
        return;
    }
    let Ok(settle) = SETTLE.get_or_try_init(py, || {
        wrap_pyfunction!(_settle, py).map(|f| f.into_any().unbind())
    }) else {
        return;
    };
    let _ = event_loop.call_method1(
        intern!(py, "call_soon_threadsafe"),
        (settle, future, ok, value),
    );
}

/// Sets a flag when dropped: a hop's job skips the step if its caller is gone before it starts.
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs `fut`, a future for a thread that may block, on a pool thread; the returned future is
/// for an awaiting caller, whose loop it waits on. The step runs in a copy of the caller's
/// context; if the caller stops waiting before it starts, it never starts. If a blocked thread
/// waits for this call (the bridged loop runs it for that thread), the job is that thread's.
pub(crate) fn on_pool(fut: StepFuture) -> StepFuture {
    Box::pin(async move {
        let abandoned = Arc::new(AtomicBool::new(false));
        let _abandon = Abandon(Arc::clone(&abandoned));
        let future = Python::attach(|py| -> PyResult<Py<PyAny>> {
            let (event_loop, future) = loop_future(py)?;
            let ctx = Context::capture(py)?;
            let hop = Hop {
                fut,
                ctx,
                event_loop: event_loop.unbind(),
                future: future.clone().unbind(),
                abandoned,
            };
            pool::submit(Box::new(move || hop.run()), Owner::current(py))
                .map_err(|_| pool::exhausted())?;
            Ok(future.unbind())
        })?;
        py_await(future).await
    })
}

struct Hop {
    fut: StepFuture,
    ctx: Context,
    event_loop: Py<PyAny>,
    future: Py<PyAny>,
    abandoned: Arc<AtomicBool>,
}

impl Hop {
    fn run(self) {
        // After shutdown began the loop that waits is going away with the process.
        let Some(_in_flight) = InFlight::enter() else {
            return;
        };
        Python::attach(move |py| {
            let Hop {
                fut,
                ctx,
                event_loop,
                future,
                abandoned,
            } = self;
            if abandoned.load(Ordering::Acquire) {
                return;
            }
            let outcome = {
                let _busy = Busy::enter();
                let home = Home::Loop(event_loop.clone_ref(py));
                Home::enter(Some(&home), py, || ctx.run(py, || block_on(fut)))
            };
            settle(py, event_loop.bind(py), future.bind(py), outcome);
        });
    }
}

/// Waits `duration` the caller's way: a thread sleeps with the GIL released, a task awaits an
/// asyncio timer.
pub(crate) async fn sleep(duration: Duration, caller: Caller) -> PyResult<()> {
    match caller {
        Caller::Thread => Python::attach(|py| wait::sleep(py, duration)),
        Caller::Loop => {
            static SLEEP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
            let coro = Python::attach(|py| -> PyResult<Py<PyAny>> {
                let seconds = duration.as_secs_f64();
                Ok(SLEEP
                    .import(py, "asyncio", "sleep")?
                    .call1((seconds,))?
                    .unbind())
            })?;
            py_await(coro).await.map(drop)
        }
    }
}

/// The timer of [`timeout_on_loop`]: at the deadline, cancels the task the step runs in.
#[pyclass(frozen)]
struct Expire {
    task: Py<PyAny>,
    expired: Arc<AtomicBool>,
}

#[pymethods]
impl Expire {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        self.expired.store(true, Ordering::Release);
        self.task
            .bind(py)
            .call_method0(intern!(py, "cancel"))
            .map(drop)
    }
}

/// Cancels a timer handle when dropped (the step ended, or its caller stopped waiting).
struct Disarm(Option<Py<PyAny>>);

impl Drop for Disarm {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            Python::attach(|py| {
                let _ = handle.bind(py).call_method0(intern!(py, "cancel"));
            });
        }
    }
}

/// A timeout's armed timer: the task it cancels, its handle, the task's cancel requests before.
struct Timer {
    task: Py<PyAny>,
    handle: Py<PyAny>,
    cancelling: i64,
}

/// Awaits `fut` on the running loop for at most `seconds`; then cancels it (its coroutine gets
/// CancelledError where it waits) and raises `StepTimeoutError` naming `step`. Like
/// `asyncio.timeout`, it cancels the current task and takes back only its own cancellation.
pub(crate) async fn timeout_on_loop(
    fut: StepFuture,
    seconds: f64,
    step: String,
) -> PyResult<Py<PyAny>> {
    static CURRENT_TASK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let expired = Arc::new(AtomicBool::new(false));
    let armed = Python::attach(|py| -> PyResult<Option<Timer>> {
        let task = CURRENT_TASK
            .import(py, "asyncio", "current_task")?
            .call0()?;
        if task.is_none() {
            // Driven outside any task: nothing can interrupt it, so there is no deadline.
            return Ok(None);
        }
        let cancelling = cancelling(&task)?;
        let event_loop = task.call_method0(intern!(py, "get_loop"))?;
        let expire = Expire {
            task: task.clone().unbind(),
            expired: Arc::clone(&expired),
        };
        let handle = event_loop.call_method1(intern!(py, "call_later"), (seconds, expire))?;
        Ok(Some(Timer {
            task: task.unbind(),
            handle: handle.unbind(),
            cancelling,
        }))
    })?;
    let Some(Timer {
        task,
        handle,
        cancelling: cancelling_before,
    }) = armed
    else {
        return fut.await;
    };
    let disarm = Disarm(Some(handle));
    let result = fut.await;
    drop(disarm);
    match result {
        Err(err) if expired.load(Ordering::Acquire) => Python::attach(|py| {
            if !err.is_instance_of::<CancelledError>(py) {
                return Err(err);
            }
            // Ours, unless someone else cancelled the task too (then it stays cancelled).
            if uncancel(task.bind(py))? > cancelling_before {
                return Err(err);
            }
            Err(step_timeout_error(py, &step, seconds))
        }),
        other => other,
    }
}

/// `task.cancelling()` (Python 3.11+; 0 before).
fn cancelling(task: &Bound<'_, PyAny>) -> PyResult<i64> {
    let py = task.py();
    match task.getattr(intern!(py, "cancelling")) {
        Ok(method) => method.call0()?.extract(),
        Err(_) => Ok(0),
    }
}

/// `task.uncancel()` (Python 3.11+); returns the cancellation requests left.
fn uncancel(task: &Bound<'_, PyAny>) -> PyResult<i64> {
    let py = task.py();
    match task.getattr(intern!(py, "uncancel")) {
        Ok(method) => method.call0()?.extract(),
        Err(_) => Ok(0),
    }
}
