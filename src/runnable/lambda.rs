//! `Lambda`: a function (sync, async or both) as a runnable.

use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{IntoPyDict, PyString};
use pyo3::{intern, PyTraverseError};

use super::{abatch, batch, describe, Calls, Step};
use crate::config::{BatchConfig, RunConfig};
use crate::exec::aio::{GatherSpec, LazyCoroutine};
use crate::exec::context::Context;
use crate::exec::{Collect, Cost, Mode};

/// A Python function and what was learnt about it once, at construction.
struct Func {
    func: Py<PyAny>,
    /// It has a parameter named `config`: it receives the call's config dict.
    takes_config: bool,
}

impl Func {
    fn new(func: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Self {
            func: func.clone().unbind(),
            takes_config: takes_config(func)?,
        })
    }

    fn call<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &RunConfig,
    ) -> PyResult<Bound<'py, PyAny>> {
        let func = self.func.bind(py);
        if self.takes_config {
            let kwargs = [(intern!(py, "config"), config.to_dict(py)?)].into_py_dict(py)?;
            func.call((input,), Some(&kwargs))
        } else {
            func.call1((input,))
        }
    }
}

#[pyclass(frozen, module = "fastlcel", name = "Lambda")]
pub(crate) struct Lambda {
    func: Option<Func>,
    afunc: Option<Func>,
    name: Py<PyString>,
    cost: Cost,
}

impl Lambda {
    /// A plain callable met where a runnable was expected.
    pub(crate) fn from_callable(func: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::new(func, None, None)
    }

    fn new(
        func: &Bound<'_, PyAny>,
        afunc: Option<&Bound<'_, PyAny>>,
        name: Option<Bound<'_, PyString>>,
    ) -> PyResult<Self> {
        let py = func.py();
        if !func.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "Lambda expects a callable; got {}",
                describe(func)
            )));
        }
        let name = match name {
            Some(name) => name,
            None => match func.getattr(intern!(py, "__name__")) {
                Ok(n) => n.str()?,
                Err(_) => func.get_type().name()?.str()?,
            },
        };
        let afunc = afunc.filter(|a| !a.is_none());
        let (func, afunc) = match afunc {
            Some(afunc) if is_async_callable(afunc)? => {
                if is_async_callable(func)? {
                    return Err(PyTypeError::new_err(
                        "Lambda got an async function as `func` and also an `afunc`; when \
                         passing both, `func` must be a regular (sync) function",
                    ));
                }
                (Some(func), Some(afunc.clone()))
            }
            Some(afunc) => {
                return Err(PyTypeError::new_err(format!(
                    "Lambda `afunc` must be an async function (async def); got {}",
                    describe(afunc)
                )))
            }
            None if is_async_callable(func)? => (None, Some(func.clone())),
            None => (Some(func), None),
        };
        Ok(Self {
            func: func.map(Func::new).transpose()?,
            afunc: afunc.as_ref().map(Func::new).transpose()?,
            name: name.unbind(),
            cost: Cost::new(),
        })
    }

    /// Runs the sync function on the current thread.
    pub(crate) fn call(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Py<PyAny>> {
        let Some(func) = &self.func else {
            return Err(PyTypeError::new_err(format!(
                "Lambda({}) has only an async function; it cannot be invoked synchronously. \
                 Use `await runnable.ainvoke(...)` (or abatch) instead",
                self.name.bind(py)
            )));
        };
        Ok(func.call(py, input, config)?.unbind())
    }

    /// The coroutine of the async function (only for `Mode::Await`).
    pub(crate) fn acall<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let afunc = self
            .afunc
            .as_ref()
            .expect("Mode::Await Lambdas have an afunc");
        afunc.call(py, input, config)
    }

    pub(crate) fn cost(&self) -> &Cost {
        &self.cost
    }

    pub(crate) fn mode(&self) -> Mode {
        if self.afunc.is_some() {
            Mode::Await
        } else {
            Mode::Pool
        }
    }
}

#[pymethods]
impl Lambda {
    #[new]
    #[pyo3(signature = (func, afunc=None, name=None))]
    fn py_new(
        func: &Bound<'_, PyAny>,
        afunc: Option<&Bound<'_, PyAny>>,
        name: Option<Bound<'_, PyString>>,
    ) -> PyResult<Self> {
        Self::new(func, afunc, name)
    }

    #[getter]
    fn func(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.func.as_ref().map(|f| f.func.clone_ref(py))
    }

    #[getter]
    fn afunc(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.afunc.as_ref().map(|f| f.func.clone_ref(py))
    }

    #[getter(name)]
    fn name_getter(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }

    #[pyo3(name = "get_name")]
    fn py_get_name(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }

    #[pyo3(signature = (input, config=None))]
    fn invoke(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let config = Arc::new(RunConfig::parse(config)?);
        Context::run_isolated(py, || self.call(py, input, &config))
    }

    #[pyo3(signature = (input, config=None))]
    fn ainvoke(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<LazyCoroutine> {
        let config = Arc::new(RunConfig::parse(config)?);
        Ok(LazyCoroutine::new(GatherSpec {
            work: Arc::new(Calls::Map {
                step: Step::Lambda(slf.clone().unbind()),
                inputs: vec![input.clone().unbind()],
                configs: BatchConfig::Shared(config),
            }),
            collect: Collect::Single,
            max_concurrency: None,
            return_exceptions: false,
        }))
    }

    #[pyo3(signature = (inputs, config=None, *, return_exceptions=false))]
    fn batch(
        slf: &Bound<'_, Self>,
        inputs: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        return_exceptions: bool,
    ) -> PyResult<Py<PyAny>> {
        let step = Step::Lambda(slf.clone().unbind());
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
            Step::Lambda(slf.clone().unbind()),
            inputs,
            config,
            return_exceptions,
        )
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("Lambda({})", self.name.bind(py))
    }

    // NOTE: no __clear__: a cycle through a Lambda always runs through its function, whose own
    // tp_clear breaks it; __traverse__ is what lets the collector see the cycle.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for f in self.func.iter().chain(self.afunc.iter()) {
            visit.call(&f.func)?;
        }
        Ok(())
    }
}

/// `inspect.iscoroutinefunction`, also for objects with an `async def __call__`.
fn is_async_callable(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = obj.py();
    static IS_COROFN: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let is_corofn = IS_COROFN.import(py, "inspect", "iscoroutinefunction")?;
    if is_corofn.call1((obj,))?.is_truthy()? {
        return Ok(true);
    }
    match obj.getattr(intern!(py, "__call__")) {
        Ok(call) => is_corofn.call1((call,))?.is_truthy(),
        Err(_) => Ok(false),
    }
}

/// Whether `func` has a parameter named `config` (langchain_core's `accepts_config`).
fn takes_config(func: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = func.py();
    static SIGNATURE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let signature = SIGNATURE.import(py, "inspect", "signature")?;
    match signature.call1((func,)) {
        Ok(sig) => sig
            .getattr(intern!(py, "parameters"))?
            .contains(intern!(py, "config")),
        // Builtins and some C callables have no signature: they take no config.
        Err(_) => Ok(false),
    }
}
