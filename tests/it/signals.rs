//! The coordinator's own end: signals, SIGKILL, and a reader that goes away.
//! Every wait is a bounded poll.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::*;

/// A run long enough to be interrupted: about 15 s of work on two workers.
fn long_run(transport: &str) -> std::process::Command {
    let mut cmd = fibpool();
    cmd.args([
        "run",
        "-w",
        "2",
        "-c",
        "1",
        "--output",
        "none",
        "--transport",
        transport,
        "2000x2000000",
    ]);
    cmd
}

const TRANSPORTS: [&str; 2] = ["pipe", "shm"];

#[test]
fn sigint_and_sigterm_stop_the_run_and_reap_every_worker() {
    for (sig, name, code, transport) in [
        (libc::SIGINT, "SIGINT", 130, "pipe"),
        (libc::SIGTERM, "SIGTERM", 143, "pipe"),
        (libc::SIGINT, "SIGINT", 130, "shm"),
        (libc::SIGTERM, "SIGTERM", 143, "shm"),
    ] {
        let running = Running::start(&mut long_run(transport));
        let workers = running.workers(2);
        assert_eq!(workers.len(), 2, "{name}: {workers:?}");
        signal(running.pid(), sig);
        let out = running.finish();
        assert_eq!(out.code(), Some(code), "{name}: {}", out.stderr);
        assert_eq!(
            out.stderr,
            format!("fibpool: stopped by {name}; 2 worker processes killed and reaped\n"),
            "{transport}"
        );
        // Reaped by the coordinator itself: not even a zombie is left.
        for pid in workers {
            assert!(
                !listed(pid),
                "{transport} {name}: worker {pid} is still in /proc"
            );
        }
    }
}

#[test]
fn workers_die_with_the_coordinator_by_their_death_signal() {
    for transport in TRANSPORTS {
        die_with_the_coordinator(transport);
    }
}

fn die_with_the_coordinator(transport: &str) {
    // Every worker hangs on its first chunk and never reads its input
    // again, so the end of its input cannot stop it: only the
    // PR_SET_PDEATHSIG it asked for when the Hello came can.
    let running = Running::start(fibpool().env("FIBPOOL_TEST_FAULT", "hang@5").args([
        "run",
        "-w",
        "2",
        "-c",
        "1",
        "--transport",
        transport,
        "5x100",
    ]));
    let workers = running.workers(2);
    assert_eq!(workers.len(), 2, "{workers:?}");
    wait_until(
        "both workers hang in their first chunk",
        Duration::from_secs(60),
        || workers.iter().all(|&pid| in_syscall(pid, libc::SYS_futex)),
    );
    signal(running.pid(), libc::SIGKILL);
    wait_until("the workers exit", Duration::from_secs(1), || {
        workers.iter().all(|&pid| !alive(pid))
    });
    let out = running.finish();
    assert_eq!(out.status.code(), None, "killed by a signal");
}

#[test]
fn output_into_a_closed_pipe_is_a_quiet_exit() {
    let mut child = fibpool()
        .args(["run", "-w", "2", "0..100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "0\t0\n");
    let mut workers = Vec::new();
    wait_until("two workers run", Duration::from_secs(60), || {
        workers = children(child.id());
        workers.len() == 2
    });
    drop(stdout); // like `| head -1`
    let mut status = None;
    wait_until("fibpool exits", Duration::from_secs(60), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(0));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(stderr, "", "no panic, no message");
    for pid in workers {
        assert!(!listed(pid), "worker {pid} is still in /proc");
    }
}

#[test]
fn garbage_piped_into_a_worker_gets_one_line_and_a_failure() {
    let hello = fibpool_protocol::encode_frame(&fibpool_protocol::Request::Hello(
        fibpool_protocol::CoordinatorHello {
            version: fibpool_protocol::PROTOCOL_VERSION,
            pid: 1,
        },
    ))
    .unwrap();
    let future_hello = [&[3u8, 0, 0, 0][..], &[0, 99, 7]].concat();
    let mut garbage_after_hello = hello.clone();
    garbage_after_hello.extend_from_slice(&[4, 0, 0, 0, 0xff, 0xfe, 0xfd, 0xfc]);
    let version_mismatch = format!(
        "protocol version mismatch: peer speaks version 99, this side speaks {}",
        fibpool_protocol::PROTOCOL_VERSION
    );
    let cases: [(&[u8], &str); 5] = [
        (
            b"hello, worker\n",
            "frame of 1819043176 bytes exceeds the maximum frame length of 67108864 bytes",
        ),
        (
            &hello[..3],
            "stream ended inside a frame header: got 3 of 4 bytes",
        ),
        (
            &hello[..hello.len() - 1],
            "stream ended inside a frame payload: got 2 of 3 bytes",
        ),
        (&future_hello, &version_mismatch),
        (&garbage_after_hello, "undecodable frame payload: "),
    ];
    for (input, message) in cases {
        let out = run_with_input(fibpool().arg("worker"), input);
        assert_eq!(out.code(), Some(1), "{input:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{input:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("fibpool worker (pid ") && out.stderr.contains(message),
            "{input:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_tcp_worker_without_its_token_says_so_and_fails() {
    let out = run(Command::new(worker_bin())
        .env("FIBPOOL_TCP", "127.0.0.1:9")
        .stdin(Stdio::null()));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .ends_with("error: cannot connect to FIBPOOL_TCP=\"127.0.0.1:9\": no token on stdin\n"),
        "{}",
        out.stderr
    );
    let out = run(Command::new(worker_bin())
        .env("FIBPOOL_TCP", "nowhere")
        .stdin(Stdio::null()));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.ends_with(
            "error: cannot connect to FIBPOOL_TCP=\"nowhere\": not an address and port\n"
        ),
        "{}",
        out.stderr
    );
}

/// A token line sent to a worker that was not told FIBPOOL_TCP (a worker
/// command that runs its own ssh does not pass it on) is named for what it
/// likely is.
#[test]
fn a_token_line_on_a_pipe_worker_is_named_for_what_it_is() {
    let out = run_with_input(
        Command::new(worker_bin()).env_remove("FIBPOOL_TCP"),
        b"0123456789abcdef0123456789abcdef\n",
    );
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.ends_with(
            "error: frame of 858927408 bytes exceeds the maximum frame length of 67108864 bytes \
             (it reads as a tcp worker's token line: FIBPOOL_TCP did not reach this worker)\n"
        ),
        "{}",
        out.stderr
    );
}

/// A worker that leaves a child of its own behind (a shell's `sleep &`,
/// which holds no descriptor of the pool's) leaves no orphan once it ends:
/// what is left of its process group is killed before it is reaped. Old
/// failure: the sleep lived on, adopted by init.
#[test]
fn a_worker_leaves_no_child_of_its_own_behind() {
    for method in ["spawn", "forkserver"] {
        let dir = scratch_dir(&format!("left-child-{method}"));
        let pidfile = dir.join("sleep.pid");
        let command = format!(
            "sh -c 'sleep 60 </dev/null >/dev/null 2>&1 & echo $! > {}; exec {}'",
            pidfile.display(),
            worker_bin()
        );
        let out = run(fibpool()
            .args(["run", "-w", "1", "--start-method", method, "0..3"])
            .args(["--worker-cmd", &command]));
        out.assert_success();
        assert_eq!(out.stdout, expected_lines(&[0, 1, 2], 10), "{method}");
        wait_gone(&format!("{method}: the worker's sleep"), &pidfile);
    }
}

/// A run started with SIGHUP ignored (nohup) goes on through a hangup.
/// Old failure: the handler fibpool installs replaced the inherited
/// SIG_IGN, and the hangup stopped the run (exit 129).
#[test]
fn a_hangup_ignored_from_the_start_stays_ignored() {
    let mut cmd = fibpool();
    cmd.args(["run", "-w", "1", "-c", "1", "--output", "none", "300000x6"]);
    // SAFETY: signal(2) only, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        })
    };
    let running = Running::start(&mut cmd);
    running.workers(1);
    signal(running.pid(), libc::SIGHUP);
    let out = running.finish();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("fibpool: 6 indices in 6 chunks on 1 worker: "),
        "{}",
        out.stderr
    );
}
