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
    AsCompleted, ChunkValues, Future, Host, Item, Login, Map, MapUnordered, MemoryLimit, Pool,
    PoolBuilder, PoolCounts, PoolError, RunOptions, RunSummary, Ssh, StartMethod, TaskList,
    Transport, WORKER_ENV, WorkerCommand, WorkerName, WorkerStats, as_completed, check_batch,
    check_index, default_workers, prepare_fork, release_fork, value_memory_bound,
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

#[cfg(test)]
mod layers {
    use std::path::Path;

    /// Every `crate::` path a source file's code names (comments, doc links
    /// included, are not dependencies), by the module it reaches.
    fn reaches(file: &Path) -> Vec<String> {
        let text: String = std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut found = Vec::new();
        let first_segment = |path: &str| {
            let path = path.trim_start();
            let end = path
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(path.len());
            path[..end].to_owned()
        };
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            match rest.strip_prefix('{') {
                // `crate::{a, b::c}`: every item's first segment.
                Some(list) => {
                    let list = &list[..list.find('}').unwrap_or(list.len())];
                    found.extend(list.split(',').map(first_segment).filter(|s| !s.is_empty()));
                }
                None => found.push(first_segment(rest)),
            }
        }
        found
    }

    fn sources(dir: &str) -> Vec<std::path::PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
        if root.is_file() {
            return vec![root];
        }
        let mut out = Vec::new();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        assert!(!out.is_empty(), "no sources under {dir}");
        out
    }

    /// Each layer names only the layers it may use ("pool" includes the
    /// names the crate root re-exports from it).
    #[test]
    fn layers_import_only_downwards() {
        let core = [
            "pool",
            "Pool",
            "PoolError",
            "WorkerCommand",
            "TaskList",
            "RunOptions",
            "Transport",
            "StartMethod",
            "Encoding",
            "run_if_worker",
            "Future",
            "default_workers",
            "Host",
            "Ssh",
        ];
        let allowed: [(&str, &[&str]); 5] = [
            ("pool", &core),
            (
                "measure",
                &[&core[..], &["report", "stats", "measure"]].concat(),
            ),
            ("report", &[&core[..], &["report", "stats"]].concat()),
            ("stats.rs", &[]),
            ("input.rs", &core),
        ];
        for (layer, may) in allowed {
            for file in sources(layer) {
                for module in reaches(&file) {
                    assert!(
                        may.contains(&module.as_str()),
                        "{} reaches crate::{module}, outside what {layer} may use",
                        file.display()
                    );
                }
            }
        }
    }
}
