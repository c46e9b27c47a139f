//! Processors as core drives them.
//!
//! A processor component is built once per id ([`crate::ProcessorFactory::build`]) and gives each
//! pipeline that lists it an instance ([`ProcessorComponent::instance`]), as the Collector does:
//! state that must be shared across pipelines (a memory limiter's gate) lives in the component,
//! state that must not (a batcher's buffer) in the instance. An instance only transforms: it
//! returns the batch to hand on, drops it (returns nothing), or holds it and hands it on later
//! through its [`Output`]. Core does the rest: the hand-off, the `otelcol_processor_incoming_items`
//! and `otelcol_processor_outgoing_items` metrics, and skipping empty batches.

use std::sync::Arc;

use async_trait::async_trait;
use metrics::Counter;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::component::BuildError;
use crate::gate::MemoryGate;
use crate::{Batch, ConsumeError, Consumer, Signal, metrics as names};

/// One pipeline's instance of a processor.
#[async_trait]
pub trait Processor: Send + Sync + 'static {
    /// Processes one batch: `Some` is handed on at once, `None` means the processor dropped the
    /// batch or holds it to hand on later through its [`Output`]. An empty batch is not handed on.
    ///
    /// # Errors
    /// A [`ConsumeError`] refusing the batch (retryable for back-pressure).
    async fn process(&self, batch: Batch) -> Result<Option<Batch>, ConsumeError>;
}

/// The part of the pipeline after a processor: hands batches on and counts what leaves.
#[derive(Clone)]
pub struct Output {
    next: Arc<dyn Consumer>,
    outgoing: Counter,
}

impl Output {
    /// The output of processor `id` in a pipeline of `signal`, feeding `next`.
    pub fn new(id: &str, signal: Signal, next: Arc<dyn Consumer>) -> Self {
        Output {
            next,
            outgoing: metrics::counter!(names::PROCESSOR_OUTGOING_ITEMS, "processor" => id.to_owned(), "otel_signal" => signal.as_str()),
        }
    }

    /// Hands a batch on; what the rest of the pipeline took counts as the processor's outgoing
    /// items. An empty batch is not handed on.
    ///
    /// # Errors
    /// The rest of the pipeline's refusal.
    pub async fn send(&self, batch: Batch) -> Result<(), ConsumeError> {
        if batch.is_empty() {
            return Ok(());
        }
        let items = batch.items() as u64;
        self.next.consume(batch).await?;
        self.outgoing.increment(items);
        Ok(())
    }

    /// Hands a batch on for a processor that holds data (`batch`, `tail_sampling`): while the
    /// rest of the pipeline refuses it retryably (back-pressure), waits (50 ms doubling to 2 s)
    /// and tries again, calling `refused` at each refusal, until it is taken or `stop` is
    /// cancelled.
    ///
    /// # Errors
    /// A permanent refusal, or the last retryable one once `stop` is cancelled.
    pub async fn send_until_taken(
        &self,
        batch: Batch,
        stop: &CancellationToken,
        mut refused: impl FnMut(&ConsumeError),
    ) -> Result<(), ConsumeError> {
        let mut pause = RETRY_FIRST;
        loop {
            match self.send(batch.clone()).await {
                Ok(()) => return Ok(()),
                Err(err) if err.is_retryable() && !stop.is_cancelled() => {
                    refused(&err);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = stop.cancelled() => {}
                    }
                    pause = (pause * 2).min(RETRY_MAX);
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// The first pause before handing a refused batch on again, and the longest.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(50);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// What an instance is made with.
pub struct PipelineContext {
    /// The processor's id.
    pub id: String,
    /// The pipeline's id (`traces/audit`).
    pub pipeline: String,
    /// The pipeline's signal.
    pub signal: Signal,
    /// The rest of the pipeline, for processors that hold data and hand it on later.
    pub output: Output,
    /// Cancelled once receivers have stopped: hand on what is held and end.
    pub shutdown: CancellationToken,
}

/// One pipeline's instance and the tasks it started (a batcher's timer loop).
pub struct Instance {
    /// The processor.
    pub processor: Arc<dyn Processor>,
    /// Its background tasks; they hand on what they hold and end once `shutdown` is cancelled.
    pub tasks: Vec<JoinHandle<()>>,
}

impl Instance {
    /// An instance without background tasks.
    pub fn new(processor: Arc<dyn Processor>) -> Self {
        Instance {
            processor,
            tasks: Vec::new(),
        }
    }
}

/// A processor component: built once per id, shared by the pipelines that list it.
pub trait ProcessorComponent: Send + Sync {
    /// The instance for one pipeline.
    ///
    /// # Errors
    /// A [`BuildError`] when it cannot serve that pipeline.
    fn instance(&self, ctx: PipelineContext) -> Result<Instance, BuildError>;

    /// The memory gate that receivers feeding the pipelines holding this processor consult before
    /// reading a request (memory limiters).
    fn gate(&self) -> Option<Arc<MemoryGate>> {
        None
    }

    /// Starts the component's own work (a memory watcher), once; it ends when `shutdown` is
    /// cancelled, after the pipelines' instances have handed on what they held.
    fn start(&self, _shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        Vec::new()
    }
}

/// Processors run in order on batches that do not flow through a pipeline's stages: those a
/// persistent queue's reader gets back from the disk log (the processors after the log's place,
/// see the README's rule for persistent queues). Counts what enters and leaves each one, as
/// [`ProcessorStage`] does.
#[derive(Clone, Default)]
pub struct Chain {
    stages: Vec<(Arc<dyn Processor>, Counter, Counter)>,
}

impl Chain {
    /// Appends processor `id`'s instance for a pipeline of `signal`.
    pub fn push(&mut self, id: &str, signal: Signal, processor: Arc<dyn Processor>) {
        let counter = |name| metrics::counter!(name, "processor" => id.to_owned(), "otel_signal" => signal.as_str());
        self.stages.push((
            processor,
            counter(names::PROCESSOR_INCOMING_ITEMS),
            counter(names::PROCESSOR_OUTGOING_ITEMS),
        ));
    }

    /// Whether it runs no processor.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Runs the batch through every processor: `None` when one dropped all of it.
    ///
    /// # Errors
    /// The first refusal.
    pub async fn run(&self, mut batch: Batch) -> Result<Option<Batch>, ConsumeError> {
        for (processor, incoming, outgoing) in &self.stages {
            incoming.increment(batch.items() as u64);
            match processor.process(batch).await? {
                Some(next) if !next.is_empty() => {
                    outgoing.increment(next.items() as u64);
                    batch = next;
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(batch))
    }
}

/// A processor instance as a pipeline stage: counts incoming items and hands on what the
/// processor returns.
pub struct ProcessorStage {
    processor: Arc<dyn Processor>,
    output: Output,
    incoming: Counter,
}

impl ProcessorStage {
    /// The stage of processor `id` in a pipeline of `signal`.
    pub fn new(
        id: &str,
        signal: Signal,
        processor: Arc<dyn Processor>,
        output: Output,
    ) -> Arc<Self> {
        Arc::new(ProcessorStage {
            processor,
            output,
            incoming: metrics::counter!(names::PROCESSOR_INCOMING_ITEMS, "processor" => id.to_owned(), "otel_signal" => signal.as_str()),
        })
    }
}

#[async_trait]
impl Consumer for ProcessorStage {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        self.incoming.increment(batch.items() as u64);
        match self.processor.process(batch).await? {
            Some(batch) => self.output.send(batch).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::tests::Recorder;
    use std::sync::Mutex;

    struct Halve;

    #[async_trait]
    impl Processor for Halve {
        async fn process(&self, batch: Batch) -> Result<Option<Batch>, ConsumeError> {
            let mut n = 0;
            Ok(Some(batch.retain(|_, _| {
                n += 1;
                n % 2 == 0
            })))
        }
    }

    fn spans(n: usize) -> Batch {
        Batch::decode(Signal::Traces, crate::batch::tests::request(n)).unwrap()
    }

    #[tokio::test]
    async fn core_hands_on_what_the_processor_returns_and_counts_both_sides() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let sink = Arc::new(Recorder {
            got: Mutex::new(Vec::new()),
            refuse: false,
        });
        metrics::with_local_recorder(&recorder, || {
            let output = Output::new("halve", Signal::Traces, sink.clone());
            let stage = ProcessorStage::new("halve", Signal::Traces, Arc::new(Halve), output);
            futures::executor::block_on(async {
                stage.consume(spans(5)).await.unwrap();
                // A batch left empty is not handed on.
                stage.consume(spans(1)).await.unwrap();
            });
        });
        assert_eq!(*sink.got.lock().unwrap(), [2]);
        let counters: Vec<(String, u64)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                metrics_util::debugging::DebugValue::Counter(v) => {
                    let labels: Vec<String> = key
                        .key()
                        .labels()
                        .map(|l| format!("{}={}", l.key(), l.value()))
                        .collect();
                    Some((format!("{} {}", key.key().name(), labels.join(",")), v))
                }
                _ => None,
            })
            .collect();
        assert!(counters.contains(&(
            "otelcol_processor_incoming_items processor=halve,otel_signal=traces".into(),
            6
        )));
        assert!(counters.contains(&(
            "otelcol_processor_outgoing_items processor=halve,otel_signal=traces".into(),
            2
        )));
    }
}
