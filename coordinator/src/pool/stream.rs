//! The caller's side of a fed batch, which [`crate::Pool::run`] and the map
//! iterators share: chunks are cut on the caller's thread and fed to the
//! manager a window at a time, and their outcomes come back on a channel of
//! the batch's own, to be delivered in order (or as they come) by the
//! [`Board`]. The window bounds what a batch holds, however long it is.

use std::sync::mpsc::{self, Receiver};

use fibpool_protocol::Encoding;

use super::Pool;
use super::board::{Board, Outcome};
use super::error::PoolError;
use super::manager::{Delivery, Job, JobId, Msg, Sink, Source};
use super::tasks::{CHUNK_BYTES_BUDGET, ChunkPlan};

pub(crate) struct Stream<'p> {
    pool: &'p Pool,
    id: JobId,
    encoding: Encoding,
    /// Sent to the manager once, with the first chunks.
    results: Option<Receiver<Delivery>>,
    board: Board,
    /// What the chunks fed and not yet delivered may take, by their bounds.
    bytes: u64,
}

/// A fed batch keeps chunks out while their answers may take less than
/// this, with one chunk more at most (at least one is always out): 256 MiB,
/// however many workers (a window of chunks alone grew with them, to 1.9 GB
/// for 256 workers on values near F(300000)).
pub const WINDOW_BYTES: u64 = 256 << 20;

/// What a chunk of a fed batch whose window holds `chunks` chunks may take
/// in answers: 4 MiB ([`CHUNK_BYTES_BUDGET`]) for the window of a pool of
/// up to 16 workers, less for bigger ones, so that the window's bytes
/// still hold half its chunks ([`WINDOW_BYTES`] x 2 / `chunks`), and at least 1 MiB.
pub(crate) fn chunk_budget(chunks: usize) -> u64 {
    (2 * WINDOW_BYTES / chunks.max(1) as u64).clamp(1 << 20, CHUNK_BYTES_BUDGET)
}

impl<'p> Stream<'p> {
    pub fn new(pool: &'p Pool, encoding: Encoding, ordered: bool) -> Self {
        Stream {
            id: pool.next_job(),
            pool,
            encoding,
            results: None,
            board: Board::new(ordered),
            bytes: 0,
        }
    }

    /// True while the window has room for another chunk: fewer than
    /// `chunks` out (counting `more` about to be fed), and less than
    /// [`WINDOW_BYTES`] in their bounds (`more_bytes` included).
    pub fn has_room(&self, chunks: usize, more: usize, more_bytes: u64) -> bool {
        self.outstanding() + more < chunks && self.bytes.saturating_add(more_bytes) < WINDOW_BYTES
    }

    /// Half the window is free, in chunks and in bytes: time to feed more.
    pub fn half_empty(&self, chunks: usize) -> bool {
        self.outstanding() * 2 <= chunks && self.bytes <= WINDOW_BYTES / 2
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Chunks fed and not yet delivered.
    pub fn outstanding(&self) -> usize {
        self.board.outstanding()
    }

    /// Hands chunks to the pool, in one message.
    pub fn feed(&mut self, chunks: Vec<ChunkPlan>) -> Result<(), PoolError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let _gate = self
            .pool
            .gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.results.is_none() {
            // A new batch: refused at once after a shutdown. Later chunks
            // of a batch already under way are refused by the manager, in
            // their turn, after the values before them.
            self.pool.usable()?;
        }
        for plan in &chunks {
            self.bytes = self.bytes.saturating_add(plan.answer_bound(self.encoding));
            self.board.feed(plan.clone());
        }
        let msg = match self.results {
            Some(_) => Msg::Feed {
                job: self.id,
                chunks,
            },
            None => {
                let (tx, rx) = mpsc::channel();
                self.results = Some(rx);
                Msg::Submit(Box::new(Job {
                    id: self.id,
                    encoding: self.encoding,
                    source: Source::Fed(chunks.into()),
                    sink: Sink::Stream(tx),
                }))
            }
        };
        self.pool.send(msg)
    }

    /// The next chunk to deliver and what became of it, waiting for it;
    /// `None` when nothing fed is left.
    pub fn next(&mut self) -> Option<(ChunkPlan, Outcome)> {
        let next = self.next_out();
        if let Some((plan, _)) = &next {
            self.bytes = self.bytes.saturating_sub(plan.answer_bound(self.encoding));
        }
        next
    }

    fn next_out(&mut self) -> Option<(ChunkPlan, Outcome)> {
        loop {
            if let Some(ready) = self.board.next_ready() {
                return Some(ready);
            }
            if self.board.outstanding() == 0 {
                return None;
            }
            let delivery = self.results.as_ref().and_then(|rx| rx.recv().ok());
            match delivery {
                // The manager sends each chunk once, checked against its plan.
                Some(Delivery { chunk, outcome }) => {
                    let arrived = self.board.arrive(chunk, outcome);
                    debug_assert!(arrived.is_ok(), "{arrived:?}");
                }
                // The manager is gone: what was fed will never come back.
                None => {
                    let plan = self.board.abandon()?;
                    return Some((plan, Err(self.pool.gone())));
                }
            }
        }
    }
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        if self.results.is_some() {
            // Whatever is left of the batch is dropped; answers on their way
            // are dropped when they come.
            let _ = self.pool.send(Msg::Cancel(self.id));
        }
    }
}
