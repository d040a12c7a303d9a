//! `with_cache`: results memoized by input (or by `key(input)`), shared by every thread and
//! event loop, with an LRU bound and an optional time to live. Concurrent calls with the same
//! key are coalesced (single-flight): one computes, the others wait for its outcome.
//!
//! Errors are not cached: the callers waiting on a failed computation get its exception, the
//! next call computes again. A computation interrupted by Ctrl-C or cancelled hands over to one of
//! its waiters.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::errors::type_error;
use crate::validate::{self, CacheSize};
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyTypeInfo};

use super::base::{Node, Runnable};
use super::{describe, Args, Step};
use crate::config::type_name;
use crate::exec::aio;
use crate::exec::coro::{py_await, StepFuture};
use crate::exec::wait::{self, Signal};
use crate::exec::{Caller, Kind};

enum SlotState {
    /// Being computed; tasks waiting on it, by loop.
    Pending {
        waiters: Vec<(Py<PyAny>, Py<PyAny>)>,
    },
    Ready {
        value: Py<PyAny>,
        expires: Option<Instant>,
    },
    /// The computation raised this exception (not cached: the slot leaves the map).
    Failed(Py<PyAny>),
    /// The computation was interrupted or cancelled; waiters look again.
    Abandoned,
}

/// One key's entry in the map.
#[pyclass(frozen)]
struct Slot {
    state: Mutex<SlotState>,
    /// Set when the state leaves `Pending` (for waiting threads).
    settled: Signal,
}

/// What a waiter finds once a slot settled.
enum Settled {
    Value(Py<PyAny>),
    Error(Py<PyAny>),
    Retry,
}

impl Slot {
    fn settled(&self, py: Python<'_>) -> Settled {
        match &*self.state.lock() {
            SlotState::Ready { value, .. } => Settled::Value(value.clone_ref(py)),
            SlotState::Failed(exc) => Settled::Error(exc.clone_ref(py)),
            SlotState::Pending { .. } | SlotState::Abandoned => Settled::Retry,
        }
    }
}

#[pymethods]
impl Slot {
    /// Scheduled on a waiting task's loop when the slot settles: resolves its future. A
    /// future resolved with the slot itself means "look again".
    fn _resolve(slf: &Bound<'_, Self>, future: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if future.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(()); // the waiter was cancelled
        }
        match slf.get().settled(py) {
            Settled::Value(value) => future.call_method1(intern!(py, "set_result"), (value,)),
            Settled::Error(exc) => future.call_method1(intern!(py, "set_exception"), (exc,)),
            Settled::Retry => future.call_method1(intern!(py, "set_result"), (slf,)),
        }
        .map(drop)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(state) = self.state.try_lock() {
            match &*state {
                SlotState::Pending { waiters } => {
                    for (event_loop, future) in waiters {
                        visit.call(event_loop)?;
                        visit.call(future)?;
                    }
                }
                SlotState::Ready { value, .. } => visit.call(value)?,
                SlotState::Failed(exc) => visit.call(exc)?,
                SlotState::Abandoned => {}
            }
        }
        Ok(())
    }
}

enum Lookup<'py> {
    Hit(Py<PyAny>),
    /// Another call computes it.
    Wait(Bound<'py, Slot>),
    /// This call computes it, then settles the slot.
    Lead(Bound<'py, Slot>),
}

struct Store {
    /// key -> Slot, least recently used first.
    map: Py<PyDict>,
    maxsize: Option<usize>,
    ttl: Option<Duration>,
    hits: AtomicU64,
    misses: AtomicU64,
}

// NOTE: the map is a Python dict, so that keys hash and compare as in Python. It is used without
// a lock of ours: a key's `__hash__`/`__eq__` may run Python code, and a thread holding a Rust lock
// across that could deadlock on the GIL. Each dict operation is atomic under the GIL, and
// `setdefault` decides the leader; the remaining races (two threads refreshing one key) only
// cost a recomputation, never a wrong result.
impl Store {
    fn lookup<'py>(&self, key: &Bound<'py, PyAny>) -> PyResult<Lookup<'py>> {
        let py = key.py();
        let map = self.map.bind(py);
        loop {
            if let Some(found) = map.get_item(key).map_err(|e| unhashable(key, e))? {
                let slot = found.cast_into::<Slot>()?;
                let (hit, pending) = match &*slot.get().state.lock() {
                    SlotState::Ready { value, expires } => (
                        expires
                            .is_none_or(|at| at > Instant::now())
                            .then(|| value.clone_ref(py)),
                        false,
                    ),
                    SlotState::Pending { .. } => (None, true),
                    SlotState::Failed(_) | SlotState::Abandoned => (None, false),
                };
                if pending {
                    return Ok(Lookup::Wait(slot));
                }
                match hit {
                    Some(value) => {
                        // Most recently used last. A key removed meanwhile (by another thread,
                        // while a Python `__eq__` ran) stays removed.
                        if self.maxsize.is_some() && map.del_item(key).is_ok() {
                            map.set_item(key, &slot)?;
                        }
                        self.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(Lookup::Hit(value));
                    }
                    None => {
                        Self::remove(map, key, &slot)?;
                        continue;
                    }
                }
            }
            let slot = Bound::new(
                py,
                Slot {
                    state: Mutex::new(SlotState::Pending {
                        waiters: Vec::new(),
                    }),
                    settled: Signal::default(),
                },
            )?;
            let (inserted, _) = map.set_default_with_result(key, &slot)?;
            if inserted {
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.evict(map)?;
                return Ok(Lookup::Lead(slot));
            }
        }
    }

    fn evict(&self, map: &Bound<'_, PyDict>) -> PyResult<()> {
        let Some(maxsize) = self.maxsize else {
            return Ok(());
        };
        while map.len() > maxsize {
            let Some((oldest, _)) = map.iter().next() else {
                break;
            };
            map.del_item(oldest)?;
        }
        Ok(())
    }

    /// Removes `key` if it still maps to `slot` (if another thread removed it meanwhile, fine).
    fn remove(
        map: &Bound<'_, PyDict>,
        key: &Bound<'_, PyAny>,
        slot: &Bound<'_, Slot>,
    ) -> PyResult<()> {
        if map.get_item(key)?.is_some_and(|s| s.is(slot)) {
            let _ = map.del_item(key);
        }
        Ok(())
    }

    /// The leader's outcome: `Ok` is cached, an `Exception` is handed to the waiters, anything
    /// else (KeyboardInterrupt, CancelledError) hands the computation over.
    fn settle(
        &self,
        key: &Bound<'_, PyAny>,
        slot: &Bound<'_, Slot>,
        outcome: Result<&Bound<'_, PyAny>, &Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = key.py();
        let new_state = match outcome {
            Ok(value) => SlotState::Ready {
                value: value.clone().unbind(),
                expires: self.ttl.and_then(wait::deadline_after),
            },
            Err(exc) if exc.is_instance_of::<PyException>() => {
                SlotState::Failed(exc.clone().unbind())
            }
            Err(_) => SlotState::Abandoned,
        };
        let cached = matches!(new_state, SlotState::Ready { .. });
        let old = std::mem::replace(&mut *slot.get().state.lock(), new_state);
        slot.get().settled.set();
        if !cached {
            Self::remove(self.map.bind(py), key, slot)?;
        }
        if let SlotState::Pending { waiters } = old {
            let resolve = slot.getattr(intern!(py, "_resolve"))?;
            for (event_loop, future) in waiters {
                // A closed loop raises: its waiter is gone.
                let _ = event_loop
                    .bind(py)
                    .call_method1(intern!(py, "call_soon_threadsafe"), (&resolve, future));
            }
        }
        Ok(())
    }
}

/// The cache key was not hashable: say what to do.
fn unhashable(key: &Bound<'_, PyAny>, err: PyErr) -> PyErr {
    let py = key.py();
    if !err.is_instance_of::<PyTypeError>(py) || key.hash().is_ok() {
        return err;
    }
    let new = type_error(format!(
        "with_cache: the cache key ({}) is not hashable; pass with_cache(key=...) to make a \
         hashable key from the input, e.g. key=lambda x: json.dumps(x, sort_keys=True)",
        describe(key)
    ));
    new.set_cause(py, Some(err));
    new
}

pub(crate) struct CachedNode {
    inner: Arc<Step>,
    store: Arc<Store>,
    /// `key(input)` is the cache key; `None`: the input itself.
    key: Option<Py<PyAny>>,
}

impl CachedNode {
    fn key<'py>(&self, input: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        match &self.key {
            Some(key) => key.bind(input.py()).call1((input,)),
            None => Ok(input.clone()),
        }
    }
}

/// A lookup's outcome, held across waits.
enum Found {
    Hit(Py<PyAny>),
    Wait(Py<Slot>),
    Lead(Py<Slot>),
}

impl CachedNode {
    /// Waits the caller's way for another call's computation of `slot`.
    async fn wait(slot: &Py<Slot>, mode: Caller) -> PyResult<Settled> {
        match mode {
            Caller::Thread => Python::attach(|py| {
                wait::wait(py, &slot.get().settled)?;
                Ok(slot.get().settled(py))
            }),
            Caller::Loop => {
                let future = Python::attach(|py| -> PyResult<Py<PyAny>> {
                    let (event_loop, future) = aio::loop_future(py)?;
                    let pending = {
                        let mut state = slot.get().state.lock();
                        match &mut *state {
                            SlotState::Pending { waiters } => {
                                waiters.push((event_loop.unbind(), future.clone().unbind()));
                                true
                            }
                            _ => false,
                        }
                    };
                    if !pending {
                        // Settled meanwhile (on another thread).
                        Slot::_resolve(slot.bind(py), &future)?;
                    }
                    Ok(future.unbind())
                })?;
                // Resolved with the slot itself: the computing call was cancelled, look again.
                let value = py_await(future).await?;
                Ok(Python::attach(|py| {
                    if value.bind(py).is(slot) {
                        Settled::Retry
                    } else {
                        Settled::Value(value)
                    }
                }))
            }
        }
    }
}

/// The call computing a key: settles its slot with the outcome, or hands the computation over
/// (to a waiter) if it is dropped before it has one (cancelled).
struct Leader {
    store: Arc<Store>,
    key: Py<PyAny>,
    slot: Option<Py<Slot>>,
}

impl Leader {
    fn settle(mut self, outcome: &PyResult<Py<PyAny>>) -> PyResult<()> {
        let slot = self.slot.take().expect("settled once");
        Python::attach(|py| {
            let outcome = match outcome {
                Ok(value) => Ok(value.bind(py).clone()),
                Err(err) => Err(err.value(py).clone().into_any()),
            };
            self.store
                .settle(self.key.bind(py), slot.bind(py), outcome.as_ref())
        })
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            Python::attach(|py| {
                let cancelled = pyo3::exceptions::asyncio::CancelledError::new_err(());
                let exc = cancelled.value(py).clone().into_any();
                let _ = self
                    .store
                    .settle(self.key.bind(py), slot.bind(py), Err(&exc));
            });
        }
    }
}

impl Node for CachedNode {
    /// Always awaited on the loop: a hit costs no thread.
    fn kind(&self) -> Kind {
        Kind::awaited_around([self.inner.kind()])
    }

    /// A fastlcel wrapper: the runnable it wraps opens the run.
    fn opens_run(&self) -> bool {
        false
    }

    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        Box::pin(async move {
            let key = Python::attach(|py| self.key(input.bind(py)).map(Bound::unbind))?;
            loop {
                let found = Python::attach(|py| -> PyResult<Found> {
                    Ok(match self.store.lookup(key.bind(py))? {
                        Lookup::Hit(value) => Found::Hit(value),
                        Lookup::Wait(slot) => Found::Wait(slot.unbind()),
                        Lookup::Lead(slot) => Found::Lead(slot.unbind()),
                    })
                })?;
                match found {
                    Found::Hit(value) => return Ok(value),
                    Found::Wait(slot) => match Self::wait(&slot, mode).await? {
                        Settled::Value(value) => return Ok(value),
                        Settled::Error(exc) => {
                            return Err(Python::attach(|py| PyErr::from_value(exc.into_bound(py))))
                        }
                        Settled::Retry => continue,
                    },
                    Found::Lead(slot) => {
                        let leader = Leader {
                            store: Arc::clone(&self.store),
                            key: Python::attach(|py| key.clone_ref(py)),
                            slot: Some(slot),
                        };
                        let result = self.inner.run(input, args, mode).await;
                        leader.settle(&result)?;
                        return result;
                    }
                }
            }
        })
    }

    /// Named as langchain_core names a binding: after its runnable.
    fn name(&self, py: Python<'_>) -> String {
        self.inner.name(py)
    }

    fn named_by_class(&self) -> bool {
        false
    }

    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        Cached::type_object(py)
    }

    /// A copy starts with an empty cache.
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("bound", self.inner.object(py))?;
        fields.set_item("maxsize", self.store.maxsize)?;
        fields.set_item("ttl", self.store.ttl.map(|t| t.as_secs_f64()))?;
        fields.set_item("key", &self.key)?;
        Ok(fields)
    }

    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let maxsize = self
            .store
            .maxsize
            .map_or_else(|| "None".to_owned(), |n| n.to_string());
        let ttl = self
            .store
            .ttl
            .map_or_else(|| "None".to_owned(), |t| t.as_secs_f64().to_string());
        Ok(format!(
            "Cached(bound={}, maxsize={maxsize}, ttl={ttl})",
            self.inner.object(py).bind(py).repr()?
        ))
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.inner.traverse(visit)?;
        visit.call(&self.store.map)?;
        if let Some(key) = &self.key {
            visit.call(key)?;
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A runnable whose results are memoized (see `Runnable.with_cache`).
#[pyclass(frozen, subclass, extends = Runnable, module = "fastlcel", name = "Cached")]
pub(crate) struct Cached;

impl Cached {
    fn store<'a>(slf: &'a Bound<'_, Self>) -> PyResult<&'a Store> {
        Ok(&Runnable::node_as::<CachedNode>(slf.as_super())?.store)
    }
}

#[pymethods]
impl Cached {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(bound, *, maxsize=128, ttl=None, key=None, name=None)")]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<pyo3::PyClassInitializer<Self>> {
        Ok(Runnable::blank_of(cls, &Self::type_object(cls.py()))?.add_subclass(Cached))
    }

    /// `Cached(bound, maxsize=..., ttl=..., key=...)`: `bound.with_cache(...)`.
    #[pyo3(signature = (bound, *, maxsize=CacheSize(Some(128)), ttl=None, key=None, name=None))]
    fn __init__(
        slf: &Bound<'_, Self>,
        bound: &Bound<'_, PyAny>,
        maxsize: CacheSize,
        ttl: Option<&Bound<'_, PyAny>>,
        key: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = validate::name(name, "Cached(name)")?;
        let step = Step::coerce(bound, "Cached bound")?;
        let node = CachedNode::new(slf.py(), step, maxsize.0, ttl, key)?;
        Runnable::set_node(slf.as_super(), node, name)
    }

    /// The runnable whose results are cached.
    #[getter]
    fn bound(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let node: &CachedNode = Runnable::node_as(slf.as_super())?;
        Ok(node.inner.object(slf.py()))
    }

    /// Forgets every cached result.
    fn cache_clear(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::store(slf)?.map.bind(slf.py()).clear();
        Ok(())
    }

    /// `{"hits": ..., "misses": ..., "size": ..., "maxsize": ...}`.
    fn cache_info<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        let store = Self::store(slf)?;
        let info = PyDict::new(py);
        info.set_item("hits", store.hits.load(Ordering::Relaxed))?;
        info.set_item("misses", store.misses.load(Ordering::Relaxed))?;
        info.set_item("size", store.map.bind(py).len())?;
        info.set_item("maxsize", store.maxsize)?;
        Ok(info)
    }
}

/// `runnable.with_cache(maxsize=..., ttl=..., key=...)`.
pub(crate) fn with_cache(
    step: Step,
    maxsize: Option<usize>,
    ttl: Option<&Bound<'_, PyAny>>,
    key: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<Runnable>> {
    Python::attach(|py| {
        let node = CachedNode::new(py, step, maxsize, ttl, key)?;
        Runnable::create(py, node, Cached, None)
    })
}

impl CachedNode {
    fn new(
        py: Python<'_>,
        step: Step,
        maxsize: Option<usize>,
        ttl: Option<&Bound<'_, PyAny>>,
        key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let ttl = validate::optional_seconds(ttl, "with_cache(ttl)")?.map(Duration::from_secs_f64);
        let key = match key.filter(|k| !k.is_none()) {
            Some(k) if !k.is_callable() => {
                return Err(type_error(format!(
                    "with_cache key must be a function of the input that returns a hashable \
                     key; got {}",
                    type_name(k)
                )))
            }
            k => k.map(|k| k.clone().unbind()),
        };
        Ok(CachedNode {
            inner: Arc::new(step),
            store: Arc::new(Store {
                map: PyDict::new(py).unbind(),
                maxsize,
                ttl,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
            key,
        })
    }
}
