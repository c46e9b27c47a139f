//! Every example configuration validates; `sluice validate` lists every problem of a bad one.

use std::process::Command;

use crate::support::{TempDir, binary, sluice_validate};

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn every_example_config_validates() {
    let mut checked = 0;
    for dir in ["config"] {
        for entry in std::fs::read_dir(repo_root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let out = Command::new(binary())
                    .args(["validate", "--config"])
                    .arg(&path)
                    .env("DATABASE_URL", "postgres://localhost/sluice")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{} is invalid:\n{}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 2, "expected example configs under config/");
    let out = Command::new(binary()).arg("validate").output().unwrap();
    assert!(out.status.success(), "the built-in default config is valid");
}

#[test]
fn validate_lists_every_problem_and_fails() {
    let (valid, text) = sluice_validate(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 0.0.0.0:99999\n  zipkin: {}\nprocessors:\n  batch:\n    timeout: soon\n  memory_limiter: {}\nexporters:\n  debug: {verbosity: loud}\n  otlp/unused: {endpoint: x:1}\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch, missing]\n      exporters: [debug]\n",
        &[],
    );
    assert!(!valid);
    for expected in [
        "receivers.otlp.protocols.grpc.endpoint: invalid port `99999`",
        "receivers.zipkin: unknown receiver type `zipkin`",
        "processors.batch.timeout: invalid duration `soon`",
        "processors.memory_limiter: set `limit_mib` or `limit_percentage`",
        "exporters.debug.verbosity: unknown variant `loud`",
        "service.pipelines.traces.processors[1]: processor `missing` is not defined",
        "warning: exporters.otlp/unused: exporter `otlp/unused` is defined but not used",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

#[test]
fn an_unset_variable_fails_start_up_naming_it() {
    let dir = TempDir::new("env");
    let path = dir.0.join("env.yaml");
    std::fs::write(
        &path,
        "receivers: {otlp: {protocols: {grpc: {endpoint: \"${env:SLUICE_E2E_NOT_SET}\"}}}}\nexporters: {debug: {}}\nservice: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("receivers.otlp.protocols.grpc.endpoint"),
        "{text}"
    );
    assert!(text.contains("`SLUICE_E2E_NOT_SET` is not set"), "{text}");
}

#[test]
fn prints_its_version() {
    let out = Command::new(binary()).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        concat!("sluice ", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn config_default_yaml_is_the_built_in_default() {
    let out = Command::new(binary())
        .arg("print-default-config")
        .output()
        .unwrap();
    let shipped = std::fs::read_to_string(repo_root().join("config/default.yaml")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), shipped);
}

#[test]
fn the_postgres_exporter_refuses_metrics_and_bad_settings() {
    let (valid, text) = sluice_validate(
        "receivers: {otlp: {protocols: {grpc: {}}}}\nexporters:\n  postgres:\n    endpoint: mysql://u:hunter2@h/db\n    partition_interval: 10s\n    pool: {max_connections: 0}\nservice: {pipelines: {metrics: {receivers: [otlp], exporters: [postgres]}}}\n",
        &[],
    );
    assert!(!valid);
    for expected in [
        "service.pipelines.metrics.exporters",
        "exporters.postgres.endpoint",
        "exporters.postgres.partition_interval: must be at least 1m",
        "exporters.postgres.pool.max_connections: must be at least 1",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains("hunter2"), "the password leaked:\n{text}");
}
