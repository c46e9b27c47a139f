//! The `filter`, `attributes` and `transform` processors through the real binary: health-check spans and
//! DEBUG logs are dropped by OTTL conditions and counted under the Collector's metric names, and
//! attribute actions apply only to the items their `include` selects, and `transform`
//! normalizes ids in server span names.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};

use crate::support::{Ports, Sink, Sluice, attr, kv, string};

fn span(id: u8, name: &str, kind: span::SpanKind, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![id; 8],
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_100_000_000,
        attributes,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_drops_health_checks_and_debug_logs_and_attributes_acts_where_included() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let config = format!(
        "{common}processors:\n  filter:\n    error_mode: ignore\n    traces:\n      span:\n        - 'attributes[\"http.route\"] == \"/healthz\"'\n        - 'IsMatch(name, \"^GET /(ready|live)$\")'\n    logs:\n      log_record:\n        - 'severity_number < SEVERITY_NUMBER_INFO'\n  attributes:\n    include:\n      match_type: strict\n      span_kinds: [SPAN_KIND_SERVER]\n    actions:\n      - {{key: tier, value: web, action: insert}}\n      - {{pattern: '^http\\.request\\.header\\.', action: delete}}\n      - {{key: http.route, pattern: '^/users/(?P<user_segment>[a-z]+)$', action: extract}}\n  transform:\n    trace_statements:\n      - context: span\n        statements:\n          - 'replace_pattern(name, \"/[0-9]+(/|$)\", \"/{{id}}$1\") where kind == SPAN_KIND_SERVER'\n  batch:\n    timeout: 50ms\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{sink}\n    compression: none\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [filter, attributes, transform, batch], exporters: [otlp]}}\n    logs: {{receivers: [otlp], processors: [filter, batch], exporters: [otlp]}}\n{telemetry}",
        common = ports.common(),
        sink = sink.grpc_port,
        telemetry = ports.telemetry(),
    );
    let sluice = Sluice::start(ports, &config);
    let endpoint = format!("http://127.0.0.1:{}", ports.grpc);
    let traces = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", string("shop"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(
                        1,
                        "GET /healthz",
                        span::SpanKind::Server,
                        vec![kv("http.route", string("/healthz"))],
                    ),
                    span(2, "GET /ready", span::SpanKind::Server, vec![]),
                    span(
                        3,
                        "GET /users/profile",
                        span::SpanKind::Server,
                        vec![
                            kv("http.route", string("/users/profile")),
                            kv("http.request.header.cookie", string("session=1")),
                        ],
                    ),
                    span(
                        4,
                        "SELECT users",
                        span::SpanKind::Client,
                        vec![kv("http.request.header.x", string("kept"))],
                    ),
                    span(5, "GET /users/123/orders/9", span::SpanKind::Server, vec![]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    TraceServiceClient::connect(endpoint.clone())
        .await
        .unwrap()
        .export(traces)
        .await
        .unwrap();
    let log = |severity: i32, body: &str| LogRecord {
        time_unix_nano: 1_700_000_000_000_000_000,
        severity_number: severity,
        body: Some(AnyValue {
            value: Some(string(body)),
        }),
        ..Default::default()
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    log(5, "cache detail"),
                    log(9, "order placed"),
                    log(1, "trace detail"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    LogsServiceClient::connect(endpoint)
        .await
        .unwrap()
        .export(logs)
        .await
        .unwrap();

    sink.wait_for(Duration::from_secs(10), "3 spans and 1 log", |r| {
        r.span_count() == 3 && r.log_count() == 1
    })
    .await;
    let received = sink.snapshot();
    let spans = received.spans();
    let server = spans
        .iter()
        .find(|s| s.span_id == vec![3; 8])
        .expect("the user span");
    assert_eq!(
        server.attributes,
        vec![
            kv("http.route", string("/users/profile")),
            kv("tier", string("web")),
            kv("user_segment", string("profile")),
        ]
    );
    let client = spans
        .iter()
        .find(|s| s.span_id == vec![4; 8])
        .expect("the client span");
    assert_eq!(
        attr(&client.attributes, "http.request.header.x"),
        Some(&string("kept")),
        "not included"
    );
    assert!(attr(&client.attributes, "tier").is_none());
    let bodies: Vec<_> = received
        .logs
        .iter()
        .flat_map(|r| &r.resource_logs)
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .map(|l| l.body.clone().unwrap().value.unwrap())
        .collect();
    assert_eq!(bodies, vec![string("order placed")]);
    assert_eq!(
        sluice
            .wait_metric(
                "otelcol_processor_filter_spans_filtered{filter=\"filter\"}",
                2.0
            )
            .await,
        2.0
    );
    assert_eq!(
        sluice
            .wait_metric(
                "otelcol_processor_filter_logs_filtered{filter=\"filter\"}",
                2.0
            )
            .await,
        2.0
    );
}
