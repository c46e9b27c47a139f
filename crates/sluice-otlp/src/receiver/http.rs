//! OTLP/HTTP: `POST /v1/{traces,metrics,logs}` with protobuf or JSON bodies, optionally gzip- or
//! zlib-compressed. Bodies are capped before and after decompression; JSON is transcoded straight
//! to protobuf; responses use the request's content type.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prost::Message;
use sluice_core::{BuildError, ConnectionLoad, ConsumeError, Intake, Signal};
use sluice_net::{BodyError, Coding, ServerSettings, decompress, discard, read_body};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{CorsConfig, HttpConfig};
use crate::status;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

#[derive(Clone)]
struct AppState {
    intake: Arc<Intake>,
    max_body: usize,
    read_timeout: Duration,
    include_metadata: bool,
}

/// An HTTP failure: status, message, and the encoding its `google.rpc.Status` body takes.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    message: String,
    encoding: Option<Encoding>,
    retry_after: Option<u64>,
    code: i32,
}

impl Failure {
    fn plain(status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
            encoding: None,
            retry_after: None,
            code: 0,
        }
    }

    fn bad_request(encoding: Encoding, message: impl Into<String>) -> Self {
        Failure {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            encoding: Some(encoding),
            retry_after: None,
            code: tonic::Code::InvalidArgument as i32,
        }
    }

    fn too_large(encoding: Encoding, limit: usize) -> Self {
        Failure {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body is larger than the {limit} byte limit"),
            encoding: Some(encoding),
            retry_after: None,
            code: tonic::Code::ResourceExhausted as i32,
        }
    }

    fn from_body(encoding: Encoding, err: BodyError<ConsumeError>) -> Self {
        match err {
            BodyError::TooLarge { limit } => Failure::too_large(encoding, limit),
            BodyError::TimedOut(_) => Failure {
                status: StatusCode::REQUEST_TIMEOUT,
                message: err.to_string(),
                encoding: Some(encoding),
                retry_after: None,
                code: tonic::Code::DeadlineExceeded as i32,
            },
            BodyError::Read(_) => Failure::bad_request(encoding, err.to_string()),
            BodyError::Refused(err) => Failure::from_consume(encoding, &err),
        }
    }

    fn from_consume(encoding: Encoding, err: &ConsumeError) -> Self {
        let rpc = status::rpc_status(err);
        Failure {
            status: status::http_status(err.code),
            message: err.message.clone(),
            encoding: Some(encoding),
            retry_after: status::retry_after_secs(err),
            code: rpc.code,
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = match self.encoding {
            None => (self.status, self.message).into_response(),
            Some(encoding) => {
                let body = match encoding {
                    Encoding::Protobuf => sluice_net::RpcStatus {
                        code: self.code,
                        message: self.message,
                        details: Vec::new(),
                    }
                    .encode_to_vec(),
                    Encoding::Json => serde_json::to_vec(&serde_json::json!({
                        "code": self.code,
                        "message": self.message,
                        "details": [],
                    }))
                    .unwrap_or_default(),
                };
                let mut r = (self.status, body).into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(encoding.content_type()),
                );
                r
            }
        };
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn content_encoding(headers: &HeaderMap) -> Result<Option<Coding>, String> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(None);
    };
    match value
        .to_str()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "identity" => Ok(None),
        other => Coding::from_http(other).map(Some).ok_or_else(|| {
            format!(
                "unsupported Content-Encoding `{other}`; use gzip, deflate, zstd, snappy, x-snappy-framed, lz4 or none"
            )
        }),
    }
}

fn media_type(headers: &HeaderMap) -> Result<Encoding, String> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(format!(
            "unsupported Content-Type `{raw}`; use application/x-protobuf or application/json"
        )),
    }
}

/// The HTTP receiver's decoding of one request, from its `Content-Type` and `Content-Encoding`
/// values and its body to the encoded protobuf request, or the HTTP status and message the
/// receiver answers: the very code a request goes through, public for the fuzz targets
/// (`fuzz/`).
///
/// # Errors
/// The [`Refusal`]: 400, 413 or 415, and the message naming the problem.
pub fn decode_request(
    signal: Signal,
    content_type: &[u8],
    coding: Option<&[u8]>,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, Refusal> {
    let mut headers = HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Some(Ok(v)) = coding.map(http::HeaderValue::from_bytes) {
        headers.insert(header::CONTENT_ENCODING, v);
    }
    let refusal = |status: u16, message: String| Refusal { status, message };
    let encoding = media_type(&headers).map_err(|m| refusal(415, m))?;
    let compression = content_encoding(&headers).map_err(|m| refusal(400, m))?;
    prepare(signal, encoding, compression, body, limit)
        .map_err(|f| refusal(f.status.as_u16(), f.message))
}

/// How the HTTP receiver answers a request it cannot decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Refusal {
    /// The HTTP status: 400, 413 or 415.
    pub status: u16,
    /// What is wrong, as the response body says it.
    pub message: String,
}

/// Decompresses and transcodes a body into an encoded protobuf request.
fn prepare(
    signal: Signal,
    encoding: Encoding,
    compression: Option<Coding>,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, Failure> {
    let body = match compression {
        None => body,
        Some(coding) => match decompress(coding, &body, limit) {
            Ok(Some(b)) => Bytes::from(b),
            Ok(None) => return Err(Failure::too_large(encoding, limit)),
            Err(e) => {
                let message = format!("cannot decompress {} body: {e}", coding.name());
                return Err(Failure::bad_request(encoding, message));
            }
        },
    };
    match encoding {
        Encoding::Protobuf => Ok(body),
        Encoding::Json => sluice_core::json::json_to_protobuf(signal, &body)
            .map(Bytes::from)
            .map_err(|e| Failure::bad_request(encoding, format!("invalid OTLP/JSON: {e}"))),
    }
}

async fn export(signal: Signal, state: AppState, request: Request) -> Result<Response, Failure> {
    let headers = request.headers();
    let encoding =
        media_type(headers).map_err(|m| Failure::plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, m))?;
    let compression = content_encoding(headers).map_err(|m| Failure::bad_request(encoding, m))?;
    let hint = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    // A refusal is sent after reading and discarding the body (frame by frame, never holding
    // it, within read_timeout): a server that answers mid-upload and closes makes clients see a
    // reset, not the answer. Bodies declared over twice the limit are answered at once.
    let linger = state.max_body.saturating_mul(2);
    if hint > state.max_body {
        if hint <= linger {
            discard(request.into_body(), linger, state.read_timeout).await;
        }
        return Err(Failure::too_large(encoding, state.max_body));
    }
    // Admitted by its declared length before any of the body is read; a chunked body is counted
    // as it arrives.
    let connection = request.extensions().get::<ConnectionLoad>().cloned();
    let client = sluice_net::client_info(&request, state.include_metadata);
    let mut upload = match state
        .intake
        .begin(signal, "http", hint, connection.as_ref())
    {
        Ok(upload) => upload,
        Err(err) => {
            discard(request.into_body(), linger, state.read_timeout).await;
            return Err(Failure::from_consume(encoding, &err));
        }
    };
    let body = read_body(
        request,
        state.max_body,
        hint,
        state.read_timeout,
        |received| upload.grow_to(received.len()).map(|()| received.len()),
    )
    .await
    .map_err(|e| {
        state.intake.refused(signal, "http", 0);
        Failure::from_body(encoding, e)
    })?;
    let limit = state.max_body;
    let data = if body.len() > sluice_core::blocking::DECODE_OFF_WORKERS_ABOVE
        && (compression.is_some() || encoding == Encoding::Json)
    {
        tokio::task::spawn_blocking(move || prepare(signal, encoding, compression, body, limit))
            .await
            .map_err(|_| {
                Failure::from_consume(encoding, &ConsumeError::internal("request decoding failed"))
            })??
    } else {
        prepare(signal, encoding, compression, body, limit)?
    };
    let accepted = state
        .intake
        .accept(signal, "http", data, upload, client)
        .await
        .map_err(|e| Failure::from_consume(encoding, &e))?;
    let body: Vec<u8> = match encoding {
        Encoding::Protobuf => {
            status::encode_response(accepted.rejected, &accepted.message).to_vec()
        }
        Encoding::Json => {
            let value = if accepted.rejected == 0 && accepted.message.is_empty() {
                serde_json::json!({})
            } else {
                let key = match signal {
                    Signal::Traces => "rejectedSpans",
                    Signal::Metrics => "rejectedDataPoints",
                    Signal::Logs => "rejectedLogRecords",
                };
                serde_json::json!({"partialSuccess": {key: accepted.rejected.to_string(), "errorMessage": accepted.message}})
            };
            serde_json::to_vec(&value).unwrap_or_default()
        }
    };
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    Ok(response)
}

fn origin_matches(pattern: &str, origin: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern.eq_ignore_ascii_case(origin),
        Some((prefix, suffix)) => {
            origin.len() >= prefix.len() + suffix.len()
                && origin[..prefix.len()].eq_ignore_ascii_case(prefix)
                && origin[origin.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
    }
}

fn cors_layer(config: &CorsConfig) -> CorsLayer {
    let patterns = config.allowed_origins.clone();
    let mut headers: Vec<http::HeaderName> = vec![
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::ACCEPT,
    ];
    headers.extend(
        config
            .allowed_headers
            .iter()
            .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
    );
    let mut layer = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            let origin = origin.to_str().unwrap_or("");
            patterns.iter().any(|p| origin_matches(p, origin))
        }))
        .allow_methods([http::Method::POST, http::Method::OPTIONS])
        .allow_headers(headers);
    if let Some(secs) = config.max_age {
        layer = layer.max_age(Duration::from_secs(secs));
    }
    layer
}

/// Binds the HTTP endpoint and serves until `shutdown`.
pub(crate) async fn serve(
    id: &str,
    config: &HttpConfig,
    auth: Option<sluice_net::ServerAuth>,
    intake: Arc<Intake>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, BuildError> {
    let state = AppState {
        intake,
        max_body: config.max_request_body_size.bytes() as usize,
        read_timeout: config.read_timeout.get(),
        include_metadata: config.include_metadata,
    };
    let mut router = Router::new();
    for signal in Signal::ALL {
        if !state.intake.serves(signal) {
            continue;
        }
        router = router.route(
            config.path(signal),
            post(
                move |State(state): State<AppState>, request: Request| async move {
                    match export(signal, state, request).await {
                        Ok(r) => r,
                        Err(f) => f.into_response(),
                    }
                },
            ),
        );
    }
    let mut router = router.with_state(state);
    if let Some(cors) = config
        .cors
        .as_ref()
        .filter(|c| !c.allowed_origins.is_empty())
    {
        router = router.layer(cors_layer(cors));
    }
    let router = router.fallback(|| async {
        (
            StatusCode::NOT_FOUND,
            "not found: OTLP/HTTP paths are /v1/traces, /v1/metrics and /v1/logs",
        )
    });
    let tls = sluice_net::TlsServerConfig::for_listener(
        config.tls.as_ref(),
        &format!("receivers.{id}.protocols.http.tls"),
        &["h2", "http/1.1"],
        &shutdown,
    )?;
    let listener = super::bind(&config.endpoint).await?;
    let local = listener.local_addr().ok();
    tracing::info!(receiver = %id, endpoint = ?local, tls = tls.is_some(), "otlp http receiver listening");
    let settings = ServerSettings {
        name: format!("{id}/http"),
        max_connections: config.max_connections,
        read_header_timeout: config.read_header_timeout.get(),
        idle_timeout: config.idle_timeout.get(),
        http2_only: false,
        max_concurrent_streams: config.max_concurrent_streams,
        keepalive_interval: None,
        keepalive_timeout: None,
        max_connection_age: None,
        max_connection_age_grace: Duration::ZERO,
    };
    Ok(tokio::spawn(sluice_net::serve(
        listener, settings, tls, auth, router, shutdown,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn compressed_bodies_are_capped_and_bad_ones_named() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 10 << 20]).unwrap();
        let bomb = Bytes::from(gz.finish().unwrap());
        let prepared = |body: Bytes, limit| {
            prepare(
                Signal::Traces,
                Encoding::Protobuf,
                Some(Coding::Gzip),
                body,
                limit,
            )
        };
        let refused = prepared(bomb.clone(), 1 << 20).unwrap_err();
        assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(prepared(bomb, 20 << 20).unwrap().len(), 10 << 20);
        let bad = prepared(Bytes::from_static(b"not gzip"), 100).unwrap_err();
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert!(
            bad.message.contains("cannot decompress gzip"),
            "{}",
            bad.message
        );
    }

    #[test]
    fn origins_match_with_one_wildcard() {
        assert!(origin_matches(
            "https://*.example.com",
            "https://app.example.com"
        ));
        assert!(!origin_matches(
            "https://*.example.com",
            "https://example.org"
        ));
        assert!(origin_matches(
            "http://localhost:3000",
            "http://localhost:3000"
        ));
    }

    #[test]
    fn content_types_ignore_parameters() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(media_type(&h).unwrap(), Encoding::Json);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(
            media_type(&h)
                .unwrap_err()
                .contains("unsupported Content-Type `text/plain`")
        );
    }
}
