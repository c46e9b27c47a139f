//! OTLP exponential histogram points to Prometheus native histograms, by the specification's
//! "Exponential Histograms" section (status: Development).
//!
//! Where the specification and the Collector (upstream Prometheus' translator, which contrib's
//! code follows) differ, the specification wins:
//!
//! * a point without a sum is dropped (upstream sends sum 0);
//! * `zero_threshold` is the point's own when set, `1e-128` only when unset (upstream always
//!   sends `1e-128`);
//! * a stale point has count 0 (integer) and sum = stale NaN (upstream writes the stale NaN into
//!   the count);
//! * only non-zero buckets are written (upstream also fills gaps of up to two empty buckets; both
//!   are allowed).
//!
//! Beyond both: a point whose bucket total disagrees with its count the way Prometheus' own
//! validation rejects (count ≠ zero count + buckets, or count < that total when the sum is NaN) is
//! dropped here, since Prometheus would answer the whole request with 400.

use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogramDataPoint, exponential_histogram_data_point::Buckets,
};

use super::{canonical, reason, stale_nan};
use crate::proto::{self, BucketSpan, ResetHint, histogram};

/// The largest schema (scale) Prometheus accepts; finer points are downscaled to it.
const MAX_SCHEMA: i32 = 8;
/// The smallest schema Prometheus accepts; coarser points are dropped.
const MIN_SCHEMA: i32 = -4;
/// The zero threshold when the point sets none (specification).
const DEFAULT_ZERO_THRESHOLD: f64 = 1e-128;

/// Converts one point (already known to be cumulative). `Err` carries the reason it is dropped.
pub(crate) fn native_histogram(
    point: &ExponentialHistogramDataPoint,
    timestamp: i64,
    stale: bool,
) -> Result<proto::Histogram, &'static str> {
    if point.scale < MIN_SCHEMA {
        return Err(reason::SCALE_OUT_OF_RANGE);
    }
    let schema = point.scale.min(MAX_SCHEMA);
    // Non-negative, and at most i32::MAX - 8.
    let scale_down = point.scale.abs_diff(schema);
    let zero_threshold = if point.zero_threshold == 0.0 {
        DEFAULT_ZERO_THRESHOLD
    } else if point.zero_threshold.is_finite() && point.zero_threshold > 0.0 {
        point.zero_threshold
    } else {
        return Err(reason::INVALID_EXPONENTIAL_HISTOGRAM);
    };
    let mut out = proto::Histogram {
        count: Some(histogram::Count::CountInt(0)),
        sum: stale_nan(),
        schema,
        zero_threshold,
        zero_count: None,
        negative_spans: Vec::new(),
        negative_deltas: Vec::new(),
        negative_counts: Vec::new(),
        positive_spans: Vec::new(),
        positive_deltas: Vec::new(),
        positive_counts: Vec::new(),
        reset_hint: ResetHint::Unknown as i32,
        timestamp,
    };
    if stale {
        // Specification: sum = stale NaN, count = 0, zero count, spans and deltas empty.
        return Ok(out);
    }
    let Some(sum) = point.sum else {
        return Err(reason::NO_SUM);
    };
    let invalid = reason::INVALID_EXPONENTIAL_HISTOGRAM;
    let (positive_spans, positive_deltas, positive_total) =
        sparse_buckets(point.positive.as_ref(), scale_down).ok_or(invalid)?;
    let (negative_spans, negative_deltas, negative_total) =
        sparse_buckets(point.negative.as_ref(), scale_down).ok_or(invalid)?;
    let total = point
        .zero_count
        .checked_add(positive_total)
        .and_then(|total| total.checked_add(negative_total))
        .ok_or(invalid)?;
    // Prometheus' ValidateHistogram: with a NaN sum the count may exceed the buckets (NaN
    // observations land in none); otherwise they must agree.
    let consistent = if sum.is_nan() {
        total <= point.count
    } else {
        total == point.count
    };
    if !consistent {
        return Err(invalid);
    }
    out.count = Some(histogram::Count::CountInt(point.count));
    out.sum = canonical(sum);
    out.zero_count = Some(histogram::ZeroCount::ZeroCountInt(point.zero_count));
    out.positive_spans = positive_spans;
    out.positive_deltas = positive_deltas;
    out.negative_spans = negative_spans;
    out.negative_deltas = negative_deltas;
    Ok(out)
}

/// One side's dense OTLP buckets as native spans and deltas, plus the bucket total.
///
/// The OTLP bucket at position `i` has index `offset + i` (lower boundary); downscaling by `d`
/// merges it into index `(offset + i) >> d`, and the native index (upper boundary) is that plus
/// one. Only non-zero buckets are written: the first span's offset is the first index, later
/// offsets are the gaps between spans; deltas are differences from the previous written count.
/// `None` when the indices or counts do not fit the native encoding (i32 offsets, i64 deltas).
fn sparse_buckets(
    buckets: Option<&Buckets>,
    scale_down: u32,
) -> Option<(Vec<BucketSpan>, Vec<i64>, u64)> {
    let Some(buckets) = buckets else {
        return Some((Vec::new(), Vec::new(), 0));
    };
    // A shift of 63 already maps every i64 index to 0 or -1, as any larger one would.
    let shift = scale_down.min(63);
    let mut merged: Vec<(i64, u64)> = Vec::new();
    for (position, &count) in buckets.bucket_counts.iter().enumerate() {
        let index = (i64::from(buckets.offset) + i64::try_from(position).ok()?) >> shift;
        let index = index + 1;
        match merged.last_mut() {
            Some((last, total)) if *last == index => *total = total.checked_add(count)?,
            _ => merged.push((index, count)),
        }
    }
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut deltas = Vec::new();
    let mut total: u64 = 0;
    let mut previous: Option<(i64, i64)> = None;
    for (index, count) in merged.into_iter().filter(|&(_, count)| count > 0) {
        total = total.checked_add(count)?;
        let count = i64::try_from(count).ok()?;
        match (previous, spans.last_mut()) {
            (Some((previous_index, _)), Some(span)) if index == previous_index + 1 => {
                span.length = span.length.checked_add(1)?;
            }
            (Some((previous_index, _)), _) => spans.push(BucketSpan {
                offset: i32::try_from(index - previous_index - 1).ok()?,
                length: 1,
            }),
            (None, _) => spans.push(BucketSpan {
                offset: i32::try_from(index).ok()?,
                length: 1,
            }),
        }
        // Both counts are in 0..=i64::MAX, so the difference cannot overflow.
        deltas.push(count - previous.map_or(0, |(_, previous_count)| previous_count));
        previous = Some((index, count));
    }
    Some((spans, deltas, total))
}
