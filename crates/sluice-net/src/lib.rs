//! Network plumbing shared by sluice's receivers and exporters, so that it exists once: a tonic
//! codec that keeps messages encoded, TLS client channels, HTTP clients, request metadata, the
//! `google.rpc` status messages, the OTLP specification's retry classification, and the server
//! side of every listener (connection limits, timeouts, body reading). Not a component.

mod client;
mod codec;
mod http;
mod server;
mod status;
mod tls;

pub use client::{
    Compression, CompressionParams, Compressor, Message, TlsClientConfig, UnaryClient, channel,
    export_error, metadata, retryable,
};
pub use codec::{Coding, GRPC_ACCEPT_ENCODING, RawCodec, decompress, gzip, tonic_accept_encodings};
pub use http::{
    Answer, MAX_ANSWER_BYTES, authorize, http_client, http_headers, parse_retry_after, send,
    set_credentials,
};
pub use server::{BodyError, ServerAuth, ServerSettings, client_info, discard, read_body, serve};
pub use status::{
    ProtoDuration, RETRY_INFO_TYPE, RetryInfo, RpcAny, RpcStatus, grpc_status, http_status,
    retry_after_secs, retry_delay, rpc_status,
};
pub use tls::{TlsError, TlsServerConfig};
