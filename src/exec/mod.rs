//! How work runs, knowing nothing of LCEL: the thread pool, the sync fan-out, the asyncio gather,
//! contextvars and GIL-free waiting.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

pub(crate) mod aio;
pub(crate) mod context;
pub(crate) mod fanout;
pub(crate) mod pool;
pub(crate) mod wait;

/// How one item of a [`Work`] runs when it is awaited.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// It has an awaitable of its own: a task on the caller's event loop.
    Await,
    /// Sync code that may block: run on the pool, never on the loop thread.
    Pool,
    /// Sync code too cheap to hand off (e.g. `operator.itemgetter`): run on the loop thread.
    Inline,
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
}

/// How the results of a `Work`, in item order, become the value the caller gets.
pub(crate) enum Collect {
    Dict(Arc<[Py<PyString>]>),
    List,
    Single,
}

impl Collect {
    pub(crate) fn build(&self, py: Python<'_>, values: Vec<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        match self {
            Collect::Dict(keys) => {
                let dict = PyDict::new(py);
                for (k, v) in keys.iter().zip(values) {
                    dict.set_item(k, v)?;
                }
                Ok(dict.into_any().unbind())
            }
            Collect::List => Ok(PyList::new(py, values)?.into_any().unbind()),
            Collect::Single => Ok(values.into_iter().next().unwrap_or_else(|| py.None())),
        }
    }
}

pub(crate) fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    pool::init_pymodule(m)?;
    fanout::init_pymodule(m)
}
