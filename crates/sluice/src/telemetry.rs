//! Sluice's own telemetry: structured logs through `tracing`, and the `otelcol_*` self-metrics
//! served in the Prometheus text format at `service.telemetry.metrics.address` + `/metrics`.

use std::time::Instant;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sluice_config::TelemetryConfig;
use sluice_core::metrics as names;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Starts the log subscriber. `RUST_LOG`, when set, wins over the configured level.
pub(crate) fn init_logs(config: &TelemetryConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(config.logs.level.to_ascii_lowercase()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if config.logs.encoding == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// The Collector's buckets for batch sizes, so its dashboards' histogram panels work.
const BATCH_SIZE_BUCKETS: &[f64] = &[
    10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0,
    6000.0, 7000.0, 8000.0, 9000.0, 10000.0, 20000.0, 30000.0, 50000.0, 100000.0,
];

const BATCH_BYTES_BUCKETS: &[f64] = &[
    10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0,
    6000.0, 7000.0, 8000.0, 9000.0, 10000.0, 20000.0, 30000.0, 50000.0, 100000.0, 200000.0,
    300000.0, 400000.0, 500000.0, 600000.0, 700000.0, 800000.0, 900000.0, 1e6, 2e6, 3e6, 4e6, 5e6,
    6e6, 7e6, 8e6, 9e6,
];

/// Seconds, for the `*_duration_seconds` histograms (a write into PostgreSQL, say): 1 ms to 60 s.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the global metrics recorder (once per process).
pub(crate) fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::BATCH_SEND_SIZE.to_owned()),
            BATCH_SIZE_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::BATCH_SEND_SIZE_BYTES.to_owned()),
            BATCH_BYTES_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Suffix("_duration_seconds".to_owned()),
            DURATION_BUCKETS,
        )?
        .install_recorder()
        .context("cannot install the metrics recorder")
}

/// Reads this process's CPU seconds (user + system) from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Clock ticks are 100 per second on Linux for every architecture sluice ships on.
    (ticks(11) + ticks(12)) / 100.0
}

/// Updates the process metrics; called before every scrape and periodically.
pub(crate) fn record_process(started: Instant, allocated: Option<u64>) {
    metrics::gauge!(names::PROCESS_MEMORY_RSS).set(sluice_processors::rss_bytes() as f64);
    metrics::gauge!(names::PROCESS_UPTIME).set(started.elapsed().as_secs_f64());
    metrics::gauge!(names::PROCESS_CPU_SECONDS).set(cpu_seconds());
    if let Some(a) = allocated {
        metrics::gauge!(names::PROCESS_HEAP_ALLOC_BYTES).set(a as f64);
    }
}

/// The self-metrics endpoint's `tls`, checked as a receiver's is.
pub(crate) fn check_tls(telemetry: &sluice_config::TelemetryConfig) -> Vec<sluice_config::Problem> {
    const PATH: &str = "service.telemetry.metrics.tls";
    let Some(tls) = &telemetry.metrics.tls else {
        return Vec::new();
    };
    match sluice_config::component_config::<sluice_net::TlsServerConfig>(PATH, tls) {
        Ok(tls) => tls.check(PATH),
        Err(problem) => vec![problem],
    }
}

/// Serves `/metrics` until `shutdown`, over TLS when `tls` is set.
pub(crate) async fn serve_metrics(
    address: &str,
    tls: Option<&serde_json::Value>,
    handle: PrometheusHandle,
    allocated: fn() -> Option<u64>,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let started = Instant::now();
    let render = move || {
        record_process(started, allocated());
        handle.render()
    };
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    render(),
                )
            }
        }),
    );
    const PATH: &str = "service.telemetry.metrics.tls";
    let tls = tls
        .map(|t| sluice_config::component_config::<sluice_net::TlsServerConfig>(PATH, t))
        .transpose()
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let tls = sluice_net::TlsServerConfig::for_listener(
        tls.as_ref(),
        PATH,
        &["h2", "http/1.1"],
        &shutdown,
    )?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("self-metrics cannot listen on {address}"))?;
    tracing::info!(endpoint = ?listener.local_addr().ok(), tls = tls.is_some(), "self-metrics listening on /metrics");
    // The receivers' server, for its connection limit and timeouts.
    Ok(tokio::spawn(sluice_net::serve(
        listener,
        sluice_net::ServerSettings::side("self-metrics"),
        tls,
        None,
        router,
        shutdown,
    )))
}
