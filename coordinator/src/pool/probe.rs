//! The narrow interface measurement tools use to look inside the pool: wait
//! for every handshake, run one tiny task per worker, time the machine's
//! parallel ceiling, read when the workers were ready; and one worker
//! process started the way a pool starts its workers, with its raw frame
//! streams, for the IPC stress test.

use std::io;
use std::process::ExitStatus;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use fibpool_protocol::{Encoding, FrameReader, FrameWriter};

pub use super::child::Killer;
use super::child::OwnedChild;
use super::error::{PoolError, WorkerName};
use super::hosts::{Host, Ssh};
use super::launch::{Launch, StartMethod, start};
use super::manager::{Msg, ProbeCall};
use super::ssh::Layout;
use super::tasks::TaskList;
use super::transport::Transport;
use super::{Pool, WorkerCommand};

pub use super::child::{describe_status, peak_rss_bytes};
pub use super::forkserver::restart_fork_server;
pub use super::memory::shared_memory_bytes;
pub use super::transport::{Reader, Writer};

/// Calls that look inside a pool: see [`Pool::probe`].
pub struct Probe<'p> {
    pool: &'p Pool,
}

impl<'p> Probe<'p> {
    pub(crate) fn new(pool: &'p Pool) -> Self {
        Probe { pool }
    }

    fn call<T>(&self, call: impl FnOnce(mpsc::Sender<T>) -> ProbeCall) -> Result<T, PoolError> {
        let (reply, answer) = mpsc::channel();
        self.pool.send(Msg::Probe(call(reply)))?;
        answer.recv().map_err(|_| self.pool.gone())
    }

    /// Waits until every worker has completed its handshake.
    pub fn wait_ready(&self) -> Result<(), PoolError> {
        self.call(ProbeCall::WaitReady)?
    }

    /// Runs one tiny task (F(10)) on every worker, each sent as soon as that
    /// worker is ready, and checks the answers: afterwards every worker is
    /// known to compute. A worker lost meanwhile is this call's error (the
    /// pool replaces it as always). `fibpool startup` times pools this way.
    pub fn warm_up(&self) -> Result<(), PoolError> {
        self.call(ProbeCall::WarmUp)?
    }

    /// The machine's parallel ceiling for a batch: every worker computes a
    /// share of equal cost, encoding each value and keeping none, all at
    /// once. Returns the seconds from sending the shares until the last
    /// answer: no start-up, no results moved, no scheduling; what this many
    /// processes can do on this machine. Waits for every handshake first,
    /// and for the pool to be idle. Refuses the batch as [`Pool::run`]
    /// does ([`PoolError::IndexTooLarge`], [`PoolError::ValueTooBig`]).
    pub fn ceiling(&self, tasks: &TaskList, encoding: Encoding) -> Result<f64, PoolError> {
        // As any batch: an index no worker computes, or a value that would
        // not fit in memory, is refused before a worker sees it.
        super::check_batch(tasks, encoding, self.pool.size())?;
        let tasks = tasks.clone();
        self.call(|reply| ProbeCall::Ceiling {
            tasks,
            encoding,
            reply,
        })?
    }

    /// From the first spawn until the last worker was ready, once all are.
    pub fn ready_seconds(&self) -> Option<f64> {
        self.call(ProbeCall::ReadySeconds).ok().flatten()
    }

    /// When the last worker was ready, once all are.
    pub fn ready_at(&self) -> Option<std::time::Instant> {
        self.call(ProbeCall::ReadyAt).ok().flatten()
    }

    /// For a pool that starts a fork server of its own (forkserver): from
    /// the server's spawn until it said it was ready.
    pub fn server_start_seconds(&self) -> Option<f64> {
        self.call(ProbeCall::ServerStartSeconds).ok().flatten()
    }
}

/// One worker process, started as a pool starts its workers (the same
/// launcher, the same transport), whose frame streams the caller drives
/// itself. Killed and reaped when dropped.
pub struct Connection {
    pub name: WorkerName,
    pub reader: FrameReader<Reader>,
    pub writer: FrameWriter<Writer>,
    child: OwnedChild,
}

/// How a measurement starts its workers: a start method's launcher, shared
/// by the connections it opens (a fork server's is started once), or ssh
/// to a host's master.
#[derive(Clone)]
pub struct Launcher(Arc<dyn Launch>);

/// One place of a host list, connected: see [`Launcher::for_hosts`].
pub struct Site {
    /// `None` for this machine.
    pub host: Option<String>,
    /// How long the host's master took to connect: a whole ssh handshake.
    pub connect: Option<Duration>,
    /// Starts a worker there as a pool does.
    pub launcher: Launcher,
    /// For a remote host: a worker over an ssh connection of its own.
    pub direct: Option<Launcher>,
}

impl Launcher {
    /// `command` started by `method`; a fork server must answer each start
    /// request within `answer_timeout`.
    pub fn new(
        method: StartMethod,
        command: &WorkerCommand,
        answer_timeout: Duration,
    ) -> Result<Launcher, PoolError> {
        method
            .launcher(command.clone(), answer_timeout)
            .map(Launcher)
    }

    /// One launcher per worker of a pool on `hosts`, laid out as
    /// [`crate::PoolBuilder::hosts`] lays it out (this machine's started by
    /// `method`), and each place of the list once. Every remote host is
    /// connected first, within `answer_timeout`.
    pub fn for_hosts(
        hosts: &[Host],
        per_host: Option<usize>,
        ssh: &Ssh,
        method: StartMethod,
        command: &WorkerCommand,
        answer_timeout: Duration,
    ) -> Result<(Vec<Launcher>, Vec<Site>), PoolError> {
        let local = || method.launcher(command.clone(), answer_timeout);
        let layout = Layout::hosts(hosts, per_host, ssh, answer_timeout, local)?;
        let sites = layout
            .sites
            .into_iter()
            .map(|site| Site {
                host: site.host,
                connect: site.connect,
                launcher: Launcher(site.launcher),
                direct: site.direct.map(Launcher),
            })
            .collect();
        Ok((layout.launchers.into_iter().map(Launcher).collect(), sites))
    }

    /// The host its workers run on, when not this machine.
    pub fn host(&self) -> Option<String> {
        self.0.host()
    }
}

impl Connection {
    /// Starts a worker with `launcher` on `transport` as worker `slot`. No
    /// handshake is exchanged: that is the caller's.
    pub fn open(
        launcher: &Launcher,
        transport: Transport,
        connect_timeout: Duration,
        slot: usize,
    ) -> Result<Connection, PoolError> {
        let (started, (reader, writer)) =
            start(&*launcher.0, transport, connect_timeout, false, |r, w| {
                Ok((r, w))
            })?;
        let child = started.child;
        Ok(Connection {
            name: WorkerName {
                slot,
                pid: child.pid(),
                remote: launcher.0.host().is_some(),
            },
            reader: FrameReader::new(reader),
            writer: FrameWriter::new(writer),
            child,
        })
    }

    /// Splits off the frame streams, keeping the process.
    pub fn into_parts(
        self,
    ) -> (
        WorkerProcessHandle,
        FrameReader<Reader>,
        FrameWriter<Writer>,
    ) {
        (
            WorkerProcessHandle {
                name: self.name,
                child: self.child,
            },
            self.reader,
            self.writer,
        )
    }
}

/// See [`WorkerProcessHandle::kill_after`].
pub struct Watchdog {
    disarm: std::sync::mpsc::Sender<()>,
    /// `None` if no thread could be made: no deadline then.
    thread: Option<std::thread::JoinHandle<bool>>,
}

impl Watchdog {
    /// Stops the watchdog; true if it had already killed the process.
    pub fn disarm(self) -> bool {
        let _ = self.disarm.send(());
        self.thread.is_some_and(|t| t.join().unwrap_or(false))
    }
}

/// A probe's worker process, apart from its streams.
pub struct WorkerProcessHandle {
    pub name: WorkerName,
    child: OwnedChild,
}

impl WorkerProcessHandle {
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Its peak resident set size, while it is alive.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.child.peak_rss_bytes()
    }

    /// Kills it (as the pool would) unless the returned watchdog is
    /// disarmed within `timeout`: a deadline for a blocking read, such as
    /// the handshake's, which the kill ends.
    pub fn kill_after(&self, timeout: Duration) -> Watchdog {
        let (disarm, disarmed) = std::sync::mpsc::channel::<()>();
        let killer = self.killer();
        let thread = std::thread::Builder::new()
            .name("fibpool-watchdog".into())
            .spawn(move || match disarmed.recv_timeout(timeout) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    // Not reaped before the watchdog is disarmed.
                    killer.iter().for_each(Killer::kill);
                    true
                }
                _ => false,
            })
            .ok();
        Watchdog { disarm, thread }
    }

    /// What kills it from another thread while this handle lives unreaped.
    pub fn killer(&self) -> Option<Killer> {
        self.child.killer().ok().flatten()
    }

    /// Waits up to `grace` for it to exit, then kills it; reaps it either way.
    pub fn reap(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.child.reap(grace)
    }
}
