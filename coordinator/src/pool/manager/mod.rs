//! The pool's own thread, which owns the workers and every batch, as the
//! management thread of CPython's `ProcessPoolExecutor` does: callers on any
//! thread send it messages, the workers' reader threads send it their
//! events, and it alone schedules, recovers and replies. It also starts
//! every worker, so workers never die with a caller's thread.
//!
//! Scheduling keeps up to `in_flight` chunks on every worker, breadth first,
//! chunks to retry first, then batches in the order they came. A worker
//! still starting gets its chunks too: they wait in its pipe behind the
//! coordinator's Hello, so it computes as soon as it is up.
//!
//! Every chunk sent has a pool-wide id, never reused by another chunk:
//! an answer can only ever be taken for the chunk it names, whatever
//! batches came and went in between. A worker computes its chunks in order,
//! so when it dies the oldest chunk it holds is the one it was on: that
//! chunk's failure count goes up, and every chunk it held is sent again.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fibpool_protocol::{Chunk, Encoding, Request, Response, Run};

mod batches;
mod end;
mod events;
mod probes;
mod recovery;
mod schedule;

use crate::pool::board::{Outcome, Values};
use crate::pool::child::describe_status;
use crate::pool::error::{PoolError, WorkerName};
use crate::pool::future::{FutureState, Parts};
use crate::pool::launch::{Launch, Spawners};
use crate::pool::stats::{PoolCounts, WorkerStats};
use crate::pool::tasks::{ChunkPlan, ChunkSize, Cursor, RunsAt, TaskList};
use crate::pool::transport::Transport;
use crate::pool::worker::{Event, WorkerProcess};

/// How long workers get to exit after Shutdown before they are killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a worker whose output ended gets to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// The pause before starting again in a slot whose last worker failed by
/// itself, doubled for each such failure in a row: a worker command that
/// always fails is not restarted in a tight loop, and a passing shortage
/// (of descriptors, of processes) has time to pass.
const RESPAWN_BACKOFF: Duration = Duration::from_millis(100);
/// A worker that ends with nothing in flight this soon after its handshake,
/// having answered nothing, failed by itself; later, it was stopped (killed
/// from outside while idle, say), and that is no mark against the slot.
const FRUITLESS_WINDOW: Duration = Duration::from_secs(1);
/// How often a request left half written is written on.
const DRAIN_POLL: Duration = Duration::from_millis(1);
/// A worker still starting this long after its spawn (about 100 times what
/// a start takes on the project's machine) may have its chunks taken over
/// by an idle worker.
const STEAL_AFTER: Duration = Duration::from_millis(50);
/// The index of the warm-up task: F(10) = 55.
const WARM_UP_INDEX: u64 = 10;
/// Runs per Measure request: a share of millions of repeats travels in
/// requests of a few tens of kilobytes each, as many at a time as the
/// worker's budget allows.
const MEASURE_RUNS: usize = crate::pool::tasks::MAX_RUNS;
/// Stats of processes the pool no longer runs, kept for its callers; older
/// ones are counted and dropped.
const RETIRED_KEPT: usize = 4096;
/// Chunk ids a worker answered, remembered to tell "twice" from "never given".
const ANSWERED_KEPT: usize = 64;

/// A batch's pool-wide number.
pub(crate) type JobId = u64;

/// The manager's queue holds this many messages at most: callers and
/// reader threads wait for room (backpressure), so no caller can make the
/// coordinator's memory grow without bound.
const QUEUE: usize = 1024;

/// Where messages to the manager go.
pub(crate) type ToManager = mpsc::SyncSender<Msg>;

/// Messages handled in a row before the manager looks at its deadlines,
/// probes, shutdown and respawns again.
const BURST: usize = 256;

/// The pool as configured.
pub(crate) struct Config {
    pub workers: usize,
    pub launcher: Arc<dyn Launch>,
    pub transport: Transport,
    pub in_flight: usize,
    pub handshake_timeout: Duration,
    pub task_timeout: Option<Duration>,
    pub retries: u32,
    pub spawn_threads: usize,
    pub max_tasks_per_child: Option<u64>,
}

/// What the pool's callers and the manager share without a message.
#[derive(Default)]
pub(crate) struct Shared {
    pub broken: OnceLock<Arc<PoolError>>,
    pub shutting_down: AtomicBool,
    pub next_job: AtomicU64,
    pub counts: Mutex<PoolCounts>,
    /// Every process's stats, once the manager has finished.
    pub final_stats: Mutex<Option<Vec<WorkerStats>>>,
}

impl Shared {
    pub fn counts(&self) -> PoolCounts {
        *self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, add: impl FnOnce(&mut PoolCounts)) {
        add(&mut self.counts.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// A message to the manager.
pub(crate) enum Msg {
    /// From a worker's reader thread.
    Event(Event),
    /// From a spawner thread: a worker of the initial set, or why not.
    Spawned {
        slot: usize,
        id: u64,
        result: Result<WorkerProcess, PoolError>,
    },
    Submit(Job),
    /// More chunks for a fed batch.
    Feed {
        job: JobId,
        chunks: Vec<ChunkPlan>,
    },
    /// The batch's owner is done with it: drop what is left.
    Cancel(JobId),
    Probe(ProbeCall),
    Stats(Sender<Vec<WorkerStats>>),
    Shutdown {
        cancel_futures: bool,
        reply: Sender<Result<(), PoolError>>,
    },
    /// The pool is dropped: kill everything now.
    Kill,
}

/// A batch.
pub(crate) struct Job {
    pub id: JobId,
    pub encoding: Encoding,
    pub source: Source,
    pub sink: Sink,
}

/// A future's batch is always finished: one dropped without an outcome
/// (a message the manager never read, a bug) fails rather than leaving
/// its caller waiting.
impl Drop for Job {
    fn drop(&mut self) {
        if let Sink::Future(state) = &self.sink {
            state.finish(Err(PoolError::ShutDown));
        }
    }
}

/// Where a batch's chunks come from.
pub(crate) enum Source {
    /// Cut here, from the whole batch ([`crate::Pool::submit`]).
    Tasks {
        tasks: TaskList,
        cursor: Cursor,
        size: ChunkSize,
    },
    /// Cut by the caller and fed a window at a time (`map`, `run`).
    Fed(VecDeque<ChunkPlan>),
}

/// Where a batch's outcome goes.
pub(crate) enum Sink {
    Future(Arc<FutureState>),
    /// Each chunk's outcome, to the caller that fed it.
    Stream(Sender<Delivery>),
}

/// One chunk of a fed batch, done.
pub(crate) struct Delivery {
    /// The chunk's place in its batch.
    pub chunk: u64,
    pub outcome: Outcome,
}

/// Calls that measurement tools make ([`crate::pool::probe`]).
pub(crate) enum ProbeCall {
    WaitReady(Sender<Result<(), PoolError>>),
    WarmUp(Sender<Result<(), PoolError>>),
    Ceiling {
        tasks: TaskList,
        encoding: Encoding,
        reply: Sender<Result<f64, PoolError>>,
    },
    ReadySeconds(Sender<Option<f64>>),
}

/// Starts the manager thread, which starts the workers. Returns once every
/// worker's spawn call has returned, so that a command that cannot be
/// started at all is the build's error.
pub(crate) fn start(
    config: Config,
    shared: Arc<Shared>,
) -> Result<(ToManager, JoinHandle<()>), PoolError> {
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let manager_tx = tx.clone();
    if on_main_thread() && config.spawn_threads <= 1 {
        // The process's main thread outlives every worker (its end is the
        // process's), so it may start them itself: back to back, before the
        // pool's thread exists, as fast as a start can be (starting them
        // from a thread created for it measured 0.1 ms more per worker in
        // `fibpool startup`, the spawn call 263-324 us against 168-178 us).
        // A program that ends its main thread alone (a raw `SYS_exit`,
        // which Rust's `main` never does) would take these workers with
        // it; the pool replaces them as it replaces any lost worker.
        let mut manager = Manager::new(config, rx, manager_tx, shared);
        if let Err(e) = manager.start_workers() {
            manager.finish(PoolError::Dropped);
            return Err(e);
        }
        let thread = std::thread::Builder::new()
            .name("fibpool-pool".into())
            .spawn(move || {
                manager.run();
                manager.finish(PoolError::Dropped);
            })
            .map_err(|source| PoolError::Spawn {
                command: "the pool's manager thread".to_owned(),
                source,
            })?;
        return Ok((tx, thread));
    }
    let (started_tx, started_rx) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("fibpool-pool".into())
        .spawn(move || {
            let mut manager = Manager::new(config, rx, manager_tx, shared);
            let first = manager.start_workers();
            let ok = first.is_ok();
            let _ = started_tx.send(first);
            if ok {
                manager.run();
            }
            manager.finish(PoolError::Dropped);
        })
        .map_err(|source| PoolError::Spawn {
            command: "the pool's manager thread".to_owned(),
            source,
        })?;
    match started_rx.recv() {
        Ok(Ok(())) => Ok((tx, thread)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(PoolError::ManagerGone)
        }
    }
}

/// True on the process's main thread, whose end is the process's own.
fn on_main_thread() -> bool {
    // SAFETY: gettid and getpid have no preconditions.
    unsafe { libc::gettid() == libc::getpid() }
}

/// A chunk sent and not yet done.
struct Issued {
    job: JobId,
    encoding: Encoding,
    plan: ChunkPlan,
    /// Times in a row it took its worker down.
    failures: u32,
}

/// A batch the manager holds.
struct Entry {
    job: Job,
    started: bool,
    /// In `ready_jobs`: it may have chunks to hand out.
    queued: bool,
    /// Chunks handed out and not yet done.
    outstanding: u64,
    /// A future's finished chunks.
    parts: Parts,
}

impl Entry {
    /// True while the batch has chunks out or to hand out: a fed batch
    /// whose caller has fed nothing more is idle, and shutdown need not
    /// wait for it.
    fn busy(&self) -> bool {
        self.outstanding > 0 || !self.exhausted()
    }

    fn exhausted(&self) -> bool {
        match &self.job.source {
            Source::Tasks { tasks, cursor, .. } => cursor.is_done(tasks),
            Source::Fed(queue) => queue.is_empty(),
        }
    }
}

/// A worker process and what the pool knows of it.
struct Worker {
    process: WorkerProcess,
    /// Ids of the chunks sent and not yet answered, oldest first: the order
    /// it must answer them in.
    in_flight: Vec<u64>,
    /// Chunks among them that another worker took over while this one was
    /// still starting: their answers here are dropped.
    disowned: HashSet<u64>,
    /// The last chunk ids it answered.
    answered: VecDeque<u64>,
    /// Measure requests out and not yet answered.
    measuring: usize,
    /// Since when the worker has been on its oldest chunk in flight.
    busy_since: Option<Instant>,
    /// Chunks sent to it, for `max_tasks_per_child`.
    assigned: u64,
    chunks: u64,
    busy_ns: u64,
    /// What its unanswered requests count for against its budget, in all
    /// and each (by chunk id; Measure requests in order).
    unread: usize,
    costs: HashMap<u64, usize>,
    measure_costs: VecDeque<usize>,
}

impl Worker {
    fn new(process: WorkerProcess) -> Self {
        Worker {
            process,
            in_flight: Vec::new(),
            disowned: HashSet::new(),
            answered: VecDeque::new(),
            measuring: 0,
            busy_since: None,
            assigned: 0,
            chunks: 0,
            busy_ns: 0,
            unread: 0,
            costs: HashMap::new(),
            measure_costs: VecDeque::new(),
        }
    }

    /// True when a request of `len` bytes may be written now: however
    /// little the worker reads, the write cannot block. A worker with
    /// nothing unread takes any one request (each is far below a pipe).
    fn fits(&self, len: usize) -> bool {
        let budget = self.process.budget;
        self.unread == 0 || self.unread + budget.cost(len) <= budget.capacity
    }

    /// A request of `len` bytes was written: for chunk `wire`, or a Measure.
    fn wrote(&mut self, wire: Option<u64>, len: usize) {
        let cost = self.process.budget.cost(len);
        self.unread += cost;
        match wire {
            Some(wire) => {
                self.costs.insert(wire, cost);
            }
            None => self.measure_costs.push_back(cost),
        }
    }

    /// Chunk `wire` was answered: the worker has read its request.
    fn read_chunk(&mut self, wire: u64) {
        if let Some(cost) = self.costs.remove(&wire) {
            self.unread -= cost;
        }
    }

    /// A Measure request was answered.
    fn read_measure(&mut self) {
        if let Some(cost) = self.measure_costs.pop_front() {
            self.unread -= cost;
        }
    }

    fn stats(&self, ended: Option<String>) -> WorkerStats {
        WorkerStats {
            slot: self.process.name.slot,
            pid: self.process.name.pid,
            phases: self.process.life.phases(),
            chunks: self.chunks,
            busy_seconds: self.busy_ns as f64 * 1e-9,
            ended,
        }
    }

    fn name(&self) -> WorkerName {
        self.process.name
    }
}

/// One place in the pool: the worker in it, and how its starts went.
#[derive(Default)]
struct Slot {
    worker: Option<Worker>,
    /// Workers in a row that failed by themselves: before their handshake,
    /// or soon after it with nothing to do, not killed from outside. An
    /// answer resets it; `retries` of them and the slot is given up.
    fruitless: u32,
    /// Workers in a row that ended soon with nothing done, killed from
    /// outside included: how long to wait before the next start.
    quick: u32,
    /// Too many failed in a row: no more are started here.
    given_up: bool,
}

/// How a worker was lost.
enum Loss {
    /// Its output ended: it died, or closed its streams.
    Closed,
    HandshakeTimeout,
    TaskTimeout,
    /// It broke the protocol: `error` fails the batch of `chunk` (else of
    /// its oldest chunk), which another worker of the same kind would fail too.
    Fault {
        error: PoolError,
        chunk: Option<u64>,
    },
}

struct WarmUp {
    reply: Sender<Result<(), PoolError>>,
    /// Per slot: the chunk sent, once sent, and whether it was answered.
    sent: Vec<Option<u64>>,
    answered: Vec<bool>,
}

struct Ceiling {
    reply: Sender<Result<f64, PoolError>>,
    tasks: TaskList,
    encoding: Encoding,
    started: Option<Instant>,
    /// Each live worker's share, and how far it has been sent.
    shares: Vec<(usize, TaskList, RunsAt)>,
    /// Measure requests sent and not answered.
    outstanding: usize,
}

struct Manager {
    config: Config,
    rx: Receiver<Msg>,
    /// For reader threads and spawner threads.
    tx: ToManager,
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    /// Recycled workers told to shut down, not yet reaped.
    retiring: Vec<Worker>,
    jobs: BTreeMap<JobId, Entry>,
    /// Batches that may have chunks to hand out, oldest first.
    ready_jobs: VecDeque<JobId>,
    chunks: HashMap<u64, Issued>,
    /// Chunks to send again, first out first.
    retry: VecDeque<u64>,
    /// Chunks taken to send that no worker had room for yet: sent first.
    unsent: VecDeque<u64>,
    next_chunk: u64,
    next_process: u64,
    /// Slots waiting for a worker to be started, and not before when.
    pending_spawns: Vec<(usize, Instant)>,
    /// Processes a spawner thread is starting, and their early events.
    expected: HashSet<u64>,
    early: HashMap<u64, Vec<Event>>,
    retired: VecDeque<WorkerStats>,
    started: Instant,
    warm_up: Option<WarmUp>,
    ceiling: Option<Ceiling>,
    ready_waiters: Vec<Sender<Result<(), PoolError>>>,
    /// Set once shutdown is asked for: who waits for it.
    shutdown: Option<Vec<Sender<Result<(), PoolError>>>>,
    /// Finished chunks of fed batches, not yet handed to their callers.
    outbox: Vec<(JobId, Sender<Delivery>, Delivery)>,
    exit: bool,
    /// Last: the threads that started workers outlive them.
    spawners: Option<Spawners>,
}

impl Manager {
    fn new(config: Config, rx: Receiver<Msg>, tx: ToManager, shared: Arc<Shared>) -> Self {
        let slots = (0..config.workers).map(|_| Slot::default()).collect();
        Manager {
            next_process: config.workers as u64,
            config,
            rx,
            tx,
            shared,
            slots,
            retiring: Vec::new(),
            jobs: BTreeMap::new(),
            ready_jobs: VecDeque::new(),
            chunks: HashMap::new(),
            retry: VecDeque::new(),
            unsent: VecDeque::new(),
            next_chunk: 0,
            pending_spawns: Vec::new(),
            expected: HashSet::new(),
            early: HashMap::new(),
            retired: VecDeque::new(),
            started: Instant::now(),
            warm_up: None,
            ceiling: None,
            ready_waiters: Vec::new(),
            shutdown: None,
            outbox: Vec::new(),
            exit: false,
            spawners: None,
        }
    }

    /// Starts the first worker here, or every worker from spawner threads;
    /// returns how the first spawn went.
    fn start_workers(&mut self) -> Result<(), PoolError> {
        self.started = Instant::now();
        let n = self.config.workers;
        // Back to back, with the caller waiting: nothing else runs while
        // the first workers start (a caller woken in between, or a worker
        // sent its first chunk, took a CPU from them: 0.1-0.3 ms more to
        // pool_ready for 2 workers, measured with `fibpool startup`).
        if self.config.spawn_threads <= 1 || n == 1 {
            for slot in 0..n {
                let process = self.spawn(slot, slot as u64)?;
                self.slots[slot].worker = Some(Worker::new(process));
            }
            return Ok(());
        }
        let (launcher, transport, timeout) = (
            self.config.launcher.clone(),
            self.config.transport,
            self.config.handshake_timeout,
        );
        let events = self.tx.clone();
        let spawn = Arc::new(move |slot: usize| {
            WorkerProcess::spawn(
                &*launcher,
                transport,
                timeout,
                slot,
                slot as u64,
                events.clone(),
                Msg::Event,
            )
        });
        let done = {
            let tx = self.tx.clone();
            move |slot: usize, result| {
                tx.send(Msg::Spawned {
                    slot,
                    id: slot as u64,
                    result,
                })
                .is_ok()
            }
        };
        self.expected.extend(0..n as u64);
        let spawners =
            Spawners::start(n, self.config.spawn_threads, spawn, done).map_err(|source| {
                PoolError::Spawn {
                    command: "a spawner thread".to_owned(),
                    source,
                }
            })?;
        self.spawners = Some(spawners);
        // Until every spawn is in, only spawners and readers send.
        let mut first_error = None;
        while !self.expected.is_empty() {
            match self.rx.recv() {
                Ok(Msg::Spawned { slot, id, result }) => match result {
                    Ok(process) => self.install(slot, process),
                    Err(e) => {
                        self.expected.remove(&id);
                        self.early.remove(&id);
                        first_error.get_or_insert(e);
                    }
                },
                Ok(other) => self.handle(other),
                Err(_) => return Err(PoolError::ManagerGone),
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn spawn(&self, slot: usize, id: u64) -> Result<WorkerProcess, PoolError> {
        WorkerProcess::spawn(
            &*self.config.launcher,
            self.config.transport,
            self.config.handshake_timeout,
            slot,
            id,
            self.tx.clone(),
            Msg::Event,
        )
    }

    /// Puts a spawned process in its slot and applies what it said already.
    fn install(&mut self, slot: usize, process: WorkerProcess) {
        let id = process.id;
        self.expected.remove(&id);
        self.slots[slot].worker = Some(Worker::new(process));
        for event in self.early.remove(&id).unwrap_or_default() {
            self.on_event(event);
        }
    }

    fn run(&mut self) {
        while !self.exit {
            // Every message waiting, each followed by a dispatch: a worker
            // that answered gets its next chunk before anything else is
            // looked at.
            for _ in 0..BURST {
                match self.rx.try_recv() {
                    Ok(msg) => self.handle(msg),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
                if self.exit {
                    return;
                }
                self.dispatch();
                // However many messages come, callers get their chunks.
                self.deliver();
            }
            self.drain();
            self.expire(Instant::now());
            self.dispatch();
            self.deliver();
            self.progress_probes();
            if self.finish_shutdown() {
                return;
            }
            let now = Instant::now();
            if let Some(i) = self.pending_spawns.iter().position(|&(_, at)| at <= now) {
                let (slot, _) = self.pending_spawns.remove(i);
                self.respawn(slot);
                continue;
            }
            let msg = match self.next_deadline() {
                None => self.rx.recv().ok(),
                Some(at) => self
                    .rx
                    .recv_timeout(at.saturating_duration_since(Instant::now()))
                    .ok(),
            };
            if let Some(msg) = msg {
                self.handle(msg);
                self.dispatch();
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Event(event) => self.on_event(event),
            Msg::Spawned { slot, id, result } => match result {
                Ok(process) => self.install(slot, process),
                Err(error) => {
                    self.expected.remove(&id);
                    self.early.remove(&id);
                    self.start_failed(slot, error);
                }
            },
            Msg::Submit(job) => self.submit(job),
            Msg::Feed { job, chunks } => self.feed(job, chunks),
            Msg::Cancel(job) => {
                self.drop_job(job);
            }
            Msg::Probe(call) => self.probe(call),
            Msg::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Msg::Shutdown {
                cancel_futures,
                reply,
            } => {
                self.shared.shutting_down.store(true, Ordering::SeqCst);
                if cancel_futures {
                    let pending: Vec<JobId> = self
                        .jobs
                        .iter()
                        .filter(|(_, e)| !e.started)
                        .filter(|(_, e)| match &e.job.sink {
                            Sink::Future(state) => state.cancel(),
                            Sink::Stream(_) => false,
                        })
                        .map(|(&id, _)| id)
                        .collect();
                    for id in pending {
                        self.drop_job(id);
                    }
                }
                self.shutdown.get_or_insert_with(Vec::new).push(reply);
            }
            Msg::Kill => self.exit = true,
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        // Only a panic leaves anything here: no future may wait for ever.
        if !self.jobs.is_empty() || self.slots.iter().any(|s| s.worker.is_some()) {
            let _ = self.shared.broken.set(Arc::new(PoolError::ManagerGone));
            self.finish(PoolError::ManagerGone);
        }
    }
}

/// Fails a whole batch: its future, or every chunk its caller waits for
/// (those sent, `issued`, and those still queued).
fn fail_whole(job: &Job, issued: impl Iterator<Item = u64>, error: &PoolError) {
    match &job.sink {
        Sink::Future(state) => state.finish(Err(error.clone())),
        Sink::Stream(tx) => {
            let queued = match &job.source {
                Source::Fed(queue) => queue.iter().map(|p| p.id).collect(),
                Source::Tasks { .. } => Vec::new(),
            };
            for chunk in issued.chain(queued) {
                let _ = tx.send(Delivery {
                    chunk,
                    outcome: Err(error.clone()),
                });
            }
        }
    }
}

/// A worker's fault in words, for its stats and its slot's error, with
/// `when` after what it did ("sent a bad frame before its handshake: ...").
fn fault_cause(error: &PoolError, when: &str) -> String {
    use std::fmt::Write;
    let mut cause = match error {
        PoolError::WorkerProtocol { .. } => format!("sent a bad frame{when}"),
        PoolError::WorkerFailed { message, .. } => format!("refused a chunk{when}: {message}"),
        PoolError::WorkerMisbehaved { what, .. } => format!("broke the protocol{when}: {what}"),
        other => format!("{other}{when}"),
    };
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        let _ = write!(cause, ": {s}");
        source = s.source();
    }
    cause
}

/// The error a probe waiting on a lost worker gets.
fn loss_error(worker: WorkerName, loss: &Loss, cause: &str, was_ready: bool) -> PoolError {
    match loss {
        Loss::Fault { error, .. } => error.clone(),
        _ => PoolError::WorkerExited {
            worker,
            status: cause.to_owned(),
            when: if was_ready {
                "during a measurement"
            } else {
                "before its handshake"
            },
        },
    }
}

fn describe(response: &Response<'_>) -> String {
    match response {
        Response::Ready(_) => "its handshake".to_owned(),
        Response::Computed(result) => format!("a result for chunk {}", result.id),
        Response::Failed(failure) => format!("a failure ({})", failure.message),
        Response::Echo(reply) => format!("an echo (seq {})", reply.seq),
        Response::Measured(measured) => format!("a measurement (id {})", measured.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::WorkerCommand;
    use crate::pool::launch::SpawnCommand;
    use crate::pool::stats::Phases;

    /// A manager that never starts a worker: for its bookkeeping alone.
    fn idle_manager() -> Manager {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let config = Config {
            workers: 1,
            launcher: Arc::new(SpawnCommand(WorkerCommand::new("true"))),
            transport: Transport::Pipe,
            in_flight: 2,
            handshake_timeout: Duration::from_secs(1),
            task_timeout: None,
            retries: 3,
            spawn_threads: 1,
            max_tasks_per_child: None,
        };
        Manager::new(config, rx, tx, Arc::new(Shared::default()))
    }

    fn stats(pid: u32) -> WorkerStats {
        WorkerStats {
            slot: 0,
            pid,
            phases: Phases {
                spawn_seconds: 0.0,
                exec_seconds: None,
                init_seconds: None,
                ready_seconds: None,
                first_task_seconds: None,
                shutdown_seconds: None,
            },
            chunks: 0,
            busy_seconds: 0.0,
            ended: Some("recycled".into()),
        }
    }

    #[test]
    fn the_stats_of_retired_processes_are_bounded_and_the_rest_counted() {
        let mut manager = idle_manager();
        let n = RETIRED_KEPT as u32 + 904;
        for pid in 0..n {
            manager.retire(stats(pid));
        }
        let kept = manager.stats();
        assert_eq!(kept.len(), RETIRED_KEPT);
        // The newest are kept.
        assert_eq!(kept.first().unwrap().pid, 904);
        assert_eq!(kept.last().unwrap().pid, n - 1);
        assert_eq!(manager.shared.counts().stats_dropped, 904);
    }
}
