//! The fork server's messages: what a coordinator and the fork server it
//! started say to each other over a Unix `SOCK_SEQPACKET` socket pair (the
//! server's stdin), one message per packet, descriptors passed alongside by
//! SCM_RIGHTS.
//!
//! - [`FromServer::Ready`]: the server's first message, once it has done
//!   its set-up and takes requests, stamped on CLOCK_MONOTONIC.
//! - [`ToServer::Start`]: fork a worker on the descriptors passed with it
//!   (its stdin and stdout), with an optional local socket name to connect
//!   to instead.
//! - [`FromServer::Started`]: the worker's pid, with a pidfd for it passed
//!   alongside, so the coordinator can signal exactly that process and see
//!   it exit, whatever happens to the pid later; [`FromServer::Failed`]: the
//!   fork failed, with its errno.
//! - [`FromServer::Exited`]: a worker the server reaped, with its wait
//!   status, so the coordinator learns how each worker ended as with a child
//!   of its own.
//!
//! Packets are small and fixed in layout (little-endian words); anything
//! else is refused as [`std::io::ErrorKind::InvalidData`].

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The longest local socket name a start request may carry.
pub const MAX_SOCKET_NAME: usize = 255;
/// Descriptors a packet may carry, at most.
pub const MAX_FDS: usize = 2;
/// The largest packet either side sends.
pub const MAX_PACKET: usize = 8 + MAX_SOCKET_NAME;

const START: u32 = 1;
const STARTED: u32 = 2;
const FAILED: u32 = 3;
const EXITED: u32 = 4;
const READY: u32 = 5;

/// From the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToServer {
    /// Sent with the worker's stdin and stdout (none for a socket).
    Start { socket: Option<Vec<u8>> },
}

/// From the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromServer {
    /// First, once the server takes requests: when, on CLOCK_MONOTONIC.
    Ready {
        ready_ns: u64,
    },
    /// Sent with a pidfd for the worker.
    Started {
        pid: u32,
    },
    Failed {
        errno: i32,
    },
    /// A raw wait status, as `waitpid` gives it.
    Exited {
        pid: u32,
        status: i32,
    },
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn word(packet: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(packet[at..at + 4].try_into().expect("four bytes"))
}

impl ToServer {
    pub fn encode(&self) -> Vec<u8> {
        let ToServer::Start { socket } = self;
        let mut out = START.to_le_bytes().to_vec();
        match socket {
            None => out.extend_from_slice(&0u32.to_le_bytes()),
            Some(name) => {
                out.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
                out.extend_from_slice(name);
            }
        }
        out
    }

    pub fn decode(packet: &[u8]) -> io::Result<ToServer> {
        if packet.len() < 8 || word(packet, 0) != START {
            return Err(invalid(format!(
                "a fork server request of {} bytes that is not a start",
                packet.len()
            )));
        }
        let name = &packet[8..];
        let socket = match word(packet, 4) {
            0 if name.is_empty() => None,
            n if n as usize == name.len() + 1 && name.len() <= MAX_SOCKET_NAME => {
                Some(name.to_vec())
            }
            n => {
                return Err(invalid(format!(
                    "a start request whose socket name says {n} and holds {} bytes",
                    name.len()
                )));
            }
        };
        Ok(ToServer::Start { socket })
    }
}

impl FromServer {
    pub fn encode(&self) -> [u8; 12] {
        let (kind, a, b) = match *self {
            FromServer::Ready { ready_ns } => (READY, ready_ns as u32, (ready_ns >> 32) as u32),
            FromServer::Started { pid } => (STARTED, pid, 0),
            FromServer::Failed { errno } => (FAILED, errno as u32, 0),
            FromServer::Exited { pid, status } => (EXITED, pid, status as u32),
        };
        let mut out = [0u8; 12];
        out[..4].copy_from_slice(&kind.to_le_bytes());
        out[4..8].copy_from_slice(&a.to_le_bytes());
        out[8..].copy_from_slice(&b.to_le_bytes());
        out
    }

    pub fn decode(packet: &[u8]) -> io::Result<FromServer> {
        if packet.len() != 12 {
            return Err(invalid(format!(
                "a fork server message of {} bytes, not 12",
                packet.len()
            )));
        }
        let (a, b) = (word(packet, 4), word(packet, 8));
        match word(packet, 0) {
            READY => Ok(FromServer::Ready {
                ready_ns: u64::from(a) | u64::from(b) << 32,
            }),
            STARTED if a != 0 => Ok(FromServer::Started { pid: a }),
            FAILED => Ok(FromServer::Failed { errno: a as i32 }),
            EXITED if a != 0 => Ok(FromServer::Exited {
                pid: a,
                status: b as i32,
            }),
            kind => Err(invalid(format!(
                "a fork server message of kind {kind} for pid {a}"
            ))),
        }
    }
}

/// A connected `SOCK_SEQPACKET` pair, close-on-exec.
pub fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors into the array it is given.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Room for [`MAX_FDS`] descriptors in a control message, aligned as the
/// kernel wants it.
#[repr(C, align(8))]
struct Control([u8; 64]);

/// Sends one packet with `fds` alongside.
pub fn send(socket: BorrowedFd<'_>, packet: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    assert!(fds.len() <= MAX_FDS, "at most {MAX_FDS} descriptors");
    let mut iov = libc::iovec {
        iov_base: packet.as_ptr() as *mut libc::c_void,
        iov_len: packet.len(),
    };
    let mut control = Control([0; 64]);
    // SAFETY: a zeroed msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE is arithmetic.
        let space = unsafe { libc::CMSG_SPACE(bytes) } as usize;
        assert!(space <= control.0.len());
        msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is large enough and aligned for one
        // cmsghdr followed by the descriptors, as the assertion checks.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(bytes) as _;
            let data = libc::CMSG_DATA(header) as *mut RawFd;
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if sent >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Receives one packet into `buf`, with the descriptors that came with it
/// (close-on-exec). `None` at the end of the stream. A packet cut short (too
/// big for `buf`) or descriptors cut short are refused.
pub fn recv(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = Control([0; 64]);
    // SAFETY: a zeroed msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = control.0.len() as _;
    let got = loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let got = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if got >= 0 {
            break got as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled the control buffer; the CMSG macros walk it
    // within msg_controllen, and each SCM_RIGHTS descriptor is new and ours.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header) as *const RawFd;
                let len = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    // With room for MAX_FDS descriptors, descriptors alone cut short are
    // ones this process could not take.
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) == libc::MSG_CTRUNC {
        return Err(invalid(format!(
            "the descriptors of a fork server packet were cut short ({got} bytes, {} descriptors): \
             this process could not take them (out of file descriptors? see ulimit -n)",
            fds.len()
        )));
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(invalid(format!(
            "a fork server packet cut short ({got} bytes, {} descriptors)",
            fds.len()
        )));
    }
    if got == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((got, fds)))
}
