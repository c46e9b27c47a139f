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
        // Room for the record's key, headers and framing around a payload of the largest size.
        let record = (pr.max_message_bytes + 1024).min(1_000_000_000);
        p.insert("message.max.bytes", record.to_string());
        p.insert(
            "batch.size",
            record
                .min(pr.max_broker_write_bytes.max(record))
                .to_string(),
        );
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

/// How a part of a batch is keyed.
fn part_key(by: Keying, context: &ItemContext<'_>, item: &Item<'_>) -> Option<Vec<u8>> {
    match by {
        Keying::None => None,
        Keying::TraceId => {
            let id = match item {
                Item::Span(s) => s.trace_id(),
                Item::Log(l) => l.trace_id(),
                Item::Point(_) => &[],
            };
            (!id.is_empty() && id.iter().any(|b| *b != 0)).then(|| hex::encode(id).into_bytes())
        }
        Keying::Resource => Some(resource_key(&context.resource)),
    }
}

/// A hash of a resource's attributes, in any order, as 16 hex digits.
fn resource_key(resource: &Resource<'_>) -> Vec<u8> {
    use std::hash::{BuildHasher, Hasher};
    let mut attributes: Vec<&[u8]> = resource.attributes().map(|kv| kv.raw()).collect();
    attributes.sort_unstable();
    let mut h = foldhash::fast::FixedState::with_seed(0x006b_6166_6b61).build_hasher();
    for a in attributes {
        h.write(a);
    }
    format!("{:016x}", h.finish()).into_bytes()
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
        let parts: Vec<(Option<Vec<u8>>, Batch)> = match keying {
            Keying::None => vec![(None, batch.clone())],
            by => batch
                .clone()
                .group_by(|context, item| part_key(by, context, item)),
        };
        let mut records = Vec::new();
        for (key, part) in parts {
            let items = part.items();
            self.push_records(signal, key, part.data().clone(), items, &mut records)?;
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
        while let Some((i, outcome)) = pending.next().await {
            let record = &encoded.records[i];
            let ok = matches!(outcome, Ok(Ok(_)));
            let outcome_label = if ok { "success" } else { "failure" };
            let labels = [
                ("exporter", self.id.clone()),
                ("topic", record.topic.to_string()),
                ("outcome", outcome_label.to_owned()),
            ];
            metrics::counter!(names::KAFKA_EXPORTER_RECORDS, &labels).increment(1);
            metrics::counter!(names::KAFKA_EXPORTER_BYTES_UNCOMPRESSED, &labels)
                .increment(record.payload.len() as u64);
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
