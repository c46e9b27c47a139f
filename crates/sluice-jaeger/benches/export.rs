//! The jaeger exporter's encoding step on a batch of the load generator's spans, against
//! decoding the same batch with prost for scale.
//!
//! `cargo bench -p sluice-jaeger`

use std::hint::black_box;

// The sluice binary's allocator: these steps allocate, and glibc's malloc would dominate.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sluice_core::Signal;

/// A batch as the batch processor builds it: 10 requests of 100 spans, concatenated.
fn batch() -> Vec<u8> {
    sluice_fixtures::pool(Signal::Traces, 100, 10, sluice_fixtures::now_nanos()).concat()
}

fn benches(c: &mut Criterion) {
    let data = batch();
    let mut g = c.benchmark_group("jaeger_1000_spans");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("prost_decode", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(&data[..])).unwrap())
    });
    g.bench_function("post_spans_requests", |b| {
        b.iter(|| sluice_jaeger::post_spans_requests(black_box(&data), 4 << 20).unwrap())
    });
    g.finish();
}

criterion_group!(export, benches);
criterion_main!(export);
