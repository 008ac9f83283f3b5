//! The `fibpool` command line: clap definitions, then a validation step per
//! subcommand that turns raw arguments into a checked configuration, so the
//! rest never re-checks input. Bad usage exits 2 with one line; runtime
//! failures exit 1 with the whole error chain on one line.

mod bench;
mod lines;
mod progress;
mod run;
mod stall;
mod startup;
mod stress;

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use fibpool_coordinator::pool::registry;
use fibpool_coordinator::{Host, Ssh, WorkerCommand};

/// The most workers a pool may have.
pub use fibpool_coordinator::pool::MAX_WORKERS;

/// Bad usage or bad input: one line on stderr and exit status 2, always
/// before any worker is spawned.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Returns early with a [`UsageError`].
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::cli::UsageError(format!($($arg)*))))
    };
}
pub(crate) use usage;

/// A Rust multi-process worker pool computing Fibonacci numbers, and a tool to
/// measure what a process pool costs.
#[derive(Debug, Parser)]
#[command(name = "fibpool", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compute F(n) for a batch of indices on a pool of worker processes.
    Run(run::RunArgs),
    /// Measure what starting a worker process costs, phase by phase.
    Startup(startup::StartupArgs),
    /// Stress the IPC: latency, throughput and integrity, over pipes and local sockets.
    Stress(stress::StressArgs),
    /// Measure speedup against workers, with Amdahl's law, against Python too.
    Bench(bench::BenchArgs),
    /// Serve the worker protocol on stdin/stdout (the pool starts workers this way).
    #[command(hide = true)]
    Worker,
}

/// The `fibpool` binary. `main_entered_ns` is the CLOCK_MONOTONIC stamp taken
/// first thing in `main`, reported by a worker in its handshake.
pub fn main(main_entered_ns: u64) -> ExitCode {
    // Workers take this path before clap builds its parser: it is their
    // start-up cost. With anything after `worker` (`--help`), clap answers.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|arg| arg == "worker") && args.next().is_none() {
        return fibpool_worker::run_stdio("fibpool worker", main_entered_ns);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    // The fork start method forks its server now, while this process has
    // one thread: the signal thread is the first to start.
    let forks = match &cli.command {
        Command::Run(args) => args.forks(),
        Command::Startup(args) => args.forks(),
        Command::Stress(args) => args.forks(),
        Command::Bench(args) => args.forks(),
        _ => false,
    };
    if forks && let Err(e) = fibpool_coordinator::prepare_fork() {
        say(&format!("fibpool: error: cannot start the pool: {e}"));
        return ExitCode::FAILURE;
    }
    if let Err(e) = stop_on_signals() {
        eprintln!("fibpool: error: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Startup(args) => startup::startup(args),
        Command::Stress(args) => stress::stress(args),
        Command::Bench(args) => bench::bench(args),
        Command::Worker => return fibpool_worker::run_stdio("fibpool worker", main_entered_ns),
    };
    // The fork method's server ends and is reaped here, on every way out
    // but a signal's (whose handler reaps it): left to die with this
    // process, it would be a zombie of whatever reaps for the session.
    fibpool_coordinator::release_fork();
    match result {
        Ok(code) => code,
        // A signal is stopping everything: its handler thread exits the process.
        Err(_) if registry::stopping() => registry::wait_for_exit(),
        Err(e) => {
            say(&format!("fibpool: error: {e:#}"));
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// SIGINT, SIGTERM or SIGHUP: kill and reap every worker, whatever the main thread is
/// doing, and exit with 128 + the signal number (130, 143). The same thread
/// keeps the stall rule's time ([`stall`]), so a run starts no thread of
/// its own for it: each signal writes a byte to a socket of its own, and the
/// thread polls them with the stall rule's next look as its timeout.
fn stop_on_signals() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    // A terminal's hangup stops a run as SIGTERM does: its report is
    // written, its temporary files removed; unless it was ignored when
    // this process started (nohup), as it stays then.
    const STOPPING: [(i32, &str); 3] =
        [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM"), (SIGHUP, "SIGHUP")];
    let mut readers = Vec::new();
    for (signal, name) in STOPPING {
        if signal == SIGHUP && ignored(signal) {
            continue;
        }
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(signal, write)?;
        readers.push((signal, name, read));
    }
    let (wake_read, wake_write) = UnixStream::pair()?;
    wake_read.set_nonblocking(true)?;
    wake_write.set_nonblocking(true)?;
    stall::set_waker(wake_write);
    std::thread::Builder::new()
        .name("fibpool-signals".into())
        .spawn(move || {
            loop {
                let timeout = stall::next_look()
                    .map_or(-1, |d| d.as_millis().clamp(1, i32::MAX as u128) as i32);
                let mut fds: Vec<libc::pollfd> = readers
                    .iter()
                    .map(|(_, _, read)| read)
                    .chain([&wake_read])
                    .map(|s| libc::pollfd {
                        fd: s.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                // SAFETY: valid pollfds, as many as given; an error (EINTR)
                // loops.
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
                for (fd, &(signal, name, _)) in fds.iter().zip(&readers) {
                    if fd.revents != 0 {
                        stop(signal, name);
                    }
                }
                if fds[readers.len()].revents != 0 {
                    let mut drain = [0u8; 64];
                    while matches!((&wake_read).read(&mut drain), Ok(n) if n > 0) {}
                }
                stall::look();
            }
        })?;
    Ok(())
}

/// Whether `signal` is ignored (SIG_IGN), as a parent may leave it.
fn ignored(signal: i32) -> bool {
    // SAFETY: a zeroed sigaction is a valid one for sigaction to fill; a
    // null new action only reads the current one.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

fn stop(signal: i32, name: &str) -> ! {
    let stopped = registry::stop_all();
    run_signal_actions(name);
    say(&format!(
        "fibpool: stopped by {name}; {} killed and reaped",
        count(stopped as u64, "worker process", "worker processes")
    ));
    std::process::exit(128 + signal);
}

/// What the signal thread does, once the workers are stopped and before it
/// exits the process: write what a report can say, remove temporary files.
type SignalAction = Box<dyn FnOnce(&str) + Send>;

static SIGNAL_ACTIONS: Mutex<Vec<(u64, SignalAction)>> = Mutex::new(Vec::new());
static NEXT_SIGNAL_ACTION: AtomicU64 = AtomicU64::new(0);

/// A registered [`on_signal`] action; dropping it (the normal way out)
/// unregisters the action without running it.
pub(crate) struct OnSignal(u64);

/// Runs `action` with the signal's name if SIGINT, SIGTERM or SIGHUP ends the
/// process while the returned guard lives.
pub(crate) fn on_signal(action: impl FnOnce(&str) + Send + 'static) -> OnSignal {
    let id = NEXT_SIGNAL_ACTION.fetch_add(1, Ordering::Relaxed);
    signal_actions().push((id, Box::new(action)));
    OnSignal(id)
}

impl Drop for OnSignal {
    fn drop(&mut self) {
        signal_actions().retain(|(id, _)| *id != self.0);
    }
}

fn signal_actions() -> std::sync::MutexGuard<'static, Vec<(u64, SignalAction)>> {
    SIGNAL_ACTIONS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

fn run_signal_actions(signal: &str) {
    let actions = std::mem::take(&mut *signal_actions());
    for (_, action) in actions {
        action(signal);
    }
}

/// `n` and the noun, singular for 1.
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The process's stdout, unbuffered and unlocked: writes go straight to
/// descriptor 1. A descriptor someone set non-blocking (a shared pipe) is
/// waited on with poll(2) when full, instead of failing with EAGAIN.
pub(crate) struct Stdout;

impl Stdout {
    /// Runs a write call until it is done, waiting for the descriptor while
    /// it would block.
    fn retry(mut call: impl FnMut() -> isize) -> std::io::Result<usize> {
        loop {
            let n = call();
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => {}
                std::io::ErrorKind::WouldBlock => {
                    let mut fd = libc::pollfd {
                        fd: 1,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd. An error (EINTR) retries.
                    unsafe { libc::poll(&mut fd, 1, -1) };
                }
                _ => return Err(e),
            }
        }
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: writes from a valid buffer of `buf.len()` bytes.
        Stdout::retry(|| unsafe { libc::write(1, buf.as_ptr().cast(), buf.len()) })
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let count = bufs.len().min(IOV_MAX) as libc::c_int;
        // SAFETY: an IoSlice is an iovec on Unix (std documents the ABI),
        // and `count` of them are valid.
        Stdout::retry(|| unsafe { libc::writev(1, bufs.as_ptr().cast(), count) })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The most buffers one writev(2) takes on Linux.
pub(crate) const IOV_MAX: usize = 1024;

/// Writes `text` to stdout; an error, not a panic, if it cannot be written.
pub(crate) fn print(text: &str) -> Result<()> {
    Stdout
        .write_all(text.as_bytes())
        .context("cannot write to stdout")
}

/// One line on stderr, in one write, so that a worker's line on the same
/// stderr cannot tear it (`eprintln!` writes in pieces).
pub(crate) fn say(line: &str) {
    let mut line = line.to_owned();
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Help and version print as clap renders them; a usage error becomes one line.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            match e.print().and_then(|()| std::io::stdout().flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    say(&format!("fibpool: error: cannot write to stdout: {err}"));
                    ExitCode::FAILURE
                }
            }
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid usage");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            say(&format!("fibpool: error: {first} (see 'fibpool help')"));
            ExitCode::from(2)
        }
    }
}

/// A whole number written as index tokens are: ASCII digits only (clap's
/// own parser takes `+5`, which INDICES refuse).
fn whole<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a whole number, digits only".to_owned());
    }
    text.parse()
        .map_err(|_| "the number is too large".to_owned())
}

/// A duration flag's value in seconds, more than 0 (and not rounding to
/// 0 ns) and at most `max`; an error names the flag and echoes the text as
/// given, not as a float prints (`1e300` stays `'1e300'`).
fn seconds(flag: &str, text: &str, max: f64) -> Result<std::time::Duration> {
    // Written as index tokens are: no sign, no space (f64's parser takes
    // both).
    let unsigned = text.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    match text.parse::<f64>().ok().filter(|_| unsigned) {
        Some(s) if s > 0.0 && s <= max && !std::time::Duration::from_secs_f64(s).is_zero() => {
            Ok(std::time::Duration::from_secs_f64(s))
        }
        _ => usage!(
            "{flag} must be more than 0 and at most {max} seconds, got {}",
            fibpool_coordinator::input::quoted(text)
        ),
    }
}

/// A path for a message, quoted as index tokens are.
fn quoted_path(path: &std::path::Path) -> String {
    fibpool_coordinator::input::quoted(&path.to_string_lossy())
}

/// `--handshake-timeout`, on every subcommand.
#[derive(Debug, clap::Args)]
struct HandshakeArg {
    /// Give up on a worker that has not completed its handshake this many seconds after its start
    #[arg(long, value_name = "SECONDS", default_value = "30")]
    handshake_timeout: String,
}

/// `--hosts`, `--hosts-file`, `--ssh` and `--remote-cmd`: where workers run.
#[derive(Debug, clap::Args)]
struct HostsArg {
    /// Run the workers on these hosts, comma-separated [N/][user@]host[:port] (GNU parallel's -S; ':' is this machine; N workers there [default: --workers, else its core count])
    #[arg(long, value_name = "SPEC")]
    hosts: Option<String>,

    /// Read hosts from FILE, one or more per line, '#' comments
    #[arg(long, value_name = "FILE")]
    hosts_file: Option<PathBuf>,

    /// The ssh command and options that reach a host
    #[arg(long, value_name = "CMD", default_value = "ssh")]
    ssh: String,

    /// The worker command a remote host runs (through its shell)
    #[arg(long, value_name = "CMD", default_value = "fibpool worker")]
    remote_cmd: String,
}

impl HostsArg {
    /// Whether a host named is another machine (not `:`).
    fn remote(hosts: &[Host]) -> bool {
        hosts.iter().any(|h| h.login.is_some())
    }

    /// These options as given, for a `fibpool run` of ours to take too.
    fn forwarded(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(spec) = &self.hosts {
            args.extend(["--hosts".to_owned(), spec.clone()]);
        }
        if let Some(path) = &self.hosts_file {
            args.extend(["--hosts-file".to_owned(), path.display().to_string()]);
        }
        if !args.is_empty() {
            args.extend(["--ssh".to_owned(), self.ssh.clone()]);
            args.extend(["--remote-cmd".to_owned(), self.remote_cmd.clone()]);
        }
        args
    }

    /// The hosts named (none: every worker on this machine) and how ssh
    /// reaches them, checked.
    fn hosts(&self) -> Result<(Vec<Host>, Ssh)> {
        let mut hosts = Vec::new();
        if let Some(spec) = &self.hosts {
            match Host::parse_list(spec) {
                Ok(more) => hosts.extend(more),
                Err(e) => usage!("--hosts: {e}"),
            }
        }
        if let Some(path) = &self.hosts_file {
            let text = match read_bounded(path, MAX_HOSTS_FILE_BYTES) {
                Ok(Some(text)) => text,
                Ok(None) => usage!(
                    "--hosts-file {} is longer than {} KiB, more than {MAX_WORKERS} hosts take",
                    quoted_path(path),
                    MAX_HOSTS_FILE_BYTES >> 10
                ),
                Err(e) => usage!("cannot read --hosts-file {}: {e}", quoted_path(path)),
            };
            match Host::parse_file(&text) {
                Ok(more) if more.is_empty() => {
                    usage!("--hosts-file {} names no host", quoted_path(path))
                }
                Ok(more) => hosts.extend(more),
                Err(e) => usage!("--hosts-file {} {e}", quoted_path(path)),
            }
        }
        if hosts.len() > MAX_WORKERS {
            usage!(
                "{} hosts given: a pool has at most {MAX_WORKERS} workers",
                hosts.len()
            );
        }
        // Each host gives at least one worker, or the count it names.
        let at_least = hosts
            .iter()
            .map(|h| h.workers.unwrap_or(1))
            .fold(0, usize::saturating_add);
        if at_least > MAX_WORKERS {
            usage!("the hosts give {at_least} workers, more than a pool has ({MAX_WORKERS})");
        }
        let command = match WorkerCommand::parse(&self.ssh) {
            Ok(command) => command,
            Err(e) => usage!("--ssh: {e}"),
        };
        let ssh = Ssh {
            command,
            remote_command: self.remote_cmd.clone(),
        };
        if let Err(e) = ssh.remote_program() {
            usage!("--remote-cmd: {e}");
        }
        Ok((hosts, ssh))
    }
}

/// The longest `--handshake-timeout` accepted: a day.
const MAX_HANDSHAKE_SECONDS: f64 = 86_400.0;

impl HandshakeArg {
    fn timeout(&self) -> Result<std::time::Duration> {
        seconds(
            "--handshake-timeout",
            &self.handshake_timeout,
            MAX_HANDSHAKE_SECONDS,
        )
    }
}

/// A private scratch directory (0700, a random name, made with O_EXCL:
/// nothing another user placed in /tmp is written through or run), removed
/// on every way out, a signal included, while the guard lives.
fn scratch(prefix: &str) -> Result<(tempfile::TempDir, OnSignal)> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .context("cannot make a scratch directory")?;
    let path = dir.path().to_owned();
    let guard = on_signal(move |_| {
        // The command may still be writing a file there: a removal that
        // lists the directory before that file appears fails to remove the
        // directory. Once the directory is gone nothing can be written
        // there, so a few more tries see it through.
        for _ in 0..100 {
            if std::fs::remove_dir_all(&path).is_ok() || !path.exists() {
                break;
            }
        }
    });
    Ok((dir, guard))
}

/// The items in their first order, each once.
pub(crate) fn dedup<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// `--start-method fork` runs this program's own worker code, forked: a
/// worker command has nothing to run.
fn check_fork_command(forks: bool, worker_cmd: bool) -> Result<()> {
    if forks && worker_cmd {
        usage!("--start-method fork forks this program's own worker: it takes no --worker-cmd");
    }
    Ok(())
}

/// Runs bench/`name` (written at `script`) with `args` and `--json json`,
/// and parses what it wrote there. A failure is one line: its status and
/// the last line of its stderr.
fn python_json<T: serde::de::DeserializeOwned>(
    python: &fibpool_coordinator::measure::bench::PythonPeer,
    name: &str,
    script: &std::path::Path,
    args: &[String],
    json: &std::path::Path,
) -> Result<T> {
    let mut peer = std::process::Command::new(&python.interpreter);
    peer.arg(script)
        .args(args)
        .arg("--json")
        .arg(json)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // Its own group, stopped with this process by a signal.
    let out = registry::output_of_helper(peer, true)
        .with_context(|| format!("cannot run {}", python.interpreter.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!(
            "bench/{name} failed ({}): {}",
            out.status,
            stderr.lines().last().unwrap_or("")
        );
    }
    serde_json::from_slice(&std::fs::read(json).context("cannot read the Python script's results")?)
        .context("the Python script's results do not parse")
}

/// What each transport reaches: a local socket no remote worker, TCP only
/// spawned workers here.
fn check_transports(
    hosts: &[Host],
    transports: &[run::TransportArg],
    method: run::StartMethodArg,
) -> Result<()> {
    if HostsArg::remote(hosts) && transports.contains(&run::TransportArg::Socket) {
        usage!(
            "--transport socket is for this machine's workers: a remote worker talks over ssh's pipes or tcp"
        );
    }
    if HostsArg::remote(hosts) && transports.contains(&run::TransportArg::Shm) {
        usage!(
            "--transport shm is for this machine's workers: a remote worker talks over ssh's pipes or tcp"
        );
    }
    let local = hosts.is_empty() || hosts.iter().any(|h| h.login.is_none());
    if local && transports.contains(&run::TransportArg::Tcp) && method != run::StartMethodArg::Spawn
    {
        usage!("--transport tcp reaches spawned workers only: it takes --start-method spawn");
    }
    Ok(())
}

fn check_workers(workers: usize) -> Result<usize> {
    if !(1..=MAX_WORKERS).contains(&workers) {
        usage!("--workers must be between 1 and {MAX_WORKERS}, got {workers}");
    }
    Ok(workers)
}

/// `--worker-cmd`, or this program's hidden `worker` subcommand.
fn worker_command(line: Option<&str>) -> Result<WorkerCommand> {
    match line {
        Some(line) => match WorkerCommand::parse(line) {
            Ok(command) => Ok(command),
            Err(e) => usage!("--worker-cmd: {e}"),
        },
        None => WorkerCommand::this_program_with("worker")
            .context("cannot find this program to start workers"),
    }
}

/// A `--report` file. A temporary file beside it is created before any work
/// starts, so that a bad path is a usage error rather than a lost run; the
/// report is written there and renamed over the path, so the file holds
/// either what it held before or a whole report, never a truncated one.
/// SIGINT, SIGTERM or SIGHUP removes the temporary file, or writes the report the
/// command left with [`ReportFile::on_signal`].
pub(crate) struct ReportFile {
    inner: Arc<PendingReport>,
    _on_signal: OnSignal,
}

struct PendingReport {
    path: PathBuf,
    /// `None` once written (or given up on a signal).
    temp: Mutex<Option<TempFile>>,
}

/// A new file beside the report, removed unless renamed into place; or,
/// for a report path that is a device or a FIFO (`/dev/stdout`), that file
/// itself, written in place (`path` is `None`).
struct TempFile {
    file: std::fs::File,
    path: Option<PathBuf>,
}

impl TempFile {
    /// Where a report at `target` goes, and the path it ends at: a symlink
    /// is followed (its target is replaced, not the link, and may not exist
    /// yet), a regular file's mode is kept, and anything else that exists
    /// is written in place (a FIFO only if something reads it). A path to
    /// this process's own stdout or stderr (`/dev/stdout`) is written
    /// through that descriptor, after what it holds.
    fn for_report(target: &Path) -> std::io::Result<(TempFile, PathBuf)> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
        if let Ok(m) = std::fs::metadata(target) {
            for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
                // SAFETY: fds 1 and 2 stay open for the whole run (std
                // opens /dev/null on either when it starts closed).
                let ours = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                let Ok(file) = ours.try_clone_to_owned().map(std::fs::File::from) else {
                    continue;
                };
                // SAFETY: fcntl on a descriptor we own.
                let mode = unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_ACCMODE;
                let writable = mode == libc::O_WRONLY || mode == libc::O_RDWR;
                if writable
                    && file
                        .metadata()
                        .is_ok_and(|o| (o.dev(), o.ino()) == (m.dev(), m.ino()))
                {
                    return Ok((TempFile { file, path: None }, target.to_owned()));
                }
            }
        }
        let target = resolve_links(target)?;
        match std::fs::metadata(&target) {
            Ok(m) if m.is_dir() => Err(std::io::Error::from(std::io::ErrorKind::IsADirectory)),
            Ok(m) if !m.is_file() => {
                // Not blocking on a FIFO that nothing reads (ENXIO then).
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&target)
                    .map_err(|e| match e.raw_os_error() {
                        Some(libc::ENXIO) if m.file_type().is_fifo() => {
                            std::io::Error::other("it is a FIFO that nothing reads")
                        }
                        _ => e,
                    })?;
                set_blocking(&file)?;
                Ok((TempFile { file, path: None }, target))
            }
            Ok(m) => {
                let temp = TempFile::beside(&target)?;
                temp.file.set_permissions(m.permissions())?;
                Ok((temp, target))
            }
            Err(_) => Ok((TempFile::beside(&target)?, target)),
        }
    }

    /// Creates `.NAME.PID-K.tmp` beside `target`, never opening a file that
    /// exists (O_EXCL), with the mode a new file gets (0666 less the umask).
    fn beside(target: &Path) -> std::io::Result<TempFile> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        loop {
            let k = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".{name}.{}-{k}.tmp", std::process::id()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TempFile {
                        file,
                        path: Some(path),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && k < 1000 => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn persist(mut self, target: &Path) -> std::io::Result<()> {
        if let Some(path) = self.path.take() {
            std::fs::rename(&path, target).inspect_err(|_| {
                let _ = std::fs::remove_file(&path);
            })?;
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes all of `bytes` to `file`, waiting for room when it is
/// non-blocking (a stdout shared with a parent that set O_NONBLOCK).
fn write_waiting(mut file: &std::fs::File, mut bytes: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    while !bytes.is_empty() {
        match file.write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut fd = libc::pollfd {
                    fd: file.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; an error (EINTR) loops.
                unsafe { libc::poll(&mut fd, 1, -1) };
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `path` with its symlinks followed, as far as they lead: the last may
/// name a file that does not exist yet.
fn resolve_links(path: &Path) -> std::io::Result<PathBuf> {
    let mut path = path.to_owned();
    // As the kernel's limit (ELOOP).
    for _ in 0..40 {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&path)?;
                path = match path.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            _ => return Ok(path),
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::ELOOP))
}

fn set_blocking(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0
        || unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn create_report(path: Option<PathBuf>) -> Result<Option<ReportFile>> {
    create_output(path, "--report")
}

/// A `--plot` file, checked up front and made as a report is: drawn into a
/// file beside it and renamed into place, so it holds either what it held
/// before or a whole plot.
pub(crate) fn create_plot(path: Option<PathBuf>) -> Result<Option<ReportFile>> {
    let plot = create_output(path, "--plot")?;
    if let Some(plot) = &plot {
        let in_place = plot
            .inner
            .temp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|t| t.path.is_none());
        // Drawn into a scratch file first: where it goes is checked now.
        if in_place {
            if let Err(e) = scratch_plot() {
                usage!(
                    "cannot draw --plot {}: {e:#}",
                    quoted_path(&plot.inner.path)
                );
            }
        }
    }
    Ok(plot)
}

/// A scratch file for a plot written in place, in TMPDIR.
fn scratch_plot() -> Result<TempFile> {
    let dir = std::env::temp_dir();
    TempFile::beside(&dir.join("fibpool-plot.svg")).with_context(|| {
        format!(
            "cannot make a scratch file in {} (TMPDIR)",
            quoted_path(&dir)
        )
    })
}

/// The `--report` and `--plot` files of a command, which may not be the
/// same file (one would replace the other).
pub(crate) fn create_report_and_plot(
    report: Option<PathBuf>,
    plot: Option<PathBuf>,
) -> Result<(Option<ReportFile>, Option<ReportFile>)> {
    let report = create_report(report)?;
    let plot = create_plot(plot)?;
    if let (Some(r), Some(p)) = (&report, &plot) {
        if r.inner.path == p.inner.path {
            usage!(
                "--report and --plot name the same file, {}: give each its own",
                quoted_path(&r.inner.path)
            );
        }
    }
    Ok((report, plot))
}

fn create_output(path: Option<PathBuf>, flag: &str) -> Result<Option<ReportFile>> {
    let Some(path) = path else { return Ok(None) };
    if path.is_dir() || path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        usage!(
            "cannot create {flag} file {}: it is a directory",
            quoted_path(&path)
        );
    }
    let (temp, path) = match TempFile::for_report(&path) {
        Ok(opened) => opened,
        Err(e) => usage!("cannot create {flag} file {}: {e}", quoted_path(&path)),
    };
    let inner = Arc::new(PendingReport {
        path,
        temp: Mutex::new(Some(temp)),
    });
    let on_signal = {
        let inner = inner.clone();
        crate::cli::on_signal(move |_| drop(inner.take()))
    };
    Ok(Some(ReportFile {
        inner,
        _on_signal: on_signal,
    }))
}

impl PendingReport {
    fn take(&self) -> Option<TempFile> {
        self.temp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Writes `report` and renames it into place. Holds the lock
    /// throughout, so the signal thread's report and this one never mix;
    /// once one is written, the other finds nothing to write.
    fn write(&self, report: &impl serde::Serialize) -> Result<()> {
        let mut guard = self.temp.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(temp) = guard.take() else {
            return Ok(());
        };
        let written = serde_json::to_vec_pretty(report)
            .map_err(std::io::Error::from)
            .and_then(|mut json| {
                json.push(b'\n');
                write_waiting(&temp.file, &json)
            });
        written
            .and_then(|()| temp.persist(&self.path))
            .with_context(|| format!("cannot write the report to {}", quoted_path(&self.path)))
    }
}

impl ReportFile {
    pub(crate) fn write(&self, report: &impl serde::Serialize) -> Result<()> {
        self.inner.write(report)
    }

    /// Draws a plot with `draw`, which writes the file at the path it is
    /// given, and puts it into place.
    pub(crate) fn draw(&self, draw: impl FnOnce(&Path) -> Result<(), String>) -> Result<()> {
        let mut guard = self
            .inner
            .temp
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(temp) = guard.take() else {
            return Ok(());
        };
        let drawn = match &temp.path {
            Some(at) => draw(at).map_err(anyhow::Error::msg),
            // Written in place (this process's stdout, a FIFO): drawn into a
            // scratch file first, then written through the descriptor, after
            // what it holds, never reopened (which would truncate it).
            None => {
                let scratch = scratch_plot()?;
                let at = scratch.path.clone().expect("a scratch file has a path");
                draw(&at)
                    .map_err(anyhow::Error::msg)
                    .and_then(|()| Ok(std::fs::read(&at)?))
                    .and_then(|svg| Ok(write_waiting(&temp.file, &svg)?))
            }
        };
        drawn
            .and_then(|()| Ok(temp.persist(&self.inner.path)?))
            .with_context(|| format!("cannot draw the plot to {}", quoted_path(&self.inner.path)))
    }

    /// On SIGINT, SIGTERM or SIGHUP, writes the report `make` gives for the
    /// signal's name (instead of only removing the temporary file).
    pub(crate) fn on_signal<R: serde::Serialize>(
        &mut self,
        make: impl FnOnce(&str) -> R + Send + 'static,
    ) {
        let inner = self.inner.clone();
        self._on_signal = crate::cli::on_signal(move |signal| {
            if let Err(e) = inner.write(&make(signal)) {
                say(&format!("fibpool: error: {e:#}"));
            }
        });
    }
}

/// The most a --hosts file may hold: 1024 hosts of up to 255 characters
/// and their counts, with room to spare.
const MAX_HOSTS_FILE_BYTES: u64 = 1 << 20;

/// A text file of at most `limit` bytes; `None` when it holds more (read
/// no further than that, so /dev/zero ends too).
fn read_bounded(path: &std::path::Path, limit: u64) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Ok(None);
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}
