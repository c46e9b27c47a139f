//! The one protocol-neutral error of the data path, mapped once to gRPC and HTTP by the receivers.

use std::time::Duration;

/// What kind of failure a [`ConsumeError`] is; decides the wire status and whether a client retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The data is malformed; retrying cannot help (gRPC INVALID_ARGUMENT, HTTP 400).
    InvalidData,
    /// Temporarily unable to take the data: memory pressure, full queues, backend down
    /// (gRPC UNAVAILABLE with RetryInfo, HTTP 503 with Retry-After).
    Unavailable,
    /// The client sends too fast (gRPC RESOURCE_EXHAUSTED with RetryInfo, HTTP 429 with Retry-After).
    TooManyRequests,
    /// A request larger than sluice can ever take: over a size limit or over the whole memory
    /// budget; retrying the same request cannot help (gRPC RESOURCE_EXHAUSTED without
    /// RetryInfo, HTTP 413).
    TooLarge,
    /// A permanent failure that is not the client's fault (gRPC INTERNAL, HTTP 500).
    Internal,
}

impl ErrorCode {
    /// Whether a client should send the same data again.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::Unavailable | ErrorCode::TooManyRequests)
    }
}

/// Why a consumer did not take a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConsumeError {
    /// The kind of failure.
    pub code: ErrorCode,
    /// A lowercase message for the client and the logs.
    pub message: String,
    /// When a retryable failure is worth retrying, if the refuser knows.
    pub retry_after: Option<Duration>,
}

impl ConsumeError {
    /// The default pause suggested to clients that were refused for back-pressure.
    pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

    /// A retryable refusal (back-pressure) with the default retry delay.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ConsumeError {
            code: ErrorCode::Unavailable,
            message: message.into(),
            retry_after: Some(Self::DEFAULT_RETRY_AFTER),
        }
    }

    /// Malformed data; never retried.
    pub fn invalid(message: impl Into<String>) -> Self {
        ConsumeError {
            code: ErrorCode::InvalidData,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A request that can never be taken whole; never retried.
    pub fn too_large(message: impl Into<String>) -> Self {
        ConsumeError {
            code: ErrorCode::TooLarge,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A permanent internal failure.
    pub fn internal(message: impl Into<String>) -> Self {
        ConsumeError {
            code: ErrorCode::Internal,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Whether a client should send the same data again.
    pub fn is_retryable(&self) -> bool {
        self.code.is_retryable()
    }
}
