//! The results behind every table and `--report` JSON: one serialisable
//! type per measurement, and its human rendering (tables here, the bench's
//! SVG in [`plot`]). The measurements in [`crate::measure`] build them;
//! nothing here measures.

pub mod plot;

use serde::Serialize;

use crate::pool::{Phases, WorkerStats};
use crate::stats::Summary;

/// A `fibpool run`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunReport {
    /// How the run ended: `completed`, `stdout closed` (the reader stopped
    /// reading), `failed` (see `error`), or `stopped by SIGINT`/`SIGTERM`.
    pub outcome: String,
    /// The whole error chain, for a failed run.
    pub error: Option<String>,
    pub workers: usize,
    /// Indices in the batch.
    pub tasks: u64,
    /// Indices whose values were handed to the output (all of them, for a
    /// completed run).
    pub tasks_done: u64,
    /// Chunks the batch took, known once it completed.
    pub chunks: Option<u64>,
    /// The fixed chunk size, or null for guided chunks.
    pub chunk_size: Option<u64>,
    pub wall_seconds: f64,
    /// From the run's start until every worker was ready (with `--hosts`,
    /// the ssh connections included), if all were before the run ended:
    /// `done_seconds` less this is the run once the workers are ready.
    pub ready_seconds: Option<f64>,
    /// From the run's start until its last value was written (before the
    /// pool shut down), if the batch completed.
    pub done_seconds: Option<f64>,
    /// Workers that died or hung and were replaced.
    pub worker_restarts: u64,
    /// Chunks sent again because their worker died or hung.
    pub retried_chunks: u64,
    /// Workers retired after `--max-tasks-per-child` chunks (their stats
    /// say `ended: recycled`).
    pub recycled: u64,
    /// Every worker process, those replaced first, each with how it ended.
    pub worker_stats: Vec<WorkerStats>,
    /// Replaced processes left out of `worker_stats` to bound memory.
    pub worker_stats_dropped: u64,
    /// The coordinator's own peak resident set size (VmHWM) when the
    /// report was made.
    pub coordinator_peak_rss_bytes: Option<u64>,
}

impl RunReport {
    /// Takes the pool's recovery counts.
    pub fn set_counts(&mut self, counts: crate::pool::PoolCounts) {
        self.worker_restarts = counts.worker_restarts;
        self.retried_chunks = counts.retried_chunks;
        self.recycled = counts.recycled;
    }

    /// The short human summary printed on stderr after a completed run.
    pub fn summary(&self) -> String {
        let rate = self.tasks as f64 / self.wall_seconds.max(f64::MIN_POSITIVE);
        let mut line = format!(
            "fibpool: {} in {} on {}: {:.3} s wall, {} indices/s",
            count(self.tasks, "index", "indices"),
            count(self.chunks.unwrap_or(0), "chunk", "chunks"),
            count(self.workers as u64, "worker", "workers"),
            self.wall_seconds,
            human_rate(rate),
        );
        if self.worker_restarts > 0 {
            line += &format!(
                "; {} replaced, {} retried",
                count(self.worker_restarts, "worker", "workers"),
                count(self.retried_chunks, "chunk", "chunks"),
            );
        }
        if self.recycled > 0 {
            line += &format!("; {} recycled", count(self.recycled, "worker", "workers"));
        }
        line
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

/// `fibpool startup --hosts` for one place of the host list.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostStartupReport {
    /// `[user@]host[:port]`, or `:` for this machine.
    pub host: String,
    pub rounds: usize,
    pub warmup_rounds: usize,
    /// The host's master connection, made once: a whole ssh handshake.
    pub master_connect_seconds: Option<f64>,
    /// Spawn to handshake on this machine's clock, for a worker started as
    /// the pool starts its later ones there: a session on the master (or
    /// spawned here, for `:`).
    pub ready: Option<Summary>,
    /// The same over an ssh connection of its own, without multiplexing.
    pub ready_own_connection: Option<Summary>,
    /// Spawn to first byte of `fibpool-floor` here, in the same rounds.
    pub baseline: Option<Summary>,
    /// The `ready` median over the `baseline` median.
    pub ready_over_floor: f64,
}

impl HostStartupReport {
    /// One table for every place measured.
    pub fn table(reports: &[HostStartupReport]) -> String {
        let Some(first) = reports.first() else {
            return String::new();
        };
        let mut out = format!(
            "worker start per host, {} rounds after {} warm-up (medians of spawn to handshake on this machine's clock; the master's connect once per host)\n",
            first.rounds, first.warmup_rounds
        );
        let median = |s: Option<Summary>| s.map_or("-".to_owned(), |s| seconds(s.median_seconds));
        let rows: Vec<Vec<(&str, String)>> = reports
            .iter()
            .map(|r| {
                vec![
                    ("host", r.host.clone()),
                    (
                        "master connect",
                        r.master_connect_seconds.map_or("-".to_owned(), seconds),
                    ),
                    ("ready via master", median(r.ready)),
                    ("ready, own connection", median(r.ready_own_connection)),
                    ("floor here", median(r.baseline)),
                    ("ready / floor", ratio(r.ready_over_floor)),
                ]
            })
            .collect();
        out += &aligned(&rows);
        out
    }
}

/// `fibpool startup` for one pool size.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StartupReport {
    pub workers: usize,
    /// How the workers were started: `spawn`, `forkserver` or `fork`.
    pub start_method: &'static str,
    /// How their frames travelled.
    pub transport: &'static str,
    pub rounds: usize,
    pub warmup_rounds: usize,
    pub worker_command: String,
    /// Every worker of every measured round.
    pub phases: PhaseSummaries,
    /// From the first spawn until all workers were ready, spawning from one thread.
    pub pool_ready: Option<Summary>,
    /// A fork server's spawn until it said it was ready, for a method that
    /// starts one per pool (forkserver): a phase of the pool, before the
    /// first worker's `spawn`.
    pub server_start: Option<Summary>,
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
    /// Python's ProcessPoolExecutor round with the start method of the same
    /// name (bench/python_startup.py), when it was measured, and its version.
    pub python_round: Option<Summary>,
    pub python: Option<String>,
    /// The workers of the round whose `pool_ready` was the median, whole:
    /// what `--plot` draws.
    pub median_round: Vec<Phases>,
}

impl StartupReport {
    /// The human table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} worker{}, start method {}, transport {}, {} rounds after {} warm-up, worker command: {}\n",
            self.workers,
            if self.workers == 1 { "" } else { "s" },
            self.start_method,
            self.transport,
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
            ("server: spawn to ready", self.server_start),
            (parallel.as_str(), self.pool_ready_parallel),
            ("round: start, one task each, stop", self.round),
            ("baseline: minimal program", self.baseline),
            ("baseline: worker answering at once", self.baseline_worker),
            ("python: ProcessPoolExecutor round", self.python_round),
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
        if let (Some(python), Some(ours), Some(version)) =
            (self.python_round, self.round, &self.python)
        {
            out += &format!(
                "  round median is {}x less than {version}'s with {}\n",
                ratio(python.median_seconds / ours.median_seconds),
                self.start_method
            );
        }
        out
    }
}

/// A ratio to two places, or "-" where it has no value (nothing measured
/// on one side: 0/0 is NaN, x/0 infinite).
fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "-".to_owned()
    }
}

/// A duration for people: "410 ns", "412 µs", "1.23 ms", "2.50 s".
pub fn seconds(s: f64) -> String {
    match s {
        s if !s.is_finite() => "-".to_owned(),
        s if s < 1e-6 => format!("{:.0} ns", s * 1e9),
        s if s < 1e-3 => format!("{:.0} µs", s * 1e6),
        s if s < 1.0 => format!("{:.2} ms", s * 1e3),
        s => format!("{s:.2} s"),
    }
}

/// The percentiles a stress row's round trips are given at (bench/
/// python_stress.py gives the same).
pub const PERCENTILES: [f64; 9] = [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99];

/// A round trip at a percentile: `percentile`% of round trips took at most
/// `seconds`.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq)]
pub struct Percentile {
    pub percentile: f64,
    pub seconds: f64,
}

/// `fibpool stress` for one transport, pattern and size: fibpool's framing
/// and, measured in the same slices, the raw baseline (no bincode).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StressResult {
    pub transport: &'static str,
    pub pattern: &'static str,
    pub size_bytes: usize,
    pub workers: usize,
    /// Messages answered (every phase).
    pub messages: u64,
    pub rtt_p50_seconds: f64,
    pub rtt_p90_seconds: f64,
    pub rtt_p99_seconds: f64,
    pub rtt_p999_seconds: f64,
    pub rtt_max_seconds: f64,
    /// The round trip at each of [`PERCENTILES`], for `--plot`.
    pub rtt_percentiles: Vec<Percentile>,
    /// Payload bytes that crossed the channel per second, both directions.
    pub throughput_bytes_per_second: f64,
    pub messages_per_second: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    pub raw_messages: u64,
    pub raw_rtt_p50_seconds: f64,
    pub raw_rtt_p99_seconds: f64,
    pub raw_throughput_bytes_per_second: f64,
    pub raw_lost: u64,
    pub raw_duplicated: u64,
    pub raw_corrupted: u64,
    /// `rtt_p50_seconds / raw_rtt_p50_seconds`.
    pub rtt_p50_ratio: f64,
    /// `throughput_bytes_per_second / raw_throughput_bytes_per_second`.
    pub throughput_ratio: f64,
    pub coordinator_peak_rss_bytes: Option<u64>,
    pub worker_peak_rss_bytes: Option<u64>,
    /// What went wrong, in words (empty when nothing did).
    pub incidents: Vec<String>,
}

impl StressResult {
    /// Lost, duplicated and corrupted frames, framed and raw together.
    pub fn integrity_failures(&self) -> u64 {
        self.lost
            + self.duplicated
            + self.corrupted
            + self.raw_lost
            + self.raw_duplicated
            + self.raw_corrupted
    }
}

/// `fibpool stress`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StressReport {
    pub workers: usize,
    pub worker_command: String,
    pub results: Vec<StressResult>,
    /// With `--vs-python`, where python3 is present: the same patterns over
    /// Python's multiprocessing.
    pub python: Option<PythonStress>,
}

/// The columns every stress row has: what, pattern, size, messages, round
/// trips, throughput.
fn measured_header() -> String {
    format!(
        "{:<6} {:<8} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "", "", "size", "msgs", "rtt p50", "p99", "p99.9", "max", "MB/s", "msg/s"
    )
}

/// A row's cells under [`measured_header`]; `rtt` is p50, p99, p99.9, max.
fn measured_cells(
    what: &str,
    pattern: &str,
    size: usize,
    messages: u64,
    rtt: [f64; 4],
    bytes_per_second: f64,
    messages_per_second: f64,
) -> String {
    format!(
        "{what:<6} {pattern:<8} {:>6} {messages:>8} {:>9} {:>9} {:>9} {:>9} {:>10.1} {messages_per_second:>10.0}",
        bytes(size),
        seconds(rtt[0]),
        seconds(rtt[1]),
        seconds(rtt[2]),
        seconds(rtt[3]),
        bytes_per_second / 1e6,
    )
}

/// `fibpool stress --vs-python`: bench/python_stress.py's measurements.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct PythonStress {
    /// Python's version, as `3.12.1`.
    pub python: String,
    /// multiprocessing's start method for the child.
    pub start_method: String,
    /// The fibpool transport each row is compared with (the first measured).
    #[serde(default)]
    pub against: String,
    pub rows: Vec<PythonStressResult>,
}

/// One mechanism (`Pipe` or `Queue`), pattern and size.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct PythonStressResult {
    pub mechanism: String,
    pub pattern: String,
    pub size_bytes: usize,
    pub messages: u64,
    pub rtt_p50_seconds: f64,
    pub rtt_p99_seconds: f64,
    pub rtt_p999_seconds: f64,
    pub rtt_max_seconds: f64,
    /// The round trip at each of [`PERCENTILES`].
    #[serde(default)]
    pub rtt_percentiles: Vec<Percentile>,
    pub throughput_bytes_per_second: f64,
    pub messages_per_second: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    /// Its p50 over fibpool's for the same pattern and size (above 1:
    /// Python's round trip is longer).
    #[serde(default)]
    pub rtt_p50_vs_fibpool: Option<f64>,
    /// Its throughput over fibpool's (below 1: Python moves less).
    #[serde(default)]
    pub throughput_vs_fibpool: Option<f64>,
}

impl PythonStress {
    /// Sets each row's ratios against `results` rows of transport
    /// `against`, where one has the same pattern and size.
    pub fn compare(&mut self, results: &[StressResult], against: &'static str) {
        self.against = against.to_owned();
        for row in &mut self.rows {
            let ours = results.iter().find(|r| {
                r.transport == against && r.pattern == row.pattern && r.size_bytes == row.size_bytes
            });
            row.rtt_p50_vs_fibpool = ours.map(|r| row.rtt_p50_seconds / r.rtt_p50_seconds);
            row.throughput_vs_fibpool =
                ours.map(|r| row.throughput_bytes_per_second / r.throughput_bytes_per_second);
        }
    }

    /// Lost, duplicated and corrupted messages, all rows together.
    pub fn integrity_failures(&self) -> u64 {
        self.rows
            .iter()
            .map(|r| r.lost + r.duplicated + r.corrupted)
            .sum()
    }

    fn table(&self) -> String {
        let mut out = format!(
            "Python {} multiprocessing (child by {}), x: against fibpool over {}\n",
            self.python, self.start_method, self.against
        );
        out += &format!(
            "{} {:>6} {:>6}  {}\n",
            measured_header(),
            "p50 x",
            "MB/s x",
            "lost/dup/bad"
        );
        for r in &self.rows {
            out += &format!(
                "{} {:>6} {:>6}  {}/{}/{}\n",
                measured_cells(
                    &r.mechanism,
                    &r.pattern,
                    r.size_bytes,
                    r.messages,
                    [
                        r.rtt_p50_seconds,
                        r.rtt_p99_seconds,
                        r.rtt_p999_seconds,
                        r.rtt_max_seconds
                    ],
                    r.throughput_bytes_per_second,
                    r.messages_per_second
                ),
                ratio(r.rtt_p50_vs_fibpool.unwrap_or(f64::NAN)),
                ratio(r.throughput_vs_fibpool.unwrap_or(f64::NAN)),
                r.lost,
                r.duplicated,
                r.corrupted,
            );
        }
        out
    }
}

impl StressReport {
    /// The human table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} {:>9} {:>10} {:>6} {:>6}  {}\n",
            measured_header(),
            "raw p50",
            "raw MB/s",
            "p50 x",
            "MB/s x",
            "lost/dup/bad"
        );
        for r in &self.results {
            out += &format!(
                "{} {:>9} {:>10.1} {:>6} {:>6}  {}/{}/{}\n",
                measured_cells(
                    r.transport,
                    r.pattern,
                    r.size_bytes,
                    r.messages,
                    [
                        r.rtt_p50_seconds,
                        r.rtt_p99_seconds,
                        r.rtt_p999_seconds,
                        r.rtt_max_seconds
                    ],
                    r.throughput_bytes_per_second,
                    r.messages_per_second
                ),
                seconds(r.raw_rtt_p50_seconds),
                r.raw_throughput_bytes_per_second / 1e6,
                ratio(r.rtt_p50_ratio),
                ratio(r.throughput_ratio),
                r.lost + r.raw_lost,
                r.duplicated + r.raw_duplicated,
                r.corrupted + r.raw_corrupted,
            );
        }
        let rss = |f: fn(&StressResult) -> Option<u64>| {
            self.results
                .iter()
                .filter_map(f)
                .max()
                .map_or("-".to_owned(), |b| format!("{:.1} MB", b as f64 / 1e6))
        };
        out += &format!(
            "peak RSS: coordinator {}, largest worker {}\n",
            rss(|r| r.coordinator_peak_rss_bytes),
            rss(|r| r.worker_peak_rss_bytes)
        );
        for r in &self.results {
            for incident in &r.incidents {
                out += &format!(
                    "incident in {} {} {}: {incident}\n",
                    r.transport,
                    r.pattern,
                    bytes(r.size_bytes)
                );
            }
        }
        if let Some(python) = &self.python {
            out += "\n";
            out += &python.table();
        }
        out
    }
}

/// Rows of (header, cell) as right-aligned columns under their headers.
fn aligned(rows: &[Vec<(&str, String)>]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let widths: Vec<usize> = (0..first.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].1.chars().count())
                .chain([first[i].0.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:>width$}"))
            .collect();
        format!("  {}\n", padded.join("  "))
    };
    let mut out = line(first.iter().map(|(header, _)| *header).collect());
    for row in rows {
        out += &line(row.iter().map(|(_, cell)| cell.as_str()).collect());
    }
    out
}

/// A size for people: "8", "1K", "64K", "1M".
pub fn bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}M", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}K", n >> 10),
        n => n.to_string(),
    }
}

/// `fibpool bench` for one worker count of one workload. Durations are
/// medians of the repeats, with their minimum and maximum.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchRow {
    pub workers: usize,
    /// The batch computed in one process, no pool.
    pub sequential_seconds: f64,
    pub sequential_min_seconds: f64,
    pub sequential_max_seconds: f64,
    /// The pool's whole time: start the workers, run, shut down.
    pub pool_seconds: f64,
    pub pool_min_seconds: f64,
    pub pool_max_seconds: f64,
    /// `sequential_seconds / pool_seconds`.
    pub speedup: f64,
    /// `speedup / workers`.
    pub efficiency: f64,
    /// The machine's ceiling: as many worker processes as `workers`, each
    /// computing an equal share of the batch with nothing moved back and no
    /// start-up counted.
    pub ceiling_seconds: f64,
    /// `sequential_seconds / ceiling_seconds`: the best speedup this machine
    /// allows for this batch.
    pub ceiling_speedup: f64,
    /// `ceiling_seconds / pool_seconds`: how much of that the pool reached.
    pub pool_of_ceiling: f64,
    /// The serial fraction that explains this speedup (none for one worker).
    pub karp_flatt: Option<f64>,
    /// Amdahl's prediction from the workload's serial fraction.
    pub amdahl_speedup: Option<f64>,
    /// Shares of the pool's wall time: until every worker was ready; the
    /// workers' own computing (their busy time over the worker count); the
    /// rest (IPC, waiting, reassembly, shutdown).
    pub startup_share: f64,
    pub compute_share: f64,
    pub ipc_share: f64,
    /// The Python peer, a whole process, and a whole `fibpool run` process
    /// on the same indices, when measured.
    pub python_seconds: Option<f64>,
    pub fibpool_process_seconds: Option<f64>,
    /// `python_seconds / fibpool_process_seconds`.
    pub python_ratio: Option<f64>,
    /// The gmpy2 peer, a whole process, and a whole `fibpool run --output
    /// hex` process writing the same bytes, when measured.
    pub gmpy2_seconds: Option<f64>,
    pub fibpool_hex_process_seconds: Option<f64>,
    /// `gmpy2_seconds / fibpool_hex_process_seconds`.
    pub gmpy2_ratio: Option<f64>,
}

/// `fibpool bench` for one workload.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchWorkload {
    pub name: String,
    /// How the pools started their workers (the Python columns are the
    /// first method's alone).
    pub start_method: &'static str,
    pub description: String,
    pub tasks: u64,
    /// The median of the Karp-Flatt figures: Amdahl's serial fraction, when
    /// it lies between 0 and 1.
    pub serial_fraction: Option<f64>,
    /// True when the pool was slower than one process: the Karp-Flatt figures
    /// exceed 1 and no Amdahl prediction is made.
    pub overhead_bound: bool,
    /// True when the speedup exceeded the worker count: the Karp-Flatt
    /// figures are below 0 and no Amdahl prediction is made.
    pub superlinear: bool,
    pub results: Vec<BenchRow>,
}

/// `fibpool bench`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchReport {
    pub workers: Vec<usize>,
    pub repeat: usize,
    /// How the pools' frames travelled.
    pub transport: &'static str,
    pub worker_command: String,
    /// The Python version compared against, when one was.
    pub python: Option<String>,
    /// The Python and gmpy2 versions of the gmpy2 peer, when it ran.
    pub gmpy2: Option<String>,
    pub workloads: Vec<BenchWorkload>,
}

impl BenchReport {
    /// The human tables, one per workload.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for w in &self.workloads {
            out += &format!(
                "{}: {} ({} indices), start method {}, transport {}, median of {}{}\n",
                w.name,
                w.description,
                w.tasks,
                w.start_method,
                self.transport,
                self.repeat,
                match (w.serial_fraction, w.overhead_bound, w.superlinear) {
                    (Some(e), _, _) => format!(", serial fraction {e:.3}"),
                    (None, true, _) =>
                        ", the pool's overhead outweighs the work: no Amdahl prediction".to_owned(),
                    (None, _, true) =>
                        ", speedup above the worker count: no Amdahl prediction".to_owned(),
                    (None, false, false) => String::new(),
                },
            );
            let rows: Vec<Vec<(&str, String)>> = w
                .results
                .iter()
                .map(|r| {
                    let opt =
                        |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_owned(), f);
                    vec![
                        ("workers", r.workers.to_string()),
                        ("sequential", seconds(r.sequential_seconds)),
                        ("pool", seconds(r.pool_seconds)),
                        (
                            "pool min..max",
                            format!(
                                "{}..{}",
                                seconds(r.pool_min_seconds),
                                seconds(r.pool_max_seconds)
                            ),
                        ),
                        ("speedup", format!("{:.2}", r.speedup)),
                        ("eff.", format!("{:.2}", r.efficiency)),
                        ("ceiling", format!("{:.2}", r.ceiling_speedup)),
                        ("of it", format!("{:.0}%", r.pool_of_ceiling * 100.0)),
                        ("K-F", opt(r.karp_flatt, &|e| format!("{e:.3}"))),
                        ("Amdahl", opt(r.amdahl_speedup, &|s| format!("{s:.2}"))),
                        ("startup", format!("{:.0}%", r.startup_share * 100.0)),
                        ("compute", format!("{:.0}%", r.compute_share * 100.0)),
                        ("ipc", format!("{:.0}%", r.ipc_share * 100.0)),
                        ("python", opt(r.python_seconds, &seconds)),
                        ("fibpool", opt(r.fibpool_process_seconds, &seconds)),
                        ("py/fib", opt(r.python_ratio, &|x| format!("{x:.0}x"))),
                        ("gmpy2", opt(r.gmpy2_seconds, &seconds)),
                        ("fib hex", opt(r.fibpool_hex_process_seconds, &seconds)),
                        ("gmpy2/fib", opt(r.gmpy2_ratio, &|x| format!("{x:.2}x"))),
                    ]
                })
                .collect();
            out += &aligned(&rows);
            out.push('\n');
        }
        if let Some(python) = &self.python {
            out += &format!("python: {python}, the peer in bench/python_peer.py\n");
        }
        if let Some(gmpy2) = &self.gmpy2 {
            out += &format!("gmpy2: {gmpy2}, the peer in bench/gmpy2_peer.py\n");
        }
        out
    }
}

#[cfg(test)]
mod ratio_tests {
    #[test]
    fn ratios_without_a_value_are_dashes() {
        assert_eq!(super::ratio(1.234), "1.23");
        assert_eq!(super::ratio(f64::NAN), "-");
        assert_eq!(super::ratio(f64::INFINITY), "-");
    }
}

#[cfg(test)]
mod tests {
    use super::seconds;

    #[test]
    fn durations_read_in_their_unit() {
        let shown: Vec<String> = [4.1e-7, 4.12e-4, 1.234e-3, 2.5, f64::NAN]
            .into_iter()
            .map(seconds)
            .collect();
        assert_eq!(shown, ["410 ns", "412 µs", "1.23 ms", "2.50 s", "-"]);
    }
}
