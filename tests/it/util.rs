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

/// A fresh empty directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fibpool-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
