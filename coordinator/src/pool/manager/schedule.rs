//! Scheduling: which chunk goes to which worker, and the deadlines.

use super::*;

impl Manager {
    /// Sends chunks to workers with room, breadth first, so that every
    /// worker has one before any has two.
    pub(super) fn dispatch(&mut self) {
        // Most calls find nothing to send: no scan of the workers then.
        if self.shared.broken.get().is_some()
            || (self.retry.is_empty() && self.ready_jobs.is_empty())
        {
            return;
        }
        for depth in 1..=self.config.in_flight {
            for slot in 0..self.slots.len() {
                let Some(worker) = &self.slots[slot].worker else {
                    continue;
                };
                let recycling = self
                    .config
                    .max_tasks_per_child
                    .is_some_and(|max| worker.assigned >= max);
                if worker.in_flight.len() >= depth || worker.measuring > 0 || recycling {
                    continue;
                }
                let Some(wire) = self.next_chunk() else {
                    return;
                };
                self.send_chunk(slot, wire);
            }
        }
    }

    pub(super) fn send_chunk(&mut self, slot: usize, wire: u64) {
        let issued = &self.chunks[&wire];
        let request = Request::Compute(Chunk {
            id: wire,
            encoding: issued.encoding,
            runs: issued.plan.runs.clone(),
        });
        let worker = self.slots[slot].worker.as_mut().expect("a worker");
        if worker.in_flight.is_empty() {
            worker.busy_since = Some(Instant::now());
        }
        worker.in_flight.push(wire);
        worker.assigned += 1;
        match worker.process.send(&request) {
            Ok(()) => {}
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

    pub(super) fn deadline(&self, worker: &Worker) -> Option<Instant> {
        if !worker.process.is_ready() {
            Some(worker.process.life.spawned_at + self.config.handshake_timeout)
        } else {
            Some(worker.busy_since? + self.config.task_timeout?)
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
