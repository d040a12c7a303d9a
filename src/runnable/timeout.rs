//! `with_timeout` and the `timeout` config key: the step must finish within a deadline.
//!
//! Sync: the step runs on a pool thread while the caller waits (GIL released) until the
//! deadline; then the caller raises `StepTimeoutError` and the thread's late result is dropped
//! (Python cannot stop a running thread). Async: `_resilience.timeout` cancels the step.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::{intern, PyTraverseError};

use super::base::{Node, Runnable};
use super::{resilience, Calls, Step};
use crate::config::{parse_timeout, RunConfig};
use crate::errors::step_timeout_error;
use crate::exec::fanout::FanOut;
use crate::exec::{wait, Awaitable, Mode};

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
    fn invoke(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Py<PyAny>> {
        let Some(seconds) = self.seconds(config) else {
            return self.inner.invoke(py, input, config);
        };
        // `parse_timeout` checked that the seconds make a Duration.
        let deadline = wait::deadline_after(Duration::from_secs_f64(seconds));
        let work = Arc::new(Calls::one(&self.inner, input, config));
        match FanOut::run_until(py, work, None, false, deadline)? {
            Some(values) => Ok(values
                .into_iter()
                .next()
                .expect("a one-call fan-out has one result")),
            None => Err(step_timeout_error(py, &self.inner.name(py), seconds)),
        }
    }

    /// Always awaited on the loop: a timer there costs no thread.
    fn mode(&self) -> Mode {
        Mode::Await
    }

    fn awaitable<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Awaitable<'py>> {
        let step = self.inner.awaitable_any(py, input, config)?;
        let Some(seconds) = self.seconds(config) else {
            return Ok(Awaitable::Other(step));
        };
        let timed =
            resilience(py, intern!(py, "timeout"))?.call1((step, seconds, self.inner.name(py)))?;
        Ok(Awaitable::Other(timed))
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
        seconds: Some(parse_timeout(seconds, "with_timeout(seconds)")?),
    };
    Py::new(runnable.py(), Runnable::init(node))
}
