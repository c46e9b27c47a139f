//! Test support: start the real `sluice` binary on free ports, and an OTLP sink (gRPC and HTTP)
//! that records what arrives and can be told to stop answering.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::watch;

/// The first port of the range the tests take theirs from, and how many it holds: below the
/// kernel's ephemeral range (32768-60999 by default), where outgoing connections and `bind(0)`
/// listeners get theirs. A port chosen with `bind(0)` and released until sluice binds it could
/// be taken meanwhile by any process's outgoing connection (CI saw `Address already in use`);
/// one from here cannot.
const PORTS_FROM: u32 = 20_000;
const PORTS: u32 = 12_000;

/// The next port to try, counted across the run, so no two tests are handed the same one.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A port nobody listens on right now, handed to no other test of this run, and outside the
/// range the kernel hands out by itself.
pub(crate) fn free_port() -> u16 {
    // Each run starts at its own place in the range, so a leftover of an earlier run is unlikely
    // to be met.
    let start = std::process::id() * 97 % PORTS;
    for _ in 0..PORTS {
        let n = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = u16::try_from(PORTS_FROM + (start + n) % PORTS).expect("a port below 32000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{PORTS_FROM}+{PORTS}");
}

/// Ports of one sluice instance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub(crate) grpc: u16,
    pub(crate) http: u16,
    pub(crate) metrics: u16,
    pub(crate) health: u16,
}

impl Ports {
    pub(crate) fn new() -> Self {
        // Four distinct ports: `free_port` never hands one out twice in a run.
        Ports {
            grpc: free_port(),
            http: free_port(),
            metrics: free_port(),
            health: free_port(),
        }
    }

    /// The receiver, telemetry and health sections every test config shares.
    pub(crate) fn common(&self) -> String {
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{}\n      http:\n        endpoint: 127.0.0.1:{}\nextensions:\n  health_check:\n    endpoint: 127.0.0.1:{}\n",
            self.grpc, self.http, self.health
        )
    }

    pub(crate) fn telemetry(&self) -> String {
        format!(
            "  extensions: [health_check]\n  telemetry:\n    logs:\n      level: info\n    metrics:\n      address: 127.0.0.1:{}\n",
            self.metrics
        )
    }
}

/// A running `sluice` process, killed on drop.
pub(crate) struct Sluice {
    pub(crate) child: Child,
    pub(crate) ports: Ports,
    pub(crate) log: PathBuf,
    _dir: TempDir,
}

pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sluice-e2e-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

impl Sluice {
    /// Starts sluice with `config` (YAML) and waits until it reports ready.
    pub(crate) fn start(ports: Ports, config: &str) -> Sluice {
        Sluice::start_in(ports, config, None)
    }

    /// As [`Sluice::start`], with `hosts` mounted over `/etc/hosts` in a private mount namespace
    /// (`unshare`), so names resolve as that file says, and change when it is rewritten in place.
    pub(crate) fn start_with_hosts(ports: Ports, config: &str, hosts: &std::path::Path) -> Sluice {
        Sluice::start_in(ports, config, Some(hosts))
    }

    fn start_in(ports: Ports, config: &str, hosts: Option<&std::path::Path>) -> Sluice {
        let dir = TempDir::new("run");
        let path = dir.0.join("config.yaml");
        std::fs::write(&path, config).unwrap();
        let log = dir.0.join("sluice.log");
        let mut command = match hosts {
            None => {
                let mut c = Command::new(binary());
                c.arg("--config").arg(&path);
                c
            }
            Some(hosts) => {
                // unshare execs the shell, which execs sluice: the child's pid is sluice's.
                let mut c = Command::new("unshare");
                c.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
                    .arg(r#"mount --bind "$1" /etc/hosts && exec "$2" --config "$3" "$4" "$5""#)
                    .arg("sh")
                    .arg(hosts)
                    .arg(binary())
                    .arg(&path);
                c
            }
        };
        let child = command
            .arg("--shutdown-timeout")
            .arg("5s")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("sluice starts");
        let mut s = Sluice {
            child,
            ports,
            log,
            _dir: dir,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://127.0.0.1:{}/health/ready", self.ports.health);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sluice exited with {status}:\n{}", self.logs());
            }
            if let Ok(r) = get_status(&url)
                && r == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sluice did not become ready:\n{}", self.logs());
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit code.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not stop:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of one self-metric sample line (`name{labels}`) or 0 when absent.
    pub(crate) async fn metric(&self, name_and_labels: &str) -> f64 {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.ports.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

impl Sluice {
    /// Waits until a self-metric reaches `want` (counters lag the peer by one response), and
    /// returns what it last read.
    pub(crate) async fn wait_metric(&self, name_and_labels: &str, want: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.metric(name_and_labels).await;
            if v == want || Instant::now() >= deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking GET that returns the status code, for the readiness poll (outside any runtime).
fn get_status(url: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

/// What an OTLP sink has received, decoded.
#[derive(Default, Clone)]
pub(crate) struct Received {
    pub(crate) traces: Vec<ExportTraceServiceRequest>,
    pub(crate) metrics: Vec<ExportMetricsServiceRequest>,
    pub(crate) logs: Vec<ExportLogsServiceRequest>,
    pub(crate) http_traces: Vec<(ExportTraceServiceRequest, Option<String>)>,
}

impl Received {
    pub(crate) fn spans(&self) -> Vec<Span> {
        self.traces
            .iter()
            .chain(self.http_traces.iter().map(|(r, _)| r))
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| ss.spans.clone())
            .collect()
    }

    pub(crate) fn span_count(&self) -> usize {
        self.spans().len()
    }

    pub(crate) fn log_count(&self) -> usize {
        self.logs
            .iter()
            .flat_map(|r| &r.resource_logs)
            .flat_map(|rl| &rl.scope_logs)
            .map(|sl| sl.log_records.len())
            .sum()
    }

    /// Names of every metric received.
    pub(crate) fn metric_names(&self) -> Vec<String> {
        self.metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| sm.metrics.iter().map(|m| m.name.clone()))
            .collect()
    }

    /// Items per request the sink received, in arrival order.
    pub(crate) fn trace_batch_sizes(&self) -> Vec<usize> {
        self.traces
            .iter()
            .map(|r| {
                r.resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .map(|ss| ss.spans.len())
                    .sum()
            })
            .collect()
    }
}

/// An OTLP sink: gRPC for the three signals and HTTP `/v1/traces`.
#[derive(Clone)]
pub(crate) struct Sink {
    pub(crate) received: Arc<Mutex<Received>>,
    /// While `true` the sink holds every request without answering.
    hang: watch::Sender<bool>,
    pub(crate) grpc_port: u16,
    pub(crate) http_port: u16,
}

#[derive(Clone)]
struct SinkService {
    received: Arc<Mutex<Received>>,
    hang: watch::Receiver<bool>,
}

impl SinkService {
    async fn wait_while_hung(&self) {
        let mut hang = self.hang.clone();
        let _ = hang.wait_for(|h| !*h).await;
    }
}

#[tonic::async_trait]
impl TraceService for SinkService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.wait_while_hung().await;
        self.received
            .lock()
            .unwrap()
            .traces
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for SinkService {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.wait_while_hung().await;
        self.received
            .lock()
            .unwrap()
            .metrics
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for SinkService {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.wait_while_hung().await;
        self.received
            .lock()
            .unwrap()
            .logs
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

impl Sink {
    /// Starts the sink on free loopback ports, inside the current runtime.
    pub(crate) async fn start() -> Sink {
        let received = Arc::new(Mutex::new(Received::default()));
        let (hang, hang_rx) = watch::channel(false);
        let service = SinkService {
            received: received.clone(),
            hang: hang_rx,
        };
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_port = grpc.local_addr().unwrap().port();
        let gzip = tonic::codec::CompressionEncoding::Gzip;
        let router = tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(service.clone())
                    .accept_compressed(gzip)
                    .max_decoding_message_size(64 << 20),
            )
            .add_service(
                MetricsServiceServer::new(service.clone())
                    .accept_compressed(gzip)
                    .max_decoding_message_size(64 << 20),
            )
            .add_service(
                LogsServiceServer::new(service.clone())
                    .accept_compressed(gzip)
                    .max_decoding_message_size(64 << 20),
            );
        let incoming = incoming(grpc);
        tokio::spawn(async move {
            let _ = router.serve_with_incoming(incoming).await;
        });

        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_port = http.local_addr().unwrap().port();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
                let service = service.clone();
                async move {
                    service.wait_while_hung().await;
                    let encoding = headers
                        .get("content-encoding")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let raw = if encoding.as_deref() == Some("gzip") {
                        use std::io::Read;
                        let mut out = Vec::new();
                        flate2::read::GzDecoder::new(&body[..])
                            .read_to_end(&mut out)
                            .unwrap();
                        out
                    } else {
                        body.to_vec()
                    };
                    let req = ExportTraceServiceRequest::decode(raw.as_slice()).unwrap();
                    service
                        .received
                        .lock()
                        .unwrap()
                        .http_traces
                        .push((req, encoding));
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(http, app).await;
        });
        Sink {
            received,
            hang,
            grpc_port,
            http_port,
        }
    }

    /// A copy of what has arrived so far.
    pub(crate) fn snapshot(&self) -> Received {
        self.received.lock().unwrap().clone()
    }

    pub(crate) fn set_hang(&self, hang: bool) {
        let _ = self.hang.send(hang);
    }

    /// Waits until `check` holds for what was received, or panics after `timeout`.
    pub(crate) async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Received) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if check(&self.received.lock().unwrap()) {
                return;
            }
            if Instant::now() >= deadline {
                let r = self.received.lock().unwrap();
                panic!(
                    "timed out waiting for {what}: the sink has {} spans, {} log records, metrics {:?}",
                    r.span_count(),
                    r.log_count(),
                    r.metric_names()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub(crate) fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| s);
        Some((next, l))
    })
}

/// An attribute's value, for assertions.
pub(crate) fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

/// An attribute.
pub(crate) fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`), or 0 when unreadable.
/// Samples a process's resident memory every 10 ms until stopped.
pub(crate) struct PeakRss {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<()>,
    pid: u32,
}

impl PeakRss {
    pub(crate) fn start(pid: u32) -> PeakRss {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid, "VmRSS:"), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        PeakRss {
            stop,
            peak,
            thread,
            pid,
        }
    }

    /// The peak seen, in MiB (the kernel's high-water mark too, which misses nothing).
    pub(crate) fn stop_mib(self) -> u64 {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak
            .load(Ordering::Relaxed)
            .max(rss_kib(self.pid, "VmHWM:"))
            / 1024
    }
}

pub(crate) fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

pub(crate) fn string(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.to_owned())
}

/// A trace request with `n` spans named `{tag}-{i}` under one resource, padded with an attribute
/// of `pad` bytes per span.
pub(crate) fn trace_request(n: usize, tag: &str, pad: usize) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    let padding = "x".repeat(pad);
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", string("raw-client"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: {
                            let mut id = [0u8; 16];
                            id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
                            id[8..].copy_from_slice(&(tag.len() as u64 + 1).to_be_bytes());
                            id.to_vec()
                        },
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: format!("{tag}-{i}"),
                        attributes: if pad > 0 {
                            vec![kv("pad", string(&padding))]
                        } else {
                            vec![]
                        },
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Lowercase hex of an id, as people write trace and span ids.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every file below `dir` (recursively) that `keep` accepts, sorted.
pub(crate) fn files_under(
    dir: &std::path::Path,
    keep: impl Fn(&std::path::Path) -> bool,
) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if keep(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Runs `sluice validate --config <text>` with `env` set; returns whether it passed and what it
/// printed on stderr.
pub(crate) fn sluice_validate(text: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = TempDir::new("validate");
    let path = dir.0.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let mut command = Command::new(binary());
    command.args(["validate", "--config"]).arg(&path);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A gRPC message prefix and payload.
pub(crate) fn frame(compressed: bool, payload: &[u8]) -> Vec<u8> {
    use bytes::BufMut;
    let mut out = bytes::BytesMut::new();
    out.put_u8(u8::from(compressed));
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.to_vec()
}

/// Opens an HTTP/2 connection to sluice's gRPC port.
pub(crate) async fn h2_connect(port: u16) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

pub(crate) fn export_request(port: u16, encoding: Option<&str>) -> http::Request<()> {
    let mut r = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://127.0.0.1:{port}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(e) = encoding {
        r = r.header("grpc-encoding", e);
    }
    r.body(()).unwrap()
}

/// A TCP proxy in front of a port that reads what clients send and records how each request's
/// body was compressed, so a test can see that a client (the Python SDK) really compressed:
/// `h1:<content-encoding or identity>` per HTTP/1.1 request, and `h2:compressed` or `h2:plain`
/// per HTTP/2 stream, from the gRPC message prefix's compressed flag in its first DATA frame.
pub(crate) struct WireTap {
    pub(crate) port: u16,
    pub(crate) seen: Arc<Mutex<Vec<String>>>,
}

impl WireTap {
    /// Starts the proxy to `target` on a free loopback port, inside the current runtime.
    pub(crate) async fn start(target: u16) -> WireTap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    let mut parser = TapParser::default();
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = client_read.read(&mut buf).await {
                        if n == 0 || server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        for event in parser.feed(&buf[..n]) {
                            record.lock().unwrap().push(event);
                        }
                    }
                    let _ = server_write.shutdown().await;
                });
            }
        });
        WireTap { port, seen }
    }

    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads a client's byte stream: HTTP/2 frames after the connection preface, or HTTP/1.1
/// requests with a `Content-Length` body.
#[derive(Default)]
struct TapParser {
    pending: Vec<u8>,
    h2: Option<bool>,
    streams: std::collections::HashSet<u32>,
}

impl TapParser {
    const PREFACE: &'static [u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn feed(&mut self, data: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(data);
        let mut events = Vec::new();
        if self.h2.is_none() {
            if self.pending.len() < Self::PREFACE.len() {
                return events;
            }
            let h2 = self.pending.starts_with(Self::PREFACE);
            if h2 {
                self.pending.drain(..Self::PREFACE.len());
            }
            self.h2 = Some(h2);
        }
        if self.h2 == Some(true) {
            // Frames: 3-byte length, type, flags, 4-byte stream id, payload.
            while self.pending.len() >= 9 {
                let len = usize::from(self.pending[0]) << 16
                    | usize::from(self.pending[1]) << 8
                    | usize::from(self.pending[2]);
                if self.pending.len() < 9 + len {
                    break;
                }
                let (kind, flags) = (self.pending[3], self.pending[4]);
                let stream =
                    u32::from_be_bytes(self.pending[5..9].try_into().unwrap()) & 0x7fff_ffff;
                let mut payload = &self.pending[9..9 + len];
                if kind == 0 && flags & 0x8 != 0 && !payload.is_empty() {
                    let pad = usize::from(payload[0]);
                    payload = &payload[1..payload.len().saturating_sub(pad)];
                }
                if kind == 0 && !payload.is_empty() && self.streams.insert(stream) {
                    events.push(
                        if payload[0] == 1 {
                            "h2:compressed"
                        } else {
                            "h2:plain"
                        }
                        .to_owned(),
                    );
                }
                self.pending.drain(..9 + len);
            }
        } else {
            while let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.pending[..end]).to_ascii_lowercase();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                };
                let body = header("content-length:")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if self.pending.len() < end + 4 + body {
                    break;
                }
                let encoding = header("content-encoding:").unwrap_or_else(|| "identity".to_owned());
                events.push(format!("h1:{encoding}"));
                self.pending.drain(..end + 4 + body);
            }
        }
        events
    }
}
