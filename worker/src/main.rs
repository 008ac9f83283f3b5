//! `fibpool-worker`: the lean worker binary. It speaks the protocol on stdin
//! and stdout and does nothing else, so it starts as fast as a process can.
use std::process::ExitCode;

fn main() -> ExitCode {
    let entered = fibpool_protocol::clock::monotonic_ns();
    fibpool_worker::run_stdio("fibpool-worker", entered)
}
