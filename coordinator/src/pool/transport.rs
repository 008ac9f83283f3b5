//! How frames travel: one of the pool's two seams. A transport makes a
//! worker's channel before the worker starts, and says what the worker is
//! started with (its stdin, its stdout, an environment variable) so that it
//! finds the other end. Today: anonymous pipes, and a Unix local socket.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fibpool_protocol::env;
use interprocess::local_socket::traits::StreamCommon;
use interprocess::local_socket::{
    GenericNamespaced, Listener, ListenerNonblockingMode, ListenerOptions, prelude::*,
};

use super::child::{far, poll_readable};

/// How a worker's frames travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Anonymous pipes as the worker's stdin and stdout (the pool's default).
    Pipe,
    /// A Unix local socket (abstract namespace on Linux) the worker connects
    /// to, through the `interprocess` crate. Only the worker started for it
    /// may connect: the peer's credentials are checked. The connection is
    /// awaited on the worker's reader thread, so a worker slow to connect
    /// holds up no one.
    Socket,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Pipe => "pipe",
            Transport::Socket => "socket",
        }
    }

    /// Makes a worker's channel, before the worker exists. With
    /// `nonblocking`, writes to the worker never block: one that would
    /// returns `WouldBlock`, and a frame writer keeps the rest buffered.
    pub(crate) fn open(self, nonblocking: bool) -> io::Result<(ChildStdio, Ends, Budget)> {
        match self {
            Transport::Pipe => {
                let (stdin, input) = io::pipe()?;
                let (output, stdout) = io::pipe()?;
                let size = grow_pipe(input.as_raw_fd());
                grow_pipe(output.as_raw_fd());
                if nonblocking {
                    set_nonblocking(input.as_raw_fd())?;
                }
                let stdio = ChildStdio {
                    stdin: Some(stdin.into()),
                    stdout: Some(stdout.into()),
                    env: Vec::new(),
                };
                // The kernel fills a pipe a page at a time: count whole
                // pages, and leave one for a frame that starts mid-page.
                let pages = size / PAGE;
                let budget = Budget {
                    capacity: pages.saturating_sub(1).max(1) * PAGE,
                    page: PAGE,
                    per_frame: 0,
                };
                Ok((
                    stdio,
                    Ends::Ready(Box::new(output), Box::new(input)),
                    budget,
                ))
            }
            Transport::Socket => {
                let (name, listener) = listen()?;
                let stdio = ChildStdio {
                    stdin: None,
                    stdout: None,
                    env: vec![(env::SOCKET, name.into())],
                };
                // A Unix stream socket's send buffer (212992 bytes by
                // default) is charged a few hundred bytes per write besides
                // the data: stay well inside it.
                let budget = Budget {
                    capacity: 64 << 10,
                    page: 1,
                    per_frame: 1024,
                };
                let listening = Listening {
                    listener,
                    nonblocking,
                };
                Ok((stdio, Ends::Listening(listening), budget))
            }
        }
    }
}

const PAGE: usize = 4096;

/// How many bytes of requests a worker that stopped reading can be left
/// holding before a write to it would block. The pool writes within it, so
/// its writes almost never meet a full channel; when one does (a request
/// bigger than a tiny pipe), the non-blocking write keeps the rest for later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    pub capacity: usize,
    /// Frames take whole units of this many bytes.
    pub page: usize,
    /// What each frame costs besides its bytes.
    pub per_frame: usize,
}

impl Budget {
    /// What a frame of `len` bytes counts for.
    pub fn cost(&self, len: usize) -> usize {
        (len + fibpool_protocol::HEADER_LEN).div_ceil(self.page) * self.page + self.per_frame
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The reading and writing ends of a worker's channel.
pub type Reader = Box<dyn Read + Send>;
pub type Writer = Box<dyn Write + Send>;

/// What a worker is started with so that it finds its channel.
#[derive(Debug)]
pub(crate) struct ChildStdio {
    /// The worker's stdin and stdout; `None` for /dev/null.
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    /// Set in the worker's environment. Empty for pipes: any change to the
    /// environment makes std copy all of it at each spawn (12-18 µs measured).
    pub env: Vec<(&'static str, OsString)>,
}

/// The coordinator's side of a channel, as [`Transport::open`] left it.
pub(crate) enum Ends {
    /// Pipes: usable at once, before the worker starts.
    Ready(Reader, Writer),
    /// A socket: usable once the worker has connected.
    Listening(Listening),
}

/// A local socket waiting for its worker.
pub(crate) struct Listening {
    listener: Listener,
    nonblocking: bool,
}

impl Listening {
    /// The channel to the worker `pid` that will connect to this socket,
    /// usable at once: what is written before the worker connects waits in
    /// memory, and the first read accepts the connection (on the reader's
    /// thread, so that nothing else waits for a worker that is slow to
    /// connect, or never does). A connection from any other process is
    /// closed unanswered. Reading ends, as at the end of a stream, when the
    /// worker exits before connecting or `timeout` passes.
    pub fn channel(self, pid: u32, timeout: Duration) -> (Reader, Writer) {
        let writer = Arc::new(Mutex::new(Pending::Buffering(Vec::new(), false)));
        let reader = Connecting {
            listener: Some(self.listener),
            pid,
            // Opened now, while the worker cannot have been reaped yet.
            exited: pidfd(pid),
            deadline: far(timeout),
            writer: writer.clone(),
            stream: None,
        };
        let writer = SocketWriter {
            pending: writer,
            nonblocking: self.nonblocking,
        };
        (Box::new(reader), Box::new(writer))
    }

    /// Waits for the worker's connection, giving up if the worker exits or
    /// the time runs out. A connection from any other process is closed
    /// unanswered.
    fn accept(
        listener: &Listener,
        pid: u32,
        exited: Option<&OwnedFd>,
        deadline: Instant,
    ) -> io::Result<Option<UnixStream>> {
        let fd = match listener {
            Listener::UdSocket(l) => l.as_fd().as_raw_fd(),
        };
        loop {
            match listener.accept() {
                Ok(stream) => {
                    if is_from(&stream, pid) {
                        stream.set_nonblocking(false)?;
                        let interprocess::local_socket::Stream::UdSocket(stream) = stream;
                        return Ok(Some(stream.inner().try_clone()?));
                    }
                    // Someone else found the name: drop them and wait on.
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let gone = match exited {
                Some(pidfd) => poll_readable(pidfd.as_raw_fd(), Duration::ZERO)?,
                // SAFETY: kill with signal 0 only checks that the pid exists.
                None => (unsafe { libc::kill(pid as libc::pid_t, 0) }) != 0,
            };
            if gone || Instant::now() >= deadline {
                return Ok(None);
            }
            // Wake on a connection, or every 10 ms to see whether the worker died.
            let left = deadline.saturating_duration_since(Instant::now());
            poll_readable(fd, left.min(Duration::from_millis(10)))?;
        }
    }
}

/// A pidfd for `pid`, which becomes readable when the process exits.
fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open has no memory-safety preconditions.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: the kernel just gave us this descriptor and nothing else owns it.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as RawFd) })
}

/// The writing side of a socket channel: bytes wait here until the worker
/// connects (and whether the coordinator has closed its side).
enum Pending {
    Buffering(Vec<u8>, bool),
    Connected(UnixStream),
    /// The worker never connected.
    Gone,
}

/// The reading side of a socket channel, which accepts the worker's
/// connection on its first read.
struct Connecting {
    listener: Option<Listener>,
    pid: u32,
    exited: Option<OwnedFd>,
    deadline: Instant,
    writer: Arc<Mutex<Pending>>,
    stream: Option<UnixStream>,
}

impl Read for Connecting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stream.is_none() {
            let Some(listener) = self.listener.take() else {
                return Ok(0);
            };
            let accepted =
                Listening::accept(&listener, self.pid, self.exited.as_ref(), self.deadline);
            let mut pending = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let stream = match accepted {
                Ok(Some(stream)) => stream,
                // The end of the stream: the worker is lost before its handshake.
                Ok(None) => {
                    *pending = Pending::Gone;
                    return Ok(0);
                }
                Err(e) => {
                    *pending = Pending::Gone;
                    return Err(e);
                }
            };
            let mut output = stream.try_clone()?;
            if let Pending::Buffering(bytes, closed) = &*pending {
                // Within the worker's budget: this cannot block for long.
                output.write_all(bytes)?;
                if *closed {
                    let _ = output.shutdown(std::net::Shutdown::Write);
                }
            }
            *pending = Pending::Connected(output);
            self.stream = Some(stream);
        }
        match &mut self.stream {
            Some(stream) => stream.read(buf),
            None => Ok(0),
        }
    }
}

/// True when the peer of `stream` runs as this user and is the worker `pid`
/// or one of its descendants (a worker command such as `sh -c 'worker'`
/// that does not exec).
fn is_from(stream: &interprocess::local_socket::Stream, pid: u32) -> bool {
    let Ok(creds) = stream.peer_creds() else {
        return false;
    };
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let (Some(peer), Some(peer_euid)) = (creds.pid(), creds.euid()) else {
        return false;
    };
    peer_euid == euid && u32::try_from(peer).is_ok_and(|peer| descends_from(peer, pid))
}

/// True when `pid` is `ancestor` or below it, within a few generations.
fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..8 {
        if pid == ancestor {
            return true;
        }
        match parent_of(pid) {
            Some(parent) if parent > 1 => pid = parent,
            _ => return false,
        }
    }
    false
}

/// The parent pid of `pid`, from /proc.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is parenthesised and may hold spaces: the state and
    // the parent follow the last ')'.
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The pipe buffer a worker's pipes get: the unprivileged maximum on Linux
/// (`/proc/sys/fs/pipe-max-size`). With the default 64 KiB a megabyte frame
/// takes sixteen wake-ups; `fibpool stress` measured 1 MiB streams at about
/// 0.85 GB/s with the default and 2.2 GB/s with this (docs/IPC.md).
const PIPE_BUFFER: libc::c_int = 1 << 20;

/// Asks for a bigger pipe buffer, keeping the default when refused (a user
/// over their pipe-buffer quota); returns the size it has.
fn grow_pipe(fd: RawFd) -> usize {
    // SAFETY: fcntl on a pipe descriptor we own.
    let size = unsafe {
        match libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BUFFER) {
            -1 => libc::fcntl(fd, libc::F_GETPIPE_SZ),
            size => size,
        }
    };
    // A pipe holds at least a page (POSIX: PIPE_BUF bytes at once).
    usize::try_from(size).unwrap_or(4096).max(4096)
}

/// The writing end of a worker's socket. The reading end is another handle
/// on the same socket, so dropping this one would not close anything: it
/// shuts the writing side down instead, and the worker sees the end of its
/// input, as with a pipe.
struct SocketWriter {
    pending: Arc<Mutex<Pending>>,
    /// Send with MSG_DONTWAIT: the socket's descriptor is shared with its
    /// reader, so O_NONBLOCK, which would reach the reader too, is not set.
    nonblocking: bool,
}

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner) {
            Pending::Buffering(bytes, _) => {
                bytes.extend_from_slice(buf);
                Ok(buf.len())
            }
            Pending::Connected(stream) if self.nonblocking => {
                // SAFETY: send(2) from a live buffer on a socket we own.
                let sent = unsafe {
                    libc::send(
                        stream.as_raw_fd(),
                        buf.as_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                if sent < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(sent as usize)
                }
            }
            Pending::Connected(stream) => stream.write(buf),
            Pending::Gone => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SocketWriter {
    fn drop(&mut self) {
        match &mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner) {
            Pending::Buffering(_, closed) => *closed = true,
            Pending::Connected(stream) => {
                let _ = stream.shutdown(std::net::Shutdown::Write);
            }
            Pending::Gone => {}
        }
    }
}

/// A fresh abstract-namespace name that others cannot guess, and a listener
/// on it. The name is a second line of defence; the credential check in
/// [`Listening::accept`] is the first.
fn listen() -> io::Result<(String, Listener)> {
    use std::hash::{BuildHasher, RandomState};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // RandomState is seeded from the OS's randomness once per process.
    let nonce = RandomState::new().hash_one(n);
    let name = format!("fibpool-{}-{n}-{nonce:016x}.sock", std::process::id());
    let listener = ListenerOptions::new()
        .name(name.as_str().to_ns_name::<GenericNamespaced>()?)
        .nonblocking(ListenerNonblockingMode::Accept)
        .create_sync()?;
    Ok((name, listener))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_descends_from_itself_and_its_ancestors_only() {
        let me = std::process::id();
        assert!(descends_from(me, me));
        let parent = parent_of(me).expect("this process has a parent");
        assert!(descends_from(me, parent));
        assert!(!descends_from(parent, me));
        assert_eq!(parent_of(u32::MAX), None);
    }

    #[test]
    fn socket_names_differ_and_are_not_guessable_from_the_pid() {
        let (a, _la) = listen().unwrap();
        let (b, _lb) = listen().unwrap();
        assert_ne!(a, b);
        let prefix = format!("fibpool-{}-", std::process::id());
        assert!(a.starts_with(&prefix) && b.starts_with(&prefix));
        let nonce = |name: &str| name.rsplit('-').next().unwrap().to_owned();
        assert_ne!(nonce(&a), nonce(&b));
        assert_eq!(nonce(&a).len(), "0123456789abcdef.sock".len());
    }
}
