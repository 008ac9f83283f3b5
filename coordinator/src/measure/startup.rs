//! `fibpool startup`'s measurement: rounds that start a pool the way `run`
//! does, warm it up with one tiny task per worker, shut it down, and keep each
//! worker's phases; in the same rounds, the baselines. Raw samples only: the
//! statistics are in [`crate::stats`], the report in [`crate::report`].

use std::ffi::OsString;
use std::fs::File;
use std::io::{PipeReader, Read};
use std::os::fd::AsRawFd;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use fibpool_protocol::env::ANSWER_AT_ONCE;
use fibpool_protocol::{CoordinatorHello, PROTOCOL_VERSION, Request, Response};

use crate::pool::probe::{Connection, Launcher};
use crate::pool::{PHASE_NAMES, Phases};
use crate::report::{HostStartupReport, PhaseSummaries, StartupReport};
use crate::stats::{Summary, median};
use crate::{Host, Pool, PoolError, Ssh, StartMethod, Transport, WorkerCommand};

/// What to measure.
#[derive(Debug, Clone)]
pub struct StartupPlan {
    /// Pool sizes, measured one after another.
    pub workers: Vec<usize>,
    /// Measured rounds per pool size, after `warmup` unmeasured ones.
    pub rounds: usize,
    pub warmup: usize,
    pub command: WorkerCommand,
    /// The minimal program timed as the floor.
    pub floor: OsString,
    /// Threads for the parallel-spawn variant of each round.
    pub spawn_threads: usize,
    /// How long a worker has to complete its handshake.
    pub handshake_timeout: Duration,
    /// Start methods, each measured in every round.
    pub methods: Vec<StartMethod>,
    /// How the pools' frames travel.
    pub transport: Transport,
}

/// Samples in seconds, one list per thing measured, for one pool size.
#[derive(Debug, Default)]
struct Samples {
    phases: [Vec<f64>; 6],
    pool_ready: Vec<f64>,
    pool_ready_parallel: Vec<f64>,
    round: Vec<f64>,
    /// A fork server's start, per round, for a method that starts one.
    server_start: Vec<f64>,
    /// Every measured round's workers, for the one shown whole.
    rounds: Vec<Vec<Phases>>,
    floor: Vec<f64>,
    worker_at_once: Vec<f64>,
}

/// Measures every pool size of the plan. `progress` is told each round.
pub fn measure(
    plan: &StartupPlan,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<StartupReport>, PoolError> {
    let mut reports = Vec::new();
    for &n in &plan.workers {
        let mut by_method: Vec<Samples> = plan.methods.iter().map(|_| Samples::default()).collect();
        for round in 0..plan.warmup + plan.rounds {
            progress(n, round);
            let keep = round >= plan.warmup;
            // Interleaved, so that the baselines see the same machine as the pools.
            let timeout = plan.handshake_timeout;
            let floor = first_bytes(n, timeout, || Command::new(&plan.floor))?;
            let worker_at_once = first_bytes(n, timeout, || {
                let mut command = plan.command.to_command();
                command.env(ANSWER_AT_ONCE, "1");
                command
            })?;
            // Each method in turn, the first one changing from round to
            // round, so that none always follows the baselines.
            let k = plan.methods.len();
            for i in (0..k).map(|i| (i + round) % k) {
                let (method, samples) = (plan.methods[i], &mut by_method[i]);
                let sequential = pool_round(plan, method, n, 1)?;
                // Parallel spawns are a spawn method's: a fork server forks
                // one worker at a time.
                let parallel = if method == StartMethod::Spawn && n > 1 && plan.spawn_threads > 1 {
                    Some(pool_round(plan, method, n, plan.spawn_threads)?.ready)
                } else {
                    None
                };
                if keep {
                    samples.floor.extend(floor.iter().copied());
                    samples
                        .worker_at_once
                        .extend(worker_at_once.iter().copied());
                    for worker in &sequential.workers {
                        for (i, (_, value)) in worker.named().into_iter().enumerate() {
                            samples.phases[i].extend(value);
                        }
                    }
                    samples.rounds.push(sequential.workers);
                    samples.server_start.extend(sequential.server_start);
                    samples.pool_ready.push(sequential.ready);
                    samples.round.push(sequential.whole);
                    samples.pool_ready_parallel.extend(parallel);
                }
            }
        }
        for (&method, samples) in plan.methods.iter().zip(&by_method) {
            reports.push(report(plan, method, n, samples));
        }
    }
    Ok(reports)
}

/// What one round measured, in seconds.
struct Round {
    workers: Vec<Phases>,
    /// From the first spawn until every worker was ready.
    ready: f64,
    /// From building the pool until the last worker was reaped.
    whole: f64,
    /// A fork server's start, for a pool that started one.
    server_start: Option<f64>,
}

/// One pool: spawned from `threads` threads, warmed up, shut down.
fn pool_round(
    plan: &StartupPlan,
    method: StartMethod,
    n: usize,
    threads: usize,
) -> Result<Round, PoolError> {
    // The forkserver method's server is shared by the pools of a process,
    // as Python's is: its start is measured on its own, and the round is a
    // pool's on a server that is up, as Python's rounds are.
    let server_start = match method {
        StartMethod::Forkserver => Some(
            crate::pool::probe::restart_fork_server(&plan.command, plan.handshake_timeout)?
                .as_secs_f64(),
        ),
        _ => None,
    };
    let start = Instant::now();
    let pool = Pool::builder()
        .workers(n)
        .start_method(method)
        .transport(plan.transport)
        .worker_command(plan.command.clone())
        .handshake_timeout(plan.handshake_timeout)
        .spawn_threads(threads)
        .build()?;
    let probe = pool.probe();
    probe.warm_up()?;
    // Every worker answered, so every one was ready.
    let ready = probe.ready_seconds().unwrap_or(f64::NAN);
    let server_start = server_start.or(probe.server_start_seconds());
    pool.shutdown(true, false)?;
    let workers = pool.worker_stats();
    Ok(Round {
        workers: workers.into_iter().map(|w| w.phases).collect(),
        ready,
        whole: start.elapsed().as_secs_f64(),
        server_start,
    })
}

/// Spawns `n` programs one after another, as the pool spawns its workers, and
/// times each from the start of its spawn to its first byte on stdout. Plain
/// std spawns (no pre-exec hook, so std may use posix_spawn), and poll(2) to
/// stamp each byte as it arrives: the floor a pool's `ready` is held to.
fn first_bytes(
    n: usize,
    timeout: Duration,
    command: impl Fn() -> Command,
) -> Result<Vec<f64>, PoolError> {
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        let mut command = command();
        let program = command.get_program().to_string_lossy().into_owned();
        let failed = |source| PoolError::Spawn {
            command: program.clone(),
            source,
        };
        // Made before the clock starts, as the pool makes its workers' pipes;
        // so is /dev/null, which `Stdio::null()` would open inside the spawn.
        let (output, stdout) = std::io::pipe().map_err(failed)?;
        let null = File::open("/dev/null").map_err(failed)?;
        let null_too = null.try_clone().map_err(failed)?;
        command.stdin(null).stdout(stdout).stderr(null_too);
        let start = Instant::now();
        let child = command.spawn().map_err(failed)?;
        // The child's end of the pipe, which only the child may hold.
        drop(command);
        children.push(Timed {
            program,
            start,
            child,
            output,
            first_byte: None,
        });
    }
    let mut answered = 0;
    let deadline = Instant::now() + timeout;
    while answered < n {
        let left = deadline.saturating_duration_since(Instant::now());
        // Rounded up: a wait of 0 would spin.
        let left_ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut fds: Vec<libc::pollfd> = children
            .iter()
            .map(|c| libc::pollfd {
                fd: match c.first_byte {
                    None => c.output.as_raw_fd(),
                    Some(_) => -1, // poll skips negative descriptors
                },
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfds; every descriptor is open.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, left_ms) };
        let now = Instant::now();
        if ready <= 0 {
            let error = std::io::Error::last_os_error();
            if ready < 0 && error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(PoolError::Spawn {
                command: children[0].program.clone(),
                source: if ready == 0 {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("it wrote nothing within {timeout:?} (the --handshake-timeout)"),
                    )
                } else {
                    error
                },
            });
        }
        for (fd, c) in fds.iter().zip(&mut children) {
            if fd.revents == 0 || c.first_byte.is_some() {
                continue;
            }
            let mut byte = [0u8; 1];
            if !matches!(c.output.read(&mut byte), Ok(1)) {
                return Err(PoolError::Spawn {
                    command: c.program.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "it exited without writing a byte",
                    ),
                });
            }
            c.first_byte = Some((now - c.start).as_secs_f64());
            answered += 1;
        }
    }
    let mut times = Vec::with_capacity(n);
    for mut c in children {
        c.child.wait().map_err(|source| PoolError::Spawn {
            command: c.program.clone(),
            source,
        })?;
        times.extend(c.first_byte);
    }
    Ok(times)
}

/// A baseline program being timed. Dropped before it was reaped (an early
/// return on an error), it is killed and reaped, so none outlives the run.
struct Timed {
    program: String,
    /// When its spawn call began.
    start: Instant,
    child: Child,
    output: PipeReader,
    /// Seconds from `start` to its first byte, once it came.
    first_byte: Option<f64>,
}

impl Drop for Timed {
    fn drop(&mut self) {
        // Both do nothing for a child already reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn report(plan: &StartupPlan, method: StartMethod, n: usize, samples: &Samples) -> StartupReport {
    let phase = |name: &str| {
        let i = PHASE_NAMES
            .iter()
            .position(|p| *p == name)
            .expect("a phase name");
        Summary::of(&samples.phases[i])
    };
    StartupReport {
        workers: n,
        start_method: method.name(),
        transport: plan.transport.name(),
        rounds: plan.rounds,
        warmup_rounds: plan.warmup,
        worker_command: plan.command.to_string(),
        phases: PhaseSummaries {
            spawn: phase("spawn"),
            exec: phase("exec"),
            init: phase("init"),
            ready: phase("ready"),
            first_task: phase("first_task"),
            shutdown: phase("shutdown"),
        },
        pool_ready: Summary::of(&samples.pool_ready),
        server_start: Summary::of(&samples.server_start),
        pool_ready_parallel: Summary::of(&samples.pool_ready_parallel),
        round: Summary::of(&samples.round),
        spawn_threads: if method == StartMethod::Spawn {
            plan.spawn_threads.min(n)
        } else {
            1
        },
        baseline: Summary::of(&samples.floor),
        baseline_worker: Summary::of(&samples.worker_at_once),
        ready_over_floor: median(&samples.phases[3]) / median(&samples.floor),
        python_round: None,
        python: None,
        median_round: median_round(samples),
    }
}

/// The workers of the round whose `pool_ready` is the median (the lower of
/// the middle two), in the order they were started.
fn median_round(samples: &Samples) -> Vec<Phases> {
    let mut order: Vec<usize> = (0..samples.pool_ready.len()).collect();
    order.sort_by(|&a, &b| samples.pool_ready[a].total_cmp(&samples.pool_ready[b]));
    let Some(&middle) = order.get(order.len().saturating_sub(1) / 2) else {
        return Vec::new();
    };
    let mut workers = samples.rounds[middle].clone();
    workers.sort_by(|a, b| a.started_seconds.total_cmp(&b.started_seconds));
    workers
}

/// What `fibpool startup --hosts` measures.
#[derive(Debug, Clone)]
pub struct HostsPlan {
    pub hosts: Vec<Host>,
    pub ssh: Ssh,
    /// This machine's worker command (for `:`).
    pub command: WorkerCommand,
    pub floor: OsString,
    pub rounds: usize,
    pub warmup: usize,
    pub handshake_timeout: Duration,
}

/// For every place of the host list: its master's connection once, then,
/// round after round, a worker started as the pool starts its later ones
/// there (a session on the master) and, for a remote host, one over an ssh
/// connection of its own; each timed on this machine's clock from the
/// start of its spawn to its handshake, with the local floor in the same
/// rounds.
pub fn measure_hosts(
    plan: &HostsPlan,
    mut progress: impl FnMut(usize),
) -> Result<Vec<HostStartupReport>, PoolError> {
    let (_, sites) = Launcher::for_hosts(
        &plan.hosts,
        Some(1),
        &plan.ssh,
        StartMethod::Spawn,
        &plan.command,
        plan.handshake_timeout,
    )?;
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = sites.iter().map(|_| Default::default()).collect();
    let mut floor = Vec::new();
    for round in 0..plan.warmup + plan.rounds {
        progress(round);
        let keep = round >= plan.warmup;
        let timeout = plan.handshake_timeout;
        let floor_now = first_bytes(1, timeout, || Command::new(&plan.floor))?;
        if keep {
            floor.extend(floor_now);
        }
        for (site, (via, own)) in sites.iter().zip(&mut samples) {
            let ready = handshake_seconds(&site.launcher, timeout)?;
            let direct = match &site.direct {
                Some(direct) => Some(handshake_seconds(direct, timeout)?),
                None => None,
            };
            if keep {
                via.push(ready);
                own.extend(direct);
            }
        }
    }
    let floor_median = median(&floor);
    Ok(sites
        .iter()
        .zip(samples)
        .map(|(site, (via, own))| HostStartupReport {
            host: site.host.clone().unwrap_or_else(|| ":".to_owned()),
            rounds: plan.rounds,
            warmup_rounds: plan.warmup,
            master_connect_seconds: site.connect.map(|d| d.as_secs_f64()),
            ready: Summary::of(&via),
            ready_own_connection: Summary::of(&own),
            baseline: Summary::of(&floor),
            ready_over_floor: median(&via) / floor_median,
        })
        .collect())
}

/// Starts one worker with `launcher` and exchanges the handshake; seconds
/// from the start of the spawn until the worker's Ready was decoded. The
/// worker is then told to shut down and reaped.
fn handshake_seconds(launcher: &Launcher, timeout: Duration) -> Result<f64, PoolError> {
    let start = Instant::now();
    let (mut child, mut reader, mut writer) =
        Connection::open(launcher, Transport::Pipe, timeout, 0)?.into_parts();
    let name = child.name;
    let protocol = |source| PoolError::WorkerProtocol {
        worker: name,
        source,
    };
    let watchdog = child.kill_after(timeout);
    let hello = writer
        .send(&Request::Hello(CoordinatorHello {
            version: PROTOCOL_VERSION,
            pid: std::process::id(),
        }))
        .map_err(protocol)
        .and_then(|_| match reader.recv_handshake::<Response>() {
            Ok(Some(Response::Ready(_))) => Ok(start.elapsed().as_secs_f64()),
            Ok(other) => Err(PoolError::WorkerMisbehaved {
                worker: name,
                what: format!("answered its handshake with {other:?}"),
            }),
            Err(e) => Err(protocol(e)),
        });
    if watchdog.disarm() {
        return Err(PoolError::HandshakeTimeout {
            worker: name,
            timeout,
        });
    }
    let seconds = hello?;
    let _ = writer.send(&Request::Shutdown);
    drop(writer);
    child.reap(timeout).map_err(|source| PoolError::Reap {
        worker: name,
        source,
    })?;
    Ok(seconds)
}
