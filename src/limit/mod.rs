//! Flow control shared by many calls, on any thread or event loop: a request rate
//! ([`RateLimiter`]) and a cap on calls in flight ([`ConcurrencyLimit`]). They know nothing of
//! runnables; `runnable/limited.rs` applies them to steps.

use pyo3::prelude::*;

mod concurrency;
mod rate;

pub(crate) use concurrency::ConcurrencyLimit;
pub(crate) use rate::RateLimiter;

/// A limiter a call goes through.
pub(crate) enum Limiter {
    Rate(Py<RateLimiter>),
    Concurrency(Py<ConcurrencyLimit>),
}

impl Limiter {
    /// Runs `f` once the limiter lets it start (waiting with the GIL released), holding a
    /// concurrency permit until it returns.
    pub(crate) fn run<T>(&self, py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
        match self {
            Limiter::Rate(limiter) => {
                limiter.get().acquire_blocking(py)?;
                f()
            }
            Limiter::Concurrency(limit) => {
                let _permit = limit.get().acquire_blocking(py)?;
                f()
            }
        }
    }

    /// The Python object (for the asyncio path and reprs).
    pub(crate) fn object<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        match self {
            Limiter::Rate(limiter) => limiter.bind(py).as_any(),
            Limiter::Concurrency(limit) => limit.bind(py).as_any(),
        }
    }
}

pub(crate) fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RateLimiter>()?;
    m.add_class::<ConcurrencyLimit>()?;
    Ok(())
}
