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
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::{PyTraverseError, PyTypeInfo};

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

    /// Named as langchain_core names a binding: after its runnable.
    fn name(&self, py: Python<'_>) -> String {
        self.inner.name(py)
    }

    fn named_by_class(&self) -> bool {
        false
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let inner = self.inner.object(py).bind(py).repr()?;
        Ok(match &self.source {
            Source::Fixed(limiter) => {
                format!(
                    "Limited(bound={inner}, limiter={})",
                    limiter.object(py).repr()?
                )
            }
            Source::Config(_) => format!("Limited(bound={inner}, limiter=config)"),
        })
    }

    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        Limited::type_object(py)
    }

    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("bound", self.inner.object(py))?;
        match &self.source {
            Source::Fixed(limiter) => fields.set_item("limiter", limiter.object(py))?,
            Source::Config(_) => {
                return Err(type_error(
                    "a limit read from a call's config is not a runnable of its own",
                ))
            }
        }
        Ok(fields)
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

/// A limiter of either kind, checked; `what` names the call in errors.
fn limiter_of(limiter: &Bound<'_, PyAny>, what: &str) -> PyResult<Limiter> {
    if let Ok(rate) = limiter.cast::<RateLimiter>() {
        return Ok(Limiter::Rate(rate.clone().unbind()));
    }
    if let Ok(limit) = limiter.cast::<ConcurrencyLimit>() {
        return Ok(Limiter::Concurrency(limit.clone().unbind()));
    }
    Err(type_error(format!(
        "{what} takes a fastlcel.RateLimiter or a fastlcel.ConcurrencyLimit; got {}",
        describe(limiter)
    )))
}

/// `runnable.with_rate_limit(limiter)`.
pub(crate) fn with_rate_limit(step: Step, limiter: &Bound<'_, PyAny>) -> PyResult<Py<Runnable>> {
    let limiter = limiter.cast::<RateLimiter>().map_err(|_| {
        type_error(format!(
            "with_rate_limit takes a fastlcel.RateLimiter (for a cap on calls in flight, use \
             with_concurrency_limit(ConcurrencyLimit(n))); got {}",
            describe(limiter)
        ))
    })?;
    wrap(limiter.py(), step, Limiter::Rate(limiter.clone().unbind()))
}

/// `runnable.with_concurrency_limit(limit)`.
pub(crate) fn with_concurrency_limit(
    step: Step,
    limit: &Bound<'_, PyAny>,
) -> PyResult<Py<Runnable>> {
    let limit = limit.cast::<ConcurrencyLimit>().map_err(|_| {
        type_error(format!(
            "with_concurrency_limit takes a fastlcel.ConcurrencyLimit (for a request rate, use \
             with_rate_limit(RateLimiter(n))); got {}",
            describe(limit)
        ))
    })?;
    wrap(
        limit.py(),
        step,
        Limiter::Concurrency(limit.clone().unbind()),
    )
}

fn wrap(py: Python<'_>, step: Step, limiter: Limiter) -> PyResult<Py<Runnable>> {
    let node = LimitedNode {
        inner: Arc::new(step),
        source: Source::Fixed(limiter),
    };
    Runnable::create(py, node, Limited, None)
}

/// A runnable whose calls go through a limiter; made by `with_rate_limit` and
/// `with_concurrency_limit`.
#[pyclass(frozen, subclass, extends = Runnable, module = "fastlcel", name = "Limited")]
pub(crate) struct Limited;

#[pymethods]
impl Limited {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(bound, limiter, *, name=None)")]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<pyo3::PyClassInitializer<Self>> {
        Ok(Runnable::blank_of(cls, &Self::type_object(cls.py()))?.add_subclass(Limited))
    }

    /// `Limited(bound, limiter)`: `bound` behind a RateLimiter or a ConcurrencyLimit.
    #[pyo3(signature = (bound, limiter, *, name=None))]
    fn __init__(
        slf: &Bound<'_, Self>,
        bound: &Bound<'_, PyAny>,
        limiter: &Bound<'_, PyAny>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = crate::validate::name(name, "Limited(name)")?;
        let node = LimitedNode {
            inner: Arc::new(Step::coerce(bound, "Limited bound")?),
            source: Source::Fixed(limiter_of(limiter, "Limited")?),
        };
        Runnable::set_node(slf.as_super(), node, name)
    }

    /// The runnable behind the limiter.
    #[getter]
    fn bound(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let node: &LimitedNode = Runnable::node_as(slf.as_super())?;
        Ok(node.inner.object(slf.py()))
    }

    /// The RateLimiter or ConcurrencyLimit.
    #[getter]
    fn limiter(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let node: &LimitedNode = Runnable::node_as(slf.as_super())?;
        match &node.source {
            Source::Fixed(limiter) => Ok(limiter.object(py).clone().unbind()),
            Source::Config(_) => Ok(py.None()),
        }
    }
}
