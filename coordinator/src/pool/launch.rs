//! How a worker is started: the pool's other seam. A launcher starts one
//! process on the streams a [`Transport`] made for it; today's launcher
//! spawns a [`WorkerCommand`]. A fork server, `fork` itself, or ssh to
//! another host are launchers too.
//!
//! Workers die with the *thread* that started them (PR_SET_PDEATHSIG follows
//! the parent thread), so the pool starts them only from threads it owns and
//! keeps until every worker is reaped: its manager thread, and the spawner
//! threads of a parallel start, which stay parked until the pool ends.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fibpool_protocol::clock::monotonic_ns;

use super::WorkerCommand;
use super::child::{ChildPid, OwnedChild, Spawned};
use super::error::PoolError;
use super::registry;
use super::transport::{Budget, ChildStdio, Ends, Reader, Transport, Writer};
use super::vfork::{Env, Exec};

/// How a pool starts its workers: Python's `mp_context` names, with their
/// meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StartMethod {
    /// Each worker is its command, spawned: vfork and exec for a worker of
    /// this program, posix_spawn for any other command.
    Spawn,
    /// The pool spawns one server, its command in server mode, and each
    /// worker is a fork of it: no exec per worker.
    Forkserver,
    /// The server is a fork of this process itself, made while it has one
    /// thread ([`super::prepare_fork`], or the pool's build), so no worker
    /// pays for an exec, the first included. The worker command is only
    /// spawned, as a forkserver's server, if that server dies: with the
    /// default command (this program) `main` must then begin with
    /// [`crate::run_if_worker`], as for the other methods.
    Fork,
}

impl StartMethod {
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Spawn => "spawn",
            StartMethod::Forkserver => "forkserver",
            StartMethod::Fork => "fork",
        }
    }

    /// The launcher for `command`. A fork server must answer each start
    /// request within `answer_timeout` (the pool's handshake timeout).
    pub(crate) fn launcher(
        self,
        command: WorkerCommand,
        answer_timeout: Duration,
    ) -> Result<Arc<dyn Launch>, PoolError> {
        use super::forkserver::ForkServerLauncher;
        Ok(match self {
            StartMethod::Spawn => Arc::new(SpawnCommand::new(command)),
            StartMethod::Forkserver => Arc::new(ForkServerLauncher::new(command, answer_timeout)),
            StartMethod::Fork => Arc::new(ForkServerLauncher::forked(command, answer_timeout)?),
        })
    }
}

/// Starts worker processes.
pub(crate) trait Launch: fmt::Debug + Send + Sync {
    /// Starts one worker whose standard streams and environment are `stdio`.
    /// The process is listed in the [`registry`] before this returns.
    fn launch(&self, stdio: ChildStdio) -> io::Result<OwnedChild>;

    /// What is started, for messages: the command line.
    fn describe(&self) -> String;

    /// For a launcher whose workers are started by a server: when (on
    /// CLOCK_MONOTONIC) the server of the last launch said it was ready. A
    /// worker launched before that waited for the server, whose start is
    /// the pool's phase, not the worker's: its clock starts then.
    fn ready_ns(&self) -> Option<u64> {
        None
    }

    /// The host its workers run on, when not this machine.
    fn host(&self) -> Option<String> {
        None
    }

    /// An address of this machine its workers can reach: where a TCP
    /// channel listens.
    fn near(&self) -> io::Result<std::net::IpAddr> {
        Ok(std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// For a launcher that starts a server of its own first (a fork
    /// server): from the server's spawn until it said it was ready, once it
    /// has.
    fn server_start(&self) -> Option<Duration> {
        None
    }
}

/// Python's "spawn": start a command in its own process group, with stderr
/// inherited. A worker of this very program is vforked and exec'd by hand
/// ([`super::vfork`]: 36 µs less a spawn); any other command is spawned
/// with `std::process::Command` (posix_spawn, since no pre-exec hook is set).
///
/// A vforked worker gets the environment as it was when the pool was built
/// (and the command's variables): the child's execve cannot take std's
/// environment lock, so it reads a copy that nothing else changes.
#[derive(Debug)]
pub(crate) struct SpawnCommand {
    command: WorkerCommand,
    exec: Option<(Exec, Env)>,
}

impl SpawnCommand {
    pub fn new(command: WorkerCommand) -> Self {
        let exec = if command.is_this_program() {
            Exec::new(command.program(), command.args()).zip(command.exec_env().ok())
        } else {
            None
        };
        SpawnCommand { command, exec }
    }

    fn vfork(&self, exec: &Exec, env: &Env, stdio: ChildStdio) -> io::Result<OwnedChild> {
        let null = || {
            std::fs::File::options()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map(OwnedFd::from)
        };
        let stdin = match stdio.stdin {
            Some(fd) => fd,
            None => null()?,
        };
        let stdout = match stdio.stdout {
            Some(fd) => fd,
            None => null()?,
        };
        let with_channel;
        let env = if stdio.env.is_empty() {
            env
        } else {
            with_channel = env.with_vars(&stdio.env)?;
            &with_channel
        };
        let child = registry::start(|| {
            let pid = exec.spawn(stdin.as_fd(), stdout.as_fd(), env)?;
            Ok::<_, io::Error>((ChildPid::adopt(pid)?, pid))
        })?;
        // The worker's ends of its channel are the worker's alone now.
        drop((stdin, stdout));
        Ok(OwnedChild::new(Box::new(child)))
    }
}

impl Launch for SpawnCommand {
    fn launch(&self, stdio: ChildStdio) -> io::Result<OwnedChild> {
        if let Some((exec, env)) = &self.exec {
            return self.vfork(exec, env, stdio);
        }
        let mut cmd = self.command.to_command();
        cmd.stdin(stdio.stdin.map_or_else(Stdio::null, Stdio::from))
            .stdout(stdio.stdout.map_or_else(Stdio::null, Stdio::from))
            .stderr(Stdio::inherit())
            // Terminal signals go to the coordinator alone, which then stops its workers.
            .process_group(0);
        // The worker asks for PR_SET_PDEATHSIG itself once the Hello gives
        // it this process's pid: a pre-exec hook here would force fork()
        // instead of posix_spawn and cost about 0.3 ms per worker
        // (docs/STARTUP.md).
        cmd.envs(stdio.env);
        let child = registry::start(|| {
            let child = cmd.spawn()?;
            let pid = child.id();
            Ok::<_, io::Error>((child, pid))
        })?;
        // `cmd` holds the worker's ends of its pipes, which only the worker may hold.
        drop(cmd);
        Ok(OwnedChild::new(Box::new(Spawned(child))))
    }

    fn describe(&self) -> String {
        self.command.to_string()
    }
}

/// A started worker's process, and the stamps of its start.
pub(crate) struct Started {
    pub child: OwnedChild,
    /// When the launch call began, on the Instant clock and on CLOCK_MONOTONIC.
    pub spawned_at: Instant,
    pub spawned_at_ns: u64,
    /// How long the launch call took.
    pub spawn_call: Duration,
    /// How much may wait unread in the worker's input.
    pub budget: Budget,
}

/// Starts a worker on `transport` and hands both ends of its channel to
/// `channel` as soon as they exist. With pipes that is before the launch:
/// whatever `channel` does with its ends (queue the handshake, start a
/// reader thread) is done by the time the process starts, so none of it
/// competes with the worker's start for a CPU (docs/STARTUP.md). With a
/// socket it is right after the launch: the connection is awaited by the
/// first read, within `connect_timeout`, and what is written before it
/// waits in memory.
pub(crate) fn start<T>(
    launcher: &dyn Launch,
    transport: Transport,
    connect_timeout: Duration,
    nonblocking: bool,
    channel: impl FnOnce(Reader, Writer) -> Result<T, PoolError>,
) -> Result<(Started, T), PoolError> {
    let failed = |source: io::Error| PoolError::Spawn {
        command: launcher.describe(),
        source,
    };
    let near = match transport {
        Transport::Tcp => launcher.near().map_err(failed)?,
        _ => std::net::Ipv4Addr::LOCALHOST.into(),
    };
    let (stdio, ends, budget) = transport.open(nonblocking, near).map_err(failed)?;
    let (made, listening) = match ends {
        Ends::Ready(reader, writer) => (Some(channel(reader, writer)?), None),
        Ends::Listening(listening) => (None, Some((listening, channel))),
    };
    let mut spawned_at = Instant::now();
    let mut spawned_at_ns = monotonic_ns();
    let child = launcher.launch(stdio).map_err(failed)?;
    let mut spawn_call = spawned_at.elapsed();
    // The request went out at once and waited in the server's socket.
    if let Some(ready_ns) = launcher.ready_ns()
        && ready_ns > spawned_at_ns
    {
        let waited = Duration::from_nanos(ready_ns - spawned_at_ns);
        spawned_at += waited;
        spawned_at_ns = ready_ns;
        spawn_call = spawn_call.saturating_sub(waited);
    }
    let made = match (made, listening) {
        (Some(made), _) => made,
        (None, Some((listening, channel))) => {
            let (reader, writer) = listening.channel(child.pid(), connect_timeout);
            channel(reader, writer)?
        }
        (None, None) => unreachable!("a channel is made or awaited"),
    };
    let started = Started {
        child,
        spawned_at,
        spawned_at_ns,
        spawn_call,
        budget,
    };
    Ok((started, made))
}

/// Threads that started workers in parallel, parked until released: the
/// workers they started die with them.
#[derive(Default)]
pub(crate) struct Spawners {
    release: Vec<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Spawners {
    /// Runs `spawn(slot)` for every slot from `threads` threads at once,
    /// handing each outcome to `done`, which says whether to go on.
    pub fn start<T: Send + 'static>(
        slots: usize,
        threads: usize,
        spawn: Arc<dyn Fn(usize) -> T + Send + Sync>,
        done: impl Fn(usize, T) -> bool + Clone + Send + 'static,
    ) -> io::Result<Spawners> {
        let threads = threads.clamp(1, slots.max(1));
        let mut spawners = Spawners::default();
        for first in 0..threads {
            let (release, parked) = mpsc::channel::<()>();
            let (spawn, done) = (spawn.clone(), done.clone());
            let thread = std::thread::Builder::new()
                .name(format!("fibpool-spawner-{first}"))
                .spawn(move || {
                    for slot in (first..slots).step_by(threads) {
                        if !done(slot, spawn(slot)) {
                            break;
                        }
                    }
                    // Returns when the pool drops the sender.
                    let _ = parked.recv();
                })?;
            spawners.release.push(release);
            spawners.threads.push(thread);
        }
        Ok(spawners)
    }
}

impl Drop for Spawners {
    fn drop(&mut self) {
        self.release.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn spawners_run_every_slot_once_and_park_until_released() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let spawn = Arc::new(|slot: usize| slot * 10);
        let record = {
            let seen = seen.clone();
            move |slot: usize, value: usize| {
                seen.lock().unwrap().push((slot, value));
                tx.send(()).is_ok()
            }
        };
        let spawners = Spawners::start(7, 3, spawn, record).unwrap();
        for _ in 0..7 {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("every slot is spawned");
        }
        // Parked, not finished: the workers they started would die with them.
        assert!(spawners.threads.iter().all(|t| !t.is_finished()));
        drop(spawners);
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..7).map(|s| (s, s * 10)).collect::<Vec<_>>());
    }

    #[test]
    fn a_spawned_command_is_listed_until_reaped() {
        let launcher = SpawnCommand::new(WorkerCommand::new("sh").arg("-c").arg("exit 4"));
        let (stdio, _ends, budget) = Transport::Pipe
            .open(false, std::net::Ipv4Addr::LOCALHOST.into())
            .unwrap();
        assert!(budget.capacity >= 4096, "{budget:?}");
        let mut child = launcher.launch(stdio).unwrap();
        assert!(registry::listed(child.pid()));
        let status = child.reap(Duration::from_secs(30)).unwrap();
        assert_eq!(status.code(), Some(4));
        assert!(!registry::listed(child.pid()));
    }

    #[test]
    fn a_command_that_does_not_exist_is_a_spawn_error() {
        let launcher = SpawnCommand::new(WorkerCommand::new("/nonexistent/fibpool-worker"));
        let err = start(
            &launcher,
            Transport::Pipe,
            Duration::from_secs(1),
            true,
            |_, _| Ok(()),
        )
        .err()
        .expect("no such program");
        assert_eq!(
            err.to_string(),
            "cannot start worker `/nonexistent/fibpool-worker`"
        );
        let PoolError::Spawn { source, .. } = err else {
            panic!("not a spawn error: {err:?}")
        };
        assert_eq!(source.kind(), io::ErrorKind::NotFound);
    }
}
