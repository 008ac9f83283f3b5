//! What a hostile afternoon with the CLI found: stderr and stdout that
//! cannot be written, inherited environment, reports on every exit path,
//! bounds. Each test failed on the code before its fix.

use std::fs::OpenOptions;
use std::process::Stdio;
use std::time::Duration;

use crate::util::*;

/// `fibpool ARGS` with stderr on /dev/full and stdout discarded.
fn exit_code_with_full_stderr(args: &[&str]) -> Option<i32> {
    let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
    fibpool()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(full)
        .status()
        .unwrap()
        .code()
}

#[test]
fn a_stderr_that_cannot_be_written_changes_no_exit_code() {
    assert_eq!(exit_code_with_full_stderr(&["run", "0..10"]), Some(0));
    assert_eq!(exit_code_with_full_stderr(&["run", "--", "-5"]), Some(2));
    assert_eq!(
        exit_code_with_full_stderr(&["run", "--worker-cmd", "false", "0..3"]),
        Some(1)
    );
    assert_eq!(
        exit_code_with_full_stderr(&["stress", "--count", "10", "--sizes", "8"]),
        Some(0)
    );
}

#[test]
fn a_stderr_on_a_closed_pipe_changes_no_exit_code() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    for (args, want) in [(&["run", "0..10"][..], 0), (&["run", "--", "-5"][..], 2)] {
        let status = fibpool()
            .args(args)
            .stdout(Stdio::null())
            .stderr(writer.try_clone().unwrap())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(want), "{args:?}");
    }
}

#[test]
fn help_that_cannot_be_written_fails() {
    let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = fibpool()
        .arg("--help")
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "fibpool: error: cannot write to stdout: No space left on device (os error 28)\n"
    );
}

#[test]
fn the_workers_mode_is_not_inherited_from_the_users_environment() {
    for (name, value) in [("FIBPOOL_ANSWER_AT_ONCE", "1"), ("FIBPOOL_SOCKET", "")] {
        let out = run(fibpool().args(["run", "0..10"]).env(name, value));
        out.assert_success();
        assert_eq!(
            out.stdout,
            expected_lines(&(0..10).collect::<Vec<_>>(), 10),
            "{name}"
        );
        let out = run(fibpool()
            .args(["run", "--transport", "socket", "0..10"])
            .env(name, value));
        out.assert_success();
        assert_eq!(
            out.stdout,
            expected_lines(&(0..10).collect::<Vec<_>>(), 10),
            "{name}"
        );
    }
}

fn read_report(path: &std::path::Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: {:?}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// Nothing but `keep` is left in `dir`: no temporary report.
fn only_file_left(dir: &std::path::Path, keep: &str) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [keep], "{}", dir.display());
}

#[test]
fn the_report_is_written_when_the_reader_stops_reading() {
    use std::io::BufRead;
    let dir = scratch_dir("report-head");
    let path = dir.join("r.json");
    std::fs::write(&path, "{\"old\": 1}").unwrap();
    let mut child = fibpool()
        .args(["run", "--report"])
        .arg(&path)
        .arg("0..100000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "0\t0\n");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let report = read_report(&path);
    assert_eq!(report["outcome"], "stdout closed", "{report}");
    assert_eq!(report["tasks"], 100000, "{report}");
    assert_eq!(report["chunks"], serde_json::Value::Null, "{report}");
    let done = report["tasks_done"].as_u64().unwrap();
    assert!((1..100000).contains(&done), "{report}");
    only_file_left(&dir, "r.json");
}

#[test]
fn the_report_says_why_a_run_failed() {
    let dir = scratch_dir("report-failed");
    let path = dir.join("r.json");
    // A poison chunk: the values before it were printed, and counted.
    std::fs::write(&path, "{\"old\": 1}").unwrap();
    let out = run(fibpool()
        .env("FIBPOOL_TEST_FAULT", "crash@100")
        .args(["run", "-w", "2", "-c", "8", "--report"])
        .arg(&path)
        .arg("0..200"));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    let report = read_report(&path);
    assert_eq!(report["outcome"], "failed", "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.starts_with("the run failed: poison chunk 12 (indices 96..=103) took its worker down 3 times in a row"),
        "{error}"
    );
    assert_eq!(out.stderr, format!("fibpool: error: {error}\n"));
    assert_eq!(report["tasks_done"], 96, "{report}");
    assert_eq!(report["tasks"], 200, "{report}");
    assert_eq!(report["worker_restarts"], 3, "{report}");
    only_file_left(&dir, "r.json");

    // Workers that cannot start, and a command that does not exist.
    for (command, error) in [
        ("false", "the run failed: the pool is broken: worker "),
        (
            "/no/such/worker",
            "cannot start the pool: cannot start worker `/no/such/worker`: No such file or directory (os error 2)",
        ),
    ] {
        std::fs::write(&path, "{\"old\": 1}").unwrap();
        let out = run(fibpool()
            .args(["run", "-w", "1", "--worker-cmd", command, "--report"])
            .arg(&path)
            .arg("0..10"));
        assert_eq!(out.code(), Some(1), "{}", out.stderr);
        let report = read_report(&path);
        assert_eq!(report["outcome"], "failed", "{report}");
        let got = report["error"].as_str().unwrap();
        assert!(got.starts_with(error), "{got}");
        assert_eq!(report["tasks_done"], 0, "{report}");
        assert!(report["done_seconds"].is_null(), "{report}");
        only_file_left(&dir, "r.json");
    }
}

/// Workers killed by the stop are not restarts. Old failure: the pool saw
/// them die before the report was written, and counted one or two.
#[test]
fn workers_a_signal_stops_are_not_counted_as_restarts() {
    for (sig, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let dir = scratch_dir(&format!("restarts-{name}"));
        let path = dir.join("r.json");
        let running = Running::start(
            fibpool()
                .args(["run", "-w", "2", "-c", "1", "--output", "none", "--report"])
                .arg(&path)
                .arg("5000000x400"),
        );
        // Both computing.
        let workers = running.workers(2);
        wait_until("both workers computing", Duration::from_secs(30), || {
            workers.iter().all(|&pid| cpu_ticks(pid) > 0)
        });
        signal(running.pid(), sig);
        running.finish();
        let report = read_report(&path);
        assert_eq!(report["outcome"], format!("stopped by {name}"), "{report}");
        assert_eq!(report["worker_restarts"], 0, "{report}");
        assert_eq!(report["retried_chunks"], 0, "{report}");
    }
}

#[test]
fn sigint_and_sigterm_write_the_report() {
    // A terminal's hangup too. Old failure: SIGHUP ended the process by its
    // default action, with no report and the temporary file left.
    for (sig, name, code) in [
        (libc::SIGINT, "SIGINT", 130),
        (libc::SIGTERM, "SIGTERM", 143),
        (libc::SIGHUP, "SIGHUP", 129),
    ] {
        let dir = scratch_dir(&format!("report-{name}"));
        let path = dir.join("r.json");
        std::fs::write(&path, "{\"old\": 1}").unwrap();
        // The first chunk hangs: nothing can be printed.
        let running = Running::start(
            fibpool()
                .env("FIBPOOL_TEST_FAULT", "hang@0")
                .args(["run", "-w", "2", "-c", "1", "--report"])
                .arg(&path)
                .arg("0..10"),
        );
        running.workers(2);
        signal(running.pid(), sig);
        let out = running.finish();
        assert_eq!(out.code(), Some(code), "{}", out.stderr);
        let report = read_report(&path);
        assert_eq!(report["outcome"], format!("stopped by {name}"), "{report}");
        assert_eq!(report["tasks"], 10, "{report}");
        assert_eq!(report["tasks_done"], 0, "{report}");
        assert!(report["done_seconds"].is_null(), "{report}");
        only_file_left(&dir, "r.json");
    }
}

/// The bench's files for its peers go in a private directory of its own,
/// removed when it ends, by a signal too.
#[test]
fn the_bench_scratch_directory_is_private_and_removed() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = scratch_dir("bench-tmpdir");
    let out = run(fibpool()
        .env("TMPDIR", &tmp)
        .args(["bench", "-w", "1", "--repeat", "1", "0..10"]));
    out.assert_success();
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);

    let running = Running::start(fibpool().env("TMPDIR", &tmp).args([
        "bench",
        "-w",
        "1",
        "--repeat",
        "1000",
        "--preset",
        "seed-1000x1000",
    ]));
    let mut scratch = None;
    wait_until(
        "the bench makes its scratch directory",
        Duration::from_secs(60),
        || {
            scratch = std::fs::read_dir(&tmp)
                .unwrap()
                .next()
                .map(|e| e.unwrap().path());
            scratch.is_some()
        },
    );
    let scratch = scratch.unwrap();
    let name = scratch.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("fibpool-bench-"), "{name}");
    assert_ne!(
        name,
        format!("fibpool-bench-{}", running.pid()),
        "a predictable name"
    );
    let mode = std::fs::metadata(&scratch).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    signal(running.pid(), libc::SIGTERM);
    let out = running.finish();
    assert_eq!(out.code(), Some(143), "{}", out.stderr);
    assert!(!scratch.exists(), "{} is left", scratch.display());
}

/// Processes whose command line holds `marker`, from /proc.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

/// A worker command that never answers its handshake fails every
/// subcommand after one `--handshake-timeout`, with one line, and is killed.
#[test]
fn a_worker_that_never_completes_its_handshake_fails_after_the_deadline() {
    let marker = format!("1000.{}", std::process::id());
    let worker_cmd = format!("sleep {marker}");
    let cases: [(&[&str], &str, &str); 4] = [
        (
            &["run", "0..3"],
            "the run failed: the pool is broken: worker ",
            " did not complete its handshake within 300ms",
        ),
        (
            &["stress", "--count", "10"],
            "the stress test failed: worker 0 (pid ",
            " did not complete its handshake within 300ms",
        ),
        (
            &["bench", "0..10"],
            "the benchmark failed: the pool is broken: worker ",
            " did not complete its handshake within 300ms",
        ),
        (
            &["startup", "--rounds", "1", "--warmup", "0"],
            "the measurement failed: cannot start worker `sleep`: it wrote nothing within 300ms",
            " (the --handshake-timeout)",
        ),
    ];
    for (args, prefix, suffix) in cases {
        let out = run(fibpool().args(args).args([
            "-w",
            "2",
            "--handshake-timeout",
            "0.3",
            "--worker-cmd",
            &worker_cmd,
        ]));
        assert_eq!(out.code(), Some(1), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        let line = out.stderr.trim_end();
        let line = line
            .strip_prefix("fibpool: error: ")
            .unwrap_or_else(|| panic!("{line}"));
        assert!(
            line.starts_with(prefix) && line.ends_with(suffix),
            "{args:?}: {line}"
        );
        assert_eq!(
            processes_with(&marker),
            Vec::<u32>::new(),
            "{args:?} left a worker"
        );
    }
}

/// The values a run holds are bounded in bytes, not by the worker count:
/// a window of 8 chunks a worker (64 workers: 512 chunks of up to 1 MiB)
/// before, which peaked at 445-458 MiB here, against 237-271 MiB now. The first chunk hangs in every worker, so nothing can be printed
/// and every answer after it waits in the window, until the chunk is found
/// poison (three task timeouts).
#[test]
fn a_runs_memory_is_bounded_in_bytes_whatever_the_worker_count() {
    let dir = scratch_dir("window-bytes");
    let path = dir.join("r.json");
    let out = run(fibpool()
        .env("FIBPOOL_TEST_FAULT", "hang@0")
        .args([
            "run",
            "-w",
            "64",
            "--task-timeout",
            "2",
            "--output",
            "none",
            "--report",
        ])
        .arg(&path)
        .arg("0..200000"));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    let report = read_report(&path);
    assert_eq!(report["tasks_done"], 0, "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.starts_with("the run failed: poison chunk 0 "),
        "{error}"
    );
    let peak = report["coordinator_peak_rss_bytes"].as_u64().unwrap();
    // The window is 256 MiB of answers by their bounds.
    assert!(
        peak < 360 << 20,
        "the coordinator peaked at {} MiB",
        peak >> 20
    );
}

/// Stress's memory is bounded in bytes too: sent payloads are one buffer
/// shared by every worker, and echoed ones take turns for 256 MiB of reply
/// buffers. 24 workers echoing 16 MiB each (384 MiB) peaked at 1.1 GiB
/// before (every worker's payload, its echo and another worker set's
/// payload for the stream phase), 0.3 GiB now.
#[test]
fn stress_memory_is_bounded_in_bytes_whatever_the_worker_count() {
    let dir = scratch_dir("stress-bytes");
    let path = dir.join("s.json");
    let size = 16 << 20;
    let out = run(fibpool()
        .args(["stress", "-w", "24", "--pattern", "fanout", "--count", "48"])
        .args(["--sizes", &size.to_string(), "--report"])
        .arg(&path));
    out.assert_success();
    let report = read_report(&path);
    let result = &report["results"][0];
    for (field, expected) in [
        ("messages", 48),
        ("raw_messages", 48),
        ("lost", 0),
        ("duplicated", 0),
        ("corrupted", 0),
        ("raw_lost", 0),
        ("raw_duplicated", 0),
        ("raw_corrupted", 0),
    ] {
        assert_eq!(result[field], expected, "{field} in {result}");
    }
    assert_eq!(result["workers"], 24, "{result}");
    let peak = result["coordinator_peak_rss_bytes"].as_u64().unwrap();
    // The turns' 256 MiB, the shared payload, and room for the rest.
    assert!(
        peak < (256 << 20) + size + (64 << 20),
        "the coordinator peaked at {} MiB",
        peak >> 20
    );
}

/// A worker that completes its handshake, answers its first echo with
/// ANSWER (bytes), and reads on: written in Python, so that it speaks the
/// protocol by hand.
const GARBLING_WORKER: &str = r#"
import os, struct, sys, time
inp, out = sys.stdin.buffer, sys.stdout.buffer
def varint(n):
    if n < 251: return bytes([n])
    if n < 1 << 16: return bytes([251]) + struct.pack("<H", n)
    if n < 1 << 32: return bytes([252]) + struct.pack("<I", n)
    return bytes([253]) + struct.pack("<Q", n)
def send(payload):
    out.write(struct.pack("<I", len(payload)) + payload)
    out.flush()
def recv():
    (n,) = struct.unpack("<I", inp.read(4) or sys.exit(0))
    while n:
        got = inp.read(min(n, 1 << 20))
        if not got: sys.exit(0)
        n -= len(got)
ns = time.monotonic_ns()
send(b"\x00" + varint(VERSION) + varint(os.getpid()) + varint(ns) + varint(ns))
recv()
recv()
out.write(ANSWER)
out.flush()
while True: recv()
"#;

/// Workers that fail while echoes take turns for reply buffers give their
/// turns back: five 64 MiB echoes share three turns, and five workers that
/// send garbage once left the two without a turn waiting for ever (the
/// watchdog killed the workers, but nothing woke the waiting drivers).
#[test]
fn workers_that_fail_while_echoes_take_turns_fail_the_stress_without_a_hang() {
    let dir = scratch_dir("stress-turns");
    let script = dir.join("garbling.py");
    let version = fibpool_protocol::PROTOCOL_VERSION.to_string();
    // A frame that does not decode; the header of one bigger than any echo
    // of 67108800 bytes (which a reply buffer would have grown to hold).
    for (answer, fault) in [
        (
            r#"b"\x03\x00\x00\x00\xff\xff\xff""#,
            ") sent a bad frame: undecodable frame payload: ",
        ),
        (
            r#"struct.pack("<I", 67108800 + 33)"#,
            ") sent a bad frame: frame of 67108833 bytes exceeds the maximum frame length of 67108832 bytes",
        ),
    ] {
        let worker = GARBLING_WORKER
            .replace("VERSION", &version)
            .replace("ANSWER", answer);
        std::fs::write(&script, worker).unwrap();
        let out = run(fibpool()
            .args(["stress", "-w", "5", "--pattern", "fanout", "--count", "1"])
            .args(["--sizes", "67108800", "--worker-cmd"])
            .arg(format!("python3 -S {}", script.display())));
        assert_eq!(out.code(), Some(1), "{}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(
            out.stderr
                .starts_with("fibpool: error: the stress test failed: worker "),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains(fault), "{}", out.stderr);
    }
}

/// A stress whose workers cannot all hold their frames is refused before
/// anything starts: 1024 workers echoing 64 MiB frames (66 MiB of RSS each,
/// measured) would take about 68 GiB.
#[test]
fn a_stress_bigger_than_the_machines_memory_is_refused_up_front() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let available_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap();
    // Each worker's frame and 4 MiB, the shared payload, 256 MiB of replies.
    let needed_mib: u64 = (1024 * (67108800 + (4 << 20)) + 67108800 + (256 << 20)) >> 20;
    assert!(
        available_kib >> 10 < needed_mib,
        "this machine has {available_kib} kB available: the test needs less"
    );
    let dir = scratch_dir("stress-memory");
    let path = dir.join("s.json");
    let out = run(fibpool()
        .args(["stress", "-w", "1024", "--pattern", "fanout,pingpong"])
        .args(["--sizes", "1K,67108800", "--count", "1", "--report"])
        .arg(&path));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    let expected = format!(
        "fibpool: error: 1024 workers echoing payloads of 67108800 bytes need about {needed_mib} MiB of memory, and {} MiB is available: use fewer workers or smaller --sizes\n",
        available_kib >> 10
    );
    // MemAvailable moves between the test's read and fibpool's.
    let (head, tail) = expected.split_once(", and ").unwrap();
    assert!(out.stderr.starts_with(head), "{}", out.stderr);
    assert!(
        out.stderr.ends_with(tail.split_once(" MiB").unwrap().1),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(!path.exists(), "the report was created");
    // In a memory cgroup limited to 1 GiB, 16 workers echoing 64 MiB frames
    // (about 1.4 GiB) are refused too. Old failure: only MemAvailable was
    // read, and the stress started.
    let cgroup = MemoryCgroup::new("stress", 1 << 30);
    let mut cmd = fibpool();
    cmd.args(["stress", "-w", "16", "--pattern", "fanout"])
        .args(["--sizes", "67108800", "--count", "1"]);
    cgroup.enter(&mut cmd);
    let out = run(&mut cmd);
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    let needed_mib: u64 = (16 * (67108800 + (4 << 20)) + 67108800 + (256 << 20)) >> 20;
    let head = format!(
        "fibpool: error: 16 workers echoing payloads of 67108800 bytes need about {needed_mib} MiB of memory, and "
    );
    let room: u64 = out
        .stderr
        .strip_prefix(&head)
        .and_then(|rest| {
            rest.strip_suffix(" MiB is available: use fewer workers or smaller --sizes\n")
        })
        .and_then(|mib| mib.parse().ok())
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert!(
        room <= 1024,
        "the cgroup's room, not the machine's: {room} MiB"
    );
    // One worker, as pingpong and stream use, fits.
    let out = run(fibpool()
        .args(["stress", "-w", "1024", "--pattern", "pingpong"])
        .args(["--sizes", "67108800", "--count", "1"]));
    out.assert_success();
}

#[test]
fn stress_sends_the_count_it_is_given() {
    let dir = scratch_dir("stress-count");
    let path = dir.join("s.json");
    let out = run(fibpool()
        .args([
            "stress", "-w", "1", "--count", "3", "--sizes", "8", "--report",
        ])
        .arg(&path));
    out.assert_success();
    let report = read_report(&path);
    let counts: Vec<(&str, u64, u64)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["pattern"].as_str().unwrap(),
                r["messages"].as_u64().unwrap(),
                r["raw_messages"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [("pingpong", 3, 3), ("stream", 3, 3), ("fanout", 3, 3)]
    );
    assert!(!out.stdout.contains("NaN"), "{}", out.stdout);
}

#[test]
fn counts_of_one_are_singular() {
    let out = run(fibpool().env("FIBPOOL_TEST_FAULT", "crash@5").args([
        "run",
        "-w",
        "1",
        "-c",
        "1",
        "--retries",
        "1",
        "0..10",
    ]));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("fibpool: error: the run failed: poison chunk 5 (indices 5) took its worker down once; the last, worker "),
        "{}",
        out.stderr
    );
    let running = Running::start(
        fibpool()
            .env("FIBPOOL_TEST_FAULT", "hang@0")
            .args(["run", "-w", "1", "0..3"]),
    );
    running.workers(1);
    signal(running.pid(), libc::SIGINT);
    let out = running.finish();
    assert_eq!(
        out.stderr,
        "fibpool: stopped by SIGINT; 1 worker process killed and reaped\n"
    );
}

#[test]
fn fibpool_worker_with_arguments_is_not_a_worker() {
    let out = run(fibpool().args(["worker", "--help"]));
    out.assert_success();
    assert!(
        out.stdout
            .starts_with("Serve the worker protocol on stdin/stdout"),
        "{:?}",
        out.stdout
    );
    let out = run(fibpool().args(["worker", "extra"]));
    assert_eq!(out.code(), Some(2));
    assert_eq!(
        out.stderr,
        "fibpool: error: unexpected argument 'extra' found (see 'fibpool help')\n"
    );
}

/// Reports and tables to a stdout that cannot be written: an error, not a panic.
#[test]
fn a_stdout_that_cannot_be_written_is_an_error() {
    let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = fibpool()
        .args(["stress", "--count", "3", "--sizes", "8"])
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "fibpool: error: cannot write to stdout: No space left on device (os error 28)\n"
    );
}

/// A stdout pipe someone set O_NONBLOCK, read slowly through a small pipe:
/// the run waits for room instead of failing with EAGAIN.
/// A pipe of 4096 bytes whose write end is non-blocking.
fn small_non_blocking_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    use std::os::fd::AsRawFd;
    let (reader, writer) = std::io::pipe().unwrap();
    // SAFETY: fcntl on a pipe end this test owns.
    unsafe {
        libc::fcntl(writer.as_raw_fd(), libc::F_SETPIPE_SZ, 4096);
        let flags = libc::fcntl(writer.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(writer.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    (reader, writer)
}

/// Waits for `child`, whose stderr is piped, and reads that stderr.
fn wait_with_stderr(child: &mut std::process::Child) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

#[test]
fn a_non_blocking_stdout_is_waited_on() {
    use std::io::Read;
    let (mut reader, writer) = small_non_blocking_pipe();
    let mut child = fibpool()
        .args(["run", "--output", "hex", "0..3000"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match reader.read(&mut buf).unwrap() {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    let (status, stderr) = wait_with_stderr(&mut child);
    assert!(status.success(), "{stderr}");
    assert_same_lines(
        &String::from_utf8(got).unwrap(),
        &expected_lines(&(0..3000).collect::<Vec<_>>(), 16),
    );
    // A report to that stdout (tens of kilobytes: a worker's stats for each
    // of 100 chunks) is waited on too. Old failure: "Resource temporarily
    // unavailable" once the pipe was full, after the whole run.
    let (mut reader, writer) = small_non_blocking_pipe();
    let mut child = fibpool()
        .args(["run", "-w", "2", "-c", "1", "--max-tasks-per-child", "1"])
        .args(["--output", "none", "--report", "/dev/stdout", "0..100"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut got = String::new();
    reader.read_to_string(&mut got).unwrap();
    let (status, stderr) = wait_with_stderr(&mut child);
    assert!(status.success(), "{stderr}");
    assert!(got.len() > 4096, "{} bytes", got.len());
    let report: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(report["outcome"], "completed", "{report}");
    assert_eq!(report["tasks_done"], 100, "{report}");
}

/// A stopped worker holds a run without a task timeout: past
/// `--stall-warning` the run names it, once, and carries on once it is
/// continued.
#[test]
fn a_stopped_worker_is_named_and_the_run_waits_for_it() {
    use std::io::BufRead;
    let mut child = fibpool()
        .args([
            "run",
            "-w",
            "1",
            "-c",
            "1",
            "--output",
            "none",
            "--stall-warning",
            "0.3",
        ])
        .arg("3000x20000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let mut worker = Vec::new();
    // Once it runs the worker program: stopped inside its spawn, before
    // exec, it would stop the spawn call too.
    wait_until("the worker is running", Duration::from_secs(60), || {
        worker = children(pid);
        worker.first().is_some_and(|w| {
            std::fs::read(format!("/proc/{w}/cmdline")).is_ok_and(|c| c.ends_with(b"worker\0"))
        })
    });
    let worker = worker[0];
    signal(worker, libc::SIGSTOP);
    let warning = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("a stall warning within 60 s");
    let prefix = "fibpool: warning: no value for ";
    let suffix = format!(
        " s: worker process {worker} is stopped; 'kill -CONT {worker}' resumes it (--task-timeout would replace it)"
    );
    assert!(
        warning.starts_with(prefix) && warning.ends_with(&suffix),
        "{warning}"
    );
    signal(worker, libc::SIGCONT);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "{rest:?}");
    assert_eq!(rest.len(), 1, "one warning, then the summary: {rest:?}");
    assert!(
        rest[0].starts_with("fibpool: 20000 indices in 20000 chunks on 1 worker: "),
        "{rest:?}"
    );
}

/// A stopped fork server holds every worker still to start: past
/// `--stall-warning` the run names it, and every value still comes.
#[test]
fn a_stopped_fork_server_is_named_and_the_run_completes() {
    use std::io::BufRead;
    let indices: Vec<u64> = (0..3000).collect();
    let mut child = fibpool()
        .args(["run", "-w", "1", "-c", "1", "--max-tasks-per-child", "1"])
        .args(["--start-method", "forkserver", "--stall-warning", "0.3"])
        .arg("0..3000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let values = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let is_server = |p: &u32| {
        std::fs::read(format!("/proc/{p}/environ")).is_ok_and(|env| {
            env.split(|&b| b == 0)
                .any(|v| v.starts_with(b"FIBPOOL_FORK_SERVER="))
        })
    };
    // Once the run is under way (the server has forked a worker): a server
    // stopped before the pool's first worker fails the pool's start.
    let mut server = None;
    wait_until(
        "the fork server has forked",
        Duration::from_secs(60),
        || {
            server = children(pid)
                .into_iter()
                .find(|p| is_server(p) && !forked_workers(*p).is_empty());
            server.is_some()
        },
    );
    let server = server.unwrap();
    signal(server, libc::SIGSTOP);
    let warning = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("a stall warning within 60 s");
    let prefix = "fibpool: warning: no value for ";
    let suffix = format!(
        " s: process {server}, a fork server of the pool, is stopped; 'kill -CONT {server}' resumes it"
    );
    assert!(
        warning.starts_with(prefix) && warning.ends_with(&suffix),
        "{warning}"
    );
    // The pool may have replaced it by now.
    // SAFETY: a signal to a pid this test saw; a stale one is ESRCH.
    unsafe { libc::kill(server as libc::pid_t, libc::SIGCONT) };
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "{rest:?}");
    assert_same_lines(&values.join().unwrap(), &expected_lines(&indices, 10));
    assert!(
        rest.last()
            .is_some_and(|l| l.starts_with("fibpool: 3000 indices in 3000 chunks on 1 worker: ")),
        "{rest:?}"
    );
}

/// A report path that is a symlink replaces the link's target (made if it
/// does not exist), a regular file keeps its mode, a FIFO is written into,
/// not replaced (when something reads it), and this process's stdout is
/// written after the values.
#[test]
fn a_report_goes_where_its_path_leads() {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
    let dir = scratch_dir("report-paths");
    let target = dir.join("target.json");
    std::fs::write(&target, "{\"old\": 1}").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.join("link.json");
    std::os::unix::fs::symlink("target.json", &link).unwrap();
    run(fibpool()
        .args(["run", "-w", "1", "5", "--report"])
        .arg(&link))
    .assert_success();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(read_report(&target)["outcome"], "completed");
    let mode = std::fs::metadata(&target).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640, "{mode:o}");

    let fifo = dir.join("fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // With nothing reading it, a FIFO would block the run before it
    // starts: refused. Old failure: the run waited for a reader forever.
    let out = run(fibpool()
        .args(["run", "-w", "1", "5", "--report"])
        .arg(&fifo));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        format!(
            "fibpool: error: cannot create --report file '{}': it is a FIFO that nothing reads\n",
            fifo.display()
        )
    );
    // Opened for reading first (without waiting for a writer), it takes
    // the report, which fits in its buffer.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    run(fibpool()
        .args(["run", "-w", "1", "5", "--report"])
        .arg(&fifo))
    .assert_success();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut bytes).unwrap();
    let got: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(got["outcome"], "completed");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // A link that leads to no file yet: the report is made where it leads.
    // Old failure: refused ("No such file or directory").
    let dangling = dir.join("dangling.json");
    std::os::unix::fs::symlink("made.json", &dangling).unwrap();
    run(fibpool()
        .args(["run", "-w", "1", "5", "--report"])
        .arg(&dangling))
    .assert_success();
    assert_eq!(read_report(&dir.join("made.json"))["outcome"], "completed");
    // This process's own stdout, on a file or a pipe: the report comes
    // after the values, which stay. Old failure: with stdout on a file,
    // the report was renamed over it; on a pipe, it was refused.
    let file = dir.join("out.txt");
    let status = fibpool()
        .args(["run", "-w", "1", "0..3", "--report", "/dev/stdout"])
        .stdout(std::fs::File::create(&file).unwrap())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let piped = run(fibpool().args(["run", "-w", "1", "0..3", "--report", "/dev/stdout"]));
    piped.assert_success();
    for got in [std::fs::read_to_string(&file).unwrap(), piped.stdout] {
        let (values, report) = got.split_at(got.find('{').unwrap_or_else(|| panic!("{got}")));
        assert_eq!(values, "0\t0\n1\t1\n2\t1\n");
        let report: serde_json::Value = serde_json::from_str(report).unwrap();
        assert_eq!(report["outcome"], "completed", "{report}");
    }
    // A plot to stdout opened for appending keeps what the file held, and
    // comes after the table. Old failure: the path was opened again, and
    // the file truncated to the plot alone.
    let appended = dir.join("appended.txt");
    std::fs::write(&appended, "kept\n").unwrap();
    let status = fibpool()
        .args(["stress", "-w", "1", "--pattern", "pingpong", "--sizes", "8"])
        .args(["--count", "10", "--plot", "/dev/stdout"])
        .stdout(OpenOptions::new().append(true).open(&appended).unwrap())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&appended).unwrap();
    assert!(text.starts_with("kept\n"), "{text}");
    let table = text.find("pingpong").unwrap_or_else(|| panic!("{text}"));
    let svg = text.find("<svg").unwrap_or_else(|| panic!("{text}"));
    assert!(table < svg && text.trim_end().ends_with("</svg>"), "{text}");
    // A stdout that is open only for reading is not written through: the
    // report replaces the file as any report does. Old failure: taken
    // as stdout, and the report failed after the run.
    let read_only = dir.join("read-only.json");
    std::fs::write(&read_only, "old").unwrap();
    let status = fibpool()
        .args(["run", "-w", "1", "--output", "none", "--report"])
        .arg(&read_only)
        .arg("5")
        .stdout(std::fs::File::open(&read_only).unwrap())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(read_report(&read_only)["outcome"], "completed");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "appended.txt",
            "dangling.json",
            "fifo",
            "link.json",
            "made.json",
            "out.txt",
            "read-only.json",
            "target.json"
        ]
    );
}
