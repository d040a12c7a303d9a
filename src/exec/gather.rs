//! The async fan-out: a gather on the caller's running event loop.
//!
//! Items that await become tasks of the loop, each with a Rust done callback; the last one
//! resolves one `loop.create_future()`. Items that may block run as one detached fan-out on the
//! pool whose last helper schedules a single callback on the loop; inline items run on the spot.
//! The first failure cancels the rest and fails the gather as soon as the cancelled tasks have
//! stopped; cancelling it cancels its children.
//!
// NOTE: tasks with Rust done callbacks measured 10.5 µs per coroutine against asyncio.gather's
// 11 (DESIGN.md); a plain async Lambda's own coroutine is the task (no wrapper of ours), its
// output checked in the done callback: a coroutine around every item cost ~1-2.6 µs more.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::{PyException, PyRuntimeError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::IntoPyDict;
use pyo3::{ffi, intern, PyTraverseError};

use super::aio::loop_future;
use super::context::{self, Context};
use super::coro::{py_await, Coroutine, StepFuture};
use super::fanout::{FanOut, Outcomes};
use super::{place, Caller, Cost, FanOpts, Kind, Place, Work};

/// Where every item's outcome goes, for a caller that takes them as they come.
pub(crate) trait Sink: Send + Sync + 'static {
    fn item(&self, py: Python<'_>, i: usize, outcome: PyResult<Py<PyAny>>);
}

/// Runs every item of `work` on the running loop; the results in item order, or the first
/// failure as soon as it happens.
pub(crate) async fn gather(work: Arc<dyn Work>, opts: FanOpts) -> PyResult<Vec<Py<PyAny>>> {
    let n = work.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let gather = Python::attach(|py| start(py, work, opts, None))?;
    await_outer(&gather).await?;
    let slots = std::mem::take(&mut gather.get().state.lock().slots);
    slots
        .into_iter()
        .map(|v| v.ok_or_else(|| PyRuntimeError::new_err("fastlcel: gather result missing")))
        .collect()
}

/// Starts every item of `work` on the running loop, each outcome to `sink` as it comes. The
/// gather is stopped when the returned guard is dropped.
pub(crate) fn start_into(
    py: Python<'_>,
    work: Arc<dyn Work>,
    opts: FanOpts,
    sink: Arc<dyn Sink>,
) -> PyResult<GatherGuard> {
    start(py, work, opts, Some(sink)).map(GatherGuard)
}

/// Stops a gather (cancels what still runs) when dropped: its waiter went away.
pub(crate) struct GatherGuard(Py<Gather>);

impl Drop for GatherGuard {
    fn drop(&mut self) {
        Python::attach(|py| {
            let _ = Gather::stop_children(self.0.bind(py));
        });
    }
}

async fn await_outer(gather: &Py<Gather>) -> PyResult<Py<PyAny>> {
    let guard = GatherGuard(Python::attach(|py| gather.clone_ref(py)));
    let outer = Python::attach(|py| guard.0.get().outer.clone_ref(py));
    py_await(outer).await
}

/// What the gather starts, in order, at most `max_concurrency` at a time.
enum Unit {
    /// An item that awaits (a task) or an inline one (run on the spot).
    Item(usize),
    /// Items that may block, run as one detached fan-out.
    Group(Arc<[usize]>),
}

/// Splits the items into units. Pool items share one fan-out (bounded by `max_concurrency`
/// itself), except when tasks must share that bound with them: then each is a unit of its own.
fn plan(work: &dyn Work, max_concurrency: Option<usize>) -> Vec<Unit> {
    let n = work.len();
    let places: Vec<Place> = (0..n).map(|i| place(work.kind(i), Caller::Loop)).collect();
    let pooled: Vec<usize> = (0..n).filter(|&i| places[i] == Place::Pool).collect();
    let split = max_concurrency.is_some() && places.iter().any(|p| *p != Place::Pool);
    let mut units = Vec::with_capacity(n);
    if !split && !pooled.is_empty() {
        // First, so that threads start while the loop creates tasks.
        units.push(Unit::Group(pooled.into()));
    }
    for (i, p) in places.into_iter().enumerate() {
        match p {
            Place::Pool if split => units.push(Unit::Group(Arc::from([i]))),
            Place::Pool => {}
            _ => units.push(Unit::Item(i)),
        }
    }
    units
}

struct State {
    next_unit: usize,
    running: usize,
    remaining: usize,
    finished: bool,
    slots: Vec<Option<Py<PyAny>>>,
    /// Live tasks by item, to cancel them.
    tasks: Vec<Option<Py<PyAny>>>,
    /// Live fan-outs by unit, to abort them.
    fans: Vec<(usize, Arc<FanOut>)>,
}

#[pyclass(frozen)]
pub(crate) struct Gather {
    work: Arc<dyn Work>,
    opts: FanOpts,
    sink: Option<Arc<dyn Sink>>,
    units: Vec<Unit>,
    event_loop: Py<PyAny>,
    outer: Py<PyAny>,
    ctx: Context,
    state: Mutex<State>,
}

fn start(
    py: Python<'_>,
    work: Arc<dyn Work>,
    opts: FanOpts,
    sink: Option<Arc<dyn Sink>>,
) -> PyResult<Py<Gather>> {
    let (event_loop, outer) = loop_future(py)?;
    let n = work.len();
    let units = plan(work.as_ref(), opts.max_concurrency);
    let gather = Bound::new(
        py,
        Gather {
            units,
            event_loop: event_loop.unbind(),
            outer: outer.clone().unbind(),
            ctx: Context::capture(py)?,
            state: Mutex::new(State {
                next_unit: 0,
                running: 0,
                remaining: n,
                finished: false,
                slots: (0..n).map(|_| None).collect(),
                tasks: (0..n).map(|_| None).collect(),
                fans: Vec::new(),
            }),
            work,
            opts,
            sink,
        },
    )?;
    if n == 0 {
        outer.call_method1(intern!(py, "set_result"), (py.None(),))?;
        return Ok(gather.unbind());
    }
    outer.call_method1(
        intern!(py, "add_done_callback"),
        (gather.getattr(intern!(py, "_outer_done"))?,),
    )?;
    Gather::pump(&gather)?;
    Ok(gather.unbind())
}

impl Gather {
    /// Starts units while the concurrency bound allows. Runs on the loop thread only, like every
    /// method here; the lock is never held across a call into Python.
    fn pump(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        let limit = this.opts.max_concurrency.unwrap_or(usize::MAX);
        loop {
            let unit = {
                let mut st = this.state.lock();
                if st.finished || st.running >= limit || st.next_unit >= this.units.len() {
                    return Ok(());
                }
                st.running += 1;
                st.next_unit += 1;
                st.next_unit - 1
            };
            match &this.units[unit] {
                Unit::Item(i) => Self::start_item(slf, *i)?,
                Unit::Group(items) => Self::start_group(slf, unit, Arc::clone(items))?,
            }
        }
    }

    fn start_item(slf: &Bound<'_, Self>, i: usize) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let work = &this.work;
        if work.kind(i) == Kind::Inline {
            let result = this
                .ctx
                .run(py, || super::coro::block_on(work.run(i, Caller::Loop)));
            this.state.lock().running -= 1;
            return Self::finish_item(slf, i, result);
        }
        let fresh = this.ctx.fresh(py)?;
        // Made inside the item's own context copy, which the task copies.
        let task = context::enter(&fresh, || {
            let (awaitable, fast) = match work.awaitable(py, i)? {
                Some(aw) => (aw, true),
                None => {
                    let coro = Coroutine::for_task(work.run(i, Caller::Loop));
                    (Bound::new(py, coro)?.into_any(), false)
                }
            };
            Ok((spawn(this.event_loop.bind(py), awaitable)?, fast))
        });
        match task {
            Ok((task, fast)) => Self::watch(slf, i, task, fast),
            Err(err) => {
                this.state.lock().running -= 1;
                Self::finish_item(slf, i, Err(err))
            }
        }
    }

    /// Item `i` continues as `fut`, a task in a fresh copy of the caller's context.
    fn continue_item(slf: &Bound<'_, Self>, i: usize, fut: StepFuture) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let coro = Bound::new(py, Coroutine::for_task(fut))?.into_any();
        let fresh = this.ctx.fresh(py)?;
        match context::enter(&fresh, || spawn(this.event_loop.bind(py), coro)) {
            Ok(task) => Self::watch(slf, i, task, false),
            Err(err) => Self::settle(slf, i, Err(err)),
        }
    }

    /// Item `i` is running as `task` (`fast`: the user's own awaitable, its output still to
    /// finish): its done callback settles it.
    fn watch(slf: &Bound<'_, Self>, i: usize, task: Bound<'_, PyAny>, fast: bool) -> PyResult<()> {
        let py = slf.py();
        slf.get().state.lock().tasks[i] = Some(task.clone().unbind());
        let done = TaskDone {
            gather: slf.clone().unbind(),
            index: i,
            fast,
        };
        task.call_method1(intern!(py, "add_done_callback"), (done,))?;
        Ok(())
    }

    /// Item `i`'s task is over with `result`: record it and start what may start now.
    fn settle(slf: &Bound<'_, Self>, i: usize, result: PyResult<Py<PyAny>>) -> PyResult<()> {
        {
            let mut st = slf.get().state.lock();
            if st.finished {
                return Ok(());
            }
            st.tasks[i] = None;
            st.running -= 1;
        }
        Self::finish_item(slf, i, result)?;
        Self::pump(slf)
    }

    fn start_group(slf: &Bound<'_, Self>, unit: usize, items: Arc<[usize]>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let done = GroupDone {
            gather: Mutex::new(Some(slf.clone().unbind())),
            unit,
        };
        let outcomes = match &this.sink {
            // Each item's outcome to the gather's sink as it comes, under its own index.
            Some(sink) => Outcomes::Sink(Arc::new(SubsetSink {
                sink: Arc::clone(sink),
                items: Arc::clone(&items),
            })),
            None => Outcomes::Slots,
        };
        let fan = FanOut::start_detached(
            py,
            Arc::new(Subset {
                work: Arc::clone(&this.work),
                items,
            }),
            this.ctx.clone_ref(py),
            this.opts,
            outcomes,
            this.event_loop.clone_ref(py),
            Py::new(py, done)?.into_any(),
        );
        this.state.lock().fans.push((unit, fan));
        Ok(())
    }

    fn finish_item(slf: &Bound<'_, Self>, i: usize, result: PyResult<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if let Some(sink) = &this.sink {
            if this.state.lock().finished {
                return Ok(());
            }
            sink.item(py, i, result);
            return Self::count_done(slf, None);
        }
        let value = match result {
            Ok(value) => value,
            Err(err) if this.opts.return_exceptions && err.is_instance_of::<PyException>(py) => {
                err.into_value(py).into_any()
            }
            Err(err) => return Self::fail(slf, err),
        };
        Self::count_done(slf, Some((i, value)))
    }

    /// One more item is over (its value to slot `i`); the last one resolves the gather.
    fn count_done(slf: &Bound<'_, Self>, value: Option<(usize, Py<PyAny>)>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        {
            let mut st = this.state.lock();
            if st.finished {
                return Ok(());
            }
            if let Some((i, value)) = value {
                st.slots[i] = Some(value);
            }
            st.remaining -= 1;
            if st.remaining > 0 {
                return Ok(());
            }
            st.finished = true;
        }
        let outer = this.outer.bind(py);
        if !outer.call_method0(intern!(py, "done"))?.is_truthy()? {
            outer.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(())
    }

    /// Fails the gather with `err`: the other tasks are cancelled, and the error is raised once
    /// they have stopped (as `asyncio.TaskGroup` does), so that nothing of the call still runs on
    /// the loop, and their runs are ended, when the caller sees it. Sync steps on the pool are
    /// not waited for.
    fn fail(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let Some(cancelled) = Self::stop_children(slf)? else {
            return Ok(());
        };
        let mut running = Vec::new();
        for task in cancelled {
            if !task
                .bind(py)
                .call_method0(intern!(py, "done"))?
                .is_truthy()?
            {
                running.push(task);
            }
        }
        let failure = Failure {
            outer: this.outer.clone_ref(py),
            err: Mutex::new(Some(err)),
            running: Mutex::new(running.len()),
        };
        if running.is_empty() {
            return failure.raise(py);
        }
        let failure = Bound::new(py, failure)?;
        for task in running {
            task.bind(py)
                .call_method1(intern!(py, "add_done_callback"), (&failure,))?;
        }
        Ok(())
    }

    /// Marks the gather finished, cancels its tasks and aborts its fan-outs. Returns the tasks it
    /// cancelled, or `None` if it was finished already.
    fn stop_children(slf: &Bound<'_, Self>) -> PyResult<Option<Vec<Py<PyAny>>>> {
        let py = slf.py();
        let (tasks, fans) = {
            let mut st = slf.get().state.lock();
            if st.finished {
                return Ok(None);
            }
            st.finished = true;
            (std::mem::take(&mut st.tasks), std::mem::take(&mut st.fans))
        };
        for (_, fan) in fans {
            fan.abort();
        }
        let tasks: Vec<Py<PyAny>> = tasks.into_iter().flatten().collect();
        for task in &tasks {
            task.bind(py).call_method0(intern!(py, "cancel"))?;
        }
        Ok(Some(tasks))
    }
}

/// A gather's failure, raised to its waiter once the tasks it cancelled are done (each calls
/// it when it is).
#[pyclass(frozen)]
struct Failure {
    outer: Py<PyAny>,
    err: Mutex<Option<PyErr>>,
    running: Mutex<usize>,
}

impl Failure {
    fn raise(&self, py: Python<'_>) -> PyResult<()> {
        let Some(err) = self.err.lock().take() else {
            return Ok(());
        };
        let outer = self.outer.bind(py);
        if outer.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        if err.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>(py) {
            outer.call_method0(intern!(py, "cancel"))?;
        } else {
            outer.call_method1(intern!(py, "set_exception"), (err.into_value(py),))?;
        }
        Ok(())
    }
}

#[pymethods]
impl Failure {
    fn __call__(&self, py: Python<'_>, _task: &Bound<'_, PyAny>) -> PyResult<()> {
        let last = {
            let mut running = self.running.lock();
            *running -= 1;
            *running == 0
        };
        if last {
            self.raise(py)?;
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.outer)
    }
}

#[pymethods]
impl Gather {
    /// Done callback of the outer future: if the caller cancelled it, cancel the children.
    fn _outer_done(slf: &Bound<'_, Self>, _future: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::stop_children(slf).map(drop)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.outer)?;
        if let Some(st) = self.state.try_lock() {
            for obj in st.slots.iter().chain(st.tasks.iter()).flatten() {
                visit.call(obj)?;
            }
        }
        Ok(())
    }
}

/// Wraps a coroutine in a task of `event_loop` (any other awaitable goes through ensure_future).
fn spawn<'py>(
    event_loop: &Bound<'py, PyAny>,
    aw: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = aw.py();
    // SAFETY: a type check on a live object we hold.
    let native = unsafe { ffi::PyCoro_CheckExact(aw.as_ptr()) } != 0;
    if native || aw.is_instance_of::<Coroutine>() {
        return event_loop.call_method1(intern!(py, "create_task"), (aw,));
    }
    static ENSURE_FUTURE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let kwargs = [("loop", event_loop)].into_py_dict(py)?;
    ENSURE_FUTURE
        .import(py, "asyncio", "ensure_future")?
        .call((aw,), Some(&kwargs))
}

/// The done callback of one task.
#[pyclass(frozen)]
struct TaskDone {
    gather: Py<Gather>,
    index: usize,
    fast: bool,
}

#[pymethods]
impl TaskDone {
    fn __call__(&self, py: Python<'_>, task: &Bound<'_, PyAny>) -> PyResult<()> {
        // `result()` re-raises the task's exception (marking it retrieved) or CancelledError.
        let result = task.call_method0(intern!(py, "result"));
        let gather = self.gather.bind(py);
        let this = gather.get();
        if this.state.lock().finished {
            return Ok(());
        }
        if let (true, Ok(output)) = (self.fast, &result) {
            match this.work.followup(py, self.index, output) {
                Ok(None) => {}
                // More to await for this item: a new task, the same slot, still running.
                Ok(Some(more)) => return Gather::continue_item(gather, self.index, more),
                Err(err) => return Gather::settle(gather, self.index, Err(err)),
            }
        }
        Gather::settle(gather, self.index, result.map(Bound::unbind))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.gather)
    }
}

/// Scheduled on the loop by the last helper of a detached fan-out. It gives up the gather when
/// called: the helper that scheduled it may hold its handle a moment longer, and must not keep
/// the caller's objects alive then.
#[pyclass(frozen)]
struct GroupDone {
    gather: Mutex<Option<Py<Gather>>>,
    unit: usize,
}

#[pymethods]
impl GroupDone {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let Some(gather) = self.gather.lock().take() else {
            return Ok(());
        };
        let gather = gather.bind(py);
        let this = gather.get();
        let fan = {
            let mut st = this.state.lock();
            let Some(pos) = st.fans.iter().position(|(u, _)| *u == self.unit) else {
                return Ok(()); // finished already
            };
            st.running -= 1;
            st.fans.swap_remove(pos).1
        };
        let Unit::Group(items) = &this.units[self.unit] else {
            unreachable!("GroupDone is made for Group units only")
        };
        if this.sink.is_some() {
            // Its items went to the sink as they came.
            for _ in items.iter() {
                Gather::count_done(gather, None)?;
            }
            return Gather::pump(gather);
        }
        match fan.take_outcome(py) {
            Err(err) => Gather::fail(gather, err)?,
            Ok(values) => {
                for (&i, value) in items.iter().zip(values) {
                    Gather::finish_item(gather, i, Ok(value))?;
                }
            }
        }
        Gather::pump(gather)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self.gather.try_lock() {
            Some(gather) => visit.call(gather.as_ref()),
            None => Ok(()),
        }
    }
}

/// A sink for a subset's items, under their indices in the whole work.
struct SubsetSink {
    sink: Arc<dyn Sink>,
    items: Arc<[usize]>,
}

impl Sink for SubsetSink {
    fn item(&self, py: Python<'_>, i: usize, outcome: PyResult<Py<PyAny>>) {
        self.sink.item(py, self.items[i], outcome);
    }
}

/// Some items of a work, renumbered from 0.
struct Subset {
    work: Arc<dyn Work>,
    items: Arc<[usize]>,
}

impl Work for Subset {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn kind(&self, i: usize) -> Kind {
        self.work.kind(self.items[i])
    }
    fn run(&self, i: usize, mode: Caller) -> StepFuture {
        self.work.run(self.items[i], mode)
    }
    fn cost(&self, i: usize) -> Option<&Cost> {
        self.work.cost(self.items[i])
    }
}
