//! `fibpool stress`'s measurement: workers driven directly, one thread each,
//! with echo frames carrying a sequence number and a checksum; the same
//! patterns with raw frames (length prefix and bytes, no bincode) as the
//! baseline, interleaved with them in slices so both see the same machine.
//! Raw tallies only: the report is built in [`crate::report`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fibpool_protocol::{
    CoordinatorHello, Echo, FrameReader, FrameWriter, MAX_FRAME_LEN, PROTOCOL_VERSION, Reply,
    Request, Response, checksum, checksum_parts, raw,
};
use hdrhistogram::Histogram;

use crate::pool::probe::{
    Connection, Killer, Launcher, Reader, WorkerProcessHandle, Writer, describe_status,
    peak_rss_bytes,
};
use crate::pool::{Host, PoolError, Ssh, StartMethod, Transport, WorkerCommand, WorkerName};
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
/// Echoed payloads the coordinator holds at once, all workers together, about:
/// when a phase's workers times the size exceed it, its round trips take turns
/// for this many bytes of reply buffers (and its workers wait for a turn before
/// they are sent a frame). Sent payloads are one buffer shared by every worker,
/// so this and the size bound what a measurement holds, whatever `-w` is.
pub const REPLY_BYTES: usize = 256 << 20;
/// A reply's bytes beyond its payload, at most: a framed one's fields take
/// 20 (variant, seq, verdict, length), a raw one's header 16.
const REPLY_OVERHEAD: usize = 32;
/// A payload's first bytes are its frame's sequence number and its worker's
/// pid; the rest is the same for every frame of a measurement. From 16
/// bytes up, a payload echoed under another number, or by another worker,
/// fails its checksum; smaller ones hold what of the stamp fits (8 bytes:
/// the sequence number alone).
const STAMP_LEN: usize = 16;

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
    /// How the workers are started.
    pub start_method: StartMethod,
    /// How long a worker has to complete its handshake.
    pub handshake_timeout: Duration,
    /// Alternations of framed and raw slices per measurement (ABBA order).
    pub slices: usize,
    /// Hosts the workers run on, one each in turn (none: this machine),
    /// and how ssh reaches them.
    pub hosts: Vec<Host>,
    pub ssh: Ssh,
}

/// What one codec did in one measurement.
pub struct Tally {
    pub counts: Counts,
    pub elapsed: Duration,
    /// Round trips, in nanoseconds.
    pub rtt: Histogram<u64>,
}

/// What a tally counts: what one worker's driver keeps (a histogram is a
/// quarter of a MiB, so drivers share one).
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub messages: u64,
    /// Payload bytes that crossed the channel, both directions.
    pub payload_bytes: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub corrupted: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.messages += other.messages;
        self.payload_bytes += other.payload_bytes;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.corrupted += other.corrupted;
    }
}

/// Round trips a driver keeps before it records them in its slice's
/// histogram.
const RTT_BATCH: usize = 256;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds")
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            counts: Counts::default(),
            elapsed: Duration::ZERO,
            rtt: histogram(),
        }
    }
}

impl Tally {
    /// Adds another tally measured after this one (elapsed adds up).
    fn add_sequential(&mut self, other: &Tally) {
        self.elapsed += other.elapsed;
        self.counts.add(&other.counts);
        self.rtt.add(&other.rtt).expect("same bounds");
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
        let throughput = rate(cell.framed_flow.counts.payload_bytes, &cell.framed_flow);
        let raw_throughput = rate(cell.raw_flow.counts.payload_bytes, &cell.raw_flow);
        report::StressResult {
            transport: cell.transport.name(),
            pattern: cell.pattern.name(),
            size_bytes: cell.size,
            workers: cell.workers,
            messages: cell.framed_all.counts.messages,
            rtt_p50_seconds: quantile(f, 0.5),
            rtt_p90_seconds: quantile(f, 0.9),
            rtt_p99_seconds: quantile(f, 0.99),
            rtt_p999_seconds: quantile(f, 0.999),
            rtt_max_seconds: f.rtt.max() as f64 * 1e-9,
            rtt_percentiles: report::PERCENTILES
                .iter()
                .map(|&percentile| report::Percentile {
                    percentile,
                    seconds: quantile(f, percentile / 100.0),
                })
                .collect(),
            throughput_bytes_per_second: throughput,
            messages_per_second: rate(cell.framed_flow.counts.messages, &cell.framed_flow),
            lost: cell.framed_all.counts.lost,
            duplicated: cell.framed_all.counts.duplicated,
            corrupted: cell.framed_all.counts.corrupted,
            raw_messages: cell.raw_all.counts.messages,
            raw_rtt_p50_seconds: quantile(r, 0.5),
            raw_rtt_p99_seconds: quantile(r, 0.99),
            raw_throughput_bytes_per_second: raw_throughput,
            raw_lost: cell.raw_all.counts.lost,
            raw_duplicated: cell.raw_all.counts.duplicated,
            raw_corrupted: cell.raw_all.counts.corrupted,
            rtt_p50_ratio: quantile(f, 0.5) / quantile(r, 0.5),
            throughput_ratio: throughput / raw_throughput,
            coordinator_peak_rss_bytes: cell.coordinator_peak_rss_bytes,
            worker_peak_rss_bytes: cell.worker_peak_rss_bytes,
            incidents: cell.incidents.clone(),
        }
    }
}

/// A worker's memory beyond the one frame it holds at a time, at most: its
/// peak RSS echoing 64 MiB payloads was 66 MiB here.
const WORKER_OVERHEAD: u64 = 4 << 20;

/// The memory a plan's largest measurement needs, about: its workers' (one
/// frame each, at most) and the coordinator's (the shared payload and the
/// reply buffers, [`REPLY_BYTES`] at most).
pub fn memory_needed(workers: usize, patterns: &[Pattern], sizes: &[usize]) -> u64 {
    let workers = if patterns.contains(&Pattern::Fanout) {
        workers
    } else {
        1
    } as u64;
    let size = sizes.iter().copied().max().unwrap_or(0) as u64;
    let replies = (workers * (size + REPLY_OVERHEAD as u64)).min(REPLY_BYTES as u64);
    workers * (size + WORKER_OVERHEAD) + size + replies
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
    let workers = phases.iter().map(|p| p.workers).max().unwrap_or(1);
    let budgets: Vec<_> = phases.iter().map(|p| Budget::for_phase(p, size)).collect();
    // One set of workers for every phase (a phase uses the first of them).
    // Each worker alternates between fibpool's framing and raw frames on the
    // same connection, so both are measured on the same processes, placed on
    // the same cores, over the same channel.
    let body = body(size);
    let deadline = plan.handshake_timeout;
    let launchers = if plan.hosts.is_empty() {
        vec![Launcher::new(plan.start_method, &plan.command, deadline)?]
    } else {
        let (launchers, _) = Launcher::for_hosts(
            &plan.hosts,
            Some(1),
            &plan.ssh,
            plan.start_method,
            &plan.command,
            deadline,
        )?;
        launchers
    };
    let mut drivers = (0..workers)
        .map(|slot| {
            let launcher = &launchers[slot % launchers.len()];
            Driver::start(launcher, transport, &body, slot, deadline)
        })
        .collect::<Result<Vec<_>, _>>()?;

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
            let set = &mut drivers[..phase.workers];
            for driver in set.iter_mut() {
                driver.enter(phase, budgets[p].clone());
            }
            for codec in order {
                let (tally, stalled) = run_slice(set, codec, limit)?;
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
        .filter_map(|d| d.child.peak_rss_bytes())
        .max();
    for driver in drivers {
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
        workers,
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
    let killers: Vec<Killer> = drivers.iter().filter_map(|d| d.child.killer()).collect();
    let rtt = Mutex::new(histogram());
    let results = std::thread::scope(|scope| {
        let watchdog = {
            let (progress, finished) = (progress.clone(), finished.clone());
            scope.spawn(move || watch(&killers, &progress, &finished))
        };
        let runs: Vec<_> = drivers
            .iter_mut()
            .map(|driver| {
                let (progress, rtt) = (progress.clone(), &rtt);
                scope.spawn(move || driver.run(codec, limit, &progress, rtt))
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
    let mut total = Tally {
        rtt: rtt.into_inner().unwrap_or_else(PoisonError::into_inner),
        ..Tally::default()
    };
    for result in results {
        // Measured at the same time: the slice lasts as long as the longest.
        let (counts, elapsed) = result?;
        total.counts.add(&counts);
        total.elapsed = total.elapsed.max(elapsed);
    }
    Ok((total, stalled))
}

/// Kills the workers if no driver makes progress for [`STALL_LIMIT`]: their
/// streams then end, and what they had in flight is counted lost. Returns
/// whether it killed them.
fn watch(killers: &[Killer], progress: &AtomicU64, finished: &AtomicBool) -> bool {
    let mut last = progress.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while !finished.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        let now = progress.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > STALL_LIMIT {
            // The drivers reap their workers only after the slice.
            killers.iter().for_each(Killer::kill);
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
    counts: Counts,
    /// Round trips not yet recorded in the slice's histogram, in nanoseconds.
    rtts: Vec<u64>,
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
            self.counts.corrupted += 1;
            return;
        }
        while self.in_flight.front().is_some_and(|f| f.seq < seq) {
            self.in_flight.pop_front();
            self.counts.lost += 1;
        }
        let Some(sent) = self.in_flight.front().filter(|f| f.seq == seq) else {
            self.counts.duplicated += 1;
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
            self.counts.corrupted += 1;
        }
        self.rtts.push(rtt.as_nanos() as u64);
        self.counts.messages += 1;
        let directions = if self.reply == Reply::Payload { 2 } else { 1 };
        self.counts.payload_bytes += (self.size * directions) as u64;
    }

    /// Records the round trips kept so far in `histogram`.
    fn record(&mut self, histogram: &Mutex<Histogram<u64>>) {
        let mut histogram = histogram.lock().unwrap_or_else(PoisonError::into_inner);
        for rtt in self.rtts.drain(..) {
            histogram.saturating_record(rtt);
        }
    }

    /// The stream ended: everything in flight is lost.
    fn close(&mut self) {
        self.counts.lost += self.in_flight.len() as u64;
        self.in_flight.clear();
    }
}

/// The payload every frame of a measurement carries after its stamp: not
/// all zeroes, made once and shared by every worker.
fn body(size: usize) -> Arc<[u8]> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// [`REPLY_BYTES`] shared out in turns: a turn is one reply buffer, kept
/// for the next turn when it is given back, so no turn pays for fresh pages.
struct Budget {
    shelf: Mutex<Shelf>,
    returned: Condvar,
    /// What one turn holds: a reply frame.
    cost: usize,
}

struct Shelf {
    left: usize,
    spare: Vec<Vec<u8>>,
}

impl Budget {
    /// The turns a phase takes, or `None` when its workers' replies all fit
    /// at once.
    fn for_phase(phase: &Phase, size: usize) -> Option<Arc<Budget>> {
        let cost = size + REPLY_OVERHEAD;
        (phase.reply == Reply::Payload && phase.workers.saturating_mul(cost) > REPLY_BYTES).then(
            || {
                Arc::new(Budget {
                    shelf: Mutex::new(Shelf {
                        left: REPLY_BYTES.max(cost),
                        spare: Vec::new(),
                    }),
                    returned: Condvar::new(),
                    cost,
                })
            },
        )
    }

    /// Waits for a turn; returns its buffer.
    fn take(&self) -> Vec<u8> {
        let mut shelf = self.shelf.lock().unwrap_or_else(PoisonError::into_inner);
        while shelf.left < self.cost {
            shelf = self
                .returned
                .wait(shelf)
                .unwrap_or_else(PoisonError::into_inner);
        }
        shelf.left -= self.cost;
        shelf
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.cost))
    }

    fn give(&self, buffer: Vec<u8>) {
        let mut shelf = self.shelf.lock().unwrap_or_else(PoisonError::into_inner);
        shelf.left += self.cost;
        shelf.spare.push(buffer);
        self.returned.notify_one();
    }
}

/// One worker, driven directly: it is sent frames and its answers are read
/// on the same thread.
struct Driver {
    name: WorkerName,
    child: WorkerProcessHandle,
    reader: FrameReader<Reader>,
    writer: Option<FrameWriter<Writer>>,
    /// What the worker is speaking now: framed, or raw with its reply.
    mode: Option<Reply>,
    /// The current phase's.
    window: usize,
    budget: Option<Arc<Budget>>,
    /// Whether the reader's buffer is a turn of `budget`.
    holding: bool,
    /// The sequence number, then the worker's pid.
    stamp: [u8; STAMP_LEN],
    body: Arc<[u8]>,
    ledger: Ledger,
    /// The stream ended; nothing more can be measured on this worker.
    closed: bool,
    /// How it ended, when it did.
    incident: Option<String>,
}

impl Driver {
    fn start(
        launcher: &Launcher,
        transport: Transport,
        body: &Arc<[u8]>,
        slot: usize,
        handshake_timeout: Duration,
    ) -> Result<Driver, PoolError> {
        let (child, mut reader, mut writer) =
            Connection::open(launcher, transport, handshake_timeout, slot)?.into_parts();
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
        // No answer to an echo is bigger than this: a worker that sends one
        // is named for it, and a reply buffer never grows past its turn.
        reader.set_max_len(body.len() + REPLY_OVERHEAD);
        let mut stamp = [0u8; STAMP_LEN];
        stamp[8..].copy_from_slice(&u64::from(name.pid).to_le_bytes());
        Ok(Driver {
            name,
            child,
            reader,
            writer: Some(writer),
            mode: None,
            window: 1,
            budget: None,
            holding: false,
            stamp,
            body: body.clone(),
            ledger: Ledger {
                size: body.len(),
                reply: Reply::Payload,
                next_seq: 0,
                in_flight: VecDeque::new(),
                counts: Counts::default(),
                rtts: Vec::with_capacity(RTT_BATCH),
            },
            closed: false,
            incident: None,
        })
    }

    /// Takes up a phase's reply, window and budget (between slices, with
    /// nothing in flight).
    fn enter(&mut self, phase: &Phase, budget: Option<Arc<Budget>>) {
        self.ledger.reply = phase.reply;
        self.window = phase.window;
        self.budget = budget;
    }

    fn protocol_error(&self, source: fibpool_protocol::Error) -> PoolError {
        PoolError::WorkerProtocol {
            worker: self.name,
            source,
        }
    }

    /// Switches the worker between fibpool's framing and raw frames: a
    /// RawEcho request enters raw mode with the reply it asks for, an empty
    /// raw frame leaves it.
    fn switch_to(&mut self, codec: Codec) -> Result<(), PoolError> {
        let wanted = (codec == Codec::Raw).then_some(self.ledger.reply);
        if wanted == self.mode || self.closed {
            return Ok(());
        }
        let writer = self.writer.as_mut().expect("open until finish");
        let mut sent = Ok(());
        if self.mode.is_some() {
            sent = writer.send_payload(&[]);
        }
        if let (Ok(()), Some(reply)) = (&sent, wanted) {
            sent = writer.send(&Request::RawEcho(reply)).map(drop);
        }
        self.mode = wanted;
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
        rtt: &Mutex<Histogram<u64>>,
    ) -> Result<(Counts, Duration), PoolError> {
        let start = Instant::now();
        let ran = self.switch_to(codec).and_then(|()| {
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
                    return Ok(());
                }
                self.receive()?;
                progress.fetch_add(1, Ordering::Relaxed);
                if self.ledger.rtts.len() >= RTT_BATCH {
                    self.ledger.record(rtt);
                }
            }
        });
        // On every way out, errors included: other workers may be waiting
        // for this turn. What a failed driver had in flight is lost.
        if ran.is_err() {
            self.ledger.close();
        }
        self.give_turn_back();
        ran?;
        let elapsed = start.elapsed();
        self.ledger.record(rtt);
        Ok((std::mem::take(&mut self.ledger.counts), elapsed))
    }

    fn codec(&self) -> Codec {
        match self.mode {
            None => Codec::Framed,
            Some(_) => Codec::Raw,
        }
    }

    /// Before a frame is sent with nothing in flight, waits for a turn of
    /// the budget, if the phase has one, and reads replies into its buffer.
    fn take_turn(&mut self) {
        if let Some(budget) = &self.budget
            && !self.holding
        {
            drop(self.reader.swap_buffer(budget.take()));
            self.holding = true;
        }
    }

    /// With nothing in flight, the turn's buffer goes back to the budget.
    fn give_turn_back(&mut self) {
        if let Some(budget) = &self.budget
            && self.holding
            && self.ledger.in_flight.is_empty()
        {
            budget.give(self.reader.swap_buffer(Vec::new()));
            self.holding = false;
        }
    }

    fn send(&mut self) -> Result<(), PoolError> {
        self.take_turn();
        let seq = self.ledger.next_seq;
        self.ledger.next_seq += 1;
        self.stamp[..8].copy_from_slice(&seq.to_le_bytes());
        let (stamp, rest) = {
            let n = self.body.len().min(STAMP_LEN);
            (&self.stamp[..n], &self.body[n..])
        };
        let sum = checksum_parts(&[stamp, rest]);
        let writer = self.writer.as_mut().expect("open until finish");
        let size = self.ledger.size;
        // Stamped before the write: a worker woken by the write can answer
        // before this thread runs again, and a stamp taken after the write
        // returned would then miss most of the round trip.
        let at = Instant::now();
        // The payload goes out in its two parts, never copied together:
        // framed, after the encoding of the request's other fields, which
        // makes the same bytes as encoding the whole request.
        let sent = match self.mode {
            None => Echo::header(seq, sum, self.ledger.reply, size)
                .and_then(|header| writer.send_parts(&[&header, stamp, rest])),
            Some(_) => writer.send_parts(&[&raw::header(seq, sum), stamp, rest]),
        };
        self.ledger.in_flight.push_back(Sent {
            seq,
            checksum: sum,
            at,
        });
        self.outcome(sent)
    }

    fn receive(&mut self) -> Result<(), PoolError> {
        let received = match self.codec() {
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
                        None => self.ledger.counts.corrupted += 1,
                    }
                    Ok(())
                }
                Ok(None) => Err(io_eof()),
                Err(e) => Err(e),
            },
        };
        let outcome = self.outcome(received);
        self.give_turn_back();
        outcome
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
                    self.codec(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(reply: Reply, workers: usize) -> Phase {
        Phase {
            reply,
            window: 1,
            workers,
        }
    }

    #[test]
    fn only_echoes_that_do_not_fit_at_once_take_turns() {
        let size = 1 << 20;
        let fits = REPLY_BYTES / (size + REPLY_OVERHEAD);
        assert!(Budget::for_phase(&phase(Reply::Payload, fits), size).is_none());
        assert!(Budget::for_phase(&phase(Reply::Ack, 100 * fits), size).is_none());
        let budget = Budget::for_phase(&phase(Reply::Payload, fits + 1), size).unwrap();
        assert_eq!(budget.cost, size + REPLY_OVERHEAD);
        // A frame bigger than the budget still gets one turn.
        let huge = Budget::for_phase(&phase(Reply::Payload, 2), REPLY_BYTES).unwrap();
        let buffer = huge.take();
        assert_eq!(huge.shelf.lock().unwrap().left, 0);
        huge.give(buffer);
    }

    #[test]
    fn a_turn_waits_for_one_given_back_and_gets_its_buffer() {
        let size = REPLY_BYTES / 2 - REPLY_OVERHEAD;
        let budget = Budget::for_phase(&phase(Reply::Payload, 3), size).unwrap();
        let (a, b) = (budget.take(), budget.take());
        assert_eq!(budget.shelf.lock().unwrap().left, 0);
        assert!(a.capacity() >= budget.cost, "{}", a.capacity());
        let given = a.as_ptr();
        // The third turn cannot be had until one is given back (it would
        // overflow `left` otherwise, which the tests' overflow checks catch).
        std::thread::scope(|scope| {
            let third = scope.spawn(|| budget.take());
            budget.give(a);
            let c = third.join().unwrap();
            assert_eq!(c.as_ptr(), given, "a fresh buffer, not the spare one");
            budget.give(c);
        });
        budget.give(b);
        let shelf = budget.shelf.lock().unwrap();
        assert_eq!((shelf.left, shelf.spare.len()), (REPLY_BYTES, 2));
    }
}
