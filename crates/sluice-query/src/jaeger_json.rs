//! Jaeger's v1 JSON (the shape Jaeger UI and Grafana's Jaeger data source read): traces
//! translated to Jaeger's model by the `jaeger` exporter's translation (one copy of that
//! mapping), then written as Jaeger's query service writes them (`internal/uimodel`).
//!
//! * ids are zero-padded lowercase hex, a trace id 16 digits when its high half is zero;
//! * times and durations are microseconds;
//! * an `int64` tag beyond ±(2^53 − 1) is written as a string (JavaScript would round it), a
//!   binary one as base64;
//! * processes are shared within a trace as `p1`, `p2`, … in order of first use.

use base64::Engine;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::{Map, Value, json};
use sluice_core::anyvalue::hex;
use sluice_core::store::{Trace, TraceId};
use sluice_jaeger::proto::{self, SpanRefType, ValueType};

/// The largest integer a JavaScript number holds exactly.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// A trace id as Jaeger writes it.
pub(crate) fn trace_id(id: &[u8]) -> String {
    if id.len() == 16 && id[..8].iter().all(|b| *b == 0) {
        hex(&id[8..])
    } else {
        hex(id)
    }
}

fn micros(seconds: i64, nanos: i32) -> i64 {
    seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(nanos) / 1000)
}

/// One tag or log field.
fn key_value(kv: &proto::KeyValue) -> Value {
    let (kind, value) = match ValueType::try_from(kv.v_type).unwrap_or(ValueType::String) {
        ValueType::String => ("string", Value::from(kv.v_str.as_str())),
        ValueType::Bool => ("bool", Value::from(kv.v_bool)),
        ValueType::Int64 if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&kv.v_int64) => {
            ("int64", Value::from(kv.v_int64))
        }
        ValueType::Int64 => ("int64", Value::from(kv.v_int64.to_string())),
        ValueType::Float64 => (
            "float64",
            serde_json::Number::from_f64(kv.v_float64)
                .map_or_else(|| Value::from(kv.v_float64.to_string()), Value::Number),
        ),
        ValueType::Binary => (
            "binary",
            Value::from(base64::engine::general_purpose::STANDARD.encode(&kv.v_binary)),
        ),
    };
    json!({"key": kv.key, "type": kind, "value": value})
}

fn key_values(kvs: &[proto::KeyValue]) -> Value {
    Value::Array(kvs.iter().map(key_value).collect())
}

/// One trace in Jaeger's JSON.
pub(crate) fn trace(id: &TraceId, trace: Trace) -> Value {
    let batches = sluice_jaeger::translate(&ExportTraceServiceRequest {
        resource_spans: trace.resource_spans,
    });
    let mut processes: Vec<proto::Process> = Vec::new();
    let mut spans = Vec::new();
    for batch in batches {
        let process = batch.process.unwrap_or_default();
        let index = match processes.iter().position(|p| *p == process) {
            Some(i) => i,
            None => {
                processes.push(process);
                processes.len() - 1
            }
        };
        let process_id = format!("p{}", index + 1);
        for span in batch.spans {
            spans.push(span_json(&span, &process_id));
        }
    }
    let processes: Map<String, Value> = processes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                format!("p{}", i + 1),
                json!({"serviceName": p.service_name, "tags": key_values(&p.tags)}),
            )
        })
        .collect();
    json!({
        "traceID": trace_id(id),
        "spans": spans,
        "processes": processes,
        "warnings": Value::Null,
    })
}

fn span_json(span: &proto::Span, process_id: &str) -> Value {
    let references: Vec<Value> = span
        .references
        .iter()
        .map(|r| {
            let kind = match SpanRefType::try_from(r.ref_type) {
                Ok(SpanRefType::FollowsFrom) => "FOLLOWS_FROM",
                _ => "CHILD_OF",
            };
            json!({"refType": kind, "traceID": trace_id(&r.trace_id), "spanID": hex(&r.span_id)})
        })
        .collect();
    let logs: Vec<Value> = span
        .logs
        .iter()
        .map(|log| {
            let t = log.timestamp.unwrap_or_default();
            json!({"timestamp": micros(t.seconds, t.nanos), "fields": key_values(&log.fields)})
        })
        .collect();
    let start = span.start_time.unwrap_or_default();
    let duration = span.duration.unwrap_or_default();
    json!({
        "traceID": trace_id(&span.trace_id),
        "spanID": hex(&span.span_id),
        "flags": span.flags,
        "operationName": span.operation_name,
        "references": references,
        "startTime": micros(start.seconds, start.nanos),
        "duration": micros(duration.seconds, duration.nanos),
        "tags": key_values(&span.tags),
        "logs": logs,
        "processID": process_id,
        "warnings": if span.warnings.is_empty() { Value::Null } else { json!(span.warnings) },
    })
}

/// Jaeger's response envelope around `data`.
pub(crate) fn envelope(data: Value) -> Value {
    let total = data.as_array().map_or(0, Vec::len);
    json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": Value::Null})
}

/// Jaeger's error envelope.
pub(crate) fn error(code: u16, message: &str) -> Value {
    json!({
        "data": Value::Null,
        "total": 0,
        "limit": 0,
        "offset": 0,
        "errors": [{"code": code, "msg": message}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_pad_as_jaeger_writes_them_and_big_ints_become_strings() {
        let mut id = [0u8; 16];
        id[15] = 0xab;
        assert_eq!(trace_id(&id), "00000000000000ab");
        id[0] = 1;
        assert_eq!(trace_id(&id), "010000000000000000000000000000ab");
        let tag = |v: i64| proto::KeyValue {
            key: "k".into(),
            v_type: ValueType::Int64 as i32,
            v_int64: v,
            ..Default::default()
        };
        assert_eq!(
            key_value(&tag(MAX_SAFE_INTEGER))["value"],
            json!(MAX_SAFE_INTEGER)
        );
        assert_eq!(
            key_value(&tag(MAX_SAFE_INTEGER + 1))["value"],
            json!("9007199254740992")
        );
        assert_eq!(
            key_value(&tag(i64::MIN))["value"],
            json!(i64::MIN.to_string())
        );
        let binary = proto::KeyValue {
            key: "b".into(),
            v_type: ValueType::Binary as i32,
            v_binary: vec![0xff, 0],
            ..Default::default()
        };
        assert_eq!(
            key_value(&binary),
            json!({"key": "b", "type": "binary", "value": "/wA="})
        );
    }
}
