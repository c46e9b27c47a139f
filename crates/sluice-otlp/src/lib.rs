//! OTLP for sluice: the `otlp` receiver (gRPC and HTTP, protobuf and JSON) and the `otlp`,
//! `otlphttp` and `debug` exporters.
//!
//! Requests stay encoded: the receivers validate framing with the core's wire walker and hand
//! the bytes on; the OTLP exporters send those bytes. Only JSON requests are transcoded (straight
//! to protobuf) and only the debug exporter decodes. This crate must not depend on any other
//! component crate.

mod debug;
mod exporter;
mod loadbalancing;
mod receiver;
mod status;

pub use debug::{DebugConfig, DebugExporterFactory, Verbosity};
pub use exporter::{OtlpExporterConfig, OtlpExporterFactory, OtlpHttpExporterFactory};
pub use loadbalancing::{LoadBalancingConfig, LoadBalancingExporterFactory, Ring, RoutingKey};
pub use receiver::{
    CorsConfig, GrpcConfig, HttpConfig, OtlpReceiverConfig, OtlpReceiverFactory, Protocols,
    Refusal, decode_request,
};
