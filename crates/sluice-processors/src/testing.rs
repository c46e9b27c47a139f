//! Builders the processors' unit tests share.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sluice_core::{Batch, Signal};

/// A string value.
pub(crate) fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// An attribute.
pub(crate) fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// A traces batch: one resource (with these attributes, if any) and one scope holding `spans`.
pub(crate) fn traces(resource: Vec<KeyValue>, spans: Vec<Span>) -> Batch {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: (!resource.is_empty()).then(|| Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::decode(Signal::Traces, request.encode_to_vec().into()).unwrap()
}

/// The spans of a traces batch, in order.
pub(crate) fn spans(batch: &Batch) -> Vec<Span> {
    ExportTraceServiceRequest::decode(batch.data().clone())
        .unwrap()
        .resource_spans
        .into_iter()
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect()
}

/// The names of a traces batch's spans, in order.
pub(crate) fn span_names(batch: &Batch) -> Vec<String> {
    spans(batch).into_iter().map(|s| s.name).collect()
}
