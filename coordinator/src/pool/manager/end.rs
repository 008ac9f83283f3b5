//! Shutting down, and the manager's last act.

use super::*;

impl Manager {
    /// Once shutdown is asked for and no batch is left that can still make
    /// progress: tells every worker to finish (nothing here waits, so any
    /// thread may). True once they have been told.
    pub(super) fn tell_shutdown(&mut self) -> bool {
        if self.stopping.is_some() {
            return true;
        }
        let Some(waiters) = &self.shutdown else {
            return false;
        };
        if waiters.is_empty() || self.jobs.values().any(Entry::busy) {
            return false;
        }
        // Fed batches left are idle and take no more chunks: their callers
        // learn the pool is gone when they next ask.
        let idle: Vec<JobId> = self.jobs.keys().copied().collect();
        for id in idle {
            self.fail_job(id, PoolError::ShutDown);
        }
        let mut workers: Vec<(Worker, bool)> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.worker.take())
            .map(|w| {
                // Killed rather than told: a worker still on chunks of
                // batches that are gone (nobody wants what it computes, and
                // it is no fault of its own), and one that never started.
                // One that had already died (its end not yet handled) did
                // not die at shutdown: not blamed on it either, whichever
                // comes first.
                let unwanted =
                    !w.in_flight.is_empty() || !w.process.is_ready() || w.process.exited();
                (w, unwanted)
            })
            .collect();
        for (worker, unwanted) in &mut workers {
            if *unwanted {
                worker.process.kill();
            } else {
                worker.process.shutdown();
            }
        }
        self.stopping = Some((workers, Instant::now() + SHUTDOWN_GRACE));
        true
    }

    /// Once the workers are told: reaps them all within one grace period,
    /// and replies. True when the manager is done.
    pub(super) fn finish_shutdown(&mut self) -> bool {
        if !self.tell_shutdown() {
            return false;
        }
        let (mut workers, deadline) = self.stopping.take().expect("told");
        let waiters = self.shutdown.take().unwrap_or_default();
        let mut first_error = None;
        for (worker, killed) in &mut workers {
            let name = worker.name();
            let grace = deadline.saturating_duration_since(Instant::now());
            let killed = *killed;
            let error = match worker.process.reap(grace) {
                Ok(_) if killed => continue,
                Ok(status) if status.success() => continue,
                Ok(status) => PoolError::WorkerExited {
                    worker: name,
                    status: describe_status(status),
                    when: "at shutdown",
                },
                Err(source) => PoolError::Reap {
                    worker: name,
                    source,
                },
            };
            first_error.get_or_insert(error);
        }
        for mut worker in std::mem::take(&mut self.retiring) {
            let grace = deadline.saturating_duration_since(Instant::now());
            let _ = worker.process.reap(grace);
            self.retire(worker.stats(Some("recycled".to_owned())));
        }
        for (worker, _) in workers {
            self.retire(worker.stats(None));
        }
        self.publish_stats();
        for waiter in waiters {
            let _ = waiter.send(match &first_error {
                None => Ok(()),
                Some(e) => Err(e.clone()),
            });
        }
        self.exit = true;
        true
    }

    pub(super) fn publish_stats(&mut self) {
        let stats = self.stats();
        *self
            .shared
            .final_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(stats);
    }

    /// Kills and reaps every worker still running, fails what is left with
    /// `error`, and publishes the stats. The manager's last act.
    pub(super) fn finish(&mut self, error: PoolError, rx: Option<&Receiver<Msg>>) {
        self.exit = true;
        self.deliver();
        for worker in &mut self.retiring {
            worker.process.kill();
        }
        let stopping = self.stopping.take().map(|(ws, _)| ws).unwrap_or_default();
        let mut workers: Vec<Worker> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.worker.take())
            .chain(stopping.into_iter().map(|(w, _)| w))
            .collect();
        for worker in &mut workers {
            worker.process.kill();
        }
        for mut worker in workers {
            let _ = worker.process.reap(EXIT_GRACE);
            self.retire(worker.stats(Some("killed when the pool was dropped".to_owned())));
        }
        for mut worker in std::mem::take(&mut self.retiring) {
            let _ = worker.process.reap(EXIT_GRACE);
            self.retire(worker.stats(Some("recycled".to_owned())));
        }
        let ids: Vec<JobId> = self.jobs.keys().copied().collect();
        for id in ids {
            self.fail_job(id, error.clone());
        }
        for waiter in self.ready_waiters.drain(..) {
            let _ = waiter.send(Err(error.clone()));
        }
        if let Some(warm) = self.warm_up.take() {
            let _ = warm.reply.send(Err(error.clone()));
        }
        if let Some(ceiling) = self.ceiling.take() {
            let _ = ceiling.reply.send(Err(error.clone()));
        }
        if let Some(waiters) = self.shutdown.take() {
            for waiter in waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
        // Messages no one will read: a future in one fails (its job's drop),
        // a caller waiting for a reply hears the channel close.
        while let Some(msg) = rx.and_then(|rx| rx.try_recv().ok()) {
            drop(msg);
        }
        self.publish_stats();
        // The spawner threads go last: the workers they started are reaped.
        self.spawners = None;
    }
}
