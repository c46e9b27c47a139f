//! HTTP for exporters, once for all of them: clients (rustls, TLS files and configured headers,
//! read once at build), and sending a request with its answer read within a cap and its
//! `Retry-After` understood in both forms.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_core::auth::ClientAuthenticator;
use sluice_core::{BuildError, ExportError};

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

/// Most of a backend's answer that is read: enough for any error message or OTLP partial
/// success, and no more, whatever the backend sends.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What an HTTP backend answered.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: reqwest::StatusCode,
    /// The delay the backend asked for (`Retry-After`, seconds or an HTTP date).
    pub retry_after: Option<Duration>,
    /// The body, at most [`MAX_ANSWER_BYTES`] of it.
    pub body: Bytes,
}

impl Answer {
    /// The error for an answer that is not a success: retryable (with the delay the backend
    /// asked for) or permanent, naming `target`, the status and `detail` or else the start of
    /// the body.
    pub fn error(&self, target: &str, detail: Option<String>, retryable: bool) -> ExportError {
        let detail = detail.unwrap_or_else(|| {
            String::from_utf8_lossy(&self.body[..self.body.len().min(256)])
                .trim()
                .to_owned()
        });
        let message = format!("{target} responded {}: {detail}", self.status);
        if retryable {
            ExportError::retryable(message).with_retry_after(self.retry_after)
        } else {
            ExportError::permanent(message)
        }
    }
}

/// Sets an authenticator's headers on a request; a header it names that HTTP cannot carry is
/// left out, and logged.
pub fn set_credentials(headers: &mut http::HeaderMap, auth: &dyn ClientAuthenticator) {
    for (name, value) in auth.headers() {
        match (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(mut value)) => {
                value.set_sensitive(true);
                headers.insert(name, value);
            }
            _ => {
                tracing::warn!(header = %name, "an authenticator's header cannot be sent; left out")
            }
        }
    }
}

/// `request` with `auth`'s credentials, when there is an authenticator.
pub fn authorize(
    request: reqwest::RequestBuilder,
    auth: Option<&Arc<dyn ClientAuthenticator>>,
) -> reqwest::RequestBuilder {
    match auth {
        None => request,
        Some(auth) => {
            let mut headers = http::HeaderMap::new();
            set_credentials(&mut headers, auth.as_ref());
            request.headers(headers)
        }
    }
}

/// Sends `request` and reads its answer, the body up to [`MAX_ANSWER_BYTES`] (the rest is left
/// unread: a backend cannot make an exporter buffer without bound).
///
/// # Errors
/// A retryable [`ExportError`] when the request cannot be sent or its answer read.
pub async fn send(request: reqwest::RequestBuilder, target: &str) -> Result<Answer, ExportError> {
    let failed =
        |e: reqwest::Error| ExportError::retryable(format!("request to {target} failed: {e}"));
    let mut response = request.send().await.map_err(failed)?;
    let status = response.status();
    let retry_after = parse_retry_after(response.headers().get(reqwest::header::RETRY_AFTER));
    let mut body = BytesMut::new();
    while body.len() < MAX_ANSWER_BYTES {
        match response.chunk().await.map_err(failed)? {
            Some(chunk) => {
                let room = MAX_ANSWER_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            None => break,
        }
    }
    Ok(Answer {
        status,
        retry_after,
        body: body.freeze(),
    })
}

/// Parses `Retry-After`: delay-seconds, or an HTTP date (a date already past means now).
pub fn parse_retry_after(value: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let v = value?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate_parse(v)?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only date form servers send now.
fn httpdate_parse(v: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time.split(':').filter_map(|x| x.parse().ok()).collect();
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_retry_after_in_both_forms() {
        let v = reqwest::header::HeaderValue::from_static("7");
        assert_eq!(parse_retry_after(Some(&v)), Some(Duration::from_secs(7)));
        assert_eq!(
            httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(std::time::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        let past = reqwest::header::HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_retry_after(Some(&past)), Some(Duration::ZERO));
        assert_eq!(httpdate_parse("yesterday"), None);
        let junk = reqwest::header::HeaderValue::from_static("soon");
        assert_eq!(parse_retry_after(Some(&junk)), None);
    }

    #[tokio::test]
    async fn answers_are_read_up_to_the_cap_with_their_retry_after() {
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(|| async {
                (
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    [(http::header::RETRY_AFTER, "3")],
                    vec![b'x'; 1 << 20],
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let answer = send(client.post(&url).body("hi"), &url).await.unwrap();
        assert_eq!(answer.status, reqwest::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.body.len(), MAX_ANSWER_BYTES);
        assert_eq!(answer.retry_after, Some(Duration::from_secs(3)));
        let err = answer.error(&url, None, true);
        assert!(err.retryable && err.retry_after == Some(Duration::from_secs(3)));
        assert!(err.message.contains("503"), "{}", err.message);
        assert!(
            err.message.len() < 400,
            "the message quotes only the start of the body"
        );
        assert!(!answer.error(&url, Some("bad".into()), false).retryable);
    }
}
