//! The Python OpenTelemetry SDK (from PyPI, installed by the test command into a private venv)
//! delivers traces, metrics and logs through sluice over gRPC and HTTP, uncompressed and with gzip,
//! intact.

use std::process::Command;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric;

use crate::support::{Ports, Sink, Sluice, WireTap, attr, hex, string};

/// The venv's Python: the README test command installs the SDK and sets `SLUICE_PYTHON`.
pub(crate) fn python() -> String {
    std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| {
        panic!("SLUICE_PYTHON is not set: run the test command from README.md (scripts/test.sh), which installs the Python OpenTelemetry SDK into a venv and points SLUICE_PYTHON at it")
    })
}

/// Runs the SDK script with `args`; panics with its stderr unless every export succeeded, and
/// returns the one-line JSON summary it prints last.
pub(crate) fn run_script(args: &[&str]) -> serde_json::Value {
    let out = Command::new(python())
        .arg(script())
        .args(args)
        // `requests` lets these override a session's own CA file, so the HTTP exporter's
        // `certificate_file` would be ignored where a machine sets them.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "the Python SDK's exports failed ({args:?}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| !l.is_empty())
            .expect("a summary line"),
    )
    .expect("the summary is JSON")
}

pub(crate) fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/send_otlp.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_sdk_delivers_every_signal_over_grpc_and_http() {
    // Before starting anything: without the SDK's venv the test says so at once.
    python();
    let sink = Sink::start().await;
    let ports = Ports::new();
    let config = format!(
        "{}processors:\n  resource:\n    attributes:\n      - {{key: collector.name, value: sluice-e2e, action: insert}}\n  batch:\n    timeout: 100ms\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [resource, batch], exporters: [otlp]}}\n    metrics: {{receivers: [otlp], processors: [resource, batch], exporters: [otlp]}}\n    logs: {{receivers: [otlp], processors: [resource, batch], exporters: [otlp]}}\n{}",
        ports.common(),
        sink.grpc_port,
        ports.telemetry()
    );
    let _sluice = Sluice::start(ports, &config);
    // Every signal over each protocol, uncompressed and with gzip, through a tap that checks
    // that the SDK compressed each request as asked.
    let mut trace_ids = Vec::new();
    for (protocol, compression) in [
        ("grpc", "none"),
        ("grpc", "gzip"),
        ("http", "none"),
        ("http", "gzip"),
    ] {
        let target = if protocol == "grpc" {
            ports.grpc
        } else {
            ports.http
        };
        let tap = WireTap::start(target).await;
        let service = format!("py-{protocol}-{compression}");
        let endpoint = format!("http://127.0.0.1:{}", tap.port);
        let summary = run_script(&[
            "--endpoint",
            &endpoint,
            "--protocol",
            protocol,
            "--service-name",
            &service,
            "--compression",
            compression,
            "--spans",
            "6",
            "--logs",
            "4",
            "--metrics",
        ]);
        assert_eq!(summary["spans"], 7);
        // Spans, logs and metrics: at least three requests, each compressed as configured.
        let seen = tap.seen();
        let expected = match (protocol, compression) {
            ("grpc", "gzip") => "h2:compressed",
            ("grpc", _) => "h2:plain",
            (_, "gzip") => "h1:gzip",
            _ => "h1:identity",
        };
        assert!(
            seen.len() >= 3 && seen.iter().all(|s| s == expected),
            "{service}: expected every request {expected}, saw {seen:?}"
        );
        trace_ids.push((service, summary["trace_id"].as_str().unwrap().to_owned()));
    }

    sink.wait_for(
        Duration::from_secs(20),
        "28 spans and 16 logs from python",
        |r| {
            r.span_count() == 28
                && r.log_count() == 16
                && r.metric_names()
                    .iter()
                    .filter(|n| *n == "e2e.latency")
                    .count()
                    == 4
        },
    )
    .await;
    let received = sink.snapshot();
    for (service, trace_id) in &trace_ids {
        let rs: Vec<_> = received
            .traces
            .iter()
            .flat_map(|r| &r.resource_spans)
            .filter(|rs| {
                attr(&rs.resource.as_ref().unwrap().attributes, "service.name")
                    == Some(&string(service))
            })
            .collect();
        assert!(!rs.is_empty(), "no spans from {service}");
        for r in &rs {
            let res = &r.resource.as_ref().unwrap().attributes;
            assert_eq!(attr(res, "service.version"), Some(&string("1.2.3")));
            assert_eq!(attr(res, "test.run"), Some(&Value::IntValue(42)));
            assert_eq!(attr(res, "collector.name"), Some(&string("sluice-e2e")));
        }
        let spans: Vec<_> = rs
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect();
        assert_eq!(spans.len(), 7);
        let root = spans.iter().find(|s| s.name == "root").unwrap();
        assert_eq!(&hex(&root.trace_id), trace_id);
        for i in 0..6i64 {
            let s = spans.iter().find(|s| s.name == format!("op-{i}")).unwrap();
            assert_eq!(s.parent_span_id, root.span_id);
            assert_eq!(s.trace_id, root.trace_id);
            assert_eq!(attr(&s.attributes, "i"), Some(&Value::IntValue(i)));
            assert_eq!(
                attr(&s.attributes, "f"),
                Some(&Value::DoubleValue(i as f64 + 0.5))
            );
            assert_eq!(
                attr(&s.attributes, "b"),
                Some(&Value::BoolValue(i % 2 == 0))
            );
            assert!(
                matches!(attr(&s.attributes, "sa"), Some(Value::ArrayValue(a)) if a.values.len() == 2)
            );
            assert!(
                matches!(attr(&s.attributes, "ia"), Some(Value::ArrayValue(a)) if a.values.len() == 3)
            );
            if i == 1 {
                assert_eq!(s.status.as_ref().unwrap().code, 2, "error status");
                assert_eq!(s.events[0].name, "exception");
            }
        }
        let logs: Vec<_> = received
            .logs
            .iter()
            .flat_map(|r| &r.resource_logs)
            .filter(|rl| {
                attr(&rl.resource.as_ref().unwrap().attributes, "service.name")
                    == Some(&string(service))
            })
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| sl.log_records.clone())
            .collect();
        assert_eq!(logs.len(), 4);
        for l in &logs {
            assert_eq!(&hex(&l.trace_id), trace_id, "log carries its trace context");
            assert_eq!(l.severity_number, 13);
        }
        let metrics: Vec<_> = received
            .metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .filter(|rm| {
                attr(&rm.resource.as_ref().unwrap().attributes, "service.name")
                    == Some(&string(service))
            })
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| sm.metrics.clone())
            .collect();
        let counter = metrics
            .iter()
            .find(|m| m.name == "e2e.requests")
            .expect("counter");
        let Some(metric::Data::Sum(sum)) = &counter.data else {
            panic!("{counter:?}")
        };
        assert_eq!(sum.data_points.len(), 1);
        let histogram = metrics
            .iter()
            .find(|m| m.name == "e2e.latency")
            .expect("histogram");
        let Some(metric::Data::Histogram(h)) = &histogram.data else {
            panic!("{histogram:?}")
        };
        assert_eq!(h.data_points[0].count, 3);
        assert_eq!(h.data_points[0].sum, Some(270.0));
    }
}
