//! Processors written once for every signal: `memory_limiter`, `resource`, `batch` and
//! `redaction`.
//!
//! Each works on encoded batches and decodes only what it touches. This crate must not depend on
//! any other component crate.

mod batch;
mod memory_limiter;
mod redaction;
mod resource;

pub use batch::{BatchConfig, BatchFactory};
pub use memory_limiter::{
    MemoryLimiterConfig, MemoryLimiterFactory, MemoryProbe, MemoryReading, available_memory,
    rss_bytes,
};
pub use redaction::{
    DbLanguageConfig, DbSanitizerConfig, RedactionConfig, RedactionFactory, UrlSanitizerConfig,
};
pub use resource::{ResourceConfig, ResourceFactory};
