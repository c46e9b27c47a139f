//! Reading traces back from the schema the exporter writes, for the query service
//! (`sluice_core::store::TraceReader`).
//!
//! Every statement is parameterised and bounded: searches by a time range and a limit, a trace
//! by the time range its `traces` row records (so only the partitions that hold it are read).
//! The pool's sessions are read-only with a statement timeout (`exporters.postgres.query`).
//!
//! What comes back is what the schema keeps: times to the microsecond (durations exact, in
//! nanoseconds), attributes as their JSON (bytes come back as their base64 text, NaN and the
//! infinities as strings, and attribute order is JSONB's), no scope attributes.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Kind;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::Value;
use sluice_core::anyvalue::hex;
use sluice_core::store::{
    Cursor, Dependency, ErrorGroup, MINUTE_NANOS, Operation, OperationSeries, OperationStats,
    ReadError, SeriesCounts, SortBy, TokenUsage, Trace, TraceId, TraceLog, TraceQuery, TraceReader,
    TraceSummary, series_intervals, whole_minutes,
};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::stats::Stats;
use crate::types::{Jsonb, Timestamp};

// The `spans.kind` values, by OTLP `SpanKind` number.
use sluice_core::store::SPAN_KINDS as KINDS;

/// The service of spans whose resource names none, as the Jaeger translation names it.
const UNKNOWN_SERVICE: &str = "unknown_service";

/// Microseconds since the Unix epoch of a `timestamptz` column, exactly.
macro_rules! micros {
    ($column:literal) => {
        concat!("(extract(epoch FROM ", $column, ") * 1000000)::bigint")
    };
}

/// Reads traces over its own pool.
pub(crate) struct PgReader {
    pool: PgPool,
}

impl PgReader {
    pub(crate) fn new(pool: PgPool) -> Self {
        PgReader { pool }
    }

    /// Runs a built query; every row.
    async fn fetch(
        &self,
        mut q: QueryBuilder<Postgres>,
    ) -> Result<Vec<sqlx::postgres::PgRow>, ReadError> {
        q.build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| failed(&e))
    }
}

fn failed(error: &sqlx::Error) -> ReadError {
    let code = crate::error::sqlstate(error);
    match code.as_deref() {
        Some("57014") => ReadError::Unavailable(
            "the read took longer than exporters.postgres.query.statement_timeout".into(),
        ),
        Some("42P01") => ReadError::Unavailable(
            "the database has no sluice schema (run the postgres exporter with migrate: true)"
                .into(),
        ),
        Some("42501") => ReadError::Unavailable(format!(
            "the query role lacks a grant (see the README's read-only role): {error}"
        )),
        _ => ReadError::Unavailable(error.to_string()),
    }
}

fn kind_name(kind: i32) -> Option<&'static str> {
    usize::try_from(kind)
        .ok()
        .and_then(|k| KINDS.get(k))
        .copied()
}

fn kind_number(name: &str) -> i32 {
    KINDS
        .iter()
        .position(|k| *k == name)
        .and_then(|k| i32::try_from(k).ok())
        .unwrap_or(0)
}

fn status_number(code: &str) -> i32 {
    match code {
        "ok" => 1,
        "error" => 2,
        _ => 0,
    }
}

/// A service as the API names it: an absent or empty `service.name` is `unknown_service`.
fn service_name(name: Option<String>) -> String {
    name.filter(|n| !n.is_empty())
        .unwrap_or_else(|| UNKNOWN_SERVICE.to_owned())
}

/// Pushes the condition selecting the spans of `service` in `column`, one of this file's
/// constant column names (the service itself is always bound).
fn push_service(q: &mut QueryBuilder<Postgres>, column: &'static str, service: &str) {
    if service == UNKNOWN_SERVICE {
        q.push(" AND (")
            .push(column)
            .push(" IS NULL OR ")
            .push(column)
            .push(" = '' OR ")
            .push(column)
            .push(" = ");
        q.push_bind(service.to_owned());
        q.push(")");
    } else {
        q.push(" AND ").push(column).push(" = ");
        q.push_bind(service.to_owned());
    }
}

/// Pushes ` WHERE` the rows of the statistics rollups whose `column` (one of this file's
/// constant names) falls in `[from, to)`, of `service` when given (both bound).
fn push_range(
    q: &mut QueryBuilder<Postgres>,
    column: &'static str,
    from: u64,
    to: u64,
    service: Option<&str>,
) {
    q.push(" WHERE ").push(column).push(" >= ");
    q.push_bind(Timestamp::from_unix_nanos(from));
    q.push(" AND ").push(column).push(" < ");
    q.push_bind(Timestamp::from_unix_nanos(to));
    if let Some(service) = service {
        push_service(q, "service_name", service);
    }
}

/// Pushes the conditions of `query` on span `s` (and its resource `r`, joined when the query
/// names attributes), beyond the time range.
fn push_conditions(q: &mut QueryBuilder<Postgres>, query: &TraceQuery) {
    if let Some(service) = &query.service {
        push_service(q, "s.service_name", service);
    }
    if let Some(operation) = &query.operation {
        q.push(" AND s.name = ");
        q.push_bind(operation.clone());
    }
    if let Some(status) = query.status {
        q.push(" AND s.status_code = ");
        q.push_bind(match status {
            1 => "ok",
            2 => "error",
            _ => "unset",
        });
    }
    if let Some(text) = &query.text {
        let text = text.replace('\0', "\u{fffd}");
        q.push(" AND (strpos(lower(s.status_message), lower(");
        q.push_bind(text.clone());
        q.push(
            ")) > 0 OR EXISTS (SELECT 1 FROM span_events e WHERE e.trace_id = s.trace_id \
                AND e.span_id = s.span_id AND e.span_start_time = s.start_time \
                AND e.name = 'exception' \
                AND strpos(lower(e.attributes->>'exception.message'), lower(",
        );
        q.push_bind(text);
        q.push(")) > 0))");
    }
    if let Some(min) = query.min_duration {
        q.push(" AND s.duration_ns >= ");
        q.push_bind(i64::try_from(min).unwrap_or(i64::MAX));
    }
    if let Some(max) = query.max_duration {
        q.push(" AND s.duration_ns <= ");
        q.push_bind(i64::try_from(max).unwrap_or(i64::MAX));
    }
    for (key, text) in &query.attributes {
        // Containment, so the GIN indexes serve it.
        q.push(" AND (false");
        for candidate in attribute_candidates(key, text) {
            for table in ["s", "r"] {
                q.push(" OR ").push(table).push(".attributes @> ");
                q.push_bind(Jsonb(candidate.clone()));
            }
        }
        q.push(")");
    }
}

/// The JSON objects `{key: value}` an attribute given as text may be stored as: the string,
/// and the number or boolean it spells.
fn attribute_candidates(key: &str, text: &str) -> Vec<String> {
    let clean = |s: &str| s.replace('\0', "\u{fffd}");
    let key = clean(key);
    let mut out = vec![serde_json::json!({ key.clone(): clean(text) }).to_string()];
    if let Ok(n) = text.parse::<i64>() {
        out.push(serde_json::json!({ key.clone(): n }).to_string());
    } else if let Ok(f) = text.parse::<f64>()
        && f.is_finite()
    {
        out.push(serde_json::json!({ key.clone(): f }).to_string());
    }
    if let Ok(b) = text.parse::<bool>() {
        out.push(serde_json::json!({ key: b }).to_string());
    }
    out
}

/// An OTLP value from the JSON the exporter stored.
fn any_value(value: Value) -> AnyValue {
    let kind = match value {
        Value::Null => None,
        Value::Bool(b) => Some(Kind::BoolValue(b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => Kind::IntValue(i),
            None => Kind::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => Some(Kind::StringValue(s)),
        Value::Array(items) => Some(Kind::ArrayValue(ArrayValue {
            values: items.into_iter().map(any_value).collect(),
        })),
        Value::Object(map) => Some(Kind::KvlistValue(KeyValueList {
            values: key_values(map),
        })),
    };
    AnyValue { value: kind }
}

fn key_values(map: serde_json::Map<String, Value>) -> Vec<KeyValue> {
    map.into_iter()
        .map(|(key, value)| KeyValue {
            key,
            value: Some(any_value(value)),
            ..Default::default()
        })
        .collect()
}

/// Attributes from a `jsonb` column read as text.
fn attributes(text: &str) -> Vec<KeyValue> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => key_values(map),
        _ => Vec::new(),
    }
}

/// Bytes from the lowercase hex the exporter stored (empty when it is not hex).
fn unhex(text: &str) -> Vec<u8> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Vec::new();
    }
    (0..text.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn nanos(micros: i64) -> u64 {
    u64::try_from(micros).unwrap_or(0).saturating_mul(1000)
}

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// A span's place: its trace, id and start (the key of its events and links).
type SpanKey = (String, String, i64);

#[async_trait]
impl TraceReader for PgReader {
    async fn services(&self) -> Result<Vec<String>, ReadError> {
        // A loose index scan over spans_service_name_start: one probe per distinct service.
        let rows = sqlx::query(
            "WITH RECURSIVE s(name) AS ( \
                (SELECT service_name FROM spans WHERE service_name > '' \
                 ORDER BY service_name LIMIT 1) \
                UNION ALL \
                SELECT (SELECT service_name FROM spans WHERE service_name > s.name \
                        ORDER BY service_name LIMIT 1) \
                FROM s WHERE s.name IS NOT NULL) \
             SELECT name FROM s WHERE name IS NOT NULL \
             UNION ALL \
             SELECT NULL WHERE EXISTS \
                (SELECT 1 FROM spans WHERE service_name IS NULL OR service_name = '')",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| failed(&e))?;
        let mut out: Vec<String> = rows
            .iter()
            .map(|r| service_name(r.try_get(0).ok().flatten()))
            .collect();
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    async fn operations(
        &self,
        service: &str,
        kind: Option<i32>,
    ) -> Result<Vec<Operation>, ReadError> {
        let mut q = QueryBuilder::new("SELECT DISTINCT name, kind FROM spans WHERE true");
        push_service(&mut q, "service_name", service);
        if let Some(kind) = kind {
            let Some(name) = kind_name(kind) else {
                return Ok(Vec::new());
            };
            q.push(" AND kind = ");
            q.push_bind(name);
        }
        let rows = self.fetch(q).await?;
        let mut out: Vec<Operation> = rows
            .iter()
            .map(|r| Operation {
                name: r.try_get(0).unwrap_or_default(),
                kind: kind_number(r.try_get::<&str, _>(1).unwrap_or_default()),
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    async fn traces(
        &self,
        ids: &[TraceId],
        range: Option<(u64, u64)>,
    ) -> Result<Vec<(TraceId, Trace)>, ReadError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let hex_ids: Vec<String> = ids.iter().map(|id| hex(id)).collect();
        // The trace rows bound the partitions to read.
        let bounds = sqlx::query(concat!(
            "SELECT min(",
            micros!("start_time"),
            "), max(",
            micros!("end_time"),
            ") FROM traces WHERE trace_id = ANY($1)"
        ))
        .bind(&hex_ids)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| failed(&e))?;
        let (Some(lo), Some(hi)): (Option<i64>, Option<i64>) = (
            bounds.try_get(0).ok().flatten(),
            bounds.try_get(1).ok().flatten(),
        ) else {
            return Ok(Vec::new());
        };
        let (mut lo, mut hi) = (nanos(lo), nanos(hi));
        if let Some((from, to)) = range {
            lo = lo.max(from);
            hi = hi.min(to);
            if lo > hi {
                return Ok(Vec::new());
            }
        }
        let (lo, hi) = (
            Timestamp::from_unix_nanos(lo),
            Timestamp::from_unix_nanos(hi),
        );
        let spans = sqlx::query(concat!(
            "SELECT trace_id, span_id, parent_span_id, trace_state, flags, name, kind, ",
            micros!("start_time"),
            ", duration_ns, status_code, status_message, resource_id, scope_name, \
             scope_version, attributes::text, dropped_attributes_count, dropped_events_count, \
             dropped_links_count \
             FROM spans WHERE trace_id = ANY($1) AND start_time >= $2 AND start_time <= $3 \
             ORDER BY trace_id, start_time, span_id"
        ))
        .bind(&hex_ids)
        .bind(lo)
        .bind(hi);
        let events = sqlx::query(concat!(
            "SELECT trace_id, span_id, ",
            micros!("span_start_time"),
            ", ",
            micros!("time"),
            ", name, attributes::text, dropped_attributes_count FROM span_events \
             WHERE trace_id = ANY($1) AND span_start_time >= $2 AND span_start_time <= $3 \
             ORDER BY event_index"
        ))
        .bind(&hex_ids)
        .bind(lo)
        .bind(hi);
        let links = sqlx::query(concat!(
            "SELECT trace_id, span_id, ",
            micros!("span_start_time"),
            ", linked_trace_id, linked_span_id, trace_state, flags, attributes::text, \
             dropped_attributes_count FROM span_links \
             WHERE trace_id = ANY($1) AND span_start_time >= $2 AND span_start_time <= $3 \
             ORDER BY link_index"
        ))
        .bind(&hex_ids)
        .bind(lo)
        .bind(hi);
        let (spans, events, links) = tokio::try_join!(
            spans.fetch_all(&self.pool),
            events.fetch_all(&self.pool),
            links.fetch_all(&self.pool)
        )
        .map_err(|e| failed(&e))?;

        let mut span_events: HashMap<SpanKey, Vec<Event>> = HashMap::new();
        for r in &events {
            let key = (
                r.try_get(0).unwrap_or_default(),
                r.try_get(1).unwrap_or_default(),
                r.try_get(2).unwrap_or_default(),
            );
            span_events.entry(key).or_default().push(Event {
                time_unix_nano: nanos(r.try_get(3).unwrap_or_default()),
                name: r.try_get(4).unwrap_or_default(),
                attributes: attributes(r.try_get(5).unwrap_or_default()),
                dropped_attributes_count: count(r.try_get(6).unwrap_or_default()),
            });
        }
        let mut span_links: HashMap<SpanKey, Vec<Link>> = HashMap::new();
        for r in &links {
            let key = (
                r.try_get(0).unwrap_or_default(),
                r.try_get(1).unwrap_or_default(),
                r.try_get(2).unwrap_or_default(),
            );
            span_links.entry(key).or_default().push(Link {
                trace_id: unhex(r.try_get(3).unwrap_or_default()),
                span_id: unhex(r.try_get(4).unwrap_or_default()),
                trace_state: r.try_get(5).unwrap_or_default(),
                flags: u32::try_from(r.try_get::<i32, _>(6).unwrap_or_default()).unwrap_or(0),
                attributes: attributes(r.try_get(7).unwrap_or_default()),
                dropped_attributes_count: count(r.try_get(8).unwrap_or_default()),
            });
        }

        // trace id → resource id → (scope name, version) → spans.
        type Scopes = BTreeMap<(String, String), Vec<Span>>;
        let mut by_trace: HashMap<String, BTreeMap<i64, Scopes>> = HashMap::new();
        let mut resource_ids = Vec::new();
        for r in &spans {
            let trace_id: String = r.try_get(0).unwrap_or_default();
            let span_id: String = r.try_get(1).unwrap_or_default();
            let start: i64 = r.try_get(7).unwrap_or_default();
            let duration: i64 = r.try_get(8).unwrap_or_default();
            let key = (trace_id.clone(), span_id.clone(), start);
            let start_ns = nanos(start);
            let span = Span {
                trace_id: unhex(&trace_id),
                span_id: unhex(&span_id),
                parent_span_id: r
                    .try_get::<Option<&str>, _>(2)
                    .ok()
                    .flatten()
                    .map(unhex)
                    .unwrap_or_default(),
                trace_state: r.try_get(3).unwrap_or_default(),
                flags: u32::try_from(r.try_get::<i32, _>(4).unwrap_or_default()).unwrap_or(0),
                name: r.try_get(5).unwrap_or_default(),
                kind: kind_number(r.try_get::<&str, _>(6).unwrap_or_default()),
                start_time_unix_nano: start_ns,
                end_time_unix_nano: start_ns.saturating_add(u64::try_from(duration).unwrap_or(0)),
                status: Some(Status {
                    message: r.try_get(10).unwrap_or_default(),
                    code: status_number(r.try_get::<&str, _>(9).unwrap_or_default()),
                }),
                attributes: attributes(r.try_get(14).unwrap_or_default()),
                dropped_attributes_count: count(r.try_get(15).unwrap_or_default()),
                dropped_events_count: count(r.try_get(16).unwrap_or_default()),
                dropped_links_count: count(r.try_get(17).unwrap_or_default()),
                events: span_events.remove(&key).unwrap_or_default(),
                links: span_links.remove(&key).unwrap_or_default(),
            };
            let resource_id: i64 = r.try_get(11).unwrap_or_default();
            resource_ids.push(resource_id);
            by_trace
                .entry(trace_id)
                .or_default()
                .entry(resource_id)
                .or_default()
                .entry((
                    r.try_get(12).unwrap_or_default(),
                    r.try_get(13).unwrap_or_default(),
                ))
                .or_default()
                .push(span);
        }
        resource_ids.sort_unstable();
        resource_ids.dedup();
        let resources: HashMap<i64, Resource> = sqlx::query(
            "SELECT resource_id, attributes::text, dropped_attributes_count FROM resources \
             WHERE resource_id = ANY($1)",
        )
        .bind(&resource_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| failed(&e))?
        .iter()
        .map(|r| {
            (
                r.try_get(0).unwrap_or_default(),
                Resource {
                    attributes: attributes(r.try_get(1).unwrap_or_default()),
                    dropped_attributes_count: count(r.try_get(2).unwrap_or_default()),
                    entity_refs: Vec::new(),
                },
            )
        })
        .collect();

        Ok(ids
            .iter()
            .zip(&hex_ids)
            .filter_map(|(id, hex_id)| {
                let by_resource = by_trace.remove(hex_id)?;
                let resource_spans = by_resource
                    .into_iter()
                    .map(|(resource_id, scopes)| ResourceSpans {
                        resource: resources.get(&resource_id).cloned(),
                        scope_spans: scopes
                            .into_iter()
                            .map(|((name, version), spans)| ScopeSpans {
                                scope: Some(InstrumentationScope {
                                    name,
                                    version,
                                    ..Default::default()
                                }),
                                spans,
                                schema_url: String::new(),
                            })
                            .collect(),
                        schema_url: String::new(),
                    })
                    .collect();
                Some((*id, Trace { resource_spans }))
            })
            .collect())
    }

    async fn dependencies(&self, start: u64, end: u64) -> Result<Vec<Dependency>, ReadError> {
        let rows = sqlx::query(
            "SELECT p.service_name, c.service_name, count(*) \
             FROM spans c JOIN spans p \
               ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id \
             WHERE c.start_time >= $1 AND c.start_time <= $2 \
               AND p.service_name IS DISTINCT FROM c.service_name \
             GROUP BY 1, 2",
        )
        .bind(Timestamp::from_unix_nanos(start))
        .bind(Timestamp::from_unix_nanos(end))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| failed(&e))?;
        let mut calls: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in &rows {
            let parent = service_name(r.try_get(0).ok().flatten());
            let child = service_name(r.try_get(1).ok().flatten());
            if parent != child {
                *calls.entry((parent, child)).or_default() +=
                    u64::try_from(r.try_get::<i64, _>(2).unwrap_or_default()).unwrap_or(0);
            }
        }
        Ok(calls
            .into_iter()
            .map(|((parent, child), call_count)| Dependency {
                parent,
                child,
                call_count,
            })
            .collect())
    }

    async fn find_summaries(
        &self,
        query: &TraceQuery,
        sort: SortBy,
        after: Option<Cursor>,
    ) -> Result<Vec<TraceSummary>, ReadError> {
        let mut q = QueryBuilder::new(concat!(
            "SELECT t.trace_id, t.root_service_name, t.root_span_name, ",
            micros!("t.start_time"),
            ", t.duration_ns, t.span_count, t.error_count FROM traces t WHERE t.start_time >= "
        ));
        let (lo, hi) = (
            Timestamp::from_unix_nanos(query.start_min),
            Timestamp::from_unix_nanos(query.start_max),
        );
        q.push_bind(lo);
        q.push(" AND t.start_time <= ");
        q.push_bind(hi);
        if query.has_span_conditions() {
            q.push(" AND EXISTS (SELECT 1 FROM spans s");
            if !query.attributes.is_empty() {
                q.push(" JOIN resources r ON r.resource_id = s.resource_id");
            }
            q.push(" WHERE s.trace_id = t.trace_id AND s.start_time >= ");
            q.push_bind(lo);
            q.push(" AND s.start_time <= ");
            q.push_bind(hi);
            push_conditions(&mut q, query);
            q.push(")");
        }
        let order = match sort {
            SortBy::Start => "t.start_time",
            SortBy::Duration => "t.duration_ns",
        };
        if let Some(cursor) = after {
            q.push(" AND (").push(order).push(", t.trace_id) < (");
            match sort {
                SortBy::Start => q.push_bind(Timestamp::from_unix_nanos(cursor.key)),
                SortBy::Duration => q.push_bind(i64::try_from(cursor.key).unwrap_or(i64::MAX)),
            };
            q.push(", ");
            q.push_bind(hex(&cursor.id));
            q.push(")");
        }
        q.push(" ORDER BY ")
            .push(order)
            .push(" DESC, t.trace_id DESC LIMIT ");
        q.push_bind(i64::try_from(query.limit).unwrap_or(i64::MAX));
        let rows = self.fetch(q).await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let id = TraceId::try_from(unhex(r.try_get(0).ok()?).as_slice()).ok()?;
                let root_name: Option<String> = r.try_get(2).ok().flatten();
                let root_service: Option<String> = r.try_get(1).ok().flatten();
                Some(TraceSummary {
                    id,
                    root_service: root_name.as_ref().map(|_| service_name(root_service)),
                    root_name,
                    start: nanos(r.try_get(3).unwrap_or_default()),
                    duration: u64::try_from(r.try_get::<i64, _>(4).unwrap_or_default())
                        .unwrap_or(0),
                    span_count: u64::try_from(r.try_get::<i32, _>(5).unwrap_or_default())
                        .unwrap_or(0),
                    error_count: u64::try_from(r.try_get::<i32, _>(6).unwrap_or_default())
                        .unwrap_or(0),
                })
            })
            .collect())
    }

    /// From the rollups (migration 0002): hour rows for the whole hours inside, minute rows for
    /// the rest, and the pending rows not folded yet. Counts are exact; percentiles come from
    /// the duration histograms, within [`crate::stats::RELATIVE_ERROR`] of `percentile_disc`'s.
    async fn operation_stats(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
    ) -> Result<Vec<OperationStats>, ReadError> {
        const HOUR: u64 = 60 * MINUTE_NANOS;
        let (first_minute, after_last_minute) = whole_minutes(start, end);
        // Whole hours [first_hour, after_last_hour) inside the window; none when it is shorter.
        let first_hour = first_minute.div_ceil(HOUR).saturating_mul(HOUR);
        let after_last_hour = after_last_minute - after_last_minute % HOUR;
        let (first_hour, after_last_hour) = if first_hour < after_last_hour {
            (first_hour, after_last_hour)
        } else {
            (after_last_minute, after_last_minute)
        };
        let mut q = QueryBuilder::new("");
        for (i, (table, column, from, to)) in [
            ("span_stats_hour", "hour", first_hour, after_last_hour),
            ("span_stats_minute", "minute", first_minute, first_hour),
            (
                "span_stats_minute",
                "minute",
                after_last_hour,
                after_last_minute,
            ),
            (
                "span_stats_pending",
                "minute",
                first_minute,
                after_last_minute,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                q.push(" UNION ALL ");
            }
            q.push("SELECT service_name, name, spans, errors, buckets, counts FROM ")
                .push(table);
            push_range(&mut q, column, from, to, service);
        }
        let rows = self.fetch(q).await?;
        // Spans without a service.name are grouped under unknown_service, as the APIs name it.
        let mut merged: BTreeMap<(String, String), Stats> = BTreeMap::new();
        for r in &rows {
            let key = (
                service_name(r.try_get(0).ok()),
                r.try_get::<String, _>(1).unwrap_or_default(),
            );
            let buckets: Vec<i16> = r.try_get(4).unwrap_or_default();
            let counts: Vec<i64> = r.try_get(5).unwrap_or_default();
            merged.entry(key).or_default().add(
                r.try_get(2).unwrap_or_default(),
                r.try_get(3).unwrap_or_default(),
                &buckets,
                &counts,
            );
        }
        Ok(merged
            .into_iter()
            .map(|((service, operation), s)| OperationStats {
                service,
                operation,
                count: s.spans,
                errors: s.errors,
                percentiles: s.percentiles([0.5, 0.95, 0.99]),
            })
            .collect())
    }

    /// From the minute rows and the pending ones, summed per interval in PostgreSQL.
    async fn operation_series(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
        step: u64,
    ) -> Result<Vec<OperationSeries>, ReadError> {
        let (first, after, n) = series_intervals(start, end, step).map_err(ReadError::Invalid)?;
        let at = Timestamp::from_unix_nanos;
        // date_bin on timestamps: a third cheaper than epoch arithmetic in numeric per row.
        let mut q = QueryBuilder::new(concat!(
            "SELECT service_name, name, ",
            micros!("bin"),
            ", spans, errors FROM (SELECT service_name, name, \
             date_bin(make_interval(secs => "
        ));
        #[allow(clippy::cast_precision_loss)]
        q.push_bind((step / 1_000_000_000) as f64);
        q.push("), minute, ");
        q.push_bind(at(first));
        q.push(
            ") AS bin, sum(spans)::bigint AS spans, sum(errors)::bigint AS errors FROM (\
             SELECT minute, service_name, name, spans, errors FROM span_stats_minute",
        );
        push_range(&mut q, "minute", first, after, service);
        q.push(
            " UNION ALL SELECT minute, service_name, name, spans, errors FROM span_stats_pending",
        );
        push_range(&mut q, "minute", first, after, service);
        q.push(") AS s GROUP BY 1, 2, 3) AS g");
        let rows = self.fetch(q).await?;
        let mut series = SeriesCounts::new(n);
        for r in &rows {
            let bin = nanos(r.try_get(2).unwrap_or_default());
            series.add(
                &service_name(r.try_get(0).ok()),
                &r.try_get::<String, _>(1).unwrap_or_default(),
                usize::try_from(bin.saturating_sub(first) / step).unwrap_or(usize::MAX),
                u64::try_from(r.try_get::<i64, _>(3).unwrap_or_default()).unwrap_or(0),
                u64::try_from(r.try_get::<i64, _>(4).unwrap_or_default()).unwrap_or(0),
            );
        }
        Ok(series.into_series())
    }

    async fn trace_logs(&self, id: &TraceId) -> Result<Vec<TraceLog>, ReadError> {
        let hex_id = hex(id);
        // The trace's time range, an hour wider each side, bounds the partitions read.
        let bounds = sqlx::query(concat!(
            "SELECT ",
            micros!("start_time - interval '1 hour'"),
            ", ",
            micros!("end_time + interval '1 hour'"),
            " FROM traces WHERE trace_id = $1"
        ))
        .bind(&hex_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| failed(&e))?;
        let mut q = QueryBuilder::new(concat!(
            "SELECT ",
            micros!("time"),
            ", ",
            micros!("observed_time"),
            ", severity_number, severity_text, body, body_kind, event_name, span_id, flags, \
             service_name, attributes::text, dropped_attributes_count FROM logs WHERE trace_id = "
        ));
        q.push_bind(hex_id);
        if let Some(row) = bounds {
            q.push(" AND time >= ");
            q.push_bind(Timestamp::from_unix_nanos(nanos(
                row.try_get(0).unwrap_or_default(),
            )));
            q.push(" AND time <= ");
            q.push_bind(Timestamp::from_unix_nanos(nanos(
                row.try_get(1).unwrap_or(i64::MAX / 1000),
            )));
        }
        q.push(" ORDER BY time, log_id");
        let rows = self.fetch(q).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let body: Option<String> = r.try_get(4).ok().flatten();
                let kind: String = r.try_get(5).unwrap_or_default();
                let body = match (body, kind.as_str()) {
                    (None, _) | (_, "empty") => None,
                    (Some(text), "string") => Some(AnyValue {
                        value: Some(Kind::StringValue(text)),
                    }),
                    (Some(text), _) => Some(any_value(
                        serde_json::from_str(&text).unwrap_or(Value::String(text)),
                    )),
                };
                TraceLog {
                    service: service_name(r.try_get(9).ok().flatten()),
                    record: LogRecord {
                        time_unix_nano: nanos(r.try_get(0).unwrap_or_default()),
                        observed_time_unix_nano: r
                            .try_get::<Option<i64>, _>(1)
                            .ok()
                            .flatten()
                            .map_or(0, nanos),
                        severity_number: i32::from(r.try_get::<i16, _>(2).unwrap_or_default()),
                        severity_text: r.try_get(3).unwrap_or_default(),
                        body,
                        event_name: r.try_get(6).unwrap_or_default(),
                        span_id: r
                            .try_get::<Option<&str>, _>(7)
                            .ok()
                            .flatten()
                            .map(unhex)
                            .unwrap_or_default(),
                        trace_id: id.to_vec(),
                        flags: u32::try_from(r.try_get::<i32, _>(8).unwrap_or_default())
                            .unwrap_or(0),
                        attributes: attributes(r.try_get(10).unwrap_or_default()),
                        dropped_attributes_count: count(r.try_get(11).unwrap_or_default()),
                    },
                }
            })
            .collect())
    }

    async fn token_usage(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
    ) -> Result<Vec<TokenUsage>, ReadError> {
        // A token count is an int (a whole number in JSON); anything else counts as none.
        let mut q = QueryBuilder::new(
            "WITH usage AS ( \
               SELECT s.trace_id, s.name, \
                 coalesce(nullif(s.attributes->>'gen_ai.request.model', ''), \
                          s.attributes->>'gen_ai.response.model', '') AS model, \
                 coalesce(nullif(s.attributes->>'gen_ai.system', ''), \
                          s.attributes->>'gen_ai.provider.name', '') AS system, \
                 CASE WHEN jsonb_typeof(s.attributes->'gen_ai.usage.input_tokens') = 'number' \
                      AND (s.attributes->>'gen_ai.usage.input_tokens')::numeric >= 0 \
                      AND (s.attributes->>'gen_ai.usage.input_tokens')::numeric % 1 = 0 \
                      THEN (s.attributes->>'gen_ai.usage.input_tokens')::numeric END AS input, \
                 CASE WHEN jsonb_typeof(s.attributes->'gen_ai.usage.output_tokens') = 'number' \
                      AND (s.attributes->>'gen_ai.usage.output_tokens')::numeric >= 0 \
                      AND (s.attributes->>'gen_ai.usage.output_tokens')::numeric % 1 = 0 \
                      THEN (s.attributes->>'gen_ai.usage.output_tokens')::numeric END AS output \
               FROM spans s WHERE s.start_time >= ",
        );
        q.push_bind(Timestamp::from_unix_nanos(start));
        q.push(" AND s.start_time <= ");
        q.push_bind(Timestamp::from_unix_nanos(end));
        if let Some(service) = service {
            push_service(&mut q, "s.service_name", service);
        }
        q.push(
            " AND (s.attributes ? 'gen_ai.usage.input_tokens' \
                  OR s.attributes ? 'gen_ai.usage.output_tokens')) \
             SELECT u.trace_id, t.root_span_name, u.name, u.model, u.system, \
                    coalesce(sum(u.input), 0)::bigint, coalesce(sum(u.output), 0)::bigint, \
                    count(*) \
             FROM usage u LEFT JOIN traces t ON t.trace_id = u.trace_id \
             WHERE u.input IS NOT NULL OR u.output IS NOT NULL \
             GROUP BY 1, 2, 3, 4, 5",
        );
        let rows = self.fetch(q).await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(TokenUsage {
                    trace: TraceId::try_from(unhex(r.try_get(0).ok()?).as_slice()).ok()?,
                    workflow: r.try_get(1).ok().flatten(),
                    operation: r.try_get(2).unwrap_or_default(),
                    model: r.try_get(3).unwrap_or_default(),
                    system: r.try_get(4).unwrap_or_default(),
                    input_tokens: u64::try_from(r.try_get::<i64, _>(5).unwrap_or_default())
                        .unwrap_or(0),
                    output_tokens: u64::try_from(r.try_get::<i64, _>(6).unwrap_or_default())
                        .unwrap_or(0),
                    spans: u64::try_from(r.try_get::<i64, _>(7).unwrap_or_default()).unwrap_or(0),
                })
            })
            .collect())
    }

    async fn error_groups(
        &self,
        service: Option<&str>,
        start: u64,
        end: u64,
    ) -> Result<Vec<ErrorGroup>, ReadError> {
        let mut q = QueryBuilder::new(concat!(
            "SELECT coalesce(e.attributes->>'exception.type', ''), \
             coalesce(e.attributes->>'exception.message', ''), count(*), max(",
            micros!("e.time"),
            "), (array_agg(e.trace_id ORDER BY e.time DESC))[1], \
             (array_agg(coalesce(e.attributes->>'exception.stacktrace', '') \
                        ORDER BY e.time DESC))[1] \
             FROM span_events e"
        ));
        if service.is_some() {
            q.push(
                " JOIN spans s ON s.trace_id = e.trace_id AND s.span_id = e.span_id \
                 AND s.start_time = e.span_start_time",
            );
        }
        q.push(" WHERE e.name = 'exception' AND e.span_start_time >= ");
        q.push_bind(Timestamp::from_unix_nanos(start));
        q.push(" AND e.span_start_time <= ");
        q.push_bind(Timestamp::from_unix_nanos(end));
        if let Some(service) = service {
            push_service(&mut q, "s.service_name", service);
        }
        q.push(" GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2");
        let rows = self.fetch(q).await?;
        Ok(rows
            .iter()
            .map(|r| ErrorGroup {
                kind: r.try_get(0).unwrap_or_default(),
                message: r.try_get(1).unwrap_or_default(),
                count: u64::try_from(r.try_get::<i64, _>(2).unwrap_or_default()).unwrap_or(0),
                last_seen: nanos(r.try_get(3).unwrap_or_default()),
                trace: TraceId::try_from(unhex(r.try_get(4).unwrap_or_default()).as_slice())
                    .unwrap_or_default(),
                stacktrace: r.try_get(5).unwrap_or_default(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_json_comes_back_as_typed_otlp_values() {
        let kvs = attributes(
            r#"{"i": 7, "d": 1.0, "s": "x", "b": true, "a": [1, "y"], "m": {"k": null}}"#,
        );
        let get = |k: &str| {
            kvs.iter()
                .find(|kv| kv.key == k)
                .unwrap()
                .value
                .clone()
                .unwrap()
                .value
        };
        assert_eq!(get("i"), Some(Kind::IntValue(7)));
        assert_eq!(get("d"), Some(Kind::DoubleValue(1.0)));
        assert_eq!(get("s"), Some(Kind::StringValue("x".into())));
        assert_eq!(get("b"), Some(Kind::BoolValue(true)));
        let Some(Kind::ArrayValue(a)) = get("a") else {
            panic!()
        };
        assert_eq!(a.values.len(), 2);
        let Some(Kind::KvlistValue(m)) = get("m") else {
            panic!()
        };
        assert_eq!(m.values[0].value, Some(AnyValue { value: None }));
        assert!(attributes("not json").is_empty());
    }

    #[test]
    fn attribute_text_matches_every_type_it_spells() {
        assert_eq!(
            attribute_candidates("k", "500"),
            [r#"{"k":"500"}"#, r#"{"k":500}"#]
        );
        assert_eq!(
            attribute_candidates("k", "1.5"),
            [r#"{"k":"1.5"}"#, r#"{"k":1.5}"#]
        );
        assert_eq!(
            attribute_candidates("k", "true"),
            [r#"{"k":"true"}"#, r#"{"k":true}"#]
        );
        assert_eq!(attribute_candidates("k", "NaN"), [r#"{"k":"NaN"}"#]);
        assert_eq!(
            attribute_candidates("k\0", "a\0"),
            ["{\"k\u{fffd}\":\"a\u{fffd}\"}"]
        );
        assert_eq!(unhex("0aff"), [10, 255]);
        assert!(unhex("0g").is_empty());
        assert!(unhex("abc").is_empty());
    }
}
