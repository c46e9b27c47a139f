//! Stored traces, read back: the one interface the query service reads through, whatever keeps
//! them (PostgreSQL, the in-memory store). A store is registered under its exporter's id in
//! [`Stores`], which the service shares with exporters (to register) and extensions (to read).
//!
//! Traces come back as OTLP: one [`Trace`] is the `ResourceSpans` holding its spans, so every
//! API (Jaeger's JSON, OTLP/JSON, the storage gRPC API) renders from one model. Times are Unix
//! nanoseconds, as in OTLP.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// OTLP's span kinds by number, as Jaeger's APIs and the `spans.kind` column name them.
pub const SPAN_KINDS: [&str; 6] = [
    "unspecified",
    "internal",
    "server",
    "client",
    "producer",
    "consumer",
];

/// A trace id, as its 16 bytes.
pub type TraceId = [u8; 16];

/// A named operation of a service: a span name and its OTLP span kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Operation {
    /// The span name.
    pub name: String,
    /// The OTLP `SpanKind` value (0 unspecified … 5 consumer).
    pub kind: i32,
}

/// What a trace search asks for. A trace qualifies when one of its spans matches every given
/// condition; the time range and the limit always apply.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceQuery {
    /// The span's service (its resource's `service.name`).
    pub service: Option<String>,
    /// The span's name.
    pub operation: Option<String>,
    /// Attributes of the span or of its resource, compared as text (`500` matches the int 500).
    pub attributes: Vec<(String, String)>,
    /// The span's status code (OTLP: 0 unset, 1 ok, 2 error).
    pub status: Option<i32>,
    /// Text the span's status message or one of its exception events' messages contains
    /// (case-insensitive).
    pub text: Option<String>,
    /// The span lasts at least this long (nanoseconds).
    pub min_duration: Option<u64>,
    /// The span lasts at most this long (nanoseconds).
    pub max_duration: Option<u64>,
    /// The span starts at or after this time.
    pub start_min: u64,
    /// The span starts at or before this time.
    pub start_max: u64,
    /// At most this many traces, the most recent first.
    pub limit: usize,
}

impl TraceQuery {
    /// A query for every span starting in `[start_min, start_max]`, at most `limit` traces.
    pub fn window(start_min: u64, start_max: u64, limit: usize) -> Self {
        TraceQuery {
            service: None,
            operation: None,
            attributes: Vec::new(),
            status: None,
            text: None,
            min_duration: None,
            max_duration: None,
            start_min,
            start_max,
            limit,
        }
    }

    /// Whether it names a condition on spans beyond the time range.
    pub fn has_span_conditions(&self) -> bool {
        self.service.is_some()
            || self.operation.is_some()
            || !self.attributes.is_empty()
            || self.status.is_some()
            || self.text.is_some()
            || self.min_duration.is_some()
            || self.max_duration.is_some()
    }
}

/// How trace summaries are ordered: newest or longest first (ties by trace id, descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    /// By the trace's start.
    Start,
    /// By the trace's duration.
    Duration,
}

/// Where a page of summaries continues: after the trace with this sort key and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last trace's start or duration (nanoseconds), by the sort.
    pub key: u64,
    /// The last trace's id.
    pub id: TraceId,
}

/// A trace in brief.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSummary {
    /// Its id.
    pub id: TraceId,
    /// The service of its root span (the earliest span without a parent), if it has one yet.
    pub root_service: Option<String>,
    /// The name of its root span.
    pub root_name: Option<String>,
    /// Its first span's start (Unix nanoseconds).
    pub start: u64,
    /// From its first span's start to its last span's end (nanoseconds).
    pub duration: u64,
    /// How many spans it holds.
    pub span_count: u64,
    /// How many of them have status ERROR.
    pub error_count: u64,
}

impl TraceSummary {
    /// The key `sort` orders it by.
    pub fn key(&self, sort: SortBy) -> u64 {
        match sort {
            SortBy::Start => self.start,
            SortBy::Duration => self.duration,
        }
    }
}

/// One operation's spans over a time range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationStats {
    /// The service.
    pub service: String,
    /// The span name.
    pub operation: String,
    /// How many spans.
    pub count: u64,
    /// How many with status ERROR.
    pub errors: u64,
    /// Duration percentiles (nanoseconds), each the first duration whose rank reaches the
    /// fraction (PostgreSQL's `percentile_disc`): p50, p95, p99. Exact in the memory store;
    /// within 4.33% in PostgreSQL, which reads them from its rollups' histograms.
    pub percentiles: [u64; 3],
}

/// Span and error counts of one service's operation, per interval of a series
/// ([`series_intervals`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationSeries {
    /// The service.
    pub service: String,
    /// The span name.
    pub operation: String,
    /// Per interval, in order: spans, and spans with status ERROR.
    pub counts: Vec<(u64, u64)>,
}

/// Span and error counts per service, operation and interval, as a store gathers them for
/// [`TraceReader::operation_series`].
#[derive(Debug, Default)]
pub struct SeriesCounts {
    intervals: usize,
    groups: BTreeMap<(String, String), Vec<(u64, u64)>>,
}

impl SeriesCounts {
    /// No counts yet, over `intervals` intervals.
    pub fn new(intervals: usize) -> Self {
        SeriesCounts {
            intervals,
            groups: BTreeMap::new(),
        }
    }

    /// Adds `spans` and `errors` to interval `k` of `service`'s `operation`; an interval past
    /// the last is ignored.
    pub fn add(&mut self, service: &str, operation: &str, k: usize, spans: u64, errors: u64) {
        if k >= self.intervals {
            return;
        }
        let key = (service.to_owned(), operation.to_owned());
        let counts = self
            .groups
            .entry(key)
            .or_insert_with(|| vec![(0, 0); self.intervals]);
        counts[k].0 += spans;
        counts[k].1 += errors;
    }

    /// The series, sorted by service and operation.
    pub fn into_series(self) -> Vec<OperationSeries> {
        self.groups
            .into_iter()
            .map(|((service, operation), counts)| OperationSeries {
                service,
                operation,
                counts,
            })
            .collect()
    }
}

/// Exception events of one type and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorGroup {
    /// `exception.type`.
    pub kind: String,
    /// `exception.message`.
    pub message: String,
    /// How many events.
    pub count: u64,
    /// The newest one's time (Unix nanoseconds).
    pub last_seen: u64,
    /// The newest one's trace.
    pub trace: TraceId,
    /// The newest one's `exception.stacktrace`.
    pub stacktrace: String,
}

/// Token usage of the generative-AI spans (OpenTelemetry's GenAI semantic conventions) of one
/// trace, operation, model and provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUsage {
    /// The trace.
    pub trace: TraceId,
    /// The trace's root span name: the workflow it ran.
    pub workflow: Option<String>,
    /// The span name.
    pub operation: String,
    /// `gen_ai.request.model` (or `gen_ai.response.model`).
    pub model: String,
    /// `gen_ai.system` (or `gen_ai.provider.name`).
    pub system: String,
    /// Sum of `gen_ai.usage.input_tokens`.
    pub input_tokens: u64,
    /// Sum of `gen_ai.usage.output_tokens`.
    pub output_tokens: u64,
    /// How many spans.
    pub spans: u64,
}

/// The span attributes token usage is read from.
pub mod genai {
    /// Tokens in the prompt.
    pub const INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    /// Tokens in the completion.
    pub const OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    /// The model asked for.
    pub const REQUEST_MODEL: &str = "gen_ai.request.model";
    /// The model that answered, where the request names none.
    pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
    /// The provider (`openai`, `anthropic`, …).
    pub const SYSTEM: &str = "gen_ai.system";
    /// The provider under its newer name.
    pub const PROVIDER: &str = "gen_ai.provider.name";
}

/// Nanoseconds in a minute.
pub const MINUTE_NANOS: u64 = 60_000_000_000;

/// The whole minutes covering `[start, end]` (Unix nanoseconds): the first minute's start and
/// the end of the last, exclusive. Per-operation statistics are kept per minute, so they are
/// asked for and answered over whole minutes.
#[must_use]
pub fn whole_minutes(start: u64, end: u64) -> (u64, u64) {
    (
        start - start % MINUTE_NANOS,
        (end - end % MINUTE_NANOS).saturating_add(MINUTE_NANOS),
    )
}

/// The most intervals a series may have: a day by the minute (1,441 whole minutes cover 24 hours
/// that do not start on a minute) fits.
pub const MAX_SERIES_INTERVALS: u64 = 1500;

/// The intervals of a series over the whole minutes covering `[start, end]` cut into `step`s
/// (a whole number of minutes, the last interval possibly shorter): the first minute's start,
/// the end of the last minute (exclusive), and how many intervals.
///
/// # Errors
/// A message when `step` is not a positive whole number of minutes, or cuts the window into
/// more than [`MAX_SERIES_INTERVALS`].
pub fn series_intervals(start: u64, end: u64, step: u64) -> Result<(u64, u64, usize), String> {
    if step == 0 || !step.is_multiple_of(MINUTE_NANOS) {
        return Err("a step is a whole number of minutes".into());
    }
    let (first, after) = whole_minutes(start, end);
    let n = (after - first).div_ceil(step);
    if n > MAX_SERIES_INTERVALS {
        return Err(format!(
            "the window holds {n} steps; at most {MAX_SERIES_INTERVALS} are answered"
        ));
    }
    Ok((first, after, usize::try_from(n).unwrap_or(usize::MAX)))
}

/// The percentiles `OperationStats` reports.
pub const PERCENTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// The first value of `sorted` whose rank reaches each fraction, as PostgreSQL's
/// `percentile_disc` computes it (`ceil(fraction × n)`, 1-based).
pub fn percentiles_disc(sorted: &[u64]) -> [u64; 3] {
    PERCENTILES.map(|p| {
        if sorted.is_empty() {
            return 0;
        }
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rank = (p * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    })
}

/// The spans of one trace, grouped by resource and scope.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// Its spans, as OTLP.
    pub resource_spans: Vec<ResourceSpans>,
}

impl Trace {
    /// How many spans it holds.
    pub fn span_count(&self) -> usize {
        self.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum()
    }
}

/// A log record of a trace, with the service that wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceLog {
    /// Its resource's `service.name` (`unknown_service` without one).
    pub service: String,
    /// The record.
    pub record: LogRecord,
}

/// Calls from one service to another, counted from parent and child spans.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dependency {
    /// The calling service.
    pub parent: String,
    /// The called service.
    pub child: String,
    /// How many child spans of `child` have a parent span of `parent`.
    pub call_count: u64,
}

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The query asks for something the store cannot answer (bad input): the client's fault.
    #[error("{0}")]
    Invalid(String),
    /// The store failed or timed out: worth retrying.
    #[error("the store failed: {0}")]
    Unavailable(String),
}

/// A store of traces that can be read back.
#[async_trait]
pub trait TraceReader: Send + Sync {
    /// Every service with spans in the store, sorted.
    async fn services(&self) -> Result<Vec<String>, ReadError>;

    /// The operations of `service` (of span kind `kind` when given), sorted.
    async fn operations(
        &self,
        service: &str,
        kind: Option<i32>,
    ) -> Result<Vec<Operation>, ReadError>;

    /// The traces with these ids (those found, in the order asked), with their spans starting
    /// in `[start_min, start_max]` when a range is given.
    async fn traces(
        &self,
        ids: &[TraceId],
        range: Option<(u64, u64)>,
    ) -> Result<Vec<(TraceId, Trace)>, ReadError>;

    /// The ids of the traces `query` selects, the most recently started first: those of
    /// [`TraceReader::find_summaries`]. (Driven by the traces' start times, newest first, each
    /// checked for a matching span, a page of a common service's traces costs a page of
    /// probes; grouping every matching span of the window first cost PostgreSQL 1.4 s a search
    /// at 10 million spans.)
    async fn find_trace_ids(&self, query: &TraceQuery) -> Result<Vec<TraceId>, ReadError> {
        Ok(self
            .find_summaries(query, SortBy::Start, None)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect())
    }

    /// Service-to-service calls among spans starting in `[start, end]`, sorted.
    async fn dependencies(&self, start: u64, end: u64) -> Result<Vec<Dependency>, ReadError>;

    /// Summaries of the traces that start in the query's range and hold a span matching it,
    /// ordered by `sort` (descending, then by id), after `after`, at most `query.limit`.
    async fn find_summaries(
        &self,
        query: &TraceQuery,
        sort: SortBy,
        after: Option<Cursor>,
    ) -> Result<Vec<TraceSummary>, ReadError>;

    /// Per service and operation, the spans starting in the whole minutes covering
    /// `[start, end]` ([`whole_minutes`]; of `service` when given), sorted by service and
    /// operation. Counts are exact; a store may read percentiles from histograms, within a
    /// relative error it documents.
    async fn operation_stats(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
    ) -> Result<Vec<OperationStats>, ReadError>;

    /// Per service and operation (of `service` when given), span and error counts per `step`
    /// over the whole minutes covering `[start, end]`, as [`series_intervals`] cuts them
    /// (checked before this is called); sorted by service and operation. Exact.
    async fn operation_series(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
        step: u64,
    ) -> Result<Vec<OperationSeries>, ReadError>;

    /// The log records of trace `id`, by time.
    async fn trace_logs(&self, id: &TraceId) -> Result<Vec<TraceLog>, ReadError>;

    /// Token usage of spans starting in `[start, end]` (of `service` when given) that carry
    /// `gen_ai.usage.*` tokens, per trace, operation, model and provider.
    async fn token_usage(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
    ) -> Result<Vec<TokenUsage>, ReadError>;

    /// Exception events (span events named `exception`) of spans starting in `[start, end]` (of
    /// `service` when given), grouped by type and message, the most frequent first.
    async fn error_groups(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
    ) -> Result<Vec<ErrorGroup>, ReadError>;
}

/// The stores that can be read, by the id of the exporter that writes them.
#[derive(Default)]
pub struct Stores {
    readers: Mutex<BTreeMap<String, Arc<dyn TraceReader>>>,
}

impl Stores {
    /// An empty registry, shared.
    pub fn new() -> Arc<Self> {
        Arc::new(Stores::default())
    }

    /// Registers the store that exporter `id` writes.
    pub fn register(&self, id: &str, reader: Arc<dyn TraceReader>) {
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned(), reader);
    }

    /// The store exporter `id` writes, once that exporter is built.
    pub fn get(&self, id: &str) -> Option<Arc<dyn TraceReader>> {
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }
}

/// A trace id that is not 1 to 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trace id `{0}` is not hex (1 to 32 hex digits)")]
pub struct InvalidTraceId(pub String);

/// Parses a trace id written as 32 hex digits (either case; shorter ids are left-padded with
/// zeros, as Jaeger accepts 64-bit ids).
///
/// # Errors
/// [`InvalidTraceId`] naming the text.
pub fn parse_trace_id(text: &str) -> Result<TraceId, InvalidTraceId> {
    let invalid = || InvalidTraceId(text.to_owned());
    if text.is_empty() || text.len() > 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let padded = format!("{text:0>32}");
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&padded[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_postgresqls_percentile_disc() {
        let values: Vec<u64> = (1..=20).collect();
        assert_eq!(percentiles_disc(&values), [10, 19, 20]);
        assert_eq!(percentiles_disc(&[7]), [7, 7, 7]);
        assert_eq!(percentiles_disc(&[]), [0, 0, 0]);
        let values: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentiles_disc(&values), [500, 950, 990]);
    }

    #[test]
    fn trace_ids_parse_padded_and_refuse_what_is_not_hex() {
        assert_eq!(parse_trace_id("1").unwrap()[15], 1);
        let id = parse_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736").unwrap();
        assert_eq!(
            crate::anyvalue::hex(&id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(parse_trace_id("").is_err());
        assert!(parse_trace_id("zz").is_err());
        assert!(parse_trace_id("é").is_err());
        assert!(parse_trace_id("éa").is_err());
        assert!(parse_trace_id("+1").is_err());
        assert!(parse_trace_id(&"1".repeat(33)).is_err());
    }
}
