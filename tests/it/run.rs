//! `fibpool run` against an independent computation, line by line.

use std::time::Duration;

use crate::util::*;

fn check(args: &[&str], indices: &[u64]) {
    let out = run(fibpool().arg("run").args(args));
    out.assert_success();
    assert_same_lines(&out.stdout, &expected_lines(indices, 10));
}

#[test]
fn ranges_lists_and_repeats_with_1_2_and_5_workers_and_several_chunk_sizes() {
    let mut indices: Vec<u64> = (0..300).collect();
    indices.extend([1000, 7, 7, 7, 2]);
    indices.extend(250..=260);
    indices.extend([0; 4]);
    let tokens = ["0..300", "1000", "7x3", "2", "250..=260", "0x4"];
    for workers in ["1", "2", "5"] {
        for chunk in [None, Some("1"), Some("7"), Some("64"), Some("10000")] {
            let mut args = vec!["-w", workers];
            if let Some(k) = chunk {
                args.extend(["-c", k]);
            }
            args.extend(tokens);
            check(&args, &indices);
        }
    }
}

#[test]
fn a_range_splits_across_workers() {
    let path = scratch_dir("range").join("r.json");
    let out = run(fibpool()
        .args(["run", "-w", "2", "-c", "500", "--report"])
        .arg(&path)
        .arg("0..5000"));
    out.assert_success();
    assert_same_lines(
        &out.stdout,
        &expected_lines(&(0..5000).collect::<Vec<_>>(), 10),
    );
    // Ten chunks, each answered once, and each worker took its first two
    // before any was answered.
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let chunks: Vec<u64> = report["worker_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["chunks"].as_u64().unwrap())
        .collect();
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks.iter().sum::<u64>(), 10);
    assert!(chunks.iter().all(|&c| c >= 2), "{chunks:?}");
}

/// Chunks of 4000 values near F(10000) answer in several parts each
/// (about 3.5 MB raw, 7 MB of hex, more than a shared ring holds), on
/// every transport: every value comes
/// once, in order, as an independent computation has it.
#[test]
fn answers_in_parts_are_whole_and_in_order_on_every_transport() {
    let indices: Vec<u64> = (0..12_000).collect();
    let want = expected_lines(&indices, 16);
    for transport in ["pipe", "socket", "tcp", "shm"] {
        let out = run(fibpool().args([
            "run",
            "-w",
            "2",
            "-c",
            "4000",
            "--output",
            "hex",
            "--transport",
            transport,
            "0..12000",
        ]));
        out.assert_success();
        assert_same_lines(&out.stdout, &want);
    }
}

#[test]
fn the_socket_transport_computes_the_same_values() {
    let out = run(fibpool().args([
        "run",
        "-w",
        "2",
        "-c",
        "16",
        "--transport",
        "socket",
        "0..300",
        "20000",
    ]));
    out.assert_success();
    let indices: Vec<u64> = (0..300).chain([20000]).collect();
    assert_same_lines(&out.stdout, &expected_lines(&indices, 10));
}

#[test]
fn the_tcp_transport_computes_the_same_values() {
    let out = run(fibpool().args([
        "run",
        "-w",
        "2",
        "-c",
        "16",
        "--transport",
        "tcp",
        "0..300",
        "20000",
    ]));
    out.assert_success();
    let indices: Vec<u64> = (0..300).chain([20000]).collect();
    assert_same_lines(&out.stdout, &expected_lines(&indices, 10));
}

/// Over tcp a worker's stdout only says whether it lives: what a wrapper
/// prints there before the worker starts (a login script's greeting; here
/// more than a pipe holds, so the wrapper waits for it to be read) is read
/// and dropped.
#[test]
fn a_tcp_worker_whose_wrapper_prints_first_computes_the_same_values() {
    let worker = format!("sh -c 'yes hello | head -c 200000; exec {}'", worker_bin());
    let out = run(fibpool().args([
        "run",
        "-w",
        "2",
        "--transport",
        "tcp",
        "--worker-cmd",
        &worker,
        "0..100",
    ]));
    out.assert_success();
    assert_same_lines(
        &out.stdout,
        &expected_lines(&(0..100).collect::<Vec<_>>(), 10),
    );
}

#[test]
fn max_tasks_per_child_recycles_workers_and_the_report_says_so() {
    let path = scratch_dir("recycle").join("r.json");
    let out = run(fibpool()
        .args([
            "run",
            "-w",
            "1",
            "-c",
            "1",
            "--max-tasks-per-child",
            "3",
            "--report",
        ])
        .arg(&path)
        .arg("0..10"));
    out.assert_success();
    assert_same_lines(
        &out.stdout,
        &expected_lines(&(0..10).collect::<Vec<_>>(), 10),
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(report["recycled"], 3, "{report}");
    assert_eq!(report["worker_restarts"], 0, "{report}");
    let workers: Vec<(u64, Option<&str>)> = report["worker_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["chunks"].as_u64().unwrap(), w["ended"].as_str()))
        .collect();
    // Three processes did three chunks each, the fourth the last one.
    assert_eq!(
        workers,
        [
            (3, Some("recycled")),
            (3, Some("recycled")),
            (3, Some("recycled")),
            (1, None)
        ]
    );
    assert!(
        out.stderr.contains("; 3 workers recycled"),
        "{}",
        out.stderr
    );
}

#[test]
fn hex_output_is_lowercase_without_prefix() {
    let out = run(fibpool().args(["run", "-w", "2", "--output", "hex", "0..200", "4000"]));
    out.assert_success();
    let indices: Vec<u64> = (0..200).chain([4000]).collect();
    assert_same_lines(&out.stdout, &expected_lines(&indices, 16));
    assert!(!out.stdout.contains("0x"));
    assert_eq!(
        out.stdout.lines().nth(100).unwrap(),
        "100\t1333db76a7c594bfc3"
    );
}

#[test]
fn output_none_prints_nothing_but_computes() {
    let out = run(fibpool().args(["run", "-w", "2", "--output", "none", "0..2000"]));
    out.assert_success();
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("2000 indices"), "{}", out.stderr);
}

#[test]
fn unordered_prints_every_value_once() {
    let out = run(fibpool().args(["run", "-w", "3", "-c", "3", "--unordered", "0..400", "9x5"]));
    out.assert_success();
    let indices: Vec<u64> = (0..400).chain([9; 5]).collect();
    let mut got: Vec<_> = out.stdout.lines().collect();
    let want_text = expected_lines(&indices, 10);
    let mut want: Vec<_> = want_text.lines().collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn input_file_and_stdin() {
    let dir = scratch_dir("input");
    let file = dir.join("indices.txt");
    std::fs::write(&file, "5, 3..6\n\n 10x2,0..=2\n").unwrap();
    let want = expected_lines(&[5, 3, 4, 5, 10, 10, 0, 1, 2], 10);

    let out = run(fibpool().args(["run", "-w", "2", "--input"]).arg(&file));
    out.assert_success();
    assert_same_lines(&out.stdout, &want);

    let out = run_with_input(
        fibpool().args(["run", "-w", "2", "--input", "-"]),
        b"5, 3..6\n\n 10x2,0..=2\n",
    );
    out.assert_success();
    assert_same_lines(&out.stdout, &want);
}

#[test]
fn the_lean_worker_binary_serves_through_worker_cmd() {
    let out = run(fibpool().args([
        "run",
        "-w",
        "2",
        "-c",
        "16",
        "--worker-cmd",
        worker_bin(),
        "0..100",
        "20000",
    ]));
    out.assert_success();
    let indices: Vec<u64> = (0..100).chain([20000]).collect();
    assert_same_lines(&out.stdout, &expected_lines(&indices, 10));
}

#[test]
fn big_indices_near_the_default_maximum() {
    // One value above the per-chunk byte budget, and its neighbours.
    let out = run(fibpool().args(["run", "-w", "2", "--output", "hex", "3000000..3000002"]));
    out.assert_success();
    let lines: Vec<_> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    // F(3000000) mod 2^64 by iteration, independent of the big-integer kernels.
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..3_000_000 {
        (a, b) = (b, a.wrapping_add(b));
    }
    let hex = lines[0].strip_prefix("3000000\t").unwrap();
    assert_eq!(u64::from_str_radix(&hex[hex.len() - 16..], 16).unwrap(), a);
    let hex = lines[1].strip_prefix("3000001\t").unwrap();
    assert_eq!(u64::from_str_radix(&hex[hex.len() - 16..], 16).unwrap(), b);
    // F(n) has floor(n log10(phi) - log10(sqrt 5)) + 1 decimal digits; in hex, n log16(phi) - log16(sqrt 5).
    let digits = (3_000_000f64 * 1.618033988749895f64.log(16.0) - 5f64.sqrt().log(16.0)).floor()
        as usize
        + 1;
    assert_eq!(hex.len(), digits);
}

#[test]
fn only_the_worker_started_for_a_socket_may_connect_to_it() {
    use interprocess::local_socket::{GenericNamespaced, Stream, prelude::*};
    use std::io::Read;

    let dir = scratch_dir("impostor");
    let go = dir.join("go");
    // The worker waits for the test's word before it connects, so the
    // impostor is first in line; at most a minute, so that a failed test
    // leaves no shell behind (it is no fibpool worker: it would not die
    // with the coordinator).
    let worker = format!(
        "sh -c 'i=0; while [ ! -e {go} ] && [ $i -lt 6000 ]; do sleep 0.01; i=$((i+1)); done; exec {bin}'",
        go = go.display(),
        bin = worker_bin()
    );
    let running = Running::start(fibpool().args([
        "run",
        "-w",
        "1",
        "--transport",
        "socket",
        "--worker-cmd",
        &worker,
        "0..50",
    ]));
    let shell = running.workers(1)[0];
    // Anyone running as this user can read the name from the worker's
    // environment, once it has exec'd.
    let mut name = None;
    wait_until(
        "the worker's environment names its socket",
        Duration::from_secs(60),
        || {
            let environ = std::fs::read(format!("/proc/{shell}/environ")).unwrap_or_default();
            name = environ
                .split(|&b| b == 0)
                .find_map(|var| var.strip_prefix(b"FIBPOOL_SOCKET="))
                .map(|name| String::from_utf8(name.to_vec()).unwrap());
            name.is_some()
        },
    );
    let name = name.unwrap();
    let mut impostor = Stream::connect(name.as_str().to_ns_name::<GenericNamespaced>().unwrap())
        .expect("the socket accepts connections");
    std::fs::write(&go, "").unwrap();
    let out = running.finish();
    out.assert_success();
    assert_same_lines(
        &out.stdout,
        &expected_lines(&(0..50).collect::<Vec<_>>(), 10),
    );
    // The impostor was closed unanswered: not one byte of the protocol.
    let mut got = Vec::new();
    impostor.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"");
}

#[test]
fn only_a_connection_that_brings_its_workers_token_is_served_over_tcp() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let dir = scratch_dir("tcp-impostor");
    let go = dir.join("go");
    // As for the local socket: the worker connects only once the
    // impostors are in line, at most a minute later.
    let worker = format!(
        "sh -c 'i=0; while [ ! -e {go} ] && [ $i -lt 6000 ]; do sleep 0.01; i=$((i+1)); done; exec {bin}'",
        go = go.display(),
        bin = worker_bin()
    );
    // Three seconds: less than the silent ones below would take, were their
    // tokens awaited one after another.
    let running = Running::start(fibpool().args([
        "run",
        "-w",
        "1",
        "--transport",
        "tcp",
        "--handshake-timeout",
        "3",
        "--worker-cmd",
        &worker,
        "0..50",
    ]));
    let shell = running.workers(1)[0];
    // The port is in the worker's environment; the token is not.
    let mut address = None;
    wait_until(
        "the worker's environment names its port",
        Duration::from_secs(60),
        || {
            let environ = std::fs::read(format!("/proc/{shell}/environ")).unwrap_or_default();
            address = environ
                .split(|&b| b == 0)
                .find_map(|var| var.strip_prefix(b"FIBPOOL_TCP="))
                .map(|a| String::from_utf8(a.to_vec()).unwrap());
            address.is_some()
        },
    );
    let address = address.unwrap();
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    let environ = std::fs::read(format!("/proc/{shell}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains("TOKEN"),
        "the token is not in the environment"
    );
    // One guesses a token, one brings half of one, five say nothing at all.
    let mut guesser = TcpStream::connect(&address).expect("the port accepts connections");
    guesser
        .write_all(b"0123456789abcdef0123456789abcdef\n")
        .unwrap();
    let mut dribbler = TcpStream::connect(&address).unwrap();
    dribbler.write_all(b"0123456789abcdef").unwrap();
    let mut silent: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    std::fs::write(&go, "").unwrap();
    let out = running.finish();
    out.assert_success();
    assert_same_lines(
        &out.stdout,
        &expected_lines(&(0..50).collect::<Vec<_>>(), 10),
    );
    // All were closed unanswered: not one byte of the protocol.
    for impostor in [&mut guesser, &mut dribbler].into_iter().chain(&mut silent) {
        let mut got = Vec::new();
        let _ = impostor.read_to_end(&mut got);
        assert_eq!(got, b"");
    }
}

/// The decimal digits of F(n), n >= 3.
fn decimal_digits(n: u64) -> usize {
    let phi = (1.0 + 5f64.sqrt()) / 2.0;
    ((n as f64) * phi.log10() - 5f64.sqrt().log10()).floor() as usize + 1
}

#[test]
fn values_bigger_than_a_part_print_whole_in_decimal_and_hex() {
    // F(13 000 000): 2.7 MB of decimal digits, 1.1 MB of hex, so it comes
    // in pieces; over pipes, shared memory, and from a worker that dies
    // after its first piece (replaced, the value computed again).
    const BIG: u64 = 13_000_000;
    let dir = scratch_dir("big-values");
    let once = format!("crash-mid@{BIG};once={}", dir.join("fired").display());
    for (output, radix, transport, fault) in [
        ("hex", 16, "pipe", None),
        ("decimal", 10, "shm", None),
        ("hex", 16, "shm", Some(&once)),
    ] {
        let mut cmd = fibpool();
        if let Some(fault) = fault {
            cmd.env("FIBPOOL_TEST_FAULT", fault);
        }
        let report = dir.join(format!("{output}-{transport}.json"));
        let out = run(cmd
            .args([
                "run",
                "-w",
                "2",
                "--output",
                output,
                "--transport",
                transport,
            ])
            .args(["--max-index", "20000000", "--report"])
            .arg(&report)
            .args(["5", &BIG.to_string(), "7"]));
        out.assert_success();
        let lines: Vec<_> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{output} {transport}");
        assert_eq!(
            [lines[0], lines[2]],
            ["5\t5", if radix == 16 { "7\td" } else { "7\t13" }]
        );
        let (n, digits) = lines[1].split_once('\t').unwrap();
        assert_eq!(n, BIG.to_string());
        let want = if radix == 16 {
            hex_digits(BIG)
        } else {
            decimal_digits(BIG)
        };
        assert_eq!(
            digits.len(),
            want,
            "{output} {transport}: F({BIG})'s digits"
        );
        for m in [(1u128 << 61) - 1, 1_000_000_007, 998_244_353] {
            assert_eq!(
                digits_mod(digits, radix, m),
                fib_mod(BIG, m),
                "{output} {transport}: F({BIG}) mod {m}"
            );
        }
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let restarts = u64::from(fault.is_some());
        assert_eq!(
            report["worker_restarts"], restarts,
            "{output} {transport}: {report}"
        );
    }
}

#[test]
fn a_value_too_big_for_the_memory_it_may_use_is_refused_up_front() {
    // Under a 4 GiB address-space limit, F(3 000 000 000) in decimal (about
    // 4.4 GB to compute and hold) is refused before any worker starts
    // (usage, exit 2), naming the index, both sizes and the limit;
    // F(300 000 000) is not.
    let limited = |indices: &[&str]| {
        let mut cmd = fibpool();
        cmd.args(["run", "--max-index", "20000000000"])
            .args(indices);
        // SAFETY: setrlimit only, between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                let limit = libc::rlimit {
                    rlim_cur: 4 << 30,
                    rlim_max: 4 << 30,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        };
        run(&mut cmd)
    };
    let out = limited(&["1", "3000000000"]);
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "fibpool: error: F(3000000000) would need about 4.41 GB of memory to compute and \
         hold, more than the 4.29 GB one process may map (RLIMIT_AS)\n"
    );
    assert_eq!(out.stdout, "");
    limited(&["--output", "none", "300000000"]).assert_success();
}

#[test]
fn values_computed_at_once_must_fit_in_the_memory_cgroup_together() {
    // In a memory cgroup limited to 4 GiB, values computed at once on
    // several workers need their memory together: F(1 600 000 000) in
    // decimal needs about 2.35 GB alone, 4.70 GB with the next one (or a
    // copy of itself) beside it. Old failure: the limit was MemAvailable
    // or RLIMIT_AS only, and the run started.
    let cgroup = MemoryCgroup::new("at-once", 4 << 30);
    let in_cgroup = |args: &[&str]| {
        let mut cmd = fibpool();
        cmd.args(["run", "--max-index", "20000000000"]).args(args);
        cgroup.enter(&mut cmd);
        run(&mut cmd)
    };
    // With --hosts the pool is the hosts' counts, not -w (the count of a
    // host that gives none): two workers here. Old failure: -w 1 was
    // counted, and the pool refused the batch once its workers had started
    // (exit 1).
    // F(300 000 000) in decimal is 62.7 MB, under a frame's 64 MiB: ten of
    // them need 4.41 GB at once. Old failure: values under 64 MiB were
    // never counted, and the ten started.
    for (args, first, clause, need) in [
        (
            &["-w", "2", "1600000001", "1600000000"][..],
            1_600_000_001u64,
            "and the next biggest value, computed at once on two workers,",
            "4.70",
        ),
        (
            &["-w", "2", "1600000000x2"][..],
            1_600_000_000,
            "and the next biggest value, computed at once on two workers,",
            "4.70",
        ),
        (
            &["-w", "1", "--hosts", "2/:", "1600000001", "1600000000"][..],
            1_600_000_001,
            "and the next biggest value, computed at once on two workers,",
            "4.70",
        ),
        (
            &["-w", "10", "300000000x10"][..],
            300_000_000,
            "and the next 9 biggest values, computed at once on 10 workers,",
            "4.41",
        ),
    ] {
        let out = in_cgroup(args);
        assert_eq!(out.code(), Some(2), "{args:?}: {}", out.stderr);
        let want = format!(
            "fibpool: error: F({first}) {clause} would need about {need} GB of memory to \
             compute and hold, more than the "
        );
        assert!(out.stderr.starts_with(&want), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr
                .ends_with(" GB left in this process's memory cgroup\n"),
            "{args:?}: {}",
            out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert_eq!(out.stdout, "");
    }
    // One of them alone fits, and is computed (a small one, to be quick).
    let out = in_cgroup(&["-w", "1", "--output", "hex", "10000000"]);
    out.assert_success();
    assert_eq!(
        out.stdout.len(),
        "10000000\t".len() + hex_digits(10_000_000) + 1
    );
}
