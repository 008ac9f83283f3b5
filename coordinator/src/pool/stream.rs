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
use super::tasks::ChunkPlan;

pub(crate) struct Stream<'p> {
    pool: &'p Pool,
    id: JobId,
    encoding: Encoding,
    /// Sent to the manager once, with the first chunks.
    results: Option<Receiver<Delivery>>,
    board: Board,
}

impl<'p> Stream<'p> {
    pub fn new(pool: &'p Pool, encoding: Encoding, ordered: bool) -> Self {
        Stream {
            id: pool.next_job(),
            pool,
            encoding,
            results: None,
            board: Board::new(ordered),
        }
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
