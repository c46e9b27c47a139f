//! Nothing lost: the persistent sending queue under `kill -9`, a backend that goes away, a damaged
//! queue file, and a flood. Every test counts what the client sent, what sluice acknowledged, and
//! what arrived at the sink (by unique span id).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

use crate::support::{Ports, Sink, Sluice, TempDir, files_under, rss_kib, trace_request};

fn persistent_config(ports: &Ports, sink: &Sink, queue: &Path, extra: &str) -> String {
    format!(
        "{common}processors:\n  batch:\n    timeout: 50ms\n    send_batch_size: 500\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{sink}\n    compression: none\n    timeout: 2s\n    retry_on_failure:\n      initial_interval: 50ms\n      max_interval: 200ms\n      max_elapsed_time: 0s\n    sending_queue:\n      storage: file\n      directory: {dir}\n      num_consumers: 2\n{extra}service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp]\n{telemetry}",
        common = ports.common(),
        sink = sink.grpc_port,
        dir = queue.display(),
        telemetry = ports.telemetry(),
    )
}

/// A request of `n` spans whose span ids are `first..first + n` (unique across the test).
fn numbered(first: u64, n: usize) -> ExportTraceServiceRequest {
    let mut request = trace_request(n, "fault", 40);
    for (i, span) in request.resource_spans[0].scope_spans[0]
        .spans
        .iter_mut()
        .enumerate()
    {
        span.span_id = (first + i as u64).to_be_bytes().to_vec();
        span.trace_id[8..].copy_from_slice(&(first + i as u64).to_be_bytes());
    }
    request
}

fn received_ids(sink: &Sink) -> HashSet<u64> {
    sink.snapshot()
        .spans()
        .iter()
        .map(|s| u64::from_be_bytes(s.span_id[..8].try_into().unwrap()))
        .collect()
}

/// Sends numbered requests in a loop until told to stop, remembering which were acknowledged.
struct Client {
    acked: Arc<Mutex<HashSet<u64>>>,
    sent: Arc<Mutex<u64>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    fn start(port: Arc<Mutex<u16>>, per_request: usize) -> Client {
        let acked = Arc::new(Mutex::new(HashSet::new()));
        let sent = Arc::new(Mutex::new(0u64));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = {
            let (acked, sent, stop) = (acked.clone(), sent.clone(), stop.clone());
            tokio::spawn(async move {
                let mut next = 1u64;
                while !stop.is_cancelled() {
                    let target = *port.lock().unwrap();
                    let first = next;
                    next += per_request as u64;
                    *sent.lock().unwrap() += per_request as u64;
                    let ok = match TraceServiceClient::connect(format!("http://127.0.0.1:{target}"))
                        .await
                    {
                        Ok(mut client) => client.export(numbered(first, per_request)).await.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        acked
                            .lock()
                            .unwrap()
                            .extend(first..first + per_request as u64);
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        };
        Client {
            acked,
            sent,
            stop,
            task,
        }
    }

    async fn finish(self) -> (u64, HashSet<u64>) {
        self.stop.cancel();
        self.task.await.unwrap();
        let sent = *self.sent.lock().unwrap();
        let acked = self.acked.lock().unwrap().clone();
        (sent, acked)
    }
}

async fn wait_delivered(sink: &Sink, acked: &HashSet<u64>, sluice: &Sluice) -> HashSet<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = received_ids(sink);
        let missing = acked.difference(&got).count();
        if missing == 0 {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged spans never arrived:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn kill_9_mid_stream_loses_nothing_acknowledged() {
    let sink = Sink::start().await;
    let queue = TempDir::new("queue-kill");
    let ports = Ports::new();
    let port = Arc::new(Mutex::new(ports.grpc));
    let mut sluice = Sluice::start(ports, &persistent_config(&ports, &sink, &queue.0, ""));
    let client = Client::start(port.clone(), 20);
    // The sink stalls now and then, so the queue holds data when the kill comes.
    for round in 0..4 {
        sink.set_hang(round % 2 == 0);
        tokio::time::sleep(Duration::from_millis(400 + 150 * round)).await;
        // SIGKILL: no flush, no drain, no cursor written on the way out.
        sluice.child.kill().unwrap();
        sluice.child.wait().unwrap();
        let ports = Ports::new();
        sluice = Sluice::start(ports, &persistent_config(&ports, &sink, &queue.0, ""));
        *port.lock().unwrap() = ports.grpc;
    }
    sink.set_hang(false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sent, acked) = client.finish().await;
    let got = wait_delivered(&sink, &acked, &sluice).await;
    let spans = sink.snapshot().span_count();
    eprintln!(
        "kill -9 x4: {sent} spans sent, {} acknowledged, {} distinct received ({} with duplicates)",
        acked.len(),
        got.len(),
        spans
    );
    assert!(acked.len() > 200, "the client got through: {}", acked.len());
}

#[tokio::test]
async fn a_backend_away_for_a_while_loses_nothing() {
    let sink = Sink::start().await;
    let queue = TempDir::new("queue-away");
    let ports = Ports::new();
    let sluice = Sluice::start(ports, &persistent_config(&ports, &sink, &queue.0, ""));
    let client = Client::start(Arc::new(Mutex::new(ports.grpc)), 20);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sink.set_hang(true);
    let health = format!("http://127.0.0.1:{}/health/ready", ports.health);
    let mut degraded = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        degraded |= reqwest::get(&health)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("degraded");
    }
    let queued = sluice
        .metric("otelcol_exporter_queue_size{exporter=\"otlp\",data_type=\"traces\"}")
        .await;
    sink.set_hang(false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sent, acked) = client.finish().await;
    let got = wait_delivered(&sink, &acked, &sluice).await;
    eprintln!(
        "backend away 3s: {sent} sent, {} acknowledged, {} received; {queued} bytes queued on disk meanwhile",
        acked.len(),
        got.len()
    );
    assert!(degraded, "/health/ready showed the exporter degraded");
    assert!(
        queued > 0.0,
        "the queue held data while the backend was away"
    );
}

/// Segment files of a persistent queue, oldest first (quarantined pieces left out).
fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = files_under(dir, |p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seg-"))
            && !p.components().any(|c| c.as_os_str() == "quarantine")
    });
    found.sort_by_key(|p| p.file_name().map(ToOwned::to_owned));
    found
}

#[tokio::test]
async fn a_damaged_queue_file_is_recovered_and_the_damage_quarantined() {
    let sink = Sink::start().await;
    sink.set_hang(true);
    let queue = TempDir::new("queue-damage");
    let extra = "      max_bytes: 4MiB\n";
    let ports = Ports::new();
    let mut sluice = Sluice::start(ports, &persistent_config(&ports, &sink, &queue.0, extra));
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    let mut acked = 0u64;
    for i in 0..60u64 {
        client.export(numbered(i * 100 + 1, 100)).await.unwrap();
        acked += 100;
    }
    sluice.child.kill().unwrap();
    sluice.child.wait().unwrap();
    let files = segments(&queue.0);
    assert!(files.len() >= 2, "several segments: {files:?}");
    // A torn tail on the newest segment, a flipped byte in the middle of the oldest.
    {
        use std::io::Write;
        let mut last = std::fs::OpenOptions::new()
            .append(true)
            .open(files.last().unwrap())
            .unwrap();
        last.write_all(&[0x13, 0, 0, 0, 0xde, 0xad]).unwrap();
        let first = &files[0];
        let mut bytes = std::fs::read(first).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(first, bytes).unwrap();
    }
    sink.set_hang(false);
    let ports = Ports::new();
    let sluice = Sluice::start(ports, &persistent_config(&ports, &sink, &queue.0, extra));
    // What is intact arrives: everything but the rest of the damaged segment.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = received_ids(&sink).len();
        if now > 0 && now == last {
            break;
        }
        last = now;
        assert!(Instant::now() < deadline, "{}", sluice.logs());
    }
    let logs = sluice.logs();
    assert!(logs.contains("quarantined"), "{logs}");
    let quarantined = std::fs::read_dir(files[0].parent().unwrap().join("quarantine"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(quarantined, 1, "{logs}");
    eprintln!(
        "damaged queue: {acked} spans acknowledged before the kill, {last} recovered and delivered"
    );
    assert!(
        last as u64 > acked / 4 && (last as u64) < acked,
        "{last} of {acked}"
    );
}

#[tokio::test]
async fn a_full_persistent_queue_refuses_retryably_and_recovers() {
    let sink = Sink::start().await;
    sink.set_hang(true);
    let queue = TempDir::new("queue-full");
    let extra = "      max_bytes: 1MiB\n";
    let ports = Ports::new();
    let config = persistent_config(&ports, &sink, &queue.0, extra).replace(
        "processors:\n",
        "processors:\n  memory_limiter:\n    check_interval: 100ms\n    limit_mib: 96\n",
    );
    let config = config.replace("processors: [batch]", "processors: [memory_limiter, batch]");
    let sluice = Sluice::start(ports, &config);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    let mut acked = HashSet::new();
    let mut refused = 0;
    for i in 0..300u64 {
        match client.export(numbered(i * 100 + 1, 100)).await {
            Ok(_) => acked.extend(i * 100 + 1..i * 100 + 101),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                refused += 1;
            }
        }
    }
    assert!(
        refused > 0,
        "a 1MiB queue cannot take 300 requests of 100 spans"
    );
    let on_disk: u64 = segments(&queue.0)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        on_disk <= 1 << 20,
        "the queue stayed within max_bytes: {on_disk}"
    );
    let peak_kib = rss_kib(sluice.pid(), "VmHWM:");
    assert!(
        peak_kib > 0 && peak_kib < 96 * 1024,
        "peak RSS {peak_kib} KiB stayed under the 96 MiB limit"
    );
    let enqueue_failed = sluice
        .metric("otelcol_exporter_enqueue_failed_spans{exporter=\"otlp\"}")
        .await;
    assert!(enqueue_failed > 0.0);
    sink.set_hang(false);
    wait_delivered(&sink, &acked, &sluice).await;
    // Throughput recovers: new data goes through again.
    client.export(numbered(1_000_001, 100)).await.unwrap();
    acked.extend(1_000_001..1_000_101);
    wait_delivered(&sink, &acked, &sluice).await;
    eprintln!(
        "full queue: {} spans acknowledged, {refused} requests refused with UNAVAILABLE, {on_disk} bytes on disk at most, peak RSS {} MiB",
        acked.len(),
        peak_kib / 1024
    );
}

#[tokio::test]
async fn shutdown_with_the_backend_down_keeps_the_queue_for_the_next_start() {
    let sink = Sink::start().await;
    sink.set_hang(true);
    let queue = TempDir::new("queue-shutdown");
    let ports = Ports::new();
    let mut sluice = Sluice::start(ports, &persistent_config(&ports, &sink, &queue.0, ""));
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    let mut acked = HashSet::new();
    for i in 0..20u64 {
        client.export(numbered(i * 100 + 1, 100)).await.unwrap();
        acked.extend(i * 100 + 1..i * 100 + 101);
    }
    // SIGTERM with the backend down: the drain deadline (5s) passes, nothing is dropped.
    let started = Instant::now();
    let status = sluice.terminate();
    assert!(status.success(), "{status:?}\n{}", sluice.logs());
    assert!(started.elapsed() < Duration::from_secs(10));
    let logs = sluice.logs();
    assert!(
        logs.contains("the persistent queue keeps what was not sent"),
        "{logs}"
    );
    assert!(!logs.contains("data dropped"), "{logs}");
    sink.set_hang(false);
    let ports = Ports::new();
    let sluice = Sluice::start(ports, &persistent_config(&ports, &sink, &queue.0, ""));
    let got = wait_delivered(&sink, &acked, &sluice).await;
    eprintln!(
        "shutdown with the backend down: {} acknowledged, {} delivered after the restart",
        acked.len(),
        got.len()
    );
}
