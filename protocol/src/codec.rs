//! The payload codec: bincode 2 with its standard configuration (little-endian,
//! variable-length integers) and a decode limit equal to the frame cap.
//!
//! This is the only module that names bincode. Payloads are always decoded from
//! a complete frame held in memory, with the borrowing decoder: byte strings are
//! checked against the bytes actually present before anything is allocated for
//! them, so a payload can never make the decoder allocate more than it holds.

use bincode::config::{self, Configuration, LittleEndian, Varint};
use bincode::error::{DecodeError, EncodeError};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::frame::MAX_FRAME_LEN;

type Config = Configuration<LittleEndian, Varint, config::Limit<MAX_FRAME_LEN>>;

const CONFIG: Config = config::standard().with_limit::<MAX_FRAME_LEN>();

/// The number of bytes `msg` encodes to, found without copying anything.
pub fn encoded_len<M: Serialize>(msg: &M) -> Result<usize, Error> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(msg, &mut size, CONFIG).map_err(encode_error)?;
    Ok(size.bytes_written)
}

/// Encodes `msg` straight into `out`. Large byte strings are handed to `out`
/// in one piece, so a buffered writer passes them through without a copy.
pub fn encode_into<M: Serialize, W: std::io::Write>(msg: &M, out: &mut W) -> Result<(), Error> {
    bincode::serde::encode_into_std_write(msg, out, CONFIG)
        .map(drop)
        .map_err(encode_error)
}

/// Decodes one message that must fill `payload` exactly.
pub fn decode<'de, M: Deserialize<'de>>(payload: &'de [u8]) -> Result<M, Error> {
    let (msg, used) =
        bincode::serde::borrow_decode_from_slice(payload, CONFIG).map_err(decode_error)?;
    if used != payload.len() {
        return Err(Error::Undecodable {
            reason: format!(
                "{} trailing bytes after a {used}-byte message",
                payload.len() - used
            ),
        });
    }
    Ok(msg)
}

/// Reads the protocol version from a handshake payload without decoding the
/// rest, so a peer of another version gets a version error rather than a
/// decoding error. Both handshake variants are variant 0 and start with the
/// version: that layout is frozen. Returns `None` when the payload does not
/// start like a handshake.
pub fn handshake_version(payload: &[u8]) -> Option<u32> {
    let ((variant, version), _): ((u32, u32), usize) =
        bincode::decode_from_slice(payload, config::standard()).ok()?;
    (variant == 0).then_some(version)
}

fn encode_error(e: EncodeError) -> Error {
    match e {
        EncodeError::Io { inner, .. } => Error::Io(inner),
        other => Error::Encode {
            reason: format!("{other:?}"),
        },
    }
}

fn decode_error(e: DecodeError) -> Error {
    let reason = match e {
        DecodeError::UnexpectedEnd { additional } => {
            format!("payload ends at least {additional} bytes before the message does")
        }
        DecodeError::LimitExceeded => {
            "payload declares a container larger than the frame limit".to_owned()
        }
        DecodeError::UnexpectedVariant {
            type_name, found, ..
        } => format!("unknown variant {found} of {type_name}"),
        DecodeError::Utf8 { inner } => format!("invalid UTF-8 in a string: {inner}"),
        DecodeError::InvalidBooleanValue(b) => format!("invalid boolean byte {b:#04x}"),
        DecodeError::OutsideUsizeRange(n) => format!("length {n} does not fit in memory"),
        DecodeError::InvalidIntegerType { expected, found } => {
            format!("integer of type {found:?} where {expected:?} was expected")
        }
        DecodeError::OtherString(s) => s,
        other => format!("{other:?}"),
    };
    Error::Undecodable { reason }
}
