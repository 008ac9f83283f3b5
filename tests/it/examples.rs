//! The programs in `examples/`, run as built by `cargo test` (which builds
//! every example), their output checked against an independent oracle.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use crate::util::*;

/// An example's binary, beside the test binary's own directory.
fn example(name: &str) -> Command {
    let deps = std::env::current_exe().expect("the test binary has a path");
    let dir: PathBuf = deps
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps")
        .join("examples");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: examples are built by `cargo test`",
        path.display()
    );
    Command::new(path)
}

#[test]
fn fib_batch_parallel_matches_the_sequential_loop() {
    let out = run(example("fib_batch_parallel").arg("300"));
    out.assert_success();
    assert!(
        out.stdout
            .contains("300 values: the parallel results match the sequential ones\n"),
        "{}",
        out.stdout
    );
    let want = format!("F(299) = {}\n", fib_table(299)[299]);
    assert!(out.stdout.ends_with(&want), "{}", out.stdout);
    for line in ["Sequential: ", "Parallel:   ", "Speedup: "] {
        assert!(out.stdout.contains(line), "{line}: {}", out.stdout);
    }
}

#[test]
fn fib_batch_chunked_computes_every_chunk() {
    let out = run(example("fib_batch_chunked").args(["250", "40"]));
    out.assert_success();
    let workers = fibpool_coordinator::default_workers();
    let want = format!(
        "250 values in 7 chunks of 40 on {workers} workers\nF(249) = {}\n",
        fib_table(249)[249]
    );
    assert_eq!(out.stdout, want);
}

/// A Future holds every value of its batch until its result is taken: a
/// batch whose values do not fit in the memory the program may use is
/// refused at `submit`, with a typed error. F(0..250000) is about 2.7 GB
/// raw, in a memory cgroup of 1 GiB. Old failure: only the biggest values
/// were counted, the batch was taken, and the program was killed when its
/// memory ran out.
#[test]
fn a_batch_a_future_cannot_hold_is_refused_at_submit() {
    let cgroup = MemoryCgroup::new("held", 1 << 30);
    let mut cmd = example("fib_batch_chunked");
    cmd.args(["250000", "250000"]);
    cgroup.enter(&mut cmd);
    let out = run(&mut cmd);
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("Error: BatchTooBig { values: 250000, need: ")
            && out.stderr.ends_with(", limit: Cgroup }\n"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn fib_multiple_inputs_fills_the_table_with_every_index() {
    let out = run(example("fib_multiple_inputs").args(["15", "20"]));
    out.assert_success();
    let table = fib_table(20);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let put: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("producer: putting "))
        .map(|l| l.strip_suffix(" in the queue").unwrap().parse().unwrap())
        .collect();
    assert_eq!(put.len(), 15);
    assert!(put.iter().all(|n| (1..=20).contains(n)), "{put:?}");
    let mut got: Vec<u64> = Vec::new();
    for line in lines.iter().filter_map(|l| l.strip_prefix("consumer: F(")) {
        let (n, value) = line.split_once(") = ").unwrap();
        let n: u64 = n.parse().unwrap();
        assert_eq!(value, table[n as usize].to_string(), "F({n})");
        got.push(n);
    }
    let (mut a, mut b) = (put.clone(), got);
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b, "every index put in the queue was computed once");
    a.dedup();
    let entries: Vec<String> = a
        .iter()
        .map(|&n| format!("{n}: {}", table[n as usize]))
        .collect();
    assert_eq!(
        lines.last().unwrap(),
        &format!("table: {{{}}}", entries.join(", "))
    );
}

#[test]
fn pipe_carries_what_process_a_sent_to_process_b() {
    let out = run(example("pipe").arg("25"));
    out.assert_success();
    let sent: Vec<u8> = out
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("process A sent "))
        .map(|v| v.parse().unwrap())
        .collect();
    let received: Vec<u8> = out
        .stdout
        .lines()
        .map(|l| {
            l.strip_prefix("process B received ")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(sent.len(), 25);
    assert!(sent.iter().all(|v| (1..=10).contains(v)), "{sent:?}");
    assert_eq!(received, sent, "in order, every one");
}

#[test]
fn queue_delivers_every_producers_items_in_order() {
    let out = run(example("queue").args(["4", "50"]));
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.last(), Some(&"consumer: 200 items from 4 producers"));
    let low = fib_mod_2_64(10 * 3 + 50);
    let mut next: HashMap<u64, u64> = HashMap::new();
    for line in &lines[..lines.len() - 1] {
        // consumer got VALUE from producer P (item S)
        let words: Vec<&str> = line.split_whitespace().collect();
        let (value, producer, seq): (u64, u64, u64) = (
            words[2].parse().unwrap(),
            words[5].parse().unwrap(),
            words[7].trim_end_matches(')').parse().unwrap(),
        );
        let expected = next.entry(producer).or_insert(0);
        assert_eq!(seq, *expected, "producer {producer}'s items in order");
        *expected += 1;
        assert_eq!(value, low[(seq + 10 * producer) as usize], "{line}");
    }
    assert_eq!(next.len(), 4);
    assert!(next.values().all(|&n| n == 50), "{next:?}");
}

#[test]
fn fork_pools_of_a_library_program_give_every_value_and_leave_no_worker() {
    let out = run(example("fork_pool").arg("4"));
    out.assert_success();
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("4 fork pools: every value right"));
    let pids: Vec<u32> = lines
        .next()
        .and_then(|l| l.strip_prefix("workers: "))
        .expect("a line of worker pids")
        .split(' ')
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(lines.next(), None, "{}", out.stdout);
    // Two workers a pool, none of them reused, none left running.
    let distinct: std::collections::HashSet<_> = pids.iter().collect();
    assert_eq!((pids.len(), distinct.len()), (8, 8), "{pids:?}");
    for pid in pids {
        assert!(!alive(pid), "worker {pid} outlived the program");
    }
}

#[test]
fn warm_runs_times_every_round_on_each_transport() {
    for transport in ["pipe", "socket", "tcp"] {
        let out = run(example("warm_runs").args(["3", "100", "400", "2", transport]));
        out.assert_success();
        let line = out.stdout.trim_end();
        let rest = line
            .strip_prefix("3 rounds of 100..400: first ")
            .unwrap_or_else(|| panic!("{transport}: {line}"));
        let times: Vec<f64> = rest
            .split(", ")
            .map(|part| {
                let ms = part.rsplit_once(' ').unwrap().0;
                let ms = ms.rsplit(' ').next().unwrap();
                ms.parse().unwrap_or_else(|_| panic!("{transport}: {line}"))
            })
            .collect();
        assert_eq!(times.len(), 4, "{line}");
        let (min, max) = (times[2], times[3]);
        assert!(min > 0.0 && min <= times[0] && times[0] <= max, "{line}");
        assert!(min <= times[1] && times[1] <= max, "{line}");
    }
    let out = run(example("warm_runs").args(["3", "0", "10", "1", "udp"]));
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("no transport 'udp'"), "{}", out.stderr);
}
