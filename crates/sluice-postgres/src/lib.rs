//! The `postgres` exporter: traces and logs into PostgreSQL, in a partitioned schema people can
//! query (the top-level `migrations/`, embedded in the binary and applied at start). Writes are
//! one idempotent statement per batch; retention drops whole partitions.
//! This crate must not depend on any other component crate.

mod config;
mod error;
mod exporter;
pub mod metrics;
mod reader;
pub mod stats;
mod translate;
mod types;

pub use config::{PoolConfig, PostgresConfig, QueryConfig};
pub use exporter::{MIGRATOR, PostgresExporterFactory};
