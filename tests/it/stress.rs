//! `fibpool stress`: short runs of every pattern on every transport with
//! integrity asserted, frames over the cap refused on both sides, and
//! Python's multiprocessing measured beside them.

use serde_json::Value;

use crate::util::*;

#[test]
fn every_pattern_on_every_transport_is_exact_and_intact() {
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
            "pipe,socket,tcp,shm",
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
    let want: Vec<String> = ["\"pipe\"", "\"socket\"", "\"tcp\"", "\"shm\""]
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

#[test]
fn stress_vs_python_sets_pythons_pipe_and_queue_beside_fibpools() {
    let dir = scratch_dir("stress-python");
    let path = dir.join("stress.json");
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out = run(fibpool()
        .env("TMPDIR", &tmp)
        .args(["stress", "--pattern", "pingpong,stream,fanout", "-w", "2"])
        .args(["--sizes", "8,64K", "--count", "100", "--vs-python"])
        .arg("--report")
        .arg(&path));
    out.assert_success();
    let report: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let python = &report["python"];
    assert!(
        python["python"].as_str().unwrap().starts_with("3."),
        "{python}"
    );
    assert_eq!(python["against"], "pipe");
    let rows = python["rows"].as_array().unwrap();
    let mut cells = Vec::new();
    for r in rows {
        let cell = format!("{} {} {}", r["mechanism"], r["pattern"], r["size_bytes"]);
        // Exactly the count, every one intact.
        assert_eq!(r["messages"], 100, "{cell}");
        for key in ["lost", "duplicated", "corrupted"] {
            assert_eq!(r[key], 0, "{cell}: {key}");
        }
        let p50 = r["rtt_p50_seconds"].as_f64().unwrap();
        assert!(
            p50 > 0.0 && p50 <= r["rtt_max_seconds"].as_f64().unwrap(),
            "{cell}"
        );
        // Each ratio is against fibpool's row for the same pattern and size.
        let ours = report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["pattern"] == r["pattern"] && o["size_bytes"] == r["size_bytes"])
            .unwrap();
        let want = p50 / ours["rtt_p50_seconds"].as_f64().unwrap();
        let got = r["rtt_p50_vs_fibpool"].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-9 * want,
            "{cell}: {got} against {want}"
        );
        assert!(r["throughput_vs_fibpool"].as_f64().unwrap() > 0.0, "{cell}");
        cells.push(cell);
    }
    // Fanout has no Python counterpart.
    let want: Vec<String> = ["pingpong", "stream"]
        .iter()
        .flat_map(|p| {
            ["8", "65536"]
                .iter()
                .flat_map(move |s| ["Pipe", "Queue"].map(|m| format!("\"{m}\" \"{p}\" {s}")))
        })
        .collect();
    assert_eq!(cells, want);
    let caption = format!(
        "\nPython {} multiprocessing (child by {}), x: against fibpool over pipe\n",
        python["python"].as_str().unwrap(),
        python["start_method"].as_str().unwrap()
    );
    assert!(out.stdout.contains(&caption), "{caption}: {}", out.stdout);
    let python_lines = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("Pipe ") || l.starts_with("Queue "))
        .count();
    assert_eq!(python_lines, 8, "{}", out.stdout);
    // The script's scratch directory is gone.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

/// The script's own check, which the stress test trusts: a child that
/// damages every tenth payload is caught on each of them.
#[test]
fn the_python_stress_script_counts_what_its_child_damages() {
    let dir = scratch_dir("stress-python-damage");
    let json = dir.join("p.json");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/python_stress.py");
    let out = run(std::process::Command::new("python3")
        .arg(&script)
        .args(["--sizes", "4,100", "--count", "50", "--corrupt-every", "10"])
        .arg("--json")
        .arg(&json));
    out.assert_success();
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    for r in rows {
        assert_eq!(r["messages"], 50, "{r}");
        assert_eq!(r["corrupted"], 5, "{r}");
        assert_eq!(r["lost"], 0, "{r}");
        assert_eq!(r["duplicated"], 0, "{r}");
    }
}

#[test]
fn stress_vs_python_without_python3_says_so_and_measures_the_rest() {
    let dir = scratch_dir("stress-no-python");
    let path = dir.join("stress.json");
    let out = run(fibpool()
        .env("PATH", &dir)
        .args(["stress", "--pattern", "pingpong", "--sizes", "8"])
        .args(["--count", "20", "--vs-python", "--report"])
        .arg(&path));
    out.assert_success();
    assert_eq!(
        out.stderr,
        "fibpool: python3 not found: measuring without the Python comparison\n"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(report["python"].is_null(), "{report}");
    assert_eq!(report["results"][0]["messages"], 20);
}

#[test]
fn stress_plots_round_trips_by_percentile_and_throughput() {
    let dir = scratch_dir("stress-plot");
    let (json, svg) = (dir.join("s.json"), dir.join("s.svg"));
    let out = run(fibpool()
        .args(["stress", "--pattern", "pingpong,stream", "--sizes", "8,64K"])
        .args(["--count", "200", "--transport", "pipe,tcp", "--vs-python"])
        .arg("--plot")
        .arg(&svg)
        .arg("--report")
        .arg(&json));
    out.assert_success();
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    // Each row's round trips at the same nine percentiles, never falling,
    // from p50 to p99.99, Python's rows too.
    let rows = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .chain(report["python"]["rows"].as_array().unwrap());
    let mut seen = 0;
    for r in rows {
        let at: Vec<(f64, f64)> = r["rtt_percentiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["percentile"].as_f64().unwrap(),
                    p["seconds"].as_f64().unwrap(),
                )
            })
            .collect();
        let percentiles: Vec<f64> = at.iter().map(|a| a.0).collect();
        assert_eq!(
            percentiles,
            [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99],
            "{r}"
        );
        assert!(at[0].1 > 0.0, "{r}");
        assert!(at.windows(2).all(|w| w[0].1 <= w[1].1), "{r}");
        assert!(
            at[8].1 <= r["rtt_max_seconds"].as_f64().unwrap() * 1.01,
            "{r}"
        );
        seen += 1;
    }
    assert_eq!(
        seen,
        8 + 8,
        "2 transports and 2 mechanisms, 2 patterns, 2 sizes"
    );

    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the plot is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for label in [
        "pingpong, 8 B",
        "pingpong, 64 KiB",
        "stream throughput",
        "pipe",
        "tcp",
        "Python Pipe",
        "Python Queue",
        "p99.9",
    ] {
        assert!(
            texts.contains(&label),
            "no '{label}' in the plot: {texts:?}"
        );
    }

    // A point per percentile of each curve (4 curves in each of 2 panels),
    // and per size on each throughput curve.
    let points = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "circle")
        .count();
    assert_eq!(points, 4 * 2 * 9 + 4 * 2);

    let out = run(fibpool().args(["stress", "--plot", "/nonexistent/dir/s.svg"]));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "fibpool: error: cannot create --plot file '/nonexistent/dir/s.svg': No such file or directory (os error 2)\n"
    );
    // A path is named escaped, on one line. Old failure: the newline and
    // the escape character were printed as they were.
    let out = run(fibpool().args(["stress", "--plot", "/nonexistent/a\nb\x1b[2J.svg"]));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "fibpool: error: cannot create --plot file '/nonexistent/a\\nb\\u{1b}[2J.svg': No such file or directory (os error 2)\n"
    );
    // A stress that fails keeps what the plot's file held, and leaves no
    // temporary file. Old failure: the file was truncated up front and
    // left empty.
    let dir = scratch_dir("stress-plot-kept");
    let kept = dir.join("old.svg");
    std::fs::write(&kept, "old").unwrap();
    let out = run(fibpool()
        .args(["stress", "--count", "1", "--sizes", "8"])
        .args(["--worker-cmd", "/nonexistent/worker", "--plot"])
        .arg(&kept));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "old");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["old.svg"]);
}
