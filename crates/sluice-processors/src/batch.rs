//! The `batch` processor: accumulates batches by concatenating their encodings and sends them on
//! when `send_batch_size` items have gathered or `timeout` has passed since the first arrived.
//!
//! A caller is answered as soon as its data is in the batcher, so throughput does not depend on
//! how many requests a client keeps in flight. Refusals are not swallowed, as they are in the
//! Collector's batch processor: a batch the pipeline refuses (every exporter queue full) is held
//! and retried with backoff, and while any batch is held, new data is refused with a retryable
//! error, so back-pressure still reaches clients and nothing admitted is dropped for it. Only a
//! permanent refusal drops a batch, counted and logged. Memory stays bounded by the memory
//! limiter's reservations, which the held batches keep.
//!
//! With `metadata_keys`, one batcher shard per combination of those request headers' values
//! (a tenant, say): tenants never share a batch, and each batch carries its values on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use metrics::{Counter, Histogram};
use serde::Deserialize;
use serde_json::Value;
use sluice_config::{HumanDuration, Problem};
use sluice_core::client::ClientInfo;
use sluice_core::{
    Batch, BatchBuilder, BuildError, ConsumeError, Instance, Output, PipelineContext, Processor,
    ProcessorComponent, ProcessorFactory, Signal, metrics as names, typed,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// `processors.batch`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Items (spans, data points, log records) that trigger a send (default `8192`). A trigger,
    /// not a cap.
    pub send_batch_size: usize,
    /// Longest a batch waits for more data (default `200ms`); `0` sends every batch at once.
    pub timeout: HumanDuration,
    /// Upper bound on items per batch; larger ones are split exactly (default `0`, no bound).
    /// Must be at least `send_batch_size` when set.
    pub send_batch_max_size: usize,
    /// Request metadata keys (headers a receiver with `include_metadata` kept) whose values
    /// partition the batches: data of two tenants never shares one. Each batch carries those
    /// keys' values on, for processors and connectors after it. Empty (the default): one batch
    /// for everything, carrying no client metadata, as in the Collector.
    pub metadata_keys: Vec<String>,
    /// Distinct value combinations of `metadata_keys` batched at once, at most (default `1000`);
    /// data bringing one more is refused, permanently.
    pub metadata_cardinality_limit: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            timeout: HumanDuration::from_millis(200),
            send_batch_max_size: 0,
            metadata_keys: Vec::new(),
            metadata_cardinality_limit: 1000,
        }
    }
}

impl BatchConfig {
    fn check(&self, path: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.send_batch_max_size > 0 && self.send_batch_max_size < self.send_batch_size {
            problems.push(Problem::error(
                format!("{path}.send_batch_max_size"),
                format!(
                    "must be at least send_batch_size ({}) when set",
                    self.send_batch_size
                ),
            ));
        }
        for (i, key) in self.metadata_keys.iter().enumerate() {
            if !sluice_core::client::is_header_name(key) {
                problems.push(Problem::error(
                    format!("{path}.metadata_keys[{i}]"),
                    format!("`{key}` is not a header name"),
                ));
            }
        }
        if !self.metadata_keys.is_empty() && self.metadata_cardinality_limit == 0 {
            problems.push(Problem::error(
                format!("{path}.metadata_cardinality_limit"),
                "must be at least 1 with metadata_keys",
            ));
        }
        problems
    }
}

/// One partition of the batcher: the data of one combination of `metadata_keys` values.
struct Shard {
    /// What batches of this shard carry on.
    client: Option<Arc<ClientInfo>>,
    builder: BatchBuilder,
    /// When its oldest data must go, if it holds any.
    deadline: Option<tokio::time::Instant>,
}

/// The shards, found by their metadata values.
struct Shards {
    keys: Vec<String>,
    shards: Vec<Shard>,
    index: HashMap<ClientInfo, usize>,
}

impl Shards {
    fn new(signal: Signal, keys: Vec<String>) -> Self {
        // Shard 0 takes data with none of the keys' values (and all data without keys).
        let first = Shard {
            client: None,
            builder: BatchBuilder::new(signal),
            deadline: None,
        };
        Shards {
            keys,
            shards: vec![first],
            index: HashMap::new(),
        }
    }

    /// The shard `batch` goes to (made when new). With `metadata_keys`, the processor has
    /// already reduced the batch's client info to those keys: it is the shard's key as it is.
    fn of(&mut self, batch: &Batch) -> &mut Shard {
        let Some(key) = batch.client().filter(|_| !self.keys.is_empty()) else {
            return &mut self.shards[0];
        };
        let i = match self.index.get(key.as_ref()) {
            Some(&i) => i,
            None => {
                let i = self.shards.len();
                self.index.insert(ClientInfo::clone(key), i);
                self.shards.push(Shard {
                    client: Some(Arc::clone(key)),
                    builder: BatchBuilder::new(batch.signal()),
                    deadline: None,
                });
                i
            }
        };
        &mut self.shards[i]
    }

    /// The earliest deadline.
    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.shards.iter().filter_map(|s| s.deadline).min()
    }
}

struct Metrics {
    dropped: Counter,
    send_size: Histogram,
    send_size_bytes: Histogram,
    size_trigger: Counter,
    timeout_trigger: Counter,
}

struct Batcher {
    config: BatchConfig,
    output: Output,
    metrics: Metrics,
    /// Bounds concurrent sends downstream so a slow exporter without a queue slows the batcher
    /// instead of piling up tasks.
    sends: Arc<Semaphore>,
    /// Batches the pipeline refused and that are being retried; new data is refused meanwhile.
    stalled: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    /// When the stall warning was last logged: at most one line per `STALL_LOG_EVERY`.
    last_stall_log: std::sync::Mutex<Option<std::time::Instant>>,
}

const STALL_LOG_EVERY: Duration = Duration::from_secs(10);

const MAX_CONCURRENT_SENDS: usize = 8;
/// Requests waiting for the batcher task; beyond this callers are refused (retryable).
const CHANNEL_CAPACITY: usize = 4096;

#[derive(Clone, Copy)]
enum Trigger {
    Size,
    Timeout,
    Shutdown,
}

impl Batcher {
    async fn run(
        self: Arc<Self>,
        signal: Signal,
        mut rx: mpsc::Receiver<Batch>,
        shutdown: CancellationToken,
    ) {
        let mut shards = Shards::new(signal, self.config.metadata_keys.clone());
        let timeout = self.config.timeout.get();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                message = rx.recv() => {
                    let Some(batch) = message else { break };
                    let shard = shards.of(&batch);
                    if shard.builder.is_empty() {
                        shard.deadline = Some(tokio::time::Instant::now() + timeout);
                    }
                    shard.builder.push(batch);
                    if timeout.is_zero() || shard.builder.items() >= self.config.send_batch_size {
                        let trigger = if timeout.is_zero() { Trigger::Timeout } else { Trigger::Size };
                        self.flush(shard, trigger).await;
                    }
                    deadline = shards.next_deadline();
                }
                () = sleep_until(deadline) => {
                    let now = tokio::time::Instant::now();
                    for shard in &mut shards.shards {
                        if shard.deadline.is_some_and(|d| d <= now) {
                            self.flush(shard, Trigger::Timeout).await;
                        }
                    }
                    deadline = shards.next_deadline();
                }
                () = shutdown.cancelled() => {
                    rx.close();
                    while let Ok(batch) = rx.try_recv() {
                        shards.of(&batch).builder.push(batch);
                    }
                    break;
                }
            }
        }
        for shard in &mut shards.shards {
            self.flush(shard, Trigger::Shutdown).await;
        }
        // Wait for sends under way so that shutdown hands everything to the exporters.
        let _ = self.sends.acquire_many(MAX_CONCURRENT_SENDS as u32).await;
    }

    async fn flush(self: &Arc<Self>, shard: &mut Shard, trigger: Trigger) {
        shard.deadline = None;
        if shard.builder.is_empty() {
            return;
        }
        let mut batch = shard.builder.take().with_client(shard.client.clone());
        let max = self.config.send_batch_max_size;
        let mut parts = Vec::new();
        while max > 0 && batch.items() > max {
            let rest = batch.split_off(max);
            parts.push(batch);
            batch = rest;
        }
        parts.push(batch);
        for part in parts {
            self.metrics.send_size.record(part.items() as f64);
            self.metrics.send_size_bytes.record(part.size() as f64);
            match trigger {
                Trigger::Size => self.metrics.size_trigger.increment(1),
                Trigger::Timeout => self.metrics.timeout_trigger.increment(1),
                Trigger::Shutdown => {}
            }
            let Ok(permit) = Arc::clone(&self.sends).acquire_owned().await else {
                return;
            };
            let this = Arc::clone(self);
            tokio::spawn(async move {
                this.send(part).await;
                drop(permit);
            });
        }
    }

    /// Sends one batch downstream, holding and retrying it while the pipeline refuses it.
    async fn send(&self, batch: Batch) {
        let items = batch.items();
        let mut stalled = false;
        let sent = self
            .output
            .send_until_taken(batch, &self.shutdown, |err| {
                if stalled {
                    return;
                }
                stalled = true;
                self.stalled.fetch_add(1, Ordering::AcqRel);
                let mut last = self
                    .last_stall_log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if last.is_none_or(|t| t.elapsed() >= STALL_LOG_EVERY) {
                    *last = Some(std::time::Instant::now());
                    tracing::warn!(items, error = %err.message, "pipeline refused a batch; holding it and refusing new data until it goes through");
                }
            })
            .await;
        if let Err(err) = sent {
            self.metrics.dropped.increment(items as u64);
            tracing::error!(items, error = %err.message, "pipeline refused a batch permanently, data dropped");
        }
        if stalled {
            self.stalled.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

struct BatchProcessor {
    tx: mpsc::Sender<Batch>,
    stalled: Arc<AtomicUsize>,
    /// With `metadata_keys`: the value combinations seen, and how many may be.
    combinations: Option<(std::sync::Mutex<HashSet<ClientInfo>>, Vec<String>, usize)>,
}

#[async_trait]
impl Processor for BatchProcessor {
    async fn process(&self, batch: Batch) -> Result<Option<Batch>, ConsumeError> {
        if self.stalled.load(Ordering::Acquire) > 0 {
            return Err(ConsumeError::unavailable(
                "the pipeline behind the batch processor is refusing data",
            ));
        }
        // The batch's client info is reduced to `metadata_keys` once, here: the batcher keys
        // its shards by it, and the batches it sends carry it on.
        let batch = match &self.combinations {
            None => batch,
            Some((seen, keys, limit)) => {
                let key = batch.client().map(|c| c.only(keys)).unwrap_or_default();
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                if !seen.contains(&key) {
                    if seen.len() >= *limit {
                        return Err(ConsumeError::invalid(format!(
                            "too many combinations of metadata_keys values (metadata_cardinality_limit {limit})"
                        )));
                    }
                    seen.insert(key.clone());
                }
                drop(seen);
                let empty = key == ClientInfo::default();
                batch.with_client((!empty).then(|| Arc::new(key)))
            }
        };
        match self.tx.try_send(batch) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err(ConsumeError::unavailable("batch processor is saturated"))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ConsumeError::unavailable(
                "batch processor is shutting down",
            )),
        }
    }
}

/// Builds `batch` processors: one batcher per pipeline.
#[derive(Debug, Default)]
pub struct BatchFactory;

impl ProcessorFactory for BatchFactory {
    fn type_name(&self) -> &'static str {
        "batch"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &BatchConfig| c.check(path))
    }

    fn holds_data(&self) -> bool {
        true
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ProcessorComponent>, BuildError> {
        let config: BatchConfig = typed(&format!("processors.{id}"), config)?;
        Ok(Box::new(BatchComponent { config }))
    }
}

/// One batcher per pipeline, as in the Collector.
struct BatchComponent {
    config: BatchConfig,
}

impl ProcessorComponent for BatchComponent {
    fn instance(&self, ctx: PipelineContext) -> Result<Instance, BuildError> {
        let label = ctx.id.clone();
        let stalled = Arc::new(AtomicUsize::new(0));
        let batcher = Arc::new(Batcher {
            config: self.config.clone(),
            output: ctx.output,
            stalled: Arc::clone(&stalled),
            shutdown: ctx.shutdown.clone(),
            last_stall_log: std::sync::Mutex::new(None),
            metrics: Metrics {
                dropped: metrics::counter!(names::processor_dropped(ctx.signal), "processor" => label.clone()),
                send_size: metrics::histogram!(names::BATCH_SEND_SIZE, "processor" => label.clone()),
                send_size_bytes: metrics::histogram!(names::BATCH_SEND_SIZE_BYTES, "processor" => label.clone()),
                size_trigger: metrics::counter!(names::BATCH_SIZE_TRIGGER_SEND, "processor" => label.clone()),
                timeout_trigger: metrics::counter!(names::BATCH_TIMEOUT_TRIGGER_SEND, "processor" => label),
            },
            sends: Arc::new(Semaphore::new(MAX_CONCURRENT_SENDS)),
        });
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = tokio::spawn(batcher.run(ctx.signal, rx, ctx.shutdown));
        Ok(Instance {
            processor: Arc::new(BatchProcessor {
                tx,
                stalled,
                combinations: (!self.config.metadata_keys.is_empty()).then(|| {
                    (
                        std::sync::Mutex::new(HashSet::new()),
                        self.config.metadata_keys.clone(),
                        self.config.metadata_cardinality_limit,
                    )
                }),
            }),
            tasks: vec![task],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;
    use sluice_core::{Consumer, ProcessorStage};
    use std::time::Duration;

    struct Sink {
        got: std::sync::Mutex<Vec<usize>>,
        /// The `x-tenant` each batch carried on.
        tenants: std::sync::Mutex<Vec<Option<String>>>,
        refuse: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Consumer for Sink {
        async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
            assert_eq!(
                sluice_core::wire::count(Signal::Logs, batch.data()),
                batch.items()
            );
            if self.refuse.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(ConsumeError::unavailable("queue full"));
            }
            self.got.lock().unwrap().push(batch.items());
            self.tenants
                .lock()
                .unwrap()
                .push(batch.client().and_then(|c| c.lookup("x-tenant")));
            Ok(())
        }
    }

    fn logs(n: usize) -> Batch {
        let data: Bytes = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
        .into();
        Batch::decode(Signal::Logs, data).unwrap()
    }

    fn build(
        config: serde_json::Value,
        refuse: bool,
    ) -> (
        Arc<dyn Consumer>,
        Arc<Sink>,
        CancellationToken,
        Vec<tokio::task::JoinHandle<()>>,
    ) {
        let sink = Arc::new(Sink {
            got: std::sync::Mutex::new(Vec::new()),
            tenants: std::sync::Mutex::new(Vec::new()),
            refuse: std::sync::atomic::AtomicBool::new(refuse),
        });
        let shutdown = CancellationToken::new();
        let output = Output::new("batch", Signal::Logs, sink.clone());
        let instance = BatchFactory
            .build("batch", &config)
            .unwrap()
            .instance(PipelineContext {
                id: "batch".into(),
                pipeline: "logs".into(),
                signal: Signal::Logs,
                output: output.clone(),
                shutdown: shutdown.clone(),
            })
            .unwrap();
        let stage = ProcessorStage::new("batch", Signal::Logs, instance.processor, output);
        (stage, sink, shutdown, instance.tasks)
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sends_when_size_is_reached_and_splits_at_max_size() {
        let (batcher, sink, _, _) = build(
            serde_json::json!({"send_batch_size": 10, "send_batch_max_size": 10, "timeout": "1h"}),
            false,
        );
        batcher.consume(logs(7)).await.unwrap();
        batcher.consume(logs(16)).await.unwrap();
        settle().await;
        assert_eq!(*sink.got.lock().unwrap(), [10, 10, 3]);
    }

    fn from(tenant: Option<&str>, user_agent: &str, n: usize) -> Batch {
        let mut headers = vec![("user-agent", user_agent.as_bytes())];
        headers.extend(tenant.map(|t| ("X-Tenant", t.as_bytes())));
        logs(n).with_client(ClientInfo::new(
            headers,
            &sluice_core::client::AuthInfo::none().with("username", "u"),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn metadata_keys_keep_tenants_apart_and_carry_only_their_values() {
        let (batcher, sink, _, _) = build(
            serde_json::json!({"timeout": "100ms", "metadata_keys": ["x-tenant"], "metadata_cardinality_limit": 3}),
            false,
        );
        batcher.consume(from(Some("acme"), "a", 2)).await.unwrap();
        batcher.consume(from(Some("beta"), "b", 3)).await.unwrap();
        batcher.consume(from(Some("acme"), "c", 4)).await.unwrap();
        batcher.consume(from(None, "d", 5)).await.unwrap();
        // A third tenant passes the limit of three combinations (the empty one counts).
        let refused = batcher
            .consume(from(Some("gamma"), "e", 1))
            .await
            .unwrap_err();
        assert!(!refused.is_retryable(), "{refused:?}");
        assert!(refused.message.contains("metadata_cardinality_limit 3"));
        tokio::time::sleep(Duration::from_millis(101)).await;
        settle().await;
        let mut got: Vec<(usize, Option<String>)> = sink
            .got
            .lock()
            .unwrap()
            .iter()
            .copied()
            .zip(sink.tenants.lock().unwrap().iter().cloned())
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                (3, Some("beta".to_owned())),
                (5, None),
                (6, Some("acme".to_owned())),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_metadata_keys_one_batch_carries_no_client() {
        let (batcher, sink, _, _) = build(serde_json::json!({"timeout": "100ms"}), false);
        batcher.consume(from(Some("acme"), "a", 2)).await.unwrap();
        batcher.consume(from(Some("beta"), "b", 3)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(101)).await;
        settle().await;
        assert_eq!(*sink.got.lock().unwrap(), [5]);
        assert_eq!(*sink.tenants.lock().unwrap(), [None]);
    }

    #[tokio::test(start_paused = true)]
    async fn callers_are_answered_at_once_and_the_batch_goes_at_the_timeout() {
        let (batcher, sink, _, _) = build(serde_json::json!({"timeout": "200ms"}), false);
        let started = tokio::time::Instant::now();
        batcher.consume(logs(3)).await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(199)).await;
        assert!(sink.got.lock().unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(2)).await;
        settle().await;
        assert_eq!(*sink.got.lock().unwrap(), [3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_batch_is_held_and_retried_while_new_data_is_refused() {
        let (batcher, sink, _, _) = build(serde_json::json!({"timeout": "10ms"}), true);
        batcher.consume(logs(3)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        settle().await;
        let err = batcher.consume(logs(1)).await.unwrap_err();
        assert!(err.is_retryable(), "back-pressure reaches callers");
        sink.refuse
            .store(false, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(3)).await;
        settle().await;
        assert_eq!(
            *sink.got.lock().unwrap(),
            [3],
            "the held batch went through, once"
        );
        batcher.consume(logs(2)).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_flushes_what_is_pending() {
        let (batcher, sink, shutdown, tasks) = build(serde_json::json!({"timeout": "1h"}), false);
        batcher.consume(logs(5)).await.unwrap();
        settle().await;
        shutdown.cancel();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*sink.got.lock().unwrap(), [5]);
    }

    #[test]
    fn max_size_below_size_is_an_error() {
        let p = BatchFactory.check(
            "processors.batch",
            &serde_json::json!({"send_batch_size": 100, "send_batch_max_size": 10}),
        );
        assert_eq!(
            p[0].to_string(),
            "error: processors.batch.send_batch_max_size: must be at least send_batch_size (100) when set"
        );
    }
}
