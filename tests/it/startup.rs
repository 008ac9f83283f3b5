//! `fibpool startup`: the report has every phase, in a sane order. No timing
//! thresholds: only what must hold on any machine.

use serde_json::Value;

use crate::util::*;

const PHASES: [&str; 6] = ["spawn", "exec", "init", "ready", "first_task", "shutdown"];
const FIELDS: [&str; 4] = [
    "min_seconds",
    "median_seconds",
    "p90_seconds",
    "max_seconds",
];

/// The four figures of a summary, checked finite, non-negative and ordered.
#[track_caller]
fn figures(summary: &Value, what: &str) -> [f64; 4] {
    let values = FIELDS.map(|f| {
        summary[f]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}.{f} is missing in {summary}"))
    });
    for (f, v) in FIELDS.iter().zip(values) {
        assert!(v.is_finite() && v >= 0.0, "{what}.{f} = {v}");
    }
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "{what} out of order: {values:?}"
    );
    values
}

fn check_report(report: &Value, workers: u64, rounds: u64) {
    assert_eq!(report["workers"], workers);
    assert_eq!(report["rounds"], rounds);
    let phases = &report["phases"];
    let got: Vec<_> = PHASES.map(|p| figures(&phases[p], p)).into();
    let [spawn, exec, init, ready, ..] = got[..] else {
        unreachable!()
    };
    for i in 0..4 {
        // Every worker's spawn and exec precede its ready, so every order statistic does.
        assert!(spawn[i] <= ready[i], "spawn {spawn:?} > ready {ready:?}");
        assert!(exec[i] <= ready[i], "exec {exec:?} > ready {ready:?}");
        assert!(init[i] <= ready[i], "init {init:?} > ready {ready:?}");
    }
    for key in ["pool_ready", "round", "baseline", "baseline_worker"] {
        figures(&report[key], key);
    }
    let pool_ready = figures(&report["pool_ready"], "pool_ready");
    assert!(
        pool_ready[0] >= ready[0],
        "the pool is ready after its first worker"
    );
    assert!(report["ready_over_floor"].as_f64().unwrap() > 0.0);
}

#[test]
fn startup_reports_every_phase() {
    for transport in ["pipe", "shm"] {
        reports_every_phase(transport);
    }
}

fn reports_every_phase(transport: &str) {
    let dir = scratch_dir(&format!("startup-{transport}"));
    let path = dir.join("startup.json");
    let out = run(fibpool()
        .args(["startup", "-w", "2", "--rounds", "3", "--warmup", "1"])
        .args(["--transport", transport, "--report"])
        .arg(&path));
    out.assert_success();
    let report: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    check_report(&report, 2, 3);
    assert_eq!(report["transport"], transport);
    figures(&report["pool_ready_parallel"], "pool_ready_parallel");
    for row in PHASES
        .iter()
        .chain(&["pool_ready", "baseline: minimal program"])
    {
        assert!(
            out.stdout.contains(&format!("  {row} ")),
            "no row {row} in\n{}",
            out.stdout
        );
    }
}

#[test]
fn startup_over_several_pool_sizes_reports_each() {
    let dir = scratch_dir("startup-sizes");
    let path = dir.join("startup.json");
    let out = run(fibpool()
        .args([
            "startup", "-w", "1,3", "--rounds", "2", "--warmup", "0", "--report",
        ])
        .arg(&path)
        .args(["--worker-cmd", worker_bin()]));
    out.assert_success();
    let report: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let sizes = report.as_array().expect("an array for several sizes");
    assert_eq!(sizes.len(), 2);
    check_report(&sizes[0], 1, 2);
    check_report(&sizes[1], 3, 2);
    assert!(
        sizes[0]["pool_ready_parallel"].is_null(),
        "one worker has no parallel spawn"
    );
    assert!(out.stdout.contains("pool_ready medians"), "{}", out.stdout);
}
