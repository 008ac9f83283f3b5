//! What a run measured, as one serialisable type that both the stderr summary
//! and the `--report` JSON come from.

use serde::Serialize;

use crate::stats::Summary;

/// The phases of one worker process's start and end, in seconds. A phase is
/// `None` when it did not happen, or when it rests on the worker's own clock
/// stamps and those are not comparable (a worker on another machine).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Phases {
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
pub struct WorkerReport {
    pub slot: usize,
    pub pid: u32,
    #[serde(flatten)]
    pub phases: Phases,
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

/// Timing summaries of every phase, in the order they happen.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseSummaries {
    pub spawn: Option<Summary>,
    pub exec: Option<Summary>,
    pub init: Option<Summary>,
    pub ready: Option<Summary>,
    pub first_task: Option<Summary>,
    pub shutdown: Option<Summary>,
}

/// `fibpool startup` for one pool size.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StartupReport {
    pub workers: usize,
    pub rounds: usize,
    pub warmup_rounds: usize,
    pub worker_command: String,
    /// Every worker of every measured round.
    pub phases: PhaseSummaries,
    /// From the first spawn until all workers were ready, spawning from one thread.
    pub pool_ready: Option<Summary>,
    /// The same, spawning from `spawn_threads` threads at once.
    pub pool_ready_parallel: Option<Summary>,
    /// A whole round: build the pool, one tiny task per worker, shut down and
    /// reap (what Python's ProcessPoolExecutor comparison times).
    pub round: Option<Summary>,
    pub spawn_threads: usize,
    /// Spawn to first byte of a minimal Rust program (`fibpool-floor`), as
    /// many started one after another as there are workers.
    pub baseline: Option<Summary>,
    /// The same for the worker command, answering at once.
    pub baseline_worker: Option<Summary>,
    /// The `ready` median over the `baseline` median.
    pub ready_over_floor: f64,
}

impl StartupReport {
    /// The human table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} worker{}, {} rounds after {} warm-up, worker command: {}\n",
            self.workers,
            if self.workers == 1 { "" } else { "s" },
            self.rounds,
            self.warmup_rounds,
            self.worker_command
        );
        out += &format!(
            "  {:<34} {:>10} {:>10} {:>10} {:>10}\n",
            "", "min", "median", "p90", "max"
        );
        let p = &self.phases;
        let parallel = format!("pool_ready, {} spawn threads", self.spawn_threads);
        let rows = [
            ("spawn", p.spawn),
            ("exec", p.exec),
            ("init", p.init),
            ("ready", p.ready),
            ("first_task", p.first_task),
            ("shutdown", p.shutdown),
            ("pool_ready", self.pool_ready),
            (parallel.as_str(), self.pool_ready_parallel),
            ("round: start, one task each, stop", self.round),
            ("baseline: minimal program", self.baseline),
            ("baseline: worker answering at once", self.baseline_worker),
        ];
        for (name, summary) in rows {
            let Some(s) = summary else { continue };
            out += &format!(
                "  {:<34} {:>10} {:>10} {:>10} {:>10}\n",
                name,
                seconds(s.min_seconds),
                seconds(s.median_seconds),
                seconds(s.p90_seconds),
                seconds(s.max_seconds)
            );
        }
        out += &format!(
            "  ready median is {:.2}x the minimal program's spawn-to-first-byte median\n",
            self.ready_over_floor
        );
        out
    }
}

/// A duration for people: "412 µs", "1.23 ms", "2.50 s".
pub fn seconds(s: f64) -> String {
    match s {
        s if !s.is_finite() => "-".to_owned(),
        s if s < 1e-3 => format!("{:.0} µs", s * 1e6),
        s if s < 1.0 => format!("{:.2} ms", s * 1e3),
        s => format!("{s:.2} s"),
    }
}
