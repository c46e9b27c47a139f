//! Micro-benchmarks of the hot steps on encoded batches, against decoding with prost for scale:
//! validate-and-count a request, merge batches, split a batch, rewrite resources. The requests are
//! the load generator's (sluice-fixtures), so these and `bench/run.sh` measure the same payloads.
//!
//! `cargo bench -p sluice-core`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use sluice_core::{Batch, BatchBuilder, Signal, wire};

/// One request of 100 spans from the load generator's payloads (sluice-fixtures): about 10
/// attributes of mixed types per span, some events, under a 12-attribute resource.
fn request() -> Bytes {
    sluice_fixtures::pool(Signal::Traces, 100, 1, sluice_fixtures::now_nanos())
        .remove(0)
        .into()
}

fn benches(c: &mut Criterion) {
    let data = request();
    let mut g = c.benchmark_group("traces_100_spans");
    g.throughput(Throughput::Elements(100));
    g.bench_function("wire_validate_and_count", |b| {
        b.iter(|| wire::validate_and_count(Signal::Traces, black_box(&data)).unwrap())
    });
    g.bench_function("prost_decode", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(data.clone())).unwrap())
    });
    g.bench_function("prost_decode_and_encode", |b| {
        b.iter(|| {
            ExportTraceServiceRequest::decode(black_box(data.clone()))
                .unwrap()
                .encode_to_vec()
        })
    });
    g.bench_function("rewrite_resource", |b| {
        b.iter(|| {
            wire::rewrite_resources::<()>(black_box(&data), |r| {
                let mut res = r.map(|r| Resource::decode(r).unwrap()).unwrap_or_default();
                res.attributes.push(KeyValue {
                    key: "bench.collector".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("sluice".into())),
                    }),
                    ..Default::default()
                });
                Ok(Some(res.encode_to_vec()))
            })
            .unwrap()
        })
    });
    g.bench_function("split_at_37", |b| {
        b.iter(|| wire::split(Signal::Traces, black_box(&data), 37))
    });
    g.finish();

    let mut g = c.benchmark_group("merge_82_requests_8200_spans");
    g.throughput(Throughput::Elements(8200));
    let batches: Vec<Batch> =
        sluice_fixtures::pool(Signal::Traces, 100, 82, sluice_fixtures::now_nanos())
            .into_iter()
            .map(|r| Batch::decode(Signal::Traces, r.into()).unwrap())
            .collect();
    g.bench_function("batch_builder", |b| {
        b.iter(|| {
            let mut builder = BatchBuilder::new(Signal::Traces);
            for batch in &batches {
                builder.push(batch.clone());
            }
            builder.take()
        })
    });
    g.finish();
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
