//! The pool: spawning, dynamic scheduling with a bounded number of chunks in
//! flight per worker, reassembly in input order with bounded memory, and
//! shutdown. A worker gets work as soon as its own handshake arrives, so no
//! worker waits for a slower sibling.

use std::io;
use std::num::NonZeroU64;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fibpool_protocol::{Chunk, Encoding, MAX_INDEX, Request, Response, Run};
use num_bigint::BigUint;

use crate::WorkerCommand;
use crate::board::Board;
use crate::child::{Transport, describe_status};
use crate::error::PoolError;
use crate::process::{Event, WorkerProcess};
use crate::report::WorkerReport;
use crate::tasks::{ChunkPlan, Chunker, TaskList, auto_chunk_size};

/// How long a worker may take from spawn to its handshake by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long workers get to exit after Shutdown before they are killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Reassembly keeps at most this many chunks per in-flight slot ahead of the
/// oldest undelivered one.
const WINDOW_PER_SLOT: usize = 4;
/// The index of the warm-up task: F(10) = 55.
const WARM_UP_INDEX: u64 = 10;

/// Builds a [`Pool`].
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    workers: usize,
    command: Option<WorkerCommand>,
    in_flight: usize,
    handshake_timeout: Duration,
    spawn_threads: usize,
    transport: Transport,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            workers: default_workers(),
            command: None,
            in_flight: 2,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
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

    /// Starts every worker. It does not wait for their handshakes: each worker
    /// gets work as soon as its own arrives (see [`Pool::wait_ready`]).
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
        let started = Instant::now();
        let (processes, spawners) = spawn_all(
            &command,
            self.transport,
            self.workers,
            self.spawn_threads,
            &sender,
        )?;
        Ok(Pool {
            workers: processes.into_iter().map(Worker::new).collect(),
            events,
            _sender: sender,
            in_flight: self.in_flight,
            handshake_timeout: self.handshake_timeout,
            started,
            shut_down: false,
            _spawners: spawners,
        })
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
    // Field order is drop order: workers are killed and reaped before the
    // threads that spawned them are released.
    workers: Vec<Worker>,
    events: Receiver<Event>,
    /// Keeps the channel open whatever the workers do.
    _sender: Sender<Event>,
    in_flight: usize,
    handshake_timeout: Duration,
    started: Instant,
    shut_down: bool,
    _spawners: Spawners,
}

/// A worker process and what the pool knows of it.
struct Worker {
    process: WorkerProcess,
    /// Ids of the chunks sent and not yet answered, oldest first.
    in_flight: Vec<u64>,
    chunks: u64,
    busy_ns: u64,
}

impl Worker {
    fn new(process: WorkerProcess) -> Self {
        Worker {
            process,
            in_flight: Vec::new(),
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
        }
    }
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
            let event = self.next_event()?;
            self.handle(event, &mut board, &mut sink)?;
        }
        Ok(RunSummary {
            tasks: tasks.len(),
            chunks: board.issued,
            chunk_size,
        })
    }

    /// Waits until every worker has completed its handshake.
    pub fn wait_ready(&mut self) -> Result<(), PoolError> {
        let mut board = Board::new(true);
        while self.workers.iter().any(|w| !w.process.is_ready()) {
            let event = self.next_event()?;
            self.handle(event, &mut board, &mut |_| Ok(()))?;
        }
        Ok(())
    }

    /// Runs one tiny task (F(10)) on every worker, each sent as soon as that
    /// worker is ready, and checks the answers: afterwards every worker is
    /// known to compute. `fibpool startup` times pools this way.
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
                    self.send_chunk(slot, plan, Encoding::Raw, &mut board)?;
                }
            }
            if sent.iter().all(|&s| s) && board.is_empty() {
                break;
            }
            let event = self.next_event()?;
            self.handle(event, &mut board, &mut |item| {
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

    /// From the first spawn until the last worker was ready, once all are.
    pub fn ready_seconds(&self) -> Option<f64> {
        let mut last = self.started;
        for worker in &self.workers {
            last = last.max(worker.process.life.ready.as_ref()?.0);
        }
        Some((last - self.started).as_secs_f64())
    }

    /// Per-process figures for every worker.
    pub fn worker_reports(&self) -> Vec<WorkerReport> {
        self.workers.iter().map(Worker::report).collect()
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

    /// The next event, or a handshake timeout for the worker that has waited
    /// longest for its own.
    fn next_event(&self) -> Result<Event, PoolError> {
        let waiting = self
            .workers
            .iter()
            .filter(|w| !w.process.is_ready())
            .min_by_key(|w| w.process.life.spawned_at);
        let Some(waiting) = waiting else {
            // The pool holds a sender itself, so the channel never disconnects.
            return Ok(self.events.recv().expect("the pool holds a sender"));
        };
        let deadline = waiting.process.life.spawned_at + self.handshake_timeout;
        match self
            .events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(event) => Ok(event),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                Err(PoolError::HandshakeTimeout {
                    worker: waiting.process.name,
                    timeout: self.handshake_timeout,
                })
            }
        }
    }

    fn slot_of(&self, process_id: u64) -> Option<usize> {
        self.workers.iter().position(|w| w.process.id == process_id)
    }

    /// Sends chunks to ready workers with free in-flight slots, breadth first
    /// so that every worker has one before any has two.
    fn dispatch(
        &mut self,
        chunks: &mut Chunker<'_>,
        board: &mut Board,
        window: u64,
        encoding: Encoding,
    ) -> Result<(), PoolError> {
        for depth in 1..=self.in_flight {
            for slot in 0..self.workers.len() {
                let worker = &self.workers[slot];
                if !worker.process.is_ready() || worker.in_flight.len() >= depth {
                    continue;
                }
                let Some(id) = chunks.peek_id() else {
                    return Ok(());
                };
                if board.ordered && id >= board.next_emit + window {
                    return Ok(());
                }
                let plan = chunks.next().expect("peeked");
                self.send_chunk(slot, plan, encoding, board)?;
            }
        }
        Ok(())
    }

    fn send_chunk(
        &mut self,
        slot: usize,
        plan: ChunkPlan,
        encoding: Encoding,
        board: &mut Board,
    ) -> Result<(), PoolError> {
        let request = Request::Compute(Chunk {
            id: plan.id,
            encoding,
            runs: plan.runs.clone(),
        });
        let worker = &mut self.workers[slot];
        worker.in_flight.push(plan.id);
        board.issue(plan);
        match worker.process.send(&request) {
            Ok(()) => Ok(()),
            Err(error) => {
                let error = (!error.is_disconnect()).then_some(error);
                Err(worker.process.lost(error, "during the run"))
            }
        }
    }

    fn handle(
        &mut self,
        event: Event,
        board: &mut Board,
        sink: &mut impl FnMut(Item<'_>) -> io::Result<()>,
    ) -> Result<(), PoolError> {
        let (id, response, at) = match event {
            Event::Response {
                worker,
                response,
                at,
            } => (worker, response, at),
            Event::Closed { worker, error } => {
                // Events from a process that is no longer in the pool are stale.
                let Some(slot) = self.slot_of(worker) else {
                    return Ok(());
                };
                let process = &mut self.workers[slot].process;
                let when = if process.is_ready() {
                    "during the run"
                } else {
                    "before its handshake"
                };
                return Err(process.lost(error, when));
            }
        };
        let Some(slot) = self.slot_of(id) else {
            return Ok(());
        };
        let w = &mut self.workers[slot];
        let name = w.process.name;
        let misbehaved = |what: String| PoolError::WorkerMisbehaved { worker: name, what };
        match response {
            Response::Ready(hello) if !w.process.is_ready() => {
                w.process.life.ready = Some((at, hello));
                Ok(())
            }
            Response::Ready(_) => Err(misbehaved("sent a second handshake".into())),
            _ if !w.process.is_ready() => Err(misbehaved(format!(
                "sent {} before its handshake",
                describe(&response)
            ))),
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
                w.chunks += 1;
                w.busy_ns += result.busy_ns;
                w.process.life.first_result.get_or_insert(at);
                board.drain(sink).map_err(PoolError::Sink)
            }
            Response::Failed(failure) => Err(PoolError::WorkerFailed {
                worker: name,
                message: failure.message,
            }),
            Response::Echo(reply) => Err(misbehaved(format!(
                "sent an echo (seq {}) it was not asked for",
                reply.seq
            ))),
        }
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
    }
}

/// Spawns `n` workers from `threads` threads (the calling one when 1).
fn spawn_all(
    command: &WorkerCommand,
    transport: Transport,
    n: usize,
    threads: usize,
    events: &Sender<Event>,
) -> Result<(Vec<WorkerProcess>, Spawners), PoolError> {
    let threads = threads.clamp(1, n);
    let spawn =
        |slot: usize| WorkerProcess::spawn(command, transport, slot, slot as u64, events.clone());
    if threads == 1 {
        let processes = (0..n).map(spawn).collect::<Result<_, _>>()?;
        return Ok((processes, Spawners::default()));
    }
    let (done, spawned) = mpsc::channel();
    let mut spawners = Spawners::default();
    for first in 0..threads {
        let (release, parked) = mpsc::channel::<()>();
        let (command, events, done) = (command.clone(), events.clone(), done.clone());
        let thread = std::thread::Builder::new()
            .name(format!("fibpool-spawner-{first}"))
            .spawn(move || {
                for slot in (first..n).step_by(threads) {
                    let process = WorkerProcess::spawn(
                        &command,
                        transport,
                        slot,
                        slot as u64,
                        events.clone(),
                    );
                    if done.send(process).is_err() {
                        return;
                    }
                }
                drop(done);
                // Returns when the pool drops the sender.
                let _ = parked.recv();
            })
            .map_err(|source| PoolError::Spawn {
                command: "a spawner thread".to_owned(),
                source,
            })?;
        spawners.release.push(release);
        spawners.threads.push(thread);
    }
    drop(done);
    let mut processes = spawned.iter().collect::<Result<Vec<_>, _>>()?;
    processes.sort_by_key(|p| p.name.slot);
    Ok((processes, spawners))
}

/// Threads that spawned workers in parallel, parked until the pool is done.
#[derive(Default)]
struct Spawners {
    release: Vec<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Spawners {
    fn drop(&mut self) {
        self.release.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
