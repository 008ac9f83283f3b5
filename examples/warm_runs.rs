//! The same batch run again and again on one pool whose workers are all
//! ready: what the work costs once start-up is out of the way, for comparing
//! places and transports (docs/STARTUP.md, "Workers on other hosts").
//!
//!     cargo run --release --example warm_runs -- ROUNDS START END WORKERS TRANSPORT [HOSTS [SSH [REMOTE-CMD]]]
//!
//! TRANSPORT is pipe, socket or tcp; HOSTS a `--hosts` list (WORKERS then
//! per host). Prints the first round's time, then the median, minimum and
//! maximum of all.

use std::time::{Duration, Instant};

use fibpool_coordinator::{
    Encoding, Host, Pool, RunOptions, Ssh, TaskList, Transport, WorkerCommand,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    fibpool_coordinator::run_if_worker();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        return Err(
            "usage: warm_runs ROUNDS START END WORKERS TRANSPORT [HOSTS [SSH [REMOTE-CMD]]]".into(),
        );
    }
    let rounds: usize = args[0].parse()?;
    let (start, end): (u64, u64) = (args[1].parse()?, args[2].parse()?);
    let workers: usize = args[3].parse()?;
    let transport = match args[4].as_str() {
        "pipe" => Transport::Pipe,
        "socket" => Transport::Socket,
        "tcp" => Transport::Tcp,
        other => return Err(format!("no transport '{other}'").into()),
    };
    if rounds == 0 || start >= end {
        return Err("ROUNDS must be at least 1 and START below END".into());
    }
    let mut builder = Pool::builder().workers(workers).transport(transport);
    if let Some(hosts) = args.get(5) {
        builder = builder.hosts(Host::parse_list(hosts)?);
        if let Some(ssh) = args.get(6) {
            let defaults = Ssh::default();
            builder = builder.ssh(Ssh {
                command: WorkerCommand::parse(ssh)?,
                remote_command: args.get(7).cloned().unwrap_or(defaults.remote_command),
            });
        }
    }
    let pool = builder.build()?;
    pool.probe().wait_ready()?;
    let mut tasks = TaskList::new();
    tasks.push_range(start, end);
    let options = RunOptions {
        chunk_size: None,
        encoding: Encoding::Raw,
        ordered: true,
    };
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let mut values = 0u64;
        let began = Instant::now();
        pool.run(&tasks, &options, |item| {
            if item.index != start + values {
                return Err(std::io::Error::other(format!(
                    "F({}) came where F({}) should",
                    item.index,
                    start + values
                )));
            }
            values += 1;
            Ok(())
        })?;
        times.push(began.elapsed());
        if values != end - start {
            return Err(format!("{values} values for {} indices", end - start).into());
        }
    }
    pool.shutdown(true, false)?;
    let first = times[0];
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{rounds} rounds of {start}..{end}: first {:.2} ms, median {:.2} ms, min {:.2} ms, max {:.2} ms",
        ms(first),
        ms(times[rounds / 2]),
        ms(times[0]),
        ms(times[rounds - 1])
    );
    Ok(())
}
