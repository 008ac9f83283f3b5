use std::fmt;

/// Which part of a frame the stream ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramePart {
    /// The 4-byte length prefix.
    Header,
    /// The payload the prefix announced.
    Payload,
}

impl fmt::Display for FramePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FramePart::Header => "frame header",
            FramePart::Payload => "frame payload",
        })
    }
}

/// Everything that can go wrong reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A frame announced, or would need, more than the maximum frame length.
    /// Refused before any buffer is reserved for it.
    #[error("frame of {len} bytes exceeds the maximum frame length of {max} bytes")]
    TooLarge { len: u64, max: usize },

    /// The stream ended inside a frame (EOF at a frame boundary is a clean end, not this).
    #[error("stream ended inside a {part}: got {got} of {expected} bytes")]
    Truncated {
        part: FramePart,
        expected: usize,
        got: usize,
    },

    /// A complete frame whose payload is not a valid message.
    #[error("undecodable frame payload: {reason}")]
    Undecodable { reason: String },

    /// The peer's handshake names another protocol version.
    #[error("protocol version mismatch: peer speaks version {theirs}, this side speaks {ours}")]
    VersionMismatch { ours: u32, theirs: u32 },

    /// A well-formed message that is wrong at this point of the conversation.
    #[error("unexpected message: expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: String },

    /// A message that cannot be encoded (never expected for fibpool's own types).
    #[error("cannot encode message: {reason}")]
    Encode { reason: String },

    /// The underlying reader or writer failed.
    #[error("i/o error on the frame stream")]
    Io(#[from] std::io::Error),
}

/// A copy of an I/O error: the same OS error code, or the same kind and
/// message (an `io::Error` itself cannot be cloned).
pub fn clone_io(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Error::TooLarge { len, max } => Error::TooLarge {
                len: *len,
                max: *max,
            },
            Error::Truncated {
                part,
                expected,
                got,
            } => Error::Truncated {
                part: *part,
                expected: *expected,
                got: *got,
            },
            Error::Undecodable { reason } => Error::Undecodable {
                reason: reason.clone(),
            },
            Error::VersionMismatch { ours, theirs } => Error::VersionMismatch {
                ours: *ours,
                theirs: *theirs,
            },
            Error::Unexpected { expected, got } => Error::Unexpected {
                expected,
                got: got.clone(),
            },
            Error::Encode { reason } => Error::Encode {
                reason: reason.clone(),
            },
            Error::Io(e) => Error::Io(clone_io(e)),
        }
    }
}

impl Error {
    /// True when the peer went away: a broken pipe, a reset connection, or a
    /// stream that ended mid-frame.
    pub fn is_disconnect(&self) -> bool {
        match self {
            Error::Truncated { .. } => true,
            Error::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }

    /// True when this process ran out of something (descriptors, memory,
    /// buffers) while reading or writing: its own failure, not the peer's.
    pub fn is_local_exhaustion(&self) -> bool {
        match self {
            Error::Io(e) => matches!(
                e.raw_os_error(),
                Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Error;
    use std::io;

    #[test]
    fn running_out_of_descriptors_is_this_process_fault_not_a_disconnect() {
        let os = |code| Error::Io(io::Error::from_raw_os_error(code));
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::ENOBUFS] {
            assert!(os(code).is_local_exhaustion(), "errno {code}");
            assert!(!os(code).is_disconnect(), "errno {code}");
        }
        for code in [libc::EPIPE, libc::ECONNRESET, libc::EIO] {
            assert!(!os(code).is_local_exhaustion(), "errno {code}");
        }
        let torn = Error::Truncated {
            part: super::FramePart::Payload,
            expected: 8,
            got: 3,
        };
        assert!(!torn.is_local_exhaustion());
    }
}
