//! Streams of chunks: what `stream`, `transform` and their async twins are made of.
//!
//! A stream is a Rust `Stream` of Python objects that is polled the way its consumer waits: on a
//! thread that may block, every poll is ready at once; on an event loop, a poll may suspend on a
//! loop future (see `coro`). [`Chunks`] records which, so that a stream crosses to the other
//! kind of consumer through a hop per chunk ([`Chunks::conform`]). Streams that run at once
//! (a Parallel's steps) are drained by pool threads or by tasks into a [`Queue`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_core::Stream;
use futures_util::StreamExt;
use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyStopAsyncIteration, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList};

use super::aio::{self, on_pool, Home};
use super::bridge;
use super::context::{self, Context};
use super::coro::{block_on, py_await_in, Coroutine, StepFuture};
use super::fanout::FanOut;
use super::gather::{self, Sink};
use super::pool::{self, Busy, InFlight, Owner};
use super::queue::{Notify, Queue};
use super::wait::Mailbox;
use super::{needs_loop, place, Caller, FanOpts, Kind, Place, Work};

/// A stream of chunks (or of the error that ends it).
pub(crate) type ChunkStream = Pin<Box<dyn Stream<Item = PyResult<Py<PyAny>>> + Send>>;

/// How polling a stream may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waits {
    /// Never: its chunks are at hand (a single input value).
    Never,
    /// It may block the polling thread (a sync generator): not for an event loop.
    Blocks,
    /// It may suspend on a loop future: for an awaiting caller only.
    Suspends,
}

/// A stream and how polling it waits.
pub(crate) struct Chunks {
    pub(crate) stream: ChunkStream,
    pub(crate) waits: Waits,
}

impl Chunks {
    pub(crate) fn new(stream: ChunkStream, waits: Waits) -> Self {
        Self { stream, waits }
    }

    /// The stream of a step run `mode`'s way.
    pub(crate) fn made_by(stream: ChunkStream, mode: Caller) -> Self {
        let waits = match mode {
            Caller::Thread => Waits::Blocks,
            Caller::Loop => Waits::Suspends,
        };
        Self { stream, waits }
    }

    /// A stream that fails at once with `err`.
    pub(crate) fn failed(err: PyErr, mode: Caller) -> Self {
        Self::made_by(Box::pin(futures_util::stream::iter([Err(err)])), mode)
    }

    /// One chunk.
    pub(crate) fn once(value: Py<PyAny>) -> Self {
        Self::new(
            Box::pin(futures_util::stream::iter([Ok(value)])),
            Waits::Never,
        )
    }

    /// The chunks of a Python iterable, each `next()` on the thread that polls.
    pub(crate) fn from_iterable(iterable: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::from_iterable_in(iterable, None)
    }

    /// [`Self::from_iterable`], each `next()` in the contextvars context `ctx` (if any): where a
    /// generator's own code runs.
    pub(crate) fn from_iterable_in(
        iterable: &Bound<'_, PyAny>,
        ctx: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let iter = iterable.try_iter()?.into_any().unbind();
        let stream = async_stream::stream! {
            loop {
                let next = Python::attach(|py| -> Option<PyResult<Py<PyAny>>> {
                    let iter = iter.bind(py);
                    let next = || {
                        // SAFETY: `iter` is a live iterator (made by `iter()` above).
                        let item = unsafe { pyo3::ffi::PyIter_Next(iter.as_ptr()) };
                        if item.is_null() {
                            return Ok(PyErr::take(py).map(Err));
                        }
                        // SAFETY: PyIter_Next returned a new reference.
                        Ok(Some(Ok(unsafe { Bound::from_owned_ptr(py, item) }.unbind())))
                    };
                    let item = match &ctx {
                        Some(ctx) => context::enter(ctx.bind(py), next),
                        None => next(),
                    };
                    item.unwrap_or_else(|err| Some(Err(err)))
                });
                match next {
                    Some(item) => {
                        let end = item.is_err();
                        yield item;
                        if end {
                            break;
                        }
                    }
                    None => break,
                }
            }
        };
        Ok(Self::new(Box::pin(stream), Waits::Blocks))
    }

    /// The chunks of a Python async iterator, each `__anext__()` awaited.
    pub(crate) fn from_aiter(aiter: Py<PyAny>) -> Self {
        Self::from_aiter_in(aiter, None)
    }

    /// [`Self::from_aiter`], its code run in the contextvars context `ctx` (if any).
    pub(crate) fn from_aiter_in(aiter: Py<PyAny>, ctx: Option<Py<PyAny>>) -> Self {
        let stream = async_stream::stream! {
            loop {
                let anext = Python::attach(|py| {
                    let anext = || aiter.bind(py).call_method0(intern!(py, "__anext__"));
                    match &ctx {
                        Some(ctx) => context::enter(ctx.bind(py), anext),
                        None => anext(),
                    }
                    .map(Bound::unbind)
                });
                let ctx = Python::attach(|py| ctx.as_ref().map(|c| c.clone_ref(py)));
                let item = match anext {
                    Ok(anext) => py_await_in(anext, ctx).await,
                    Err(err) => Err(err),
                };
                match item {
                    Err(err) if Python::attach(|py| err.is_instance_of::<PyStopAsyncIteration>(py)) => break,
                    Err(err) => {
                        yield Err(err);
                        break;
                    }
                    Ok(chunk) => yield Ok(chunk),
                }
            }
        };
        Self::new(Box::pin(stream), Waits::Suspends)
    }

    /// This stream as a consumer of `mode` may poll it: a thread cannot poll a stream that
    /// suspends (each chunk is then fetched on an event loop), a loop must not poll one that
    /// blocks (each chunk is then fetched on a pool thread).
    pub(crate) fn conform(self, mode: Caller) -> Chunks {
        match (self.waits, mode) {
            (Waits::Suspends, Caller::Thread) => {
                let shared = Shared::new(self.stream);
                let stream = async_stream::stream! {
                    loop {
                        let fut = shared.next_future();
                        match Python::attach(|py| bridge::run_blocking(py, fut, None)) {
                            Ok(Some(chunk)) if is_end(&chunk) => break,
                            Ok(Some(chunk)) => yield Ok(chunk),
                            Ok(None) => break,
                            Err(err) => {
                                yield Err(err);
                                break;
                            }
                        }
                    }
                };
                Chunks::new(Box::pin(stream), Waits::Blocks)
            }
            (Waits::Blocks, Caller::Loop) => {
                let shared = Shared::new(self.stream);
                let stream = async_stream::stream! {
                    loop {
                        match on_pool(shared.next_future()).await {
                            Ok(chunk) if is_end(&chunk) => break,
                            Ok(chunk) => yield Ok(chunk),
                            Err(err) => {
                                yield Err(err);
                                break;
                            }
                        }
                    }
                };
                Chunks::new(Box::pin(stream), Waits::Suspends)
            }
            _ => self,
        }
    }
}

/// The end of a stream, as a step's output (a stream's next chunk crossing to another thread).
fn end_marker(py: Python<'_>) -> &Py<PyAny> {
    static END: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    END.get_or_init(py, || {
        py.get_type::<pyo3::types::PyAny>()
            .call0()
            .expect("object() cannot fail")
            .unbind()
    })
}

fn is_end(chunk: &Py<PyAny>) -> bool {
    Python::attach(|py| chunk.is(end_marker(py)))
}

/// A stream read from several places (one after the other): taken out while polled, so that
/// no lock is held across a poll.
#[derive(Clone)]
pub(crate) struct Shared(Arc<Mutex<Option<ChunkStream>>>);

impl Shared {
    pub(crate) fn new(stream: ChunkStream) -> Self {
        Self(Arc::new(Mutex::new(Some(stream))))
    }

    /// The next chunk; `None` at the end. Polls without holding the lock.
    pub(crate) async fn next(&self) -> Option<PyResult<Py<PyAny>>> {
        let mut stream = self.0.lock().take()?;
        let item = stream.next().await;
        if item.is_some() {
            *self.0.lock() = Some(stream);
        }
        item
    }

    /// [`Self::next`] as a step's future: the end is [`end_marker`].
    fn next_future(&self) -> StepFuture {
        let shared = self.clone();
        Box::pin(async move {
            match shared.next().await {
                Some(item) => item,
                None => Ok(Python::attach(|py| end_marker(py).clone_ref(py))),
            }
        })
    }
}

/// langchain_core's `_ChunkAccumulator`: adds up chunks with `+`; a chunk that cannot be added
/// (TypeError) replaces the sum (and, with `stop_after_unaddable`, so does every later one).
/// Leading `AIMessageChunk`s are kept until the sum is read, then merged in one addition: each
/// addition of two re-parses the tool call arguments so far, so adding them one at a time is
/// quadratic in a tool call's length.
pub(crate) struct Accumulator {
    value: Option<Py<PyAny>>,
    addable: bool,
    stop_after_unaddable: bool,
    messages: Vec<Py<PyAny>>,
}

impl Accumulator {
    pub(crate) fn new(stop_after_unaddable: bool) -> Self {
        Self {
            value: None,
            addable: true,
            stop_after_unaddable,
            messages: Vec::new(),
        }
    }

    pub(crate) fn add(&mut self, py: Python<'_>, chunk: Py<PyAny>) -> PyResult<()> {
        if self.value.is_none() && self.addable && is_ai_message_chunk(py, chunk.bind(py))? {
            self.messages.push(chunk);
            return Ok(());
        }
        self.flush(py)?;
        self.add_one(py, chunk)
    }

    fn add_one(&mut self, py: Python<'_>, chunk: Py<PyAny>) -> PyResult<()> {
        let value = match self.value.take() {
            Some(value) if !value.is_none(py) && self.addable => value,
            _ => {
                self.value = Some(chunk);
                return Ok(());
            }
        };
        match value.bind(py).add(chunk.bind(py)) {
            Ok(sum) => self.value = Some(sum.unbind()),
            Err(err) if err.is_instance_of::<PyTypeError>(py) => {
                self.value = Some(chunk);
                self.addable = !self.stop_after_unaddable;
            }
            Err(err) => {
                self.value = Some(value);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Merges the kept message chunks into the sum: `first + [the others]` (one after the
    /// other if that raises TypeError).
    fn flush(&mut self, py: Python<'_>) -> PyResult<()> {
        let mut chunks = std::mem::take(&mut self.messages).into_iter();
        let Some(first) = chunks.next() else {
            return Ok(());
        };
        let rest: Vec<Py<PyAny>> = chunks.collect();
        if rest.is_empty() {
            self.value = Some(first);
            return Ok(());
        }
        match first.bind(py).add(PyList::new(py, &rest)?) {
            Ok(sum) => {
                self.value = Some(sum.unbind());
                Ok(())
            }
            Err(err) if err.is_instance_of::<PyTypeError>(py) => {
                for chunk in std::iter::once(first).chain(rest) {
                    self.add_one(py, chunk)?;
                }
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// The sum, if any chunk came.
    pub(crate) fn value(mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.flush(py)?;
        Ok(self.value)
    }

    /// The sum so far, if any chunk came (it stays).
    pub(crate) fn value_ref(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.flush(py)?;
        Ok(self.value.as_ref().map(|v| v.clone_ref(py)))
    }

    /// The sum, or what was merged before merging raised: for reporting another error.
    pub(crate) fn value_for_error(&mut self, py: Python<'_>) -> Option<Py<PyAny>> {
        let _ = self.flush(py);
        self.value.as_ref().map(|v| v.clone_ref(py))
    }
}

/// Whether `chunk` is a langchain_core `AIMessageChunk` (never, unless langchain_core's
/// messages were imported).
fn is_ai_message_chunk(py: Python<'_>, chunk: &Bound<'_, PyAny>) -> PyResult<bool> {
    static CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let class = match CLASS.get(py) {
        Some(class) => class.bind(py),
        None => {
            let modules = py.import("sys")?.getattr("modules")?;
            let Ok(Some(module)) = modules
                .cast_into::<PyDict>()
                .map_err(PyErr::from)?
                .get_item("langchain_core.messages")
            else {
                return Ok(false);
            };
            let class = module.getattr("AIMessageChunk")?;
            CLASS.get_or_init(py, || class.unbind()).bind(py)
        }
    };
    chunk.is_instance(class)
}

/// The sum of every chunk of `input` (langchain's accumulation); `None` if there was none.
pub(crate) async fn accumulate(mut input: Chunks) -> PyResult<Option<Py<PyAny>>> {
    let mut acc = Accumulator::new(false);
    while let Some(chunk) = input.stream.next().await {
        let chunk = chunk?;
        Python::attach(|py| acc.add(py, chunk))?;
    }
    Python::attach(|py| acc.value(py))
}

/// The output chunks of a step of `kind` for `caller`: `make(input, mode)` is the step's stream
/// run `mode`'s way, which this runs where [`place`] says (its input and output each read the
/// way their consumer waits).
pub(crate) fn dispatch_stream(
    kind: Kind,
    caller: Caller,
    input: Chunks,
    make: impl FnOnce(Chunks, Caller) -> Chunks,
) -> Chunks {
    let mode = match place(kind, caller) {
        Place::Here(mode) => mode,
        Place::Pool => Caller::Thread,
        Place::Loop => Caller::Loop,
    };
    make(input.conform(mode), mode).conform(caller)
}

/// `n` copies of a stream, each reading every chunk; whichever copy needs a chunk first fetches
/// it for all. For steps that run at once on one input (a Parallel's).
pub(crate) fn tee(input: Chunks, n: usize, mode: Caller) -> Vec<Chunks> {
    let input = input.conform(mode);
    let waits = input.waits;
    let tee = Arc::new(Tee {
        source: Shared::new(input.stream),
        state: Mutex::new(TeeState {
            buffers: (0..n).map(|_| VecDeque::new()).collect(),
            ended: false,
            fetching: false,
        }),
        fetched: (0..n).map(|_| Notify::new()).collect(),
    });
    (0..n)
        .map(|i| {
            let tee = Arc::clone(&tee);
            let stream = async_stream::stream! {
                while let Some(item) = tee.next(i, mode).await {
                    let end = item.is_err();
                    yield item;
                    if end {
                        break;
                    }
                }
            };
            Chunks::new(Box::pin(stream), waits)
        })
        .collect()
}

struct TeeState {
    buffers: Vec<VecDeque<PyResult<Py<PyAny>>>>,
    ended: bool,
    /// A copy is fetching the next chunk; the others wait for it.
    fetching: bool,
}

struct Tee {
    source: Shared,
    state: Mutex<TeeState>,
    /// Per copy: a fetch is over (look again).
    fetched: Vec<Notify>,
}

impl Tee {
    async fn next(&self, i: usize, mode: Caller) -> Option<PyResult<Py<PyAny>>> {
        loop {
            let fetch = {
                let mut st = self.state.lock();
                if let Some(item) = st.buffers[i].pop_front() {
                    return Some(item);
                }
                if st.ended {
                    return None;
                }
                !std::mem::replace(&mut st.fetching, true)
            };
            if !fetch {
                // Another copy is fetching: wait until it is done, then look again.
                if let Err(err) = self.fetched[i].wait(mode).await {
                    return Some(Err(err));
                }
                continue;
            }
            let item = self.source.next().await;
            Python::attach(|py| {
                {
                    let mut st = self.state.lock();
                    st.fetching = false;
                    match item {
                        Some(Ok(chunk)) => {
                            for buffer in st.buffers.iter_mut() {
                                buffer.push_back(Ok(chunk.clone_ref(py)));
                            }
                        }
                        Some(Err(err)) => {
                            for buffer in st.buffers.iter_mut() {
                                buffer.push_back(Err(err.clone_ref(py)));
                            }
                            st.ended = true;
                        }
                        None => st.ended = true,
                    }
                }
                for (j, fetched) in self.fetched.iter().enumerate() {
                    if j != i {
                        fetched.notify(py);
                    }
                }
            });
        }
    }
}

/// Chunks of several streams in the order they come, as `(index, chunk)`; the first error ends
/// it. Each stream is drained at once by a pool thread (for a thread) or a task (on a loop).
pub(crate) fn merge(streams: Vec<Chunks>, mode: Caller) -> MergedStream {
    let n = streams.len();
    let drains = Arc::new(Drains::default());
    let queue: Arc<DrainQueue> = Arc::new(match mode {
        // The thread that reads the merge owns the drains' jobs.
        Caller::Thread => Queue::owning(Arc::clone(&drains.mailbox)),
        Caller::Loop => Queue::new(),
    });
    let streams: Vec<Chunks> = streams.into_iter().map(|s| s.conform(mode)).collect();
    let stream = async_stream::stream! {
        let started = Python::attach(|py| drains.start(py, streams, &queue, mode));
        if let Err(err) = started {
            yield Err(err);
            return;
        }
        let mut running = n;
        while running > 0 {
            match queue.pop(mode).await {
                Ok((i, Some(Ok(chunk)))) => yield Ok((i, chunk)),
                Ok((_, Some(Err(err)))) | Err(err) => {
                    yield Err(err);
                    return;
                }
                Ok((_, None)) => running -= 1,
            }
        }
    };
    Box::pin(stream)
}

/// What the drains of a merge push: a stream's index and its next item (`None`: it ended).
type DrainQueue = Queue<(usize, Option<PyResult<Py<PyAny>>>)>;

/// The output of [`merge`].
pub(crate) type MergedStream = Pin<Box<dyn Stream<Item = PyResult<(usize, Py<PyAny>)>> + Send>>;

/// The drains of a merge, stopped when the merged stream is dropped.
#[derive(Default)]
struct Drains {
    stop: Arc<AtomicBool>,
    tasks: Mutex<Vec<Py<PyAny>>>,
    /// The reading thread's, for the drains on pool threads.
    mailbox: Arc<Mailbox>,
}

impl Drains {
    fn start(
        &self,
        py: Python<'_>,
        streams: Vec<Chunks>,
        queue: &Arc<DrainQueue>,
        mode: Caller,
    ) -> PyResult<()> {
        let ctx = Context::capture(py)?;
        for (i, chunks) in streams.into_iter().enumerate() {
            let queue = Arc::clone(queue);
            let stop = Arc::clone(&self.stop);
            let mut stream = chunks.stream;
            let drain = async move {
                while !stop.load(Ordering::Acquire) {
                    match stream.next().await {
                        Some(item) => {
                            let end = item.is_err();
                            Python::attach(|py| queue.push(py, (i, Some(item))));
                            if end {
                                return Ok(Python::attach(|py| py.None()));
                            }
                        }
                        None => break,
                    }
                }
                Python::attach(|py| queue.push(py, (i, None)));
                Ok(Python::attach(|py| py.None()))
            };
            match mode {
                Caller::Thread => {
                    let ctx = ctx.clone_ref(py);
                    let home = Home::for_helpers(py);
                    let fut: StepFuture = Box::pin(drain);
                    let owner = Owner::Waiter(Arc::clone(&self.mailbox));
                    // Never refused: only an `Escalate` job can be.
                    let _ = pool::submit(Box::new(move || drain_on_thread(fut, ctx, home)), owner);
                }
                Caller::Loop => {
                    let coro = Bound::new(py, Coroutine::for_task(Box::pin(drain)))?;
                    let event_loop = aio::running_loop(py)?
                        .ok_or_else(|| PyRuntimeError::new_err("no running event loop"))?;
                    let task = context::enter(&ctx.fresh(py)?, || {
                        event_loop.call_method1(intern!(py, "create_task"), (coro,))
                    })?;
                    self.tasks.lock().push(task.unbind());
                }
            }
        }
        Ok(())
    }
}

impl Drop for Drains {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.mailbox.close();
        let tasks = std::mem::take(&mut *self.tasks.lock());
        if tasks.is_empty() {
            return;
        }
        Python::attach(|py| {
            for task in tasks {
                let _ = task.bind(py).call_method0(intern!(py, "cancel"));
            }
        });
    }
}

fn drain_on_thread(fut: StepFuture, ctx: Context, home: Option<Home>) {
    let Some(_in_flight) = InFlight::enter() else {
        return;
    };
    Python::attach(move |py| {
        let _busy = Busy::enter();
        let run = || ctx.run(py, || block_on(fut));
        let _ = Home::enter(home.as_ref(), py, run);
    });
}

/// A stream started now in the background (drained into a queue), read later: a step's output
/// that must be under way while something else is read first (Assign's mapper).
pub(crate) fn background(chunks: Chunks, mode: Caller) -> Chunks {
    let merged = merge(vec![chunks], mode);
    let waits = match mode {
        Caller::Thread => Waits::Blocks,
        Caller::Loop => Waits::Suspends,
    };
    Chunks::new(
        Box::pin(merged.map(|item| item.map(|(_, chunk)| chunk))),
        waits,
    )
}

/// `(index, result)` of every item of `work` as it finishes (a batch as completed). An item's
/// Exception is its result with `return_exceptions`; any other failure ends the stream with it.
/// Dropping the stream stops what has not started.
pub(crate) fn as_completed(work: Arc<dyn Work>, opts: FanOpts, caller: Caller) -> Chunks {
    if caller == Caller::Thread && needs_loop(&*work) {
        return as_completed(work, opts, Caller::Loop).conform(Caller::Thread);
    }
    let n = work.len();
    let mailbox = Mailbox::new();
    let queue: Arc<Queue<(usize, PyResult<Py<PyAny>>)>> = Arc::new(match caller {
        // The thread that reads the results owns the batch's jobs.
        Caller::Thread => Queue::owning(Arc::clone(&mailbox)),
        Caller::Loop => Queue::new(),
    });
    let stream = async_stream::stream! {
        let sink: Arc<dyn Sink> = Arc::new(QueueSink(Arc::clone(&queue)));
        let started = Python::attach(|py| Running::start(py, work, opts, sink, caller, mailbox));
        let _running = match started {
            Ok(running) => running,
            Err(err) => {
                yield Err(err);
                return;
            }
        };
        for _ in 0..n {
            match queue.pop(caller).await {
                Ok((i, outcome)) => {
                    let item = Python::attach(|py| match outcome {
                        Ok(value) => Ok((i, value).into_pyobject(py)?.into_any().unbind()),
                        Err(err) if opts.return_exceptions
                            && err.is_instance_of::<pyo3::exceptions::PyException>(py) =>
                        {
                            Ok((i, err.into_value(py)).into_pyobject(py)?.into_any().unbind())
                        }
                        Err(err) => Err(err),
                    });
                    let end = item.is_err();
                    yield item;
                    if end {
                        return;
                    }
                }
                Err(err) => {
                    yield Err(err);
                    return;
                }
            }
        }
    };
    Chunks::made_by(Box::pin(stream), caller)
}

struct QueueSink(Arc<Queue<(usize, PyResult<Py<PyAny>>)>>);

impl Sink for QueueSink {
    fn item(&self, py: Python<'_>, i: usize, outcome: PyResult<Py<PyAny>>) {
        self.0.push(py, (i, outcome));
    }
}

/// A batch running as completed; stopped when dropped (a gather's guard stops it).
struct Running {
    fan: Option<(Arc<FanOut>, Arc<Mailbox>)>,
    _gather: Option<gather::GatherGuard>,
}

impl Running {
    fn start(
        py: Python<'_>,
        work: Arc<dyn Work>,
        opts: FanOpts,
        sink: Arc<dyn Sink>,
        caller: Caller,
        mailbox: Arc<Mailbox>,
    ) -> PyResult<Self> {
        Ok(match caller {
            Caller::Thread => {
                let owner = Owner::Waiter(Arc::clone(&mailbox));
                Running {
                    fan: Some((FanOut::start_into(py, work, opts, sink, owner)?, mailbox)),
                    _gather: None,
                }
            }
            Caller::Loop => Running {
                fan: None,
                _gather: Some(gather::start_into(py, work, opts, sink)?),
            },
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some((fan, mailbox)) = &self.fan {
            fan.abort();
            mailbox.close();
        }
    }
}

enum IterState {
    Ready(ChunkStream),
    Running,
    Done,
}

/// Takes the stream out of `state` to poll it (none is held across the poll).
fn take(state: &Mutex<IterState>, running_error: fn() -> PyErr) -> PyResult<Option<ChunkStream>> {
    let mut st = state.lock();
    match std::mem::replace(&mut *st, IterState::Running) {
        IterState::Ready(stream) => Ok(Some(stream)),
        IterState::Running => Err(running_error()),
        IterState::Done => {
            *st = IterState::Done;
            Ok(None)
        }
    }
}

/// Puts the stream back after a poll, or marks the iterator done.
fn put_back(state: &Mutex<IterState>, stream: ChunkStream, item: &Option<PyResult<Py<PyAny>>>) {
    *state.lock() = match item {
        Some(Ok(_)) => IterState::Ready(stream),
        _ => IterState::Done,
    };
}

/// What `stream` and `transform` return: a Python iterator of a stream's chunks.
#[pyclass(frozen, name = "ChunkIterator", module = "fastlcel")]
pub(crate) struct ChunkIterator {
    state: Mutex<IterState>,
    /// The context every chunk is computed in (one copy for the whole stream), if isolated.
    ctx: Option<Context>,
}

impl ChunkIterator {
    /// For a caller: the chunks are computed in a copy of the caller's context.
    pub(crate) fn new(py: Python<'_>, chunks: Chunks) -> PyResult<Self> {
        Ok(Self {
            state: Mutex::new(IterState::Ready(chunks.conform(Caller::Thread).stream)),
            ctx: Some(Context::capture(py)?),
        })
    }

    /// For a step's function (a generator's input): no context of its own.
    pub(crate) fn bare(chunks: Chunks) -> Self {
        Self {
            state: Mutex::new(IterState::Ready(chunks.conform(Caller::Thread).stream)),
            ctx: None,
        }
    }
}

#[pymethods]
impl ChunkIterator {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let already = || PyValueError::new_err("generator already executing");
        let Some(mut stream) = take(&self.state, already)? else {
            return Ok(None);
        };
        let mut next = || block_on(async { Ok(stream.next().await) });
        let item = match &self.ctx {
            Some(ctx) => context::enter(ctx.object(py), next),
            None => next(),
        };
        let item = match item {
            Ok(item) => item,
            Err(err) => Some(Err(err)),
        };
        put_back(&self.state, stream, &item);
        item.transpose()
    }

    /// Stops the stream (what runs in it is dropped).
    fn close(&self) {
        *self.state.lock() = IterState::Done;
    }
}

/// What `astream` and `atransform` return: a Python async iterator of a stream's chunks.
#[pyclass(frozen, name = "ChunkAsyncIterator", module = "fastlcel")]
pub(crate) struct ChunkAsyncIterator {
    state: Arc<Mutex<IterState>>,
    ctx: Option<Arc<Context>>,
}

impl ChunkAsyncIterator {
    /// For a caller: the chunks are computed in a copy of the caller's context.
    pub(crate) fn new(py: Python<'_>, chunks: Chunks) -> PyResult<Self> {
        Ok(Self {
            state: Arc::new(Mutex::new(IterState::Ready(
                chunks.conform(Caller::Loop).stream,
            ))),
            ctx: Some(Arc::new(Context::capture(py)?)),
        })
    }

    /// For a step's function (an async generator's input): no context of its own.
    pub(crate) fn bare(chunks: Chunks) -> Self {
        Self {
            state: Arc::new(Mutex::new(IterState::Ready(
                chunks.conform(Caller::Loop).stream,
            ))),
            ctx: None,
        }
    }
}

#[pymethods]
impl ChunkAsyncIterator {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__(&self) -> Coroutine {
        let state = Arc::clone(&self.state);
        let fut: StepFuture = Box::pin(async move {
            let already =
                || PyRuntimeError::new_err("anext(): asynchronous generator is already running");
            let Some(mut stream) = take(&state, already)? else {
                return Err(PyStopAsyncIteration::new_err(()));
            };
            let item = stream.next().await;
            put_back(&state, stream, &item);
            match item {
                Some(item) => item,
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        });
        match &self.ctx {
            Some(ctx) => Coroutine::in_context(fut, Arc::clone(ctx)),
            None => Coroutine::for_task(fut),
        }
    }

    /// Stops the stream (what runs in it is dropped).
    fn aclose(&self) -> Coroutine {
        let state = Arc::clone(&self.state);
        Coroutine::for_task(Box::pin(async move {
            *state.lock() = IterState::Done;
            Ok(Python::attach(|py| py.None()))
        }))
    }
}
