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

use super::board::{Outcome, Values};
use super::child::describe_status;
use super::error::{PoolError, WorkerName};
use super::future::{FutureState, Parts};
use super::launch::{Launch, Spawners};
use super::stats::{PoolCounts, WorkerStats};
use super::tasks::{ChunkPlan, ChunkSize, Cursor, TaskList};
use super::transport::Transport;
use super::worker::{Event, WorkerProcess};

/// How long workers get to exit after Shutdown before they are killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a worker whose output ended gets to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// The index of the warm-up task: F(10) = 55.
const WARM_UP_INDEX: u64 = 10;
/// Runs per Measure request: a share of millions of repeats travels in
/// requests of about a megabyte each.
const MEASURE_RUNS: usize = 1 << 16;
/// Stats of processes the pool no longer runs, kept for its callers; older
/// ones are counted and dropped.
const RETIRED_KEPT: usize = 4096;
/// Chunk ids a worker answered, remembered to tell "twice" from "never given".
const ANSWERED_KEPT: usize = 64;

/// A batch's pool-wide number.
pub(crate) type JobId = u64;

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

/// Starts the manager thread, which starts the workers. Returns once the
/// first worker's spawn call has returned, so that a command that cannot
/// be started at all is the build's error.
pub(crate) fn start(
    config: Config,
    shared: Arc<Shared>,
) -> Result<(Sender<Msg>, JoinHandle<()>), PoolError> {
    let (tx, rx) = mpsc::channel();
    let (started_tx, started_rx) = mpsc::sync_channel(1);
    let manager_tx = tx.clone();
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
    /// Ids of the chunks sent and not yet answered, oldest first.
    in_flight: Vec<u64>,
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
}

impl Worker {
    fn new(process: WorkerProcess) -> Self {
        Worker {
            process,
            in_flight: Vec::new(),
            answered: VecDeque::new(),
            measuring: 0,
            busy_since: None,
            assigned: 0,
            chunks: 0,
            busy_ns: 0,
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
    /// Workers in a row that failed before their handshake.
    start_failures: u32,
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
    outstanding: usize,
}

struct Manager {
    config: Config,
    rx: Receiver<Msg>,
    /// For reader threads and spawner threads.
    tx: Sender<Msg>,
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
    next_chunk: u64,
    next_process: u64,
    /// Slots waiting for a worker to be started.
    pending_spawns: VecDeque<usize>,
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
    fn new(config: Config, rx: Receiver<Msg>, tx: Sender<Msg>, shared: Arc<Shared>) -> Self {
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
            next_chunk: 0,
            pending_spawns: VecDeque::new(),
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
        if self.config.spawn_threads <= 1 || n == 1 {
            let first = self.spawn(0, 0)?;
            self.slots[0].worker = Some(Worker::new(first));
            self.pending_spawns.extend(1..n);
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
        // Until the first spawn is in, only spawners and readers send.
        loop {
            match self.rx.recv() {
                Ok(Msg::Spawned { slot, id, result }) => {
                    let first = match result {
                        Ok(process) => {
                            self.install(slot, process);
                            Ok(())
                        }
                        Err(e) => {
                            self.expected.remove(&id);
                            self.early.remove(&id);
                            Err(e)
                        }
                    };
                    return first;
                }
                Ok(other) => self.handle(other),
                Err(_) => return Err(PoolError::ManagerGone),
            }
        }
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
            loop {
                match self.rx.try_recv() {
                    Ok(msg) => self.handle(msg),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
                if self.exit {
                    return;
                }
            }
            self.expire(Instant::now());
            self.dispatch();
            self.deliver();
            self.progress_probes();
            if self.finish_shutdown() {
                return;
            }
            if let Some(slot) = self.pending_spawns.pop_front() {
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

    // ---- batches ----

    fn submit(&mut self, job: Job) {
        let refusal = match (self.shared.broken.get(), &self.shutdown) {
            (Some(cause), _) => Some(PoolError::Broken(cause.clone())),
            (None, Some(_)) => Some(PoolError::ShutDown),
            (None, None) => None,
        };
        if let Some(error) = refusal {
            return fail_whole(&job, std::iter::empty(), &error);
        }
        let id = job.id;
        let entry = Entry {
            job,
            started: false,
            queued: false,
            outstanding: 0,
            parts: Vec::new(),
        };
        if entry.exhausted() {
            // An empty batch is done at once.
            if let Sink::Future(state) = &entry.job.sink {
                state.start();
                state.finish(Ok(Vec::new()));
                return;
            }
        }
        self.jobs.insert(id, entry);
        self.enqueue(id);
    }

    fn enqueue(&mut self, id: JobId) {
        if let Some(entry) = self.jobs.get_mut(&id)
            && !entry.queued
            && !entry.exhausted()
        {
            entry.queued = true;
            self.ready_jobs.push_back(id);
        }
    }

    fn feed(&mut self, id: JobId, chunks: Vec<ChunkPlan>) {
        let Some(entry) = self.jobs.get_mut(&id) else {
            return;
        };
        let refusal = match (self.shared.broken.get(), &self.shutdown) {
            (Some(cause), _) => Some(PoolError::Broken(cause.clone())),
            (None, Some(_)) => Some(PoolError::ShutDown),
            (None, None) => None,
        };
        if let Some(refusal) = refusal {
            if let Sink::Stream(tx) = &entry.job.sink {
                for plan in chunks {
                    let _ = tx.send(Delivery {
                        chunk: plan.id,
                        outcome: Err(refusal.clone()),
                    });
                }
            }
            return;
        }
        if let Source::Fed(queue) = &mut entry.job.source {
            queue.extend(chunks);
        }
        self.enqueue(id);
    }

    /// Drops a batch and everything left of it; answers still on their way
    /// are dropped when they come.
    fn drop_job(&mut self, id: JobId) -> Option<Entry> {
        let entry = self.jobs.remove(&id)?;
        self.chunks.retain(|_, issued| issued.job != id);
        let chunks = &self.chunks;
        self.retry.retain(|wire| chunks.contains_key(wire));
        self.ready_jobs.retain(|&j| j != id);
        Some(entry)
    }

    /// Ends a batch with an error: a future fails; a fed batch's caller
    /// hears it for every chunk it still waits for.
    fn fail_job(&mut self, id: JobId, error: PoolError) {
        let issued: Vec<u64> = self
            .chunks
            .values()
            .filter(|i| i.job == id)
            .map(|i| i.plan.id)
            .collect();
        if let Some(entry) = self.drop_job(id) {
            fail_whole(&entry.job, issued.into_iter(), &error);
        }
    }

    /// Ends one chunk with an error: a future's whole batch fails with it; a
    /// fed batch hears of that chunk, in its turn.
    fn fail_chunk(&mut self, wire: u64, error: PoolError) {
        let Some(issued) = self.chunks.remove(&wire) else {
            return;
        };
        self.retry.retain(|&id| id != wire);
        self.finish_chunk(issued, Err(error));
    }

    /// A chunk is done, with its values or an error.
    fn finish_chunk(&mut self, issued: Issued, outcome: Outcome) {
        let Some(entry) = self.jobs.get_mut(&issued.job) else {
            return;
        };
        entry.outstanding -= 1;
        match &entry.job.sink {
            Sink::Future(_) => match outcome {
                Ok(values) => {
                    entry.parts.push((issued.plan.first_position, values));
                    if entry.outstanding == 0 && entry.exhausted() {
                        let entry = self.jobs.remove(&issued.job).expect("present");
                        if let Sink::Future(state) = entry.job.sink {
                            state.finish(Ok(entry.parts));
                        }
                    }
                }
                Err(error) => self.fail_job(issued.job, error),
            },
            // Held until the workers have their next chunks: waking the
            // caller is a system call the workers should not wait behind.
            Sink::Stream(tx) => self.outbox.push((
                issued.job,
                tx.clone(),
                Delivery {
                    chunk: issued.plan.id,
                    outcome,
                },
            )),
        }
    }

    /// Hands the callers the chunks that finished.
    fn deliver(&mut self) {
        for (job, tx, delivery) in std::mem::take(&mut self.outbox) {
            if tx.send(delivery).is_err() {
                // Its caller is gone.
                self.drop_job(job);
            }
        }
    }

    /// The next chunk to send: one to retry, else the oldest batch's next.
    fn next_chunk(&mut self) -> Option<u64> {
        while let Some(wire) = self.retry.pop_front() {
            if self.chunks.contains_key(&wire) {
                self.shared.count(|c| c.retried_chunks += 1);
                return Some(wire);
            }
        }
        while let Some(&id) = self.ready_jobs.front() {
            let Some(entry) = self.jobs.get_mut(&id) else {
                self.ready_jobs.pop_front();
                continue;
            };
            if !entry.started {
                entry.started = true;
                if let Sink::Future(state) = &entry.job.sink
                    && !state.start()
                {
                    // Cancelled before it ran.
                    self.drop_job(id);
                    continue;
                }
            }
            let encoding = entry.job.encoding;
            let plan = match &mut entry.job.source {
                Source::Tasks {
                    tasks,
                    cursor,
                    size,
                } => cursor.next(tasks, *size, encoding),
                Source::Fed(queue) => queue.pop_front(),
            };
            if entry.exhausted() {
                entry.queued = false;
                self.ready_jobs.pop_front();
            }
            let Some(plan) = plan else { continue };
            entry.outstanding += 1;
            let wire = self.next_chunk;
            self.next_chunk += 1;
            self.chunks.insert(
                wire,
                Issued {
                    job: id,
                    encoding,
                    plan,
                    failures: 0,
                },
            );
            return Some(wire);
        }
        None
    }

    // ---- scheduling ----

    /// Sends chunks to workers with room, breadth first, so that every
    /// worker has one before any has two.
    fn dispatch(&mut self) {
        if self.shared.broken.get().is_some() {
            return;
        }
        for depth in 1..=self.config.in_flight {
            for slot in 0..self.slots.len() {
                let Some(worker) = &self.slots[slot].worker else {
                    continue;
                };
                let recycling = self
                    .config
                    .max_tasks_per_child
                    .is_some_and(|max| worker.assigned >= max);
                if worker.in_flight.len() >= depth || worker.measuring > 0 || recycling {
                    continue;
                }
                let Some(wire) = self.next_chunk() else {
                    return;
                };
                self.send_chunk(slot, wire);
            }
        }
    }

    fn send_chunk(&mut self, slot: usize, wire: u64) {
        let issued = &self.chunks[&wire];
        let request = Request::Compute(Chunk {
            id: wire,
            encoding: issued.encoding,
            runs: issued.plan.runs.clone(),
        });
        let worker = self.slots[slot].worker.as_mut().expect("a worker");
        if worker.in_flight.is_empty() {
            worker.busy_since = Some(Instant::now());
        }
        worker.in_flight.push(wire);
        worker.assigned += 1;
        match worker.process.send(&request) {
            Ok(()) => {}
            // Its reader reports the end of its output, and recovery follows.
            Err(e) if e.is_disconnect() => {}
            // Nothing was written: the coordinator's own request is at fault.
            Err(source @ fibpool_protocol::Error::TooLarge { .. }) => {
                worker.in_flight.pop();
                worker.assigned -= 1;
                let plan = &self.chunks[&wire].plan;
                let error = PoolError::Request {
                    chunk: plan.id,
                    indices: plan.describe(),
                    source,
                };
                self.fail_chunk(wire, error);
            }
            // A stream left half-written cannot be trusted: end the worker;
            // its reader reports the end, and recovery follows.
            Err(_) => worker.process.kill(),
        }
    }

    /// The first deadline a worker has: its handshake if it has not
    /// completed one, else its current chunk's task timeout.
    fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.worker.as_ref())
            .filter_map(|w| self.deadline(w))
            .min()
    }

    fn deadline(&self, worker: &Worker) -> Option<Instant> {
        if !worker.process.is_ready() {
            Some(worker.process.life.spawned_at + self.config.handshake_timeout)
        } else {
            Some(worker.busy_since? + self.config.task_timeout?)
        }
    }

    /// Replaces every worker past its deadline.
    fn expire(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            let Some(worker) = &self.slots[slot].worker else {
                continue;
            };
            if self.deadline(worker).is_some_and(|at| at <= now) {
                let loss = if worker.process.is_ready() {
                    Loss::TaskTimeout
                } else {
                    Loss::HandshakeTimeout
                };
                self.lose(slot, loss);
            }
        }
    }

    // ---- events ----

    fn slot_of(&self, process: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.worker.as_ref().is_some_and(|w| w.process.id == process))
    }

    fn on_event(&mut self, event: Event) {
        let process = match &event {
            Event::Response { worker, .. }
            | Event::Computed { worker, .. }
            | Event::Closed { worker, .. } => *worker,
        };
        if let Some(slot) = self.slot_of(process) {
            return self.on_worker_event(slot, event);
        }
        if let Some(i) = self.retiring.iter().position(|w| w.process.id == process) {
            // A recycled worker: its output ends as it exits.
            if matches!(event, Event::Closed { .. }) {
                let mut worker = self.retiring.swap_remove(i);
                let _ = worker.process.reap(EXIT_GRACE);
                self.retire(worker.stats(Some("recycled".to_owned())));
            }
            return;
        }
        if self.expected.contains(&process) {
            self.early.entry(process).or_default().push(event);
        }
        // Anything else is from a process already replaced: stale.
    }

    fn on_worker_event(&mut self, slot: usize, event: Event) {
        match event {
            Event::Closed { error, .. } => match error.filter(|e| !e.is_disconnect()) {
                Some(source) => {
                    let worker = self.worker(slot).name();
                    let error = PoolError::WorkerProtocol { worker, source };
                    self.lose(slot, Loss::Fault { error, chunk: None });
                }
                None => self.lose(slot, Loss::Closed),
            },
            Event::Response { response, at, .. } => self.on_response(slot, response, at),
            Event::Computed {
                id,
                busy_ns,
                values,
                at,
                ..
            } => self.on_computed(slot, id, busy_ns, values, at),
        }
    }

    fn worker(&mut self, slot: usize) -> &mut Worker {
        self.slots[slot].worker.as_mut().expect("a live worker")
    }

    fn misbehaved(&mut self, slot: usize, what: String, chunk: Option<u64>) {
        let worker = self.worker(slot).name();
        let error = PoolError::WorkerMisbehaved { worker, what };
        self.lose(slot, Loss::Fault { error, chunk });
    }

    fn on_computed(&mut self, slot: usize, wire: u64, busy_ns: u64, values: Values, at: Instant) {
        let w = self.worker(slot);
        if !w.process.is_ready() {
            let what = format!("sent a result for chunk {wire} before its handshake");
            return self.misbehaved(slot, what, None);
        }
        let Some(at_slot) = w.in_flight.iter().position(|&id| id == wire) else {
            let what = if w.answered.contains(&wire) {
                format!("answered chunk {wire} twice")
            } else {
                format!("answered chunk {wire}, which it was not given")
            };
            return self.misbehaved(slot, what, None);
        };
        w.in_flight.remove(at_slot);
        if w.answered.len() == ANSWERED_KEPT {
            w.answered.pop_front();
        }
        w.answered.push_back(wire);
        w.busy_since = (!w.in_flight.is_empty()).then_some(at);
        w.chunks += 1;
        w.busy_ns += busy_ns;
        w.process.life.first_result.get_or_insert(at);

        if self.warm_up_answer(slot, wire, &values) {
            return;
        }
        match self.chunks.remove(&wire) {
            // Its batch is gone (cancelled, or failed): nothing to do.
            None => {}
            Some(issued) if values.len() as u64 != issued.plan.count => {
                let what = format!(
                    "returned {} values for chunk {wire} of {} indices",
                    values.len(),
                    issued.plan.count
                );
                self.chunks.insert(wire, issued);
                return self.misbehaved(slot, what, Some(wire));
            }
            Some(issued) => self.finish_chunk(issued, Ok(values)),
        }
        self.maybe_recycle(slot);
    }

    fn on_response(&mut self, slot: usize, response: Response<'static>, at: Instant) {
        let w = self.worker(slot);
        match response {
            Response::Ready(hello) if !w.process.is_ready() => {
                w.process.life.ready = Some((at, hello));
                // Chunks sent while it was starting: its task timeout runs
                // from now, not from their sending.
                if !w.in_flight.is_empty() {
                    w.busy_since = Some(at);
                }
                self.slots[slot].start_failures = 0;
            }
            Response::Ready(_) => self.misbehaved(slot, "sent a second handshake".into(), None),
            other if !w.process.is_ready() => {
                let what = format!("sent {} before its handshake", describe(&other));
                self.misbehaved(slot, what, None);
            }
            // The reader sends results as Event::Computed from the second
            // frame on, and a first frame is caught above, before the
            // handshake: an error, not a panic, should that ever change.
            Response::Computed(result) => {
                let what = format!(
                    "sent a result for chunk {} outside the result path",
                    result.id
                );
                self.misbehaved(slot, what, None);
            }
            Response::Failed(failure) => {
                let worker = w.name();
                let chunk = failure.chunk.filter(|id| w.in_flight.contains(id));
                let error = PoolError::WorkerFailed {
                    worker,
                    message: failure.message,
                };
                self.lose(slot, Loss::Fault { error, chunk });
            }
            Response::Echo(reply) => {
                let what = format!("sent an echo (seq {}) it was not asked for", reply.seq);
                self.misbehaved(slot, what, None);
            }
            Response::Measured(m) if w.measuring > 0 && m.id == slot as u64 => {
                w.measuring -= 1;
                w.busy_ns += m.busy_ns;
                if let Some(ceiling) = &mut self.ceiling {
                    ceiling.outstanding -= 1;
                }
            }
            Response::Measured(m) => {
                let what = format!("sent a measurement (id {}) it was not asked for", m.id);
                self.misbehaved(slot, what, None);
            }
        }
    }

    /// Retires a worker that has had its `max_tasks_per_child` chunks once
    /// it has answered them all, and starts its successor.
    fn maybe_recycle(&mut self, slot: usize) {
        let Some(max) = self.config.max_tasks_per_child else {
            return;
        };
        let Some(worker) = &self.slots[slot].worker else {
            return;
        };
        if worker.assigned < max || !worker.in_flight.is_empty() {
            return;
        }
        let mut worker = self.slots[slot].worker.take().expect("checked");
        worker.process.shutdown();
        self.retiring.push(worker);
        self.shared.count(|c| c.recycled += 1);
        self.pending_spawns.push_front(slot);
    }

    // ---- recovery ----

    /// A worker is lost: kill and reap it, fail what cannot heal, send its
    /// other chunks again, start its successor.
    fn lose(&mut self, slot: usize, loss: Loss) {
        let mut worker = self.slots[slot].worker.take().expect("a live worker");
        let name = worker.name();
        let was_ready = worker.process.is_ready();
        if !matches!(loss, Loss::Closed) {
            worker.process.kill();
        }
        let status = worker.process.reap(EXIT_GRACE);
        let before = if was_ready {
            ""
        } else {
            " before its handshake"
        };
        let cause = match &loss {
            Loss::Closed => match &status {
                Ok(status) => format!("{}{before}", describe_status(*status)),
                Err(e) => format!("could not be reaped ({e}){before}"),
            },
            Loss::TaskTimeout => format!(
                "spent longer than the task timeout ({:?}) on a chunk",
                self.config.task_timeout.unwrap_or_default()
            ),
            Loss::HandshakeTimeout => format!(
                "did not complete its handshake within {:?}",
                self.config.handshake_timeout
            ),
            Loss::Fault { error, .. } => fault_cause(error, before),
        };
        self.retire(worker.stats(Some(cause.clone())));
        self.probe_lost(slot, || loss_error(name, &loss, &cause, was_ready));

        let mut held = std::mem::take(&mut worker.in_flight);
        held.retain(|id| self.chunks.contains_key(id));
        // Decided first, failed last: whoever waits on a failed batch may
        // look at the counts at once.
        let mut give_up = None;
        let mut failed = None;
        if !was_ready {
            let failures = &mut self.slots[slot].start_failures;
            *failures += 1;
            if *failures >= self.config.retries {
                give_up = Some(PoolError::StartFailed {
                    worker: name,
                    attempts: *failures,
                    cause: cause.clone(),
                });
            }
        } else {
            match loss {
                Loss::Fault { error, chunk } => match chunk.or_else(|| held.first().copied()) {
                    Some(wire) => failed = Some((wire, error)),
                    // Misbehaving with nothing to blame: the slot pays.
                    None => {
                        let failures = &mut self.slots[slot].start_failures;
                        *failures += 1;
                        if *failures >= self.config.retries {
                            give_up = Some(error);
                        }
                    }
                },
                Loss::Closed | Loss::TaskTimeout => {
                    if let Some(&oldest) = held.first() {
                        let issued = self.chunks.get_mut(&oldest).expect("held chunks are live");
                        issued.failures += 1;
                        if issued.failures >= self.config.retries {
                            let error = PoolError::PoisonChunk {
                                chunk: issued.plan.id,
                                indices: issued.plan.describe(),
                                failures: issued.failures,
                                worker: name,
                                cause,
                            };
                            failed = Some((oldest, error));
                        }
                    }
                }
                Loss::HandshakeTimeout => {}
            }
        }
        if let Some((wire, _)) = &failed {
            held.retain(|id| id != wire);
        }
        for &id in held.iter().rev() {
            self.retry.push_front(id);
        }
        match give_up {
            Some(error) => self.give_up(slot, error),
            None if self.exit => {}
            None => {
                self.shared.count(|c| c.worker_restarts += 1);
                self.pending_spawns.push_back(slot);
            }
        }
        if let Some((wire, error)) = failed {
            self.fail_chunk(wire, error);
        }
    }

    /// A spawn call failed for `slot`.
    fn start_failed(&mut self, slot: usize, error: PoolError) {
        self.probe_lost(slot, || error.clone());
        let failures = &mut self.slots[slot].start_failures;
        *failures += 1;
        if *failures >= self.config.retries {
            self.give_up(slot, error);
        } else {
            self.pending_spawns.push_back(slot);
        }
    }

    fn respawn(&mut self, slot: usize) {
        if self.slots[slot].given_up || self.slots[slot].worker.is_some() {
            return;
        }
        let id = self.next_process;
        self.next_process += 1;
        match self.spawn(slot, id) {
            Ok(process) => self.slots[slot].worker = Some(Worker::new(process)),
            Err(error) => self.start_failed(slot, error),
        }
    }

    /// No more workers in `slot`; when no slot has one, the pool is broken.
    fn give_up(&mut self, slot: usize, error: PoolError) {
        self.slots[slot].given_up = true;
        if self.slots.iter().all(|s| s.given_up) {
            self.break_pool(error);
        }
    }

    /// The pool can no longer compute: every batch fails, and so does every
    /// later call.
    fn break_pool(&mut self, cause: PoolError) {
        let cause = self.shared.broken.get_or_init(|| Arc::new(cause)).clone();
        let broken = || PoolError::Broken(cause.clone());
        let ids: Vec<JobId> = self.jobs.keys().copied().collect();
        for id in ids {
            self.fail_job(id, broken());
        }
        for waiter in self.ready_waiters.drain(..) {
            let _ = waiter.send(Err(broken()));
        }
        if let Some(warm) = self.warm_up.take() {
            let _ = warm.reply.send(Err(broken()));
        }
        if let Some(ceiling) = self.ceiling.take() {
            let _ = ceiling.reply.send(Err(broken()));
        }
    }

    fn retire(&mut self, stats: WorkerStats) {
        if self.retired.len() == RETIRED_KEPT {
            self.retired.pop_front();
            self.shared.count(|c| c.stats_dropped += 1);
        }
        self.retired.push_back(stats);
    }

    fn stats(&self) -> Vec<WorkerStats> {
        let mut stats: Vec<WorkerStats> = self.retired.iter().cloned().collect();
        stats.extend(
            self.retiring
                .iter()
                .map(|w| w.stats(Some("recycled".to_owned()))),
        );
        stats.extend(
            self.slots
                .iter()
                .filter_map(|s| s.worker.as_ref())
                .map(|w| w.stats(None)),
        );
        stats
    }

    // ---- probes ----

    fn probe(&mut self, call: ProbeCall) {
        let broken = self.shared.broken.get().cloned();
        match call {
            ProbeCall::WaitReady(reply) => match broken {
                Some(cause) => drop(reply.send(Err(PoolError::Broken(cause)))),
                None => self.ready_waiters.push(reply),
            },
            ProbeCall::WarmUp(reply) => match broken {
                Some(cause) => drop(reply.send(Err(PoolError::Broken(cause)))),
                None => {
                    let n = self.slots.len();
                    self.warm_up = Some(WarmUp {
                        reply,
                        sent: vec![None; n],
                        answered: vec![false; n],
                    });
                }
            },
            ProbeCall::Ceiling {
                tasks,
                encoding,
                reply,
            } => match broken {
                Some(cause) => drop(reply.send(Err(PoolError::Broken(cause)))),
                None => {
                    self.ceiling = Some(Ceiling {
                        reply,
                        tasks,
                        encoding,
                        started: None,
                        outstanding: 0,
                    })
                }
            },
            ProbeCall::ReadySeconds(reply) => {
                let _ = reply.send(self.ready_seconds());
            }
        }
    }

    /// From the first spawn until the last worker was ready, once all are.
    fn ready_seconds(&self) -> Option<f64> {
        let mut last = self.started;
        for slot in &self.slots {
            last = last.max(slot.worker.as_ref()?.process.life.ready_at()?);
        }
        Some((last - self.started).as_secs_f64())
    }

    fn all_ready(&self) -> bool {
        self.slots
            .iter()
            .filter(|s| !s.given_up)
            .all(|s| s.worker.as_ref().is_some_and(|w| w.process.is_ready()))
    }

    /// Moves the probes on: replies when done, sends what became possible.
    fn progress_probes(&mut self) {
        if !self.ready_waiters.is_empty() && self.all_ready() {
            for waiter in self.ready_waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
        }
        self.progress_warm_up();
        self.progress_ceiling();
    }

    /// Sends each worker, as soon as it is ready, one tiny chunk of its own.
    fn progress_warm_up(&mut self) {
        let Some(warm) = &mut self.warm_up else {
            return;
        };
        for (slot, state) in self.slots.iter_mut().enumerate() {
            let Some(worker) = &mut state.worker else {
                continue;
            };
            if warm.sent[slot].is_some() || !worker.process.is_ready() {
                continue;
            }
            let wire = self.next_chunk;
            self.next_chunk += 1;
            warm.sent[slot] = Some(wire);
            if worker.in_flight.is_empty() {
                worker.busy_since = Some(Instant::now());
            }
            worker.in_flight.push(wire);
            let request = Request::Compute(Chunk {
                id: wire,
                encoding: Encoding::Raw,
                runs: vec![Run {
                    start: WARM_UP_INDEX,
                    len: 1,
                }],
            });
            if let Err(e) = worker.process.send(&request)
                && !e.is_disconnect()
            {
                worker.process.kill();
            }
        }
        if warm.answered.iter().all(|&a| a) {
            let warm = self.warm_up.take().expect("present");
            let _ = warm.reply.send(Ok(()));
        }
    }

    /// True when `wire` was a warm-up chunk; checks its answer.
    fn warm_up_answer(&mut self, slot: usize, wire: u64, values: &Values) -> bool {
        let Some(warm) = &mut self.warm_up else {
            return false;
        };
        if warm.sent[slot] != Some(wire) {
            return false;
        }
        warm.answered[slot] = true;
        let answer: Vec<Option<&[u8]>> = (0..values.len()).map(|i| values.get(i)).collect();
        if answer != [Some(&[55u8][..])] {
            let warm = self.warm_up.take().expect("present");
            let worker = self.worker(slot).name();
            let _ = warm.reply.send(Err(PoolError::WorkerMisbehaved {
                worker,
                what: format!("answered F({WARM_UP_INDEX}) with the values {answer:?}"),
            }));
        }
        true
    }

    /// Sends every worker its share once all are ready and idle, and replies
    /// once every share is measured.
    fn progress_ceiling(&mut self) {
        let Some(ceiling) = &mut self.ceiling else {
            return;
        };
        if let Some(started) = ceiling.started {
            if ceiling.outstanding == 0 {
                let ceiling = self.ceiling.take().expect("present");
                let _ = ceiling.reply.send(Ok(started.elapsed().as_secs_f64()));
            }
            return;
        }
        let live: Vec<usize> = (0..self.slots.len())
            .filter(|&s| !self.slots[s].given_up)
            .collect();
        let idle = live.iter().all(|&s| {
            self.slots[s]
                .worker
                .as_ref()
                .is_some_and(|w| w.process.is_ready() && w.in_flight.is_empty())
        });
        if !idle || live.is_empty() {
            return;
        }
        let shares = ceiling.tasks.split_by_cost(live.len());
        let encoding = ceiling.encoding;
        ceiling.started = Some(Instant::now());
        let mut failure = None;
        // Round robin, a megabyte-sized request at a time, so that every
        // worker has work queued from the start and no share is ever held
        // as one run per index.
        let mut pieces: Vec<_> = live
            .iter()
            .zip(&shares)
            .map(|(&slot, share)| (slot, share.runs()))
            .collect();
        let mut busy = true;
        while busy {
            busy = false;
            for (slot, runs) in &mut pieces {
                let piece: Vec<Run> = runs.by_ref().take(MEASURE_RUNS).collect();
                if piece.is_empty() {
                    continue;
                }
                busy = true;
                let worker = self.slots[*slot].worker.as_mut().expect("all are ready");
                let request = Request::Measure(Chunk {
                    id: *slot as u64,
                    encoding,
                    runs: piece,
                });
                match worker.process.send(&request) {
                    Ok(()) => {
                        worker.measuring += 1;
                        ceiling.outstanding += 1;
                    }
                    Err(e) if e.is_disconnect() => {}
                    Err(source) => {
                        let Request::Measure(chunk) = request else {
                            unreachable!()
                        };
                        failure.get_or_insert(PoolError::Request {
                            chunk: *slot as u64,
                            indices: super::tasks::describe_runs(&chunk.runs),
                            source,
                        });
                    }
                }
            }
        }
        if let Some(error) = failure {
            let ceiling = self.ceiling.take().expect("present");
            let _ = ceiling.reply.send(Err(error));
        }
    }

    /// A worker was lost: probes waiting on it fail.
    fn probe_lost(&mut self, slot: usize, error: impl Fn() -> PoolError) {
        if self.warm_up.as_ref().is_some_and(|w| !w.answered[slot]) {
            let warm = self.warm_up.take().expect("present");
            let _ = warm.reply.send(Err(error()));
        }
        if self.ceiling.as_ref().is_some_and(|c| c.started.is_some()) {
            let ceiling = self.ceiling.take().expect("present");
            let _ = ceiling.reply.send(Err(error()));
            for state in &mut self.slots {
                if let Some(w) = &mut state.worker {
                    w.measuring = 0;
                }
            }
        }
    }

    // ---- the end ----

    /// Once shutdown is asked for and no batch is left: tells every worker
    /// to finish, reaps them, and replies. True when the manager is done.
    fn finish_shutdown(&mut self) -> bool {
        let Some(waiters) = &self.shutdown else {
            return false;
        };
        if waiters.is_empty() || !self.jobs.is_empty() {
            return false;
        }
        let waiters = self.shutdown.take().expect("present");
        let mut workers: Vec<Worker> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.worker.take())
            .collect();
        for worker in &mut workers {
            worker.process.shutdown();
        }
        let mut first_error = None;
        for worker in &mut workers {
            let name = worker.name();
            let error = match worker.process.reap(SHUTDOWN_GRACE) {
                Ok(status) if status.success() => continue,
                Ok(status) => PoolError::WorkerExited {
                    worker: name,
                    status: describe_status(status),
                    when: "at shutdown",
                },
                Err(source) => PoolError::Reap {
                    worker: name,
                    source,
                },
            };
            first_error.get_or_insert(error);
        }
        for mut worker in std::mem::take(&mut self.retiring) {
            let _ = worker.process.reap(SHUTDOWN_GRACE);
            self.retire(worker.stats(Some("recycled".to_owned())));
        }
        for worker in workers {
            self.retire(worker.stats(None));
        }
        self.publish_stats();
        for waiter in waiters {
            let _ = waiter.send(match &first_error {
                None => Ok(()),
                Some(e) => Err(e.clone()),
            });
        }
        self.exit = true;
        true
    }

    fn publish_stats(&mut self) {
        let stats = self.stats();
        *self
            .shared
            .final_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(stats);
    }

    /// Kills and reaps every worker still running, fails what is left with
    /// `error`, and publishes the stats. The manager's last act.
    fn finish(&mut self, error: PoolError) {
        self.exit = true;
        self.deliver();
        for worker in self.slots.iter_mut().filter_map(|s| s.worker.as_mut()) {
            worker.process.kill();
        }
        for worker in &mut self.retiring {
            worker.process.kill();
        }
        let workers: Vec<Worker> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.worker.take())
            .collect();
        for mut worker in workers {
            let _ = worker.process.reap(EXIT_GRACE);
            self.retire(worker.stats(Some("killed when the pool was dropped".to_owned())));
        }
        for mut worker in std::mem::take(&mut self.retiring) {
            let _ = worker.process.reap(EXIT_GRACE);
            self.retire(worker.stats(Some("recycled".to_owned())));
        }
        let ids: Vec<JobId> = self.jobs.keys().copied().collect();
        for id in ids {
            self.fail_job(id, error.clone());
        }
        for waiter in self.ready_waiters.drain(..) {
            let _ = waiter.send(Err(error.clone()));
        }
        if let Some(warm) = self.warm_up.take() {
            let _ = warm.reply.send(Err(error.clone()));
        }
        if let Some(ceiling) = self.ceiling.take() {
            let _ = ceiling.reply.send(Err(error.clone()));
        }
        if let Some(waiters) = self.shutdown.take() {
            for waiter in waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
        self.publish_stats();
        // The spawner threads go last: the workers they started are reaped.
        self.spawners = None;
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
