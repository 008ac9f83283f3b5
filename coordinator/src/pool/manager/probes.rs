//! What measurement tools ask of the pool ([`crate::pool::probe`]).

use super::*;

impl Manager {
    pub(super) fn probe(&mut self, call: ProbeCall) {
        let broken = self.shared.broken.get().cloned();
        match call {
            ProbeCall::WaitReady(reply) => match broken {
                Some(cause) => drop(reply.send(Err(PoolError::Broken(cause)))),
                None => self.ready_waiters.push(reply),
            },
            ProbeCall::WarmUp(reply) => match broken {
                Some(cause) => drop(reply.send(Err(PoolError::Broken(cause)))),
                None if self.warm_up.is_some() => drop(reply.send(Err(one_at_a_time("warm-up")))),
                None => {
                    let n = self.slots.len();
                    self.warm_up = Some(WarmUp {
                        reply,
                        sent: vec![None; n],
                        answered: vec![false; n],
                    });
                }
            },
            ProbeCall::Ceiling {
                tasks,
                encoding,
                reply,
            } => match broken {
                Some(cause) => drop(reply.send(Err(PoolError::Broken(cause)))),
                None if self.ceiling.is_some() => drop(reply.send(Err(one_at_a_time("ceiling")))),
                None => {
                    self.ceiling = Some(Ceiling {
                        reply,
                        tasks,
                        encoding,
                        started: None,
                        shares: Vec::new(),
                        outstanding: 0,
                    })
                }
            },
            ProbeCall::ReadySeconds(reply) => {
                let _ = reply.send(self.ready_seconds());
            }
            ProbeCall::ReadyAt(reply) => {
                let at = self
                    .ready_seconds()
                    .map(|s| self.started + Duration::from_secs_f64(s));
                let _ = reply.send(at);
            }
            ProbeCall::ServerStartSeconds(reply) => {
                let start = self
                    .config
                    .launchers
                    .iter()
                    .find_map(|launcher| launcher.server_start());
                let _ = reply.send(start.map(|d| d.as_secs_f64()));
            }
        }
    }

    /// From the first spawn until the last worker was ready, once all are.
    pub(super) fn ready_seconds(&self) -> Option<f64> {
        let mut last = self.started;
        for slot in &self.slots {
            last = last.max(slot.worker.as_ref()?.process.life.ready_at()?);
        }
        Some((last - self.started).as_secs_f64())
    }

    pub(super) fn all_ready(&self) -> bool {
        self.slots
            .iter()
            .filter(|s| !s.given_up)
            .all(|s| s.worker.as_ref().is_some_and(|w| w.process.is_ready()))
    }

    /// Moves the probes on: replies when done, sends what became possible.
    pub(super) fn progress_probes(&mut self) {
        if !self.ready_waiters.is_empty() && self.all_ready() {
            for waiter in self.ready_waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
        }
        self.progress_warm_up();
        self.progress_ceiling();
    }

    /// Sends each worker, as soon as it is ready, one tiny chunk of its own.
    pub(super) fn progress_warm_up(&mut self) {
        let Some(warm) = &mut self.warm_up else {
            return;
        };
        for (slot, state) in self.slots.iter_mut().enumerate() {
            let Some(worker) = &mut state.worker else {
                continue;
            };
            if warm.sent[slot].is_some() || !worker.process.is_ready() || worker.process.draining {
                continue;
            }
            let wire = self.next_chunk;
            self.next_chunk += 1;
            warm.sent[slot] = Some(wire);
            if worker.in_flight.is_empty() {
                worker.busy_since = Some(Instant::now());
            }
            worker.in_flight.push(wire);
            let request = Request::Compute(Chunk {
                id: wire,
                encoding: Encoding::Raw,
                runs: vec![Run {
                    start: WARM_UP_INDEX,
                    len: 1,
                }],
            });
            if let Err(e) = worker.process.send(&request)
                && !e.is_disconnect()
            {
                worker.process.kill();
            }
        }
        if warm.answered.iter().all(|&a| a) {
            let warm = self.warm_up.take().expect("present");
            let _ = warm.reply.send(Ok(()));
        }
    }

    /// True when `wire` was a warm-up chunk; checks its answer.
    pub(super) fn warm_up_answer(&mut self, slot: usize, wire: u64, values: &Values) -> bool {
        let Some(warm) = &mut self.warm_up else {
            return false;
        };
        if warm.sent[slot] != Some(wire) {
            return false;
        }
        warm.answered[slot] = true;
        let answer: Vec<Option<&[u8]>> = (0..values.len()).map(|i| values.get(i)).collect();
        if answer != [Some(&[55u8][..])] {
            let warm = self.warm_up.take().expect("present");
            let worker = self.worker(slot).name();
            let _ = warm.reply.send(Err(PoolError::WorkerMisbehaved {
                worker,
                what: format!("answered F({WARM_UP_INDEX}) with the values {answer:?}"),
            }));
        }
        true
    }

    /// Sends every worker its share once all are ready and idle, a piece at
    /// a time as its budget allows, and replies once every piece is measured.
    pub(super) fn progress_ceiling(&mut self) {
        let Some(ceiling) = &mut self.ceiling else {
            return;
        };
        if ceiling.started.is_none() {
            let live: Vec<usize> = (0..self.slots.len())
                .filter(|&s| !self.slots[s].given_up)
                .collect();
            let idle = live.iter().all(|&s| {
                self.slots[s].worker.as_ref().is_some_and(|w| {
                    w.process.is_ready()
                        && w.in_flight.is_empty()
                        && w.measuring == 0
                        && !w.process.draining
                })
            });
            if !idle || live.is_empty() {
                return;
            }
            let shares = ceiling.tasks.split_by_cost(live.len());
            ceiling.shares = live
                .into_iter()
                .zip(shares)
                .map(|(slot, share)| (slot, share, RunsAt::default()))
                .collect();
            ceiling.started = Some(Instant::now());
        }
        let encoding = ceiling.encoding;
        let mut failure = None;
        let mut left = false;
        for (slot, share, at) in &mut ceiling.shares {
            let Some(worker) = self.slots[*slot].worker.as_mut() else {
                continue;
            };
            loop {
                let mut probe = at.clone();
                let runs = share.next_runs(&mut probe, MEASURE_RUNS);
                if runs.is_empty() {
                    break;
                }
                let request = Request::Measure(Chunk {
                    id: *slot as u64,
                    encoding,
                    runs,
                });
                let len = fibpool_protocol::codec::encoded_len(&request).unwrap_or(usize::MAX);
                if worker.process.draining || !worker.fits(len) {
                    left = true;
                    break;
                }
                *at = probe;
                match worker.process.send(&request) {
                    Ok(()) => {
                        worker.wrote(None, len);
                        worker.measuring += 1;
                        ceiling.outstanding += 1;
                    }
                    Err(e) if e.is_disconnect() => {}
                    Err(source) => {
                        let Request::Measure(chunk) = request else {
                            unreachable!()
                        };
                        failure.get_or_insert(PoolError::Request {
                            chunk: *slot as u64,
                            indices: crate::pool::tasks::describe_runs(&chunk.runs),
                            source,
                        });
                        break;
                    }
                }
            }
        }
        let done = ceiling.outstanding == 0 && !left;
        if let Some(error) = failure {
            let ceiling = self.ceiling.take().expect("present");
            let _ = ceiling.reply.send(Err(error));
        } else if done {
            let ceiling = self.ceiling.take().expect("present");
            let started = ceiling.started.expect("started");
            let _ = ceiling.reply.send(Ok(started.elapsed().as_secs_f64()));
        }
    }

    /// A worker was lost: probes waiting on it fail.
    pub(super) fn probe_lost(&mut self, slot: usize, error: impl Fn() -> PoolError) {
        if self.warm_up.as_ref().is_some_and(|w| !w.answered[slot]) {
            let warm = self.warm_up.take().expect("present");
            let _ = warm.reply.send(Err(error()));
        }
        if self.ceiling.as_ref().is_some_and(|c| c.started.is_some()) {
            let ceiling = self.ceiling.take().expect("present");
            let _ = ceiling.reply.send(Err(error()));
            // The other workers' answers to it still come, and are taken as
            // they do (their `measuring` counts them down).
        }
    }
}

fn one_at_a_time(what: &str) -> PoolError {
    PoolError::Config(format!("one {what} at a time: another is under way"))
}
