//! The `spanmetrics` connector end to end: spans with known durations and statuses go in over
//! OTLP, and a real Prometheus is asked for `traces_span_metrics_calls_total` and the duration
//! histogram per service, span name, kind and status, through both ways out of sluice: pushed by
//! `prometheusremotewrite` (with the exemplars, which carry the trace ids) and scraped from the
//! `prometheus` exporter.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::Value;

use crate::prometheus::{Prometheus, now_ms};
use crate::support::{Ports, Sluice, free_port, kv, string as s};

const MS: u64 = 1_000_000;

fn span(name: &str, kind: i32, ms: u64, status: i32, trace: u8) -> Span {
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![trace; 8],
        name: name.to_owned(),
        kind,
        start_time_unix_nano: end - ms * MS,
        end_time_unix_nano: end,
        status: Some(Status {
            code: status,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Waits until `query` answers with `want` series, and returns them.
async fn wait_for(
    prometheus: &Prometheus,
    query: &str,
    want: usize,
    logs: &dyn Fn() -> String,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let result = prometheus.query(query, now_ms()).await;
        if result.len() >= want {
            return result;
        }
        assert!(
            Instant::now() < deadline,
            "{query}: {} of {want} series\n{}",
            result.len(),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn value_of(result: &[Value], label: &str, value: &str) -> f64 {
    result
        .iter()
        .find(|r| r["metric"][label] == value)
        .unwrap_or_else(|| panic!("no series with {label}={value} in {result:?}"))["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn span_metrics_reach_prometheus_by_service_name_kind_and_status_with_exemplars() {
    let remote = Prometheus::start();
    let scrape_port = free_port();
    let scraper = Prometheus::scraping(scrape_port);
    let ports = Ports::new();
    let config = format!(
        "{}connectors:\n  spanmetrics:\n    metrics_flush_interval: 1s\n    exemplars: {{enabled: true}}\nexporters:\n  prometheusremotewrite:\n    endpoint: http://127.0.0.1:{}/api/v1/write\n  prometheus:\n    endpoint: 127.0.0.1:{scrape_port}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [spanmetrics]}}\n    metrics: {{receivers: [spanmetrics], exporters: [prometheusremotewrite, prometheus]}}\n{}",
        ports.common(),
        remote.port,
        ports.telemetry()
    );
    let sluice = Sluice::start(ports, &config);
    let logs = || sluice.logs();

    // checkout: three server calls to /cart (3ms and 120ms fine, 20s an error), one client call;
    // payment: one internal span.
    let request = ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("checkout"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        span("GET /cart", 2, 3, 0, 0xa1),
                        span("GET /cart", 2, 120, 0, 0xa2),
                        span("GET /cart", 2, 20_000, 2, 0xa3),
                        span("SELECT", 3, 1, 1, 0xa4),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("payment"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span("charge", 1, 50, 0, 0xb1)],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    };
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", sluice.ports.grpc))
        .await
        .unwrap();
    client.export(request).await.unwrap();

    for (who, prometheus) in [("remote-write", &remote), ("scrape", &scraper)] {
        let calls = wait_for(prometheus, "traces_span_metrics_calls_total", 4, &logs).await;
        assert_eq!(calls.len(), 4, "{who}: {calls:?}");
        for c in &calls {
            let m = &c["metric"];
            let key = (
                m["service_name"].as_str().unwrap(),
                m["span_name"].as_str().unwrap(),
                m["span_kind"].as_str().unwrap(),
                m["status_code"].as_str().unwrap(),
            );
            let want = match key {
                ("checkout", "GET /cart", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET") => "2",
                ("checkout", "GET /cart", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR")
                | ("checkout", "SELECT", "SPAN_KIND_CLIENT", "STATUS_CODE_OK")
                | ("payment", "charge", "SPAN_KIND_INTERNAL", "STATUS_CODE_UNSET") => "1",
                other => panic!("{who}: unexpected series {other:?}"),
            };
            assert_eq!(c["value"][1], want, "{who}: {key:?}");
            assert_eq!(
                m["job"].as_str(),
                Some(key.0),
                "{who}: the service is the job"
            );
        }
        // The duration histogram: buckets in milliseconds, per series.
        let cart =
            r#"service_name="checkout",span_name="GET /cart",status_code="STATUS_CODE_UNSET""#;
        // Prometheus 2 writes the `le` of a bucket scraped in the protobuf format as a float
        // (`2.0`), and as sent (`2`) from the text format and remote-write.
        let le = |bound: &str| {
            let matcher = if bound == "+Inf" {
                r#"le="+Inf""#.to_owned()
            } else {
                format!(r#"le=~"{bound}(\\.0)?""#)
            };
            format!(r#"traces_span_metrics_duration_milliseconds_bucket{{{cart},{matcher}}}"#)
        };
        for (bound, want) in [
            ("2", 0.0),
            ("4", 1.0),
            ("100", 1.0),
            ("200", 2.0),
            ("+Inf", 2.0),
        ] {
            let result = wait_for(prometheus, &le(bound), 1, &logs).await;
            assert_eq!(
                value_of(&result, "span_kind", "SPAN_KIND_SERVER"),
                want,
                "{who}: le={bound}"
            );
        }
        let sum = wait_for(
            prometheus,
            &format!("traces_span_metrics_duration_milliseconds_sum{{{cart}}}"),
            1,
            &logs,
        )
        .await;
        assert_eq!(
            value_of(&sum, "span_kind", "SPAN_KIND_SERVER"),
            123.0,
            "{who}"
        );
        let errors = wait_for(
            prometheus,
            r#"sum by (service_name) (traces_span_metrics_calls_total{status_code="STATUS_CODE_ERROR"})"#,
            1,
            &logs,
        )
        .await;
        assert_eq!(value_of(&errors, "service_name", "checkout"), 1.0, "{who}");
    }

    // The RED dashboard and the service alerts read these series: every query of the dashboard
    // answers, and every metric the rules name exists, on what sluice wrote.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/dashboards/sluice-red.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 8, "{exprs:?}");
    let rules =
        std::fs::read_to_string(root.join("deploy/prometheus/rules/red.rules.yml")).unwrap();
    let rules: Value = serde_yaml::from_str(&rules).unwrap();
    for rule in rules["groups"][0]["rules"].as_array().unwrap() {
        if rule["record"].is_string() {
            exprs.push(rule["expr"].as_str().unwrap().to_owned());
        }
    }
    for expr in &exprs {
        let expr = expr
            .replace("$service", ".*")
            .replace("$kind", ".*")
            .replace("$__rate_interval", "1m");
        wait_for(&remote, &expr, 1, &logs).await;
    }
    let rules_text = serde_json::to_string(&rules).unwrap();
    let mut names: Vec<&str> = rules_text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        // Metric names, not the `service:traces_span_metrics_calls:rate5m` recording names.
        .filter(|w| {
            w.starts_with("traces_span_metrics_")
                && (w.ends_with("_total") || w.ends_with("_bucket"))
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 2, "{names:?}");
    for name in names {
        wait_for(
            &remote,
            &format!("count({{__name__=\"{name}\"}})"),
            1,
            &logs,
        )
        .await;
    }

    // Exemplars (remote-write carries them): the slow error's trace id is on its bucket.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = remote
            .exemplars(
                r#"traces_span_metrics_duration_milliseconds_bucket{status_code="STATUS_CODE_ERROR"}"#,
                now_ms() - 120_000,
                now_ms(),
            )
            .await;
        if text.contains(&"a3".repeat(16)) {
            assert!(text.contains(&"a3".repeat(8)), "the span id too: {text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no exemplar with the trace id: {text}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rss_stays_flat_under_a_million_distinct_span_names() {
    let sink = crate::support::Sink::start().await;
    let ports = Ports::new();
    let config = format!(
        "{}connectors:\n  spanmetrics:\n    metrics_flush_interval: 1s\n    max_series: 10000\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [spanmetrics]}}\n    metrics: {{receivers: [spanmetrics], exporters: [otlp]}}\n{}",
        ports.common(),
        sink.grpc_port,
        ports.telemetry()
    );
    let sluice = Sluice::start(ports, &config);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", sluice.ports.grpc))
        .await
        .unwrap();
    let template = span("x", 2, 5, 0, 1);
    let mut send = async |chunk: usize| {
        let spans: Vec<Span> = (0..10_000)
            .map(|i| Span {
                name: format!("GET /items/{chunk}/{i}"),
                ..template.clone()
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("catalog"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        client.export(request).await.unwrap();
    };
    // 200,000 names fill the 10,000 series and warm the allocator; 800,000 more must not grow
    // the process by more than the margin. Holding a series per name would take about 700 MB
    // (900 bytes a series); the margin covers allocator caches and requests in flight on a
    // loaded test machine (28 MiB was seen there).
    for chunk in 0..20 {
        send(chunk).await;
    }
    let warm = crate::support::rss_kib(sluice.pid(), "VmRSS:");
    for chunk in 20..100 {
        send(chunk).await;
    }
    let after = crate::support::rss_kib(sluice.pid(), "VmRSS:");
    assert!(warm > 0, "RSS is readable");
    assert!(
        after < warm + 64 * 1024,
        "RSS grew from {warm} KiB to {after} KiB over 800,000 new span names"
    );
    // Every span is counted: a flush's calls add up to all of them, the overflow series holding
    // the calls past the limit, and no more than 10,000 named series are written.
    sink.wait_for(Duration::from_secs(30), "a flush counting every span", |r| {
        r.metrics.last().is_some_and(|request| {
            let points: Vec<_> = request
                .resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .filter(|m| m.name == "traces.span.metrics.calls")
                .filter_map(|m| match &m.data {
                    Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Sum(sum)) => {
                        Some(sum.data_points.clone())
                    }
                    _ => None,
                })
                .flatten()
                .collect();
            let total: i64 = points
                .iter()
                .map(|p| match p.value {
                    Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(v)) => v,
                    _ => 0,
                })
                .sum();
            total == 1_000_000 && points.len() == 10_001
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn span_metrics_are_written_out_once_more_at_shutdown() {
    let sink = crate::support::Sink::start().await;
    let ports = Ports::new();
    // An hour between flushes: only the one at shutdown can deliver.
    let config = format!(
        "{}connectors:\n  spanmetrics:\n    metrics_flush_interval: 1h\nprocessors:\n  batch:\n    timeout: 100ms\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], processors: [batch], exporters: [spanmetrics]}}\n    metrics: {{receivers: [spanmetrics], processors: [batch], exporters: [otlp]}}\n{}",
        ports.common(),
        sink.grpc_port,
        ports.telemetry()
    );
    let mut sluice = Sluice::start(ports, &config);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", sluice.ports.grpc))
        .await
        .unwrap();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("api"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span("GET /", 2, 5, 0, 1), span("GET /", 2, 7, 0, 2)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    client.export(request).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = sluice.terminate();
        (status, sluice.logs())
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{:?}\n{}", status.0, status.1);
    sink.wait_for(
        Duration::from_secs(5),
        "the span metrics flushed at shutdown",
        |r| {
            r.metric_names()
                .iter()
                .any(|n| n == "traces.span.metrics.calls")
        },
    )
    .await;
}
