//! The `jaeger_query` extension: reads the store an exporter writes (`memory` or `postgres`)
//! and serves it over Jaeger's HTTP APIs, so Jaeger UI and Grafana's Jaeger data source read
//! sluice without a Jaeger storage of their own.
//!
//! * v1 JSON (what Jaeger UI and Grafana still call): `/api/services`,
//!   `/api/services/{service}/operations`, `/api/operations`, `/api/traces`,
//!   `/api/traces/{id}`, `/api/dependencies`;
//! * v3 (OTLP JSON): `/api/v3/services`, `/api/v3/operations`, `/api/v3/traces`,
//!   `/api/v3/traces/{id}`.
//!
//! Read-only, and bounded: every search has a time range and a limit, every read a timeout.
//! It binds to localhost unless configured otherwise.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_config::HumanDuration;
use sluice_config::{Problem, check_endpoint};
use sluice_core::store::{ReadError, Stores, Trace, TraceId, TraceQuery, TraceReader};
use sluice_core::{BuildError, Extension, ExtensionFactory, Host, Signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::jaeger_json;
use crate::params::{self, all, first};

/// Jaeger's default search lookback: two days.
const DEFAULT_LOOKBACK: u64 = 2 * 86_400_000_000_000;
/// Jaeger's default dependency lookback: a day.
const DEFAULT_DEPENDENCY_LOOKBACK: u64 = 86_400_000_000_000;
/// Jaeger's default number of traces a search returns.
pub(crate) const DEFAULT_LIMIT: usize = 100;

/// `extensions.jaeger_query`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JaegerQueryConfig {
    /// Which store to read.
    pub storage: StorageConfig,
    /// The HTTP server.
    #[serde(default)]
    pub http: HttpConfig,
    /// The most traces one search may return; a larger `limit` is lowered to it.
    #[serde(default = "default_max_limit")]
    pub max_limit: usize,
    /// How long one read may take before it is answered 503.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Prices of generative-AI models, for the cost of traces (`/api/sluice/genai`).
    #[serde(default)]
    pub genai: GenAiConfig,
    /// Jaeger's v2 remote storage gRPC API (`jaeger.storage.v2`), for a Jaeger v2 whose
    /// storage backend is `grpc`; off unless set.
    #[serde(default)]
    pub remote_storage: Option<RemoteStorageConfig>,
}

/// `remote_storage`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteStorageConfig {
    /// Listening `host:port` (Jaeger's remote storage port is 17271).
    pub endpoint: String,
    /// Server TLS, as on the receivers.
    #[serde(default)]
    pub tls: Option<sluice_net::TlsServerConfig>,
    /// An authenticator extension every call must pass, as on the receivers.
    #[serde(default)]
    pub auth: Option<sluice_core::auth::AuthSettings>,
}

/// `genai`: what tokens cost.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenAiConfig {
    /// The currency the prices are in, for display (default `USD`).
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Per model (`gen_ai.request.model`; a key matches the model with that name, or else the
    /// longest key the model's name starts with, so `gpt-4o` prices `gpt-4o-2024-08-06`): the
    /// price of a million input and of a million output tokens.
    #[serde(default)]
    pub prices: std::collections::BTreeMap<String, Price>,
}

/// A model's price per million tokens.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// A million input (prompt) tokens.
    pub input_per_million: f64,
    /// A million output (completion) tokens.
    pub output_per_million: f64,
}

fn default_currency() -> String {
    "USD".to_owned()
}

impl GenAiConfig {
    /// The price of `model`: its own, or the longest prefix's.
    pub(crate) fn price(&self, model: &str) -> Option<Price> {
        self.prices.get(model).copied().or_else(|| {
            self.prices
                .iter()
                .filter(|(key, _)| model.starts_with(key.as_str()))
                .max_by_key(|(key, _)| key.len())
                .map(|(_, price)| *price)
        })
    }
}

/// `storage`: Jaeger v2's key, naming the store to read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The id of the `memory` or `postgres` exporter whose store is read.
    pub traces: String,
}

/// `http`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listening `host:port` (default `127.0.0.1:16686`, Jaeger's query port on localhost).
    pub endpoint: String,
    /// Server TLS, as on the receivers.
    pub tls: Option<sluice_net::TlsServerConfig>,
    /// An authenticator extension every request must pass, as on the receivers.
    pub auth: Option<sluice_core::auth::AuthSettings>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: "127.0.0.1:16686".to_owned(),
            tls: None,
            auth: None,
        }
    }
}

fn default_max_limit() -> usize {
    1000
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn problems(path: &str, c: &JaegerQueryConfig) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Err(m) = check_endpoint(&c.http.endpoint) {
        out.push(Problem::error(format!("{path}.http.endpoint"), m));
    }
    if let Some(remote) = &c.remote_storage
        && let Err(m) = check_endpoint(&remote.endpoint)
    {
        out.push(Problem::error(format!("{path}.remote_storage.endpoint"), m));
    }
    for (model, price) in &c.genai.prices {
        for (key, value) in [
            ("input_per_million", price.input_per_million),
            ("output_per_million", price.output_per_million),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                out.push(Problem::error(
                    format!("{path}.genai.prices.{model}.{key}"),
                    "must be a price: a finite number, zero or more",
                ));
            }
        }
    }
    if c.max_limit == 0 {
        out.push(Problem::error(
            format!("{path}.max_limit"),
            "must be at least 1",
        ));
    }
    if c.timeout.is_zero() {
        out.push(Problem::error(
            format!("{path}.timeout"),
            "must be positive",
        ));
    }
    if c.storage.traces.is_empty() {
        out.push(Problem::error(
            format!("{path}.storage.traces"),
            "names no exporter",
        ));
    }
    out
}

/// The `jaeger_query` extension type.
pub struct JaegerQueryFactory;

impl ExtensionFactory for JaegerQueryFactory {
    fn type_name(&self) -> &'static str {
        "jaeger_query"
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &JaegerQueryConfig| problems(path, c))
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn Extension>, BuildError> {
        let path = format!("extensions.{id}");
        let c: JaegerQueryConfig = sluice_core::typed(&path, config)?;
        if let Some(problem) = problems(&path, &c).into_iter().next() {
            return Err(BuildError::Config(problem));
        }
        Ok(Box::new(JaegerQuery {
            id: id.to_owned(),
            config: c,
        }))
    }
}

struct JaegerQuery {
    id: String,
    config: JaegerQueryConfig,
}

#[async_trait]
impl Extension for JaegerQuery {
    async fn start(
        &self,
        host: &Host,
        shutdown: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, BuildError> {
        let api = Arc::new(Api {
            stores: Arc::clone(&host.stores),
            storage: self.config.storage.traces.clone(),
            max_limit: self.config.max_limit,
            timeout: self.config.timeout.get(),
            genai: self.config.genai.clone(),
        });
        let http = &self.config.http;
        let auth = |settings: &Option<sluice_core::auth::AuthSettings>, key: &str| {
            settings
                .as_ref()
                .map(|a| {
                    let authenticator = host.authenticators.get(&a.authenticator).cloned().ok_or_else(|| {
                        BuildError::Other(format!(
                            "extensions.{}.{key}.auth: `{}` is not a running authenticator extension listed before it in service.extensions",
                            self.id, a.authenticator
                        ))
                    })?;
                    Ok::<_, BuildError>(sluice_net::ServerAuth::new(
                        authenticator,
                        metrics::counter!(
                            sluice_core::metrics::QUERY_REFUSED_REQUESTS,
                            "extension" => self.id.clone(),
                            "listener" => key.to_owned()
                        ),
                    ))
                })
                .transpose()
        };
        let mut tasks = vec![
            listen(
                settings(&self.id, "http", false),
                &http.endpoint,
                http.tls.as_ref(),
                &format!("extensions.{}.http.tls", self.id),
                auth(&http.auth, "http")?,
                router(Arc::clone(&api)),
                &shutdown,
            )
            .await?,
        ];
        if let Some(remote) = &self.config.remote_storage {
            let service = crate::storage_grpc::StorageService {
                api: Arc::clone(&api),
            };
            tasks.push(
                listen(
                    settings(&self.id, "remote_storage", true),
                    &remote.endpoint,
                    remote.tls.as_ref(),
                    &format!("extensions.{}.remote_storage.tls", self.id),
                    auth(&remote.auth, "remote_storage")?,
                    service,
                    &shutdown,
                )
                .await?,
            );
        }
        tracing::info!(store = %api.storage, "jaeger query serving");
        Ok(tasks)
    }
}

/// The settings of listener `key` (`http`, or `remote_storage`: gRPC, which speaks HTTP/2 only,
/// and then its refusals are gRPC statuses).
fn settings(id: &str, key: &str, grpc: bool) -> sluice_net::ServerSettings {
    sluice_net::ServerSettings {
        http2_only: grpc,
        ..sluice_net::ServerSettings::side(&format!("{id}/{key}"))
    }
}

/// Binds `endpoint` and serves `service` there until `shutdown`; `tls` is configured at
/// `tls_path`.
async fn listen<S, B>(
    settings: sluice_net::ServerSettings,
    endpoint: &str,
    tls: Option<&sluice_net::TlsServerConfig>,
    tls_path: &str,
    auth: Option<sluice_net::ServerAuth>,
    service: S,
    shutdown: &CancellationToken,
) -> Result<JoinHandle<()>, BuildError>
where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls =
        sluice_net::TlsServerConfig::for_listener(tls, tls_path, &["h2", "http/1.1"], shutdown)?;
    let listener = tokio::net::TcpListener::bind(endpoint)
        .await
        .map_err(|source| BuildError::Bind {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    tracing::info!(endpoint = ?listener.local_addr().ok(), listener = %settings.name, "jaeger query listening");
    Ok(tokio::spawn(sluice_net::serve(
        listener,
        settings,
        tls,
        auth,
        service,
        shutdown.clone(),
    )))
}

/// The routes, over `api`.
pub(crate) fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/services", get(v1_services))
        .route(
            "/api/services/{service}/operations",
            get(v1_service_operations),
        )
        .route("/api/operations", get(v1_operations))
        .route("/api/traces", get(v1_find_traces))
        .route("/api/traces/{id}", get(v1_trace))
        .route("/api/dependencies", get(v1_dependencies))
        .route("/api/v3/services", get(v3_services))
        .route("/api/v3/operations", get(v3_operations))
        .route("/api/v3/traces", get(v3_find_traces))
        .route("/api/v3/traces/{id}", get(v3_trace))
        .with_state(Arc::clone(&api))
        .merge(crate::api::routes(Arc::clone(&api)))
        .merge(crate::view::routes(api))
}

/// What the handlers share: the store to read and the bounds on reading it.
pub(crate) struct Api {
    stores: Arc<Stores>,
    storage: String,
    max_limit: usize,
    timeout: Duration,
    pub(crate) genai: GenAiConfig,
}

impl Api {
    /// Runs one read against the store, within the timeout.
    pub(crate) async fn read<T, F>(
        &self,
        read: impl FnOnce(Arc<dyn TraceReader>) -> F,
    ) -> Result<T, Failure>
    where
        F: Future<Output = Result<T, ReadError>>,
    {
        let reader = self.stores.get(&self.storage).ok_or_else(|| {
            Failure::Unavailable(format!("store `{}` is not running", self.storage))
        })?;
        match tokio::time::timeout(self.timeout, read(reader)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(ReadError::Invalid(m))) => Err(Failure::BadRequest(m)),
            Ok(Err(e @ ReadError::Unavailable(_))) => Err(Failure::Unavailable(e.to_string())),
            Err(_) => Err(Failure::Unavailable(format!(
                "the store did not answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// The id of the exporter whose store is read.
    pub(crate) fn storage(&self) -> &str {
        &self.storage
    }

    /// The most traces one search returns.
    pub(crate) fn max_limit(&self) -> usize {
        self.max_limit
    }

    pub(crate) fn limit(&self, asked: Option<&str>, default: usize) -> Result<usize, Failure> {
        match asked {
            None => Ok(default.min(self.max_limit)),
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .map(|n| n.min(self.max_limit))
                .ok_or_else(|| {
                    Failure::BadRequest(format!("limit `{text}` is not a positive number"))
                }),
        }
    }
}

/// Why a request was not answered with data.
pub(crate) enum Failure {
    BadRequest(String),
    NotFound(String),
    Unavailable(String),
}

impl From<crate::params::BadParam> for Failure {
    fn from(bad: crate::params::BadParam) -> Failure {
        Failure::BadRequest(bad.0)
    }
}

impl From<sluice_core::store::InvalidTraceId> for Failure {
    fn from(invalid: sluice_core::store::InvalidTraceId) -> Failure {
        Failure::BadRequest(invalid.to_string())
    }
}

impl Failure {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Failure::BadRequest(_) => StatusCode::BAD_REQUEST,
            Failure::NotFound(_) => StatusCode::NOT_FOUND,
            Failure::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            Failure::BadRequest(m) | Failure::NotFound(m) | Failure::Unavailable(m) => m,
        }
    }

    /// In Jaeger's v1 envelope.
    fn v1(&self) -> Response {
        let status = self.status();
        (
            status,
            json_body(&jaeger_json::error(status.as_u16(), self.message())),
        )
            .into_response()
    }

    /// In Jaeger's v3 (grpc-gateway) shape.
    pub(crate) fn v3(&self) -> Response {
        let status = self.status();
        let body = json!({"error": {"httpCode": status.as_u16(), "message": self.message()}});
        (status, json_body(&body)).into_response()
    }
}

fn json_body(value: &Value) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
}

fn v1_ok(data: Value) -> Response {
    json_body(&jaeger_json::envelope(data)).into_response()
}

use sluice_core::store::SPAN_KINDS;

pub(crate) fn kind_name(kind: i32) -> &'static str {
    usize::try_from(kind)
        .ok()
        .and_then(|k| SPAN_KINDS.get(k))
        .copied()
        .unwrap_or("unspecified")
}

pub(crate) fn kind_of(text: Option<&str>) -> Result<Option<i32>, Failure> {
    match text {
        None => Ok(None),
        Some(text) => SPAN_KINDS
            .iter()
            .position(|k| k.eq_ignore_ascii_case(text))
            .map(|k| Some(i32::try_from(k).unwrap_or(0)))
            .ok_or_else(|| {
                Failure::BadRequest(format!(
                    "span kind `{text}` is not one of {}",
                    SPAN_KINDS.join(", ")
                ))
            }),
    }
}

async fn v1_services(State(api): State<Arc<Api>>) -> Response {
    match api.read(|r| async move { r.services().await }).await {
        Ok(services) => v1_ok(json!(services)),
        Err(f) => f.v1(),
    }
}

async fn v1_service_operations(
    State(api): State<Arc<Api>>,
    Path(service): Path<String>,
) -> Response {
    match api
        .read(|r| async move { r.operations(&service, None).await })
        .await
    {
        Ok(ops) => {
            let mut names: Vec<String> = ops.into_iter().map(|o| o.name).collect();
            names.dedup();
            v1_ok(json!(names))
        }
        Err(f) => f.v1(),
    }
}

async fn v1_operations(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    let params = params::parse_query(raw.as_deref());
    let Some(service) = first(&params, "service").map(str::to_owned) else {
        return Failure::BadRequest("parameter `service` is required".into()).v1();
    };
    let kind = match kind_of(first(&params, "spanKind")) {
        Ok(kind) => kind,
        Err(f) => return f.v1(),
    };
    match api
        .read(|r| async move { r.operations(&service, kind).await })
        .await
    {
        Ok(ops) => v1_ok(Value::Array(
            ops.iter()
                .map(|o| json!({"name": o.name, "spanKind": kind_name(o.kind)}))
                .collect(),
        )),
        Err(f) => f.v1(),
    }
}

/// A v1 search's query, from its parameters.
fn v1_query(api: &Api, params: &[(String, String)]) -> Result<TraceQuery, Failure> {
    let bad = Failure::BadRequest;
    let service = first(params, "service")
        .map(str::to_owned)
        .ok_or_else(|| bad("parameter `service` is required".into()))?;
    let mut attributes = Vec::new();
    for tag in all(params, "tag") {
        let (k, v) = tag
            .split_once(':')
            .ok_or_else(|| bad(format!("tag `{tag}` is not key:value")))?;
        attributes.push((k.to_owned(), v.to_owned()));
    }
    for tags in all(params, "tags") {
        let map: serde_json::Map<String, Value> = serde_json::from_str(tags)
            .map_err(|e| bad(format!("tags `{tags}` is not a JSON object: {e}")))?;
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            attributes.push((k, v));
        }
    }
    let duration = |name: &str| {
        first(params, name)
            .map(|d| params::go_duration(d).map_err(|m| bad(format!("parameter `{name}`: {m}"))))
            .transpose()
    };
    let end = first(params, "end")
        .map(|t| params::micros("end", t))
        .transpose()?
        .unwrap_or_else(params::now);
    let start = match first(params, "start") {
        Some(t) => params::micros("start", t)?,
        None => {
            let back = match first(params, "lookback").filter(|l| *l != "custom") {
                Some(l) => {
                    params::lookback(l).map_err(|m| bad(format!("parameter `lookback`: {m}")))?
                }
                None => DEFAULT_LOOKBACK,
            };
            end.saturating_sub(back)
        }
    };
    if start > end {
        return Err(bad("parameter `start` is after `end`".into()));
    }
    Ok(TraceQuery {
        service: Some(service),
        operation: first(params, "operation").map(str::to_owned),
        attributes,
        status: None,
        text: None,
        min_duration: duration("minDuration")?,
        max_duration: duration("maxDuration")?,
        start_min: start,
        start_max: end,
        limit: api.limit(first(params, "limit"), DEFAULT_LIMIT)?,
    })
}

fn trace_ids(texts: impl Iterator<Item = impl AsRef<str>>) -> Result<Vec<TraceId>, Failure> {
    texts
        .map(|t| sluice_core::store::parse_trace_id(t.as_ref()).map_err(Failure::from))
        .collect()
}

async fn v1_find_traces(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    let params = params::parse_query(raw.as_deref());
    let found = async {
        let ids = trace_ids(all(&params, "traceID"))?;
        if !ids.is_empty() {
            return api
                .read(|r| async move { r.traces(&ids, None).await })
                .await;
        }
        let query = v1_query(&api, &params)?;
        api.read(|r| async move {
            let ids = r.find_trace_ids(&query).await?;
            r.traces(&ids, None).await
        })
        .await
    };
    match found.await {
        Ok(traces) => v1_ok(Value::Array(
            traces
                .into_iter()
                .map(|(id, t)| jaeger_json::trace(&id, t))
                .collect(),
        )),
        Err(f) => f.v1(),
    }
}

/// One trace by id, with `start`/`end` (v1, microseconds) narrowing it when given.
async fn one_trace(
    api: &Api,
    id: &str,
    range: Option<(u64, u64)>,
) -> Result<(TraceId, Trace), Failure> {
    let ids = trace_ids(std::iter::once(id))?;
    api.read(|r| async move { r.traces(&ids, range).await })
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Failure::NotFound("trace not found".into()))
}

async fn v1_trace(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = params::parse_query(raw.as_deref());
    let range = async {
        let start = first(&params, "start")
            .map(|t| params::micros("start", t))
            .transpose();
        let end = first(&params, "end")
            .map(|t| params::micros("end", t))
            .transpose();
        match (start.map_err(Failure::from)?, end.map_err(Failure::from)?) {
            (None, None) => Ok::<_, Failure>(None),
            (s, e) => Ok(Some((s.unwrap_or(0), e.unwrap_or(u64::MAX)))),
        }
    };
    let result = async { one_trace(&api, &id, range.await?).await };
    match result.await {
        Ok((id, trace)) => v1_ok(json!([jaeger_json::trace(&id, trace)])),
        Err(f) => f.v1(),
    }
}

async fn v1_dependencies(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    let params = params::parse_query(raw.as_deref());
    let millis = |name: &str| {
        first(&params, name)
            .map(|t| {
                t.parse::<u64>()
                    .ok()
                    .and_then(|ms| ms.checked_mul(1_000_000))
                    .ok_or_else(|| {
                        Failure::BadRequest(format!(
                            "parameter `{name}`: `{t}` is not milliseconds"
                        ))
                    })
            })
            .transpose()
    };
    let range = (|| {
        let end = millis("endTs")?.unwrap_or_else(params::now);
        let back = millis("lookback")?.unwrap_or(DEFAULT_DEPENDENCY_LOOKBACK);
        Ok::<_, Failure>((end.saturating_sub(back), end))
    })();
    let result = match range {
        Ok((start, end)) => {
            api.read(|r| async move { r.dependencies(start, end).await })
                .await
        }
        Err(f) => Err(f),
    };
    match result {
        Ok(deps) => v1_ok(Value::Array(
            deps.iter()
                .map(|d| json!({"parent": d.parent, "child": d.child, "callCount": d.call_count}))
                .collect(),
        )),
        Err(f) => f.v1(),
    }
}

async fn v3_services(State(api): State<Arc<Api>>) -> Response {
    match api.read(|r| async move { r.services().await }).await {
        Ok(services) => json_body(&json!({"services": services})).into_response(),
        Err(f) => f.v3(),
    }
}

async fn v3_operations(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    let params = params::parse_query(raw.as_deref());
    let Some(service) = first(&params, "service").map(str::to_owned) else {
        return Failure::BadRequest("parameter `service` is required".into()).v3();
    };
    let kind = match kind_of(first(&params, "spanKind").or(first(&params, "span_kind"))) {
        Ok(kind) => kind,
        Err(f) => return f.v3(),
    };
    match api
        .read(|r| async move { r.operations(&service, kind).await })
        .await
    {
        Ok(ops) => {
            let ops: Vec<Value> = ops
                .iter()
                .map(|o| json!({"name": o.name, "spanKind": kind_name(o.kind)}))
                .collect();
            json_body(&json!({"operations": ops})).into_response()
        }
        Err(f) => f.v3(),
    }
}

/// A v3 parameter, under its camel-case or snake-case name.
fn v3_param<'a>(params: &'a [(String, String)], camel: &str, snake: &str) -> Option<&'a str> {
    first(params, &format!("query.{camel}")).or_else(|| first(params, &format!("query.{snake}")))
}

fn v3_query(api: &Api, params: &[(String, String)]) -> Result<TraceQuery, Failure> {
    let bad = Failure::BadRequest;
    let time = |camel: &str, snake: &str| {
        let text = v3_param(params, camel, snake)
            .ok_or_else(|| bad(format!("parameter `query.{camel}` is required")))?;
        params::rfc3339(&format!("query.{camel}"), text).map_err(Failure::from)
    };
    let start_min = time("startTimeMin", "start_time_min")?;
    let start_max = time("startTimeMax", "start_time_max")?;
    if start_min > start_max {
        return Err(bad(
            "`query.startTimeMin` is after `query.startTimeMax`".into()
        ));
    }
    let duration = |camel: &str, snake: &str| {
        v3_param(params, camel, snake)
            .map(|d| {
                params::go_duration(d).map_err(|m| bad(format!("parameter `query.{camel}`: {m}")))
            })
            .transpose()
    };
    let mut attributes = Vec::new();
    if let Some(text) = v3_param(params, "attributes", "attributes") {
        let map: serde_json::Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| bad(format!("`query.attributes` is not a JSON object: {e}")))?;
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            attributes.push((k, v));
        }
    }
    Ok(TraceQuery {
        service: v3_param(params, "serviceName", "service_name").map(str::to_owned),
        operation: v3_param(params, "operationName", "operation_name").map(str::to_owned),
        attributes,
        status: None,
        text: None,
        min_duration: duration("durationMin", "duration_min")?,
        max_duration: duration("durationMax", "duration_max")?,
        start_min,
        start_max,
        limit: api.limit(
            v3_param(params, "searchDepth", "search_depth")
                .or_else(|| v3_param(params, "numTraces", "num_traces")),
            DEFAULT_LIMIT,
        )?,
    })
}

/// Traces as one OTLP/JSON `TracesData` under `result`, as Jaeger's v3 gateway writes them.
fn v3_result(traces: Vec<(TraceId, Trace)>) -> Response {
    let request = ExportTraceServiceRequest {
        resource_spans: traces
            .into_iter()
            .flat_map(|(_, t)| t.resource_spans)
            .collect(),
    };
    match sluice_core::json::protobuf_to_json(Signal::Traces, &request.encode_to_vec()) {
        Ok(json) => {
            let mut body = Vec::with_capacity(json.len() + 12);
            body.extend_from_slice(b"{\"result\":");
            body.extend_from_slice(&json);
            body.push(b'}');
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => Failure::Unavailable(format!("cannot write the traces as OTLP/JSON: {e}")).v3(),
    }
}

async fn v3_find_traces(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    let params = params::parse_query(raw.as_deref());
    let found = async {
        let query = v3_query(&api, &params)?;
        api.read(|r| async move {
            let ids = r.find_trace_ids(&query).await?;
            r.traces(&ids, None).await
        })
        .await
    };
    match found.await {
        Ok(traces) => v3_result(traces),
        Err(f) => f.v3(),
    }
}

async fn v3_trace(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = params::parse_query(raw.as_deref());
    let result = async {
        let start = first(&params, "startTime")
            .or(first(&params, "start_time"))
            .map(|t| params::rfc3339("startTime", t))
            .transpose()
            .map_err(Failure::from)?;
        let end = first(&params, "endTime")
            .or(first(&params, "end_time"))
            .map(|t| params::rfc3339("endTime", t))
            .transpose()
            .map_err(Failure::from)?;
        let range = match (start, end) {
            (None, None) => None,
            (s, e) => Some((s.unwrap_or(0), e.unwrap_or(u64::MAX))),
        };
        one_trace(&api, &id, range).await
    };
    match result.await {
        Ok(found) => v3_result(vec![found]),
        Err(f) => f.v3(),
    }
}
