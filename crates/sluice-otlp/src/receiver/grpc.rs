//! OTLP/gRPC: the three unary `Export` methods, framed here rather than by tonic's server so that
//! the request is counted against the memory budget from its first byte, admitted by the length
//! its gRPC prefix declares before the rest is read, read within a deadline, decompressed in
//! full (every gzip member), and refused when a unary call carries more than one message. The
//! message stays encoded; nothing decodes the protobuf.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use sluice_core::{BuildError, ConnectionLoad, ConsumeError, Intake, Signal, Upload};
use sluice_net::{BodyError, Coding, ServerSettings, decompress, read_body};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{DEFAULT_IDLE, DEFAULT_MAX_STREAMS, GrpcConfig};
use crate::status;

/// The gRPC message prefix: a compressed flag and a big-endian length.
const PREFIX: usize = 5;

/// Serves the three `Export` methods.
#[derive(Clone)]
struct ExportService {
    intake: Arc<Intake>,
    max_message_size: usize,
    read_timeout: Duration,
    include_metadata: bool,
}

impl tower::Service<Request<hyper::body::Incoming>> for ExportService {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<hyper::body::Incoming>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move {
            let mut response = match service.export(request).await {
                Ok(response) => ok(response),
                Err(status) => status.into_http(),
            };
            // What a client may compress with, as the gRPC compression spec asks of servers.
            response.headers_mut().insert(
                "grpc-accept-encoding",
                HeaderValue::from_static(sluice_net::GRPC_ACCEPT_ENCODING),
            );
            Ok(response)
        })
    }
}

impl ExportService {
    async fn export(&self, request: Request<hyper::body::Incoming>) -> Result<Bytes, Status> {
        let path = request.uri().path();
        let Some(signal) = Signal::ALL
            .into_iter()
            .find(|s| s.grpc_path() == path && self.intake.serves(*s))
        else {
            return Err(Status::unimplemented(format!("{path} is not served here")));
        };
        let coding = compression(request.headers())?;
        let client = sluice_net::client_info(&request, self.include_metadata);
        // Refused under memory pressure before anything is read; then the message is counted
        // from its first byte and admitted whole by the length its prefix declares.
        let connection = request.extensions().get::<ConnectionLoad>().cloned();
        let mut upload = self
            .intake
            .begin(signal, "grpc", 0, connection.as_ref())
            .map_err(|e| status::grpc_status(&e))?;
        let max = self.max_message_size;
        let mut declared = None;
        let received = read_body(
            request,
            max.saturating_add(2 * PREFIX),
            0,
            self.read_timeout,
            |received| admit(received, max, &mut declared, &mut upload),
        )
        .await;
        let body = match received {
            Ok(body) => body,
            Err(err) => {
                self.intake.refused(signal, "grpc", 0);
                return Err(body_status(err, max));
            }
        };
        let message = match unframe(&body, coding) {
            Ok(message) => message,
            Err(status) => {
                self.intake.failed(signal, "grpc");
                return Err(status);
            }
        };
        let message = match message {
            Message::Plain(m) => m,
            Message::Compressed(coding, m)
                if m.len() > sluice_core::blocking::DECODE_OFF_WORKERS_ABOVE =>
            {
                tokio::task::spawn_blocking(move || inflate(coding, &m, max))
                    .await
                    .map_err(|_| Status::internal("request decompression failed"))??
            }
            Message::Compressed(coding, m) => inflate(coding, &m, max)?,
        };
        drop(body);
        let accepted = self
            .intake
            .accept(signal, "grpc", message, upload, client)
            .await
            .map_err(|e| status::grpc_status(&e))?;
        Ok(status::encode_response(
            accepted.rejected,
            &accepted.message,
        ))
    }
}

/// Checks what has arrived so far: the prefix's declared length against the size limit and the
/// memory budget as soon as the prefix is there, the bytes received against the budget always,
/// and nothing past the one message a unary call carries. Returns the size the body will reach,
/// once admitted, so the body is read into a buffer of that size.
fn admit(
    received: &[u8],
    max: usize,
    declared: &mut Option<usize>,
    upload: &mut Upload,
) -> Result<usize, ConsumeError> {
    if declared.is_none() && received.len() >= PREFIX {
        let len = u32::from_be_bytes([received[1], received[2], received[3], received[4]]) as usize;
        if len > max {
            return Err(ConsumeError::too_large(format!(
                "message of {len} bytes is larger than the {max} byte limit (max_recv_msg_size_mib)"
            )));
        }
        *declared = Some(len);
        upload.grow_to(PREFIX + len)?;
    }
    if let Some(len) = *declared
        && received.len() > PREFIX + len
    {
        return Err(ConsumeError::invalid(
            "a unary call carries one message; more data followed it",
        ));
    }
    upload.grow_to(received.len())?;
    Ok(declared.map_or(received.len(), |len| PREFIX + len))
}

fn body_status(err: BodyError<ConsumeError>, max: usize) -> Status {
    match err {
        BodyError::Refused(err) => status::grpc_status(&err),
        BodyError::TooLarge { .. } => status::grpc_status(&ConsumeError::too_large(format!(
            "message is larger than the {max} byte limit (max_recv_msg_size_mib)"
        ))),
        BodyError::TimedOut(_) => Status::deadline_exceeded(err.to_string()),
        BodyError::Read(_) => Status::cancelled(err.to_string()),
    }
}

/// The request's `grpc-encoding`: what a compressed message is compressed with.
fn compression(headers: &HeaderMap) -> Result<Option<Coding>, Status> {
    let Some(value) = headers.get("grpc-encoding") else {
        return Ok(None);
    };
    match value.to_str().unwrap_or("").trim() {
        "identity" => Ok(None),
        other => Coding::from_grpc(other).map(Some).ok_or_else(|| {
            Status::unimplemented(format!(
                "unsupported grpc-encoding `{other}`; use gzip, deflate, zstd, snappy or identity"
            ))
        }),
    }
}

enum Message {
    Plain(Bytes),
    Compressed(Coding, Bytes),
}

/// The one message of a unary call's body.
fn unframe(body: &Bytes, coding: Option<Coding>) -> Result<Message, Status> {
    if body.len() < PREFIX {
        return Err(Status::invalid_argument(
            "the call carries no message (a gRPC message starts with a 5-byte prefix)",
        ));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != PREFIX + len {
        return Err(Status::invalid_argument(format!(
            "the message is truncated: its prefix declares {len} bytes, {} arrived",
            body.len() - PREFIX
        )));
    }
    let payload = body.slice(PREFIX..);
    match (body[0], coding) {
        (0, _) => Ok(Message::Plain(payload)),
        (1, Some(coding)) => Ok(Message::Compressed(coding, payload)),
        (1, None) => Err(Status::internal(
            "the message is marked compressed but the call names no grpc-encoding",
        )),
        (flag, _) => Err(Status::invalid_argument(format!(
            "invalid gRPC message flag {flag}"
        ))),
    }
}

/// Decompresses a message (every gzip member) into at most `max` bytes.
fn inflate(coding: Coding, message: &[u8], max: usize) -> Result<Bytes, Status> {
    match decompress(coding, message, max) {
        Ok(Some(m)) => Ok(Bytes::from(m)),
        Ok(None) => Err(status::grpc_status(&ConsumeError::too_large(format!(
            "message is larger than the {max} byte limit (max_recv_msg_size_mib) once decompressed"
        )))),
        Err(e) => Err(Status::invalid_argument(format!(
            "cannot decompress {} message: {e}",
            coding.name()
        ))),
    }
}

/// A successful unary response: one message, then `grpc-status: 0` in the trailers.
fn ok(message: Bytes) -> Response<tonic::body::Body> {
    let mut framed = BytesMut::with_capacity(PREFIX + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames: [Result<Frame<Bytes>, Infallible>; 2] = [
        Ok(Frame::data(framed.freeze())),
        Ok(Frame::trailers(trailers)),
    ];
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    let mut response = Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// Binds the gRPC endpoint and serves until `shutdown`.
pub(crate) async fn serve(
    id: &str,
    config: &GrpcConfig,
    auth: Option<sluice_net::ServerAuth>,
    intake: Arc<Intake>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, BuildError> {
    let listener = super::bind(&config.endpoint).await?;
    let local = listener.local_addr().ok();
    let max = (config.max_recv_msg_size_mib as usize).saturating_mul(1024 * 1024);
    let sp = &config.keepalive.server_parameters;
    let settings = ServerSettings {
        name: format!("{id}/grpc"),
        max_connections: config.max_connections,
        // HTTP/1 only; gRPC speaks HTTP/2, where an idle or silent connection is closed by
        // the idle timeout instead.
        read_header_timeout: Duration::from_secs(10),
        idle_timeout: sp.max_connection_idle.unwrap_or(DEFAULT_IDLE).get(),
        http2_only: true,
        max_concurrent_streams: config.max_concurrent_streams.unwrap_or(DEFAULT_MAX_STREAMS),
        keepalive_interval: sp.time.map(|t| t.get()),
        keepalive_timeout: sp.timeout.map(|t| t.get()),
        max_connection_age: sp.max_connection_age.map(|t| t.get()),
        max_connection_age_grace: sp
            .max_connection_age_grace
            .map_or(Duration::from_secs(30), |t| t.get()),
    };
    let service = ExportService {
        intake,
        max_message_size: max,
        read_timeout: config.read_timeout.get(),
        include_metadata: config.include_metadata,
    };
    // gRPC is HTTP/2: ALPN offers `h2` alone.
    let tls = sluice_net::TlsServerConfig::for_listener(
        config.tls.as_ref(),
        &format!("receivers.{id}.protocols.grpc.tls"),
        &["h2"],
        &shutdown,
    )?;
    tracing::info!(receiver = %id, endpoint = ?local, tls = tls.is_some(), "otlp grpc receiver listening");
    Ok(tokio::spawn(sluice_net::serve(
        listener, settings, tls, auth, service, shutdown,
    )))
}
