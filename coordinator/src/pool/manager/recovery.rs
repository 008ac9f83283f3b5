//! Recovery: a lost worker's chunks sent again or failed, its successor
//! started, and the pool's end when no worker can be started.

use super::*;

impl Manager {
    /// A worker is lost: kill and reap it, fail what cannot heal, send its
    /// other chunks again, start its successor.
    pub(super) fn lose(&mut self, slot: usize, loss: Loss) {
        let mut worker = self.slots[slot].worker.take().expect("a live worker");
        let name = worker.name();
        let was_ready = worker.process.is_ready();
        if !matches!(loss, Loss::Closed) {
            worker.process.kill();
        }
        let status = worker.process.reap_noting_kill(CLOSED_GRACE);
        let before = if was_ready {
            ""
        } else {
            " before its handshake"
        };
        let cause = match &loss {
            Loss::Closed => match &status {
                Ok((_, true)) => format!(
                    "closed its output{before} and had not exited {CLOSED_GRACE:?} later, so was killed"
                ),
                // A kill mid-write tears a frame as a matter of course: the
                // torn frame is told only of a worker that exited by itself.
                Ok((status, false)) => {
                    match worker.torn.as_ref().filter(|_| status.code().is_some()) {
                        Some(torn) => format!(
                            "{}{before}, its output ending in a torn frame ({torn})",
                            describe_status(*status)
                        ),
                        None => format!("{}{before}", describe_status(*status)),
                    }
                }
                Err(e) => format!("could not be reaped ({e}){before}"),
            },
            Loss::TaskTimeout => format!(
                "spent longer than the task timeout ({:?}) on a chunk",
                self.config.task_timeout.unwrap_or_default()
            ),
            Loss::HandshakeTimeout => format!(
                "did not complete its handshake within {:?}",
                self.config.handshake_timeout
            ),
            Loss::Fault { error, .. } => fault_cause(error, before),
        };
        self.retire(worker.stats(Some(cause.clone())));
        let timeout = self.config.handshake_timeout;
        self.probe_lost(slot, || loss_error(name, &loss, &cause, was_ready, timeout));

        // Nothing at all in flight (not even chunks of batches gone): it was
        // idle, and what ended it was not a chunk.
        let idle = worker.in_flight.is_empty();
        let young = worker
            .process
            .life
            .ready_at()
            .is_none_or(|ready| ready.elapsed() < FRUITLESS_WINDOW);
        // The chunk it was on (its oldest, as it computes in order), if it
        // is still wanted: a chunk of a batch gone puts no blame on the
        // next one, which the worker never began.
        let current = worker
            .in_flight
            .first()
            .copied()
            .filter(|id| self.chunks.contains_key(id));
        // Chunks it held that are still wanted and not taken over by
        // another worker (see `steal`).
        let mut held = std::mem::take(&mut worker.in_flight);
        held.retain(|id| self.chunks.contains_key(id) && !worker.disowned.contains(id));
        let timed_out = matches!(loss, Loss::TaskTimeout);
        let closed = matches!(loss, Loss::Closed);
        let unanswered = matches!(loss, Loss::HandshakeTimeout);
        // Decided first, failed last: whoever waits on a failed batch may
        // look at the counts at once.
        let mut failed = None;
        if was_ready {
            match loss {
                Loss::Fault { error, chunk } => {
                    if let Some(wire) = chunk.or(current) {
                        // The batch hears which of its chunks the fault took.
                        let error = match self.chunks.get(&wire) {
                            Some(issued) => PoolError::ChunkFailed {
                                chunk: issued.plan.id,
                                indices: issued.plan.describe(),
                                source: Box::new(error),
                            },
                            None => error,
                        };
                        failed = Some((wire, error));
                    }
                }
                // A worker killed by its fork server's death is no
                // chunk's doing: its chunks are sent again, uncharged.
                Loss::Closed if worker.process.collateral() => {}
                Loss::Closed | Loss::TaskTimeout => {
                    if let Some(oldest) = current {
                        let issued = self.chunks.get_mut(&oldest).expect("checked live");
                        issued.failures += 1;
                        if issued.failures >= self.config.retries {
                            let error = PoolError::PoisonChunk {
                                chunk: issued.plan.id,
                                indices: issued.plan.describe(),
                                failures: issued.failures,
                                worker: name,
                                cause: cause.clone(),
                            };
                            failed = Some((oldest, error));
                        }
                    }
                }
                Loss::HandshakeTimeout => {}
            }
        }
        // A loss the pool cannot lay on any chunk, soon after the start: the
        // worker failed by itself, unless something outside killed it.
        // Deaths on chunks are the chunks' (poison, in the end); an idle
        // worker stopped after a while was stopped.
        let quick = !was_ready || (idle && young && worker.chunks == 0 && !timed_out);
        let from_outside = matches!(&status, Ok((s, false)) if killed_from_outside(*s)) && closed;
        let fruitless = quick && !(was_ready && from_outside);
        let state = &mut self.slots[slot];
        state.quick = if quick { state.quick + 1 } else { 0 };
        let mut give_up = None;
        if unanswered {
            // A worker that never answers is not healed by starting another
            // (a hung login, a command that is not a worker): its slot is
            // given up after one deadline, not `retries` of them.
            self.slots[slot].fruitless += 1;
            give_up = Some(PoolError::HandshakeTimeout {
                worker: name,
                timeout: self.config.handshake_timeout,
            });
        } else if fruitless {
            let failures = &mut self.slots[slot].fruitless;
            *failures += 1;
            if *failures >= self.config.retries {
                let (cause, what) = if was_ready {
                    (
                        format!("{cause} before answering a chunk"),
                        "failed before answering a chunk",
                    )
                } else {
                    (cause.clone(), "failed to start")
                };
                give_up = Some(PoolError::StartFailed {
                    worker: name,
                    attempts: *failures,
                    cause,
                    what,
                });
            }
        }
        if let Some((wire, _)) = &failed {
            held.retain(|id| id != wire);
        }
        let place = self.config.places[slot];
        // A worker the signal handler killed (stop_all): this process is
        // about to exit, and computes nothing more, so nothing is retried.
        let stopping = crate::pool::registry::stopping();
        for &id in held.iter().rev().filter(|_| !stopping) {
            if let Some(issued) = self.chunks.get_mut(&id) {
                issued.lost_on = Some(place);
            }
            self.retry.push_front(id);
        }
        match give_up {
            Some(error) => self.give_up(slot, error),
            // A worker the signal handler killed is no restart either.
            None if self.exit || stopping => {}
            None => {
                self.shared.count(|c| c.worker_restarts += 1);
                let at = Instant::now() + self.backoff(slot);
                self.pending_spawns.push((slot, at));
            }
        }
        if let Some((wire, error)) = failed {
            self.fail_chunk(wire, error);
        }
    }

    /// A spawn call failed for `slot`.
    pub(super) fn start_failed(&mut self, slot: usize, error: PoolError) {
        self.probe_lost(slot, || error.clone());
        let failures = &mut self.slots[slot].fruitless;
        *failures += 1;
        if *failures >= self.config.retries {
            self.give_up(slot, error);
        } else {
            let at = Instant::now() + self.backoff(slot);
            self.pending_spawns.push((slot, at));
        }
    }

    /// How long to wait before starting the next worker in `slot`: nothing
    /// after a worker that did something, then 0.1 s, 0.2 s, ... up to 1.6 s.
    fn backoff(&self, slot: usize) -> Duration {
        let state = &self.slots[slot];
        match state.quick.max(state.fruitless) {
            0 => Duration::ZERO,
            n => RESPAWN_BACKOFF.saturating_mul(1 << (n - 1).min(4)),
        }
    }

    pub(super) fn respawn(&mut self, slot: usize) {
        if self.slots[slot].given_up || self.slots[slot].worker.is_some() {
            return;
        }
        let id = self.next_process;
        self.next_process += 1;
        match self.spawn(slot, id) {
            Ok(process) => self.slots[slot].worker = Some(Worker::new(process)),
            Err(error) => self.start_failed(slot, error),
        }
    }

    /// No more workers in `slot`; when no slot has one, the pool is broken.
    pub(super) fn give_up(&mut self, slot: usize, error: PoolError) {
        self.slots[slot].given_up = true;
        if self.slots.iter().all(|s| s.given_up) {
            self.break_pool(error);
        }
    }

    /// The pool can no longer compute: every batch fails, and so does every
    /// later call.
    pub(super) fn break_pool(&mut self, cause: PoolError) {
        let cause = self.shared.broken.get_or_init(|| Arc::new(cause)).clone();
        let broken = || PoolError::Broken(cause.clone());
        let ids: Vec<JobId> = self.jobs.keys().copied().collect();
        for id in ids {
            self.fail_job(id, broken());
        }
        for waiter in self.ready_waiters.drain(..) {
            let _ = waiter.send(Err(broken()));
        }
        if let Some(warm) = self.warm_up.take() {
            let _ = warm.reply.send(Err(broken()));
        }
        if let Some(ceiling) = self.ceiling.take() {
            let _ = ceiling.reply.send(Err(broken()));
        }
    }

    pub(super) fn retire(&mut self, stats: WorkerStats) {
        if self.retired.len() == RETIRED_KEPT {
            self.retired.pop_front();
            self.shared.count(|c| c.stats_dropped += 1);
        }
        self.retired.push_back(stats);
    }

    pub(super) fn stats(&self) -> Vec<WorkerStats> {
        let mut stats: Vec<WorkerStats> = self.retired.iter().cloned().collect();
        stats.extend(
            self.retiring
                .iter()
                .map(|w| w.stats(Some("recycled".to_owned()))),
        );
        stats.extend(
            self.slots
                .iter()
                .filter_map(|s| s.worker.as_ref())
                .chain(
                    self.stopping
                        .iter()
                        .flat_map(|(ws, _)| ws.iter().map(|(w, _)| w)),
                )
                .map(|w| w.stats(None)),
        );
        stats
    }
}

/// True for an end that a signal from outside the worker brings about (an
/// administrator, the OOM killer), rather than the worker's own exit or crash.
fn killed_from_outside(status: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    matches!(
        status.signal(),
        Some(libc::SIGKILL | libc::SIGTERM | libc::SIGINT | libc::SIGHUP | libc::SIGQUIT)
    )
}
