//! Metric names of the `postgres` exporter, beside the shared `otelcol_exporter_*` ones.
//! Labels: `exporter`, `data_type`.

/// Seconds spent writing one batch, from decoding to commit (histogram).
pub const WRITE_DURATION: &str = "otelcol_exporter_postgres_write_duration_seconds";
/// Spans or log records already stored, skipped by an idempotent replay.
pub const DUPLICATES: &str = "otelcol_exporter_postgres_duplicate_items";
