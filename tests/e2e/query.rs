//! The `jaeger_query` extension reading what sluice stored, over both stores: one sluice writes
//! every span to PostgreSQL (the test cluster, a fresh database), to the `memory` store and to a
//! sink (what was sent, as sluice received it); one `jaeger_query` serves each store. The same
//! assertions run against both: every trace read back through Jaeger's v3 API (OTLP JSON) equals
//! what was sent, field by field (PostgreSQL's stated losses applied: microsecond times, JSON
//! attribute types); Jaeger's v1 JSON has Jaeger's shape; searches select exactly the traces
//! they should. PostgreSQL is read through a role that can only read, and that role is shown
//! unable to write.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value as Json;
use sqlx::PgPool;

use crate::postgres::{fresh_database, now_nanos, rich_traces, server_url};
use crate::python_sdk::run_script;
use crate::support::{Ports, Sink, Sluice, free_port, hex};

/// A role that may connect to `database` and read sluice's tables, and nothing else; its URL.
async fn reader_role(admin: &PgPool, url: &str, database: &str) -> String {
    let role = format!("sluice_reader_{}_{}", std::process::id(), free_port());
    // Names made here from digits and a fixed prefix, never from input.
    for statement in [
        format!("CREATE ROLE {role} LOGIN PASSWORD 'read-only'"),
        format!("GRANT CONNECT ON DATABASE \"{database}\" TO {role}"),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(admin)
            .await
            .unwrap();
    }
    let rest = url
        .split_once('@')
        .or_else(|| url.split_once("://"))
        .map_or(url, |(_, rest)| rest);
    format!("postgres://{role}:read-only@{rest}")
}

fn config(ports: &Ports, url: &str, reader: &str, sink: u16, pg: u16, mem: u16) -> String {
    format!(
        "{common}  jaeger_query/pg:\n    storage: {{traces: postgres}}\n    http: {{endpoint: 127.0.0.1:{pg}}}\n  jaeger_query/mem:\n    storage: {{traces: memory}}\n    http: {{endpoint: 127.0.0.1:{mem}}}\nprocessors:\n  batch:\n    timeout: 50ms\nexporters:\n  postgres:\n    endpoint: {url}\n    query:\n      endpoint: {reader}\n  memory:\n    max_bytes: 16MiB\n  otlp:\n    endpoint: http://127.0.0.1:{sink}\n    tls: {{insecure: true}}\nservice:\n  extensions: [health_check, jaeger_query/pg, jaeger_query/mem]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [postgres, memory, otlp]\n    logs:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [postgres, memory]\n  telemetry:\n    metrics:\n      address: 127.0.0.1:{metrics}\n",
        common = ports.common(),
        metrics = ports.metrics,
    )
}

async fn get(port: u16, path: &str) -> (u16, Json) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
    (status, json)
}

/// A span with where it came from: resource attributes, scope name and version.
#[derive(Debug, Clone, PartialEq)]
struct Placed {
    resource: Vec<KeyValue>,
    resource_dropped: u32,
    scope: (String, String),
    span: Span,
}

fn placed(request: &ExportTraceServiceRequest) -> Vec<Placed> {
    let mut out = Vec::new();
    for r in &request.resource_spans {
        let resource = r.resource.clone().unwrap_or_default();
        for s in &r.scope_spans {
            let scope = s.scope.clone().unwrap_or_default();
            for span in &s.spans {
                out.push(Placed {
                    resource: resource.attributes.clone(),
                    resource_dropped: resource.dropped_attributes_count,
                    scope: (scope.name.clone(), scope.version.clone()),
                    span: span.clone(),
                });
            }
        }
    }
    out
}

/// A value as the store keeps it: exactly (memory), or as its JSON column does (PostgreSQL:
/// bytes as base64 text, NaN and infinities as strings, U+0000 as U+FFFD, map keys sorted and
/// unique, the last kept).
fn value(v: Option<Value>, lossy: bool) -> Option<Value> {
    let clean = |s: String| {
        if lossy {
            s.replace('\0', "\u{fffd}")
        } else {
            s
        }
    };
    match v? {
        Value::StringValue(s) => Some(Value::StringValue(clean(s))),
        Value::BytesValue(b) if lossy => Some(Value::StringValue(
            base64::engine::general_purpose::STANDARD.encode(b),
        )),
        Value::DoubleValue(d) if lossy && !d.is_finite() => Some(Value::StringValue(
            if d.is_nan() {
                "NaN"
            } else if d > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            }
            .into(),
        )),
        // NaN is not equal to itself: compared by a marker no store writes.
        Value::DoubleValue(d) if d.is_nan() => Some(Value::StringValue("<f64 NaN>".into())),
        Value::ArrayValue(mut a) => {
            for item in &mut a.values {
                item.value = value(item.value.take(), lossy);
            }
            Some(Value::ArrayValue(a))
        }
        Value::KvlistValue(mut m) => {
            m.values = attributes(m.values, lossy);
            Some(Value::KvlistValue(m))
        }
        other => Some(other),
    }
}

/// Attributes sorted by key (the last of a repeated key kept), values as the store keeps them.
fn attributes(kvs: Vec<KeyValue>, lossy: bool) -> Vec<KeyValue> {
    let mut by_key = BTreeMap::new();
    for kv in kvs {
        let key = if lossy {
            kv.key.replace('\0', "\u{fffd}")
        } else {
            kv.key
        };
        let v = kv.value.map(|v| AnyValue {
            value: value(v.value, lossy),
        });
        by_key.insert(key, v);
    }
    by_key
        .into_iter()
        .map(|(key, value)| KeyValue {
            key,
            value,
            ..Default::default()
        })
        .collect()
}

/// What a store gives back for `p`: PostgreSQL keeps times to the microsecond (a span's end is
/// its stored start plus its exact duration) and no scope attributes.
fn as_stored(mut p: Placed, lossy: bool) -> Placed {
    p.resource = attributes(p.resource, lossy);
    let s = &mut p.span;
    s.attributes = attributes(std::mem::take(&mut s.attributes), lossy);
    for e in &mut s.events {
        e.attributes = attributes(std::mem::take(&mut e.attributes), lossy);
    }
    for l in &mut s.links {
        l.attributes = attributes(std::mem::take(&mut l.attributes), lossy);
    }
    if s.status.is_none() {
        s.status = Some(Default::default());
    }
    if lossy {
        let duration = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano);
        s.start_time_unix_nano = s.start_time_unix_nano / 1000 * 1000;
        s.end_time_unix_nano = s.start_time_unix_nano + duration;
        for e in &mut s.events {
            e.time_unix_nano = e.time_unix_nano / 1000 * 1000;
        }
    }
    p
}

fn sorted(mut spans: Vec<Placed>) -> Vec<Placed> {
    spans.sort_by(|a, b| {
        (&a.span.trace_id, &a.span.span_id).cmp(&(&b.span.trace_id, &b.span.span_id))
    });
    spans
}

/// A v3 answer's `result` as an OTLP request.
fn otlp(answer: &Json) -> ExportTraceServiceRequest {
    let json = serde_json::to_vec(&answer["result"]).unwrap();
    let bytes = sluice_core::json::json_to_protobuf(sluice_core::Signal::Traces, &json)
        .unwrap_or_else(|e| panic!("{e}: {answer}"));
    ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap()
}

/// The ids of the traces in a v1 answer, sorted.
fn v1_ids(answer: &Json) -> Vec<String> {
    let mut ids: Vec<String> = answer["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|t| t["traceID"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn rfc3339(nanos: u64) -> String {
    humantime::format_rfc3339_nanos(std::time::UNIX_EPOCH + Duration::from_nanos(nanos)).to_string()
}

/// Every span of `ids` read back through the v3 API on `port`.
async fn read_back(port: u16, ids: &[String]) -> Vec<Placed> {
    let mut out = Vec::new();
    for id in ids {
        let (status, answer) = get(port, &format!("/api/v3/traces/{id}")).await;
        assert_eq!(status, 200, "{answer}");
        out.extend(placed(&otlp(&answer)));
    }
    out
}

/// The tag `key` of a v1 span.
fn tag<'a>(span: &'a Json, key: &str) -> &'a Json {
    span["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == key)
        .unwrap_or_else(|| panic!("no tag {key} in {span}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_stores_answer_jaegers_apis_with_every_field_that_was_sent() {
    let server = server_url();
    let (url, admin) = fresh_database(&server, "query").await;
    let database = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let reader = reader_role(&admin, &url, &database).await;
    let sink = Sink::start().await;
    let ports = Ports::new();
    let (pg, mem) = (free_port(), free_port());
    let text = config(&ports, &url, &reader, sink.grpc_port, pg, mem);
    let grpc = ports.grpc;
    let sluice = Sluice::start(ports, &text);

    // Every field and attribute type, over two services; then the Python SDK's spans.
    let base = now_nanos() - 60_000_000_000;
    let rich = rich_traces(base);
    let rich_id = hex(&rich.resource_spans[0].scope_spans[0].spans[0].trace_id);
    crate::postgres::send_traces(grpc, rich).await;
    let python = run_script(&[
        "--endpoint",
        &format!("http://127.0.0.1:{grpc}"),
        "--protocol",
        "grpc",
        "--service-name",
        "py-query",
        "--spans",
        "20",
        "--logs",
        "0",
    ]);
    let python_id = python["trace_id"].as_str().unwrap().to_owned();
    let want_spans = 3 + python["spans"].as_u64().unwrap() as usize;
    sink.wait_for(Duration::from_secs(20), "every span at the sink", |r| {
        r.span_count() >= want_spans
    })
    .await;
    let truth: Vec<Placed> = sink.snapshot().traces.iter().flat_map(placed).collect();
    assert_eq!(truth.len(), want_spans);
    let ids = vec![rich_id.clone(), python_id.clone()];

    for (port, lossy, store) in [(mem, false, "memory"), (pg, true, "postgres")] {
        // Both traces whole, once the store has them.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut held = 0;
            for id in &ids {
                let (status, answer) = get(port, &format!("/api/v3/traces/{id}")).await;
                if status == 200 {
                    held += placed(&otlp(&answer)).len();
                }
            }
            if held >= want_spans || std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let want = sorted(truth.iter().cloned().map(|p| as_stored(p, lossy)).collect());
        let got = sorted(
            read_back(port, &ids)
                .await
                .into_iter()
                .map(|p| as_stored(p, false))
                .collect(),
        );
        assert_eq!(got.len(), want.len(), "{store}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{store}: span {}", w.span.name);
        }

        // v1: Jaeger's shape.
        let (status, answer) = get(port, &format!("/api/traces/{rich_id}")).await;
        assert_eq!(status, 200, "{store}: {answer}");
        assert_eq!(answer["total"], 1);
        assert_eq!(answer["errors"], Json::Null);
        let trace = &answer["data"][0];
        assert_eq!(trace["traceID"], rich_id.as_str());
        let processes = trace["processes"].as_object().unwrap();
        let mut services: Vec<&str> = processes
            .values()
            .map(|p| p["serviceName"].as_str().unwrap())
            .collect();
        services.sort_unstable();
        assert_eq!(services, ["orders", "payments"], "{store}");
        let spans = trace["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 3);
        let by_name = |name: &str| {
            spans
                .iter()
                .find(|s| s["operationName"] == name)
                .unwrap_or_else(|| panic!("{store}: no span {name}"))
        };
        let root = by_name("GET /orders");
        assert_eq!(root["startTime"], (base + 123) / 1000);
        assert_eq!(root["duration"], (250_000_456 - 123) / 1000);
        assert_eq!(root["flags"], 1);
        assert_eq!(tag(root, "http.status_code")["type"], "int64");
        assert_eq!(tag(root, "http.status_code")["value"], 500);
        assert_eq!(tag(root, "ratio")["value"], 0.25);
        assert_eq!(tag(root, "retry")["type"], "bool");
        assert_eq!(tag(root, "error")["value"], true);
        assert_eq!(tag(root, "span.kind")["value"], "server");
        assert_eq!(
            tag(root, "otel.status_description")["value"],
            "upstream timed out"
        );
        assert_eq!(root["logs"].as_array().unwrap().len(), 2);
        assert_eq!(root["logs"][0]["timestamp"], (base + 1_000) / 1000);
        let process = &processes[root["processID"].as_str().unwrap()];
        assert_eq!(process["serviceName"], "orders");
        let child = by_name("SELECT orders");
        assert_eq!(child["references"][0]["refType"], "CHILD_OF");
        assert_eq!(child["references"][0]["spanID"], root["spanID"]);
        assert_eq!(child["references"][0]["traceID"], rich_id.as_str());
        assert_eq!(tag(child, "span.kind")["value"], "client");

        // Services and operations.
        let (_, answer) = get(port, "/api/services").await;
        assert_eq!(
            answer["data"],
            serde_json::json!(["orders", "payments", "py-query"]),
            "{store}"
        );
        let (_, answer) = get(port, "/api/v3/services").await;
        assert_eq!(
            answer["services"],
            serde_json::json!(["orders", "payments", "py-query"])
        );
        let (_, answer) = get(port, "/api/services/orders/operations").await;
        assert_eq!(
            answer["data"],
            serde_json::json!(["GET /orders", "SELECT orders"]),
            "{store}"
        );
        let (_, answer) = get(port, "/api/v3/operations?service=orders&spanKind=server").await;
        assert_eq!(
            answer["operations"],
            serde_json::json!([{"name": "GET /orders", "spanKind": "server"}]),
            "{store}"
        );

        // Searches select exactly: by service, operation, span and resource attributes (as
        // text, whatever their type), duration; a limit is honoured.
        let none: Vec<String> = Vec::new();
        for (query, want) in [
            ("service=orders", vec![rich_id.clone()]),
            ("service=py-query", vec![python_id.clone()]),
            (
                "service=orders&tags=%7B%22http.status_code%22%3A%22500%22%7D",
                vec![rich_id.clone()],
            ),
            ("service=orders&tag=http.status_code:404", none.clone()),
            (
                "service=orders&tag=enduser.id:user-42",
                vec![rich_id.clone()],
            ),
            (
                "service=orders&tag=deployment.environment:test",
                vec![rich_id.clone()],
            ),
            (
                "service=orders&tag=retry:true&tag=ratio:0.25",
                vec![rich_id.clone()],
            ),
            ("service=payments&operation=charge", vec![rich_id.clone()]),
            ("service=payments&operation=nothing", none.clone()),
            ("service=payments&minDuration=200ms", vec![rich_id.clone()]),
            ("service=orders&minDuration=300ms", none.clone()),
            ("service=orders&maxDuration=5ms", none.clone()),
            ("service=nobody", none.clone()),
            ("service=orders&lookback=1s", none.clone()),
        ] {
            let (status, answer) = get(port, &format!("/api/traces?{query}")).await;
            assert_eq!(status, 200, "{store} {query}: {answer}");
            assert_eq!(v1_ids(&answer), want, "{store} {query}");
        }
        let (_, answer) = get(port, "/api/traces?service=py-query&limit=1").await;
        assert_eq!(answer["data"].as_array().unwrap().len(), 1);
        let window = format!(
            "query.start_time_min={}&query.start_time_max={}",
            rfc3339(base - 1_000_000_000),
            rfc3339(now_nanos() + 1_000_000_000)
        );
        let (status, answer) = get(
            port,
            &format!("/api/v3/traces?query.service_name=payments&{window}"),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let found = otlp(&answer);
        assert_eq!(placed(&found).len(), 3, "{store}: the whole trace");

        // Dependencies: orders calls payments once.
        let (_, answer) = get(
            port,
            &format!(
                "/api/dependencies?endTs={}&lookback=3600000",
                now_nanos() / 1_000_000
            ),
        )
        .await;
        assert_eq!(
            answer["data"],
            serde_json::json!([{"parent": "orders", "child": "payments", "callCount": 1}]),
            "{store}"
        );

        // Bad requests name their problem; an unknown trace is a 404.
        for (path, code, text) in [
            ("/api/traces/zz", 400, "not hex"),
            (
                "/api/traces/0123456789abcdef0123456789abcdef",
                404,
                "trace not found",
            ),
            ("/api/traces?operation=x", 400, "service"),
            (
                "/api/traces?service=orders&minDuration=fast",
                400,
                "minDuration",
            ),
            ("/api/traces?service=orders&limit=-1", 400, "limit"),
        ] {
            let (status, answer) = get(port, path).await;
            assert_eq!(status, code, "{path}: {answer}");
            assert_eq!(answer["errors"][0]["code"], code);
            assert!(
                answer["errors"][0]["msg"].as_str().unwrap().contains(text),
                "{answer}"
            );
        }
        let (status, answer) = get(port, "/api/v3/traces?query.service_name=orders").await;
        assert_eq!(status, 400);
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("startTimeMin")
        );
    }

    // The role the reads use can read, and cannot write.
    let read_only = PgPool::connect(&reader).await.unwrap();
    let spans: i64 = sqlx::query_scalar("SELECT count(*) FROM spans")
        .fetch_one(&read_only)
        .await
        .unwrap();
    assert_eq!(spans, want_spans as i64);
    for statement in [
        "DELETE FROM spans",
        "UPDATE traces SET span_count = 0",
        "INSERT INTO resources (resource_id, attributes) VALUES (1, '{}')",
    ] {
        let error = sqlx::query(statement)
            .execute(&read_only)
            .await
            .unwrap_err();
        let code = error
            .as_database_error()
            .and_then(|e| e.code())
            .unwrap_or_default();
        assert_eq!(code, "42501", "{statement}: {error}");
    }
    drop(sluice);
}

/// A client of Jaeger's v2 remote storage API, on the `jaeger.storage.v2` messages.
struct StorageClient {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl StorageClient {
    async fn connect(port: u16) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        StorageClient {
            grpc: tonic::client::Grpc::new(channel).max_decoding_message_size(4 << 20),
        }
    }

    async fn unary<Q, A>(&mut self, path: &'static str, request: Q) -> Result<A, tonic::Status>
    where
        Q: Message + Send + Sync + 'static,
        A: Message + Default + Send + Sync + 'static,
    {
        self.grpc.ready().await.unwrap();
        self.grpc
            .unary(
                tonic::Request::new(request),
                http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::<Q, A>::default(),
            )
            .await
            .map(tonic::Response::into_inner)
    }

    /// Every chunk of a streamed answer, as OTLP requests (`TracesData` has their encoding).
    async fn chunks<Q>(
        &mut self,
        path: &'static str,
        request: Q,
    ) -> Result<Vec<ExportTraceServiceRequest>, tonic::Status>
    where
        Q: Message + Send + Sync + 'static,
    {
        self.grpc.ready().await.unwrap();
        let mut stream = self
            .grpc
            .server_streaming(
                tonic::Request::new(request),
                http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::<Q, ExportTraceServiceRequest>::default(),
            )
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await? {
            out.push(chunk);
        }
        Ok(out)
    }
}

/// The trace id of each chunk, checking the chunking rules: no chunk is empty, and every span
/// of a chunk belongs to one trace.
fn chunk_traces(chunks: &[ExportTraceServiceRequest]) -> Vec<(Vec<u8>, usize)> {
    chunks
        .iter()
        .map(|chunk| {
            let spans: Vec<&Span> = chunk
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .collect();
            assert!(!spans.is_empty(), "an empty chunk");
            let id = spans[0].trace_id.clone();
            assert!(
                spans.iter().all(|s| s.trace_id == id),
                "a chunk mixes traces"
            );
            (id, spans.len())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jaegers_remote_storage_api_streams_a_10000_span_trace_in_chunks_from_both_stores() {
    use sluice_query::proto;

    let (url, _admin) = fresh_database(&server_url(), "storage").await;
    let sink = Sink::start().await;
    let ports = Ports::new();
    let (pg, mem, pg_grpc, mem_grpc) = (free_port(), free_port(), free_port(), free_port());
    let text = config(&ports, &url, &url, sink.grpc_port, pg, mem)
        .replace("max_bytes: 16MiB", "max_bytes: 64MiB")
        .replace(
            &format!("http: {{endpoint: 127.0.0.1:{pg}}}\n"),
            &format!(
                "http: {{endpoint: 127.0.0.1:{pg}}}\n    remote_storage: {{endpoint: 127.0.0.1:{pg_grpc}}}\n"
            ),
        )
        .replace(
            &format!("http: {{endpoint: 127.0.0.1:{mem}}}\n"),
            &format!(
                "http: {{endpoint: 127.0.0.1:{mem}}}\n    remote_storage: {{endpoint: 127.0.0.1:{mem_grpc}}}\n"
            ),
        );
    let grpc = ports.grpc;
    let sluice = Sluice::start(ports, &text);

    // One trace of 10,000 spans (about 2.7 MB), sent in ten requests; its root is called from a
    // `frontend` trace part, so there is a dependency; and a small trace of its own.
    let base = now_nanos() - 30_000_000_000;
    let big_id = vec![0xb1; 16];
    let small_id = vec![0x5a; 16];

    crate::postgres::send_traces(
        grpc,
        service_request(
            "frontend",
            vec![Span {
                trace_id: big_id.clone(),
                span_id: vec![0xf0; 8],
                name: "GET /".into(),
                kind: 2,
                start_time_unix_nano: base,
                end_time_unix_nano: base + 5_000_000_000,
                ..Default::default()
            }],
        ),
    )
    .await;
    for part in 0..10u64 {
        let spans = (0..1000u64)
            .map(|i| {
                let n = part * 1000 + i;
                Span {
                    trace_id: big_id.clone(),
                    span_id: (n + 1).to_be_bytes().to_vec(),
                    parent_span_id: if n == 0 {
                        vec![0xf0; 8]
                    } else {
                        1u64.to_be_bytes().to_vec()
                    },
                    name: format!("op-{}", n % 5),
                    kind: if n == 0 { 2 } else { 1 },
                    start_time_unix_nano: base + 1000 + n * 1000,
                    end_time_unix_nano: base + 2000 + n * 1000,
                    attributes: vec![crate::support::kv(
                        "pad",
                        crate::support::string(&"p".repeat(200)),
                    )],
                    ..Default::default()
                }
            })
            .collect();
        crate::postgres::send_traces(grpc, service_request("backend", spans)).await;
    }
    crate::postgres::send_traces(
        grpc,
        service_request(
            "backend",
            vec![Span {
                trace_id: small_id.clone(),
                span_id: vec![0x11; 8],
                name: "cron".into(),
                kind: 1,
                start_time_unix_nano: base + 100,
                end_time_unix_nano: base + 200,
                ..Default::default()
            }],
        ),
    )
    .await;
    sink.wait_for(Duration::from_secs(30), "every span at the sink", |r| {
        r.span_count() >= 10_002
    })
    .await;

    let window = proto::TraceQueryParameters {
        start_time_min: Some(proto::timestamp(base - 1_000_000_000)),
        start_time_max: Some(proto::timestamp(now_nanos() + 1_000_000_000)),
        ..Default::default()
    };
    for (port, store) in [(mem_grpc, "memory"), (pg_grpc, "postgres")] {
        let mut client = StorageClient::connect(port).await;
        let get = proto::GetTracesRequest {
            query: vec![
                proto::GetTraceParams {
                    trace_id: big_id.clone(),
                    ..Default::default()
                },
                proto::GetTraceParams {
                    trace_id: vec![0xee; 16],
                    ..Default::default()
                },
                proto::GetTraceParams {
                    trace_id: small_id.clone(),
                    ..Default::default()
                },
            ],
        };
        // Wait until the store holds the whole big trace.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let chunks = loop {
            // UNAVAILABLE until the exporter's first write has made the schema.
            let answer = client.chunks(proto::GET_TRACES, get.clone()).await;
            let spans: usize = answer
                .as_ref()
                .map_or(0, |c| chunk_traces(c).iter().map(|(_, n)| n).sum());
            if spans == 10_002 || std::time::Instant::now() > deadline {
                break answer.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let per_chunk = chunk_traces(&chunks);
        assert!(
            per_chunk.len() >= 4,
            "{store}: the big trace takes several chunks"
        );
        // The big trace's chunks come first and together, then the small one; the unknown id
        // is ignored.
        let big_chunks = per_chunk.iter().take_while(|(id, _)| *id == big_id).count();
        assert_eq!(per_chunk[big_chunks..], [(small_id.clone(), 1)], "{store}");
        assert_eq!(
            per_chunk[..big_chunks]
                .iter()
                .map(|(_, n)| n)
                .sum::<usize>(),
            10_001,
            "{store}"
        );
        let mut span_ids: Vec<Vec<u8>> = chunks
            .iter()
            .flat_map(|c| &c.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .filter(|s| s.trace_id == big_id)
            .map(|s| s.span_id.clone())
            .collect();
        span_ids.sort();
        span_ids.dedup();
        assert_eq!(span_ids.len(), 10_001, "{store}: every span once");
        for chunk in &chunks {
            assert!(
                chunk.encoded_len() <= (1 << 20) + 4096,
                "{store}: {}",
                chunk.encoded_len()
            );
        }

        // Services, operations by kind, searches, ids, dependencies.
        let services: proto::GetServicesResponse = client
            .unary(proto::GET_SERVICES, proto::GetServicesRequest {})
            .await
            .unwrap();
        assert_eq!(services.services, ["backend", "frontend"], "{store}");
        let ops: proto::GetOperationsResponse = client
            .unary(
                proto::GET_OPERATIONS,
                proto::GetOperationsRequest {
                    service: "backend".into(),
                    span_kind: "server".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            ops.operations,
            [proto::Operation {
                name: "op-0".into(),
                span_kind: "server".into()
            }],
            "{store}"
        );
        let find = |service: &str, operation: &str| proto::FindTracesRequest {
            query: Some(proto::TraceQueryParameters {
                service_name: service.into(),
                operation_name: operation.into(),
                ..window.clone()
            }),
        };
        let found = client
            .chunks(proto::FIND_TRACES, find("backend", "cron"))
            .await
            .unwrap();
        assert_eq!(chunk_traces(&found), [(small_id.clone(), 1)], "{store}");
        let ids: proto::FindTraceIdsResponse = client
            .unary(proto::FIND_TRACE_IDS, find("", ""))
            .await
            .unwrap();
        let mut ids: Vec<Vec<u8>> = ids.trace_ids.into_iter().map(|t| t.trace_id).collect();
        ids.sort();
        assert_eq!(
            ids,
            [small_id.clone(), big_id.clone()],
            "{store}: any service"
        );
        let deps: proto::GetDependenciesResponse = client
            .unary(
                proto::GET_DEPENDENCIES,
                proto::GetDependenciesRequest {
                    start_time: window.start_time_min,
                    end_time: window.start_time_max,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            deps.dependencies,
            [proto::Dependency {
                parent: "frontend".into(),
                child: "backend".into(),
                call_count: 1,
                source: String::new(),
            }],
            "{store}"
        );
        let capabilities: proto::GetCapabilitiesResponse = client
            .unary(proto::GET_CAPABILITIES, proto::GetServicesRequest {})
            .await
            .unwrap();
        assert!(capabilities.search.unwrap().without_service_name);

        // Refusals: a search without its time range; the optional summaries.
        let status = client
            .chunks(
                proto::FIND_TRACES,
                proto::FindTracesRequest {
                    query: Some(proto::TraceQueryParameters::default()),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let status = client
            .chunks(proto::FIND_TRACE_SUMMARIES, find("backend", ""))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    }
    drop(sluice);
}

/// A request of `spans` from `service`, under one resource and one scope.
fn service_request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![crate::support::kv(
                    "service.name",
                    crate::support::string(service),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// 25 `checkout` traces one second apart: a `POST /pay` root lasting (i + 1) × 10 ms with a
/// 5 ms `db` child; every fifth fails with a `PaymentError` exception, every seventh records a
/// `TimeoutError`; `user.id` is `u{i % 3}`.
pub(crate) fn checkout_traces(base: u64) -> (ExportTraceServiceRequest, Vec<String>) {
    use opentelemetry_proto::tonic::trace::v1::Status;
    use opentelemetry_proto::tonic::trace::v1::span::Event;

    use crate::support::{kv, string};
    let mut spans = Vec::new();
    let mut ids = Vec::new();
    for i in 0..25u64 {
        let trace_id: Vec<u8> = [[0xc0; 8], (i + 1).to_be_bytes()].concat();
        ids.push(hex(&trace_id));
        let start = base + i * 1_000_000_000;
        let mut events = Vec::new();
        let exception = |kind: &str, message: &str, at: u64| Event {
            time_unix_nano: at,
            name: "exception".into(),
            attributes: vec![
                kv("exception.type", string(kind)),
                kv("exception.message", string(message)),
                kv(
                    "exception.stacktrace",
                    string(&format!("{kind} at pay()\n  at main()")),
                ),
            ],
            dropped_attributes_count: 0,
        };
        if i % 5 == 0 {
            events.push(exception("PaymentError", "card declined", start + 3_000));
        }
        if i % 7 == 0 {
            events.push(exception(
                "TimeoutError",
                "upstream timed out",
                start + 4_000,
            ));
        }
        spans.push(Span {
            trace_id: trace_id.clone(),
            span_id: [[0xa0; 4], (i as u32 + 1).to_be_bytes()].concat(),
            name: "POST /pay".into(),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: start + (i + 1) * 10_000_000,
            attributes: vec![kv("user.id", string(&format!("u{}", i % 3)))],
            events,
            status: Some(Status {
                code: if i % 5 == 0 { 2 } else { 1 },
                message: if i % 5 == 0 {
                    format!("Card Declined #{i}")
                } else {
                    String::new()
                },
            }),
            ..Default::default()
        });
        spans.push(Span {
            trace_id,
            span_id: [[0xb0; 4], (i as u32 + 1).to_be_bytes()].concat(),
            parent_span_id: [[0xa0; 4], (i as u32 + 1).to_be_bytes()].concat(),
            name: "db".into(),
            kind: 3,
            start_time_unix_nano: start + 1_000_000,
            end_time_unix_nano: start + 6_000_000,
            ..Default::default()
        });
    }
    (service_request("checkout", spans), ids)
}

/// Every page of a search, following `next_cursor`; the trace ids in order.
async fn all_pages(port: u16, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            Some(c) => format!("/api/sluice/traces?{query}&cursor={c}"),
            None => format!("/api/sluice/traces?{query}"),
        };
        let (status, answer) = get(port, &path).await;
        assert_eq!(status, 200, "{path}: {answer}");
        for t in answer["traces"].as_array().unwrap() {
            ids.push(t["trace_id"].as_str().unwrap().to_owned());
        }
        match answer["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
    panic!("more than 100 pages for {query}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sluices_own_api_pages_filters_aggregates_groups_errors_exports_and_compares() {
    let (url, _admin) = fresh_database(&server_url(), "api").await;
    let sink = Sink::start().await;
    let ports = Ports::new();
    let (pg, mem) = (free_port(), free_port());
    let text = config(&ports, &url, &url, sink.grpc_port, pg, mem);
    let (grpc, http) = (ports.grpc, ports.http);
    let sluice = Sluice::start(ports, &text);
    let base = (now_nanos() - 120_000_000_000) / 1000 * 1000;
    let (request, ids) = checkout_traces(base);
    crate::postgres::send_traces(grpc, request.clone()).await;
    // Two log records inside the first trace (a structured one first), one outside any trace.
    let logs = {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValueList};
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use opentelemetry_proto::tonic::resource::v1::Resource;

        use crate::support::{kv, string};
        let trace_id = request.resource_spans[0].scope_spans[0].spans[0]
            .trace_id
            .clone();
        let span_id = request.resource_spans[0].scope_spans[0].spans[0]
            .span_id
            .clone();
        let record = |at: u64, severity: i32, text: &str, body: Value, traced: bool| LogRecord {
            time_unix_nano: base + at,
            severity_number: severity,
            severity_text: text.into(),
            body: Some(AnyValue { value: Some(body) }),
            trace_id: if traced { trace_id.clone() } else { Vec::new() },
            span_id: if traced { span_id.clone() } else { Vec::new() },
            attributes: vec![kv("attempt", Value::IntValue(2))],
            ..Default::default()
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", string("checkout"))],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        record(5_000, 17, "ERROR", string("payment failed"), true),
                        record(
                            2_000,
                            9,
                            "INFO",
                            Value::KvlistValue(KeyValueList {
                                values: vec![kv("step", string("charge"))],
                            }),
                            true,
                        ),
                        record(3_000, 9, "INFO", string("unrelated"), false),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    };
    let mut logs_client = opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient::connect(format!("http://127.0.0.1:{}", grpc))
        .await
        .unwrap();
    logs_client.export(logs).await.unwrap();
    sink.wait_for(Duration::from_secs(20), "the spans at the sink", |r| {
        r.span_count() >= 50
    })
    .await;
    let window = format!(
        "start={}&end={}",
        rfc3339(base - 1_000_000_000),
        rfc3339(now_nanos() + 1_000_000_000)
    );
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    let pick = |keep: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..25)
            .rev()
            .filter(|i| keep(*i))
            .map(|i| ids[i].clone())
            .collect()
    };

    for (port, store) in [(mem, "memory"), (pg, "postgres")] {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        // 503 until the exporter's first write has made the schema.
        loop {
            let (status, answer) = get(
                port,
                &format!("/api/sluice/traces?service=checkout&{window}"),
            )
            .await;
            let found = answer["traces"].as_array().map_or(0, Vec::len);
            if (status == 200 && found == 25) || std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Pages of 7 give every trace once, in order, by start and by duration.
        for sort in ["start", "duration"] {
            let paged = all_pages(
                port,
                &format!("service=checkout&limit=7&sort={sort}&{window}"),
            )
            .await;
            assert_eq!(paged, newest_first, "{store} sort={sort}");
        }
        // Filters select exactly.
        for (query, want) in [
            ("status=error", pick(&|i| i % 5 == 0)),
            ("text=card%20DECLINED", pick(&|i| i % 5 == 0)),
            ("text=upstream", pick(&|i| i % 7 == 0)),
            ("attr.user.id=u1", pick(&|i| i % 3 == 1)),
            ("min_duration=200ms", pick(&|i| i >= 19)),
            ("operation=db&max_duration=4ms", Vec::new()),
            (
                "operation=db&min_duration=5ms&max_duration=5ms",
                newest_first.clone(),
            ),
            (
                "service=checkout&status=error&attr.user.id=u0",
                pick(&|i| i % 15 == 0),
            ),
        ] {
            assert_eq!(
                all_pages(port, &format!("{query}&{window}")).await,
                want,
                "{store} {query}"
            );
        }
        let (status, answer) = get(port, "/api/sluice/traces?cursor=nonsense").await;
        assert_eq!(status, 400, "{answer}");
        let (status, _) = get(port, "/api/sluice/traces?status=broken").await;
        assert_eq!(status, 400);

        // Per-operation statistics: exact counts, and percentiles as percentile_disc: exact
        // in memory, within the histograms' stated error in PostgreSQL's rollups.
        let (_, answer) = get(
            port,
            &format!("/api/sluice/operations?service=checkout&{window}"),
        )
        .await;
        let rows = answer["operations"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{store}: {answer}");
        let pay = rows.iter().find(|r| r["operation"] == "POST /pay").unwrap();
        let durations: Vec<u64> = (1..=25).map(|i| i * 10_000_000).collect();
        let p = sluice_core::store::percentiles_disc(&durations);
        assert_eq!(
            (&pay["count"], &pay["errors"]),
            (&serde_json::json!(25), &serde_json::json!(5)),
            "{store}"
        );
        let tolerance = if store == "memory" {
            0.0
        } else {
            sluice_postgres::stats::RELATIVE_ERROR
        };
        for (key, exact) in ["p50_ns", "p95_ns", "p99_ns"].iter().zip(p) {
            assert_near(
                &pay[key],
                exact,
                tolerance,
                &format!("{store} POST /pay {key}"),
            );
        }
        assert_eq!(pay["error_rate"], 0.2);
        let db = rows.iter().find(|r| r["operation"] == "db").unwrap();
        assert_eq!(db["count"], 25, "{store}");
        assert_near(
            &db["p99_ns"],
            5_000_000,
            tolerance,
            &format!("{store} db p99"),
        );

        // Throughput per interval: per whole minute, exact, zeros included.
        let (status, answer) = get(
            port,
            &format!("/api/sluice/operations?service=checkout&{window}&step=1m"),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let first = (base - 1_000_000_000) / 60_000_000_000 * 60_000_000_000;
        let after = answer["end"].as_str().unwrap();
        let pay = answer["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["operation"] == "POST /pay")
            .unwrap();
        let counts = pay["series"]["count"].as_array().unwrap();
        let mut want = vec![(0u64, 0u64); counts.len()];
        for i in 0..25u64 {
            let k = usize::try_from((base + i * 1_000_000_000 - first) / 60_000_000_000).unwrap();
            want[k].0 += 1;
            want[k].1 += u64::from(i % 5 == 0);
        }
        let got: Vec<(u64, u64)> = counts
            .iter()
            .zip(pay["series"]["errors"].as_array().unwrap())
            .map(|(n, e)| (n.as_u64().unwrap(), e.as_u64().unwrap()))
            .collect();
        assert_eq!(got, want, "{store}: {answer}");
        assert_eq!(answer["start"], rfc3339(first), "{store}");
        assert_eq!(answer["step_seconds"], 60, "{store}");
        assert!(
            counts.len() >= 3 && rfc3339(first + counts.len() as u64 * 60_000_000_000) == after,
            "{store}: {answer}"
        );
        for bad in ["step=90s", "step=0m", "step=fast", "step=1m&lookback=2d"] {
            let (status, answer) = get(
                port,
                &format!("/api/sluice/operations?service=checkout&{bad}"),
            )
            .await;
            assert_eq!(status, 400, "{store} {bad}: {answer}");
            assert!(
                answer.to_string().contains("step"),
                "{store} {bad}: {answer}"
            );
        }

        // Errors grouped by exception, the most frequent first, with the newest trace.
        let (_, answer) = get(port, &format!("/api/sluice/errors?{window}")).await;
        let groups = answer["errors"].as_array().unwrap();
        assert_eq!(groups.len(), 2, "{store}: {answer}");
        assert_eq!(groups[0]["type"], "PaymentError");
        assert_eq!(groups[0]["message"], "card declined");
        assert_eq!(groups[0]["count"], 5);
        assert_eq!(groups[0]["trace_id"], ids[20].as_str());
        assert_eq!(
            groups[0]["last_seen"],
            rfc3339(base + 20_000_000_000 + 3_000)
        );
        assert_eq!(
            groups[0]["stacktrace"],
            "PaymentError at pay()\n  at main()"
        );
        assert_eq!(groups[1]["type"], "TimeoutError");
        assert_eq!(groups[1]["count"], 4);
        assert_eq!(groups[1]["trace_id"], ids[21].as_str());

        // One trace: spans by start, the child under its root.
        let (_, answer) = get(port, &format!("/api/sluice/traces/{}", ids[0])).await;
        let spans = answer["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0]["name"], "POST /pay");
        assert_eq!(spans[0]["status"]["code"], "error");
        assert_eq!(spans[0]["events"].as_array().unwrap().len(), 2);
        assert_eq!(spans[1]["parent_span_id"], spans[0]["span_id"]);
        assert_eq!(spans[1]["kind"], "client");
        assert_eq!(spans[0]["attributes"]["user.id"], "u0");
        // Its logs, by time, with the span they were written in; the untraced one is not.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let span_ids: Vec<Json> = spans.iter().map(|s| s["span_id"].clone()).collect();
        let mut answer = answer.clone();
        while answer["logs"].as_array().map_or(0, Vec::len) < 2
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            answer = get(port, &format!("/api/sluice/traces/{}", ids[0])).await.1;
        }
        let logs = answer["logs"].as_array().unwrap();
        assert_eq!(logs.len(), 2, "{store}: {answer}");
        assert_eq!(
            logs[0]["body"],
            serde_json::json!({"step": "charge"}),
            "{store}"
        );
        assert_eq!(logs[0]["severity_text"], "INFO");
        assert_eq!(logs[1]["body"], "payment failed");
        assert_eq!(logs[1]["severity_number"], 17);
        assert_eq!(logs[1]["span_id"], span_ids[0]);
        assert_eq!(logs[1]["service"], "checkout");
        assert_eq!(logs[1]["attributes"]["attempt"], 2);
        assert_eq!(logs[1]["time_unix_nano"], (base + 5_000).to_string());

        // Two traces compared per operation.
        let (_, answer) = get(
            port,
            &format!("/api/sluice/compare?a={}&b={}", ids[0], ids[1]),
        )
        .await;
        assert_eq!(
            answer["operations"],
            serde_json::json!([
                {"service": "checkout", "operation": "POST /pay",
                 "a": {"count": 1, "duration_ns": 10_000_000}, "b": {"count": 1, "duration_ns": 20_000_000}},
                {"service": "checkout", "operation": "db",
                 "a": {"count": 1, "duration_ns": 5_000_000}, "b": {"count": 1, "duration_ns": 5_000_000}},
            ]),
            "{store}"
        );
    }

    // A trace exported as OTLP/JSON goes back into sluice's own OTLP/HTTP receiver and arrives
    // as it was first sent.
    let export = reqwest::get(format!(
        "http://127.0.0.1:{mem}/api/sluice/traces/{}/otlp",
        ids[3]
    ))
    .await
    .unwrap();
    assert_eq!(export.status(), 200);
    let body = export.bytes().await.unwrap();
    let before = sink.snapshot().span_count();
    let posted = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/traces", http))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    sink.wait_for(Duration::from_secs(10), "the exported trace again", |r| {
        r.span_count() >= before + 2
    })
    .await;
    let spans = sink.snapshot().spans();
    let again: Vec<&Span> = spans[before..].iter().collect();
    let original: Vec<&Span> = request.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .filter(|s| hex(&s.trace_id) == ids[3])
        .collect();
    assert_eq!(again, original);
    drop(sluice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_query_service_admits_only_what_its_authenticator_admits() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let (http, grpc) = (free_port(), free_port());
    let config = format!(
        "{common}  bearertokenauth/query:\n    token: reader-secret\n  jaeger_query:\n    storage: {{traces: memory}}\n    http: {{endpoint: 127.0.0.1:{http}, auth: {{authenticator: bearertokenauth/query}}}}\n    remote_storage: {{endpoint: 127.0.0.1:{grpc}, auth: {{authenticator: bearertokenauth/query}}}}\nexporters:\n  memory: {{}}\n  otlp:\n    endpoint: http://127.0.0.1:{sink}\n    tls: {{insecure: true}}\nservice:\n  extensions: [health_check, bearertokenauth/query, jaeger_query]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [memory, otlp]\n  telemetry:\n    metrics:\n      address: 127.0.0.1:{metrics}\n",
        common = ports.common(),
        sink = sink.grpc_port,
        metrics = ports.metrics,
    );
    let sluice = Sluice::start(ports, &config);
    let client = reqwest::Client::new();
    for path in ["/api/services", "/api/sluice/traces", "/"] {
        let url = format!("http://127.0.0.1:{http}{path}");
        let refused = client.get(&url).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        let wrong = client.get(&url).bearer_auth("nope").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
        let admitted = client
            .get(&url)
            .bearer_auth("reader-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(admitted.status(), 200, "{path}");
    }
    let mut storage = StorageClient::connect(grpc).await;
    let status = storage
        .unary::<_, sluice_query::proto::GetServicesResponse>(
            sluice_query::proto::GET_SERVICES,
            sluice_query::proto::GetServicesRequest {},
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        sluice
            .wait_metric(
                "sluice_jaeger_query_refused_requests{extension=\"jaeger_query\",listener=\"http\"}",
                6.0
            )
            .await,
        6.0
    );

    // Listed after the query service, the authenticator would not be running when it starts.
    let (ok, out) = crate::support::sluice_validate(
        &config.replace(
            "extensions: [health_check, bearertokenauth/query, jaeger_query]",
            "extensions: [health_check, jaeger_query, bearertokenauth/query]",
        ),
        &[],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("extensions.jaeger_query.http.auth.authenticator: authenticator `bearertokenauth/query` must be listed before `jaeger_query`"),
        "{out}"
    );
}

/// Agent pipelines: three `research-agent` traces, each two gpt-4o calls (1,000 in, 200 out)
/// and one Claude call (500 in, 100 out); one `summarize` trace with a gpt-4o call (4,000 in,
/// 1,000 out) and an unpriced embedding (300 in); and a span whose token count is text, which
/// counts for nothing.
fn agent_traces(base: u64) -> (ExportTraceServiceRequest, Vec<String>) {
    use crate::support::{kv, string};
    let llm = |trace: &[u8],
               n: u32,
               name: &str,
               model: &str,
               system: &str,
               input: i64,
               output: Option<i64>| {
        let mut attributes = vec![
            kv("gen_ai.request.model", string(model)),
            kv("gen_ai.system", string(system)),
            kv("gen_ai.usage.input_tokens", Value::IntValue(input)),
        ];
        if let Some(output) = output {
            attributes.push(kv("gen_ai.usage.output_tokens", Value::IntValue(output)));
        }
        Span {
            trace_id: trace.to_vec(),
            span_id: [[0xdd; 4], n.to_be_bytes()].concat(),
            parent_span_id: [[0xee; 4], [0; 4]].concat(),
            name: name.into(),
            kind: 3,
            start_time_unix_nano: base + u64::from(n) * 1_000_000,
            end_time_unix_nano: base + u64::from(n) * 1_000_000 + 500_000,
            attributes,
            ..Default::default()
        }
    };
    let root = |trace: &[u8], name: &str| Span {
        trace_id: trace.to_vec(),
        span_id: [[0xee; 4], [0; 4]].concat(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: base,
        end_time_unix_nano: base + 100_000_000,
        ..Default::default()
    };
    let mut spans = Vec::new();
    let mut ids = Vec::new();
    for t in 0..3u8 {
        let id = vec![0xa1, t, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        spans.push(root(&id, "research-agent"));
        spans.push(llm(
            &id,
            1,
            "chat gpt-4o",
            "gpt-4o-2024-08-06",
            "openai",
            1000,
            Some(200),
        ));
        spans.push(llm(
            &id,
            2,
            "chat gpt-4o",
            "gpt-4o-2024-08-06",
            "openai",
            1000,
            Some(200),
        ));
        spans.push(llm(
            &id,
            3,
            "chat claude",
            "claude-3-5-sonnet",
            "anthropic",
            500,
            Some(100),
        ));
        ids.push(hex(&id));
    }
    let id = vec![0xa2; 16];
    spans.push(root(&id, "summarize"));
    spans.push(llm(
        &id,
        1,
        "chat gpt-4o",
        "gpt-4o-2024-08-06",
        "openai",
        4000,
        Some(1000),
    ));
    spans.push(llm(
        &id,
        2,
        "embed",
        "text-embedding-3-small",
        "openai",
        300,
        None,
    ));
    let mut text = llm(&id, 3, "chat odd", "gpt-4o", "openai", 0, None);
    text.attributes[2] = crate::support::kv("gen_ai.usage.input_tokens", string("12"));
    spans.push(text);
    ids.push(hex(&id));
    (service_request("agents", spans), ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_usage_and_cost_per_model_operation_workflow_and_trace_from_both_stores() {
    let (url, admin) = fresh_database(&server_url(), "genai").await;
    let sink = Sink::start().await;
    let ports = Ports::new();
    let (pg, mem) = (free_port(), free_port());
    let prices = "    genai:\n      prices:\n        gpt-4o: {input_per_million: 2.5, output_per_million: 10}\n        claude-3-5-sonnet: {input_per_million: 3, output_per_million: 15}\n";
    let text = config(&ports, &url, &url, sink.grpc_port, pg, mem)
        .replace(
            "    storage: {traces: postgres}\n",
            &format!("    storage: {{traces: postgres}}\n{prices}"),
        )
        .replace(
            "    storage: {traces: memory}\n",
            &format!("    storage: {{traces: memory}}\n{prices}"),
        );
    let grpc = ports.grpc;
    let sluice = Sluice::start(ports, &text);
    let base = (now_nanos() - 60_000_000_000) / 1000 * 1000;
    let (request, ids) = agent_traces(base);
    crate::postgres::send_traces(grpc, request).await;
    sink.wait_for(Duration::from_secs(20), "the spans", |r| {
        r.span_count() >= 16
    })
    .await;
    for (port, store) in [(mem, "memory"), (pg, "postgres")] {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let answer = loop {
            // 503 until the exporter's first write has made the schema.
            let (status, answer) = get(port, "/api/sluice/genai?lookback=1h").await;
            if (status == 200 && answer["total"]["spans"] == 11)
                || std::time::Instant::now() > deadline
            {
                assert_eq!(status, 200, "{answer}");
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(answer["currency"], "USD");
        assert_eq!(
            answer["total"],
            serde_json::json!({"input_tokens": 11_800, "output_tokens": 2_500, "spans": 11, "traces": 4, "cost": null, "cost_per_trace": null}),
            "{store}: an unpriced model makes the total unknown"
        );
        assert_eq!(
            answer["models"],
            serde_json::json!([
                {"model": "claude-3-5-sonnet", "system": "anthropic", "input_tokens": 1500, "output_tokens": 300, "spans": 3, "traces": 3, "cost": 0.009, "cost_per_trace": 0.003},
                {"model": "gpt-4o-2024-08-06", "system": "openai", "input_tokens": 10_000, "output_tokens": 2_200, "spans": 7, "traces": 4, "cost": 0.047, "cost_per_trace": 0.01175},
                {"model": "text-embedding-3-small", "system": "openai", "input_tokens": 300, "output_tokens": 0, "spans": 1, "traces": 1, "cost": null, "cost_per_trace": null},
            ]),
            "{store}"
        );
        assert_eq!(
            answer["workflows"],
            serde_json::json!([
                {"workflow": "research-agent", "input_tokens": 7500, "output_tokens": 1500, "spans": 9, "traces": 3, "cost": 0.036, "cost_per_trace": 0.012},
                {"workflow": "summarize", "input_tokens": 4300, "output_tokens": 1000, "spans": 2, "traces": 1, "cost": null, "cost_per_trace": null},
            ]),
            "{store}"
        );
        let operations = answer["operations"].as_array().unwrap();
        assert_eq!(operations.len(), 3, "{store}: {answer}");
        assert_eq!(
            answer["unpriced_models"],
            serde_json::json!(["text-embedding-3-small"])
        );
        let mut traces: Vec<&str> = answer["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap())
            .collect();
        traces.sort_unstable();
        let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
        want.sort_unstable();
        assert_eq!(traces, want, "{store}");
        // The admin view's page shows the same.
        let page = reqwest::get(format!("http://127.0.0.1:{port}/genai?lookback=1h"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("research-agent") && page.contains("0.012"),
            "{store}"
        );
    }

    // The README's SQL gives the same per workflow.
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .unwrap();
    let at = readme
        .find("**What an AI pipeline costs, in SQL.**")
        .expect("the README's cost query");
    let sql = readme[at..]
        .split("```sql\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap()
        .trim()
        .trim_end_matches(';')
        .to_owned();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT workflow, traces, cost::text AS cost, unpriced_calls FROM ({sql}) AS q"
    )))
    .fetch_all(&admin)
    .await
    .unwrap();
    let got: Vec<(String, i64, String, i64)> = rows
        .iter()
        .map(|r| {
            use sqlx::Row;
            (
                r.get("workflow"),
                r.get("traces"),
                r.get("cost"),
                r.get("unpriced_calls"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("research-agent".to_owned(), 3, "0.036000".to_owned(), 0),
            ("summarize".to_owned(), 1, "0.020000".to_owned(), 1),
        ]
    );
    drop(sluice);
}

/// Asserts a JSON number is within `relative` of `exact`.
#[track_caller]
fn assert_near(got: &Json, exact: u64, relative: f64, what: &str) {
    let got = got
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: {got} is not a count"));
    #[allow(clippy::cast_precision_loss)]
    let error = (got as f64 - exact as f64).abs() / exact as f64;
    assert!(
        error <= relative + 1e-9,
        "{what}: {got}, exact {exact}, off by {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_counts_against_the_memory_limiter_and_holds_at_most_half_its_budget() {
    let ports = Ports::new();
    let text = format!(
        "{common}processors:\n  memory_limiter:\n    check_interval: 100ms\n    limit_mib: 200\n  batch:\n    timeout: 50ms\nexporters:\n  memory:\n    max_bytes: 512MiB\nservice:\n  extensions: [health_check]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [memory_limiter, batch]\n      exporters: [memory]\n  telemetry:\n    metrics:\n      address: 127.0.0.1:{metrics}\n",
        common = ports.common(),
        metrics = ports.metrics,
    );
    let grpc = ports.grpc;
    let sluice = Sluice::start(ports, &text);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let budget_mib = loop {
        let bytes = sluice
            .metric("sluice_memory_limiter_limit_bytes{processor=\"memory_limiter\",limit=\"in_flight\"}")
            .await;
        if bytes > 0.0 {
            break bytes / 1024.0 / 1024.0;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no in-flight budget reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // About 3 times the budget, as 1 MiB requests of distinct traces.
    let requests = (budget_mib * 3.0) as usize;
    for k in 1..=requests {
        let request = crate::support::trace_request(100, &"t".repeat(k), 10_000);
        let mut client = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
            format!("http://127.0.0.1:{grpc}"),
        )
        .await
        .unwrap();
        // A refusal under pressure is the limiter's to give; retry it as a client would.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Err(status) = client.export(request.clone()).await {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
            assert!(
                std::time::Instant::now() < deadline,
                "refused for 20 s: {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let held = sluice
        .metric("sluice_memory_store_bytes{exporter=\"memory\"}")
        .await;
    let evicted = sluice
        .metric("sluice_memory_store_evicted_traces{exporter=\"memory\"}")
        .await;
    let half = budget_mib * 1024.0 * 1024.0 / 2.0;
    assert!(
        held > half / 2.0 && held <= half,
        "{held} bytes held, budget {budget_mib} MiB"
    );
    assert!(evicted > 0.0, "older traces made room");
    // Once idle, what the limiter counts in flight is the store's reservation.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let in_flight = sluice
            .metric("sluice_memory_limiter_in_flight_bytes{processor=\"memory_limiter\"}")
            .await;
        let held = sluice
            .metric("sluice_memory_store_bytes{exporter=\"memory\"}")
            .await;
        if (in_flight - held).abs() < 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "in flight {in_flight}, store {held}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
