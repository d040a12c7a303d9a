//! The one way fastlcel blocks: GIL released, in short slices, noticing Ctrl-C between them.
//!
//! A thread that blocks for work it handed to the pool can run that work itself while it waits
//! (a [`Mailbox`]): when no pool thread can take a job (the pool is at its limit, every thread
//! busy), the pool hands the job to the thread waiting for it. So a waiting caller never starves
//! the pool of the threads its own work needs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;

use super::pool::{self, Job};

/// How often a blocked caller wakes to run Python's signal handlers (Ctrl-C).
const SLICE: Duration = Duration::from_millis(50);

/// A one-shot flag a thread can block on; a [`Mailbox`] may also wake the thread (poke it)
/// without setting the flag.
#[derive(Default)]
pub(crate) struct Signal {
    /// Whether it is set, and how many times it was poked.
    state: Mutex<(bool, u64)>,
    cv: Condvar,
}

impl Signal {
    pub(crate) fn set(&self) {
        self.state.lock().0 = true;
        self.cv.notify_all();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.state.lock().0
    }

    /// Wakes the waiting thread to look at its mailbox.
    fn poke(&self) {
        self.state.lock().1 += 1;
        self.cv.notify_all();
    }

    fn pokes(&self) -> u64 {
        self.state.lock().1
    }

    /// Blocks until set, poked since `seen` pokes, or `timeout`; returns whether it is set.
    fn wait_for(&self, timeout: Duration, seen: u64) -> bool {
        let mut state = self.state.lock();
        if !state.0 && state.1 == seen {
            self.cv.wait_for(&mut state, timeout);
        }
        state.0
    }
}

/// The jobs a blocked thread is owed: jobs it handed to the pool that no pool thread could take.
///
/// Open from its creation until [`Mailbox::close`] (its owner stopped waiting): only then may the
/// pool deliver to it. Jobs left in it at close go back to the pool: a job is never dropped.
#[derive(Default)]
pub(crate) struct Mailbox {
    state: Mutex<MailState>,
}

#[derive(Default)]
struct MailState {
    jobs: VecDeque<Job>,
    /// The signal its owner waits on right now, poked on delivery.
    waiting: Option<Arc<Signal>>,
    closed: bool,
    /// Its owner runs one of its jobs: a wait inside that job does not run another (which
    /// could nest as deep as there are jobs).
    running: bool,
}

impl Mailbox {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Hands `job` to the owner; gives it back if the owner stopped waiting.
    pub(crate) fn deliver(&self, job: Job) -> Result<(), Job> {
        let waiting = {
            let mut st = self.state.lock();
            if st.closed {
                return Err(job);
            }
            st.jobs.push_back(job);
            st.waiting.clone()
        };
        if let Some(signal) = waiting {
            signal.poke();
        }
        Ok(())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// The owner stops waiting: nothing more is delivered, and what was goes back to the pool.
    pub(crate) fn close(&self) {
        let left = {
            let mut st = self.state.lock();
            st.closed = true;
            std::mem::take(&mut st.jobs)
        };
        for job in left {
            // Never refused: only an `Escalate` job can be.
            let _ = pool::submit(job, pool::Owner::None);
        }
    }

    /// The next job to run, unless one is running already.
    fn take(&self) -> Option<Job> {
        let mut st = self.state.lock();
        if st.running {
            return None;
        }
        let job = st.jobs.pop_front()?;
        st.running = true;
        Some(job)
    }

    fn run(&self, job: Job) {
        pool::run_job(job);
        self.state.lock().running = false;
    }
}

/// Blocks until `signal` is set, with the GIL released. Returns the exception of a signal
/// handler (KeyboardInterrupt) if one fires meanwhile.
pub(crate) fn wait(py: Python<'_>, signal: &Signal) -> PyResult<()> {
    wait_until(py, signal, None).map(drop)
}

/// Like [`wait`], but gives up at `deadline`: returns whether `signal` was set.
pub(crate) fn wait_until(
    py: Python<'_>,
    signal: &Signal,
    deadline: Option<Instant>,
) -> PyResult<bool> {
    blocked(py, signal, None, deadline)
}

/// Like [`wait_until`] without a deadline, running the jobs delivered to `mailbox` meanwhile:
/// how a thread waits for work it handed to the pool.
pub(crate) fn wait_running(
    py: Python<'_>,
    signal: &Arc<Signal>,
    mailbox: &Mailbox,
) -> PyResult<()> {
    let previous = mailbox.state.lock().waiting.replace(Arc::clone(signal));
    let result = blocked(py, signal, Some(mailbox), None);
    mailbox.state.lock().waiting = previous;
    result.map(drop)
}

fn blocked(
    py: Python<'_>,
    signal: &Signal,
    mailbox: Option<&Mailbox>,
    deadline: Option<Instant>,
) -> PyResult<bool> {
    loop {
        let slice = match deadline {
            None => SLICE,
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left.min(SLICE),
                _ => return Ok(signal.is_set()),
            },
        };
        let set = py.detach(|| {
            // Guards lent while the GIL is released; a job run meanwhile takes its own.
            let lent = pool::Lent::lend();
            let seen = signal.pokes();
            let set = match mailbox.and_then(|m| m.take().map(|job| (m, job))) {
                Some((mailbox, job)) => {
                    mailbox.run(job);
                    signal.is_set()
                }
                None => signal.wait_for(slice, seen),
            };
            lent.resume();
            set
        });
        if set {
            return Ok(true);
        }
        py.check_signals()?;
    }
}

/// Sleeps for `duration` with the GIL released, noticing Ctrl-C.
pub(crate) fn sleep(py: Python<'_>, duration: Duration) -> PyResult<()> {
    wait_until(py, &Signal::default(), deadline_after(duration)).map(drop)
}

/// The instant `duration` from now; `None` if it is too far away to represent (never).
pub(crate) fn deadline_after(duration: Duration) -> Option<Instant> {
    Instant::now().checked_add(duration)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    fn job(tx: &mpsc::Sender<u32>, n: u32) -> Job {
        let tx = tx.clone();
        Box::new(move || tx.send(n).unwrap())
    }

    #[test]
    fn a_mailbox_hands_out_its_jobs_one_at_a_time_in_order() {
        let (tx, rx) = mpsc::channel();
        let mailbox = Mailbox::new();
        assert!(mailbox.deliver(job(&tx, 1)).is_ok());
        assert!(mailbox.deliver(job(&tx, 2)).is_ok());
        let first = mailbox.take().expect("a job");
        // While one runs, a wait inside it takes no other.
        assert!(mailbox.take().is_none());
        mailbox.run(first);
        mailbox.run(mailbox.take().expect("the second job"));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [1, 2]);
        assert!(mailbox.take().is_none());
    }

    #[test]
    fn a_delivery_pokes_the_signal_its_owner_waits_on() {
        let mailbox = Mailbox::new();
        let signal = Arc::new(Signal::default());
        mailbox.state.lock().waiting = Some(Arc::clone(&signal));
        let seen = signal.pokes();
        assert!(mailbox.deliver(Box::new(|| {})).is_ok());
        assert_ne!(signal.pokes(), seen);
        // A poke wakes the waiter without setting the signal.
        assert!(!signal.wait_for(Duration::from_secs(5), seen));
    }

    #[test]
    fn a_closed_mailbox_gives_jobs_back_and_its_leftovers_go_to_the_pool() {
        Python::initialize();
        let (tx, rx) = mpsc::channel();
        let mailbox = Mailbox::new();
        assert!(mailbox.deliver(job(&tx, 7)).is_ok());
        mailbox.close();
        assert!(mailbox.is_closed());
        assert!(mailbox.deliver(job(&tx, 8)).is_err());
        // The job left in it runs on a pool thread.
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(7));
    }
}
