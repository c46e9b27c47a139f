//! The `google.rpc` messages OTLP uses for errors and back-pressure, and how to read a retry
//! delay from a status.

use std::time::Duration;

use prost::Message;

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    /// The `google.rpc.Code`.
    pub code: i32,
    #[prost(string, tag = "2")]
    /// A developer-facing message.
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    /// Typed details, such as `RetryInfo`.
    pub details: Vec<RpcAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct RpcAny {
    #[prost(string, tag = "1")]
    /// The type of `value`.
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    /// The encoded message.
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    /// How long the client should wait.
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    /// Whole seconds.
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    /// Nanoseconds within the second.
    pub nanos: i32,
}

/// The `type_url` of `google.rpc.RetryInfo` inside `google.rpc.Status.details`.
pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The retry delay a gRPC status asks for, from its `RetryInfo` detail.
pub fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    let details = RpcStatus::decode(status.details()).ok()?;
    details
        .details
        .iter()
        .filter(|a| a.type_url == RETRY_INFO_TYPE)
        .find_map(|a| RetryInfo::decode(a.value.as_slice()).ok()?.retry_delay)
        .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
}
