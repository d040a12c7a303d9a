//! `Sequence`: steps run one after the other, each on the previous one's output (`a | b`).

use std::any::Any;
use std::sync::Arc;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::errors::value_error;
use pyo3::types::{PyList, PyTuple};
use pyo3::{PyClassInitializer, PyTraverseError};

use super::base::{Node, Runnable};
use super::{Args, Step};
use crate::exec::aio::on_pool;
use crate::exec::coro::StepFuture;
use crate::exec::stream::Chunks;
use crate::exec::{Caller, Kind};

pub(crate) struct SequenceNode {
    steps: Vec<Step>,
    name: Option<String>,
}

impl SequenceNode {
    /// Coerces and flattens `objs` (nested sequences are spliced in).
    pub(crate) fn new(objs: &[Bound<'_, PyAny>], name: Option<String>) -> PyResult<Self> {
        let mut steps = Vec::with_capacity(objs.len());
        for (i, obj) in objs.iter().enumerate() {
            if let Ok(r) = obj.cast::<Runnable>() {
                if let Some(seq) = r.get().node.as_any().downcast_ref::<SequenceNode>() {
                    let py = obj.py();
                    steps.extend(seq.steps.iter().map(|s| s.clone_ref(py)));
                    continue;
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
        Ok(Self { steps, name })
    }

    /// The steps as Python objects (a fresh list).
    pub(crate) fn step_objects<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.steps.iter().map(|s| s.object(py)))
    }
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
                let step_args = if i == 0 {
                    args.clone()
                } else {
                    args.config_only()
                };
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

    /// Each step transforms the previous one's output stream (langchain_core's
    /// RunnableSequence): a step that cannot stream sums its input first.
    fn stream(self: Arc<Self>, input: Chunks, args: Args, mode: Caller) -> Chunks {
        let mut chunks = input;
        for (i, step) in self.steps.iter().enumerate() {
            let step_args = if i == 0 {
                args.clone()
            } else {
                args.config_only()
            };
            chunks = step.stream(chunks, step_args, mode);
        }
        chunks
    }

    fn name(&self, py: Python<'_>) -> String {
        self.name.clone().unwrap_or_else(|| {
            let names: Vec<String> = self.steps.iter().map(|s| s.name(py)).collect();
            names.join(" | ")
        })
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let parts = self
            .steps
            .iter()
            .map(|s| Ok(s.object(py).bind(py).repr()?.to_string()))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(parts.join(" | "))
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
#[pyclass(frozen, extends = Runnable, module = "fastlcel", name = "Sequence")]
pub(crate) struct Sequence;

impl Sequence {
    pub(crate) fn make(py: Python<'_>, node: SequenceNode) -> PyResult<Py<Runnable>> {
        Runnable::create(py, node, Sequence)
    }
}

#[pymethods]
impl Sequence {
    #[new]
    #[pyo3(signature = (*steps, name=None))]
    fn py_new(
        steps: &Bound<'_, PyTuple>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let name = crate::validate::name(name, "Sequence(name)")?.map(|n| n.to_string());
        let objs: Vec<_> = steps.iter().collect();
        Ok(Runnable::init(SequenceNode::new(&objs, name)?).add_subclass(Sequence))
    }

    /// The steps, flattened, in order.
    #[getter]
    fn steps<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyList>> {
        let node: &SequenceNode = slf.as_super().get().node_as();
        node.step_objects(slf.py())
    }

    #[getter]
    fn first(slf: &Bound<'_, Self>) -> Py<PyAny> {
        let node: &SequenceNode = slf.as_super().get().node_as();
        node.steps[0].object(slf.py())
    }

    #[getter]
    fn last(slf: &Bound<'_, Self>) -> Py<PyAny> {
        let node: &SequenceNode = slf.as_super().get().node_as();
        node.steps[node.steps.len() - 1].object(slf.py())
    }
}
