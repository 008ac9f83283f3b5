use std::fmt;
use std::io;
use std::time::Duration;

/// Names one worker process in messages: `worker 2 (pid 41234)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerName {
    /// The worker's place in the pool, from 0; a replacement takes the same place.
    pub slot: usize,
    pub pid: u32,
}

impl fmt::Display for WorkerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {} (pid {})", self.slot, self.pid)
    }
}

/// What can go wrong in a [`crate::Pool`].
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("invalid pool configuration: {0}")]
    Config(String),

    #[error("cannot start worker `{command}`")]
    Spawn {
        command: String,
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
        /// `exited with exit status: 3`, `was killed by signal 9 (SIGKILL)`, ...
        status: String,
        /// `before its handshake`, `during the run`, ...
        when: &'static str,
    },

    #[error("{worker} sent a bad frame")]
    WorkerProtocol {
        worker: WorkerName,
        #[source]
        source: fibpool_protocol::Error,
    },

    #[error("{worker} refused a chunk: {message}")]
    WorkerFailed { worker: WorkerName, message: String },

    #[error("{worker} broke the protocol: {what}")]
    WorkerMisbehaved { worker: WorkerName, what: String },

    #[error("{worker} spent longer than the task timeout ({timeout:?}) on a chunk")]
    TaskTimeout {
        worker: WorkerName,
        timeout: Duration,
    },

    /// A chunk took its worker down again and again.
    #[error(
        "poison chunk {chunk} (indices {indices}) took its worker down {failures} times in a row; the last, {worker}, {cause}"
    )]
    PoisonChunk {
        chunk: u64,
        indices: String,
        failures: u32,
        worker: WorkerName,
        cause: String,
    },

    /// A worker slot kept dying before its handshake.
    #[error("{worker} {cause} before its handshake; {attempts} workers in a row failed to start")]
    StartFailed {
        worker: WorkerName,
        attempts: u32,
        cause: String,
    },

    #[error("cannot write results")]
    Sink(#[source] io::Error),
}
