//! Kernel micro-benchmarks: `cargo bench -p fibpool-worker --bench kernels`.
//!
//! - `fib`: fast doubling against the seed's O(n) loop.
//! - `run`: a run of consecutive indices stepped by additions against
//!   computing each index alone.
//! - `encode`: a value's bytes for the wire (raw) and for output (hex,
//!   decimal), against computing it: where formatting happens matters.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fibpool_protocol::Encoding;
use fibpool_worker::kernels::{Tally, encode, encode_run, fib, fib_iterative, for_each_in_run};

fn fast_doubling_vs_iteration(c: &mut Criterion) {
    let mut group = c.benchmark_group("fib");
    for n in [1_000u64, 20_000, 200_000] {
        group.bench_with_input(BenchmarkId::new("fast_doubling", n), &n, |b, &n| {
            b.iter(|| fib(black_box(n)))
        });
        if n <= 20_000 {
            group.bench_with_input(BenchmarkId::new("iteration", n), &n, |b, &n| {
                b.iter(|| fib_iterative(black_box(n)))
            });
        }
    }
    group.finish();
}

fn run_stepping(c: &mut Criterion) {
    let mut group = c.benchmark_group("run");
    let (start, len) = (10_000u64, 1_000u64);
    group.bench_function("stepped_10000+1000", |b| {
        b.iter(|| {
            let mut bits = 0;
            for_each_in_run(black_box(start), len, |v| bits += v.bits());
            bits
        })
    });
    group.bench_function("each_alone_10000+1000", |b| {
        b.iter(|| {
            (start..start + len)
                .map(|n| fib(black_box(n)).bits())
                .sum::<u64>()
        })
    });
    group.bench_function("decimal_stepped_10000+1000", |b| {
        b.iter(|| {
            let mut tally = Tally::default();
            encode_run(black_box(start), len, Encoding::Decimal, &mut tally);
            tally.bytes
        })
    });
    group.bench_function("decimal_converted_10000+1000", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for_each_in_run(black_box(start), len, |v| {
                bytes += encode(v, Encoding::Decimal).len()
            });
            bytes
        })
    });
    group.finish();
}

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for n in [20_000u64, 200_000, 1_000_000] {
        let value = fib(n);
        group.bench_with_input(BenchmarkId::new("compute", n), &n, |b, &n| {
            b.iter(|| fib(black_box(n)))
        });
        for (name, enc) in [
            ("raw", Encoding::Raw),
            ("hex", Encoding::Hex),
            ("decimal", Encoding::Decimal),
        ] {
            group.bench_with_input(BenchmarkId::new(name, n), &value, |b, v| {
                b.iter(|| encode(black_box(v), enc))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = fast_doubling_vs_iteration, run_stepping, encoding
}
criterion_main!(benches);
