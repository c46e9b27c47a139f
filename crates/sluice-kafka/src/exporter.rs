//! The `kafka` exporter: each batch becomes records on the signal's topic (`otlp_proto` or
//! `otlp_json`), keyed by trace id or by resource when asked, split by items to stay under
//! `producer.max_message_bytes`. The batch is acknowledged upstream only once the broker has
//! acknowledged every record with `producer.required_acks`; a retry resends only the records the
//! broker did not take.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use serde_json::Value;
use sluice_config::{HumanDuration, Problem};
use sluice_core::view::{Context as ItemContext, Item, Resource};
use sluice_core::{
    Batch, BuildError, ExportError, Exporter, HelperSettings, Signal, check_typed,
    metrics as names, typed, wire,
};
use sluice_core::{BuiltExporter, ExporterFactory};

use crate::client::{ClientConfig, Context, rd_config};

/// `traces`, `metrics`, `logs`: where and how one signal is written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalTopic {
    /// The topic (defaults `otlp_spans`, `otlp_metrics`, `otlp_logs`).
    pub topic: Option<String>,
    /// `otlp_proto` (default) or `otlp_json`.
    pub encoding: Option<String>,
    /// Not supported by sluice (request metadata does not reach exporters): refused when set.
    pub topic_from_metadata_key: String,
    /// Not supported by sluice: refused when set.
    pub message_key_from_metadata_key: String,
}

/// `producer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerConfig {
    /// Largest record, before compression (default 1000000): larger batches are split by items.
    pub max_message_bytes: u64,
    /// Largest request to one broker (default 100 MiB).
    pub max_broker_write_bytes: u64,
    /// `0`, `1` (default) or `-1` (all in-sync replicas).
    pub required_acks: i16,
    /// `none` (default), `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    /// `level` of the compression (`-1`: the codec's default).
    pub compression_params: CompressionParams,
    /// Most records in one request to a broker (default 10000).
    pub flush_max_messages: u32,
    /// Whether the broker may create a topic that does not exist (default true).
    pub allow_auto_topic_creation: bool,
    /// How long records wait to fill a request (default 10ms).
    pub linger: HumanDuration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            max_message_bytes: 1_000_000,
            max_broker_write_bytes: 100 << 20,
            required_acks: 1,
            compression: "none".to_owned(),
            compression_params: CompressionParams::default(),
            flush_max_messages: 10_000,
            allow_auto_topic_creation: true,
            linger: HumanDuration::from_millis(10),
        }
    }
}

/// `producer.compression_params`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionParams {
    /// The level; `-1` is the codec's default.
    pub level: i32,
}

impl Default for CompressionParams {
    fn default() -> Self {
        CompressionParams { level: -1 }
    }
}

/// `record_partitioner`: how a keyed record picks its partition.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordPartitioner {
    /// A key always goes to the same partition (the default).
    pub sticky_key: Option<StickyKey>,
    /// Not supported by sluice: refused.
    pub round_robin: Option<Value>,
    /// Not supported by sluice: refused.
    pub least_backup: Option<Value>,
    /// Not supported by sluice: refused.
    pub extension: Option<Value>,
}

/// `record_partitioner.sticky_key`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StickyKey {
    /// `sarama_compat` (FNV-1a, the default) or `murmur2` (the Java client's).
    pub hasher: Option<String>,
}

/// The `kafka` exporter's config: the Collector's keys. `timeout`, `retry_on_failure` and
/// `sending_queue` are core's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct KafkaExporterConfig {
    /// Brokers, client id, TLS, SASL, metadata.
    #[serde(flatten)]
    pub client: ClientConfig,
    /// Deprecated: the topic of every signal without its own.
    pub topic: Option<String>,
    /// Deprecated: the encoding of every signal without its own.
    pub encoding: Option<String>,
    /// Where spans go.
    pub traces: SignalTopic,
    /// Where metrics go.
    pub metrics: SignalTopic,
    /// Where logs go.
    pub logs: SignalTopic,
    /// Not supported (profiles are not a sluice signal): refused.
    pub profiles: Option<Value>,
    /// Not supported by sluice: refused when set.
    pub topic_from_attribute: String,
    /// Not supported by sluice (request metadata does not reach exporters): refused when set.
    pub include_metadata_keys: Vec<String>,
    /// Headers set on every record.
    pub record_headers: BTreeMap<String, String>,
    /// Key each trace's record by its trace id (hex), so that all its spans share a partition.
    pub partition_traces_by_id: bool,
    /// Key metrics by a hash of their resource's attributes.
    pub partition_metrics_by_resource_attributes: bool,
    /// Key logs by a hash of their resource's attributes.
    pub partition_logs_by_resource_attributes: bool,
    /// Key logs by their trace id.
    pub partition_logs_by_trace_id: bool,
    /// How keys choose partitions.
    pub record_partitioner: Option<RecordPartitioner>,
    /// Producer settings.
    pub producer: ProducerConfig,
    /// Keys this config does not know, refused by `check`.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

const ENCODINGS: &[&str] = &["otlp_proto", "otlp_json"];

impl KafkaExporterConfig {
    fn topic(&self, signal: Signal) -> String {
        let (own, default) = match signal {
            Signal::Traces => (&self.traces, "otlp_spans"),
            Signal::Metrics => (&self.metrics, "otlp_metrics"),
            Signal::Logs => (&self.logs, "otlp_logs"),
        };
        own.topic
            .clone()
            .or_else(|| self.topic.clone())
            .unwrap_or_else(|| default.to_owned())
    }

    fn json(&self, signal: Signal) -> bool {
        let own = match signal {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        };
        own.encoding
            .as_ref()
            .or(self.encoding.as_ref())
            .map(String::as_str)
            == Some("otlp_json")
    }

    /// Every problem, each with its path.
    pub fn check(&self, path: &str) -> Vec<Problem> {
        let mut p = self.client.check(path);
        for key in self.unknown.keys() {
            p.push(Problem::error(format!("{path}.{key}"), "unknown key"));
        }
        let mut encoding = |at: String, e: &Option<String>| {
            if let Some(e) = e
                && !ENCODINGS.contains(&e.as_str())
            {
                p.push(Problem::error(
                    at,
                    format!("encoding {e:?} is not supported by sluice: otlp_proto or otlp_json"),
                ));
            }
        };
        encoding(format!("{path}.encoding"), &self.encoding);
        for (name, s) in [
            ("traces", &self.traces),
            ("metrics", &self.metrics),
            ("logs", &self.logs),
        ] {
            encoding(format!("{path}.{name}.encoding"), &s.encoding);
        }
        for (name, s) in [
            ("traces", &self.traces),
            ("metrics", &self.metrics),
            ("logs", &self.logs),
        ] {
            if s.topic.as_deref() == Some("") {
                p.push(Problem::error(
                    format!("{path}.{name}.topic"),
                    "a topic cannot be empty",
                ));
            }
            for (key, v) in [
                ("topic_from_metadata_key", &s.topic_from_metadata_key),
                (
                    "message_key_from_metadata_key",
                    &s.message_key_from_metadata_key,
                ),
            ] {
                if !v.is_empty() {
                    p.push(Problem::error(
                        format!("{path}.{name}.{key}"),
                        "not supported by sluice: request metadata does not reach exporters",
                    ));
                }
            }
        }
        if self.profiles.is_some() {
            p.push(Problem::error(
                format!("{path}.profiles"),
                "profiles are not a signal sluice carries",
            ));
        }
        if !self.topic_from_attribute.is_empty() {
            p.push(Problem::error(
                format!("{path}.topic_from_attribute"),
                "not supported by sluice: route by attribute with the routing connector to kafka exporters with their own topics",
            ));
        }
        if !self.include_metadata_keys.is_empty() {
            p.push(Problem::error(
                format!("{path}.include_metadata_keys"),
                "not supported by sluice: request metadata does not reach exporters",
            ));
        }
        if self.partition_logs_by_resource_attributes && self.partition_logs_by_trace_id {
            p.push(Problem::error(
                format!("{path}.partition_logs_by_trace_id"),
                "partition_logs_by_resource_attributes and partition_logs_by_trace_id are mutually exclusive",
            ));
        }
        if let Some(r) = &self.record_partitioner {
            let set = [
                r.sticky_key.is_some(),
                r.round_robin.is_some(),
                r.least_backup.is_some(),
                r.extension.is_some(),
            ];
            if set.iter().filter(|s| **s).count() > 1 {
                p.push(Problem::error(
                    format!("{path}.record_partitioner"),
                    "set at most one partitioner",
                ));
            }
            for (key, v) in [
                ("round_robin", &r.round_robin),
                ("least_backup", &r.least_backup),
                ("extension", &r.extension),
            ] {
                if v.is_some() {
                    p.push(Problem::error(
                        format!("{path}.record_partitioner.{key}"),
                        "not supported by sluice: use sticky_key (sarama_compat or murmur2)",
                    ));
                }
            }
            if let Some(h) = r.sticky_key.as_ref().and_then(|s| s.hasher.as_deref())
                && !matches!(h, "sarama_compat" | "murmur2")
            {
                p.push(Problem::error(
                    format!("{path}.record_partitioner.sticky_key.hasher"),
                    format!("unknown hasher {h:?}: sarama_compat or murmur2"),
                ));
            }
        }
        let pr = &self.producer;
        let at = format!("{path}.producer");
        if !(1..=1_000_000_000).contains(&pr.max_message_bytes) {
            p.push(Problem::error(
                format!("{at}.max_message_bytes"),
                "between 1 and 1000000000",
            ));
        }
        if pr.max_broker_write_bytes < pr.max_message_bytes {
            p.push(Problem::error(
                format!("{at}.max_broker_write_bytes"),
                "must be at least max_message_bytes",
            ));
        }
        if !matches!(pr.required_acks, -1..=1) {
            p.push(Problem::error(
                format!("{at}.required_acks"),
                "0, 1 or -1 (all in-sync replicas)",
            ));
        }
        let level = pr.compression_params.level;
        let levels = match pr.compression.as_str() {
            "none" | "snappy" => Some(-1..=-1),
            "gzip" => Some(0..=9),
            "lz4" => Some(0..=12),
            "zstd" => Some(1..=22),
            _ => None,
        };
        match levels {
            None => p.push(Problem::error(
                format!("{at}.compression"),
                format!(
                    "unknown compression {:?}: none, gzip, snappy, lz4 or zstd",
                    pr.compression
                ),
            )),
            Some(range) if level != -1 && !range.contains(&level) => p.push(Problem::error(
                format!("{at}.compression_params.level"),
                format!("level {level} is not valid for {}", pr.compression),
            )),
            Some(_) => {}
        }
        if pr.flush_max_messages == 0 || pr.flush_max_messages > 1_000_000 {
            p.push(Problem::error(
                format!("{at}.flush_max_messages"),
                "between 1 and 1000000",
            ));
        }
        p
    }

    /// The librdkafka producer properties, with `timeout` as each record's delivery deadline.
    fn properties(&self, timeout: Duration) -> BTreeMap<&'static str, String> {
        let mut p = self.client.properties();
        let pr = &self.producer;
        // A record is the payload with room for its key, headers and framing; one partition's
        // batch is kept to one record's size (what a broker takes as one message), and one
        // request to a broker to `max_broker_write_bytes` (librdkafka's `message.max.bytes` is
        // the request's size, at most 1e9).
        let record = (pr.max_message_bytes + 1024).min(1_000_000_000);
        let request = pr.max_broker_write_bytes.clamp(record, 1_000_000_000);
        p.insert("message.max.bytes", request.to_string());
        p.insert("batch.size", record.to_string());
        p.insert("batch.num.messages", pr.flush_max_messages.to_string());
        p.insert("acks", pr.required_acks.to_string());
        p.insert("compression.codec", pr.compression.clone());
        p.insert("compression.level", pr.compression_params.level.to_string());
        p.insert("linger.ms", pr.linger.0.as_millis().to_string());
        p.insert(
            "allow.auto.create.topics",
            pr.allow_auto_topic_creation.to_string(),
        );
        p.insert("message.timeout.ms", timeout.as_millis().max(1).to_string());
        // Records waiting for the broker are bounded (64 MiB): past that a send is refused and
        // retried, so the exporter's queue, not librdkafka's, holds the backlog.
        p.insert("queue.buffering.max.kbytes", (64 << 10).to_string());
        let murmur = self
            .record_partitioner
            .as_ref()
            .and_then(|r| r.sticky_key.as_ref())
            .and_then(|s| s.hasher.as_deref())
            == Some("murmur2");
        // Sarama's (and the Collector's default) FNV-1a hash of the key; records without a key
        // go to a random partition.
        p.insert(
            "partitioner",
            if murmur {
                "murmur2_random"
            } else {
                "fnv1a_random"
            }
            .to_owned(),
        );
        p
    }
}

/// The `kafka` exporter type.
pub struct KafkaExporterFactory;

impl ExporterFactory for KafkaExporterFactory {
    fn type_name(&self) -> &'static str {
        "kafka"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        check_typed(path, config, |c: &KafkaExporterConfig| c.check(path))
    }

    fn build(
        &self,
        id: &str,
        config: &Value,
        helper: &mut HelperSettings,
        _context: &sluice_core::ExporterContext,
    ) -> Result<BuiltExporter, BuildError> {
        let path = format!("exporters.{id}");
        let c: KafkaExporterConfig = typed(&path, config)?;
        let producer: FutureProducer<Context> = rd_config(&c.properties(helper.timeout))
            .create_with_context(Context {
                component: path.clone(),
            })
            .map_err(|e| BuildError::Other(format!("{path}: the Kafka producer: {e}")))?;
        let mut headers = OwnedHeaders::new();
        for (k, v) in &c.record_headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let signal = |s: Signal| SignalSettings {
            topic: c.topic(s).into(),
            json: c.json(s),
        };
        Ok(BuiltExporter::Push(Arc::new(KafkaExporter {
            id: id.to_owned(),
            producer,
            traces: signal(Signal::Traces),
            metrics: signal(Signal::Metrics),
            logs: signal(Signal::Logs),
            by_trace: c.partition_traces_by_id,
            metrics_by_resource: c.partition_metrics_by_resource_attributes,
            logs_by_resource: c.partition_logs_by_resource_attributes,
            logs_by_trace: c.partition_logs_by_trace_id,
            max_message: c.producer.max_message_bytes as usize,
            headers: (!c.record_headers.is_empty()).then_some(headers),
            oversized: metrics::counter!(names::KAFKA_EXPORTER_OVERSIZED_ITEMS, "exporter" => id.to_owned()),
        })))
    }
}

struct SignalSettings {
    topic: Arc<str>,
    json: bool,
}

struct KafkaExporter {
    id: String,
    producer: FutureProducer<Context>,
    traces: SignalSettings,
    metrics: SignalSettings,
    logs: SignalSettings,
    by_trace: bool,
    metrics_by_resource: bool,
    logs_by_resource: bool,
    logs_by_trace: bool,
    max_message: usize,
    headers: Option<OwnedHeaders>,
    oversized: metrics::Counter,
}

/// One record to write.
pub(crate) struct Record {
    topic: Arc<str>,
    key: Option<Vec<u8>>,
    payload: Bytes,
}

/// A batch as records, with which ones the broker has acknowledged.
pub(crate) struct Records {
    records: Vec<Record>,
    delivered: Vec<AtomicBool>,
}

/// What a part of a batch is grouped by: the raw trace id or resource hash, rendered as the
/// record's key once per part ([`PartKey::render`]), not once per item.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum PartKey {
    None,
    Trace([u8; 16]),
    Resource(u64),
}

impl PartKey {
    fn render(self) -> Option<Vec<u8>> {
        match self {
            PartKey::None => None,
            PartKey::Trace(id) => Some(hex::encode(id).into_bytes()),
            PartKey::Resource(hash) => Some(format!("{hash:016x}").into_bytes()),
        }
    }
}

/// An item's [`PartKey`]. Items of one resource sit together, so the resource's hash is
/// remembered for the next item (`last`: the resource message's address and length, and its
/// hash) rather than computed per item.
fn part_key(
    by: Keying,
    context: &ItemContext<'_>,
    item: &Item<'_>,
    last: &mut Option<(usize, usize, u64)>,
) -> PartKey {
    match by {
        Keying::None => PartKey::None,
        Keying::TraceId => {
            let id = match item {
                Item::Span(s) => s.trace_id(),
                Item::Log(l) => l.trace_id(),
                Item::Point(_) => &[],
            };
            match <[u8; 16]>::try_from(id) {
                Ok(id) if id != [0; 16] => PartKey::Trace(id),
                _ => PartKey::None,
            }
        }
        Keying::Resource => {
            let raw = context.resource.resource();
            let at = (raw.as_ptr() as usize, raw.len());
            match *last {
                Some((ptr, len, hash)) if (ptr, len) == at => PartKey::Resource(hash),
                _ => {
                    let hash = resource_hash(&context.resource);
                    *last = Some((at.0, at.1, hash));
                    PartKey::Resource(hash)
                }
            }
        }
    }
}

/// A hash of a resource's attributes, in any order.
fn resource_hash(resource: &Resource<'_>) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut attributes: Vec<&[u8]> = resource.attributes().map(|kv| kv.raw()).collect();
    attributes.sort_unstable();
    let mut h = foldhash::fast::FixedState::with_seed(0x006b_6166_6b61).build_hasher();
    for a in attributes {
        h.write(a);
    }
    h.finish()
}

#[derive(Clone, Copy)]
enum Keying {
    None,
    TraceId,
    Resource,
}

impl KafkaExporter {
    fn settings(&self, signal: Signal) -> &SignalSettings {
        match signal {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        }
    }

    fn keying(&self, signal: Signal) -> Keying {
        match signal {
            Signal::Traces if self.by_trace => Keying::TraceId,
            Signal::Metrics if self.metrics_by_resource => Keying::Resource,
            Signal::Logs if self.logs_by_resource => Keying::Resource,
            Signal::Logs if self.logs_by_trace => Keying::TraceId,
            _ => Keying::None,
        }
    }

    /// Encodes `data` (`items` items) as records under the size limit, halving by items until
    /// each fits. An item too large alone is counted and left out.
    fn push_records(
        &self,
        signal: Signal,
        key: Option<Vec<u8>>,
        data: Bytes,
        items: usize,
        out: &mut Vec<Record>,
    ) -> Result<(), ExportError> {
        let settings = self.settings(signal);
        let payload = if settings.json {
            Bytes::from(
                sluice_core::json::protobuf_to_json(signal, &data)
                    .map_err(|e| ExportError::permanent(format!("encoding OTLP/JSON: {e}")))?,
            )
        } else {
            data.clone()
        };
        if payload.len() <= self.max_message {
            out.push(Record {
                topic: Arc::clone(&settings.topic),
                key,
                payload,
            });
            return Ok(());
        }
        if items <= 1 {
            self.oversized.increment(items as u64);
            tracing::error!(
                exporter = self.id,
                bytes = payload.len(),
                max_message_bytes = self.max_message,
                "one {} is larger than producer.max_message_bytes alone and cannot be written to Kafka",
                signal.item_name().replace('_', " ")
            );
            return Ok(());
        }
        let half = items / 2;
        let (head, tail) = wire::split(signal, &data, half);
        self.push_records(signal, key.clone(), head, half, out)?;
        self.push_records(signal, key, tail, items - half, out)
    }
}

fn classify(err: &KafkaError) -> ExportError {
    let message = format!("kafka: {err}");
    match err.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidRequiredAcks,
        ) => ExportError::permanent(message),
        _ => ExportError::retryable(message),
    }
}

#[async_trait]
impl Exporter for KafkaExporter {
    type Encoded = Records;

    fn encode(&self, batch: &Batch) -> Result<Records, ExportError> {
        let signal = batch.signal();
        let keying = self.keying(signal);
        let parts: Vec<(PartKey, Batch)> = match keying {
            Keying::None => vec![(PartKey::None, batch.clone())],
            by => {
                let mut last = None;
                batch
                    .clone()
                    .group_by(|context, item| part_key(by, context, item, &mut last))
            }
        };
        let mut records = Vec::new();
        for (key, part) in parts {
            let items = part.items();
            self.push_records(
                signal,
                key.render(),
                part.data().clone(),
                items,
                &mut records,
            )?;
        }
        let delivered = records.iter().map(|_| AtomicBool::new(false)).collect();
        Ok(Records { records, delivered })
    }

    /// Writes the records the broker has not acknowledged yet and waits for every
    /// acknowledgement. Cancel safe: each record is marked as the broker acknowledges it, so a
    /// cancelled attempt resends only what was not acknowledged (librdkafka may still deliver
    /// those: at least once).
    async fn send(&self, encoded: &Records) -> Result<(), ExportError> {
        let started = Instant::now();
        let mut pending = FuturesUnordered::new();
        let mut refused = None;
        for (i, record) in encoded.records.iter().enumerate() {
            if encoded.delivered[i].load(Ordering::Acquire) {
                continue;
            }
            let mut r = FutureRecord::<[u8], [u8]>::to(&record.topic).payload(&record.payload[..]);
            if let Some(key) = &record.key {
                r = r.key(&key[..]);
            }
            if let Some(headers) = &self.headers {
                r = r.headers(headers.clone());
            }
            match self.producer.send_result(r) {
                Ok(delivery) => pending.push(async move { (i, delivery.await) }),
                Err((err, _)) => {
                    // The local queue is full or the client is closing: retry later.
                    refused = Some(err);
                    break;
                }
            }
        }
        let mut failed = refused.as_ref().map(classify);
        // Records and bytes by outcome ([success, failure]), counted once per attempt: every
        // record of a batch goes to its signal's one topic.
        let mut tally = [(0u64, 0u64); 2];
        while let Some((i, outcome)) = pending.next().await {
            let record = &encoded.records[i];
            let ok = matches!(outcome, Ok(Ok(_)));
            let t = &mut tally[usize::from(!ok)];
            t.0 += 1;
            t.1 += record.payload.len() as u64;
            match outcome {
                Ok(Ok(_)) => encoded.delivered[i].store(true, Ordering::Release),
                Ok(Err((err, _))) => {
                    let e = classify(&err);
                    if failed.as_ref().is_none_or(|f| f.retryable) {
                        failed = Some(e);
                    }
                }
                Err(_) => {
                    failed.get_or_insert_with(|| {
                        ExportError::retryable("kafka: the producer closed")
                    });
                }
            }
        }
        if let Some(topic) = encoded.records.first().map(|r| r.topic.to_string()) {
            for ((records, bytes), outcome) in tally.into_iter().zip(["success", "failure"]) {
                if records == 0 {
                    continue;
                }
                let labels = [
                    ("exporter", self.id.clone()),
                    ("topic", topic.clone()),
                    ("outcome", outcome.to_owned()),
                ];
                metrics::counter!(names::KAFKA_EXPORTER_RECORDS, &labels).increment(records);
                metrics::counter!(names::KAFKA_EXPORTER_BYTES_UNCOMPRESSED, &labels)
                    .increment(bytes);
            }
        }
        metrics::histogram!(
            names::KAFKA_EXPORTER_WRITE_LATENCY,
            "exporter" => self.id.clone(),
            "outcome" => if failed.is_none() { "success" } else { "failure" }
        )
        .record(started.elapsed().as_secs_f64());
        match failed {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;
    use sluice_fixtures::{kv, s, traces_batch};

    fn exporter(config: Value) -> Arc<dyn sluice_core::ErasedExporter> {
        let mut helper = HelperSettings::default();
        match KafkaExporterFactory
            .build("kafka", &config, &mut helper, &Default::default())
            .unwrap()
        {
            BuiltExporter::Push(e) => e,
            BuiltExporter::Direct(_) => unreachable!(),
        }
    }

    fn records(
        e: &Arc<dyn sluice_core::ErasedExporter>,
        batch: &Batch,
    ) -> Vec<(Option<Vec<u8>>, Bytes)> {
        let encoded = e.encode_any(batch).unwrap();
        let records = encoded.downcast_ref::<Records>().unwrap();
        records
            .records
            .iter()
            .map(|r| (r.key.clone(), r.payload.clone()))
            .collect()
    }

    fn span(trace: u8, id: u64, pad: usize) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: id.to_be_bytes().to_vec(),
            name: "x".repeat(pad),
            ..Default::default()
        }
    }

    fn span_ids(payload: &[u8]) -> Vec<Vec<u8>> {
        ExportTraceServiceRequest::decode(payload)
            .unwrap()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .map(|s| s.span_id)
            .collect()
    }

    #[test]
    fn a_batch_over_max_message_bytes_is_split_by_items_and_keeps_every_span_in_order() {
        let e = exporter(serde_json::json!({"producer": {"max_message_bytes": 2000}}));
        let batch = traces_batch(
            vec![kv("service.name", s("svc"))],
            (1..=100).map(|i| span(1, i, 100)).collect(),
        );
        assert!(batch.size() > 10_000);
        let records = records(&e, &batch);
        assert!(records.len() >= 6, "{} records", records.len());
        let mut ids = Vec::new();
        for (key, payload) in &records {
            assert!(payload.len() <= 2000, "a record of {} bytes", payload.len());
            assert!(key.is_none());
            ids.extend(span_ids(payload));
        }
        let want: Vec<Vec<u8>> = (1..=100u64).map(|i| i.to_be_bytes().to_vec()).collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn an_item_larger_than_max_message_bytes_alone_is_left_out_and_the_rest_kept() {
        let e = exporter(serde_json::json!({"producer": {"max_message_bytes": 1000}}));
        let batch = traces_batch(
            Vec::new(),
            vec![span(1, 1, 10), span(1, 2, 5000), span(1, 3, 10)],
        );
        let ids: Vec<Vec<u8>> = records(&e, &batch)
            .iter()
            .flat_map(|(_, p)| span_ids(p))
            .collect();
        assert_eq!(
            ids,
            vec![1u64.to_be_bytes().to_vec(), 3u64.to_be_bytes().to_vec()]
        );
    }

    #[test]
    fn partition_traces_by_id_writes_one_record_per_trace_keyed_by_its_hex_id() {
        let e = exporter(serde_json::json!({"partition_traces_by_id": true}));
        let batch = traces_batch(
            Vec::new(),
            vec![span(1, 1, 0), span(2, 2, 0), span(1, 3, 0), span(3, 4, 0)],
        );
        let records = records(&e, &batch);
        let got: Vec<(String, Vec<Vec<u8>>)> = records
            .iter()
            .map(|(k, p)| (String::from_utf8(k.clone().unwrap()).unwrap(), span_ids(p)))
            .collect();
        let id = |i: u64| i.to_be_bytes().to_vec();
        assert_eq!(
            got,
            vec![
                ("01".repeat(16), vec![id(1), id(3)]),
                ("02".repeat(16), vec![id(2)]),
                ("03".repeat(16), vec![id(4)]),
            ]
        );
    }

    #[test]
    fn otlp_json_records_transcode_back_to_the_batch_s_bytes() {
        let e = exporter(serde_json::json!({"traces": {"encoding": "otlp_json", "topic": "t"}}));
        let batch = traces_batch(vec![kv("service.name", s("svc"))], vec![span(7, 1, 3)]);
        let records = records(&e, &batch);
        assert_eq!(records.len(), 1);
        let json: Value = serde_json::from_slice(&records[0].1).unwrap();
        assert_eq!(
            json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"],
            "07".repeat(16)
        );
        let back = sluice_core::json::json_to_protobuf(Signal::Traces, &records[0].1).unwrap();
        assert_eq!(&back[..], &batch.data()[..]);
    }

    #[test]
    fn resource_keys_do_not_depend_on_attribute_order() {
        let e = exporter(
            serde_json::json!({"partition_logs_by_resource_attributes": true, "partition_metrics_by_resource_attributes": true}),
        );
        let a = traces_batch(vec![kv("a", s("1")), kv("b", s("2"))], vec![span(1, 1, 0)]);
        let b = traces_batch(vec![kv("b", s("2")), kv("a", s("1"))], vec![span(1, 1, 0)]);
        let c = traces_batch(vec![kv("a", s("1")), kv("b", s("3"))], vec![span(1, 1, 0)]);
        let key = |batch: &Batch| {
            let mut key = None;
            let _ = batch.clone().group_by(|context, _| {
                key = Some(resource_hash(&context.resource));
            });
            key.unwrap()
        };
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
        // Traces are not keyed by resource: one unkeyed record.
        assert_eq!(records(&e, &a)[0].0, None);
    }

    #[test]
    fn logs_by_resource_attributes_write_one_record_per_resource_whatever_the_attribute_order() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
        let resource = |attributes| ResourceLogs {
            resource: Some(ProtoResource {
                attributes,
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default(); 3],
                ..Default::default()
            }],
            ..Default::default()
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![
                resource(vec![kv("a", s("1")), kv("b", s("2"))]),
                resource(vec![kv("c", s("3"))]),
                resource(vec![kv("b", s("2")), kv("a", s("1"))]),
            ],
        };
        let batch = Batch::decode(Signal::Logs, request.encode_to_vec().into()).unwrap();
        let e = exporter(serde_json::json!({"partition_logs_by_resource_attributes": true}));
        let records = records(&e, &batch);
        let logs = |payload: &[u8]| -> usize {
            ExportLogsServiceRequest::decode(payload)
                .unwrap()
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum()
        };
        assert_eq!(records.len(), 2);
        assert_eq!((logs(&records[0].1), logs(&records[1].1)), (6, 3));
        assert!(
            records
                .iter()
                .all(|(k, _)| k.as_ref().is_some_and(|k| k.len() == 16))
        );
        assert_ne!(records[0].0, records[1].0);
    }

    fn problems(config: Value) -> Vec<String> {
        KafkaExporterFactory
            .check("exporters.kafka", &config)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn the_collector_s_config_is_accepted_and_what_sluice_cannot_honour_is_refused_by_path() {
        let full = serde_json::json!({
            "brokers": ["kafka-0:9092", "kafka-1:9092"], "client_id": "agent", "protocol_version": "2.1.0",
            "resolve_canonical_bootstrap_servers_only": true, "conn_idle_timeout": "5m",
            "traces": {"topic": "spans", "encoding": "otlp_json"}, "metrics": {"topic": "m"}, "logs": {"encoding": "otlp_proto"},
            "partition_traces_by_id": true, "partition_metrics_by_resource_attributes": true,
            "partition_logs_by_trace_id": true, "record_headers": {"env": "prod"},
            "record_partitioner": {"sticky_key": {"hasher": "murmur2"}},
            "producer": {"max_message_bytes": 500000, "required_acks": -1, "compression": "zstd",
                         "compression_params": {"level": 3}, "flush_max_messages": 500, "linger": "5ms"},
            "tls": {"ca_file": "/ca.pem"}, "auth": {"sasl": {"mechanism": "SCRAM-SHA-512", "username": "u", "password": "p"}},
            "metadata": {"refresh_interval": "1m", "retry": {"max": 3, "backoff": "100ms"}},
        });
        assert_eq!(
            problems(full),
            vec![
                "exporters.kafka.metadata.retry.max: not applied: librdkafka retries metadata, group and offset requests until their timeouts"
            ]
        );
        let refused = problems(serde_json::json!({
            "brokers": "nohost", "protocol_version": "0.9.0", "traces": {"encoding": "jaeger_proto", "topic_from_metadata_key": "t"},
            "topic_from_attribute": "x", "include_metadata_keys": ["k"],
            "partition_logs_by_resource_attributes": true, "partition_logs_by_trace_id": true,
            "record_partitioner": {"round_robin": {}}, "producer": {"required_acks": 2, "compression": "brotli"},
            "auth": {"sasl": {"mechanism": "OAUTHBEARER", "username": "u"}, "kerberos": {}}, "bogus": 1,
        }));
        for want in [
            "exporters.kafka.brokers: broker \"nohost\" is not host:port",
            "exporters.kafka.protocol_version: brokers before Kafka 0.10 are not supported",
            "exporters.kafka.traces.encoding: encoding \"jaeger_proto\" is not supported by sluice: otlp_proto or otlp_json",
            "exporters.kafka.traces.topic_from_metadata_key: not supported by sluice",
            "exporters.kafka.topic_from_attribute: not supported by sluice",
            "exporters.kafka.include_metadata_keys: not supported by sluice",
            "exporters.kafka.partition_logs_by_trace_id: partition_logs_by_resource_attributes and partition_logs_by_trace_id are mutually exclusive",
            "exporters.kafka.record_partitioner.round_robin: not supported by sluice",
            "exporters.kafka.producer.required_acks: 0, 1 or -1",
            "exporters.kafka.producer.compression: unknown compression \"brotli\"",
            "exporters.kafka.auth.sasl.mechanism: OAUTHBEARER is not supported by sluice",
            "exporters.kafka.auth.kerberos: Kerberos (GSSAPI) is not supported by sluice",
            "exporters.kafka.bogus: unknown key",
        ] {
            assert!(
                refused.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {refused:#?}"
            );
        }
    }

    #[test]
    fn client_settings_become_librdkafka_properties() {
        let c: KafkaExporterConfig = serde_json::from_value(serde_json::json!({
            "brokers": ["a:1", "b:2"], "tls": {"ca_file": "/ca.pem", "insecure_skip_verify": true},
            "auth": {"plain_text": {"username": "u", "password": "p"}},
            "producer": {"required_acks": -1, "compression": "lz4"},
        }))
        .unwrap();
        let p = c.properties(Duration::from_secs(5));
        for (k, v) in [
            ("bootstrap.servers", "a:1,b:2"),
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "u"),
            ("ssl.ca.location", "/ca.pem"),
            ("enable.ssl.certificate.verification", "false"),
            ("acks", "-1"),
            ("compression.codec", "lz4"),
            ("message.timeout.ms", "5000"),
            ("partitioner", "fnv1a_random"),
            ("client.id", "otel-collector"),
            ("message.max.bytes", "104857600"),
            ("batch.size", "1001024"),
        ] {
            assert_eq!(p.get(k).map(String::as_str), Some(v), "{k}");
        }
    }
}
