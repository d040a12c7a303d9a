//! Awaiting: a gather on the caller's running asyncio loop.
//!
//! Coroutines become tasks of the caller's loop (`loop.create_task`), each with a Rust done
//! callback; the last one resolves one `loop.create_future()`. Sync items run as one detached
//! fan-out on the pool whose last helper schedules a single callback on the loop. The first
//! failure fails the call at once and cancels the rest; cancelling the call cancels its children.
//!
// NOTE: pyo3-async-runtimes (`into_future` + `join_all` + `future_into_py`) measured 21-47 µs per
// coroutine, about 2x `asyncio.gather`; tasks with Rust done callbacks measured 10.5 µs against
// gather's 11 (DESIGN.md), so this path talks to the loop directly.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::{PyException, PyRuntimeError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{IntoPyDict, PyTuple, PyType};
use pyo3::{ffi, intern, PyTraverseError};

use super::context::{self, Context};
use super::fanout::FanOut;
use super::{Awaitable, Collect, Cost, Mode, Work};

thread_local! {
    /// On a pool thread working for an awaiting caller: the caller's event loop.
    static CALLER_LOOP: std::cell::RefCell<Option<Py<PyAny>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `event_loop` known as the caller's loop on this (pool) thread.
pub(crate) fn with_caller_loop<R>(
    event_loop: &Py<PyAny>,
    py: Python<'_>,
    f: impl FnOnce() -> R,
) -> R {
    let previous = CALLER_LOOP.with(|l| l.replace(Some(event_loop.clone_ref(py))));
    let result = f();
    CALLER_LOOP.with(|l| *l.borrow_mut() = previous);
    result
}

/// Awaits the coroutine `make` returns on the loop of the awaiting caller this pool thread works for, blocking this
/// thread (not the loop) until it is done; `None` when the thread works for a blocking caller.
/// This is how a sync step reaches an async-only runnable during `ainvoke` (a router returning
/// an async runnable, say).
pub(crate) fn await_on_caller_loop<'py>(
    py: Python<'py>,
    make: impl FnOnce() -> PyResult<Bound<'py, PyAny>>,
) -> Option<PyResult<Py<PyAny>>> {
    let event_loop = CALLER_LOOP.with(|l| l.borrow().as_ref().map(|l| l.clone_ref(py)))?;
    static RUN_THREADSAFE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let run = || -> PyResult<Py<PyAny>> {
        let future = RUN_THREADSAFE
            .import(py, "asyncio", "run_coroutine_threadsafe")?
            .call1((make()?, event_loop))?;
        // concurrent.futures.Future.result() waits with the GIL released.
        Ok(future.call_method0(intern!(py, "result"))?.unbind())
    };
    Some(run())
}

/// Everything needed to start a gather; kept by an unstarted [`LazyCoroutine`].
pub(crate) struct GatherSpec {
    pub(crate) work: Arc<dyn Work>,
    pub(crate) collect: Collect,
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) return_exceptions: bool,
}

/// What the gather starts, in order, at most `max_concurrency` at a time.
enum Unit {
    /// An `Await` item (a task) or an `Inline` one (run on the spot).
    Item(usize),
    /// `Pool` items, run as one detached fan-out.
    Group(Arc<[usize]>),
}

/// Splits the items into units. Pool items share one fan-out (bounded by `max_concurrency`
/// itself), except when tasks must share that bound with them: then each is a unit of its own.
fn plan(work: &dyn Work, max_concurrency: Option<usize>) -> Vec<Unit> {
    let n = work.len();
    let modes: Vec<Mode> = (0..n).map(|i| work.mode(i)).collect();
    let pooled: Vec<usize> = (0..n).filter(|&i| modes[i] == Mode::Pool).collect();
    let split = max_concurrency.is_some() && modes.contains(&Mode::Await);
    let mut units = Vec::with_capacity(n);
    if !split && !pooled.is_empty() {
        // First, so that threads start while the loop creates tasks.
        units.push(Unit::Group(pooled.into()));
    }
    for (i, mode) in modes.into_iter().enumerate() {
        match mode {
            Mode::Pool if split => units.push(Unit::Group(Arc::from([i]))),
            Mode::Pool => {}
            Mode::Await | Mode::Inline => units.push(Unit::Item(i)),
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
struct Gather {
    spec: GatherSpec,
    units: Vec<Unit>,
    event_loop: Py<PyAny>,
    outer: Py<PyAny>,
    ctx: Context,
    state: Mutex<State>,
}

/// The running event loop and a new future of it (RuntimeError if no loop runs).
pub(crate) fn loop_future(py: Python<'_>) -> PyResult<(Bound<'_, PyAny>, Bound<'_, PyAny>)> {
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let event_loop = GET_RUNNING_LOOP
        .import(py, "asyncio", "get_running_loop")?
        .call0()?;
    let future = event_loop.call_method0(intern!(py, "create_future"))?;
    Ok((event_loop, future))
}

/// Starts a gather on the running loop; returns the future of its result.
pub(crate) fn start(py: Python<'_>, spec: GatherSpec) -> PyResult<Bound<'_, PyAny>> {
    let (event_loop, outer) = loop_future(py)?;
    let n = spec.work.len();
    if n == 0 {
        outer.call_method1(
            intern!(py, "set_result"),
            (spec.collect.build(py, vec![])?,),
        )?;
        return Ok(outer);
    }
    let units = plan(spec.work.as_ref(), spec.max_concurrency);
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
            spec,
        },
    )?;
    outer.call_method1(
        intern!(py, "add_done_callback"),
        (gather.getattr(intern!(py, "_outer_done"))?,),
    )?;
    Gather::pump(&gather)?;
    Ok(outer)
}

impl Gather {
    /// Starts units while the concurrency bound allows. Runs on the loop thread only, like every
    /// method here; the lock is never held across a call into Python.
    fn pump(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        let limit = this.spec.max_concurrency.unwrap_or(usize::MAX);
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
        let work = &this.spec.work;
        if work.mode(i) == Mode::Inline {
            let result = this.ctx.run(py, || work.run(py, i));
            this.state.lock().running -= 1;
            return Self::finish_item(slf, i, result);
        }
        let fresh = this.ctx.fresh(py)?;
        // Made inside the step's own context copy, which a task copies too.
        let task = context::enter(&fresh, || match work.awaitable(py, i)? {
            Awaitable::Future(fut) => Ok(fut),
            Awaitable::Other(aw) => spawn(this.event_loop.bind(py), aw),
        });
        match task {
            Ok(task) => Self::watch(slf, i, task),
            Err(err) => {
                this.state.lock().running -= 1;
                Self::finish_item(slf, i, Err(err))
            }
        }
    }

    /// Runs `aw` as a task for item `i`, in `ctx` (the item's copy of the caller's context).
    fn await_item(
        slf: &Bound<'_, Self>,
        i: usize,
        aw: Bound<'_, PyAny>,
        ctx: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        match context::enter(ctx, || spawn(this.event_loop.bind(py), aw)) {
            Ok(task) => Self::watch(slf, i, task),
            Err(err) => Self::settle(slf, i, Err(err)),
        }
    }

    /// Item `i` is running as `task`: its done callback settles it.
    fn watch(slf: &Bound<'_, Self>, i: usize, task: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        slf.get().state.lock().tasks[i] = Some(task.clone().unbind());
        let done = TaskDone {
            gather: slf.clone().unbind(),
            index: i,
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
            gather: slf.clone().unbind(),
            unit,
        };
        let fan = FanOut::start_detached(
            py,
            Arc::new(Subset {
                work: Arc::clone(&this.spec.work),
                items,
            }),
            this.ctx.clone_ref(py),
            this.spec.max_concurrency,
            this.spec.return_exceptions,
            this.event_loop.clone_ref(py),
            Py::new(py, done)?.into_any(),
        );
        this.state.lock().fans.push((unit, fan));
        Ok(())
    }

    fn finish_item(slf: &Bound<'_, Self>, i: usize, result: PyResult<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let value = match result {
            Ok(value) => value,
            Err(err) if this.spec.return_exceptions && err.is_instance_of::<PyException>(py) => {
                err.into_value(py).into_any()
            }
            Err(err) => return Self::fail(slf, err),
        };
        let values = {
            let mut st = this.state.lock();
            if st.finished {
                return Ok(());
            }
            st.slots[i] = Some(value);
            st.remaining -= 1;
            if st.remaining > 0 {
                return Ok(());
            }
            st.finished = true;
            std::mem::take(&mut st.slots)
        };
        let values = values
            .into_iter()
            .map(|v| v.ok_or_else(|| PyRuntimeError::new_err("fastlcel: gather result missing")))
            .collect::<PyResult<Vec<_>>>()?;
        let outer = this.outer.bind(py);
        if outer.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        // Building may run user code (a Parallel's merge function): its error is the result.
        match this.spec.collect.build(py, values) {
            Ok(result) => outer.call_method1(intern!(py, "set_result"), (result,))?,
            Err(err) => outer.call_method1(intern!(py, "set_exception"), (err.into_value(py),))?,
        };
        Ok(())
    }

    fn fail(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if !Self::stop_children(slf)? {
            return Ok(());
        }
        let outer = this.outer.bind(py);
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

    /// Marks the gather finished, cancels its tasks and aborts its fan-outs. Returns false if it
    /// was finished already.
    fn stop_children(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let (tasks, fans) = {
            let mut st = slf.get().state.lock();
            if st.finished {
                return Ok(false);
            }
            st.finished = true;
            (std::mem::take(&mut st.tasks), std::mem::take(&mut st.fans))
        };
        for (_, fan) in fans {
            fan.abort();
        }
        for task in tasks.into_iter().flatten() {
            task.bind(py).call_method0(intern!(py, "cancel"))?;
        }
        Ok(true)
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
    if unsafe { ffi::PyCoro_CheckExact(aw.as_ptr()) } != 0 {
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
        if let Ok(output) = &result {
            match this.spec.work.followup(py, self.index, output) {
                Ok(None) => {}
                // More to await for this item: a new task, the same slot, still running.
                Ok(Some(more)) => {
                    let ctx = this.ctx.fresh(py)?;
                    return Gather::await_item(gather, self.index, more, &ctx);
                }
                Err(err) => return Gather::settle(gather, self.index, Err(err)),
            }
        }
        Gather::settle(gather, self.index, result.map(Bound::unbind))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.gather)
    }
}

/// Scheduled on the loop by the last helper of a detached fan-out.
#[pyclass(frozen)]
struct GroupDone {
    gather: Py<Gather>,
    unit: usize,
}

#[pymethods]
impl GroupDone {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let gather = self.gather.bind(py);
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
        visit.call(&self.gather)
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
    fn run(&self, py: Python<'_>, i: usize) -> PyResult<Py<PyAny>> {
        self.work.run(py, self.items[i])
    }
    fn mode(&self, i: usize) -> Mode {
        self.work.mode(self.items[i])
    }
    fn awaitable<'py>(&self, py: Python<'py>, i: usize) -> PyResult<Awaitable<'py>> {
        self.work.awaitable(py, self.items[i])
    }
    fn followup<'py>(
        &self,
        py: Python<'py>,
        i: usize,
        output: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.work.followup(py, self.items[i], output)
    }
    fn cost(&self, i: usize) -> Option<&Cost> {
        self.work.cost(self.items[i])
    }
}

enum CoroState {
    Unstarted(GatherSpec),
    Running { future: Py<PyAny>, iter: Py<PyAny> },
    Done,
}

/// What `ainvoke` and `abatch` return: a coroutine that starts its gather when first awaited,
/// so it can be made before the loop runs (`asyncio.run(runnable.ainvoke(x))`), like the
/// coroutine of an `async def`.
#[pyclass(frozen, name = "Coroutine", module = "fastlcel")]
pub(crate) struct LazyCoroutine {
    state: Mutex<CoroState>,
}

impl LazyCoroutine {
    pub(crate) fn new(spec: GatherSpec) -> Self {
        Self {
            state: Mutex::new(CoroState::Unstarted(spec)),
        }
    }

    /// The iterator to resume, starting the gather on the first call.
    fn iter(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let spec = {
            let mut st = self.state.lock();
            match std::mem::replace(&mut *st, CoroState::Done) {
                CoroState::Unstarted(spec) => spec,
                CoroState::Running { future, iter } => {
                    let resume = iter.clone_ref(py);
                    *st = CoroState::Running { future, iter };
                    return Ok(resume);
                }
                CoroState::Done => {
                    return Err(PyRuntimeError::new_err(
                        "cannot reuse already awaited coroutine",
                    ))
                }
            }
        };
        let future = start(py, spec)?;
        let iter = future.call_method0(intern!(py, "__await__"))?.unbind();
        *self.state.lock() = CoroState::Running {
            future: future.unbind(),
            iter: iter.clone_ref(py),
        };
        Ok(iter)
    }

    /// Ends the coroutine; a running gather is cancelled.
    fn finish(&self, py: Python<'_>) -> PyResult<()> {
        let old = std::mem::replace(&mut *self.state.lock(), CoroState::Done);
        if let CoroState::Running { future, .. } = old {
            let future = future.bind(py);
            if !future.call_method0(intern!(py, "done"))?.is_truthy()? {
                future.call_method0(intern!(py, "cancel"))?;
            }
        }
        Ok(())
    }

    fn resume(
        &self,
        py: Python<'_>,
        method: &Bound<'_, pyo3::types::PyString>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<PyAny>> {
        let iter = self.iter(py)?;
        let out = iter.bind(py).call_method1(method, args);
        if out.is_err() {
            // StopIteration (the result) or an exception: either way the coroutine is over.
            *self.state.lock() = CoroState::Done;
        }
        out.map(Bound::unbind)
    }
}

#[pymethods]
impl LazyCoroutine {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.resume(py, intern!(py, "send"), &PyTuple::new(py, [py.None()])?)
    }

    fn send(&self, py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
        self.resume(py, intern!(py, "send"), &PyTuple::new(py, [value])?)
    }

    #[pyo3(signature = (typ, val=None, tb=None))]
    fn throw(
        &self,
        py: Python<'_>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let running = matches!(*self.state.lock(), CoroState::Running { .. });
        if running {
            self.finish(py)?;
        } else {
            *self.state.lock() = CoroState::Done;
        }
        let exc = match val {
            Some(v) if !v.is_none() && typ.is_instance_of::<PyType>() => typ.call1((v,))?,
            _ => typ.clone(),
        };
        let err = PyErr::from_value(exc);
        if let Some(tb) = tb.filter(|tb| !tb.is_none()) {
            err.set_traceback(py, Some(tb.cast::<pyo3::types::PyTraceback>()?.clone()));
        }
        Err(err)
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.finish(py)
    }
}
