//! What a run measured, as one serialisable type that both the stderr summary
//! and the `--report` JSON come from.

use serde::Serialize;

/// One worker process's life in a pool. Durations are in seconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerReport {
    pub slot: usize,
    pub pid: u32,
    /// The spawn call itself.
    pub spawn_seconds: f64,
    /// Spawn start until the coordinator decoded the worker's handshake.
    pub ready_seconds: f64,
    /// Chunks the worker answered.
    pub chunks: u64,
    /// Time the worker reported computing and encoding them.
    pub busy_seconds: f64,
}

/// A `fibpool run`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunReport {
    pub workers: usize,
    pub tasks: u64,
    pub chunks: u64,
    pub chunk_size: u64,
    pub wall_seconds: f64,
    pub worker_stats: Vec<WorkerReport>,
}

impl RunReport {
    /// The short human summary printed on stderr.
    pub fn summary(&self) -> String {
        let rate = self.tasks as f64 / self.wall_seconds.max(f64::MIN_POSITIVE);
        format!(
            "fibpool: {} in {} on {}: {:.3} s wall, {} indices/s",
            count(self.tasks, "index", "indices"),
            count(self.chunks, "chunk", "chunks"),
            count(self.workers as u64, "worker", "workers"),
            self.wall_seconds,
            human_rate(rate),
        )
    }
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn human_rate(rate: f64) -> String {
    match rate {
        r if r >= 1e6 => format!("{:.2}M", r / 1e6),
        r if r >= 1e3 => format!("{:.1}k", r / 1e3),
        r => format!("{r:.1}"),
    }
}
