//! Framing: a `u32` little-endian payload length, then the payload.
//!
//! The length is checked against the cap before any buffer is reserved, on
//! both sides. EOF exactly at a frame boundary is a clean end of stream; EOF
//! anywhere inside a frame is [`Error::Truncated`].

use std::io::{self, BufReader, BufWriter, Read, Write};

use serde::Serialize;
use serde::de::Deserialize;

use crate::{Error, FramePart, PROTOCOL_VERSION, codec};

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// The largest payload a frame may carry: 64 MiB.
pub const MAX_FRAME_LEN: usize = 64 << 20;

/// What a [`FrameWriter`] buffers: a frame of at most this much, header
/// included, is whole in its buffer before any of it is written, so a
/// non-blocking writer that meets a full channel keeps the rest to write
/// later and never loses any of it.
pub const BUFFER_CAPACITY: usize = 64 << 10;

/// Cheap first pass over buffered bytes: `Ok(Some(n))` when the first `n` bytes
/// of `buf` are one complete frame, `Ok(None)` when more bytes are needed (a
/// normal condition), or [`Error::TooLarge`] as soon as the header is readable.
pub fn check(buf: &[u8], max_len: usize) -> Result<Option<usize>, Error> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = payload_len(*header, max_len)?;
    Ok((buf.len() - HEADER_LEN >= len).then_some(HEADER_LEN + len))
}

/// Decodes the first frame of `buf`, returning the message and the bytes it
/// used, or `None` when `buf` holds only part of a frame.
pub fn decode_frame<'de, M: Deserialize<'de>>(buf: &'de [u8]) -> Result<Option<(M, usize)>, Error> {
    let Some(total) = check(buf, MAX_FRAME_LEN)? else {
        return Ok(None);
    };
    let msg = codec::decode(&buf[HEADER_LEN..total])?;
    Ok(Some((msg, total)))
}

/// Encodes `msg` as one complete frame.
pub fn encode_frame<M: Serialize>(msg: &M) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    FrameWriter::new(&mut out).send(msg)?;
    Ok(out)
}

fn payload_len(header: [u8; HEADER_LEN], max_len: usize) -> Result<usize, Error> {
    let len = u32::from_le_bytes(header);
    match usize::try_from(len) {
        Ok(len) if len <= max_len => Ok(len),
        _ => Err(Error::TooLarge {
            len: len.into(),
            max: max_len,
        }),
    }
}

fn header_for(len: usize, max_len: usize) -> Result<[u8; HEADER_LEN], Error> {
    match u32::try_from(len) {
        Ok(n) if len <= max_len => Ok(n.to_le_bytes()),
        _ => Err(Error::TooLarge {
            len: len as u64,
            max: max_len,
        }),
    }
}

/// Writes frames through one buffer, flushed once per frame.
pub struct FrameWriter<W: Write> {
    out: BufWriter<W>,
    max_len: usize,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        Self::with_max_len(inner, MAX_FRAME_LEN)
    }

    /// A writer with a lower cap than [`MAX_FRAME_LEN`] (never a higher one).
    pub fn with_max_len(inner: W, max_len: usize) -> Self {
        FrameWriter {
            out: BufWriter::with_capacity(BUFFER_CAPACITY, inner),
            max_len: max_len.min(MAX_FRAME_LEN),
        }
    }

    /// Encodes and sends one message; returns the payload length. A message
    /// over the cap is refused before anything is written.
    pub fn send<M: Serialize>(&mut self, msg: &M) -> Result<usize, Error> {
        let len = codec::encoded_len(msg)?;
        self.out.write_all(&header_for(len, self.max_len)?)?;
        codec::encode_into(msg, &mut self.out)?;
        self.out.flush()?;
        Ok(len)
    }

    /// Sends `payload` as one frame as it is, without encoding: the raw
    /// baseline that framing overhead is measured against.
    pub fn send_payload(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.send_parts(&[payload])
    }

    /// Sends the concatenation of `parts` as one raw frame, without copying
    /// them together first.
    pub fn send_parts(&mut self, parts: &[&[u8]]) -> Result<(), Error> {
        let len = parts.iter().map(|p| p.len()).sum();
        self.out.write_all(&header_for(len, self.max_len)?)?;
        for part in parts {
            self.out.write_all(part)?;
        }
        self.out.flush()?;
        Ok(())
    }

    /// Writes out what an earlier send left buffered: on a non-blocking
    /// writer, a send that met `WouldBlock` keeps the rest of its frame here.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn get_ref(&self) -> &W {
        self.out.get_ref()
    }

    /// The stream itself, once what is buffered is written out: bytes
    /// written to it are not framed.
    pub fn get_mut(&mut self) -> io::Result<&mut W> {
        self.out.flush()?;
        Ok(self.out.get_mut())
    }
}

/// The most a [`FrameReader`] reserves for a frame before its bytes arrive.
pub const RESERVED_AHEAD: usize = 4 << 20;

/// Reads frames, reusing one payload buffer: a header's word makes at most
/// [`RESERVED_AHEAD`] of it resident before the bytes arrive, and past that
/// the buffer grows with the bytes that actually arrive.
pub struct FrameReader<R: Read> {
    inner: BufReader<R>,
    buf: Vec<u8>,
    max_len: usize,
    /// Where a buffer comes from once a frame's header has arrived and the
    /// reader holds none (see [`FrameReader::set_buffers`]).
    buffers: Option<fn(usize) -> Vec<u8>>,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_max_len(inner, MAX_FRAME_LEN)
    }

    /// A reader with a lower cap than [`MAX_FRAME_LEN`] (never a higher one).
    pub fn with_max_len(inner: R, max_len: usize) -> Self {
        FrameReader {
            inner: BufReader::with_capacity(BUFFER_CAPACITY, inner),
            buf: Vec::new(),
            max_len: max_len.min(MAX_FRAME_LEN),
            buffers: None,
        }
    }

    /// After [`FrameReader::take_payload`] the reader holds no buffer;
    /// with this, the next frame's comes from `buffers` (a pool of used
    /// ones, say), asked with the frame's length once its header has
    /// arrived, so an idle reader holds none.
    pub fn set_buffers(&mut self, buffers: fn(usize) -> Vec<u8>) {
        self.buffers = Some(buffers);
    }

    /// The next frame's payload, or `None` at a clean end of stream.
    pub fn recv_payload(&mut self) -> Result<Option<&[u8]>, Error> {
        let mut header = [0u8; HEADER_LEN];
        match read_full(&mut self.inner, &mut header)? {
            0 => return Ok(None),
            HEADER_LEN => {}
            got => {
                return Err(Error::Truncated {
                    part: FramePart::Header,
                    expected: HEADER_LEN,
                    got,
                });
            }
        }
        let len = payload_len(header, self.max_len)?;
        if self.buf.capacity() == 0
            && let Some(buffers) = self.buffers
        {
            self.buf = buffers(len);
        }
        let got = if len <= RESERVED_AHEAD {
            // Room for the whole frame at once (growing by doubling copied
            // a megabyte's frame nine times over), read over what the
            // buffer already holds: only bytes it never held are zeroed
            // first (zeroing every frame's megabyte cost as much as
            // copying it).
            if self.buf.len() < len {
                let room = size_class(len).max(self.buf.capacity());
                self.buf.reserve_exact(room - self.buf.len());
                self.buf.resize(len, 0);
            }
            self.buf.truncate(len);
            let got = read_full(&mut self.inner, &mut self.buf)?;
            self.buf.truncate(got);
            got
        } else {
            // Never more than RESERVED_AHEAD on a header's word: past that
            // the buffer grows with the bytes.
            self.buf.clear();
            self.buf.reserve_exact(RESERVED_AHEAD);
            (&mut self.inner)
                .take(len as u64)
                .read_to_end(&mut self.buf)?
        };
        if got < len {
            return Err(Error::Truncated {
                part: FramePart::Payload,
                expected: len,
                got,
            });
        }
        Ok(Some(&self.buf))
    }

    /// The next message, or `None` at a clean end of stream. The message may
    /// borrow byte strings from the reader's buffer until the next receive.
    pub fn recv<'a, M: Deserialize<'a>>(&'a mut self) -> Result<Option<M>, Error> {
        match self.recv_payload()? {
            None => Ok(None),
            Some(payload) => codec::decode(payload).map(Some),
        }
    }

    /// The peer's handshake. A peer of another protocol version gets
    /// [`Error::VersionMismatch`] even if the rest of its message has changed.
    pub fn recv_handshake<'a, M: Deserialize<'a>>(&'a mut self) -> Result<Option<M>, Error> {
        let Some(payload) = self.recv_payload()? else {
            return Ok(None);
        };
        match codec::handshake_version(payload) {
            Some(theirs) if theirs != PROTOCOL_VERSION => Err(Error::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs,
            }),
            _ => codec::decode(payload).map(Some),
        }
    }

    /// Takes the buffer holding the last payload, leaving an empty one: a
    /// decoded message's borrowed byte strings can then be kept as offsets
    /// into it, with no copy.
    pub fn take_payload(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Lowers (or restores) the cap on the frames this reader accepts; never
    /// above [`MAX_FRAME_LEN`]. A peer whose answers have a known size gets a
    /// cap that fits them.
    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len.min(MAX_FRAME_LEN);
    }

    /// Makes `buf` the buffer the next frame is read into (its capacity is
    /// kept; its contents are not) and returns the one it replaces: readers
    /// that take turns can share a few large buffers.
    pub fn swap_buffer(&mut self, buf: Vec<u8>) -> Vec<u8> {
        std::mem::replace(&mut self.buf, buf)
    }

    pub fn get_ref(&self) -> &R {
        self.inner.get_ref()
    }
}

/// The capacity a frame buffer of `len` bytes is given: `len` rounded up
/// to a power of two, so that frames of about one size take turns with the
/// same few buffers: a chunk's parts (just over `PART_BYTES`) share one
/// class, and its last frame, of any size below a part, falls in one of a
/// few. Only the bytes a frame fills are ever touched, so the spare
/// capacity costs no memory. With eighths of a power of two as classes a
/// last frame seldom found a buffer of its class: a 2-worker `run
/// 0..50000` over shm took 7669 page faults that way, 5408 this way.
pub fn size_class(len: usize) -> usize {
    if len <= 64 << 10 {
        return len;
    }
    len.next_power_of_two()
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
