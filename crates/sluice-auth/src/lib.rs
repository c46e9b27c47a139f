//! Authenticator extensions, which receivers and exporters name in `auth.authenticator`:
//! `bearertokenauth` and `basicauth`, server and client side. This crate must not depend on any
//! other component crate.

mod basic;
mod bearer;
mod error;
mod watch;

pub use basic::{BasicAuthConfig, BasicAuthFactory, ClientAuthConfig, HtpasswdConfig};
pub use bearer::{BearerTokenAuthConfig, BearerTokenAuthFactory};
pub use error::{CredentialError, EntryError};
