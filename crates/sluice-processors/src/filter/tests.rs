use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::trace::v1::{Span, span};

use super::*;
use crate::testing::{self, kv, s, span_names};

fn rules(config: serde_json::Value) -> Rules {
    let c: FilterConfig = serde_json::from_value(config).unwrap();
    compile("processors.filter", &c).unwrap_or_else(|p| panic!("{p:?}"))
}

fn run(rules: &Rules, batch: Batch) -> (Batch, u64) {
    let mut editor = Drop { rules, dropped: 0 };
    let out = batch.edit(&mut editor);
    (out, editor.dropped)
}

fn traces(spans: Vec<Span>) -> Batch {
    testing::traces(vec![kv("service.name", s("shop"))], spans)
}

fn named(name: &str, attributes: Vec<KeyValue>, events: Vec<span::Event>) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.into(),
        kind: span::SpanKind::Server as i32,
        attributes,
        events,
        ..Default::default()
    }
}

#[test]
fn health_checks_are_dropped_and_counted() {
    let r = rules(serde_json::json!({
        "error_mode": "ignore",
        "traces": {"span": [
            r#"attributes["http.route"] == "/healthz""#,
            r#"IsMatch(name, "^GET /(ready|live)")"#,
        ]},
    }));
    let batch = traces(vec![
        named(
            "GET /healthz",
            vec![kv("http.route", s("/healthz"))],
            vec![],
        ),
        named("GET /ready", vec![], vec![]),
        named("GET /cart", vec![kv("http.route", s("/cart"))], vec![]),
    ]);
    let (out, dropped) = run(&r, batch);
    assert_eq!(dropped, 2);
    assert_eq!(out.items(), 1);
    let request = ExportTraceServiceRequest::decode(out.data().clone()).unwrap();
    assert_eq!(
        request.resource_spans[0].scope_spans[0].spans[0].name,
        "GET /cart"
    );
    // Everything dropped: the resource goes too.
    let all = rules(serde_json::json!({"traces": {"span": ["true"]}}));
    let (out, dropped) = run(&all, traces(vec![named("a", vec![], vec![])]));
    assert_eq!((out.items(), dropped), (0, 1));
    assert!(
        out.is_empty()
            || ExportTraceServiceRequest::decode(out.data().clone())
                .unwrap()
                .resource_spans
                .is_empty()
    );
}

#[test]
fn span_events_are_dropped_from_their_spans() {
    let r = rules(serde_json::json!({"traces": {"spanevent": [
        r#"name == "cache.miss" and span.name == "GET /cart""#,
    ]}}));
    let event = |name: &str| span::Event {
        name: name.into(),
        ..Default::default()
    };
    let batch = traces(vec![
        named(
            "GET /cart",
            vec![],
            vec![event("cache.miss"), event("exception")],
        ),
        named("GET /other", vec![], vec![event("cache.miss")]),
    ]);
    let (out, _) = run(&r, batch);
    let request = ExportTraceServiceRequest::decode(out.data().clone()).unwrap();
    let spans = &request.resource_spans[0].scope_spans[0].spans;
    assert_eq!(
        spans[0]
            .events
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["exception"]
    );
    assert_eq!(spans[1].events.len(), 1);
}

#[test]
fn debug_logs_are_dropped() {
    let r = rules(serde_json::json!({"logs": {"log_record": [
        "severity_number < SEVERITY_NUMBER_INFO",
        r#"IsMatch(body, "password")"#,
    ]}}));
    let log = |severity: i32, body: &str| LogRecord {
        severity_number: severity,
        body: Some(AnyValue {
            value: Some(s(body)),
        }),
        ..Default::default()
    };
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    log(5, "debug detail"),
                    log(9, "user logged in"),
                    log(13, "password=x"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let batch = Batch::decode(Signal::Logs, request.encode_to_vec().into()).unwrap();
    let (out, dropped) = run(&r, batch);
    assert_eq!(dropped, 2);
    let request = ExportLogsServiceRequest::decode(out.data().clone()).unwrap();
    let records = &request.resource_logs[0].scope_logs[0].log_records;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].severity_number, 9);
}

#[test]
fn metrics_and_data_points_are_dropped() {
    let r = rules(serde_json::json!({"metrics": {
        "metric": [r#"name == "debug.gauge""#],
        "datapoint": [r#"attributes["env"] == "test""#],
    }}));
    let gauge = |name: &str, envs: &[&str]| Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: envs
                .iter()
                .map(|e| NumberDataPoint {
                    attributes: vec![kv("env", s(e))],
                    value: Some(number_data_point::Value::AsInt(1)),
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    gauge("debug.gauge", &["prod", "prod"]),
                    gauge("requests", &["prod", "test"]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let batch = Batch::decode(Signal::Metrics, request.encode_to_vec().into()).unwrap();
    let (out, dropped) = run(&r, batch);
    assert_eq!(dropped, 3);
    let request = ExportMetricsServiceRequest::decode(out.data().clone()).unwrap();
    let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(metrics.len(), 1, "the emptied metric goes");
    assert_eq!(metrics[0].name, "requests");
}

#[test]
fn unsupported_and_legacy_configs_are_refused_with_paths() {
    let problems = FilterFactory.check(
        "processors.filter",
        &serde_json::json!({"traces": {"span": [
            r#"attributes["a"] == "b""#,
            r#"Concat(name, "x") == "y""#,
        ]}}),
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].to_string().starts_with("error: processors.filter.traces.span[1]: `Concat(name, \"x\") == \"y\"`: the OTTL function `Concat` is not supported"),
        "{problems:?}"
    );
    let legacy = FilterFactory.check(
        "processors.filter",
        &serde_json::json!({"spans": {"include": {"match_type": "strict", "services": ["a"]}}}),
    );
    assert!(
        legacy[0]
            .to_string()
            .contains("processors.filter.spans: the legacy"),
        "{legacy:?}"
    );
    let mode = FilterFactory.check(
        "processors.filter",
        &serde_json::json!({"error_mode": "loud"}),
    );
    assert!(
        mode[0].to_string().contains("processors.filter") && mode[0].to_string().contains("`loud`"),
        "{mode:?}"
    );
}

#[test]
fn spans_are_kept_or_dropped_by_duration_and_status_message() {
    // OTTL has no `duration` path: a duration is the difference of the two timestamps.
    let r = rules(serde_json::json!({"traces": {"span": [
        "end_time_unix_nano - start_time_unix_nano < 1000000",
        r#"status.message == "ignored""#,
    ]}}));
    let timed = |name: &str, nanos: u64, message: &str| Span {
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + nanos,
        status: Some(opentelemetry_proto::tonic::trace::v1::Status {
            message: message.into(),
            code: 0,
        }),
        ..named(name, vec![], vec![])
    };
    let (out, dropped) = run(
        &r,
        traces(vec![
            timed("fast", 999_999, ""),
            timed("slow", 1_000_000, ""),
            timed("slower", 2_000_000_000, "ignored"),
            timed("slowest", 5_000_000_000, "kept"),
        ]),
    );
    assert_eq!(dropped, 2);
    assert_eq!(span_names(&out), ["slow", "slowest"]);
}

#[test]
fn arithmetic_on_attributes_overflows_to_nil_and_mixes_ints_and_doubles() {
    let r = rules(serde_json::json!({"traces": {"span": [
        r#"attributes["n"] + 1 > 5"#,
        r#"attributes["n"] - 0.5 == 2.5"#,
    ]}}));
    let int = |v: i64| AnyValue {
        value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(v)),
    };
    let with = |name: &str, value: AnyValue| {
        named(
            name,
            vec![KeyValue {
                key: "n".into(),
                value: Some(value),
                ..Default::default()
            }],
            vec![],
        )
    };
    let (out, dropped) = run(
        &r,
        traces(vec![
            with("big", int(5)),
            with("overflow", int(i64::MAX)),
            with("three", int(3)),
            with(
                "text",
                AnyValue {
                    value: Some(s("9")),
                },
            ),
            with("small", int(1)),
        ]),
    );
    assert_eq!(dropped, 2, "5 + 1 > 5 and 3 - 0.5 == 2.5");
    assert_eq!(span_names(&out), ["overflow", "text", "small"]);
}
