//! OTLP traces to Jaeger `api_v2` batches.
//!
//! The mapping is the OpenTelemetry Collector contrib Jaeger translator's, changed where the
//! OpenTelemetry specification ("Exporters: Jaeger" and "AnyValue representation for non-OTLP
//! protocols") says otherwise:
//!
//! * a resource without `service.name` is the `unknown_service` process;
//! * `SPAN_KIND_INTERNAL` adds no `span.kind` tag;
//! * the scope is tagged under both `otel.scope.*` and the deprecated `otel.library.*` keys;
//! * dropped attribute, event and link counts become `otel.dropped_*_count` tags and fields.
//!
//! The translation is total: malformed input (ids of the wrong length, unknown enum values, end
//! before start, arbitrarily nested values) yields a batch, never a panic.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    InstrumentationScope, KeyValue as OtlpKeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, Span as OtlpSpan,
    span::{Event, Link, SpanKind},
    status::StatusCode,
};

use crate::proto;
use sluice_core::anyvalue::to_string as value_to_string;

#[cfg(test)]
mod tests;

/// The resource attribute naming the process.
const SERVICE_NAME: &str = "service.name";
/// The process name when the resource has no (or an empty) `service.name`, as the SDK
/// specification prescribes for an unset service name.
const UNKNOWN_SERVICE: &str = "unknown_service";

const OTEL_SCOPE_NAME: &str = "otel.scope.name";
const OTEL_SCOPE_VERSION: &str = "otel.scope.version";
const OTEL_LIBRARY_NAME: &str = "otel.library.name";
const OTEL_LIBRARY_VERSION: &str = "otel.library.version";
const SPAN_KIND: &str = "span.kind";
const OTEL_STATUS_CODE: &str = "otel.status_code";
const OTEL_STATUS_DESCRIPTION: &str = "otel.status_description";
const ERROR: &str = "error";
const W3C_TRACESTATE: &str = "w3c.tracestate";
const DROPPED_ATTRIBUTES_COUNT: &str = "otel.dropped_attributes_count";
const DROPPED_EVENTS_COUNT: &str = "otel.dropped_events_count";
const DROPPED_LINKS_COUNT: &str = "otel.dropped_links_count";
/// The log field carrying an event's name.
const EVENT: &str = "event";
/// The link attribute an OpenTracing shim uses to keep a reference's type.
const OPENTRACING_REF_TYPE: &str = "opentracing.ref_type";
const OPENTRACING_REF_TYPE_CHILD_OF: &str = "child_of";

/// The warning attached to a span whose end precedes its start.
const NEGATIVE_DURATION_WARNING: &str = "end time before start time; duration set to 0";

/// Jaeger's `SAMPLED` span flag.
const JAEGER_SAMPLED: u32 = 0x1;
/// The W3C `sampled` trace flag, bit 0 of OTLP `Span.flags`.
const W3C_SAMPLED: u32 = 0x1;
/// The W3C trace flags: the low 8 bits of OTLP `Span.flags`.
const W3C_TRACE_FLAGS_MASK: u32 = 0xff;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Translates one OTLP trace request into Jaeger batches, one per ResourceSpans that holds at
/// least one span.
///
/// Each batch carries its process in `Batch.process`; the spans' own `process` and `process_id`
/// stay empty. The batches and the spans in them keep the request's order.
pub fn translate(request: &ExportTraceServiceRequest) -> Vec<proto::Batch> {
    request
        .resource_spans
        .iter()
        .filter_map(translate_resource_spans)
        .collect()
}

/// One batch for a ResourceSpans, or `None` when none of its scopes holds a span.
fn translate_resource_spans(resource_spans: &ResourceSpans) -> Option<proto::Batch> {
    if resource_spans
        .scope_spans
        .iter()
        .all(|scope_spans| scope_spans.spans.is_empty())
    {
        return None;
    }
    let spans = resource_spans
        .scope_spans
        .iter()
        .flat_map(|scope_spans| {
            let scope = scope_spans.scope.as_ref();
            scope_spans
                .spans
                .iter()
                .map(move |span| translate_span(span, scope))
        })
        .collect();
    Some(proto::Batch {
        spans,
        process: Some(process(resource_spans.resource.as_ref())),
    })
}

/// The Jaeger process of a resource: `service.name` names it, every other attribute is a tag.
fn process(resource: Option<&Resource>) -> proto::Process {
    let attributes = resource.map_or(&[][..], |resource| resource.attributes.as_slice());
    let mut service_name: Option<String> = None;
    let mut tags = Vec::with_capacity(attributes.len());
    for attribute in attributes {
        if attribute.key == SERVICE_NAME {
            // The first occurrence names the service; duplicates are dropped with it.
            if service_name.is_none() {
                service_name = Some(value_to_string(attribute_value(attribute)));
            }
        } else {
            tags.push(key_value(attribute));
        }
    }
    let service_name = service_name
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| UNKNOWN_SERVICE.to_owned());
    proto::Process { service_name, tags }
}

fn translate_span(span: &OtlpSpan, scope: Option<&InstrumentationScope>) -> proto::Span {
    let mut warnings = Vec::new();
    let duration = match span
        .end_time_unix_nano
        .checked_sub(span.start_time_unix_nano)
    {
        Some(nanos) => {
            let (seconds, nanos) = split_nanos(nanos);
            proto::Duration { seconds, nanos }
        }
        None => {
            warnings.push(NEGATIVE_DURATION_WARNING.to_owned());
            proto::Duration {
                seconds: 0,
                nanos: 0,
            }
        }
    };
    proto::Span {
        trace_id: span.trace_id.clone(),
        span_id: span.span_id.clone(),
        operation_name: span.name.clone(),
        references: references(span),
        flags: jaeger_flags(span.flags),
        start_time: Some(timestamp(span.start_time_unix_nano)),
        duration: Some(duration),
        tags: span_tags(span, scope),
        logs: span.events.iter().map(event_log).collect(),
        process: None,
        process_id: String::new(),
        warnings,
    }
}

/// Splits nanoseconds into whole seconds and the nanosecond remainder.
fn split_nanos(nanos: u64) -> (i64, i32) {
    // u64::MAX / 1e9 is far below i64::MAX and the remainder is below 1e9 < i32::MAX, so the
    // fallbacks are never taken.
    let seconds = i64::try_from(nanos / NANOS_PER_SECOND).unwrap_or(i64::MAX);
    let nanos = i32::try_from(nanos % NANOS_PER_SECOND).unwrap_or(0);
    (seconds, nanos)
}

fn timestamp(unix_nanos: u64) -> proto::Timestamp {
    let (seconds, nanos) = split_nanos(unix_nanos);
    proto::Timestamp { seconds, nanos }
}

/// Jaeger span flags from OTLP `Span.flags`.
///
/// Jaeger's only flag that matters here is `SAMPLED` (1); the W3C trace flags are the low 8 bits
/// of the OTLP field, whose bit 0 is W3C `sampled`. The span is marked sampled when that bit is
/// set, and also when all 8 trace-flag bits are 0: many SDKs leave the field unset (the Python
/// SDK sends 256, only the "has is_remote" bit of the upper byte), and a span that reached an
/// exporter was recorded and sampled, so an unset field is read as "no information" rather than
/// as "not sampled". Only trace flags that are explicitly present without the sampled bit yield 0.
/// The Jaeger `DEBUG` and `FIREHOSE` flags have no OTLP equivalent and are never set.
fn jaeger_flags(otlp_flags: u32) -> u32 {
    let trace_flags = otlp_flags & W3C_TRACE_FLAGS_MASK;
    if trace_flags & W3C_SAMPLED != 0 || trace_flags == 0 {
        JAEGER_SAMPLED
    } else {
        0
    }
}

/// The parent as the first `CHILD_OF` reference, then one reference per link.
fn references(span: &OtlpSpan) -> Vec<proto::SpanRef> {
    // An absent parent is empty or, from some producers, all zero bytes.
    let has_parent = span.parent_span_id.iter().any(|&byte| byte != 0);
    let mut references = Vec::with_capacity(span.links.len() + usize::from(has_parent));
    if has_parent {
        references.push(proto::SpanRef {
            trace_id: span.trace_id.clone(),
            span_id: span.parent_span_id.clone(),
            ref_type: proto::SpanRefType::ChildOf as i32,
        });
    }
    for link in &span.links {
        let ref_type = link_ref_type(link) as i32;
        if has_parent && link.trace_id == span.trace_id && link.span_id == span.parent_span_id {
            // The parent is already referenced: the link only says which kind of reference it is.
            if let Some(parent) = references.first_mut() {
                parent.ref_type = ref_type;
            }
            continue;
        }
        references.push(proto::SpanRef {
            trace_id: link.trace_id.clone(),
            span_id: link.span_id.clone(),
            ref_type,
        });
    }
    references
}

/// `CHILD_OF` when the link's first `opentracing.ref_type` attribute is the string `child_of`,
/// otherwise `FOLLOWS_FROM`.
fn link_ref_type(link: &Link) -> proto::SpanRefType {
    let ref_type = link
        .attributes
        .iter()
        .find(|attribute| attribute.key == OPENTRACING_REF_TYPE)
        .and_then(attribute_value);
    match ref_type {
        Some(Value::StringValue(value)) if value == OPENTRACING_REF_TYPE_CHILD_OF => {
            proto::SpanRefType::ChildOf
        }
        _ => proto::SpanRefType::FollowsFrom,
    }
}

fn span_tags(span: &OtlpSpan, scope: Option<&InstrumentationScope>) -> Vec<proto::KeyValue> {
    // Scope (4) + kind + status (3) + trace state + dropped counts (3).
    let mut tags = Vec::with_capacity(span.attributes.len() + 12);

    if let Some(scope) = scope {
        let scope_tags = [
            (OTEL_SCOPE_NAME, &scope.name),
            (OTEL_SCOPE_VERSION, &scope.version),
            (OTEL_LIBRARY_NAME, &scope.name),
            (OTEL_LIBRARY_VERSION, &scope.version),
        ];
        for (key, value) in scope_tags {
            if !value.is_empty() {
                tags.push(string_tag(key, value.clone()));
            }
        }
    }

    tags.extend(span.attributes.iter().map(key_value));

    let kind = match SpanKind::try_from(span.kind) {
        Ok(SpanKind::Client) => Some("client"),
        Ok(SpanKind::Server) => Some("server"),
        Ok(SpanKind::Producer) => Some("producer"),
        Ok(SpanKind::Consumer) => Some("consumer"),
        // INTERNAL is the default kind and the specification says not to translate it;
        // UNSPECIFIED and values this version does not know carry no kind.
        Ok(SpanKind::Internal | SpanKind::Unspecified) | Err(_) => None,
    };
    if let Some(kind) = kind {
        tags.push(string_tag(SPAN_KIND, kind.to_owned()));
    }

    let (code, message) = span
        .status
        .as_ref()
        .map_or((StatusCode::Unset as i32, ""), |status| {
            (status.code, status.message.as_str())
        });
    // An unknown status code is treated as UNSET.
    match StatusCode::try_from(code) {
        Ok(StatusCode::Ok) => tags.push(string_tag(OTEL_STATUS_CODE, "OK".to_owned())),
        Ok(StatusCode::Error) => {
            tags.push(string_tag(OTEL_STATUS_CODE, "ERROR".to_owned()));
            tags.push(proto::KeyValue {
                key: ERROR.to_owned(),
                v_type: proto::ValueType::Bool as i32,
                v_bool: true,
                ..Default::default()
            });
        }
        Ok(StatusCode::Unset) | Err(_) => {}
    }
    if !message.is_empty() {
        tags.push(string_tag(OTEL_STATUS_DESCRIPTION, message.to_owned()));
    }

    if !span.trace_state.is_empty() {
        tags.push(string_tag(W3C_TRACESTATE, span.trace_state.clone()));
    }

    let dropped = [
        (DROPPED_ATTRIBUTES_COUNT, span.dropped_attributes_count),
        (DROPPED_EVENTS_COUNT, span.dropped_events_count),
        (DROPPED_LINKS_COUNT, span.dropped_links_count),
    ];
    for (key, count) in dropped {
        if count != 0 {
            tags.push(int_tag(key, count.into()));
        }
    }

    tags
}

/// An event as a log: its name under `event` (unless an attribute has that key), its
/// attributes, then its dropped attribute count.
fn event_log(event: &Event) -> proto::Log {
    let mut fields = Vec::with_capacity(event.attributes.len() + 2);
    if !event.name.is_empty()
        && !event
            .attributes
            .iter()
            .any(|attribute| attribute.key == EVENT)
    {
        fields.push(string_tag(EVENT, event.name.clone()));
    }
    fields.extend(event.attributes.iter().map(key_value));
    if event.dropped_attributes_count != 0 {
        fields.push(int_tag(
            DROPPED_ATTRIBUTES_COUNT,
            event.dropped_attributes_count.into(),
        ));
    }
    proto::Log {
        timestamp: Some(timestamp(event.time_unix_nano)),
        fields,
    }
}

fn string_tag(key: &str, value: String) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_owned(),
        v_type: proto::ValueType::String as i32,
        v_str: value,
        ..Default::default()
    }
}

fn int_tag(key: &str, value: i64) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_owned(),
        v_type: proto::ValueType::Int64 as i32,
        v_int64: value,
        ..Default::default()
    }
}

/// The value of an attribute; `None` when it has none or is empty.
fn attribute_value(attribute: &OtlpKeyValue) -> Option<&Value> {
    attribute
        .value
        .as_ref()
        .and_then(|value| value.value.as_ref())
}

/// An OTLP attribute as a typed Jaeger key-value; arrays and maps become JSON strings, empty
/// values empty strings.
fn key_value(attribute: &OtlpKeyValue) -> proto::KeyValue {
    let key = attribute.key.clone();
    match attribute_value(attribute) {
        Some(Value::StringValue(value)) => proto::KeyValue {
            key,
            v_type: proto::ValueType::String as i32,
            v_str: value.clone(),
            ..Default::default()
        },
        Some(Value::BoolValue(value)) => proto::KeyValue {
            key,
            v_type: proto::ValueType::Bool as i32,
            v_bool: *value,
            ..Default::default()
        },
        Some(Value::IntValue(value)) => proto::KeyValue {
            key,
            v_type: proto::ValueType::Int64 as i32,
            v_int64: *value,
            ..Default::default()
        },
        Some(Value::DoubleValue(value)) => proto::KeyValue {
            key,
            v_type: proto::ValueType::Float64 as i32,
            v_float64: *value,
            ..Default::default()
        },
        Some(Value::BytesValue(value)) => proto::KeyValue {
            key,
            v_type: proto::ValueType::Binary as i32,
            v_binary: value.clone(),
            ..Default::default()
        },
        value @ Some(Value::ArrayValue(_) | Value::KvlistValue(_)) => proto::KeyValue {
            key,
            v_type: proto::ValueType::String as i32,
            v_str: value_to_string(value),
            ..Default::default()
        },
        // A string-table reference belongs to the profiles signal; elsewhere it reads as absent.
        Some(Value::StringValueStrindex(_)) | None => proto::KeyValue {
            key,
            v_type: proto::ValueType::String as i32,
            ..Default::default()
        },
    }
}
