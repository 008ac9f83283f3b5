//! Workers that die, hang, close their pipes or send garbage, for real: the
//! run completes with every value right, or stops with a clear error.

use serde_json::Value;

use crate::util::*;

const FAULT: &str = "FIBPOOL_TEST_FAULT";

fn report(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The replaced workers' `ended` descriptions, from a run report.
fn ended(report: &Value) -> Vec<String> {
    report["worker_stats"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["ended"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_worker_killed_mid_run_is_replaced_and_every_value_is_right() {
    killed_mid_run("pipe", libc::SIGKILL);
}

/// The pool execs a worker of its own program with every signal blocked (no
/// handler of the coordinator's may run between vfork and exec), and the
/// worker's first act is to unblock them: SIGTERM kills it as it would any
/// process.
#[test]
fn a_worker_takes_sigterm_as_any_process_does() {
    killed_mid_run("pipe", libc::SIGTERM);
}

#[test]
fn a_worker_killed_mid_run_over_shared_memory_is_replaced_and_every_value_is_right() {
    killed_mid_run("shm", libc::SIGKILL);
}

/// The mask of signals `pid` blocks, from /proc; `None` once it is gone.
fn blocked_signals(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mask = status.lines().find_map(|l| l.strip_prefix("SigBlk:"))?;
    u64::from_str_radix(mask.trim(), 16).ok()
}

fn killed_mid_run(transport: &str, signal: i32) {
    let dir = scratch_dir(&format!("signal-{signal}-worker-{transport}"));
    let path = dir.join("run.json");
    let indices: Vec<u64> = (0..300).map(|i| 1_000_000 + 7 * i).collect();
    let tokens: Vec<String> = indices.iter().map(u64::to_string).collect();
    let running = Running::start(
        fibpool()
            .args(["run", "-w", "2", "-c", "1", "--output", "hex"])
            .args(["--transport", transport, "--report"])
            .arg(&path)
            .args(&tokens),
    );
    let victim = running.workers(2)[0];
    // Past its handshake and into its chunks: it has used CPU time.
    wait_until(
        "the worker is computing",
        std::time::Duration::from_secs(60),
        || cpu_ticks(victim) >= 2,
    );
    assert_eq!(
        blocked_signals(victim),
        Some(0),
        "a worker blocks no signal"
    );
    assert!(
        signal_child_of(running.pid(), victim, signal),
        "the victim is gone"
    );
    let out = running.finish();
    out.assert_success();
    assert_big_hex_lines(&out.stdout, &indices);
    let report = report(&path);
    assert_eq!(report["worker_restarts"], 1, "{report}");
    assert!(report["retried_chunks"].as_u64().unwrap() >= 1, "{report}");
    let name = if signal == libc::SIGKILL {
        "SIGKILL"
    } else {
        "SIGTERM"
    };
    assert_eq!(
        ended(&report),
        [format!("was killed by signal {signal} ({name})")]
    );
    let pids: Vec<_> = report["worker_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_u64().unwrap())
        .collect();
    assert!(
        pids.contains(&(victim as u64)),
        "the killed worker is in the report"
    );
}

/// Runs 0..200 in chunks of 8 on one worker with a fault that fires once,
/// early (index 12 is in chunk 1, and `exit-after@3` fires once a worker
/// has answered three chunks), and checks every value and the recovery
/// counts. The worker holds two chunks then, whatever the timing: the one
/// it was on and the one it was sent when it answered the chunk before,
/// both among the 8 the run hands a 1-worker pool first. Both are sent
/// again. (With two workers the count can be one: the run keeps a window
/// of chunks out beyond the oldest it has not printed, and a fast worker
/// can take all of them while the slow one still holds that oldest.)
fn survive(fault: &str, extra: &[&str], ending: &str) {
    let dir = scratch_dir(&format!(
        "fault-{}",
        fault.replace(['@', ';', '/', '='], "-")
    ));
    let path = dir.join("run.json");
    let once = dir.join("fired");
    let out = run(fibpool()
        .env(FAULT, format!("{fault};once={}", once.display()))
        .args(["run", "-w", "1", "-c", "8", "--report"])
        .arg(&path)
        .args(extra)
        .arg("0..200"));
    out.assert_success();
    assert_same_lines(
        &out.stdout,
        &expected_lines(&(0..200).collect::<Vec<_>>(), 10),
    );
    let report = report(&path);
    assert_eq!(report["worker_restarts"], 1, "{fault}: {report}");
    assert_eq!(report["retried_chunks"], 2, "{fault}: {report}");
    assert_eq!(ended(&report), [ending], "{fault}");
    assert!(
        out.stderr.contains("; 1 worker replaced, 2 chunks retried"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_crash_is_survived() {
    survive("crash@12", &[], "was killed by signal 6 (SIGABRT)");
}

#[test]
fn an_exit_is_survived() {
    survive("exit-after@3", &[], "exited with status 3");
}

#[test]
fn a_closed_pipe_is_survived() {
    // The worker closes its streams and lives on: it is killed after a
    // grace period of 100 ms, and said to have been. Old failures: a whole
    // second of the pool's thread (other batches waited), and "was killed
    // by signal 9 (SIGKILL)", which was the pool's own kill.
    survive(
        "close@12",
        &[],
        "closed its output and had not exited 100ms later, so was killed",
    );
}

#[test]
fn a_hang_is_killed_after_the_task_timeout() {
    survive(
        "hang@12",
        &["--task-timeout", "0.5"],
        "spent longer than the task timeout (500ms) on a chunk",
    );
}

/// A fault that fires in every worker: the chunk holding index 100 is poison.
fn poison(fault: &str, extra: &[&str], failures: u32, cause: &str) {
    let out = run(fibpool()
        .env(FAULT, fault)
        .args(["run", "-w", "2", "-c", "8"])
        .args(extra)
        .arg("0..200"));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    let line = out.stderr.trim_end();
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    let times = match failures {
        1 => "once".to_owned(),
        n => format!("{n} times in a row"),
    };
    let prefix = format!(
        "fibpool: error: the run failed: poison chunk 12 (indices 96..=103) took its worker down {times}; the last, worker "
    );
    assert!(line.starts_with(&prefix), "{line}");
    assert!(line.ends_with(cause), "{line}");
    // In input order, the run stops at the poison chunk's turn: every
    // value before it was printed, and nothing after it.
    assert_same_lines(
        &out.stdout,
        &expected_lines(&(0..96).collect::<Vec<_>>(), 10),
    );
}

#[test]
fn a_chunk_that_crashes_every_worker_is_poison() {
    poison("crash@100", &[], 3, "was killed by signal 6 (SIGABRT)");
}

#[test]
fn retries_sets_how_often_a_chunk_may_fail() {
    poison(
        "crash@100",
        &["--retries", "1"],
        1,
        "was killed by signal 6 (SIGABRT)",
    );
}

#[test]
fn a_chunk_that_hangs_every_worker_is_poison() {
    poison(
        "hang@100",
        &["--task-timeout", "0.2", "--retries", "2"],
        2,
        "spent longer than the task timeout (200ms) on a chunk",
    );
}

#[test]
fn a_worker_that_cannot_start_stops_the_run() {
    let out = run(fibpool().args(["run", "-w", "2", "5", "--worker-cmd", "sh -c 'exit 7'"]));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    let line = out.stderr.trim_end();
    assert!(
        line.starts_with("fibpool: error: the run failed: the pool is broken: worker "),
        "{line}"
    );
    assert!(
        line.ends_with(
            ") exited with status 7 before its handshake; 3 workers in a row failed to start"
        ),
        "{line}"
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn chunks_queued_for_a_worker_that_never_starts_go_to_its_replacement() {
    let dir = scratch_dir("dies-before-handshake");
    let path = dir.join("run.json");
    // The first worker exits before its handshake; the second starts.
    let script = format!(
        "mkdir {} 2>/dev/null && exit 7; exec {}",
        dir.join("failed-once").display(),
        worker_bin()
    );
    let out = run(fibpool()
        .args(["run", "-w", "1", "-c", "10", "--report"])
        .arg(&path)
        .args(["--worker-cmd", &format!("sh -c '{script}'"), "0..100"]));
    out.assert_success();
    let indices: Vec<u64> = (0..100).collect();
    assert_same_lines(&out.stdout, &expected_lines(&indices, 10));
    let report = report(&path);
    assert_eq!(report["worker_restarts"], 1, "{report}");
    // A run queues two chunks (the default in flight) before any handshake:
    // both went to the worker that died, and both were sent again.
    assert_eq!(report["retried_chunks"], 2, "{report}");
    assert_eq!(
        ended(&report),
        ["exited with status 7 before its handshake"]
    );
}

#[test]
fn garbage_from_a_worker_is_fatal_and_named() {
    let out = run(fibpool()
        .env(FAULT, "garbage@100")
        .args(["run", "-w", "2", "-c", "8", "0..200"]));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    let line = out.stderr.lines().last().unwrap();
    // The chunk holding 100 (96..=103) failed, with the worker named.
    assert!(
        line.starts_with(
            "fibpool: error: the run failed: chunk 12 (indices 96..=103) failed: worker "
        ),
        "{}",
        out.stderr
    );
    assert!(
        line.contains(") sent a bad frame: undecodable frame payload: "),
        "{}",
        out.stderr
    );
}

#[test]
fn a_worker_that_scribbles_on_its_ring_is_named_and_never_read_past_it() {
    // The worker publishes a head 2^40 bytes past its tail once its
    // handshake and a little more are out: its chunk fails, naming it.
    let out = run(fibpool().env("FIBPOOL_TEST_SCRIBBLE", "100").args([
        "run",
        "-w",
        "1",
        "-c",
        "200",
        "--transport",
        "shm",
        "0..400",
    ]));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    let line = out.stderr.lines().last().unwrap();
    assert!(
        line.starts_with(
            "fibpool: error: the run failed: chunk 0 (indices 0..=199) failed: worker 0 (pid "
        ),
        "{}",
        out.stderr
    );
    // The tail is where the reader is: past the handshake.
    let (_, message) = line
        .split_once(") sent a bad frame: i/o error on the frame stream: ")
        .expect(line);
    assert!(
        message.starts_with("shared ring's counters are impossible: head 1099511627776, tail "),
        "{line}"
    );
    assert!(message.ends_with(", for a ring of 1048576 bytes"), "{line}");
}

#[test]
fn a_worker_on_shared_memory_that_dies_mid_answer_is_survived() {
    // It dies after the first part of the chunk holding 9000: the parts
    // that came are dropped, the chunk is computed again, nothing doubles.
    let dir = scratch_dir("shm-crash-mid");
    let path = dir.join("run.json");
    let out = run(fibpool()
        .env(
            FAULT,
            format!("crash-mid@9000;once={}", dir.join("fired").display()),
        )
        .args(["run", "-w", "2", "-c", "4000", "--output", "hex"])
        .args(["--transport", "shm"])
        .arg("--report")
        .arg(&path)
        .arg("0..12000"));
    out.assert_success();
    assert_same_lines(
        &out.stdout,
        &expected_lines(&(0..12_000).collect::<Vec<_>>(), 16),
    );
    let report = report(&path);
    assert_eq!(report["worker_restarts"], 1, "{report}");
    assert_eq!(ended(&report), ["was killed by signal 6 (SIGABRT)"]);
}

/// A worker that dies while a process it started holds its output open
/// (a shell's `sleep &` keeps the pipe) is found by a look at its process
/// while it is on a chunk, not by the end of its output; it is replaced,
/// and what it left is killed with its process group. Old failure: the
/// pool waited for the output to end, here for the sleep's 600 s.
#[test]
fn a_worker_that_dies_while_its_child_holds_its_output_is_replaced() {
    let dir = scratch_dir("held-output");
    let (pids, once) = (dir.join("sleeps"), dir.join("fired"));
    let command = format!(
        "sh -c 'sleep 600 & echo $! >> {}; exec {}'",
        pids.display(),
        worker_bin()
    );
    let out = run(fibpool()
        .env(FAULT, format!("crash@12;once={}", once.display()))
        .args(["run", "-w", "1", "-c", "8", "--worker-cmd", &command])
        .arg("0..200"));
    out.assert_success();
    assert_same_lines(
        &out.stdout,
        &expected_lines(&(0..200).collect::<Vec<_>>(), 10),
    );
    assert!(
        out.stderr.contains("; 1 worker replaced, 2 chunks retried"),
        "{}",
        out.stderr
    );
    let sleeps: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(sleeps.len(), 2, "one per worker: {sleeps:?}");
    wait_until(
        "every sleep is gone",
        std::time::Duration::from_secs(10),
        || sleeps.iter().all(|&pid| !alive(pid)),
    );
}

/// Text values that are not digits (here a newline inside a value) fail
/// their chunk, named in one line, and nothing of them is printed. Old
/// failure: the bytes were printed as they came, and the newline made a
/// line of its own for a value that never was.
#[test]
fn a_text_value_that_is_not_digits_fails_its_chunk() {
    for (output, name) in [("decimal", "decimal"), ("hex", "hex")] {
        for transport in ["pipe", "shm"] {
            let out = run(fibpool()
                .env(FAULT, "newline@5")
                .args(["run", "-w", "1", "-c", "5", "--output", output])
                .args(["--transport", transport, "0..20"]));
            assert_eq!(out.code(), Some(1), "{output} {transport}: {}", out.stderr);
            let radix = if output == "hex" { 16 } else { 10 };
            assert_eq!(out.stdout, expected_lines(&[0, 1, 2, 3, 4], radix));
            let (head, tail) = out
                .stderr
                .split_once(") broke the protocol: ")
                .unwrap_or_else(|| panic!("{}", out.stderr));
            assert!(
                head.starts_with(
                    "fibpool: error: the run failed: chunk 1 (indices 5..=9) failed: worker 0 (pid "
                ),
                "{}",
                out.stderr
            );
            assert_eq!(
                tail,
                format!("sent the byte 0x0a in a {name} value for chunk 1\n")
            );
        }
    }
}

/// A worker's word on how long it computed is held to how long it has
/// existed. Old failure: one that said 2^64 - 1 ns was reported as busy
/// for 18446744073 seconds.
#[test]
fn a_workers_busy_time_is_never_more_than_its_life() {
    let dir = scratch_dir("busy-forever");
    let path = dir.join("r.json");
    let out = run(fibpool()
        .env(FAULT, "busy-forever@5")
        .args(["run", "-w", "1", "-c", "5", "--output", "none", "--report"])
        .arg(&path)
        .arg("0..20"));
    out.assert_success();
    let report = report(&path);
    let wall = report["wall_seconds"].as_f64().unwrap();
    let busy = report["worker_stats"][0]["busy_seconds"].as_f64().unwrap();
    assert!(
        busy > 0.0 && busy <= wall,
        "busy {busy} s in a run of {wall} s"
    );
}

/// A worker whose output ends in the middle of a frame is named with how
/// its process ended and what its output ended in. Old failure: only
/// "exited with status 0", as if it had stopped at a frame's end.
#[test]
fn a_torn_frame_is_named_beside_the_exit() {
    for transport in ["pipe", "shm"] {
        let out = run(fibpool()
            .env(FAULT, "torn@5")
            .args(["run", "-w", "1", "-c", "5", "--retries", "1"])
            .args(["--transport", transport, "0..10"]));
        assert_eq!(out.code(), Some(1), "{transport}: {}", out.stderr);
        assert_eq!(out.stdout, expected_lines(&[0, 1, 2, 3, 4], 10));
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(
            out.stderr.ends_with(
                "), exited with status 0, its output ending in a torn frame \
                 (stream ended inside a frame payload: got 10 of 100 bytes)\n"
            ),
            "{transport}: {}",
            out.stderr
        );
    }
}
