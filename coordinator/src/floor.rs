//! `fibpool-floor`: the smallest Rust program that answers. `fibpool startup`
//! spawns it with a pipe and times the first byte: the floor that a worker's
//! start-up is compared with.
use std::io::Write;

fn main() {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(b"x").and_then(|()| out.flush());
}
