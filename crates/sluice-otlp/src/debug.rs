//! The `debug` exporter: writes what it receives to sluice's own log, for trying pipelines out.

use std::sync::Arc;

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::Problem;
use sluice_core::anyvalue::hex;
use sluice_core::exporter::{QueueSettings, RetrySettings};
use sluice_core::{
    Batch, BuildError, BuiltExporter, ExportError, Exporter, ExporterFactory, HelperSettings,
    Signal, typed,
};

/// How much the `debug` exporter writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// One line per batch with its counts (default).
    #[default]
    Basic,
    /// One line per span, data point set or log record.
    Normal,
    /// Every field of every item.
    Detailed,
}

/// `exporters.debug`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// `basic`, `normal` or `detailed`.
    pub verbosity: Verbosity,
    /// Accepted for compatibility with Collector configs; sluice logs every batch.
    pub sampling_initial: Option<u64>,
    /// Accepted for compatibility with Collector configs; sluice logs every batch.
    pub sampling_thereafter: Option<u64>,
}

struct DebugExporter {
    id: String,
    verbosity: Verbosity,
}

impl DebugExporter {
    fn write(&self, batch: &Batch) -> Result<(), ExportError> {
        let data = batch.data().as_ref();
        let undecodable =
            |e: prost::DecodeError| ExportError::permanent(format!("cannot decode batch: {e}"));
        let (resources, items) = match batch.signal() {
            Signal::Traces => {
                let r = ExportTraceServiceRequest::decode(data).map_err(undecodable)?;
                if self.verbosity == Verbosity::Detailed {
                    tracing::info!(target: "sluice::debug", exporter = %self.id, "{r:#?}");
                } else if self.verbosity == Verbosity::Normal {
                    for s in r
                        .resource_spans
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .flat_map(|s| &s.spans)
                    {
                        tracing::info!(target: "sluice::debug", exporter = %self.id, trace_id = %hex(&s.trace_id), span_id = %hex(&s.span_id), name = %s.name, "span");
                    }
                }
                (r.resource_spans.len(), batch.items())
            }
            Signal::Metrics => {
                let r = ExportMetricsServiceRequest::decode(data).map_err(undecodable)?;
                if self.verbosity == Verbosity::Detailed {
                    tracing::info!(target: "sluice::debug", exporter = %self.id, "{r:#?}");
                } else if self.verbosity == Verbosity::Normal {
                    for m in r
                        .resource_metrics
                        .iter()
                        .flat_map(|r| &r.scope_metrics)
                        .flat_map(|s| &s.metrics)
                    {
                        tracing::info!(target: "sluice::debug", exporter = %self.id, name = %m.name, unit = %m.unit, "metric");
                    }
                }
                (r.resource_metrics.len(), batch.items())
            }
            Signal::Logs => {
                let r = ExportLogsServiceRequest::decode(data).map_err(undecodable)?;
                if self.verbosity == Verbosity::Detailed {
                    tracing::info!(target: "sluice::debug", exporter = %self.id, "{r:#?}");
                } else if self.verbosity == Verbosity::Normal {
                    for l in r
                        .resource_logs
                        .iter()
                        .flat_map(|r| &r.scope_logs)
                        .flat_map(|s| &s.log_records)
                    {
                        tracing::info!(target: "sluice::debug", exporter = %self.id, severity = %l.severity_text, body = ?l.body, "log record");
                    }
                }
                (r.resource_logs.len(), batch.items())
            }
        };
        tracing::info!(target: "sluice::debug", exporter = %self.id, signal = %batch.signal(), resources, items, bytes = batch.size(), "batch");
        Ok(())
    }
}

#[async_trait]
impl Exporter for DebugExporter {
    /// Writing is the whole job: it happens once, here, and there is nothing to resend.
    type Encoded = ();

    fn encode(&self, batch: &Batch) -> Result<(), ExportError> {
        if self.verbosity == Verbosity::Basic {
            tracing::info!(target: "sluice::debug", exporter = %self.id, signal = %batch.signal(), items = batch.items(), bytes = batch.size(), "batch");
            return Ok(());
        }
        self.write(batch)
    }

    async fn send(&self, (): &()) -> Result<(), ExportError> {
        Ok(())
    }
}

/// Builds `debug` exporters.
#[derive(Debug, Default)]
pub struct DebugExporterFactory;

impl ExporterFactory for DebugExporterFactory {
    fn type_name(&self) -> &'static str {
        "debug"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed::<DebugConfig>(path, config, |_| Vec::new())
    }

    /// Writing a log line does not fail for reasons a retry fixes: no queue, no retries.
    fn helper_defaults(&self) -> Option<HelperSettings> {
        Some(HelperSettings {
            retry: RetrySettings {
                enabled: false,
                ..Default::default()
            },
            queue: QueueSettings {
                enabled: false,
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn build(
        &self,
        id: &str,
        config: &Value,
        _helper: &mut HelperSettings,
        _context: &sluice_core::ExporterContext,
    ) -> Result<BuiltExporter, BuildError> {
        let c: DebugConfig = typed(&format!("exporters.{id}"), config)?;
        Ok(BuiltExporter::Push(Arc::new(DebugExporter {
            id: id.to_owned(),
            verbosity: c.verbosity,
        })))
    }
}
