//! `ConcurrencyLimit`: a semaphore that threads and asyncio tasks (of any loop) share.
//!
//! A released permit is handed straight to the first waiter (FIFO): a thread is woken through
//! its `Signal`; a task gets the result of its loop future, set on its own loop thread.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::validate;
use pyo3::{intern, PyTraverseError};

use crate::exec::aio;
use crate::exec::coro::py_await;
use crate::exec::wait::{self, Signal};

enum Waiter {
    Thread(Arc<Signal>),
    Task {
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
    },
}

struct State {
    available: usize,
    waiters: VecDeque<Waiter>,
}

struct Semaphore {
    state: Mutex<State>,
}

impl Semaphore {
    fn try_acquire(&self) -> bool {
        let mut st = self.state.lock();
        if st.available > 0 {
            st.available -= 1;
            true
        } else {
            false
        }
    }

    /// Hands the permit to the first waiter that can take it, or returns it to the pool.
    fn release(self: &Arc<Self>, py: Python<'_>) {
        loop {
            let waiter = {
                let mut st = self.state.lock();
                match st.waiters.pop_front() {
                    Some(waiter) => waiter,
                    None => {
                        st.available += 1;
                        return;
                    }
                }
            };
            match waiter {
                Waiter::Thread(signal) => {
                    signal.set();
                    return;
                }
                Waiter::Task { event_loop, future } => {
                    let grant = Grant {
                        semaphore: Arc::clone(self),
                    };
                    let scheduled = event_loop
                        .bind(py)
                        .call_method1(intern!(py, "call_soon_threadsafe"), (grant, future));
                    // A closed loop raises: its task will never run; try the next waiter.
                    if scheduled.is_ok() {
                        return;
                    }
                }
            }
        }
    }
}

/// Runs on the waiter's loop: gives it the permit, or passes the permit on if the waiter gave
/// up (its future was cancelled) meanwhile.
#[pyclass(frozen)]
struct Grant {
    semaphore: Arc<Semaphore>,
}

#[pymethods]
impl Grant {
    fn __call__(&self, py: Python<'_>, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0(intern!(py, "done"))?.is_truthy()? {
            self.semaphore.release(py);
        } else {
            future.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(())
    }
}

/// A permit held by a thread; released when dropped.
pub(crate) struct Permit(Arc<Semaphore>);

impl Drop for Permit {
    fn drop(&mut self) {
        // A permit is dropped where it was used, attached: this only re-enters.
        Python::attach(|py| self.0.release(py));
    }
}

/// At most `limit` calls in flight at once across every runnable, thread and event loop that
/// shares it (`with_concurrency_limit`, the `concurrency_limit` config key).
#[pyclass(frozen, module = "fastlcel", name = "ConcurrencyLimit")]
pub(crate) struct ConcurrencyLimit {
    limit: usize,
    semaphore: Arc<Semaphore>,
}

impl ConcurrencyLimit {
    /// Waits (GIL released, Ctrl-C noticed) for a permit.
    pub(crate) fn acquire_blocking(&self, py: Python<'_>) -> PyResult<Permit> {
        let signal = {
            let mut st = self.semaphore.state.lock();
            if st.available > 0 {
                st.available -= 1;
                return Ok(Permit(Arc::clone(&self.semaphore)));
            }
            let signal = Arc::new(Signal::default());
            st.waiters.push_back(Waiter::Thread(Arc::clone(&signal)));
            signal
        };
        if let Err(interrupt) = wait::wait(py, &signal) {
            let queued = {
                let mut st = self.semaphore.state.lock();
                let pos = st
                    .waiters
                    .iter()
                    .position(|w| matches!(w, Waiter::Thread(s) if Arc::ptr_eq(s, &signal)));
                pos.and_then(|pos| st.waiters.remove(pos)).is_some()
            };
            if !queued {
                // The permit was handed to us meanwhile.
                self.semaphore.release(py);
            }
            return Err(interrupt);
        }
        Ok(Permit(Arc::clone(&self.semaphore)))
    }

    /// Waits on the running loop for a permit.
    pub(crate) async fn acquire_on_loop(&self) -> PyResult<Permit> {
        let waiter = Python::attach(|py| self.acquire_or_queue(py))?;
        if let Some(future) = waiter {
            let mut pending = Abandon {
                semaphore: Arc::clone(&self.semaphore),
                future: Some(Python::attach(|py| future.clone_ref(py))),
            };
            py_await(future).await?;
            // Granted: nothing to give back.
            pending.future = None;
        }
        Ok(Permit(Arc::clone(&self.semaphore)))
    }

    /// A permit now (`None`), or a future of the running loop that is resolved when one is
    /// handed over.
    fn acquire_or_queue(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if self.semaphore.try_acquire() {
            return Ok(None);
        }
        let (event_loop, future) = aio::loop_future(py)?;
        let mut st = self.semaphore.state.lock();
        if st.available > 0 {
            st.available -= 1;
            return Ok(None);
        }
        st.waiters.push_back(Waiter::Task {
            event_loop: event_loop.unbind(),
            future: future.clone().unbind(),
        });
        Ok(Some(future.unbind()))
    }
}

/// A task that stops waiting for a permit (it was cancelled): leaves the queue, or passes on
/// the permit it was handed meanwhile.
struct Abandon {
    semaphore: Arc<Semaphore>,
    future: Option<Py<PyAny>>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        Python::attach(|py| {
            let removed = {
                let mut st = self.semaphore.state.lock();
                let pos = st
                    .waiters
                    .iter()
                    .position(|w| matches!(w, Waiter::Task { future: f, .. } if f.is(&future)));
                pos.and_then(|pos| st.waiters.remove(pos))
            };
            if removed.is_some() {
                return;
            }
            // Handed over already: if the grant ran, the permit is ours to pass on; if the
            // future was cancelled first, the grant passes it on when it runs.
            let future = future.bind(py);
            let granted = future
                .call_method0(intern!(py, "done"))
                .and_then(|d| d.is_truthy())
                .unwrap_or(false)
                && !future
                    .call_method0(intern!(py, "cancelled"))
                    .and_then(|c| c.is_truthy())
                    .unwrap_or(true);
            if granted {
                self.semaphore.release(py);
            }
        });
    }
}

#[pymethods]
impl ConcurrencyLimit {
    /// Pickling: a copy (in another process, say) is a new limit of the same size, with no
    /// permit held, which shares nothing with this one.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, pyo3::types::PyTuple>> {
        let args = (slf.get().limit,).into_pyobject(slf.py())?;
        pyo3::types::PyTuple::new(slf.py(), [slf.get_type().into_any(), args.into_any()])
    }

    #[new]
    fn py_new(limit: &Bound<'_, PyAny>) -> PyResult<Self> {
        let what = "ConcurrencyLimit(limit)";
        let limit = validate::count(limit, what, "calls in flight at once", validate::MAX_COUNT)?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(Self {
            limit,
            semaphore: Arc::new(Semaphore {
                state: Mutex::new(State {
                    available: limit,
                    waiters: VecDeque::new(),
                }),
            }),
        })
    }

    #[getter]
    fn limit(&self) -> usize {
        self.limit
    }

    /// Calls holding a permit now.
    #[getter]
    fn in_use(&self) -> usize {
        self.limit - self.semaphore.state.lock().available
    }

    fn __repr__(&self) -> String {
        format!("ConcurrencyLimit({})", self.limit)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(st) = self.semaphore.state.try_lock() {
            for waiter in &st.waiters {
                if let Waiter::Task { event_loop, future } = waiter {
                    visit.call(event_loop)?;
                    visit.call(future)?;
                }
            }
        }
        Ok(())
    }
}
