//! Server TLS for every listener, in the Collector's `configtls` shape: a certificate and key
//! (files or inline PEM), optional client certificates checked against `client_ca_file` (mutual
//! TLS: a client without one signed by it is refused during the handshake), the TLS versions and
//! TLS 1.2 cipher suites allowed, and `reload_interval`, which re-reads the certificate and key
//! when their files change, so that a certificate renewed in place (cert-manager) is served
//! without a restart. rustls, with the ring provider the exporters' clients use.

use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use sluice_config::{HumanDuration, Problem};
use sluice_core::BuildError;
use tokio_util::sync::CancellationToken;

/// `tls` on a listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsServerConfig {
    /// PEM file of the server's certificate chain.
    pub cert_file: Option<String>,
    /// PEM file of the server's private key.
    pub key_file: Option<String>,
    /// The certificate chain inline, instead of `cert_file`.
    pub cert_pem: Option<String>,
    /// The private key inline, instead of `key_file`.
    pub key_pem: Option<String>,
    /// PEM file of the CAs that sign client certificates: with it, every client must present a
    /// certificate they signed (mutual TLS).
    pub client_ca_file: Option<String>,
    /// Trust the system's CAs for client certificates too (with `client_ca_file`).
    pub include_system_ca_certs_pool: bool,
    /// Lowest TLS version accepted: `1.2` (default) or `1.3`.
    pub min_version: Option<String>,
    /// Highest TLS version accepted: `1.2` or `1.3` (default).
    pub max_version: Option<String>,
    /// TLS 1.2 cipher suites allowed, by their IANA names (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`);
    /// default: rustls' own, all of them modern AEAD suites. TLS 1.3 suites are not configurable.
    pub cipher_suites: Vec<String>,
    /// How often the certificate and key files are checked for a change and re-read; unset,
    /// never.
    pub reload_interval: Option<HumanDuration>,
}

/// Why a TLS setting cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM input holds no usable certificate or key.
    #[error("{what}: {reason}")]
    Pem {
        /// Which input.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the combination.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS versions rustls implements, lowest first, by the Collector's names.
const VERSIONS: [(&str, &SupportedProtocolVersion); 2] = [
    ("1.2", &rustls::version::TLS12),
    ("1.3", &rustls::version::TLS13),
];

/// The rank of a version in [`VERSIONS`].
fn version(text: &str) -> Option<usize> {
    VERSIONS.iter().position(|(name, _)| *name == text.trim())
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

impl TlsServerConfig {
    /// Checks the settings without reading any file; `path` is the `tls` key's path.
    pub fn check(&self, path: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let cert = self.cert_file.is_some() as u8 + self.cert_pem.is_some() as u8;
        let key = self.key_file.is_some() as u8 + self.key_pem.is_some() as u8;
        if cert != 1 || key != 1 {
            p.push(Problem::error(
                path.to_owned(),
                "set the certificate (cert_file or cert_pem) and the key (key_file or key_pem), one of each",
            ));
        }
        for (key, value) in [
            ("min_version", &self.min_version),
            ("max_version", &self.max_version),
        ] {
            if let Some(v) = value
                && version(v).is_none()
            {
                let why = if matches!(v.trim(), "1.0" | "1.1") {
                    "TLS 1.0 and 1.1 are not supported (rustls implements 1.2 and 1.3)"
                } else {
                    "must be 1.2 or 1.3"
                };
                p.push(Problem::error(format!("{path}.{key}"), why));
            }
        }
        let min = self.min_version.as_deref().and_then(version);
        let max = self.max_version.as_deref().and_then(version);
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            p.push(Problem::error(
                format!("{path}.min_version"),
                "is above max_version",
            ));
        }
        let suites = provider().cipher_suites;
        for (i, name) in self.cipher_suites.iter().enumerate() {
            if !suites
                .iter()
                .any(|s| s.tls13().is_none() && format!("{:?}", s.suite()) == *name)
            {
                let known: Vec<String> = suites
                    .iter()
                    .filter(|s| s.tls13().is_none())
                    .map(|s| format!("{:?}", s.suite()))
                    .collect();
                p.push(Problem::error(
                    format!("{path}.cipher_suites[{i}]"),
                    format!(
                        "unknown or unsupported TLS 1.2 suite `{name}` (one of {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        if self.include_system_ca_certs_pool && self.client_ca_file.is_none() {
            p.push(Problem::error(
                format!("{path}.include_system_ca_certs_pool"),
                "only applies with client_ca_file (mutual TLS)",
            ));
        }
        if self.reload_interval.is_some_and(HumanDuration::is_zero) {
            p.push(Problem::error(
                format!("{path}.reload_interval"),
                "must be more than zero (leave it out for no reload)",
            ));
        }
        p
    }

    /// The acceptor for a listener's optional `tls` (at config path `path`), or none for
    /// plaintext: what every listener calls.
    ///
    /// # Errors
    /// A [`BuildError`] naming `path` and the [`TlsError`].
    pub fn for_listener(
        tls: Option<&TlsServerConfig>,
        path: &str,
        alpn: &[&str],
        shutdown: &CancellationToken,
    ) -> Result<Option<tokio_rustls::TlsAcceptor>, BuildError> {
        tls.map(|t| t.acceptor(alpn, shutdown))
            .transpose()
            .map_err(|e| BuildError::Other(format!("{path}: {e}")))
    }

    /// The acceptor for a listener; with `reload_interval`, the task that re-reads the
    /// certificate runs until `shutdown`. `alpn` lists the protocols offered (`h2`, `http/1.1`).
    ///
    /// # Errors
    /// [`TlsError`] when a file cannot be read, holds no certificate or key, or rustls refuses
    /// the settings.
    pub fn acceptor(
        &self,
        alpn: &[&str],
        shutdown: &CancellationToken,
    ) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let mut provider = provider();
        if !self.cipher_suites.is_empty() {
            provider.cipher_suites.retain(|s| {
                s.tls13().is_some()
                    || self
                        .cipher_suites
                        .iter()
                        .any(|name| format!("{:?}", s.suite()) == *name)
            });
        }
        let provider = Arc::new(provider);
        let min = self.min_version.as_deref().and_then(version).unwrap_or(0);
        let max = self
            .max_version
            .as_deref()
            .and_then(version)
            .unwrap_or(VERSIONS.len() - 1);
        let versions: Vec<&'static SupportedProtocolVersion> = VERSIONS[min..=max.max(min)]
            .iter()
            .map(|(_, v)| *v)
            .collect();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&versions)?;
        let builder = match &self.client_ca_file {
            Some(file) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(&read(file)?, file)? {
                    roots.add(cert)?;
                }
                if self.include_system_ca_certs_pool {
                    for cert in rustls_native_certs::load_native_certs().certs {
                        // A system certificate rustls cannot parse is skipped, as the OS does.
                        let _ = roots.add(cert);
                    }
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| TlsError::Pem {
                    what: file.clone(),
                    reason: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let source = Source::from(self);
        let resolver = Arc::new(Reloading {
            current: RwLock::new(Arc::new(source.load(&provider)?)),
        });
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        if let Some(interval) = self.reload_interval {
            // A change that does not load (a half-written file) keeps the old certificate.
            sluice_core::watch::watch_files(
                "tls certificate".to_owned(),
                source.files(),
                interval.get(),
                shutdown.clone(),
                move || {
                    let key = source.load(&provider)?;
                    *resolver.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
                    Ok::<(), TlsError>(())
                },
            );
        }
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// Where the certificate and key come from.
#[derive(Debug, Clone)]
struct Source {
    cert: Input,
    key: Input,
}

#[derive(Debug, Clone)]
enum Input {
    File(String),
    Pem(String),
}

impl From<&TlsServerConfig> for Source {
    fn from(c: &TlsServerConfig) -> Self {
        let input = |file: &Option<String>, pem: &Option<String>| match (file, pem) {
            (Some(f), _) => Input::File(f.clone()),
            (None, Some(p)) => Input::Pem(p.clone()),
            (None, None) => Input::Pem(String::new()),
        };
        Source {
            cert: input(&c.cert_file, &c.cert_pem),
            key: input(&c.key_file, &c.key_pem),
        }
    }
}

impl Input {
    fn bytes(&self) -> Result<Vec<u8>, TlsError> {
        match self {
            Input::File(path) => read(path),
            Input::Pem(pem) => Ok(pem.as_bytes().to_vec()),
        }
    }

    fn name(&self) -> &str {
        match self {
            Input::File(path) => path,
            Input::Pem(_) => "inline PEM",
        }
    }
}

impl Source {
    fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let chain = certificates(&self.cert.bytes()?, self.cert.name())?;
        let key_bytes = self.key.bytes()?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::Pem {
            what: self.key.name().to_owned(),
            reason: format!("no private key: {e}"),
        })?;
        Ok(CertifiedKey::from_der(chain, key, provider)?)
    }

    /// The files to watch for a reload (inline PEM never changes).
    fn files(&self) -> Vec<String> {
        [&self.cert, &self.key]
            .into_iter()
            .filter_map(|input| match input {
                Input::File(path) => Some(path.clone()),
                Input::Pem(_) => None,
            })
            .collect()
    }
}

fn read(path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.to_owned(),
            reason: "no certificate".to_owned(),
        });
    }
    Ok(certs)
}

/// Serves the current certificate; the reload task replaces it.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: serde_json::Value) -> Vec<String> {
        let c: TlsServerConfig = serde_json::from_value(yaml).unwrap();
        c.check("receivers.otlp.protocols.grpc.tls")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn settings_the_code_cannot_honour_are_refused_with_their_path() {
        assert!(check(serde_json::json!({"cert_file": "c", "key_file": "k", "min_version": "1.3", "reload_interval": "1m"})).is_empty());
        assert_eq!(
            check(serde_json::json!({
                "cert_file": "c", "cert_pem": "-----", "min_version": "1.1", "max_version": "2",
                "cipher_suites": ["TLS_RSA_WITH_RC4_128_SHA"], "include_system_ca_certs_pool": true,
                "reload_interval": "0",
            })),
            [
                "error: receivers.otlp.protocols.grpc.tls: set the certificate (cert_file or cert_pem) and the key (key_file or key_pem), one of each",
                "error: receivers.otlp.protocols.grpc.tls.min_version: TLS 1.0 and 1.1 are not supported (rustls implements 1.2 and 1.3)",
                "error: receivers.otlp.protocols.grpc.tls.max_version: must be 1.2 or 1.3",
                "error: receivers.otlp.protocols.grpc.tls.cipher_suites[0]: unknown or unsupported TLS 1.2 suite `TLS_RSA_WITH_RC4_128_SHA` (one of TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256)",
                "error: receivers.otlp.protocols.grpc.tls.include_system_ca_certs_pool: only applies with client_ca_file (mutual TLS)",
                "error: receivers.otlp.protocols.grpc.tls.reload_interval: must be more than zero (leave it out for no reload)",
            ]
        );
        assert_eq!(
            check(
                serde_json::json!({"cert_pem": "c", "key_pem": "k", "min_version": "1.3", "max_version": "1.2"})
            ),
            ["error: receivers.otlp.protocols.grpc.tls.min_version: is above max_version"]
        );
    }

    #[tokio::test]
    async fn files_that_hold_no_certificate_or_key_fail_the_build_naming_them() {
        let c = TlsServerConfig {
            cert_pem: Some("not a certificate".to_owned()),
            key_pem: Some("not a key".to_owned()),
            ..Default::default()
        };
        let err = c
            .acceptor(&["h2"], &CancellationToken::new())
            .err()
            .expect("refused");
        assert_eq!(err.to_string(), "inline PEM: no certificate");
        let c = TlsServerConfig {
            cert_file: Some("/nonexistent/cert.pem".to_owned()),
            key_file: Some("/nonexistent/key.pem".to_owned()),
            ..Default::default()
        };
        let err = c
            .acceptor(&["h2"], &CancellationToken::new())
            .err()
            .expect("refused");
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/cert.pem"),
            "{err}"
        );
    }
}
