//! Start methods other than spawn, with real processes: every value right,
//! workers and servers killed, the coordinator killed, and a pool used as
//! a library again after each failure.

use std::time::Duration;

use fibpool_coordinator::{Pool, PoolError, StartMethod, WorkerCommand};
use serde_json::Value;

use crate::util::*;

const FAULT: &str = "FIBPOOL_TEST_FAULT";

fn report(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The parent pid of `pid`, from /proc.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Waits for the coordinator's one child, the fork server, and for `n` live
/// workers under it; returns the server and the workers.
fn server_and_workers(running: &Running, n: usize) -> (u32, Vec<u32>) {
    let mut found = (0, Vec::new());
    wait_until(
        &format!("a fork server with {n} workers"),
        Duration::from_secs(60),
        || {
            let servers: Vec<u32> = children(running.pid())
                .into_iter()
                .filter(|&p| alive(p))
                .collect();
            let [server] = servers[..] else {
                return false;
            };
            let workers: Vec<u32> = forked_workers(server)
                .into_iter()
                .filter(|&p| alive(p))
                .collect();
            found = (server, workers);
            found.1.len() >= n
        },
    );
    found
}

/// The start methods whose workers are forks of a server.
const FORKING: [&str; 2] = ["forkserver", "fork"];

#[test]
fn every_value_is_right_through_a_fork_server_on_both_transports() {
    for method in FORKING {
        every_value_is_right(method);
    }
}

fn every_value_is_right(method: &str) {
    let indices: Vec<u64> = (0..400).chain([1000, 5000, 20_000, 100_000]).collect();
    let tokens: Vec<String> = indices.iter().map(u64::to_string).collect();
    for transport in ["pipe", "socket"] {
        let dir = scratch_dir(&format!("{method}-{transport}"));
        let path = dir.join("r.json");
        let out = run(fibpool()
            .args(["run", "-w", "3", "-c", "7", "--start-method", method])
            .args(["--transport", transport, "--report"])
            .arg(&path)
            .args(&tokens));
        out.assert_success();
        assert_same_lines(&out.stdout, &expected_lines(&indices, 10));
        let report = report(&path);
        assert_eq!(
            report["worker_restarts"], 0,
            "{method} {transport}: {report}"
        );
        let stats = report["worker_stats"].as_array().unwrap();
        assert_eq!(stats.len(), 3, "{method} {transport}: {report}");
        assert!(
            stats
                .iter()
                .all(|w| w["ready_seconds"].as_f64().unwrap() > 0.0),
            "{report}"
        );
    }
}

/// 300 values near F(1 000 000) on 2 workers, one a chunk, in hex, with a
/// report at `path`: long enough to kill something during it.
fn heavy_run(method: &str, path: &std::path::Path) -> (Vec<u64>, Running) {
    heavy_run_with(method, path, &["-w", "2"])
}

/// [`heavy_run`] with `options` (`-w` among them).
fn heavy_run_with(method: &str, path: &std::path::Path, options: &[&str]) -> (Vec<u64>, Running) {
    let indices: Vec<u64> = (0..300).map(|i| 1_000_000 + 7 * i).collect();
    let tokens: Vec<String> = indices.iter().map(u64::to_string).collect();
    let running = Running::start(
        fibpool()
            .args(["run", "-c", "1", "--output", "hex"])
            .args(options)
            .args(["--start-method", method, "--report"])
            .arg(path)
            .args(&tokens),
    );
    (indices, running)
}

#[test]
fn a_forked_worker_killed_mid_run_is_replaced_with_its_status() {
    for method in FORKING {
        a_forked_worker_killed(method);
    }
}

fn a_forked_worker_killed(method: &str) {
    let dir = scratch_dir(&format!("{method}-kill-worker"));
    let path = dir.join("r.json");
    let (indices, running) = heavy_run(method, &path);
    let (server, workers) = server_and_workers(&running, 2);
    let victim = workers[0];
    wait_until("the worker is computing", Duration::from_secs(60), || {
        cpu_ticks(victim) >= 2
    });
    assert!(
        signal_child_of(server, victim, libc::SIGKILL),
        "the victim is gone"
    );
    let out = running.finish();
    out.assert_success();
    assert_big_hex_lines(&out.stdout, &indices);
    let report = report(&path);
    assert_eq!(report["worker_restarts"], 1, "{method}: {report}");
    let ended: Vec<&str> = report["worker_stats"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["ended"].as_str())
        .collect();
    // The status came from the server, which reaped it.
    assert_eq!(ended, ["was killed by signal 9 (SIGKILL)"], "{report}");
}

#[test]
fn a_killed_fork_server_is_started_again_and_nothing_is_lost() {
    for method in FORKING {
        a_killed_fork_server(method);
    }
}

fn a_killed_fork_server(method: &str) {
    let dir = scratch_dir(&format!("{method}-kill-server"));
    let path = dir.join("r.json");
    // One death on a chunk would make it poison: the workers that die with
    // their server must charge none.
    let (indices, running) = heavy_run_with(method, &path, &["-w", "2", "--retries", "1"]);
    let (server, workers) = server_and_workers(&running, 2);
    wait_until("the workers are computing", Duration::from_secs(60), || {
        workers.iter().all(|&w| cpu_ticks(w) >= 2)
    });
    assert!(signal_child_of(running.pid(), server, libc::SIGKILL));
    // Its workers die with it: their death signal follows the server.
    wait_until("the old workers die", Duration::from_secs(10), || {
        workers.iter().all(|&w| !alive(w))
    });
    let out = running.finish();
    out.assert_success();
    assert_big_hex_lines(&out.stdout, &indices);
    let report = report(&path);
    assert_eq!(report["worker_restarts"], 2, "{method}: {report}");
    assert!(!listed(server), "{method}: the old server was reaped");
}

#[test]
fn a_stopped_fork_server_is_killed_when_needed_and_nothing_is_lost() {
    for method in FORKING {
        a_stopped_fork_server(method, false);
        a_stopped_fork_server(method, true);
    }
}

/// The server stopped (SIGSTOP) mid-run: its workers go on, and the pool,
/// which needs the server to learn how a worker ended or to start one,
/// kills it then. With `kill_worker`, a worker is also killed, so the pool
/// needs a new one (from a new server) before the run can end.
fn a_stopped_fork_server(method: &str, kill_worker: bool) {
    let dir = scratch_dir(&format!("{method}-stop-server-{kill_worker}"));
    let path = dir.join("r.json");
    let (indices, running) = heavy_run(method, &path);
    let (server, workers) = server_and_workers(&running, 2);
    wait_until("the workers are computing", Duration::from_secs(60), || {
        workers.iter().all(|&w| cpu_ticks(w) >= 2)
    });
    assert!(signal_child_of(running.pid(), server, libc::SIGSTOP));
    if kill_worker {
        assert!(signal_child_of(server, workers[0], libc::SIGKILL));
    }
    let out = running.finish();
    out.assert_success();
    assert_big_hex_lines(&out.stdout, &indices);
    let report = report(&path);
    let ended: Vec<&str> = report["worker_stats"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["ended"].as_str())
        .collect();
    if kill_worker {
        // The victim's status, and the other worker's: killed with the
        // server, which was stopped and so killed when a worker was needed.
        assert_eq!(report["worker_restarts"], 2, "{method}: {report}");
        assert_eq!(
            ended, ["was killed by signal 9 (SIGKILL)"; 2],
            "{method}: {report}"
        );
    } else {
        // The workers ended at shutdown with their own status, 0.
        assert_eq!(report["worker_restarts"], 0, "{method}: {report}");
        assert!(ended.is_empty(), "{method}: {report}");
    }
    for pid in std::iter::once(server).chain(workers) {
        assert!(!listed(pid), "{method}: {pid} was left behind");
    }
}

#[test]
fn the_coordinator_killed_takes_the_server_and_its_workers_with_it() {
    for method in FORKING {
        the_coordinator_killed(method);
    }
}

fn the_coordinator_killed(method: &str) {
    // The workers hang in their first chunk and never read again: only
    // their death signal (after the server's) can end them.
    let running = Running::start(
        fibpool()
            .env(FAULT, "hang@5")
            .args(["run", "-w", "2", "-c", "1", "--start-method", method])
            .arg("5x100"),
    );
    let (server, workers) = server_and_workers(&running, 2);
    for &worker in &workers {
        assert_eq!(parent_of(worker), Some(server), "a fork of the server");
    }
    wait_until(
        "both workers hang in their first chunk",
        Duration::from_secs(60),
        || workers.iter().all(|&pid| in_syscall(pid, libc::SYS_futex)),
    );
    signal(running.pid(), libc::SIGKILL);
    wait_until(
        "the server and its workers exit",
        Duration::from_secs(5),
        || !alive(server) && workers.iter().all(|&w| !alive(w)),
    );
    let out = running.finish();
    assert_eq!(out.status.code(), None, "killed by a signal");
}

#[test]
fn sigint_stops_a_fork_server_run_and_leaves_nothing() {
    for method in FORKING {
        for (sig, name, code) in [
            (libc::SIGINT, "SIGINT", 130),
            (libc::SIGTERM, "SIGTERM", 143),
        ] {
            signal_stops(method, sig, name, code);
        }
    }
}

fn signal_stops(method: &str, sig: i32, name: &str, code: i32) {
    let running = Running::start(
        fibpool()
            .args(["run", "-w", "2", "-c", "1", "--output", "none"])
            .args(["--start-method", method, "2000x2000000"]),
    );
    let (server, workers) = server_and_workers(&running, 2);
    signal(running.pid(), sig);
    let out = running.finish();
    assert_eq!(out.code(), Some(code), "{method} {name}: {}", out.stderr);
    // The server is the coordinator's one child; its group holds the
    // workers, which are counted (the server is not).
    assert_eq!(
        out.stderr,
        format!("fibpool: stopped by {name}; 2 worker processes killed and reaped\n"),
        "{method}"
    );
    assert!(!listed(server), "the server is reaped");
    wait_until("the workers are gone", Duration::from_secs(5), || {
        workers.iter().all(|&w| !listed(w))
    });
}

#[test]
fn a_worker_command_that_is_no_fork_server_fails_with_how_it_ended() {
    let out = run(fibpool().args([
        "run",
        "--start-method",
        "forkserver",
        "--worker-cmd",
        "sh -c 'exit 7'",
        "0..5",
    ]));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(
            "fibpool: error: cannot start the pool: cannot start worker `sh -c 'exit 7' (as a fork server)`: the fork server (pid "
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(") exited with status 7 ("),
        "{}",
        out.stderr
    );
    // One that never answers is killed after the handshake timeout.
    let out = run(fibpool().args([
        "run",
        "--start-method",
        "forkserver",
        "--handshake-timeout",
        "0.3",
        "--worker-cmd",
        "sleep 1000",
        "0..5",
    ]));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .ends_with("did not answer within 300ms, and was killed\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_crash_in_a_forked_worker_is_survived_and_a_poison_chunk_named() {
    for method in FORKING {
        crash_and_poison(method);
    }
}

fn crash_and_poison(method: &str) {
    let dir = scratch_dir(&format!("{method}-crash"));
    let once = dir.join("fired");
    let out = run(fibpool()
        .env(FAULT, format!("crash@12;once={}", once.display()))
        .args(["run", "-w", "1", "-c", "8", "--start-method", method])
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
    let out = run(fibpool()
        .env(FAULT, "crash@100")
        .args(["run", "-w", "2", "-c", "8", "--start-method", method])
        .arg("0..200"));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.starts_with(
            "fibpool: error: the run failed: poison chunk 12 (indices 96..=103) took its worker down 3 times in a row; the last, worker "
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.ends_with("was killed by signal 6 (SIGABRT)\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_fork_server_pool_used_as_a_library_survives_an_error_and_is_used_again() {
    let pool = Pool::builder()
        .workers(2)
        .start_method(StartMethod::Forkserver)
        .worker_command(WorkerCommand::new(worker_bin()).env(FAULT, "crash@77"))
        .retries(1)
        .build()
        .unwrap();
    let values: Vec<_> = pool.map(0..50).collect::<Result<_, _>>().unwrap();
    assert_eq!(values, fib_table(49));
    let err = pool.submit([76, 77, 78]).unwrap().result().unwrap_err();
    assert!(matches!(err, PoolError::PoisonChunk { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(
            "poison chunk 0 (indices 76..=78) took its worker down once; the last, worker "
        ) && message.ends_with("was killed by signal 6 (SIGABRT)"),
        "{message}"
    );
    let values: Vec<_> = pool.map(100..150).collect::<Result<_, _>>().unwrap();
    assert_eq!(values, fib_table(149)[100..]);
    let stats = pool.worker_stats();
    assert!(
        stats.iter().filter(|w| w.ended.is_none()).count() >= 2,
        "{stats:?}"
    );
    pool.shutdown(true, false).unwrap();
}

#[test]
fn fork_takes_no_worker_command_and_needs_a_single_threaded_process() {
    let out = run(fibpool().args([
        "run",
        "--start-method",
        "fork",
        "--worker-cmd",
        "fibpool-worker",
        "0..5",
    ]));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "fibpool: error: --start-method fork forks this program's own worker: it takes no --worker-cmd\n"
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    // This test process runs the test harness's threads: a library pool
    // cannot fork here, and says why.
    let err = Pool::builder()
        .workers(1)
        .start_method(StartMethod::Fork)
        .build()
        .err()
        .expect("forking a multi-threaded process is refused");
    assert!(matches!(err, PoolError::Config(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("the fork start method forks this process, which must have one thread then (this process runs ")
            && message.ends_with("use forkserver"),
        "{message}"
    );
}

#[test]
fn startup_measures_each_start_method_in_the_same_rounds() {
    let dir = scratch_dir("startup-methods");
    let path = dir.join("s.json");
    let out = run(fibpool()
        .args(["startup", "-w", "2", "--rounds", "3", "--warmup", "1"])
        .args(["--start-method", "spawn,forkserver,fork,spawn", "--report"])
        .arg(&path));
    out.assert_success();
    let reports = report(&path);
    let reports = reports.as_array().expect("one report per method");
    let methods: Vec<&str> = reports
        .iter()
        .map(|r| r["start_method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["spawn", "forkserver", "fork"]);
    for r in reports {
        assert_eq!(r["workers"], 2, "{r}");
        assert_eq!(r["rounds"], 3, "{r}");
        // Every phase of the 2 workers of the 3 rounds was measured.
        for phase in ["spawn", "exec", "init", "ready", "first_task", "shutdown"] {
            let s = &r["phases"][phase];
            assert!(s["median_seconds"].as_f64().unwrap() > 0.0, "{phase}: {r}");
        }
        let parallel = !r["pool_ready_parallel"].is_null();
        assert_eq!(parallel, r["start_method"] == "spawn", "{r}");
        // Only forkserver's server is started again for every round (fork's
        // is made before the rounds), on its own: the pools of a process
        // share it, so a round is a pool's on a server that is up.
        let server = &r["server_start"];
        if r["start_method"] == "forkserver" {
            let median = server["median_seconds"].as_f64().unwrap();
            assert!(median > 0.0 && median.is_finite(), "{r}");
        } else {
            assert!(server.is_null(), "{r}");
        }
    }
    for method in ["spawn", "forkserver", "fork"] {
        assert!(
            out.stdout.contains(&format!(
                "2 workers, start method {method}, transport pipe, 3 rounds"
            )),
            "{}",
            out.stdout
        );
    }
    let out = run(fibpool().args([
        "startup",
        "--start-method",
        "spawn,fork",
        "--worker-cmd",
        "fibpool-worker",
    ]));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "fibpool: error: --start-method fork forks this program's own worker: it takes no --worker-cmd\n"
    );
}

#[test]
fn stress_through_forked_workers_is_exact_and_intact() {
    for method in FORKING {
        let dir = scratch_dir(&format!("{method}-stress"));
        let path = dir.join("s.json");
        let out = run(fibpool()
            .args(["stress", "-w", "2", "--count", "20", "--sizes", "8,64K"])
            .args(["--transport", "pipe,socket", "--start-method", method])
            .arg("--report")
            .arg(&path));
        out.assert_success();
        let report = report(&path);
        let results = report["results"].as_array().unwrap();
        assert_eq!(results.len(), 12, "{method}: {report}");
        for r in results {
            assert_eq!(
                (&r["messages"], &r["raw_messages"]),
                (&20.into(), &20.into()),
                "{method}: {r}"
            );
            for field in [
                "lost",
                "duplicated",
                "corrupted",
                "raw_lost",
                "raw_duplicated",
                "raw_corrupted",
            ] {
                assert_eq!(r[field], 0, "{method} {field}: {r}");
            }
        }
    }
}

#[test]
fn startup_sets_pythons_round_beside_each_method() {
    let dir = scratch_dir("startup-python");
    let path = dir.join("s.json");
    let out = run(fibpool()
        .args(["startup", "-w", "2", "--rounds", "2", "--warmup", "0"])
        .args(["--start-method", "fork,spawn", "--vs-python", "--report"])
        .arg(&path));
    out.assert_success();
    let reports = report(&path);
    for r in reports.as_array().unwrap() {
        let method = r["start_method"].as_str().unwrap();
        let python = &r["python_round"];
        let median = python["median_seconds"].as_f64().unwrap();
        // Python's slowest round is no faster than its fastest.
        assert!(
            python["max_seconds"].as_f64().unwrap() >= median && median > 0.0,
            "{r}"
        );
        assert!(
            r["python"].as_str().unwrap().starts_with("Python 3."),
            "{r}"
        );
        let line = format!(
            "x less than {}'s with {method}\n",
            r["python"].as_str().unwrap()
        );
        assert!(out.stdout.contains(&line), "{line}: {}", out.stdout);
    }
    // Nothing of the script is left in the temporary directory.
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("fibpool-startup-")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn startup_plots_a_waterfall_of_each_methods_median_round() {
    let dir = scratch_dir("startup-plot");
    let svg = dir.join("w.svg");
    let json = dir.join("s.json");
    let out = run(fibpool()
        .args(["startup", "-w", "2", "--rounds", "3", "--warmup", "0"])
        .args(["--start-method", "spawn,fork", "--plot"])
        .arg(&svg)
        .arg("--report")
        .arg(&json));
    out.assert_success();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(200)]);
    for label in [
        "spawn w2 #0",
        "spawn w2 #1",
        "fork w2 #0",
        "fork w2 #1",
        "floor: ",
    ] {
        assert!(text.contains(label), "{label} is not in the plot");
    }
    // The plotted round is a measured one: its workers, started in order.
    for r in report(&json).as_array().unwrap() {
        let round = r["median_round"].as_array().unwrap();
        assert_eq!(round.len(), 2, "{r}");
        let started: Vec<f64> = round
            .iter()
            .map(|w| w["started_seconds"].as_f64().unwrap())
            .collect();
        assert!(started[0] <= started[1], "{r}");
    }
    let out = run(fibpool().args(["startup", "--plot", "/nonexistent/dir/w.svg"]));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("fibpool: error: cannot create --plot file '/nonexistent/dir/w.svg': "),
        "{}",
        out.stderr
    );
}

#[test]
fn bench_measures_each_start_method_in_the_same_repeats() {
    let dir = scratch_dir("bench-methods");
    let (json, svg) = (dir.join("b.json"), dir.join("b.svg"));
    let out = run(fibpool()
        .args([
            "bench",
            "-w",
            "1,2",
            "--repeat",
            "2",
            "--start-method",
            "fork,spawn,fork",
        ])
        .arg("--report")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .arg("0..300"));
    out.assert_success();
    let report = report(&json);
    let workloads = report["workloads"].as_array().unwrap();
    let methods: Vec<&str> = workloads
        .iter()
        .map(|w| w["start_method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["fork", "spawn"], "{report}");
    for w in workloads {
        let rows = w["results"].as_array().unwrap();
        let workers: Vec<u64> = rows
            .iter()
            .map(|r| r["workers"].as_u64().unwrap())
            .collect();
        assert_eq!(workers, [1, 2], "{w}");
        for r in rows {
            let pool = r["pool_seconds"].as_f64().unwrap();
            assert!(
                pool > 0.0 && r["ceiling_seconds"].as_f64().unwrap() > 0.0,
                "{r}"
            );
        }
        assert!(
            out.stdout.contains(&format!(
                "indices: 0..300 (300 indices), start method {}, transport pipe, median of 2",
                w["start_method"].as_str().unwrap()
            )),
            "{}",
            out.stdout
        );
    }
    let plot = std::fs::read_to_string(&svg).unwrap();
    for series in ["indices (fork) measured", "indices (spawn) measured"] {
        assert!(plot.contains(series), "{series} is not in the plot");
    }
}

#[test]
fn a_fork_server_that_cannot_be_started_again_fails_the_run_with_why() {
    // The worker command serves as a fork server once; started again, it
    // exits with status 9.
    let dir = scratch_dir("forkserver-no-restart");
    let (flag, path) = (dir.join("started"), dir.join("r.json"));
    let script = format!(
        "if [ -e {f} ]; then exit 9; fi; touch {f}; exec {w}",
        f = flag.display(),
        w = worker_bin()
    );
    let indices: Vec<String> = (0..300).map(|i| (1_000_000 + 7 * i).to_string()).collect();
    let running = Running::start(
        fibpool()
            .args(["run", "-w", "2", "-c", "1", "--output", "hex"])
            .args(["--start-method", "forkserver", "--report"])
            .arg(&path)
            .args(["--worker-cmd", &format!("sh -c '{script}'")])
            .args(&indices),
    );
    let (server, workers) = server_and_workers(&running, 2);
    wait_until("the workers are computing", Duration::from_secs(60), || {
        workers.iter().all(|&w| cpu_ticks(w) >= 2)
    });
    assert!(signal_child_of(running.pid(), server, libc::SIGKILL));
    let out = running.finish();
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    let line = out.stderr.lines().last().unwrap();
    assert!(
        line.starts_with("fibpool: error: the run failed: "),
        "{}",
        out.stderr
    );
    assert!(
        line.contains("the fork server (pid ") && line.contains(") exited with status 9 ("),
        "{}",
        out.stderr
    );
    let report = report(&path);
    assert_eq!(report["outcome"], "failed", "{report}");
}

#[test]
fn a_fork_run_leaves_no_orphan_for_the_sessions_reaper() {
    // A process of its own (not this test process, whose other tests' children
    // it would take) reaps orphans, runs fibpool, and counts what comes to it:
    // a fork server left to die after fibpool exits would.
    const REAPER: &str = r#"
import ctypes, os, subprocess, sys, time
assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
orphans = 0
until = time.monotonic() + 0.5  # an orphan comes within moments of the exit
while time.monotonic() < until:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        pid = 0
    orphans += pid > 0
    time.sleep(0.01)
print(code, orphans)
"#;
    for (input, code) in [("0..100", 0), ("0..x", 2)] {
        let out = run(std::process::Command::new("python3")
            .args(["-c", REAPER, env!("CARGO_BIN_EXE_fibpool")])
            .args(["run", "--start-method", "fork", "--output", "none", input]));
        out.assert_success();
        assert_eq!(
            out.stdout,
            format!("{code} 0\n"),
            "{input}: exit status, orphans"
        );
    }
}

/// A fork server whose coordinator has already closed its socket (one that
/// stopped at a usage error, having forked the server first) ends quietly:
/// no "Broken pipe" line beside the coordinator's one.
#[test]
fn a_fork_server_whose_coordinator_is_gone_ends_quietly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two new descriptors into `fds`.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned here alone.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(ours);
    // Its own stdin: `run` would give it a pipe.
    let out = fibpool()
        .arg("worker")
        .env("FIBPOOL_FORK_SERVER", std::process::id().to_string())
        .stdin(std::process::Stdio::from(theirs))
        .output()
        .expect("the binary under test starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "");
}
