//! The fork server: a worker process started with `FIBPOOL_FORK_SERVER`
//! that forks workers on request instead of serving, as CPython's
//! `multiprocessing.forkserver` does. A forked worker has paid for none of an
//! exec (the loader, glibc's start-up, fresh page faults): it is this
//! process, already set up, on new descriptors.
//!
//! The server is single-threaded, so fork is sound here: its children may go
//! on running Rust code. Its stdin is a `SOCK_SEQPACKET` socket to the
//! coordinator ([`fibpool_protocol::forkserver`]); it polls that and a pidfd
//! per child, reports each child it reaps, and at the end of its stdin kills
//! and reaps the children left. It dies with the coordinator
//! (PR_SET_PDEATHSIG) and its children die with it, so none outlives the
//! coordinator whichever of the two goes first.
//!
//! The server keeps one worker forked ahead of its request (the *spare*),
//! waiting on a socket of its own: a start request then costs a message to
//! it, not a fork, and the next spare is forked once the request is
//! answered. A spare names itself `fibpool-spare` (/proc's `comm`) until
//! it is taken, so that a count of the server's workers can pass it by.

use std::ffi::{CStr, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;

use fibpool_protocol::clock::monotonic_ns;
use fibpool_protocol::forkserver::{self, FromServer, MAX_PACKET, ToServer};

use crate::stdio::{Channel, die_with_parent, say, serve_stdio};

/// Serves fork requests until the coordinator closes the socket, in a
/// process started with `FIBPOOL_FORK_SERVER` (the coordinator's pid).
pub(crate) fn run(name: &str, coordinator: &OsStr) -> ExitCode {
    let Some(pid) = coordinator.to_str().and_then(|pid| pid.parse().ok()) else {
        say(name, &format!("fork server: not a pid: {coordinator:?}"));
        return ExitCode::FAILURE;
    };
    // The children are workers, never servers.
    // SAFETY: this process has one thread, so nothing reads the environment
    // while it changes.
    unsafe { std::env::remove_var(fibpool_protocol::env::FORK_SERVER) };
    serve_as_fork_server(name, pid)
}

/// Serves fork requests on fd 0, a `SOCK_SEQPACKET` socket to the
/// coordinator (pid `coordinator`, which this process dies with if it is
/// its parent), until the coordinator closes it. The process must have one
/// thread: its children go on running Rust code after fork. For a process
/// forked from a coordinator (the fork start method) as for one spawned.
pub fn serve_as_fork_server(name: &str, coordinator: u32) -> ExitCode {
    crate::unblock_signals();
    // A coordinator that ignores SIGCHLD would leave this process unable to
    // wait for its children (an ignored signal survives exec): they would
    // be reaped by the kernel and their statuses lost.
    // SAFETY: restoring a signal's default disposition in a process with
    // one thread.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    match serve_forks(name, coordinator) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(name, &format!("fork server: {e}"));
            ExitCode::FAILURE
        }
    }
}

struct Child {
    pid: u32,
    pidfd: OwnedFd,
}

/// A worker forked ahead of its request, and the server's end of the
/// socket it waits on for the request and its descriptors.
struct Spare {
    child: Child,
    socket: OwnedFd,
}

/// What a spare calls itself until it is taken (at most 15 bytes).
pub const SPARE_NAME: &CStr = c"fibpool-spare";

fn serve_forks(name: &str, coordinator: u32) -> io::Result<()> {
    die_with_parent(coordinator).map_err(io::Error::other)?;
    // What every child would otherwise fault in on its first chunk.
    std::hint::black_box(crate::kernels::fib(10_000));
    // SAFETY: fd 0 is this process's stdin, which only this function uses.
    let control = unsafe { OwnedFd::from_raw_fd(libc::STDIN_FILENO) };
    let ready = FromServer::Ready {
        ready_ns: monotonic_ns(),
    };
    match forkserver::send(control.as_fd(), &ready.encode(), &[]) {
        // The coordinator closed the socket first: it is done with this
        // server (one that stopped at a usage error), which has no child.
        Err(e) if gone(&e) => return Ok(()),
        sent => sent?,
    }
    let mut children: Vec<Child> = Vec::new();
    let mut spare = fork_spare(name, &control, &children).ok();
    let mut packet = [0u8; MAX_PACKET];
    'serving: loop {
        // The spare's pidfd last: a spare that ends idle is not reported.
        let mut polls: Vec<libc::pollfd> = std::iter::once(control.as_raw_fd())
            .chain(children.iter().map(|c| c.pidfd.as_raw_fd()))
            .chain(spare.iter().map(|s| s.child.pidfd.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfds for open descriptors.
        if unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) } < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if spare.is_some() && polls.pop().is_some_and(|p| p.revents != 0) {
            if let Some(ended) = spare.take() {
                reap(ended.child.pid)?;
            }
        }
        // Children first: a pidfd that polls readable is a child that ended.
        let ended: Vec<usize> = (1..polls.len())
            .filter(|&i| polls[i].revents != 0)
            .map(|i| i - 1)
            .collect();
        for &i in ended.iter().rev() {
            let child = children.swap_remove(i);
            let status = reap(child.pid)?;
            let exited = FromServer::Exited {
                pid: child.pid,
                status,
            };
            match forkserver::send(control.as_fd(), &exited.encode(), &[]) {
                // The coordinator is gone: kill and reap what is left.
                Err(e) if gone(&e) => break 'serving,
                sent => sent?,
            }
        }
        if polls[0].revents == 0 {
            continue;
        }
        let received = match forkserver::recv(control.as_fd(), &mut packet) {
            Err(e) if gone(&e) => break,
            received => received?,
        };
        let Some((len, fds)) = received else {
            break;
        };
        let ToServer::Start { socket } = ToServer::decode(&packet[..len])?;
        let expected = if socket.is_some() { 0 } else { 2 };
        if fds.len() != expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a start request with {} descriptors, not {expected}",
                    fds.len()
                ),
            ));
        }
        let taken = spare
            .take()
            .and_then(|s| take_spare(s, &packet[..len], &fds));
        let forked = || {
            let socket = socket.map(OsString::from_vec);
            fork_worker(name, &control, &children, &fds, socket)
        };
        let answer = match taken.map_or_else(forked, Ok) {
            Ok(child) => {
                let started = FromServer::Started { pid: child.pid };
                let sent =
                    forkserver::send(control.as_fd(), &started.encode(), &[child.pidfd.as_fd()]);
                children.push(child);
                sent
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                forkserver::send(control.as_fd(), &FromServer::Failed { errno }.encode(), &[])
            }
        };
        drop(fds);
        match answer {
            // As above.
            Err(e) if gone(&e) => break,
            answer => answer?,
        }
        // Only now, with the request's descriptors closed here, so that the
        // new spare holds none of them.
        spare = fork_spare(name, &control, &children).ok();
    }
    // The coordinator is done (or gone): no worker outlives this server.
    let spare = spare.map(|s| s.child);
    for child in children.iter().chain(&spare) {
        kill(child.pidfd.as_fd());
    }
    for child in children.into_iter().chain(spare) {
        reap(child.pid)?;
    }
    Ok(())
}

/// Hands a start request and its descriptors to the spare, which becomes
/// the worker; `None` if it cannot take them (it is killed and reaped).
fn take_spare(spare: Spare, request: &[u8], fds: &[OwnedFd]) -> Option<Child> {
    let fds: Vec<BorrowedFd<'_>> = fds.iter().map(|fd| fd.as_fd()).collect();
    match forkserver::send(spare.socket.as_fd(), request, &fds) {
        Ok(()) => Some(spare.child),
        Err(_) => {
            kill(spare.child.pidfd.as_fd());
            let _ = reap(spare.child.pid);
            None
        }
    }
}

/// Forks a spare: a worker that waits for its start request.
fn fork_spare(name: &str, control: &OwnedFd, children: &[Child]) -> io::Result<Spare> {
    let (ours, theirs) = forkserver::socket_pair()?;
    let server = std::process::id();
    // The spare is named from its first instant: the server takes the name
    // for the fork, and gives it back.
    let mut saved = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes; PR_SET_NAME reads a
    // NUL-terminated name (`saved` has at most 15 bytes of one).
    unsafe {
        libc::prctl(libc::PR_GET_NAME, saved.as_mut_ptr());
        libc::prctl(libc::PR_SET_NAME, SPARE_NAME.as_ptr());
    }
    // SAFETY: this process is single-threaded, so the child may run any code.
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        // SAFETY: as above.
        unsafe { libc::prctl(libc::PR_SET_NAME, saved.as_ptr()) };
    }
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(ours);
        let code = match wait_for_start(control, children, theirs, server, &saved) {
            Ok(Some((entered, channel))) => serve_stdio(name, entered, channel),
            // The server let it go unused.
            Ok(None) => ExitCode::SUCCESS,
            Err(e) => {
                say(name, &format!("forked worker: {e}"));
                ExitCode::FAILURE
            }
        };
        // SAFETY: as in fork_worker.
        unsafe { libc::_exit(if code == ExitCode::SUCCESS { 0 } else { 1 }) };
    }
    drop(theirs);
    let pid = pid as u32;
    match pidfd_open(pid) {
        Ok(pidfd) => Ok(Spare {
            child: Child { pid, pidfd },
            socket: ours,
        }),
        Err(e) => {
            // SAFETY: kill and waitpid on our own unreaped child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            reap(pid)?;
            Err(e)
        }
    }
}

/// In a spare: everything a forked worker does that its request does not
/// decide, then the wait for that request on `socket`. `None` when the
/// server closes the socket instead.
fn wait_for_start(
    control: &OwnedFd,
    children: &[Child],
    socket: OwnedFd,
    server: u32,
    name: &[u8; 16],
) -> io::Result<Option<(u64, Channel)>> {
    // Its copy of the control socket goes first: the coordinator learns of
    // the server's end by that socket's.
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    debug_assert_eq!(control.as_raw_fd(), libc::STDIN_FILENO);
    // SAFETY: dup2 between descriptors this process holds.
    if unsafe { libc::dup2(null.as_raw_fd(), libc::STDIN_FILENO) } < 0 {
        return Err(io::Error::last_os_error());
    }
    detach(children, server)?;
    let mut packet = [0u8; MAX_PACKET];
    let Some((len, fds)) = forkserver::recv(socket.as_fd(), &mut packet)? else {
        return Ok(None);
    };
    let entered = monotonic_ns();
    drop(socket);
    // SAFETY: `name` is NUL-terminated (PR_GET_NAME's, at most 15 bytes).
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    let ToServer::Start { socket: name } = ToServer::decode(&packet[..len])?;
    let expected = if name.is_some() { 0 } else { 2 };
    if fds.len() != expected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a start request with {} descriptors, not {expected}",
                fds.len()
            ),
        ));
    }
    take_stdio(&fds, &null)?;
    // Closed where they were by take_stdio: not to be closed again.
    for fd in fds {
        let _ = fd.into_raw_fd();
    }
    let channel = name
        .map(OsString::from_vec)
        .map_or(Channel::Stdio, Channel::Socket);
    Ok(Some((entered, channel)))
}

/// An error that says the coordinator closed its end of the socket.
fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Forks a worker on `fds` (its stdin and stdout) or on `socket`.
fn fork_worker(
    name: &str,
    control: &OwnedFd,
    children: &[Child],
    fds: &[OwnedFd],
    socket: Option<OsString>,
) -> io::Result<Child> {
    let server = std::process::id();
    // SAFETY: this process is single-threaded, so the child may run any code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let entered = monotonic_ns();
        let code = match become_worker(control, children, fds, server) {
            Ok(()) => {
                let channel = socket.map_or(Channel::Stdio, Channel::Socket);
                serve_stdio(name, entered, channel)
            }
            Err(e) => {
                say(name, &format!("forked worker: {e}"));
                ExitCode::FAILURE
            }
        };
        // SAFETY: _exit ends this forked copy without running the server's
        // destructors or exit handlers twice.
        unsafe { libc::_exit(if code == ExitCode::SUCCESS { 0 } else { 1 }) };
    }
    let pid = pid as u32;
    match pidfd_open(pid) {
        Ok(pidfd) => Ok(Child { pid, pidfd }),
        Err(e) => {
            // SAFETY: kill and waitpid on our own unreaped child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            reap(pid)?;
            Err(e)
        }
    }
}

/// In a forked child: its own descriptors on 0 and 1, none of the server's,
/// and death with the server.
fn become_worker(
    control: &OwnedFd,
    children: &[Child],
    fds: &[OwnedFd],
    server: u32,
) -> io::Result<()> {
    // A worker on a socket reads nothing from stdin and writes nothing to
    // stdout: both are /dev/null, as a spawned one's are.
    let null = match fds {
        [] => Some(
            std::fs::File::options()
                .read(true)
                .write(true)
                .open("/dev/null")?,
        ),
        _ => None,
    };
    // fd 0 is the control socket: replacing it closes this copy of it.
    debug_assert_eq!(control.as_raw_fd(), libc::STDIN_FILENO);
    match &null {
        Some(null) => take_stdio(fds, null)?,
        None => take_stdio(fds, &std::io::stdin())?,
    }
    detach(children, server)
}

/// Puts `fds` (stdin and stdout) on 0 and 1, or `null` on both when there
/// are none, and closes them where they were.
fn take_stdio(fds: &[OwnedFd], null: &impl AsRawFd) -> io::Result<()> {
    let (stdin, stdout) = match fds {
        [stdin, stdout] => (stdin.as_raw_fd(), stdout.as_raw_fd()),
        _ => (null.as_raw_fd(), null.as_raw_fd()),
    };
    for (from, to) in [(stdin, libc::STDIN_FILENO), (stdout, libc::STDOUT_FILENO)] {
        // SAFETY: dup2 between descriptors this process holds.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for fd in fds {
        // SAFETY: closing this process's copy of a descriptor it no longer uses.
        unsafe { libc::close(fd.as_raw_fd()) };
    }
    Ok(())
}

/// In a forked child: none of the server's children's pidfds, and death
/// with the server.
fn detach(children: &[Child], server: u32) -> io::Result<()> {
    for child in children {
        // SAFETY: closing this process's copy of a descriptor it no longer uses.
        unsafe { libc::close(child.pidfd.as_raw_fd()) };
    }
    // It stays in the server's process group: the coordinator kills the
    // group to stop them all, and one worker through its pidfd.
    // SAFETY: prctl and getppid have no memory-safety preconditions.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::getppid() as u32 != server {
            return Err(io::Error::other(
                "the fork server ended as this worker started",
            ));
        }
    }
    Ok(())
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open on our own child, not yet reaped.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn kill(pidfd: BorrowedFd<'_>) {
    // SAFETY: pidfd_send_signal on a pidfd we hold: it reaches that process
    // or none, never a reused pid.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// Waits for the child `pid` and returns its raw wait status.
fn reap(pid: u32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child, with a valid status pointer.
        let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if rc >= 0 {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
