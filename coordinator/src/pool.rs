//! The pool: spawning and handshakes, dynamic scheduling with a bounded number
//! of chunks in flight per worker, reassembly in input order with bounded
//! memory, and shutdown.

use std::collections::BTreeMap;
use std::io;
use std::num::NonZeroU64;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use fibpool_protocol::{Bytes, Chunk, Encoding, MAX_INDEX, Request, Response};
use num_bigint::BigUint;

use crate::WorkerCommand;
use crate::error::{PoolError, WorkerName};
use crate::process::Spawned;
use crate::process::{Event, WorkerProcess, describe_status};
use crate::report::WorkerReport;
use crate::tasks::{ChunkPlan, Chunker, TaskList, auto_chunk_size};
use fibpool_protocol::WorkerHello;

/// How long a worker may take from spawn to its handshake by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long workers get to exit after Shutdown before they are killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a worker that closed its output gets to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// Reassembly keeps at most this many chunks per in-flight slot ahead of the
/// first unanswered one.
const WINDOW_PER_SLOT: usize = 4;

/// Builds a [`Pool`].
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    workers: usize,
    command: Option<WorkerCommand>,
    in_flight: usize,
    handshake_timeout: Duration,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            workers: default_workers(),
            command: None,
            in_flight: 2,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
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
        self.workers = workers;
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

    /// Starts every worker and waits for every handshake.
    pub fn build(self) -> Result<Pool, PoolError> {
        if self.workers == 0 {
            return Err(PoolError::Config("a pool needs at least one worker".into()));
        }
        if self.in_flight == 0 {
            return Err(PoolError::Config(
                "at least one chunk must be in flight per worker".into(),
            ));
        }
        let command = match self.command {
            Some(command) => command,
            None => WorkerCommand::this_program().map_err(|source| PoolError::Spawn {
                command: "this program".to_owned(),
                source,
            })?,
        };
        let (sender, events) = mpsc::channel();
        let mut pool = Pool {
            workers: Vec::with_capacity(self.workers),
            events,
            sender,
            command,
            in_flight: self.in_flight,
            next_process_id: 0,
            shut_down: false,
        };
        for slot in 0..self.workers {
            let process = pool.spawn(slot)?;
            pool.workers.push(process);
        }
        pool.wait_ready(self.handshake_timeout)?;
        Ok(pool)
    }
}

/// A pool of worker processes computing Fibonacci numbers, used as Python's
/// `ProcessPoolExecutor` is: build it, [`map`](Pool::map) over indices, shut it
/// down. Dropping a pool kills and reaps its workers: no process outlives it.
///
/// By default workers are this very program started again with
/// `FIBPOOL_WORKER=1`, so `main` must begin with [`crate::run_if_worker`]
/// (as a Python program using the "spawn" start method guards its main module).
/// Workers die with the thread that spawned them (PR_SET_PDEATHSIG), so keep
/// the pool on a thread that outlives it.
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
    workers: Vec<Worker>,
    events: Receiver<Event>,
    sender: Sender<Event>,
    command: WorkerCommand,
    in_flight: usize,
    next_process_id: u64,
    shut_down: bool,
}

/// A worker process and what the pool knows of it.
struct Worker {
    process: WorkerProcess,
    stats: Stats,
    /// Ids of the chunks sent and not yet answered, oldest first.
    in_flight: Vec<u64>,
}

/// What [`Pool::run`] is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Indices per chunk; `None` chooses with [`auto_chunk_size`].
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
    pub chunk_size: u64,
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
    pub fn run(
        &mut self,
        tasks: &TaskList,
        options: &RunOptions,
        mut sink: impl FnMut(Item<'_>) -> io::Result<()>,
    ) -> Result<RunSummary, PoolError> {
        let chunk_size = options.chunk_size.map_or_else(
            || auto_chunk_size(tasks.len(), self.size()),
            NonZeroU64::get,
        );
        let mut chunks = tasks.chunks(chunk_size, options.encoding);
        let mut board = Board::new(options.ordered);
        let window = (self.size() * self.in_flight * WINDOW_PER_SLOT) as u64;
        loop {
            self.dispatch(&mut chunks, &mut board, window, options.encoding)?;
            if board.is_empty() && chunks.peek_id().is_none() {
                break;
            }
            let event = self.next_event();
            self.handle(event, &mut board, &mut sink)?;
        }
        Ok(RunSummary {
            tasks: tasks.len(),
            chunks: board.next_id,
            chunk_size,
        })
    }

    /// Per-process figures for every worker.
    pub fn worker_reports(&self) -> Vec<WorkerReport> {
        self.workers.iter().map(|w| w.stats.report()).collect()
    }

    /// Tells every worker to finish, waits for them to exit (killing any that
    /// take longer than a few seconds) and reaps them.
    pub fn shutdown(mut self) -> Result<Vec<WorkerReport>, PoolError> {
        self.shut_down = true;
        for worker in &mut self.workers {
            let _ = worker.process.send(&Request::Shutdown);
            worker.process.close_input();
        }
        let mut first_error = None;
        for worker in &mut self.workers {
            let name = worker.process.name;
            match worker.process.reap(SHUTDOWN_GRACE) {
                Ok(status) if status.success() => {}
                Ok(status) => {
                    first_error.get_or_insert(PoolError::WorkerExited {
                        worker: name,
                        status: describe_status(status),
                        when: "at shutdown",
                    });
                }
                Err(source) => {
                    first_error.get_or_insert(PoolError::Spawn {
                        command: format!("reaping {name}"),
                        source,
                    });
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(self.worker_reports()),
        }
    }

    fn spawn(&mut self, slot: usize) -> Result<Worker, PoolError> {
        let id = self.next_process_id;
        self.next_process_id += 1;
        let process = WorkerProcess::spawn(&self.command, slot, id, self.sender.clone())?;
        let stats = Stats::new(process.name, process.spawned);
        Ok(Worker {
            process,
            stats,
            in_flight: Vec::new(),
        })
    }

    fn next_event(&self) -> Event {
        // The pool holds a sender itself, so the channel never disconnects.
        self.events.recv().expect("the pool holds a sender")
    }

    fn slot_of(&self, process_id: u64) -> Option<usize> {
        self.workers.iter().position(|w| w.process.id == process_id)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), PoolError> {
        let deadline = Instant::now() + timeout;
        while let Some(waiting) = self.workers.iter().position(|w| w.stats.ready.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = match self.events.recv_timeout(left) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    return Err(PoolError::HandshakeTimeout {
                        worker: self.workers[waiting].process.name,
                        timeout,
                    });
                }
            };
            match event {
                Event::Response {
                    worker,
                    response: Response::Ready(hello),
                    at,
                } => {
                    if let Some(slot) = self.slot_of(worker) {
                        self.workers[slot].stats.ready = Some((at, hello));
                    }
                }
                Event::Response {
                    worker, response, ..
                } => {
                    if let Some(slot) = self.slot_of(worker) {
                        return Err(PoolError::WorkerMisbehaved {
                            worker: self.workers[slot].process.name,
                            what: format!("sent {} before its handshake", describe(&response)),
                        });
                    }
                }
                Event::Closed { worker, error } => {
                    if let Some(slot) = self.slot_of(worker) {
                        return Err(self.lost(slot, error, "before its handshake"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends chunks to workers with free in-flight slots, breadth first so
    /// that every worker has one before any has two.
    fn dispatch(
        &mut self,
        chunks: &mut Chunker<'_>,
        board: &mut Board,
        window: u64,
        encoding: Encoding,
    ) -> Result<(), PoolError> {
        for depth in 1..=self.in_flight {
            for slot in 0..self.workers.len() {
                if self.workers[slot].in_flight.len() >= depth {
                    continue;
                }
                let Some(id) = chunks.peek_id() else {
                    return Ok(());
                };
                if board.ordered && id >= board.next_emit + window {
                    return Ok(());
                }
                let plan = chunks.next().expect("peeked");
                let request = Request::Compute(Chunk {
                    id,
                    encoding,
                    runs: plan.runs.clone(),
                });
                board.issue(plan);
                let worker = &mut self.workers[slot];
                worker.in_flight.push(id);
                if let Err(error) = worker.process.send(&request) {
                    let error = (!error.is_disconnect()).then_some(error);
                    return Err(self.lost(slot, error, "during the run"));
                }
            }
        }
        Ok(())
    }

    fn handle(
        &mut self,
        event: Event,
        board: &mut Board,
        sink: &mut impl FnMut(Item<'_>) -> io::Result<()>,
    ) -> Result<(), PoolError> {
        let (worker, response) = match event {
            Event::Response {
                worker, response, ..
            } => (worker, response),
            Event::Closed { worker, error } => {
                return match self.slot_of(worker) {
                    Some(slot) => Err(self.lost(slot, error, "during the run")),
                    None => Ok(()),
                };
            }
        };
        // Events from a process that is no longer in the pool are stale.
        let Some(slot) = self.slot_of(worker) else {
            return Ok(());
        };
        let w = &mut self.workers[slot];
        let name = w.process.name;
        let misbehaved = |what: String| PoolError::WorkerMisbehaved { worker: name, what };
        match response {
            Response::Computed(result) => {
                let Some(at_slot) = w.in_flight.iter().position(|&id| id == result.id) else {
                    return Err(misbehaved(format!(
                        "answered chunk {}, which it was not given",
                        result.id
                    )));
                };
                board
                    .complete(result.id, result.values)
                    .map_err(misbehaved)?;
                w.in_flight.remove(at_slot);
                w.stats.answered(result.busy_ns);
                board.drain(sink).map_err(PoolError::Sink)
            }
            Response::Failed(failure) => Err(PoolError::WorkerFailed {
                worker: name,
                message: failure.message,
            }),
            Response::Ready(_) => Err(misbehaved("sent a second handshake".into())),
        }
    }

    /// A worker's output ended or broke: reap it and say why.
    fn lost(
        &mut self,
        slot: usize,
        error: Option<fibpool_protocol::Error>,
        when: &'static str,
    ) -> PoolError {
        let process = &mut self.workers[slot].process;
        let name = process.name;
        if let Some(source) = error.filter(|e| !e.is_disconnect()) {
            process.kill();
            let _ = process.reap(Duration::ZERO);
            return PoolError::WorkerProtocol {
                worker: name,
                source,
            };
        }
        let status = match process.reap(EXIT_GRACE) {
            Ok(status) => describe_status(status),
            Err(e) => format!("could not be reaped ({e})"),
        };
        PoolError::WorkerExited {
            worker: name,
            status,
            when,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Each WorkerProcess kills and reaps its child as it drops; this only
        // makes the order explicit: all are killed before any is waited for.
        if !self.shut_down {
            for worker in &mut self.workers {
                worker.process.kill();
            }
        }
    }
}

fn describe(response: &Response) -> String {
    match response {
        Response::Ready(_) => "its handshake".to_owned(),
        Response::Computed(result) => format!("a result for chunk {}", result.id),
        Response::Failed(failure) => format!("a failure ({})", failure.message),
    }
}

/// Chunks issued and not yet delivered, and the order they are delivered in.
struct Board {
    ordered: bool,
    entries: BTreeMap<u64, Entry>,
    /// The lowest chunk id not yet delivered (ordered mode).
    next_emit: u64,
    /// Chunks issued so far.
    next_id: u64,
}

struct Entry {
    plan: ChunkPlan,
    values: Option<Vec<Bytes>>,
}

impl Board {
    fn new(ordered: bool) -> Self {
        Board {
            ordered,
            entries: BTreeMap::new(),
            next_emit: 0,
            next_id: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn issue(&mut self, plan: ChunkPlan) {
        self.next_id = plan.id + 1;
        self.entries.insert(plan.id, Entry { plan, values: None });
    }

    fn complete(&mut self, id: u64, values: Vec<Bytes>) -> Result<(), String> {
        let entry = match self.entries.get_mut(&id) {
            Some(entry) if entry.values.is_none() => entry,
            _ => return Err(format!("answered chunk {id} twice")),
        };
        if values.len() as u64 != entry.plan.count {
            return Err(format!(
                "returned {} values for chunk {id} of {} indices",
                values.len(),
                entry.plan.count
            ));
        }
        entry.values = Some(values);
        Ok(())
    }

    /// Hands every deliverable chunk to the sink.
    fn drain(&mut self, sink: &mut impl FnMut(Item<'_>) -> io::Result<()>) -> io::Result<()> {
        loop {
            let next = if self.ordered {
                self.entries
                    .first_entry()
                    .filter(|e| e.get().values.is_some())
                    .map(|e| e.remove())
            } else {
                let done = self.entries.iter().find(|(_, e)| e.values.is_some());
                done.map(|(&id, _)| id)
                    .and_then(|id| self.entries.remove(&id))
            };
            let Some(Entry { plan, values }) = next else {
                return Ok(());
            };
            self.next_emit = self
                .entries
                .first_key_value()
                .map_or(self.next_id, |(&id, _)| id);
            let values = values.expect("only complete entries are delivered");
            for ((offset, index), value) in plan.indices().enumerate().zip(&values) {
                sink(Item {
                    position: plan.first_position + offset as u64,
                    index,
                    value: &value.0,
                })?;
            }
        }
    }
}

/// What the pool records of one worker process.
struct Stats {
    name: WorkerName,
    spawned: Spawned,
    /// When the handshake was decoded, and the handshake.
    ready: Option<(Instant, WorkerHello)>,
    chunks: u64,
    busy_ns: u64,
}

impl Stats {
    fn new(name: WorkerName, spawned: Spawned) -> Self {
        Stats {
            name,
            spawned,
            ready: None,
            chunks: 0,
            busy_ns: 0,
        }
    }

    fn answered(&mut self, busy_ns: u64) {
        self.chunks += 1;
        self.busy_ns += busy_ns;
    }

    fn report(&self) -> WorkerReport {
        let ready = self.ready.as_ref().map(|(at, _)| *at - self.spawned.at);
        WorkerReport {
            slot: self.name.slot,
            pid: self.name.pid,
            spawn_seconds: self.spawned.call.as_secs_f64(),
            ready_seconds: ready.unwrap_or_default().as_secs_f64(),
            chunks: self.chunks,
            busy_seconds: self.busy_ns as f64 * 1e-9,
        }
    }
}
