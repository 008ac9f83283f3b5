//! fibpool's coordinator: a pool of worker processes and the `fibpool` CLI.
//!
//! - [`Pool`] ([`pool`]): spawn, handshake, dynamic scheduling, reassembly in
//!   order, shutdown; the Rust counterpart of Python's `ProcessPoolExecutor`.
//! - `child`: starting a worker on a [`Transport`], and the guard that kills
//!   and reaps it.
//! - `process`: one worker as the pool sees it: stamps, reader thread.
//! - `board`: reassembly of answered chunks in input order.
//! - [`stats`]: pure statistics over timing samples.
//! - [`WorkerCommand`]: how workers are started.
//! - [`TaskList`] ([`tasks`]): a batch of indices and its chunking;
//!   [`input`] parses index tokens into one.
//! - [`report`]: the one serialisable result type that summaries and JSON come from.
//! - [`startup`], [`stress`], [`bench`]: the three measurements, as raw
//!   samples; `plot` draws the bench's SVG; `progress` is the bar on stderr.
//! - [`cli`]: the `fibpool` command line.
//!
//! Only this crate spawns processes. It reaches the protocol through
//! `fibpool-protocol` and never names the codec.

pub mod bench;
mod board;
mod child;
pub mod cli;
mod command;
mod error;
pub mod input;
mod plot;
mod pool;
mod process;
mod progress;
pub mod report;
mod spawn;
pub mod startup;
pub mod stats;
pub mod stress;
pub mod tasks;

pub use child::Transport;
pub use command::{WORKER_ENV, WorkerCommand};
pub use error::{PoolError, WorkerName};
pub use pool::{Item, Pool, PoolBuilder, RunOptions, RunSummary, default_workers};
pub use tasks::TaskList;

/// In a process started by [`WorkerCommand::this_program`] (that is, with
/// `FIBPOOL_WORKER=1` in its environment), serves the pool on stdin/stdout and
/// exits; anywhere else, returns at once. Call it first thing in `main` of a
/// program that uses [`Pool`] with its default worker command.
pub fn run_if_worker() {
    if std::env::var_os(WORKER_ENV).is_some_and(|v| v == "1") {
        let entered = fibpool_worker::clock::monotonic_ns();
        let code = fibpool_worker::run_stdio("fibpool worker", entered);
        std::process::exit(if code == std::process::ExitCode::SUCCESS {
            0
        } else {
            1
        });
    }
}
