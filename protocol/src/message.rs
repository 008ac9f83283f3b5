//! Messages. bincode encodes an enum variant by its index, so the handshake
//! variant of each enum comes first, with the version as its first field, and
//! new variants are only ever appended.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The protocol version both handshakes carry. Bump it on any change to a
/// message's layout.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest index a worker computes. The decimal text of F(n) has about
/// 0.209 n digits, so F(300 000 000) (62.7 MB of text) is the last whose value
/// still fits one frame.
pub const MAX_INDEX: u64 = 300_000_000;

/// Coordinator to worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Sent once, right after the worker is spawned. Must stay variant 0.
    Hello(CoordinatorHello),
    /// Compute every index of a chunk and answer with [`Response::Computed`].
    Compute(Chunk),
    /// Finish: the worker exits cleanly without answering.
    Shutdown,
}

/// Worker to coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Sent once, as soon as the worker starts. Must stay variant 0.
    Ready(WorkerHello),
    /// The values of one chunk, in the chunk's order.
    Computed(ChunkResult),
    /// The worker refuses a request; it exits after sending this.
    Failed(Failure),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorHello {
    /// Must stay the first field.
    pub version: u32,
}

/// The worker's handshake, with its own start-up stamps on CLOCK_MONOTONIC,
/// which a parent and its children share on Linux.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerHello {
    /// Must stay the first field.
    pub version: u32,
    pub pid: u32,
    /// When the worker's `main` was entered.
    pub main_entered_ns: u64,
    /// When this message was about to be written.
    pub ready_ns: u64,
}

/// How a worker sends values back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Encoding {
    /// Little-endian magnitude bytes (zero is empty), as `BigUint::to_bytes_le`.
    Raw,
    /// Decimal ASCII digits.
    Decimal,
    /// Lowercase hexadecimal ASCII digits, no prefix.
    Hex,
}

/// A contiguous run of indices: `start, start + 1, ..., start + len - 1`.
/// A worker seeds a run by fast doubling and steps it by additions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub start: u64,
    pub len: u64,
}

/// A unit of work: the runs are computed in order and their values concatenated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub id: u64,
    pub encoding: Encoding,
    pub runs: Vec<Run>,
}

impl Chunk {
    /// The number of values the chunk asks for (saturating: a hostile chunk
    /// cannot overflow it).
    pub fn task_count(&self) -> u64 {
        self.runs
            .iter()
            .fold(0u64, |total, run| total.saturating_add(run.len))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkResult {
    pub id: u64,
    /// Time the worker spent computing and encoding this chunk.
    pub busy_ns: u64,
    pub values: Vec<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The chunk that was refused, when the failure is about one.
    pub chunk: Option<u64>,
    #[serde(with = "text")]
    pub message: String,
}

/// A byte string encoded as one length-prefixed block (not element by element),
/// decoded without allocating more than the payload holds.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes(len {})", self.0.len())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        // `deserialize_bytes`, not `_byte_buf`: the borrowing decoder checks the
        // length against the payload and lends the bytes, then we copy exactly them.
        d.deserialize_bytes(Visitor)
    }
}

/// Strings decoded the same careful way as [`Bytes`].
mod text {
    use std::fmt;

    pub fn serialize<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
        }
        d.deserialize_str(Visitor)
    }
}
