//! The views and edits checked against prost: every accessor reads what prost decodes, and every
//! edit produces exactly the request that the same change made on prost's structs would.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue as PbAnyValue, ArrayValue, InstrumentationScope, KeyValue as PbKeyValue, KeyValueList,
    any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord as PbLogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric as PbMetric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource as PbResource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span as PbSpan, Status, span,
};
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::{Batch, MemoryGate, Signal};

fn kv(key: &str, value: any_value::Value) -> PbKeyValue {
    PbKeyValue {
        key: key.to_owned(),
        value: Some(PbAnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(value: &str) -> any_value::Value {
    any_value::Value::StringValue(value.to_owned())
}

/// Attributes of every value type, chosen by `seed`.
fn attributes(seed: u64) -> Vec<PbKeyValue> {
    let mut out = vec![kv("tenant", s(&format!("t{}", seed % 3)))];
    match seed % 5 {
        0 => out.push(kv("n", any_value::Value::IntValue(-(seed as i64)))),
        1 => out.push(kv("f", any_value::Value::DoubleValue(seed as f64 / 3.0))),
        2 => out.push(kv("b", any_value::Value::BoolValue(seed.is_multiple_of(2)))),
        3 => out.push(kv(
            "list",
            any_value::Value::ArrayValue(ArrayValue {
                values: vec![
                    PbAnyValue {
                        value: Some(s("x")),
                    },
                    PbAnyValue {
                        value: Some(any_value::Value::IntValue(7)),
                    },
                ],
            }),
        )),
        _ => out.push(kv(
            "map",
            any_value::Value::KvlistValue(KeyValueList {
                values: vec![kv("inner", any_value::Value::BytesValue(vec![1, 2]))],
            }),
        )),
    }
    out
}

fn pb_span(seed: u64) -> PbSpan {
    PbSpan {
        trace_id: {
            let mut id = [0u8; 16];
            id[15] = (seed % 4) as u8 + 1;
            id.to_vec()
        },
        span_id: (seed + 1).to_be_bytes().to_vec(),
        trace_state: format!("ot=th:{seed}"),
        parent_span_id: if seed.is_multiple_of(3) {
            Vec::new()
        } else {
            vec![9; 8]
        },
        flags: 0x100 | (seed as u32 & 1),
        name: format!("GET /users/{seed}"),
        kind: (seed % 6) as i32,
        start_time_unix_nano: 1_000 + seed,
        end_time_unix_nano: 2_000 + seed * 7,
        attributes: attributes(seed),
        dropped_attributes_count: 1,
        events: (0..seed % 3)
            .map(|e| span::Event {
                time_unix_nano: 1_500 + e,
                name: format!("event-{e}"),
                attributes: attributes(seed + e),
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: 0,
        links: (0..seed % 2)
            .map(|_| span::Link {
                trace_id: vec![3; 16],
                span_id: vec![4; 8],
                trace_state: "k=v".into(),
                attributes: attributes(seed + 1),
                dropped_attributes_count: 0,
                flags: 1,
            })
            .collect(),
        dropped_links_count: 0,
        status: (!seed.is_multiple_of(4)).then(|| Status {
            message: format!("status {seed}"),
            code: (seed % 3) as i32,
        }),
    }
}

fn pb_log(seed: u64) -> PbLogRecord {
    PbLogRecord {
        time_unix_nano: 10 + seed,
        observed_time_unix_nano: 20 + seed,
        severity_number: (seed % 25) as i32,
        severity_text: format!("S{seed}"),
        body: Some(PbAnyValue {
            value: Some(if seed.is_multiple_of(2) {
                s(&format!("user {seed}@example.com logged in"))
            } else {
                any_value::Value::KvlistValue(KeyValueList {
                    values: attributes(seed),
                })
            }),
        }),
        attributes: attributes(seed),
        dropped_attributes_count: 0,
        flags: seed as u32 & 1,
        trace_id: if seed.is_multiple_of(2) {
            vec![5; 16]
        } else {
            Vec::new()
        },
        span_id: if seed.is_multiple_of(2) {
            vec![6; 8]
        } else {
            Vec::new()
        },
        event_name: format!("e{seed}"),
    }
}

fn exemplar(seed: u64) -> Exemplar {
    Exemplar {
        filtered_attributes: attributes(seed),
        time_unix_nano: seed,
        span_id: vec![1; 8],
        trace_id: vec![2; 16],
        value: None,
    }
}

fn pb_metric(seed: u64, points: u64) -> PbMetric {
    let data = match seed % 5 {
        0 => metric::Data::Gauge(Gauge {
            data_points: (0..points).map(|p| number_point(seed + p)).collect(),
        }),
        1 => metric::Data::Sum(Sum {
            data_points: (0..points).map(|p| number_point(seed + p)).collect(),
            aggregation_temporality: 2,
            is_monotonic: true,
        }),
        2 => metric::Data::Histogram(Histogram {
            data_points: (0..points)
                .map(|p| HistogramDataPoint {
                    attributes: attributes(seed + p),
                    start_time_unix_nano: 1,
                    time_unix_nano: 2 + p,
                    count: 3 + p,
                    sum: Some(4.5),
                    bucket_counts: vec![1, 2],
                    explicit_bounds: vec![1.0],
                    exemplars: vec![exemplar(p)],
                    flags: 0,
                    min: None,
                    max: Some(9.0),
                })
                .collect(),
            aggregation_temporality: 1,
        }),
        3 => metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: (0..points)
                .map(|p| ExponentialHistogramDataPoint {
                    attributes: attributes(seed + p),
                    time_unix_nano: 2 + p,
                    count: 5,
                    scale: -1,
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: 2,
        }),
        _ => metric::Data::Summary(Summary {
            data_points: (0..points)
                .map(|p| SummaryDataPoint {
                    attributes: attributes(seed + p),
                    time_unix_nano: 2 + p,
                    count: 7,
                    sum: 8.0,
                    ..Default::default()
                })
                .collect(),
        }),
    };
    PbMetric {
        name: format!("metric.{seed}"),
        description: "d".into(),
        unit: "ms".into(),
        metadata: attributes(seed),
        data: Some(data),
    }
}

fn number_point(seed: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(seed),
        start_time_unix_nano: 1,
        time_unix_nano: 2 + seed,
        exemplars: vec![exemplar(seed)],
        flags: 0,
        value: Some(if seed.is_multiple_of(2) {
            number_data_point::Value::AsInt(seed as i64 - 3)
        } else {
            number_data_point::Value::AsDouble(seed as f64 * 1.5)
        }),
    }
}

fn pb_resource(seed: u64, present: bool) -> Option<PbResource> {
    present.then(|| PbResource {
        attributes: vec![
            kv("service.name", s(&format!("svc-{}", seed % 3))),
            kv("tenant", s(&format!("t{}", seed % 2))),
        ],
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    })
}

fn pb_scope(seed: u64, present: bool) -> Option<InstrumentationScope> {
    present.then(|| InstrumentationScope {
        name: format!("lib{}", seed % 2),
        version: "1.0".into(),
        attributes: attributes(seed),
        dropped_attributes_count: 0,
    })
}

/// Shapes of requests: per resource, per scope, a number of items (0 allowed: empty scopes).
fn layout() -> impl Strategy<Value = Vec<(bool, Vec<(bool, u64)>)>> {
    prop::collection::vec(
        (
            any::<bool>(),
            prop::collection::vec((any::<bool>(), 0u64..5), 0..3),
        ),
        0..4,
    )
}

fn traces(layout: &[(bool, Vec<(bool, u64)>)]) -> ExportTraceServiceRequest {
    let mut seed = 0;
    ExportTraceServiceRequest {
        resource_spans: layout
            .iter()
            .enumerate()
            .map(|(r, (with_resource, scopes))| ResourceSpans {
                resource: pb_resource(r as u64, *with_resource),
                scope_spans: scopes
                    .iter()
                    .map(|(with_scope, n)| ScopeSpans {
                        scope: pb_scope(*n, *with_scope),
                        spans: (0..*n)
                            .map(|_| {
                                seed += 1;
                                pb_span(seed)
                            })
                            .collect(),
                        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                    })
                    .collect(),
                schema_url: format!("r{r}"),
            })
            .collect(),
    }
}

fn logs(layout: &[(bool, Vec<(bool, u64)>)]) -> ExportLogsServiceRequest {
    let mut seed = 0;
    ExportLogsServiceRequest {
        resource_logs: layout
            .iter()
            .enumerate()
            .map(|(r, (with_resource, scopes))| ResourceLogs {
                resource: pb_resource(r as u64, *with_resource),
                scope_logs: scopes
                    .iter()
                    .map(|(with_scope, n)| ScopeLogs {
                        scope: pb_scope(*n, *with_scope),
                        log_records: (0..*n)
                            .map(|_| {
                                seed += 1;
                                pb_log(seed)
                            })
                            .collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn metrics(layout: &[(bool, Vec<(bool, u64)>)]) -> ExportMetricsServiceRequest {
    let mut seed = 0;
    ExportMetricsServiceRequest {
        resource_metrics: layout
            .iter()
            .enumerate()
            .map(|(r, (with_resource, scopes))| ResourceMetrics {
                resource: pb_resource(r as u64, *with_resource),
                scope_metrics: scopes
                    .iter()
                    .map(|(with_scope, n)| ScopeMetrics {
                        scope: pb_scope(*n, *with_scope),
                        metrics: (0..*n)
                            .map(|m| {
                                seed += 1;
                                pb_metric(seed, m % 3)
                            })
                            .collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// Reads a view's attributes back as prost key/values, through the view accessors only.
fn read_value(value: AnyValue<'_>) -> Option<PbAnyValue> {
    let value = match value {
        AnyValue::Empty => return None,
        AnyValue::String(v) => any_value::Value::StringValue(v.as_str().to_owned()),
        AnyValue::Bool(v) => any_value::Value::BoolValue(v),
        AnyValue::Int(v) => any_value::Value::IntValue(v),
        AnyValue::Double(v) => any_value::Value::DoubleValue(v),
        AnyValue::Bytes(v) => any_value::Value::BytesValue(v.to_vec()),
        AnyValue::Array(_) => any_value::Value::ArrayValue(ArrayValue {
            values: value
                .array()
                .map(|v| read_value(v).unwrap_or_default())
                .collect(),
        }),
        AnyValue::Kvlist(_) => any_value::Value::KvlistValue(KeyValueList {
            values: read_attributes(value.entries()),
        }),
    };
    Some(PbAnyValue { value: Some(value) })
}

fn read_attributes<'a>(attributes: impl Iterator<Item = KeyValue<'a>>) -> Vec<PbKeyValue> {
    attributes
        .map(|kv| PbKeyValue {
            key: kv.key().to_owned(),
            value: read_value(kv.value()),
            ..Default::default()
        })
        .collect()
}

/// A span rebuilt from the view's accessors alone.
fn read_span(view: &Span<'_>) -> PbSpan {
    let status =
        (!view.raw().is_empty() && super::last_len(view.raw(), 15).is_some()).then(|| Status {
            message: view.status_message().to_owned(),
            code: view.status_code(),
        });
    PbSpan {
        trace_id: view.trace_id().to_vec(),
        span_id: view.span_id().to_vec(),
        trace_state: view.trace_state().to_owned(),
        parent_span_id: view.parent_span_id().to_vec(),
        flags: view.flags(),
        name: view.name().to_owned(),
        kind: view.kind(),
        start_time_unix_nano: view.start_time_unix_nano(),
        end_time_unix_nano: view.end_time_unix_nano(),
        attributes: read_attributes(view.attributes()),
        dropped_attributes_count: 1,
        events: view
            .events()
            .map(|e| span::Event {
                time_unix_nano: e.time_unix_nano(),
                name: e.name().to_owned(),
                attributes: read_attributes(e.attributes()),
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: 0,
        links: view
            .links()
            .map(|l| span::Link {
                trace_id: l.trace_id().to_vec(),
                span_id: l.span_id().to_vec(),
                trace_state: l.trace_state().to_owned(),
                attributes: read_attributes(l.attributes()),
                dropped_attributes_count: 0,
                flags: 1,
            })
            .collect(),
        dropped_links_count: 0,
        status,
    }
}

fn read_log(view: &LogRecord<'_>) -> PbLogRecord {
    PbLogRecord {
        time_unix_nano: view.time_unix_nano(),
        observed_time_unix_nano: view.observed_time_unix_nano(),
        severity_number: view.severity_number(),
        severity_text: view.severity_text().to_owned(),
        body: read_value(view.body()),
        attributes: read_attributes(view.attributes()),
        dropped_attributes_count: 0,
        flags: view.flags(),
        trace_id: view.trace_id().to_vec(),
        span_id: view.span_id().to_vec(),
        event_name: view.event_name().to_owned(),
    }
}

/// Every item of a batch through the views, with its context.
fn visit(batch: &Batch, mut f: impl FnMut(&Context<'_>, &Item<'_>)) {
    let _ = batch.clone().retain(|context, item| {
        f(context, item);
        true
    });
}

fn batch(signal: Signal, message: &impl Message) -> Batch {
    Batch::decode(signal, message.encode_to_vec().into()).unwrap()
}

/// A deterministic pseudo-random choice per item, from its bytes and a seed.
fn pick(raw: &[u8], seed: u64) -> bool {
    let h = raw.iter().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    h % 3 != 0
}

/// The prost side of a retain: items filtered, containers that lost every item removed.
fn retain_traces(
    mut req: ExportTraceServiceRequest,
    mut keep: impl FnMut(&PbSpan) -> bool,
) -> ExportTraceServiceRequest {
    req.resource_spans.retain_mut(|rs| {
        let had: usize = rs.scope_spans.iter().map(|ss| ss.spans.len()).sum();
        rs.scope_spans.retain_mut(|ss| {
            let before = ss.spans.len();
            ss.spans.retain(&mut keep);
            before == 0 || !ss.spans.is_empty()
        });
        had == 0 || rs.scope_spans.iter().any(|ss| !ss.spans.is_empty())
    });
    req
}

fn metric_points(m: &PbMetric) -> usize {
    match &m.data {
        Some(metric::Data::Gauge(d)) => d.data_points.len(),
        Some(metric::Data::Sum(d)) => d.data_points.len(),
        Some(metric::Data::Histogram(d)) => d.data_points.len(),
        Some(metric::Data::ExponentialHistogram(d)) => d.data_points.len(),
        Some(metric::Data::Summary(d)) => d.data_points.len(),
        None => 0,
    }
}

fn retain_points(m: &mut PbMetric, keep: &mut impl FnMut(&[u8]) -> bool) {
    fn go<P: Message>(points: &mut Vec<P>, keep: &mut impl FnMut(&[u8]) -> bool) {
        points.retain(|p| keep(&p.encode_to_vec()));
    }
    match &mut m.data {
        Some(metric::Data::Gauge(d)) => go(&mut d.data_points, keep),
        Some(metric::Data::Sum(d)) => go(&mut d.data_points, keep),
        Some(metric::Data::Histogram(d)) => go(&mut d.data_points, keep),
        Some(metric::Data::ExponentialHistogram(d)) => go(&mut d.data_points, keep),
        Some(metric::Data::Summary(d)) => go(&mut d.data_points, keep),
        None => {}
    }
}

fn retain_metrics(
    mut req: ExportMetricsServiceRequest,
    mut keep: impl FnMut(&[u8]) -> bool,
) -> ExportMetricsServiceRequest {
    let count_scope = |sm: &ScopeMetrics| sm.metrics.iter().map(metric_points).sum::<usize>();
    req.resource_metrics.retain_mut(|rm| {
        let had: usize = rm.scope_metrics.iter().map(count_scope).sum();
        rm.scope_metrics.retain_mut(|sm| {
            let before = count_scope(sm);
            sm.metrics.retain_mut(|m| {
                let before = metric_points(m);
                retain_points(m, &mut keep);
                before == 0 || metric_points(m) > 0
            });
            before == 0 || count_scope(sm) > 0
        });
        had == 0 || rm.scope_metrics.iter().map(count_scope).sum::<usize>() > 0
    });
    req
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for signal in Signal::ALL {
            let batch = Batch::from_trusted(signal, bytes.clone().into(), 1);
            let _ = batch.clone().retain(|context, item| {
                let _ = (context.resource.attributes().count(), context.scope.name(), item.attributes().count());
                if let Some(span) = item.as_span() {
                    let _ = (span.summary(), span.events().count(), span.links().count(), span.status_message());
                }
                if let Some(log) = item.as_log() {
                    let _ = (log.body().array().count(), log.body().entries().count());
                }
                if let Some(point) = item.as_point() {
                    let _ = (point.number(), point.sum(), point.count(), point.exemplars().count());
                }
                item.raw().len() % 2 == 0
            });
            let _ = batch.group_by(|_, item| item.raw().len() % 3);
        }
    }

    #[test]
    fn span_views_read_what_prost_decodes(layout in layout()) {
        let req = traces(&layout);
        let expected: Vec<PbSpan> = req
            .resource_spans
            .iter()
            .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.iter().cloned()))
            .collect();
        let mut seen = Vec::new();
        let mut contexts = Vec::new();
        visit(&batch(Signal::Traces, &req), |context, item| {
            let span = item.as_span().unwrap();
            assert_eq!(span.decode(), read_span(span));
            assert_eq!(item.trace_id(), span.trace_id());
            let summary = span.summary();
            assert_eq!(
                (summary.trace_id, summary.span_id, summary.parent_span_id, summary.name, summary.kind),
                (span.trace_id(), span.span_id(), span.parent_span_id(), span.name(), span.kind())
            );
            assert_eq!(
                (summary.start_time_unix_nano, summary.end_time_unix_nano, summary.status_code),
                (span.start_time_unix_nano(), span.end_time_unix_nano(), span.status_code())
            );
            assert_eq!(span.duration_nanos(), span.end_time_unix_nano() - span.start_time_unix_nano());
            seen.push(read_span(span));
            contexts.push((
                context.resource.attribute("service.name").and_then(|v| v.as_str()).map(str::to_owned),
                read_attributes(context.resource.attributes()),
                context.resource.schema_url().to_owned(),
                context.scope.name().to_owned(),
                context.scope.version().to_owned(),
                read_attributes(context.scope.attributes()),
                context.scope.schema_url().to_owned(),
            ));
        });
        prop_assert_eq!(seen, expected);
        let expected_contexts: Vec<_> = req
            .resource_spans
            .iter()
            .flat_map(|rs| {
                rs.scope_spans.iter().flat_map(move |ss| {
                    ss.spans.iter().map(move |_| {
                        let resource = rs.resource.clone().unwrap_or_default();
                        let scope = ss.scope.clone().unwrap_or_default();
                        (
                            resource.attributes.iter().find(|kv| kv.key == "service.name").map(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(any_value::Value::StringValue(s)) => s.clone(),
                                _ => String::new(),
                            }),
                            resource.attributes.clone(),
                            rs.schema_url.clone(),
                            scope.name.clone(),
                            scope.version.clone(),
                            scope.attributes.clone(),
                            ss.schema_url.clone(),
                        )
                    })
                })
            })
            .collect();
        prop_assert_eq!(contexts, expected_contexts);
    }

    #[test]
    fn log_views_read_what_prost_decodes(layout in layout()) {
        let req = logs(&layout);
        let expected: Vec<PbLogRecord> = req
            .resource_logs
            .iter()
            .flat_map(|rl| rl.scope_logs.iter().flat_map(|sl| sl.log_records.iter().cloned()))
            .collect();
        let mut seen = Vec::new();
        visit(&batch(Signal::Logs, &req), |_, item| {
            let log = item.as_log().unwrap();
            assert_eq!(log.decode(), read_log(log));
            seen.push(read_log(log));
        });
        prop_assert_eq!(seen, expected);
    }

    #[test]
    fn point_views_read_what_prost_decodes(layout in layout()) {
        let req = metrics(&layout);
        let mut expected = Vec::new();
        for rm in &req.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    let kind = match &m.data {
                        Some(metric::Data::Gauge(_)) => MetricKind::Gauge,
                        Some(metric::Data::Sum(_)) => MetricKind::Sum,
                        Some(metric::Data::Histogram(_)) => MetricKind::Histogram,
                        Some(metric::Data::ExponentialHistogram(_)) => MetricKind::ExponentialHistogram,
                        _ => MetricKind::Summary,
                    };
                    let (temporality, monotonic) = match &m.data {
                        Some(metric::Data::Sum(d)) => (d.aggregation_temporality, d.is_monotonic),
                        Some(metric::Data::Histogram(d)) => (d.aggregation_temporality, false),
                        Some(metric::Data::ExponentialHistogram(d)) => (d.aggregation_temporality, false),
                        _ => (0, false),
                    };
                    let points: Vec<PointFacts> = match &m.data {
                        Some(metric::Data::Gauge(Gauge { data_points }) | metric::Data::Sum(Sum { data_points, .. })) => data_points
                            .iter()
                            .map(|p| (p.attributes.clone(), p.time_unix_nano, p.value.map(|v| match v {
                                number_data_point::Value::AsInt(i) => i as f64,
                                number_data_point::Value::AsDouble(d) => d,
                            }), None, None, p.exemplars.len()))
                            .collect(),
                        Some(metric::Data::Histogram(d)) => d.data_points.iter().map(|p| (p.attributes.clone(), p.time_unix_nano, None, Some(p.count), p.sum, p.exemplars.len())).collect(),
                        Some(metric::Data::ExponentialHistogram(d)) => d.data_points.iter().map(|p| (p.attributes.clone(), p.time_unix_nano, None, Some(p.count), p.sum, p.exemplars.len())).collect(),
                        Some(metric::Data::Summary(d)) => d.data_points.iter().map(|p| (p.attributes.clone(), p.time_unix_nano, None, Some(p.count), Some(p.sum), 0)).collect(),
                        None => Vec::new(),
                    };
                    for p in points {
                        expected.push((m.name.clone(), m.unit.clone(), read_attributes_pb(&m.metadata), kind, temporality, monotonic, p));
                    }
                }
            }
        }
        let mut seen = Vec::new();
        visit(&batch(Signal::Metrics, &req), |context, item| {
            let point = item.as_point().unwrap();
            let metric = context.metric.unwrap();
            assert_eq!(metric.kind(), Some(point.kind()));
            assert_eq!(metric.description(), "d");
            seen.push((
                metric.name().to_owned(),
                metric.unit().to_owned(),
                read_attributes(metric.metadata()),
                point.kind(),
                metric.temporality(),
                metric.is_monotonic(),
                (
                    read_attributes(point.attributes()),
                    point.time_unix_nano(),
                    point.number(),
                    point.count(),
                    point.sum(),
                    point.exemplars().inspect(|e| {
                        assert_eq!(e.trace_id(), [2; 16]);
                        assert_eq!(e.span_id(), [1; 8]);
                        assert_eq!(e.attributes().count(), 2);
                    }).count(),
                ),
            ));
        });
        prop_assert_eq!(seen, expected);
    }

    #[test]
    fn retain_spans_matches_prost(layout in layout(), seed in any::<u64>()) {
        let req = traces(&layout);
        let input = batch(Signal::Traces, &req);
        let expected = retain_traces(req.clone(), |s| pick(&s.encode_to_vec(), seed));
        let kept = input.clone().retain(|_, item| pick(item.raw(), seed));
        prop_assert_eq!(ExportTraceServiceRequest::decode(kept.data().clone()).unwrap(), expected.clone());
        let items: usize = expected.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
        prop_assert_eq!(kept.items(), items);
        prop_assert_eq!(crate::wire::validate_and_count(Signal::Traces, kept.data()), Ok(items));
        prop_assert_eq!(kept.size(), kept.data().len());
        if items == input.items() {
            prop_assert!(kept.data().as_ptr() == input.data().as_ptr(), "nothing dropped: the same bytes");
        }
    }

    #[test]
    fn retain_points_matches_prost(layout in layout(), seed in any::<u64>()) {
        let req = metrics(&layout);
        let input = batch(Signal::Metrics, &req);
        let expected = retain_metrics(req.clone(), |raw| pick(raw, seed));
        let kept = input.retain(|_, item| pick(item.raw(), seed));
        let decoded = ExportMetricsServiceRequest::decode(kept.data().clone()).unwrap();
        prop_assert_eq!(&decoded, &expected);
        let items: usize = expected.resource_metrics.iter().flat_map(|rm| &rm.scope_metrics).flat_map(|sm| &sm.metrics).map(metric_points).sum();
        prop_assert_eq!(kept.items(), items);
        prop_assert_eq!(crate::wire::validate_and_count(Signal::Metrics, kept.data()), Ok(items));
    }

    #[test]
    fn rewriting_items_matches_prost(layout in layout(), seed in any::<u64>()) {
        let req = logs(&layout);
        let input = batch(Signal::Logs, &req);
        let mut expected = req.clone();
        let mut changed = 0;
        for rl in &mut expected.resource_logs {
            for sl in &mut rl.scope_logs {
                for log in &mut sl.log_records {
                    if pick(&log.encode_to_vec(), seed) {
                        log.body = Some(PbAnyValue { value: Some(s("[redacted]")) });
                        log.attributes.retain(|kv| kv.key != "tenant");
                        changed += 1;
                    }
                }
            }
        }
        struct Redact(u64);
        impl Editor for Redact {
            fn item(&mut self, _: &Context<'_>, item: &Item<'_>) -> Verdict {
                if !pick(item.raw(), self.0) {
                    return Verdict::Keep;
                }
                let mut log = item.as_log().unwrap().decode();
                log.body = Some(PbAnyValue { value: Some(s("[redacted]")) });
                log.attributes.retain(|kv| kv.key != "tenant");
                Verdict::replace(&log)
            }
        }
        let out = input.clone().edit(&mut Redact(seed));
        prop_assert_eq!(ExportLogsServiceRequest::decode(out.data().clone()).unwrap(), expected);
        prop_assert_eq!(out.items(), input.items());
        prop_assert_eq!(crate::wire::validate_and_count(Signal::Logs, out.data()), Ok(input.items()));
        if changed == 0 {
            prop_assert!(out.data().as_ptr() == input.data().as_ptr());
        }
    }

    #[test]
    fn resource_scope_and_metric_edits_match_prost(layout in layout()) {
        let req = metrics(&layout);
        let input = batch(Signal::Metrics, &req);
        // Drop the resources of tenant t1, add a resource attribute, rename scopes and metrics,
        // drop histograms.
        let points = |sm: &ScopeMetrics| sm.metrics.iter().map(metric_points).sum::<usize>();
        let mut expected = req.clone();
        expected.resource_metrics.retain(|rm| {
            rm.resource.as_ref().is_none_or(|r| !r.attributes.iter().any(|kv| kv.key == "tenant" && kv.value == Some(PbAnyValue { value: Some(s("t1")) })))
        });
        expected.resource_metrics.retain_mut(|rm| {
            rm.resource.get_or_insert_default().attributes.push(kv("added", s("yes")));
            let had: usize = rm.scope_metrics.iter().map(points).sum();
            rm.scope_metrics.retain_mut(|sm| {
                let had = points(sm);
                let scope = sm.scope.get_or_insert_default();
                scope.name = format!("{}-renamed", scope.name);
                sm.metrics.retain(|m| !matches!(m.data, Some(metric::Data::Histogram(_))));
                for m in &mut sm.metrics {
                    m.name = format!("{}.renamed", m.name);
                }
                had == 0 || points(sm) > 0
            });
            had == 0 || rm.scope_metrics.iter().map(points).sum::<usize>() > 0
        });
        struct Edits;
        impl Editor for Edits {
            fn resource(&mut self, resource: &Resource<'_>) -> Verdict {
                if resource.attribute("tenant") == Some(AnyValue::String("t1".into())) {
                    return Verdict::Drop;
                }
                let mut r = resource.decode();
                r.attributes.push(kv("added", s("yes")));
                Verdict::resource(resource, &r)
            }
            fn scope(&mut self, _: &Resource<'_>, scope: &Scope<'_>) -> Verdict {
                let mut s = scope.decode();
                s.name = format!("{}-renamed", s.name);
                Verdict::scope(scope, &s)
            }
            fn metric(&mut self, _: &Resource<'_>, _: &Scope<'_>, metric: &Metric<'_>) -> Verdict {
                if metric.kind() == Some(MetricKind::Histogram) {
                    return Verdict::Drop;
                }
                Verdict::metric(metric, Some(&format!("{}.renamed", metric.name())), None, None)
            }
        }
        let out = input.edit(&mut Edits);
        prop_assert_eq!(ExportMetricsServiceRequest::decode(out.data().clone()).unwrap(), expected.clone());
        let items: usize = expected.resource_metrics.iter().flat_map(|rm| &rm.scope_metrics).map(points).sum();
        prop_assert_eq!(out.items(), items);
        prop_assert_eq!(crate::wire::validate_and_count(Signal::Metrics, out.data()), Ok(items));
    }

    #[test]
    fn an_editor_reaching_only_resources_copies_the_rest_whole(layout in layout(), drop_t1 in any::<bool>()) {
        let req = traces(&layout);
        let input = batch(Signal::Traces, &req);
        struct Tag(bool);
        impl Editor for Tag {
            fn reach(&self) -> Reach {
                Reach::Resources
            }
            fn resource(&mut self, resource: &Resource<'_>) -> Verdict {
                if self.0 && resource.attribute("tenant") == Some(AnyValue::String("t1".into())) {
                    return Verdict::Drop;
                }
                let mut r = resource.decode();
                r.attributes.push(kv("added", s("yes")));
                Verdict::resource(resource, &r)
            }
            fn item(&mut self, _: &Context<'_>, _: &Item<'_>) -> Verdict {
                panic!("items are below this editor's reach");
            }
        }
        let mut expected = req.clone();
        expected.resource_spans.retain(|rs| {
            !drop_t1 || rs.resource.as_ref().is_none_or(|r| !r.attributes.iter().any(|kv| kv.key == "tenant" && kv.value == Some(PbAnyValue { value: Some(s("t1")) })))
        });
        for rs in &mut expected.resource_spans {
            rs.resource.get_or_insert_default().attributes.push(kv("added", s("yes")));
        }
        let out = input.edit(&mut Tag(drop_t1));
        prop_assert_eq!(ExportTraceServiceRequest::decode(out.data().clone()).unwrap(), expected.clone());
        let items: usize = expected.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
        prop_assert_eq!(out.items(), items);
        prop_assert_eq!(crate::wire::validate_and_count(Signal::Traces, out.data()), Ok(items));
    }

    #[test]
    fn group_by_partitions_like_prost(layout in layout(), modulus in 1u8..4) {
        let req = traces(&layout);
        let input = batch(Signal::Traces, &req);
        let groups = input.clone().group_by(|context, item| {
            let tenant = context.resource.attribute("tenant").and_then(|v| v.as_str()).unwrap_or("").to_owned();
            (tenant, item.trace_id()[15] % modulus)
        });
        let mut total = 0;
        let mut keys = Vec::new();
        for (key, group) in &groups {
            prop_assert!(!keys.contains(key), "one batch per key");
            keys.push(key.clone());
            let expected = retain_traces(req.clone(), |s| s.trace_id[15] % modulus == key.1)
                .resource_spans
                .into_iter()
                .filter(|rs| {
                    let tenant = rs.resource.as_ref().and_then(|r| r.attributes.iter().find(|kv| kv.key == "tenant")).and_then(|kv| kv.value.as_ref()).and_then(|v| match &v.value { Some(any_value::Value::StringValue(s)) => Some(s.clone()), _ => None }).unwrap_or_default();
                    tenant == key.0
                })
                .map(|mut rs| { rs.scope_spans.retain(|ss| !ss.spans.is_empty()); rs })
                .filter(|rs| !rs.scope_spans.is_empty())
                .collect::<Vec<_>>();
            let mut decoded = ExportTraceServiceRequest::decode(group.data().clone()).unwrap();
            // A resource whose items all went to one group is copied whole, empty scopes and all.
            for rs in &mut decoded.resource_spans {
                rs.scope_spans.retain(|ss| !ss.spans.is_empty());
            }
            if groups.len() > 1 {
                prop_assert_eq!(&decoded.resource_spans, &expected);
            }
            prop_assert_eq!(crate::wire::validate_and_count(Signal::Traces, group.data()), Ok(group.items()));
            total += group.items();
        }
        prop_assert_eq!(total, input.items());
        if groups.len() == 1 {
            prop_assert!(groups[0].1.data().as_ptr() == input.data().as_ptr(), "one key: the batch itself");
        }
    }
}

/// What the point test compares: attributes, time, value, count, sum, exemplars.
type PointFacts = (
    Vec<PbKeyValue>,
    u64,
    Option<f64>,
    Option<u64>,
    Option<f64>,
    usize,
);

fn read_attributes_pb(attributes: &[PbKeyValue]) -> Vec<PbKeyValue> {
    attributes.to_vec()
}

#[test]
fn an_unchanged_edit_copies_nothing_and_an_emptied_batch_is_empty() {
    let req = traces(&[
        (true, vec![(true, 3), (false, 0)]),
        (false, vec![(true, 2)]),
    ]);
    let input = batch(Signal::Traces, &req);
    let same = input.clone().retain(|_, _| true);
    assert!(same.data().as_ptr() == input.data().as_ptr());
    let none = input.clone().retain(|_, _| false);
    assert_eq!((none.items(), none.size()), (0, 0));
    assert!(none.is_empty());
    // A resource holding only an empty scope is kept as it was, byte for byte, by an edit
    // elsewhere.
    let one = input
        .retain(|_, item| item.as_span().unwrap().span_id() == 1u64.wrapping_add(1).to_be_bytes());
    let decoded = ExportTraceServiceRequest::decode(one.data().clone()).unwrap();
    assert_eq!(decoded.resource_spans.len(), 1);
    assert_eq!(
        decoded.resource_spans[0].scope_spans.len(),
        2,
        "the empty scope was not emptied by the edit"
    );
    assert_eq!(one.items(), 1);
}

#[test]
fn reservations_follow_the_bytes_through_edits() {
    let gate = MemoryGate::new("m", 1 << 20);
    let req = logs(&[(true, vec![(true, 4)])]);
    let mut input = batch(Signal::Logs, &req);
    input.hold(gate.reserve(input.size()).unwrap());
    let before = input.size();
    assert_eq!(gate.in_flight(), before);

    // Shrinking gives bytes back when the batch holds its reservation alone.
    let half = input.retain(|_, item| item.as_log().unwrap().time_unix_nano() % 2 == 0);
    assert_eq!(gate.in_flight(), half.size());

    // Growing reserves the difference.
    struct Grow;
    impl Editor for Grow {
        fn item(&mut self, _: &Context<'_>, item: &Item<'_>) -> Verdict {
            let mut log = item.as_log().unwrap().decode();
            log.severity_text = "x".repeat(1000);
            Verdict::replace(&log)
        }
    }
    let grown = half.edit(&mut Grow);
    assert_eq!(gate.in_flight(), grown.size());

    // A copy elsewhere (fan-out) keeps the shared reservation: shrinking gives nothing back.
    let copy = grown.clone();
    let small = grown.retain(|_, _| false);
    assert_eq!(small.size(), 0);
    assert_eq!(gate.in_flight(), copy.size());

    // Pieces of a group_by share the reservation until the last is dropped.
    drop(small);
    let groups = copy.group_by(|_, item| item.as_log().unwrap().time_unix_nano());
    assert_eq!(groups.len(), 2);
    let held = gate.in_flight();
    let (first, second) = (groups[0].1.clone(), groups[1].1.clone());
    drop(groups);
    drop(first);
    assert_eq!(gate.in_flight(), held);
    drop(second);
    assert_eq!(gate.in_flight(), 0);
}

#[test]
fn accessors_of_malformed_bytes_return_defaults() {
    let junk: &[u8] = &[0xff, 0xff, 0x0a, 0x05, 1];
    let span = Span(junk);
    assert_eq!(span.name(), "");
    assert_eq!(span.trace_id(), b"");
    assert_eq!(span.attributes().count(), 0);
    assert_eq!(AnyValue::read(junk), AnyValue::Empty);
    let log = LogRecord(&[0x2a, 0x02, 0x0a, 0xff]);
    assert_eq!(
        log.body(),
        AnyValue::Empty,
        "a body that runs past its end reads as empty"
    );
}

#[test]
fn replacing_a_span_trace_state_keeps_every_other_field() {
    let original = PbSpan {
        trace_id: vec![7; 16],
        span_id: vec![1; 8],
        trace_state: "old=1".into(),
        name: "GET /".into(),
        start_time_unix_nano: 5,
        ..Default::default()
    };
    let raw = original.encode_to_vec();
    let replaced = |ts: &str| match Verdict::span_trace_state(&Span(&raw), ts) {
        Verdict::Replace(bytes) => PbSpan::decode(&bytes[..]).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        replaced("ot=th:8,old=1"),
        PbSpan {
            trace_state: "ot=th:8,old=1".into(),
            ..original.clone()
        }
    );
    assert_eq!(
        replaced(""),
        PbSpan {
            trace_state: String::new(),
            ..original
        }
    );
}
