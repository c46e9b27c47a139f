//! The `loki` exporter against a Loki push peer. No Loki server can be installed here, so the
//! peer is built from Loki's `pkg/push/push.proto`, with its own prost structs (not the
//! exporter's), and decodes what arrives field by field: Snappy-compressed protobuf or JSON, the
//! label selector parsed back into pairs, tenants and headers recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::support::{Ports, Sluice, kv, string as s};

/// `logproto` as the peer reads it: written here from push.proto, independently of the exporter.
mod logproto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub(super) streams: Vec<StreamAdapter>,
        #[prost(string, tag = "2")]
        pub(super) format: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct StreamAdapter {
        #[prost(string, tag = "1")]
        pub(super) labels: String,
        #[prost(message, repeated, tag = "2")]
        pub(super) entries: Vec<EntryAdapter>,
        #[prost(uint64, tag = "3")]
        pub(super) hash: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct LabelPairAdapter {
        #[prost(string, tag = "1")]
        pub(super) name: String,
        #[prost(string, tag = "2")]
        pub(super) value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct EntryAdapter {
        #[prost(message, optional, tag = "1")]
        pub(super) timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub(super) line: String,
        #[prost(message, repeated, tag = "3")]
        pub(super) structured_metadata: Vec<LabelPairAdapter>,
        #[prost(message, repeated, tag = "4")]
        pub(super) parsed: Vec<LabelPairAdapter>,
    }
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub(super) struct Timestamp {
        #[prost(int64, tag = "1")]
        pub(super) seconds: i64,
        #[prost(int32, tag = "2")]
        pub(super) nanos: i32,
    }
}

/// One stream of one push, as the peer decoded it.
#[derive(Debug, Clone)]
pub(crate) struct PeerStream {
    pub(crate) labels: BTreeMap<String, String>,
    /// `(unix nanoseconds, line)`.
    pub(crate) entries: Vec<(i64, String)>,
}

/// One push request.
#[derive(Debug, Clone)]
pub(crate) struct Push {
    pub(crate) content_type: String,
    pub(crate) tenant: Option<String>,
    pub(crate) authorization: Option<String>,
    pub(crate) streams: Vec<PeerStream>,
}

/// What the peer answers.
#[derive(Clone, Copy)]
pub(crate) enum Mode {
    Accept,
    /// Answer this status this many times, then accept.
    StatusFirst(u16, usize),
}

#[derive(Clone)]
pub(crate) struct LokiPeer {
    pub(crate) pushes: Arc<Mutex<Vec<Push>>>,
    pub(crate) calls: Arc<Mutex<usize>>,
    mode: Mode,
}

impl LokiPeer {
    /// Every entry received, with its stream's labels.
    pub(crate) fn entries(&self) -> Vec<(BTreeMap<String, String>, i64, String)> {
        self.pushes
            .lock()
            .unwrap()
            .iter()
            .flat_map(|p| p.streams.clone())
            .flat_map(|s| {
                s.entries
                    .into_iter()
                    .map(move |(t, l)| (s.labels.clone(), t, l))
            })
            .collect()
    }

    /// Waits until `n` entries have arrived.
    pub(crate) async fn wait(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.entries().len();
            if got >= n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the Loki peer got {got} of {n} entries"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Parses a selector (`{a="b", c="d\"e"}`) back into pairs, strictly: anything else fails the
/// test.
fn parse_selector(selector: &str) -> BTreeMap<String, String> {
    let inner = selector
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a selector: {selector}"));
    let mut out = BTreeMap::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").expect("name=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("a closing quote") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().unwrap().1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        assert!(
            out.insert(name.to_owned(), value).is_none(),
            "duplicate label {name} in {selector}"
        );
        rest = after[end + 1..]
            .strip_prefix(", ")
            .unwrap_or(&after[end + 1..]);
    }
    out
}

fn decode(content_type: &str, body: &[u8]) -> Vec<PeerStream> {
    use prost::Message;
    match content_type {
        "application/x-protobuf" => {
            let raw = snap::raw::Decoder::new()
                .decompress_vec(body)
                .expect("a Snappy block");
            let request = logproto::PushRequest::decode(&raw[..]).expect("a PushRequest");
            assert_eq!(request.format, "", "clients leave format empty");
            request
                .streams
                .into_iter()
                .map(|s| {
                    assert_eq!(s.hash, 0, "clients leave the hash to Loki");
                    PeerStream {
                        labels: parse_selector(&s.labels),
                        entries: s
                            .entries
                            .into_iter()
                            .map(|e| {
                                assert!(e.structured_metadata.is_empty() && e.parsed.is_empty());
                                let t = e.timestamp.expect("every entry has a timestamp");
                                assert!((0..1_000_000_000).contains(&t.nanos));
                                (t.seconds * 1_000_000_000 + i64::from(t.nanos), e.line)
                            })
                            .collect(),
                    }
                })
                .collect()
        }
        "application/json" => {
            let v: serde_json::Value = serde_json::from_slice(body).expect("JSON");
            v["streams"]
                .as_array()
                .expect("streams")
                .iter()
                .map(|s| PeerStream {
                    labels: s["stream"]
                        .as_object()
                        .expect("stream labels")
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect(),
                    entries: s["values"]
                        .as_array()
                        .expect("values")
                        .iter()
                        .map(|pair| {
                            (
                                pair[0].as_str().unwrap().parse().unwrap(),
                                pair[1].as_str().unwrap().to_owned(),
                            )
                        })
                        .collect(),
                })
                .collect()
        }
        other => panic!("unexpected content type {other}"),
    }
}

/// Starts a Loki push peer; returns it and its port.
pub(crate) async fn start_peer(mode: Mode) -> (LokiPeer, u16) {
    let peer = LokiPeer {
        pushes: Arc::new(Mutex::new(Vec::new())),
        calls: Arc::new(Mutex::new(0)),
        mode,
    };
    let state = peer.clone();
    let app = axum::Router::new().route(
        "/loki/api/v1/push",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let peer = state.clone();
            async move {
                let n = {
                    let mut calls = peer.calls.lock().unwrap();
                    *calls += 1;
                    *calls
                };
                if let Mode::StatusFirst(status, k) = peer.mode
                    && n <= k
                {
                    return (
                        StatusCode::from_u16(status).unwrap(),
                        format!("peer answers {status}"),
                    );
                }
                let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
                let content_type = header("content-type").unwrap_or_default();
                let streams = decode(&content_type, &body);
                peer.pushes.lock().unwrap().push(Push {
                    content_type,
                    tenant: header("x-scope-orgid"),
                    authorization: header("authorization"),
                    streams,
                });
                (StatusCode::NO_CONTENT, String::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (peer, port)
}

fn start_sluice(loki_port: u16, exporter_extra: &str) -> Sluice {
    let ports = Ports::new();
    let config = format!(
        "{}processors:\n  batch:\n    timeout: 50ms\nexporters:\n  loki:\n    endpoint: http://127.0.0.1:{loki_port}/loki/api/v1/push\n    retry_on_failure: {{initial_interval: 50ms}}\n{exporter_extra}service:\n  pipelines:\n    logs: {{receivers: [otlp], processors: [batch], exporters: [loki]}}\n{}",
        ports.common(),
        ports.telemetry()
    );
    Sluice::start(ports, &config)
}

const T0: u64 = 1_700_000_000_123_456_789;

fn record(
    body: &str,
    severity: i32,
    attributes: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
) -> LogRecord {
    LogRecord {
        time_unix_nano: T0,
        severity_number: severity,
        body: Some(AnyValue {
            value: Some(s(body)),
        }),
        attributes,
        ..Default::default()
    }
}

fn resource(
    attributes: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
    records: Vec<LogRecord>,
) -> ResourceLogs {
    ResourceLogs {
        resource: Some(Resource {
            attributes,
            ..Default::default()
        }),
        scope_logs: vec![ScopeLogs {
            scope: Some(InstrumentationScope {
                name: "checkout.db".into(),
                version: "2.1".into(),
                ..Default::default()
            }),
            log_records: records,
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn export(sluice: &Sluice, request: ExportLogsServiceRequest) {
    let mut client = LogsServiceClient::connect(format!("http://127.0.0.1:{}", sluice.ports.grpc))
        .await
        .unwrap();
    client.export(request).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_labelling_rule_and_line_field_arrives_at_the_loki_peer() {
    let (peer, port) = start_peer(Mode::Accept).await;
    let sluice = start_sluice(
        port,
        "    headers:\n      X-Scope-OrgID: acme\n      authorization: Bearer t0ken\n",
    );
    let mut error = record(
        "payment failed",
        17,
        vec![
            kv("order.id", s("o-1")),
            kv("http.route", s("/pay")),
            kv("loki.attribute.labels", s("http.route")),
        ],
    );
    error.trace_id = vec![0x4b; 16];
    error.span_id = vec![0x01; 8];
    error.flags = 1;
    error.severity_text = "Error".into();
    let mut late = record("retrying", 9, vec![]);
    late.time_unix_nano = T0 + 5;
    let mut early = record("first try", 9, vec![]);
    early.time_unix_nano = T0 + 1;
    let untimed = LogRecord {
        observed_time_unix_nano: T0 + 3,
        body: Some(AnyValue {
            value: Some(any_value::Value::IntValue(42)),
        }),
        ..Default::default()
    };
    export(
        &sluice,
        ExportLogsServiceRequest {
            resource_logs: vec![resource(
                vec![
                    kv("service.name", s("checkout")),
                    kv("service.namespace", s("shop")),
                    kv("service.instance.id", s("pod-1")),
                    kv("k8s.pod.name", s("checkout-7d9")),
                    kv("loki.resource.labels", s("k8s.pod.name")),
                ],
                vec![error, late, early, untimed],
            )],
        },
    )
    .await;
    peer.wait(4).await;

    let pushes = peer.pushes.lock().unwrap().clone();
    for push in &pushes {
        assert_eq!(push.content_type, "application/x-protobuf");
        assert_eq!(
            push.tenant.as_deref(),
            Some("acme"),
            "the static tenant header"
        );
        assert_eq!(push.authorization.as_deref(), Some("Bearer t0ken"));
    }
    let base = |extra: &[(&str, &str)]| -> BTreeMap<String, String> {
        [
            ("exporter", "OTLP"),
            ("job", "shop/checkout"),
            ("instance", "pod-1"),
            ("k8s_pod_name", "checkout-7d9"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    };
    let entries = peer.entries();
    let of = |labels: &BTreeMap<String, String>| -> Vec<(i64, String)> {
        entries
            .iter()
            .filter(|(l, _, _)| l == labels)
            .map(|(_, t, line)| (*t, line.clone()))
            .collect()
    };
    let t0 = T0 as i64;

    // The error: its own stream (level and the hinted route), every field of its line.
    let errors = of(&base(&[("level", "ERROR"), ("http_route", "/pay")]));
    assert_eq!(errors.len(), 1, "{entries:?}");
    assert_eq!(errors[0].0, t0);
    let line: serde_json::Value = serde_json::from_str(&errors[0].1).unwrap();
    assert_eq!(
        line,
        serde_json::json!({
            "body": "payment failed",
            "traceid": "4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b",
            "spanid": "0101010101010101",
            "severity": "Error",
            "flags": 1,
            "attributes": {"order.id": "o-1"},
            "resources": {
                "service.name": "checkout",
                "service.namespace": "shop",
                "service.instance.id": "pod-1"
            },
            "instrumentation_scope": {"name": "checkout.db", "version": "2.1"}
        })
    );

    // INFO entries: one stream, in time order whatever the order they were sent in.
    let infos = of(&base(&[("level", "INFO")]));
    let bodies: Vec<(i64, String)> = infos
        .iter()
        .map(|(t, l)| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (*t - t0, v["body"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        bodies,
        [(1, "first try".to_owned()), (5, "retrying".to_owned())]
    );

    // No severity: no level label; the observed time stands in for the missing timestamp.
    let plain = of(&base(&[]));
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0].0, t0 + 3);
    let v: serde_json::Value = serde_json::from_str(&plain[0].1).unwrap();
    assert_eq!(v["body"], 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenant_hints_split_pushes_by_tenant_in_json() {
    let (peer, port) = start_peer(Mode::Accept).await;
    let sluice = start_sluice(port, "    encoding: json\n");
    let tenant_resource = |team: &str, body: &str| {
        resource(
            vec![
                kv("service.name", s("api")),
                kv("team", s(team)),
                kv("loki.tenant", s("team")),
                kv("loki.format", s("logfmt")),
            ],
            vec![record(body, 13, vec![kv("user", s("u 1"))])],
        )
    };
    export(
        &sluice,
        ExportLogsServiceRequest {
            resource_logs: vec![
                tenant_resource("blue", "disk at 91%"),
                tenant_resource("red", "cache cold"),
            ],
        },
    )
    .await;
    peer.wait(2).await;
    let pushes = peer.pushes.lock().unwrap().clone();
    let mut by_tenant: Vec<(String, Vec<String>)> = pushes
        .iter()
        .map(|p| {
            assert_eq!(p.content_type, "application/json");
            assert_eq!(p.authorization, None);
            (
                p.tenant.clone().expect("a tenant per push"),
                p.streams
                    .iter()
                    .flat_map(|s| s.entries.iter().map(|e| e.1.clone()))
                    .collect(),
            )
        })
        .collect();
    by_tenant.sort();
    assert_eq!(
        by_tenant,
        [
            (
                "blue".to_owned(),
                vec![r#"msg="disk at 91%" attribute_user="u 1" resource_service.name=api resource_team=blue instrumentation_scope_name=checkout.db instrumentation_scope_version=2.1"#.to_owned()]
            ),
            (
                "red".to_owned(),
                vec![r#"msg="cache cold" attribute_user="u 1" resource_service.name=api resource_team=red instrumentation_scope_name=checkout.db instrumentation_scope_version=2.1"#.to_owned()]
            ),
        ]
    );
    let labels = &pushes[0].streams[0].labels;
    assert_eq!(
        labels.keys().collect::<Vec<_>>(),
        ["exporter", "job", "level"]
    );
    assert_eq!(labels["level"], "WARN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limited_pushes_are_retried_and_refused_ones_are_not() {
    // 429 (a tenant over its ingestion rate) twice, then accepted.
    let (peer, port) = start_peer(Mode::StatusFirst(429, 2)).await;
    let sluice = start_sluice(port, "");
    let request = || ExportLogsServiceRequest {
        resource_logs: vec![resource(
            vec![kv("service.name", s("api"))],
            vec![record("hello", 9, vec![])],
        )],
    };
    export(&sluice, request()).await;
    peer.wait(1).await;
    assert_eq!(*peer.calls.lock().unwrap(), 3, "two 429s, then the push");

    // 400 (out of order, too old, bad labels): permanent, counted, logged, not retried.
    let (peer, port) = start_peer(Mode::StatusFirst(400, usize::MAX)).await;
    let sluice = start_sluice(port, "");
    export(&sluice, request()).await;
    let failed = sluice
        .wait_metric(
            "otelcol_exporter_send_failed_log_records{exporter=\"loki\"}",
            1.0,
        )
        .await;
    assert_eq!(failed, 1.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*peer.calls.lock().unwrap(), 1, "a 400 is not retried");
    assert!(
        sluice.logs().contains("peer answers 400"),
        "{}",
        sluice.logs()
    );
}
