//! The kafka exporter's encoding step on a batch of the load generator's spans (1,000 spans, as
//! the batch processor builds it from 10 requests): unkeyed protobuf records (a copy-free slice
//! when the batch fits one record), one record per trace (`partition_traces_by_id`), and OTLP/JSON;
//! against decoding the same batch with prost, for scale. The exporter's cost per span.
//!
//! `cargo bench -p sluice-kafka`

use std::hint::black_box;

// The sluice binary's allocator: these steps allocate, and glibc's malloc would dominate.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sluice_core::{Batch, BuiltExporter, ExporterFactory, HelperSettings, Signal};
use sluice_kafka::KafkaExporterFactory;

fn benches(c: &mut Criterion) {
    let data =
        sluice_fixtures::pool(Signal::Traces, 100, 10, sluice_fixtures::now_nanos()).concat();
    let batch = Batch::decode(Signal::Traces, data.clone().into()).unwrap();
    let mut g = c.benchmark_group("kafka_1000_spans");
    g.throughput(Throughput::Elements(batch.items() as u64));
    g.bench_function("prost_decode", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(&data[..])).unwrap())
    });
    for (name, config) in [
        (
            "records_otlp_proto",
            serde_json::json!({"producer": {"max_message_bytes": 10_000_000}}),
        ),
        ("records_otlp_proto_1mb_split", serde_json::json!({})),
        (
            "records_by_trace_id",
            serde_json::json!({"partition_traces_by_id": true}),
        ),
        (
            "records_otlp_json",
            serde_json::json!({"traces": {"encoding": "otlp_json"}, "producer": {"max_message_bytes": 10_000_000}}),
        ),
    ] {
        let mut helper = HelperSettings::default();
        let BuiltExporter::Push(exporter) = KafkaExporterFactory
            .build("kafka", &config, &mut helper, &Default::default())
            .unwrap()
        else {
            unreachable!()
        };
        g.bench_function(name, |b| {
            b.iter(|| exporter.encode_any(black_box(&batch)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(encode, benches);
criterion_main!(encode);
