//! The `google.rpc` messages OTLP uses for errors and back-pressure, how to read a retry delay
//! from a status, and the one mapping from sluice's protocol-neutral errors to gRPC statuses and
//! HTTP responses that every server uses.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use prost::Message;
use sluice_core::{ConsumeError, ErrorCode};

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

fn grpc_code(code: ErrorCode) -> tonic::Code {
    match code {
        ErrorCode::InvalidData => tonic::Code::InvalidArgument,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::TooManyRequests | ErrorCode::TooLarge => tonic::Code::ResourceExhausted,
        ErrorCode::Internal => tonic::Code::Internal,
    }
}

/// The HTTP status for an error, as the Collector maps gRPC codes.
pub fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidData => StatusCode::BAD_REQUEST,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn retry_details(delay: Option<Duration>) -> Vec<RpcAny> {
    delay
        .map(|d| RpcAny {
            type_url: RETRY_INFO_TYPE.to_owned(),
            value: RetryInfo {
                retry_delay: Some(ProtoDuration {
                    seconds: d.as_secs() as i64,
                    nanos: d.subsec_nanos() as i32,
                }),
            }
            .encode_to_vec(),
        })
        .into_iter()
        .collect()
}

/// A `google.rpc.Status` for an error; retryable ones carry `RetryInfo`, so that upstream
/// Collectors retry RESOURCE_EXHAUSTED instead of dropping.
pub fn rpc_status(err: &ConsumeError) -> RpcStatus {
    let retry = if err.is_retryable() {
        Some(err.retry_after.unwrap_or(ConsumeError::DEFAULT_RETRY_AFTER))
    } else {
        None
    };
    RpcStatus {
        code: grpc_code(err.code) as i32,
        message: err.message.clone(),
        details: retry_details(retry),
    }
}

/// The gRPC status for an error, with `RetryInfo` in its details when retryable.
pub fn grpc_status(err: &ConsumeError) -> tonic::Status {
    let status = rpc_status(err);
    tonic::Status::with_details(
        grpc_code(err.code),
        err.message.clone(),
        Bytes::from(status.encode_to_vec()),
    )
}

/// The Retry-After header value for an error, in whole seconds (at least 1).
pub fn retry_after_secs(err: &ConsumeError) -> Option<u64> {
    if !err.is_retryable() {
        return None;
    }
    let d = err.retry_after.unwrap_or(ConsumeError::DEFAULT_RETRY_AFTER);
    Some(d.as_secs_f64().ceil().max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_carry_retry_info() {
        let err = ConsumeError::unavailable("busy");
        let status = grpc_status(&err);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(retry_delay(&status), Some(Duration::from_secs(1)));
        assert_eq!(retry_after_secs(&err), Some(1));
        let invalid = grpc_status(&ConsumeError::invalid("bad"));
        assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
        assert_eq!(retry_delay(&invalid), None);
    }

    #[test]
    fn maps_codes_to_http_like_the_collector() {
        assert_eq!(http_status(ErrorCode::InvalidData), StatusCode::BAD_REQUEST);
        assert_eq!(
            http_status(ErrorCode::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status(ErrorCode::TooManyRequests),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(ErrorCode::TooLarge),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn too_large_is_resource_exhausted_without_retry_info() {
        let err = ConsumeError::too_large("request of 60 MB is larger than the budget");
        let status = grpc_status(&err);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(retry_delay(&status), None);
        assert_eq!(retry_after_secs(&err), None);
    }
}
