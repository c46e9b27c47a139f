//! Attribute values as label values: the specification's "AnyValue representation for non-OTLP
//! protocols" (common/README.md).

use opentelemetry_proto::tonic::common::v1::KeyValue;
pub(crate) use sluice_core::anyvalue::to_string as value_to_string;

/// The label value of an attribute (see [`value_to_string`]).
pub(crate) fn attribute_value(attribute: &KeyValue) -> String {
    value_to_string(
        attribute
            .value
            .as_ref()
            .and_then(|value| value.value.as_ref()),
    )
}
