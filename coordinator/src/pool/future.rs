//! A handle on one submitted batch, with `concurrent.futures.Future`'s four
//! states: pending (no chunk sent yet), running, finished, cancelled.
//! `cancel` succeeds only while pending. The pool's manager thread moves a
//! batch from pending to running and on to finished; every state change
//! wakes whoever waits, and [`as_completed`] listens to many at once.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use num_bigint::BigUint;

use super::board::Values;
use super::error::PoolError;
use super::manager::{JobId, Msg, ToManager};

/// What a finished batch holds: each chunk's place in the batch and its
/// values as they arrived, decoded only when the result is taken.
pub(crate) type Parts = Vec<(u64, Values)>;

enum Status {
    Pending,
    Running,
    Finished(Result<Parts, PoolError>),
    Cancelled,
    /// The outcome was handed out by `result_timeout`.
    Taken,
}

struct Inner {
    status: Status,
    /// `as_completed` listeners: told this key when the batch is done.
    waiters: Vec<(Sender<usize>, usize)>,
}

/// The state a [`Future`] and the manager thread share.
pub(crate) struct FutureState {
    inner: Mutex<Inner>,
    done: Condvar,
}

impl FutureState {
    pub fn new() -> Arc<Self> {
        Arc::new(FutureState {
            inner: Mutex::new(Inner {
                status: Status::Pending,
                waiters: Vec::new(),
            }),
            done: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The manager is about to send the batch's first chunk: false when the
    /// batch was cancelled first, and must not run.
    pub fn start(&self) -> bool {
        let mut inner = self.lock();
        match inner.status {
            Status::Pending => {
                inner.status = Status::Running;
                true
            }
            Status::Running => true,
            _ => false,
        }
    }

    /// The batch's outcome. A batch already cancelled keeps that state.
    pub fn finish(&self, outcome: Result<Parts, PoolError>) {
        let mut inner = self.lock();
        if matches!(inner.status, Status::Pending | Status::Running) {
            inner.status = Status::Finished(outcome);
            self.wake(inner);
        }
    }

    /// Cancels a batch that has not started; true when it was pending.
    pub fn cancel(&self) -> bool {
        let mut inner = self.lock();
        match inner.status {
            Status::Pending => {
                inner.status = Status::Cancelled;
                self.wake(inner);
                true
            }
            Status::Cancelled => true,
            _ => false,
        }
    }

    fn wake(&self, mut inner: MutexGuard<'_, Inner>) {
        for (waiter, key) in inner.waiters.drain(..) {
            let _ = waiter.send(key);
        }
        drop(inner);
        self.done.notify_all();
    }

    fn is_done(inner: &Inner) -> bool {
        !matches!(inner.status, Status::Pending | Status::Running)
    }
}

/// A batch submitted with [`crate::Pool::submit`]: its values, in input
/// order, once every chunk of it has been computed.
///
/// Dropping a future does not cancel its batch (as in Python); call
/// [`Future::cancel`] for that.
pub struct Future {
    state: Arc<FutureState>,
    manager: ToManager,
    job: JobId,
    len: u64,
}

impl std::fmt::Debug for Future {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state.lock().status {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Finished(Ok(_)) => "finished",
            Status::Finished(Err(_)) => "failed",
            Status::Cancelled => "cancelled",
            Status::Taken => "taken",
        };
        write!(
            f,
            "Future(batch {}, {} indices, {state})",
            self.job, self.len
        )
    }
}

impl Future {
    pub(crate) fn new(state: Arc<FutureState>, manager: ToManager, job: JobId, len: u64) -> Self {
        Future {
            state,
            manager,
            job,
            len,
        }
    }

    /// The number of indices in the batch.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True once the batch finished, failed or was cancelled.
    pub fn done(&self) -> bool {
        FutureState::is_done(&self.state.lock())
    }

    /// True while a chunk of the batch has been sent and it has not finished.
    pub fn running(&self) -> bool {
        matches!(self.state.lock().status, Status::Running)
    }

    pub fn cancelled(&self) -> bool {
        matches!(self.state.lock().status, Status::Cancelled)
    }

    /// Cancels the batch if no chunk of it has been sent yet, and returns
    /// true; false once it runs or is done (a cancelled batch stays true).
    pub fn cancel(&self) -> bool {
        let cancelled = self.state.cancel();
        if cancelled {
            // The manager drops the batch; if it has already gone, so has the batch.
            let _ = self.manager.send(Msg::Cancel(self.job));
        }
        cancelled
    }

    /// Waits for the batch and returns its values in input order, or what
    /// stopped it: a poison chunk, a cancellation, a broken pool.
    pub fn result(mut self) -> Result<Vec<BigUint>, PoolError> {
        self.take(None)
    }

    /// As [`Future::result`], waiting at most `timeout`: then
    /// [`PoolError::Timeout`], and the batch goes on and can be waited for
    /// again. Once it has returned the outcome, later calls return
    /// [`PoolError::ResultTaken`].
    pub fn result_timeout(&mut self, timeout: Duration) -> Result<Vec<BigUint>, PoolError> {
        self.take(Some(timeout))
    }

    fn take(&mut self, timeout: Option<Duration>) -> Result<Vec<BigUint>, PoolError> {
        // A timeout too long for the clock waits for ever.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut inner = self.state.lock();
        while !FutureState::is_done(&inner) {
            inner = match deadline {
                None => self
                    .state
                    .done
                    .wait(inner)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(PoolError::Timeout(timeout.unwrap_or_default()));
                    }
                    self.state
                        .done
                        .wait_timeout(inner, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        match std::mem::replace(&mut inner.status, Status::Taken) {
            Status::Finished(Ok(parts)) => {
                drop(inner);
                Ok(decode(parts, self.len))
            }
            Status::Finished(Err(e)) => Err(e),
            Status::Cancelled => {
                inner.status = Status::Cancelled;
                Err(PoolError::Cancelled)
            }
            Status::Taken => Err(PoolError::ResultTaken),
            Status::Pending | Status::Running => unreachable!("waited until done"),
        }
    }

    /// Tells `waiter` the `key` once the batch is done (at once if it is).
    fn notify(&self, waiter: Sender<usize>, key: usize) {
        let mut inner = self.state.lock();
        if FutureState::is_done(&inner) {
            let _ = waiter.send(key);
        } else {
            inner.waiters.push((waiter, key));
        }
    }
}

/// The values of a finished batch, in input order.
fn decode(mut parts: Parts, len: u64) -> Vec<BigUint> {
    parts.sort_unstable_by_key(|(position, _)| *position);
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    for (_, values) in &parts {
        // The manager checked each chunk's count against its plan.
        out.extend((0..values.len()).filter_map(|i| values.get(i).map(BigUint::from_bytes_le)));
    }
    out
}

/// The futures in the order they finish (those already done first), as
/// Python's `concurrent.futures.as_completed`. Every future finishes: a
/// pool that breaks or is dropped fails its pending futures.
pub fn as_completed(futures: impl IntoIterator<Item = Future>) -> AsCompleted {
    let (tx, done) = mpsc::channel();
    let futures: Vec<Option<Future>> = futures.into_iter().map(Some).collect();
    for (key, future) in futures.iter().enumerate() {
        if let Some(future) = future {
            future.notify(tx.clone(), key);
        }
    }
    AsCompleted {
        left: futures.len(),
        futures,
        done,
    }
}

/// The iterator [`as_completed`] returns.
pub struct AsCompleted {
    futures: Vec<Option<Future>>,
    done: Receiver<usize>,
    left: usize,
}

impl Iterator for AsCompleted {
    type Item = Future;

    fn next(&mut self) -> Option<Future> {
        if self.left == 0 {
            return None;
        }
        let key = self.done.recv().ok()?;
        self.left -= 1;
        self.futures.get_mut(key)?.take()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}
