//! Authenticators: extensions (`bearertokenauth`, later `basicauth`) that receivers name in
//! `auth.authenticator`. A receiver's server asks one before it reads anything of a request but
//! its headers, so a refused client never makes sluice hold a byte of its body.

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

    /// Whether `value` (the header's value, if present) is acceptable. Comparisons run in time
    /// that does not depend on where a wrong credential differs.
    ///
    /// # Errors
    /// The [`AuthRefusal`].
    fn authenticate(&self, value: Option<&[u8]>) -> Result<(), AuthRefusal>;

    /// The `WWW-Authenticate` challenge sent with a 401 (`Bearer realm="sluice"`).
    fn challenge(&self) -> &str;
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
