//! The deployment files, checked without a Docker engine: the compose stack's shape and the
//! files it mounts, every sluice config under `deploy/` (files and Kubernetes ConfigMaps) through
//! `sluice validate`, the Kubernetes manifests against the Kubernetes schemas
//! (`kubernetes-validate` from PyPI, installed by the test command), the Grafana dashboards'
//! metric names against what a running sluice exposes and their tables against the migrations,
//! and the image's health check command.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_yaml::Value;

use crate::support::{Ports, Sluice, binary, files_under, sluice_validate};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// Environment the example configs refer to.
const ENV: &[(&str, &str)] = &[
    (
        "DATABASE_URL",
        "postgres://sluice:secret@postgres:5432/telemetry",
    ),
    ("UPSTREAM_TOKEN", "token"),
    ("SLUICE_UPSTREAM", "gateway:4317"),
];

/// Runs `sluice validate` on a config text; panics with its output when invalid.
fn validate(name: &str, text: &str) {
    let (valid, problems) = sluice_validate(text, ENV);
    assert!(valid, "{name} is not a valid sluice config:\n{problems}");
}

/// Files below `dir` with one of the extensions.
fn files_with(dir: &Path, ext: &[&str]) -> Vec<PathBuf> {
    files_under(dir, |p| {
        p.extension().is_some_and(|e| ext.iter().any(|x| e == *x))
    })
}

#[test]
fn the_compose_stack_has_every_part_and_its_files_exist() {
    let compose = yaml(&root().join("docker-compose.yml"));
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(Value::as_str).collect();
    for wanted in [
        "sluice",
        "postgres",
        "jaeger",
        "prometheus",
        "grafana",
        "loadgen-traces",
        "loadgen-metrics",
        "loadgen-logs",
    ] {
        assert!(
            names.contains(wanted),
            "service {wanted} missing: {names:?}"
        );
    }
    // Every bind mount points at a file or directory in the repository.
    for (name, service) in services {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let spec = volume.as_str().unwrap();
            if let Some(host) = spec.strip_prefix("./") {
                let host = host.split(':').next().unwrap();
                assert!(root().join(host).exists(), "{name:?} mounts missing {host}");
            }
        }
    }
    let sluice = &compose["services"]["sluice"];
    assert_eq!(sluice["build"].as_str(), Some("."));
    let ports: Vec<&str> = sluice["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for port in ["4317:4317", "4318:4318", "8888:8888", "13133:13133"] {
        assert!(ports.contains(&port), "{port} not published: {ports:?}");
    }
    let prometheus: Vec<&str> = compose["services"]["prometheus"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(prometheus.contains(&"--web.enable-remote-write-receiver"));
    let scrape = yaml(&root().join("deploy/prometheus/prometheus.yml"));
    let targets = &scrape["scrape_configs"][0]["static_configs"][0]["targets"][0];
    assert_eq!(
        targets.as_str(),
        Some("sluice:8888"),
        "Prometheus scrapes sluice"
    );
    // The sluice config the stack mounts uses the stack's service names.
    let config = std::fs::read_to_string(root().join("deploy/sluice/compose.yaml")).unwrap();
    for peer in [
        "jaeger:14250",
        "http://prometheus:9090/api/v1/write",
        "${env:DATABASE_URL}",
    ] {
        assert!(config.contains(peer), "compose config does not use {peer}");
    }
    let datasources = yaml(&root().join("deploy/grafana/provisioning/datasources/sluice.yaml"));
    let uids: BTreeSet<&str> = datasources["datasources"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|d| d["uid"].as_str())
        .collect();
    assert_eq!(uids, BTreeSet::from(["jaeger", "postgres", "prometheus"]));
}

#[test]
fn every_config_under_deploy_validates() {
    let mut checked = 0;
    for path in files_with(&root().join("deploy"), &["yaml", "yml"]) {
        let text = std::fs::read_to_string(&path).unwrap();
        let relative = path
            .strip_prefix(root())
            .unwrap_or(&path)
            .display()
            .to_string();
        if relative.contains("kubernetes") {
            // ConfigMaps carry sluice configs under `config.yaml`.
            for document in serde_yaml::Deserializer::from_str(&text) {
                let manifest = Value::deserialize(document).unwrap();
                if manifest["kind"].as_str() == Some("ConfigMap")
                    && let Some(config) = manifest["data"]["config.yaml"].as_str()
                {
                    validate(
                        &format!("{relative} ConfigMap {:?}", manifest["metadata"]["name"]),
                        config,
                    );
                    checked += 1;
                }
            }
        } else if text.contains("receivers:") && text.contains("service:") {
            validate(&relative, &text);
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "only {checked} sluice configs found under deploy/"
    );
    // The image's own config, copied to /etc/sluice/config.yaml by the Dockerfile.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("COPY deploy/sluice/image.yaml /etc/sluice/config.yaml"));
}

#[test]
fn the_kubernetes_manifests_match_the_kubernetes_schemas() {
    let python = std::env::var("SLUICE_PYTHON").expect(
        "SLUICE_PYTHON is not set: run scripts/test.sh, which installs kubernetes-validate from PyPI",
    );
    let tool = Path::new(&python).with_file_name("kubernetes-validate");
    let manifests = files_with(&root().join("deploy/kubernetes"), &["yaml", "yml"]);
    assert!(manifests.len() >= 2, "{manifests:?}");
    let out = Command::new(&tool)
        .args(["--strict", "-k", "1.30.0"])
        .args(&manifests)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate:\n{text}");
    assert!(!text.contains("ERROR"), "{text}");
    // The sidecar's probes hit the health endpoints, and its memory limit is set (the memory
    // limiter's percentage mode reads it from the cgroup).
    let sidecar = std::fs::read_to_string(root().join("deploy/kubernetes/sidecar.yaml")).unwrap();
    for wanted in ["/health/ready", "/health", "limit_percentage", "memory:"] {
        assert!(sidecar.contains(wanted), "sidecar.yaml lacks {wanted}");
    }
}

/// Metric names in PromQL: `otelcol_…` and `sluice_…` identifiers.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts = (rest.starts_with("otelcol_") || rest.starts_with("sluice_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(rest[..end].to_owned());
            i += end;
        } else {
            i += 1;
        }
    }
    names
}

/// Relations after FROM and JOIN that are not CTEs of the same query.
fn sql_relations(sql: &str) -> Vec<String> {
    let lower = sql.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    let mut ctes = BTreeSet::new();
    for pair in words.windows(2) {
        if pair[1] == "as" {
            ctes.insert(pair[0].to_owned());
        }
    }
    let mut relations = Vec::new();
    for pair in words.windows(2) {
        if (pair[0] == "from" || pair[0] == "join")
            && pair[1]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !ctes.contains(pair[1])
            && ![
                "lateral",
                "unnest",
                "jsonb_each",
                "generate_series",
                "select",
            ]
            .contains(&pair[1])
        {
            relations.push(pair[1].to_owned());
        }
    }
    relations
}

fn walk<'a>(value: &'a serde_json::Value, key: &str, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if k == key
                    && let Some(s) = v.as_str()
                {
                    out.push(s);
                }
                walk(v, key, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, key, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_grafana_dashboards_query_metrics_and_tables_that_exist() {
    // A sluice with every exporter the stack uses, after one request of each signal, so every
    // metric the dashboards may name has been registered.
    let database =
        std::env::var("DATABASE_URL").expect("DATABASE_URL is not set: run scripts/test.sh");
    let (url, _pool) = crate::postgres::fresh_database(&database, "dashboards").await;
    let ports = Ports::new();
    let config = format!(
        "{common}processors:\n  memory_limiter:\n    limit_mib: 256\n  batch:\n    timeout: 10ms\nexporters:\n  postgres:\n    endpoint: {url}\n  jaeger:\n    endpoint: 127.0.0.1:1\n    tls: {{insecure: true}}\n  prometheusremotewrite:\n    endpoint: http://127.0.0.1:1/api/v1/write\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [memory_limiter, batch]\n      exporters: [postgres, jaeger]\n    metrics:\n      receivers: [otlp]\n      processors: [memory_limiter, batch]\n      exporters: [prometheusremotewrite]\n    logs:\n      receivers: [otlp]\n      processors: [memory_limiter, batch]\n      exporters: [postgres]\n{telemetry}",
        common = ports.common(),
        telemetry = ports.telemetry()
    );
    let sluice = Sluice::start(ports, &config);
    let exposed = exposed_after_one_of_each(
        &sluice,
        "otelcol_exporter_sent_log_records{exporter=\"postgres\"}",
    )
    .await;

    let migration = std::fs::read_to_string(root().join("migrations/0001_traces_and_logs.sql"))
        .unwrap()
        .to_ascii_lowercase();
    let tables: BTreeSet<String> = migration
        .lines()
        .filter_map(|l| {
            l.strip_prefix("create table ")
                .or_else(|| l.strip_prefix("create view "))
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_owned)
        })
        .collect();
    assert!(
        tables.contains("spans") && tables.contains("span_attributes"),
        "{tables:?}"
    );

    let dashboards = files_with(&root().join("deploy/grafana/dashboards"), &["json"]);
    assert!(dashboards.len() >= 2, "{dashboards:?}");
    let (mut exprs, mut sqls) = (0, 0);
    for path in &dashboards {
        let text = std::fs::read_to_string(path).unwrap();
        let dashboard: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        assert!(dashboard["title"].is_string() && dashboard["panels"].is_array());
        let mut found = Vec::new();
        walk(&dashboard, "expr", &mut found);
        for expr in &found {
            for name in metric_names(expr) {
                exprs += 1;
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    exposed.contains(&name) || exposed.contains(base),
                    "{}: `{name}` is not a metric sluice exposes",
                    path.display()
                );
            }
        }
        let mut found = Vec::new();
        walk(&dashboard, "rawSql", &mut found);
        for sql in &found {
            for relation in sql_relations(sql) {
                sqls += 1;
                assert!(
                    tables.contains(&relation),
                    "{}: `{relation}` is not a table or view of the migrations:\n{sql}",
                    path.display()
                );
            }
        }
    }
    assert!(
        exprs >= 10 && sqls >= 5,
        "{exprs} metric references, {sqls} table references"
    );
}

#[test]
fn the_image_health_check_probes_a_running_sluice() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    for wanted in [
        "HEALTHCHECK",
        "\"healthcheck\"",
        "USER nonroot",
        "EXPOSE 4317 4318 8888 13133",
        "VOLUME [\"/var/lib/sluice\"]",
        "distroless",
    ] {
        assert!(dockerfile.contains(wanted), "Dockerfile lacks {wanted}");
    }
    let ports = Ports::new();
    let config = format!(
        "{}exporters:\n  debug: {{}}\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n{}",
        ports.common(),
        ports.telemetry()
    );
    let _sluice = Sluice::start(ports, &config);
    let probe = |url: String| {
        Command::new(binary())
            .args(["healthcheck", "--url", &url])
            .output()
            .unwrap()
    };
    assert!(
        probe(format!("http://127.0.0.1:{}/health", ports.health))
            .status
            .success()
    );
    let missing = probe(format!("http://127.0.0.1:{}/nothing", ports.health));
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("answered 404"));
    let closed = probe(format!(
        "http://127.0.0.1:{}/health",
        crate::support::free_port()
    ));
    assert!(!closed.status.success());
}

/// The metric names a sluice exposes after one trace and one log record went through it, once
/// `settled` (a self-metric sample line) reads 1.
async fn exposed_after_one_of_each(sluice: &Sluice, settled: &str) -> BTreeSet<String> {
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let endpoint = format!("http://127.0.0.1:{}", sluice.ports.grpc);
    TraceServiceClient::connect(endpoint.clone())
        .await
        .unwrap()
        .export(crate::support::trace_request(3, "dash", 0))
        .await
        .unwrap();
    let log = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
        resource_logs: vec![opentelemetry_proto::tonic::logs::v1::ResourceLogs {
            scope_logs: vec![opentelemetry_proto::tonic::logs::v1::ScopeLogs {
                log_records: vec![opentelemetry_proto::tonic::logs::v1::LogRecord {
                    time_unix_nano: 1_700_000_000_000_000_000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    LogsServiceClient::connect(endpoint)
        .await
        .unwrap()
        .export(log)
        .await
        .unwrap();
    sluice.wait_metric(settled, 1.0).await;
    reqwest::get(format!("http://127.0.0.1:{}/metrics", sluice.ports.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The `otelcol_*` and `sluice_*` series names of a promtool test file's `input_series`.
fn input_series_names(test: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for case in test["tests"].as_sequence().into_iter().flatten() {
        for series in case["input_series"].as_sequence().into_iter().flatten() {
            let spec = series["series"].as_str().unwrap();
            let name = spec.split('{').next().unwrap();
            if name.starts_with("otelcol_") || name.starts_with("sluice_") {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerting_rules_pass_promtool_on_the_metric_names_sluice_exposes() {
    let rules = root().join("deploy/prometheus/rules");
    let promtool = std::env::var("SLUICE_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let mut rule_files = files_with(&rules, &["yml"]);
    rule_files.retain(|p| p.to_string_lossy().ends_with(".rules.yml"));
    let mut tests = files_with(&rules, &["yml"]);
    tests.retain(|p| p.to_string_lossy().ends_with(".test.yml"));
    assert!(
        rule_files.len() >= 2 && tests.len() == rule_files.len(),
        "{rule_files:?} {tests:?}"
    );
    for (command, files) in [("check", &rule_files), ("test", &tests)] {
        let out = std::process::Command::new(&promtool)
            .arg(command)
            .arg("rules")
            .args(files.iter())
            .current_dir(&rules)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{promtool}` ({e}): run scripts/test.sh, which installs Debian's prometheus package"));
        assert!(
            out.status.success(),
            "promtool {command} rules failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The tests' series are sluice's own names: a sluice with a memory limiter, a queue and an
    // exporter per signal, after one request of each, exposes every one of them.
    let ports = Ports::new();
    let config = format!(
        "{common}processors:\n  memory_limiter:\n    limit_mib: 256\nexporters:\n  otlp:\n    endpoint: 127.0.0.1:1\n    tls: {{insecure: true}}\n    retry_on_failure: {{enabled: false}}\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [memory_limiter]\n      exporters: [otlp]\n    metrics:\n      receivers: [otlp]\n      processors: [memory_limiter]\n      exporters: [otlp]\n    logs:\n      receivers: [otlp]\n      processors: [memory_limiter]\n      exporters: [otlp]\n{telemetry}",
        common = ports.common(),
        telemetry = ports.telemetry()
    );
    let sluice = Sluice::start(ports, &config);
    let exposed = exposed_after_one_of_each(
        &sluice,
        "otelcol_exporter_send_failed_log_records{exporter=\"otlp\"}",
    )
    .await;
    let test = yaml(&rules.join("sluice.rules.test.yml"));
    let names = input_series_names(&test);
    assert!(names.len() >= 8, "{names:?}");
    for name in &names {
        assert!(
            exposed.contains(name),
            "sluice.rules.test.yml uses `{name}`, which sluice does not expose:\n{exposed:?}"
        );
    }
}
