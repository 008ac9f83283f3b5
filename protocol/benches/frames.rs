//! Encoding results for the wire: `cargo bench -p fibpool-protocol --bench frames`.
//!
//! A chunk's answer (many byte strings) framed and unframed, against the raw
//! bytes it carries: what bincode and the framing add per value.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fibpool_protocol::{
    Chunk, ChunkResult, Encoding, FrameReader, FrameWriter, Request, Response, Run,
};

fn results(c: &mut Criterion) {
    let mut group = c.benchmark_group("result_frame");
    // 32 values of 1.7 KB (about F(20000) raw), 1000 values of 87 B (about F(1000)).
    for (count, size) in [(32usize, 1736usize), (1000, 87)] {
        let values: Vec<Vec<u8>> = (0..count).map(|i| vec![i as u8; size]).collect();
        let message = Response::Computed(ChunkResult {
            id: 7,
            busy_ns: 123_456,
            values: values.iter().map(Vec::as_slice).collect(),
        });
        let mut frame = Vec::new();
        FrameWriter::new(&mut frame).send(&message).unwrap();
        let label = format!("{count}x{size}B");
        group.throughput(Throughput::Bytes((count * size) as u64));
        group.bench_with_input(BenchmarkId::new("encode", &label), &message, |b, m| {
            let mut out = Vec::with_capacity(frame.len());
            b.iter(|| {
                out.clear();
                FrameWriter::new(&mut out).send(black_box(m)).unwrap();
            })
        });
        group.bench_with_input(BenchmarkId::new("decode", &label), &frame, |b, f| {
            b.iter(|| {
                let mut reader = FrameReader::new(&f[..]);
                match reader.recv::<Response>().unwrap() {
                    Some(Response::Computed(r)) => r.values.len(),
                    _ => unreachable!(),
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("raw_copy", &label), &values, |b, v| {
            let mut out = Vec::with_capacity(frame.len());
            b.iter(|| {
                out.clear();
                for value in black_box(v) {
                    out.extend_from_slice(value);
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("request_frame");
    let request = Request::Compute(Chunk {
        id: 12345,
        encoding: Encoding::Decimal,
        runs: (0..64)
            .map(|i| Run {
                start: 200_000 + 2 * i,
                len: 1,
            })
            .collect(),
    });
    group.bench_function("encode_64_runs", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            out.clear();
            FrameWriter::new(&mut out)
                .send(black_box(&request))
                .unwrap();
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = results
}
criterion_main!(benches);
