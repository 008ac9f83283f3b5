//! The seed's `fib_batch_parallel` on fibpool: F(0) to F(N-1) with the
//! seed's plain loop in this process, then on a pool of worker processes
//! with `Pool::map` (Python: `list(executor.map(fib_single, indices))`),
//! and the two compared.
//!
//!     cargo run --release --example fib_batch_parallel -- [N]   (default 1000)

use std::time::Instant;

use fibpool_coordinator::Pool;
use num_bigint::BigUint;

/// The seed's `fib_single`: the O(n) loop.
fn fib_single(n: u64) -> BigUint {
    let (mut a, mut b) = (BigUint::ZERO, BigUint::from(1u32));
    for _ in 0..n {
        let next = &a + &b;
        a = std::mem::replace(&mut b, next);
    }
    a
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A worker copy of this program serves the pool here and exits.
    fibpool_coordinator::run_if_worker();
    let n: u64 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|e| format!("N must be a count: {e}"))?,
        None => 1000,
    };
    let indices: Vec<u64> = (0..n).collect();

    let start = Instant::now();
    let sequential: Vec<BigUint> = indices.iter().map(|&i| fib_single(i)).collect();
    let sequential_time = start.elapsed();
    println!("Sequential: {:.3}s", sequential_time.as_secs_f64());

    let start = Instant::now();
    let pool = Pool::builder().build()?; // one worker per core
    let parallel: Vec<BigUint> = pool
        .map(indices.iter().copied())
        .collect::<Result<_, _>>()?;
    pool.shutdown(true, false)?;
    let parallel_time = start.elapsed();
    println!(
        "Parallel:   {:.3}s on {} workers, start-up included",
        parallel_time.as_secs_f64(),
        pool.size()
    );
    println!(
        "Speedup: {:.2}x",
        sequential_time.as_secs_f64() / parallel_time.as_secs_f64()
    );

    if sequential != parallel {
        return Err("the parallel results differ from the sequential ones".into());
    }
    println!("{n} values: the parallel results match the sequential ones");
    if let Some(last) = parallel.last() {
        println!("F({}) = {last}", n - 1);
    }
    Ok(())
}
