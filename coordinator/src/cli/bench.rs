//! `fibpool bench`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::progress::Progress;
use super::run::read_tasks;
use super::{check_workers, usage, worker_command};
use fibpool_coordinator::default_workers;
use fibpool_coordinator::input::DEFAULT_MAX_INDEX;
use fibpool_coordinator::measure::bench::{
    BenchPlan, PRESETS, Workload, find_gmpy2, find_python, measure, preset, steps,
};
use fibpool_coordinator::report::plot;

/// The most repeats accepted.
const MAX_REPEAT: usize = 1000;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Presets to run, comma-separated, or `all` [default: all, unless INDICES are given]
    #[arg(
        long,
        value_name = "NAME[,NAME...]",
        value_delimiter = ',',
        conflicts_with = "indices"
    )]
    preset: Vec<String>,

    /// Worker counts to measure, comma-separated [default: 1, 2, 4, ... up to the cores]
    #[arg(short, long, value_name = "N[,N...]", value_delimiter = ',', value_parser = super::whole::<usize>)]
    workers: Vec<usize>,

    /// Refuse INDICES above N (at most 20000000000), as `fibpool run` does;
    /// its whole-process runs are given the same
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_INDEX, value_parser = super::whole::<u64>)]
    max_index: u64,

    /// Runs of every measurement; the median is reported, with min and max
    #[arg(long, value_name = "R", default_value_t = 3, value_parser = super::whole::<usize>)]
    repeat: usize,

    /// Also time the Python peer (bench/python_peer.py) against a whole `fibpool run`
    #[arg(long)]
    vs_python: bool,

    /// Also time the gmpy2 peer (bench/gmpy2_peer.py: GMP's Fibonacci on a
    /// ProcessPoolExecutor) against a whole `fibpool run --output hex`, after
    /// checking that both write the same bytes
    #[arg(long)]
    vs_gmpy2: bool,

    /// Runs of the Python and gmpy2 comparisons [default: as --repeat]
    #[arg(long, value_name = "R", value_parser = super::whole::<usize>)]
    python_repeat: Option<usize>,

    /// Write the report as JSON to FILE
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    /// Draw speedup against workers, with the ideal line and the Amdahl curve, to FILE (SVG)
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,

    /// Start workers with this command instead of `fibpool worker`
    #[arg(long, value_name = "CMD")]
    worker_cmd: Option<String>,

    #[command(flatten)]
    start_methods: super::run::StartMethodsArg,

    /// How the pools' frames travel, and those of `fibpool run` against the peers
    #[arg(long, value_enum, default_value_t = super::run::TransportArg::Pipe)]
    transport: super::run::TransportArg,

    #[command(flatten)]
    handshake: super::HandshakeArg,

    /// With --hosts: the pools run there, each -w N being the workers per host (the ceiling is still measured here)
    #[command(flatten)]
    hosts: super::HostsArg,

    /// Indices to benchmark instead of presets (as for `fibpool run`)
    #[arg(value_name = "INDICES", allow_negative_numbers = true)]
    indices: Vec<String>,
}

impl BenchArgs {
    /// Whether it forks: see [`super::run::RunArgs::forks`].
    pub(crate) fn forks(&self) -> bool {
        self.start_methods.forks() && self.worker_cmd.is_none()
    }
}

pub fn bench(args: BenchArgs) -> Result<ExitCode> {
    if args.max_index > fibpool_protocol::MAX_INDEX {
        usage!(
            "--max-index {} is above the largest index a worker computes ({})",
            args.max_index,
            fibpool_protocol::MAX_INDEX
        );
    }
    let workloads = workloads(&args)?;
    let workers = if args.workers.is_empty() {
        default_worker_counts()
    } else {
        super::dedup(args.workers.iter().copied())
    };
    for &n in &workers {
        check_workers(n)?;
    }
    for (flag, value) in [
        ("--repeat", Some(args.repeat)),
        ("--python-repeat", args.python_repeat),
    ] {
        if let Some(r) = value
            && !(1..=MAX_REPEAT).contains(&r)
        {
            usage!("{flag} must be between 1 and {MAX_REPEAT}, got {r}");
        }
    }
    super::check_fork_command(args.start_methods.forks(), args.worker_cmd.is_some())?;
    let command = worker_command(args.worker_cmd.as_deref())?;
    let (report_file, plot_file) = super::create_report_and_plot(args.report, args.plot)?;
    let python = if args.vs_python {
        let found = find_python(args.python_repeat.unwrap_or(args.repeat));
        if found.is_none() {
            super::say("fibpool: python3 not found: measuring without the Python comparison");
        }
        found
    } else {
        None
    };
    let gmpy2 = if args.vs_gmpy2 {
        match find_gmpy2(args.python_repeat.unwrap_or(args.repeat)) {
            Ok(peer) => Some(peer),
            Err(why) => {
                super::say(&format!(
                    "fibpool: {why}: measuring without the gmpy2 comparison"
                ));
                None
            }
        }
    } else {
        None
    };
    let (scratch, _remove_on_signal) = super::scratch("fibpool-bench-")?;
    let handshake_timeout = args.handshake.timeout()?;
    let (hosts, ssh) = args.hosts.hosts()?;
    for &method in args.start_methods.given() {
        super::check_transports(&hosts, &[args.transport], method)?;
    }
    let transport: fibpool_coordinator::Transport = args.transport.into();
    let mut run_args = args.hosts.forwarded();
    run_args.extend(["--transport".to_owned(), transport.name().to_owned()]);
    run_args.extend(["--max-index".to_owned(), args.max_index.to_string()]);
    let plan = BenchPlan {
        transport,
        hosts,
        ssh,
        run_args,
        handshake_timeout,
        workloads,
        workers,
        repeat: args.repeat,
        command,
        fibpool: std::env::current_exe().context("cannot find this program")?,
        python,
        gmpy2,
        scratch: scratch.path().to_owned(),
        start_methods: args.start_methods.methods(),
    };
    let mut progress = Progress::new(steps(&plan), "bench");
    let report = measure(&plan, || progress.inc(1)).context("the benchmark failed")?;
    progress.finish();
    super::print(&report.table())?;
    if let Some(file) = report_file {
        file.write(&report)?;
    }
    if let Some(file) = &plot_file {
        file.draw(|path| plot::speedup_svg(&report, path))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The presets asked for, or the INDICES as one workload.
fn workloads(args: &BenchArgs) -> Result<Vec<Workload>> {
    if !args.indices.is_empty() {
        let tasks = read_tasks(&args.indices, None, args.max_index)?;
        return Ok(vec![Workload {
            name: "indices".to_owned(),
            description: args.indices.join(" "),
            tasks,
        }]);
    }
    let names: Vec<&str> = if args.preset.is_empty() || args.preset.iter().any(|p| p == "all") {
        PRESETS.iter().map(|p| p.name).collect()
    } else {
        args.preset.iter().map(String::as_str).collect()
    };
    let mut out = Vec::new();
    for name in names {
        let Some(p) = preset(name) else {
            let known: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
            usage!(
                "unknown preset '{name}': use one of {}, or all",
                known.join(", ")
            );
        };
        out.push(Workload {
            name: p.name.to_owned(),
            description: p.description.to_owned(),
            tasks: p.tasks(),
        });
    }
    Ok(out)
}

/// 1, 2, 4, ... up to the number of cores, and the number of cores itself.
fn default_worker_counts() -> Vec<usize> {
    let cores = default_workers();
    let mut counts: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 2))
        .take_while(|&n| n <= cores)
        .collect();
    if counts.last() != Some(&cores) {
        counts.push(cores);
    }
    counts
}
