//! The factory traits components implement, and what the binary hands them when building.
//!
//! Two phases: `check` is pure and reports every problem with its config path; `build` opens
//! listeners, pools and clients. The binary registers each factory explicitly.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sluice_config::Problem;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exporter::{Exporter, HelperSettings};
use crate::gate::MemoryGate;
use crate::processor::ProcessorComponent;
use crate::{Consumer, Signal};

/// Why a component could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Its configuration is invalid (normally caught by `check` first).
    #[error("{0}")]
    Config(Problem),
    /// A listening socket could not be bound.
    #[error("cannot listen on {endpoint}: {source}")]
    Bind {
        /// The endpoint from the config.
        endpoint: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Anything else that prevents start-up (a TLS file that cannot be read, say).
    #[error("{0}")]
    Other(String),
}

/// What a receiver feeds, per signal: the pipelines' entry and the memory gates guarding them.
#[derive(Clone, Default)]
pub struct ReceiverOutputs {
    /// One consumer per signal the receiver is wired to (a fan-out when several pipelines).
    pub consumers: BTreeMap<Signal, Arc<dyn Consumer>>,
    /// Memory gates of the pipelines behind each signal; checked before reading a request.
    pub gates: BTreeMap<Signal, Vec<Arc<MemoryGate>>>,
}

/// A built receiver, ready to bind its listeners.
#[async_trait]
pub trait Receiver: Send {
    /// Binds and spawns the servers; they stop accepting when `shutdown` is cancelled and the
    /// returned tasks end once in-flight requests are answered.
    ///
    /// # Errors
    /// [`BuildError::Bind`] when an endpoint cannot be bound.
    async fn start(
        self: Box<Self>,
        outputs: ReceiverOutputs,
        shutdown: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, BuildError>;
}

/// A receiver type.
pub trait ReceiverFactory: Send + Sync {
    /// The type name in configuration (`otlp`).
    fn type_name(&self) -> &'static str;
    /// Signals it can receive.
    fn signals(&self) -> &'static [&'static str];
    /// Checks a config without I/O.
    fn check(&self, path: &str, config: &Value) -> Vec<Problem>;
    /// Builds one from a config that passed `check`.
    ///
    /// # Errors
    /// A [`BuildError`] when the config is invalid.
    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn Receiver>, BuildError>;
}

/// A processor type.
pub trait ProcessorFactory: Send + Sync {
    /// The type name in configuration (`batch`).
    fn type_name(&self) -> &'static str;
    /// Signals it can process.
    fn signals(&self) -> &'static [&'static str];
    /// Checks a config without I/O.
    fn check(&self, path: &str, config: &Value) -> Vec<Problem>;
    /// Builds the component for id `id`, once; each pipeline listing it then asks it for an
    /// instance (see [`crate::processor`]).
    ///
    /// # Errors
    /// A [`BuildError`] when the config is invalid.
    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ProcessorComponent>, BuildError>;
}

/// An exporter built once per id, shared by the pipelines of every signal it serves.
pub struct BuiltExporter {
    /// The backend client.
    pub exporter: Arc<dyn Exporter>,
    /// Its helper settings (timeout, retry, queue).
    pub settings: HelperSettings,
}

/// An exporter type.
pub trait ExporterFactory: Send + Sync {
    /// The type name in configuration (`otlp`).
    fn type_name(&self) -> &'static str;
    /// Signals it can export.
    fn signals(&self) -> &'static [&'static str];
    /// Checks a config without I/O.
    fn check(&self, path: &str, config: &Value) -> Vec<Problem>;
    /// Builds the client for one signal.
    ///
    /// # Errors
    /// A [`BuildError`] when the config is invalid or a client cannot be made.
    fn build(&self, id: &str, signal: Signal, config: &Value) -> Result<BuiltExporter, BuildError>;
}

/// Deserializes and checks a component config in one call, for factories.
///
/// # Errors
/// The problem serde found, with its path.
pub fn typed<T: serde::de::DeserializeOwned>(path: &str, config: &Value) -> Result<T, BuildError> {
    sluice_config::component_config(path, config).map_err(BuildError::Config)
}

/// The usual `check` of a factory: deserialize the typed config, then run its own checks.
pub fn check_typed<T: serde::de::DeserializeOwned>(
    path: &str,
    config: &Value,
    checks: impl FnOnce(&T) -> Vec<Problem>,
) -> Vec<Problem> {
    match sluice_config::component_config::<T>(path, config) {
        Ok(typed) => checks(&typed),
        Err(problem) => vec![problem],
    }
}
