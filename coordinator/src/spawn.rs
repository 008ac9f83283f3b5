//! Starting a pool's workers, from the calling thread or from several at once.

use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use crate::WorkerCommand;
use crate::child::Transport;
use crate::error::PoolError;
use crate::process::{Event, WorkerProcess};

/// Spawns `n` workers from `threads` threads (the calling one when 1).
pub(crate) fn spawn_all(
    command: &WorkerCommand,
    transport: Transport,
    n: usize,
    threads: usize,
    events: &Sender<Event>,
) -> Result<(Vec<WorkerProcess>, Spawners), PoolError> {
    let threads = threads.clamp(1, n);
    let spawn =
        |slot: usize| WorkerProcess::spawn(command, transport, slot, slot as u64, events.clone());
    if threads == 1 {
        let processes = (0..n).map(spawn).collect::<Result<_, _>>()?;
        return Ok((processes, Spawners::default()));
    }
    let (done, spawned) = mpsc::channel();
    let mut spawners = Spawners::default();
    for first in 0..threads {
        let (release, parked) = mpsc::channel::<()>();
        let (command, events, done) = (command.clone(), events.clone(), done.clone());
        let thread = std::thread::Builder::new()
            .name(format!("fibpool-spawner-{first}"))
            .spawn(move || {
                for slot in (first..n).step_by(threads) {
                    let process = WorkerProcess::spawn(
                        &command,
                        transport,
                        slot,
                        slot as u64,
                        events.clone(),
                    );
                    if done.send(process).is_err() {
                        return;
                    }
                }
                drop(done);
                // Returns when the pool drops the sender.
                let _ = parked.recv();
            })
            .map_err(|source| PoolError::Spawn {
                command: "a spawner thread".to_owned(),
                source,
            })?;
        spawners.release.push(release);
        spawners.threads.push(thread);
    }
    drop(done);
    let mut processes = spawned.iter().collect::<Result<Vec<_>, _>>()?;
    processes.sort_by_key(|p| p.name.slot);
    Ok((processes, spawners))
}

/// Threads that spawned workers in parallel, parked until the pool is done.
#[derive(Default)]
pub(crate) struct Spawners {
    release: Vec<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Spawners {
    fn drop(&mut self) {
        self.release.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
