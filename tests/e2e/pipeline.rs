//! Pipeline behaviour seen from outside: batch sizes, fan-out past a dead exporter, the otlphttp
//! exporter, and shutdown flushing what is batched.

use std::time::Duration;

use prost::Message;

use crate::support::{Ports, Sink, Sluice, free_port, trace_request};

async fn post(port: u16, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_are_split_at_send_batch_max_size_and_nothing_is_lost() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let config = format!(
        "{}processors:\n  batch:\n    send_batch_size: 10\n    send_batch_max_size: 10\n    timeout: 300ms\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}\n{}",
        ports.common(),
        sink.grpc_port,
        ports.telemetry()
    );
    let sluice = Sluice::start(ports, &config);
    // One request of 25 spans reaches send_batch_size at once and is split exactly at 10.
    let r = post(ports.http, trace_request(25, "big", 0).encode_to_vec()).await;
    assert_eq!(r.status(), 200);
    sink.wait_for(Duration::from_secs(10), "25 spans", |r| {
        r.span_count() == 25
    })
    .await;
    let mut sizes = sink.received.lock().unwrap().trace_batch_sizes();
    sizes.sort();
    assert_eq!(sizes, [5, 10, 10]);
    // Small concurrent requests are merged until the timeout; none is lost or duplicated.
    let sends = (0..5).map(|i| {
        post(
            ports.http,
            trace_request(3, &format!("r{i}"), 0).encode_to_vec(),
        )
    });
    for r in futures::future::join_all(sends).await {
        assert_eq!(r.status(), 200);
    }
    sink.wait_for(Duration::from_secs(10), "40 spans", |r| {
        r.span_count() == 40
    })
    .await;
    let received = sink.snapshot();
    assert!(received.trace_batch_sizes().iter().all(|&s| s <= 10));
    let mut names: Vec<String> = received.spans().into_iter().map(|s| s.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 40, "every span exactly once");
    assert!(
        sluice
            .metric("otelcol_processor_batch_batch_size_trigger_send{processor=\"batch\"}")
            .await
            >= 3.0
    );
    assert!(
        sluice
            .metric("otelcol_processor_batch_timeout_trigger_send{processor=\"batch\"}")
            .await
            >= 1.0
    );
    // Core counts what enters and leaves every processor, held ones included.
    for direction in ["incoming", "outgoing"] {
        let name = format!(
            "otelcol_processor_{direction}_items{{processor=\"batch\",otel_signal=\"traces\"}}"
        );
        assert_eq!(sluice.wait_metric(&name, 40.0).await, 40.0, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_exporter_does_not_block_the_others_and_otlphttp_sends_gzip() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let dead = free_port();
    let config = format!(
        "{}processors:\n  batch:\n    timeout: 50ms\nexporters:\n  otlp/dead:\n    endpoint: http://127.0.0.1:{dead}\n    timeout: 1s\n    sending_queue: {{queue_size: 2, num_consumers: 1}}\n    retry_on_failure: {{initial_interval: 1s, max_elapsed_time: 0}}\n  otlphttp:\n    endpoint: http://127.0.0.1:{}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp/dead, otlphttp]}}\n{}",
        ports.common(),
        sink.http_port,
        ports.telemetry()
    );
    let sluice = Sluice::start(ports, &config);
    for i in 0..10 {
        let r = post(
            ports.http,
            trace_request(3, &format!("d{i}"), 0).encode_to_vec(),
        )
        .await;
        assert_eq!(r.status(), 200, "request {i}");
        // Give the batcher time to flush each request separately, so the dead queue fills.
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    sink.wait_for(Duration::from_secs(10), "30 spans over otlphttp", |r| {
        r.span_count() == 30
    })
    .await;
    let received = sink.snapshot();
    assert!(
        received
            .http_traces
            .iter()
            .all(|(_, enc)| enc.as_deref() == Some("gzip"))
    );
    assert!(
        sluice
            .metric("otelcol_exporter_enqueue_failed_spans{exporter=\"otlp/dead\"}")
            .await
            > 0.0,
        "the dead exporter's full queue refused and counted"
    );
    // Readiness stays 200 and names the failing exporter.
    let ready: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{}/health/ready", ports.health))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(
        ready["exporters"]["otlp/dead/traces"], "degraded",
        "{ready}"
    );
    assert_eq!(ready["exporters"]["otlphttp/traces"], "ok", "{ready}");
    assert_eq!(
        sluice
            .wait_metric("otelcol_exporter_sent_spans{exporter=\"otlphttp\"}", 30.0)
            .await,
        30.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_flushes_batched_data_and_exits_zero() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let config = format!(
        "{}processors:\n  batch:\n    timeout: 1h\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}\n{}",
        ports.common(),
        sink.grpc_port,
        ports.telemetry()
    );
    let mut sluice = Sluice::start(ports, &config);
    // The batcher holds the data (timeout 1h); the client was answered when it was admitted.
    let pending = tokio::spawn(post(
        ports.http,
        trace_request(4, "flush", 0).encode_to_vec(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.received.lock().unwrap().span_count(), 0);
    let status = tokio::task::spawn_blocking(move || {
        let s = sluice.terminate();
        (s, sluice.logs())
    })
    .await
    .unwrap();
    assert!(
        status.0.success(),
        "exit status {:?}\n{}",
        status.0,
        status.1
    );
    assert_eq!(pending.await.unwrap().status(), 200);
    assert_eq!(sink.received.lock().unwrap().span_count(), 4);
}

/// The rule for persistent queues: the log is written before `batch`, and the processors after
/// `batch` run on what the file-queued exporter reads back, so none is skipped for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processors_after_batch_run_for_an_exporter_with_a_persistent_queue() {
    use crate::support::{TempDir, attr, string};
    let (durable, memory) = (Sink::start().await, Sink::start().await);
    let queue = TempDir::new("after-batch");
    let ports = Ports::new();
    let config = format!(
        "{common}processors:\n  batch: {{timeout: 50ms}}\n  resource/tag:\n    attributes: [{{key: redacted, value: yes, action: upsert}}]\nexporters:\n  otlp/durable:\n    endpoint: http://127.0.0.1:{a}\n    sending_queue: {{storage: file, directory: {dir}}}\n  otlp/memory:\n    endpoint: http://127.0.0.1:{b}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [batch, resource/tag], exporters: [otlp/durable, otlp/memory]}}\n{telemetry}",
        common = ports.common(),
        a = durable.grpc_port,
        b = memory.grpc_port,
        dir = queue.0.display(),
        telemetry = ports.telemetry(),
    );
    let sluice = Sluice::start(ports, &config);
    let r = post(ports.http, trace_request(7, "durable", 0).encode_to_vec()).await;
    assert_eq!(r.status(), 200);
    for sink in [&durable, &memory] {
        sink.wait_for(Duration::from_secs(10), "7 spans", |r| r.span_count() == 7)
            .await;
        for request in &sink.snapshot().traces {
            for rs in &request.resource_spans {
                let attributes = &rs.resource.as_ref().unwrap().attributes;
                assert_eq!(attr(attributes, "redacted"), Some(&string("yes")));
            }
        }
    }
    // Both runs of the processor count what went through them.
    let incoming =
        "otelcol_processor_incoming_items{processor=\"resource/tag\",otel_signal=\"traces\"}";
    assert_eq!(sluice.wait_metric(incoming, 14.0).await, 14.0);
}

/// The exporters' `compression` values, sent into a second sluice (whose receivers accept them
/// all) and from there into the sink: zstd and snappy over gRPC, zstd and snappy over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exporters_send_zstd_and_snappy_that_a_receiver_accepts() {
    let sink = Sink::start().await;
    let back = Ports::new();
    let back_config = format!(
        "{}exporters:\n  otlp:\n    endpoint: http://127.0.0.1:{}\n    compression: none\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [otlp]}}\n{}",
        back.common(),
        sink.grpc_port,
        back.telemetry()
    );
    let _back = Sluice::start(back, &back_config);
    let front = Ports::new();
    let front_config = format!(
        "{common}exporters:\n  otlp/zstd:\n    endpoint: http://127.0.0.1:{g}\n    compression: zstd\n    compression_params: {{level: 5}}\n  otlp/snappy:\n    endpoint: http://127.0.0.1:{g}\n    compression: snappy\n  otlphttp/zstd:\n    endpoint: http://127.0.0.1:{h}\n    compression: zstd\n  otlphttp/snappy:\n    endpoint: http://127.0.0.1:{h}\n    compression: snappy\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [otlp/zstd, otlp/snappy, otlphttp/zstd, otlphttp/snappy]}}\n{telemetry}",
        common = front.common(),
        g = back.grpc,
        h = back.http,
        telemetry = front.telemetry()
    );
    let front_sluice = Sluice::start(front, &front_config);
    let r = post(
        front.http,
        trace_request(5, "compressed", 0).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    sink.wait_for(Duration::from_secs(10), "5 spans from each exporter", |r| {
        r.span_count() == 20
    })
    .await;
    for exporter in [
        "otlp/zstd",
        "otlp/snappy",
        "otlphttp/zstd",
        "otlphttp/snappy",
    ] {
        let sent = format!("otelcol_exporter_sent_spans{{exporter=\"{exporter}\"}}");
        assert_eq!(
            front_sluice.wait_metric(&sent, 5.0).await,
            5.0,
            "{exporter}"
        );
    }
}
