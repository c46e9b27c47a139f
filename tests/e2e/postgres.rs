//! The `postgres` exporter against a real PostgreSQL: the cluster `scripts/test.sh` starts (its
//! URL in `DATABASE_URL`), a fresh database per test; the restart test starts a private cluster
//! of its own with `scripts/pg.sh`, so stopping it disturbs no other test.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use sqlx::{PgPool, Row};

use crate::support::{Ports, Sluice, TempDir, free_port, hex, kv, string as s};

/// The server every test shares; each test makes its own database in it.
pub(crate) fn server_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run scripts/test.sh (it starts a throwaway PostgreSQL), \
         or point DATABASE_URL at a server where databases may be created",
    )
}

/// `url` with its database replaced.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let root = base[authority..]
        .find('/')
        .map_or(base, |i| &base[..authority + i]);
    match query {
        Some(q) => format!("{root}/{database}?{q}"),
        None => format!("{root}/{database}"),
    }
}

/// A new, empty database and a pool on it.
pub(crate) async fn fresh_database(server: &str, tag: &str) -> (String, PgPool) {
    let name = format!("sluice_{tag}_{}_{}", std::process::id(), free_port());
    let admin = PgPool::connect(server)
        .await
        .expect("the test PostgreSQL is reachable");
    // The name is made here from digits and a fixed tag, never from input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let url = with_database(server, &name);
    let pool = PgPool::connect(&url).await.unwrap();
    (url, pool)
}

fn config(ports: &Ports, url: &str, extra: &str) -> String {
    format!(
        "{common}processors:\n  batch:\n    timeout: 50ms\nexporters:\n  postgres:\n    endpoint: {url}\n    retry_on_failure:\n      initial_interval: 100ms\n      max_interval: 500ms\n      max_elapsed_time: 0s\n{extra}service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [postgres]\n    logs:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [postgres]\n{telemetry}",
        common = ports.common(),
        telemetry = ports.telemetry(),
    )
}

pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn id(prefix: u8, n: u64, len: usize) -> Vec<u8> {
    let mut out = vec![prefix; len];
    out[len - 8..].copy_from_slice(&n.to_be_bytes());
    out
}

/// Applies `f` to every span of a request.
fn each_span(request: &mut ExportTraceServiceRequest, mut f: impl FnMut(&mut Span)) {
    for rs in &mut request.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.iter_mut().for_each(&mut f);
        }
    }
}

/// `n` spans for one round of a streaming test: a trace id per round, times from `base`.
fn round_request(n: usize, tag: &str, round: u64, base: u64) -> ExportTraceServiceRequest {
    let mut request = crate::support::trace_request(n, tag, 10);
    each_span(&mut request, |span| {
        span.trace_id[..8].copy_from_slice(&(round + 1).to_be_bytes());
        span.start_time_unix_nano = base + round * 1_000_000;
        span.end_time_unix_nano = base + round * 1_000_000 + 500;
    });
    request
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until `sql` (a count) reaches `want`; returns the last value.
async fn wait_count(pool: &PgPool, sql: &str, want: i64, sluice: &Sluice) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(pool)
            .await
            .unwrap_or(-1);
        if n >= want {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "`{sql}` reached {n}, not {want}:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Exports `request` to the OTLP/gRPC receiver on port `grpc`; panics unless it is accepted.
pub(crate) async fn send_traces(grpc: u16, request: ExportTraceServiceRequest) {
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    client
        .export(request)
        .await
        .expect("sluice accepts the spans");
}

/// A request with every span field set, across two resources and two scopes.
pub(crate) fn rich_traces(base: u64) -> ExportTraceServiceRequest {
    let map = Value::KvlistValue(KeyValueList {
        values: vec![
            kv("inner", Value::IntValue(7)),
            kv("flag", Value::BoolValue(false)),
        ],
    });
    let array = Value::ArrayValue(ArrayValue {
        values: vec![
            AnyValue {
                value: Some(s("a")),
            },
            AnyValue {
                value: Some(Value::IntValue(2)),
            },
            AnyValue { value: None },
        ],
    });
    let root = Span {
        trace_id: id(0x4b, 1, 16),
        span_id: id(0xa1, 1, 8),
        trace_state: "vendor=1".into(),
        name: "GET /orders".into(),
        kind: 2,
        start_time_unix_nano: base + 123,
        end_time_unix_nano: base + 250_000_456,
        flags: 0x301,
        attributes: vec![
            kv("http.method", s("GET")),
            kv("http.status_code", Value::IntValue(500)),
            kv("ratio", Value::DoubleValue(0.25)),
            kv("whole", Value::DoubleValue(3.0)),
            kv("nan", Value::DoubleValue(f64::NAN)),
            kv("retry", Value::BoolValue(true)),
            kv("raw", Value::BytesValue(vec![0, 1, 2, 255])),
            kv("list", array),
            kv("map", map),
            kv("nul", s("a\0b")),
            KeyValue {
                key: "empty".into(),
                value: Some(AnyValue { value: None }),
                ..Default::default()
            },
            kv("enduser.id", s("user-42")),
        ],
        dropped_attributes_count: 3,
        events: vec![
            Event {
                time_unix_nano: base + 1_000,
                name: "exception".into(),
                attributes: vec![
                    kv("exception.type", s("TimeoutError")),
                    kv("exception.message", s("upstream timed out")),
                ],
                dropped_attributes_count: 1,
            },
            Event {
                time_unix_nano: base + 2_000,
                name: "retry".into(),
                attributes: vec![],
                dropped_attributes_count: 0,
            },
        ],
        dropped_events_count: 4,
        links: vec![Link {
            trace_id: id(0x77, 9, 16),
            span_id: id(0x78, 9, 8),
            trace_state: "linked=yes".into(),
            attributes: vec![kv("link.kind", s("follows"))],
            dropped_attributes_count: 2,
            flags: 1,
        }],
        dropped_links_count: 5,
        status: Some(Status {
            message: "upstream timed out".into(),
            code: 2,
        }),
        ..Default::default()
    };
    let child = Span {
        trace_id: id(0x4b, 1, 16),
        span_id: id(0xa1, 2, 8),
        parent_span_id: id(0xa1, 1, 8),
        name: "SELECT orders".into(),
        kind: 3,
        start_time_unix_nano: base + 10_000_000,
        end_time_unix_nano: base + 20_000_000,
        status: Some(Status {
            message: String::new(),
            code: 1,
        }),
        ..Default::default()
    };
    let other = Span {
        trace_id: id(0x4b, 1, 16),
        span_id: id(0xa1, 3, 8),
        parent_span_id: id(0xa1, 1, 8),
        name: "charge".into(),
        kind: 5,
        start_time_unix_nano: base + 30_000_000,
        end_time_unix_nano: base + 300_000_000,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", s("orders")),
                        kv("deployment.environment", s("test")),
                        kv("host.cpus", Value::IntValue(2)),
                    ],
                    dropped_attributes_count: 1,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "orders.http".into(),
                        version: "1.2.3".into(),
                        ..Default::default()
                    }),
                    spans: vec![root, child],
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("payments"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: vec![other],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    }
}

fn rich_logs(base: u64) -> ExportLogsServiceRequest {
    let record = |n: u64, body: Option<Value>| LogRecord {
        time_unix_nano: base + n * 1000,
        observed_time_unix_nano: base + n * 1000 + 5,
        severity_number: 17,
        severity_text: "ERROR".into(),
        body: body.map(|v| AnyValue { value: Some(v) }),
        attributes: vec![kv("n", Value::IntValue(n as i64))],
        ..Default::default()
    };
    let mut with_context = record(1, Some(s("payment failed")));
    with_context.trace_id = id(0x4b, 1, 16);
    with_context.span_id = id(0xa1, 1, 8);
    with_context.flags = 1;
    with_context.event_name = "payment.failure".into();
    with_context.dropped_attributes_count = 2;
    let mut observed_only = record(6, Some(s("no time")));
    observed_only.time_unix_nano = 0;
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("orders"))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "orders.log".into(),
                    version: "0.1".into(),
                    ..Default::default()
                }),
                log_records: vec![
                    with_context,
                    record(
                        2,
                        Some(Value::KvlistValue(KeyValueList {
                            values: vec![kv("k", s("v"))],
                        })),
                    ),
                    record(3, Some(Value::IntValue(42))),
                    record(4, Some(Value::BytesValue(vec![1, 2, 3]))),
                    record(5, None),
                    observed_only,
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn every_span_and_log_field_round_trips() {
    let (url, pool) = fresh_database(&server_url(), "roundtrip").await;
    let ports = Ports::new();
    let sluice = Sluice::start(
        ports,
        &config(
            &ports,
            &url,
            "    promoted_attributes: [enduser.id, missing]\n",
        ),
    );
    let base = (now_nanos() / 1_000_000_000 - 60) * 1_000_000_000;
    send_traces(ports.grpc, rich_traces(base)).await;
    let mut logs = LogsServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    logs.export(rich_logs(base)).await.unwrap();

    wait_count(&pool, "SELECT count(*) FROM spans", 3, &sluice).await;
    wait_count(&pool, "SELECT count(*) FROM logs", 6, &sluice).await;
    let trace = hex(&id(0x4b, 1, 16));

    // The root span, every column.
    let root = sqlx::query(
        "SELECT trace_id, span_id, parent_span_id, trace_state, flags, name, kind,
                extract(epoch FROM start_time)::numeric AS start_s, duration_ns,
                extract(epoch FROM end_time)::numeric AS end_s,
                status_code, status_message, service_name, scope_name, scope_version,
                attributes::text AS attributes, dropped_attributes_count, dropped_events_count,
                dropped_links_count, resource_id
         FROM spans WHERE trace_id = $1 AND parent_span_id IS NULL",
    )
    .bind(&trace)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(root.get::<String, _>("span_id"), hex(&id(0xa1, 1, 8)));
    assert_eq!(root.get::<Option<String>, _>("parent_span_id"), None);
    assert_eq!(root.get::<String, _>("trace_state"), "vendor=1");
    assert_eq!(root.get::<i32, _>("flags"), 0x301);
    assert_eq!(root.get::<String, _>("name"), "GET /orders");
    assert_eq!(root.get::<String, _>("kind"), "server");
    // Microseconds in the timestamps; the duration exact to the nanosecond.
    let start_s: String = sqlx::query_scalar(
        "SELECT extract(epoch FROM start_time)::text FROM spans WHERE parent_span_id IS NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(start_s, format!("{}.000000", base / 1_000_000_000));
    assert_eq!(root.get::<i64, _>("duration_ns"), 250_000_456 - 123);
    assert_eq!(root.get::<String, _>("status_code"), "error");
    assert_eq!(
        root.get::<String, _>("status_message"),
        "upstream timed out"
    );
    assert_eq!(
        root.get::<Option<String>, _>("service_name").as_deref(),
        Some("orders")
    );
    assert_eq!(root.get::<String, _>("scope_name"), "orders.http");
    assert_eq!(root.get::<String, _>("scope_version"), "1.2.3");
    assert_eq!(root.get::<i32, _>("dropped_attributes_count"), 3);
    assert_eq!(root.get::<i32, _>("dropped_events_count"), 4);
    assert_eq!(root.get::<i32, _>("dropped_links_count"), 5);
    let attributes: serde_json::Value =
        serde_json::from_str(&root.get::<String, _>("attributes")).unwrap();
    assert_eq!(
        attributes,
        serde_json::json!({
            "http.method": "GET", "http.status_code": 500, "ratio": 0.25, "whole": 3.0,
            "nan": "NaN", "retry": true, "raw": "AAEC/w==", "list": ["a", 2, null],
            "map": {"inner": 7, "flag": false}, "nul": "a\u{fffd}b", "empty": null,
            "enduser.id": "user-42",
        })
    );
    // The typed view over the attributes.
    let types: Vec<(String, String)> = sqlx::query_as(
        "SELECT key, value_type FROM span_attributes WHERE span_id = $1 ORDER BY key",
    )
    .bind(hex(&id(0xa1, 1, 8)))
    .fetch_all(&pool)
    .await
    .unwrap();
    let types: Vec<(&str, &str)> = types
        .iter()
        .map(|(k, t)| (k.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        types,
        [
            ("empty", "empty"),
            ("enduser.id", "string"),
            ("http.method", "string"),
            ("http.status_code", "int"),
            ("list", "array"),
            ("map", "map"),
            ("nan", "string"),
            ("nul", "string"),
            ("ratio", "double"),
            ("raw", "string"),
            ("retry", "bool"),
            ("whole", "double"),
        ]
    );
    // Readable ids: a person types the hex.
    let by_literal = count(
        &pool,
        &format!("SELECT count(*) FROM spans WHERE trace_id = '{trace}'"),
    )
    .await;
    assert_eq!(by_literal, 3);

    // The resource, deduplicated and referenced.
    let resource = sqlx::query(
        "SELECT r.service_name, r.attributes::text AS attributes, r.dropped_attributes_count
         FROM resources r JOIN spans s USING (resource_id) WHERE s.span_id = $1",
    )
    .bind(hex(&id(0xa1, 2, 8)))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        resource.get::<Option<String>, _>("service_name").as_deref(),
        Some("orders")
    );
    let attributes: serde_json::Value =
        serde_json::from_str(&resource.get::<String, _>("attributes")).unwrap();
    assert_eq!(
        attributes,
        serde_json::json!({"service.name": "orders", "deployment.environment": "test", "host.cpus": 2})
    );
    assert_eq!(resource.get::<i32, _>("dropped_attributes_count"), 1);
    // Three distinct resources: the logs' "orders" has fewer attributes than the spans'.
    assert_eq!(count(&pool, "SELECT count(*) FROM resources").await, 3);

    // Kinds, parents and scopes of the other spans.
    type SpanRow = (
        String,
        Option<String>,
        String,
        String,
        Option<String>,
        String,
    );
    let others: Vec<SpanRow> = sqlx::query_as(
        "SELECT name, parent_span_id, kind, status_code, service_name, scope_name
         FROM spans WHERE parent_span_id IS NOT NULL ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let parent = Some(hex(&id(0xa1, 1, 8)));
    assert_eq!(
        others,
        [
            (
                "SELECT orders".into(),
                parent.clone(),
                "client".into(),
                "ok".into(),
                Some("orders".into()),
                "orders.http".into()
            ),
            (
                "charge".into(),
                parent,
                "consumer".into(),
                "unset".into(),
                Some("payments".into()),
                String::new()
            ),
        ]
    );

    // Events and links.
    let events: Vec<(i32, String, String, i32, i64)> = sqlx::query_as(
        "SELECT event_index, name, attributes::text, dropped_attributes_count,
                (extract(epoch FROM time - span_start_time) * 1000000)::bigint
         FROM span_events ORDER BY event_index",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].0, 0);
    assert_eq!(events[0].1, "exception");
    let event_attributes: serde_json::Value = serde_json::from_str(&events[0].2).unwrap();
    assert_eq!(
        event_attributes,
        serde_json::json!({"exception.type": "TimeoutError", "exception.message": "upstream timed out"})
    );
    assert_eq!(events[0].3, 1);
    assert_eq!(
        events[0].4, 1,
        "the event 1µs after the span start (123 ns, truncated)"
    );
    assert_eq!(
        (events[1].0, events[1].1.as_str(), events[1].2.as_str()),
        (1, "retry", "{}")
    );
    let link: (String, String, String, String, String, i32, i32) = sqlx::query_as(
        "SELECT span_id, linked_trace_id, linked_span_id, trace_state, attributes::text,
                flags, dropped_attributes_count FROM span_links",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        link,
        (
            hex(&id(0xa1, 1, 8)),
            hex(&id(0x77, 9, 16)),
            hex(&id(0x78, 9, 8)),
            "linked=yes".into(),
            r#"{"link.kind": "follows"}"#.into(),
            1,
            2
        )
    );

    // The trace row, assembled from both resources.
    let t = sqlx::query(
        "SELECT root_service_name, root_span_name, span_count, error_count, ok_count, status,
                duration_ns, attributes::text AS attributes FROM traces WHERE trace_id = $1",
    )
    .bind(&trace)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        t.get::<Option<String>, _>("root_service_name").as_deref(),
        Some("orders")
    );
    assert_eq!(
        t.get::<Option<String>, _>("root_span_name").as_deref(),
        Some("GET /orders")
    );
    assert_eq!(t.get::<i32, _>("span_count"), 3);
    assert_eq!(t.get::<i32, _>("error_count"), 1);
    assert_eq!(t.get::<i32, _>("ok_count"), 1);
    assert_eq!(t.get::<String, _>("status"), "error");
    // From the root's start (truncated to µs) to the latest end, 300 ms after base.
    assert_eq!(t.get::<i64, _>("duration_ns"), 300_000_000);
    assert_eq!(
        t.get::<String, _>("attributes"),
        r#"{"enduser.id": "user-42"}"#
    );

    // Logs.
    type LogRow = (
        String,
        Option<String>,
        String,
        i16,
        String,
        Option<String>,
        Option<String>,
        i32,
        String,
        Option<String>,
        String,
        String,
        String,
        i32,
    );
    let rows: Vec<LogRow> = sqlx::query_as(
        "SELECT body_kind, body, event_name, severity_number, severity_text, trace_id, span_id,
                flags, extract(epoch FROM observed_time - time)::text, service_name, scope_name,
                scope_version, attributes::text, dropped_attributes_count
         FROM logs ORDER BY (attributes->>'n')::int",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 6);
    let first = &rows[0];
    assert_eq!(first.0, "string");
    assert_eq!(first.1.as_deref(), Some("payment failed"));
    assert_eq!(first.2, "payment.failure");
    assert_eq!((first.3, first.4.as_str()), (17, "ERROR"));
    assert_eq!(first.5.as_deref(), Some(trace.as_str()));
    assert_eq!(first.6, Some(hex(&id(0xa1, 1, 8))));
    assert_eq!(first.7, 1);
    assert_eq!(first.9.as_deref(), Some("orders"));
    assert_eq!(
        (first.10.as_str(), first.11.as_str()),
        ("orders.log", "0.1")
    );
    assert_eq!(first.12, r#"{"n": 1}"#);
    assert_eq!(first.13, 2);
    let bodies: Vec<(&str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_deref()))
        .collect();
    assert_eq!(
        bodies,
        [
            ("string", Some("payment failed")),
            ("map", Some(r#"{"k":"v"}"#)),
            ("int", Some("42")),
            ("bytes", Some("AQID")),
            ("empty", None),
            ("string", Some("no time")),
        ]
    );
    // A record without a time is filed under its observed time.
    assert_eq!(rows[5].8, "0.000000");
    assert_eq!(rows[1].5, None, "no trace context, no trace id");
}

#[tokio::test]
async fn traces_assemble_across_batches_and_replays_change_nothing() {
    let (url, pool) = fresh_database(&server_url(), "assemble").await;
    let ports = Ports::new();
    let sluice = Sluice::start(ports, &config(&ports, &url, ""));
    let base = now_nanos() / 1000 * 1000 - 10_000_000_000;
    let request = rich_traces(base);
    // Each span in its own request, children first: the root arrives last.
    let mut single = Vec::new();
    for rs in &request.resource_spans {
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let mut part = ExportTraceServiceRequest {
                    resource_spans: vec![rs.clone()],
                };
                part.resource_spans[0].scope_spans = vec![ScopeSpans {
                    spans: vec![span.clone()],
                    ..ss.clone()
                }];
                single.push(part);
            }
        }
    }
    single.reverse();
    let trace = hex(&id(0x4b, 1, 16));
    for (i, part) in single.iter().enumerate() {
        send_traces(ports.grpc, part.clone()).await;
        wait_count(&pool, "SELECT count(*) FROM spans", i as i64 + 1, &sluice).await;
        let (span_count, root): (i32, Option<String>) =
            sqlx::query_as("SELECT span_count, root_span_name FROM traces WHERE trace_id = $1")
                .bind(&trace)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(span_count, i as i32 + 1);
        assert_eq!(root.is_some(), i == single.len() - 1, "the root came last");
    }
    // Replay everything, once whole and once span by span.
    send_traces(ports.grpc, request.clone()).await;
    for part in &single {
        send_traces(ports.grpc, part.clone()).await;
    }
    sluice
        .wait_metric(
            "otelcol_exporter_postgres_duplicate_items{exporter=\"postgres\",data_type=\"traces\"}",
            6.0,
        )
        .await;
    assert_eq!(
        sluice
            .metric("otelcol_exporter_postgres_duplicate_items{exporter=\"postgres\",data_type=\"traces\"}")
            .await,
        6.0
    );
    let row: (i32, i32, i32, String, Option<String>, i64) = sqlx::query_as(
        "SELECT span_count, error_count, ok_count, status, root_service_name, duration_ns
         FROM traces WHERE trace_id = $1",
    )
    .bind(&trace)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (3, 1, 1, "error".into(), Some("orders".into()), 300_000_000)
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM spans").await, 3);
    assert_eq!(count(&pool, "SELECT count(*) FROM span_events").await, 2);
    assert_eq!(count(&pool, "SELECT count(*) FROM span_links").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM traces").await, 1);
    // Every write was timed, into a histogram with buckets.
    let writes = sluice
        .metric("otelcol_exporter_postgres_write_duration_seconds_count{exporter=\"postgres\",data_type=\"traces\"}")
        .await;
    assert!(writes >= 4.0, "{writes}");
    let bucket = sluice
        .metric("otelcol_exporter_postgres_write_duration_seconds_bucket{exporter=\"postgres\",data_type=\"traces\",le=\"+Inf\"}")
        .await;
    assert_eq!(bucket, writes);

    // Logs replayed are not stored twice either.
    let mut logs = LogsServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    logs.export(rich_logs(base)).await.unwrap();
    wait_count(&pool, "SELECT count(*) FROM logs", 6, &sluice).await;
    logs.export(rich_logs(base)).await.unwrap();
    sluice
        .wait_metric(
            "otelcol_exporter_postgres_duplicate_items{exporter=\"postgres\",data_type=\"logs\"}",
            6.0,
        )
        .await;
    assert_eq!(count(&pool, "SELECT count(*) FROM logs").await, 6);
    assert_eq!(
        sluice
            .metric("otelcol_exporter_sent_log_records{exporter=\"postgres\"}")
            .await,
        12.0
    );
}

#[tokio::test]
async fn retention_drops_whole_partitions_and_their_traces() {
    let (url, pool) = fresh_database(&server_url(), "retention").await;
    let extra = "    retention: 2h\n    partition_interval: 1h\n";
    let now = now_nanos();
    let hour = 3_600_000_000_000u64;
    let mut old = rich_traces(now - 5 * hour);
    let mut recent = rich_traces(now - 60_000_000_000);
    // Distinct trace ids for the two generations.
    each_span(&mut old, |span| span.trace_id = id(0x01, 1, 16));
    each_span(&mut recent, |span| span.trace_id = id(0x02, 1, 16));
    {
        let ports = Ports::new();
        let sluice = Sluice::start(ports, &config(&ports, &url, extra));
        send_traces(ports.grpc, old).await;
        send_traces(ports.grpc, recent.clone()).await;
        wait_count(&pool, "SELECT count(*) FROM spans", 6, &sluice).await;
        assert_eq!(count(&pool, "SELECT count(*) FROM traces").await, 2);
    }
    let partitions = |pool: PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT partition::text FROM sluice_partitions('spans') ORDER BY lower_bound",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let before = partitions(pool.clone()).await;
    assert!(before.len() >= 3, "old, current and next hour: {before:?}");
    // A new process runs maintenance when it first connects; the old hour is past retention.
    let ports = Ports::new();
    let sluice = Sluice::start(ports, &config(&ports, &url, extra));
    send_traces(ports.grpc, recent).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&pool, "SELECT count(*) FROM spans").await != 3
        || count(&pool, "SELECT count(*) FROM traces").await != 1
    {
        assert!(
            Instant::now() < deadline,
            "old spans were not dropped:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = partitions(pool.clone()).await;
    assert_eq!(after.len(), before.len() - 1, "{before:?} -> {after:?}");
    assert_eq!(
        sqlx::query_scalar::<_, String>("SELECT trace_id FROM traces")
            .fetch_all(&pool)
            .await
            .unwrap(),
        [hex(&id(0x02, 1, 16))]
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM span_events").await, 2);
    // The span statistics went with the spans: minute and hour rows count the 3 left.
    let deadline = Instant::now() + Duration::from_secs(20);
    for unit in ["minute", "hour"] {
        // Table names from the two constants.
        let counted = format!(
            "SELECT coalesce(sum(spans), 0)::bigint FROM (SELECT spans FROM span_stats_{unit} \
             UNION ALL SELECT spans FROM span_stats_pending) AS s"
        );
        while count(&pool, &counted).await != 3 {
            assert!(
                Instant::now() < deadline,
                "{unit} statistics: {}",
                count(&pool, &counted).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        sluice.logs().contains("retention dropped old data"),
        "{}",
        sluice.logs()
    );
}

#[tokio::test]
async fn migrations_apply_twice_and_a_missing_schema_is_a_permanent_error() {
    let (url, pool) = fresh_database(&server_url(), "migrate").await;
    sluice_postgres::MIGRATOR.run(&pool).await.unwrap();
    sluice_postgres::MIGRATOR.run(&pool).await.unwrap();
    assert_eq!(
        count(&pool, "SELECT count(*) FROM _sqlx_migrations").await,
        2,
        "0001 (traces and logs) and 0002 (span statistics), once each"
    );

    // migrate: false against an empty database: said clearly, not retried forever.
    let (empty_url, empty) = fresh_database(&server_url(), "nomigrate").await;
    let ports = Ports::new();
    let sluice = Sluice::start(ports, &config(&ports, &empty_url, "    migrate: false\n"));
    send_traces(ports.grpc, rich_traces(now_nanos())).await;
    sluice
        .wait_metric(
            "otelcol_exporter_send_failed_spans{exporter=\"postgres\"}",
            3.0,
        )
        .await;
    assert_eq!(
        sluice
            .metric("otelcol_exporter_send_failed_spans{exporter=\"postgres\"}")
            .await,
        3.0
    );
    let logs = sluice.logs();
    assert!(logs.contains("the database has no sluice schema"), "{logs}");
    assert!(
        !logs.contains("will retry"),
        "a permanent error is not retried: {logs}"
    );
    drop(sluice);
    drop(empty);

    // migrate: false against a migrated database works.
    let ports = Ports::new();
    let sluice = Sluice::start(ports, &config(&ports, &url, "    migrate: false\n"));
    send_traces(ports.grpc, rich_traces(now_nanos())).await;
    wait_count(&pool, "SELECT count(*) FROM spans", 3, &sluice).await;
}

/// A private cluster, stopped and started by the test.
struct Cluster {
    dir: TempDir,
    url: String,
}

fn pg_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg.sh")
}

impl Cluster {
    fn start() -> Cluster {
        let dir = TempDir::new("pg");
        let out = Command::new(pg_script())
            .arg("start")
            .arg(dir.0.join("cluster"))
            .output()
            .expect("scripts/pg.sh runs");
        assert!(
            out.status.success(),
            "cannot start PostgreSQL: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let url = text
            .lines()
            .find_map(|l| l.strip_prefix("export DATABASE_URL="))
            .expect("pg.sh prints the URL")
            .to_owned();
        Cluster { dir, url }
    }

    fn run(&self, command: &str) {
        let status = Command::new(pg_script())
            .arg(command)
            .arg(self.dir.0.join("cluster"))
            .status()
            .unwrap();
        assert!(status.success(), "pg.sh {command} failed");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.run("stop");
    }
}

#[tokio::test]
async fn postgresql_restarted_mid_stream_loses_nothing_and_duplicates_nothing() {
    let cluster = Cluster::start();
    let (url, _before_restart) = fresh_database(&cluster.url, "restart").await;
    let ports = Ports::new();
    let sluice = Sluice::start(
        ports,
        &config(
            &ports,
            &url,
            "    pool:\n      max_connections: 4\n      connect_timeout: 1s\n    timeout: 2s\n",
        ),
    );
    let health = format!("http://127.0.0.1:{}/health/ready", ports.health);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    let base = now_nanos() - 60_000_000_000;
    let mut sent = 0i64;
    let mut saw_degraded = false;
    for round in 0..60u64 {
        if round == 20 {
            cluster.run("down");
        }
        if round == 40 {
            cluster.run("up");
        }
        let request = round_request(50, "restart", round, base);
        client
            .export(request)
            .await
            .expect("accepted while PostgreSQL is away: queued");
        sent += 50;
        if (20..40).contains(&round) {
            let body = reqwest::get(&health).await.unwrap().text().await.unwrap();
            saw_degraded |= body.contains("degraded");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let pool = loop {
        // The old pool's connections died with the server.
        if let Ok(p) = PgPool::connect(&url).await {
            break p;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    wait_count(&pool, "SELECT count(*) FROM spans", sent, &sluice).await;
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((rows, distinct), (sent, sent), "every span once");
    let span_total: i64 = sqlx::query_scalar("SELECT sum(span_count)::bigint FROM traces")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(span_total, sent, "trace counts match the spans");
    assert!(
        saw_degraded,
        "/health/ready showed the exporter degraded while PostgreSQL was down"
    );
    assert!(sluice.logs().contains("will retry"), "{}", sluice.logs());
    let body = reqwest::get(&health).await.unwrap().text().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut body = body;
    while body.contains("degraded") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        body = reqwest::get(&health).await.unwrap().text().await.unwrap();
    }
    assert!(!body.contains("degraded"), "healthy again: {body}");
}

/// The SQL blocks of README.md's "Querying traces in PostgreSQL", in order.
fn readme_queries() -> Vec<String> {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let start = readme
        .find("<!-- queries:start -->")
        .expect("queries:start marker");
    let end = readme
        .find("<!-- queries:end -->")
        .expect("queries:end marker");
    readme[start..end]
        .split("```sql\n")
        .skip(1)
        .map(|block| {
            block
                .split("```")
                .next()
                .unwrap()
                .trim()
                .trim_end_matches(';')
                .to_owned()
        })
        .collect()
}

/// Data shaped like the README's examples: one failing checkout trace with a payment timeout,
/// thirty healthy ones, and a log line inside the failing trace.
fn readme_data(now: u64) -> (ExportTraceServiceRequest, ExportLogsServiceRequest) {
    let ms = 1_000_000u64;
    let start = now - 5 * 60 * 1_000_000_000;
    let trace = vec![
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ];
    let span =
        |trace_id: &[u8], n: u64, parent: Option<u64>, name: &str, kind: i32, at: u64, dur: u64| {
            Span {
                trace_id: trace_id.to_vec(),
                span_id: id(0x5a, n, 8),
                parent_span_id: parent.map(|p| id(0x5a, p, 8)).unwrap_or_default(),
                name: name.into(),
                kind,
                start_time_unix_nano: at,
                end_time_unix_nano: at + dur,
                ..Default::default()
            }
        };
    let mut root = span(&trace, 1, None, "POST /checkout", 2, start, 180 * ms);
    root.attributes = vec![
        kv("enduser.id", s("user-42")),
        kv("http.route", s("/checkout")),
        kv("http.response.status_code", Value::IntValue(500)),
    ];
    root.status = Some(Status {
        message: "payment failed".into(),
        code: 2,
    });
    let mut cart = span(&trace, 2, Some(1), "SELECT cart", 3, start + ms, 5 * ms);
    cart.status = Some(Status {
        message: String::new(),
        code: 1,
    });
    let mut charge = span(
        &trace,
        3,
        Some(1),
        "charge card",
        2,
        start + 10 * ms,
        150 * ms,
    );
    charge.status = Some(Status {
        message: "card network timed out".into(),
        code: 2,
    });
    charge.events = vec![Event {
        time_unix_nano: start + 160 * ms,
        name: "exception".into(),
        attributes: vec![
            kv("exception.type", s("TimeoutError")),
            kv("exception.message", s("card network timed out")),
        ],
        dropped_attributes_count: 0,
    }];
    let mut checkout = vec![root, cart];
    for i in 0..30u64 {
        let mut ok = span(
            &id(0x0c, i, 16),
            100 + i,
            None,
            "POST /checkout",
            2,
            start + i * 1000 * ms,
            (10 + i) * ms,
        );
        ok.attributes = vec![
            kv("http.route", s("/checkout")),
            kv("http.response.status_code", Value::IntValue(200)),
        ];
        checkout.push(ok);
    }
    let resource_spans = |service: &str, spans: Vec<Span>| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", s(service))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    };
    let traces = ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans("checkout", checkout),
            resource_spans("payments", vec![charge]),
        ],
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("checkout"))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: start + 170 * ms,
                    severity_number: 17,
                    severity_text: "ERROR".into(),
                    body: Some(AnyValue {
                        value: Some(s("payment failed for order 1234")),
                    }),
                    trace_id: trace.clone(),
                    span_id: id(0x5a, 1, 8),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (traces, logs)
}

#[tokio::test]
async fn the_readme_queries_answer_from_data_sent_through_sluice() {
    let (url, pool) = fresh_database(&server_url(), "readme").await;
    let ports = Ports::new();
    let sluice = Sluice::start(
        ports,
        &config(&ports, &url, "    promoted_attributes: [enduser.id]\n"),
    );
    let (traces, logs) = readme_data(now_nanos());
    send_traces(ports.grpc, traces).await;
    LogsServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap()
        .export(logs)
        .await
        .unwrap();
    wait_count(&pool, "SELECT count(*) FROM spans", 33, &sluice).await;
    wait_count(&pool, "SELECT count(*) FROM logs", 1, &sluice).await;

    // What each query must show, in README order.
    let expectations: &[(usize, &[&str])] = &[
        (
            1,
            &[
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "\"duration_ms\": 180.0",
                "\"error_count\": 2",
            ],
        ),
        (
            3,
            &[
                "\"span\": \"POST /checkout\"",
                "\"span\": \"  SELECT cart\"",
                "\"span\": \"  charge card\"",
                "TimeoutError",
                "\"depth\": 1",
            ],
        ),
        (1, &["payment failed for order 1234", "ERROR"]),
        (
            3,
            &[
                "\"name\": \"POST /checkout\", \"calls\": 31, \"avg_ms\": 29.5, \"max_ms\": 180.0",
                "charge card",
            ],
        ),
        (
            2,
            &[
                "\"error_type\": \"TimeoutError\"",
                "\"message\": \"card network timed out\"",
                "\"error_type\": \"status\"",
                "\"message\": \"payment failed\"",
            ],
        ),
        (
            2,
            &[
                "\"name\": \"POST /checkout\"",
                "\"p50_ms\": 25.0",
                "\"name\": \"charge card\", \"calls\": 1, \"p50_ms\": 150.0",
            ],
        ),
        // Grouped by hour and service; the data may straddle an hour boundary (checked below).
        (
            0,
            &[
                "\"service_name\": \"checkout\"",
                "\"service_name\": \"payments\"",
            ],
        ),
        // The same from the rollups.
        (
            0,
            &[
                "\"service_name\": \"checkout\"",
                "\"service_name\": \"payments\"",
            ],
        ),
        (
            1,
            &["\"route\": \"/checkout\"", "\"name\": \"POST /checkout\""],
        ),
        (
            3,
            &[
                "\"key\": \"http.response.status_code\", \"spans\": 31, \"value_type\": \"int\"",
                "\"key\": \"enduser.id\"",
            ],
        ),
    ];
    let queries = readme_queries();
    assert_eq!(
        queries.len(),
        expectations.len(),
        "one expectation per README query"
    );
    for (query, (rows, wanted)) in queries.iter().zip(expectations) {
        let wrapped = format!("SELECT to_jsonb(q)::text FROM ({query}) AS q");
        let result: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(wrapped))
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("README query failed: {e}\n{query}"));
        if *rows == 0 {
            let total = |key: &str| -> i64 {
                result
                    .iter()
                    .map(|r| {
                        serde_json::from_str::<serde_json::Value>(r).unwrap()[key]
                            .as_i64()
                            .unwrap()
                    })
                    .sum()
            };
            assert_eq!((total("spans"), total("errors")), (33, 2), "{result:#?}");
        } else {
            assert_eq!(result.len(), *rows, "{query}\n{result:#?}");
        }
        let text = result.join("\n");
        for w in *wanted {
            assert!(
                text.contains(w),
                "`{w}` not in the answer to\n{query}\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn kill_9_and_a_postgresql_restart_with_a_persistent_queue_store_every_span_once() {
    let cluster = Cluster::start();
    let (url, _setup) = fresh_database(&cluster.url, "durable").await;
    let queue = TempDir::new("pg-queue");
    let extra = format!(
        "    pool:\n      max_connections: 2\n      connect_timeout: 1s\n    timeout: 2s\n    sending_queue:\n      storage: file\n      directory: {}\n      num_consumers: 2\n",
        queue.0.display()
    );
    let start = || {
        let ports = Ports::new();
        (ports, Sluice::start(ports, &config(&ports, &url, &extra)))
    };
    let (mut ports, mut sluice) = start();
    let base = now_nanos() - 60_000_000_000;
    let mut acked: i64 = 0;
    for round in 0..60u64 {
        match round {
            // SIGKILL twice, PostgreSQL down and up once in between.
            15 | 45 => {
                sluice.child.kill().unwrap();
                sluice.child.wait().unwrap();
                (ports, sluice) = start();
            }
            25 => cluster.run("down"),
            35 => cluster.run("up"),
            _ => {}
        }
        let request = round_request(40, "durable", round, base);
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
            .await
            .unwrap();
        client
            .export(request)
            .await
            .expect("acknowledged once on disk, whatever PostgreSQL is doing");
        acked += 40;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pool = loop {
        if let Ok(p) = PgPool::connect(&url).await {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    wait_count(&pool, "SELECT count(*) FROM spans", acked, &sluice).await;
    let (rows, distinct, traced): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (trace_id, span_id)),
                (SELECT sum(span_count)::bigint FROM traces) FROM spans",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    eprintln!(
        "persistent queue + kill -9 x2 + PostgreSQL restart: {acked} spans acknowledged, {rows} rows, {distinct} distinct, traces count {traced}"
    );
    assert_eq!((rows, distinct, traced), (acked, acked, acked));
}
