//! The loop-blocking detector: an async step whose code holds the event loop longer than a
//! threshold in one go gets a `BlockingStepWarning` naming it, once per step.
//!
//! "In one go" is one resumption of the step's coroutine: [`Watched`] times each poll of the
//! [`PyAwait`] that drives it, which is one `send`/`throw` into the coroutine (the loop can run
//! nothing else meanwhile). Time spent in watched steps nested inside (a step that awaits another
//! runnable) counts for those, not for the step around them. With the detector off nothing is
//! timed and no Python is called: the config's [`Detect`] is a branch.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;
use pyo3::{intern, PyTypeInfo};

use super::aio;
use super::coro::PyAwait;
use crate::errors::BlockingStepWarning;

/// The default threshold of `warn_blocking=True`.
pub(crate) const DEFAULT_THRESHOLD: Duration = Duration::from_millis(100);

/// Whether a call's async steps are watched (its config's `warn_blocking` key).
pub(crate) enum Detect {
    /// `warn_blocking=False`: never, even in asyncio's debug mode.
    Off,
    /// `warn_blocking=True` or a number of seconds.
    On(Duration),
    /// No key: when the loop the steps run on is in debug mode, with its
    /// `slow_callback_duration` as the threshold (asyncio's own for slow callbacks). Learnt
    /// once per config, at its first async step.
    Auto(AutoThreshold),
}

impl Default for Detect {
    fn default() -> Self {
        Self::Auto(AutoThreshold(AtomicU64::new(AutoThreshold::UNKNOWN)))
    }
}

/// The threshold learnt from the running loop: nanoseconds, `OFF`, or `UNKNOWN` yet.
pub(crate) struct AutoThreshold(AtomicU64);

impl AutoThreshold {
    const UNKNOWN: u64 = u64::MAX;
    const OFF: u64 = 0;
}

impl Detect {
    /// The same setting for a config derived from this one (what it learnt from the loop too).
    pub(crate) fn inherit(&self) -> Self {
        match self {
            Self::Off => Self::Off,
            Self::On(threshold) => Self::On(*threshold),
            Self::Auto(learnt) => Self::Auto(AutoThreshold(AtomicU64::new(
                learnt.0.load(Ordering::Relaxed),
            ))),
        }
    }

    /// The threshold for an async step about to run on the running loop, if it is watched.
    pub(crate) fn threshold(&self, py: Python<'_>) -> Option<Duration> {
        match self {
            Self::Off => None,
            Self::On(threshold) => Some(*threshold),
            Self::Auto(learnt) => {
                let mut ns = learnt.0.load(Ordering::Relaxed);
                if ns == AutoThreshold::UNKNOWN {
                    // Two threads may both ask the loop: they learn the same thing.
                    ns = debug_threshold(py).map_or(AutoThreshold::OFF, |d| {
                        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1).max(1)
                    });
                    learnt.0.store(ns, Ordering::Relaxed);
                }
                (ns != AutoThreshold::OFF).then(|| Duration::from_nanos(ns))
            }
        }
    }
}

/// The running loop's `slow_callback_duration` if it is in debug mode.
fn debug_threshold(py: Python<'_>) -> Option<Duration> {
    let running = aio::running_loop(py).ok().flatten()?;
    // asyncio's loops keep the flag in `_debug` (an attribute read, where calling `get_debug()`
    // costs a Python frame per call); others (uvloop) answer `get_debug()`.
    let debug = match running.getattr(intern!(py, "_debug")) {
        Ok(flag) => flag.is_truthy(),
        Err(_) => running
            .call_method0(intern!(py, "get_debug"))
            .and_then(|d| d.is_truthy()),
    };
    if !debug.unwrap_or(false) {
        return None;
    }
    let seconds: f64 = running
        .getattr(intern!(py, "slow_callback_duration"))
        .and_then(|s| s.extract())
        .unwrap_or(DEFAULT_THRESHOLD.as_secs_f64());
    Duration::try_from_secs_f64(seconds).ok()
}

thread_local! {
    /// Time spent in watched polls nested inside the one running on this thread.
    static NESTED: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// A step's Python awaitable, each resumption timed: its output, and the longest time it held
/// the loop in one go if that passed `threshold`.
pub(crate) struct Watched {
    inner: PyAwait,
    threshold: Duration,
    longest: Option<Duration>,
}

impl Watched {
    pub(crate) fn new(inner: PyAwait, threshold: Duration) -> Self {
        Self {
            inner,
            threshold,
            longest: None,
        }
    }
}

impl Future for Watched {
    type Output = (PyResult<Py<PyAny>>, Option<Duration>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let outer = NESTED.with(|n| n.replace(Duration::ZERO));
        let start = Instant::now();
        let poll = Pin::new(&mut self.inner).poll(cx);
        let total = start.elapsed();
        let nested = NESTED.with(|n| n.replace(outer + total));
        let own = total.saturating_sub(nested);
        if own > self.threshold && self.longest.is_none_or(|l| own > l) {
            self.longest = Some(own);
        }
        poll.map(|output| (output, self.longest))
    }
}

/// Awaits a step's Python awaitable (its code run in `ctx`, if any), timing each resumption
/// when `threshold` is set: if one held the loop longer, `blame` warns, once, naming the step
/// `who` says (its name, and its function for the warning's location). A warning turned into an
/// error (`-W error`) fails the step with it.
pub(crate) async fn await_step(
    awaitable: Py<PyAny>,
    ctx: Option<Py<PyAny>>,
    threshold: Option<Duration>,
    blame: &Blame,
    who: impl FnOnce(Python<'_>) -> (String, Option<Py<PyAny>>),
) -> PyResult<Py<PyAny>> {
    let awaited = PyAwait::in_context(awaitable, ctx);
    let Some(threshold) = threshold else {
        return awaited.await;
    };
    let (output, held) = Watched::new(awaited, threshold).await;
    let Some(held) = held else {
        return output;
    };
    Python::attach(|py| {
        let (name, func) = who(py);
        let func = func.map(|f| f.into_bound(py));
        match blame.warn(py, &name, held, threshold, func.as_ref()) {
            Ok(()) => output,
            Err(warning) => {
                if let Err(err) = output {
                    warning.set_cause(py, Some(err));
                }
                Err(warning)
            }
        }
    })
}

/// A step that may be watched: its name for the warning, told once.
pub(crate) struct Blame {
    warned: AtomicBool,
}

impl Blame {
    pub(crate) fn new() -> Self {
        Self {
            warned: AtomicBool::new(false),
        }
    }

    /// The threshold to watch this step's call with: none once it was warned about.
    pub(crate) fn threshold(&self, py: Python<'_>, detect: &Detect) -> Option<Duration> {
        if self.warned.load(Ordering::Relaxed) {
            return None;
        }
        detect.threshold(py)
    }

    /// Warns, once, that the step `name` held the loop for `held`. `func` (the step's
    /// function, if known) is where the warning points. Raises if warnings are errors.
    pub(crate) fn warn(
        &self,
        py: Python<'_>,
        name: &str,
        held: Duration,
        threshold: Duration,
        func: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if self.warned.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        let message = message(name, held, threshold);
        let warning = BlockingStepWarning::type_object(py).call1((message,))?;
        warning.setattr(intern!(py, "step"), name)?;
        warning.setattr(intern!(py, "seconds"), held.as_secs_f64())?;
        static WARN: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        static WARN_EXPLICIT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        // At the step's function when it has code (its definition), else at the caller.
        let code = func.and_then(|f| Some((f, f.getattr(intern!(py, "__code__")).ok()?)));
        match code {
            Some((func, code)) => {
                let kwargs = PyDict::new(py);
                if let Ok(module) = func.getattr(intern!(py, "__module__")) {
                    kwargs.set_item("module", module)?;
                }
                WARN_EXPLICIT
                    .import(py, "warnings", "warn_explicit")?
                    .call(
                        (
                            &warning,
                            warning.get_type(),
                            code.getattr(intern!(py, "co_filename"))?,
                            code.getattr(intern!(py, "co_firstlineno"))?,
                        ),
                        Some(&kwargs),
                    )?;
            }
            None => {
                WARN.import(py, "warnings", "warn")?
                    .call1((&warning, warning.get_type(), 1))?;
            }
        }
        Ok(())
    }
}

/// The warning's text.
fn message(name: &str, held: Duration, threshold: Duration) -> String {
    format!(
        "step '{name}' held the event loop for {} ms in one go (threshold {} ms): a blocking \
         call inside an async step (time.sleep, requests, file IO) stalls every other task on \
         the loop; await an async equivalent, or make it a sync `def` step, which fastlcel runs \
         on its thread pool",
        held.as_millis(),
        threshold.as_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_step_and_the_times() {
        let text = message(
            "fetch",
            Duration::from_millis(203),
            Duration::from_millis(100),
        );
        assert!(text.starts_with("step 'fetch' held the event loop for 203 ms in one go"));
        assert!(text.contains("(threshold 100 ms)"));
    }
}
