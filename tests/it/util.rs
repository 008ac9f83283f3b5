//! Helpers: a ready command for the binary under test, a bounded run, and an
//! independent oracle for Fibonacci numbers.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use num_bigint::BigUint;

/// Every run in these tests ends well within this.
const RUN_LIMIT: Duration = Duration::from_secs(120);

pub fn fibpool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fibpool"))
}

pub fn worker_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fibpool-worker")
}

/// A fresh empty directory for one test. The first call also removes the
/// directories of earlier test processes that have ended, so runs of the
/// suite do not pile up in the temporary directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(remove_ended_runs_dirs);
    let dir = std::env::temp_dir().join(format!("fibpool-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes `fibpool-it-PID-*` directories whose process is gone.
fn remove_ended_runs_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("fibpool-it-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "expected success, got {}\nstderr:\n{}",
            self.status,
            self.stderr
        );
        self
    }
}

/// Runs `cmd` to completion with `stdin` as its input, killing it and failing
/// the test if it takes longer than the run limit.
pub fn run_with_input(cmd: &mut Command, stdin: &[u8]) -> Outcome {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary under test starts");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let feeder = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let stdout = reader(child.stdout.take().unwrap());
    let stderr = reader(child.stderr.take().unwrap());
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {RUN_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    feeder.join().unwrap();
    Outcome {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

pub fn run(cmd: &mut Command) -> Outcome {
    run_with_input(cmd, b"")
}

/// Reads a pipe to its end; bytes that are not UTF-8 (a worker's frames)
/// become replacement characters.
fn reader(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes).expect("the pipe reads");
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Polls `condition` until it holds or `limit` passes; fails with `what`.
#[allow(dead_code)]
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// F(0..=max) by plain iteration: independent of the kernels under test.
pub fn fib_table(max: u64) -> Vec<BigUint> {
    let mut table = vec![BigUint::ZERO, BigUint::from(1u32)];
    while table.len() <= max as usize {
        let next = &table[table.len() - 1] + &table[table.len() - 2];
        table.push(next);
    }
    table.truncate(max as usize + 1);
    table
}

/// The `n<TAB>F(n)` lines `fibpool run` must print for `indices`.
pub fn expected_lines(indices: &[u64], radix: u32) -> String {
    let max = indices.iter().copied().max().unwrap_or(0);
    let table = fib_table(max);
    indices
        .iter()
        .map(|&n| format!("{n}\t{}\n", table[n as usize].to_str_radix(radix)))
        .collect()
}

/// Shows the first differing line instead of two walls of text.
#[track_caller]
pub fn assert_same_lines(got: &str, want: &str) {
    if got == want {
        return;
    }
    let (g, w): (Vec<_>, Vec<_>) = (got.lines().collect(), want.lines().collect());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        if a != b {
            panic!(
                "line {} differs:\n  got:  {:.120}\n  want: {:.120}",
                i + 1,
                a,
                b
            );
        }
    }
    panic!("got {} lines, want {}", g.len(), w.len());
}

/// A `fibpool` that runs while the test acts on it.
pub struct Running {
    pub child: std::process::Child,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Running {
    /// Starts `cmd` with stdout and stderr collected in the background.
    pub fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary under test starts");
        let stdout = reader(child.stdout.take().unwrap());
        let stderr = reader(child.stderr.take().unwrap());
        Running {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits, within the run limit, for `n` live worker processes and returns them.
    pub fn workers(&self, n: usize) -> Vec<u32> {
        let mut found = Vec::new();
        wait_until(&format!("{n} workers are running"), RUN_LIMIT, || {
            found = children(self.pid())
                .into_iter()
                .filter(|&p| alive(p))
                .collect();
            found.len() >= n
        });
        found
    }

    /// Waits for the exit, within the run limit.
    pub fn finish(mut self) -> Outcome {
        let mut status = None;
        wait_until("fibpool exits", RUN_LIMIT, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        Outcome {
            status: status.unwrap(),
            stdout: self.stdout.take().unwrap().join().unwrap(),
            stderr: self.stderr.take().unwrap().join().unwrap(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fork server's workers: its children but its spare (the worker it
/// forks ahead of a request, named `fibpool-spare` until it is taken).
pub fn forked_workers(server: u32) -> Vec<u32> {
    children(server)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|comm| comm.trim_end() != "fibpool-spare")
        })
        .collect()
}

/// The children of every thread of `pid`, from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// True while `pid` is a process that has not exited (a zombie has).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// True when `pid`'s (only) thread is blocked in system call `number`.
pub fn in_syscall(pid: u32, number: libc::c_long) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<libc::c_long>().ok())
        == Some(number)
}

/// True while /proc has any entry for `pid`, zombie or not.
pub fn listed(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Sends `signal` to `pid`, a process this test started.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on our own child, which is not reaped while we signal it.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

/// Sends `signal` to `pid` only if it is still a child of `parent`: a pidfd
/// pins the process, so a pid that was reused meanwhile is never signalled.
/// Returns whether the signal was sent.
pub fn signal_child_of(parent: u32, pid: u32, signal: i32) -> bool {
    // SAFETY: pidfd_open has no memory-safety preconditions.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return false;
    }
    let parent_now = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(") ")?;
            rest.split_whitespace().nth(1)?.parse::<u32>().ok()
        });
    // SAFETY: the pidfd was opened above; the call only reads its arguments.
    let sent = parent_now == Some(parent)
        && unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                signal,
                std::ptr::null::<u8>(),
                0,
            )
        } == 0;
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd as libc::c_int) };
    sent
}

/// F(n) mod 2^64 for every n up to `max`, by iteration: an oracle for
/// indices too big to keep whole.
pub fn fib_mod_2_64(max: u64) -> Vec<u64> {
    let mut table = Vec::with_capacity(max as usize + 1);
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..=max {
        table.push(a);
        (a, b) = (b, a.wrapping_add(b));
    }
    table
}

/// The number of hexadecimal digits of F(n), n >= 3: F(n) is the nearest
/// integer to phi^n / sqrt(5), never close to a power of 16 after F(2) = 1.
pub fn hex_digits(n: u64) -> usize {
    let phi = (1.0 + 5f64.sqrt()) / 2.0;
    ((n as f64) * phi.log(16.0) - 5f64.sqrt().log(16.0)).floor() as usize + 1
}

/// Checks `n<TAB>hex` lines of big values against F(n) mod 2^64 and digit
/// counts, in the given index order.
#[track_caller]
pub fn assert_big_hex_lines(stdout: &str, indices: &[u64]) {
    let table = fib_mod_2_64(*indices.iter().max().unwrap());
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), indices.len(), "one line per index");
    for (line, &n) in lines.iter().zip(indices) {
        let (got_n, hex) = line.split_once('\t').expect("n<TAB>value");
        assert_eq!(got_n, n.to_string(), "indices in input order");
        assert_eq!(hex.len(), hex_digits(n), "digits of F({n})");
        let low = u64::from_str_radix(&hex[hex.len().saturating_sub(16)..], 16).unwrap();
        assert_eq!(low, table[n as usize], "F({n}) mod 2^64");
    }
}

/// CPU time `pid` has used, in clock ticks (utime + stime from /proc).
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0;
    };
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// F(n) mod m (m below 2^62) by fast doubling on u128: an oracle for values
/// too big to compute whole in a test.
pub fn fib_mod(n: u64, m: u128) -> u128 {
    let (mut a, mut b) = (0u128, 1u128); // F(k), F(k+1) for the bits of n so far
    for bit in (0..64).rev() {
        let c = a * ((2 * b + m - a) % m) % m;
        let d = (a * a + b * b) % m;
        (a, b) = if n >> bit & 1 == 1 {
            (d, (c + d) % m)
        } else {
            (c, d)
        };
    }
    a
}

/// The bit length of F(n), n >= 3: n log2(phi) - log2(sqrt 5), rounded up.
pub fn fib_bits(n: u64) -> u64 {
    let phi = (1.0 + 5f64.sqrt()) / 2.0;
    (n as f64 * phi.log2() - 5f64.sqrt().log2()).ceil() as u64
}

/// A number's digits in `radix` (10 or 16), mod m.
pub fn digits_mod(digits: &str, radix: u32, m: u128) -> u128 {
    digits.chars().fold(0, |acc, c| {
        (acc * u128::from(radix) + u128::from(c.to_digit(radix).expect("a digit"))) % m
    })
}

/// A memory cgroup of its own with a limit, for one test's processes (a
/// child of this process's v1 memory cgroup, or of the v2 hierarchy's root
/// where there is no v1 memory controller): the tests run as root. Removed
/// when dropped, once its processes have ended.
pub struct MemoryCgroup {
    dir: PathBuf,
    procs: std::ffi::CString,
}

impl MemoryCgroup {
    pub fn new(name: &str, limit_bytes: u64) -> MemoryCgroup {
        let ours = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let v1 = ours.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| PathBuf::from("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')))
        });
        let (parent, limit_file) = match v1 {
            Some(dir) => (dir, "memory.limit_in_bytes"),
            None => (PathBuf::from("/sys/fs/cgroup"), "memory.max"),
        };
        let dir = parent.join(format!("fibpool-it-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot make the memory cgroup {} (these tests run as root): {e}",
                dir.display()
            )
        });
        std::fs::write(dir.join(limit_file), limit_bytes.to_string())
            .unwrap_or_else(|e| panic!("cannot limit {}: {e}", dir.display()));
        let procs = dir.join("cgroup.procs");
        let procs = std::ffi::CString::new(procs.into_os_string().into_encoded_bytes()).unwrap();
        MemoryCgroup { dir, procs }
    }

    /// Makes `cmd`'s process start in this cgroup.
    pub fn enter(&self, cmd: &mut Command) {
        let procs = self.procs.clone();
        // SAFETY: open, write and close only, between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(cmd, move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" is the writing process.
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        };
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Its processes have been reaped; the kernel may take a moment to
        // let it go.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Waits, a bounded while, until the process whose pid `pidfile` holds is
/// gone (or a zombie): `what` names it in the failure.
pub fn wait_gone(what: &str, pidfile: &std::path::Path) {
    let pid: u32 = std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until(
        &format!("{what} {pid} is gone"),
        Duration::from_secs(10),
        || !alive(pid),
    );
}
