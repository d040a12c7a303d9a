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
use crate::validate;
use pyo3::types::PyDict;
use pyo3::PyTraverseError;

use super::base::{Node, Runnable};
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
            RetryIf::Types(obj) | RetryIf::Predicate(obj) => visit.call(obj),
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
                let attempt_input = Python::attach(|py| input.clone_ref(py));
                let err = match self.inner.run(attempt_input, args.clone(), mode).await {
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

    /// As langchain_core's RunnableRetry: a stream is not retried.
    fn stream(self: Arc<Self>, input: Chunks, args: Args, mode: Caller) -> Chunks {
        self.inner.stream(input, args, mode)
    }

    fn name(&self, py: Python<'_>) -> String {
        self.inner.name(py)
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Retry({}, stop_after_attempt={})",
            self.inner.object(py).bind(py).repr()?,
            self.policy.stop_after_attempt
        ))
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.inner.traverse(visit)?;
        self.policy.traverse(visit)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `runnable.with_retry(...)`.
pub(crate) fn with_retry(
    runnable: &Bound<'_, Runnable>,
    retry_if_exception_type: Option<&Bound<'_, PyAny>>,
    wait_exponential_jitter: bool,
    exponential_jitter_params: Option<&Bound<'_, PyAny>>,
    stop_after_attempt: u32,
) -> PyResult<Py<Runnable>> {
    let py = runnable.py();
    let retry_if = match retry_if_exception_type.filter(|r| !r.is_none()) {
        None => RetryIf::Types(exception_types(
            py.get_type::<PyException>().as_any(),
            "retry_if_exception_type",
        )?),
        // An exception class is callable too: it means "this type", not a predicate.
        Some(f) if f.is_callable() && !is_exception_type(f) => {
            RetryIf::Predicate(f.clone().unbind())
        }
        Some(types) => RetryIf::Types(exception_types(types, "retry_if_exception_type")?),
    };
    // Parsed even when unused, so that a typo is reported at once.
    let backoff = Backoff::parse(exponential_jitter_params)?;
    let policy = RetryPolicy {
        retry_if,
        backoff: wait_exponential_jitter.then_some(backoff),
        stop_after_attempt,
    };
    let node = RetryNode {
        inner: Arc::new(Step::Native(runnable.clone().unbind())),
        policy,
    };
    Py::new(py, Runnable::init(node))
}
