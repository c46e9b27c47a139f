//! A batch: one signal's export request, kept in its protobuf encoding.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::Signal;
use crate::client::ClientInfo;
use crate::gate::{self, Reservation};
use crate::view::edit::{self, Editor, Retain};
use crate::view::{Context, Item};
use crate::wire::{self, WireError};

/// An encoded `Export*ServiceRequest` with its item count and the memory it holds.
///
/// Cloning is cheap (reference counts), which is how fan-out gives every exporter its own copy.
#[derive(Debug, Clone)]
pub struct Batch {
    signal: Signal,
    data: Bytes,
    items: usize,
    held: Vec<Arc<Reservation>>,
    /// Who sent it, when a receiver kept that (`include_metadata`, an authenticator).
    client: Option<Arc<ClientInfo>>,
}

impl Batch {
    /// Validates an encoded request and wraps it.
    ///
    /// # Errors
    /// A [`WireError`] naming the first malformed field.
    pub fn decode(signal: Signal, data: Bytes) -> Result<Batch, WireError> {
        let items = wire::validate_and_count(signal, &data)?;
        Ok(Batch {
            signal,
            data,
            items,
            held: Vec::new(),
            client: None,
        })
    }

    /// Wraps bytes known to be a valid request of `items` items (produced by sluice itself).
    pub fn from_trusted(signal: Signal, data: Bytes, items: usize) -> Batch {
        Batch {
            signal,
            data,
            items,
            held: Vec::new(),
            client: None,
        }
    }

    /// Attaches a memory reservation that is released when the last copy of this data is dropped.
    pub fn hold(&mut self, reservation: Reservation) {
        self.held.push(Arc::new(reservation));
    }

    /// Whether the batch holds a reservation against `gate` already.
    pub(crate) fn holds_on(&self, gate: &Arc<crate::MemoryGate>) -> bool {
        self.held.iter().any(|r| Arc::ptr_eq(r.gate(), gate))
    }

    /// The memory gates this batch holds reservations against: for processors that hold data (a
    /// tail sampler) and watch [`crate::MemoryGate::pressure`] to give it up before the budget
    /// runs out.
    pub fn gates(&self) -> impl Iterator<Item = &Arc<crate::MemoryGate>> {
        self.held.iter().map(|r| r.gate())
    }

    /// Who sent the batch, when that is known (see [`crate::client`]).
    pub fn client(&self) -> Option<&Arc<ClientInfo>> {
        self.client.as_ref()
    }

    /// The batch as sent by `client`.
    #[must_use]
    pub fn with_client(mut self, client: Option<Arc<ClientInfo>>) -> Batch {
        self.client = client;
        self
    }

    /// The signal.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The encoded request.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Spans, metric data points or log records in the batch.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Encoded size in bytes.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// Whether the batch holds no items.
    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// The batch as `editor` leaves it (see [`crate::view::edit`]): the same batch, not a copy,
    /// when it changes nothing. Resources, scopes and metrics left without items are removed;
    /// the item count and size follow, and so do the memory reservations (see [`Batch::hold`]).
    pub fn edit<E: Editor + ?Sized>(self, editor: &mut E) -> Batch {
        match edit::edit(self.signal, &self.data, editor) {
            None => self,
            Some((data, dropped)) => {
                let items = self.items.saturating_sub(dropped);
                self.rebased(data, items)
            }
        }
    }

    /// The batch with only the items `keep` accepts, as [`Batch::edit`].
    pub fn retain(self, keep: impl FnMut(&Context<'_>, &Item<'_>) -> bool) -> Batch {
        self.edit(&mut Retain(keep))
    }

    /// One batch per key of `key`, in order of first appearance; each item's resource and scope
    /// (and metric) travel with it. A batch whose items all share one key comes back as it is.
    /// The pieces share the reservations, as [`Batch::split_off`]'s do.
    pub fn group_by<K: std::hash::Hash + Eq + Clone>(
        self,
        key: impl FnMut(&Context<'_>, &Item<'_>) -> K,
    ) -> Vec<(K, Batch)> {
        let mut groups = edit::group_by(self.signal, &self.data, key);
        if let [(_, None, _)] = groups.as_slice() {
            let (key, _, _) = groups.remove(0);
            return vec![(key, self)];
        }
        groups
            .into_iter()
            .map(|(key, data, items)| {
                let batch = Batch {
                    signal: self.signal,
                    data: data.unwrap_or_else(|| self.data.clone()),
                    items,
                    held: self.held.clone(),
                    client: self.client.clone(),
                };
                (key, batch)
            })
            .collect()
    }

    /// This batch holding `data` of `items` items instead, its reservations following the size.
    fn rebased(mut self, data: Bytes, items: usize) -> Batch {
        gate::follow(&mut self.held, self.data.len(), data.len());
        self.data = data;
        self.items = items;
        self
    }

    /// The batch without the items that would not decode (see [`wire::inspect`]) and how many
    /// were dropped; `None` when every item decodes or the framing itself is broken. For
    /// exporters whose decoder refused a batch: one bad item must not take its neighbours along.
    /// The reservations stay with the kept items.
    pub fn without_undecodable(&self) -> Option<(Batch, usize)> {
        let (data, inspection) = wire::checked(self.signal, self.data.clone()).ok()?;
        if inspection.rejected == 0 {
            return None;
        }
        let kept = Batch {
            signal: self.signal,
            data,
            items: inspection.items,
            held: self.held.clone(),
            client: self.client.clone(),
        };
        let dropped = self.items.saturating_sub(kept.items);
        Some((kept, dropped))
    }

    /// Splits off everything after the first `n` items; `self` keeps the first `n`.
    ///
    /// Both halves share the memory reservations.
    pub fn split_off(&mut self, n: usize) -> Batch {
        if n >= self.items {
            return Batch {
                signal: self.signal,
                data: Bytes::new(),
                items: 0,
                held: Vec::new(),
                client: self.client.clone(),
            };
        }
        let (head, tail) = wire::split(self.signal, &self.data, n);
        let tail = Batch {
            signal: self.signal,
            data: tail,
            items: self.items - n,
            held: self.held.clone(),
            client: self.client.clone(),
        };
        self.data = head;
        self.items = n;
        tail
    }
}

/// Accumulates batches of one signal by concatenating their encodings.
#[derive(Debug)]
pub struct BatchBuilder {
    signal: Signal,
    data: BytesMut,
    items: usize,
    held: Vec<Arc<Reservation>>,
    /// Size of the last batch taken: the next one is allocated at about that size, so a batch
    /// neither carries up to twice its size in spare capacity nor re-copies itself while growing.
    last_size: usize,
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new(signal: Signal) -> Self {
        BatchBuilder {
            signal,
            data: BytesMut::new(),
            items: 0,
            held: Vec::new(),
            last_size: 0,
        }
    }

    /// Appends a batch: `repeated` fields concatenate, so this is a byte copy.
    pub fn push(&mut self, batch: Batch) {
        debug_assert_eq!(batch.signal, self.signal);
        if self.data.capacity() == 0 {
            self.data
                .reserve((self.last_size + self.last_size / 8).max(batch.data.len()));
        }
        self.data.extend_from_slice(&batch.data);
        self.items += batch.items;
        self.held.extend(batch.held);
    }

    /// Items accumulated so far.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Bytes accumulated so far.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// Whether nothing has been pushed since the last [`BatchBuilder::take`].
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Takes what has accumulated as one batch and leaves the builder empty.
    pub fn take(&mut self) -> Batch {
        self.last_size = self.data.len();
        let data = std::mem::take(&mut self.data);
        // A batch that filled less than its buffer would hold the spare capacity for as long as
        // it lives (queues, retries), unseen by the memory gate, which counts data bytes: such a
        // batch is copied to its exact size once. Full batches, the steady state, are not copied.
        let data = if data.capacity() > data.len() + data.len() / 4 {
            Bytes::copy_from_slice(&data)
        } else {
            data.freeze()
        };
        Batch {
            signal: self.signal,
            data,
            items: std::mem::take(&mut self.items),
            held: std::mem::take(&mut self.held),
            client: None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gate::MemoryGate;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    /// A traces request of `spans` spans under one resource and scope.
    pub(crate) fn request(spans: usize) -> Bytes {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        Span {
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            ..Default::default()
                        };
                        spans
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
        .into()
    }

    #[test]
    fn builder_merges_and_split_off_divides() {
        let mut builder = BatchBuilder::new(Signal::Traces);
        builder.push(Batch::decode(Signal::Traces, request(3)).unwrap());
        builder.push(Batch::decode(Signal::Traces, request(4)).unwrap());
        let mut batch = builder.take();
        assert_eq!(batch.items(), 7);
        assert!(builder.is_empty());
        let tail = batch.split_off(5);
        assert_eq!((batch.items(), tail.items()), (5, 2));
        assert_eq!(wire::count(Signal::Traces, batch.data()), 5);
        assert_eq!(wire::count(Signal::Traces, tail.data()), 2);
    }

    #[test]
    fn reservation_outlives_every_piece() {
        let gate = MemoryGate::new("m", 1000);
        let mut batch = Batch::decode(Signal::Traces, request(4)).unwrap();
        batch.hold(gate.reserve(100).unwrap());
        let copy = batch.clone();
        let tail = batch.split_off(2);
        drop(batch);
        drop(copy);
        assert_eq!(gate.in_flight(), 100);
        drop(tail);
        assert_eq!(gate.in_flight(), 0);
    }
}
