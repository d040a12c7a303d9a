//! Progress bars over fan-outs (the `progress` config key): items done of total, failures so
//! far, rate and ETA, drawn by tqdm when it is installed, else as one line rewritten on stderr.
//!
//! Rust decides: what counts (an item's outcome; a cancelled item is not done), when to draw (at
//! the start, at most every [`INTERVAL`], and at the end) and what the plain line says. Python
//! only draws: tqdm's `update`/`close`, or `sys.stderr.write`. A fan-out without a bar is the
//! work itself, untouched.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pyo3::exceptions::asyncio::CancelledError;
use pyo3::exceptions::PyImportError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::coro::StepFuture;
use super::stream::Chunks;
use super::{Caller, Cost, Kind, Work};

/// At most one redraw per interval (tqdm's default `mininterval`).
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

/// A default label longer than this is cut (a Parallel of many keys is named after all of them).
const LABEL_WIDTH: usize = 40;

/// What a config's `progress` key asks for.
pub(crate) struct Spec {
    /// The bar's label (`progress="label"`, or tqdm's `desc`); else the runnable's name.
    pub(crate) label: Option<String>,
    /// tqdm's keyword arguments (`progress={...}`); the plain line reads only `desc`.
    pub(crate) options: Option<Py<PyDict>>,
}

/// A call's `progress` key: shown by the first fan-out of the call that claims it (a batch, or
/// the outermost Parallel or `map()`), never again by the fan-outs inside it.
pub(crate) struct Claim {
    spec: Spec,
    claimed: AtomicBool,
}

impl Claim {
    pub(crate) fn new(spec: Spec) -> Self {
        Self {
            spec,
            claimed: AtomicBool::new(false),
        }
    }

    /// Whether this is the first claim.
    pub(crate) fn take(&self) -> bool {
        !self.claimed.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn spec(&self) -> &Spec {
        &self.spec
    }
}

/// `work` as it runs under the bar of `claim`, if any: the work that counts each item's
/// outcome, and the guard that closes the bar when the fan-out is over (or dropped). `name` is
/// the default label. Without a claim, the work itself.
pub(crate) fn shown(
    work: Arc<dyn Work>,
    claim: Option<Arc<Claim>>,
    name: impl FnOnce(Python<'_>) -> String,
) -> PyResult<(Arc<dyn Work>, Option<Shown>)> {
    let Some(claim) = claim else {
        return Ok((work, None));
    };
    let bar = Python::attach(|py| Bar::open(py, claim.spec(), work.len(), || name(py)))?;
    let bar = Arc::new(bar);
    let counted = Arc::new(Counted {
        work,
        bar: Arc::clone(&bar),
    });
    Ok((counted, Some(Shown(bar))))
}

/// `chunks`, the `n` outcomes of an as-completed iterator, closing `shown` after the last one
/// or a failure (or when dropped).
pub(crate) fn held_by(chunks: Chunks, n: usize, shown: Option<Shown>) -> Chunks {
    let Some(shown) = shown else {
        return chunks;
    };
    let Chunks { stream, waits } = chunks;
    let mut seen = 0;
    let stream = stream.map(move |item| {
        seen += 1;
        if item.is_err() || seen >= n {
            shown.close();
        }
        item
    });
    Chunks::new(Box::pin(stream), waits)
}

/// Closes its bar when dropped.
pub(crate) struct Shown(Arc<Bar>);

impl Shown {
    fn close(&self) {
        Python::attach(|py| self.0.close(py));
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.close();
    }
}

/// The items of a work, each outcome counted on the bar. Every item runs through a future of
/// ours (the gather's fast path, the user's own coroutine as the task, is not taken).
struct Counted {
    work: Arc<dyn Work>,
    bar: Arc<Bar>,
}

impl Work for Counted {
    fn len(&self) -> usize {
        self.work.len()
    }
    fn kind(&self, i: usize) -> Kind {
        self.work.kind(i)
    }
    fn run(&self, i: usize, mode: Caller) -> StepFuture {
        let item = self.work.run(i, mode);
        let bar = Arc::clone(&self.bar);
        Box::pin(async move {
            let outcome = item.await;
            bar.count(&outcome);
            outcome
        })
    }
    fn cost(&self, i: usize) -> Option<&Cost> {
        self.work.cost(i)
    }
}

/// How a bar is drawn.
enum View {
    /// A `tqdm.auto.tqdm`; `shown` is the count it was given so far.
    Tqdm {
        bar: Py<PyAny>,
        shown: AtomicUsize,
        failed_shown: AtomicUsize,
    },
    /// One line on stderr, rewritten in place.
    Line { label: String, width: AtomicUsize },
}

struct Bar {
    total: usize,
    done: AtomicUsize,
    failed: AtomicUsize,
    start: Instant,
    /// Nanoseconds after `start` before which nothing is redrawn.
    next_draw: AtomicU64,
    closed: AtomicBool,
    view: View,
}

impl Bar {
    fn open(
        py: Python<'_>,
        spec: &Spec,
        total: usize,
        name: impl FnOnce() -> String,
    ) -> PyResult<Self> {
        let label = spec
            .label
            .clone()
            .unwrap_or_else(|| shortened(&name(), LABEL_WIDTH));
        let view = match py.import("tqdm.auto") {
            Ok(module) => {
                let kwargs = PyDict::new(py);
                kwargs.set_item("total", total)?;
                kwargs.set_item("desc", &label)?;
                kwargs.set_item("postfix", failures(0))?;
                if let Some(options) = &spec.options {
                    kwargs.update(options.bind(py).as_mapping())?;
                }
                let bar = module.getattr("tqdm")?.call((), Some(&kwargs))?;
                View::Tqdm {
                    bar: bar.unbind(),
                    shown: AtomicUsize::new(0),
                    failed_shown: AtomicUsize::new(0),
                }
            }
            Err(err) if err.is_instance_of::<PyImportError>(py) => View::Line {
                label,
                width: AtomicUsize::new(0),
            },
            Err(err) => return Err(err),
        };
        let bar = Self {
            total,
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            start: Instant::now(),
            next_draw: AtomicU64::new(nanos(INTERVAL)),
            closed: AtomicBool::new(false),
            view,
        };
        if matches!(bar.view, View::Line { .. }) {
            bar.draw(py, false);
        }
        Ok(bar)
    }

    /// One item is over with `outcome`; redraws if the interval passed.
    fn count(&self, outcome: &PyResult<Py<PyAny>>) {
        if let Err(err) = outcome {
            if Python::attach(|py| err.is_instance_of::<CancelledError>(py)) {
                return; // stopped by a sibling's failure or the caller: not done
            }
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.done.fetch_add(1, Ordering::Relaxed);
        let now = nanos(self.start.elapsed());
        let due = self.next_draw.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_draw
                .compare_exchange(
                    due,
                    now + nanos(INTERVAL),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Python::attach(|py| self.draw(py, false));
        }
    }

    /// Draws the final counts and ends the bar (once).
    fn close(&self, py: Python<'_>) {
        if !self.closed.load(Ordering::Relaxed) {
            self.draw(py, true);
        }
    }

    /// Draws the counts (the last time if `last`). A failure to draw does not fail the work: it
    /// is reported as unraisable.
    fn draw(&self, py: Python<'_>, last: bool) {
        let closed = if last {
            self.closed.swap(true, Ordering::Relaxed)
        } else {
            self.closed.load(Ordering::Relaxed)
        };
        if closed {
            return;
        }
        let done = self.done.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let drawn = match &self.view {
            View::Tqdm {
                bar,
                shown,
                failed_shown,
            } => (|| {
                let bar = bar.bind(py);
                if failed_shown.swap(failed, Ordering::Relaxed) != failed {
                    bar.call_method1(intern!(py, "set_postfix_str"), (failures(failed), false))?;
                }
                let before = shown.swap(done, Ordering::Relaxed);
                if done > before {
                    bar.call_method1(intern!(py, "update"), (done - before,))?;
                }
                if last {
                    bar.call_method0(intern!(py, "close"))?;
                }
                Ok(())
            })(),
            View::Line { label, width } => (|| {
                let text = line(label, done, self.total, failed, self.start.elapsed());
                let chars = text.chars().count();
                let pad = width.swap(chars, Ordering::Relaxed).saturating_sub(chars);
                let end = if last { "\n" } else { "" };
                let stderr = py.import("sys")?.getattr(intern!(py, "stderr"))?;
                if stderr.is_none() {
                    return Ok(());
                }
                stderr.call_method1(
                    intern!(py, "write"),
                    (format!("\r{text}{}{end}", " ".repeat(pad)),),
                )?;
                stderr.call_method0(intern!(py, "flush")).map(drop)
            })(),
        };
        if let Err(err) = drawn {
            err.write_unraisable(py, None);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The failures shown after the counts.
fn failures(n: usize) -> String {
    format!("{n} failed")
}

/// `text` cut to `width` characters, an ellipsis last.
fn shortened(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

/// The plain line: `label: 420/1000 42% [00:04<00:05, 98.2 it/s, 3 failed]`.
fn line(label: &str, done: usize, total: usize, failed: usize, elapsed: Duration) -> String {
    let mut text = String::new();
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let eta = if done >= total {
        clock(0.0)
    } else if rate > 0.0 {
        clock((total - done) as f64 / rate)
    } else {
        "?".to_owned()
    };
    let _ = write!(
        text,
        "{label}: {done}/{total} {pct:>3}% [{}<{eta}, {}, {}]",
        clock(secs),
        speed(rate, done),
        failures(failed)
    );
    text
}

/// Seconds as `mm:ss`, or `h:mm:ss` past an hour.
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    }
}

/// The rate as tqdm shows it: items per second, or seconds per item when slower than one.
fn speed(rate: f64, done: usize) -> String {
    if done == 0 {
        "? it/s".to_owned()
    } else if rate >= 1.0 {
        format!("{rate:.1} it/s")
    } else {
        format!("{:.2} s/it", 1.0 / rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_counts_failures_rate_and_eta() {
        let text = line("embed", 420, 1000, 3, Duration::from_secs(4));
        assert_eq!(
            text,
            "embed: 420/1000  42% [00:04<00:06, 105.0 it/s, 3 failed]"
        );
    }

    #[test]
    fn the_line_before_the_first_item_and_at_the_end() {
        assert_eq!(
            line("x", 0, 10, 0, Duration::ZERO),
            "x: 0/10   0% [00:00<?, ? it/s, 0 failed]"
        );
        assert_eq!(
            line("x", 10, 10, 2, Duration::from_secs(3725)),
            "x: 10/10 100% [1:02:05<00:00, 372.50 s/it, 2 failed]"
        );
        assert_eq!(
            line("x", 0, 0, 0, Duration::ZERO),
            "x: 0/0 100% [00:00<00:00, ? it/s, 0 failed]"
        );
    }

    #[test]
    fn long_default_labels_are_cut() {
        assert_eq!(shortened("short", 40), "short");
        let long = "RunnableParallel<".to_owned() + &"k,".repeat(40) + ">";
        let cut = shortened(&long, 40);
        assert_eq!(cut.chars().count(), 40);
        assert!(cut.ends_with('…'));
    }
}
