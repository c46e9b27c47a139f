//! Admission control: a byte budget for data held in flight, shared by a memory limiter and the
//! receivers that feed its pipelines.
//!
//! Receivers ask the gate before they read a request body and reserve the decoded size before
//! they hand a batch on. The [`Reservation`] travels with the batch (and its copies, merges and
//! splits) and gives the bytes back when the last piece of data that holds it is dropped: after
//! every exporter sent it, gave up on it, or dropped it from a full queue. The gate therefore
//! bounds what is really held, whatever the pipeline does with the data.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::ConsumeError;

/// A shared budget of bytes in flight plus a pressure flag set by a memory watcher.
#[derive(Debug)]
pub struct MemoryGate {
    name: String,
    budget: AtomicUsize,
    in_flight: AtomicUsize,
    refusing: AtomicBool,
}

impl MemoryGate {
    /// A gate named after its memory limiter, with a byte budget.
    pub fn new(name: impl Into<String>, budget: usize) -> Arc<Self> {
        Arc::new(MemoryGate {
            name: name.into(),
            budget: AtomicUsize::new(budget),
            in_flight: AtomicUsize::new(0),
            refusing: AtomicBool::new(false),
        })
    }

    /// The memory limiter this gate belongs to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes currently reserved.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The byte budget.
    pub fn budget(&self) -> usize {
        self.budget.load(Ordering::Relaxed)
    }

    /// Changes the byte budget (the watcher sizes it from the measured baseline).
    pub fn set_budget(&self, budget: usize) {
        self.budget.store(budget, Ordering::Relaxed);
    }

    /// Sets or clears memory pressure; while set every admission is refused.
    pub fn set_refusing(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::Relaxed);
    }

    /// Whether the memory watcher currently refuses data.
    pub fn is_refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    /// A cheap check before reading a request: refuses under memory pressure or when `hint` bytes
    /// (a Content-Length, say) would not fit.
    ///
    /// # Errors
    /// A retryable [`ConsumeError`] naming the memory limiter.
    pub fn check(&self, hint: usize) -> Result<(), ConsumeError> {
        if self.is_refusing() {
            return Err(self.refusal("memory usage is above the soft limit"));
        }
        if self.in_flight().saturating_add(hint) > self.budget() {
            return Err(self.refusal("in-flight data is at its memory budget"));
        }
        Ok(())
    }

    /// Reserves `bytes` for data about to enter the pipeline.
    ///
    /// A request larger than the whole budget is still admitted when nothing else is in flight, so
    /// that one big request can never be refused forever.
    ///
    /// # Errors
    /// A retryable [`ConsumeError`] when under pressure or over budget.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Result<Reservation, ConsumeError> {
        if self.is_refusing() {
            return Err(self.refusal("memory usage is above the soft limit"));
        }
        let budget = self.budget();
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current != 0 && current.saturating_add(bytes) > budget {
                return Err(self.refusal("in-flight data is at its memory budget"));
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(Reservation {
                        gate: Arc::clone(self),
                        bytes,
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    fn refusal(&self, why: &str) -> ConsumeError {
        ConsumeError::unavailable(format!("data refused by {}: {why}, retry later", self.name))
    }
}

/// Bytes held against a [`MemoryGate`]; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    gate: Arc<MemoryGate>,
    bytes: usize,
}

impl Reservation {
    /// The number of bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_release_their_bytes_on_drop() {
        let gate = MemoryGate::new("memory_limiter", 100);
        let a = gate.reserve(60).unwrap();
        assert!(gate.reserve(50).is_err());
        assert!(gate.check(50).is_err());
        let b = gate.reserve(40).unwrap();
        assert_eq!(gate.in_flight(), 100);
        drop(a);
        drop(b);
        assert_eq!(gate.in_flight(), 0);
    }

    #[test]
    fn a_request_bigger_than_the_budget_passes_alone() {
        let gate = MemoryGate::new("m", 10);
        let big = gate.reserve(50).unwrap();
        assert!(gate.reserve(1).is_err());
        drop(big);
        assert!(gate.reserve(1).is_ok());
    }

    #[test]
    fn pressure_refuses_everything_with_a_retryable_error() {
        let gate = MemoryGate::new("memory_limiter", 100);
        gate.set_refusing(true);
        let err = gate.reserve(1).unwrap_err();
        assert!(err.is_retryable());
        assert!(err.message.contains("memory_limiter"), "{}", err.message);
        gate.set_refusing(false);
        assert!(gate.reserve(1).is_ok());
    }
}
