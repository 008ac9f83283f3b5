//! `fibpool`: the coordinator binary, which also runs as a worker (`fibpool
//! worker`). Declared by the root package; everything lives in the library.
use std::process::ExitCode;

fn main() -> ExitCode {
    let entered = fibpool_worker::clock::monotonic_ns();
    fibpool_coordinator::cli::main(entered)
}
