//! The spanmetrics connector's cost per span: one request of 100 load-generator spans (the
//! shared fixtures) counted into series that already exist (the steady state), with the default
//! explicit histogram and with exemplars and an exponential histogram; and its memory per series,
//! measured by jemalloc's allocated bytes after 100,000 distinct span names.
//!
//! `cargo bench -p sluice-connectors --bench spanmetrics`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

// The sluice binary's allocator, whose statistics measure the memory per series.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sluice_connectors::SpanMetricsFactory;
use sluice_core::{Batch, ConnectorContext, ConnectorFactory, Consumer, Route, Signal};

fn connector(config: serde_json::Value) -> Arc<dyn Consumer> {
    let route = Route {
        pipeline: "metrics".to_owned(),
        signal: Signal::Metrics,
        consumer: Arc::new(sluice_fixtures::Discard) as Arc<dyn Consumer>,
    };
    SpanMetricsFactory
        .build("bench", &config)
        .unwrap()
        .instance(ConnectorContext {
            id: "bench".into(),
            from: Signal::Traces,
            routes: BTreeMap::from([("metrics".to_owned(), route)]),
        })
        .unwrap()
}

fn allocated() -> usize {
    tikv_jemalloc_ctl::epoch::advance().unwrap();
    tikv_jemalloc_ctl::stats::allocated::read().unwrap()
}

/// Bytes held per series: 100,000 spans of distinct names, one resource.
fn memory_per_series() {
    let data =
        sluice_fixtures::pool(Signal::Traces, 100, 1, sluice_fixtures::now_nanos()).remove(0);
    let template = ExportTraceServiceRequest::decode(&data[..]).unwrap();
    let mut resource = template.resource_spans[0].clone();
    let span = resource.scope_spans[0].spans[0].clone();
    let batches: Vec<Batch> = (0..100)
        .map(|chunk| {
            resource.scope_spans.truncate(1);
            resource.scope_spans[0].spans = (0..1000)
                .map(|i| {
                    let mut s = span.clone();
                    s.name = format!("GET /api/items/{chunk}-{i}");
                    s
                })
                .collect();
            let request = ExportTraceServiceRequest {
                resource_spans: vec![resource.clone()],
            };
            Batch::from_trusted(Signal::Traces, request.encode_to_vec().into(), 1000)
        })
        .collect();
    for (name, config) in [
        ("explicit", serde_json::json!({"max_series": 1_000_000})),
        (
            "exemplars+exponential",
            serde_json::json!({"max_series": 1_000_000, "exemplars": {"enabled": true}, "histogram": {"exponential": {}}}),
        ),
    ] {
        let consumer = connector(config);
        // Batches this large are counted on the blocking pool: a runtime provides one.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let before = allocated();
        for batch in &batches {
            runtime.block_on(consumer.consume(batch.clone())).unwrap();
        }
        let after = allocated();
        println!(
            "spanmetrics memory per series ({name}): {} bytes over 100000 series",
            (after.saturating_sub(before)) / 100_000
        );
        drop(consumer);
    }
}

fn benches(c: &mut Criterion) {
    memory_per_series();
    let data =
        sluice_fixtures::pool(Signal::Traces, 100, 1, sluice_fixtures::now_nanos()).remove(0);
    let batch = Batch::decode(Signal::Traces, data.clone().into()).unwrap();
    let mut g = c.benchmark_group("spanmetrics_100_spans");
    g.throughput(Throughput::Elements(100));
    g.bench_function("prost_decode", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(&data[..])).unwrap())
    });
    for (name, config) in [
        ("default", serde_json::json!({})),
        (
            "dimensions_exemplars_exponential",
            serde_json::json!({"dimensions": [{"name": "http.request.method"}, {"name": "http.response.status_code"}], "exemplars": {"enabled": true}, "histogram": {"exponential": {}}}),
        ),
    ] {
        let consumer = connector(config);
        g.bench_function(name, |b| {
            b.iter(|| futures::executor::block_on(consumer.consume(black_box(batch.clone()))))
        });
    }
    g.finish();
}

criterion_group!(spanmetrics, benches);
criterion_main!(spanmetrics);
