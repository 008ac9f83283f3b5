//! Workers on other hosts, started over OpenSSH: one master connection per
//! host (ControlMaster, its control socket in a private directory), and
//! each worker a session on it that the pool opens itself ([`super::mux`]),
//! so only the master pays for a handshake and no worker needs a local
//! process.
//!
//! Nothing outlives the pool. A master dies with the thread that started
//! it (PR_SET_PDEATHSIG, asked for before exec), a keeper thread that lives
//! as long as the master is wanted; a signal that stops the program kills
//! it with the workers ([`registry`]). A master's end closes its
//! connection, the far side's sshd then ends, and each remote worker, which
//! asked to die with its parent (the connection's sshd), dies with it.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::child::{Killer, OwnedChild, Process, Spawned};
use super::error::PoolError;
use super::hosts::{Host, Login, Ssh};
use super::launch::Launch;
use super::mux;
use super::registry;
use super::transport::ChildStdio;
use super::{MAX_WORKERS, WorkerCommand};

/// Workers per master connection: sshd's default MaxSessions is 10, and a
/// killed worker's session may still be closing there while its kill and
/// its replacement each take a session.
const SESSIONS_PER_MASTER: usize = 7;

/// How often a master that is connecting is looked at.
const CONNECT_POLL: Duration = Duration::from_millis(2);
/// The most of ssh's stderr kept for a message.
const STDERR_KEPT: usize = 4096;

/// One host's master connection, open until dropped.
pub(crate) struct Master {
    login: Login,
    ssh: WorkerCommand,
    dir: PathBuf,
    control: PathBuf,
    /// The master process; `None` once it is stopped.
    process: Mutex<Option<OwnedChild>>,
    pid: u32,
    /// The thread that started it, parked until the master is stopped: the
    /// master dies with it.
    keeper: Option<(Sender<()>, JoinHandle<()>)>,
    /// From the master's spawn until its control socket was up: what a
    /// worker would pay for ssh without multiplexing, roughly.
    pub connect: Duration,
    /// The host's core count, asked over the master once it was up.
    pub cores: usize,
    /// The address the host sees this machine as (the first word of its
    /// `SSH_CONNECTION`, asked with the core count), once found to be one
    /// this machine can listen on; else why not.
    near: Result<std::net::IpAddr, String>,
}

impl fmt::Debug for Master {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Master")
            .field("login", &self.login)
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

/// The `ssh` command line for `login`: the user's ssh and options, then
/// ours, then the destination. Every part the user gave is one argument;
/// the host and user were checked not to look like options.
fn ssh_to(ssh: &WorkerCommand, login: &Login, ours: &[&str]) -> Command {
    let mut cmd = ssh.to_command();
    cmd.args(ours);
    if let Some(port) = login.port {
        cmd.arg("-p").arg(port.to_string());
    }
    if let Some(user) = &login.user {
        cmd.arg("-l").arg(user);
    }
    cmd.arg("--").arg(&login.host);
    cmd
}

/// Asks for SIGKILL when the spawning thread ends, before the exec.
pub(crate) fn die_with_spawner(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl, getppid and _exit are async-signal-safe, and the hook
    // touches no memory of the parent's.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// A private directory for control sockets: mode 0700, a name no other
/// run uses.
fn private_dir() -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut base = std::env::temp_dir();
    // A socket's path has at most 107 bytes.
    if base.as_os_str().len() > 64 {
        base = PathBuf::from("/tmp");
    }
    sweep(&base);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Made under a name no sweep takes, locked, then given its name: a
        // directory a sweep sees has its lock.
        let making = base.join(format!("fibpool-ssh-making-{pid}-{n}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&making) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                let what = format!(
                    "cannot make a directory for ssh's control socket in {} (TMPDIR): {e}",
                    base.display()
                );
                return Err(io::Error::new(e.kind(), what));
            }
        }
        let dir = base.join(format!("fibpool-ssh-{pid}-{n}"));
        let locked = lock(&making.join(LOCK)).and_then(|held| {
            std::fs::rename(&making, &dir)?;
            Ok(held)
        });
        match locked {
            Ok(held) => {
                // Held until this process ends, which lets the lock go.
                HELD.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(held);
                registry::list_dir(&dir);
                return Ok(dir);
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&making);
                if e.kind() == io::ErrorKind::AlreadyExists {
                    continue;
                }
                let what = format!(
                    "cannot lock and name ssh's control directory {}: {e}",
                    dir.display()
                );
                return Err(io::Error::new(e.kind(), what));
            }
        }
    }
}

/// The file in a control directory that its coordinator holds locked
/// (flock) while it lives.
const LOCK: &str = "lock";

/// The locks of this process's control directories.
static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());

/// `path`, made if need be, with an exclusive flock on it; an error of
/// kind `WouldBlock` when another process holds it.
fn lock(path: &Path) -> io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Removes the control directories of coordinators that are gone (killed
/// by SIGKILL, which leaves them), once per process. One whose pid is not
/// in this machine's /proc may be a live coordinator's all the same (in
/// another PID namespace, or on another machine sharing the directory):
/// it is left while its lock is held.
fn sweep(base: &Path) {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        let Ok(entries) = std::fs::read_dir(base) else {
            return;
        };
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix("fibpool-ssh-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            let Some(pid) = pid else { continue };
            // Only ours: a directory of another user's is theirs to remove.
            let mine = entry
                .metadata()
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == uid);
            if mine
                && pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
                && !matches!(lock(&entry.path().join(LOCK)), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
}

/// What a process wrote to one of its streams (ssh's stderr, a probe's
/// stdout), the last [`STDERR_KEPT`] bytes of it, gathered by a thread
/// until it closes.
struct Gathered(JoinHandle<Vec<u8>>);

impl Gathered {
    fn gather(mut from: impl Read + Send + 'static) -> io::Result<Gathered> {
        let thread = std::thread::Builder::new()
            .name("fibpool-ssh-output".to_owned())
            .spawn(move || {
                let (mut kept, mut buf) = (Vec::new(), [0u8; 1024]);
                while let Ok(n @ 1..) = from.read(&mut buf) {
                    kept.extend_from_slice(&buf[..n]);
                    let excess = kept.len().saturating_sub(STDERR_KEPT);
                    kept.drain(..excess);
                }
                kept
            })?;
        Ok(Gathered(thread))
    }

    /// All of it (its last [`STDERR_KEPT`] bytes), once the process closed it.
    fn text(self) -> String {
        String::from_utf8_lossy(&self.0.join().unwrap_or_default()).into_owned()
    }

    /// Its last line that says something, once the process closed it.
    fn last_line(self) -> Option<String> {
        let text = self.0.join().ok()?;
        let text = String::from_utf8_lossy(&text);
        text.lines()
            .map(str::trim)
            .rfind(|line| !line.is_empty())
            .map(str::to_owned)
    }
}

fn host_error(login: &Login, what: String) -> PoolError {
    PoolError::Host {
        host: login.to_string(),
        what,
    }
}

fn status_line(status: ExitStatus) -> String {
    super::child::describe_status(status)
}

impl Master {
    /// Connects to `login` and waits, at most `timeout`, until the master's
    /// control socket is up; then checks that the worker program is there
    /// and asks for the host's core count over it.
    pub fn connect(login: &Login, ssh: &Ssh, timeout: Duration) -> Result<Master, PoolError> {
        let failed = |e: io::Error| host_error(login, format!("cannot run ssh: {e}"));
        let dir = private_dir().map_err(|e| host_error(login, e.to_string()))?;
        let control = dir.join("master");
        let mut master = Master {
            login: login.clone(),
            ssh: ssh.command.clone(),
            dir,
            control,
            process: Mutex::new(None),
            pid: 0,
            keeper: None,
            connect: Duration::ZERO,
            cores: 1,
            near: Err("it was not asked".to_owned()),
        };
        let started = Instant::now();
        let (child, stderr) = master.spawn().map_err(failed)?;
        master.keeper = Some(child.keeper);
        let mut process = child.process;
        // Dropped on every way out but success: kills and reaps the master.
        let owned = |process: Spawned| OwnedChild::new(Box::new(process));
        loop {
            if master.control.exists() {
                break;
            }
            match process.wait_timeout(CONNECT_POLL) {
                Ok(None) => {}
                Ok(Some(status)) => {
                    drop(owned(process));
                    let said = stderr.last_line();
                    return Err(host_error(
                        login,
                        said.unwrap_or_else(|| format!("ssh {}", status_line(status))),
                    ));
                }
                Err(e) => {
                    drop(owned(process));
                    return Err(failed(e));
                }
            }
            if started.elapsed() >= timeout {
                drop(owned(process));
                let said = stderr.last_line().map(|s| format!(" (ssh said: {s})"));
                return Err(host_error(
                    login,
                    format!(
                        "no connection within {timeout:?}{}",
                        said.unwrap_or_default()
                    ),
                ));
            }
        }
        master.connect = started.elapsed();
        master.pid = process.pid();
        *master
            .process
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(owned(process));
        Ok(master)
    }

    /// Starts the master process from a keeper thread of its own.
    fn spawn(&self) -> io::Result<(Spawn, Gathered)> {
        let mut cmd = ssh_to(
            &self.ssh,
            &self.login,
            &[
                "-M",
                "-N",
                "-S",
                &control_arg(&self.control)?,
                "-o",
                "ControlMaster=yes",
                "-o",
                "ControlPersist=no",
                // No one could answer a prompt: it would stop the master
                // in the background. A host that stops answering is
                // noticed within 45 s.
                "-o",
                "BatchMode=yes",
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=3",
            ],
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        die_with_spawner(&mut cmd);
        let (tx, rx) = mpsc::channel();
        let (release, parked) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fibpool-ssh-master".to_owned())
            .spawn(move || {
                let spawned = registry::start_master(|| {
                    let child = cmd.spawn()?;
                    let pid = child.id();
                    Ok::<_, io::Error>((child, pid))
                });
                let _ = tx.send(spawned);
                let _ = parked.recv();
            })?;
        let keeper = (release, thread);
        let mut child = match rx.recv() {
            Ok(Ok(child)) => child,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("the ssh master's thread ended")),
        };
        let stderr = child.stderr.take().map(Gathered::gather).transpose();
        let process = Spawned(child);
        let stderr = match stderr {
            Ok(Some(stderr)) => stderr,
            Ok(None) => unreachable!("stderr is piped"),
            Err(e) => {
                drop(OwnedChild::new(Box::new(process)));
                return Err(e);
            }
        };
        Ok((Spawn { process, keeper }, stderr))
    }

    /// Checks over the master that `program` is on the far side's PATH,
    /// and returns the host's core count.
    pub fn probe(&mut self, program: Option<&str>, timeout: Duration) -> Result<usize, PoolError> {
        let mut script = String::new();
        if let Some(program) = program {
            script += &format!(
                "command -v {} >/dev/null 2>&1 || exit 127; ",
                shell_words::quote(program)
            );
        }
        script += "echo \"$SSH_CONNECTION\"; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN";
        let failed = |e: io::Error| host_error(&self.login, format!("cannot run ssh: {e}"));
        let mut cmd = self.session(&script).map_err(failed)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().map_err(failed)?;
        let streams = (child.stdout.take(), child.stderr.take());
        let mut process = Spawned(child);
        let (Some(stdout), Some(stderr)) = streams else {
            unreachable!("both are piped")
        };
        let gathered =
            Gathered::gather(stdout).and_then(|out| Ok((out, Gathered::gather(stderr)?)));
        let status = match gathered.and_then(|g| Ok((g, process.wait_timeout(timeout)?))) {
            Ok((gathered, Some(status))) => Ok((gathered, status)),
            Ok((_, None)) => Err(host_error(
                &self.login,
                format!("a session on its connection gave no answer within {timeout:?}"),
            )),
            Err(e) => Err(failed(e)),
        };
        let ((stdout, stderr), status) = match status {
            Ok(done) => done,
            Err(e) => {
                drop(OwnedChild::new(Box::new(process)));
                return Err(e);
            }
        };
        let said = stderr.last_line();
        match status.code() {
            Some(0) => {}
            Some(127) if program.is_some() => {
                return Err(host_error(
                    &self.login,
                    format!(
                        "`{}` is not on its PATH (exit 127)",
                        program.unwrap_or_default()
                    ),
                ));
            }
            _ => {
                return Err(host_error(
                    &self.login,
                    said.map_or_else(
                        || format!("asking its core count: ssh {}", status_line(status)),
                        |s| format!("asking its core count: {s}"),
                    ),
                ));
            }
        }
        let text = stdout.text();
        // What a login script printed comes first.
        let mut lines = text.lines().rev();
        let (cores, connection) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
        self.near = listenable(connection.split_whitespace().next().unwrap_or_default());
        match cores.trim().parse::<usize>() {
            // More than a pool takes is no count a host has (nor one that
            // would fit in a sum of the hosts' counts).
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => {
                self.cores = n;
                Ok(n)
            }
            _ => Err(host_error(
                &self.login,
                format!(
                    "its core count came back as '{}', not a count from 1 to {MAX_WORKERS}",
                    cores.trim().escape_debug()
                ),
            )),
        }
    }

    /// An ssh client that runs `remote` in a session on this master.
    fn session(&self, remote: &str) -> io::Result<Command> {
        let mut cmd = ssh_to(
            &self.ssh,
            &self.login,
            &[
                "-T",
                "-S",
                &control_arg(&self.control)?,
                "-o",
                "ControlMaster=no",
            ],
        );
        cmd.arg(remote);
        Ok(cmd)
    }
}

/// `seen_as` (a host's view of this machine's address) if this machine can
/// listen there; else why not. Behind NAT or a jump host it is none of this
/// machine's addresses.
fn listenable(seen_as: &str) -> Result<std::net::IpAddr, String> {
    let address: std::net::IpAddr = seen_as.parse().map_err(|_| {
        format!("it sees this machine as '{seen_as}' (SSH_CONNECTION), not an address to listen on")
    })?;
    match std::net::TcpListener::bind((address, 0)) {
        Ok(_) => Ok(address),
        Err(e) => Err(format!(
            "it sees this machine as {address}, where nothing here can listen ({e}): \
             is there NAT or a jump host between them? Use the pipe transport"
        )),
    }
}

/// The control socket's path for `ssh -S`, which expands `%` tokens in it.
fn control_arg(path: &Path) -> io::Result<String> {
    let path = path
        .to_str()
        .ok_or_else(|| io::Error::other("the temporary directory's path is not UTF-8"))?;
    Ok(path.replace('%', "%%"))
}

struct Spawn {
    process: Spawned,
    keeper: (Sender<()>, JoinHandle<()>),
}

impl Drop for Master {
    fn drop(&mut self) {
        // Ends the connection: whatever still runs on it ends with it.
        drop(
            self.process
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Some((release, thread)) = self.keeper.take() {
            drop(release);
            let _ = thread.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        registry::forget_dir(&self.dir);
    }
}

/// Starts each worker as a session on a host's master, or, `direct`, as an
/// `ssh` client with a connection of its own (what multiplexing saves, for
/// `fibpool startup --hosts`).
#[derive(Debug)]
pub(crate) struct SshLauncher {
    master: Arc<Master>,
    remote: String,
    direct: bool,
}

impl SshLauncher {
    pub fn new(master: Arc<Master>, remote: String) -> SshLauncher {
        SshLauncher {
            master,
            remote,
            direct: false,
        }
    }

    /// The same host, without the master: every worker its own connection.
    pub fn direct(&self) -> SshLauncher {
        SshLauncher {
            master: self.master.clone(),
            remote: self.remote.clone(),
            direct: true,
        }
    }

    /// An ssh client over a connection of its own.
    fn command(&self, remote: &str) -> Command {
        let mut cmd = ssh_to(&self.master.ssh, &self.master.login, &["-T", "-S", "none"]);
        cmd.arg(remote);
        cmd
    }
}

/// 128 random bits in hex: a worker session's token.
fn session_token() -> io::Result<String> {
    let mut random = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    Ok(random.iter().map(|b| format!("{b:02x}")).collect())
}

/// The remote command with the worker's environment exported before it
/// (sshd passes on no variables of ours), for whatever shell words the
/// command is. The values are ours (an address and port), quoted anyway.
fn with_env(remote: &str, env: &[(&'static str, std::ffi::OsString)]) -> String {
    let mut line = String::new();
    for (name, value) in env {
        line += &format!(
            "export {name}={}; ",
            shell_words::quote(&value.to_string_lossy())
        );
    }
    line + remote
}

impl Launch for SshLauncher {
    fn launch(&self, stdio: ChildStdio) -> io::Result<OwnedChild> {
        let token = session_token()?;
        let mut env = stdio.env.clone();
        env.push((fibpool_protocol::env::SESSION, token.clone().into()));
        let remote = with_env(&self.remote, &env);
        if !self.direct {
            let (Some(stdin), Some(stdout)) = (stdio.stdin, stdio.stdout) else {
                return Err(io::Error::other("an ssh session needs the worker's pipes"));
            };
            let keep: Arc<dyn Send + Sync> = self.master.clone();
            let (control, pid) = (&self.master.control, self.master.pid);
            let session = mux::open(control, &remote, stdin, stdout, pid, keep).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "no session on the ssh connection to {} (has it ended?): {e}",
                        self.master.login
                    ),
                )
            })?;
            return Ok(OwnedChild::new(Box::new(session.with_token(token))));
        }
        let mut cmd = self.command(&remote);
        cmd.stdin(stdio.stdin.map_or_else(Stdio::null, Stdio::from))
            .stdout(stdio.stdout.map_or_else(Stdio::null, Stdio::from))
            .stderr(Stdio::inherit())
            .process_group(0);
        die_with_spawner(&mut cmd);
        let child = registry::start(|| {
            let child = cmd.spawn()?;
            let pid = child.id();
            Ok::<_, io::Error>((child, pid))
        })?;
        drop(cmd);
        Ok(OwnedChild::new(Box::new(SshClient {
            client: Spawned(child),
            token: Some(token),
            killing: None,
            master: self.master.clone(),
        })))
    }

    fn describe(&self) -> String {
        format!("ssh {} {}", self.master.login, self.remote)
    }

    fn host(&self) -> Option<String> {
        Some(self.master.login.to_string())
    }

    fn near(&self) -> io::Result<std::net::IpAddr> {
        self.master
            .near
            .clone()
            .map_err(|why| io::Error::other(format!("{}: {why}", self.master.login)))
    }
}

/// A worker's ssh client; its master stays up while it runs.
#[derive(Debug)]
struct SshClient {
    client: Spawned,
    /// What its processes there have in their environment (see
    /// [`mux::kill_session`]).
    token: Option<String>,
    /// The kill of its processes there, under way: joined before it is
    /// reaped.
    killing: Option<std::thread::JoinHandle<()>>,
    master: Arc<Master>,
}

impl Process for SshClient {
    fn pid(&self) -> u32 {
        self.client.pid()
    }

    fn kill(&mut self) {
        // The client's end alone ends the session, not a worker there
        // that does not read its input.
        if !self.client.exited()
            && let Some(token) = self.token.take()
        {
            let keep: Arc<dyn Send + Sync> = self.master.clone();
            self.killing = mux::kill_session(self.master.control.clone(), token, keep);
        }
        self.client.kill();
    }

    fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        if let Some(killing) = self.killing.take() {
            mux::join_kill(killing);
        }
        self.client.wait_timeout(timeout)
    }

    fn killer(&self) -> io::Result<Killer> {
        self.client.killer()
    }
}

/// How each worker of a pool is started, and where (its place: slots with
/// the same place are on the same host).
pub(crate) struct Layout {
    pub launchers: Vec<Arc<dyn Launch>>,
    pub places: Vec<usize>,
    /// Each place once, in the order first named.
    pub sites: Vec<Site>,
}

/// One place of a host list, for a measurement of what starting a worker
/// there costs: see [`super::probe::Site`].
pub(crate) struct Site {
    /// `None` for this machine.
    pub host: Option<String>,
    /// How long its master took to connect (a whole ssh handshake).
    pub connect: Option<Duration>,
    /// Starts workers there as a pool does: on the master, or spawned here.
    pub launcher: Arc<dyn Launch>,
    /// For a remote host: each worker over an ssh connection of its own.
    pub direct: Option<Arc<dyn Launch>>,
}

impl Layout {
    /// `workers` workers, all started by `launcher` on this machine.
    pub fn local(workers: usize, launcher: Arc<dyn Launch>) -> Layout {
        Layout {
            launchers: vec![launcher.clone(); workers],
            places: vec![0; workers],
            sites: vec![Site {
                host: None,
                connect: None,
                launcher,
                direct: None,
            }],
        }
    }

    /// The workers of `hosts`: every remote host's master is connected
    /// (all at once, each within `timeout`) and asked its core count, for
    /// the hosts whose count is not given by the entry or by `per_host`.
    /// `local` makes the launcher for this machine's workers, if any.
    pub fn hosts(
        hosts: &[Host],
        per_host: Option<usize>,
        ssh: &Ssh,
        timeout: Duration,
        local: impl FnOnce() -> Result<Arc<dyn Launch>, PoolError>,
    ) -> Result<Layout, PoolError> {
        if hosts.is_empty() || hosts.len() > MAX_WORKERS {
            return Err(PoolError::Config(format!(
                "a host list has 1 to {MAX_WORKERS} entries, not {}",
                hosts.len()
            )));
        }
        let program = ssh.remote_program().map_err(PoolError::Config)?;
        let program = program.as_deref();
        // Each distinct place once, in the order first named.
        let mut places: Vec<Option<&Login>> = Vec::new();
        for host in hosts {
            if !places.contains(&host.login.as_ref()) {
                places.push(host.login.as_ref());
            }
        }
        // Before any thread of ours starts: the fork method forks this
        // process, which must then have one thread.
        let mut local = match places.contains(&None) {
            true => Some(local()?),
            false => None,
        };
        let masters: Vec<Option<Result<Master, PoolError>>> = std::thread::scope(|scope| {
            let connecting: Vec<_> = places
                .iter()
                .map(|place| {
                    place.map(|login| {
                        scope.spawn(move || {
                            let mut master = Master::connect(login, ssh, timeout)?;
                            master.probe(program, timeout)?;
                            Ok(master)
                        })
                    })
                })
                .collect();
            connecting
                .into_iter()
                .map(|thread| {
                    thread.map(|t| {
                        t.join().unwrap_or_else(|_| {
                            Err(PoolError::Config(
                                "connecting to a host panicked".to_owned(),
                            ))
                        })
                    })
                })
                .collect()
        });
        let mut launchers: Vec<Arc<dyn Launch>> = Vec::new();
        let mut sites = Vec::new();
        let mut cores = Vec::new();
        // What each place's probe found, for its other masters.
        let mut nears = Vec::new();
        for master in masters {
            match master {
                Some(master) => {
                    let master = Arc::new(master?);
                    cores.push(master.cores);
                    nears.push(master.near.clone());
                    let launcher = SshLauncher::new(master.clone(), ssh.sent_command());
                    sites.push(Site {
                        host: Some(master.login.to_string()),
                        connect: Some(master.connect),
                        direct: Some(Arc::new(launcher.direct())),
                        launcher: Arc::new(launcher),
                    });
                }
                None => {
                    cores.push(super::default_workers());
                    nears.push(Err("this machine".to_owned()));
                    sites.push(Site {
                        host: None,
                        connect: None,
                        launcher: local.take().expect("one local place"),
                        direct: None,
                    });
                }
            }
            launchers.push(sites.last().expect("pushed").launcher.clone());
        }

        let mut places_of_hosts = Vec::new();
        for host in hosts {
            let place = places.iter().position(|p| *p == host.login.as_ref());
            let place = place.expect("every place is listed");
            let n = host.workers.or(per_host).unwrap_or(cores[place]);
            places_of_hosts.push((place, n));
        }
        let total = places_of_hosts
            .iter()
            .map(|&(_, n)| n)
            .fold(0, usize::saturating_add);
        if total > MAX_WORKERS {
            return Err(PoolError::Config(format!(
                "the hosts give {total} workers, more than a pool has ({MAX_WORKERS})"
            )));
        }
        // A host with more workers than one connection takes sessions gets
        // more masters, connected at once.
        let mut on_place = vec![0usize; places.len()];
        for &(place, n) in &places_of_hosts {
            on_place[place] += n;
        }
        let mut masters_of: Vec<Vec<Arc<dyn Launch>>> =
            launchers.iter().map(|l| vec![l.clone()]).collect();
        let extra: Vec<(usize, Result<Master, PoolError>)> = std::thread::scope(|scope| {
            let connecting: Vec<_> = places
                .iter()
                .enumerate()
                .filter_map(|(place, login)| Some((place, (*login)?)))
                .flat_map(|(place, login)| {
                    let more = on_place[place]
                        .div_ceil(SESSIONS_PER_MASTER)
                        .saturating_sub(1);
                    (0..more).map(move |_| (place, login))
                })
                .map(|(place, login)| {
                    (
                        place,
                        scope.spawn(move || Master::connect(login, ssh, timeout)),
                    )
                })
                .collect();
            connecting
                .into_iter()
                .map(|(place, t)| {
                    let joined = t.join().unwrap_or_else(|_| {
                        Err(PoolError::Config(
                            "connecting to a host panicked".to_owned(),
                        ))
                    });
                    (place, joined)
                })
                .collect()
        });
        for (place, master) in extra {
            let mut master = master?;
            // The same host, seen from the same machine.
            master.near = nears[place].clone();
            let launcher = SshLauncher::new(Arc::new(master), ssh.sent_command());
            masters_of[place].push(Arc::new(launcher));
        }
        let mut layout = Layout {
            launchers: Vec::with_capacity(total),
            places: Vec::with_capacity(total),
            sites,
        };
        let mut seated = vec![0usize; places.len()];
        for (place, n) in places_of_hosts {
            for _ in 0..n {
                // A slot keeps its master: its replacements take its session's place.
                let master = if places[place].is_some() {
                    seated[place] / SESSIONS_PER_MASTER
                } else {
                    0
                };
                seated[place] += 1;
                layout.launchers.push(masters_of[place][master].clone());
                layout.places.push(place);
            }
        }
        Ok(layout)
    }
}

#[cfg(test)]
mod tests {
    use super::{listenable, with_env};

    #[test]
    fn the_workers_environment_is_exported_before_its_command() {
        assert_eq!(with_env("exec fibpool worker", &[]), "exec fibpool worker");
        let env = [("FIBPOOL_TCP", "[::1]:4321".into())];
        assert_eq!(
            with_env("cd /x && fibpool worker", &env),
            "export FIBPOOL_TCP='[::1]:4321'; cd /x && fibpool worker"
        );
    }

    #[test]
    fn a_tcp_channel_listens_only_where_this_machine_can() {
        assert_eq!(listenable("127.0.0.1"), Ok([127, 0, 0, 1].into()));
        // TEST-NET-3 (RFC 5737): no machine's own address, as a NAT's is not.
        let nat = listenable("203.0.113.7").unwrap_err();
        assert!(
            nat.starts_with("it sees this machine as 203.0.113.7, where nothing here can listen (")
                && nat
                    .ends_with("is there NAT or a jump host between them? Use the pipe transport"),
            "{nat}"
        );
        assert_eq!(
            listenable(""),
            Err("it sees this machine as '' (SSH_CONNECTION), not an address to listen on".into())
        );
        assert_eq!(
            listenable("fe80::1%eth0"),
            Err(
                "it sees this machine as 'fe80::1%eth0' (SSH_CONNECTION), not an address to listen on"
                    .into()
            )
        );
    }
}
