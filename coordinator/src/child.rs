//! Starting a worker process on a transport, and the guard that owns it: an
//! `OwnedChild` kills and reaps its process when dropped, so no path leaves
//! one behind.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fibpool_worker::clock::monotonic_ns;
use fibpool_worker::{SOCKET_ENV, SharedStream};
use interprocess::local_socket::{
    GenericNamespaced, Listener, ListenerNonblockingMode, ListenerOptions, prelude::*,
};

use crate::WorkerCommand;
use crate::error::PoolError;

/// How a worker's frames travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Anonymous pipes as the worker's stdin and stdout (the pool's default).
    Pipe,
    /// A Unix local socket (abstract namespace on Linux) the worker connects to,
    /// through the `interprocess` crate.
    Socket,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Pipe => "pipe",
            Transport::Socket => "socket",
        }
    }
}

/// The reading and writing ends of a worker's channel.
pub(crate) type Reader = Box<dyn Read + Send>;
pub(crate) type Writer = Box<dyn Write + Send>;

/// A started worker's process, and the stamps of its spawn.
pub(crate) struct Started {
    pub child: OwnedChild,
    /// When the spawn call began, on the Instant clock and on CLOCK_MONOTONIC.
    pub spawned_at: Instant,
    pub spawned_at_ns: u64,
    /// How long the spawn call took.
    pub spawn_call: Duration,
}

/// Starts `command` as a worker on `transport`, and hands both ends of its
/// channel to `channel` as soon as they exist. With pipes that is before the
/// spawn: the pipes are made and grown first, and whatever `channel` does
/// with its ends (queue the handshake, start a reader thread) is done by the
/// time the process starts, so none of it competes with the worker's start
/// for a CPU (docs/STARTUP.md). With a socket it is after the worker has
/// connected, within `connect_timeout`.
pub(crate) fn connect<T>(
    command: &WorkerCommand,
    transport: Transport,
    connect_timeout: Duration,
    channel: impl FnOnce(Reader, Writer) -> Result<T, PoolError>,
) -> Result<(Started, T), PoolError> {
    let failed = |source: io::Error| PoolError::Spawn {
        command: command.to_string(),
        source,
    };
    let mut cmd = command.to_command();
    cmd.stderr(Stdio::inherit())
        // Terminal signals go to the coordinator alone, which then stops its workers.
        .process_group(0);
    // No environment is set for pipes: any change to it makes std copy the
    // whole environment at each spawn, which measured 12-18 µs. The worker
    // asks for PR_SET_PDEATHSIG itself once the Hello gives it this
    // process's pid: a pre-exec hook here would force fork() instead of
    // posix_spawn and cost about 0.3 ms per worker (docs/STARTUP.md).
    let ends = match transport {
        Transport::Pipe => {
            let (stdin, input) = io::pipe().map_err(failed)?;
            let (output, stdout) = io::pipe().map_err(failed)?;
            grow_pipe(input.as_raw_fd());
            grow_pipe(output.as_raw_fd());
            cmd.stdin(stdin).stdout(stdout);
            Ends::Made(channel(Box::new(output), Box::new(input))?)
        }
        Transport::Socket => {
            let (name, listener) = listen().map_err(failed)?;
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .env(SOCKET_ENV, name);
            Ends::OnConnect(listener, channel)
        }
    };

    // Spawned under the registry's lock, so that a signal handler stopping
    // everything either sees this child or stops it from being started.
    let mut live = live();
    if live.stopping {
        drop(live);
        wait_for_exit();
    }
    let spawned_at = Instant::now();
    let spawned_at_ns = monotonic_ns();
    let child = cmd.spawn().map_err(failed)?;
    let spawn_call = spawned_at.elapsed();
    live.pids.push(child.id());
    drop(live);
    // The worker's ends of its pipes, which only the worker may hold.
    drop(cmd);
    let mut child = OwnedChild::new(child);

    let made = match ends {
        Ends::Made(made) => made,
        Ends::OnConnect(listener, channel) => {
            let stream = accept(&listener, &mut child, connect_timeout).map_err(failed)?;
            let shared = SharedStream::new(stream);
            channel(Box::new(shared.clone()), Box::new(SocketWriter(shared)))?
        }
    };
    let started = Started {
        child,
        spawned_at,
        spawned_at_ns,
        spawn_call,
    };
    Ok((started, made))
}

/// What became of a worker's channel before its spawn.
enum Ends<T, F> {
    /// Pipes: made, and handed over already.
    Made(T),
    /// A socket: handed over once the worker connects to this listener.
    OnConnect(Listener, F),
}

/// The pipe buffer a worker's pipes get: the unprivileged maximum on Linux
/// (`/proc/sys/fs/pipe-max-size`). With the default 64 KiB a megabyte frame
/// takes sixteen wake-ups; `fibpool stress` measured 1 MiB streams at about
/// 0.85 GB/s with the default and 2.2 GB/s with this (docs/IPC.md).
const PIPE_BUFFER: libc::c_int = 1 << 20;

/// Asks for a bigger pipe buffer; keeps the default when refused (a user over
/// their pipe-buffer quota).
fn grow_pipe(fd: RawFd) {
    // SAFETY: fcntl on a pipe descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BUFFER) };
}

/// The writing end of a worker's socket. Both ends share one stream, so
/// dropping this one would not close anything: it shuts the writing side
/// down instead, and the worker sees the end of its input, as with a pipe.
struct SocketWriter(SharedStream);

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Drop for SocketWriter {
    fn drop(&mut self) {
        self.0.shutdown_write();
    }
}

/// A fresh abstract-namespace name and a listener on it.
fn listen() -> io::Result<(String, Listener)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "fibpool-{}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let listener = ListenerOptions::new()
        .name(name.as_str().to_ns_name::<GenericNamespaced>()?)
        .nonblocking(ListenerNonblockingMode::Accept)
        .create_sync()?;
    Ok((name, listener))
}

/// Waits for the worker's connection, giving up if the worker exits or the
/// time runs out.
fn accept(
    listener: &Listener,
    child: &mut OwnedChild,
    timeout: Duration,
) -> io::Result<interprocess::local_socket::Stream> {
    let fd = match listener {
        Listener::UdSocket(l) => l.as_fd().as_raw_fd(),
    };
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok(stream) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if let Some(status) = child.child.try_wait()? {
            return Err(io::Error::other(format!(
                "it {} before connecting",
                describe_status(status)
            )));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("it did not connect within {timeout:?}"),
            ));
        }
        // Wake on a connection, or every 10 ms to see whether the worker died.
        poll_readable(fd, left.min(Duration::from_millis(10)))?;
    }
}

/// Waits until `fd` is readable or `timeout` passes; true when readable.
fn poll_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd for an open descriptor.
    match unsafe { libc::poll(&mut poll, 1, millis) } {
        rc if rc > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(err)
            }
        }
    }
}

/// Every child this process has started and not yet reaped, so that a signal
/// handler can stop them all whatever the other threads are doing.
struct Live {
    pids: Vec<u32>,
    /// Set by [`stop_all`]: no child may be started any more.
    stopping: bool,
}

static LIVE: std::sync::Mutex<Live> = std::sync::Mutex::new(Live {
    pids: Vec::new(),
    stopping: false,
});

fn live() -> std::sync::MutexGuard<'static, Live> {
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn forget(pid: u32) {
    live().pids.retain(|&p| p != pid);
}

/// True once [`stop_all`] has run: the process is about to exit.
pub(crate) fn stopping() -> bool {
    live().stopping
}

/// Blocks a thread for good while the thread that called [`stop_all`] exits
/// the process, so that no other outcome (an error, a new worker) races it.
pub(crate) fn wait_for_exit() -> ! {
    loop {
        std::thread::park();
    }
}

/// Kills every live child (SIGKILL to its process group), reaps them all, and
/// makes any thread that tries to start another wait for the process to exit.
/// Returns how many there were. For a signal handler thread that exits the
/// process right after.
pub(crate) fn stop_all() -> usize {
    let pids = {
        let mut live = live();
        live.stopping = true;
        std::mem::take(&mut live.pids)
    };
    for &pid in &pids {
        // SAFETY: kill(2) on process groups whose leaders are our unreaped children.
        unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
    }
    for &pid in &pids {
        let mut status = 0;
        // SAFETY: waitpid on our own child; ECHILD if another thread reaped it first.
        unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    }
    pids.len()
}

/// A child process that is killed and reaped when dropped.
pub(crate) struct OwnedChild {
    child: Child,
    status: Option<ExitStatus>,
}

impl OwnedChild {
    fn new(child: Child) -> Self {
        OwnedChild {
            child,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL to the child's process group (it leads its own), unless it was
    /// already reaped, after which its pid may belong to someone else.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            // SAFETY: plain kill(2) on a process group this coordinator created.
            unsafe { libc::kill(-(self.pid() as libc::pid_t), libc::SIGKILL) };
        }
    }

    /// Waits up to `grace` for the child to exit, then kills it; reaps it either way.
    pub fn reap(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = match wait_timeout(&mut self.child, grace)? {
            Some(status) => status,
            None => {
                self.kill();
                self.child.wait()?
            }
        };
        self.status = Some(status);
        forget(self.pid());
        Ok(status)
    }

    /// The child's peak resident set size (VmHWM), while it is alive.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        peak_rss_bytes(&format!("/proc/{}/status", self.pid()))
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
            if let Ok(status) = self.child.wait() {
                self.status = Some(status);
            }
            forget(self.pid());
        }
    }
}

/// VmHWM from a /proc status file, in bytes.
pub(crate) fn peak_rss_bytes(status_file: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_file).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// "exited with status 3", "was killed by signal 9 (SIGKILL)".
pub(crate) fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal} ({})", signal_name(signal)),
        _ => format!("ended ({status})"),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "unnamed signal",
    }
}

/// Waits for `child` to exit for at most `timeout`, without reaping early:
/// a pidfd becomes readable when the process exits.
fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    if let Some(status) = child.try_wait()? {
        return Ok(Some(status));
    }
    // SAFETY: pidfd_open on our own child, which is not reaped yet.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if raw < 0 {
        return wait_timeout_polling(child, timeout);
    }
    // SAFETY: the kernel just gave us this descriptor and nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if poll_readable(pidfd.as_raw_fd(), left)? {
            return child.wait().map(Some);
        }
        if left.is_zero() {
            return child.try_wait();
        }
    }
}

fn wait_timeout_polling(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
