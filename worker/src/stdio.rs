use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;

use crate::fault::{FAULT_ENV, FaultPlan};
use crate::serve::{ServeError, ServeOptions, serve};

/// Set in a worker's environment to make it write one byte and exit at once,
/// before any set-up: `fibpool startup` times this to separate what loading
/// the binary costs from what the worker does before its handshake.
pub const ANSWER_AT_ONCE_ENV: &str = "FIBPOOL_ANSWER_AT_ONCE";

/// Set by the coordinator to a local socket name (abstract namespace on
/// Linux): the worker then connects and serves over it instead of stdin/stdout.
pub const SOCKET_ENV: &str = "FIBPOOL_SOCKET";

/// Runs a worker process on its stdin and stdout until the coordinator says
/// Shutdown or goes away. Errors are one line on stderr, prefixed with `name`,
/// and exit status 1.
pub fn run_stdio(name: &str, main_entered_ns: u64) -> ExitCode {
    if std::env::var_os(ANSWER_AT_ONCE_ENV).is_some() {
        let mut out = io::stdout().lock();
        return match out.write_all(b"!").and_then(|()| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let fault = match std::env::var(FAULT_ENV) {
        Ok(spec) => match FaultPlan::parse(&spec) {
            Ok(plan) => Some(plan),
            Err(message) => {
                eprintln!("{name} (pid {}): error: {message}", std::process::id());
                return ExitCode::FAILURE;
            }
        },
        Err(_) => None,
    };
    let options = ServeOptions {
        main_entered_ns,
        fault,
        die_with_coordinator: true,
    };
    let served = match std::env::var_os(SOCKET_ENV) {
        Some(name) => socket_streams(&name)
            .map_err(|e| format!("cannot connect to local socket {name:?}: {e}"))
            .map(|(input, output)| serve(input, output, &options)),
        None => frame_stdio()
            .map_err(|e| format!("cannot set up stdin/stdout: {e}"))
            .map(|(input, output)| serve(input, output, &options)),
    };
    let result = match served {
        Ok(Err(ServeError::InjectedClose)) => loop {
            // The frame streams are closed: the coordinator sees the end of
            // this worker's output while the process lives on.
            std::thread::park();
        },
        Ok(served) => served.map_err(|e| error_chain(&e)),
        Err(message) => Err(message),
    };
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{name} (pid {}): error: {message}", std::process::id());
            ExitCode::FAILURE
        }
    }
}

/// Unbuffered handles on the frame streams. The frame output is a duplicate of
/// fd 1, and fd 1 itself then points at stderr.
fn frame_stdio() -> io::Result<(File, File)> {
    let input: OwnedFd = io::stdin().as_fd().try_clone_to_owned()?;
    let output: OwnedFd = io::stdout().as_fd().try_clone_to_owned()?;
    // SAFETY: dup2 on two descriptors this process holds open.
    if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((File::from(input), File::from(output)))
}

/// Both ends of a connection to the coordinator's local socket. fd 1 is
/// pointed at stderr here too, so that nothing printed reaches the
/// coordinator's stdout.
fn socket_streams(name: &std::ffi::OsStr) -> io::Result<(SharedStream, SharedStream)> {
    use interprocess::local_socket::{GenericNamespaced, Stream, prelude::*};
    let stream = Stream::connect(name.to_ns_name::<GenericNamespaced>()?)?;
    // SAFETY: dup2 on two descriptors this process holds open.
    if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let shared = SharedStream::new(stream);
    Ok((shared.clone(), shared))
}

/// A local socket stream shared by a reading and a writing owner (`&Stream`
/// reads and writes; interprocess deprecates splitting in favour of this).
#[derive(Clone)]
pub struct SharedStream(std::sync::Arc<interprocess::local_socket::Stream>);

impl SharedStream {
    pub fn new(stream: interprocess::local_socket::Stream) -> Self {
        SharedStream(std::sync::Arc::new(stream))
    }

    /// Shuts the writing side down: the peer reads the end of its stream,
    /// while this side can still read.
    pub fn shutdown_write(&self) {
        use std::os::fd::{AsFd, AsRawFd};
        let interprocess::local_socket::Stream::UdSocket(stream) = &*self.0;
        // SAFETY: shutdown(2) on a socket this stream owns.
        unsafe { libc::shutdown(stream.as_fd().as_raw_fd(), libc::SHUT_WR) };
    }
}

impl io::Read for SharedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl io::Write for SharedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
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

/// Asks for SIGKILL when the coordinator (pid `coordinator`, from its Hello)
/// dies (PR_SET_PDEATHSIG), if it is this process's parent. The parent may die
/// before prctl takes effect, and then no signal would ever come: so the
/// parent is checked again afterwards, and a worker whose coordinator is
/// already gone stops. A worker started through a wrapper (a shell, ssh) has
/// another parent and relies on end of stream on stdin instead. Nothing is
/// computed before this runs: work only comes after the Hello.
pub(crate) fn die_with_parent(coordinator: u32) -> Result<(), ServeError> {
    let Ok(expected) = libc::pid_t::try_from(coordinator) else {
        return Ok(());
    };
    // SAFETY: getppid and prctl have no memory-safety preconditions.
    unsafe {
        if libc::getppid() != expected {
            return Ok(());
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
            return Err(ServeError::DeathSignal(io::Error::last_os_error()));
        }
        if libc::getppid() != expected {
            return Err(ServeError::CoordinatorGone(coordinator));
        }
    }
    Ok(())
}
