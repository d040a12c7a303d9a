//! `Passthrough` (input unchanged), `Assign` (input dict plus computed keys) and `Pick` (some
//! keys of the input dict), like langchain_core's RunnablePassthrough, RunnableAssign and
//! RunnablePick.

use std::any::Any;
use std::sync::Arc;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::errors::{type_error, value_error};
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};
use pyo3::{PyTraverseError, PyTypeInfo};

use super::base::{Node, Runnable, Streaming};
use super::lambda::{is_async_callable, Func};
use super::parallel::{Parallel, ParallelNode};
use super::{addable_dict, describe, Args, Here};
use crate::exec::coro::{py_await, StepFuture};
use crate::exec::stream::{background, tee, Accumulator, Chunks};
use crate::exec::{Caller, Kind};

/// langchain_core's message, kept word for word for drop-in compatibility.
const NOT_A_DICT: &str = "The input to RunnablePassthrough.assign() must be a dict.";

fn expect_dict<'a, 'py>(input: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyDict>> {
    input.cast::<PyDict>().map_err(|_| value_error(NOT_A_DICT))
}

pub(crate) struct PassthroughNode {
    /// Called on the input for its side effects; its result is ignored.
    func: Option<Func>,
    /// Awaited on the input instead, by an awaiting caller.
    afunc: Option<Func>,
    /// The type it declares for its input and output (langchain_core's `input_type`).
    input_type: Option<Py<PyAny>>,
}

impl PassthroughNode {
    /// Calls the function on `value` for its side effects, `mode`'s way: an awaiting caller
    /// awaits the async one if there is one (an async-only passthrough is always run so).
    async fn side_effect(&self, value: &Py<PyAny>, args: &Args, mode: Caller) -> PyResult<()> {
        match (&self.func, &self.afunc) {
            (_, Some(afunc)) if mode == Caller::Loop || self.func.is_none() => {
                let made = Python::attach(|py| {
                    afunc
                        .call(py, value.bind(py), args)
                        .map(|called| called.output.unbind())
                })?;
                py_await(made).await.map(drop)
            }
            (Some(func), _) => Python::attach(|py| func.call(py, value.bind(py), args).map(drop)),
            _ => Ok(()),
        }
    }
}

impl Node for PassthroughNode {
    /// With a function it may block: keep it off the event loop.
    fn kind(&self) -> Kind {
        match (&self.func, &self.afunc) {
            (None, None) => Kind::Inline,
            (Some(_), None) => Kind::Blocking,
            (None, Some(_)) => Kind::LoopOnly,
            (Some(_), Some(_)) => Kind::Async,
        }
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        Box::pin(async move {
            self.side_effect(&input, &args, mode).await?;
            Ok(input)
        })
    }

    fn streaming(&self) -> Streaming {
        Streaming::Transform
    }

    /// The input chunks as they come; then the function, if any, on their sum.
    fn transform(self: Arc<Self>, input: Chunks, args: Args, mode: Caller) -> Chunks {
        let mut input = input;
        let calls = self.func.is_some() || self.afunc.is_some();
        let stream = async_stream::stream! {
            let mut acc = Accumulator::new(false);
            while let Some(chunk) = futures_util::StreamExt::next(&mut input.stream).await {
                match chunk {
                    Ok(chunk) => {
                        let copy = Python::attach(|py| chunk.clone_ref(py));
                        yield Ok(chunk);
                        if calls {
                            if let Err(err) = Python::attach(|py| acc.add(py, copy)) {
                                yield Err(err);
                                return;
                            }
                        }
                    }
                    Err(err) => {
                        yield Err(err);
                        return;
                    }
                }
            }
            let value = match Python::attach(|py| acc.value(py)) {
                Ok(value) => value,
                Err(err) => {
                    yield Err(err);
                    return;
                }
            };
            if let Some(value) = value {
                if let Err(err) = self.side_effect(&value, &args, mode).await {
                    yield Err(err);
                }
            }
        };
        Chunks::made_by(Box::pin(stream), mode)
    }

    fn name(&self, _py: Python<'_>) -> String {
        "RunnablePassthrough".to_owned()
    }

    /// langchain_core's, which shows none of its fields.
    fn repr(&self, _py: Python<'_>) -> PyResult<String> {
        Ok("RunnablePassthrough()".to_owned())
    }

    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        Passthrough::type_object(py)
    }

    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        if let Some(func) = &self.func {
            fields.set_item("func", &func.func)?;
        }
        if let Some(afunc) = &self.afunc {
            fields.set_item("afunc", &afunc.func)?;
        }
        if let Some(t) = &self.input_type {
            fields.set_item("input_type", t)?;
        }
        Ok(fields)
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.func.iter().try_for_each(|f| f.traverse(visit))?;
        self.afunc.iter().try_for_each(|f| f.traverse(visit))?;
        self.input_type.iter().try_for_each(|t| visit.call(t))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Passes its input through unchanged, like langchain_core's `RunnablePassthrough`; with
/// `func`, calls it on the input first (for side effects), `afunc` when awaited.
#[pyclass(frozen, subclass, extends = Runnable, module = "fastlcel", name = "Passthrough")]
pub(crate) struct Passthrough;

#[pymethods]
impl Passthrough {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(func=None, afunc=None, *, input_type=None, name=None)")]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<pyo3::PyClassInitializer<Self>> {
        Ok(Runnable::blank_of(cls, &Self::type_object(cls.py()))?.add_subclass(Passthrough))
    }

    #[pyo3(signature = (func=None, afunc=None, *, input_type=None, name=None))]
    fn __init__(
        slf: &Bound<'_, Self>,
        func: Option<&Bound<'_, PyAny>>,
        afunc: Option<&Bound<'_, PyAny>>,
        input_type: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = crate::validate::name(name, "Passthrough(name)")?;
        let callable = |f: Option<&Bound<'_, PyAny>>, what: &str| -> PyResult<Option<Func>> {
            match f.filter(|f| !f.is_none()) {
                Some(f) if f.is_callable() => Func::new(f).map(Some),
                Some(f) => Err(type_error(format!(
                    "Passthrough {what} must be a callable or None; got {}",
                    describe(f)
                ))),
                None => Ok(None),
            }
        };
        // As langchain_core: an async function given as `func` is the async one.
        let (func, afunc) = match func.filter(|f| !f.is_none()) {
            Some(f) if afunc.is_none_or(|a| a.is_none()) && is_async_callable(f)? => {
                (None, Some(f))
            }
            f => (f, afunc),
        };
        let node = PassthroughNode {
            func: callable(func, "func")?,
            afunc: callable(afunc, "afunc")?,
            input_type: input_type
                .filter(|t| !t.is_none())
                .map(|t| t.clone().unbind()),
        };
        Runnable::set_node(slf.as_super(), node, name)
    }

    /// The function called on the input, if any.
    #[getter]
    fn func(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let node: &PassthroughNode = Runnable::node_as(slf.as_super())?;
        Ok(node.func.as_ref().map(|f| f.func.clone_ref(slf.py())))
    }

    /// The async function awaited on the input, if any.
    #[getter]
    fn afunc(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let node: &PassthroughNode = Runnable::node_as(slf.as_super())?;
        Ok(node.afunc.as_ref().map(|f| f.func.clone_ref(slf.py())))
    }

    /// The type it declares for its input and output, if any.
    #[getter]
    fn input_type(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let node: &PassthroughNode = Runnable::node_as(slf.as_super())?;
        Ok(node.input_type.as_ref().map(|t| t.clone_ref(slf.py())))
    }

    /// `Passthrough.assign(**steps)`: the input dict plus one key per step, each computed from
    /// the input (the steps run as one Parallel).
    #[staticmethod]
    #[pyo3(signature = (**steps))]
    fn assign(py: Python<'_>, steps: Option<&Bound<'_, PyDict>>) -> PyResult<Py<Runnable>> {
        Assign::make(py, steps)
    }
}

pub(crate) struct AssignNode {
    /// A Parallel runnable.
    mapper: Py<Runnable>,
}

impl AssignNode {
    fn mapper(&self) -> &ParallelNode {
        self.mapper
            .get()
            .node()
            .as_any()
            .downcast_ref()
            .expect("an Assign's mapper is a Parallel")
    }
}

impl Node for AssignNode {
    fn kind(&self) -> Kind {
        self.mapper.get().node().kind()
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        Box::pin(async move {
            // The mapper runs in its own run, a child of this one (as in langchain_core).
            let mapper = Here::Node(Arc::clone(self.mapper.get().node()));
            let (mapper_input, mapper_args) = Python::attach(|py| {
                expect_dict(input.bind(py))?;
                let mut child = args.child(py)?;
                child.kwargs = args.kwargs.clone();
                Ok::<_, PyErr>((input.clone_ref(py), child))
            })?;
            let computed = mapper.run(mapper_input, mapper_args, mode).await?;
            Python::attach(|py| {
                let out = expect_dict(input.bind(py))?.copy()?;
                out.update(computed.bind(py).cast::<PyDict>()?.as_mapping())?;
                Ok(out.into_any().unbind())
            })
        })
    }

    fn streaming(&self) -> Streaming {
        Streaming::Transform
    }

    /// The input chunks less the keys the mapper computes, as they come; then the mapper's
    /// chunks (langchain_core's RunnableAssign). The mapper starts at once, on its own copy.
    fn transform(self: Arc<Self>, input: Chunks, args: Args, mode: Caller) -> Chunks {
        let mut copies = tee(input, 2, mode).into_iter();
        let (mut passed, for_mapper) = (
            copies.next().expect("two copies"),
            copies.next().expect("two copies"),
        );
        let mapper = Here::Node(Arc::clone(self.mapper.get().node()));
        let mapper_args = match Python::attach(|py| args.child(py)) {
            Ok(child) => child,
            Err(err) => return Chunks::failed(err, mode),
        };
        let mut mapped = background(mapper.stream(for_mapper, mapper_args, mode), mode);
        let computed: Vec<Py<PyString>> =
            Python::attach(|py| self.mapper().keys.iter().map(|k| k.clone_ref(py)).collect());
        let stream = async_stream::stream! {
            while let Some(chunk) = futures_util::StreamExt::next(&mut passed.stream).await {
                let kept = chunk.and_then(|chunk| {
                    Python::attach(|py| -> PyResult<Option<Py<PyAny>>> {
                        let dict = expect_dict(chunk.bind(py))?;
                        let kept = addable_dict(py)?;
                        for (k, v) in dict.iter() {
                            if !computed.iter().any(|c| c.bind(py).as_any().eq(&k).unwrap_or(false)) {
                                kept.set_item(k, v)?;
                            }
                        }
                        Ok((kept.len()? > 0).then(|| kept.unbind()))
                    })
                });
                match kept {
                    Ok(Some(kept)) => yield Ok(kept),
                    Ok(None) => {}
                    Err(err) => {
                        yield Err(err);
                        return;
                    }
                }
            }
            while let Some(chunk) = futures_util::StreamExt::next(&mut mapped.stream).await {
                yield chunk;
            }
        };
        Chunks::made_by(Box::pin(stream), mode)
    }

    fn name(&self, py: Python<'_>) -> String {
        format!("RunnableAssign<{}>", self.mapper().keys_joined(py))
    }

    fn named_by_class(&self) -> bool {
        false
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "RunnableAssign(mapper={})",
            self.mapper.bind(py).repr()?
        ))
    }

    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        Assign::type_object(py)
    }

    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("mapper", &self.mapper)?;
        Ok(fields)
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.mapper)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The input dict plus computed keys, like langchain_core's `RunnableAssign`. Made by
/// `Passthrough.assign(**steps)` or `runnable.assign(**steps)`.
#[pyclass(frozen, subclass, extends = Runnable, module = "fastlcel", name = "Assign")]
pub(crate) struct Assign;

impl Assign {
    pub(crate) fn make(
        py: Python<'_>,
        steps: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<Runnable>> {
        let steps = match steps {
            Some(s) => s.clone(),
            None => PyDict::new(py),
        };
        let mapper = Parallel::wrap(&steps)?;
        Runnable::create(py, AssignNode { mapper }, Assign, None)
    }
}

#[pymethods]
impl Assign {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(mapper, *, name=None)")]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<pyo3::PyClassInitializer<Self>> {
        Ok(Runnable::blank_of(cls, &Self::type_object(cls.py()))?.add_subclass(Assign))
    }

    #[pyo3(signature = (mapper, *, name=None))]
    fn __init__(
        slf: &Bound<'_, Self>,
        mapper: &Bound<'_, PyAny>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = crate::validate::name(name, "Assign(name)")?;
        let mapper = match mapper.cast::<Parallel>() {
            Ok(p) if !p.as_super().get().overrides() => {
                Runnable::ready(p.as_super())?;
                p.as_super().clone().unbind()
            }
            _ => match mapper.cast::<PyDict>() {
                Ok(d) => Parallel::wrap(d)?,
                Err(_) => {
                    return Err(type_error(format!(
                        "Assign expects a Parallel or a dict of steps; got {}",
                        describe(mapper)
                    )))
                }
            },
        };
        Runnable::set_node(slf.as_super(), AssignNode { mapper }, name)
    }

    /// The Parallel that computes the new keys.
    #[getter]
    fn mapper(slf: &Bound<'_, Self>) -> PyResult<Py<Runnable>> {
        let node: &AssignNode = Runnable::node_as(slf.as_super())?;
        Ok(node.mapper.clone_ref(slf.py()))
    }
}

/// What `Pick` takes: one key (its value), or several (a dict of those present).
enum Keys {
    One(Py<PyString>),
    Many(Vec<Py<PyString>>),
}

pub(crate) struct PickNode {
    keys: Keys,
}

impl PickNode {
    pub(crate) fn new(keys: &Bound<'_, PyAny>) -> PyResult<Self> {
        let bad = || {
            type_error(format!(
                "pick() takes a key (str) or a list of keys; got {}",
                describe(keys)
            ))
        };
        let keys = if let Ok(key) = keys.cast::<PyString>() {
            Keys::One(key.clone().unbind())
        } else {
            let list = keys.try_iter().map_err(|_| bad())?;
            Keys::Many(
                list.map(|k| Ok(k?.cast_into::<PyString>().map_err(|_| bad())?.unbind()))
                    .collect::<PyResult<_>>()?,
            )
        };
        Ok(Self { keys })
    }
}

impl PickNode {
    /// The keys as given: a str, or a list of them.
    fn keys_object(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match &self.keys {
            Keys::One(k) => k.clone_ref(py).into_any(),
            Keys::Many(ks) => PyList::new(py, ks)?.into_any().unbind(),
        })
    }

    fn pick(&self, py: Python<'_>, input: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let dict = expect_dict(input)?;
        match &self.keys {
            Keys::One(key) => Ok(dict.get_item(key)?.map_or_else(|| py.None(), Bound::unbind)),
            Keys::Many(keys) => {
                let picked = addable_dict(py)?;
                for key in keys {
                    if let Some(v) = dict.get_item(key)? {
                        picked.set_item(key, v)?;
                    }
                }
                if picked.len()? == 0 {
                    return Ok(py.None());
                }
                Ok(picked.unbind())
            }
        }
    }
}

impl Node for PickNode {
    fn kind(&self) -> Kind {
        Kind::Inline
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, _args: Args, _mode: Caller) -> StepFuture {
        Box::pin(async move { Python::attach(|py| self.pick(py, input.bind(py))) })
    }

    fn streaming(&self) -> Streaming {
        Streaming::Transform
    }

    /// Each input chunk's keys, as they come (chunks with none of them are skipped).
    fn transform(self: Arc<Self>, input: Chunks, _args: Args, mode: Caller) -> Chunks {
        let mut input = input;
        let stream = async_stream::stream! {
            while let Some(chunk) = futures_util::StreamExt::next(&mut input.stream).await {
                let picked = chunk.and_then(|chunk| Python::attach(|py| self.pick(py, chunk.bind(py))));
                match picked {
                    Ok(picked) if Python::attach(|py| picked.is_none(py)) => {}
                    Ok(picked) => yield Ok(picked),
                    Err(err) => {
                        yield Err(err);
                        return;
                    }
                }
            }
        };
        Chunks::made_by(Box::pin(stream), mode)
    }

    fn name(&self, py: Python<'_>) -> String {
        match &self.keys {
            Keys::One(k) => format!("RunnablePick<{}>", k.bind(py)),
            Keys::Many(ks) => {
                let names: Vec<String> = ks.iter().map(|k| k.bind(py).to_string()).collect();
                format!("RunnablePick<{}>", names.join(","))
            }
        }
    }

    fn named_by_class(&self) -> bool {
        false
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "RunnablePick(keys={})",
            self.keys_object(py)?.bind(py).repr()?
        ))
    }

    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        Pick::type_object(py)
    }

    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("keys", self.keys_object(py)?)?;
        Ok(fields)
    }

    fn traverse(&self, _visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Some keys of the input dict, like langchain_core's `RunnablePick`; made by
/// `runnable.pick(keys)`.
#[pyclass(frozen, subclass, extends = Runnable, module = "fastlcel", name = "Pick")]
pub(crate) struct Pick;

impl Pick {
    pub(crate) fn make(keys: &Bound<'_, PyAny>) -> PyResult<Py<Runnable>> {
        Runnable::create(keys.py(), PickNode::new(keys)?, Pick, None)
    }
}

#[pymethods]
impl Pick {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(keys, *, name=None)")]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<pyo3::PyClassInitializer<Self>> {
        Ok(Runnable::blank_of(cls, &Self::type_object(cls.py()))?.add_subclass(Pick))
    }

    #[pyo3(signature = (keys, *, name=None))]
    fn __init__(
        slf: &Bound<'_, Self>,
        keys: &Bound<'_, PyAny>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = crate::validate::name(name, "Pick(name)")?;
        Runnable::set_node(slf.as_super(), PickNode::new(keys)?, name)
    }

    #[getter]
    fn keys(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let node: &PickNode = Runnable::node_as(slf.as_super())?;
        node.keys_object(slf.py())
    }
}
