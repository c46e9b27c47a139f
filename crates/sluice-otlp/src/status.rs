//! The OTLP `Export*ServiceResponse`: the partial success a receiver reports and an exporter
//! reads. Errors map to gRPC and HTTP statuses in `sluice-net`, once for every server.

use bytes::Bytes;
use prost::Message;
pub(crate) use sluice_net::{grpc_status, http_status, retry_after_secs, rpc_status};

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
    fn partial_success_round_trips() {
        let body = encode_response(3, "bad spans");
        assert_eq!(decode_partial_success(&body), Some((3, "bad spans".into())));
        assert!(encode_response(0, "").is_empty());
        assert_eq!(decode_partial_success(&[]), None);
    }
}
