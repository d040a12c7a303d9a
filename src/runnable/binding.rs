//! `with_config` and `bind`: a runnable with a config and call arguments of its own, like
//! langchain_core's `RunnableBinding`.

use std::any::Any;
use std::sync::Arc;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::PyTraverseError;

use super::base::{Node, Runnable};
use super::chain_helper;
use super::Step;
use crate::config::RunConfig;
use crate::exec::{Awaitable, Mode};

pub(crate) struct BindingNode {
    pub(crate) bound: Step,
    /// Merged under each call's config.
    pub(crate) config: Py<PyDict>,
    /// Extra keyword arguments for the bound runnable's function (or `invoke`).
    pub(crate) kwargs: Py<PyDict>,
}

impl BindingNode {
    fn config(&self, py: Python<'_>, call: &RunConfig) -> PyResult<Arc<RunConfig>> {
        Ok(Arc::new(call.merged_under(self.config.bind(py))?))
    }
}

impl Node for BindingNode {
    fn invoke(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Py<PyAny>> {
        let config = self.config(py, config)?;
        self.bound
            .invoke_with(py, input, &config, Some(self.kwargs.bind(py)))
    }

    fn mode(&self) -> Mode {
        self.bound.mode()
    }

    fn awaitable<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Awaitable<'py>> {
        let config = self.config(py, config)?;
        let coro = chain_helper(py, "binding")?.call1((
            self.bound.object(py),
            input,
            config.to_dict(py)?,
            self.kwargs.bind(py),
        ))?;
        Ok(Awaitable::Other(coro))
    }

    fn name(&self, py: Python<'_>) -> String {
        self.bound.name(py)
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "{}.bind(config={}, kwargs={})",
            self.bound.object(py).bind(py).repr()?,
            self.config.bind(py).repr()?,
            self.kwargs.bind(py).repr()?
        ))
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.bound.traverse(visit)?;
        visit.call(&self.config)?;
        visit.call(&self.kwargs)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A runnable with a config and call arguments of its own (`with_config`, `bind`).
#[pyclass(frozen, extends = Runnable, module = "fastlcel", name = "Binding")]
pub(crate) struct Binding;

impl Binding {
    pub(crate) fn make(py: Python<'_>, node: BindingNode) -> PyResult<Py<Runnable>> {
        Runnable::create(py, node, Binding)
    }
}

#[pymethods]
impl Binding {
    /// The runnable that is bound.
    #[getter]
    fn bound(slf: &Bound<'_, Self>) -> Py<PyAny> {
        let node: &BindingNode = slf.as_super().get().node_as();
        node.bound.object(slf.py())
    }

    #[getter]
    fn config(slf: &Bound<'_, Self>) -> Py<PyDict> {
        let node: &BindingNode = slf.as_super().get().node_as();
        node.config.clone_ref(slf.py())
    }

    /// `config` merged under this binding's own config (for the streaming helpers).
    fn _merge_config(
        slf: &Bound<'_, Self>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyDict>> {
        let py = slf.py();
        let node: &BindingNode = slf.as_super().get().node_as();
        let call = RunConfig::parse(config)?;
        Ok(node.config(py, &call)?.user_dict(py).unbind())
    }

    #[getter]
    fn kwargs(slf: &Bound<'_, Self>) -> Py<PyDict> {
        let node: &BindingNode = slf.as_super().get().node_as();
        node.kwargs.clone_ref(slf.py())
    }
}
