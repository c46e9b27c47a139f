//! Processors written once for every signal: `memory_limiter`, `resource` and `batch`.
//!
//! Each works on encoded batches and decodes only what it touches. This crate must not depend on
//! any other component crate.

mod batch;
mod memory_limiter;
mod resource;

pub use batch::{BatchConfig, BatchFactory};
pub use memory_limiter::{
    MemoryLimiterConfig, MemoryLimiterFactory, MemoryProbe, MemoryReading, available_memory,
    rss_bytes,
};
pub use resource::{ResourceConfig, ResourceFactory};
