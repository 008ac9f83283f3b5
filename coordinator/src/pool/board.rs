//! Reassembly on the caller's side of a run: the chunks it fed to the pool,
//! and the answers that came back before their turn. In order, a chunk is
//! delivered when every chunk before it has been; out of order, as it comes.
//! The caller feeds at most a window of chunks ahead of what it has taken,
//! which bounds what is held here.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use fibpool_protocol::PackedValues;
use fibpool_protocol::frame::size_class;
use fibpool_protocol::packed::END_LEN;

use super::error::PoolError;
use super::tasks::ChunkPlan;

/// A chunk's values as they arrived: the payloads of the frames they came
/// in (its parts, then the last), and where in each the packed values' ends
/// table and bytes lie. One buffer per frame, not one per value.
#[derive(Debug, Default)]
pub(crate) struct Values {
    parts: Vec<Part>,
    len: usize,
}

#[derive(Debug)]
struct Part {
    buf: Vec<u8>,
    ends: Range<usize>,
    data: Range<usize>,
    /// The place in the chunk of the part's first value.
    first: usize,
}

impl Values {
    /// Values that do not lie in a frame, copied into one buffer.
    pub fn copied(values: &PackedValues<'_>) -> Values {
        let (ends, data) = (values.ends(), values.data());
        let buf = [ends, data].concat();
        Values::in_frame(buf, 0..ends.len(), ends.len()..ends.len() + data.len())
    }

    /// The values packed in a frame's payload `buf`, with their ends table
    /// at `ends` and their bytes at `data` (ranges in `buf`).
    pub fn in_frame(buf: Vec<u8>, ends: Range<usize>, data: Range<usize>) -> Values {
        let mut values = Values::default();
        values.push(buf, ends, data);
        values
    }

    /// The next values of the chunk, after those held.
    pub fn push(&mut self, buf: Vec<u8>, ends: Range<usize>, data: Range<usize>) {
        let count = ends.len() / END_LEN;
        if count == 0 {
            return;
        }
        let first = self.len;
        self.len += count;
        self.parts.push(Part {
            buf,
            ends,
            data,
            first,
        });
    }

    /// The values of `rest` after those held.
    pub fn append(&mut self, rest: Values) {
        for mut part in rest.parts {
            let buf = std::mem::take(&mut part.buf);
            self.push(buf, part.ends.clone(), part.data.clone());
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The `i`th value; `None` past the end.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let at = self
            .parts
            .partition_point(|p| p.first <= i)
            .checked_sub(1)?;
        let part = &self.parts[at];
        let (ends, data) = (
            part.buf.get(part.ends.clone())?,
            part.buf.get(part.data.clone())?,
        );
        fibpool_protocol::packed::value(ends, data, i - part.first)
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.buf));
    }
}

/// Frame buffers that dropped values gave back, for the readers' next
/// frames: a part's megabyte buffer was otherwise mapped and faulted in
/// afresh for every frame (over 40 GB of values, tens of thousands of
/// page faults a second). Process-wide and bounded: buffers of
/// [`RECYCLED_CAPACITY`] bytes at most, [`RECYCLED_BYTES`] in all (32
/// buffers of a part's class, 2 MiB), emptied whenever a pool is dropped.
static RECYCLED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
const RECYCLED_BYTES: usize = 64 << 20;
const RECYCLED_CAPACITY: usize = fibpool_protocol::frame::RESERVED_AHEAD;

/// Frees every recycled buffer.
pub(crate) fn forget_recycled() {
    RECYCLED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}

/// A buffer for a frame of `len` bytes: a recycled one that holds it within
/// its class (so that it is not shrunk, nor held at twice its frame or
/// more), or a new, empty one.
pub(crate) fn recycled_buffer(len: usize) -> Vec<u8> {
    let mut kept = RECYCLED.lock().unwrap_or_else(PoisonError::into_inner);
    match kept.iter().position(|b| takes(b.capacity(), len)) {
        Some(i) => kept.swap_remove(i),
        None => Vec::new(),
    }
}

/// Whether a recycled buffer of `capacity` bytes is given a frame of `len`:
/// it holds the frame, and no more than the frame's class.
fn takes(capacity: usize, len: usize) -> bool {
    (len..=size_class(len)).contains(&capacity)
}

fn recycle(buf: Vec<u8>) {
    if buf.capacity() < (64 << 10) || buf.capacity() > RECYCLED_CAPACITY {
        return;
    }
    // Its bytes are kept: the next frame is read over them, and only
    // bytes a buffer never held are zeroed first.
    let mut kept = RECYCLED.lock().unwrap_or_else(PoisonError::into_inner);
    let held: usize = kept.iter().map(Vec::capacity).sum();
    if held + buf.capacity() <= RECYCLED_BYTES {
        kept.push(buf);
    }
}

/// What became of one chunk.
pub(crate) type Outcome = Result<Values, PoolError>;

pub(crate) struct Board {
    ordered: bool,
    /// Chunks fed and not yet delivered, by their place in the batch.
    fed: BTreeMap<u64, ChunkPlan>,
    /// Outcomes that arrived before their chunk's turn.
    arrived: BTreeMap<u64, Outcome>,
}

impl Board {
    pub fn new(ordered: bool) -> Self {
        Board {
            ordered,
            fed: BTreeMap::new(),
            arrived: BTreeMap::new(),
        }
    }

    /// A chunk handed to the pool.
    pub fn feed(&mut self, plan: ChunkPlan) {
        self.fed.insert(plan.id, plan);
    }

    /// Chunks fed and not yet delivered.
    pub fn outstanding(&self) -> usize {
        self.fed.len()
    }

    /// Records what became of chunk `id`. Refuses a chunk never fed, and a
    /// second outcome for one.
    pub fn arrive(&mut self, id: u64, outcome: Outcome) -> Result<(), String> {
        if !self.fed.contains_key(&id) {
            return Err(format!("chunk {id} came back but was never sent"));
        }
        if self.arrived.contains_key(&id) {
            return Err(format!("chunk {id} came back twice"));
        }
        if let Ok(values) = &outcome {
            let want = self.fed[&id].count;
            if values.len() as u64 != want {
                return Err(format!(
                    "chunk {id} came back with {} values for {want} indices",
                    values.len()
                ));
            }
        }
        self.arrived.insert(id, outcome);
        Ok(())
    }

    /// Gives up on the oldest chunk fed and not delivered: its outcome will
    /// never come.
    pub fn abandon(&mut self) -> Option<ChunkPlan> {
        let (&id, _) = self.fed.first_key_value()?;
        self.arrived.remove(&id);
        self.fed.remove(&id)
    }

    /// The next chunk to deliver, if its outcome is in: the oldest chunk in
    /// order, any chunk out of order.
    pub fn next_ready(&mut self) -> Option<(ChunkPlan, Outcome)> {
        let id = if self.ordered {
            let (&first, _) = self.fed.first_key_value()?;
            self.arrived.contains_key(&first).then_some(first)?
        } else {
            *self.arrived.keys().next()?
        };
        let outcome = self.arrived.remove(&id)?;
        let plan = self.fed.remove(&id)?;
        Some((plan, outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_buffer_takes_the_frames_of_its_class_only() {
        const MIB: usize = 1 << 20;
        // A part's buffer (2 MiB) takes every part, just over 1 MiB.
        for len in [MIB + 1, MIB + 4352, 2 * MIB] {
            assert!(takes(2 * MIB, len), "{len}");
        }
        // Not a frame it cannot hold, nor one of a smaller class: a last
        // frame of 0.9 MB is given a 1 MiB buffer, not a part's.
        for len in [2 * MIB + 1, MIB, 900_000, 100_000] {
            assert!(!takes(2 * MIB, len), "{len}");
        }
        assert!(takes(MIB, 900_000) && takes(MIB, 524_289));
        assert!(!takes(MIB, 524_288));
    }
    use fibpool_protocol::Run;

    fn plan(id: u64, first_position: u64, indices: &[u64]) -> ChunkPlan {
        ChunkPlan {
            id,
            first_position,
            count: indices.len() as u64,
            runs: indices.iter().map(|&start| Run { start, len: 1 }).collect(),
        }
    }

    /// Values holding `values`, packed as a worker packs them.
    fn values(values: &[&[u8]]) -> Values {
        let mut buf = fibpool_protocol::PackedBuf::default();
        for v in values {
            buf.data().extend_from_slice(v);
            buf.end_value();
        }
        Values::copied(&buf.as_packed())
    }

    fn ids(board: &mut Board) -> Vec<u64> {
        std::iter::from_fn(|| board.next_ready().map(|(p, _)| p.id)).collect()
    }

    #[test]
    fn values_in_parts_read_as_one_chunk() {
        let mut all = values(&[b"a", b"", b"bc"]);
        all.append(values(&[]));
        all.append(values(&[b"def"]));
        all.append(values(&[b"g", b"hi"]));
        assert_eq!(all.len(), 6);
        let got: Vec<_> = (0..7).map(|i| all.get(i)).collect();
        let want: [Option<&[u8]>; 7] = [
            Some(b"a"),
            Some(b""),
            Some(b"bc"),
            Some(b"def"),
            Some(b"g"),
            Some(b"hi"),
            None,
        ];
        assert_eq!(got, want);
        assert_eq!(Values::default().get(0), None);
    }

    #[test]
    fn in_order_a_chunk_waits_for_those_before_it() {
        let mut board = Board::new(true);
        for id in 0..3 {
            board.feed(plan(id, id * 2, &[id, id + 10]));
        }
        board.arrive(2, Ok(values(&[b"c", b"cc"]))).unwrap();
        board.arrive(1, Ok(values(&[b"b", b"bb"]))).unwrap();
        assert!(board.next_ready().is_none(), "chunk 0 is not in yet");
        board.arrive(0, Ok(values(&[b"a", b""]))).unwrap();
        let (plan, outcome) = board.next_ready().unwrap();
        let got = outcome.unwrap();
        assert_eq!(
            (plan.id, got.get(0), got.get(1), got.get(2)),
            (0, Some(&b"a"[..]), Some(&b""[..]), None)
        );
        assert_eq!(ids(&mut board), [1, 2]);
        assert_eq!(board.outstanding(), 0);
    }

    #[test]
    fn out_of_order_a_chunk_goes_as_it_comes() {
        let mut board = Board::new(false);
        for id in 0..3 {
            board.feed(plan(id, id, &[id]));
        }
        board.arrive(2, Ok(values(&[b"2"]))).unwrap();
        assert_eq!(ids(&mut board), [2]);
        board.arrive(0, Err(PoolError::Cancelled)).unwrap();
        let (plan, outcome) = board.next_ready().unwrap();
        assert_eq!(plan.id, 0);
        assert!(matches!(outcome, Err(PoolError::Cancelled)));
        assert_eq!(board.outstanding(), 1);
    }

    #[test]
    fn unknown_repeated_and_miscounted_outcomes_are_refused_by_name() {
        let mut board = Board::new(true);
        board.feed(plan(0, 0, &[5, 6]));
        assert_eq!(
            board.arrive(7, Ok(values(&[b"x"]))).unwrap_err(),
            "chunk 7 came back but was never sent"
        );
        assert_eq!(
            board.arrive(0, Ok(values(&[b"x"]))).unwrap_err(),
            "chunk 0 came back with 1 values for 2 indices"
        );
        board.arrive(0, Ok(values(&[b"x", b"y"]))).unwrap();
        assert_eq!(
            board.arrive(0, Ok(values(&[b"x", b"y"]))).unwrap_err(),
            "chunk 0 came back twice"
        );
    }
}
