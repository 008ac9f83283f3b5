//! `fibpool bench`: a tiny workload, one repeat. The report's numbers must be
//! consistent with each other and the plot a well-formed SVG. No timing
//! thresholds: only what holds on any machine.

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
        out.stdout
            .starts_with("indices: 0..300 5000x40 (340 indices), median of 1"),
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
fn an_unknown_preset_is_a_usage_error() {
    let out = run(fibpool().args(["bench", "--preset", "seed-100x1000,nope"]));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "fibpool: error: unknown preset 'nope': use one of seed-100x1000, seed-1000x1000, seed-10000x100, seed-range-1000, heavy-200x200000, heavy-range-50000, or all\n"
    );
}
