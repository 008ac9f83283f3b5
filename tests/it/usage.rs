//! Bad usage and bad input: one line on stderr naming what was wrong, exit 2,
//! nothing on stdout, and no worker started.

use std::path::Path;

use crate::util::*;

/// Runs `fibpool ARGS` with a worker command that leaves a mark if it is ever
/// started, and checks the refusal.
fn check(args: &[&str], message: &str) {
    check_in(
        &scratch_dir(&format!("usage-{:x}", fxhash(args))),
        args,
        message,
    );
}

/// [`check`] with `dir` as the working directory.
fn check_in(dir: &Path, args: &[&str], message: &str) {
    let marker = dir.join("spawned");
    let worker_cmd = format!(
        "sh -c 'touch {} && exec {}'",
        marker.display(),
        worker_bin()
    );
    let mut cmd = fibpool();
    cmd.args(args).current_dir(dir);
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
        "index 10000001 in '10000001' is above the maximum index 10000000 (raise it with --max-index, up to 20000000000)",
    );
    check(
        &["run", "--max-index", "50", "0..=51"],
        "index 51 in '0..=51' is above the maximum index 50 (raise it with --max-index, up to 20000000000)",
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
        &[
            "run",
            "--transport",
            "tcp",
            "--start-method",
            "forkserver",
            "5",
        ],
        "--transport tcp reaches spawned workers only: it takes --start-method spawn",
    );
    check(
        &["run", "--max-index", "20000000001", "5"],
        "--max-index 20000000001 is above the largest index a worker computes (20000000000)",
    );
    check(
        &["run", "--frobnicate", "5"],
        "unexpected argument '--frobnicate' found (see 'fibpool help')",
    );
    check(
        &["run", "-w", "two", "5"],
        "invalid value 'two' for '--workers <N>': expected a whole number, digits only (see 'fibpool help')",
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
        "--task-timeout must be more than 0 and at most 86400 seconds, got '1e-12'",
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

/// Numbers in options follow the rules of index tokens, and values are
/// echoed as given.
#[test]
fn numbers_in_options_are_written_as_indices_are() {
    for (args, value, flag) in [
        (
            &["run", "--max-index", "+5", "5"][..],
            "+5",
            "--max-index <N>",
        ),
        (&["run", "-w", "+2", "5"][..], "+2", "--workers <N>"),
        (&["run", "--retries", "-0", "5"][..], "-0", "--retries <N>"),
        (&["stress", "--count", "+3"][..], "+3", "--count <K>"),
        (&["startup", "-w", "1,+2"][..], "+2", "--workers <N[,N...]>"),
    ] {
        check(
            args,
            &format!(
                "invalid value '{value}' for '{flag}': expected a whole number, digits only (see 'fibpool help')"
            ),
        );
    }
    check(
        &["run", "+5"],
        "invalid index '+5': the index '+5' has a sign: write 5",
    );
    check(
        &["run", "-0"],
        "invalid index '-0': the index '-0' has a sign: write 0",
    );
    check(
        &["run", "--task-timeout", "1e300", "5"],
        "--task-timeout must be more than 0 and at most 86400 seconds, got '1e300'",
    );
    check(
        &["run", "--task-timeout", "NaN", "5"],
        "--task-timeout must be more than 0 and at most 86400 seconds, got 'NaN'",
    );
    for sub in ["run", "startup", "stress", "bench"] {
        check(
            &[sub, "--handshake-timeout", "0", "5"]
                [..if sub == "run" || sub == "bench" { 4 } else { 3 }],
            "--handshake-timeout must be more than 0 and at most 86400 seconds, got '0'",
        );
    }
    for (flag, text) in [
        ("--task-timeout", "+1"),
        ("--stall-warning", "+0.5"),
        ("--handshake-timeout", " 1"),
        ("--task-timeout", "-0"),
    ] {
        check(
            &["run", flag, text, "5"],
            &format!("{flag} must be more than 0 and at most 86400 seconds, got '{text}'"),
        );
    }
    check(
        &["run", "--report", "newname/", "5"],
        "cannot create --report file 'newname/': it is a directory",
    );
    check(
        &["stress", "--duration", "1e999"],
        "--duration must be more than 0 and at most 86400 seconds, got '1e999'",
    );
}

#[test]
fn control_characters_in_input_are_escaped() {
    let dir = scratch_dir("control-characters");
    for (bytes, shown) in [
        (
            &b"5\x0b6"[..],
            r"'5\u{b}6': the index '5\u{b}6' is not a non-negative integer",
        ),
        (
            &b"\x1b[2J"[..],
            r"'\u{1b}[2J': the index '\u{1b}[2J' is not a non-negative integer",
        ),
    ] {
        std::fs::write(dir.join("f"), bytes).unwrap();
        check(
            &["run", "--input", dir.join("f").to_str().unwrap()],
            &format!(
                "--input '{}' line 1: invalid index {shown}",
                dir.join("f").display()
            ),
        );
    }
    std::fs::write(dir.join("f"), b"1 \x00\xff").unwrap();
    check(
        &["run", "--input", dir.join("f").to_str().unwrap()],
        &format!(
            r"--input '{}' line 1: not UTF-8 text near '\x00\xff'",
            dir.join("f").display()
        ),
    );
    check(
        &["run", "5\u{7}"],
        r"invalid index '5\u{7}': the index '5\u{7}' is not a non-negative integer",
    );
}

#[test]
fn an_input_that_fails_to_read_says_so() {
    check(
        &["run", "--input", "/proc/self/mem"],
        "cannot read --input '/proc/self/mem': Input/output error (os error 5)",
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

/// README.md's bad-input table, row by row, against what the binary says.
#[test]
fn the_readmes_bad_input_table_is_what_the_code_says() {
    let readme = include_str!("../../README.md");
    let table = readme
        .split("### Bad input")
        .nth(1)
        .expect("README.md has a '### Bad input' section");
    let dir = scratch_dir("readme-table");
    std::fs::write(dir.join("bad.txt"), "1\nx\n").unwrap();
    let mut rows = 0;
    for line in table.lines().skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        let (Some(command), Some(stderr)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let (Some(command), Some(stderr)) = (
            command.strip_prefix('`').and_then(|c| c.strip_suffix('`')),
            stderr.strip_prefix('`').and_then(|c| c.strip_suffix("` |")),
        ) else {
            continue;
        };
        assert!(!command.contains('"'), "{command}: quote only with ''");
        let words: Vec<&str> = command
            .split(' ')
            .map(|w| if w == "''" { "" } else { w })
            .collect();
        assert_eq!(words[0], "fibpool", "{command}");
        let stderr = stderr.strip_prefix("fibpool: error: ").expect(stderr);
        check_in(&dir, &words[1..], stderr);
        rows += 1;
    }
    assert_eq!(rows, 12, "the rows of README.md's bad-input table");
}

#[test]
fn a_report_and_a_plot_may_not_be_one_file() {
    let dir = scratch_dir("usage-report-is-plot");
    for command in ["stress", "startup", "bench"] {
        let file = dir.join(format!("{command}.out"));
        let file = file.to_str().unwrap();
        let mut args = vec![command, "--report", file, "--plot", file];
        if command == "bench" {
            args.push("10");
        }
        check_in(
            &dir,
            &args,
            &format!("--report and --plot name the same file, '{file}': give each its own"),
        );
        assert!(!Path::new(file).exists(), "{command} made {file}");
    }
}

#[test]
fn a_plot_to_stdout_needs_a_scratch_file_in_tmpdir() {
    let out = run(fibpool().env("TMPDIR", "/nonexistent/fibpool-test").args([
        "stress",
        "--count",
        "2",
        "--sizes",
        "8",
        "--plot",
        "/dev/stdout",
    ]));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "fibpool: error: cannot draw --plot '/dev/stdout': cannot make a scratch file in \
         '/nonexistent/fibpool-test' (TMPDIR): No such file or directory (os error 2)\n"
    );
}

#[test]
fn bench_takes_the_max_index_its_message_names() {
    check(
        &["bench", "--max-index", "5", "10"],
        "index 10 in '10' is above the maximum index 5 (raise it with --max-index, up to 20000000000)",
    );
    check(
        &["bench", "--max-index", "20000000001", "10"],
        "--max-index 20000000001 is above the largest index a worker computes (20000000000)",
    );
}
