//! `fibpool startup`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::{check_workers, usage, worker_command};
use fibpool_coordinator::default_workers;
use fibpool_coordinator::measure::bench::{PythonPeer, find_python};
use fibpool_coordinator::measure::startup::{HostsPlan, StartupPlan, measure, measure_hosts};
use fibpool_coordinator::report::plot::startup_waterfall_svg;
use fibpool_coordinator::report::{HostStartupReport, StartupReport};
use fibpool_coordinator::stats::Summary;

/// The most rounds per pool size.
const MAX_ROUNDS: usize = 100_000;

#[derive(Debug, Args)]
pub struct StartupArgs {
    /// Pool sizes to measure, comma-separated [default: one per core]
    #[arg(short, long, value_name = "N[,N...]", value_delimiter = ',', value_parser = super::whole::<usize>)]
    workers: Vec<usize>,

    /// Measured rounds per pool size
    #[arg(long, value_name = "R", default_value_t = 20, value_parser = super::whole::<usize>)]
    rounds: usize,

    /// Unmeasured rounds before them
    #[arg(long, value_name = "R", default_value_t = 3, value_parser = super::whole::<usize>)]
    warmup: usize,

    /// Threads for the parallel-spawn variant of each round [default: one per core]
    #[arg(long, value_name = "T", value_parser = super::whole::<usize>)]
    spawn_threads: Option<usize>,

    /// Start workers with this command instead of `fibpool worker`
    #[arg(long, value_name = "CMD")]
    worker_cmd: Option<String>,

    /// Draw each method's median round as a waterfall (a worker a row, a phase a bar, the floor marked) to FILE (SVG)
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,

    /// Also time Python's ProcessPoolExecutor round with each of its start methods (bench/python_startup.py), after fibpool's rounds
    #[arg(long)]
    vs_python: bool,

    #[command(flatten)]
    start_methods: super::run::StartMethodsArg,

    #[command(flatten)]
    handshake: super::HandshakeArg,

    /// With --hosts: measure, per host, a worker's start on its master and over a connection of its own, instead of pools here
    #[command(flatten)]
    hosts: super::HostsArg,

    /// Write the report as JSON to FILE (one object per pool size and start method; an array when several)
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    /// How the pools' frames travel (the floor is always a pipe)
    #[arg(long, value_enum, default_value_t = super::run::TransportArg::Pipe)]
    transport: super::run::TransportArg,
}

impl StartupArgs {
    /// Whether a fork method is measured: see [`super::run::RunArgs::forks`].
    pub(crate) fn forks(&self) -> bool {
        self.start_methods.forks()
    }
}

pub fn startup(args: StartupArgs) -> Result<ExitCode> {
    let mut workers = args.workers;
    if workers.is_empty() {
        workers.push(default_workers());
    }
    for &n in &workers {
        check_workers(n)?;
    }
    if !(1..=MAX_ROUNDS).contains(&args.rounds) {
        usage!(
            "--rounds must be between 1 and {MAX_ROUNDS}, got {}",
            args.rounds
        );
    }
    if args.warmup > MAX_ROUNDS {
        usage!("--warmup must be at most {MAX_ROUNDS}, got {}", args.warmup);
    }
    let spawn_threads = args.spawn_threads.unwrap_or_else(default_workers);
    if spawn_threads == 0 {
        usage!("--spawn-threads must be at least 1");
    }
    super::check_fork_command(args.start_methods.forks(), args.worker_cmd.is_some())?;
    let methods = args.start_methods.methods();
    let command = worker_command(args.worker_cmd.as_deref())?;
    let (report, plot_file) = super::create_report_and_plot(args.report, args.plot.clone())?;
    let floor = floor_program()?;

    let handshake_timeout = args.handshake.timeout()?;
    let (hosts, ssh) = args.hosts.hosts()?;
    for &method in args.start_methods.given() {
        super::check_transports(&hosts, &[args.transport], method)?;
    }
    if !hosts.is_empty() {
        if args.transport != super::run::TransportArg::Pipe {
            usage!("--hosts measures the ssh sessions' own pipes: it takes no --transport");
        }
        if args.plot.is_some() || args.vs_python {
            usage!("--plot and --vs-python measure pools here: not with --hosts");
        }
        if methods != [fibpool_coordinator::StartMethod::Spawn] {
            usage!(
                "--hosts measures spawned workers here (':') and ssh sessions there: it takes no --start-method"
            );
        }
        let plan = HostsPlan {
            hosts,
            ssh,
            command,
            floor,
            rounds: args.rounds,
            warmup: args.warmup,
            handshake_timeout,
        };
        let reports = measure_hosts(&plan, |_| {}).context("the measurement failed")?;
        super::print(&HostStartupReport::table(&reports))?;
        if let Some(file) = report {
            file.write(&reports)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let plan = StartupPlan {
        handshake_timeout,
        workers,
        rounds: args.rounds,
        warmup: args.warmup,
        command,
        floor,
        spawn_threads,
        methods,
        transport: args.transport.into(),
    };
    let mut reports = measure(&plan, |_, _| {}).context("the measurement failed")?;
    if args.vs_python {
        match find_python(1) {
            Some(python) => compare_with_python(&python, &plan, &mut reports)?,
            None => {
                super::say("fibpool: python3 not found: measuring without the Python comparison")
            }
        }
    }
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            super::print("\n")?;
        }
        super::print(&r.table())?;
    }
    if reports.len() > 1 {
        super::print(&format!("\n{}\n", growth_table(&reports)))?;
    }
    if let Some(file) = &plot_file {
        file.draw(|path| startup_waterfall_svg(&reports, path))?;
    }
    if let Some(file) = report {
        match reports.as_slice() {
            [one] => file.write(one)?,
            many => file.write(&many)?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// bench/python_startup.py, which times Python's round as `round` times ours.
const PYTHON_STARTUP: &str = include_str!("../../../bench/python_startup.py");

/// One of its rows (its JSON has more fields).
#[derive(serde::Deserialize)]
struct PythonRound {
    start_method: String,
    min_seconds: f64,
    median_seconds: f64,
    p90_seconds: f64,
    max_seconds: f64,
}

/// Times Python's rounds for every pool size of the plan (as many rounds
/// after as many warm-up ones) and sets each report's `python_round` to
/// the one with its start method.
fn compare_with_python(
    python: &PythonPeer,
    plan: &StartupPlan,
    reports: &mut [StartupReport],
) -> Result<()> {
    let (scratch, _remove_on_signal) = super::scratch("fibpool-startup-")?;
    let script = scratch.path().join("python_startup.py");
    std::fs::write(&script, PYTHON_STARTUP).context("cannot write the Python script")?;
    let json = scratch.path().join("python.json");
    let version = format!("Python {}", python.version);
    for &n in &plan.workers {
        let args = [
            "--workers".to_owned(),
            n.to_string(),
            "--rounds".to_owned(),
            plan.rounds.to_string(),
            "--warmup".to_owned(),
            plan.warmup.to_string(),
        ];
        let rounds: Vec<PythonRound> =
            super::python_json(python, "python_startup.py", &script, &args, &json)?;
        for report in reports.iter_mut().filter(|r| r.workers == n) {
            let theirs = rounds
                .iter()
                .find(|r| r.start_method == report.start_method);
            report.python_round = theirs.map(|r| Summary {
                min_seconds: r.min_seconds,
                median_seconds: r.median_seconds,
                p90_seconds: r.p90_seconds,
                max_seconds: r.max_seconds,
            });
            report.python = Some(version.clone());
        }
    }
    Ok(())
}

/// How `pool_ready` grows with the pool size, from one thread and from several.
fn growth_table(reports: &[fibpool_coordinator::report::StartupReport]) -> String {
    use fibpool_coordinator::report::seconds;
    let mut out = format!(
        "pool_ready medians  {:>10} {:>8} {:>12} {:>12} {:>12}\n",
        "method", "workers", "one thread", "threads", "per worker"
    );
    for r in reports {
        let one = r.pool_ready.map_or(f64::NAN, |s| s.median_seconds);
        let parallel = r.pool_ready_parallel.map_or(f64::NAN, |s| s.median_seconds);
        out += &format!(
            "                    {:>10} {:>8} {:>12} {:>12} {:>12}\n",
            r.start_method,
            r.workers,
            seconds(one),
            if r.workers > 1 && r.spawn_threads > 1 {
                format!("{} ({})", seconds(parallel), r.spawn_threads)
            } else {
                "-".into()
            },
            seconds(one / r.workers as f64)
        );
    }
    out
}

/// `fibpool-floor`, installed beside this program.
fn floor_program() -> Result<std::ffi::OsString> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    let floor = exe.with_file_name("fibpool-floor");
    if !floor.is_file() {
        anyhow::bail!(
            "cannot find the floor program {} (it is built and installed with fibpool)",
            floor.display()
        );
    }
    Ok(floor.into_os_string())
}
