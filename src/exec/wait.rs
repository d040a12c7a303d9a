//! The one way fastlcel blocks: GIL released, in short slices, noticing Ctrl-C between them.

use std::time::Duration;

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

    fn wait_slice(&self) -> bool {
        let mut set = self.set.lock();
        if !*set {
            self.cv.wait_for(&mut set, SLICE);
        }
        *set
    }
}

/// Blocks until `signal` is set, with the GIL released. Returns the exception of a signal
/// handler (KeyboardInterrupt) if one fires meanwhile.
pub(crate) fn wait(py: Python<'_>, signal: &Signal) -> PyResult<()> {
    while !signal.is_set() {
        let set = py.detach(|| {
            let set = signal.wait_slice();
            if !set && pool::shutting_down() {
                // The interpreter is finalizing: attaching again could end this thread inside
                // Rust frames. What this caller waits for will not come; the process is ending.
                loop {
                    std::thread::park();
                }
            }
            set
        });
        if set {
            break;
        }
        py.check_signals()?;
    }
    Ok(())
}
