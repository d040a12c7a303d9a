//! `with_timeout` and the `timeout` config key: the step must finish within a deadline.
//!
//! A thread: the step runs on a pool thread (or, async-only, on an event loop) while the caller
//! waits (GIL released) until the deadline; then the caller raises `StepTimeoutError`: an async
//! step is cancelled, a sync step's thread runs on and its late result is dropped (Python
//! cannot stop a running thread). An awaiting caller: the step is cancelled at the deadline.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::{PyTraverseError, PyTypeInfo};

use super::base::{Node, Runnable};
use super::{Args, Calls, Step};
use crate::config::RunConfig;
use crate::errors::step_timeout_error;
use crate::exec::aio::timeout_on_loop;
use crate::exec::coro::StepFuture;
use crate::exec::{run_with_deadline, wait, Caller, Kind};
use crate::validate;

pub(crate) struct TimeoutNode {
    inner: Arc<Step>,
    /// Seconds; `None`: the call's `timeout` config key, if any.
    seconds: Option<f64>,
}

impl TimeoutNode {
    /// The deadline of the `timeout` config key around `inner` (see `base::with_config_policy`).
    pub(crate) fn from_config(inner: Step) -> Self {
        Self {
            inner: Arc::new(inner),
            seconds: None,
        }
    }

    fn seconds(&self, config: &RunConfig) -> Option<f64> {
        self.seconds.or(config.policy.timeout)
    }
}

impl Node for TimeoutNode {
    /// Always awaited on the loop: a timer there costs no thread.
    fn kind(&self) -> Kind {
        Kind::awaited_around([self.inner.kind()])
    }

    /// A fastlcel wrapper: the runnable it wraps opens the run.
    fn opens_run(&self) -> bool {
        false
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        let Some(seconds) = self.seconds(&args.config) else {
            return self.inner.run(input, args, mode);
        };
        let name = Python::attach(|py| self.inner.name(py));
        match mode {
            Caller::Loop => Box::pin(timeout_on_loop(
                self.inner.run(input, args, mode),
                seconds,
                name,
            )),
            Caller::Thread => Box::pin(async move {
                // `validate::seconds` checked that the seconds make a Duration.
                let deadline = wait::deadline_after(Duration::from_secs_f64(seconds));
                let work = Arc::new(Calls::one(&self.inner, input, &args));
                Python::attach(|py| {
                    run_with_deadline(py, work, deadline)?
                        .ok_or_else(|| step_timeout_error(py, &name, seconds))
                })
            }),
        }
    }

    /// Named as langchain_core names a binding: after its runnable.
    fn name(&self, py: Python<'_>) -> String {
        self.inner.name(py)
    }

    fn named_by_class(&self) -> bool {
        false
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let inner = self.inner.object(py).bind(py).repr()?;
        Ok(match self.seconds {
            Some(seconds) => format!("Timeout(bound={inner}, seconds={seconds})"),
            None => format!("Timeout(bound={inner}, seconds=config['timeout'])"),
        })
    }

    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        Timeout::type_object(py)
    }

    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("bound", self.inner.object(py))?;
        fields.set_item("seconds", self.seconds)?;
        Ok(fields)
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.inner.traverse(visit)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `runnable.with_timeout(seconds)`.
pub(crate) fn with_timeout(step: Step, seconds: &Bound<'_, PyAny>) -> PyResult<Py<Runnable>> {
    let node = TimeoutNode {
        inner: Arc::new(step),
        seconds: Some(validate::seconds(seconds, "with_timeout(seconds)")?),
    };
    Runnable::create(seconds.py(), node, Timeout, None)
}

/// A runnable that must finish within a deadline; made by `with_timeout`.
#[pyclass(frozen, subclass, extends = Runnable, module = "fastlcel", name = "Timeout")]
pub(crate) struct Timeout;

#[pymethods]
impl Timeout {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(bound, seconds, *, name=None)")]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<pyo3::PyClassInitializer<Self>> {
        Ok(Runnable::blank_of(cls, &Self::type_object(cls.py()))?.add_subclass(Timeout))
    }

    /// `Timeout(bound, seconds)`: `bound.with_timeout(seconds)`; `seconds=None` reads the
    /// `timeout` key of each call's config.
    #[pyo3(signature = (bound, seconds, *, name=None))]
    fn __init__(
        slf: &Bound<'_, Self>,
        bound: &Bound<'_, PyAny>,
        seconds: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = validate::name(name, "Timeout(name)")?;
        let seconds = validate::optional_seconds(seconds, "Timeout(seconds)")?;
        let node = TimeoutNode {
            inner: Arc::new(Step::coerce(bound, "Timeout bound")?),
            seconds,
        };
        Runnable::set_node(slf.as_super(), node, name)
    }

    /// The runnable under the deadline.
    #[getter]
    fn bound(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let node: &TimeoutNode = Runnable::node_as(slf.as_super())?;
        Ok(node.inner.object(slf.py()))
    }

    /// The deadline in seconds (None: each call's `timeout` config key).
    #[getter]
    fn seconds(slf: &Bound<'_, Self>) -> PyResult<Option<f64>> {
        let node: &TimeoutNode = Runnable::node_as(slf.as_super())?;
        Ok(node.seconds)
    }
}
