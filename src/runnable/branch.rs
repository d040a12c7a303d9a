//! `Branch`: the first runnable whose condition holds, like langchain_core's `RunnableBranch`.

use std::any::Any;
use std::sync::Arc;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::errors::{type_error, value_error};
use pyo3::types::{PyDict, PyList, PyTuple, PyType};
use pyo3::{PyTraverseError, PyTypeInfo};

use super::base::{Node, Runnable};
use super::{describe, Args, Step};
use crate::exec::coro::StepFuture;
use crate::exec::stream::Chunks;
use crate::exec::{Caller, Kind};

pub(crate) struct BranchNode {
    branches: Vec<(Step, Step)>,
    default: Step,
}

impl BranchNode {
    fn parts(&self) -> impl Iterator<Item = &Step> {
        self.branches
            .iter()
            .flat_map(|(c, r)| [c, r])
            .chain([&self.default])
    }
}

impl BranchNode {
    /// The runnable to run on `input` and its arguments: the first whose condition holds (runs
    /// tagged `condition:<n>` and `branch:<n>`), else the default (`branch:default`).
    async fn choose(
        &self,
        input: &Py<PyAny>,
        args: &Args,
        mode: Caller,
    ) -> PyResult<(&Step, Args)> {
        for (i, (condition, runnable)) in self.branches.iter().enumerate() {
            let (input, condition_args) = Python::attach(|py| {
                args.child_tagged(py, || format!("condition:{}", i + 1))
                    .map(|a| (input.clone_ref(py), a))
            })?;
            let holds = condition.run(input, condition_args, mode).await?;
            if Python::attach(|py| holds.bind(py).is_truthy())? {
                return Ok((runnable, branch_args(args, || format!("branch:{}", i + 1))?));
            }
        }
        Ok((
            &self.default,
            branch_args(args, || "branch:default".to_owned())?,
        ))
    }
}

/// The chosen runnable's arguments: a child of the run tagged `tag`, with the call's keyword
/// arguments.
fn branch_args(args: &Args, tag: impl FnOnce() -> String) -> PyResult<Args> {
    let mut child = Python::attach(|py| args.child_tagged(py, tag))?;
    child.kwargs = args.kwargs.clone();
    Ok(child)
}

impl Node for BranchNode {
    fn kind(&self) -> Kind {
        Kind::of_all(self.parts().map(Step::kind))
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        Box::pin(async move {
            let (chosen, chosen_args) = self.choose(&input, &args, mode).await?;
            chosen.run(input, chosen_args, mode).await
        })
    }

    /// The chosen runnable's chunks (langchain_core's RunnableBranch.stream).
    fn stream_value(self: Arc<Self>, value: Py<PyAny>, args: Args, mode: Caller) -> Chunks {
        let stream = async_stream::stream! {
            let (chosen, chosen_args) = match self.choose(&value, &args, mode).await {
                Ok(chosen) => chosen,
                Err(err) => {
                    yield Err(err);
                    return;
                }
            };
            let mut chunks = chosen.stream(Chunks::once(value), chosen_args, mode);
            while let Some(chunk) = futures_util::StreamExt::next(&mut chunks.stream).await {
                yield chunk;
            }
        };
        Chunks::made_by(Box::pin(stream), mode)
    }

    fn name(&self, _py: Python<'_>) -> String {
        "RunnableBranch".to_owned()
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "RunnableBranch(branches={}, default={})",
            branch_list(py, self)?.repr()?,
            self.default.object(py).bind(py).repr()?
        ))
    }

    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        Branch::type_object(py)
    }

    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("branches", branch_list(py, self)?)?;
        fields.set_item("default", self.default.object(py))?;
        Ok(fields)
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.parts().try_for_each(|s| s.traverse(visit))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn branch_list<'py>(py: Python<'py>, node: &BranchNode) -> PyResult<Bound<'py, PyList>> {
    let pairs = node
        .branches
        .iter()
        .map(|(c, r)| PyTuple::new(py, [c.object(py), r.object(py)]))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, pairs)
}

/// Runs the first runnable whose condition is true on the input, else the default, like
/// langchain_core's `RunnableBranch`: `Branch((cond, runnable), ..., default)`.
#[pyclass(frozen, subclass, extends = Runnable, module = "fastlcel", name = "Branch")]
pub(crate) struct Branch;

#[pymethods]
impl Branch {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(*branches, name=None)")]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<pyo3::PyClassInitializer<Self>> {
        Ok(Runnable::blank_of(cls, &Self::type_object(cls.py()))?.add_subclass(Branch))
    }

    /// `Branch((condition, runnable), ..., default)`; or langchain_core's fields, `branches=`
    /// and `default=`, when none is given by position.
    #[pyo3(signature = (*branches, name=None, **fields))]
    fn __init__(
        slf: &Bound<'_, Self>,
        branches: &Bound<'_, PyTuple>,
        name: Option<&Bound<'_, PyAny>>,
        fields: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let name = crate::validate::name(name, "Branch(name)")?;
        let mut items: Vec<Bound<'_, PyAny>> = branches.iter().collect();
        if let Some(fields) = fields {
            if !items.is_empty() {
                return Err(type_error(
                    "Branch takes (condition, runnable) pairs and a default by position, or \
                     branches= and default=, not both",
                ));
            }
            for (key, value) in fields.iter() {
                match key.extract::<&str>()? {
                    "branches" => items.extend(value.try_iter()?.collect::<PyResult<Vec<_>>>()?),
                    "default" => {}
                    other => {
                        return Err(type_error(format!(
                            "Branch got an unexpected keyword argument '{other}'"
                        )))
                    }
                }
            }
            if let Some(default) = fields.get_item("default")? {
                items.push(default);
            }
        }
        let n = items.len();
        if n < 2 {
            return Err(value_error(
                "RunnableBranch requires at least two branches: (condition, runnable) pairs \
                 and a default",
            ));
        }
        let default = Step::coerce(&items[n - 1], "Branch default")?;
        let mut pairs = Vec::with_capacity(n - 1);
        for (i, branch) in items.iter().take(n - 1).enumerate() {
            if !(branch.is_instance_of::<PyTuple>() || branch.is_instance_of::<PyList>()) {
                return Err(type_error(format!(
                    "Branch branch {i} is {}; expected a (condition, runnable) tuple",
                    describe(branch)
                )));
            }
            if branch.len()? != 2 {
                return Err(value_error(format!(
                    "Branch branch {i} has {} items; expected a (condition, runnable) pair",
                    branch.len()?
                )));
            }
            let condition = Step::coerce(&branch.get_item(0)?, &format!("Branch condition {i}"))?;
            let runnable = Step::coerce(&branch.get_item(1)?, &format!("Branch runnable {i}"))?;
            pairs.push((condition, runnable));
        }
        let node = BranchNode {
            branches: pairs,
            default,
        };
        Runnable::set_node(slf.as_super(), node, name)
    }

    /// The `(condition, runnable)` pairs, in order.
    #[getter]
    fn branches<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyList>> {
        branch_list(slf.py(), Runnable::node_as(slf.as_super())?)
    }

    #[getter]
    fn default(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let node: &BranchNode = Runnable::node_as(slf.as_super())?;
        Ok(node.default.object(slf.py()))
    }
}
