//! `bearertokenauth` on the OTLP receivers: missing, wrong and right tokens over gRPC and HTTP;
//! a refused request is answered from its headers alone (its body, declared oversized, is never
//! read), counted, and nothing of it reaches an exporter; a token file changed on disk is
//! honoured without a restart; a config naming an authenticator that does not run is refused.
//! `basicauth` likewise, with the admitted user stamped on the data (`from_context`); and one
//! sluice authenticating to another with client-side `bearertokenauth` and `basicauth`.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

use crate::support::{Ports, Sink, Sluice, TempDir, sluice_validate, trace_request};

/// A sluice whose receivers admit requests through `bearertokenauth/in` configured with
/// `auth` (YAML flow mapping), exporting to `sink`.
fn start(auth: &str, sink: &Sink) -> Sluice {
    start_with("bearertokenauth/in", auth, "[batch]", "", sink)
}

/// A sluice whose receivers admit requests through extension `id` configured with `auth`,
/// keep request metadata, run `processors` (`extra` defines more than `batch`) and export to
/// `sink`.
fn start_with(id: &str, auth: &str, processors: &str, extra: &str, sink: &Sink) -> Sluice {
    let ports = Ports::new();
    let config = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{}\n        include_metadata: true\n        auth: {{authenticator: {id}}}\n      http:\n        endpoint: 127.0.0.1:{}\n        max_request_body_size: 1MiB\n        include_metadata: true\n        auth: {{authenticator: {id}}}\nextensions:\n  health_check:\n    endpoint: 127.0.0.1:{}\n  {id}: {auth}\nprocessors:\n  batch:\n    timeout: 50ms\n{extra}exporters:\n  otlp:\n    endpoint: http://127.0.0.1:{}\nservice:\n  extensions: [health_check, {id}]\n  pipelines:\n    traces: {{receivers: [otlp], processors: {processors}, exporters: [otlp]}}\n  telemetry:\n    metrics:\n      address: 127.0.0.1:{}\n",
        ports.grpc, ports.http, ports.health, sink.grpc_port, ports.metrics
    );
    Sluice::start(ports, &config)
}

/// `Authorization: Basic` for `user` and `password`.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
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

/// Sends only the headers of a POST declaring a body of `length` bytes, and reads the answer
/// without sending any of it; the status and `WWW-Authenticate`.
async fn headers_only(port: u16, authorization: &str, length: usize) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/x-protobuf\r\nauthorization: {authorization}\r\ncontent-length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "no answer before the body was sent");
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let challenge = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("www-authenticate")
            .then(|| value.trim().to_owned())
    });
    (status, challenge)
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

    // A refused request is answered from its headers alone: a 3 MiB body, over the 1 MiB limit,
    // is declared and never sent, and the answer is 401, not 413 (nor a wait for the body). With
    // the right token the same headers get 413 at once. (Sending such a body instead races the
    // answer's close against the upload: the client may see a broken pipe.)
    assert_eq!(
        headers_only(ports.http, "Bearer wrong", 3 << 20).await,
        (401, challenge)
    );
    assert_eq!(
        headers_only(ports.http, "Bearer first-secret", 3 << 20)
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
    for refused in ["none", "wrong"] {
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
async fn basic_credentials_get_in_over_grpc_and_http_and_the_user_is_stamped_on_the_data() {
    let sink = Sink::start().await;
    // ann's password is bcrypt-hashed (cost 4), bob's SHA-1; both are `secret`. The client's
    // own `user` attribute is overwritten by what basicauth established.
    let htpasswd = "ann:$2y$04$rilMvC3n3LyVQLLlK27wFuJqULrSPB8AqB8uK1tdZ8n4/wy8/KDOG\\nbob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=";
    let sluice = start_with(
        "basicauth/in",
        &format!("{{htpasswd: {{inline: \"{htpasswd}\"}}}}"),
        "[attributes/user, batch]",
        "  attributes/user:\n    actions: [{key: user, from_context: auth.username, action: upsert}, {key: type, from_context: metadata.content-type, action: upsert}]\n",
        &sink,
    );
    let ports = sluice.ports;
    let ann = basic("ann", "secret");
    let bob = basic("bob", "secret");
    for (who, value) in [
        ("none", None),
        ("wrong", Some(basic("ann", "Secret"))),
        ("nobody", Some(basic("eve", "secret"))),
        ("bearer", Some("Bearer secret".to_owned())),
    ] {
        assert_eq!(
            grpc(ports.grpc, value.as_deref(), who).await,
            tonic::Code::Unauthenticated,
            "{who}"
        );
        let (status, challenge) = http(
            ports.http,
            value.as_deref(),
            trace_request(1, who, 0).encode_to_vec(),
        )
        .await;
        assert_eq!(status, 401, "{who}");
        assert_eq!(challenge.as_deref(), Some("Basic realm=\"sluice\""));
    }
    assert_eq!(
        grpc(ports.grpc, Some(&ann), "ann-grpc").await,
        tonic::Code::Ok
    );
    assert_eq!(
        grpc(ports.grpc, Some(&bob), "bob-grpc").await,
        tonic::Code::Ok
    );
    let one = |tag| trace_request(1, tag, 0).encode_to_vec();
    assert_eq!(http(ports.http, Some(&ann), one("ann-http")).await.0, 200);
    assert_eq!(http(ports.http, Some(&bob), one("bob-http")).await.0, 200);

    sink.wait_for(Duration::from_secs(10), "the admitted spans", |r| {
        r.span_count() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = sink.received.lock().unwrap().spans();
    assert_eq!(spans.len(), 4, "only the admitted spans arrive");
    for span in &spans {
        let user = span.name.split('-').next().unwrap();
        assert_eq!(
            crate::support::attr(&span.attributes, "user"),
            Some(&crate::support::string(user)),
            "{}",
            span.name
        );
        // Request metadata came along too (the credential header never does).
        let expected = if span.name.contains("grpc") {
            "application/grpc"
        } else {
            "application/x-protobuf"
        };
        assert_eq!(
            crate::support::attr(&span.attributes, "type"),
            Some(&crate::support::string(expected)),
            "{}",
            span.name
        );
    }
    let logs = sluice.logs();
    assert!(
        !logs.contains("c2VjcmV0"),
        "credentials in the log:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_sluice_authenticates_to_another_with_bearer_and_basic_credentials() {
    let sink = Sink::start().await;
    // The gateway: bearer tokens over gRPC, basic credentials over HTTP.
    let gateway = Ports::new();
    let gateway_config = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{}\n        auth: {{authenticator: bearertokenauth/in}}\n      http:\n        endpoint: 127.0.0.1:{}\n        auth: {{authenticator: basicauth/in}}\nextensions:\n  health_check:\n    endpoint: 127.0.0.1:{}\n  bearertokenauth/in: {{token: agent-token}}\n  basicauth/in: {{htpasswd: {{inline: \"agent:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\"}}}}\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{}\nservice:\n  extensions: [health_check, bearertokenauth/in, basicauth/in]\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [otlp]}}\n  telemetry:\n    metrics:\n      address: 127.0.0.1:{}\n",
        gateway.grpc, gateway.http, gateway.health, sink.grpc_port, gateway.metrics
    );
    let gateway = Sluice::start(gateway, &gateway_config);
    // The agent sends every span twice: over gRPC with a token, over HTTP with a password read
    // from a file.
    let dir = TempDir::new("client-auth");
    let password = dir.0.join("password");
    std::fs::write(&password, "secret\n").unwrap();
    let agent = Ports::new();
    let agent_config = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{}\n      http:\n        endpoint: 127.0.0.1:{}\nextensions:\n  health_check:\n    endpoint: 127.0.0.1:{}\n  bearertokenauth/out: {{token: agent-token}}\n  basicauth/out: {{client_auth: {{username: agent, password_file: {}}}}}\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{}\n    auth: {{authenticator: bearertokenauth/out}}\n  otlphttp:\n    endpoint: http://127.0.0.1:{}\n    auth: {{authenticator: basicauth/out}}\nservice:\n  extensions: [health_check, bearertokenauth/out, basicauth/out]\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [otlp, otlphttp]}}\n  telemetry:\n    metrics:\n      address: 127.0.0.1:{}\n",
        agent.grpc,
        agent.http,
        agent.health,
        password.display(),
        gateway.ports.grpc,
        gateway.ports.http,
        agent.metrics
    );
    let agent = Sluice::start(agent, &agent_config);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", agent.ports.grpc))
        .await
        .unwrap();
    client.export(trace_request(3, "relayed", 0)).await.unwrap();
    sink.wait_for(Duration::from_secs(15), "both copies of 3 spans", |r| {
        r.span_count() >= 6
    })
    .await;
    assert_eq!(
        gateway
            .metric("otelcol_receiver_accepted_spans{receiver=\"otlp\",transport=\"grpc\"}")
            .await,
        3.0
    );
    assert_eq!(
        gateway
            .metric("otelcol_receiver_accepted_spans{receiver=\"otlp\",transport=\"http\"}")
            .await,
        3.0
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
    let first = grpc(port, Some("Bearer old-token"), "a").await;
    assert_eq!(first, tonic::Code::Ok, "{}", sluice.logs());

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
    let old = grpc(port, Some("Bearer old-token"), "c").await;
    assert_eq!(old, tonic::Code::Unauthenticated, "{}", sluice.logs());
    assert!(
        sluice.logs().contains("bearer token reloaded"),
        "{}",
        sluice.logs()
    );
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
