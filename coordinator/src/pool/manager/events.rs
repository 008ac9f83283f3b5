//! What the workers' reader threads report, and what the pool makes of it.

use super::*;
use fibpool_protocol::{ChunkPart, ChunkResult, ValuePiece};

impl Manager {
    pub(super) fn slot_of(&self, process: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.worker.as_ref().is_some_and(|w| w.process.id == process))
    }

    pub(super) fn on_event(&mut self, event: Event) {
        let process = match &event {
            Event::Response { worker, .. }
            | Event::Computed { worker, .. }
            | Event::Closed { worker, .. }
            | Event::Misbehaved { worker, .. } => *worker,
        };
        if let Some(slot) = self.slot_of(process) {
            return self.on_worker_event(slot, event);
        }
        if let Some(i) = self.retiring.iter().position(|w| w.process.id == process) {
            // A recycled worker: its output ends as it exits.
            if matches!(event, Event::Closed { .. } | Event::Misbehaved { .. }) {
                let mut worker = self.retiring.swap_remove(i);
                let _ = worker.process.reap(CLOSED_GRACE);
                self.retire(worker.stats(Some("recycled".to_owned())));
            }
            return;
        }
        if self.expected.contains(&process) {
            self.early.entry(process).or_default().push(event);
        }
        // Anything else is from a process already replaced: stale.
    }

    pub(super) fn on_worker_event(&mut self, slot: usize, event: Event) {
        match event {
            Event::Closed { error, .. } => match error {
                Some(source) if !source.is_disconnect() => {
                    let worker = self.worker(slot).name();
                    let error = PoolError::WorkerProtocol { worker, source };
                    self.lose(slot, Loss::Fault { error, chunk: None });
                }
                // A death, most likely: what the output ended in is told
                // beside how the process ended.
                torn => {
                    if let Some(e @ fibpool_protocol::Error::Truncated { .. }) = &torn {
                        self.worker(slot).torn = Some(e.to_string());
                    }
                    self.lose(slot, Loss::Closed)
                }
            },
            Event::Response { response, at, .. } => self.on_response(slot, response, at),
            Event::Computed {
                id,
                busy_ns,
                values,
                at,
                ..
            } => self.on_computed(slot, id, busy_ns, values, at),
            Event::Misbehaved { what, chunk, .. } => self.misbehaved(slot, what, chunk),
        }
    }

    pub(super) fn worker(&mut self, slot: usize) -> &mut Worker {
        self.slots[slot].worker.as_mut().expect("a live worker")
    }

    pub(super) fn misbehaved(&mut self, slot: usize, what: String, chunk: Option<u64>) {
        let worker = self.worker(slot).name();
        let error = PoolError::WorkerMisbehaved { worker, what };
        self.lose(slot, Loss::Fault { error, chunk });
    }

    pub(super) fn on_computed(
        &mut self,
        slot: usize,
        wire: u64,
        busy_ns: u64,
        values: Values,
        at: Instant,
    ) {
        let w = self.worker(slot);
        if !w.process.is_ready() {
            let what = format!("sent a result for chunk {wire} before its handshake");
            return self.misbehaved(slot, what, None);
        }
        // A worker computes its chunks in the order it was sent them: any
        // other answer is a fault, and would put values in the wrong place.
        if w.in_flight.first() != Some(&wire) {
            let what = if w.answered.contains(&wire) {
                format!("answered chunk {wire} twice")
            } else if w.in_flight.contains(&wire) {
                format!(
                    "answered chunk {wire} before chunk {}, which it was sent first",
                    w.in_flight[0]
                )
            } else {
                format!("answered chunk {wire}, which it was not given")
            };
            return self.misbehaved(slot, what, None);
        }
        w.in_flight.remove(0);
        w.read_chunk(wire);
        if w.answered.len() == ANSWERED_KEPT {
            w.answered.pop_front();
        }
        w.answered.push_back(wire);
        w.busy_since = (!w.in_flight.is_empty()).then_some(at);
        w.process.life.first_result.get_or_insert(at);
        // It computes: the slot's run of failures is over.
        self.slots[slot].fruitless = 0;
        self.slots[slot].quick = 0;
        let w = self.worker(slot);
        if w.disowned.remove(&wire) {
            // Another worker took this chunk over while this one started:
            // not counted, since the pool did not take it from here.
            return self.maybe_recycle(slot);
        }
        if self.warm_up_answer(slot, wire, &values) {
            // A warm-up chunk counts for nothing, but may be what a
            // worker due for recycling was still waiting on.
            return self.maybe_recycle(slot);
        }
        let w = self.worker(slot);
        w.chunks += 1;
        w.add_busy(busy_ns);
        match self.chunks.remove(&wire) {
            // Its batch is gone (cancelled, or failed): nothing to do.
            None => {}
            Some(issued) if values.len() as u64 != issued.plan.count => {
                let what = format!(
                    "returned {} values for chunk {wire} of {} indices",
                    values.len(),
                    issued.plan.count
                );
                self.chunks.insert(wire, issued);
                return self.misbehaved(slot, what, Some(wire));
            }
            Some(issued) => self.finish_chunk(issued, Ok(values)),
        }
        self.maybe_recycle(slot);
    }

    pub(super) fn on_response(&mut self, slot: usize, response: Response<'static>, at: Instant) {
        let w = self.worker(slot);
        match response {
            Response::Ready(hello) if !w.process.is_ready() => {
                // A remote worker is no process here: it is named by its
                // pid there.
                if w.process.life.host.is_some() {
                    w.process.remote_pid(hello.pid);
                }
                w.process.life.ready = Some((at, hello));
                // Chunks sent while it was starting: its task timeout runs
                // from now, not from their sending.
                if !w.in_flight.is_empty() {
                    w.busy_since = Some(at);
                }
            }
            Response::Ready(_) => self.misbehaved(slot, "sent a second handshake".into(), None),
            other if !w.process.is_ready() => {
                let what = format!("sent {} before its handshake", describe(&other));
                self.misbehaved(slot, what, None);
            }
            // The reader sends results as Event::Computed from the second
            // frame on, and a first frame is caught above, before the
            // handshake: an error, not a panic, should that ever change.
            Response::Computed(ChunkResult { id, .. })
            | Response::Part(ChunkPart { id, .. })
            | Response::Piece(ValuePiece { id, .. }) => {
                let what = format!("sent a result for chunk {id} outside the result path");
                self.misbehaved(slot, what, None);
            }
            Response::Failed(failure) => {
                let worker = w.name();
                let chunk = failure.chunk.filter(|id| w.in_flight.contains(id));
                let error = PoolError::WorkerFailed {
                    worker,
                    message: crate::pool::error::one_line(&failure.message),
                };
                self.lose(slot, Loss::Fault { error, chunk });
            }
            Response::Echo(reply) => {
                let what = format!("sent an echo (seq {}) it was not asked for", reply.seq);
                self.misbehaved(slot, what, None);
            }
            Response::Measured(m) if w.measuring > 0 && m.id == slot as u64 => {
                w.measuring -= 1;
                w.read_measure();
                w.add_busy(m.busy_ns);
                // Only a started ceiling has sent anything: an answer for one
                // that failed before is not this one's (a new one starts
                // once no worker has a measurement out).
                if let Some(ceiling) = &mut self.ceiling
                    && ceiling.started.is_some()
                {
                    ceiling.outstanding -= 1;
                }
                // Recycling waits for a worker's measurements too.
                self.maybe_recycle(slot);
            }
            Response::Measured(m) => {
                let what = format!("sent a measurement (id {}) it was not asked for", m.id);
                self.misbehaved(slot, what, None);
            }
        }
    }

    /// Retires a worker that has had its `max_tasks_per_child` chunks once
    /// it has answered them all, and starts its successor.
    pub(super) fn maybe_recycle(&mut self, slot: usize) {
        let Some(max) = self.config.max_tasks_per_child else {
            return;
        };
        let Some(worker) = &self.slots[slot].worker else {
            return;
        };
        if worker.assigned < max || !worker.in_flight.is_empty() || worker.measuring > 0 {
            return;
        }
        let mut worker = self.slots[slot].worker.take().expect("checked");
        worker.process.shutdown();
        self.retiring.push(worker);
        self.shared.count(|c| c.recycled += 1);
        self.pending_spawns.push((slot, Instant::now()));
    }
}
