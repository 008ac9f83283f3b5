use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::memory::MemoryLimit;

/// Names one worker process in messages: `worker 2 (pid 41234)`, or for a
/// worker on another host `worker 2 (pid 41234 there)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerName {
    /// The worker's place in the pool, from 0; a replacement takes the same place.
    pub slot: usize,
    /// Its pid; for a worker on another host, its pid there once its
    /// handshake came, 0 before.
    pub pid: u32,
    /// It runs on another host (its stats say which).
    pub remote: bool,
}

impl fmt::Display for WorkerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, self.remote) {
            (0, true) => write!(
                f,
                "worker {} (an ssh session, before its handshake)",
                self.slot
            ),
            (pid, true) => write!(f, "worker {} (pid {pid} there)", self.slot),
            (pid, false) => write!(f, "worker {} (pid {pid})", self.slot),
        }
    }
}

/// What can go wrong in a [`crate::Pool`]. Errors that end one batch (a
/// poison chunk, a worker that broke the protocol while computing it) leave
/// the pool usable; [`PoolError::Broken`] is the pool's own end, which every
/// later call returns.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("invalid pool configuration: {0}")]
    Config(String),

    /// An index no worker computes, refused before anything was sent.
    #[error("index {index} is above the largest index a worker computes ({max})")]
    IndexTooLarge { index: u64, max: u64 },

    /// A value that would not fit in the memory it may use (`limit`) while
    /// a worker computes it and the pool holds it, refused before anything
    /// was sent; with `at_once` above 1, the batch's biggest values,
    /// F(`index`) the first, as many as the pool computes at once, which
    /// would not fit together.
    #[error(
        "F({index}){} would need about {} of memory to compute and hold, more than the {} {limit}",
        at_once_clause(*at_once),
        gigabytes(*need),
        gigabytes(*available)
    )]
    ValueTooBig {
        index: u64,
        need: u64,
        available: u64,
        at_once: u64,
        /// Which limit `available` is.
        limit: MemoryLimit,
    },

    /// A batch whose values, held until a [`crate::Future`]'s result is
    /// taken, would not fit in the memory this process may use (`limit`),
    /// refused before anything was sent.
    #[error(
        "the batch's {values} values would need about {} of memory to hold until their result is taken, more than the {} {limit}",
        gigabytes(*need),
        gigabytes(*available)
    )]
    BatchTooBig {
        values: u64,
        need: u64,
        available: u64,
        limit: MemoryLimit,
    },

    #[error("cannot start worker `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },

    /// A host that workers were to run on cannot be used: ssh cannot reach
    /// it (what ssh said), or the worker program is not there.
    #[error("host {host}: {what}")]
    Host { host: String, what: String },

    #[error("cannot reap {worker}")]
    Reap {
        worker: WorkerName,
        #[source]
        source: io::Error,
    },

    #[error("{worker} did not complete its handshake within {timeout:?}")]
    HandshakeTimeout {
        worker: WorkerName,
        timeout: Duration,
    },

    #[error("{worker} {status} {when}")]
    WorkerExited {
        worker: WorkerName,
        /// `exited with status 3`, `was killed by signal 9 (SIGKILL)`, ...
        status: String,
        /// `before its handshake`, `at shutdown`, ...
        when: &'static str,
    },

    #[error("{worker} {}", protocol_fault(.source))]
    WorkerProtocol {
        worker: WorkerName,
        #[source]
        source: fibpool_protocol::Error,
    },

    /// A worker's Failure; its message escaped and cut to one line.
    #[error("{worker} refused a chunk: {message}")]
    WorkerFailed { worker: WorkerName, message: String },

    #[error("{worker} broke the protocol: {what}")]
    WorkerMisbehaved { worker: WorkerName, what: String },

    #[error("{worker} spent longer than the task timeout ({timeout:?}) on a chunk")]
    TaskTimeout {
        worker: WorkerName,
        timeout: Duration,
    },

    /// A chunk took its worker down again and again. `chunk` counts from 0
    /// within its batch.
    #[error(
        "poison chunk {chunk} (indices {indices}) took its worker down {}; the last, {worker}, {cause}",
        if *failures == 1 { "once".to_owned() } else { format!("{failures} times in a row") }
    )]
    PoisonChunk {
        chunk: u64,
        indices: String,
        failures: u32,
        worker: WorkerName,
        cause: String,
    },

    /// A worker broke the protocol while it held this chunk (`chunk` counts
    /// from 0 within its batch): the batch fails, since another worker of
    /// the same kind would do the same.
    #[error("chunk {chunk} (indices {indices}) failed")]
    ChunkFailed {
        chunk: u64,
        indices: String,
        #[source]
        source: Box<PoolError>,
    },

    /// A worker slot's workers kept failing by themselves, before their
    /// handshake or before answering any chunk. `cause` says how the last
    /// one failed; `what` is "failed to start" or "failed before answering
    /// a chunk".
    #[error("{worker} {cause}; {attempts} workers in a row {what}")]
    StartFailed {
        worker: WorkerName,
        attempts: u32,
        cause: String,
        what: &'static str,
    },

    /// The coordinator could not encode its own request: no worker is to blame.
    #[error("the coordinator cannot send chunk {chunk} (indices {indices})")]
    Request {
        chunk: u64,
        indices: String,
        #[source]
        source: fibpool_protocol::Error,
    },

    /// No worker can be started any more: like Python's `BrokenProcessPool`,
    /// every later call returns this, with the cause as its source.
    #[error("the pool is broken")]
    Broken(#[source] Arc<PoolError>),

    #[error("the pool is shut down")]
    ShutDown,

    #[error("the pool was dropped before the batch finished")]
    Dropped,

    /// The thread that runs the pool is gone (it panicked): a bug.
    #[error("the pool's manager thread has stopped")]
    ManagerGone,

    #[error("the batch was cancelled")]
    Cancelled,

    /// [`crate::Future::result_timeout`] waited this long; the batch goes on.
    #[error("the batch did not finish within {0:?}")]
    Timeout(Duration),

    /// [`crate::Future::result_timeout`] already returned this batch's outcome.
    #[error("the batch's result was already taken")]
    ResultTaken,

    #[error("cannot write results")]
    Sink(#[source] io::Error),
}

/// Errors are handed to every future and caller they concern, so they are
/// cloned; an I/O error inside keeps its OS error code, or its kind and message.
impl Clone for PoolError {
    fn clone(&self) -> Self {
        use fibpool_protocol::clone_io;
        match self {
            PoolError::Config(what) => PoolError::Config(what.clone()),
            PoolError::Host { host, what } => PoolError::Host {
                host: host.clone(),
                what: what.clone(),
            },
            PoolError::IndexTooLarge { index, max } => PoolError::IndexTooLarge {
                index: *index,
                max: *max,
            },
            PoolError::ValueTooBig {
                index,
                need,
                available,
                at_once,
                limit,
            } => PoolError::ValueTooBig {
                index: *index,
                need: *need,
                available: *available,
                at_once: *at_once,
                limit: *limit,
            },
            PoolError::BatchTooBig {
                values,
                need,
                available,
                limit,
            } => PoolError::BatchTooBig {
                values: *values,
                need: *need,
                available: *available,
                limit: *limit,
            },
            PoolError::Spawn { command, source } => PoolError::Spawn {
                command: command.clone(),
                source: clone_io(source),
            },
            PoolError::Reap { worker, source } => PoolError::Reap {
                worker: *worker,
                source: clone_io(source),
            },
            PoolError::HandshakeTimeout { worker, timeout } => PoolError::HandshakeTimeout {
                worker: *worker,
                timeout: *timeout,
            },
            PoolError::WorkerExited {
                worker,
                status,
                when,
            } => PoolError::WorkerExited {
                worker: *worker,
                status: status.clone(),
                when,
            },
            PoolError::WorkerProtocol { worker, source } => PoolError::WorkerProtocol {
                worker: *worker,
                source: source.clone(),
            },
            PoolError::WorkerFailed { worker, message } => PoolError::WorkerFailed {
                worker: *worker,
                message: message.clone(),
            },
            PoolError::WorkerMisbehaved { worker, what } => PoolError::WorkerMisbehaved {
                worker: *worker,
                what: what.clone(),
            },
            PoolError::TaskTimeout { worker, timeout } => PoolError::TaskTimeout {
                worker: *worker,
                timeout: *timeout,
            },
            PoolError::PoisonChunk {
                chunk,
                indices,
                failures,
                worker,
                cause,
            } => PoolError::PoisonChunk {
                chunk: *chunk,
                indices: indices.clone(),
                failures: *failures,
                worker: *worker,
                cause: cause.clone(),
            },
            PoolError::ChunkFailed {
                chunk,
                indices,
                source,
            } => PoolError::ChunkFailed {
                chunk: *chunk,
                indices: indices.clone(),
                source: source.clone(),
            },
            PoolError::StartFailed {
                worker,
                attempts,
                cause,
                what,
            } => PoolError::StartFailed {
                worker: *worker,
                attempts: *attempts,
                cause: cause.clone(),
                what,
            },
            PoolError::Request {
                chunk,
                indices,
                source,
            } => PoolError::Request {
                chunk: *chunk,
                indices: indices.clone(),
                source: source.clone(),
            },
            PoolError::Broken(cause) => PoolError::Broken(cause.clone()),
            PoolError::ShutDown => PoolError::ShutDown,
            PoolError::Dropped => PoolError::Dropped,
            PoolError::ManagerGone => PoolError::ManagerGone,
            PoolError::Cancelled => PoolError::Cancelled,
            PoolError::Timeout(waited) => PoolError::Timeout(*waited),
            PoolError::ResultTaken => PoolError::ResultTaken,
            PoolError::Sink(source) => PoolError::Sink(clone_io(source)),
        }
    }
}

impl PoolError {
    /// The pool's own end, whatever error it is wrapped in: the cause a
    /// [`PoolError::Broken`] carries, or `self`.
    pub fn root(&self) -> &PoolError {
        match self {
            PoolError::Broken(cause) => cause.root(),
            other => other,
        }
    }
}

/// The most of a worker's own words an error repeats.
const MAX_SAID_CHARS: usize = 1000;

/// What a worker said, as one line that a terminal shows as it is: control
/// characters escaped (a newline as `\n`, ESC as `\u{1b}`), and cut after
/// [`MAX_SAID_CHARS`] characters.
pub(crate) fn one_line(said: &str) -> String {
    let mut line = String::new();
    for (i, c) in said.chars().enumerate() {
        if i == MAX_SAID_CHARS {
            line.push_str("...");
            break;
        }
        if c.is_control() {
            line.extend(c.escape_debug());
        } else {
            line.push(c);
        }
    }
    line
}

/// Bytes as gigabytes, for messages: "27.72 GB".
fn gigabytes(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

/// What [`PoolError::ValueTooBig`] says of the values counted with the
/// first.
fn at_once_clause(at_once: u64) -> String {
    match at_once {
        0 | 1 => String::new(),
        2 => " and the next biggest value, computed at once on two workers,".to_owned(),
        n => format!(
            " and the next {} biggest values, computed at once on {n} workers,",
            n - 1
        ),
    }
}

/// What a worker whose stream failed did: sent a bad frame, or nothing
/// wrong at all when this process ran out of descriptors or memory.
pub(crate) fn protocol_fault(source: &fibpool_protocol::Error) -> &'static str {
    if source.is_local_exhaustion() {
        "could not be read: this process ran out of resources"
    } else {
        "sent a bad frame"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_worker_says_is_one_line_a_terminal_shows_as_it_is() {
        assert_eq!(one_line("index 7 is too large"), "index 7 is too large");
        assert_eq!(
            one_line("line1\nline2\x1b[2J\t'x' é"),
            "line1\\nline2\\u{1b}[2J\\t'x' é"
        );
        let long = "a".repeat(5000);
        assert_eq!(
            one_line(&long),
            format!("{}...", "a".repeat(MAX_SAID_CHARS))
        );
        let error = PoolError::WorkerFailed {
            worker: WorkerName {
                slot: 0,
                pid: 3,
                remote: false,
            },
            message: one_line("a\nb"),
        };
        assert_eq!(error.to_string().lines().count(), 1, "{error}");
    }
}
