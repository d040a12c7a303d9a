//! A queue with one consumer that waits the caller's way (a thread blocks with the GIL released,
//! a task awaits a future of its loop) and producers on any thread: how results of steps that
//! run at once (streams merged, batches as completed) reach their consumer.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;

use super::aio::{loop_future, settle};
use super::coro::py_await;
use super::wait::{self, Mailbox, Signal};
use super::Caller;

/// The consumer, waiting.
enum Waiter {
    Thread(Arc<Signal>),
    Task {
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
    },
}

impl Waiter {
    fn wake(self, py: Python<'_>) {
        match self {
            Waiter::Thread(signal) => signal.set(),
            Waiter::Task { event_loop, future } => {
                settle(py, event_loop.bind(py), future.bind(py), Ok(py.None()));
            }
        }
    }
}

struct State<T> {
    items: VecDeque<T>,
    waiter: Option<Waiter>,
}

pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    /// The jobs of the producers a thread consumer owns (see `pool::Owner`): it runs them while
    /// it waits when the pool has no thread for them. Its user closes it when the consumer goes.
    mailbox: Option<Arc<Mailbox>>,
}

impl<T: Send> Queue<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                waiter: None,
            }),
            mailbox: None,
        }
    }

    /// A queue whose producers run as pool jobs owned by its consumer: `mailbox`.
    pub(crate) fn owning(mailbox: Arc<Mailbox>) -> Self {
        Self {
            mailbox: Some(mailbox),
            ..Self::new()
        }
    }

    pub(crate) fn push(&self, py: Python<'_>, item: T) {
        let waiter = {
            let mut st = self.state.lock();
            st.items.push_back(item);
            st.waiter.take()
        };
        if let Some(waiter) = waiter {
            waiter.wake(py);
        }
    }

    /// The next item, waiting for it the caller's way.
    pub(crate) async fn pop(&self, caller: Caller) -> PyResult<T> {
        loop {
            if let Some(next) = self.try_pop() {
                return Ok(next);
            }
            match caller {
                Caller::Thread => {
                    let signal = Arc::new(Signal::default());
                    if let Some(next) = self.try_pop_or_wait(Waiter::Thread(Arc::clone(&signal))) {
                        return Ok(next);
                    }
                    Python::attach(|py| match &self.mailbox {
                        Some(mailbox) => wait::wait_running(py, &signal, mailbox),
                        None => wait::wait(py, &signal),
                    })?;
                }
                Caller::Loop => {
                    let (event_loop, future) = Python::attach(|py| {
                        loop_future(py).map(|(l, f)| (l.unbind(), f.unbind()))
                    })?;
                    let waiter = Python::attach(|py| Waiter::Task {
                        event_loop,
                        future: future.clone_ref(py),
                    });
                    if let Some(next) = self.try_pop_or_wait(waiter) {
                        return Ok(next);
                    }
                    py_await(future).await?;
                }
            }
        }
    }

    fn try_pop(&self) -> Option<T> {
        self.state.lock().items.pop_front()
    }

    /// Like `try_pop`, but installs `waiter` (under the same lock) if there is nothing yet.
    fn try_pop_or_wait(&self, waiter: Waiter) -> Option<T> {
        let mut st = self.state.lock();
        let item = st.items.pop_front();
        if item.is_none() {
            st.waiter = Some(waiter);
        }
        item
    }
}

/// A coalescing wake-up for one waiter at a time: `notify` before `wait` is not lost.
pub(crate) struct Notify(Queue<()>);

impl Notify {
    pub(crate) fn new() -> Self {
        Self(Queue::new())
    }

    pub(crate) fn notify(&self, py: Python<'_>) {
        let pending = !self.0.state.lock().items.is_empty();
        if !pending {
            self.0.push(py, ());
        }
    }

    /// Waits the caller's way until notified (at once if it was since the last wait).
    pub(crate) async fn wait(&self, caller: Caller) -> PyResult<()> {
        self.0.pop(caller).await.map(drop)
    }
}
