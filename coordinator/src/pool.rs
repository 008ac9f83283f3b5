//! The pool: dynamic scheduling with a bounded number of chunks in flight per
//! worker, reassembly in input order with bounded memory, recovery from
//! workers that die or hang, and shutdown. A run queues each worker's first
//! chunks in its pipe while it is still starting, so it computes as soon as
//! it is up, and no worker waits for a slower sibling.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::num::NonZeroU64;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use fibpool_protocol::{Chunk, Encoding, MAX_INDEX, Request, Response, Run};
use num_bigint::BigUint;

use crate::WorkerCommand;
use crate::board::{Board, Values};
use crate::child::{Transport, describe_status};
use crate::error::PoolError;
use crate::process::{Event, WorkerProcess};
use crate::report::WorkerReport;
use crate::spawn::{Spawners, spawn_all};
use crate::tasks::{ChunkPlan, ChunkSize, Chunker, TaskList};

/// How long a worker may take from spawn to its handshake by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times in a row a chunk may take its worker down (or a worker
/// slot fail to start) before the run stops.
pub const DEFAULT_RETRIES: u32 = 3;
/// How long workers get to exit after Shutdown before they are killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a worker whose output ended gets to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// Reassembly keeps at most this many chunks per in-flight slot ahead of the
/// oldest undelivered one.
const WINDOW_PER_SLOT: usize = 4;
/// The index of the warm-up task: F(10) = 55.
const WARM_UP_INDEX: u64 = 10;

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
        }
    }
}

/// One worker per available core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl PoolBuilder {
    /// The number of worker processes (default: one per core).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// How workers are started (default: [`WorkerCommand::this_program`]).
    pub fn worker_command(mut self, command: WorkerCommand) -> Self {
        self.command = Some(command);
        self
    }

    /// Chunks sent to a worker before it has answered the first (default 2):
    /// the second hides the round trip.
    pub fn in_flight(mut self, chunks: usize) -> Self {
        self.in_flight = chunks;
        self
    }

    /// How long a worker may take to complete its handshake (default 30 s).
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
    /// called a poison chunk and the run stops (default 3). Also how many
    /// times in a row a worker may fail to start.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Spawn the workers from this many threads at once (default 1: from the
    /// calling thread). The threads then wait, parked, until the pool is
    /// dropped, because a worker's PR_SET_PDEATHSIG fires when the thread that
    /// spawned it exits.
    pub fn spawn_threads(mut self, threads: usize) -> Self {
        self.spawn_threads = threads;
        self
    }

    /// How frames travel (default: pipes). With [`Transport::Socket`], each
    /// spawn waits for its worker to connect.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Starts every worker. It does not wait for their handshakes: a run sends
    /// a worker its first chunks while it is still starting (see
    /// [`Pool::wait_ready`] to wait).
    pub fn build(self) -> Result<Pool, PoolError> {
        let workers = self.workers.unwrap_or_else(default_workers);
        if workers == 0 {
            return Err(PoolError::Config("a pool needs at least one worker".into()));
        }
        if self.in_flight == 0 {
            return Err(PoolError::Config(
                "at least one chunk must be in flight per worker".into(),
            ));
        }
        if self.retries == 0 {
            return Err(PoolError::Config("retries must be at least 1".into()));
        }
        let command = match self.command {
            Some(command) => command,
            None => WorkerCommand::this_program().map_err(|source| PoolError::Spawn {
                command: "this program".to_owned(),
                source,
            })?,
        };
        let (sender, events) = mpsc::channel();
        let started = Instant::now();
        let (processes, spawners) = spawn_all(
            &command,
            self.transport,
            workers,
            self.spawn_threads,
            &sender,
        )?;
        Ok(Pool {
            workers: processes.into_iter().map(Worker::new).collect(),
            events,
            sender,
            command,
            transport: self.transport,
            in_flight: self.in_flight,
            handshake_timeout: self.handshake_timeout,
            task_timeout: self.task_timeout,
            retries: self.retries,
            next_process_id: workers as u64,
            started,
            start_failures: vec![0; workers],
            retired: Vec::new(),
            shut_down: false,
            _spawners: spawners,
        })
    }
}

/// A pool of worker processes computing Fibonacci numbers, used as Python's
/// `ProcessPoolExecutor` is: build it, [`map`](Pool::map) over indices, shut it
/// down. A worker that dies or hangs is replaced and its chunks computed
/// again, so every value arrives exactly once. Dropping a pool kills and
/// reaps its workers: no process outlives it.
///
/// By default workers are this very program started again with
/// `FIBPOOL_WORKER=1`, so `main` must begin with [`crate::run_if_worker`]
/// (as a Python program using the "spawn" start method guards its main module).
/// Workers die with the thread that spawned them (PR_SET_PDEATHSIG); the
/// thread that runs the pool also spawns replacements, so keep the pool on a
/// thread that outlives it.
///
/// ```rust,standalone_crate
/// use fibpool_coordinator::Pool;
/// use num_bigint::BigUint;
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     // In a worker copy of this program, serve the pool and exit here.
///     fibpool_coordinator::run_if_worker();
///
///     let mut pool = Pool::new(2)?;
///     let values = pool.map([10, 100, 0, 1], 2)?;
///     assert_eq!(values[0], BigUint::from(55u32));
///     assert_eq!(values[1].to_string(), "354224848179261915075");
///     assert_eq!(values[2..], [BigUint::ZERO, BigUint::from(1u32)]);
///     pool.shutdown()?;
///     Ok(())
/// }
/// ```
pub struct Pool {
    // Field order is drop order: workers are killed and reaped before the
    // threads that spawned them are released.
    workers: Vec<Worker>,
    events: Receiver<Event>,
    /// Reader threads of replacements get clones; the pool's own copy also
    /// keeps the channel open whatever the workers do.
    sender: Sender<Event>,
    command: WorkerCommand,
    transport: Transport,
    in_flight: usize,
    handshake_timeout: Duration,
    task_timeout: Option<Duration>,
    retries: u32,
    next_process_id: u64,
    started: Instant,
    /// Per slot: workers in a row that died before their handshake.
    start_failures: Vec<u32>,
    /// Workers that died or hung and were replaced.
    retired: Vec<WorkerReport>,
    shut_down: bool,
    _spawners: Spawners,
}

/// A worker process and what the pool knows of it.
struct Worker {
    process: WorkerProcess,
    /// Ids of the chunks sent and not yet answered, oldest first.
    in_flight: Vec<u64>,
    /// A Measure request is out and not yet answered.
    measuring: bool,
    /// Since when the worker has been on its oldest chunk in flight.
    busy_since: Option<Instant>,
    chunks: u64,
    busy_ns: u64,
}

impl Worker {
    fn new(process: WorkerProcess) -> Self {
        Worker {
            process,
            in_flight: Vec::new(),
            measuring: false,
            busy_since: None,
            chunks: 0,
            busy_ns: 0,
        }
    }

    fn report(&self) -> WorkerReport {
        WorkerReport {
            slot: self.process.name.slot,
            pid: self.process.name.pid,
            phases: self.process.life.phases(),
            chunks: self.chunks,
            busy_seconds: self.busy_ns as f64 * 1e-9,
            ended: None,
        }
    }
}

/// What [`Pool::run`] is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Indices per chunk; `None` sizes chunks by guided self-scheduling
    /// ([`crate::tasks::guided_chunk_size`]).
    pub chunk_size: Option<NonZeroU64>,
    pub encoding: Encoding,
    /// Deliver values in input order (true) or as chunks complete.
    pub ordered: bool,
}

/// One value delivered by [`Pool::run`].
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// Position in the batch, from 0.
    pub position: u64,
    pub index: u64,
    /// The value in the run's encoding.
    pub value: &'a [u8],
}

/// What [`Pool::run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub tasks: u64,
    pub chunks: u64,
    /// The fixed chunk size, or `None` for guided chunks.
    pub chunk_size: Option<u64>,
    /// Workers that died or hung and were replaced during the run.
    pub worker_restarts: u64,
    /// Chunks sent again because their worker died or hung.
    pub retried_chunks: u64,
}

/// A worker's message, with a chunk's values in their frame.
enum Arrived {
    Computed {
        chunk: u64,
        busy_ns: u64,
        values: Values,
    },
    Other(Response<'static>),
}

/// What the next wait brought.
enum Next {
    Event(Event),
    /// A worker passed a deadline: its handshake, or its current chunk.
    Expired {
        slot: usize,
        task: bool,
    },
}

/// Chunks waiting to be sent again, and how often each has taken its worker down.
#[derive(Default)]
struct Retries {
    queue: VecDeque<u64>,
    failures: HashMap<u64, u32>,
    restarts: u64,
    resent: u64,
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
        self.workers.len()
    }

    /// F(n) for every index, in order, computed in chunks of `chunk_size` indices.
    pub fn map(
        &mut self,
        indices: impl IntoIterator<Item = u64>,
        chunk_size: usize,
    ) -> Result<Vec<BigUint>, PoolError> {
        let chunk_size = NonZeroU64::new(chunk_size as u64)
            .ok_or_else(|| PoolError::Config("the chunk size must be at least 1".into()))?;
        let tasks: TaskList = indices.into_iter().collect();
        if let Some(max) = tasks.max_index().filter(|&m| m > MAX_INDEX) {
            return Err(PoolError::Config(format!(
                "index {max} is above the largest index a worker computes ({MAX_INDEX})"
            )));
        }
        let mut values = Vec::with_capacity(tasks.len() as usize);
        let options = RunOptions {
            chunk_size: Some(chunk_size),
            encoding: Encoding::Raw,
            ordered: true,
        };
        self.run(&tasks, &options, |item| {
            values.push(BigUint::from_bytes_le(item.value));
            Ok(())
        })?;
        Ok(values)
    }

    /// Computes every index of `tasks` and hands each value to `sink`, in input
    /// order unless `options.ordered` is false. A `sink` error stops the run.
    /// A worker that dies, or spends longer than the task timeout on a chunk,
    /// is replaced and its chunks sent again; a chunk that takes its worker
    /// down `retries` times in a row stops the run with
    /// [`PoolError::PoisonChunk`]. Every value is delivered exactly once.
    pub fn run(
        &mut self,
        tasks: &TaskList,
        options: &RunOptions,
        mut sink: impl FnMut(Item<'_>) -> io::Result<()>,
    ) -> Result<RunSummary, PoolError> {
        let chunk_size = options.chunk_size.map(NonZeroU64::get);
        let size = chunk_size.map_or(
            ChunkSize::Guided {
                workers: self.size(),
            },
            ChunkSize::Fixed,
        );
        let mut chunks = tasks.chunks(size, options.encoding);
        let mut board = Board::new(options.ordered);
        let mut retries = Retries::default();
        let window = (self.size() * self.in_flight * WINDOW_PER_SLOT) as u64;
        loop {
            self.dispatch(
                &mut chunks,
                &mut board,
                &mut retries,
                window,
                options.encoding,
            )?;
            if board.is_empty() && chunks.peek_id().is_none() {
                break;
            }
            let (slot, timed_out) = match self.next_event()? {
                Next::Event(event) => match self.handle(event, &mut board, &mut sink)? {
                    Some(slot) => (slot, None),
                    None => continue,
                },
                Next::Expired { slot, task } => (slot, Some(task)),
            };
            self.replace(slot, timed_out, &board, &mut retries)?;
        }
        Ok(RunSummary {
            tasks: tasks.len(),
            chunks: board.issued,
            chunk_size,
            worker_restarts: retries.restarts,
            retried_chunks: retries.resent,
        })
    }

    /// Waits until every worker has completed its handshake.
    pub fn wait_ready(&mut self) -> Result<(), PoolError> {
        let mut board = Board::new(true);
        while self.workers.iter().any(|w| !w.process.is_ready()) {
            self.step_strictly(&mut board, &mut |_| Ok(()))?;
        }
        Ok(())
    }

    /// Runs one tiny task (F(10)) on every worker, each sent as soon as that
    /// worker is ready, and checks the answers: afterwards every worker is
    /// known to compute. A worker that dies meanwhile is an error, not
    /// replaced. `fibpool startup` times pools this way.
    pub fn warm_up(&mut self) -> Result<(), PoolError> {
        let mut board = Board::new(false);
        let mut answers: Vec<Option<Vec<u8>>> = vec![None; self.size()];
        let mut sent = vec![false; self.size()];
        let mut next_id = 0;
        loop {
            for (slot, sent) in sent.iter_mut().enumerate() {
                if !*sent && self.workers[slot].process.is_ready() {
                    let plan = ChunkPlan {
                        id: next_id,
                        first_position: slot as u64,
                        count: 1,
                        runs: vec![Run {
                            start: WARM_UP_INDEX,
                            len: 1,
                        }],
                    };
                    next_id += 1;
                    *sent = true;
                    board.issue(plan.clone());
                    self.send_chunk(slot, &plan, Encoding::Raw)?;
                }
            }
            if sent.iter().all(|&s| s) && board.is_empty() {
                break;
            }
            self.step_strictly(&mut board, &mut |item| {
                answers[item.position as usize] = Some(item.value.to_vec());
                Ok(())
            })?;
        }
        for (worker, answer) in self.workers.iter().zip(answers) {
            if answer.as_deref() != Some(&[55]) {
                return Err(PoolError::WorkerMisbehaved {
                    worker: worker.process.name,
                    what: format!("answered F({WARM_UP_INDEX}) with the bytes {answer:?}"),
                });
            }
        }
        Ok(())
    }

    /// The machine's parallel ceiling for a batch: every worker computes a
    /// share of equal cost, encoding each value and keeping none, all at
    /// once. Returns the seconds from sending the shares until the last
    /// answer: no start-up, no results moved, no scheduling; what this many
    /// processes can do on this machine. Waits for every handshake first.
    pub fn ceiling(&mut self, tasks: &TaskList, encoding: Encoding) -> Result<f64, PoolError> {
        self.wait_ready()?;
        let shares = tasks.split_by_cost(self.size());
        let start = Instant::now();
        for (slot, runs) in shares.into_iter().enumerate() {
            let worker = &mut self.workers[slot];
            worker.measuring = true;
            let request = Request::Measure(Chunk {
                id: slot as u64,
                encoding,
                runs,
            });
            if let Err(error) = worker.process.send(&request) {
                return Err(worker.process.lost(Some(error), "during a measurement"));
            }
        }
        let mut board = Board::new(true);
        while self.workers.iter().any(|w| w.measuring) {
            self.step_strictly(&mut board, &mut |_| Ok(()))?;
        }
        Ok(start.elapsed().as_secs_f64())
    }

    /// From the first spawn until the last worker was ready, once all are.
    pub fn ready_seconds(&self) -> Option<f64> {
        let mut last = self.started;
        for worker in &self.workers {
            last = last.max(worker.process.life.ready_at()?);
        }
        Some((last - self.started).as_secs_f64())
    }

    /// Per-process figures for every worker, those replaced included.
    pub fn worker_reports(&self) -> Vec<WorkerReport> {
        let mut reports = self.retired.clone();
        reports.extend(self.workers.iter().map(Worker::report));
        reports
    }

    /// Tells every worker to finish, waits for them to exit (killing any that
    /// take longer than a few seconds) and reaps them.
    pub fn shutdown(mut self) -> Result<Vec<WorkerReport>, PoolError> {
        self.shut_down = true;
        for worker in &mut self.workers {
            worker.process.shutdown();
        }
        let mut first_error = None;
        for worker in &mut self.workers {
            let name = worker.process.name;
            let error = match worker.process.reap(SHUTDOWN_GRACE) {
                Ok(status) if status.success() => continue,
                Ok(status) => PoolError::WorkerExited {
                    worker: name,
                    status: describe_status(status),
                    when: "at shutdown",
                },
                Err(source) => PoolError::Spawn {
                    command: format!("reaping {name}"),
                    source,
                },
            };
            first_error.get_or_insert(error);
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(self.worker_reports()),
        }
    }

    /// One event outside a run: any death or missed deadline is an error.
    fn step_strictly(
        &mut self,
        board: &mut Board,
        sink: &mut impl FnMut(Item<'_>) -> io::Result<()>,
    ) -> Result<(), PoolError> {
        match self.next_event()? {
            Next::Event(event) => match self.handle(event, board, sink)? {
                None => Ok(()),
                Some(slot) => {
                    let process = &mut self.workers[slot].process;
                    let when = if process.is_ready() {
                        "during the run"
                    } else {
                        "before its handshake"
                    };
                    Err(process.lost(None, when))
                }
            },
            Next::Expired { slot, task } => {
                let worker = self.workers[slot].process.name;
                Err(match (task, self.task_timeout) {
                    (true, Some(timeout)) => PoolError::TaskTimeout { worker, timeout },
                    _ => PoolError::HandshakeTimeout {
                        worker,
                        timeout: self.handshake_timeout,
                    },
                })
            }
        }
    }

    /// The next event, or the first deadline a worker passes: its handshake
    /// if it has not completed one, else its current chunk's task timeout.
    fn next_event(&self) -> Result<Next, PoolError> {
        let deadlines = self.workers.iter().enumerate().filter_map(|(slot, w)| {
            if !w.process.is_ready() {
                Some((
                    w.process.life.spawned_at + self.handshake_timeout,
                    slot,
                    false,
                ))
            } else {
                Some((w.busy_since? + self.task_timeout?, slot, true))
            }
        });
        let Some((deadline, slot, task)) = deadlines.min_by_key(|&(at, ..)| at) else {
            return Ok(Next::Event(
                self.events.recv().expect("the pool holds a sender"),
            ));
        };
        match self
            .events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(event) => Ok(Next::Event(event)),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                Ok(Next::Expired { slot, task })
            }
        }
    }

    fn slot_of(&self, process_id: u64) -> Option<usize> {
        self.workers.iter().position(|w| w.process.id == process_id)
    }

    /// Sends chunks to workers with free in-flight slots, breadth first so
    /// that every worker has one before any has two. A worker still starting
    /// gets its chunks too: they wait in its pipe behind the coordinator's
    /// Hello, so it computes as soon as it is up, without a round trip for
    /// its handshake first (A/B at 234c919: 80 to 310 µs less per whole
    /// 1-worker `fibpool run`). Should it die before its handshake, its chunks
    /// are sent again, blamed on no chunk (see `replace`). Chunks to retry go
    /// first; new chunks stay within the reassembly window.
    fn dispatch(
        &mut self,
        chunks: &mut Chunker<'_>,
        board: &mut Board,
        retries: &mut Retries,
        window: u64,
        encoding: Encoding,
    ) -> Result<(), PoolError> {
        for depth in 1..=self.in_flight {
            for slot in 0..self.workers.len() {
                let worker = &self.workers[slot];
                if worker.in_flight.len() >= depth {
                    continue;
                }
                let plan = if let Some(id) = retries.queue.pop_front() {
                    retries.resent += 1;
                    board
                        .plan(id)
                        .expect("a chunk to retry is on the board")
                        .clone()
                } else {
                    let Some(id) = chunks.peek_id() else {
                        return Ok(());
                    };
                    if board.ordered && id >= board.next_emit + window {
                        return Ok(());
                    }
                    let plan = chunks.next().expect("peeked");
                    board.issue(plan.clone());
                    plan
                };
                self.send_chunk(slot, &plan, encoding)?;
            }
        }
        Ok(())
    }

    /// Sends a chunk. A worker that cannot take it is left for its reader
    /// thread to report: its output ends too.
    fn send_chunk(
        &mut self,
        slot: usize,
        plan: &ChunkPlan,
        encoding: Encoding,
    ) -> Result<(), PoolError> {
        let request = Request::Compute(Chunk {
            id: plan.id,
            encoding,
            runs: plan.runs.clone(),
        });
        let worker = &mut self.workers[slot];
        if worker.in_flight.is_empty() {
            worker.busy_since = Some(Instant::now());
        }
        worker.in_flight.push(plan.id);
        match worker.process.send(&request) {
            Ok(()) => Ok(()),
            Err(error) if error.is_disconnect() => Ok(()),
            Err(error) => Err(worker.process.lost(Some(error), "during the run")),
        }
    }

    /// Applies one event. Returns the slot of a worker whose output ended
    /// (a death to recover from); errors are the pool's or a worker's fault
    /// that retrying cannot mend.
    fn handle(
        &mut self,
        event: Event,
        board: &mut Board,
        sink: &mut impl FnMut(Item<'_>) -> io::Result<()>,
    ) -> Result<Option<usize>, PoolError> {
        let (id, arrived, at) = match event {
            Event::Response {
                worker,
                response,
                at,
            } => (worker, Arrived::Other(response), at),
            Event::Computed {
                worker,
                id,
                busy_ns,
                values,
                at,
            } => (
                worker,
                Arrived::Computed {
                    chunk: id,
                    busy_ns,
                    values,
                },
                at,
            ),
            Event::Closed { worker, error } => {
                // Events from a process that is no longer in the pool are stale.
                let Some(slot) = self.slot_of(worker) else {
                    return Ok(None);
                };
                return match error.filter(|e| !e.is_disconnect()) {
                    // A bad frame is not mended by a new worker of the same kind.
                    Some(error) => Err(self.workers[slot].process.lost(Some(error), "")),
                    None => Ok(Some(slot)),
                };
            }
        };
        let Some(slot) = self.slot_of(id) else {
            return Ok(None);
        };
        let start_failures = &mut self.start_failures[slot];
        let w = &mut self.workers[slot];
        let name = w.process.name;
        let misbehaved = |what: String| PoolError::WorkerMisbehaved { worker: name, what };
        let response = match arrived {
            Arrived::Computed { chunk, .. } if !w.process.is_ready() => {
                return Err(misbehaved(format!(
                    "sent a result for chunk {chunk} before its handshake"
                )));
            }
            Arrived::Computed {
                chunk,
                busy_ns,
                values,
            } => {
                let Some(at_slot) = w.in_flight.iter().position(|&id| id == chunk) else {
                    return Err(misbehaved(format!(
                        "answered chunk {chunk}, which it was not given"
                    )));
                };
                board.complete(chunk, values).map_err(misbehaved)?;
                w.in_flight.remove(at_slot);
                w.busy_since = (!w.in_flight.is_empty()).then_some(at);
                w.chunks += 1;
                w.busy_ns += busy_ns;
                w.process.life.first_result.get_or_insert(at);
                board.drain(sink).map_err(PoolError::Sink)?;
                return Ok(None);
            }
            Arrived::Other(response) => response,
        };
        match response {
            Response::Ready(hello) if !w.process.is_ready() => {
                w.process.life.ready = Some((at, hello));
                // Chunks sent while it was starting: its task timeout runs
                // from now, not from their sending.
                if !w.in_flight.is_empty() {
                    w.busy_since = Some(at);
                }
                *start_failures = 0;
                Ok(None)
            }
            Response::Ready(_) => Err(misbehaved("sent a second handshake".into())),
            _ if !w.process.is_ready() => Err(misbehaved(format!(
                "sent {} before its handshake",
                describe(&response)
            ))),
            // The reader sends results as Event::Computed from the second
            // frame on, and a first frame is caught above, before the
            // handshake: an error, not a panic, should that ever change.
            Response::Computed(result) => Err(misbehaved(format!(
                "sent a result for chunk {} outside the result path",
                result.id
            ))),
            Response::Failed(failure) => Err(PoolError::WorkerFailed {
                worker: name,
                message: failure.message,
            }),
            Response::Echo(reply) => Err(misbehaved(format!(
                "sent an echo (seq {}) it was not asked for",
                reply.seq
            ))),
            Response::Measured(measured) if w.measuring && measured.id == slot as u64 => {
                w.measuring = false;
                Ok(None)
            }
            Response::Measured(measured) => Err(misbehaved(format!(
                "sent a measurement (id {}) it was not asked for",
                measured.id
            ))),
        }
    }

    /// A worker died (`timed_out: None`), or passed a deadline (`Some(true)`
    /// for its chunk, `Some(false)` for its handshake): kill and reap it,
    /// blame its oldest chunk, queue its chunks again, start a replacement.
    fn replace(
        &mut self,
        slot: usize,
        timed_out: Option<bool>,
        board: &Board,
        retries: &mut Retries,
    ) -> Result<(), PoolError> {
        let worker = &mut self.workers[slot];
        if timed_out.is_some() {
            worker.process.kill();
        }
        let status = worker.process.reap(EXIT_GRACE);
        let name = worker.process.name;
        let cause = match (timed_out, self.task_timeout, status) {
            (Some(true), Some(timeout), _) => {
                format!("spent longer than the task timeout ({timeout:?}) on a chunk")
            }
            (Some(false), ..) => format!(
                "did not complete its handshake within {:?}",
                self.handshake_timeout
            ),
            (_, _, Ok(status)) => describe_status(status),
            (_, _, Err(e)) => format!("could not be reaped ({e})"),
        };
        let mut report = worker.report();
        report.ended = Some(cause.clone());
        self.retired.push(report);

        if !worker.process.is_ready() {
            self.start_failures[slot] += 1;
            if self.start_failures[slot] >= self.retries {
                return Err(PoolError::StartFailed {
                    worker: name,
                    attempts: self.start_failures[slot],
                    cause,
                });
            }
        } else if let Some(&oldest) = worker.in_flight.first() {
            // The worker computes its chunks in order: the oldest was the one
            // it was on.
            let failures = retries.failures.entry(oldest).or_insert(0);
            *failures += 1;
            if *failures >= self.retries {
                let plan = board
                    .plan(oldest)
                    .expect("an unanswered chunk is on the board");
                return Err(PoolError::PoisonChunk {
                    chunk: oldest,
                    indices: describe_indices(&plan.runs),
                    failures: *failures,
                    worker: name,
                    cause,
                });
            }
        }
        for &id in worker.in_flight.iter().rev() {
            retries.queue.push_front(id);
        }
        retries.restarts += 1;

        let id = self.next_process_id;
        self.next_process_id += 1;
        let process =
            WorkerProcess::spawn(&self.command, self.transport, slot, id, self.sender.clone())?;
        self.workers[slot] = Worker::new(process);
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Each WorkerProcess kills and reaps its child as it drops; killing
        // them all first lets them die together instead of one by one.
        if !self.shut_down {
            for worker in &mut self.workers {
                worker.process.kill();
            }
        }
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

/// "5, 7..=9, 12", shortened after a few runs.
fn describe_indices(runs: &[Run]) -> String {
    const SHOWN: usize = 5;
    let mut parts: Vec<String> = runs
        .iter()
        .take(SHOWN)
        .map(|r| match r.len {
            1 => r.start.to_string(),
            n => format!("{}..={}", r.start, r.start + n - 1),
        })
        .collect();
    if runs.len() > SHOWN {
        let total: u64 = runs.iter().map(|r| r.len).sum();
        parts.push(format!("... ({total} indices in all)"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_described_briefly() {
        let run = |start, len| Run { start, len };
        assert_eq!(
            describe_indices(&[run(5, 1), run(7, 3), run(12, 1)]),
            "5, 7..=9, 12"
        );
        let many: Vec<_> = (0..8).map(|i| run(i * 10, 2)).collect();
        assert_eq!(
            describe_indices(&many),
            "0..=1, 10..=11, 20..=21, 30..=31, 40..=41, ... (16 indices in all)"
        );
    }
}
