use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;

use crate::serve;

/// Runs a worker process on its stdin and stdout until the coordinator says
/// Shutdown or goes away. Errors are one line on stderr, prefixed with `name`,
/// and exit status 1.
pub fn run_stdio(name: &str, main_entered_ns: u64) -> ExitCode {
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
