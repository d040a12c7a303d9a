//! `Parallel`: several steps on one input at once, merged into a dict.

use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3::PyTraverseError;

use super::{abatch, batch, describe, Calls, Step};
use crate::config::RunConfig;
use crate::exec::aio::{GatherSpec, LazyCoroutine};
use crate::exec::fanout::FanOut;
use crate::exec::{Collect, Cost};

#[pyclass(frozen, module = "fastlcel", name = "Parallel")]
pub(crate) struct Parallel {
    keys: Arc<[Py<PyString>]>,
    steps: Arc<[Step]>,
    /// Its cost as a step of an enclosing fan-out.
    cost: Cost,
}

impl Parallel {
    /// From a mapping of key to step (a dict met where a runnable was expected).
    pub(crate) fn from_mapping(mapping: &Bound<'_, PyDict>) -> PyResult<Self> {
        Self::from_items(mapping.iter().map(Ok))
    }

    fn from_items<'py>(
        items: impl Iterator<Item = PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)>>,
    ) -> PyResult<Self> {
        let mut keys = Vec::new();
        let mut steps = Vec::new();
        for item in items {
            let (key, value) = item?;
            let key = key.cast_into::<PyString>().map_err(|e| {
                PyTypeError::new_err(format!(
                    "Parallel step keys must be str; got {} ({})",
                    describe(e.into_inner().as_any()),
                    "use string keys like Parallel(summary=...)"
                ))
            })?;
            let step = Step::coerce(&value, &format!("Parallel step {}", key.repr()?))?;
            keys.push(key.unbind());
            steps.push(step);
        }
        Ok(Self {
            keys: keys.into(),
            steps: steps.into(),
            cost: Cost::new(),
        })
    }

    fn calls(&self, input: &Bound<'_, PyAny>, config: &Arc<RunConfig>) -> Calls {
        Calls::Fan {
            steps: Arc::clone(&self.steps),
            input: input.clone().unbind(),
            config: Arc::clone(config),
        }
    }

    pub(crate) fn cost(&self) -> &Cost {
        &self.cost
    }

    pub(crate) fn invoke_blocking(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Py<PyAny>> {
        let calls = Arc::new(self.calls(input, config));
        let values = FanOut::run_blocking(py, calls, config.max_concurrency, false)?;
        Collect::Dict(Arc::clone(&self.keys)).build(py, values)
    }

    pub(crate) fn gather_spec(
        &self,
        input: &Bound<'_, PyAny>,
        config: &Arc<RunConfig>,
    ) -> GatherSpec {
        GatherSpec {
            work: Arc::new(self.calls(input, config)),
            collect: Collect::Dict(Arc::clone(&self.keys)),
            max_concurrency: config.max_concurrency,
            return_exceptions: false,
        }
    }
}

#[pymethods]
impl Parallel {
    #[new]
    #[pyo3(signature = (mapping=None, /, **steps))]
    fn py_new(
        mapping: Option<&Bound<'_, PyAny>>,
        steps: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let py = steps.map(|s| s.py()).or(mapping.map(|m| m.py()));
        let Some(py) = py else {
            return Self::from_items(std::iter::empty());
        };
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
        Self::from_mapping(&merged)
    }

    /// The steps after coercion, in declared order.
    #[getter]
    fn steps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (k, s) in self.keys.iter().zip(self.steps.iter()) {
            dict.set_item(k, s.object(py))?;
        }
        Ok(dict)
    }

    fn get_name(&self, py: Python<'_>) -> String {
        let keys: Vec<String> = self.keys.iter().map(|k| k.bind(py).to_string()).collect();
        format!("Parallel<{}>", keys.join(","))
    }

    #[pyo3(signature = (input, config=None))]
    fn invoke(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.invoke_blocking(py, input, &Arc::new(RunConfig::parse(config)?))
    }

    #[pyo3(signature = (input, config=None))]
    fn ainvoke(
        &self,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<LazyCoroutine> {
        let config = Arc::new(RunConfig::parse(config)?);
        Ok(LazyCoroutine::new(self.gather_spec(input, &config)))
    }

    #[pyo3(signature = (inputs, config=None, *, return_exceptions=false))]
    fn batch(
        slf: &Bound<'_, Self>,
        inputs: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        return_exceptions: bool,
    ) -> PyResult<Py<PyAny>> {
        let step = Step::Parallel(slf.clone().unbind());
        batch(slf.py(), step, inputs, config, return_exceptions)
    }

    #[pyo3(signature = (inputs, config=None, *, return_exceptions=false))]
    fn abatch(
        slf: &Bound<'_, Self>,
        inputs: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        return_exceptions: bool,
    ) -> PyResult<LazyCoroutine> {
        abatch(
            Step::Parallel(slf.clone().unbind()),
            inputs,
            config,
            return_exceptions,
        )
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let parts = self
            .keys
            .iter()
            .zip(self.steps.iter())
            .map(|(k, s)| Ok(format!("{}={}", k.bind(py), s.object(py).bind(py).repr()?)))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(format!("Parallel({})", parts.join(", ")))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for step in self.steps.iter() {
            step.traverse(&visit)?;
        }
        Ok(())
    }
}
