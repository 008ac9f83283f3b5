//! `fibpool stress`'s measurement: workers driven directly, one thread each,
//! with echo frames carrying a sequence number and a checksum; the same
//! patterns with raw frames (length prefix and bytes, no bincode) as the
//! baseline, interleaved with them in slices so both see the same machine.
//! Raw tallies only: the report is built in [`crate::report`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fibpool_protocol::{
    Bytes, CoordinatorHello, Echo, FrameReader, FrameWriter, MAX_FRAME_LEN, PROTOCOL_VERSION,
    Reply, Request, Response, checksum, raw,
};
use hdrhistogram::Histogram;

use crate::pool::probe::{
    Connection, Reader, WorkerProcessHandle, Writer, describe_status, peak_rss_bytes,
};
use crate::pool::{PoolError, Transport, WorkerCommand, WorkerName};
use crate::report;

/// The largest payload a stress frame may carry: the frame cap less room for
/// the echo message's own fields.
pub const MAX_PAYLOAD: usize = MAX_FRAME_LEN - 64;

/// A worker that stops answering for this long is killed, and what it had in
/// flight is counted lost.
const STALL_LIMIT: Duration = Duration::from_secs(10);
/// Frames in flight per worker in a stream, at most (fewer for big frames).
const MAX_WINDOW: usize = 64;
/// Bytes in flight per worker in a stream, about.
const WINDOW_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// One frame in flight, echoed: round-trip latency.
    PingPong,
    /// A window of frames in flight, acknowledged: throughput with backpressure.
    Stream,
    /// Every worker at once, pinged then streamed: contention.
    Fanout,
}

impl Pattern {
    pub fn name(self) -> &'static str {
        match self {
            Pattern::PingPong => "pingpong",
            Pattern::Stream => "stream",
            Pattern::Fanout => "fanout",
        }
    }
}

/// How much each measurement runs, per codec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    Duration(Duration),
    /// Messages in all.
    Count(u64),
}

#[derive(Debug, Clone)]
pub struct StressPlan {
    /// Workers for the fanout pattern; the others use one.
    pub workers: usize,
    pub patterns: Vec<Pattern>,
    pub sizes: Vec<usize>,
    pub transports: Vec<Transport>,
    pub limit: Limit,
    pub command: WorkerCommand,
    /// How long a worker has to complete its handshake.
    pub handshake_timeout: Duration,
    /// Alternations of framed and raw slices per measurement (ABBA order).
    pub slices: usize,
}

/// What one codec did in one measurement.
pub struct Tally {
    pub messages: u64,
    /// Payload bytes that crossed the channel, both directions.
    pub payload_bytes: u64,
    pub elapsed: Duration,
    /// Round trips, in nanoseconds.
    pub rtt: Histogram<u64>,
    pub lost: u64,
    pub duplicated: u64,
    pub corrupted: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            messages: 0,
            payload_bytes: 0,
            elapsed: Duration::ZERO,
            rtt: Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds"),
            lost: 0,
            duplicated: 0,
            corrupted: 0,
        }
    }
}

impl Tally {
    /// Adds another tally measured at the same time (elapsed is the longest).
    fn add_concurrent(&mut self, other: &Tally) {
        self.elapsed = self.elapsed.max(other.elapsed);
        self.add_counts(other);
    }

    /// Adds another tally measured after this one (elapsed adds up).
    fn add_sequential(&mut self, other: &Tally) {
        self.elapsed += other.elapsed;
        self.add_counts(other);
    }

    fn add_counts(&mut self, other: &Tally) {
        self.messages += other.messages;
        self.payload_bytes += other.payload_bytes;
        self.rtt.add(&other.rtt).expect("same bounds");
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.corrupted += other.corrupted;
    }
}

/// One measurement: a transport, a pattern, a size; both codecs.
pub struct Cell {
    pub transport: Transport,
    pub pattern: Pattern,
    pub size: usize,
    pub workers: usize,
    /// Round trips come from here (the ping phase for fanout).
    pub framed_rtt: Tally,
    pub raw_rtt: Tally,
    /// Throughput comes from here (the stream phase for fanout).
    pub framed_flow: Tally,
    pub raw_flow: Tally,
    /// Integrity over every phase.
    pub framed_all: Tally,
    pub raw_all: Tally,
    pub worker_peak_rss_bytes: Option<u64>,
    pub coordinator_peak_rss_bytes: Option<u64>,
    /// What went wrong, in words: a stream that ended, a worker that stalled.
    pub incidents: Vec<String>,
}

impl Cell {
    /// The measurement as reported.
    pub fn result(&self) -> report::StressResult {
        let cell = self;
        let quantile = |t: &Tally, q: f64| t.rtt.value_at_quantile(q) as f64 * 1e-9;
        let rate =
            |amount: u64, t: &Tally| amount as f64 / t.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let (f, r) = (&cell.framed_rtt, &cell.raw_rtt);
        let throughput = rate(cell.framed_flow.payload_bytes, &cell.framed_flow);
        let raw_throughput = rate(cell.raw_flow.payload_bytes, &cell.raw_flow);
        report::StressResult {
            transport: cell.transport.name(),
            pattern: cell.pattern.name(),
            size_bytes: cell.size,
            workers: cell.workers,
            messages: cell.framed_all.messages,
            rtt_p50_seconds: quantile(f, 0.5),
            rtt_p90_seconds: quantile(f, 0.9),
            rtt_p99_seconds: quantile(f, 0.99),
            rtt_p999_seconds: quantile(f, 0.999),
            rtt_max_seconds: f.rtt.max() as f64 * 1e-9,
            throughput_bytes_per_second: throughput,
            messages_per_second: rate(cell.framed_flow.messages, &cell.framed_flow),
            lost: cell.framed_all.lost,
            duplicated: cell.framed_all.duplicated,
            corrupted: cell.framed_all.corrupted,
            raw_messages: cell.raw_all.messages,
            raw_rtt_p50_seconds: quantile(r, 0.5),
            raw_rtt_p99_seconds: quantile(r, 0.99),
            raw_throughput_bytes_per_second: raw_throughput,
            raw_lost: cell.raw_all.lost,
            raw_duplicated: cell.raw_all.duplicated,
            raw_corrupted: cell.raw_all.corrupted,
            rtt_p50_ratio: quantile(f, 0.5) / quantile(r, 0.5),
            throughput_ratio: throughput / raw_throughput,
            coordinator_peak_rss_bytes: cell.coordinator_peak_rss_bytes,
            worker_peak_rss_bytes: cell.worker_peak_rss_bytes,
            incidents: cell.incidents.clone(),
        }
    }
}

/// Runs every measurement of the plan; `progress` hears of each as it starts.
pub fn measure(
    plan: &StressPlan,
    mut progress: impl FnMut(Transport, Pattern, usize),
) -> Result<Vec<report::StressResult>, PoolError> {
    let mut results = Vec::new();
    for &transport in &plan.transports {
        for &pattern in &plan.patterns {
            for &size in &plan.sizes {
                progress(transport, pattern, size);
                let cell = measure_cell(plan, transport, pattern, size)?;
                results.push(cell.result());
            }
        }
    }
    Ok(results)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Framed = 0,
    Raw = 1,
}

/// One phase of a pattern: what workers send back, how many frames each keeps
/// in flight, and how many workers take part.
#[derive(Debug, Clone, Copy)]
struct Phase {
    reply: Reply,
    window: usize,
    workers: usize,
}

fn phases(pattern: Pattern, size: usize, workers: usize) -> Vec<Phase> {
    let ping = |workers| Phase {
        reply: Reply::Payload,
        window: 1,
        workers,
    };
    let stream = |workers| Phase {
        reply: Reply::Ack,
        window: (WINDOW_BYTES / size.max(1)).clamp(2, MAX_WINDOW),
        workers,
    };
    match pattern {
        Pattern::PingPong => vec![ping(1)],
        Pattern::Stream => vec![stream(1)],
        Pattern::Fanout => vec![ping(workers), stream(workers)],
    }
}

fn measure_cell(
    plan: &StressPlan,
    transport: Transport,
    pattern: Pattern,
    size: usize,
) -> Result<Cell, PoolError> {
    let phases = phases(pattern, size, plan.workers);
    // One set of workers per phase. Each worker alternates between fibpool's
    // framing and raw frames on the same connection, so both are measured on
    // the same processes, placed on the same cores, over the same channel.
    let mut drivers = Vec::new();
    for phase in &phases {
        let set = (0..phase.workers)
            .map(|slot| {
                let deadline = plan.handshake_timeout;
                Driver::start(&plan.command, transport, *phase, size, slot, deadline)
            })
            .collect::<Result<Vec<_>, _>>()?;
        drivers.push(set);
    }

    // A count is each codec's messages per pattern: shared out over its
    // phases, slices and workers, the last slices taking what is left
    // (none, once it is sent), so a phase of one worker sends exactly its
    // share and one of w workers at most w - 1 more, and at least w.
    let slice_limit = |p: usize, phase: &Phase, slice: usize| match plan.limit {
        Limit::Duration(d) => Some(SliceLimit::Until(d / (phases.len() * plan.slices) as u32)),
        Limit::Count(k) => {
            let n = phases.len() as u64;
            let w = phase.workers as u64;
            // Every phase sends at least one message per worker.
            let k = (k / n + u64::from((p as u64) < k % n)).max(w);
            let per = k.div_ceil(plan.slices as u64 * w).max(1);
            let sent = per * w * slice as u64;
            (sent < k).then(|| SliceLimit::Messages(per.min((k - sent).div_ceil(w))))
        }
    };
    let mut tallies: Vec<[Tally; 2]> = phases.iter().map(|_| Default::default()).collect();
    let mut incidents = Vec::new();
    for slice in 0..plan.slices {
        // ABBA order: neither codec always goes first.
        let order = if slice % 2 == 0 {
            [Codec::Framed, Codec::Raw]
        } else {
            [Codec::Raw, Codec::Framed]
        };
        for (p, phase) in phases.iter().enumerate() {
            let Some(limit) = slice_limit(p, phase, slice) else {
                continue;
            };
            for codec in order {
                let (tally, stalled) = run_slice(&mut drivers[p], codec, limit)?;
                tallies[p][codec as usize].add_sequential(&tally);
                if stalled {
                    incidents.push(format!(
                        "{codec:?} slice {slice}: no answer for {STALL_LIMIT:?}; the workers were killed"
                    ));
                }
            }
        }
    }

    let worker_peak_rss_bytes = drivers
        .iter()
        .flatten()
        .filter_map(|d| d.child.peak_rss_bytes())
        .max();
    for driver in drivers.into_iter().flatten() {
        incidents.extend(driver.finish());
    }
    let mut framed_all = Tally::default();
    let mut raw_all = Tally::default();
    for [framed, raw] in &tallies {
        framed_all.add_sequential(framed);
        raw_all.add_sequential(raw);
    }
    let mut tallies = tallies.into_iter();
    let [framed_rtt, raw_rtt] = tallies.next().expect("at least one phase");
    let (framed_flow, raw_flow) = match tallies.next() {
        Some([f, r]) => (f, r),
        None => {
            // One phase: it gives both round trips and throughput.
            let (mut f, mut r) = (Tally::default(), Tally::default());
            f.add_sequential(&framed_rtt);
            r.add_sequential(&raw_rtt);
            (f, r)
        }
    };
    Ok(Cell {
        transport,
        pattern,
        size,
        workers: phases.iter().map(|p| p.workers).max().unwrap_or(1),
        framed_rtt,
        raw_rtt,
        framed_flow,
        raw_flow,
        framed_all,
        raw_all,
        worker_peak_rss_bytes,
        coordinator_peak_rss_bytes: peak_rss_bytes("/proc/self/status"),
        incidents,
    })
}

#[derive(Debug, Clone, Copy)]
enum SliceLimit {
    Until(Duration),
    Messages(u64),
}

/// Runs one slice in `codec` on every driver of a set at once (one thread
/// each) and adds up what they did. A watchdog kills workers that stop
/// answering; the flag says whether it had to.
fn run_slice(
    drivers: &mut [Driver],
    codec: Codec,
    limit: SliceLimit,
) -> Result<(Tally, bool), PoolError> {
    let progress = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let pids: Vec<u32> = drivers.iter().map(|d| d.child.pid()).collect();
    let results = std::thread::scope(|scope| {
        let watchdog = {
            let (progress, finished) = (progress.clone(), finished.clone());
            scope.spawn(move || watch(&pids, &progress, &finished))
        };
        let runs: Vec<_> = drivers
            .iter_mut()
            .map(|driver| {
                let progress = progress.clone();
                scope.spawn(move || driver.run(codec, limit, &progress))
            })
            .collect();
        let results: Vec<_> = runs
            .into_iter()
            .map(|r| r.join().expect("a driver thread does not panic"))
            .collect();
        finished.store(true, Ordering::Relaxed);
        let stalled = watchdog.join().expect("the watchdog does not panic");
        (results, stalled)
    });
    let (results, stalled) = results;
    let mut total = Tally::default();
    for tally in results {
        total.add_concurrent(&tally?);
    }
    Ok((total, stalled))
}

/// Kills the workers if no driver makes progress for [`STALL_LIMIT`]: their
/// streams then end, and what they had in flight is counted lost. Returns
/// whether it killed them.
fn watch(pids: &[u32], progress: &AtomicU64, finished: &AtomicBool) -> bool {
    let mut last = progress.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while !finished.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        let now = progress.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > STALL_LIMIT {
            for &pid in pids {
                // SAFETY: kill(2) on a process group whose leader the driver has not reaped.
                unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
            }
            return true;
        }
    }
    false
}

/// Frames sent and not yet answered, and the counts.
struct Ledger {
    size: usize,
    reply: Reply,
    next_seq: u64,
    in_flight: VecDeque<Sent>,
    tally: Tally,
}

struct Sent {
    seq: u64,
    checksum: u64,
    at: Instant,
}

impl Ledger {
    /// Records an answer. Answers come in order on one channel, so frames
    /// before `seq` still in flight were lost; an answer for a frame already
    /// answered is a duplicate; one for a frame never sent is corrupt.
    fn answer(&mut self, seq: u64, intact: bool, echoed: Option<&[u8]>, at: Instant) {
        if seq >= self.next_seq {
            self.tally.corrupted += 1;
            return;
        }
        while self.in_flight.front().is_some_and(|f| f.seq < seq) {
            self.in_flight.pop_front();
            self.tally.lost += 1;
        }
        let Some(sent) = self.in_flight.front().filter(|f| f.seq == seq) else {
            self.tally.duplicated += 1;
            return;
        };
        let sent_checksum = sent.checksum;
        let rtt = at.saturating_duration_since(sent.at);
        self.in_flight.pop_front();
        let echo_ok = match (self.reply, echoed) {
            (Reply::Ack, _) => true,
            (Reply::Payload, Some(data)) => {
                data.len() == self.size && checksum(data) == sent_checksum
            }
            (Reply::Payload, None) => false,
        };
        if !(intact && echo_ok) {
            self.tally.corrupted += 1;
        }
        self.tally.rtt.saturating_record(rtt.as_nanos() as u64);
        self.tally.messages += 1;
        let directions = if self.reply == Reply::Payload { 2 } else { 1 };
        self.tally.payload_bytes += (self.size * directions) as u64;
    }

    /// The stream ended: everything in flight is lost.
    fn close(&mut self) {
        self.tally.lost += self.in_flight.len() as u64;
        self.in_flight.clear();
    }
}

/// One worker, driven directly: it is sent frames and its answers are read
/// on the same thread.
struct Driver {
    name: WorkerName,
    child: WorkerProcessHandle,
    reader: FrameReader<Reader>,
    writer: Option<FrameWriter<Writer>>,
    /// What the worker is speaking now.
    codec: Codec,
    window: usize,
    data: Vec<u8>,
    ledger: Ledger,
    /// The stream ended; nothing more can be measured on this worker.
    closed: bool,
    /// How it ended, when it did.
    incident: Option<String>,
}

impl Driver {
    fn start(
        command: &WorkerCommand,
        transport: Transport,
        phase: Phase,
        size: usize,
        slot: usize,
        handshake_timeout: Duration,
    ) -> Result<Driver, PoolError> {
        let (child, mut reader, mut writer) =
            Connection::open(command, transport, handshake_timeout, slot)?.into_parts();
        let name = child.name;
        let protocol = |source| PoolError::WorkerProtocol {
            worker: name,
            source,
        };
        let watchdog = child.kill_after(handshake_timeout);
        let handshake = writer
            .send(&Request::Hello(CoordinatorHello {
                version: PROTOCOL_VERSION,
                pid: std::process::id(),
            }))
            .map_err(protocol)
            .and_then(|_| match reader.recv_handshake::<Response>() {
                Ok(Some(Response::Ready(_))) => Ok(()),
                Ok(other) => Err(PoolError::WorkerMisbehaved {
                    worker: name,
                    what: format!("answered its handshake with {other:?}"),
                }),
                Err(e) => Err(protocol(e)),
            });
        if watchdog.disarm() {
            return Err(PoolError::HandshakeTimeout {
                worker: name,
                timeout: handshake_timeout,
            });
        }
        handshake?;
        // Not all zeroes, and different for every worker: a swapped or shifted
        // payload cannot pass for another.
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ ((name.pid as u64) << 32);
        let data = (0..size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        Ok(Driver {
            name,
            child,
            reader,
            writer: Some(writer),
            codec: Codec::Framed,
            window: phase.window,
            data,
            ledger: Ledger {
                size,
                reply: phase.reply,
                next_seq: 0,
                in_flight: VecDeque::new(),
                tally: Tally::default(),
            },
            closed: false,
            incident: None,
        })
    }

    fn protocol_error(&self, source: fibpool_protocol::Error) -> PoolError {
        PoolError::WorkerProtocol {
            worker: self.name,
            source,
        }
    }

    /// Switches the worker between fibpool's framing and raw frames: a
    /// RawEcho request enters raw mode, an empty raw frame leaves it.
    fn switch_to(&mut self, codec: Codec) -> Result<(), PoolError> {
        if codec == self.codec || self.closed {
            return Ok(());
        }
        let writer = self.writer.as_mut().expect("open until finish");
        let sent = match codec {
            Codec::Raw => writer.send(&Request::RawEcho(self.ledger.reply)).map(drop),
            Codec::Framed => writer.send_payload(&[]),
        };
        self.codec = codec;
        self.outcome(sent)
    }

    /// Sends and receives until the limit, then waits for every answer. It
    /// only ever waits with a frame in flight: with the time limit, the limit
    /// can pass between two checks, and waiting then would wait for ever.
    fn run(
        &mut self,
        codec: Codec,
        limit: SliceLimit,
        progress: &AtomicU64,
    ) -> Result<Tally, PoolError> {
        self.switch_to(codec)?;
        let start = Instant::now();
        let mut sent = 0u64;
        let more = |sent: u64| match limit {
            SliceLimit::Until(d) => start.elapsed() < d,
            SliceLimit::Messages(k) => sent < k,
        };
        loop {
            while !self.closed && self.ledger.in_flight.len() < self.window && more(sent) {
                self.send()?;
                sent += 1;
            }
            if self.closed || self.ledger.in_flight.is_empty() {
                break;
            }
            self.receive()?;
            progress.fetch_add(1, Ordering::Relaxed);
        }
        let mut tally = std::mem::take(&mut self.ledger.tally);
        tally.elapsed = start.elapsed();
        Ok(tally)
    }

    fn send(&mut self) -> Result<(), PoolError> {
        let seq = self.ledger.next_seq;
        self.ledger.next_seq += 1;
        let stamp = seq.to_le_bytes();
        let n = self.data.len().min(8);
        self.data[..n].copy_from_slice(&stamp[..n]);
        let sum = checksum(&self.data);
        let writer = self.writer.as_mut().expect("open until finish");
        // Stamped before the write: a worker woken by the write can answer
        // before this thread runs again, and a stamp taken after the write
        // returned would then miss most of the round trip.
        let at = Instant::now();
        let sent = match self.codec {
            Codec::Framed => writer
                .send(&Request::Echo(Echo {
                    seq,
                    checksum: sum,
                    reply: self.ledger.reply,
                    payload: Bytes::borrowed(&self.data),
                }))
                .map(drop),
            Codec::Raw => writer.send_parts(&[&raw::header(seq, sum), &self.data]),
        };
        self.ledger.in_flight.push_back(Sent {
            seq,
            checksum: sum,
            at,
        });
        self.outcome(sent)
    }

    fn receive(&mut self) -> Result<(), PoolError> {
        let received = match self.codec {
            Codec::Framed => match self.reader.recv::<Response>() {
                Ok(Some(Response::Echo(reply))) => {
                    let at = Instant::now();
                    let echoed =
                        (self.ledger.reply == Reply::Payload).then(|| reply.payload.as_slice());
                    self.ledger.answer(reply.seq, reply.intact, echoed, at);
                    Ok(())
                }
                Ok(Some(other)) => {
                    return Err(PoolError::WorkerMisbehaved {
                        worker: self.name,
                        what: format!("answered an echo with {other:?}"),
                    });
                }
                Ok(None) => Err(io_eof()),
                Err(e) => Err(e),
            },
            Codec::Raw => match self.reader.recv_payload() {
                Ok(Some(frame)) => {
                    let at = Instant::now();
                    match raw::split(frame) {
                        Some((seq, status, data)) => {
                            let echoed = (self.ledger.reply == Reply::Payload).then_some(data);
                            self.ledger.answer(seq, status == raw::INTACT, echoed, at);
                        }
                        None => self.ledger.tally.corrupted += 1,
                    }
                    Ok(())
                }
                Ok(None) => Err(io_eof()),
                Err(e) => Err(e),
            },
        };
        self.outcome(received)
    }

    /// A stream that ended or broke (a killed worker) closes the driver, and
    /// what was in flight is lost; any other error stops the measurement.
    fn outcome(&mut self, result: Result<(), fibpool_protocol::Error>) -> Result<(), PoolError> {
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.is_disconnect() => {
                self.incident = Some(format!(
                    "{} ({:?}, seq {}): the stream ended with {} frames in flight ({e})",
                    self.name,
                    self.codec,
                    self.ledger.next_seq,
                    self.ledger.in_flight.len()
                ));
                self.closed = true;
                self.ledger.close();
                Ok(())
            }
            Err(e) => Err(self.protocol_error(e)),
        }
    }

    /// Ends the worker: Shutdown (back in framed mode), then the end of its
    /// input; then reaps it. Returns what went wrong with it, if anything.
    fn finish(mut self) -> Option<String> {
        if self.switch_to(Codec::Framed).is_ok()
            && let Some(writer) = &mut self.writer
        {
            let _ = writer.send(&Request::Shutdown);
        }
        self.writer = None;
        let status = self.child.reap(Duration::from_secs(5));
        let mut incident = self.incident.take()?;
        match status {
            Ok(status) => incident += &format!("; the worker {}", describe_status(status)),
            Err(e) => incident += &format!("; the worker could not be reaped ({e})"),
        }
        Some(incident)
    }
}

/// The end of a stream where an answer was due.
fn io_eof() -> fibpool_protocol::Error {
    std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()
}
