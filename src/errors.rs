//! The exception hierarchy: everything fastlcel raises itself derives from `FastLcelError`.
//! User exceptions are never wrapped: they propagate as the same object.

use std::any::Any;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyRuntimeWarning, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

create_exception!(
    fastlcel,
    FastLcelError,
    PyException,
    "Base class of every exception raised by fastlcel itself (never of user exceptions)."
);
create_exception!(
    fastlcel,
    PanicError,
    FastLcelError,
    "A bug inside fastlcel's Rust code (a Rust panic) surfaced as a Python exception."
);

create_exception!(
    fastlcel,
    ExecutorError,
    FastLcelError,
    "A step could not run on its executor (``Lambda(..., executor=...)``): the executor refused \
     the call or is broken, or the function or its input could not be pickled to cross to it. \
     The executor's own exception is its ``__cause__``. Exceptions of the function itself are \
     never wrapped."
);

create_exception!(
    fastlcel,
    BlockingStepWarning,
    PyRuntimeWarning,
    "An async step held the event loop longer than its threshold in one go (the \
     ``warn_blocking`` config key, or asyncio's debug mode): a blocking call inside an \
     ``async def`` (``time.sleep``, ``requests``, file IO) stalls every other task on the loop. \
     Issued once per step; ``step`` is the step's name, ``seconds`` how long it held the loop."
);

// NOTE: the errors below are made with `type(...)` at import: `create_exception!` takes a single
// base class, and each must be both a `FastLcelError` and a builtin error, so that code written
// for langchain_core (`except ValueError`) keeps working.
static STEP_TIMEOUT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TYPE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static VALUE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The class `name(FastLcelError, builtin)` of module `fastlcel`, made once.
fn dual_type<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
    builtin: Bound<'py, PyType>,
    doc: &str,
) -> PyResult<&'py Bound<'py, PyType>> {
    cell.get_or_try_init(py, || {
        let bases = PyTuple::new(py, [py.get_type::<FastLcelError>(), builtin])?;
        let namespace = PyDict::new(py);
        namespace.set_item("__module__", "fastlcel")?;
        namespace.set_item("__doc__", doc)?;
        let ty = py.get_type::<PyType>().call1((name, bases, namespace))?;
        Ok(ty.cast_into::<PyType>()?.unbind())
    })
    .map(|ty| ty.bind(py))
}

fn step_timeout_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    dual_type(
        py,
        &STEP_TIMEOUT_ERROR,
        "StepTimeoutError",
        py.get_type::<PyTimeoutError>(),
        "A step did not finish within its timeout (``with_timeout`` or the ``timeout`` config \
         key). ``step`` is the step's name, ``timeout`` the limit in seconds.",
    )
}

fn type_error_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    dual_type(
        py,
        &TYPE_ERROR,
        "FastLcelTypeError",
        py.get_type::<PyTypeError>(),
        "Something given to fastlcel has the wrong type (a step, a config value, an argument); \
         a ``TypeError`` too.",
    )
}

fn value_error_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    dual_type(
        py,
        &VALUE_ERROR,
        "FastLcelValueError",
        py.get_type::<PyValueError>(),
        "Something given to fastlcel has a wrong value (a config value, an argument, an input \
         that must be a dict); a ``ValueError`` too.",
    )
}

/// A `FastLcelTypeError` (a `TypeError`) with `message`.
pub(crate) fn type_error(message: impl Into<String>) -> PyErr {
    raise(type_error_type, message.into())
}

/// A `FastLcelValueError` (a `ValueError`) with `message`.
pub(crate) fn value_error(message: impl Into<String>) -> PyErr {
    raise(value_error_type, message.into())
}

fn raise(ty: fn(Python<'_>) -> PyResult<&Bound<'_, PyType>>, message: String) -> PyErr {
    Python::attach(|py| match ty(py) {
        Ok(ty) => PyErr::from_type(ty.clone(), (message,)),
        Err(err) => err,
    })
}

/// The exception of a step that did not finish within `seconds`.
pub(crate) fn step_timeout_error(py: Python<'_>, step: &str, seconds: f64) -> PyErr {
    let make = || -> PyResult<PyErr> {
        let exc = step_timeout_type(py)?
            .call1((format!("step '{step}' timed out after {seconds} s"),))?;
        exc.setattr("step", step)?;
        exc.setattr("timeout", seconds)?;
        Ok(PyErr::from_value(exc))
    };
    make().unwrap_or_else(|err| err)
}

/// Turns the payload of a caught Rust panic into a `PanicError`.
pub(crate) fn panic_to_pyerr(payload: Box<dyn Any + Send>) -> PyErr {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned());
    PanicError::new_err(format!(
        "internal error in fastlcel (a Rust panic: {message}); please report it"
    ))
}

pub(crate) fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("FastLcelError", py.get_type::<FastLcelError>())?;
    m.add("PanicError", py.get_type::<PanicError>())?;
    m.add("ExecutorError", py.get_type::<ExecutorError>())?;
    m.add("BlockingStepWarning", py.get_type::<BlockingStepWarning>())?;
    m.add("StepTimeoutError", step_timeout_type(py)?)?;
    m.add("FastLcelTypeError", type_error_type(py)?)?;
    m.add("FastLcelValueError", value_error_type(py)?)?;
    Ok(())
}
