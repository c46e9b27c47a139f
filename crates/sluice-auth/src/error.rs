//! What can go wrong reading credentials from configuration or disk.

/// A credential source that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A token, htpasswd or password file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A token file holds nothing but white space.
    #[error("token file {file} is empty")]
    EmptyToken {
        /// The file.
        file: String,
    },
    /// A line of htpasswd text that sluice cannot use.
    #[error("{origin} line {line}: {entry}")]
    Htpasswd {
        /// The file, or `inline`.
        origin: String,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        entry: EntryError,
    },
}

/// What is wrong with one htpasswd entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Not `user:password`.
    #[error("expected `user:password`")]
    NotUserPassword,
    /// Nothing before the `:`.
    #[error("empty user name")]
    EmptyUser,
    /// A bcrypt hash that does not parse.
    #[error("a malformed bcrypt hash ({0})")]
    Bcrypt(String),
    /// An `$apr1$` hash without its salt and 22 characters.
    #[error("a malformed $apr1$ hash")]
    Apr1,
    /// A `{SHA}` hash that is not 20 bytes of base64.
    #[error("a malformed {{SHA}} hash (20 bytes of base64)")]
    Sha,
    /// A `{SSHA}` hash that is not base64 of a digest and a salt.
    #[error("a malformed {{SSHA}} hash")]
    Ssha,
    /// A crypt(3) hash (`$1$`, `$5$`, `$6$`).
    #[error("crypt(3) hashes ($1$, $5$, $6$) are not supported; use bcrypt (htpasswd -B)")]
    Crypt,
}
