//! Sampling through the real binary: `probabilistic_sampler` keeps exactly the traces the
//! Collector's hash keeps, whole, and counts them under the Collector's metric name.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::support::{Ports, Sink, Sluice, kv, string};

/// A request holding span `index` of each of `traces`.
fn spans_of(traces: &[[u8; 16]], index: u8) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", string("shop"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: traces
                    .iter()
                    .map(|tid| Span {
                        trace_id: tid.to_vec(),
                        span_id: [index, tid[1], tid[2], tid[3], 1, 2, 3, 4].to_vec(),
                        name: format!("step {index}"),
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        end_time_unix_nano: 1_700_000_000_100_000_000,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probabilistic_sampler_keeps_whole_traces_exactly_as_the_collectors_hash_decides() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let config = format!(
        "{common}processors:\n  probabilistic_sampler:\n    sampling_percentage: 20\n    hash_seed: 22\n  batch:\n    timeout: 50ms\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{sink}\n    compression: none\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [probabilistic_sampler, batch], exporters: [otlp]}}\n{telemetry}",
        common = ports.common(),
        sink = sink.grpc_port,
        telemetry = ports.telemetry(),
    );
    let sluice = Sluice::start(ports, &config);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    let traces: Vec<[u8; 16]> = (0u32..3000)
        .map(|i| {
            let mut tid = [0u8; 16];
            tid[..4].copy_from_slice(&i.to_be_bytes());
            tid[4..12].copy_from_slice(
                &u64::from(i)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .to_le_bytes(),
            );
            tid[15] = 1;
            tid
        })
        .collect();
    // Every trace's three spans arrive in three separate requests.
    for index in 0..3 {
        for chunk in traces.chunks(500) {
            client.export(spans_of(chunk, index)).await.unwrap();
        }
    }
    // The Collector keeps a trace when its seeded hash's low 14 bits fall under 20% of 2^14,
    // computed in 32-bit floating point.
    let rate = (20.0f32 * (16384.0f32 / 100.0)) as u32;
    let expected: HashSet<[u8; 16]> = traces
        .iter()
        .filter(|tid| sluice_sampling::seeded_hash(&tid[..], 22) & 0x3fff < rate)
        .copied()
        .collect();
    assert!((450..750).contains(&expected.len()), "{}", expected.len());
    sink.wait_for(Duration::from_secs(20), "the kept spans", |r| {
        r.span_count() >= expected.len() * 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut per_trace: HashMap<[u8; 16], usize> = HashMap::new();
    for span in sink.snapshot().spans() {
        *per_trace
            .entry(span.trace_id.as_slice().try_into().unwrap())
            .or_default() += 1;
        assert!(
            span.trace_state.starts_with("ot=rv:"),
            "{}",
            span.trace_state
        );
    }
    let kept: HashSet<[u8; 16]> = per_trace.keys().copied().collect();
    assert_eq!(
        kept, expected,
        "the kept traces differ from the Collector's decisions"
    );
    assert!(
        per_trace.values().all(|&n| n == 3),
        "a trace arrived in part"
    );
    let counted = sluice
        .wait_metric(
            "otelcol_processor_probabilistic_sampler_count_traces_sampled{processor=\"probabilistic_sampler\",policy=\"trace_id_hash\",sampled=\"true\"}",
            (expected.len() * 3) as f64,
        )
        .await;
    assert_eq!(counted, (expected.len() * 3) as f64);
    let dropped = sluice
        .metric("otelcol_processor_probabilistic_sampler_count_traces_sampled{processor=\"probabilistic_sampler\",policy=\"trace_id_hash\",sampled=\"false\"}")
        .await;
    assert_eq!(dropped, ((traces.len() - expected.len()) * 3) as f64);
}

/// The policy: every error and slow trace, a tenth of the rest, with the Python SDK
/// sending each trace's spans in separate requests, children before roots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_sampling_keeps_every_error_and_slow_trace_whole_and_a_tenth_of_the_rest() {
    crate::python_sdk::python();
    let sink = Sink::start().await;
    let ports = Ports::new();
    let config = format!(
        "{common}processors:\n  tail_sampling:\n    decision_wait: 10s\n    policies:\n      - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}\n      - {{name: slow, type: latency, latency: {{threshold_ms: 5000}}}}\n      - {{name: rest, type: probabilistic, probabilistic: {{sampling_percentage: 10}}}}\n  batch:\n    timeout: 50ms\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{sink}\n    compression: none\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [tail_sampling, batch], exporters: [otlp]}}\n{telemetry}",
        common = ports.common(),
        sink = sink.grpc_port,
        telemetry = ports.telemetry(),
    );
    let sluice = Sluice::start(ports, &config);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/tail_traces.py");
    let out = std::process::Command::new(crate::python_sdk::python())
        .arg(script)
        .args([
            "--endpoint",
            &format!("http://127.0.0.1:{}", ports.grpc),
            "--traces",
            "2000",
        ])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let classes: HashMap<String, Vec<String>> = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap(),
    )
    .unwrap();
    let must: HashSet<&String> = classes["error"].iter().chain(&classes["slow"]).collect();
    sink.wait_for(Duration::from_secs(60), "every error and slow trace", |r| {
        let ids: HashSet<String> = r
            .spans()
            .iter()
            .map(|s| crate::support::hex(&s.trace_id))
            .collect();
        must.iter().all(|t| ids.contains(*t))
    })
    .await;
    // The normal traces are decided in the same rounds; let the last ones through.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut per_trace: HashMap<String, usize> = HashMap::new();
    for span in sink.snapshot().spans() {
        *per_trace
            .entry(crate::support::hex(&span.trace_id))
            .or_default() += 1;
    }
    assert!(
        per_trace.values().all(|&n| n == 3),
        "a trace arrived in part"
    );
    let normal: HashSet<&String> = classes["normal"].iter().collect();
    let kept_normal = per_trace.keys().filter(|t| normal.contains(t)).count() as f64;
    let n = normal.len() as f64;
    let sd = (n * 0.1 * 0.9).sqrt();
    assert!(
        (kept_normal - n * 0.1).abs() < 5.0 * sd,
        "kept {kept_normal} of {n} normal traces"
    );
    assert_eq!(per_trace.len(), must.len() + kept_normal as usize);
    let errors = sluice
        .metric("otelcol_processor_tail_sampling_count_traces_sampled{processor=\"tail_sampling\",policy=\"errors\",sampled=\"true\"}")
        .await;
    assert_eq!(errors, classes["error"].len() as f64);
    let early = sluice
        .metric("otelcol_processor_tail_sampling_early_decision{processor=\"tail_sampling\"}")
        .await;
    assert_eq!(early, 0.0);
}

/// A flood far larger than the memory limit into a tail sampler that would hold everything for a
/// minute: the oldest traces are decided early (counted), sluice stays under its limit, clients
/// get only retryable refusals, and every trace acknowledged is decided once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_into_a_tail_sampler_stays_under_the_memory_limit_by_deciding_early() {
    use crate::support::trace_request;
    use prost::Message;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    const LIMIT_MIB: u64 = 96;
    let sink = Sink::start().await;
    let ports = Ports::new();
    let config = format!(
        "{common}processors:\n  memory_limiter:\n    check_interval: 50ms\n    limit_mib: {LIMIT_MIB}\n    spike_limit_mib: 32\n  tail_sampling:\n    decision_wait: 60s\n    policies: [{{name: rest, type: probabilistic, probabilistic: {{sampling_percentage: 10}}}}]\n  batch:\n    timeout: 50ms\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{sink}\n    compression: none\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [memory_limiter, tail_sampling, batch], exporters: [otlp]}}\n{telemetry}",
        common = ports.common(),
        sink = sink.grpc_port,
        telemetry = ports.telemetry(),
    );
    let sluice = Sluice::start(ports, &config);
    let pid = sluice.pid();
    let rss = crate::support::PeakRss::start(pid);
    // Four clients send ~1 MiB requests (400 spans of 2.5 KiB, 400 new traces each) until twice
    // the limit has been accepted (at most 60 s): far more than the limit could hold for the
    // minute of decision_wait.
    let accepted_spans = Arc::new(AtomicU64::new(0));
    let accepted_bytes = Arc::new(AtomicU64::new(0));
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let url = format!("http://127.0.0.1:{}/v1/traces", ports.http);
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            let (url, spans, bytes) = (url.clone(), accepted_spans.clone(), accepted_bytes.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut n = 0u64;
                while std::time::Instant::now() < until
                    && bytes.load(Ordering::Relaxed) < 2 * (LIMIT_MIB << 20)
                {
                    let mut request = trace_request(400, "flood", 2560);
                    for span in &mut request.resource_spans[0].scope_spans[0].spans {
                        span.trace_id[8..].copy_from_slice(&(c << 40 | n).to_be_bytes());
                    }
                    n += 1;
                    let body = request.encode_to_vec();
                    let size = body.len() as u64;
                    let r = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(body)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await
                        .unwrap();
                    if r.status() == 200 {
                        spans.fetch_add(400, Ordering::Relaxed);
                        bytes.fetch_add(size, Ordering::Relaxed);
                    } else {
                        assert!(
                            r.status() == 503 || r.status() == 429,
                            "unexpected {}",
                            r.status()
                        );
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let peak_mib = rss.stop_mib();
    let accepted_mib = accepted_bytes.load(Ordering::Relaxed) >> 20;
    let early = sluice
        .metric("otelcol_processor_tail_sampling_early_decision{processor=\"tail_sampling\"}")
        .await;
    println!(
        "tail overload: peak RSS {peak_mib} MiB (limit {LIMIT_MIB}), {accepted_mib} MiB accepted, {early} traces decided early"
    );
    assert!(
        peak_mib < LIMIT_MIB,
        "peak RSS {peak_mib} MiB reached the {LIMIT_MIB} MiB limit"
    );
    // Twice the limit was taken in within the minute of decision_wait: the held traces were
    // decided early and their memory given back.
    assert!(
        accepted_mib >= 2 * LIMIT_MIB,
        "only {accepted_mib} MiB accepted"
    );
    assert!(early > 0.0);
    let dropped_too_early = sluice
        .metric("otelcol_processor_tail_sampling_sampling_trace_dropped_too_early{processor=\"tail_sampling\"}")
        .await;
    assert_eq!(dropped_too_early, 0.0);
    // Every acknowledged trace (one span each) is decided once or still held: none is lost.
    let metric = |m: &'static str| sluice.metric(m);
    let sampled = metric("otelcol_processor_tail_sampling_global_count_traces_sampled{processor=\"tail_sampling\",sampled=\"true\"}").await;
    let not_sampled = metric("otelcol_processor_tail_sampling_global_count_traces_sampled{processor=\"tail_sampling\",sampled=\"false\"}").await;
    let held = metric(
        "otelcol_processor_tail_sampling_sampling_traces_on_memory{processor=\"tail_sampling\"}",
    )
    .await;
    let accepted = accepted_spans.load(Ordering::Relaxed) as f64;
    assert_eq!(
        sampled + not_sampled + held,
        accepted,
        "{sampled} + {not_sampled} + {held}"
    );
    let share = sampled / (sampled + not_sampled);
    assert!(
        (0.07..0.13).contains(&share),
        "sampled {share} of the decided traces"
    );
    // What was kept early reached the backend.
    sink.wait_for(Duration::from_secs(20), "the sampled spans", |r| {
        r.span_count() >= sampled as usize
    })
    .await;
}

/// `storage`: the spans a tail sampler holds are on disk before they are acknowledged, and what
/// it held when it was killed is held again and decided after the restart, twice over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_held_for_a_decision_survive_kill_9_with_storage() {
    let sink = Sink::start().await;
    let dir = crate::support::TempDir::new("tail-wal");
    let config = |ports: &Ports| {
        format!(
            "{common}processors:\n  tail_sampling:\n    decision_wait: 2s\n    storage: {{directory: {wal}}}\n    policies: [{{name: all, type: always_sample}}]\n  batch:\n    timeout: 50ms\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{sink}\n    compression: none\n    sending_queue: {{storage: file, directory: {queue}}}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [tail_sampling, batch], exporters: [otlp]}}\n{telemetry}",
            common = ports.common(),
            wal = dir.0.join("wal").display(),
            queue = dir.0.join("queue").display(),
            sink = sink.grpc_port,
            telemetry = ports.telemetry(),
        )
    };
    let traces: Vec<[u8; 16]> = (0u32..600)
        .map(|i| {
            let mut t = [0u8; 16];
            t[..4].copy_from_slice(&i.to_be_bytes());
            t[4..12].copy_from_slice(
                &u64::from(i)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .to_le_bytes(),
            );
            t[15] = 9;
            t
        })
        .collect();
    let mut acknowledged = HashSet::new();
    for round in 0..3usize {
        let ports = Ports::new();
        let mut sluice = Sluice::start(ports, &config(&ports));
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
            .await
            .unwrap();
        // Rounds 0 and 1 each send 200 traces (two spans each, in two requests) and are killed
        // before their decision_wait is up; round 2 only takes back what they left.
        if round < 2 {
            let mine = &traces[round * 200..(round + 1) * 200];
            for index in 0..2 {
                // Refused (retryably) while the sampler takes back what the last run left.
                loop {
                    match client.export(spans_of(mine, index)).await {
                        Ok(_) => break,
                        Err(e) if e.code() == tonic::Code::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            acknowledged.extend(mine.iter().copied());
            sluice.child.kill().unwrap();
            sluice.child.wait().unwrap();
        } else {
            sink.wait_for(Duration::from_secs(30), "every acknowledged span", |r| {
                r.span_count() >= acknowledged.len() * 2
            })
            .await;
        }
    }
    let mut per_trace: HashMap<[u8; 16], usize> = HashMap::new();
    for span in sink.snapshot().spans() {
        *per_trace
            .entry(span.trace_id.as_slice().try_into().unwrap())
            .or_default() += 1;
    }
    for t in &acknowledged {
        assert!(
            per_trace.get(t).copied().unwrap_or(0) >= 2,
            "a trace was lost"
        );
    }
}
