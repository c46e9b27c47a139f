//! Builders the processors' unit tests share.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use sluice_core::Batch;

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

pub(crate) use sluice_fixtures::{spans, traces_batch as traces};

/// The names of a traces batch's spans, in order.
pub(crate) fn span_names(batch: &Batch) -> Vec<String> {
    spans(batch).into_iter().map(|s| s.name).collect()
}
