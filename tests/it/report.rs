//! `fibpool run --report`.

use serde_json::Value;

use crate::util::*;

#[test]
fn report_has_the_run_and_every_worker() {
    let dir = scratch_dir("report");
    let path = dir.join("run.json");
    let out = run(fibpool()
        .args(["run", "-w", "2", "-c", "10", "--report"])
        .arg(&path)
        .arg("0..1000"));
    out.assert_success();
    let report: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(report["workers"], 2);
    assert_eq!(report["tasks"], 1000);
    assert_eq!(report["chunks"], 100);
    assert_eq!(report["chunk_size"], 10);
    let wall = report["wall_seconds"].as_f64().unwrap();
    assert!(wall > 0.0 && wall.is_finite());
    // 100 chunks on 2 workers: both were ready before the end.
    let ready = report["ready_seconds"].as_f64().unwrap();
    assert!(ready > 0.0 && ready < wall, "ready {ready}, wall {wall}");
    // The last value was written after the workers were ready, and the
    // pool shut down after that.
    let done = report["done_seconds"].as_f64().unwrap();
    assert!(
        ready < done && done < wall,
        "ready {ready}, done {done}, wall {wall}"
    );
    let workers = report["worker_stats"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let mut chunks = 0;
    let mut pids = Vec::new();
    for w in workers {
        pids.push(w["pid"].as_u64().unwrap());
        chunks += w["chunks"].as_u64().unwrap();
        let phase = |name: &str| {
            let v = w[format!("{name}_seconds")]
                .as_f64()
                .unwrap_or_else(|| panic!("no {name} in {w}"));
            assert!(v.is_finite() && v >= 0.0, "{name} = {v} in {w}");
            v
        };
        let (spawn, exec, init, ready) =
            (phase("spawn"), phase("exec"), phase("init"), phase("ready"));
        assert!(spawn > 0.0 && spawn <= ready, "{w}");
        assert!(exec <= ready && init <= ready, "{w}");
        phase("first_task");
        phase("shutdown");
        let busy = phase("busy");
        assert!(busy <= wall, "{w}");
    }
    assert_eq!(chunks, 100, "every chunk answered once");
    assert_ne!(pids[0], pids[1]);
    // The summary on stderr agrees.
    assert!(
        out.stderr
            .starts_with("fibpool: 1000 indices in 100 chunks on 2 workers: "),
        "{}",
        out.stderr
    );
}
