//! Tests of the OTLP/JSON transcoder against the prost types of
//! opentelemetry-proto: hand-written documents decoded and compared field by
//! field, property-based round trips (prost struct → OTLP/JSON → transcoder →
//! bytes identical to prost's own encoding), error messages and leniency.

use std::collections::HashSet;

use crate::Signal;
use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint, exemplar, exponential_histogram_data_point, metric,
    number_data_point, summary_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use prost::Message;
use serde_json::{Map, Value, json};

use super::{JsonError, json_to_protobuf};
use crate::schema::{self, Label};

// ---------------------------------------------------------------------------
// Helpers

fn transcode(signal: Signal, json: &str) -> Vec<u8> {
    json_to_protobuf(signal, json.as_bytes())
        .unwrap_or_else(|err| panic!("transcoding failed: {err}"))
}

fn decode<M: Message + Default>(bytes: &[u8]) -> M {
    M::decode(bytes).expect("the transcoder's output must be valid protobuf")
}

fn traces(json: &str) -> ExportTraceServiceRequest {
    decode(&transcode(Signal::Traces, json))
}

fn metrics(json: &str) -> ExportMetricsServiceRequest {
    decode(&transcode(Signal::Metrics, json))
}

fn logs(json: &str) -> ExportLogsServiceRequest {
    decode(&transcode(Signal::Logs, json))
}

fn error_of(signal: Signal, json: &str) -> String {
    match json_to_protobuf(signal, json.as_bytes()) {
        Ok(_) => panic!("expected an error for {json}"),
        Err(err) => err.to_string(),
    }
}

fn present(value: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(value) })
}

fn string(s: &str) -> any_value::Value {
    any_value::Value::StringValue(s.to_owned())
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: present(value),
        key_strindex: 0,
    }
}

fn id(hex_text: &str) -> Vec<u8> {
    hex::decode(hex_text).expect("test ids are valid hex")
}

/// Wraps attributes of a single AnyValue into a minimal log request, the
/// shortest way to exercise AnyValue decoding.
fn log_body(body_json: &str) -> Option<AnyValue> {
    let request = logs(&format!(
        r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{body_json}}}]}}]}}]}}"#
    ));
    request.resource_logs[0].scope_logs[0].log_records[0]
        .body
        .clone()
}

// ---------------------------------------------------------------------------
// 1. Realistic documents, compared field by field and byte by byte.

const TRACE_JSON: &str = r#"{
  "resourceSpans": [{
    "resource": {
      "attributes": [
        {"key": "service.name", "value": {"stringValue": "my.service"}},
        {"key": "host.cpus", "value": {"intValue": 8}},
        {"key": "sampler.ratio", "value": {"doubleValue": 0.25}}
      ],
      "droppedAttributesCount": 1,
      "entityRefs": [{
        "schemaUrl": "https://opentelemetry.io/schemas/1.26.0",
        "type": "service",
        "idKeys": ["service.name"],
        "descriptionKeys": ["host.cpus", "sampler.ratio"]
      }]
    },
    "scopeSpans": [{
      "scope": {
        "name": "my.library",
        "version": "1.0.0",
        "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}],
        "droppedAttributesCount": 2
      },
      "spans": [{
        "traceId": "5B8EFFF798038103D269B633813FC60C",
        "spanId": "eee19b7ec3c1b174",
        "traceState": "rojo=00f067aa0ba902b7",
        "parentSpanId": "EEE19B7EC3C1B173",
        "flags": 257,
        "name": "I'm a server span",
        "kind": 2,
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": 1544712661000000000,
        "attributes": [
          {"key": "my.span.attr", "value": {"stringValue": "some value"}},
          {"key": "http.status_code", "value": {"intValue": "-404"}},
          {"key": "retry", "value": {"boolValue": true}},
          {"key": "payload", "value": {"bytesValue": "aGVsbG8gd29ybGQ="}},
          {"key": "ratio.nan", "value": {"doubleValue": "NaN"}},
          {"key": "ratio.inf", "value": {"doubleValue": "Infinity"}},
          {"key": "ratio.neg_inf", "value": {"doubleValue": "-Infinity"}},
          {"key": "tags", "value": {"arrayValue": {"values": [
            {"stringValue": "a"}, {"intValue": 1}, {"arrayValue": {"values": []}}
          ]}}},
          {"key": "nested", "value": {"kvlistValue": {"values": [
            {"key": "inner", "value": {"kvlistValue": {"values": [
              {"key": "deep", "value": {"doubleValue": 1.5}}
            ]}}},
            {"key": "empty"}
          ]}}}
        ],
        "droppedAttributesCount": 3,
        "events": [{
          "timeUnixNano": "1544712660500000000",
          "name": "exception",
          "attributes": [{"key": "exception.message", "value": {"stringValue": "boom"}}],
          "droppedAttributesCount": 4
        }],
        "droppedEventsCount": 5,
        "links": [{
          "traceId": "0102030405060708090a0b0c0d0e0f10",
          "spanId": "1112131415161718",
          "traceState": "congo=t61rcWkgMzE",
          "attributes": [{"key": "link.kind", "value": {"stringValue": "follows_from"}}],
          "droppedAttributesCount": 6,
          "flags": 1
        }],
        "droppedLinksCount": 7,
        "status": {"message": "something failed", "code": "STATUS_CODE_ERROR"}
      }, {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "EEE19B7EC3C1B173",
        "parentSpanId": "",
        "name": "I'm a client span",
        "kind": "SPAN_KIND_CLIENT",
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": "1544712660900000000",
        "status": {}
      }],
      "schemaUrl": "https://opentelemetry.io/schemas/1.26.0"
    }],
    "schemaUrl": "https://opentelemetry.io/schemas/1.25.0"
  }]
}"#;

fn expected_trace_request() -> ExportTraceServiceRequest {
    let server_span = Span {
        trace_id: id("5b8efff798038103d269b633813fc60c"),
        span_id: id("eee19b7ec3c1b174"),
        trace_state: "rojo=00f067aa0ba902b7".to_owned(),
        parent_span_id: id("eee19b7ec3c1b173"),
        flags: 257,
        name: "I'm a server span".to_owned(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1_544_712_660_000_000_000,
        end_time_unix_nano: 1_544_712_661_000_000_000,
        attributes: vec![
            kv("my.span.attr", string("some value")),
            kv("http.status_code", any_value::Value::IntValue(-404)),
            kv("retry", any_value::Value::BoolValue(true)),
            kv(
                "payload",
                any_value::Value::BytesValue(b"hello world".to_vec()),
            ),
            kv("ratio.nan", any_value::Value::DoubleValue(f64::NAN)),
            kv("ratio.inf", any_value::Value::DoubleValue(f64::INFINITY)),
            kv(
                "ratio.neg_inf",
                any_value::Value::DoubleValue(f64::NEG_INFINITY),
            ),
            kv(
                "tags",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(string("a")),
                        },
                        AnyValue {
                            value: Some(any_value::Value::IntValue(1)),
                        },
                        AnyValue {
                            value: Some(any_value::Value::ArrayValue(ArrayValue::default())),
                        },
                    ],
                }),
            ),
            kv(
                "nested",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![
                        kv(
                            "inner",
                            any_value::Value::KvlistValue(KeyValueList {
                                values: vec![kv("deep", any_value::Value::DoubleValue(1.5))],
                            }),
                        ),
                        KeyValue {
                            key: "empty".to_owned(),
                            ..Default::default()
                        },
                    ],
                }),
            ),
        ],
        dropped_attributes_count: 3,
        events: vec![span::Event {
            time_unix_nano: 1_544_712_660_500_000_000,
            name: "exception".to_owned(),
            attributes: vec![kv("exception.message", string("boom"))],
            dropped_attributes_count: 4,
        }],
        dropped_events_count: 5,
        links: vec![span::Link {
            trace_id: id("0102030405060708090a0b0c0d0e0f10"),
            span_id: id("1112131415161718"),
            trace_state: "congo=t61rcWkgMzE".to_owned(),
            attributes: vec![kv("link.kind", string("follows_from"))],
            dropped_attributes_count: 6,
            flags: 1,
        }],
        dropped_links_count: 7,
        status: Some(Status {
            message: "something failed".to_owned(),
            code: status::StatusCode::Error as i32,
        }),
    };
    let client_span = Span {
        trace_id: id("5b8efff798038103d269b633813fc60c"),
        span_id: id("eee19b7ec3c1b173"),
        name: "I'm a client span".to_owned(),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: 1_544_712_660_000_000_000,
        end_time_unix_nano: 1_544_712_660_900_000_000,
        status: Some(Status::default()),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", string("my.service")),
                    kv("host.cpus", any_value::Value::IntValue(8)),
                    kv("sampler.ratio", any_value::Value::DoubleValue(0.25)),
                ],
                dropped_attributes_count: 1,
                entity_refs: vec![EntityRef {
                    schema_url: "https://opentelemetry.io/schemas/1.26.0".to_owned(),
                    r#type: "service".to_owned(),
                    id_keys: vec!["service.name".to_owned()],
                    description_keys: vec!["host.cpus".to_owned(), "sampler.ratio".to_owned()],
                }],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "my.library".to_owned(),
                    version: "1.0.0".to_owned(),
                    attributes: vec![kv("my.scope.attribute", string("some scope attribute"))],
                    dropped_attributes_count: 2,
                }),
                spans: vec![server_span, client_span],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".to_owned(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.25.0".to_owned(),
        }],
    }
}

/// Removes the attribute holding NaN (which defeats `PartialEq`) after
/// checking that it is NaN.
fn take_nan_attribute(request: &mut ExportTraceServiceRequest) {
    let attributes = &mut request.resource_spans[0].scope_spans[0].spans[0].attributes;
    let index = attributes
        .iter()
        .position(|attribute| attribute.key == "ratio.nan")
        .expect("ratio.nan attribute present");
    let removed = attributes.remove(index);
    match removed.value.and_then(|value| value.value) {
        Some(any_value::Value::DoubleValue(v)) => assert!(v.is_nan(), "{v} is not NaN"),
        other => panic!("ratio.nan is {other:?}"),
    }
}

#[test]
fn trace_document_transcodes_field_by_field() {
    let bytes = transcode(Signal::Traces, TRACE_JSON);
    let mut expected = expected_trace_request();
    // Byte-identical to prost's own encoding (f64::NAN has one canonical bit
    // pattern, so this holds with the NaN attribute too).
    assert_eq!(bytes, expected.encode_to_vec());

    let mut decoded: ExportTraceServiceRequest = decode(&bytes);
    take_nan_attribute(&mut decoded);
    take_nan_attribute(&mut expected);
    assert_eq!(decoded, expected);
}

const METRICS_JSON: &str = r#"{
  "resourceMetrics": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
    "scopeMetrics": [{
      "scope": {"name": "my.library", "version": "1.0.0"},
      "metrics": [
        {
          "name": "my.counter",
          "unit": "1",
          "description": "I am a Counter",
          "metadata": [{"key": "origin", "value": {"stringValue": "sdk"}}],
          "sum": {
            "aggregationTemporality": 1,
            "isMonotonic": true,
            "dataPoints": [{
              "asDouble": 5,
              "startTimeUnixNano": "1544712660300000000",
              "timeUnixNano": "1544712660300000000",
              "attributes": [{"key": "my.counter.attr", "value": {"stringValue": "some value"}}],
              "exemplars": [{
                "timeUnixNano": "1544712660300000000",
                "asInt": "-7",
                "spanId": "EEE19B7EC3C1B174",
                "traceId": "5B8EFFF798038103D269B633813FC60C",
                "filteredAttributes": [{"key": "user", "value": {"stringValue": "alice"}}]
              }],
              "flags": 1
            }, {
              "asInt": "9223372036854775807",
              "timeUnixNano": 1544712660300000000
            }]
          }
        },
        {
          "name": "my.gauge",
          "unit": "1",
          "description": "I am a Gauge",
          "gauge": {"dataPoints": [
            {"asDouble": 10, "timeUnixNano": "1544712660300000000",
             "attributes": [{"key": "my.gauge.attr", "value": {"stringValue": "some value"}}]},
            {"asInt": 0, "timeUnixNano": "1544712660300000000"},
            {"asDouble": "-Infinity"}
          ]}
        },
        {
          "name": "my.histogram",
          "unit": "1",
          "description": "I am a Histogram",
          "histogram": {
            "aggregationTemporality": "AGGREGATION_TEMPORALITY_DELTA",
            "dataPoints": [{
              "startTimeUnixNano": "1544712660300000000",
              "timeUnixNano": "1544712660300000000",
              "count": 2,
              "sum": 2,
              "bucketCounts": [1, "1"],
              "explicitBounds": [1],
              "min": 0,
              "max": 2,
              "attributes": [{"key": "my.histogram.attr", "value": {"stringValue": "some value"}}],
              "exemplars": [{"timeUnixNano": "1544712660300000000", "asDouble": 1.5, "traceId": "", "spanId": ""}],
              "flags": 0
            }, {
              "count": "0",
              "bucketCounts": [],
              "explicitBounds": [0.5, "Infinity"],
              "sum": 0
            }]
          }
        },
        {
          "name": "my.exponential.histogram",
          "unit": "1",
          "description": "I am an Exponential Histogram",
          "exponentialHistogram": {
            "aggregationTemporality": 2,
            "dataPoints": [{
              "startTimeUnixNano": "1544712660300000000",
              "timeUnixNano": "1544712660300000000",
              "count": 3,
              "sum": 10,
              "scale": -3,
              "zeroCount": 1,
              "positive": {"offset": -2, "bucketCounts": [0, "2", 300]},
              "negative": {},
              "min": -1.5,
              "max": 8,
              "zeroThreshold": 1e-9,
              "attributes": [{"key": "my.exponential.histogram.attr", "value": {"stringValue": "some value"}}],
              "exemplars": [{"asInt": 4}],
              "flags": 1
            }]
          }
        },
        {
          "name": "my.summary",
          "unit": "ms",
          "description": "I am a Summary",
          "summary": {"dataPoints": [{
            "startTimeUnixNano": "1544712660300000000",
            "timeUnixNano": "1544712660300000000",
            "count": "2",
            "sum": 3.5,
            "quantileValues": [{"quantile": 0, "value": 1}, {"quantile": 1, "value": 2.5}],
            "attributes": [{"key": "my.summary.attr", "value": {"stringValue": "some value"}}],
            "flags": 0
          }]}
        }
      ],
      "schemaUrl": "https://opentelemetry.io/schemas/1.26.0"
    }]
  }]
}"#;

fn expected_metrics_request() -> ExportMetricsServiceRequest {
    const T: u64 = 1_544_712_660_300_000_000;
    let sum = Metric {
        name: "my.counter".to_owned(),
        description: "I am a Counter".to_owned(),
        unit: "1".to_owned(),
        metadata: vec![kv("origin", string("sdk"))],
        data: Some(metric::Data::Sum(Sum {
            aggregation_temporality: AggregationTemporality::Delta as i32,
            is_monotonic: true,
            data_points: vec![
                NumberDataPoint {
                    attributes: vec![kv("my.counter.attr", string("some value"))],
                    start_time_unix_nano: T,
                    time_unix_nano: T,
                    exemplars: vec![Exemplar {
                        filtered_attributes: vec![kv("user", string("alice"))],
                        time_unix_nano: T,
                        span_id: id("eee19b7ec3c1b174"),
                        trace_id: id("5b8efff798038103d269b633813fc60c"),
                        value: Some(exemplar::Value::AsInt(-7)),
                    }],
                    flags: 1,
                    value: Some(number_data_point::Value::AsDouble(5.0)),
                },
                NumberDataPoint {
                    time_unix_nano: T,
                    value: Some(number_data_point::Value::AsInt(i64::MAX)),
                    ..Default::default()
                },
            ],
        })),
    };
    let gauge = Metric {
        name: "my.gauge".to_owned(),
        description: "I am a Gauge".to_owned(),
        unit: "1".to_owned(),
        metadata: vec![],
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![
                NumberDataPoint {
                    attributes: vec![kv("my.gauge.attr", string("some value"))],
                    time_unix_nano: T,
                    value: Some(number_data_point::Value::AsDouble(10.0)),
                    ..Default::default()
                },
                NumberDataPoint {
                    time_unix_nano: T,
                    // An explicit oneof member set to zero is kept.
                    value: Some(number_data_point::Value::AsInt(0)),
                    ..Default::default()
                },
                NumberDataPoint {
                    value: Some(number_data_point::Value::AsDouble(f64::NEG_INFINITY)),
                    ..Default::default()
                },
            ],
        })),
    };
    let histogram = Metric {
        name: "my.histogram".to_owned(),
        description: "I am a Histogram".to_owned(),
        unit: "1".to_owned(),
        metadata: vec![],
        data: Some(metric::Data::Histogram(Histogram {
            aggregation_temporality: AggregationTemporality::Delta as i32,
            data_points: vec![
                HistogramDataPoint {
                    attributes: vec![kv("my.histogram.attr", string("some value"))],
                    start_time_unix_nano: T,
                    time_unix_nano: T,
                    count: 2,
                    sum: Some(2.0),
                    bucket_counts: vec![1, 1],
                    explicit_bounds: vec![1.0],
                    exemplars: vec![Exemplar {
                        time_unix_nano: T,
                        value: Some(exemplar::Value::AsDouble(1.5)),
                        ..Default::default()
                    }],
                    flags: 0,
                    // proto3 `optional`: present zero stays present.
                    min: Some(0.0),
                    max: Some(2.0),
                },
                HistogramDataPoint {
                    explicit_bounds: vec![0.5, f64::INFINITY],
                    sum: Some(0.0),
                    ..Default::default()
                },
            ],
        })),
    };
    let exponential_histogram = Metric {
        name: "my.exponential.histogram".to_owned(),
        description: "I am an Exponential Histogram".to_owned(),
        unit: "1".to_owned(),
        metadata: vec![],
        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            data_points: vec![ExponentialHistogramDataPoint {
                attributes: vec![kv("my.exponential.histogram.attr", string("some value"))],
                start_time_unix_nano: T,
                time_unix_nano: T,
                count: 3,
                sum: Some(10.0),
                scale: -3,
                zero_count: 1,
                positive: Some(exponential_histogram_data_point::Buckets {
                    offset: -2,
                    bucket_counts: vec![0, 2, 300],
                }),
                negative: Some(exponential_histogram_data_point::Buckets::default()),
                flags: 1,
                exemplars: vec![Exemplar {
                    value: Some(exemplar::Value::AsInt(4)),
                    ..Default::default()
                }],
                min: Some(-1.5),
                max: Some(8.0),
                zero_threshold: 1e-9,
            }],
        })),
    };
    let summary = Metric {
        name: "my.summary".to_owned(),
        description: "I am a Summary".to_owned(),
        unit: "ms".to_owned(),
        metadata: vec![],
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                attributes: vec![kv("my.summary.attr", string("some value"))],
                start_time_unix_nano: T,
                time_unix_nano: T,
                count: 2,
                sum: 3.5,
                quantile_values: vec![
                    summary_data_point::ValueAtQuantile {
                        quantile: 0.0,
                        value: 1.0,
                    },
                    summary_data_point::ValueAtQuantile {
                        quantile: 1.0,
                        value: 2.5,
                    },
                ],
                flags: 0,
            }],
        })),
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", string("my.service"))],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "my.library".to_owned(),
                    version: "1.0.0".to_owned(),
                    ..Default::default()
                }),
                metrics: vec![sum, gauge, histogram, exponential_histogram, summary],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".to_owned(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[test]
fn metrics_document_transcodes_field_by_field() {
    let bytes = transcode(Signal::Metrics, METRICS_JSON);
    let expected = expected_metrics_request();
    assert_eq!(decode::<ExportMetricsServiceRequest>(&bytes), expected);
    assert_eq!(bytes, expected.encode_to_vec());
}

const LOGS_JSON: &str = r#"{
  "resourceLogs": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
    "scopeLogs": [{
      "scope": {
        "name": "my.library",
        "version": "1.0.0",
        "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}]
      },
      "logRecords": [{
        "timeUnixNano": "1544712660300000000",
        "observedTimeUnixNano": "1544712660300000000",
        "severityNumber": 10,
        "severityText": "Information",
        "traceId": "5B8EFFF798038103D269B633813FC60C",
        "spanId": "EEE19B7EC3C1B174",
        "body": {"stringValue": "Example log record"},
        "attributes": [
          {"key": "string.attribute", "value": {"stringValue": "some string"}},
          {"key": "boolean.attribute", "value": {"boolValue": true}},
          {"key": "int.attribute", "value": {"intValue": "10"}},
          {"key": "double.attribute", "value": {"doubleValue": 637.704}},
          {"key": "array.attribute", "value": {"arrayValue": {"values": [
            {"stringValue": "many"}, {"stringValue": "values"}
          ]}}},
          {"key": "map.attribute", "value": {"kvlistValue": {"values": [
            {"key": "some.map.key", "value": {"stringValue": "some value"}}
          ]}}}
        ],
        "droppedAttributesCount": 1,
        "flags": 1,
        "eventName": "app.started"
      }, {
        "timeUnixNano": "1544712660300000001",
        "severityNumber": "SEVERITY_NUMBER_ERROR",
        "body": {"kvlistValue": {"values": [
          {"key": "msg", "value": {"stringValue": "structured"}},
          {"key": "raw", "value": {"bytesValue": "3q2+7w"}}
        ]}},
        "flags": 0
      }, {
        "body": {"intValue": "0"}
      }, {
        "body": {"stringValue": ""}
      }]
    }],
    "schemaUrl": "https://opentelemetry.io/schemas/1.26.0"
  }]
}"#;

fn expected_logs_request() -> ExportLogsServiceRequest {
    const T: u64 = 1_544_712_660_300_000_000;
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", string("my.service"))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "my.library".to_owned(),
                    version: "1.0.0".to_owned(),
                    attributes: vec![kv("my.scope.attribute", string("some scope attribute"))],
                    dropped_attributes_count: 0,
                }),
                log_records: vec![
                    LogRecord {
                        time_unix_nano: T,
                        observed_time_unix_nano: T,
                        severity_number: SeverityNumber::Info2 as i32,
                        severity_text: "Information".to_owned(),
                        body: present(string("Example log record")),
                        attributes: vec![
                            kv("string.attribute", string("some string")),
                            kv("boolean.attribute", any_value::Value::BoolValue(true)),
                            kv("int.attribute", any_value::Value::IntValue(10)),
                            kv("double.attribute", any_value::Value::DoubleValue(637.704)),
                            kv(
                                "array.attribute",
                                any_value::Value::ArrayValue(ArrayValue {
                                    values: vec![
                                        AnyValue {
                                            value: Some(string("many")),
                                        },
                                        AnyValue {
                                            value: Some(string("values")),
                                        },
                                    ],
                                }),
                            ),
                            kv(
                                "map.attribute",
                                any_value::Value::KvlistValue(KeyValueList {
                                    values: vec![kv("some.map.key", string("some value"))],
                                }),
                            ),
                        ],
                        dropped_attributes_count: 1,
                        flags: 1,
                        trace_id: id("5b8efff798038103d269b633813fc60c"),
                        span_id: id("eee19b7ec3c1b174"),
                        event_name: "app.started".to_owned(),
                    },
                    LogRecord {
                        time_unix_nano: T + 1,
                        severity_number: SeverityNumber::Error as i32,
                        body: present(any_value::Value::KvlistValue(KeyValueList {
                            values: vec![
                                kv("msg", string("structured")),
                                kv(
                                    "raw",
                                    any_value::Value::BytesValue(vec![0xde, 0xad, 0xbe, 0xef]),
                                ),
                            ],
                        })),
                        ..Default::default()
                    },
                    LogRecord {
                        body: present(any_value::Value::IntValue(0)),
                        ..Default::default()
                    },
                    LogRecord {
                        body: present(string("")),
                        ..Default::default()
                    },
                ],
                schema_url: String::new(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".to_owned(),
        }],
    }
}

#[test]
fn logs_document_transcodes_field_by_field() {
    let bytes = transcode(Signal::Logs, LOGS_JSON);
    let expected = expected_logs_request();
    assert_eq!(decode::<ExportLogsServiceRequest>(&bytes), expected);
    assert_eq!(bytes, expected.encode_to_vec());
}

#[test]
fn empty_requests() {
    assert_eq!(transcode(Signal::Traces, "{}"), Vec::<u8>::new());
    assert_eq!(
        transcode(Signal::Metrics, r#"{"resourceMetrics": []}"#),
        Vec::<u8>::new()
    );
    assert_eq!(
        logs(r#"{"resourceLogs": [{}]}"#),
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs::default()]
        }
    );
}

// ---------------------------------------------------------------------------
// Presence: oneof members, optional fields and empty messages are kept.

#[test]
fn explicit_oneof_defaults_are_encoded() {
    let cases = [
        (r#"{"intValue": "0"}"#, any_value::Value::IntValue(0)),
        (r#"{"intValue": 0}"#, any_value::Value::IntValue(0)),
        (r#"{"stringValue": ""}"#, string("")),
        (
            r#"{"boolValue": false}"#,
            any_value::Value::BoolValue(false),
        ),
        (r#"{"doubleValue": 0}"#, any_value::Value::DoubleValue(0.0)),
        (
            r#"{"bytesValue": ""}"#,
            any_value::Value::BytesValue(vec![]),
        ),
        (
            r#"{"arrayValue": {}}"#,
            any_value::Value::ArrayValue(ArrayValue::default()),
        ),
        (
            r#"{"kvlistValue": {"values": []}}"#,
            any_value::Value::KvlistValue(KeyValueList::default()),
        ),
        (
            r#"{"stringValueStrindex": 0}"#,
            any_value::Value::StringValueStrindex(0),
        ),
    ];
    for (json, expected) in cases {
        assert_eq!(log_body(json), present(expected), "{json}");
    }
    // An empty object is an AnyValue with no member set, which is still present.
    assert_eq!(log_body("{}"), Some(AnyValue { value: None }));
    // Absent body stays absent.
    assert_eq!(log_body("null"), None);
}

#[test]
fn present_empty_messages_are_encoded() {
    let request = traces(
        r#"{"resourceSpans":[{"resource":{},"scopeSpans":[{"scope":{},"spans":[{"status":{}}]}]}]}"#,
    );
    let resource_spans = &request.resource_spans[0];
    assert_eq!(resource_spans.resource, Some(Resource::default()));
    assert_eq!(
        resource_spans.scope_spans[0].scope,
        Some(InstrumentationScope::default())
    );
    assert_eq!(
        resource_spans.scope_spans[0].spans[0].status,
        Some(Status::default())
    );
}

#[test]
fn int32_negative_values_are_sign_extended() {
    // Prost writes negative int32 as 10-byte varints; so must we.
    let json = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":-1,
        "attributes":[{"key":"k","keyStrindex":-5,"value":{"stringValueStrindex":-2}}]}]}]}]}"#;
    let bytes = transcode(Signal::Logs, json);
    let expected = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    severity_number: -1,
                    attributes: vec![KeyValue {
                        key: "k".to_owned(),
                        value: present(any_value::Value::StringValueStrindex(-2)),
                        key_strindex: -5,
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    assert_eq!(bytes, expected.encode_to_vec());
}

#[test]
fn long_messages_get_multi_byte_lengths() {
    // Lengths >= 128 need a wider varint than the one-byte placeholder.
    for len in [126, 127, 128, 129, 300, 16_383, 16_384, 70_000] {
        let text = "x".repeat(len);
        let json = format!(r#"{{"stringValue": "{text}"}}"#);
        assert_eq!(log_body(&json), present(string(&text)), "length {len}");
        let request = format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{json}}}]}}]}}]}}"#
        );
        let expected = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: present(string(&text)),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(transcode(Signal::Logs, &request), expected.encode_to_vec());
    }
}

// ---------------------------------------------------------------------------
// 3. Errors name the path.

/// A trace request with one span whose body is `span_json`, at
/// `resourceSpans[0].scopeSpans[1].spans[3]`.
fn span_at_depth(span_json: &str) -> String {
    format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{}},{{"spans":[{{}},{{}},{{}},{span_json}]}}]}}]}}"#
    )
}

#[test]
fn wrong_hex_length_names_the_path() {
    let err = error_of(
        Signal::Traces,
        &span_at_depth(r#"{"traceId":"5B8EFFF798038103D269B633813FC60"}"#),
    );
    assert_eq!(
        err,
        "resourceSpans[0].scopeSpans[1].spans[3].traceId: expected 32 hex characters, got 31"
    );
    let err = error_of(
        Signal::Traces,
        &span_at_depth(r#"{"spanId":"EEE19B7EC3C1B17400"}"#),
    );
    assert_eq!(
        err,
        "resourceSpans[0].scopeSpans[1].spans[3].spanId: expected 16 hex characters, got 18"
    );
    let err = error_of(
        Signal::Traces,
        &span_at_depth(r#"{"links":[{"spanId":"EEE1"}]}"#),
    );
    assert_eq!(
        err,
        "resourceSpans[0].scopeSpans[1].spans[3].links[0].spanId: expected 16 hex characters, got 4"
    );
    // Base64 ids (protojson's encoding) are not OTLP/JSON and are rejected.
    let err = error_of(
        Signal::Logs,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"W47/95gDgQPSabYzgT/GDA=="}]}]}]}"#,
    );
    assert_eq!(
        err,
        "resourceLogs[0].scopeLogs[0].logRecords[0].traceId: expected 32 hex characters, got 24"
    );
}

#[test]
fn non_hex_characters_name_the_path() {
    let err = error_of(
        Signal::Traces,
        &span_at_depth(r#"{"parentSpanId":"EEE19B7EC3C1B17G"}"#),
    );
    assert_eq!(
        err,
        "resourceSpans[0].scopeSpans[1].spans[3].parentSpanId: invalid hex character 'G' at position 15"
    );
    let err = error_of(
        Signal::Metrics,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"gauge":{"dataPoints":[
            {"exemplars":[{"traceId":"5b8efff798038103d269b633813fc6é0"}]}]}}]}]}]}"#,
    );
    assert_eq!(
        err,
        "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0].exemplars[0].traceId: \
         invalid hex character 'é' at position 30"
    );
}

#[test]
fn unknown_enum_name_names_the_path() {
    let err = error_of(
        Signal::Traces,
        &span_at_depth(r#"{"kind":"SPAN_KIND_BOGUS"}"#),
    );
    assert_eq!(
        err,
        r#"resourceSpans[0].scopeSpans[1].spans[3].kind: unknown SpanKind value "SPAN_KIND_BOGUS""#
    );
    let err = error_of(
        Signal::Traces,
        &span_at_depth(r#"{"status":{"code":"STATUS_CODE_WHATEVER"}}"#),
    );
    assert_eq!(
        err,
        r#"resourceSpans[0].scopeSpans[1].spans[3].status.code: unknown StatusCode value "STATUS_CODE_WHATEVER""#
    );
    // A name from a different enum is unknown too.
    let err = error_of(
        Signal::Logs,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"SPAN_KIND_SERVER"}]}]}]}"#,
    );
    assert_eq!(
        err,
        r#"resourceLogs[0].scopeLogs[0].logRecords[0].severityNumber: unknown SeverityNumber value "SPAN_KIND_SERVER""#
    );
    let err = error_of(
        Signal::Metrics,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"sum":{"aggregationTemporality":true}}]}]}]}"#,
    );
    assert_eq!(
        err,
        "resourceMetrics[0].scopeMetrics[0].metrics[0].sum.aggregationTemporality: \
         expected an enum name or integer, got true"
    );
}

#[test]
fn wrong_types_name_the_path() {
    let cases: &[(Signal, &str, &str)] = &[
        (
            Signal::Traces,
            r#"{"resourceSpans":[{"resource":{"attributes":[{},{},{"key":"k","value":{"intValue":true}}]}}]}"#,
            "resourceSpans[0].resource.attributes[2].value.intValue: expected an integer, got true",
        ),
        (
            Signal::Traces,
            r#"{"resourceSpans":[{"resource":5}]}"#,
            "resourceSpans[0].resource: expected an object, got 5",
        ),
        (
            Signal::Traces,
            r#"{"resourceSpans":{"resource":{}}}"#,
            "resourceSpans: expected an array, got an object",
        ),
        (
            Signal::Traces,
            &span_at_depth(r#"{"name":42}"#),
            "resourceSpans[0].scopeSpans[1].spans[3].name: expected a string, got 42",
        ),
        (
            Signal::Traces,
            &span_at_depth(r#"{"startTimeUnixNano":"soon"}"#),
            r#"resourceSpans[0].scopeSpans[1].spans[3].startTimeUnixNano: expected an integer, got "soon""#,
        ),
        (
            Signal::Traces,
            &span_at_depth(r#"{"startTimeUnixNano":1.5}"#),
            "resourceSpans[0].scopeSpans[1].spans[3].startTimeUnixNano: expected an integer, got 1.5",
        ),
        (
            Signal::Traces,
            &span_at_depth(r#"{"droppedAttributesCount":4294967296}"#),
            "resourceSpans[0].scopeSpans[1].spans[3].droppedAttributesCount: \
             4294967296 is out of range for uint32",
        ),
        (
            Signal::Traces,
            &span_at_depth(r#"{"endTimeUnixNano":"-1"}"#),
            r#"resourceSpans[0].scopeSpans[1].spans[3].endTimeUnixNano: "-1" is out of range for fixed64"#,
        ),
        (
            Signal::Traces,
            &span_at_depth(r#"{"endTimeUnixNano":"18446744073709551616"}"#),
            r#"resourceSpans[0].scopeSpans[1].spans[3].endTimeUnixNano: "18446744073709551616" is out of range for fixed64"#,
        ),
        (
            Signal::Traces,
            &span_at_depth(r#"{"endTimeUnixNano":"99999999999999999999999999999999999999999"}"#),
            r#"resourceSpans[0].scopeSpans[1].spans[3].endTimeUnixNano: "9999999999999999999999999999999999999999"... is out of range for fixed64"#,
        ),
        (
            Signal::Logs,
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"intValue":"9223372036854775808"}}]}]}]}"#,
            r#"resourceLogs[0].scopeLogs[0].logRecords[0].body.intValue: "9223372036854775808" is out of range for int64"#,
        ),
        (
            Signal::Logs,
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"doubleValue":"lots"}}]}]}]}"#,
            r#"resourceLogs[0].scopeLogs[0].logRecords[0].body.doubleValue: expected a number, got "lots""#,
        ),
        (
            Signal::Logs,
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"boolValue":1}}]}]}]}"#,
            "resourceLogs[0].scopeLogs[0].logRecords[0].body.boolValue: expected a boolean, got 1",
        ),
        (
            Signal::Logs,
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"bytesValue":"not base64!"}}]}]}]}"#,
            "resourceLogs[0].scopeLogs[0].logRecords[0].body.bytesValue: \
             invalid base64: unexpected character ' ' at offset 3",
        ),
        (
            Signal::Logs,
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"a","intValue":1}}]}]}]}"#,
            "resourceLogs[0].scopeLogs[0].logRecords[0].body.intValue: \
             conflicts with `stringValue`: only one member of oneof AnyValue.value may be set",
        ),
        (
            Signal::Metrics,
            r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"gauge":{},"sum":{}}]}]}]}"#,
            "resourceMetrics[0].scopeMetrics[0].metrics[0].sum: \
             conflicts with `gauge`: only one member of oneof Metric.data may be set",
        ),
        (
            Signal::Metrics,
            r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"histogram":{"dataPoints":[{"bucketCounts":[1,null]}]}}]}]}]}"#,
            "resourceMetrics[0].scopeMetrics[0].metrics[0].histogram.dataPoints[0].bucketCounts[1]: \
             expected an integer, got null",
        ),
        (
            Signal::Metrics,
            r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"exponentialHistogram":{"dataPoints":[{"scale":2147483648}]}}]}]}]}"#,
            "resourceMetrics[0].scopeMetrics[0].metrics[0].exponentialHistogram.dataPoints[0].scale: \
             2147483648 is out of range for sint32",
        ),
        (
            Signal::Traces,
            r#"{"resourceSpans":[{"resource":{"entityRefs":[{"idKeys":["a",7]}]}}]}"#,
            "resourceSpans[0].resource.entityRefs[0].idKeys[1]: expected a string, got 7",
        ),
        (
            Signal::Traces,
            r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":{"stringValue":
                "a very long string value that is truncated in the message"}},{"key":5}]}}]}"#,
            "resourceSpans[0].resource.attributes[1].key: expected a string, got 5",
        ),
        (
            Signal::Traces,
            &span_at_depth(
                r#"{"name":"a very long string value that is truncated in messages", "kind":"a very long string value that is truncated in messages"}"#,
            ),
            r#"resourceSpans[0].scopeSpans[1].spans[3].kind: unknown SpanKind value "a very long string value that is truncat"..."#,
        ),
    ];
    for (signal, json, expected) in cases {
        assert_eq!(&error_of(*signal, json), expected, "for {json}");
    }
}

/// 64-bit integer fields of every kind (int64, sfixed64, fixed64, uint64; singular and
/// packed), as (signal, document with `@` where the value goes, path of the
/// value, proto type). Every field of a kind goes through the same `parse_scalar` arm.
const SIXTY_FOUR_BIT_FIELDS: &[(Signal, &str, &str, &str)] = &[
    (
        Signal::Logs,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"intValue":@}}]}]}]}"#,
        "resourceLogs[0].scopeLogs[0].logRecords[0].body.intValue",
        "int64",
    ),
    (
        Signal::Metrics,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"gauge":{"dataPoints":[{"asInt":@}]}}]}]}]}"#,
        "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0].asInt",
        "sfixed64",
    ),
    (
        Signal::Metrics,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"sum":{"dataPoints":[{"exemplars":[{"asInt":@}]}]}}]}]}]}"#,
        "resourceMetrics[0].scopeMetrics[0].metrics[0].sum.dataPoints[0].exemplars[0].asInt",
        "sfixed64",
    ),
    (
        Signal::Traces,
        r#"{"resourceSpans":[{"scopeSpans":[{},{"spans":[{},{},{},{"startTimeUnixNano":@}]}]}]}"#,
        "resourceSpans[0].scopeSpans[1].spans[3].startTimeUnixNano",
        "fixed64",
    ),
    (
        Signal::Logs,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":@}]}]}]}"#,
        "resourceLogs[0].scopeLogs[0].logRecords[0].timeUnixNano",
        "fixed64",
    ),
    (
        Signal::Metrics,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"histogram":{"dataPoints":[{"count":@}]}}]}]}]}"#,
        "resourceMetrics[0].scopeMetrics[0].metrics[0].histogram.dataPoints[0].count",
        "fixed64",
    ),
    (
        Signal::Metrics,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"histogram":{"dataPoints":[{"bucketCounts":[1,@]}]}}]}]}]}"#,
        "resourceMetrics[0].scopeMetrics[0].metrics[0].histogram.dataPoints[0].bucketCounts[1]",
        "fixed64",
    ),
    (
        Signal::Metrics,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"exponentialHistogram":{"dataPoints":[{"zeroCount":@}]}}]}]}]}"#,
        "resourceMetrics[0].scopeMetrics[0].metrics[0].exponentialHistogram.dataPoints[0].zeroCount",
        "fixed64",
    ),
    (
        Signal::Metrics,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"exponentialHistogram":{"dataPoints":[{"positive":{"bucketCounts":[@]}}]}}]}]}]}"#,
        "resourceMetrics[0].scopeMetrics[0].metrics[0].exponentialHistogram.dataPoints[0].positive.bucketCounts[0]",
        "uint64",
    ),
    (
        Signal::Metrics,
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"summary":{"dataPoints":[{"count":@}]}}]}]}]}"#,
        "resourceMetrics[0].scopeMetrics[0].metrics[0].summary.dataPoints[0].count",
        "fixed64",
    ),
];

fn with_value(document: &str, value: &str) -> String {
    document.replacen('@', value, 1)
}

#[test]
fn int64_below_the_minimum_is_refused_as_a_string_and_as_a_number() {
    // Not saturated to i64::MIN: as a number it reaches the transcoder as the double -2^63,
    // which is why the message shows it in that form.
    for (value, shown) in [
        (r#""-9223372036854775809""#, r#""-9223372036854775809""#),
        ("-9223372036854775809", "-9.223372036854776e+18"),
        ("-9223372036854775809.0", "-9.223372036854776e+18"),
        ("-1e19", "-1e+19"),
    ] {
        let json = with_value(SIXTY_FOUR_BIT_FIELDS[0].1, value);
        assert_eq!(
            error_of(Signal::Logs, &json),
            format!(
                "resourceLogs[0].scopeLogs[0].logRecords[0].body.intValue: {shown} is out of range for int64"
            ),
            "for {value}"
        );
    }
}

#[test]
fn every_64_bit_integer_field_refuses_values_out_of_its_range() {
    for &(signal, document, path, type_name) in SIXTY_FOUR_BIT_FIELDS {
        let out_of_range: &[&str] = if type_name.starts_with('u') || type_name.starts_with('f') {
            &[
                r#""-1""#,
                "-1",
                r#""18446744073709551616""#,
                "18446744073709551616",
                "-9223372036854775809",
                "1.8446744073709552e19",
            ]
        } else {
            &[
                r#""-9223372036854775809""#,
                "-9223372036854775809",
                r#""9223372036854775808""#,
                "9223372036854775808",
                "18446744073709551616",
            ]
        };
        for value in out_of_range {
            let json = with_value(document, value);
            let err = error_of(signal, &json);
            assert!(
                err.starts_with(&format!("{path}: "))
                    && err.ends_with(&format!(" is out of range for {type_name}")),
                "for {value} in {json}: {err}"
            );
        }
    }
}

#[test]
fn every_64_bit_integer_field_accepts_its_extremes() {
    for &(signal, document, path, type_name) in SIXTY_FOUR_BIT_FIELDS {
        let in_range: &[&str] = if type_name.starts_with('u') || type_name.starts_with('f') {
            &[
                "0",
                r#""0""#,
                "18446744073709551615",
                r#""18446744073709551615""#,
            ]
        } else {
            &[
                "-9223372036854775808",
                r#""-9223372036854775808""#,
                "9223372036854775807",
                r#""9223372036854775807""#,
                "-9.2e18",
            ]
        };
        for value in in_range {
            let json = with_value(document, value);
            if let Err(err) = json_to_protobuf(signal, json.as_bytes()) {
                panic!("{path} refused {value}: {err}");
            }
        }
    }
    assert_eq!(
        log_body(r#"{"intValue":-9.2e18}"#),
        present(any_value::Value::IntValue(-9_200_000_000_000_000_000))
    );
}

#[test]
fn doubles_accept_only_the_canonical_spellings_of_special_values() {
    for (spelling, expected) in [
        ("NaN", f64::NAN),
        ("Infinity", f64::INFINITY),
        ("-Infinity", f64::NEG_INFINITY),
    ] {
        let Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(v)),
        }) = log_body(&format!(r#"{{"doubleValue":"{spelling}"}}"#))
        else {
            panic!("{spelling} is not a double");
        };
        assert!(
            v.to_bits() == expected.to_bits() || (v.is_nan() && expected.is_nan()),
            "{spelling} read as {v}"
        );
    }
    for spelling in [
        "nan",
        "NAN",
        "-nan",
        "+NaN",
        "inf",
        "-inf",
        "+inf",
        "Inf",
        "infinity",
        "INFINITY",
        "+Infinity",
        "-infinity",
    ] {
        let json = format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{{"doubleValue":"{spelling}"}}}}]}}]}}]}}"#
        );
        assert_eq!(
            error_of(Signal::Logs, &json),
            format!(
                r#"resourceLogs[0].scopeLogs[0].logRecords[0].body.doubleValue: expected a number, got "{spelling}" (special values are spelled "NaN", "Infinity" and "-Infinity")"#
            )
        );
    }
}

#[test]
fn every_double_field_refuses_other_spellings_of_special_values() {
    let json = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"histogram":{"dataPoints":[{"explicitBounds":[1,"inf"]}]}}]}]}]}"#;
    assert_eq!(
        error_of(Signal::Metrics, json),
        r#"resourceMetrics[0].scopeMetrics[0].metrics[0].histogram.dataPoints[0].explicitBounds[1]: expected a number, got "inf" (special values are spelled "NaN", "Infinity" and "-Infinity")"#
    );
    let json = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"gauge":{"dataPoints":[{"asDouble":"nan"}]}}]}]}]}"#;
    assert!(
        error_of(Signal::Metrics, json).contains(r#"asDouble: expected a number, got "nan""#),
        "{}",
        error_of(Signal::Metrics, json)
    );
}

#[test]
fn double_strings_beyond_the_double_range_are_refused() {
    let json =
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"doubleValue":"-1e400"}}]}]}]}"#;
    assert_eq!(
        error_of(Signal::Logs, json),
        r#"resourceLogs[0].scopeLogs[0].logRecords[0].body.doubleValue: "-1e400" is out of range for double"#
    );
}

#[test]
fn snake_case_keys_appear_in_error_paths_as_written() {
    let err = error_of(
        Signal::Traces,
        r#"{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"abc"}]}]}]}"#,
    );
    assert_eq!(
        err,
        "resource_spans[0].scope_spans[0].spans[0].trace_id: expected 32 hex characters, got 3"
    );
}

#[test]
fn invalid_json_reports_line_and_column() {
    let err = error_of(Signal::Traces, r#"{"resourceSpans": [}"#);
    assert!(
        err.starts_with("invalid JSON at line 1 column 20: "),
        "{err}"
    );
    assert!(
        !err.ends_with("column 20"),
        "position is not repeated: {err}"
    );

    let err = error_of(Signal::Traces, "{\n  \"resourceSpans\": [\n");
    assert!(
        err.starts_with("invalid JSON at line 3 column 0: EOF while parsing"),
        "{err}"
    );

    let err = error_of(Signal::Logs, "");
    assert!(
        err.starts_with("invalid JSON at line 1 column 0: EOF"),
        "{err}"
    );

    let err = error_of(Signal::Logs, "{} trailing");
    assert!(
        err.starts_with("invalid JSON at line 1 column 4: trailing characters"),
        "{err}"
    );

    match json_to_protobuf(Signal::Metrics, b"{\"a\": \xff}") {
        Err(JsonError::Syntax { line: 1, .. }) => {}
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn top_level_must_be_an_object() {
    for (json, got) in [
        ("[]", "an array"),
        (r#"[{"resourceSpans":[]}]"#, "an array"),
        ("null", "null"),
        ("42", "42"),
        (r#""resourceSpans""#, r#""resourceSpans""#),
    ] {
        assert_eq!(
            error_of(Signal::Traces, json),
            format!("request body: expected an object, got {got}")
        );
    }
}

/// A log record whose body nests `levels` arrayValues.
fn nested_arrays(levels: usize) -> String {
    let mut body = r#"{"stringValue":"leaf"}"#.to_owned();
    for _ in 0..levels {
        body = format!(r#"{{"arrayValue":{{"values":[{body}]}}}}"#);
    }
    format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{body}}}]}}]}}]}}"#)
}

#[test]
fn deep_nesting_is_rejected() {
    // Reasonable nesting is fine.
    let request = logs(&nested_arrays(20));
    assert!(
        request.resource_logs[0].scope_logs[0].log_records[0]
            .body
            .is_some()
    );

    // Within serde_json's 128-level limit but beyond the transcoder's own
    // message-depth limit: the error names the path down to the culprit.
    let err = error_of(Signal::Logs, &nested_arrays(35));
    let prefix = "resourceLogs[0].scopeLogs[0].logRecords[0].body.arrayValue.values[0].arrayValue";
    assert!(err.starts_with(prefix), "{err}");
    assert!(
        err.ends_with("nested too deeply (more than 64 levels of messages)"),
        "{err}"
    );

    // Beyond serde_json's recursion limit: a syntax error, not a stack overflow.
    let err = error_of(Signal::Logs, &nested_arrays(100));
    assert!(err.starts_with("invalid JSON at line 1 column"), "{err}");
    assert!(err.contains("recursion limit exceeded"), "{err}");

    // The same for deep garbage in an unknown field.
    let garbage = format!(
        r#"{{"unknown":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let err = error_of(Signal::Traces, &garbage);
    assert!(err.contains("recursion limit exceeded"), "{err}");
}

// ---------------------------------------------------------------------------
// 4. Leniency.

#[test]
fn unknown_fields_are_ignored_at_any_depth() {
    let with_unknown = r#"{
      "futureTopLevel": {"anything": [1, 2, {"x": null}]},
      "resourceSpans": [{
        "resource": {"attributes": [{"key": "k", "value": {"stringValue": "v", "extra": true}, "note": 1}], "zzz": "x"},
        "unknownList": [[[]]],
        "scopeSpans": [{
          "scope": {"name": "lib", "unknown": {}},
          "spans": [{"name": "s", "deprecatedCode": 3, "status": {"deprecated_code": 1, "code": 2, "x": []}}]
        }]
      }]
    }"#;
    let without_unknown = r#"{
      "resourceSpans": [{
        "resource": {"attributes": [{"key": "k", "value": {"stringValue": "v"}}]},
        "scopeSpans": [{"scope": {"name": "lib"}, "spans": [{"name": "s", "status": {"code": 2}}]}]
      }]
    }"#;
    assert_eq!(
        transcode(Signal::Traces, with_unknown),
        transcode(Signal::Traces, without_unknown)
    );
}

#[test]
fn snake_case_keys_are_accepted() {
    let snake = r#"{
      "resource_logs": [{
        "scope_logs": [{
          "log_records": [{
            "time_unix_nano": "1", "observed_time_unix_nano": "2",
            "severity_number": 9, "severity_text": "INFO",
            "trace_id": "5b8efff798038103d269b633813fc60c", "span_id": "eee19b7ec3c1b174",
            "dropped_attributes_count": 1, "event_name": "e",
            "body": {"kvlist_value": {"values": [{"key": "a", "key_strindex": 1, "value": {"bytes_value": "AQI="}}]}}
          }],
          "schema_url": "s"
        }]
      }]
    }"#;
    let camel = r#"{
      "resourceLogs": [{
        "scopeLogs": [{
          "logRecords": [{
            "timeUnixNano": "1", "observedTimeUnixNano": "2",
            "severityNumber": 9, "severityText": "INFO",
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "droppedAttributesCount": 1, "eventName": "e",
            "body": {"kvlistValue": {"values": [{"key": "a", "keyStrindex": 1, "value": {"bytesValue": "AQI="}}]}}
          }],
          "schemaUrl": "s"
        }]
      }]
    }"#;
    assert_eq!(
        transcode(Signal::Logs, snake),
        transcode(Signal::Logs, camel)
    );

    let metrics_snake = r#"{"resource_metrics":[{"scope_metrics":[{"metrics":[
        {"exponential_histogram":{"aggregation_temporality":2,"data_points":[{"zero_count":1,"zero_threshold":0.5,
          "positive":{"bucket_counts":[1]},"start_time_unix_nano":3,"exemplars":[{"as_int":1,"filtered_attributes":[]}]}]}},
        {"summary":{"data_points":[{"quantile_values":[{"quantile":0.5,"value":1}]}]}},
        {"sum":{"is_monotonic":true,"data_points":[{"as_double":1}]}}]}]}]}"#;
    let metrics_camel = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
        {"exponentialHistogram":{"aggregationTemporality":2,"dataPoints":[{"zeroCount":1,"zeroThreshold":0.5,
          "positive":{"bucketCounts":[1]},"startTimeUnixNano":3,"exemplars":[{"asInt":1,"filteredAttributes":[]}]}]}},
        {"summary":{"dataPoints":[{"quantileValues":[{"quantile":0.5,"value":1}]}]}},
        {"sum":{"isMonotonic":true,"dataPoints":[{"asDouble":1}]}}]}]}]}"#;
    assert_eq!(
        transcode(Signal::Metrics, metrics_snake),
        transcode(Signal::Metrics, metrics_camel)
    );
}

#[test]
fn enum_names_and_numeric_strings_are_accepted() {
    let request = traces(&span_at_depth(
        r#"{"kind":"SPAN_KIND_CONSUMER","status":{"code":"STATUS_CODE_OK"}}"#,
    ));
    let span = &request.resource_spans[0].scope_spans[1].spans[3];
    assert_eq!(span.kind, span::SpanKind::Consumer as i32);
    assert_eq!(
        span.status.as_ref().map(|s| s.code),
        Some(status::StatusCode::Ok as i32)
    );

    // Numeric strings, and integers outside the known range (open enums).
    let request = traces(&span_at_depth(r#"{"kind":"4","status":{"code":42}}"#));
    let span = &request.resource_spans[0].scope_spans[1].spans[3];
    assert_eq!(span.kind, span::SpanKind::Producer as i32);
    assert_eq!(span.status.as_ref().map(|s| s.code), Some(42));

    for (name, number) in [
        ("SEVERITY_NUMBER_UNSPECIFIED", 0),
        ("SEVERITY_NUMBER_TRACE", 1),
        ("SEVERITY_NUMBER_DEBUG4", 8),
        ("SEVERITY_NUMBER_INFO", 9),
        ("SEVERITY_NUMBER_WARN3", 15),
        ("SEVERITY_NUMBER_FATAL4", 24),
    ] {
        let request = logs(&format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"severityNumber":"{name}"}}]}}]}}]}}"#
        ));
        let record = &request.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(record.severity_number, number, "{name}");
        assert_eq!(
            SeverityNumber::try_from(number).map(|s| s.as_str_name()),
            Ok(name)
        );
    }
    let request = metrics(
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"sum":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_CUMULATIVE"}}]}]}]}"#,
    );
    match &request.resource_metrics[0].scope_metrics[0].metrics[0].data {
        Some(metric::Data::Sum(sum)) => assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        ),
        other => panic!("unexpected data {other:?}"),
    }
}

#[test]
fn nulls_are_absent() {
    let with_nulls = r#"{"resourceSpans":[{"resource":null,"schemaUrl":null,"scopeSpans":[{"scope":null,
        "spans":[{"traceId":null,"name":null,"kind":null,"attributes":null,"status":null,
          "events":[{"name":"e","attributes":[{"key":"k","value":null}]}]}]}]}]}"#;
    let without = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"events":[{"name":"e","attributes":[{"key":"k"}]}]}]}]}]}"#;
    assert_eq!(
        transcode(Signal::Traces, with_nulls),
        transcode(Signal::Traces, without)
    );
    // A null oneof member does not conflict with the member that is set.
    assert_eq!(
        log_body(r#"{"stringValue":null,"intValue":"3","doubleValue":null}"#),
        present(any_value::Value::IntValue(3))
    );
    // A null camelCase key falls back to the snake_case one.
    assert_eq!(
        log_body(r#"{"stringValue":null,"string_value":"s"}"#),
        present(string("s"))
    );
}

#[test]
fn numbers_are_read_leniently() {
    let request = metrics(
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"histogram":{"dataPoints":[{
            "count": 1e3, "timeUnixNano": "18446744073709551615", "startTimeUnixNano": 18446744073709551615,
            "sum": "2.5", "min": "-Infinity", "max": "1e300",
            "bucketCounts": ["1", 2.0, 3], "explicitBounds": ["NaN", -0.5, "7"], "flags": "3"}]}}]}]}]}"#,
    );
    let Some(metric::Data::Histogram(histogram)) =
        &request.resource_metrics[0].scope_metrics[0].metrics[0].data
    else {
        panic!("not a histogram")
    };
    let point = &histogram.data_points[0];
    assert_eq!(point.count, 1000);
    assert_eq!(point.time_unix_nano, u64::MAX);
    assert_eq!(point.start_time_unix_nano, u64::MAX);
    assert_eq!(point.sum, Some(2.5));
    assert_eq!(point.min, Some(f64::NEG_INFINITY));
    assert_eq!(point.max, Some(1e300));
    assert_eq!(point.bucket_counts, vec![1, 2, 3]);
    assert!(point.explicit_bounds[0].is_nan());
    assert_eq!(point.explicit_bounds[1..], [-0.5, 7.0]);
    assert_eq!(point.flags, 3);

    // Booleans as strings, like the Go collector.
    assert_eq!(
        log_body(r#"{"boolValue":"true"}"#),
        present(any_value::Value::BoolValue(true))
    );
    // i64 extremes as numbers and strings.
    assert_eq!(
        log_body(r#"{"intValue":-9223372036854775808}"#),
        present(any_value::Value::IntValue(i64::MIN))
    );
    assert_eq!(
        log_body(r#"{"intValue":"-9223372036854775808"}"#),
        present(any_value::Value::IntValue(i64::MIN))
    );
}

#[test]
fn base64_variants_are_accepted() {
    let bytes = |b64: &str| log_body(&format!(r#"{{"bytesValue":"{b64}"}}"#));
    let expected = present(any_value::Value::BytesValue(vec![0xfb, 0xff, 0xfe, 0x01]));
    for b64 in ["+//+AQ==", "+//+AQ", "-__-AQ==", "-__-AQ"] {
        assert_eq!(bytes(b64), expected, "{b64}");
    }
}

#[test]
fn hex_ids_are_case_insensitive_and_empty_means_absent() {
    let upper = traces(&span_at_depth(
        r#"{"traceId":"ABCDEF0123456789ABCDEF0123456789","spanId":"ABCDEF0123456789"}"#,
    ));
    let mixed = traces(&span_at_depth(
        r#"{"traceId":"abcdef0123456789ABCDEF0123456789","spanId":"abcdef0123456789"}"#,
    ));
    assert_eq!(upper, mixed);
    let span = &upper.resource_spans[0].scope_spans[1].spans[3];
    assert_eq!(span.trace_id, id("abcdef0123456789abcdef0123456789"));
    assert_eq!(span.span_id, id("abcdef0123456789"));

    let empty = traces(&span_at_depth(
        r#"{"traceId":"","spanId":"","parentSpanId":""}"#,
    ));
    assert_eq!(
        empty.resource_spans[0].scope_spans[1].spans[3],
        Span::default()
    );
}

// ---------------------------------------------------------------------------
// Schema invariants.

#[test]
fn schema_fields_are_in_prost_encoding_order() {
    for message in schema::ALL_MESSAGES {
        // Prost encodes fields sorted by tag, a oneof as one field at its
        // smallest tag; the table must follow the same order.
        let sort_key = |field: &schema::FieldDesc| match field.label {
            Label::Oneof(group) => message
                .fields
                .iter()
                .filter(|other| other.label == Label::Oneof(group))
                .map(|other| other.number)
                .min()
                .unwrap_or(field.number),
            _ => field.number,
        };
        let keys: Vec<u32> = message.fields.iter().map(sort_key).collect();
        assert!(
            keys.windows(2).all(|pair| pair[0] <= pair[1]),
            "{} fields out of order: {keys:?}",
            message.name
        );
        let mut numbers = HashSet::new();
        let mut names = HashSet::new();
        for field in message.fields {
            assert!(
                numbers.insert(field.number),
                "{}: duplicate number",
                message.name
            );
            assert!(
                names.insert(field.json_name),
                "{}: duplicate name",
                message.name
            );
            assert_eq!(
                to_snake_case(field.json_name),
                field.proto_name,
                "{}.{}",
                message.name,
                field.json_name
            );
        }
    }
}

fn to_snake_case(camel: &str) -> String {
    let mut snake = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            snake.push('_');
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

// ---------------------------------------------------------------------------
// 2. Property tests: prost struct → OTLP/JSON (rendered by the test-only
// renderer below, in randomly chosen styles) → transcoder → must equal
// prost's own encoding byte for byte, and decode back to the original.

/// The liberties the renderer takes, chosen at random per case.
#[derive(Debug, Clone)]
struct Style {
    snake_case: bool,
    ints_as_numbers: bool,
    doubles_as_strings: bool,
    enum_names: bool,
    /// Render implicit-presence defaults explicitly and absent optionals as `null`.
    emit_defaults: bool,
    upper_hex: bool,
    url_safe_base64: bool,
    /// Add unknown fields to every object.
    unknown_fields: bool,
}

fn style_strategy() -> impl Strategy<Value = Style> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                snake_case,
                ints_as_numbers,
                doubles_as_strings,
                enum_names,
                emit_defaults,
                upper_hex,
                url_safe_base64,
                unknown_fields,
            )| Style {
                snake_case,
                ints_as_numbers,
                doubles_as_strings,
                enum_names,
                emit_defaults,
                upper_hex,
                url_safe_base64,
                unknown_fields,
            },
        )
}

/// Builds one JSON object following a [`Style`].
struct Obj<'s> {
    style: &'s Style,
    map: Map<String, Value>,
}

impl<'s> Obj<'s> {
    fn new(style: &'s Style) -> Self {
        let mut map = Map::new();
        if style.unknown_fields {
            map.insert(
                "x-unknown".to_owned(),
                json!({"nested": [1, {"deep": null}]}),
            );
        }
        Obj { style, map }
    }

    fn insert(&mut self, camel: &str, value: Value) {
        let key = if self.style.snake_case {
            to_snake_case(camel)
        } else {
            camel.to_owned()
        };
        self.map.insert(key, value);
    }

    /// An implicit-presence field: omitted when default (unless the style
    /// says to render defaults).
    fn scalar(mut self, camel: &str, value: Value, is_default: bool) -> Self {
        if !is_default || self.style.emit_defaults {
            self.insert(camel, value);
        }
        self
    }

    /// An explicit-presence field (message, optional scalar, oneof member).
    fn option(mut self, camel: &str, value: Option<Value>) -> Self {
        match value {
            Some(value) => self.insert(camel, value),
            None if self.style.emit_defaults => self.insert(camel, Value::Null),
            None => {}
        }
        self
    }

    fn list<T>(self, camel: &str, items: &[T], render: impl Fn(&T) -> Value) -> Self {
        let values = items.iter().map(render).collect();
        self.scalar(camel, Value::Array(values), items.is_empty())
    }

    fn string(self, camel: &str, value: &str) -> Self {
        self.scalar(camel, json!(value), value.is_empty())
    }

    fn u32(self, camel: &str, value: u32) -> Self {
        let rendered = self.int(value);
        self.scalar(camel, rendered, value == 0)
    }

    fn u64(self, camel: &str, value: u64) -> Self {
        let rendered = self.int(value);
        self.scalar(camel, rendered, value == 0)
    }

    fn f64(self, camel: &str, value: f64) -> Self {
        let rendered = self.double(value);
        self.scalar(camel, rendered, value == 0.0)
    }

    fn id(self, camel: &str, bytes: &[u8]) -> Self {
        let rendered = if self.style.upper_hex {
            hex::encode_upper(bytes)
        } else {
            hex::encode(bytes)
        };
        self.scalar(camel, json!(rendered), bytes.is_empty())
    }

    fn enumeration(self, camel: &str, value: i32, name: Option<&str>) -> Self {
        let rendered = match name {
            Some(name) if self.style.enum_names => json!(name),
            _ => json!(value),
        };
        self.scalar(camel, rendered, value == 0)
    }

    fn int<T: ToString + Into<serde_json::Number>>(&self, value: T) -> Value {
        if self.style.ints_as_numbers {
            Value::Number(value.into())
        } else {
            Value::String(value.to_string())
        }
    }

    fn double(&self, value: f64) -> Value {
        render_double(self.style, value)
    }

    fn done(self) -> Value {
        Value::Object(self.map)
    }
}

fn render_double(style: &Style, value: f64) -> Value {
    if value.is_nan() {
        json!("NaN")
    } else if value == f64::INFINITY {
        json!("Infinity")
    } else if value == f64::NEG_INFINITY {
        json!("-Infinity")
    } else if style.doubles_as_strings {
        json!(value.to_string())
    } else {
        json!(value)
    }
}

fn render_any_value(style: &Style, value: &AnyValue) -> Value {
    let obj = Obj::new(style);
    let Some(value) = &value.value else {
        return obj.done();
    };
    match value {
        any_value::Value::StringValue(s) => obj.option("stringValue", Some(json!(s))),
        any_value::Value::BoolValue(b) => obj.option("boolValue", Some(json!(b))),
        any_value::Value::IntValue(i) => {
            let rendered = obj.int(*i);
            obj.option("intValue", Some(rendered))
        }
        any_value::Value::DoubleValue(d) => {
            let rendered = obj.double(*d);
            obj.option("doubleValue", Some(rendered))
        }
        any_value::Value::ArrayValue(array) => {
            let values = Obj::new(style)
                .list("values", &array.values, |v| render_any_value(style, v))
                .done();
            obj.option("arrayValue", Some(values))
        }
        any_value::Value::KvlistValue(list) => {
            let values = Obj::new(style)
                .list("values", &list.values, |kv| render_key_value(style, kv))
                .done();
            obj.option("kvlistValue", Some(values))
        }
        any_value::Value::BytesValue(bytes) => {
            let rendered = if style.url_safe_base64 {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            } else {
                base64::engine::general_purpose::STANDARD.encode(bytes)
            };
            obj.option("bytesValue", Some(json!(rendered)))
        }
        any_value::Value::StringValueStrindex(i) => {
            obj.option("stringValueStrindex", Some(json!(i)))
        }
    }
    .done()
}

fn render_key_value(style: &Style, kv: &KeyValue) -> Value {
    let obj = Obj::new(style).string("key", &kv.key).option(
        "value",
        kv.value.as_ref().map(|v| render_any_value(style, v)),
    );
    let key_strindex = obj.int(i64::from(kv.key_strindex));
    obj.scalar("keyStrindex", key_strindex, kv.key_strindex == 0)
        .done()
}

fn render_attributes<'s>(obj: Obj<'s>, camel: &str, attributes: &[KeyValue]) -> Obj<'s> {
    let style = obj.style;
    obj.list(camel, attributes, |kv| render_key_value(style, kv))
}

fn render_resource(style: &Style, resource: &Resource) -> Value {
    let obj = render_attributes(Obj::new(style), "attributes", &resource.attributes)
        .u32("droppedAttributesCount", resource.dropped_attributes_count);
    obj.list("entityRefs", &resource.entity_refs, |entity| {
        Obj::new(style)
            .string("schemaUrl", &entity.schema_url)
            .string("type", &entity.r#type)
            .list("idKeys", &entity.id_keys, |k| json!(k))
            .list("descriptionKeys", &entity.description_keys, |k| json!(k))
            .done()
    })
    .done()
}

fn render_scope(style: &Style, scope: &InstrumentationScope) -> Value {
    let obj = Obj::new(style)
        .string("name", &scope.name)
        .string("version", &scope.version);
    render_attributes(obj, "attributes", &scope.attributes)
        .u32("droppedAttributesCount", scope.dropped_attributes_count)
        .done()
}

fn render_span(style: &Style, span: &Span) -> Value {
    let kind_name = span::SpanKind::try_from(span.kind)
        .ok()
        .map(|k| k.as_str_name());
    let obj = Obj::new(style)
        .id("traceId", &span.trace_id)
        .id("spanId", &span.span_id)
        .string("traceState", &span.trace_state)
        .id("parentSpanId", &span.parent_span_id)
        .u32("flags", span.flags)
        .string("name", &span.name)
        .enumeration("kind", span.kind, kind_name)
        .u64("startTimeUnixNano", span.start_time_unix_nano)
        .u64("endTimeUnixNano", span.end_time_unix_nano);
    render_attributes(obj, "attributes", &span.attributes)
        .u32("droppedAttributesCount", span.dropped_attributes_count)
        .list("events", &span.events, |event| {
            let obj = Obj::new(style)
                .u64("timeUnixNano", event.time_unix_nano)
                .string("name", &event.name);
            render_attributes(obj, "attributes", &event.attributes)
                .u32("droppedAttributesCount", event.dropped_attributes_count)
                .done()
        })
        .u32("droppedEventsCount", span.dropped_events_count)
        .list("links", &span.links, |link| {
            let obj = Obj::new(style)
                .id("traceId", &link.trace_id)
                .id("spanId", &link.span_id)
                .string("traceState", &link.trace_state);
            render_attributes(obj, "attributes", &link.attributes)
                .u32("droppedAttributesCount", link.dropped_attributes_count)
                .u32("flags", link.flags)
                .done()
        })
        .u32("droppedLinksCount", span.dropped_links_count)
        .option(
            "status",
            span.status.as_ref().map(|status| {
                let code_name = status::StatusCode::try_from(status.code)
                    .ok()
                    .map(|c| c.as_str_name());
                Obj::new(style)
                    .string("message", &status.message)
                    .enumeration("code", status.code, code_name)
                    .done()
            }),
        )
        .done()
}

fn render_trace_request(style: &Style, request: &ExportTraceServiceRequest) -> Value {
    Obj::new(style)
        .list("resourceSpans", &request.resource_spans, |rs| {
            Obj::new(style)
                .option(
                    "resource",
                    rs.resource.as_ref().map(|r| render_resource(style, r)),
                )
                .list("scopeSpans", &rs.scope_spans, |ss| {
                    Obj::new(style)
                        .option("scope", ss.scope.as_ref().map(|s| render_scope(style, s)))
                        .list("spans", &ss.spans, |span| render_span(style, span))
                        .string("schemaUrl", &ss.schema_url)
                        .done()
                })
                .string("schemaUrl", &rs.schema_url)
                .done()
        })
        .done()
}

fn render_log_record(style: &Style, record: &LogRecord) -> Value {
    let severity_name = SeverityNumber::try_from(record.severity_number)
        .ok()
        .map(|s| s.as_str_name());
    let obj = Obj::new(style)
        .u64("timeUnixNano", record.time_unix_nano)
        .u64("observedTimeUnixNano", record.observed_time_unix_nano)
        .enumeration("severityNumber", record.severity_number, severity_name)
        .string("severityText", &record.severity_text)
        .option(
            "body",
            record.body.as_ref().map(|b| render_any_value(style, b)),
        );
    render_attributes(obj, "attributes", &record.attributes)
        .u32("droppedAttributesCount", record.dropped_attributes_count)
        .u32("flags", record.flags)
        .id("traceId", &record.trace_id)
        .id("spanId", &record.span_id)
        .string("eventName", &record.event_name)
        .done()
}

fn render_logs_request(style: &Style, request: &ExportLogsServiceRequest) -> Value {
    Obj::new(style)
        .list("resourceLogs", &request.resource_logs, |rl| {
            Obj::new(style)
                .option(
                    "resource",
                    rl.resource.as_ref().map(|r| render_resource(style, r)),
                )
                .list("scopeLogs", &rl.scope_logs, |sl| {
                    Obj::new(style)
                        .option("scope", sl.scope.as_ref().map(|s| render_scope(style, s)))
                        .list("logRecords", &sl.log_records, |r| {
                            render_log_record(style, r)
                        })
                        .string("schemaUrl", &sl.schema_url)
                        .done()
                })
                .string("schemaUrl", &rl.schema_url)
                .done()
        })
        .done()
}

fn render_exemplar(style: &Style, exemplar: &Exemplar) -> Value {
    let obj = Obj::new(style).u64("timeUnixNano", exemplar.time_unix_nano);
    let obj = match exemplar.value {
        Some(exemplar::Value::AsDouble(d)) => {
            let rendered = obj.double(d);
            obj.option("asDouble", Some(rendered))
        }
        Some(exemplar::Value::AsInt(i)) => {
            let rendered = obj.int(i);
            obj.option("asInt", Some(rendered))
        }
        None => obj.option("asInt", None),
    };
    let obj = obj
        .id("spanId", &exemplar.span_id)
        .id("traceId", &exemplar.trace_id);
    render_attributes(obj, "filteredAttributes", &exemplar.filtered_attributes).done()
}

fn render_number_data_point(style: &Style, point: &NumberDataPoint) -> Value {
    let obj = Obj::new(style)
        .u64("startTimeUnixNano", point.start_time_unix_nano)
        .u64("timeUnixNano", point.time_unix_nano);
    let obj = match point.value {
        Some(number_data_point::Value::AsDouble(d)) => {
            let rendered = obj.double(d);
            obj.option("asDouble", Some(rendered))
        }
        Some(number_data_point::Value::AsInt(i)) => {
            let rendered = obj.int(i);
            obj.option("asInt", Some(rendered))
        }
        None => obj.option("asDouble", None),
    };
    let obj = obj.list("exemplars", &point.exemplars, |e| render_exemplar(style, e));
    render_attributes(obj, "attributes", &point.attributes)
        .u32("flags", point.flags)
        .done()
}

fn render_histogram_data_point(style: &Style, point: &HistogramDataPoint) -> Value {
    let obj = Obj::new(style)
        .u64("startTimeUnixNano", point.start_time_unix_nano)
        .u64("timeUnixNano", point.time_unix_nano)
        .u64("count", point.count);
    let sum = point.sum.map(|v| obj.double(v));
    let min = point.min.map(|v| obj.double(v));
    let max = point.max.map(|v| obj.double(v));
    let obj = obj
        .option("sum", sum)
        .list("bucketCounts", &point.bucket_counts, |c| {
            if style.ints_as_numbers {
                json!(c)
            } else {
                json!(c.to_string())
            }
        })
        .list("explicitBounds", &point.explicit_bounds, |b| {
            render_double(style, *b)
        })
        .list("exemplars", &point.exemplars, |e| render_exemplar(style, e));
    render_attributes(obj, "attributes", &point.attributes)
        .u32("flags", point.flags)
        .option("min", min)
        .option("max", max)
        .done()
}

fn render_buckets(style: &Style, buckets: &exponential_histogram_data_point::Buckets) -> Value {
    let obj = Obj::new(style);
    let offset = obj.int(i64::from(buckets.offset));
    obj.scalar("offset", offset, buckets.offset == 0)
        .list("bucketCounts", &buckets.bucket_counts, |c| json!(c))
        .done()
}

fn render_exponential_histogram_data_point(
    style: &Style,
    point: &ExponentialHistogramDataPoint,
) -> Value {
    let obj = render_attributes(Obj::new(style), "attributes", &point.attributes)
        .u64("startTimeUnixNano", point.start_time_unix_nano)
        .u64("timeUnixNano", point.time_unix_nano)
        .u64("count", point.count);
    let sum = point.sum.map(|v| obj.double(v));
    let min = point.min.map(|v| obj.double(v));
    let max = point.max.map(|v| obj.double(v));
    let scale = obj.int(i64::from(point.scale));
    obj.option("sum", sum)
        .scalar("scale", scale, point.scale == 0)
        .u64("zeroCount", point.zero_count)
        .option(
            "positive",
            point.positive.as_ref().map(|b| render_buckets(style, b)),
        )
        .option(
            "negative",
            point.negative.as_ref().map(|b| render_buckets(style, b)),
        )
        .u32("flags", point.flags)
        .list("exemplars", &point.exemplars, |e| render_exemplar(style, e))
        .option("min", min)
        .option("max", max)
        .f64("zeroThreshold", point.zero_threshold)
        .done()
}

fn render_summary_data_point(style: &Style, point: &SummaryDataPoint) -> Value {
    let obj = Obj::new(style)
        .u64("startTimeUnixNano", point.start_time_unix_nano)
        .u64("timeUnixNano", point.time_unix_nano)
        .u64("count", point.count)
        .f64("sum", point.sum)
        .list("quantileValues", &point.quantile_values, |q| {
            Obj::new(style)
                .f64("quantile", q.quantile)
                .f64("value", q.value)
                .done()
        });
    render_attributes(obj, "attributes", &point.attributes)
        .u32("flags", point.flags)
        .done()
}

fn render_temporality<'s>(obj: Obj<'s>, value: i32) -> Obj<'s> {
    let name = AggregationTemporality::try_from(value)
        .ok()
        .map(|t| t.as_str_name());
    obj.enumeration("aggregationTemporality", value, name)
}

fn render_metric(style: &Style, metric: &Metric) -> Value {
    let obj = Obj::new(style)
        .string("name", &metric.name)
        .string("description", &metric.description)
        .string("unit", &metric.unit);
    let obj = match &metric.data {
        None => obj.option("gauge", None),
        Some(metric::Data::Gauge(gauge)) => {
            let data = Obj::new(style)
                .list("dataPoints", &gauge.data_points, |p| {
                    render_number_data_point(style, p)
                })
                .done();
            obj.option("gauge", Some(data))
        }
        Some(metric::Data::Sum(sum)) => {
            let data = Obj::new(style).list("dataPoints", &sum.data_points, |p| {
                render_number_data_point(style, p)
            });
            let data = render_temporality(data, sum.aggregation_temporality);
            let data = data.scalar("isMonotonic", json!(sum.is_monotonic), !sum.is_monotonic);
            obj.option("sum", Some(data.done()))
        }
        Some(metric::Data::Histogram(histogram)) => {
            let data = Obj::new(style).list("dataPoints", &histogram.data_points, |p| {
                render_histogram_data_point(style, p)
            });
            let data = render_temporality(data, histogram.aggregation_temporality);
            obj.option("histogram", Some(data.done()))
        }
        Some(metric::Data::ExponentialHistogram(histogram)) => {
            let data = Obj::new(style).list("dataPoints", &histogram.data_points, |p| {
                render_exponential_histogram_data_point(style, p)
            });
            let data = render_temporality(data, histogram.aggregation_temporality);
            obj.option("exponentialHistogram", Some(data.done()))
        }
        Some(metric::Data::Summary(summary)) => {
            let data = Obj::new(style)
                .list("dataPoints", &summary.data_points, |p| {
                    render_summary_data_point(style, p)
                })
                .done();
            obj.option("summary", Some(data))
        }
    };
    render_attributes(obj, "metadata", &metric.metadata).done()
}

fn render_metrics_request(style: &Style, request: &ExportMetricsServiceRequest) -> Value {
    Obj::new(style)
        .list("resourceMetrics", &request.resource_metrics, |rm| {
            Obj::new(style)
                .option(
                    "resource",
                    rm.resource.as_ref().map(|r| render_resource(style, r)),
                )
                .list("scopeMetrics", &rm.scope_metrics, |sm| {
                    Obj::new(style)
                        .option("scope", sm.scope.as_ref().map(|s| render_scope(style, s)))
                        .list("metrics", &sm.metrics, |m| render_metric(style, m))
                        .string("schemaUrl", &sm.schema_url)
                        .done()
                })
                .string("schemaUrl", &rm.schema_url)
                .done()
        })
        .done()
}

// Strategies. Numbers are biased towards zero so default-skipping is
// exercised as much as large values.

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z.]{1,6}", ".{0,4}"]
}

fn u32s() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 1u32..200, any::<u32>()]
}

fn u64s() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), any::<u64>()]
}

fn i64s() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), -5i64..5, any::<i64>()]
}

/// Any double except NaN (which `PartialEq` cannot compare), with the
/// special values well represented.
fn doubles() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        any::<f64>().prop_filter("NaN is not comparable", |f| !f.is_nan()),
    ]
}

fn ids(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), vec(any::<u8>(), len)]
}

fn enum_values(max_known: i32) -> impl Strategy<Value = i32> {
    prop_oneof![0..=max_known, Just(0), -3i32..100]
}

fn any_value_strategy() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        Just(None),
        text().prop_map(|s| Some(any_value::Value::StringValue(s))),
        any::<bool>().prop_map(|b| Some(any_value::Value::BoolValue(b))),
        i64s().prop_map(|i| Some(any_value::Value::IntValue(i))),
        doubles().prop_map(|d| Some(any_value::Value::DoubleValue(d))),
        vec(any::<u8>(), 0..6).prop_map(|b| Some(any_value::Value::BytesValue(b))),
        (-2i32..3).prop_map(|i| Some(any_value::Value::StringValueStrindex(i))),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(|values| AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
            }),
            vec((text(), option::of(inner)), 0..3).prop_map(|pairs| AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: pairs
                        .into_iter()
                        .map(|(key, value)| KeyValue {
                            key,
                            value,
                            key_strindex: 0,
                        })
                        .collect(),
                })),
            }),
        ]
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    vec(
        (
            text(),
            option::of(any_value_strategy()),
            prop_oneof![Just(0), -2i32..3],
        )
            .prop_map(|(key, value, key_strindex)| KeyValue {
                key,
                value,
                key_strindex,
            }),
        0..3,
    )
}

fn resource() -> impl Strategy<Value = Resource> {
    let entity_ref = (text(), text(), vec(text(), 0..3), vec(text(), 0..2)).prop_map(
        |(schema_url, r#type, id_keys, description_keys)| EntityRef {
            schema_url,
            r#type,
            id_keys,
            description_keys,
        },
    );
    (attributes(), u32s(), vec(entity_ref, 0..2)).prop_map(
        |(attributes, dropped_attributes_count, entity_refs)| Resource {
            attributes,
            dropped_attributes_count,
            entity_refs,
        },
    )
}

fn scope() -> impl Strategy<Value = InstrumentationScope> {
    (text(), text(), attributes(), u32s()).prop_map(
        |(name, version, attributes, dropped_attributes_count)| InstrumentationScope {
            name,
            version,
            attributes,
            dropped_attributes_count,
        },
    )
}

fn span_strategy() -> impl Strategy<Value = Span> {
    let event = (u64s(), text(), attributes(), u32s()).prop_map(
        |(time_unix_nano, name, attributes, dropped_attributes_count)| span::Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count,
        },
    );
    let link = (ids(16), ids(8), text(), attributes(), u32s(), u32s()).prop_map(
        |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| {
            span::Link {
                trace_id,
                span_id,
                trace_state,
                attributes,
                dropped_attributes_count,
                flags,
            }
        },
    );
    let status = (text(), enum_values(2)).prop_map(|(message, code)| Status { message, code });
    (
        (
            ids(16),
            ids(8),
            text(),
            ids(8),
            u32s(),
            text(),
            enum_values(5),
        ),
        (u64s(), u64s(), attributes(), u32s()),
        (
            vec(event, 0..2),
            u32s(),
            vec(link, 0..2),
            u32s(),
            option::of(status),
        ),
    )
        .prop_map(
            |(
                (trace_id, span_id, trace_state, parent_span_id, flags, name, kind),
                (start_time_unix_nano, end_time_unix_nano, attributes, dropped_attributes_count),
                (events, dropped_events_count, links, dropped_links_count, status),
            )| Span {
                trace_id,
                span_id,
                trace_state,
                parent_span_id,
                flags,
                name,
                kind,
                start_time_unix_nano,
                end_time_unix_nano,
                attributes,
                dropped_attributes_count,
                events,
                dropped_events_count,
                links,
                dropped_links_count,
                status,
            },
        )
}

fn trace_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope_spans = (option::of(scope()), vec(span_strategy(), 0..3), text()).prop_map(
        |(scope, spans, schema_url)| ScopeSpans {
            scope,
            spans,
            schema_url,
        },
    );
    let resource_spans = (option::of(resource()), vec(scope_spans, 0..3), text()).prop_map(
        |(resource, scope_spans, schema_url)| ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        },
    );
    vec(resource_spans, 0..3)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

fn log_record() -> impl Strategy<Value = LogRecord> {
    (
        (
            u64s(),
            u64s(),
            enum_values(24),
            text(),
            option::of(any_value_strategy()),
        ),
        (attributes(), u32s(), u32s(), ids(16), ids(8), text()),
    )
        .prop_map(
            |(
                (time_unix_nano, observed_time_unix_nano, severity_number, severity_text, body),
                (attributes, dropped_attributes_count, flags, trace_id, span_id, event_name),
            )| LogRecord {
                time_unix_nano,
                observed_time_unix_nano,
                severity_number,
                severity_text,
                body,
                attributes,
                dropped_attributes_count,
                flags,
                trace_id,
                span_id,
                event_name,
            },
        )
}

fn logs_request() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let scope_logs = (option::of(scope()), vec(log_record(), 0..3), text()).prop_map(
        |(scope, log_records, schema_url)| ScopeLogs {
            scope,
            log_records,
            schema_url,
        },
    );
    let resource_logs = (option::of(resource()), vec(scope_logs, 0..3), text()).prop_map(
        |(resource, scope_logs, schema_url)| ResourceLogs {
            resource,
            scope_logs,
            schema_url,
        },
    );
    vec(resource_logs, 0..3).prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
}

fn exemplar_strategy() -> impl Strategy<Value = Exemplar> {
    let value = option::of(prop_oneof![
        doubles().prop_map(exemplar::Value::AsDouble),
        i64s().prop_map(exemplar::Value::AsInt),
    ]);
    (attributes(), u64s(), ids(8), ids(16), value).prop_map(
        |(filtered_attributes, time_unix_nano, span_id, trace_id, value)| Exemplar {
            filtered_attributes,
            time_unix_nano,
            span_id,
            trace_id,
            value,
        },
    )
}

fn number_data_point() -> impl Strategy<Value = NumberDataPoint> {
    let value = option::of(prop_oneof![
        doubles().prop_map(number_data_point::Value::AsDouble),
        i64s().prop_map(number_data_point::Value::AsInt),
    ]);
    (
        attributes(),
        u64s(),
        u64s(),
        vec(exemplar_strategy(), 0..2),
        u32s(),
        value,
    )
        .prop_map(
            |(attributes, start_time_unix_nano, time_unix_nano, exemplars, flags, value)| {
                NumberDataPoint {
                    attributes,
                    start_time_unix_nano,
                    time_unix_nano,
                    exemplars,
                    flags,
                    value,
                }
            },
        )
}

fn histogram_data_point() -> impl Strategy<Value = HistogramDataPoint> {
    (
        (attributes(), u64s(), u64s(), u64s(), option::of(doubles())),
        (
            vec(u64s(), 0..4),
            vec(doubles(), 0..3),
            vec(exemplar_strategy(), 0..2),
        ),
        (u32s(), option::of(doubles()), option::of(doubles())),
    )
        .prop_map(
            |(
                (attributes, start_time_unix_nano, time_unix_nano, count, sum),
                (bucket_counts, explicit_bounds, exemplars),
                (flags, min, max),
            )| HistogramDataPoint {
                attributes,
                start_time_unix_nano,
                time_unix_nano,
                count,
                sum,
                bucket_counts,
                explicit_bounds,
                exemplars,
                flags,
                min,
                max,
            },
        )
}

fn exponential_histogram_data_point() -> impl Strategy<Value = ExponentialHistogramDataPoint> {
    let buckets = || {
        (prop_oneof![Just(0), any::<i32>()], vec(u64s(), 0..4)).prop_map(
            |(offset, bucket_counts)| exponential_histogram_data_point::Buckets {
                offset,
                bucket_counts,
            },
        )
    };
    (
        (attributes(), u64s(), u64s(), u64s(), option::of(doubles())),
        (
            prop_oneof![Just(0), any::<i32>()],
            u64s(),
            option::of(buckets()),
            option::of(buckets()),
        ),
        (
            u32s(),
            vec(exemplar_strategy(), 0..2),
            option::of(doubles()),
            option::of(doubles()),
            doubles(),
        ),
    )
        .prop_map(
            |(
                (attributes, start_time_unix_nano, time_unix_nano, count, sum),
                (scale, zero_count, positive, negative),
                (flags, exemplars, min, max, zero_threshold),
            )| ExponentialHistogramDataPoint {
                attributes,
                start_time_unix_nano,
                time_unix_nano,
                count,
                sum,
                scale,
                zero_count,
                positive,
                negative,
                flags,
                exemplars,
                min,
                max,
                zero_threshold,
            },
        )
}

fn summary_data_point() -> impl Strategy<Value = SummaryDataPoint> {
    let quantile = (doubles(), doubles())
        .prop_map(|(quantile, value)| summary_data_point::ValueAtQuantile { quantile, value });
    (
        attributes(),
        u64s(),
        u64s(),
        u64s(),
        doubles(),
        vec(quantile, 0..3),
        u32s(),
    )
        .prop_map(
            |(
                attributes,
                start_time_unix_nano,
                time_unix_nano,
                count,
                sum,
                quantile_values,
                flags,
            )| {
                SummaryDataPoint {
                    attributes,
                    start_time_unix_nano,
                    time_unix_nano,
                    count,
                    sum,
                    quantile_values,
                    flags,
                }
            },
        )
}

fn metric_strategy() -> impl Strategy<Value = Metric> {
    let temporality = || enum_values(2);
    let data = option::of(prop_oneof![
        vec(number_data_point(), 0..3)
            .prop_map(|data_points| metric::Data::Gauge(Gauge { data_points })),
        (vec(number_data_point(), 0..3), temporality(), any::<bool>()).prop_map(
            |(data_points, aggregation_temporality, is_monotonic)| metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality,
                is_monotonic,
            })
        ),
        (vec(histogram_data_point(), 0..3), temporality()).prop_map(
            |(data_points, aggregation_temporality)| metric::Data::Histogram(Histogram {
                data_points,
                aggregation_temporality,
            })
        ),
        (vec(exponential_histogram_data_point(), 0..3), temporality()).prop_map(
            |(data_points, aggregation_temporality)| {
                metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points,
                    aggregation_temporality,
                })
            }
        ),
        vec(summary_data_point(), 0..3)
            .prop_map(|data_points| metric::Data::Summary(Summary { data_points })),
    ]);
    (text(), text(), text(), attributes(), data).prop_map(
        |(name, description, unit, metadata, data)| Metric {
            name,
            description,
            unit,
            metadata,
            data,
        },
    )
}

fn metrics_request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    let scope_metrics = (option::of(scope()), vec(metric_strategy(), 0..3), text()).prop_map(
        |(scope, metrics, schema_url)| ScopeMetrics {
            scope,
            metrics,
            schema_url,
        },
    );
    let resource_metrics = (option::of(resource()), vec(scope_metrics, 0..2), text()).prop_map(
        |(resource, scope_metrics, schema_url)| ResourceMetrics {
            resource,
            scope_metrics,
            schema_url,
        },
    );
    vec(resource_metrics, 0..2)
        .prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
}

/// Transcodes `json` and checks the result against prost's encoding of
/// `original`, byte for byte and after decoding.
fn check_round_trip<M>(signal: Signal, json: &Value, original: &M) -> Result<(), TestCaseError>
where
    M: Message + Default + PartialEq + std::fmt::Debug,
{
    let text = json.to_string();
    let bytes = json_to_protobuf(signal, text.as_bytes())
        .map_err(|err| TestCaseError::fail(format!("{err}\njson: {text}")))?;
    prop_assert_eq!(&bytes, &original.encode_to_vec(), "json: {}", text);
    let decoded =
        M::decode(bytes.as_slice()).map_err(|err| TestCaseError::fail(format!("decode: {err}")))?;
    prop_assert_eq!(&decoded, original);
    Ok(())
}

proptest! {
    // No failure persistence: a regressions file would land in the source tree.
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn traces_round_trip(request in trace_request(), style in style_strategy()) {
        check_round_trip(Signal::Traces, &render_trace_request(&style, &request), &request)?;
    }

    #[test]
    fn logs_round_trip(request in logs_request(), style in style_strategy()) {
        check_round_trip(Signal::Logs, &render_logs_request(&style, &request), &request)?;
    }

    #[test]
    fn metrics_round_trip(request in metrics_request(), style in style_strategy()) {
        check_round_trip(Signal::Metrics, &render_metrics_request(&style, &request), &request)?;
    }

    /// Arbitrary bytes never panic; they either transcode or fail cleanly.
    #[test]
    fn arbitrary_input_never_panics(body in vec(any::<u8>(), 0..64)) {
        for signal in Signal::ALL {
            let _ = json_to_protobuf(signal, &body);
        }
    }

    /// Arbitrary JSON values in arbitrary places never panic.
    #[test]
    fn arbitrary_json_never_panics(value in arbitrary_json(), key_index in 0usize..8) {
        let keys = ["resourceSpans", "resourceLogs", "resourceMetrics", "scopeSpans",
            "body", "value", "attributes", "dataPoints"];
        let key = keys[key_index];
        let documents = [
            json!({ key: value.clone() }),
            json!({ "resourceSpans": [{ "scopeSpans": [{ "spans": [{ "attributes": [{ "key": "k", "value": { key: value.clone() } }] }] }] }] }),
            json!({ "resourceLogs": [{ "scopeLogs": [{ "logRecords": [{ "body": value.clone() }] }] }] }),
            json!({ "resourceMetrics": [{ "scopeMetrics": [{ "metrics": [{ "histogram": { "dataPoints": [{ key: value.clone(), "bucketCounts": value.clone(), "sum": value.clone() }] } }] }] }] }),
        ];
        for document in documents {
            let text = document.to_string();
            for signal in Signal::ALL {
                let _ = json_to_protobuf(signal, text.as_bytes());
            }
        }
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,6}".prop_map(Value::String),
        Just(json!("NaN")),
        Just(json!("00112233445566778899aabbccddeeff")),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(
                (
                    prop_oneof![
                        Just("stringValue".to_owned()),
                        Just("intValue".to_owned()),
                        Just("arrayValue".to_owned()),
                        Just("kvlistValue".to_owned()),
                        Just("values".to_owned()),
                        Just("key".to_owned()),
                        Just("value".to_owned()),
                        "[a-z]{1,4}",
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// protobuf → OTLP/JSON → protobuf gives back the very bytes prost wrote, for every signal.
    #[test]
    fn protobuf_to_json_round_trips_through_the_transcoder_byte_for_byte(
        traces in trace_request(),
        metrics in metrics_request(),
        logs in logs_request(),
    ) {
        for (signal, bytes) in [
            (Signal::Traces, traces.encode_to_vec()),
            (Signal::Metrics, metrics.encode_to_vec()),
            (Signal::Logs, logs.encode_to_vec()),
        ] {
            let json = super::protobuf_to_json(signal, &bytes).unwrap();
            let back = json_to_protobuf(signal, &json).unwrap();
            prop_assert_eq!(back, bytes);
        }
    }
}

#[test]
fn protobuf_to_json_writes_the_otlp_json_forms() {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![0xab; 16],
                    span_id: vec![0x01; 8],
                    name: "GET /".into(),
                    kind: 2,
                    start_time_unix_nano: 1_544_712_660_300_000_000,
                    attributes: vec![KeyValue {
                        key: "n".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::IntValue(-7)),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let json: Value = serde_json::from_slice(
        &super::protobuf_to_json(Signal::Traces, &request.encode_to_vec()).unwrap(),
    )
    .unwrap();
    let span = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], json!("abababababababababababababababab"));
    assert_eq!(span["spanId"], json!("0101010101010101"));
    assert_eq!(span["kind"], json!(2));
    assert_eq!(span["startTimeUnixNano"], json!("1544712660300000000"));
    assert_eq!(span["attributes"][0]["value"]["intValue"], json!("-7"));
}
