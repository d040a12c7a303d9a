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
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};
use pyo3::{PyTraverseError, PyTypeInfo};

use super::base::{Node, Runnable};
use super::{describe, exception_types, Args, Step};
use crate::config::type_name;
use crate::exec::coro::StepFuture;
use crate::exec::stream::Chunks;
use crate::exec::{Caller, Kind};

pub(crate) struct FallbacksNode {
    /// The runnable, then its fallbacks.
    steps: Vec<Arc<Step>>,
    /// A tuple of exception types.
    handled: Py<PyAny>,
    /// With it, a fallback's input is a copy of the input dict with the last error under it.
    exception_key: Option<Py<PyString>>,
}

impl FallbacksNode {
    fn fallback_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.steps[1..].iter().map(|s| s.object(py)))
    }

    fn check_input(&self, py: Python<'_>, input: &Py<PyAny>) -> PyResult<()> {
        if self.exception_key.is_some() && !input.bind(py).is_instance_of::<PyDict>() {
            return Err(value_error(format!(
                "with_fallbacks(exception_key=...) needs a dict input (the error is added to a \
                 copy of it); got {}",
                type_name(input.bind(py))
            )));
        }
        Ok(())
    }

    /// The input of the next attempt: the input, or with `exception_key` a copy of it holding
    /// the last error.
    fn attempt_input(
        &self,
        py: Python<'_>,
        input: &Py<PyAny>,
        last_error: Option<&PyErr>,
    ) -> PyResult<Py<PyAny>> {
        match (&self.exception_key, last_error) {
            (Some(key), Some(error)) => {
                let copy = input.bind(py).cast::<PyDict>()?.copy()?;
                copy.set_item(key, error.value(py))?;
                Ok(copy.into_any().unbind())
            }
            _ => Ok(input.clone_ref(py)),
        }
    }

    /// Whether `err` moves on to the next fallback: a handled Exception (Ctrl-C and
    /// cancellation abort the call even if `handled` covers them).
    fn handles(&self, py: Python<'_>, err: &PyErr) -> bool {
        err.is_instance_of::<PyException>(py) && err.is_instance(py, self.handled.bind(py))
    }
}

/// An invoked attempt's arguments, as langchain_core's RunnableWithFallbacks gives them: the
/// caller's own config, read over the run's child config (`ensure_config` under
/// `set_config_context(child_config)`). So an attempt is a child of the fallbacks run unless the
/// caller's config names callbacks, and in a batch, where each attempt is a child of the item's
/// run.
fn attempt_args(py: Python<'_>, args: &Args) -> PyResult<Args> {
    let callers_callbacks = args
        .config
        .get(py, "callbacks")?
        .is_some_and(|c| !c.is_none());
    let mut attempt = if args.batched || !callers_callbacks {
        args.child(py)?
    } else {
        args.config_only()
    };
    attempt.kwargs = args.kwargs.clone();
    attempt.batched = args.batched;
    Ok(attempt)
}

impl Node for FallbacksNode {
    fn kind(&self) -> Kind {
        Step::wrapper_kind(&self.steps)
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        Box::pin(async move {
            Python::attach(|py| self.check_input(py, &input))?;
            let mut first_error: Option<PyErr> = None;
            let mut last_error: Option<PyErr> = None;
            for step in &self.steps {
                let (attempt, attempt_args) = Python::attach(|py| {
                    let attempt = self.attempt_input(py, &input, last_error.as_ref())?;
                    Ok::<_, PyErr>((attempt, attempt_args(py, &args)?))
                })?;
                match step.run(attempt, attempt_args, mode).await {
                    Ok(value) => return Ok(value),
                    Err(err) if Python::attach(|py| self.handles(py, &err)) => {
                        if first_error.is_none() {
                            first_error = Some(Python::attach(|py| err.clone_ref(py)));
                        }
                        last_error = Some(err);
                    }
                    Err(err) => return Err(err),
                }
            }
            Err(first_error.expect("with_fallbacks always has at least one step"))
        })
    }

    /// As langchain_core's RunnableWithFallbacks.stream: each runnable's stream in turn until
    /// one gives its first chunk; that one is streamed to its end.
    fn stream_value(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> Chunks {
        let stream = async_stream::stream! {
            if let Err(err) = Python::attach(|py| self.check_input(py, &input)) {
                yield Err(err);
                return;
            }
            let mut first_error: Option<PyErr> = None;
            let mut last_error: Option<PyErr> = None;
            for step in &self.steps {
                let attempt = match Python::attach(|py| self.attempt_input(py, &input, last_error.as_ref())) {
                    Ok(attempt) => attempt,
                    Err(err) => {
                        yield Err(err);
                        return;
                    }
                };
                // Streamed, each attempt is a child of the run.
                let attempt_args = match Python::attach(|py| args.child(py)) {
                    Ok(mut child) => {
                        child.kwargs = args.kwargs.clone();
                        child
                    }
                    Err(err) => {
                        yield Err(err);
                        return;
                    }
                };
                let mut chunks = step.stream(Chunks::once(attempt), attempt_args, mode);
                match futures_util::StreamExt::next(&mut chunks.stream).await {
                    None => return,
                    Some(Ok(first)) => {
                        yield Ok(first);
                        while let Some(chunk) = futures_util::StreamExt::next(&mut chunks.stream).await {
                            yield chunk;
                        }
                        return;
                    }
                    Some(Err(err)) if Python::attach(|py| self.handles(py, &err)) => {
                        if first_error.is_none() {
                            first_error = Some(Python::attach(|py| err.clone_ref(py)));
                        }
                        last_error = Some(err);
                    }
                    Some(Err(err)) => {
                        yield Err(err);
                        return;
                    }
                }
            }
            if let Some(err) = first_error {
                yield Err(err);
            }
        };
        Chunks::made_by(Box::pin(stream), mode)
    }

    fn name(&self, _py: Python<'_>) -> String {
        "RunnableWithFallbacks".to_owned()
    }

    /// langchain_core's (a pydantic model's): the fields that differ from their defaults.
    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let mut repr = format!(
            "RunnableWithFallbacks(runnable={}, fallbacks={}",
            self.steps[0].object(py).bind(py).repr()?,
            self.fallback_list(py)?.repr()?
        );
        let handled = self.handled.bind(py);
        let default = handled.cast::<PyTuple>().is_ok_and(|t| {
            t.len() == 1
                && t.get_item(0)
                    .is_ok_and(|e| e.is(py.get_type::<PyException>().as_any()))
        });
        if !default {
            repr.push_str(&format!(", exceptions_to_handle={}", handled.repr()?));
        }
        if let Some(key) = &self.exception_key {
            repr.push_str(&format!(", exception_key={}", key.bind(py).repr()?));
        }
        repr.push(')');
        Ok(repr)
    }

    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        WithFallbacks::type_object(py)
    }

    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("runnable", self.steps[0].object(py))?;
        fields.set_item("fallbacks", self.fallback_list(py)?)?;
        fields.set_item("exceptions_to_handle", &self.handled)?;
        if let Some(key) = &self.exception_key {
            fields.set_item("exception_key", key)?;
        }
        Ok(fields)
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
    step: Step,
    fallbacks: &Bound<'_, PyAny>,
    exceptions_to_handle: Option<&Bound<'_, PyAny>>,
    exception_key: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<Runnable>> {
    let py = fallbacks.py();
    let node = FallbacksNode::new(step, fallbacks, exceptions_to_handle, exception_key)?;
    Runnable::create(py, node, WithFallbacks, None)
}

impl FallbacksNode {
    fn new(
        step: Step,
        fallbacks: &Bound<'_, PyAny>,
        exceptions_to_handle: Option<&Bound<'_, PyAny>>,
        exception_key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let py = fallbacks.py();
        if fallbacks.is_instance_of::<PyString>() || fallbacks.cast::<PyDict>().is_ok() {
            return Err(type_error(format!(
                "with_fallbacks takes a list of runnables; got {}",
                describe(fallbacks)
            )));
        }
        let mut steps = vec![Arc::new(step)];
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
                Some(key.clone().unbind())
            }
        };
        Ok(Self {
            steps,
            handled,
            exception_key,
        })
    }
}

/// A runnable with fallbacks, like langchain_core's `RunnableWithFallbacks`; made by
/// `with_fallbacks`.
#[pyclass(frozen, subclass, extends = Runnable, module = "fastlcel", name = "WithFallbacks")]
pub(crate) struct WithFallbacks;

impl WithFallbacks {
    fn node<'a>(slf: &'a Bound<'_, Self>) -> PyResult<&'a FallbacksNode> {
        Runnable::node_as(slf.as_super())
    }
}

#[pymethods]
impl WithFallbacks {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(*, runnable, fallbacks, exceptions_to_handle=None, exception_key=None, name=None)")]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<pyo3::PyClassInitializer<Self>> {
        Ok(Runnable::blank_of(cls, &Self::type_object(cls.py()))?.add_subclass(WithFallbacks))
    }

    /// langchain_core's `RunnableWithFallbacks(runnable=..., fallbacks=[...])`.
    #[pyo3(signature = (*, runnable, fallbacks, exceptions_to_handle=None, exception_key=None, name=None))]
    fn __init__(
        slf: &Bound<'_, Self>,
        runnable: &Bound<'_, PyAny>,
        fallbacks: &Bound<'_, PyAny>,
        exceptions_to_handle: Option<&Bound<'_, PyAny>>,
        exception_key: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = crate::validate::name(name, "WithFallbacks(name)")?;
        let step = Step::coerce(runnable, "WithFallbacks runnable")?;
        let node = FallbacksNode::new(step, fallbacks, exceptions_to_handle, exception_key)?;
        Runnable::set_node(slf.as_super(), node, name)
    }

    /// The runnable tried first.
    #[getter]
    fn runnable(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Ok(Self::node(slf)?.steps[0].object(slf.py()))
    }

    /// The runnables tried after it, in order.
    #[getter]
    fn fallbacks<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyList>> {
        Self::node(slf)?.fallback_list(slf.py())
    }

    /// The runnable, then its fallbacks.
    #[getter]
    fn runnables<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let node = Self::node(slf)?;
        PyList::new(py, node.steps.iter().map(|s| s.object(py)))?
            .try_iter()
            .map(Bound::into_any)
    }

    /// A tuple of exception classes.
    #[getter]
    fn exceptions_to_handle(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Ok(Self::node(slf)?.handled.clone_ref(slf.py()))
    }

    #[getter]
    fn exception_key(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyString>>> {
        let py = slf.py();
        Ok(Self::node(slf)?
            .exception_key
            .as_ref()
            .map(|k| k.clone_ref(py)))
    }

    /// Other attributes are the runnable's, a method that returns a runnable applied to every
    /// fallback too (as langchain_core's: `model.with_fallbacks([...]).bind_tools(...)`).
    fn __getattr__<'py>(slf: &Bound<'py, Self>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        Runnable::wrapped_getattr(slf.as_super(), name, "fallbacks_getattr")
    }
}
