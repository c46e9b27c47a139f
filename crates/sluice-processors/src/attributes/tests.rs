use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};

use super::*;
use crate::testing::{kv, s};

fn rules(config: serde_json::Value) -> Rules {
    let c: AttributesConfig = serde_json::from_value(config).unwrap();
    compile("processors.attributes", &c).unwrap_or_else(|p| panic!("{p:?}"))
}

fn span(name: &str, kind: span::SpanKind, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.into(),
        kind: kind as i32,
        attributes,
        ..Default::default()
    }
}

fn traces(service: &str, spans: Vec<Span>) -> Batch {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s(service))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.http".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::decode(Signal::Traces, request.encode_to_vec().into()).unwrap()
}

fn spans_of(batch: &Batch) -> Vec<Span> {
    ExportTraceServiceRequest::decode(batch.data().clone())
        .unwrap()
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

#[test]
fn actions_apply_only_to_the_items_include_selects_and_exclude_spares() {
    let r = rules(serde_json::json!({
        "include": {"match_type": "strict", "services": ["checkout"], "span_kinds": ["SPAN_KIND_SERVER"]},
        "exclude": {"match_type": "regexp", "span_names": ["^health"]},
        "actions": [
            {"key": "tier", "value": "web", "action": "insert"},
            {"pattern": "^http\\.request\\.header\\.", "action": "delete"},
        ],
    }));
    let batch = traces(
        "checkout",
        vec![
            span(
                "GET /cart",
                span::SpanKind::Server,
                vec![kv("http.request.header.cookie", s("x"))],
            ),
            span("healthz", span::SpanKind::Server, vec![]),
            span("SELECT", span::SpanKind::Client, vec![]),
        ],
    );
    let out = spans_of(&batch.edit(&mut Apply(&r, None)));
    assert_eq!(out[0].attributes, vec![kv("tier", s("web"))]);
    assert!(out[1].attributes.is_empty(), "excluded by name");
    assert!(out[2].attributes.is_empty(), "not a server span");
    let other = traces(
        "billing",
        vec![span("GET /", span::SpanKind::Server, vec![])],
    );
    assert!(
        spans_of(&other.edit(&mut Apply(&r, None)))[0]
            .attributes
            .is_empty()
    );
}

#[test]
fn attribute_resource_and_library_conditions_follow_match_type() {
    let strict = rules(serde_json::json!({
        "include": {
            "match_type": "strict",
            "attributes": [{"key": "http.status_code", "value": 500}, {"key": "retry"}],
            "resources": [{"key": "service.name", "value": "checkout"}],
            "libraries": [{"name": "io.opentelemetry.http", "version": "1.2"}],
        },
        "actions": [{"key": "alert", "value": true, "action": "upsert"}],
    }));
    let hit = span(
        "a",
        span::SpanKind::Server,
        vec![
            kv("http.status_code", any_value::Value::IntValue(500)),
            kv("retry", any_value::Value::BoolValue(false)),
        ],
    );
    let miss = span(
        "b",
        span::SpanKind::Server,
        vec![kv("http.status_code", any_value::Value::IntValue(500))],
    );
    let out = spans_of(&traces("checkout", vec![hit, miss]).edit(&mut Apply(&strict, None)));
    assert_eq!(
        out[0].attributes.last(),
        Some(&kv("alert", any_value::Value::BoolValue(true)))
    );
    assert_eq!(out[1].attributes.len(), 1);

    let regexp = rules(serde_json::json!({
        "include": {"match_type": "regexp", "attributes": [{"key": "url.path", "value": "^/users/[0-9]+$"}]},
        "actions": [{"key": "url.path", "pattern": "^/users/(?P<user_id>[0-9]+)$", "action": "extract"}],
    }));
    let out = spans_of(
        &traces(
            "x",
            vec![span(
                "a",
                span::SpanKind::Server,
                vec![kv("url.path", s("/users/42"))],
            )],
        )
        .edit(&mut Apply(&regexp, None)),
    );
    assert_eq!(out[0].attributes[1], kv("user_id", s("42")));
}

#[test]
fn log_bodies_and_severities_select_log_records() {
    let r = rules(serde_json::json!({
        "include": {"match_type": "regexp", "log_bodies": ["^payment"], "log_severity_number": {"min": "WARN"}},
        "actions": [{"key": "team", "value": "payments", "action": "insert"}],
    }));
    let log = |body: &str, severity: i32| LogRecord {
        body: Some(AnyValue {
            value: Some(s(body)),
        }),
        severity_number: severity,
        ..Default::default()
    };
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    log("payment failed", 17),
                    log("payment ok", 9),
                    log("login", 17),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let batch = Batch::decode(Signal::Logs, request.encode_to_vec().into()).unwrap();
    let out =
        ExportLogsServiceRequest::decode(batch.edit(&mut Apply(&r, None)).data().clone()).unwrap();
    let records = &out.resource_logs[0].scope_logs[0].log_records;
    assert_eq!(records[0].attributes, vec![kv("team", s("payments"))]);
    assert!(records[1].attributes.is_empty());
    assert!(records[2].attributes.is_empty());
    assert_eq!(severity(&serde_json::json!("WARN2")), Some(14));
    assert_eq!(
        severity(&serde_json::json!("SEVERITY_NUMBER_ERROR")),
        Some(17)
    );
    assert_eq!(severity(&serde_json::json!(30)), None);
}

#[test]
fn unchanged_batches_keep_their_bytes() {
    let r = rules(serde_json::json!({"actions": [{"key": "absent", "action": "delete"}]}));
    let batch = traces(
        "x",
        vec![span("a", span::SpanKind::Server, vec![kv("k", s("v"))])],
    );
    let before = batch.data().as_ptr();
    assert_eq!(batch.edit(&mut Apply(&r, None)).data().as_ptr(), before);
}

#[test]
fn invalid_properties_are_refused_with_paths() {
    let problems = AttributesFactory.check(
        "processors.attributes",
        &serde_json::json!({
            "include": {"match_type": "fuzzy", "services": ["a"]},
            "exclude": {"match_type": "regexp"},
            "actions": [{"key": "a", "action": "delete"}],
        }),
    );
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        text[0],
        "error: processors.attributes.include.match_type: `fuzzy` is not a match type; use strict or regexp"
    );
    assert!(
        text[1].starts_with("error: processors.attributes.exclude: give at least one property"),
        "{text:?}"
    );
    // Span names mean nothing to a logs pipeline: refused when the pipeline is built.
    let component = AttributesFactory
        .build(
            "attributes",
            &serde_json::json!({
                "include": {"match_type": "strict", "span_names": ["a"]},
                "actions": [{"key": "a", "action": "delete"}],
            }),
        )
        .unwrap();
    let output = sluice_core::Output::new("attributes", Signal::Logs, Arc::new(Null));
    let err = component
        .instance(PipelineContext {
            id: "attributes".into(),
            pipeline: "logs".into(),
            signal: Signal::Logs,
            output,
            shutdown: tokio_util::sync::CancellationToken::new(),
        })
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("processors.attributes.include.span_names: does not apply to logs"),
        "{err}"
    );
}

struct Null;

#[async_trait]
impl sluice_core::Consumer for Null {
    async fn consume(&self, _batch: Batch) -> Result<(), ConsumeError> {
        Ok(())
    }
}
