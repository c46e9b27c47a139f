//! The `prometheusremotewrite` exporter: OTLP metrics into Prometheus (and Mimir, Cortex, Thanos,
//! VictoriaMetrics) over remote-write 1.0, translated by the OpenTelemetry specification's
//! Prometheus compatibility rules. This crate must not depend on any other component crate.

mod exporter;
pub mod proto;
mod translate;

pub use exporter::{RemoteWriteConfig, RemoteWriteExporterFactory, WriteRequests, write_requests};
pub use translate::{TranslateOptions, Translation, translate};
