//! Every worker process this program has started and not yet reaped, across
//! all its pools, so that a signal handler can stop them all whatever the
//! other threads are doing. A program using [`crate::Pool`] that handles
//! SIGINT or SIGTERM itself calls [`stop_all`] from its handler thread, then
//! exits; the `fibpool` binary does.
//!
//! Starting a child takes a shared gate, so several threads spawn at once;
//! [`stop_all`] takes it exclusively, so it either sees a child being
//! started or stops it from being started.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

struct Live {
    /// Children of this process, each leading its own process group.
    pids: Vec<u32>,
    /// Fork servers: children leading their own groups, not workers, whose
    /// own children are.
    servers: Vec<u32>,
    /// Ssh masters: children leading their own groups whose children (if
    /// any: an ssh wrapper's) are not workers.
    masters: Vec<u32>,
    /// Other programs run to their end (the Python peers), each leading
    /// its own group: stopped with it, never counted.
    helpers: Vec<u32>,
    /// Workers in another listed process's group (a fork server's), which
    /// that process reaps: stopped with their group, never signalled by pid.
    members: Vec<u32>,
    /// Private directories of the pool's (ssh control sockets), removed
    /// once their processes are killed.
    dirs: Vec<std::path::PathBuf>,
    /// Set by [`stop_all`]: no child may be started any more.
    stopping: bool,
}

/// Held shared while a child is started, exclusively by [`stop_all`].
static GATE: RwLock<()> = RwLock::new(());

static LIVE: Mutex<Live> = Mutex::new(Live {
    pids: Vec::new(),
    servers: Vec::new(),
    masters: Vec::new(),
    helpers: Vec::new(),
    members: Vec::new(),
    dirs: Vec::new(),
    stopping: false,
});

fn live() -> MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts a child with `start`, which returns the child and its pid, and
/// lists the pid before the gate opens again. A thread that arrives after
/// [`stop_all`] never returns: the process is about to exit.
pub(crate) fn start<T, E>(start: impl FnOnce() -> Result<(T, u32), E>) -> Result<T, E> {
    start_into(|live| &mut live.pids, start)
}

/// As [`start`], for a fork server: stopped as a worker is, not counted as
/// one (its children are).
pub(crate) fn start_server<T, E>(start: impl FnOnce() -> Result<(T, u32), E>) -> Result<T, E> {
    start_into(|live| &mut live.servers, start)
}

/// As [`start`], for an ssh master: stopped as a worker is, and neither it
/// nor its children counted as workers.
pub(crate) fn start_master<T, E>(start: impl FnOnce() -> Result<(T, u32), E>) -> Result<T, E> {
    start_into(|live| &mut live.masters, start)
}

fn start_into<T, E>(
    list: impl FnOnce(&mut Live) -> &mut Vec<u32>,
    start: impl FnOnce() -> Result<(T, u32), E>,
) -> Result<T, E> {
    let _gate = GATE.read().unwrap_or_else(PoisonError::into_inner);
    if live().stopping {
        drop(_gate);
        wait_for_exit();
    }
    let (child, pid) = start()?;
    list(&mut live()).push(pid);
    Ok(child)
}

/// Runs a helper program (a Python peer, a timed `fibpool run`) to its
/// end, its output gathered: in a process group of its own, listed so that
/// [`stop_all`] kills its group (its own children with it) without
/// counting it as a worker, and with `die_with_us` killed when the calling
/// thread ends (PR_SET_PDEATHSIG: a hook before exec, which makes the
/// spawn a fork rather than a vfork).
pub fn output_of_helper(
    mut cmd: std::process::Command,
    die_with_us: bool,
) -> std::io::Result<std::process::Output> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    if die_with_us {
        super::ssh::die_with_spawner(&mut cmd);
    }
    let child = start_into(
        |live| &mut live.helpers,
        || {
            let child = cmd.spawn()?;
            let pid = child.id();
            Ok::<_, std::io::Error>((child, pid))
        },
    )?;
    let pid = child.id();
    let out = child.wait_with_output();
    forget(pid);
    out
}

/// Lists a worker in a listed process's group (a fork of a fork server),
/// for [`pids`]; it is stopped with that group. No gate is needed: a stop
/// that comes first has killed the group, this worker with it.
pub(crate) fn list_member(pid: u32) {
    let mut live = live();
    if !live.stopping {
        live.members.push(pid);
    }
}

/// Lists a directory for [`stop_all`] to remove; [`forget_dir`] when
/// removed otherwise.
pub(crate) fn list_dir(dir: &std::path::Path) {
    live().dirs.push(dir.to_owned());
}

pub(crate) fn forget_dir(dir: &std::path::Path) {
    live().dirs.retain(|d| d != dir);
}

/// Takes `pid` off the list: it was reaped, and may be reused.
pub(crate) fn forget(pid: u32) {
    let live = &mut *live();
    for list in [
        &mut live.pids,
        &mut live.servers,
        &mut live.masters,
        &mut live.helpers,
        &mut live.members,
    ] {
        list.retain(|&p| p != pid);
    }
}

/// The pids of every live worker, spawned or forked (not the fork servers),
/// in the order they were started.
pub fn pids() -> Vec<u32> {
    let live = live();
    live.pids.iter().chain(&live.members).copied().collect()
}

/// The fork servers listed, for a look at them.
pub fn server_pids() -> Vec<u32> {
    live().servers.clone()
}

/// The ssh masters listed, for a look at them.
pub fn master_pids() -> Vec<u32> {
    live().masters.clone()
}

/// True once [`stop_all`] has run: the process is about to exit.
pub fn stopping() -> bool {
    live().stopping
}

/// Blocks a thread for good while the thread that called [`stop_all`] exits
/// the process, so that no other outcome (an error, a new worker) races it.
pub fn wait_for_exit() -> ! {
    loop {
        std::thread::park();
    }
}

/// Kills every live child (SIGKILL to its process group, which takes a fork
/// server's workers too), reaps them all, and makes any thread that tries
/// to start another wait for the process to exit. Returns how many workers
/// that stopped (a fork server's included, the server not). For a signal handler
/// thread that exits the process right after.
pub fn stop_all() -> usize {
    let _gate = GATE.write().unwrap_or_else(PoisonError::into_inner);
    let (workers, servers, masters, members, dirs) = {
        let mut live = live();
        live.stopping = true;
        let mut masters = std::mem::take(&mut live.masters);
        masters.append(&mut live.helpers);
        (
            std::mem::take(&mut live.pids),
            std::mem::take(&mut live.servers),
            masters,
            std::mem::take(&mut live.members),
            std::mem::take(&mut live.dirs),
        )
    };
    let pids: Vec<u32> = workers
        .iter()
        .chain(&masters)
        .chain(&servers)
        .copied()
        .collect();
    // A server's workers, counted before they die: those it has forked but
    // not yet reported are not listed yet.
    let forked = servers
        .iter()
        .map(|&server| children(server))
        .sum::<Option<usize>>()
        .unwrap_or(members.len());
    for &pid in &pids {
        // SAFETY: kill(2) on process groups whose leaders are our unreaped children.
        unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
    }
    // Servers first: once one is reaped, its workers, killed with its
    // group, are this process's (a subreaper's) to reap.
    for &pid in pids.iter().rev().chain(&members) {
        let mut status = 0;
        // SAFETY: waitpid on our own child; ECHILD if another thread reaped
        // it first, or for a worker its server reaped before it died.
        unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    }
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
    workers.len() + forked
}

/// How many workers `pid` (a single-threaded fork server) has, from /proc:
/// its children but its spare.
fn children(pid: u32) -> Option<usize> {
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    let spare = fibpool_worker::SPARE_NAME.to_bytes();
    let is_spare = |child: &str| {
        std::fs::read(format!("/proc/{child}/comm"))
            .is_ok_and(|comm| comm.trim_ascii_end() == spare)
    };
    Some(list.split_whitespace().filter(|c| !is_spare(c)).count())
}

#[cfg(test)]
pub(crate) fn listed(pid: u32) -> bool {
    let live = live();
    [
        &live.pids,
        &live.servers,
        &live.masters,
        &live.helpers,
        &live.members,
    ]
    .into_iter()
    .any(|list| list.contains(&pid))
}
