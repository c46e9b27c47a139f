//! Delta to cumulative, as the Collector's `prometheus` exporter does it, so that a pull exporter
//! can serve counters and histograms that SDKs send as deltas:
//!
//! * a monotonic delta sum's point that starts where the series' last point ended is added to
//!   it (the start stays the first one); a point that starts later begins the series again; a
//!   point older than the last is ignored; non-monotonic delta sums are dropped;
//! * a delta histogram's point that starts where the last ended is added bucket by bucket (when
//!   the bounds differ, the newer point replaces the sum); one that starts later begins again;
//!   one that overlaps the last is dropped;
//! * a point flagged "no recorded value" forgets the series.
//!
//! The rewritten points are cumulative, so the shared translation serves them as it serves
//! cumulative input. A series' state lives as long as it gets points within the expiration.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, HistogramDataPoint, NumberDataPoint, metric::Data, number_data_point,
};
use prost::Message;

/// `FLAG_NO_RECORDED_VALUE`.
const NO_RECORDED_VALUE: u32 = 1;

/// What a series has accumulated.
#[derive(Debug, Clone)]
enum Total {
    Sum(NumberDataPoint),
    Histogram(HistogramDataPoint),
}

#[derive(Debug)]
struct Entry {
    total: Total,
    updated: Instant,
}

/// The running totals of the delta series seen, by series.
#[derive(Debug, Default)]
pub(super) struct Totals {
    series: HashMap<Vec<u8>, Entry>,
}

/// A series' identity: the resource and scope it comes from (`origin`, encoded once per scope),
/// the metric's name and the point's attributes, in key order.
fn key(origin: &[u8], metric: &str, attributes: &[KeyValue]) -> Vec<u8> {
    let mut sorted: Vec<&KeyValue> = attributes.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut key = origin.to_vec();
    key.extend_from_slice(metric.as_bytes());
    key.push(0xff);
    for kv in sorted {
        kv.encode(&mut key).ok();
    }
    key
}

fn add(
    a: &Option<number_data_point::Value>,
    b: &Option<number_data_point::Value>,
) -> Option<number_data_point::Value> {
    use number_data_point::Value::{AsDouble, AsInt};
    match (a, b) {
        (Some(AsInt(x)), Some(AsInt(y))) => Some(AsInt(x.wrapping_add(*y))),
        (Some(AsInt(x)), Some(AsDouble(y))) => Some(AsDouble(*x as f64 + y)),
        (Some(AsDouble(x)), Some(AsInt(y))) => Some(AsDouble(x + *y as f64)),
        (Some(AsDouble(x)), Some(AsDouble(y))) => Some(AsDouble(x + y)),
        (None, v) | (v, None) => *v,
    }
}

impl Totals {
    /// Rewrites the request's delta sums and histograms as cumulative ones, from the totals,
    /// and updates the totals; points that cannot be served are removed.
    pub(super) fn cumulate(&mut self, request: &mut ExportMetricsServiceRequest, now: Instant) {
        let delta = AggregationTemporality::Delta as i32;
        let cumulative = AggregationTemporality::Cumulative as i32;
        for rm in &mut request.resource_metrics {
            let resource = rm.resource.as_ref().map(Message::encode_to_vec);
            for sm in &mut rm.scope_metrics {
                let mut origin = resource.clone().unwrap_or_default();
                origin.push(0xff);
                if let Some(scope) = &sm.scope {
                    scope.encode(&mut origin).ok();
                }
                origin.push(0xff);
                for metric in &mut sm.metrics {
                    match &mut metric.data {
                        Some(Data::Sum(sum)) if sum.aggregation_temporality == delta => {
                            if !sum.is_monotonic {
                                // Dropped by the translation, and counted there.
                                continue;
                            }
                            sum.aggregation_temporality = cumulative;
                            sum.data_points.retain_mut(|point| {
                                let key = key(&origin, &metric.name, &point.attributes);
                                self.sum(key, point, now)
                            });
                        }
                        Some(Data::Histogram(h)) if h.aggregation_temporality == delta => {
                            h.aggregation_temporality = cumulative;
                            h.data_points.retain_mut(|point| {
                                let key = key(&origin, &metric.name, &point.attributes);
                                self.histogram(key, point, now)
                            });
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// One delta sum point: made cumulative in place; false to drop it.
    fn sum(&mut self, key: Vec<u8>, point: &mut NumberDataPoint, now: Instant) -> bool {
        if point.flags & NO_RECORDED_VALUE != 0 {
            self.series.remove(&key);
            return true;
        }
        if let Some(Entry {
            total: Total::Sum(last),
            ..
        }) = self.series.get(&key)
        {
            if point.time_unix_nano < last.time_unix_nano {
                return false;
            }
            if point.start_time_unix_nano == last.time_unix_nano {
                point.start_time_unix_nano = last.start_time_unix_nano;
                point.value = add(&last.value, &point.value);
            }
        }
        self.series.insert(
            key,
            Entry {
                total: Total::Sum(point.clone()),
                updated: now,
            },
        );
        true
    }

    /// One delta histogram point: made cumulative in place; false to drop it.
    fn histogram(&mut self, key: Vec<u8>, point: &mut HistogramDataPoint, now: Instant) -> bool {
        if point.flags & NO_RECORDED_VALUE != 0 {
            self.series.remove(&key);
            return true;
        }
        if let Some(Entry {
            total: Total::Histogram(last),
            ..
        }) = self.series.get(&key)
        {
            if point.start_time_unix_nano != last.time_unix_nano {
                // Misaligned: an overlap is a second writer or a replay, dropped; a gap is a
                // restart, and the series begins again.
                if point.start_time_unix_nano <= last.time_unix_nano {
                    return false;
                }
            } else if point.explicit_bounds == last.explicit_bounds
                && point.bucket_counts.len() == last.bucket_counts.len()
            {
                point.start_time_unix_nano = last.start_time_unix_nano;
                point.count += last.count;
                point.sum = Some(point.sum.unwrap_or(0.0) + last.sum.unwrap_or(0.0));
                for (count, previous) in point.bucket_counts.iter_mut().zip(&last.bucket_counts) {
                    *count += previous;
                }
            } else {
                point.start_time_unix_nano = last.start_time_unix_nano;
            }
        }
        self.series.insert(
            key,
            Entry {
                total: Total::Histogram(point.clone()),
                updated: now,
            },
        );
        true
    }

    /// Forgets the series without a point for `expiration`.
    pub(super) fn expire(&mut self, now: Instant, expiration: Duration) {
        self.series
            .retain(|_, e| now.duration_since(e.updated) < expiration);
    }
}
