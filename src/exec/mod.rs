//! How work runs, knowing nothing of LCEL: the thread pool, the sync fan-out, the asyncio gather,
//! contextvars and GIL-free waiting.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

pub(crate) mod aio;
pub(crate) mod context;
pub(crate) mod fanout;
pub(crate) mod pool;
pub(crate) mod wait;

/// How one item of a [`Work`] runs when it is awaited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// It has an awaitable of its own: a task on the caller's event loop.
    Await,
    /// Sync code that may block: run on the pool, never on the loop thread.
    Pool,
    /// Sync code too cheap to hand off (e.g. `operator.itemgetter`): run on the loop thread.
    Inline,
}

impl Mode {
    /// The mode of a runnable made of parts: awaited if any part is, else pooled if any part
    /// may block, else inline.
    pub(crate) fn of_all(modes: impl Iterator<Item = Mode>) -> Mode {
        modes.fold(Mode::Inline, |acc, m| match (acc, m) {
            (Mode::Await, _) | (_, Mode::Await) => Mode::Await,
            (Mode::Pool, _) | (_, Mode::Pool) => Mode::Pool,
            _ => Mode::Inline,
        })
    }
}

/// What `Work::awaitable` returns.
pub(crate) enum Awaitable<'py> {
    /// An asyncio future of this loop, already scheduled.
    Future(Bound<'py, PyAny>),
    /// A coroutine or any other awaitable, to be wrapped in a task.
    Other(Bound<'py, PyAny>),
}

/// A fixed list of independent calls. Item `i` can run synchronously on any thread that is
/// attached to Python, or, if its mode is `Await`, produce an awaitable.
pub(crate) trait Work: Send + Sync + 'static {
    fn len(&self) -> usize;
    fn run(&self, py: Python<'_>, i: usize) -> PyResult<Py<PyAny>>;
    fn mode(&self, i: usize) -> Mode;
    fn awaitable<'py>(&self, py: Python<'py>, i: usize) -> PyResult<Awaitable<'py>>;
    /// When item `i`'s awaitable has produced `output`: more to await before it is its result
    /// (a Lambda's function returned a runnable), or `None`. Checked on completion, so that the
    /// common case awaits the user's coroutine with no wrapper around it.
    fn followup<'py>(
        &self,
        _py: Python<'py>,
        _i: usize,
        _output: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(None)
    }
    /// The cost record of item `i`'s step, if it keeps one (see [`Cost`]).
    fn cost(&self, i: usize) -> Option<&Cost>;
}

/// How long a step usually runs, learnt from its calls (an average of the last few).
///
/// A blocking caller runs items itself only when every one is known to be fast: then it finishes
/// them before a helper could even wake (no GIL handoffs), and a failure elsewhere waits at most
/// one fast item. An item that may block runs on the pool, so the caller, waiting, can raise the
/// first failure at once.
pub(crate) struct Cost(AtomicU64);

impl Cost {
    const UNKNOWN: u64 = u64::MAX;
    /// Below this a step counts as fast: a GIL handoff to a helper costs tens of µs.
    const FAST_NS: u64 = 200_000;
    const SAMPLE_EVERY: u32 = 8;

    pub(crate) fn new() -> Self {
        Self(AtomicU64::new(Self::UNKNOWN))
    }

    pub(crate) fn is_fast(&self) -> bool {
        self.0.load(Ordering::Relaxed) < Self::FAST_NS
    }

    /// Whether to time this call: always while the step is not known to be fast, else one call
    /// in [`Self::SAMPLE_EVERY`] (reading the clock costs as much as a trivial step).
    pub(crate) fn wants_sample(&self) -> bool {
        thread_local! {
            static CALLS: Cell<u32> = const { Cell::new(0) };
        }
        !self.is_fast()
            || CALLS.with(|calls| {
                let n = calls.get().wrapping_add(1);
                calls.set(n);
                n % Self::SAMPLE_EVERY == 0
            })
    }

    pub(crate) fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX - 1);
        let old = self.0.load(Ordering::Relaxed);
        let new = if old == Self::UNKNOWN {
            ns
        } else {
            (old / 4) * 3 + ns / 4
        };
        self.0.store(new, Ordering::Relaxed);
    }
}

/// How the results of a `Work`, in item order, become the value the caller gets.
pub(crate) enum Collect {
    Dict(Arc<[Py<PyString>]>),
    /// The dict, passed to this function; its result is the value.
    DictInto(Arc<[Py<PyString>]>, Py<PyAny>),
    List,
    Single,
}

impl Collect {
    pub(crate) fn build(&self, py: Python<'_>, values: Vec<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        match self {
            Collect::Dict(keys) => Ok(Self::dict(py, keys, values)?.into_any().unbind()),
            Collect::DictInto(keys, func) => Ok(func
                .bind(py)
                .call1((Self::dict(py, keys, values)?,))?
                .unbind()),
            Collect::List => Ok(PyList::new(py, values)?.into_any().unbind()),
            Collect::Single => Ok(values.into_iter().next().unwrap_or_else(|| py.None())),
        }
    }

    fn dict<'py>(
        py: Python<'py>,
        keys: &[Py<PyString>],
        values: Vec<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (k, v) in keys.iter().zip(values) {
            dict.set_item(k, v)?;
        }
        Ok(dict)
    }
}

pub(crate) fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    pool::init_pymodule(m)?;
    fanout::init_pymodule(m)
}
