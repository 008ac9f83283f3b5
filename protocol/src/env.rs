//! Environment variables a coordinator sets in a worker's environment: part
//! of how a worker is launched, so both sides take the names from here.

/// A local socket name (abstract namespace on Linux): the worker connects to
/// it and serves over it instead of stdin/stdout.
pub const SOCKET: &str = "FIBPOOL_SOCKET";

/// Makes a worker write one byte on stdout and exit at once, before any
/// set-up: `fibpool startup` times this to separate what loading the binary
/// costs from what the worker does before its handshake.
pub const ANSWER_AT_ONCE: &str = "FIBPOOL_ANSWER_AT_ONCE";
