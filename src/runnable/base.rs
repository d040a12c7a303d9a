//! `Runnable`: the base class of every fastlcel runnable. What one runs is its [`Node`]; the
//! Python-facing classes (`Lambda`, `Parallel`, ...) are subclasses that only construct nodes.

use std::any::Any;
use std::sync::Arc;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::{PyClassInitializer, PyTraverseError};

use super::{collect_inputs, Calls, Step};
use crate::config::{BatchConfig, RunConfig};
use crate::exec::aio::{GatherSpec, LazyCoroutine};
use crate::exec::context::Context;
use crate::exec::fanout::FanOut;
use crate::exec::{Awaitable, Collect, Cost, Mode};

/// What a runnable runs. Each kind of runnable is one implementation, in a file of its own.
pub(crate) trait Node: Send + Sync + 'static {
    /// Runs on the current thread, in the current context.
    fn invoke(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Py<PyAny>>;
    /// How it runs when awaited.
    fn mode(&self) -> Mode;
    /// Its awaitable, for `Mode::Await`.
    fn awaitable<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Awaitable<'py>>;
    /// A gather of its own to await directly in `ainvoke`, where it has one (Parallel).
    fn gather_spec(
        &self,
        _input: &Bound<'_, PyAny>,
        _config: &Arc<RunConfig>,
    ) -> Option<GatherSpec> {
        None
    }
    fn name(&self, py: Python<'_>) -> String;
    fn repr(&self, py: Python<'_>) -> PyResult<String>;
    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError>;
    fn as_any(&self) -> &dyn Any;
}

#[pyclass(frozen, subclass, module = "fastlcel", name = "Runnable")]
pub(crate) struct Runnable {
    pub(crate) node: Box<dyn Node>,
    /// Its cost as a step of an enclosing fan-out.
    cost: Cost,
}

impl Runnable {
    pub(crate) fn init(node: impl Node) -> PyClassInitializer<Self> {
        PyClassInitializer::from(Self {
            node: Box::new(node),
            cost: Cost::new(),
        })
    }

    /// The node of a runnable known to be of kind `N` (the subclasses' getters).
    pub(crate) fn node_as<N: Node>(&self) -> &N {
        self.node
            .as_any()
            .downcast_ref()
            .expect("a runnable subclass holds its own kind of node")
    }

    pub(crate) fn cost(&self) -> &Cost {
        &self.cost
    }
}

#[pymethods]
impl Runnable {
    /// The runnable's name: a Lambda's function name, `Parallel<a,b>` for a Parallel.
    #[getter(name)]
    fn name_getter(&self, py: Python<'_>) -> PyResult<String> {
        self.py_get_name(py)
    }

    #[pyo3(name = "get_name")]
    fn py_get_name(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.node.name(py))
    }

    #[pyo3(signature = (input, config=None))]
    fn invoke(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let config = Arc::new(RunConfig::parse(config)?);
        Context::run_isolated(py, || self.node.invoke(py, input, &config))
    }

    #[pyo3(signature = (input, config=None))]
    fn ainvoke(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<LazyCoroutine> {
        let config = Arc::new(RunConfig::parse(config)?);
        let spec = match slf.get().node.gather_spec(input, &config) {
            Some(spec) => spec,
            None => GatherSpec {
                work: Arc::new(Calls::Map {
                    step: Step::Native(slf.clone().unbind()),
                    inputs: vec![input.clone().unbind()],
                    configs: BatchConfig::Shared(config),
                }),
                collect: Collect::Single,
                max_concurrency: None,
                return_exceptions: false,
            },
        };
        Ok(LazyCoroutine::new(spec))
    }

    #[pyo3(signature = (inputs, config=None, *, return_exceptions=false))]
    fn batch(
        slf: &Bound<'_, Self>,
        inputs: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        return_exceptions: bool,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let (calls, max_concurrency) = batch_calls(slf, inputs, config)?;
        let values = FanOut::run_blocking(py, Arc::new(calls), max_concurrency, return_exceptions)?;
        Collect::List.build(py, values)
    }

    #[pyo3(signature = (inputs, config=None, *, return_exceptions=false))]
    fn abatch(
        slf: &Bound<'_, Self>,
        inputs: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        return_exceptions: bool,
    ) -> PyResult<LazyCoroutine> {
        let (calls, max_concurrency) = batch_calls(slf, inputs, config)?;
        Ok(LazyCoroutine::new(GatherSpec {
            work: Arc::new(calls),
            collect: Collect::List,
            max_concurrency,
            return_exceptions,
        }))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        self.node.repr(py)
    }

    // NOTE: no __clear__: every cycle through a runnable runs through a Python object it holds
    // (a function, a dict), whose own tp_clear breaks it; __traverse__ lets the collector see it.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.node.traverse(&visit)
    }
}

/// The calls of `batch`/`abatch`: this runnable on every input.
fn batch_calls(
    slf: &Bound<'_, Runnable>,
    inputs: &Bound<'_, PyAny>,
    config: Option<&Bound<'_, PyAny>>,
) -> PyResult<(Calls, Option<usize>)> {
    let inputs = collect_inputs(inputs)?;
    let configs = BatchConfig::parse(config, inputs.len())?;
    let max_concurrency = configs.max_concurrency();
    let calls = Calls::Map {
        step: Step::Native(slf.clone().unbind()),
        inputs,
        configs,
    };
    Ok((calls, max_concurrency))
}
