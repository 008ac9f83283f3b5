use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;

use crate::serve;

/// Set in a worker's environment to make it write one byte and exit at once,
/// before any set-up: `fibpool startup` times this to separate what loading
/// the binary costs from what the worker does before its handshake.
pub const ANSWER_AT_ONCE_ENV: &str = "FIBPOOL_ANSWER_AT_ONCE";

/// Set by the coordinator to its own pid: the worker then asks to be killed
/// when that parent dies (see [`die_with_parent`]).
pub const PARENT_PID_ENV: &str = "FIBPOOL_PARENT_PID";

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
    if let Err(message) = die_with_parent() {
        eprintln!("{name} (pid {}): {message}", std::process::id());
        return ExitCode::FAILURE;
    }
    let result = frame_stdio()
        .map_err(|e| format!("cannot set up stdin/stdout: {e}"))
        .and_then(|(input, output)| {
            serve(input, output, main_entered_ns).map_err(|e| error_chain(&e))
        });
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

/// Asks for SIGKILL when the coordinator dies (PR_SET_PDEATHSIG), if the
/// coordinator is this process's parent. The parent may die before prctl
/// takes effect, and then no signal would ever come: so the parent is checked
/// again afterwards, and a worker whose coordinator is already gone stops. A
/// worker started through a wrapper (a shell, ssh) has another parent and
/// relies on end of stream on stdin instead.
fn die_with_parent() -> Result<(), String> {
    let Some(expected) =
        std::env::var_os(PARENT_PID_ENV).and_then(|v| v.to_str()?.parse::<libc::pid_t>().ok())
    else {
        return Ok(());
    };
    // SAFETY: getppid and prctl have no memory-safety preconditions.
    unsafe {
        if libc::getppid() != expected {
            return Ok(());
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
            return Err(format!(
                "prctl(PR_SET_PDEATHSIG): {}",
                io::Error::last_os_error()
            ));
        }
        if libc::getppid() != expected {
            return Err(format!(
                "coordinator (pid {expected}) exited before this worker started"
            ));
        }
    }
    Ok(())
}
