use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use sluice_core::{Batch, ConnectorFactory, Signal};

use super::aggregate::{Aggregator, OVERFLOW_ATTRIBUTE, SCOPE_NAME};
use super::*;

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

use sluice_fixtures::{kv, s};

/// A span named `name` of `kind`, lasting `ms` milliseconds, with status `status`.
fn span(name: &str, kind: i32, ms: u64, status: i32, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![1; 8],
        name: name.to_owned(),
        kind,
        start_time_unix_nano: T0,
        end_time_unix_nano: T0 + ms * MS,
        attributes,
        status: Some(Status {
            code: status,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn batch(resources: Vec<(Vec<KeyValue>, Vec<Span>)>) -> Batch {
    let n = resources.iter().map(|r| r.1.len()).sum();
    let request = ExportTraceServiceRequest {
        resource_spans: resources
            .into_iter()
            .map(|(attributes, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    Batch::from_trusted(Signal::Traces, request.encode_to_vec().into(), n)
}

fn config(yaml: serde_json::Value) -> SpanMetricsConfig {
    let problems = SpanMetricsFactory.check("connectors.spanmetrics", &yaml);
    assert!(problems.is_empty(), "{problems:?}");
    serde_json::from_value(yaml).unwrap()
}

fn aggregator(yaml: serde_json::Value) -> Aggregator {
    Aggregator::new(config(yaml).settings(), T0)
}

fn service(name: &str) -> Vec<KeyValue> {
    vec![kv("service.name", s(name))]
}

/// `(attributes as "k=v" strings, calls)` of every calls point, sorted.
fn calls(metrics: &[ResourceMetrics]) -> Vec<(Vec<String>, i64)> {
    let mut out: Vec<(Vec<String>, i64)> = metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .filter_map(|m| match &m.data {
            Some(metric::Data::Sum(sum)) => Some(sum),
            _ => None,
        })
        .flat_map(|sum| &sum.data_points)
        .map(|p| {
            let value = match p.value {
                Some(number_data_point::Value::AsInt(v)) => v,
                other => panic!("calls must be an int: {other:?}"),
            };
            (attributes(&p.attributes), value)
        })
        .collect();
    out.sort();
    out
}

fn attributes(attributes: &[KeyValue]) -> Vec<String> {
    attributes
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            format!("{}={v}", kv.key)
        })
        .collect()
}

fn metric<'a>(metrics: &'a [ResourceMetrics], name: &str) -> Vec<&'a Metric> {
    metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .filter(|m| m.name == name)
        .collect()
}

#[test]
fn calls_and_durations_by_service_name_kind_and_status() {
    let mut a = aggregator(serde_json::json!({}));
    a.add(
        batch(vec![
            (
                service("checkout"),
                vec![
                    span("GET /cart", 2, 3, 0, vec![]),
                    span("GET /cart", 2, 120, 0, vec![]),
                    span("GET /cart", 2, 20_000, 2, vec![]),
                    span("SELECT", 3, 1, 1, vec![]),
                ],
            ),
            (service("payment"), vec![span("charge", 1, 50, 0, vec![])]),
        ]),
        T0,
    );
    let flushed = a.flush(T0 + 60 * 1_000 * MS).expect("metrics");
    assert_eq!(flushed.points, 8);
    let rms = &flushed.request.resource_metrics;
    let key = |svc: &str, name: &str, kind: &str, status: &str| {
        vec![
            format!("service.name={svc}"),
            format!("span.name={name}"),
            format!("span.kind={kind}"),
            format!("status.code={status}"),
        ]
    };
    assert_eq!(
        calls(rms),
        vec![
            (
                key(
                    "checkout",
                    "GET /cart",
                    "SPAN_KIND_SERVER",
                    "STATUS_CODE_ERROR"
                ),
                1
            ),
            (
                key(
                    "checkout",
                    "GET /cart",
                    "SPAN_KIND_SERVER",
                    "STATUS_CODE_UNSET"
                ),
                2
            ),
            (
                key("checkout", "SELECT", "SPAN_KIND_CLIENT", "STATUS_CODE_OK"),
                1
            ),
            (
                key(
                    "payment",
                    "charge",
                    "SPAN_KIND_INTERNAL",
                    "STATUS_CODE_UNSET"
                ),
                1
            ),
        ]
    );
    // Metric names, units, temporality, scope and resource as the Collector writes them.
    for rm in rms {
        let scope = rm.scope_metrics[0].scope.as_ref().unwrap();
        assert_eq!(scope.name, SCOPE_NAME);
        let name = &rm.resource.as_ref().unwrap().attributes[0];
        assert_eq!(name.key, "service.name");
    }
    let calls_metric = metric(rms, "traces.span.metrics.calls");
    let Some(metric::Data::Sum(sum)) = &calls_metric[0].data else {
        panic!("calls is a sum");
    };
    assert!(sum.is_monotonic);
    assert_eq!(sum.aggregation_temporality, 2, "cumulative");
    assert_eq!(sum.data_points[0].start_time_unix_nano, T0);
    assert_eq!(sum.data_points[0].time_unix_nano, T0 + 60_000 * MS);

    let durations = metric(rms, "traces.span.metrics.duration");
    assert_eq!(durations[0].unit, "ms");
    let points: Vec<_> = durations
        .iter()
        .flat_map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => h.data_points.clone(),
            _ => panic!("an explicit histogram"),
        })
        .collect();
    let unset = points
        .iter()
        .find(|p| {
            attributes(&p.attributes).contains(&"status.code=STATUS_CODE_UNSET".to_owned())
                && attributes(&p.attributes).contains(&"span.name=GET /cart".to_owned())
        })
        .unwrap();
    assert_eq!(
        unset.explicit_bounds,
        [
            2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0,
            5000.0, 10000.0, 15000.0
        ]
    );
    // 3ms in (2, 4], 120ms in (100, 200].
    let mut want = vec![0u64; 17];
    want[1] = 1;
    want[7] = 1;
    assert_eq!(unset.bucket_counts, want);
    assert_eq!(unset.count, 2);
    assert_eq!(unset.sum, Some(123.0));
    assert_eq!((unset.min, unset.max), (Some(3.0), Some(120.0)));
    let error = points
        .iter()
        .find(|p| attributes(&p.attributes).contains(&"status.code=STATUS_CODE_ERROR".to_owned()))
        .unwrap();
    assert_eq!(error.bucket_counts[16], 1, "20s is past the last bound");
}

#[test]
fn dimensions_come_from_the_span_then_the_resource_then_the_default() {
    let mut a = aggregator(serde_json::json!({
        "namespace": "",
        "dimensions": [
            {"name": "http.method", "default": "GET"},
            {"name": "region"},
            {"name": "http.status_code"},
        ],
        "exclude_dimensions": ["span.kind", "status.code"],
        "histogram": {"disable": true},
    }));
    let mut resource = service("api");
    resource.push(kv("region", s("eu")));
    a.add(
        batch(vec![(
            resource,
            vec![
                span(
                    "a",
                    2,
                    1,
                    0,
                    vec![
                        kv("http.method", s("POST")),
                        kv("http.status_code", Value::IntValue(201)),
                    ],
                ),
                span("a", 2, 1, 0, vec![kv("region", s("us"))]),
                span("a", 2, 1, 0, vec![]),
            ],
        )]),
        T0,
    );
    let flushed = a.flush(T0 + MS).unwrap();
    let rms = &flushed.request.resource_metrics;
    assert!(metric(rms, "duration").is_empty(), "histogram disabled");
    assert_eq!(
        calls(rms),
        vec![
            (
                vec![
                    "service.name=api".into(),
                    "span.name=a".into(),
                    "http.method=GET".into(),
                    "region=eu".into()
                ],
                1
            ),
            (
                vec![
                    "service.name=api".into(),
                    "span.name=a".into(),
                    "http.method=GET".into(),
                    "region=us".into()
                ],
                1
            ),
            (
                vec![
                    "service.name=api".into(),
                    "span.name=a".into(),
                    "http.method=POST".into(),
                    "region=eu".into(),
                    "http.status_code=201".into()
                ],
                1
            ),
        ]
    );
    assert_eq!(metric(rms, "calls").len(), 1);
}

#[test]
fn past_the_cardinality_limit_spans_go_to_the_overflow_series_and_no_call_is_lost() {
    let mut a = aggregator(serde_json::json!({"aggregation_cardinality_limit": 3}));
    let spans: Vec<Span> = (0..10)
        .map(|i| span(&format!("op-{i}"), 2, 5, 0, vec![]))
        .collect();
    a.add(batch(vec![(service("api"), spans)]), T0);
    assert_eq!(a.overflowed, 7);
    let flushed = a.flush(T0 + MS).unwrap();
    let all = calls(&flushed.request.resource_metrics);
    assert_eq!(all.len(), 4);
    assert_eq!(all.iter().map(|(_, n)| n).sum::<i64>(), 10);
    assert!(
        all.contains(&(vec![format!("{OVERFLOW_ATTRIBUTE}=true")], 7)),
        "{all:?}"
    );
}

#[test]
fn a_million_distinct_span_names_hold_no_more_than_max_series() {
    let mut a = aggregator(serde_json::json!({"max_series": 1000}));
    let mut total = 0;
    for chunk in 0..100 {
        let spans: Vec<Span> = (0..10_000)
            .map(|i| span(&format!("op-{chunk}-{i}"), 2, 1, 0, vec![]))
            .collect();
        total += spans.len();
        a.add(batch(vec![(service("api"), spans)]), T0);
        assert!(a.series() <= 1000);
    }
    assert_eq!(total, 1_000_000);
    assert_eq!(a.series(), 1000);
    assert_eq!(a.overflowed, 999_000);
    let flushed = a.flush(T0 + MS).unwrap();
    let all = calls(&flushed.request.resource_metrics);
    assert_eq!(all.len(), 1001);
    assert_eq!(all.iter().map(|(_, n)| n).sum::<i64>(), 1_000_000);
}

#[test]
fn resources_past_the_cache_size_evict_the_least_recently_seen() {
    let mut a = aggregator(serde_json::json!({"resource_metrics_cache_size": 2}));
    a.add(
        batch(vec![(service("a"), vec![span("x", 2, 1, 0, vec![])])]),
        T0,
    );
    a.add(
        batch(vec![(service("b"), vec![span("x", 2, 1, 0, vec![])])]),
        T0 + 1,
    );
    a.add(
        batch(vec![(service("a"), vec![span("x", 2, 1, 0, vec![])])]),
        T0 + 2,
    );
    a.add(
        batch(vec![(service("c"), vec![span("x", 2, 1, 0, vec![])])]),
        T0 + 3,
    );
    assert_eq!(a.resources(), 2);
    assert_eq!(a.series(), 2);
    let services: Vec<String> = calls(&a.flush(T0 + 4).unwrap().request.resource_metrics)
        .into_iter()
        .map(|(attrs, _)| attrs[0].clone())
        .collect();
    assert_eq!(services, ["service.name=a", "service.name=c"]);
}

#[test]
fn key_attributes_merge_resources_that_differ_elsewhere() {
    let mut a =
        aggregator(serde_json::json!({"resource_metrics_key_attributes": ["service.name"]}));
    for pid in [1, 2, 3] {
        let mut resource = service("api");
        resource.push(kv("process.pid", Value::IntValue(pid)));
        a.add(
            batch(vec![(resource, vec![span("x", 2, 1, 0, vec![])])]),
            T0,
        );
    }
    assert_eq!(a.resources(), 1);
    let flushed = a.flush(T0 + 1).unwrap();
    assert_eq!(calls(&flushed.request.resource_metrics)[0].1, 3);
}

#[test]
fn delta_temporality_writes_each_interval_once_and_starts_where_the_last_ended() {
    let mut a =
        aggregator(serde_json::json!({"aggregation_temporality": "AGGREGATION_TEMPORALITY_DELTA"}));
    a.add(
        batch(vec![(service("api"), vec![span("x", 2, 1, 0, vec![]); 3])]),
        T0,
    );
    let first = a.flush(T0 + 10).unwrap();
    assert_eq!(calls(&first.request.resource_metrics)[0].1, 3);
    assert!(a.flush(T0 + 20).is_none(), "no spans, nothing written");
    a.add(
        batch(vec![(service("api"), vec![span("x", 2, 1, 0, vec![])])]),
        T0 + 25,
    );
    let second = a.flush(T0 + 30).unwrap();
    let rms = &second.request.resource_metrics;
    assert_eq!(calls(rms)[0].1, 1);
    let Some(metric::Data::Sum(sum)) = &metric(rms, "traces.span.metrics.calls")[0].data else {
        panic!()
    };
    assert_eq!(sum.aggregation_temporality, 1, "delta");
    assert_eq!(sum.data_points[0].start_time_unix_nano, T0 + 25);
    assert_eq!(a.series(), 0, "delta holds nothing between flushes");
}

#[test]
fn cumulative_series_keep_counting_and_expire_after_metrics_expiration() {
    let mut a = aggregator(serde_json::json!({"metrics_expiration": "5m"}));
    let minute = 60_000 * MS;
    a.add(
        batch(vec![(service("api"), vec![span("old", 2, 1, 0, vec![])])]),
        T0,
    );
    a.add(
        batch(vec![(service("api"), vec![span("new", 2, 1, 0, vec![])])]),
        T0 + 4 * minute,
    );
    a.add(
        batch(vec![(service("api"), vec![span("new", 2, 1, 0, vec![])])]),
        T0 + 5 * minute,
    );
    let names: Vec<(String, i64)> =
        calls(&a.flush(T0 + 6 * minute).unwrap().request.resource_metrics)
            .into_iter()
            .map(|(attrs, n)| (attrs[1].clone(), n))
            .collect();
    assert_eq!(names, [("span.name=new".to_owned(), 2)]);
    assert_eq!(a.series(), 1);
    assert!(a.flush(T0 + 20 * minute).is_none());
    assert_eq!((a.series(), a.resources()), (0, 0));
}

#[test]
fn exemplars_carry_trace_and_span_ids_capped_per_point_and_per_flush() {
    let mut a =
        aggregator(serde_json::json!({"exemplars": {"enabled": true, "max_per_data_point": 2}}));
    let spans: Vec<Span> = (1..=5u8)
        .map(|i| {
            let mut sp = span("x", 2, u64::from(i), 0, vec![]);
            sp.trace_id = vec![i; 16];
            sp
        })
        .collect();
    a.add(batch(vec![(service("api"), spans)]), T0);
    let flushed = a.flush(T0 + 1).unwrap();
    let durations = metric(
        &flushed.request.resource_metrics,
        "traces.span.metrics.duration",
    );
    let Some(metric::Data::Histogram(h)) = &durations[0].data else {
        panic!()
    };
    let exemplars = &h.data_points[0].exemplars;
    assert_eq!(exemplars.len(), 2);
    for e in exemplars {
        assert_eq!(e.span_id, vec![1; 8]);
        let i = e.trace_id[0];
        assert!(i == 4 || i == 5, "the latest are kept: {i}");
        assert_eq!(e.time_unix_nano, T0 + u64::from(i) * MS);
    }
    a.add(
        batch(vec![(service("api"), vec![span("x", 2, 1, 0, vec![])])]),
        T0 + 2,
    );
    let next = a.flush(T0 + 3).unwrap();
    let Some(metric::Data::Histogram(h)) = &metric(
        &next.request.resource_metrics,
        "traces.span.metrics.duration",
    )[0]
    .data
    else {
        panic!()
    };
    assert_eq!(
        h.data_points[0].exemplars.len(),
        1,
        "exemplars start over each flush"
    );
}

#[test]
fn exponential_histograms_in_seconds() {
    let mut a = aggregator(
        serde_json::json!({"histogram": {"unit": "s", "exponential": {"max_size": 10}}}),
    );
    let spans: Vec<Span> = [1, 10, 100, 1000, 10_000]
        .iter()
        .map(|ms| span("x", 2, *ms, 0, vec![]))
        .collect();
    a.add(batch(vec![(service("api"), spans)]), T0);
    let flushed = a.flush(T0 + 1).unwrap();
    let durations = metric(
        &flushed.request.resource_metrics,
        "traces.span.metrics.duration",
    );
    assert_eq!(durations[0].unit, "s");
    let Some(metric::Data::ExponentialHistogram(h)) = &durations[0].data else {
        panic!("an exponential histogram")
    };
    let p = &h.data_points[0];
    assert_eq!(p.count, 5);
    assert!((p.sum.unwrap() - 11.111).abs() < 1e-9);
    let positive = p.positive.as_ref().unwrap();
    assert!(positive.bucket_counts.len() <= 10);
    assert_eq!(positive.bucket_counts.iter().sum::<u64>(), 5);
    let base = 2f64.powf(2f64.powi(-p.scale));
    for v in [0.001, 10.0] {
        let lower = base.powi(positive.offset);
        let upper = base.powi(positive.offset + positive.bucket_counts.len() as i32);
        assert!(
            lower < v && v <= upper * (1.0 + 1e-9),
            "{v} outside ({lower}, {upper}]"
        );
    }
}

#[test]
fn configs_the_code_cannot_honour_are_refused() {
    let check = |yaml: serde_json::Value| -> Vec<String> {
        SpanMetricsFactory
            .check("connectors.spanmetrics", &yaml)
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(
        check(serde_json::json!({
            "dimensions": [{"name": "span.name"}],
            "exclude_dimensions": ["http.method"],
            "histogram": {"explicit": {"buckets": ["10ms", "5ms"]}, "exponential": {}},
            "events": {"enabled": true},
        })),
        [
            "error: connectors.spanmetrics.dimensions[0].name: duplicate dimension `span.name`",
            "error: connectors.spanmetrics.exclude_dimensions[0]: `http.method` is not a base dimension (one of service.name, span.name, span.kind, status.code)",
            "error: connectors.spanmetrics.histogram: use either `explicit` or `exponential` buckets, not both",
            "error: connectors.spanmetrics.histogram.explicit.buckets: bounds must be strictly increasing",
            "error: connectors.spanmetrics.events.enabled: the events metric is not supported by sluice's spanmetrics; remove `events`",
        ]
    );
    let temporality = check(serde_json::json!({"aggregation_temporality": "DELTA"}));
    assert!(
        temporality[0].contains("unknown variant `DELTA`"),
        "{temporality:?}"
    );
    assert_eq!(
        check(serde_json::json!({
            "histogram": {"explicit": {"buckets": ["100us", "1ms", "2ms", "6ms", "10ms", "100ms", "250ms"]}},
            "dimensions": [{"name": "http.method", "default": "GET"}, {"name": "http.status_code"}],
            "exemplars": {"enabled": true},
            "exclude_dimensions": ["status.code"],
            "dimensions_cache_size": 1000,
            "aggregation_temporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
            "metrics_flush_interval": "15s",
            "metrics_expiration": "5m",
            "events": {"enabled": false},
            "resource_metrics_key_attributes": ["service.name", "telemetry.sdk.language", "telemetry.sdk.name"],
        })),
        // The Collector's README example is accepted, with a warning for the key that does nothing.
        [
            "warning: connectors.spanmetrics.dimensions_cache_size: has no effect in sluice: series are keyed by their values, with no cache to size; memory is bounded by max_series"
        ]
    );
}

#[test]
fn explicit_buckets_are_converted_to_the_unit() {
    let c = config(
        serde_json::json!({"histogram": {"unit": "s", "explicit": {"buckets": ["100us", "250ms", "2s"]}}}),
    );
    assert_eq!(
        c.settings().histogram,
        aggregate::HistogramKind::Explicit(vec![0.0001, 0.25, 2.0])
    );
}
