//! The Python-facing runnables, and coercion of what users put in them.
//!
//! What a runnable does is its [`Node`]; a [`Step`] is what a composite holds: a fastlcel
//! runnable or any other object with `invoke`/`ainvoke`. Every call of a step, whatever the
//! composite, goes through [`Step::run`] or [`Step::stream`], which ask exec where it runs.

use std::sync::Arc;

use pyo3::exceptions::PyBaseException;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::errors::{type_error, value_error};
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use pyo3::{intern, PyTraverseError};

use crate::config::{type_name, BatchConfig, RunConfig};
use crate::exec::blocking::{self, Blame};
use crate::exec::coro::StepFuture;
use crate::exec::stream::{accumulate, dispatch_stream, ChunkAsyncIterator, ChunkIterator, Chunks};
use crate::exec::{dispatch, Caller, Cost, Kind, Work};

mod base;
mod binding;
mod branch;
mod cache;
mod each;
mod fallbacks;
mod lambda;
mod limited;
mod parallel;
mod passthrough;
mod retry;
mod sequence;
mod timeout;
pub(crate) mod trace;

pub(crate) use base::{Node, Runnable, Streaming};
use binding::Binding;
use branch::Branch;
use cache::Cached;
use each::Each;
use fallbacks::WithFallbacks;
use lambda::{is_generator_function, Generator, Lambda, LambdaKind};
use limited::Limited;
use parallel::Parallel;
use passthrough::{Assign, Passthrough, Pick};
use retry::Retry;
use sequence::Sequence;
use timeout::Timeout;
use trace::Run;

/// What a call of a step carries besides its input.
#[derive(Clone)]
pub(crate) struct Args {
    pub(crate) config: Arc<RunConfig>,
    /// Keyword arguments for a function (`bind(...)`, `invoke(x, config, **kwargs)`).
    pub(crate) kwargs: Option<Arc<Py<PyDict>>>,
    /// The run this call is in (its node's own), if traced: its children's configs come from it.
    pub(crate) run: Option<Arc<Run>>,
    /// The call is an item of a batch, as langchain_core's `batch` makes it: it traces some
    /// runnables differently (RunnableWithFallbacks' attempts are children of its run).
    pub(crate) batched: bool,
    /// In a traced call, the name of the runnable called ([`Step::name`]), for its run.
    pub(crate) name: Option<String>,
}

impl Args {
    pub(crate) fn new(config: Arc<RunConfig>) -> Self {
        Self {
            config,
            kwargs: None,
            run: None,
            batched: false,
            name: None,
        }
    }

    /// The same config without keyword arguments, outside the run (what langchain_core gives
    /// the steps it calls with the caller's own config).
    pub(crate) fn config_only(&self) -> Self {
        Self::new(Arc::clone(&self.config))
    }

    /// These arguments inside `run`.
    pub(crate) fn within(&self, run: &Arc<Run>) -> Self {
        Self {
            config: Arc::clone(&self.config),
            kwargs: self.kwargs.clone(),
            run: Some(Arc::clone(run)),
            batched: self.batched,
            name: self.name.clone(),
        }
    }

    /// A child step's arguments (no keyword arguments): in a traced call, its config's callbacks
    /// are the run's child manager (langchain_core's
    /// `patch_config(config, callbacks=run_manager.get_child())`).
    pub(crate) fn child(&self, py: Python<'_>) -> PyResult<Self> {
        self.child_of(py, || None)
    }

    /// [`Self::child`] with the child manager tagged `tag()` (`get_child(tag)`); the tag is made
    /// only if the call is traced: no string is formatted per step otherwise.
    pub(crate) fn child_tagged(
        &self,
        py: Python<'_>,
        tag: impl FnOnce() -> String,
    ) -> PyResult<Self> {
        self.child_of(py, || Some(tag()))
    }

    fn child_of(&self, py: Python<'_>, tag: impl FnOnce() -> Option<String>) -> PyResult<Self> {
        match &self.run {
            None => Ok(self.config_only()),
            Some(run) => {
                let callbacks = run.child_callbacks(py, tag().as_deref())?;
                Ok(Self::new(Arc::new(self.config.with_callbacks(&callbacks)?)))
            }
        }
    }

    pub(crate) fn kwargs<'py>(&self, py: Python<'py>) -> Option<&Bound<'py, PyDict>> {
        self.kwargs
            .as_deref()
            .map(|k| k.bind(py))
            .filter(|k| !k.is_empty())
    }
}

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
        /// Warned about once for holding the event loop (see `exec::blocking`).
        blame: Arc<Blame>,
    },
}

impl Step {
    /// A fastlcel runnable as a step of its own methods: its node (`invoke`, `transform`...
    /// are the node's entry points, whatever a subclass overrides).
    pub(crate) fn native(r: &Bound<'_, Runnable>) -> PyResult<Self> {
        Runnable::ready(r)?;
        Ok(Step::Native(r.clone().unbind()))
    }

    /// A fastlcel runnable as a step of something else: its node, or, for an instance of a
    /// Python subclass that overrides a call method, its Python methods (the way
    /// langchain_core's composites call their steps).
    pub(crate) fn runnable(r: &Bound<'_, Runnable>) -> PyResult<Self> {
        Runnable::ready(r)?;
        if r.get().overrides() {
            return Ok(Step::Foreign {
                obj: r.clone().into_any().unbind(),
                has_invoke: true,
                has_ainvoke: true,
                cost: Cost::new(),
                blame: Arc::new(Blame::new()),
            });
        }
        Ok(Step::Native(r.clone().unbind()))
    }

    /// [`Self::runnable`] as a part of a runnable being made (a step, a bound runnable): its
    /// class is looked at again, in case it was patched since the runnable was made (a test's
    /// spy on `RunnableLambda.invoke`).
    pub(crate) fn part(r: &Bound<'_, Runnable>) -> PyResult<Self> {
        Runnable::note_class_overrides(r)?;
        Self::runnable(r)
    }

    /// Coerces what a user put in a runnable, like langchain_core's `coerce_to_runnable`.
    /// `owner` names the place in errors, e.g. "Parallel step 'summary'".
    pub(crate) fn coerce(obj: &Bound<'_, PyAny>, owner: &str) -> PyResult<Self> {
        let py = obj.py();
        if let Ok(r) = obj.cast::<Runnable>() {
            return Self::part(r);
        }
        if let Ok(d) = obj.cast::<PyDict>() {
            return Ok(Step::Native(Parallel::wrap(d)?));
        }
        static ITEMGETTER: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        if obj.is_exact_instance(ITEMGETTER.import(py, "operator", "itemgetter")?) {
            // Too cheap to hand off: it runs inline, even on the event loop.
            return Ok(Step::Native(Lambda::wrap(obj, LambdaKind::Inline)?));
        }
        // The methods of its class: an object answering any attribute (a Mock) is a callable.
        let ty = obj.get_type();
        let has_invoke = ty.hasattr(intern!(py, "invoke"))?;
        let has_ainvoke = ty.hasattr(intern!(py, "ainvoke"))?;
        if has_invoke || has_ainvoke {
            return Ok(Step::Foreign {
                obj: obj.clone().unbind(),
                has_invoke,
                has_ainvoke,
                cost: Cost::new(),
                blame: Arc::new(Blame::new()),
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

    pub(crate) fn kind(&self) -> Kind {
        match self {
            Step::Native(r) => r.get().node().kind(),
            Step::Foreign {
                has_invoke,
                has_ainvoke,
                ..
            } => match (has_invoke, has_ainvoke) {
                (true, true) => Kind::Async,
                (true, false) => Kind::Blocking,
                _ => Kind::LoopOnly,
            },
        }
    }

    /// Runs the step for `caller`, wherever exec places it.
    pub(crate) fn run(&self, input: Py<PyAny>, args: Args, caller: Caller) -> StepFuture {
        let here = self.here();
        let args = self.named(args);
        dispatch(self.kind(), caller, move |mode| here.run(input, args, mode))
    }

    /// The step's output chunks for `caller`, wherever exec places it.
    pub(crate) fn stream(&self, input: Chunks, args: Args, caller: Caller) -> Chunks {
        let here = self.here();
        let args = self.named(args);
        dispatch_stream(self.kind(), caller, input, move |input, mode| {
            here.stream(input, args, mode)
        })
    }

    /// `args` with this step's name for its run, if the call is traced.
    pub(crate) fn named(&self, mut args: Args) -> Args {
        args.name = match self {
            Step::Native(_) if args.config.traced => Some(Python::attach(|py| self.name(py))),
            _ => None,
        };
        args
    }

    /// The step as it runs once placed.
    pub(crate) fn here(&self) -> Here {
        match self {
            Step::Native(r) => Here::Node(Arc::clone(r.get().node())),
            Step::Foreign {
                obj,
                has_invoke,
                blame,
                ..
            } => Here::Foreign {
                obj: Python::attach(|py| obj.clone_ref(py)),
                has_invoke: *has_invoke,
                blame: Arc::clone(blame),
            },
        }
    }

    /// langchain_core's `get_name()` of the step (a run's name, in messages): a fastlcel
    /// runnable's (see [`Runnable::name_of`]), a foreign one's `get_name()`, else its type.
    pub(crate) fn name(&self, py: Python<'_>) -> String {
        match self {
            Step::Native(r) => {
                Runnable::name_of(r.bind(py)).unwrap_or_else(|_| type_name(r.bind(py)))
            }
            Step::Foreign { obj, .. } => foreign_name(obj.bind(py)),
        }
    }

    /// The kind of a wrapper around `steps` that has a sync path of its own: awaited on the loop
    /// if a step awaits (external if one is), else run whole on the pool for an awaiting caller.
    pub(crate) fn wrapper_kind<'a>(steps: impl IntoIterator<Item = &'a Arc<Step>>) -> Kind {
        match Kind::of_all(steps.into_iter().map(|s| s.kind())) {
            Kind::Inline => Kind::Blocking,
            kind => kind,
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
                blame,
                ..
            } => Step::Foreign {
                obj: obj.clone_ref(py),
                has_invoke: *has_invoke,
                has_ainvoke: *has_ainvoke,
                cost: Cost::new(),
                blame: Arc::clone(blame),
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

/// A step as it runs once placed: its node, or a foreign runnable called through its methods.
pub(crate) enum Here {
    Node(Arc<dyn Node>),
    Foreign {
        obj: Py<PyAny>,
        has_invoke: bool,
        blame: Arc<Blame>,
    },
}

impl Here {
    /// Runs `mode`'s way, right here (a fastlcel runnable in its run, if traced).
    pub(crate) fn run(self, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        let (obj, has_invoke, blame) = match self {
            Here::Node(node) => return trace::run(node, input, args, mode),
            Here::Foreign {
                obj,
                has_invoke,
                blame,
            } => (obj, has_invoke, blame),
        };
        Box::pin(async move {
            let sync = mode == Caller::Thread && has_invoke;
            // langchain_core calls a step in a context holding its config (`set_config_context`).
            let called = Python::attach(|py| -> PyResult<_> {
                let method = if sync {
                    intern!(py, "invoke")
                } else {
                    intern!(py, "ainvoke")
                };
                let config = args.config.to_dict(py)?;
                let ctx = trace::user_context(py, &args)?;
                let call = || {
                    obj.bind(py)
                        .call_method(method, (input, config), args.kwargs(py))
                        .map(Bound::unbind)
                };
                let output = match &ctx {
                    Some(ctx) => crate::exec::context::enter(ctx, call)?,
                    None => call()?,
                };
                let threshold = (!sync)
                    .then(|| blame.threshold(py, &args.config.blocking))
                    .flatten();
                Ok((output, ctx.map(Bound::unbind), threshold))
            })?;
            let (output, ctx, threshold) = called;
            if sync {
                return Ok(output);
            }
            let who = |py: Python<'_>| (foreign_name(obj.bind(py)), None);
            blocking::await_step(output, ctx, threshold, &blame, who).await
        })
    }

    /// Streams `mode`'s way, right here: a foreign runnable through its `transform` (or
    /// `atransform`) if it has one.
    pub(crate) fn stream(self, input: Chunks, args: Args, mode: Caller) -> Chunks {
        let (obj, has_invoke, blame) = match self {
            Here::Node(node) => {
                return match node.streaming() {
                    Streaming::Transform => trace::transform(node, input, args, mode),
                    Streaming::Whole => trace::whole(node, input, args, mode),
                    Streaming::Delegate => node.transform(input, args, mode),
                }
            }
            Here::Foreign {
                obj,
                has_invoke,
                blame,
            } => (obj, has_invoke, blame),
        };
        let method = match mode {
            Caller::Thread => "transform",
            Caller::Loop => "atransform",
        };
        let streams = Python::attach(|py| obj.bind(py).hasattr(method).unwrap_or(false));
        if !streams {
            let here = Here::Foreign {
                obj,
                has_invoke,
                blame,
            };
            return run_on_sum(input, mode, move |value| here.run(value, args, mode));
        }
        let made = Python::attach(|py| -> PyResult<Chunks> {
            let chunks: Py<PyAny> = match mode {
                Caller::Thread => Py::new(py, ChunkIterator::bare(input))?.into_any(),
                Caller::Loop => Py::new(py, ChunkAsyncIterator::bare(input))?.into_any(),
            };
            let config = args.config.to_dict(py)?;
            let output = obj
                .bind(py)
                .call_method(method, (chunks, config), args.kwargs(py))?;
            match mode {
                Caller::Thread => Chunks::from_iterable(&output),
                Caller::Loop => Ok(Chunks::from_aiter(output.unbind())),
            }
        });
        made.unwrap_or_else(|err| Chunks::failed(err, mode))
    }
}

/// langchain_core's `get_name()` of a foreign runnable, else its type's name.
fn foreign_name(obj: &Bound<'_, PyAny>) -> String {
    let py = obj.py();
    obj.call_method0(intern!(py, "get_name"))
        .and_then(|n| n.extract::<String>())
        .unwrap_or_else(|_| type_name(obj))
}

/// The stream of a runnable that cannot stream: the sum of its input chunks, run, as one chunk
/// (langchain_core's default `Runnable.transform`).
fn run_on_sum(
    input: Chunks,
    mode: Caller,
    run: impl FnOnce(Py<PyAny>) -> StepFuture + Send + 'static,
) -> Chunks {
    let stream = async_stream::stream! {
        match accumulate(input).await {
            Ok(Some(value)) => yield run(value).await,
            Ok(None) => {}
            Err(err) => yield Err(err),
        }
    };
    Chunks::made_by(Box::pin(stream), mode)
}

/// `text` with every line but the first indented by `n` spaces (langchain_core's
/// `indent_lines_after_first`, for the reprs of composites).
pub(crate) fn indent_after_first(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    let mut lines = text.lines();
    let mut out = lines.next().unwrap_or_default().to_owned();
    for line in lines {
        out.push('\n');
        out.push_str(&pad);
        out.push_str(line);
    }
    out
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

/// The calls of one fan-out, as exec sees them.
pub(crate) enum Calls {
    /// Every step on the same input (`Parallel`), each a child of the run tagged with its key.
    Fan {
        steps: Arc<[Step]>,
        keys: Arc<[Py<PyString>]>,
        input: Py<PyAny>,
        args: Args,
    },
    /// One step on many inputs (`batch`, or one call).
    Map {
        step: Arc<Step>,
        inputs: Vec<Py<PyAny>>,
        configs: BatchConfig,
        kwargs: Option<Arc<Py<PyDict>>>,
        batched: bool,
    },
}

impl Calls {
    /// One step on one input.
    pub(crate) fn one(step: &Arc<Step>, input: Py<PyAny>, args: &Args) -> Self {
        Calls::Map {
            step: Arc::clone(step),
            inputs: vec![input],
            configs: BatchConfig::Shared(Arc::clone(&args.config)),
            kwargs: args.kwargs.clone(),
            batched: args.batched,
        }
    }

    fn step(&self, i: usize) -> &Step {
        match self {
            Calls::Fan { steps, .. } => &steps[i],
            Calls::Map { step, .. } => step,
        }
    }

    /// Whether item `i` is a traced call.
    fn traced(&self, i: usize) -> bool {
        match self {
            Calls::Fan { args, .. } => args.config.traced,
            Calls::Map { configs, .. } => configs.get(i).traced,
        }
    }

    fn call(&self, py: Python<'_>, i: usize) -> PyResult<(&Step, Py<PyAny>, Args)> {
        Ok(match self {
            Calls::Fan {
                steps,
                keys,
                input,
                args,
            } => (
                &steps[i],
                input.clone_ref(py),
                args.child_tagged(py, || map_key(py, &keys[i]))?,
            ),
            Calls::Map {
                step,
                inputs,
                configs,
                kwargs,
                batched,
            } => (
                step,
                inputs[i].clone_ref(py),
                Args {
                    config: Arc::clone(configs.get(i)),
                    kwargs: kwargs.clone(),
                    run: None,
                    batched: *batched,
                    name: None,
                },
            ),
        })
    }
}

/// The tag of a Parallel step's run: `map:key:<key>`.
pub(crate) fn map_key(py: Python<'_>, key: &Py<PyString>) -> String {
    format!("map:key:{}", key.bind(py))
}

impl Work for Calls {
    fn len(&self) -> usize {
        match self {
            Calls::Fan { steps, .. } => steps.len(),
            Calls::Map { inputs, .. } => inputs.len(),
        }
    }

    fn kind(&self, i: usize) -> Kind {
        match self.step(i).kind() {
            // A traced call awaits its callbacks: not a step to run on the spot on a loop.
            Kind::Inline if self.traced(i) => Kind::Async,
            kind => kind,
        }
    }

    fn run(&self, i: usize, mode: Caller) -> StepFuture {
        match Python::attach(|py| self.call(py, i)) {
            Ok((step, input, args)) => step.here().run(input, step.named(args), mode),
            Err(err) => Box::pin(async move { Err(err) }),
        }
    }

    fn awaitable<'py>(&self, py: Python<'py>, i: usize) -> PyResult<Option<Bound<'py, PyAny>>> {
        let (step, input, args) = self.call(py, i)?;
        match step {
            Step::Native(r) => r.get().node().awaitable(input.bind(py), &args),
            Step::Foreign { .. } => Ok(None),
        }
    }

    fn followup(
        &self,
        py: Python<'_>,
        i: usize,
        output: &Bound<'_, PyAny>,
    ) -> PyResult<Option<StepFuture>> {
        let (step, input, args) = self.call(py, i)?;
        match step {
            Step::Native(r) => Arc::clone(r.get().node()).followup(input, args, output),
            Step::Foreign { .. } => Ok(None),
        }
    }

    fn cost(&self, i: usize) -> Option<&Cost> {
        self.step(i).cost()
    }
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

/// A new, empty `AddableDict` (a dict whose `+` merges keys, as langchain_core's).
pub(crate) fn addable_dict(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static ADDABLE_DICT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    ADDABLE_DICT
        .import(py, "fastlcel._addable", "AddableDict")?
        .call0()
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

/// langchain_core's `@chain` decorator: the function as a Lambda (named after it).
#[pyfunction]
fn chain(py: Python<'_>, func: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    Ok(py.get_type::<Lambda>().call1((func,))?.unbind())
}

pub(crate) fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Runnable>()?;
    m.add_function(wrap_pyfunction!(chain, m)?)?;
    m.add_class::<Lambda>()?;
    m.add_class::<Parallel>()?;
    m.add_class::<Sequence>()?;
    m.add_class::<Passthrough>()?;
    m.add_class::<Assign>()?;
    m.add_class::<Pick>()?;
    m.add_class::<Branch>()?;
    m.add_class::<Binding>()?;
    m.add_class::<Generator>()?;
    m.add_class::<WithFallbacks>()?;
    m.add_class::<Retry>()?;
    m.add_class::<Each>()?;
    m.add_class::<Timeout>()?;
    m.add_class::<Limited>()?;
    m.add_class::<Cached>()?;
    // langchain_core's names for the same classes.
    for (alias, class) in [
        ("RunnableLambda", "Lambda"),
        ("RunnableParallel", "Parallel"),
        ("RunnableMap", "Parallel"),
        ("RunnableSequence", "Sequence"),
        ("RunnablePassthrough", "Passthrough"),
        ("RunnableAssign", "Assign"),
        ("RunnablePick", "Pick"),
        ("RunnableBranch", "Branch"),
        ("RunnableBinding", "Binding"),
        ("RunnableGenerator", "Generator"),
        ("RunnableWithFallbacks", "WithFallbacks"),
        ("RunnableRetry", "Retry"),
        ("RunnableEach", "Each"),
    ] {
        m.add(alias, m.getattr(class)?)?;
    }
    Ok(())
}
