//! `fibpool run`.

use std::fs::File;
use std::io::{self, BufReader};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use fibpool_protocol::{Encoding, MAX_INDEX};

use super::lines::Lines;
use super::progress::Progress;
use super::{
    ReportFile, check_workers, create_report, quoted_path, seconds, usage, worker_command,
};
use fibpool_coordinator::input::{DEFAULT_MAX_INDEX, InputError, Parser};
use fibpool_coordinator::pool::DEFAULT_RETRIES;
use fibpool_coordinator::pool::probe::peak_rss_bytes;
use fibpool_coordinator::report::RunReport;
use fibpool_coordinator::{
    Host, Pool, PoolError, RunOptions, StartMethod, TaskList, Transport, WorkerCommand,
    default_workers,
};

/// The longest --task-timeout accepted: a day.
const MAX_TASK_TIMEOUT_SECONDS: f64 = 86_400.0;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Worker processes [default: one per core]
    #[arg(short, long, value_name = "N", value_parser = super::whole::<usize>)]
    workers: Option<usize>,

    /// Indices per chunk [default: guided: a quarter of the remaining indices per worker, at most 4096, at least a floor of work]
    #[arg(short, long, value_name = "K", value_parser = super::whole::<u64>)]
    chunk_size: Option<u64>,

    /// How values are printed
    #[arg(long, value_enum, default_value_t = Output::Decimal)]
    output: Output,

    /// Print values as chunks complete instead of in input order
    #[arg(long)]
    unordered: bool,

    /// Read index tokens from FILE ('-' for stdin), separated by whitespace or commas
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,

    /// Write a JSON report of the run to FILE
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    /// Refuse indices above N (at most 20000000000; a value that would not
    /// fit in memory is refused up front whatever N is)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_INDEX, value_parser = super::whole::<u64>)]
    max_index: u64,

    /// Start workers with this command instead of `fibpool worker`
    #[arg(long, value_name = "CMD")]
    worker_cmd: Option<String>,

    #[command(flatten)]
    handshake: super::HandshakeArg,

    #[command(flatten)]
    hosts: super::HostsArg,

    /// Stop when one chunk has taken its worker down this many times in a row
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RETRIES, value_parser = super::whole::<u32>)]
    retries: u32,

    /// Kill and replace a worker that spends longer than this on one chunk, and retry the chunk
    #[arg(long, value_name = "SECONDS")]
    task_timeout: Option<String>,

    /// Warn on stderr when no value has come for this long and a worker is stopped (SIGSTOP)
    #[arg(long, value_name = "SECONDS", default_value = super::stall::DEFAULT_STALL_WARNING)]
    stall_warning: String,

    /// Replace each worker by a fresh process after it has been sent N chunks
    #[arg(long, value_name = "N", value_parser = super::whole::<u64>)]
    max_tasks_per_child: Option<u64>,

    /// How frames travel between the coordinator and its workers
    #[arg(long, value_enum, default_value_t = TransportArg::Pipe)]
    transport: TransportArg,

    /// How workers are started
    #[arg(long, value_enum, default_value_t = StartMethodArg::Spawn)]
    start_method: StartMethodArg,

    /// Indices: N, A..B (half-open), A..=B, NxK (K copies of N)
    #[arg(value_name = "INDICES", allow_negative_numbers = true)]
    indices: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TransportArg {
    /// Anonymous pipes on the worker's stdin and stdout
    Pipe,
    /// A Unix local socket (interprocess local_socket)
    Socket,
    /// TCP, each worker connecting with a token; for remote workers, past ssh's cipher (unencrypted)
    Tcp,
    /// Shared memory: a ring each way in a memfd, woken through a socket pair; this machine's workers only
    Shm,
}

impl From<TransportArg> for Transport {
    fn from(arg: TransportArg) -> Transport {
        match arg {
            TransportArg::Pipe => Transport::Pipe,
            TransportArg::Socket => Transport::Socket,
            TransportArg::Tcp => Transport::Tcp,
            TransportArg::Shm => Transport::SharedMemory,
        }
    }
}

/// `--start-method` for a measurement that takes several (startup, bench).
#[derive(Debug, Args)]
pub(crate) struct StartMethodsArg {
    /// Start methods, comma-separated, each measured in every round (bench: the first also for `fibpool run` against the peers)
    #[arg(
        long = "start-method",
        value_name = "M[,M...]",
        value_delimiter = ',',
        default_value = "spawn"
    )]
    start_method: Vec<StartMethodArg>,
}

impl StartMethodsArg {
    /// Each method once, in the order given.
    pub(crate) fn methods(&self) -> Vec<StartMethod> {
        super::dedup(self.start_method.iter().map(|&m| m.into()))
    }

    pub(crate) fn forks(&self) -> bool {
        self.start_method.contains(&StartMethodArg::Fork)
    }

    /// The methods as given.
    pub(crate) fn given(&self) -> &[StartMethodArg] {
        &self.start_method
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StartMethodArg {
    /// Each worker is the worker command, spawned (vfork or posix_spawn, and exec)
    Spawn,
    /// One server is spawned; each worker is a fork of it (no exec)
    Forkserver,
    /// The server is a fork of this process: no worker pays for an exec
    Fork,
}

impl From<StartMethodArg> for StartMethod {
    fn from(arg: StartMethodArg) -> StartMethod {
        match arg {
            StartMethodArg::Spawn => StartMethod::Spawn,
            StartMethodArg::Forkserver => StartMethod::Forkserver,
            StartMethodArg::Fork => StartMethod::Fork,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Decimal digits
    Decimal,
    /// Lowercase hexadecimal digits, no prefix
    Hex,
    /// Print nothing: compute only
    None,
}

impl Output {
    /// How workers encode the values: raw when none are printed.
    fn encoding(self) -> Encoding {
        match self {
            Output::Decimal => Encoding::Decimal,
            Output::Hex => Encoding::Hex,
            Output::None => Encoding::Raw,
        }
    }
}

/// `fibpool run` after validation.
struct RunConfig {
    workers: usize,
    chunk_size: Option<NonZeroU64>,
    output: Output,
    ordered: bool,
    tasks: TaskList,
    report: Option<ReportFile>,
    command: WorkerCommand,
    retries: u32,
    task_timeout: Option<Duration>,
    handshake_timeout: Duration,
    stall_warning: Duration,
    max_tasks_per_child: Option<u64>,
    transport: Transport,
    start_method: StartMethod,
    hosts: Vec<fibpool_coordinator::Host>,
    ssh: fibpool_coordinator::Ssh,
    /// `--workers`, given: the count per host with `--hosts`.
    workers_given: Option<usize>,
}

impl RunArgs {
    /// Whether the run forks its workers' server from this process, which
    /// must then still have one thread ([`fibpool_coordinator::prepare_fork`]).
    pub(crate) fn forks(&self) -> bool {
        self.start_method == StartMethodArg::Fork && self.worker_cmd.is_none()
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let mut config = validate(args)?;
    let started = Instant::now();
    // What every report says, whatever the outcome; filled in below.
    let mut report = RunReport {
        outcome: "completed".to_owned(),
        error: None,
        workers: config.workers,
        tasks: config.tasks.len(),
        tasks_done: 0,
        chunks: None,
        chunk_size: config.chunk_size.map(NonZeroU64::get),
        wall_seconds: 0.0,
        ready_seconds: None,
        done_seconds: None,
        worker_restarts: 0,
        retried_chunks: 0,
        recycled: 0,
        worker_stats: Vec::new(),
        worker_stats_dropped: 0,
        coordinator_peak_rss_bytes: None,
    };
    // A signal from here on writes what is known: set before the pool
    // starts, since its workers may be stopped while they start.
    let done = Arc::new(AtomicU64::new(0));
    let built: Arc<OnceLock<Arc<Pool>>> = Arc::new(OnceLock::new());
    if let Some(file) = &mut config.report {
        let (mut report, done, built) = (report.clone(), done.clone(), built.clone());
        file.on_signal(move |signal| {
            report.outcome = format!("stopped by {signal}");
            report.tasks_done = done.load(Ordering::Relaxed);
            report.wall_seconds = started.elapsed().as_secs_f64();
            report.coordinator_peak_rss_bytes = peak_rss_bytes("/proc/self/status");
            if let Some(pool) = built.get() {
                report.workers = pool.size();
                report.set_counts(pool.counts());
            }
            report
        });
    }
    let mut builder = Pool::builder();
    if config.hosts.is_empty() {
        builder = builder.workers(config.workers);
    } else {
        builder = builder.hosts(config.hosts.clone()).ssh(config.ssh.clone());
        if let Some(n) = config.workers_given {
            builder = builder.workers(n);
        }
    }
    let pool = builder
        .worker_command(config.command.clone())
        .retries(config.retries)
        .task_timeout(config.task_timeout)
        .handshake_timeout(config.handshake_timeout)
        .max_tasks_per_child(config.max_tasks_per_child)
        .transport(config.transport)
        .start_method(config.start_method)
        .build();
    let pool = match pool {
        Ok(pool) => {
            // With --hosts, the hosts' counts (their core counts, say).
            report.workers = pool.size();
            built.get_or_init(|| Arc::new(pool)).clone()
        }
        Err(e) => {
            let e = anyhow::Error::new(e).context("cannot start the pool");
            report.outcome = "failed".to_owned();
            report.error = Some(format!("{e:#}"));
            report.wall_seconds = started.elapsed().as_secs_f64();
            if let Some(file) = &config.report {
                file.write(&report)?;
            }
            return Err(e);
        }
    };

    let encoding = config.output.encoding();
    let options = RunOptions {
        chunk_size: config.chunk_size,
        encoding,
        ordered: config.ordered,
    };
    let mut out = Lines::new(super::Stdout);
    let print = config.output != Output::None;
    let mut progress = Progress::new(config.tasks.len(), "run");
    let stall = super::stall::StallWatch::start(done.clone(), config.stall_warning);
    let outcome = pool
        .run_chunks(&config.tasks, &options, |chunk| {
            progress.inc(chunk.len());
            if !print {
                done.fetch_add(chunk.len(), Ordering::Relaxed);
                return Ok(());
            }
            // A line counts as done once handed to stdout's writer, as it
            // would be once in a buffer.
            let written = out.write_items(chunk.items());
            done.store(out.handed, Ordering::Relaxed);
            written
        })
        .and_then(|summary| out.flush().map(|()| summary).map_err(PoolError::Sink));
    progress.finish();
    drop(stall);
    report.ready_seconds = pool
        .probe()
        .ready_at()
        .map(|at| at.saturating_duration_since(started).as_secs_f64());
    // Values handed to stdout's buffer count as done once it is flushed;
    // on an error, what is still buffered may not have reached the reader.
    report.tasks_done = done.load(Ordering::Relaxed);
    let result = match outcome {
        Ok(summary) => {
            report.done_seconds = Some(started.elapsed().as_secs_f64());
            report.chunks = Some(summary.chunks);
            report.chunk_size = summary.chunk_size;
            pool.shutdown(true, false)
                .context("shutting the pool down failed")
        }
        // A reader that stopped reading (`| head`) is a normal end: dropping the pool reaps the workers.
        Err(PoolError::Sink(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            report.outcome = "stdout closed".to_owned();
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context("the run failed")),
    };
    if let Err(e) = &result {
        report.outcome = "failed".to_owned();
        report.error = Some(format!("{e:#}"));
    }
    report.worker_stats = pool.worker_stats();
    let counts = pool.counts();
    report.set_counts(counts);
    report.worker_stats_dropped = counts.stats_dropped;
    report.wall_seconds = started.elapsed().as_secs_f64();
    // Only a report shows it: reading /proc/self/status costs tens of
    // microseconds, which a short run would pay for nothing.
    if config.report.is_some() {
        report.coordinator_peak_rss_bytes = peak_rss_bytes("/proc/self/status");
    }
    if report.outcome == "completed" {
        super::say(&report.summary());
    }
    if let Some(file) = &config.report {
        file.write(&report)?;
    }
    result.map(|()| ExitCode::SUCCESS)
}

fn validate(args: RunArgs) -> Result<RunConfig> {
    let workers = check_workers(args.workers.unwrap_or_else(default_workers))?;
    let chunk_size = match args.chunk_size {
        None => None,
        Some(k) => match NonZeroU64::new(k) {
            Some(k) => Some(k),
            None => usage!("--chunk-size must be at least 1"),
        },
    };
    if args.max_index > MAX_INDEX {
        usage!(
            "--max-index {} is above the largest index a worker computes ({MAX_INDEX})",
            args.max_index
        );
    }
    let tasks = read_tasks(&args.indices, args.input.as_deref(), args.max_index)?;
    let (hosts, ssh) = args.hosts.hosts()?;
    let at_once = known_pool_size(&hosts, args.workers, workers);
    if let Err(e) = fibpool_coordinator::check_batch(&tasks, args.output.encoding(), at_once) {
        usage!("{e}");
    }
    if args.retries == 0 {
        usage!("--retries must be at least 1");
    }
    let task_timeout = match args.task_timeout {
        None => None,
        Some(text) => Some(seconds("--task-timeout", &text, MAX_TASK_TIMEOUT_SECONDS)?),
    };
    if args.max_tasks_per_child == Some(0) {
        usage!("--max-tasks-per-child must be at least 1");
    }
    super::check_fork_command(
        args.start_method == StartMethodArg::Fork,
        args.worker_cmd.is_some(),
    )?;
    let command = worker_command(args.worker_cmd.as_deref())?;
    let handshake_timeout = args.handshake.timeout()?;
    super::check_transports(&hosts, &[args.transport], args.start_method)?;
    let stall_warning = seconds(
        "--stall-warning",
        &args.stall_warning,
        MAX_TASK_TIMEOUT_SECONDS,
    )?;
    let report = create_report(args.report)?;
    Ok(RunConfig {
        workers,
        chunk_size,
        output: args.output,
        ordered: !args.unordered,
        tasks,
        report,
        command,
        retries: args.retries,
        task_timeout,
        handshake_timeout,
        stall_warning,
        max_tasks_per_child: args.max_tasks_per_child,
        transport: args.transport.into(),
        start_method: args.start_method.into(),
        hosts,
        ssh,
        workers_given: args.workers,
    })
}

/// The pool's size as far as it is known before it starts: with `--hosts`,
/// each host's own count, else `--workers`, else this machine's default for
/// this machine and 1 for a remote host (whose core count only its
/// connection tells; the pool checks the batch again once it knows).
fn known_pool_size(hosts: &[Host], given: Option<usize>, workers: usize) -> usize {
    if hosts.is_empty() {
        return workers;
    }
    hosts
        .iter()
        .map(|h| match (h.workers.or(given), &h.login) {
            (Some(n), _) => n,
            (None, None) => default_workers(),
            (None, Some(_)) => 1,
        })
        .fold(0, usize::saturating_add)
}

/// The batch from INDICES or `--input`, fully checked.
pub(crate) fn read_tasks(
    tokens: &[String],
    input: Option<&Path>,
    max_index: u64,
) -> Result<TaskList> {
    let mut parser = Parser::new(max_index);
    match input {
        Some(_) if !tokens.is_empty() => usage!("give INDICES or --input, not both"),
        None if tokens.is_empty() => usage!("no indices given: pass INDICES or --input FILE"),
        None => {
            for token in tokens {
                if let Err(e) = parser.parse_str(token) {
                    usage!("{e}");
                }
            }
        }
        Some(path) => {
            let result = if path == Path::new("-") {
                parser.parse_reader(io::stdin().lock())
            } else {
                let file = match File::open(path) {
                    Ok(file) => file,
                    Err(e) => usage!("cannot read --input {}: {e}", quoted_path(path)),
                };
                match file.metadata() {
                    Ok(m) if m.is_dir() => usage!(
                        "cannot read --input {}: it is a directory",
                        quoted_path(path)
                    ),
                    Ok(m) => parser.reserve_for(m.len()),
                    Err(_) => {}
                }
                parser.parse_reader(BufReader::new(file))
            };
            match result {
                Ok(()) => {}
                Err((_, InputError::Read(e))) => {
                    usage!("cannot read --input {}: {e}", quoted_path(path))
                }
                Err((line, e)) => usage!("--input {} line {line}: {e}", quoted_path(path)),
            }
        }
    }
    let tasks = parser.finish();
    if tasks.is_empty() {
        usage!("the indices given select nothing");
    }
    Ok(tasks)
}
