//! The `memory` exporter: recent traces (and the log records that carry their trace ids) kept
//! in memory, bounded in bytes, the oldest trace evicted first (and counted), for the query
//! service to read when no database runs.
//!
//! Spans are grouped by trace as they arrive; a trace keeps its place in the eviction order from
//! its first span, so a long trace still growing is evicted as old. Searches scan the store
//! (it is small by design: 64 MiB by default), so what a search sees is always what is held.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use metrics::{Counter, Gauge};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde::Deserialize;
use serde_json::Value;
use sluice_config::ByteSize;
use sluice_config::Problem;
use sluice_core::store::{
    Cursor, Dependency, ErrorGroup, Operation, OperationSeries, OperationStats, ReadError,
    SeriesCounts, SortBy, TokenUsage, Trace, TraceId, TraceLog, TraceQuery, TraceReader,
    TraceSummary, percentiles_disc, series_intervals, whole_minutes,
};
use sluice_core::{
    Batch, BuildError, BuiltExporter, ConsumeError, Consumer, DirectExporter, ExporterContext,
    ExporterFactory, HelperSettings, MemoryGate, Reservation, Signal,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Decoding and grouping a batch costs about a microsecond a span: large batches leave the
/// async workers.
const OFF_WORKERS_ABOVE: usize = sluice_core::blocking::DECODE_OFF_WORKERS_ABOVE;

/// A scan of a store holding more than this many bytes of spans leaves the async workers: about
/// 2,000 spans, half a millisecond of matching (a search of 30k spans took 284 µs in
/// `cargo bench -p sluice-query --bench store`, its summaries and copies more).
const SCAN_OFF_WORKERS_ABOVE: usize = 1 << 20;

/// The `memory` exporter's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// The most the stored spans may take, encoded.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// The most traces kept (Jaeger's memory storage key); 0 for no limit but the bytes.
    #[serde(default)]
    pub max_traces: usize,
}

fn default_max_bytes() -> ByteSize {
    ByteSize(64 << 20)
}

fn problems(path: &str, config: &MemoryConfig) -> Vec<Problem> {
    let mut out = Vec::new();
    if config.max_bytes.bytes() < 1 << 20 {
        out.push(Problem::error(
            format!("{path}.max_bytes"),
            "must be at least 1MiB",
        ));
    }
    out
}

/// The most of a memory gate's budget the store holds: a half (`budget / GATE_SHARE`), so
/// the other half is always there for data being received.
const GATE_SHARE: usize = 2;

/// A gate this full (or refusing) makes the store give memory back.
const PRESSURE: f64 = 0.8;

/// One stored trace.
struct Entry {
    /// Its place in the eviction order.
    seq: u64,
    /// Its spans, by arrival.
    spans: Vec<ResourceSpans>,
    /// The trace's log records, by arrival.
    logs: Vec<TraceLog>,
    /// The encoded size of its spans and logs.
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    traces: HashMap<TraceId, Entry>,
    /// Trace ids by first arrival, with the `seq` they had then (a stale pair is skipped).
    order: VecDeque<(TraceId, u64)>,
    next_seq: u64,
    bytes: usize,
    /// What the store holds, reserved on the memory gates of the pipelines that feed it, so
    /// the memory limiters count it; one per gate.
    reserved: Vec<Reservation>,
}

impl Inner {
    /// Trace `id`'s entry, made (and placed last in the eviction order) when new.
    fn entry(&mut self, id: TraceId) -> &mut Entry {
        let Inner {
            traces,
            order,
            next_seq,
            ..
        } = self;
        traces.entry(id).or_insert_with(|| {
            let seq = *next_seq;
            *next_seq += 1;
            order.push_back((id, seq));
            Entry {
                seq,
                spans: Vec::new(),
                logs: Vec::new(),
                bytes: 0,
            }
        })
    }

    /// Counts `bytes` more held for trace `id`.
    fn grow(&mut self, id: TraceId, bytes: usize) {
        if let Some(entry) = self.traces.get_mut(&id) {
            entry.bytes += bytes;
            self.bytes += bytes;
        }
    }
}

/// Recent traces in memory.
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    max_bytes: usize,
    max_traces: usize,
    evicted: Counter,
    held: Gauge,
}

impl MemoryStore {
    /// An empty store holding at most `max_bytes` of spans and `max_traces` traces (0: any
    /// number); evictions are counted under exporter `id`.
    pub fn new(id: &str, max_bytes: usize, max_traces: usize) -> Self {
        MemoryStore {
            inner: Arc::new(Mutex::new(Inner::default())),
            max_bytes,
            max_traces,
            evicted: metrics::counter!(
                sluice_core::metrics::MEMORY_STORE_EVICTED_TRACES,
                "exporter" => id.to_owned()
            ),
            held: metrics::gauge!(
                sluice_core::metrics::MEMORY_STORE_BYTES,
                "exporter" => id.to_owned()
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores the spans of an OTLP trace request.
    pub fn insert(&self, request: ExportTraceServiceRequest) {
        let mut by_trace: HashMap<TraceId, Vec<ResourceSpans>> = HashMap::new();
        for resource_spans in request.resource_spans {
            for scope_spans in resource_spans.scope_spans {
                let mut groups: HashMap<TraceId, Vec<Span>> = HashMap::new();
                for span in scope_spans.spans {
                    let Ok(id) = TraceId::try_from(span.trace_id.as_slice()) else {
                        continue;
                    };
                    groups.entry(id).or_default().push(span);
                }
                for (id, spans) in groups {
                    by_trace.entry(id).or_default().push(ResourceSpans {
                        resource: resource_spans.resource.clone(),
                        scope_spans: vec![ScopeSpans {
                            scope: scope_spans.scope.clone(),
                            spans,
                            schema_url: scope_spans.schema_url.clone(),
                        }],
                        schema_url: resource_spans.schema_url.clone(),
                    });
                }
            }
        }
        let mut inner = self.lock();
        for (id, parts) in by_trace {
            let bytes: usize = parts.iter().map(Message::encoded_len).sum();
            inner.entry(id).spans.extend(parts);
            inner.grow(id, bytes);
        }
        self.settle(&mut inner);
    }

    /// Stores the log records of an OTLP logs request that carry a trace id, with their trace
    /// (they are evicted with it); records outside any trace are not kept.
    pub fn insert_logs(&self, request: ExportLogsServiceRequest) {
        let mut by_trace: HashMap<TraceId, Vec<TraceLog>> = HashMap::new();
        for resource_logs in request.resource_logs {
            let service = service_of_resource(resource_logs.resource.as_ref()).to_owned();
            for scope_logs in resource_logs.scope_logs {
                for record in scope_logs.log_records {
                    let Ok(id) = TraceId::try_from(record.trace_id.as_slice()) else {
                        continue;
                    };
                    if id == [0; 16] {
                        continue;
                    }
                    by_trace.entry(id).or_default().push(TraceLog {
                        service: service.clone(),
                        record,
                    });
                }
            }
        }
        let mut inner = self.lock();
        for (id, logs) in by_trace {
            let bytes: usize = logs
                .iter()
                .map(|l| l.record.encoded_len() + l.service.len())
                .sum();
            inner.entry(id).logs.extend(logs);
            inner.grow(id, bytes);
        }
        self.settle(&mut inner);
    }

    /// Runs a read of the store: inline while the store is small, on the blocking pool once a
    /// scan of it would hold an async worker (and the lock ingest waits on) for long.
    async fn scan<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Inner) -> Result<T, ReadError> + Send + 'static,
    ) -> Result<T, ReadError> {
        let held = self.lock().bytes;
        let inner = Arc::clone(&self.inner);
        sluice_core::blocking::off_workers(held, SCAN_OFF_WORKERS_ABOVE, move || {
            read(&inner.lock().unwrap_or_else(PoisonError::into_inner))
        })
        .await
        .unwrap_or_else(|| {
            Err(ReadError::Unavailable(
                "a read of the memory store failed".into(),
            ))
        })
    }

    /// Reserves what the store holds on `gates` too, from now on: the memory gates of a
    /// pipeline that feeds it (those a batch holds reservations against).
    pub fn hold_on<'a>(&self, gates: impl Iterator<Item = &'a Arc<MemoryGate>>) {
        let mut inner = self.lock();
        for gate in gates {
            if !inner.reserved.iter().any(|r| Arc::ptr_eq(r.gate(), gate)) {
                // Zero bytes always fit; `settle` sizes it.
                if let Ok(r) = gate.reserve(0) {
                    inner.reserved.push(r);
                }
            }
        }
    }

    /// Evicts what is over the bounds, reserves what is left on the gates, and reports it.
    fn settle(&self, inner: &mut Inner) {
        let mut limit = self.max_bytes;
        for r in &inner.reserved {
            limit = limit.min(r.gate().budget() / GATE_SHARE);
        }
        self.evict(inner, limit);
        // What does not fit a gate (it is refusing, or in-flight data fills it) goes, oldest
        // first: received data comes before recent traces.
        for i in 0..inner.reserved.len() {
            loop {
                let bytes = inner.bytes;
                if inner.reserved[i].resize(bytes).is_ok() {
                    break;
                }
                let target = bytes / 2;
                self.evict(inner, target);
            }
        }
        #[allow(clippy::cast_precision_loss)]
        self.held.set(inner.bytes as f64);
    }

    /// Gives memory back while a gate it holds on is under pressure (80% full, or refusing):
    /// halves the store each time it is called so. Run every second by the exporter, so a store
    /// never keeps a memory limiter refusing.
    pub fn relieve(&self) {
        let mut inner = self.lock();
        if inner
            .reserved
            .iter()
            .any(|r| r.gate().pressure() >= PRESSURE)
            && inner.bytes > 0
        {
            let before = (inner.traces.len(), inner.bytes);
            let target = inner.bytes / 2;
            self.evict(&mut inner, target);
            self.settle(&mut inner);
            tracing::debug!(
                traces = before.0 - inner.traces.len(),
                bytes = before.1 - inner.bytes,
                "memory store gave memory back under pressure"
            );
        }
    }

    /// Drops the oldest traces until the store holds at most `limit` bytes (and its trace
    /// bound).
    fn evict(&self, inner: &mut Inner, limit: usize) {
        while inner.bytes > limit || (self.max_traces > 0 && inner.traces.len() > self.max_traces) {
            let Some((id, seq)) = inner.order.pop_front() else {
                break;
            };
            if inner.traces.get(&id).is_some_and(|e| e.seq == seq)
                && let Some(entry) = inner.traces.remove(&id)
            {
                inner.bytes -= entry.bytes;
                self.evicted.increment(1);
            }
        }
    }

    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The traces held.
    pub fn len(&self) -> usize {
        self.lock().traces.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A resource's `service.name`, or `unknown_service` as the Jaeger translation names it.
pub(crate) fn service_of(resource_spans: &ResourceSpans) -> &str {
    service_of_resource(resource_spans.resource.as_ref())
}

/// A resource's `service.name`, or `unknown_service`.
fn service_of_resource(resource: Option<&Resource>) -> &str {
    resource
        .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            AnyValueKind::StringValue(s) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("unknown_service")
}

/// Whether `attributes` hold `key` with a value whose text is `text`.
fn has_attribute(attributes: &[KeyValue], key: &str, text: &str) -> bool {
    attributes.iter().any(|a| {
        a.key == key && sluice_core::anyvalue::to_string(a.value.as_ref().and_then(value)) == text
    })
}

fn value(v: &AnyValue) -> Option<&AnyValueKind> {
    v.value.as_ref()
}

/// Whether `span` of `resource_spans` matches every condition of `query`.
fn matches(query: &TraceQuery, resource_spans: &ResourceSpans, span: &Span) -> bool {
    let duration = span
        .end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano);
    let resource = resource_spans
        .resource
        .as_ref()
        .map_or(&[][..], |r| r.attributes.as_slice());
    span.start_time_unix_nano >= query.start_min
        && span.start_time_unix_nano <= query.start_max
        && query
            .service
            .as_deref()
            .is_none_or(|s| s == service_of(resource_spans))
        && query.operation.as_deref().is_none_or(|o| o == span.name)
        && query
            .status
            .is_none_or(|code| span.status.as_ref().map_or(0, |s| s.code) == code)
        && query
            .text
            .as_deref()
            .is_none_or(|text| mentions(span, text))
        && query.min_duration.is_none_or(|d| duration >= d)
        && query.max_duration.is_none_or(|d| duration <= d)
        && query
            .attributes
            .iter()
            .all(|(k, v)| has_attribute(&span.attributes, k, v) || has_attribute(resource, k, v))
}

/// Whether `span`'s status message or one of its exception messages contains `text`, case
/// aside.
fn mentions(span: &Span, text: &str) -> bool {
    let text = text.to_lowercase();
    let has = |s: &str| s.to_lowercase().contains(&text);
    span.status.as_ref().is_some_and(|s| has(&s.message))
        || span
            .events
            .iter()
            .filter(|e| e.name == EXCEPTION)
            .any(|e| has(&attribute(&e.attributes, "exception.message")))
}

/// The event name OpenTelemetry gives a recorded exception.
const EXCEPTION: &str = "exception";

/// The text of attribute `key` (empty when absent).
fn attribute(attributes: &[KeyValue], key: &str) -> String {
    attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| sluice_core::anyvalue::to_string(a.value.as_ref().and_then(value)))
        .unwrap_or_default()
}

/// A record's time, or its observed time when it has none.
pub(crate) fn log_time(record: &LogRecord) -> u64 {
    if record.time_unix_nano == 0 {
        record.observed_time_unix_nano
    } else {
        record.time_unix_nano
    }
}

/// A token count attribute: an int (or a whole, non-negative double), else nothing.
fn tokens(attributes: &[KeyValue], key: &str) -> Option<u64> {
    match attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?
    {
        AnyValueKind::IntValue(n) => u64::try_from(*n).ok(),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        AnyValueKind::DoubleValue(d) if *d >= 0.0 && d.fract() == 0.0 => Some(*d as u64),
        _ => None,
    }
}

/// A trace's summary.
fn summarize(id: &TraceId, entry: &Entry) -> TraceSummary {
    let mut summary = TraceSummary {
        id: *id,
        root_service: None,
        root_name: None,
        start: u64::MAX,
        duration: 0,
        span_count: 0,
        error_count: 0,
    };
    let mut end = 0;
    let mut root_start = u64::MAX;
    for (r, span) in spans(entry) {
        summary.start = summary.start.min(span.start_time_unix_nano);
        end = end.max(span.end_time_unix_nano);
        summary.span_count += 1;
        if span.status.as_ref().is_some_and(|s| s.code == 2) {
            summary.error_count += 1;
        }
        if span.parent_span_id.is_empty() && span.start_time_unix_nano < root_start {
            root_start = span.start_time_unix_nano;
            summary.root_service = Some(service_of(r).to_owned());
            summary.root_name = Some(span.name.clone());
        }
    }
    summary.duration = end.saturating_sub(summary.start);
    summary
}

fn spans(entry: &Entry) -> impl Iterator<Item = (&ResourceSpans, &Span)> {
    entry.spans.iter().flat_map(|r| {
        r.scope_spans
            .iter()
            .flat_map(move |s| s.spans.iter().map(move |span| (r, span)))
    })
}

/// The reads, over the locked store; `MemoryStore::scan` decides where they run.
impl Inner {
    fn services(&self) -> Result<Vec<String>, ReadError> {
        let mut out: Vec<String> = self
            .traces
            .values()
            .flat_map(|e| e.spans.iter().map(|r| service_of(r).to_owned()))
            .collect();
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn operations(&self, service: &str, kind: Option<i32>) -> Result<Vec<Operation>, ReadError> {
        let mut out: Vec<Operation> = self
            .traces
            .values()
            .flat_map(spans)
            .filter(|(r, s)| service_of(r) == service && kind.is_none_or(|k| k == s.kind))
            .map(|(_, s)| Operation {
                name: s.name.clone(),
                kind: s.kind,
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn traces(
        &self,
        ids: &[TraceId],
        range: Option<(u64, u64)>,
    ) -> Result<Vec<(TraceId, Trace)>, ReadError> {
        Ok(ids
            .iter()
            .filter_map(|id| {
                let entry = self.traces.get(id)?;
                let mut resource_spans = entry.spans.clone();
                if let Some((lo, hi)) = range {
                    for r in &mut resource_spans {
                        for s in &mut r.scope_spans {
                            s.spans
                                .retain(|span| (lo..=hi).contains(&span.start_time_unix_nano));
                        }
                        r.scope_spans.retain(|s| !s.spans.is_empty());
                    }
                    resource_spans.retain(|r| !r.scope_spans.is_empty());
                }
                (!resource_spans.is_empty()).then_some((*id, Trace { resource_spans }))
            })
            .collect())
    }

    fn dependencies(&self, start: u64, end: u64) -> Result<Vec<Dependency>, ReadError> {
        let mut calls: HashMap<(String, String), u64> = HashMap::new();
        for entry in self.traces.values() {
            let services: HashMap<&[u8], &str> = spans(entry)
                .map(|(r, s)| (s.span_id.as_slice(), service_of(r)))
                .collect();
            for (r, span) in spans(entry) {
                if !(start..=end).contains(&span.start_time_unix_nano) {
                    continue;
                }
                if let Some(parent) = services.get(span.parent_span_id.as_slice()) {
                    let child = service_of(r);
                    if *parent != child {
                        *calls
                            .entry(((*parent).to_owned(), child.to_owned()))
                            .or_default() += 1;
                    }
                }
            }
        }
        let mut out: Vec<Dependency> = calls
            .into_iter()
            .map(|((parent, child), call_count)| Dependency {
                parent,
                child,
                call_count,
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    fn find_summaries(
        &self,
        query: &TraceQuery,
        sort: SortBy,
        after: Option<Cursor>,
    ) -> Result<Vec<TraceSummary>, ReadError> {
        let conditions = query.has_span_conditions();
        // Keys first, without allocating; only the page's traces are summarized.
        let mut hits: Vec<((u64, TraceId), &TraceId, &Entry)> = self
            .traces
            .iter()
            .filter_map(|(id, entry)| {
                let (start, end) = spans(entry).fold((u64::MAX, 0), |(lo, hi), (_, s)| {
                    (lo.min(s.start_time_unix_nano), hi.max(s.end_time_unix_nano))
                });
                let key = match sort {
                    SortBy::Start => start,
                    SortBy::Duration => end.saturating_sub(start),
                };
                ((query.start_min..=query.start_max).contains(&start)
                    && after.is_none_or(|c| (key, *id) < (c.key, c.id))
                    && (!conditions || spans(entry).any(|(r, s)| matches(query, r, s))))
                .then_some(((key, *id), id, entry))
            })
            .collect();
        if hits.len() > query.limit && query.limit > 0 {
            hits.select_nth_unstable_by(query.limit - 1, |a, b| b.0.cmp(&a.0));
        }
        hits.truncate(query.limit);
        hits.sort_unstable_by_key(|h| std::cmp::Reverse(h.0));
        Ok(hits
            .into_iter()
            .map(|(_, id, entry)| summarize(id, entry))
            .collect())
    }

    fn operation_series(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
        step: u64,
    ) -> Result<Vec<OperationSeries>, ReadError> {
        let (first, after, n) = series_intervals(start, end, step).map_err(ReadError::Invalid)?;
        let mut series = SeriesCounts::new(n);
        for (r, span) in self.traces.values().flat_map(spans) {
            let name = service_of(r);
            let t = span.start_time_unix_nano;
            if !(first..after).contains(&t) || service.is_some_and(|s| s != name) {
                continue;
            }
            let failed = span.status.as_ref().is_some_and(|s| s.code == 2);
            let k = usize::try_from((t - first) / step).unwrap_or(usize::MAX);
            series.add(name, &span.name, k, 1, u64::from(failed));
        }
        Ok(series.into_series())
    }

    fn operation_stats(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
    ) -> Result<Vec<OperationStats>, ReadError> {
        let (start, after) = whole_minutes(start, end);
        let mut groups: BTreeMap<(String, String), (u64, Vec<u64>)> = BTreeMap::new();
        for (r, span) in self.traces.values().flat_map(spans) {
            let name = service_of(r);
            if !(start..after).contains(&span.start_time_unix_nano)
                || service.is_some_and(|s| s != name)
            {
                continue;
            }
            let group = groups
                .entry((name.to_owned(), span.name.clone()))
                .or_default();
            if span.status.as_ref().is_some_and(|s| s.code == 2) {
                group.0 += 1;
            }
            group.1.push(
                span.end_time_unix_nano
                    .saturating_sub(span.start_time_unix_nano),
            );
        }
        Ok(groups
            .into_iter()
            .map(|((service, operation), (errors, mut durations))| {
                durations.sort_unstable();
                OperationStats {
                    service,
                    operation,
                    count: durations.len() as u64,
                    errors,
                    percentiles: percentiles_disc(&durations),
                }
            })
            .collect())
    }

    fn trace_logs(&self, id: &TraceId) -> Result<Vec<TraceLog>, ReadError> {
        let mut logs = self
            .traces
            .get(id)
            .map(|e| e.logs.clone())
            .unwrap_or_default();
        logs.sort_by_key(|l| log_time(&l.record));
        Ok(logs)
    }

    fn token_usage(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
    ) -> Result<Vec<TokenUsage>, ReadError> {
        use sluice_core::store::genai;
        let mut groups: BTreeMap<(TraceId, String, String, String), TokenUsage> = BTreeMap::new();
        for (id, entry) in &self.traces {
            let mut workflow = None;
            for (r, span) in spans(entry) {
                if span.start_time_unix_nano >= start
                    && span.start_time_unix_nano <= end
                    && service.is_none_or(|s| s == service_of(r))
                {
                    let (input, output) = (
                        tokens(&span.attributes, genai::INPUT_TOKENS),
                        tokens(&span.attributes, genai::OUTPUT_TOKENS),
                    );
                    if input.is_none() && output.is_none() {
                        continue;
                    }
                    let workflow = workflow.get_or_insert_with(|| summarize(id, entry).root_name);
                    let model = Some(attribute(&span.attributes, genai::REQUEST_MODEL))
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| attribute(&span.attributes, genai::RESPONSE_MODEL));
                    let system = Some(attribute(&span.attributes, genai::SYSTEM))
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| attribute(&span.attributes, genai::PROVIDER));
                    let usage = groups
                        .entry((*id, span.name.clone(), model.clone(), system.clone()))
                        .or_insert_with(|| TokenUsage {
                            trace: *id,
                            workflow: workflow.clone(),
                            operation: span.name.clone(),
                            model,
                            system,
                            input_tokens: 0,
                            output_tokens: 0,
                            spans: 0,
                        });
                    usage.input_tokens += input.unwrap_or(0);
                    usage.output_tokens += output.unwrap_or(0);
                    usage.spans += 1;
                }
            }
        }
        Ok(groups.into_values().collect())
    }

    fn error_groups(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
    ) -> Result<Vec<ErrorGroup>, ReadError> {
        let mut groups: BTreeMap<(String, String), ErrorGroup> = BTreeMap::new();
        for (r, span) in self.traces.values().flat_map(spans) {
            if !(start..=end).contains(&span.start_time_unix_nano)
                || service.is_some_and(|s| s != service_of(r))
            {
                continue;
            }
            for event in span.events.iter().filter(|e| e.name == EXCEPTION) {
                let kind = attribute(&event.attributes, "exception.type");
                let message = attribute(&event.attributes, "exception.message");
                let group = groups
                    .entry((kind.clone(), message.clone()))
                    .or_insert_with(|| ErrorGroup {
                        kind,
                        message,
                        count: 0,
                        last_seen: 0,
                        trace: [0; 16],
                        stacktrace: String::new(),
                    });
                group.count += 1;
                if event.time_unix_nano >= group.last_seen {
                    group.last_seen = event.time_unix_nano;
                    group.trace = TraceId::try_from(span.trace_id.as_slice()).unwrap_or_default();
                    group.stacktrace = attribute(&event.attributes, "exception.stacktrace");
                }
            }
        }
        let mut out: Vec<ErrorGroup> = groups.into_values().collect();
        out.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.kind, &a.message).cmp(&(&b.kind, &b.message)))
        });
        Ok(out)
    }
}

#[async_trait]
impl TraceReader for MemoryStore {
    async fn services(&self) -> Result<Vec<String>, ReadError> {
        self.scan(move |inner| inner.services()).await
    }

    async fn operations(
        &self,
        service: &str,
        kind: Option<i32>,
    ) -> Result<Vec<Operation>, ReadError> {
        let service = service.to_owned();
        self.scan(move |inner| inner.operations(&service, kind))
            .await
    }

    async fn traces(
        &self,
        ids: &[TraceId],
        range: Option<(u64, u64)>,
    ) -> Result<Vec<(TraceId, Trace)>, ReadError> {
        let ids = ids.to_vec();
        self.scan(move |inner| inner.traces(&ids, range)).await
    }

    async fn dependencies(&self, start: u64, end: u64) -> Result<Vec<Dependency>, ReadError> {
        self.scan(move |inner| inner.dependencies(start, end)).await
    }

    async fn find_summaries(
        &self,
        query: &TraceQuery,
        sort: SortBy,
        after: Option<Cursor>,
    ) -> Result<Vec<TraceSummary>, ReadError> {
        let query = query.clone();
        self.scan(move |inner| inner.find_summaries(&query, sort, after))
            .await
    }

    async fn operation_stats(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
    ) -> Result<Vec<OperationStats>, ReadError> {
        let service = service.map(str::to_owned);
        self.scan(move |inner| inner.operation_stats(service.as_deref(), start, end))
            .await
    }

    async fn operation_series(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
        step: u64,
    ) -> Result<Vec<OperationSeries>, ReadError> {
        let service = service.map(str::to_owned);
        self.scan(move |inner| inner.operation_series(service.as_deref(), start, end, step))
            .await
    }

    async fn trace_logs(&self, id: &TraceId) -> Result<Vec<TraceLog>, ReadError> {
        let id = *id;
        self.scan(move |inner| inner.trace_logs(&id)).await
    }

    async fn token_usage(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
    ) -> Result<Vec<TokenUsage>, ReadError> {
        let service = service.map(str::to_owned);
        self.scan(move |inner| inner.token_usage(service.as_deref(), start, end))
            .await
    }

    async fn error_groups(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
    ) -> Result<Vec<ErrorGroup>, ReadError> {
        let service = service.map(str::to_owned);
        self.scan(move |inner| inner.error_groups(service.as_deref(), start, end))
            .await
    }
}

/// The exporter half: takes trace batches into the store.
struct MemoryExporter {
    store: Arc<MemoryStore>,
}

#[async_trait]
impl Consumer for MemoryExporter {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        self.store.hold_on(batch.gates());
        let store = Arc::clone(&self.store);
        sluice_core::blocking::off_workers(batch.size(), OFF_WORKERS_ABOVE, move || {
            match batch.signal() {
                Signal::Traces => {
                    let request =
                        ExportTraceServiceRequest::decode(batch.data().clone()).map_err(|e| {
                            ConsumeError::invalid(format!("undecodable trace batch: {e}"))
                        })?;
                    store.insert(request);
                }
                Signal::Logs => {
                    let request =
                        ExportLogsServiceRequest::decode(batch.data().clone()).map_err(|e| {
                            ConsumeError::invalid(format!("undecodable logs batch: {e}"))
                        })?;
                    store.insert_logs(request);
                }
                Signal::Metrics => {}
            }
            Ok(())
        })
        .await
        .ok_or_else(|| ConsumeError::internal("the memory exporter failed"))?
    }
}

impl DirectExporter for MemoryExporter {
    /// Watches the gates' pressure every second ([`MemoryStore::relieve`]).
    fn start(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let store = Arc::clone(&self.store);
        vec![tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = shutdown.cancelled() => return,
                }
                let store = Arc::clone(&store);
                // Eviction frees under the lock: off the async workers.
                let _ = tokio::task::spawn_blocking(move || store.relieve()).await;
            }
        })]
    }
}

/// The `memory` exporter type.
pub struct MemoryExporterFactory;

impl ExporterFactory for MemoryExporterFactory {
    fn type_name(&self) -> &'static str {
        "memory"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "logs"]
    }

    fn helper_defaults(&self) -> Option<HelperSettings> {
        None
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &MemoryConfig| problems(path, c))
    }

    fn build(
        &self,
        id: &str,
        config: &Value,
        _helper: &mut HelperSettings,
        context: &ExporterContext,
    ) -> Result<BuiltExporter, BuildError> {
        let path = format!("exporters.{id}");
        let c: MemoryConfig = sluice_core::typed(&path, config)?;
        if let Some(problem) = problems(&path, &c).into_iter().next() {
            return Err(BuildError::Config(problem));
        }
        let max_bytes = usize::try_from(c.max_bytes.bytes()).unwrap_or(usize::MAX);
        let store = Arc::new(MemoryStore::new(id, max_bytes, c.max_traces));
        context
            .stores
            .register(id, Arc::clone(&store) as Arc<dyn TraceReader>);
        Ok(BuiltExporter::Direct(Arc::new(MemoryExporter { store })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(key: &str, value: AnyValueKind) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    /// `spans` spans of trace `trace` from `service`, ids from `start` (the first is the root
    /// here, a child of `parent` when given).
    fn request(
        service: &str,
        trace: u8,
        spans: u8,
        start: u64,
        parent: Option<u64>,
    ) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        AnyValueKind::StringValue(service.to_owned()),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans)
                        .map(|i| Span {
                            trace_id: vec![trace; 16],
                            span_id: (start + u64::from(i)).to_be_bytes().to_vec(),
                            parent_span_id: match (i, parent) {
                                (0, None) => vec![],
                                (0, Some(p)) => p.to_be_bytes().to_vec(),
                                _ => start.to_be_bytes().to_vec(),
                            },
                            name: format!("op{i}"),
                            kind: 2,
                            start_time_unix_nano: start + u64::from(i),
                            end_time_unix_nano: start + u64::from(i) + 1000 * u64::from(i),
                            attributes: vec![kv("n", AnyValueKind::IntValue(i64::from(i)))],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn query() -> TraceQuery {
        TraceQuery::window(0, u64::MAX, 100)
    }

    #[test]
    fn the_store_is_reserved_on_the_gates_that_feed_it_and_holds_at_most_half_of_each() {
        let gate = MemoryGate::new("memory_limiter", 40_000);
        let store = MemoryStore::new("t", 1 << 20, 0);
        store.hold_on([&gate].into_iter());
        store.hold_on([&gate].into_iter());
        for trace in 1..=100u8 {
            store.insert(request("svc", trace, 10, u64::from(trace) * 1000, None));
            assert_eq!(
                gate.in_flight(),
                store.bytes(),
                "one reservation, the store's size"
            );
            assert!(store.bytes() <= 20_000, "{} bytes", store.bytes());
        }
        assert!(
            store.bytes() > 10_000,
            "it fills its share: {}",
            store.bytes()
        );
        // The newest traces stay.
        let held = store.len();
        assert!(held < 100);
        let newest = {
            let inner = store.lock();
            inner.traces.contains_key(&[100; 16]) && !inner.traces.contains_key(&[1; 16])
        };
        assert!(newest);
    }

    #[test]
    fn under_pressure_the_store_gives_memory_back_until_it_is_empty() {
        let gate = MemoryGate::new("memory_limiter", 1 << 20);
        let store = MemoryStore::new("t", 1 << 20, 0);
        store.hold_on([&gate].into_iter());
        for trace in 1..=50u8 {
            store.insert(request("svc", trace, 10, u64::from(trace) * 1000, None));
        }
        let full = store.bytes();
        store.relieve();
        assert_eq!(store.bytes(), full, "no pressure, nothing given back");

        // In-flight data fills the gate past 80%: the store halves, and the gate sees it.
        let data = gate.reserve((1 << 20) * 85 / 100 - full).unwrap();
        store.relieve();
        assert!(store.bytes() <= full / 2, "{} of {full}", store.bytes());
        assert_eq!(gate.in_flight(), store.bytes() + data.bytes());
        drop(data);

        // The memory watcher refuses: every second the store halves again, down to nothing,
        // so it never keeps the limiter refusing.
        gate.set_refusing(true);
        for _ in 0..64 {
            store.relieve();
        }
        assert_eq!((store.bytes(), gate.in_flight()), (0, 0));
        // While refusing, what arrives is not kept either.
        store.insert(request("svc", 77, 10, 77_000, None));
        assert_eq!((store.bytes(), gate.in_flight()), (0, 0));
        gate.set_refusing(false);
        store.insert(request("svc", 78, 10, 78_000, None));
        assert!(store.bytes() > 0);
        assert_eq!(gate.in_flight(), store.bytes());
    }

    #[tokio::test]
    async fn traces_assemble_across_requests_and_searches_select_by_span() {
        let store = MemoryStore::new("t", 1 << 20, 0);
        store.insert(request("a", 1, 2, 100, None));
        store.insert(request("b", 1, 3, 200, Some(100)));
        store.insert(request("a", 2, 1, 300, None));
        assert_eq!(store.len(), 2);
        let found = store.traces(&[[1; 16], [9; 16]], None).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1.span_count(), 5);
        assert_eq!(store.services().await.unwrap(), ["a", "b"]);
        let ops = store.operations("b", Some(2)).await.unwrap();
        assert_eq!(ops.len(), 3);
        assert!(store.operations("b", Some(3)).await.unwrap().is_empty());

        // Most recent first; each filter selects exactly.
        assert_eq!(
            store.find_trace_ids(&query()).await.unwrap(),
            [[2; 16], [1; 16]]
        );
        let q = TraceQuery {
            service: Some("b".into()),
            ..query()
        };
        assert_eq!(store.find_trace_ids(&q).await.unwrap(), [[1; 16]]);
        let q = TraceQuery {
            attributes: vec![("n".into(), "2".into())],
            ..query()
        };
        assert_eq!(store.find_trace_ids(&q).await.unwrap(), [[1; 16]]);
        let q = TraceQuery {
            min_duration: Some(1500),
            ..query()
        };
        assert_eq!(store.find_trace_ids(&q).await.unwrap(), [[1; 16]]);
        let q = TraceQuery {
            start_min: 250,
            limit: 1,
            ..query()
        };
        assert_eq!(store.find_trace_ids(&q).await.unwrap(), [[2; 16]]);
        // A time range on a trace keeps only its spans inside it.
        let part = store.traces(&[[1; 16]], Some((200, 300))).await.unwrap();
        assert_eq!(part[0].1.span_count(), 3);
        // b's root is a child of a's root: one call from a to b.
        let deps = store.dependencies(0, u64::MAX).await.unwrap();
        assert_eq!(
            deps,
            [Dependency {
                parent: "a".into(),
                child: "b".into(),
                call_count: 1
            }]
        );
    }

    #[tokio::test]
    async fn the_oldest_traces_are_evicted_first_within_the_bounds() {
        let one = request("a", 0, 10, 0, None)
            .resource_spans
            .iter()
            .map(Message::encoded_len)
            .sum::<usize>();
        let store = MemoryStore::new("t", one * 5 + one / 2, 0);
        for t in 0..20u8 {
            store.insert(request("a", t, 10, u64::from(t) * 100, None));
            assert!(store.bytes() <= one * 5 + one / 2);
        }
        assert_eq!(store.len(), 5);
        let ids = store.find_trace_ids(&query()).await.unwrap();
        assert_eq!(ids, [[19; 16], [18; 16], [17; 16], [16; 16], [15; 16]]);
        let capped = MemoryStore::new("t", 1 << 20, 3);
        for t in 0..10u8 {
            capped.insert(request("a", t, 1, u64::from(t), None));
        }
        assert_eq!(capped.len(), 3);
    }
}
