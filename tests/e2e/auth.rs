//! `bearertokenauth` on the OTLP receivers: missing, wrong and right tokens over gRPC and HTTP;
//! a refused request is answered from its headers alone (its body, oversized here, is never
//! read), counted, and nothing of it reaches an exporter; a token file changed on disk is
//! honoured without a restart; a config naming an authenticator that does not run is refused.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

use crate::support::{Ports, Sink, Sluice, TempDir, sluice_validate, trace_request};

/// A sluice whose receivers admit requests through `bearertokenauth/in` configured with
/// `auth` (YAML flow mapping), exporting to `sink`.
fn start(auth: &str, sink: &Sink) -> Sluice {
    let ports = Ports::new();
    let config = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{}\n        auth: {{authenticator: bearertokenauth/in}}\n      http:\n        endpoint: 127.0.0.1:{}\n        max_request_body_size: 1MiB\n        auth: {{authenticator: bearertokenauth/in}}\nextensions:\n  health_check:\n    endpoint: 127.0.0.1:{}\n  bearertokenauth/in: {auth}\nprocessors:\n  batch:\n    timeout: 50ms\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{}\nservice:\n  extensions: [health_check, bearertokenauth/in]\n  pipelines:\n    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}\n  telemetry:\n    metrics:\n      address: 127.0.0.1:{}\n",
        ports.grpc, ports.http, ports.health, sink.grpc_port, ports.metrics
    );
    Sluice::start(ports, &config)
}

/// Exports one span over gRPC with `authorization` (if any); the status code of the answer.
async fn grpc(port: u16, authorization: Option<&str>, tag: &str) -> tonic::Code {
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(trace_request(1, tag, 0));
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    match client.export(request).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// Posts `body` over HTTP with `authorization` (if any); the status and `WWW-Authenticate`.
async fn http(port: u16, authorization: Option<&str>, body: Vec<u8>) -> (u16, Option<String>) {
    let mut request = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let answer = request.send().await.unwrap();
    let challenge = answer
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (answer.status().as_u16(), challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_requests_with_a_configured_token_get_in_over_grpc_and_http() {
    let sink = Sink::start().await;
    let sluice = start("{tokens: [first-secret, second-secret]}", &sink);
    let ports = sluice.ports;

    assert_eq!(
        grpc(ports.grpc, None, "none").await,
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        grpc(ports.grpc, Some("Bearer nope"), "wrong").await,
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        grpc(ports.grpc, Some("Bearer first-secret"), "grpc-ok").await,
        tonic::Code::Ok
    );
    assert_eq!(
        grpc(ports.grpc, Some("Bearer second-secret"), "grpc-ok2").await,
        tonic::Code::Ok
    );

    let one = trace_request(1, "http-ok", 0).encode_to_vec();
    let challenge = Some("Bearer realm=\"sluice\"".to_owned());
    assert_eq!(
        http(ports.http, None, one.clone()).await,
        (401, challenge.clone())
    );
    assert_eq!(
        http(ports.http, Some("Basic Zm9vOmJhcg=="), one.clone()).await,
        (401, challenge.clone())
    );
    assert_eq!(
        http(ports.http, Some("Bearer first-secret"), one).await.0,
        200
    );

    // A refused request is answered before its body is read: 2 MiB, over the 1 MiB limit, gets
    // 401, not 413.
    let oversized = trace_request(2000, "big", 1000).encode_to_vec();
    assert!(oversized.len() > 1 << 20);
    assert_eq!(
        http(ports.http, Some("Bearer wrong"), oversized.clone()).await,
        (401, challenge)
    );
    assert_eq!(
        http(ports.http, Some("Bearer first-secret"), oversized)
            .await
            .0,
        413
    );

    // Exactly the admitted spans reach the exporter.
    sink.wait_for(Duration::from_secs(10), "the admitted spans", |r| {
        r.span_count() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let names: Vec<String> = sink
        .received
        .lock()
        .unwrap()
        .spans()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for refused in ["none", "wrong", "big"] {
        assert!(!names.iter().any(|n| n.contains(refused)), "{names:?}");
    }
    assert_eq!(
        sluice
            .wait_metric(
                "otelcol_receiver_requests{receiver=\"otlp\",transport=\"grpc\",outcome=\"unauthenticated\"}",
                2.0
            )
            .await,
        2.0
    );
    assert_eq!(
        sluice
            .wait_metric(
                "otelcol_receiver_requests{receiver=\"otlp\",transport=\"http\",outcome=\"unauthenticated\"}",
                3.0
            )
            .await,
        3.0
    );
    let logs = sluice.logs();
    assert!(logs.contains("request refused"), "{logs}");
    assert!(
        !logs.contains("nope") && !logs.contains("first-secret"),
        "credentials in the log:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_file_changed_on_disk_is_honoured_without_a_restart() {
    let dir = TempDir::new("token");
    let file = dir.0.join("token");
    std::fs::write(&file, "old-token\n").unwrap();
    let sink = Sink::start().await;
    let sluice = start(&format!("{{filename: {}}}", file.display()), &sink);
    let port = sluice.ports.grpc;
    assert_eq!(
        grpc(port, Some("Bearer old-token"), "a").await,
        tonic::Code::Ok
    );

    let tmp = dir.0.join(".token.tmp");
    std::fs::write(&tmp, "new-token\n").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while grpc(port, Some("Bearer new-token"), "b").await != tonic::Code::Ok {
        assert!(
            Instant::now() < deadline,
            "the new token was never accepted:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        grpc(port, Some("Bearer old-token"), "c").await,
        tonic::Code::Unauthenticated
    );
    assert!(sluice.logs().contains("bearer token reloaded"));
}

#[test]
fn validate_refuses_an_authenticator_that_does_not_run() {
    let (valid, text) = sluice_validate(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        auth: {authenticator: bearertokenauth/missing}\n      http:\n        auth: {authenticator: bearertokenauth/idle}\nextensions:\n  bearertokenauth/idle: {token: t}\nexporters:\n  debug: {}\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [debug]}\n",
        &[],
    );
    assert!(!valid, "{text}");
    for expected in [
        "receivers.otlp.protocols.grpc.auth.authenticator: authenticator `bearertokenauth/missing` is not defined under `extensions`",
        "receivers.otlp.protocols.http.auth.authenticator: authenticator `bearertokenauth/idle` is not listed in `service.extensions`, so it does not run",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}
