//! A batch of indices held compactly (ranges and repeats, never one entry per
//! index unless the input lists them so), and its division into chunks.

use std::iter::Peekable;

use fibpool_protocol::packed::{packed_len_bound, runs_len_bound};
use fibpool_protocol::{Encoding, Run};

/// A chunk's answer is kept under this many bytes (estimated from the indices)
/// unless a single value is bigger: it bounds the memory the coordinator holds
/// per chunk, every part of which stays until the chunk's last. The answer
/// travels in parts of about a megabyte (see `PART_BYTES`). At 32 MiB a
/// 2-worker `run 0..300000` over shm held tens of megabytes of parts at once
/// and faulted them in (49 thousand page faults, against 9 thousand at
/// 4 MiB, 0.70 against 0.59 s).
/// A worker seeds each chunk of a range from its last one when that is close
/// behind (the worker's `kernels::Seed`), so small chunks no longer pay a
/// fresh fast doubling each: with 1 MiB chunks that did, `run 0..1000000`
/// spent half its workers' time seeding.
pub const CHUNK_BYTES_BUDGET: u64 = 4 << 20;

/// The most runs a chunk holds (a repeat is one run per copy). It bounds a
/// request's size: at most about 40 KB for indices below 2^32, so that a
/// few of them always fit in a worker's pipe and a write to a worker that
/// stopped reading can never block the pool (see the manager's budget).
pub const MAX_RUNS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `start, start + 1, ..., start + len - 1`, never empty: a range may end
    /// at `u64::MAX` itself.
    Range { start: u64, len: u64 },
    /// `count` copies of `index`, count >= 1.
    Repeat { index: u64, count: u64 },
}

impl Spec {
    fn first(&self) -> u64 {
        match *self {
            Spec::Range { start, .. } => start,
            Spec::Repeat { index, .. } => index,
        }
    }

    fn len(&self) -> u64 {
        match *self {
            Spec::Range { len, .. } => len,
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
        self.push_run(start, end - start);
    }

    /// Appends `len` consecutive indices from `start`. Panics if they would
    /// pass `u64::MAX`.
    pub fn push_run(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        let last = start
            .checked_add(len - 1)
            .unwrap_or_else(|| panic!("the run {start}+{len} passes u64::MAX"));
        self.len = self.len.saturating_add(len);
        self.note_max(last);
        match self.specs.last_mut() {
            Some(Spec::Range { start: s, len: l }) if s.checked_add(*l) == Some(start) => {
                *l += len;
            }
            // A lone index again: a repeat.
            Some(spec @ Spec::Range { len: 1, .. }) if len == 1 && spec.first() == start => {
                *spec = Spec::Repeat {
                    index: start,
                    count: 2,
                };
            }
            Some(Spec::Repeat { index, count }) if len == 1 && *index == start => {
                *count = count.saturating_add(1);
            }
            _ => self.specs.push(Spec::Range { start, len }),
        }
    }

    /// Appends `count` copies of `index`.
    pub fn push_repeat(&mut self, index: u64, count: u64) {
        match count {
            0 => {}
            1 => self.push_run(index, 1),
            _ => {
                self.len = self.len.saturating_add(count);
                self.note_max(index);
                match self.specs.last_mut() {
                    Some(Spec::Repeat { index: i, count: c }) if *i == index => {
                        *c = c.saturating_add(count);
                    }
                    Some(spec @ Spec::Range { len: 1, .. }) if spec.first() == index => {
                        *spec = Spec::Repeat {
                            index,
                            count: count.saturating_add(1),
                        };
                    }
                    _ => self.specs.push(Spec::Repeat { index, count }),
                }
            }
        }
    }

    pub fn push(&mut self, index: u64) {
        self.push_run(index, 1);
    }

    fn note_max(&mut self, index: u64) {
        self.max_index = Some(self.max_index.map_or(index, |m| m.max(index)));
    }

    /// The entries (ranges and repeats) that hold the indices: what the
    /// list's memory grows with (24 bytes each).
    pub fn entries(&self) -> usize {
        self.specs.len()
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

    /// The `k` largest indices above `above`, copies counted, largest
    /// first: the values a pool of `k` workers may compute at once.
    pub fn largest_above(&self, above: u64, k: usize) -> Vec<u64> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        // The k largest so far, smallest on top.
        let mut kept = BinaryHeap::with_capacity(k + 1);
        let mut keep = |index: u64| {
            if kept.len() < k {
                kept.push(Reverse(index));
            } else if kept.peek().is_some_and(|&Reverse(least)| least < index) {
                kept.pop();
                kept.push(Reverse(index));
            } else {
                return false;
            }
            true
        };
        // Only the k specs with the largest last index can hold any of
        // the k largest indices: the others are not expanded at all (in
        // ascending order every spec pushed up to k entries).
        let last_of = |spec: &Spec| match *spec {
            Spec::Range { start, len } => start + (len - 1),
            Spec::Repeat { index, .. } => index,
        };
        let mut candidates: Vec<&Spec> = self
            .specs
            .iter()
            .filter(|spec| last_of(spec) > above)
            .collect();
        if candidates.len() > k && k > 0 {
            candidates.select_nth_unstable_by(k - 1, |a, b| last_of(b).cmp(&last_of(a)));
            candidates.truncate(k);
        }
        for spec in candidates {
            let (last, copies, len) = match *spec {
                Spec::Range { start, len } => (start + (len - 1), 1, len),
                Spec::Repeat { index, count } => (index, count, 1),
            };
            // From the spec's largest down, until one is not kept.
            'spec: for i in 0..len.min(k as u64) {
                let index = last - i;
                if index <= above {
                    break;
                }
                for _ in 0..copies.min(k as u64) {
                    if !keep(index) {
                        break 'spec;
                    }
                }
            }
        }
        let mut out: Vec<u64> = kept.into_iter().map(|Reverse(i)| i).collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }

    /// Every index, in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.specs.iter().flat_map(|spec| {
            let (first, len, copies) = match *spec {
                Spec::Range { start, len } => (start, len, 1),
                Spec::Repeat { index, count } => (index, 1, count),
            };
            (0..len).flat_map(move |i| std::iter::repeat_n(first + i, copies as usize))
        })
    }

    /// About the sum of `per_value` over the batch's indices, for a
    /// `per_value` that grows with the index and is within a few bytes of
    /// affine (a value's size): a range counts as its ends' mean times its
    /// length, a repeat as its index's times its count, so a huge batch
    /// costs no more to sum than it takes entries.
    pub(crate) fn sum_over(&self, per_value: impl Fn(u64) -> u64) -> u64 {
        self.specs
            .iter()
            .map(|spec| match *spec {
                Spec::Range { start, len } => {
                    let ends =
                        u128::from(per_value(start)) + u128::from(per_value(start + (len - 1)));
                    u64::try_from(ends * u128::from(len) / 2).unwrap_or(u64::MAX)
                }
                Spec::Repeat { index, count } => per_value(index).saturating_mul(count),
            })
            .fold(0, u64::saturating_add)
    }

    /// The batch as runs of consecutive indices, in order, each range whole:
    /// what one process computing it alone would do.
    pub fn runs(&self) -> impl Iterator<Item = Run> + '_ {
        self.specs.iter().flat_map(|spec| {
            let (run, copies) = match *spec {
                Spec::Range { start, len } => (Run { start, len }, 1),
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

    /// The batch cut into `parts` lists of about equal cost, an index n
    /// costing n + 64 (its size, plus a little for every value). Ranges and
    /// repeats are cut where the cost falls due, and every part stays as
    /// compact as the batch: a billion copies of one index are two entries.
    pub fn split_by_cost(&self, parts: usize) -> Vec<TaskList> {
        let parts = parts.max(1);
        let copies_cost = |n: u64, k: u64| (n as u128 + 64).saturating_mul(k as u128);
        let spec_cost = |spec: &Spec| match *spec {
            Spec::Range { start, len } => range_sum(start, len),
            Spec::Repeat { index, count } => copies_cost(index, count),
        };
        let total = self
            .specs
            .iter()
            .map(spec_cost)
            .fold(0u128, u128::saturating_add);
        let mut out = vec![TaskList::new(); parts];
        let (mut part, mut spent) = (0usize, 0u128);
        for spec in &self.specs {
            // Taken from this spec so far.
            let mut taken = 0u64;
            while taken < spec.len() {
                let left = spec.len() - taken;
                let due = (total * (part as u128 + 1) / parts as u128).saturating_sub(spent);
                // The cost of the next k indices of the spec.
                let cost = |k: u64| match *spec {
                    Spec::Range { start, .. } => range_sum(start + taken, k),
                    Spec::Repeat { index, .. } => copies_cost(index, k),
                };
                let take = if part == parts - 1 || cost(left) <= due {
                    left
                } else {
                    // The fewest indices whose cost reaches what is due.
                    let (mut lo, mut hi) = (0u64, left);
                    while hi - lo > 1 {
                        let mid = lo + (hi - lo) / 2;
                        if cost(mid) < due { lo = mid } else { hi = mid }
                    }
                    hi
                };
                match *spec {
                    Spec::Range { start, .. } => out[part].push_run(start + taken, take),
                    Spec::Repeat { index, .. } => out[part].push_repeat(index, take),
                }
                spent = spent.saturating_add(cost(take));
                taken += take;
                if taken < spec.len() {
                    part += 1;
                }
            }
        }
        out
    }

    /// The chunks of the batch, in order.
    #[cfg(test)]
    pub(crate) fn chunks(&self, size: ChunkSize, encoding: Encoding) -> Chunker<'_> {
        Chunker {
            tasks: self,
            cursor: Cursor::default(),
            size,
            encoding,
        }
    }
}

/// Where a walk over a task list's runs has got to.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunsAt {
    spec: usize,
    /// Copies of a repeat already taken.
    taken: u64,
}

impl TaskList {
    /// The next runs of the batch from `at`, at most `max` of them (each
    /// range whole, one run per copy of a repeat), moving `at` past them:
    /// the batch's [`TaskList::runs`] a piece at a time, in constant memory.
    pub(crate) fn next_runs(&self, at: &mut RunsAt, max: usize) -> Vec<Run> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(spec) = self.specs.get(at.spec) else {
                break;
            };
            match *spec {
                Spec::Range { start, len } => {
                    out.push(Run { start, len });
                    at.spec += 1;
                }
                Spec::Repeat { index, count } => {
                    let k = (count - at.taken).min((max - out.len()) as u64);
                    out.extend(std::iter::repeat_n(
                        Run {
                            start: index,
                            len: 1,
                        },
                        k as usize,
                    ));
                    at.taken += k;
                    if at.taken == count {
                        (at.spec, at.taken) = (at.spec + 1, 0);
                    }
                }
            }
        }
        out
    }
}

/// The cost of the `k` indices from `start` (index n costs n + 64),
/// saturating far beyond any batch a pool could compute.
fn range_sum(start: u64, k: u64) -> u128 {
    let (first, k) = (start as u128, k as u128);
    let steps = k * k.saturating_sub(1) / 2;
    (k * first).saturating_add(steps).saturating_add(64 * k)
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

impl ChunkSize {
    /// The size of the next chunk, `remaining` indices being left and the
    /// first of them `next_index`.
    fn of_next(self, remaining: u64, next_index: u64) -> u64 {
        match self {
            ChunkSize::Fixed(k) => k.max(1),
            ChunkSize::Guided { workers } => guided_chunk_size(remaining, workers, next_index),
        }
    }
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
    /// The chunk's place in its batch, from 0.
    pub id: u64,
    /// Position in the batch of the chunk's first index.
    pub first_position: u64,
    pub count: u64,
    pub runs: Vec<Run>,
}

impl ChunkPlan {
    fn new(id: u64, first_position: u64) -> Self {
        ChunkPlan {
            id,
            first_position,
            count: 0,
            runs: Vec::new(),
        }
    }

    /// At most how many bytes its values take in `encoding` (the bound a
    /// chunk is cut by): what a fed batch counts against its window.
    pub fn answer_bound(&self, encoding: Encoding) -> u64 {
        runs_len_bound(&self.runs, encoding)
    }

    /// The chunk's indices in order.
    pub fn indices(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs
            .iter()
            .flat_map(|run| (0..run.len).map(move |i| run.start + i))
    }

    /// "5, 7..=9, 12", shortened after a few runs.
    pub fn describe(&self) -> String {
        describe_runs(&self.runs)
    }

    fn push(&mut self, start: u64, len: u64) {
        self.count += len;
        if let Some(last) = self.runs.last_mut()
            && last.start.checked_add(last.len) == Some(start)
        {
            last.len += len;
            return;
        }
        self.runs.push(Run { start, len });
    }
}

/// "5, 7..=9, 12", shortened after a few runs.
pub(crate) fn describe_runs(runs: &[Run]) -> String {
    const SHOWN: usize = 5;
    let mut parts: Vec<String> = runs
        .iter()
        .take(SHOWN)
        .map(|r| match r.len {
            1 => r.start.to_string(),
            n => format!("{}..={}", r.start, r.start + (n - 1)),
        })
        .collect();
    if runs.len() > SHOWN {
        let total: u64 = runs.iter().map(|r| r.len).sum();
        parts.push(format!("... ({total} indices in all)"));
    }
    parts.join(", ")
}

/// Where the next chunk of a task list starts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cursor {
    spec: usize,
    /// Indices of `specs[spec]` already handed out.
    offset: u64,
    next_id: u64,
    next_position: u64,
}

impl Cursor {
    /// True when every chunk of `tasks` has been handed out.
    pub fn is_done(&self, tasks: &TaskList) -> bool {
        self.spec >= tasks.specs.len()
    }

    /// Chunks handed out so far.
    pub fn chunks(&self) -> u64 {
        self.next_id
    }

    /// The next chunk of `tasks`: at most the chunk size and `budget` bytes
    /// of answer (at most [`CHUNK_BYTES_BUDGET`]) unless one value is more,
    /// and never empty.
    pub fn next(
        &mut self,
        tasks: &TaskList,
        size: ChunkSize,
        encoding: Encoding,
        budget: u64,
    ) -> Option<ChunkPlan> {
        let first = tasks.specs.get(self.spec)?;
        let next_index = match *first {
            Spec::Range { start, .. } => start + self.offset,
            Spec::Repeat { index, .. } => index,
        };
        let chunk_size = size.of_next(tasks.len - self.next_position, next_index);
        let mut plan = ChunkPlan::new(self.next_id, self.next_position);
        let mut bytes = 0u64;
        while let Some(spec) = tasks.specs.get(self.spec) {
            if plan.runs.len() >= MAX_RUNS {
                break;
            }
            let room = chunk_size - plan.count;
            let left = spec.len() - self.offset;
            let (start, step) = match *spec {
                Spec::Range { start, .. } => (start + self.offset, 1),
                Spec::Repeat { index, .. } => (index, 0),
            };
            let mut take = room.min(left);
            if step == 0 {
                // One run per copy.
                take = take.min((MAX_RUNS - plan.runs.len()) as u64);
            }
            // every value in this piece is at most this big
            let per_value = packed_len_bound(start + step * (take - 1), encoding);
            let affordable = budget.saturating_sub(bytes) / per_value;
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
            self.offset += take;
            if step == 1 {
                plan.push(start, take);
            } else {
                plan.count += take;
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

/// A task list's chunks as an iterator.
#[cfg(test)]
pub(crate) struct Chunker<'a> {
    tasks: &'a TaskList,
    cursor: Cursor,
    size: ChunkSize,
    encoding: Encoding,
}

#[cfg(test)]
impl Iterator for Chunker<'_> {
    type Item = ChunkPlan;

    fn next(&mut self) -> Option<ChunkPlan> {
        self.cursor
            .next(self.tasks, self.size, self.encoding, CHUNK_BYTES_BUDGET)
    }
}

/// Why a chunk could not be taken whole from an iterator of indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge(pub u64);

/// The next chunk from a stream of indices, cut by the same rules as
/// [`Cursor::next`]; the stream's size hint stands for the indices left.
/// An index above `max` ends the chunk before it, and is reported with
/// the chunk (which may be `None` when it came first); it stays unread.
pub(crate) fn chunk_from_iter<I: Iterator<Item = u64>>(
    indices: &mut Peekable<I>,
    size: ChunkSize,
    encoding: Encoding,
    (id, first_position): (u64, u64),
    max: u64,
    budget: u64,
) -> (Option<ChunkPlan>, Option<TooLarge>) {
    let Some(&first) = indices.peek() else {
        return (None, None);
    };
    let chunk_size = size.of_next(indices.size_hint().0 as u64, first);
    let mut plan = ChunkPlan::new(id, first_position);
    let mut bytes = 0u64;
    while plan.count < chunk_size {
        let Some(&index) = indices.peek() else { break };
        if index > max {
            return ((plan.count > 0).then_some(plan), Some(TooLarge(index)));
        }
        let extends = plan
            .runs
            .last()
            .is_some_and(|r| r.start.checked_add(r.len) == Some(index));
        if plan.runs.len() >= MAX_RUNS && !extends {
            break;
        }
        let per_value = packed_len_bound(index, encoding);
        if plan.count > 0 && bytes + per_value > budget {
            break;
        }
        indices.next();
        bytes += per_value;
        plan.push(index, 1);
    }
    (Some(plan), None)
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
        // F(2 10^8) is about 42 MB of decimal text, over the budget alone.
        let l = list(&[(200_000_000, 200_000_003, false)]);
        let plans: Vec<_> = l.chunks(ChunkSize::Fixed(100), Encoding::Decimal).collect();
        assert_eq!(plans.iter().map(|p| p.count).collect::<Vec<_>>(), [1, 1, 1]);
        // F(200000) is about 42 KB: about 99 fit in 4 MiB.
        let l = list(&[(200_000, 202_000, false)]);
        let counts: Vec<_> = l
            .chunks(ChunkSize::Fixed(5000), Encoding::Decimal)
            .map(|p| p.count)
            .collect();
        assert_eq!(counts.iter().sum::<u64>(), 2000);
        assert!(counts[0] > 95 && counts[0] < 100, "{counts:?}");
    }

    #[test]
    fn a_smaller_budget_cuts_smaller_chunks() {
        // F(200000) takes about 42 KB: a 1 MiB budget holds 24.
        let l = list(&[(200_000, 202_000, false)]);
        let plan = Cursor::default()
            .next(&l, ChunkSize::Fixed(5000), Encoding::Decimal, 1 << 20)
            .unwrap();
        assert!(plan.count > 20 && plan.count < 26, "{}", plan.count);
        let mut it = (200_000u64..202_000).peekable();
        let (plan, _) = chunk_from_iter(
            &mut it,
            ChunkSize::Fixed(5000),
            Encoding::Decimal,
            (0, 0),
            u64::MAX,
            1 << 20,
        );
        assert!(plan.unwrap().count < 26);
    }

    #[test]
    fn splits_by_cost_cover_the_batch_evenly() {
        let l = list(&[(0, 50_000, false)]);
        let parts = l.split_by_cost(2);
        assert_eq!(parts.len(), 2);
        let cost = |part: &TaskList| -> u128 { part.iter().map(|n| n as u128 + 64).sum() };
        let (a, b) = (cost(&parts[0]), cost(&parts[1]));
        assert!(a.abs_diff(b) * 1000 < a + b, "{a} vs {b}");
        // The expensive end is the shorter part.
        assert!(parts[0].len() > parts[1].len());
        let all: Vec<u64> = parts.iter().flat_map(TaskList::iter).collect();
        assert_eq!(all, (0..50_000).collect::<Vec<_>>());
        // Too few indices leave parts empty; one part is the batch itself.
        let l = list(&[(7, 3, true)]);
        let parts = l.split_by_cost(4);
        assert_eq!(parts.iter().map(TaskList::len).sum::<u64>(), 3);
        assert_eq!(l.split_by_cost(1), vec![l.clone()]);
    }

    #[test]
    fn splits_of_repeats_stay_compact() {
        // 35 million copies of F(5): the ceiling's shares must not hold one
        // entry per copy (that was 560 MB of runs).
        let l = list(&[(5, 35_000_000, true), (9, 12, false)]);
        let parts = l.split_by_cost(2);
        assert_eq!(parts.iter().map(TaskList::len).sum::<u64>(), l.len());
        assert!(parts.iter().all(|p| p.specs.len() <= 2), "{parts:?}");
        // Half of 35e6 x (5 + 64) + (73 + 74 + 75) is 1_207_500_111: the
        // first part takes the fewest copies costing that much, 17_500_002.
        assert_eq!(parts[0].len(), 17_500_002);
        let tail: Vec<u64> = parts[1].iter().skip(17_499_997).collect();
        assert_eq!(tail, [5, 9, 10, 11]);
    }

    #[test]
    fn the_largest_index_is_a_task_like_any_other() {
        let mut l = TaskList::new();
        l.push(u64::MAX - 1);
        l.push(u64::MAX);
        l.push(u64::MAX);
        assert_eq!(l.len(), 3);
        assert_eq!(l.max_index(), Some(u64::MAX));
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            [u64::MAX - 1, u64::MAX, u64::MAX]
        );
        assert_eq!(l.specs.len(), 2);
        // Each value would pass a chunk's byte budget alone: one a chunk.
        let plans: Vec<_> = l.chunks(ChunkSize::Fixed(10), Encoding::Raw).collect();
        assert_eq!(plans.len(), 3);
        let indices: Vec<u64> = plans.iter().flat_map(ChunkPlan::indices).collect();
        assert_eq!(indices, l.iter().collect::<Vec<_>>());
        let runs = [
            Run {
                start: u64::MAX - 1,
                len: 2,
            },
            Run {
                start: u64::MAX,
                len: 1,
            },
        ];
        assert_eq!(
            describe_runs(&runs),
            format!("{}..={}, {}", u64::MAX - 1, u64::MAX, u64::MAX)
        );
    }

    #[test]
    fn no_chunk_holds_more_runs_than_the_cap() {
        let l = list(&[(7, 10_000, true), (0, 3, true), (1, 100, false)]);
        for size in [ChunkSize::Fixed(1 << 20), ChunkSize::Guided { workers: 1 }] {
            let plans: Vec<_> = l.chunks(size, Encoding::Raw).collect();
            assert!(plans.iter().all(|p| p.runs.len() <= MAX_RUNS), "{size:?}");
            let all: Vec<u64> = plans.iter().flat_map(ChunkPlan::indices).collect();
            assert_eq!(all, l.iter().collect::<Vec<_>>());
        }
        let mut it = std::iter::repeat_n(7u64, 10_000).peekable();
        let (plan, _) = chunk_from_iter(
            &mut it,
            ChunkSize::Fixed(1 << 20),
            Encoding::Raw,
            (0, 0),
            9,
            CHUNK_BYTES_BUDGET,
        );
        assert_eq!(plan.unwrap().runs.len(), MAX_RUNS);
        // A range is one run however long.
        let mut it = (0u64..100_000).peekable();
        let (plan, _) = chunk_from_iter(
            &mut it,
            ChunkSize::Fixed(4500),
            Encoding::Raw,
            (0, 0),
            u64::MAX,
            CHUNK_BYTES_BUDGET,
        );
        assert_eq!(
            plan.unwrap().runs,
            [Run {
                start: 0,
                len: 4500
            }]
        );
    }

    #[test]
    fn runs_come_a_piece_at_a_time() {
        let l = list(&[(5, 7, true), (100, 110, false), (9, 2, true)]);
        let mut at = RunsAt::default();
        let mut pieces = Vec::new();
        loop {
            let piece = l.next_runs(&mut at, 3);
            if piece.is_empty() {
                break;
            }
            assert!(piece.len() <= 3);
            pieces.push(piece);
        }
        let flat: Vec<Run> = pieces.concat();
        assert_eq!(flat, l.runs().collect::<Vec<_>>());
        assert_eq!(pieces.len(), 4, "{pieces:?}");
    }

    #[test]
    fn chunks_from_an_iterator_follow_the_same_rules() {
        let mut it = [1u64, 2, 3, 7, 7, 8, 100, 5].into_iter().peekable();
        let size = ChunkSize::Fixed(3);
        let (a, bad) =
            chunk_from_iter(&mut it, size, Encoding::Raw, (0, 0), 50, CHUNK_BYTES_BUDGET);
        let a = a.unwrap();
        assert_eq!((a.id, a.first_position, a.count, bad), (0, 0, 3, None));
        assert_eq!(a.runs, [Run { start: 1, len: 3 }]);
        let (b, bad) =
            chunk_from_iter(&mut it, size, Encoding::Raw, (1, 3), 50, CHUNK_BYTES_BUDGET);
        let b = b.unwrap();
        assert_eq!(b.indices().collect::<Vec<_>>(), [7, 7, 8]);
        assert_eq!(bad, None);
        // 100 is above the maximum: nothing before it in this chunk, and it stays unread.
        let (c, bad) =
            chunk_from_iter(&mut it, size, Encoding::Raw, (2, 6), 50, CHUNK_BYTES_BUDGET);
        assert_eq!((c, bad), (None, Some(TooLarge(100))));
        assert_eq!(it.peek(), Some(&100));
        // Big values get a chunk each, as with a task list.
        let mut it = [200_000_000u64, 200_000_001].into_iter().peekable();
        let (d, _) = chunk_from_iter(
            &mut it,
            ChunkSize::Fixed(100),
            Encoding::Decimal,
            (0, 0),
            u64::MAX,
            CHUNK_BYTES_BUDGET,
        );
        assert_eq!(d.unwrap().count, 1);
        let mut empty = std::iter::empty::<u64>().peekable();
        assert_eq!(
            chunk_from_iter(
                &mut empty,
                size,
                Encoding::Raw,
                (0, 0),
                9,
                CHUNK_BYTES_BUDGET
            ),
            (None, None)
        );
    }

    #[test]
    fn the_largest_indices_above_a_bound_count_copies_and_ranges() {
        let mut tasks = TaskList::new();
        tasks.push_run(10, 5); // 10..=14
        tasks.push_repeat(12, 3);
        tasks.push(3);
        tasks.push_run(100, 2); // 100, 101
        tasks.push_repeat(13, 1);
        assert_eq!(tasks.largest_above(0, 4), [101, 100, 14, 13]);
        assert_eq!(
            tasks.largest_above(0, 8),
            [101, 100, 14, 13, 13, 12, 12, 12]
        );
        assert_eq!(
            tasks.largest_above(11, 50),
            [101, 100, 14, 13, 13, 12, 12, 12, 12]
        );
        assert_eq!(tasks.largest_above(101, 3), Vec::<u64>::new());
        assert_eq!(tasks.largest_above(100, 3), [101]);
        let mut copies = TaskList::new();
        copies.push_repeat(u64::MAX, u64::MAX);
        assert_eq!(copies.largest_above(0, 2), [u64::MAX, u64::MAX]);
        let mut huge = TaskList::new();
        huge.push_run(u64::MAX - 9, 10);
        assert_eq!(
            huge.largest_above(u64::MAX - 3, 100),
            [u64::MAX, u64::MAX - 1, u64::MAX - 2]
        );
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
