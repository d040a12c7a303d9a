//! The Python-facing runnables, and coercion of what users put in them.

use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};
use pyo3::{intern, PyTraverseError};

use crate::config::{type_name, BatchConfig, RunConfig};
use crate::exec::{Awaitable, Cost, Mode, Work};

mod base;
mod lambda;
mod parallel;

pub(crate) use base::Runnable;
use lambda::Lambda;
use parallel::Parallel;

/// One thing a runnable runs, after coercion.
pub(crate) enum Step {
    /// A fastlcel runnable.
    Native(Py<Runnable>),
    /// A cheap plain callable (`operator.itemgetter`): called inline, even on the event loop.
    Call(Py<PyAny>),
    /// Any other object with `invoke` and/or `ainvoke` (a langchain_core Runnable, say).
    Foreign {
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
        if let Ok(r) = obj.cast::<Runnable>() {
            return Ok(Step::Native(r.clone().unbind()));
        }
        if let Ok(d) = obj.cast::<PyDict>() {
            return Ok(Step::Native(Parallel::wrap(d)?));
        }
        static ITEMGETTER: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        if obj.is_exact_instance(ITEMGETTER.import(py, "operator", "itemgetter")?) {
            return Ok(Step::Call(obj.clone().unbind()));
        }
        let has_invoke = obj.hasattr(intern!(py, "invoke"))?;
        let has_ainvoke = obj.hasattr(intern!(py, "ainvoke"))?;
        if has_invoke || has_ainvoke {
            return Ok(Step::Foreign {
                obj: obj.clone().unbind(),
                has_invoke,
                has_ainvoke,
                cost: Cost::new(),
            });
        }
        if obj.is_callable() {
            return Ok(Step::Native(Lambda::wrap(obj)?));
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
            Step::Native(r) => r.get().node.invoke(py, input, config),
            Step::Call(f) => Ok(f.bind(py).call1((input,))?.unbind()),
            Step::Foreign {
                obj,
                has_invoke: true,
                ..
            } => Ok(obj
                .bind(py)
                .call_method1(intern!(py, "invoke"), (input, config.to_dict(py)?))?
                .unbind()),
            Step::Foreign { obj, .. } => Err(PyTypeError::new_err(format!(
                "{} has only `ainvoke`; it cannot run synchronously. Use `await ...ainvoke(...)`",
                describe(obj.bind(py))
            ))),
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        match self {
            Step::Native(r) => r.get().node.mode(),
            Step::Call(_) => Mode::Inline,
            Step::Foreign { has_ainvoke, .. } => {
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
            Step::Native(r) => r.get().node.awaitable(py, input, config)?,
            Step::Foreign { obj, .. } => Awaitable::Other(
                obj.bind(py)
                    .call_method1(intern!(py, "ainvoke"), (input, config.to_dict(py)?))?,
            ),
            Step::Call(_) => unreachable!("inline steps are never awaited"),
        })
    }

    /// The step's cost record; `None` for steps that are always fast.
    pub(crate) fn cost(&self) -> Option<&Cost> {
        match self {
            Step::Native(r) => Some(r.get().cost()),
            Step::Call(_) => None,
            Step::Foreign { cost, .. } => Some(cost),
        }
    }

    /// The Python object the user sees for this step (`Parallel.steps`, reprs).
    pub(crate) fn object(&self, py: Python<'_>) -> Py<PyAny> {
        match self {
            Step::Native(r) => r.clone_ref(py).into_any(),
            Step::Call(obj) | Step::Foreign { obj, .. } => obj.clone_ref(py),
        }
    }

    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Step::Native(r) => visit.call(r),
            Step::Call(obj) | Step::Foreign { obj, .. } => visit.call(obj),
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
    m.add_class::<Runnable>()?;
    m.add_class::<Lambda>()?;
    m.add_class::<Parallel>()?;
    Ok(())
}
