//! One worker process: spawn, the handshake sent, a reader thread that turns
//! the worker's stdout into events, and reaping. A `WorkerProcess` kills and
//! reaps its child when dropped, so no path leaves one behind.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, ChildStdout, ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use fibpool_protocol::{
    CoordinatorHello, FrameReader, FrameWriter, PROTOCOL_VERSION, Request, Response, WorkerHello,
};
use fibpool_worker::PARENT_PID_ENV;
use fibpool_worker::clock::monotonic_ns;

use crate::WorkerCommand;
use crate::error::{PoolError, WorkerName};
use crate::report::Phases;

/// What a reader thread reports. `worker` is the process's pool-unique id, so
/// late events from a process that was already replaced can be told apart.
pub(crate) enum Event {
    Response {
        worker: u64,
        response: Response,
        at: Instant,
    },
    /// The worker's stdout ended: cleanly (`None`) or with a bad frame.
    Closed {
        worker: u64,
        error: Option<fibpool_protocol::Error>,
    },
}

/// The stamps of one worker process's life, from which its phases follow.
#[derive(Debug, Clone)]
pub(crate) struct Lifeline {
    /// When the spawn call began, on the Instant clock and on CLOCK_MONOTONIC.
    pub spawned_at: Instant,
    pub spawned_at_ns: u64,
    /// How long the spawn call took.
    pub spawn_call: Duration,
    /// When the handshake was decoded, and the handshake (the worker's own stamps).
    pub ready: Option<(Instant, WorkerHello)>,
    /// When the first result was decoded.
    pub first_result: Option<Instant>,
    /// When Shutdown was sent, and when the process was reaped.
    pub shutdown_sent: Option<Instant>,
    pub reaped: Option<Instant>,
}

impl Lifeline {
    pub fn phases(&self) -> Phases {
        let ready_at = self.ready.as_ref().map(|(at, _)| *at);
        let hello = self.ready.as_ref().map(|(_, hello)| hello);
        // The worker's stamps share our clock only on the same machine: a
        // launcher such as ssh gives stamps that are not comparable.
        let ready = ready_at.map(|at| at - self.spawned_at);
        let exec = hello
            .and_then(|h| h.main_entered_ns.checked_sub(self.spawned_at_ns))
            .map(Duration::from_nanos)
            .filter(|exec| ready.is_some_and(|ready| *exec <= ready));
        let init = hello
            .and_then(|h| h.ready_ns.checked_sub(h.main_entered_ns))
            .map(Duration::from_nanos)
            .filter(|_| exec.is_some());
        Phases {
            spawn_seconds: self.spawn_call.as_secs_f64(),
            exec_seconds: exec.map(|d| d.as_secs_f64()),
            init_seconds: init.map(|d| d.as_secs_f64()),
            ready_seconds: ready.map(|d| d.as_secs_f64()),
            first_task_seconds: ready_at
                .zip(self.first_result)
                .map(|(ready, first)| (first - ready).as_secs_f64()),
            shutdown_seconds: self
                .shutdown_sent
                .zip(self.reaped)
                .map(|(sent, reaped)| (reaped - sent).as_secs_f64()),
        }
    }
}

pub(crate) struct WorkerProcess {
    pub id: u64,
    pub name: WorkerName,
    pub life: Lifeline,
    child: Child,
    input: Option<FrameWriter<ChildStdin>>,
    status: Option<ExitStatus>,
}

impl WorkerProcess {
    /// Starts a worker and sends it the coordinator's handshake. The worker's
    /// own handshake arrives later as an [`Event::Response`].
    pub fn spawn(
        command: &WorkerCommand,
        slot: usize,
        id: u64,
        events: Sender<Event>,
    ) -> Result<Self, PoolError> {
        let mut cmd = command.to_command();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Terminal signals go to the coordinator alone, which then stops its workers.
            .process_group(0)
            // The worker asks for PR_SET_PDEATHSIG itself. Doing it here, in a
            // pre-exec hook, would force fork() instead of posix_spawn and cost
            // about 0.3 ms per worker (docs/STARTUP.md).
            .env(PARENT_PID_ENV, std::process::id().to_string());

        let at = Instant::now();
        let at_ns = monotonic_ns();
        let mut child = cmd.spawn().map_err(|source| PoolError::Spawn {
            command: command.to_string(),
            source,
        })?;
        let call = at.elapsed();

        let stdout = child.stdout.take().expect("stdout is piped");
        let mut input = FrameWriter::new(child.stdin.take().expect("stdin is piped"));
        // A worker that is already gone shows up as a Closed event from the reader.
        let _ = input.send(&Request::Hello(CoordinatorHello {
            version: PROTOCOL_VERSION,
        }));
        let name = WorkerName {
            slot,
            pid: child.id(),
        };
        let mut process = WorkerProcess {
            id,
            name,
            life: Lifeline {
                spawned_at: at,
                spawned_at_ns: at_ns,
                spawn_call: call,
                ready: None,
                first_result: None,
                shutdown_sent: None,
                reaped: None,
            },
            child,
            input: Some(input),
            status: None,
        };
        if let Err(source) = std::thread::Builder::new()
            .name(format!("fibpool-reader-{slot}"))
            .spawn(move || read_events(stdout, id, events))
        {
            process.kill();
            return Err(PoolError::Spawn {
                command: "a reader thread".to_owned(),
                source,
            });
        }
        Ok(process)
    }

    pub fn send(&mut self, request: &Request) -> Result<(), fibpool_protocol::Error> {
        match &mut self.input {
            Some(input) => input.send(request).map(drop),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe).into()),
        }
    }

    /// Sends Shutdown and closes the worker's stdin, so it exits either way.
    pub fn shutdown(&mut self) {
        self.life.shutdown_sent = Some(Instant::now());
        let _ = self.send(&Request::Shutdown);
        self.input = None;
    }

    /// SIGKILL to the worker's process group (it leads its own), unless it was
    /// already reaped, after which its pid may belong to someone else.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            // SAFETY: plain kill(2) on a process group this pool created.
            unsafe { libc::kill(-(self.name.pid as libc::pid_t), libc::SIGKILL) };
        }
    }

    /// Waits up to `grace` for the worker to exit, then kills it; reaps it either way.
    pub fn reap(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = match wait_timeout(&mut self.child, grace)? {
            Some(status) => status,
            None => {
                self.kill();
                self.child.wait()?
            }
        };
        self.life.reaped = Some(Instant::now());
        self.status = Some(status);
        Ok(status)
    }
}

impl WorkerProcess {
    /// The worker's output ended or broke: reap it and say why.
    pub fn lost(
        &mut self,
        error: Option<fibpool_protocol::Error>,
        when: &'static str,
    ) -> PoolError {
        if let Some(source) = error.filter(|e| !e.is_disconnect()) {
            self.kill();
            let _ = self.reap(Duration::ZERO);
            return PoolError::WorkerProtocol {
                worker: self.name,
                source,
            };
        }
        let status = match self.reap(EXIT_GRACE) {
            Ok(status) => describe_status(status),
            Err(e) => format!("could not be reaped ({e})"),
        };
        PoolError::WorkerExited {
            worker: self.name,
            status,
            when,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.life.ready.is_some()
    }
}

/// How long a worker that closed its output gets to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.input = None;
            self.kill();
            if let Ok(status) = self.child.wait() {
                self.status = Some(status);
            }
        }
    }
}

/// "exited with status 3", "was killed by signal 9 (SIGKILL)".
pub(crate) fn describe_status(status: ExitStatus) -> String {
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

fn read_events(stdout: ChildStdout, worker: u64, events: Sender<Event>) {
    let mut frames = FrameReader::new(stdout);
    let mut first = true;
    loop {
        let received = if first {
            frames.recv_handshake::<Response>()
        } else {
            frames.recv::<Response>()
        };
        first = false;
        let event = match received {
            Ok(Some(response)) => Event::Response {
                worker,
                response,
                at: Instant::now(),
            },
            Ok(None) => Event::Closed {
                worker,
                error: None,
            },
            Err(error) => Event::Closed {
                worker,
                error: Some(error),
            },
        };
        let closed = matches!(event, Event::Closed { .. });
        if events.send(event).is_err() || closed {
            return;
        }
    }
}

/// Waits for `child` to exit for at most `timeout`, without reaping early:
/// a pidfd becomes readable when the process exits.
fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    if let Some(status) = child.try_wait()? {
        return Ok(Some(status));
    }
    // SAFETY: pidfd_open on our own child, which is not reaped yet.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if raw < 0 {
        return wait_timeout_polling(child, timeout);
    }
    // SAFETY: the kernel just gave us this descriptor and nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut poll = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut poll, 1, millis) } {
            rc if rc > 0 => return child.wait().map(Some),
            0 if left.is_zero() => return child.try_wait(),
            0 => {}
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

fn wait_timeout_polling(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
