//! Overload: clients flood a collector whose exporter's backend never answers. Sluice must refuse
//! with retryable statuses, keep its resident memory under the memory limiter's hard limit, lose
//! nothing it acknowledged, and recover once the backend answers again.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

use crate::support::{Ports, Sink, Sluice, rss_kib, trace_request};

const LIMIT_MIB: u64 = 96;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flood_with_a_stalled_backend_is_refused_bounded_and_recovered() {
    let sink = Sink::start().await;
    sink.set_hang(true);
    let ports = Ports::new();
    let config = format!(
        "{common}processors:
  memory_limiter:
    check_interval: 50ms
    limit_mib: {LIMIT_MIB}
    spike_limit_mib: 32
  batch:
    timeout: 50ms
exporters:
  otlp:
    endpoint: http://127.0.0.1:{sink}
    timeout: 2s
    retry_on_failure: {{initial_interval: 200ms, max_interval: 1s, max_elapsed_time: 0}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [memory_limiter, batch], exporters: [otlp]}}
{telemetry}",
        common = ports.common(),
        sink = sink.grpc_port,
        telemetry = ports.telemetry()
    );
    let sluice = Sluice::start(ports, &config);
    let pid = sluice.pid();
    let baseline = rss_kib(pid, "VmRSS:");

    // Sample RSS while the flood runs.
    let rss = crate::support::PeakRss::start(pid);

    // Six HTTP clients send ~1 MiB requests (400 spans of 2.5 KiB) as fast as they are answered.
    let accepted = Arc::new(std::sync::Mutex::new(HashSet::<String>::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let flood_until = Instant::now() + Duration::from_secs(6);
    let url = format!("http://127.0.0.1:{}/v1/traces", ports.http);
    let clients: Vec<_> = (0..6)
        .map(|c| {
            let (url, accepted, refused) = (url.clone(), accepted.clone(), refused.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut n = 0;
                while Instant::now() < flood_until {
                    let tag = format!("c{c}-{n}");
                    n += 1;
                    let body = trace_request(400, &tag, 2560).encode_to_vec();
                    let r = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(body)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            accepted.lock().unwrap().insert(tag);
                        }
                        Ok(r) => {
                            assert!(
                                r.status() == 503 || r.status() == 429,
                                "unexpected status {}",
                                r.status()
                            );
                            assert!(
                                r.headers().contains_key("retry-after"),
                                "503 without Retry-After"
                            );
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("request failed: {e}"),
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }

    // A gRPC client under the same pressure gets UNAVAILABLE with RetryInfo semantics.
    let mut grpc = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap()
        .max_encoding_message_size(8 << 20);
    let err = grpc
        .export(trace_request(400, "grpc-pressure", 2560))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());

    let peak_mib = rss.stop_mib();
    let accepted_before = accepted.lock().unwrap().len();
    println!(
        "overload: baseline {} MiB, peak RSS {peak_mib} MiB (limit {LIMIT_MIB}), {accepted_before} requests accepted, {} refused",
        baseline / 1024,
        refused.load(Ordering::Relaxed)
    );
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the flood was never refused"
    );
    assert!(accepted_before > 0, "nothing was accepted");
    assert!(
        peak_mib < LIMIT_MIB,
        "peak RSS {peak_mib} MiB reached the {LIMIT_MIB} MiB limit"
    );

    // The backend comes back: everything acknowledged arrives, and new data is accepted again.
    sink.set_hang(false);
    let expected: HashSet<String> = accepted.lock().unwrap().clone();
    sink.wait_for(
        Duration::from_secs(60),
        "every acknowledged request at the sink",
        |r| {
            let seen: HashSet<String> = r
                .spans()
                .into_iter()
                .filter_map(|s| s.name.strip_suffix("-0").map(str::to_owned))
                .collect();
            expected.is_subset(&seen)
        },
    )
    .await;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(trace_request(10, "after", 0).encode_to_vec())
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not recover: still {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(sluice.metric("otelcol_receiver_refused_spans{receiver=\"otlp\",transport=\"http\"}").await > 0.0
        || sluice.metric("otelcol_receiver_requests{receiver=\"otlp\",transport=\"http\",outcome=\"refused\"}").await > 0.0);
}
