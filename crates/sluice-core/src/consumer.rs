//! The one interface every stage of a pipeline implements, and fan-out.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Batch, ConsumeError};

/// Something that takes batches: a processor, an exporter's helper, a fan-out.
///
/// `consume` returns once the batch is safely handed on (enqueued for export, or exported when no
/// queue is configured); its error tells the receiver which wire status to answer with.
#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// Takes a batch.
    ///
    /// # Errors
    /// A [`ConsumeError`]: retryable for back-pressure, otherwise permanent.
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError>;
}

/// How a [`Fanout`] combines the answers of its consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanoutPolicy {
    /// Succeeds only if every consumer took the batch. Used from a receiver into pipelines: a
    /// client retries and no pipeline misses data (at-least-once).
    All,
    /// Succeeds if any consumer took the batch. Used from a pipeline into exporters, so a dead
    /// exporter whose queue is full never blocks the others; that exporter counts what it refused
    /// (`otelcol_exporter_enqueue_failed_*`).
    Any,
}

/// Gives every consumer its own copy of each batch (a reference-count clone of the bytes).
pub struct Fanout {
    consumers: Vec<Arc<dyn Consumer>>,
    policy: FanoutPolicy,
}

impl Fanout {
    /// Fans out to `consumers`; with one consumer this is a plain hand-off.
    pub fn build(consumers: Vec<Arc<dyn Consumer>>, policy: FanoutPolicy) -> Arc<dyn Consumer> {
        if consumers.len() == 1 {
            return consumers.into_iter().next().expect("one consumer");
        }
        Arc::new(Fanout { consumers, policy })
    }
}

#[async_trait]
impl Consumer for Fanout {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let results = futures::future::join_all(
            self.consumers
                .iter()
                .map(|consumer| consumer.consume(batch.clone())),
        )
        .await;
        drop(batch);
        let accepted = results.iter().filter(|r| r.is_ok()).count();
        let first_error = results.into_iter().find_map(Result::err);
        match (self.policy, first_error) {
            (_, None) => Ok(()),
            (FanoutPolicy::Any, Some(_)) if accepted > 0 => Ok(()),
            (_, Some(err)) => Err(err),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Signal;
    use std::sync::Mutex;

    /// A consumer that records what it gets, or refuses everything.
    pub(crate) struct Recorder {
        pub(crate) got: Mutex<Vec<usize>>,
        pub(crate) refuse: bool,
    }

    #[async_trait]
    impl Consumer for Recorder {
        async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
            if self.refuse {
                return Err(ConsumeError::unavailable("full"));
            }
            self.got.lock().unwrap().push(batch.items());
            Ok(())
        }
    }

    fn recorder(refuse: bool) -> Arc<Recorder> {
        Arc::new(Recorder {
            got: Mutex::new(Vec::new()),
            refuse,
        })
    }

    fn batch() -> Batch {
        Batch::from_trusted(Signal::Logs, bytes::Bytes::new(), 3)
    }

    #[tokio::test]
    async fn any_policy_accepts_when_one_exporter_takes_the_batch() {
        let (ok, full) = (recorder(false), recorder(true));
        let fanout = Fanout::build(vec![ok.clone(), full.clone()], FanoutPolicy::Any);
        fanout.consume(batch()).await.unwrap();
        assert_eq!(*ok.got.lock().unwrap(), [3]);
        let all_full = Fanout::build(vec![full.clone(), full], FanoutPolicy::Any);
        assert!(all_full.consume(batch()).await.unwrap_err().is_retryable());
    }

    #[tokio::test]
    async fn all_policy_refuses_when_one_pipeline_refuses() {
        let (ok, full) = (recorder(false), recorder(true));
        let fanout = Fanout::build(vec![ok.clone(), full], FanoutPolicy::All);
        assert!(fanout.consume(batch()).await.is_err());
        assert_eq!(
            *ok.got.lock().unwrap(),
            [3],
            "the other pipeline still got its copy"
        );
    }
}
