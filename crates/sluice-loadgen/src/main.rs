//! `sluice-loadgen`: sends realistic OTLP load to a collector (`send`) and counts what a collector
//! delivers (`sink`), for benchmarks and soak tests. In the spirit of the Collector's
//! telemetrygen, with pre-encoded request pools so that the generator itself is cheap.
//!
//! The sink also plays a Jaeger collector: it accepts `jaeger.api_v2.CollectorService/PostSpans`
//! on its gRPC port and counts the spans. With `send --fresh-timestamps` every request's
//! timestamps are moved forward with the clock, for backends (Prometheus remote-write) that refuse
//! old or repeated samples.

mod timestamps;

use std::collections::BTreeMap;

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::extract::{Request, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use sluice_core::Signal;
use sluice_net::{Compression, CompressionParams, Compressor, Message, RawCodec, UnaryClient};

#[derive(Parser)]
#[command(
    name = "sluice-loadgen",
    version,
    about = "OTLP load generator and counting sink"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum SignalArg {
    Traces,
    Metrics,
    Logs,
}

impl From<SignalArg> for Signal {
    fn from(s: SignalArg) -> Signal {
        match s {
            SignalArg::Traces => Signal::Traces,
            SignalArg::Metrics => Signal::Metrics,
            SignalArg::Logs => Signal::Logs,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CompressionArg {
    None,
    Gzip,
    Zstd,
    Snappy,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Compression {
        match c {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::Snappy => Compression::Snappy,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    Grpc,
    Http,
}

#[derive(Subcommand)]
enum Command {
    /// Sends OTLP load and prints a JSON summary.
    Send {
        /// What to send.
        #[arg(long, value_enum, default_value = "traces")]
        signal: SignalArg,
        /// OTLP/gRPC or OTLP/HTTP (protobuf).
        #[arg(long, value_enum, default_value = "grpc")]
        protocol: Protocol,
        /// Base URL (default http://127.0.0.1:4317 for gRPC, http://127.0.0.1:4318 for HTTP).
        #[arg(long)]
        endpoint: Option<String>,
        /// Compress requests (once, when the pool is made: the load generator's own cost stays
        /// out of the measurement): gzip at level 1, zstd at level 3, Snappy (block format over
        /// HTTP, framed over gRPC), as sluice's exporters send them.
        #[arg(long, value_enum, default_value = "none")]
        compression: CompressionArg,
        /// Requests in flight (closed loop), or the most in flight at a fixed rate.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Fixed rate in items (spans, data points, log records) per second; closed loop when absent.
        #[arg(long)]
        rate: Option<f64>,
        /// How long to send.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Stop after this many requests instead.
        #[arg(long)]
        count: Option<u64>,
        /// Items per request.
        #[arg(long, default_value_t = 100)]
        items: usize,
        /// Distinct pre-encoded requests to cycle through.
        #[arg(long, default_value_t = 32)]
        pool: usize,
        /// Per-request timeout.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Allow targets that are not on this machine.
        #[arg(long)]
        allow_remote: bool,
        /// Shift every request's timestamps by the time elapsed since the pool was generated, so
        /// that resent requests carry current, increasing timestamps (for backends such as
        /// Prometheus remote-write that refuse out-of-order or duplicate samples).
        #[arg(long)]
        fresh_timestamps: bool,
        /// Give every request sent its own trace ids (spans and log records): the pooled ids
        /// with the request's sequence number mixed into their first 8 bytes, so the spans of one
        /// trace stay together in a request and no two requests share a trace (for a tail
        /// sampler, which would otherwise see the same few traces again and again).
        #[arg(long)]
        fresh_trace_ids: bool,
        /// With an `https://` endpoint: trust this CA (PEM) for the server's certificate.
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
    },
    /// Runs an OTLP sink that counts what it receives, and also accepts Jaeger
    /// `PostSpans` (jaeger.api_v2 gRPC) on its gRPC port; `GET /stats` on the HTTP port reports.
    Sink {
        /// OTLP/gRPC (and Jaeger PostSpans) listen address.
        #[arg(long, default_value = "127.0.0.1:14317")]
        grpc: String,
        /// OTLP/HTTP listen address (also serves `/stats`).
        #[arg(long, default_value = "127.0.0.1:14318")]
        http: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Send {
                signal,
                protocol,
                endpoint,
                compression,
                concurrency,
                rate,
                duration,
                count,
                items,
                pool,
                timeout,
                allow_remote,
                fresh_timestamps,
                fresh_trace_ids,
                ca_file,
            } => {
                let endpoint = endpoint.unwrap_or_else(|| match protocol {
                    Protocol::Grpc => "http://127.0.0.1:4317".to_owned(),
                    Protocol::Http => "http://127.0.0.1:4318".to_owned(),
                });
                if !allow_remote {
                    ensure_loopback(&endpoint)?;
                }
                let settings = Settings {
                    signal: signal.into(),
                    protocol,
                    endpoint,
                    compressor: Compressor::new(compression.into(), CompressionParams::default())
                        .map_err(anyhow::Error::msg)?,
                    concurrency: concurrency.max(1),
                    rate,
                    duration,
                    count,
                    items: items.max(1),
                    pool: pool.max(1),
                    timeout,
                    fresh_timestamps,
                    fresh_trace_ids,
                    ca: ca_file
                        .map(|f| {
                            std::fs::read(&f)
                                .with_context(|| format!("cannot read {}", f.display()))
                        })
                        .transpose()?,
                };
                let summary = send(settings).await?;
                println!("{summary}");
                Ok(())
            }
            Command::Sink { grpc, http } => sink(&grpc, &http).await,
        }
    })
}

/// Refuses targets that do not resolve to loopback addresses only.
fn ensure_loopback(endpoint: &str) -> anyhow::Result<()> {
    let uri: http::Uri = endpoint.parse().context("invalid endpoint")?;
    let host = uri.host().context("endpoint has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        bail!("{endpoint} is not on this machine; pass --allow-remote to send load elsewhere");
    }
    Ok(())
}

struct Settings {
    signal: Signal,
    protocol: Protocol,
    endpoint: String,
    compressor: Compressor,
    concurrency: usize,
    rate: Option<f64>,
    duration: Duration,
    count: Option<u64>,
    items: usize,
    pool: usize,
    timeout: Duration,
    fresh_timestamps: bool,
    fresh_trace_ids: bool,
    /// The PEM CA to trust for `https://` endpoints.
    ca: Option<Vec<u8>>,
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    requests: u64,
    accepted: u64,
    refused: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    latencies_us: Vec<u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.accepted += other.accepted;
        for (k, v) in other.refused {
            *self.refused.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latencies_us.extend(other.latencies_us);
    }
}

enum Client {
    Grpc(UnaryClient),
    Http(reqwest::Client, String, Compressor),
}

/// One request ready to send: a gRPC message (compressed or not, with its flag), or an HTTP body.
#[derive(Clone)]
enum Prepared {
    Grpc(Message),
    Http(Bytes),
}

impl Client {
    async fn new(s: &Settings) -> anyhow::Result<Client> {
        Ok(match s.protocol {
            Protocol::Grpc => {
                let mut endpoint = tonic::transport::Endpoint::from_shared(s.endpoint.clone())?
                    .timeout(s.timeout)
                    .tcp_nodelay(true);
                if let Some(ca) = &s.ca {
                    endpoint = endpoint.tls_config(
                        tonic::transport::ClientTlsConfig::new()
                            .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
                    )?;
                }
                let channel = endpoint
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to {}", s.endpoint))?;
                Client::Grpc(UnaryClient::new(
                    channel,
                    s.signal.grpc_path(),
                    tonic::metadata::MetadataMap::new(),
                    s.compressor,
                ))
            }
            Protocol::Http => Client::Http(
                {
                    let mut builder = reqwest::Client::builder().timeout(s.timeout);
                    if let Some(ca) = &s.ca {
                        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(ca)?);
                    }
                    builder.build()?
                },
                format!(
                    "{}{}",
                    s.endpoint.trim_end_matches('/'),
                    s.signal.http_path()
                ),
                s.compressor,
            ),
        })
    }

    /// `body` made ready to send: compressed as configured.
    fn prepare(&self, body: Bytes) -> anyhow::Result<Prepared> {
        Ok(match self {
            Client::Grpc(grpc) => {
                Prepared::Grpc(grpc.prepare(body).map_err(|e| anyhow::anyhow!(e.message))?)
            }
            Client::Http(_, _, compressor) => Prepared::Http(
                compressor
                    .compress(&body, false)
                    .map_err(|e| anyhow::anyhow!(e.message))?
                    .unwrap_or(body),
            ),
        })
    }

    /// Sends one request; `Ok(None)` when accepted, `Ok(Some(code))` when refused.
    async fn send(&self, request: &Prepared) -> Result<Option<String>, String> {
        match (self, request) {
            (Client::Grpc(grpc), Prepared::Grpc(message)) => match grpc.call(message).await {
                Ok(_) => Ok(None),
                // A status from the server reads `Code: message`; the client's own failures
                // (connecting, the transport, the timeout) are errors, not refusals.
                Err(e) if e.message.starts_with("cannot connect") => Err("connection".into()),
                Err(e) if e.message.starts_with("transport error") => Err(
                    if e.message.contains("timed out") || e.message.contains("timeout") {
                        "timeout".into()
                    } else {
                        "connection".into()
                    },
                ),
                Err(e) => Ok(Some(
                    e.message.split(':').next().unwrap_or_default().to_owned(),
                )),
            },
            (Client::Http(client, url, compressor), Prepared::Http(body)) => {
                let mut r = client
                    .post(url)
                    .header("content-type", "application/x-protobuf");
                if let Some(encoding) = compressor.encoding() {
                    r = r.header("content-encoding", encoding);
                }
                match r.body(body.clone()).send().await {
                    Ok(resp) if resp.status().is_success() => Ok(None),
                    Ok(resp) => Ok(Some(resp.status().as_u16().to_string())),
                    Err(e) => Err(if e.is_timeout() {
                        "timeout".into()
                    } else {
                        "connection".into()
                    }),
                }
            }
            _ => Err("a request prepared for another protocol".into()),
        }
    }
}

/// The requests `send` cycles through, and how to make each one ready to send.
struct Pool {
    /// The requests, prepared (compressed) up front; with fresh timestamps, the encoded requests,
    /// prepared as they are sent.
    bodies: Vec<Prepared>,
    /// With `--fresh-timestamps`, how to move each request's timestamps forward.
    fresh: Option<Fresh>,
}

/// What `--fresh-timestamps` needs to shift a pooled request at send time.
struct Fresh {
    /// The encoded requests.
    requests: Vec<Bytes>,
    /// Per request, the offsets of its non-zero timestamp fields (none without
    /// `--fresh-timestamps`).
    offsets: Vec<Vec<usize>>,
    /// Per request, the offsets of its trace ids (none without `--fresh-trace-ids`).
    trace_ids: Vec<Vec<usize>>,
    /// When the pool's timestamps were generated (the shift is the time elapsed since).
    base: Instant,
}

impl Pool {
    /// Generates and encodes the pool, and prepares (compresses) it once, up front, unless the
    /// timestamps change per request.
    fn new(s: &Settings, client: &Client) -> anyhow::Result<Pool> {
        let base = Instant::now();
        let requests: Vec<Bytes> =
            sluice_fixtures::pool(s.signal, s.items, s.pool, sluice_fixtures::now_nanos())
                .into_iter()
                .map(Bytes::from)
                .collect();
        if s.fresh_timestamps || s.fresh_trace_ids {
            let offsets = if s.fresh_timestamps {
                requests
                    .iter()
                    .map(|r| timestamps::offsets(s.signal, r))
                    .collect::<Result<Vec<_>, _>>()
                    .context("cannot locate the timestamps of a generated request")?
            } else {
                Vec::new()
            };
            let trace_ids = if s.fresh_trace_ids {
                requests
                    .iter()
                    .map(|r| timestamps::trace_ids(s.signal, r))
                    .collect::<Result<Vec<_>, _>>()
                    .context("cannot locate the trace ids of a generated request")?
            } else {
                Vec::new()
            };
            Ok(Pool {
                bodies: Vec::new(),
                fresh: Some(Fresh {
                    requests,
                    offsets,
                    trace_ids,
                    base,
                }),
            })
        } else {
            Ok(Pool {
                bodies: requests
                    .into_iter()
                    .map(|b| client.prepare(b))
                    .collect::<anyhow::Result<_>>()?,
                fresh: None,
            })
        }
    }

    /// The `i`-th request (cyclically), ready to send: with fresh timestamps, shifted by the
    /// time elapsed since the pool was generated (a monotonic clock, so the shift never goes
    /// back) and prepared.
    fn body(&self, i: usize, client: &Client) -> Result<Prepared, String> {
        let Some(fresh) = &self.fresh else {
            return Ok(self.bodies[i % self.bodies.len()].clone());
        };
        let sequence = i as u64;
        let i = i % fresh.requests.len();
        let shift = u64::try_from(fresh.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let offsets = fresh.offsets.get(i).map_or(&[][..], Vec::as_slice);
        let mut shifted = timestamps::shifted(&fresh.requests[i], offsets, shift);
        if let Some(ids) = fresh.trace_ids.get(i) {
            shifted = timestamps::with_trace_ids(&shifted, ids, sequence);
        }
        client.prepare(shifted).map_err(|e| e.to_string())
    }
}

async fn send(s: Settings) -> anyhow::Result<serde_json::Value> {
    let client = Arc::new(Client::new(&s).await?);
    let pool = Arc::new(Pool::new(&s, &client)?);
    let started = Instant::now();
    let deadline = started + s.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let limit = s.count.unwrap_or(u64::MAX);
    let mut total = Tally::default();
    match s.rate {
        None => {
            let workers: Vec<_> = (0..s.concurrency)
                .map(|w| {
                    let (client, pool, issued) = (client.clone(), pool.clone(), issued.clone());
                    tokio::spawn(async move {
                        let mut tally = Tally::default();
                        let mut i = w;
                        while Instant::now() < deadline
                            && issued.fetch_add(1, Ordering::Relaxed) < limit
                        {
                            let body = pool.body(i, &client);
                            i += 1;
                            let t = Instant::now();
                            let r = match body {
                                Ok(body) => client.send(&body).await,
                                Err(e) => Err(e),
                            };
                            record(&mut tally, r, t.elapsed());
                        }
                        tally
                    })
                })
                .collect();
            for w in workers {
                total.merge(w.await?);
            }
        }
        Some(rate) => {
            let per_request = Duration::from_secs_f64(s.items as f64 / rate.max(0.001));
            let mut ticker = tokio::time::interval(per_request);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let slots = Arc::new(tokio::sync::Semaphore::new(s.concurrency.max(64)));
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Tally>();
            let mut i = 0usize;
            let mut skipped = 0u64;
            while Instant::now() < deadline && (i as u64) < limit {
                ticker.tick().await;
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    skipped += 1;
                    continue;
                };
                let (client, pool, tx) = (client.clone(), pool.clone(), tx.clone());
                let n = i;
                i += 1;
                tokio::spawn(async move {
                    let body = pool.body(n, &client);
                    let mut tally = Tally::default();
                    let t = Instant::now();
                    let r = match body {
                        Ok(body) => client.send(&body).await,
                        Err(e) => Err(e),
                    };
                    record(&mut tally, r, t.elapsed());
                    let _ = tx.send(tally);
                    drop(permit);
                });
            }
            drop(tx);
            while let Some(t) = rx.recv().await {
                total.merge(t);
            }
            if skipped > 0 {
                *total.errors.entry("rate_not_reached".into()).or_default() += skipped;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat = std::mem::take(&mut total.latencies_us);
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i.min(lat.len() - 1)] as f64 / 1000.0
    };
    let items = s.items as u64;
    Ok(serde_json::json!({
        "signal": s.signal.as_str(),
        "protocol": if s.protocol == Protocol::Grpc { "grpc" } else { "http" },
        "compression": s.compressor.encoding().unwrap_or("none"),
        "fresh_timestamps": s.fresh_timestamps,
        "fresh_trace_ids": s.fresh_trace_ids,
        "seconds": elapsed,
        "requests_sent": total.requests,
        "items_sent": total.requests * items,
        "requests_accepted": total.accepted,
        "items_accepted": total.accepted * items,
        "items_accepted_per_second": (total.accepted * items) as f64 / elapsed.max(1e-9),
        "refused": total.refused,
        "errors": total.errors,
        "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0)},
    }))
}

fn record(tally: &mut Tally, r: Result<Option<String>, String>, latency: Duration) {
    tally.requests += 1;
    tally.latencies_us.push(latency.as_micros() as u64);
    match r {
        Ok(None) => tally.accepted += 1,
        Ok(Some(code)) => *tally.refused.entry(code).or_default() += 1,
        Err(e) => *tally.errors.entry(e).or_default() += 1,
    }
}

/// Requests and items a sink counted per signal, Jaeger `PostSpans` requests and spans, and
/// how the requests arrived compressed (`grpc-encoding` / `Content-Encoding`, `identity` when
/// not), so that a benchmark can check what each collector really sends.
#[derive(Default)]
struct Counts {
    requests: [AtomicU64; 3],
    items: [AtomicU64; 3],
    jaeger_requests: AtomicU64,
    jaeger_spans: AtomicU64,
    encodings: std::sync::Mutex<BTreeMap<String, Encoding>>,
}

/// Requests that arrived with one compression, and their bytes on the wire (gRPC: with each
/// message's 5-byte prefix), for bytes per item beside the CPU each compression costs.
#[derive(Default, Clone, Copy)]
struct Encoding {
    requests: u64,
    bytes: u64,
}

fn index(signal: Signal) -> usize {
    match signal {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

impl Counts {
    fn add(&self, signal: Signal, data: &[u8]) {
        let i = index(signal);
        self.requests[i].fetch_add(1, Ordering::Relaxed);
        self.items[i].fetch_add(
            sluice_core::wire::count(signal, data) as u64,
            Ordering::Relaxed,
        );
    }

    /// Counts a request that arrived with this compression header (absent: `identity`), and
    /// counts its body's bytes as they are read: the request to hand on.
    fn add_encoding(self: &Arc<Self>, request: Request, header: &str) -> Request {
        let header = request.headers().get(header);
        let name = header
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "identity".to_owned());
        self.encodings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name.clone())
            .or_default()
            .requests += 1;
        let counts = self.clone();
        request.map(move |body| {
            use http_body_util::BodyExt as _;
            axum::body::Body::new(body.map_frame(move |frame| {
                if let Some(data) = frame.data_ref() {
                    counts
                        .encodings
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(name.clone())
                        .or_default()
                        .bytes += data.len() as u64;
                }
                frame
            }))
        })
    }

    /// Counts one well-formed Jaeger `PostSpans` request of `spans` spans.
    fn add_jaeger(&self, spans: u64) {
        self.jaeger_requests.fetch_add(1, Ordering::Relaxed);
        self.jaeger_spans.fetch_add(spans, Ordering::Relaxed);
    }

    fn json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for signal in Signal::ALL {
            let i = index(signal);
            out.insert(
                signal.as_str().to_owned(),
                serde_json::json!({
                    "requests": self.requests[i].load(Ordering::Relaxed),
                    "items": self.items[i].load(Ordering::Relaxed),
                }),
            );
        }
        out.insert(
            "jaeger".to_owned(),
            serde_json::json!({
                "requests": self.jaeger_requests.load(Ordering::Relaxed),
                "spans": self.jaeger_spans.load(Ordering::Relaxed),
            }),
        );
        let encodings = self
            .encodings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, e)| (name.clone(), e.requests))
            .collect::<BTreeMap<_, _>>();
        out.insert("encodings".to_owned(), serde_json::json!(encodings));
        let bytes = self
            .encodings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, e)| (name.clone(), e.bytes))
            .collect::<BTreeMap<_, _>>();
        out.insert("wire_bytes".to_owned(), serde_json::json!(bytes));
        serde_json::Value::Object(out)
    }
}

struct Count(Arc<Counts>, Signal);

impl tonic::server::UnaryService<Bytes> for Count {
    type Response = Bytes;
    type Future = futures::future::Ready<Result<tonic::Response<Bytes>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        self.0.add(self.1, request.get_ref());
        futures::future::ready(Ok(tonic::Response::new(Bytes::new())))
    }
}

/// The bytes of an embedded message field (an error for other wire types), for the walks over
/// encoded requests here and in [`timestamps`].
fn embedded<'a>(field: &sluice_core::wire::Field<'a>) -> anyhow::Result<&'a [u8]> {
    if field.wire_type != sluice_core::wire::WireType::Len {
        anyhow::bail!(
            "field {} is {:?}, not an embedded message",
            field.number,
            field.wire_type
        );
    }
    Ok(field.payload)
}

/// The gRPC path of the Jaeger collector's `PostSpans`.
const JAEGER_POST_SPANS: &str = "/jaeger.api_v2.CollectorService/PostSpans";

/// Counts the spans of an encoded `jaeger.api_v2.PostSpansRequest`: `batch` (field 1) →
/// `Batch.spans` (field 1, repeated); `Batch.process` (field 2) and unknown fields are skipped.
/// Each span must itself be a well-formed message.
fn jaeger_spans(request: &[u8]) -> anyhow::Result<u64> {
    let mut spans = 0;
    for field in sluice_core::wire::fields(request) {
        let field = field?;
        if field.number != 1 {
            continue;
        }
        for field in sluice_core::wire::fields(embedded(&field)?) {
            let field = field?;
            if field.number != 1 {
                continue;
            }
            for f in sluice_core::wire::fields(embedded(&field)?) {
                f?;
            }
            spans += 1;
        }
    }
    Ok(spans)
}

/// Counts Jaeger `PostSpans` requests; replies with an empty `PostSpansResponse`.
struct JaegerCount(Arc<Counts>);

impl tonic::server::UnaryService<Bytes> for JaegerCount {
    type Response = Bytes;
    type Future = futures::future::Ready<Result<tonic::Response<Bytes>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        futures::future::ready(match jaeger_spans(request.get_ref()) {
            Ok(spans) => {
                self.0.add_jaeger(spans);
                Ok(tonic::Response::new(Bytes::new()))
            }
            Err(e) => Err(tonic::Status::invalid_argument(format!(
                "malformed PostSpansRequest: {e}"
            ))),
        })
    }
}

/// The largest request the sink takes, compressed or not.
const MAX_BODY: usize = 256 << 20;

/// Serves one unary gRPC call with raw bytes in and out.
async fn grpc_unary<S>(service: S, request: Request) -> axum::response::Response
where
    S: tonic::server::UnaryService<Bytes, Response = Bytes>,
{
    let mut grpc = tonic::server::Grpc::new(RawCodec)
        .apply_compression_config(sluice_net::tonic_accept_encodings(), Default::default())
        .apply_max_message_size_config(Some(MAX_BODY), None);
    grpc.unary(service, request)
        .await
        .map(axum::body::Body::new)
}

async fn grpc_export(
    signal: Signal,
    counts: Arc<Counts>,
    request: Request,
) -> axum::response::Response {
    let request = counts.add_encoding(request, "grpc-encoding");
    grpc_unary(Count(counts, signal), request).await
}

async fn http_export(
    signal: Signal,
    counts: Arc<Counts>,
    request: Request,
) -> axum::response::Response {
    let request = counts.add_encoding(request, "content-encoding");
    let coding = match request
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str())
    {
        None => None,
        Some(Ok(name)) if name.eq_ignore_ascii_case("identity") => None,
        Some(Ok(name)) => match sluice_net::Coding::from_http(&name.to_ascii_lowercase()) {
            Some(coding) => Some(coding),
            None => {
                return (http::StatusCode::UNSUPPORTED_MEDIA_TYPE, "unknown encoding")
                    .into_response();
            }
        },
        Some(Err(_)) => {
            return (http::StatusCode::BAD_REQUEST, "bad content-encoding").into_response();
        }
    };
    let Ok(body) = axum::body::to_bytes(request.into_body(), MAX_BODY).await else {
        return (http::StatusCode::PAYLOAD_TOO_LARGE, "too large").into_response();
    };
    let body = match coding {
        None => body,
        Some(coding) => match sluice_net::decompress(coding, &body, MAX_BODY) {
            Ok(Some(out)) => Bytes::from(out),
            Ok(None) => {
                return (http::StatusCode::PAYLOAD_TOO_LARGE, "too large").into_response();
            }
            Err(e) => {
                return (
                    http::StatusCode::BAD_REQUEST,
                    format!("bad {}: {e}", coding.name()),
                )
                    .into_response();
            }
        },
    };
    counts.add(signal, &body);
    (
        [("content-type", "application/x-protobuf")],
        Vec::<u8>::new(),
    )
        .into_response()
}

async fn sink(grpc: &str, http_addr: &str) -> anyhow::Result<()> {
    let counts = Arc::new(Counts::default());
    let mut grpc_router = Router::new();
    let mut http_router = Router::new();
    for signal in Signal::ALL {
        let c = counts.clone();
        grpc_router = grpc_router.route(
            signal.grpc_path(),
            post(move |r: Request| grpc_export(signal, c.clone(), r)),
        );
        let c = counts.clone();
        http_router = http_router.route(
            signal.http_path(),
            post(move |r: Request| http_export(signal, c.clone(), r)),
        );
    }
    let c = counts.clone();
    grpc_router = grpc_router.route(
        JAEGER_POST_SPANS,
        post(move |r: Request| {
            let r = c.add_encoding(r, "grpc-encoding");
            grpc_unary(JaegerCount(c.clone()), r)
        }),
    );
    let stats = counts.clone();
    let http_router = http_router
        .route(
            "/stats",
            get(move |State(()): State<()>| {
                let stats = stats.clone();
                async move { axum::Json(stats.json()) }
            }),
        )
        .with_state(());
    let g = tokio::net::TcpListener::bind(grpc)
        .await
        .with_context(|| format!("cannot bind {grpc}"))?;
    let h = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot bind {http_addr}"))?;
    eprintln!("sink: gRPC on {grpc} (OTLP and Jaeger PostSpans), HTTP on {http_addr} (GET /stats)");
    let g = tokio::spawn(async move { axum::serve(g, grpc_router).await });
    let h = tokio::spawn(async move { axum::serve(h, http_router).await });
    tokio::select! {
        _ = g => {}
        _ = h => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("{}", counts.json());
    Ok(())
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use sluice_jaeger::proto::{Batch, PostSpansRequest, Process, Span};

    use super::*;

    fn request(spans: usize) -> Vec<u8> {
        PostSpansRequest {
            batch: Some(Batch {
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: vec![1; 16],
                        span_id: vec![i as u8 + 1; 8],
                        operation_name: format!("op-{i}"),
                        ..Default::default()
                    })
                    .collect(),
                process: Some(Process {
                    service_name: "svc".into(),
                    tags: Vec::new(),
                }),
            }),
        }
        .encode_to_vec()
    }

    #[test]
    fn counts_jaeger_spans() {
        assert_eq!(jaeger_spans(&request(3)).unwrap(), 3);
    }

    #[test]
    fn empty_jaeger_request_counts_zero() {
        assert_eq!(
            jaeger_spans(&PostSpansRequest::default().encode_to_vec()).unwrap(),
            0
        );
        assert_eq!(jaeger_spans(&[]).unwrap(), 0);
        let empty_batch = PostSpansRequest {
            batch: Some(Batch::default()),
        };
        assert_eq!(jaeger_spans(&empty_batch.encode_to_vec()).unwrap(), 0);
    }

    #[test]
    fn truncated_jaeger_request_is_an_error() {
        let full = request(3);
        for n in 1..full.len() {
            assert!(jaeger_spans(&full[..n]).is_err(), "prefix of {n} bytes");
        }
    }

    #[test]
    fn malformed_jaeger_request_is_refused_and_not_counted() {
        let counts = Arc::new(Counts::default());
        let mut service = JaegerCount(counts.clone());
        let full = request(3);
        let refused = tonic::server::UnaryService::call(
            &mut service,
            tonic::Request::new(Bytes::copy_from_slice(&full[..full.len() - 1])),
        )
        .into_inner();
        let status = refused.err().unwrap();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("malformed PostSpansRequest"));
        let accepted =
            tonic::server::UnaryService::call(&mut service, tonic::Request::new(Bytes::from(full)))
                .into_inner();
        assert!(accepted.unwrap().get_ref().is_empty());
        let stats = counts.json();
        assert_eq!(stats["jaeger"]["requests"], 1);
        assert_eq!(stats["jaeger"]["spans"], 3);
        assert_eq!(stats["traces"]["items"], 0);
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// The load generator sends each compression over each protocol, and the sink decompresses
    /// it, counts every item, and reports how the requests arrived and their bytes on the wire.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_compression_is_sent_and_counted_with_its_wire_bytes() {
        let (grpc, http) = (free_port(), free_port());
        let sink_task = tokio::spawn(async move {
            sink(&format!("127.0.0.1:{grpc}"), &format!("127.0.0.1:{http}")).await
        });
        let stats = || async move {
            let body = reqwest::get(format!("http://127.0.0.1:{http}/stats"))
                .await
                .map_err(|e| e.to_string())?
                .bytes()
                .await
                .map_err(|e| e.to_string())?;
            serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| e.to_string())
        };
        for _ in 0..100 {
            if stats().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // tonic's server (the sink's gRPC side) takes gzip and zstd; the HTTP side every coding.
        let cases = [
            (Protocol::Grpc, Compression::None, "identity"),
            (Protocol::Grpc, Compression::Gzip, "gzip"),
            (Protocol::Grpc, Compression::Zstd, "zstd"),
            (Protocol::Http, Compression::None, "identity"),
            (Protocol::Http, Compression::Gzip, "gzip"),
            (Protocol::Http, Compression::Zstd, "zstd"),
            (Protocol::Http, Compression::Snappy, "snappy"),
        ];
        for (n, (protocol, compression, name)) in cases.into_iter().enumerate() {
            let port = if protocol == Protocol::Grpc {
                grpc
            } else {
                http
            };
            let summary = send(Settings {
                signal: Signal::Logs,
                protocol,
                endpoint: format!("http://127.0.0.1:{port}"),
                compressor: Compressor::new(compression, CompressionParams::default()).unwrap(),
                concurrency: 2,
                rate: None,
                duration: Duration::from_secs(30),
                count: Some(4),
                items: 50,
                pool: 2,
                timeout: Duration::from_secs(10),
                fresh_timestamps: n % 2 == 0,
                fresh_trace_ids: n % 2 == 1,
                ca: None,
            })
            .await
            .unwrap();
            assert_eq!(summary["items_accepted"], 200, "{name}: {summary}");
            let s = stats().await.unwrap();
            assert_eq!(s["logs"]["items"], 200 * (n as u64 + 1), "{name}: {s}");
        }
        let s = stats().await.unwrap();
        // identity: 4 gRPC and 4 HTTP requests; each compression 4 or 8.
        assert_eq!(
            s["encodings"],
            serde_json::json!({"gzip": 8, "identity": 8, "snappy": 4, "zstd": 8})
        );
        // Per request, compressed requests arrive smaller, and gzip and zstd smaller than Snappy.
        let per_request = |name: &str| {
            s["wire_bytes"][name].as_u64().unwrap() / s["encodings"][name].as_u64().unwrap()
        };
        assert!(per_request("identity") > per_request("snappy"), "{s}");
        assert!(per_request("snappy") > per_request("gzip"), "{s}");
        assert!(per_request("snappy") > per_request("zstd"), "{s}");
        sink_task.abort();
    }
}
