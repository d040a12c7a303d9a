//! contextvars: every step runs in its own copy of the caller's context, on whatever thread.

use pyo3::ffi;
use pyo3::prelude::*;

/// A snapshot of the caller's `contextvars.Context`, taken once per call.
pub(crate) struct Context(Py<PyAny>);

impl Context {
    /// Copies the current thread's context.
    pub(crate) fn capture(py: Python<'_>) -> PyResult<Self> {
        // SAFETY: attached to Python (`py`); the call returns a new reference or NULL with an
        // exception set, which `from_owned_ptr_or_err` turns into an error.
        let ctx = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent())? };
        Ok(Self(ctx.unbind()))
    }

    /// The snapshot itself (a `contextvars.Context`).
    pub(crate) fn object<'a, 'py>(&'a self, py: Python<'py>) -> &'a Bound<'py, PyAny> {
        self.0.bind(py)
    }

    pub(crate) fn clone_ref(&self, py: Python<'_>) -> Self {
        Self(self.0.clone_ref(py))
    }

    /// A fresh copy of the snapshot: what one step runs in.
    pub(crate) fn fresh<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: `self.0` is a `contextvars.Context` (made by PyContext_CopyCurrent); new
        // reference or NULL with an exception set.
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_Copy(self.0.as_ptr())) }
    }

    /// Runs `f` inside a fresh copy of the snapshot, so that its writes reach neither the caller
    /// nor any sibling step.
    pub(crate) fn run<T>(&self, py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
        enter(&self.fresh(py)?, f)
    }

    /// Runs `f` in a copy of the current context (a single call, not a fan-out).
    pub(crate) fn run_isolated<T>(py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
        enter(Self::capture(py)?.0.bind(py), f)
    }
}

/// Makes `ctx` the current context of this thread around `f`.
pub(crate) fn enter<T>(ctx: &Bound<'_, PyAny>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    let py = ctx.py();
    // SAFETY: `ctx` is a Context object that no thread has entered (each is a fresh copy), and
    // we are attached. Enter fails only if it is already entered, which sets an exception.
    if unsafe { ffi::PyContext_Enter(ctx.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    let result = f();
    // SAFETY: `ctx` is the context this thread entered above; user code inside `f` can only
    // enter and exit contexts in balanced pairs (Context.run), so it is current again here.
    if unsafe { ffi::PyContext_Exit(ctx.as_ptr()) } != 0 {
        let err = PyErr::fetch(py);
        return result.and(Err(err));
    }
    result
}

/// `var.get()` of a `contextvars.ContextVar` in the current context: its value, its default,
/// or `None` if it has neither. Through the C API: a method call costs several times more, and
/// the tracing checks read such variables on every outermost call.
pub(crate) fn var_get<'py>(var: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = var.py();
    let mut value: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: `var` is a live object and the GIL is held (`Bound`); PyContextVar_Get checks that
    // it is a ContextVar (setting an error otherwise) and writes a new reference, or NULL when
    // the variable has no value and no default, to `value`.
    let rc = unsafe { ffi::PyContextVar_Get(var.as_ptr(), std::ptr::null_mut(), &mut value) };
    if rc < 0 {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `value` is the new reference (or NULL) PyContextVar_Get gave us.
    Ok(unsafe { Bound::from_owned_ptr_or_opt(py, value) })
}
