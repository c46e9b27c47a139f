//! The Python OpenTelemetry SDK (from PyPI, installed by the test command into a private venv)
//! delivers traces, metrics and logs through sluice over gRPC and HTTP, intact.

use std::process::Command;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric;

use crate::support::{Ports, Sink, Sluice, attr, hex, string};

/// The venv's Python: the README test command installs the SDK and sets `SLUICE_PYTHON`.
fn python() -> String {
    std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| {
        panic!("SLUICE_PYTHON is not set: run the test command from README.md (scripts/test.sh), which installs the Python OpenTelemetry SDK into a venv and points SLUICE_PYTHON at it")
    })
}

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/send_otlp.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_sdk_delivers_every_signal_over_grpc_and_http() {
    let python = python();
    let sink = Sink::start().await;
    let ports = Ports::new();
    let config = format!(
        "{}processors:\n  resource:\n    attributes:\n      - {{key: collector.name, value: sluice-e2e, action: insert}}\n  batch:\n    timeout: 100ms\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [resource, batch], exporters: [otlp]}}\n    metrics: {{receivers: [otlp], processors: [resource, batch], exporters: [otlp]}}\n    logs: {{receivers: [otlp], processors: [resource, batch], exporters: [otlp]}}\n{}",
        ports.common(),
        sink.grpc_port,
        ports.telemetry()
    );
    let _sluice = Sluice::start(ports, &config);
    let mut trace_ids = Vec::new();
    for (protocol, port) in [("grpc", ports.grpc), ("http", ports.http)] {
        let out = Command::new(&python)
            .arg(script())
            .args(["--endpoint", &format!("http://127.0.0.1:{port}")])
            .args([
                "--protocol",
                protocol,
                "--service-name",
                &format!("py-{protocol}"),
            ])
            .args(["--spans", "6", "--logs", "4", "--metrics"])
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "python client failed over {protocol}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(
            out.stdout
                .split(|b| *b == b'\n')
                .rfind(|l| !l.is_empty())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(summary["spans"], 7);
        trace_ids.push((protocol, summary["trace_id"].as_str().unwrap().to_owned()));
    }

    sink.wait_for(
        Duration::from_secs(20),
        "14 spans and 8 logs from python",
        |r| {
            r.span_count() == 14
                && r.log_count() == 8
                && r.metric_names()
                    .iter()
                    .filter(|n| *n == "e2e.latency")
                    .count()
                    == 2
        },
    )
    .await;
    let received = sink.snapshot();
    for (protocol, trace_id) in &trace_ids {
        let rs: Vec<_> = received
            .traces
            .iter()
            .flat_map(|r| &r.resource_spans)
            .filter(|rs| {
                attr(&rs.resource.as_ref().unwrap().attributes, "service.name")
                    == Some(&string(&format!("py-{protocol}")))
            })
            .collect();
        assert!(!rs.is_empty(), "no spans from py-{protocol}");
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
                    == Some(&string(&format!("py-{protocol}")))
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
                    == Some(&string(&format!("py-{protocol}")))
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
