//! The exception hierarchy: everything fastlcel raises itself derives from `FastLcelError`.
//! User exceptions are never wrapped: they propagate as the same object.

use std::any::Any;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

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
    Ok(())
}
