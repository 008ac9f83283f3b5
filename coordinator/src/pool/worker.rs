//! One worker process as the pool sees it: the handshake sent, a reader
//! thread that turns the worker's output into events, the stamps of its life,
//! and reaping. Its `OwnedChild` kills and reaps it when dropped.

use std::io;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fibpool_protocol::frame::size_class;
use fibpool_protocol::packed::{END_LEN, runs_len_bound};
use fibpool_protocol::{
    BUFFER_CAPACITY, Chunk, CoordinatorHello, Encoding, FrameReader, FrameWriter, MAX_FRAME_LEN,
    PART_BYTES, PROTOCOL_VERSION, RESERVED_AHEAD, Request, Response, WorkerHello,
};

use super::board::{Values, recycled_buffer};
use super::child::OwnedChild;
use super::error::{PoolError, WorkerName};
use super::launch::{Launch, Started, start};
use super::stats::Phases;
use super::tasks::CHUNK_BYTES_BUDGET;
use super::transport::Budget;
use super::transport::{Reader, Transport, Writer};

/// What a reader thread reports. `worker` is the process's pool-unique id, so
/// late events from a process that was already replaced can be told apart.
pub(crate) enum Event {
    Response {
        worker: u64,
        response: Response<'static>,
        at: Instant,
    },
    /// A chunk's result, its values left in the frame they came in.
    Computed {
        worker: u64,
        id: u64,
        busy_ns: u64,
        values: Values,
        at: Instant,
    },
    /// The worker's frames broke a rule of the protocol that decoding
    /// alone does not see (`chunk`: the chunk it is to blame on, if any);
    /// the reader stops.
    Misbehaved {
        worker: u64,
        what: String,
        chunk: Option<u64>,
    },
    /// The worker's stdout ended: cleanly (`None`) or with a bad frame.
    Closed {
        worker: u64,
        error: Option<fibpool_protocol::Error>,
    },
}

/// The stamps of one worker process's life, from which its phases follow.
#[derive(Debug, Clone)]
pub(crate) struct Lifeline {
    /// When the pool began to build.
    pub pool_started: Instant,
    /// When the spawn call began, on the Instant clock and on CLOCK_MONOTONIC.
    pub spawned_at: Instant,
    pub spawned_at_ns: u64,
    /// How long the spawn call took.
    pub spawn_call: Duration,
    /// The host it runs on, when not this machine: its clock stamps are
    /// then its own, and only durations between them mean anything here.
    pub host: Option<String>,
    /// When the handshake was decoded, and the handshake (the worker's own stamps).
    pub ready: Option<(Instant, WorkerHello)>,
    /// When the first result was decoded.
    pub first_result: Option<Instant>,
    /// When Shutdown was sent, and when the process was reaped.
    pub shutdown_sent: Option<Instant>,
    pub reaped: Option<Instant>,
}

impl Lifeline {
    /// When the worker became usable: its handshake decoded and its spawn
    /// call returned. The reader thread starts before the spawn, so on a busy
    /// machine it can decode the handshake before the spawning thread runs
    /// again, and the pool cannot send work before then.
    pub fn ready_at(&self) -> Option<Instant> {
        let (decoded, _) = self.ready.as_ref()?;
        Some((*decoded).max(self.spawned_at + self.spawn_call))
    }

    pub fn phases(&self) -> Phases {
        let ready_at = self.ready_at();
        let hello = self.ready.as_ref().map(|(_, hello)| hello);
        // The worker's stamps share our clock only on the same machine: on
        // another host, `exec` (from our spawn to its main) has no meaning,
        // and `init` is a duration on its clock.
        let ready = ready_at.map(|at| at - self.spawned_at);
        let exec = hello
            .filter(|_| self.host.is_none())
            .and_then(|h| h.main_entered_ns.checked_sub(self.spawned_at_ns))
            .map(Duration::from_nanos)
            .filter(|exec| ready.is_some_and(|ready| *exec <= ready));
        let init = hello
            .and_then(|h| h.ready_ns.checked_sub(h.main_entered_ns))
            .map(Duration::from_nanos)
            .filter(|_| exec.is_some() || self.host.is_some());
        Phases {
            started_seconds: self
                .spawned_at
                .saturating_duration_since(self.pool_started)
                .as_secs_f64(),
            spawn_seconds: self.spawn_call.as_secs_f64(),
            exec_seconds: exec.map(|d| d.as_secs_f64()),
            init_seconds: init.map(|d| d.as_secs_f64()),
            ready_seconds: ready.map(|d| d.as_secs_f64()),
            first_task_seconds: ready_at
                .zip(self.first_result)
                .map(|(ready, first)| (first - ready).as_secs_f64()),
            shutdown_seconds: self
                .shutdown_sent
                .zip(self.reaped)
                .map(|(sent, reaped)| (reaped - sent).as_secs_f64()),
        }
    }
}

pub(crate) struct WorkerProcess {
    pub id: u64,
    pub name: WorkerName,
    pub life: Lifeline,
    /// How much may wait unread in its input.
    pub budget: Budget,
    /// A request is partly written, the rest buffered: nothing more may be
    /// sent until [`WorkerProcess::drain`] has written it out.
    pub draining: bool,
    child: OwnedChild,
    input: Option<FrameWriter<Writer>>,
    /// What the chunks sent so far ask of its answers, for its reader.
    asked: Arc<Asked>,
}

impl WorkerProcess {
    /// Starts a worker and sends it the coordinator's handshake. The worker's
    /// own handshake arrives later as an [`Event::Response`]; every event is
    /// wrapped by `wrap` for the channel it goes to.
    /// Starts a worker whose reader thread hands each event to `deliver`
    /// until it returns false.
    pub fn spawn(
        launcher: &dyn Launch,
        transport: Transport,
        connect_timeout: Duration,
        slot: usize,
        id: u64,
        pool_started: Instant,
        deliver: impl Fn(Event) -> bool + Send + 'static,
    ) -> Result<Self, PoolError> {
        let asked = Arc::new(Asked::default());
        let cap = asked.clone();
        // Both start before the process, while the pipes are still empty:
        // the Hello waits in the worker's input, the reader on its output.
        let channel = |reader: Reader, writer: Writer| {
            // Its writes do not block: no request may outgrow the buffer
            // (they are tens of kilobytes at most), else one met by a full
            // pipe halfway would lose its tail.
            let mut input =
                FrameWriter::with_max_len(writer, BUFFER_CAPACITY - fibpool_protocol::HEADER_LEN);
            // A worker that is already gone shows up as a Closed event from the reader.
            let _ = input.send(&Request::Hello(CoordinatorHello {
                version: PROTOCOL_VERSION,
                pid: std::process::id(),
            }));
            std::thread::Builder::new()
                .name(format!("fibpool-reader-{slot}"))
                .spawn(move || read_events(reader, id, cap, deliver))
                .map_err(|source| PoolError::Spawn {
                    command: "a reader thread".to_owned(),
                    source,
                })?;
            Ok(input)
        };
        let (
            Started {
                child,
                spawned_at,
                spawned_at_ns,
                spawn_call,
                budget,
            },
            input,
        ) = start(launcher, transport, connect_timeout, true, channel)?;
        let name = WorkerName {
            slot,
            pid: child.pid(),
            remote: launcher.host().is_some(),
        };
        let process = WorkerProcess {
            id,
            name,
            budget,
            draining: false,
            life: Lifeline {
                pool_started,
                spawned_at,
                spawned_at_ns,
                spawn_call,
                host: launcher.host(),
                ready: None,
                first_result: None,
                shutdown_sent: None,
                reaped: None,
            },
            child,
            input: Some(input),
            asked,
        };
        Ok(process)
    }

    /// Sends a request, never blocking: when the worker's input is full,
    /// the rest of the frame stays buffered and the worker is `draining`.
    /// Requests are far smaller than the writer's buffer, so a frame is
    /// whole in it before any of it is written.
    pub fn send(&mut self, request: &Request) -> Result<(), fibpool_protocol::Error> {
        debug_assert!(!self.draining, "a send on a draining worker");
        if let Request::Compute(chunk) = request {
            self.asked
                .cap
                .fetch_max(answer_bound(chunk), Ordering::Release);
            if chunk.encoding != Encoding::Raw {
                lock(&self.asked.text).insert(chunk.id, chunk.encoding);
            }
        }
        match &mut self.input {
            Some(input) => match input.send(request) {
                Ok(_) => Ok(()),
                Err(fibpool_protocol::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.draining = true;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe).into()),
        }
    }

    /// Writes out what a send left buffered, as far as the worker's input
    /// takes it now. A worker whose input is gone stops draining: its
    /// reader reports the end.
    pub fn drain(&mut self) {
        let Some(input) = &mut self.input else {
            self.draining = false;
            return;
        };
        match input.flush() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            _ => self.draining = false,
        }
    }

    /// Sends Shutdown and closes the worker's input, so it exits either way.
    pub fn shutdown(&mut self) {
        self.life.shutdown_sent = Some(Instant::now());
        if !self.draining {
            let _ = self.send(&Request::Shutdown);
        }
        self.input = None;
    }

    /// SIGKILL to the worker's process group, unless it was already reaped.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// A remote worker's handshake came: it is named, and killed, by its
    /// pid there.
    pub fn remote_pid(&mut self, pid: u32) {
        self.name.pid = pid;
        self.child.remote_pid(pid);
    }

    /// Waits up to `grace` for the worker to exit, then kills it; reaps it either way.
    pub fn reap(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.reap_noting_kill(grace).map(|(status, _)| status)
    }

    /// As [`WorkerProcess::reap`], and whether it had to be killed.
    pub fn reap_noting_kill(&mut self, grace: Duration) -> io::Result<(ExitStatus, bool)> {
        let first = self.life.reaped.is_none();
        let reaped = self.child.reap_noting_kill(grace)?;
        if first {
            self.life.reaped = Some(Instant::now());
        }
        Ok(reaped)
    }

    /// Whether the process has exited, without waiting (see
    /// [`super::child::Process::exited`]).
    pub fn exited(&self) -> bool {
        self.child.exited()
    }

    pub fn is_ready(&self) -> bool {
        self.life.ready.is_some()
    }

    /// See [`super::child::Process::collateral`].
    pub fn collateral(&self) -> bool {
        self.child.collateral()
    }
}

fn read_events(reader: Reader, worker: u64, asked: Arc<Asked>, deliver: impl Fn(Event) -> bool) {
    let mut frames = FrameReader::new(reader);
    // A frame's buffer is one that values already used gave back, if any.
    frames.set_buffers(recycled_buffer);
    let mut first = true;
    let mut answer = None;
    loop {
        let next = if first {
            first = false;
            frames.recv_handshake::<Response>().map(|r| {
                r.map(|response| Event::Response {
                    worker,
                    response: response.into_owned(),
                    at: Instant::now(),
                })
            })
        } else {
            next_event(&mut frames, worker, &mut answer, &asked)
        };
        let event = match next {
            Ok(Some(event)) => event,
            Ok(None) => Event::Closed {
                worker,
                error: None,
            },
            Err(error) => Event::Closed {
                worker,
                error: Some(error),
            },
        };
        let last = matches!(event, Event::Closed { .. } | Event::Misbehaved { .. });
        if !deliver(event) || last {
            return;
        }
    }
}

/// The most bytes (values and ends tables) a chunk's answer takes in all
/// its frames, unless its own values may take more: chunks are cut to
/// answers of at most [`CHUNK_BYTES_BUDGET`], or of one value, and a value
/// bigger than that raises its worker's cap ([`answer_bound`]) before it is
/// asked for.
pub(crate) const MAX_ANSWER_BYTES: usize = MAX_FRAME_LEN;

const _: () = assert!(CHUNK_BYTES_BUDGET <= MAX_ANSWER_BYTES as u64);

/// An upper bound on the bytes of a chunk's answer, from its runs: what a
/// worker that answers it may send.
pub(crate) fn answer_bound(chunk: &Chunk) -> u64 {
    runs_len_bound(&chunk.runs, chunk.encoding)
}

/// What the chunks sent to a worker ask of its answers, shared with its
/// reader: set before a chunk goes out.
#[derive(Default)]
struct Asked {
    /// The most bytes an answer of the chunks sent so far may take.
    cap: AtomicU64,
    /// The chunks not yet answered whose values are text, and in which
    /// encoding: their bytes must be its digits.
    text: Mutex<HashMap<u64, Encoding>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Text values must be digits of their encoding, at least one each: a
/// worker that sends other bytes (a newline, a tab, an escape) would break
/// or misplace the lines printed from them. What is wrong, if anything.
fn check_text(bytes: &[u8], empty: bool, encoding: Encoding) -> Option<String> {
    let (name, bad) = match encoding {
        Encoding::Raw => return None,
        Encoding::Decimal => ("decimal", first_not(bytes, |b| b.wrapping_sub(b'0') >= 10)),
        Encoding::Hex => (
            "hex",
            first_not(bytes, |b| {
                (b.wrapping_sub(b'0') >= 10) & (b.wrapping_sub(b'a') >= 6)
            }),
        ),
    };
    if empty {
        return Some(format!("an empty {name} value"));
    }
    bad.map(|byte| format!("the byte {byte:#04x} in a {name} value"))
}

/// The first byte that is `bad`, with AVX2 where the CPU has it (the
/// build targets plain x86-64): a hex run's 0.87 GB of digits took about
/// 35 ms of CPU to look at in 16-byte steps.
fn first_not(bytes: &[u8], bad: impl Fn(u8) -> bool + Copy) -> Option<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: this CPU has AVX2.
        return unsafe { first_not_avx2(bytes, bad) };
    }
    first_not_here(bytes, bad)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn first_not_avx2(bytes: &[u8], bad: impl Fn(u8) -> bool + Copy) -> Option<u8> {
    first_not_here(bytes, bad)
}

/// Blocks are looked at whole, OR-ing a flag per byte with no early exit
/// inside, which the compiler vectorises.
#[inline(always)]
fn first_not_here(bytes: &[u8], bad: impl Fn(u8) -> bool + Copy) -> Option<u8> {
    let block = bytes
        .chunks(4096)
        .find(|block| block.iter().fold(0u8, |any, &b| any | u8::from(bad(b))) != 0)?;
    block.iter().copied().find(|&b| bad(b))
}

/// A chunk's answer while its parts arrive.
pub(crate) struct Answer {
    id: u64,
    values: Values,
    bytes: usize,
    /// The last part was short: a value in pieces must come next.
    short: bool,
    /// A value in pieces, as far as it came: its buffer (with room for its
    /// ends entry) and its length.
    piece: Option<(Vec<u8>, usize)>,
}

/// Decodes the next frame. A chunk's values stay in the buffers of the
/// frames they came in, which the event takes over; the parts of an answer
/// are gathered in `answer` until its last frame, a value in pieces in one
/// buffer of its own. `cap` is what the chunks asked of this worker allow
/// an answer beyond [`MAX_ANSWER_BYTES`]. Anything else is copied out.
fn next_event(
    frames: &mut FrameReader<Reader>,
    worker: u64,
    answer: &mut Option<Answer>,
    asked: &Asked,
) -> Result<Option<Event>, fibpool_protocol::Error> {
    let cap = &asked.cap;
    loop {
        let Some(payload) = frames.recv_payload()? else {
            return Ok(None);
        };
        let misbehaved = |what: String, chunk: Option<u64>| {
            Ok(Some(Event::Misbehaved {
                worker,
                what,
                chunk,
            }))
        };
        let cap = (cap.load(Ordering::Acquire) as usize).max(MAX_ANSWER_BYTES);
        let (id, busy_ns, packed, last) =
            match fibpool_protocol::codec::decode::<Response>(payload)? {
                Response::Computed(result) => (result.id, result.busy_ns, result.values, true),
                Response::Part(part) => (part.id, 0, part.values, false),
                Response::Piece(piece) => {
                    let text = lock(&asked.text).get(&piece.id).copied();
                    let bytes = piece.bytes.as_slice();
                    if let Some(what) = text.and_then(|e| check_text(bytes, false, e)) {
                        let what = format!("sent {what} for chunk {}", piece.id);
                        return misbehaved(what, Some(piece.id));
                    }
                    match take_piece(answer, piece.id, piece.len, bytes, cap) {
                        Ok(()) => continue,
                        Err((what, chunk)) => return misbehaved(what, chunk),
                    }
                }
                other => {
                    // Whatever the worker was answering will not be finished.
                    *answer = None;
                    return Ok(Some(Event::Response {
                        worker,
                        response: other.into_owned(),
                        at: Instant::now(),
                    }));
                }
            };
        if let Some(open) = answer.as_ref() {
            if open.id != id {
                let what = format!(
                    "sent values for chunk {id} before finishing chunk {}",
                    open.id
                );
                return misbehaved(what, None);
            }
            if let Some((_, len)) = &open.piece {
                let what = format!(
                    "sent values for chunk {id} before the end of its value of {len} bytes"
                );
                return misbehaved(what, Some(id));
            }
            if open.short {
                let what =
                    format!("sent a short part of chunk {id} not followed by a value in pieces");
                return misbehaved(what, None);
            }
        }
        let text = if last {
            lock(&asked.text).remove(&id)
        } else {
            lock(&asked.text).get(&id).copied()
        };
        if let Some(encoding) = text {
            let empty = packed.iter().any(<[u8]>::is_empty);
            if let Some(what) = check_text(packed.data(), empty, encoding) {
                return misbehaved(format!("sent {what} for chunk {id}"), Some(id));
            }
        }
        let short = !last && packed.data().len() < PART_BYTES;
        if short && packed.is_empty() {
            let what = format!("sent an empty part of chunk {id}");
            return misbehaved(what, None);
        }
        let bytes =
            answer.as_ref().map_or(0, |a| a.bytes) + packed.ends().len() + packed.data().len();
        if bytes > cap {
            let what = format!("sent more than {cap} bytes for chunk {id}");
            return misbehaved(what, Some(id));
        }
        // Decoding borrows both blocks from the payload: keep where they lie.
        let within = |part: &[u8]| {
            let start = (part.as_ptr() as usize).checked_sub(payload.as_ptr() as usize)?;
            (start + part.len() <= payload.len()).then_some(start..start + part.len())
        };
        let piece = match (within(packed.ends()), within(packed.data())) {
            (Some(ends), Some(data)) => {
                let mut buf = frames.take_payload();
                // A buffer given from elsewhere (a test's, say) may be
                // bigger than its frame's class: held in a batch's window a
                // buffer counts at its capacity. Within its class (every
                // buffer the reader sizes, and as a rule one grown by
                // doubling past what it reserves ahead) it is kept whole, to be
                // recycled for frames of that class. Blocks shrink in place,
                // without a copy.
                if buf.capacity() > size_class(buf.len()) {
                    buf.shrink_to_fit();
                }
                Values::in_frame(buf, ends, data)
            }
            // Not borrowed after all: copy them.
            _ => Values::copied(&packed),
        };
        let mut values = match answer.take() {
            Some(open) => open.values,
            None => Values::default(),
        };
        values.append(piece);
        if !last {
            *answer = Some(Answer {
                id,
                values,
                bytes,
                short,
                piece: None,
            });
            continue;
        }
        return Ok(Some(Event::Computed {
            worker,
            id,
            busy_ns,
            values,
            at: Instant::now(),
        }));
    }
}

/// Adds a piece of a value to the answer it belongs to; once the value is
/// whole, it is the answer's next value. The error: what the worker did
/// wrong, and the chunk it is to blame on.
fn take_piece(
    answer: &mut Option<Answer>,
    id: u64,
    len: u64,
    bytes: &[u8],
    cap: usize,
) -> Result<(), (String, Option<u64>)> {
    let open = answer.get_or_insert_with(|| Answer {
        id,
        values: Values::default(),
        bytes: 0,
        short: false,
        piece: None,
    });
    if open.id != id {
        let what = format!(
            "sent a value for chunk {id} before finishing chunk {}",
            open.id
        );
        return Err((what, None));
    }
    open.short = false;
    let (buf, whole) = match &mut open.piece {
        Some((buf, whole)) => (buf, *whole),
        None => {
            let room = cap.saturating_sub(open.bytes + END_LEN) as u64;
            if len <= PART_BYTES as u64 || len > room {
                let what = format!(
                    "sent a value of {len} bytes in pieces for chunk {id}, \
                     where one of more than {PART_BYTES} and at most {room} may come"
                );
                return Err((what, Some(id)));
            }
            let len = len as usize;
            (&mut open.piece.insert((Vec::new(), len)).0, len)
        }
    };
    if len != whole as u64 || bytes.is_empty() || buf.len() + bytes.len() > whole {
        let what = format!(
            "sent a piece of {} bytes (of a value of {len}) for chunk {id}, \
             after {} bytes of a value of {whole}",
            bytes.len(),
            buf.len()
        );
        return Err((what, Some(id)));
    }
    // Reserved as its bytes come, at most RESERVED_AHEAD beyond them (as
    // frames are): a length announced is never reserved before it is sent.
    // Large buffers grow by mremap, without a copy.
    let needed = buf.len() + bytes.len();
    if buf.capacity() < needed {
        let target = (whole + END_LEN).min(needed.saturating_add(RESERVED_AHEAD));
        if let Err(e) = buf.try_reserve_exact(target - buf.len()) {
            let what = format!(
                "sent a value of {whole} bytes for chunk {id}, which memory cannot hold ({e})"
            );
            return Err((what, Some(id)));
        }
    }
    buf.extend_from_slice(bytes);
    if buf.len() == whole {
        let (mut buf, _) = open.piece.take().expect("a value in pieces is open");
        let Ok(end) = u32::try_from(whole) else {
            return Err((
                format!("sent a value of {whole} bytes for chunk {id}, past an end's u32"),
                Some(id),
            ));
        };
        buf.extend_from_slice(&end.to_le_bytes());
        open.values
            .append(Values::in_frame(buf, whole..whole + END_LEN, 0..whole));
        open.bytes += whole + END_LEN;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_are_digits_of_their_encoding() {
        let decimal = Encoding::Decimal;
        assert_eq!(check_text(b"0123456789", false, decimal), None);
        assert_eq!(check_text(b"", false, decimal), None, "no values at all");
        assert_eq!(
            check_text(b"12a", false, decimal).as_deref(),
            Some("the byte 0x61 in a decimal value")
        );
        assert_eq!(check_text(b"0123456789abcdef", false, Encoding::Hex), None);
        let long = [b"0".repeat(1000), b"A".to_vec()].concat();
        assert_eq!(
            check_text(&long, false, Encoding::Hex).as_deref(),
            Some("the byte 0x41 in a hex value"),
            "past the first block"
        );
        assert_eq!(
            check_text(b"12", true, decimal).as_deref(),
            Some("an empty decimal value")
        );
        assert_eq!(check_text(b"\n\x1b", false, Encoding::Raw), None);
    }

    fn lifeline(spawn_call_us: u64, decoded_after_us: u64) -> Lifeline {
        let spawned_at = Instant::now();
        let spawned_at_ns = 1_000_000;
        Lifeline {
            pool_started: spawned_at - Duration::from_micros(5),
            spawned_at,
            spawned_at_ns,
            spawn_call: Duration::from_micros(spawn_call_us),
            host: None,
            ready: Some((
                spawned_at + Duration::from_micros(decoded_after_us),
                WorkerHello {
                    version: PROTOCOL_VERSION,
                    pid: 7,
                    main_entered_ns: spawned_at_ns + 50_000,
                    ready_ns: spawned_at_ns + 60_000,
                },
            )),
            first_result: Some(spawned_at + Duration::from_micros(500)),
            shutdown_sent: None,
            reaped: None,
        }
    }

    const BIG: u64 = PART_BYTES as u64 + 10;

    fn piece(answer: &mut Option<Answer>, len: u64, bytes: &[u8]) -> Result<(), String> {
        take_piece(answer, 3, len, bytes, 4 * PART_BYTES).map_err(|(what, chunk)| {
            assert_eq!(chunk, Some(3), "{what}");
            what
        })
    }

    #[test]
    fn a_value_in_pieces_becomes_the_answers_next_value_once_whole() {
        let mut answer = None;
        let value: Vec<u8> = (0..BIG).map(|i| i as u8).collect();
        let (first, rest) = value.split_at(PART_BYTES);
        piece(&mut answer, BIG, first).unwrap();
        assert_eq!(answer.as_ref().unwrap().values.len(), 0, "not whole yet");
        piece(&mut answer, BIG, rest).unwrap();
        let open = answer.as_ref().unwrap();
        assert_eq!(open.values.len(), 1);
        assert!(open.values.get(0) == Some(&value[..]));
        assert_eq!(open.bytes, BIG as usize + END_LEN);
        assert!(open.piece.is_none());
    }

    #[test]
    fn a_length_announced_is_reserved_only_as_its_bytes_come() {
        let mut answer = None;
        take_piece(&mut answer, 3, 60 << 20, &[1; 8], 64 << 20).unwrap();
        let (buf, len) = answer.as_ref().unwrap().piece.as_ref().unwrap();
        assert_eq!((buf.len(), *len), (8, 60 << 20));
        assert!(buf.capacity() <= 8 + RESERVED_AHEAD, "{}", buf.capacity());
    }

    #[test]
    fn pieces_that_break_their_value_are_named() {
        let cases: [(&[(u64, usize)], &str); 5] = [
            (
                &[(PART_BYTES as u64, 5)],
                "sent a value of 1048576 bytes in pieces for chunk 3, where one of more than 1048576 and at most ",
            ),
            (
                &[(1 << 40, 5)],
                "sent a value of 1099511627776 bytes in pieces for chunk 3",
            ),
            (
                &[(BIG, 8), (BIG, 0)],
                "sent a piece of 0 bytes (of a value of 1048586) for chunk 3, after 8 bytes",
            ),
            (
                &[(BIG, 8), (BIG + 1, 8)],
                "sent a piece of 8 bytes (of a value of 1048587) for chunk 3, after 8 bytes of a value of 1048586",
            ),
            (
                &[(BIG, PART_BYTES), (BIG, 11)],
                "sent a piece of 11 bytes (of a value of 1048586) for chunk 3, after 1048576 bytes",
            ),
        ];
        for (pieces, want) in cases {
            let mut answer = None;
            let (last, before) = pieces.split_last().unwrap();
            for &(len, n) in before {
                piece(&mut answer, len, &vec![7; n]).unwrap();
            }
            let what = piece(&mut answer, last.0, &vec![7; last.1]).unwrap_err();
            assert!(what.starts_with(want), "{what}");
        }
        // A piece of another chunk than the answer's.
        let mut answer = None;
        piece(&mut answer, BIG, &[1; 8]).unwrap();
        let (what, chunk) = take_piece(&mut answer, 4, BIG, &[1; 8], 4 * PART_BYTES).unwrap_err();
        assert_eq!(
            (what.as_str(), chunk),
            ("sent a value for chunk 4 before finishing chunk 3", None)
        );
    }

    #[test]
    fn ready_is_when_the_handshake_was_decoded() {
        let phases = lifeline(30, 80).phases();
        assert_eq!(phases.started_seconds, 5e-6);
        assert_eq!(phases.spawn_seconds, 30e-6);
        assert_eq!(phases.exec_seconds, Some(50e-6));
        assert_eq!(phases.init_seconds, Some(10e-6));
        assert_eq!(phases.ready_seconds, Some(80e-6));
        assert_eq!(phases.first_task_seconds, Some(420e-6));
    }

    #[test]
    fn a_handshake_decoded_before_the_spawn_call_returned_is_ready_at_its_return() {
        // The reader thread decoded it at 40 µs, the spawn call returned at 70 µs.
        let phases = lifeline(70, 40).phases();
        assert_eq!(phases.ready_seconds, Some(70e-6));
        assert_eq!(phases.first_task_seconds, Some(430e-6));
        assert!(phases.exec_seconds.unwrap() <= phases.ready_seconds.unwrap());
    }

    #[test]
    fn a_remote_worker_has_no_exec_phase_and_its_init_on_its_own_clock() {
        let mut life = lifeline(30, 80);
        // Its clock is far from ours: its main "before" our spawn.
        life.spawned_at_ns = 1 << 40;
        life.host = Some("node1".to_owned());
        let phases = life.phases();
        assert_eq!(phases.exec_seconds, None);
        assert_eq!(phases.init_seconds, Some(10e-6));
        assert_eq!(phases.ready_seconds, Some(80e-6));
    }
}
