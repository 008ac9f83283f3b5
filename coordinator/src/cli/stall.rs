//! The stall rule of `fibpool run`. With no `--task-timeout` a run waits
//! for its workers however long a chunk takes (a value near F(3x10^8)
//! takes tens of seconds), so no default deadline can tell a slow chunk
//! from a lost one. A worker stopped by a signal (SIGSTOP, SIGTSTP: state
//! `T` in /proc) is neither: it will not answer until it is continued.
//! When the run has delivered nothing for `--stall-warning` seconds, each
//! stopped worker is named on stderr, once per stall, and the run waits on.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fibpool_coordinator::Pool;

/// The default `--stall-warning`, in seconds.
pub const DEFAULT_STALL_WARNING: &str = "10";

/// Watches a run while it lives.
pub struct StallWatch {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl StallWatch {
    /// Watches `done` (values delivered) and, past `after` without one,
    /// the pool's workers.
    pub fn start(pool: Arc<Pool>, done: Arc<AtomicU64>, after: Duration) -> StallWatch {
        let (stop, stopped) = mpsc::channel::<()>();
        let look_every = (after / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let thread = std::thread::Builder::new()
            .name("fibpool-stall".into())
            .spawn(move || {
                let (mut last, mut since) = (done.load(Ordering::Relaxed), Instant::now());
                let mut warned = HashSet::new();
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(look_every) {
                    let now = done.load(Ordering::Relaxed);
                    if now != last {
                        (last, since) = (now, Instant::now());
                        warned.clear();
                        continue;
                    }
                    if since.elapsed() < after {
                        continue;
                    }
                    for w in pool.worker_stats() {
                        if w.ended.is_none() && is_stopped(w.pid) && warned.insert(w.pid) {
                            super::say(&format!(
                                "fibpool: warning: no value for {:.1} s: worker {} (pid {}) is stopped; \
                                 'kill -CONT {}' resumes it (--task-timeout would replace it)",
                                since.elapsed().as_secs_f64(),
                                w.slot,
                                w.pid,
                                w.pid
                            ));
                        }
                    }
                }
            })
            .ok();
        StallWatch {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for StallWatch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// True if /proc says `pid` is stopped by a signal (or traced and stopped).
fn is_stopped(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which may hold ')' itself.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    matches!(state, Some("T" | "t"))
}
