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
use pyo3::PyTraverseError;

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
        Kind::Async
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
                // `parse_timeout` checked that the seconds make a Duration.
                let deadline = wait::deadline_after(Duration::from_secs_f64(seconds));
                let work = Arc::new(Calls::one(&self.inner, input, &args));
                Python::attach(|py| {
                    run_with_deadline(py, work, deadline)?
                        .ok_or_else(|| step_timeout_error(py, &name, seconds))
                })
            }),
        }
    }

    fn name(&self, py: Python<'_>) -> String {
        self.inner.name(py)
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let inner = self.inner.object(py).bind(py).repr()?;
        Ok(match self.seconds {
            Some(seconds) => format!("Timeout({inner}, seconds={seconds})"),
            None => format!("Timeout({inner}, seconds=config['timeout'])"),
        })
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.inner.traverse(visit)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `runnable.with_timeout(seconds)`.
pub(crate) fn with_timeout(
    runnable: &Bound<'_, Runnable>,
    seconds: &Bound<'_, PyAny>,
) -> PyResult<Py<Runnable>> {
    let node = TimeoutNode {
        inner: Arc::new(Step::Native(runnable.clone().unbind())),
        seconds: Some(validate::seconds(seconds, "with_timeout(seconds)")?),
    };
    Py::new(runnable.py(), Runnable::init(node))
}
