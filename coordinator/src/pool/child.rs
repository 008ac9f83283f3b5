//! A started worker process and the guard that owns it: an `OwnedChild`
//! kills and reaps its process when dropped, so no path leaves one behind,
//! and it never signals a pid after reaping it (the pid may belong to
//! someone else by then).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use super::registry;

/// A worker process, however it was started: what the pool needs to stop it
/// and learn how it ended. A launcher that does not spawn children itself
/// (a fork server, say) brings its own.
pub(crate) trait Process: Send + fmt::Debug {
    fn pid(&self) -> u32;
    /// SIGKILL to the process and everything in its process group.
    fn kill(&mut self);
    /// Waits up to `timeout` for the exit; reaps it if it came.
    fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>>;
    /// What kills it from another thread, as [`Process::kill`] does.
    fn killer(&self) -> io::Result<Killer>;

    /// For a worker on another host: its pid there, from its handshake, so
    /// that killing it can reach it.
    fn remote_pid(&mut self, _pid: u32) {}

    /// Whether it ended because what started it did (a forked worker whose
    /// fork server died): no chunk of its is to blame.
    fn collateral(&self) -> bool {
        false
    }

    /// Whether it has exited (and is not reaped yet), as far as this
    /// process can tell without waiting; a worker on another host never
    /// says so here (its session's end does).
    fn exited(&self) -> bool {
        false
    }
}

/// SIGKILL for a process, from any thread, made while it is unreaped.
#[derive(Debug)]
pub enum Killer {
    /// The process group of a child of ours that is not reaped before the
    /// killer is dropped.
    Group(u32),
    /// A pidfd: that process or none, whoever reaps it.
    Pidfd(OwnedFd),
    /// The control connection of a session on an ssh master: shut down,
    /// it ends the session.
    Socket(OwnedFd),
}

impl Killer {
    pub fn kill(&self) {
        match self {
            // SAFETY: kill(2) on a group whose leader is our unreaped child.
            Killer::Group(pid) => unsafe {
                libc::kill(-(*pid as libc::pid_t), libc::SIGKILL);
            },
            // SAFETY: pidfd_send_signal on a pidfd we hold.
            Killer::Pidfd(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            },
            Killer::Socket(fd) => super::mux::shut(fd.as_fd()),
        }
    }
}

/// A child spawned by this process with `std::process::Command`, leading its
/// own process group.
#[derive(Debug)]
pub(crate) struct Spawned(pub Child);

impl Process for Spawned {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn kill(&mut self) {
        // SAFETY: plain kill(2) on a process group this coordinator created,
        // whose leader it has not reaped.
        unsafe { libc::kill(-(self.pid() as libc::pid_t), libc::SIGKILL) };
    }

    fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        wait_timeout(&mut self.0, timeout)
    }

    fn killer(&self) -> io::Result<Killer> {
        Ok(Killer::Group(self.pid()))
    }

    fn exited(&self) -> bool {
        exited(self.pid()).unwrap_or(false)
    }
}

/// A child of this process known by its pid (forked or vforked by hand),
/// leading its own process group, with a pidfd to wait on.
#[derive(Debug)]
pub(crate) struct ChildPid {
    pid: u32,
    pidfd: OwnedFd,
}

impl ChildPid {
    /// Takes charge of `pid`, our child and not yet reaped; one whose pidfd
    /// cannot be had is killed and reaped, and that is the error.
    pub fn adopt(pid: u32) -> io::Result<Self> {
        // SAFETY: pidfd_open on our own child, not yet reaped.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: kill and waitpid on our own unreaped child.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
                libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
            }
            return Err(e);
        }
        // SAFETY: a new descriptor that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(ChildPid { pid, pidfd })
    }
}

impl Process for ChildPid {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn kill(&mut self) {
        // SAFETY: kill(2) on the group of our child, which is not reaped
        // while this handle lives.
        unsafe { libc::kill(-(self.pid as libc::pid_t), libc::SIGKILL) };
    }

    fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        // A poll cut short by a signal is not the end of the wait.
        let deadline = far(timeout);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if poll_readable(self.pidfd.as_raw_fd(), left)? {
                break;
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
        end_group(self.pid);
        let mut status = 0;
        // SAFETY: waitpid on our own child, which has exited.
        if unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some(ExitStatus::from_raw(status)))
    }

    fn killer(&self) -> io::Result<Killer> {
        Ok(Killer::Group(self.pid))
    }

    fn exited(&self) -> bool {
        poll_readable(self.pidfd.as_raw_fd(), Duration::ZERO).unwrap_or(false)
    }
}

/// A worker process that is killed and reaped when dropped.
#[derive(Debug)]
pub(crate) struct OwnedChild {
    process: Box<dyn Process>,
    status: Option<ExitStatus>,
}

impl OwnedChild {
    pub fn new(process: Box<dyn Process>) -> Self {
        OwnedChild {
            process,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILL to the child's process group, unless it was already reaped.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            self.process.kill();
        }
    }

    /// Waits up to `grace` for the child to exit, then kills it; reaps it either way.
    pub fn reap(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.reap_noting_kill(grace).map(|(status, _)| status)
    }

    /// As [`OwnedChild::reap`], and whether it had to be killed.
    pub fn reap_noting_kill(&mut self, grace: Duration) -> io::Result<(ExitStatus, bool)> {
        if let Some(status) = self.status {
            return Ok((status, false));
        }
        let mut killed = false;
        let status = match self.process.wait_timeout(grace)? {
            Some(status) => status,
            None => {
                killed = true;
                self.process.kill();
                match self.process.wait_timeout(KILLED_GRACE)? {
                    Some(status) => status,
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("it did not exit within {KILLED_GRACE:?} of SIGKILL"),
                        ));
                    }
                }
            }
        };
        self.reaped(status);
        Ok((status, killed))
    }

    /// See [`Process::exited`]; true once reaped.
    pub fn exited(&self) -> bool {
        self.status.is_some() || self.process.exited()
    }

    fn reaped(&mut self, status: ExitStatus) {
        self.status = Some(status);
        registry::forget(self.pid());
    }

    /// See [`Process::remote_pid`].
    pub fn remote_pid(&mut self, pid: u32) {
        self.process.remote_pid(pid);
    }

    /// See [`Process::collateral`].
    pub fn collateral(&self) -> bool {
        self.process.collateral()
    }

    /// What kills it from another thread; `None` once it is reaped.
    pub fn killer(&self) -> io::Result<Option<Killer>> {
        match self.status {
            Some(_) => Ok(None),
            None => self.process.killer().map(Some),
        }
    }

    /// The child's peak resident set size (VmHWM), while it is alive.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        peak_rss_bytes(&format!("/proc/{}/status", self.pid()))
    }
}

/// How long a process gets to disappear after SIGKILL before reaping gives up.
const KILLED_GRACE: Duration = Duration::from_secs(10);

impl Drop for OwnedChild {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.process.kill();
            if let Ok(Some(status)) = self.process.wait_timeout(KILLED_GRACE) {
                self.status = Some(status);
            }
            registry::forget(self.pid());
        }
    }
}

/// VmHWM from a /proc status file, in bytes.
pub fn peak_rss_bytes(status_file: &str) -> Option<u64> {
    proc_kib_field(status_file, "VmHWM:")
}

/// The memory the kernel reckons can be had without swapping
/// (MemAvailable).
pub fn available_memory_bytes() -> Option<u64> {
    proc_kib_field("/proc/meminfo", "MemAvailable:")
}

/// A "Key:   N kB" line of a /proc file, in bytes.
fn proc_kib_field(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// "exited with status 3", "was killed by signal 9 (SIGKILL)".
pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal} ({})", signal_name(signal)),
        _ => format!("ended ({status})"),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "unnamed signal",
    }
}

/// Waits for `child` to exit for at most `timeout`, without reaping early:
/// a pidfd becomes readable when the process exits.
/// Waits up to `timeout` for `child` (the leader of its own process group)
/// to exit, and reaps it; what is left of its group is killed first.
fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let pid = child.id();
    if !exited(pid)? {
        // SAFETY: pidfd_open on our own child, which is not reaped yet.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if raw < 0 {
            return wait_timeout_polling(child, timeout);
        }
        // SAFETY: the kernel just gave us this descriptor and nothing else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
        let deadline = far(timeout);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if poll_readable(pidfd.as_raw_fd(), left)? {
                break;
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }
    end_group(pid);
    child.wait().map(Some)
}

fn wait_timeout_polling(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = far(timeout);
    loop {
        if exited(child.id())? {
            end_group(child.id());
            return child.wait().map(Some);
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether our child `pid` has exited, without reaping it (WNOWAIT).
fn exited(pid: u32) -> io::Result<bool> {
    // SAFETY: a zeroed siginfo_t is a valid one for waitid to fill.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child, with a valid siginfo pointer.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled it in; si_pid is 0 when no child has exited.
    Ok(unsafe { info.si_pid() } != 0)
}

/// SIGKILL to what is left of the process group of our child `pid`, which
/// has exited and is not reaped: its zombie holds the group's id, so no
/// other group can have it. A worker that leaves a child behind (a shell's
/// `sleep &`, say) leaves no orphan.
fn end_group(pid: u32) {
    // SAFETY: kill(2) on the group of our unreaped child.
    unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
}

/// `timeout` from now, or a century when that is past what the clock holds.
pub(crate) fn far(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// Waits until `fd` is readable or `timeout` passes; true when readable.
pub(crate) fn poll_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd for an open descriptor.
    match unsafe { libc::poll(&mut poll, 1, millis) } {
        rc if rc > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    use std::os::unix::process::CommandExt;

    fn spawn(script: &str) -> OwnedChild {
        let child = Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .spawn()
            .unwrap();
        OwnedChild::new(Box::new(Spawned(child)))
    }

    #[test]
    fn reap_waits_for_an_exit_and_keeps_the_status() {
        let mut child = spawn("exit 3");
        let status = child.reap(Duration::from_secs(30)).unwrap();
        assert_eq!(describe_status(status), "exited with status 3");
        // Asked again, the same status, without waiting on a reaped pid.
        assert_eq!(child.reap(Duration::ZERO).unwrap().code(), Some(3));
    }

    #[test]
    fn reap_kills_a_child_that_outstays_its_grace() {
        let mut child = spawn("exec sleep 1000");
        let status = child.reap(Duration::from_millis(20)).unwrap();
        assert_eq!(describe_status(status), "was killed by signal 9 (SIGKILL)");
    }

    /// A real child whose kill calls are counted.
    #[derive(Debug)]
    struct Counted(Spawned, std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Process for Counted {
        fn pid(&self) -> u32 {
            self.0.pid()
        }
        fn kill(&mut self) {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.kill()
        }
        fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
            self.0.wait_timeout(timeout)
        }
        fn killer(&self) -> io::Result<Killer> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.killer()
        }
    }

    #[test]
    fn a_reaped_child_is_never_signalled_again() {
        let kills = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let child = Command::new("true").process_group(0).spawn().unwrap();
        let mut child = OwnedChild::new(Box::new(Counted(Spawned(child), kills.clone())));
        assert_eq!(child.reap(Duration::from_secs(30)).unwrap().code(), Some(0));
        // Its pid is free now: neither kill() nor the drop may signal it.
        child.kill();
        assert!(
            child.killer().unwrap().is_none(),
            "a killer for a reaped child"
        );
        drop(child);
        assert_eq!(kills.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn dropping_kills_and_reaps() {
        let child = spawn("exec sleep 1000");
        let pid = child.pid();
        drop(child);
        // Reaped: not even a zombie is left in /proc.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn statuses_are_described_in_words() {
        assert_eq!(
            describe_status(ExitStatus::from_raw(7 << 8)),
            "exited with status 7"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(libc::SIGABRT)),
            "was killed by signal 6 (SIGABRT)"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(50)),
            "was killed by signal 50 (unnamed signal)"
        );
    }
}
