//! The `redaction` processor end to end: the Python OpenTelemetry SDK sends spans, span events,
//! links and logs carrying personal data and secrets; sluice redacts them before a persistent
//! queue (into the OTLP sink) and the PostgreSQL exporter. Every byte that reaches the queue's
//! files, the sink and the database is scanned: nothing that matches a blocked pattern is there,
//! and what must stay (a Luhn-invalid number, an allowed value) is.

use std::process::Command;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use sqlx::Row;

use crate::postgres::{fresh_database, server_url};
use crate::python_sdk::{python, script};
use crate::support::{Ports, Sink, Sluice, TempDir, attr, files_under, string};

// The values `tests/python/send_otlp.py --pii` sends.
const EMAIL: &str = "jane.roe@example.org";
const PHONE: &str = "+1 415 555 2671";
const SSN: &str = "123-45-6789";
const CARD: &str = "4111 1111 1111 1111";
const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqYW5lIn0.c2lnbmF0dXJlLXZhbHVl";
const NOT_A_CARD: &str = "4111 1111 1111 1112";
const ALLOWED: &str = "support@sluice.example";

const SECRETS: [&str; 5] = [EMAIL, PHONE, SSN, CARD, JWT];

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every secret absent from `bytes`, and what must stay present.
fn assert_redacted(place: &str, bytes: &[u8]) {
    for secret in SECRETS {
        assert!(!contains(bytes, secret), "{secret} reached {place}");
    }
    for kept in [NOT_A_CARD, ALLOWED] {
        assert!(contains(bytes, kept), "{kept} should have reached {place}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_personal_data_reaches_the_queue_the_sink_or_postgresql() {
    let python = python();
    let sink = Sink::start().await;
    let (url, pool) = fresh_database(&server_url(), "redaction").await;
    let queue = TempDir::new("redaction-queue");
    let ports = Ports::new();
    let config = format!(
        "{common}processors:\n  redaction:\n    allow_all_keys: true\n    builtin_patterns: [pii, secrets]\n    allowed_values: ['^support@sluice\\.example$']\n    db_sanitizer:\n      sql: {{enabled: true, attributes: [db.statement]}}\n    summary: debug\n  batch:\n    timeout: 50ms\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{sink}\n    compression: none\n    timeout: 1s\n    retry_on_failure: {{initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 0s}}\n    sending_queue: {{storage: file, directory: {dir}}}\n  postgres:\n    endpoint: {url}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [redaction, batch], exporters: [otlp, postgres]}}\n    logs: {{receivers: [otlp], processors: [redaction, batch], exporters: [otlp, postgres]}}\n{telemetry}",
        common = ports.common(),
        sink = sink.grpc_port,
        dir = queue.0.display(),
        telemetry = ports.telemetry(),
    );
    // The sink holds every export at first, so the data waits in the queue's files.
    sink.set_hang(true);
    let sluice = Sluice::start(ports, &config);
    let out = Command::new(&python)
        .arg(script())
        .args(["--endpoint", &format!("http://127.0.0.1:{}", ports.grpc)])
        .args(["--protocol", "grpc", "--service-name", "pii-app", "--pii"])
        .args(["--spans", "1", "--logs", "0"])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The queue: the log is written after `redaction`, so what is on disk is redacted.
    let deadline = Instant::now() + Duration::from_secs(20);
    let on_disk = loop {
        let bytes: Vec<u8> = files_under(&queue.0, |_| true)
            .iter()
            .flat_map(|f| std::fs::read(f).unwrap_or_default())
            .collect();
        if contains(&bytes, NOT_A_CARD) && contains(&bytes, "pii-app") {
            break bytes;
        }
        assert!(
            Instant::now() < deadline,
            "the data never reached the queue's files"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_redacted("the persistent queue", &on_disk);

    // The sink: every request re-encoded and scanned, then the fields checked one by one.
    sink.set_hang(false);
    sink.wait_for(Duration::from_secs(30), "3 spans and 2 logs", |r| {
        r.span_count() >= 3 && r.log_count() >= 2
    })
    .await;
    let received = sink.snapshot();
    let bytes: Vec<u8> = received
        .traces
        .iter()
        .map(Message::encode_to_vec)
        .chain(received.logs.iter().map(Message::encode_to_vec))
        .flatten()
        .collect();
    assert_redacted("the OTLP sink", &bytes);
    let spans = received.spans();
    let span = spans
        .iter()
        .find(|s| s.name.starts_with("notify"))
        .expect("the span with personal data");
    assert_eq!(span.name, "notify ****");
    let value = |key: &str| attr(&span.attributes, key).cloned();
    assert_eq!(value("user.email"), Some(string("****")));
    assert_eq!(value("user.phone"), Some(string("****")));
    assert_eq!(value("payment"), Some(string("card **** charged")));
    assert_eq!(value("order.number"), Some(string(NOT_A_CARD)));
    assert_eq!(value("auth.header"), Some(string("Bearer ****")));
    assert_eq!(value("support.email"), Some(string(ALLOWED)));
    assert_eq!(
        value("db.statement"),
        Some(string("SELECT * FROM users WHERE email = ? AND ssn = ?"))
    );
    assert_eq!(
        value("redaction.masked.keys"),
        Some(string(
            "auth.header,db.statement,emails.[0],name,payment,status.message,user.email,user.phone"
        ))
    );
    assert_eq!(
        value("redaction.allowed.keys"),
        Some(string("support.email"))
    );
    assert_eq!(span.events[0].name, "mailed ****");
    assert_eq!(
        attr(&span.events[0].attributes, "ssn"),
        Some(&string("****"))
    );
    assert_eq!(
        attr(&span.links[0].attributes, "linked.by"),
        Some(&string("****"))
    );
    assert_eq!(span.status.as_ref().unwrap().message, "card **** declined");
    // The other spans had nothing to redact and arrive as they were sent.
    let child = spans.iter().find(|s| s.name == "op-0").unwrap();
    assert_eq!(attr(&child.attributes, "s"), Some(&string("value-0")));
    assert!(attr(&child.attributes, "redaction.masked.count").is_none());
    let logs: Vec<_> = received
        .logs
        .iter()
        .flat_map(|r| &r.resource_logs)
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| s.log_records.clone())
        .collect();
    let bodies: Vec<_> = logs
        .iter()
        .filter_map(|l| l.body.as_ref().and_then(|b| b.value.clone()))
        .collect();
    assert!(
        bodies.contains(&string("login by **** from ****, ssn ****")),
        "{bodies:?}"
    );
    let map_body = bodies
        .iter()
        .find_map(|b| match b {
            Value::KvlistValue(list) => Some(list),
            _ => None,
        })
        .expect("the map body");
    assert_eq!(attr(&map_body.values, "card"), Some(&string("****")));

    // PostgreSQL: every row of every table, as text.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans: i64 = sqlx::query("SELECT count(*) FROM spans")
            .fetch_one(&pool)
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        let logs: i64 = sqlx::query("SELECT count(*) FROM logs")
            .fetch_one(&pool)
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if spans >= 3 && logs >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL has {spans} spans and {logs} logs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut stored = Vec::new();
    for table in [
        "resources",
        "traces",
        "spans",
        "span_events",
        "span_links",
        "logs",
    ] {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {table} t"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        stored.extend(rows.get::<String, _>(0).into_bytes());
    }
    assert_redacted("PostgreSQL", &stored);

    let masked = sluice
        .metric("sluice_processor_redaction_masked_values{processor=\"redaction\",otel_signal=\"traces\"}")
        .await;
    assert!(masked >= 9.0, "masked values counted: {masked}");
}
