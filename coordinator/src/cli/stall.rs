//! The stall rule of `fibpool run`. With no `--task-timeout` a run waits
//! for its workers however long a chunk takes (F(3x10^8) in decimal takes
//! about 10 s, F(1.9x10^10) minutes), so no default deadline can tell a slow chunk
//! from a lost one. A worker stopped by a signal (SIGSTOP, SIGTSTP: state
//! `T` in /proc) is neither: it will not answer until it is continued.
//! When the run has delivered nothing for `--stall-warning` seconds, each
//! stopped worker, fork server or ssh master is named on stderr, once per
//! stall, and the run waits on.
//!
//! The signal thread keeps the time ([`super::stop_on_signals`] polls with
//! [`next_look`] as its timeout and calls [`look`]): a run starts no thread
//! for it (one measured 71-76 us to start and join here).

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use fibpool_coordinator::pool::registry;

/// The default `--stall-warning`, in seconds.
pub const DEFAULT_STALL_WARNING: &str = "10";

/// The run being watched, if any.
static WATCHED: Mutex<Option<Watched>> = Mutex::new(None);
/// Wakes the signal thread when a watch begins.
static WAKER: OnceLock<UnixStream> = OnceLock::new();

struct Watched {
    done: Arc<AtomicU64>,
    after: Duration,
    look_every: Duration,
    last: u64,
    since: Instant,
    next_look: Instant,
    warned: HashSet<u32>,
}

pub(super) fn set_waker(socket: UnixStream) {
    let _ = WAKER.set(socket);
}

fn watched() -> std::sync::MutexGuard<'static, Option<Watched>> {
    WATCHED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Watches a run while it lives.
pub struct StallWatch(());

impl StallWatch {
    /// Watches `done` (values delivered) and, past `after` without one,
    /// this process's workers (from the registry: no call into the pool,
    /// so the signal thread never waits on it).
    pub fn start(done: Arc<AtomicU64>, after: Duration) -> StallWatch {
        let look_every = (after / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let now = Instant::now();
        *watched() = Some(Watched {
            last: done.load(Ordering::Relaxed),
            done,
            after,
            look_every,
            since: now,
            next_look: now + look_every,
            warned: HashSet::new(),
        });
        if let Some(mut waker) = WAKER.get() {
            let _ = waker.write(&[1]);
        }
        StallWatch(())
    }
}

impl Drop for StallWatch {
    fn drop(&mut self) {
        *watched() = None;
    }
}

/// How long until the next look, while a run is watched.
pub(super) fn next_look() -> Option<Duration> {
    let watched = watched();
    let next = watched.as_ref()?.next_look;
    Some(next.saturating_duration_since(Instant::now()))
}

/// Looks at the watched run, if it is time to.
pub(super) fn look() {
    let mut guard = watched();
    let Some(w) = guard.as_mut() else { return };
    let now = Instant::now();
    if now < w.next_look {
        return;
    }
    w.next_look = now + w.look_every;
    let done = w.done.load(Ordering::Relaxed);
    if done != w.last {
        (w.last, w.since) = (done, now);
        w.warned.clear();
        return;
    }
    if w.since.elapsed() < w.after {
        return;
    }
    let mut lines = String::new();
    for pid in registry::pids() {
        if is_stopped(pid) && w.warned.insert(pid) {
            lines += &format!(
                "fibpool: warning: no value for {:.1} s: worker process {pid} is stopped; \
                 'kill -CONT {pid}' resumes it (--task-timeout would replace it)\n",
                w.since.elapsed().as_secs_f64(),
            );
        }
    }
    // A stopped fork server holds every worker still to start; a stopped
    // ssh master, every worker on its host.
    let servers = registry::server_pids()
        .into_iter()
        .map(|p| (p, "a fork server"));
    let masters = registry::master_pids()
        .into_iter()
        .map(|p| (p, "an ssh master"));
    for (pid, what) in servers.chain(masters) {
        if is_stopped(pid) && w.warned.insert(pid) {
            lines += &format!(
                "fibpool: warning: no value for {:.1} s: process {pid}, {what} of the pool, \
                 is stopped; 'kill -CONT {pid}' resumes it\n",
                w.since.elapsed().as_secs_f64(),
            );
        }
    }
    drop(guard);
    if !lines.is_empty() {
        // Not on the signal thread: a stderr nobody reads would hold it,
        // and with it Ctrl-C. Warnings are rare; so are these threads.
        let _ = std::thread::Builder::new()
            .name("fibpool-warning".into())
            .spawn(move || {
                let _ = std::io::stderr().lock().write_all(lines.as_bytes());
            });
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
