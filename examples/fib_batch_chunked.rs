//! The seed's chunked variant: "batch into chunks" of 100 indices, one
//! task each (Python: `executor.map(fib_chunk, chunks)`), here one
//! `Pool::submit` per chunk and the futures' results in order.
//!
//!     cargo run --release --example fib_batch_chunked -- [N] [CHUNK]   (default 1000 100)

use fibpool_coordinator::{Future, Pool};
use num_bigint::BigUint;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    fibpool_coordinator::run_if_worker();
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(1000), |a| a.parse())?;
    let chunk: u64 = args.next().map_or(Ok(100), |a| a.parse())?;
    if chunk == 0 {
        return Err("CHUNK must be at least 1".into());
    }

    let pool = Pool::builder().build()?;
    // chunks = [range(i, i + 100) for i in range(0, 1000, 100)]
    let futures: Vec<Future> = (0..n)
        .step_by(chunk as usize)
        .map(|i| pool.submit(i..(i + chunk).min(n)))
        .collect::<Result<_, _>>()?;
    let mut results: Vec<BigUint> = Vec::with_capacity(n as usize);
    for future in futures {
        results.extend(future.result()?);
    }
    pool.shutdown(true, false)?;

    // Checked against the recurrence itself: F(i) = F(i-1) + F(i-2).
    let consistent = results.len() as u64 == n
        && results.windows(3).all(|w| w[2] == &w[1] + &w[0])
        && results.first().is_none_or(|f| *f == BigUint::ZERO)
        && results.get(1).is_none_or(|f| *f == BigUint::from(1u32));
    if !consistent {
        return Err("the chunks' results do not follow F(i) = F(i-1) + F(i-2)".into());
    }
    println!(
        "{n} values in {} chunks of {chunk} on {} workers",
        n.div_ceil(chunk),
        pool.size()
    );
    if let Some(last) = results.last() {
        println!("F({}) = {last}", n - 1);
    }
    Ok(())
}
