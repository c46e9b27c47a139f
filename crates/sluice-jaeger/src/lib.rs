//! The `jaeger` exporter: spans to a Jaeger collector over Jaeger's own gRPC API
//! (`jaeger.api_v2.CollectorService/PostSpans`), translated the way the OpenTelemetry
//! Collector's Jaeger translator established, following the specification where the two differ.
//! This crate must not depend on any other component crate.

mod exporter;
pub mod proto;
mod translate;

pub use exporter::{JaegerConfig, JaegerExporterFactory, post_spans_requests};
pub use translate::translate;
