//! The `jaeger` exporter against a Jaeger collector peer built from jaeger-idl's definitions
//! (`sluice_jaeger::proto`): every mapping rule asserted field by field on what arrives, with
//! OTLP sent by a raw client (for full control) and by the OpenTelemetry SDK.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use sluice_jaeger::proto::{
    self, Batch, KeyValue as Tag, PostSpansRequest, PostSpansResponse, SpanRefType, ValueType,
};

use crate::support::{Ports, Sluice, hex, kv, string as s};

/// What the peer does with each call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Accept,
    /// Answer UNAVAILABLE this many times, then accept.
    UnavailableFirst(usize),
    Reject,
}

#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) batches: Arc<Mutex<Vec<Batch>>>,
    calls: Arc<Mutex<usize>>,
    mode: Mode,
}

struct PostSpans(Peer);

impl tonic::server::UnaryService<PostSpansRequest> for PostSpans {
    type Response = PostSpansResponse;
    type Future = BoxFuture<'static, Result<tonic::Response<PostSpansResponse>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<PostSpansRequest>) -> Self::Future {
        let peer = self.0.clone();
        Box::pin(async move {
            let n = {
                let mut calls = peer.calls.lock().unwrap();
                *calls += 1;
                *calls
            };
            match peer.mode {
                Mode::UnavailableFirst(k) if n <= k => {
                    return Err(tonic::Status::unavailable("collector warming up"));
                }
                Mode::Reject => {
                    return Err(tonic::Status::invalid_argument("span rejected by peer"));
                }
                _ => {}
            }
            let batch = request.into_inner().batch.unwrap_or_default();
            peer.batches.lock().unwrap().push(batch);
            Ok(tonic::Response::new(PostSpansResponse {}))
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Peer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let peer = self.clone();
        Box::pin(async move {
            assert_eq!(req.uri().path(), proto::POST_SPANS_PATH);
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
                PostSpansResponse,
                PostSpansRequest,
            >::default());
            Ok(grpc.unary(PostSpans(peer), req).await)
        })
    }
}

impl tonic::server::NamedService for Peer {
    const NAME: &'static str = "jaeger.api_v2.CollectorService";
}

async fn start_peer(mode: Mode) -> (Peer, u16) {
    start_peer_at(mode, "127.0.0.1:0").await
}

/// A peer listening on `address` (a fixed port, for configs that name one).
pub(crate) async fn start_peer_at(mode: Mode, address: &str) -> (Peer, u16) {
    let peer = Peer {
        batches: Arc::new(Mutex::new(Vec::new())),
        calls: Arc::new(Mutex::new(0)),
        mode,
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .unwrap_or_else(|e| panic!("the Jaeger peer cannot listen on {address}: {e}"));
    let port = listener.local_addr().unwrap().port();
    let incoming = crate::support::incoming(listener);
    let router = tonic::transport::Server::builder().add_service(peer.clone());
    tokio::spawn(async move {
        let _ = router.serve_with_incoming(incoming).await;
    });
    (peer, port)
}

fn start_sluice(jaeger_port: u16, extra: &str) -> Sluice {
    let ports = Ports::new();
    let config = format!(
        "{}processors:\n  batch:\n    timeout: 50ms\nexporters:\n  jaeger:\n    endpoint: 127.0.0.1:{jaeger_port}\n    tls: {{insecure: true}}\n    retry_on_failure: {{initial_interval: 100ms}}\n{extra}service:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [batch], exporters: [jaeger]}}\n{}",
        ports.common(),
        ports.telemetry()
    );
    Sluice::start(ports, &config)
}

fn tag_str(key: &str, v: &str) -> Tag {
    Tag {
        key: key.into(),
        v_type: ValueType::String as i32,
        v_str: v.into(),
        ..Default::default()
    }
}

fn tag_i64(key: &str, v: i64) -> Tag {
    Tag {
        key: key.into(),
        v_type: ValueType::Int64 as i32,
        v_int64: v,
        ..Default::default()
    }
}

const T0: u64 = 1_700_000_000_123_456_789;

/// A request exercising every mapping rule.
fn request() -> ExportTraceServiceRequest {
    let trace = vec![
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ];
    let other_trace = vec![7u8; 16];
    let server = Span {
        trace_id: trace.clone(),
        span_id: vec![0, 0, 0, 0, 0, 0, 0, 1],
        name: "GET /checkout".into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: T0,
        end_time_unix_nano: T0 + 1_500_000_250,
        trace_state: "vendor=abc".into(),
        flags: 0x101,
        attributes: vec![
            kv("http.method", s("GET")),
            kv("http.status_code", any_value::Value::IntValue(500)),
            kv("sampled.ratio", any_value::Value::DoubleValue(0.25)),
            kv("cache.hit", any_value::Value::BoolValue(false)),
            kv("blob", any_value::Value::BytesValue(vec![1, 2, 255])),
            kv(
                "tags",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(s("a")),
                        },
                        AnyValue {
                            value: Some(any_value::Value::IntValue(2)),
                        },
                    ],
                }),
            ),
            kv(
                "user",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![
                        kv("id", any_value::Value::IntValue(7)),
                        kv("vip", any_value::Value::BoolValue(true)),
                    ],
                }),
            ),
        ],
        dropped_attributes_count: 3,
        events: vec![
            Event {
                time_unix_nano: T0 + 1000,
                name: "exception".into(),
                attributes: vec![
                    kv("exception.type", s("IOError")),
                    kv("exception.message", s("disk full")),
                ],
                dropped_attributes_count: 0,
            },
            Event {
                time_unix_nano: T0 + 2000,
                name: "ignored-name".into(),
                attributes: vec![kv("event", s("from-attribute"))],
                dropped_attributes_count: 0,
            },
        ],
        dropped_events_count: 1,
        links: vec![
            Link {
                trace_id: other_trace.clone(),
                span_id: vec![9; 8],
                attributes: vec![kv("why", s("batch job"))],
                ..Default::default()
            },
            Link {
                trace_id: other_trace.clone(),
                span_id: vec![8; 8],
                attributes: vec![kv("opentracing.ref_type", s("child_of"))],
                ..Default::default()
            },
        ],
        dropped_links_count: 2,
        status: Some(Status {
            code: status::StatusCode::Error as i32,
            message: "payment failed".into(),
        }),
        ..Default::default()
    };
    let client = Span {
        trace_id: trace.clone(),
        span_id: vec![0, 0, 0, 0, 0, 0, 0, 2],
        parent_span_id: vec![0, 0, 0, 0, 0, 0, 0, 1],
        name: "charge".into(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: T0 + 10,
        end_time_unix_nano: T0 + 20,
        status: Some(Status {
            code: status::StatusCode::Ok as i32,
            message: String::new(),
        }),
        ..Default::default()
    };
    let internal = Span {
        trace_id: trace.clone(),
        span_id: vec![0, 0, 0, 0, 0, 0, 0, 3],
        parent_span_id: vec![0, 0, 0, 0, 0, 0, 0, 1],
        name: "validate".into(),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: T0 + 30,
        end_time_unix_nano: T0 + 40,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", s("checkout")),
                        kv("host.name", s("node-1")),
                        kv("service.instance.id", any_value::Value::IntValue(42)),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "io.opentelemetry.http".into(),
                        version: "1.2.0".into(),
                        ..Default::default()
                    }),
                    spans: vec![server, client, internal],
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("k8s.pod.name", s("worker-0"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![5; 16],
                        span_id: vec![5; 8],
                        name: "orphan".into(),
                        start_time_unix_nano: T0,
                        end_time_unix_nano: T0 + 5,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_mapping_rule_arrives_at_the_jaeger_peer() {
    let (peer, port) = start_peer(Mode::Accept).await;
    let sluice = start_sluice(port, "");
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", sluice.ports.grpc))
        .await
        .unwrap();
    client.export(request()).await.unwrap();
    wait(&peer, 4).await;
    let batches = peer.batches.lock().unwrap().clone();

    let checkout = batches
        .iter()
        .find(|b| b.process.as_ref().unwrap().service_name == "checkout")
        .unwrap();
    assert_eq!(
        checkout.process.as_ref().unwrap().tags,
        vec![
            tag_str("host.name", "node-1"),
            tag_i64("service.instance.id", 42)
        ],
        "other resource attributes become process tags"
    );
    let server = checkout
        .spans
        .iter()
        .find(|s| s.operation_name == "GET /checkout")
        .unwrap();
    assert_eq!(hex(&server.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(server.span_id, vec![0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(server.flags, 1, "sampled");
    assert_eq!(
        server.start_time,
        Some(proto::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789
        })
    );
    assert_eq!(
        server.duration,
        Some(proto::Duration {
            seconds: 1,
            nanos: 500_000_250
        })
    );
    assert!(server.process.is_none() && server.process_id.is_empty());
    let refs: Vec<(Vec<u8>, Vec<u8>, i32)> = server
        .references
        .iter()
        .map(|r| (r.trace_id.clone(), r.span_id.clone(), r.ref_type))
        .collect();
    assert_eq!(
        refs,
        vec![
            (vec![7; 16], vec![9; 8], SpanRefType::FollowsFrom as i32),
            (vec![7; 16], vec![8; 8], SpanRefType::ChildOf as i32),
        ],
        "links become references; opentracing.ref_type=child_of is honoured"
    );
    let bool_tag = |k: &str, v: bool| Tag {
        key: k.into(),
        v_type: ValueType::Bool as i32,
        v_bool: v,
        ..Default::default()
    };
    let expected_tags = vec![
        tag_str("otel.scope.name", "io.opentelemetry.http"),
        tag_str("otel.scope.version", "1.2.0"),
        tag_str("otel.library.name", "io.opentelemetry.http"),
        tag_str("otel.library.version", "1.2.0"),
        tag_str("http.method", "GET"),
        tag_i64("http.status_code", 500),
        Tag {
            key: "sampled.ratio".into(),
            v_type: ValueType::Float64 as i32,
            v_float64: 0.25,
            ..Default::default()
        },
        bool_tag("cache.hit", false),
        Tag {
            key: "blob".into(),
            v_type: ValueType::Binary as i32,
            v_binary: vec![1, 2, 255],
            ..Default::default()
        },
        tag_str("tags", r#"["a",2]"#),
        tag_str("user", r#"{"id":7,"vip":true}"#),
        tag_str("span.kind", "server"),
        tag_str("otel.status_code", "ERROR"),
        bool_tag("error", true),
        tag_str("otel.status_description", "payment failed"),
        tag_str("w3c.tracestate", "vendor=abc"),
        tag_i64("otel.dropped_attributes_count", 3),
        tag_i64("otel.dropped_events_count", 1),
        tag_i64("otel.dropped_links_count", 2),
    ];
    assert_eq!(server.tags, expected_tags);
    assert_eq!(server.logs.len(), 2);
    assert_eq!(
        server.logs[0].timestamp,
        Some(proto::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_457_789
        })
    );
    assert_eq!(
        server.logs[0].fields,
        vec![
            tag_str("event", "exception"),
            tag_str("exception.type", "IOError"),
            tag_str("exception.message", "disk full")
        ]
    );
    assert_eq!(
        server.logs[1].fields,
        vec![tag_str("event", "from-attribute")],
        "an `event` attribute wins over the name"
    );

    let client_span = checkout
        .spans
        .iter()
        .find(|s| s.operation_name == "charge")
        .unwrap();
    assert_eq!(client_span.references.len(), 1);
    assert_eq!(
        client_span.references[0].ref_type,
        SpanRefType::ChildOf as i32
    );
    assert_eq!(
        client_span.references[0].span_id,
        vec![0, 0, 0, 0, 0, 0, 0, 1]
    );
    assert_eq!(client_span.references[0].trace_id, server.trace_id);
    assert!(client_span.tags.contains(&tag_str("span.kind", "client")));
    assert!(
        client_span
            .tags
            .contains(&tag_str("otel.status_code", "OK"))
    );
    assert!(!client_span.tags.iter().any(|t| t.key == "error"));
    assert_eq!(
        client_span.duration,
        Some(proto::Duration {
            seconds: 0,
            nanos: 10
        })
    );

    let internal = checkout
        .spans
        .iter()
        .find(|s| s.operation_name == "validate")
        .unwrap();
    assert!(
        !internal.tags.iter().any(|t| t.key == "span.kind"),
        "internal adds no span.kind tag (spec)"
    );
    assert!(
        !internal
            .tags
            .iter()
            .any(|t| t.key.starts_with("otel.status")),
        "unset status adds no tag"
    );

    let orphan = batches
        .iter()
        .find(|b| b.spans.iter().any(|s| s.operation_name == "orphan"))
        .unwrap();
    let process = orphan.process.as_ref().unwrap();
    assert_eq!(
        process.service_name, "unknown_service",
        "the specification's fallback"
    );
    assert_eq!(process.tags, vec![tag_str("k8s.pod.name", "worker-0")]);
    assert_eq!(
        sluice
            .wait_metric("otelcol_exporter_sent_spans{exporter=\"jaeger\"}", 4.0)
            .await,
        4.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sdk_spans_reach_jaeger_retried_through_unavailability_and_split_by_size() {
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_otlp::WithExportConfig;
    let (peer, port) = start_peer(Mode::UnavailableFirst(2)).await;
    let sluice = start_sluice(port, "    max_request_size: 2KiB\n");
    let grpc = sluice.ports.grpc;
    tokio::task::spawn_blocking(move || {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://127.0.0.1:{grpc}"))
            .build()
            .unwrap();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("sdk-to-jaeger")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("e2e");
        for i in 0..30 {
            let mut span = tracer.start(format!("op-{i}"));
            span.set_attribute(opentelemetry::KeyValue::new("i", i as i64));
            span.end();
        }
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();
    wait(&peer, 30).await;
    let batches = peer.batches.lock().unwrap().clone();
    assert!(batches.len() > 1, "2 KiB requests force a split");
    let mut names: Vec<String> = batches
        .iter()
        .flat_map(|b| b.spans.iter().map(|s| s.operation_name.clone()))
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 30);
    for b in &batches {
        assert_eq!(b.process.as_ref().unwrap().service_name, "sdk-to-jaeger");
    }
    assert!(
        *peer.calls.lock().unwrap() > batches.len(),
        "UNAVAILABLE answers were retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_argument_is_permanent_counted_and_logged() {
    let (peer, port) = start_peer(Mode::Reject).await;
    let sluice = start_sluice(port, "");
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", sluice.ports.grpc))
        .await
        .unwrap();
    client.export(request()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sluice
        .metric("otelcol_exporter_send_failed_spans{exporter=\"jaeger\"}")
        .await
        < 4.0
    {
        assert!(std::time::Instant::now() < deadline, "failure not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *peer.calls.lock().unwrap(),
        1,
        "a permanent error is not retried"
    );
    assert!(
        sluice.logs().contains("span rejected by peer"),
        "{}",
        sluice.logs()
    );
}

pub(crate) async fn wait(peer: &Peer, spans: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n: usize = peer
            .batches
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.spans.len())
            .sum();
        if n >= spans {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "peer got {n} of {spans} spans"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
