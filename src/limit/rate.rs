//! `RateLimiter`: GCRA (the generic cell rate algorithm), the virtual-scheduling form of a token
//! bucket. One timestamp under a lock: each request reserves the next slot at once, then waits
//! for it outside the lock, so waiters on threads and on event loops are served in call order.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pyo3::prelude::*;

use crate::errors::value_error;
use crate::validate::{self, Burst};
use pyo3::sync::PyOnceLock;

use crate::exec::wait;

/// Allows `requests_per_second` on average and up to `burst` at once, shared by every runnable
/// (`with_rate_limit`, the `rate_limiter` config key) on every thread and event loop.
#[pyclass(frozen, module = "fastlcel", name = "RateLimiter")]
pub(crate) struct RateLimiter {
    requests_per_second: f64,
    burst: u32,
    /// 1 / requests_per_second.
    interval: Duration,
    /// How far ahead of its slot a request may start: (burst - 1) intervals.
    tolerance: Duration,
    /// The theoretical arrival time of the next request (None: no request yet).
    tat: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// Reserves the next request slot; returns how long to wait for it.
    pub(crate) fn reserve(&self) -> Duration {
        let now = Instant::now();
        let mut tat = self.tat.lock();
        let slot = tat.map_or(now, |t| t.max(now));
        // A queue centuries long cannot be represented: such a limiter never lets a call start.
        *tat = Some(slot.checked_add(self.interval).unwrap_or(slot));
        slot.checked_sub(self.tolerance)
            .map_or(Duration::ZERO, |start| start.saturating_duration_since(now))
    }

    /// Waits (GIL released, Ctrl-C noticed) until a request may start.
    pub(crate) fn acquire_blocking(&self, py: Python<'_>) -> PyResult<()> {
        let delay = self.reserve();
        if delay.is_zero() {
            return Ok(());
        }
        wait::sleep(py, delay)
    }
}

#[pymethods]
impl RateLimiter {
    /// Pickling: a copy (in another process, say) is a new limiter with the same rate, which
    /// shares nothing with this one.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, pyo3::types::PyTuple>> {
        let this = slf.get();
        let args = (this.requests_per_second, this.burst).into_pyobject(slf.py())?;
        pyo3::types::PyTuple::new(slf.py(), [slf.get_type().into_any(), args.into_any()])
    }

    #[new]
    #[pyo3(
        signature = (requests_per_second, burst=Burst(1)),
        text_signature = "(requests_per_second, burst=1)"
    )]
    fn py_new(requests_per_second: &Bound<'_, PyAny>, burst: Burst) -> PyResult<Self> {
        let requests_per_second =
            validate::rate(requests_per_second, "RateLimiter(requests_per_second)")?;
        // Within the bounds `rate` allows, the interval is a Duration.
        let interval = Duration::from_secs_f64(1.0 / requests_per_second);
        let burst = burst.0;
        let tolerance = interval.checked_mul(burst - 1).ok_or_else(|| {
            value_error(format!(
                "RateLimiter(burst) is too large for this rate: {burst} calls at once at \
                 {requests_per_second} per second is a window longer than a Duration holds"
            ))
        })?;
        Ok(Self {
            requests_per_second,
            burst,
            interval,
            tolerance,
            tat: Mutex::new(None),
        })
    }

    #[getter]
    fn requests_per_second(&self) -> f64 {
        self.requests_per_second
    }

    #[getter]
    fn burst(&self) -> u32 {
        self.burst
    }

    /// Blocks until a request may start (the GIL is released meanwhile).
    fn acquire(&self, py: Python<'_>) -> PyResult<()> {
        self.acquire_blocking(py)
    }

    /// Reserves a request slot now; the returned awaitable waits for it without blocking the
    /// event loop.
    fn aacquire<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        static SLEEP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let delay = self.reserve().as_secs_f64();
        SLEEP.import(py, "asyncio", "sleep")?.call1((delay,))
    }

    fn __repr__(&self) -> String {
        format!(
            "RateLimiter(requests_per_second={:?}, burst={})",
            self.requests_per_second, self.burst
        )
    }
}
