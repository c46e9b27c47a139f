//! Server TLS on the OTLP receivers, with certificates of CAs the test makes (rcgen): the Python
//! SDK sends over TLS on gRPC and HTTP; plaintext clients are refused; with `client_ca_file`, only
//! clients with a certificate from that CA get in; `min_version` is enforced; and certificates
//! swapped on disk are served after `reload_interval`, without a restart and without dropping a
//! connection already open.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::python_sdk::run_script;
use crate::support::{Ports, Sink, Sluice, TempDir, trace_request};

/// A CA that signs server and client certificates, written as PEM files into a directory.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate and its key, as PEM: for `localhost` and 127.0.0.1 (a server) or a
    /// client.
    fn issue(&self, server: bool) -> (String, String) {
        let names = if server {
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
        } else {
            vec!["client.sluice.test".to_owned()]
        };
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `dir/name` through a rename, as cert-manager and editors replace files, so
/// that a reader never sees half a file.
/// A server certificate from `ca` written to `dir`, and the `tls` section (YAML flow mapping)
/// that serves it, with `extra` keys appended (`, min_version: "1.3"`).
fn server_tls(dir: &Path, ca: &Ca, extra: &str) -> String {
    let (cert, key) = ca.issue(true);
    format!(
        "{{cert_file: {}, key_file: {}{extra}}}",
        write(dir, "server.pem", &cert).display(),
        write(dir, "server.key", &key).display()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// A sluice whose OTLP receivers speak TLS with `tls` (YAML flow mapping), exporting to `sink`.
fn start(ports: Ports, tls: &str, sink: &Sink) -> Sluice {
    let config = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{}\n        tls: {tls}\n      http:\n        endpoint: 127.0.0.1:{}\n        tls: {tls}\nextensions:\n  health_check:\n    endpoint: 127.0.0.1:{}\nprocessors:\n  batch:\n    timeout: 50ms\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}\n    metrics: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}\n    logs: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}\n{}",
        ports.grpc,
        ports.http,
        ports.health,
        sink.grpc_port,
        ports.telemetry()
    );
    Sluice::start(ports, &config)
}

/// An OTLP/gRPC client over TLS trusting `ca`, presenting `identity` if given.
async fn tls_client(
    port: u16,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<TraceServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(TraceServiceClient::new(channel))
}

/// Whether an export over gRPC with TLS goes through.
async fn exports(port: u16, ca: &str, identity: Option<&(String, String)>) -> bool {
    match tls_client(port, ca, identity).await {
        Ok(mut client) => client.export(trace_request(1, "tls", 0)).await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_sdk_sends_over_tls_and_plaintext_clients_are_refused() {
    let dir = TempDir::new("tls");
    let ca = Ca::new("sluice test CA");
    let ca_file = write(&dir.0, "ca.pem", &ca.pem());
    let sink = Sink::start().await;
    let ports = Ports::new();
    let sluice = start(ports, &server_tls(&dir.0, &ca, ""), &sink);
    let ca_arg = ca_file.display().to_string();
    for (protocol, endpoint) in [
        ("grpc", format!("https://localhost:{}", ports.grpc)),
        ("http", format!("https://localhost:{}", ports.http)),
    ] {
        let service = format!("tls-{protocol}");
        let summary = run_script(&[
            "--endpoint",
            &endpoint,
            "--protocol",
            protocol,
            "--service-name",
            &service,
            "--spans",
            "2",
            "--logs",
            "1",
            "--ca-file",
            &ca_arg,
        ]);
        assert_eq!(summary["spans"], 3, "{protocol}");
    }
    sink.wait_for(Duration::from_secs(10), "the SDK's spans over TLS", |r| {
        r.span_count() >= 6
    })
    .await;

    // Plaintext is refused on both listeners.
    let plain = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc)).await;
    let refused = match plain {
        Ok(mut client) => client.export(trace_request(1, "plain", 0)).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a plaintext gRPC client got in");
    let http = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/traces", ports.http))
        .header("content-type", "application/x-protobuf")
        .body(Vec::new())
        .send()
        .await;
    assert!(
        http.is_err(),
        "a plaintext HTTP client got an answer: {http:?}"
    );
    assert!(
        sluice.logs().contains("tls handshake failed"),
        "{}",
        sluice.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_lets_in_only_clients_with_a_certificate_from_the_client_ca() {
    let dir = TempDir::new("mtls");
    let ca = Ca::new("sluice server and client CA");
    let other = Ca::new("somebody else's CA");
    let good = ca.issue(false);
    let bad = other.issue(false);
    let ca_file = write(&dir.0, "ca.pem", &ca.pem());
    let good_cert = write(&dir.0, "client.pem", &good.0);
    let good_key = write(&dir.0, "client.key", &good.1);
    let sink = Sink::start().await;
    let ports = Ports::new();
    let _sluice = start(
        ports,
        &server_tls(
            &dir.0,
            &ca,
            &format!(", client_ca_file: {}", ca_file.display()),
        ),
        &sink,
    );
    let ca_pem = ca.pem();
    assert!(
        !exports(ports.grpc, &ca_pem, None).await,
        "a client without a certificate got in"
    );
    assert!(
        !exports(ports.grpc, &ca_pem, Some(&bad)).await,
        "a client with another CA's certificate got in"
    );
    assert!(exports(ports.grpc, &ca_pem, Some(&good)).await);
    // The SDK, with the right certificate, over HTTP.
    let (ca_arg, cert_arg, key_arg) = (
        ca_file.display().to_string(),
        good_cert.display().to_string(),
        good_key.display().to_string(),
    );
    let endpoint = format!("https://localhost:{}", ports.http);
    run_script(&[
        "--endpoint",
        &endpoint,
        "--protocol",
        "http",
        "--service-name",
        "mtls",
        "--spans",
        "1",
        "--logs",
        "1",
        "--ca-file",
        &ca_arg,
        "--client-cert",
        &cert_arg,
        "--client-key",
        &key_arg,
    ]);
    sink.wait_for(
        Duration::from_secs(10),
        "spans from the right clients",
        |r| r.span_count() >= 3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_version_refuses_older_tls() {
    let dir = TempDir::new("tls13");
    let ca = Ca::new("sluice test CA");
    let sink = Sink::start().await;
    let ports = Ports::new();
    let _sluice = start(
        ports,
        &server_tls(&dir.0, &ca, ", min_version: \"1.3\""),
        &sink,
    );
    let client = |max: reqwest::tls::Version| {
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
            .max_tls_version(max)
            .build()
            .unwrap()
    };
    let url = format!("https://localhost:{}/v1/traces", ports.http);
    let post = |c: reqwest::Client| {
        c.post(url.clone())
            .header("content-type", "application/x-protobuf")
            .body(prost::Message::encode_to_vec(&trace_request(1, "v", 0)))
            .send()
    };
    assert!(post(client(reqwest::tls::Version::TLS_1_2)).await.is_err());
    let answer = post(client(reqwest::tls::Version::TLS_1_3)).await.unwrap();
    assert!(answer.status().is_success(), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_swapped_on_disk_are_served_after_reload_interval() {
    let dir = TempDir::new("reload");
    let first = Ca::new("first CA");
    let second = Ca::new("second CA");
    let sink = Sink::start().await;
    let ports = Ports::new();
    let sluice = start(
        ports,
        &server_tls(&dir.0, &first, ", reload_interval: 200ms"),
        &sink,
    );
    // A connection opened before the swap.
    let mut open = tls_client(ports.grpc, &first.pem(), None).await.unwrap();
    open.export(trace_request(1, "before", 0)).await.unwrap();

    // The certificate is renewed in place, by another CA.
    let (cert, key) = second.issue(true);
    write(&dir.0, "server.key", &key);
    write(&dir.0, "server.pem", &cert);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !exports(ports.grpc, &second.pem(), None).await {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !exports(ports.grpc, &first.pem(), None).await,
        "the old certificate is still served to new connections"
    );
    // The connection opened before the swap still works: no restart, nothing dropped.
    open.export(trace_request(1, "after", 0)).await.unwrap();
    assert!(sluice.logs().contains("tls certificate reloaded"));
    sink.wait_for(Duration::from_secs(10), "every span", |r| {
        r.span_count() >= 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_health_check_and_self_metrics_serve_over_tls_too() {
    let dir = TempDir::new("health-tls");
    let ca = Ca::new("sluice test CA");
    let ports = Ports::new();
    let secure = crate::support::free_port();
    // The plain health check is the test harness' readiness probe; the second one speaks TLS,
    // and so do the self-metrics.
    let tls = server_tls(&dir.0, &ca, "");
    let config = format!(
        "{}  health_check/tls:\n    endpoint: 127.0.0.1:{secure}\n    tls: {tls}\nexporters:\n  debug: {{}}\nservice:\n  extensions: [health_check, health_check/tls]\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [debug]}}\n  telemetry:\n    metrics:\n      address: 127.0.0.1:{}\n      tls: {tls}\n",
        ports.common(),
        ports.metrics,
    );
    let _sluice = Sluice::start(ports, &config);
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let answer = client
        .get(format!("https://localhost:{secure}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        reqwest::get(format!("http://127.0.0.1:{secure}/health"))
            .await
            .is_err(),
        "plaintext is refused"
    );
    let metrics = client
        .get(format!("https://localhost:{}/metrics", ports.metrics))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("otelcol_process_uptime")
    );
    assert!(
        reqwest::get(format!("http://127.0.0.1:{}/metrics", ports.metrics))
            .await
            .is_err(),
        "plaintext self-metrics are refused"
    );
    // A tls section it cannot honour is refused by validate, as a receiver's is.
    let (valid, text) = crate::support::sluice_validate(
        "receivers: {otlp: {protocols: {grpc: {}}}}\nexporters: {debug: {}}\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [debug]}\n  telemetry:\n    metrics:\n      tls: {cert_file: /c.pem, min_version: \"1.1\"}\n",
        &[],
    );
    assert!(!valid, "{text}");
    assert!(text.contains("service.telemetry.metrics.tls"), "{text}");
}
