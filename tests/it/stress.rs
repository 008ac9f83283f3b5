//! `fibpool stress`: short runs of every pattern on both transports with
//! integrity asserted, and frames over the cap refused on both sides.

use serde_json::Value;

use crate::util::*;

#[test]
fn every_pattern_on_both_transports_is_exact_and_intact() {
    let dir = scratch_dir("stress");
    let path = dir.join("stress.json");
    // 160 messages split evenly over 10 slices, 2 fanout phases and 2 workers.
    let out = run(fibpool()
        .args(["stress", "-w", "2", "--pattern", "pingpong,stream,fanout"])
        .args([
            "--sizes",
            "8,64K",
            "--count",
            "160",
            "--transport",
            "pipe,socket",
        ])
        .arg("--report")
        .arg(&path));
    out.assert_success();
    let report: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    let mut cells = Vec::new();
    for r in results {
        let cell = format!("{} {} {}", r["transport"], r["pattern"], r["size_bytes"]);
        for key in ["messages", "raw_messages"] {
            assert_eq!(r[key], 160, "{cell}: {key}");
        }
        for key in [
            "lost",
            "duplicated",
            "corrupted",
            "raw_lost",
            "raw_duplicated",
            "raw_corrupted",
        ] {
            assert_eq!(r[key], 0, "{cell}: {key}");
        }
        for key in [
            "rtt_p50_seconds",
            "rtt_p99_seconds",
            "throughput_bytes_per_second",
            "raw_rtt_p50_seconds",
            "raw_throughput_bytes_per_second",
        ] {
            let v = r[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{cell}: no {key}"));
            assert!(v.is_finite() && v > 0.0, "{cell}: {key} = {v}");
        }
        assert!(
            r["rtt_p50_seconds"].as_f64() <= r["rtt_p99_seconds"].as_f64(),
            "{cell}"
        );
        let workers = if r["pattern"] == "fanout" { 2 } else { 1 };
        assert_eq!(r["workers"], workers, "{cell}");
        cells.push(cell);
    }
    let want: Vec<String> = ["\"pipe\"", "\"socket\""]
        .iter()
        .flat_map(|t| {
            ["\"pingpong\"", "\"stream\"", "\"fanout\""]
                .iter()
                .flat_map(move |p| ["8", "65536"].map(|s| format!("{t} {p} {s}")))
        })
        .collect();
    assert_eq!(cells, want);
    assert!(out.stdout.contains("lost/dup/bad"), "{}", out.stdout);
}

#[test]
fn very_short_slices_never_wait_on_nothing() {
    // Slices of a few microseconds: the time limit often passes between two
    // checks. A driver that then waited for an answer with nothing in flight
    // hung until the watchdog killed its workers (an "incident"); before the
    // fix about one run in four did, so ten runs all but always catch it.
    for _ in 0..10 {
        let out = run(fibpool().args([
            "stress",
            "-w",
            "2",
            "--pattern",
            "pingpong,fanout",
            "--sizes",
            "8",
            "--duration",
            "0.002",
        ]));
        out.assert_success();
        assert!(!out.stdout.contains("incident"), "{}", out.stdout);
    }
}

#[test]
fn a_size_over_the_cap_is_a_usage_error() {
    let out = run(fibpool().args(["stress", "--sizes", "8,64M"]));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "fibpool: error: size 64M (67108864 bytes) is above the largest payload a frame carries (67108800 bytes)\n"
    );
    assert_eq!(out.stdout, "");
}

/// A handshake frame from the coordinator, as bytes on the wire.
fn hello_frame() -> Vec<u8> {
    fibpool_protocol::encode_frame(&fibpool_protocol::Request::Hello(
        fibpool_protocol::CoordinatorHello {
            version: fibpool_protocol::PROTOCOL_VERSION,
            pid: 1,
        },
    ))
    .unwrap()
}

#[test]
fn a_worker_refuses_a_frame_over_the_cap() {
    let mut input = hello_frame();
    input.extend_from_slice(&(64u32 << 20 | 1).to_le_bytes());
    input.extend_from_slice(&[0; 100]);
    let mut fibpool_worker = fibpool();
    fibpool_worker.arg("worker");
    for mut worker in [fibpool_worker, std::process::Command::new(worker_bin())] {
        let out = run_with_input(&mut worker, &input);
        assert_eq!(out.code(), Some(1), "{}", out.stderr);
        assert!(
            out.stderr.ends_with(
                "error: frame of 67108865 bytes exceeds the maximum frame length of 67108864 bytes\n"
            ),
            "{}",
            out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
}

#[test]
fn the_coordinator_refuses_a_frame_over_the_cap() {
    // A "worker" whose first frame announces 4 GiB, then waits for its input to end.
    let out = run(fibpool()
        .args(["run", "-w", "1", "5", "--worker-cmd"])
        .arg(r"sh -c 'printf \\377\\377\\377\\377; exec cat >/dev/null'"));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    let line = out.stderr.trim_end();
    // No worker of that kind can start: the pool is broken, and says why.
    assert!(
        line.starts_with("fibpool: error: the run failed: the pool is broken: worker 0 (pid "),
        "{line}"
    );
    assert!(
        line.ends_with(") sent a bad frame before its handshake: frame of 4294967295 bytes exceeds the maximum frame length of 67108864 bytes; 3 workers in a row failed to start"),
        "{line}"
    );
    assert_eq!(out.stdout, "");
}
