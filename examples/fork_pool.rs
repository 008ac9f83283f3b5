//! The fork start method from a library program: `prepare_fork` first thing
//! in `main`, while the program has one thread; then pools whose workers
//! are forks of this program, a bad request refused and the pool used
//! again, and pools built one after another on the same fork server, and one more
//! after that server is released.
//!
//!     cargo run --release --example fork_pool -- [POOLS]   (default 3)

use fibpool_coordinator::{Pool, PoolError, StartMethod};
use num_bigint::BigUint;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A replacement server is spawned from this program, as a worker.
    fibpool_coordinator::run_if_worker();
    fibpool_coordinator::prepare_fork()?;
    let pools: usize = std::env::args().nth(1).map_or(Ok(3), |a| a.parse())?;

    // The oracle: the recurrence, computed here.
    let mut table = vec![BigUint::ZERO, BigUint::from(1u32)];
    while table.len() < 400 {
        let next = &table[table.len() - 1] + &table[table.len() - 2];
        table.push(next);
    }
    let mut pids = Vec::new();
    for round in 0..pools {
        // The last pool forks a fresh server: the shared one was released,
        // and every thread of the pools before it has ended.
        if round + 1 == pools && pools > 1 {
            fibpool_coordinator::release_fork();
        }
        let pool = Pool::builder()
            .workers(2)
            .start_method(StartMethod::Fork)
            .build()?;
        let values = pool.map(0..400).collect::<Result<Vec<_>, _>>()?;
        if values != table {
            return Err(format!("pool {round}: map(0..400) is not F(0..400)").into());
        }
        match pool.submit([u64::MAX]) {
            Err(PoolError::IndexTooLarge { .. }) => {}
            other => return Err(format!("pool {round}: F(u64::MAX) gave {other:?}").into()),
        }
        let values = pool.map((0..400).rev()).collect::<Result<Vec<_>, _>>()?;
        if values.iter().rev().ne(table.iter()) {
            return Err(format!("pool {round}: map of 400 down to 0 is not F").into());
        }
        pids.extend(pool.worker_stats().iter().map(|w| w.pid));
        pool.shutdown(true, false)?;
    }
    // Only now may the program start threads of its own and fork no more.
    fibpool_coordinator::release_fork();
    println!("{pools} fork pools: every value right");
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    println!("workers: {}", pids.join(" "));
    Ok(())
}
