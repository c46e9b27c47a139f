//! Authenticator extensions, which receivers name in `auth.authenticator`: `bearertokenauth`
//! (server side). This crate must not depend on any other component crate.

mod bearer;

pub use bearer::{BearerTokenAuthConfig, BearerTokenAuthFactory};
