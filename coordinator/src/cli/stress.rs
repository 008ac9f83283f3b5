//! `fibpool stress`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use super::run::{StartMethodArg, TransportArg};
use super::{check_workers, seconds, usage, worker_command};
use fibpool_coordinator::measure::bench::find_python;
use fibpool_coordinator::measure::stress::{
    Limit, MAX_PAYLOAD, Pattern, StressPlan, measure, memory_needed,
};
use fibpool_coordinator::pool::probe::shared_memory_bytes;
use fibpool_coordinator::report::plot::stress_svg;
use fibpool_coordinator::report::{PythonStress, StressReport, StressResult};
use fibpool_coordinator::{Transport, default_workers};

/// Alternations of framed and raw slices per measurement.
const SLICES: usize = 10;
/// The longest --duration accepted: a day.
const MAX_DURATION_SECONDS: f64 = 86_400.0;

#[derive(Debug, Args)]
pub struct StressArgs {
    /// Workers for the fanout pattern (pingpong and stream use one) [default: one per core]
    #[arg(short, long, value_name = "N", value_parser = super::whole::<usize>)]
    workers: Option<usize>,

    /// Patterns, comma-separated
    #[arg(
        long,
        value_name = "P[,P...]",
        value_delimiter = ',',
        default_value = "pingpong,stream,fanout"
    )]
    pattern: Vec<PatternArg>,

    /// Payload sizes in bytes, comma-separated; K, M and G are binary multiples
    #[arg(
        long,
        value_name = "SIZE[,SIZE...]",
        value_delimiter = ',',
        default_value = "8,1K,64K,1M,16M"
    )]
    sizes: Vec<String>,

    /// Seconds per measurement, for fibpool's framing and again for the raw baseline [default: 0.5]
    #[arg(long, value_name = "S", conflicts_with = "count")]
    duration: Option<String>,

    /// Messages per measurement, for fibpool's framing and again for the raw baseline (fanout: at least one per worker in each of its two phases, rounded up to the workers)
    #[arg(long, value_name = "K", value_parser = super::whole::<u64>)]
    count: Option<u64>,

    /// Transports, comma-separated
    #[arg(
        long,
        value_name = "T[,T...]",
        value_delimiter = ',',
        default_value = "pipe"
    )]
    transport: Vec<TransportArg>,

    /// Start workers with this command instead of `fibpool worker`
    #[arg(long, value_name = "CMD")]
    worker_cmd: Option<String>,

    /// How workers are started
    #[arg(long, value_enum, default_value_t = StartMethodArg::Spawn)]
    start_method: StartMethodArg,

    #[command(flatten)]
    handshake: super::HandshakeArg,

    /// With --hosts: the workers run there, one on each in turn (over ssh's pipes, or tcp)
    #[command(flatten)]
    hosts: super::HostsArg,

    /// Write the report as JSON to FILE
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    /// Draw round trips by percentile (one panel per size, a curve per transport) and throughput to FILE (SVG)
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,

    /// Also measure pingpong and stream over Python's multiprocessing.Pipe and Queue (bench/python_stress.py), with the same sizes and limit, where python3 is present
    #[arg(long)]
    vs_python: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PatternArg {
    /// One frame in flight, echoed: round-trip latency
    Pingpong,
    /// A window of frames in flight, acknowledged: throughput with backpressure
    Stream,
    /// Every worker at once, pinged then streamed: contention
    Fanout,
}

impl StressArgs {
    /// Whether it forks: see [`super::run::RunArgs::forks`].
    pub(crate) fn forks(&self) -> bool {
        self.start_method == StartMethodArg::Fork && self.worker_cmd.is_none()
    }
}

pub fn stress(args: StressArgs) -> Result<ExitCode> {
    let workers = check_workers(args.workers.unwrap_or_else(default_workers))?;
    let mut sizes = Vec::new();
    for text in &args.sizes {
        sizes.push(parse_size(text)?);
    }
    let limit = match (args.duration, args.count) {
        (_, Some(0)) => usage!("--count must be at least 1"),
        (_, Some(count)) => Limit::Count(count),
        (Some(text), None) => Limit::Duration(seconds("--duration", &text, MAX_DURATION_SECONDS)?),
        (None, None) => Limit::Duration(Duration::from_millis(500)),
    };
    super::check_fork_command(
        args.start_method == StartMethodArg::Fork,
        args.worker_cmd.is_some(),
    )?;
    let command = worker_command(args.worker_cmd.as_deref())?;
    let handshake_timeout = args.handshake.timeout()?;
    let patterns = super::dedup(args.pattern.iter().map(|p| match p {
        PatternArg::Pingpong => Pattern::PingPong,
        PatternArg::Stream => Pattern::Stream,
        PatternArg::Fanout => Pattern::Fanout,
    }));
    let needed = memory_needed(workers, &patterns, &sizes);
    if let Some(available) = shared_memory_bytes()
        && needed > available
    {
        let size = sizes.iter().copied().max().unwrap_or(0);
        usage!(
            "{workers} workers echoing payloads of {size} bytes need about {} MiB of memory, and {} MiB is available: use fewer workers or smaller --sizes",
            needed >> 20,
            available >> 20
        );
    }
    let (hosts, ssh) = args.hosts.hosts()?;
    super::check_transports(&hosts, &args.transport, args.start_method)?;
    let (report_file, plot_file) = super::create_report_and_plot(args.report, args.plot)?;
    let plan = StressPlan {
        hosts,
        ssh,
        handshake_timeout,
        workers,
        patterns,
        sizes: super::dedup(sizes.into_iter()),
        transports: super::dedup(args.transport.iter().map(|&t| Transport::from(t))),
        limit,
        command,
        start_method: args.start_method.into(),
        slices: SLICES,
    };
    let results = measure(&plan, |_, _, _| {}).context("the stress test failed")?;
    let python = match args.vs_python {
        true => python_stress(&plan, &results)?,
        false => None,
    };
    let report = StressReport {
        workers,
        worker_command: plan.command.to_string(),
        results,
        python,
    };
    super::print(&report.table())?;
    if let Some(file) = &plot_file {
        file.draw(|path| stress_svg(&report, path))?;
    }
    if let Some(file) = report_file {
        file.write(&report)?;
    }
    let failures: u64 = report.results.iter().map(|r| r.integrity_failures()).sum();
    if failures > 0 {
        let frames = if failures == 1 {
            "1 frame was"
        } else {
            &format!("{failures} frames were")
        };
        anyhow::bail!("{frames} lost, duplicated or corrupted (see the table)");
    }
    Ok(ExitCode::SUCCESS)
}

/// bench/python_stress.py: the pingpong and stream patterns over Python's
/// multiprocessing.Pipe and multiprocessing.Queue.
const PYTHON_STRESS: &str = include_str!("../../../bench/python_stress.py");

/// Runs bench/python_stress.py for the plan's pingpong and stream patterns,
/// sizes and limit, each row compared with fibpool's first transport; `None`
/// (said on stderr) without python3 or without a pattern it has.
fn python_stress(plan: &StressPlan, results: &[StressResult]) -> Result<Option<PythonStress>> {
    let patterns: Vec<&str> = plan
        .patterns
        .iter()
        .filter(|p| matches!(p, Pattern::PingPong | Pattern::Stream))
        .map(|p| p.name())
        .collect();
    if patterns.is_empty() {
        super::say("fibpool: --vs-python measures pingpong and stream, and neither was asked for");
        return Ok(None);
    }
    let Some(python) = find_python(1) else {
        super::say("fibpool: python3 not found: measuring without the Python comparison");
        return Ok(None);
    };
    let (scratch, _remove_on_signal) = super::scratch("fibpool-stress-")?;
    let script = scratch.path().join("python_stress.py");
    std::fs::write(&script, PYTHON_STRESS).context("cannot write the Python script")?;
    let json = scratch.path().join("python.json");
    let sizes: Vec<String> = plan.sizes.iter().map(usize::to_string).collect();
    let limit = match plan.limit {
        Limit::Duration(d) => ["--duration".to_owned(), d.as_secs_f64().to_string()],
        Limit::Count(k) => ["--count".to_owned(), k.to_string()],
    };
    let mut args = vec![
        "--patterns".to_owned(),
        patterns.join(","),
        "--sizes".to_owned(),
        sizes.join(","),
    ];
    args.extend(limit);
    let mut measured: PythonStress =
        super::python_json(&python, "python_stress.py", &script, &args, &json)?;
    if let Some(first) = plan.transports.first() {
        measured.compare(results, first.name());
    }
    Ok(Some(measured))
}

/// "8", "1K", "64k", "1M", "16M", "1G": bytes, with binary multiples.
fn parse_size(text: &str) -> Result<usize> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        _ => usage!("invalid size '{text}': use a number of bytes, optionally with K, M or G"),
    };
    let Ok(n) = digits.parse::<usize>() else {
        usage!("invalid size '{text}': use a number of bytes, optionally with K, M or G");
    };
    let size = n.saturating_mul(1 << shift);
    if size == 0 {
        usage!("invalid size '{text}': a payload must have at least 1 byte");
    }
    if size > MAX_PAYLOAD {
        usage!(
            "size {text} ({size} bytes) is above the largest payload a frame carries ({MAX_PAYLOAD} bytes)"
        );
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8").unwrap(), 8);
        assert_eq!(parse_size("1K").unwrap(), 1024);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("16M").unwrap(), 16 << 20);
        assert_eq!(fibpool_coordinator::report::bytes(16 << 20), "16M");
        let err = |t: &str| parse_size(t).unwrap_err().to_string();
        assert_eq!(
            err("0"),
            "invalid size '0': a payload must have at least 1 byte"
        );
        assert_eq!(
            err("1X"),
            "invalid size '1X': use a number of bytes, optionally with K, M or G"
        );
        assert_eq!(
            err("K"),
            "invalid size 'K': use a number of bytes, optionally with K, M or G"
        );
        assert_eq!(
            err("64M"),
            "size 64M (67108864 bytes) is above the largest payload a frame carries (67108800 bytes)"
        );
        assert_eq!(
            err("99999999999G"),
            format!(
                "size 99999999999G ({} bytes) is above the largest payload a frame carries (67108800 bytes)",
                usize::MAX
            )
        );
    }
}
