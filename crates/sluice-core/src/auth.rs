//! Authenticators: extensions (`bearertokenauth`, `basicauth`) that receivers and exporters name
//! in `auth.authenticator`. A receiver's server asks one before it reads anything of a request
//! but its headers, so a refused client never makes sluice hold a byte of its body; an exporter
//! asks one for the headers that carry its credentials.

pub use crate::client::AuthInfo;

/// `auth` on a receiver's listener or an exporter's client, as in the Collector.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The id of an authenticator extension listed in `service.extensions`
    /// (`bearertokenauth/in`).
    pub authenticator: String,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthRefusal {
    /// The request carries no credentials.
    #[error("no credentials")]
    Missing,
    /// The credentials are not among those configured.
    #[error("invalid credentials")]
    Invalid,
}

/// Decides, from one request header, whether the request may be read.
pub trait ServerAuthenticator: Send + Sync {
    /// The header holding the credentials (`authorization`); for gRPC, the metadata key.
    fn header(&self) -> &str;

    /// Whether `value` (the header's value, if present) is acceptable, and what it establishes
    /// of the client. Comparisons run in time that does not depend on where a wrong credential
    /// differs.
    ///
    /// # Errors
    /// The [`AuthRefusal`].
    fn authenticate(&self, value: Option<&[u8]>) -> Result<AuthInfo, AuthRefusal>;

    /// Whether [`ServerAuthenticator::authenticate`] may take long enough (a bcrypt hash) that
    /// it must run off the async workers.
    fn blocks(&self) -> bool {
        false
    }

    /// The `WWW-Authenticate` challenge sent with a 401 (`Bearer realm="sluice"`).
    fn challenge(&self) -> &str;
}

/// Adds credentials to an exporter's requests.
pub trait ClientAuthenticator: Send + Sync {
    /// The headers to set on each request (`authorization: Bearer ...`), names in lowercase.
    /// Read at every request, so a credential file that changed is honoured at the next one.
    fn headers(&self) -> Vec<(String, String)>;
}

/// Whether two byte strings are equal, in time that depends on their lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_every_byte_is() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abc", b"Bearer abd"));
        assert!(!constant_time_eq(b"Bearer abc", b"Bearer ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
