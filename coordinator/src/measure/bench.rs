//! `fibpool bench`'s measurement: for each workload and worker count, the
//! in-process sequential time, the pool's whole time (start, run, stop), and
//! optionally the Python peer against a whole `fibpool run` process. Raw
//! samples only: statistics are in [`crate::stats`], the report in
//! [`crate::report`].

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use fibpool_protocol::Encoding;
use fibpool_worker::kernels::{Tally, encode_run};

use crate::report::{BenchReport, BenchRow, BenchWorkload};
use crate::stats::{amdahl_speedup, karp_flatt, median};
use crate::{
    Host, Pool, PoolError, RunOptions, Ssh, StartMethod, TaskList, Transport, WorkerCommand,
};

/// The Python peers, embedded so that an installed `fibpool` can run them.
const PYTHON_PEER: &str = include_str!("../../../bench/python_peer.py");
const GMPY2_PEER: &str = include_str!("../../../bench/gmpy2_peer.py");

/// A named batch.
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    build: fn() -> TaskList,
}

impl Preset {
    pub fn tasks(&self) -> TaskList {
        (self.build)()
    }
}

/// The seed's table, and two heavy batches.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "seed-100x1000",
        description: "100 x F(1000): 100 distinct indices near 1000",
        build: || near(1000, 100),
    },
    Preset {
        name: "seed-1000x1000",
        description: "1000 x F(1000): 500 distinct indices near 1000, each twice",
        build: || near(1000, 1000),
    },
    Preset {
        name: "seed-10000x100",
        description: "10000 x F(100): 50 distinct indices near 100, in turn",
        build: || near(100, 10_000),
    },
    Preset {
        name: "seed-range-1000",
        description: "the range 0..1000",
        build: || range(0, 1000),
    },
    Preset {
        name: "heavy-200x200000",
        description: "200 distinct indices near 200000",
        build: || near(200_000, 200),
    },
    Preset {
        name: "heavy-40x1000000",
        description: "40 distinct indices near 10^6",
        build: || near(1_000_000, 40),
    },
    Preset {
        name: "heavy-8x5000000",
        description: "8 distinct indices near 5x10^6",
        build: || near(5_000_000, 8),
    },
    Preset {
        name: "heavy-range-50000",
        description: "the range 0..50000",
        build: || range(0, 50_000),
    },
];

pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// `count` indices around `n`: at most n/2 distinct ones, two apart, taken
/// in turn. No two neighbours in the list are consecutive, so none becomes
/// part of a run: every index is computed alone, by fast doubling, in fibpool
/// and in the Python peer alike.
pub fn near(n: u64, count: u64) -> TaskList {
    let distinct = count.min((n / 2).max(1));
    let first = n.saturating_sub(2 * (distinct / 2));
    (0..count).map(|j| first + 2 * (j % distinct)).collect()
}

fn range(start: u64, end: u64) -> TaskList {
    let mut tasks = TaskList::new();
    tasks.push_range(start, end);
    tasks
}

/// A batch to measure.
pub struct Workload {
    pub name: String,
    pub description: String,
    pub tasks: TaskList,
}

/// The Python side of the comparison.
pub struct PythonPeer {
    /// The interpreter itself (not a shim that starts it).
    pub interpreter: PathBuf,
    pub version: String,
    pub repeat: usize,
}

pub struct BenchPlan {
    pub workloads: Vec<Workload>,
    pub workers: Vec<usize>,
    pub repeat: usize,
    pub command: WorkerCommand,
    /// This program, for whole-process runs against the Python peer.
    pub fibpool: PathBuf,
    pub python: Option<PythonPeer>,
    /// The gmpy2 peer, against a whole `fibpool run --output hex`.
    pub gmpy2: Option<PythonPeer>,
    /// A private directory for the peers' scripts and index files (the
    /// caller makes it, and removes it on every exit path).
    pub scratch: PathBuf,
    /// How long a worker has to complete its handshake.
    pub handshake_timeout: std::time::Duration,
    /// How the pools start their workers, each method in every repeat; the
    /// first is also `fibpool run`'s against the peers.
    pub start_methods: Vec<StartMethod>,
    /// How the pools' frames travel.
    pub transport: Transport,
    /// Hosts for the pools (none: this machine), each pool size then the
    /// workers per host, and how ssh reaches them.
    pub hosts: Vec<Host>,
    pub ssh: Ssh,
    /// Given to every `fibpool run` against the peers as well (the same
    /// hosts, for one).
    pub run_args: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("cannot run {what}")]
    Run {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("the gmpy2 peer and fibpool run disagree on {workload} at -w {workers}: {detail}")]
    Mismatch {
        workload: String,
        workers: usize,
        detail: String,
    },
    #[error("{what} failed ({status}): {stderr}")]
    Failed {
        what: String,
        status: String,
        stderr: String,
    },
}

/// Finds a Python 3 interpreter through `python3` on PATH and returns its
/// real path (a pyenv shim costs a shell script's start on every run), or
/// `None` when there is none.
pub fn find_python(repeat: usize) -> Option<PythonPeer> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, platform; print(sys.executable); print(platform.python_version())",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines = text.lines();
    let (executable, version) = (lines.next()?, lines.next()?);
    (out.status.success() && !executable.is_empty()).then(|| PythonPeer {
        interpreter: PathBuf::from(executable),
        version: version.to_owned(),
        repeat,
    })
}

/// Finds a Python 3 interpreter, as [`find_python`] does, that can import
/// gmpy2; else says why not, in one line.
pub fn find_gmpy2(repeat: usize) -> Result<PythonPeer, String> {
    let Some(mut peer) = find_python(repeat) else {
        return Err("python3 not found".to_owned());
    };
    let out = Command::new(&peer.interpreter)
        .args([
            "-c",
            "import gmpy2; print(gmpy2.version(), gmpy2.mp_version())",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", peer.interpreter.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} cannot import gmpy2 (install it with `pip install gmpy2`, in a venv whose python3 is first on PATH)",
            peer.interpreter.display()
        ));
    }
    let versions = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    peer.version = format!("{}, gmpy2 {versions}", peer.version);
    Ok(peer)
}

/// Steps of progress a plan takes, for a progress bar.
pub fn steps(plan: &BenchPlan) -> u64 {
    let python = plan.python.as_ref().map_or(0, |p| 2 * p.repeat);
    // One untimed pair checks that the outputs agree.
    let gmpy2 = plan.gmpy2.as_ref().map_or(0, |p| 2 * (p.repeat + 1));
    let methods = plan.start_methods.len();
    (plan.workloads.len()
        * (plan.repeat * (1 + (1 + methods) * plan.workers.len())
            + plan.workers.len() * (python + gmpy2))) as u64
}

/// Runs the plan; `tick` is called once per step.
pub fn measure(plan: &BenchPlan, mut tick: impl FnMut()) -> Result<BenchReport, BenchError> {
    let scratch = Scratch(&plan.scratch);
    let script = scratch.file("python_peer.py", PYTHON_PEER.as_bytes())?;
    let gmpy2_script = scratch.file("gmpy2_peer.py", GMPY2_PEER.as_bytes())?;
    let mut workloads = Vec::new();
    for (w, workload) in plan.workloads.iter().enumerate() {
        // For the peers alone, written as it is read: a batch of 10^9
        // indices is a few entries in memory and gigabytes as text.
        let input = plan.scratch.join(format!("indices-{w}.txt"));
        if plan.python.is_some() || plan.gmpy2.is_some() {
            scratch.write_with(&input, |out| {
                workload.tasks.iter().try_for_each(|n| writeln!(out, "{n}"))
            })?;
        }

        let mut sequential = Vec::new();
        // By method, then worker count.
        let mut pools: Vec<Vec<Vec<PoolSample>>> = plan
            .start_methods
            .iter()
            .map(|_| plan.workers.iter().map(|_| Vec::new()).collect())
            .collect();
        // Interleaved, so that every figure sees the same machine; the
        // methods in an order that turns from repeat to repeat.
        let k = plan.start_methods.len();
        for repeat in 0..plan.repeat {
            sequential.push(sequential_seconds(&workload.tasks));
            tick();
            for (i, &n) in plan.workers.iter().enumerate() {
                // What the machine allows, with no start-up: the same for every method.
                let ceiling = ceiling_sample(plan, &workload.tasks, n)?;
                tick();
                for m in (0..k).map(|m| (m + repeat) % k) {
                    let method = plan.start_methods[m];
                    let mut sample = pool_sample(plan, method, &workload.tasks, n)?;
                    tick();
                    sample.ceiling = ceiling;
                    pools[m][i].push(sample);
                }
            }
        }
        let mut processes = Vec::new();
        if let Some(python) = &plan.python {
            for &n in &plan.workers {
                let (mut py, mut fib) = (Vec::new(), Vec::new());
                for _ in 0..python.repeat {
                    let mut peer = Command::new(&python.interpreter);
                    peer.arg(&script)
                        .args(["--workers", &n.to_string(), "--input"])
                        .arg(&input);
                    py.push(time_process("the Python peer", peer)?);
                    tick();
                    let mut run = Command::new(&plan.fibpool);
                    run.args(["run", "-w", &n.to_string(), "--output", "none", "--input"])
                        .arg(&input)
                        .args(["--start-method", plan.start_methods[0].name()])
                        .args(&plan.run_args);
                    fib.push(time_process(FIBPOOL_RUN, run)?);
                    tick();
                }
                processes.push((median(&py), median(&fib)));
            }
        }
        let mut gmp_processes = Vec::new();
        if let Some(gmpy2) = &plan.gmpy2 {
            for &n in &plan.workers {
                let peer = || {
                    let mut peer = Command::new(&gmpy2.interpreter);
                    peer.arg(&gmpy2_script)
                        .args(["--workers", &n.to_string(), "--input"])
                        .arg(&input);
                    peer
                };
                let run = || {
                    let mut run = Command::new(&plan.fibpool);
                    run.args(["run", "-w", &n.to_string(), "--output", "hex", "--input"])
                        .arg(&input)
                        .args(["--start-method", plan.start_methods[0].name()])
                        .args(&plan.run_args);
                    run
                };
                let theirs = process_output("the gmpy2 peer", peer())?;
                tick();
                let ours = process_output(FIBPOOL_RUN, run())?;
                tick();
                if let Some(detail) = first_difference(&theirs, &ours) {
                    return Err(BenchError::Mismatch {
                        workload: workload.name.clone(),
                        workers: n,
                        detail,
                    });
                }
                let (mut gmp, mut fib) = (Vec::new(), Vec::new());
                for _ in 0..gmpy2.repeat {
                    gmp.push(time_process("the gmpy2 peer", peer())?);
                    tick();
                    fib.push(time_process(FIBPOOL_RUN, run())?);
                    tick();
                }
                gmp_processes.push((median(&gmp), median(&fib)));
            }
        }
        for (m, pools) in pools.iter().enumerate() {
            // The peers were timed against the first method's runs.
            let peers = |list: &Vec<(f64, f64)>| if m == 0 { list.clone() } else { Vec::new() };
            workloads.push(summarise(
                plan,
                plan.start_methods[m],
                workload,
                &sequential,
                pools,
                &peers(&processes),
                &peers(&gmp_processes),
            ));
        }
    }
    Ok(BenchReport {
        workers: plan.workers.clone(),
        repeat: plan.repeat,
        transport: plan.transport.name(),
        worker_command: plan.command.to_string(),
        python: plan
            .python
            .as_ref()
            .map(|p| format!("Python {}", p.version)),
        gmpy2: plan.gmpy2.as_ref().map(|p| format!("Python {}", p.version)),
        workloads,
    })
}

/// The batch computed in this process, one run at a time, each range whole.
fn sequential_seconds(tasks: &TaskList) -> f64 {
    let start = Instant::now();
    let mut tally = Tally::default();
    for run in tasks.runs() {
        encode_run(run.start, run.len, Encoding::Raw, &mut tally);
    }
    std::hint::black_box(tally.bytes);
    start.elapsed().as_secs_f64()
}

struct PoolSample {
    wall: f64,
    ready: f64,
    busy: f64,
    /// The machine's ceiling for the same batch and worker count.
    ceiling: f64,
}

/// A whole pool: start, run the batch (values returned raw), stop.
fn pool_sample(
    plan: &BenchPlan,
    method: StartMethod,
    tasks: &TaskList,
    n: usize,
) -> Result<PoolSample, PoolError> {
    let start = Instant::now();
    let mut builder = Pool::builder()
        .workers(n)
        .start_method(method)
        .transport(plan.transport)
        .worker_command(plan.command.clone())
        .handshake_timeout(plan.handshake_timeout);
    if !plan.hosts.is_empty() {
        builder = builder.hosts(plan.hosts.clone()).ssh(plan.ssh.clone());
    }
    let pool = builder.build()?;
    let mut bytes = 0usize;
    let options = RunOptions {
        chunk_size: None,
        encoding: Encoding::Raw,
        ordered: true,
    };
    pool.run(tasks, &options, |item| {
        bytes += item.value.len();
        Ok(())
    })?;
    // A small batch can be done before the last worker is up. That worker
    // must start before it can exit, and shutting down waits for its exit
    // either way: its start-up is counted rather than read as 0.
    let probe = pool.probe();
    if probe.ready_seconds().is_none() {
        probe.wait_ready()?;
    }
    let ready = probe.ready_seconds().unwrap_or(0.0);
    pool.shutdown(true, false)?;
    let workers = pool.worker_stats();
    std::hint::black_box(bytes);
    Ok(PoolSample {
        wall: start.elapsed().as_secs_f64(),
        ready,
        busy: workers.iter().map(|w| w.busy_seconds).sum(),
        ceiling: f64::NAN,
    })
}

/// `n` worker processes each computing an equal share of the batch, with
/// nothing moved back: what this machine allows (see [`crate::pool::probe::Probe::ceiling`]).
fn ceiling_sample(plan: &BenchPlan, tasks: &TaskList, n: usize) -> Result<f64, PoolError> {
    let pool = Pool::builder()
        .workers(n)
        // Spawned: what the machine allows, whichever method is measured
        // (forked workers computed more slowly here: docs/STARTUP.md).
        .start_method(StartMethod::Spawn)
        .worker_command(plan.command.clone())
        .handshake_timeout(plan.handshake_timeout)
        .build()?;
    let seconds = pool.probe().ceiling(tasks, Encoding::Raw)?;
    pool.shutdown(true, false)?;
    Ok(seconds)
}

/// What a timed run of this program is called in errors.
const FIBPOOL_RUN: &str = "fibpool run";

fn time_process(what: &str, mut command: Command) -> Result<f64, BenchError> {
    command.stdout(Stdio::null());
    run_process(what, command).map(|(seconds, _)| seconds)
}

/// What the process wrote to its stdout.
fn process_output(what: &str, mut command: Command) -> Result<Vec<u8>, BenchError> {
    command.stdout(Stdio::piped());
    run_process(what, command).map(|(_, stdout)| stdout)
}

fn run_process(what: &str, mut command: Command) -> Result<(f64, Vec<u8>), BenchError> {
    let start = Instant::now();
    command.stdin(Stdio::null()).stderr(Stdio::piped());
    // Its own group, stopped with this process by a signal. A peer also
    // dies with this process (a Python pool would compute on); a timed
    // `fibpool run` keeps the vfork spawn its timing is compared with
    // (its workers die with it).
    let peer = what != FIBPOOL_RUN;
    let out = crate::pool::registry::output_of_helper(command, peer).map_err(|source| {
        BenchError::Run {
            what: what.to_owned(),
            source,
        }
    })?;
    let seconds = start.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(BenchError::Failed {
            what: what.to_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok((seconds, out.stdout))
}

/// Where two outputs first differ, in lines, or `None` when they are the same.
fn first_difference(theirs: &[u8], ours: &[u8]) -> Option<String> {
    if theirs == ours {
        return None;
    }
    let count = |o: &[u8]| o.iter().filter(|&&c| c == b'\n').count();
    let (a, b) = (count(theirs), count(ours));
    if a != b {
        let lines = |n: usize| format!("{n} line{}", if n == 1 { "" } else { "s" });
        return Some(format!("the peer wrote {}, fibpool {}", lines(a), lines(b)));
    }
    let line = theirs
        .split(|&c| c == b'\n')
        .zip(ours.split(|&c| c == b'\n'))
        .position(|(x, y)| x != y)
        .map_or(a, |i| i + 1);
    Some(format!("line {line} differs"))
}

fn summarise(
    plan: &BenchPlan,
    method: StartMethod,
    workload: &Workload,
    sequential: &[f64],
    pools: &[Vec<PoolSample>],
    processes: &[(f64, f64)],
    gmp_processes: &[(f64, f64)],
) -> BenchWorkload {
    let seq = median(sequential);
    let mut rows: Vec<BenchRow> = plan
        .workers
        .iter()
        .zip(pools)
        .enumerate()
        .map(|(i, (&n, samples))| {
            let wall: Vec<f64> = samples.iter().map(|s| s.wall).collect();
            let pool = median(&wall);
            let speedup = seq / pool;
            let share = |part: fn(&PoolSample) -> f64| {
                median(&samples.iter().map(|s| part(s) / s.wall).collect::<Vec<_>>())
            };
            let startup = share(|s| s.ready);
            let compute = share(|s| s.busy) / n as f64;
            let ceiling = median(&samples.iter().map(|s| s.ceiling).collect::<Vec<_>>());
            BenchRow {
                workers: n,
                sequential_seconds: seq,
                sequential_min_seconds: min(sequential),
                sequential_max_seconds: max(sequential),
                pool_seconds: pool,
                pool_min_seconds: min(&wall),
                pool_max_seconds: max(&wall),
                speedup,
                efficiency: speedup / n as f64,
                ceiling_seconds: ceiling,
                ceiling_speedup: seq / ceiling,
                pool_of_ceiling: ceiling / pool,
                karp_flatt: karp_flatt(speedup, n),
                amdahl_speedup: None,
                startup_share: startup,
                compute_share: compute,
                ipc_share: (1.0 - startup - compute).max(0.0),
                python_seconds: processes.get(i).map(|p| p.0),
                fibpool_process_seconds: processes.get(i).map(|p| p.1),
                python_ratio: processes.get(i).map(|p| p.0 / p.1),
                gmpy2_seconds: gmp_processes.get(i).map(|p| p.0),
                fibpool_hex_process_seconds: gmp_processes.get(i).map(|p| p.1),
                gmpy2_ratio: gmp_processes.get(i).map(|p| p.0 / p.1),
            }
        })
        .collect();
    let fit = SerialFit::of(rows.iter().filter_map(|r| r.karp_flatt).collect());
    let serial_fraction = match fit {
        SerialFit::Fraction(e) => Some(e),
        _ => None,
    };
    for row in &mut rows {
        row.amdahl_speedup = serial_fraction.map(|e| amdahl_speedup(e, row.workers as f64));
    }
    BenchWorkload {
        name: workload.name.clone(),
        start_method: method.name(),
        description: workload.description.clone(),
        tasks: workload.tasks.len(),
        serial_fraction,
        overhead_bound: matches!(fit, SerialFit::OverheadBound(_)),
        superlinear: matches!(fit, SerialFit::Superlinear(_)),
        results: rows,
    }
}

/// What the median of a workload's Karp-Flatt figures says. One serial
/// fraction for the workload; the Amdahl prediction for every worker count
/// comes from it, when it is one.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SerialFit {
    /// No figure: only one worker count was measured.
    None,
    /// Between 0 and 1: Amdahl's serial fraction.
    Fraction(f64),
    /// Above 1: the pool is slower than one process (its overhead outweighs
    /// the work), which Amdahl's law, knowing no overhead, does not model.
    OverheadBound(f64),
    /// Below 0: the speedup exceeds the worker count (noise, or the
    /// baseline run slower than one worker), so no serial fraction shows.
    Superlinear(f64),
}

impl SerialFit {
    fn of(karp_flatt: Vec<f64>) -> SerialFit {
        if karp_flatt.is_empty() {
            return SerialFit::None;
        }
        match median(&karp_flatt) {
            e if e > 1.0 => SerialFit::OverheadBound(e),
            e if e < 0.0 => SerialFit::Superlinear(e),
            e => SerialFit::Fraction(e),
        }
    }
}

fn min(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// The plan's scratch directory.
struct Scratch<'a>(&'a Path);

impl Scratch<'_> {
    /// Writes a new file (never through an existing one).
    fn file(&self, name: &str, contents: &[u8]) -> Result<PathBuf, BenchError> {
        let path = self.0.join(name);
        self.write_with(&path, |out| out.write_all(contents))?;
        Ok(path)
    }

    /// Makes the file at `path` and writes it with `write`, buffered.
    fn write_with(
        &self,
        path: &Path,
        write: impl FnOnce(&mut io::BufWriter<std::fs::File>) -> io::Result<()>,
    ) -> Result<(), BenchError> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|file| {
                let mut out = io::BufWriter::new(file);
                write(&mut out)?;
                out.flush()
            })
            .map_err(|source| BenchError::Run {
                what: format!("write {}", path.display()),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_karp_flatt_decides_the_fit() {
        assert_eq!(SerialFit::of(vec![]), SerialFit::None);
        assert_eq!(SerialFit::of(vec![0.3, 0.1, 0.2]), SerialFit::Fraction(0.2));
        assert_eq!(SerialFit::of(vec![0.0]), SerialFit::Fraction(0.0));
        assert_eq!(SerialFit::of(vec![1.0]), SerialFit::Fraction(1.0));
        assert_eq!(SerialFit::of(vec![5.6]), SerialFit::OverheadBound(5.6));
        assert_eq!(SerialFit::of(vec![-0.036]), SerialFit::Superlinear(-0.036));
        assert_eq!(
            SerialFit::of(vec![-0.5, 0.4, 2.0]),
            SerialFit::Fraction(0.4)
        );
    }

    #[test]
    fn near_gives_distinct_isolated_indices() {
        let l = near(1000, 100);
        let v: Vec<u64> = l.iter().collect();
        assert_eq!(v.len(), 100);
        assert_eq!((v[0], v[99]), (900, 1098));
        assert!(l.runs().all(|r| r.len == 1), "no two indices form a run");
        let l = near(100, 10_000);
        assert_eq!(l.len(), 10_000);
        assert!(l.runs().all(|r| r.len == 1));
        let distinct: std::collections::BTreeSet<u64> = l.iter().collect();
        assert_eq!(distinct.len(), 50);
        assert_eq!(
            near(1000, 1000)
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            500
        );
    }

    #[test]
    fn outputs_that_differ_are_told_by_line_count_or_first_line() {
        assert_eq!(first_difference(b"a\nb\n", b"a\nb\n"), None);
        let differ = |a: &[u8], b: &[u8]| first_difference(a, b).unwrap();
        assert_eq!(
            differ(b"", b"a\nb\n"),
            "the peer wrote 0 lines, fibpool 2 lines"
        );
        assert_eq!(
            differ(b"a\n", b"a\nb\n"),
            "the peer wrote 1 line, fibpool 2 lines"
        );
        assert_eq!(differ(b"a\nc\n", b"a\nb\n"), "line 2 differs");
        assert_eq!(differ(b"a\nb", b"a\nbc"), "line 2 differs");
        // The same lines, one output without its final newline.
        assert_eq!(differ(b"a\nb\nx", b"a\nb\n"), "line 3 differs");
    }

    #[test]
    fn presets_are_what_they_say() {
        let sizes: Vec<(&str, u64)> = PRESETS.iter().map(|p| (p.name, p.tasks().len())).collect();
        assert_eq!(
            sizes,
            [
                ("seed-100x1000", 100),
                ("seed-1000x1000", 1000),
                ("seed-10000x100", 10_000),
                ("seed-range-1000", 1000),
                ("heavy-200x200000", 200),
                ("heavy-40x1000000", 40),
                ("heavy-8x5000000", 8),
                ("heavy-range-50000", 50_000),
            ]
        );
        let heavy: Vec<u64> = preset("heavy-8x5000000").unwrap().tasks().iter().collect();
        assert_eq!(heavy, (0..8).map(|j| 4_999_992 + 2 * j).collect::<Vec<_>>());
        assert_eq!(
            preset("heavy-range-50000").unwrap().tasks().runs().count(),
            1
        );
    }
}
