//! The `kafka` receiver: a member of a consumer group that hands each record to core's receiver
//! intake (memory admission, the schema check, the `otelcol_receiver_*` metrics, as for OTLP).
//!
//! A record's offset is stored only once the pipeline has taken it (and, with a persistent
//! queue, made it durable), and only stored offsets are committed: killed at any moment, the
//! receiver loses nothing and reads again at most what was in flight. While the pipeline refuses
//! (memory limiter, full queues) it pauses its partitions and retries the record in hand with
//! backoff, still polling so that it stays in its group; records already fetched wait, bounded.
//! A record that can never be taken (it does not decode) is counted, logged and passed over, so
//! that one bad record does not stop its partition for good.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::{HumanDuration, Problem};
use sluice_core::{
    BuildError, ConsumeError, ErrorCode, Intake, ReceiverOutputs, Signal, check_typed,
    metrics as names, typed,
};
use sluice_core::{Receiver, ReceiverFactory};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientConfig, Context, rd_config};

/// `traces`, `metrics`, `logs`: which topics carry one signal.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalTopics {
    /// Topic names, or regular expressions when they start with `^` (defaults `otlp_spans`,
    /// `otlp_metrics`, `otlp_logs`).
    pub topics: Option<Vec<String>>,
    /// One topic (the older spelling of `topics`).
    pub topic: Option<String>,
    /// `otlp_proto` (default) or `otlp_json`.
    pub encoding: Option<String>,
    /// Not supported by sluice (librdkafka cannot exclude from a pattern): refused when set.
    pub exclude_topics: Vec<String>,
}

/// `autocommit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Autocommit {
    /// Commit stored offsets every `interval` (default true); when false, after every record.
    pub enable: bool,
    /// How often (default 1s).
    pub interval: HumanDuration,
}

impl Default for Autocommit {
    fn default() -> Self {
        Autocommit {
            enable: true,
            interval: HumanDuration::from_secs(1),
        }
    }
}

/// `message_marking`: sluice marks a record only after the pipeline has taken it; these keys are
/// accepted and warned about when they ask for something else.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessageMarking {
    /// Mark after the pipeline (sluice always does).
    pub after: Option<bool>,
    /// Mark records the pipeline refused (sluice retries them, never marks them).
    pub on_error: Option<bool>,
    /// Mark records that can never be taken (sluice does, and counts them).
    pub on_permanent_error: Option<bool>,
}

/// `error_backoff`: the wait between attempts while the pipeline refuses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorBackoff {
    /// Accepted: sluice always retries a refused record with backoff (the Collector without it
    /// leaves the partition paused until a rebalance).
    pub enabled: bool,
    /// The first wait (default 100ms).
    pub initial_interval: HumanDuration,
    /// The longest wait (default 5s).
    pub max_interval: HumanDuration,
    /// Growth per attempt (default 1.5).
    pub multiplier: f64,
    /// Each wait is drawn within ± this share of it (default 0.5), so that the members of a
    /// group do not retry in step.
    pub randomization_factor: f64,
    /// Not applied: sluice never gives a refused record up (it would be lost). Accepted with a
    /// warning when set.
    pub max_elapsed_time: Option<HumanDuration>,
}

impl Default for ErrorBackoff {
    fn default() -> Self {
        ErrorBackoff {
            enabled: false,
            initial_interval: HumanDuration::from_millis(100),
            max_interval: HumanDuration::from_secs(5),
            multiplier: 1.5,
            randomization_factor: 0.5,
            max_elapsed_time: None,
        }
    }
}

/// `header_extraction`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderExtraction {
    /// Not supported by sluice: refused when true.
    pub extract_headers: bool,
    /// The headers to extract.
    pub headers: Vec<String>,
}

/// `partition_processing`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartitionProcessing {
    /// Accepted with a warning: sluice's receiver takes records in order, one at a time.
    pub independent: bool,
    /// Accepted for compatibility.
    pub max_buffered_batches: Option<u32>,
}

/// The `kafka` receiver's config: the Collector's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct KafkaReceiverConfig {
    /// Brokers, client id, TLS, SASL, metadata.
    #[serde(flatten)]
    pub client: ClientConfig,
    /// The older single-topic key: refused (one consumer serves every signal here).
    pub topic: Option<String>,
    /// The encoding of every signal without its own.
    pub encoding: Option<String>,
    /// Topics of spans.
    pub traces: SignalTopics,
    /// Topics of metrics.
    pub metrics: SignalTopics,
    /// Topics of logs.
    pub logs: SignalTopics,
    /// Not supported: refused.
    pub profiles: Option<Value>,
    /// The consumer group (default `otel-collector`).
    pub group_id: String,
    /// The rack, for fetching from the closest replica.
    pub rack_id: String,
    /// librdkafka always uses leader epochs where the broker has them: `false` is refused.
    pub use_leader_epoch: bool,
    /// `latest` (default) or `earliest`, where the group has no committed offset.
    pub initial_offset: String,
    /// The group's session timeout (default 10s).
    pub session_timeout: HumanDuration,
    /// Heartbeats to the group coordinator (default 3s).
    pub heartbeat_interval: HumanDuration,
    /// Assignors in order: `range`, `roundrobin`, `cooperative-sticky` (default).
    pub group_rebalance_strategies: Vec<String>,
    /// Deprecated: one assignor.
    pub group_rebalance_strategy: Option<String>,
    /// A static member's id.
    pub group_instance_id: String,
    /// Least bytes a fetch waits for (default 1).
    pub min_fetch_size: u32,
    /// Most bytes of one fetch (default 1 MiB).
    pub max_fetch_size: u32,
    /// Longest a fetch waits for `min_fetch_size` (default 250ms).
    pub max_fetch_wait: HumanDuration,
    /// Most bytes of one partition in a fetch (default 1 MiB).
    pub max_partition_fetch_size: u32,
    /// Commits.
    pub autocommit: Autocommit,
    /// When records are marked (see [`MessageMarking`]).
    pub message_marking: MessageMarking,
    /// See [`PartitionProcessing`].
    pub partition_processing: PartitionProcessing,
    /// See [`HeaderExtraction`].
    pub header_extraction: HeaderExtraction,
    /// See [`ErrorBackoff`].
    pub error_backoff: ErrorBackoff,
    /// The Collector's optional metric switches: `kafka_receiver_records_delay` is not
    /// produced by sluice, and enabling it is refused.
    pub telemetry: Option<Value>,
    /// Keys this config does not know, refused by `check`.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

impl Default for KafkaReceiverConfig {
    fn default() -> Self {
        KafkaReceiverConfig {
            client: ClientConfig::default(),
            topic: None,
            encoding: None,
            traces: SignalTopics::default(),
            metrics: SignalTopics::default(),
            logs: SignalTopics::default(),
            profiles: None,
            group_id: "otel-collector".to_owned(),
            rack_id: String::new(),
            use_leader_epoch: true,
            initial_offset: "latest".to_owned(),
            session_timeout: HumanDuration::from_secs(10),
            heartbeat_interval: HumanDuration::from_secs(3),
            group_rebalance_strategies: Vec::new(),
            group_rebalance_strategy: None,
            group_instance_id: String::new(),
            min_fetch_size: 1,
            max_fetch_size: 1 << 20,
            max_fetch_wait: HumanDuration::from_millis(250),
            max_partition_fetch_size: 1 << 20,
            autocommit: Autocommit::default(),
            message_marking: MessageMarking::default(),
            partition_processing: PartitionProcessing::default(),
            header_extraction: HeaderExtraction::default(),
            error_backoff: ErrorBackoff::default(),
            telemetry: None,
            unknown: BTreeMap::new(),
        }
    }
}

const SIGNALS: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

impl KafkaReceiverConfig {
    fn signal(&self, signal: Signal) -> &SignalTopics {
        match signal {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        }
    }

    fn topics(&self, signal: Signal) -> Vec<String> {
        let own = self.signal(signal);
        if let Some(t) = &own.topics {
            return t.clone();
        }
        if let Some(t) = &own.topic {
            return vec![t.clone()];
        }
        vec![
            match signal {
                Signal::Traces => "otlp_spans",
                Signal::Metrics => "otlp_metrics",
                Signal::Logs => "otlp_logs",
            }
            .to_owned(),
        ]
    }

    fn json(&self, signal: Signal) -> bool {
        self.signal(signal)
            .encoding
            .as_ref()
            .or(self.encoding.as_ref())
            .map(String::as_str)
            == Some("otlp_json")
    }

    fn strategies(&self) -> Vec<String> {
        if let Some(s) = &self.group_rebalance_strategy {
            return vec![s.clone()];
        }
        if self.group_rebalance_strategies.is_empty() {
            return vec!["cooperative-sticky".to_owned()];
        }
        self.group_rebalance_strategies.clone()
    }

    /// Every problem, each with its path.
    pub fn check(&self, path: &str) -> Vec<Problem> {
        let mut p = self.client.check(path);
        for key in self.unknown.keys() {
            p.push(Problem::error(format!("{path}.{key}"), "unknown key"));
        }
        if self.topic.is_some() {
            p.push(Problem::error(
                format!("{path}.topic"),
                "one kafka receiver serves every signal here: set traces.topics, metrics.topics and logs.topics",
            ));
        }
        if self.profiles.is_some() {
            p.push(Problem::error(
                format!("{path}.profiles"),
                "profiles are not a signal sluice carries",
            ));
        }
        let encodings = std::iter::once((format!("{path}.encoding"), &self.encoding)).chain(
            SIGNALS
                .iter()
                .map(|s| (format!("{path}.{s}.encoding"), &self.signal(*s).encoding)),
        );
        for (at, e) in encodings {
            if let Some(e) = e
                && !matches!(e.as_str(), "otlp_proto" | "otlp_json")
            {
                p.push(Problem::error(
                    at,
                    format!("encoding {e:?} is not supported by sluice: otlp_proto or otlp_json"),
                ));
            }
        }
        let mut seen: BTreeMap<String, Signal> = BTreeMap::new();
        for signal in SIGNALS {
            let own = self.signal(signal);
            let at = format!("{path}.{signal}");
            if own.topics.is_some() && own.topic.is_some() {
                p.push(Problem::error(
                    format!("{at}.topic"),
                    "set topics or topic, not both",
                ));
            }
            if !own.exclude_topics.is_empty() {
                p.push(Problem::error(
                    format!("{at}.exclude_topics"),
                    "not supported by sluice: write the exclusion into the topic pattern",
                ));
            }
            let topics = self.topics(signal);
            if topics.is_empty() {
                p.push(Problem::error(format!("{at}.topics"), "at least one topic"));
            }
            for t in topics {
                if t.is_empty() {
                    p.push(Problem::error(
                        format!("{at}.topics"),
                        "a topic cannot be empty",
                    ));
                } else if t.starts_with('^') {
                    if let Err(e) = Regex::new(&t) {
                        p.push(Problem::error(
                            format!("{at}.topics"),
                            format!("bad pattern {t:?}: {e}"),
                        ));
                    }
                } else if let Some(other) = seen.insert(t.clone(), signal) {
                    p.push(Problem::error(
                        format!("{at}.topics"),
                        format!(
                            "topic {t:?} is also the {other} topic: a topic carries one signal"
                        ),
                    ));
                }
            }
        }
        if self.group_id.is_empty() {
            p.push(Problem::error(
                format!("{path}.group_id"),
                "a group id is required",
            ));
        }
        if !matches!(self.initial_offset.as_str(), "latest" | "earliest") {
            p.push(Problem::error(
                format!("{path}.initial_offset"),
                "latest or earliest",
            ));
        }
        if self.group_rebalance_strategy.is_some() && !self.group_rebalance_strategies.is_empty() {
            p.push(Problem::error(
                format!("{path}.group_rebalance_strategy"),
                "set group_rebalance_strategies or the deprecated group_rebalance_strategy, not both",
            ));
        }
        let strategies = self.strategies();
        let cooperative = strategies.iter().any(|s| s == "cooperative-sticky");
        for s in &strategies {
            match s.as_str() {
                "range" | "roundrobin" | "cooperative-sticky" => {}
                "sticky" => p.push(Problem::error(
                    format!("{path}.group_rebalance_strategies"),
                    "sticky is not offered by librdkafka: use cooperative-sticky, range or roundrobin",
                )),
                other => p.push(Problem::error(
                    format!("{path}.group_rebalance_strategies"),
                    format!("unknown strategy {other:?}: range, roundrobin or cooperative-sticky"),
                )),
            }
        }
        if cooperative && strategies.len() > 1 {
            p.push(Problem::error(
                format!("{path}.group_rebalance_strategies"),
                "librdkafka cannot mix cooperative-sticky with eager strategies",
            ));
        }
        if self.session_timeout.0 < Duration::from_millis(1)
            || self.heartbeat_interval.0 >= self.session_timeout.0
        {
            p.push(Problem::error(
                format!("{path}.heartbeat_interval"),
                "must be shorter than session_timeout",
            ));
        }
        if self.max_fetch_size < self.min_fetch_size.max(1) {
            p.push(Problem::error(
                format!("{path}.max_fetch_size"),
                "must be at least min_fetch_size",
            ));
        }
        if self.max_partition_fetch_size == 0 {
            p.push(Problem::error(
                format!("{path}.max_partition_fetch_size"),
                "must be over 0",
            ));
        }
        if self.header_extraction.extract_headers {
            p.push(Problem::error(
                format!("{path}.header_extraction.extract_headers"),
                "not supported by sluice",
            ));
        }
        let m = &self.message_marking;
        if m.after == Some(false) {
            p.push(Problem::warning(
                format!("{path}.message_marking.after"),
                "sluice marks a record only after the pipeline has taken it",
            ));
        }
        if m.on_error == Some(true) {
            p.push(Problem::warning(
                format!("{path}.message_marking.on_error"),
                "sluice retries a record the pipeline refuses and never marks it",
            ));
        }
        if m.on_permanent_error == Some(false) {
            p.push(Problem::warning(
                format!("{path}.message_marking.on_permanent_error"),
                "sluice marks, counts and logs a record that can never be taken, so its partition goes on",
            ));
        }
        if self.partition_processing.independent {
            p.push(Problem::warning(
                format!("{path}.partition_processing.independent"),
                "sluice's receiver takes records in order and pauses every partition while the pipeline refuses",
            ));
        }
        if !self.use_leader_epoch {
            p.push(Problem::error(
                format!("{path}.use_leader_epoch"),
                "librdkafka always uses leader epochs where the broker has them; it cannot be turned off",
            ));
        }
        let delay = self.telemetry.as_ref().and_then(|t| {
            t.pointer("/metrics/kafka_receiver_records_delay/enabled")
                .and_then(Value::as_bool)
        });
        if delay == Some(true) {
            p.push(Problem::error(
                format!("{path}.telemetry.metrics.kafka_receiver_records_delay.enabled"),
                "otelcol_kafka_receiver_records_delay is not produced by sluice",
            ));
        }
        if self.error_backoff.max_elapsed_time.is_some() {
            p.push(Problem::warning(
                format!("{path}.error_backoff.max_elapsed_time"),
                "not applied: sluice never gives up a record the pipeline refuses (it would be lost)",
            ));
        }
        if !(0.0..=1.0).contains(&self.error_backoff.randomization_factor) {
            p.push(Problem::error(
                format!("{path}.error_backoff.randomization_factor"),
                "between 0 and 1",
            ));
        }
        let b = &self.error_backoff;
        if b.initial_interval.0.is_zero()
            || b.max_interval.0 < b.initial_interval.0
            || b.multiplier < 1.0
        {
            p.push(Problem::error(
                format!("{path}.error_backoff"),
                "initial_interval over 0, max_interval at least initial_interval, multiplier at least 1",
            ));
        }
        p
    }

    fn properties(&self) -> BTreeMap<&'static str, String> {
        let mut p = self.client.properties();
        let ms = |d: &HumanDuration| d.0.as_millis().max(1).to_string();
        p.insert("group.id", self.group_id.clone());
        if !self.group_instance_id.is_empty() {
            p.insert("group.instance.id", self.group_instance_id.clone());
        }
        if !self.rack_id.is_empty() {
            p.insert("client.rack", self.rack_id.clone());
        }
        p.insert("auto.offset.reset", self.initial_offset.clone());
        p.insert("session.timeout.ms", ms(&self.session_timeout));
        p.insert("heartbeat.interval.ms", ms(&self.heartbeat_interval));
        p.insert("partition.assignment.strategy", self.strategies().join(","));
        p.insert("fetch.min.bytes", self.min_fetch_size.max(1).to_string());
        p.insert("fetch.max.bytes", self.max_fetch_size.to_string());
        // librdkafka wants its largest record under the fetch size.
        p.insert(
            "message.max.bytes",
            self.max_fetch_size.clamp(1000, 1_000_000).to_string(),
        );
        p.insert("fetch.wait.max.ms", ms(&self.max_fetch_wait));
        p.insert(
            "max.partition.fetch.bytes",
            self.max_partition_fetch_size.to_string(),
        );
        // Offsets are stored by the receiver once the pipeline has taken a record, never by
        // librdkafka as it hands records over; only stored offsets are committed.
        p.insert("enable.auto.offset.store", "false".to_owned());
        p.insert("enable.auto.commit", self.autocommit.enable.to_string());
        p.insert("auto.commit.interval.ms", ms(&self.autocommit.interval));
        // What librdkafka fetches ahead is bounded (16 MiB), so a paused receiver holds little.
        p.insert("queued.max.messages.kbytes", (16 << 10).to_string());
        p
    }
}

/// Which signal a topic carries.
struct Routes {
    exact: BTreeMap<String, (Signal, bool)>,
    patterns: Vec<(Regex, Signal, bool)>,
}

impl Routes {
    fn route(&self, topic: &str) -> Option<(Signal, bool)> {
        self.exact.get(topic).copied().or_else(|| {
            self.patterns
                .iter()
                .find(|(r, ..)| r.is_match(topic))
                .map(|(_, s, j)| (*s, *j))
        })
    }
}

/// The `kafka` receiver type.
pub struct KafkaReceiverFactory;

impl ReceiverFactory for KafkaReceiverFactory {
    fn type_name(&self) -> &'static str {
        "kafka"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        check_typed(path, config, |c: &KafkaReceiverConfig| c.check(path))
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn Receiver>, BuildError> {
        let path = format!("receivers.{id}");
        let config: KafkaReceiverConfig = typed(&path, config)?;
        Ok(Box::new(KafkaReceiver {
            id: id.to_owned(),
            config,
        }))
    }
}

struct KafkaReceiver {
    id: String,
    config: KafkaReceiverConfig,
}

/// The consumer's context: librdkafka's log, and partitions assigned and revoked.
struct ReceiverContext {
    client: Context,
    id: String,
}

impl ClientContext for ReceiverContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.client.log(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.client.error(error, reason);
    }
}

impl ConsumerContext for ReceiverContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                metrics::counter!(names::KAFKA_RECEIVER_PARTITION_START, "receiver" => self.id.clone())
                    .increment(tpl.count() as u64);
                tracing::info!(receiver = self.id, partitions = ?partitions(tpl), "kafka: partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                metrics::counter!(names::KAFKA_RECEIVER_PARTITION_CLOSE, "receiver" => self.id.clone())
                    .increment(tpl.count() as u64);
                tracing::info!(receiver = self.id, partitions = ?partitions(tpl), "kafka: partitions revoked");
            }
            Rebalance::Error(e) => {
                tracing::warn!(receiver = self.id, %e, "kafka: rebalance failed")
            }
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect()
}

type KafkaConsumer = StreamConsumer<ReceiverContext>;

#[async_trait::async_trait]
impl Receiver for KafkaReceiver {
    async fn start(
        self: Box<Self>,
        outputs: ReceiverOutputs,
        shutdown: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, BuildError> {
        let KafkaReceiver { id, config } = *self;
        let path = format!("receivers.{id}");
        let intake = Intake::new(&id, outputs, &["kafka"]);
        let mut routes = Routes {
            exact: BTreeMap::new(),
            patterns: Vec::new(),
        };
        let mut subscription = Vec::new();
        for signal in SIGNALS.into_iter().filter(|s| intake.serves(*s)) {
            let json = config.json(signal);
            for topic in config.topics(signal) {
                if topic.starts_with('^') {
                    let pattern = Regex::new(&topic).map_err(|e| {
                        BuildError::Other(format!("{path}: pattern {topic:?}: {e}"))
                    })?;
                    routes.patterns.push((pattern, signal, json));
                } else {
                    routes.exact.insert(topic.clone(), (signal, json));
                }
                subscription.push(topic);
            }
        }
        let consumer: KafkaConsumer = rd_config(&config.properties())
            .create_with_context(ReceiverContext {
                client: Context {
                    component: path.clone(),
                },
                id: id.clone(),
            })
            .map_err(|e| BuildError::Other(format!("{path}: the Kafka consumer: {e}")))?;
        let topics: Vec<&str> = subscription.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| BuildError::Other(format!("{path}: subscribing to {topics:?}: {e}")))?;
        let consumer = Arc::new(consumer);
        let run = Run {
            id: id.clone(),
            consumer: Arc::clone(&consumer),
            intake,
            routes,
            commit_each: !config.autocommit.enable,
            backoff: config.error_backoff.clone(),
            shutdown: shutdown.clone(),
            episode: std::sync::Mutex::new(None),
        };
        let lag = tokio::spawn(watch_lag(id, Arc::clone(&consumer), shutdown));
        let main = tokio::spawn(async move {
            run.run().await;
            lag.abort();
        });
        Ok(vec![main])
    }
}

/// A record read from the broker, waiting for the pipeline.
struct Record {
    topic: String,
    partition: i32,
    offset: i64,
    payload: Bytes,
}

/// Records fetched while the pipeline refused wait here, up to this many bytes; past it the
/// receiver stops reading (librdkafka's own fetch-ahead is bounded too).
const HELD_BYTES: usize = 16 << 20;

struct Run {
    id: String,
    consumer: Arc<KafkaConsumer>,
    intake: Intake,
    routes: Routes,
    commit_each: bool,
    backoff: ErrorBackoff,
    shutdown: CancellationToken,
    /// Since when, and how many times, the pipeline has been refusing records.
    episode: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

impl Run {
    async fn run(self) {
        let mut held: VecDeque<Record> = VecDeque::new();
        loop {
            let record = match held.pop_front() {
                Some(r) => r,
                None => {
                    tokio::select! {
                        () = self.shutdown.cancelled() => break,
                        m = self.consumer.recv() => match m {
                            Ok(m) => record(&m),
                            Err(e) => {
                                tracing::warn!(receiver = self.id, %e, "kafka: reading failed");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        },
                    }
                }
            };
            if !self.deliver(record, &mut held).await {
                break;
            }
        }
        // What the pipeline took is committed before the receiver leaves its group.
        let consumer = Arc::clone(&self.consumer);
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(%e, "kafka: final commit");
            }
            consumer.unsubscribe();
        })
        .await;
    }

    /// Hands one record to the pipeline, retrying while it refuses; `false` on shutdown.
    async fn deliver(&self, record: Record, held: &mut VecDeque<Record>) -> bool {
        let Some((signal, json)) = self.routes.route(&record.topic) else {
            self.give_up(
                &record,
                None,
                "its topic carries no signal this receiver serves",
            );
            return true;
        };
        let data = if json {
            let payload = record.payload.clone();
            let converted = sluice_core::blocking::off_workers(
                payload.len(),
                sluice_core::blocking::DECODE_OFF_WORKERS_ABOVE,
                move || sluice_core::json::json_to_protobuf(signal, &payload),
            )
            .await;
            match converted {
                Some(Ok(data)) => Bytes::from(data),
                Some(Err(e)) => {
                    self.give_up(&record, Some(signal), &format!("invalid OTLP/JSON: {e}"));
                    return true;
                }
                None => {
                    self.give_up(&record, Some(signal), "transcoding failed");
                    return true;
                }
            }
        } else {
            record.payload.clone()
        };
        let mut wait = self.backoff.initial_interval.0;
        let mut paused = false;
        loop {
            let outcome = match self.intake.begin(signal, "kafka", data.len(), None) {
                Ok(upload) => self
                    .intake
                    .accept(signal, "kafka", data.clone(), upload, None)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {
                    self.taken(&record, "success");
                    break;
                }
                Err(e) if permanent(&e) => {
                    self.give_up(&record, Some(signal), &e.to_string());
                    break;
                }
                Err(e) => {
                    self.refusing(Some(&e));
                    // Paused again each round: partitions assigned meanwhile are paused too.
                    self.pause(true);
                    paused = true;
                    if !self
                        .wait(jittered(wait, self.backoff.randomization_factor), held)
                        .await
                    {
                        return false;
                    }
                    wait = wait
                        .mul_f64(self.backoff.multiplier)
                        .min(self.backoff.max_interval.0);
                }
            }
        }
        if paused {
            self.pause(false);
        } else {
            self.refusing(None);
        }
        true
    }

    /// Logs the start of an episode of refusals (a warning, once) and its end: the first record
    /// the pipeline takes at the first attempt after it.
    fn refusing(&self, error: Option<&ConsumeError>) {
        let mut episode = self.episode.lock().unwrap_or_else(|e| e.into_inner());
        match (error, episode.as_mut()) {
            (Some(e), None) => {
                tracing::warn!(receiver = self.id, error = %e, "kafka: the pipeline refuses records; partitions paused while it does");
                *episode = Some((std::time::Instant::now(), 1));
            }
            (Some(_), Some((_, refusals))) => *refusals += 1,
            (None, Some((since, refusals))) => {
                tracing::info!(
                    receiver = self.id,
                    refusals = *refusals,
                    "kafka: the pipeline takes records again after {:?}; partitions resumed",
                    since.elapsed()
                );
                *episode = None;
            }
            (None, None) => {}
        }
    }

    /// Waits `wait`, still polling the consumer (so that it keeps its group membership and sees
    /// rebalances); what arrives meanwhile is held, up to [`HELD_BYTES`]. `false` on shutdown.
    async fn wait(&self, wait: Duration, held: &mut VecDeque<Record>) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let room = held.iter().map(|r| r.payload.len()).sum::<usize>() < HELD_BYTES;
            tokio::select! {
                () = self.shutdown.cancelled() => return false,
                () = tokio::time::sleep_until(deadline) => return true,
                m = self.consumer.recv(), if room => {
                    if let Ok(m) = m {
                        held.push_back(record(&m));
                    }
                }
            }
        }
    }

    fn pause(&self, pause: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let result = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        if let Err(e) = result {
            tracing::debug!(receiver = self.id, %e, "kafka: pause/resume");
        }
    }

    /// Marks a record done: its offset is stored for the next commit.
    fn taken(&self, record: &Record, outcome: &'static str) {
        metrics::counter!(
            names::KAFKA_RECEIVER_RECORDS,
            "receiver" => self.id.clone(),
            "topic" => record.topic.clone(),
            "outcome" => outcome
        )
        .increment(1);
        metrics::gauge!(
            names::KAFKA_RECEIVER_CURRENT_OFFSET,
            "receiver" => self.id.clone(),
            "topic" => record.topic.clone(),
            "partition" => record.partition.to_string()
        )
        .set(record.offset as f64);
        // Fails only when the partition was revoked meanwhile: its next owner reads the record
        // again (at least once).
        if let Err(e) = self
            .consumer
            .store_offset(&record.topic, record.partition, record.offset)
        {
            tracing::debug!(receiver = self.id, %e, "kafka: storing an offset");
        }
        if self.commit_each
            && let Err(e) = self.consumer.commit_consumer_state(CommitMode::Async)
        {
            tracing::debug!(receiver = self.id, %e, "kafka: commit");
        }
    }

    /// A record that can never be taken: counted, logged and passed over.
    fn give_up(&self, record: &Record, signal: Option<Signal>, why: &str) {
        tracing::warn!(
            receiver = self.id,
            topic = record.topic,
            partition = record.partition,
            offset = record.offset,
            "kafka: a record cannot be taken and is passed over: {why}"
        );
        if let Some(signal) = signal {
            metrics::counter!(
                names::kafka_receiver_unmarshal_failed(signal),
                "receiver" => self.id.clone(),
                "topic" => record.topic.clone(),
                "partition" => record.partition.to_string()
            )
            .increment(1);
        }
        self.taken(record, "failure");
    }
}

/// `wait` drawn uniformly within ± `factor` of itself.
fn jittered(wait: Duration, factor: f64) -> Duration {
    let factor = factor.clamp(0.0, 1.0);
    wait.mul_f64(1.0 + factor * (2.0 * rand::random::<f64>() - 1.0))
}

/// Refusals no retry can change: the record is malformed or larger than memory can ever hold.
fn permanent(e: &ConsumeError) -> bool {
    matches!(e.code, ErrorCode::InvalidData | ErrorCode::TooLarge)
}

fn record(m: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    Record {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
    }
}

/// Every 5 s, the lag of each assigned partition: the broker's high watermark less the
/// consumer's position (or its committed offset before it has read any).
async fn watch_lag(id: String, consumer: Arc<KafkaConsumer>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let c = Arc::clone(&consumer);
        let lags = tokio::task::spawn_blocking(move || {
            let mut lags = Vec::new();
            let (Ok(position), Ok(committed)) = (c.position(), c.committed(Duration::from_secs(2)))
            else {
                return lags;
            };
            for e in position.elements() {
                let Ok((_, high)) =
                    c.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2))
                else {
                    continue;
                };
                let at = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => committed
                        .find_partition(e.topic(), e.partition())
                        .and_then(|c| c.offset().to_raw()),
                };
                let lag = at.map_or(high, |at| (high - at).max(0));
                lags.push((e.topic().to_owned(), e.partition(), lag));
            }
            lags
        })
        .await
        .unwrap_or_default();
        for (topic, partition, lag) in lags {
            metrics::gauge!(
                names::KAFKA_RECEIVER_OFFSET_LAG,
                "receiver" => id.clone(),
                "topic" => topic,
                "partition" => partition.to_string()
            )
            .set(lag as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(config: Value) -> Vec<String> {
        KafkaReceiverFactory
            .check("receivers.kafka", &config)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn the_collector_s_config_is_accepted_with_warnings_where_sluice_does_better() {
        let got = problems(serde_json::json!({
            "brokers": ["kafka:9092"], "client_id": "writer", "group_id": "writers",
            "traces": {"topics": ["^otlp_spans.*"], "encoding": "otlp_json"},
            "metrics": {"topics": ["otlp_metrics"]}, "logs": {"topic": "otlp_logs"},
            "initial_offset": "earliest", "session_timeout": "30s", "heartbeat_interval": "5s",
            "group_rebalance_strategies": ["range", "roundrobin"], "group_instance_id": "w-0",
            "min_fetch_size": 1, "max_fetch_size": 2_097_152, "max_fetch_wait": "500ms",
            "autocommit": {"enable": true, "interval": "2s"},
            "message_marking": {"after": false, "on_error": true},
            "error_backoff": {"enabled": true, "initial_interval": "1s", "max_interval": "10s"},
            "metadata": {"full": true}, "telemetry": {"metrics": {"kafka_receiver_records_delay": {"enabled": false}}},
        }));
        assert_eq!(
            got,
            vec![
                "receivers.kafka.message_marking.after: sluice marks a record only after the pipeline has taken it",
                "receivers.kafka.message_marking.on_error: sluice retries a record the pipeline refuses and never marks it",
            ]
        );
    }

    #[test]
    fn what_the_receiver_cannot_honour_is_refused_by_path() {
        let got = problems(serde_json::json!({
            "topic": "spans", "encoding": "raw",
            "traces": {"topics": ["shared", "^(bad"], "exclude_topics": ["x"]},
            "logs": {"topics": ["shared"]},
            "initial_offset": "oldest", "group_rebalance_strategies": ["sticky"],
            "header_extraction": {"extract_headers": true}, "heartbeat_interval": "20s",
            "use_leader_epoch": false, "telemetry": {"metrics": {"kafka_receiver_records_delay": {"enabled": true}}},
        }));
        for want in [
            "receivers.kafka.topic: one kafka receiver serves every signal here",
            "receivers.kafka.encoding: encoding \"raw\" is not supported by sluice",
            "receivers.kafka.traces.exclude_topics: not supported by sluice",
            "receivers.kafka.traces.topics: bad pattern \"^(bad\"",
            "receivers.kafka.logs.topics: topic \"shared\" is also the traces topic",
            "receivers.kafka.initial_offset: latest or earliest",
            "receivers.kafka.group_rebalance_strategies: sticky is not offered by librdkafka",
            "receivers.kafka.header_extraction.extract_headers: not supported by sluice",
            "receivers.kafka.heartbeat_interval: must be shorter than session_timeout",
            "receivers.kafka.use_leader_epoch: librdkafka always uses leader epochs",
            "receivers.kafka.telemetry.metrics.kafka_receiver_records_delay.enabled: otelcol_kafka_receiver_records_delay is not produced by sluice",
        ] {
            assert!(
                got.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {got:#?}"
            );
        }
    }

    #[test]
    fn backoff_waits_are_drawn_within_the_randomization_factor() {
        let wait = Duration::from_millis(1000);
        assert_eq!(jittered(wait, 0.0), wait);
        let draws: Vec<Duration> = (0..1000).map(|_| jittered(wait, 0.5)).collect();
        assert!(draws.iter().all(|d| (500..=1500).contains(&d.as_millis())));
        assert!(
            draws.iter().any(|d| d.as_millis() < 900) && draws.iter().any(|d| d.as_millis() > 1100)
        );
    }

    #[test]
    fn topics_route_to_their_signal_by_name_or_pattern() {
        let routes = Routes {
            exact: BTreeMap::from([("otlp_logs".to_owned(), (Signal::Logs, false))]),
            patterns: vec![(Regex::new("^spans-.*").unwrap(), Signal::Traces, true)],
        };
        assert_eq!(routes.route("otlp_logs"), Some((Signal::Logs, false)));
        assert_eq!(routes.route("spans-eu"), Some((Signal::Traces, true)));
        assert_eq!(routes.route("other"), None);
    }

    #[test]
    fn offsets_are_stored_by_the_receiver_and_only_stored_ones_committed() {
        let c: KafkaReceiverConfig =
            serde_json::from_value(serde_json::json!({"autocommit": {"interval": "2s"}})).unwrap();
        let p = c.properties();
        for (k, v) in [
            ("enable.auto.offset.store", "false"),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "2000"),
            ("group.id", "otel-collector"),
            ("auto.offset.reset", "latest"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("queued.max.messages.kbytes", "16384"),
        ] {
            assert_eq!(p.get(k).map(String::as_str), Some(v), "{k}");
        }
    }
}
