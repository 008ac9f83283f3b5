//! fibpool's coordinator: a pool of worker processes with Python's
//! `ProcessPoolExecutor`'s API, and the measurements built on it.
//!
//! The layers, each using only those below it:
//!
//! - [`pool`]: the core. [`Pool`], [`Future`], [`as_completed`]; scheduling,
//!   reassembly, recovery, worker processes, and the two seams (how a worker
//!   is started, how frames travel). It imports nothing from the layers
//!   above.
//! - [`measure`]: `startup`, `stress` and `bench`, as raw samples; they use
//!   the pool through its public API and [`pool::probe`].
//! - [`report`]: the serialisable results, and their tables and SVG; built
//!   by `measure` from its samples. [`stats`]: pure statistics.
//! - [`input`]: index tokens (`0..100`, `7x3`) into a [`TaskList`].
//!
//! The `fibpool` command line is not part of this library: it is compiled
//! into the binary (`coordinator/src/cli/`). Only this crate spawns
//! processes; it reaches the wire through `fibpool-protocol` and never names
//! the codec.

pub mod input;
pub mod measure;
pub mod pool;
pub mod report;
pub mod stats;

pub use fibpool_protocol::Encoding;
pub use pool::{
    AsCompleted, Future, Item, Map, MapUnordered, Pool, PoolBuilder, PoolCounts, PoolError,
    RunOptions, RunSummary, TaskList, Transport, WORKER_ENV, WorkerCommand, WorkerName,
    WorkerStats, as_completed, default_workers,
};

/// In a process started by [`WorkerCommand::this_program`] (that is, with
/// `FIBPOOL_WORKER=1` in its environment), serves the pool on stdin/stdout and
/// exits; anywhere else, returns at once. Call it first thing in `main` of a
/// program that uses [`Pool`] with its default worker command.
pub fn run_if_worker() {
    if std::env::var_os(WORKER_ENV).is_some_and(|v| v == "1") {
        let entered = fibpool_protocol::clock::monotonic_ns();
        let code = fibpool_worker::run_stdio("fibpool worker", entered);
        std::process::exit(if code == std::process::ExitCode::SUCCESS {
            0
        } else {
            1
        });
    }
}
