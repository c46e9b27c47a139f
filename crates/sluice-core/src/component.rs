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

use crate::exporter::{ErasedExporter, HelperSettings};
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
    /// The running authenticator extensions, by id, for `auth.authenticator`.
    pub authenticators: BTreeMap<String, Arc<dyn crate::auth::ServerAuthenticator>>,
}

/// What the service offers an exporter it builds: the running client authenticators, and the
/// registry where an exporter that keeps data readable registers its store.
#[derive(Clone, Default)]
pub struct ExporterContext {
    /// The running extensions that can authenticate a client, by id.
    pub authenticators: BTreeMap<String, Arc<dyn crate::auth::ClientAuthenticator>>,
    /// The readable stores, shared with the extensions ([`crate::Host::stores`]).
    pub stores: Arc<crate::store::Stores>,
}

impl ExporterContext {
    /// The authenticator `auth.authenticator` names, for the exporter at `path`.
    ///
    /// # Errors
    /// A [`BuildError`] when it is not a running extension that authenticates clients.
    pub fn client_auth(
        &self,
        path: &str,
        auth: Option<&crate::auth::AuthSettings>,
    ) -> Result<Option<Arc<dyn crate::auth::ClientAuthenticator>>, BuildError> {
        let Some(auth) = auth else {
            return Ok(None);
        };
        self.authenticators
            .get(&auth.authenticator)
            .cloned()
            .map(Some)
            .ok_or_else(|| {
                BuildError::Other(format!(
                    "{path}.auth: `{}` is not a running extension that authenticates clients (list it in service.extensions; basicauth needs client_auth)",
                    auth.authenticator
                ))
            })
    }
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
    /// Whether it holds data and hands it on later (`batch`, a tail sampler) rather than
    /// handing on each batch as it processes it. Decides where a persistent queue's log sits.
    fn holds_data(&self) -> bool {
        false
    }
    /// Whether, configured as `config`, it keeps what it holds in a write-ahead log of its own
    /// (`tail_sampling` with `storage`): a persistent queue's log then goes after it, and it
    /// answers a client only once the data is in its own log.
    fn keeps_own_log(&self, _config: &Value) -> bool {
        false
    }
    /// Whether it removes what must never be stored (`redaction`): validation then refuses it
    /// after the place where a persistent queue writes the data to disk.
    fn guards_storage(&self) -> bool {
        false
    }
    /// Builds the component for id `id`, once; each pipeline listing it then asks it for an
    /// instance (see [`crate::processor`]).
    ///
    /// # Errors
    /// A [`BuildError`] when the config is invalid.
    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ProcessorComponent>, BuildError>;
}

/// An exporter built once per id, shared by the pipelines of every signal it serves.
pub enum BuiltExporter {
    /// Sends batches to a backend through the exporter helper (queue, retries, timeout), with
    /// the helper settings core parsed from the config.
    Push(Arc<dyn ErasedExporter>),
    /// Takes batches directly, without a queue or retries: an exporter that keeps data for
    /// others to pull (a Prometheus scrape endpoint), or hands it to something in-process.
    Direct(Arc<dyn DirectExporter>),
}

/// An exporter that takes batches as a pipeline stage, without the exporter helper.
pub trait DirectExporter: Consumer {
    /// Starts its own work (a server), once; it ends when `shutdown` is cancelled.
    fn start(&self, _shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        Vec::new()
    }
}

/// An exporter type.
///
/// Exporters with a queue ([`BuiltExporter::Push`]) take the helper's keys (`timeout`,
/// `retry_on_failure`, `sending_queue`): core parses and checks those
/// ([`HelperSettings::parse`]) and hands the factory the rest of the config, so each exporter
/// parses only its own keys and still refuses unknown ones.
pub trait ExporterFactory: Send + Sync {
    /// The type name in configuration (`otlp`).
    fn type_name(&self) -> &'static str;
    /// Signals it can export.
    fn signals(&self) -> &'static [&'static str];
    /// The helper's defaults for this exporter type (the Collector's unless it differs), or
    /// `None` for an exporter built [`BuiltExporter::Direct`], which takes none of those keys.
    fn helper_defaults(&self) -> Option<HelperSettings> {
        Some(HelperSettings::default())
    }
    /// Checks its own keys without I/O.
    fn check(&self, path: &str, config: &Value) -> Vec<Problem>;
    /// Builds the exporter for id `id`, once, for every signal it serves. It may tighten the
    /// helper settings (`num_consumers` bounded by its connection pool, say).
    ///
    /// # Errors
    /// A [`BuildError`] when the config is invalid or a client cannot be made.
    fn build(
        &self,
        id: &str,
        config: &Value,
        helper: &mut HelperSettings,
        context: &ExporterContext,
    ) -> Result<BuiltExporter, BuildError>;
}

/// Checks an exporter's config: the helper's keys here, the rest by its factory.
pub fn check_exporter(factory: &dyn ExporterFactory, path: &str, config: &Value) -> Vec<Problem> {
    match factory.helper_defaults() {
        None => factory.check(path, config),
        Some(defaults) => match HelperSettings::parse(path, config, defaults) {
            Ok((_, own)) => factory.check(path, &own),
            Err(mut problems) => {
                let own = strip_helper_keys(config);
                problems.extend(factory.check(path, &own));
                problems
            }
        },
    }
}

fn strip_helper_keys(config: &Value) -> Value {
    let mut own = config.clone();
    if let Some(object) = own.as_object_mut() {
        for key in crate::exporter::HELPER_KEYS {
            object.remove(key);
        }
    }
    own
}

/// Builds exporter `id`: the helper settings (for a [`BuiltExporter::Push`]) and the exporter.
///
/// # Errors
/// A [`BuildError`] when the config is invalid or the factory cannot build it.
pub fn build_exporter(
    factory: &dyn ExporterFactory,
    id: &str,
    config: &Value,
    context: &ExporterContext,
) -> Result<(BuiltExporter, HelperSettings), BuildError> {
    let path = format!("exporters.{id}");
    let (mut helper, own) = match factory.helper_defaults() {
        None => (HelperSettings::default(), config.clone()),
        Some(defaults) => HelperSettings::parse(&path, config, defaults)
            .map_err(|mut problems| BuildError::Config(problems.remove(0)))?,
    };
    let built = factory.build(id, &own, &mut helper, context)?;
    Ok((built, helper))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, ConsumeError, ExportError};
    use async_trait::async_trait;
    use std::time::Duration;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Own {
        #[allow(dead_code)]
        endpoint: String,
    }

    struct Nothing;

    #[async_trait]
    impl crate::Exporter for Nothing {
        type Encoded = ();

        fn encode(&self, _: &Batch) -> Result<(), ExportError> {
            Ok(())
        }

        async fn send(&self, (): &()) -> Result<(), ExportError> {
            Ok(())
        }
    }

    #[async_trait]
    impl Consumer for Nothing {
        async fn consume(&self, _: Batch) -> Result<(), ConsumeError> {
            Ok(())
        }
    }

    impl DirectExporter for Nothing {}

    /// An exporter type with its own keys, and a 10s default timeout; `direct` builds one
    /// without a queue.
    struct Factory {
        direct: bool,
    }

    impl ExporterFactory for Factory {
        fn type_name(&self) -> &'static str {
            "test"
        }

        fn signals(&self) -> &'static [&'static str] {
            &["traces"]
        }

        fn helper_defaults(&self) -> Option<HelperSettings> {
            (!self.direct).then(|| HelperSettings {
                timeout: Duration::from_secs(10),
                ..HelperSettings::default()
            })
        }

        fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
            check_typed::<Own>(path, config, |_| Vec::new())
        }

        fn build(
            &self,
            _: &str,
            config: &Value,
            helper: &mut HelperSettings,
            _context: &ExporterContext,
        ) -> Result<BuiltExporter, BuildError> {
            let _: Own = typed("exporters.test", config)?;
            helper.queue.num_consumers = 2;
            Ok(if self.direct {
                BuiltExporter::Direct(Arc::new(Nothing))
            } else {
                BuiltExporter::Push(Arc::new(Nothing))
            })
        }
    }

    fn problems(factory: &Factory, config: serde_json::Value) -> Vec<String> {
        check_exporter(factory, "exporters.test", &config)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn core_parses_the_helper_keys_once_and_the_exporter_only_its_own() {
        let push = Factory { direct: false };
        let config = serde_json::json!({
            "endpoint": "x",
            "sending_queue": {"num_consumers": 3, "queue_size": 7},
            "retry_on_failure": {"max_elapsed_time": "1m"},
        });
        assert!(problems(&push, config.clone()).is_empty());
        let (built, helper) =
            build_exporter(&push, "test", &config, &ExporterContext::default()).unwrap();
        assert!(matches!(built, BuiltExporter::Push(_)));
        assert_eq!(
            helper.timeout,
            Duration::from_secs(10),
            "the type's default"
        );
        assert_eq!(helper.queue.queue_size.bytes(), 7);
        assert_eq!(helper.queue.num_consumers, 2, "tightened by the exporter");
        assert_eq!(helper.retry.max_elapsed_time.get(), Duration::from_secs(60));

        let wrong = problems(
            &push,
            serde_json::json!({
                "endpoint": "x",
                "timeout": "soon",
                "sending_queue": {"queue_sise": 7},
                "unknown": 1,
            }),
        );
        let joined = wrong.join("\n");
        for expected in [
            "exporters.test.timeout: invalid duration `soon`",
            "exporters.test.sending_queue.queue_sise: unknown field `queue_sise`",
            "exporters.test.unknown: unknown field `unknown`",
        ] {
            assert!(joined.contains(expected), "{expected} in {joined}");
        }
        // The checks of the settings themselves run once the keys parse.
        let joined = problems(
            &push,
            serde_json::json!({"endpoint": "x", "retry_on_failure": {"multiplier": 0.5}}),
        )
        .join("\n");
        assert!(
            joined.contains("exporters.test.retry_on_failure.multiplier: must be at least 1"),
            "{joined}"
        );
    }

    #[test]
    fn an_exporter_without_a_queue_refuses_the_helper_keys() {
        let direct = Factory { direct: true };
        let joined = problems(
            &direct,
            serde_json::json!({"endpoint": "x", "sending_queue": {"enabled": false}}),
        )
        .join("\n");
        assert!(
            joined.contains("exporters.test.sending_queue: unknown field `sending_queue`"),
            "{joined}"
        );
        let (built, _) = build_exporter(
            &direct,
            "test",
            &serde_json::json!({"endpoint": "x"}),
            &ExporterContext::default(),
        )
        .unwrap();
        assert!(matches!(built, BuiltExporter::Direct(_)));
    }
}
