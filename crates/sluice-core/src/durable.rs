//! The write side of the persistent sending queue: a pipeline stage, placed before batching,
//! that appends each request to the pipeline's disk log(s) and answers only once the log has it
//! (synced, under `fsync: always`). The exporters with `storage: file` read the log, each from
//! its own position ([`crate::ExporterHelper::attach`]); the rest of the pipeline (batching and
//! the exporters with memory queues) gets the request as before.
//!
//! Acknowledged therefore means durable: a client's success response comes after the write, so
//! a crash at any moment later loses nothing that was acknowledged. The data is written once per
//! pipeline and directory, however many exporters read it.

use std::sync::Arc;

use async_trait::async_trait;
use metrics::Counter;

use crate::disk_log::{AppendError, DiskLog};
use crate::{Batch, ConsumeError, Consumer, Signal, metrics as names};

/// One disk log the tap writes, and the exporters that read it.
pub struct TapLog {
    log: Arc<DiskLog>,
    exporters: Vec<String>,
    enqueue_failed: Vec<Counter>,
    dropped: Vec<Counter>,
}

impl TapLog {
    /// A log read by `exporters` (their ids, for metrics).
    pub fn new(log: Arc<DiskLog>, exporters: Vec<String>, signal: Signal) -> Self {
        let enqueue_failed = exporters
            .iter()
            .map(|e| metrics::counter!(names::exporter_enqueue_failed(signal), "exporter" => e.clone()))
            .collect();
        let dropped = exporters
            .iter()
            .map(
                |e| metrics::counter!(names::exporter_send_failed(signal), "exporter" => e.clone()),
            )
            .collect();
        TapLog {
            log,
            exporters,
            enqueue_failed,
            dropped,
        }
    }
}

/// Appends every batch to the pipeline's disk logs, then hands it on.
pub struct DurableTap {
    signal: Signal,
    logs: Vec<TapLog>,
    next: Option<Arc<dyn Consumer>>,
}

impl DurableTap {
    /// A tap writing `logs` and then feeding `next` (the batching and memory-queued part of the
    /// pipeline), if any.
    pub fn new(signal: Signal, logs: Vec<TapLog>, next: Option<Arc<dyn Consumer>>) -> Arc<Self> {
        Arc::new(DurableTap { signal, logs, next })
    }
}

#[async_trait]
impl Consumer for DurableTap {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let items = batch.items();
        let count = u32::try_from(items).unwrap_or(u32::MAX);
        let results = futures::future::join_all(
            self.logs
                .iter()
                .map(|tap| tap.log.append(batch.data().clone(), count)),
        )
        .await;
        for (tap, result) in self.logs.iter().zip(results) {
            match result {
                Ok(appended) => {
                    if appended.dropped_items > 0 {
                        for counter in &tap.dropped {
                            counter.increment(appended.dropped_items);
                        }
                        tracing::error!(signal = %self.signal, exporters = ?tap.exporters, records = appended.dropped_records, items = appended.dropped_items, "persistent queue full: oldest data dropped");
                    }
                }
                Err(err) => {
                    for counter in &tap.enqueue_failed {
                        counter.increment(items as u64);
                    }
                    return Err(match err {
                        AppendError::Full => ConsumeError::unavailable(format!(
                            "the persistent queue of {} is full",
                            tap.exporters.join(", ")
                        )),
                        AppendError::Closed => {
                            ConsumeError::unavailable("the persistent queue is closing")
                        }
                        AppendError::TooLarge { size, max } => ConsumeError::invalid(format!(
                            "a request of {size} bytes cannot fit a persistent queue of {max} bytes"
                        )),
                        AppendError::Io(e) => ConsumeError::unavailable(format!(
                            "cannot write the persistent queue: {e}"
                        )),
                    });
                }
            }
        }
        if let Some(next) = &self.next {
            // The data is safe on disk; the memory-queued exporters count their own refusals.
            if let Err(err) = next.consume(batch).await {
                tracing::debug!(signal = %self.signal, error = %err.message, "memory-queued part of the pipeline refused a batch the persistent queue holds");
            }
        }
        Ok(())
    }
}
