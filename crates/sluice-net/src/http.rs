//! HTTP clients for exporters (rustls): TLS files and configured headers, read once at build.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_core::BuildError;

use crate::TlsClientConfig;

fn read(path: &str) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|e| BuildError::Other(format!("cannot read {path}: {e}")))
}

/// An HTTP client honouring `tls` (extra CA, client certificate, skipping verification).
///
/// # Errors
/// [`BuildError::Other`] for unreadable or invalid certificate files.
pub fn http_client(tls: &TlsClientConfig) -> Result<reqwest::Client, BuildError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(90))
        .danger_accept_invalid_certs(tls.insecure_skip_verify);
    if let Some(ca) = &tls.ca_file {
        let cert = reqwest::Certificate::from_pem(&read(ca)?)
            .map_err(|e| BuildError::Other(format!("invalid CA file {ca}: {e}")))?;
        builder = builder.add_root_certificate(cert);
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let mut pem = read(cert)?;
        pem.extend(read(key)?);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| BuildError::Other(format!("invalid client certificate: {e}")))?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| BuildError::Other(format!("cannot build HTTP client: {e}")))
}

/// Configured headers as a header map; values are marked sensitive so they never reach logs.
///
/// # Errors
/// [`BuildError::Other`] naming an invalid header name or value.
pub fn http_headers(
    headers: &BTreeMap<String, String>,
) -> Result<reqwest::header::HeaderMap, BuildError> {
    let mut map = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| BuildError::Other(format!("invalid header name `{k}`")))?;
        let mut value = reqwest::header::HeaderValue::from_str(v)
            .map_err(|_| BuildError::Other(format!("invalid value for header `{k}`")))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}
