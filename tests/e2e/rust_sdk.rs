//! The opentelemetry-otlp crate's exporters deliver traces, metrics and logs through sluice,
//! over gRPC and HTTP, intact and enriched by the resource processor.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::support::{Ports, Sink, Sluice, attr, string};

fn config(ports: &Ports, sink: &Sink) -> String {
    format!(
        "{common}processors:
  resource:
    attributes:
      - {{key: collector.name, value: sluice-e2e, action: insert}}
      - {{key: cloud.region, value: \"${{env:SLUICE_E2E_UNSET_REGION:-eu-west-1}}\", action: upsert}}
      - {{key: secret.token, action: delete}}
  batch:
    timeout: 100ms
exporters:
  otlp:
    endpoint: 127.0.0.1:{grpc}
    tls: {{insecure: true}}
    retry_on_failure: {{initial_interval: 100ms}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [resource, batch], exporters: [otlp]}}
    metrics: {{receivers: [otlp], processors: [resource, batch], exporters: [otlp]}}
    logs: {{receivers: [otlp], processors: [resource, batch], exporters: [otlp]}}
{telemetry}",
        common = ports.common(),
        grpc = sink.grpc_port,
        telemetry = ports.telemetry(),
    )
}

fn resource(tag: &str) -> Resource {
    Resource::builder()
        .with_service_name(format!("rust-{tag}"))
        .with_attributes([
            KeyValue::new("service.version", "9.9.9"),
            KeyValue::new("secret.token", "hunter2"),
        ])
        .build()
}

/// Sends 20 spans, 5 log records and a counter with the SDK over `protocol`.
fn send(protocol: &str, ports: Ports) {
    let tag = protocol.to_owned();
    let (spans, logs, metrics) = if protocol == "grpc" {
        let endpoint = format!("http://127.0.0.1:{}", ports.grpc);
        (
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&endpoint)
                .build()
                .unwrap(),
            opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_endpoint(&endpoint)
                .build()
                .unwrap(),
            opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(&endpoint)
                .build()
                .unwrap(),
        )
    } else {
        let base = format!("http://127.0.0.1:{}", ports.http);
        (
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("{base}/v1/traces"))
                .build()
                .unwrap(),
            opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("{base}/v1/logs"))
                .build()
                .unwrap(),
            opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("{base}/v1/metrics"))
                .build()
                .unwrap(),
        )
    };
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource(&tag))
        .build();
    let tracer = tracer_provider.tracer("sluice-e2e");
    for i in 0..20i64 {
        let mut span = tracer.start(format!("{tag}-span-{i}"));
        span.set_attribute(KeyValue::new("index", i));
        span.set_attribute(KeyValue::new("ratio", i as f64 / 4.0));
        span.set_attribute(KeyValue::new("even", i % 2 == 0));
        span.set_attribute(KeyValue::new("label", format!("label-{i}")));
        span.add_event("checkpoint", vec![KeyValue::new("at", i)]);
        span.end();
    }
    tracer_provider.shutdown().expect("spans exported");

    let logger_provider = SdkLoggerProvider::builder()
        .with_batch_exporter(logs)
        .with_resource(resource(&tag))
        .build();
    let logger = logger_provider.logger("sluice-e2e");
    for i in 0..5i64 {
        let mut record = logger.create_log_record();
        record.set_body(format!("{tag}-log-{i}").into());
        record.set_severity_number(Severity::Warn);
        record.add_attribute("idx", i);
        logger.emit(record);
    }
    logger_provider.shutdown().expect("logs exported");

    let meter_provider = SdkMeterProvider::builder()
        .with_periodic_exporter(metrics)
        .with_resource(resource(&tag))
        .build();
    let counter = meter_provider
        .meter("sluice-e2e")
        .u64_counter(format!("{tag}.requests"))
        .build();
    counter.add(3, &[KeyValue::new("route", "/a")]);
    counter.add(4, &[KeyValue::new("route", "/b")]);
    meter_provider.shutdown().expect("metrics exported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rust_sdk_delivers_every_signal_over_grpc_and_http_intact_and_enriched() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let sluice = Sluice::start(ports, &config(&ports, &sink));
    for protocol in ["grpc", "http"] {
        tokio::task::spawn_blocking(move || send(protocol, ports))
            .await
            .unwrap();
    }
    sink.wait_for(
        Duration::from_secs(20),
        "40 spans, 10 logs, 2 metrics",
        |r| {
            let names = r.metric_names();
            r.span_count() == 40
                && r.log_count() == 10
                && names.contains(&"grpc.requests".to_owned())
                && names.contains(&"http.requests".to_owned())
        },
    )
    .await;

    let received = sink.snapshot();
    for rs in received.traces.iter().flat_map(|r| &r.resource_spans) {
        let res = &rs.resource.as_ref().unwrap().attributes;
        let service = attr(res, "service.name").cloned();
        assert!(
            matches!(&service, Some(Value::StringValue(s)) if s.starts_with("rust-")),
            "{service:?}"
        );
        assert_eq!(attr(res, "service.version"), Some(&string("9.9.9")));
        assert_eq!(
            attr(res, "collector.name"),
            Some(&string("sluice-e2e")),
            "inserted"
        );
        assert_eq!(
            attr(res, "cloud.region"),
            Some(&string("eu-west-1")),
            "env default expanded"
        );
        assert_eq!(attr(res, "secret.token"), None, "deleted");
        for ss in &rs.scope_spans {
            assert_eq!(ss.scope.as_ref().unwrap().name, "sluice-e2e");
            for span in &ss.spans {
                let Some(Value::IntValue(i)) = attr(&span.attributes, "index").cloned() else {
                    panic!("index attribute missing on {}", span.name);
                };
                assert!(span.name.ends_with(&format!("-span-{i}")));
                assert_eq!(
                    attr(&span.attributes, "ratio"),
                    Some(&Value::DoubleValue(i as f64 / 4.0))
                );
                assert_eq!(
                    attr(&span.attributes, "even"),
                    Some(&Value::BoolValue(i % 2 == 0))
                );
                assert_eq!(
                    attr(&span.attributes, "label"),
                    Some(&string(&format!("label-{i}")))
                );
                assert_eq!(span.events.len(), 1);
                assert_eq!(span.events[0].name, "checkpoint");
                assert_eq!(span.trace_id.len(), 16);
                assert_eq!(span.span_id.len(), 8);
                assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
            }
        }
    }
    let mut names: Vec<String> = received.spans().into_iter().map(|s| s.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 40, "every span exactly once");

    let bodies: Vec<String> = received
        .logs
        .iter()
        .flat_map(|r| &r.resource_logs)
        .flat_map(|rl| {
            let res = &rl.resource.as_ref().unwrap().attributes;
            assert_eq!(attr(res, "collector.name"), Some(&string("sluice-e2e")));
            &rl.scope_logs
        })
        .flat_map(|sl| &sl.log_records)
        .map(|l| {
            assert_eq!(l.severity_number, 13, "WARN");
            match l.body.as_ref().and_then(|b| b.value.clone()) {
                Some(Value::StringValue(s)) => s,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    for protocol in ["grpc", "http"] {
        for i in 0..5 {
            assert!(
                bodies.contains(&format!("{protocol}-log-{i}")),
                "{bodies:?}"
            );
        }
    }

    for protocol in ["grpc", "http"] {
        let metric = received
            .metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .find(|m| m.name == format!("{protocol}.requests"))
            .unwrap_or_else(|| panic!("{protocol}.requests missing"));
        let Some(metric::Data::Sum(sum)) = &metric.data else {
            panic!("not a sum: {metric:?}");
        };
        assert!(sum.is_monotonic);
        let mut values: Vec<i64> = sum
            .data_points
            .iter()
            .map(|p| match p.value {
                Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(
                    v,
                )) => v,
                other => panic!("{other:?}"),
            })
            .collect();
        values.sort();
        assert_eq!(values, [3, 4]);
    }
    assert_eq!(
        sluice
            .metric("otelcol_receiver_accepted_spans{receiver=\"otlp\",transport=\"grpc\"}")
            .await,
        20.0
    );
    assert_eq!(
        sluice
            .metric("otelcol_receiver_accepted_spans{receiver=\"otlp\",transport=\"http\"}")
            .await,
        20.0
    );
    assert_eq!(
        sluice
            .wait_metric("otelcol_exporter_sent_spans{exporter=\"otlp\"}", 40.0)
            .await,
        40.0
    );
    assert_eq!(
        sluice
            .wait_metric("otelcol_exporter_sent_log_records{exporter=\"otlp\"}", 10.0)
            .await,
        10.0
    );
}
