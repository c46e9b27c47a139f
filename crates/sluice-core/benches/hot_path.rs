//! Micro-benchmarks of the hot steps on encoded batches, against decoding with prost for scale:
//! validate-and-count a request, merge batches, split a batch, rewrite resources.
//!
//! `cargo bench -p sluice-core`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sluice_core::{Batch, BatchBuilder, Signal, wire};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// 100 spans with 10 attributes each under a resource of 12 attributes, like the load generator's.
fn request() -> Bytes {
    let spans = (0..100u64)
        .map(|i| Span {
            trace_id: vec![i as u8; 16],
            span_id: i.to_be_bytes().to_vec(),
            name: format!("GET /api/v1/orders/{i}"),
            start_time_unix_nano: 1_700_000_000_000_000_000 + i,
            end_time_unix_nano: 1_700_000_000_100_000_000 + i,
            attributes: (0..10)
                .map(|a| kv(&format!("attr.{a}"), "some value of moderate size"))
                .collect(),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: (0..12)
                    .map(|a| kv(&format!("resource.{a}"), "resource value"))
                    .collect(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
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
                res.attributes.push(kv("bench.collector", "sluice"));
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
    let batches: Vec<Batch> = (0..82)
        .map(|_| Batch::decode(Signal::Traces, data.clone()).unwrap())
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
