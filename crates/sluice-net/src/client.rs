//! gRPC clients for exporters: TLS channels, metadata, unary calls on encoded bytes, and the
//! OTLP specification's retry classification of statuses.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use sluice_config::Problem;
use sluice_core::{BuildError, ExportError};
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{RawCodec, retry_delay};

/// `tls`: client TLS settings shared by every exporter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsClientConfig {
    /// Plaintext for gRPC endpoints without a scheme (the Collector's meaning; default `false`).
    pub insecure: bool,
    /// Skip verifying the server's certificate (testing only).
    pub insecure_skip_verify: bool,
    /// PEM file of CA certificates to trust instead of the system's.
    pub ca_file: Option<String>,
    /// PEM client certificate, for mutual TLS (with `key_file`).
    pub cert_file: Option<String>,
    /// PEM client key, for mutual TLS (with `cert_file`).
    pub key_file: Option<String>,
    /// Name to verify the server's certificate against, instead of the endpoint's host.
    pub server_name_override: Option<String>,
}

impl TlsClientConfig {
    /// Checks the settings; `path` is the exporter's path in the file.
    pub fn check(&self, path: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.cert_file.is_some() != self.key_file.is_some() {
            p.push(Problem::error(
                format!("{path}.tls"),
                "cert_file and key_file go together",
            ));
        }
        p
    }
}

/// Compression of export requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip.
    Gzip,
    /// No compression.
    None,
}

fn read(path: &str) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|e| BuildError::Other(format!("cannot read {path}: {e}")))
}

/// A lazily connecting channel to `endpoint`: `host:port` (TLS unless `tls.insecure`, the
/// Collector's rule), or an `http://` / `https://` URL.
///
/// # Errors
/// [`BuildError::Other`] for an invalid endpoint or unreadable TLS files.
pub fn channel(endpoint: &str, tls: &TlsClientConfig) -> Result<Channel, BuildError> {
    let (uri, secure) = if endpoint.starts_with("https://") {
        (endpoint.to_owned(), true)
    } else if endpoint.starts_with("http://") {
        (endpoint.to_owned(), false)
    } else if tls.insecure {
        (format!("http://{endpoint}"), false)
    } else {
        (format!("https://{endpoint}"), true)
    };
    let mut e = Endpoint::from_shared(uri.clone())
        .map_err(|err| BuildError::Other(format!("invalid endpoint `{uri}`: {err}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if secure {
        let mut t = ClientTlsConfig::new();
        match &tls.ca_file {
            Some(ca) => t = t.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => t = t.with_native_roots(),
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &tls.server_name_override {
            t = t.domain_name(name.clone());
        }
        e = e
            .tls_config(t)
            .map_err(|err| BuildError::Other(format!("invalid TLS settings: {err}")))?;
    }
    Ok(e.connect_lazy())
}

/// Request metadata from configured headers (names lowercased, as gRPC requires).
///
/// # Errors
/// [`BuildError::Other`] naming an invalid header name or value.
pub fn metadata(headers: &BTreeMap<String, String>) -> Result<MetadataMap, BuildError> {
    let mut metadata = MetadataMap::new();
    for (k, v) in headers {
        let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| BuildError::Other(format!("invalid header name `{k}`")))?;
        let value = v
            .parse()
            .map_err(|_| BuildError::Other(format!("invalid value for header `{k}`")))?;
        metadata.insert(key, value);
    }
    Ok(metadata)
}

/// Whether a status is worth retrying, per the OTLP specification: CANCELLED,
/// DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS, and RESOURCE_EXHAUSTED only
/// when the server attached RetryInfo.
pub fn retryable(code: tonic::Code, has_retry_info: bool) -> bool {
    use tonic::Code;
    match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => has_retry_info,
        _ => false,
    }
}

/// The exporter error for a failed call, retryable or permanent, with the server's delay.
pub fn export_error(status: &tonic::Status) -> ExportError {
    let delay = retry_delay(status);
    let message = format!("{:?}: {}", status.code(), status.message());
    if retryable(status.code(), delay.is_some()) {
        ExportError::retryable(message).with_retry_after(delay)
    } else {
        ExportError::permanent(message)
    }
}

/// One unary method on one channel, sending and receiving encoded messages.
#[derive(Debug, Clone)]
pub struct UnaryClient {
    channel: Channel,
    path: http::uri::PathAndQuery,
    metadata: MetadataMap,
    gzip: bool,
}

impl UnaryClient {
    /// A client for the method at `path` (`/package.Service/Method`).
    pub fn new(channel: Channel, path: &'static str, metadata: MetadataMap, gzip: bool) -> Self {
        UnaryClient {
            channel,
            path: http::uri::PathAndQuery::from_static(path),
            metadata,
            gzip,
        }
    }

    /// Sends one encoded request and returns the encoded response.
    ///
    /// # Errors
    /// An [`ExportError`] classified by [`export_error`]; connection failures are retryable.
    pub async fn call(&self, body: Bytes) -> Result<Bytes, ExportError> {
        let mut client = tonic::client::Grpc::new(self.channel.clone());
        if self.gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        client = client.accept_compressed(CompressionEncoding::Gzip);
        client
            .ready()
            .await
            .map_err(|e| ExportError::retryable(format!("cannot connect: {e}")))?;
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        client
            .unary::<Bytes, Bytes, _>(request, self.path.clone(), RawCodec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| export_error(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes_like_the_specification() {
        assert!(retryable(tonic::Code::Unavailable, false));
        assert!(!retryable(tonic::Code::ResourceExhausted, false));
        assert!(retryable(tonic::Code::ResourceExhausted, true));
        assert!(!retryable(tonic::Code::InvalidArgument, false));
        let e = export_error(&tonic::Status::invalid_argument("bad span"));
        assert!(!e.retryable);
        assert!(e.message.contains("bad span"));
    }
}
