//! `with_rate_limit`, `with_concurrency_limit` and the `rate_limiter` / `concurrency_limit`
//! config keys: the step starts only when its limiter lets it.
//!
//! Sync callers wait with the GIL released; async callers wait on the loop, never holding a
//! thread.

use std::any::Any;
use std::sync::Arc;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::errors::type_error;
use pyo3::PyTraverseError;

use super::base::{Node, Runnable};
use super::{describe, Args, Step};
use crate::config::{Policy, RunConfig};
use crate::exec::coro::StepFuture;
use crate::exec::{Caller, Kind};
use crate::limit::{ConcurrencyLimit, Limiter, RateLimiter};

enum Source {
    Fixed(Limiter),
    /// A key of the call's config (see `base::with_config_policy`).
    Config(fn(&Policy) -> Option<&Limiter>),
}

pub(crate) struct LimitedNode {
    inner: Arc<Step>,
    source: Source,
}

impl LimitedNode {
    pub(crate) fn rate_from_config(inner: Step) -> Self {
        Self {
            inner: Arc::new(inner),
            source: Source::Config(|p| p.rate_limiter.as_ref()),
        }
    }

    pub(crate) fn concurrency_from_config(inner: Step) -> Self {
        Self {
            inner: Arc::new(inner),
            source: Source::Config(|p| p.concurrency_limit.as_ref()),
        }
    }

    fn limiter<'a>(&'a self, config: &'a RunConfig) -> Option<&'a Limiter> {
        match &self.source {
            Source::Fixed(limiter) => Some(limiter),
            Source::Config(key) => key(&config.policy),
        }
    }
}

impl Node for LimitedNode {
    /// Always awaited on the loop: waiting there for the limiter costs no thread.
    fn kind(&self) -> Kind {
        Kind::awaited_around([self.inner.kind()])
    }

    /// A fastlcel wrapper: the runnable it wraps opens the run.
    fn opens_run(&self) -> bool {
        false
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        Box::pin(async move {
            let permit = match self.limiter(&args.config) {
                Some(limiter) => limiter.acquire(mode).await?,
                None => None,
            };
            let result = self.inner.run(input, args, mode).await;
            drop(permit);
            result
        })
    }

    fn name(&self, py: Python<'_>) -> String {
        self.inner.name(py)
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let inner = self.inner.object(py).bind(py).repr()?;
        Ok(match &self.source {
            Source::Fixed(limiter) => format!("Limited({inner}, {})", limiter.object(py).repr()?),
            Source::Config(_) => format!("Limited({inner}, config)"),
        })
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.inner.traverse(visit)?;
        match &self.source {
            Source::Fixed(Limiter::Rate(limiter)) => visit.call(limiter),
            Source::Fixed(Limiter::Concurrency(limit)) => visit.call(limit),
            Source::Config(_) => Ok(()),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `runnable.with_rate_limit(limiter)`.
pub(crate) fn with_rate_limit(
    runnable: &Bound<'_, Runnable>,
    limiter: &Bound<'_, PyAny>,
) -> PyResult<Py<Runnable>> {
    let limiter = limiter.cast::<RateLimiter>().map_err(|_| {
        type_error(format!(
            "with_rate_limit takes a fastlcel.RateLimiter (for a cap on calls in flight, use \
             with_concurrency_limit(ConcurrencyLimit(n))); got {}",
            describe(limiter)
        ))
    })?;
    wrap(runnable, Limiter::Rate(limiter.clone().unbind()))
}

/// `runnable.with_concurrency_limit(limit)`.
pub(crate) fn with_concurrency_limit(
    runnable: &Bound<'_, Runnable>,
    limit: &Bound<'_, PyAny>,
) -> PyResult<Py<Runnable>> {
    let limit = limit.cast::<ConcurrencyLimit>().map_err(|_| {
        type_error(format!(
            "with_concurrency_limit takes a fastlcel.ConcurrencyLimit (for a request rate, use \
             with_rate_limit(RateLimiter(n))); got {}",
            describe(limit)
        ))
    })?;
    wrap(runnable, Limiter::Concurrency(limit.clone().unbind()))
}

fn wrap(runnable: &Bound<'_, Runnable>, limiter: Limiter) -> PyResult<Py<Runnable>> {
    let node = LimitedNode {
        inner: Arc::new(Step::Native(runnable.clone().unbind())),
        source: Source::Fixed(limiter),
    };
    Py::new(runnable.py(), Runnable::init(node))
}
