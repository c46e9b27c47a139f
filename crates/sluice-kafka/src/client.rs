//! What the `kafka` exporter and receiver share: the Collector's client settings (`brokers`,
//! `client_id`, `tls`, `auth`, `metadata`, ...), checked once and turned into librdkafka
//! properties once, and the client context that sends librdkafka's log to sluice's.

use std::collections::BTreeMap;

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use serde::Deserialize;
use sluice_config::{HumanDuration, Problem};
use sluice_net::TlsClientConfig;

/// `brokers`: one address or a list (the Collector takes both).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Brokers {
    /// `brokers: kafka:9092`.
    One(String),
    /// `brokers: [kafka-0:9092, kafka-1:9092]`.
    Many(Vec<String>),
}

impl Default for Brokers {
    fn default() -> Self {
        Brokers::One("localhost:9092".to_owned())
    }
}

impl Brokers {
    fn joined(&self) -> String {
        match self {
            Brokers::One(b) => b.clone(),
            Brokers::Many(b) => b.join(","),
        }
    }
}

/// `auth`: SASL and, deprecated there, TLS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// SASL: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl: Option<SaslConfig>,
    /// Deprecated in the Collector (v0.123): SASL `PLAIN` with these credentials.
    pub plain_text: Option<PlainText>,
    /// Deprecated in the Collector (v0.124): the top-level `tls`.
    pub tls: Option<TlsClientConfig>,
    /// Not supported by sluice: refused by `sluice validate`.
    pub kerberos: Option<serde_json::Value>,
}

/// `auth.sasl`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SaslConfig {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    /// SASL handshake version, 0 or 1 (librdkafka negotiates it; accepted for compatibility).
    pub version: i32,
    /// Not supported by sluice (AWS MSK IAM): refused.
    pub aws_msk: Option<serde_json::Value>,
    /// Not supported by sluice (OAUTHBEARER): refused.
    pub oauthbearer_token_source: Option<String>,
}

/// `auth.plain_text`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlainText {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

/// `metadata`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    /// Deprecated in the Collector and without effect: accepted.
    pub full: Option<bool>,
    /// How often cluster metadata is refreshed (default 10m).
    pub refresh_interval: HumanDuration,
    /// Retries of metadata, group and offset requests.
    pub retry: MetadataRetry,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            full: None,
            refresh_interval: HumanDuration::from_secs(600),
            retry: MetadataRetry::default(),
        }
    }
}

/// `metadata.retry`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataRetry {
    /// Not applied: librdkafka retries a request until its timeouts. Accepted with a warning
    /// when set.
    pub max: Option<u32>,
    /// The first wait before a retry, doubled each time (default 250ms).
    pub backoff: HumanDuration,
}

impl Default for MetadataRetry {
    fn default() -> Self {
        MetadataRetry {
            max: None,
            backoff: HumanDuration::from_millis(250),
        }
    }
}

/// The client settings both components take, flattened into their configs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    /// Bootstrap brokers (default `localhost:9092`).
    pub brokers: Brokers,
    /// Kafka protocol version of the brokers (default `2.1.0`): checked and accepted; librdkafka
    /// asks each broker which versions it speaks (brokers before 0.10, which cannot say, are not
    /// supported).
    pub protocol_version: String,
    /// Resolve the bootstrap addresses and use their canonical names only.
    pub resolve_canonical_bootstrap_servers_only: bool,
    /// The client id (default `otel-collector`, as the Collector's).
    pub client_id: String,
    /// Idle connections are closed after this long (default 9m).
    pub conn_idle_timeout: HumanDuration,
    /// TLS to the brokers; absent means plaintext.
    pub tls: Option<TlsClientConfig>,
    /// SASL.
    pub auth: Option<AuthConfig>,
    /// Cluster metadata.
    pub metadata: MetadataConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            brokers: Brokers::default(),
            protocol_version: "2.1.0".to_owned(),
            resolve_canonical_bootstrap_servers_only: false,
            client_id: "otel-collector".to_owned(),
            conn_idle_timeout: HumanDuration::from_secs(540),
            tls: None,
            auth: None,
            metadata: MetadataConfig::default(),
        }
    }
}

impl ClientConfig {
    /// Every problem with the client settings; `path` is the component's.
    pub fn check(&self, path: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let brokers = match &self.brokers {
            Brokers::One(b) => vec![b.clone()],
            Brokers::Many(b) => b.clone(),
        };
        if brokers.is_empty() || brokers.iter().any(|b| b.trim().is_empty()) {
            p.push(Problem::error(
                format!("{path}.brokers"),
                "brokers must name at least one host:port, none empty",
            ));
        }
        for b in &brokers {
            let port = b.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
            if !b.is_empty() && !matches!(port, Some(Ok(_))) {
                p.push(Problem::error(
                    format!("{path}.brokers"),
                    format!("broker {b:?} is not host:port"),
                ));
            }
        }
        let version: Option<Vec<u32>> = self
            .protocol_version
            .split('.')
            .map(|n| n.parse().ok())
            .collect();
        match version.as_deref() {
            None | Some([]) => p.push(Problem::error(
                format!("{path}.protocol_version"),
                format!(
                    "{:?} is not a Kafka version such as 2.1.0",
                    self.protocol_version
                ),
            )),
            // librdkafka asks each broker which versions it speaks; brokers before 0.10 cannot
            // say, and librdkafka no longer speaks to them.
            Some(v) if v < [0, 10].as_slice() => p.push(Problem::error(
                format!("{path}.protocol_version"),
                "brokers before Kafka 0.10 are not supported",
            )),
            Some(_) => {}
        }
        if self.metadata.retry.max.is_some() {
            p.push(Problem::warning(
                format!("{path}.metadata.retry.max"),
                "not applied: librdkafka retries metadata, group and offset requests until their timeouts",
            ));
        }
        if let Some(tls) = self.tls() {
            p.extend(tls.check(path));
            if tls.server_name_override.is_some() {
                p.push(Problem::error(
                    format!("{path}.tls.server_name_override"),
                    "not supported by the kafka components: librdkafka verifies the broker's advertised host name",
                ));
            }
        }
        if let Some(auth) = &self.auth {
            if auth.kerberos.is_some() {
                p.push(Problem::error(
                    format!("{path}.auth.kerberos"),
                    "Kerberos (GSSAPI) is not supported by sluice: use SASL PLAIN or SCRAM with TLS",
                ));
            }
            if auth.tls.is_some() && self.tls.is_some() {
                p.push(Problem::error(
                    format!("{path}.auth.tls"),
                    "set tls at the top level only (auth.tls is its deprecated alias)",
                ));
            }
            if auth.sasl.is_some() && auth.plain_text.is_some() {
                p.push(Problem::error(
                    format!("{path}.auth.plain_text"),
                    "set auth.sasl or the deprecated auth.plain_text, not both",
                ));
            }
            if let Some(sasl) = &auth.sasl {
                let at = format!("{path}.auth.sasl");
                match sasl.mechanism.as_str() {
                    "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512" => {}
                    "AWS_MSK_IAM_OAUTHBEARER" | "OAUTHBEARER" => p.push(Problem::error(
                        format!("{at}.mechanism"),
                        format!("{} is not supported by sluice: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", sasl.mechanism),
                    )),
                    other => p.push(Problem::error(
                        format!("{at}.mechanism"),
                        format!("unknown SASL mechanism {other:?}: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
                    )),
                }
                if sasl.username.is_empty() {
                    p.push(Problem::error(
                        format!("{at}.username"),
                        "a username is required",
                    ));
                }
                if !matches!(sasl.version, 0 | 1) {
                    p.push(Problem::error(
                        format!("{at}.version"),
                        "the SASL version is 0 or 1",
                    ));
                }
                if sasl.aws_msk.is_some() || sasl.oauthbearer_token_source.is_some() {
                    p.push(Problem::error(
                        at,
                        "aws_msk and oauthbearer_token_source are not supported by sluice",
                    ));
                }
            }
        }
        p
    }

    fn tls(&self) -> Option<&TlsClientConfig> {
        self.tls
            .as_ref()
            .or_else(|| self.auth.as_ref().and_then(|a| a.tls.as_ref()))
    }

    /// The librdkafka properties these settings mean.
    pub fn properties(&self) -> BTreeMap<&'static str, String> {
        let mut p = BTreeMap::new();
        p.insert("bootstrap.servers", self.brokers.joined());
        p.insert("client.id", self.client_id.clone());
        if self.resolve_canonical_bootstrap_servers_only {
            p.insert(
                "client.dns.lookup",
                "resolve_canonical_bootstrap_servers_only".to_owned(),
            );
        }
        p.insert(
            "connections.max.idle.ms",
            self.conn_idle_timeout.0.as_millis().to_string(),
        );
        p.insert(
            "topic.metadata.refresh.interval.ms",
            self.metadata.refresh_interval.0.as_millis().to_string(),
        );
        p.insert(
            "retry.backoff.ms",
            self.metadata.retry.backoff.0.as_millis().max(1).to_string(),
        );
        let tls = self.tls().filter(|t| !t.insecure);
        let sasl = self
            .auth
            .as_ref()
            .and_then(|a| match (&a.sasl, &a.plain_text) {
                (Some(s), _) => Some((s.mechanism.clone(), s.username.clone(), s.password.clone())),
                (None, Some(plain)) => Some((
                    "PLAIN".to_owned(),
                    plain.username.clone(),
                    plain.password.clone(),
                )),
                (None, None) => None,
            });
        let protocol = match (tls.is_some(), sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        p.insert("security.protocol", protocol.to_owned());
        if let Some(tls) = tls {
            if let Some(ca) = &tls.ca_file {
                p.insert("ssl.ca.location", ca.clone());
            }
            if let Some(cert) = &tls.cert_file {
                p.insert("ssl.certificate.location", cert.clone());
            }
            if let Some(key) = &tls.key_file {
                p.insert("ssl.key.location", key.clone());
            }
            if tls.insecure_skip_verify {
                p.insert("enable.ssl.certificate.verification", "false".to_owned());
                p.insert("ssl.endpoint.identification.algorithm", "none".to_owned());
            }
        }
        if let Some((mechanism, username, password)) = sasl {
            p.insert("sasl.mechanism", mechanism);
            p.insert("sasl.username", username);
            p.insert("sasl.password", password);
        }
        p
    }
}

/// The client context of both components: librdkafka's log and errors go to sluice's log,
/// tagged with the component.
#[derive(Clone)]
pub(crate) struct Context {
    /// `exporters.kafka/x` or `receivers.kafka/x`.
    pub(crate) component: String,
}

impl ClientContext for Context {
    /// librdkafka's log, its errors as warnings: they are a broker connection failing or a
    /// request timing out, which the client retries (data it gives up on reaches sluice's log
    /// through the component's own errors).
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let component = &self.component;
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(component, facility = fac, "librdkafka: {log_message}");
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                tracing::warn!(component, facility = fac, "librdkafka: {log_message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(component, facility = fac, "librdkafka: {log_message}");
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(component, facility = fac, "librdkafka: {log_message}");
            }
        }
    }

    /// librdkafka's error events. Most repeat a line of its log (a connection failed), so only
    /// every broker being down is a warning of its own.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            tracing::warn!(
                component = self.component,
                "kafka: every broker is unreachable: {reason}"
            );
        } else {
            tracing::debug!(component = self.component, %error, "kafka client: {reason}");
        }
    }
}

/// A librdkafka config from these properties.
pub(crate) fn rd_config(properties: &BTreeMap<&'static str, String>) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    for (k, v) in properties {
        c.set(*k, v);
    }
    c.set_log_level(RDKafkaLogLevel::Warning);
    c
}
