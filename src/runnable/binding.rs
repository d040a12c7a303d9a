//! `with_config` and `bind`: a runnable with a config and call arguments of its own, like
//! langchain_core's `RunnableBinding`.

use std::any::Any;
use std::sync::Arc;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::PyTraverseError;

use super::base::{Node, Runnable, Streaming};
use super::{Args, Step};
use crate::exec::coro::StepFuture;
use crate::exec::stream::Chunks;
use crate::exec::{Caller, Kind};

pub(crate) struct BindingNode {
    pub(crate) bound: Step,
    /// Merged under each call's config.
    pub(crate) config: Py<PyDict>,
    /// Extra keyword arguments for the bound runnable's function (or `invoke`).
    pub(crate) kwargs: Py<PyDict>,
}

impl BindingNode {
    /// The bound runnable's arguments: this binding's config merged under the call's, its
    /// keyword arguments under the call's.
    fn args(&self, args: &Args) -> PyResult<Args> {
        Python::attach(|py| {
            let config = Arc::new(args.config.merged_under(self.config.bind(py))?);
            let kwargs = self.kwargs.bind(py).copy()?;
            if let Some(extra) = args.kwargs(py) {
                kwargs.update(extra.as_mapping())?;
            }
            Ok(Args {
                config,
                kwargs: Some(Arc::new(kwargs.unbind())),
                run: None,
                batched: args.batched,
            })
        })
    }
}

impl Node for BindingNode {
    fn kind(&self) -> Kind {
        self.bound.kind()
    }

    /// The bound runnable, right here (a binding is placed as what it binds).
    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        match self.args(&args) {
            Ok(args) => self.bound.here().run(input, args, mode),
            Err(err) => Box::pin(async move { Err(err) }),
        }
    }

    /// Transparent: the bound runnable's run is the call's (as langchain_core's RunnableBinding).
    fn opens_run(&self) -> bool {
        false
    }

    fn streaming(&self) -> Streaming {
        Streaming::Delegate
    }

    fn transform(self: Arc<Self>, input: Chunks, args: Args, mode: Caller) -> Chunks {
        match self.args(&args) {
            Ok(args) => self.bound.here().stream(input, args, mode),
            Err(err) => Chunks::failed(err, mode),
        }
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

    #[getter]
    fn kwargs(slf: &Bound<'_, Self>) -> Py<PyDict> {
        let node: &BindingNode = slf.as_super().get().node_as();
        node.kwargs.clone_ref(slf.py())
    }
}
