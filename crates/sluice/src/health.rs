//! The `health_check` extension: liveness and readiness over HTTP, for orchestrators.
//!
//! `GET /health` answers 200 while the process serves requests and never touches a dependency;
//! `GET /health/ready` (and `/`, the Collector's path) answers 200 once every pipeline runs and
//! 503 before that and during shutdown.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_config::{Problem, check_endpoint};
use sluice_core::{BuildError, Extension, ExtensionFactory, Host, ServiceStatus};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// `extensions.health_check`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HealthCheckConfig {
    /// Listening `host:port` (default `0.0.0.0:13133`).
    endpoint: String,
    /// Accepted for compatibility with Collector configs: the readiness path (default `/`);
    /// `/health/ready` is always served too.
    path: String,
    /// Server TLS, as on the receivers (probes then use HTTPS).
    tls: Option<sluice_net::TlsServerConfig>,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: "0.0.0.0:13133".to_owned(),
            path: "/".to_owned(),
            tls: None,
        }
    }
}

/// Builds the health check extension.
pub(crate) struct HealthCheckFactory;

impl ExtensionFactory for HealthCheckFactory {
    fn type_name(&self) -> &'static str {
        "health_check"
    }

    fn check(&self, path: &str, value: &Value) -> Vec<Problem> {
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
                if let Some(tls) = &c.tls {
                    p.extend(tls.check(&format!("{path}.tls")));
                }
                p
            }
            Err(p) => vec![p],
        }
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn Extension>, BuildError> {
        let config = sluice_core::typed(&format!("extensions.{id}"), config)?;
        Ok(Box::new(HealthCheck { config }))
    }
}

struct HealthCheck {
    config: HealthCheckConfig,
}

#[async_trait]
impl Extension for HealthCheck {
    async fn start(
        &self,
        host: &Host,
        shutdown: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, BuildError> {
        Ok(vec![
            serve(&self.config, Arc::clone(&host.status), shutdown).await?,
        ])
    }
}

/// `{"otlp/traces": "ok" | "degraded", ...}` and whether any is degraded.
fn exporter_status(status: &ServiceStatus) -> (serde_json::Map<String, Value>, bool) {
    let mut map = serde_json::Map::new();
    let mut degraded = false;
    for (exporter, d) in status.exporters() {
        degraded |= d;
        map.insert(exporter, Value::from(if d { "degraded" } else { "ok" }));
    }
    (map, degraded)
}

async fn live(State(h): State<Arc<ServiceStatus>>) -> impl IntoResponse {
    Json(json!({"status": "alive", "uptime_seconds": h.uptime().as_secs()}))
}

/// Ready is 200 while pipelines run, even with a degraded exporter (a recoverable error, as in
/// the Collector's health check v2): the body names the exporters that are failing.
async fn ready(State(h): State<Arc<ServiceStatus>>) -> impl IntoResponse {
    let (exporters, degraded) = exporter_status(&h);
    if h.is_ready() {
        let status = if degraded { "degraded" } else { "ready" };
        (
            StatusCode::OK,
            Json(json!({
                "status": status,
                "uptime_seconds": h.uptime().as_secs(),
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
async fn serve(
    config: &HealthCheckConfig,
    health: Arc<ServiceStatus>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, BuildError> {
    let mut router = Router::new()
        .route("/health", get(live))
        .route("/health/ready", get(ready));
    if config.path != "/health" && config.path != "/health/ready" {
        router = router.route(&config.path, get(ready));
    }
    let router = router.with_state(health);
    let tls = sluice_net::TlsServerConfig::for_listener(
        config.tls.as_ref(),
        "extensions.health_check.tls",
        &["h2", "http/1.1"],
        &shutdown,
    )?;
    let listener = tokio::net::TcpListener::bind(&config.endpoint)
        .await
        .map_err(|source| BuildError::Bind {
            endpoint: config.endpoint.clone(),
            source,
        })?;
    tracing::info!(endpoint = ?listener.local_addr().ok(), tls = tls.is_some(), "health check listening");
    Ok(tokio::spawn(sluice_net::serve(
        listener,
        sluice_net::ServerSettings::side("health_check"),
        tls,
        None,
        router,
        shutdown,
    )))
}
