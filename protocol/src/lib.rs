//! The wire protocol between the fibpool coordinator and its workers.
//!
//! A stream in either direction is a sequence of frames: a `u32` little-endian
//! payload length, then that many bytes of bincode (2.0.1, standard config).
//! The coordinator sends [`Request`]s, a worker answers with [`Response`]s; each
//! side opens with its handshake variant carrying [`PROTOCOL_VERSION`].
//!
//! - [`message`]: the message types. Variants are encoded by index, so the
//!   handshake variant is first and variants are only ever appended.
//! - [`frame`]: [`FrameWriter`] and [`FrameReader`] over any `Write`/`Read`,
//!   and the in-memory [`frame::check`] / [`decode_frame`] pair.
//! - [`packed`]: a chunk's values as they travel, in one block with a table
//!   of where each ends.
//! - [`codec`]: the only module that names bincode, so the codec can be swapped.
//! - [`Error`]: what can go wrong on the wire, with distinct kinds for a frame
//!   that is too large, truncated, or undecodable.
//! - [`clock`]: CLOCK_MONOTONIC stamps, which both sides lay side by side.
//! - [`env`]: the environment variables a coordinator sets for its workers.
//! - [`forkserver`]: what a coordinator and its fork server say, and how
//!   descriptors travel with it (SCM_RIGHTS).
//! - [`ring`]: frames through shared memory, a ring each way in a memfd.
//!
//! This crate has no process code: it moves bytes through whatever reader and
//! writer it is given, the fork server's packets through a socket, and
//! frames through a shared mapping.

pub mod clock;
pub mod codec;
pub mod env;
mod error;
pub mod forkserver;
pub mod frame;
pub mod message;
pub mod packed;
pub mod ring;

pub use error::{Error, FramePart, clone_io};
pub use frame::{
    BUFFER_CAPACITY, FrameReader, FrameWriter, HEADER_LEN, MAX_FRAME_LEN, RESERVED_AHEAD,
    decode_frame, encode_frame,
};
pub use message::*;
pub use packed::{PackedBuf, PackedValues};
