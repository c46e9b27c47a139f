//! Work on data too large to do on an async worker: one place that decides where a CPU-heavy
//! step runs (checking a request, encoding a batch, a processor's pass over a large batch).

/// Requests over this many bytes are decompressed or transcoded on the blocking pool by every
/// receiver: about half a millisecond of work, as long as an async worker should be held.
pub const DECODE_OFF_WORKERS_ABOVE: usize = 64 * 1024;

/// Runs `work` inline when `size` bytes are at most `above`, otherwise on tokio's blocking pool,
/// so that no async worker is held for long. `None` when the blocking task panicked.
pub async fn off_workers<T: Send + 'static>(
    size: usize,
    above: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    if size > above {
        tokio::task::spawn_blocking(work).await.ok()
    } else {
        Some(work())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn small_work_runs_inline_and_large_work_on_the_blocking_pool() {
        let here = std::thread::current().id();
        let inline = off_workers(10, 100, move || std::thread::current().id() == here).await;
        assert_eq!(inline, Some(true));
        let elsewhere = off_workers(1000, 100, move || std::thread::current().id() == here).await;
        assert_eq!(elsewhere, Some(false));
        let panicked: Option<()> = off_workers(1000, 100, || panic!("boom")).await;
        assert_eq!(panicked, None);
    }
}
