//! `Pool::map` and `Pool::map_unordered`: lazy iterators over F(n), as
//! Python's `Executor.map` with a `buffersize` (3.14). The input is read
//! only as chunks are needed, so it may be endless; at most `buffersize`
//! chunks are out at a time.

use std::iter::Peekable;
use std::num::NonZeroU64;

use fibpool_protocol::{Encoding, MAX_INDEX};
use num_bigint::BigUint;

use super::Pool;
use super::board::Values;
use super::error::PoolError;
use super::stream::{Stream, chunk_budget};
use super::tasks::{ChunkPlan, ChunkSize, TooLarge, chunk_from_iter};

/// What both map iterators share: the input, the stream of chunks, and the
/// chunk being handed out.
struct Mapper<'p, I: Iterator<Item = u64>> {
    pool: &'p Pool,
    indices: Peekable<I>,
    ordered: bool,
    chunk_size: Option<NonZeroU64>,
    buffersize: usize,
    stream: Option<Stream<'p>>,
    current: Option<Current>,
    next_chunk: (u64, u64),
    /// Why the next index is refused (too large, or its value too big for
    /// memory): reported when its turn comes, after every value before it.
    refused: Option<PoolError>,
    /// The largest index cut into chunks: at first one whose value needs no
    /// memory check, raised to what memory allows when a bigger one comes.
    max: u64,
    finished: bool,
}

impl<'p, I: Iterator<Item = u64>> Mapper<'p, I> {
    fn new(pool: &'p Pool, indices: I, ordered: bool) -> Self {
        Mapper {
            pool,
            indices: indices.peekable(),
            ordered,
            chunk_size: None,
            buffersize: pool.window,
            stream: None,
            current: None,
            next_chunk: (0, 0),
            refused: None,
            max: super::unchecked_limit(Encoding::Raw),
            finished: false,
        }
    }

    /// Feeds chunks until `buffersize` are out, half a window at a time.
    fn top_up(&mut self, stream: &mut Stream<'p>) -> Result<(), PoolError> {
        if !stream.half_empty(self.buffersize) || self.refused.is_some() {
            return Ok(());
        }
        let size = match self.chunk_size {
            Some(k) => ChunkSize::Fixed(k.get()),
            None => ChunkSize::Guided {
                workers: self.pool.size(),
            },
        };
        let (mut batch, mut bytes) = (Vec::new(), 0);
        while stream.has_room(self.buffersize, batch.len(), bytes) {
            let (plan, refused) = chunk_from_iter(
                &mut self.indices,
                size,
                Encoding::Raw,
                self.next_chunk,
                self.max,
                chunk_budget(self.buffersize),
            );
            if let Some(plan) = plan {
                self.next_chunk = (plan.id + 1, plan.first_position + plan.count);
                bytes += plan.answer_bound(stream.encoding());
                batch.push(plan);
            }
            if let Some(TooLarge(index)) = refused {
                // Past what needs no check: what memory allows now, once.
                if self.max < MAX_INDEX && index <= MAX_INDEX {
                    let affordable = super::affordable_limit(Encoding::Raw);
                    if affordable > self.max {
                        self.max = affordable;
                        if index <= affordable {
                            continue;
                        }
                    }
                }
                self.refused = Some(super::check_index(index, Encoding::Raw).err().unwrap_or(
                    PoolError::IndexTooLarge {
                        index,
                        max: self.max,
                    },
                ));
                break;
            }
            if self.indices.peek().is_none() {
                break;
            }
        }
        stream.feed(batch)
    }

    fn next(&mut self) -> Option<Result<(u64, BigUint), PoolError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(current) = &mut self.current {
                if let Some((index, value)) = current.next() {
                    return Some(Ok((index, BigUint::from_bytes_le(value))));
                }
                self.current = None;
            }
            let mut stream = match self.stream.take() {
                Some(stream) => stream,
                None => {
                    if let Err(e) = self.pool.usable() {
                        return self.fail(e);
                    }
                    Stream::new(self.pool, Encoding::Raw, self.ordered)
                }
            };
            if let Err(e) = self.top_up(&mut stream) {
                return self.fail(e);
            }
            let next = stream.next();
            self.stream = Some(stream);
            match next {
                Some((plan, Ok(values))) => self.current = Some(Current::new(plan, values)),
                Some((_, Err(e))) => return self.fail(e),
                None => {
                    return match self.refused.take() {
                        Some(error) => self.fail(error),
                        None => {
                            // Done: the batch is closed now, not when the
                            // iterator is dropped, so a shutdown need not
                            // wait for it.
                            self.finished = true;
                            self.stream = None;
                            None
                        }
                    };
                }
            }
        }
    }

    /// Ends the iteration with `error`; the rest of the batch is dropped.
    fn fail(&mut self, error: PoolError) -> Option<Result<(u64, BigUint), PoolError>> {
        self.finished = true;
        self.stream = None;
        self.current = None;
        Some(Err(error))
    }
}

/// The chunk being handed out, and where in it.
struct Current {
    plan: ChunkPlan,
    values: Values,
    /// The next value, and the run and offset in the run of its index.
    offset: usize,
    run: usize,
    within: u64,
}

impl Current {
    fn new(plan: ChunkPlan, values: Values) -> Self {
        Current {
            plan,
            values,
            offset: 0,
            run: 0,
            within: 0,
        }
    }

    fn next(&mut self) -> Option<(u64, &[u8])> {
        let run = self.plan.runs.get(self.run)?;
        let index = run.start + self.within;
        self.within += 1;
        if self.within == run.len {
            (self.run, self.within) = (self.run + 1, 0);
        }
        let value = self.values.get(self.offset)?;
        self.offset += 1;
        Some((index, value))
    }
}

/// F(n) for every index, in input order: see [`Pool::map`].
pub struct Map<'p, I: Iterator<Item = u64>>(Mapper<'p, I>);

/// (n, F(n)) for every index, as chunks finish: see [`Pool::map_unordered`].
pub struct MapUnordered<'p, I: Iterator<Item = u64>>(Mapper<'p, I>);

macro_rules! options {
    ($ty:ident) => {
        impl<'p, I: Iterator<Item = u64>> $ty<'p, I> {
            /// A fixed number of indices per chunk instead of guided chunks
            /// (fewer when the values would pass a chunk's byte budget).
            /// Takes effect before the first value is asked for.
            pub fn chunk_size(mut self, indices: NonZeroU64) -> Self {
                self.0.chunk_size = Some(indices);
                self
            }

            /// At most this many chunks out at a time (Python's
            /// `buffersize`; default: four per in-flight place of every
            /// worker). At least 1.
            pub fn buffersize(mut self, chunks: usize) -> Self {
                self.0.buffersize = chunks.max(1);
                self
            }
        }
    };
}
options!(Map);
options!(MapUnordered);

impl<'p, I: Iterator<Item = u64>> Map<'p, I> {
    pub(crate) fn new(pool: &'p Pool, indices: I) -> Self {
        Map(Mapper::new(pool, indices, true))
    }
}

impl<'p, I: Iterator<Item = u64>> MapUnordered<'p, I> {
    pub(crate) fn new(pool: &'p Pool, indices: I) -> Self {
        MapUnordered(Mapper::new(pool, indices, false))
    }
}

impl<I: Iterator<Item = u64>> Iterator for Map<'_, I> {
    type Item = Result<BigUint, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|r| r.map(|(_, value)| value))
    }
}

impl<I: Iterator<Item = u64>> Iterator for MapUnordered<'_, I> {
    type Item = Result<(u64, BigUint), PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}
