//! `bearertokenauth`. Server side, a request is admitted when its `Authorization` header (or the
//! configured `header`) is `<scheme> <token>` for one of the configured tokens. Tokens come from
//! `token`, `tokens`, or `filename`, which is re-read when the file changes, so a rotated secret
//! is honoured without a restart. Comparisons run in constant time. Client side (an exporter's
//! `auth.authenticator`), every request carries `<scheme> <token>` with the first token.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::Problem;
use sluice_core::auth::{
    AuthInfo, AuthRefusal, ClientAuthenticator, ServerAuthenticator, constant_time_eq,
};
use sluice_core::{BuildError, Extension, ExtensionFactory, Host};

use crate::error::CredentialError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// `extensions.bearertokenauth`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerTokenAuthConfig {
    /// The scheme before the token (default `Bearer`); empty for the bare token.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// The header that carries it (default `Authorization`).
    #[serde(default = "default_header")]
    pub header: String,
    /// One token.
    #[serde(default)]
    pub token: Option<String>,
    /// Several tokens, any of which is admitted (for rotation).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// A file holding the token, re-read when it changes.
    #[serde(default)]
    pub filename: Option<String>,
}

impl std::fmt::Debug for BearerTokenAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        f.debug_struct("BearerTokenAuthConfig")
            .field("scheme", &self.scheme)
            .field("header", &self.header)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tokens", &self.tokens.len())
            .field("filename", &self.filename)
            .finish()
    }
}

fn default_scheme() -> String {
    "Bearer".to_owned()
}

fn default_header() -> String {
    "Authorization".to_owned()
}

impl BearerTokenAuthConfig {
    fn check(&self, path: &str) -> Vec<Problem> {
        let sources = self.token.is_some() as u8
            + !self.tokens.is_empty() as u8
            + self.filename.is_some() as u8;
        let mut p = Vec::new();
        if sources != 1 {
            p.push(Problem::error(
                path.to_owned(),
                "set exactly one of token, tokens and filename",
            ));
        }
        if self
            .token
            .iter()
            .chain(&self.tokens)
            .any(|t| t.trim().is_empty())
        {
            p.push(Problem::error(path.to_owned(), "a token is empty"));
        }
        if http_header_name(&self.header).is_none() {
            p.push(Problem::error(
                format!("{path}.header"),
                "is not a valid header name",
            ));
        }
        p
    }

    /// What a request's header must equal, per token.
    fn expected(&self, tokens: &[String]) -> Vec<Vec<u8>> {
        tokens
            .iter()
            .map(|t| {
                if self.scheme.is_empty() {
                    t.trim().as_bytes().to_vec()
                } else {
                    format!("{} {}", self.scheme, t.trim()).into_bytes()
                }
            })
            .collect()
    }
}

/// A header name as HTTP/2 and gRPC metadata carry it: lowercase token characters.
fn http_header_name(name: &str) -> Option<String> {
    sluice_core::client::is_header_name(name).then(|| name.to_ascii_lowercase())
}

/// Builds `bearertokenauth` extensions.
#[derive(Debug, Default)]
pub struct BearerTokenAuthFactory;

impl ExtensionFactory for BearerTokenAuthFactory {
    fn type_name(&self) -> &'static str {
        "bearertokenauth"
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &BearerTokenAuthConfig| c.check(path))
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn Extension>, BuildError> {
        let c: BearerTokenAuthConfig = sluice_core::typed(&format!("extensions.{id}"), config)?;
        let tokens = match &c.filename {
            Some(file) => vec![read_token(file).map_err(|e| BuildError::Other(e.to_string()))?],
            None => c
                .token
                .iter()
                .cloned()
                .chain(c.tokens.iter().cloned())
                .collect(),
        };
        let authenticator = Arc::new(BearerToken {
            header: http_header_name(&c.header).unwrap_or_else(|| "authorization".to_owned()),
            challenge: if c.scheme.is_empty() {
                "Bearer realm=\"sluice\"".to_owned()
            } else {
                format!("{} realm=\"sluice\"", c.scheme)
            },
            expected: RwLock::new(c.expected(&tokens)),
        });
        Ok(Box::new(BearerTokenAuth {
            id: id.to_owned(),
            config: c,
            authenticator,
        }))
    }
}

fn read_token(file: &str) -> Result<String, CredentialError> {
    let text = std::fs::read_to_string(file).map_err(|source| CredentialError::Read {
        file: file.to_owned(),
        source,
    })?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(CredentialError::EmptyToken {
            file: file.to_owned(),
        });
    }
    Ok(token)
}

struct BearerToken {
    header: String,
    challenge: String,
    expected: RwLock<Vec<Vec<u8>>>,
}

/// Client side: the first configured token (or the file's), on every request.
impl ClientAuthenticator for BearerToken {
    fn headers(&self) -> Vec<(String, String)> {
        let expected = self.expected.read().unwrap_or_else(|e| e.into_inner());
        expected
            .first()
            .and_then(|v| String::from_utf8(v.clone()).ok())
            .map(|v| vec![(self.header.clone(), v)])
            .unwrap_or_default()
    }
}

impl ServerAuthenticator for BearerToken {
    fn header(&self) -> &str {
        &self.header
    }

    fn authenticate(&self, value: Option<&[u8]>) -> Result<AuthInfo, AuthRefusal> {
        let value = value.ok_or(AuthRefusal::Missing)?;
        let expected = self.expected.read().unwrap_or_else(|e| e.into_inner());
        // Every token is compared, so the time taken does not tell which one came close.
        let matched = expected
            .iter()
            .fold(false, |any, token| any | constant_time_eq(value, token));
        if matched {
            Ok(AuthInfo::none())
        } else {
            Err(AuthRefusal::Invalid)
        }
    }

    fn challenge(&self) -> &str {
        &self.challenge
    }
}

struct BearerTokenAuth {
    id: String,
    config: BearerTokenAuthConfig,
    authenticator: Arc<BearerToken>,
}

#[async_trait]
impl Extension for BearerTokenAuth {
    async fn start(
        &self,
        _host: &Host,
        shutdown: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, BuildError> {
        let Some(file) = self.config.filename.clone() else {
            return Ok(Vec::new());
        };
        let (config, authenticator, id) = (
            self.config.clone(),
            Arc::clone(&self.authenticator),
            self.id.clone(),
        );
        Ok(vec![crate::watch(
            id,
            "bearer token",
            file,
            shutdown,
            move |file| {
                let token = read_token(file)?;
                *authenticator
                    .expected
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = config.expected(&[token]);
                Ok(())
            },
        )])
    }

    fn server_authenticator(&self) -> Option<Arc<dyn ServerAuthenticator>> {
        Some(self.authenticator.clone())
    }

    fn client_authenticator(&self) -> Option<Arc<dyn ClientAuthenticator>> {
        Some(self.authenticator.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(config: Value) -> Arc<dyn ServerAuthenticator> {
        let problems = BearerTokenAuthFactory.check("extensions.bearertokenauth", &config);
        assert!(problems.is_empty(), "{problems:?}");
        BearerTokenAuthFactory
            .build("bearertokenauth", &config)
            .unwrap()
            .server_authenticator()
            .unwrap()
    }

    #[test]
    fn admits_only_the_configured_tokens_with_their_scheme() {
        let a = build(serde_json::json!({"tokens": ["one", "two"]}));
        assert_eq!(a.header(), "authorization");
        assert_eq!(a.authenticate(Some(b"Bearer one")), Ok(AuthInfo::none()));
        assert_eq!(a.authenticate(Some(b"Bearer two")), Ok(AuthInfo::none()));
        assert_eq!(
            a.authenticate(Some(b"Bearer three")),
            Err(AuthRefusal::Invalid)
        );
        assert_eq!(a.authenticate(Some(b"one")), Err(AuthRefusal::Invalid));
        assert_eq!(a.authenticate(None), Err(AuthRefusal::Missing));
        assert_eq!(a.challenge(), "Bearer realm=\"sluice\"");
        let bare =
            build(serde_json::json!({"token": "s3cret", "scheme": "", "header": "X-Api-Key"}));
        assert_eq!(bare.header(), "x-api-key");
        assert_eq!(bare.authenticate(Some(b"s3cret")), Ok(AuthInfo::none()));
    }

    #[test]
    fn configs_it_cannot_honour_are_refused() {
        let check = |v: Value| -> Vec<String> {
            BearerTokenAuthFactory
                .check("extensions.bearertokenauth/in", &v)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(
            check(serde_json::json!({"token": "a", "filename": "/f", "header": "bad header"})),
            [
                "error: extensions.bearertokenauth/in: set exactly one of token, tokens and filename",
                "error: extensions.bearertokenauth/in.header: is not a valid header name",
            ]
        );
        assert_eq!(
            check(serde_json::json!({"tokens": [" "]})),
            ["error: extensions.bearertokenauth/in: a token is empty"]
        );
        assert!(
            check(serde_json::json!({"token": "a", "bogus": 1}))[0]
                .contains("unknown field `bogus`")
        );
    }

    #[test]
    fn the_config_never_shows_its_tokens() {
        let c: BearerTokenAuthConfig =
            serde_json::from_value(serde_json::json!({"token": "hunter2"})).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
