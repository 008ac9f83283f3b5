//! The pool core: a pool of worker processes with Python's
//! `ProcessPoolExecutor`'s API ([`Pool`], [`Future`], [`as_completed`]),
//! and everything under it. It imports nothing from measurement, reporting
//! or the command line.
//!
//! - `manager`: the pool's own thread: scheduling, recovery, replies.
//! - `future`, `map`, `stream`: the caller's side of a batch.
//! - `board`: reassembly in order; `tasks`: a batch and its chunks.
//! - `worker`: one worker process as the pool sees it; `child`: the guard
//!   that kills and reaps it; [`registry`]: every live one, for signals.
//! - The two seams: `launch` (how a worker is started: today, spawn a
//!   [`WorkerCommand`]) and `transport` (how frames travel: pipes or a
//!   local socket).
//! - [`probe`]: the narrow interface measurement tools use.

mod board;
mod child;
mod command;
mod error;
mod forkserver;
mod future;
mod hosts;
mod launch;
mod manager;
mod map;
mod memory;
mod mux;
pub mod probe;
pub mod registry;
mod ssh;
mod stats;
mod stream;
mod tasks;
mod transport;
mod vfork;
mod worker;

use std::io;
use std::num::NonZeroU64;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use fibpool_protocol::Encoding;

pub use command::{WORKER_ENV, WorkerCommand};
pub use error::{PoolError, WorkerName};
pub use forkserver::{prepare_fork, release_fork};
pub use future::{AsCompleted, Future, as_completed};
pub use hosts::{Host, Login, Ssh};
pub use launch::StartMethod;
pub use map::{Map, MapUnordered};
pub use memory::{MemoryLimit, check_batch, check_held, check_index, value_memory_bound};
use memory::{affordable_limit, unchecked_limit};
pub use stats::{PHASE_NAMES, Phases, PoolCounts, WorkerStats};
pub use tasks::{CHUNK_BYTES_BUDGET, ChunkSize, GUIDED_MIN_COST, TaskList, guided_chunk_size};
pub use transport::Transport;

use board::Values;
use manager::{Config, Job, JobId, Msg, Shared, Sink, Source, ToManager};
use stream::Stream;
use tasks::{ChunkPlan, Cursor};

/// How long a worker may take from spawn to its handshake by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times in a row a chunk may take its worker down (or a worker
/// slot fail to start) by default.
pub const DEFAULT_RETRIES: u32 = 3;
/// The most workers a pool may have.
pub const MAX_WORKERS: usize = 1024;
/// The most chunks a worker may be sent ahead of its answers.
pub const MAX_IN_FLIGHT: usize = 64;
/// A fed batch (a run, a map) keeps this many chunks out per in-flight place
/// of every worker, by default.
const WINDOW_PER_SLOT: usize = 4;

/// One worker per available core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Builds a [`Pool`].
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    /// `None`: one per core, asked of the OS only when the pool is built.
    workers: Option<usize>,
    command: Option<WorkerCommand>,
    in_flight: usize,
    handshake_timeout: Duration,
    task_timeout: Option<Duration>,
    retries: u32,
    spawn_threads: usize,
    transport: Transport,
    start_method: StartMethod,
    max_tasks_per_child: Option<u64>,
    /// Empty: every worker on this machine.
    hosts: Vec<Host>,
    ssh: Ssh,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            workers: None,
            command: None,
            in_flight: 2,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            task_timeout: None,
            retries: DEFAULT_RETRIES,
            spawn_threads: 1,
            transport: Transport::Pipe,
            start_method: StartMethod::Spawn,
            max_tasks_per_child: None,
            hosts: Vec::new(),
            ssh: Ssh::default(),
        }
    }
}

impl PoolBuilder {
    /// The number of worker processes (default: one per core), 1 to
    /// [`MAX_WORKERS`].
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// How workers are started (default: [`WorkerCommand::this_program`]).
    pub fn worker_command(mut self, command: WorkerCommand) -> Self {
        self.command = Some(command);
        self
    }

    /// Chunks sent to a worker before it has answered the first (default 2,
    /// at most [`MAX_IN_FLIGHT`]): the second hides the round trip.
    pub fn in_flight(mut self, chunks: usize) -> Self {
        self.in_flight = chunks;
        self
    }

    /// How long a worker may take to complete its handshake (default 30 s).
    /// A worker that misses it counts as one that failed to start.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// A worker that spends longer than this on one chunk is killed and
    /// replaced, and the chunk retried (default: no limit).
    pub fn task_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.task_timeout = timeout;
        self
    }

    /// How many times in a row a chunk may take its worker down before it is
    /// a poison chunk and fails its batch (default 3). Also how many workers
    /// in a row may fail to start in one place before the pool stops
    /// starting them there; when no place is left, the pool is broken.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Spawn the first workers from this many threads at once (default 1).
    /// The threads then wait, parked, until the pool ends, because a
    /// worker's PR_SET_PDEATHSIG fires when the thread that spawned it exits.
    pub fn spawn_threads(mut self, threads: usize) -> Self {
        self.spawn_threads = threads;
        self
    }

    /// How frames travel (default: pipes). With [`Transport::Socket`] and
    /// [`Transport::Tcp`], a worker's reader waits for it to connect.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// How workers are started (default: [`StartMethod::Spawn`]). With
    /// [`StartMethod::Forkserver`] the worker command must be a fibpool
    /// worker (it is started once, as the server).
    ///
    /// Both forking methods make this process a child subreaper
    /// (PR_SET_CHILD_SUBREAPER) when they start a server, for the rest of
    /// its life: a server's workers, orphaned when it dies, are reparented
    /// to this process, which reaps them. Any other orphaned descendant of
    /// this process is reparented to it too, and a program that waits for
    /// any child (`waitpid(-1)`) can reap a worker the pool still tracks.
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = method;
        self
    }

    /// Replace each worker by a fresh process once it has been sent this
    /// many chunks (Python's `max_tasks_per_child`; default: never). Its
    /// stats then say `ended: recycled`.
    pub fn max_tasks_per_child(mut self, chunks: Option<u64>) -> Self {
        self.max_tasks_per_child = chunks;
        self
    }

    /// Runs the workers on these hosts, as GNU parallel's `--sshlogin`
    /// does (default: none, every worker on this machine). Each remote
    /// host is reached over one ssh connection (a ControlMaster), which
    /// every worker there shares; [`Host::local`] (`:`) puts workers on
    /// this machine, started by the pool's start method. A host's worker
    /// count is its entry's, else [`workers`](PoolBuilder::workers) per
    /// host, else its core count (asked over the connection). The build
    /// connects to every host first, and fails with [`PoolError::Host`]
    /// for one that cannot be reached or lacks the worker program. Remote
    /// workers talk over their ssh sessions, or with [`Transport::Tcp`]
    /// over TCP connections of their own; [`Transport::Socket`] cannot
    /// reach them.
    pub fn hosts(mut self, hosts: Vec<Host>) -> Self {
        self.hosts = hosts;
        self
    }

    /// How remote workers are started (default: `ssh`, then `fibpool
    /// worker` on the far side).
    pub fn ssh(mut self, ssh: Ssh) -> Self {
        self.ssh = ssh;
        self
    }

    /// Starts the pool's thread, which starts the workers. Returns once
    /// every worker is spawned (not ready: a batch sends a worker its first
    /// chunks while it is still starting); a spawn call that fails (a
    /// worker command that cannot be spawned at all) is this call's error.
    pub fn build(self) -> Result<Pool, PoolError> {
        let per_host = self.workers;
        let workers = self.workers.unwrap_or_else(default_workers);
        let config = |what: &str| Err(PoolError::Config(what.to_owned()));
        if !(1..=MAX_WORKERS).contains(&workers) {
            return Err(PoolError::Config(format!(
                "a pool has 1 to {MAX_WORKERS} workers, not {workers}"
            )));
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.in_flight) {
            return Err(PoolError::Config(format!(
                "1 to {MAX_IN_FLIGHT} chunks may be in flight per worker, not {}",
                self.in_flight
            )));
        }
        if self.retries == 0 {
            return config("retries must be at least 1");
        }
        if self.spawn_threads == 0 {
            return config("at least one thread must spawn the workers");
        }
        if self.max_tasks_per_child == Some(0) {
            return config("max_tasks_per_child must be at least 1");
        }
        if self.handshake_timeout.is_zero() || self.task_timeout.is_some_and(|t| t.is_zero()) {
            return config("timeouts must be longer than zero");
        }
        let command = match self.command {
            Some(command) => command,
            None => WorkerCommand::this_program().map_err(|source| PoolError::Spawn {
                command: "this program".to_owned(),
                source,
            })?,
        };
        if self.transport == Transport::Socket && self.hosts.iter().any(|h| h.login.is_some()) {
            return config(
                "a local socket cannot reach workers on other hosts: use the pipe or tcp transport",
            );
        }
        if self.transport == Transport::SharedMemory && self.hosts.iter().any(|h| h.login.is_some())
        {
            return config(
                "shared memory cannot reach workers on other hosts: use the pipe or tcp transport",
            );
        }
        let local_workers = self.hosts.is_empty() || self.hosts.iter().any(|h| h.login.is_none());
        if self.transport == Transport::Tcp
            && local_workers
            && self.start_method != StartMethod::Spawn
        {
            return config(
                "the tcp transport reaches spawned workers only: use the spawn start method",
            );
        }
        let (method, timeout) = (self.start_method, self.handshake_timeout);
        let local = || method.launcher(command, timeout);
        let layout = if self.hosts.is_empty() {
            ssh::Layout::local(workers, local()?)
        } else {
            ssh::Layout::hosts(&self.hosts, per_host, &self.ssh, timeout, local)?
        };
        let workers = layout.launchers.len();
        let shared = Arc::new(Shared::default());
        let (tx, thread) = manager::start(
            Config {
                workers,
                launchers: layout.launchers,
                places: layout.places,
                transport: self.transport,
                in_flight: self.in_flight,
                handshake_timeout: self.handshake_timeout,
                task_timeout: self.task_timeout,
                retries: self.retries,
                spawn_threads: self.spawn_threads,
                max_tasks_per_child: self.max_tasks_per_child,
            },
            shared.clone(),
        )?;
        Ok(Pool {
            tx,
            gate: RwLock::new(()),
            shared,
            manager: Mutex::new(Some(thread)),
            size: workers,
            window: workers * self.in_flight * WINDOW_PER_SLOT,
        })
    }
}

/// A pool of worker processes computing Fibonacci numbers, used as Python's
/// `ProcessPoolExecutor` is: [`submit`](Pool::submit) batches and wait on
/// their [`Future`]s, or [`map`](Pool::map) over indices, from any number
/// of threads; then [`shutdown`](Pool::shutdown).
///
/// A worker that dies or hangs is replaced and its chunks computed again,
/// so every value arrives exactly once. What cannot heal fails only the
/// batch it belongs to: a chunk that takes its worker down again and again
/// ([`PoolError::PoisonChunk`]), a worker that breaks the protocol. When no
/// worker can be started any more the pool is [`PoolError::Broken`], and
/// every later call says so.
///
/// By default workers are this very program started again with
/// `FIBPOOL_WORKER=1`, so `main` must begin with [`crate::run_if_worker`]
/// (as a Python program using the "spawn" start method guards its main
/// module). The pool's own thread starts every worker, so a pool may be
/// built on one thread and used and dropped on others.
///
/// Dropping a pool that was not shut down kills and reaps its workers at
/// once, and its unfinished batches fail with [`PoolError::Dropped`]; after
/// `shutdown(false, _)` the pool finishes its batches in the background
/// instead, then stops. No worker process outlives the pool either way.
///
/// ```rust,standalone_crate
/// use fibpool_coordinator::Pool;
/// use num_bigint::BigUint;
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     // In a worker copy of this program, serve the pool and exit here.
///     fibpool_coordinator::run_if_worker();
///
///     let pool = Pool::new(2)?;
///     let values: Vec<BigUint> = pool.map([10, 100, 0, 1]).collect::<Result<_, _>>()?;
///     assert_eq!(values[0], BigUint::from(55u32));
///     assert_eq!(values[1].to_string(), "354224848179261915075");
///     assert_eq!(values[2..], [BigUint::ZERO, BigUint::from(1u32)]);
///
///     let future = pool.submit(1000..1003)?;
///     assert_eq!(future.result()?.len(), 3);
///     pool.shutdown(true, false)?;
///     Ok(())
/// }
/// ```
pub struct Pool {
    tx: ToManager,
    /// Taken shared to submit a batch and exclusively to shut down, so a
    /// batch is either queued before the shutdown (and then run) or refused.
    gate: RwLock<()>,
    shared: Arc<Shared>,
    manager: Mutex<Option<JoinHandle<()>>>,
    size: usize,
    /// Chunks a fed batch keeps out by default.
    window: usize,
}

/// One value as a run delivers it: its place in the batch, its index, and
/// its bytes in the run's encoding (borrowed from the frame it came in).
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub position: u64,
    pub index: u64,
    pub value: &'a [u8],
}

/// One chunk's values as [`Pool::run_chunks`] delivers them.
pub struct ChunkValues<'a> {
    plan: &'a ChunkPlan,
    values: &'a Values,
}

impl<'a> ChunkValues<'a> {
    /// How many values the chunk holds.
    pub fn len(&self) -> u64 {
        self.plan.count
    }

    pub fn is_empty(&self) -> bool {
        self.plan.count == 0
    }

    /// The chunk's values in order, with their places and indices.
    pub fn items(&self) -> impl Iterator<Item = Item<'a>> + use<'a> {
        let (plan, values) = (self.plan, self.values);
        // The manager checked the count against the plan.
        plan.indices()
            .enumerate()
            .map_while(move |(offset, index)| {
                Some(Item {
                    position: plan.first_position + offset as u64,
                    index,
                    value: values.get(offset)?,
                })
            })
    }
}

/// How [`Pool::run`] cuts a batch and hands values back.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Indices per chunk; `None` for guided chunks (see [`guided_chunk_size`]).
    pub chunk_size: Option<NonZeroU64>,
    pub encoding: Encoding,
    /// Values in input order, or as their chunks finish.
    pub ordered: bool,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    pub tasks: u64,
    pub chunks: u64,
    /// The fixed chunk size, or `None` for guided chunks.
    pub chunk_size: Option<u64>,
    /// Workers the pool replaced during the run (it counts them pool-wide).
    pub worker_restarts: u64,
    /// Chunks the pool sent again during the run.
    pub retried_chunks: u64,
    /// Workers retired by `max_tasks_per_child` during the run.
    pub recycled: u64,
}

impl Pool {
    /// A pool of `workers` processes started with [`WorkerCommand::this_program`].
    pub fn new(workers: usize) -> Result<Pool, PoolError> {
        Pool::builder().workers(workers).build()
    }

    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of workers.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Why the pool can no longer compute, once it cannot.
    pub fn broken(&self) -> Option<PoolError> {
        self.shared.broken.get().cloned().map(PoolError::Broken)
    }

    /// Counts over the pool's life: restarts, retries, recycled workers.
    pub fn counts(&self) -> PoolCounts {
        self.shared.counts()
    }

    /// Submits a batch and returns at once with its [`Future`]. Indices
    /// above [`MAX_INDEX`](fibpool_protocol::MAX_INDEX) are refused here, before anything is sent.
    pub fn submit(&self, indices: impl IntoIterator<Item = u64>) -> Result<Future, PoolError> {
        self.submit_tasks(indices.into_iter().collect())
    }

    /// [`Pool::submit`] for a batch already held as a [`TaskList`].
    pub fn submit_tasks(&self, tasks: TaskList) -> Result<Future, PoolError> {
        check_held(&tasks, self.size)?;
        let _gate = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        self.usable()?;
        let id = self.next_job();
        let len = tasks.len();
        let state = future::FutureState::new();
        self.send(Msg::Submit(Box::new(Job {
            id,
            encoding: Encoding::Raw,
            source: Source::Tasks {
                tasks,
                cursor: Cursor::default(),
                size: ChunkSize::Guided { workers: self.size },
            },
            sink: Sink::Future(state.clone()),
        })))?;
        Ok(Future::new(state, self.tx.clone(), id, len))
    }

    /// F(n) for every index, in input order, as a lazy iterator: the input
    /// is read only as chunks are needed (it may be endless), guided chunks
    /// by default, and at most a bounded number of chunks out at a time
    /// ([`Map::buffersize`]). An error ends the iteration after the values
    /// before it; the rest of the batch is dropped.
    pub fn map<I: IntoIterator<Item = u64>>(&self, indices: I) -> Map<'_, I::IntoIter> {
        Map::new(self, indices.into_iter())
    }

    /// As [`Pool::map`], yielding `(n, F(n))` as chunks finish.
    pub fn map_unordered<I: IntoIterator<Item = u64>>(
        &self,
        indices: I,
    ) -> MapUnordered<'_, I::IntoIter> {
        MapUnordered::new(self, indices.into_iter())
    }

    /// Computes every index of `tasks` and hands each value to `sink`, in
    /// input order unless `options.ordered` is false, in the encoding asked
    /// for. A `sink` error stops the run and is returned as
    /// [`PoolError::Sink`]; the pool stays usable. Every value is delivered
    /// exactly once, and memory stays bounded by a window of chunks.
    pub fn run(
        &self,
        tasks: &TaskList,
        options: &RunOptions,
        mut sink: impl FnMut(Item<'_>) -> io::Result<()>,
    ) -> Result<RunSummary, PoolError> {
        self.run_chunks(tasks, options, |chunk| {
            chunk.items().try_for_each(&mut sink)
        })
    }

    /// [`Pool::run`], handing over a chunk's values at a time, all borrowed
    /// from the frames they came in: a sink can write them out together
    /// (`write_vectored`) without copying any.
    pub fn run_chunks(
        &self,
        tasks: &TaskList,
        options: &RunOptions,
        mut sink: impl FnMut(&ChunkValues<'_>) -> io::Result<()>,
    ) -> Result<RunSummary, PoolError> {
        self.usable()?;
        check_batch(tasks, options.encoding, self.size)?;
        let chunk_size = options.chunk_size.map(NonZeroU64::get);
        let size = chunk_size.map_or(ChunkSize::Guided { workers: self.size }, ChunkSize::Fixed);
        let before = self.counts();
        let mut cursor = Cursor::default();
        let mut stream = Stream::new(self, options.encoding, options.ordered);
        let budget = stream::chunk_budget(self.window);
        loop {
            if stream.half_empty(self.window) {
                let (mut batch, mut bytes) = (Vec::new(), 0);
                while stream.has_room(self.window, batch.len(), bytes) {
                    match cursor.next(tasks, size, options.encoding, budget) {
                        Some(plan) => {
                            bytes += plan.answer_bound(options.encoding);
                            batch.push(plan);
                        }
                        None => break,
                    }
                }
                stream.feed(batch)?;
            }
            let Some((plan, outcome)) = stream.next() else {
                break;
            };
            let values = outcome?;
            sink(&ChunkValues {
                plan: &plan,
                values: &values,
            })
            .map_err(PoolError::Sink)?;
        }
        let after = self.counts();
        Ok(RunSummary {
            tasks: tasks.len(),
            chunks: cursor.chunks(),
            chunk_size,
            worker_restarts: after.worker_restarts - before.worker_restarts,
            retried_chunks: after.retried_chunks - before.retried_chunks,
            recycled: after.recycled - before.recycled,
        })
    }

    /// Stops taking batches, like Python's `Executor.shutdown`: a batch
    /// submitted before it runs, one after it is refused with
    /// [`PoolError::ShutDown`]. With `cancel_futures`, submitted batches not
    /// yet started are cancelled. With `wait`, returns once every submitted
    /// batch and every chunk already handed to the pool has finished and
    /// every worker has exited and been reaped, with the first worker that
    /// exited badly as the error; without, returns at once and the pool
    /// finishes in the background. A `run` or `map` in progress elsewhere
    /// hands the pool its batch a window at a time: it gets the values of
    /// what it had handed over, then [`PoolError::ShutDown`] (as Python's
    /// `map` with a `buffersize`).
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) -> Result<(), PoolError> {
        let (reply, done) = mpsc::channel();
        let sent = {
            let _gate = self.gate.write().unwrap_or_else(PoisonError::into_inner);
            self.shared.shutting_down.store(true, Ordering::SeqCst);
            self.tx.send(Msg::Shutdown {
                cancel_futures,
                reply,
            })
        };
        if sent.is_err() || !wait {
            return Ok(());
        }
        let outcome = done.recv().unwrap_or(Ok(()));
        // Joined with the lock held: a second caller waits here until the
        // first has seen the pool's thread end (its workers and fork server
        // reaped), rather than returning while they are still there.
        let mut thread = self.manager.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(thread) = thread.take() {
            let _ = thread.join();
        }
        outcome
    }

    /// Every worker process's stats: those the pool no longer runs (with how
    /// they ended), then those it does. After a waited-for shutdown, the
    /// final figures, shutdown phase included.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        let (reply, stats) = mpsc::channel();
        if self.tx.send(Msg::Stats(reply)).is_ok()
            && let Ok(stats) = stats.recv()
        {
            return stats;
        }
        self.shared
            .final_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default()
    }

    /// The interface measurement tools use.
    pub fn probe(&self) -> probe::Probe<'_> {
        probe::Probe::new(self)
    }

    fn next_job(&self) -> JobId {
        self.shared.next_job.fetch_add(1, Ordering::Relaxed)
    }

    /// `Ok` while the pool takes batches.
    fn usable(&self) -> Result<(), PoolError> {
        if let Some(broken) = self.broken() {
            return Err(broken);
        }
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(PoolError::ShutDown);
        }
        Ok(())
    }

    fn send(&self, msg: Msg) -> Result<(), PoolError> {
        self.tx.send(msg).map_err(|_| self.gone())
    }

    /// Why the manager thread no longer answers.
    fn gone(&self) -> PoolError {
        match self.broken() {
            Some(broken) => broken,
            None if self.shared.shutting_down.load(Ordering::SeqCst) => PoolError::ShutDown,
            None => PoolError::ManagerGone,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        board::forget_recycled();
        let thread = self
            .manager
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(thread) = thread else { return };
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            // Shut down without waiting: it finishes in the background.
            return;
        }
        let _ = self.tx.send(Msg::Kill);
        let _ = thread.join();
    }
}
