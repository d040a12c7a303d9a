//! The one way fastlcel blocks: GIL released, in short slices, noticing Ctrl-C between them.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;

use super::pool;

/// How often a blocked caller wakes to run Python's signal handlers (Ctrl-C).
const SLICE: Duration = Duration::from_millis(50);

/// A one-shot flag a thread can block on.
#[derive(Default)]
pub(crate) struct Signal {
    set: Mutex<bool>,
    cv: Condvar,
}

impl Signal {
    pub(crate) fn set(&self) {
        *self.set.lock() = true;
        self.cv.notify_all();
    }

    pub(crate) fn is_set(&self) -> bool {
        *self.set.lock()
    }

    fn wait_for(&self, timeout: Duration) -> bool {
        let mut set = self.set.lock();
        if !*set {
            self.cv.wait_for(&mut set, timeout);
        }
        *set
    }
}

/// Blocks until `signal` is set, with the GIL released. Returns the exception of a signal
/// handler (KeyboardInterrupt) if one fires meanwhile.
pub(crate) fn wait(py: Python<'_>, signal: &Signal) -> PyResult<()> {
    wait_until(py, signal, None).map(drop)
}

/// Like [`wait`], but gives up at `deadline`: returns whether `signal` was set.
pub(crate) fn wait_until(
    py: Python<'_>,
    signal: &Signal,
    deadline: Option<Instant>,
) -> PyResult<bool> {
    loop {
        let slice = match deadline {
            None => SLICE,
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left.min(SLICE),
                _ => return Ok(signal.is_set()),
            },
        };
        let set = py.detach(|| {
            let lent = pool::Lent::lend();
            let set = signal.wait_for(slice);
            lent.resume();
            set
        });
        if set {
            return Ok(true);
        }
        py.check_signals()?;
    }
}

/// Sleeps for `duration` with the GIL released, noticing Ctrl-C.
pub(crate) fn sleep(py: Python<'_>, duration: Duration) -> PyResult<()> {
    wait_until(py, &Signal::default(), deadline_after(duration)).map(drop)
}

/// The instant `duration` from now; `None` if it is too far away to represent (never).
pub(crate) fn deadline_after(duration: Duration) -> Option<Instant> {
    Instant::now().checked_add(duration)
}
