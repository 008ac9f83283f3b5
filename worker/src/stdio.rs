use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use std::sync::Arc;

use fibpool_protocol::{env, ring};

use crate::serve::{ServeError, ServeOptions, serve};

/// Runs a worker process on its stdin and stdout until the coordinator says
/// Shutdown or goes away. Errors are one line on stderr, prefixed with `name`,
/// and exit status 1.
pub fn run_stdio(name: &str, main_entered_ns: u64) -> ExitCode {
    unblock_signals();
    if std::env::var_os(env::ANSWER_AT_ONCE).is_some() {
        let mut out = io::stdout().lock();
        return match out.write_all(b"!").and_then(|()| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    if let Some(coordinator) = std::env::var_os(env::FORK_SERVER) {
        return crate::forkserver::run(name, &coordinator);
    }
    let channel = match (std::env::var_os(env::SOCKET), std::env::var_os(env::TCP)) {
        (Some(name), _) => Channel::Socket(name),
        (None, Some(address)) => Channel::Tcp(address),
        (None, None) => Channel::Stdio,
    };
    serve_stdio(name, main_entered_ns, channel)
}

/// Where a worker's frames travel.
pub(crate) enum Channel {
    /// Its stdin and stdout.
    Stdio,
    /// A local socket of this name.
    Socket(OsString),
    /// A TCP connection to this address, opened with the token on stdin.
    Tcp(OsString),
}

/// Serves on `channel`.
pub(crate) fn serve_stdio(name: &str, main_entered_ns: u64, channel: Channel) -> ExitCode {
    keep_freed_memory();
    let options = match options(main_entered_ns) {
        Ok(options) => options,
        Err(message) => {
            say(name, &message);
            return ExitCode::FAILURE;
        }
    };
    let served = match channel {
        Channel::Socket(name) => socket_streams(&name)
            .map_err(|e| format!("cannot connect to local socket {name:?}: {e}"))
            .map(|(input, output)| serve(input, output, &options)),
        Channel::Tcp(address) => tcp_streams(&address)
            .map_err(|e| format!("cannot connect to {}={address:?}: {e}", env::TCP))
            .map(|(input, output)| serve(input, output, &options)),
        Channel::Stdio if stdout_is_a_ring() => ring_streams()
            .map_err(|e| format!("cannot map the shared rings on stdout: {e}"))
            .map(|(input, output)| {
                #[cfg(feature = "fault-injection")]
                let output = crate::fault::Scribbling::new(output);
                serve(input, output, &options)
            }),
        Channel::Stdio => frame_stdio()
            .map_err(|e| format!("cannot set up stdin/stdout: {e}"))
            .map(|(input, output)| serve(input, output, &options)),
    };
    let result = match served {
        #[cfg(feature = "fault-injection")]
        Ok(Err(ServeError::InjectedClose)) => loop {
            // The frame streams are closed: the coordinator sees the end of
            // this worker's output while the process lives on.
            std::thread::park();
        },
        // The coordinator stopped reading (it gave up on this worker, or
        // ended): nothing to tell it, and its stderr has its own line.
        Ok(Err(ServeError::Protocol(fibpool_protocol::Error::Io(e))))
            if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            return ExitCode::FAILURE;
        }
        Ok(served) => served.map_err(|e| error_chain(&e) + token_hint(&e)),
        Err(message) => Err(message),
    };
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(message) => {
            say(name, &message);
            ExitCode::FAILURE
        }
    }
}

/// Keeps the memory a worker frees for its next values, instead of
/// handing it back to the kernel to fault in again. glibc maps a block over
/// its mmap threshold (128 KiB at first) afresh and unmaps it on free, and
/// trims the heap's top; a seed near F(10^6) takes several such blocks, so
/// a worker of `run 0..1000000` over shm took 156 thousand page faults with
/// 4 MiB chunks, and about 10 thousand with this (a page fault costs 2-4 µs
/// on this kind of machine: docs/BENCHMARKS.md). Blocks up to 4 MiB come
/// from the heap, and up to 16 MiB of free heap is kept. Bigger blocks (a
/// frame read by doubling its buffer, a value over F(4.8x10^7)) are still
/// mapped, so they grow by mremap, without a copy, and leave nothing
/// behind: with the threshold at 32 MiB a stress worker echoing 16 MiB
/// frames peaked at 35.8 MB, against 19.3 MB with these settings.
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets the allocator's parameters, under the
    // allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

/// One line on stderr, in one write, so that it is never torn by another
/// process's line on the same stderr (`eprintln!` writes in pieces). An
/// unwritable stderr loses the line, nothing more.
pub(crate) fn say(name: &str, message: &str) {
    let line = format!("{name} (pid {}): error: {message}\n", std::process::id());
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// How this process serves. Only a test build reads a fault to inject.
fn options(main_entered_ns: u64) -> Result<ServeOptions, String> {
    #[cfg(feature = "fault-injection")]
    let fault = match std::env::var(crate::fault::FAULT_ENV) {
        Ok(spec) => Some(crate::fault::FaultPlan::parse(&spec)?),
        Err(_) => None,
    };
    #[cfg(feature = "fault-injection")]
    crate::fault::shrink_stdin()?;
    Ok(ServeOptions {
        main_entered_ns,
        #[cfg(feature = "fault-injection")]
        fault,
        die_with_coordinator: true,
    })
}

/// Unbuffered handles on the frame streams. The frame output is a duplicate of
/// fd 1, and fd 1 itself then points at stderr.
fn frame_stdio() -> io::Result<(File, File)> {
    let input: OwnedFd = io::stdin().as_fd().try_clone_to_owned()?;
    let output: OwnedFd = io::stdout().as_fd().try_clone_to_owned()?;
    point_stdout_at_stderr()?;
    Ok((File::from(input), File::from(output)))
}

/// True when stdout is the memfd of a pool's shared rings (the shm
/// transport), whichever way this worker was started.
fn stdout_is_a_ring() -> bool {
    let Ok(target) = std::fs::read_link("/proc/self/fd/1") else {
        return false;
    };
    let name = fibpool_protocol::ring::MEMFD_NAME.to_bytes();
    let memfd = [b"/memfd:".as_slice(), name].concat();
    use std::os::unix::ffi::OsStrExt;
    target.as_os_str().as_bytes().starts_with(&memfd)
}

/// The rings on stdout: requests read from one, responses written to the
/// other, the peer socket on stdin. stdout then points at stderr.
fn ring_streams() -> io::Result<(ring::RingReader, ring::RingWriter)> {
    let memfd = io::stdout().as_fd().try_clone_to_owned()?;
    let map = Arc::new(ring::Mapping::open(memfd.as_fd())?);
    drop(memfd);
    let peer = Arc::new(ring::Peer::new(io::stdin().as_fd().try_clone_to_owned()?));
    point_stdout_at_stderr()?;
    let input = ring::RingReader::new(map.clone(), ring::Direction::Requests, peer.clone());
    let output = ring::RingWriter::new(map, ring::Direction::Responses, peer, false);
    Ok((input, output))
}

/// Both ends of a connection to the coordinator's local socket, as two
/// handles on one socket. fd 1 is pointed at stderr here too, so that nothing
/// printed reaches the coordinator's stdout.
fn socket_streams(name: &std::ffi::OsStr) -> io::Result<(UnixStream, UnixStream)> {
    use interprocess::local_socket::{GenericNamespaced, Stream, prelude::*};
    let Stream::UdSocket(stream) = Stream::connect(name.to_ns_name::<GenericNamespaced>()?)?;
    let input = stream.inner().try_clone()?;
    let output = stream.inner().try_clone()?;
    point_stdout_at_stderr()?;
    Ok((input, output))
}

/// How long a TCP worker tries to connect: the pool's default handshake
/// timeout.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Both ends of a TCP connection to `address`, opened with the token the
/// coordinator wrote on stdin (one line). stdout stays open on a descriptor
/// of its own for this process's life: the coordinator sees it close when
/// the worker ends before connecting. fd 1 then points at stderr.
fn tcp_streams(address: &std::ffi::OsStr) -> io::Result<(TcpStream, TcpStream)> {
    use std::io::Read;
    let address = address
        .to_str()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .ok_or_else(|| io::Error::other("not an address and port"))?;
    let mut line = Vec::with_capacity(env::TCP_TOKEN_LINE);
    io::stdin()
        .lock()
        .take(env::TCP_TOKEN_LINE as u64)
        .read_to_end(&mut line)?;
    if line.len() != env::TCP_TOKEN_LINE || line.last() != Some(&b'\n') {
        return Err(io::Error::other("no token on stdin"));
    }
    let lifeline = io::stdout().as_fd().try_clone_to_owned()?;
    std::mem::forget(lifeline);
    point_stdout_at_stderr()?;
    // Bounded: a filtered route would otherwise hold a remote worker, whose
    // pid the pool learns only from its handshake, for minutes.
    let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)?;
    stream.set_nodelay(true)?;
    (&stream).write_all(&line)?;
    Ok((stream.try_clone()?, stream))
}

fn point_stdout_at_stderr() -> io::Result<()> {
    // SAFETY: dup2 on two descriptors this process holds open.
    if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// For a first frame whose length reads as hexadecimal digits: what that
/// likely is, a TCP worker's token line, sent to a worker that was not told
/// `FIBPOOL_TCP` (a worker command that starts it through its own ssh, say).
fn token_hint(e: &ServeError) -> &'static str {
    match e {
        ServeError::Protocol(fibpool_protocol::Error::TooLarge { len, .. })
            if u32::try_from(*len)
                .is_ok_and(|l| l.to_le_bytes().iter().all(u8::is_ascii_hexdigit)) =>
        {
            " (it reads as a tcp worker's token line: FIBPOOL_TCP did not reach this worker)"
        }
        _ => "",
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Asks for SIGKILL when this process's parent dies (PR_SET_PDEATHSIG):
/// the coordinator (pid `coordinator`, from its Hello), or whatever started
/// this worker for it (the sshd session of a remote worker, a wrapper). The
/// parent may die before prctl takes effect, and then no signal would ever
/// come: so the parent is checked again afterwards, and a worker whose
/// parent is already gone stops. A worker whose wrapper stays its parent
/// also ends at end of stream on stdin. Nothing is computed before this
/// runs: work only comes after the Hello.
///
/// The signal follows the parent *thread* that started this process: the
/// coordinator starts workers only from threads that outlive them.
pub(crate) fn die_with_parent(coordinator: u32) -> Result<(), ServeError> {
    // SAFETY: getppid and prctl have no memory-safety preconditions.
    unsafe {
        let parent = libc::getppid();
        if parent == 1 {
            // Already orphaned (or started by init): nothing to die with.
            return Ok(());
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
            return Err(ServeError::DeathSignal(io::Error::last_os_error()));
        }
        if libc::getppid() != parent {
            return Err(if u32::try_from(parent) == Ok(coordinator) {
                ServeError::CoordinatorGone(coordinator)
            } else {
                ServeError::ParentGone(parent as u32)
            });
        }
    }
    Ok(())
}

/// A pool that starts this program may exec it with every signal blocked
/// (the coordinator's `pool::vfork`): a worker takes signals as any process
/// does. [`run_stdio`], [`crate::serve`] and [`crate::serve_as_fork_server`]
/// call it first; a program that serves otherwise calls it itself.
pub fn unblock_signals() {
    // SAFETY: an empty set, given to pthread_sigmask on this thread, the
    // only one so far.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}
