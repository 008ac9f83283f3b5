//! fibpool's worker: the Fibonacci kernels and the loop that serves a coordinator.
//!
//! - [`kernels`]: fast doubling, run stepping, the O(n) baseline, value encoding.
//! - [`serve()`]: the worker loop over any reader and writer; tested in memory.
//! - [`run_stdio`]: a worker process's whole life on stdin/stdout, shared by the
//!   lean `fibpool-worker` binary and the hidden `fibpool worker` subcommand.
//! - [`fault`]: fault injection for tests (`FIBPOOL_TEST_FAULT`), built only
//!   with the `fault-injection` feature.
//!
//! A worker's stdout carries frames only: [`run_stdio`] moves the frame stream
//! to its own descriptor and points fd 1 at stderr, so a stray print cannot
//! corrupt the stream. Logs go to stderr.

#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod kernels;
mod serve;
mod stdio;

pub use serve::{ServeError, ServeOptions, ServeSummary, compute, measure, serve};
pub use stdio::run_stdio;
