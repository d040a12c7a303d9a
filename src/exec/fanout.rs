//! The sync fan-out: "the caller helps, helpers are woken in a chain" (DESIGN.md).
//!
//! One shared counter hands out items. A blocking caller wakes ONE helper, then, if every item
//! is known to be fast (see `Cost`), claims and runs items itself while it holds the GIL; it
//! waits (GIL released) when nothing is left to claim. A helper claims an item and, if unclaimed
//! items remain and the budget allows, wakes one more helper before running it. Trivial items
//! are all done by the caller before a helper even wakes; blocking items get one thread each
//! within about 2 ms.
//!
//! A waiting caller owns its helpers' jobs (`pool::Owner`): when the pool has no thread for
//! one (at its limit, every thread busy, as when 2,000 steps each fan out inside themselves),
//! the caller runs that helper's share itself while it waits. So a nested fan-out never waits
//! on a pool that only it could unblock, and never has more items in flight than its bound.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use pyo3::exceptions::{PyException, PyRuntimeError};
use pyo3::prelude::*;

use super::aio::Home;
use super::context::Context;
use super::coro::{block_on, StepFuture};
use super::gather::Sink;
use super::pool::{self, Busy, InFlight, Owner};
use super::wait::{self, Mailbox, Signal};
use super::{Caller, Cost, FanOpts, Kind, Work};

/// Who is told when the fan-out is over (all items done, or the first failure).
pub(crate) enum Notify {
    /// A blocked caller, which owns the helpers' jobs.
    Waiter { signal: Arc<Signal>, owner: Owner },
    /// An event loop: `loop.call_soon_threadsafe(callback)`. The callback is given up when
    /// scheduled: it holds the caller's objects, which a helper finishing late must not keep.
    Loop {
        event_loop: Py<PyAny>,
        callback: Mutex<Option<Py<PyAny>>>,
    },
    /// Nobody: every item's outcome went to a sink as it came, read by the jobs' owner.
    Nobody(Owner),
}

/// What happens to an item's outcome.
pub(crate) enum Outcomes {
    /// Into its slot; the first failure fails the fan-out (unless `return_exceptions` makes it
    /// a value).
    Slots,
    /// To the sink, as it comes: the fan-out never fails by itself.
    Sink(Arc<dyn Sink>),
}

pub(crate) struct FanOut {
    /// Given up when the fan-out is over (`retire`): a helper job still queued then must not keep
    /// the user's runnables alive. Helpers take their own reference when they start.
    work: Mutex<Option<Arc<dyn Work>>>,
    len: usize,
    ctx: Context,
    return_exceptions: bool,
    outcomes: Outcomes,
    /// Where the helpers' async-only steps run (see `aio::Home`).
    home: Option<Home>,
    /// Who waits for the helpers' jobs.
    owner: Owner,
    next: AtomicUsize,
    remaining: AtomicUsize,
    helpers_left: AtomicUsize,
    /// Set at the first failure or on abort: nothing more is claimed.
    stop: AtomicBool,
    fired: AtomicBool,
    slots: Mutex<Vec<Option<PyResult<Py<PyAny>>>>>,
    failure: Mutex<Option<PyErr>>,
    notify: Notify,
}

impl FanOut {
    fn new(
        py: Python<'_>,
        work: Arc<dyn Work>,
        ctx: Context,
        helpers: usize,
        return_exceptions: bool,
        outcomes: Outcomes,
        notify: Notify,
    ) -> Arc<Self> {
        let n = work.len();
        let home = match &notify {
            Notify::Loop { event_loop, .. } => Some(Home::Loop(event_loop.clone_ref(py))),
            _ => Home::for_helpers(py),
        };
        let owner = match &notify {
            Notify::Waiter { owner, .. } | Notify::Nobody(owner) => owner.clone(),
            // The loop may run this for a blocked thread (see `bridge::run_blocking`).
            Notify::Loop { .. } => Owner::current(py),
        };
        Arc::new(Self {
            work: Mutex::new(Some(work)),
            len: n,
            ctx,
            return_exceptions,
            outcomes,
            home,
            owner,
            next: AtomicUsize::new(0),
            remaining: AtomicUsize::new(n),
            helpers_left: AtomicUsize::new(helpers),
            stop: AtomicBool::new(false),
            fired: AtomicBool::new(false),
            slots: Mutex::new((0..n).map(|_| None).collect()),
            failure: Mutex::new(None),
            notify,
        })
    }

    /// Runs every item, the calling thread included; returns the results in item order, or
    /// the first failure (in time) as soon as it happens.
    pub(crate) fn run_blocking(
        py: Python<'_>,
        work: Arc<dyn Work>,
        opts: FanOpts,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let values = Self::run_until(py, work, opts, None)?;
        Ok(values.expect("without a deadline the wait ends only when the fan-out is over"))
    }

    /// [`Self::run_blocking`] with a deadline: `Ok(None)` if it passes first. Then the caller
    /// has run no item itself (it only waited); items still running finish on their threads and
    /// their results are dropped, items not started never start. With a deadline the helpers get
    /// threads beyond the pool's soft limit (the caller cannot run an item it may have to give
    /// up on); without one, the caller runs the helpers' share when the pool has no thread.
    pub(crate) fn run_until(
        py: Python<'_>,
        work: Arc<dyn Work>,
        opts: FanOpts,
        deadline: Option<Instant>,
    ) -> PyResult<Option<Vec<Py<PyAny>>>> {
        let n = work.len();
        if n == 0 {
            return Ok(Some(Vec::new()));
        }
        let caller_helps =
            deadline.is_none() && (0..n).all(|i| work.cost(i).is_none_or(Cost::is_fast));
        let helpers = opts.max_concurrency.unwrap_or(n).min(n) - usize::from(caller_helps);
        let ctx = Context::capture(py)?;
        let signal = Arc::new(Signal::default());
        let mailbox = deadline.is_none().then(Mailbox::new);
        let owner = match &mailbox {
            Some(mailbox) => Owner::Waiter(Arc::clone(mailbox)),
            None => Owner::Escalate,
        };
        let fan = Self::new(
            py,
            Arc::clone(&work),
            ctx,
            helpers,
            opts.return_exceptions,
            Outcomes::Slots,
            Notify::Waiter {
                signal: Arc::clone(&signal),
                owner,
            },
        );
        fan.wake_helper(py);
        if caller_helps {
            while let Some(i) = fan.claim() {
                let outcome = fan.run_item(py, &*work, i);
                if fan.record(py, i, outcome) {
                    fan.fire(py);
                }
            }
        }
        let waited = match &mailbox {
            Some(mailbox) => {
                let waited = wait::wait_running(py, &signal, mailbox).map(|()| true);
                mailbox.close();
                waited
            }
            None => wait::wait_until(py, &signal, deadline),
        };
        match waited {
            Ok(true) => {
                fan.retire();
                fan.take_outcome(py).map(Some)
            }
            Ok(false) => {
                fan.abort();
                Ok(None)
            }
            Err(interrupt) => {
                fan.abort();
                Err(interrupt)
            }
        }
    }

    /// Starts the items on pool threads only (the caller is an event loop thread, which must not
    /// block); `callback` is scheduled on `event_loop` when it is over. See [`Self::take_outcome`].
    /// The helpers' jobs belong to the blocked thread whose call runs on that loop, if any.
    pub(crate) fn start_detached(
        py: Python<'_>,
        work: Arc<dyn Work>,
        ctx: Context,
        opts: FanOpts,
        outcomes: Outcomes,
        event_loop: Py<PyAny>,
        callback: Py<PyAny>,
    ) -> Arc<Self> {
        let notify = Notify::Loop {
            event_loop,
            callback: Mutex::new(Some(callback)),
        };
        Self::detached(py, work, ctx, opts, outcomes, notify)
    }

    /// Starts the items on pool threads only, each outcome to `sink` as it comes, for a caller
    /// that takes them as they finish (and owns the helpers' jobs: `owner`). Abort it when the
    /// caller goes away.
    pub(crate) fn start_into(
        py: Python<'_>,
        work: Arc<dyn Work>,
        opts: FanOpts,
        sink: Arc<dyn Sink>,
        owner: Owner,
    ) -> PyResult<Arc<Self>> {
        let ctx = Context::capture(py)?;
        Ok(Self::detached(
            py,
            work,
            ctx,
            opts,
            Outcomes::Sink(sink),
            Notify::Nobody(owner),
        ))
    }

    fn detached(
        py: Python<'_>,
        work: Arc<dyn Work>,
        ctx: Context,
        opts: FanOpts,
        outcomes: Outcomes,
        notify: Notify,
    ) -> Arc<Self> {
        let n = work.len();
        let helpers = opts.max_concurrency.unwrap_or(n).min(n);
        let fan = Self::new(
            py,
            work,
            ctx,
            helpers,
            opts.return_exceptions,
            outcomes,
            notify,
        );
        if n == 0 {
            fan.fire(py);
        }
        fan.wake_helper(py);
        fan
    }

    /// Stops handing out items; running ones finish and their results are dropped.
    pub(crate) fn abort(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.retire();
    }

    /// Gives up the work (call attached, so that the Python objects in it are freed now).
    fn retire(&self) {
        drop(self.work.lock().take());
    }

    /// The outcome once notified: every item's value in item order, or the first failure.
    pub(crate) fn take_outcome(&self, _py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        self.retire();
        if let Some(err) = self.failure.lock().take() {
            return Err(err);
        }
        let slots = std::mem::take(&mut *self.slots.lock());
        slots
            .into_iter()
            .map(|slot| {
                slot.ok_or_else(|| PyRuntimeError::new_err("fastlcel: fan-out result missing"))?
            })
            .collect()
    }

    fn claim(&self) -> Option<usize> {
        if self.stop.load(Ordering::Acquire) {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::AcqRel);
        (i < self.len).then_some(i)
    }

    fn unclaimed(&self) -> bool {
        !self.stop.load(Ordering::Acquire) && self.next.load(Ordering::Acquire) < self.len
    }

    fn wake_helper(self: &Arc<Self>, py: Python<'_>) {
        if !self.unclaimed() {
            return;
        }
        if self
            .helpers_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_err()
        {
            return;
        }
        let fan = Arc::clone(self);
        if pool::submit(Box::new(move || fan.help()), self.owner.clone()).is_err() {
            self.fail(py, pool::exhausted());
        }
    }

    /// A pool thread's share of the work (or its waiting caller's, in its stead).
    fn help(self: Arc<Self>) {
        if !self.unclaimed() {
            return Self::release(self);
        }
        let Some(_in_flight) = InFlight::enter() else {
            return;
        };
        Python::attach(|py| {
            let run = || {
                while let Some(i) = self.claim() {
                    self.wake_helper(py);
                    // Taken attached, for this item only: a copy taken while waiting for the
                    // GIL, or kept until the last item is over, would keep the user's objects
                    // alive, unseen by the collector, after the caller got its results.
                    let Some(work) = self.work.lock().clone() else {
                        break;
                    };
                    let outcome = {
                        let _busy = Busy::enter();
                        self.run_item(py, &*work, i)
                    };
                    // Given up before the item counts as done: once the last one does, the
                    // caller may go on and expect its objects freed.
                    drop(work);
                    if self.record(py, i, outcome) {
                        self.fire(py);
                    }
                    if pool::shutting_down() {
                        break;
                    }
                }
            };
            Home::enter(self.home.as_ref(), py, run);
            drop(self);
        });
    }

    /// Drops a reference; if it is the last, while attached, so that the Python objects it holds
    /// are freed now rather than at the next attach (pyo3 defers a decref made without the GIL).
    fn release(self: Arc<Self>) {
        if let Some(last) = Arc::into_inner(self) {
            if let Some(_in_flight) = InFlight::enter() {
                Python::attach(move |_| drop(last));
            }
        }
    }

    /// Runs item `i`; its outcome is for [`Self::record`].
    fn run_item(&self, py: Python<'_>, work: &dyn Work, i: usize) -> PyResult<Py<PyAny>> {
        let timer = work
            .cost(i)
            .filter(|c| c.wants_sample())
            .map(|c| (c, Instant::now()));
        let result = self.ctx.run(py, || block_on(work.run(i, Caller::Thread)));
        if let Some((cost, started)) = timer {
            cost.observe(started.elapsed());
        }
        result
    }

    /// Keeps item `i`'s outcome; returns whether the fan-out is over (the caller then fires it,
    /// once it holds no reference to the work).
    #[must_use]
    fn record(&self, py: Python<'_>, i: usize, result: PyResult<Py<PyAny>>) -> bool {
        match (&self.outcomes, result) {
            (Outcomes::Sink(sink), outcome) => {
                if !self.stop.load(Ordering::Acquire) {
                    sink.item(py, i, outcome);
                }
            }
            (_, Ok(value)) => {
                if !self.stop.load(Ordering::Acquire) {
                    self.slots.lock()[i] = Some(Ok(value));
                }
            }
            // Only Exceptions go into slots: KeyboardInterrupt or SystemExit abort the call.
            (_, Err(err)) if self.return_exceptions && err.is_instance_of::<PyException>(py) => {
                self.slots.lock()[i] = Some(Ok(err.into_value(py).into_any()));
            }
            (_, Err(err)) => {
                self.record_failure(err);
                self.remaining.fetch_sub(1, Ordering::AcqRel);
                return true;
            }
        }
        self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
    }

    fn fail(&self, py: Python<'_>, err: PyErr) {
        self.record_failure(err);
        self.fire(py);
    }

    fn record_failure(&self, err: PyErr) {
        {
            let mut failure = self.failure.lock();
            if failure.is_none() {
                *failure = Some(err);
            }
        }
        self.stop.store(true, Ordering::Release);
    }

    fn fire(&self, py: Python<'_>) {
        if self.fired.swap(true, Ordering::AcqRel) {
            return;
        }
        match &self.notify {
            Notify::Waiter { signal, .. } => signal.set(),
            Notify::Loop {
                event_loop,
                callback,
            } => {
                let Some(callback) = callback.lock().take() else {
                    return;
                };
                // A closed loop raises RuntimeError: nobody is left to tell.
                let _ = event_loop
                    .bind(py)
                    .call_method1(pyo3::intern!(py, "call_soon_threadsafe"), (callback,));
            }
            Notify::Nobody(_) => {}
        }
    }
}

/// A test hook: a fan-out whose second item panics on a pool thread while the caller sleeps in
/// the first. Proves that a Rust panic surfaces as `fastlcel.PanicError`.
#[pyfunction]
fn _debug_panic_in_pool(py: Python<'_>) -> PyResult<()> {
    struct PanicWork;
    impl Work for PanicWork {
        fn len(&self) -> usize {
            2
        }
        fn kind(&self, _: usize) -> Kind {
            Kind::Blocking
        }
        fn run(&self, i: usize, _: Caller) -> StepFuture {
            Box::pin(async move {
                if i == 0 {
                    Python::attach(|py| {
                        py.detach(|| std::thread::sleep(std::time::Duration::from_millis(200)));
                        Ok(py.None())
                    })
                } else {
                    panic!("deliberate panic from fastlcel._core._debug_panic_in_pool");
                }
            })
        }
        fn cost(&self, _: usize) -> Option<&Cost> {
            None
        }
    }
    FanOut::run_blocking(py, Arc::new(PanicWork), FanOpts::default()).map(drop)
}

pub(crate) fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_debug_panic_in_pool, m)?)
}
