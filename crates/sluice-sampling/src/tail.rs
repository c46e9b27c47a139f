//! The `tail_sampling` processor: holds each trace's spans, encoded, until `decision_wait` after
//! its first span (or `decision_wait_after_root_received` after its root), decides by the
//! Collector's policies on all that arrived, and hands on the sampled traces whole. Decisions are
//! remembered (`decision_cache`) so late spans follow them.
//!
//! Memory: held spans keep the memory reservations their receiver took, so they count against
//! the memory limiter's budget. When `num_traces` are held, or the gates the spans are held
//! against pass [`EARLY_ABOVE`] of their budget, the oldest traces are decided at once, by the
//! same policies on what has arrived (`..._early_decision`), instead of being dropped or letting
//! the process grow. A trace's spans are only ever read to decide, so one huge trace costs its
//! own decision and nothing else.

mod policy;

use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use metrics::{Counter, Gauge, Histogram};
use serde::Deserialize;
use serde_json::Value;
use sluice_config::{HumanDuration, Problem};
use sluice_core::view::Item;
use sluice_core::{
    Batch, BatchBuilder, BuildError, ConsumeError, Instance, MemoryGate, Output, PipelineContext,
    Processor, ProcessorComponent, ProcessorFactory, Signal, typed,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use policy::PolicyConfig;
use policy::{Decision, Policy, TraceData, combine, compile_list};

/// Trace-id keyed tables: trace ids are random already, so a fast seeded hash will do.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Traces decided in one round before the decider lets ingest run again.
const DECIDE_PER_ROUND: usize = 1024;

/// Gate fill above which the oldest traces are decided early.
pub const EARLY_ABOVE: f64 = 0.8;

/// `processors.tail_sampling`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailSamplingConfig {
    /// How long after a trace's first span it is decided.
    #[serde(default = "thirty_seconds")]
    pub decision_wait: HumanDuration,
    /// How long after a trace's root span arrives it is decided, if that is sooner.
    #[serde(default)]
    pub decision_wait_after_root_received: Option<HumanDuration>,
    /// Traces held at most; past it the oldest is decided early.
    #[serde(default = "fifty_thousand")]
    pub num_traces: u64,
    /// A sizing hint for the trace table.
    #[serde(default)]
    pub expected_new_traces_per_sec: u64,
    /// How many decisions to remember for late spans.
    #[serde(default)]
    pub decision_cache: DecisionCacheConfig,
    /// The policies; a trace is sampled when any samples it and no `drop` policy matches.
    pub policies: Vec<PolicyConfig>,
    /// Stop at the first policy that samples (its later policies are not asked).
    #[serde(default)]
    pub sample_on_first_match: bool,
    /// At shutdown, drop the traces still held instead of deciding them on what arrived.
    #[serde(default)]
    pub drop_pending_traces_on_shutdown: bool,
    /// A trace held past this many encoded bytes is dropped undecided and counted
    /// (`..._traces_dropped_too_large`); `0`: no limit.
    #[serde(default)]
    pub maximum_trace_size_bytes: u64,
    /// `trace-complete` (the only strategy sluice has).
    #[serde(default)]
    pub sampling_strategy: Option<String>,
    /// `false` only: past `num_traces` sluice decides the oldest early rather than blocking.
    #[serde(default)]
    pub block_on_overflow: bool,
    /// Accepted for compatibility (0 to 256), with a warning above 1: sluice keeps one table.
    #[serde(default)]
    pub num_shards: u32,
    /// Refused: sluice's own `storage` keeps held spans on disk.
    #[serde(default)]
    pub tail_storage: Option<Value>,
    /// Sluice's write-ahead log for the spans held for a decision: a request is on disk before
    /// it is acknowledged, and what was held when the process died is held again at the next
    /// start (at-least-once).
    #[serde(default)]
    pub storage: Option<StorageConfig>,
}

/// `storage`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Where the log lives (one directory per sampler; locked while open).
    pub directory: std::path::PathBuf,
    /// Disk the log may use; when full, clients get a retryable refusal.
    #[serde(default = "one_gib")]
    pub max_bytes: sluice_config::ByteSize,
    /// `always` (before each acknowledgement, grouped), `interval` or `never`.
    #[serde(default)]
    pub fsync: sluice_core::exporter::FsyncPolicy,
    /// With `fsync: interval`.
    #[serde(default = "one_second")]
    pub fsync_interval: HumanDuration,
}

fn one_gib() -> sluice_config::ByteSize {
    sluice_config::ByteSize(1 << 30)
}

fn one_second() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

/// `decision_cache`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionCacheConfig {
    /// Trace ids remembered as sampled.
    #[serde(default = "cache_default")]
    pub sampled_cache_size: usize,
    /// Trace ids remembered as not sampled.
    #[serde(default = "cache_default")]
    pub non_sampled_cache_size: usize,
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        DecisionCacheConfig {
            sampled_cache_size: cache_default(),
            non_sampled_cache_size: cache_default(),
        }
    }
}

fn thirty_seconds() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn fifty_thousand() -> u64 {
    50_000
}

/// Sluice remembers decisions by default (the Collector's default keeps none, so late spans of a
/// decided trace start a new trace and can be decided differently, #14760).
fn cache_default() -> usize {
    100_000
}

impl TailSamplingConfig {
    fn compile(&self, path: &str) -> Result<Vec<(String, Policy)>, Vec<Problem>> {
        let mut problems = Vec::new();
        if self.policies.is_empty() {
            problems.push(Problem::error(
                format!("{path}.policies"),
                "at least one policy is required",
            ));
        }
        if self.num_traces == 0 {
            problems.push(Problem::error(
                format!("{path}.num_traces"),
                "must be at least 1",
            ));
        }
        if self.decision_wait.0.is_zero() {
            problems.push(Problem::error(
                format!("{path}.decision_wait"),
                "must be longer than 0",
            ));
        }
        if let Some(s) = &self.sampling_strategy
            && s != "trace-complete"
        {
            problems.push(Problem::error(
                format!("{path}.sampling_strategy"),
                format!(
                    "`{s}` is not supported: sluice decides complete traces (`trace-complete`)"
                ),
            ));
        }
        if self.block_on_overflow {
            problems.push(Problem::error(
                format!("{path}.block_on_overflow"),
                "is not supported: past `num_traces` sluice decides the oldest traces early (counted in otelcol_processor_tail_sampling_early_decision) instead of blocking or dropping them",
            ));
        }
        if let Some(st) = &self.storage {
            if st.directory.as_os_str().is_empty() {
                problems.push(Problem::error(
                    format!("{path}.storage.directory"),
                    "is required",
                ));
            }
            if st.max_bytes.bytes() < 1 << 20 {
                problems.push(Problem::error(
                    format!("{path}.storage.max_bytes"),
                    "must be at least 1MiB",
                ));
            }
        }
        if self.num_shards > 256 {
            problems.push(Problem::error(
                format!("{path}.num_shards"),
                "must be at most 256",
            ));
        }
        if self.tail_storage.is_some() {
            problems.push(Problem::error(
                format!("{path}.tail_storage"),
                "is not supported: use sluice's `storage` (`directory`, `max_bytes`, `fsync`), a write-ahead log of the spans held for a decision",
            ));
        }
        let policies = compile_list(&format!("{path}.policies"), &self.policies, &mut problems);
        if problems.is_empty() {
            Ok(self
                .policies
                .iter()
                .map(|p| p.name.clone())
                .zip(policies)
                .collect())
        } else {
            Err(problems)
        }
    }
}

/// One held trace.
struct Held {
    pieces: Vec<Batch>,
    /// Per piece, the write-ahead log record it came in (0 without `storage`).
    seqs: Vec<u64>,
    spans: u64,
    bytes: usize,
    /// When it is decided unless something comes first.
    deadline: Instant,
}

/// A bounded set remembering the newest ids.
struct Remembered {
    ids: HashSet<[u8; 16]>,
    order: VecDeque<[u8; 16]>,
    capacity: usize,
}

impl Remembered {
    fn new(capacity: usize) -> Self {
        Remembered {
            ids: HashSet::default(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn insert(&mut self, id: [u8; 16]) {
        if self.capacity == 0 || !self.ids.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    fn contains(&self, id: &[u8; 16]) -> bool {
        self.ids.contains(id)
    }
}

#[derive(Default)]
struct State {
    traces: HashMap<[u8; 16], Held>,
    /// (deadline, id), earliest first, with stale entries skipped when popped.
    deadlines: BinaryHeap<std::cmp::Reverse<(Instant, [u8; 16])>>,
    /// Arrival order, for early decisions (oldest first), stale entries skipped.
    arrivals: VecDeque<[u8; 16]>,
    sampled: Option<Remembered>,
    not_sampled: Option<Remembered>,
    /// The gates held spans count against.
    gates: Vec<Arc<MemoryGate>>,
    held_bytes: usize,
}

struct Metrics {
    /// By policy: (sampled, not sampled).
    per_policy: Vec<(Counter, Counter)>,
    sampled: Counter,
    not_sampled: Counter,
    decision_latency: Histogram,
    on_memory: Gauge,
    early: Counter,
    late_sampled: Counter,
    late_dropped: Counter,
    new_trace_id_received: Counter,
    global_sampled: Counter,
    global_not_sampled: Counter,
    too_large: Counter,
}

struct Engine {
    policies: Vec<(String, Policy)>,
    wait: Duration,
    after_root: Option<Duration>,
    num_traces: usize,
    first_match: bool,
    drop_pending: bool,
    max_trace_bytes: usize,
    /// The write-ahead log, with `storage`.
    wal: Option<Wal>,
    /// The instance's shutdown: sends stop waiting for a refusing pipeline.
    stop: CancellationToken,
    state: Mutex<State>,
    metrics: Metrics,
    output: Output,
    /// Wakes the decider when a deadline earlier than it sleeps to appears, or memory is short.
    wake: tokio::sync::Notify,
}

/// A batch split by trace id, and the ids whose root span it holds.
type ByTrace = (Vec<([u8; 16], Batch)>, Vec<[u8; 16]>);

/// Batches over this many bytes are split by trace on the blocking pool.
const OFF_WORKERS_ABOVE: usize = 64 * 1024;

/// One piece per trace; the traces whose root span is in the batch are noted aside (when
/// `roots`), so that a root does not split its trace's piece in two.
fn by_trace(batch: Batch, roots: bool) -> ByTrace {
    let mut seen_roots: Vec<[u8; 16]> = Vec::new();
    let pieces = batch.group_by(|_, item| match item {
        Item::Span(span) => {
            let mut id = [0u8; 16];
            if span.trace_id().len() == 16 {
                id.copy_from_slice(span.trace_id());
            }
            if roots && span.parent_span_id().is_empty() {
                seen_roots.push(id);
            }
            id
        }
        _ => [0u8; 16],
    });
    (pieces, seen_roots)
}

/// A trace taken out to be decided, and why now.
type Decided = ([u8; 16], Held, Why);

/// Why a trace is decided.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    Due,
    Early,
    Shutdown,
}

impl Engine {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a batch in: holds new spans, passes late spans of sampled traces, drops those of
    /// traces already dropped.
    fn take(&self, batch: Batch, seq: u64) -> Option<Batch> {
        self.hold(by_trace(batch, self.after_root.is_some()), seq)
    }

    /// Takes a batch in as [`Engine::take`], splitting it by trace on the blocking pool when it
    /// is large (regrouping copies every span).
    async fn take_off_workers(
        &self,
        batch: Batch,
        seq: u64,
    ) -> Result<Option<Batch>, ConsumeError> {
        let roots = self.after_root.is_some();
        let grouped =
            sluice_core::blocking::off_workers(batch.size(), OFF_WORKERS_ABOVE, move || {
                by_trace(batch, roots)
            })
            .await
            .ok_or_else(|| ConsumeError::internal("tail_sampling failed to group a batch"))?;
        Ok(self.hold(grouped, seq))
    }

    /// Holds the pieces of one batch (see [`by_trace`]), from write-ahead log record `seq`.
    fn hold(&self, (pieces, roots): ByTrace, seq: u64) -> Option<Batch> {
        let now = Instant::now();
        let mut held_pieces = 0;
        let mut released = Vec::new();
        let mut passed = BatchBuilder::new(Signal::Traces);
        let mut early_needed = false;
        let mut state = self.lock();
        for (id, piece) in pieces {
            let root = roots.contains(&id);
            if state.sampled.as_ref().is_some_and(|c| c.contains(&id)) {
                self.metrics.late_sampled.increment(piece.items() as u64);
                passed.push(piece);
                continue;
            }
            if state.not_sampled.as_ref().is_some_and(|c| c.contains(&id)) {
                self.metrics.late_dropped.increment(piece.items() as u64);
                continue;
            }
            for gate in piece.gates() {
                if !state.gates.iter().any(|g| Arc::ptr_eq(g, gate)) {
                    state.gates.push(Arc::clone(gate));
                }
            }
            let size = piece.size();
            let spans = piece.items() as u64;
            let deadline_root = if root {
                self.after_root.map(|d| now + d)
            } else {
                None
            };
            let State {
                traces,
                deadlines,
                arrivals,
                held_bytes,
                not_sampled,
                ..
            } = &mut *state;
            let held = traces.entry(id).or_insert_with(|| {
                self.metrics.new_trace_id_received.increment(1);
                arrivals.push_back(id);
                deadlines.push(std::cmp::Reverse((now + self.wait, id)));
                Held {
                    pieces: Vec::new(),
                    seqs: Vec::new(),
                    spans: 0,
                    bytes: 0,
                    deadline: now + self.wait,
                }
            });
            held.pieces.push(piece);
            held.seqs.push(seq);
            held_pieces += 1;
            held.spans += spans;
            held.bytes += size;
            *held_bytes += size;
            if let Some(d) = deadline_root
                && d < held.deadline
            {
                held.deadline = d;
                deadlines.push(std::cmp::Reverse((d, id)));
                self.wake.notify_one();
            }
            if self.max_trace_bytes > 0 && held.bytes > self.max_trace_bytes {
                let spans = held.spans;
                let bytes = held.bytes;
                released.extend(held.seqs.iter().copied());
                traces.remove(&id);
                *held_bytes -= bytes;
                self.metrics.too_large.increment(1);
                self.metrics.not_sampled.increment(spans);
                if let Some(c) = not_sampled.as_mut() {
                    c.insert(id);
                }
                continue;
            }
            if traces.len() > self.num_traces {
                early_needed = true;
            }
        }
        let pressure = state.gates.iter().map(|g| g.pressure()).fold(0.0, f64::max);
        self.metrics.on_memory.set(state.traces.len() as f64);
        drop(state);
        if let Some(wal) = &self.wal {
            wal.register(seq, held_pieces);
            for s in released {
                wal.release(s);
            }
        }
        if early_needed || pressure > EARLY_ABOVE {
            self.wake.notify_one();
        }
        (!passed.is_empty()).then(|| passed.take())
    }

    /// The traces to decide now: those due, and the oldest while too many are held or memory
    /// is short.
    fn due(&self, shutdown: bool) -> (Vec<Decided>, Option<Instant>) {
        let now = Instant::now();
        let mut state = self.lock();
        let mut out = Vec::new();
        if shutdown {
            let all: Vec<_> = state
                .traces
                .drain()
                .map(|(id, h)| (id, h, Why::Shutdown))
                .collect();
            state.deadlines.clear();
            state.arrivals.clear();
            state.held_bytes = 0;
            return (all, None);
        }
        while let Some(std::cmp::Reverse((deadline, id))) = state.deadlines.peek().copied() {
            if deadline > now || out.len() >= DECIDE_PER_ROUND {
                break;
            }
            state.deadlines.pop();
            if state
                .traces
                .get(&id)
                .is_some_and(|h| h.deadline == deadline)
                && let Some(held) = state.traces.remove(&id)
            {
                state.held_bytes -= held.bytes;
                out.push((id, held, Why::Due));
            }
        }
        // Early decisions: past `num_traces`, or while the gates are short of room, oldest first
        // (at most a tenth of what is held per round, so memory is given back in steps).
        let pressure = |s: &State| s.gates.iter().map(|g| g.pressure()).fold(0.0, f64::max);
        let mut budget = (state.traces.len() / 10).max(1);
        while state.traces.len() > self.num_traces
            || (pressure(&state) > EARLY_ABOVE && budget > 0 && !state.traces.is_empty())
        {
            let Some(id) = state.arrivals.pop_front() else {
                break;
            };
            if let Some(held) = state.traces.remove(&id) {
                state.held_bytes -= held.bytes;
                out.push((id, held, Why::Early));
                budget = budget.saturating_sub(1);
            }
            if pressure(&state) > EARLY_ABOVE && budget == 0 {
                break;
            }
        }
        // Drop arrival entries of traces no longer held, from the front.
        while state
            .arrivals
            .front()
            .is_some_and(|id| !state.traces.contains_key(id))
        {
            state.arrivals.pop_front();
        }
        if state.arrivals.len() > 4 * state.traces.len() + 1024 {
            let State {
                arrivals, traces, ..
            } = &mut *state;
            arrivals.retain(|id| traces.contains_key(id));
        }
        self.metrics.on_memory.set(state.traces.len() as f64);
        let next = state.deadlines.peek().map(|r| r.0.0);
        (out, next)
    }

    /// Decides one trace by the policies.
    fn decide(&self, id: [u8; 16], held: &Held) -> bool {
        let trace = TraceData {
            batches: &held.pieces,
            spans: held.spans,
            bytes: held.bytes,
            trace_id: id,
        };
        let started = std::time::Instant::now();
        let mut verdicts: Vec<Decision> = Vec::with_capacity(self.policies.len());
        for (i, (_, p)) in self.policies.iter().enumerate() {
            let d = p.evaluate(&trace);
            let (yes, no) = &self.metrics.per_policy[i];
            match d {
                Decision::Sampled => yes.increment(1),
                _ => no.increment(1),
            }
            verdicts.push(d);
            if self.first_match && d == Decision::Sampled {
                break;
            }
        }
        self.metrics
            .decision_latency
            .record(started.elapsed().as_micros() as f64);
        combine(verdicts)
    }

    async fn settle(&self, decided: Vec<Decided>) {
        if decided.is_empty() {
            return;
        }
        let mut out = BatchBuilder::new(Signal::Traces);
        let mut verdicts = Vec::with_capacity(decided.len());
        // Records of the write-ahead log these traces came in: released once what is kept has
        // been handed on.
        let mut seqs = Vec::new();
        for (id, held, why) in decided {
            seqs.extend(held.seqs.iter().copied());
            if why == Why::Early {
                self.metrics.early.increment(1);
            }
            let keep = self.decide(id, &held);
            verdicts.push((id, keep));
            if keep {
                self.metrics.global_sampled.increment(1);
                self.metrics.sampled.increment(held.spans);
                for piece in held.pieces {
                    out.push(piece);
                    if out.items() >= 8192 {
                        self.send(out.take()).await;
                    }
                }
            } else {
                self.metrics.global_not_sampled.increment(1);
                self.metrics.not_sampled.increment(held.spans);
            }
        }
        {
            let mut state = self.lock();
            for (id, keep) in verdicts {
                let cache = if keep {
                    &mut state.sampled
                } else {
                    &mut state.not_sampled
                };
                if let Some(c) = cache.as_mut() {
                    c.insert(id);
                }
            }
        }
        if !out.is_empty() {
            self.send(out.take()).await;
        }
        if let Some(wal) = &self.wal {
            for s in seqs {
                wal.release(s);
            }
        }
    }

    /// Hands a decided batch on, waiting while the pipeline refuses it for back-pressure (the
    /// traces arriving meanwhile are held, under the memory gates).
    async fn send(&self, batch: Batch) {
        let items = batch.items();
        if let Err(err) = self
            .output
            .send_until_taken(batch, &self.stop, |_| {})
            .await
        {
            tracing::error!(items, error = %err.message, "pipeline refused sampled spans, data dropped");
        }
    }

    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if self.wal.is_some() {
            self.replay().await;
            let engine = Arc::clone(&self);
            let stop = shutdown.clone();
            tokio::spawn(async move { engine.follow_log(stop).await });
        }
        loop {
            let (decided, next) = self.due(false);
            let busy = !decided.is_empty();
            self.settle(decided).await;
            if busy {
                tokio::task::yield_now().await;
                continue;
            }
            // Wake at the next deadline, when told to, or at least every 100 ms to watch memory.
            let until = next.map_or(Instant::now() + Duration::from_millis(100), |n| {
                n.min(Instant::now() + Duration::from_millis(100))
            });
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = self.wake.notified() => {}
                () = shutdown.cancelled() => break,
            }
        }
        // At shutdown every held trace is decided on what arrived and the sampled ones handed on,
        // unless told to drop them.
        let (decided, _) = self.due(true);
        if self.drop_pending {
            for (_, held, _) in decided {
                self.metrics.not_sampled.increment(held.spans);
                if let Some(wal) = &self.wal {
                    for &s in &held.seqs {
                        wal.release(s);
                    }
                }
            }
        } else {
            self.settle(decided).await;
        }
        if let Some(wal) = &self.wal {
            wal.log.close().await;
        }
    }
}

/// The write-ahead log of held spans: each request is a record, acknowledged once every trace
/// piece it brought has been decided and what was kept handed on. The log's reader reads each
/// record back (it can only acknowledge what it has read); after a restart, what it reads
/// first is what the last run left unacknowledged, and that is held again.
struct Wal {
    log: Arc<sluice_core::disk_log::DiskLog>,
    reader: sluice_core::disk_log::Reader,
    refs: Mutex<HashMap<u64, Refs>>,
    /// Set once what the last run left is held again; requests are refused before.
    replayed: std::sync::atomic::AtomicBool,
}

/// One record's state.
#[derive(Default)]
struct Refs {
    /// Trace pieces from it still held.
    pending: usize,
    /// Its pieces are counted.
    registered: bool,
    /// The reader has read it.
    read: bool,
}

impl Wal {
    fn update(&self, seq: u64, change: impl FnOnce(&mut Refs)) {
        if seq == 0 {
            return;
        }
        let mut refs = self.refs.lock().unwrap_or_else(|e| e.into_inner());
        let r = refs.entry(seq).or_default();
        change(r);
        if r.registered && r.read && r.pending == 0 {
            refs.remove(&seq);
            drop(refs);
            self.reader.ack(seq);
        }
    }

    fn register(&self, seq: u64, pieces: usize) {
        self.update(seq, |r| {
            r.pending += pieces;
            r.registered = true;
        });
    }

    fn release(&self, seq: u64) {
        self.update(seq, |r| r.pending = r.pending.saturating_sub(1));
    }

    fn read(&self, seq: u64) {
        self.update(seq, |r| r.read = true);
    }
}

impl Engine {
    /// Holds again what the last run left in the write-ahead log.
    async fn replay(&self) {
        let Some(wal) = &self.wal else { return };
        let (mut records, mut spans) = (0u64, 0u64);
        loop {
            match wal.reader.try_next(8192, 8 << 20).await {
                Ok(Some(run)) => {
                    for record in run.records {
                        records += 1;
                        match Batch::decode(Signal::Traces, record.payload) {
                            Ok(batch) => {
                                spans += batch.items() as u64;
                                if let Some(passed) = self.take(batch, record.seq) {
                                    self.send(passed).await;
                                }
                            }
                            Err(e) => {
                                tracing::error!(seq = record.seq, error = %e, "tail_sampling's write-ahead log holds a record that is not a traces request; skipped");
                                wal.register(record.seq, 0);
                            }
                        }
                        wal.read(record.seq);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read tail_sampling's write-ahead log; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if records > 0 {
            tracing::info!(
                records,
                spans,
                "tail_sampling holds again the spans its write-ahead log kept"
            );
        }
        wal.replayed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Reads back every record as it is appended, so it can be acknowledged.
    async fn follow_log(&self, shutdown: CancellationToken) {
        let Some(wal) = &self.wal else { return };
        loop {
            tokio::select! {
                next = wal.reader.next(u64::MAX, 64 << 20) => match next {
                    Ok(Some(run)) => {
                        for record in run.records {
                            wal.read(record.seq);
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read tail_sampling's write-ahead log; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                () = shutdown.cancelled() => return,
            }
        }
    }
}

struct TailProcessor {
    engine: Arc<Engine>,
}

#[async_trait]
impl Processor for TailProcessor {
    async fn process(&self, batch: Batch) -> Result<Option<Batch>, ConsumeError> {
        let Some(wal) = &self.engine.wal else {
            return self.engine.take_off_workers(batch, 0).await;
        };
        if !wal.replayed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(ConsumeError::unavailable(
                "tail_sampling is taking back what its write-ahead log kept",
            ));
        }
        use sluice_core::disk_log::AppendError;
        let appended = wal
            .log
            .append(
                batch.data().clone(),
                u32::try_from(batch.items()).unwrap_or(u32::MAX),
            )
            .await
            .map_err(|e| match e {
                AppendError::TooLarge { .. } => {
                    ConsumeError::invalid(format!("tail_sampling: {e}"))
                }
                e => ConsumeError::unavailable(format!("tail_sampling's write-ahead log: {e}")),
            })?;
        self.engine.take_off_workers(batch, appended.seq).await
    }
}

struct TailComponent {
    id: String,
    config: TailSamplingConfig,
}

impl ProcessorComponent for TailComponent {
    fn instance(&self, ctx: PipelineContext) -> Result<Instance, BuildError> {
        let path = format!("processors.{}", self.id);
        let policies = self
            .config
            .compile(&path)
            .map_err(|mut p| BuildError::Config(p.remove(0)))?;
        use sluice_core::metrics as names;
        let id = ctx.id.clone();
        let per_policy = policies
            .iter()
            .map(|(name, _)| {
                let c = |sampled: &str| metrics::counter!(names::TAIL_SAMPLING_COUNT_TRACES_SAMPLED, "processor" => id.clone(), "policy" => name.clone(), "sampled" => sampled.to_owned());
                (c("true"), c("false"))
            })
            .collect();
        let c = &self.config;
        let engine = Arc::new(Engine {
            wait: c.decision_wait.0,
            after_root: c.decision_wait_after_root_received.map(|d| d.0),
            num_traces: usize::try_from(c.num_traces).unwrap_or(usize::MAX),
            first_match: c.sample_on_first_match,
            drop_pending: c.drop_pending_traces_on_shutdown,
            max_trace_bytes: usize::try_from(c.maximum_trace_size_bytes).unwrap_or(usize::MAX),
            wal: c
                .storage
                .as_ref()
                .map(|st| open_wal(st, &ctx.pipeline))
                .transpose()?,
            stop: ctx.shutdown.clone(),
            state: Mutex::new(State {
                sampled: (c.decision_cache.sampled_cache_size > 0)
                    .then(|| Remembered::new(c.decision_cache.sampled_cache_size)),
                not_sampled: (c.decision_cache.non_sampled_cache_size > 0)
                    .then(|| Remembered::new(c.decision_cache.non_sampled_cache_size)),
                traces: HashMap::with_capacity_and_hasher(
                    usize::try_from(
                        c.expected_new_traces_per_sec
                            .saturating_mul(c.decision_wait.0.as_secs()),
                    )
                    .unwrap_or(0)
                    .min(c.num_traces as usize)
                    .min(1 << 20),
                    Default::default(),
                ),
                ..State::default()
            }),
            metrics: Metrics {
                per_policy,
                sampled: metrics::counter!(names::TAIL_SAMPLING_COUNT_SPANS_SAMPLED, "processor" => id.clone(), "sampled" => "true"),
                not_sampled: metrics::counter!(names::TAIL_SAMPLING_COUNT_SPANS_SAMPLED, "processor" => id.clone(), "sampled" => "false"),
                decision_latency: metrics::histogram!(names::TAIL_SAMPLING_DECISION_LATENCY, "processor" => id.clone()),
                on_memory: metrics::gauge!(names::TAIL_SAMPLING_TRACES_ON_MEMORY, "processor" => id.clone()),
                early: metrics::counter!(names::TAIL_SAMPLING_EARLY_DECISION, "processor" => id.clone()),
                late_sampled: metrics::counter!(names::TAIL_SAMPLING_LATE_SPANS, "processor" => id.clone(), "decision" => "sampled"),
                late_dropped: metrics::counter!(names::TAIL_SAMPLING_LATE_SPANS, "processor" => id.clone(), "decision" => "not_sampled"),
                new_trace_id_received: metrics::counter!(names::TAIL_SAMPLING_NEW_TRACE_ID_RECEIVED, "processor" => id.clone()),
                global_sampled: metrics::counter!(names::TAIL_SAMPLING_GLOBAL_COUNT_TRACES_SAMPLED, "processor" => id.clone(), "sampled" => "true"),
                global_not_sampled: metrics::counter!(names::TAIL_SAMPLING_GLOBAL_COUNT_TRACES_SAMPLED, "processor" => id.clone(), "sampled" => "false"),
                too_large: metrics::counter!(names::TAIL_SAMPLING_TRACES_DROPPED_TOO_LARGE, "processor" => id.clone()),
            },
            policies,
            output: ctx.output,
            wake: tokio::sync::Notify::new(),
        });
        // Registered so dashboards see it; sluice decides such traces early instead.
        metrics::counter!(names::TAIL_SAMPLING_TRACE_DROPPED_TOO_EARLY, "processor" => id)
            .absolute(0);
        let task = tokio::spawn(Arc::clone(&engine).run(ctx.shutdown));
        Ok(Instance {
            processor: Arc::new(TailProcessor { engine }),
            tasks: vec![task],
        })
    }
}

/// Opens (and recovers) the write-ahead log of the sampler in pipeline `pipeline`.
fn open_wal(st: &StorageConfig, pipeline: &str) -> Result<Wal, BuildError> {
    use sluice_core::disk_log::{DiskLog, Fsync, LogConfig, OnFull};
    use sluice_core::exporter::FsyncPolicy;
    let max_bytes = st.max_bytes.bytes();
    let config = LogConfig {
        dir: st.directory.join(pipeline.replace('/', "_")),
        max_bytes,
        segment_bytes: (max_bytes / 8).clamp(64 << 10, 64 << 20),
        fsync: match st.fsync {
            FsyncPolicy::Always => Fsync::Always,
            FsyncPolicy::Interval => Fsync::Interval(st.fsync_interval.0),
            FsyncPolicy::Never => Fsync::Never,
        },
        on_full: OnFull::Refuse,
    };
    let dir = config.dir.clone();
    // Recovery reads every segment (up to `max_bytes`): the runtime is told this worker blocks.
    let open = move || DiskLog::open(config, &["tail_sampling"]);
    let opened = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(open),
        _ => open(),
    };
    let (log, recovery) = opened.map_err(|e| {
        BuildError::Other(format!(
            "cannot open tail_sampling's write-ahead log in {}: {e}",
            dir.display()
        ))
    })?;
    if recovery.torn_bytes > 0 || recovery.quarantined_bytes > 0 {
        tracing::warn!(dir = %dir.display(), torn_bytes = recovery.torn_bytes, quarantined_bytes = recovery.quarantined_bytes, "tail_sampling's write-ahead log recovered from damage");
    }
    let reader = log
        .reader("tail_sampling")
        .ok_or_else(|| BuildError::Other("the write-ahead log lost its reader".into()))?;
    Ok(Wal {
        log,
        reader,
        refs: Mutex::new(HashMap::default()),
        replayed: std::sync::atomic::AtomicBool::new(false),
    })
}

/// Builds `tail_sampling` processors.
#[derive(Debug, Default)]
pub struct TailSamplingFactory;

impl ProcessorFactory for TailSamplingFactory {
    fn type_name(&self) -> &'static str {
        "tail_sampling"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces"]
    }

    fn holds_data(&self) -> bool {
        true
    }

    fn keeps_own_log(&self, config: &Value) -> bool {
        config.get("storage").is_some_and(|s| !s.is_null())
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &TailSamplingConfig| {
            let mut problems = c.compile(path).err().unwrap_or_default();
            if c.num_shards > 1 {
                problems.push(Problem::warning(
                    format!("{path}.num_shards"),
                    "has no effect: sluice keeps one trace table",
                ));
            }
            policy::no_effect(&format!("{path}.policies"), &c.policies, &mut problems);
            problems
        })
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn ProcessorComponent>, BuildError> {
        let path = format!("processors.{id}");
        let config: TailSamplingConfig = typed(&path, config)?;
        if let Err(mut p) = config.compile(&path) {
            return Err(BuildError::Config(p.remove(0)));
        }
        Ok(Box::new(TailComponent {
            id: id.to_owned(),
            config,
        }))
    }
}

#[cfg(test)]
mod tests;
