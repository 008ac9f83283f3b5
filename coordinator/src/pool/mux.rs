//! A session on an ssh master, opened by the pool itself: the client side of
//! OpenSSH's ControlMaster protocol (PROTOCOL.mux, version 4), so that a
//! remote worker costs no local process at all. `ssh -S` is a program of
//! its own whose start alone (its loader, OpenSSL) took 4-6 ms here;
//! this is one local round trip to the master, which then opens a channel
//! on its connection and hands it the worker's pipe ends we passed it.
//!
//! The session is the worker's [`Process`]: killing it closes the control
//! connection, and the master then closes the channel (the remote worker
//! sees the end of its input); its status is the exit value the master
//! reports, 255 if the session ended without one (as `ssh` exits).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fibpool_protocol::env;

use super::child::{Killer, Process, far, poll_readable};

const MUX_MSG_HELLO: u32 = 0x0000_0001;
const MUX_C_NEW_SESSION: u32 = 0x1000_0002;
const MUX_S_PERMISSION_DENIED: u32 = 0x8000_0002;
const MUX_S_FAILURE: u32 = 0x8000_0003;
const MUX_S_EXIT_MESSAGE: u32 = 0x8000_0004;
const MUX_S_SESSION_OPENED: u32 = 0x8000_0006;
const MUX_S_TTY_ALLOC_FAIL: u32 = 0x8000_0008;
const VERSION: u32 = 4;
/// No escape character.
const NO_ESCAPE: u32 = 0xffff_ffff;
/// The longest packet a master is believed to send: its messages are a few
/// words and a reason.
const MAX_PACKET: usize = 64 * 1024;
/// How long the master (a local process, which answers in well under a
/// millisecond) may take to say hello or finish a packet. A start waits for
/// the hello on the pool's thread: a master that is stopped holds the pool
/// up this long per start, and then the start fails.
const MASTER_TIMEOUT: Duration = Duration::from_millis(250);

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("ssh master: {what}"))
}

/// Writes one packet: its length, then its bytes.
fn write_packet(socket: &mut UnixStream, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| bad("packet too long".to_owned()))?;
    let mut packet = Vec::with_capacity(4 + body.len());
    packet.extend_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(body);
    socket.write_all(&packet)
}

/// Reads one packet; `None` at the end of the stream.
fn read_packet(socket: &mut UnixStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match socket.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_PACKET {
        return Err(bad(format!(
            "a packet of {len} bytes (at most {MAX_PACKET})"
        )));
    }
    let mut body = vec![0u8; len];
    socket.read_exact(&mut body)?;
    Ok(Some(body))
}

/// A packet's fields, read in order; any read past its end is an error.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u32(&mut self) -> io::Result<u32> {
        let (head, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("a packet cut short".to_owned()))?;
        self.0 = rest;
        Ok(u32::from_be_bytes(*head))
    }

    fn string(&mut self) -> io::Result<String> {
        let len = self.u32()? as usize;
        if len > self.0.len() {
            return Err(bad("a string past the packet's end".to_owned()));
        }
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(String::from_utf8_lossy(text).into_owned())
    }
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, text: &[u8]) {
    put_u32(out, text.len() as u32);
    out.extend_from_slice(text);
}

/// A session on the master at `control`, running `command` on the far side
/// with `stdin` and `stdout` as its standard streams and this process's
/// stderr as its stderr. Returns once the request is written: the master's
/// answer is read with the session's end.
pub(crate) fn open(
    control: &Path,
    command: &str,
    stdin: OwnedFd,
    stdout: OwnedFd,
    master_pid: u32,
    keep: Arc<dyn Send + Sync>,
) -> io::Result<MuxSession> {
    let mut socket = UnixStream::connect(control)?;
    socket.set_read_timeout(Some(MASTER_TIMEOUT))?;
    let mut hello = Vec::new();
    put_u32(&mut hello, MUX_MSG_HELLO);
    put_u32(&mut hello, VERSION);
    write_packet(&mut socket, &hello)?;
    let theirs =
        read_packet(&mut socket)?.ok_or_else(|| bad("closed before its hello".to_owned()))?;
    let mut fields = Fields(&theirs);
    let (kind, version) = (fields.u32()?, fields.u32()?);
    if kind != MUX_MSG_HELLO || version != VERSION {
        return Err(bad(format!(
            "hello 0x{kind:08x} version {version}, not protocol {VERSION}"
        )));
    }
    let mut request = Vec::new();
    put_u32(&mut request, MUX_C_NEW_SESSION);
    put_u32(&mut request, 0); // request id
    put_string(&mut request, b""); // reserved
    for _flag in ["tty", "x11", "agent", "subsystem"] {
        put_u32(&mut request, 0);
    }
    put_u32(&mut request, NO_ESCAPE);
    put_string(&mut request, b""); // terminal type
    put_string(&mut request, command.as_bytes());
    write_packet(&mut socket, &request)?;
    // Each descriptor with one byte of its own, in this order, as ssh sends them.
    let stderr = io::stderr();
    for fd in [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()] {
        fibpool_protocol::forkserver::send(socket.as_fd(), &[0], &[fd])?;
    }
    // The master holds the worker's ends now; only it may.
    drop((stdin, stdout));
    Ok(MuxSession {
        socket,
        control: control.to_owned(),
        remote_pid: None,
        token: None,
        killing: None,
        exit_value: None,
        status: None,
        collateral: false,
        master_pid,
        _keep: keep,
    })
}

impl MuxSession {
    /// The token its processes there have in their environment.
    pub(crate) fn with_token(mut self, token: String) -> Self {
        self.token = Some(token);
        self
    }
}

/// A remote worker's session: see the module's documentation.
pub(crate) struct MuxSession {
    socket: UnixStream,
    /// The master's control socket, for a session that kills the worker.
    control: PathBuf,
    /// The worker's pid there, once its handshake said (for its name).
    remote_pid: Option<u32>,
    /// What the session's processes there have in their environment
    /// (`FIBPOOL_SESSION`), by which a kill finds them.
    token: Option<String>,
    /// The kill of its processes there, under way.
    killing: Option<std::thread::JoinHandle<()>>,
    /// The exit value the master sent, once it has.
    exit_value: Option<u32>,
    /// How it ended, once the master closed the connection.
    status: Option<ExitStatus>,
    /// It ended because its master did: no exit value came, and the master
    /// process ended.
    collateral: bool,
    /// The master process, a child of this one.
    master_pid: u32,
    /// What must outlive the session (its master).
    _keep: Arc<dyn Send + Sync>,
}

impl std::fmt::Debug for MuxSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxSession")
            .field("socket", &self.socket.as_raw_fd())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl MuxSession {
    /// Handles one packet from the master; false at the end of the stream.
    fn read_one(&mut self) -> io::Result<bool> {
        let Some(packet) = read_packet(&mut self.socket)? else {
            return Ok(false);
        };
        let mut fields = Fields(&packet);
        match fields.u32()? {
            MUX_S_SESSION_OPENED | MUX_S_TTY_ALLOC_FAIL => {}
            MUX_S_EXIT_MESSAGE => {
                let _session = fields.u32()?;
                self.exit_value = Some(fields.u32()?);
            }
            kind @ (MUX_S_PERMISSION_DENIED | MUX_S_FAILURE) => {
                let _request = fields.u32()?;
                let reason = fields.string()?;
                let what = if kind == MUX_S_FAILURE {
                    "failed"
                } else {
                    "was refused"
                };
                // As ssh says it: the session ends with 255.
                eprintln!("fibpool: an ssh session {what}: {reason}");
                return Ok(false);
            }
            kind => return Err(bad(format!("an unknown message 0x{kind:08x}"))),
        }
        Ok(true)
    }

    fn ended(&mut self) -> ExitStatus {
        if self.status.is_none() && self.exit_value.is_none() {
            self.collateral = master_ended(self.master_pid);
        }
        let value = self.exit_value.unwrap_or(255).min(255);
        *self
            .status
            .get_or_insert(ExitStatus::from_raw((value as i32) << 8))
    }
}

impl Process for MuxSession {
    /// A session is no process here.
    fn pid(&self) -> u32 {
        0
    }

    /// SIGKILL to the worker there, by a session of its own on the master
    /// (from a thread of its own, which waits at most [`KILL_TIMEOUT`] for
    /// it), when its pid is known and it has not ended; then the session's
    /// end. The end alone would only close
    /// the worker's input, which it reads between chunks: a hung or busy
    /// worker would go on.
    fn kill(&mut self) {
        // An exit message already here: the worker is gone, and its pid
        // may be another process's by now.
        while self.exit_value.is_none()
            && poll_readable(self.socket.as_raw_fd(), Duration::ZERO).unwrap_or(false)
            && self.read_one().unwrap_or(false)
        {}
        if self.status.is_none()
            && self.exit_value.is_none()
            && let Some(token) = self.token.take()
        {
            self.killing = kill_session(self.control.clone(), token, self._keep.clone());
        }
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    fn remote_pid(&mut self, pid: u32) {
        self.remote_pid = Some(pid);
    }

    fn collateral(&self) -> bool {
        self.collateral
    }

    fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        if let Some(killing) = self.killing.take() {
            join_kill(killing);
        }
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let deadline = far(timeout);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if poll_readable(self.socket.as_raw_fd(), left)? {
                match self.read_one() {
                    Ok(true) => continue,
                    // The end, or a master that broke the protocol: either
                    // way the session is over.
                    Ok(false) | Err(_) => return Ok(Some(self.ended())),
                }
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }

    fn killer(&self) -> io::Result<Killer> {
        Ok(Killer::Socket(self.socket.as_fd().try_clone_to_owned()?))
    }
}

/// How long a session that ended without an exit value waits to see its
/// master end: the master closes the worker's streams as it exits, a
/// moment before it is a zombie.
const MASTER_ENDING: Duration = Duration::from_millis(500);

/// Whether the master process (our child, not reaped while a session of
/// its lives) has ended, or does within [`MASTER_ENDING`]. A pidfd becomes
/// readable when its process exits.
fn master_ended(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    // SAFETY: pidfd_open has no memory-safety preconditions.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if raw < 0 {
        return io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // SAFETY: the kernel just gave us this descriptor and nothing else owns it.
    let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw as i32) };
    poll_readable(pidfd.as_raw_fd(), MASTER_ENDING).unwrap_or(false)
}

/// How long killing a remote worker waits for its kill to be done.
const KILL_TIMEOUT: Duration = Duration::from_secs(2);

/// SIGKILL there to every process whose environment holds `token` (a
/// session's: its worker and whatever that started), in a session on the
/// master at `control`, from a thread of its own (a master that does not
/// answer, one stopped, holds up only that). Not by the pid a worker's
/// handshake gave: that may be another process's there (a worker in a
/// PID namespace of its own, or one that lied), and a session that never
/// completed its handshake gave none.
/// Waited for before the session is reaped ([`join_kill`]), so that what
/// it killed is gone by then.
pub(crate) fn kill_session(
    control: PathBuf,
    token: String,
    keep: Arc<dyn Send + Sync>,
) -> Option<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("fibpool-ssh-kill".to_owned())
        .spawn(move || {
            let _ = kill_by_token(&control, &token, keep);
        })
        .ok()
}

/// Waits for a kill [`kill_session`] started, at most a little past
/// [`KILL_TIMEOUT`]: one stuck on a master that does not answer (stopped)
/// is left to end by itself.
pub(crate) fn join_kill(killing: std::thread::JoinHandle<()>) {
    let deadline = Instant::now() + KILL_TIMEOUT + Duration::from_millis(500);
    while !killing.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    if killing.is_finished() {
        let _ = killing.join();
    }
}

fn kill_by_token(control: &Path, token: &str, keep: Arc<dyn Send + Sync>) -> io::Result<()> {
    let null = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
    };
    let (stdin, stdout) = (OwnedFd::from(null()?), OwnedFd::from(null()?));
    let mut session = open(control, &kill_command(token), stdin, stdout, 0, keep)?;
    session.wait_timeout(KILL_TIMEOUT)?;
    Ok(())
}

/// The shell command that kills the processes holding `token` (hex) in
/// their environment: grep reads every /proc/PID/environ of the user's
/// that it may, as NUL-separated lines.
fn kill_command(token: &str) -> String {
    format!(
        "pids=$(grep -lsxzF '{}={token}' /proc/[0-9]*/environ | cut -d/ -f3); \
         [ -z \"$pids\" ] || kill -KILL $pids 2>/dev/null",
        env::SESSION
    )
}

/// For [`Killer::Socket`]: ends the connection for both sides.
pub(crate) fn shut(fd: BorrowedFd<'_>) {
    // SAFETY: shutdown(2) on a socket we hold open.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
}
