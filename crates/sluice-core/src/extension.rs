//! Extensions: components outside the pipelines (`extensions:` and `service.extensions`), such
//! as `health_check`, and later authenticators. Built and started before the pipelines, stopped
//! after them, and given the [`Host`]: what the running service shares with them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use sluice_config::Problem;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ExporterHelper;
use crate::component::BuildError;

/// The service's state as extensions see it: whether the pipelines run, and how the exporters
/// fare.
pub struct ServiceStatus {
    ready: AtomicBool,
    started: Instant,
    exporters: Mutex<Vec<Arc<ExporterHelper>>>,
}

impl ServiceStatus {
    /// A service not ready yet.
    pub fn new() -> Arc<Self> {
        Arc::new(ServiceStatus {
            ready: AtomicBool::new(false),
            started: Instant::now(),
            exporters: Mutex::new(Vec::new()),
        })
    }

    /// Marks the pipelines as running (or stopping).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether every pipeline runs.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Time since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Watches these exporters for [`ServiceStatus::exporters`].
    pub fn watch(&self, exporters: Vec<Arc<ExporterHelper>>) {
        *self
            .exporters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = exporters;
    }

    /// Each exporter (`id/signal`) and whether it is degraded (failing to send).
    pub fn exporters(&self) -> Vec<(String, bool)> {
        self.exporters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|e| (format!("{}/{}", e.id(), e.signal()), e.is_degraded()))
            .collect()
    }
}

/// What the service offers extensions when they start.
pub struct Host {
    /// The service's state.
    pub status: Arc<ServiceStatus>,
    /// The readable stores, registered by their exporters as those are built (after the
    /// extensions start): look one up when it is needed, not at start.
    pub stores: Arc<crate::store::Stores>,
    /// The authenticator extensions already running (listed before this one in
    /// `service.extensions`), by id, for an extension whose server admits requests through one.
    pub authenticators:
        std::collections::BTreeMap<String, Arc<dyn crate::auth::ServerAuthenticator>>,
}

/// A built extension.
#[async_trait]
pub trait Extension: Send + Sync {
    /// Starts it (binds its listener, say); its tasks end when `shutdown` is cancelled, after
    /// the pipelines have stopped.
    ///
    /// # Errors
    /// A [`BuildError`] when it cannot start.
    async fn start(
        &self,
        host: &Host,
        shutdown: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, BuildError>;

    /// The authenticator receivers may name in `auth.authenticator`, for extensions that are
    /// one.
    fn server_authenticator(&self) -> Option<Arc<dyn crate::auth::ServerAuthenticator>> {
        None
    }

    /// The authenticator exporters may name in `auth.authenticator`, for extensions that are
    /// one.
    fn client_authenticator(&self) -> Option<Arc<dyn crate::auth::ClientAuthenticator>> {
        None
    }
}

/// An extension type.
pub trait ExtensionFactory: Send + Sync {
    /// The type name in configuration (`health_check`).
    fn type_name(&self) -> &'static str;
    /// Checks a config without I/O.
    fn check(&self, path: &str, config: &Value) -> Vec<Problem>;
    /// Builds the extension for id `id`.
    ///
    /// # Errors
    /// A [`BuildError`] when the config is invalid.
    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn Extension>, BuildError>;
}
