//! In-process times of the workers' kernels, best of several runs, for
//! comparison with GMP through `bench/gmpy2_kernels.py` in the same session:
//!
//!     cargo run --release -p fibpool-worker --example kernel_times -- 1000000 10000000
//!
//! For each n: F(n) on the engine and on num-bigint's fast doubling, then
//! the engine's value to decimal, to hex and to raw bytes. num-bigint is left out above
//! 10^7, where one F(n) takes seconds.

use std::time::Instant;

use fibpool_protocol::Encoding;
use fibpool_worker::kernels::{encode, fib, reference};

fn best<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    for arg in std::env::args().skip(1) {
        let Ok(n) = arg.parse::<u64>() else {
            eprintln!("kernel_times: '{arg}' is not an index");
            std::process::exit(2);
        };
        let reps = match n {
            0..100_000 => 200,
            100_000..1_000_000 => 50,
            1_000_000..10_000_000 => 10,
            _ => 3,
        };
        let value = fib(n);
        let ms = |s: f64| format!("{:.3} ms", s * 1e3);
        let engine = best(reps, || fib(n));
        let num = if n <= 10_000_000 {
            ms(best(reps, || reference::fib(n)))
        } else {
            "-".to_owned()
        };
        let decimal = best(reps.min(5), || encode(&value, Encoding::Decimal));
        let hex = best(reps.min(5), || encode(&value, Encoding::Hex));
        let raw = best(reps.min(5), || encode(&value, Encoding::Raw));
        println!(
            "F({n}): engine {}, num-bigint {num}, decimal {}, hex {}, raw {}",
            ms(engine),
            ms(decimal),
            ms(hex),
            ms(raw)
        );
    }
}
