//! The `loki` exporter: OTLP logs to Loki's push API (`/loki/api/v1/push`), as `logproto`
//! protobuf compressed with Snappy or as JSON, with streams labelled the way the Collector's Loki
//! exporter labelled them. For Loki 3, whose native OTLP endpoint keeps resource attributes as
//! structured metadata, `otlphttp` to `http://loki:3100/otlp` is the other way (README). This
//! crate must not depend on any other component crate.

mod exporter;
pub mod proto;
mod translate;

pub use exporter::{
    Encoding, LokiConfig, LokiExporterFactory, PushBody, PushRequests, TENANT_HEADER, push_requests,
};
pub use translate::{
    DefaultLabels, HINT_ATTRIBUTES, HINT_FORMAT, HINT_RESOURCES, HINT_TENANT, Stream,
    TenantStreams, Translation, translate_encoded,
};
