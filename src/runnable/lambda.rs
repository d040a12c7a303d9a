//! `Lambda`: a function (sync, async or both) as a runnable, and `Generator`: a generator
//! function over the stream of input chunks.

use std::any::Any;
use std::sync::Arc;

use futures_util::StreamExt;
use pyo3::exceptions::PyRecursionError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::errors::type_error;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};
use pyo3::{intern, PyClassInitializer, PyTraverseError};

use super::base::{Node, Runnable};
use super::{describe, may_be_runnable, returned_runnable, Args, Step};
use crate::exec::coro::{py_await, StepFuture};
use crate::exec::stream::{accumulate, Accumulator, ChunkAsyncIterator, ChunkIterator, Chunks};
use crate::exec::{aio, bridge, Caller, Kind};

/// A Python function and what was learnt about it once, at construction.
pub(crate) struct Func {
    func: Py<PyAny>,
    /// It has a parameter named `config`: it receives the call's config dict.
    takes_config: bool,
    /// A generator function: `invoke` returns the sum (`+`) of its chunks, as langchain's does.
    generator: bool,
    /// An async generator function (or an object whose `__call__` is one).
    async_generator: bool,
}

impl Func {
    pub(crate) fn new(func: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = func.py();
        Ok(Self {
            func: func.clone().unbind(),
            takes_config: takes_config(func)?,
            generator: inspect(py, "isgeneratorfunction", func)?,
            async_generator: is_async_generator(func)?,
        })
    }

    /// Calls it on `input` with the call's keyword arguments, and the config if it takes one.
    pub(crate) fn call<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        args: &Args,
    ) -> PyResult<Bound<'py, PyAny>> {
        let func = self.func.bind(py);
        let extra = args.kwargs(py);
        let kwargs = match (self.takes_config, extra) {
            (false, None) => return func.call1((input,)),
            (false, Some(extra)) => extra.copy()?,
            (true, extra) => {
                let kwargs = extra.map_or_else(|| Ok(PyDict::new(py)), |e| e.copy())?;
                kwargs.set_item(intern!(py, "config"), args.config.to_dict(py)?)?;
                kwargs
            }
        };
        func.call((input,), Some(&kwargs))
    }

    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.func)
    }
}

/// How a Lambda's function is called.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum LambdaKind {
    /// On the input (`RunnableLambda`).
    Function,
    /// On the input, inline even on the event loop (`operator.itemgetter`).
    Inline,
    /// On an iterator of input chunks, yielding output chunks (`RunnableGenerator`).
    Generator,
}

pub(crate) struct LambdaNode {
    func: Option<Func>,
    afunc: Option<Func>,
    name: Py<PyString>,
    kind: LambdaKind,
}

impl LambdaNode {
    /// The Python function of `func` (one of this node's), for the getters.
    fn function(&self, py: Python<'_>, func: &Option<Func>) -> Option<Py<PyAny>> {
        func.as_ref().map(|f| f.func.clone_ref(py))
    }

    fn no_sync_function(&self, py: Python<'_>) -> PyErr {
        type_error(format!(
            "{} has only an async function; it cannot run synchronously here. Use \
             `await runnable.ainvoke(...)` (or abatch, astream) instead",
            self.repr(py).unwrap_or_default()
        ))
    }

    /// The sync function's output on `input`; a generator function's chunks added up.
    fn call_sync(&self, py: Python<'_>, input: &Py<PyAny>, args: &Args) -> PyResult<Py<PyAny>> {
        let func = self
            .func
            .as_ref()
            .ok_or_else(|| self.no_sync_function(py))?;
        let output = func.call(py, input.bind(py), args)?;
        if !func.generator {
            return Ok(output.unbind());
        }
        let mut acc = Accumulator::new(false);
        for chunk in output.try_iter()? {
            acc.add(py, chunk?.unbind())?;
        }
        Ok(acc.value().unwrap_or_else(|| py.None()))
    }

    /// The async function's output on `input`, awaited; an async generator's chunks added up.
    async fn call_async(&self, input: &Py<PyAny>, args: &Args) -> PyResult<Py<PyAny>> {
        let Some(afunc) = &self.afunc else {
            return Err(Python::attach(|py| {
                type_error(format!(
                    "{} has no async function (fastlcel internal error: please report it)",
                    self.repr(py).unwrap_or_default()
                ))
            }));
        };
        let made = Python::attach(|py| afunc.call(py, input.bind(py), args).map(Bound::unbind))?;
        if afunc.async_generator {
            let total = accumulate(Chunks::from_aiter(made)).await?;
            return Ok(total.unwrap_or_else(|| Python::attach(|py| py.None())));
        }
        py_await(made).await
    }

    /// Whether this call runs the sync function: on a thread, or an inline one anywhere.
    fn runs_sync(&self, mode: Caller) -> bool {
        mode == Caller::Thread || self.kind == LambdaKind::Inline
    }

    /// If `output` is a runnable, what runs in the Lambda's place: that runnable and its
    /// arguments (one less `recursion_limit`), as langchain_core's RunnableLambda does.
    fn returned(
        &self,
        py: Python<'_>,
        input: &Py<PyAny>,
        output: &Bound<'_, PyAny>,
        args: &Args,
    ) -> PyResult<Option<(Step, Args)>> {
        let Some(step) = returned_runnable(output)? else {
            return Ok(None);
        };
        let limit = args.config.recursion_limit;
        if limit <= 0 {
            return Err(PyRecursionError::new_err(format!(
                "Recursion limit reached when invoking {} with input {}.",
                self.repr(py)?,
                input.bind(py).repr()?
            )));
        }
        let child = args.config.with_recursion_limit(py, limit - 1)?;
        Ok(Some((step, Args::new(Arc::new(child)))))
    }

    /// The Lambda's output once its function returned `output`.
    async fn finish(
        self: Arc<Self>,
        input: Py<PyAny>,
        output: Py<PyAny>,
        args: Args,
        mode: Caller,
    ) -> PyResult<Py<PyAny>> {
        let next = Python::attach(|py| self.returned(py, &input, output.bind(py), &args))?;
        match next {
            None => Ok(output),
            Some((step, child)) => run_returned(&step, input, child, mode).await,
        }
    }

    /// The chunks of a generator function over the stream of input chunks.
    fn generate(self: Arc<Self>, input: Chunks, args: Args, mode: Caller) -> Chunks {
        let stream = async_stream::stream! {
            let made = Python::attach(|py| -> PyResult<Chunks> {
                match (mode, &self.func, &self.afunc) {
                    (Caller::Thread, Some(func), _) => {
                        let chunks = Py::new(py, ChunkIterator::bare(input))?;
                        Chunks::from_iterable(&func.call(py, chunks.bind(py).as_any(), &args)?)
                    }
                    (Caller::Loop, _, Some(afunc)) => {
                        let chunks = Py::new(py, ChunkAsyncIterator::bare(input))?;
                        let output = afunc.call(py, chunks.bind(py).as_any(), &args)?;
                        Ok(Chunks::from_aiter(output.unbind()))
                    }
                    _ => Err(self.no_sync_function(py)),
                }
            });
            match made {
                Ok(mut chunks) => {
                    while let Some(chunk) = chunks.stream.next().await {
                        yield chunk;
                    }
                }
                Err(err) => yield Err(err),
            }
        };
        Chunks::made_by(Box::pin(stream), mode)
    }

    /// A function's chunks, as langchain_core's RunnableLambda streams: the function runs on the
    /// sum of the input; a generator function's chunks come as they are made; a runnable it
    /// returns is streamed in its place.
    fn stream_function(self: Arc<Self>, input: Chunks, args: Args, mode: Caller) -> Chunks {
        let stream = async_stream::stream! {
            let value = match accumulate(input).await {
                Ok(Some(value)) => value,
                Ok(None) => return,
                Err(err) => {
                    yield Err(err);
                    return;
                }
            };
            let sync = self.runs_sync(mode);
            let func = if sync { &self.func } else { &self.afunc };
            let streams = func.as_ref().is_some_and(|f| if sync { f.generator } else { f.async_generator });
            let output = if streams {
                let made = Python::attach(|py| -> PyResult<Chunks> {
                    let func = func.as_ref().expect("checked just above");
                    let output = func.call(py, value.bind(py), &args)?;
                    if sync {
                        Chunks::from_iterable(&output)
                    } else {
                        Ok(Chunks::from_aiter(output.unbind()))
                    }
                });
                let mut chunks = match made {
                    Ok(chunks) => chunks,
                    Err(err) => {
                        yield Err(err);
                        return;
                    }
                };
                let mut acc = Accumulator::new(false);
                while let Some(chunk) = chunks.stream.next().await {
                    match chunk {
                        Ok(chunk) => {
                            let copy = Python::attach(|py| chunk.clone_ref(py));
                            yield Ok(chunk);
                            if let Err(err) = Python::attach(|py| acc.add(py, copy)) {
                                yield Err(err);
                                return;
                            }
                        }
                        Err(err) => {
                            yield Err(err);
                            return;
                        }
                    }
                }
                acc.value()
            } else {
                let output = if sync {
                    Python::attach(|py| self.call_sync(py, &value, &args))
                } else {
                    self.call_async(&value, &args).await
                };
                match output {
                    Ok(output) => Some(output),
                    Err(err) => {
                        yield Err(err);
                        return;
                    }
                }
            };
            let Some(output) = output else { return };
            let next = Python::attach(|py| self.returned(py, &value, output.bind(py), &args));
            match next {
                Ok(Some((step, child))) => {
                    let mut chunks = stream_returned(&step, value, child, mode);
                    while let Some(chunk) = chunks.stream.next().await {
                        yield chunk;
                    }
                }
                Ok(None) if !streams => yield Ok(output),
                Ok(None) => {}
                Err(err) => yield Err(err),
            }
        };
        Chunks::made_by(Box::pin(stream), mode)
    }

    fn new(
        func: &Bound<'_, PyAny>,
        afunc: Option<&Bound<'_, PyAny>>,
        name: Option<Bound<'_, PyString>>,
        kind: LambdaKind,
    ) -> PyResult<Self> {
        let py = func.py();
        if !func.is_callable() {
            return Err(type_error(format!(
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
                    return Err(type_error(
                        "Lambda got an async function as `func` and also an `afunc`; when \
                         passing both, `func` must be a regular (sync) function",
                    ));
                }
                (Some(func), Some(afunc.clone()))
            }
            Some(afunc) => {
                return Err(type_error(format!(
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
            kind,
        })
    }
}

/// Runs a runnable that a Lambda's function returned, the way the Lambda was called. A function
/// that ran on a pool thread for an awaiting caller still had an awaiting caller: the runnable
/// is awaited on that caller's loop, as langchain_core's `ainvoke` would (its async path).
fn run_returned(step: &Step, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
    let awaiting = mode == Caller::Thread && Python::attach(|py| aio::caller_loop(py).is_some());
    if awaiting {
        bridge::on_home_loop(step.run(input, args, Caller::Loop))
    } else {
        step.run(input, args, mode)
    }
}

/// [`run_returned`] for a stream.
fn stream_returned(step: &Step, input: Py<PyAny>, args: Args, mode: Caller) -> Chunks {
    let awaiting = mode == Caller::Thread && Python::attach(|py| aio::caller_loop(py).is_some());
    if awaiting {
        step.stream(Chunks::once(input), args, Caller::Loop)
            .conform(Caller::Thread)
    } else {
        step.stream(Chunks::once(input), args, mode)
    }
}

impl Node for LambdaNode {
    fn kind(&self) -> Kind {
        match (self.kind, &self.func, &self.afunc) {
            (LambdaKind::Inline, _, _) => Kind::Inline,
            (_, Some(_), Some(_)) => Kind::Async,
            (_, None, Some(_)) => Kind::LoopOnly,
            _ => Kind::Blocking,
        }
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        if self.kind == LambdaKind::Generator {
            // RunnableGenerator.invoke: its chunks added up with `+`.
            let chunks = self.generate(Chunks::once(input), args, mode);
            return Box::pin(sum(chunks));
        }
        Box::pin(async move {
            let output = if self.runs_sync(mode) {
                Python::attach(|py| self.call_sync(py, &input, &args))?
            } else {
                self.call_async(&input, &args).await?
            };
            self.finish(input, output, args, mode).await
        })
    }

    fn stream(self: Arc<Self>, input: Chunks, args: Args, mode: Caller) -> Chunks {
        if self.kind == LambdaKind::Generator {
            self.generate(input, args, mode)
        } else {
            self.stream_function(input, args, mode)
        }
    }

    // NOTE: a gather awaits the function's own coroutine and checks its result in the done
    // callback; wrapping every call in a coroutine of ours costs ~1-2.6 µs per item, which made
    // `abatch` 10% slower than `asyncio.gather`.
    fn awaitable<'py>(
        &self,
        input: &Bound<'py, PyAny>,
        args: &Args,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        match &self.afunc {
            Some(afunc) if self.kind == LambdaKind::Function && !afunc.async_generator => {
                afunc.call(input.py(), input, args).map(Some)
            }
            _ => Ok(None),
        }
    }

    fn followup(
        self: Arc<Self>,
        input: Py<PyAny>,
        args: Args,
        output: &Bound<'_, PyAny>,
    ) -> PyResult<Option<StepFuture>> {
        if !may_be_runnable(output)? {
            return Ok(None);
        }
        let output = output.clone().unbind();
        Ok(Some(Box::pin(self.finish(
            input,
            output,
            args,
            Caller::Loop,
        ))))
    }

    fn name(&self, py: Python<'_>) -> String {
        self.name.bind(py).to_string()
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.func
            .iter()
            .chain(self.afunc.iter())
            .try_for_each(|f| f.traverse(visit))
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let class = if self.kind == LambdaKind::Generator {
            "Generator"
        } else {
            "Lambda"
        };
        Ok(format!("{class}({})", self.name.bind(py)))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The chunks added up with `+` (RunnableGenerator's `invoke`); None if there are none.
async fn sum(mut chunks: Chunks) -> PyResult<Py<PyAny>> {
    let mut total: Option<Py<PyAny>> = None;
    while let Some(chunk) = chunks.stream.next().await {
        let chunk = chunk?;
        total = Some(match total {
            None => chunk,
            Some(t) => Python::attach(|py| t.bind(py).add(chunk.bind(py)).map(Bound::unbind))?,
        });
    }
    Ok(total.unwrap_or_else(|| Python::attach(|py| py.None())))
}

/// A function (sync, async or both) as a runnable, like langchain_core's `RunnableLambda`.
#[pyclass(frozen, extends = Runnable, module = "fastlcel", name = "Lambda")]
pub(crate) struct Lambda;

impl Lambda {
    /// A plain callable met where a runnable was expected.
    pub(crate) fn wrap(func: &Bound<'_, PyAny>, kind: LambdaKind) -> PyResult<Py<Runnable>> {
        let py = func.py();
        let node = LambdaNode::new(func, None, None, kind)?;
        if kind == LambdaKind::Generator {
            Runnable::create(py, node, Generator)
        } else {
            Runnable::create(py, node, Lambda)
        }
    }

    fn node<'a>(slf: &'a Bound<'_, Self>) -> &'a LambdaNode {
        slf.as_super().get().node_as()
    }
}

#[pymethods]
impl Lambda {
    #[new]
    #[pyo3(signature = (func, afunc=None, name=None))]
    fn py_new(
        func: &Bound<'_, PyAny>,
        afunc: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let name = crate::validate::name(name, "Lambda(name)")?;
        let node = LambdaNode::new(func, afunc, name, LambdaKind::Function)?;
        Ok(Runnable::init(node).add_subclass(Lambda))
    }

    #[getter]
    fn func(slf: &Bound<'_, Self>) -> Option<Py<PyAny>> {
        Self::node(slf).function(slf.py(), &Self::node(slf).func)
    }

    #[getter]
    fn afunc(slf: &Bound<'_, Self>) -> Option<Py<PyAny>> {
        Self::node(slf).function(slf.py(), &Self::node(slf).afunc)
    }
}

/// A generator function over the stream of input chunks, like langchain_core's
/// `RunnableGenerator`: `transform(chunks)` yields output chunks (`atransform` for the async
/// path); `invoke` returns the sum of the chunks. Coercion makes one from a generator function.
#[pyclass(frozen, extends = Runnable, module = "fastlcel", name = "Generator")]
pub(crate) struct Generator;

#[pymethods]
impl Generator {
    #[new]
    #[pyo3(signature = (transform, atransform=None, *, name=None))]
    fn py_new(
        transform: &Bound<'_, PyAny>,
        atransform: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let name = crate::validate::name(name, "Generator(name)")?;
        let node = LambdaNode::new(transform, atransform, name, LambdaKind::Generator)?;
        Ok(Runnable::init(node).add_subclass(Generator))
    }

    /// The sync generator function (``None`` if there is only an async one).
    #[getter]
    fn func(slf: &Bound<'_, Self>) -> Option<Py<PyAny>> {
        let node: &LambdaNode = slf.as_super().get().node_as();
        node.function(slf.py(), &node.func)
    }

    /// The async generator function, if any.
    #[getter]
    fn afunc(slf: &Bound<'_, Self>) -> Option<Py<PyAny>> {
        let node: &LambdaNode = slf.as_super().get().node_as();
        node.function(slf.py(), &node.afunc)
    }
}

/// A generator function or an async generator function.
pub(crate) fn is_generator_function(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = obj.py();
    Ok(inspect(py, "isgeneratorfunction", obj)? || is_async_generator(obj)?)
}

/// `inspect.<predicate>(obj)`.
fn inspect(py: Python<'_>, predicate: &str, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    static INSPECT: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = INSPECT.get_or_try_init(py, || py.import("inspect").map(Bound::unbind))?;
    module
        .bind(py)
        .getattr(predicate)?
        .call1((obj,))?
        .is_truthy()
}

/// langchain_core's `is_async_generator`: an async generator function, also as an object's
/// `__call__`.
fn is_async_generator(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = obj.py();
    if inspect(py, "isasyncgenfunction", obj)? {
        return Ok(true);
    }
    match obj.getattr(intern!(py, "__call__")) {
        Ok(call) => inspect(py, "isasyncgenfunction", &call),
        Err(_) => Ok(false),
    }
}

/// An `async def` function (or async generator function), also as an object's `__call__`.
fn is_async_callable(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = obj.py();
    let is_async = |f: &Bound<'_, PyAny>| -> PyResult<bool> {
        Ok(inspect(py, "iscoroutinefunction", f)? || inspect(py, "isasyncgenfunction", f)?)
    };
    if is_async(obj)? {
        return Ok(true);
    }
    match obj.getattr(intern!(py, "__call__")) {
        Ok(call) => is_async(&call),
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
