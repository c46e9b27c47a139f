//! The span metrics' state: per resource, per set of dimensions, a call count and a duration
//! histogram; read from encoded spans through the item view (no span is decoded), written out
//! as an OTLP metrics request at each flush.
//!
//! Memory is bounded whatever the input: at most `max_resources` resources (the least recently
//! seen is evicted, as the Collector's LRU does), at most `cardinality_limit` series per resource
//! and `max_series` in all. A span whose series would pass a limit is counted in its resource's
//! overflow series (`otel.metric.overflow="true"`), so no call is lost from the totals.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue as ProtoValue, InstrumentationScope, KeyValue as ProtoKeyValue, any_value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    exemplar, exponential_histogram_data_point::Buckets, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use prost::Message;
use sluice_core::view::{Context, Editor, Item, Resource, Span, Verdict};

use foldhash::{HashMap, HashMapExt};

use super::exponential::Exponential;

/// The scope name of the metrics written, as the Collector's.
pub(crate) const SCOPE_NAME: &str = "spanmetricsconnector";
/// The attribute that marks a resource's overflow series.
pub(crate) const OVERFLOW_ATTRIBUTE: &str = "otel.metric.overflow";

/// How durations are recorded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HistogramKind {
    /// No duration metric.
    Disabled,
    /// Explicit bucket bounds, in the unit.
    Explicit(Vec<f64>),
    /// Base-2 exponential buckets, at most this many.
    Exponential(usize),
}

/// An additional dimension: an attribute of the span, else of its resource, else `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dimension {
    pub(crate) name: String,
    pub(crate) default: Option<String>,
}

/// Which of the four base dimensions are kept (`exclude_dimensions` drops some).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Base {
    pub(crate) service: bool,
    pub(crate) name: bool,
    pub(crate) kind: bool,
    pub(crate) status: bool,
}

/// What the aggregation does, from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) calls_name: String,
    pub(crate) duration_name: String,
    pub(crate) base: Base,
    pub(crate) dimensions: Vec<Dimension>,
    pub(crate) histogram: HistogramKind,
    /// `ms` or `s`: the unit of durations.
    pub(crate) unit: &'static str,
    /// Exemplars kept per data point and flush; 0 for none.
    pub(crate) exemplars: usize,
    pub(crate) delta: bool,
    /// Series without a span for this long are dropped; 0 never.
    pub(crate) expiration_ns: u64,
    /// Series per resource; 0 for no limit but `max_series`.
    pub(crate) cardinality_limit: usize,
    pub(crate) max_series: usize,
    pub(crate) max_resources: usize,
    /// Resource attributes that identify a resource; empty for all of them.
    pub(crate) key_attributes: Vec<String>,
}

impl Settings {
    fn nanos_per_unit(&self) -> f64 {
        if self.unit == "s" { 1e9 } else { 1e6 }
    }
}

/// What a flush produced: the request and its number of data points.
#[derive(Debug)]
pub(crate) struct Flushed {
    pub(crate) request: ExportMetricsServiceRequest,
    pub(crate) points: usize,
}

#[derive(Debug, Clone)]
enum Durations {
    None,
    Explicit { counts: Vec<u64> },
    Exponential(Exponential),
}

#[derive(Debug, Clone)]
struct Series {
    attributes: Vec<ProtoKeyValue>,
    start_ns: u64,
    last_ns: u64,
    calls: u64,
    durations: Durations,
    sum: f64,
    min: f64,
    max: f64,
    /// A ring of the latest exemplars of this flush interval, made into OTLP exemplars only
    /// when written out.
    exemplars: Vec<Sample>,
    next_exemplar: usize,
}

impl Series {
    fn new(attributes: Vec<ProtoKeyValue>, settings: &Settings, now: u64) -> Series {
        Series {
            attributes,
            start_ns: now,
            last_ns: now,
            calls: 0,
            durations: empty_durations(&settings.histogram),
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            exemplars: Vec::new(),
            next_exemplar: 0,
        }
    }

    fn record(&mut self, settings: &Settings, span: &SpanFacts<'_>, now: u64) {
        self.calls += 1;
        self.last_ns = now;
        let value = span.duration_ns as f64 / settings.nanos_per_unit();
        match &mut self.durations {
            Durations::None => return,
            Durations::Explicit { counts } => {
                let HistogramKind::Explicit(bounds) = &settings.histogram else {
                    return;
                };
                // Bucket i holds (bounds[i-1], bounds[i]]; the last holds the rest.
                counts[bounds.partition_point(|b| *b < value)] += 1;
            }
            Durations::Exponential(h) => h.record(value),
        }
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if settings.exemplars > 0 {
            let mut e = Sample {
                time_unix_nano: span.end_ns,
                trace_id: [0; 16],
                span_id: [0; 8],
                value,
            };
            if let (Ok(trace), Ok(span_id)) = (
                <[u8; 16]>::try_from(span.trace_id),
                <[u8; 8]>::try_from(span.span_id),
            ) {
                e.trace_id = trace;
                e.span_id = span_id;
            }
            if self.exemplars.len() < settings.exemplars {
                self.exemplars.push(e);
            } else {
                self.exemplars[self.next_exemplar] = e;
                self.next_exemplar = (self.next_exemplar + 1) % settings.exemplars;
            }
        }
    }

    /// Clears what one flush interval gathered (all of it for delta, exemplars for cumulative).
    fn reset(&mut self, settings: &Settings, delta: bool, now: u64) {
        self.exemplars.clear();
        self.next_exemplar = 0;
        if delta {
            self.calls = 0;
            self.durations = empty_durations(&settings.histogram);
            self.sum = 0.0;
            self.min = f64::INFINITY;
            self.max = f64::NEG_INFINITY;
            self.start_ns = now;
        }
    }
}

/// A span kept as an exemplar.
#[derive(Debug, Clone, Copy)]
struct Sample {
    time_unix_nano: u64,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    value: f64,
}

impl Sample {
    fn exemplar(&self) -> Exemplar {
        Exemplar {
            time_unix_nano: self.time_unix_nano,
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            value: Some(exemplar::Value::AsDouble(self.value)),
            ..Default::default()
        }
    }
}

fn empty_durations(kind: &HistogramKind) -> Durations {
    match kind {
        HistogramKind::Disabled => Durations::None,
        HistogramKind::Explicit(bounds) => Durations::Explicit {
            counts: vec![0; bounds.len() + 1],
        },
        HistogramKind::Exponential(max) => Durations::Exponential(Exponential::new(*max)),
    }
}

struct ResourceState {
    key: Box<[u8]>,
    attributes: Vec<ProtoKeyValue>,
    /// `service.name` as the series key writes it, and as the attribute carries it.
    service: Option<(Vec<u8>, ProtoValue)>,
    /// Per additional dimension: the resource's value, if it has one.
    dimensions: Vec<Option<(Vec<u8>, ProtoValue)>>,
    series: HashMap<Box<[u8]>, Series>,
    overflow: Option<Series>,
    last_seen: u64,
}

/// The facts of one span the aggregation uses.
struct SpanFacts<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    end_ns: u64,
    duration_ns: u64,
}

/// All span metrics state of one connector.
pub(crate) struct Aggregator {
    settings: Settings,
    resources: Vec<ResourceState>,
    index: HashMap<Box<[u8]>, usize>,
    series: usize,
    last_flush_ns: u64,
    /// Spans counted in overflow series since the start.
    pub(crate) overflowed: u64,
    key: Vec<u8>,
}

impl Aggregator {
    pub(crate) fn new(settings: Settings, now: u64) -> Aggregator {
        Aggregator {
            settings,
            resources: Vec::new(),
            index: HashMap::new(),
            series: 0,
            last_flush_ns: now,
            overflowed: 0,
            key: Vec::new(),
        }
    }

    /// About how many bytes the series take (900 a series, as measured by the bench).
    pub(crate) fn held_bytes(&self) -> usize {
        self.series * 900
    }

    /// Series held now (overflow series aside).
    #[cfg(test)]
    pub(crate) fn series(&self) -> usize {
        self.series
    }

    /// Resources held now.
    #[cfg(test)]
    pub(crate) fn resources(&self) -> usize {
        self.resources.len()
    }

    /// Counts the spans of an encoded traces request at time `now`.
    pub(crate) fn add(&mut self, batch: sluice_core::Batch, now: u64) {
        let mut reader = Reader {
            aggregator: self,
            current: None,
            now,
        };
        // The reader keeps every item: the batch comes back unchanged and is dropped.
        let _ = batch.edit(&mut reader);
    }

    /// The resource's index, created (evicting the least recently seen when full) if new.
    fn resource(&mut self, resource: &Resource<'_>, now: u64) -> usize {
        let key = self.resource_key(resource);
        if let Some(&i) = self.index.get(&key[..]) {
            self.resources[i].last_seen = now;
            return i;
        }
        if self.resources.len() >= self.settings.max_resources.max(1) {
            self.evict_least_recent();
        }
        let decoded = resource.decode();
        let find = |name: &str| {
            decoded
                .attributes
                .iter()
                .find(|kv| kv.key == name)
                .and_then(|kv| kv.value.clone())
                .map(|v| (v.encode_to_vec(), v))
        };
        let state = ResourceState {
            key: key.clone(),
            service: find("service.name"),
            dimensions: self
                .settings
                .dimensions
                .iter()
                .map(|d| find(&d.name))
                .collect(),
            attributes: decoded.attributes,
            series: HashMap::new(),
            overflow: None,
            last_seen: now,
        };
        self.resources.push(state);
        let i = self.resources.len() - 1;
        self.index.insert(key, i);
        i
    }

    /// The identity of a resource: its key attributes (all of them by default), sorted by key.
    fn resource_key(&self, resource: &Resource<'_>) -> Box<[u8]> {
        let mut attributes: Vec<(&str, &[u8])> = resource
            .attributes()
            .filter(|kv| {
                self.settings.key_attributes.is_empty()
                    || self.settings.key_attributes.iter().any(|k| kv.has_key(k))
            })
            .map(|kv| (kv.key(), kv.raw()))
            .collect();
        attributes.sort_unstable();
        let mut key = Vec::new();
        for (_, raw) in attributes {
            push_part(&mut key, raw);
        }
        key.into_boxed_slice()
    }

    fn evict_least_recent(&mut self) {
        let Some((i, _)) = self
            .resources
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| r.last_seen)
        else {
            return;
        };
        self.remove_resource(i);
    }

    fn remove_resource(&mut self, i: usize) {
        let removed = self.resources.swap_remove(i);
        self.index.remove(&removed.key);
        self.series -= removed.series.len();
        if let Some(moved) = self.resources.get(i) {
            self.index.insert(moved.key.clone(), i);
        }
    }

    fn span(&mut self, resource: usize, span: &Span<'_>, now: u64) {
        let summary = span.summary();
        let settings = &self.settings;
        let state = &self.resources[resource];
        // The series key: each part length-prefixed, so that no two sets of values collide.
        let key = &mut self.key;
        key.clear();
        if settings.base.service {
            push_part(key, state.service.as_ref().map_or(&[][..], |s| &s.0));
        }
        if settings.base.name {
            push_part(key, summary.name.as_bytes());
        }
        if settings.base.kind {
            key.push(summary.kind.clamp(0, 255) as u8);
        }
        if settings.base.status {
            key.push(summary.status_code.clamp(0, 255) as u8);
        }
        // Each dimension from the span's attributes, else the resource's, else its default.
        let mut found: Vec<Option<&[u8]>> = vec![None; settings.dimensions.len()];
        if !settings.dimensions.is_empty() {
            for kv in span.attributes() {
                if let Some(i) = settings.dimensions.iter().position(|d| kv.has_key(&d.name))
                    && found[i].is_none()
                {
                    found[i] = Some(kv.raw());
                }
            }
        }
        for (i, dimension) in settings.dimensions.iter().enumerate() {
            match (found[i], &state.dimensions[i], &dimension.default) {
                (Some(raw), _, _) => {
                    key.push(1);
                    push_part(key, raw);
                }
                (None, Some((raw, _)), _) => {
                    key.push(2);
                    push_part(key, raw);
                }
                (None, None, Some(_)) => key.push(3),
                (None, None, None) => key.push(0),
            }
        }
        let facts = SpanFacts {
            trace_id: summary.trace_id,
            span_id: summary.span_id,
            end_ns: summary.end_time_unix_nano,
            duration_ns: summary
                .end_time_unix_nano
                .saturating_sub(summary.start_time_unix_nano),
        };
        if let Some(series) = self.resources[resource].series.get_mut(&self.key[..]) {
            series.record(&self.settings, &facts, now);
            return;
        }
        let state = &self.resources[resource];
        let full = (settings.cardinality_limit > 0
            && state.series.len() >= settings.cardinality_limit)
            || self.series >= settings.max_series;
        if full {
            self.overflowed += 1;
            let state = &mut self.resources[resource];
            let overflow = state.overflow.get_or_insert_with(|| {
                Series::new(
                    vec![ProtoKeyValue {
                        key: OVERFLOW_ATTRIBUTE.to_owned(),
                        value: Some(ProtoValue {
                            value: Some(any_value::Value::BoolValue(true)),
                        }),
                        ..Default::default()
                    }],
                    &self.settings,
                    now,
                )
            });
            overflow.record(&self.settings, &facts, now);
            return;
        }
        let attributes = series_attributes(settings, state, &summary, &found);
        let mut series = Series::new(attributes, settings, now);
        series.record(settings, &facts, now);
        let key = self.key.clone().into_boxed_slice();
        self.resources[resource].series.insert(key, series);
        self.series += 1;
    }

    /// The metrics of everything held, as at `now`; then clears what a flush interval gathers.
    /// Series without a span for `expiration` go first. `None` when there is nothing to send.
    pub(crate) fn flush(&mut self, now: u64) -> Option<Flushed> {
        self.expire(now);
        let settings = &self.settings;
        let delta = settings.delta;
        let temporality = if delta {
            AggregationTemporality::Delta
        } else {
            AggregationTemporality::Cumulative
        } as i32;
        let mut resource_metrics = Vec::new();
        let mut points = 0;
        for state in &mut self.resources {
            let mut calls = Vec::new();
            let mut explicit = Vec::new();
            let mut exponential = Vec::new();
            let series = state.series.values_mut().chain(state.overflow.as_mut());
            for s in series {
                if delta && s.calls == 0 {
                    continue;
                }
                let start = if delta {
                    s.start_ns.max(self.last_flush_ns)
                } else {
                    s.start_ns
                };
                calls.push(NumberDataPoint {
                    attributes: s.attributes.clone(),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsInt(
                        i64::try_from(s.calls).unwrap_or(i64::MAX),
                    )),
                    ..Default::default()
                });
                let (min, max) = if s.calls > 0 && s.min.is_finite() {
                    (Some(s.min), Some(s.max))
                } else {
                    (None, None)
                };
                match &s.durations {
                    Durations::None => {}
                    Durations::Explicit { counts } => {
                        let HistogramKind::Explicit(bounds) = &settings.histogram else {
                            continue;
                        };
                        explicit.push(HistogramDataPoint {
                            attributes: s.attributes.clone(),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count: s.calls,
                            sum: Some(s.sum),
                            bucket_counts: counts.clone(),
                            explicit_bounds: bounds.clone(),
                            exemplars: s.exemplars.iter().map(Sample::exemplar).collect(),
                            min,
                            max,
                            ..Default::default()
                        });
                    }
                    Durations::Exponential(h) => {
                        exponential.push(ExponentialHistogramDataPoint {
                            attributes: s.attributes.clone(),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count: s.calls,
                            sum: Some(s.sum),
                            scale: h.scale,
                            zero_count: h.zero_count,
                            positive: Some(Buckets {
                                offset: h.offset,
                                bucket_counts: h.counts.clone(),
                            }),
                            negative: None,
                            exemplars: s.exemplars.iter().map(Sample::exemplar).collect(),
                            min,
                            max,
                            ..Default::default()
                        });
                    }
                }
                s.reset(settings, delta, now);
            }
            if calls.is_empty() {
                continue;
            }
            points += calls.len() + explicit.len() + exponential.len();
            let mut metrics = vec![Metric {
                name: settings.calls_name.clone(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: calls,
                    aggregation_temporality: temporality,
                    is_monotonic: true,
                })),
                ..Default::default()
            }];
            let duration = |data| Metric {
                name: settings.duration_name.clone(),
                unit: settings.unit.to_owned(),
                data: Some(data),
                ..Default::default()
            };
            if !explicit.is_empty() {
                metrics.push(duration(metric::Data::Histogram(Histogram {
                    data_points: explicit,
                    aggregation_temporality: temporality,
                })));
            }
            if !exponential.is_empty() {
                metrics.push(duration(metric::Data::ExponentialHistogram(
                    ExponentialHistogram {
                        data_points: exponential,
                        aggregation_temporality: temporality,
                    },
                )));
            }
            resource_metrics.push(ResourceMetrics {
                resource: Some(ProtoResource {
                    attributes: state.attributes.clone(),
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.to_owned(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        if delta {
            // Nothing carries over from one delta interval to the next: the series go, and
            // their memory with them.
            for state in &mut self.resources {
                state.series.clear();
                state.overflow = None;
            }
            self.series = 0;
        }
        self.last_flush_ns = now;
        (points > 0).then_some(Flushed {
            request: ExportMetricsServiceRequest { resource_metrics },
            points,
        })
    }

    /// Drops series, and then resources, without a span for `expiration`.
    fn expire(&mut self, now: u64) {
        let expiration = self.settings.expiration_ns;
        if expiration == 0 {
            return;
        }
        let stale = |s: &Series| now.saturating_sub(s.last_ns) > expiration;
        let mut removed = 0;
        for state in &mut self.resources {
            let before = state.series.len();
            state.series.retain(|_, s| !stale(s));
            removed += before - state.series.len();
            if state.overflow.as_ref().is_some_and(stale) {
                state.overflow = None;
            }
        }
        self.series -= removed;
        let mut i = 0;
        while i < self.resources.len() {
            let r = &self.resources[i];
            if r.series.is_empty() && r.overflow.is_none() {
                self.remove_resource(i);
            } else {
                i += 1;
            }
        }
    }
}

/// Appends a length-prefixed part to a key.
fn push_part(key: &mut Vec<u8>, part: &[u8]) {
    prost::encoding::encode_varint(part.len() as u64, key);
    key.extend_from_slice(part);
}

/// The data point attributes of a new series.
fn series_attributes(
    settings: &Settings,
    state: &ResourceState,
    summary: &sluice_core::view::SpanSummary<'_>,
    found: &[Option<&[u8]>],
) -> Vec<ProtoKeyValue> {
    let string = |key: &str, value: &str| ProtoKeyValue {
        key: key.to_owned(),
        value: Some(ProtoValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(4 + settings.dimensions.len());
    if settings.base.service
        && let Some((_, value)) = &state.service
    {
        out.push(ProtoKeyValue {
            key: "service.name".to_owned(),
            value: Some(value.clone()),
            ..Default::default()
        });
    }
    if settings.base.name {
        out.push(string("span.name", summary.name));
    }
    if settings.base.kind {
        out.push(string("span.kind", kind_name(summary.kind)));
    }
    if settings.base.status {
        out.push(string("status.code", status_name(summary.status_code)));
    }
    for (i, dimension) in settings.dimensions.iter().enumerate() {
        let value = match (found[i], &state.dimensions[i], &dimension.default) {
            (Some(raw), _, _) => ProtoKeyValue::decode(raw).ok().and_then(|kv| kv.value),
            (None, Some((_, value)), _) => Some(value.clone()),
            (None, None, Some(default)) => Some(ProtoValue {
                value: Some(any_value::Value::StringValue(default.clone())),
            }),
            (None, None, None) => None,
        };
        if let Some(value) = value {
            out.push(ProtoKeyValue {
                key: dimension.name.clone(),
                value: Some(value),
                ..Default::default()
            });
        }
    }
    out
}

/// `span.kind` as the Collector writes it.
fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

/// `status.code` as the Collector writes it.
fn status_name(code: i32) -> &'static str {
    match code {
        1 => "STATUS_CODE_OK",
        2 => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}

/// Walks a traces batch, counting each span into its resource's series.
struct Reader<'a> {
    aggregator: &'a mut Aggregator,
    current: Option<usize>,
    now: u64,
}

impl Editor for Reader<'_> {
    fn resource(&mut self, resource: &Resource<'_>) -> Verdict {
        self.current = Some(self.aggregator.resource(resource, self.now));
        Verdict::Keep
    }

    fn item(&mut self, _context: &Context<'_>, item: &Item<'_>) -> Verdict {
        if let (Some(resource), Item::Span(span)) = (self.current, item) {
            self.aggregator.span(resource, span, self.now);
        }
        Verdict::Keep
    }
}
