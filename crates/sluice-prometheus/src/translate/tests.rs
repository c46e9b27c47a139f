//! Tests of the OTLP → Prometheus translation: every naming rule, each metric type with exact
//! expected series, and a property test over random requests.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar as OtlpExemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, exemplar,
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::prelude::*;
use prost::Message as _;

use super::{
    MetricKind, TranslateOptions, Translation, format_float, label_name, metric_name, translate,
    unit_word, value_to_string,
};
use crate::proto::{
    self, BucketSpan, Label, MetricMetadata, MetricType, ResetHint, STALE_NAN_BITS, Sample,
    TimeSeries, histogram,
};

// ---- constants ----

/// A point time in nanoseconds with a sub-millisecond part, to check integer division.
const T1: u64 = 1_700_000_000_123_456_789;
const T1_MS: i64 = 1_700_000_000_123;
const T2: u64 = 1_700_000_015_000_999_999;
const T2_MS: i64 = 1_700_000_015_000;
const TRACE_ID: [u8; 16] = [
    0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c,
];
const TRACE_HEX: &str = "5b8efff798038103d269b633813fc60c";
const SPAN_ID: [u8; 8] = [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74];
const SPAN_HEX: &str = "eee19b7ec3c1b174";
const CUMULATIVE: AggregationTemporality = AggregationTemporality::Cumulative;
const DELTA: AggregationTemporality = AggregationTemporality::Delta;

// ---- OTLP builders ----

fn kv(key: &str, value: &str) -> KeyValue {
    kv_any(key, Value::StringValue(value.to_owned()))
}

fn kv_any(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn request(resources: Vec<ResourceMetrics>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: resources,
    }
}

fn resource(attributes: Vec<KeyValue>, scopes: Vec<ScopeMetrics>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource {
            attributes,
            ..Default::default()
        }),
        scope_metrics: scopes,
        ..Default::default()
    }
}

fn scope(
    scope: Option<InstrumentationScope>,
    schema_url: &str,
    metrics: Vec<Metric>,
) -> ScopeMetrics {
    ScopeMetrics {
        scope,
        metrics,
        schema_url: schema_url.to_owned(),
    }
}

/// A request with one resource without attributes and one scope without a name.
fn simple(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    request(vec![resource(vec![], vec![scope(None, "", metrics)])])
}

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.to_owned(),
        description: format!("{name} help"),
        unit: unit.to_owned(),
        metadata: Vec::new(),
        data: Some(data),
    }
}

fn gauge(name: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
    metric(
        name,
        unit,
        Data::Gauge(Gauge {
            data_points: points,
        }),
    )
}

fn sum(
    name: &str,
    unit: &str,
    monotonic: bool,
    temporality: AggregationTemporality,
    points: Vec<NumberDataPoint>,
) -> Metric {
    metric(
        name,
        unit,
        Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality as i32,
            is_monotonic: monotonic,
        }),
    )
}

fn histogram_metric(
    name: &str,
    unit: &str,
    temporality: AggregationTemporality,
    points: Vec<HistogramDataPoint>,
) -> Metric {
    metric(
        name,
        unit,
        Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: temporality as i32,
        }),
    )
}

fn exponential_metric(
    name: &str,
    unit: &str,
    temporality: AggregationTemporality,
    points: Vec<ExponentialHistogramDataPoint>,
) -> Metric {
    metric(
        name,
        unit,
        Data::ExponentialHistogram(ExponentialHistogram {
            data_points: points,
            aggregation_temporality: temporality as i32,
        }),
    )
}

fn summary_metric(name: &str, unit: &str, points: Vec<SummaryDataPoint>) -> Metric {
    metric(
        name,
        unit,
        Data::Summary(Summary {
            data_points: points,
        }),
    )
}

fn double(attributes: Vec<KeyValue>, time: u64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn int(attributes: Vec<KeyValue>, time: u64, value: i64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsInt(value)),
        ..Default::default()
    }
}

fn stale<T>(mut point: T, set: impl FnOnce(&mut T)) -> T {
    set(&mut point);
    point
}

fn histogram_point(
    time: u64,
    count: u64,
    sum: Option<f64>,
    bounds: &[f64],
    counts: &[u64],
) -> HistogramDataPoint {
    HistogramDataPoint {
        time_unix_nano: time,
        count,
        sum,
        explicit_bounds: bounds.to_vec(),
        bucket_counts: counts.to_vec(),
        ..Default::default()
    }
}

fn buckets(offset: i32, counts: &[u64]) -> Option<Buckets> {
    Some(Buckets {
        offset,
        bucket_counts: counts.to_vec(),
    })
}

fn exponential_point(
    time: u64,
    scale: i32,
    zero_count: u64,
    positive: Option<Buckets>,
    negative: Option<Buckets>,
) -> ExponentialHistogramDataPoint {
    let total = |b: &Option<Buckets>| {
        b.as_ref()
            .map_or(0, |b| b.bucket_counts.iter().sum::<u64>())
    };
    ExponentialHistogramDataPoint {
        time_unix_nano: time,
        count: zero_count + total(&positive) + total(&negative),
        sum: Some(12.5),
        scale,
        zero_count,
        positive,
        negative,
        ..Default::default()
    }
}

fn summary_point(time: u64, count: u64, sum: f64, quantiles: &[(f64, f64)]) -> SummaryDataPoint {
    SummaryDataPoint {
        time_unix_nano: time,
        count,
        sum,
        quantile_values: quantiles
            .iter()
            .map(|&(quantile, value)| ValueAtQuantile { quantile, value })
            .collect(),
        ..Default::default()
    }
}

fn otlp_exemplar(time: u64, value: f64, attributes: Vec<KeyValue>) -> OtlpExemplar {
    OtlpExemplar {
        filtered_attributes: attributes,
        time_unix_nano: time,
        span_id: SPAN_ID.to_vec(),
        trace_id: TRACE_ID.to_vec(),
        value: Some(exemplar::Value::AsDouble(value)),
    }
}

// ---- expected-value builders ----

fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|&(name, value)| Label {
            name: name.to_owned(),
            value: value.to_owned(),
        })
        .collect()
}

fn series(pairs: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
    TimeSeries {
        labels: labels(pairs),
        samples: samples
            .iter()
            .map(|&(value, timestamp)| Sample { value, timestamp })
            .collect(),
        exemplars: Vec::new(),
        histograms: Vec::new(),
    }
}

fn with_exemplars(mut series: TimeSeries, exemplars: Vec<proto::Exemplar>) -> TimeSeries {
    series.exemplars = exemplars;
    series
}

fn prom_exemplar(pairs: &[(&str, &str)], value: f64, timestamp: i64) -> proto::Exemplar {
    proto::Exemplar {
        labels: labels(pairs),
        value,
        timestamp,
    }
}

fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Compares whole series bit for bit (NaN values included), via their encodings.
fn assert_series(actual: &[TimeSeries], expected: &[TimeSeries]) {
    let encode = |all: &[TimeSeries]| all.iter().map(|s| s.encode_to_vec()).collect::<Vec<_>>();
    assert!(
        encode(actual) == encode(expected),
        "actual:\n{actual:#?}\nexpected:\n{expected:#?}"
    );
}

fn run(request: &ExportMetricsServiceRequest) -> Translation {
    translate(request, &TranslateOptions::default())
}

// ---- naming ----

#[test]
fn metric_names_follow_the_specification() {
    use MetricKind::*;
    let cases: &[(&str, &str, MetricKind, &str)] = &[
        // The reference's example, and the unit table.
        (
            "http.server.duration",
            "s",
            Histogram,
            "http_server_duration_seconds",
        ),
        ("t", "d", Gauge, "t_days"),
        ("t", "h", Gauge, "t_hours"),
        ("t", "min", Gauge, "t_minutes"),
        ("t", "ms", Gauge, "t_milliseconds"),
        ("t", "us", Gauge, "t_microseconds"),
        ("t", "ns", Gauge, "t_nanoseconds"),
        ("memory_usage", "By", Gauge, "memory_usage_bytes"),
        ("m", "KiBy", Gauge, "m_kibibytes"),
        ("m", "MiBy", Gauge, "m_mebibytes"),
        ("m", "GiBy", Gauge, "m_gibibytes"),
        ("m", "TiBy", Gauge, "m_tibibytes"),
        ("m", "kBy", Gauge, "m_kilobytes"),
        ("m", "KBy", Gauge, "m_kilobytes"),
        ("m", "MBy", Gauge, "m_megabytes"),
        ("m", "GBy", Gauge, "m_gigabytes"),
        ("m", "TBy", Gauge, "m_terabytes"),
        ("x", "m", Gauge, "x_meters"),
        ("x", "V", Gauge, "x_volts"),
        ("x", "A", Gauge, "x_amperes"),
        ("x", "J", Gauge, "x_joules"),
        ("x", "W", Gauge, "x_watts"),
        ("x", "g", Gauge, "x_grams"),
        ("temp", "Cel", Gauge, "temp_celsius"),
        ("freq", "Hz", Gauge, "freq_hertz"),
        ("util", "%", Gauge, "util_percent"),
        // Counters get _total after the unit, never twice.
        ("requests", "", Counter, "requests_total"),
        ("requests_total", "", Counter, "requests_total"),
        ("requests.total", "", Counter, "requests_total"),
        ("cpu_seconds_total", "s", Counter, "cpu_seconds_total"),
        (
            "otelcol_process_cpu_seconds",
            "s",
            Counter,
            "otelcol_process_cpu_seconds_total",
        ),
        (
            "requests_total",
            "1/s",
            Counter,
            "requests_per_second_total",
        ),
        ("items", "1", Counter, "items_total"),
        // Spec over Collector: only a trailing `total` counts.
        ("total_requests", "", Counter, "total_requests_total"),
        // `_ratio` for gauges with unit 1 only.
        ("cpu_usage", "1", Gauge, "cpu_usage_ratio"),
        ("cpu_usage_ratio", "1", Gauge, "cpu_usage_ratio"),
        ("queue_depth", "1", NonMonotonicSum, "queue_depth"),
        ("sizes", "1", Histogram, "sizes"),
        // Rates.
        ("requests", "1/s", Gauge, "requests_per_second"),
        ("throughput", "By/s", Gauge, "throughput_bytes_per_second"),
        ("speed", "m/s", Gauge, "speed_meters_per_second"),
        ("rate", "1/min", Gauge, "rate_per_minute"),
        ("rate", "1/m", Gauge, "rate_per_minute"),
        ("rate", "1/h", Gauge, "rate_per_hour"),
        ("rate", "1/d", Gauge, "rate_per_day"),
        ("rate", "1/w", Gauge, "rate_per_week"),
        ("rate", "By/mo", Gauge, "rate_bytes_per_month"),
        ("rate", "By/y", Gauge, "rate_bytes_per_year"),
        (
            "custom_metric",
            "unit@with#special/chars",
            Gauge,
            "custom_metric_unit_with_special_per_chars",
        ),
        ("events", "/s", Gauge, "events_per_second"),
        ("events", "By/", Gauge, "events_bytes"),
        // No duplicate suffixes.
        ("response_time_seconds", "s", Gauge, "response_time_seconds"),
        (
            "throughput_bytes_per_second",
            "By/s",
            Gauge,
            "throughput_bytes_per_second",
        ),
        (
            "throughput_bytes",
            "By/s",
            Gauge,
            "throughput_bytes_per_second",
        ),
        // Spec over Collector: the unit counts only at the end of the name.
        (
            "seconds_since_boot",
            "s",
            Gauge,
            "seconds_since_boot_seconds",
        ),
        // Annotations are dropped.
        ("packets", "{packet}", Counter, "packets_total"),
        ("packets", "{packet}/s", Gauge, "packets_per_second"),
        ("size", "By{compressed}", Gauge, "size_bytes"),
        ("custom_metric", "By/{custom}", Gauge, "custom_metric_bytes"),
        ("weird", "{unbalanced", Gauge, "weird"),
        ("weird", "By}", Gauge, "weird_bytes"),
        ("padded", " s ", Gauge, "padded_seconds"),
        // Unknown units are cleaned and kept.
        (
            "custom_metric",
            "custom_unit",
            Gauge,
            "custom_metric_custom_unit",
        ),
        (
            "metric__with__multiple__underscores",
            "unit__multiple__underscores",
            Gauge,
            "metric_with_multiple_underscores_unit_multiple_underscores",
        ),
        // Invalid characters, colons, digits, non-ASCII.
        (
            "metric@with#special$chars",
            "",
            Gauge,
            "metric_with_special_chars",
        ),
        ("metric@@##$$name", "", Gauge, "metric_name"),
        ("a:b.c", "", Gauge, "a:b_c"),
        ("123metric", "", Gauge, "_123metric"),
        ("1", "s", Gauge, "_1_seconds"),
        ("métric.ñame", "", Gauge, "m_tric_ame"),
        ("durée", "s", Histogram, "dur_e_seconds"),
        ("名前", "s", Gauge, "_seconds"),
        ("@#$%", "", Counter, "_total"),
        // Spec over Collector: a leading or trailing `_` stays unless a suffix follows.
        ("_internal.metric", "", Gauge, "_internal_metric"),
        ("foo.", "", Gauge, "foo_"),
        ("foo.", "s", Gauge, "foo_seconds"),
        ("__foo__", "", Gauge, "_foo_"),
    ];
    for &(name, unit, kind, expected) in cases {
        assert_eq!(
            metric_name(name, unit, kind, true).as_deref(),
            Some(expected),
            "metric_name({name:?}, {unit:?}, {kind:?})"
        );
    }
}

#[test]
fn metric_names_without_suffixes_are_only_sanitized() {
    let cases: &[(&str, &str, MetricKind, &str)] = &[
        (
            "http.server.duration",
            "s",
            MetricKind::Histogram,
            "http_server_duration",
        ),
        ("requests", "", MetricKind::Counter, "requests"),
        ("cpu_usage", "1", MetricKind::Gauge, "cpu_usage"),
        ("a__b..c", "By/s", MetricKind::Gauge, "a_b_c"),
        ("9lives", "", MetricKind::Gauge, "_9lives"),
        ("x.", "", MetricKind::Gauge, "x_"),
    ];
    for &(name, unit, kind, expected) in cases {
        assert_eq!(
            metric_name(name, unit, kind, false).as_deref(),
            Some(expected),
            "metric_name({name:?}, {unit:?}, {kind:?}, false)"
        );
    }
}

#[test]
fn metric_names_with_nothing_valid_are_rejected() {
    for name in ["", "_", "__", "@#$%", "名前", "._."] {
        assert_eq!(
            metric_name(name, "", MetricKind::Gauge, true),
            None,
            "{name:?}"
        );
        assert_eq!(
            metric_name(name, "s", MetricKind::Gauge, false),
            None,
            "{name:?}"
        );
    }
}

#[test]
fn unit_words() {
    let cases = [
        ("s", "seconds"),
        ("By/s", "bytes_per_second"),
        ("m/s", "meters_per_second"),
        ("1", ""),
        ("1/s", "per_second"),
        ("{packet}", ""),
        ("{packet}/s", "per_second"),
        ("By{x}/{y}", "bytes"),
        ("", ""),
        ("/", ""),
        ("custom.unit", "custom_unit"),
        ("__x__", "x"),
        ("kBy/min", "kilobytes_per_minute"),
        ("Cel", "celsius"),
        ("a/b/c", "a_per_b_c"),
    ];
    for (unit, expected) in cases {
        assert_eq!(unit_word(unit), expected, "unit_word({unit:?})");
    }
}

#[test]
fn label_names() {
    let cases: &[(&str, Option<&str>)] = &[
        ("label:with:colons", Some("label_with_colons")),
        ("LabelWithCapitalLetters", Some("LabelWithCapitalLetters")),
        (
            "label!with&special$chars)",
            Some("label_with_special_chars_"),
        ),
        (
            "label_with_foreign_characters_字符",
            Some("label_with_foreign_characters_"),
        ),
        ("label.with.dots", Some("label_with_dots")),
        ("http.request.method", Some("http_request_method")),
        (".foo", Some("_foo")),
        ("123label", Some("key_123label")),
        ("1", Some("key_1")),
        (
            "_label_starting_with_underscore",
            Some("_label_starting_with_underscore"),
        ),
        (
            "__label_starting_with_2underscores",
            Some("_label_starting_with_2underscores"),
        ),
        (
            "label__with__double__underscores",
            Some("label_with_double_underscores"),
        ),
        ("trailing_underscores___", Some("trailing_underscores_")),
        // Spec over Collector: the reserved wrapper collapses too, so `__name__` cannot be forged.
        ("__reserved__label__name__", Some("_reserved_label_name_")),
        ("__name__", Some("_name_")),
        ("clé", Some("cl_")),
        ("ようこそ", None),
        ("", None),
        ("_", None),
        ("__", None),
        ("...", None),
    ];
    for &(key, expected) in cases {
        assert_eq!(label_name(key).as_deref(), expected, "label_name({key:?})");
    }
}

#[test]
fn floats_format_like_go_format_float_f() {
    let cases = [
        (0.0, "0"),
        (1.0, "1"),
        (0.1, "0.1"),
        (2.5, "2.5"),
        (-0.5, "-0.5"),
        (1e-7, "0.0000001"),
        (1e21, "1000000000000000000000"),
        (0.99, "0.99"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
        (f64::NAN, "NaN"),
    ];
    for (value, expected) in cases {
        assert_eq!(format_float(value), expected, "format_float({value:?})");
    }
}

#[test]
fn attribute_values_follow_the_anyvalue_rules() {
    let array = Value::ArrayValue(ArrayValue {
        values: vec![
            AnyValue {
                value: Some(Value::StringValue("a".to_owned())),
            },
            AnyValue {
                value: Some(Value::DoubleValue(f64::NAN)),
            },
            AnyValue {
                value: Some(Value::IntValue(1)),
            },
            AnyValue { value: None },
        ],
    });
    let map = Value::KvlistValue(KeyValueList {
        values: vec![kv("z", "q\"uote"), kv_any("a", Value::BoolValue(true))],
    });
    let cases = [
        (
            Some(Value::StringValue("hello world".to_owned())),
            "hello world",
        ),
        (Some(Value::BoolValue(false)), "false"),
        (Some(Value::IntValue(-123)), "-123"),
        (Some(Value::DoubleValue(3.25)), "3.25"),
        (Some(Value::DoubleValue(f64::NAN)), "NaN"),
        (Some(Value::DoubleValue(f64::INFINITY)), "Infinity"),
        (Some(Value::DoubleValue(f64::NEG_INFINITY)), "-Infinity"),
        (
            Some(Value::BytesValue(b"hello world".to_vec())),
            "aGVsbG8gd29ybGQ=",
        ),
        (Some(array), r#"["a","NaN",1,null]"#),
        (Some(map), r#"{"z":"q\"uote","a":true}"#),
        (None, ""),
    ];
    for (value, expected) in cases {
        assert_eq!(value_to_string(value.as_ref()), expected, "{value:?}");
    }
}

// ---- metric types ----

#[test]
fn gauges_become_one_sample_per_point() {
    let request = simple(vec![
        gauge(
            "memory.usage",
            "By",
            vec![
                int(vec![kv("state", "used")], T1, 42),
                double(vec![kv("state", "free")], T1, 0.5),
            ],
        ),
        gauge("cpu.utilization", "1", vec![double(vec![], T2, 0.25)]),
    ]);
    let translation = run(&request);
    assert_series(
        &translation.series,
        &[
            series(
                &[("__name__", "memory_usage_bytes"), ("state", "used")],
                &[(42.0, T1_MS)],
            ),
            series(
                &[("__name__", "memory_usage_bytes"), ("state", "free")],
                &[(0.5, T1_MS)],
            ),
            series(&[("__name__", "cpu_utilization_ratio")], &[(0.25, T2_MS)]),
        ],
    );
    assert!(translation.dropped.is_empty());
    assert!(translation.metadata.is_empty());
}

#[test]
fn gauge_exemplars_are_dropped() {
    let mut point = double(vec![], T1, 1.0);
    point.exemplars = vec![otlp_exemplar(T1, 1.0, vec![])];
    let translation = run(&simple(vec![gauge("g", "", vec![point])]));
    assert_series(
        &translation.series,
        &[series(&[("__name__", "g")], &[(1.0, T1_MS)])],
    );
}

#[test]
fn monotonic_cumulative_sums_are_counters_with_exemplars() {
    let mut point = int(vec![kv("http.method", "GET")], T1, 7);
    point.exemplars = vec![
        otlp_exemplar(T1, 3.0, vec![kv("user", "ann")]),
        OtlpExemplar {
            time_unix_nano: T1 - 5_000_000,
            value: Some(exemplar::Value::AsInt(2)),
            ..Default::default()
        },
    ];
    let translation = run(&simple(vec![sum(
        "http.requests",
        "{request}",
        true,
        CUMULATIVE,
        vec![point],
    )]));
    assert_series(
        &translation.series,
        &[with_exemplars(
            series(
                &[("__name__", "http_requests_total"), ("http_method", "GET")],
                &[(7.0, T1_MS)],
            ),
            vec![
                // Sorted by timestamp.
                prom_exemplar(&[], 2.0, T1_MS - 5),
                prom_exemplar(
                    &[
                        ("span_id", SPAN_HEX),
                        ("trace_id", TRACE_HEX),
                        ("user", "ann"),
                    ],
                    3.0,
                    T1_MS,
                ),
            ],
        )],
    );
}

#[test]
fn non_monotonic_sums_are_gauges_without_exemplars() {
    let mut point = double(vec![], T1, -3.5);
    point.exemplars = vec![otlp_exemplar(T1, 1.0, vec![])];
    let translation = run(&simple(vec![sum(
        "queue.depth",
        "{item}",
        false,
        CUMULATIVE,
        vec![point],
    )]));
    assert_series(
        &translation.series,
        &[series(&[("__name__", "queue_depth")], &[(-3.5, T1_MS)])],
    );
}

#[test]
fn delta_and_unspecified_temporality_are_dropped_and_counted() {
    let request = simple(vec![
        sum(
            "a",
            "",
            true,
            DELTA,
            vec![int(vec![], T1, 1), int(vec![], T2, 2)],
        ),
        sum("b", "", false, DELTA, vec![int(vec![], T1, 1)]),
        histogram_metric("c", "", DELTA, vec![histogram_point(T1, 0, None, &[], &[])]),
        exponential_metric(
            "d",
            "",
            DELTA,
            vec![exponential_point(T1, 0, 0, None, None)],
        ),
        sum(
            "e",
            "",
            true,
            AggregationTemporality::Unspecified,
            vec![int(vec![], T1, 1)],
        ),
        metric(
            "f",
            "",
            Data::Sum(Sum {
                data_points: vec![int(vec![], T1, 1)],
                aggregation_temporality: 7,
                is_monotonic: true,
            }),
        ),
        gauge("kept", "", vec![int(vec![], T1, 1)]),
    ]);
    let translation = run(&request);
    assert_series(
        &translation.series,
        &[series(&[("__name__", "kept")], &[(1.0, T1_MS)])],
    );
    assert_eq!(
        translation.dropped,
        vec![("delta temporality", 5), ("unspecified temporality", 2)]
    );
}

#[test]
fn points_without_a_value_are_dropped() {
    let point = NumberDataPoint {
        time_unix_nano: T1,
        ..Default::default()
    };
    let translation = run(&simple(vec![gauge(
        "g",
        "",
        vec![point, int(vec![], T2, 1)],
    )]));
    assert_series(
        &translation.series,
        &[series(&[("__name__", "g")], &[(1.0, T2_MS)])],
    );
    assert_eq!(translation.dropped, vec![("no value", 1)]);
}

#[test]
fn nan_and_infinities_pass_through() {
    let translation = run(&simple(vec![gauge(
        "g",
        "",
        vec![
            double(vec![kv("v", "nan")], T1, f64::NAN),
            double(vec![kv("v", "inf")], T1, f64::INFINITY),
            double(vec![kv("v", "-inf")], T1, f64::NEG_INFINITY),
            // A value with the stale marker's bits is not a stale marker.
            double(vec![kv("v", "stale-bits")], T1, stale_nan()),
        ],
    )]));
    let values: Vec<u64> = translation
        .series
        .iter()
        .map(|s| s.samples[0].value.to_bits())
        .collect();
    assert_eq!(
        values,
        vec![
            f64::NAN.to_bits(),
            f64::INFINITY.to_bits(),
            f64::NEG_INFINITY.to_bits(),
            0x7ff8_0000_0000_0001,
        ]
    );
}

#[test]
fn histograms_become_cumulative_buckets_sum_and_count() {
    let mut point = histogram_point(T1, 10, Some(123.5), &[0.5, 1.0, 2.5], &[1, 2, 3, 4]);
    point.attributes = vec![kv("route", "/")];
    point.exemplars = vec![
        otlp_exemplar(T1, 0.7, vec![]),
        otlp_exemplar(T1, 1.0, vec![]),
        otlp_exemplar(T1, 99.0, vec![]),
        otlp_exemplar(T1, f64::NAN, vec![]),
    ];
    let translation = run(&simple(vec![histogram_metric(
        "http.server.duration",
        "s",
        CUMULATIVE,
        vec![point],
    )]));
    let ids = [("span_id", SPAN_HEX), ("trace_id", TRACE_HEX)];
    let bucket = "http_server_duration_seconds_bucket";
    assert_series(
        &translation.series,
        &[
            series(
                &[("__name__", bucket), ("le", "0.5"), ("route", "/")],
                &[(1.0, T1_MS)],
            ),
            with_exemplars(
                series(
                    &[("__name__", bucket), ("le", "1"), ("route", "/")],
                    &[(3.0, T1_MS)],
                ),
                vec![
                    prom_exemplar(&ids, 0.7, T1_MS),
                    prom_exemplar(&ids, 1.0, T1_MS),
                ],
            ),
            series(
                &[("__name__", bucket), ("le", "2.5"), ("route", "/")],
                &[(6.0, T1_MS)],
            ),
            with_exemplars(
                series(
                    &[("__name__", bucket), ("le", "+Inf"), ("route", "/")],
                    &[(10.0, T1_MS)],
                ),
                vec![
                    prom_exemplar(&ids, 99.0, T1_MS),
                    prom_exemplar(&ids, f64::NAN, T1_MS),
                ],
            ),
            series(
                &[
                    ("__name__", "http_server_duration_seconds_sum"),
                    ("route", "/"),
                ],
                &[(123.5, T1_MS)],
            ),
            series(
                &[
                    ("__name__", "http_server_duration_seconds_count"),
                    ("route", "/"),
                ],
                &[(10.0, T1_MS)],
            ),
        ],
    );
}

#[test]
fn histograms_without_sum_or_buckets() {
    let translation = run(&simple(vec![histogram_metric(
        "h",
        "",
        CUMULATIVE,
        vec![histogram_point(T1, 5, None, &[], &[])],
    )]));
    assert_series(
        &translation.series,
        &[
            series(&[("__name__", "h_bucket"), ("le", "+Inf")], &[(5.0, T1_MS)]),
            series(&[("__name__", "h_count")], &[(5.0, T1_MS)]),
        ],
    );
}

#[test]
fn histograms_with_empty_buckets_and_negative_bounds() {
    let translation = run(&simple(vec![histogram_metric(
        "h",
        "",
        CUMULATIVE,
        vec![histogram_point(
            T1,
            0,
            Some(0.0),
            &[f64::NEG_INFINITY, -1.0, 0.0],
            &[0, 0, 0, 0],
        )],
    )]));
    assert_series(
        &translation.series,
        &[
            series(&[("__name__", "h_bucket"), ("le", "-Inf")], &[(0.0, T1_MS)]),
            series(&[("__name__", "h_bucket"), ("le", "-1")], &[(0.0, T1_MS)]),
            series(&[("__name__", "h_bucket"), ("le", "0")], &[(0.0, T1_MS)]),
            series(&[("__name__", "h_bucket"), ("le", "+Inf")], &[(0.0, T1_MS)]),
            series(&[("__name__", "h_sum")], &[(0.0, T1_MS)]),
            series(&[("__name__", "h_count")], &[(0.0, T1_MS)]),
        ],
    );
}

#[test]
fn inconsistent_histograms_are_dropped() {
    let points = vec![
        // Count disagrees with the buckets.
        histogram_point(T1, 9, None, &[1.0], &[1, 2]),
        // One count too few.
        histogram_point(T1, 1, None, &[1.0, 2.0], &[1, 0]),
        // Counts without bounds to match.
        histogram_point(T1, 1, None, &[], &[0, 1]),
        // Bounds without counts.
        histogram_point(T1, 1, None, &[1.0], &[]),
        // Bounds not increasing, NaN, explicit +Inf.
        histogram_point(T1, 2, None, &[2.0, 1.0], &[1, 1, 0]),
        histogram_point(T1, 2, None, &[1.0, 1.0], &[1, 1, 0]),
        histogram_point(T1, 1, None, &[f64::NAN], &[1, 0]),
        histogram_point(T1, 1, None, &[1.0, f64::INFINITY], &[1, 0, 0]),
        // Bucket counts overflowing u64.
        histogram_point(T1, 1, None, &[1.0], &[u64::MAX, 2]),
    ];
    let translation = run(&simple(vec![histogram_metric("h", "", CUMULATIVE, points)]));
    assert!(translation.series.is_empty(), "{:#?}", translation.series);
    assert_eq!(translation.dropped, vec![("invalid histogram", 9)]);
}

#[test]
fn summaries_become_quantiles_sum_and_count() {
    let mut point = summary_point(
        T1,
        100,
        250.5,
        &[(0.99, 9.0), (0.5, 2.0), (0.0, 0.1), (1.0, 12.0)],
    );
    point.attributes = vec![kv("q", "x")];
    let translation = run(&simple(vec![summary_metric(
        "rpc.latency",
        "ms",
        vec![point],
    )]));
    let name = "rpc_latency_milliseconds";
    assert_series(
        &translation.series,
        &[
            series(
                &[("__name__", name), ("q", "x"), ("quantile", "0")],
                &[(0.1, T1_MS)],
            ),
            series(
                &[("__name__", name), ("q", "x"), ("quantile", "0.5")],
                &[(2.0, T1_MS)],
            ),
            series(
                &[("__name__", name), ("q", "x"), ("quantile", "0.99")],
                &[(9.0, T1_MS)],
            ),
            series(
                &[("__name__", name), ("q", "x"), ("quantile", "1")],
                &[(12.0, T1_MS)],
            ),
            series(
                &[("__name__", "rpc_latency_milliseconds_sum"), ("q", "x")],
                &[(250.5, T1_MS)],
            ),
            series(
                &[("__name__", "rpc_latency_milliseconds_count"), ("q", "x")],
                &[(100.0, T1_MS)],
            ),
        ],
    );
}

#[test]
fn summaries_with_invalid_quantiles_are_dropped() {
    let points = vec![
        summary_point(T1, 1, 1.0, &[(1.5, 1.0)]),
        summary_point(T1, 1, 1.0, &[(-0.1, 1.0)]),
        summary_point(T1, 1, 1.0, &[(f64::NAN, 1.0)]),
        summary_point(T2, 1, 1.0, &[]),
    ];
    let translation = run(&simple(vec![summary_metric("s", "", points)]));
    assert_series(
        &translation.series,
        &[
            series(&[("__name__", "s_sum")], &[(1.0, T2_MS)]),
            series(&[("__name__", "s_count")], &[(1.0, T2_MS)]),
        ],
    );
    assert_eq!(translation.dropped, vec![("invalid summary", 3)]);
}

// ---- exponential histograms ----

fn native(
    schema: i32,
    count: u64,
    zero_count: u64,
    positive: (&[(i32, u32)], &[i64]),
    negative: (&[(i32, u32)], &[i64]),
) -> proto::Histogram {
    let spans = |spans: &[(i32, u32)]| {
        spans
            .iter()
            .map(|&(offset, length)| BucketSpan { offset, length })
            .collect()
    };
    proto::Histogram {
        count: Some(histogram::Count::CountInt(count)),
        sum: 12.5,
        schema,
        zero_threshold: 1e-128,
        zero_count: Some(histogram::ZeroCount::ZeroCountInt(zero_count)),
        negative_spans: spans(negative.0),
        negative_deltas: negative.1.to_vec(),
        negative_counts: Vec::new(),
        positive_spans: spans(positive.0),
        positive_deltas: positive.1.to_vec(),
        positive_counts: Vec::new(),
        reset_hint: ResetHint::Unknown as i32,
        timestamp: T1_MS,
    }
}

fn native_series(name: &str, histograms: Vec<proto::Histogram>) -> TimeSeries {
    TimeSeries {
        labels: labels(&[("__name__", name)]),
        samples: Vec::new(),
        exemplars: Vec::new(),
        histograms,
    }
}

#[test]
fn exponential_histograms_become_native_histograms() {
    // The specification's example: offset 3, counts 10,0,0,20,5,2 → indexes 4..=9,
    // spans {4,1},{2,3}, deltas 10,10,-15,-3. Negative side and zero bucket alongside.
    let point = exponential_point(
        T1,
        3,
        4,
        buckets(3, &[10, 0, 0, 20, 5, 2]),
        buckets(-2, &[1, 1, 0, 3]),
    );
    let translation = run(&simple(vec![exponential_metric(
        "latency",
        "s",
        CUMULATIVE,
        vec![point],
    )]));
    assert_series(
        &translation.series,
        &[native_series(
            "latency_seconds",
            vec![native(
                3,
                46,
                4,
                (&[(4, 1), (2, 3)], &[10, 10, -15, -3]),
                (&[(-1, 2), (1, 1)], &[1, 0, 2]),
            )],
        )],
    );
    assert!(translation.dropped.is_empty());
}

#[test]
fn exponential_histograms_above_scale_8_are_downscaled() {
    // Scale 10 → schema 8: indexes merge by 4 (floor division), then shift by one.
    // OTLP indexes -3..=6 → -1,-1,-1,0,0,0,0,1,1,1 → native 0,1,2.
    let point = exponential_point(
        T1,
        10,
        0,
        buckets(-3, &[1, 1, 1, 1, 0, 0, 2, 5, 0, 0]),
        None,
    );
    let translation = run(&simple(vec![exponential_metric(
        "d",
        "",
        CUMULATIVE,
        vec![point],
    )]));
    assert_series(
        &translation.series,
        &[native_series(
            "d",
            vec![native(8, 11, 0, (&[(0, 3)], &[3, 0, 2]), (&[], &[]))],
        )],
    );

    // A huge scale merges everything into one bucket per sign.
    let point = exponential_point(T1, 1000, 1, buckets(5, &[1, 2]), buckets(-7, &[3]));
    let translation = run(&simple(vec![exponential_metric(
        "d",
        "",
        CUMULATIVE,
        vec![point],
    )]));
    assert_series(
        &translation.series,
        &[native_series(
            "d",
            vec![native(8, 7, 1, (&[(1, 1)], &[3]), (&[(0, 1)], &[3]))],
        )],
    );
}

#[test]
fn exponential_histogram_edge_cases() {
    let scale_minus_4 = exponential_point(T1, -4, 0, buckets(0, &[1]), None);
    let mut own_threshold = exponential_point(T2, 0, 2, None, None);
    own_threshold.zero_threshold = 0.001;
    let translation = run(&simple(vec![exponential_metric(
        "e",
        "",
        CUMULATIVE,
        vec![scale_minus_4, own_threshold],
    )]));
    let mut second = native(0, 2, 2, (&[], &[]), (&[], &[]));
    second.zero_threshold = 0.001;
    second.timestamp = T2_MS;
    assert_series(
        &translation.series,
        &[native_series(
            "e",
            vec![native(-4, 1, 0, (&[(1, 1)], &[1]), (&[], &[])), second],
        )],
    );

    let too_coarse = exponential_point(T1, -5, 0, None, None);
    let mut no_sum = exponential_point(T1, 0, 0, None, None);
    no_sum.sum = None;
    let mut count_mismatch = exponential_point(T1, 0, 0, buckets(0, &[1]), None);
    count_mismatch.count = 5;
    let mut bad_threshold = exponential_point(T1, 0, 0, None, None);
    bad_threshold.zero_threshold = -1.0;
    let offset_overflow = exponential_point(T1, 0, 0, buckets(i32::MAX, &[1]), None);
    let count_overflow = ExponentialHistogramDataPoint {
        count: u64::MAX,
        sum: Some(1.0),
        positive: buckets(0, &[u64::MAX, 1]),
        ..Default::default()
    };
    let huge_count = ExponentialHistogramDataPoint {
        count: u64::MAX,
        sum: Some(1.0),
        positive: buckets(0, &[u64::MAX]),
        ..Default::default()
    };
    let translation = run(&simple(vec![exponential_metric(
        "e",
        "",
        CUMULATIVE,
        vec![
            too_coarse,
            no_sum,
            count_mismatch,
            bad_threshold,
            offset_overflow,
            count_overflow,
            huge_count,
        ],
    )]));
    assert!(translation.series.is_empty(), "{:#?}", translation.series);
    assert_eq!(
        translation.dropped,
        vec![
            ("exponential histogram scale below -4", 1),
            ("no sum", 1),
            ("invalid exponential histogram", 5),
        ]
    );

    // A NaN sum allows a count above the bucket total (Prometheus' own rule).
    let mut nan_sum = exponential_point(T1, 0, 0, buckets(0, &[1]), None);
    nan_sum.sum = Some(f64::NAN);
    nan_sum.count = 3;
    let translation = run(&simple(vec![exponential_metric(
        "e",
        "",
        CUMULATIVE,
        vec![nan_sum],
    )]));
    assert_eq!(translation.series.len(), 1);
    assert!(translation.series[0].histograms[0].sum.is_nan());
    assert_eq!(
        translation.series[0].histograms[0].count,
        Some(histogram::Count::CountInt(3))
    );
}

#[test]
fn exponential_histogram_exemplars_go_on_the_series() {
    let mut point = exponential_point(T1, 0, 1, None, None);
    point.exemplars = vec![otlp_exemplar(T1, 0.0, vec![])];
    let translation = run(&simple(vec![exponential_metric(
        "e",
        "",
        CUMULATIVE,
        vec![point],
    )]));
    let mut expected = native_series("e", vec![native(0, 1, 1, (&[], &[]), (&[], &[]))]);
    expected.exemplars = vec![prom_exemplar(
        &[("span_id", SPAN_HEX), ("trace_id", TRACE_HEX)],
        0.0,
        T1_MS,
    )];
    assert_series(&translation.series, &[expected]);
}

// ---- staleness ----

#[test]
fn no_recorded_value_points_become_stale_markers() {
    let flag = |flags: &mut u32| *flags = 1;
    let mut counter_point = stale(int(vec![], T1, 5), |p| flag(&mut p.flags));
    counter_point.exemplars = vec![otlp_exemplar(T1, 1.0, vec![])];
    let no_value = stale(
        NumberDataPoint {
            time_unix_nano: T1,
            ..Default::default()
        },
        |p| flag(&mut p.flags),
    );
    let mut histogram = histogram_point(T1, 0, Some(0.0), &[1.0], &[]);
    histogram.flags = 1;
    histogram.exemplars = vec![otlp_exemplar(T1, 1.0, vec![])];
    let mut summary = summary_point(T1, 0, 0.0, &[(0.5, 0.0)]);
    summary.flags = 1;
    let mut exponential = exponential_point(T1, 12, 3, buckets(0, &[1, 2]), None);
    exponential.flags = 1;
    exponential.sum = None;
    let request = simple(vec![
        gauge("g", "", vec![no_value]),
        sum("c", "", true, CUMULATIVE, vec![counter_point]),
        histogram_metric("h", "", CUMULATIVE, vec![histogram]),
        summary_metric("s", "", vec![summary]),
        exponential_metric("e", "", CUMULATIVE, vec![exponential]),
    ]);
    let translation = run(&request);
    let s = stale_nan();
    assert_series(
        &translation.series,
        &[
            series(&[("__name__", "g")], &[(s, T1_MS)]),
            series(&[("__name__", "c_total")], &[(s, T1_MS)]),
            series(&[("__name__", "h_bucket"), ("le", "1")], &[(s, T1_MS)]),
            series(&[("__name__", "h_bucket"), ("le", "+Inf")], &[(s, T1_MS)]),
            series(&[("__name__", "h_sum")], &[(s, T1_MS)]),
            series(&[("__name__", "h_count")], &[(s, T1_MS)]),
            series(&[("__name__", "s"), ("quantile", "0.5")], &[(s, T1_MS)]),
            series(&[("__name__", "s_sum")], &[(s, T1_MS)]),
            series(&[("__name__", "s_count")], &[(s, T1_MS)]),
            native_series(
                "e",
                vec![proto::Histogram {
                    count: Some(histogram::Count::CountInt(0)),
                    sum: s,
                    schema: 8,
                    zero_threshold: 1e-128,
                    zero_count: None,
                    negative_spans: Vec::new(),
                    negative_deltas: Vec::new(),
                    negative_counts: Vec::new(),
                    positive_spans: Vec::new(),
                    positive_deltas: Vec::new(),
                    positive_counts: Vec::new(),
                    reset_hint: ResetHint::Unknown as i32,
                    timestamp: T1_MS,
                }],
            ),
        ],
    );
    for series in &translation.series {
        for sample in &series.samples {
            assert_eq!(sample.value.to_bits(), STALE_NAN_BITS);
        }
        for histogram in &series.histograms {
            assert_eq!(histogram.sum.to_bits(), STALE_NAN_BITS);
        }
    }
    assert!(translation.dropped.is_empty());
}

// ---- resource, scope and labels ----

fn service_resource(extra: Vec<KeyValue>, metrics: Vec<Metric>) -> ResourceMetrics {
    let mut attributes = vec![
        kv("service.name", "checkout"),
        kv("service.namespace", "shop"),
        kv("service.instance.id", "pod-1"),
    ];
    attributes.extend(extra);
    resource(attributes, vec![scope(None, "", metrics)])
}

#[test]
fn job_instance_and_target_info() {
    let request = request(vec![service_resource(
        vec![
            kv("host.name", "node-7"),
            kv_any("process.pid", Value::IntValue(42)),
            kv("empty", ""),
        ],
        vec![gauge(
            "g",
            "",
            vec![int(vec![], T2, 1), int(vec![kv("job", "mine")], T1, 2)],
        )],
    )]);
    let translation = run(&request);
    assert_series(
        &translation.series,
        &[
            // The resource's job wins over an attribute named job.
            series(
                &[
                    ("__name__", "g"),
                    ("instance", "pod-1"),
                    ("job", "shop/checkout"),
                ],
                &[(2.0, T1_MS), (1.0, T2_MS)],
            ),
            series(
                &[
                    ("__name__", "target_info"),
                    ("host_name", "node-7"),
                    ("instance", "pod-1"),
                    ("job", "shop/checkout"),
                    ("process_pid", "42"),
                ],
                // Stamped with the newest point.
                &[(1.0, T2_MS)],
            ),
        ],
    );
}

#[test]
fn job_without_namespace_and_no_target_info_without_other_attributes() {
    let request = request(vec![resource(
        vec![kv("service.name", "svc"), kv("service.namespace", "")],
        vec![scope(
            None,
            "",
            vec![gauge("g", "", vec![int(vec![], T1, 1)])],
        )],
    )]);
    let translation = run(&request);
    assert_series(
        &translation.series,
        &[series(
            &[("__name__", "g"), ("job", "svc")],
            &[(1.0, T1_MS)],
        )],
    );
}

#[test]
fn target_info_without_service_attributes() {
    // Spec over Collector: the resource is not empty, so target_info is sent without job/instance.
    let request = request(vec![resource(
        vec![kv("host.name", "h")],
        vec![scope(
            None,
            "",
            vec![gauge("g", "", vec![int(vec![], T1, 1)])],
        )],
    )]);
    let translation = run(&request);
    assert_series(
        &translation.series,
        &[
            series(&[("__name__", "g")], &[(1.0, T1_MS)]),
            series(
                &[("__name__", "target_info"), ("host_name", "h")],
                &[(1.0, T1_MS)],
            ),
        ],
    );
}

#[test]
fn no_target_info_for_a_resource_without_translated_points() {
    let request = request(vec![service_resource(
        vec![kv("host.name", "h")],
        vec![sum("d", "", true, DELTA, vec![int(vec![], T1, 1)])],
    )]);
    let translation = run(&request);
    assert!(translation.series.is_empty());
    assert_eq!(translation.dropped, vec![("delta temporality", 1)]);
}

#[test]
fn resource_to_telemetry_conversion_copies_resource_attributes() {
    let request = request(vec![service_resource(
        vec![kv("host.name", "node-7"), kv("region", "eu")],
        vec![gauge("g", "", vec![int(vec![kv("region", "us")], T1, 1)])],
    )]);
    let options = TranslateOptions {
        resource_to_telemetry_conversion: true,
        ..Default::default()
    };
    let translation = translate(&request, &options);
    assert_series(
        &translation.series,
        &[
            series(
                &[
                    ("__name__", "g"),
                    ("host_name", "node-7"),
                    ("instance", "pod-1"),
                    ("job", "shop/checkout"),
                    // The point's own attribute wins.
                    ("region", "us"),
                    ("service_instance_id", "pod-1"),
                    ("service_name", "checkout"),
                    ("service_namespace", "shop"),
                ],
                &[(1.0, T1_MS)],
            ),
            series(
                &[
                    ("__name__", "target_info"),
                    ("host_name", "node-7"),
                    ("instance", "pod-1"),
                    ("job", "shop/checkout"),
                    ("region", "eu"),
                ],
                &[(1.0, T1_MS)],
            ),
        ],
    );
}

#[test]
fn scope_labels_are_added() {
    let instrumentation = InstrumentationScope {
        name: "io.opentelemetry.http".to_owned(),
        version: "1.2.3".to_owned(),
        attributes: vec![
            kv("library.mascot", "gopher"),
            // Would become otel_scope_name / otel_scope_schema_url: dropped.
            kv("name", "forged"),
            kv("schema.url", "forged"),
            kv("empty", ""),
        ],
        ..Default::default()
    };
    let request = request(vec![resource(
        vec![],
        vec![
            scope(
                Some(instrumentation),
                "https://opentelemetry.io/schemas/1.31.0",
                vec![gauge(
                    "g",
                    "",
                    vec![int(vec![kv("otel.scope.version", "attr")], T1, 1)],
                )],
            ),
            // A scope without a version or schema gets only its name.
            scope(
                Some(InstrumentationScope {
                    name: "other".to_owned(),
                    ..Default::default()
                }),
                "",
                vec![gauge("g", "", vec![int(vec![], T1, 1)])],
            ),
        ],
    )]);
    let translation = run(&request);
    assert_series(
        &translation.series,
        &[
            series(
                &[
                    ("__name__", "g"),
                    ("otel_scope_library_mascot", "gopher"),
                    ("otel_scope_name", "io.opentelemetry.http"),
                    (
                        "otel_scope_schema_url",
                        "https://opentelemetry.io/schemas/1.31.0",
                    ),
                    // The attribute collides with the scope label: joined, key order
                    // ("otel.scope.version" < "otel_scope_version").
                    ("otel_scope_version", "attr;1.2.3"),
                ],
                &[(1.0, T1_MS)],
            ),
            series(
                &[("__name__", "g"), ("otel_scope_name", "other")],
                &[(1.0, T1_MS)],
            ),
        ],
    );
}

#[test]
fn colliding_attribute_keys_are_merged_in_key_order() {
    let attributes = vec![
        kv("a_b", "3"),
        kv("a.b", "2"),
        kv("a-b", "1"),
        kv("a/b", ""),
        // A repeated key: the first occurrence counts.
        kv("a.b", "ignored"),
        kv("x", "y"),
    ];
    let translation = run(&simple(vec![gauge("g", "", vec![int(attributes, T1, 1)])]));
    assert_series(
        &translation.series,
        &[series(
            &[("__name__", "g"), ("a_b", "1;2;3"), ("x", "y")],
            &[(1.0, T1_MS)],
        )],
    );
}

#[test]
fn generated_labels_cannot_be_forged_by_attributes() {
    let attributes = vec![
        kv("__name__", "forged"),
        kv("le", "forged"),
        kv("quantile", "forged"),
        kv("ようこそ", "no valid name"),
        kv("", "empty key"),
    ];
    let mut histogram = histogram_point(T1, 0, None, &[], &[]);
    histogram.attributes = attributes.clone();
    let mut summary = summary_point(T1, 0, 0.0, &[(0.5, 1.0)]);
    summary.attributes = attributes;
    let translation = run(&simple(vec![
        histogram_metric("h", "", CUMULATIVE, vec![histogram]),
        summary_metric("s", "", vec![summary]),
    ]));
    assert_series(
        &translation.series,
        &[
            series(
                &[
                    ("__name__", "h_bucket"),
                    ("_name_", "forged"),
                    ("le", "+Inf"),
                    ("quantile", "forged"),
                ],
                &[(0.0, T1_MS)],
            ),
            series(
                &[
                    ("__name__", "h_count"),
                    ("_name_", "forged"),
                    ("le", "forged"),
                    ("quantile", "forged"),
                ],
                &[(0.0, T1_MS)],
            ),
            series(
                &[
                    ("__name__", "s"),
                    ("_name_", "forged"),
                    ("le", "forged"),
                    ("quantile", "0.5"),
                ],
                &[(1.0, T1_MS)],
            ),
            series(
                &[
                    ("__name__", "s_sum"),
                    ("_name_", "forged"),
                    ("le", "forged"),
                    ("quantile", "forged"),
                ],
                &[(0.0, T1_MS)],
            ),
            series(
                &[
                    ("__name__", "s_count"),
                    ("_name_", "forged"),
                    ("le", "forged"),
                    ("quantile", "forged"),
                ],
                &[(0.0, T1_MS)],
            ),
        ],
    );
}

#[test]
fn non_string_attribute_values() {
    let attributes = vec![
        kv_any("b", Value::BoolValue(true)),
        kv_any("d", Value::DoubleValue(1.5)),
        kv_any("i", Value::IntValue(-7)),
        kv_any("raw", Value::BytesValue(vec![0xfb, 0xff])),
        kv_any(
            "list",
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(Value::IntValue(1)),
                }],
            }),
        ),
    ];
    let translation = run(&simple(vec![gauge("g", "", vec![int(attributes, T1, 1)])]));
    assert_series(
        &translation.series,
        &[series(
            &[
                ("__name__", "g"),
                ("b", "true"),
                ("d", "1.5"),
                ("i", "-7"),
                ("list", "[1]"),
                ("raw", "+/8="),
            ],
            &[(1.0, T1_MS)],
        )],
    );
}

#[test]
fn huge_label_sets_are_sorted_and_unique() {
    let attributes: Vec<KeyValue> = (0..3000)
        .rev()
        .map(|i| kv(&format!("attr.{i}"), &format!("v{i}")))
        .chain((0..100).map(|i| kv(&format!("attr_{i}"), "dup")))
        .collect();
    let translation = run(&simple(vec![gauge("g", "", vec![int(attributes, T1, 1)])]));
    assert_eq!(translation.series.len(), 1);
    let labels = &translation.series[0].labels;
    assert_eq!(labels.len(), 3001);
    assert!(labels.windows(2).all(|pair| pair[0].name < pair[1].name));
    let attr_5 = labels.iter().find(|label| label.name == "attr_5");
    assert_eq!(attr_5.map(|label| label.value.as_str()), Some("v5;dup"));
    let attr_2999 = labels.iter().find(|label| label.name == "attr_2999");
    assert_eq!(attr_2999.map(|label| label.value.as_str()), Some("v2999"));
}

#[test]
fn invalid_metric_names_are_dropped() {
    let translation = run(&simple(vec![
        gauge("", "", vec![int(vec![], T1, 1)]),
        gauge("ようこそ", "", vec![int(vec![], T1, 1), int(vec![], T2, 1)]),
    ]));
    assert!(translation.series.is_empty());
    assert_eq!(translation.dropped, vec![("invalid metric name", 3)]);
}

#[test]
fn external_labels() {
    let request = request(vec![service_resource(
        vec![kv("host.name", "h")],
        vec![gauge("g", "", vec![int(vec![kv("cluster", "own")], T1, 1)])],
    )]);
    let options = TranslateOptions {
        external_labels: vec![
            ("cluster".to_owned(), "ext".to_owned()),
            ("replica".to_owned(), "r1".to_owned()),
            ("job".to_owned(), "ext".to_owned()),
            ("__tenant__".to_owned(), "t".to_owned()),
            ("bad.name".to_owned(), "x".to_owned()),
            ("empty".to_owned(), String::new()),
            ("replica".to_owned(), "r2".to_owned()),
        ],
        ..Default::default()
    };
    let translation = translate(&request, &options);
    assert_series(
        &translation.series,
        &[
            series(
                &[
                    ("__name__", "g"),
                    ("__tenant__", "t"),
                    ("bad_name", "x"),
                    // Existing labels win over external ones.
                    ("cluster", "own"),
                    ("instance", "pod-1"),
                    ("job", "shop/checkout"),
                    ("replica", "r1"),
                ],
                &[(1.0, T1_MS)],
            ),
            series(
                &[
                    ("__name__", "target_info"),
                    ("__tenant__", "t"),
                    ("bad_name", "x"),
                    ("cluster", "ext"),
                    ("host_name", "h"),
                    ("instance", "pod-1"),
                    ("job", "shop/checkout"),
                    ("replica", "r1"),
                ],
                &[(1.0, T1_MS)],
            ),
        ],
    );
}

// ---- exemplars ----

#[test]
fn exemplar_labels_and_limits() {
    let long = "x".repeat(60);
    let mut point = int(vec![], T1, 1);
    point.exemplars = vec![
        // trace_id and span_id win over attributes of the same name.
        otlp_exemplar(T1, 1.0, vec![kv("trace_id", "forged"), kv("user.id", "u1")]),
        // Attributes beyond 128 characters in all are left off (all of them).
        otlp_exemplar(T1, 2.0, vec![kv("a", "b"), kv("long", &long)]),
        // No ids, an int value.
        OtlpExemplar {
            time_unix_nano: T1,
            filtered_attributes: vec![kv("k", "v")],
            value: Some(exemplar::Value::AsInt(3)),
            ..Default::default()
        },
        // No value: skipped.
        OtlpExemplar {
            time_unix_nano: T1,
            ..Default::default()
        },
    ];
    let translation = run(&simple(vec![sum("c", "", true, CUMULATIVE, vec![point])]));
    assert_series(
        &translation.series,
        &[with_exemplars(
            series(&[("__name__", "c_total")], &[(1.0, T1_MS)]),
            vec![
                prom_exemplar(
                    &[
                        ("span_id", SPAN_HEX),
                        ("trace_id", TRACE_HEX),
                        ("user_id", "u1"),
                    ],
                    1.0,
                    T1_MS,
                ),
                prom_exemplar(
                    &[("span_id", SPAN_HEX), ("trace_id", TRACE_HEX)],
                    2.0,
                    T1_MS,
                ),
                prom_exemplar(&[("k", "v")], 3.0, T1_MS),
            ],
        )],
    );
}

// ---- merging, ordering, metadata ----

#[test]
fn identical_label_sets_merge_with_samples_in_time_order() {
    let request = request(vec![
        resource(
            vec![],
            vec![scope(
                None,
                "",
                vec![gauge("g", "", vec![int(vec![kv("k", "v")], T2, 2)])],
            )],
        ),
        resource(
            vec![],
            vec![scope(
                None,
                "",
                vec![
                    gauge("g", "", vec![int(vec![kv("k", "v")], T1, 1)]),
                    // Same series, same timestamp: the later value is kept, the earlier counted.
                    gauge("g", "", vec![int(vec![kv("k", "v")], T2, 3)]),
                    // An identical duplicate is not counted.
                    gauge("g", "", vec![int(vec![kv("k", "v")], T2, 3)]),
                ],
            )],
        ),
    ]);
    let translation = run(&request);
    assert_series(
        &translation.series,
        &[series(
            &[("__name__", "g"), ("k", "v")],
            &[(1.0, T1_MS), (3.0, T2_MS)],
        )],
    );
    assert_eq!(translation.dropped, vec![("duplicate sample timestamp", 1)]);
}

#[test]
fn metadata_per_family() {
    let request = request(vec![service_resource(
        vec![kv("host.name", "h")],
        vec![
            gauge("mem", "By", vec![int(vec![], T1, 1)]),
            gauge("mem", "By", vec![int(vec![kv("k", "v")], T1, 1)]),
            gauge("util", "1", vec![double(vec![], T1, 0.5)]),
            sum("req", "1/s", true, CUMULATIVE, vec![int(vec![], T1, 1)]),
            sum("queue", "", false, CUMULATIVE, vec![int(vec![], T1, 1)]),
            histogram_metric(
                "lat",
                "ms",
                CUMULATIVE,
                vec![histogram_point(T1, 0, None, &[], &[])],
            ),
            exponential_metric(
                "size",
                "By",
                CUMULATIVE,
                vec![exponential_point(T1, 0, 0, None, None)],
            ),
            summary_metric("rpc", "s", vec![summary_point(T1, 0, 0.0, &[])]),
            // A delta metric claims nothing.
            sum("delta", "", true, DELTA, vec![int(vec![], T1, 1)]),
        ],
    )]);
    let options = TranslateOptions {
        send_metadata: true,
        ..Default::default()
    };
    let translation = translate(&request, &options);
    let entry = |metric_type: MetricType, name: &str, help: &str, unit: &str| MetricMetadata {
        r#type: metric_type as i32,
        metric_family_name: name.to_owned(),
        help: help.to_owned(),
        unit: unit.to_owned(),
    };
    assert_eq!(
        translation.metadata,
        vec![
            entry(MetricType::Gauge, "mem_bytes", "mem help", "bytes"),
            entry(MetricType::Gauge, "util_ratio", "util help", "ratio"),
            entry(
                MetricType::Counter,
                "req_per_second_total",
                "req help",
                "per_second"
            ),
            entry(MetricType::Gauge, "queue", "queue help", ""),
            entry(
                MetricType::Histogram,
                "lat_milliseconds",
                "lat help",
                "milliseconds"
            ),
            entry(MetricType::Histogram, "size_bytes", "size help", "bytes"),
            entry(MetricType::Summary, "rpc_seconds", "rpc help", "seconds"),
            entry(MetricType::Gauge, "target_info", "Target metadata", ""),
        ]
    );
    // Without send_metadata there is none.
    assert!(run(&request).metadata.is_empty());
}

#[test]
fn a_family_name_keeps_its_first_type() {
    let options = TranslateOptions {
        add_metric_suffixes: false,
        ..Default::default()
    };
    let request = simple(vec![
        sum("x", "", true, CUMULATIVE, vec![int(vec![], T1, 1)]),
        gauge("x", "", vec![int(vec![], T2, 5), int(vec![], T2, 6)]),
        sum("x", "", true, CUMULATIVE, vec![int(vec![], T2, 2)]),
    ]);
    let translation = translate(&request, &options);
    assert_series(
        &translation.series,
        &[series(&[("__name__", "x")], &[(1.0, T1_MS), (2.0, T2_MS)])],
    );
    assert_eq!(translation.dropped, vec![("metric type conflict", 2)]);
}

#[test]
fn empty_and_odd_requests() {
    let empty = run(&ExportMetricsServiceRequest::default());
    assert_eq!(empty, Translation::default());
    let odd = request(vec![
        ResourceMetrics::default(),
        resource(vec![], vec![ScopeMetrics::default()]),
        resource(
            vec![],
            vec![scope(
                None,
                "",
                vec![
                    Metric {
                        name: "no_data".to_owned(),
                        ..Default::default()
                    },
                    gauge("no_points", "", vec![]),
                ],
            )],
        ),
    ]);
    assert_eq!(run(&odd), Translation::default());
}

// ---- property test ----

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,6}",
        "[a-zA-Z0-9_.:/{} -]{0,10}",
        "[é名_]{0,3}",
        Just(String::new()),
        Just("__name__".to_owned()),
        Just("service.name".to_owned()),
        Just("le".to_owned()),
    ]
}

fn any_attribute() -> impl Strategy<Value = KeyValue> {
    (
        text(),
        prop_oneof![
            text().prop_map(Value::StringValue),
            any::<i64>().prop_map(Value::IntValue),
            any::<f64>().prop_map(Value::DoubleValue),
            any::<bool>().prop_map(Value::BoolValue),
            proptest::collection::vec(any::<u8>(), 0..4).prop_map(Value::BytesValue),
        ],
    )
        .prop_map(|(key, value)| kv_any(&key, value))
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    proptest::collection::vec(any_attribute(), 0..4)
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(stale_nan()),
        -10.0..10.0f64
    ]
}

fn time() -> impl Strategy<Value = u64> {
    // Mostly a few shared milliseconds, so series collect several samples and duplicates.
    prop_oneof![
        1 => any::<u64>(),
        3 => (0..4u64, 0..3u64).prop_map(|(ms, ns)| ms * 1_000_000 + ns),
    ]
}

fn temporality() -> impl Strategy<Value = i32> {
    prop_oneof![4 => Just(AggregationTemporality::Cumulative as i32), 1 => 0..4i32]
}

fn flags() -> impl Strategy<Value = u32> {
    prop_oneof![4 => Just(0u32), 1 => 0..4u32]
}

fn metric_text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-c][a-c._]{0,3}", 1 => text()]
}

fn any_exemplar() -> impl Strategy<Value = OtlpExemplar> {
    (
        attributes(),
        time(),
        proptest::collection::vec(any::<u8>(), 0..17),
        proptest::option::of(float()),
    )
        .prop_map(|(attributes, time, id, value)| OtlpExemplar {
            filtered_attributes: attributes,
            time_unix_nano: time,
            span_id: id.clone(),
            trace_id: id,
            value: value.map(exemplar::Value::AsDouble),
        })
}

fn number_point() -> impl Strategy<Value = NumberDataPoint> {
    (
        attributes(),
        time(),
        flags(),
        proptest::option::weighted(
            0.9,
            prop_oneof![
                float().prop_map(number_data_point::Value::AsDouble),
                any::<i64>().prop_map(number_data_point::Value::AsInt),
            ],
        ),
        proptest::collection::vec(any_exemplar(), 0..3),
    )
        .prop_map(
            |(attributes, time, flags, value, exemplars)| NumberDataPoint {
                attributes,
                time_unix_nano: time,
                flags,
                value,
                exemplars,
                ..Default::default()
            },
        )
}

fn any_histogram_point() -> impl Strategy<Value = HistogramDataPoint> {
    (
        attributes(),
        time(),
        flags(),
        proptest::collection::vec(prop_oneof![float(), 0.0..5.0f64], 0..4),
        proptest::collection::vec(prop_oneof![6 => 0..5u64, 1 => any::<u64>()], 0..5),
        proptest::option::weighted(0.8, float()),
        proptest::collection::vec(any_exemplar(), 0..2),
        any::<bool>(),
    )
        .prop_map(
            |(attributes, time, flags, mut bounds, counts, sum, exemplars, consistent)| {
                let mut counts = counts;
                if consistent {
                    bounds.retain(|b| !b.is_nan() && *b != f64::INFINITY);
                    bounds.sort_by(f64::total_cmp);
                    bounds.dedup();
                    counts.resize(bounds.len() + 1, 1);
                }
                let count = counts.iter().fold(0u64, |a, b| a.wrapping_add(*b));
                HistogramDataPoint {
                    attributes,
                    time_unix_nano: time,
                    flags,
                    count,
                    sum,
                    explicit_bounds: bounds,
                    bucket_counts: counts,
                    exemplars,
                    ..Default::default()
                }
            },
        )
}

fn any_buckets() -> impl Strategy<Value = Option<Buckets>> {
    proptest::option::of(
        (
            prop_oneof![1 => any::<i32>(), 4 => -10..10i32],
            proptest::collection::vec(prop_oneof![6 => 0..5u64, 1 => any::<u64>()], 0..6),
        )
            .prop_map(|(offset, bucket_counts)| Buckets {
                offset,
                bucket_counts,
            }),
    )
}

fn any_exponential_point() -> impl Strategy<Value = ExponentialHistogramDataPoint> {
    (
        attributes(),
        time(),
        flags(),
        prop_oneof![1 => any::<i32>(), 4 => -6..24i32],
        (0..3u64, any_buckets(), any_buckets()),
        proptest::option::weighted(0.8, float()),
        prop_oneof![3 => Just(0.0), 1 => float()],
        any::<bool>(),
    )
        .prop_map(
            |(
                attributes,
                time,
                flags,
                scale,
                (zero_count, positive, negative),
                sum,
                zero_threshold,
                consistent,
            )| {
                let total = |b: &Option<Buckets>| {
                    b.as_ref().map_or(0u64, |b| {
                        b.bucket_counts.iter().fold(0u64, |a, c| a.wrapping_add(*c))
                    })
                };
                let count = if consistent {
                    zero_count
                        .wrapping_add(total(&positive))
                        .wrapping_add(total(&negative))
                } else {
                    zero_count
                };
                ExponentialHistogramDataPoint {
                    attributes,
                    time_unix_nano: time,
                    flags,
                    count,
                    sum,
                    scale,
                    zero_count,
                    positive,
                    negative,
                    zero_threshold,
                    ..Default::default()
                }
            },
        )
}

fn any_summary_point() -> impl Strategy<Value = SummaryDataPoint> {
    (
        attributes(),
        time(),
        flags(),
        any::<u64>(),
        float(),
        proptest::collection::vec(
            (prop_oneof![4 => 0.0..=1.0f64, 1 => float()], float()),
            0..3,
        ),
    )
        .prop_map(
            |(attributes, time, flags, count, sum, quantiles)| SummaryDataPoint {
                attributes,
                time_unix_nano: time,
                flags,
                count,
                sum,
                quantile_values: quantiles
                    .into_iter()
                    .map(|(quantile, value)| ValueAtQuantile { quantile, value })
                    .collect(),
                ..Default::default()
            },
        )
}

fn any_metric() -> impl Strategy<Value = Metric> {
    let data = prop_oneof![
        proptest::collection::vec(number_point(), 0..5)
            .prop_map(|data_points| Data::Gauge(Gauge { data_points })),
        (
            proptest::collection::vec(number_point(), 0..5),
            temporality(),
            any::<bool>()
        )
            .prop_map(|(data_points, t, is_monotonic)| Data::Sum(Sum {
                data_points,
                aggregation_temporality: t,
                is_monotonic,
            })),
        (
            proptest::collection::vec(any_histogram_point(), 0..5),
            temporality()
        )
            .prop_map(|(data_points, t)| Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: t,
            })),
        (
            proptest::collection::vec(any_exponential_point(), 0..5),
            temporality()
        )
            .prop_map(|(data_points, t)| Data::ExponentialHistogram(
                ExponentialHistogram {
                    data_points,
                    aggregation_temporality: t,
                }
            )),
        proptest::collection::vec(any_summary_point(), 0..5)
            .prop_map(|data_points| Data::Summary(Summary { data_points })),
    ];
    (
        metric_text(),
        prop_oneof![
            text(),
            Just("s".to_owned()),
            Just("1".to_owned()),
            Just("By/s".to_owned())
        ],
        proptest::option::of(data),
    )
        .prop_map(|(name, unit, data)| Metric {
            name,
            description: String::new(),
            unit,
            metadata: Vec::new(),
            data,
        })
}

fn any_request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    let scope_metrics = (
        proptest::option::of((text(), text(), attributes()).prop_map(
            |(name, version, attributes)| InstrumentationScope {
                name,
                version,
                attributes,
                ..Default::default()
            },
        )),
        text(),
        proptest::collection::vec(any_metric(), 0..6),
    )
        .prop_map(|(scope, schema_url, metrics)| ScopeMetrics {
            scope,
            metrics,
            schema_url,
        });
    let resource_metrics = (attributes(), proptest::collection::vec(scope_metrics, 1..3))
        .prop_map(|(attributes, scopes)| resource(attributes, scopes));
    proptest::collection::vec(resource_metrics, 1..3)
        .prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
}

fn any_options() -> impl Strategy<Value = TranslateOptions> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec((text(), text()), 0..3),
    )
        .prop_map(
            |(suffixes, promote, metadata, external_labels)| TranslateOptions {
                add_metric_suffixes: suffixes,
                resource_to_telemetry_conversion: promote,
                external_labels,
                send_metadata: metadata,
            },
        )
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn translation_never_panics_and_yields_valid_series(
        request in any_request(),
        options in any_options(),
    ) {
        let translation = translate(&request, &options);
        let mut seen = std::collections::HashSet::new();
        for series in &translation.series {
            prop_assert!(seen.insert(series.labels.clone()), "repeated label set {:?}", series.labels);
            prop_assert!(series.labels.windows(2).all(|pair| pair[0].name < pair[1].name),
                "labels not sorted and unique: {:?}", series.labels);
            for label in &series.labels {
                prop_assert!(is_label_name(&label.name), "bad label name {:?}", label.name);
                prop_assert!(!label.value.is_empty(), "empty value for {:?}", label.name);
            }
            let name = series.labels.iter().find(|label| label.name == "__name__");
            prop_assert!(name.is_some_and(|name| is_metric_name(&name.value)), "bad __name__ {:?}", name);
            prop_assert!(!series.samples.is_empty() || !series.histograms.is_empty());
            prop_assert!(series.samples.windows(2).all(|pair| pair[0].timestamp < pair[1].timestamp));
            prop_assert!(series.histograms.windows(2).all(|pair| pair[0].timestamp < pair[1].timestamp));
            prop_assert!(series.exemplars.windows(2).all(|pair| pair[0].timestamp <= pair[1].timestamp));
            for histogram in &series.histograms {
                prop_assert!((-4..=8).contains(&histogram.schema));
            }
        }
        if !options.send_metadata {
            prop_assert!(translation.metadata.is_empty());
        }
        prop_assert!(translation.dropped.iter().all(|(_, count)| *count > 0));
    }
}

#[test]
fn translating_encoded_batches_one_resource_at_a_time_merges_series_the_same_way() {
    // Two ResourceMetrics of one instance (the same series in both, as batching produces),
    // one of another, and a histogram: the streamed path must merge them like the whole one.
    let instance = || vec![kv("service.name", "svc"), kv("service.instance.id", "i1")];
    let whole = request(vec![
        resource(
            instance(),
            vec![scope(
                None,
                "",
                vec![gauge("g", "", vec![double(vec![], 1_000_000, 1.0)])],
            )],
        ),
        resource(
            vec![kv("service.name", "other")],
            vec![scope(
                None,
                "",
                vec![histogram_metric(
                    "h",
                    "s",
                    CUMULATIVE,
                    vec![histogram_point(1_000_000, 3, Some(2.5), &[1.0], &[1, 2])],
                )],
            )],
        ),
        resource(
            instance(),
            vec![scope(
                None,
                "",
                vec![gauge("g", "", vec![double(vec![], 2_000_000, 2.0)])],
            )],
        ),
    ]);
    let expected = translate(&whole, &TranslateOptions::default());
    let streamed =
        super::translate_encoded(&whole.encode_to_vec(), &TranslateOptions::default()).unwrap();
    assert_eq!(streamed.series, expected.series);
    assert_eq!(streamed.metadata, expected.metadata);
    assert_eq!(streamed.dropped, expected.dropped);
    let merged = streamed
        .series
        .iter()
        .find(|s| {
            s.labels
                .iter()
                .any(|l| l.name == "__name__" && l.value == "g")
        })
        .unwrap();
    assert_eq!(merged.samples.len(), 2, "one series across both resources");
    let encoded = whole.encode_to_vec();
    for cut in [1, encoded.len() / 2, encoded.len() - 1] {
        assert!(super::translate_encoded(&encoded[..cut], &TranslateOptions::default()).is_err());
    }
}

#[test]
fn series_whose_label_hashes_collide_stay_apart_and_are_found_again() {
    use std::hash::BuildHasher;
    let options = TranslateOptions::default();
    let mut t = super::Translator::new(&options);
    let label = |value: &str| {
        vec![Label {
            name: "__name__".into(),
            value: value.into(),
        }]
    };
    let (a, b) = (label("a"), label("b"));
    t.series(a.clone()).samples.push(Sample {
        value: 1.0,
        timestamp: 1,
    });
    // Pretend b hashes like a: its lookup lands on a's series first.
    let (hash_a, hash_b) = (t.hasher.hash_one(&a), t.hasher.hash_one(&b));
    t.index.insert(hash_b, 0);
    t.series(b.clone()).samples.push(Sample {
        value: 2.0,
        timestamp: 1,
    });
    assert_eq!(t.series.len(), 2, "b is a series of its own");
    assert_eq!(t.same_hash[1], 0, "b's chain continues to a");
    // And a found through a chain that starts at b.
    t.index.insert(hash_a, 1);
    t.series(a.clone()).samples.push(Sample {
        value: 3.0,
        timestamp: 2,
    });
    t.series(b.clone()).samples.push(Sample {
        value: 4.0,
        timestamp: 2,
    });
    assert_eq!(t.series.len(), 2);
    assert_eq!(t.series[0].labels, a);
    assert_eq!(
        t.series[0]
            .samples
            .iter()
            .map(|s| s.value)
            .collect::<Vec<_>>(),
        [1.0, 3.0]
    );
    assert_eq!(
        t.series[1]
            .samples
            .iter()
            .map(|s| s.value)
            .collect::<Vec<_>>(),
        [2.0, 4.0]
    );
}
