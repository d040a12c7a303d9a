//! `RunConfig`: the Python config dict (langchain's RunnableConfig) parsed once per call.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::limit::{ConcurrencyLimit, Limiter, RateLimiter};

const DEFAULT_RECURSION_LIMIT: i64 = 25;

pub(crate) struct RunConfig {
    /// The caller's dict as given (None when no config was passed).
    user: Option<Py<PyDict>>,
    /// `config["max_concurrency"]`: the cap on calls in flight for one fan-out.
    pub(crate) max_concurrency: Option<usize>,
    /// `config["timeout"]`, `["rate_limiter"]`, `["concurrency_limit"]`: applied to the call the
    /// config is passed to (each item of a batch), not again to every step inside it.
    pub(crate) policy: Policy,
}

#[derive(Default)]
pub(crate) struct Policy {
    /// Seconds.
    pub(crate) timeout: Option<f64>,
    pub(crate) rate_limiter: Option<Limiter>,
    pub(crate) concurrency_limit: Option<Limiter>,
}

impl Policy {
    fn parse(dict: &Bound<'_, PyDict>) -> PyResult<Self> {
        let timeout = match dict.get_item("timeout")? {
            Some(v) if !v.is_none() => Some(parse_timeout(&v, "config['timeout']")?),
            _ => None,
        };
        Ok(Self {
            timeout,
            rate_limiter: extract_key::<RateLimiter>(
                dict,
                "rate_limiter",
                "a fastlcel.RateLimiter",
            )?
            .map(Limiter::Rate),
            concurrency_limit: extract_key::<ConcurrencyLimit>(
                dict,
                "concurrency_limit",
                "a fastlcel.ConcurrencyLimit",
            )?
            .map(Limiter::Concurrency),
        })
    }
}

/// A timeout in seconds: a positive finite number. `what` names it in errors.
pub(crate) fn parse_timeout(value: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    let seconds: f64 = value.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a number of seconds; got {}",
            type_name(value)
        ))
    })?;
    if !(seconds > 0.0 && Duration::try_from_secs_f64(seconds).is_ok()) {
        return Err(PyValueError::new_err(format!(
            "{what} must be a positive number of seconds; got {seconds:?}"
        )));
    }
    Ok(seconds)
}

fn extract_key<T: pyo3::PyClass>(
    dict: &Bound<'_, PyDict>,
    key: &str,
    expected: &str,
) -> PyResult<Option<Py<T>>> {
    match dict.get_item(key)? {
        Some(v) if !v.is_none() => match v.cast::<T>() {
            Ok(obj) => Ok(Some(obj.clone().unbind())),
            Err(_) => Err(PyTypeError::new_err(format!(
                "config['{key}'] must be {expected} or None; got {}",
                type_name(&v)
            ))),
        },
        _ => Ok(None),
    }
}

impl RunConfig {
    pub(crate) fn parse(config: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let Some(config) = config.filter(|c| !c.is_none()) else {
            return Ok(Self {
                user: None,
                max_concurrency: None,
                policy: Policy::default(),
            });
        };
        let dict = config.cast::<PyDict>().map_err(|_| {
            PyTypeError::new_err(format!(
                "config must be a dict (a RunnableConfig) or None; got {}",
                type_name(config)
            ))
        })?;
        let max_concurrency = match dict.get_item("max_concurrency")? {
            Some(v) if !v.is_none() => {
                let n: i64 = v.extract().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "config['max_concurrency'] must be a positive int or None; got {}",
                        type_name(&v)
                    ))
                })?;
                if n < 1 {
                    return Err(PyValueError::new_err(format!(
                        "config['max_concurrency'] must be a positive int or None; got {n}"
                    )));
                }
                Some(n as usize)
            }
            _ => None,
        };
        Ok(Self {
            user: Some(dict.clone().unbind()),
            max_concurrency,
            policy: Policy::parse(dict)?,
        })
    }

    /// The dict handed to a function with a `config` parameter or to a foreign runnable: a fresh
    /// dict with langchain's defaults (`ensure_config`), so that one step's writes reach no other.
    pub(crate) fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("tags", PyList::empty(py))?;
        dict.set_item("metadata", PyDict::new(py))?;
        dict.set_item("callbacks", py.None())?;
        dict.set_item("recursion_limit", DEFAULT_RECURSION_LIMIT)?;
        dict.set_item("configurable", PyDict::new(py))?;
        if let Some(user) = &self.user {
            for (k, v) in user.bind(py).iter() {
                // Copy the mutable containers so that a step cannot edit the caller's config.
                let v = if let Ok(list) = v.cast::<PyList>() {
                    PyList::new(py, list.iter())?.into_any()
                } else if let Ok(d) = v.cast::<PyDict>() {
                    d.copy()?.into_any()
                } else {
                    v
                };
                dict.set_item(k, v)?;
            }
        }
        Ok(dict)
    }
}

/// The configs of a batch: one shared by every input, or one per input.
pub(crate) enum BatchConfig {
    Shared(Arc<RunConfig>),
    PerInput(Vec<Arc<RunConfig>>),
}

impl BatchConfig {
    pub(crate) fn parse(config: Option<&Bound<'_, PyAny>>, n: usize) -> PyResult<Self> {
        match config {
            Some(c) if c.is_instance_of::<PyList>() || c.is_instance_of::<PyTuple>() => {
                let configs = c
                    .try_iter()?
                    .map(|item| RunConfig::parse(Some(&item?)).map(Arc::new))
                    .collect::<PyResult<Vec<_>>>()?;
                if configs.len() != n {
                    return Err(PyValueError::new_err(format!(
                        "got {} configs for {n} inputs; pass one config, or one per input",
                        configs.len()
                    )));
                }
                Ok(Self::PerInput(configs))
            }
            other => Ok(Self::Shared(Arc::new(RunConfig::parse(other)?))),
        }
    }

    pub(crate) fn get(&self, i: usize) -> &Arc<RunConfig> {
        match self {
            Self::Shared(c) => c,
            Self::PerInput(v) => &v[i],
        }
    }

    /// The policies of the configs (one if shared).
    pub(crate) fn policies(&self) -> impl Iterator<Item = &Policy> {
        let configs: &[Arc<RunConfig>] = match self {
            Self::Shared(c) => std::slice::from_ref(c),
            Self::PerInput(v) => v,
        };
        configs.iter().map(|c| &c.policy)
    }

    /// The batch's own cap on items in flight (langchain reads it from the first config).
    pub(crate) fn max_concurrency(&self) -> Option<usize> {
        match self {
            Self::Shared(c) => c.max_concurrency,
            Self::PerInput(v) => v.first().and_then(|c| c.max_concurrency),
        }
    }
}

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".to_owned())
}
