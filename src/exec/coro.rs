//! Rust futures as Python coroutines, and Python awaitables awaited inside Rust futures.
//!
//! An awaited runnable is a Rust future ([`StepFuture`]) driven by a [`Coroutine`]: the event
//! loop's task calls `send`/`throw` on it exactly as on a Python coroutine, and each call polls
//! the future once. Inside, [`PyAwait`] awaits a Python awaitable the way `await` does: it passes
//! the sent value (or thrown exception) to the awaitable's iterator and hands what that iterator
//! yields (a future of the loop) up to the task. So a sequential chain of async steps runs as one
//! task with no Python coroutine or Task per step; tasks are made only where steps run at once.
//!
//! The same futures also run on a thread that may block ([`block_on`]): then every wait inside
//! is a blocking one, the future is ready at its first poll, and awaiting a Python awaitable is
//! an error (exec never asks for one there).
//!
// NOTE: pyo3-async-runtimes converts between Rust and Python futures through a Rust runtime and
// done callbacks (`into_future` / `future_into_py`): every await of a Python awaitable becomes a
// Task plus a oneshot channel, 21-47 µs per coroutine against asyncio.gather's 11 (DESIGN.md).
// Driving the Python iterator from the poll costs one `PyIter_Send` per resumption.

use std::cell::RefCell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};

use parking_lot::Mutex;
use pyo3::exceptions::{
    PyGeneratorExit, PyRuntimeError, PyStopIteration, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyType;
use pyo3::{ffi, intern};

use super::context::{self, Context};
use crate::errors::{panic_to_pyerr, FastLcelError};

/// What runs a step: a Rust future of its output.
pub(crate) type StepFuture = Pin<Box<dyn Future<Output = PyResult<Py<PyAny>>> + Send>>;

/// How a suspended coroutine is resumed.
enum Resume {
    Send(Py<PyAny>),
    Throw(PyErr),
}

/// The exchange between a driving [`Coroutine`] and the [`PyAwait`] it is suspended in.
struct Io {
    /// What the coroutine was resumed with; taken by the first `PyAwait` polled.
    input: Option<Resume>,
    /// What that `PyAwait`'s iterator yielded, for the coroutine to hand up to the loop.
    yielded: Option<Py<PyAny>>,
}

thread_local! {
    /// The exchange of the coroutine being polled on this thread (`None` in [`block_on`]).
    static IO: RefCell<Option<Io>> = const { RefCell::new(None) };
}

/// Polls `fut` once with `io` as this thread's exchange (the previous one restored after). A
/// panic inside becomes a `PanicError`. The poll holds off interpreter exit (see `pool`).
fn poll_with<F: Future + ?Sized>(
    fut: Pin<&mut F>,
    io: Option<Io>,
) -> PyResult<(Poll<F::Output>, Option<Io>)> {
    let _in_flight = super::pool::hold_off_exit();
    let saved = IO.with(|cell| cell.replace(io));
    let poll = catch_unwind(AssertUnwindSafe(|| {
        fut.poll(&mut TaskContext::from_waker(Waker::noop()))
    }));
    let io = IO.with(|cell| cell.replace(saved));
    match poll {
        Ok(poll) => Ok((poll, io)),
        Err(payload) => Err(panic_to_pyerr(payload)),
    }
}

/// Runs a future on this thread to its end, blocking where it waits: how a sync caller (and a
/// pool thread) runs a step.
pub(crate) fn block_on<T>(fut: impl Future<Output = PyResult<T>>) -> PyResult<T> {
    match poll_with(pin!(fut), None)? {
        (Poll::Ready(result), _) => result,
        (Poll::Pending, _) => Err(internal(
            "a step suspended on a thread that can block (please report it)",
        )),
    }
}

fn internal(what: &str) -> PyErr {
    FastLcelError::new_err(format!("fastlcel internal error: {what}"))
}

/// What one resumption of a Python iterator gave.
enum Sent {
    Yielded(Py<PyAny>),
    Returned(Py<PyAny>),
    Raised(PyErr),
}

/// The iterator `await aw` drives.
fn await_iter<'py>(aw: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: a type check on a live object we hold.
    if unsafe { ffi::PyCoro_CheckExact(aw.as_ptr()) } != 0 {
        return Ok(aw.clone());
    }
    let py = aw.py();
    match aw.get_type().getattr(intern!(py, "__await__")) {
        Ok(method) => method.call1((aw,)),
        Err(_) => Err(PyTypeError::new_err(format!(
            "object {} can't be used in 'await' expression",
            aw.get_type().name()?
        ))),
    }
}

/// `iter.send(value)`, without a StopIteration for the return value.
fn send(iter: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> Sent {
    let py = iter.py();
    let mut result: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: both objects are live and we are attached; PyIter_Send gives a new reference in
    // `result` for NEXT and RETURN, and sets an exception for ERROR.
    let status = unsafe { ffi::PyIter_Send(iter.as_ptr(), value.as_ptr(), &mut result) };
    match status {
        ffi::PySendResult::PYGEN_NEXT => {
            // SAFETY: a new reference, per PyIter_Send's contract.
            Sent::Yielded(unsafe { Bound::from_owned_ptr(py, result) }.unbind())
        }
        ffi::PySendResult::PYGEN_RETURN => {
            // SAFETY: as above.
            Sent::Returned(unsafe { Bound::from_owned_ptr(py, result) }.unbind())
        }
        ffi::PySendResult::PYGEN_ERROR => Sent::Raised(PyErr::fetch(py)),
    }
}

/// `iter.throw(err)`, as `yield from` does: GeneratorExit closes the iterator; an iterator
/// without `throw` lets the exception go up as is.
fn throw(iter: &Bound<'_, PyAny>, err: PyErr) -> Sent {
    let py = iter.py();
    if err.is_instance_of::<PyGeneratorExit>(py) {
        if let Ok(close) = iter.getattr(intern!(py, "close")) {
            if let Err(close_err) = close.call0() {
                return Sent::Raised(close_err);
            }
        }
        return Sent::Raised(err);
    }
    let Ok(method) = iter.getattr(intern!(py, "throw")) else {
        return Sent::Raised(err);
    };
    match method.call1((err.into_value(py),)) {
        Ok(yielded) => Sent::Yielded(yielded.unbind()),
        Err(e) if e.is_instance_of::<PyStopIteration>(py) => {
            let value = e.value(py).getattr(intern!(py, "value"));
            match value {
                Ok(v) => Sent::Returned(v.unbind()),
                Err(e) => Sent::Raised(e),
            }
        }
        Err(e) => Sent::Raised(e),
    }
}

enum AwaitState {
    Start(Py<PyAny>),
    Running(Py<PyAny>),
    Done,
}

/// A Python awaitable awaited inside a Rust future, as `await` would.
pub(crate) struct PyAwait {
    state: AwaitState,
    /// A contextvars context its code runs in (entered around every resumption), if not the
    /// current one.
    ctx: Option<Py<PyAny>>,
}

impl PyAwait {
    pub(crate) fn new(awaitable: Py<PyAny>) -> Self {
        Self::in_context(awaitable, None)
    }

    /// Awaits `awaitable` with its code run in the contextvars context `ctx` (if any), as a
    /// task made with `context=ctx` would.
    pub(crate) fn in_context(awaitable: Py<PyAny>, ctx: Option<Py<PyAny>>) -> Self {
        Self {
            state: AwaitState::Start(awaitable),
            ctx,
        }
    }
}

impl Future for PyAwait {
    type Output = PyResult<Py<PyAny>>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let taken = IO.with(|cell| cell.borrow_mut().as_mut().map(|io| io.input.take()));
        let Some(input) = taken else {
            return Poll::Ready(Err(internal(
                "a Python awaitable was awaited outside of a coroutine (please report it)",
            )));
        };
        Python::attach(|py| {
            let iter = match std::mem::replace(&mut self.state, AwaitState::Done) {
                AwaitState::Start(aw) => match await_iter(aw.bind(py)) {
                    Ok(iter) => iter,
                    Err(err) => return Poll::Ready(Err(err)),
                },
                AwaitState::Running(iter) => iter.into_bound(py),
                AwaitState::Done => {
                    return Poll::Ready(Err(internal("an awaitable was polled after it ended")))
                }
            };
            let resume = || match input {
                None => send(&iter, &py.None().into_bound(py)),
                Some(Resume::Send(value)) => send(&iter, value.bind(py)),
                Some(Resume::Throw(err)) => throw(&iter, err),
            };
            let sent = match &self.ctx {
                None => resume(),
                Some(ctx) => match context::enter(ctx.bind(py), || Ok(resume())) {
                    Ok(sent) => sent,
                    Err(err) => Sent::Raised(err),
                },
            };
            match sent {
                Sent::Yielded(yielded) => {
                    self.state = AwaitState::Running(iter.unbind());
                    IO.with(|cell| {
                        if let Some(io) = cell.borrow_mut().as_mut() {
                            io.yielded = Some(yielded);
                        }
                    });
                    Poll::Pending
                }
                Sent::Returned(value) => Poll::Ready(Ok(value)),
                Sent::Raised(err) => Poll::Ready(Err(err)),
            }
        })
    }
}

/// Awaits a Python awaitable inside a Rust future.
pub(crate) async fn py_await(awaitable: Py<PyAny>) -> PyResult<Py<PyAny>> {
    PyAwait::new(awaitable).await
}

/// Awaits a Python awaitable whose code runs in the contextvars context `ctx` (if any), as a
/// task made with `context=ctx` would.
pub(crate) async fn py_await_in(
    awaitable: Py<PyAny>,
    ctx: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    PyAwait::in_context(awaitable, ctx).await
}

enum CoroState {
    /// Made, never resumed: the future has not run at all.
    Fresh(StepFuture),
    Running(StepFuture),
    Done,
}

/// The contextvars context a coroutine's steps run in.
enum Isolation {
    /// Whatever is current (a task fastlcel made in a context of its own).
    None,
    /// A copy of the context it first ran in, entered around every resumption, so that the
    /// steps' writes reach neither the caller nor anything else.
    Fresh(Mutex<Option<Context>>),
    /// A context shared with other coroutines that run one after the other (a stream's chunks).
    Shared(Arc<Context>),
}

/// A Rust future as a Python coroutine: what `ainvoke` and `abatch` return, and what a task runs
/// for a step that is awaited concurrently with others.
#[pyclass(frozen, name = "Coroutine", module = "fastlcel")]
pub(crate) struct Coroutine {
    state: Mutex<CoroState>,
    isolation: Isolation,
}

impl Coroutine {
    /// A coroutine for a caller: its steps run in a copy of the caller's context.
    pub(crate) fn new(fut: StepFuture) -> Self {
        Self::make(fut, Isolation::Fresh(Mutex::new(None)))
    }

    /// A coroutine for a task that fastlcel makes in a context of its own already.
    pub(crate) fn for_task(fut: StepFuture) -> Self {
        Self::make(fut, Isolation::None)
    }

    /// A coroutine whose steps run in `ctx` itself (entered around every resumption).
    pub(crate) fn in_context(fut: StepFuture, ctx: Arc<Context>) -> Self {
        Self::make(fut, Isolation::Shared(ctx))
    }

    fn make(fut: StepFuture, isolation: Isolation) -> Self {
        Self {
            state: Mutex::new(CoroState::Fresh(fut)),
            isolation,
        }
    }

    fn resume(&self, py: Python<'_>, resume: Resume) -> PyResult<Py<PyAny>> {
        let Some(mut state) = self.state.try_lock() else {
            return Err(PyValueError::new_err("coroutine already executing"));
        };
        let mut fut = match std::mem::replace(&mut *state, CoroState::Done) {
            CoroState::Fresh(fut) => match resume {
                // Python raises an exception thrown into an unstarted coroutine at once.
                Resume::Throw(err) => return Err(err),
                Resume::Send(value) if !value.is_none(py) => {
                    return Err(PyTypeError::new_err(
                        "can't send non-None value to a just-started coroutine",
                    ))
                }
                Resume::Send(_) => fut,
            },
            CoroState::Running(fut) => fut,
            CoroState::Done => {
                return Err(PyRuntimeError::new_err(
                    "cannot reuse already awaited coroutine",
                ))
            }
        };
        let io = Io {
            input: Some(resume),
            yielded: None,
        };
        let (poll, io) = match &self.isolation {
            Isolation::None => poll_with(fut.as_mut(), Some(io))?,
            Isolation::Fresh(ctx) => {
                let ctx = {
                    let mut ctx = ctx.lock();
                    if ctx.is_none() {
                        *ctx = Some(Context::capture(py)?);
                    }
                    ctx.as_ref().expect("set just above").object(py).clone()
                };
                context::enter(&ctx, || poll_with(fut.as_mut(), Some(io)))?
            }
            Isolation::Shared(ctx) => {
                context::enter(ctx.object(py), || poll_with(fut.as_mut(), Some(io)))?
            }
        };
        match poll {
            Poll::Ready(Ok(value)) => Err(PyStopIteration::new_err((value,))),
            Poll::Ready(Err(err)) => Err(err),
            Poll::Pending => match io.and_then(|io| io.yielded) {
                Some(yielded) => {
                    *state = CoroState::Running(fut);
                    Ok(yielded)
                }
                None => Err(internal("a step suspended without awaiting anything")),
            },
        }
    }
}

#[pymethods]
impl Coroutine {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.resume(py, Resume::Send(py.None()))
    }

    fn send(&self, py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
        self.resume(py, Resume::Send(value))
    }

    #[pyo3(signature = (typ, val=None, tb=None))]
    fn throw(
        &self,
        py: Python<'_>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let exc = match val {
            Some(v) if !v.is_none() && typ.is_instance_of::<PyType>() => {
                if v.is_instance(typ)? {
                    v.clone()
                } else {
                    typ.call1((v,))?
                }
            }
            _ if typ.is_instance_of::<PyType>() => typ.call0()?,
            _ => typ.clone(),
        };
        let err = PyErr::from_value(exc);
        if let Some(tb) = tb.filter(|tb| !tb.is_none()) {
            err.set_traceback(py, Some(tb.cast::<pyo3::types::PyTraceback>()?.clone()));
        }
        self.resume(py, Resume::Throw(err))
    }

    /// Ends the coroutine: GeneratorExit is thrown into what it awaits.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let running = matches!(*self.state.lock(), CoroState::Running(_));
        if !running {
            *self.state.lock() = CoroState::Done;
            return Ok(());
        }
        match self.resume(py, Resume::Throw(PyGeneratorExit::new_err(()))) {
            Ok(_) => {
                *self.state.lock() = CoroState::Done;
                Err(PyRuntimeError::new_err("coroutine ignored GeneratorExit"))
            }
            Err(err)
                if err.is_instance_of::<PyGeneratorExit>(py)
                    || err.is_instance_of::<PyStopIteration>(py) =>
            {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }
}
