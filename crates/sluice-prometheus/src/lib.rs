//! The `prometheusremotewrite` exporter: OTLP metrics into Prometheus (and Mimir, Cortex, Thanos,
//! VictoriaMetrics) over remote-write 1.0, translated by the OpenTelemetry specification's
//! Prometheus compatibility rules; and the `prometheus` exporter, which keeps the same
//! translation's latest values for Prometheus to scrape. This crate must not depend on any other
//! component crate.

mod exporter;
pub mod proto;
mod scrape;
mod translate;

pub use exporter::{
    RemoteWriteConfig, RemoteWriteExporterFactory, TranslationStrategy, WriteRequests,
    write_requests,
};
pub use scrape::{ScrapeConfig, ScrapeExporterFactory};
pub use translate::{TranslateOptions, Translation, translate};
