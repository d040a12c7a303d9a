//! `with_retry`: the step again after a failure, with exponential backoff and jitter, like
//! langchain_core's `RunnableRetry` (tenacity's `wait_exponential_jitter`).
//!
//! A batch runs every item as its own retried call: only failing items are retried, and each
//! result stays in its own slot (langchain_core issue #35475 mixes them up).

use std::any::Any;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyException;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::errors::type_error;
use crate::validate::{self, Attempts, Jitter};
use pyo3::types::{PyDict, PyList, PyTuple, PyType};
use pyo3::{PyTraverseError, PyTypeInfo};

use super::base::{BindingParts, Node, Runnable, Streaming};
use super::binding::{Binding, BindingNode};
use super::{exception_types, is_exception_type, Args, Step};
use crate::exec::aio;
use crate::exec::coro::StepFuture;
use crate::exec::stream::Chunks;
use crate::exec::{Caller, Kind};

/// Which failures are retried.
enum RetryIf {
    /// An instance of one of these exception types (a tuple).
    Types(Py<PyAny>),
    /// `predicate(exc)` is true.
    Predicate(Py<PyAny>),
}

/// `wait_exponential_jitter`: after failed attempt n, wait
/// `min(initial * exp_base ** (n - 1) + uniform(0, jitter), max)` seconds.
struct Backoff {
    initial: f64,
    max: f64,
    exp_base: f64,
    jitter: f64,
}

impl Backoff {
    fn parse(params: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut backoff = Self {
            initial: 1.0,
            max: 60.0,
            exp_base: 2.0,
            jitter: 1.0,
        };
        let Some(params) = params.filter(|p| !p.is_none()) else {
            return Ok(backoff);
        };
        let params = params.cast::<PyDict>().map_err(|_| {
            type_error(format!(
                "exponential_jitter_params must be a dict with keys initial, max, exp_base, \
                 jitter; got {}",
                super::describe(params)
            ))
        })?;
        for (key, value) in params.iter() {
            let key = key.str()?.to_string();
            let field = match key.as_str() {
                "initial" => &mut backoff.initial,
                "max" => &mut backoff.max,
                "exp_base" => &mut backoff.exp_base,
                "jitter" => &mut backoff.jitter,
                _ => {
                    return Err(type_error(format!(
                        "exponential_jitter_params has an unknown key '{key}'; the keys are \
                         initial, max, exp_base and jitter"
                    )))
                }
            };
            let what = format!("with_retry(exponential_jitter_params['{key}'])");
            *field = validate::non_negative(&value, &what, validate::MAX_SECONDS)?;
        }
        Ok(backoff)
    }

    fn wait(&self, failed_attempt: u32) -> Duration {
        let jitter = self.jitter * random_unit();
        let exp = self
            .exp_base
            .powi(i32::try_from(failed_attempt - 1).unwrap_or(i32::MAX));
        let seconds = (self.initial * exp + jitter).min(self.max);
        // An overflow (inf) is capped by `max`; NaN (0 * inf) waits `max`, like tenacity.
        let seconds = if seconds.is_nan() { self.max } else { seconds };
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    }
}

/// A float in [0, 1) for the jitter: std's randomly keyed hasher, no generator to keep.
fn random_unit() -> f64 {
    let bits = RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// What to retry and how long to wait.
pub(crate) struct RetryPolicy {
    retry_if: RetryIf,
    backoff: Option<Backoff>,
    stop_after_attempt: u32,
    /// `exponential_jitter_params` as given (langchain_core's field).
    jitter_params: Option<Py<PyAny>>,
}

impl RetryPolicy {
    fn should_retry(&self, exc: &Bound<'_, PyAny>) -> PyResult<bool> {
        // KeyboardInterrupt, SystemExit, CancelledError: never retried, they abort the call.
        if !exc.is_instance_of::<PyException>() {
            return Ok(false);
        }
        let py = exc.py();
        match &self.retry_if {
            RetryIf::Types(types) => exc.is_instance(types.bind(py)),
            RetryIf::Predicate(predicate) => predicate.bind(py).call1((exc,))?.is_truthy(),
        }
    }

    fn wait(&self, failed_attempt: u32) -> Duration {
        self.backoff
            .as_ref()
            .map_or(Duration::ZERO, |b| b.wait(failed_attempt))
    }
}

impl RetryPolicy {
    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match &self.retry_if {
            RetryIf::Types(obj) | RetryIf::Predicate(obj) => visit.call(obj)?,
        }
        self.jitter_params.iter().try_for_each(|p| visit.call(p))
    }

    /// `retry_exception_types` as langchain_core keeps it: the tuple, or the predicate.
    fn retry_object(&self) -> &Py<PyAny> {
        match &self.retry_if {
            RetryIf::Types(obj) | RetryIf::Predicate(obj) => obj,
        }
    }

    /// Whether it retries only `Exception`s, langchain_core's default.
    fn retries_any_exception(&self, py: Python<'_>) -> bool {
        match &self.retry_if {
            RetryIf::Types(types) => types.bind(py).cast::<PyTuple>().is_ok_and(|t| {
                t.len() == 1
                    && t.get_item(0)
                        .is_ok_and(|e| e.is(py.get_type::<PyException>().as_any()))
            }),
            RetryIf::Predicate(_) => false,
        }
    }
}

pub(crate) struct RetryNode {
    inner: Arc<Step>,
    policy: RetryPolicy,
}

impl Node for RetryNode {
    /// Sync steps retry on the pool (their waits block a pool thread, never the loop); async
    /// steps on the loop.
    fn kind(&self) -> Kind {
        Step::wrapper_kind([&self.inner])
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        Box::pin(async move {
            let policy = &self.policy;
            let mut attempt = 1;
            loop {
                // Each attempt a child run, tagged from the second on (langchain_core's).
                let (attempt_input, attempt_args) = Python::attach(|py| {
                    let mut child = if attempt > 1 {
                        args.child_tagged(py, || format!("retry:attempt:{attempt}"))?
                    } else {
                        args.child(py)?
                    };
                    child.kwargs = args.kwargs.clone();
                    child.batched = args.batched;
                    Ok::<_, PyErr>((input.clone_ref(py), child))
                })?;
                let err = match self.inner.run(attempt_input, attempt_args, mode).await {
                    Ok(value) => return Ok(value),
                    Err(err) => err,
                };
                let retry = attempt < policy.stop_after_attempt
                    && Python::attach(|py| policy.should_retry(err.value(py)))?;
                if !retry {
                    return Err(err);
                }
                Python::attach(|_| drop(err));
                aio::sleep(policy.wait(attempt), mode).await?;
                attempt += 1;
            }
        })
    }

    fn streaming(&self) -> Streaming {
        Streaming::Delegate
    }

    /// As langchain_core's RunnableRetry: a stream is not retried (nor a run of its own).
    fn transform(self: Arc<Self>, input: Chunks, args: Args, mode: Caller) -> Chunks {
        self.inner.stream(input, args, mode)
    }

    fn name(&self, py: Python<'_>) -> String {
        self.inner.name(py)
    }

    fn named_by_class(&self) -> bool {
        false
    }

    /// langchain_core's (a pydantic model's): the fields that differ from their defaults.
    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let policy = &self.policy;
        let mut repr = format!(
            "RunnableRetry(bound={}, kwargs={{}}, config={{}}, config_factories=[]",
            self.inner.object(py).bind(py).repr()?
        );
        if !policy.retries_any_exception(py) {
            let types = policy.retry_object().bind(py).repr()?;
            repr.push_str(&format!(", retry_exception_types={types}"));
        }
        if policy.backoff.is_none() {
            repr.push_str(", wait_exponential_jitter=False");
        }
        if let Some(params) = &policy.jitter_params {
            let params = params.bind(py).repr()?;
            repr.push_str(&format!(", exponential_jitter_params={params}"));
        }
        if policy.stop_after_attempt != 3 {
            let n = policy.stop_after_attempt;
            repr.push_str(&format!(", max_attempt_number={n}"));
        }
        repr.push(')');
        Ok(repr)
    }

    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        Retry::type_object(py)
    }

    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let policy = &self.policy;
        let fields = PyDict::new(py);
        fields.set_item("bound", self.inner.object(py))?;
        fields.set_item("retry_exception_types", policy.retry_object())?;
        fields.set_item("wait_exponential_jitter", policy.backoff.is_some())?;
        if let Some(params) = &policy.jitter_params {
            fields.set_item("exponential_jitter_params", params)?;
        }
        fields.set_item("max_attempt_number", policy.stop_after_attempt)?;
        Ok(fields)
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.inner.traverse(visit)?;
        self.policy.traverse(visit)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl RetryPolicy {
    /// langchain_core's arguments, checked.
    fn parse(
        retry_if_exception_type: Option<&Bound<'_, PyAny>>,
        wait_exponential_jitter: bool,
        exponential_jitter_params: Option<&Bound<'_, PyAny>>,
        stop_after_attempt: u32,
    ) -> PyResult<Self> {
        let retry_if = match retry_if_exception_type.filter(|r| !r.is_none()) {
            None => RetryIf::Types(Python::attach(|py| {
                exception_types(
                    py.get_type::<PyException>().as_any(),
                    "retry_if_exception_type",
                )
            })?),
            // An exception class is callable too: it means "this type", not a predicate.
            Some(f) if f.is_callable() && !is_exception_type(f) => {
                RetryIf::Predicate(f.clone().unbind())
            }
            Some(types) => RetryIf::Types(exception_types(types, "retry_if_exception_type")?),
        };
        // Parsed even when unused, so that a typo is reported at once.
        let backoff = Backoff::parse(exponential_jitter_params)?;
        Ok(RetryPolicy {
            retry_if,
            backoff: wait_exponential_jitter.then_some(backoff),
            stop_after_attempt,
            jitter_params: exponential_jitter_params
                .filter(|p| !p.is_none())
                .map(|p| p.clone().unbind()),
        })
    }
}

/// `runnable.with_retry(...)`.
pub(crate) fn with_retry(
    step: Step,
    retry_if_exception_type: Option<&Bound<'_, PyAny>>,
    wait_exponential_jitter: bool,
    exponential_jitter_params: Option<&Bound<'_, PyAny>>,
    stop_after_attempt: u32,
) -> PyResult<Py<Runnable>> {
    let policy = RetryPolicy::parse(
        retry_if_exception_type,
        wait_exponential_jitter,
        exponential_jitter_params,
        stop_after_attempt,
    )?;
    let node = RetryNode {
        inner: Arc::new(step),
        policy,
    };
    Python::attach(|py| Runnable::create(py, node, Retry, None))
}

/// A runnable retried on failure, like langchain_core's `RunnableRetry`; made by
/// `with_retry`.
#[pyclass(frozen, subclass, extends = Runnable, module = "fastlcel", name = "Retry")]
pub(crate) struct Retry;

impl Retry {
    fn node<'a>(slf: &'a Bound<'_, Self>) -> PyResult<&'a RetryNode> {
        Runnable::node_as(slf.as_super())
    }
}

#[pymethods]
impl Retry {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(*, bound, retry_exception_types=None, wait_exponential_jitter=True, exponential_jitter_params=None, max_attempt_number=3, kwargs=None, config=None, config_factories=None, name=None)")]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<pyo3::PyClassInitializer<Self>> {
        Ok(Runnable::blank_of(cls, &Self::type_object(cls.py()))?.add_subclass(Retry))
    }

    /// langchain_core's `RunnableRetry(bound=..., max_attempt_number=...)`; `kwargs` and
    /// `config` bind the runnable first, as a RunnableBinding would.
    #[pyo3(signature = (
        *,
        bound,
        retry_exception_types=None,
        wait_exponential_jitter=Jitter(true),
        exponential_jitter_params=None,
        max_attempt_number=Attempts(3),
        kwargs=None,
        config=None,
        config_factories=None,
        name=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn __init__(
        slf: &Bound<'_, Self>,
        bound: &Bound<'_, PyAny>,
        retry_exception_types: Option<&Bound<'_, PyAny>>,
        wait_exponential_jitter: Jitter,
        exponential_jitter_params: Option<&Bound<'_, PyAny>>,
        max_attempt_number: Attempts,
        kwargs: Option<&Bound<'_, PyDict>>,
        config: Option<&Bound<'_, PyDict>>,
        config_factories: Option<&Bound<'_, PyList>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let name = validate::name(name, "Retry(name)")?;
        let mut step = Step::coerce(bound, "Retry bound")?;
        let binds = [kwargs.map(|d| d.len()), config.map(|d| d.len())]
            .into_iter()
            .flatten()
            .any(|n| n > 0)
            || config_factories.is_some_and(|f| !f.is_empty());
        if binds {
            let parts = BindingParts {
                bound: step,
                config: config.map_or_else(|| PyDict::new(py), |d| d.clone()),
                kwargs: kwargs.map_or_else(|| PyDict::new(py), |d| d.clone()),
                config_factories: config_factories.map_or_else(|| PyList::empty(py), |f| f.clone()),
                input_type: None,
                output_type: None,
            };
            let binding = Binding::make(py, BindingNode::from_parts(parts))?;
            step = Step::native(binding.bind(py))?;
        }
        let policy = RetryPolicy::parse(
            retry_exception_types,
            wait_exponential_jitter.0,
            exponential_jitter_params,
            max_attempt_number.0,
        )?;
        let node = RetryNode {
            inner: Arc::new(step),
            policy,
        };
        Runnable::set_node(slf.as_super(), node, name)
    }

    /// The runnable retried.
    #[getter]
    fn bound(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Ok(Self::node(slf)?.inner.object(slf.py()))
    }

    /// A tuple of exception classes, or the predicate given.
    #[getter]
    fn retry_exception_types(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Ok(Self::node(slf)?.policy.retry_object().clone_ref(slf.py()))
    }

    #[getter]
    fn wait_exponential_jitter(slf: &Bound<'_, Self>) -> PyResult<bool> {
        Ok(Self::node(slf)?.policy.backoff.is_some())
    }

    #[getter]
    fn exponential_jitter_params(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        let params = &Self::node(slf)?.policy.jitter_params;
        Ok(params.as_ref().map(|p| p.clone_ref(py)))
    }

    #[getter]
    fn max_attempt_number(slf: &Bound<'_, Self>) -> PyResult<u32> {
        Ok(Self::node(slf)?.policy.stop_after_attempt)
    }
}
