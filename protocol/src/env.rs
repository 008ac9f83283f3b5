//! Environment variables a coordinator sets in a worker's environment: part
//! of how a worker is launched, so both sides take the names from here.

/// A local socket name (abstract namespace on Linux): the worker connects to
/// it and serves over it instead of stdin/stdout.
pub const SOCKET: &str = "FIBPOOL_SOCKET";

/// A TCP address and port (`127.0.0.1:4321`, `[::1]:4321`): the worker
/// reads a line of [`TCP_TOKEN_LINE`] bytes from stdin, connects, sends that
/// line first, and serves over the connection. The coordinator accepts only
/// a connection that brings its worker's token.
pub const TCP: &str = "FIBPOOL_TCP";

/// The token line's length: 32 hexadecimal digits (128 random bits) and a
/// newline.
pub const TCP_TOKEN_LINE: usize = 33;

/// Makes a worker write one byte on stdout and exit at once, before any
/// set-up: `fibpool startup` times this to separate what loading the binary
/// costs from what the worker does before its handshake.
pub const ANSWER_AT_ONCE: &str = "FIBPOOL_ANSWER_AT_ONCE";

/// Makes a worker serve as a fork server on its stdin (a `SOCK_SEQPACKET`
/// socket; [`crate::forkserver`]): the value is the coordinator's pid, which
/// the server dies with.
pub const FORK_SERVER: &str = "FIBPOOL_FORK_SERVER";

/// Every variable above: a coordinator clears them all from what its workers
/// inherit and sets only those it means, so a worker's mode comes from how it
/// was started, never from what the user's shell exports.
pub const ALL: [&str; 4] = [SOCKET, TCP, ANSWER_AT_ONCE, FORK_SERVER];

/// A token the coordinator gives each worker's ssh session there, in the
/// environment of the command it runs: killing the session kills every
/// process there whose environment holds it.
pub const SESSION: &str = "FIBPOOL_SESSION";
