//! The one mapping from sluice's protocol-neutral errors to gRPC statuses and HTTP responses,
//! plus the few `google.rpc` messages the OTLP specification asks for.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use prost::Message;
use sluice_core::{ConsumeError, ErrorCode};
use sluice_net::{ProtoDuration, RETRY_INFO_TYPE, RetryInfo, RpcAny, RpcStatus};

fn grpc_code(code: ErrorCode) -> tonic::Code {
    match code {
        ErrorCode::InvalidData => tonic::Code::InvalidArgument,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::TooManyRequests | ErrorCode::TooLarge => tonic::Code::ResourceExhausted,
        ErrorCode::Internal => tonic::Code::Internal,
    }
}

/// The HTTP status for an error, as the Collector maps gRPC codes.
pub(crate) fn http_status(code: ErrorCode) -> StatusCode {
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
pub(crate) fn rpc_status(err: &ConsumeError) -> RpcStatus {
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
pub(crate) fn grpc_status(err: &ConsumeError) -> tonic::Status {
    let status = rpc_status(err);
    tonic::Status::with_details(
        grpc_code(err.code),
        err.message.clone(),
        Bytes::from(status.encode_to_vec()),
    )
}

/// The Retry-After header value for an error, in whole seconds (at least 1).
pub(crate) fn retry_after_secs(err: &ConsumeError) -> Option<u64> {
    if !err.is_retryable() {
        return None;
    }
    let d = err.retry_after.unwrap_or(ConsumeError::DEFAULT_RETRY_AFTER);
    Some(d.as_secs_f64().ceil().max(1.0) as u64)
}

/// `Export*PartialSuccess` of any signal: `rejected_* = 1`, `error_message = 2`.
#[derive(Clone, PartialEq, Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// `Export*ServiceResponse` of any signal: `partial_success = 1`.
#[derive(Clone, PartialEq, Message)]
struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

/// Encodes an `Export*ServiceResponse`; empty (full success) when nothing was rejected.
pub(crate) fn encode_response(rejected: u64, message: &str) -> Bytes {
    if rejected == 0 && message.is_empty() {
        return Bytes::new();
    }
    ExportResponse {
        partial_success: Some(PartialSuccess {
            rejected: rejected as i64,
            error_message: message.to_owned(),
        }),
    }
    .encode_to_vec()
    .into()
}

/// Decodes the partial success of any `Export*ServiceResponse`: (rejected, message).
pub(crate) fn decode_partial_success(body: &[u8]) -> Option<(i64, String)> {
    let p = ExportResponse::decode(body).ok()?.partial_success?;
    (p.rejected != 0 || !p.error_message.is_empty()).then_some((p.rejected, p.error_message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_carry_retry_info() {
        let err = ConsumeError::unavailable("busy");
        let status = grpc_status(&err);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            sluice_net::retry_delay(&status),
            Some(Duration::from_secs(1))
        );
        assert_eq!(retry_after_secs(&err), Some(1));
        let invalid = grpc_status(&ConsumeError::invalid("bad"));
        assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
        assert_eq!(sluice_net::retry_delay(&invalid), None);
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
        assert_eq!(sluice_net::retry_delay(&status), None);
        assert_eq!(retry_after_secs(&err), None);
    }

    #[test]
    fn partial_success_round_trips() {
        let body = encode_response(3, "bad spans");
        assert_eq!(decode_partial_success(&body), Some((3, "bad spans".into())));
        assert!(encode_response(0, "").is_empty());
        assert_eq!(decode_partial_success(&[]), None);
    }
}
