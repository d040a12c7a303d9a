//! `Runnable`: the base class of every fastlcel runnable. What one runs is its [`Node`]; the
//! Python-facing classes (`Lambda`, `Parallel`, ...) are subclasses that only construct nodes.
//!
//! Construction is two-phase, as for a Python class: `__new__` makes an empty runnable and the
//! class's `__init__` gives it its node. So a Python subclass may define an `__init__` of its own
//! that calls `super().__init__(...)`, and pickle remakes a runnable with `__new__` and
//! `__setstate__` (the node's [`Node::fields`], given to its class's `__init__` again).

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use once_cell::race::OnceBox;

use parking_lot::Mutex;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use pyo3::{intern, PyClassInitializer, PyTraverseError};

use super::binding::{Binding, BindingNode};
use super::cache;
use super::each::Each;
use super::limited::{self, LimitedNode};
use super::passthrough::{Assign, Pick};
use super::sequence::{Sequence, SequenceNode};
use super::timeout::{self, TimeoutNode};
use super::{collect_inputs, fallbacks, retry, Args, Calls, Step};
use crate::config::{type_name, BatchConfig, Policy, RunConfig};
use crate::errors::type_error;
use crate::exec::context::Context;
use crate::exec::coro::{block_on, Coroutine, StepFuture};
use crate::exec::progress::{self, held_by, Shown};
use crate::exec::stream::{as_completed, ChunkAsyncIterator, ChunkIterator, Chunks};
use crate::exec::{fan_out, Caller, Collect, Cost, FanOpts, Kind, Work};
use crate::validate::{self, Attempts, CacheSize, Jitter, ReturnExceptions};

/// How a runnable streams (langchain_core's shapes of `transform`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Streaming {
    /// It needs its whole input: the input chunks are added up, then `stream_value` (by default
    /// its output as one chunk).
    Whole,
    /// It transforms the stream chunk by chunk (`transform`), reading its input as
    /// langchain_core's `_transform_stream_with_config` does.
    Transform,
    /// It streams as the runnable it wraps does, with no run of its own (`transform`).
    Delegate,
}

/// What a runnable does. Each kind of runnable is one implementation, in a file of its own,
/// written once for both kinds of caller: `mode` says how to wait (see `exec::Caller`), and
/// exec has already placed the call where it may wait that way. Runs of the callback system
/// are opened around it by `trace` (a node only passes its children their configs, tagged).
pub(crate) trait Node: Send + Sync + 'static {
    /// How it is implemented, for exec to place it.
    fn kind(&self) -> Kind;
    /// Its output for `input`, run `mode`'s way right where the future is polled. Nothing runs
    /// before the first poll.
    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture;
    /// How it streams.
    fn streaming(&self) -> Streaming {
        Streaming::Whole
    }
    /// Its output chunks for a stream of input chunks, `mode`'s way (`Transform`, `Delegate`).
    fn transform(self: Arc<Self>, _input: Chunks, _args: Args, mode: Caller) -> Chunks {
        Chunks::failed(
            crate::errors::FastLcelError::new_err(
                "fastlcel internal error: transform of a runnable that does not transform",
            ),
            mode,
        )
    }
    /// Its output chunks for its whole input (`Whole`): by default its output, as one chunk.
    fn stream_value(self: Arc<Self>, value: Py<PyAny>, args: Args, mode: Caller) -> Chunks {
        let stream = async_stream::stream! {
            yield self.run(value, args, mode).await;
        };
        Chunks::made_by(Box::pin(stream), mode)
    }
    /// Whether a call (invoke) opens a run of its own (fastlcel's wrappers do not: the
    /// runnable they wrap does).
    fn opens_run(&self) -> bool {
        true
    }
    /// Whether its stream (`Transform`, `Whole`) opens a run of its own.
    fn stream_opens_run(&self) -> bool {
        self.opens_run()
    }
    /// Whether its stream's run tells handlers that its inputs come at the end
    /// (`defers_inputs`: a tracer then reports the run once it is over), as langchain_core's
    /// RunnableGenerator does; other transforms report `{"input": ""}` at the start.
    fn defers_inputs(&self) -> bool {
        false
    }
    /// A gather's fast path: the user's own awaitable for `input`, where running it is all
    /// there is to the step (finished by [`Self::followup`]).
    fn awaitable<'py>(
        &self,
        _input: &Bound<'py, PyAny>,
        _args: &Args,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(None)
    }
    /// What remains to await once [`Self::awaitable`] produced `output`, if anything.
    fn followup(
        self: Arc<Self>,
        _input: Py<PyAny>,
        _args: Args,
        _output: &Bound<'_, PyAny>,
    ) -> PyResult<Option<StepFuture>> {
        Ok(None)
    }
    /// langchain_core's `get_name()` for a runnable given no name: its langchain_core class's
    /// name (`RunnableLambda`), the one langchain_core computes (`RunnableParallel<a,b>`), or a
    /// wrapper's runnable's. A name given with `name=` (or a Lambda's function name) comes first:
    /// [`Step::name`] is the whole rule.
    fn name(&self, py: Python<'_>) -> String;
    /// Whether a Python subclass given no name is named after its class, as langchain_core
    /// names it (false where langchain_core computes the name from the parts).
    fn named_by_class(&self) -> bool {
        true
    }
    /// langchain_core's `repr` of the same runnable.
    fn repr(&self, py: Python<'_>) -> PyResult<String>;
    /// Whether its langchain_core counterpart is a pydantic model, whose repr names a class
    /// made through a generic alias with its parameters (`RunnableBranch[int, str](...)`).
    fn parametrized_repr(&self) -> bool {
        true
    }
    /// The fastlcel class this node belongs to.
    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType>;
    /// The keyword arguments of its class's `__init__` that make it again: langchain_core's
    /// constructor arguments, in their order (pickling, copies, langchain_core's serialization),
    /// then fastlcel's own options where set.
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>>;
    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError>;
    fn as_any(&self) -> &dyn Any;
}

/// The call methods a Python subclass may override. A subclass that does runs through its
/// Python methods wherever it is a step, as langchain_core's composites call their steps; the
/// others (batch, stream...) reach them through these, as in langchain_core.
const CALL_METHODS: [&str; 4] = ["invoke", "ainvoke", "transform", "atransform"];

// NOTE: `dict`: like a Python object, a runnable takes attributes of its own (a test's spy on
// `invoke`, `__orig_class__` from `RunnableBranch[str, int](...)`); with no attribute set, the
// dict is never made and method lookups cost what they did.
#[pyclass(
    frozen,
    subclass,
    generic,
    dict,
    weakref,
    module = "fastlcel",
    name = "Runnable"
)]
pub(crate) struct Runnable {
    /// Set once, by the class's `__init__` (or at once, for runnables made in Rust).
    ///
    // NOTE: a `OnceBox` (a null pointer until set), not a `OnceLock`: on CPython 3.11,
    // `object.__new__` makes the instance's `__dict__` after the object is tracked by the GC and
    // before pyo3 writes this struct, so a collection there traverses the zeroed allocation. A
    // zeroed `OnceBox` is empty; a zeroed `OnceLock` reads as set (std's "complete" state is 0)
    // and the GC followed a null `Arc`: a segfault (tests/test_gc.py).
    node: OnceBox<Arc<dyn Node>>,
    /// Its cost as a step of an enclosing fan-out.
    cost: Cost,
    /// The name it was given (`name=`, a Lambda's function name): langchain_core's `name`.
    name: Mutex<Option<Py<PyString>>>,
    /// An instance of a Python subclass of a fastlcel class.
    subclass: bool,
    /// Its class overrides one of [`CALL_METHODS`] (learnt once, at `__new__`).
    overrides: bool,
    /// One of [`CALL_METHODS`] is an attribute of the instance itself (a spy, a patch).
    patched: AtomicBool,
}

impl Runnable {
    fn blank(subclass: bool, overrides: bool) -> Self {
        Self {
            node: OnceBox::new(),
            cost: Cost::new(),
            name: Mutex::new(None),
            subclass,
            overrides,
            patched: AtomicBool::new(false),
        }
    }

    /// A runnable made in Rust around `node`.
    pub(crate) fn init(node: impl Node) -> PyClassInitializer<Self> {
        let this = Self::blank(false, false);
        let _ = this.node.set(Box::new(Arc::new(node)));
        PyClassInitializer::from(this)
    }

    /// A new object of the fastlcel class `subclass` around `node`, as a runnable, named `name`.
    pub(crate) fn create<S>(
        py: Python<'_>,
        node: impl Node,
        subclass: S,
        name: Option<Bound<'_, PyString>>,
    ) -> PyResult<Py<Runnable>>
    where
        S: pyo3::PyClass<BaseType = Runnable>,
    {
        let init = Self::init(node).add_subclass(subclass);
        let made = Bound::new(py, init)?.into_super();
        if let Some(name) = name {
            *made.get().name.lock() = Some(name.unbind());
        }
        Ok(made.unbind())
    }

    /// An empty runnable of class `cls` (the classes' `__new__`), which derives from the
    /// fastlcel class `native`; its `__init__` gives it its node.
    pub(crate) fn blank_of(
        cls: &Bound<'_, PyType>,
        native: &Bound<'_, PyType>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let subclass = !cls.is(native);
        let overrides = subclass && class_overrides(cls)?;
        Ok(PyClassInitializer::from(Self::blank(subclass, overrides)))
    }

    /// Notes a class that overrides a call method since the runnable was made (the classes'
    /// own methods are never replaced otherwise): see [`Self::overrides`].
    pub(crate) fn note_class_overrides(slf: &Bound<'_, Runnable>) -> PyResult<()> {
        if !slf.get().overrides() && class_overrides(&slf.get_type())? {
            slf.get().patched.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Gives an empty runnable its node and its name (the classes' `__init__`).
    pub(crate) fn set_node(
        slf: &Bound<'_, Runnable>,
        node: impl Node,
        name: Option<Bound<'_, PyString>>,
    ) -> PyResult<()> {
        let this = slf.get();
        if this.node.set(Box::new(Arc::new(node))).is_err() {
            return Err(type_error(format!(
                "this {} is already initialized: __init__ runs once, make a new one instead",
                type_name(slf)
            )));
        }
        if let Some(name) = name {
            *this.name.lock() = Some(name.unbind());
        }
        Ok(())
    }

    /// Its node, once `__init__` gave it one (always, after coercion: see [`Self::ready`]).
    pub(crate) fn node(&self) -> &Arc<dyn Node> {
        self.node
            .get()
            .expect("a runnable is checked to be initialized before it is used")
    }

    /// `__getattr__` of a wrapper whose other attributes are those of what it wraps, as
    /// langchain_core's RunnableBinding and RunnableWithFallbacks have them: the glue function
    /// `glue` of `fastlcel._langchain` answers. Dunder names, and any name of a wrapper whose
    /// `__init__` did not run, are missing.
    pub(crate) fn wrapped_getattr<'py>(
        slf: &Bound<'py, Runnable>,
        name: &str,
        glue: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        if name.starts_with("__") || slf.get().node.get().is_none() {
            return Err(pyo3::exceptions::PyAttributeError::new_err(name.to_owned()));
        }
        static GLUE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
        GLUE.get_or_try_init(py, || py.import("fastlcel._langchain").map(Bound::unbind))?
            .bind(py)
            .getattr(glue)?
            .call1((slf, name))
    }

    /// Its node, or a clear error for an instance of a subclass whose `__init__` did not call
    /// the fastlcel class's.
    pub(crate) fn ready<'a>(slf: &'a Bound<'_, Runnable>) -> PyResult<&'a Arc<dyn Node>> {
        slf.get().node.get().ok_or_else(|| not_initialized(slf))
    }

    /// The node of a runnable of a class whose nodes are `N` (the subclasses' getters).
    pub(crate) fn node_as<'a, N: Node>(slf: &'a Bound<'_, Runnable>) -> PyResult<&'a N> {
        Ok(Self::ready(slf)?
            .as_any()
            .downcast_ref()
            .expect("a runnable class holds its own kind of node"))
    }

    pub(crate) fn cost(&self) -> &Cost {
        &self.cost
    }

    /// Whether composites call it through its Python methods: its class or the instance
    /// itself overrides one of them (see [`CALL_METHODS`]).
    pub(crate) fn overrides(&self) -> bool {
        self.overrides || self.patched.load(Ordering::Relaxed)
    }

    /// langchain_core's `get_name()` of `slf`: the name given to it (a subclass's own `name`
    /// attribute first), else a subclass's class name where langchain_core names by class,
    /// else its node's name.
    pub(crate) fn name_of(slf: &Bound<'_, Runnable>) -> PyResult<String> {
        let py = slf.py();
        let this = slf.get();
        let node = Self::ready(slf)?;
        if this.subclass {
            let own = slf.getattr(intern!(py, "name"))?;
            if own.is_truthy()? {
                return Ok(own.str()?.to_string());
            }
            if node.named_by_class() {
                return Ok(slf.get_type().name()?.to_string());
            }
        } else if let Some(name) = &*this.name.lock() {
            return Ok(name.bind(py).to_string());
        }
        Ok(node.name(py))
    }
}

impl Runnable {
    /// Notes whether one of [`CALL_METHODS`] is now an attribute of the instance itself.
    fn note_patches(slf: &Bound<'_, Runnable>) -> PyResult<()> {
        let py = slf.py();
        let attrs = slf.getattr(intern!(py, "__dict__"))?;
        let mut patched = class_overrides(&slf.get_type())?;
        for method in CALL_METHODS {
            patched |= attrs.contains(method)?;
        }
        slf.get().patched.store(patched, Ordering::Relaxed);
        Ok(())
    }
}

/// Whether `cls` has a call method other than `Runnable`'s own (see [`CALL_METHODS`]).
fn class_overrides(cls: &Bound<'_, PyType>) -> PyResult<bool> {
    let py = cls.py();
    static OWN: PyOnceLock<Vec<Py<PyAny>>> = PyOnceLock::new();
    let own = OWN.get_or_try_init(py, || {
        let base = py.get_type::<Runnable>();
        CALL_METHODS
            .iter()
            .map(|m| base.getattr(*m).map(Bound::unbind))
            .collect::<PyResult<Vec<_>>>()
    })?;
    for (method, own) in CALL_METHODS.iter().zip(own) {
        if !cls.getattr(*method)?.is(own.bind(py)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Python's generic attribute assignment (`None`: deletion), as `object.__setattr__` does.
// NOTE: `object.__setattr__` itself refuses a type whose C-level setattr is not its own (the
// "hackcheck"), so the C function is called directly.
fn generic_setattr(
    slf: &Bound<'_, Runnable>,
    name: &Bound<'_, PyString>,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let value = value.map_or(std::ptr::null_mut(), |v| v.as_ptr());
    // SAFETY: the GIL is held (we have `Bound`s); `slf` and `name` are live objects, and
    // `value` is a live object or NULL, which the C API documents as deletion.
    let status = unsafe { pyo3::ffi::PyObject_GenericSetAttr(slf.as_ptr(), name.as_ptr(), value) };
    if status < 0 {
        return Err(PyErr::fetch(slf.py()));
    }
    Ok(())
}

fn not_initialized(slf: &Bound<'_, Runnable>) -> PyErr {
    type_error(format!(
        "this {} is not initialized: its __init__ must call the __init__ of the fastlcel class \
         it derives from (super().__init__(...))",
        type_name(slf)
    ))
}

#[pymethods]
impl Runnable {
    /// langchain_core's `name`: the name given (`name=`, a Lambda's function), else None.
    #[getter(name)]
    fn name_getter(&self, py: Python<'_>) -> Option<Py<PyString>> {
        self.name.lock().as_ref().map(|n| n.clone_ref(py))
    }

    #[setter(name)]
    fn name_setter(&self, name: Option<Option<Py<PyString>>>) {
        *self.name.lock() = name.flatten();
    }

    /// As `object.__setattr__`, noting an instance's own call method (a spy on `invoke`):
    /// composites made from it afterwards call it (see [`Step::runnable`]).
    fn __setattr__(
        slf: &Bound<'_, Self>,
        name: &Bound<'_, PyString>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        generic_setattr(slf, name, Some(value))?;
        Self::note_patches(slf)
    }

    fn __delattr__(slf: &Bound<'_, Self>, name: &Bound<'_, PyString>) -> PyResult<()> {
        generic_setattr(slf, name, None)?;
        Self::note_patches(slf)
    }

    /// langchain_core's `get_name`: `name` (default: this runnable's) with `suffix` appended,
    /// as `NameSuffix` after a capital, else `name_suffix`.
    #[pyo3(name = "get_name", signature = (suffix=None, *, name=None))]
    fn py_get_name(
        slf: &Bound<'_, Self>,
        suffix: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let py = slf.py();
        let suffix = validate::name(suffix, "get_name(suffix)")?;
        let name = match validate::name(name, "get_name(name)")? {
            Some(name) if !name.to_str()?.is_empty() => name.to_string(),
            _ => Self::name_of(slf)?,
        };
        let Some(suffix) = suffix.filter(|s| s.to_str().is_ok_and(|s| !s.is_empty())) else {
            return Ok(name);
        };
        if name.starts_with(char::is_uppercase) {
            Ok(format!(
                "{name}{}",
                suffix.call_method0(intern!(py, "title"))?
            ))
        } else {
            Ok(format!(
                "{name}_{}",
                suffix.call_method0(intern!(py, "lower"))?
            ))
        }
    }

    #[pyo3(signature = (input, config=None, **kwargs))]
    fn invoke(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let (step, args) = call(slf, config, kwargs)?;
        let input = input.clone().unbind();
        Context::run_isolated(py, || block_on(step.run(input, args, Caller::Thread)))
    }

    #[pyo3(signature = (input, config=None, **kwargs))]
    fn ainvoke(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Coroutine> {
        let (step, args) = call(slf, config, kwargs)?;
        let input = input.clone().unbind();
        Ok(Coroutine::new(step.run(input, args, Caller::Loop)))
    }

    #[pyo3(
        signature = (inputs, config=None, *, return_exceptions=ReturnExceptions(false), **kwargs),
        text_signature = "($self, inputs, config=None, *, return_exceptions=False, **kwargs)"
    )]
    fn batch(
        slf: &Bound<'_, Self>,
        inputs: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        return_exceptions: ReturnExceptions,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let (work, opts, _bar) = batch_calls(slf, inputs, config, return_exceptions, kwargs, true)?;
        let values = block_on(fan_out(work, opts, Caller::Thread))?;
        Collect::List.build(py, values)
    }

    #[pyo3(
        signature = (inputs, config=None, *, return_exceptions=ReturnExceptions(false), **kwargs),
        text_signature = "($self, inputs, config=None, *, return_exceptions=False, **kwargs)"
    )]
    fn abatch(
        slf: &Bound<'_, Self>,
        inputs: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        return_exceptions: ReturnExceptions,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Coroutine> {
        let (work, opts, bar) = batch_calls(slf, inputs, config, return_exceptions, kwargs, true)?;
        Ok(Coroutine::new(Box::pin(async move {
            let _bar = bar;
            let values = fan_out(work, opts, Caller::Loop).await?;
            Python::attach(|py| Collect::List.build(py, values))
        })))
    }

    /// `self | other`: a Sequence (nested sequences are flattened).
    fn __or__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<Runnable>> {
        let node = SequenceNode::new(&[slf.clone().into_any(), other.clone()])?;
        Sequence::make(slf.py(), node, None)
    }

    /// `other | self`, for a dict or a callable on the left.
    fn __ror__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<Runnable>> {
        let node = SequenceNode::new(&[other.clone(), slf.clone().into_any()])?;
        Sequence::make(slf.py(), node, None)
    }

    /// `self | others[0] | others[1] ...`, optionally named.
    #[pyo3(signature = (*others, name=None))]
    fn pipe(
        slf: &Bound<'_, Self>,
        others: &Bound<'_, PyTuple>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Runnable>> {
        let name = validate::name(name, "pipe(name)")?;
        let objs: Vec<_> = std::iter::once(slf.clone().into_any())
            .chain(others.iter())
            .collect();
        Sequence::make(slf.py(), SequenceNode::new(&objs)?, name)
    }

    /// `self | Passthrough.assign(**steps)`: the output dict plus computed keys.
    #[pyo3(signature = (**steps))]
    fn assign(slf: &Bound<'_, Self>, steps: Option<&Bound<'_, PyDict>>) -> PyResult<Py<Runnable>> {
        let py = slf.py();
        let assign = Assign::make(py, steps)?;
        let node = SequenceNode::new(&[slf.clone().into_any(), assign.into_bound(py).into_any()])?;
        Sequence::make(py, node, None)
    }

    /// `self | Pick(keys)`: one key of the output dict, or a dict of several.
    fn pick(slf: &Bound<'_, Self>, keys: &Bound<'_, PyAny>) -> PyResult<Py<Runnable>> {
        let py = slf.py();
        let pick = Pick::make(keys)?;
        let node = SequenceNode::new(&[slf.clone().into_any(), pick.into_bound(py).into_any()])?;
        Sequence::make(py, node, None)
    }

    /// This runnable with a config of its own, merged under each call's config (tags united,
    /// metadata merged).
    #[pyo3(signature = (config=None, **kwargs))]
    fn with_config(
        slf: &Bound<'_, Self>,
        config: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<Runnable>> {
        let py = slf.py();
        let added = RunConfig::parse(config)?.user_dict(py).copy()?;
        if let Some(kwargs) = kwargs {
            added.update(kwargs.as_mapping())?;
        }
        RunConfig::parse(Some(added.as_any()))?; // validates
                                                 // As langchain_core's RunnableBinding: `{**own, **added}`; it is each call's config
                                                 // that is merged (tags united...), not the binding's own.
        rebind(slf, |parts| {
            let merged = parts.config.copy()?;
            merged.update(added.as_mapping())?;
            parts.config = merged;
            Ok(())
        })
    }

    /// This runnable with keyword arguments for its function (or a foreign runnable's invoke).
    #[pyo3(signature = (**kwargs))]
    fn bind(slf: &Bound<'_, Self>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Py<Runnable>> {
        rebind(slf, |parts| {
            let merged = parts.kwargs.copy()?;
            if let Some(kwargs) = kwargs {
                merged.update(kwargs.as_mapping())?;
            }
            parts.kwargs = merged;
            Ok(())
        })
    }

    /// This runnable with declared input and output types (its schemas follow them), as
    /// langchain_core's `with_types`: a Binding.
    #[pyo3(signature = (input_type=None, output_type=None))]
    fn with_types(
        slf: &Bound<'_, Self>,
        input_type: Option<&Bound<'_, PyAny>>,
        output_type: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Runnable>> {
        rebind(slf, |parts| {
            if let Some(t) = input_type.filter(|t| !t.is_none()) {
                parts.input_type = Some(t.clone().unbind());
            }
            if let Some(t) = output_type.filter(|t| !t.is_none()) {
                parts.output_type = Some(t.clone().unbind());
            }
            Ok(())
        })
    }

    /// A runnable that runs this one on every item of a list input (langchain_core's
    /// `RunnableEach`): `batch` as a step.
    fn map(slf: &Bound<'_, Self>) -> PyResult<Py<Runnable>> {
        Each::make(slf.py(), Step::part(slf)?)
    }

    /// Chunks of the output as they are produced (one chunk for a runnable that does not
    /// stream). A Parallel yields one-key dicts as its steps produce chunks.
    #[pyo3(signature = (input, config=None, **kwargs))]
    fn stream(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ChunkIterator> {
        let chunks = Chunks::once(input.clone().unbind());
        let step = Step::runnable(slf)?;
        stream_of(slf.py(), step, chunks, config, kwargs, Caller::Thread)
            .and_then(|c| ChunkIterator::new(slf.py(), c))
    }

    /// Like :meth:`stream` for an iterator of input chunks.
    #[pyo3(signature = (input, config=None, **kwargs))]
    fn transform(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ChunkIterator> {
        validate::iterable(
            input,
            "transform(input)",
            "an iterable of input chunks",
            false,
        )?;
        let step = Step::native(slf)?;
        let chunks = Chunks::from_iterable(input)?;
        stream_of(slf.py(), step, chunks, config, kwargs, Caller::Thread)
            .and_then(|c| ChunkIterator::new(slf.py(), c))
    }

    /// The async iterator counterpart of :meth:`stream`.
    #[pyo3(signature = (input, config=None, **kwargs))]
    fn astream(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ChunkAsyncIterator> {
        let chunks = Chunks::once(input.clone().unbind());
        let step = Step::runnable(slf)?;
        stream_of(slf.py(), step, chunks, config, kwargs, Caller::Loop)
            .and_then(|c| ChunkAsyncIterator::new(slf.py(), c))
    }

    /// The async iterator counterpart of :meth:`transform` (for an async iterator of input
    /// chunks; a sync iterable is accepted too).
    #[pyo3(signature = (input, config=None, **kwargs))]
    fn atransform(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ChunkAsyncIterator> {
        let py = slf.py();
        let step = Step::native(slf)?;
        let expected = "an async iterable or an iterable of input chunks";
        validate::iterable(input, "atransform(input)", expected, true)?;
        let chunks = if input.hasattr(intern!(py, "__aiter__"))? {
            Chunks::from_aiter(input.call_method0(intern!(py, "__aiter__"))?.unbind())
        } else {
            Chunks::from_iterable(input)?
        };
        stream_of(slf.py(), step, chunks, config, kwargs, Caller::Loop)
            .and_then(|c| ChunkAsyncIterator::new(py, c))
    }

    /// `(index, result)` pairs as the items of a batch finish.
    #[pyo3(
        signature = (inputs, config=None, *, return_exceptions=ReturnExceptions(false), **kwargs),
        text_signature = "($self, inputs, config=None, *, return_exceptions=False, **kwargs)"
    )]
    fn batch_as_completed(
        slf: &Bound<'_, Self>,
        inputs: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        return_exceptions: ReturnExceptions,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ChunkIterator> {
        let (work, opts, bar) = batch_calls(slf, inputs, config, return_exceptions, kwargs, false)?;
        let n = work.len();
        let chunks = held_by(as_completed(work, opts, Caller::Thread), n, bar);
        ChunkIterator::new(slf.py(), chunks)
    }

    /// The async iterator counterpart of :meth:`batch_as_completed`.
    #[pyo3(
        signature = (inputs, config=None, *, return_exceptions=ReturnExceptions(false), **kwargs),
        text_signature = "($self, inputs, config=None, *, return_exceptions=False, **kwargs)"
    )]
    fn abatch_as_completed(
        slf: &Bound<'_, Self>,
        inputs: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        return_exceptions: ReturnExceptions,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ChunkAsyncIterator> {
        let (work, opts, bar) = batch_calls(slf, inputs, config, return_exceptions, kwargs, false)?;
        let n = work.len();
        let chunks = held_by(as_completed(work, opts, Caller::Loop), n, bar);
        ChunkAsyncIterator::new(slf.py(), chunks)
    }

    /// langchain_core's `astream_events` (versions "v1" and "v2"): the events of this call's
    /// runs, as langchain_core reports them.
    #[pyo3(signature = (*args, **kwargs))]
    fn astream_events<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // As langchain_core's own dispatch (its helpers are called on `self`).
        let py = slf.py();
        let version = match kwargs {
            Some(kwargs) => kwargs.get_item("version")?,
            None => None,
        };
        if version.is_some_and(|v| v.eq("v3").unwrap_or(false)) {
            return langchain_method(
                slf,
                "_astream_events_v3_unsupported",
                &PyTuple::empty(py),
                None,
            );
        }
        langchain_method(slf, "_astream_events_v1_v2", args, kwargs)
    }

    /// langchain_core's `stream_events`.
    #[pyo3(signature = (*args, **kwargs))]
    fn stream_events<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        langchain_method(slf, "stream_events", args, kwargs)
    }

    /// langchain_core's `astream_log`: the run log of this call, as JSON patches.
    #[pyo3(signature = (*args, **kwargs))]
    fn astream_log<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        langchain_method(slf, "astream_log", args, kwargs)
    }

    /// langchain_core's `with_listeners`: this runnable with functions called when its runs
    /// start, end and fail.
    #[pyo3(signature = (*args, **kwargs))]
    fn with_listeners<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        langchain_method(slf, "with_listeners", args, kwargs)
    }

    /// langchain_core's `with_alisteners`: `with_listeners` with async functions.
    #[pyo3(signature = (*args, **kwargs))]
    fn with_alisteners<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        langchain_method(slf, "with_alisteners", args, kwargs)
    }

    /// A runnable that retries this one on failure (langchain_core's names and defaults).
    #[pyo3(signature = (
        *,
        retry_if_exception_type=None,
        wait_exponential_jitter=Jitter(true),
        exponential_jitter_params=None,
        stop_after_attempt=Attempts(3),
    ),
    text_signature = "($self, *, retry_if_exception_type=None, wait_exponential_jitter=True, \
                      exponential_jitter_params=None, stop_after_attempt=3)")]
    fn with_retry(
        slf: &Bound<'_, Self>,
        retry_if_exception_type: Option<&Bound<'_, PyAny>>,
        wait_exponential_jitter: Jitter,
        exponential_jitter_params: Option<&Bound<'_, PyAny>>,
        stop_after_attempt: Attempts,
    ) -> PyResult<Py<Runnable>> {
        retry::with_retry(
            Step::part(slf)?,
            retry_if_exception_type,
            wait_exponential_jitter.0,
            exponential_jitter_params,
            stop_after_attempt.0,
        )
    }

    /// A runnable that tries `fallbacks` in order when this one fails.
    #[pyo3(signature = (fallbacks, *, exceptions_to_handle=None, exception_key=None))]
    fn with_fallbacks(
        slf: &Bound<'_, Self>,
        fallbacks: &Bound<'_, PyAny>,
        exceptions_to_handle: Option<&Bound<'_, PyAny>>,
        exception_key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Runnable>> {
        fallbacks::with_fallbacks(
            Step::part(slf)?,
            fallbacks,
            exceptions_to_handle,
            exception_key,
        )
    }

    /// A runnable that raises `StepTimeoutError` when this one runs longer than `seconds`.
    fn with_timeout(slf: &Bound<'_, Self>, seconds: &Bound<'_, PyAny>) -> PyResult<Py<Runnable>> {
        timeout::with_timeout(Step::part(slf)?, seconds)
    }

    /// A runnable whose calls start no faster than `limiter` allows.
    fn with_rate_limit(
        slf: &Bound<'_, Self>,
        limiter: &Bound<'_, PyAny>,
    ) -> PyResult<Py<Runnable>> {
        limited::with_rate_limit(Step::part(slf)?, limiter)
    }

    /// A runnable whose calls in flight count against `limit`.
    fn with_concurrency_limit(
        slf: &Bound<'_, Self>,
        limit: &Bound<'_, PyAny>,
    ) -> PyResult<Py<Runnable>> {
        limited::with_concurrency_limit(Step::part(slf)?, limit)
    }

    /// A runnable that memoizes this one's results by input.
    #[pyo3(
        signature = (*, maxsize=CacheSize(Some(128)), ttl=None, key=None),
        text_signature = "($self, *, maxsize=128, ttl=None, key=None)"
    )]
    fn with_cache(
        slf: &Bound<'_, Self>,
        maxsize: CacheSize,
        ttl: Option<&Bound<'_, PyAny>>,
        key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Runnable>> {
        cache::with_cache(Step::part(slf)?, maxsize.0, ttl, key)
    }

    /// langchain_core's repr; for an instance made through a generic alias
    /// (`RunnablePassthrough[str]()`), with the parametrized class's name, as pydantic shows it.
    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let Some(node) = slf.get().node.get() else {
            return Ok(format!("<{} (not initialized)>", type_name(slf)));
        };
        let repr = node.repr(py)?;
        let alias = slf
            .getattr(intern!(py, "__dict__"))?
            .cast_into::<PyDict>()?
            .get_item(intern!(py, "__orig_class__"))?;
        match alias {
            Some(alias) if node.parametrized_repr() => {
                static PARAMETRIZED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
                PARAMETRIZED
                    .import(py, "fastlcel._introspect", "parametrized_repr")?
                    .call1((repr, alias))?
                    .extract()
            }
            _ => Ok(repr),
        }
    }

    /// The keyword arguments of its class's `__init__` that make it again (see
    /// [`Node::fields`]), its name included: what pickling, copies and langchain_core's
    /// serialization are made of.
    fn _fields<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        let fields = Self::ready(slf)?.fields(py)?;
        if let Some(name) = &*slf.get().name.lock() {
            fields.set_item(intern!(py, "name"), name)?;
        }
        Ok(fields)
    }

    /// Pickling and copies: the node's class remade from its fields, with the instance's own
    /// attributes.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let node = Self::ready(slf)?;
        let fields = Self::_fields(slf)?;
        let attrs = slf.getattr(intern!(py, "__dict__"))?;
        static NEWOBJ: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let newobj = NEWOBJ.import(py, "copyreg", "__newobj__")?;
        let state = PyTuple::new(py, [node.class(py).into_any(), fields.into_any(), attrs])?;
        PyTuple::new(
            py,
            [
                newobj.clone(),
                PyTuple::new(py, [slf.get_type()])?.into_any(),
                state.into_any(),
            ],
        )
    }

    /// The other half of [`Self::__reduce__`]: the class's `__init__` with the fields.
    fn __setstate__(
        slf: &Bound<'_, Self>,
        state: (Bound<'_, PyType>, Bound<'_, PyDict>, Bound<'_, PyAny>),
    ) -> PyResult<()> {
        let py = slf.py();
        let (class, fields, attrs) = state;
        class
            .getattr(intern!(py, "__init__"))?
            .call((slf,), Some(&fields))?;
        for (key, value) in attrs.cast::<PyDict>()?.iter() {
            slf.setattr(key.cast_into::<PyString>()?, value)?;
        }
        Ok(())
    }

    // NOTE: no __clear__: every cycle through a runnable runs through a Python object it holds
    // (a function, a dict), whose own tp_clear breaks it; __traverse__ lets the collector see it.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self.node.get() {
            Some(node) => node.traverse(&visit),
            None => Ok(()),
        }
    }
}

/// langchain_core's `Runnable.<name>` called on `slf`: the methods that only observe runs
/// (events, logs, listeners) are langchain_core's own, fed by the runs fastlcel opens.
fn langchain_method<'py>(
    slf: &Bound<'py, Runnable>,
    name: &str,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let method = super::trace::langchain_method(py, name)?;
    let all: Vec<Bound<'py, PyAny>> = std::iter::once(slf.as_any().clone())
        .chain(args.iter())
        .collect();
    let all = PyTuple::new(py, all)?;
    method.call(all, kwargs)
}

/// The runnable a call runs (under its config's policy keys) and its arguments.
fn call(
    slf: &Bound<'_, Runnable>,
    config: Option<&Bound<'_, PyAny>>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<(Step, Args)> {
    let config = Arc::new(RunConfig::for_call(slf.py(), config)?);
    let step = with_config_policy(slf.py(), Step::native(slf)?, [&config.policy])?;
    let args = Args {
        config,
        kwargs: kwargs_of(kwargs),
        run: None,
        batched: false,
        name: None,
    };
    Ok((step, args))
}

/// The output chunks of `step` for `input`, for `caller`.
fn stream_of(
    py: Python<'_>,
    step: Step,
    input: Chunks,
    config: Option<&Bound<'_, PyAny>>,
    kwargs: Option<&Bound<'_, PyDict>>,
    caller: Caller,
) -> PyResult<Chunks> {
    let args = Args {
        config: Arc::new(RunConfig::for_call(py, config)?),
        kwargs: kwargs_of(kwargs),
        run: None,
        batched: false,
        name: None,
    };
    Ok(step.stream(input, args, caller))
}

fn kwargs_of(kwargs: Option<&Bound<'_, PyDict>>) -> Option<Arc<Py<PyDict>>> {
    kwargs
        .filter(|k| !k.is_empty())
        .map(|k| Arc::new(k.clone().unbind()))
}

/// What a Binding is made of, for [`rebind`] to change.
pub(crate) struct BindingParts<'py> {
    pub(crate) bound: Step,
    pub(crate) config: Bound<'py, PyDict>,
    pub(crate) kwargs: Bound<'py, PyDict>,
    pub(crate) config_factories: Bound<'py, pyo3::types::PyList>,
    pub(crate) input_type: Option<Py<PyAny>>,
    pub(crate) output_type: Option<Py<PyAny>>,
}

/// A Binding of `slf` whose parts `change` derives from the current ones (empty unless `slf`
/// is itself a Binding, whose bound runnable is then re-bound, as langchain_core does).
fn rebind<'py>(
    slf: &Bound<'py, Runnable>,
    change: impl FnOnce(&mut BindingParts<'py>) -> PyResult<()>,
) -> PyResult<Py<Runnable>> {
    let py = slf.py();
    let node = Runnable::ready(slf)?;
    let mut parts = match node.as_any().downcast_ref::<BindingNode>() {
        Some(b) if !slf.get().overrides => b.parts(py),
        _ => BindingParts {
            bound: Step::part(slf)?,
            config: PyDict::new(py),
            kwargs: PyDict::new(py),
            config_factories: pyo3::types::PyList::empty(py),
            input_type: None,
            output_type: None,
        },
    };
    change(&mut parts)?;
    Binding::make(py, BindingNode::from_parts(parts))
}

/// The calls of `batch` and its kin: this runnable on every input, the fan-out's options, and
/// the progress bar the config asks for (closed when dropped).
/// `batched`: the items are a `batch`'s (langchain_core's `batch_as_completed` invokes them).
fn batch_calls(
    slf: &Bound<'_, Runnable>,
    inputs: &Bound<'_, PyAny>,
    config: Option<&Bound<'_, PyAny>>,
    return_exceptions: ReturnExceptions,
    kwargs: Option<&Bound<'_, PyDict>>,
    batched: bool,
) -> PyResult<(Arc<dyn Work>, FanOpts, Option<Shown>)> {
    let step = Step::runnable(slf)?;
    let inputs = collect_inputs(inputs)?;
    let configs = BatchConfig::parse(slf.py(), config, inputs.len())?;
    let opts = FanOpts {
        max_concurrency: configs.max_concurrency(),
        return_exceptions: return_exceptions.0,
    };
    let progress = configs.claim_progress();
    let step = Arc::new(with_config_policy(slf.py(), step, configs.policies())?);
    let calls = Calls::Map {
        step: Arc::clone(&step),
        inputs,
        configs,
        kwargs: kwargs_of(kwargs),
        batched,
    };
    let (work, bar) = progress::shown(Arc::new(calls), progress, |py| step.name(py))?;
    Ok((work, opts, bar))
}

/// `step` under the policy keys of its call's config (`concurrency_limit`, then
/// `rate_limiter`, then `timeout`, outermost first), or itself if no config sets one. The
/// wrappers read the keys from each call's config, so a batch's per-input configs may differ.
/// They apply to the call they are passed to, not again to every step inside it.
fn with_config_policy<'a>(
    py: Python<'_>,
    step: Step,
    policies: impl IntoIterator<Item = &'a Policy>,
) -> PyResult<Step> {
    let (mut timeout, mut rate, mut concurrency) = (false, false, false);
    for policy in policies {
        timeout |= policy.timeout.is_some();
        rate |= policy.rate_limiter.is_some();
        concurrency |= policy.concurrency_limit.is_some();
    }
    let mut step = step;
    if timeout {
        step = wrap(py, TimeoutNode::from_config(step))?;
    }
    if rate {
        step = wrap(py, LimitedNode::rate_from_config(step))?;
    }
    if concurrency {
        step = wrap(py, LimitedNode::concurrency_from_config(step))?;
    }
    Ok(step)
}

fn wrap(py: Python<'_>, node: impl Node) -> PyResult<Step> {
    Ok(Step::Native(Py::new(py, Runnable::init(node))?))
}
