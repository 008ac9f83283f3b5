//! How frames travel: one of the pool's two seams. A transport makes a
//! worker's channel before the worker starts, and says what the worker is
//! started with (its stdin, its stdout, an environment variable) so that it
//! finds the other end. Today: anonymous pipes, a Unix local socket, TCP,
//! and shared memory.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fibpool_protocol::{env, ring};
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
    /// A TCP connection the worker opens to a port the pool listens on: for
    /// workers on other hosts, whose frames then bypass ssh's cipher (a
    /// session moved 300-510 MB/s here, a pipe about 3 GB/s). Frames travel
    /// unencrypted, so it is for a network you trust. A connection is
    /// accepted only with its worker's token (128 random bits, handed to
    /// the worker on its stdin) and only until the worker ends (its stdout,
    /// kept open while it lives, closes). The pool listens on the address
    /// a remote host sees this machine as (ssh's `SSH_CONNECTION`), and on
    /// the loopback for this machine's workers. Spawned and remote workers
    /// only.
    Tcp,
    /// Shared memory: a ring each way in a memfd the worker maps (its
    /// stdout), with a socket pair (its stdin) to wake each other and to
    /// see the other end (`fibpool_protocol::ring`). The same frames,
    /// copied once each way where a pipe copies twice, and no system call
    /// while both sides are awake. This machine's workers only.
    SharedMemory,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Pipe => "pipe",
            Transport::Socket => "socket",
            Transport::Tcp => "tcp",
            Transport::SharedMemory => "shm",
        }
    }

    /// Makes a worker's channel, before the worker exists. With
    /// `nonblocking`, writes to the worker never block: one that would
    /// returns `WouldBlock`, and a frame writer keeps the rest buffered.
    /// A TCP channel listens on `near`, an address of this machine that the
    /// worker can reach.
    pub(crate) fn open(
        self,
        nonblocking: bool,
        near: IpAddr,
    ) -> io::Result<(ChildStdio, Ends, Budget)> {
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
                    awaiting: Awaiting::Local(listener),
                    nonblocking,
                };
                Ok((stdio, Ends::Listening(listening), budget))
            }
            Transport::SharedMemory => {
                let (map, memfd) = ring::Mapping::create()?;
                let (ours, theirs) = ring::peer_pair()?;
                let (map, peer) = (Arc::new(map), Arc::new(ring::Peer::new(ours)));
                let stdio = ChildStdio {
                    stdin: Some(theirs),
                    stdout: Some(memfd),
                    env: Vec::new(),
                };
                let reader =
                    ring::RingReader::new(map.clone(), ring::Direction::Responses, peer.clone());
                let writer =
                    ring::RingWriter::new(map, ring::Direction::Requests, peer, nonblocking);
                let budget = Budget {
                    capacity: ring::REQUEST_RING,
                    page: 1,
                    per_frame: 0,
                };
                Ok((
                    stdio,
                    Ends::Ready(Box::new(reader), Box::new(writer)),
                    budget,
                ))
            }
            Transport::Tcp => {
                let listener = TcpListener::bind((near, 0)).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {near} for TCP: {e}"))
                })?;
                listener.set_nonblocking(true)?;
                let address = listener.local_addr()?;
                let token = token_line()?;
                let (stdin, mut hand) = io::pipe()?;
                // Far smaller than any pipe's buffer: this cannot block.
                hand.write_all(&token)?;
                drop(hand);
                let (lifeline, stdout) = io::pipe()?;
                let stdio = ChildStdio {
                    stdin: Some(stdin.into()),
                    stdout: Some(stdout.into()),
                    env: vec![(env::TCP, address.to_string().into())],
                };
                // The peer's receive buffer alone holds more (128 KiB by
                // default on Linux).
                let budget = Budget {
                    capacity: 64 << 10,
                    page: 1,
                    per_frame: 0,
                };
                let listening = Listening {
                    awaiting: Awaiting::Tcp {
                        listener,
                        token,
                        lifeline: lifeline.into(),
                    },
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

/// A socket waiting for its worker.
pub(crate) struct Listening {
    awaiting: Awaiting,
    nonblocking: bool,
}

/// What a worker connects to.
enum Awaiting {
    Local(Listener),
    Tcp {
        listener: TcpListener,
        token: [u8; env::TCP_TOKEN_LINE],
        /// The reading end of the worker's stdout: its end is the worker's.
        lifeline: OwnedFd,
    },
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
            awaiting: Some(self.awaiting),
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
        awaiting: &Awaiting,
        pid: u32,
        exited: Option<&OwnedFd>,
        deadline: Instant,
    ) -> io::Result<Option<Stream>> {
        match awaiting {
            Awaiting::Local(listener) => {
                Ok(Self::accept_local(listener, pid, exited, deadline)?.map(Stream::Unix))
            }
            Awaiting::Tcp {
                listener,
                token,
                lifeline,
            } => Ok(Self::accept_tcp(listener, token, lifeline, deadline)?.map(Stream::Tcp)),
        }
    }

    /// A TCP connection that brings `token` first; others are closed.
    /// Every connection's token is read as it comes, all at once, and each
    /// has [`TOKEN_WAIT`] in all to bring it: connections that say nothing,
    /// or dribble, hold up no other (the worker's among them).
    fn accept_tcp(
        listener: &TcpListener,
        token: &[u8; env::TCP_TOKEN_LINE],
        lifeline: &OwnedFd,
        deadline: Instant,
    ) -> io::Result<Option<TcpStream>> {
        let mut arriving: VecDeque<Arriving> = VecDeque::new();
        loop {
            // A token that is there at its accept is read then, before any
            // later connection can push it out; only incomplete ones wait.
            // At most 256 a turn, so that a flood cannot hold the loop past
            // its deadline.
            for _ in 0..256 {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(true)?;
                        let mut one = Arriving {
                            stream,
                            brought: [0; env::TCP_TOKEN_LINE],
                            len: 0,
                            until: Instant::now() + TOKEN_WAIT,
                        };
                        match one.read() {
                            Some(true) if same(&one.brought, token) => {
                                return Ok(Some(connected(one.stream)?));
                            }
                            Some(false) => {
                                if arriving.len() == MAX_ARRIVING {
                                    arriving.pop_front();
                                }
                                arriving.push_back(one);
                            }
                            // A stranger, or one that ended: dropped.
                            _ => {}
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            let now = Instant::now();
            let mut i = 0;
            while i < arriving.len() {
                match arriving[i].read() {
                    Some(true) if same(&arriving[i].brought, token) => {
                        let stream = arriving.swap_remove_back(i).expect("listed").stream;
                        return Ok(Some(connected(stream)?));
                    }
                    Some(false) if arriving[i].until > now => i += 1,
                    // A stranger, one that ended, or too slow: dropped.
                    _ => {
                        arriving.remove(i);
                    }
                }
            }
            if ended(lifeline)? || now >= deadline {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(now);
            let mut fds: Vec<RawFd> = vec![listener.as_raw_fd()];
            fds.extend(arriving.iter().map(|a| a.stream.as_raw_fd()));
            poll_any(&fds, left.min(Duration::from_millis(10)))?;
        }
    }

    fn accept_local(
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

/// How long a connection may take to bring its token, in all.
const TOKEN_WAIT: Duration = Duration::from_secs(1);

/// The worker's connection, made ready for frames.
fn connected(stream: TcpStream) -> io::Result<TcpStream> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    keep_alive(&stream);
    Ok(stream)
}

/// Connections bringing their tokens at once, at most: a new one beyond
/// these drops the oldest.
const MAX_ARRIVING: usize = 64;

/// A TCP connection that has not yet brought its token.
struct Arriving {
    stream: TcpStream,
    brought: [u8; env::TCP_TOKEN_LINE],
    len: usize,
    until: Instant,
}

impl Arriving {
    /// Reads what has come, never past the token: `Some(true)` once it is
    /// all there, `Some(false)` while more may come, `None` when the
    /// connection ended or failed.
    fn read(&mut self) -> Option<bool> {
        while self.len < self.brought.len() {
            match (&self.stream).read(&mut self.brought[self.len..]) {
                Ok(0) => return None,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        Some(true)
    }
}

/// Waits until one of `fds` is readable or `timeout` passes.
fn poll_any(fds: &[RawFd], timeout: Duration) -> io::Result<()> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let millis = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `polls` is a valid array of its length, for open descriptors.
    let rc = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, millis) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// A fresh token line: 32 hexadecimal digits of the kernel's randomness and
/// a newline.
fn token_line() -> io::Result<[u8; env::TCP_TOKEN_LINE]> {
    let mut random = [0u8; 16];
    let mut filled = 0;
    while filled < random.len() {
        // SAFETY: getrandom writes at most the given length into the buffer.
        let n = unsafe {
            libc::getrandom(
                random[filled..].as_mut_ptr().cast(),
                random.len() - filled,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            filled += n as usize;
        }
    }
    let mut line = [b'\n'; env::TCP_TOKEN_LINE];
    for (i, byte) in random.iter().enumerate() {
        let hex = format!("{byte:02x}");
        line[2 * i..2 * i + 2].copy_from_slice(hex.as_bytes());
    }
    Ok(line)
}

/// Compares in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

/// A connection whose far host vanishes fails within about a minute, as an
/// ssh connection does with fibpool's ServerAliveInterval.
fn keep_alive(stream: &TcpStream) {
    let fd = stream.as_raw_fd();
    set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 15);
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 5);
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 6);
}

/// Sets an int socket option, best effort: a refused one leaves the default.
fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt with an int option on a socket we own.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// True once the worker's stdout has closed: it ended. Whatever it printed
/// there (a login script's greeting) is read and dropped.
fn ended(lifeline: &OwnedFd) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    // At most 64 KiB a call: a worker that prints without end holds up the
    // accept loop no longer than that.
    for _ in 0..16 {
        if !poll_readable(lifeline.as_raw_fd(), Duration::ZERO)? {
            break;
        }
        // SAFETY: read into a live buffer of its length.
        let n = unsafe { libc::read(lifeline.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => return Ok(true),
            n if n > 0 => continue,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// A connected worker's socket.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }

    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
    Connected(Stream),
    /// The worker never connected.
    Gone,
}

/// The reading side of a socket channel, which accepts the worker's
/// connection on its first read.
struct Connecting {
    awaiting: Option<Awaiting>,
    pid: u32,
    exited: Option<OwnedFd>,
    deadline: Instant,
    writer: Arc<Mutex<Pending>>,
    stream: Option<Stream>,
}

impl Read for Connecting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stream.is_none() {
            let Some(awaiting) = self.awaiting.take() else {
                return Ok(0);
            };
            let accepted =
                Listening::accept(&awaiting, self.pid, self.exited.as_ref(), self.deadline);
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
                    output.shutdown_write();
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
            Pending::Connected(stream) => stream.shutdown_write(),
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
