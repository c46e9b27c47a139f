//! One way to follow files that change on disk (a renewed certificate, a rotated token, an
//! htpasswd file a secret manager rewrites): each file's modification time, size and inode are
//! checked every interval, on an async worker (a `stat`, microseconds), and the caller's reload
//! runs only when one of them changed. A reload that fails (a file caught half-written) keeps
//! the old state and is tried again at the next check.

use std::fmt::Display;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What tells one version of a file from another: a file replaced by a rename (how secret
/// managers and `kubectl` rotate files) is seen even when the times are equal.
type Fingerprint = Option<(SystemTime, u64, u64)>;

fn fingerprints(files: &[String]) -> Vec<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len(), m.ino()))
        })
        .collect()
}

/// Calls `reload` each time one of `files` changes, checking every `every`, until `shutdown`.
/// `what` names it in the log (`tls certificate` gives "tls certificate reloaded").
pub fn watch_files<E: Display>(
    what: String,
    files: Vec<String>,
    every: Duration,
    shutdown: CancellationToken,
    mut reload: impl FnMut() -> Result<(), E> + Send + 'static,
) -> JoinHandle<()> {
    // Taken now, not when the task first runs, so a change right after start is not missed.
    let mut seen = fingerprints(&files);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let now = fingerprints(&files);
            if now == seen {
                continue;
            }
            match reload() {
                Ok(()) => {
                    seen = now;
                    tracing::info!(files = ?files, "{what} reloaded");
                }
                Err(e) => {
                    tracing::warn!(files = ?files, error = %e, "{what} changed but cannot be used; keeping the old one");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn reloads_on_a_rename_and_retries_a_failed_reload() {
        let dir = std::env::temp_dir().join(format!("sluice-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, "one").unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let counted = Arc::clone(&calls);
        let task = watch_files(
            "test file".to_owned(),
            vec![file.to_str().unwrap().to_owned()],
            Duration::from_millis(20),
            shutdown.clone(),
            move || {
                // The first reload fails, as a half-written file would.
                match counted.fetch_add(1, Ordering::SeqCst) {
                    0 => Err("half-written"),
                    _ => Ok(()),
                }
            },
        );
        // Same size, replaced by a rename: still seen.
        let tmp = dir.join(".f");
        std::fs::write(&tmp, "two").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while calls.load(Ordering::SeqCst) < 2 {
            assert!(std::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Reloaded once it worked: no more calls without another change.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        shutdown.cancel();
        task.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
