//! gRPC clients for exporters: TLS channels, metadata, unary calls on encoded bytes, and the
//! OTLP specification's retry classification of statuses.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use serde::Deserialize;
use sluice_config::Problem;
use sluice_core::auth::ClientAuthenticator;
use sluice_core::{BuildError, ExportError};
use tonic::metadata::{MetadataKey, MetadataMap};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tower::{Service, ServiceExt};

use crate::retry_delay;

/// `tls`: client TLS settings shared by every exporter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsClientConfig {
    /// Plaintext for gRPC endpoints without a scheme (the Collector's meaning; default `false`).
    pub insecure: bool,
    /// Skip verifying the server's certificate (testing only).
    pub insecure_skip_verify: bool,
    /// PEM file of CA certificates to trust instead of the system's.
    pub ca_file: Option<String>,
    /// PEM client certificate, for mutual TLS (with `key_file`).
    pub cert_file: Option<String>,
    /// PEM client key, for mutual TLS (with `cert_file`).
    pub key_file: Option<String>,
    /// Name to verify the server's certificate against, instead of the endpoint's host.
    pub server_name_override: Option<String>,
}

impl TlsClientConfig {
    /// Checks the settings; `path` is the exporter's path in the file.
    pub fn check(&self, path: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.cert_file.is_some() != self.key_file.is_some() {
            p.push(Problem::error(
                format!("{path}.tls"),
                "cert_file and key_file go together",
            ));
        }
        p
    }
}

/// Compression of export requests: the Collector's `compression` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (levels 1 to 9; sluice's default 1, the fastest).
    Gzip,
    /// Zstandard (levels 1 to 22; default 3, as libzstd's).
    Zstd,
    /// Snappy (no levels): the block format over HTTP, the framed format over gRPC.
    Snappy,
    /// No compression.
    None,
}

/// `compression_params`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionParams {
    /// The level, for `gzip` (1 to 9) and `zstd` (1 to 22).
    #[serde(default)]
    pub level: Option<i32>,
}

/// How an exporter compresses what it sends, made once from `compression` and
/// `compression_params`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compressor {
    compression: Compression,
    level: i32,
}

impl Compressor {
    /// The compressor for these settings.
    ///
    /// # Errors
    /// A message when the level does not apply to the algorithm or is out of its range.
    pub fn new(compression: Compression, params: CompressionParams) -> Result<Self, String> {
        let (range, default) = match compression {
            Compression::Gzip => (1..=9, 1),
            Compression::Zstd => (1..=22, 3),
            Compression::Snappy | Compression::None => {
                return match params.level {
                    Some(_) => Err(format!(
                        "`{}` has no levels",
                        match compression {
                            Compression::Snappy => "snappy",
                            _ => "none",
                        }
                    )),
                    None => Ok(Compressor {
                        compression,
                        level: 0,
                    }),
                };
            }
        };
        let level = params.level.unwrap_or(default);
        if !range.contains(&level) {
            return Err(format!(
                "level {level} is out of range; use {} to {}",
                range.start(),
                range.end()
            ));
        }
        Ok(Compressor { compression, level })
    }

    /// Checks settings for `sluice validate`; `path` is the exporter's.
    pub fn check(compression: Compression, params: CompressionParams, path: &str) -> Vec<Problem> {
        match Compressor::new(compression, params) {
            Ok(_) => Vec::new(),
            Err(message) => vec![Problem::error(
                format!("{path}.compression_params.level"),
                message,
            )],
        }
    }

    /// The algorithm.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The `Content-Encoding` / `grpc-encoding` name, `None` when not compressing.
    pub fn encoding(&self) -> Option<&'static str> {
        match self.compression {
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            Compression::Snappy => Some("snappy"),
            Compression::None => None,
        }
    }

    /// `data` compressed (`None` when not compressing). `framed` picks Snappy's framed format,
    /// which gRPC's snappy codec speaks, over the block format HTTP clients send.
    ///
    /// # Errors
    /// A permanent [`ExportError`] when the compressor fails.
    pub fn compress(&self, data: &[u8], framed: bool) -> Result<Option<Bytes>, ExportError> {
        let failed = |e: &dyn std::fmt::Display| {
            ExportError::permanent(format!("{} failed: {e}", self.encoding().unwrap_or("none")))
        };
        Ok(match self.compression {
            Compression::None => None,
            Compression::Gzip => Some(crate::codec::gzip_at(data, self.level)?),
            Compression::Zstd => Some(
                zstd::bulk::compress(data, self.level)
                    .map(Bytes::from)
                    .map_err(|e| failed(&e))?,
            ),
            Compression::Snappy if framed => {
                use std::io::Write as _;
                let mut e = snap::write::FrameEncoder::new(Vec::with_capacity(data.len() / 2));
                e.write_all(data).map_err(|e| failed(&e))?;
                Some(Bytes::from(e.into_inner().map_err(|e| failed(&e))?))
            }
            Compression::Snappy => Some(
                snap::raw::Encoder::new()
                    .compress_vec(data)
                    .map(Bytes::from)
                    .map_err(|e| failed(&e))?,
            ),
        })
    }
}

fn read(path: &str) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|e| BuildError::Other(format!("cannot read {path}: {e}")))
}

/// A lazily connecting channel to `endpoint`: `host:port` (TLS unless `tls.insecure`, the
/// Collector's rule), or an `http://` / `https://` URL.
///
/// # Errors
/// [`BuildError::Other`] for an invalid endpoint or unreadable TLS files.
pub fn channel(endpoint: &str, tls: &TlsClientConfig) -> Result<Channel, BuildError> {
    let (uri, secure) = if endpoint.starts_with("https://") {
        (endpoint.to_owned(), true)
    } else if endpoint.starts_with("http://") {
        (endpoint.to_owned(), false)
    } else if tls.insecure {
        (format!("http://{endpoint}"), false)
    } else {
        (format!("https://{endpoint}"), true)
    };
    let mut e = Endpoint::from_shared(uri.clone())
        .map_err(|err| BuildError::Other(format!("invalid endpoint `{uri}`: {err}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if secure {
        let mut t = ClientTlsConfig::new();
        match &tls.ca_file {
            Some(ca) => t = t.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => t = t.with_native_roots(),
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &tls.server_name_override {
            t = t.domain_name(name.clone());
        }
        e = e
            .tls_config(t)
            .map_err(|err| BuildError::Other(format!("invalid TLS settings: {err}")))?;
    }
    Ok(e.connect_lazy())
}

/// Request metadata from configured headers (names lowercased, as gRPC requires).
///
/// # Errors
/// [`BuildError::Other`] naming an invalid header name or value.
pub fn metadata(headers: &BTreeMap<String, String>) -> Result<MetadataMap, BuildError> {
    let mut metadata = MetadataMap::new();
    for (k, v) in headers {
        let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| BuildError::Other(format!("invalid header name `{k}`")))?;
        let value = v
            .parse()
            .map_err(|_| BuildError::Other(format!("invalid value for header `{k}`")))?;
        metadata.insert(key, value);
    }
    Ok(metadata)
}

/// Whether a status is worth retrying, per the OTLP specification: CANCELLED,
/// DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS, and RESOURCE_EXHAUSTED only
/// when the server attached RetryInfo.
pub fn retryable(code: tonic::Code, has_retry_info: bool) -> bool {
    use tonic::Code;
    match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => has_retry_info,
        _ => false,
    }
}

/// The exporter error for a failed call, retryable or permanent, with the server's delay.
pub fn export_error(status: &tonic::Status) -> ExportError {
    let delay = retry_delay(status);
    let message = format!("{:?}: {}", status.code(), status.message());
    if retryable(status.code(), delay.is_some()) {
        ExportError::retryable(message).with_retry_after(delay)
    } else {
        ExportError::permanent(message)
    }
}

/// A request body ready for [`UnaryClient::call`].
#[derive(Debug, Clone)]
pub struct Message {
    payload: Bytes,
    compressed: bool,
}

impl Message {
    /// Bytes on the wire (after compression).
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }
}

/// One unary method on one channel, sending and receiving encoded messages.
#[derive(Clone)]
pub struct UnaryClient {
    channel: Channel,
    path: http::uri::PathAndQuery,
    metadata: MetadataMap,
    compressor: Compressor,
    auth: Option<Arc<dyn ClientAuthenticator>>,
}

impl std::fmt::Debug for UnaryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnaryClient")
            .field("path", &self.path)
            .field("compressor", &self.compressor)
            .field("auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

impl UnaryClient {
    /// A client for the method at `path` (`/package.Service/Method`), compressing requests with
    /// `compressor`.
    pub fn new(
        channel: Channel,
        path: &'static str,
        metadata: MetadataMap,
        compressor: Compressor,
    ) -> Self {
        UnaryClient {
            channel,
            path: http::uri::PathAndQuery::from_static(path),
            metadata,
            compressor,
            auth: None,
        }
    }

    /// The client with `auth`'s credentials on every call (an exporter's `auth.authenticator`).
    #[must_use]
    pub fn with_auth(mut self, auth: Option<Arc<dyn ClientAuthenticator>>) -> Self {
        self.auth = auth;
        self
    }

    /// An encoded request made ready to send: compressed when the client compresses. Done once
    /// per batch, in an exporter's `encode`; retries send the same message again.
    ///
    /// # Errors
    /// A permanent [`ExportError`] when compression fails.
    pub fn prepare(&self, body: Bytes) -> Result<Message, ExportError> {
        Ok(match self.compressor.compress(&body, true)? {
            Some(payload) => Message {
                payload,
                compressed: true,
            },
            None => Message {
                payload: body,
                compressed: false,
            },
        })
    }

    /// Sends one prepared request and returns the encoded response.
    ///
    /// The request goes out without being copied: the body is the 5-byte gRPC message prefix
    /// followed by the payload itself (tonic's codecs would copy it into a buffer of their own,
    /// and an exporter keeps it for retries, so every request in flight cost twice its size).
    ///
    /// # Errors
    /// An [`ExportError`] classified by [`export_error`]; connection failures are retryable.
    pub async fn call(&self, message: &Message) -> Result<Bytes, ExportError> {
        let (compressed, payload) = (message.compressed, message.payload.clone());
        let len = u32::try_from(payload.len()).map_err(|_| {
            ExportError::permanent(format!(
                "request of {} bytes is over gRPC's 4 GiB message limit",
                payload.len()
            ))
        })?;
        let mut prefix = [0u8; 5];
        prefix[0] = u8::from(compressed);
        prefix[1..].copy_from_slice(&len.to_be_bytes());
        let mut request = http::Request::new(tonic::body::Body::new(Frames::new([
            Bytes::copy_from_slice(&prefix),
            payload,
        ])));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = http::Uri::from(self.path.clone());
        *request.version_mut() = http::Version::HTTP_2;
        let headers = request.headers_mut();
        *headers = self.metadata.clone().into_headers();
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-accept-encoding", HeaderValue::from_static("gzip"));
        if let Some(auth) = &self.auth {
            crate::http::set_credentials(headers, auth.as_ref());
        }
        if compressed && let Some(encoding) = self.compressor.encoding() {
            headers.insert("grpc-encoding", HeaderValue::from_static(encoding));
        }
        let mut channel = self.channel.clone();
        let response = channel
            .ready()
            .await
            .map_err(|e| ExportError::retryable(format!("cannot connect: {e}")))?
            .call(request)
            .await
            .map_err(|e| ExportError::retryable(format!("transport error: {e}")))?;
        read_response(response).await.map_err(|s| export_error(&s))
    }
}

/// Largest gRPC response accepted: OTLP and Jaeger answer with a few bytes.
const MAX_RESPONSE: usize = 4 << 20;

/// The message of a unary gRPC response, or the status it carries (in a trailers-only
/// response, in the trailers, or inferred from the HTTP status as gRPC's HTTP mapping says).
async fn read_response(
    response: http::Response<tonic::body::Body>,
) -> Result<Bytes, tonic::Status> {
    use http_body_util::BodyExt;
    let (parts, body) = response.into_parts();
    if let Some(status) = tonic::Status::from_header_map(&parts.headers)
        && status.code() != tonic::Code::Ok
    {
        return Err(status);
    }
    if parts.status != http::StatusCode::OK {
        return Err(http_status(parts.status));
    }
    let collected = http_body_util::Limited::new(body, MAX_RESPONSE + 5)
        .collect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("reading the response: {e}")))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    match tonic::Status::from_header_map(&trailers) {
        Some(status) if status.code() != tonic::Code::Ok => return Err(status),
        Some(_) => {}
        None if tonic::Status::from_header_map(&parts.headers).is_none() => {
            return Err(tonic::Status::internal("the response has no grpc-status"));
        }
        None => {}
    }
    message(&parts.headers, data)
}

/// The one length-prefixed message of a response body (empty when the server sent none).
fn message(headers: &http::HeaderMap, data: Bytes) -> Result<Bytes, tonic::Status> {
    if data.is_empty() {
        return Ok(data);
    }
    if data.len() < 5 {
        return Err(tonic::Status::internal("truncated gRPC message prefix"));
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    if data.len() - 5 < len {
        return Err(tonic::Status::internal("truncated gRPC message"));
    }
    let payload = data.slice(5..5 + len);
    match data[0] {
        0 => Ok(payload),
        1 => {
            let gzip = headers
                .get("grpc-encoding")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
            if !gzip {
                return Err(tonic::Status::internal(
                    "compressed response without a gzip grpc-encoding",
                ));
            }
            crate::decompress(crate::Coding::Gzip, &payload, MAX_RESPONSE)
                .map_err(|e| tonic::Status::internal(format!("bad gzip response: {e}")))?
                .map(Bytes::from)
                .ok_or_else(|| tonic::Status::internal("response too large"))
        }
        flag => Err(tonic::Status::internal(format!(
            "unknown gRPC compression flag {flag}"
        ))),
    }
}

/// gRPC's mapping of HTTP statuses for responses that carry no grpc-status.
fn http_status(status: http::StatusCode) -> tonic::Status {
    use tonic::Code;
    let code = match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    tonic::Status::new(code, format!("HTTP status {status} without a grpc-status"))
}

/// A request body of ready chunks, handed to the connection as they are.
struct Frames(std::collections::VecDeque<Bytes>);

impl Frames {
    fn new<const N: usize>(chunks: [Bytes; N]) -> Self {
        Frames(chunks.into_iter().filter(|c| !c.is_empty()).collect())
    }
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|c| Ok(http_body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.iter().map(|c| c.len() as u64).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes_like_the_specification() {
        assert!(retryable(tonic::Code::Unavailable, false));
        assert!(!retryable(tonic::Code::ResourceExhausted, false));
        assert!(retryable(tonic::Code::ResourceExhausted, true));
        assert!(!retryable(tonic::Code::InvalidArgument, false));
        let e = export_error(&tonic::Status::invalid_argument("bad span"));
        assert!(!e.retryable);
        assert!(e.message.contains("bad span"));
    }

    #[test]
    fn reads_plain_gzip_and_broken_response_messages() {
        let headers = http::HeaderMap::new();
        let framed = |flag: u8, payload: &[u8]| {
            let mut v = vec![flag];
            v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            v.extend_from_slice(payload);
            Bytes::from(v)
        };
        assert_eq!(message(&headers, framed(0, b"abc")).unwrap(), "abc");
        assert_eq!(message(&headers, Bytes::new()).unwrap(), "");
        let mut gzip = http::HeaderMap::new();
        gzip.insert("grpc-encoding", HeaderValue::from_static("gzip"));
        assert_eq!(
            message(&gzip, framed(1, &crate::codec::gzip(b"hello").unwrap())).unwrap(),
            "hello"
        );
        let problem =
            |h: &http::HeaderMap, b: Bytes| message(h, b).unwrap_err().message().to_owned();
        assert!(problem(&headers, framed(1, b"x")).contains("without a gzip"));
        assert!(problem(&gzip, framed(1, b"not gzip")).contains("bad gzip"));
        assert!(problem(&headers, framed(7, b"x")).contains("flag 7"));
        assert!(problem(&headers, Bytes::from_static(&[0, 0, 0])).contains("truncated"));
        assert!(problem(&headers, Bytes::from_static(&[0, 0, 0, 0, 9, 1])).contains("truncated"));
        assert_eq!(
            http_status(http::StatusCode::SERVICE_UNAVAILABLE).code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            http_status(http::StatusCode::NOT_FOUND).code(),
            tonic::Code::Unimplemented
        );
        assert_eq!(
            http_status(http::StatusCode::IM_A_TEAPOT).code(),
            tonic::Code::Unknown
        );
    }

    /// The length and a position-weighted sum of `data`: what the echo peer answers, so a
    /// lost, reordered or altered byte shows.
    fn digest(data: &[u8]) -> Bytes {
        let sum = data.iter().enumerate().fold(0u64, |acc, (i, b)| {
            acc.wrapping_add((i as u64 + 1).wrapping_mul(u64::from(*b)))
        });
        let mut out = (data.len() as u64).to_be_bytes().to_vec();
        out.extend_from_slice(&sum.to_be_bytes());
        Bytes::from(out)
    }

    /// A tonic server (the implementation every Go and Rust gRPC peer is checked against)
    /// answering by method: a digest of the request, a retryable status with RetryInfo, a permanent status, and
    /// a bare HTTP 503.
    async fn peer() -> String {
        use axum::extract::Request;
        use prost::Message;

        struct Echo(Option<tonic::Status>);
        impl tonic::server::UnaryService<Bytes> for Echo {
            type Response = Bytes;
            type Future = std::future::Ready<Result<tonic::Response<Bytes>, tonic::Status>>;
            fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
                std::future::ready(match self.0.take() {
                    Some(status) => Err(status),
                    None => Ok(tonic::Response::new(digest(request.get_ref()))),
                })
            }
        }
        async fn serve(
            status: Option<tonic::Status>,
            request: Request,
        ) -> axum::response::Response {
            let mut send = tonic::codec::EnabledCompressionEncodings::default();
            send.enable(tonic::codec::CompressionEncoding::Gzip);
            tonic::server::Grpc::new(crate::RawCodec)
                .apply_compression_config(crate::tonic_accept_encodings(), send)
                .apply_max_message_size_config(Some(64 << 20), Some(64 << 20))
                .unary(Echo(status), request)
                .await
                .map(axum::body::Body::new)
        }
        let retry = crate::RpcStatus {
            code: tonic::Code::Unavailable as i32,
            message: "busy".into(),
            details: vec![crate::RpcAny {
                type_url: crate::RETRY_INFO_TYPE.into(),
                value: crate::RetryInfo {
                    retry_delay: Some(crate::ProtoDuration {
                        seconds: 2,
                        nanos: 0,
                    }),
                }
                .encode_to_vec(),
            }],
        }
        .encode_to_vec();
        let app = axum::Router::new()
            .route(
                "/t.S/Echo",
                axum::routing::post(|r: Request| serve(None, r)),
            )
            .route(
                "/t.S/Busy",
                axum::routing::post(move |r: Request| {
                    let status = tonic::Status::with_details(
                        tonic::Code::Unavailable,
                        "busy",
                        retry.clone().into(),
                    );
                    serve(Some(status), r)
                }),
            )
            .route(
                "/t.S/Bad",
                axum::routing::post(|r: Request| {
                    serve(Some(tonic::Status::invalid_argument("span 3 has no id")), r)
                }),
            )
            .route(
                "/t.S/Http503",
                axum::routing::post(|| async { http::StatusCode::SERVICE_UNAVAILABLE }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    fn plain() -> Compressor {
        Compressor::new(Compression::None, CompressionParams::default()).unwrap()
    }

    #[test]
    fn levels_are_checked_per_algorithm_and_every_algorithm_round_trips() {
        let level = |compression, level| {
            Compressor::new(compression, CompressionParams { level: Some(level) })
        };
        assert!(level(Compression::Gzip, 9).is_ok());
        assert_eq!(
            level(Compression::Gzip, 10).unwrap_err(),
            "level 10 is out of range; use 1 to 9"
        );
        assert!(level(Compression::Zstd, 19).is_ok());
        assert!(level(Compression::Zstd, 0).is_err());
        assert_eq!(
            level(Compression::Snappy, 1).unwrap_err(),
            "`snappy` has no levels"
        );
        let data: Vec<u8> = (0..50_000u32)
            .flat_map(|i| (i % 13).to_le_bytes())
            .collect();
        for (compression, coding, framed) in [
            (Compression::Gzip, crate::Coding::Gzip, false),
            (Compression::Zstd, crate::Coding::Zstd, false),
            (Compression::Snappy, crate::Coding::Snappy, false),
            (Compression::Snappy, crate::Coding::Snappy, true),
        ] {
            let c = Compressor::new(compression, CompressionParams::default()).unwrap();
            let packed = c.compress(&data, framed).unwrap().unwrap();
            assert!(packed.len() < data.len() / 4, "{compression:?}");
            assert_eq!(
                crate::decompress(coding, &packed, data.len())
                    .unwrap()
                    .unwrap(),
                data,
                "{compression:?} framed {framed}"
            );
        }
        assert_eq!(plain().compress(&data, false).unwrap(), None);
    }

    /// A one-byte request, uncompressed.
    fn x() -> Message {
        Message {
            payload: Bytes::from_static(b"x"),
            compressed: false,
        }
    }

    #[tokio::test]
    async fn unary_calls_round_trip_and_classify_failures_against_a_tonic_server() {
        let endpoint = peer().await;
        let channel = channel(&endpoint, &TlsClientConfig::default()).unwrap();
        let mut headers = BTreeMap::new();
        headers.insert("X-Tenant".to_owned(), "a".to_owned());
        let metadata = metadata(&headers).unwrap();
        // Large enough to span many HTTP/2 frames and flow-control windows.
        let big: Bytes = (0..6_000_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        for gzip in [false, true] {
            let compression = if gzip {
                Compression::Gzip
            } else {
                Compression::None
            };
            let compressor = Compressor::new(compression, CompressionParams::default()).unwrap();
            let echo = UnaryClient::new(channel.clone(), "/t.S/Echo", metadata.clone(), compressor);
            assert_eq!(
                echo.call(&echo.prepare(big.clone()).unwrap())
                    .await
                    .unwrap(),
                digest(&big),
                "gzip: {gzip}"
            );
            assert_eq!(
                echo.call(&echo.prepare(Bytes::new()).unwrap())
                    .await
                    .unwrap(),
                digest(&[]),
                "gzip: {gzip}"
            );
        }
        let busy = UnaryClient::new(channel.clone(), "/t.S/Busy", metadata.clone(), plain())
            .call(&x())
            .await
            .unwrap_err();
        assert!(busy.retryable, "{busy:?}");
        assert_eq!(busy.retry_after, Some(Duration::from_secs(2)));
        let bad = UnaryClient::new(channel.clone(), "/t.S/Bad", metadata.clone(), plain())
            .call(&x())
            .await
            .unwrap_err();
        assert!(!bad.retryable, "{bad:?}");
        assert!(bad.message.contains("span 3 has no id"), "{bad:?}");
        let http = UnaryClient::new(channel.clone(), "/t.S/Http503", metadata.clone(), plain())
            .call(&x())
            .await
            .unwrap_err();
        assert!(http.retryable && http.message.contains("503"), "{http:?}");
        let nobody = super::channel(
            &format!("http://127.0.0.1:{}", unused_port()),
            &TlsClientConfig::default(),
        )
        .unwrap();
        let down = UnaryClient::new(nobody, "/t.S/Echo", metadata, plain())
            .call(&x())
            .await
            .unwrap_err();
        assert!(down.retryable, "{down:?}");
    }

    fn unused_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}
