//! Workers on other hosts over OpenSSH: a real sshd on the loopback, on a
//! free port, with a throwaway host key and client key, and 127.0.0.1 and
//! 127.0.0.2 as two hosts. `.ci/run` installs openssh-server where missing.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fibpool_coordinator::{Host, Pool, PoolError, Ssh, WorkerCommand};

use crate::util::*;

const SSHD: &str = "/usr/sbin/sshd";

/// An sshd of this test's own, killed when dropped.
struct Sshd {
    dir: PathBuf,
    port: u16,
    child: Child,
    /// Logins of the harness's own check.
    baseline: usize,
}

impl Sshd {
    fn start(name: &str) -> Sshd {
        assert!(
            std::path::Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (.ci/run does)"
        );
        let dir = scratch_dir(&format!("sshd-{name}"));
        for key in ["host_key", "client_key"] {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", ""])
                .arg("-f")
                .arg(dir.join(key))
                .status()
                .expect("ssh-keygen runs (openssh-client)")
                .success();
            assert!(ok, "ssh-keygen failed");
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        // Privilege separation wants it, when sshd runs as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = free_port();
        let d = dir.display();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nListenAddress 127.0.0.2\n\
             HostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             StrictModes no\nPermitRootLogin prohibit-password\nPidFile none\n\
             MaxSessions 64\nLogLevel INFO\n"
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(dir.join("sshd_config"))
            .arg("-E")
            .arg(dir.join("log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("sshd starts");
        let mut sshd = Sshd {
            dir,
            port,
            child,
            baseline: 0,
        };
        for ip in ["127.0.0.1", "127.0.0.2"] {
            let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
            wait_until(
                &format!("sshd listens on {addr}"),
                Duration::from_secs(30),
                || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
            );
        }
        // One login, so that a machine where it cannot work (a locked root
        // account, say) fails here, with sshd's own words.
        let login = Command::new("sh")
            .arg("-c")
            .arg(format!("{} -p {port} 127.0.0.1 true", sshd.ssh()))
            .output()
            .expect("sh runs");
        if !login.status.success() {
            let log = std::fs::read_to_string(sshd.dir.join("log")).unwrap_or_default();
            panic!(
                "cannot log in to the test sshd: {}\nsshd's log:\n{log}",
                String::from_utf8_lossy(&login.stderr).trim()
            );
        }
        sshd.baseline = sshd.logins();
        sshd
    }

    /// `--ssh`: this sshd's client key, no user config, no questions.
    fn ssh(&self) -> String {
        let d = self.dir.display();
        format!(
            "ssh -F none -i {d}/client_key -o UserKnownHostsFile={d}/known_hosts \
             -o StrictHostKeyChecking=no -o BatchMode=yes -o LogLevel=ERROR"
        )
    }

    fn host(&self, ip: &str) -> String {
        format!("{ip}:{}", self.port)
    }

    /// Connections sshd accepted so far, the harness's own check aside.
    fn logins(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        log.matches("Accepted publickey").count() - self.baseline
    }

    /// `fibpool worker` processes under this sshd.
    /// Waits, within a minute, until two remote workers of `running` are
    /// computing (50 ms of CPU each, so past their handshakes), and returns
    /// them. A run that ends first fails the test saying so, with the most
    /// CPU each remote worker was seen to have and the run's stderr: the
    /// batch was too small to outlast the remote workers' start.
    fn two_remote_workers_computing(&self, mut running: Running) -> (Running, Vec<u32>) {
        let mut most = std::collections::BTreeMap::new();
        let mut remote = Vec::new();
        let mut ended = None;
        wait_until("2 remote workers compute", Duration::from_secs(60), || {
            remote = self.remote_workers();
            for &pid in &remote {
                let ticks = most.entry(pid).or_insert(0);
                *ticks = cpu_ticks(pid).max(*ticks);
            }
            if remote.len() == 2 && remote.iter().all(|&pid| cpu_ticks(pid) >= 5) {
                return true;
            }
            ended = running.child.try_wait().unwrap();
            ended.is_some()
        });
        if let Some(status) = ended {
            let stderr = running.finish().stderr;
            panic!(
                "the run ended ({status}) before 2 remote workers were seen computing \
                 (most CPU ticks seen, by pid: {most:?}); its stderr: {stderr}"
            );
        }
        (running, remote)
    }

    fn remote_workers(&self) -> Vec<u32> {
        descendants(self.child.id())
            .into_iter()
            .filter(|&pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                cmdline.ends_with(b"\0worker\0") && alive(pid)
            })
            .collect()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `run 0..100 300000xCOPIES` prints.
fn big_run_lines(copies: usize) -> String {
    let big = format!("300000\t{}\n", fib(300000));
    let mut want = expected_lines(&(0..100).collect::<Vec<_>>(), 10);
    for _ in 0..copies {
        want.push_str(&big);
    }
    want
}

/// F(n) by plain iteration, without a table: independent of the kernels.
fn fib(n: u64) -> num_bigint::BigUint {
    let (mut a, mut b) = (num_bigint::BigUint::ZERO, num_bigint::BigUint::from(1u32));
    for _ in 0..n {
        let next = &a + &b;
        a = std::mem::replace(&mut b, next);
    }
    a
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// User and system CPU time of `pid` so far, in clock ticks (0 if gone).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the parenthesised name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let field = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// Every process under `pid`, from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        for child in children(p) {
            all.push(child);
            next.push(child);
        }
    }
    all
}

/// The worker command on the far side: the binary under test.
fn remote_cmd() -> String {
    format!("{} worker", env!("CARGO_BIN_EXE_fibpool"))
}

fn hosts_run(sshd: &Sshd, hosts: &str) -> Command {
    let mut cmd = fibpool();
    cmd.args(["run", "--hosts", hosts, "--ssh", &sshd.ssh()]);
    cmd.args(["--remote-cmd", &remote_cmd()]);
    cmd
}

fn report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn workers_on_two_hosts_and_here_compute_the_same_values() {
    let sshd = Sshd::start("values");
    let dir = scratch_dir("hosts-values");
    let file = dir.join("report.json");
    let hosts = format!("{},{},:", sshd.host("127.0.0.1"), sshd.host("127.0.0.2"));
    // Enough work that the remote workers, ready a few tenths of a
    // second after the local one, take their share.
    let out = run(hosts_run(&sshd, &hosts)
        .args(["-w", "1", "-c", "1", "--report"])
        .arg(&file)
        .args(["0..100", "300000x1500"]));
    out.assert_success();
    assert_same_lines(&out.stdout, &big_run_lines(1500));
    assert!(
        out.stderr
            .starts_with("fibpool: 1600 indices in 1600 chunks on 3 workers: "),
        "{}",
        out.stderr
    );
    let report = report(&file);
    let stats = report["worker_stats"].as_array().unwrap();
    let mut hosts_seen: Vec<String> = stats
        .iter()
        .map(|w| w["host"].as_str().unwrap_or(":").to_owned())
        .collect();
    hosts_seen.sort();
    let mut want = vec![
        sshd.host("127.0.0.1"),
        sshd.host("127.0.0.2"),
        ":".to_owned(),
    ];
    want.sort();
    assert_eq!(hosts_seen, want);
    for w in stats {
        assert!(
            w["chunks"].as_u64().unwrap() > 0,
            "every host took chunks: {w}"
        );
    }
    for w in stats.iter().filter(|w| w["host"].is_string()) {
        // The worker's clock is not ours: no exec phase, its init its own.
        assert!(w["exec_seconds"].is_null(), "{w}");
        assert!(w["init_seconds"].as_f64().is_some(), "{w}");
    }
    // One connection per host, whatever the sessions on it.
    assert_eq!(sshd.logins(), 2, "one master per host");
    assert!(sshd.remote_workers().is_empty(), "remote workers left");
}

#[test]
fn one_master_per_host_carries_every_worker_there() {
    let sshd = Sshd::start("mux");
    let hosts = format!("3/{},2/{}", sshd.host("127.0.0.1"), sshd.host("127.0.0.2"));
    let running = Running::start(hosts_run(&sshd, &hosts).args([
        "-c",
        "1",
        "--output",
        "none",
        "4000x300000",
    ]));
    let mut remote = Vec::new();
    wait_until("5 remote workers run", Duration::from_secs(60), || {
        remote = sshd.remote_workers();
        remote.len() == 5
    });
    assert_eq!(sshd.logins(), 2, "two hosts, two connections");
    signal(running.pid(), libc::SIGTERM);
    let out = running.finish();
    assert_eq!(out.code(), Some(143), "{}", out.stderr);
    wait_until("the remote workers exit", Duration::from_secs(10), || {
        remote.iter().all(|&pid| !alive(pid))
    });
}

#[test]
fn the_coordinator_sigkilled_leaves_no_worker_on_any_host() {
    let sshd = Sshd::start("sigkill");
    let hosts = format!(
        "2/{},1/{},1/:",
        sshd.host("127.0.0.1"),
        sshd.host("127.0.0.2")
    );
    let running = Running::start(hosts_run(&sshd, &hosts).args([
        "-c",
        "1",
        "--output",
        "none",
        "4000x300000",
    ]));
    let mut remote = Vec::new();
    wait_until("3 remote workers run", Duration::from_secs(60), || {
        remote = sshd.remote_workers();
        remote.len() == 3
    });
    // Its children: the two hosts' masters, and the local worker.
    let local = running.workers(3);
    assert_eq!(local.len(), 3, "{local:?}");
    signal(running.pid(), libc::SIGKILL);
    let out = running.finish();
    assert_eq!(out.status.code(), None, "killed by a signal");
    wait_until(
        "every worker, remote or local, exits",
        Duration::from_secs(10),
        || remote.iter().chain(&local).all(|&pid| !alive(pid)),
    );
    assert!(sshd.remote_workers().is_empty());
}

/// The coordinator's children that run `ssh -M`: one master per host.
fn masters(coordinator: u32) -> Vec<u32> {
    children(coordinator)
        .into_iter()
        .filter(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|&b| b == 0).any(|arg| arg == b"-M") && alive(pid)
        })
        .collect()
}

/// A stopped master holds every worker on its host: past `--stall-warning`
/// the run names it, and once it is continued every value comes.
#[test]
fn a_stopped_master_is_named_and_the_run_completes_once_continued() {
    use std::io::BufRead;
    let sshd = Sshd::start("stopped-master");
    let indices: Vec<u64> = (0..400).collect();
    let mut child = hosts_run(&sshd, &sshd.host("127.0.0.1"))
        .args(["-w", "1", "-c", "1", "--stall-warning", "0.3", "0..400"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let values = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    wait_until("a remote worker runs", Duration::from_secs(60), || {
        !sshd.remote_workers().is_empty()
    });
    let master = masters(pid);
    assert_eq!(master.len(), 1, "{master:?}");
    signal(master[0], libc::SIGSTOP);
    let warning = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("a stall warning within 60 s");
    let suffix = format!(
        " s: process {0}, an ssh master of the pool, is stopped; 'kill -CONT {0}' resumes it",
        master[0]
    );
    assert!(
        warning.starts_with("fibpool: warning: no value for ") && warning.ends_with(&suffix),
        "{warning}"
    );
    signal(master[0], libc::SIGCONT);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "{rest:?}");
    assert_same_lines(&values.join().unwrap(), &expected_lines(&indices, 10));
}

#[test]
fn a_remote_worker_killed_mid_run_is_a_dead_worker_and_nothing_is_lost() {
    let sshd = Sshd::start("killed-remote");
    let dir = scratch_dir("hosts-killed-remote");
    let file = dir.join("report.json");
    let hosts = format!("{},{}", sshd.host("127.0.0.1"), sshd.host("127.0.0.2"));
    let running = Running::start(
        hosts_run(&sshd, &hosts)
            .args(["-w", "1", "-c", "1", "--report"])
            .arg(&file)
            .args(["0..100", "300000x400"]),
    );
    let (running, remote) = sshd.two_remote_workers_computing(running);
    signal(remote[0], libc::SIGKILL);
    let out = running.finish();
    out.assert_success();
    assert_same_lines(&out.stdout, &big_run_lines(400));
    let report = report(&file);
    assert_eq!(report["worker_restarts"], 1, "{report}");
    let ended: Vec<&str> = report["worker_stats"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["ended"].as_str())
        .collect();
    assert_eq!(ended, ["exited with status 255"], "{report}");
    wait_until("no remote worker is left", Duration::from_secs(10), || {
        sshd.remote_workers().is_empty()
    });
}

/// The `FIBPOOL_TCP` a process was started with.
fn tcp_address(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(b"FIBPOOL_TCP="))
        .map(|a| String::from_utf8_lossy(a).into_owned())
}

#[test]
fn over_tcp_workers_on_two_hosts_and_here_compute_the_same_values_and_survive_a_kill() {
    let sshd = Sshd::start("tcp");
    let dir = scratch_dir("hosts-tcp");
    let file = dir.join("report.json");
    let hosts = format!("{},{},:", sshd.host("127.0.0.1"), sshd.host("127.0.0.2"));
    let running = Running::start(
        hosts_run(&sshd, &hosts)
            .args(["-w", "1", "-c", "1", "--transport", "tcp", "--report"])
            .arg(&file)
            // Enough that the worker here, up first, cannot finish it all
            // before the remote ones start: 1500 copies (0.6 s of work)
            // timed out twice in loaded runs.
            .args(["0..100", "300000x3000"]),
    );
    let (running, remote) = sshd.two_remote_workers_computing(running);
    // Each was told where to connect: an address of this machine as its
    // host sees it, and a port of its own.
    let addresses: Vec<String> = remote.iter().filter_map(|&p| tcp_address(p)).collect();
    assert_eq!(addresses.len(), 2, "{addresses:?}");
    assert_ne!(addresses[0], addresses[1]);
    for address in &addresses {
        assert!(address.starts_with("127.0.0."), "{address}");
    }
    signal(remote[0], libc::SIGKILL);
    let out = running.finish();
    out.assert_success();
    assert_same_lines(&out.stdout, &big_run_lines(3000));
    let report = report(&file);
    assert_eq!(report["worker_restarts"], 1, "{report}");
    let stats = report["worker_stats"].as_array().unwrap();
    let mut hosts_seen: Vec<String> = stats
        .iter()
        .filter(|w| w["ended"].is_null())
        .map(|w| w["host"].as_str().unwrap_or(":").to_owned())
        .collect();
    hosts_seen.sort();
    let mut want = vec![
        sshd.host("127.0.0.1"),
        sshd.host("127.0.0.2"),
        ":".to_owned(),
    ];
    want.sort();
    assert_eq!(hosts_seen, want, "{report}");
    assert_eq!(sshd.logins(), 2, "one master per host");
    wait_until("no remote worker is left", Duration::from_secs(10), || {
        sshd.remote_workers().is_empty()
    });
}

#[test]
fn a_hosts_ssh_killed_mid_run_leaves_the_work_to_the_other_host() {
    let sshd = Sshd::start("killed-master");
    let dir = scratch_dir("hosts-killed-master");
    let file = dir.join("report.json");
    let hosts = format!("{},{}", sshd.host("127.0.0.1"), sshd.host("127.0.0.2"));
    let running = Running::start(
        hosts_run(&sshd, &hosts)
            // Its workers' chunks are not to blame: even one failure
            // allowed is not spent on them.
            .args(["-w", "1", "-c", "1", "--retries", "1", "--report"])
            .arg(&file)
            .args(["0..100", "300000x400"]),
    );
    let (running, _) = sshd.two_remote_workers_computing(running);
    let masters = masters(running.pid());
    assert_eq!(masters.len(), 2, "one master per host: {masters:?}");
    signal(masters[0], libc::SIGKILL);
    let out = running.finish();
    out.assert_success();
    assert_same_lines(&out.stdout, &big_run_lines(400));
    wait_until("no remote worker is left", Duration::from_secs(10), || {
        sshd.remote_workers().is_empty()
    });
}

#[test]
fn a_host_that_cannot_be_used_is_named_with_what_went_wrong() {
    let sshd = Sshd::start("refused");
    let closed = free_port();
    let cases = [
        (
            format!("127.0.0.1:{closed}"),
            sshd.ssh(),
            remote_cmd(),
            format!(
                "fibpool: error: cannot start the pool: host 127.0.0.1:{closed}: \
                 ssh: connect to host 127.0.0.1 port {closed}: Connection refused\n"
            ),
        ),
        (
            sshd.host("127.0.0.2"),
            // Another key: authentication fails.
            sshd.ssh().replace("client_key", "host_key"),
            remote_cmd(),
            format!(
                "fibpool: error: cannot start the pool: host {}: \
                 root@127.0.0.2: Permission denied (publickey).\n",
                sshd.host("127.0.0.2")
            ),
        ),
        (
            sshd.host("127.0.0.1"),
            sshd.ssh(),
            "no-such-fibpool worker".to_owned(),
            format!(
                "fibpool: error: cannot start the pool: host {}: \
                 `no-such-fibpool` is not on its PATH (exit 127)\n",
                sshd.host("127.0.0.1")
            ),
        ),
    ];
    for (host, ssh, remote, want) in cases {
        let out = run(fibpool().args([
            "run",
            "--hosts",
            &host,
            "--ssh",
            &ssh,
            "--remote-cmd",
            &remote,
            "10",
        ]));
        assert_eq!(out.code(), Some(1), "{host}: {}", out.stderr);
        assert_eq!(out.stdout, "");
        assert_eq!(out.stderr, want);
    }
}

#[test]
fn a_tmpdir_that_cannot_hold_the_control_socket_is_named() {
    // No ssh is run: the control directory comes first.
    let out = run(fibpool().env("TMPDIR", "/nonexistent/fibpool-test").args([
        "run",
        "--hosts",
        "127.0.0.1:1",
        "10",
    ]));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "fibpool: error: cannot start the pool: host 127.0.0.1:1: cannot make a \
         directory for ssh's control socket in /nonexistent/fibpool-test (TMPDIR): \
         No such file or directory (os error 2)\n"
    );
}

#[test]
fn a_stop_while_a_master_connects_counts_no_worker() {
    // An "ssh" that never connects, with a child of its own: the master and
    // its child are stopped, and neither is a worker.
    let dir = scratch_dir("slow-ssh");
    let ssh = dir.join("ssh");
    let pidfile = dir.join("child");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nsleep 600 &\necho $! > {}\nwait\n",
            pidfile.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let running = Running::start(fibpool().args([
        "run",
        "--hosts",
        "127.0.0.1:1",
        "--ssh",
        ssh.to_str().unwrap(),
        "10",
    ]));
    let mut child = None;
    wait_until(
        "the fake ssh's child is up",
        Duration::from_secs(60),
        || {
            child = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            child.is_some()
        },
    );
    signal(running.pid(), libc::SIGINT);
    let out = running.finish();
    assert_eq!(out.code(), Some(130), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "fibpool: stopped by SIGINT; 0 worker processes killed and reaped\n"
    );
    let child = child.unwrap();
    wait_until(
        "the fake ssh's child is gone",
        Duration::from_secs(10),
        || !alive(child),
    );
}

#[test]
fn bad_host_options_are_usage_errors() {
    let cases = [
        (
            vec!["--hosts", "0/node"],
            "fibpool: error: --hosts: bad host '0/node': N/ must be a count from 1 to 1024\n",
        ),
        (
            vec!["--hosts=-oProxyCommand=x"],
            "fibpool: error: --hosts: bad host '-oProxyCommand=x': the host name is empty or has a character ssh would not take\n",
        ),
        (
            vec!["--hosts", "node", "--remote-cmd", "'open"],
            "fibpool: error: --remote-cmd: cannot parse ''open': missing closing quote\n",
        ),
        (
            vec!["--hosts", "node", "--transport", "socket"],
            "fibpool: error: --transport socket is for this machine's workers: a remote worker talks over ssh's pipes or tcp\n",
        ),
        (
            vec!["--hosts-file", "/nonexistent/hosts"],
            "fibpool: error: cannot read --hosts-file '/nonexistent/hosts': No such file or directory (os error 2)\n",
        ),
        // Read no further than a list of hosts takes. Old failure: read
        // to its end, which /dev/zero never reaches.
        (
            vec!["--hosts-file", "/dev/zero"],
            "fibpool: error: --hosts-file '/dev/zero' is longer than 1024 KiB, more than 1024 hosts take\n",
        ),
        // Known before any host is reached. Old failure: exit 1 from the
        // pool's build.
        (
            vec!["--hosts", "600/:,600/:"],
            "fibpool: error: the hosts give 1200 workers, more than a pool has (1024)\n",
        ),
    ];
    for (args, want) in cases {
        let out = run(fibpool().arg("run").args(&args).arg("10"));
        assert_eq!(out.code(), Some(2), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr, want, "{args:?}");
    }
}

#[test]
fn a_hosts_file_names_the_hosts() {
    let sshd = Sshd::start("hosts-file");
    let dir = scratch_dir("hosts-file");
    let file = dir.join("hosts");
    std::fs::write(
        &file,
        format!(
            "# two hosts\n2/{}\n\n{}  # one more\n",
            sshd.host("127.0.0.1"),
            sshd.host("127.0.0.2")
        ),
    )
    .unwrap();
    let out = run(fibpool()
        .args([
            "run",
            "-w",
            "1",
            "--ssh",
            &sshd.ssh(),
            "--remote-cmd",
            &remote_cmd(),
        ])
        .arg("--hosts-file")
        .arg(&file)
        .arg("0..500"));
    out.assert_success();
    let indices: Vec<u64> = (0..500).collect();
    assert_same_lines(&out.stdout, &expected_lines(&indices, 10));
    assert!(out.stderr.contains(" on 3 workers: "), "{}", out.stderr);
}

/// The library: a pool on two hosts, used, failed, and used again.
#[test]
fn a_pool_on_hosts_is_used_sees_an_error_and_is_used_again() {
    let sshd = Sshd::start("library");
    let hosts = Host::parse_list(&format!(
        "{},{}",
        sshd.host("127.0.0.1"),
        sshd.host("127.0.0.2")
    ))
    .unwrap();
    let ssh = Ssh {
        command: WorkerCommand::parse(&sshd.ssh()).unwrap(),
        remote_command: remote_cmd(),
    };
    let pool = Pool::builder()
        .hosts(hosts)
        .ssh(ssh)
        .workers(1)
        .build()
        .unwrap();
    assert_eq!(pool.size(), 2);
    let table = fib_table(2999);
    let first: Vec<_> = pool.map(0..3000).collect::<Result<_, _>>().unwrap();
    assert!(first == table, "the first map's values differ");
    let Err(err) = pool.submit([u64::MAX]) else {
        panic!("index u64::MAX was taken")
    };
    assert!(matches!(err, PoolError::IndexTooLarge { .. }), "{err}");
    let again: Vec<_> = pool.map((0..3000).rev()).collect::<Result<_, _>>().unwrap();
    assert!(again.iter().rev().eq(table.iter()));
    let stats = pool.worker_stats();
    let mut hosts: Vec<_> = stats.iter().map(|w| w.host.clone().unwrap()).collect();
    hosts.sort();
    assert_eq!(hosts, [sshd.host("127.0.0.1"), sshd.host("127.0.0.2")]);
    pool.shutdown(true, false).unwrap();
    wait_until("no remote worker is left", Duration::from_secs(10), || {
        sshd.remote_workers().is_empty()
    });
}

#[test]
fn startup_measures_each_host_on_its_master_and_over_its_own_connection() {
    let sshd = Sshd::start("startup");
    let dir = scratch_dir("hosts-startup");
    let file = dir.join("startup.json");
    let hosts = format!("{},:", sshd.host("127.0.0.2"));
    let out = run(fibpool()
        .args([
            "startup", "--rounds", "2", "--warmup", "0", "--hosts", &hosts,
        ])
        .args([
            "--ssh",
            &sshd.ssh(),
            "--remote-cmd",
            &remote_cmd(),
            "--report",
        ])
        .arg(&file));
    out.assert_success();
    let report = report(&file);
    let rows = report.as_array().expect("one row per place");
    assert_eq!(rows.len(), 2, "{report}");
    let (remote, local) = (&rows[0], &rows[1]);
    assert_eq!(remote["host"], sshd.host("127.0.0.2"));
    assert_eq!(local["host"], ":");
    assert!(
        remote["master_connect_seconds"].as_f64().unwrap() > 0.0,
        "{remote}"
    );
    assert!(local["master_connect_seconds"].is_null(), "{local}");
    for row in rows {
        let ready = row["ready"]["median_seconds"].as_f64().unwrap();
        let floor = row["baseline"]["median_seconds"].as_f64().unwrap();
        assert!(ready > 0.0 && floor > 0.0, "{row}");
        let ratio = row["ready_over_floor"].as_f64().unwrap();
        assert!((ratio - ready / floor).abs() < 1e-9, "{row}");
    }
    assert!(
        remote["ready_own_connection"]["median_seconds"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(local["ready_own_connection"].is_null());
    // Two rounds, each a worker on the master and one on a connection of
    // its own: the master's login, then two more.
    assert_eq!(sshd.logins(), 3, "the master and two direct connections");
    assert!(out.stdout.contains("ready via master"), "{}", out.stdout);
}

#[test]
fn stress_over_ssh_is_exact_and_intact() {
    let sshd = Sshd::start("stress");
    let dir = scratch_dir("hosts-stress");
    let file = dir.join("stress.json");
    let out = run(fibpool()
        .args(["stress", "-w", "2", "--pattern", "pingpong,stream,fanout"])
        .args(["--sizes", "8,64K", "--count", "160"])
        .args([
            "--hosts",
            &format!("{},{}", sshd.host("127.0.0.1"), sshd.host("127.0.0.2")),
        ])
        .args([
            "--ssh",
            &sshd.ssh(),
            "--remote-cmd",
            &remote_cmd(),
            "--report",
        ])
        .arg(&file));
    out.assert_success();
    let report = report(&file);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 6, "{report}");
    for r in results {
        for key in ["messages", "raw_messages"] {
            assert_eq!(r[key], 160, "{r}: {key}");
        }
        for key in [
            "lost",
            "duplicated",
            "corrupted",
            "raw_lost",
            "raw_duplicated",
            "raw_corrupted",
        ] {
            assert_eq!(r[key], 0, "{r}: {key}");
        }
    }
    assert_eq!(sshd.logins(), 2 * 6, "each cell connects each host once");
}

#[test]
fn a_remote_shell_that_prints_is_named_for_it() {
    let sshd = Sshd::start("chatty");
    let remote = format!("echo Welcome to host; {}", remote_cmd());
    let out = run(fibpool()
        .args([
            "run",
            "-w",
            "1",
            "--retries",
            "1",
            "--hosts",
            &sshd.host("127.0.0.1"),
        ])
        .args(["--ssh", &sshd.ssh(), "--remote-cmd", &remote, "0..10"]));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("fibpool: error: the run failed: the pool is broken: worker 0 (an ssh session, before its handshake) sent a bad frame before its handshake: frame of 1668048215 bytes exceeds")
            && last.contains("(its first bytes read as text, \"Welc\": does a login script print to stdout?)"),
        "{last}"
    );
}

#[test]
fn eight_workers_on_one_host_take_two_masters_on_either_transport() {
    let sshd = Sshd::start("eight");
    let host = format!("8/{}", sshd.host("127.0.0.1"));
    let want = expected_lines(&(0..60).collect::<Vec<_>>(), 10);
    for (i, transport) in ["pipe", "tcp"].into_iter().enumerate() {
        let out = run(hosts_run(&sshd, &host).args(["-c", "1", "--transport", transport, "0..60"]));
        out.assert_success();
        assert_same_lines(&out.stdout, &want);
        assert!(
            out.stderr
                .starts_with("fibpool: 60 indices in 60 chunks on 8 workers: "),
            "{transport}: {}",
            out.stderr
        );
        // Seven sessions a master: the eighth worker is on a second one.
        assert_eq!(sshd.logins(), 2 * (i + 1), "{transport}");
    }
}

/// A host reached through a ProxyCommand running `sshd -i` sees no address
/// of this machine (its SSH_CONNECTION says UNKNOWN), as behind a jump host:
/// its pipes serve, and tcp is refused with why.
#[test]
fn a_host_that_sees_no_address_here_serves_over_pipes_and_refuses_tcp_with_why() {
    let sshd = Sshd::start("inetd");
    let d = sshd.dir.display();
    let ssh = format!(
        "{} -o 'ProxyCommand={SSHD} -i -f {d}/sshd_config -E {d}/log-inetd'",
        sshd.ssh()
    );
    let hosts = ["run", "--hosts", "2/behind-a-jump", "--ssh", &ssh];
    let out = run(fibpool()
        .args(hosts)
        .args(["--remote-cmd", &remote_cmd(), "0..40"]));
    out.assert_success();
    assert_same_lines(
        &out.stdout,
        &expected_lines(&(0..40).collect::<Vec<_>>(), 10),
    );
    let out = run(fibpool().args(hosts).args([
        "--remote-cmd",
        &remote_cmd(),
        "--transport",
        "tcp",
        "0..40",
    ]));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            ": behind-a-jump: it sees this machine as 'UNKNOWN' (SSH_CONNECTION), not an address to listen on\n"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
}

/// A coordinator in another PID namespace (which sees no pid of ours in
/// its /proc) leaves a live coordinator's control directory alone: the
/// directory's lock says it is in use. Old failure: its sweep removed the
/// directory, and the running pool lost its ssh master's socket.
#[test]
fn another_pid_namespace_leaves_a_live_control_directory_alone() {
    let sshd = Sshd::start("pid-namespace");
    let host = sshd.host("127.0.0.1");
    let running = Running::start(
        fibpool()
            .args(["run", "-c", "1", "--output", "none", "--hosts"])
            .arg(format!("1/{host}"))
            .args(["--ssh", &sshd.ssh(), "--remote-cmd", &remote_cmd()])
            .arg("300000x1000"),
    );
    let prefix = format!("fibpool-ssh-{}-", running.pid());
    let mine = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
    };
    wait_until("the run's control directory", Duration::from_secs(60), mine);
    let inner = run(Command::new("unshare")
        .args(["-pf", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_fibpool"))
        .args(["run", "--hosts"])
        .arg(format!("1/{host}"))
        .args(["--ssh", &sshd.ssh(), "--remote-cmd", &remote_cmd(), "0..5"]));
    inner.assert_success();
    assert!(mine(), "the live run's control directory was swept");
    let out = running.finish();
    out.assert_success();
    assert!(
        out.stderr
            .starts_with("fibpool: 1000 indices in 1000 chunks on 1 worker: "),
        "{}",
        out.stderr
    );
}

/// A remote command that never completes its handshake is killed there
/// once the pool gives up on it, over ssh's pipes and over tcp: the
/// session's processes are found by the token in their environment, as no
/// pid came. Old failure: the command lived on, adopted by init.
#[test]
fn a_remote_command_that_never_answers_is_killed_there() {
    let sshd = Sshd::start("never-answers");
    let dir = scratch_dir("never-answers");
    for transport in ["pipe", "tcp"] {
        let pidfile = dir.join(format!("{transport}.pid"));
        let remote = format!("sh -c 'echo $$ > {}; exec sleep 600'", pidfile.display());
        let out = run(fibpool()
            .args(["run", "--transport", transport, "--handshake-timeout", "1"])
            .args(["--hosts", &format!("1/{}", sshd.host("127.0.0.1"))])
            .args(["--ssh", &sshd.ssh(), "--remote-cmd", &remote, "0..5"]));
        assert_eq!(out.code(), Some(1), "{transport}: {}", out.stderr);
        assert!(
            out.stderr
                .ends_with("did not complete its handshake within 1s\n"),
            "{transport}: {}",
            out.stderr
        );
        wait_gone(&format!("{transport}: the remote sleep"), &pidfile);
    }
}
