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
use prost::Message;
use sluice_core::view::{Context, Editor, Item, Verdict};
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
        struct AddAttribute;
        impl Editor for AddAttribute {
            fn reach(&self) -> sluice_core::view::Reach {
                sluice_core::view::Reach::Resources
            }

            fn resource(&mut self, view: &sluice_core::view::Resource<'_>) -> Verdict {
                let mut resource = view.decode();
                resource.attributes.push(KeyValue {
                    key: "bench.collector".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("sluice".into())),
                    }),
                    ..Default::default()
                });
                Verdict::resource(view, &resource)
            }
        }
        let batch = Batch::decode(Signal::Traces, data.clone()).unwrap();
        b.iter(|| black_box(batch.clone()).edit(&mut AddAttribute))
    });
    g.bench_function("split_at_37", |b| {
        b.iter(|| wire::split(Signal::Traces, black_box(&data), 37))
    });
    // Item-level views and edits (sluice_core::view).
    let batch = Batch::decode(Signal::Traces, data.clone()).unwrap();
    g.bench_function("view_read_every_span", |b| {
        b.iter(|| {
            let mut errors = 0;
            let kept = black_box(batch.clone()).retain(|_, item| {
                let span = item.as_span().unwrap().summary();
                errors += usize::from(
                    span.status_code == 2
                        || span.end_time_unix_nano - span.start_time_unix_nano > 1_000_000,
                );
                true
            });
            (kept, errors)
        })
    });
    g.bench_function("retain_keep_all", |b| {
        b.iter(|| black_box(batch.clone()).retain(|_, _| true))
    });
    g.bench_function("retain_drop_a_third", |b| {
        b.iter(|| {
            black_box(batch.clone()).retain(|_, item| item.raw()[item.raw().len() / 2] % 3 != 0)
        })
    });
    g.bench_function("edit_rewrite_one_span_in_10", |b| {
        struct Rename(usize);
        impl Editor for Rename {
            fn item(&mut self, _: &Context<'_>, item: &Item<'_>) -> Verdict {
                self.0 += 1;
                if !self.0.is_multiple_of(10) {
                    return Verdict::Keep;
                }
                let mut span = item.as_span().unwrap().decode();
                span.name = "GET /users/{id}".into();
                Verdict::replace(&span)
            }
        }
        b.iter(|| black_box(batch.clone()).edit(&mut Rename(0)))
    });
    g.bench_function("group_by_trace_id", |b| {
        b.iter(|| {
            black_box(batch.clone())
                .group_by(|_, item| <[u8; 16]>::try_from(item.trace_id()).unwrap_or_default())
        })
    });
    g.bench_function("group_by_service", |b| {
        b.iter(|| {
            black_box(batch.clone()).group_by(|context, _| {
                context
                    .resource
                    .attribute("service.name")
                    .and_then(|v| v.as_str().map(str::to_owned))
            })
        })
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
