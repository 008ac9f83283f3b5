//! `fibpool`: the coordinator binary, which also runs as a worker (`fibpool
//! worker`). Declared by the root package. The command line lives here, in
//! `cli/`, not in the library: it is not library API.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let entered = fibpool_protocol::clock::monotonic_ns();
    cli::main(entered)
}
