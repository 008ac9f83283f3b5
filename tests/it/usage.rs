//! Bad usage and bad input: one line on stderr naming what was wrong, exit 2,
//! nothing on stdout, and no worker started.

use std::path::Path;

use crate::util::*;

/// Runs `fibpool ARGS` with a worker command that leaves a mark if it is ever
/// started, and checks the refusal.
fn check(args: &[&str], message: &str) {
    let dir = scratch_dir(&format!("usage-{:x}", fxhash(args)));
    let marker = dir.join("spawned");
    let worker_cmd = format!(
        "sh -c 'touch {} && exec {}'",
        marker.display(),
        worker_bin()
    );
    let mut cmd = fibpool();
    cmd.args(args).current_dir(&dir);
    if matches!(args.first(), Some(&"run" | &"startup")) && !args.contains(&"--worker-cmd") {
        cmd.args(["--worker-cmd", &worker_cmd]);
    }
    let out = run(&mut cmd);
    assert_eq!(out.code(), Some(2), "{args:?}: {}", out.stderr);
    assert_eq!(out.stdout, "", "{args:?}");
    assert_eq!(
        out.stderr,
        format!("fibpool: error: {message}\n"),
        "{args:?}"
    );
    assert!(!Path::new(&marker).exists(), "{args:?} started a worker");
}

fn fxhash(args: &[&str]) -> u64 {
    args.iter()
        .flat_map(|a| a.bytes())
        .fold(0xcbf29ce484222325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        })
}

#[test]
fn bad_indices() {
    check(&["run", "-5"], "invalid index '-5': the index is negative");
    check(
        &["run", "12a"],
        "invalid index '12a': the index '12a' is not a non-negative integer",
    );
    check(
        &["run", "100..10"],
        "invalid index '100..10': reversed range: start 100 is after end 10",
    );
    check(&["run", ""], "the indices given select nothing");
    check(&["run", "4..4"], "the indices given select nothing");
    check(&["run"], "no indices given: pass INDICES or --input FILE");
    check(
        &["run", "10000001"],
        "index 10000001 in '10000001' is above the maximum index 10000000 (raise it with --max-index, up to 300000000)",
    );
    check(
        &["run", "--max-index", "50", "0..=51"],
        "index 51 in '0..=51' is above the maximum index 50 (raise it with --max-index, up to 300000000)",
    );
    check(
        &["run", "1x99999999999"],
        "'1x99999999999' brings the batch to 99999999999 indices, more than the limit of 1000000000",
    );
}

#[test]
fn bad_options() {
    check(
        &["run", "-w", "0", "5"],
        "--workers must be between 1 and 1024, got 0",
    );
    check(&["run", "-c", "0", "5"], "--chunk-size must be at least 1");
    check(
        &["run", "--max-index", "300000001", "5"],
        "--max-index 300000001 is above the largest index a worker computes (300000000)",
    );
    check(
        &["run", "--frobnicate", "5"],
        "unexpected argument '--frobnicate' found (see 'fibpool help')",
    );
    check(
        &["run", "-w", "two", "5"],
        "invalid value 'two' for '--workers <N>': invalid digit found in string (see 'fibpool help')",
    );
    check(
        &["run", "--output", "octal", "5"],
        "invalid value 'octal' for '--output <OUTPUT>' (see 'fibpool help')",
    );
    check(
        &["run", "--worker-cmd", "", "5"],
        "--worker-cmd: the worker command is empty",
    );
    check(
        &["run", "--task-timeout", "1e-12", "5"],
        "--task-timeout must be more than 0 and at most 86400 seconds, got 0.000000000001",
    );
    check(
        &["run", "--max-tasks-per-child", "0", "5"],
        "--max-tasks-per-child must be at least 1",
    );
    check(
        &["run", "--transport", "carrier-pigeon", "5"],
        "invalid value 'carrier-pigeon' for '--transport <TRANSPORT>' (see 'fibpool help')",
    );
}

#[test]
fn bad_startup_options() {
    check(
        &["startup", "--rounds", "0"],
        "--rounds must be between 1 and 100000, got 0",
    );
    check(
        &["startup", "-w", "2,0"],
        "--workers must be between 1 and 1024, got 0",
    );
    check(
        &["startup", "--spawn-threads", "0"],
        "--spawn-threads must be at least 1",
    );
    check(
        &["startup", "--report", "no/such/dir/s.json"],
        "cannot create --report file 'no/such/dir/s.json': No such file or directory (os error 2)",
    );
}

#[test]
fn bad_files() {
    check(
        &["run", "--input", "missing.txt"],
        "cannot read --input 'missing.txt': No such file or directory (os error 2)",
    );
    check(
        &["run", "--input", "."],
        "cannot read --input '.': it is a directory",
    );
    check(
        &["run", "--input", "x", "5"],
        "give INDICES or --input, not both",
    );
    check(
        &["run", "--report", "no/such/dir/r.json", "5"],
        "cannot create --report file 'no/such/dir/r.json': No such file or directory (os error 2)",
    );
    let dir = scratch_dir("bad-file");
    let file = dir.join("bad.txt");
    std::fs::write(&file, "1 2\n3 three\n").unwrap();
    check(
        &["run", "--input", file.to_str().unwrap()],
        &format!(
            "--input '{}' line 2: invalid index 'three': the index 'three' is not a non-negative integer",
            file.display()
        ),
    );
}
