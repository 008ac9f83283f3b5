//! A batch of indices held compactly (ranges and repeats, never one entry per
//! index unless the input lists them so), and its division into chunks.

use fibpool_protocol::{Encoding, Run};
use fibpool_worker::kernels::packed_len_bound;

/// A chunk's answer is kept under this many bytes (estimated from the indices)
/// unless a single value is bigger: it bounds the memory the coordinator holds
/// per chunk, and keeps frames far below the cap.
pub const CHUNK_BYTES_BUDGET: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `start..end`, half-open, never empty.
    Range { start: u64, end: u64 },
    /// `count` copies of `index`, count >= 1.
    Repeat { index: u64, count: u64 },
}

impl Spec {
    fn len(&self) -> u64 {
        match *self {
            Spec::Range { start, end } => end - start,
            Spec::Repeat { count, .. } => count,
        }
    }
}

/// The indices of a batch, in input order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskList {
    specs: Vec<Spec>,
    len: u64,
    max_index: Option<u64>,
}

impl TaskList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes room for `entries` more pushes of isolated indices, ranges or
    /// repeats.
    pub fn reserve(&mut self, entries: usize) {
        self.specs.reserve(entries);
    }

    /// Appends `start..end` (nothing when empty). Panics if `start > end`.
    pub fn push_range(&mut self, start: u64, end: u64) {
        assert!(start <= end, "reversed range {start}..{end}");
        if start == end {
            return;
        }
        self.len += end - start;
        self.note_max(end - 1);
        if let Some(Spec::Range { end: last_end, .. }) = self.specs.last_mut()
            && *last_end == start
        {
            *last_end = end;
            return;
        }
        self.specs.push(Spec::Range { start, end });
    }

    /// Appends `count` copies of `index`.
    pub fn push_repeat(&mut self, index: u64, count: u64) {
        if count == 0 {
            return;
        }
        if count == 1 {
            return self.push_range(index, index + 1);
        }
        self.len += count;
        self.note_max(index);
        self.specs.push(Spec::Repeat { index, count });
    }

    pub fn push(&mut self, index: u64) {
        self.push_range(index, index + 1);
    }

    fn note_max(&mut self, index: u64) {
        self.max_index = Some(self.max_index.map_or(index, |m| m.max(index)));
    }

    /// The number of indices.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn max_index(&self) -> Option<u64> {
        self.max_index
    }

    /// Every index, in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.specs.iter().flat_map(|spec| {
            let (range, repeat) = match *spec {
                Spec::Range { start, end } => (start..end, None),
                Spec::Repeat { index, count } => (index..index + 1, Some(count)),
            };
            range.flat_map(move |i| std::iter::repeat_n(i, repeat.unwrap_or(1) as usize))
        })
    }

    /// The batch as runs of consecutive indices, in order, each range whole:
    /// what one process computing it alone would do.
    pub fn runs(&self) -> impl Iterator<Item = Run> + '_ {
        self.specs.iter().flat_map(|spec| {
            let (run, copies) = match *spec {
                Spec::Range { start, end } => (
                    Run {
                        start,
                        len: end - start,
                    },
                    1,
                ),
                Spec::Repeat { index, count } => (
                    Run {
                        start: index,
                        len: 1,
                    },
                    count,
                ),
            };
            std::iter::repeat_n(run, copies as usize)
        })
    }

    /// The batch cut into `parts` lists of runs of about equal cost, an
    /// index n costing n + 64 (its size, plus a little for every value).
    /// Ranges are cut where the cost falls due; whole runs otherwise.
    pub fn split_by_cost(&self, parts: usize) -> Vec<Vec<Run>> {
        let parts = parts.max(1);
        // The cost of indices a..x.
        let cost = |a: u64, x: u64| -> u128 {
            let k = (x - a) as u128;
            k * (a as u128 + x as u128 - 1) / 2 + 64 * k
        };
        let total: u128 = self.runs().map(|r| cost(r.start, r.start + r.len)).sum();
        let mut out = vec![Vec::new(); parts];
        let (mut part, mut spent) = (0usize, 0u128);
        for run in self.runs() {
            let (mut start, end) = (run.start, run.start + run.len);
            while start < end {
                let due = (total * (part as u128 + 1) / parts as u128).saturating_sub(spent);
                if part == parts - 1 || cost(start, end) <= due {
                    out[part].push(Run {
                        start,
                        len: end - start,
                    });
                    spent += cost(start, end);
                    break;
                }
                // The first x with cost(start, x) >= due.
                let (mut lo, mut hi) = (start, end);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if cost(start, mid) < due {
                        lo = mid
                    } else {
                        hi = mid
                    }
                }
                out[part].push(Run {
                    start,
                    len: hi - start,
                });
                spent += cost(start, hi);
                start = hi;
                part += 1;
            }
        }
        out
    }

    pub(crate) fn chunks(&self, size: ChunkSize, encoding: Encoding) -> Chunker<'_> {
        Chunker {
            specs: &self.specs,
            total: self.len,
            spec: 0,
            offset: 0,
            next_id: 0,
            next_position: 0,
            size,
            encoding,
        }
    }
}

impl FromIterator<u64> for TaskList {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Self {
        let mut list = TaskList::new();
        for index in iter {
            list.push(index);
        }
        list
    }
}

/// How many indices go in a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkSize {
    /// This many (fewer when the answer would pass the byte budget).
    Fixed(u64),
    /// Guided self-scheduling for this many workers: see [`guided_chunk_size`].
    Guided { workers: usize },
}

/// Parts of the remaining work per worker that a guided chunk takes.
const GUIDED_PARTS: u64 = 4;
/// The most indices in a guided chunk.
const GUIDED_MAX: u64 = 4096;

/// The least work a guided chunk is given, in the cost units of
/// [`TaskList::split_by_cost`] (index n costs n + 64): about 30 indices near
/// F(1000), 200 near F(100), one from F(32704) up. A chunk's round trip costs
/// tens of microseconds whatever it holds, so cheap indices are not cut
/// into chunks that cost more to move than to compute.
pub const GUIDED_MIN_COST: u64 = 1 << 15;

/// The size of the next chunk when none is given, with `next_index` the
/// first index it would hold: the remaining indices over four times the
/// worker count, at most 4096, and at least enough indices to cost
/// [`GUIDED_MIN_COST`]. Chunks start large, so few frames are spent while
/// much work remains, and shrink towards single indices at the end, so no
/// worker is left computing a big chunk alone while the others are idle.
/// 200 indices near F(200000) on 2 workers make 29 chunks, from 25 indices
/// down to 1; 100 indices near F(1000) on one worker make 4.
pub fn guided_chunk_size(remaining: u64, workers: usize, next_index: u64) -> u64 {
    let floor = GUIDED_MIN_COST / next_index.saturating_add(64);
    remaining
        .div_ceil((workers as u64).max(1) * GUIDED_PARTS)
        .max(floor)
        .clamp(1, GUIDED_MAX)
}

/// One chunk as planned: where its values go and the runs a worker computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkPlan {
    pub id: u64,
    /// Position in the batch of the chunk's first index.
    pub first_position: u64,
    pub count: u64,
    pub runs: Vec<Run>,
}

impl ChunkPlan {
    /// The chunk's indices in order.
    pub fn indices(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs
            .iter()
            .flat_map(|run| run.start..run.start + run.len)
    }
}

/// Cuts a task list into chunks of at most the chunk size and about
/// [`CHUNK_BYTES_BUDGET`] bytes of answer, lazily, in order.
pub(crate) struct Chunker<'a> {
    specs: &'a [Spec],
    total: u64,
    spec: usize,
    /// Indices of `specs[spec]` already handed out.
    offset: u64,
    next_id: u64,
    next_position: u64,
    size: ChunkSize,
    encoding: Encoding,
}

impl Chunker<'_> {
    /// The id the next chunk will have, or `None` when all are out.
    pub fn peek_id(&self) -> Option<u64> {
        (self.spec < self.specs.len()).then_some(self.next_id)
    }
}

impl Iterator for Chunker<'_> {
    type Item = ChunkPlan;

    fn next(&mut self) -> Option<ChunkPlan> {
        self.peek_id()?;
        let chunk_size = match self.size {
            ChunkSize::Fixed(k) => k.max(1),
            ChunkSize::Guided { workers } => {
                let next_index = match self.specs[self.spec] {
                    Spec::Range { start, .. } => start + self.offset,
                    Spec::Repeat { index, .. } => index,
                };
                guided_chunk_size(self.total - self.next_position, workers, next_index)
            }
        };
        let mut plan = ChunkPlan {
            id: self.next_id,
            first_position: self.next_position,
            count: 0,
            runs: Vec::new(),
        };
        let mut bytes = 0u64;
        while let Some(spec) = self.specs.get(self.spec) {
            let room = chunk_size - plan.count;
            let left = spec.len() - self.offset;
            let (start, step) = match *spec {
                Spec::Range { start, .. } => (start + self.offset, 1),
                Spec::Repeat { index, .. } => (index, 0),
            };
            let mut take = room.min(left);
            // every value in this piece is at most this big
            let per_value = packed_len_bound(start + step * (take - 1), self.encoding);
            let affordable = CHUNK_BYTES_BUDGET.saturating_sub(bytes) / per_value;
            if affordable < take {
                take = if plan.count == 0 {
                    affordable.max(1)
                } else {
                    affordable
                };
            }
            if take == 0 {
                break;
            }
            bytes += take * per_value;
            plan.count += take;
            self.offset += take;
            if step == 1 {
                push_run(&mut plan.runs, start, take);
            } else {
                plan.runs
                    .extend(std::iter::repeat_n(Run { start, len: 1 }, take as usize));
            }
            if self.offset == spec.len() {
                self.spec += 1;
                self.offset = 0;
            }
            if plan.count == chunk_size || take < left.min(room) {
                break;
            }
        }
        self.next_id += 1;
        self.next_position += plan.count;
        Some(plan)
    }
}

fn push_run(runs: &mut Vec<Run>, start: u64, len: u64) {
    if let Some(last) = runs.last_mut()
        && last.start + last.len == start
    {
        last.len += len;
        return;
    }
    runs.push(Run { start, len });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list(items: &[(u64, u64, bool)]) -> TaskList {
        let mut l = TaskList::new();
        for &(a, b, repeat) in items {
            if repeat {
                l.push_repeat(a, b)
            } else {
                l.push_range(a, b)
            }
        }
        l
    }

    #[test]
    fn ranges_merge_and_iterate_in_order() {
        let mut l = TaskList::new();
        l.push_range(0, 3);
        l.push(3);
        l.push_range(3, 3);
        l.push_repeat(7, 2);
        l.push(1);
        assert_eq!(l.len(), 7);
        assert_eq!(l.specs.len(), 3);
        assert_eq!(l.iter().collect::<Vec<_>>(), [0, 1, 2, 3, 7, 7, 1]);
        let runs: Vec<_> = l.runs().map(|r| (r.start, r.len)).collect();
        assert_eq!(runs, [(0, 4), (7, 1), (7, 1), (1, 1)]);
        assert_eq!(l.max_index(), Some(7));
    }

    #[test]
    fn chunks_cover_the_list_in_order() {
        let l = list(&[(0, 10, false), (5, 3, true), (20, 23, false)]);
        let plans: Vec<_> = l.chunks(ChunkSize::Fixed(4), Encoding::Decimal).collect();
        let ids: Vec<_> = plans.iter().map(|p| p.id).collect();
        assert_eq!(ids, [0, 1, 2, 3]);
        assert_eq!(plans[0].runs, [Run { start: 0, len: 4 }]);
        assert_eq!(
            plans[2].runs,
            [
                Run { start: 8, len: 2 },
                Run { start: 5, len: 1 },
                Run { start: 5, len: 1 }
            ]
        );
        assert_eq!(plans[3].first_position, 12);
        let all: Vec<_> = plans
            .iter()
            .flat_map(|p| p.indices().collect::<Vec<_>>())
            .collect();
        assert_eq!(all, l.iter().collect::<Vec<_>>());
    }

    #[test]
    fn big_values_get_chunks_of_their_own() {
        // F(10^7) is about 2.1 MB of decimal text, over the budget alone.
        let l = list(&[(10_000_000, 10_000_003, false)]);
        let plans: Vec<_> = l.chunks(ChunkSize::Fixed(100), Encoding::Decimal).collect();
        assert_eq!(plans.iter().map(|p| p.count).collect::<Vec<_>>(), [1, 1, 1]);
        // F(200000) is about 42 KB: 24 fit in a megabyte.
        let l = list(&[(200_000, 200_100, false)]);
        let counts: Vec<_> = l
            .chunks(ChunkSize::Fixed(1000), Encoding::Decimal)
            .map(|p| p.count)
            .collect();
        assert_eq!(counts.iter().sum::<u64>(), 100);
        assert!(counts[0] > 20 && counts[0] < 26, "{counts:?}");
    }

    #[test]
    fn splits_by_cost_cover_the_batch_evenly() {
        let l = list(&[(0, 50_000, false)]);
        let parts = l.split_by_cost(2);
        assert_eq!(parts.len(), 2);
        let cost = |runs: &Vec<Run>| -> u128 {
            runs.iter()
                .flat_map(|r| r.start..r.start + r.len)
                .map(|n| n as u128 + 64)
                .sum()
        };
        let (a, b) = (cost(&parts[0]), cost(&parts[1]));
        assert!(a.abs_diff(b) * 1000 < a + b, "{a} vs {b}");
        // The expensive end is the shorter part.
        assert!(parts[0][0].len > parts[1][0].len);
        let all: Vec<u64> = parts
            .iter()
            .flatten()
            .flat_map(|r| r.start..r.start + r.len)
            .collect();
        assert_eq!(all, (0..50_000).collect::<Vec<_>>());
        // Repeats are split whole, and too few indices leave parts empty.
        let l = list(&[(7, 3, true)]);
        let parts = l.split_by_cost(4);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 3);
        assert_eq!(l.split_by_cost(1), vec![l.runs().collect::<Vec<_>>()]);
    }

    #[test]
    fn guided_chunks_shrink_to_single_indices() {
        assert_eq!(guided_chunk_size(200, 2, 200_000), 25);
        assert_eq!(guided_chunk_size(1, 8, 200_000), 1);
        assert_eq!(guided_chunk_size(0, 2, 200_000), 1);
        assert_eq!(guided_chunk_size(u64::MAX / 2, 1, 200_000), 4096);
        assert_eq!(guided_chunk_size(1, 1, 0), 512);
        assert_eq!(guided_chunk_size(u64::MAX / 2, 1, 0), 4096);
        let l = list(&[(199_800, 200_200, false)]);
        let counts: Vec<u64> = l
            .chunks(ChunkSize::Guided { workers: 2 }, Encoding::Raw)
            .map(|p| p.count)
            .collect();
        assert_eq!(counts.iter().sum::<u64>(), 400);
        assert_eq!(counts[0], 50);
        assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
        assert_eq!(counts[counts.len() - 7..], [1; 7]);
    }

    #[test]
    fn cheap_indices_are_not_cut_below_the_floor() {
        let counts = |l: &TaskList, workers| {
            l.chunks(ChunkSize::Guided { workers }, Encoding::Raw)
                .map(|p| p.count)
                .collect::<Vec<u64>>()
        };
        // 32768 / (1000 + 64) = 30 indices at least, 29 from index 1030 on.
        let near_1000 = list(&[(1000, 1100, false)]);
        assert_eq!(counts(&near_1000, 1), [30, 29, 29, 12]);
        // 32768 / (100 + 64) = 199.
        let near_100 = list(&[(100, 10_000, true)]);
        let c = counts(&near_100, 2);
        assert_eq!(c[0], 1250);
        assert_eq!(c.iter().sum::<u64>(), 10_000);
        assert!(c[..c.len() - 1].iter().all(|&n| n >= 199), "{c:?}");
        assert_eq!(c.len(), 22, "{c:?}");
    }

    proptest! {
        #[test]
        fn chunking_is_a_partition(
            items in prop::collection::vec((0u64..500, 0u64..40, any::<bool>()), 0..12),
            chunk_size in 1u64..50,
        ) {
            let l = list(&items.iter().map(|&(a, n, r)| if r { (a, n, true) } else { (a, a + n, false) }).collect::<Vec<_>>());
            let mut position = 0;
            let mut seen = Vec::new();
            for (i, plan) in l.chunks(ChunkSize::Fixed(chunk_size), Encoding::Raw).enumerate() {
                prop_assert_eq!(plan.id, i as u64);
                prop_assert_eq!(plan.first_position, position);
                prop_assert!(plan.count >= 1 && plan.count <= chunk_size);
                prop_assert_eq!(plan.runs.iter().map(|r| r.len).sum::<u64>(), plan.count);
                position += plan.count;
                seen.extend(plan.indices());
            }
            prop_assert_eq!(position, l.len());
            prop_assert_eq!(seen, l.iter().collect::<Vec<_>>());
        }
    }
}
