//! `RunConfig`: the Python config dict (langchain's RunnableConfig) parsed once per call.

use std::sync::Arc;

use pyo3::prelude::*;

use crate::errors::{type_error, value_error};
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::limit::{ConcurrencyLimit, Limiter, RateLimiter};
use crate::validate;

const DEFAULT_RECURSION_LIMIT: i64 = 25;

pub(crate) struct RunConfig {
    /// The caller's dict as given (None when no config was passed).
    user: Option<Py<PyDict>>,
    /// `config["max_concurrency"]`: the cap on calls in flight for one fan-out.
    pub(crate) max_concurrency: Option<usize>,
    /// `config["recursion_limit"]`: how many more runnables a Lambda may return in a row.
    pub(crate) recursion_limit: i64,
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
        let timeout =
            validate::optional_seconds(dict.get_item("timeout")?.as_ref(), "config['timeout']")?;
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

fn extract_key<T: pyo3::PyClass>(
    dict: &Bound<'_, PyDict>,
    key: &str,
    expected: &str,
) -> PyResult<Option<Py<T>>> {
    match dict.get_item(key)? {
        Some(v) if !v.is_none() => match v.cast::<T>() {
            Ok(obj) => Ok(Some(obj.clone().unbind())),
            Err(_) => Err(type_error(format!(
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
                recursion_limit: DEFAULT_RECURSION_LIMIT,
                policy: Policy::default(),
            });
        };
        let dict = config.cast::<PyDict>().map_err(|_| {
            type_error(format!(
                "config must be a dict (a RunnableConfig) or None; got {}",
                validate::shown_with_type(config)
            ))
        })?;
        validate::config_containers(dict)?;
        let max_concurrency = validate::optional_count(
            dict.get_item("max_concurrency")?.as_ref(),
            "config['max_concurrency']",
            "calls in flight at once; None for no bound",
            validate::MAX_COUNT,
        )?
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let recursion_limit = match dict.get_item("recursion_limit")? {
            Some(v) if !v.is_none() => validate::integer(&v, "config['recursion_limit']")?,
            _ => DEFAULT_RECURSION_LIMIT,
        };
        Ok(Self {
            user: Some(dict.clone().unbind()),
            max_concurrency,
            recursion_limit,
            policy: Policy::parse(dict)?,
        })
    }

    /// The caller's dict as given (a new empty dict when none was).
    pub(crate) fn user_dict<'py>(&self, py: Python<'py>) -> Bound<'py, PyDict> {
        match &self.user {
            Some(user) => user.bind(py).clone(),
            None => PyDict::new(py),
        }
    }

    /// This config with `recursion_limit` replaced (for the runnable a Lambda returned).
    pub(crate) fn with_recursion_limit(&self, py: Python<'_>, limit: i64) -> PyResult<Self> {
        let dict = match &self.user {
            Some(user) => user.bind(py).copy()?,
            None => PyDict::new(py),
        };
        dict.set_item("recursion_limit", limit)?;
        Self::parse(Some(dict.as_any()))
    }

    /// `bound` (a runnable's own config, from `with_config`) merged with this call's config,
    /// like langchain_core's `merge_configs`: tags united and sorted, metadata and configurable
    /// merged, callback lists joined; for any other key the call's value wins unless None.
    pub(crate) fn merged_under(&self, bound: &Bound<'_, PyDict>) -> PyResult<Self> {
        let py = bound.py();
        let merged = bound.copy()?;
        if let Some(user) = &self.user {
            for (k, v) in user.bind(py).iter() {
                let key: String = k.extract()?;
                let old = merged.get_item(&k)?;
                let value = match (key.as_str(), old) {
                    ("tags", Some(old)) => {
                        let set = pyo3::types::PySet::new(
                            py,
                            old.try_iter()?
                                .chain(v.try_iter()?)
                                .collect::<PyResult<Vec<_>>>()?,
                        )?;
                        let list = PyList::new(py, set.iter())?;
                        list.sort()?;
                        list.into_any()
                    }
                    ("metadata" | "configurable", Some(old)) => {
                        let d = old.cast::<PyDict>()?.copy()?;
                        d.update(v.cast::<PyDict>()?.as_mapping())?;
                        d.into_any()
                    }
                    ("callbacks", Some(old))
                        if old.is_instance_of::<PyList>() && v.is_instance_of::<PyList>() =>
                    {
                        old.add(&v)?
                    }
                    ("recursion_limit", Some(old))
                        if v.extract::<i64>().ok() == Some(DEFAULT_RECURSION_LIMIT) =>
                    {
                        old
                    }
                    (_, Some(old)) if v.is_none() => old,
                    _ => v,
                };
                merged.set_item(k, value)?;
            }
        }
        Self::parse(Some(merged.as_any()))
    }

    /// The dict handed to a function with a `config` parameter or to a foreign runnable: a
    /// fresh dict made like langchain_core's `ensure_config` for a child run, so that one step's
    /// writes reach no other: defaults; the caller's non-None known keys (containers copied);
    /// unknown keys moved into `configurable`; `configurable`'s "model" and "checkpoint_ns"
    /// shown in `metadata`; and no `run_name`/`run_id`, which name the caller's run only.
    pub(crate) fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        let metadata = PyDict::new(py);
        let configurable = PyDict::new(py);
        dict.set_item("tags", PyList::empty(py))?;
        dict.set_item("metadata", &metadata)?;
        dict.set_item("callbacks", py.None())?;
        dict.set_item("recursion_limit", DEFAULT_RECURSION_LIMIT)?;
        dict.set_item("configurable", &configurable)?;
        let Some(user) = &self.user else {
            return Ok(dict);
        };
        let user = user.bind(py);
        for (k, v) in user.iter() {
            if v.is_none() {
                continue;
            }
            let key: String = k.extract().unwrap_or_default();
            match key.as_str() {
                "run_name" | "run_id" => {}
                "metadata" => metadata.update(v.cast::<PyDict>()?.as_mapping())?,
                "configurable" => configurable.update(v.cast::<PyDict>()?.as_mapping())?,
                "tags" | "callbacks" if v.is_instance_of::<PyList>() => {
                    dict.set_item(k, PyList::new(py, v.cast::<PyList>()?.iter())?)?
                }
                "tags" | "callbacks" | "max_concurrency" | "recursion_limit" => {
                    dict.set_item(k, v)?
                }
                _ => configurable.set_item(k, v)?,
            }
        }
        for key in ["model", "checkpoint_ns"] {
            if let Some(v) = configurable.get_item(key)? {
                if v.is_instance_of::<pyo3::types::PyString>() && !metadata.contains(key)? {
                    metadata.set_item(key, v)?;
                }
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
                    return Err(value_error(format!(
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
