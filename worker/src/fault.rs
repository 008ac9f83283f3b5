//! Fault injection, for tests only: `FIBPOOL_TEST_FAULT` makes a worker fail
//! on purpose so that the coordinator's recovery can be exercised with real
//! processes. Nothing sets it outside tests.
//!
//! `KIND@N[;once=PATH]`, where KIND is one of
//! - `crash@N`: abort (SIGABRT) on a chunk holding index N;
//! - `hang@N`: stop answering, forever, on a chunk holding index N;
//! - `close@N`: close both frame streams on a chunk holding index N, then hang;
//! - `garbage@N`: answer a chunk holding index N with bytes that are no frame;
//! - `exit-after@K`: exit with status 3 after answering K chunks;
//! - `wrong-id@N`: answer a chunk holding index N under another chunk's id;
//! - `twice@N`: answer a chunk holding index N twice;
//! - `reorder@N`: on a chunk holding index N, read the next chunk and
//!   answer it first;
//! - `crash-mid@N`: abort right after sending the first part of the
//!   answer to a chunk holding index N (a chunk too small for parts is
//!   answered as usual);
//! - `stray-part@N`: before answering a chunk holding index N, send a part
//!   under another chunk's id;
//! - `endless@N`: answer a chunk holding index N with parts that never end;
//! - `huge-piece@N`: before answering a chunk holding index N, send a piece
//!   of a value that claims to take a terabyte.
//!
//! With `once=PATH`, only the first worker to create the file PATH fails.
//!
//! Apart from these, `FIBPOOL_TEST_STDIN_PIPE=BYTES` shrinks the pipe on
//! the worker's stdin to that many bytes, behind the coordinator's back, and
//! `FIBPOOL_TEST_SCRIBBLE=BYTES` makes a worker on shared memory publish an
//! impossible ring counter once it has written that many bytes.

use fibpool_protocol::Chunk;

/// The environment variable that carries a fault.
pub const FAULT_ENV: &str = "FIBPOOL_TEST_FAULT";

/// The environment variable that makes a shared-memory worker scribble.
pub const SCRIBBLE_ENV: &str = "FIBPOOL_TEST_SCRIBBLE";

/// A worker's response ring that, with [`SCRIBBLE_ENV`] set, publishes a
/// head of 2^40 (far past its tail) in place of the write that would take
/// it to so many bytes, and writes nothing more.
pub struct Scribbling {
    inner: fibpool_protocol::ring::RingWriter,
    state: Scribble,
    written: u64,
}

enum Scribble {
    Never,
    After(u64),
    Done,
}

impl Scribbling {
    pub fn new(inner: fibpool_protocol::ring::RingWriter) -> Scribbling {
        let after = std::env::var(SCRIBBLE_ENV)
            .ok()
            .and_then(|v| v.parse().ok());
        Scribbling {
            inner,
            state: after.map_or(Scribble::Never, Scribble::After),
            written: 0,
        }
    }
}

impl std::io::Write for Scribbling {
    /// The write that would reach the count scribbles instead, and every
    /// later one is dropped: a real write would publish a sane head again.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.state {
            Scribble::After(after) if self.written + buf.len() as u64 >= after => {
                self.inner.scribble(1 << 40);
                self.state = Scribble::Done;
                Ok(buf.len())
            }
            Scribble::Done => Ok(buf.len()),
            _ => {
                let n = self.inner.write(buf)?;
                self.written += n as u64;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The environment variable that shrinks the worker's stdin pipe.
pub const STDIN_PIPE_ENV: &str = "FIBPOOL_TEST_STDIN_PIPE";

/// Shrinks the pipe on stdin as [`STDIN_PIPE_ENV`] asks, if it does.
pub fn shrink_stdin() -> Result<(), String> {
    let Ok(size) = std::env::var(STDIN_PIPE_ENV) else {
        return Ok(());
    };
    let size: libc::c_int = size
        .parse()
        .map_err(|_| format!("{STDIN_PIPE_ENV}={size:?}: expected a size in bytes"))?;
    // SAFETY: fcntl on the process's own stdin.
    if unsafe { libc::fcntl(libc::STDIN_FILENO, libc::F_SETPIPE_SZ, size) } < 0 {
        let error = std::io::Error::last_os_error();
        // The pipe already holds more than `size` (requests queued for a
        // replacement before it started): it keeps its size, as a pipe
        // the test did not shrink.
        if error.raw_os_error() == Some(libc::EBUSY) {
            return Ok(());
        }
        return Err(format!("{STDIN_PIPE_ENV}: {error}"));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Crash(u64),
    Hang(u64),
    Close(u64),
    Garbage(u64),
    ExitAfter(u64),
    WrongId(u64),
    Twice(u64),
    Reorder(u64),
    CrashMid(u64),
    StrayPart(u64),
    Endless(u64),
    HugePiece(u64),
    /// Answers the chunk holding index N with a first value of `12\n34`,
    /// the others `5`: bytes that are not digits.
    Newline(u64),
    /// Answers the chunk holding index N saying it was busy 2^64 - 1 ns.
    BusyForever(u64),
    /// On the chunk holding index N, writes half a frame and exits with
    /// status 0.
    Torn(u64),
}

/// A fault and whether it is limited to one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    pub fault: Fault,
    pub once: Option<std::path::PathBuf>,
}

/// What the serve loop must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Crash,
    Hang,
    Close,
    Garbage,
    Exit,
    WrongId,
    Twice,
    Reorder,
    CrashMid,
    StrayPart,
    Endless,
    HugePiece,
    Newline,
    BusyForever,
    Torn,
}

impl FaultPlan {
    pub fn parse(spec: &str) -> Result<FaultPlan, String> {
        let bad = || format!("{FAULT_ENV}={spec:?}: expected KIND@N[;once=PATH]");
        let (fault, once) = match spec.split_once(';') {
            Some((fault, option)) => {
                let path = option.strip_prefix("once=").ok_or_else(bad)?;
                (fault, Some(std::path::PathBuf::from(path)))
            }
            None => (spec, None),
        };
        let (kind, n) = fault.split_once('@').ok_or_else(bad)?;
        let n: u64 = n.parse().map_err(|_| bad())?;
        let fault = match kind {
            "crash" => Fault::Crash(n),
            "hang" => Fault::Hang(n),
            "close" => Fault::Close(n),
            "garbage" => Fault::Garbage(n),
            "exit-after" => Fault::ExitAfter(n),
            "wrong-id" => Fault::WrongId(n),
            "twice" => Fault::Twice(n),
            "reorder" => Fault::Reorder(n),
            "crash-mid" => Fault::CrashMid(n),
            "stray-part" => Fault::StrayPart(n),
            "endless" => Fault::Endless(n),
            "huge-piece" => Fault::HugePiece(n),
            "newline" => Fault::Newline(n),
            "busy-forever" => Fault::BusyForever(n),
            "torn" => Fault::Torn(n),
            _ => return Err(bad()),
        };
        Ok(FaultPlan { fault, once })
    }

    /// What to do before computing `chunk`, with `answered` chunks answered so far.
    pub fn before(&self, chunk: &Chunk, answered: u64) -> Option<Action> {
        let holds = |n: u64| {
            chunk
                .runs
                .iter()
                .any(|r| n >= r.start && n - r.start < r.len)
        };
        let action = match self.fault {
            Fault::Crash(n) if holds(n) => Action::Crash,
            Fault::Hang(n) if holds(n) => Action::Hang,
            Fault::Close(n) if holds(n) => Action::Close,
            Fault::Garbage(n) if holds(n) => Action::Garbage,
            Fault::ExitAfter(k) if answered >= k => Action::Exit,
            Fault::WrongId(n) if holds(n) => Action::WrongId,
            Fault::Twice(n) if holds(n) => Action::Twice,
            Fault::Reorder(n) if holds(n) => Action::Reorder,
            Fault::CrashMid(n) if holds(n) => Action::CrashMid,
            Fault::StrayPart(n) if holds(n) => Action::StrayPart,
            Fault::Endless(n) if holds(n) => Action::Endless,
            Fault::HugePiece(n) if holds(n) => Action::HugePiece,
            Fault::Newline(n) if holds(n) => Action::Newline,
            Fault::BusyForever(n) if holds(n) => Action::BusyForever,
            Fault::Torn(n) if holds(n) => Action::Torn,
            _ => return None,
        };
        // Only the worker that creates the file fails.
        if let Some(path) = &self.once
            && std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .is_err()
        {
            return None;
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fibpool_protocol::{Encoding, Run};

    fn chunk(runs: &[(u64, u64)]) -> Chunk {
        Chunk {
            id: 0,
            encoding: Encoding::Raw,
            runs: runs
                .iter()
                .map(|&(start, len)| Run { start, len })
                .collect(),
        }
    }

    #[test]
    fn parses_and_fires_on_the_right_chunk() {
        let plan = FaultPlan::parse("crash@15").unwrap();
        assert_eq!(plan.before(&chunk(&[(10, 5)]), 0), None);
        assert_eq!(plan.before(&chunk(&[(10, 6)]), 0), Some(Action::Crash));
        let plan = FaultPlan::parse("exit-after@2").unwrap();
        assert_eq!(plan.before(&chunk(&[(1, 1)]), 1), None);
        assert_eq!(plan.before(&chunk(&[(1, 1)]), 2), Some(Action::Exit));
        assert_eq!(FaultPlan::parse("hang@3").unwrap().fault, Fault::Hang(3));
        assert_eq!(FaultPlan::parse("close@3").unwrap().fault, Fault::Close(3));
        assert_eq!(
            FaultPlan::parse("garbage@3").unwrap().fault,
            Fault::Garbage(3)
        );
        assert_eq!(
            FaultPlan::parse("wrong-id@4").unwrap().fault,
            Fault::WrongId(4)
        );
        assert_eq!(
            FaultPlan::parse("crash-mid@6").unwrap().fault,
            Fault::CrashMid(6)
        );
        assert_eq!(
            FaultPlan::parse("stray-part@7").unwrap().fault,
            Fault::StrayPart(7)
        );
        assert_eq!(
            FaultPlan::parse("endless@8").unwrap().fault,
            Fault::Endless(8)
        );
        let plan = FaultPlan::parse("twice@5").unwrap();
        assert_eq!(plan.before(&chunk(&[(5, 1)]), 0), Some(Action::Twice));
        for bad in ["crash", "crash@x", "melt@3", "crash@3;twice=/x"] {
            assert!(FaultPlan::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn once_fires_for_one_worker_only() {
        let path = std::env::temp_dir().join(format!("fibpool-fault-once-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let plan = FaultPlan::parse(&format!("crash@1;once={}", path.display())).unwrap();
        assert_eq!(plan.before(&chunk(&[(1, 1)]), 0), Some(Action::Crash));
        assert_eq!(plan.before(&chunk(&[(1, 1)]), 0), None);
        std::fs::remove_file(&path).unwrap();
    }
}
