//! The prometheusremotewrite exporter's encoding step on a batch of the load generator's metrics,
//! against decoding the same batch with prost for scale.
//!
//! `cargo bench -p sluice-prometheus`

use std::hint::black_box;

// The sluice binary's allocator: these steps allocate, and glibc's malloc would dominate.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use sluice_core::Signal;
use sluice_prometheus::TranslateOptions;

/// A batch as the batch processor builds it: 10 requests of 100 points (one instance each),
/// concatenated. A third of the points are histograms of 15 buckets: 660 samples per request.
fn batch() -> Vec<u8> {
    sluice_fixtures::pool(Signal::Metrics, 100, 10, sluice_fixtures::now_nanos()).concat()
}

fn benches(c: &mut Criterion) {
    let data = batch();
    let options = TranslateOptions::default();
    let mut g = c.benchmark_group("prometheus_1000_points");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("prost_decode", |b| {
        b.iter(|| ExportMetricsServiceRequest::decode(black_box(&data[..])).unwrap())
    });
    g.bench_function("write_requests", |b| {
        b.iter(|| {
            sluice_prometheus::write_requests(black_box(&data), &options, 1, 4 << 20).unwrap()
        })
    });
    g.finish();
}

criterion_group!(export, benches);
criterion_main!(export);
