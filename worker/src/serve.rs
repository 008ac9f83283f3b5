//! The worker loop, over any reader and writer so it can be tested in memory.

use std::io::{Read, Write};
use std::time::Instant;

use fibpool_protocol::{
    Bytes, Chunk, ChunkPart, ChunkResult, CoordinatorHello, EchoReply, Failure, FrameReader,
    FrameWriter, MAX_INDEX, Measured, PART_BYTES, PROTOCOL_VERSION, PackedBuf, Reply, Request,
    Response, ValuePiece, WorkerHello, checksum, raw,
};

use fibpool_protocol::clock::monotonic_ns;

#[cfg(feature = "fault-injection")]
use crate::fault::{Action, FaultPlan};
use crate::kernels;

/// How a worker serves.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// The CLOCK_MONOTONIC stamp of the process's start.
    pub main_entered_ns: u64,
    /// A fault to inject (test builds only; see `crate::fault`).
    #[cfg(feature = "fault-injection")]
    pub fault: Option<FaultPlan>,
    /// Ask to be killed with the coordinator once its Hello names it, if it
    /// is this process's parent (worker processes; not a test serving in
    /// memory, whose parent is the test runner).
    pub die_with_coordinator: bool,
}

/// Why a worker stopped before being told to.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Protocol(#[from] fibpool_protocol::Error),
    #[error("coordinator closed the stream before its handshake")]
    NoHandshake,
    #[error("prctl(PR_SET_PDEATHSIG) failed")]
    DeathSignal(#[source] std::io::Error),
    #[error("coordinator (pid {0}) exited before this worker started")]
    CoordinatorGone(u32),
    #[error("the process that started this worker (pid {0}) exited before it was ready")]
    ParentGone(u32),
    #[error("refused chunk {id}: {reason}")]
    BadChunk { id: u64, reason: String },
    #[error("raw frame of {len} bytes is shorter than its {header}-byte header", header = raw::HEADER_LEN)]
    ShortRawFrame { len: usize },
    /// An injected fault asked the worker to close its streams and go quiet.
    #[cfg(feature = "fault-injection")]
    #[error("closed its streams on purpose (injected fault)")]
    InjectedClose,
    /// An injected fault made the worker send garbage.
    #[cfg(feature = "fault-injection")]
    #[error("sent garbage on purpose (injected fault)")]
    InjectedGarbage,
}

/// What a worker did, for its caller.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServeSummary {
    pub chunks: u64,
    pub values: u64,
    /// Stress-test frames answered, framed or raw.
    pub echoes: u64,
    /// True when the coordinator sent Shutdown; false when its stream just ended.
    pub shutdown: bool,
}

/// Serves one coordinator: sends the handshake at once, checks the
/// coordinator's, then answers requests until Shutdown or end of stream.
pub fn serve<R: Read, W: Write>(
    reader: R,
    writer: W,
    options: &ServeOptions,
) -> Result<ServeSummary, ServeError> {
    crate::unblock_signals();
    let mut rx = FrameReader::new(reader);
    let mut tx = FrameWriter::new(writer);
    tx.send(&Response::Ready(WorkerHello {
        version: PROTOCOL_VERSION,
        pid: std::process::id(),
        main_entered_ns: options.main_entered_ns,
        ready_ns: monotonic_ns(),
    }))?;

    match rx.recv_handshake::<Request>()? {
        Some(Request::Hello(CoordinatorHello { pid, .. })) => {
            // After the handshake is written, so that `ready` does not wait for it.
            if options.die_with_coordinator {
                crate::stdio::die_with_parent(pid)?;
            }
        }
        Some(other) => {
            return Err(fibpool_protocol::Error::Unexpected {
                expected: "the coordinator's Hello",
                got: describe(&other),
            }
            .into());
        }
        None => return Err(ServeError::NoHandshake),
    }

    let mut summary = ServeSummary::default();
    // Every chunk's values are packed here: its memory is reused, not freed.
    let mut packed = PackedBuf::default();
    // Where the last run ended: the next chunk of a range starts from it.
    let mut seed = kernels::Seed::default();
    while let Some(request) = rx.recv::<Request>()? {
        match request {
            Request::Compute(chunk) => {
                #[cfg(feature = "fault-injection")]
                let mut answers = 1;
                #[cfg(feature = "fault-injection")]
                let mut chunk = chunk;
                #[cfg(feature = "fault-injection")]
                let mut crash_mid = false;
                #[cfg(feature = "fault-injection")]
                let mut busy_forever = false;
                #[cfg(feature = "fault-injection")]
                if let Some(action) = options
                    .fault
                    .as_ref()
                    .and_then(|f| f.before(&chunk, summary.chunks))
                {
                    match action {
                        Action::Crash => std::process::abort(),
                        Action::Exit => std::process::exit(3),
                        Action::Hang => loop {
                            std::thread::park();
                        },
                        Action::Close => return Err(ServeError::InjectedClose),
                        Action::Garbage => {
                            tx.send_payload(&[0xde, 0xad, 0xbe, 0xef, 0x99])?;
                            return Err(ServeError::InjectedGarbage);
                        }
                        Action::WrongId => chunk.id = chunk.id.wrapping_add(1 << 40),
                        Action::Twice => answers = 2,
                        Action::Reorder => {
                            if let Some(Request::Compute(next)) = rx.recv::<Request>()? {
                                let result =
                                    compute(&next, &mut packed, &mut seed, &mut tx, false)?;
                                tx.send(&Response::Computed(result))?;
                            }
                        }
                        Action::CrashMid => crash_mid = true,
                        Action::BusyForever => busy_forever = true,
                        Action::Torn => {
                            // A header for 100 bytes, and 10 of them.
                            let mut torn = 100u32.to_le_bytes().to_vec();
                            torn.extend_from_slice(&[7; 10]);
                            let out = tx.get_mut().map_err(fibpool_protocol::Error::from)?;
                            out.write_all(&torn)
                                .map_err(fibpool_protocol::Error::from)?;
                            out.flush().map_err(fibpool_protocol::Error::from)?;
                            std::process::exit(0);
                        }
                        Action::StrayPart => {
                            packed.clear();
                            packed.push(&[1; fibpool_protocol::PART_BYTES]);
                            tx.send(&Response::Part(fibpool_protocol::ChunkPart {
                                id: chunk.id.wrapping_add(1 << 40),
                                values: packed.as_packed(),
                            }))?;
                        }
                        Action::Newline => {
                            packed.clear();
                            packed.push(b"12\n34");
                            for _ in 1..chunk.task_count() {
                                packed.push(b"5");
                            }
                            tx.send(&Response::Computed(fibpool_protocol::ChunkResult {
                                id: chunk.id,
                                busy_ns: 0,
                                values: packed.as_packed(),
                            }))?;
                            continue;
                        }
                        Action::HugePiece => {
                            tx.send(&Response::Piece(ValuePiece {
                                id: chunk.id,
                                len: 1 << 40,
                                bytes: Bytes::borrowed(&[1; 16]),
                            }))?;
                        }
                        Action::Endless => {
                            packed.clear();
                            packed.push(&[1; fibpool_protocol::PART_BYTES]);
                            loop {
                                tx.send(&Response::Part(fibpool_protocol::ChunkPart {
                                    id: chunk.id,
                                    values: packed.as_packed(),
                                }))?;
                            }
                        }
                    }
                }
                #[cfg(not(feature = "fault-injection"))]
                let crash_mid = false;
                #[cfg_attr(not(feature = "fault-injection"), allow(unused_mut))]
                let mut result = compute(&chunk, &mut packed, &mut seed, &mut tx, crash_mid)?;
                #[cfg(feature = "fault-injection")]
                if busy_forever {
                    result.busy_ns = u64::MAX;
                }
                summary.chunks += 1;
                summary.values += chunk.task_count();
                #[cfg(feature = "fault-injection")]
                for _ in 1..answers {
                    tx.send(&Response::Computed(result.clone()))?;
                }
                tx.send(&Response::Computed(result))?;
                // A value far bigger than a chunk's budget leaves its
                // memory to the system, not to the next chunk.
                packed.shrink_to(KEPT_BYTES);
            }
            Request::Shutdown => {
                summary.shutdown = true;
                break;
            }
            Request::Echo(echo) => {
                let intact = checksum(echo.payload.as_slice()) == echo.checksum;
                // The payload still lives in the reader's frame buffer: it goes
                // back out from there, never copied.
                let payload = match echo.reply {
                    Reply::Payload => echo.payload,
                    Reply::Ack => Bytes::default(),
                };
                tx.send(&Response::Echo(EchoReply {
                    seq: echo.seq,
                    intact,
                    payload,
                }))?;
                summary.echoes += 1;
            }
            Request::RawEcho(reply) => {
                summary.echoes += raw_echo(&mut rx, &mut tx, reply)?;
            }
            Request::Measure(chunk) => {
                let measured =
                    measure(&chunk).map_err(|reason| refuse(&mut tx, chunk.id, reason))?;
                tx.send(&Response::Measured(measured))?;
            }
            Request::Hello(_) => {
                return Err(fibpool_protocol::Error::Unexpected {
                    expected: "Compute, Echo, RawEcho, Measure or Shutdown",
                    got: "a second Hello".to_owned(),
                }
                .into());
            }
        }
    }
    Ok(summary)
}

/// The most a worker's packing buffer keeps between chunks (it holds a
/// part's values, or a value bigger than a part while it goes in pieces).
const KEPT_BYTES: usize = 64 << 20;

/// Answers raw frames until an empty one (or the end of the stream): checks
/// each one's checksum and sends back its header with a status, and the data
/// if asked.
fn raw_echo<R: Read, W: Write>(
    rx: &mut FrameReader<R>,
    tx: &mut FrameWriter<W>,
    reply: Reply,
) -> Result<u64, ServeError> {
    let mut answered = 0;
    while let Some(frame) = rx.recv_payload()? {
        if frame.is_empty() {
            break;
        }
        let (seq, sum, data) =
            raw::split(frame).ok_or(ServeError::ShortRawFrame { len: frame.len() })?;
        let status = if checksum(data) == sum {
            raw::INTACT
        } else {
            raw::CORRUPTED
        };
        let body = match reply {
            Reply::Payload => data,
            Reply::Ack => &[],
        };
        tx.send_parts(&[&raw::header(seq, status), body])?;
        answered += 1;
    }
    Ok(answered)
}

/// A chunk the worker will not compute: the coordinator is told why before
/// the worker goes (a pipe that just closes says nothing).
fn refuse<W: Write>(tx: &mut FrameWriter<W>, id: u64, reason: String) -> ServeError {
    let _ = tx.send(&Response::Failed(Failure {
        chunk: Some(id),
        message: reason.clone(),
    }));
    ServeError::BadChunk { id, reason }
}

/// Checks every run's indices against the worker's limit.
fn check_indices(chunk: &Chunk) -> Result<(), String> {
    for run in &chunk.runs {
        let last = run
            .len
            .checked_sub(1)
            .and_then(|extra| run.start.checked_add(extra))
            .ok_or_else(|| format!("run {}+{} is empty or overflows", run.start, run.len))?;
        if last > MAX_INDEX {
            return Err(format!(
                "index {last} exceeds the largest index a worker computes ({MAX_INDEX})"
            ));
        }
    }
    Ok(())
}

/// Computes and encodes every value of a chunk, keeping none: the time and
/// the counts only.
pub fn measure(chunk: &Chunk) -> Result<Measured, String> {
    check_indices(chunk)?;
    let started = Instant::now();
    let mut tally = kernels::Tally::default();
    for run in &chunk.runs {
        kernels::encode_run(run.start, run.len, chunk.encoding, &mut tally);
    }
    Ok(Measured {
        id: chunk.id,
        busy_ns: started.elapsed().as_nanos() as u64,
        values: tally.values,
        bytes: tally.bytes,
    })
}

/// Checks a chunk against the worker's limits (refusing it, with the reason
/// sent, if it fails them), then computes it: its values are packed into
/// `packed` (cleared first) and sent as parts of about [`PART_BYTES`] as
/// they pass that size. Returns the answer's last frame, holding the values
/// left, which the caller sends. `seed` holds where the worker's last run
/// ended, and is left where this chunk's last run ended. With
/// `crash_after_part` (fault injection), the process aborts once its first
/// part is sent.
pub fn compute<'p, W: Write>(
    chunk: &Chunk,
    packed: &'p mut PackedBuf,
    seed: &mut kernels::Seed,
    tx: &mut FrameWriter<W>,
    crash_after_part: bool,
) -> Result<ChunkResult<'p>, ServeError> {
    let started = Instant::now();
    // Any value fits the ends table's u32 below MAX_INDEX, and travels in
    // pieces when bigger than a part.
    check_indices(chunk).map_err(|reason| refuse(tx, chunk.id, reason))?;
    packed.clear();
    let mut parts = Parts {
        id: chunk.id,
        packed,
        tx,
        error: None,
        crash_after_part,
    };
    for run in &chunk.runs {
        kernels::encode_run_from(seed, run.start, run.len, chunk.encoding, &mut parts);
    }
    if let Some(error) = parts.error {
        return Err(error.into());
    }
    Ok(ChunkResult {
        id: chunk.id,
        busy_ns: started.elapsed().as_nanos() as u64,
        values: packed.as_packed(),
    })
}

/// Where a chunk's values go as they are made: packed, and sent in a
/// [`Response::Part`] each time they pass [`PART_BYTES`]; a value bigger
/// than a part goes in [`Response::Piece`]s of its own, after a part with
/// the values before it. After a failed send nothing more is kept (the
/// coordinator is gone): the error is returned once the values are done.
struct Parts<'a, W: Write> {
    id: u64,
    packed: &'a mut PackedBuf,
    tx: &'a mut FrameWriter<W>,
    error: Option<fibpool_protocol::Error>,
    crash_after_part: bool,
}

impl<W: Write> kernels::ValueSink for Parts<'_, W> {
    fn buffer(&mut self) -> &mut Vec<u8> {
        self.packed.data()
    }

    fn end_value(&mut self) {
        if self.packed.unended().len() > PART_BYTES {
            self.send_in_pieces();
            self.packed.clear();
            return;
        }
        self.packed.end_value();
        if self.packed.data().len() < PART_BYTES {
            return;
        }
        let part = Response::Part(ChunkPart {
            id: self.id,
            values: self.packed.as_packed(),
        });
        send(self.tx, &mut self.error, self.crash_after_part, &part);
        self.packed.clear();
    }
}

impl<W: Write> Parts<'_, W> {
    /// Sends the values before the one being made as a part (short, maybe),
    /// then that one in pieces.
    fn send_in_pieces(&mut self) {
        let (tx, error, crash) = (&mut *self.tx, &mut self.error, self.crash_after_part);
        if !self.packed.is_empty() {
            let part = Response::Part(ChunkPart {
                id: self.id,
                values: self.packed.as_packed_ended(),
            });
            send(tx, error, crash, &part);
        }
        let value = self.packed.unended();
        for bytes in value.chunks(PART_BYTES) {
            let piece = Response::Piece(ValuePiece {
                id: self.id,
                len: value.len() as u64,
                bytes: Bytes::borrowed(bytes),
            });
            send(tx, error, crash, &piece);
        }
    }
}

/// Sends one frame of an answer unless a send already failed; with
/// `crash_after` (fault injection) the process aborts once it is sent.
fn send<W: Write>(
    tx: &mut FrameWriter<W>,
    error: &mut Option<fibpool_protocol::Error>,
    crash_after: bool,
    response: &Response,
) {
    if error.is_some() {
        return;
    }
    match tx.send(response) {
        Ok(_) if crash_after => std::process::abort(),
        Ok(_) => {}
        Err(e) => *error = Some(e),
    }
}

fn describe(request: &Request) -> String {
    match request {
        Request::Hello(_) => "Hello".to_owned(),
        Request::Compute(chunk) => format!("Compute (chunk {})", chunk.id),
        Request::Shutdown => "Shutdown".to_owned(),
        Request::Echo(echo) => format!("Echo (seq {})", echo.seq),
        Request::RawEcho(_) => "RawEcho".to_owned(),
        Request::Measure(chunk) => format!("Measure (chunk {})", chunk.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fibpool_protocol::{Encoding, Error, FrameWriter, Run};
    use num_bigint::BigUint;

    const HELLO: Request<'static> = Request::Hello(CoordinatorHello {
        version: PROTOCOL_VERSION,
        pid: 1,
    });

    fn frames(requests: &[Request]) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut w = FrameWriter::new(&mut wire);
        for r in requests {
            w.send(r).unwrap();
        }
        drop(w);
        wire
    }

    /// Runs `serve` on `input` and returns its result and every response it wrote.
    fn serve_bytes(input: &[u8]) -> (Result<ServeSummary, ServeError>, Vec<Response<'static>>) {
        let mut output = Vec::new();
        let options = ServeOptions {
            main_entered_ns: 17,
            die_with_coordinator: false,
            ..ServeOptions::default()
        };
        let result = serve(input, &mut output, &options);
        let mut reader = FrameReader::new(&output[..]);
        let mut responses = Vec::new();
        while let Some(r) = reader.recv::<Response>().unwrap() {
            responses.push(r.into_owned());
        }
        (result, responses)
    }

    fn compute_request(id: u64, encoding: Encoding, runs: &[(u64, u64)]) -> Request<'static> {
        Request::Compute(Chunk {
            id,
            encoding,
            runs: runs
                .iter()
                .map(|&(start, len)| Run { start, len })
                .collect(),
        })
    }

    fn oracle(n: u64) -> BigUint {
        // plain iteration, independent of the fast-doubling kernels
        let (mut a, mut b) = (BigUint::ZERO, BigUint::from(1u32));
        for _ in 0..n {
            let next = &a + &b;
            a = std::mem::replace(&mut b, next);
        }
        a
    }

    #[test]
    fn answers_chunks_then_stops_on_shutdown() {
        let input = frames(&[
            HELLO,
            compute_request(0, Encoding::Decimal, &[(0, 12), (300, 2)]),
            compute_request(1, Encoding::Raw, &[(1000, 1), (5, 1), (5, 1)]),
            compute_request(2, Encoding::Hex, &[(100, 1)]),
            Request::Shutdown,
            compute_request(3, Encoding::Raw, &[(1, 1)]), // after Shutdown: never read
        ]);
        let before = monotonic_ns();
        let (result, responses) = serve_bytes(&input);
        let after = monotonic_ns();
        assert_eq!(
            result.unwrap(),
            ServeSummary {
                chunks: 3,
                values: 18,
                echoes: 0,
                shutdown: true
            }
        );
        assert_eq!(responses.len(), 4);
        match &responses[0] {
            Response::Ready(hello) => {
                assert_eq!(hello.version, PROTOCOL_VERSION);
                assert_eq!(hello.pid, std::process::id());
                assert_eq!(hello.main_entered_ns, 17);
                // Stamped on this process's CLOCK_MONOTONIC while serving.
                assert!(
                    (before..=after).contains(&hello.ready_ns),
                    "{before} <= {} <= {after}",
                    hello.ready_ns
                );
            }
            other => panic!("expected Ready first, got {other:?}"),
        }
        let values = |i: usize| match &responses[i] {
            Response::Computed(r) => {
                assert_eq!(r.id, i as u64 - 1);
                r.values.iter().map(<[u8]>::to_vec).collect::<Vec<_>>()
            }
            other => panic!("expected Computed, got {other:?}"),
        };
        let decimal: Vec<_> = (0..12)
            .chain(300..302)
            .map(|n| oracle(n).to_string().into_bytes())
            .collect();
        assert_eq!(values(1), decimal);
        let raw: Vec<_> = [1000, 5, 5].map(|n| oracle(n).to_bytes_le()).into();
        assert_eq!(values(2)[0], raw[0]);
        assert_eq!(values(2)[1..], raw[1..]);
        assert_eq!(values(3), [b"1333db76a7c594bfc3".to_vec()]);
    }

    #[test]
    fn end_of_stream_without_shutdown_is_a_clean_stop() {
        let (result, responses) = serve_bytes(&frames(&[HELLO]));
        assert_eq!(result.unwrap(), ServeSummary::default());
        assert_eq!(responses.len(), 1);
    }

    #[test]
    fn no_handshake_is_an_error() {
        let (result, _) = serve_bytes(&[]);
        assert!(matches!(result, Err(ServeError::NoHandshake)), "{result:?}");
    }

    #[test]
    fn wrong_version_is_refused() {
        let (result, _) = serve_bytes(&frames(&[Request::Hello(CoordinatorHello {
            version: 99,
            pid: 1,
        })]));
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                ServeError::Protocol(Error::VersionMismatch { theirs: 99, .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn compute_before_hello_is_refused() {
        let (result, _) = serve_bytes(&frames(&[compute_request(0, Encoding::Raw, &[(1, 1)])]));
        let err = result.unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected message: expected the coordinator's Hello, got Compute (chunk 0)"
        );
    }

    #[test]
    fn bad_chunks_get_a_failure_message_then_an_error() {
        for (runs, reason) in [
            (
                vec![(MAX_INDEX, 2)],
                "index 20000000001 exceeds the largest index a worker computes",
            ),
            (vec![(5, 0)], "run 5+0 is empty or overflows"),
            (vec![(u64::MAX, 2)], "overflows"),
        ] {
            let input = frames(&[
                HELLO,
                compute_request(9, Encoding::Decimal, &runs),
                Request::Shutdown,
            ]);
            let (result, responses) = serve_bytes(&input);
            match result {
                Err(ServeError::BadChunk { id: 9, reason: got }) => {
                    assert!(got.contains(reason), "{got}")
                }
                other => panic!("{runs:?}: expected BadChunk, got {other:?}"),
            }
            match responses.last() {
                Some(Response::Failed(f)) => {
                    assert_eq!(f.chunk, Some(9));
                    assert!(f.message.contains(reason), "{}", f.message);
                }
                other => panic!("{runs:?}: expected Failed, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_big_answer_comes_in_parts_in_order_then_the_rest() {
        // F(0..12000) raw: about 6.2 MB, seeded once.
        let input = frames(&[
            HELLO,
            compute_request(5, Encoding::Raw, &[(0, 12_000)]),
            compute_request(6, Encoding::Hex, &[(7, 2)]),
        ]);
        let (result, responses) = serve_bytes(&input);
        assert_eq!(result.unwrap().values, 12_002);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut parts = 0;
        for response in &responses[1..responses.len() - 1] {
            match response {
                Response::Part(part) => {
                    assert_eq!(part.id, 5);
                    assert!(part.values.data().len() >= PART_BYTES);
                    // A part is sent as soon as it passes the size.
                    let without_last = part.values.data().len()
                        - part.values.get(part.values.len() - 1).unwrap().len();
                    assert!(without_last < PART_BYTES);
                    got.extend(part.values.iter().map(<[u8]>::to_vec));
                    parts += 1;
                }
                Response::Computed(last) => {
                    assert_eq!(last.id, 5);
                    got.extend(last.values.iter().map(<[u8]>::to_vec));
                }
                other => panic!("expected parts then Computed, got {other:?}"),
            }
        }
        assert_eq!(parts, 5);
        let mut want = Vec::new();
        let (mut a, mut b) = (BigUint::ZERO, BigUint::from(1u32));
        for _ in 0..12_000 {
            // raw zero is empty
            want.push(if a == BigUint::ZERO {
                vec![]
            } else {
                a.to_bytes_le()
            });
            let next = &a + &b;
            a = std::mem::replace(&mut b, next);
        }
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the parts' values differ from F(0..12000)");
        match responses.last() {
            Some(Response::Computed(r)) => {
                assert_eq!(r.id, 6);
                assert_eq!(r.values.iter().collect::<Vec<_>>(), [&b"d"[..], b"15"]);
            }
            other => panic!("expected chunk 6's answer, got {other:?}"),
        }
    }

    /// F(n) mod m by fast doubling on u128: independent of the kernels.
    fn fib_mod(n: u64, m: u128) -> u128 {
        let (mut a, mut b) = (0u128, 1u128); // F(k), F(k+1) for k = the bits so far
        for bit in (0..64).rev() {
            let c = a * ((2 * b + m - a) % m) % m;
            let d = (a * a + b * b) % m;
            (a, b) = if n >> bit & 1 == 1 {
                (d, (c + d) % m)
            } else {
                (c, d)
            };
        }
        a
    }

    #[test]
    fn a_value_bigger_than_a_part_comes_in_pieces_after_a_short_part() {
        // F(12 500 000) raw takes about 1.08 MB: more than a part.
        const BIG: u64 = 12_500_000;
        let input = frames(&[
            HELLO,
            compute_request(4, Encoding::Raw, &[(5, 1), (BIG, 1), (7, 1)]),
        ]);
        let (result, responses) = serve_bytes(&input);
        assert_eq!(result.unwrap().values, 3);
        let [
            _,
            Response::Part(part),
            pieces @ ..,
            Response::Computed(last),
        ] = &responses[..]
        else {
            panic!(
                "expected a part, pieces and the rest: {} responses",
                responses.len()
            );
        };
        assert_eq!(
            (part.id, part.values.iter().collect::<Vec<_>>()),
            (4, vec![&[5u8][..]])
        );
        assert_eq!(
            (last.id, last.values.iter().collect::<Vec<_>>()),
            (4, vec![&[13u8][..]])
        );
        let mut value = Vec::new();
        for piece in pieces {
            let Response::Piece(piece) = piece else {
                panic!("expected a piece, got {piece:?}");
            };
            assert_eq!(piece.id, 4);
            assert!(piece.bytes.as_slice().len() <= PART_BYTES);
            value.extend_from_slice(piece.bytes.as_slice());
            assert_eq!(piece.len, pieces_len(pieces));
        }
        assert_eq!(pieces.len(), 2);
        assert_eq!(value.len() as u64, pieces_len(pieces));
        assert!(value.len() > PART_BYTES);
        let value = BigUint::from_bytes_le(&value);
        for m in [(1u128 << 61) - 1, 1_000_000_007, 998_244_353] {
            let got = (&value % BigUint::from(m))
                .to_u64_digits()
                .first()
                .copied()
                .unwrap_or(0);
            assert_eq!(u128::from(got), fib_mod(BIG, m), "F({BIG}) mod {m}");
        }
        // Its length: F(n) has n log2(phi) - log2(sqrt 5) bits, rounded up.
        let bits = BIG as f64 * 1.618_033_988_749_895_f64.log2() - 5f64.sqrt().log2();
        assert_eq!(value.bits(), bits.ceil() as u64);
    }

    fn pieces_len(pieces: &[Response]) -> u64 {
        match pieces.first() {
            Some(Response::Piece(p)) => p.len,
            _ => 0,
        }
    }

    fn echo(seq: u64, payload: &[u8], reply: Reply, sum: u64) -> Request<'_> {
        Request::Echo(fibpool_protocol::Echo {
            seq,
            checksum: sum,
            reply,
            payload: Bytes::borrowed(payload),
        })
    }

    #[test]
    fn echoes_verify_checksums() {
        let data = vec![0xabu8; 5000];
        let input = frames(&[
            HELLO,
            echo(1, &data, Reply::Payload, checksum(&data)),
            echo(2, &data, Reply::Ack, checksum(&data)),
            echo(3, &data, Reply::Payload, checksum(&data) ^ 1),
            echo(4, b"", Reply::Ack, checksum(b"")),
        ]);
        let (result, responses) = serve_bytes(&input);
        assert_eq!(result.unwrap().echoes, 4);
        let replies: Vec<_> = responses[1..]
            .iter()
            .map(|r| match r {
                Response::Echo(e) => (e.seq, e.intact, e.payload.as_slice().len()),
                other => panic!("expected Echo, got {other:?}"),
            })
            .collect();
        assert_eq!(
            replies,
            [
                (1, true, 5000),
                (2, true, 0),
                (3, false, 5000),
                (4, true, 0)
            ]
        );
        match &responses[1] {
            Response::Echo(e) => assert_eq!(e.payload.as_slice(), data),
            _ => unreachable!(),
        }
    }

    #[test]
    fn raw_echo_answers_raw_frames_until_the_end() {
        let mut input = frames(&[HELLO, Request::RawEcho(Reply::Payload)]);
        let mut w = FrameWriter::new(&mut input);
        w.send_parts(&[&raw::header(7, checksum(b"abc")), b"abc"])
            .unwrap();
        w.send_parts(&[&raw::header(8, checksum(b"abc")), b"abd"])
            .unwrap();
        w.send_parts(&[&raw::header(9, checksum(b"")), b""])
            .unwrap();
        drop(w);
        let mut output = Vec::new();
        let summary = serve(&input[..], &mut output, &ServeOptions::default()).unwrap();
        assert_eq!(summary.echoes, 3);
        let mut reader = FrameReader::new(&output[..]);
        reader.recv::<Response>().unwrap(); // the handshake
        let mut got = Vec::new();
        while let Some(frame) = reader.recv_payload().unwrap() {
            let (seq, status, data) = raw::split(frame).unwrap();
            got.push((seq, status, data.to_vec()));
        }
        assert_eq!(
            got,
            [
                (7, raw::INTACT, b"abc".to_vec()),
                (8, raw::CORRUPTED, b"abd".to_vec()),
                (9, raw::INTACT, vec![])
            ]
        );
    }

    #[test]
    fn measure_counts_without_sending_values() {
        let input = frames(&[
            HELLO,
            Request::Measure(Chunk {
                id: 4,
                encoding: Encoding::Raw,
                runs: vec![
                    Run {
                        start: 0,
                        len: 1000,
                    },
                    Run { start: 5, len: 1 },
                ],
            }),
        ]);
        let (result, responses) = serve_bytes(&input);
        result.unwrap();
        // Raw zero is empty (num-bigint writes one zero byte).
        let raw_len = |n| {
            if n == 0 {
                0
            } else {
                oracle(n).to_bytes_le().len() as u64
            }
        };
        let want_bytes: u64 = (0..1000).chain([5]).map(raw_len).sum();
        match &responses[1] {
            Response::Measured(m) => {
                assert_eq!((m.id, m.values, m.bytes), (4, 1001, want_bytes));
            }
            other => panic!("expected Measured, got {other:?}"),
        }
    }

    #[test]
    fn a_raw_frame_shorter_than_its_header_is_refused() {
        let mut input = frames(&[HELLO, Request::RawEcho(Reply::Ack)]);
        FrameWriter::new(&mut input).send_payload(b"short").unwrap();
        let (result, _) = serve_bytes(&input);
        assert_eq!(
            result.unwrap_err().to_string(),
            "raw frame of 5 bytes is shorter than its 16-byte header"
        );
    }

    #[test]
    fn garbage_after_the_handshake_is_undecodable() {
        let mut input = frames(&[HELLO]);
        input.extend_from_slice(&[3, 0, 0, 0, 0xde, 0xad, 0xbe]);
        let (result, _) = serve_bytes(&input);
        assert!(
            matches!(result, Err(ServeError::Protocol(Error::Undecodable { .. }))),
            "{result:?}"
        );
    }
}
