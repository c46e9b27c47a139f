//! The server side every listener shares, written once for gRPC and HTTP: accepting under a
//! connection limit, HTTP/1 and HTTP/2 with safe limits and timeouts, closing connections that
//! sit idle or outlive their age, graceful shutdown, and reading request bodies within a size
//! cap and a deadline; TLS when the listener has it ([`crate::tls`]); authentication, answered
//! from a request's headers before its body is read.

use std::convert::Infallible;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use sluice_core::ConnectionLoad;
use sluice_core::auth::{AuthRefusal, ServerAuthenticator};
use sluice_core::client::{AuthInfo, ClientInfo};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Connection limits and timeouts of one listener.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// What the listener serves, for logs (`otlp/grpc`).
    pub name: String,
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// HTTP/1: a client must send a request's headers within this.
    pub read_header_timeout: Duration,
    /// A connection with no request under way for this long is closed.
    pub idle_timeout: Duration,
    /// Speak only HTTP/2 (gRPC).
    pub http2_only: bool,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keepalive pings to an idle client.
    pub keepalive_interval: Option<Duration>,
    /// How long a keepalive ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Option<Duration>,
    /// Connections older than this are asked to go away (GOAWAY for HTTP/2).
    pub max_connection_age: Option<Duration>,
    /// How long requests under way may finish after a connection was asked to go away.
    pub max_connection_age_grace: Duration,
}

impl ServerSettings {
    /// Settings for a small side listener (health checks, self-metrics): a few connections,
    /// HTTP/1 and HTTP/2, the receivers' timeouts.
    pub fn side(name: &str) -> ServerSettings {
        ServerSettings {
            name: name.to_owned(),
            max_connections: 64,
            read_header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            http2_only: false,
            max_concurrent_streams: 16,
            keepalive_interval: None,
            keepalive_timeout: None,
            max_connection_age: None,
            max_connection_age_grace: Duration::ZERO,
        }
    }
}

/// A listener's authenticator, and the counter of requests it refused.
#[derive(Clone)]
pub struct ServerAuth {
    /// The authenticator extension the receiver names.
    pub authenticator: Arc<dyn ServerAuthenticator>,
    /// Requests refused (`otelcol_receiver_requests{outcome="unauthenticated"}`).
    pub refused: metrics::Counter,
    /// Slow checks (see [`ServerAuthenticator::blocks`]) running at once, at most.
    costly: Arc<Semaphore>,
}

impl ServerAuth {
    /// `authenticator` for a listener, counting refusals in `refused`.
    pub fn new(authenticator: Arc<dyn ServerAuthenticator>, refused: metrics::Counter) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        ServerAuth {
            authenticator,
            refused,
            costly: Arc::new(Semaphore::new(cores)),
        }
    }
}

/// What a receiver with `include_metadata` keeps of a request, and what its authenticator
/// established: the [`ClientInfo`] its batch carries. Without `include_metadata`, only the
/// authentication attributes.
pub fn client_info<B>(request: &Request<B>, include_metadata: bool) -> Option<Arc<ClientInfo>> {
    let none = AuthInfo::none();
    let auth = request.extensions().get::<AuthInfo>().unwrap_or(&none);
    let headers = request
        .headers()
        .iter()
        .filter(|_| include_metadata)
        .map(|(name, value)| (name.as_str(), value.as_bytes()));
    ClientInfo::new(headers, auth)
}

/// A client must complete the TLS handshake within this; a silent one is closed.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// After the service stops, requests under way get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The HTTP/2 flow-control windows: a connection can have at most this much received but not yet
/// read by a handler, whatever its streams do. Handlers read (and count against the memory
/// budget) as data arrives, so these bound only what is in transit.
const CONNECTION_WINDOW: u32 = 2 << 20;
const STREAM_WINDOW: u32 = 1 << 20;

/// The most header bytes a request may carry (HTTP/1 request line and headers; HTTP/2 and gRPC
/// header list): OTLP needs a few hundred, and hyper's defaults (about 400 KiB for HTTP/1, 16 MiB
/// for HTTP/2) would let one request make sluice buffer that much before anything is checked.
/// HTTP/1 answers 431; HTTP/2 refuses the stream.
const MAX_HEADER_BYTES: usize = 64 << 10;

/// The largest HTTP/2 frame clients may send: a typical export request (tens of KiB) arrives in
/// one DATA frame instead of several of HTTP/2's default 16 KiB.
const MAX_FRAME: u32 = 256 << 10;

/// Counts what a listener refused, for the logs, once per burst.
struct Refusals {
    count: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

impl Refusals {
    fn note(&self, name: &str, what: &str) {
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::warn!(listener = %name, total = count, "{what}");
        }
    }
}

/// Serves `service` on `listener` until `shutdown`, then lets requests under way finish (within
/// [`SHUTDOWN_GRACE`]) and returns when every connection has closed. With `tls`, each connection
/// completes a TLS handshake first (within [`TLS_HANDSHAKE_TIMEOUT`]); a client that fails it (no
/// client certificate under mutual TLS, a version or suite not allowed) is closed and logged.
/// With `auth`, a request the authenticator refuses is answered from its headers alone (401 with
/// `WWW-Authenticate`, or gRPC UNAUTHENTICATED), its body never read, and counted and logged
/// without its credentials.
pub async fn serve<S, B>(
    listener: TcpListener,
    settings: ServerSettings,
    tls: Option<tokio_rustls::TlsAcceptor>,
    auth: Option<ServerAuth>,
    service: S,
    shutdown: CancellationToken,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let settings = Arc::new(settings);
    let builder = Arc::new(builder(&settings));
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let refusals = Arc::new(Refusals {
        count: AtomicU64::new(0),
        last_log: Mutex::new(None),
    });
    let service = Authenticated {
        inner: service,
        auth: auth.map(Arc::new),
        grpc: settings.http2_only,
        refusals: Arc::clone(&refusals),
        name: Arc::from(settings.name.as_str()),
    };
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.cancelled() => break,
        };
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, mostly: wait a little instead of spinning.
                refusals.note(&settings.name, &format!("accept failed: {err}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            refusals.note(
                &settings.name,
                "connection limit reached; new connections are closed (max_connections)",
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (builder, service, settings, shutdown) = (
            Arc::clone(&builder),
            service.clone(),
            Arc::clone(&settings),
            shutdown.clone(),
        );
        match tls.clone() {
            None => {
                connections.spawn(connection(
                    builder, stream, service, settings, shutdown, permit,
                ));
            }
            Some(acceptor) => {
                let refusals = Arc::clone(&refusals);
                connections.spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            connection(builder, stream, service, settings, shutdown, permit).await;
                        }
                        Ok(Err(err)) => {
                            refusals.note(&settings.name, &format!("tls handshake failed: {err}"));
                        }
                        Err(_) => {
                            refusals.note(&settings.name, "tls handshake timed out");
                        }
                    }
                });
            }
        }
    }
    while connections.join_next().await.is_some() {}
}

fn builder(settings: &ServerSettings) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.read_header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(settings.keepalive_interval)
        .keep_alive_timeout(
            settings
                .keepalive_timeout
                .unwrap_or(Duration::from_secs(20)),
        );
    if settings.http2_only {
        builder = builder.http2_only();
    }
    builder
}

/// Requests under way on one connection, and since when there were none.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
    abandoned: Abandoned,
}

/// Requests a client may abandon mid-body (HTTP/2 streams it resets) in a burst, and how many
/// more a second after that: past them the connection is sent away (GOAWAY), which ends an
/// HTTP/2 rapid-reset flood (CVE-2023-44487), where each reset stream makes the server start
/// work that no concurrent-stream limit bounds. A client whose calls time out now and then
/// stays far below.
const ABANDON_BURST: f64 = 1000.0;
const ABANDON_PER_SECOND: f64 = 100.0;

/// One connection's record of requests its client abandoned before their body arrived, kept in
/// each request's extensions; [`read_body`] notes each body that ends in an error.
#[derive(Clone, Debug)]
struct Abandoned(Arc<(Mutex<(f64, Instant)>, CancellationToken)>);

impl Abandoned {
    fn new() -> Self {
        Abandoned(Arc::new((
            Mutex::new((ABANDON_BURST, Instant::now())),
            CancellationToken::new(),
        )))
    }

    /// Notes one abandoned request; past the budget, the connection is asked to go away.
    fn note(&self) {
        let mut bucket = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, since) = &mut *bucket;
        *tokens = (*tokens + since.elapsed().as_secs_f64() * ABANDON_PER_SECOND).min(ABANDON_BURST);
        *since = Instant::now();
        *tokens -= 1.0;
        if *tokens < 0.0 {
            self.0.1.cancel();
        }
    }

    fn flooded(&self) -> &CancellationToken {
        &self.0.1
    }
}

impl Activity {
    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0)
            .then(|| *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Marks one request under way until dropped.
struct Active(Arc<Activity>);

impl Active {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Active(Arc::clone(activity))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Asks the listener's authenticator (if any) before a request reaches the service.
#[derive(Clone)]
struct Authenticated<S> {
    inner: S,
    auth: Option<Arc<ServerAuth>>,
    /// Answer refusals the gRPC way.
    grpc: bool,
    refusals: Arc<Refusals>,
    name: Arc<str>,
}

impl<S, B> tower::Service<Request<Incoming>> for Authenticated<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<Answer<B>>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        let Some(auth) = self.auth.clone() else {
            return self.pass(request);
        };
        let header = auth.authenticator.header();
        // The credential is taken out of the request: nothing after this layer (metadata
        // carried with the data, logs) ever holds it.
        let value = request.headers_mut().remove(header);
        if !auth.authenticator.blocks() {
            // A quick check (a token compared): decided here, and the service made ready by
            // `poll_ready` is the one called.
            return match auth
                .authenticator
                .authenticate(value.as_ref().map(http::HeaderValue::as_bytes))
            {
                Ok(info) => {
                    request.extensions_mut().insert(info);
                    self.pass(request)
                }
                Err(refusal) => {
                    let response = self.refuse(&auth, refusal, request);
                    Box::pin(async move { Ok(response) })
                }
            };
        }
        // A slow check (bcrypt) runs on the blocking pool, as many at once as there are cores,
        // so a flood of wrong passwords queues instead of stalling every listener; a clone of
        // the service is made ready and called once it is decided.
        let this = self.clone();
        Box::pin(async move {
            let outcome = {
                let _permit = auth.costly.acquire().await;
                let authenticator = Arc::clone(&auth.authenticator);
                tokio::task::spawn_blocking(move || {
                    authenticator.authenticate(value.as_ref().map(http::HeaderValue::as_bytes))
                })
                .await
                .unwrap_or(Err(AuthRefusal::Invalid))
            };
            match outcome {
                Ok(info) => {
                    request.extensions_mut().insert(info);
                    // `oneshot` waits for `poll_ready` before it calls.
                    let Ok(response) =
                        tower::ServiceExt::oneshot(this.inner.clone(), request).await;
                    Ok(response.map(http_body_util::Either::Left))
                }
                Err(refusal) => Ok(this.refuse(&auth, refusal, request)),
            }
        })
    }
}

impl<S, B> Authenticated<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
{
    /// Hands an admitted request to the service.
    fn pass(
        &mut self,
        request: Request<Incoming>,
    ) -> BoxFuture<'static, Result<Response<Answer<B>>, Infallible>> {
        let response = self.inner.call(request);
        Box::pin(async move {
            let Ok(response) = response.await;
            Ok(response.map(http_body_util::Either::Left))
        })
    }

    /// Counts and logs a refusal (without the credential) and answers it; the body is dropped
    /// unread: HTTP/2 resets the stream, HTTP/1 closes.
    fn refuse(
        &self,
        auth: &ServerAuth,
        refusal: AuthRefusal,
        request: Request<Incoming>,
    ) -> Response<Answer<B>> {
        auth.refused.increment(1);
        self.refusals
            .note(&self.name, &format!("request refused: {refusal}"));
        drop(request);
        refusal_response(
            self.grpc,
            &refusal.to_string(),
            auth.authenticator.challenge(),
        )
    }
}

/// A listener's answer: the service's body, or a refusal's.
type Answer<B> = http_body_util::Either<B, http_body_util::Full<Bytes>>;

/// 401 with a challenge, or a trailers-only gRPC UNAUTHENTICATED.
fn refusal_response<B2>(
    grpc: bool,
    reason: &str,
    challenge: &str,
) -> Response<http_body_util::Either<B2, http_body_util::Full<Bytes>>>
where
    B2: Body<Data = Bytes>,
{
    let builder = if grpc {
        Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header("grpc-status", "16")
            .header("grpc-message", format!("unauthenticated: {reason}"))
    } else {
        Response::builder()
            .status(401)
            .header(http::header::WWW_AUTHENTICATE, challenge)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
    };
    let body = if grpc {
        Bytes::new()
    } else {
        Bytes::from(format!("unauthenticated: {reason}\n"))
    };
    builder
        .body(http_body_util::Either::Right(http_body_util::Full::new(
            body,
        )))
        .unwrap_or_else(|_| {
            Response::new(http_body_util::Either::Right(http_body_util::Full::new(
                Bytes::new(),
            )))
        })
}

/// The service, counting requests under way so that idle connections can be told apart, and
/// giving each request its connection's [`ConnectionLoad`] (in its extensions).
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    load: ConnectionLoad,
}

impl<S, B> tower::Service<Request<B>> for Tracked<S>
where
    S: tower::Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.load.clone());
        request
            .extensions_mut()
            .insert(self.activity.abandoned.clone());
        let active = Active::new(&self.activity);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(active);
            response
        })
    }
}

async fn connection<S, B, I>(
    builder: Arc<Builder<TokioExecutor>>,
    stream: I,
    service: S,
    settings: Arc<ServerSettings>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let born = Instant::now();
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        idle_since: Mutex::new(born),
        abandoned: Abandoned::new(),
    });
    let service = TowerToHyperService::new(Tracked {
        inner: service,
        activity: Arc::clone(&activity),
        load: ConnectionLoad::default(),
    });
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let far = born + Duration::from_secs(100 * 365 * 24 * 3600);
    let age_deadline = settings.max_connection_age.map_or(far, |age| born + age);
    // Once the connection was asked to go away: when it is closed regardless.
    let mut closing: Option<Instant> = None;
    loop {
        let idle_check = activity
            .idle_since()
            .map_or(Instant::now() + settings.idle_timeout, |since| {
                since + settings.idle_timeout
            });
        // Asked to go away: HTTP/2 gets GOAWAY, HTTP/1 closes after the request under way.
        let grace = tokio::select! {
            _ = conn.as_mut() => return,
            () = shutdown.cancelled(), if closing.is_none() => SHUTDOWN_GRACE,
            () = tokio::time::sleep_until(idle_check), if closing.is_none() => {
                match activity.idle_since() {
                    Some(since) if since.elapsed() >= settings.idle_timeout => Duration::from_secs(1),
                    _ => continue,
                }
            }
            () = tokio::time::sleep_until(age_deadline), if closing.is_none() => {
                settings.max_connection_age_grace
            }
            () = activity.abandoned.flooded().cancelled(), if closing.is_none() => {
                tracing::warn!(listener = %settings.name, "a client abandoned requests faster than {ABANDON_PER_SECOND} a second (an HTTP/2 rapid-reset flood?); its connection is closed");
                Duration::ZERO
            }
            () = tokio::time::sleep_until(closing.unwrap_or(far)) => return,
        };
        conn.as_mut().graceful_shutdown();
        closing = Some(Instant::now() + grace);
    }
}

/// Why a request body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError<E> {
    /// More than the limit arrived.
    #[error("request body is larger than the {limit} byte limit")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body did not arrive in time.
    #[error("request body did not arrive within {0:?}")]
    TimedOut(Duration),
    /// The connection failed while the body was read.
    #[error("cannot read request body: {0}")]
    Read(Box<dyn std::error::Error + Send + Sync>),
    /// The caller's check on the bytes received so far refused them.
    #[error(transparent)]
    Refused(E),
}

/// Reads a request body into memory: at most `limit` bytes, all within `timeout` (one timer for
/// the whole body), calling `on_data` with everything received so far after each chunk, so the
/// caller can count the bytes against a memory budget as they arrive and look at a prefix as
/// soon as it is there. `on_data` returns the size the body is now expected to reach, and the
/// buffer is sized for it once (pass only what is already admitted; `capacity` is the first
/// expectation). A body that arrives in one chunk is returned without a copy.
///
/// # Errors
/// [`BodyError`]: too large, too slow, a broken connection, or what `on_data` returned.
pub async fn read_body<B, E>(
    request: Request<B>,
    limit: usize,
    capacity: usize,
    timeout: Duration,
    mut on_data: impl FnMut(&[u8]) -> Result<usize, E>,
) -> Result<Bytes, BodyError<E>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A body that ends in an error was abandoned by its client (an HTTP/2 stream reset, a
    // connection dropped): counted against the connection's budget, here for every receiver.
    let abandoned = request.extensions().get::<Abandoned>().cloned();
    let mut body = pin!(request.into_body());
    let mut deadline = pin!(tokio::time::sleep(timeout));
    let mut expected = capacity.min(limit);
    // The first chunk is kept as it came; the buffer is made only when a second one arrives.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        let frame = tokio::select! {
            biased;
            frame = BodyExt::frame(&mut body) => frame,
            () = &mut deadline => return Err(BodyError::TimedOut(timeout)),
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                if let Some(abandoned) = &abandoned {
                    abandoned.note();
                }
                return Err(BodyError::Read(e.into()));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        let received = first.as_ref().map_or(buf.len(), Bytes::len);
        if received.saturating_add(data.len()) > limit {
            return Err(BodyError::TooLarge { limit });
        }
        let wants = if received == 0 && first.is_none() {
            let wants = on_data(&data).map_err(BodyError::Refused)?;
            first = Some(data);
            wants
        } else {
            if let Some(head) = first.take() {
                buf.reserve(expected.max(head.len() + data.len()).min(limit));
                buf.extend_from_slice(&head);
            }
            buf.extend_from_slice(&data);
            on_data(&buf).map_err(BodyError::Refused)?
        };
        expected = expected.max(wants).min(limit);
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// Reads and drops a body (frame by frame, never holding it) for up to `timeout`, so that a
/// refusal sent after it is seen by clients that do not read responses mid-upload.
pub async fn discard<B: Body>(body: B, limit: usize, timeout: Duration) {
    let mut body = pin!(body);
    let mut seen = 0usize;
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(frame)) = body.as_mut().frame().await {
            seen += frame.data_ref().map_or(0, Buf::remaining);
            if seen > limit {
                return;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn abandoned_requests_past_the_burst_and_rate_flag_the_connection() {
        let abandoned = Abandoned::new();
        for _ in 0..ABANDON_BURST as usize {
            abandoned.note();
        }
        assert!(!abandoned.flooded().is_cancelled(), "the burst is allowed");
        // A second later, another 100 are.
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..ABANDON_PER_SECOND as usize {
            abandoned.note();
        }
        assert!(!abandoned.flooded().is_cancelled());
        abandoned.note();
        assert!(abandoned.flooded().is_cancelled(), "one more than the rate");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_abandons_a_few_calls_a_second_is_never_flagged() {
        let abandoned = Abandoned::new();
        for _ in 0..3600 {
            for _ in 0..50 {
                abandoned.note();
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert!(!abandoned.flooded().is_cancelled());
    }
}
