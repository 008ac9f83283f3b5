//! Batches: taking them in, handing out their chunks, and ending them.

use super::*;

impl Manager {
    pub(super) fn submit(&mut self, job: Job) {
        let refusal = match (self.shared.broken.get(), &self.shutdown) {
            (Some(cause), _) => Some(PoolError::Broken(cause.clone())),
            (None, Some(_)) => Some(PoolError::ShutDown),
            (None, None) => None,
        };
        if let Some(error) = refusal {
            return fail_whole(&job, std::iter::empty(), &error);
        }
        let id = job.id;
        let entry = Entry {
            job,
            started: false,
            queued: false,
            outstanding: 0,
            parts: Vec::new(),
        };
        if entry.exhausted() {
            // An empty batch is done at once.
            if let Sink::Future(state) = &entry.job.sink {
                state.start();
                state.finish(Ok(Vec::new()));
                return;
            }
        }
        self.jobs.insert(id, entry);
        self.enqueue(id);
    }

    pub(super) fn enqueue(&mut self, id: JobId) {
        if let Some(entry) = self.jobs.get_mut(&id)
            && !entry.queued
            && !entry.exhausted()
        {
            entry.queued = true;
            self.ready_jobs.push_back(id);
        }
    }

    pub(super) fn feed(&mut self, id: JobId, chunks: Vec<ChunkPlan>) {
        let Some(entry) = self.jobs.get_mut(&id) else {
            return;
        };
        let refusal = match (self.shared.broken.get(), &self.shutdown) {
            (Some(cause), _) => Some(PoolError::Broken(cause.clone())),
            (None, Some(_)) => Some(PoolError::ShutDown),
            (None, None) => None,
        };
        if let Some(refusal) = refusal {
            if let Sink::Stream(tx) = &entry.job.sink {
                for plan in chunks {
                    let _ = tx.send(Delivery {
                        chunk: plan.id,
                        outcome: Err(refusal.clone()),
                    });
                }
            }
            return;
        }
        if let Source::Fed(queue) = &mut entry.job.source {
            queue.extend(chunks);
        }
        self.enqueue(id);
    }

    /// Drops a batch and everything left of it; answers still on their way
    /// are dropped when they come.
    pub(super) fn drop_job(&mut self, id: JobId) -> Option<Entry> {
        let entry = self.jobs.remove(&id)?;
        self.chunks.retain(|_, issued| issued.job != id);
        let chunks = &self.chunks;
        self.retry.retain(|wire| chunks.contains_key(wire));
        self.unsent.retain(|wire| chunks.contains_key(wire));
        self.ready_jobs.retain(|&j| j != id);
        Some(entry)
    }

    /// Ends a batch with an error: a future fails; a fed batch's caller
    /// hears it for every chunk it still waits for.
    pub(super) fn fail_job(&mut self, id: JobId, error: PoolError) {
        let issued: Vec<u64> = self
            .chunks
            .values()
            .filter(|i| i.job == id)
            .map(|i| i.plan.id)
            .collect();
        if let Some(entry) = self.drop_job(id) {
            fail_whole(&entry.job, issued.into_iter(), &error);
        }
    }

    /// Ends one chunk with an error: a future's whole batch fails with it; a
    /// fed batch hears of that chunk, in its turn.
    pub(super) fn fail_chunk(&mut self, wire: u64, error: PoolError) {
        let Some(issued) = self.chunks.remove(&wire) else {
            return;
        };
        self.retry.retain(|&id| id != wire);
        self.unsent.retain(|&id| id != wire);
        self.finish_chunk(issued, Err(error));
    }

    /// A chunk is done, with its values or an error.
    pub(super) fn finish_chunk(&mut self, issued: Issued, outcome: Outcome) {
        let Some(entry) = self.jobs.get_mut(&issued.job) else {
            return;
        };
        entry.outstanding -= 1;
        match &entry.job.sink {
            Sink::Future(_) => match outcome {
                Ok(values) => {
                    entry.parts.push((issued.plan.first_position, values));
                    if entry.outstanding == 0 && entry.exhausted() {
                        let mut entry = self.jobs.remove(&issued.job).expect("present");
                        if let Sink::Future(state) = &entry.job.sink {
                            state.finish(Ok(std::mem::take(&mut entry.parts)));
                        }
                    }
                }
                Err(error) => self.fail_job(issued.job, error),
            },
            // Held until the workers have their next chunks: waking the
            // caller is a system call the workers should not wait behind.
            Sink::Stream(tx) => self.outbox.push((
                issued.job,
                tx.clone(),
                Delivery {
                    chunk: issued.plan.id,
                    outcome,
                },
            )),
        }
    }

    /// Hands the callers the chunks that finished.
    pub(super) fn deliver(&mut self) {
        for (job, tx, delivery) in std::mem::take(&mut self.outbox) {
            if tx.send(delivery).is_err() {
                // Its caller is gone.
                self.drop_job(job);
            }
        }
    }

    /// The next chunk to send to the worker in `slot`: one to retry, else
    /// the oldest batch's next. A chunk lost on the slot's host waits for
    /// a worker on another, while another host has a ready one.
    pub(super) fn next_chunk(&mut self, slot: usize) -> Option<u64> {
        while let Some(wire) = self.unsent.pop_front() {
            if self.chunks.contains_key(&wire) {
                return Some(wire);
            }
        }
        self.retry.retain(|wire| self.chunks.contains_key(wire));
        let place = self.config.places[slot];
        let elsewhere = |lost_on: Option<usize>| {
            lost_on == Some(place)
                && self.slots.iter().enumerate().any(|(other, s)| {
                    self.config.places[other] != place
                        && !s.given_up
                        && s.worker.as_ref().is_some_and(|w| w.process.is_ready())
                })
        };
        let at = self
            .retry
            .iter()
            .position(|wire| !elsewhere(self.chunks[wire].lost_on));
        if let Some(wire) = at.and_then(|at| self.retry.remove(at)) {
            self.shared.count(|c| c.retried_chunks += 1);
            return Some(wire);
        }
        while let Some(&id) = self.ready_jobs.front() {
            let Some(entry) = self.jobs.get_mut(&id) else {
                self.ready_jobs.pop_front();
                continue;
            };
            if !entry.started {
                entry.started = true;
                if let Sink::Future(state) = &entry.job.sink
                    && !state.start()
                {
                    // Cancelled before it ran.
                    self.drop_job(id);
                    continue;
                }
            }
            let encoding = entry.job.encoding;
            let plan = match &mut entry.job.source {
                // A future holds its whole batch: no window to share.
                Source::Tasks {
                    tasks,
                    cursor,
                    size,
                } => cursor.next(tasks, *size, encoding, crate::pool::CHUNK_BYTES_BUDGET),
                Source::Fed(queue) => queue.pop_front(),
            };
            if entry.exhausted() {
                entry.queued = false;
                self.ready_jobs.pop_front();
            }
            let Some(plan) = plan else { continue };
            entry.outstanding += 1;
            let wire = self.next_chunk;
            self.next_chunk += 1;
            self.chunks.insert(
                wire,
                Issued {
                    job: id,
                    encoding,
                    plan,
                    failures: 0,
                    lost_on: None,
                },
            );
            return Some(wire);
        }
        None
    }
}
