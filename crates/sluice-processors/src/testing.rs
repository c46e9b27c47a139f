//! Builders the processors' unit tests share.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

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
