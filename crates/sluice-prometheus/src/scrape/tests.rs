use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use std::time::Instant;

use super::*;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

const T: u64 = 1_700_000_000_000_000_000;

fn point(t: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: t - 60_000_000_000,
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn request(metrics: Vec<Metric>) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("service.instance.id", "i-1"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn counter(t: u64, v: f64, temporality: AggregationTemporality) -> Metric {
    Metric {
        name: "http.requests".into(),
        description: "Requests \\ served\nby route".into(),
        unit: "1".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![point(t, v, vec![kv("route", "/a\"b")])],
            aggregation_temporality: temporality as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

/// A cumulative histogram `latency` (seconds): 3 points, 1 of them at most 0.25, sum 0.7.
fn latency(exemplars: Vec<opentelemetry_proto::tonic::metrics::v1::Exemplar>) -> Metric {
    Metric {
        name: "latency".into(),
        unit: "s".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                start_time_unix_nano: T - 60_000_000_000,
                time_unix_nano: T,
                count: 3,
                sum: Some(0.7),
                bucket_counts: vec![1, 2],
                explicit_bounds: vec![0.25],
                exemplars,
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    }
}

fn exporter(config: serde_json::Value) -> Shared {
    let c: ScrapeConfig = serde_json::from_value(config).unwrap();
    Shared::new("prometheus", c)
}

#[test]
fn renders_the_text_format_by_family_with_help_types_and_escapes() {
    let e = exporter(serde_json::json!({
        "endpoint": "127.0.0.1:0",
        "namespace": "shop",
        "const_labels": {"environment": "e2e"},
    }));
    let histogram = latency(vec![]);
    let gauge = Metric {
        name: "memory".into(),
        unit: "By".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![point(T, 1536.5, vec![])],
        })),
        ..Default::default()
    };
    e.take(&request(vec![
        counter(T, 42.0, AggregationTemporality::Cumulative),
        histogram,
        gauge,
    ]))
    .unwrap();
    let text = e.render(Instant::now());
    let labels = r#"environment="e2e",instance="i-1",job="checkout""#;
    let expected = format!(
        r#"# HELP shop_http_requests_total Requests \\ served\nby route
# TYPE shop_http_requests_total counter
shop_http_requests_total{{{labels},route="/a\"b"}} 42
# HELP shop_latency_seconds shop_latency_seconds
# TYPE shop_latency_seconds histogram
shop_latency_seconds_bucket{{{labels},le="0.25"}} 1
shop_latency_seconds_bucket{{{labels},le="+Inf"}} 3
shop_latency_seconds_count{{{labels}}} 3
shop_latency_seconds_sum{{{labels}}} 0.7
# HELP shop_memory_bytes shop_memory_bytes
# TYPE shop_memory_bytes gauge
shop_memory_bytes{{{labels}}} 1536.5
"#
    );
    assert_eq!(text, expected);
}

#[test]
fn keeps_the_newest_point_drops_deltas_and_stale_series_and_forgets_expired_ones() {
    let e = exporter(serde_json::json!({
        "endpoint": "127.0.0.1:0",
        "send_timestamps": true,
        "metric_expiration": "200ms",
    }));
    let cumulative = AggregationTemporality::Cumulative;
    e.take(&request(vec![counter(T + 1_000_000, 5.0, cumulative)]))
        .unwrap();
    // An older point arriving later does not go back in time.
    e.take(&request(vec![counter(T, 3.0, cumulative)])).unwrap();
    assert!(
        e.render(Instant::now())
            .contains("http_requests_total{instance=\"i-1\",job=\"checkout\",route=\"/a\\\"b\"} 5 1700000000001\n"),
        "{}",
        e.render(Instant::now())
    );
    // A stale marker removes the series at once.
    let mut stale = counter(T + 3_000_000, 0.0, cumulative);
    if let Some(metric::Data::Sum(sum)) = &mut stale.data {
        sum.data_points[0].flags = 1;
        sum.data_points[0].value = None;
    }
    e.take(&request(vec![stale])).unwrap();
    // The family goes with its last series.
    assert!(
        !e.render(Instant::now()).contains("http_requests_total"),
        "{}",
        e.render(Instant::now())
    );
    // Without new points, a series is gone after `metric_expiration`.
    e.take(&request(vec![counter(T + 4_000_000, 6.0, cumulative)]))
        .unwrap();
    assert!(e.render(Instant::now()).contains("} 6 "));
    // Rendered as of a moment past the expiration: no sleeping, nothing timed.
    let later = Instant::now() + std::time::Duration::from_millis(250);
    assert!(
        !e.render(later).contains("http_requests_total"),
        "{}",
        e.render(later)
    );
}

#[test]
fn configs_it_cannot_honour_are_refused() {
    let problems: Vec<String> = ScrapeExporterFactory
        .check(
            "exporters.prometheus",
            &serde_json::json!({"endpoint": "", "enable_open_metrics": true, "translation_strategy": "x"}),
        )
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("translation_strategy") && problems[0].contains("unknown variant `x`"),
        "{problems:?}"
    );
    let problems: Vec<String> = ScrapeExporterFactory
        .check(
            "exporters.prometheus",
            &serde_json::json!({"endpoint": "0.0.0.0:9464", "translation_strategy": "NoUTF8EscapingWithSuffixes"}),
        )
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "error: exporters.prometheus.translation_strategy: UTF-8 metric names are not supported: sluice escapes names for the text format 0.0.4 and Prometheus 2 (use UnderscoreEscapingWithSuffixes or UnderscoreEscapingWithoutSuffixes)"
        ]
    );
    let problems: Vec<String> = ScrapeExporterFactory
        .check(
            "exporters.prometheus",
            &serde_json::json!({"endpoint": "", "enable_open_metrics": true}),
        )
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "error: exporters.prometheus.endpoint: required: the address Prometheus scrapes (`0.0.0.0:8889`)"
        ]
    );
}

fn delta_sum(start: u64, end: u64, v: f64, monotonic: bool) -> Metric {
    Metric {
        name: if monotonic { "jobs" } else { "level" }.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                start_time_unix_nano: start,
                time_unix_nano: end,
                value: Some(number_data_point::Value::AsDouble(v)),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

fn delta_histogram(start: u64, end: u64, buckets: [u64; 2], sum: f64) -> Metric {
    Metric {
        name: "wait".into(),
        unit: "s".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                start_time_unix_nano: start,
                time_unix_nano: end,
                count: buckets.iter().sum(),
                sum: Some(sum),
                bucket_counts: buckets.to_vec(),
                explicit_bounds: vec![1.0],
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    }
}

/// The value of the one line of `text` that starts with `series`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

#[test]
fn delta_sums_and_histograms_are_accumulated_as_the_collector_does() {
    let e = exporter(serde_json::json!({"endpoint": "127.0.0.1:0"}));
    let s = 1_000_000_000;
    let take = |m: Metric| e.take(&request(vec![m])).unwrap();
    let jobs = "jobs_total{instance=\"i-1\",job=\"checkout\"}";
    // Contiguous deltas add up.
    take(delta_sum(T, T + s, 5.0, true));
    take(delta_sum(T + s, T + 2 * s, 3.0, true));
    assert_eq!(
        value(&e.render(Instant::now()), jobs),
        Some(8.0),
        "{}",
        e.render(Instant::now())
    );
    // A point older than the last is ignored.
    take(delta_sum(T, T + s, 100.0, true));
    assert_eq!(value(&e.render(Instant::now()), jobs), Some(8.0));
    // A gap is a restart: the series begins again.
    take(delta_sum(T + 5 * s, T + 6 * s, 2.0, true));
    assert_eq!(value(&e.render(Instant::now()), jobs), Some(2.0));
    // Non-monotonic deltas are not served.
    take(delta_sum(T, T + s, 1.0, false));
    assert!(
        !e.render(Instant::now()).contains("level"),
        "{}",
        e.render(Instant::now())
    );

    let bucket =
        |le: &str| format!("wait_seconds_bucket{{instance=\"i-1\",job=\"checkout\",le=\"{le}\"}}");
    let sum = "wait_seconds_sum{";
    take(delta_histogram(T, T + s, [1, 1], 1.5));
    take(delta_histogram(T + s, T + 2 * s, [2, 1], 2.0));
    let text = e.render(Instant::now());
    assert_eq!(value(&text, &bucket("1")), Some(3.0), "{text}");
    assert_eq!(value(&text, &bucket("+Inf")), Some(5.0));
    assert_eq!(value(&text, sum), Some(3.5));
    // Overlapping the last point: dropped; the totals stay.
    take(delta_histogram(T + s, T + 3 * s, [9, 9], 9.0));
    assert_eq!(value(&e.render(Instant::now()), &bucket("+Inf")), Some(5.0));
}

#[test]
fn the_openmetrics_format_names_counter_families_without_total_and_carries_exemplars() {
    use opentelemetry_proto::tonic::metrics::v1::{Exemplar, exemplar};
    let e = exporter(
        serde_json::json!({"endpoint": "127.0.0.1:0", "enable_open_metrics": true, "send_timestamps": true}),
    );
    let with_exemplar = |value: f64| Exemplar {
        time_unix_nano: T - 1_000_000,
        trace_id: vec![0xab; 16],
        span_id: vec![0xcd; 8],
        value: Some(exemplar::Value::AsDouble(value)),
        ..Default::default()
    };
    let mut requests = counter(T, 42.0, AggregationTemporality::Cumulative);
    if let Some(metric::Data::Sum(sum)) = &mut requests.data {
        sum.data_points[0].exemplars = vec![with_exemplar(1.0)];
    }
    let histogram = Metric {
        description: "How \"long\"".into(),
        ..latency(vec![with_exemplar(0.2)])
    };
    e.take(&request(vec![requests, histogram])).unwrap();
    let page = e.render_openmetrics(Instant::now());
    let labels = r#"instance="i-1",job="checkout""#;
    let ids = format!(
        r#"span_id="{}",trace_id="{}""#,
        "cd".repeat(8),
        "ab".repeat(16)
    );
    let expected = format!(
        r#"# TYPE http_requests counter
# HELP http_requests Requests \\ served\nby route
http_requests_total{{{labels},route="/a\"b"}} 42 1700000000.000 # {{{ids}}} 1 1699999999.999
# TYPE latency_seconds histogram
# HELP latency_seconds How \"long\"
latency_seconds_bucket{{{labels},le="0.25"}} 1 1700000000.000 # {{{ids}}} 0.2 1699999999.999
latency_seconds_bucket{{{labels},le="+Inf"}} 3 1700000000.000
latency_seconds_count{{{labels}}} 3 1700000000.000
latency_seconds_sum{{{labels}}} 0.7 1700000000.000
# EOF
"#
    );
    assert_eq!(page, expected);
    assert!(super::openmetrics::accepted(
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    ));
}

#[test]
fn a_translation_strategy_without_suffixes_overrides_add_metric_suffixes() {
    let e = exporter(serde_json::json!({
        "endpoint": "127.0.0.1:0",
        "add_metric_suffixes": true,
        "translation_strategy": "UnderscoreEscapingWithoutSuffixes",
    }));
    e.take(&request(vec![counter(
        T,
        1.0,
        AggregationTemporality::Cumulative,
    )]))
    .unwrap();
    let text = e.render(Instant::now());
    assert!(text.contains("\nhttp_requests{"), "{text}");
    assert!(!text.contains("_total"), "{text}");
}

#[test]
fn the_protobuf_format_gathers_families_and_carries_exponential_histograms_natively() {
    use super::exposition::{MetricFamily, MetricType as Kind};
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Summary, SummaryDataPoint,
        exponential_histogram_data_point::Buckets, summary_data_point::ValueAtQuantile,
    };
    let e = exporter(serde_json::json!({"endpoint": "127.0.0.1:0", "send_timestamps": true}));
    let histogram = latency(vec![]);
    let exponential = Metric {
        name: "payload".into(),
        unit: "By".into(),
        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                start_time_unix_nano: T - 60_000_000_000,
                time_unix_nano: T,
                count: 6,
                sum: Some(100.0),
                scale: 0,
                zero_count: 1,
                positive: Some(Buckets {
                    offset: 0,
                    bucket_counts: vec![2, 3],
                }),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    };
    let summary = Metric {
        name: "rpc".into(),
        unit: "ms".into(),
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                start_time_unix_nano: T - 60_000_000_000,
                time_unix_nano: T,
                count: 4,
                sum: 30.0,
                quantile_values: vec![
                    ValueAtQuantile {
                        quantile: 0.5,
                        value: 5.0,
                    },
                    ValueAtQuantile {
                        quantile: 0.99,
                        value: 20.0,
                    },
                ],
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    e.take(&request(vec![
        counter(T, 42.0, AggregationTemporality::Cumulative),
        histogram,
        exponential,
        summary,
    ]))
    .unwrap();

    let page = e.render_protobuf(Instant::now());
    let mut rest = &page[..];
    let mut families = Vec::new();
    while !rest.is_empty() {
        families.push(MetricFamily::decode_length_delimited(&mut rest).unwrap());
    }
    let names: Vec<&str> = families
        .iter()
        .map(|f| f.name.as_deref().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "http_requests_total",
            "latency_seconds",
            "payload_bytes",
            "rpc_milliseconds",
        ]
    );
    let family = |name: &str| {
        families
            .iter()
            .find(|f| f.name.as_deref() == Some(name))
            .unwrap()
    };
    let t_ms = (T / 1_000_000) as i64;

    let counter = family("http_requests_total");
    assert_eq!(counter.r#type, Some(Kind::Counter as i32));
    assert_eq!(
        counter.help.as_deref(),
        Some("Requests \\ served\nby route")
    );
    let m = &counter.metric[0];
    assert_eq!(m.counter.as_ref().unwrap().value, Some(42.0));
    assert_eq!(m.timestamp_ms, Some(t_ms));
    let labels: Vec<(&str, &str)> = m
        .label
        .iter()
        .map(|l| (l.name.as_deref().unwrap(), l.value.as_deref().unwrap()))
        .collect();
    assert_eq!(
        labels,
        [("instance", "i-1"), ("job", "checkout"), ("route", "/a\"b")]
    );

    // A classic histogram: one metric, its buckets cumulative, +Inf implied by the count.
    let latency = family("latency_seconds");
    assert_eq!(latency.r#type, Some(Kind::Histogram as i32));
    assert_eq!(latency.metric.len(), 1);
    let h = latency.metric[0].histogram.as_ref().unwrap();
    assert_eq!((h.sample_count, h.sample_sum), (Some(3), Some(0.7)));
    let buckets: Vec<(f64, u64)> = h
        .bucket
        .iter()
        .map(|b| (b.upper_bound.unwrap(), b.cumulative_count.unwrap()))
        .collect();
    assert_eq!(buckets, [(0.25, 1)]);
    assert!(h.schema.is_none() && h.positive_span.is_empty());

    // The exponential histogram, as a native one: OTLP bucket i is Prometheus bucket i + 1.
    let payload = family("payload_bytes");
    assert_eq!(payload.r#type, Some(Kind::Histogram as i32));
    let n = payload.metric[0].histogram.as_ref().unwrap();
    assert_eq!(
        (n.sample_count, n.sample_sum, n.schema),
        (Some(6), Some(100.0), Some(0))
    );
    assert_eq!(n.zero_count, Some(1));
    let spans: Vec<(i32, u32)> = n
        .positive_span
        .iter()
        .map(|s| (s.offset.unwrap(), s.length.unwrap()))
        .collect();
    assert_eq!(spans, [(1, 2)]);
    assert_eq!(n.positive_delta, [2, 1]);
    assert!(n.bucket.is_empty());

    let rpc = family("rpc_milliseconds");
    assert_eq!(rpc.r#type, Some(Kind::Summary as i32));
    let s = rpc.metric[0].summary.as_ref().unwrap();
    assert_eq!((s.sample_count, s.sample_sum), (Some(4), Some(30.0)));
    let quantiles: Vec<(f64, f64)> = s
        .quantile
        .iter()
        .map(|q| (q.quantile.unwrap(), q.value.unwrap()))
        .collect();
    assert_eq!(quantiles, [(0.5, 5.0), (0.99, 20.0)]);

    // The text page leaves the native histogram out, and counts it.
    let text = e.render(Instant::now());
    assert!(!text.contains("payload"), "{text}");
    assert!(text.contains("rpc_milliseconds{"), "{text}");
    assert!(super::exposition::accepted(
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    ));
    assert!(!super::exposition::accepted(
        "text/plain;version=0.0.4;q=1,*/*;q=0.1"
    ));
}
