//! The `batch` processor: accumulates batches by concatenating their encodings and sends them on
//! when `send_batch_size` items have gathered or `timeout` has passed since the first arrived.
//!
//! Unlike the Collector's batch processor, a caller waits for the downstream result of the batch
//! its data went out in, so refusals (full exporter queues) reach the client as retryable
//! statuses instead of being swallowed. The wait is bounded by `timeout`.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use metrics::{Counter, Histogram};
use serde::Deserialize;
use serde_json::Value;
use sluice_config::{HumanDuration, Problem};
use sluice_core::{
    Batch, BatchBuilder, BuildError, BuiltProcessor, ConsumeError, Consumer, ProcessorContext,
    ProcessorFactory, Signal, metrics as names, typed,
};
use tokio::sync::{Semaphore, mpsc, oneshot};
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
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            timeout: HumanDuration::from_millis(200),
            send_batch_max_size: 0,
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
        problems
    }
}

/// Completion of one caller's data: the result is sent when the last part of it is done.
struct Ticket {
    error: Mutex<Option<ConsumeError>>,
    done: Mutex<Option<oneshot::Sender<Result<(), ConsumeError>>>>,
}

impl Ticket {
    fn fail(&self, err: &ConsumeError) {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(err.clone());
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let error = self
            .error
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(tx) = self
            .done
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = tx.send(error.map_or(Ok(()), Err));
        }
    }
}

struct Metrics {
    send_size: Histogram,
    send_size_bytes: Histogram,
    size_trigger: Counter,
    timeout_trigger: Counter,
}

struct Batcher {
    config: BatchConfig,
    next: Arc<dyn Consumer>,
    metrics: Metrics,
    /// Bounds concurrent sends downstream so a slow exporter without a queue slows the batcher
    /// instead of piling up tasks.
    sends: Arc<Semaphore>,
}

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
        mut rx: mpsc::Receiver<(Batch, Arc<Ticket>)>,
        shutdown: CancellationToken,
    ) {
        let mut builder = BatchBuilder::new(signal);
        let mut tickets: Vec<Arc<Ticket>> = Vec::new();
        let timeout = self.config.timeout.get();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                message = rx.recv() => {
                    let Some((batch, ticket)) = message else { break };
                    if builder.is_empty() {
                        deadline = Some(tokio::time::Instant::now() + timeout);
                    }
                    builder.push(batch);
                    tickets.push(ticket);
                    if timeout.is_zero() || builder.items() >= self.config.send_batch_size {
                        let trigger = if timeout.is_zero() { Trigger::Timeout } else { Trigger::Size };
                        self.flush(&mut builder, &mut tickets, trigger).await;
                        deadline = None;
                    }
                }
                () = sleep_until(deadline) => {
                    self.flush(&mut builder, &mut tickets, Trigger::Timeout).await;
                    deadline = None;
                }
                () = shutdown.cancelled() => {
                    rx.close();
                    while let Ok((batch, ticket)) = rx.try_recv() {
                        builder.push(batch);
                        tickets.push(ticket);
                    }
                    break;
                }
            }
        }
        self.flush(&mut builder, &mut tickets, Trigger::Shutdown)
            .await;
        // Wait for sends under way so that shutdown hands everything to the exporters.
        let _ = self.sends.acquire_many(MAX_CONCURRENT_SENDS as u32).await;
    }

    async fn flush(
        self: &Arc<Self>,
        builder: &mut BatchBuilder,
        tickets: &mut Vec<Arc<Ticket>>,
        trigger: Trigger,
    ) {
        if builder.is_empty() {
            tickets.clear();
            return;
        }
        let mut batch = builder.take();
        let tickets = std::mem::take(tickets);
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
            let next = Arc::clone(&self.next);
            let tickets = tickets.clone();
            tokio::spawn(async move {
                if let Err(err) = next.consume(part).await {
                    for t in &tickets {
                        t.fail(&err);
                    }
                }
                drop(permit);
            });
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
    tx: mpsc::Sender<(Batch, Arc<Ticket>)>,
}

#[async_trait]
impl Consumer for BatchProcessor {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let (done, wait) = oneshot::channel();
        let ticket = Arc::new(Ticket {
            error: Mutex::new(None),
            done: Mutex::new(Some(done)),
        });
        match self.tx.try_send((batch, ticket)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(ConsumeError::unavailable("batch processor is saturated"));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(ConsumeError::unavailable(
                    "batch processor is shutting down",
                ));
            }
        }
        wait.await
            .unwrap_or_else(|_| Err(ConsumeError::unavailable("batch processor stopped")))
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

    fn build(&self, config: &Value, ctx: ProcessorContext) -> Result<BuiltProcessor, BuildError> {
        let config: BatchConfig = typed(&format!("processors.{}", ctx.id), config)?;
        let label = ctx.id.clone();
        let batcher = Arc::new(Batcher {
            config,
            next: ctx.next,
            metrics: Metrics {
                send_size: metrics::histogram!(names::BATCH_SEND_SIZE, "processor" => label.clone()),
                send_size_bytes: metrics::histogram!(names::BATCH_SEND_SIZE_BYTES, "processor" => label.clone()),
                size_trigger: metrics::counter!(names::BATCH_SIZE_TRIGGER_SEND, "processor" => label.clone()),
                timeout_trigger: metrics::counter!(names::BATCH_TIMEOUT_TRIGGER_SEND, "processor" => label),
            },
            sends: Arc::new(Semaphore::new(MAX_CONCURRENT_SENDS)),
        });
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = tokio::spawn(batcher.run(ctx.signal, rx, ctx.shutdown));
        Ok(BuiltProcessor {
            consumer: Arc::new(BatchProcessor { tx }),
            gate: None,
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
    use std::time::Duration;

    struct Sink {
        got: Mutex<Vec<usize>>,
        refuse: bool,
    }

    #[async_trait]
    impl Consumer for Sink {
        async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
            assert_eq!(
                sluice_core::wire::count(Signal::Logs, batch.data()),
                batch.items()
            );
            if self.refuse {
                return Err(ConsumeError::unavailable("queue full"));
            }
            self.got.lock().unwrap().push(batch.items());
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
            got: Mutex::new(Vec::new()),
            refuse,
        });
        let shutdown = CancellationToken::new();
        let built = BatchFactory
            .build(
                &config,
                ProcessorContext {
                    id: "batch".into(),
                    signal: Signal::Logs,
                    next: sink.clone(),
                    shutdown: shutdown.clone(),
                },
            )
            .unwrap();
        (built.consumer, sink, shutdown, built.tasks)
    }

    #[tokio::test(start_paused = true)]
    async fn sends_when_size_is_reached_and_splits_at_max_size() {
        let (batcher, sink, _, _) = build(
            serde_json::json!({"send_batch_size": 10, "send_batch_max_size": 10, "timeout": "1h"}),
            false,
        );
        let a = tokio::spawn({
            let b = batcher.clone();
            async move { b.consume(logs(7)).await }
        });
        tokio::task::yield_now().await;
        batcher.consume(logs(16)).await.unwrap();
        a.await.unwrap().unwrap();
        assert_eq!(*sink.got.lock().unwrap(), [10, 10, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn sends_after_timeout() {
        let (batcher, sink, _, _) = build(serde_json::json!({"timeout": "200ms"}), false);
        let started = tokio::time::Instant::now();
        batcher.consume(logs(3)).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        assert_eq!(*sink.got.lock().unwrap(), [3]);
    }

    #[tokio::test(start_paused = true)]
    async fn downstream_refusal_reaches_the_caller() {
        let (batcher, _, _, _) = build(serde_json::json!({"timeout": "10ms"}), true);
        let err = batcher.consume(logs(3)).await.unwrap_err();
        assert!(err.is_retryable());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_flushes_what_is_pending() {
        let (batcher, sink, shutdown, tasks) = build(serde_json::json!({"timeout": "1h"}), false);
        let pending = tokio::spawn(async move { batcher.consume(logs(5)).await });
        tokio::task::yield_now().await;
        shutdown.cancel();
        for t in tasks {
            t.await.unwrap();
        }
        pending.await.unwrap().unwrap();
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
