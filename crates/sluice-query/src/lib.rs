//! Reading what sluice stored: the `memory` exporter (recent traces and their logs in memory,
//! for when no database runs) and the `jaeger_query` extension, which serves a store over
//! Jaeger's HTTP and remote-storage gRPC APIs, sluice's own API and the admin view. Stores are
//! read through `sluice_core::store::TraceReader`, the one interface the PostgreSQL store
//! implements too. `proto` is public for clients of the remote-storage API (the tests).

mod api;
mod extension;
mod jaeger_json;
mod memory;
mod params;
pub mod proto;
mod storage_grpc;
mod view;

pub use extension::{JaegerQueryConfig, JaegerQueryFactory};
pub use memory::{MemoryConfig, MemoryExporterFactory, MemoryStore};
