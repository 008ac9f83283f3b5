//! Scheduling: which chunk goes to which worker, and the deadlines.

use super::*;

impl Manager {
    /// Sends chunks to workers with room, breadth first, so that every
    /// worker has one before any has two: each chunk goes to the worker
    /// holding the fewest (the lowest slot on a tie).
    pub(super) fn dispatch(&mut self) {
        if self.shared.broken.get().is_some() {
            return;
        }
        // Most calls find nothing to send: no scan of the workers then.
        if self.retry.is_empty() && self.ready_jobs.is_empty() && self.unsent.is_empty() {
            return self.steal();
        }
        // Workers whose budget is spent for now.
        let mut full = Vec::new();
        while let Some(slot) = self.least_loaded(&full) {
            let Some(wire) = self.next_chunk(slot) else {
                if self.retry.is_empty() {
                    return self.steal();
                }
                // What is left waits for a worker on another host.
                full.push(slot);
                continue;
            };
            if !self.send_chunk(slot, wire) {
                self.unsent.push_front(wire);
                full.push(slot);
            }
        }
    }

    /// The worker with room that holds the fewest chunks; one that has been
    /// starting for longer than [`STEAL_AFTER`] only when no other has room.
    fn least_loaded(&self, full: &[usize]) -> Option<usize> {
        let now = Instant::now();
        self.slots
            .iter()
            .enumerate()
            .filter(|(slot, _)| !full.contains(slot))
            .filter_map(|(slot, s)| Some((slot, s.worker.as_ref()?)))
            .filter(|(_, w)| self.has_room(w))
            .min_by_key(|(_, w)| (slow_to_start(w, now), w.in_flight.len()))
            .map(|(slot, _)| slot)
    }

    fn has_room(&self, w: &Worker) -> bool {
        w.in_flight.len() < self.config.in_flight
            && w.measuring == 0
            && !w.process.draining
            && self
                .config
                .max_tasks_per_child
                .is_none_or(|max| w.assigned < max)
    }

    /// With nothing else to send, a ready worker with room takes over the
    /// newest chunk held by a worker that has been starting for longer than
    /// [`STEAL_AFTER`]: a replacement that never starts then keeps nothing
    /// from the pool until its handshake timeout. The starting worker's
    /// answer to it, should it come, is dropped.
    fn steal(&mut self) {
        let now = Instant::now();
        let slow =
            |w: &Worker| !w.process.is_ready() && now >= w.process.life.spawned_at + STEAL_AFTER;
        if !self.slots.iter().any(|s| {
            s.worker
                .as_ref()
                .is_some_and(|w| slow(w) && !w.in_flight.is_empty())
        }) {
            return;
        }
        loop {
            let Some(thief) = (0..self.slots.len()).find(|&s| {
                self.slots[s]
                    .worker
                    .as_ref()
                    .is_some_and(|w| w.process.is_ready() && self.has_room(w))
            }) else {
                return;
            };
            let chunks = &self.chunks;
            let loot = self.slots.iter().enumerate().find_map(|(slot, s)| {
                let w = s.worker.as_ref().filter(|w| slow(w))?;
                let wire = w
                    .in_flight
                    .iter()
                    .rev()
                    .find(|id| chunks.contains_key(id) && !w.disowned.contains(id))?;
                Some((slot, *wire))
            });
            let Some((victim, wire)) = loot else {
                return;
            };
            self.worker(victim).disowned.insert(wire);
            if !self.send_chunk(thief, wire) {
                self.worker(victim).disowned.remove(&wire);
                return;
            }
        }
    }

    /// Sends chunk `wire` to the worker in `slot`; false, with nothing
    /// sent, when the request does not fit the worker's budget now.
    pub(super) fn send_chunk(&mut self, slot: usize, wire: u64) -> bool {
        // Back to a worker that still holds it, taken over from it once:
        // its copy is its own again, and nothing is written.
        if let Some(w) = self.slots[slot].worker.as_mut()
            && w.disowned.remove(&wire)
        {
            return true;
        }
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
            Ok(()) => worker.wrote(Some(wire), len),
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
        // A worker with a request half written is looked at again soon.
        let draining = self
            .slots
            .iter()
            .filter_map(|s| s.worker.as_ref())
            .any(|w| w.process.draining)
            .then(|| Instant::now() + DRAIN_POLL);
        let deadlines = self
            .slots
            .iter()
            .filter_map(|s| s.worker.as_ref())
            .filter_map(|w| self.deadline(w));
        // When a starting worker with chunks becomes one to steal from.
        let steals = self
            .slots
            .iter()
            .filter_map(|s| s.worker.as_ref())
            .filter(|w| !w.process.is_ready() && !w.in_flight.is_empty())
            .map(|w| w.process.life.spawned_at + STEAL_AFTER)
            .filter(|&at| at > Instant::now());
        let spawns = self.pending_spawns.iter().map(|&(_, at)| at);
        let looks = self
            .slots
            .iter()
            .filter_map(|s| s.worker.as_ref())
            .filter_map(next_look);
        deadlines
            .chain(steals)
            .chain(draining)
            .chain(spawns)
            .chain(looks)
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

    /// Writes out, as far as they go now, requests left half written.
    pub(super) fn drain(&mut self) {
        for worker in self.slots.iter_mut().filter_map(|s| s.worker.as_mut()) {
            if worker.process.draining {
                worker.process.drain();
            }
        }
    }

    /// Replaces every worker past its deadline.
    pub(super) fn expire(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            if let Some(worker) = &mut self.slots[slot].worker
                && next_look(worker).is_some_and(|at| at <= now)
            {
                worker.looked_at = Some(now);
                if worker.process.exited() {
                    // Gone, though its output has not ended: something it
                    // started holds it (a shell's `sleep &`, say). Reaping
                    // kills what is left of its process group.
                    self.lose(slot, Loss::Closed);
                    continue;
                }
            }
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

/// When a worker on a chunk is next looked at, to see whether its process
/// is still there ([`LIFE_LOOK`]).
fn next_look(worker: &Worker) -> Option<Instant> {
    let since = worker.busy_since?;
    Some(worker.looked_at.map_or(since, |at| at.max(since)) + LIFE_LOOK)
}

/// True for a worker still starting [`STEAL_AFTER`] after its spawn.
fn slow_to_start(w: &Worker, now: Instant) -> bool {
    !w.process.is_ready() && now >= w.process.life.spawned_at + STEAL_AFTER
}
