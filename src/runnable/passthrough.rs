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

use super::base::{Node, Runnable};
use super::lambda::Func;
use super::parallel::{Parallel, ParallelNode};
use super::{addable_dict, chain_helper, describe};
use crate::config::RunConfig;
use crate::exec::{Awaitable, Mode};

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
    fn invoke(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Py<PyAny>> {
        if let Some(func) = &self.func {
            func.call(py, input, config)?;
        }
        Ok(input.clone().unbind())
    }

    fn mode(&self) -> Mode {
        // With a function it may block: keep it off the event loop.
        if self.func.is_some() {
            Mode::Pool
        } else {
            Mode::Inline
        }
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
    fn invoke(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Py<PyAny>> {
        let dict = expect_dict(input)?;
        let computed = self.mapper().invoke(py, input, config)?;
        let out = dict.copy()?;
        out.update(computed.bind(py).cast::<PyDict>()?.as_mapping())?;
        Ok(out.into_any().unbind())
    }

    fn mode(&self) -> Mode {
        self.mapper().mode()
    }

    fn awaitable<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Awaitable<'py>> {
        let mapper = self.mapper.bind(py);
        let coro = chain_helper(py, "assign")?.call1((mapper, input, config.to_dict(py)?))?;
        Ok(Awaitable::Other(coro))
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

impl Node for PickNode {
    fn invoke(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        _config: &Arc<RunConfig>,
    ) -> PyResult<Py<PyAny>> {
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

    fn mode(&self) -> Mode {
        Mode::Inline
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
