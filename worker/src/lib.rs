//! fibpool's worker: the Fibonacci kernels and the loop that serves a coordinator.
//!
//! - [`kernels`]: F(n) on the arithmetic engine (malachite-nz), run stepping
//!   on num-bigint, the O(n) baseline, value encoding.
//! - [`serve()`]: the worker loop over any reader and writer; tested in memory.
//! - [`run_stdio`]: a worker process's whole life on stdin/stdout, shared by the
//!   lean `fibpool-worker` binary and the hidden `fibpool worker` subcommand.
//! - `forkserver`: a worker started with `FIBPOOL_FORK_SERVER` forks
//!   workers on request instead of serving.
//! - [`fault`]: fault injection for tests (`FIBPOOL_TEST_FAULT`), built only
//!   with the `fault-injection` feature.
//!
//! A worker's stdout carries frames only: [`run_stdio`] moves the frame stream
//! to its own descriptor and points fd 1 at stderr, so a stray print cannot
//! corrupt the stream. Logs go to stderr.

#[cfg(feature = "fault-injection")]
pub mod fault;
mod forkserver;
pub mod kernels;
mod serve;
mod stdio;

pub use forkserver::{SPARE_NAME, serve_as_fork_server};
pub use serve::{ServeError, ServeOptions, ServeSummary, compute, measure, serve};
pub use stdio::{run_stdio, unblock_signals};

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && path.file_name().is_some_and(|n| n != "target") {
                rust_sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// malachite is LGPL-3.0-only: one file uses it, and users never see
    /// its types (ARCHITECTURE.md's invariants).
    #[test]
    fn only_the_kernels_name_the_engine_crate() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut files = Vec::new();
        for dir in [
            "coordinator",
            "protocol",
            "worker",
            "tests",
            "examples",
            "fuzz",
        ] {
            if root.join(dir).is_dir() {
                rust_sources(&root.join(dir), &mut files);
            }
        }
        assert!(files.len() > 20, "found only {} sources", files.len());
        let kernels = root.join("worker/src/kernels.rs");
        // Spelt in two, so that this test does not name it.
        let name = ["mala", "chite"].concat();
        let mut naming = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            let code = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| l.contains(&name));
            if code {
                naming.push(file.strip_prefix(root).unwrap().to_path_buf());
            }
        }
        assert_eq!(naming, [kernels.strip_prefix(root).unwrap()]);
    }
}
