//! `map()`: a runnable run on every item of a list input, like langchain_core's `RunnableEach`
//! (its `batch`, as a step).

use std::any::Any;
use std::sync::Arc;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::{PyTraverseError, PyTypeInfo};

use super::base::{Node, Runnable};
use super::{collect_inputs, Args, Calls, Step};
use crate::config::BatchConfig;
use crate::exec::coro::StepFuture;
use crate::exec::progress;
use crate::exec::{fan_out, Caller, Collect, FanOpts, Kind};

pub(crate) struct EachNode {
    inner: Arc<Step>,
}

impl Node for EachNode {
    /// Always awaited on the loop, as a Parallel: its items run there as tasks, or on the pool.
    fn kind(&self) -> Kind {
        Kind::awaited_around([self.inner.kind()])
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        Box::pin(async move {
            let inputs = Python::attach(|py| collect_inputs(input.bind(py)))?;
            let opts = FanOpts {
                max_concurrency: args.config.max_concurrency,
                return_exceptions: false,
            };
            let claim = args.config.claim_progress();
            let calls = Calls::Map {
                step: Arc::clone(&self.inner),
                inputs,
                configs: BatchConfig::Shared(Arc::clone(&args.config)),
                kwargs: args.kwargs.clone(),
                batched: false,
            };
            let (work, _bar) = progress::shown(Arc::new(calls), claim, |py| self.name(py))?;
            let values = fan_out(work, opts, mode).await?;
            Python::attach(|py| Collect::List.build(py, values))
        })
    }

    fn name(&self, py: Python<'_>) -> String {
        format!("RunnableEach<{}>", self.inner.name(py))
    }

    fn named_by_class(&self) -> bool {
        false
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "RunnableEach(bound={})",
            self.inner.object(py).bind(py).repr()?
        ))
    }

    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        Each::type_object(py)
    }

    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("bound", self.inner.object(py))?;
        Ok(fields)
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.inner.traverse(visit)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A runnable run on every item of a list input, like langchain_core's `RunnableEach`; made
/// by `map()`.
#[pyclass(frozen, subclass, extends = Runnable, module = "fastlcel", name = "Each")]
pub(crate) struct Each;

impl Each {
    pub(crate) fn make(py: Python<'_>, step: Step) -> PyResult<Py<Runnable>> {
        let node = EachNode {
            inner: Arc::new(step),
        };
        Runnable::create(py, node, Each, None)
    }
}

#[pymethods]
impl Each {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(*, bound, name=None)")]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<pyo3::PyClassInitializer<Self>> {
        Ok(Runnable::blank_of(cls, &Self::type_object(cls.py()))?.add_subclass(Each))
    }

    /// langchain_core's `RunnableEach(bound=...)`.
    #[pyo3(signature = (*, bound, name=None))]
    fn __init__(
        slf: &Bound<'_, Self>,
        bound: &Bound<'_, PyAny>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = crate::validate::name(name, "Each(name)")?;
        let node = EachNode {
            inner: Arc::new(Step::coerce(bound, "Each bound")?),
        };
        Runnable::set_node(slf.as_super(), node, name)
    }

    /// The runnable run on every item.
    #[getter]
    fn bound(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let node: &EachNode = Runnable::node_as(slf.as_super())?;
        Ok(node.inner.object(slf.py()))
    }
}
