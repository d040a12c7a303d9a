//! The Python-facing runnables, and coercion of what users put in them.

use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};
use pyo3::{intern, PyTraverseError};

use crate::config::{type_name, BatchConfig, RunConfig};
use crate::exec::aio::{self, GatherSpec, LazyCoroutine};
use crate::exec::fanout::FanOut;
use crate::exec::{Awaitable, Collect, Cost, Mode, Work};

mod lambda;
mod parallel;

pub(crate) use lambda::Lambda;
pub(crate) use parallel::Parallel;

/// One thing a runnable runs, after coercion.
pub(crate) enum Step {
    Lambda(Py<Lambda>),
    Parallel(Py<Parallel>),
    /// A cheap plain callable (`operator.itemgetter`): called inline, even on the event loop.
    Call(Py<PyAny>),
    /// Any object with `invoke` and/or `ainvoke` (a langchain_core Runnable, say).
    Runnable {
        obj: Py<PyAny>,
        has_invoke: bool,
        has_ainvoke: bool,
        cost: Cost,
    },
}

impl Step {
    /// Coerces what a user put in a runnable, like langchain_core's `coerce_to_runnable`.
    /// `owner` names the place in errors, e.g. "Parallel step 'summary'".
    pub(crate) fn coerce(obj: &Bound<'_, PyAny>, owner: &str) -> PyResult<Self> {
        let py = obj.py();
        if let Ok(l) = obj.cast::<Lambda>() {
            return Ok(Step::Lambda(l.clone().unbind()));
        }
        if let Ok(p) = obj.cast::<Parallel>() {
            return Ok(Step::Parallel(p.clone().unbind()));
        }
        if let Ok(d) = obj.cast::<PyDict>() {
            return Ok(Step::Parallel(Py::new(py, Parallel::from_mapping(d)?)?));
        }
        static ITEMGETTER: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        if obj.is_exact_instance(ITEMGETTER.import(py, "operator", "itemgetter")?) {
            return Ok(Step::Call(obj.clone().unbind()));
        }
        let has_invoke = obj.hasattr(intern!(py, "invoke"))?;
        let has_ainvoke = obj.hasattr(intern!(py, "ainvoke"))?;
        if has_invoke || has_ainvoke {
            return Ok(Step::Runnable {
                obj: obj.clone().unbind(),
                has_invoke,
                has_ainvoke,
                cost: Cost::new(),
            });
        }
        if obj.is_callable() {
            return Ok(Step::Lambda(Py::new(py, Lambda::from_callable(obj)?)?));
        }
        Err(PyTypeError::new_err(format!(
            "{owner} is {}; expected a callable, a dict or a runnable",
            describe(obj)
        )))
    }

    pub(crate) fn invoke(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Py<PyAny>> {
        match self {
            Step::Lambda(l) => l.get().call(py, input, config),
            Step::Parallel(p) => p.get().invoke_blocking(py, input, config),
            Step::Call(f) => Ok(f.bind(py).call1((input,))?.unbind()),
            Step::Runnable {
                obj,
                has_invoke: true,
                ..
            } => Ok(obj
                .bind(py)
                .call_method1(intern!(py, "invoke"), (input, config.to_dict(py)?))?
                .unbind()),
            Step::Runnable { obj, .. } => Err(PyTypeError::new_err(format!(
                "{} has only `ainvoke`; it cannot run synchronously. Use `await ...ainvoke(...)`",
                describe(obj.bind(py))
            ))),
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        match self {
            Step::Lambda(l) => l.get().mode(),
            Step::Parallel(_) => Mode::Await,
            Step::Call(_) => Mode::Inline,
            Step::Runnable { has_ainvoke, .. } => {
                if *has_ainvoke {
                    Mode::Await
                } else {
                    Mode::Pool
                }
            }
        }
    }

    /// The awaitable of a step whose mode is `Await`.
    pub(crate) fn awaitable<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Awaitable<'py>> {
        Ok(match self {
            Step::Lambda(l) => Awaitable::Other(l.get().acall(py, input, config)?),
            Step::Parallel(p) => {
                Awaitable::Future(aio::start(py, p.get().gather_spec(input, config))?)
            }
            Step::Runnable { obj, .. } => Awaitable::Other(
                obj.bind(py)
                    .call_method1(intern!(py, "ainvoke"), (input, config.to_dict(py)?))?,
            ),
            Step::Call(_) => unreachable!("inline steps are never awaited"),
        })
    }

    /// The step's cost record; `None` for steps that are always fast.
    pub(crate) fn cost(&self) -> Option<&Cost> {
        match self {
            Step::Lambda(l) => Some(l.get().cost()),
            Step::Parallel(p) => Some(p.get().cost()),
            Step::Call(_) => None,
            Step::Runnable { cost, .. } => Some(cost),
        }
    }

    /// The Python object the user sees for this step (`Parallel.steps`, reprs).
    pub(crate) fn object(&self, py: Python<'_>) -> Py<PyAny> {
        match self {
            Step::Lambda(l) => l.clone_ref(py).into_any(),
            Step::Parallel(p) => p.clone_ref(py).into_any(),
            Step::Call(obj) | Step::Runnable { obj, .. } => obj.clone_ref(py),
        }
    }

    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Step::Lambda(l) => visit.call(l),
            Step::Parallel(p) => visit.call(p),
            Step::Call(obj) | Step::Runnable { obj, .. } => visit.call(obj),
        }
    }
}

/// "an int", "a dict", "None": for error messages.
pub(crate) fn describe(obj: &Bound<'_, PyAny>) -> String {
    if obj.is_none() {
        return "None".to_owned();
    }
    let name = type_name(obj);
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

/// The calls of one fan-out, as `exec` sees them.
pub(crate) enum Calls {
    /// Every step on the same input (`Parallel.invoke`).
    Fan {
        steps: Arc<[Step]>,
        input: Py<PyAny>,
        config: Arc<RunConfig>,
    },
    /// One step on many inputs (`batch`).
    Map {
        step: Step,
        inputs: Vec<Py<PyAny>>,
        configs: BatchConfig,
    },
}

impl Calls {
    fn item(&self, i: usize) -> (&Step, &Py<PyAny>, &Arc<RunConfig>) {
        match self {
            Calls::Fan {
                steps,
                input,
                config,
            } => (&steps[i], input, config),
            Calls::Map {
                step,
                inputs,
                configs,
            } => (step, &inputs[i], configs.get(i)),
        }
    }
}

impl Work for Calls {
    fn len(&self) -> usize {
        match self {
            Calls::Fan { steps, .. } => steps.len(),
            Calls::Map { inputs, .. } => inputs.len(),
        }
    }

    fn run(&self, py: Python<'_>, i: usize) -> PyResult<Py<PyAny>> {
        let (step, input, config) = self.item(i);
        step.invoke(py, input.bind(py), config)
    }

    fn mode(&self, i: usize) -> Mode {
        self.item(i).0.mode()
    }

    fn awaitable<'py>(&self, py: Python<'py>, i: usize) -> PyResult<Awaitable<'py>> {
        let (step, input, config) = self.item(i);
        step.awaitable(py, input.bind(py), config)
    }

    fn cost(&self, i: usize) -> Option<&Cost> {
        self.item(i).0.cost()
    }
}

/// Collects `inputs` of a batch call.
pub(crate) fn collect_inputs(inputs: &Bound<'_, PyAny>) -> PyResult<Vec<Py<PyAny>>> {
    if inputs.is_instance_of::<pyo3::types::PyString>() || inputs.cast::<PyDict>().is_ok() {
        return Err(PyTypeError::new_err(format!(
            "batch inputs must be a list of inputs; got {}",
            describe(inputs)
        )));
    }
    inputs
        .try_iter()
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "batch inputs must be a list of inputs; got {}",
                describe(inputs)
            ))
        })?
        .map(|item| item.map(Bound::unbind))
        .collect()
}

pub(crate) fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Lambda>()?;
    m.add_class::<Parallel>()?;
    Ok(())
}

/// `batch` of any runnable: `step` on every input, on the caller's thread and the pool.
pub(crate) fn batch(
    py: Python<'_>,
    step: Step,
    inputs: &Bound<'_, PyAny>,
    config: Option<&Bound<'_, PyAny>>,
    return_exceptions: bool,
) -> PyResult<Py<PyAny>> {
    let inputs = collect_inputs(inputs)?;
    let configs = BatchConfig::parse(config, inputs.len())?;
    let max_concurrency = configs.max_concurrency();
    let calls = Calls::Map {
        step,
        inputs,
        configs,
    };
    let values = FanOut::run_blocking(py, Arc::new(calls), max_concurrency, return_exceptions)?;
    Collect::List.build(py, values)
}

/// `abatch` of any runnable: the awaitable counterpart of [`batch`].
pub(crate) fn abatch(
    step: Step,
    inputs: &Bound<'_, PyAny>,
    config: Option<&Bound<'_, PyAny>>,
    return_exceptions: bool,
) -> PyResult<LazyCoroutine> {
    let inputs = collect_inputs(inputs)?;
    let configs = BatchConfig::parse(config, inputs.len())?;
    let max_concurrency = configs.max_concurrency();
    Ok(LazyCoroutine::new(GatherSpec {
        work: Arc::new(Calls::Map {
            step,
            inputs,
            configs,
        }),
        collect: Collect::List,
        max_concurrency,
        return_exceptions,
    }))
}
