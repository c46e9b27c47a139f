//! The `prometheusremotewrite` exporter against a real Prometheus (Debian's package, started here
//! with its remote-write receiver, native histograms and exemplar storage): metrics of every type
//! go in over OTLP and are queried back through Prometheus's HTTP API, value by value.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint, exemplar, exponential_histogram_data_point::Buckets, metric,
    number_data_point, summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::Value;

use crate::support::{Ports, Sluice, TempDir, free_port};

pub(crate) struct Prometheus {
    child: Child,
    pub(crate) port: u16,
    _dir: TempDir,
}

impl Prometheus {
    pub(crate) fn start() -> Prometheus {
        Prometheus::with_config("global:\n  scrape_interval: 1h\n")
    }

    /// A Prometheus scraping `127.0.0.1:port` every second, keeping the labels it scrapes
    /// (`honor_labels`, as the Collector's docs advise for its `prometheus` exporter). With
    /// native histograms on, it asks for the protobuf format first.
    pub(crate) fn scraping(port: u16) -> Prometheus {
        Prometheus::with(&Self::scrape_config(port), true)
    }

    /// The same, with native histograms off: it asks for the text format.
    pub(crate) fn scraping_text(port: u16) -> Prometheus {
        Prometheus::with(&Self::scrape_config(port), false)
    }

    fn scrape_config(port: u16) -> String {
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sluice\n    honor_labels: true\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        )
    }

    fn with_config(yaml: &str) -> Prometheus {
        Prometheus::with(yaml, true)
    }

    fn with(yaml: &str, native_histograms: bool) -> Prometheus {
        let binary = std::env::var("SLUICE_PROMETHEUS").unwrap_or_else(|_| "prometheus".to_owned());
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        std::fs::write(&config, yaml).unwrap();
        let port = free_port();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg(if native_histograms {
                "--enable-feature=native-histograms,exemplar-storage"
            } else {
                "--enable-feature=exemplar-storage"
            })
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{binary}` ({e}): run the README test command (scripts/test.sh), which installs Debian's prometheus package"));
        let p = Prometheus {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(out) = Command::new("curl")
                .args(["-sf", &format!("http://127.0.0.1:{port}/-/ready")])
                .output()
                && out.status.success()
            {
                return p;
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) async fn query(&self, q: &str, at_ms: i64) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let time = format!("{:.3}", at_ms as f64 / 1000.0);
        let v: Value = reqwest::Client::new()
            .get(url)
            .query(&[("query", q), ("time", time.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"], "success", "{q}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The exemplars of `query` between `from_ms` and `to_ms`, as the API's JSON text.
    pub(crate) async fn exemplars(&self, query: &str, from_ms: i64, to_ms: i64) -> String {
        let url = format!("http://127.0.0.1:{}/api/v1/query_exemplars", self.port);
        let (start, end) = (
            format!("{}", from_ms / 1000),
            format!("{}", to_ms / 1000 + 1),
        );
        let v: Value = reqwest::Client::new()
            .get(url)
            .query(&[
                ("query", query),
                ("start", start.as_str()),
                ("end", end.as_str()),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.to_string()
    }

    /// The single value of an instant query (panics unless exactly one series answers).
    async fn value(&self, q: &str, at_ms: i64) -> f64 {
        let result = self.query(q, at_ms).await;
        assert_eq!(result.len(), 1, "{q} returned {result:?}");
        result[0]["value"][1].as_str().unwrap().parse().unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The wall clock in milliseconds, as Prometheus' API takes times.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn number(t: u64, v: number_data_point::Value, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: t,
        start_time_unix_nano: t - 60_000_000_000,
        value: Some(v),
        ..Default::default()
    }
}

fn metric(name: &str, unit: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        description: format!("{name} for the e2e test"),
        data: Some(data),
        ..Default::default()
    }
}

fn request(t1: u64, t2: u64) -> ExportMetricsServiceRequest {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let metrics = vec![
        metric(
            "e2e.requests",
            "1",
            metric::Data::Sum(Sum {
                data_points: vec![number(
                    t1,
                    number_data_point::Value::AsInt(42),
                    vec![kv("http.route", "/pay")],
                )],
                aggregation_temporality: cumulative,
                is_monotonic: true,
            }),
        ),
        metric(
            "e2e.memory",
            "By",
            metric::Data::Gauge(Gauge {
                data_points: vec![number(
                    t1,
                    number_data_point::Value::AsDouble(1536.5),
                    vec![],
                )],
            }),
        ),
        metric(
            "e2e.queue.depth",
            "{item}",
            metric::Data::Sum(Sum {
                data_points: vec![number(t1, number_data_point::Value::AsInt(-3), vec![])],
                aggregation_temporality: cumulative,
                is_monotonic: false,
            }),
        ),
        metric(
            "e2e.latency",
            "s",
            metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    time_unix_nano: t1,
                    start_time_unix_nano: t1 - 60_000_000_000,
                    count: 10,
                    sum: Some(4.5),
                    bucket_counts: vec![2, 5, 3],
                    explicit_bounds: vec![0.1, 0.5],
                    exemplars: vec![Exemplar {
                        time_unix_nano: t1 - 1_000_000_000,
                        value: Some(exemplar::Value::AsDouble(0.3)),
                        trace_id: vec![0xab; 16],
                        span_id: vec![0xcd; 8],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                aggregation_temporality: cumulative,
            }),
        ),
        metric(
            "e2e.rpc.duration",
            "ms",
            metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    time_unix_nano: t1,
                    start_time_unix_nano: t1 - 60_000_000_000,
                    count: 7,
                    sum: 70.0,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 9.0,
                        },
                        ValueAtQuantile {
                            quantile: 0.99,
                            value: 20.0,
                        },
                    ],
                    ..Default::default()
                }],
            }),
        ),
        metric(
            "e2e.payload",
            "By",
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    time_unix_nano: t1,
                    start_time_unix_nano: t1 - 60_000_000_000,
                    count: 6,
                    sum: Some(100.0),
                    scale: 0,
                    zero_count: 1,
                    positive: Some(Buckets {
                        offset: 0,
                        bucket_counts: vec![2, 3],
                    }),
                    ..Default::default()
                }],
                aggregation_temporality: cumulative,
            }),
        ),
        metric(
            "e2e.delta",
            "1",
            metric::Data::Sum(Sum {
                data_points: vec![number(t1, number_data_point::Value::AsInt(5), vec![])],
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            }),
        ),
        metric(
            "e2e.gone",
            "",
            metric::Data::Gauge(Gauge {
                data_points: vec![
                    number(t1, number_data_point::Value::AsDouble(1.0), vec![]),
                    NumberDataPoint {
                        time_unix_nano: t2,
                        flags: 1,
                        ..Default::default()
                    },
                ],
            }),
        ),
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("service.namespace", "shop"),
                    kv("service.instance.id", "i-1"),
                    kv("host.name", "node-1"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "e2e-meter".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_type_is_queryable_in_prometheus() {
    let prometheus = tokio::task::spawn_blocking(Prometheus::start)
        .await
        .unwrap();
    let ports = Ports::new();
    let config = format!(
        "{}processors:\n  batch:\n    timeout: 50ms\nexporters:\n  prometheusremotewrite:\n    endpoint: http://127.0.0.1:{}/api/v1/write\n    external_labels: {{environment: e2e}}\n    retry_on_failure: {{initial_interval: 100ms}}\nservice:\n  pipelines:\n    metrics: {{receivers: [otlp], processors: [batch], exporters: [prometheusremotewrite]}}\n{}",
        ports.common(),
        prometheus.port,
        ports.telemetry()
    );
    let sluice = Sluice::start(ports, &config);
    let now_ms = now_ms();
    let t1_ms = now_ms - 20_000;
    let t2_ms = now_ms - 10_000;
    let (t1, t2) = (t1_ms as u64 * 1_000_000, t2_ms as u64 * 1_000_000);
    let mut client = MetricsServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    client.export(request(t1, t2)).await.unwrap();

    // Wait until the last series written is queryable.
    let deadline = Instant::now() + Duration::from_secs(20);
    while prometheus
        .query("e2e_requests_total", t1_ms)
        .await
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "nothing arrived in Prometheus:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let sel = r#"job="shop/checkout",instance="i-1",environment="e2e",otel_scope_name="e2e-meter",otel_scope_version="1.0""#;
    assert_eq!(
        prometheus
            .value(
                &format!(r#"e2e_requests_total{{{sel},http_route="/pay"}}"#),
                t1_ms
            )
            .await,
        42.0
    );
    assert_eq!(
        prometheus
            .value(&format!("e2e_memory_bytes{{{sel}}}"), t1_ms)
            .await,
        1536.5
    );
    assert_eq!(
        prometheus
            .value(&format!("e2e_queue_depth{{{sel}}}"), t1_ms)
            .await,
        -3.0
    );
    for (le, count) in [("0.1", 2.0), ("0.5", 7.0), ("+Inf", 10.0)] {
        assert_eq!(
            prometheus
                .value(
                    &format!(r#"e2e_latency_seconds_bucket{{{sel},le="{le}"}}"#),
                    t1_ms
                )
                .await,
            count,
            "le={le}"
        );
    }
    assert_eq!(
        prometheus
            .value(&format!("e2e_latency_seconds_sum{{{sel}}}"), t1_ms)
            .await,
        4.5
    );
    assert_eq!(
        prometheus
            .value(&format!("e2e_latency_seconds_count{{{sel}}}"), t1_ms)
            .await,
        10.0
    );
    assert_eq!(
        prometheus
            .value(
                &format!(r#"e2e_rpc_duration_milliseconds{{{sel},quantile="0.99"}}"#),
                t1_ms
            )
            .await,
        20.0
    );
    assert_eq!(
        prometheus
            .value(
                &format!(r#"e2e_rpc_duration_milliseconds{{{sel},quantile="0.5"}}"#),
                t1_ms
            )
            .await,
        9.0
    );
    assert_eq!(
        prometheus
            .value(
                &format!("e2e_rpc_duration_milliseconds_sum{{{sel}}}"),
                t1_ms
            )
            .await,
        70.0
    );
    assert_eq!(
        prometheus
            .value(
                &format!("e2e_rpc_duration_milliseconds_count{{{sel}}}"),
                t1_ms
            )
            .await,
        7.0
    );
    // The exponential histogram arrives as a native histogram.
    assert_eq!(
        prometheus
            .value(
                &format!("histogram_count(e2e_payload_bytes{{{sel}}})"),
                t1_ms
            )
            .await,
        6.0
    );
    assert_eq!(
        prometheus
            .value(&format!("histogram_sum(e2e_payload_bytes{{{sel}}})"), t1_ms)
            .await,
        100.0
    );
    // Resource attributes other than job/instance live on target_info.
    // target_info carries the time of the resource's newest point.
    assert_eq!(
        prometheus
            .value(
                r#"target_info{job="shop/checkout",instance="i-1",host_name="node-1"}"#,
                t2_ms
            )
            .await,
        1.0
    );
    // Delta sums are dropped; a point with no recorded value ends its series (stale marker).
    assert!(
        prometheus
            .query(r#"{__name__=~"e2e_delta.*"}"#, t1_ms)
            .await
            .is_empty()
    );
    assert_eq!(prometheus.value("e2e_gone", t1_ms).await, 1.0);
    assert!(
        prometheus.query("e2e_gone", t2_ms).await.is_empty(),
        "stale marker ends the series"
    );
    // Exemplars carry the trace context.
    let text = prometheus
        .exemplars("e2e_latency_seconds_bucket", t1_ms - 60_000, now_ms)
        .await;
    assert!(
        text.contains(&"ab".repeat(16)) && text.contains(&"cd".repeat(8)),
        "exemplar with trace and span ids: {text}"
    );
    assert_eq!(
        sluice
            .wait_metric(
                "otelcol_exporter_sent_metric_points{exporter=\"prometheusremotewrite\"}",
                9.0
            )
            .await,
        9.0
    );
}

fn gauge_request(series: usize, t_ms: i64, value: f64) -> ExportMetricsServiceRequest {
    let t = t_ms as u64 * 1_000_000;
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "order")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![metric(
                    "e2e.order",
                    "",
                    metric::Data::Gauge(Gauge {
                        data_points: (0..series)
                            .map(|i| {
                                number(
                                    t,
                                    number_data_point::Value::AsDouble(value),
                                    vec![kv("shard", &i.to_string())],
                                )
                            })
                            .collect(),
                    }),
                )],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_senders_keep_per_series_order_and_out_of_order_is_a_counted_drop() {
    let prometheus = tokio::task::spawn_blocking(Prometheus::start)
        .await
        .unwrap();
    let ports = Ports::new();
    let config = format!(
        "{}processors:\n  batch:\n    timeout: 10ms\nexporters:\n  prometheusremotewrite:\n    endpoint: http://127.0.0.1:{}/api/v1/write\n    remote_write_queue: {{num_consumers: 5}}\n    max_batch_size_bytes: 2KiB\nservice:\n  pipelines:\n    metrics: {{receivers: [otlp], processors: [batch], exporters: [prometheusremotewrite]}}\n{}",
        ports.common(),
        prometheus.port,
        ports.telemetry()
    );
    let sluice = Sluice::start(ports, &config);
    let mut client = MetricsServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    let now_ms = now_ms();
    // 40 series, 30 successive samples each, sent as fast as sluice takes them: with five
    // parallel senders and 2 KiB requests, any reordering within a series would be a 400.
    for step in 0..30 {
        client
            .export(gauge_request(
                40,
                now_ms - 60_000 + step * 1000,
                step as f64,
            ))
            .await
            .unwrap();
    }
    let last = now_ms - 60_000 + 29_000;
    let deadline = Instant::now() + Duration::from_secs(20);
    while prometheus
        .query(r#"count(e2e_order{job="order"} == 29)"#, last)
        .await
        .is_empty()
        || prometheus
            .value(r#"count(e2e_order{job="order"} == 29)"#, last)
            .await
            < 40.0
    {
        assert!(
            Instant::now() < deadline,
            "not every series reached its last sample:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        prometheus
            .value(r#"sum(count_over_time(e2e_order{job="order"}[2m]))"#, last)
            .await,
        1200.0,
        "every sample of every series stored"
    );
    assert_eq!(
        sluice
            .metric(
                "otelcol_exporter_send_failed_metric_points{exporter=\"prometheusremotewrite\"}"
            )
            .await,
        0.0
    );

    // A sample older than one already stored is out of order: Prometheus answers 400, which is
    // not retried but counted and logged with the server's message.
    client
        .export(gauge_request(1, now_ms - 90_000, 1.0))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sluice
        .metric("otelcol_exporter_send_failed_metric_points{exporter=\"prometheusremotewrite\"}")
        .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "out-of-order drop not counted:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = sluice.logs();
    assert!(
        logs.contains("400") && logs.contains("out of order"),
        "{logs}"
    );
}

/// The `prometheus` exporter's page, as Prometheus would scrape it.
async fn scrape(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_prometheus_exporter_is_scraped_by_prometheus_and_passes_promtool() {
    let ports = Ports::new();
    let exporter = free_port();
    let open_metrics = free_port();
    let config = format!(
        "{}exporters:\n  prometheus:\n    endpoint: 127.0.0.1:{exporter}\n    namespace: app\n    const_labels: {{environment: e2e}}\n  prometheus/om:\n    endpoint: 127.0.0.1:{open_metrics}\n    namespace: app\n    const_labels: {{environment: e2e}}\n    enable_open_metrics: true\nservice:\n  pipelines:\n    metrics: {{receivers: [otlp], exporters: [prometheus, prometheus/om]}}\n{}",
        ports.common(),
        ports.telemetry()
    );
    let sluice = Sluice::start(ports, &config);
    // One Prometheus asks for the protobuf format (native histograms on); two ask for
    // OpenMetrics first, and get the text format 0.0.4 from the exporter without
    // `enable_open_metrics`, OpenMetrics from the one with it.
    let (protobuf, text, openmetrics) = tokio::task::spawn_blocking(move || {
        (
            Prometheus::scraping(exporter),
            Prometheus::scraping_text(exporter),
            Prometheus::scraping_text(open_metrics),
        )
    })
    .await
    .unwrap();
    let sent_ms = now_ms();
    let (t1, t2) = (
        (sent_ms - 20_000) as u64 * 1_000_000,
        (sent_ms - 10_000) as u64 * 1_000_000,
    );
    let mut client = MetricsServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap();
    client.export(request(t1, t2)).await.unwrap();

    // The page passes Prometheus' own linter.
    let page = scrape(exporter).await;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool comes with Debian's prometheus package: run scripts/test.sh");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), page.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // Exit 3 is lint findings, anything else but 0 a page that does not parse. The one finding
    // allowed is the base-unit lint on a name the OTLP unit decides (`ms` is `milliseconds` by
    // the specification's translation, as in the Collector).
    let lint_only = checked.status.code() == Some(3)
        && findings
            .lines()
            .all(|l| l.trim().is_empty() || l.contains("use base unit"));
    assert!(
        checked.status.success() || lint_only,
        "promtool check metrics: {findings}\n{page}"
    );
    assert!(
        findings.is_empty() || findings.contains("app_e2e_rpc_duration_milliseconds"),
        "{findings}"
    );
    // Exponential histograms (no text form) and the series marked stale are not there.
    for absent in ["app_e2e_payload", "app_e2e_gone"] {
        assert!(!page.contains(absent), "{absent} in:\n{page}");
    }

    // Prometheus scrapes it, in both formats: the values come back with the resource's job and
    // instance, the const label and the namespace.
    let sel = r#"job="shop/checkout",instance="i-1",environment="e2e",otel_scope_name="e2e-meter""#;
    for (format, prometheus) in [
        ("protobuf", &protobuf),
        ("text", &text),
        ("openmetrics", &openmetrics),
    ] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while prometheus
            .query("app_e2e_requests_total", now_ms())
            .await
            .is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "Prometheus ({format}) scraped nothing:\n{}",
                sluice.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for (query, want) in [
            (
                format!(r#"app_e2e_requests_total{{{sel},http_route="/pay"}}"#),
                42.0,
            ),
            (format!("app_e2e_memory_bytes{{{sel}}}"), 1536.5),
            // A monotonic delta sum, served as the Collector's exporter serves it: cumulated.
            (format!("app_e2e_delta_total{{{sel}}}"), 5.0),
            (format!("app_e2e_queue_depth{{{sel}}}"), -3.0),
            (format!("app_e2e_latency_seconds_count{{{sel}}}"), 10.0),
            (
                format!(r#"app_e2e_latency_seconds_bucket{{{sel},le="0.5"}}"#),
                7.0,
            ),
            (
                format!(r#"app_e2e_latency_seconds_bucket{{{sel},le="+Inf"}}"#),
                10.0,
            ),
            (format!("app_e2e_latency_seconds_sum{{{sel}}}"), 4.5),
            (
                format!(r#"app_e2e_rpc_duration_milliseconds{{{sel},quantile="0.99"}}"#),
                20.0,
            ),
            (
                format!("app_e2e_rpc_duration_milliseconds_count{{{sel}}}"),
                7.0,
            ),
            (
                r#"app_target_info{job="shop/checkout",host_name="node-1"}"#.to_owned(),
                1.0,
            ),
        ] {
            assert_eq!(
                prometheus.value(&query, now_ms()).await,
                want,
                "{format}: {query}"
            );
        }
    }
    // The exponential histogram reaches the protobuf scraper as a native histogram, and is not
    // in the text one.
    let payload = format!("app_e2e_payload_bytes{{{sel}}}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while protobuf.query(&payload, now_ms()).await.is_empty() {
        assert!(Instant::now() < deadline, "no native histogram scraped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        protobuf
            .value(&format!("histogram_count({payload})"), now_ms())
            .await,
        6.0
    );
    assert_eq!(
        protobuf
            .value(&format!("histogram_sum({payload})"), now_ms())
            .await,
        100.0
    );
    assert!(text.query(&payload, now_ms()).await.is_empty());
    assert!(openmetrics.query(&payload, now_ms()).await.is_empty());

    // OpenMetrics carries the exemplars, with their trace context.
    let exemplars = openmetrics
        .exemplars(
            "app_e2e_latency_seconds_bucket",
            now_ms() - 600_000,
            now_ms(),
        )
        .await;
    assert!(
        exemplars.contains(&"ab".repeat(16)) && exemplars.contains(&"cd".repeat(8)),
        "exemplar with trace and span ids: {exemplars}"
    );
    // What each scraper was answered with.
    let client = reqwest::Client::new();
    for (port, accept, want) in [
        (
            exporter,
            "application/openmetrics-text;version=1.0.0",
            "text/plain; version=0.0.4",
        ),
        (
            open_metrics,
            "application/openmetrics-text;version=1.0.0",
            "application/openmetrics-text",
        ),
        (
            open_metrics,
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
            "application/vnd.google.protobuf",
        ),
    ] {
        let answer = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        let content_type = answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with(want), "{accept}: {content_type}");
    }
}
