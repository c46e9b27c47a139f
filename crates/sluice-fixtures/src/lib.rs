//! Realistic OTLP export requests, encoded: what the load generator sends and what the
//! micro-benchmarks measure, so both work on the same payloads.
//!
//! - traces: spans with about 10 attributes of mixed types, parent links, ~10% with an exception
//!   event, ~3% errors;
//! - metrics: histograms with 15 buckets, counters and gauges, each request from its own instance;
//! - logs: records carrying trace context;
//!
//! every request under a 12-attribute resource (one of 8 services). Test and benchmark support
//! only: nothing here belongs on a data path.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use prost::Message;
use rand::Rng;
use sluice_core::Signal;

/// An attribute: the one builder the fixtures and the components' tests share.
pub fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// A traces batch: one resource (with these attributes, if any) and one scope holding `spans`.
pub fn traces_batch(resource: Vec<KeyValue>, spans: Vec<Span>) -> sluice_core::Batch {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: (!resource.is_empty()).then(|| Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    sluice_core::Batch::decode(Signal::Traces, request.encode_to_vec().into())
        .expect("a valid traces request")
}

/// The spans of a traces batch, in order.
pub fn spans(batch: &sluice_core::Batch) -> Vec<Span> {
    ExportTraceServiceRequest::decode(batch.data().clone())
        .expect("a traces request")
        .resource_spans
        .into_iter()
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect()
}

/// A string value.
pub fn s(v: impl Into<String>) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// About a dozen resource attributes, like a Kubernetes pod's. `instance` distinguishes
/// `service.instance.id` (`instance-{service}-{instance}`); `None` gives the fixed `7f9c` suffix.
fn resource(service: usize, instance: Option<usize>) -> Resource {
    let instance = instance.map_or_else(|| "7f9c".to_owned(), |i| i.to_string());
    Resource {
        attributes: vec![
            kv("service.name", s(format!("loadgen-service-{service}"))),
            kv("service.namespace", s("bench")),
            kv("service.version", s("1.4.2")),
            kv(
                "service.instance.id",
                s(format!("instance-{service}-{instance}")),
            ),
            kv("deployment.environment.name", s("production")),
            kv("host.name", s("ip-10-0-12-34.ec2.internal")),
            kv("host.arch", s("amd64")),
            kv("os.type", s("linux")),
            kv("k8s.namespace.name", s("checkout")),
            kv(
                "k8s.pod.name",
                s(format!("checkout-{service}-6d8f9b7c5-x2lqz")),
            ),
            kv("k8s.node.name", s("node-a-17")),
            kv("telemetry.sdk.language", s("rust")),
        ],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "sluice-loadgen".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

fn id<const N: usize>(rng: &mut impl Rng) -> Vec<u8> {
    let mut b = [0u8; N];
    rng.fill(&mut b[..]);
    b.to_vec()
}

/// One request of `items` spans: traces of 10 spans with parent links, ~10% with an exception
/// event, ~3% errors, ~10 attributes each of mixed types.
fn traces(items: usize, rng: &mut impl Rng, now: u64) -> Vec<u8> {
    let mut spans = Vec::with_capacity(items);
    let mut trace_id = id::<16>(rng);
    let mut root = Vec::new();
    for i in 0..items {
        if i % 10 == 0 {
            trace_id = id::<16>(rng);
            root = Vec::new();
        }
        let span_id = id::<8>(rng);
        let start = now - rng.random_range(1_000_000..2_000_000_000);
        let error = rng.random_bool(0.03);
        let mut span = Span {
            trace_id: trace_id.clone(),
            span_id: span_id.clone(),
            parent_span_id: root.clone(),
            name: format!("GET /api/v1/orders/{{id}}/items/{}", i % 7),
            kind: if root.is_empty() {
                SpanKind::Server
            } else {
                SpanKind::Client
            } as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + rng.random_range(100_000..500_000_000),
            attributes: vec![
                kv("http.request.method", s("GET")),
                kv("http.route", s("/api/v1/orders/{id}/items")),
                kv(
                    "url.full",
                    s(format!(
                        "https://shop.example.com/api/v1/orders/{}/items",
                        rng.random_range(1000..99999)
                    )),
                ),
                kv(
                    "http.response.status_code",
                    any_value::Value::IntValue(if error { 500 } else { 200 }),
                ),
                kv("server.address", s("shop.example.com")),
                kv("server.port", any_value::Value::IntValue(443)),
                kv("network.protocol.version", s("1.1")),
                kv(
                    "user_agent.original",
                    s("Mozilla/5.0 (X11; Linux x86_64) loadgen"),
                ),
                kv(
                    "app.cache.hit",
                    any_value::Value::BoolValue(rng.random_bool(0.7)),
                ),
                kv(
                    "app.sample.ratio",
                    any_value::Value::DoubleValue(rng.random()),
                ),
                kv(
                    "app.items",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(s("sku-1")),
                            },
                            AnyValue {
                                value: Some(s("sku-2")),
                            },
                        ],
                    }),
                ),
            ],
            status: error.then(|| Status {
                code: status::StatusCode::Error as i32,
                message: "upstream returned 500".into(),
            }),
            ..Default::default()
        };
        if rng.random_bool(0.1) {
            span.events.push(Event {
                time_unix_nano: start + 1000,
                name: "exception".into(),
                attributes: vec![
                    kv("exception.type", s("java.net.SocketTimeoutException")),
                    kv("exception.message", s("Read timed out after 5000 ms")),
                    kv("exception.stacktrace", s("java.net.SocketTimeoutException: Read timed out\n\tat java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:288)\n\tat java.base/java.net.Socket$SocketInputStream.read(Socket.java:1099)")),
                ],
                ..Default::default()
            });
        }
        if root.is_empty() {
            root = span_id;
        }
        spans.push(span);
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource(rng.random_range(0..8), None)),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// `items` data points: gauges and counters, and histograms with 15 buckets. Each pool entry
/// (`index`) comes from its own `service.instance.id`, so that no two entries share a series: a
/// real export comes from one instance, and backends such as Prometheus reject a batch when two
/// in-flight requests update the same series at nearly the same time.
fn metrics(items: usize, rng: &mut impl Rng, now: u64, index: usize) -> Vec<u8> {
    let mut metrics = Vec::new();
    let mut left = items;
    let mut n = 0;
    while left > 0 {
        let points = left.min(5);
        left -= points;
        let attrs = |p: usize| {
            vec![
                kv("http.route", s(format!("/r/{p}"))),
                kv("http.request.method", s("GET")),
            ]
        };
        let data = match n % 3 {
            0 => metric::Data::Histogram(Histogram {
                data_points: (0..points)
                    .map(|p| HistogramDataPoint {
                        attributes: attrs(p),
                        start_time_unix_nano: now - 60_000_000_000,
                        time_unix_nano: now,
                        count: 150,
                        sum: Some(rng.random_range(1.0..100.0)),
                        bucket_counts: vec![10; 15],
                        explicit_bounds: (1..15).map(|b| b as f64 * 0.005 * b as f64).collect(),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
            1 => metric::Data::Sum(Sum {
                data_points: (0..points)
                    .map(|p| NumberDataPoint {
                        attributes: attrs(p),
                        start_time_unix_nano: now - 60_000_000_000,
                        time_unix_nano: now,
                        value: Some(number_data_point::Value::AsInt(
                            rng.random_range(0..1_000_000),
                        )),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            _ => metric::Data::Gauge(Gauge {
                data_points: (0..points)
                    .map(|p| NumberDataPoint {
                        attributes: attrs(p),
                        time_unix_nano: now,
                        value: Some(number_data_point::Value::AsDouble(rng.random())),
                        ..Default::default()
                    })
                    .collect(),
            }),
        };
        metrics.push(Metric {
            name: format!("loadgen.metric.{n}"),
            unit: "s".into(),
            description: "load generator metric".into(),
            data: Some(data),
            ..Default::default()
        });
        n += 1;
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource(rng.random_range(0..8), Some(index))),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// `items` log records carrying trace context.
fn logs(items: usize, rng: &mut impl Rng, now: u64) -> Vec<u8> {
    let records = (0..items)
        .map(|i| LogRecord {
            time_unix_nano: now - i as u64 * 1000,
            observed_time_unix_nano: now,
            severity_number: if rng.random_bool(0.05) { 17 } else { 9 },
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(s(format!(
                    "order {} shipped to warehouse {} in {} ms",
                    rng.random_range(1000..99999),
                    i % 12,
                    rng.random_range(1..900)
                ))),
            }),
            attributes: vec![
                kv("code.function", s("ship_order")),
                kv("code.lineno", any_value::Value::IntValue(214)),
                kv("thread.name", s("worker-3")),
            ],
            trace_id: id::<16>(rng),
            span_id: id::<8>(rng),
            flags: 1,
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource(rng.random_range(0..8), None)),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// The wall-clock time in nanoseconds since the Unix epoch.
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A pool of `size` distinct encoded requests of `items` items each, with timestamps around `now`
/// (nanoseconds since the Unix epoch).
pub fn pool(signal: Signal, items: usize, size: usize, now: u64) -> Vec<Vec<u8>> {
    let mut rng = rand::rng();
    (0..size)
        .map(|index| match signal {
            Signal::Traces => traces(items, &mut rng, now),
            Signal::Metrics => metrics(items, &mut rng, now, index),
            Signal::Logs => logs(items, &mut rng, now),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_hold_valid_requests_of_the_asked_size() {
        for signal in Signal::ALL {
            for request in pool(signal, 50, 3, now_nanos()) {
                assert_eq!(
                    sluice_core::wire::validate_and_count(signal, &request).unwrap(),
                    50,
                    "{signal}"
                );
            }
        }
    }

    /// The `service.instance.id` of each request's resources.
    fn instance_ids(signal: Signal, request: &[u8]) -> Vec<String> {
        let resources: Vec<Resource> = match signal {
            Signal::Traces => ExportTraceServiceRequest::decode(request)
                .unwrap()
                .resource_spans
                .into_iter()
                .filter_map(|r| r.resource)
                .collect(),
            Signal::Metrics => ExportMetricsServiceRequest::decode(request)
                .unwrap()
                .resource_metrics
                .into_iter()
                .filter_map(|r| r.resource)
                .collect(),
            Signal::Logs => ExportLogsServiceRequest::decode(request)
                .unwrap()
                .resource_logs
                .into_iter()
                .filter_map(|r| r.resource)
                .collect(),
        };
        resources
            .iter()
            .flat_map(|r| &r.attributes)
            .filter(|kv| kv.key == "service.instance.id")
            .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn metrics_pool_entries_have_distinct_instances() {
        let pool = pool(Signal::Metrics, 10, 40, now_nanos());
        let ids: std::collections::HashSet<String> = pool
            .iter()
            .flat_map(|r| {
                let ids = instance_ids(Signal::Metrics, r);
                assert_eq!(ids.len(), 1);
                ids
            })
            .collect();
        assert_eq!(ids.len(), 40);
    }

    #[test]
    fn traces_and_logs_keep_their_eight_resources() {
        for signal in [Signal::Traces, Signal::Logs] {
            for request in pool(signal, 5, 20, now_nanos()) {
                let ids = instance_ids(signal, &request);
                assert_eq!(ids.len(), 1);
                let id = &ids[0];
                let service: usize = id
                    .strip_prefix("instance-")
                    .and_then(|r| r.strip_suffix("-7f9c"))
                    .and_then(|n| n.parse().ok())
                    .unwrap();
                assert!(service < 8, "{id}");
            }
        }
    }
}

/// A consumer that takes every batch and drops it: the end of a pipeline in benchmarks that time
/// a component alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

#[async_trait::async_trait]
impl sluice_core::Consumer for Discard {
    async fn consume(&self, batch: sluice_core::Batch) -> Result<(), sluice_core::ConsumeError> {
        std::hint::black_box(batch);
        Ok(())
    }
}
