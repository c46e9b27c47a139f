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

    /// How full the gate is: bytes in flight over the budget, and at least `1.0` while the
    /// memory watcher has it refusing.
    pub fn pressure(&self) -> f64 {
        let fill = self.in_flight() as f64 / self.budget().max(1) as f64;
        if self.is_refusing() {
            fill.max(1.0)
        } else {
            fill
        }
    }

    /// A cheap check before reading a request: refuses under memory pressure or when `hint` bytes
    /// (a Content-Length, say) would not fit.
    ///
    /// # Errors
    /// A retryable [`ConsumeError`] naming the memory limiter, or a permanent
    /// [`ErrorCode::TooLarge`](crate::ErrorCode::TooLarge) one when `hint` alone exceeds the
    /// whole budget.
    pub fn check(&self, hint: usize) -> Result<(), ConsumeError> {
        self.fits_ever(hint)?;
        if self.is_refusing() {
            return Err(self.refusal("memory usage is above the soft limit"));
        }
        if self.in_flight().saturating_add(hint) > self.budget() {
            return Err(self.refusal("in-flight data is at its memory budget"));
        }
        Ok(())
    }

    /// Reserves `bytes` for data being received or about to enter the pipeline.
    ///
    /// # Errors
    /// A retryable [`ConsumeError`] when under pressure or over budget; a permanent
    /// [`ErrorCode::TooLarge`](crate::ErrorCode::TooLarge) one when `bytes` alone exceed the
    /// whole budget, so that a client is never told to retry a request that can never fit.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Result<Reservation, ConsumeError> {
        let mut reservation = Reservation {
            gate: Arc::clone(self),
            bytes: 0,
        };
        reservation.resize(bytes)?;
        Ok(reservation)
    }

    fn fits_ever(&self, bytes: usize) -> Result<(), ConsumeError> {
        let budget = self.budget();
        if bytes > budget {
            return Err(ConsumeError::too_large(format!(
                "request of {bytes} bytes is larger than the {budget} byte in-flight budget of {}; send smaller requests",
                self.name
            )));
        }
        Ok(())
    }

    /// Adds `more` bytes to the in-flight count if they fit.
    fn take(&self, more: usize) -> Result<(), ConsumeError> {
        if self.is_refusing() {
            return Err(self.refusal("memory usage is above the soft limit"));
        }
        let budget = self.budget();
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current.saturating_add(more) > budget {
                return Err(self.refusal("in-flight data is at its memory budget"));
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + more,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
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
    /// The gate the bytes are held against.
    pub fn gate(&self) -> &Arc<MemoryGate> {
        &self.gate
    }

    /// The number of bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds `bytes` instead: shrinking always succeeds; growing succeeds when the difference
    /// fits the budget. This is how a request's reservation follows its bytes, from the first
    /// byte received to the batch it becomes.
    ///
    /// # Errors
    /// As [`MemoryGate::reserve`]; the reservation is unchanged on error.
    pub fn resize(&mut self, bytes: usize) -> Result<(), ConsumeError> {
        if bytes <= self.bytes {
            self.gate
                .in_flight
                .fetch_sub(self.bytes - bytes, Ordering::AcqRel);
        } else {
            self.gate.fits_ever(bytes)?;
            self.gate.take(bytes - self.bytes)?;
        }
        self.bytes = bytes;
        Ok(())
    }
}

/// Makes the reservations `held` by one piece of data follow it from `old` to `new` bytes, on
/// every gate they are held against: growth is reserved even past the budget (the bytes exist
/// already; refusing them would free nothing), and a shrink is given back from the reservations
/// this piece holds alone (a shared one still covers a copy elsewhere).
pub(crate) fn follow(held: &mut Vec<Arc<Reservation>>, old: usize, new: usize) {
    let mut gates: Vec<Arc<MemoryGate>> = Vec::new();
    for r in held.iter() {
        if !gates.iter().any(|g| Arc::ptr_eq(g, &r.gate)) {
            gates.push(Arc::clone(&r.gate));
        }
    }
    for gate in gates {
        if new > old {
            gate.in_flight.fetch_add(new - old, Ordering::AcqRel);
            held.push(Arc::new(Reservation {
                gate,
                bytes: new - old,
            }));
            continue;
        }
        let mut less = old - new;
        for r in held.iter_mut().filter(|r| Arc::ptr_eq(&r.gate, &gate)) {
            if less == 0 {
                break;
            }
            if let Some(r) = Arc::get_mut(r) {
                let cut = less.min(r.bytes);
                r.bytes -= cut;
                gate.in_flight.fetch_sub(cut, Ordering::AcqRel);
                less -= cut;
            }
        }
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
    fn a_request_bigger_than_the_whole_budget_is_too_large_not_retryable() {
        let gate = MemoryGate::new("m", 10);
        for err in [gate.reserve(50).unwrap_err(), gate.check(11).unwrap_err()] {
            assert_eq!(err.code, crate::ErrorCode::TooLarge);
            assert!(!err.is_retryable());
            assert!(
                err.message.contains("10 byte in-flight budget of m"),
                "{}",
                err.message
            );
        }
        let mut r = gate.reserve(4).unwrap();
        assert_eq!(r.resize(11).unwrap_err().code, crate::ErrorCode::TooLarge);
        assert_eq!(gate.in_flight(), 4, "a failed resize changes nothing");
        let other = gate.reserve(5).unwrap();
        assert!(r.resize(6).unwrap_err().is_retryable());
        r.resize(5).unwrap();
        assert_eq!(gate.in_flight(), 10);
        r.resize(1).unwrap();
        drop(other);
        assert_eq!(gate.in_flight(), 1);
        drop(r);
        assert_eq!(gate.in_flight(), 0);
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
