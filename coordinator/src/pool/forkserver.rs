//! The forkserver start method, a [`Launch`]: one server process per
//! worker command (a worker command with `FIBPOOL_FORK_SERVER`, spawned as
//! any worker is), shared by the pools of this process as Python's is, and
//! each worker is a fork of it, started on request over a `SOCK_SEQPACKET`
//! pair with its descriptors passed by SCM_RIGHTS
//! ([`fibpool_protocol::forkserver`]).
//!
//! - The server is this process's child, in its own process group, listed
//!   in the [`registry`]; its workers stay in that group, so stopping the
//!   server's group stops them all. It is started from a thread that lives
//!   as long as this process ([`on_keeper`]), and dies with it
//!   (PR_SET_PDEATHSIG), and its workers with it; [`release_fork`] ends it
//!   once no pool uses it.
//! - A worker is signalled through a pidfd the server passes back, so a
//!   kill reaches that process or none, never a reused pid; the server
//!   reaps it and sends its wait status, which [`Forked::wait_timeout`]
//!   returns as a spawned child's would be.
//! - A server that has died is started again on the next request; one that
//!   cannot be started, or does not answer a request within the pool's
//!   handshake timeout (it is killed then), fails that launch with an
//!   error, never a hang. One that stays stopped (SIGSTOP) for
//!   [`STOPPED_GRACE`] while the pool waits on it, for a start or for a
//!   worker's status, is killed then, and a worker whose status it held is
//!   reaped here, as an orphan.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fibpool_protocol::env;
use fibpool_protocol::forkserver::{self, FromServer, MAX_PACKET, ToServer};

use super::WorkerCommand;
use super::child::{
    ChildPid, Killer, OwnedChild, Process, Spawned, describe_status, far, poll_readable,
};
use super::error::PoolError;
use super::launch::Launch;
use super::registry;
use super::transport::ChildStdio;

/// How long a server that closed its socket may take to exit before it is
/// killed.
const ENDING_GRACE: Duration = Duration::from_secs(1);

/// How long a worker's exit status may take to arrive once its pidfd says
/// it has ended.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a wait on the server looks whether it is stopped (SIGSTOP).
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// How long a server the pool waits on may stay stopped before it is
/// killed: one continued within this costs nothing.
const STOPPED_GRACE: Duration = Duration::from_secs(1);

/// Starts workers as forks of a server started with `command`.
pub(crate) struct ForkServerLauncher {
    command: WorkerCommand,
    /// How long the server may take to answer a start request.
    answer_timeout: Duration,
    /// The running server, if any, and whether this launcher started it;
    /// held while a start request is answered, so requests and answers
    /// pair up.
    server: Mutex<Option<(Arc<Server>, bool)>>,
}

/// The fork start method's server: a fork of this process, shared by every
/// pool built with [`StartMethod::Fork`], as Python's forkserver is by the
/// pools of a process. It lives until this process ends.
///
/// [`StartMethod::Fork`]: super::StartMethod::Fork
static EARLY: Mutex<Option<Arc<Server>>> = Mutex::new(None);

/// The forkserver method's servers, one per worker command, shared by the
/// pools of this process as Python's forkserver is: a pool after the first
/// forks its workers from a server that is already up. Each lives until
/// [`release_fork`], or until this process ends (it dies with the thread
/// that started it, [`on_keeper`]'s).
static SHARED: Mutex<Vec<(WorkerCommand, Arc<Server>)>> = Mutex::new(Vec::new());

/// The forkserver method's running server for `command`, started if there
/// is none (or it has ended); true when this call started it.
fn shared_server(command: &WorkerCommand) -> io::Result<(Arc<Server>, bool)> {
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    // A dead server is no one's any more: dropped by its last holder, it
    // is reaped.
    shared.retain(|(_, server)| !server.gone());
    if let Some((_, server)) = shared.iter().find(|(c, _)| c == command) {
        return Ok((server.clone(), false));
    }
    let started = {
        let command = command.clone();
        on_keeper(move || Server::start(&command))??
    };
    let server = Arc::new(started);
    shared.push((command.clone(), server.clone()));
    Ok((server, true))
}

/// Starts a new shared server for `command` in place of the one there was
/// (which lives on while a pool still uses it), and waits up to `timeout`
/// for it to take requests: how long that took. For measuring the
/// server's own start apart from a pool's.
pub fn restart_fork_server(
    command: &WorkerCommand,
    timeout: Duration,
) -> Result<Duration, PoolError> {
    let failed = |source| PoolError::Spawn {
        command: format!("{command} (as a fork server)"),
        source,
    };
    SHARED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|(c, _)| c != command);
    let (server, _) = shared_server(command).map_err(failed)?;
    let ready_at = server
        .wait_for(timeout, |state| state.ready_at)
        .map_err(failed)?;
    Ok(ready_at.saturating_duration_since(server.started_at))
}

/// Runs `start` on the thread that starts shared fork servers, and returns
/// what it did. That thread lives as long as this process: a server dies
/// with the thread that started it (PR_SET_PDEATHSIG), and a shared one
/// must outlive the pool that asked for it.
fn on_keeper<T: Send + 'static>(start: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    type Job = Box<dyn FnOnce() + Send>;
    static KEEPER: Mutex<Option<std::sync::mpsc::Sender<Job>>> = Mutex::new(None);
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = tx.send(start());
    });
    {
        let mut keeper = KEEPER.lock().unwrap_or_else(PoisonError::into_inner);
        if keeper.is_none() {
            let (jobs, queue) = std::sync::mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("fibpool-forkservers".into())
                .spawn(move || {
                    // Never ends: its sender stays in KEEPER.
                    for job in queue {
                        job();
                    }
                })?;
            *keeper = Some(jobs);
        }
        let ended = || io::Error::other("the fork servers' thread has ended");
        keeper
            .as_ref()
            .ok_or_else(ended)?
            .send(job)
            .map_err(|_| ended())?;
    }
    rx.recv()
        .map_err(|_| io::Error::other("the fork servers' thread ended"))
}

/// Forks the fork start method's server now, while this process has one
/// thread, for the pools built with [`StartMethod::Fork`]: call it first
/// thing in `main` (after [`crate::run_if_worker`]), before anything starts
/// a thread. Without it, the first such pool forks the server at its build,
/// which this process must then have one thread for. Calling it again once
/// the server runs does nothing.
///
/// [`StartMethod::Fork`]: super::StartMethod::Fork
pub fn prepare_fork() -> Result<(), PoolError> {
    let mut early = EARLY.lock().unwrap_or_else(PoisonError::into_inner);
    if early.as_ref().is_none_or(|s| s.gone()) {
        *early = Some(Arc::new(Server::fork_from_here().map_err(fork_error)?));
    }
    Ok(())
}

/// Ends the server [`prepare_fork`] (or the first fork pool) made, and the
/// forkserver method's shared servers, once no pool uses them, and reaps
/// them; a pool still using one keeps it until that pool ends. A later fork
/// pool needs one process thread again.
pub fn release_fork() {
    let early = EARLY.lock().unwrap_or_else(PoisonError::into_inner).take();
    drop(early);
    let shared = std::mem::take(&mut *SHARED.lock().unwrap_or_else(PoisonError::into_inner));
    drop(shared);
}

fn fork_error(e: io::Error) -> PoolError {
    if e.kind() == io::ErrorKind::Unsupported {
        PoolError::Config(format!(
            "the fork start method forks this process, which must have one thread then ({e}): build the pool before any thread starts, call prepare_fork() then, or use forkserver"
        ))
    } else {
        PoolError::Spawn {
            command: "a fork of this process as a fork server".to_owned(),
            source: e,
        }
    }
}

/// The launcher's server, held while a start request is answered.
type Slot<'a> = MutexGuard<'a, Option<(Arc<Server>, bool)>>;

impl ForkServerLauncher {
    pub fn new(command: WorkerCommand, answer_timeout: Duration) -> Self {
        ForkServerLauncher {
            command,
            answer_timeout,
            server: Mutex::new(None),
        }
    }

    /// The fork start method's: its first server is a fork of this process,
    /// made by [`prepare_fork`] or now, which needs this process to have one
    /// thread. A server that dies is replaced by one spawned from `command`,
    /// as with the forkserver method: this process cannot fork safely any
    /// more once the pool runs.
    pub fn forked(command: WorkerCommand, answer_timeout: Duration) -> Result<Self, PoolError> {
        let mut early = EARLY.lock().unwrap_or_else(PoisonError::into_inner);
        let server = match early.as_ref().filter(|s| !s.gone()) {
            Some(server) => server.clone(),
            None => {
                let server = Arc::new(Server::fork_from_here().map_err(fork_error)?);
                *early = Some(server.clone());
                server
            }
        };
        Ok(ForkServerLauncher {
            command,
            answer_timeout,
            server: Mutex::new(Some((server, false))),
        })
    }

    /// The live server: this pool's, or the shared one for its command
    /// (started if there is none, or it has ended).
    fn server(&self) -> io::Result<(Slot<'_>, Arc<Server>)> {
        let mut slot = self.server.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((server, _)) = slot.as_ref().filter(|(s, _)| !s.gone()) {
            let server = server.clone();
            return Ok((slot, server));
        }
        // A shared server that died is no one's any more: dropped by its
        // last holder, it is reaped at once.
        if let Some((dead, _)) = slot.take() {
            let mut early = EARLY.lock().unwrap_or_else(PoisonError::into_inner);
            if early.as_ref().is_some_and(|e| Arc::ptr_eq(e, &dead)) {
                *early = None;
            }
        }
        let (server, started) = shared_server(&self.command)?;
        *slot = Some((server.clone(), started));
        Ok((slot, server))
    }
}

impl fmt::Debug for ForkServerLauncher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ForkServerLauncher({})", self.command)
    }
}

impl Launch for ForkServerLauncher {
    fn launch(&self, stdio: ChildStdio) -> io::Result<OwnedChild> {
        let (_slot, server) = self.server()?;
        let socket = stdio.env.iter().find(|(k, _)| *k == env::SOCKET);
        let request = ToServer::Start {
            socket: socket.map(|(_, name)| name.as_bytes().to_vec()),
        };
        let fds: Vec<_> = [&stdio.stdin, &stdio.stdout]
            .into_iter()
            .flatten()
            .map(|fd| fd.as_fd())
            .collect();
        let started = server.start_worker(&request.encode(), &fds, self.answer_timeout);
        // Only the worker may hold its ends of the channel.
        drop(stdio);
        let (pid, pidfd) = started?;
        // Listed once it exists; a stop before that killed it with the
        // server's group.
        registry::list_member(pid);
        Ok(OwnedChild::new(Box::new(Forked {
            pid,
            pidfd,
            server,
            status: None,
            collateral: false,
        })))
    }

    fn describe(&self) -> String {
        format!("{} (as a fork server)", self.command)
    }

    fn server_start(&self) -> Option<Duration> {
        let slot = self.server.lock().unwrap_or_else(PoisonError::into_inner);
        // A server that was up before this pool (shared) is no phase of it.
        let (server, true) = slot.as_ref()? else {
            return None;
        };
        let ready_at = server.said.state().ready_at?;
        Some(ready_at.saturating_duration_since(server.started_at))
    }

    fn ready_ns(&self) -> Option<u64> {
        let slot = self.server.lock().unwrap_or_else(PoisonError::into_inner);
        slot.as_ref()?.0.said.state().ready_ns
    }
}

/// A fork server process and what it has said.
struct Server {
    pid: u32,
    control: OwnedFd,
    /// Held from a start request until its answer: pools that share the
    /// server take turns.
    requests: Mutex<()>,
    /// When its start began.
    started_at: Instant,
    said: Arc<Said>,
    /// The server's own process, killed and reaped with the last handle.
    process: Mutex<OwnedChild>,
    reader: Option<JoinHandle<()>>,
}

/// What the server has said, as its reader thread hears it.
#[derive(Default)]
struct Said {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The answer to the start request in flight.
    answer: Option<Result<(u32, OwnedFd), io::Error>>,
    /// Wait statuses of workers it reaped, by pid, until taken.
    exited: HashMap<u32, i32>,
    /// It closed its end (or broke it): it has ended or is ending.
    gone: bool,
    /// What its socket said then, when it was an error.
    cause: Option<String>,
    /// When it said it was ready: here, and on its clock.
    ready_at: Option<Instant>,
    ready_ns: Option<u64>,
}

impl Said {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits up to `left` for news; true with the guard when none came.
    fn wait<'a>(
        &self,
        state: MutexGuard<'a, State>,
        left: Duration,
    ) -> (MutexGuard<'a, State>, bool) {
        let (state, timeout) = self
            .changed
            .wait_timeout(state, left)
            .unwrap_or_else(PoisonError::into_inner);
        (state, timeout.timed_out())
    }
}

impl Server {
    fn start(command: &WorkerCommand) -> io::Result<Server> {
        become_subreaper();
        let started_at = Instant::now();
        let (ours, theirs) = forkserver::socket_pair()?;
        let reading = ours.try_clone()?;
        let mut cmd = command.to_command();
        cmd.stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .env(env::FORK_SERVER, std::process::id().to_string())
            .process_group(0);
        let child = registry::start_server(|| {
            let child = cmd.spawn()?;
            let pid = child.id();
            Ok::<_, io::Error>((child, pid))
        })?;
        // `cmd` holds the server's end, which only the server may hold.
        drop(cmd);
        let pid = child.id();
        let process = OwnedChild::new(Box::new(Spawned(child)));
        Server::on(pid, process, ours, reading, started_at)
    }

    /// A server forked from this process, which must have one thread (the
    /// fork start method): it runs the worker crate's fork server on its
    /// end of the socket, moved to its stdin, with every other descriptor
    /// of this process closed and its stdout on /dev/null.
    fn fork_from_here() -> io::Result<Server> {
        // A pool just dropped leaves its reader threads to end on their
        // own, a moment after its workers: they are given that moment.
        let waited = Instant::now();
        let mut threads = threads();
        while threads != 1 && waited.elapsed() < THREADS_ENDING {
            std::thread::sleep(Duration::from_millis(1));
            threads = self::threads();
        }
        if threads != 1 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("this process runs {threads} threads, and only one may fork"),
            ));
        }
        become_subreaper();
        let started_at = Instant::now();
        let (ours, theirs) = forkserver::socket_pair()?;
        let reading = ours.try_clone()?;
        let coordinator = std::process::id();
        let zygote = registry::start_server(|| {
            // SAFETY: this process has one thread (checked above), so the
            // child may run any code.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(io::Error::last_os_error());
            }
            if pid == 0 {
                let code = match become_server(&theirs) {
                    Ok(()) => fibpool_worker::serve_as_fork_server("fibpool worker", coordinator),
                    Err(e) => {
                        let line = format!("fibpool worker: fork server: {e}\n");
                        // SAFETY: write(2) of a buffer we own to stderr.
                        unsafe {
                            libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), line.len())
                        };
                        std::process::ExitCode::FAILURE
                    }
                };
                // SAFETY: _exit ends this forked copy without running the
                // coordinator's destructors or exit handlers.
                unsafe {
                    libc::_exit(if code == std::process::ExitCode::SUCCESS {
                        0
                    } else {
                        1
                    })
                };
            }
            let pid = pid as u32;
            Ok((ChildPid::adopt(pid)?, pid))
        })?;
        drop(theirs);
        let pid = zygote.pid();
        Server::on(
            pid,
            OwnedChild::new(Box::new(zygote)),
            ours,
            reading,
            started_at,
        )
    }

    /// A server process `pid` on the socket `ours` (and `reading`, a copy of
    /// it for the reader thread).
    fn on(
        pid: u32,
        process: OwnedChild,
        ours: OwnedFd,
        reading: OwnedFd,
        started_at: Instant,
    ) -> io::Result<Server> {
        let said = Arc::new(Said::default());
        let reader = {
            let said = said.clone();
            std::thread::Builder::new()
                .name("fibpool-forkserver".into())
                .spawn(move || read_messages(&reading, &said))?
        };
        Ok(Server {
            pid,
            control: ours,
            requests: Mutex::new(()),
            started_at,
            said,
            process: Mutex::new(process),
            reader: Some(reader),
        })
    }

    fn gone(&self) -> bool {
        self.said.state().gone
    }

    /// Sends a start request with `fds` and waits for its answer.
    fn start_worker(
        &self,
        request: &[u8],
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> io::Result<(u32, OwnedFd)> {
        let _turn = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        self.said.state().answer = None;
        if let Err(e) = forkserver::send(self.control.as_fd(), request, fds) {
            // A server that cannot take a request is done for: the next
            // launch starts another.
            return Err(self.ended(&e.to_string()));
        }
        self.answer(timeout)
    }

    /// Waits for the answer to the request just sent.
    fn answer(&self, timeout: Duration) -> io::Result<(u32, OwnedFd)> {
        self.wait_for(timeout, |state| state.answer.take())?
    }

    /// Waits for what `take` finds in what the server said, within
    /// `timeout`; a server that ends first, or stays stopped, or does not
    /// answer in time, fails the wait (killed in the last two cases).
    fn wait_for<T>(
        &self,
        timeout: Duration,
        mut take: impl FnMut(&mut State) -> Option<T>,
    ) -> io::Result<T> {
        let deadline = far(timeout);
        let (mut late, mut stop) = (false, StopWatch::default());
        let mut state = self.said.state();
        loop {
            if let Some(found) = take(&mut state) {
                return Ok(found);
            }
            if state.gone {
                let cause = state.cause.take().unwrap_or_else(|| "the end".to_owned());
                drop(state);
                return Err(self.ended(&cause));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // Looked at only once an answer is late: /proc costs a start.
            let stopped = late && stop.for_too_long(self.pid);
            if left.is_zero() || stopped {
                drop(state);
                self.kill();
                let why = if stopped {
                    format!("stayed stopped (SIGSTOP) for {STOPPED_GRACE:?}")
                } else {
                    format!("did not answer within {timeout:?}")
                };
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the fork server (pid {}) {why}, and was killed", self.pid),
                ));
            }
            (state, late) = self.said.wait(state, left.min(LOOK_EVERY));
        }
    }

    /// Kills the server's process group: the server and every worker it
    /// still has, which its death would kill anyway. It takes no request
    /// from then on, before its reader sees the end.
    fn kill(&self) {
        self.said.state().gone = true;
        let mut process = self.process.lock().unwrap_or_else(PoisonError::into_inner);
        process.kill();
        // Reaped now, not when a later pool replaces it: no zombie waits
        // for that. SIGKILL ends it within the grace.
        let _ = process.reap(ENDING_GRACE);
    }
}

/// True while `pid` is stopped by a signal (state `T` in /proc; a tracing
/// stop, `t`, is a debugger's, and left alone).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('T'))
    })
}

/// How long a server has been seen stopped, look after look.
#[derive(Default)]
struct StopWatch {
    since: Option<Instant>,
}

impl StopWatch {
    /// Looks at `pid`: true once it has stayed stopped for [`STOPPED_GRACE`].
    fn for_too_long(&mut self, pid: u32) -> bool {
        if !is_stopped(pid) {
            self.since = None;
            return false;
        }
        self.since.get_or_insert_with(Instant::now).elapsed() >= STOPPED_GRACE
    }
}

impl Server {
    /// Why the server can take no request (`cause`, on its socket): how it
    /// ended, once it has, within a grace period (it is killed after that).
    fn ended(&self, cause: &str) -> io::Error {
        self.said.state().gone = true;
        let mut process = self.process.lock().unwrap_or_else(PoisonError::into_inner);
        let how = match process.reap(ENDING_GRACE) {
            Ok(status) => describe_status(status),
            Err(e) => format!("could not be reaped ({e})"),
        };
        io::Error::other(format!(
            "the fork server (pid {}) {how} ({cause} on its socket)",
            self.pid
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The end of its stdin ends the server, which kills and reaps the
        // workers it still has; its reader thread sees the end too.
        // SAFETY: shutdown(2) on a socket this handle owns.
        unsafe { libc::shutdown(self.control.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let process = self
            .process
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        // A stopped server would not see the end until continued.
        let grace = if is_stopped(self.pid) {
            Duration::ZERO
        } else {
            STATUS_TIMEOUT
        };
        let _ = process.reap(grace);
    }
}

/// The server's reader thread: answers and exit statuses into `said`, until
/// the server's end closes or it says something it must not.
fn read_messages(fd: &OwnedFd, said: &Said) {
    let mut packet = [0u8; MAX_PACKET];
    loop {
        let message = forkserver::recv(fd.as_fd(), &mut packet).and_then(|got| match got {
            None => Ok(None),
            Some((len, fds)) => FromServer::decode(&packet[..len]).map(|m| Some((m, fds))),
        });
        let mut state = said.state();
        match message {
            Ok(Some((FromServer::Ready { ready_ns }, fds)))
                if fds.is_empty() && state.ready_at.is_none() =>
            {
                state.ready_at = Some(Instant::now());
                state.ready_ns = Some(ready_ns);
            }
            Ok(Some((FromServer::Started { pid }, mut fds))) if fds.len() == 1 => {
                state.answer = Some(Ok((pid, fds.remove(0))));
            }
            Ok(Some((FromServer::Failed { errno }, fds))) if fds.is_empty() => {
                state.answer = Some(Err(io::Error::from_raw_os_error(errno)));
            }
            Ok(Some((FromServer::Exited { pid, status }, fds))) if fds.is_empty() => {
                state.exited.insert(pid, status);
            }
            Ok(Some((other, fds))) => {
                state.answer = Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the fork server sent {other:?} with {} descriptors",
                        fds.len()
                    ),
                )));
                state.gone = true;
            }
            Err(e) => {
                state.cause = Some(e.to_string());
                state.gone = true;
            }
            Ok(None) => state.gone = true,
        }
        let gone = state.gone;
        drop(state);
        said.changed.notify_all();
        if gone {
            return;
        }
    }
}

/// Reaps `pid`, a worker of a server that died, once it is this process's
/// child (a subreaper inherits the orphans as their parent exits), within a
/// short bound; its status, or `None`.
fn reap_orphan(pid: u32) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_millis(200);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a pid that a pidfd of ours keeps from reuse
        // until it is reaped.
        let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        if rc == pid as libc::pid_t {
            return Some(ExitStatus::from_raw(status));
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Makes this process the reaper of its orphaned descendants: a fork
/// server's workers, when the server dies first, so that none is left a
/// zombie of whatever reaps for the session.
fn become_subreaper() {
    // SAFETY: prctl with no pointers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
}

/// In the child of [`Server::fork_from_here`]: its own process group, the
/// socket on fd 0, /dev/null on fd 1, stderr kept, nothing else.
fn become_server(socket: &OwnedFd) -> io::Result<()> {
    let null = std::fs::File::options().write(true).open("/dev/null")?;
    // SAFETY: setpgid, dup2 and close_range on descriptors this process holds.
    unsafe {
        if libc::setpgid(0, 0) < 0
            || libc::dup2(socket.as_raw_fd(), libc::STDIN_FILENO) < 0
            || libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) < 0
            || libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    // Both were closed by close_range: forget them without closing again.
    std::mem::forget(null);
    Ok(())
}

/// How long the fork method waits for other threads to end (those of a
/// pool just dropped) before it refuses to fork.
const THREADS_ENDING: Duration = Duration::from_millis(250);

/// How many threads this process runs, from /proc.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |tasks| tasks.count())
}

/// A worker forked by a server.
pub(crate) struct Forked {
    pid: u32,
    pidfd: OwnedFd,
    server: Arc<Server>,
    status: Option<ExitStatus>,
    /// It ended with its server, whose death signal killed it.
    collateral: bool,
}

impl fmt::Debug for Forked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Forked(pid {}, server {})", self.pid, self.server.pid)
    }
}

impl Process for Forked {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn kill(&mut self) {
        // Through the pidfd: that process or none, never a reused pid.
        if let Ok(killer) = self.killer() {
            killer.kill();
        }
    }

    fn killer(&self) -> io::Result<Killer> {
        self.pidfd.try_clone().map(Killer::Pidfd)
    }

    fn exited(&self) -> bool {
        poll_readable(self.pidfd.as_raw_fd(), Duration::ZERO).unwrap_or(false)
    }

    fn collateral(&self) -> bool {
        self.collateral
    }

    fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        if !poll_readable(self.pidfd.as_raw_fd(), timeout)? {
            return Ok(None);
        }
        // It has ended: its status comes from the server, which reaps it.
        let mut deadline = far(STATUS_TIMEOUT);
        let (mut late, mut killed) = (false, false);
        let mut stop = StopWatch::default();
        let said = &self.server.said;
        let mut state = said.state();
        let status = loop {
            if let Some(raw) = state.exited.remove(&self.pid) {
                break ExitStatus::from_raw(raw);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state.gone || (killed && left.is_zero()) {
                // The server has died: this process, a subreaper, inherits
                // the worker and reaps it. Its death signal killed a worker
                // still running then, through no fault of its own.
                drop(state);
                let status = reap_orphan(self.pid);
                // One that had ended before the pool killed its server
                // ended by itself.
                self.collateral =
                    !killed && status.is_none_or(|s| s.signal() == Some(libc::SIGKILL));
                break status.unwrap_or_else(|| ExitStatus::from_raw(libc::SIGKILL));
            }
            if !killed && (left.is_zero() || (late && stop.for_too_long(self.server.pid))) {
                // A server that cannot say how its worker ended (stopped, or
                // silent for too long) is killed: the worker, already ended,
                // is then this process's to reap, with its own status.
                drop(state);
                self.server.kill();
                killed = true;
                deadline = far(ENDING_GRACE);
                state = said.state();
                continue;
            }
            (state, late) = said.wait(state, left.min(LOOK_EVERY));
        };
        self.status = Some(status);
        Ok(Some(status))
    }
}
