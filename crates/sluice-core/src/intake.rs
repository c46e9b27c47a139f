//! The one receiver intake: what every receiver (and connector) does with a request between the
//! wire and the pipeline, so that none copies it. Admission against the memory gates before a
//! body is read, counting bytes as they arrive (each connection within its share), validation by
//! the wire walker (every item checked against the OTLP schema; bad items refused alone), the
//! hand-off of the still-encoded batch with its reservation, and the `otelcol_receiver_*`
//! metrics. Mapping its errors to gRPC and HTTP statuses is the server side's (`sluice-net`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::client::ClientInfo;
use bytes::Bytes;
use metrics::Counter;

use crate::{
    Batch, ConsumeError, Consumer, MemoryGate, ReceiverOutputs, Reservation, Signal,
    metrics as names, wire,
};

/// The bytes one connection's requests are receiving, so that no connection takes more than its
/// share of the memory budget (a client opening a hundred streams and stalling them must not
/// starve the others). The server side gives each request its connection's load.
#[derive(Debug, Clone, Default)]
pub struct ConnectionLoad(Arc<AtomicUsize>);

impl ConnectionLoad {
    /// Bytes this connection's requests hold now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    fn add(&self, bytes: usize) {
        self.0.fetch_add(bytes, Ordering::AcqRel);
    }

    fn sub(&self, bytes: usize) {
        self.0.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Per-transport, per-signal receiver metrics.
struct IntakeMetrics {
    accepted: Counter,
    refused: Counter,
    failed: Counter,
    success: Counter,
    refused_requests: Counter,
    failed_requests: Counter,
}

/// The receiving side of one receiver, shared by its transports: admission, validation,
/// hand-off, metrics.
pub struct Intake {
    consumers: BTreeMap<Signal, Arc<dyn Consumer>>,
    gates: BTreeMap<Signal, Vec<Arc<MemoryGate>>>,
    metrics: BTreeMap<(Signal, &'static str), IntakeMetrics>,
}

/// One connection may have at most this share of the smallest in-flight budget being received
/// (beyond its first request, which may use the whole budget), so that a client that opens many
/// streams and stalls them cannot starve the others.
const CONNECTION_SHARE: usize = 4;

/// The memory a request being received holds: one reservation per memory gate of its signal,
/// and its part of its connection's load.
pub struct Upload {
    held: Vec<Reservation>,
    connection: Option<Share>,
}

/// A request's bytes in its connection's [`ConnectionLoad`]; given back on drop.
struct Share {
    load: ConnectionLoad,
    bytes: usize,
    cap: usize,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.load.sub(self.bytes);
    }
}

impl Upload {
    /// Counts `bytes` in the connection's load, unless that takes the connection past its share
    /// while it has other requests under way.
    fn grow_connection(&mut self, bytes: usize) -> Result<(), ConsumeError> {
        let Some(share) = &mut self.connection else {
            return Ok(());
        };
        if bytes <= share.bytes {
            return Ok(());
        }
        let others = share.load.get().saturating_sub(share.bytes);
        if others > 0 && others + bytes > share.cap {
            return Err(ConsumeError::unavailable(format!(
                "this connection's requests already hold its share ({} bytes) of the memory budget, retry later",
                share.cap
            )));
        }
        share.load.add(bytes - share.bytes);
        share.bytes = bytes;
        Ok(())
    }

    /// Holds `bytes` now that that much has arrived (or is declared).
    ///
    /// # Errors
    /// The gate's refusal: retryable when the budget is full now, too large when it never fits;
    /// retryable too when the connection already holds its share of the budget.
    pub fn grow_to(&mut self, bytes: usize) -> Result<(), ConsumeError> {
        self.grow_connection(bytes)?;
        for reservation in &mut self.held {
            if bytes > reservation.bytes() {
                reservation.resize(bytes)?;
            }
        }
        Ok(())
    }
}

/// What a successful request reports back: the OTLP partial success, if any.
#[derive(Debug)]
pub struct Accepted {
    /// Items refused (they would not decode, or had invalid ids).
    pub rejected: u64,
    /// Why, naming the first; empty when nothing was refused.
    pub message: String,
}

impl Intake {
    /// The intake of receiver `id`, for the pipelines in `outputs`, with metrics for each of its
    /// `transports` (`grpc`, `http`, `kafka`).
    pub fn new(id: &str, outputs: ReceiverOutputs, transports: &[&'static str]) -> Self {
        let mut metrics = BTreeMap::new();
        for &signal in outputs.consumers.keys() {
            for &transport in transports {
                let r = || (id.to_owned(), transport);
                let counter = |name: &'static str| {
                    let (receiver, transport) = r();
                    metrics::counter!(name, "receiver" => receiver, "transport" => transport)
                };
                let (receiver, t) = r();
                let requests = |outcome: &'static str| metrics::counter!(names::RECEIVER_REQUESTS, "receiver" => receiver.clone(), "transport" => t, "outcome" => outcome);
                metrics.insert(
                    (signal, transport),
                    IntakeMetrics {
                        accepted: counter(names::receiver_accepted(signal)),
                        refused: counter(names::receiver_refused(signal)),
                        failed: counter(names::receiver_failed(signal)),
                        success: requests("success"),
                        refused_requests: requests("refused"),
                        failed_requests: requests("failure"),
                    },
                );
            }
        }
        Intake {
            consumers: outputs.consumers,
            gates: outputs.gates,
            metrics,
        }
    }

    /// Whether some pipeline takes `signal` from this receiver.
    pub fn serves(&self, signal: Signal) -> bool {
        self.consumers.contains_key(&signal)
    }

    /// Admits a request about to be received: refused under memory pressure, when `declared`
    /// bytes (a Content-Length) do not fit now (retryable) or can never fit (too large), before
    /// any of its body is read. What it returns holds `declared` bytes against every memory gate
    /// of the signal, and grows as more arrives.
    ///
    /// # Errors
    /// The refusal, already counted.
    pub fn begin(
        &self,
        signal: Signal,
        transport: &'static str,
        declared: usize,
        connection: Option<&ConnectionLoad>,
    ) -> Result<Upload, ConsumeError> {
        let gates = self
            .gates
            .get(&signal)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let connection =
            connection
                .zip(gates.iter().map(|g| g.budget()).min())
                .map(|(load, budget)| Share {
                    load: load.clone(),
                    bytes: 0,
                    cap: budget / CONNECTION_SHARE,
                });
        let mut upload = Upload {
            held: Vec::new(),
            connection,
        };
        if let Err(err) = upload.grow_connection(declared) {
            self.refused(signal, transport, 0);
            return Err(err);
        }
        let mut held = Vec::new();
        for gate in gates {
            match gate.check(declared).and_then(|()| gate.reserve(declared)) {
                Ok(reservation) => held.push(reservation),
                Err(err) => {
                    self.refused(signal, transport, 0);
                    return Err(err);
                }
            }
        }
        upload.held = held;
        Ok(upload)
    }

    /// Counts a refused request (and its items, when known).
    pub fn refused(&self, signal: Signal, transport: &'static str, items: usize) {
        if let Some(m) = self.metrics.get(&(signal, transport)) {
            m.refused.increment(items as u64);
            m.refused_requests.increment(1);
        }
    }

    /// Counts a request that failed as malformed.
    pub fn failed(&self, signal: Signal, transport: &'static str) {
        if let Some(m) = self.metrics.get(&(signal, transport)) {
            m.failed_requests.increment(1);
        }
    }

    /// Validates an encoded request and pushes it into the pipeline. `upload`, the memory the
    /// request's body held while it was received, becomes the batch's reservation (resized to
    /// what the batch holds), so the bytes are counted without a gap and never twice.
    pub async fn accept(
        &self,
        signal: Signal,
        transport: &'static str,
        data: Bytes,
        upload: Upload,
        client: Option<Arc<ClientInfo>>,
    ) -> Result<Accepted, ConsumeError> {
        let (Some(consumer), Some(metrics)) = (
            self.consumers.get(&signal),
            self.metrics.get(&(signal, transport)),
        ) else {
            return Err(ConsumeError::invalid(format!(
                "this receiver is not configured for {signal}"
            )));
        };
        let checked =
            crate::blocking::off_workers(data.len(), wire::CHECK_OFF_WORKERS_ABOVE, move || {
                wire::checked(signal, data)
            })
            .await
            .ok_or_else(|| ConsumeError::internal("request validation failed"))?;
        let (data, inspection) = match checked {
            Ok(checked) => checked,
            Err(err) => {
                metrics.failed_requests.increment(1);
                return Err(ConsumeError::invalid(format!(
                    "invalid {signal} request: {err}"
                )));
            }
        };
        let accepted = if inspection.rejected > 0 {
            metrics.failed.increment(inspection.rejected as u64);
            Accepted {
                rejected: inspection.rejected as u64,
                message: format!(
                    "{} {} rejected: {}",
                    inspection.rejected,
                    signal.item_name().replace('_', " "),
                    inspection
                        .first_rejection
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
            }
        } else {
            Accepted {
                rejected: 0,
                message: String::new(),
            }
        };
        if inspection.items == 0 {
            if inspection.rejected > 0 {
                // Nothing is left to take: the request as a whole is invalid.
                metrics.failed_requests.increment(1);
                return Err(ConsumeError::invalid(format!(
                    "invalid {signal} request: {}",
                    accepted.message
                )));
            }
            metrics.success.increment(1);
            return Ok(accepted);
        }
        let mut batch = Batch::from_trusted(signal, data, inspection.items).with_client(client);
        // Received whole: the bytes leave the connection's load and stay in the gates' count.
        drop(upload.connection);
        for mut reservation in upload.held {
            match reservation.resize(batch.size()) {
                Ok(()) => batch.hold(reservation),
                Err(err) => {
                    metrics.refused.increment(inspection.items as u64);
                    metrics.refused_requests.increment(1);
                    return Err(err);
                }
            }
        }
        match consumer.consume(batch).await {
            Ok(()) => {
                metrics.accepted.increment(inspection.items as u64);
                metrics.success.increment(1);
                Ok(accepted)
            }
            Err(err) => {
                metrics.refused.increment(inspection.items as u64);
                metrics.refused_requests.increment(1);
                Err(err)
            }
        }
    }
}
