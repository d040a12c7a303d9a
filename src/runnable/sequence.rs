//! `Sequence`: steps run one after the other, each on the previous one's output (`a | b`).

use std::any::Any;
use std::sync::Arc;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::errors::value_error;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};
use pyo3::{PyTraverseError, PyTypeInfo};

use super::base::{Node, Runnable, Streaming};
use super::{indent_after_first, Args, Step};
use crate::exec::aio::on_pool;
use crate::exec::coro::StepFuture;
use crate::exec::stream::Chunks;
use crate::exec::{Caller, Kind};

pub(crate) struct SequenceNode {
    steps: Vec<Step>,
}

impl SequenceNode {
    /// Coerces and flattens `objs` (nested sequences are spliced in).
    pub(crate) fn new(objs: &[Bound<'_, PyAny>]) -> PyResult<Self> {
        let mut steps = Vec::with_capacity(objs.len());
        for (i, obj) in objs.iter().enumerate() {
            if let Ok(r) = obj.cast::<Runnable>() {
                let node = Runnable::ready(r)?;
                if let Some(seq) = node.as_any().downcast_ref::<SequenceNode>() {
                    if !r.get().overrides() {
                        let py = obj.py();
                        steps.extend(seq.steps.iter().map(|s| s.clone_ref(py)));
                        continue;
                    }
                }
            }
            steps.push(Step::coerce(obj, &format!("Sequence step {i}"))?);
        }
        if steps.len() < 2 {
            return Err(value_error(format!(
                "Sequence must have at least 2 steps, got {}",
                steps.len()
            )));
        }
        Ok(Self { steps })
    }

    /// The steps as Python objects (a fresh list).
    pub(crate) fn step_objects<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.steps.iter().map(|s| s.object(py)))
    }
}

/// Step `i`'s arguments: the call's keyword arguments go to the first step only (as in
/// langchain_core); each is a child of the run tagged `seq:step:<i + 1>`; in a batch, each step
/// is batched too (langchain_core's RunnableSequence.batch).
fn step_args(args: &Args, py: Python<'_>, i: usize) -> PyResult<Args> {
    let mut child = args.child(py, Some(&format!("seq:step:{}", i + 1)))?;
    if i == 0 {
        child.kwargs = args.kwargs.clone();
    }
    child.batched = args.batched;
    Ok(child)
}

impl SequenceNode {
    /// Runs `steps` one after the other from `input`. The first step gets the call's keyword
    /// arguments (as in langchain_core). For an awaiting caller, a run of steps that would each
    /// hop to the pool hops once for all of them.
    fn run_steps(
        self: Arc<Self>,
        range: std::ops::Range<usize>,
        input: Py<PyAny>,
        args: Args,
        mode: Caller,
    ) -> StepFuture {
        Box::pin(async move {
            let mut value = input;
            let mut i = range.start;
            while i < range.end {
                let pooled = mode == Caller::Loop && self.steps[i].kind() == Kind::Blocking;
                let run_end = if pooled {
                    (i..range.end)
                        .find(|&j| self.steps[j].kind() != Kind::Blocking)
                        .unwrap_or(range.end)
                } else {
                    i + 1
                };
                value = if run_end > i + 1 {
                    let steps = Arc::clone(&self).run_steps(
                        i..run_end,
                        value,
                        args.clone(),
                        Caller::Thread,
                    );
                    on_pool(steps).await?
                } else {
                    let step_args = Python::attach(|py| step_args(&args, py, i))?;
                    self.steps[i].run(value, step_args, mode).await?
                };
                i = run_end;
            }
            Ok(value)
        })
    }
}

impl Node for SequenceNode {
    fn kind(&self) -> Kind {
        Kind::of_all(self.steps.iter().map(Step::kind))
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        let n = self.steps.len();
        self.run_steps(0..n, input, args, mode)
    }

    fn streaming(&self) -> Streaming {
        Streaming::Transform
    }

    /// Each step transforms the previous one's output stream (langchain_core's
    /// RunnableSequence): a step that cannot stream sums its input first.
    fn transform(self: Arc<Self>, input: Chunks, args: Args, mode: Caller) -> Chunks {
        let mut chunks = input;
        for (i, step) in self.steps.iter().enumerate() {
            chunks = match Python::attach(|py| step_args(&args, py, i)) {
                Ok(step_args) => step.stream(chunks, step_args, mode),
                Err(err) => return Chunks::failed(err, mode),
            };
        }
        chunks
    }

    fn name(&self, _py: Python<'_>) -> String {
        "RunnableSequence".to_owned()
    }

    /// langchain_core's: one step a line, `| ` before all but the first.
    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let parts = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let repr = s.object(py).bind(py).repr()?.to_string();
                Ok(if i == 0 {
                    repr
                } else {
                    indent_after_first(&repr, 2)
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(parts.join("\n| "))
    }

    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        Sequence::type_object(py)
    }

    /// `first`, `middle` and `last`, langchain_core's fields.
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let n = self.steps.len();
        let fields = PyDict::new(py);
        fields.set_item("first", self.steps[0].object(py))?;
        let middle = self.steps[1..n - 1].iter().map(|s| s.object(py));
        fields.set_item("middle", PyList::new(py, middle)?)?;
        fields.set_item("last", self.steps[n - 1].object(py))?;
        Ok(fields)
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.steps.iter().try_for_each(|s| s.traverse(visit))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Steps run one after the other, each on the previous one's output, like langchain_core's
/// `RunnableSequence`. Usually made with `|`: `Lambda(f) | {"a": g, "b": h} | k`.
#[pyclass(frozen, subclass, extends = Runnable, module = "fastlcel", name = "Sequence")]
pub(crate) struct Sequence;

impl Sequence {
    pub(crate) fn make(
        py: Python<'_>,
        node: SequenceNode,
        name: Option<Bound<'_, PyString>>,
    ) -> PyResult<Py<Runnable>> {
        Runnable::create(py, node, Sequence, name)
    }

    fn node<'a>(slf: &'a Bound<'_, Self>) -> PyResult<&'a SequenceNode> {
        Runnable::node_as(slf.as_super())
    }
}

#[pymethods]
impl Sequence {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(*steps, name=None, first=None, middle=None, last=None)")]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<pyo3::PyClassInitializer<Self>> {
        Ok(Runnable::blank_of(cls, &Self::type_object(cls.py()))?.add_subclass(Sequence))
    }

    /// `Sequence(a, b, c)`, or langchain_core's `first=`, `middle=`, `last=` when no step is
    /// given by position.
    #[pyo3(signature = (*steps, name=None, first=None, middle=None, last=None))]
    fn __init__(
        slf: &Bound<'_, Self>,
        steps: &Bound<'_, PyTuple>,
        name: Option<&Bound<'_, PyAny>>,
        first: Option<&Bound<'_, PyAny>>,
        middle: Option<&Bound<'_, PyAny>>,
        last: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = crate::validate::name(name, "Sequence(name)")?;
        let mut objs: Vec<_> = steps.iter().collect();
        if let (true, Some(first), Some(last)) = (objs.is_empty(), first, last) {
            objs.push(first.clone());
            if let Some(middle) = middle.filter(|m| !m.is_none()) {
                for step in middle.try_iter()? {
                    objs.push(step?);
                }
            }
            objs.push(last.clone());
        }
        Runnable::set_node(slf.as_super(), SequenceNode::new(&objs)?, name)
    }

    /// The steps, flattened, in order.
    #[getter]
    fn steps<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyList>> {
        Self::node(slf)?.step_objects(slf.py())
    }

    #[getter]
    fn first(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Ok(Self::node(slf)?.steps[0].object(slf.py()))
    }

    /// The steps between the first and the last.
    #[getter]
    fn middle<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let steps = &Self::node(slf)?.steps;
        PyList::new(py, steps[1..steps.len() - 1].iter().map(|s| s.object(py)))
    }

    #[getter]
    fn last(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let node = Self::node(slf)?;
        Ok(node.steps[node.steps.len() - 1].object(slf.py()))
    }
}
