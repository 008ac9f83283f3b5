//! What the pool records of its worker processes, for its callers: each
//! process's phases from start to end, its work, and how it ended.

use serde::Serialize;

/// The phases of one worker process's start and end, in seconds. A phase is
/// `None` when it did not happen, or when it rests on the worker's own clock
/// stamps and those are not comparable (a worker on another machine).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Phases {
    /// When the spawn call began, after the pool began to build.
    pub started_seconds: f64,
    /// The spawn call itself.
    pub spawn_seconds: f64,
    /// Spawn start until the worker's `main` was entered.
    pub exec_seconds: Option<f64>,
    /// `main` entered until the worker's ready message was written.
    pub init_seconds: Option<f64>,
    /// Spawn start until the coordinator decoded the handshake.
    pub ready_seconds: Option<f64>,
    /// Handshake decoded until the first result was decoded.
    pub first_task_seconds: Option<f64>,
    /// Shutdown sent until the process was reaped.
    pub shutdown_seconds: Option<f64>,
}

/// The names of the phases, in the order they happen.
pub const PHASE_NAMES: [&str; 6] = ["spawn", "exec", "init", "ready", "first_task", "shutdown"];

impl Phases {
    /// The phases as (name, value) in [`PHASE_NAMES`] order.
    pub fn named(&self) -> [(&'static str, Option<f64>); 6] {
        [
            ("spawn", Some(self.spawn_seconds)),
            ("exec", self.exec_seconds),
            ("init", self.init_seconds),
            ("ready", self.ready_seconds),
            ("first_task", self.first_task_seconds),
            ("shutdown", self.shutdown_seconds),
        ]
    }
}

/// One worker process's life in a pool. Durations are in seconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerStats {
    pub slot: usize,
    /// For a worker on another host, its pid there (0 if it never said).
    pub pid: u32,
    /// The host it ran on, when not this machine (`[user@]host[:port]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(flatten)]
    pub phases: Phases,
    /// Chunks the worker answered.
    pub chunks: u64,
    /// Time the worker reported computing and encoding them.
    pub busy_seconds: f64,
    /// For a process the pool no longer runs: how it ended (`recycled` when
    /// `max_tasks_per_child` retired it, else what became of it); `None`
    /// for a process in service, or one that served until shutdown.
    pub ended: Option<String>,
}

/// Counts over a pool's whole life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Workers that died or hung and were replaced.
    pub worker_restarts: u64,
    /// Chunks sent again because their worker died or hung.
    pub retried_chunks: u64,
    /// Workers retired after `max_tasks_per_child` chunks.
    pub recycled: u64,
    /// Processes the pool no longer runs whose [`WorkerStats`] were dropped
    /// to bound memory (the newest are kept).
    pub stats_dropped: u64,
}
