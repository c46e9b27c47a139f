//! OTLP requests to column arrays, one `Vec` per column, bound as PostgreSQL arrays and inserted
//! with `INSERT … SELECT * FROM unnest(…)`: one statement per batch, however many rows.
//!
//! The rows own their strings, so a large batch is decoded and translated in one go off the
//! async workers. U+0000, which PostgreSQL's `text` and `jsonb` cannot store, becomes U+FFFD
//! (the only change made to any value).

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use sha2::{Digest, Sha256};
use sluice_core::anyvalue::{self, hex};

use crate::types::{Jsonb, Timestamp};

/// `resources` rows, one per distinct resource in the batch.
#[derive(Debug, Default)]
pub(crate) struct ResourceRows {
    pub(crate) resource_id: Vec<i64>,
    pub(crate) service_name: Vec<Option<String>>,
    pub(crate) attributes: Vec<Jsonb>,
    pub(crate) dropped_attributes_count: Vec<i32>,
}

/// `spans` rows.
#[derive(Debug, Default)]
pub(crate) struct SpanRows {
    pub(crate) trace_id: Vec<String>,
    pub(crate) span_id: Vec<String>,
    pub(crate) parent_span_id: Vec<Option<String>>,
    pub(crate) trace_state: Vec<String>,
    pub(crate) flags: Vec<i32>,
    pub(crate) name: Vec<String>,
    pub(crate) kind: Vec<&'static str>,
    pub(crate) start_time: Vec<Timestamp>,
    pub(crate) end_time: Vec<Timestamp>,
    pub(crate) duration_ns: Vec<i64>,
    pub(crate) status_code: Vec<&'static str>,
    pub(crate) status_message: Vec<String>,
    pub(crate) service_name: Vec<Option<String>>,
    pub(crate) resource_id: Vec<i64>,
    pub(crate) scope_name: Vec<String>,
    pub(crate) scope_version: Vec<String>,
    pub(crate) attributes: Vec<Jsonb>,
    pub(crate) dropped_attributes_count: Vec<i32>,
    pub(crate) dropped_events_count: Vec<i32>,
    pub(crate) dropped_links_count: Vec<i32>,
}

/// `span_events` rows.
#[derive(Debug, Default)]
pub(crate) struct EventRows {
    pub(crate) trace_id: Vec<String>,
    pub(crate) span_id: Vec<String>,
    pub(crate) span_start_time: Vec<Timestamp>,
    pub(crate) event_index: Vec<i32>,
    pub(crate) time: Vec<Timestamp>,
    pub(crate) name: Vec<String>,
    pub(crate) attributes: Vec<Jsonb>,
    pub(crate) dropped_attributes_count: Vec<i32>,
}

/// `span_links` rows.
#[derive(Debug, Default)]
pub(crate) struct LinkRows {
    pub(crate) trace_id: Vec<String>,
    pub(crate) span_id: Vec<String>,
    pub(crate) span_start_time: Vec<Timestamp>,
    pub(crate) link_index: Vec<i32>,
    pub(crate) linked_trace_id: Vec<String>,
    pub(crate) linked_span_id: Vec<String>,
    pub(crate) trace_state: Vec<String>,
    pub(crate) flags: Vec<i32>,
    pub(crate) attributes: Vec<Jsonb>,
    pub(crate) dropped_attributes_count: Vec<i32>,
}

/// Everything one traces batch writes.
#[derive(Debug, Default)]
pub(crate) struct TraceRows {
    pub(crate) resources: ResourceRows,
    pub(crate) spans: SpanRows,
    pub(crate) events: EventRows,
    pub(crate) links: LinkRows,
    /// Promoted attributes per trace: `traces.attributes` is merged with these.
    pub(crate) promoted_trace_id: Vec<String>,
    pub(crate) promoted_attributes: Vec<Jsonb>,
}

/// `logs` rows.
#[derive(Debug, Default)]
pub(crate) struct LogRows {
    pub(crate) resources: ResourceRows,
    pub(crate) time: Vec<Timestamp>,
    pub(crate) log_id: Vec<i64>,
    pub(crate) observed_time: Vec<Option<Timestamp>>,
    pub(crate) severity_number: Vec<i16>,
    pub(crate) severity_text: Vec<String>,
    pub(crate) body: Vec<Option<String>>,
    pub(crate) body_kind: Vec<&'static str>,
    pub(crate) event_name: Vec<String>,
    pub(crate) trace_id: Vec<Option<String>>,
    pub(crate) span_id: Vec<Option<String>>,
    pub(crate) flags: Vec<i32>,
    pub(crate) service_name: Vec<Option<String>>,
    pub(crate) resource_id: Vec<i64>,
    pub(crate) scope_name: Vec<String>,
    pub(crate) scope_version: Vec<String>,
    pub(crate) attributes: Vec<Jsonb>,
    pub(crate) dropped_attributes_count: Vec<i32>,
}

/// A string PostgreSQL can store: U+0000 becomes U+FFFD.
fn text(value: &str) -> String {
    if value.contains('\0') {
        value.replace('\0', "\u{fffd}")
    } else {
        value.to_owned()
    }
}

/// An id that may be absent (all zero bytes or empty means absent, per OTLP).
fn optional_id(bytes: &[u8]) -> Option<String> {
    if bytes.iter().all(|b| *b == 0) {
        None
    } else {
        Some(hex(bytes))
    }
}

fn attributes_json(attributes: &[KeyValue]) -> Jsonb {
    let mut out = String::with_capacity(attributes.len() * 32 + 2);
    anyvalue::write_json_object(&mut out, attributes, true);
    Jsonb(out)
}

/// Counters from OTLP's u32 fields; PostgreSQL's integer is signed.
fn count(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn span_kind(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn status_code(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

/// The first 8 bytes of SHA-256 of everything fed, as a signed integer for a `bigint` column.
/// Stable across versions and machines, so replays of the same data get the same key.
struct KeyHasher(Sha256);

impl KeyHasher {
    fn new() -> Self {
        KeyHasher(Sha256::new())
    }

    /// Feeds a length-prefixed field, so field boundaries cannot shift.
    fn field(mut self, bytes: &[u8]) -> Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    fn finish(self) -> i64 {
        let digest = self.0.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    }
}

/// The resource's key and service name, adding a `resources` row the first time it is seen.
fn resource(
    rows: &mut ResourceRows,
    seen: &mut HashMap<i64, Option<String>>,
    resource: Option<&Resource>,
) -> (i64, Option<String>) {
    let empty = Resource::default();
    let resource = resource.unwrap_or(&empty);
    let attributes = attributes_json(&resource.attributes);
    let id = KeyHasher::new()
        .field(attributes.0.as_bytes())
        .field(&resource.dropped_attributes_count.to_le_bytes())
        .finish();
    if let Some(service) = seen.get(&id) {
        return (id, service.clone());
    }
    let service = resource.attributes.iter().find_map(|kv| {
        if kv.key != "service.name" {
            return None;
        }
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(name)) => Some(text(name)),
            _ => None,
        }
    });
    rows.resource_id.push(id);
    rows.service_name.push(service.clone());
    rows.attributes.push(attributes);
    rows.dropped_attributes_count
        .push(count(resource.dropped_attributes_count));
    seen.insert(id, service.clone());
    (id, service)
}

fn scope_fields(scope: Option<&InstrumentationScope>) -> (String, String) {
    scope.map_or((String::new(), String::new()), |s| {
        (text(&s.name), text(&s.version))
    })
}

/// The rows of a traces batch. `promoted` names the span attributes copied onto `traces`.
pub(crate) fn traces(request: &ExportTraceServiceRequest, promoted: &[String]) -> TraceRows {
    let mut rows = TraceRows::default();
    let mut seen = HashMap::new();
    let mut promoted_by_trace: HashMap<String, Vec<(&str, String)>> = HashMap::new();
    for resource_spans in &request.resource_spans {
        let (resource_id, service_name) = resource(
            &mut rows.resources,
            &mut seen,
            resource_spans.resource.as_ref(),
        );
        for scope_spans in &resource_spans.scope_spans {
            let (scope_name, scope_version) = scope_fields(scope_spans.scope.as_ref());
            for span in &scope_spans.spans {
                let trace_id = hex(&span.trace_id);
                let span_id = hex(&span.span_id);
                let start = Timestamp::from_unix_nanos(span.start_time_unix_nano);
                for (index, event) in span.events.iter().enumerate() {
                    let e = &mut rows.events;
                    e.trace_id.push(trace_id.clone());
                    e.span_id.push(span_id.clone());
                    e.span_start_time.push(start);
                    e.event_index.push(i32::try_from(index).unwrap_or(i32::MAX));
                    e.time
                        .push(Timestamp::from_unix_nanos(event.time_unix_nano));
                    e.name.push(text(&event.name));
                    e.attributes.push(attributes_json(&event.attributes));
                    e.dropped_attributes_count
                        .push(count(event.dropped_attributes_count));
                }
                for (index, link) in span.links.iter().enumerate() {
                    let l = &mut rows.links;
                    l.trace_id.push(trace_id.clone());
                    l.span_id.push(span_id.clone());
                    l.span_start_time.push(start);
                    l.link_index.push(i32::try_from(index).unwrap_or(i32::MAX));
                    l.linked_trace_id.push(hex(&link.trace_id));
                    l.linked_span_id.push(hex(&link.span_id));
                    l.trace_state.push(text(&link.trace_state));
                    l.flags.push(link.flags as i32);
                    l.attributes.push(attributes_json(&link.attributes));
                    l.dropped_attributes_count
                        .push(count(link.dropped_attributes_count));
                }
                if !promoted.is_empty() {
                    for kv in &span.attributes {
                        if promoted.contains(&kv.key) {
                            let mut value = String::new();
                            anyvalue::write_json(
                                &mut value,
                                kv.value.as_ref().and_then(|v| v.value.as_ref()),
                                true,
                            );
                            promoted_by_trace
                                .entry(trace_id.clone())
                                .or_default()
                                .push((&kv.key, value));
                        }
                    }
                }
                let s = &mut rows.spans;
                s.trace_id.push(trace_id);
                s.span_id.push(span_id);
                s.parent_span_id.push(optional_id(&span.parent_span_id));
                s.trace_state.push(text(&span.trace_state));
                s.flags.push(span.flags as i32);
                s.name.push(text(&span.name));
                s.kind.push(span_kind(span.kind));
                s.start_time.push(start);
                s.end_time
                    .push(Timestamp::from_unix_nanos(span.end_time_unix_nano));
                let duration =
                    i128::from(span.end_time_unix_nano) - i128::from(span.start_time_unix_nano);
                s.duration_ns
                    .push(i64::try_from(duration).unwrap_or(if duration < 0 {
                        i64::MIN
                    } else {
                        i64::MAX
                    }));
                let status = span.status.as_ref();
                s.status_code
                    .push(status_code(status.map_or(0, |st| st.code)));
                s.status_message
                    .push(status.map_or_else(String::new, |st| text(&st.message)));
                s.service_name.push(service_name.clone());
                s.resource_id.push(resource_id);
                s.scope_name.push(scope_name.clone());
                s.scope_version.push(scope_version.clone());
                s.attributes.push(attributes_json(&span.attributes));
                s.dropped_attributes_count
                    .push(count(span.dropped_attributes_count));
                s.dropped_events_count
                    .push(count(span.dropped_events_count));
                s.dropped_links_count.push(count(span.dropped_links_count));
            }
        }
    }
    let mut promoted_rows: Vec<_> = promoted_by_trace.into_iter().collect();
    promoted_rows.sort_by(|a, b| a.0.cmp(&b.0));
    for (trace_id, values) in promoted_rows {
        let mut object = String::from("{");
        for (i, (key, value)) in values.iter().enumerate() {
            if i > 0 {
                object.push(',');
            }
            anyvalue::write_json_string(&mut object, key, true);
            object.push(':');
            object.push_str(value);
        }
        object.push('}');
        rows.promoted_trace_id.push(trace_id);
        rows.promoted_attributes.push(Jsonb(object));
    }
    rows
}

/// A log body: its kind, and its text (strings as they are, other values in the
/// specification's string form, maps and arrays as JSON).
fn body(value: Option<&Value>) -> (&'static str, Option<String>) {
    let kind = match value {
        Some(Value::StringValue(_)) => "string",
        Some(Value::BoolValue(_)) => "bool",
        Some(Value::IntValue(_)) => "int",
        Some(Value::DoubleValue(_)) => "double",
        Some(Value::BytesValue(_)) => "bytes",
        Some(Value::ArrayValue(_)) => "array",
        Some(Value::KvlistValue(_)) => "map",
        Some(Value::StringValueStrindex(_)) | None => return ("empty", None),
    };
    let rendered = anyvalue::to_string(value);
    let rendered = if rendered.contains('\0') {
        text(&rendered)
    } else {
        rendered
    };
    (kind, Some(rendered))
}

/// The rows of a logs batch. `now_nanos` stands in for a record with neither a time nor an
/// observed time.
pub(crate) fn logs(request: &ExportLogsServiceRequest, now_nanos: u64) -> LogRows {
    let mut rows = LogRows::default();
    let mut seen = HashMap::new();
    for resource_logs in &request.resource_logs {
        let (resource_id, service_name) = resource(
            &mut rows.resources,
            &mut seen,
            resource_logs.resource.as_ref(),
        );
        for scope_logs in &resource_logs.scope_logs {
            let (scope_name, scope_version) = scope_fields(scope_logs.scope.as_ref());
            for record in &scope_logs.log_records {
                let time_nanos = [
                    record.time_unix_nano,
                    record.observed_time_unix_nano,
                    now_nanos,
                ]
                .into_iter()
                .find(|t| *t != 0)
                .unwrap_or(0);
                let (kind, body) = body(record.body.as_ref().and_then(|b| b.value.as_ref()));
                let attributes = attributes_json(&record.attributes);
                let trace_id = optional_id(&record.trace_id);
                let span_id = optional_id(&record.span_id);
                let severity_text = text(&record.severity_text);
                let event_name = text(&record.event_name);
                let log_id = KeyHasher::new()
                    .field(&resource_id.to_le_bytes())
                    .field(scope_name.as_bytes())
                    .field(scope_version.as_bytes())
                    .field(&record.time_unix_nano.to_le_bytes())
                    .field(&record.observed_time_unix_nano.to_le_bytes())
                    .field(&record.severity_number.to_le_bytes())
                    .field(severity_text.as_bytes())
                    .field(kind.as_bytes())
                    .field(body.as_deref().unwrap_or("").as_bytes())
                    .field(attributes.0.as_bytes())
                    .field(trace_id.as_deref().unwrap_or("").as_bytes())
                    .field(span_id.as_deref().unwrap_or("").as_bytes())
                    .field(&record.flags.to_le_bytes())
                    .field(event_name.as_bytes())
                    .field(&record.dropped_attributes_count.to_le_bytes())
                    .finish();
                rows.time.push(Timestamp::from_unix_nanos(time_nanos));
                rows.log_id.push(log_id);
                rows.observed_time.push(
                    (record.observed_time_unix_nano != 0)
                        .then(|| Timestamp::from_unix_nanos(record.observed_time_unix_nano)),
                );
                rows.severity_number
                    .push(i16::try_from(record.severity_number).unwrap_or(0));
                rows.severity_text.push(severity_text);
                rows.body.push(body);
                rows.body_kind.push(kind);
                rows.event_name.push(event_name);
                rows.trace_id.push(trace_id);
                rows.span_id.push(span_id);
                rows.flags.push(record.flags as i32);
                rows.service_name.push(service_name.clone());
                rows.resource_id.push(resource_id);
                rows.scope_name.push(scope_name.clone());
                rows.scope_version.push(scope_version.clone());
                rows.attributes.push(attributes);
                rows.dropped_attributes_count
                    .push(count(record.dropped_attributes_count));
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests;
