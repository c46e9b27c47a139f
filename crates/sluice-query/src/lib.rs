//! Reading what sluice stored: the `memory` exporter (recent traces in memory, for when no
//! database runs) and the `jaeger_query` extension, which serves a store over Jaeger's HTTP
//! APIs. Stores are read through `sluice_core::store::TraceReader`, the one interface the
//! PostgreSQL store implements too.

mod api;
mod extension;
pub mod jaeger_json;
mod memory;
pub mod params;
pub mod proto;
mod storage_grpc;
mod view;

pub use extension::{Api, JaegerQueryConfig, JaegerQueryFactory, router};
pub use memory::{MemoryConfig, MemoryExporterFactory, MemoryStore};
