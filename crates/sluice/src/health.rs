//! The `health_check` extension: liveness and readiness over HTTP, for orchestrators.
//!
//! `GET /health` answers 200 while the process serves requests and never touches a dependency;
//! `GET /health/ready` (and `/`, the Collector's path) answers 200 once every pipeline runs and
//! 503 before that and during shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_config::{Problem, check_endpoint};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// `extensions.health_check`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HealthCheckConfig {
    /// Listening `host:port` (default `0.0.0.0:13133`).
    pub(crate) endpoint: String,
    /// Accepted for compatibility with Collector configs: the readiness path (default `/`);
    /// `/health/ready` is always served too.
    pub(crate) path: String,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: "0.0.0.0:13133".to_owned(),
            path: "/".to_owned(),
        }
    }
}

/// Builds the health check extension.
pub(crate) struct HealthCheckFactory;

impl HealthCheckFactory {
    pub(crate) fn check(&self, path: &str, value: &Value) -> Vec<Problem> {
        match sluice_config::component_config::<HealthCheckConfig>(path, value) {
            Ok(c) => {
                let mut p = Vec::new();
                if let Err(m) = check_endpoint(&c.endpoint) {
                    p.push(Problem::error(format!("{path}.endpoint"), m));
                }
                if !c.path.starts_with('/') {
                    p.push(Problem::error(
                        format!("{path}.path"),
                        "must start with `/`",
                    ));
                }
                p
            }
            Err(p) => vec![p],
        }
    }
}

/// Readiness shared between the service and the health endpoint.
pub(crate) struct Health {
    ready: AtomicBool,
    started: Instant,
    exporters: std::sync::Mutex<Vec<Arc<sluice_core::ExporterHelper>>>,
}

impl Health {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Health {
            ready: AtomicBool::new(false),
            started: Instant::now(),
            exporters: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Watches these exporters for the readiness report.
    pub(crate) fn watch(&self, exporters: Vec<Arc<sluice_core::ExporterHelper>>) {
        *self.exporters.lock().unwrap_or_else(|e| e.into_inner()) = exporters;
    }

    /// `{"otlp/traces": "ok" | "degraded", ...}` and whether any is degraded.
    fn exporter_status(&self) -> (serde_json::Map<String, Value>, bool) {
        let mut map = serde_json::Map::new();
        let mut degraded = false;
        for e in self
            .exporters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let d = e.is_degraded();
            degraded |= d;
            map.insert(
                format!("{}/{}", e.id(), e.signal()),
                Value::from(if d { "degraded" } else { "ok" }),
            );
        }
        (map, degraded)
    }
}

async fn live(State(h): State<Arc<Health>>) -> impl IntoResponse {
    Json(json!({"status": "alive", "uptime_seconds": h.started.elapsed().as_secs()}))
}

/// Ready is 200 while pipelines run, even with a degraded exporter (a recoverable error, as in
/// the Collector's health check v2): the body names the exporters that are failing.
async fn ready(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let (exporters, degraded) = h.exporter_status();
    if h.ready.load(Ordering::Relaxed) {
        let status = if degraded { "degraded" } else { "ready" };
        (
            StatusCode::OK,
            Json(json!({
                "status": status,
                "uptime_seconds": h.started.elapsed().as_secs(),
                "exporters": exporters,
            })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "exporters": exporters})),
        )
    }
}

/// Serves the health endpoints until `shutdown`.
pub(crate) async fn serve(
    config: &HealthCheckConfig,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let mut router = Router::new()
        .route("/health", get(live))
        .route("/health/ready", get(ready));
    if config.path != "/health" && config.path != "/health/ready" {
        router = router.route(&config.path, get(ready));
    }
    let router = router.with_state(health);
    let listener = tokio::net::TcpListener::bind(&config.endpoint)
        .await
        .map_err(|e| anyhow::anyhow!("health_check cannot listen on {}: {e}", config.endpoint))?;
    tracing::info!(endpoint = ?listener.local_addr().ok(), "health check listening");
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    }))
}
