//! `Parallel`: several steps on one input at once, merged into a dict.

use std::any::Any;
use std::sync::Arc;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::errors::{type_error, value_error};
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use pyo3::{PyTraverseError, PyTypeInfo};

use super::base::{Node, Runnable, Streaming};
use super::{addable_dict, describe, indent_after_first, map_key, Args, Calls, Step};
use crate::exec::coro::StepFuture;
use crate::exec::progress;
use crate::exec::stream::{merge, tee, Chunks};
use crate::exec::{fan_out, Caller, Collect, FanOpts, Kind};

/// What a failing step does to the Parallel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnError {
    /// The first failure fails the call (langchain_core's behaviour).
    Raise,
    /// Every step runs; a failed step's slot holds its exception object.
    Collect,
}

/// How the results are merged into the value.
enum Merge {
    /// `{key: result}` in declared order.
    Dict,
    /// `[result, ...]` in declared order.
    List,
    /// `merge({key: result})`.
    Call(Py<PyAny>),
}

pub(crate) struct ParallelNode {
    pub(crate) keys: Arc<[Py<PyString>]>,
    steps: Arc<[Step]>,
    on_error: OnError,
    merge: Merge,
}

impl ParallelNode {
    /// From a mapping of key to step, with the default options.
    fn from_mapping(mapping: &Bound<'_, PyDict>) -> PyResult<Self> {
        let mut keys = Vec::with_capacity(mapping.len());
        let mut steps = Vec::with_capacity(mapping.len());
        for (key, value) in mapping.iter() {
            let key = key.cast_into::<PyString>().map_err(|e| {
                type_error(format!(
                    "Parallel step keys must be str; got {} (use string keys, e.g. \
                     Parallel(summary=...))",
                    describe(e.into_inner().as_any()),
                ))
            })?;
            let step = Step::coerce(&value, &format!("Parallel step {}", key.repr()?))?;
            keys.push(key.unbind());
            steps.push(step);
        }
        Ok(Self {
            keys: keys.into(),
            steps: steps.into(),
            on_error: OnError::Raise,
            merge: Merge::Dict,
        })
    }

    /// The steps after coercion, by key, in declared order.
    fn step_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (k, s) in self.keys.iter().zip(self.steps.iter()) {
            dict.set_item(k, s.object(py))?;
        }
        Ok(dict)
    }

    pub(crate) fn keys_joined(&self, py: Python<'_>) -> String {
        let keys: Vec<String> = self.keys.iter().map(|k| k.bind(py).to_string()).collect();
        keys.join(",")
    }

    fn collect(&self, py: Python<'_>) -> Collect {
        match &self.merge {
            Merge::Dict => Collect::Dict(Arc::clone(&self.keys)),
            Merge::List => Collect::List,
            Merge::Call(func) => Collect::DictInto(Arc::clone(&self.keys), func.clone_ref(py)),
        }
    }
}

impl Node for ParallelNode {
    /// Always awaited on the loop: its steps run there as tasks, or on the pool.
    fn kind(&self) -> Kind {
        Kind::awaited_around(self.steps.iter().map(Step::kind))
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        Box::pin(async move {
            let opts = FanOpts {
                max_concurrency: args.config.max_concurrency,
                return_exceptions: self.on_error == OnError::Collect,
            };
            let claim = args.config.claim_progress();
            let calls = Calls::Fan {
                steps: Arc::clone(&self.steps),
                keys: Arc::clone(&self.keys),
                input,
                args,
            };
            let (work, _bar) = progress::shown(Arc::new(calls), claim, |py| self.name(py))?;
            let values = fan_out(work, opts, mode).await?;
            Python::attach(|py| self.collect(py).build(py, values))
        })
    }

    fn streaming(&self) -> Streaming {
        Streaming::Transform
    }

    /// One-key dicts, in the order the steps produce chunks; each step transforms its own copy
    /// of the input stream (langchain_core's RunnableParallel).
    fn transform(self: Arc<Self>, input: Chunks, args: Args, mode: Caller) -> Chunks {
        let copies = tee(input, self.steps.len(), mode);
        let streams = Python::attach(|py| {
            self.steps
                .iter()
                .zip(self.keys.iter())
                .zip(copies)
                .map(|((step, key), copy)| {
                    let child = args.child_tagged(py, || map_key(py, key))?;
                    Ok(step.stream(copy, child, mode))
                })
                .collect::<PyResult<Vec<_>>>()
        });
        let streams = match streams {
            Ok(streams) => streams,
            Err(err) => return Chunks::failed(err, mode),
        };
        let mut merged = merge(streams, mode);
        let keys = Arc::clone(&self.keys);
        let stream = async_stream::stream! {
            while let Some(item) = futures_util::StreamExt::next(&mut merged).await {
                yield item.and_then(|(i, chunk)| {
                    Python::attach(|py| {
                        let dict = addable_dict(py)?;
                        dict.set_item(&keys[i], chunk)?;
                        Ok(dict.unbind())
                    })
                });
            }
        };
        Chunks::made_by(Box::pin(stream), mode)
    }

    fn name(&self, py: Python<'_>) -> String {
        format!("RunnableParallel<{}>", self.keys_joined(py))
    }

    fn named_by_class(&self) -> bool {
        false
    }

    /// langchain_core's: `{\n  key: step,\n  ...\n}`; with fastlcel's options,
    /// `RunnableParallel({...}, on_error=..., merge=...)`.
    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let parts = self
            .keys
            .iter()
            .zip(self.steps.iter())
            .map(|(k, s)| {
                let key = k.bind(py).to_string();
                let step = s.object(py).bind(py).repr()?.to_string();
                let step = indent_after_first(&step, 2 + key.len() + 2);
                Ok(format!("{key}: {step}"))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let map = format!("{{\n  {}\n}}", parts.join(",\n  "));
        let mut options = String::new();
        if self.on_error == OnError::Collect {
            options.push_str(", on_error='collect'");
        }
        match &self.merge {
            Merge::Dict => {}
            Merge::List => options.push_str(", merge='list'"),
            Merge::Call(func) => options.push_str(&format!(", merge={}", func.bind(py).repr()?)),
        }
        if options.is_empty() {
            Ok(map)
        } else {
            Ok(format!("RunnableParallel({map}{options})"))
        }
    }

    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        Parallel::type_object(py)
    }

    /// `steps__`, then `on_error` and `merge` where not the defaults.
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("steps__", self.step_dict(py)?)?;
        if self.on_error == OnError::Collect {
            fields.set_item("on_error", "collect")?;
        }
        match &self.merge {
            Merge::Dict => {}
            Merge::List => fields.set_item("merge", "list")?,
            Merge::Call(func) => fields.set_item("merge", func)?,
        }
        Ok(fields)
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        for step in self.steps.iter() {
            step.traverse(visit)?;
        }
        if let Merge::Call(func) = &self.merge {
            visit.call(func)?;
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Several steps on one input at once, merged into a dict, like langchain_core's
/// `RunnableParallel`.
#[pyclass(frozen, subclass, extends = Runnable, module = "fastlcel", name = "Parallel")]
pub(crate) struct Parallel;

impl Parallel {
    /// A dict met where a runnable was expected.
    pub(crate) fn wrap(mapping: &Bound<'_, PyDict>) -> PyResult<Py<Runnable>> {
        let node = ParallelNode::from_mapping(mapping)?;
        Runnable::create(mapping.py(), node, Parallel, None)
    }
}

#[pymethods]
impl Parallel {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(steps__=None, /, *, on_error='raise', merge='dict', **steps)")]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<pyo3::PyClassInitializer<Self>> {
        Ok(Runnable::blank_of(cls, &Self::type_object(cls.py()))?.add_subclass(Parallel))
    }

    /// `steps__` (langchain_core's name) may also come as a keyword, when it is a mapping.
    #[pyo3(signature = (steps__=None, /, *, on_error=None, merge=None, **steps))]
    fn __init__(
        slf: &Bound<'_, Self>,
        steps__: Option<&Bound<'_, PyAny>>,
        on_error: Option<&Bound<'_, PyAny>>,
        merge: Option<&Bound<'_, PyAny>>,
        steps: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let mut mapping = steps__.filter(|m| !m.is_none()).cloned();
        let steps = steps.map(|s| s.copy()).transpose()?;
        if let (None, Some(steps)) = (&mapping, &steps) {
            if let Some(given) = steps.get_item("steps__")? {
                if given.hasattr("items")? {
                    steps.del_item("steps__")?;
                    mapping = Some(given);
                }
            }
        }
        // Keyword steps win, in the mapping's position (dict-merge semantics).
        let merged = PyDict::new(py);
        if let Some(mapping) = mapping {
            let items = mapping.call_method0("items").map_err(|_| {
                type_error(format!(
                    "Parallel() takes a dict of steps; got {}",
                    describe(&mapping)
                ))
            })?;
            for item in items.try_iter()? {
                let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
                merged.set_item(k, v)?;
            }
        }
        if let Some(steps) = steps {
            merged.update(steps.as_mapping())?;
        }
        let mut node = ParallelNode::from_mapping(&merged)?;
        node.on_error = parse_on_error(on_error)?;
        node.merge = parse_merge(merge)?;
        Runnable::set_node(slf.as_super(), node, None)
    }

    /// The steps after coercion, in declared order.
    #[getter]
    fn steps<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let node: &ParallelNode = Runnable::node_as(slf.as_super())?;
        node.step_dict(slf.py())
    }

    /// langchain_core's name for :attr:`steps`.
    #[getter]
    fn steps__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        Self::steps(slf)
    }
}

/// Appended to option errors: a step named `on_error` or `merge` must come in the mapping.
const RESERVED_HINT: &str = "(`on_error` and `merge` are options of Parallel, not steps; to \
                             name a step so, pass it in the mapping: Parallel({'merge': step}))";

fn parse_on_error(on_error: Option<&Bound<'_, PyAny>>) -> PyResult<OnError> {
    let Some(on_error) = on_error.filter(|o| !o.is_none()) else {
        return Ok(OnError::Raise);
    };
    match on_error.extract::<&str>() {
        Ok("raise") => Ok(OnError::Raise),
        Ok("collect") => Ok(OnError::Collect),
        _ => Err(value_error(format!(
            "Parallel on_error must be 'raise' or 'collect'; got {} {RESERVED_HINT}",
            on_error.repr()?
        ))),
    }
}

fn parse_merge(merge: Option<&Bound<'_, PyAny>>) -> PyResult<Merge> {
    let Some(merge) = merge.filter(|m| !m.is_none()) else {
        return Ok(Merge::Dict);
    };
    match merge.extract::<&str>() {
        Ok("dict") => Ok(Merge::Dict),
        Ok("list") => Ok(Merge::List),
        Err(_) if merge.is_callable() => Ok(Merge::Call(merge.clone().unbind())),
        _ => Err(value_error(format!(
            "Parallel merge must be 'dict', 'list' or a function of the result dict; got {} \
             {RESERVED_HINT}",
            merge.repr()?
        ))),
    }
}
