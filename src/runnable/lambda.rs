//! `Lambda`: a function (sync, async or both) as a runnable.

use std::any::Any;
use std::sync::Arc;

use pyo3::exceptions::PyRecursionError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::errors::type_error;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString};
use pyo3::{intern, PyClassInitializer, PyTraverseError};

use super::base::{Node, Runnable};
use super::{chain_helper, describe, may_be_runnable, returned_runnable};
use crate::config::RunConfig;
use crate::exec::{aio, Awaitable, Mode};

/// A Python function and what was learnt about it once, at construction.
pub(crate) struct Func {
    func: Py<PyAny>,
    /// It has a parameter named `config`: it receives the call's config dict.
    takes_config: bool,
    /// A generator function: `invoke` returns the sum (`+`) of its chunks, as langchain's does.
    generator: bool,
    /// An async generator function.
    async_generator: bool,
}

impl Func {
    pub(crate) fn new(func: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Self {
            func: func.clone().unbind(),
            takes_config: takes_config(func)?,
            generator: inspect(func.py(), "isgeneratorfunction", func)?,
            async_generator: inspect(func.py(), "isasyncgenfunction", func)?,
        })
    }

    pub(crate) fn call<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &RunConfig,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.call_with(py, input, config, None)
    }

    /// Calls with extra keyword arguments (`bind`), and the config if it takes one.
    fn call_with<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &RunConfig,
        extra: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let output = self.call_raw(py, input, config, extra)?;
        if !self.generator {
            return Ok(output);
        }
        let mut total: Option<Bound<'py, PyAny>> = None;
        for chunk in output.try_iter()? {
            let chunk = chunk?;
            total = Some(match total {
                None => chunk,
                Some(t) => t.add(chunk)?,
            });
        }
        Ok(total.unwrap_or_else(|| py.None().into_bound(py)))
    }

    fn call_raw<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &RunConfig,
        extra: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let func = self.func.bind(py);
        let kwargs = match (self.takes_config, extra) {
            (false, None) => return func.call1((input,)),
            (false, Some(extra)) => extra.copy()?,
            (true, extra) => {
                let kwargs = extra.map_or_else(|| Ok(PyDict::new(py)), |e| e.copy())?;
                kwargs.set_item(intern!(py, "config"), config.to_dict(py)?)?;
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
    /// The coroutine (or async generator) of the async function on `input`.
    fn acall<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let afunc = self
            .afunc
            .as_ref()
            .expect("Mode::Await Lambdas have an afunc");
        if self.kind == LambdaKind::Generator {
            let chunks = chain_helper(py, "asingle")?.call1((input,))?;
            afunc.call(py, &chunks, config)
        } else {
            afunc.call(py, input, config)
        }
    }

    /// The Python function of `func` (one of this node's), for the getters.
    fn function(&self, py: Python<'_>, func: &Option<Func>) -> Option<Py<PyAny>> {
        func.as_ref().map(|f| f.func.clone_ref(py))
    }

    /// Runs the sync function; a runnable it returns is invoked on the same input in its place
    /// (with one less `recursion_limit`).
    pub(crate) fn call(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: &Arc<RunConfig>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let Some(func) = &self.func else {
            // Reached from a sync step of an awaiting caller: await it on the caller's loop.
            let make = || match self.awaitable(py, input, config)? {
                Awaitable::Other(coro) | Awaitable::Future(coro) => Ok(coro),
            };
            if let Some(result) = aio::await_on_caller_loop(py, make) {
                return result;
            }
            return Err(type_error(format!(
                "Lambda({}) has only an async function; it cannot be invoked synchronously. \
                 Use `await runnable.ainvoke(...)` (or abatch) instead",
                self.name.bind(py)
            )));
        };
        let output = if self.kind == LambdaKind::Generator {
            let chunks = PyList::new(py, [input])?.try_iter()?;
            func.call_with(py, chunks.as_any(), config, kwargs)?
        } else {
            func.call_with(py, input, config, kwargs)?
        };
        let Some(step) = returned_runnable(&output)? else {
            return Ok(output.unbind());
        };
        if config.recursion_limit <= 0 {
            return Err(PyRecursionError::new_err(format!(
                "Recursion limit reached when invoking Lambda({}) with input {}.",
                self.name.bind(py),
                input.repr()?
            )));
        }
        let child = Arc::new(config.with_recursion_limit(py, config.recursion_limit - 1)?);
        step.invoke(py, input, &child)
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

impl Node for LambdaNode {
    /// Runs the sync function on the current thread.
    fn invoke(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Py<PyAny>> {
        self.call(py, input, config, None)
    }

    /// The coroutine of the async function (only for `Mode::Await`).
    fn awaitable<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Awaitable<'py>> {
        let coro = self.acall(py, input, config)?;
        // The function may return a runnable to run in its place: awaited by the helper.
        let helper = chain_helper(py, "lambda_result")?;
        let args = (coro, input, config.user_or_none(py), self.name.bind(py));
        Ok(Awaitable::Other(helper.call1(args)?))
    }

    // NOTE: a gather awaits the function's own coroutine and checks its result in the done
    // callback; wrapping every call in a coroutine (as `awaitable` does) costs ~1-2.6 µs per
    // item, which made `abatch` 10% slower than `asyncio.gather`.
    fn awaitable_unfinished<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Awaitable<'py>> {
        match &self.afunc {
            // An async generator is no coroutine: its chunks are summed by the helper.
            Some(afunc) if !afunc.async_generator => {
                Ok(Awaitable::Other(self.acall(py, input, config)?))
            }
            _ => self.awaitable(py, input, config),
        }
    }

    fn followup<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &Arc<RunConfig>,
        output: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        // SAFETY: a type check on a live object we hold.
        let async_gen = unsafe { pyo3::ffi::PyAsyncGen_CheckExact(output.as_ptr()) } != 0;
        if !async_gen && !may_be_runnable(output)? {
            return Ok(None);
        }
        let helper = chain_helper(py, "lambda_followup")?;
        let args = (output, input, config.user_or_none(py), self.name.bind(py));
        Ok(Some(helper.call1(args)?))
    }

    fn mode(&self) -> Mode {
        if self.kind == LambdaKind::Inline {
            Mode::Inline
        } else if self.afunc.is_some() {
            Mode::Await
        } else {
            Mode::Pool
        }
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
        name: Option<Bound<'_, PyString>>,
    ) -> PyResult<PyClassInitializer<Self>> {
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
        name: Option<Bound<'_, PyString>>,
    ) -> PyResult<PyClassInitializer<Self>> {
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
    Ok(inspect(py, "isgeneratorfunction", obj)? || inspect(py, "isasyncgenfunction", obj)?)
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
