//! Connectors: components that are an exporter in one pipeline and a receiver in others.
//! `forward` joins pipelines as they are; `routing` sends each resource or item to the
//! pipelines its first matching route names; `spanmetrics` turns spans into RED metrics.
//!
//! This crate must not depend on any other component crate.

mod forward;
mod routing;
mod spanmetrics;

pub use forward::ForwardFactory;
pub use routing::{RoutingConfig, RoutingFactory};
pub use spanmetrics::{SpanMetricsConfig, SpanMetricsFactory};
