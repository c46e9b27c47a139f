//! The loki exporter's encoding step (translation into labelled streams, JSON lines, packing,
//! protobuf and Snappy) on a batch of the load generator's logs, against decoding the same batch
//! with prost for scale: the exporter's cost per record.
//!
//! `cargo bench -p sluice-loki`

use std::hint::black_box;

// The sluice binary's allocator: these steps allocate, and glibc's malloc would dominate.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;
use sluice_core::Signal;
use sluice_loki::{DefaultLabels, Encoding};

/// A batch as the batch processor builds it: 10 requests of 100 records, concatenated.
fn batch() -> Vec<u8> {
    sluice_fixtures::pool(Signal::Logs, 100, 10, sluice_fixtures::now_nanos()).concat()
}

fn benches(c: &mut Criterion) {
    let data = batch();
    let mut g = c.benchmark_group("loki_1000_records");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("prost_decode", |b| {
        b.iter(|| ExportLogsServiceRequest::decode(black_box(&data[..])).unwrap())
    });
    for (name, encoding) in [
        ("protobuf_snappy", Encoding::Protobuf),
        ("json", Encoding::Json),
    ] {
        g.bench_function(format!("push_requests_{name}"), |b| {
            b.iter(|| {
                sluice_loki::push_requests(
                    black_box(&data),
                    DefaultLabels::default(),
                    encoding,
                    4 << 20,
                    0,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(push, benches);
criterion_main!(push);
