//! Scheduling: which chunk goes to which worker, and the deadlines.

use super::*;

impl Manager {
    /// Sends chunks to workers with room, breadth first, so that every
    /// worker has one before any has two: each chunk goes to the worker
    /// holding the fewest (the lowest slot on a tie).
    pub(super) fn dispatch(&mut self) {
        // Most calls find nothing to send: no scan of the workers then.
        if self.shared.broken.get().is_some()
            || (self.retry.is_empty() && self.ready_jobs.is_empty() && self.unsent.is_empty())
        {
            return;
        }
        // Workers whose budget is spent for now.
        let mut full = Vec::new();
        while let Some(slot) = self.least_loaded(&full) {
            let Some(wire) = self.next_chunk() else {
                return;
            };
            if !self.send_chunk(slot, wire) {
                self.unsent.push_front(wire);
                full.push(slot);
            }
        }
    }

    /// The worker with room that holds the fewest chunks.
    fn least_loaded(&self, full: &[usize]) -> Option<usize> {
        let max = self.config.max_tasks_per_child;
        self.slots
            .iter()
            .enumerate()
            .filter(|(slot, _)| !full.contains(slot))
            .filter_map(|(slot, s)| Some((slot, s.worker.as_ref()?)))
            .filter(|(_, w)| {
                w.in_flight.len() < self.config.in_flight
                    && w.measuring == 0
                    && max.is_none_or(|max| w.assigned < max)
            })
            .min_by_key(|(_, w)| w.in_flight.len())
            .map(|(slot, _)| slot)
    }

    /// Sends chunk `wire` to the worker in `slot`; false, with nothing
    /// sent, when the request does not fit the worker's budget now.
    pub(super) fn send_chunk(&mut self, slot: usize, wire: u64) -> bool {
        let issued = &self.chunks[&wire];
        let request = Request::Compute(Chunk {
            id: wire,
            encoding: issued.encoding,
            runs: issued.plan.runs.clone(),
        });
        let len = match fibpool_protocol::codec::encoded_len(&request) {
            Ok(len) => len,
            Err(source) => {
                let plan = &self.chunks[&wire].plan;
                let error = PoolError::Request {
                    chunk: plan.id,
                    indices: plan.describe(),
                    source,
                };
                self.fail_chunk(wire, error);
                return true;
            }
        };
        let worker = self.slots[slot].worker.as_mut().expect("a worker");
        if !worker.fits(len) {
            return false;
        }
        if worker.in_flight.is_empty() {
            worker.busy_since = Some(Instant::now());
        }
        worker.in_flight.push(wire);
        worker.assigned += 1;
        match worker.process.send(&request) {
            Ok(len) => worker.wrote(Some(wire), len),
            // Its reader reports the end of its output, and recovery follows.
            Err(e) if e.is_disconnect() => {}
            // Nothing was written: the coordinator's own request is at fault.
            Err(source @ fibpool_protocol::Error::TooLarge { .. }) => {
                worker.in_flight.pop();
                worker.assigned -= 1;
                let plan = &self.chunks[&wire].plan;
                let error = PoolError::Request {
                    chunk: plan.id,
                    indices: plan.describe(),
                    source,
                };
                self.fail_chunk(wire, error);
            }
            // A stream left half-written cannot be trusted: end the worker;
            // its reader reports the end, and recovery follows.
            Err(_) => worker.process.kill(),
        }
        true
    }

    /// The first deadline a worker has: its handshake if it has not
    /// completed one, else its current chunk's task timeout.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.worker.as_ref())
            .filter_map(|w| self.deadline(w))
            .min()
    }

    /// A timeout too long for the clock is no deadline at all.
    pub(super) fn deadline(&self, worker: &Worker) -> Option<Instant> {
        if !worker.process.is_ready() {
            worker
                .process
                .life
                .spawned_at
                .checked_add(self.config.handshake_timeout)
        } else {
            worker.busy_since?.checked_add(self.config.task_timeout?)
        }
    }

    /// Replaces every worker past its deadline.
    pub(super) fn expire(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            let Some(worker) = &self.slots[slot].worker else {
                continue;
            };
            if self.deadline(worker).is_some_and(|at| at <= now) {
                let loss = if worker.process.is_ready() {
                    Loss::TaskTimeout
                } else {
                    Loss::HandshakeTimeout
                };
                self.lose(slot, loss);
            }
        }
    }
}
