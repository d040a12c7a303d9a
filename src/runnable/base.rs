//! `Runnable`: the base class of every fastlcel runnable. What one runs is its [`Node`]; the
//! Python-facing classes (`Lambda`, `Parallel`, ...) are subclasses that only construct nodes.

use std::any::Any;
use std::sync::Arc;

use pyo3::exceptions::PyRuntimeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{PyClassInitializer, PyTraverseError};

use super::binding::{Binding, BindingNode};
use super::cache::{self, Cached};
use super::limited::{self, LimitedNode};
use super::passthrough::{Assign, Pick};
use super::sequence::{Sequence, SequenceNode};
use super::timeout::{self, TimeoutNode};
use super::{chain_helper, collect_inputs, fallbacks, retry, Calls, Step};
use crate::config::{BatchConfig, Policy, RunConfig};
use crate::exec::aio::{GatherSpec, LazyCoroutine};
use crate::exec::context::Context;
use crate::exec::fanout::FanOut;
use crate::exec::{Awaitable, Collect, Cost, Mode};

/// What a runnable runs. Each kind of runnable is one implementation, in a file of its own.
pub(crate) trait Node: Send + Sync + 'static {
    /// Runs on the current thread, in the current context.
    fn invoke(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Py<PyAny>>;
    /// How it runs when awaited.
    fn mode(&self) -> Mode;
    /// Its awaitable, for `Mode::Await` (nodes that are never awaited keep the default).
    fn awaitable<'py>(
        &self,
        _py: Python<'py>,
        _input: &Bound<'py, PyAny>,
        _config: &Arc<RunConfig>,
    ) -> PyResult<Awaitable<'py>> {
        Err(PyRuntimeError::new_err(format!(
            "fastlcel: a {} is never awaited (its mode is {:?})",
            std::any::type_name_of_val(self),
            self.mode()
        )))
    }
    /// [`Self::awaitable`] whose result may still need [`Self::followup`]: what a gather
    /// awaits, finishing the result in its done callback instead of a wrapper per call.
    fn awaitable_unfinished<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        config: &Arc<RunConfig>,
    ) -> PyResult<Awaitable<'py>> {
        self.awaitable(py, input, config)
    }
    /// What remains to await when `awaitable_unfinished` produced `output`, if anything.
    fn followup<'py>(
        &self,
        _py: Python<'py>,
        _input: &Bound<'py, PyAny>,
        _config: &Arc<RunConfig>,
        _output: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(None)
    }
    /// A gather of its own to await directly in `ainvoke`, where it has one (Parallel).
    fn gather_spec(
        &self,
        _input: &Bound<'_, PyAny>,
        _config: &Arc<RunConfig>,
    ) -> Option<GatherSpec> {
        None
    }
    fn name(&self, py: Python<'_>) -> String;
    fn repr(&self, py: Python<'_>) -> PyResult<String>;
    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError>;
    fn as_any(&self) -> &dyn Any;
}

#[pyclass(frozen, subclass, module = "fastlcel", name = "Runnable")]
pub(crate) struct Runnable {
    pub(crate) node: Box<dyn Node>,
    /// Its cost as a step of an enclosing fan-out.
    cost: Cost,
}

impl Runnable {
    pub(crate) fn init(node: impl Node) -> PyClassInitializer<Self> {
        PyClassInitializer::from(Self {
            node: Box::new(node),
            cost: Cost::new(),
        })
    }

    /// A new object of the subclass `subclass` around `node`, as a runnable.
    pub(crate) fn create<S>(py: Python<'_>, node: impl Node, subclass: S) -> PyResult<Py<Runnable>>
    where
        S: pyo3::PyClass<BaseType = Runnable>,
    {
        let init = Self::init(node).add_subclass(subclass);
        Ok(Bound::new(py, init)?.into_super().unbind())
    }

    /// The node of a runnable known to be of kind `N` (the subclasses' getters).
    pub(crate) fn node_as<N: Node>(&self) -> &N {
        self.node
            .as_any()
            .downcast_ref()
            .expect("a runnable subclass holds its own kind of node")
    }

    pub(crate) fn cost(&self) -> &Cost {
        &self.cost
    }
}

#[pymethods]
impl Runnable {
    /// The runnable's name: a Lambda's function name, `Parallel<a,b>` for a Parallel.
    #[getter(name)]
    fn name_getter(&self, py: Python<'_>) -> String {
        self.node.name(py)
    }

    /// langchain_core's `get_name`: `name` (default: this runnable's) with `suffix` appended,
    /// as `NameSuffix` after a capital, else `name_suffix`.
    #[pyo3(name = "get_name", signature = (suffix=None, *, name=None))]
    fn py_get_name(&self, py: Python<'_>, suffix: Option<&str>, name: Option<String>) -> String {
        let name = name.unwrap_or_else(|| self.node.name(py));
        match suffix {
            None => name,
            Some(suffix) if name.starts_with(char::is_uppercase) => {
                let mut chars = suffix.chars();
                let title: String = chars
                    .next()
                    .map(|c| {
                        c.to_uppercase()
                            .chain(chars.flat_map(char::to_lowercase))
                            .collect()
                    })
                    .unwrap_or_default();
                format!("{name}{title}")
            }
            Some(suffix) => format!("{name}_{}", suffix.to_lowercase()),
        }
    }

    #[pyo3(signature = (input, config=None))]
    fn invoke(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let config = Arc::new(RunConfig::parse(config)?);
        let target = with_config_policy(slf, [&config.policy])?;
        Context::run_isolated(py, || target.get().node.invoke(py, input, &config))
    }

    #[pyo3(signature = (input, config=None))]
    fn ainvoke(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<LazyCoroutine> {
        let config = Arc::new(RunConfig::parse(config)?);
        let target = with_config_policy(slf, [&config.policy])?;
        let spec = match target.get().node.gather_spec(input, &config) {
            Some(spec) => spec,
            None => GatherSpec {
                work: Arc::new(Calls::one(
                    &Arc::new(Step::Native(target.unbind())),
                    input,
                    &config,
                )),
                collect: Collect::Single,
                max_concurrency: None,
                return_exceptions: false,
            },
        };
        Ok(LazyCoroutine::new(spec))
    }

    #[pyo3(signature = (inputs, config=None, *, return_exceptions=false))]
    fn batch(
        slf: &Bound<'_, Self>,
        inputs: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        return_exceptions: bool,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let (calls, max_concurrency) = batch_calls(slf, inputs, config)?;
        let values = FanOut::run_blocking(py, Arc::new(calls), max_concurrency, return_exceptions)?;
        Collect::List.build(py, values)
    }

    #[pyo3(signature = (inputs, config=None, *, return_exceptions=false))]
    fn abatch(
        slf: &Bound<'_, Self>,
        inputs: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        return_exceptions: bool,
    ) -> PyResult<LazyCoroutine> {
        let (calls, max_concurrency) = batch_calls(slf, inputs, config)?;
        Ok(LazyCoroutine::new(GatherSpec {
            work: Arc::new(calls),
            collect: Collect::List,
            max_concurrency,
            return_exceptions,
        }))
    }

    /// `self | other`: a Sequence (nested sequences are flattened).
    fn __or__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<Runnable>> {
        let node = SequenceNode::new(&[slf.clone().into_any(), other.clone()], None)?;
        Sequence::make(slf.py(), node)
    }

    /// `other | self`, for a dict or a callable on the left.
    fn __ror__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<Runnable>> {
        let node = SequenceNode::new(&[other.clone(), slf.clone().into_any()], None)?;
        Sequence::make(slf.py(), node)
    }

    /// `self | others[0] | others[1] ...`, optionally named.
    #[pyo3(signature = (*others, name=None))]
    fn pipe(
        slf: &Bound<'_, Self>,
        others: &Bound<'_, PyTuple>,
        name: Option<String>,
    ) -> PyResult<Py<Runnable>> {
        let objs: Vec<_> = std::iter::once(slf.clone().into_any())
            .chain(others.iter())
            .collect();
        Sequence::make(slf.py(), SequenceNode::new(&objs, name)?)
    }

    /// `self | Passthrough.assign(**steps)`: the output dict plus computed keys.
    #[pyo3(signature = (**steps))]
    fn assign(slf: &Bound<'_, Self>, steps: Option<&Bound<'_, PyDict>>) -> PyResult<Py<Runnable>> {
        let py = slf.py();
        let assign = Assign::make(py, steps)?;
        let node = SequenceNode::new(
            &[slf.clone().into_any(), assign.into_bound(py).into_any()],
            None,
        )?;
        Sequence::make(py, node)
    }

    /// `self | Pick(keys)`: one key of the output dict, or a dict of several.
    fn pick(slf: &Bound<'_, Self>, keys: &Bound<'_, PyAny>) -> PyResult<Py<Runnable>> {
        let py = slf.py();
        let pick = Pick::make(keys)?;
        let node = SequenceNode::new(
            &[slf.clone().into_any(), pick.into_bound(py).into_any()],
            None,
        )?;
        Sequence::make(py, node)
    }

    /// This runnable with a config of its own, merged under each call's config (tags united,
    /// metadata merged).
    #[pyo3(signature = (config=None, **kwargs))]
    fn with_config(
        slf: &Bound<'_, Self>,
        config: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<Runnable>> {
        let py = slf.py();
        let added = RunConfig::parse(config)?.user_dict(py).copy()?;
        if let Some(kwargs) = kwargs {
            added.update(kwargs.as_mapping())?;
        }
        RunConfig::parse(Some(added.as_any()))?; // validates
                                                 // As langchain_core's RunnableBinding: `{**own, **added}`; it is each call's config that
                                                 // is merged (tags united...), not the binding's own.
        rebind(slf, |config, kwargs| {
            let merged = config.copy()?;
            merged.update(added.as_mapping())?;
            Ok((merged, kwargs))
        })
    }

    /// This runnable with keyword arguments for its function (or a foreign runnable's invoke).
    #[pyo3(signature = (**kwargs))]
    fn bind(slf: &Bound<'_, Self>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Py<Runnable>> {
        rebind(slf, |config, old| {
            let merged = old.copy()?;
            if let Some(kwargs) = kwargs {
                merged.update(kwargs.as_mapping())?;
            }
            Ok((config, merged))
        })
    }

    /// Chunks of the output as they are produced (one chunk for a runnable that does not
    /// stream). A Parallel yields one-key dicts as its steps produce chunks.
    #[pyo3(signature = (input, config=None, **kwargs))]
    fn stream<'py>(
        slf: &Bound<'py, Self>,
        input: &Bound<'py, PyAny>,
        config: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        chain_call(slf, "stream", (input, config), kwargs)
    }

    /// Like :meth:`stream` for an iterator of input chunks.
    #[pyo3(signature = (input, config=None, **kwargs))]
    fn transform<'py>(
        slf: &Bound<'py, Self>,
        input: &Bound<'py, PyAny>,
        config: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        chain_call(slf, "transform", (input, config), kwargs)
    }

    /// The async iterator counterpart of :meth:`stream`.
    #[pyo3(signature = (input, config=None, **kwargs))]
    fn astream<'py>(
        slf: &Bound<'py, Self>,
        input: &Bound<'py, PyAny>,
        config: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        chain_call(slf, "astream", (input, config), kwargs)
    }

    /// The async iterator counterpart of :meth:`transform`.
    #[pyo3(signature = (input, config=None, **kwargs))]
    fn atransform<'py>(
        slf: &Bound<'py, Self>,
        input: &Bound<'py, PyAny>,
        config: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        chain_call(slf, "atransform", (input, config), kwargs)
    }

    /// `(index, result)` pairs as the items of a batch finish.
    #[pyo3(signature = (inputs, config=None, *, return_exceptions=false))]
    fn batch_as_completed<'py>(
        slf: &Bound<'py, Self>,
        inputs: &Bound<'py, PyAny>,
        config: Option<&Bound<'py, PyAny>>,
        return_exceptions: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        chain_call(
            slf,
            "batch_as_completed",
            (inputs, config, return_exceptions),
            None,
        )
    }

    /// The async iterator counterpart of :meth:`batch_as_completed`.
    #[pyo3(signature = (inputs, config=None, *, return_exceptions=false))]
    fn abatch_as_completed<'py>(
        slf: &Bound<'py, Self>,
        inputs: &Bound<'py, PyAny>,
        config: Option<&Bound<'py, PyAny>>,
        return_exceptions: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        chain_call(
            slf,
            "abatch_as_completed",
            (inputs, config, return_exceptions),
            None,
        )
    }

    /// A runnable that retries this one on failure (langchain_core's names and defaults).
    #[pyo3(signature = (
        *,
        retry_if_exception_type=None,
        wait_exponential_jitter=true,
        exponential_jitter_params=None,
        stop_after_attempt=3,
    ))]
    fn with_retry(
        slf: &Bound<'_, Self>,
        retry_if_exception_type: Option<&Bound<'_, PyAny>>,
        wait_exponential_jitter: bool,
        exponential_jitter_params: Option<&Bound<'_, PyAny>>,
        stop_after_attempt: i64,
    ) -> PyResult<Py<Runnable>> {
        retry::with_retry(
            slf,
            retry_if_exception_type,
            wait_exponential_jitter,
            exponential_jitter_params,
            stop_after_attempt,
        )
    }

    /// A runnable that tries `fallbacks` in order when this one fails.
    #[pyo3(signature = (fallbacks, *, exceptions_to_handle=None, exception_key=None))]
    fn with_fallbacks(
        slf: &Bound<'_, Self>,
        fallbacks: &Bound<'_, PyAny>,
        exceptions_to_handle: Option<&Bound<'_, PyAny>>,
        exception_key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Runnable>> {
        fallbacks::with_fallbacks(slf, fallbacks, exceptions_to_handle, exception_key)
    }

    /// A runnable that raises `StepTimeoutError` when this one runs longer than `seconds`.
    fn with_timeout(slf: &Bound<'_, Self>, seconds: &Bound<'_, PyAny>) -> PyResult<Py<Runnable>> {
        timeout::with_timeout(slf, seconds)
    }

    /// A runnable whose calls start no faster than `limiter` allows.
    fn with_rate_limit(
        slf: &Bound<'_, Self>,
        limiter: &Bound<'_, PyAny>,
    ) -> PyResult<Py<Runnable>> {
        limited::with_rate_limit(slf, limiter)
    }

    /// A runnable whose calls in flight count against `limit`.
    fn with_concurrency_limit(
        slf: &Bound<'_, Self>,
        limit: &Bound<'_, PyAny>,
    ) -> PyResult<Py<Runnable>> {
        limited::with_concurrency_limit(slf, limit)
    }

    /// A runnable that memoizes this one's results by input.
    #[pyo3(
        signature = (*, maxsize=Some(128), ttl=None, key=None),
        text_signature = "($self, *, maxsize=128, ttl=None, key=None)"
    )]
    fn with_cache(
        slf: &Bound<'_, Self>,
        maxsize: Option<i64>,
        ttl: Option<&Bound<'_, PyAny>>,
        key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Cached>> {
        cache::with_cache(slf, maxsize, ttl, key)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        self.node.repr(py)
    }

    // NOTE: no __clear__: every cycle through a runnable runs through a Python object it holds
    // (a function, a dict), whose own tp_clear breaks it; __traverse__ lets the collector see it.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.node.traverse(&visit)
    }
}

/// Calls `fastlcel._chain.<name>(self, *args, **kwargs)`.
fn chain_call<'py>(
    slf: &Bound<'py, Runnable>,
    name: &str,
    args: impl IntoPyObject<'py, Target = PyTuple, Output = Bound<'py, PyTuple>, Error = PyErr>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let args = args.into_pyobject(py)?;
    let all: Vec<_> = std::iter::once(slf.clone().into_any())
        .chain(args.iter())
        .collect();
    let all = PyTuple::new(py, all)?;
    chain_helper(py, name)?.call(all, kwargs)
}

/// A Binding of `slf` whose config and kwargs `make` derives from the current ones (empty
/// unless `slf` is itself a Binding, whose bound runnable is then re-bound).
fn rebind<'py>(
    slf: &Bound<'py, Runnable>,
    make: impl FnOnce(
        Bound<'py, PyDict>,
        Bound<'py, PyDict>,
    ) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>)>,
) -> PyResult<Py<Runnable>> {
    let py = slf.py();
    let (bound, config, kwargs) = match slf.get().node.as_any().downcast_ref::<BindingNode>() {
        Some(b) => (
            b.bound.clone_ref(py),
            b.config.bind(py).clone(),
            b.kwargs.bind(py).clone(),
        ),
        None => (
            Step::Native(slf.clone().unbind()),
            PyDict::new(py),
            PyDict::new(py),
        ),
    };
    let (config, kwargs) = make(config, kwargs)?;
    let node = BindingNode {
        bound,
        config: config.unbind(),
        kwargs: kwargs.unbind(),
    };
    Binding::make(py, node)
}

/// The calls of `batch`/`abatch`: this runnable on every input.
fn batch_calls(
    slf: &Bound<'_, Runnable>,
    inputs: &Bound<'_, PyAny>,
    config: Option<&Bound<'_, PyAny>>,
) -> PyResult<(Calls, Option<usize>)> {
    let inputs = collect_inputs(inputs)?;
    let configs = BatchConfig::parse(config, inputs.len())?;
    let max_concurrency = configs.max_concurrency();
    let target = with_config_policy(slf, configs.policies())?;
    let calls = Calls::Map {
        step: Arc::new(Step::Native(target.unbind())),
        inputs,
        configs,
    };
    Ok((calls, max_concurrency))
}

/// `runnable` under the policy keys of its call's config (`concurrency_limit`, then
/// `rate_limiter`, then `timeout`, outermost first), or itself if no config sets one. The
/// wrappers read the keys from each call's config, so a batch's per-input configs may differ.
/// They apply to the call they are passed to, not again to every step inside it.
fn with_config_policy<'a, 'py>(
    runnable: &Bound<'py, Runnable>,
    policies: impl IntoIterator<Item = &'a Policy>,
) -> PyResult<Bound<'py, Runnable>> {
    let (mut timeout, mut rate, mut concurrency) = (false, false, false);
    for policy in policies {
        timeout |= policy.timeout.is_some();
        rate |= policy.rate_limiter.is_some();
        concurrency |= policy.concurrency_limit.is_some();
    }
    let mut target = runnable.clone();
    if timeout {
        target = wrap(target, TimeoutNode::from_config)?;
    }
    if rate {
        target = wrap(target, LimitedNode::rate_from_config)?;
    }
    if concurrency {
        target = wrap(target, LimitedNode::concurrency_from_config)?;
    }
    Ok(target)
}

fn wrap<'py, N: Node>(
    inner: Bound<'py, Runnable>,
    node: impl FnOnce(Step) -> N,
) -> PyResult<Bound<'py, Runnable>> {
    let py = inner.py();
    Bound::new(py, Runnable::init(node(Step::Native(inner.unbind()))))
}
