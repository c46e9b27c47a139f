//! Processors written once for every signal: `memory_limiter`, `resource`, `batch`,
//! `redaction`, `attributes`, `filter` and `transform`.
//!
//! Each works on encoded batches and decodes only what it touches. This crate must not depend on
//! any other component crate.

mod actions;
mod attributes;
mod batch;
mod filter;
mod memory_limiter;
mod redaction;
mod resource;
#[cfg(test)]
mod testing;
mod transform;

pub use actions::{Action, ActionKind};
pub use attributes::{AttributesConfig, AttributesFactory, MatchProperties};
pub use batch::{BatchConfig, BatchFactory};
pub use filter::{
    FilterConfig, FilterFactory, LogsConditions, MetricsConditions, TracesConditions,
};
pub use memory_limiter::{
    MemoryLimiterConfig, MemoryLimiterFactory, MemoryProbe, MemoryReading, available_memory,
    rss_bytes,
};
pub use redaction::{
    DbLanguageConfig, DbSanitizerConfig, RedactionConfig, RedactionFactory, UrlSanitizerConfig,
};
pub use resource::{ResourceConfig, ResourceFactory};
pub use transform::{TransformConfig, TransformFactory};
