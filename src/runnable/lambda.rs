//! `Lambda`: a function (sync, async or both) as a runnable, and `Generator`: a generator
//! function over the stream of input chunks.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use futures_util::StreamExt;
use pyo3::exceptions::PyRecursionError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::errors::type_error;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyTypeInfo};

use super::base::{Node, Runnable, Streaming};
use super::{describe, may_be_runnable, returned_runnable, trace, Args, Here, Step};
use crate::exec::blocking::{self, Blame};
use crate::exec::context;
use crate::exec::coro::StepFuture;
use crate::exec::external::Executor;
use crate::exec::stream::{accumulate, Accumulator, ChunkAsyncIterator, ChunkIterator, Chunks};
use crate::exec::{aio, bridge, Caller, Kind};

/// A Python function and what was learnt about it once, at construction.
pub(crate) struct Func {
    pub(crate) func: Py<PyAny>,
    /// It has a parameter named `config`: it receives the call's config dict.
    takes_config: bool,
    /// It has a parameter named `run_manager`: in a traced call it receives its run's manager.
    takes_run_manager: bool,
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
            takes_config: has_parameter(func, "config")?,
            takes_run_manager: has_parameter(func, "run_manager")?,
            generator: inspect(py, "isgeneratorfunction", func)?,
            async_generator: is_async_generator(func)?,
        })
    }

    /// Calls it on `input` with the call's keyword arguments, and the config if it takes one.
    ///
    /// In a traced call it runs as langchain_core's `call_func_with_variable_args` inside
    /// `set_config_context`: its config is a child of the run, it gets the run's manager if it
    /// takes one, and its code runs in a context holding that config (config-less runnables and
    /// `@traceable` functions called inside nest under the run); the returned `ctx` is where a
    /// generator or coroutine it made must be resumed.
    pub(crate) fn call<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        args: &Args,
    ) -> PyResult<Called<'py>> {
        let func = self.func.bind(py);
        let child = match &args.run {
            Some(_) => Some(args.child(py)?),
            None => None,
        };
        let ctx = match &child {
            Some(child) => trace::user_context(py, child)?,
            None => None,
        };
        let run_manager = args
            .run
            .as_ref()
            .filter(|_| self.takes_run_manager)
            .map(|run| run.manager(py));
        let extra = args.kwargs(py);
        let call = || {
            if !self.takes_config && run_manager.is_none() && extra.is_none() {
                return func.call1((input,));
            }
            let kwargs = extra.map_or_else(|| Ok(PyDict::new(py)), |e| e.copy())?;
            if self.takes_config {
                let config = child.as_ref().map_or(&args.config, |c| &c.config);
                kwargs.set_item(intern!(py, "config"), config.to_dict(py)?)?;
            }
            if let Some(run_manager) = run_manager {
                kwargs.set_item(intern!(py, "run_manager"), run_manager)?;
            }
            func.call((input,), Some(&kwargs))
        };
        let output = match &ctx {
            Some(ctx) => context::enter(ctx, call)?,
            None => call()?,
        };
        Ok(Called { output, ctx })
    }

    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.func)
    }
}

/// What calling a function gave.
pub(crate) struct Called<'py> {
    pub(crate) output: Bound<'py, PyAny>,
    /// The context its code runs in (a traced call's), to resume what it returned in.
    pub(crate) ctx: Option<Bound<'py, PyAny>>,
}

impl Called<'_> {
    fn ctx(&self) -> Option<Py<PyAny>> {
        self.ctx.as_ref().map(|c| c.clone().unbind())
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
    /// langchain_core's `name` (a Generator's is in its repr).
    name: Option<Py<PyString>>,
    kind: LambdaKind,
    /// Its repr, made once: it parses the function's source.
    repr: OnceLock<String>,
    /// Where `func` runs instead of here (`Lambda(..., executor=...)`).
    executor: Option<Executor>,
    /// Warned about once for holding the event loop (see `exec::blocking`).
    blame: Blame,
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
        let called = func.call(py, input.bind(py), args)?;
        if !func.generator {
            return Ok(called.output.unbind());
        }
        let sum = || {
            let mut acc = Accumulator::new(false);
            for chunk in called.output.try_iter()? {
                acc.add(py, chunk?.unbind())?;
            }
            Ok(acc.value(py)?.unwrap_or_else(|| py.None()))
        };
        match &called.ctx {
            Some(ctx) => context::enter(ctx, sum),
            None => sum(),
        }
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
        let (made, ctx, threshold) = Python::attach(|py| {
            let threshold = self.blame.threshold(py, &args.config.blocking);
            afunc
                .call(py, input.bind(py), args)
                .map(|c| (c.output.clone().unbind(), c.ctx(), threshold))
        })?;
        if afunc.async_generator {
            let total = accumulate(Chunks::from_aiter_in(made, ctx)).await?;
            return Ok(total.unwrap_or_else(|| Python::attach(|py| py.None())));
        }
        let who = |py: Python<'_>| (self.run_name(py, args), Some(afunc.func.clone_ref(py)));
        blocking::await_step(made, ctx, threshold, &self.blame, who).await
    }

    /// The name of its run: the one `Step::name` gave a traced call, else the name it was
    /// given or its function's.
    fn run_name(&self, py: Python<'_>, args: &Args) -> String {
        match (&args.name, &self.name) {
            (Some(name), _) => name.clone(),
            (None, Some(name)) => name.bind(py).to_string(),
            (None, None) => self.name(py),
        }
    }

    /// Whether this call runs the sync function: on a thread, or an inline one anywhere.
    fn runs_sync(&self, mode: Caller) -> bool {
        mode == Caller::Thread || self.kind == LambdaKind::Inline
    }

    /// The function's output on `input`, `mode`'s way: on the executor, else the sync or the
    /// async function.
    async fn call(&self, input: &Py<PyAny>, args: &Args, mode: Caller) -> PyResult<Py<PyAny>> {
        match (&self.executor, &self.func) {
            (Some(executor), Some(func)) => {
                let kwargs = Python::attach(|py| args.kwargs(py).map(|k| k.clone().unbind()));
                executor.call(&func.func, input, kwargs, mode).await
            }
            _ if self.runs_sync(mode) => Python::attach(|py| self.call_sync(py, input, args)),
            _ => self.call_async(input, args).await,
        }
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
        let child = args.child(py)?;
        let config = child.config.with_recursion_limit(py, limit - 1)?;
        Ok(Some((step, Args::new(Arc::new(config)))))
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
                        let called = func.call(py, chunks.bind(py).as_any(), &args)?;
                        Chunks::from_iterable_in(&called.output, called.ctx())
                    }
                    (Caller::Loop, _, Some(afunc)) => {
                        let chunks = Py::new(py, ChunkAsyncIterator::bare(input))?;
                        let called = afunc.call(py, chunks.bind(py).as_any(), &args)?;
                        Ok(Chunks::from_aiter_in(called.output.clone().unbind(), called.ctx()))
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
                    let called = func.call(py, value.bind(py), &args)?;
                    if sync {
                        Chunks::from_iterable_in(&called.output, called.ctx())
                    } else {
                        Ok(Chunks::from_aiter_in(called.output.clone().unbind(), called.ctx()))
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
                match Python::attach(|py| acc.value(py)) {
                    Ok(value) => value,
                    Err(err) => {
                        yield Err(err);
                        return;
                    }
                }
            } else {
                match self.call(&value, &args, mode).await {
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
        let afunc = afunc.filter(|a| !a.is_none());
        // langchain_core names a RunnableLambda after its function (not "<lambda>"), a
        // RunnableGenerator after its function whatever it is called.
        let named_by = func;
        let name = match name {
            Some(name) => Some(name),
            None => match named_by.getattr(intern!(py, "__name__")) {
                Ok(n) => Some(n.str()?).filter(|n| {
                    kind == LambdaKind::Generator || n.to_str().is_ok_and(|n| n != "<lambda>")
                }),
                Err(_) if kind == LambdaKind::Generator => {
                    Some(PyString::new(py, "RunnableGenerator"))
                }
                Err(_) => None,
            },
        };
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
        static ITEMGETTER: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        let itemgetter = ITEMGETTER.import(py, "operator", "itemgetter")?;
        // An itemgetter is too cheap to hand off: it runs inline, even on the event loop.
        let inline = afunc.is_none() && func.is_some_and(|f| f.is_exact_instance(itemgetter));
        let kind = if kind == LambdaKind::Function && inline {
            LambdaKind::Inline
        } else {
            kind
        };
        Ok(Self {
            func: func.map(Func::new).transpose()?,
            afunc: afunc.as_ref().map(Func::new).transpose()?,
            name: name.map(Bound::unbind),
            kind,
            repr: OnceLock::new(),
            executor: None,
            blame: Blame::new(),
        })
    }

    /// langchain_core's repr: `RunnableLambda(<the lambda's source, or the function's name>)`,
    /// `RunnableGenerator(<name>)`.
    fn make_repr(&self, py: Python<'_>) -> PyResult<String> {
        if self.kind == LambdaKind::Generator {
            let name = self
                .name
                .as_ref()
                .map_or_else(|| "None".to_owned(), |n| n.bind(py).to_string());
            return Ok(format!("RunnableGenerator({name})"));
        }
        static SOURCE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let source = |f: &Func| -> PyResult<String> {
            let found = SOURCE
                .import(py, "fastlcel._introspect", "lambda_source")?
                .call1((f.func.bind(py),))?;
            Ok(if found.is_none() {
                "...".to_owned()
            } else {
                found.str()?.to_string()
            })
        };
        Ok(match (&self.func, &self.afunc) {
            (Some(f), _) if self.kind == LambdaKind::Inline => {
                let text = f.func.bind(py).str()?.to_string();
                let text = text.strip_prefix("operator.").unwrap_or(&text).to_owned();
                format!("RunnableLambda({text})")
            }
            (Some(f), _) => format!("RunnableLambda({})", source(f)?),
            (None, Some(f)) => format!("RunnableLambda(afunc={})", source(f)?),
            (None, None) => "RunnableLambda(...)".to_owned(),
        })
    }

    /// This Lambda with its function sent to `executor` (see `exec::external`). Only a plain
    /// call can cross: no async function, no generator, no config (it holds callbacks).
    fn on_executor(mut self, py: Python<'_>, executor: &Bound<'_, PyAny>) -> PyResult<Self> {
        let step = self.repr(py)?;
        let reason = match (&self.func, &self.afunc) {
            (None, _) => Some("its function is async (async def); an executor runs a sync def"),
            (Some(_), Some(_)) => Some(
                "it has an `afunc`, which the executor would never run (ainvoke sends `func` \
                 to the executor too); drop it",
            ),
            (Some(f), None) if f.takes_config || f.takes_run_manager => Some(
                "its function takes `config` or `run_manager`, which hold callbacks and other \
                 live objects that cannot be sent to another process",
            ),
            (Some(f), None) if f.generator => {
                Some("a generator function's chunks cannot cross one by one; return a list instead")
            }
            (Some(_), None) => None,
        };
        if let Some(reason) = reason {
            return Err(type_error(format!(
                "{step} cannot run on an executor: {reason}"
            )));
        }
        self.executor = Some(Executor::new(executor, step)?);
        Ok(self)
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
    fn defers_inputs(&self) -> bool {
        self.kind == LambdaKind::Generator
    }

    fn kind(&self) -> Kind {
        if self.executor.is_some() {
            return Kind::External;
        }
        match (self.kind, &self.func, &self.afunc) {
            (LambdaKind::Inline, _, _) => Kind::Inline,
            (_, Some(_), Some(_)) => Kind::Async,
            (_, None, Some(_)) => Kind::LoopOnly,
            _ => Kind::Blocking,
        }
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        if self.kind == LambdaKind::Generator {
            // RunnableGenerator.invoke: the chunks of its stream (its run) added up with `+`.
            let chunks = Here::Node(self).stream(Chunks::once(input), args, mode);
            return Box::pin(sum(chunks));
        }
        Box::pin(async move {
            let output = self.call(&input, &args, mode).await?;
            self.finish(input, output, args, mode).await
        })
    }

    /// A Generator's run is its stream's (its invoke adds up the chunks outside of it).
    fn opens_run(&self) -> bool {
        self.kind != LambdaKind::Generator
    }

    fn stream_opens_run(&self) -> bool {
        true
    }

    fn streaming(&self) -> Streaming {
        Streaming::Transform
    }

    fn transform(self: Arc<Self>, input: Chunks, args: Args, mode: Caller) -> Chunks {
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
        match (&self.executor, &self.func) {
            // A traced call runs in its run: not the fast path.
            (Some(_), _) if args.config.traced => return Ok(None),
            (Some(executor), Some(func)) => {
                let kwargs = args.kwargs(input.py()).map(|k| k.clone().unbind());
                return executor.awaitable(&func.func, input, kwargs).map(Some);
            }
            _ => {}
        }
        match &self.afunc {
            // A traced call runs in its run, a watched one is timed: not the fast path.
            Some(afunc)
                if self.kind == LambdaKind::Function
                    && !afunc.async_generator
                    && !args.config.traced
                    && self
                        .blame
                        .threshold(input.py(), &args.config.blocking)
                        .is_none() =>
            {
                afunc.call(input.py(), input, args).map(|c| Some(c.output))
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

    fn name(&self, _py: Python<'_>) -> String {
        match self.kind {
            LambdaKind::Generator => "RunnableGenerator",
            _ => "RunnableLambda",
        }
        .to_owned()
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.func
            .iter()
            .chain(self.afunc.iter())
            .try_for_each(|f| f.traverse(visit))?;
        self.executor.iter().try_for_each(|e| e.traverse(visit))
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        if let Some(repr) = self.repr.get() {
            return Ok(repr.clone());
        }
        let repr = self.make_repr(py)?;
        Ok(self.repr.get_or_init(|| repr).clone())
    }

    /// RunnableLambda and RunnableGenerator are plain classes.
    fn parametrized_repr(&self) -> bool {
        false
    }

    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        match self.kind {
            LambdaKind::Generator => Generator::type_object(py),
            _ => Lambda::type_object(py),
        }
    }

    /// `func`/`afunc` (a Generator's `transform`/`atransform`); an async-only one's function
    /// comes first, which `__init__` tells apart.
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (first, second) = match self.kind {
            LambdaKind::Generator => ("transform", "atransform"),
            _ => ("func", "afunc"),
        };
        let fields = PyDict::new(py);
        match (&self.func, &self.afunc) {
            (Some(func), afunc) => {
                fields.set_item(first, &func.func)?;
                if let Some(afunc) = afunc {
                    fields.set_item(second, &afunc.func)?;
                }
            }
            (None, Some(afunc)) => fields.set_item(first, &afunc.func)?,
            (None, None) => {}
        }
        if let Some(executor) = &self.executor {
            fields.set_item(intern!(py, "executor"), executor.object())?;
        }
        Ok(fields)
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
#[pyclass(frozen, subclass, extends = Runnable, module = "fastlcel", name = "Lambda")]
pub(crate) struct Lambda;

impl Lambda {
    /// A plain callable met where a runnable was expected.
    pub(crate) fn wrap(func: &Bound<'_, PyAny>, kind: LambdaKind) -> PyResult<Py<Runnable>> {
        let py = func.py();
        let node = LambdaNode::new(func, None, None, kind)?;
        let name = node.name.as_ref().map(|n| n.bind(py).clone());
        if kind == LambdaKind::Generator {
            Runnable::create(py, node, Generator, name)
        } else {
            Runnable::create(py, node, Lambda, name)
        }
    }

    fn node<'a>(slf: &'a Bound<'_, Self>) -> PyResult<&'a LambdaNode> {
        Runnable::node_as(slf.as_super())
    }
}

/// Gives `slf` its node (the `__init__` of Lambda and Generator).
fn init_lambda(
    slf: &Bound<'_, Runnable>,
    func: &Bound<'_, PyAny>,
    afunc: Option<&Bound<'_, PyAny>>,
    name: Option<Bound<'_, PyString>>,
    kind: LambdaKind,
    executor: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let mut node = LambdaNode::new(func, afunc, name, kind)?;
    if let Some(executor) = executor.filter(|e| !e.is_none()) {
        node = node.on_executor(slf.py(), executor)?;
    }
    let name = node.name.as_ref().map(|n| n.bind(slf.py()).clone());
    Runnable::set_node(slf, node, name)
}

#[pymethods]
impl Lambda {
    #[new]
    #[classmethod]
    #[pyo3(
        signature = (*_args, **_kwargs),
        text_signature = "(func, afunc=None, name=None, *, executor=None)"
    )]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<pyo3::PyClassInitializer<Self>> {
        Ok(Runnable::blank_of(cls, &Self::type_object(cls.py()))?.add_subclass(Lambda))
    }

    #[pyo3(signature = (func, afunc=None, name=None, *, executor=None))]
    fn __init__(
        slf: &Bound<'_, Self>,
        func: &Bound<'_, PyAny>,
        afunc: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
        executor: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = crate::validate::name(name, "Lambda(name)")?;
        init_lambda(
            slf.as_super(),
            func,
            afunc,
            name,
            LambdaKind::Function,
            executor,
        )
    }

    /// The executor the function runs on (``None``: here).
    #[getter]
    fn executor(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let node = Self::node(slf)?;
        Ok(node
            .executor
            .as_ref()
            .map(|e| e.object().clone_ref(slf.py())))
    }

    #[getter]
    fn func(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let node = Self::node(slf)?;
        Ok(node.function(slf.py(), &node.func))
    }

    #[getter]
    fn afunc(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let node = Self::node(slf)?;
        Ok(node.function(slf.py(), &node.afunc))
    }
}

/// A generator function over the stream of input chunks, like langchain_core's
/// `RunnableGenerator`: `transform(chunks)` yields output chunks (`atransform` for the async
/// path); `invoke` returns the sum of the chunks. Coercion makes one from a generator function.
#[pyclass(frozen, subclass, extends = Runnable, module = "fastlcel", name = "Generator")]
pub(crate) struct Generator;

#[pymethods]
impl Generator {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(transform, atransform=None, *, name=None)")]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<pyo3::PyClassInitializer<Self>> {
        Ok(Runnable::blank_of(cls, &Self::type_object(cls.py()))?.add_subclass(Generator))
    }

    #[pyo3(signature = (transform, atransform=None, *, name=None))]
    fn __init__(
        slf: &Bound<'_, Self>,
        transform: &Bound<'_, PyAny>,
        atransform: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = crate::validate::name(name, "Generator(name)")?;
        init_lambda(
            slf.as_super(),
            transform,
            atransform,
            name,
            LambdaKind::Generator,
            None,
        )
    }

    /// The sync generator function (``None`` if there is only an async one).
    #[getter]
    fn func(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let node: &LambdaNode = Runnable::node_as(slf.as_super())?;
        Ok(node.function(slf.py(), &node.func))
    }

    /// The async generator function, if any.
    #[getter]
    fn afunc(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let node: &LambdaNode = Runnable::node_as(slf.as_super())?;
        Ok(node.function(slf.py(), &node.afunc))
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
pub(crate) fn is_async_callable(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
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

/// Whether `func` has a parameter named `name` (langchain_core's `accepts_config`,
/// `accepts_run_manager`).
fn has_parameter(func: &Bound<'_, PyAny>, name: &str) -> PyResult<bool> {
    let py = func.py();
    static SIGNATURE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let signature = SIGNATURE.import(py, "inspect", "signature")?;
    match signature.call1((func,)) {
        Ok(sig) => sig.getattr(intern!(py, "parameters"))?.contains(name),
        // Builtins and some C callables have no signature: they take no config.
        Err(_) => Ok(false),
    }
}
