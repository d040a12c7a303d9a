//! Flow control shared by many calls, on any thread or event loop: a request rate
//! ([`RateLimiter`]) and a cap on calls in flight ([`ConcurrencyLimit`]). They know nothing of
//! runnables; `runnable/limited.rs` applies them to steps.

use pyo3::prelude::*;

mod concurrency;
mod rate;

pub(crate) use concurrency::{ConcurrencyLimit, Permit};
pub(crate) use rate::RateLimiter;

use crate::exec::{aio, Caller};

/// A limiter a call goes through.
pub(crate) enum Limiter {
    Rate(Py<RateLimiter>),
    Concurrency(Py<ConcurrencyLimit>),
}

impl Limiter {
    /// Waits the caller's way until the limiter lets a call start: a thread with the GIL
    /// released, a task on its loop. A concurrency limit's permit is held until dropped.
    pub(crate) async fn acquire(&self, caller: Caller) -> PyResult<Option<Permit>> {
        match (self, caller) {
            (Limiter::Rate(limiter), Caller::Thread) => {
                Python::attach(|py| limiter.get().acquire_blocking(py))?;
                Ok(None)
            }
            (Limiter::Rate(limiter), Caller::Loop) => {
                let delay = limiter.get().reserve();
                if !delay.is_zero() {
                    aio::sleep(delay, caller).await?;
                }
                Ok(None)
            }
            (Limiter::Concurrency(limit), Caller::Thread) => {
                Python::attach(|py| limit.get().acquire_blocking(py)).map(Some)
            }
            (Limiter::Concurrency(limit), Caller::Loop) => {
                limit.get().acquire_on_loop().await.map(Some)
            }
        }
    }

    /// The Python object (for reprs).
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
