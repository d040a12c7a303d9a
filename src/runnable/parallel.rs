//! `Parallel`: several steps on one input at once, merged into a dict.

use std::any::Any;
use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3::{PyClassInitializer, PyTraverseError};

use super::base::{Node, Runnable};
use super::{describe, Calls, Step};
use crate::config::RunConfig;
use crate::exec::aio::{self, GatherSpec};
use crate::exec::fanout::FanOut;
use crate::exec::{Awaitable, Collect, Mode};

pub(crate) struct ParallelNode {
    keys: Arc<[Py<PyString>]>,
    steps: Arc<[Step]>,
}

impl ParallelNode {
    /// From a mapping of key to step.
    fn from_mapping(mapping: &Bound<'_, PyDict>) -> PyResult<Self> {
        let mut keys = Vec::with_capacity(mapping.len());
        let mut steps = Vec::with_capacity(mapping.len());
        for (key, value) in mapping.iter() {
            let key = key.cast_into::<PyString>().map_err(|e| {
                PyTypeError::new_err(format!(
                    "Parallel step keys must be str; got {} (use string keys, e.g. \
                     Parallel(summary=...))",
                    describe(e.into_inner().as_any()),
                ))
            })?;
            let step = Step::coerce(&value, &format!("Parallel step {}", key.repr()?))?;
            keys.push(key.unbind());
            steps.push(step);
        }
        Ok(Self {
            keys: keys.into(),
            steps: steps.into(),
        })
    }

    pub(crate) fn keys_joined(&self, py: Python<'_>) -> String {
        let keys: Vec<String> = self.keys.iter().map(|k| k.bind(py).to_string()).collect();
        keys.join(",")
    }

    fn calls(&self, input: &Bound<'_, PyAny>, config: &Arc<RunConfig>) -> Calls {
        Calls::Fan {
            steps: Arc::clone(&self.steps),
            input: input.clone().unbind(),
            config: Arc::clone(config),
        }
    }

    fn spec(&self, input: &Bound<'_, PyAny>, config: &Arc<RunConfig>) -> GatherSpec {
        GatherSpec {
            work: Arc::new(self.calls(input, config)),
            collect: Collect::Dict(Arc::clone(&self.keys)),
            max_concurrency: config.max_concurrency,
            return_exceptions: false,
        }
    }
}

impl Node for ParallelNode {
    fn invoke(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Py<PyAny>> {
        let calls = Arc::new(self.calls(input, config));
        let values = FanOut::run_blocking(py, calls, config.max_concurrency, false)?;
        Collect::Dict(Arc::clone(&self.keys)).build(py, values)
    }

    fn mode(&self) -> Mode {
        Mode::Await
    }

    fn awaitable<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Awaitable<'py>> {
        Ok(Awaitable::Future(aio::start(py, self.spec(input, config))?))
    }

    fn gather_spec(&self, input: &Bound<'_, PyAny>, config: &Arc<RunConfig>) -> Option<GatherSpec> {
        Some(self.spec(input, config))
    }

    fn name(&self, py: Python<'_>) -> String {
        format!("Parallel<{}>", self.keys_joined(py))
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let parts = self
            .keys
            .iter()
            .zip(self.steps.iter())
            .map(|(k, s)| Ok(format!("{}={}", k.bind(py), s.object(py).bind(py).repr()?)))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(format!("Parallel({})", parts.join(", ")))
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        for step in self.steps.iter() {
            step.traverse(visit)?;
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Several steps on one input at once, merged into a dict, like langchain_core's
/// `RunnableParallel`.
#[pyclass(frozen, extends = Runnable, module = "fastlcel", name = "Parallel")]
pub(crate) struct Parallel;

impl Parallel {
    /// A dict met where a runnable was expected.
    pub(crate) fn wrap(mapping: &Bound<'_, PyDict>) -> PyResult<Py<Runnable>> {
        let node = ParallelNode::from_mapping(mapping)?;
        let init = Runnable::init(node).add_subclass(Parallel);
        Ok(Bound::new(mapping.py(), init)?.into_super().unbind())
    }
}

#[pymethods]
impl Parallel {
    #[new]
    #[pyo3(signature = (mapping=None, /, **steps))]
    fn py_new(
        py: Python<'_>,
        mapping: Option<&Bound<'_, PyAny>>,
        steps: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        // Keyword steps win, in the mapping's position (dict-merge semantics).
        let merged = PyDict::new(py);
        if let Some(mapping) = mapping.filter(|m| !m.is_none()) {
            let items = mapping.call_method0("items").map_err(|_| {
                PyTypeError::new_err(format!(
                    "Parallel() takes a dict of steps; got {}",
                    describe(mapping)
                ))
            })?;
            for item in items.try_iter()? {
                let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
                merged.set_item(k, v)?;
            }
        }
        if let Some(steps) = steps {
            merged.update(steps.as_mapping())?;
        }
        let node = ParallelNode::from_mapping(&merged)?;
        Ok(Runnable::init(node).add_subclass(Parallel))
    }

    /// The steps after coercion, in declared order.
    #[getter]
    fn steps<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        let node: &ParallelNode = slf.as_super().get().node_as();
        let dict = PyDict::new(py);
        for (k, s) in node.keys.iter().zip(node.steps.iter()) {
            dict.set_item(k, s.object(py))?;
        }
        Ok(dict)
    }
}
