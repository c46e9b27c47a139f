//! Authenticator extensions, which receivers and exporters name in `auth.authenticator`:
//! `bearertokenauth` and `basicauth`, server and client side. This crate must not depend on any
//! other component crate.

mod basic;
mod bearer;
mod error;

pub use basic::{BasicAuthConfig, BasicAuthFactory, ClientAuthConfig, HtpasswdConfig};
pub use bearer::{BearerTokenAuthConfig, BearerTokenAuthFactory};
pub use error::{CredentialError, EntryError};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often an authenticator's files are checked for a change.
const FILE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Follows one file of extension `id` with core's watcher, every second; `reload` gets the path.
fn watch(
    id: String,
    what: &'static str,
    file: String,
    shutdown: CancellationToken,
    mut reload: impl FnMut(&str) -> Result<(), CredentialError> + Send + 'static,
) -> JoinHandle<()> {
    let path = file.clone();
    sluice_core::watch::watch_files(
        format!("{id}: {what}"),
        vec![file],
        FILE_CHECK,
        shutdown,
        move || reload(&path),
    )
}
