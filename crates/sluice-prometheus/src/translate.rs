//! OTLP metrics to Prometheus remote-write 1.0 time series, by the OpenTelemetry specification's
//! "OTLP Metric points to Prometheus" rules (compatibility/prometheus_and_openmetrics.md).
//!
//! Naming is in [`naming`], native histograms in [`native`]; each documents its own departures
//! from the Collector. Here, where the specification and the Collector's translator (contrib's
//! `prometheusremotewrite`) differ, the specification wins:
//!
//! * **Scope labels by default:** `otel_scope_name`, `otel_scope_version`,
//!   `otel_scope_schema_url` and `otel_scope_<attribute>` on every series ("MUST by default");
//!   scope attributes that would become one of those three are dropped. The Collector's exporter
//!   adds none.
//! * **Label collisions take part in merging**, including the scope labels ("or other labels
//!   added by this specification"): every pair of keys that map to the same label name has its
//!   values joined with `;` in the byte order of the original keys. The scope labels count as the
//!   keys `otel_scope_name` and so on, a scope attribute `a` as `otel_scope_a`.
//! * **`target_info` is emitted for every resource with attributes besides `service.name`,
//!   `service.namespace` and `service.instance.id`** ("if the resource is not empty"), even
//!   without `job` or `instance`; the Collector also requires one of those.
//! * **Exemplars of non-monotonic sums are dropped** ("Otherwise, Exemplars SHOULD be dropped");
//!   the Collector keeps them on any sum.
//! * **A histogram's `+Inf` bucket is the total of its bucket counts** (the specification's
//!   cumulative rule), which the OTLP data model requires to equal `count`; a point where they
//!   differ, or whose bounds are not strictly increasing and finite-or-`-Inf`, or whose bucket
//!   count does not match its bounds, is dropped as "invalid histogram". The Collector uses
//!   `count` for `+Inf` and pairs bounds with counts as far as both go.
//! * **UNIT metadata is the Prometheus unit word** (`seconds`, `bytes_per_second`, `ratio`: "the
//!   resulting unit SHOULD be added to the metric as UNIT metadata"), one entry per family ("MUST
//!   NOT allow duplicate UNIT, HELP, or TYPE"; the first metric's help and unit are kept). The
//!   Collector sends the raw OTLP unit and one entry per metric.
//!
//! Kept from the Collector where the specification says nothing, or cannot be followed in
//! remote-write:
//!
//! * `job` and `instance` from the resource override attributes of those names (they identify
//!   the target, so they are not merged); without `service.instance.id` there is no `instance`
//!   label (the specification's "empty value" is not a valid remote-write label).
//! * `target_info` is a gauge of value 1 (remote-write has no info type), stamped with the newest
//!   timestamp among the resource's translated points, labelled with `job`, `instance`, the other
//!   resource attributes and the external labels; its metadata help is "Target metadata".
//! * With `resource_to_telemetry_conversion`, all resource attributes (the `service.*` ones too)
//!   are copied onto every series, a point's own attribute winning over a resource attribute with
//!   the same key; `target_info` is still sent.
//! * Delta (and unspecified) temporality is dropped, not accumulated (the specification's "MAY
//!   be aggregated ... or MUST be dropped").
//! * A counter sample carries all of its point's exemplars (remote-write allows several).
//! * An exemplar gets `trace_id` and `span_id` (lowercase hex) and its filtered attributes, the
//!   attributes only if all names and values together stay within 128 characters (the
//!   OpenMetrics limit the specification cites; Prometheus' exemplar storage enforces it too).
//!
//! Decided here:
//!
//! * The first metric to claim a family name decides its Prometheus type; a later metric of the
//!   same name but another type is dropped ("metric type conflict"), as the specification
//!   requires of pull exporters, so series of different types never merge.
//! * A value whose bits happen to be the stale NaN is sent as Prometheus' ordinary NaN, since the
//!   stale NaN "MUST NOT be used for anything else".
//! * Two samples (or native histograms) of one series with the same timestamp: the later one in
//!   the request is kept; Prometheus would reject the pair with a 400 for the whole request.
//!   Differing duplicates are counted as "duplicate sample timestamp" (samples, not points).
//! * Within one attribute list, a repeated key counts once (its first value); empty values are
//!   skipped before colliding keys are joined, so no `;` pairs with nothing.
//! * A summary with a quantile outside [0, 1] (or NaN) is dropped ("invalid summary"); quantile
//!   series are emitted lowest first.
//! * External label names that are already valid are kept as given (so `__replica__` works);
//!   others are sanitized like attribute keys.
//! * A stale (`FLAG_NO_RECORDED_VALUE`) point yields stale markers for exactly the series a
//!   normal point of its shape would (a histogram's `_sum` only when it has a sum) and no
//!   exemplars; its counts are not validated.
//!
//! The translation is total: no input panics it, and every dropped point is counted by reason.

use std::collections::{BTreeMap, btree_map::Entry};
use std::hash::BuildHasher;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar as OtlpExemplar, ExponentialHistogramDataPoint,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, SummaryDataPoint,
    exemplar, metric::Data, number_data_point,
};

use crate::proto::{self, Label, MetricType, Sample};

mod naming;
mod native;
mod value;

#[cfg(test)]
mod tests;

pub(crate) use naming::{MetricKind, format_float, metadata_unit, metric_name};
pub(crate) use sluice_core::labels::label_name;
// Exposed for unit tests (and any other caller in the crate); unused by the translation itself.
#[allow(unused_imports)]
pub(crate) use naming::unit_word;
#[allow(unused_imports)]
pub(crate) use value::value_to_string;

use sluice_core::anyvalue::hex;
use value::attribute_value;

/// Options from the exporter's config.
#[derive(Debug, Clone)]
pub struct TranslateOptions {
    /// Append unit suffixes (`_seconds`, `_bytes_per_second`, …) and type suffixes (`_total` for
    /// counters, `_ratio` for gauges with unit `1`) to metric names. Default true.
    pub add_metric_suffixes: bool,
    /// Copy every resource attribute onto every series (`target_info` is still sent). Default
    /// false: they go only on `target_info`.
    pub resource_to_telemetry_conversion: bool,
    /// Labels added to every series, `target_info` included, unless the series already has a
    /// label of that name (as Prometheus does). Names that are not valid label names are
    /// sanitized like attribute keys; empty values are ignored.
    pub external_labels: Vec<(String, String)>,
    /// Produce one [`proto::MetricMetadata`] per metric family. Default false (as the Collector).
    pub send_metadata: bool,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            add_metric_suffixes: true,
            resource_to_telemetry_conversion: false,
            external_labels: Vec::new(),
            send_metadata: false,
        }
    }
}

/// The result of translating one request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Translation {
    /// One entry per distinct label set (labels sorted by name, no duplicates, no empty values),
    /// samples, native histograms and exemplars in timestamp order; series in order of first
    /// appearance.
    pub series: Vec<proto::TimeSeries>,
    /// One entry per metric family, in order of first appearance; empty unless `send_metadata`.
    pub metadata: Vec<proto::MetricMetadata>,
    /// Data points not translated, by reason, with counts, in order of first occurrence. The
    /// reasons: "delta temporality", "unspecified temporality", "no value", "invalid histogram",
    /// "invalid exponential histogram", "exponential histogram scale below -4", "no sum",
    /// "invalid summary", "invalid metric name", "metric type conflict", and
    /// "duplicate sample timestamp" (which counts samples and native histograms, not points).
    pub dropped: Vec<(&'static str, usize)>,
}

/// Why data points are dropped (the first element of [`Translation::dropped`]).
pub(crate) mod reason {
    /// A Sum, Histogram or ExponentialHistogram with delta temporality.
    pub(crate) const DELTA_TEMPORALITY: &str = "delta temporality";
    /// A Sum, Histogram or ExponentialHistogram with unspecified (or unknown) temporality.
    pub(crate) const UNSPECIFIED_TEMPORALITY: &str = "unspecified temporality";
    /// A number point without a value (and without the no-recorded-value flag).
    pub(crate) const NO_VALUE: &str = "no value";
    /// A histogram point whose bounds or counts are inconsistent.
    pub(crate) const INVALID_HISTOGRAM: &str = "invalid histogram";
    /// An exponential histogram point whose counts or indices are inconsistent or unencodable.
    pub(crate) const INVALID_EXPONENTIAL_HISTOGRAM: &str = "invalid exponential histogram";
    /// An exponential histogram point with scale below -4.
    pub(crate) const SCALE_OUT_OF_RANGE: &str = "exponential histogram scale below -4";
    /// An exponential histogram point without a sum.
    pub(crate) const NO_SUM: &str = "no sum";
    /// A summary point with a quantile outside [0, 1].
    pub(crate) const INVALID_SUMMARY: &str = "invalid summary";
    /// A metric whose name has nothing valid in it.
    pub(crate) const INVALID_METRIC_NAME: &str = "invalid metric name";
    /// A metric whose family name was already taken by a metric of another Prometheus type.
    pub(crate) const METRIC_TYPE_CONFLICT: &str = "metric type conflict";
    /// A sample or native histogram replaced by a later one with the same series and timestamp.
    pub(crate) const DUPLICATE_TIMESTAMP: &str = "duplicate sample timestamp";
}

/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
const FLAG_NO_RECORDED_VALUE: u32 = 1;
/// Prometheus' ordinary NaN (`value.NormalNaN`).
const NORMAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0001;
/// The most characters (names and values together) an exemplar's labels may have.
const EXEMPLAR_MAX_LABEL_CHARS: usize = 128;

const SERVICE_NAME: &str = "service.name";
const SERVICE_NAMESPACE: &str = "service.namespace";
const SERVICE_INSTANCE_ID: &str = "service.instance.id";
const METRIC_NAME_LABEL: &str = "__name__";
const JOB_LABEL: &str = "job";
const INSTANCE_LABEL: &str = "instance";
const BUCKET_LABEL: &str = "le";
const QUANTILE_LABEL: &str = "quantile";
const SCOPE_NAME_LABEL: &str = "otel_scope_name";
const SCOPE_VERSION_LABEL: &str = "otel_scope_version";
const SCOPE_SCHEMA_URL_LABEL: &str = "otel_scope_schema_url";
const SCOPE_ATTRIBUTE_PREFIX: &str = "otel_scope_";
const TARGET_INFO: &str = "target_info";
const TARGET_INFO_HELP: &str = "Target metadata";

/// The stale marker.
/// A sample's value, or the stale marker when the point has no recorded value.
fn sample_value(stale: bool, value: f64) -> f64 {
    if stale { stale_nan() } else { value }
}

pub(crate) fn stale_nan() -> f64 {
    f64::from_bits(proto::STALE_NAN_BITS)
}

/// A value as sent: the stale NaN's bit pattern, reserved for stale markers, becomes the ordinary
/// NaN.
pub(crate) fn canonical(value: f64) -> f64 {
    if value.to_bits() == proto::STALE_NAN_BITS {
        f64::from_bits(NORMAL_NAN_BITS)
    } else {
        value
    }
}

/// Nanoseconds since the epoch to milliseconds (integer division).
fn millis(time_unix_nano: u64) -> i64 {
    // u64::MAX / 1e6 < i64::MAX, so this never saturates.
    i64::try_from(time_unix_nano / 1_000_000).unwrap_or(i64::MAX)
}

fn is_stale(flags: u32) -> bool {
    flags & FLAG_NO_RECORDED_VALUE != 0
}

/// Translates one request. Never panics; what cannot be sent is counted in
/// [`Translation::dropped`].
pub fn translate(request: &ExportMetricsServiceRequest, options: &TranslateOptions) -> Translation {
    let mut translator = Translator::new(options);
    for resource_metrics in &request.resource_metrics {
        translator.resource_metrics(resource_metrics);
    }
    translator.finish()
}

/// [`translate`] for an encoded request, decoding one ResourceMetrics at a time so that the
/// decoded form of a batch (several times its encoded size) never exists whole. Series are
/// merged across the whole request exactly as [`translate`] merges them.
///
/// # Errors
/// [`DecodeError`] naming the framing or decoding problem.
pub(crate) fn translate_encoded(
    request: &[u8],
    options: &TranslateOptions,
) -> Result<Translation, DecodeError> {
    let mut translator = Translator::new(options);
    for message in sluice_core::wire::resource_messages(request) {
        let resource_metrics = <ResourceMetrics as prost::Message>::decode(message?)?;
        translator.resource_metrics(&resource_metrics);
    }
    Ok(translator.finish())
}

/// Why an encoded request could not be translated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The request's framing is broken.
    #[error(transparent)]
    Framing(#[from] sluice_core::wire::WireError),
    /// A ResourceMetrics does not decode.
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
}

/// A series being assembled.
struct SeriesBuilder {
    labels: Vec<Label>,
    samples: Vec<Sample>,
    exemplars: Vec<proto::Exemplar>,
    histograms: Vec<proto::Histogram>,
}

/// What a resource contributes to its series.
struct ResourceContext<'a> {
    job: Option<String>,
    instance: Option<String>,
    /// The resource attributes (the first of repeated keys), with their label values.
    attributes: Vec<(&'a str, String)>,
    /// The newest timestamp among the resource's translated points.
    latest: Option<u64>,
}

impl<'a> ResourceContext<'a> {
    fn new(attributes: &'a [KeyValue]) -> Self {
        let mut seen = HashSet::new();
        let attributes: Vec<(&str, String)> = attributes
            .iter()
            .filter(|attribute| seen.insert(attribute.key.as_str()))
            .map(|attribute| (attribute.key.as_str(), attribute_value(attribute)))
            .collect();
        let get = |key: &str| {
            attributes
                .iter()
                .find(|(k, value)| *k == key && !value.is_empty())
                .map(|(_, value)| value.clone())
        };
        let job = match (get(SERVICE_NAMESPACE), get(SERVICE_NAME)) {
            (Some(namespace), Some(name)) => Some(format!("{namespace}/{name}")),
            (None, Some(name)) => Some(name),
            (_, None) => None,
        };
        let instance = get(SERVICE_INSTANCE_ID);
        ResourceContext {
            job,
            instance,
            attributes,
            latest: None,
        }
    }

    fn touch(&mut self, time_unix_nano: u64) {
        self.latest = Some(
            self.latest
                .map_or(time_unix_nano, |t| t.max(time_unix_nano)),
        );
    }

    /// Sets `job` and `instance`, overriding labels of those names.
    fn identify(&self, labels: &mut BTreeMap<String, String>) {
        if let Some(job) = &self.job {
            labels.insert(JOB_LABEL.to_owned(), job.clone());
        }
        if let Some(instance) = &self.instance {
            labels.insert(INSTANCE_LABEL.to_owned(), instance.clone());
        }
    }
}

/// The scope's labels as (original key, value) pairs for merging: name, version, schema URL, and
/// the attributes under `otel_scope_`, less those that would become one of the first three.
fn scope_labels(scope_metrics: &ScopeMetrics) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let (name, version, attributes) = match &scope_metrics.scope {
        Some(scope) => (
            scope.name.as_str(),
            scope.version.as_str(),
            scope.attributes.as_slice(),
        ),
        None => ("", "", &[][..]),
    };
    for (key, value) in [
        (SCOPE_NAME_LABEL, name),
        (SCOPE_VERSION_LABEL, version),
        (SCOPE_SCHEMA_URL_LABEL, scope_metrics.schema_url.as_str()),
    ] {
        labels.push((key.to_owned(), value.to_owned()));
    }
    let mut seen = HashSet::new();
    for attribute in attributes {
        if !seen.insert(attribute.key.as_str()) {
            continue;
        }
        let key = format!("{SCOPE_ATTRIBUTE_PREFIX}{}", attribute.key);
        let reserved = label_name(&key).is_some_and(|name| {
            [
                SCOPE_NAME_LABEL,
                SCOPE_VERSION_LABEL,
                SCOPE_SCHEMA_URL_LABEL,
            ]
            .contains(&name.as_str())
        });
        if !reserved {
            labels.push((key, attribute_value(attribute)));
        }
    }
    labels
}

/// Attribute-like (key, value) pairs as labels: sorted by original key (stably), keys sanitized,
/// values of keys that land on the same label name joined with `;` in that order; empty values
/// and keys with no valid label name skipped.
fn merge_labels(mut pool: Vec<(&str, String)>) -> BTreeMap<String, String> {
    pool.sort_by(|a, b| a.0.cmp(b.0));
    let mut labels = BTreeMap::new();
    for (key, value) in pool {
        if value.is_empty() {
            continue;
        }
        let Some(name) = label_name(key) else {
            continue;
        };
        match labels.entry(name) {
            Entry::Occupied(mut entry) => {
                let joined: &mut String = entry.get_mut();
                joined.push(';');
                joined.push_str(&value);
            }
            Entry::Vacant(entry) => {
                entry.insert(value);
            }
        }
    }
    labels
}

/// Converts an exemplar; `None` when it has no value.
fn exemplar(exemplar: &OtlpExemplar) -> Option<proto::Exemplar> {
    let value = match exemplar.value? {
        exemplar::Value::AsDouble(value) => canonical(value),
        exemplar::Value::AsInt(value) => value as f64,
    };
    let mut ids = BTreeMap::new();
    if !exemplar.trace_id.is_empty() {
        ids.insert("trace_id".to_owned(), hex(&exemplar.trace_id));
    }
    if !exemplar.span_id.is_empty() {
        ids.insert("span_id".to_owned(), hex(&exemplar.span_id));
    }
    let mut seen = HashSet::new();
    let attributes = merge_labels(
        exemplar
            .filtered_attributes
            .iter()
            .filter(|attribute| seen.insert(attribute.key.as_str()))
            .map(|attribute| (attribute.key.as_str(), attribute_value(attribute)))
            .collect(),
    );
    let chars = |labels: &BTreeMap<String, String>, skip: &BTreeMap<String, String>| {
        labels
            .iter()
            .filter(|(name, _)| !skip.contains_key(*name))
            .map(|(name, value)| name.chars().count() + value.chars().count())
            .sum::<usize>()
    };
    let empty = BTreeMap::new();
    let mut labels = ids;
    // trace_id and span_id take precedence; the attributes go in only whole and within limits.
    if chars(&labels, &empty) + chars(&attributes, &labels) <= EXEMPLAR_MAX_LABEL_CHARS {
        for (name, value) in attributes {
            labels.entry(name).or_insert(value);
        }
    }
    Some(proto::Exemplar {
        labels: labels
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect(),
        value,
        timestamp: millis(exemplar.time_unix_nano),
    })
}

/// Whether explicit bounds can label buckets: strictly increasing, no NaN, no `+Inf` (implicit).
fn valid_bounds(bounds: &[f64]) -> bool {
    bounds.iter().all(|b| !b.is_nan() && *b != f64::INFINITY)
        && bounds.windows(2).all(|pair| pair[0] < pair[1])
}

/// Sorts by timestamp (stably) and keeps the last of equal timestamps; returns how many differing
/// items were dropped.
fn dedup_by_timestamp<T>(
    items: &mut Vec<T>,
    timestamp: impl Fn(&T) -> i64,
    same: impl Fn(&T, &T) -> bool,
) -> usize {
    items.sort_by_key(&timestamp);
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    let mut dropped = 0;
    for item in items.drain(..) {
        match kept.last_mut() {
            Some(last) if timestamp(last) == timestamp(&item) => {
                if !same(last, &item) {
                    dropped += 1;
                }
                *last = item;
            }
            _ => kept.push(item),
        }
    }
    *items = kept;
    dropped
}

/// The end of a [`Translator::same_hash`] chain.
const NO_SERIES: usize = usize::MAX;

struct Translator<'o> {
    options: &'o TranslateOptions,
    /// External labels with valid names and non-empty values, first of repeated names.
    external_labels: Vec<(String, String)>,
    series: Vec<SeriesBuilder>,
    /// Series by the hash of their label set: the first with that hash. Keyed by hash rather
    /// than by labels so that a new series' labels are not cloned into the map.
    index: HashMap<u64, usize>,
    /// Per series, the next series whose labels hash the same (`NO_SERIES` ends the chain).
    same_hash: Vec<usize>,
    hasher: foldhash::fast::RandomState,
    families: HashMap<String, MetricType>,
    metadata: Vec<proto::MetricMetadata>,
    dropped: Vec<(&'static str, usize)>,
}

impl<'o> Translator<'o> {
    fn new(options: &'o TranslateOptions) -> Self {
        let mut external_labels: Vec<(String, String)> = Vec::new();
        for (name, value) in &options.external_labels {
            let name = if sluice_core::labels::is_valid_label_name(name) {
                Some(name.clone())
            } else {
                label_name(name)
            };
            if let Some(name) = name
                && !value.is_empty()
                && !external_labels
                    .iter()
                    .any(|(existing, _)| *existing == name)
            {
                external_labels.push((name, value.clone()));
            }
        }
        Translator {
            options,
            external_labels,
            series: Vec::new(),
            index: HashMap::new(),
            same_hash: Vec::new(),
            hasher: foldhash::fast::RandomState::default(),
            families: HashMap::new(),
            metadata: Vec::new(),
            dropped: Vec::new(),
        }
    }

    fn drop_points(&mut self, reason: &'static str, count: usize) {
        if count == 0 {
            return;
        }
        match self.dropped.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, total)) => *total += count,
            None => self.dropped.push((reason, count)),
        }
    }

    /// Claims a family name for a type (and records its metadata); false when another type has it.
    fn claim_family(
        &mut self,
        name: &str,
        metric_type: MetricType,
        help: &str,
        unit: &str,
    ) -> bool {
        if let Some(existing) = self.families.get(name) {
            return *existing == metric_type;
        }
        self.families.insert(name.to_owned(), metric_type);
        if self.options.send_metadata {
            self.metadata.push(proto::MetricMetadata {
                r#type: metric_type as i32,
                metric_family_name: name.to_owned(),
                help: help.to_owned(),
                unit: unit.to_owned(),
            });
        }
        true
    }

    fn series(&mut self, labels: Vec<Label>) -> &mut SeriesBuilder {
        let hash = self.hasher.hash_one(&labels);
        let mut at = self.index.get(&hash).copied().unwrap_or(NO_SERIES);
        while at != NO_SERIES {
            if self.series[at].labels == labels {
                return &mut self.series[at];
            }
            at = self.same_hash[at];
        }
        let position = self.series.len();
        let chain = self.index.insert(hash, position).unwrap_or(NO_SERIES);
        self.same_hash.push(chain);
        self.series.push(SeriesBuilder {
            labels,
            samples: Vec::new(),
            exemplars: Vec::new(),
            histograms: Vec::new(),
        });
        &mut self.series[position]
    }

    /// A series' full label set: the point's labels, `__name__`, an optional `le`/`quantile`
    /// (these override), then the external labels where absent.
    fn labels(
        &self,
        base: &BTreeMap<String, String>,
        name: &str,
        extra: Option<(&str, String)>,
    ) -> Vec<Label> {
        let mut labels = base.clone();
        labels.insert(METRIC_NAME_LABEL.to_owned(), name.to_owned());
        if let Some((extra_name, extra_value)) = extra {
            labels.insert(extra_name.to_owned(), extra_value);
        }
        for (external_name, external_value) in &self.external_labels {
            labels
                .entry(external_name.clone())
                .or_insert_with(|| external_value.clone());
        }
        labels
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect()
    }

    fn push_sample(&mut self, labels: Vec<Label>, sample: Sample, exemplars: Vec<proto::Exemplar>) {
        let series = self.series(labels);
        series.samples.push(sample);
        series.exemplars.extend(exemplars);
    }

    /// A point's labels before `__name__` and the external labels: its attributes, the resource
    /// attributes with `resource_to_telemetry_conversion`, the scope labels, merged; then `job` and
    /// `instance`.
    fn point_labels(
        &self,
        resource: &ResourceContext<'_>,
        scope: &[(String, String)],
        attributes: &[KeyValue],
    ) -> BTreeMap<String, String> {
        let mut seen = HashSet::new();
        let mut pool: Vec<(&str, String)> = attributes
            .iter()
            .filter(|attribute| seen.insert(attribute.key.as_str()))
            .map(|attribute| (attribute.key.as_str(), attribute_value(attribute)))
            .collect();
        if self.options.resource_to_telemetry_conversion {
            for (key, value) in &resource.attributes {
                if !seen.contains(key) {
                    pool.push((*key, value.clone()));
                }
            }
        }
        for (key, value) in scope {
            pool.push((key.as_str(), value.clone()));
        }
        let mut labels = merge_labels(pool);
        resource.identify(&mut labels);
        labels
    }

    fn resource_metrics(&mut self, resource_metrics: &ResourceMetrics) {
        let attributes = resource_metrics
            .resource
            .as_ref()
            .map_or(&[][..], |resource| resource.attributes.as_slice());
        let mut resource = ResourceContext::new(attributes);
        for scope_metrics in &resource_metrics.scope_metrics {
            let scope = scope_labels(scope_metrics);
            for metric in &scope_metrics.metrics {
                self.metric(&mut resource, &scope, metric);
            }
        }
        self.target_info(&resource);
    }

    /// The resource's `target_info` sample, when it has attributes besides the identifying ones
    /// and at least one translated point.
    fn target_info(&mut self, resource: &ResourceContext<'_>) {
        let Some(latest) = resource.latest else {
            return;
        };
        let pool = resource
            .attributes
            .iter()
            .filter(|(key, _)| {
                ![SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE_ID].contains(key)
            })
            .map(|(key, value)| (*key, value.clone()))
            .collect();
        let mut labels = merge_labels(pool);
        if labels.is_empty() {
            return;
        }
        resource.identify(&mut labels);
        if !self.claim_family(TARGET_INFO, MetricType::Gauge, TARGET_INFO_HELP, "") {
            return;
        }
        let labels = self.labels(&labels, TARGET_INFO, None);
        self.push_sample(
            labels,
            Sample {
                value: 1.0,
                timestamp: millis(latest),
            },
            Vec::new(),
        );
    }

    fn metric(
        &mut self,
        resource: &mut ResourceContext<'_>,
        scope: &[(String, String)],
        metric: &Metric,
    ) {
        let Some(data) = &metric.data else {
            return;
        };
        let cumulative = |temporality: i32| match AggregationTemporality::try_from(temporality) {
            Ok(AggregationTemporality::Cumulative) => Ok(()),
            Ok(AggregationTemporality::Delta) => Err(reason::DELTA_TEMPORALITY),
            _ => Err(reason::UNSPECIFIED_TEMPORALITY),
        };
        let (kind, points, temporality) = match data {
            Data::Gauge(gauge) => (MetricKind::Gauge, gauge.data_points.len(), Ok(())),
            Data::Sum(sum) => (
                if sum.is_monotonic {
                    MetricKind::Counter
                } else {
                    MetricKind::NonMonotonicSum
                },
                sum.data_points.len(),
                cumulative(sum.aggregation_temporality),
            ),
            Data::Histogram(histogram) => (
                MetricKind::Histogram,
                histogram.data_points.len(),
                cumulative(histogram.aggregation_temporality),
            ),
            Data::ExponentialHistogram(histogram) => (
                MetricKind::ExponentialHistogram,
                histogram.data_points.len(),
                cumulative(histogram.aggregation_temporality),
            ),
            Data::Summary(summary) => (MetricKind::Summary, summary.data_points.len(), Ok(())),
        };
        if points == 0 {
            return;
        }
        if let Err(reason) = temporality {
            self.drop_points(reason, points);
            return;
        }
        let Some(name) = metric_name(
            &metric.name,
            &metric.unit,
            kind,
            self.options.add_metric_suffixes,
        ) else {
            self.drop_points(reason::INVALID_METRIC_NAME, points);
            return;
        };
        let unit = metadata_unit(&metric.unit, kind);
        if !self.claim_family(&name, kind.metric_type(), &metric.description, &unit) {
            self.drop_points(reason::METRIC_TYPE_CONFLICT, points);
            return;
        }
        match data {
            Data::Gauge(gauge) => {
                for point in &gauge.data_points {
                    self.number_point(resource, scope, &name, point, false);
                }
            }
            Data::Sum(sum) => {
                for point in &sum.data_points {
                    self.number_point(resource, scope, &name, point, sum.is_monotonic);
                }
            }
            Data::Histogram(histogram) => {
                for point in &histogram.data_points {
                    self.histogram_point(resource, scope, &name, point);
                }
            }
            Data::ExponentialHistogram(histogram) => {
                for point in &histogram.data_points {
                    self.exponential_histogram_point(resource, scope, &name, point);
                }
            }
            Data::Summary(summary) => {
                for point in &summary.data_points {
                    self.summary_point(resource, scope, &name, point);
                }
            }
        }
    }

    /// A gauge or sum point: one sample; exemplars only for a counter.
    fn number_point(
        &mut self,
        resource: &mut ResourceContext<'_>,
        scope: &[(String, String)],
        name: &str,
        point: &NumberDataPoint,
        counter: bool,
    ) {
        let stale = is_stale(point.flags);
        let value = if stale {
            stale_nan()
        } else {
            match point.value {
                Some(number_data_point::Value::AsDouble(value)) => canonical(value),
                Some(number_data_point::Value::AsInt(value)) => value as f64,
                None => {
                    self.drop_points(reason::NO_VALUE, 1);
                    return;
                }
            }
        };
        let exemplars = if counter && !stale {
            point.exemplars.iter().filter_map(exemplar).collect()
        } else {
            Vec::new()
        };
        let base = self.point_labels(resource, scope, &point.attributes);
        let labels = self.labels(&base, name, None);
        self.push_sample(
            labels,
            Sample {
                value,
                timestamp: millis(point.time_unix_nano),
            },
            exemplars,
        );
        resource.touch(point.time_unix_nano);
    }

    /// A classic histogram point: `_bucket{le}` (cumulative) with `+Inf`, `_sum` if present,
    /// `_count`; exemplars on the bucket their value falls in.
    fn histogram_point(
        &mut self,
        resource: &mut ResourceContext<'_>,
        scope: &[(String, String)],
        name: &str,
        point: &HistogramDataPoint,
    ) {
        let stale = is_stale(point.flags);
        let bounds = &point.explicit_bounds;
        let counts = &point.bucket_counts;
        let shape_ok = if counts.is_empty() {
            bounds.is_empty()
        } else {
            counts.len() == bounds.len() + 1
        };
        let total = counts
            .iter()
            .try_fold(0u64, |total, &count| total.checked_add(count));
        let counts_ok = counts.is_empty() || total == Some(point.count);
        // A stale point's counts are not used, so only its bounds need to make sense.
        let consistent = stale || (shape_ok && counts_ok);
        if !valid_bounds(bounds) || !consistent {
            self.drop_points(reason::INVALID_HISTOGRAM, 1);
            return;
        }
        let timestamp = millis(point.time_unix_nano);
        let mut exemplars: Vec<Vec<proto::Exemplar>> =
            (0..=bounds.len()).map(|_| Vec::new()).collect();
        if !stale {
            for converted in point.exemplars.iter().filter_map(exemplar) {
                let bucket = if converted.value.is_nan() {
                    bounds.len()
                } else {
                    bounds.partition_point(|bound| *bound < converted.value)
                };
                if let Some(slot) = exemplars.get_mut(bucket) {
                    slot.push(converted);
                }
            }
        }
        let base = self.point_labels(resource, scope, &point.attributes);
        let bucket_name = format!("{name}_bucket");
        let mut cumulative: u64 = 0;
        for (position, bound) in bounds.iter().enumerate() {
            cumulative = cumulative.saturating_add(counts.get(position).copied().unwrap_or(0));
            let value = sample_value(stale, cumulative as f64);
            let labels = self.labels(
                &base,
                &bucket_name,
                Some((BUCKET_LABEL, format_float(*bound))),
            );
            let bucket_exemplars = exemplars
                .get_mut(position)
                .map(std::mem::take)
                .unwrap_or_default();
            self.push_sample(labels, Sample { value, timestamp }, bucket_exemplars);
        }
        let value = sample_value(stale, point.count as f64);
        let labels = self.labels(&base, &bucket_name, Some((BUCKET_LABEL, "+Inf".to_owned())));
        let bucket_exemplars = exemplars.pop().unwrap_or_default();
        self.push_sample(labels, Sample { value, timestamp }, bucket_exemplars);
        self.push_sum_and_count(&base, name, point.sum, point.count, timestamp, stale);
        resource.touch(point.time_unix_nano);
    }

    /// A summary point: `{quantile}` series (lowest quantile first), `_sum`, `_count`.
    fn summary_point(
        &mut self,
        resource: &mut ResourceContext<'_>,
        scope: &[(String, String)],
        name: &str,
        point: &SummaryDataPoint,
    ) {
        let stale = is_stale(point.flags);
        if !point
            .quantile_values
            .iter()
            .all(|q| (0.0..=1.0).contains(&q.quantile))
        {
            self.drop_points(reason::INVALID_SUMMARY, 1);
            return;
        }
        let timestamp = millis(point.time_unix_nano);
        let base = self.point_labels(resource, scope, &point.attributes);
        let mut quantiles: Vec<_> = point.quantile_values.iter().collect();
        quantiles.sort_by(|a, b| a.quantile.total_cmp(&b.quantile));
        for quantile in quantiles {
            let value = sample_value(stale, canonical(quantile.value));
            let labels = self.labels(
                &base,
                name,
                Some((QUANTILE_LABEL, format_float(quantile.quantile))),
            );
            self.push_sample(labels, Sample { value, timestamp }, Vec::new());
        }
        self.push_sum_and_count(&base, name, Some(point.sum), point.count, timestamp, stale);
        resource.touch(point.time_unix_nano);
    }

    /// The `_sum` (when the point has one) and `_count` series shared by histograms and summaries.
    fn push_sum_and_count(
        &mut self,
        base: &BTreeMap<String, String>,
        name: &str,
        sum: Option<f64>,
        count: u64,
        timestamp: i64,
        stale: bool,
    ) {
        if let Some(sum) = sum {
            let labels = self.labels(base, &format!("{name}_sum"), None);
            let value = sample_value(stale, canonical(sum));
            self.push_sample(labels, Sample { value, timestamp }, Vec::new());
        }
        let labels = self.labels(base, &format!("{name}_count"), None);
        let value = sample_value(stale, count as f64);
        self.push_sample(labels, Sample { value, timestamp }, Vec::new());
    }

    /// An exponential histogram point: one native histogram on the base-name series.
    fn exponential_histogram_point(
        &mut self,
        resource: &mut ResourceContext<'_>,
        scope: &[(String, String)],
        name: &str,
        point: &ExponentialHistogramDataPoint,
    ) {
        let stale = is_stale(point.flags);
        let timestamp = millis(point.time_unix_nano);
        let histogram = match native::native_histogram(point, timestamp, stale) {
            Ok(histogram) => histogram,
            Err(reason) => {
                self.drop_points(reason, 1);
                return;
            }
        };
        let exemplars: Vec<_> = if stale {
            Vec::new()
        } else {
            point.exemplars.iter().filter_map(exemplar).collect()
        };
        let base = self.point_labels(resource, scope, &point.attributes);
        let labels = self.labels(&base, name, None);
        let series = self.series(labels);
        series.histograms.push(histogram);
        series.exemplars.extend(exemplars);
        resource.touch(point.time_unix_nano);
    }

    fn finish(mut self) -> Translation {
        let mut duplicates = 0;
        let series = std::mem::take(&mut self.series)
            .into_iter()
            .map(|mut series| {
                duplicates += dedup_by_timestamp(
                    &mut series.samples,
                    |sample| sample.timestamp,
                    |a, b| a.value.to_bits() == b.value.to_bits(),
                );
                duplicates += dedup_by_timestamp(
                    &mut series.histograms,
                    |histogram| histogram.timestamp,
                    |a, b| prost::Message::encode_to_vec(a) == prost::Message::encode_to_vec(b),
                );
                series.exemplars.sort_by_key(|exemplar| exemplar.timestamp);
                proto::TimeSeries {
                    labels: series.labels,
                    samples: series.samples,
                    exemplars: series.exemplars,
                    histograms: series.histograms,
                }
            })
            .collect();
        self.drop_points(reason::DUPLICATE_TIMESTAMP, duplicates);
        Translation {
            series,
            metadata: self.metadata,
            dropped: self.dropped,
        }
    }
}
