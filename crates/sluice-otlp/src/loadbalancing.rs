//! The `loadbalancing` exporter (also spelled `load_balancing`): the gateway tier's router. Each
//! item goes, by its routing key (trace id, service, resource, metric or attributes), to the
//! backend that owns the key on a consistent-hash ring of the resolved backends, over the `otlp`
//! exporter's protocol.
//!
//! The ring is the Collector's (CRC-32 of each endpoint and a point index, 100 points an endpoint
//! on 36,000 positions; CRC-32 of the key), so sluice agents and Collector agents in one fleet
//! route a trace to the same gateway.
//!
//! What the Collector's users lose data to, and what sluice does instead:
//! - Its queue sits in front of the ring, not in each backend's exporter: a backend that leaves
//!   takes nothing queued with it; what was waiting is routed to the key's new owner when sent.
//! - A backend that fails is skipped for a backoff (1 s, doubling to 30 s) and its share goes to
//!   the next owner on the ring until it answers again; the items moved are counted.
//! - The DNS resolver never stops: a failed or empty answer keeps the last good list and the
//!   loop goes on.
//! - A batch part delivered is not sent again when another part is retried.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::{HumanDuration, Problem};
use sluice_core::auth::ClientAuthenticator;
use sluice_core::view::{AnyValue, Context, Item};
use sluice_core::{
    Batch, BatchBuilder, BuildError, BuiltExporter, ExportError, Exporter, ExporterContext,
    ExporterFactory, HelperSettings, typed,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exporter::{GrpcExporter, OtlpExporterConfig, grpc_exporter};

/// `exporters.loadbalancing`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancingConfig {
    /// `traceID` (default), `service`, `resource`, `metric` or `attributes`.
    #[serde(default)]
    pub routing_key: RoutingKey,
    /// With `routing_key: attributes`: the attributes (of the item, else its resource) whose
    /// values make the key.
    #[serde(default)]
    pub routing_attributes: Vec<String>,
    /// `otlp`: the settings of sluice's `otlp` exporter, without `endpoint`.
    pub protocol: Protocol,
    /// Where the backends come from.
    pub resolver: ResolverConfig,
}

/// `routing_key`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum RoutingKey {
    /// The trace id (spans, log records).
    #[default]
    #[serde(rename = "traceID")]
    TraceId,
    /// The resource's `service.name`.
    #[serde(rename = "service")]
    Service,
    /// The whole resource.
    #[serde(rename = "resource")]
    Resource,
    /// The metric's name (metrics).
    #[serde(rename = "metric")]
    Metric,
    /// The values of `routing_attributes`.
    #[serde(rename = "attributes")]
    Attributes,
    /// The Collector's per-stream key: refused by `sluice validate`.
    #[serde(rename = "streamID")]
    StreamId,
}

/// `protocol`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocol {
    /// The `otlp` exporter's settings for every backend.
    #[serde(default)]
    pub otlp: Value,
}

/// `resolver`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverConfig {
    /// A fixed list.
    #[serde(default, rename = "static")]
    pub fixed: Option<StaticResolver>,
    /// A name whose addresses are the backends (a Kubernetes headless service resolves so).
    #[serde(default)]
    pub dns: Option<DnsResolver>,
    /// Refused: use `dns` with the headless service's name.
    #[serde(default)]
    pub k8s: Option<Value>,
    /// Refused.
    #[serde(default)]
    pub aws_cloud_map: Option<Value>,
}

/// `resolver.static`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticResolver {
    /// `host:port` of each backend.
    pub hostnames: Vec<String>,
}

/// `resolver.dns`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsResolver {
    /// The name to resolve.
    pub hostname: String,
    /// The backends' port.
    #[serde(default = "default_port")]
    pub port: PortValue,
    /// How often to resolve.
    #[serde(default = "five_seconds")]
    pub interval: HumanDuration,
    /// How long one resolution may take.
    #[serde(default = "one_second")]
    pub timeout: HumanDuration,
}

/// A port, written as a number or a string (the Collector's config takes a string).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PortValue {
    /// `4317`.
    Number(u16),
    /// `"4317"`.
    Text(String),
}

impl PortValue {
    fn get(&self) -> Option<u16> {
        match self {
            PortValue::Number(n) => Some(*n),
            PortValue::Text(t) => t.parse().ok(),
        }
    }
}

fn default_port() -> PortValue {
    PortValue::Number(4317)
}

fn five_seconds() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn one_second() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

impl LoadBalancingConfig {
    /// Problems with the config; `signals` are those the exporter serves, when known.
    fn check(&self, path: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let r = &self.resolver;
        if r.k8s.is_some() {
            p.push(Problem::error(
                format!("{path}.resolver.k8s"),
                "the k8s resolver is not supported: use `resolver.dns` with the headless Service's name (`<service>.<namespace>.svc.cluster.local`), which resolves to every ready pod",
            ));
        }
        if r.aws_cloud_map.is_some() {
            p.push(Problem::error(
                format!("{path}.resolver.aws_cloud_map"),
                "the aws_cloud_map resolver is not supported: use `resolver.static` or `resolver.dns`",
            ));
        }
        match (&r.fixed, &r.dns) {
            (None, None) if r.k8s.is_none() && r.aws_cloud_map.is_none() => p.push(Problem::error(
                format!("{path}.resolver"),
                "needs `static` or `dns`",
            )),
            (Some(s), None) if s.hostnames.is_empty() => p.push(Problem::error(
                format!("{path}.resolver.static.hostnames"),
                "must list at least one backend",
            )),
            (_, Some(d)) => {
                if d.hostname.is_empty() {
                    p.push(Problem::error(
                        format!("{path}.resolver.dns.hostname"),
                        "is required",
                    ));
                }
                if d.port.get().is_none() {
                    p.push(Problem::error(
                        format!("{path}.resolver.dns.port"),
                        "must be a port number",
                    ));
                }
                if d.interval.0.is_zero() {
                    p.push(Problem::error(
                        format!("{path}.resolver.dns.interval"),
                        "must be longer than 0",
                    ));
                }
            }
            _ => {}
        }
        if self.routing_key == RoutingKey::StreamId {
            p.push(Problem::error(
                format!("{path}.routing_key"),
                "`streamID` is not supported: use `metric`, `resource`, `service` or `attributes`",
            ));
        }
        if self.routing_key == RoutingKey::Attributes && self.routing_attributes.is_empty() {
            p.push(Problem::error(
                format!("{path}.routing_attributes"),
                "`routing_key: attributes` needs the attributes to route by",
            ));
        }
        let otlp_path = format!("{path}.protocol.otlp");
        if self.protocol.otlp.get("endpoint").is_some() {
            p.push(Problem::error(
                format!("{otlp_path}.endpoint"),
                "is set by the resolver for each backend; remove it",
            ));
        }
        match otlp_settings(&otlp_path, &self.protocol.otlp, "check:4317") {
            Ok((_, c)) => p.extend(c.check_grpc(&otlp_path)),
            Err(problems) => p.extend(problems),
        }
        p
    }
}

/// The `otlp` settings of one backend: the helper's keys (which sluice applies to its one queue
/// in front of the ring) and the exporter's own, with `endpoint` set.
fn otlp_settings(
    path: &str,
    otlp: &Value,
    endpoint: &str,
) -> Result<(Option<HelperSettings>, OtlpExporterConfig), Vec<Problem>> {
    let mut own = if otlp.is_null() {
        Value::Object(Default::default())
    } else {
        otlp.clone()
    };
    let has_helper = ["timeout", "retry_on_failure", "sending_queue"]
        .iter()
        .any(|k| own.get(k).is_some());
    let mut helper = None;
    if has_helper {
        let (h, rest) = HelperSettings::parse(path, &own, HelperSettings::default())?;
        helper = Some(h);
        own = rest;
    }
    if let Some(o) = own.as_object_mut() {
        o.insert("endpoint".into(), Value::String(endpoint.to_owned()));
    }
    let c: OtlpExporterConfig = sluice_config::component_config(path, &own).map_err(|p| vec![p])?;
    Ok((helper, c))
}

/// Batches over this many bytes are routed on the blocking pool.
const ROUTE_OFF_WORKERS_ABOVE: usize = 64 * 1024;

/// Owners one attempt tries for a part: its owner, then the next ones on the ring.
const OWNERS_PER_ATTEMPT: usize = 3;

/// Positions on the ring, as the Collector counts them: 360 degrees with two decimals.
const POSITIONS: u32 = 36_000;
/// Points each endpoint takes on the ring.
const POINTS: u8 = 100;

/// A consistent-hash ring over endpoints.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ring {
    /// (position, endpoint index), by position.
    points: Vec<(u32, usize)>,
    endpoints: Vec<String>,
}

impl Ring {
    /// The ring of `endpoints` (sorted and deduplicated first, as the Collector's resolvers
    /// hand them over). A position two endpoints hash to goes to the first.
    pub fn new(endpoints: &[String]) -> Ring {
        Ring::with_points(endpoints, POINTS)
    }

    fn with_points(endpoints: &[String], points_each: u8) -> Ring {
        let mut endpoints = endpoints.to_vec();
        endpoints.sort();
        endpoints.dedup();
        let mut taken = std::collections::HashSet::new();
        let mut points = Vec::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            for i in 0..points_each {
                let mut h = crc32fast::Hasher::new();
                h.update(endpoint.as_bytes());
                h.update(&[i]);
                let position = h.finalize() % POSITIONS;
                if taken.insert(position) {
                    points.push((position, index));
                }
            }
        }
        points.sort_unstable();
        Ring { points, endpoints }
    }

    /// The endpoints, sorted.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The index of the first point at or after `key`'s position, wrapping around.
    fn start(&self, key: &[u8]) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let position = crc32fast::hash(key) % POSITIONS;
        let i = self.points.partition_point(|(p, _)| *p < position);
        Some(if i == self.points.len() { 0 } else { i })
    }

    /// The endpoint that owns `key`.
    pub fn owner(&self, key: &[u8]) -> Option<usize> {
        self.start(key).map(|i| self.points[i].1)
    }

    /// One batch per owner: each item goes to the first endpoint `usable` accepts from its
    /// routing key's position (`None` when none is); a key and a ring walk per item.
    pub fn split(
        &self,
        batch: Batch,
        routing: RoutingKey,
        attributes: &[String],
        usable: impl Fn(usize) -> bool,
    ) -> Vec<(Option<usize>, Batch)> {
        batch
            .group_by(|context, item| self.first(&key(routing, attributes, context, item), &usable))
    }

    /// The first endpoint from `key`'s position clockwise that `usable` accepts.
    pub fn first(&self, key: &[u8], usable: impl Fn(usize) -> bool) -> Option<usize> {
        let start = self.start(key)?;
        (0..self.points.len())
            .map(|k| self.points[(start + k) % self.points.len()].1)
            .find(|&e| usable(e))
    }

    /// The endpoints in the order the ring offers them for `key`: its owner, then each next
    /// distinct endpoint clockwise (where its share goes when the owner fails).
    pub fn successors(&self, key: &[u8]) -> Vec<usize> {
        let Some(start) = self.start(key) else {
            return Vec::new();
        };
        let mut seen = Vec::with_capacity(self.endpoints.len());
        for k in 0..self.points.len() {
            let e = self.points[(start + k) % self.points.len()].1;
            if !seen.contains(&e) {
                seen.push(e);
                if seen.len() == self.endpoints.len() {
                    break;
                }
            }
        }
        seen
    }
}

/// One backend: its exporter and its health.
struct Backend {
    endpoint: String,
    exporter: GrpcExporter,
    /// Skipped until then, after failures.
    skip_until: Mutex<Option<(Instant, Duration)>>,
    ok: metrics::Counter,
    failed: metrics::Counter,
    latency: metrics::Histogram,
}

impl Backend {
    fn healthy(&self, now: Instant) -> bool {
        self.skip_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|(until, _)| now >= until)
    }

    fn failed(&self) {
        let mut s = self.skip_until.lock().unwrap_or_else(|e| e.into_inner());
        let pause = s.map_or(Duration::from_secs(1), |(_, p)| {
            (p * 2).min(Duration::from_secs(30))
        });
        *s = Some((Instant::now() + pause, pause));
        self.failed.increment(1);
    }

    fn succeeded(&self) {
        *self.skip_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.ok.increment(1);
    }
}

/// The ring and its backends, replaced whole when the resolver's answer changes.
#[derive(Default)]
struct Topology {
    ring: Ring,
    /// By ring endpoint index.
    backends: Vec<Arc<Backend>>,
}

/// What the exporter sends for one batch: the part not delivered yet.
pub(crate) struct Pending(Mutex<Option<Batch>>);

struct LoadBalancer {
    id: String,
    /// The configured `timeout`, per send to one backend.
    attempt_timeout: Duration,
    routing: RoutingKey,
    attributes: Vec<String>,
    otlp: Value,
    auth: Option<Arc<dyn ClientAuthenticator>>,
    topology: RwLock<Arc<Topology>>,
    resolver: ResolverConfig,
    rerouted: metrics::Counter,
    num_backends: metrics::Gauge,
    resolutions_ok: metrics::Counter,
    resolutions_failed: metrics::Counter,
    backend_updates: metrics::Counter,
}

/// The routing key of one item, as bytes.
fn key(
    routing: RoutingKey,
    attributes: &[String],
    context: &Context<'_>,
    item: &Item<'_>,
) -> Vec<u8> {
    let value_bytes = |v: AnyValue<'_>| -> Vec<u8> {
        match v {
            AnyValue::String(s) => s.as_bytes().to_vec(),
            AnyValue::Int(i) => i.to_string().into_bytes(),
            AnyValue::Double(d) => d.to_string().into_bytes(),
            AnyValue::Bool(b) => b.to_string().into_bytes(),
            AnyValue::Bytes(b) => b.to_vec(),
            _ => Vec::new(),
        }
    };
    match routing {
        RoutingKey::TraceId => match item {
            Item::Span(s) => s.trace_id().to_vec(),
            Item::Log(l) => l.trace_id().to_vec(),
            // Metrics have no trace id: by metric name, as `metric`.
            Item::Point(_) => context
                .metric
                .map(|m| m.name().as_bytes().to_vec())
                .unwrap_or_default(),
        },
        RoutingKey::Service => context
            .resource
            .attribute("service.name")
            .map(value_bytes)
            .unwrap_or_default(),
        RoutingKey::Resource => context.resource.resource().to_vec(),
        RoutingKey::Metric | RoutingKey::StreamId => match context.metric {
            Some(m) => m.name().as_bytes().to_vec(),
            None => context.resource.resource().to_vec(),
        },
        RoutingKey::Attributes => {
            let mut out = Vec::new();
            for name in attributes {
                let v = match item {
                    Item::Span(s) => s.attribute(name),
                    Item::Log(l) => l.attribute(name),
                    Item::Point(p) => p.attribute(name),
                }
                .or_else(|| context.resource.attribute(name));
                if let Some(v) = v {
                    out.extend_from_slice(&value_bytes(v));
                }
                out.push(0);
            }
            out
        }
    }
}

impl LoadBalancer {
    fn current(&self) -> Arc<Topology> {
        Arc::clone(&self.topology.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the ring when the endpoints changed; backends that stay keep their connection.
    fn update(&self, endpoints: Vec<String>) {
        let old = self.current();
        let ring = Ring::new(&endpoints);
        if ring.endpoints() == old.ring.endpoints() {
            return;
        }
        let mut backends = Vec::with_capacity(ring.endpoints().len());
        for endpoint in ring.endpoints() {
            if let Some(b) = old.backends.iter().find(|b| &b.endpoint == endpoint) {
                backends.push(Arc::clone(b));
                continue;
            }
            match self.backend(endpoint) {
                Ok(b) => backends.push(Arc::new(b)),
                Err(e) => {
                    tracing::error!(exporter = %self.id, endpoint = %endpoint, error = %e, "cannot make a client for a backend; keeping the previous backends");
                    return;
                }
            }
        }
        tracing::info!(exporter = %self.id, backends = ?ring.endpoints(), "load-balancing ring updated");
        self.num_backends.set(backends.len() as f64);
        self.backend_updates.increment(1);
        *self.topology.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Topology { ring, backends });
    }

    fn backend(&self, endpoint: &str) -> Result<Backend, BuildError> {
        let path = format!("exporters.{}.protocol.otlp", self.id);
        let (_, c) = otlp_settings(&path, &self.otlp, endpoint)
            .map_err(|mut p| BuildError::Config(p.remove(0)))?;
        let (id, ep) = (self.id.clone(), endpoint.to_owned());
        Ok(Backend {
            endpoint: endpoint.to_owned(),
            exporter: grpc_exporter(&format!("{}/{endpoint}", self.id), &c, self.auth.clone())?,
            skip_until: Mutex::new(None),
            ok: metrics::counter!(sluice_core::metrics::LOADBALANCER_BACKEND_OUTCOME, "exporter" => id.clone(), "endpoint" => ep.clone(), "success" => "true"),
            failed: metrics::counter!(sluice_core::metrics::LOADBALANCER_BACKEND_OUTCOME, "exporter" => id.clone(), "endpoint" => ep.clone(), "success" => "false"),
            latency: metrics::histogram!(sluice_core::metrics::LOADBALANCER_BACKEND_LATENCY, "exporter" => id, "endpoint" => ep),
        })
    }

    /// Resolves the DNS name every `interval`, forever; a failure keeps the last list.
    async fn resolve_loop(self: Arc<Self>, dns: DnsResolver, shutdown: CancellationToken) {
        let port = dns.port.get().unwrap_or(4317);
        loop {
            let lookup = tokio::net::lookup_host((dns.hostname.as_str(), port));
            match tokio::time::timeout(dns.timeout.0, lookup).await {
                Ok(Ok(addrs)) => {
                    let endpoints: Vec<String> = addrs.map(|a| a.to_string()).collect();
                    if endpoints.is_empty() {
                        self.resolutions_failed.increment(1);
                        tracing::warn!(exporter = %self.id, hostname = %dns.hostname, "DNS answered no addresses; keeping the last backends");
                    } else {
                        self.resolutions_ok.increment(1);
                        self.update(endpoints);
                    }
                }
                Ok(Err(e)) => {
                    self.resolutions_failed.increment(1);
                    tracing::warn!(exporter = %self.id, hostname = %dns.hostname, error = %e, "DNS resolution failed; keeping the last backends");
                }
                Err(_) => {
                    self.resolutions_failed.increment(1);
                    tracing::warn!(exporter = %self.id, hostname = %dns.hostname, "DNS resolution timed out; keeping the last backends");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(dns.interval.0) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// Splits `batch` among the usable owners of its keys: for each item, the first endpoint on the
/// ring from its key's position that is healthy and did not fail this send; with none healthy,
/// the first that did not fail. A key and a ring walk per item, no allocation.
fn route(
    topology: &Topology,
    routing: RoutingKey,
    attributes: &[String],
    batch: Batch,
    failed: &[usize],
) -> Vec<(Option<usize>, Batch)> {
    let now = Instant::now();
    let healthy: Vec<bool> = topology
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| !failed.contains(&i) && b.healthy(now))
        .collect();
    if healthy.contains(&true) {
        topology
            .ring
            .split(batch, routing, attributes, |e| healthy[e])
    } else {
        topology
            .ring
            .split(batch, routing, attributes, |e| !failed.contains(&e))
    }
}

#[async_trait]
impl Exporter for LoadBalancer {
    type Encoded = Pending;

    fn encode(&self, batch: &Batch) -> Result<Pending, ExportError> {
        Ok(Pending(Mutex::new(Some(batch.clone()))))
    }

    /// Sends what is pending to the owners of its keys, each part to its owner, a failed
    /// owner's part to the next owner (at most [`OWNERS_PER_ATTEMPT`] owners per attempt).
    /// Cancel safe: what is pending is updated after each round, so a cancelled attempt (the
    /// helper's timeout) resends at most the round under way.
    async fn send(&self, pending: &Pending) -> Result<(), ExportError> {
        let Some(batch) = pending.0.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(());
        };
        let topology = self.current();
        if topology.backends.is_empty() {
            return Err(ExportError::retryable("no backends resolved yet"));
        }
        let signal = batch.signal();
        let mut failed: Vec<usize> = Vec::new();
        let mut todo = Some(batch);
        let mut undelivered = BatchBuilder::new(signal);
        let mut last_error = None;
        let mut refused = None;
        let mut round = 0;
        while let Some(next) = todo.take() {
            // A key per item: large batches are routed on the blocking pool.
            let (t, attributes, f, routing) = (
                Arc::clone(&topology),
                self.attributes.clone(),
                failed.clone(),
                self.routing,
            );
            let parts = sluice_core::blocking::off_workers(
                next.size(),
                ROUTE_OFF_WORKERS_ABOVE,
                move || route(&t, routing, &attributes, next, &f),
            )
            .await
            .ok_or_else(|| ExportError::retryable("routing a batch failed"))?;
            let sends = parts.into_iter().map(|(owner, part)| {
                let topology = &topology;
                async move {
                    let Some(owner) = owner else {
                        return (
                            None,
                            part,
                            Err(ExportError::retryable("no backend left to try")),
                        );
                    };
                    let backend = &topology.backends[owner];
                    let started = Instant::now();
                    let attempt = async {
                        let encoded = backend.exporter.encode(&part)?;
                        backend.exporter.send(&encoded).await
                    };
                    let result = tokio::time::timeout(self.attempt_timeout, attempt)
                        .await
                        .unwrap_or_else(|_| Err(ExportError::retryable("backend timed out")));
                    backend
                        .latency
                        .record(started.elapsed().as_secs_f64() * 1000.0);
                    (Some(owner), part, result)
                }
            });
            let mut retry = BatchBuilder::new(signal);
            for (owner, part, result) in futures::future::join_all(sends).await {
                match (owner, result) {
                    (Some(o), Ok(())) => topology.backends[o].succeeded(),
                    (Some(o), Err(e)) if e.retryable => {
                        topology.backends[o].failed();
                        tracing::warn!(exporter = %self.id, endpoint = %topology.backends[o].endpoint, items = part.items(), error = %e.message, "backend failed; routing its share to the next owner");
                        failed.push(o);
                        self.rerouted.increment(part.items() as u64);
                        retry.push(part);
                        last_error = Some(e);
                    }
                    (Some(o), Err(e)) => {
                        // Refused for good (malformed, say): another owner would refuse it too.
                        topology.backends[o].failed.increment(1);
                        tracing::error!(exporter = %self.id, endpoint = %topology.backends[o].endpoint, items = part.items(), error = %e.message, "backend refused a part permanently, data dropped");
                        refused = Some(e);
                    }
                    (None, Err(e)) => {
                        undelivered.push(part);
                        last_error = Some(e);
                    }
                    (None, Ok(())) => {}
                }
            }
            round += 1;
            if !retry.is_empty() {
                if round >= OWNERS_PER_ATTEMPT.min(topology.backends.len()) {
                    undelivered.push(retry.take());
                } else {
                    todo = Some(retry.take());
                }
            }
            // What is left, should this attempt be cut off from here on.
            let mut left = BatchBuilder::new(signal);
            if let Some(t) = &todo {
                left.push(t.clone());
            }
            if !undelivered.is_empty() {
                let u = undelivered.take();
                left.push(u.clone());
                undelivered.push(u);
            }
            *pending.0.lock().unwrap_or_else(|e| e.into_inner()) =
                (!left.is_empty()).then(|| left.take());
        }
        if !undelivered.is_empty() {
            return Err(
                last_error.unwrap_or_else(|| ExportError::retryable("every backend failed"))
            );
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The exporter as core runs it: the balancer, and its resolver task.
struct Running(Arc<LoadBalancer>);

#[async_trait]
impl Exporter for Running {
    type Encoded = Pending;

    fn encode(&self, batch: &Batch) -> Result<Pending, ExportError> {
        self.0.encode(batch)
    }

    async fn send(&self, pending: &Pending) -> Result<(), ExportError> {
        self.0.send(pending).await
    }

    fn start(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        match self.0.resolver.dns.clone() {
            Some(dns) => vec![tokio::spawn(
                Arc::clone(&self.0).resolve_loop(dns, shutdown),
            )],
            None => Vec::new(),
        }
    }
}

/// Builds `loadbalancing` exporters; `name` is the spelling (`loadbalancing` or the Collector's
/// newer `load_balancing`).
#[derive(Debug)]
pub struct LoadBalancingExporterFactory {
    /// The type name this factory answers to.
    pub name: &'static str,
}

impl ExporterFactory for LoadBalancingExporterFactory {
    fn type_name(&self) -> &'static str {
        self.name
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &LoadBalancingConfig| c.check(path))
    }

    fn build(
        &self,
        id: &str,
        config: &Value,
        helper: &mut HelperSettings,
        context: &ExporterContext,
    ) -> Result<BuiltExporter, BuildError> {
        let path = format!("exporters.{id}");
        let c: LoadBalancingConfig = typed(&path, config)?;
        if let Some(problem) = c.check(&path).into_iter().next() {
            return Err(BuildError::Config(problem));
        }
        let otlp_path = format!("{path}.protocol.otlp");
        let (sub_helper, sub) = otlp_settings(&otlp_path, &c.protocol.otlp, "config:4317")
            .map_err(|mut p| BuildError::Config(p.remove(0)))?;
        // The Collector's users put the queue and retry settings under `protocol.otlp`; sluice
        // applies them to its one queue in front of the ring.
        if let Some(h) = sub_helper {
            *helper = h;
        }
        // `timeout` bounds each send to one backend; an attempt may try up to three owners.
        let attempt_timeout = helper.timeout;
        helper.timeout = attempt_timeout * OWNERS_PER_ATTEMPT as u32 + Duration::from_secs(1);
        let auth = context.client_auth(&otlp_path, sub.auth.as_ref())?;
        let resolver_name = if c.resolver.dns.is_some() {
            "dns"
        } else {
            "static"
        };
        let (eid, res) = (id.to_owned(), resolver_name);
        let balancer = Arc::new(LoadBalancer {
            id: id.to_owned(),
            attempt_timeout,
            routing: c.routing_key,
            attributes: c.routing_attributes.clone(),
            otlp: c.protocol.otlp.clone(),
            auth,
            topology: RwLock::new(Arc::new(Topology::default())),
            resolver: c.resolver.clone(),
            rerouted: metrics::counter!(sluice_core::metrics::LOADBALANCER_REROUTED_ITEMS, "exporter" => eid.clone()),
            num_backends: metrics::gauge!(sluice_core::metrics::LOADBALANCER_NUM_BACKENDS, "exporter" => eid.clone(), "resolver" => res),
            resolutions_ok: metrics::counter!(sluice_core::metrics::LOADBALANCER_NUM_RESOLUTIONS, "exporter" => eid.clone(), "resolver" => res, "success" => "true"),
            resolutions_failed: metrics::counter!(sluice_core::metrics::LOADBALANCER_NUM_RESOLUTIONS, "exporter" => eid.clone(), "resolver" => res, "success" => "false"),
            backend_updates: metrics::counter!(sluice_core::metrics::LOADBALANCER_NUM_BACKEND_UPDATES, "exporter" => eid, "resolver" => res),
        });
        if let Some(s) = &c.resolver.fixed
            && c.resolver.dns.is_none()
        {
            balancer.resolutions_ok.increment(1);
            balancer.update(s.hostnames.clone());
            if balancer.current().backends.len() != {
                let mut h = s.hostnames.clone();
                h.sort();
                h.dedup();
                h.len()
            } {
                return Err(BuildError::Other(format!(
                    "{path}: cannot make a client for every backend"
                )));
            }
        }
        Ok(BuiltExporter::Push(Arc::new(Running(balancer))))
    }
}

#[cfg(test)]
mod tests;
