//! The `otlp` receiver: OTLP over gRPC and HTTP (protobuf and JSON).
//!
//! Both transports end in core's [`Intake`]: admission against the memory gates, validation by
//! the wire walker (no decoding), hand-off to the pipeline, and the metrics.

mod grpc;
mod http;

pub use http::{Refusal, decode_request};

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::{ByteSize, HumanDuration, Problem, check_endpoint};
use sluice_core::auth::AuthSettings;
use sluice_core::{BuildError, Intake, Receiver, ReceiverFactory, ReceiverOutputs, Signal, typed};
use sluice_net::TlsServerConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// `receivers.otlp`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// Which transports to serve; at least one.
    pub protocols: Protocols,
}

/// `receivers.otlp.protocols`. A transport listed with no settings (`grpc:`) runs with defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// OTLP/gRPC.
    #[serde(default, deserialize_with = "present")]
    pub grpc: Option<GrpcConfig>,
    /// OTLP/HTTP.
    #[serde(default, deserialize_with = "present")]
    pub http: Option<HttpConfig>,
}

/// Treats a key that is present but empty (`grpc:`) as "enabled with defaults".
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned + Default,
{
    let v = Option::<Value>::deserialize(d)?;
    match v {
        None | Some(Value::Null) => Ok(Some(T::default())),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// `protocols.grpc`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Listening `host:port` (default `localhost:4317`; containers bind `0.0.0.0:4317`).
    pub endpoint: String,
    /// Only `tcp` is supported.
    pub transport: String,
    /// Largest request accepted, after decompression, in MiB (default `4`). Larger ones get
    /// RESOURCE_EXHAUSTED.
    pub max_recv_msg_size_mib: u64,
    /// HTTP/2 streams one connection may have open at once (default `100`), so that no
    /// single client can hoard the server.
    pub max_concurrent_streams: Option<u32>,
    /// Connection keepalive, idle and age limits.
    pub keepalive: KeepaliveConfig,
    /// A request's message must arrive whole within this (default `30s`); a stalled upload is
    /// answered DEADLINE_EXCEEDED and its memory released.
    pub read_timeout: HumanDuration,
    /// Connections served at once (default `1024`); more are closed when accepted.
    pub max_connections: usize,
    /// Server TLS, and mutual TLS with `client_ca_file`; plaintext when unset.
    pub tls: Option<TlsServerConfig>,
    /// `authenticator`: the authenticator extension that admits requests.
    pub auth: Option<AuthSettings>,
    /// Keep each request's headers with its data (default `false`), for `from_context`,
    /// `metadata_keys` and routing by `request[...]`. The authenticator's credential header is
    /// never kept.
    pub include_metadata: bool,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: "localhost:4317".to_owned(),
            transport: "tcp".to_owned(),
            max_recv_msg_size_mib: 4,
            max_concurrent_streams: None,
            keepalive: KeepaliveConfig::default(),
            read_timeout: HumanDuration::from_secs(30),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls: None,
            auth: None,
            include_metadata: false,
        }
    }
}

/// `protocols.grpc.keepalive`, in the Collector's shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveConfig {
    /// Server-side keepalive.
    pub server_parameters: ServerParameters,
    /// Accepted for compatibility; sluice does not police client pings.
    pub enforcement_policy: Option<Value>,
}

/// `keepalive.server_parameters`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerParameters {
    /// Ask connections older than this to go away (GOAWAY; default: never).
    pub max_connection_age: Option<HumanDuration>,
    /// How long calls under way may finish after that (default `30s`).
    pub max_connection_age_grace: Option<HumanDuration>,
    /// Close a connection with no call under way for this long (default `30s`).
    pub max_connection_idle: Option<HumanDuration>,
    /// Ping an idle client this often.
    pub time: Option<HumanDuration>,
    /// Close the connection when a ping is not answered within this.
    pub timeout: Option<HumanDuration>,
}

/// `protocols.http`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listening `host:port` (default `localhost:4318`; containers bind `0.0.0.0:4318`).
    pub endpoint: String,
    /// Largest body accepted, compressed and again after decompression (default `20MiB`);
    /// larger ones get 413.
    pub max_request_body_size: ByteSize,
    /// Path for traces (default `/v1/traces`).
    pub traces_url_path: String,
    /// Path for metrics (default `/v1/metrics`).
    pub metrics_url_path: String,
    /// Path for logs (default `/v1/logs`).
    pub logs_url_path: String,
    /// Cross-origin requests from browser apps; off unless origins are listed.
    pub cors: Option<CorsConfig>,
    /// A request's headers must arrive within this (default `10s`; HTTP/1).
    pub read_header_timeout: HumanDuration,
    /// A request's body must arrive whole within this (default `30s`); a stalled upload is
    /// answered 408 and its memory released.
    pub read_timeout: HumanDuration,
    /// Close a connection with no request under way for this long (default `30s`).
    pub idle_timeout: HumanDuration,
    /// Connections served at once (default `1024`); more are closed when accepted.
    pub max_connections: usize,
    /// HTTP/2 streams one connection may have open at once (default `100`).
    pub max_concurrent_streams: u32,
    /// Server TLS, and mutual TLS with `client_ca_file`; plaintext when unset.
    pub tls: Option<TlsServerConfig>,
    /// `authenticator`: the authenticator extension that admits requests.
    pub auth: Option<AuthSettings>,
    /// Keep each request's headers with its data (default `false`), for `from_context`,
    /// `metadata_keys` and routing by `request[...]`. The authenticator's credential header is
    /// never kept.
    pub include_metadata: bool,
}

/// Connections one listener serves at once unless configured.
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// HTTP/2 streams per connection unless configured: the floor RFC 9113 recommends, and what
/// keeps one client from opening thousands of streams.
const DEFAULT_MAX_STREAMS: u32 = 100;
/// Idle connections are closed after this unless configured.
const DEFAULT_IDLE: HumanDuration = HumanDuration::from_secs(30);

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: "localhost:4318".to_owned(),
            max_request_body_size: ByteSize::mib(20),
            traces_url_path: "/v1/traces".to_owned(),
            metrics_url_path: "/v1/metrics".to_owned(),
            logs_url_path: "/v1/logs".to_owned(),
            cors: None,
            read_header_timeout: HumanDuration::from_secs(10),
            read_timeout: HumanDuration::from_secs(30),
            idle_timeout: DEFAULT_IDLE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_streams: DEFAULT_MAX_STREAMS,
            tls: None,
            auth: None,
            include_metadata: false,
        }
    }
}

impl HttpConfig {
    pub(crate) fn path(&self, signal: Signal) -> &str {
        match signal {
            Signal::Traces => &self.traces_url_path,
            Signal::Metrics => &self.metrics_url_path,
            Signal::Logs => &self.logs_url_path,
        }
    }
}

/// `protocols.http.cors`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed, exactly or with one `*` wildcard (`https://*.example.com`). A lone `*`
    /// is refused, as in the Collector.
    pub allowed_origins: Vec<String>,
    /// Request headers allowed besides the CORS-safelisted ones.
    pub allowed_headers: Vec<String>,
    /// How long browsers may cache a preflight answer, in seconds.
    pub max_age: Option<u64>,
}

impl OtlpReceiverConfig {
    fn check(&self, path: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let p = format!("{path}.protocols");
        if self.protocols.grpc.is_none() && self.protocols.http.is_none() {
            problems.push(Problem::error(&p, "enable at least one of grpc and http"));
        }
        if let Some(g) = &self.protocols.grpc {
            if let Err(m) = check_endpoint(&g.endpoint) {
                problems.push(Problem::error(format!("{p}.grpc.endpoint"), m));
            }
            if g.transport != "tcp" {
                problems.push(Problem::error(
                    format!("{p}.grpc.transport"),
                    format!("unsupported transport `{}`; only tcp", g.transport),
                ));
            }
            if g.max_recv_msg_size_mib == 0 {
                problems.push(Problem::error(
                    format!("{p}.grpc.max_recv_msg_size_mib"),
                    "must be at least 1",
                ));
            }
            if g.max_connections == 0 {
                problems.push(Problem::error(
                    format!("{p}.grpc.max_connections"),
                    "must be at least 1",
                ));
            }
            if g.max_concurrent_streams == Some(0) {
                problems.push(Problem::error(
                    format!("{p}.grpc.max_concurrent_streams"),
                    "must be at least 1",
                ));
            }
            if let Some(tls) = &g.tls {
                problems.extend(tls.check(&format!("{p}.grpc.tls")));
            }
            if g.keepalive.enforcement_policy.is_some() {
                problems.push(Problem::warning(
                    format!("{p}.grpc.keepalive.enforcement_policy"),
                    "not enforced by sluice; ignored",
                ));
            }
        }
        if let Some(h) = &self.protocols.http {
            if let Err(m) = check_endpoint(&h.endpoint) {
                problems.push(Problem::error(format!("{p}.http.endpoint"), m));
            }
            if h.max_connections == 0 || h.max_concurrent_streams == 0 {
                problems.push(Problem::error(
                    format!("{p}.http"),
                    "max_connections and max_concurrent_streams must be at least 1",
                ));
            }
            if let Some(tls) = &h.tls {
                problems.extend(tls.check(&format!("{p}.http.tls")));
            }
            if h.max_request_body_size.bytes() == 0 {
                problems.push(Problem::error(
                    format!("{p}.http.max_request_body_size"),
                    "must be greater than zero",
                ));
            }
            for signal in Signal::ALL {
                let url = h.path(signal);
                if !url.starts_with('/') {
                    problems.push(Problem::error(
                        format!("{p}.http.{}_url_path", signal.as_str()),
                        format!("`{url}` must start with `/`"),
                    ));
                }
            }
            if let Some(cors) = &h.cors {
                for (i, o) in cors.allowed_origins.iter().enumerate() {
                    if o == "*" {
                        problems.push(Problem::error(
                            format!("{p}.http.cors.allowed_origins[{i}]"),
                            "a lone `*` is not allowed; list the origins (wildcards like `https://*.example.com` are fine)",
                        ));
                    }
                }
            }
        }
        problems
    }
}

struct OtlpReceiver {
    id: String,
    config: OtlpReceiverConfig,
}

#[async_trait]
impl Receiver for OtlpReceiver {
    async fn start(
        self: Box<Self>,
        outputs: ReceiverOutputs,
        shutdown: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, BuildError> {
        let authenticators = outputs.authenticators.clone();
        let auth = |settings: &Option<AuthSettings>, transport: &'static str| {
            settings
                .as_ref()
                .map(|a| {
                    let authenticator = authenticators.get(&a.authenticator).cloned().ok_or_else(|| {
                        BuildError::Other(format!(
                            "receivers.{}.protocols.{transport}.auth: `{}` is not a running authenticator extension (list it in service.extensions)",
                            self.id, a.authenticator
                        ))
                    })?;
                    Ok::<_, BuildError>(sluice_net::ServerAuth::new(
                        authenticator,
                        metrics::counter!(
                            sluice_core::metrics::RECEIVER_REQUESTS,
                            "receiver" => self.id.clone(),
                            "transport" => transport,
                            "outcome" => "unauthenticated"
                        ),
                    ))
                })
                .transpose()
        };
        let grpc_auth = auth(
            &self
                .config
                .protocols
                .grpc
                .as_ref()
                .and_then(|g| g.auth.clone()),
            "grpc",
        )?;
        let http_auth = auth(
            &self
                .config
                .protocols
                .http
                .as_ref()
                .and_then(|h| h.auth.clone()),
            "http",
        )?;
        let intake = Arc::new(Intake::new(&self.id, outputs, &["grpc", "http"]));
        let mut tasks = Vec::new();
        if let Some(g) = &self.config.protocols.grpc {
            tasks.push(
                grpc::serve(
                    &self.id,
                    g,
                    grpc_auth,
                    Arc::clone(&intake),
                    shutdown.clone(),
                )
                .await?,
            );
        }
        if let Some(h) = &self.config.protocols.http {
            tasks.push(
                http::serve(
                    &self.id,
                    h,
                    http_auth,
                    Arc::clone(&intake),
                    shutdown.clone(),
                )
                .await?,
            );
        }
        Ok(tasks)
    }
}

/// Builds `otlp` receivers.
#[derive(Debug, Default)]
pub struct OtlpReceiverFactory;

impl ReceiverFactory for OtlpReceiverFactory {
    fn type_name(&self) -> &'static str {
        "otlp"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &OtlpReceiverConfig| c.check(path))
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn Receiver>, BuildError> {
        let config = typed(&format!("receivers.{id}"), config)?;
        Ok(Box::new(OtlpReceiver {
            id: id.to_owned(),
            config,
        }))
    }
}

/// Resolves `host:port` to socket addresses, for binding.
pub(crate) async fn bind(endpoint: &str) -> Result<tokio::net::TcpListener, BuildError> {
    tokio::net::TcpListener::bind(endpoint)
        .await
        .map_err(|source| BuildError::Bind {
            endpoint: endpoint.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: Value) -> Vec<String> {
        OtlpReceiverFactory
            .check("receivers.otlp", &v)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_bare_protocol_is_enabled_with_defaults() {
        let c: OtlpReceiverConfig =
            serde_json::from_value(serde_json::json!({"protocols": {"grpc": null}})).unwrap();
        assert_eq!(c.protocols.grpc.unwrap().endpoint, "localhost:4317");
        assert!(c.protocols.http.is_none());
    }

    #[test]
    fn reports_bad_settings_with_paths() {
        let p = check(serde_json::json!({"protocols": {
            "grpc": {"endpoint": "0.0.0.0:70000"},
            "http": {"endpoint": "localhost", "cors": {"allowed_origins": ["*"]}, "traces_url_path": "v1/t"}
        }}));
        let expected = [
            "error: receivers.otlp.protocols.grpc.endpoint: invalid port `70000` in endpoint `0.0.0.0:70000`; ports are 0 to 65535",
            "error: receivers.otlp.protocols.http.endpoint: endpoint `localhost` needs a port, like `localhost:4317`",
            "error: receivers.otlp.protocols.http.traces_url_path: `v1/t` must start with `/`",
        ];
        for e in expected {
            assert!(p.iter().any(|x| x == e), "missing {e}: {p:#?}");
        }
        assert!(
            p.iter().any(|x| x.contains("cors.allowed_origins[0]")),
            "{p:#?}"
        );
        let p = check(serde_json::json!({"protocols": {"grpc": {"max_recv_msg_size": 4}}}));
        assert!(p[0].contains("receivers.otlp.protocols.grpc"), "{p:#?}");
        assert!(p[0].contains("unknown field `max_recv_msg_size`"), "{p:#?}");
        let p = check(serde_json::json!({"protocols": {}}));
        assert_eq!(
            p,
            ["error: receivers.otlp.protocols: enable at least one of grpc and http"]
        );
    }
}
