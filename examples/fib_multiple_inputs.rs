//! The book chapter's "Fibonacci terms with multiple inputs": a producer
//! puts 15 random indices from 1 to 20 in a queue, consumer processes (one
//! per core) compute each, and the table they fill is printed. Here the
//! pool's workers are the consumers, and the table is filled as their
//! answers come (`Pool::map_unordered`).
//!
//!     cargo run --example fib_multiple_inputs -- [COUNT] [MAX]   (default 15 20)

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use fibpool_coordinator::Pool;

/// A small xorshift generator seeded from the clock: the example needs
/// varied inputs, not good randomness.
fn random_indices(count: usize, max: u64) -> Vec<u64> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
    let mut state = seed | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1 + state % max
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    fibpool_coordinator::run_if_worker();
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(Ok(15), |a| a.parse())?;
    let max: u64 = args.next().map_or(Ok(20), |a| a.parse())?;
    if max == 0 {
        return Err("MAX must be at least 1".into());
    }

    let indices = random_indices(count, max);
    for index in &indices {
        println!("producer: putting {index} in the queue");
    }
    let pool = Pool::builder().build()?;
    let mut table = BTreeMap::new();
    // One index per chunk, as the chapter's consumers take one value at a time.
    let one = NonZeroU64::new(1).expect("1 is not zero");
    for answer in pool.map_unordered(indices).chunk_size(one) {
        let (index, value) = answer?;
        println!("consumer: F({index}) = {value}");
        table.insert(index, value);
    }
    pool.shutdown(true, false)?;
    let table: Vec<String> = table.iter().map(|(n, v)| format!("{n}: {v}")).collect();
    println!("table: {{{}}}", table.join(", "));
    Ok(())
}
