//! Messages. bincode encodes an enum variant by its index, so the handshake
//! variant of each enum comes first, with the version as its first field, and
//! new variants are only ever appended.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, PackedValues, codec};

/// The protocol version both handshakes carry. Bump it on any change to a
/// message's layout.
pub const PROTOCOL_VERSION: u32 = 5;

/// The largest index a worker computes. A value travels in pieces
/// ([`Response::Piece`]) however big it is, but its length is a `u32` in a
/// chunk's ends table: the decimal text of F(n) has about 0.209 n digits, so
/// F(20 000 000 000) (4.18 GB of text) is about the last that fits. Memory
/// is the real bound: a pool checks a value fits in it before computing it.
pub const MAX_INDEX: u64 = 20_000_000_000;

const _: () = assert!(
    crate::packed::encoded_len_bound(MAX_INDEX, Encoding::Decimal) <= u32::MAX as u64
        && crate::packed::encoded_len_bound(MAX_INDEX, Encoding::Hex) <= u32::MAX as u64
);

/// Coordinator to worker. `'a` is the frame a decoded request borrows its
/// byte strings from; [`Request::into_owned`] copies them out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// Sent once, right after the worker is spawned. Must stay variant 0.
    Hello(CoordinatorHello),
    /// Compute every index of a chunk and answer with [`Response::Computed`].
    Compute(Chunk),
    /// Finish: the worker exits cleanly without answering.
    Shutdown,
    /// Verify a payload's checksum and answer with [`Response::Echo`]: the
    /// IPC stress test's framed message.
    Echo(#[serde(borrow)] Echo<'a>),
    /// From here on, frames are raw (see [`raw`]) until an empty frame: the
    /// stress test's baseline without bincode. Each raw frame is answered in
    /// kind; the empty frame is not answered.
    RawEcho(Reply),
    /// Compute a chunk and encode every value, but send back only the time
    /// and the counts ([`Response::Measured`]): how fast a worker computes
    /// with nothing to ship. `fibpool bench` measures the machine's own
    /// parallel ceiling this way.
    Measure(Chunk),
}

/// Worker to coordinator. `'a` as for [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response<'a> {
    /// Sent once, as soon as the worker starts. Must stay variant 0.
    Ready(WorkerHello),
    /// The values of one chunk, in the chunk's order: the last of its
    /// answer's frames (any [`Response::Part`]s come first, in order).
    Computed(#[serde(borrow)] ChunkResult<'a>),
    /// The worker refuses a request; it exits after sending this.
    Failed(Failure),
    /// The answer to [`Request::Echo`].
    Echo(#[serde(borrow)] EchoReply<'a>),
    /// The answer to [`Request::Measure`].
    Measured(Measured),
    /// The next values of a chunk whose answer is bigger than a part
    /// ([`PART_BYTES`]): a chunk's answer is its parts in order, then its
    /// [`Response::Computed`] with the values that are left. A range is
    /// seeded once per chunk however much its values weigh, and no frame
    /// holds more than a part and one value.
    Part(#[serde(borrow)] ChunkPart<'a>),
    /// Some bytes of one value bigger than a part: the chunk's next value,
    /// whose `len` bytes come in pieces of at most [`PART_BYTES`], in order.
    /// The part before its first piece may be short; the value, once whole,
    /// counts as the chunk's next, and the answer goes on.
    Piece(#[serde(borrow)] ValuePiece<'a>),
}

/// A worker sends a chunk's values in a [`Response::Part`] once they take
/// this many bytes: about a megabyte per frame, however big the chunk.
pub const PART_BYTES: usize = 1 << 20;

impl Request<'_> {
    /// The same request, owning its byte strings.
    pub fn into_owned(self) -> Request<'static> {
        match self {
            Request::Hello(hello) => Request::Hello(hello),
            Request::Compute(chunk) => Request::Compute(chunk),
            Request::Shutdown => Request::Shutdown,
            Request::Echo(echo) => Request::Echo(Echo {
                payload: echo.payload.into_owned(),
                ..echo
            }),
            Request::RawEcho(reply) => Request::RawEcho(reply),
            Request::Measure(chunk) => Request::Measure(chunk),
        }
    }
}

impl Response<'_> {
    /// The same response, owning its byte strings.
    pub fn into_owned(self) -> Response<'static> {
        match self {
            Response::Ready(hello) => Response::Ready(hello),
            Response::Computed(result) => Response::Computed(ChunkResult {
                values: result.values.into_owned(),
                ..result
            }),
            Response::Failed(failure) => Response::Failed(failure),
            Response::Echo(reply) => Response::Echo(EchoReply {
                payload: reply.payload.into_owned(),
                ..reply
            }),
            Response::Measured(measured) => Response::Measured(measured),
            Response::Part(part) => Response::Part(ChunkPart {
                values: part.values.into_owned(),
                ..part
            }),
            Response::Piece(piece) => Response::Piece(ValuePiece {
                bytes: piece.bytes.into_owned(),
                ..piece
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorHello {
    /// Must stay the first field.
    pub version: u32,
    /// The coordinator's process id. A worker whose parent this is asks to be
    /// killed when it dies (PR_SET_PDEATHSIG); a worker started through a
    /// wrapper (a shell, ssh) has another parent and does not.
    pub pid: u32,
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
pub struct ChunkResult<'a> {
    pub id: u64,
    /// Time the worker spent computing and encoding this chunk.
    pub busy_ns: u64,
    /// The values in the chunk's order, packed in one block.
    #[serde(borrow)]
    pub values: PackedValues<'a>,
}

/// Some of a chunk's values, before the rest: see [`Response::Part`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkPart<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub values: PackedValues<'a>,
}

/// Bytes of a value too big for a part: see [`Response::Piece`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValuePiece<'a> {
    pub id: u64,
    /// The whole value's length in bytes, the same in each of its pieces.
    pub len: u64,
    #[serde(borrow)]
    pub bytes: Bytes<'a>,
}

/// What a worker did for [`Request::Measure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    pub id: u64,
    /// Time spent computing and encoding.
    pub busy_ns: u64,
    pub values: u64,
    /// Encoded bytes, all values together.
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The chunk that was refused, when the failure is about one.
    pub chunk: Option<u64>,
    #[serde(with = "text")]
    pub message: String,
}

/// What a worker sends back for an echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The payload itself: a round trip.
    Payload,
    /// Only the sequence number and the verdict: one-way data.
    Ack,
}

/// A stress-test payload with its sequence number and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo<'a> {
    pub seq: u64,
    /// [`checksum`] of `payload`, checked by the worker.
    pub checksum: u64,
    pub reply: Reply,
    /// Last, so that everything before it is a short header.
    #[serde(borrow)]
    pub payload: Bytes<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoReply<'a> {
    pub seq: u64,
    /// Whether the payload matched its checksum when it arrived.
    pub intact: bool,
    /// The payload, for [`Reply::Payload`]; empty for [`Reply::Ack`].
    #[serde(borrow)]
    pub payload: Bytes<'a>,
}

/// The checksum stress payloads carry: XXH3, 64 bits.
pub fn checksum(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

/// [`checksum`] of the concatenation of `parts`, without copying them
/// together.
pub fn checksum_parts(parts: &[&[u8]]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.digest()
}

impl Echo<'_> {
    /// The encoding of `Request::Echo` with these fields up to its payload's
    /// first byte: followed by the `payload_len` bytes of a payload, it is the
    /// frame payload that encoding the whole request gives, so a payload held
    /// in parts can be sent with [`crate::FrameWriter::send_parts`] without
    /// being copied together. It relies on the payload being the last field.
    pub fn header(
        seq: u64,
        checksum: u64,
        reply: Reply,
        payload_len: usize,
    ) -> Result<Vec<u8>, Error> {
        let empty = Request::Echo(Echo {
            seq,
            checksum,
            reply,
            payload: Bytes::default(),
        });
        let mut out = Vec::with_capacity(32);
        codec::encode_into(&empty, &mut out)?;
        // An empty byte string ends the encoding as its length, 0, in one byte.
        let zero = out.pop();
        debug_assert_eq!(zero, Some(0));
        codec::encode_into(&(payload_len as u64), &mut out)?;
        Ok(out)
    }
}

/// Raw frames, after [`Request::RawEcho`]: the same length prefix, no bincode.
/// A request is `seq` (u64 LE), `checksum` (u64 LE), then the data; an answer is
/// `seq`, a status (u64 LE, [`raw::INTACT`] or [`raw::CORRUPTED`]), then the
/// data for [`Reply::Payload`] or nothing for [`Reply::Ack`]. An empty frame
/// ends raw mode.
pub mod raw {
    /// Bytes before the data in a raw frame.
    pub const HEADER_LEN: usize = 16;
    pub const INTACT: u64 = 0;
    pub const CORRUPTED: u64 = 1;

    /// Splits a raw frame into its two header words and its data.
    pub fn split(frame: &[u8]) -> Option<(u64, u64, &[u8])> {
        let (head, data) = frame.split_first_chunk::<HEADER_LEN>()?;
        let (a, b) = head.split_at(8);
        Some((
            u64::from_le_bytes(a.try_into().ok()?),
            u64::from_le_bytes(b.try_into().ok()?),
            data,
        ))
    }

    /// The header of a raw frame.
    pub fn header(first: u64, second: u64) -> [u8; HEADER_LEN] {
        let mut head = [0u8; HEADER_LEN];
        head[..8].copy_from_slice(&first.to_le_bytes());
        head[8..].copy_from_slice(&second.to_le_bytes());
        head
    }
}

/// A byte string encoded as one length-prefixed block (not element by
/// element). Decoded from a frame it borrows the frame's bytes, so a value is
/// never copied on its way through, and nothing is allocated for a length the
/// frame does not hold.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes<'a>(pub Cow<'a, [u8]>);

impl<'a> Bytes<'a> {
    pub fn borrowed(bytes: &'a [u8]) -> Self {
        Bytes(Cow::Borrowed(bytes))
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn into_owned(self) -> Bytes<'static> {
        Bytes(Cow::Owned(self.0.into_owned()))
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.0.into_owned()
    }
}

impl fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes(len {})", self.0.len())
    }
}

impl From<Vec<u8>> for Bytes<'static> {
    fn from(v: Vec<u8>) -> Self {
        Bytes(Cow::Owned(v))
    }
}

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Bytes<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Bytes<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Bytes<'a>, E> {
                Ok(Bytes(Cow::Borrowed(v)))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes<'a>, E> {
                Ok(Bytes(Cow::Owned(v.to_vec())))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes<'a>, E> {
                Ok(Bytes(Cow::Owned(v)))
            }
        }
        // `deserialize_bytes`, not `_byte_buf`: the borrowing decoder checks the
        // length against the frame and lends the bytes.
        d.deserialize_bytes(Visitor(std::marker::PhantomData))
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
