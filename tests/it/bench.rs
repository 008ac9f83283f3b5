//! `fibpool bench`: a tiny workload, one repeat. The report's numbers must be
//! consistent with each other and the plot a well-formed SVG. No timing
//! thresholds: only what holds on any machine.

use std::time::Duration;

use serde_json::Value;

use crate::util::*;

#[track_caller]
fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-9 * b.abs().max(1.0),
        "{what}: {a} != {b}"
    );
}

#[test]
fn a_tiny_bench_is_consistent_and_draws_a_plot() {
    let dir = scratch_dir("bench");
    let (json, svg) = (dir.join("bench.json"), dir.join("speedup.svg"));
    let out = run(fibpool()
        .args(["bench", "-w", "1,2,3", "--repeat", "1", "--report"])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .args(["0..300", "5000x40"]));
    out.assert_success();
    assert_eq!(
        out.stderr, "",
        "no progress bar when stderr is not a terminal"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["repeat"], 1);
    let workloads = report["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 1);
    let w = &workloads[0];
    assert_eq!(w["name"], "indices");
    assert_eq!(w["tasks"], 340);
    let rows = w["results"].as_array().unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r["workers"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or_else(|| panic!("no {k} in {r}"));
    for r in rows {
        let (seq, pool, workers) = (
            f(r, "sequential_seconds"),
            f(r, "pool_seconds"),
            f(r, "workers"),
        );
        assert!(seq > 0.0 && pool > 0.0, "{r}");
        close(f(r, "speedup"), seq / pool, "speedup = sequential / pool");
        close(
            f(r, "efficiency"),
            f(r, "speedup") / workers,
            "efficiency = speedup / workers",
        );
        // One repeat: the median is the only sample.
        close(f(r, "pool_min_seconds"), pool, "min");
        close(f(r, "pool_max_seconds"), pool, "max");
        for share in ["startup_share", "compute_share", "ipc_share"] {
            let v = f(r, share);
            assert!((0.0..=1.0).contains(&v), "{share} = {v}");
        }
        if workers == 1.0 {
            assert!(r["karp_flatt"].is_null());
        } else {
            let (s, p) = (f(r, "speedup"), workers);
            close(
                f(r, "karp_flatt"),
                (1.0 / s - 1.0 / p) / (1.0 - 1.0 / p),
                "Karp-Flatt",
            );
        }
        assert!(r["python_seconds"].is_null(), "no --vs-python");
    }
    let flag = |key: &str| w[key].as_bool().unwrap_or_else(|| panic!("{key}: {w}"));
    let (overhead_bound, superlinear) = (flag("overhead_bound"), flag("superlinear"));
    assert!(!(overhead_bound && superlinear), "{w}");
    assert_eq!(
        w["serial_fraction"].is_null(),
        overhead_bound || superlinear,
        "a serial fraction, or the reason there is none: {w}"
    );
    if let Some(e) = w["serial_fraction"].as_f64() {
        for r in rows {
            let p = f(r, "workers");
            close(f(r, "amdahl_speedup"), 1.0 / (e + (1.0 - e) / p), "Amdahl");
        }
    }
    assert!(
        out.stdout.starts_with(
            "indices: 0..300 5000x40 (340 indices), start method spawn, transport pipe, median of 1"
        ),
        "{}",
        out.stdout
    );

    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the plot is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(root.attribute("width"), Some("900"));
    let texts: Vec<&str> = doc
        .descendants()
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for label in [
        "worker processes",
        "ideal",
        "indices measured",
        "indices machine ceiling",
    ] {
        assert!(
            texts.contains(&label),
            "no '{label}' in the plot: {texts:?}"
        );
    }
    let lines = doc
        .descendants()
        .filter(|n| matches!(n.tag_name().name(), "polyline" | "path" | "line"))
        .count();
    let points = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "circle")
        .count();
    assert!(lines > 3, "lines drawn");
    assert_eq!(points, 3, "one point per worker count");
}

#[test]
fn a_bench_over_shared_memory_says_so_and_its_pools_compute() {
    let dir = scratch_dir("bench-shm");
    let json = dir.join("bench.json");
    let out = run(fibpool()
        .args(["bench", "-w", "1,2", "--repeat", "1", "--transport", "shm"])
        .arg("--report")
        .arg(&json)
        .args(["0..3000"]));
    out.assert_success();
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["transport"], "shm");
    assert!(out.stdout.contains(", transport shm, "), "{}", out.stdout);
    let rows = report["workloads"][0]["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        let pool = r["pool_seconds"].as_f64().unwrap();
        assert!(pool.is_finite() && pool > 0.0, "{r}");
    }
    // Remote workers cannot share memory: refused before anything runs.
    let out = run(fibpool().args(["bench", "--transport", "shm", "--hosts", "node1", "0..10"]));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "fibpool: error: --transport shm is for this machine's workers: a remote worker talks over ssh's pipes or tcp\n"
    );
}

#[test]
fn an_unknown_preset_is_a_usage_error() {
    let out = run(fibpool().args(["bench", "--preset", "seed-100x1000,nope"]));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "fibpool: error: unknown preset 'nope': use one of seed-100x1000, seed-1000x1000, seed-10000x100, seed-range-1000, heavy-200x200000, heavy-40x1000000, heavy-8x5000000, heavy-range-50000, or all\n"
    );
}

/// A directory holding a module named gmpy2 with `body` as its code, for
/// PYTHONPATH: it comes before site-packages, so the peer imports it
/// whether or not the machine has the real gmpy2.
fn fake_gmpy2(name: &str, body: &str) -> std::path::PathBuf {
    let dir = scratch_dir(name);
    std::fs::write(dir.join("gmpy2.py"), body).unwrap();
    dir
}

/// Fast doubling in pure Python: an independent F(n) for the peer's plumbing.
const PURE_GMPY2: &str = r#"
def version():
    return "pure-python"

def mp_version():
    return "no GMP"

def fib(n):
    def pair(k):
        if k == 0:
            return (0, 1)
        a, b = pair(k >> 1)
        c = a * (2 * b - a)
        d = a * a + b * b
        return (d, c + d) if k & 1 else (c, d)
    return pair(n)[0]
"#;

#[test]
fn the_gmpy2_comparison_checks_the_bytes_and_fills_its_columns() {
    let module = fake_gmpy2("gmpy2-pure", PURE_GMPY2);
    let json = module.join("bench.json");
    let out = run(fibpool()
        .env("PYTHONPATH", &module)
        .args([
            "bench",
            "-w",
            "1,2",
            "--repeat",
            "1",
            "--vs-gmpy2",
            "--report",
        ])
        .arg(&json)
        .args(["0..300", "5000x3", "20000"]));
    out.assert_success();
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let version = report["gmpy2"].as_str().unwrap();
    assert!(
        version.starts_with("Python 3.") && version.ends_with(", gmpy2 pure-python no GMP"),
        "{version}"
    );
    let rows = report["workloads"][0]["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or_else(|| panic!("no {k} in {r}"));
    for r in rows {
        let (theirs, ours) = (f(r, "gmpy2_seconds"), f(r, "fibpool_hex_process_seconds"));
        assert!(theirs > 0.0 && ours > 0.0, "{r}");
        close(f(r, "gmpy2_ratio"), theirs / ours, "gmpy2 / fibpool");
        assert!(r["python_seconds"].is_null(), "no --vs-python");
    }
    assert!(
        out.stdout.contains("gmpy2: Python 3.") && out.stdout.contains("bench/gmpy2_peer.py"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_gmpy2_peer_that_disagrees_fails_the_bench() {
    let wrong = PURE_GMPY2.replace("return pair(n)[0]", "return pair(n)[0] + (n == 7)");
    let module = fake_gmpy2("gmpy2-wrong", &wrong);
    let out = run(fibpool().env("PYTHONPATH", &module).args([
        "bench",
        "-w",
        "1",
        "--repeat",
        "1",
        "--vs-gmpy2",
        "0..10",
    ]));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "fibpool: error: the benchmark failed: the gmpy2 peer and fibpool run disagree on indices at -w 1: line 8 differs\n"
    );
}

#[test]
fn a_gmpy2_that_cannot_be_imported_is_one_line_and_the_rest_is_measured() {
    let module = fake_gmpy2("gmpy2-missing", "raise ImportError('no gmpy2 here')\n");
    let json = module.join("bench.json");
    let out = run(fibpool()
        .env("PYTHONPATH", &module)
        .args([
            "bench",
            "-w",
            "1",
            "--repeat",
            "1",
            "--vs-gmpy2",
            "--report",
        ])
        .arg(&json)
        .arg("0..50"));
    out.assert_success();
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with("fibpool: ")
            && lines[0].ends_with(
                " cannot import gmpy2 (install it with `pip install gmpy2`, in a venv whose python3 is first on PATH): measuring without the gmpy2 comparison"
            ),
        "{}",
        lines[0]
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(report["gmpy2"].is_null());
    let row = &report["workloads"][0]["results"][0];
    assert!(
        row["gmpy2_seconds"].is_null() && row["pool_seconds"].as_f64().unwrap() > 0.0,
        "{row}"
    );
}

/// A signal stops the Python peer too, with its pool: none of them is left
/// computing. Old failure: the peer and its worker were adopted by init and
/// computed on.
#[test]
fn a_signal_during_the_python_peer_leaves_no_python_process() {
    let running = Running::start(fibpool().args([
        "bench",
        "--repeat",
        "2",
        "-w",
        "1",
        "--vs-python",
        "--python-repeat",
        "3",
        "300000..300060",
    ]));
    let is_peer = |pid: &u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.windows(14).any(|w| w == b"python_peer.py"))
    };
    // Once its pool computes: a peer stopped earlier fails on its own when
    // its input file goes with the scratch directory.
    let (mut peer, mut theirs) = (None, Vec::new());
    wait_until(
        "the Python peer's pool runs",
        Duration::from_secs(120),
        || {
            peer = children(running.pid()).into_iter().find(is_peer);
            theirs = peer.map(children).unwrap_or_default();
            theirs.iter().any(|&w| cpu_ticks(w) > 0)
        },
    );
    let peer = peer.unwrap();
    signal(running.pid(), libc::SIGINT);
    let out = running.finish();
    assert_eq!(out.code(), Some(130), "{}", out.stderr);
    wait_until(
        "the peer and its workers are gone",
        Duration::from_secs(10),
        || std::iter::once(&peer).chain(&theirs).all(|&p| !alive(p)),
    );
}
