//! OTLP/gRPC: the three `Export` services, served by tonic with a codec that keeps the request
//! encoded (tonic frames, decompresses and size-limits; nothing decodes the protobuf).

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use sluice_core::{BuildError, Signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

use super::{GrpcConfig, Intake};
use crate::status;
use sluice_net::RawCodec;

/// Which signal a service type serves (tonic names services by a constant).
pub(crate) trait SignalService: Send + Sync + 'static {
    const SIGNAL: Signal;
    const NAME: &'static str;
}

pub(crate) struct TraceService;
pub(crate) struct MetricsService;
pub(crate) struct LogsService;

impl SignalService for TraceService {
    const SIGNAL: Signal = Signal::Traces;
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}
impl SignalService for MetricsService {
    const SIGNAL: Signal = Signal::Metrics;
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}
impl SignalService for LogsService {
    const SIGNAL: Signal = Signal::Logs;
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

/// One OTLP `Export` service.
pub(crate) struct ExportService<S> {
    intake: Arc<Intake>,
    max_message_size: usize,
    _signal: PhantomData<S>,
}

impl<S> Clone for ExportService<S> {
    fn clone(&self) -> Self {
        ExportService {
            intake: Arc::clone(&self.intake),
            max_message_size: self.max_message_size,
            _signal: PhantomData,
        }
    }
}

impl<S: SignalService> NamedService for ExportService<S> {
    const NAME: &'static str = S::NAME;
}

struct Export<S> {
    intake: Arc<Intake>,
    _signal: PhantomData<S>,
}

impl<S: SignalService> UnaryService<Bytes> for Export<S> {
    type Response = Bytes;
    type Future = BoxFuture<'static, Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let intake = Arc::clone(&self.intake);
        Box::pin(async move {
            // Memory pressure was checked before tonic read the message; the reservation made
            // in `accept` is the check for its size.
            let result = intake.accept(S::SIGNAL, "grpc", request.into_inner()).await;
            match result {
                Ok(accepted) => Ok(Response::new(status::encode_response(
                    accepted.rejected,
                    &accepted.message,
                ))),
                Err(err) => Err(status::grpc_status(&err)),
            }
        })
    }
}

impl<S: SignalService, B> tower::Service<http::Request<B>> for ExportService<S>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let intake = Arc::clone(&self.intake);
        let max = self.max_message_size;
        Box::pin(async move {
            if req.uri().path() != S::SIGNAL.grpc_path() || !intake.serves(S::SIGNAL) {
                let status =
                    Status::unimplemented(format!("{} is not served here", req.uri().path()));
                return Ok(status.into_http());
            }
            // Refuse under memory pressure before tonic reads the message.
            if let Err(err) = intake.admit(S::SIGNAL, "grpc", 0) {
                return Ok(status::grpc_status(&err).into_http());
            }
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_compression_config(sluice_net::accept_gzip(), Default::default())
                .apply_max_message_size_config(Some(max), None);
            let export = Export::<S> {
                intake,
                _signal: PhantomData,
            };
            Ok(grpc.unary(export, req).await)
        })
    }
}

/// Binds the gRPC endpoint and serves until `shutdown`.
pub(crate) async fn serve(
    id: &str,
    config: &GrpcConfig,
    intake: Arc<Intake>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, BuildError> {
    let listener = super::bind(&config.endpoint).await?;
    let local = listener.local_addr().ok();
    let max = (config.max_recv_msg_size_mib as usize).saturating_mul(1024 * 1024);
    let sp = &config.keepalive.server_parameters;
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(sp.time.map(|t| t.get()))
        .http2_keepalive_timeout(sp.timeout.map(|t| t.get()))
        .max_concurrent_streams(config.max_concurrent_streams);
    if let Some(age) = sp.max_connection_age {
        server = server.max_connection_age(age.get());
    }
    let traces = ExportService::<TraceService> {
        intake: Arc::clone(&intake),
        max_message_size: max,
        _signal: PhantomData,
    };
    let metrics = ExportService::<MetricsService> {
        intake: Arc::clone(&intake),
        max_message_size: max,
        _signal: PhantomData,
    };
    let logs = ExportService::<LogsService> {
        intake,
        max_message_size: max,
        _signal: PhantomData,
    };
    let router = server
        .add_service(traces)
        .add_service(metrics)
        .add_service(logs);
    let incoming = tokio_stream_listener(listener);
    let id = id.to_owned();
    tracing::info!(receiver = %id, endpoint = ?local, "otlp grpc receiver listening");
    Ok(tokio::spawn(async move {
        if let Err(err) = router
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
        {
            tracing::error!(receiver = %id, error = %err, "otlp grpc server failed");
        }
    }))
}

fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((next, listener))
    })
}
