//! The routing connector's cost per item: one request of 100 load-generator spans (the shared
//! fixtures, as in `sluice-core`'s `hot_path`) routed to in-process sinks, by a resource
//! attribute (decided once per resource) and by a span attribute (decided per span, and the
//! batch split), and the `forward` connector for scale.
//!
//! `cargo bench -p sluice-connectors --bench route`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_connectors::{ForwardFactory, RoutingFactory};
use sluice_core::{Batch, ConnectorContext, ConnectorFactory, Consumer, Route, Signal};

fn connector(factory: &dyn ConnectorFactory, config: serde_json::Value) -> Arc<dyn Consumer> {
    let routes: BTreeMap<String, Route> = ["traces/a", "traces/b"]
        .into_iter()
        .map(|p| {
            let route = Route {
                pipeline: p.to_owned(),
                signal: Signal::Traces,
                consumer: Arc::new(sluice_fixtures::Discard) as Arc<dyn Consumer>,
            };
            (p.to_owned(), route)
        })
        .collect();
    factory
        .build("bench", &config)
        .unwrap()
        .instance(ConnectorContext {
            id: "bench".into(),
            from: Signal::Traces,
            routes,
        })
        .unwrap()
}

fn benches(c: &mut Criterion) {
    let data =
        sluice_fixtures::pool(Signal::Traces, 100, 1, sluice_fixtures::now_nanos()).remove(0);
    let batch = Batch::decode(Signal::Traces, data.into()).unwrap();
    let mut g = c.benchmark_group("route_100_spans");
    g.throughput(Throughput::Elements(100));
    let cases = [
        (
            "routing_by_resource_attribute",
            Box::new(RoutingFactory) as Box<dyn ConnectorFactory>,
            serde_json::json!({"default_pipelines": ["traces/b"], "table": [
                {"condition": "attributes[\"service.name\"] == \"loadgen-service-0\"", "pipelines": ["traces/a"]}
            ]}),
        ),
        (
            "routing_by_span_attribute_split",
            Box::new(RoutingFactory),
            serde_json::json!({"default_pipelines": ["traces/b"], "table": [
                {"context": "span", "condition": "attributes[\"http.response.status_code\"] >= 500", "pipelines": ["traces/a"]}
            ]}),
        ),
        ("forward", Box::new(ForwardFactory), serde_json::json!({})),
    ];
    for (name, factory, config) in cases {
        let consumer = connector(factory.as_ref(), config);
        g.bench_function(name, |b| {
            b.iter(|| futures::executor::block_on(consumer.consume(black_box(batch.clone()))))
        });
    }
    g.finish();
}

criterion_group!(route, benches);
criterion_main!(route);
