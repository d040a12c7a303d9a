//! Steps that run on an external executor: any object with `submit(fn, /, *args, **kwargs)`
//! returning a `concurrent.futures.Future` (a process pool, loky, Dask's executor, a Ray
//! adapter).
//!
//! Only the function call crosses; whatever wraps the step (retries, timeouts, limits, the
//! cache, fan-outs) stays on the caller's side. No thread waits per call in flight: the caller
//! submits, and the future's done callback tells Rust. A thread caller waits (GIL released,
//! Ctrl-C noticed) on a signal the callback sets; an awaiting caller awaits a future of its loop
//! that the callback settles through `call_soon_threadsafe`. When the caller stops waiting (a
//! timeout, a fail-fast abort, a cancelled task, Ctrl-C) the executor's future is cancelled:
//! whether that stops a call already running is the executor's business.
//!
//! Errors of the function itself pass through as the executor delivers them. What keeps the call
//! from running at all is an `ExecutorError` naming the step, the executor's exception chained:
//! `submit` raising, a broken executor, a function or input that cannot be pickled.
//
// NOTE: asyncio's `wrap_future` does the same for an awaiting caller with a Python callback
// chain; it cannot serve a blocked thread, and the gather would still wrap it in a task. Here
// the loop future itself is the gather's item (see `Executor::start_on_loop`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{intern, PyTraverseError};

use super::aio::{loop_future, settle};
use super::coro::py_await;
use super::wait::{self, Signal};
use super::Caller;
use crate::config::type_name;
use crate::errors::{type_error, ExecutorError};

/// An executor a step runs on, checked once.
pub(crate) struct Executor {
    obj: Py<PyAny>,
    /// The step, as messages name it (e.g. `Lambda(parse)`).
    step: Arc<str>,
    /// The executor's class name, for messages.
    class: Arc<str>,
}

/// One call: what `submit` was given, kept to explain a failure.
struct Call {
    func: Py<PyAny>,
    input: Py<PyAny>,
    kwargs: Option<Py<PyDict>>,
    step: Arc<str>,
    executor: Arc<str>,
}

impl Executor {
    /// `obj`, if it can take calls; `step` names the step in errors.
    pub(crate) fn new(obj: &Bound<'_, PyAny>, step: String) -> PyResult<Self> {
        let py = obj.py();
        let submits = obj
            .getattr(intern!(py, "submit"))
            .is_ok_and(|submit| submit.is_callable());
        if !submits {
            return Err(type_error(format!(
                "{step}: executor must have a submit(fn, /, *args, **kwargs) method returning a \
                 concurrent.futures.Future (a ProcessPoolExecutor, loky's executor, Dask's \
                 client.get_executor(), fastlcel.RayExecutor); got {}",
                crate::validate::shown_with_type(obj)
            )));
        }
        Ok(Self {
            obj: obj.clone().unbind(),
            step: step.into(),
            class: type_name(obj).into(),
        })
    }

    pub(crate) fn object(&self) -> &Py<PyAny> {
        &self.obj
    }

    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.obj)
    }

    /// `func(input, **kwargs)` on the executor, waited for `mode`'s way.
    pub(crate) async fn call(
        &self,
        func: &Py<PyAny>,
        input: &Py<PyAny>,
        kwargs: Option<Py<PyDict>>,
        mode: Caller,
    ) -> PyResult<Py<PyAny>> {
        match mode {
            Caller::Thread => Python::attach(|py| {
                let call = self.call_of(py, func, input, kwargs);
                let future = self.submit(py, &call)?;
                let done = Arc::new(Signal::default());
                let wake = Bound::new(py, Wake(Arc::clone(&done)))?;
                add_done_callback(&future, wake.as_any(), &call)?;
                if let Err(interrupt) = wait::wait(py, &done) {
                    let _ = future.call_method0(intern!(py, "cancel"));
                    return Err(interrupt);
                }
                outcome(py, &future, &call)
            }),
            Caller::Loop => {
                let (awaitable, guard) = Python::attach(|py| {
                    let call = self.call_of(py, func, input, kwargs);
                    self.start_on_loop(py, call)
                        .map(|(aw, guard)| (aw.unbind(), guard))
                })?;
                let result = py_await(awaitable).await;
                drop(guard);
                result
            }
        }
    }

    /// A future of the running loop for `func(input, **kwargs)` on the executor: a gather's
    /// item as it is (cancelling it cancels the executor's future).
    pub(crate) fn awaitable<'py>(
        &self,
        func: &Py<PyAny>,
        input: &Bound<'py, PyAny>,
        kwargs: Option<Py<PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = input.py();
        let call = self.call_of(py, func, &input.clone().unbind(), kwargs);
        let (awaitable, guard) = self.start_on_loop(py, call)?;
        // The gather cancels the loop future itself, which cancels the executor's.
        guard.disarm();
        Ok(awaitable)
    }

    fn call_of(
        &self,
        py: Python<'_>,
        func: &Py<PyAny>,
        input: &Py<PyAny>,
        kwargs: Option<Py<PyDict>>,
    ) -> Call {
        Call {
            func: func.clone_ref(py),
            input: input.clone_ref(py),
            kwargs,
            step: Arc::clone(&self.step),
            executor: Arc::clone(&self.class),
        }
    }

    /// `executor.submit(func, input, **kwargs)`; its failure is the step's `ExecutorError`.
    fn submit<'py>(&self, py: Python<'py>, call: &Call) -> PyResult<Bound<'py, PyAny>> {
        let args = PyTuple::new(py, [call.func.bind(py), call.input.bind(py)])?;
        let kwargs = call.kwargs.as_ref().map(|k| k.bind(py));
        self.obj
            .bind(py)
            .call_method(intern!(py, "submit"), args, kwargs)
            .map_err(|err| refused(py, err, call))
    }

    /// Submits `call` and returns a future of the running loop that its done callback settles,
    /// and a guard that cancels the executor's future if the caller stops waiting first.
    fn start_on_loop<'py>(
        &self,
        py: Python<'py>,
        call: Call,
    ) -> PyResult<(Bound<'py, PyAny>, CancelGuard)> {
        let (event_loop, awaitable) = loop_future(py)?;
        let future = self.submit(py, &call)?;
        let settled = Arc::new(AtomicBool::new(false));
        let guard = CancelGuard {
            future: Some(future.clone().unbind()),
            settled: Arc::clone(&settled),
        };
        awaitable.call_method1(
            intern!(py, "add_done_callback"),
            (CancelSource(future.clone().unbind()),),
        )?;
        let call = Arc::new(call);
        let settle = Bound::new(
            py,
            Settle {
                event_loop: event_loop.unbind(),
                awaitable: awaitable.clone().unbind(),
                call: Arc::clone(&call),
                settled,
            },
        )?;
        add_done_callback(&future, settle.as_any(), &call)?;
        Ok((awaitable, guard))
    }
}

/// `future.add_done_callback(callback)`; a `submit` that returned no future is the step's
/// `ExecutorError`.
fn add_done_callback(
    future: &Bound<'_, PyAny>,
    callback: &Bound<'_, PyAny>,
    call: &Call,
) -> PyResult<()> {
    let py = future.py();
    let Ok(add) = future.getattr(intern!(py, "add_done_callback")) else {
        let message = format!(
            "{}: {}.submit returned an object of type '{}', not a concurrent.futures.Future",
            call.step,
            call.executor,
            type_name(future)
        );
        return Err(executor_error(py, message, None));
    };
    add.call1((callback,)).map(drop)
}

/// The outcome of a done future: its result, or its exception (see [`failed`]).
fn outcome(py: Python<'_>, future: &Bound<'_, PyAny>, call: &Call) -> PyResult<Py<PyAny>> {
    future
        .call_method0(intern!(py, "result"))
        .map(Bound::unbind)
        .map_err(|err| failed(py, err, call))
}

/// Done callback of a thread caller's future: wakes the caller.
#[pyclass(frozen)]
struct Wake(Arc<Signal>);

#[pymethods]
impl Wake {
    fn __call__(&self, _future: &Bound<'_, PyAny>) {
        self.0.set();
    }
}

/// Done callback of an awaiting caller's future: settles the loop future, from whatever thread
/// the executor calls it on.
#[pyclass(frozen)]
struct Settle {
    event_loop: Py<PyAny>,
    awaitable: Py<PyAny>,
    call: Arc<Call>,
    settled: Arc<AtomicBool>,
}

#[pymethods]
impl Settle {
    fn __call__(&self, py: Python<'_>, future: &Bound<'_, PyAny>) {
        self.settled.store(true, Ordering::Release);
        let result = outcome(py, future, &self.call);
        settle(
            py,
            self.event_loop.bind(py),
            self.awaitable.bind(py),
            result,
        );
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.awaitable)?;
        self.call.traverse(&visit)
    }
}

/// Done callback of the loop future: if it was cancelled (a timeout, fail-fast, the caller's
/// task cancelled), so is the executor's future.
#[pyclass(frozen)]
struct CancelSource(Py<PyAny>);

#[pymethods]
impl CancelSource {
    fn __call__(&self, py: Python<'_>, awaitable: &Bound<'_, PyAny>) -> PyResult<()> {
        if awaitable
            .call_method0(intern!(py, "cancelled"))?
            .is_truthy()?
        {
            self.0.bind(py).call_method0(intern!(py, "cancel"))?;
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.0)
    }
}

/// Cancels the executor's future when an awaiting caller stops waiting before it is done
/// (its coroutine closed or dropped).
struct CancelGuard {
    future: Option<Py<PyAny>>,
    settled: Arc<AtomicBool>,
}

impl CancelGuard {
    fn disarm(mut self) {
        self.future = None;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        if !self.settled.load(Ordering::Acquire) {
            Python::attach(|py| {
                let _ = future.bind(py).call_method0(intern!(py, "cancel"));
            });
        }
    }
}

impl Call {
    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.func)?;
        visit.call(&self.input)?;
        if let Some(kwargs) = &self.kwargs {
            visit.call(kwargs)?;
        }
        Ok(())
    }

    /// What of the call cannot be pickled, if `err` is what pickling it raises: "function",
    /// "input" or "keyword arguments". Asked only once a call failed with an exception that
    /// pickling raises (a process pool pickles in a thread of its own, and hands the error to
    /// the future like the function's own): the same type and message as pickling here.
    fn unpicklable(&self, py: Python<'_>, err: &PyErr) -> Option<&'static str> {
        static PICKLING_ERROR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let pickling = PICKLING_ERROR.import(py, "pickle", "PickleError").ok()?;
        let kind = err.get_type(py);
        let suspect = kind.is_subclass(pickling).unwrap_or(false)
            || err.is_instance_of::<PyTypeError>(py)
            || err.is_instance_of::<PyAttributeError>(py);
        if !suspect {
            return None;
        }
        let dumps = DUMPS.import(py, "pickle", "dumps").ok()?;
        let message = err.value(py).str().ok()?;
        let parts: [(&'static str, Option<&Py<PyAny>>); 3] = [
            ("function", Some(&self.func)),
            ("input", Some(&self.input)),
            (
                "keyword arguments",
                self.kwargs.as_ref().map(|k| k.as_any()),
            ),
        ];
        parts.into_iter().find_map(|(what, obj)| {
            let local = dumps.call1((obj?,)).err()?;
            let same = local.get_type(py).is(&kind)
                && local
                    .value(py)
                    .str()
                    .is_ok_and(|m| m.to_string_lossy() == message.to_string_lossy());
            same.then_some(what)
        })
    }
}

/// A failed call's exception: the function's own as it is; the executor's, or a pickling
/// error, as the step's `ExecutorError`.
fn failed(py: Python<'_>, err: PyErr, call: &Call) -> PyErr {
    static BROKEN: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static CANCELLED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let is = |cell: &'static PyOnceLock<Py<PyAny>>, name: &str| {
        cell.import(py, "concurrent.futures", name)
            .is_ok_and(|ty| err.value(py).is_instance(ty).unwrap_or(false))
    };
    let (step, executor) = (&call.step, &call.executor);
    let message = if is(&BROKEN, "BrokenExecutor") {
        format!(
            "{step}: its executor ({executor}) is broken: {}",
            err.value(py)
        )
    } else if is(&CANCELLED, "CancelledError") {
        format!("{step}: its executor ({executor}) cancelled the call")
    } else if let Some(what) = call.unpicklable(py, &err) {
        format!(
            "{step}: its {what} cannot be pickled to cross to its executor ({executor}): {}",
            err.value(py)
        )
    } else {
        return err;
    };
    executor_error(py, message, Some(err))
}

/// `submit` raised: the step's `ExecutorError` (the executor's exception chained).
fn refused(py: Python<'_>, err: PyErr, call: &Call) -> PyErr {
    let wrapped = failed(py, err, call);
    if wrapped.is_instance_of::<ExecutorError>(py) {
        return wrapped;
    }
    let message = format!(
        "{}: its executor ({}) refused the call: {}",
        call.step,
        call.executor,
        wrapped.value(py)
    );
    executor_error(py, message, Some(wrapped))
}

/// An `ExecutorError` with `message`, `cause` as its `__cause__`.
fn executor_error(py: Python<'_>, message: String, cause: Option<PyErr>) -> PyErr {
    let err = ExecutorError::new_err(message);
    err.set_cause(py, cause);
    err
}
