//! Runs of langchain_core's callback system, opened and closed exactly where langchain_core's
//! runnables open theirs: what LangSmith traces, callback handlers, `astream_events`,
//! `astream_log` and listeners see.
//!
//! Every run goes through langchain_core's own callback managers, so every handler works. When
//! nothing is configured (no callbacks in the config, no tracing in the environment or context,
//! no parent runnable's config inherited), a call costs one check and opens nothing. fastlcel
//! imports langchain_core only where tracing may be on without the program having imported it
//! (langsmith's environment variables).

use std::future::Future;
use std::sync::Arc;

use futures_core::Stream;
use futures_util::StreamExt;
use parking_lot::Mutex;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCFunction, PyDict, PyList, PyString};

use super::{Args, Node};
use crate::config::RunConfig;
use crate::exec::context;
use crate::exec::coro::{py_await, StepFuture};
use crate::exec::stream::{
    accumulate, Accumulator, ChunkAsyncIterator, ChunkIterator, Chunks, Shared,
};
use crate::exec::Caller;

/// `sys.modules[name]`, if the program imported it.
fn loaded<'py>(py: Python<'py>, name: &Bound<'py, PyString>) -> Option<Bound<'py, PyAny>> {
    static MODULES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
    let modules = MODULES
        .get_or_try_init(py, || {
            py.import("sys")?
                .getattr("modules")?
                .cast_into::<PyDict>()
                .map(Bound::unbind)
                .map_err(PyErr::from)
        })
        .ok()?;
    modules.bind(py).get_item(name).ok().flatten()
}

/// An attribute of a langchain module, looked up once it is loaded.
fn lc_attr<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &Bound<'py, PyString>,
    attr: &str,
) -> Option<Bound<'py, PyAny>> {
    if let Some(found) = cell.get(py) {
        return Some(found.bind(py).clone());
    }
    let value = loaded(py, module)?.getattr(attr).ok()?;
    Some(cell.get_or_init(py, || value.unbind()).bind(py).clone())
}

/// The config of the runnable this call is made inside (langchain_core's child-config context
/// variable), which `ensure_config` starts from; `None` outside any.
pub(crate) fn inherited_config(py: Python<'_>) -> PyResult<Option<Bound<'_, PyDict>>> {
    static VAR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let Some(var) = lc_attr(
        py,
        &VAR,
        intern!(py, "langchain_core.runnables.config"),
        "var_child_runnable_config",
    ) else {
        return Ok(None);
    };
    let value = context::var_get(&var)?;
    Ok(value
        .and_then(|v| v.cast_into::<PyDict>().ok())
        .filter(|d| !d.is_empty()))
}

/// Whether runs are traced by something outside the config: langchain_core's debug flag,
/// LangSmith tracing (environment, `tracing_context`, `tracing_v2_enabled`, a `@traceable`
/// parent), or a configure hook (`collect_runs`...). langchain_core's `_configure` adds a
/// handler for each of these.
pub(crate) fn ambient(py: Python<'_>) -> PyResult<bool> {
    if debug(py)? {
        return Ok(true);
    }
    if loaded(py, intern!(py, "langchain_core.tracers.context")).is_none()
        && !import_tracing_context(py)
    {
        return Ok(false);
    }
    Ok(hooks(py)? || tracing_v2(py)?)
}

/// Imports langchain_core's tracing context (as langchain_core's first traced call does) when
/// tracing could be on although it was never imported: langsmith was imported (its
/// `tracing_context`, `configure`, a `@traceable` parent), or one of langsmith's environment
/// variables names tracing (read once, as langsmith reads them). Whether that turns tracing on
/// is langchain_core's to say. False when langchain_core is not installed.
fn import_tracing_context(py: Python<'_>) -> bool {
    static ENVIRONMENT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    static MISSING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let wanted = loaded(py, intern!(py, "langsmith")).is_some()
        || *ENVIRONMENT.get_or_init(|| {
            [
                "LANGSMITH_TRACING_V2",
                "LANGCHAIN_TRACING_V2",
                "LANGSMITH_TRACING",
                "LANGCHAIN_TRACING",
            ]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
        });
    if !wanted || MISSING.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    match py.import("langchain_core.tracers.context") {
        Ok(_) => true,
        Err(_) => {
            MISSING.store(true, std::sync::atomic::Ordering::Relaxed);
            false
        }
    }
}

fn debug(py: Python<'_>) -> PyResult<bool> {
    static GET_DEBUG: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    match lc_attr(
        py,
        &GET_DEBUG,
        intern!(py, "langchain_core.globals"),
        "get_debug",
    ) {
        Some(get_debug) => get_debug.call0()?.is_truthy(),
        None => Ok(false),
    }
}

/// `_configure_hooks`: a handler in a context variable, or one made from an environment
/// variable.
fn hooks(py: Python<'_>) -> PyResult<bool> {
    static HOOKS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static ENV_SET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let Some(hooks) = lc_attr(
        py,
        &HOOKS,
        intern!(py, "langchain_core.tracers.context"),
        "_configure_hooks",
    ) else {
        return Ok(false);
    };
    for hook in hooks.try_iter()? {
        let hook = hook?;
        let (var, _inheritable, handler_class, env_var): (
            Bound<'_, PyAny>,
            Bound<'_, PyAny>,
            Bound<'_, PyAny>,
            Bound<'_, PyAny>,
        ) = hook.extract()?;
        if context::var_get(&var)?.is_some_and(|v| !v.is_none()) {
            return Ok(true);
        }
        if !env_var.is_none() && !handler_class.is_none() {
            let env_set = lc_attr(
                py,
                &ENV_SET,
                intern!(py, "langchain_core.utils.env"),
                "env_var_is_set",
            );
            if let Some(env_set) = env_set {
                if env_set.call1((env_var,))?.is_truthy()? {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// langchain_core's `_tracing_v2_is_enabled`, unless [`langsmith_quiet`] shows it is off.
fn tracing_v2(py: Python<'_>) -> PyResult<bool> {
    static ENABLED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    if langsmith_quiet(py)? {
        return Ok(false);
    }
    match lc_attr(
        py,
        &ENABLED,
        intern!(py, "langchain_core.tracers.context"),
        "_tracing_v2_is_enabled",
    ) {
        Some(enabled) => enabled.call0()?.is_truthy(),
        None => Ok(false),
    }
}

/// What langsmith's `tracing_is_enabled` reads, in its order: langchain_core's
/// `tracing_v2_enabled` variable, langsmith's `tracing_context(enabled=...)` variable, the
/// current run tree (a `@traceable` parent), the global fallback, and its environment lookup
/// (cached by langsmith).
struct LangsmithInputs {
    callback_var: Py<PyAny>,
    enabled_var: Py<PyAny>,
    parent_var: Py<PyAny>,
    context: Py<PyAny>,
    get_env_var: Py<PyAny>,
}

/// Whether every input of langsmith's `tracing_is_enabled` is at its default, so that it
/// would answer False. Asking it builds langsmith's whole tracing context (about 2.5 µs, paid
/// by every outermost call once langsmith is imported); reading its inputs costs a tenth of
/// that. Anything set, or langsmith's internals not as expected, and langchain_core decides.
fn langsmith_quiet(py: Python<'_>) -> PyResult<bool> {
    static INPUTS: PyOnceLock<Option<LangsmithInputs>> = PyOnceLock::new();
    let inputs = INPUTS.get_or_init(py, || {
        let found = || -> PyResult<LangsmithInputs> {
            let lc = py.import("langchain_core.tracers.context")?;
            let context = py.import("langsmith._internal._context")?;
            let utils = py.import("langsmith.utils")?;
            Ok(LangsmithInputs {
                callback_var: lc.getattr("tracing_v2_callback_var")?.unbind(),
                enabled_var: context.getattr("_TRACING_ENABLED")?.unbind(),
                parent_var: context.getattr("_PARENT_RUN_TREE_REF")?.unbind(),
                get_env_var: utils.getattr("get_env_var")?.unbind(),
                context: context.into_any().unbind(),
            })
        };
        found().ok()
    });
    let Some(inputs) = inputs else {
        return Ok(false);
    };
    for var in [
        &inputs.callback_var,
        &inputs.enabled_var,
        &inputs.parent_var,
    ] {
        if context::var_get(var.bind(py))?.is_some_and(|v| !v.is_none()) {
            return Ok(false);
        }
    }
    let context = inputs.context.bind(py);
    if !context
        .getattr(intern!(py, "_GLOBAL_TRACING_ENABLED"))?
        .is_none()
    {
        return Ok(false);
    }
    let get_env_var = inputs.get_env_var.bind(py);
    for name in [intern!(py, "TRACING_V2"), intern!(py, "TRACING")] {
        if !get_env_var.call1((name,))?.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether `callbacks` (a config's) has any handler: a non-empty list, or a callback manager
/// with handlers.
pub(crate) fn has_handlers(callbacks: &Bound<'_, PyAny>) -> PyResult<bool> {
    if callbacks.is_none() {
        return Ok(false);
    }
    if let Ok(list) = callbacks.cast::<PyList>() {
        return Ok(!list.is_empty());
    }
    let py = callbacks.py();
    match callbacks.getattr(intern!(py, "handlers")) {
        Ok(handlers) => Ok(handlers.len()? > 0),
        Err(_) => Ok(true),
    }
}

/// One open run: langchain_core's run manager for it.
pub(crate) struct Run {
    manager: Py<PyAny>,
    /// Its manager's methods are coroutines (an awaiting caller's).
    mode: Caller,
}

/// A callback manager's coroutine as a task of the running loop.
fn as_task(coro: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    static ENSURE_FUTURE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = coro.py();
    ENSURE_FUTURE
        .import(py, "asyncio", "ensure_future")?
        .call1((coro,))
        .map(Bound::unbind)
}

/// Awaits `task` (a callback manager's coroutine) to its end, through a shield: a cancellation
/// of the awaiting call is held back until the handlers have been told, so that no handler sees
/// a run start without its end. Returns the task's outcome and the cancellation held back.
async fn complete(task: Py<PyAny>) -> (PyResult<Py<PyAny>>, Option<PyErr>) {
    static SHIELD: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let mut cancelled = None;
    loop {
        let shielded = Python::attach(|py| {
            SHIELD
                .import(py, "asyncio", "shield")?
                .call1((&task,))
                .map(Bound::unbind)
        });
        let outcome = match shielded {
            Ok(shielded) => py_await(shielded).await,
            Err(err) => return (Err(err), cancelled),
        };
        match outcome {
            Err(err)
                if Python::attach(|py| {
                    err.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>(py)
                }) =>
            {
                cancelled = Some(err);
                // The task may be done already (its shield not yet told): then its own outcome.
                let finished = Python::attach(|py| -> PyResult<Option<Py<PyAny>>> {
                    let task = task.bind(py);
                    if !task.call_method0(intern!(py, "done"))?.is_truthy()? {
                        return Ok(None);
                    }
                    task.call_method0(intern!(py, "result"))
                        .map(|result| Some(result.unbind()))
                });
                match finished {
                    Ok(None) => {}
                    Ok(Some(result)) => return (Ok(result), cancelled),
                    Err(err) => return (Err(err), cancelled),
                }
            }
            outcome => return (outcome, cancelled),
        }
    }
}

/// A run being opened on a loop. Dropped so (the call was dropped while its handlers were told
/// of the start), the run is ended as cancelled once the start is through.
struct Opening(Option<Py<PyAny>>);

impl Opening {
    fn opened(mut self) {
        self.0 = None;
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        let Some(task) = self.0.take() else {
            return;
        };
        Python::attach(|py| {
            let end = PyCFunction::new_closure(py, None, None, |args, _kwargs| -> PyResult<()> {
                let task = args.get_item(0)?;
                if task
                    .call_method0(intern!(args.py(), "cancelled"))?
                    .is_truthy()?
                    || !task
                        .call_method0(intern!(args.py(), "exception"))?
                        .is_none()
                {
                    return Ok(());
                }
                let manager = task.call_method0(intern!(args.py(), "result"))?;
                Run {
                    manager: manager.unbind(),
                    mode: Caller::Loop,
                }
                .cancelled_now(args.py())
            });
            let added = end.and_then(|end| {
                task.bind(py)
                    .call_method1(intern!(py, "add_done_callback"), (end,))
                    .map(drop)
            });
            if let Err(err) = added {
                err.write_unraisable(py, None);
            }
        });
    }
}

/// How a run records its input.
pub(crate) enum RunInput {
    /// Given at the start (an invoke).
    Now(Py<PyAny>),
    /// Known at the end, when the stream of input chunks is over (a transform); `announced`:
    /// handlers are told so at the start (see [`Node::defers_inputs`]).
    Deferred { announced: bool },
}

impl Run {
    /// Opens the run of a call of `name` under `config`, the caller's way (the config's
    /// `run_name` and `run_id` name it instead, as in langchain_core).
    pub(crate) async fn open(
        config: &RunConfig,
        input: RunInput,
        name: String,
        mode: Caller,
    ) -> PyResult<Run> {
        static SYNC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        static ASYNC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let started = Python::attach(|py| -> PyResult<Py<PyAny>> {
            let cell = match mode {
                Caller::Thread => &SYNC,
                Caller::Loop => &ASYNC,
            };
            let manager_for = cell.get_or_try_init(py, || {
                let name = match mode {
                    Caller::Thread => "get_callback_manager_for_config",
                    Caller::Loop => "get_async_callback_manager_for_config",
                };
                // Imported here if need be: tracing may be on by environment alone.
                let module = py.import("langchain_core.runnables.config")?;
                module.getattr(name).map(Bound::unbind)
            })?;
            let manager_for = manager_for.bind(py);
            let config_dict = config.to_dict(py)?;
            let manager = manager_for.call1((&config_dict,))?;
            let kwargs = PyDict::new(py);
            let name = config
                .get(py, "run_name")?
                .filter(|n| !n.is_none())
                .unwrap_or_else(|| PyString::new(py, &name).into_any());
            kwargs.set_item(intern!(py, "name"), name)?;
            kwargs.set_item(intern!(py, "run_id"), config.get(py, "run_id")?)?;
            let inputs = match input {
                RunInput::Now(input) => input.into_bound(py),
                RunInput::Deferred { announced } => {
                    if announced {
                        kwargs.set_item(intern!(py, "defers_inputs"), true)?;
                    }
                    let inputs = PyDict::new(py);
                    inputs.set_item("input", "")?;
                    inputs.into_any()
                }
            };
            let started = manager.call_method(
                intern!(py, "on_chain_start"),
                (py.None(), inputs),
                Some(&kwargs),
            )?;
            Ok(started.unbind())
        })?;
        let manager = match mode {
            Caller::Thread => started,
            Caller::Loop => {
                let task = Python::attach(|py| as_task(started.bind(py)))?;
                let opening = Opening(Some(Python::attach(|py| task.clone_ref(py))));
                let (started, cancelled) = complete(task).await;
                opening.opened();
                let run = Run {
                    manager: started?,
                    mode,
                };
                if let Some(cancelled) = cancelled {
                    // Cancelled while its start was reported: the run ends as cancelled.
                    Python::attach(|py| run.cancelled_now(py))?;
                    return Err(cancelled);
                }
                return Ok(run);
            }
        };
        Ok(Run { manager, mode })
    }

    /// The callbacks of a child step's config: `run_manager.get_child(tag)`.
    pub(crate) fn child_callbacks<'py>(
        &self,
        py: Python<'py>,
        tag: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.manager
            .bind(py)
            .call_method1(intern!(py, "get_child"), (tag,))
    }

    /// The run manager itself (for a function with a `run_manager` parameter).
    pub(crate) fn manager<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        self.manager.bind(py)
    }

    /// Ends the run with `output` (and, for a transform, its whole input).
    pub(crate) async fn end(&self, output: &Py<PyAny>, inputs: Option<Py<PyAny>>) -> PyResult<()> {
        let ended = Python::attach(|py| {
            let kwargs = PyDict::new(py);
            if let Some(inputs) = inputs {
                kwargs.set_item(intern!(py, "inputs"), inputs)?;
            }
            self.manager
                .bind(py)
                .call_method(intern!(py, "on_chain_end"), (output,), Some(&kwargs))
                .map(Bound::unbind)
        })?;
        self.finish(ended).await
    }

    /// Ends the run with `err` (and, for a transform, its input so far).
    ///
    /// A cancelled call on a loop ends its run at once through the sync manager: its task (or
    /// the loop shutting down) may cancel any await that follows, which would leave the run open.
    pub(crate) async fn error(&self, err: &PyErr, inputs: Option<Py<PyAny>>) -> PyResult<()> {
        if self.mode == Caller::Loop {
            let now = Python::attach(|py| {
                err.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>(py)
                    .then(|| self.error_now(py, err, inputs.as_ref().map(|i| i.clone_ref(py))))
            });
            if let Some(ended) = now {
                return ended;
            }
        }
        let ended = Python::attach(|py| {
            let kwargs = PyDict::new(py);
            if let Some(inputs) = inputs {
                kwargs.set_item(intern!(py, "inputs"), inputs)?;
            }
            // As caught in Python: the exception carries its traceback (tracers record it).
            let exc = err.value(py);
            if let Some(traceback) = err.traceback(py) {
                exc.setattr(intern!(py, "__traceback__"), traceback)?;
            }
            self.manager
                .bind(py)
                .call_method(intern!(py, "on_chain_error"), (exc,), Some(&kwargs))
                .map(Bound::unbind)
        })?;
        self.finish(ended).await
    }

    async fn finish(&self, returned: Py<PyAny>) -> PyResult<()> {
        if self.mode == Caller::Loop {
            let task = Python::attach(|py| as_task(returned.bind(py)))?;
            let (ended, cancelled) = complete(task).await;
            ended?;
            if let Some(cancelled) = cancelled {
                return Err(cancelled);
            }
        }
        Ok(())
    }

    /// Ends the run with `output` without waiting (a stream its consumer dropped): through the
    /// sync twin of an async run manager.
    fn end_now(
        &self,
        py: Python<'_>,
        output: Py<PyAny>,
        inputs: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let kwargs = PyDict::new(py);
        if let Some(inputs) = inputs {
            kwargs.set_item(intern!(py, "inputs"), inputs)?;
        }
        self.sync_manager(py)?.call_method(
            intern!(py, "on_chain_end"),
            (output,),
            Some(&kwargs),
        )?;
        Ok(())
    }

    /// Ends the run with `err` without waiting (a stream its consumer dropped, whose chunks could
    /// not be merged).
    fn error_now(&self, py: Python<'_>, err: &PyErr, inputs: Option<Py<PyAny>>) -> PyResult<()> {
        let kwargs = PyDict::new(py);
        if let Some(inputs) = inputs {
            kwargs.set_item(intern!(py, "inputs"), inputs)?;
        }
        let exc = err.value(py);
        if let Some(traceback) = err.traceback(py) {
            exc.setattr(intern!(py, "__traceback__"), traceback)?;
        }
        self.sync_manager(py)?
            .call_method(intern!(py, "on_chain_error"), (exc,), Some(&kwargs))?;
        Ok(())
    }

    /// Ends the run of a call dropped before it finished (a fail-fast sibling, a cancelled
    /// task) with `asyncio.CancelledError`, as langchain_core's runnables report a cancelled
    /// call, without waiting.
    fn cancelled_now(&self, py: Python<'_>) -> PyResult<()> {
        let cancelled = pyo3::exceptions::asyncio::CancelledError::new_err(());
        self.sync_manager(py)?
            .call_method1(intern!(py, "on_chain_error"), (cancelled.value(py),))?;
        Ok(())
    }

    /// The run's manager, or the sync twin of an async one.
    fn sync_manager<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.mode {
            Caller::Thread => Ok(self.manager.bind(py).clone()),
            Caller::Loop => self.manager.bind(py).call_method0(intern!(py, "get_sync")),
        }
    }

    /// A handler of this run that taps a transform's output (`astream_log`, `astream_events`):
    /// langchain_core's `_StreamingCallbackHandler`.
    pub(crate) fn streaming_handler<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        static STREAMING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let Some(class) = lc_attr(
            py,
            &STREAMING,
            intern!(py, "langchain_core.tracers._streaming"),
            "_StreamingCallbackHandler",
        ) else {
            return Ok(None);
        };
        for handler in self
            .manager
            .bind(py)
            .getattr(intern!(py, "handlers"))?
            .try_iter()?
        {
            let handler = handler?;
            if handler.is_instance(&class)? {
                return Ok(Some(handler));
            }
        }
        Ok(None)
    }

    pub(crate) fn run_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.manager.bind(py).getattr(intern!(py, "run_id"))
    }
}

/// The context a step's own code runs in when its call is traced (langchain_core's
/// `set_config_context(child_config)`): a copy of the current one with the child config in
/// langchain_core's context variable (so that config-less calls inside nest under this run) and
/// the LangSmith parent run set. `None` when the call is not traced.
pub(crate) fn user_context<'py>(
    py: Python<'py>,
    child: &Args,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    static SET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    if !child.config.traced {
        return Ok(None);
    }
    let Some(set) = lc_attr(
        py,
        &SET,
        intern!(py, "langchain_core.runnables.config"),
        "_set_config_context",
    ) else {
        return Ok(None);
    };
    let ctx = crate::exec::context::Context::capture(py)?;
    let ctx = ctx.object(py).clone();
    let config = child.config.to_dict(py)?;
    context::enter(&ctx, || set.call1((config,)).map(drop))?;
    Ok(Some(ctx))
}

/// `fastlcel._core` functions that call langchain_core's implementation with a fastlcel
/// runnable as `self` (the observation methods: `astream_events`, `astream_log`, listeners).
pub(crate) fn langchain_method<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let base = py.import("langchain_core.runnables.base").map_err(|err| {
        let new = pyo3::exceptions::PyImportError::new_err(format!(
            "{name} needs langchain_core (pip install langchain-core)"
        ));
        new.set_cause(py, Some(err));
        new
    })?;
    base.getattr("Runnable")?.getattr(name)
}

/// How a streamed run adds up the chunks it records as its output.
enum OutputSum {
    /// langchain_core's `_ChunkAccumulator` (a transform's).
    Accumulated(Accumulator),
    /// `+` while it works, then None (RunnableBranch's and RunnableWithFallbacks' `stream`).
    WhileAddable {
        value: Option<Py<PyAny>>,
        addable: bool,
    },
}

/// The run of a stream, open until its stream ends; one dropped earlier (its consumer stopped
/// reading) is ended with the output so far, as langchain_core's generator does on close.
struct StreamRun {
    run: Arc<Run>,
    output: OutputSum,
    /// The input chunks added up, for a transform (its run's inputs are deferred).
    inputs: Option<Arc<Mutex<Accumulator>>>,
    ended: bool,
}

impl StreamRun {
    fn chunk(&mut self, py: Python<'_>, chunk: &Py<PyAny>) -> PyResult<()> {
        match &mut self.output {
            OutputSum::Accumulated(acc) => acc.add(py, chunk.clone_ref(py)),
            OutputSum::WhileAddable { value, addable } => {
                if *addable {
                    *value = match value.take() {
                        None => Some(chunk.clone_ref(py)),
                        Some(total) => match total.bind(py).add(chunk.bind(py)) {
                            Ok(sum) => Some(sum.unbind()),
                            Err(_) => {
                                *addable = false;
                                None
                            }
                        },
                    };
                }
                Ok(())
            }
        }
    }

    fn output(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let value = match &mut self.output {
            OutputSum::Accumulated(acc) => acc.value_ref(py)?,
            OutputSum::WhileAddable { value, .. } => value.as_ref().map(|v| v.clone_ref(py)),
        };
        Ok(value.unwrap_or_else(|| py.None()))
    }

    fn inputs(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.inputs {
            Some(inputs) => Ok(Some(
                inputs.lock().value_ref(py)?.unwrap_or_else(|| py.None()),
            )),
            None => Ok(None),
        }
    }

    /// The inputs to report with an error: what could be merged.
    fn inputs_for_error(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inputs.as_ref().map(|inputs| {
            inputs
                .lock()
                .value_for_error(py)
                .unwrap_or_else(|| py.None())
        })
    }

    /// Ends the run: with the stream's error, or its output. Reading the inputs and output
    /// merges their chunks, which can raise: the run then ends with that error, returned.
    async fn end(mut self, error: Option<&PyErr>) -> PyResult<()> {
        self.ended = true;
        let merged = Python::attach(|py| -> PyResult<_> {
            let inputs = self.inputs(py)?;
            Ok((self.output(py)?, inputs))
        });
        match (error, merged) {
            (None, Ok((output, inputs))) => self.run.end(&output, inputs).await,
            (Some(err), _) => {
                let inputs = Python::attach(|py| self.inputs_for_error(py));
                self.run.error(err, inputs).await
            }
            (None, Err(merge_err)) => {
                let inputs = Python::attach(|py| self.inputs_for_error(py));
                self.run.error(&merge_err, inputs).await?;
                Err(merge_err)
            }
        }
    }
}

impl Drop for StreamRun {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        Python::attach(|py| {
            let merged = self
                .inputs(py)
                .and_then(|inputs| Ok((self.output(py)?, inputs)));
            let ended = match merged {
                Ok((output, inputs)) => self.run.end_now(py, output, inputs),
                Err(err) => {
                    let inputs = self.inputs_for_error(py);
                    self.run.error_now(py, &err, inputs)
                }
            };
            if let Err(err) = ended {
                err.write_unraisable(py, None);
            }
        });
    }
}

/// The name of a traced call's run: the runnable's (see `Step::name`), else its node's.
fn run_name(py: Python<'_>, node: &Arc<dyn Node>, args: &Args) -> String {
    args.name.clone().unwrap_or_else(|| node.name(py))
}

/// A node's call, in its run if the call is traced (langchain_core's `_call_with_config`).
pub(crate) fn run(node: Arc<dyn Node>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
    if !args.config.traced || !node.opens_run() {
        return node.run(input, args, mode);
    }
    Box::pin(async move {
        let (name, given) = Python::attach(|py| (run_name(py, &node, &args), input.clone_ref(py)));
        let run = Arc::new(Run::open(&args.config, RunInput::Now(given), name, mode).await?);
        let open = Unfinished(Some(Arc::clone(&run)));
        let result = node.run(input, args.within(&run), mode).await;
        open.finished();
        match &result {
            Ok(output) => run.end(output, None).await?,
            Err(err) => run.error(err, None).await?,
        }
        result
    })
}

/// A run whose call has not finished: dropped so (the call's future dropped), it ends the run
/// as cancelled.
struct Unfinished(Option<Arc<Run>>);

impl Unfinished {
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(run) = self.0.take() {
            Python::attach(|py| {
                if let Err(err) = run.cancelled_now(py) {
                    err.write_unraisable(py, None);
                }
            });
        }
    }
}

/// The chunks of a node that transforms a stream, as langchain_core's
/// `_transform_stream_with_config` makes them: the first input chunk is read before the node
/// starts (so that upstream steps start first); once its output ends, the rest of its input is
/// read, so that an error upstream is raised even if it stopped reading early. A traced call
/// runs in a run opened after the first input chunk, whose inputs are recorded at its end.
pub(crate) fn transform(node: Arc<dyn Node>, input: Chunks, args: Args, mode: Caller) -> Chunks {
    let traced = args.config.traced && node.stream_opens_run();
    let waits = input.waits;
    let source = Shared::new(input.stream);
    let peeked: Arc<Mutex<Option<Py<PyAny>>>> = Arc::new(Mutex::new(None));
    // Every input chunk, for the run's inputs (langchain's `final_input`).
    let inputs = Arc::new(Mutex::new(Accumulator::new(true)));
    let record = {
        let inputs = Arc::clone(&inputs);
        move |chunk: &Py<PyAny>| -> PyResult<()> {
            if traced {
                Python::attach(|py| inputs.lock().add(py, chunk.clone_ref(py)))?;
            }
            Ok(())
        }
    };
    let view = {
        let source = source.clone();
        let peeked = Arc::clone(&peeked);
        let record = record.clone();
        async_stream::stream! {
            let first = peeked.lock().take();
            if let Some(first) = first {
                yield Ok(first);
            }
            while let Some(item) = source.next().await {
                let item = item.and_then(|chunk| record(&chunk).map(|()| chunk));
                let end = item.is_err();
                yield item;
                if end {
                    break;
                }
            }
        }
    };
    let view = Chunks::new(Box::pin(view), waits);
    let stream = async_stream::stream! {
        match source.next().await {
            Some(Ok(first)) => {
                if let Err(err) = record(&first) {
                    yield Err(err);
                    return;
                }
                *peeked.lock() = Some(first);
            }
            Some(Err(err)) => {
                yield Err(err);
                return;
            }
            None => {}
        }
        let run = if traced {
            let name = Python::attach(|py| run_name(py, &node, &args));
            let input = RunInput::Deferred {
                announced: node.defers_inputs(),
            };
            match Run::open(&args.config, input, name, mode).await {
                Ok(run) => Some(StreamRun {
                    run: Arc::new(run),
                    output: OutputSum::Accumulated(Accumulator::new(true)),
                    inputs: Some(Arc::clone(&inputs)),
                    ended: false,
                }),
                Err(err) => {
                    yield Err(err);
                    return;
                }
            }
        } else {
            None
        };
        let inner = match &run {
            Some(stream_run) => args.within(&stream_run.run),
            None => args,
        };
        let mut out = node.transform(view, inner, mode);
        if let Some(stream_run) = &run {
            out = match tap(&stream_run.run, out, mode) {
                Ok(out) => out,
                Err(err) => Chunks::failed(err, mode),
            };
        }
        let rest_of_input = async move {
            while let Some(item) = source.next().await {
                if let Err(err) = item.and_then(|chunk| record(&chunk)) {
                    return Some(err);
                }
            }
            None
        };
        for await item in recorded(run, out, rest_of_input) {
            yield item;
        }
    };
    Chunks::made_by(Box::pin(stream), mode)
}

/// The chunks of a node that needs its whole input (langchain_core's default `transform`: the
/// input chunks added up, then its `stream`), in a run opened with that input if traced.
pub(crate) fn whole(node: Arc<dyn Node>, input: Chunks, args: Args, mode: Caller) -> Chunks {
    let traced = args.config.traced && node.stream_opens_run();
    let stream = async_stream::stream! {
        let value = match accumulate(input).await {
            Ok(Some(value)) => value,
            Ok(None) => return,
            Err(err) => {
                yield Err(err);
                return;
            }
        };
        let run = if traced {
            let (name, given) = Python::attach(|py| (run_name(py, &node, &args), value.clone_ref(py)));
            match Run::open(&args.config, RunInput::Now(given), name, mode).await {
                Ok(run) => Some(StreamRun {
                    run: Arc::new(run),
                    output: OutputSum::WhileAddable {
                        value: None,
                        addable: true,
                    },
                    inputs: None,
                    ended: false,
                }),
                Err(err) => {
                    yield Err(err);
                    return;
                }
            }
        } else {
            None
        };
        let inner = match &run {
            Some(stream_run) => args.within(&stream_run.run),
            None => args,
        };
        let out = node.stream_value(value, inner, mode);
        for await item in recorded(run, out, std::future::ready(None)) {
            yield item;
        }
    };
    Chunks::made_by(Box::pin(stream), mode)
}

/// The chunks of `out`, a streamed call's output, each added to `run`'s output if traced; once
/// `out` ends, `after` (a transform reads the rest of its input), then the run ends. The first
/// error (of `out`, of recording a chunk, of `after`, of ending the run) comes last and ends
/// the stream.
fn recorded(
    mut run: Option<StreamRun>,
    mut out: Chunks,
    after: impl Future<Output = Option<PyErr>> + Send + 'static,
) -> impl Stream<Item = PyResult<Py<PyAny>>> + Send + 'static {
    async_stream::stream! {
        let mut failed: Option<PyErr> = None;
        while let Some(item) = out.stream.next().await {
            match item {
                Ok(chunk) => {
                    if let Some(stream_run) = &mut run {
                        if let Err(err) = Python::attach(|py| stream_run.chunk(py, &chunk)) {
                            failed = Some(err);
                            break;
                        }
                    }
                    yield Ok(chunk);
                }
                Err(err) => {
                    failed = Some(err);
                    break;
                }
            }
        }
        drop(out);
        if failed.is_none() {
            failed = after.await;
        }
        if let Some(stream_run) = run {
            if let Err(handler_err) = stream_run.end(failed.as_ref()).await {
                failed = Some(handler_err);
            }
        }
        if let Some(err) = failed {
            yield Err(err);
        }
    }
}

/// `out` through the run's streaming handler, if it has one (`tap_output_iter`/`aiter`: how
/// `astream_log` and `astream_events` see a transform's chunks).
fn tap(run: &Run, out: Chunks, mode: Caller) -> PyResult<Chunks> {
    Python::attach(|py| {
        let Some(handler) = run.streaming_handler(py)? else {
            return Ok(out);
        };
        let run_id = run.run_id(py)?;
        match mode {
            Caller::Thread => {
                let chunks = Py::new(py, ChunkIterator::bare(out))?;
                let tapped =
                    handler.call_method1(intern!(py, "tap_output_iter"), (run_id, chunks))?;
                Chunks::from_iterable(&tapped)
            }
            Caller::Loop => {
                let chunks = Py::new(py, ChunkAsyncIterator::bare(out))?;
                let tapped =
                    handler.call_method1(intern!(py, "tap_output_aiter"), (run_id, chunks))?;
                Ok(Chunks::from_aiter(tapped.unbind()))
            }
        }
    })
}
