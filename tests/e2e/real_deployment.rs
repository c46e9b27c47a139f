//! A real team's Collector config (`config/examples/grafana-cloud.yaml`, exactly as they wrote
//! it: Jaeger for traces, a `prometheus` scrape endpoint on 8888 and Grafana Cloud remote-write for
//! metrics, Grafana Cloud Loki for logs) runs unchanged. Its `${...}` variables point at local
//! peers; its fixed names and ports are honoured as written: OTLP on 4317, the scrape endpoint on
//! 8888, and `jaeger:14250`, which resolves to a local Jaeger peer through a hosts file mounted in
//! a private mount namespace (`unshare`), so the machine's own `/etc/hosts` is never touched.
//!
//! The Python SDK sends every signal; the traces reach the Jaeger peer, the metrics are scraped
//! by one real Prometheus and arrive in another through remote-write, each with the config's
//! labels, and the logs reach a Loki push peer, decoded field by field.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::jaeger::{self, Mode};
use crate::loki;
use crate::prometheus::{Prometheus, now_ms};
use crate::python_sdk::run_script;
use crate::support::{TempDir, binary};

fn config_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config/examples/grafana-cloud.yaml")
}

/// A sluice process run with a private `/etc/hosts` in which `jaeger` is 127.0.0.1.
struct Contained {
    child: Child,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl Contained {
    fn start(env: &[(&str, String)]) -> Contained {
        let dir = TempDir::new("deployment");
        let hosts = dir.0.join("hosts");
        let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        text.push_str("\n127.0.0.1 jaeger\n");
        std::fs::write(&hosts, text).unwrap();
        let log = dir.0.join("sluice.log");
        // unshare execs the shell, which execs sluice: the child's pid is sluice's.
        let mut command = Command::new("unshare");
        command
            .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
            .arg(r#"mount --bind "$1" /etc/hosts && exec "$2" --config "$3" --shutdown-timeout 5s"#)
            .arg("sh")
            .arg(&hosts)
            .arg(binary())
            .arg(config_path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .expect("util-linux `unshare` runs (the test command installs it)");
        let mut c = Contained {
            child,
            log,
            _dir: dir,
        };
        c.wait_listening();
        c
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until OTLP gRPC (4317) and the scrape endpoint (8888) accept connections.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "sluice exited with {status} (`unshare` needs user namespaces):\n{}",
                    self.logs()
                );
            }
            let up = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if up(4317) && up(4318) && up(8888) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not listen on 4317, 4318 and 8888:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Contained {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_teams_collector_config_runs_unchanged_against_its_backends() {
    let (jaeger_peer, _) = jaeger::start_peer_at(Mode::Accept, "127.0.0.1:14250").await;
    let (loki_peer, loki_port) = loki::start_peer(loki::Mode::Accept).await;
    let remote = Prometheus::start();
    let scraper = Prometheus::scraping(8888);
    let env = [
        ("ENVIRONMENT", "staging".to_owned()),
        (
            "GRAFANA_CLOUD_PROMETHEUS_URL",
            format!("http://127.0.0.1:{}/api/v1/write", remote.port),
        ),
        (
            "GRAFANA_CLOUD_LOKI_URL",
            format!("http://127.0.0.1:{loki_port}/loki/api/v1/push"),
        ),
        ("GRAFANA_CLOUD_TENANT_ID", "123456".to_owned()),
        ("GRAFANA_CLOUD_API_KEY", "glc_secret".to_owned()),
    ];

    // `sluice validate` accepts the file as written, and says where the self-metrics went.
    let out = Command::new(binary())
        .args(["validate", "--config"])
        .arg(config_path())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert!(report.contains("self-metrics"), "{report}");

    let sluice = Contained::start(&env);
    assert!(
        sluice.logs().contains("self-metrics"),
        "the log says where the self-metrics went:\n{}",
        sluice.logs()
    );

    let summary = run_script(&[
        "--endpoint",
        "http://127.0.0.1:4317",
        "--protocol",
        "grpc",
        "--service-name",
        "starmates-api",
        "--spans",
        "3",
        "--logs",
        "2",
        "--metrics",
    ]);
    let trace_id = summary["trace_id"].as_str().unwrap().to_owned();

    // Traces: every span at the Jaeger peer, with the resource processor's attributes.
    jaeger::wait(&jaeger_peer, 4).await;
    let batches = jaeger_peer.batches.lock().unwrap().clone();
    for batch in &batches {
        let process = batch.process.as_ref().unwrap();
        assert_eq!(process.service_name, "starmates-api");
        let tag = |key: &str| {
            process
                .tags
                .iter()
                .find(|t| t.key == key)
                .map(|t| t.v_str.clone())
        };
        assert_eq!(tag("deployment.environment").as_deref(), Some("staging"));
        assert_eq!(tag("project").as_deref(), Some("starmates-ai-team"));
        for span in &batch.spans {
            assert_eq!(crate::support::hex(&span.trace_id), trace_id);
        }
    }

    // Logs: both records at the Loki peer, authorized, labelled, with the resource in the line.
    loki_peer.wait(2).await;
    for push in loki_peer.pushes.lock().unwrap().iter() {
        assert_eq!(push.content_type, "application/x-protobuf");
        assert_eq!(
            push.authorization.as_deref(),
            Some("Bearer 123456:glc_secret")
        );
    }
    for (labels, _, line) in loki_peer.entries() {
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(line["body"].as_str().unwrap().starts_with("log-"), "{line}");
        assert_eq!(line["traceid"], trace_id.as_str());
        assert_eq!(line["resources"]["deployment.environment"], "staging");
        assert_eq!(line["resources"]["project"], "starmates-ai-team");
        // The SDK sets service.instance.id itself: it becomes `instance`.
        let instance = line["resources"]["service.instance.id"].as_str().unwrap();
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("exporter", "OTLP"),
                ("instance", instance),
                ("job", "starmates-api"),
                ("level", "WARN"),
            ]
        );
    }

    // Metrics: in the remote-write Prometheus with the external labels, and scraped from 8888 by
    // the other with the const labels; the counter is 3 in both.
    let query =
        r#"e2e_requests_total{environment="staging",project="starmates-ai-team",route="/a"}"#;
    for (who, prometheus) in [("remote-write", &remote), ("scrape", &scraper)] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let result = prometheus.query(query, now_ms()).await;
            if let Some(v) = result.first() {
                assert_eq!(v["value"][1], "3", "{who}: {result:?}");
                assert_eq!(v["metric"]["job"], "starmates-api", "{who}: {result:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{who}: {query} never answered\n{}",
                sluice.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let buckets = prometheus
            .query(
                r#"e2e_latency_milliseconds_bucket{environment="staging",le="+Inf"}"#,
                now_ms(),
            )
            .await;
        assert_eq!(buckets.len(), 1, "{who}: {buckets:?}");
        assert_eq!(buckets[0]["value"][1], "3", "{who}");
    }
}
