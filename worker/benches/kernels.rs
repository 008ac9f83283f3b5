//! Kernel micro-benchmarks: `cargo bench -p fibpool-worker --bench kernels`.
//!
//! - `fib`: the engine (malachite-nz) against num-bigint's fast doubling,
//!   F(10^4) to F(10^8), and the seed's O(n) loop where it finishes.
//! - `encode`: each encoding of F(n), the engine's against num-bigint's.
//! - `run`: a run of consecutive indices stepped by additions against
//!   computing each index alone, and decimal stepping in base 10^18
//!   against converting each value.
//!
//! A filter picks a part: `cargo bench -p fibpool-worker --bench kernels -- 'fib/'`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use fibpool_protocol::Encoding;
use fibpool_worker::kernels::{
    Tally, encode, encode_limbs, encode_run, fib, fib_iterative, for_each_in_run, reference,
};

const SIZES: [u64; 5] = [10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];

/// Big sizes take seconds an iteration: the fewest samples criterion allows.
fn sized(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, n: u64) {
    if n >= 1_000_000 {
        group.sample_size(10).sampling_mode(SamplingMode::Flat);
    } else {
        group.sample_size(30).sampling_mode(SamplingMode::Auto);
    }
}

fn engines(c: &mut Criterion) {
    let mut group = c.benchmark_group("fib");
    for n in SIZES {
        sized(&mut group, n);
        group.bench_with_input(BenchmarkId::new("engine", n), &n, |b, &n| {
            b.iter(|| fib(black_box(n)))
        });
        group.bench_with_input(BenchmarkId::new("num-bigint", n), &n, |b, &n| {
            b.iter(|| reference::fib(black_box(n)))
        });
        if n <= 10_000 {
            group.bench_with_input(BenchmarkId::new("iteration", n), &n, |b, &n| {
                b.iter(|| fib_iterative(black_box(n)))
            });
        }
    }
    group.finish();
}

fn encodings(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for n in SIZES {
        sized(&mut group, n);
        let engine = fib(n);
        // num-bigint's decimal conversion is quadratic: F(10^8) would take
        // minutes an iteration.
        let num = (n <= 10_000_000).then(|| reference::fib(n));
        for (name, enc) in [
            ("raw", Encoding::Raw),
            ("hex", Encoding::Hex),
            ("decimal", Encoding::Decimal),
        ] {
            group.bench_with_input(
                BenchmarkId::new(format!("{name}/engine"), n),
                &engine,
                |b, v| b.iter(|| encode(black_box(v), enc)),
            );
            let Some(num) = &num else { continue };
            group.bench_with_input(
                BenchmarkId::new(format!("{name}/num-bigint"), n),
                num,
                |b, v| {
                    b.iter(|| match enc {
                        Encoding::Raw => v.to_bytes_le(),
                        Encoding::Hex => v.to_str_radix(16).into_bytes(),
                        Encoding::Decimal => v.to_str_radix(10).into_bytes(),
                    })
                },
            );
            if enc != Encoding::Decimal {
                group.bench_with_input(
                    BenchmarkId::new(format!("{name}/limbs"), n),
                    num,
                    |b, v| {
                        b.iter(|| {
                            let mut out = Vec::new();
                            encode_limbs(black_box(v).iter_u64_digits(), enc, &mut out);
                            out
                        })
                    },
                );
            }
        }
    }
    group.finish();
}

fn run_stepping(c: &mut Criterion) {
    let mut group = c.benchmark_group("run");
    for (start, len) in [(1_000u64, 1_000u64), (10_000, 1_000), (200_000, 200)] {
        let id = format!("{start}+{len}");
        group.bench_function(BenchmarkId::new("stepped", &id), |b| {
            b.iter(|| {
                let mut bits = 0;
                for_each_in_run(black_box(start), len, |v| bits += v.bits());
                bits
            })
        });
        group.bench_function(BenchmarkId::new("each_alone", &id), |b| {
            b.iter(|| {
                (start..start + len)
                    .map(|n| fib(black_box(n)).limb_count())
                    .sum::<u64>()
            })
        });
        for (name, enc) in [
            ("raw_stepped", Encoding::Raw),
            ("hex_stepped", Encoding::Hex),
        ] {
            group.bench_function(BenchmarkId::new(name, &id), |b| {
                b.iter(|| {
                    let mut tally = Tally::default();
                    encode_run(black_box(start), len, enc, &mut tally);
                    tally.bytes
                })
            });
        }
        group.bench_function(BenchmarkId::new("decimal_stepped", &id), |b| {
            b.iter(|| {
                let mut tally = Tally::default();
                encode_run(black_box(start), len, Encoding::Decimal, &mut tally);
                tally.bytes
            })
        });
        group.bench_function(BenchmarkId::new("decimal_converted", &id), |b| {
            b.iter(|| {
                (start..start + len)
                    .map(|n| encode(&fib(black_box(n)), Encoding::Decimal).len())
                    .sum::<usize>()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = engines, encodings, run_stepping
}
criterion_main!(benches);
