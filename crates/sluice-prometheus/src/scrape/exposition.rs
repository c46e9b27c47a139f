//! The protobuf scrape format (`application/vnd.google.protobuf;
//! proto=io.prometheus.client.MetricFamily; encoding=delimited`): length-delimited
//! `MetricFamily` messages, written from prometheus/client_model's `metrics.proto` as prost
//! structs. It is the only format that carries native histograms, so exponential histograms are
//! served in it alone; Prometheus asks for it first when its native histograms are enabled.
//!
//! Series are kept flat, as the text format and remote-write name them (`x_bucket{le}`, `x_sum`,
//! `x_count`, `x{quantile}`); a family's members are gathered back into one `Metric` per label
//! set here.

#![allow(missing_docs)]

use indexmap::IndexMap;
use prost::Message;

use super::{Family, Latest, Series};
use crate::proto::{self, Label, MetricType as RemoteType};

/// The content type of the format.
pub(crate) const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Whether an `Accept` header asks for this format.
pub(crate) fn accepted(accept: &str) -> bool {
    accept.contains("application/vnd.google.protobuf")
        && accept.contains("proto=io.prometheus.client.MetricFamily")
        && accept.contains("encoding=delimited")
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct LabelPair {
    #[prost(string, optional, tag = "1")]
    pub(crate) name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub(crate) value: Option<String>,
}

/// `io.prometheus.client.MetricType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum MetricType {
    Counter = 0,
    Gauge = 1,
    Summary = 2,
    Untyped = 3,
    Histogram = 4,
    GaugeHistogram = 5,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Gauge {
    #[prost(double, optional, tag = "1")]
    pub(crate) value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Counter {
    #[prost(double, optional, tag = "1")]
    pub(crate) value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Quantile {
    #[prost(double, optional, tag = "1")]
    pub(crate) quantile: Option<f64>,
    #[prost(double, optional, tag = "2")]
    pub(crate) value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Summary {
    #[prost(uint64, optional, tag = "1")]
    pub(crate) sample_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub(crate) sample_sum: Option<f64>,
    #[prost(message, repeated, tag = "3")]
    pub(crate) quantile: Vec<Quantile>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Untyped {
    #[prost(double, optional, tag = "1")]
    pub(crate) value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Histogram {
    #[prost(uint64, optional, tag = "1")]
    pub(crate) sample_count: Option<u64>,
    #[prost(double, optional, tag = "4")]
    pub(crate) sample_count_float: Option<f64>,
    #[prost(double, optional, tag = "2")]
    pub(crate) sample_sum: Option<f64>,
    #[prost(message, repeated, tag = "3")]
    pub(crate) bucket: Vec<Bucket>,
    #[prost(sint32, optional, tag = "5")]
    pub(crate) schema: Option<i32>,
    #[prost(double, optional, tag = "6")]
    pub(crate) zero_threshold: Option<f64>,
    #[prost(uint64, optional, tag = "7")]
    pub(crate) zero_count: Option<u64>,
    #[prost(double, optional, tag = "8")]
    pub(crate) zero_count_float: Option<f64>,
    #[prost(message, repeated, tag = "9")]
    pub(crate) negative_span: Vec<BucketSpan>,
    #[prost(sint64, repeated, packed = "false", tag = "10")]
    pub(crate) negative_delta: Vec<i64>,
    #[prost(double, repeated, packed = "false", tag = "11")]
    pub(crate) negative_count: Vec<f64>,
    #[prost(message, repeated, tag = "12")]
    pub(crate) positive_span: Vec<BucketSpan>,
    #[prost(sint64, repeated, packed = "false", tag = "13")]
    pub(crate) positive_delta: Vec<i64>,
    #[prost(double, repeated, packed = "false", tag = "14")]
    pub(crate) positive_count: Vec<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Bucket {
    #[prost(uint64, optional, tag = "1")]
    pub(crate) cumulative_count: Option<u64>,
    #[prost(double, optional, tag = "4")]
    pub(crate) cumulative_count_float: Option<f64>,
    #[prost(double, optional, tag = "2")]
    pub(crate) upper_bound: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct BucketSpan {
    #[prost(sint32, optional, tag = "1")]
    pub(crate) offset: Option<i32>,
    #[prost(uint32, optional, tag = "2")]
    pub(crate) length: Option<u32>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub(crate) label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub(crate) gauge: Option<Gauge>,
    #[prost(message, optional, tag = "3")]
    pub(crate) counter: Option<Counter>,
    #[prost(message, optional, tag = "4")]
    pub(crate) summary: Option<Summary>,
    #[prost(message, optional, tag = "5")]
    pub(crate) untyped: Option<Untyped>,
    #[prost(message, optional, tag = "7")]
    pub(crate) histogram: Option<Histogram>,
    #[prost(int64, optional, tag = "6")]
    pub(crate) timestamp_ms: Option<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct MetricFamily {
    #[prost(string, optional, tag = "1")]
    pub(crate) name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub(crate) help: Option<String>,
    #[prost(enumeration = "MetricType", optional, tag = "3")]
    pub(crate) r#type: Option<i32>,
    #[prost(message, repeated, tag = "4")]
    pub(crate) metric: Vec<Metric>,
}

/// What one label set of a family gathers from the family's series.
#[derive(Default)]
struct Gathered {
    value: Option<f64>,
    count: Option<f64>,
    sum: Option<f64>,
    /// `(le or quantile, value)`.
    points: Vec<(f64, f64)>,
    native: Option<proto::Histogram>,
    timestamp_ms: i64,
}

/// The label set without the label that tells a family's series apart (`le`, `quantile`), and
/// that label's value.
fn split(labels: &[Label], part: &str) -> (Vec<Label>, Option<f64>) {
    let mut key = Vec::with_capacity(labels.len());
    let mut at = None;
    for l in labels {
        if l.name == part {
            at = parse_float(&l.value);
        } else {
            key.push(l.clone());
        }
    }
    (key, at)
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// Appends one family, length-delimited, to `out`. `members` are the family's series by name
/// (`x`, `x_bucket`, `x_sum`, `x_count`), each already free of expired series.
pub(crate) fn write_family(
    out: &mut Vec<u8>,
    family: &str,
    meta: Option<&Family>,
    members: &[(&str, &Series)],
    send_timestamps: bool,
) {
    let kind = meta.map_or(RemoteType::Unknown, |f| f.metric_type);
    let (part, histogram_like) = match kind {
        RemoteType::Histogram | RemoteType::Gaugehistogram => ("le", true),
        RemoteType::Summary => ("quantile", true),
        _ => ("", false),
    };
    let mut gathered: IndexMap<Vec<Label>, Gathered, foldhash::fast::RandomState> =
        IndexMap::default();
    for (name, series) in members {
        let suffix = name.strip_prefix(family).unwrap_or("");
        for (labels, latest) in series.iter() {
            let (key, at) = if histogram_like {
                split(labels, part)
            } else {
                (labels.clone(), None)
            };
            let g = gathered.entry(key).or_default();
            g.timestamp_ms = g.timestamp_ms.max(latest.timestamp_ms);
            take(g, suffix, at, latest);
        }
    }
    let metric_type = match kind {
        RemoteType::Counter => MetricType::Counter,
        RemoteType::Gauge | RemoteType::Info | RemoteType::Stateset => MetricType::Gauge,
        RemoteType::Histogram => MetricType::Histogram,
        RemoteType::Gaugehistogram => MetricType::GaugeHistogram,
        RemoteType::Summary => MetricType::Summary,
        RemoteType::Unknown => MetricType::Untyped,
    };
    let metric = gathered
        .into_iter()
        .map(|(labels, g)| {
            let mut m = Metric {
                label: labels
                    .into_iter()
                    .map(|l| LabelPair {
                        name: Some(l.name),
                        value: Some(l.value),
                    })
                    .collect(),
                timestamp_ms: send_timestamps.then_some(g.timestamp_ms),
                ..Default::default()
            };
            match metric_type {
                MetricType::Counter => m.counter = Some(Counter { value: g.value }),
                MetricType::Gauge => m.gauge = Some(Gauge { value: g.value }),
                MetricType::Untyped => m.untyped = Some(Untyped { value: g.value }),
                MetricType::Summary => {
                    m.summary = Some(Summary {
                        sample_count: g.count.map(|c| c as u64),
                        sample_sum: g.sum,
                        quantile: g
                            .points
                            .iter()
                            .map(|(q, v)| Quantile {
                                quantile: Some(*q),
                                value: Some(*v),
                            })
                            .collect(),
                    });
                }
                MetricType::Histogram | MetricType::GaugeHistogram => {
                    m.histogram = Some(histogram(g));
                }
            }
            m
        })
        .collect();
    let help = meta
        .map(|f| f.help.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| family.to_owned());
    let message = MetricFamily {
        name: Some(family.to_owned()),
        help: Some(help),
        r#type: Some(metric_type as i32),
        metric,
    };
    // Writing to a Vec cannot fail.
    let _ = message.encode_length_delimited(out);
}

/// Files one series' latest sample under its label set.
fn take(g: &mut Gathered, suffix: &str, at: Option<f64>, latest: &Latest) {
    if let Some(native) = &latest.native {
        g.native = Some(native.clone());
        return;
    }
    match (suffix, at) {
        ("_sum", _) => g.sum = Some(latest.value),
        ("_count", _) => g.count = Some(latest.value),
        ("_bucket" | "", Some(at)) => g.points.push((at, latest.value)),
        _ => g.value = Some(latest.value),
    }
}

fn histogram(mut g: Gathered) -> Histogram {
    if let Some(n) = g.native.take() {
        return native(&n);
    }
    g.points
        .sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    let count = g
        .count
        .unwrap_or_else(|| g.points.last().map_or(0.0, |p| p.1));
    Histogram {
        sample_count: Some(count as u64),
        sample_sum: g.sum,
        // The +Inf bucket is optional: the count is its value.
        bucket: g
            .points
            .iter()
            .filter(|(le, _)| le.is_finite())
            .map(|(le, c)| Bucket {
                cumulative_count: Some(*c as u64),
                upper_bound: Some(*le),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A native histogram as remote-write carries it, in the scrape format's fields.
fn native(h: &proto::Histogram) -> Histogram {
    let spans = |spans: &[proto::BucketSpan]| {
        spans
            .iter()
            .map(|s| BucketSpan {
                offset: Some(s.offset),
                length: Some(s.length),
            })
            .collect()
    };
    let mut out = Histogram {
        sample_sum: Some(h.sum),
        schema: Some(h.schema),
        zero_threshold: Some(h.zero_threshold),
        negative_span: spans(&h.negative_spans),
        negative_delta: h.negative_deltas.clone(),
        negative_count: h.negative_counts.clone(),
        positive_span: spans(&h.positive_spans),
        positive_delta: h.positive_deltas.clone(),
        positive_count: h.positive_counts.clone(),
        ..Default::default()
    };
    match h.count {
        Some(proto::histogram::Count::CountFloat(c)) => out.sample_count_float = Some(c),
        Some(proto::histogram::Count::CountInt(c)) => out.sample_count = Some(c),
        None => out.sample_count = Some(0),
    }
    match h.zero_count {
        Some(proto::histogram::ZeroCount::ZeroCountFloat(c)) => out.zero_count_float = Some(c),
        Some(proto::histogram::ZeroCount::ZeroCountInt(c)) => out.zero_count = Some(c),
        None => out.zero_count = Some(0),
    }
    // A native histogram with no bucket and no zero width would read as a classic one: the
    // format asks for a no-op span then.
    if out.positive_span.is_empty() && out.negative_span.is_empty() && h.zero_threshold == 0.0 {
        out.positive_span.push(BucketSpan {
            offset: Some(0),
            length: Some(0),
        });
    }
    out
}
