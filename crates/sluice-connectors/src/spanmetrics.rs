//! The `spanmetrics` connector: traces in, RED metrics out (request counts, errors among them by
//! `status.code`, and a duration histogram), in the Collector's config and metric names:
//! `traces.span.metrics.calls` and `traces.span.metrics.duration` by `service.name`, `span.name`,
//! `span.kind`, `status.code` and the configured dimensions. In Prometheus they read
//! `traces_span_metrics_calls_total` and `traces_span_metrics_duration_milliseconds_bucket`.
//!
//! Spans are read through the item view, never decoded. The state is written out every
//! `metrics_flush_interval` into the metrics pipelines that receive from the connector, and once
//! more at shutdown. Memory is bounded whatever the input (see [`aggregate`]).

mod aggregate;
mod exponential;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use prost::Message;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::{HumanDuration, Problem};
use sluice_core::{
    Batch, BuildError, ConnectorComponent, ConnectorContext, ConnectorFactory, ConsumeError,
    Consumer, Fanout, FanoutPolicy, Signal, typed,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use aggregate::{Aggregator, Base, Dimension, HistogramKind, Settings};

/// Batches larger than this are counted on the blocking pool.
const OFF_WORKERS_ABOVE: usize = 256 * 1024;

/// The Collector's default duration buckets, in milliseconds.
const DEFAULT_BUCKETS_MS: [f64; 16] = [
    2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0,
    10_000.0, 15_000.0,
];

/// `connectors.spanmetrics`, in the shape of the Collector's connector of that name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanMetricsConfig {
    /// Prefixed, with a dot, to the metric names (default `traces.span.metrics`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Dimensions added to the four base ones: a span attribute, else a resource attribute,
    /// else `default`; without a default a missing dimension is left out.
    #[serde(default)]
    pub dimensions: Vec<DimensionConfig>,
    /// Base dimensions to leave out (`service.name`, `span.name`, `span.kind`, `status.code`).
    #[serde(default)]
    pub exclude_dimensions: Vec<String>,
    /// The duration histogram.
    #[serde(default)]
    pub histogram: HistogramConfig,
    /// Exemplars on the duration histogram.
    #[serde(default)]
    pub exemplars: ExemplarsConfig,
    /// How often the metrics are written out (default `60s`).
    #[serde(default = "default_flush")]
    pub metrics_flush_interval: HumanDuration,
    /// Series without a span for this long are no longer written; `0` (default) never.
    #[serde(default)]
    pub metrics_expiration: HumanDuration,
    /// `AGGREGATION_TEMPORALITY_CUMULATIVE` (default) or `AGGREGATION_TEMPORALITY_DELTA`.
    #[serde(default)]
    pub aggregation_temporality: Temporality,
    /// Series per resource and metric; beyond it spans go to the overflow series
    /// (`otel.metric.overflow="true"`). `0` (default): only `max_series` limits.
    #[serde(default)]
    pub aggregation_cardinality_limit: usize,
    /// Resource attributes that identify a resource (default: all of them).
    #[serde(default)]
    pub resource_metrics_key_attributes: Vec<String>,
    /// Resources held at once; the least recently seen goes first (default `1000`).
    #[serde(default = "default_resources")]
    pub resource_metrics_cache_size: usize,
    /// Accepted for compatibility: sluice keys series by their values directly, with no cache.
    #[serde(default)]
    pub dimensions_cache_size: Option<usize>,
    /// Accepted for compatibility: delta series carry their start time without a cache.
    #[serde(default)]
    pub delta_temporality: Option<DeltaConfig>,
    /// The events metric; `enabled: true` is refused (not implemented).
    #[serde(default)]
    pub events: Option<EventsConfig>,
    /// Series held in all, across resources (default `100000`): the bound on memory whatever
    /// the input. Sluice's own key.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

/// One additional dimension.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimensionConfig {
    /// The attribute key.
    pub name: String,
    /// The value when neither the span nor its resource has the attribute.
    #[serde(default)]
    pub default: Option<String>,
}

/// `histogram`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistogramConfig {
    /// No duration metric at all.
    #[serde(default)]
    pub disable: bool,
    /// `ms` (default) or `s`.
    #[serde(default)]
    pub unit: DurationUnit,
    /// Explicit buckets (the default kind).
    #[serde(default)]
    pub explicit: Option<ExplicitConfig>,
    /// Exponential buckets instead.
    #[serde(default)]
    pub exponential: Option<ExponentialConfig>,
}

/// `histogram.explicit`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplicitConfig {
    /// Bucket bounds as durations (default: the Collector's, 2ms to 15s).
    #[serde(default)]
    pub buckets: Option<Vec<HumanDuration>>,
}

/// `histogram.exponential`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExponentialConfig {
    /// Most buckets (default `160`).
    #[serde(default = "default_max_size")]
    pub max_size: usize,
}

/// `histogram.unit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum DurationUnit {
    /// Milliseconds.
    #[default]
    #[serde(rename = "ms")]
    Milliseconds,
    /// Seconds.
    #[serde(rename = "s")]
    Seconds,
}

/// `exemplars`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExemplarsConfig {
    /// Attach spans as exemplars (trace and span ids, the duration) to the histogram.
    #[serde(default)]
    pub enabled: bool,
    /// Exemplars per data point per flush: the latest are kept (default `5`).
    #[serde(default = "default_exemplars")]
    pub max_per_data_point: usize,
}

impl Default for ExemplarsConfig {
    fn default() -> Self {
        ExemplarsConfig {
            enabled: false,
            max_per_data_point: default_exemplars(),
        }
    }
}

/// `aggregation_temporality`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Temporality {
    /// Totals since the series began.
    #[default]
    #[serde(rename = "AGGREGATION_TEMPORALITY_CUMULATIVE")]
    Cumulative,
    /// Counts since the last flush.
    #[serde(rename = "AGGREGATION_TEMPORALITY_DELTA")]
    Delta,
}

/// `delta_temporality`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaConfig {
    /// Accepted for compatibility.
    #[serde(default)]
    pub metric_timestamp_cache_size: Option<usize>,
}

/// `events`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Whether the events metric is written.
    #[serde(default)]
    pub enabled: bool,
    /// Event attributes as its dimensions.
    #[serde(default)]
    pub dimensions: Vec<DimensionConfig>,
}

fn default_namespace() -> String {
    "traces.span.metrics".to_owned()
}
fn default_flush() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_resources() -> usize {
    1000
}
fn default_max_series() -> usize {
    100_000
}
fn default_max_size() -> usize {
    160
}
fn default_exemplars() -> usize {
    5
}

/// The four base dimensions.
const BASE_DIMENSIONS: [&str; 4] = ["service.name", "span.name", "span.kind", "status.code"];

impl SpanMetricsConfig {
    fn check(&self, path: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        // Accepted so that Collector configs run, but said out loud: they size caches sluice
        // does not have (what they protect is bounded by max_series and the resource LRU).
        if self.dimensions_cache_size.is_some() {
            p.push(Problem::warning(
                format!("{path}.dimensions_cache_size"),
                "has no effect in sluice: series are keyed by their values, with no cache to size; memory is bounded by max_series",
            ));
        }
        if self
            .delta_temporality
            .as_ref()
            .is_some_and(|d| d.metric_timestamp_cache_size.is_some())
        {
            p.push(Problem::warning(
                format!("{path}.delta_temporality.metric_timestamp_cache_size"),
                "has no effect in sluice: delta series carry their start time without a cache",
            ));
        }
        let mut seen: Vec<&str> = BASE_DIMENSIONS.to_vec();
        for (i, d) in self.dimensions.iter().enumerate() {
            if seen.contains(&d.name.as_str()) {
                p.push(Problem::error(
                    format!("{path}.dimensions[{i}].name"),
                    format!("duplicate dimension `{}`", d.name),
                ));
            }
            seen.push(&d.name);
        }
        for (i, name) in self.exclude_dimensions.iter().enumerate() {
            if !BASE_DIMENSIONS.contains(&name.as_str()) {
                p.push(Problem::error(
                    format!("{path}.exclude_dimensions[{i}]"),
                    format!(
                        "`{name}` is not a base dimension (one of {})",
                        BASE_DIMENSIONS.join(", ")
                    ),
                ));
            }
        }
        if self.histogram.explicit.is_some() && self.histogram.exponential.is_some() {
            p.push(Problem::error(
                format!("{path}.histogram"),
                "use either `explicit` or `exponential` buckets, not both",
            ));
        }
        if let Some(buckets) = self
            .histogram
            .explicit
            .as_ref()
            .and_then(|e| e.buckets.as_ref())
            && buckets.windows(2).any(|w| w[0].0 >= w[1].0)
        {
            p.push(Problem::error(
                format!("{path}.histogram.explicit.buckets"),
                "bounds must be strictly increasing",
            ));
        }
        if let Some(e) = &self.histogram.exponential
            && !(1..=1_000_000).contains(&e.max_size)
        {
            p.push(Problem::error(
                format!("{path}.histogram.exponential.max_size"),
                "must be between 1 and 1000000",
            ));
        }
        if self.metrics_flush_interval.is_zero() {
            p.push(Problem::error(
                format!("{path}.metrics_flush_interval"),
                "must be more than zero",
            ));
        }
        if self.resource_metrics_cache_size == 0 {
            p.push(Problem::error(
                format!("{path}.resource_metrics_cache_size"),
                "must be at least 1",
            ));
        }
        if self.max_series == 0 {
            p.push(Problem::error(
                format!("{path}.max_series"),
                "must be at least 1",
            ));
        }
        if self.exemplars.enabled && self.exemplars.max_per_data_point == 0 {
            p.push(Problem::error(
                format!("{path}.exemplars.max_per_data_point"),
                "must be at least 1 when exemplars are enabled",
            ));
        }
        if self.events.as_ref().is_some_and(|e| e.enabled) {
            p.push(Problem::error(
                format!("{path}.events.enabled"),
                "the events metric is not supported by sluice's spanmetrics; remove `events`",
            ));
        }
        p
    }

    fn settings(&self) -> Settings {
        let name = |metric: &str| {
            if self.namespace.is_empty() {
                metric.to_owned()
            } else {
                format!("{}.{metric}", self.namespace)
            }
        };
        let excluded = |d: &str| self.exclude_dimensions.iter().any(|e| e == d);
        let unit_nanos = match self.histogram.unit {
            DurationUnit::Milliseconds => 1e6,
            DurationUnit::Seconds => 1e9,
        };
        let histogram = if self.histogram.disable {
            HistogramKind::Disabled
        } else if let Some(e) = &self.histogram.exponential {
            HistogramKind::Exponential(e.max_size)
        } else {
            match self
                .histogram
                .explicit
                .as_ref()
                .and_then(|e| e.buckets.as_ref())
            {
                Some(buckets) => HistogramKind::Explicit(
                    buckets
                        .iter()
                        .map(|d| d.0.as_nanos() as f64 / unit_nanos)
                        .collect(),
                ),
                None => HistogramKind::Explicit(
                    DEFAULT_BUCKETS_MS
                        .iter()
                        .map(|ms| ms * 1e6 / unit_nanos)
                        .collect(),
                ),
            }
        };
        Settings {
            calls_name: name("calls"),
            duration_name: name("duration"),
            base: Base {
                service: !excluded("service.name"),
                name: !excluded("span.name"),
                kind: !excluded("span.kind"),
                status: !excluded("status.code"),
            },
            dimensions: self
                .dimensions
                .iter()
                .map(|d| Dimension {
                    name: d.name.clone(),
                    default: d.default.clone(),
                })
                .collect(),
            histogram,
            unit: match self.histogram.unit {
                DurationUnit::Milliseconds => "ms",
                DurationUnit::Seconds => "s",
            },
            exemplars: if self.exemplars.enabled {
                self.exemplars.max_per_data_point
            } else {
                0
            },
            delta: self.aggregation_temporality == Temporality::Delta,
            expiration_ns: u64::try_from(self.metrics_expiration.0.as_nanos()).unwrap_or(u64::MAX),
            cardinality_limit: self.aggregation_cardinality_limit,
            max_series: self.max_series,
            max_resources: self.resource_metrics_cache_size,
            key_attributes: self.resource_metrics_key_attributes.clone(),
        }
    }
}

/// The wall clock in nanoseconds since the epoch.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Builds `spanmetrics` connectors.
#[derive(Debug, Default)]
pub struct SpanMetricsFactory;

impl ConnectorFactory for SpanMetricsFactory {
    fn type_name(&self) -> &'static str {
        "spanmetrics"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics"]
    }

    fn connects(&self, from: Signal, to: Signal) -> bool {
        from == Signal::Traces && to == Signal::Metrics
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &SpanMetricsConfig| c.check(path))
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ConnectorComponent>, BuildError> {
        let c: SpanMetricsConfig = typed(&format!("connectors.{id}"), config)?;
        Ok(Box::new(SpanMetrics {
            id: id.to_owned(),
            shared: Arc::new(Shared {
                aggregator: Mutex::new(Aggregator::new(c.settings(), now_ns())),
                output: OnceLock::new(),
                held_bytes: std::sync::atomic::AtomicUsize::new(0),
            }),
            interval: c.metrics_flush_interval.0,
        }))
    }
}

/// What the connector's inputs and its flush timer share.
struct Shared {
    aggregator: Mutex<Aggregator>,
    /// The metrics pipelines that receive from the connector.
    output: OnceLock<Arc<dyn Consumer>>,
    /// About how many bytes the state held at the last flush: where the next flush runs.
    held_bytes: std::sync::atomic::AtomicUsize,
}

impl Shared {
    /// Writes the metrics out; a refusal is logged (cumulative totals come again next flush).
    /// Building and encoding the request takes about a microsecond a series, so it runs off the
    /// async workers once the state is large.
    async fn flush(self: &Arc<Self>, id: &str) {
        let Some(output) = self.output.get() else {
            return;
        };
        let shared = Arc::clone(self);
        let held = self.held_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let flushed = sluice_core::blocking::off_workers(held, OFF_WORKERS_ABOVE, move || {
            let mut aggregator = shared.aggregator.lock().ok()?;
            let flushed = aggregator.flush(now_ns())?;
            shared.held_bytes.store(
                aggregator.held_bytes(),
                std::sync::atomic::Ordering::Relaxed,
            );
            Some((Bytes::from(flushed.request.encode_to_vec()), flushed.points))
        })
        .await
        .flatten();
        let Some((data, points)) = flushed else {
            return;
        };
        let batch = Batch::from_trusted(Signal::Metrics, data, points);
        if let Err(e) = output.consume(batch).await {
            tracing::warn!(connector = %id, points, error = %e, "span metrics refused downstream");
        }
    }
}

struct SpanMetrics {
    id: String,
    shared: Arc<Shared>,
    interval: Duration,
}

impl ConnectorComponent for SpanMetrics {
    fn instance(&self, ctx: ConnectorContext) -> Result<Arc<dyn Consumer>, BuildError> {
        let consumers: Vec<Arc<dyn Consumer>> = ctx
            .routes
            .into_values()
            .filter(|route| route.signal == Signal::Metrics)
            .map(|route| route.consumer)
            .collect();
        if consumers.is_empty() {
            return Err(BuildError::Other(format!(
                "connector {} has no metrics pipeline to write to",
                ctx.id
            )));
        }
        // Every traces pipeline that lists the connector feeds one state, written to the same
        // metrics pipelines.
        let _ = self
            .shared
            .output
            .set(Fanout::build(consumers, FanoutPolicy::All));
        Ok(Arc::new(Input {
            shared: Arc::clone(&self.shared),
        }))
    }

    fn start(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let shared = Arc::clone(&self.shared);
        let interval = self.interval;
        let id = self.id.clone();
        vec![tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => shared.flush(&id).await,
                    () = shutdown.cancelled() => {
                        shared.flush(&id).await;
                        return;
                    }
                }
            }
        })]
    }
}

/// The exporter side in one traces pipeline.
struct Input {
    shared: Arc<Shared>,
}

#[async_trait]
impl Consumer for Input {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let shared = Arc::clone(&self.shared);
        let size = batch.size();
        sluice_core::blocking::off_workers(size, OFF_WORKERS_ABOVE, move || {
            if let Ok(mut aggregator) = shared.aggregator.lock() {
                aggregator.add(batch, now_ns());
            }
        })
        .await;
        Ok(())
    }
}
