//! The `otlp` (gRPC) and `otlphttp` exporters: forward batches, still encoded, to another
//! collector or backend. Neither decodes what it sends.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use sluice_config::Problem;
use sluice_core::auth::{AuthSettings, ClientAuthenticator};
use sluice_core::{
    Batch, BuildError, BuiltExporter, ExportError, Exporter, ExporterContext, ExporterFactory,
    HelperSettings, Signal, typed,
};
use sluice_net::{
    Compression, CompressionParams, Compressor, Message, TlsClientConfig, UnaryClient,
};

use crate::status;

/// `exporters.otlp` (gRPC) and `exporters.otlphttp`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// gRPC: `host:port` or `http(s)://host:port`. HTTP: the base URL; `/v1/<signal>` is appended.
    pub endpoint: String,
    /// HTTP only: full URL for traces, overriding `endpoint`.
    #[serde(default)]
    pub traces_endpoint: Option<String>,
    /// HTTP only: full URL for metrics, overriding `endpoint`.
    #[serde(default)]
    pub metrics_endpoint: Option<String>,
    /// HTTP only: full URL for logs, overriding `endpoint`.
    #[serde(default)]
    pub logs_endpoint: Option<String>,
    /// HTTP only: `proto` (the only encoding sluice sends).
    #[serde(default)]
    pub encoding: Option<String>,
    /// Headers (gRPC metadata) sent with every request, e.g. `authorization`. Values are
    /// redacted in logs.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `gzip` (default), `zstd`, `snappy` or `none`. The receiver must accept it: OTLP requires
    /// only gzip.
    #[serde(default = "gzip_default")]
    pub compression: Compression,
    /// `level`: gzip 1 to 9 (default 1), zstd 1 to 22 (default 3).
    #[serde(default)]
    pub compression_params: CompressionParams,
    /// TLS settings.
    #[serde(default)]
    pub tls: TlsClientConfig,
    /// `authenticator`: the extension whose credentials every request carries
    /// (`bearertokenauth`, `basicauth` with `client_auth`).
    #[serde(default)]
    pub auth: Option<AuthSettings>,
}

fn gzip_default() -> Compression {
    Compression::Gzip
}

impl OtlpExporterConfig {
    /// Problems with an `otlp` (gRPC) exporter's settings.
    pub(crate) fn check_grpc(&self, path: &str) -> Vec<Problem> {
        self.check(path, false)
    }

    fn check(&self, path: &str, http: bool) -> Vec<Problem> {
        let mut p = self.tls.check(path);
        p.extend(Compressor::check(
            self.compression,
            self.compression_params,
            path,
        ));
        if self.endpoint.is_empty() {
            p.push(Problem::error(format!("{path}.endpoint"), "is required"));
        }
        for (name, value) in &self.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(Problem::error(
                    format!("{path}.headers.{name}"),
                    "invalid header name",
                ));
            }
            if HeaderValue::from_str(value).is_err() {
                p.push(Problem::error(
                    format!("{path}.headers.{name}"),
                    "invalid header value",
                ));
            }
        }
        if http {
            for signal in Signal::ALL {
                match http_url(self, signal) {
                    Ok(url) if url.starts_with("http://") || url.starts_with("https://") => {}
                    _ => p.push(Problem::error(
                        format!("{path}.endpoint"),
                        "must be a URL starting with http:// or https://",
                    )),
                }
            }
            if let Some(e) = &self.encoding
                && e != "proto"
            {
                p.push(Problem::error(
                    format!("{path}.encoding"),
                    format!("unsupported encoding `{e}`; sluice sends `proto`"),
                ));
            }
        } else {
            for (key, set) in [
                ("traces_endpoint", self.traces_endpoint.is_some()),
                ("metrics_endpoint", self.metrics_endpoint.is_some()),
                ("logs_endpoint", self.logs_endpoint.is_some()),
                ("encoding", self.encoding.is_some()),
            ] {
                if set {
                    p.push(Problem::error(
                        format!("{path}.{key}"),
                        "only the otlphttp exporter takes this setting",
                    ));
                }
            }
        }
        p.dedup();
        p
    }
}

fn http_url(c: &OtlpExporterConfig, signal: Signal) -> Result<String, String> {
    let specific = match signal {
        Signal::Traces => &c.traces_endpoint,
        Signal::Metrics => &c.metrics_endpoint,
        Signal::Logs => &c.logs_endpoint,
    };
    match specific {
        Some(url) => Ok(url.clone()),
        None => Ok(format!(
            "{}{}",
            c.endpoint.trim_end_matches('/'),
            signal.http_path()
        )),
    }
}

pub(crate) struct GrpcExporter {
    id: String,
    /// One client per signal (each calls its own service), over one channel.
    clients: [UnaryClient; 3],
}

fn index(signal: Signal) -> usize {
    Signal::ALL.iter().position(|s| *s == signal).unwrap_or(0)
}

#[async_trait]
impl Exporter for GrpcExporter {
    /// The signal's client and the request, compressed when configured (once per batch).
    type Encoded = (usize, Message);

    fn encode(&self, batch: &Batch) -> Result<(usize, Message), ExportError> {
        let client = index(batch.signal());
        Ok((client, self.clients[client].prepare(batch.data().clone())?))
    }

    async fn send(&self, (client, message): &(usize, Message)) -> Result<(), ExportError> {
        let response = self.clients[*client].call(message).await?;
        if let Some((rejected, message)) = status::decode_partial_success(&response) {
            tracing::warn!(exporter = %self.id, rejected, message = %message, "partial success: the receiver rejected some items");
        }
        Ok(())
    }
}

pub(crate) fn grpc_exporter(
    id: &str,
    c: &OtlpExporterConfig,
    auth: Option<Arc<dyn ClientAuthenticator>>,
) -> Result<GrpcExporter, BuildError> {
    let channel = sluice_net::channel(&c.endpoint, &c.tls)?;
    let metadata = sluice_net::metadata(&c.headers)?;
    let compressor = compressor(c)?;
    let client = |signal: Signal| {
        UnaryClient::new(
            channel.clone(),
            signal.grpc_path(),
            metadata.clone(),
            compressor,
        )
        .with_auth(auth.clone())
    };
    Ok(GrpcExporter {
        id: id.to_owned(),
        clients: Signal::ALL.map(client),
    })
}

fn compressor(c: &OtlpExporterConfig) -> Result<Compressor, BuildError> {
    Compressor::new(c.compression, c.compression_params).map_err(BuildError::Other)
}

struct HttpExporter {
    id: String,
    client: reqwest::Client,
    /// Per signal.
    urls: [String; 3],
    headers: reqwest::header::HeaderMap,
    compressor: Compressor,
    auth: Option<Arc<dyn ClientAuthenticator>>,
}

#[async_trait]
impl Exporter for HttpExporter {
    /// The signal's URL and the body, compressed when configured (once per batch).
    type Encoded = (usize, Bytes);

    fn encode(&self, batch: &Batch) -> Result<(usize, Bytes), ExportError> {
        let body = self
            .compressor
            .compress(batch.data(), false)?
            .unwrap_or_else(|| batch.data().clone());
        Ok((index(batch.signal()), body))
    }

    async fn send(&self, (url, body): &(usize, Bytes)) -> Result<(), ExportError> {
        let url = &self.urls[*url];
        let mut request = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
        if let Some(encoding) = self.compressor.encoding() {
            request = request.header(reqwest::header::CONTENT_ENCODING, encoding);
        }
        let request = sluice_net::authorize(request, self.auth.as_ref());
        let answer = sluice_net::send(request.body(body.clone()), url).await?;
        if answer.status.is_success() {
            if let Some((rejected, message)) = status::decode_partial_success(&answer.body) {
                tracing::warn!(exporter = %self.id, rejected, message = %message, "partial success: the receiver rejected some items");
            }
            return Ok(());
        }
        // The receiver's google.rpc.Status says more than its bytes.
        let detail = prost::Message::decode(answer.body.as_ref())
            .map(|s: sluice_net::RpcStatus| s.message)
            .ok();
        // Retryable per the OTLP specification: 429, 502, 503, 504.
        let retryable = matches!(answer.status.as_u16(), 429 | 502 | 503 | 504);
        Err(answer.error(url, detail, retryable))
    }
}

fn http_exporter(
    id: &str,
    c: &OtlpExporterConfig,
    auth: Option<Arc<dyn ClientAuthenticator>>,
) -> Result<HttpExporter, BuildError> {
    let client = sluice_net::http_client(&c.tls)?;
    let headers = sluice_net::http_headers(&c.headers)?;
    let url = |signal| http_url(c, signal).map_err(BuildError::Other);
    Ok(HttpExporter {
        id: id.to_owned(),
        client,
        urls: [
            url(Signal::Traces)?,
            url(Signal::Metrics)?,
            url(Signal::Logs)?,
        ],
        headers,
        compressor: compressor(c)?,
        auth,
    })
}

/// Builds `otlp` (gRPC) exporters.
#[derive(Debug, Default)]
pub struct OtlpExporterFactory;

/// Builds `otlphttp` exporters.
#[derive(Debug, Default)]
pub struct OtlpHttpExporterFactory;

impl ExporterFactory for OtlpExporterFactory {
    fn type_name(&self) -> &'static str {
        "otlp"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &OtlpExporterConfig| c.check(path, false))
    }

    fn build(
        &self,
        id: &str,
        config: &Value,
        _helper: &mut HelperSettings,
        context: &ExporterContext,
    ) -> Result<BuiltExporter, BuildError> {
        let path = format!("exporters.{id}");
        let c: OtlpExporterConfig = typed(&path, config)?;
        let auth = context.client_auth(&path, c.auth.as_ref())?;
        Ok(BuiltExporter::Push(Arc::new(grpc_exporter(id, &c, auth)?)))
    }
}

impl ExporterFactory for OtlpHttpExporterFactory {
    fn type_name(&self) -> &'static str {
        "otlphttp"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "metrics", "logs"]
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &OtlpExporterConfig| c.check(path, true))
    }

    fn build(
        &self,
        id: &str,
        config: &Value,
        _helper: &mut HelperSettings,
        context: &ExporterContext,
    ) -> Result<BuiltExporter, BuildError> {
        let path = format!("exporters.{id}");
        let c: OtlpExporterConfig = typed(&path, config)?;
        let auth = context.client_auth(&path, c.auth.as_ref())?;
        Ok(BuiltExporter::Push(Arc::new(http_exporter(id, &c, auth)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_append_the_signal_path_unless_overridden() {
        let c: OtlpExporterConfig = serde_json::from_value(serde_json::json!({
            "endpoint": "http://collector:4318/", "logs_endpoint": "http://logs:9000/ingest"
        }))
        .unwrap();
        assert_eq!(
            http_url(&c, Signal::Traces).unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            http_url(&c, Signal::Logs).unwrap(),
            "http://logs:9000/ingest"
        );
    }

    #[test]
    fn config_problems_have_paths() {
        let p = sluice_core::check_exporter(
            &OtlpExporterFactory,
            "exporters.otlp",
            &serde_json::json!({"endpoint": "x:1", "logs_endpoint": "http://y", "retry_on_failure": {"multiplier": 0.5}}),
        );
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(
                &"error: exporters.otlp.retry_on_failure.multiplier: must be at least 1".to_owned()
            ),
            "{text:#?}"
        );
        assert!(text.contains(&"error: exporters.otlp.logs_endpoint: only the otlphttp exporter takes this setting".to_owned()), "{text:#?}");
        let p = OtlpHttpExporterFactory.check(
            "exporters.otlphttp",
            &serde_json::json!({"endpoint": "collector:4318"}),
        );
        assert_eq!(
            p[0].to_string(),
            "error: exporters.otlphttp.endpoint: must be a URL starting with http:// or https://"
        );
    }
}
