//! The exporter helper every exporter shares: a bounded sending queue, consumer workers, retry
//! with capped, jittered exponential backoff, a per-attempt timeout, and the exporter metrics.
//!
//! Exporters implement only [`Exporter::encode`] and [`Exporter::send`] and say whether a
//! failure is worth retrying; the helper owns everything else (encoding once per batch, off the
//! async workers when large, and resending that encoding on retry), so retry and queueing behave
//! the same for every backend.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrics::{Counter, Gauge};
use serde::Deserialize;
use sluice_config::{ByteSize, HumanDuration, Problem};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::disk_log::Reader;
use crate::{Batch, Chain, ConsumeError, Consumer, Signal, metrics as names};

/// Why an export attempt failed, and whether another attempt may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExportError {
    /// Whether retrying the same data may succeed (backend down, throttled, timed out).
    pub retryable: bool,
    /// A delay the backend asked for (gRPC RetryInfo, HTTP Retry-After).
    pub retry_after: Option<Duration>,
    /// What happened, lowercase.
    pub message: String,
}

impl ExportError {
    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        ExportError {
            retryable: true,
            retry_after: None,
            message: message.into(),
        }
    }

    /// A failure no retry can fix (the backend rejected the data).
    pub fn permanent(message: impl Into<String>) -> Self {
        ExportError {
            retryable: false,
            retry_after: None,
            message: message.into(),
        }
    }

    /// Sets the delay the backend asked for.
    pub fn with_retry_after(mut self, delay: Option<Duration>) -> Self {
        self.retry_after = delay;
        self
    }
}

/// A backend client, in two steps: `encode` turns a batch into what goes on the wire (translate,
/// compress), `send` sends it once. The exporter helper encodes each batch once, off the async
/// workers when it is large, and every retry sends the same encoding again: a retry costs a
/// round trip, not a translation, and what `encode` counts (items it could not translate) is
/// counted once per batch.
#[async_trait]
pub trait Exporter: Send + Sync + 'static {
    /// What a batch becomes for sending.
    type Encoded: Send + Sync + 'static;

    /// Encodes a batch. Runs on the blocking pool for batches over
    /// [`ENCODE_OFF_WORKERS_ABOVE`] bytes.
    ///
    /// # Errors
    /// A permanent [`ExportError`] when the batch cannot be encoded (the helper then drops the
    /// items that would not decode and tries the rest once).
    fn encode(&self, batch: &Batch) -> Result<Self::Encoded, ExportError>;

    /// Sends an encoded batch once; the helper retries.
    ///
    /// # Errors
    /// An [`ExportError`] saying whether the failure is retryable.
    ///
    /// # Cancel safety
    /// The helper drops the future when the attempt times out; an exporter must not leave shared
    /// state half-updated across an await.
    async fn send(&self, encoded: &Self::Encoded) -> Result<(), ExportError>;

    /// Starts the exporter's own work (a database's maintenance), once; it ends when `shutdown`
    /// is cancelled, after the queues have drained.
    fn start(&self, _shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        Vec::new()
    }
}

/// Batches over this many bytes are encoded on the blocking pool: translating or compressing
/// 64 KiB takes a few hundred microseconds, about as long as an async worker should be held.
pub const ENCODE_OFF_WORKERS_ABOVE: usize = 64 * 1024;

/// An encoded batch whose type only its exporter knows.
pub type AnyEncoded = Box<dyn Any + Send + Sync>;

/// [`Exporter`] with its encoding's type erased, so that the helper and the service hold every
/// exporter the same way. Implemented for every [`Exporter`]; build with `Arc::new(exporter)`.
#[async_trait]
pub trait ErasedExporter: Send + Sync + 'static {
    /// [`Exporter::encode`].
    ///
    /// # Errors
    /// As [`Exporter::encode`].
    fn encode_any(&self, batch: &Batch) -> Result<AnyEncoded, ExportError>;

    /// [`Exporter::send`] of what [`ErasedExporter::encode_any`] returned.
    ///
    /// # Errors
    /// As [`Exporter::send`].
    async fn send_any(&self, encoded: &AnyEncoded) -> Result<(), ExportError>;

    /// [`Exporter::start`].
    fn start_any(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>>;
}

#[async_trait]
impl<E: Exporter> ErasedExporter for E {
    fn encode_any(&self, batch: &Batch) -> Result<AnyEncoded, ExportError> {
        Ok(Box::new(self.encode(batch)?))
    }

    async fn send_any(&self, encoded: &AnyEncoded) -> Result<(), ExportError> {
        match encoded.downcast_ref::<E::Encoded>() {
            Some(encoded) => self.send(encoded).await,
            None => Err(ExportError::permanent(
                "an encoding reached an exporter that did not make it",
            )),
        }
    }

    fn start_any(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        self.start(shutdown)
    }
}

/// `retry_on_failure`: how failed exports are retried. Defaults are the Collector's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Retry retryable failures at all (default `true`).
    pub enabled: bool,
    /// First pause after a failure (default `5s`).
    pub initial_interval: HumanDuration,
    /// Longest pause between attempts (default `30s`).
    pub max_interval: HumanDuration,
    /// Give up on a batch after this long (default `300s`; `0` retries forever).
    pub max_elapsed_time: HumanDuration,
    /// Growth of the pause after each failure (default `1.5`).
    pub multiplier: f64,
    /// Jitter: each pause is drawn from `pause × (1 ± randomization_factor)` (default `0.5`).
    pub randomization_factor: f64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            enabled: true,
            initial_interval: HumanDuration::from_secs(5),
            max_interval: HumanDuration::from_secs(30),
            max_elapsed_time: HumanDuration::from_secs(300),
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}

/// What a sending queue's `queue_size` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Sizer {
    /// Batches (the Collector's default).
    #[default]
    Requests,
    /// Spans, metric data points or log records.
    Items,
    /// Encoded bytes: the way to bound a queue's memory.
    Bytes,
}

/// `sending_queue`: the in-memory queue between the pipeline and the exporter's workers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Queue batches and return to the pipeline at once (default `true`). Without a queue, the
    /// pipeline waits for each export, retries included, and a failure reaches the client.
    pub enabled: bool,
    /// Workers sending from the queue concurrently (default `10`).
    pub num_consumers: usize,
    /// Capacity in `sizer` units (default `1000`); with `sizer: bytes` it may be written like
    /// `64MiB`. A full queue refuses new data with a retryable error and counts it in
    /// `otelcol_exporter_enqueue_failed_*`.
    pub queue_size: ByteSize,
    /// `requests` (default), `items` or `bytes`.
    pub sizer: Sizer,
    /// `memory` (default) or `file`: a persistent queue on disk. With `file`, a client's request
    /// is acknowledged only once it is written to the queue (before batching), the queue
    /// survives restarts and crashes, and `queue_size`/`sizer` give way to `max_bytes`.
    pub storage: Storage,
    /// With `storage: file`: the directory of the queue (required). Exporters of one pipeline
    /// that share a directory share one copy of the data, each with its own position.
    pub directory: Option<std::path::PathBuf>,
    /// With `storage: file`: most bytes the queue keeps on disk (default `1GiB`).
    pub max_bytes: ByteSize,
    /// With `storage: file`, when the queue is full: `refuse` (default: clients get a retryable
    /// refusal, nothing is lost) or `drop_oldest` (the oldest data on disk is dropped and
    /// counted in `otelcol_exporter_send_failed_*`).
    pub on_full: OnFull,
    /// With `storage: file`: `always` (default: a request is acknowledged after `fdatasync`, so
    /// it survives a power cut; concurrent requests share one sync), `interval` (synced every
    /// `fsync_interval`: survives a crash of sluice, not of the machine) or `never` (the
    /// operating system decides).
    pub fsync: FsyncPolicy,
    /// With `fsync: interval`: how often (default `1s`).
    pub fsync_interval: HumanDuration,
}

/// Where a sending queue keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// In memory: lost when the process stops.
    #[default]
    Memory,
    /// In an append-only, checksummed log on disk.
    File,
}

/// What a full persistent queue does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Refuse new data with a retryable error.
    #[default]
    Refuse,
    /// Drop the oldest data, counted.
    DropOldest,
}

/// When a persistent queue syncs to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Before acknowledging each request (grouped across concurrent requests).
    #[default]
    Always,
    /// Every `fsync_interval`.
    Interval,
    /// Never explicitly.
    Never,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            enabled: true,
            num_consumers: 10,
            queue_size: ByteSize(1000),
            sizer: Sizer::Requests,
            storage: Storage::Memory,
            directory: None,
            max_bytes: ByteSize(1 << 30),
            on_full: OnFull::Refuse,
            fsync: FsyncPolicy::Always,
            fsync_interval: HumanDuration::from_secs(1),
        }
    }
}

impl QueueSettings {
    /// Whether this is a persistent queue.
    pub fn is_persistent(&self) -> bool {
        self.enabled && self.storage == Storage::File
    }
}

/// The helper settings every exporter config carries (`timeout`, `retry_on_failure`, `sending_queue`).
#[derive(Debug, Clone)]
pub struct HelperSettings {
    /// Longest a single export attempt may take.
    pub timeout: Duration,
    /// Retry behaviour.
    pub retry: RetrySettings,
    /// Queue behaviour.
    pub queue: QueueSettings,
}

/// The Collector's per-attempt export timeout (`5s`), the default `timeout` of exporters.
pub fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}

impl Default for HelperSettings {
    /// The Collector's defaults: a `5s` timeout, its retries, a memory queue.
    fn default() -> Self {
        HelperSettings {
            timeout: default_timeout().get(),
            retry: RetrySettings::default(),
            queue: QueueSettings::default(),
        }
    }
}

/// The keys of an exporter's config that belong to the exporter helper.
pub const HELPER_KEYS: [&str; 3] = ["timeout", "retry_on_failure", "sending_queue"];

impl HelperSettings {
    /// Parses the helper's keys (`timeout`, `retry_on_failure`, `sending_queue`) out of an
    /// exporter's config, over `defaults`, and checks them: what every exporter with a queue
    /// shares, parsed once, here. Returns the settings and the config without those keys, for
    /// the exporter's own parsing.
    ///
    /// # Errors
    /// Every problem found, with its path under `path`.
    pub fn parse(
        path: &str,
        config: &serde_json::Value,
        defaults: HelperSettings,
    ) -> Result<(HelperSettings, serde_json::Value), Vec<Problem>> {
        let mut rest = config.clone();
        let mut settings = defaults;
        let mut problems = Vec::new();
        if let Some(object) = rest.as_object_mut() {
            if let Some(value) = object.remove("timeout") {
                match sluice_config::component_config::<HumanDuration>(
                    &format!("{path}.timeout"),
                    &value,
                ) {
                    Ok(timeout) => settings.timeout = timeout.get(),
                    Err(problem) => problems.push(problem),
                }
            }
            if let Some(value) = object.remove("retry_on_failure") {
                match sluice_config::component_config(&format!("{path}.retry_on_failure"), &value) {
                    Ok(retry) => settings.retry = retry,
                    Err(problem) => problems.push(problem),
                }
            }
            if let Some(value) = object.remove("sending_queue") {
                match sluice_config::component_config(&format!("{path}.sending_queue"), &value) {
                    Ok(queue) => settings.queue = queue,
                    Err(problem) => problems.push(problem),
                }
            }
        }
        if problems.is_empty() {
            problems = settings.check(path);
        }
        if problems.is_empty() {
            Ok((settings, rest))
        } else {
            Err(problems)
        }
    }

    /// Checks the settings; `path` is the exporter's path in the file.
    pub fn check(&self, path: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let r = &self.retry;
        if r.enabled {
            if r.initial_interval.is_zero() {
                problems.push(Problem::error(
                    format!("{path}.retry_on_failure.initial_interval"),
                    "must be greater than zero",
                ));
            }
            if r.max_interval < r.initial_interval {
                problems.push(Problem::error(
                    format!("{path}.retry_on_failure.max_interval"),
                    "must not be less than initial_interval",
                ));
            }
            if !(r.multiplier >= 1.0 && r.multiplier.is_finite()) {
                problems.push(Problem::error(
                    format!("{path}.retry_on_failure.multiplier"),
                    "must be at least 1",
                ));
            }
            if !(0.0..1.0).contains(&r.randomization_factor) {
                problems.push(Problem::error(
                    format!("{path}.retry_on_failure.randomization_factor"),
                    "must be at least 0 and less than 1",
                ));
            }
        }
        let q = &self.queue;
        if q.enabled && q.num_consumers == 0 {
            problems.push(Problem::error(
                format!("{path}.sending_queue.num_consumers"),
                "must be at least 1",
            ));
        }
        if q.enabled && q.queue_size.bytes() == 0 {
            problems.push(Problem::error(
                format!("{path}.sending_queue.queue_size"),
                "must be at least 1",
            ));
        }
        if q.storage == Storage::File {
            if !q.enabled {
                problems.push(Problem::error(
                    format!("{path}.sending_queue.storage"),
                    "`file` needs the queue enabled",
                ));
            }
            match &q.directory {
                None => problems.push(Problem::error(
                    format!("{path}.sending_queue.directory"),
                    "is required with `storage: file`",
                )),
                Some(dir) if dir.as_os_str().is_empty() => problems.push(Problem::error(
                    format!("{path}.sending_queue.directory"),
                    "must not be empty",
                )),
                Some(_) => {}
            }
            if q.max_bytes.bytes() < 1 << 20 {
                problems.push(Problem::error(
                    format!("{path}.sending_queue.max_bytes"),
                    "must be at least 1MiB",
                ));
            }
            if q.fsync == FsyncPolicy::Interval && q.fsync_interval.is_zero() {
                problems.push(Problem::error(
                    format!("{path}.sending_queue.fsync_interval"),
                    "must be greater than zero",
                ));
            }
        } else if q.directory.is_some() {
            problems.push(Problem::warning(
                format!("{path}.sending_queue.directory"),
                "is ignored without `storage: file`",
            ));
        }
        if self.timeout.is_zero() {
            problems.push(Problem::error(
                format!("{path}.timeout"),
                "must be greater than zero",
            ));
        }
        problems
    }
}

struct Metrics {
    sent: Counter,
    send_failed: Counter,
    enqueue_failed: Counter,
    queue_size: Gauge,
    in_flight: Gauge,
}

impl Metrics {
    fn new(id: &str, signal: Signal, settings: &QueueSettings) -> Self {
        let exporter = id.to_owned();
        let data_type = signal.as_str();
        let capacity = metrics::gauge!(names::EXPORTER_QUEUE_CAPACITY, "exporter" => exporter.clone(), "data_type" => data_type);
        capacity.set(if settings.is_persistent() {
            settings.max_bytes.bytes() as f64
        } else if settings.enabled {
            settings.queue_size.bytes() as f64
        } else {
            0.0
        });
        Metrics {
            sent: metrics::counter!(names::exporter_sent(signal), "exporter" => exporter.clone()),
            send_failed: metrics::counter!(names::exporter_send_failed(signal), "exporter" => exporter.clone()),
            enqueue_failed: metrics::counter!(names::exporter_enqueue_failed(signal), "exporter" => exporter.clone()),
            queue_size: metrics::gauge!(names::EXPORTER_QUEUE_SIZE, "exporter" => exporter.clone(), "data_type" => data_type),
            in_flight: metrics::gauge!(names::EXPORTER_IN_FLIGHT, "exporter" => exporter),
        }
    }
}

/// Logs a repeated warning at most once per interval, counting what it suppressed.
struct Throttle {
    last: std::sync::Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    const INTERVAL: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Throttle {
            last: std::sync::Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Returns how many were suppressed since the last log when it is time to log again.
    fn ready(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Self::INTERVAL) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

struct QueueState {
    batches: VecDeque<Batch>,
    size: u64,
    closed: bool,
}

struct Shared {
    id: String,
    signal: Signal,
    exporter: Arc<dyn ErasedExporter>,
    settings: HelperSettings,
    metrics: Metrics,
    state: std::sync::Mutex<QueueState>,
    notify: Notify,
    /// Cancelled when the drain deadline passes: in-flight retries stop.
    abort: CancellationToken,
    retry_log: Throttle,
    full_log: Throttle,
    failed_log: Throttle,
    /// Set when an attempt fails, cleared when one succeeds: the backend is unreachable or
    /// refusing, and data is waiting or being dropped.
    degraded: std::sync::atomic::AtomicBool,
    /// With a persistent queue: this exporter's readers of the pipelines' disk logs, each with
    /// the processors its pipeline runs after the log.
    readers: std::sync::Mutex<Vec<(Reader, Chain)>>,
    /// Cancelled by [`ExporterHelper::close`]: persistent-queue workers stop waiting for new
    /// records and exit once they have sent what is on disk.
    closing: CancellationToken,
}

/// Drives one exporter for one signal: the [`Consumer`] a pipeline's fan-out hands batches to.
pub struct ExporterHelper {
    shared: Arc<Shared>,
}

impl ExporterHelper {
    /// Wraps an exporter. Call [`ExporterHelper::start`] to run its queue workers.
    pub fn new(
        id: impl Into<String>,
        signal: Signal,
        exporter: Arc<dyn ErasedExporter>,
        settings: HelperSettings,
    ) -> Arc<Self> {
        let id = id.into();
        let metrics = Metrics::new(&id, signal, &settings.queue);
        Arc::new(ExporterHelper {
            shared: Arc::new(Shared {
                id,
                signal,
                exporter,
                settings,
                metrics,
                state: std::sync::Mutex::new(QueueState {
                    batches: VecDeque::new(),
                    size: 0,
                    closed: false,
                }),
                notify: Notify::new(),
                abort: CancellationToken::new(),
                retry_log: Throttle::new(),
                full_log: Throttle::new(),
                failed_log: Throttle::new(),
                degraded: std::sync::atomic::AtomicBool::new(false),
                readers: std::sync::Mutex::new(Vec::new()),
                closing: CancellationToken::new(),
            }),
        })
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &HelperSettings {
        &self.shared.settings
    }

    /// Feeds this exporter from a pipeline's persistent queue (call before [`start`]): its
    /// workers read records from the log, send them in batches and acknowledge them.
    ///
    /// [`start`]: ExporterHelper::start
    pub fn attach(&self, reader: Reader, chain: Chain) {
        self.shared
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((reader, chain));
    }

    /// Starts the queue workers (none when the queue is disabled).
    pub fn start(&self) -> Vec<JoinHandle<()>> {
        if !self.shared.settings.queue.enabled {
            return Vec::new();
        }
        let readers = self
            .shared
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if !readers.is_empty() {
            let mut tasks: Vec<JoinHandle<()>> = readers
                .iter()
                .flat_map(|reader| {
                    (0..self.shared.settings.queue.num_consumers).map(move |_| reader.clone())
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|(reader, chain)| {
                    tokio::spawn(durable_worker(Arc::clone(&self.shared), reader, chain))
                })
                .collect();
            tasks.push(tokio::spawn(durable_gauge(
                Arc::clone(&self.shared),
                readers.into_iter().map(|(reader, _)| reader).collect(),
            )));
            return tasks;
        }
        (0..self.shared.settings.queue.num_consumers)
            .map(|_| tokio::spawn(worker(Arc::clone(&self.shared))))
            .collect()
    }

    /// Stops taking new data; the workers send what is queued and then exit.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.closing.cancel();
        self.shared.notify.notify_waiters();
    }

    /// Called when the drain deadline passed: stops retries and drops what is still queued,
    /// counting it as failed. Returns the number of items dropped from the queue.
    pub fn abort(&self) -> usize {
        self.shared.abort.cancel();
        if self.shared.settings.queue.is_persistent() {
            // Nothing is dropped: unacknowledged records stay on disk for the next start.
            let pending: u64 = self
                .shared
                .readers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|(reader, _)| reader.pending_items())
                .sum();
            tracing::info!(exporter = %self.shared.id, signal = %self.shared.signal, items = pending, "shutdown deadline passed; the persistent queue keeps what was not sent for the next start");
            return 0;
        }
        let dropped: Vec<Batch> = {
            let mut state = self.shared.lock();
            state.size = 0;
            state.batches.drain(..).collect()
        };
        self.shared.metrics.queue_size.set(0.0);
        self.shared.notify.notify_waiters();
        let items: usize = dropped.iter().map(Batch::items).sum();
        if items > 0 {
            self.shared.metrics.send_failed.increment(items as u64);
            tracing::error!(exporter = %self.shared.id, signal = %self.shared.signal, items, "shutdown deadline passed, queued data dropped");
        }
        items
    }

    /// The number of batches waiting.
    pub fn queued(&self) -> usize {
        self.shared.lock().batches.len()
    }

    /// The exporter's id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The signal this helper exports.
    pub fn signal(&self) -> Signal {
        self.shared.signal
    }

    /// Whether the last export attempt failed (and none succeeded since).
    pub fn is_degraded(&self) -> bool {
        self.shared.degraded.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn size_of(&self, batch: &Batch) -> u64 {
        match self.settings.queue.sizer {
            Sizer::Requests => 1,
            Sizer::Items => batch.items() as u64,
            Sizer::Bytes => batch.size() as u64,
        }
    }

    /// Sends with retries. Returns the error that ended the attempts, with the items it lost.
    ///
    /// When the exporter refuses a batch permanently and some of its items would not decode
    /// (the intake refuses such items, so this is defence in depth), those items are dropped
    /// and counted, and the rest is sent: one bad item never takes its batch along.
    async fn send(&self, batch: &Batch) -> Result<(), (ExportError, usize)> {
        let retry = &self.settings.retry;
        let mut salvaged: Option<Batch> = None;
        // Encoded by the first attempt and sent again by every retry.
        let mut encoded: Option<AnyEncoded> = None;
        let started = tokio::time::Instant::now();
        let mut interval = retry.initial_interval.get();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let batch = salvaged.as_ref().unwrap_or(batch);
            let lost = batch.items();
            self.metrics.in_flight.increment(1.0);
            let outcome = tokio::select! {
                r = tokio::time::timeout(self.settings.timeout, self.attempt(batch, &mut encoded)) => r,
                () = self.abort.cancelled() => {
                    self.metrics.in_flight.decrement(1.0);
                    return Err((ExportError::permanent("shutdown deadline passed during export"), lost));
                }
            };
            self.metrics.in_flight.decrement(1.0);
            let err = match outcome {
                Ok(Ok(())) => {
                    self.degraded.store(false, Ordering::Relaxed);
                    self.metrics.sent.increment(batch.items() as u64);
                    return Ok(());
                }
                Ok(Err(err)) => err,
                Err(_) => ExportError::retryable(format!(
                    "export timed out after {:?}",
                    self.settings.timeout
                )),
            };
            if !err.retryable
                && salvaged.is_none()
                && let Some((kept, dropped)) = without_undecodable(batch).await
            {
                self.metrics.send_failed.increment(dropped as u64);
                tracing::error!(exporter = %self.id, signal = %self.signal, items = dropped, error = %err.message, "items that do not decode dropped; sending the rest of the batch");
                salvaged = Some(kept);
                encoded = None;
                continue;
            }
            self.degraded.store(true, Ordering::Relaxed);
            if !err.retryable || !retry.enabled {
                return Err((err, lost));
            }
            let pause = jittered(interval, retry.randomization_factor)
                .max(err.retry_after.unwrap_or_default());
            let max_elapsed = retry.max_elapsed_time.get();
            if !max_elapsed.is_zero() && started.elapsed() + pause > max_elapsed {
                return Err((
                    ExportError::permanent(format!(
                        "no more retries left after {attempt} attempts over {:?}: {}",
                        started.elapsed(),
                        err.message
                    )),
                    lost,
                ));
            }
            if let Some(suppressed) = self.retry_log.ready() {
                tracing::warn!(exporter = %self.id, signal = %self.signal, error = %err.message, attempt, retry_in = ?pause, suppressed, "export failed, will retry");
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.abort.cancelled() => {
                    return Err((ExportError::permanent(format!("shutdown deadline passed while retrying: {}", err.message)), lost));
                }
            }
            interval = interval
                .mul_f64(retry.multiplier)
                .min(retry.max_interval.get());
        }
    }

    /// One attempt: encodes the batch unless an earlier attempt did, then sends it.
    async fn attempt(
        &self,
        batch: &Batch,
        encoded: &mut Option<AnyEncoded>,
    ) -> Result<(), ExportError> {
        if encoded.is_none() {
            let (exporter, work) = (Arc::clone(&self.exporter), batch.clone());
            *encoded = Some(
                crate::blocking::off_workers(batch.size(), ENCODE_OFF_WORKERS_ABOVE, move || {
                    exporter.encode_any(&work)
                })
                .await
                .ok_or_else(|| ExportError::permanent("encoding failed: the encoder panicked"))??,
            );
        }
        match encoded {
            Some(encoded) => self.exporter.send_any(encoded).await,
            None => Err(ExportError::permanent("nothing was encoded")),
        }
    }

    fn failed(&self, items: usize, err: &ExportError) {
        self.metrics.send_failed.increment(items as u64);
        // Every drop is counted; the log says so once per burst, with how many it folded in.
        if let Some(suppressed) = self.failed_log.ready() {
            tracing::error!(exporter = %self.id, signal = %self.signal, items, error = %err.message, permanent = !err.retryable, suppressed, "export failed, data dropped");
        }
    }
}

/// [`Batch::without_undecodable`], on the blocking pool for large batches.
async fn without_undecodable(batch: &Batch) -> Option<(Batch, usize)> {
    let work = batch.clone();
    crate::blocking::off_workers(
        batch.size(),
        crate::wire::CHECK_OFF_WORKERS_ABOVE,
        move || work.without_undecodable(),
    )
    .await
    .flatten()
}

fn jittered(interval: Duration, factor: f64) -> Duration {
    if factor <= 0.0 {
        return interval;
    }
    let spread = rand::random_range(-factor..=factor);
    interval.mul_f64((1.0 + spread).max(0.0))
}

async fn worker(shared: Arc<Shared>) {
    loop {
        let next = {
            let mut state = shared.lock();
            match state.batches.pop_front() {
                Some(batch) => {
                    state.size = state.size.saturating_sub(shared.size_of(&batch));
                    shared.metrics.queue_size.set(state.size as f64);
                    Some(batch)
                }
                None if state.closed || shared.abort.is_cancelled() => return,
                None => None,
            }
        };
        match next {
            Some(batch) => {
                if let Err((err, lost)) = shared.send(&batch).await {
                    shared.failed(lost, &err);
                }
            }
            None => {
                // Register interest before re-checking, so a push between the check and the
                // wait is not missed.
                let notified = shared.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let empty = {
                    let state = shared.lock();
                    state.batches.is_empty() && !state.closed
                };
                if empty && !shared.abort.is_cancelled() {
                    notified.await;
                }
            }
        }
    }
}

/// Largest batch a persistent-queue worker sends: consecutive records are merged up to this
/// many items or bytes (whichever comes first). Bounds the memory each worker holds, outside the
/// memory limiter's accounting.
const DURABLE_BATCH_ITEMS: u64 = 8192;
const DURABLE_BATCH_BYTES: u64 = 2 << 20;

/// A persistent-queue worker: reads runs of records, sends each run as one batch (records are
/// whole OTLP requests, so merging is concatenation), and acknowledges them once delivered or
/// dropped as permanently failed. A send cut short by shutdown is not acknowledged: the records
/// are sent again after the next start.
async fn durable_worker(shared: Arc<Shared>, reader: Reader, chain: Chain) {
    let mut read_errors = 0u32;
    loop {
        let next = if shared.closing.is_cancelled() {
            reader
                .try_next(DURABLE_BATCH_ITEMS, DURABLE_BATCH_BYTES)
                .await
        } else {
            tokio::select! {
                next = reader.next(DURABLE_BATCH_ITEMS, DURABLE_BATCH_BYTES) => next,
                () = shared.closing.cancelled() => continue,
            }
        };
        let records = match next {
            Ok(Some(batch)) => batch,
            Ok(None) => return,
            Err(err) => {
                read_errors += 1;
                if read_errors == 1 || read_errors.is_multiple_of(100) {
                    tracing::error!(exporter = %shared.id, error = %err, read_errors, "cannot read the persistent queue, will retry");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        read_errors = 0;
        let items: u64 = records.items();
        let data = if records.records.len() == 1 {
            records.records[0].payload.clone()
        } else {
            let mut joined = bytes::BytesMut::with_capacity(records.bytes() as usize);
            for record in &records.records {
                joined.extend_from_slice(&record.payload);
            }
            joined.freeze()
        };
        let batch = Batch::from_trusted(shared.signal, data, items as usize);
        let outcome = match processed(&shared, &chain, batch).await {
            Some(batch) => shared.send(&batch).await,
            // Nothing left to send (a filter dropped it all, or a processor refused it for good).
            None => Ok(()),
        };
        if shared.abort.is_cancelled() && outcome.is_err() {
            // Cut short by the shutdown deadline: left on disk, not acknowledged.
            return;
        }
        if let Err((err, lost)) = outcome {
            shared.failed(lost, &err);
        }
        for record in &records.records {
            reader.ack(record.seq);
        }
    }
}

/// Runs what a persistent-queue worker read through the pipeline's processors after the log,
/// retrying while one refuses for now (a memory limiter under pressure); `None` when nothing is
/// left to send, counted as failed when a processor refused it for good.
async fn processed(shared: &Shared, chain: &Chain, batch: Batch) -> Option<Batch> {
    if chain.is_empty() {
        return Some(batch);
    }
    let mut pause = Duration::from_millis(50);
    loop {
        match chain.run(batch.clone()).await {
            Ok(out) => return out,
            Err(err) if err.is_retryable() && !shared.abort.is_cancelled() => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(err) => {
                shared.failed(
                    batch.items(),
                    &ExportError::permanent(format!(
                        "a processor refused the batch: {}",
                        err.message
                    )),
                );
                return None;
            }
        }
    }
}

/// Keeps `otelcol_exporter_queue_size` at the bytes the exporter's persistent queue holds on
/// disk (its capacity is `max_bytes`, so the two make a fill ratio), also while its workers are
/// stuck retrying.
async fn durable_gauge(shared: Arc<Shared>, readers: Vec<Reader>) {
    loop {
        let bytes: u64 = readers.iter().map(Reader::bytes_on_disk).sum();
        shared.metrics.queue_size.set(bytes as f64);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = shared.closing.cancelled() => return,
        }
    }
}

#[async_trait]
impl Consumer for ExporterHelper {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let shared = &self.shared;
        if !shared.settings.queue.enabled {
            return match shared.send(&batch).await {
                Ok(()) => Ok(()),
                Err((err, lost)) => {
                    shared.failed(lost, &err);
                    Err(if err.retryable {
                        ConsumeError::unavailable(format!(
                            "exporter {}: {}",
                            shared.id, err.message
                        ))
                    } else {
                        ConsumeError::internal(format!("exporter {}: {}", shared.id, err.message))
                    })
                }
            };
        }
        let size = shared.size_of(&batch);
        let items = batch.items();
        {
            let mut state = shared.lock();
            if state.closed {
                drop(state);
                shared.metrics.enqueue_failed.increment(items as u64);
                return Err(ConsumeError::unavailable(format!(
                    "exporter {} is shutting down",
                    shared.id
                )));
            }
            // An empty queue takes any one batch, so a batch larger than a bytes-sized queue is
            // not refused forever.
            if !state.batches.is_empty()
                && state.size.saturating_add(size) > shared.settings.queue.queue_size.bytes()
            {
                drop(state);
                shared.metrics.enqueue_failed.increment(items as u64);
                if let Some(suppressed) = shared.full_log.ready() {
                    tracing::warn!(exporter = %shared.id, signal = %shared.signal, items, suppressed, "sending queue is full, data refused");
                }
                return Err(ConsumeError::unavailable(format!(
                    "sending queue of exporter {} is full",
                    shared.id
                )));
            }
            state.size += size;
            state.batches.push_back(batch);
            shared.metrics.queue_size.set(state.size as f64);
        }
        shared.notify.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Flaky {
        failures_left: Mutex<u32>,
        retryable: bool,
        encodes: AtomicU64,
        calls: AtomicU64,
        delivered: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl Exporter for Flaky {
        type Encoded = usize;

        fn encode(&self, batch: &Batch) -> Result<usize, ExportError> {
            self.encodes.fetch_add(1, Ordering::Relaxed);
            Ok(batch.items())
        }

        async fn send(&self, items: &usize) -> Result<(), ExportError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let mut left = self.failures_left.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(if self.retryable {
                    ExportError::retryable("backend down")
                } else {
                    ExportError::permanent("bad data")
                });
            }
            self.delivered.lock().unwrap().push(*items);
            Ok(())
        }
    }

    fn flaky(failures: u32, retryable: bool) -> Arc<Flaky> {
        Arc::new(Flaky {
            failures_left: Mutex::new(failures),
            retryable,
            encodes: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            delivered: Mutex::new(Vec::new()),
        })
    }

    fn settings(queue: bool) -> HelperSettings {
        HelperSettings {
            timeout: Duration::from_secs(5),
            retry: RetrySettings {
                initial_interval: HumanDuration::from_millis(100),
                max_interval: HumanDuration::from_secs(1),
                max_elapsed_time: HumanDuration::from_secs(60),
                ..Default::default()
            },
            queue: QueueSettings {
                enabled: queue,
                num_consumers: 1,
                queue_size: ByteSize(2),
                sizer: Sizer::Requests,
                ..Default::default()
            },
        }
    }

    fn batch(items: usize) -> Batch {
        Batch::from_trusted(Signal::Traces, bytes::Bytes::new(), items)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_failures_until_delivered() {
        let exporter = flaky(3, true);
        let helper = ExporterHelper::new("otlp", Signal::Traces, exporter.clone(), settings(false));
        helper.consume(batch(5)).await.unwrap();
        assert_eq!(exporter.calls.load(Ordering::Relaxed), 4);
        assert_eq!(
            exporter.encodes.load(Ordering::Relaxed),
            1,
            "retries send the first encoding again"
        );
        assert_eq!(*exporter.delivered.lock().unwrap(), [5]);
    }

    #[tokio::test(start_paused = true)]
    async fn degraded_while_failing_and_healthy_after_a_success() {
        let exporter = flaky(2, true);
        let helper = ExporterHelper::new("otlp", Signal::Traces, exporter, settings(true));
        assert!(!helper.is_degraded());
        helper.consume(batch(1)).await.unwrap();
        let workers = helper.start();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(helper.is_degraded(), "first attempt failed");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!helper.is_degraded(), "a later attempt succeeded");
        helper.close();
        for w in workers {
            w.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried() {
        let exporter = flaky(1, false);
        let helper = ExporterHelper::new("otlp", Signal::Traces, exporter.clone(), settings(false));
        let err = helper.consume(batch(5)).await.unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!(exporter.calls.load(Ordering::Relaxed), 1);
    }

    /// Decodes every batch with prost, as the jaeger, postgres, prometheus and debug exporters do.
    struct Decoding {
        delivered: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Exporter for Decoding {
        type Encoded = Vec<String>;

        fn encode(&self, batch: &Batch) -> Result<Vec<String>, ExportError> {
            use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
            use prost::Message;
            let request = ExportTraceServiceRequest::decode(batch.data().clone())
                .map_err(|e| ExportError::permanent(format!("cannot decode batch: {e}")))?;
            Ok(request
                .resource_spans
                .into_iter()
                .flat_map(|rs| rs.scope_spans)
                .flat_map(|ss| ss.spans)
                .map(|s| s.name)
                .collect())
        }

        async fn send(&self, names: &Vec<String>) -> Result<(), ExportError> {
            self.delivered.lock().unwrap().extend(names.iter().cloned());
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_undecodable_item_is_dropped_alone_not_its_batch() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        use prost::Message;
        let request = |name: &str| {
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span {
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            name: name.to_owned(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        };
        // Two clients' spans merged into one batch; the second one's name is not UTF-8.
        let mut data = request("kept");
        let mut bad = request("XXbad");
        let at = bad.windows(5).position(|w| w == b"XXbad").unwrap();
        bad[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
        data.extend_from_slice(&bad);
        let exporter = Arc::new(Decoding {
            delivered: Mutex::new(Vec::new()),
        });
        let helper =
            ExporterHelper::new("debug", Signal::Traces, exporter.clone(), settings(false));
        helper
            .consume(Batch::from_trusted(Signal::Traces, data.into(), 2))
            .await
            .unwrap();
        assert_eq!(*exporter.delivered.lock().unwrap(), ["kept"]);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_elapsed_time() {
        let exporter = flaky(u32::MAX, true);
        let helper = ExporterHelper::new("otlp", Signal::Traces, exporter.clone(), settings(false));
        let started = tokio::time::Instant::now();
        let err = helper.consume(batch(1)).await.unwrap_err();
        assert!(err.message.contains("no more retries"), "{}", err.message);
        assert!(started.elapsed() <= Duration::from_secs(60));
        assert!(exporter.calls.load(Ordering::Relaxed) > 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_with_a_retryable_error_and_drains_later() {
        let exporter = flaky(2, true);
        let helper = ExporterHelper::new("otlp", Signal::Traces, exporter.clone(), settings(true));
        helper.consume(batch(1)).await.unwrap();
        helper.consume(batch(2)).await.unwrap();
        let err = helper.consume(batch(3)).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        let workers = helper.start();
        helper.close();
        for w in workers {
            w.await.unwrap();
        }
        assert_eq!(*exporter.delivered.lock().unwrap(), [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn abort_drops_and_counts_what_is_queued() {
        let exporter = flaky(u32::MAX, true);
        let helper = ExporterHelper::new("otlp", Signal::Traces, exporter, settings(true));
        helper.consume(batch(4)).await.unwrap();
        helper.consume(batch(6)).await.unwrap();
        assert_eq!(helper.abort(), 10);
        assert_eq!(helper.queued(), 0);
    }

    #[test]
    fn jitter_stays_within_the_randomization_factor() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(10), 0.5);
            assert!(
                d >= Duration::from_secs(5) && d <= Duration::from_secs(15),
                "{d:?}"
            );
        }
    }

    #[test]
    fn persistent_queue_settings_are_checked() {
        let queue: QueueSettings = serde_json::from_value(serde_json::json!({
            "storage": "file", "max_bytes": 1000, "fsync": "interval", "fsync_interval": 0
        }))
        .unwrap();
        assert!(queue.is_persistent());
        let settings = HelperSettings {
            timeout: Duration::from_secs(5),
            retry: RetrySettings::default(),
            queue,
        };
        let problems: Vec<String> = settings
            .check("exporters.otlp")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "error: exporters.otlp.sending_queue.directory: is required with `storage: file`",
                "error: exporters.otlp.sending_queue.max_bytes: must be at least 1MiB",
                "error: exporters.otlp.sending_queue.fsync_interval: must be greater than zero",
            ]
        );
        let memory: QueueSettings =
            serde_json::from_value(serde_json::json!({"directory": "/tmp/q"})).unwrap();
        assert!(!memory.is_persistent());
        let settings = HelperSettings {
            queue: memory,
            ..settings
        };
        let problems: Vec<String> = settings
            .check("e")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            ["warning: e.sending_queue.directory: is ignored without `storage: file`"]
        );
        let bad = serde_json::from_value::<QueueSettings>(serde_json::json!({"on_full": "block"}));
        assert!(bad.is_err());
    }
}
