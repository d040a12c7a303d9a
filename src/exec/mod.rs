//! Where and when work runs, knowing nothing of LCEL: the thread pool, the sync fan-out, the
//! asyncio gather, the bridged event loop, Rust futures driven as Python coroutines, streams,
//! contextvars and GIL-free waiting.
//!
//! A step is described by its [`Kind`]; its caller is a thread that may block or a task of an
//! event loop ([`Caller`]). [`place`] is the one mapping from the two to where the step runs:
//! the fan-out, the gather, timeouts and streams all ask it; [`on_loop_among_others`] says where
//! a thread sends a step that runs alongside others (a fan-out's items, a timeout's step).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

pub(crate) mod aio;
pub(crate) mod blocking;
pub(crate) mod bridge;
pub(crate) mod context;
pub(crate) mod coro;
pub(crate) mod external;
pub(crate) mod fanout;
pub(crate) mod gather;
pub(crate) mod pool;
pub(crate) mod progress;
pub(crate) mod queue;
pub(crate) mod stream;
pub(crate) mod wait;

use coro::StepFuture;

/// How a step is implemented: all exec needs to know to place it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Sync and cheap (`operator.itemgetter`, Pick): runs where it is called, even on a loop.
    Inline,
    /// Sync code that may block: on the caller's thread, or on the pool for an awaiting caller.
    Blocking,
    /// Has both a sync path and an async one (or is made of parts that differ): walked on the
    /// caller's thread, awaited on the caller's loop.
    Async,
    /// Async only: awaited on the caller's loop; a thread reaches it through an event loop
    /// (the bridged one, or the awaiting caller's a pool thread works for).
    LoopOnly,
    /// Runs on an external executor ([`external`]), or is made of parts of which one does: run
    /// where it is called, waiting on the executor's future without a thread of its own; a
    /// thread that runs it alongside others sends it to an event loop.
    External,
}

impl Kind {
    /// The kind of a runnable made of parts: external if any part is, else awaited if any part
    /// is (it can still be walked on a thread: its async-only parts cross to a loop one by one),
    /// else blocking if any part may block, else inline.
    pub(crate) fn of_all(kinds: impl IntoIterator<Item = Kind>) -> Kind {
        kinds
            .into_iter()
            .fold(Kind::Inline, |acc, k| match (acc, k) {
                (Kind::External, _) | (_, Kind::External) => Kind::External,
                (Kind::Async | Kind::LoopOnly, _) | (_, Kind::Async | Kind::LoopOnly) => {
                    Kind::Async
                }
                (Kind::Blocking, _) | (_, Kind::Blocking) => Kind::Blocking,
                _ => Kind::Inline,
            })
    }

    /// The kind of a runnable that waits on the loop itself when awaited (a fan-out, a timer, a
    /// limiter, a cache slot) around `parts`: `Async`, or `External` if a part is.
    pub(crate) fn awaited_around(parts: impl IntoIterator<Item = Kind>) -> Kind {
        Kind::of_all(std::iter::once(Kind::Async).chain(parts))
    }
}

/// Who runs a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A thread that may block (a sync call, a pool thread): waits release the GIL.
    Thread,
    /// A task of the running event loop, which must never block: waits are loop futures.
    Loop,
}

/// Where a step runs for its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// Right here, run the given way.
    Here(Caller),
    /// On a pool thread, run as on a thread; the awaiting caller waits on its loop.
    Pool,
    /// On an event loop, awaited; the blocked caller waits with the GIL released.
    Loop,
}

/// The one mapping from a step's kind and its caller to where it runs.
pub(crate) fn place(kind: Kind, caller: Caller) -> Place {
    match (kind, caller) {
        (Kind::Inline | Kind::External, caller) => Place::Here(caller),
        (Kind::Blocking | Kind::Async, Caller::Thread) => Place::Here(Caller::Thread),
        (Kind::Blocking, Caller::Loop) => Place::Pool,
        (Kind::Async | Kind::LoopOnly, Caller::Loop) => Place::Here(Caller::Loop),
        (Kind::LoopOnly, Caller::Thread) => Place::Loop,
    }
}

/// Whether a thread running a step of `kind` alongside others (a fan-out's items, a timeout's
/// step, which it waits for instead of running them itself) sends it to an event loop rather
/// than to pool threads: an async-only step needs a loop, and an external one would hold a pool
/// thread per call in flight only to wait, where a loop waits for all of them at once.
pub(crate) fn on_loop_among_others(kind: Kind) -> bool {
    kind == Kind::External || place(kind, Caller::Thread) == Place::Loop
}

/// Runs a step of `kind` for `caller`: `make(mode)` is the step run `mode`'s way, which this
/// moves to where [`place`] says.
pub(crate) fn dispatch(
    kind: Kind,
    caller: Caller,
    make: impl FnOnce(Caller) -> StepFuture,
) -> StepFuture {
    match place(kind, caller) {
        Place::Here(mode) => make(mode),
        Place::Pool => aio::on_pool(make(Caller::Thread)),
        Place::Loop => bridge::on_home_loop(make(Caller::Loop)),
    }
}

/// A fixed list of independent calls, run at once by a fan-out or a gather.
pub(crate) trait Work: Send + Sync + 'static {
    fn len(&self) -> usize;
    fn kind(&self, i: usize) -> Kind;
    /// Item `i`, run `mode`'s way, right where it is polled (the fan-outs place it).
    fn run(&self, i: usize, mode: Caller) -> StepFuture;
    /// A gather's fast path for item `i`: an awaitable of the user's to run as the task itself
    /// (no coroutine of fastlcel's around it), its output finished by [`Self::followup`].
    fn awaitable<'py>(&self, _py: Python<'py>, _i: usize) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(None)
    }
    /// What remains to await once item `i`'s awaitable produced `output`, if anything.
    fn followup(
        &self,
        _py: Python<'_>,
        _i: usize,
        _output: &Bound<'_, PyAny>,
    ) -> PyResult<Option<StepFuture>> {
        Ok(None)
    }
    /// The cost record of item `i`'s step, if it keeps one (see [`Cost`]).
    fn cost(&self, i: usize) -> Option<&Cost>;
}

/// The options of one fan-out.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FanOpts {
    /// At most this many items in flight.
    pub(crate) max_concurrency: Option<usize>,
    /// A failed item's slot holds its exception (an `Exception`; others still abort).
    pub(crate) return_exceptions: bool,
}

/// Runs every item of `work` at once, the caller's way: the results in item order, or the
/// first failure (in time) as soon as it happens.
pub(crate) async fn fan_out(
    work: Arc<dyn Work>,
    opts: FanOpts,
    caller: Caller,
) -> PyResult<Vec<Py<PyAny>>> {
    match caller {
        Caller::Loop => gather::gather(work, opts).await,
        Caller::Thread if needs_loop(&*work) => {
            // The whole fan-out is a gather on a loop (see `on_loop_among_others`).
            let list = Python::attach(|py| {
                let fut: StepFuture = Box::pin(async move {
                    let values = gather::gather(work, opts).await?;
                    Python::attach(|py| Ok(PyList::new(py, values)?.into_any().unbind()))
                });
                bridge::run_blocking(py, fut, None)
            })?;
            Python::attach(|py| {
                let list = list.expect("without a deadline the call ends with an outcome");
                list.bind(py)
                    .try_iter()?
                    .map(|v| v.map(Bound::unbind))
                    .collect()
            })
        }
        Caller::Thread => Python::attach(|py| fanout::FanOut::run_blocking(py, work, opts)),
    }
}

/// Whether a thread's fan-out of `work` runs as a gather on an event loop.
pub(crate) fn needs_loop(work: &dyn Work) -> bool {
    (0..work.len()).any(|i| on_loop_among_others(work.kind(i)))
}

/// Runs the one item of `work` from a thread that may block, giving up at `deadline`:
/// `Ok(None)` if it passes first. An async-only or external item runs on an event loop and is
/// cancelled then (an external call's future with it); any other runs on a pool thread, which
/// finishes it and drops its result.
pub(crate) fn run_with_deadline(
    py: Python<'_>,
    work: Arc<dyn Work>,
    deadline: Option<Instant>,
) -> PyResult<Option<Py<PyAny>>> {
    if needs_loop(&*work) {
        return bridge::run_blocking(py, work.run(0, Caller::Loop), deadline);
    }
    let values = fanout::FanOut::run_until(py, work, FanOpts::default(), deadline)?;
    Ok(values.map(|v| v.into_iter().next().expect("one item, one result")))
}

/// How long a step usually runs, learnt from its calls (an average of the last few).
///
/// A blocking caller runs items itself only when every one is known to be fast: then it finishes
/// them before a helper could even wake (no GIL handoffs), and a failure elsewhere waits at most
/// one fast item. An item that may block runs on the pool, so the caller, waiting, can raise the
/// first failure at once.
pub(crate) struct Cost(AtomicU64);

impl Cost {
    const UNKNOWN: u64 = u64::MAX;
    /// Below this a step counts as fast: a GIL handoff to a helper costs tens of µs.
    const FAST_NS: u64 = 200_000;
    const SAMPLE_EVERY: u32 = 8;

    pub(crate) fn new() -> Self {
        Self(AtomicU64::new(Self::UNKNOWN))
    }

    pub(crate) fn is_fast(&self) -> bool {
        self.0.load(Ordering::Relaxed) < Self::FAST_NS
    }

    /// Whether to time this call: always while the step is not known to be fast, else one call
    /// in [`Self::SAMPLE_EVERY`] (reading the clock costs as much as a trivial step).
    pub(crate) fn wants_sample(&self) -> bool {
        thread_local! {
            static CALLS: Cell<u32> = const { Cell::new(0) };
        }
        !self.is_fast()
            || CALLS.with(|calls| {
                let n = calls.get().wrapping_add(1);
                calls.set(n);
                n % Self::SAMPLE_EVERY == 0
            })
    }

    pub(crate) fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX - 1);
        let old = self.0.load(Ordering::Relaxed);
        let new = if old == Self::UNKNOWN {
            ns
        } else {
            (old / 4) * 3 + ns / 4
        };
        self.0.store(new, Ordering::Relaxed);
    }
}

/// How the results of a fan-out, in item order, become the value the caller gets.
pub(crate) enum Collect {
    Dict(Arc<[Py<PyString>]>),
    /// The dict, passed to this function; its result is the value.
    DictInto(Arc<[Py<PyString>]>, Py<PyAny>),
    List,
}

impl Collect {
    pub(crate) fn build(&self, py: Python<'_>, values: Vec<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        match self {
            Collect::Dict(keys) => Ok(Self::dict(py, keys, values)?.into_any().unbind()),
            Collect::DictInto(keys, func) => Ok(func
                .bind(py)
                .call1((Self::dict(py, keys, values)?,))?
                .unbind()),
            Collect::List => Ok(PyList::new(py, values)?.into_any().unbind()),
        }
    }

    fn dict<'py>(
        py: Python<'py>,
        keys: &[Py<PyString>],
        values: Vec<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (k, v) in keys.iter().zip(values) {
            dict.set_item(k, v)?;
        }
        Ok(dict)
    }
}

pub(crate) fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    pool::init_pymodule(m)?;
    fanout::init_pymodule(m)?;
    bridge::init_pymodule(m)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [Kind; 5] = [
        Kind::Inline,
        Kind::Blocking,
        Kind::Async,
        Kind::LoopOnly,
        Kind::External,
    ];

    #[test]
    fn a_composite_with_an_external_part_is_external() {
        for kind in KINDS {
            assert_eq!(Kind::of_all([kind, Kind::External]), Kind::External);
            assert_eq!(Kind::of_all([Kind::External, kind]), Kind::External);
            assert_eq!(Kind::awaited_around([kind, Kind::External]), Kind::External);
        }
        assert_eq!(Kind::of_all([Kind::Blocking, Kind::LoopOnly]), Kind::Async);
        assert_eq!(Kind::of_all([Kind::Inline, Kind::Blocking]), Kind::Blocking);
        assert_eq!(Kind::of_all([]), Kind::Inline);
        assert_eq!(Kind::awaited_around([Kind::Blocking]), Kind::Async);
        assert_eq!(Kind::awaited_around([]), Kind::Async);
    }

    #[test]
    fn an_external_step_runs_where_it_is_called() {
        assert_eq!(
            place(Kind::External, Caller::Thread),
            Place::Here(Caller::Thread)
        );
        assert_eq!(
            place(Kind::External, Caller::Loop),
            Place::Here(Caller::Loop)
        );
    }

    #[test]
    fn a_thread_sends_external_and_async_only_steps_among_others_to_a_loop() {
        let on_loop: Vec<Kind> = KINDS
            .into_iter()
            .filter(|&k| on_loop_among_others(k))
            .collect();
        assert_eq!(on_loop, [Kind::LoopOnly, Kind::External]);
    }
}
