//! The pool's manager, which owns the workers and every batch, as the
//! management thread of CPython's `ProcessPoolExecutor` does: callers on any
//! thread send it messages, the workers' reader threads send it their
//! events. It lives behind a lock: a message of the steady state (a batch,
//! its chunks, a worker's answer) that finds the lock free and nothing
//! queued ahead of it is handled on its sender's thread, so a chunk goes
//! out and an answer comes back without waiting for a thread to wake;
//! anything else is queued for the pool's own thread, which alone keeps
//! time, recovers, shuts down and starts workers, so workers never die
//! with a caller's thread.
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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SendError, Sender};
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
/// The same, for a worker lost with chunks of its own: its process closes
/// its descriptors after its memory is gone, just before it exits, so a
/// worker still there this long after its output ended closed it and
/// lives on (and the pool's thread waits no longer for it).
const CLOSED_GRACE: Duration = Duration::from_millis(100);
/// How often a worker on a chunk is looked at, to find one that has
/// exited while something it started holds its output open.
const LIFE_LOOK: Duration = Duration::from_millis(250);
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
/// coordinator's memory grow without bound. Its slots are made with it, at
/// the pool's start: 256 of about 100 bytes are 7 pages to fault in (1024
/// slots of 280 bytes, 72 pages, cost `fibpool run` 0.1-0.2 ms).
const QUEUE: usize = 256;

/// Where messages to the manager go.
#[derive(Clone)]
pub(crate) struct ToManager {
    tx: mpsc::SyncSender<Msg>,
    core: Arc<Core>,
}

/// The manager, and what its queue holds.
struct Core {
    /// `None` before the manager is first started and after it finished.
    manager: Mutex<Option<Manager>>,
    /// Messages queued and not yet handled. While any is, no message is
    /// handled on its sender's thread: each sender's messages are handled
    /// in the order it sent them, whichever way they went.
    queued: AtomicUsize,
}

impl ToManager {
    fn new() -> (ToManager, Receiver<Msg>) {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let core = Arc::new(Core {
            manager: Mutex::new(None),
            queued: AtomicUsize::new(0),
        });
        (ToManager { tx, core }, rx)
    }

    /// Hands the manager `msg`: handled here and now when it can be, else
    /// queued for the pool's thread (waiting for room when the queue is
    /// full). An error only once the manager is gone.
    pub fn send(&self, msg: Msg) -> Result<(), SendError<Msg>> {
        match self.handle_here(msg) {
            None => Ok(()),
            Some(msg) => self.queue(msg),
        }
    }

    fn queue(&self, msg: Msg) -> Result<(), SendError<Msg>> {
        self.core.queued.fetch_add(1, Ordering::SeqCst);
        self.tx.send(msg).inspect_err(|_| {
            self.core.queued.fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// Handles `msg` on this thread if it is a message of the steady state,
    /// the manager is free and in its steady state, and nothing is queued
    /// ahead; else gives it back. Wakes the pool's thread when what was
    /// done needs it sooner than it planned to look.
    fn handle_here(&self, msg: Msg) -> Option<Msg> {
        if !msg.is_steady() || self.core.queued.load(Ordering::SeqCst) > 0 {
            return Some(msg);
        }
        // Declared before the lock's guard, so dropped after it: a panic
        // under the lock poisons it, and the pool's thread, woken, ends
        // the manager (rather than sleep on, with callers waiting).
        struct WakeOnPanic<'a>(&'a ToManager);
        impl Drop for WakeOnPanic<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    let core = &self.0.core;
                    core.queued.fetch_add(1, Ordering::SeqCst);
                    if self.0.tx.try_send(Msg::Wake).is_err() {
                        core.queued.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
        }
        let _wake = WakeOnPanic(self);
        let Ok(mut guard) = self.core.manager.try_lock() else {
            return Some(msg);
        };
        let Some(manager) = guard.as_mut().filter(|m| m.steady()) else {
            return Some(msg);
        };
        // Under the lock: a message queued before it was taken is still counted.
        if self.core.queued.load(Ordering::SeqCst) > 0 {
            return Some(msg);
        }
        manager.handle(msg);
        manager.dispatch();
        manager.progress_probes();
        // A shutdown asked for here tells the workers at once; the pool's
        // thread reaps them.
        manager.tell_shutdown();
        manager.deliver();
        let wake = manager.wants_its_thread();
        drop(guard);
        if wake {
            let _ = self.queue(Msg::Wake);
        }
        None
    }
}

/// Messages handled in a row before the manager looks at its deadlines,
/// probes, shutdown and respawns again.
const BURST: usize = 256;

/// The pool as configured.
pub(crate) struct Config {
    pub workers: usize,
    /// How each slot's worker is started, and where: slots with the same
    /// place run on the same host.
    pub launchers: Vec<Arc<dyn Launch>>,
    pub places: Vec<usize>,
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
        result: Result<Box<WorkerProcess>, PoolError>,
    },
    Submit(Box<Job>),
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
    /// Look at the deadlines, starts and shutdown again.
    Wake,
}

impl Msg {
    /// The messages that may be handled on their sender's thread: none of
    /// them waits or starts a worker.
    fn is_steady(&self) -> bool {
        match self {
            Msg::Submit(_)
            | Msg::Feed { .. }
            | Msg::Cancel(_)
            | Msg::Probe(_)
            | Msg::Stats(_)
            | Msg::Shutdown { .. } => true,
            Msg::Event(event) => !matches!(event, Event::Closed { .. } | Event::Misbehaved { .. }),
            _ => false,
        }
    }
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
    ReadyAt(Sender<Option<Instant>>),
    ServerStartSeconds(Sender<Option<f64>>),
}

/// Starts the manager and its thread, and the workers. Returns once every
/// worker's spawn call has returned, so that a command that cannot be
/// started at all is the build's error.
pub(crate) fn start(
    config: Config,
    shared: Arc<Shared>,
) -> Result<(ToManager, JoinHandle<()>), PoolError> {
    let (to, rx) = ToManager::new();
    let core = to.core.clone();
    let thread_failed = |source| PoolError::Spawn {
        command: "the pool's manager thread".to_owned(),
        source,
    };
    if on_main_thread() && config.spawn_threads <= 1 {
        // The process's main thread outlives every worker (its end is the
        // process's), so it may start them itself: back to back, before the
        // pool's thread exists, as fast as a start can be (starting them
        // from a thread created for it measured 0.1 ms more per worker in
        // `fibpool startup`, the spawn call 263-324 us against 168-178 us).
        // A program that ends its main thread alone (a raw `SYS_exit`,
        // which Rust's `main` never does) would take these workers with
        // it; the pool replaces them as it replaces any lost worker.
        let mut manager = Manager::new(config, to.clone(), shared);
        if let Err(e) = manager.start_workers(&rx) {
            manager.finish(PoolError::Dropped, Some(&rx));
            return Err(e);
        }
        *lock(&core.manager) = Some(manager);
        let served = core.clone();
        return match std::thread::Builder::new()
            .name("fibpool-pool".into())
            .spawn(move || serve(&served, rx))
        {
            Ok(thread) => Ok((to, thread)),
            Err(source) => {
                if let Some(mut manager) = lock(&core.manager).take() {
                    manager.finish(PoolError::Dropped, None);
                }
                Err(thread_failed(source))
            }
        };
    }
    let (started_tx, started_rx) = mpsc::sync_channel(1);
    let manager_to = to.clone();
    let thread = std::thread::Builder::new()
        .name("fibpool-pool".into())
        .spawn(move || {
            let mut manager = Manager::new(config, manager_to, shared);
            let first = manager.start_workers(&rx);
            let ok = first.is_ok();
            if ok {
                *lock(&core.manager) = Some(manager);
                let _ = started_tx.send(first);
                serve(&core, rx);
            } else {
                manager.finish(PoolError::Dropped, Some(&rx));
                let _ = started_tx.send(first);
            }
        })
        .map_err(thread_failed)?;
    match started_rx.recv() {
        Ok(Ok(())) => Ok((to, thread)),
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

fn lock(manager: &Mutex<Option<Manager>>) -> std::sync::MutexGuard<'_, Option<Manager>> {
    manager.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The pool's thread: takes the manager's turns, and between them waits
/// for a message or its next deadline, without the lock. Finishes the
/// manager when it is done.
fn serve(core: &Core, rx: Receiver<Msg>) {
    // However this thread ends, a panic included, the manager goes with
    // it: its drop fails what is left and kills the workers.
    struct Ends<'a>(&'a Core);
    impl Drop for Ends<'_> {
        fn drop(&mut self) {
            // Out of the lock first: dropping it reaps the workers.
            let manager = lock(&self.0.manager).take();
            drop(manager);
        }
    }
    let _ends = Ends(core);
    let mut got = None;
    loop {
        // Poisoned by a panic on a sender's thread: nothing in the manager
        // can be trusted but its drop.
        let Ok(mut guard) = core.manager.lock() else {
            return;
        };
        let Some(manager) = guard.as_mut() else {
            return;
        };
        if let Some(msg) = got.take() {
            core.queued.fetch_sub(1, Ordering::SeqCst);
            manager.handle(msg);
            manager.dispatch();
        }
        let Some(wait) = manager.turn(&rx, &core.queued) else {
            if let Some(mut manager) = guard.take() {
                drop(guard);
                manager.finish(PoolError::Dropped, Some(&rx));
            }
            return;
        };
        manager.asleep_until = wait;
        drop(guard);
        got = match wait {
            None => rx.recv().ok(),
            Some(at) => rx
                .recv_timeout(at.saturating_duration_since(Instant::now()))
                .ok(),
        };
    }
}

/// How a worker's reader thread hands its events on.
fn to_manager(tx: ToManager) -> impl Fn(Event) -> bool + Send + 'static {
    move |event| tx.send(Msg::Event(event)).is_ok()
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
    /// The place (host) of the worker it was last lost with: sent again
    /// elsewhere when another place has a worker.
    lost_on: Option<usize>,
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
    /// When its process was last looked at ([`LIFE_LOOK`]).
    looked_at: Option<Instant>,
    /// Its output ended in the middle of a frame: how.
    torn: Option<String>,
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
    /// Counts `ns` that the worker says it spent computing, never more in
    /// all than it has existed: what a worker says is not trusted (one said
    /// 2^64 - 1, which a report gave as 18446744073 busy seconds).
    fn add_busy(&mut self, ns: u64) {
        let lived = self.process.life.spawned_at.elapsed().as_nanos();
        let lived = u64::try_from(lived).unwrap_or(u64::MAX);
        self.busy_ns = self.busy_ns.saturating_add(ns).min(lived);
    }

    fn new(process: WorkerProcess) -> Self {
        Worker {
            process,
            in_flight: Vec::new(),
            disowned: HashSet::new(),
            answered: VecDeque::new(),
            measuring: 0,
            busy_since: None,
            looked_at: None,
            torn: None,
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
            host: self.process.life.host.clone(),
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
    /// For reader threads and spawner threads.
    tx: ToManager,
    /// When the pool's thread, waiting, will look again by itself (`None`:
    /// only for a message).
    asleep_until: Option<Instant>,
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
    /// Workers told to finish (or killed, when `true`), and by when they
    /// must have exited.
    stopping: Option<(Vec<(Worker, bool)>, Instant)>,
    /// Finished chunks of fed batches, not yet handed to their callers.
    outbox: Vec<(JobId, Sender<Delivery>, Delivery)>,
    exit: bool,
    /// Last: the threads that started workers outlive them.
    spawners: Option<Spawners>,
}

impl Manager {
    fn new(config: Config, tx: ToManager, shared: Arc<Shared>) -> Self {
        let slots = (0..config.workers).map(|_| Slot::default()).collect();
        Manager {
            next_process: config.workers as u64,
            config,
            tx,
            asleep_until: None,
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
            stopping: None,
            outbox: Vec::new(),
            exit: false,
            spawners: None,
        }
    }

    /// Starts the first worker here, or every worker from spawner threads;
    /// returns how the first spawn went.
    fn start_workers(&mut self, rx: &Receiver<Msg>) -> Result<(), PoolError> {
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
        let (launchers, transport, timeout) = (
            self.config.launchers.clone(),
            self.config.transport,
            self.config.handshake_timeout,
        );
        let events = self.tx.clone();
        let started = self.started;
        let spawn = Arc::new(move |slot: usize| {
            WorkerProcess::spawn(
                &*launchers[slot],
                transport,
                timeout,
                slot,
                slot as u64,
                started,
                to_manager(events.clone()),
            )
        });
        let done = {
            let tx = self.tx.clone();
            move |slot: usize, result: Result<WorkerProcess, PoolError>| {
                tx.send(Msg::Spawned {
                    slot,
                    id: slot as u64,
                    result: result.map(Box::new),
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
            let msg = rx.recv();
            if msg.is_ok() {
                self.tx.core.queued.fetch_sub(1, Ordering::SeqCst);
            }
            match msg {
                Ok(Msg::Spawned { slot, id, result }) => match result {
                    Ok(process) => self.install(slot, *process),
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
            &*self.config.launchers[slot],
            self.config.transport,
            self.config.handshake_timeout,
            slot,
            id,
            self.started,
            to_manager(self.tx.clone()),
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

    /// One turn of the pool's thread: every message queued, each followed by
    /// a dispatch (a worker that answered gets its next chunk before
    /// anything else is looked at), then deadlines, probes, shutdown and
    /// starts. `None` once the manager is done, else when to look again
    /// (`Some(None)`: only for a message).
    fn turn(&mut self, rx: &Receiver<Msg>, queued: &AtomicUsize) -> Option<Option<Instant>> {
        loop {
            if self.exit {
                return None;
            }
            for _ in 0..BURST {
                let Ok(msg) = rx.try_recv() else {
                    break;
                };
                queued.fetch_sub(1, Ordering::SeqCst);
                self.handle(msg);
                if self.exit {
                    return None;
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
                return None;
            }
            let now = Instant::now();
            if let Some(i) = self.pending_spawns.iter().position(|&(_, at)| at <= now) {
                let (slot, _) = self.pending_spawns.remove(i);
                self.respawn(slot);
                continue;
            }
            return Some(self.next_deadline());
        }
    }

    /// True when neither shutdown nor the first start is under way: what a
    /// message of the steady state does then needs nothing of the pool's
    /// thread but, at most, to look at its deadlines sooner, or to reap the
    /// workers of a shutdown it asked for.
    fn steady(&self) -> bool {
        !self.exit && self.shutdown.is_none() && self.expected.is_empty()
    }

    /// After a message handled on its sender's thread: true when the pool's
    /// thread has something to do before it planned to look (a deadline
    /// sooner, a worker to start, a request to finish writing).
    fn wants_its_thread(&self) -> bool {
        if self.exit || self.shutdown.is_some() {
            return true;
        }
        match (self.next_deadline(), self.asleep_until) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(next), Some(planned)) => next < planned,
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Event(event) => self.on_event(event),
            Msg::Spawned { slot, id, result } => match result {
                Ok(process) => self.install(slot, *process),
                Err(error) => {
                    self.expected.remove(&id);
                    self.early.remove(&id);
                    self.start_failed(slot, error);
                }
            },
            Msg::Submit(job) => self.submit(*job),
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
            Msg::Wake => {}
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        // Only a panic leaves anything here: no future may wait for ever.
        if !self.jobs.is_empty()
            || self.slots.iter().any(|s| s.worker.is_some())
            || self.stopping.is_some()
        {
            let _ = self.shared.broken.set(Arc::new(PoolError::ManagerGone));
            self.finish(PoolError::ManagerGone, None);
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
        PoolError::WorkerProtocol { source, .. } => {
            format!("{}{when}", super::error::protocol_fault(source))
        }
        PoolError::WorkerFailed { message, .. } => format!("refused a chunk{when}: {message}"),
        PoolError::WorkerMisbehaved { what, .. } => format!("broke the protocol{when}: {what}"),
        other => format!("{other}{when}"),
    };
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        let _ = write!(cause, ": {s}");
        source = s.source();
    }
    if let Some(text) = text_for_a_frame(error) {
        let _ = write!(
            cause,
            " (its first bytes read as text, \"{text}\": does a login script print to stdout?)"
        );
    }
    cause
}

/// A frame header that is the start of a line of text (a shell's greeting
/// on a remote worker's stdout, say): that text.
fn text_for_a_frame(error: &PoolError) -> Option<String> {
    let PoolError::WorkerProtocol {
        source: fibpool_protocol::Error::TooLarge { len, .. },
        ..
    } = error
    else {
        return None;
    };
    let bytes = u32::try_from(*len).ok()?.to_le_bytes();
    bytes
        .iter()
        .all(|b| b.is_ascii_graphic() || *b == b' ')
        .then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// The error a probe waiting on a lost worker gets.
fn loss_error(
    worker: WorkerName,
    loss: &Loss,
    cause: &str,
    was_ready: bool,
    handshake_timeout: Duration,
) -> PoolError {
    match loss {
        Loss::Fault { error, .. } => error.clone(),
        Loss::HandshakeTimeout => PoolError::HandshakeTimeout {
            worker,
            timeout: handshake_timeout,
        },
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
        Response::Failed(failure) => format!(
            "a failure ({})",
            crate::pool::error::one_line(&failure.message)
        ),
        Response::Echo(reply) => format!("an echo (seq {})", reply.seq),
        Response::Measured(measured) => format!("a measurement (id {})", measured.id),
        Response::Part(part) => format!("a part of a result for chunk {}", part.id),
        Response::Piece(piece) => format!("a piece of a value for chunk {}", piece.id),
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
        let (tx, _rx) = ToManager::new();
        let config = Config {
            workers: 1,
            launchers: vec![Arc::new(SpawnCommand::new(WorkerCommand::new("true")))],
            places: vec![0],
            transport: Transport::Pipe,
            in_flight: 2,
            handshake_timeout: Duration::from_secs(1),
            task_timeout: None,
            retries: 3,
            spawn_threads: 1,
            max_tasks_per_child: None,
        };
        Manager::new(config, tx, Arc::new(Shared::default()))
    }

    /// A chunk lost with a worker on one host goes to a worker on another
    /// while there is one, and back to the first host once there is none.
    #[test]
    fn a_chunk_lost_on_a_host_is_sent_to_another_host_first() {
        let sleeper: Arc<dyn Launch> =
            Arc::new(SpawnCommand::new(WorkerCommand::new("sleep").arg("30")));
        let (tx, _rx) = ToManager::new();
        let config = Config {
            workers: 2,
            launchers: vec![sleeper.clone(), sleeper],
            places: vec![0, 1],
            transport: Transport::Pipe,
            in_flight: 2,
            handshake_timeout: Duration::from_secs(1),
            task_timeout: None,
            retries: 3,
            spawn_threads: 1,
            max_tasks_per_child: None,
        };
        let mut manager = Manager::new(config, tx, Arc::new(Shared::default()));
        for slot in 0..2 {
            let mut process = manager.spawn(slot, slot as u64).expect("sleep starts");
            // As if its handshake had come.
            let hello = fibpool_protocol::WorkerHello {
                version: fibpool_protocol::PROTOCOL_VERSION,
                pid: process.name.pid,
                main_entered_ns: 0,
                ready_ns: 0,
            };
            process.life.ready = Some((Instant::now(), hello));
            manager.slots[slot].worker = Some(Worker::new(process));
        }
        let plan = ChunkPlan {
            id: 0,
            first_position: 0,
            count: 1,
            runs: Vec::new(),
        };
        manager.chunks.insert(
            7,
            Issued {
                job: 0,
                encoding: Encoding::Raw,
                plan,
                failures: 1,
                lost_on: Some(0),
            },
        );
        manager.retry.push_back(7);
        assert_eq!(
            manager.next_chunk(0),
            None,
            "not back to the host it was lost on"
        );
        assert_eq!(manager.retry.len(), 1, "it waits for the other host");
        assert_eq!(manager.next_chunk(1), Some(7), "the other host takes it");
        // With no ready worker on the other host, the first host takes it again.
        manager.retry.push_back(7);
        manager.slots[1]
            .worker
            .as_mut()
            .expect("a worker")
            .process
            .life
            .ready = None;
        assert_eq!(manager.next_chunk(0), Some(7));
    }

    fn stats(pid: u32) -> WorkerStats {
        WorkerStats {
            slot: 0,
            pid,
            host: None,
            phases: Phases {
                started_seconds: 0.0,
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
