//! One way for an authenticator to follow a file that changes on disk (a rotated token, an
//! htpasswd file a secret manager rewrites): its modification time is checked every second, on
//! an async worker (a `stat`, microseconds), and the file is re-read only when that changed.

use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::CredentialError;

/// How often a watched file is checked for a change.
pub(crate) const FILE_CHECK: Duration = Duration::from_secs(1);

/// Calls `reload` each time `file` changes, until `shutdown`. When `reload` fails (a file caught
/// half-written, say), the old state stays and the file is tried again at the next check. `what`
/// names it in the log (`bearer token`).
pub(crate) fn watch(
    id: String,
    what: &'static str,
    file: String,
    shutdown: CancellationToken,
    mut reload: impl FnMut(&str) -> Result<(), CredentialError> + Send + 'static,
) -> JoinHandle<()> {
    // The modification time, size and inode: a file replaced by a rename (how secret managers
    // and `kubectl` rotate files) is seen even when the times are equal.
    let modified = |f: &str| -> Option<(SystemTime, u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(f).ok()?;
        Some((m.modified().ok()?, m.len(), m.ino()))
    };
    // Taken now, not when the task first runs, so a change right after start is not missed.
    let mut seen = modified(&file);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(FILE_CHECK) => {}
                () = shutdown.cancelled() => return,
            }
            let now = modified(&file);
            if now == seen {
                continue;
            }
            match reload(&file) {
                Ok(()) => {
                    seen = now;
                    tracing::info!(extension = %id, file = %file, "{what} reloaded");
                }
                Err(e) => {
                    tracing::warn!(extension = %id, error = %e, "{what} changed but cannot be used; keeping the old one");
                }
            }
        }
    })
}
