//! Jaeger's v2 remote storage API (`jaeger.storage.v2`, from jaeger-idl
//! `proto/storage/v2/trace_storage.proto` and `dependency_storage.proto`), written as prost
//! structs. Field numbers and types are the IDL's. `TraceQueryParameters.filter` (experimental,
//! behind a Jaeger feature gate) is kept as its encoded bytes: a request carrying one is refused,
//! never read without it; so is `pagination` (see the service).

#![allow(missing_docs)]

use opentelemetry_proto::tonic::common::v1::KeyValue;

/// `google.protobuf.Timestamp` and `Duration`, as the `jaeger` exporter's messages declare them.
pub use sluice_jaeger::proto::{Duration, Timestamp};

/// A `Timestamp` from Unix nanoseconds.
pub fn timestamp(nanos: u64) -> Timestamp {
    Timestamp {
        seconds: i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX),
        nanos: i32::try_from(nanos % 1_000_000_000).unwrap_or(0),
    }
}

/// Unix nanoseconds of a `Timestamp`, or nanoseconds of a `Duration` (0 when negative).
pub fn nanos(seconds: i64, nanos: i32) -> u64 {
    u64::try_from(seconds)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(nanos).unwrap_or(0))
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetTraceParams {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "3")]
    pub end_time: Option<Timestamp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetTracesRequest {
    #[prost(message, repeated, tag = "1")]
    pub query: Vec<GetTraceParams>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetServicesRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetServicesResponse {
    #[prost(string, repeated, tag = "1")]
    pub services: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetOperationsRequest {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub span_kind: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Operation {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub span_kind: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetOperationsResponse {
    #[prost(message, repeated, tag = "1")]
    pub operations: Vec<Operation>,
}

/// `jaeger.storage.v2.KeyValue` is a copy of OTLP's, field for field.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceQueryParameters {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(string, tag = "2")]
    pub operation_name: String,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "4")]
    pub start_time_min: Option<Timestamp>,
    #[prost(message, optional, tag = "5")]
    pub start_time_max: Option<Timestamp>,
    #[prost(message, optional, tag = "6")]
    pub duration_min: Option<Duration>,
    #[prost(message, optional, tag = "7")]
    pub duration_max: Option<Duration>,
    #[prost(int32, tag = "8")]
    pub search_depth: i32,
    /// `jaeger.expression.v1.Call`, encoded: only whether one was sent matters here.
    #[prost(bytes = "vec", tag = "9")]
    pub filter: Vec<u8>,
    #[prost(message, optional, tag = "10")]
    pub pagination: Option<Pagination>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Pagination {
    #[prost(uint32, tag = "1")]
    pub page_size: u32,
    #[prost(string, tag = "2")]
    pub page_token: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FindTracesRequest {
    #[prost(message, optional, tag = "1")]
    pub query: Option<TraceQueryParameters>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FoundTraceId {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub start: Option<Timestamp>,
    #[prost(message, optional, tag = "3")]
    pub end: Option<Timestamp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FindTraceIdsResponse {
    #[prost(message, repeated, tag = "1")]
    pub trace_ids: Vec<FoundTraceId>,
    #[prost(string, tag = "2")]
    pub next_page_token: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetDependenciesRequest {
    #[prost(message, optional, tag = "1")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "2")]
    pub end_time: Option<Timestamp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Dependency {
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(string, tag = "2")]
    pub child: String,
    #[prost(uint64, tag = "3")]
    pub call_count: u64,
    #[prost(string, tag = "4")]
    pub source: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetDependenciesResponse {
    #[prost(message, repeated, tag = "1")]
    pub dependencies: Vec<Dependency>,
}

/// The service paths.
pub const GET_TRACES: &str = "/jaeger.storage.v2.TraceReader/GetTraces";
pub const GET_SERVICES: &str = "/jaeger.storage.v2.TraceReader/GetServices";
pub const GET_OPERATIONS: &str = "/jaeger.storage.v2.TraceReader/GetOperations";
pub const FIND_TRACES: &str = "/jaeger.storage.v2.TraceReader/FindTraces";
pub const FIND_TRACE_IDS: &str = "/jaeger.storage.v2.TraceReader/FindTraceIDs";
pub const FIND_TRACE_SUMMARIES: &str = "/jaeger.storage.v2.TraceReader/FindTraceSummaries";
pub const GET_DEPENDENCIES: &str = "/jaeger.storage.v2.DependencyReader/GetDependencies";

#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchCapabilities {
    #[prost(bool, tag = "1")]
    pub without_service_name: bool,
    #[prost(bool, tag = "2")]
    pub same_span_conjunction: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetCapabilitiesResponse {
    #[prost(message, optional, tag = "1")]
    pub search: Option<SearchCapabilities>,
}

pub const GET_CAPABILITIES: &str = "/jaeger.storage.v2.Capabilities/GetCapabilities";
