//! The Python-facing runnables, and coercion of what users put in them.

use std::sync::Arc;

use pyo3::exceptions::PyBaseException;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::errors::{type_error, value_error};
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use pyo3::{intern, PyTraverseError};

use crate::config::{type_name, BatchConfig, RunConfig};
use crate::exec::aio::{self, GatherSpec};
use crate::exec::{Awaitable, Collect, Cost, Mode, Work};

mod base;
mod binding;
mod branch;
mod cache;
mod fallbacks;
mod lambda;
mod limited;
mod parallel;
mod passthrough;
mod retry;
mod sequence;
mod timeout;

pub(crate) use base::Runnable;
use binding::Binding;
use branch::Branch;
use cache::Cached;
use lambda::{is_generator_function, Generator, Lambda, LambdaKind, LambdaNode};
use parallel::Parallel;
use passthrough::{Assign, Passthrough, Pick};
use sequence::Sequence;

/// One thing a runnable runs, after coercion.
pub(crate) enum Step {
    /// A fastlcel runnable.
    Native(Py<Runnable>),
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
            // Too cheap to hand off: it runs inline, even on the event loop.
            return Ok(Step::Native(Lambda::wrap(obj, LambdaKind::Inline)?));
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
            // langchain_core's coercion: a generator function becomes a RunnableGenerator, which
            // is handed the stream of input chunks; any other callable, a RunnableLambda.
            let kind = if is_generator_function(obj)? {
                LambdaKind::Generator
            } else {
                LambdaKind::Function
            };
            return Ok(Step::Native(Lambda::wrap(obj, kind)?));
        }
        Err(type_error(format!(
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
        self.invoke_with(py, input, config, None)
    }

    /// `invoke` with extra keyword arguments (from `bind`): they reach a Lambda's function or a
    /// foreign runnable's `invoke`; other runnables take none.
    pub(crate) fn invoke_with(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: &Arc<RunConfig>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let kwargs = kwargs.filter(|k| !k.is_empty());
        match self {
            Step::Native(r) => match (kwargs, r.get().node.as_any().downcast_ref::<LambdaNode>()) {
                (Some(kwargs), Some(lambda)) => lambda.call(py, input, config, Some(kwargs)),
                _ => r.get().node.invoke(py, input, config),
            },
            Step::Foreign {
                obj,
                has_invoke: true,
                ..
            } => Ok(obj
                .bind(py)
                .call_method(intern!(py, "invoke"), (input, config.to_dict(py)?), kwargs)?
                .unbind()),
            Step::Foreign { obj, .. } => {
                let make = || {
                    obj.bind(py)
                        .call_method1(intern!(py, "ainvoke"), (input, config.to_dict(py)?))
                };
                if let Some(result) = aio::await_on_caller_loop(py, make) {
                    return result;
                }
                Err(type_error(format!(
                    "{} has only `ainvoke`; it cannot run synchronously. Use `await ...ainvoke(...)`",
                    describe(obj.bind(py))
                )))
            }
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        match self {
            Step::Native(r) => r.get().node.mode(),
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
        })
    }

    /// An awaitable of the step on `input`, whatever its mode: its own for an `Await` step, else
    /// the future of a one-call gather (the step runs on the pool, or at once if it is cheap).
    pub(crate) fn awaitable_any<'py>(
        self: &Arc<Self>,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if self.mode() == Mode::Await {
            return Ok(match self.awaitable(py, input, config)? {
                Awaitable::Future(aw) | Awaitable::Other(aw) => aw,
            });
        }
        aio::start(
            py,
            GatherSpec {
                work: Arc::new(Calls::one(self, input, config)),
                collect: Collect::Single,
                max_concurrency: None,
                return_exceptions: false,
            },
        )
    }

    /// Its name in messages: a runnable's name, else its repr or type.
    pub(crate) fn name(&self, py: Python<'_>) -> String {
        match self {
            Step::Native(r) => r.get().node.name(py),
            Step::Foreign { obj, .. } => obj
                .bind(py)
                .call_method0(intern!(py, "get_name"))
                .and_then(|n| n.extract::<String>())
                .unwrap_or_else(|_| type_name(obj.bind(py))),
        }
    }

    /// How a wrapper around `steps` that has a sync path of its own runs when awaited: through
    /// its own awaitable if a step has one, else its sync path on the pool.
    pub(crate) fn wrapper_mode<'a>(steps: impl IntoIterator<Item = &'a Arc<Step>>) -> Mode {
        if steps.into_iter().any(|s| s.mode() == Mode::Await) {
            Mode::Await
        } else {
            Mode::Pool
        }
    }

    /// The step's cost record; `None` for steps that are always fast.
    pub(crate) fn cost(&self) -> Option<&Cost> {
        match self {
            Step::Native(r) => Some(r.get().cost()),
            Step::Foreign { cost, .. } => Some(cost),
        }
    }

    pub(crate) fn clone_ref(&self, py: Python<'_>) -> Self {
        match self {
            Step::Native(r) => Step::Native(r.clone_ref(py)),
            Step::Foreign {
                obj,
                has_invoke,
                has_ainvoke,
                ..
            } => Step::Foreign {
                obj: obj.clone_ref(py),
                has_invoke: *has_invoke,
                has_ainvoke: *has_ainvoke,
                cost: Cost::new(),
            },
        }
    }

    /// The Python object the user sees for this step (`Parallel.steps`, reprs).
    pub(crate) fn object(&self, py: Python<'_>) -> Py<PyAny> {
        match self {
            Step::Native(r) => r.clone_ref(py).into_any(),
            Step::Foreign { obj, .. } => obj.clone_ref(py),
        }
    }

    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Step::Native(r) => visit.call(r),
            Step::Foreign { obj, .. } => visit.call(obj),
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

/// Whether `obj` is an exception class.
pub(crate) fn is_exception_type(obj: &Bound<'_, PyAny>) -> bool {
    obj.cast::<PyType>()
        .is_ok_and(|t| t.is_subclass_of::<PyBaseException>().unwrap_or(false))
}

/// An exception class or a sequence of them, as a tuple for `isinstance`. `what` names the
/// argument in errors.
pub(crate) fn exception_types(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Py<PyAny>> {
    let py = obj.py();
    if is_exception_type(obj) {
        return Ok(PyTuple::new(py, [obj])?.into_any().unbind());
    }
    let invalid = || {
        type_error(format!(
            "{what} must be a tuple of exception classes, e.g. (ValueError, TimeoutError); got {}",
            describe(obj)
        ))
    };
    if obj.is_instance_of::<PyString>() {
        return Err(invalid());
    }
    let types = obj
        .try_iter()
        .map_err(|_| invalid())?
        .collect::<PyResult<Vec<_>>>()?;
    if let Some(bad) = types.iter().find(|t| !is_exception_type(t)) {
        return Err(type_error(format!(
            "{what} must hold exception classes only; got {}",
            describe(bad)
        )));
    }
    if types.is_empty() {
        return Err(value_error(format!(
            "{what} is empty; pass (Exception,) to cover every exception"
        )));
    }
    Ok(PyTuple::new(py, types)?.into_any().unbind())
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
        step: Arc<Step>,
        inputs: Vec<Py<PyAny>>,
        configs: BatchConfig,
    },
}

impl Calls {
    /// One step on one input.
    pub(crate) fn one(step: &Arc<Step>, input: &Bound<'_, PyAny>, config: &Arc<RunConfig>) -> Self {
        Calls::Map {
            step: Arc::clone(step),
            inputs: vec![input.clone().unbind()],
            configs: BatchConfig::Shared(Arc::clone(config)),
        }
    }

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
        match step {
            Step::Native(r) => r
                .get()
                .node
                .awaitable_unfinished(py, input.bind(py), config),
            Step::Foreign { .. } => step.awaitable(py, input.bind(py), config),
        }
    }

    fn followup<'py>(
        &self,
        py: Python<'py>,
        i: usize,
        output: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let (step, input, config) = self.item(i);
        match step {
            Step::Native(r) => r.get().node.followup(py, input.bind(py), config, output),
            Step::Foreign { .. } => Ok(None),
        }
    }

    fn cost(&self, i: usize) -> Option<&Cost> {
        self.item(i).0.cost()
    }
}

/// A step and its call's config, for the coroutines of `_resilience.py`: `awaiter(input)` is an
/// awaitable of the step on `input`.
#[pyclass(frozen)]
pub(crate) struct Awaiter {
    step: Arc<Step>,
    config: Arc<RunConfig>,
}

impl Awaiter {
    pub(crate) fn new(step: &Arc<Step>, config: &Arc<RunConfig>) -> Self {
        Self {
            step: Arc::clone(step),
            config: Arc::clone(config),
        }
    }
}

#[pymethods]
impl Awaiter {
    fn __call__<'py>(&self, input: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.step.awaitable_any(input.py(), input, &self.config)
    }
    // NOTE: no __traverse__: the step is shared with the node that holds it, which reports it to
    // the collector; reporting one reference twice would make the collector free live objects.
}

/// `fastlcel._resilience.<name>`: the asyncio control flow of the fault-tolerance wrappers.
// NOTE: async retry waits, timeouts, fallbacks and limiter waits are small Python coroutines: next
// to the awaited step a Rust state machine would save nothing measurable, and the sync paths (which
// the benchmarks measure) stay in Rust.
pub(crate) fn resilience<'py>(
    py: Python<'py>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("fastlcel._resilience")?.unbind())
        })?
        .bind(py)
        .getattr(name)
}

/// Collects `inputs` of a batch call.
pub(crate) fn collect_inputs(inputs: &Bound<'_, PyAny>) -> PyResult<Vec<Py<PyAny>>> {
    if inputs.is_instance_of::<PyString>() || inputs.cast::<PyDict>().is_ok() {
        return Err(type_error(format!(
            "batch inputs must be a list of inputs; got {}",
            describe(inputs)
        )));
    }
    inputs
        .try_iter()
        .map_err(|_| {
            type_error(format!(
                "batch inputs must be a list of inputs; got {}",
                describe(inputs)
            ))
        })?
        .map(|item| item.map(Bound::unbind))
        .collect()
}

/// A function of the private Python module `fastlcel._chain` (async control flow and streams).
pub(crate) fn chain_helper<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || py.import("fastlcel._chain").map(Bound::unbind))?
        .bind(py)
        .getattr(name)
}

/// A new, empty `AddableDict` (a dict whose `+` merges keys, as langchain_core's).
pub(crate) fn addable_dict(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    chain_helper(py, "AddableDict")?.call0()
}

/// Whether `obj` is a runnable that a Lambda's function returned to be run in its place: a
/// fastlcel runnable, or a langchain_core one if langchain_core is loaded.
pub(crate) fn returned_runnable(obj: &Bound<'_, PyAny>) -> PyResult<Option<Step>> {
    if obj.cast::<Runnable>().is_ok() {
        return Ok(Some(Step::coerce(obj, "returned runnable")?));
    }
    if !may_be_runnable(obj)? {
        return Ok(None);
    }
    let modules = obj.py().import("sys")?.getattr("modules")?;
    if let Ok(base) = modules.get_item("langchain_core.runnables.base") {
        if obj.is_instance(&base.getattr("Runnable")?)? {
            return Ok(Some(Step::coerce(obj, "returned runnable")?));
        }
    }
    Ok(None)
}

/// Whether `obj` could be a runnable: false, cheaply, for what functions usually return.
///
/// Plain data is ruled out by its exact type; any other type is asked once whether it has
/// `invoke` (a failed `hasattr` raises an exception inside, which costs more than a trivial
/// step) and the answer is kept per type.
pub(crate) fn may_be_runnable(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = obj.py();
    let plain = obj.is_none()
        || obj.is_exact_instance_of::<PyString>()
        || obj.is_exact_instance_of::<PyInt>()
        || obj.is_exact_instance_of::<PyFloat>()
        || obj.is_exact_instance_of::<PyBool>()
        || obj.is_exact_instance_of::<PyDict>()
        || obj.is_exact_instance_of::<PyList>()
        || obj.is_exact_instance_of::<PyTuple>();
    if plain {
        return Ok(false);
    }
    if obj.cast::<Runnable>().is_ok() {
        return Ok(true);
    }
    /// Type -> has `invoke`; cleared when large (types made on the fly would grow it).
    static HAS_INVOKE: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
    let cache = HAS_INVOKE
        .get_or_init(py, || PyDict::new(py).unbind())
        .bind(py);
    let ty = obj.get_type();
    if let Some(known) = cache.get_item(&ty)? {
        return known.is_truthy();
    }
    let has = ty.hasattr(intern!(py, "invoke"))?;
    if cache.len() >= 1024 {
        cache.clear();
    }
    cache.set_item(ty, has)?;
    Ok(has)
}

pub(crate) fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Runnable>()?;
    m.add_class::<Lambda>()?;
    m.add_class::<Parallel>()?;
    m.add_class::<Sequence>()?;
    m.add_class::<Passthrough>()?;
    m.add_class::<Assign>()?;
    m.add_class::<Pick>()?;
    m.add_class::<Branch>()?;
    m.add_class::<Binding>()?;
    m.add_class::<Generator>()?;
    m.add_class::<Cached>()?;
    Ok(())
}
