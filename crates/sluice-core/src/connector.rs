//! Connectors: a component that is an exporter in one pipeline and a receiver in others, as in
//! the Collector (`connectors:`). Core builds the pipelines a connector feeds before the pipeline
//! that feeds it (validation refuses cycles), and puts each of them behind an [`Admission`], so
//! that data entering a pipeline from a connector is admitted and counted as a receiver's is.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use metrics::Counter;
use serde_json::Value;
use sluice_config::Problem;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::component::BuildError;
use crate::{Batch, ConsumeError, Consumer, MemoryGate, Signal, metrics as names};

/// A connector type.
pub trait ConnectorFactory: Send + Sync {
    /// The type name in configuration (`forward`).
    fn type_name(&self) -> &'static str;
    /// The pipeline types it can appear in, on either side.
    fn signals(&self) -> &'static [&'static str];
    /// Whether it takes `from` data (as an exporter) and emits `to` data (as a receiver).
    fn connects(&self, from: Signal, to: Signal) -> bool;
    /// Checks a config without I/O.
    fn check(&self, path: &str, config: &Value) -> Vec<Problem>;
    /// Checks a config against the pipelines that receive from the connector (a routing table
    /// naming a pipeline that does not).
    fn check_pipelines(&self, _path: &str, _config: &Value, _receiving: &[&str]) -> Vec<Problem> {
        Vec::new()
    }
    /// Builds the component for id `id`, once.
    ///
    /// # Errors
    /// A [`BuildError`] when the config is invalid.
    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ConnectorComponent>, BuildError>;
}

/// One pipeline a connector feeds.
#[derive(Clone)]
pub struct Route {
    /// The pipeline's id (`traces/audit`).
    pub pipeline: String,
    /// Its signal.
    pub signal: Signal,
    /// Its entry, behind an [`Admission`].
    pub consumer: Arc<dyn Consumer>,
}

/// What a connector's instance is made with.
pub struct ConnectorContext {
    /// The connector's id.
    pub id: String,
    /// The signal of the pipeline exporting to it.
    pub from: Signal,
    /// The pipelines receiving from it, by pipeline id.
    pub routes: BTreeMap<String, Route>,
}

/// A connector component: built once per id.
pub trait ConnectorComponent: Send + Sync {
    /// The exporter side for one pipeline of `ctx.from` that lists the connector.
    ///
    /// # Errors
    /// A [`BuildError`] when it cannot serve those pipelines (a route naming a pipeline that does
    /// not receive from it).
    fn instance(&self, ctx: ConnectorContext) -> Result<Arc<dyn Consumer>, BuildError>;

    /// Starts the component's own work (a flush timer), once; it ends when `shutdown` is
    /// cancelled.
    fn start(&self, _shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        Vec::new()
    }
}

/// The entry of a pipeline fed by a connector: reserves the batch's bytes against that
/// pipeline's memory gates (unless it holds them already), hands it on, and counts it in the
/// `otelcol_receiver_*` metrics with the connector as `receiver` and `connector` as `transport`.
pub struct Admission {
    gates: Vec<Arc<MemoryGate>>,
    next: Arc<dyn Consumer>,
    accepted: Counter,
    refused: Counter,
}

impl Admission {
    /// The entry of a `signal` pipeline guarded by `gates`, fed by connector `connector`.
    pub fn new(
        connector: &str,
        signal: Signal,
        gates: Vec<Arc<MemoryGate>>,
        next: Arc<dyn Consumer>,
    ) -> Arc<Self> {
        let counter = |name| metrics::counter!(name, "receiver" => connector.to_owned(), "transport" => "connector");
        Arc::new(Admission {
            gates,
            next,
            accepted: counter(names::receiver_accepted(signal)),
            refused: counter(names::receiver_refused(signal)),
        })
    }
}

#[async_trait]
impl Consumer for Admission {
    async fn consume(&self, mut batch: Batch) -> Result<(), ConsumeError> {
        let items = batch.items() as u64;
        for gate in &self.gates {
            if batch.holds_on(gate) {
                continue;
            }
            match gate.reserve(batch.size()) {
                Ok(reservation) => batch.hold(reservation),
                Err(err) => {
                    self.refused.increment(items);
                    return Err(err);
                }
            }
        }
        match self.next.consume(batch).await {
            Ok(()) => {
                self.accepted.increment(items);
                Ok(())
            }
            Err(err) => {
                self.refused.increment(items);
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::tests::Recorder;
    use std::sync::Mutex;

    #[tokio::test]
    async fn admission_reserves_on_gates_the_batch_does_not_hold_yet() {
        let upstream = MemoryGate::new("upstream", 1000);
        let downstream = MemoryGate::new("downstream", 100);
        let sink = Arc::new(Recorder {
            got: Mutex::new(Vec::new()),
            refuse: false,
        });
        let admission = Admission::new(
            "forward",
            Signal::Logs,
            vec![Arc::clone(&upstream), Arc::clone(&downstream)],
            sink.clone(),
        );
        let mut batch = Batch::from_trusted(Signal::Logs, bytes::Bytes::from(vec![0u8; 60]), 2);
        batch.hold(upstream.reserve(60).unwrap());
        admission.consume(batch.clone()).await.unwrap();
        assert_eq!(
            upstream.in_flight(),
            60,
            "not reserved twice on the same gate"
        );
        // The recorder dropped its copy; ours still holds the upstream reservation only.
        assert_eq!(downstream.in_flight(), 0);
        let _held = downstream.reserve(50).unwrap();
        let err = admission.consume(batch).await.unwrap_err();
        assert!(
            err.is_retryable(),
            "a full pipeline refuses as a receiver would"
        );
        assert_eq!(*sink.got.lock().unwrap(), [2]);
    }
}
