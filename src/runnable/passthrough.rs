//! `Passthrough` (input unchanged), `Assign` (input dict plus computed keys) and `Pick` (some
//! keys of the input dict), like langchain_core's RunnablePassthrough, RunnableAssign and
//! RunnablePick.

use std::any::Any;
use std::sync::Arc;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::errors::{type_error, value_error};
use pyo3::types::{PyDict, PyList, PyString};
use pyo3::{PyClassInitializer, PyTraverseError};

use super::base::{Node, Runnable, Streaming};
use super::lambda::Func;
use super::parallel::{Parallel, ParallelNode};
use super::{addable_dict, describe, Args, Here};
use crate::exec::coro::StepFuture;
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
}

impl Node for PassthroughNode {
    /// With a function it may block: keep it off the event loop.
    fn kind(&self) -> Kind {
        if self.func.is_some() {
            Kind::Blocking
        } else {
            Kind::Inline
        }
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, _mode: Caller) -> StepFuture {
        Box::pin(async move {
            if let Some(func) = &self.func {
                Python::attach(|py| func.call(py, input.bind(py), &args).map(drop))?;
            }
            Ok(input)
        })
    }

    fn streaming(&self) -> Streaming {
        Streaming::Transform
    }

    /// The input chunks as they come; then the function, if any, on their sum.
    fn transform(self: Arc<Self>, input: Chunks, args: Args, mode: Caller) -> Chunks {
        let mut input = input;
        let stream = async_stream::stream! {
            let mut acc = Accumulator::new(false);
            while let Some(chunk) = futures_util::StreamExt::next(&mut input.stream).await {
                match chunk {
                    Ok(chunk) => {
                        let copy = Python::attach(|py| chunk.clone_ref(py));
                        yield Ok(chunk);
                        if self.func.is_some() {
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
            if let (Some(func), Some(value)) = (&self.func, value) {
                if let Err(err) = Python::attach(|py| func.call(py, value.bind(py), &args).map(drop)) {
                    yield Err(err);
                }
            }
        };
        Chunks::made_by(Box::pin(stream), mode)
    }

    fn name(&self, _py: Python<'_>) -> String {
        "Passthrough".to_owned()
    }

    fn repr(&self, _py: Python<'_>) -> PyResult<String> {
        Ok("Passthrough()".to_owned())
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.func.iter().try_for_each(|f| f.traverse(visit))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Passes its input through unchanged, like langchain_core's `RunnablePassthrough`; with
/// `func`, calls it on the input first (for side effects).
#[pyclass(frozen, extends = Runnable, module = "fastlcel", name = "Passthrough")]
pub(crate) struct Passthrough;

#[pymethods]
impl Passthrough {
    #[new]
    #[pyo3(signature = (func=None))]
    fn py_new(func: Option<&Bound<'_, PyAny>>) -> PyResult<PyClassInitializer<Self>> {
        let func = match func.filter(|f| !f.is_none()) {
            Some(f) if f.is_callable() => Some(Func::new(f)?),
            Some(f) => {
                return Err(type_error(format!(
                    "Passthrough expects a callable or None; got {}",
                    describe(f)
                )))
            }
            None => None,
        };
        Ok(Runnable::init(PassthroughNode { func }).add_subclass(Passthrough))
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
        self.mapper.get().node_as()
    }
}

impl Node for AssignNode {
    fn kind(&self) -> Kind {
        self.mapper.get().node.kind()
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        Box::pin(async move {
            // The mapper runs in its own run, a child of this one (as in langchain_core).
            let mapper = Here::Node(Arc::clone(&self.mapper.get().node));
            let (mapper_input, mapper_args) = Python::attach(|py| {
                expect_dict(input.bind(py))?;
                let mut child = args.child(py, None)?;
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
        let mapper = Here::Node(Arc::clone(&self.mapper.get().node));
        let mapper_args = match Python::attach(|py| args.child(py, None)) {
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
        format!("Assign<{}>", self.mapper().keys_joined(py))
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("Assign(mapper={})", self.mapper.bind(py).repr()?))
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
#[pyclass(frozen, extends = Runnable, module = "fastlcel", name = "Assign")]
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
        Runnable::create(py, AssignNode { mapper }, Assign)
    }
}

#[pymethods]
impl Assign {
    #[new]
    fn py_new(mapper: &Bound<'_, PyAny>) -> PyResult<PyClassInitializer<Self>> {
        let mapper = match mapper.cast::<Parallel>() {
            Ok(p) => p.as_super().clone().unbind(),
            Err(_) => match mapper.cast::<PyDict>() {
                Ok(d) => Parallel::wrap(d)?,
                Err(_) => {
                    return Err(type_error(format!(
                        "Assign expects a Parallel or a dict of steps; got {}",
                        describe(mapper)
                    )))
                }
            },
        };
        Ok(Runnable::init(AssignNode { mapper }).add_subclass(Assign))
    }

    /// The Parallel that computes the new keys.
    #[getter]
    fn mapper(slf: &Bound<'_, Self>) -> Py<Runnable> {
        let node: &AssignNode = slf.as_super().get().node_as();
        node.mapper.clone_ref(slf.py())
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
            Keys::One(k) => format!("Pick<{}>", k.bind(py)),
            Keys::Many(ks) => {
                let names: Vec<String> = ks.iter().map(|k| k.bind(py).to_string()).collect();
                format!("Pick<{}>", names.join(","))
            }
        }
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let keys = match &self.keys {
            Keys::One(k) => k.bind(py).repr()?.to_string(),
            Keys::Many(ks) => PyList::new(py, ks)?.repr()?.to_string(),
        };
        Ok(format!("Pick(keys={keys})"))
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
#[pyclass(frozen, extends = Runnable, module = "fastlcel", name = "Pick")]
pub(crate) struct Pick;

impl Pick {
    pub(crate) fn make(keys: &Bound<'_, PyAny>) -> PyResult<Py<Runnable>> {
        Runnable::create(keys.py(), PickNode::new(keys)?, Pick)
    }
}

#[pymethods]
impl Pick {
    #[new]
    fn py_new(keys: &Bound<'_, PyAny>) -> PyResult<PyClassInitializer<Self>> {
        Ok(Runnable::init(PickNode::new(keys)?).add_subclass(Pick))
    }

    #[getter]
    fn keys(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let node: &PickNode = slf.as_super().get().node_as();
        Ok(match &node.keys {
            Keys::One(k) => k.clone_ref(py).into_any(),
            Keys::Many(ks) => PyList::new(py, ks)?.into_any().unbind(),
        })
    }
}
