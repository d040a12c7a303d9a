//! `with_fallbacks`: on a handled failure, the next runnable, like langchain_core's
//! `RunnableWithFallbacks`. If all fail, the first error is raised.
//!
//! With `exception_key`, each fallback gets a copy of the input dict with the last error under
//! that key; langchain_core writes the key into the caller's dict instead. BaseExceptions that
//! are not Exceptions (KeyboardInterrupt, CancelledError) are never handled.

use std::any::Any;
use std::sync::Arc;

use pyo3::exceptions::PyException;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::errors::{type_error, value_error};
use pyo3::types::{PyDict, PyString};
use pyo3::{intern, PyTraverseError};

use super::base::{Node, Runnable};
use super::{describe, exception_types, resilience, Awaiter, Step};
use crate::config::{type_name, RunConfig};
use crate::exec::{Awaitable, Mode};

pub(crate) struct FallbacksNode {
    /// The runnable, then its fallbacks.
    steps: Vec<Arc<Step>>,
    /// A tuple of exception types.
    handled: Py<PyAny>,
    exception_key: Option<Py<ErrorKey>>,
}

/// Makes a fallback's input: a copy of the input dict with the last error under the key.
#[pyclass(frozen)]
pub(crate) struct ErrorKey {
    key: Py<PyString>,
}

impl ErrorKey {
    fn input_with<'py>(
        &self,
        input: &Bound<'py, PyAny>,
        error: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let copy = input.cast::<PyDict>()?.copy()?;
        copy.set_item(&self.key, error)?;
        Ok(copy.into_any())
    }
}

#[pymethods]
impl ErrorKey {
    fn __call__<'py>(
        &self,
        input: &Bound<'py, PyAny>,
        error: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.input_with(input, error)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.key)
    }
}

impl FallbacksNode {
    fn check_input(&self, input: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.exception_key.is_some() && !input.is_instance_of::<PyDict>() {
            return Err(value_error(format!(
                "with_fallbacks(exception_key=...) needs a dict input (the error is added to a \
                 copy of it); got {}",
                type_name(input)
            )));
        }
        Ok(())
    }
}

impl Node for FallbacksNode {
    fn invoke(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Py<PyAny>> {
        self.check_input(input)?;
        let handled = self.handled.bind(py);
        let mut first_error: Option<PyErr> = None;
        let mut last_error: Option<Bound<'_, PyAny>> = None;
        for step in &self.steps {
            let result = match (&self.exception_key, &last_error) {
                (Some(key), Some(error)) => {
                    step.invoke(py, &key.get().input_with(input, error)?, config)
                }
                _ => step.invoke(py, input, config),
            };
            match result {
                Ok(value) => return Ok(value),
                // Ctrl-C and cancellation abort the call even if `handled` covers them.
                Err(err)
                    if err.is_instance_of::<PyException>(py) && err.is_instance(py, handled) =>
                {
                    last_error = Some(err.value(py).clone().into_any());
                    first_error.get_or_insert(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(first_error.expect("with_fallbacks always has at least one step"))
    }

    fn mode(&self) -> Mode {
        Step::wrapper_mode(&self.steps)
    }

    fn awaitable<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Awaitable<'py>> {
        self.check_input(input)?;
        let attempts = self
            .steps
            .iter()
            .map(|step| Awaiter::new(step, config))
            .collect::<Vec<_>>();
        let error_key = self.exception_key.as_ref().map(|k| k.clone_ref(py));
        Ok(Awaitable::Other(
            resilience(py, intern!(py, "fallbacks"))?.call1((
                attempts,
                input,
                self.handled.bind(py),
                error_key,
            ))?,
        ))
    }

    fn name(&self, _py: Python<'_>) -> String {
        "WithFallbacks".to_owned()
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let reprs = self
            .steps
            .iter()
            .map(|s| Ok(s.object(py).bind(py).repr()?.to_string()))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(format!(
            "WithFallbacks(runnable={}, fallbacks=[{}])",
            reprs[0],
            reprs[1..].join(", ")
        ))
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        for step in &self.steps {
            step.traverse(visit)?;
        }
        visit.call(&self.handled)?;
        if let Some(key) = &self.exception_key {
            visit.call(key)?;
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `runnable.with_fallbacks(fallbacks, ...)`.
pub(crate) fn with_fallbacks(
    runnable: &Bound<'_, Runnable>,
    fallbacks: &Bound<'_, PyAny>,
    exceptions_to_handle: Option<&Bound<'_, PyAny>>,
    exception_key: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<Runnable>> {
    let py = runnable.py();
    if fallbacks.is_instance_of::<PyString>() || fallbacks.cast::<PyDict>().is_ok() {
        return Err(type_error(format!(
            "with_fallbacks takes a list of runnables; got {}",
            describe(fallbacks)
        )));
    }
    let mut steps = vec![Arc::new(Step::Native(runnable.clone().unbind()))];
    let items = fallbacks.try_iter().map_err(|_| {
        type_error(format!(
            "with_fallbacks takes a list of runnables; got {}",
            describe(fallbacks)
        ))
    })?;
    for (i, item) in items.enumerate() {
        steps.push(Arc::new(Step::coerce(&item?, &format!("fallback {i}"))?));
    }
    let handled = exception_types(
        &exceptions_to_handle
            .filter(|e| !e.is_none())
            .cloned()
            .unwrap_or_else(|| py.get_type::<PyException>().into_any()),
        "exceptions_to_handle",
    )?;
    let exception_key = match exception_key.filter(|k| !k.is_none()) {
        None => None,
        Some(key) => {
            let key = key.cast::<PyString>().map_err(|_| {
                type_error(format!(
                    "exception_key must be a str or None; got {}",
                    describe(key)
                ))
            })?;
            Some(Py::new(
                py,
                ErrorKey {
                    key: key.clone().unbind(),
                },
            )?)
        }
    };
    let node = FallbacksNode {
        steps,
        handled,
        exception_key,
    };
    Py::new(py, Runnable::init(node))
}
