//! A chunk's values as they travel: their bytes back to back in one block,
//! and where each one ends. Either side holds a chunk's values in two buffers
//! however many there are, so a chunk of 10,000 small values costs no more
//! allocations than a chunk of one.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Bytes, Encoding, Error, MAX_FRAME_LEN};

/// Bytes per entry of the ends table: a `u32`, little-endian.
pub const END_LEN: usize = 4;

/// An upper bound on the encoded size of F(n), in bytes. F(n) < phi^n, and
/// log2(phi) = 0.694..., log10(phi) = 0.208... Both sides size buffers and
/// budgets with it: the coordinator when it cuts chunks, the worker before
/// it computes one.
pub const fn encoded_len_bound(n: u64, encoding: Encoding) -> u64 {
    let bits = n.saturating_mul(7) / 10 + 1;
    match encoding {
        Encoding::Raw => bits / 8 + 1,
        Encoding::Hex => bits / 4 + 1,
        Encoding::Decimal => n.saturating_mul(21) / 100 + 1,
    }
}

/// An upper bound on what F(n) adds to a chunk's answer: its encoded bytes
/// and its entry in the ends table.
pub fn packed_len_bound(n: u64, encoding: Encoding) -> u64 {
    encoded_len_bound(n, encoding) + END_LEN as u64
}

/// An upper bound on a chunk's answer: every value of `runs` and its entry
/// in the ends table.
pub fn runs_len_bound(runs: &[crate::Run], encoding: Encoding) -> u64 {
    runs.iter()
        .map(|run| {
            let last = run.start.saturating_add(run.len.saturating_sub(1));
            run.len.saturating_mul(packed_len_bound(last, encoding))
        })
        .fold(0, u64::saturating_add)
}

/// Values packed for the wire: `data` holds them back to back, `ends` holds
/// for each value the offset in `data` where it ends. A `PackedValues` from
/// [`PackedValues::new`] or from decoding is well-formed: the ends never
/// decrease and the last one is the length of `data`.
#[derive(Clone, PartialEq, Eq, Default, Serialize)]
pub struct PackedValues<'a> {
    ends: Bytes<'a>,
    data: Bytes<'a>,
}

impl<'a> PackedValues<'a> {
    /// Checks the two blocks against each other.
    pub fn new(ends: Bytes<'a>, data: Bytes<'a>) -> Result<Self, Error> {
        check(ends.as_slice(), data.as_slice()).map_err(|reason| Error::Undecodable { reason })?;
        Ok(PackedValues { ends, data })
    }

    /// How many values there are.
    pub fn len(&self) -> usize {
        self.ends.as_slice().len() / END_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`th value.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        value(self.ends.as_slice(), self.data.as_slice(), i)
    }

    /// The values in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }

    /// The ends table, as it travels.
    pub fn ends(&self) -> &[u8] {
        self.ends.as_slice()
    }

    /// The values' bytes, back to back.
    pub fn data(&self) -> &[u8] {
        self.data.as_slice()
    }

    /// The same values, owning their bytes.
    pub fn into_owned(self) -> PackedValues<'static> {
        PackedValues {
            ends: self.ends.into_owned(),
            data: self.data.into_owned(),
        }
    }
}

impl fmt::Debug for PackedValues<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PackedValues({} values, {} bytes)",
            self.len(),
            self.data().len()
        )
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for PackedValues<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "PackedValues")]
        struct Parts<'a> {
            #[serde(borrow)]
            ends: Bytes<'a>,
            #[serde(borrow)]
            data: Bytes<'a>,
        }
        let Parts { ends, data } = Parts::deserialize(d)?;
        check(ends.as_slice(), data.as_slice()).map_err(serde::de::Error::custom)?;
        Ok(PackedValues { ends, data })
    }
}

impl<'v> FromIterator<&'v [u8]> for PackedValues<'static> {
    fn from_iter<I: IntoIterator<Item = &'v [u8]>>(values: I) -> Self {
        let mut buf = PackedBuf::default();
        for value in values {
            buf.push(value);
        }
        buf.into_packed()
    }
}

/// The `i`th value of a well-formed pair of blocks; `None` past the end, and
/// never a panic whatever the blocks hold.
pub fn value<'b>(ends: &[u8], data: &'b [u8], i: usize) -> Option<&'b [u8]> {
    let end = end_at(ends, i)?;
    let start = match i.checked_sub(1) {
        Some(before) => end_at(ends, before)?,
        None => 0,
    };
    data.get(start..end)
}

fn end_at(ends: &[u8], i: usize) -> Option<usize> {
    let at = i.checked_mul(END_LEN)?;
    let bytes = ends.get(at..at + END_LEN)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?) as usize)
}

fn check(ends: &[u8], data: &[u8]) -> Result<(), String> {
    if !ends.len().is_multiple_of(END_LEN) {
        return Err(format!(
            "value ends table of {} bytes is not a whole number of {END_LEN}-byte entries",
            ends.len()
        ));
    }
    let mut previous = 0;
    for (i, entry) in ends.chunks_exact(END_LEN).enumerate() {
        let end = u32::from_le_bytes(entry.try_into().expect("chunks of END_LEN")) as usize;
        if end < previous {
            return Err(format!(
                "value {i} ends at byte {end}, before value {} does ({previous})",
                i.saturating_sub(1)
            ));
        }
        previous = end;
    }
    if previous != data.len() {
        return Err(format!(
            "the values end at byte {previous} but {} bytes of values came",
            data.len()
        ));
    }
    Ok(())
}

/// Packs values as they are made: append a value's bytes to [`PackedBuf::data`],
/// then call [`PackedBuf::end_value`]. Cleared and reused from chunk to chunk,
/// it allocates only when a chunk is bigger than any before it.
#[derive(Debug, Default, Clone)]
pub struct PackedBuf {
    ends: Vec<u8>,
    data: Vec<u8>,
}

impl PackedBuf {
    /// Forgets the values, keeping the memory.
    pub fn clear(&mut self) {
        self.ends.clear();
        self.data.clear();
    }

    /// Gives back memory past `bytes` of room (the values are kept).
    pub fn shrink_to(&mut self, bytes: usize) {
        self.data.shrink_to(bytes);
        self.ends.shrink_to(bytes / 8);
    }

    /// Makes room for `values` values of `bytes` bytes in all.
    pub fn reserve(&mut self, values: usize, bytes: usize) {
        self.ends.reserve(values.saturating_mul(END_LEN));
        self.data.reserve(bytes);
    }

    /// Where the next value's bytes go.
    pub fn data(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Ends the current value: everything appended to [`PackedBuf::data`]
    /// since the last call. Past [`MAX_FRAME_LEN`] bytes in all the buffer
    /// cannot be sent anyway (the frame is refused), so an end beyond `u32`
    /// is stored as `u32::MAX` and the receiver refuses the table.
    pub fn end_value(&mut self) {
        let end = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
        self.ends.extend_from_slice(&end.to_le_bytes());
    }

    /// Appends one whole value.
    pub fn push(&mut self, value: &[u8]) {
        self.data.extend_from_slice(value);
        self.end_value();
    }

    /// How many values are packed.
    pub fn len(&self) -> usize {
        self.ends.len() / END_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes appended since the last [`PackedBuf::end_value`]: the
    /// value being made.
    pub fn unended(&self) -> &[u8] {
        &self.data[self.ended_len()..]
    }

    /// Where the last ended value ends.
    fn ended_len(&self) -> usize {
        match self.ends.last_chunk::<END_LEN>() {
            Some(end) => u32::from_le_bytes(*end) as usize,
            None => 0,
        }
    }

    /// The values ended so far, borrowed, without the one being made.
    pub fn as_packed_ended(&self) -> PackedValues<'_> {
        PackedValues {
            ends: Bytes::borrowed(&self.ends),
            data: Bytes::borrowed(&self.data[..self.ended_len()]),
        }
    }

    /// The values packed so far, borrowed.
    pub fn as_packed(&self) -> PackedValues<'_> {
        PackedValues {
            ends: Bytes::borrowed(&self.ends),
            data: Bytes::borrowed(&self.data),
        }
    }

    /// The values packed so far, owned.
    pub fn into_packed(self) -> PackedValues<'static> {
        PackedValues {
            ends: Bytes::from(self.ends),
            data: Bytes::from(self.data),
        }
    }
}

const _: () = assert!(MAX_FRAME_LEN <= u32::MAX as usize);

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(list: &[u32]) -> Vec<u8> {
        list.iter().flat_map(|e| e.to_le_bytes()).collect()
    }

    #[test]
    fn values_come_back_as_packed() {
        let values: [&[u8]; 4] = [b"", b"a", b"bcd", b""];
        let packed: PackedValues = values.into_iter().collect();
        assert_eq!(packed.len(), 4);
        assert_eq!(packed.iter().collect::<Vec<_>>(), values);
        assert_eq!(packed.get(2), Some(&b"bcd"[..]));
        assert_eq!(packed.get(4), None);
        assert_eq!(packed.ends(), ends(&[0, 1, 4, 4]));
        assert_eq!(packed.data(), b"abcd");
    }

    #[test]
    fn an_empty_pack_is_well_formed() {
        let packed = PackedValues::new(Bytes::default(), Bytes::default()).unwrap();
        assert!(packed.is_empty());
        assert_eq!(packed.iter().count(), 0);
    }

    #[test]
    fn malformed_tables_are_refused_with_the_reason() {
        let refuse = |e: Vec<u8>, data: &[u8]| match PackedValues::new(
            Bytes::from(e),
            Bytes::from(data.to_vec()),
        ) {
            Err(Error::Undecodable { reason }) => reason,
            other => panic!("expected Undecodable, got {other:?}"),
        };
        assert_eq!(
            refuse(vec![1, 0, 0], b"a"),
            "value ends table of 3 bytes is not a whole number of 4-byte entries"
        );
        assert_eq!(
            refuse(ends(&[2, 1]), b"ab"),
            "value 1 ends at byte 1, before value 0 does (2)"
        );
        assert_eq!(
            refuse(ends(&[1]), b"ab"),
            "the values end at byte 1 but 2 bytes of values came"
        );
        assert_eq!(
            refuse(ends(&[]), b"x"),
            "the values end at byte 0 but 1 bytes of values came"
        );
    }

    #[test]
    fn lookups_never_panic_on_garbage() {
        let garbage = ends(&[5, 2, u32::MAX]);
        for i in [0, 1, 2, 3, usize::MAX] {
            let _ = value(&garbage, b"abc", i);
        }
        assert_eq!(value(&garbage, b"abc", 1), None);
    }

    #[test]
    fn a_reused_buffer_starts_over_when_cleared() {
        let mut buf = PackedBuf::default();
        buf.push(b"old");
        buf.clear();
        buf.data().extend_from_slice(b"ne");
        buf.data().push(b'w');
        buf.end_value();
        buf.push(b"!");
        assert_eq!(buf.len(), 2);
        assert_eq!(
            buf.as_packed().iter().collect::<Vec<_>>(),
            [&b"new"[..], b"!"]
        );
    }
}
