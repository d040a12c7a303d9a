//! `RunConfig`: the Python config dict (langchain's RunnableConfig) parsed once per call.

use std::sync::Arc;

use pyo3::prelude::*;

use crate::errors::{type_error, value_error};
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::exec::blocking::Detect;
use crate::exec::progress::Claim;
use crate::limit::{ConcurrencyLimit, Limiter, RateLimiter};
use crate::runnable::trace;
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
    /// Calls under this config open callback runs (see `runnable/trace.rs`): its callbacks have
    /// a handler, or tracing was on when the outermost call began.
    pub(crate) traced: bool,
    /// `config["progress"]`: a bar over the call's first fan-out (see `exec::progress`), shared
    /// by the configs derived from this one so that no fan-out inside shows another.
    pub(crate) progress: Option<Arc<Claim>>,
    /// `config["warn_blocking"]`: whether async steps are watched for holding the event loop
    /// (see `exec::blocking`).
    pub(crate) blocking: Detect,
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
                traced: false,
                progress: None,
                blocking: Detect::default(),
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
        let traced = match dict.get_item("callbacks")? {
            Some(callbacks) => trace::has_handlers(&callbacks)?,
            None => false,
        };
        Ok(Self {
            user: Some(dict.clone().unbind()),
            max_concurrency,
            recursion_limit,
            policy: Policy::parse(dict)?,
            traced,
            progress: validate::progress(dict.get_item("progress")?.as_ref())?
                .map(|spec| Arc::new(Claim::new(spec))),
            blocking: validate::warn_blocking(dict.get_item("warn_blocking")?.as_ref())?,
        })
    }

    /// A config derived from this one for the same call (a child's, a binding's) keeps its
    /// `progress` claim and what its `warn_blocking` learnt.
    fn derived(&self, mut child: Self) -> Self {
        child.traced = child.traced || self.traced;
        child.progress = self.progress.clone();
        child.blocking = self.blocking.inherit();
        child
    }

    /// The config of an outermost call, as langchain_core's `ensure_config` makes it: the
    /// config of the runnable this call is made inside (if any), updated with `config`'s keys;
    /// traced if anything outside the config traces it.
    pub(crate) fn for_call(py: Python<'_>, config: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut parsed = match trace::inherited_config(py)? {
            None => Self::parse(config)?,
            Some(inherited) => {
                let merged = PyDict::new(py);
                for (k, v) in inherited.iter() {
                    // A progress bar is the outer call's own.
                    if !v.is_none() && !k.eq("progress")? {
                        merged.set_item(k, copied(&v)?)?;
                    }
                }
                if let Some(config) = config.filter(|c| !c.is_none()) {
                    Self::parse(Some(config))?; // validates it first
                    for (k, v) in config.cast::<PyDict>()?.iter() {
                        if !v.is_none() {
                            merged.set_item(k, v)?;
                        }
                    }
                }
                Self::parse(Some(merged.as_any()))?
            }
        };
        parsed.traced = parsed.traced || trace::ambient(py)?;
        Ok(parsed)
    }

    /// `config[key]` as given.
    pub(crate) fn get<'py>(
        &self,
        py: Python<'py>,
        key: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        match &self.user {
            Some(user) => user.bind(py).get_item(key),
            None => Ok(None),
        }
    }

    /// This config for a child step of a run (langchain_core's `patch_config(config,
    /// callbacks=...)`): `callbacks` replaced, `run_name` and `run_id` (which name the parent's
    /// run) dropped.
    pub(crate) fn with_callbacks(&self, callbacks: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = callbacks.py();
        let dict = match &self.user {
            Some(user) => user.bind(py).copy()?,
            None => PyDict::new(py),
        };
        dict.set_item("callbacks", callbacks)?;
        for key in ["run_name", "run_id"] {
            if dict.contains(key)? {
                dict.del_item(key)?;
            }
        }
        Ok(self.derived(Self::parse(Some(dict.as_any()))?))
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
        Ok(self.derived(Self::parse(Some(dict.as_any()))?))
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
                    ("callbacks", Some(old)) if !v.is_none() && !old.is_none() => {
                        merge_callbacks(&old, &v)?
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
        // A binding's own `progress` is not shown (the call's is); its own `warn_blocking`
        // applies to what it binds.
        let mut parsed = Self::parse(Some(merged.as_any()))?;
        let blocking = std::mem::take(&mut parsed.blocking);
        let mut merged = self.derived(parsed);
        if bound
            .get_item("warn_blocking")?
            .is_some_and(|v| !v.is_none())
        {
            merged.blocking = blocking;
        }
        Ok(merged)
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

/// langchain_core's `merge_configs` of two `callbacks` values (each a list of handlers or a
/// callback manager): lists are joined; a list's handlers are added to a copy of the manager;
/// two managers are merged.
fn merge_callbacks<'py>(
    base: &Bound<'py, PyAny>,
    these: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = base.py();
    let add_all = |manager: &Bound<'py, PyAny>, handlers: &Bound<'py, PyAny>| {
        let copy = manager.call_method0("copy")?;
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("inherit", true)?;
        for handler in handlers.try_iter()? {
            copy.call_method("add_handler", (handler?,), Some(&kwargs))?;
        }
        Ok::<_, PyErr>(copy)
    };
    match (
        base.is_instance_of::<PyList>(),
        these.is_instance_of::<PyList>(),
    ) {
        (true, true) => base.add(these),
        (false, true) => add_all(base, these),
        (true, false) => add_all(these, base),
        (false, false) => base.call_method1("merge", (these,)),
    }
}

/// `config["run_id"]` if `config` is a dict that sets one.
fn run_id_of<'py>(config: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    match config.cast::<PyDict>() {
        Ok(dict) => Ok(dict.get_item("run_id")?.filter(|v| !v.is_none())),
        Err(_) => Ok(None),
    }
}

/// A config value as `ensure_config` copies it: lists and dicts are copied.
fn copied<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(list) = value.cast::<PyList>() {
        return Ok(PyList::new(value.py(), list.iter())?.into_any());
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        return Ok(dict.copy()?.into_any());
    }
    Ok(value.clone())
}

/// The configs of a batch: one shared by every input, or one per input.
pub(crate) enum BatchConfig {
    Shared(Arc<RunConfig>),
    PerInput(Vec<Arc<RunConfig>>),
}

impl BatchConfig {
    /// The configs of a batch of `n` inputs, each as an outermost call's (see
    /// [`RunConfig::for_call`]). A `run_id` in a shared config names the first input's run only,
    /// with langchain_core's warning.
    pub(crate) fn parse(
        py: Python<'_>,
        config: Option<&Bound<'_, PyAny>>,
        n: usize,
    ) -> PyResult<Self> {
        match config {
            Some(c) if c.is_instance_of::<PyList>() || c.is_instance_of::<PyTuple>() => {
                let configs = c
                    .try_iter()?
                    .map(|item| RunConfig::for_call(py, Some(&item?)).map(Arc::new))
                    .collect::<PyResult<Vec<_>>>()?;
                if configs.len() != n {
                    return Err(value_error(format!(
                        "got {} configs for {n} inputs; pass one config, or one per input",
                        configs.len()
                    )));
                }
                Ok(Self::PerInput(configs))
            }
            Some(c) if n > 1 && run_id_of(c)?.is_some() => {
                PyErr::warn(
                    py,
                    &py.get_type::<pyo3::exceptions::PyRuntimeWarning>(),
                    c"Provided run_id be used only for the first element of the batch.",
                    3,
                )?;
                let first = Arc::new(RunConfig::for_call(py, Some(c))?);
                let rest = c.cast::<PyDict>()?.copy()?;
                rest.del_item("run_id")?;
                let rest = Arc::new(RunConfig::for_call(py, Some(rest.as_any()))?);
                let configs = std::iter::once(first)
                    .chain((1..n).map(|_| Arc::clone(&rest)))
                    .collect();
                Ok(Self::PerInput(configs))
            }
            other => Ok(Self::Shared(Arc::new(RunConfig::for_call(py, other)?))),
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

impl RunConfig {
    /// The `progress` bar of this call, to its first fan-out only.
    pub(crate) fn claim_progress(&self) -> Option<Arc<Claim>> {
        self.progress.as_ref().filter(|c| c.take()).cloned()
    }
}

impl BatchConfig {
    /// The `progress` bar of a batch: every config's claim is taken (no fan-out inside an item
    /// shows one), the first one's shown.
    pub(crate) fn claim_progress(&self) -> Option<Arc<Claim>> {
        let configs: &[Arc<RunConfig>] = match self {
            Self::Shared(c) => std::slice::from_ref(c),
            Self::PerInput(v) => v,
        };
        configs
            .iter()
            .filter_map(|c| c.claim_progress())
            .reduce(|first, _| first)
    }
}

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".to_owned())
}
