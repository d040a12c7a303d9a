//! `Runnable`: the base class of every fastlcel runnable. What one runs is its [`Node`]; the
//! Python-facing classes (`Lambda`, `Parallel`, ...) are subclasses that only construct nodes.

use std::any::Any;
use std::sync::Arc;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{intern, PyClassInitializer, PyTraverseError};

use super::binding::{Binding, BindingNode};
use super::cache::{self, Cached};
use super::limited::{self, LimitedNode};
use super::passthrough::{Assign, Pick};
use super::sequence::{Sequence, SequenceNode};
use super::timeout::{self, TimeoutNode};
use super::{collect_inputs, fallbacks, retry, whole, Args, Calls, Step};
use crate::config::{BatchConfig, Policy, RunConfig};
use crate::exec::context::Context;
use crate::exec::coro::{block_on, Coroutine, StepFuture};
use crate::exec::stream::{as_completed, ChunkAsyncIterator, ChunkIterator, Chunks};
use crate::exec::{fan_out, Caller, Collect, Cost, FanOpts, Kind};
use crate::validate::{self, Attempts, CacheSize, Jitter, ReturnExceptions};

/// What a runnable does. Each kind of runnable is one implementation, in a file of its own,
/// written once for both kinds of caller: `mode` says how to wait (see `exec::Caller`), and
/// exec has already placed the call where it may wait that way.
pub(crate) trait Node: Send + Sync + 'static {
    /// How it is implemented, for exec to place it.
    fn kind(&self) -> Kind;
    /// Its output for `input`, run `mode`'s way right where the future is polled. Nothing runs
    /// before the first poll.
    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture;
    /// Its output chunks for a stream of input chunks, `mode`'s way. By default, as
    /// langchain_core's `Runnable.transform`: the input's sum, run, as one chunk.
    fn stream(self: Arc<Self>, input: Chunks, args: Args, mode: Caller) -> Chunks {
        whole(input, mode, move |value| self.run(value, args, mode))
    }
    /// A gather's fast path: the user's own awaitable for `input`, where running it is all
    /// there is to the step (finished by [`Self::followup`]).
    fn awaitable<'py>(
        &self,
        _input: &Bound<'py, PyAny>,
        _args: &Args,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(None)
    }
    /// What remains to await once [`Self::awaitable`] produced `output`, if anything.
    fn followup(
        self: Arc<Self>,
        _input: Py<PyAny>,
        _args: Args,
        _output: &Bound<'_, PyAny>,
    ) -> PyResult<Option<StepFuture>> {
        Ok(None)
    }
    fn name(&self, py: Python<'_>) -> String;
    fn repr(&self, py: Python<'_>) -> PyResult<String>;
    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError>;
    fn as_any(&self) -> &dyn Any;
}

#[pyclass(frozen, subclass, module = "fastlcel", name = "Runnable")]
pub(crate) struct Runnable {
    pub(crate) node: Arc<dyn Node>,
    /// Its cost as a step of an enclosing fan-out.
    cost: Cost,
}

impl Runnable {
    pub(crate) fn init(node: impl Node) -> PyClassInitializer<Self> {
        PyClassInitializer::from(Self {
            node: Arc::new(node),
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
    fn py_get_name(
        &self,
        py: Python<'_>,
        suffix: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let suffix = validate::name(suffix, "get_name(suffix)")?;
        let suffix = suffix.as_ref().map(|s| s.to_cow()).transpose()?;
        let name = match validate::name(name, "get_name(name)")? {
            Some(name) => name.to_string(),
            None => self.node.name(py),
        };
        Ok(match suffix.as_deref() {
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
        })
    }

    #[pyo3(signature = (input, config=None, **kwargs))]
    fn invoke(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let (step, args) = call(slf, config, kwargs)?;
        let input = input.clone().unbind();
        Context::run_isolated(py, || block_on(step.run(input, args, Caller::Thread)))
    }

    #[pyo3(signature = (input, config=None, **kwargs))]
    fn ainvoke(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Coroutine> {
        let (step, args) = call(slf, config, kwargs)?;
        let input = input.clone().unbind();
        Ok(Coroutine::new(step.run(input, args, Caller::Loop)))
    }

    #[pyo3(
        signature = (inputs, config=None, *, return_exceptions=ReturnExceptions(false), **kwargs),
        text_signature = "($self, inputs, config=None, *, return_exceptions=False, **kwargs)"
    )]
    fn batch(
        slf: &Bound<'_, Self>,
        inputs: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        return_exceptions: ReturnExceptions,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let (calls, opts) = batch_calls(slf, inputs, config, return_exceptions, kwargs)?;
        let values = block_on(fan_out(Arc::new(calls), opts, Caller::Thread))?;
        Collect::List.build(py, values)
    }

    #[pyo3(
        signature = (inputs, config=None, *, return_exceptions=ReturnExceptions(false), **kwargs),
        text_signature = "($self, inputs, config=None, *, return_exceptions=False, **kwargs)"
    )]
    fn abatch(
        slf: &Bound<'_, Self>,
        inputs: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        return_exceptions: ReturnExceptions,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Coroutine> {
        let (calls, opts) = batch_calls(slf, inputs, config, return_exceptions, kwargs)?;
        Ok(Coroutine::new(Box::pin(async move {
            let values = fan_out(Arc::new(calls), opts, Caller::Loop).await?;
            Python::attach(|py| Collect::List.build(py, values))
        })))
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
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Runnable>> {
        let name = validate::name(name, "pipe(name)")?.map(|n| n.to_string());
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
    fn stream(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ChunkIterator> {
        let chunks = Chunks::once(input.clone().unbind());
        stream_of(slf, chunks, config, kwargs, Caller::Thread)
            .and_then(|c| ChunkIterator::new(slf.py(), c))
    }

    /// Like :meth:`stream` for an iterator of input chunks.
    #[pyo3(signature = (input, config=None, **kwargs))]
    fn transform(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ChunkIterator> {
        validate::iterable(
            input,
            "transform(input)",
            "an iterable of input chunks",
            false,
        )?;
        let chunks = Chunks::from_iterable(input)?;
        stream_of(slf, chunks, config, kwargs, Caller::Thread)
            .and_then(|c| ChunkIterator::new(slf.py(), c))
    }

    /// The async iterator counterpart of :meth:`stream`.
    #[pyo3(signature = (input, config=None, **kwargs))]
    fn astream(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ChunkAsyncIterator> {
        let chunks = Chunks::once(input.clone().unbind());
        stream_of(slf, chunks, config, kwargs, Caller::Loop)
            .and_then(|c| ChunkAsyncIterator::new(slf.py(), c))
    }

    /// The async iterator counterpart of :meth:`transform` (for an async iterator of input
    /// chunks; a sync iterable is accepted too).
    #[pyo3(signature = (input, config=None, **kwargs))]
    fn atransform(
        slf: &Bound<'_, Self>,
        input: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ChunkAsyncIterator> {
        let py = slf.py();
        let expected = "an async iterable or an iterable of input chunks";
        validate::iterable(input, "atransform(input)", expected, true)?;
        let chunks = if input.hasattr(intern!(py, "__aiter__"))? {
            Chunks::from_aiter(input.call_method0(intern!(py, "__aiter__"))?.unbind())
        } else {
            Chunks::from_iterable(input)?
        };
        stream_of(slf, chunks, config, kwargs, Caller::Loop)
            .and_then(|c| ChunkAsyncIterator::new(py, c))
    }

    /// `(index, result)` pairs as the items of a batch finish.
    #[pyo3(
        signature = (inputs, config=None, *, return_exceptions=ReturnExceptions(false), **kwargs),
        text_signature = "($self, inputs, config=None, *, return_exceptions=False, **kwargs)"
    )]
    fn batch_as_completed(
        slf: &Bound<'_, Self>,
        inputs: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        return_exceptions: ReturnExceptions,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ChunkIterator> {
        let (calls, opts) = batch_calls(slf, inputs, config, return_exceptions, kwargs)?;
        ChunkIterator::new(
            slf.py(),
            as_completed(Arc::new(calls), opts, Caller::Thread),
        )
    }

    /// The async iterator counterpart of :meth:`batch_as_completed`.
    #[pyo3(
        signature = (inputs, config=None, *, return_exceptions=ReturnExceptions(false), **kwargs),
        text_signature = "($self, inputs, config=None, *, return_exceptions=False, **kwargs)"
    )]
    fn abatch_as_completed(
        slf: &Bound<'_, Self>,
        inputs: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        return_exceptions: ReturnExceptions,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ChunkAsyncIterator> {
        let (calls, opts) = batch_calls(slf, inputs, config, return_exceptions, kwargs)?;
        ChunkAsyncIterator::new(slf.py(), as_completed(Arc::new(calls), opts, Caller::Loop))
    }

    /// A runnable that retries this one on failure (langchain_core's names and defaults).
    #[pyo3(signature = (
        *,
        retry_if_exception_type=None,
        wait_exponential_jitter=Jitter(true),
        exponential_jitter_params=None,
        stop_after_attempt=Attempts(3),
    ),
    text_signature = "($self, *, retry_if_exception_type=None, wait_exponential_jitter=True, \
                      exponential_jitter_params=None, stop_after_attempt=3)")]
    fn with_retry(
        slf: &Bound<'_, Self>,
        retry_if_exception_type: Option<&Bound<'_, PyAny>>,
        wait_exponential_jitter: Jitter,
        exponential_jitter_params: Option<&Bound<'_, PyAny>>,
        stop_after_attempt: Attempts,
    ) -> PyResult<Py<Runnable>> {
        retry::with_retry(
            slf,
            retry_if_exception_type,
            wait_exponential_jitter.0,
            exponential_jitter_params,
            stop_after_attempt.0,
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
        signature = (*, maxsize=CacheSize(Some(128)), ttl=None, key=None),
        text_signature = "($self, *, maxsize=128, ttl=None, key=None)"
    )]
    fn with_cache(
        slf: &Bound<'_, Self>,
        maxsize: CacheSize,
        ttl: Option<&Bound<'_, PyAny>>,
        key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Cached>> {
        cache::with_cache(slf, maxsize.0, ttl, key)
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

/// The runnable a call runs (under its config's policy keys) and its arguments.
fn call(
    slf: &Bound<'_, Runnable>,
    config: Option<&Bound<'_, PyAny>>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<(Step, Args)> {
    let config = Arc::new(RunConfig::parse(config)?);
    let target = with_config_policy(slf, [&config.policy])?;
    let args = Args {
        config,
        kwargs: kwargs_of(kwargs),
    };
    Ok((Step::Native(target.unbind()), args))
}

/// The output chunks of `slf` for `input`, for `caller`.
fn stream_of(
    slf: &Bound<'_, Runnable>,
    input: Chunks,
    config: Option<&Bound<'_, PyAny>>,
    kwargs: Option<&Bound<'_, PyDict>>,
    caller: Caller,
) -> PyResult<Chunks> {
    let args = Args {
        config: Arc::new(RunConfig::parse(config)?),
        kwargs: kwargs_of(kwargs),
    };
    Ok(Step::Native(slf.clone().unbind()).stream(input, args, caller))
}

fn kwargs_of(kwargs: Option<&Bound<'_, PyDict>>) -> Option<Arc<Py<PyDict>>> {
    kwargs
        .filter(|k| !k.is_empty())
        .map(|k| Arc::new(k.clone().unbind()))
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

/// The calls of `batch` and its kin: this runnable on every input, and the fan-out's options.
fn batch_calls(
    slf: &Bound<'_, Runnable>,
    inputs: &Bound<'_, PyAny>,
    config: Option<&Bound<'_, PyAny>>,
    return_exceptions: ReturnExceptions,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<(Calls, FanOpts)> {
    let inputs = collect_inputs(inputs)?;
    let configs = BatchConfig::parse(config, inputs.len())?;
    let opts = FanOpts {
        max_concurrency: configs.max_concurrency(),
        return_exceptions: return_exceptions.0,
    };
    let target = with_config_policy(slf, configs.policies())?;
    let calls = Calls::Map {
        step: Arc::new(Step::Native(target.unbind())),
        inputs,
        configs,
        kwargs: kwargs_of(kwargs),
    };
    Ok((calls, opts))
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
