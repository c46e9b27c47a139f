//! `send --fresh-timestamps`: where the timestamps of an encoded OTLP export request are, and how
//! to move them forward without re-encoding.
//!
//! Every OTLP timestamp is a `fixed64`, so it can be rewritten in place without changing the
//! request's length. The offsets are found once per pooled request by a structural walk along the
//! known OTLP field paths (never by searching for byte patterns); at send time the request is
//! copied and each recorded field gets the same shift added.

use anyhow::bail;
use bytes::{Bytes, BytesMut};
use sluice_core::Signal;
use sluice_core::wire;

use crate::embedded;

/// The absolute byte offsets of every non-zero timestamp field of an encoded export request.
///
/// Zero timestamps (for example a gauge point without a start time) are left out so that they stay
/// zero. Unknown fields are skipped; malformed input is an error.
pub(crate) fn offsets(signal: Signal, request: &[u8]) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    match signal {
        // ExportTraceServiceRequest.resource_spans → ResourceSpans.scope_spans → ScopeSpans.spans
        Signal::Traces => each(request, 0, 1, &mut |rs, at| {
            each(rs, at, 2, &mut |ss, at| {
                each(ss, at, 2, &mut |span, at| {
                    // Span.start_time_unix_nano, end_time_unix_nano; Span.events → Event.time_unix_nano
                    stamps(span, at, &[7, 8], Some((11, &[1])), &mut out)
                })
            })
        })?,
        // ExportMetricsServiceRequest.resource_metrics → ResourceMetrics.scope_metrics
        // → ScopeMetrics.metrics
        Signal::Metrics => each(request, 0, 1, &mut |rm, at| {
            each(rm, at, 2, &mut |sm, at| {
                each(sm, at, 2, &mut |metric, at| {
                    metric_stamps(metric, at, &mut out)
                })
            })
        })?,
        // ExportLogsServiceRequest.resource_logs → ResourceLogs.scope_logs → ScopeLogs.log_records
        Signal::Logs => each(request, 0, 1, &mut |rl, at| {
            each(rl, at, 2, &mut |sl, at| {
                each(sl, at, 2, &mut |record, at| {
                    // LogRecord.time_unix_nano, observed_time_unix_nano
                    stamps(record, at, &[1, 11], None, &mut out)
                })
            })
        })?,
    }
    Ok(out)
}

/// A visitor of embedded messages: their bytes and absolute offset.
type Visitor<'v> = dyn FnMut(&[u8], usize) -> anyhow::Result<()> + 'v;

/// Hands every embedded message in field `number` of `message` (at absolute offset `base`) to
/// `visit`, with its own absolute offset.
fn each(message: &[u8], base: usize, number: u32, visit: &mut Visitor<'_>) -> anyhow::Result<()> {
    for field in wire::fields(message) {
        let field = field?;
        if field.number == number {
            visit(embedded(&field)?, base + field.value_start)?;
        }
    }
    Ok(())
}

/// Records the non-zero `fixed64` fields numbered `fields` of `message`, and those numbered
/// `child.1` of the embedded messages in field `child.0` (span events, exemplars).
fn stamps(
    message: &[u8],
    base: usize,
    fields: &[u32],
    child: Option<(u32, &[u32])>,
    out: &mut Vec<usize>,
) -> anyhow::Result<()> {
    for field in wire::fields(message) {
        let field = field?;
        if fields.contains(&field.number) {
            let Some(value) = field.fixed64() else {
                bail!(
                    "timestamp field {} is {:?}, not fixed64",
                    field.number,
                    field.wire_type
                );
            };
            if value != 0 {
                out.push(base + field.value_start);
            }
        } else if let Some((number, child_fields)) = child
            && field.number == number
        {
            let at = base + field.value_start;
            stamps(embedded(&field)?, at, child_fields, None, out)?;
        }
    }
    Ok(())
}

/// The timestamps of one `Metric`: its data (gauge=5, sum=7, histogram=9,
/// exponential_histogram=10, summary=11) has data_points=1, each with start_time_unix_nano=2 and
/// time_unix_nano=3, and exemplars (field 5, 8, 11 by point type; none for summaries) with
/// time_unix_nano=2.
fn metric_stamps(metric: &[u8], base: usize, out: &mut Vec<usize>) -> anyhow::Result<()> {
    for field in wire::fields(metric) {
        let field = field?;
        let exemplars = match field.number {
            // NumberDataPoint.exemplars
            5 | 7 => Some(5),
            // HistogramDataPoint.exemplars
            9 => Some(8),
            // ExponentialHistogramDataPoint.exemplars
            10 => Some(11),
            // SummaryDataPoint has none
            11 => None,
            _ => continue,
        };
        let at = base + field.value_start;
        each(embedded(&field)?, at, 1, &mut |point, at| {
            stamps(point, at, &[2, 3], exemplars.map(|e| (e, &[2][..])), out)
        })?;
    }
    Ok(())
}

/// A copy of `request` with `shift` nanoseconds added (saturating) to the little-endian `fixed64`
/// at each of `offsets`. Offsets that do not fit in the request are ignored.
pub(crate) fn shifted(request: &[u8], offsets: &[usize], shift: u64) -> Bytes {
    let mut out = BytesMut::from(request);
    for &o in offsets {
        let Some(slot) = out.get_mut(o..o.saturating_add(8)) else {
            continue;
        };
        if let Ok(old) = <[u8; 8]>::try_from(&*slot) {
            let new = u64::from_le_bytes(old).saturating_add(shift);
            slot.copy_from_slice(&new.to_le_bytes());
        }
    }
    out.freeze()
}

/// The absolute byte offsets of the trace ids (16-byte `bytes` fields) of the spans
/// (`Span.trace_id`, field 1) or log records (`LogRecord.trace_id`, field 9) of an encoded export
/// request; none for metrics.
pub(crate) fn trace_ids(signal: Signal, request: &[u8]) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    let number = match signal {
        Signal::Traces => 1,
        Signal::Logs => 9,
        Signal::Metrics => return Ok(out),
    };
    each(request, 0, 1, &mut |r, at| {
        each(r, at, 2, &mut |s, at| {
            each(s, at, 2, &mut |item, at| {
                for field in wire::fields(item) {
                    let field = field?;
                    if field.number == number && field.payload.len() == 16 {
                        out.push(at + field.value_start);
                    }
                }
                Ok(())
            })
        })
    })?;
    Ok(out)
}

/// A copy of `request` with `sequence` XORed into the first 8 bytes of the 16-byte trace id at
/// each of `offsets`: ids equal in the request stay equal, ids of different sequences differ.
pub(crate) fn with_trace_ids(request: &[u8], offsets: &[usize], sequence: u64) -> Bytes {
    let mut out = BytesMut::from(request);
    let mix = sequence.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
    for &o in offsets {
        if let Some(slot) = out.get_mut(o..o.saturating_add(8)) {
            for (b, m) in slot.iter_mut().zip(mix) {
                *b ^= m;
            }
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
    use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
    use opentelemetry_proto::tonic::metrics::v1::{
        Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
        HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Summary,
        SummaryDataPoint, exemplar, metric, number_data_point,
    };
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    use super::*;

    const NOW: u64 = 1_750_000_000_000_000_000;
    const SHIFT: u64 = 123_456_789_012;

    /// Visits every timestamp field of a decoded request, in encoding order.
    type Visit<M> = fn(&mut M, &mut dyn FnMut(&mut u64));

    fn visit_traces(r: &mut ExportTraceServiceRequest, f: &mut dyn FnMut(&mut u64)) {
        for rs in &mut r.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    f(&mut span.start_time_unix_nano);
                    f(&mut span.end_time_unix_nano);
                    for e in &mut span.events {
                        f(&mut e.time_unix_nano);
                    }
                }
            }
        }
    }

    fn visit_number(p: &mut NumberDataPoint, f: &mut dyn FnMut(&mut u64)) {
        f(&mut p.start_time_unix_nano);
        f(&mut p.time_unix_nano);
        visit_exemplars(&mut p.exemplars, f);
    }

    fn visit_exemplars(exemplars: &mut [Exemplar], f: &mut dyn FnMut(&mut u64)) {
        for e in exemplars {
            f(&mut e.time_unix_nano);
        }
    }

    fn visit_metrics(r: &mut ExportMetricsServiceRequest, f: &mut dyn FnMut(&mut u64)) {
        for rm in &mut r.resource_metrics {
            for sm in &mut rm.scope_metrics {
                for m in &mut sm.metrics {
                    match &mut m.data {
                        Some(metric::Data::Gauge(g)) => {
                            g.data_points.iter_mut().for_each(|p| visit_number(p, f))
                        }
                        Some(metric::Data::Sum(s)) => {
                            s.data_points.iter_mut().for_each(|p| visit_number(p, f))
                        }
                        Some(metric::Data::Histogram(h)) => {
                            for p in &mut h.data_points {
                                f(&mut p.start_time_unix_nano);
                                f(&mut p.time_unix_nano);
                                visit_exemplars(&mut p.exemplars, f);
                            }
                        }
                        Some(metric::Data::ExponentialHistogram(h)) => {
                            for p in &mut h.data_points {
                                f(&mut p.start_time_unix_nano);
                                f(&mut p.time_unix_nano);
                                visit_exemplars(&mut p.exemplars, f);
                            }
                        }
                        Some(metric::Data::Summary(s)) => {
                            for p in &mut s.data_points {
                                f(&mut p.start_time_unix_nano);
                                f(&mut p.time_unix_nano);
                            }
                        }
                        None => {}
                    }
                }
            }
        }
    }

    fn visit_logs(r: &mut ExportLogsServiceRequest, f: &mut dyn FnMut(&mut u64)) {
        for rl in &mut r.resource_logs {
            for sl in &mut rl.scope_logs {
                for l in &mut sl.log_records {
                    f(&mut l.time_unix_nano);
                    f(&mut l.observed_time_unix_nano);
                }
            }
        }
    }

    /// Shifts `request` and checks, against prost, that exactly the timestamps moved.
    fn check<M: Message + Default + PartialEq + Debug>(
        signal: Signal,
        request: &[u8],
        visit: Visit<M>,
    ) {
        let offsets = offsets(signal, request).unwrap();
        let patched = shifted(request, &offsets, SHIFT);
        assert_eq!(patched.len(), request.len());
        let mut before = M::decode(request).unwrap();
        let mut after = M::decode(&patched[..]).unwrap();
        let mut old = Vec::new();
        visit(&mut before, &mut |t| old.push(std::mem::take(t)));
        let mut new = Vec::new();
        visit(&mut after, &mut |t| new.push(std::mem::take(t)));
        assert_eq!(old.len(), new.len());
        let non_zero = old.iter().filter(|&&t| t != 0).count();
        assert!(non_zero > 0, "{signal}: no timestamps to check");
        assert_eq!(offsets.len(), non_zero, "{signal}: offsets vs timestamps");
        for (o, n) in old.iter().zip(&new) {
            let expected = if *o == 0 { 0 } else { o + SHIFT };
            assert_eq!(*n, expected, "{signal}");
        }
        // With the timestamps zeroed, nothing else differs.
        assert_eq!(before, after, "{signal}");
    }

    #[test]
    fn shifts_every_trace_timestamp() {
        let pool = sluice_fixtures::pool(Signal::Traces, 200, 2, NOW);
        let mut events = 0;
        for request in &pool {
            let decoded = ExportTraceServiceRequest::decode(&request[..]).unwrap();
            events += decoded.resource_spans[0].scope_spans[0]
                .spans
                .iter()
                .map(|s| s.events.len())
                .sum::<usize>();
            check(Signal::Traces, request, visit_traces);
        }
        assert!(events > 0, "the pool should hold span events");
    }

    #[test]
    fn shifts_every_metric_timestamp() {
        // 15 points: 5 histogram, 5 sum, 5 gauge (no start time) points.
        for request in sluice_fixtures::pool(Signal::Metrics, 15, 2, NOW) {
            let decoded = ExportMetricsServiceRequest::decode(&request[..]).unwrap();
            let kinds: Vec<_> = decoded.resource_metrics[0].scope_metrics[0]
                .metrics
                .iter()
                .map(|m| match m.data {
                    Some(metric::Data::Histogram(_)) => "histogram",
                    Some(metric::Data::Sum(_)) => "sum",
                    Some(metric::Data::Gauge(_)) => "gauge",
                    _ => "other",
                })
                .collect();
            assert_eq!(kinds, ["histogram", "sum", "gauge"]);
            check(Signal::Metrics, &request, visit_metrics);
        }
    }

    #[test]
    fn shifts_every_log_timestamp() {
        for request in sluice_fixtures::pool(Signal::Logs, 20, 2, NOW) {
            check(Signal::Logs, &request, visit_logs);
        }
    }

    #[test]
    fn shifts_exemplars_exponential_histograms_and_summaries() {
        let exemplar = |t: u64| Exemplar {
            time_unix_nano: t,
            value: Some(exemplar::Value::AsDouble(1.5)),
            span_id: vec![1; 8],
            trace_id: vec![2; 16],
            ..Default::default()
        };
        let metric = |data| Metric {
            name: "m".into(),
            data: Some(data),
            ..Default::default()
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        metric(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                time_unix_nano: NOW,
                                value: Some(number_data_point::Value::AsInt(3)),
                                exemplars: vec![exemplar(NOW - 5), exemplar(0)],
                                ..Default::default()
                            }],
                        })),
                        metric(metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                start_time_unix_nano: NOW - 10,
                                time_unix_nano: NOW,
                                count: 4,
                                bucket_counts: vec![1, 3],
                                explicit_bounds: vec![1.0],
                                exemplars: vec![exemplar(NOW - 1)],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        })),
                        metric(metric::Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint {
                                start_time_unix_nano: NOW - 20,
                                time_unix_nano: NOW,
                                count: 7,
                                zero_count: 2,
                                scale: 3,
                                positive: Some(Buckets {
                                    offset: 1,
                                    bucket_counts: vec![2, 3],
                                }),
                                exemplars: vec![exemplar(NOW - 2)],
                                ..Default::default()
                            }],
                            aggregation_temporality: 1,
                        })),
                        metric(metric::Data::Summary(Summary {
                            data_points: vec![SummaryDataPoint {
                                start_time_unix_nano: NOW - 30,
                                time_unix_nano: NOW,
                                count: 9,
                                sum: 12.5,
                                quantile_values: vec![ValueAtQuantile {
                                    quantile: 0.5,
                                    value: 1.0,
                                }],
                                ..Default::default()
                            }],
                        })),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        check(Signal::Metrics, &request, visit_metrics);
        // gauge 1 + 1 exemplar, histogram 2 + 1, exponential 2 + 1, summary 2
        assert_eq!(offsets(Signal::Metrics, &request).unwrap().len(), 10);
    }

    #[test]
    fn span_links_and_events_without_time_are_left_alone() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        start_time_unix_nano: NOW,
                        end_time_unix_nano: NOW + 1,
                        events: vec![
                            Event {
                                time_unix_nano: NOW,
                                name: "e".into(),
                                ..Default::default()
                            },
                            Event {
                                name: "untimed".into(),
                                ..Default::default()
                            },
                        ],
                        links: vec![Link {
                            trace_id: vec![3; 16],
                            span_id: vec![4; 8],
                            flags: 0x100,
                            ..Default::default()
                        }],
                        flags: 0x301,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        check(Signal::Traces, &request, visit_traces);
        assert_eq!(offsets(Signal::Traces, &request).unwrap().len(), 3);
    }

    #[test]
    fn explicitly_encoded_zero_timestamps_stay_zero() {
        // resource_logs { scope_logs { log_records { time_unix_nano: 0 (encoded),
        // observed_time_unix_nano: 5 } } }
        let mut record = vec![0x09];
        record.extend_from_slice(&0u64.to_le_bytes());
        record.push(0x59);
        record.extend_from_slice(&5u64.to_le_bytes());
        let wrap = |field: u8, inner: Vec<u8>| {
            let mut v = vec![(field << 3) | 2, inner.len() as u8];
            v.extend(inner);
            v
        };
        let request = wrap(1, wrap(2, wrap(2, record)));
        let offsets = offsets(Signal::Logs, &request).unwrap();
        assert_eq!(offsets.len(), 1);
        let patched = shifted(&request, &offsets, 10);
        let decoded = ExportLogsServiceRequest::decode(&patched[..]).unwrap();
        let r = &decoded.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!((r.time_unix_nano, r.observed_time_unix_nano), (0, 15));
    }

    #[test]
    fn shift_saturates() {
        let request = ExportLogsServiceRequest::default().encode_to_vec();
        assert!(shifted(&request, &[], 1).is_empty());
        let bytes = (u64::MAX - 1).to_le_bytes();
        let patched = shifted(&bytes, &[0, 4], 10);
        assert_eq!(&patched[..], &u64::MAX.to_le_bytes());
    }

    #[test]
    fn truncated_requests_are_errors() {
        for signal in Signal::ALL {
            for request in sluice_fixtures::pool(signal, 6, 1, NOW) {
                assert!(offsets(signal, &request).is_ok());
                for n in 1..request.len() {
                    assert!(
                        offsets(signal, &request[..n]).is_err(),
                        "{signal}: prefix of {n} bytes"
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_wire_type_for_a_timestamp_is_an_error() {
        // resource_logs { scope_logs { log_records { time_unix_nano as a varint } } }
        let request = [0x0a, 6, 0x12, 4, 0x12, 2, 0x08, 1];
        let e = offsets(Signal::Logs, &request).unwrap_err().to_string();
        assert!(e.contains("timestamp field 1 is Varint"), "{e}");
    }

    #[test]
    fn garbage_does_not_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            for signal in Signal::ALL {
                let _ = offsets(signal, &bytes);
            }
        }
    }

    #[test]
    fn fresh_trace_ids_keep_traces_together_and_apart_across_requests() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message;
        let request =
            sluice_fixtures::pool(Signal::Traces, 200, 1, 1_700_000_000_000_000_000).remove(0);
        let ids = |b: &[u8]| -> Vec<Vec<u8>> {
            ExportTraceServiceRequest::decode(b)
                .unwrap()
                .resource_spans
                .into_iter()
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans)
                .map(|s| s.trace_id)
                .collect()
        };
        let offsets = trace_ids(Signal::Traces, &request).unwrap();
        let original = ids(&request);
        assert_eq!(offsets.len(), original.len());
        let a = ids(&with_trace_ids(&request, &offsets, 1));
        let b = ids(&with_trace_ids(&request, &offsets, 2));
        for i in 0..original.len() {
            assert_ne!(a[i], b[i]);
            assert_ne!(a[i], original[i]);
            for j in 0..original.len() {
                assert_eq!(original[i] == original[j], a[i] == a[j]);
            }
        }
    }
}
