//! Sluice's own read API (`/api/sluice/…`), for debugging from the store: trace search with
//! every filter the stores support and keyset pagination, one trace with its spans, events and
//! links, per-operation statistics, errors grouped by exception, a trace exported as OTLP JSON
//! (which sluice's OTLP/HTTP receiver takes back), and two traces compared. JSON, times in Unix
//! nanoseconds (as strings where they pass 2^53) and RFC 3339.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use serde_json::{Value, json};
use sluice_core::anyvalue::hex;
use sluice_core::store::{Cursor, SortBy, Trace, TraceId, TraceQuery};
use sluice_core::{Signal, store};

use crate::extension::{Api, DEFAULT_LIMIT, Failure, kind_name};
use crate::memory::service_of;
use crate::params::{self, all, first};

/// The default window when a request names none: the last hour.
const DEFAULT_WINDOW: u64 = 3_600_000_000_000;

/// The routes, over `api`.
pub(crate) fn routes(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/sluice/traces", get(search))
        .route("/api/sluice/traces/{id}", get(one))
        .route("/api/sluice/traces/{id}/otlp", get(export))
        .route("/api/sluice/operations", get(operations))
        .route("/api/sluice/errors", get(errors))
        .route("/api/sluice/compare", get(compare))
        .route("/api/sluice/genai", get(genai))
        .with_state(api)
}

fn ok(value: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn fail(failure: &Failure) -> Response {
    failure.v3()
}

fn answer(result: Result<Value, Failure>) -> Response {
    match result {
        Ok(value) => ok(&value),
        Err(f) => fail(&f),
    }
}

/// A time as RFC 3339 with nanoseconds.
fn rfc3339(nanos: u64) -> String {
    humantime::format_rfc3339_nanos(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos))
        .to_string()
}

/// `[start, end]` from `start` and `end` (RFC 3339) or `lookback` (default: the last hour).
fn window(params: &[(String, String)]) -> Result<(u64, u64), Failure> {
    let bad = Failure::BadRequest;
    let end = match first(params, "end") {
        Some(t) => params::rfc3339("end", t)?,
        None => params::now(),
    };
    let start = match first(params, "start") {
        Some(t) => params::rfc3339("start", t)?,
        None => match first(params, "lookback") {
            Some(l) => end.saturating_sub(
                params::lookback(l).map_err(|m| bad(format!("parameter `lookback`: {m}")))?,
            ),
            None => end.saturating_sub(DEFAULT_WINDOW),
        },
    };
    if start > end {
        return Err(bad("parameter `start` is after `end`".into()));
    }
    Ok((start, end))
}

fn status_code(text: &str) -> Result<i32, Failure> {
    match text {
        "unset" => Ok(0),
        "ok" => Ok(1),
        "error" => Ok(2),
        _ => Err(Failure::BadRequest(format!(
            "status `{text}` is not one of unset, ok, error"
        ))),
    }
}

fn cursor(text: &str) -> Result<Cursor, Failure> {
    let bad = || Failure::BadRequest(format!("cursor `{text}` is not one this API gave"));
    let (key, id) = text.split_once('.').ok_or_else(bad)?;
    Ok(Cursor {
        key: key.parse().map_err(|_| bad())?,
        id: store::parse_trace_id(id).map_err(|_| bad())?,
    })
}

/// `GET /api/sluice/traces`: summaries of the traces that start in the window and hold a span
/// matching every filter, newest (or longest) first, a page at a time.
async fn search(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    answer(search_data(&api, &params::parse_query(raw.as_deref())).await)
}

/// The search's answer.
pub(crate) async fn search_data(api: &Api, params: &[(String, String)]) -> Result<Value, Failure> {
    let prepared = (|| {
        let (start_min, start_max) = window(params)?;
        let duration = |name: &str| {
            first(params, name)
                .map(|d| {
                    params::go_duration(d)
                        .map_err(|m| Failure::BadRequest(format!("parameter `{name}`: {m}")))
                })
                .transpose()
        };
        let mut attributes = Vec::new();
        for (key, value) in params {
            if let Some(name) = key.strip_prefix("attr.") {
                attributes.push((name.to_owned(), value.clone()));
            }
        }
        let sort = match first(params, "sort") {
            None | Some("start") => SortBy::Start,
            Some("duration") => SortBy::Duration,
            Some(other) => {
                return Err(Failure::BadRequest(format!(
                    "sort `{other}` is not start or duration"
                )));
            }
        };
        let query = TraceQuery {
            service: first(params, "service").map(str::to_owned),
            operation: first(params, "operation").map(str::to_owned),
            attributes,
            status: first(params, "status").map(status_code).transpose()?,
            text: first(params, "text").map(str::to_owned),
            min_duration: duration("min_duration")?,
            max_duration: duration("max_duration")?,
            start_min,
            start_max,
            limit: api.limit(first(params, "limit"), DEFAULT_LIMIT)?,
        };
        let after = first(params, "cursor").map(cursor).transpose()?;
        Ok((query, sort, after))
    })();
    let (query, sort, after) = prepared?;
    let limit = query.limit;
    let summaries = api
        .read(|r| async move { r.find_summaries(&query, sort, after).await })
        .await?;
    {
        {
            let next = (summaries.len() == limit)
                .then(|| summaries.last())
                .flatten()
                .map(|s| format!("{}.{}", s.key(sort), hex(&s.id)));
            let traces: Vec<Value> = summaries
                .iter()
                .map(|s| {
                    json!({
                        "trace_id": hex(&s.id),
                        "root_service": s.root_service,
                        "root_name": s.root_name,
                        "start": rfc3339(s.start),
                        "start_unix_nano": s.start.to_string(),
                        "duration_ns": s.duration,
                        "span_count": s.span_count,
                        "error_count": s.error_count,
                    })
                })
                .collect();
            Ok(json!({"traces": traces, "next_cursor": next}))
        }
    }
}

async fn read_trace(api: &Api, id: &str) -> Result<(TraceId, Trace), Failure> {
    let id = store::parse_trace_id(id).map_err(Failure::from)?;
    api.read(|r| async move { r.traces(&[id], None).await })
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Failure::NotFound("trace not found".into()))
}

fn attributes(kvs: &[KeyValue]) -> Value {
    let mut out = String::new();
    sluice_core::anyvalue::write_json_object(&mut out, kvs, false);
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

/// `GET /api/sluice/traces/{id}`: every span, ordered by start, with its service, events and
/// links.
async fn one(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    answer(trace_data(&api, &id).await)
}

/// One trace's answer.
pub(crate) async fn trace_data(api: &Api, id: &str) -> Result<Value, Failure> {
    let (id, trace) = read_trace(api, id).await?;
    let mut spans: Vec<(u64, Value)> = Vec::new();
    for r in &trace.resource_spans {
        let resource = r
            .resource
            .as_ref()
            .map_or(&[][..], |r| r.attributes.as_slice());
        for s in &r.scope_spans {
            let scope = s.scope.clone().unwrap_or_default();
            for span in &s.spans {
                let status = span.status.clone().unwrap_or_default();
                let code = ["unset", "ok", "error"]
                    .get(usize::try_from(status.code).unwrap_or(0))
                    .copied()
                    .unwrap_or("unset");
                spans.push((
                    span.start_time_unix_nano,
                    json!({
                        "span_id": hex(&span.span_id),
                        "parent_span_id": (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
                        "service": service_of(r),
                        "name": span.name,
                        "kind": kind_name(span.kind),
                        "start": rfc3339(span.start_time_unix_nano),
                        "start_unix_nano": span.start_time_unix_nano.to_string(),
                        "duration_ns": span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano),
                        "status": {"code": code, "message": status.message},
                        "attributes": attributes(&span.attributes),
                        "resource": attributes(resource),
                        "scope": {"name": scope.name, "version": scope.version},
                        "events": span.events.iter().map(|e| json!({
                            "name": e.name,
                            "time": rfc3339(e.time_unix_nano),
                            "time_unix_nano": e.time_unix_nano.to_string(),
                            "attributes": attributes(&e.attributes),
                        })).collect::<Vec<_>>(),
                        "links": span.links.iter().map(|l| json!({
                            "trace_id": hex(&l.trace_id),
                            "span_id": hex(&l.span_id),
                            "attributes": attributes(&l.attributes),
                        })).collect::<Vec<_>>(),
                    }),
                ));
            }
        }
    }
    spans.sort_by_key(|(start, _)| *start);
    let logs = api.read(|r| async move { r.trace_logs(&id).await }).await?;
    let logs: Vec<Value> = logs
        .iter()
        .map(|l| {
            let record = &l.record;
            let time = crate::memory::log_time(record);
            let mut body = String::new();
            sluice_core::anyvalue::write_json(
                &mut body,
                record.body.as_ref().and_then(|b| b.value.as_ref()),
                false,
            );
            json!({
                "time": rfc3339(time),
                "time_unix_nano": time.to_string(),
                "severity_number": record.severity_number,
                "severity_text": record.severity_text,
                "body": serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
                "event_name": record.event_name,
                "span_id": (!record.span_id.is_empty()).then(|| hex(&record.span_id)),
                "service": l.service,
                "attributes": attributes(&record.attributes),
            })
        })
        .collect();
    Ok(json!({
        "trace_id": hex(&id),
        "spans": spans.into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        "logs": logs,
    }))
}

/// `GET /api/sluice/traces/{id}/otlp`: the trace as an OTLP/JSON `TracesData`, a body sluice's
/// own OTLP/HTTP receiver (and any other) takes.
async fn export(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let (id, trace) = match read_trace(&api, &id).await {
        Ok(found) => found,
        Err(f) => return fail(&f),
    };
    let request = ExportTraceServiceRequest {
        resource_spans: trace.resource_spans,
    };
    match sluice_core::json::protobuf_to_json(Signal::Traces, &request.encode_to_vec()) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"trace-{}.json\"", hex(&id)),
                ),
            ],
            body,
        )
            .into_response(),
        Err(e) => fail(&Failure::Unavailable(format!(
            "cannot write the trace as OTLP/JSON: {e}"
        ))),
    }
}

/// `GET /api/sluice/operations`: per service and operation over the window, the span count,
/// errors and error rate, p50/p95/p99 and throughput.
async fn operations(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    answer(operations_data(&api, &params::parse_query(raw.as_deref())).await)
}

/// The per-operation statistics' answer.
pub(crate) async fn operations_data(
    api: &Api,
    params: &[(String, String)],
) -> Result<Value, Failure> {
    let (start, end) = window(params)?;
    let service = first(params, "service").map(str::to_owned);
    let step = match first(params, "step") {
        None => None,
        Some(text) => {
            let step = params::lookback(text)
                .map_err(|m| Failure::BadRequest(format!("parameter `step`: {}", m.0)))?;
            sluice_core::store::series_intervals(start, end, step)
                .map_err(|m| Failure::BadRequest(format!("parameter `step`: {m}")))?;
            Some(step)
        }
    };
    let name = service.clone();
    let stats = api
        .read(|r| async move { r.operation_stats(name.as_deref(), start, end).await })
        .await?;
    let mut series: BTreeMap<(String, String), Vec<(u64, u64)>> = BTreeMap::new();
    if let Some(step) = step {
        let found = api
            .read(|r| async move {
                r.operation_series(service.as_deref(), start, end, step)
                    .await
            })
            .await?;
        series.extend(
            found
                .into_iter()
                .map(|s| ((s.service, s.operation), s.counts)),
        );
    }
    // Statistics are kept per minute: the answer covers, and names, the whole minutes.
    let (start, end) = sluice_core::store::whole_minutes(start, end);
    #[allow(clippy::cast_precision_loss)]
    let seconds = ((end - start) as f64 / 1e9).max(1e-9);
    let intervals = step.map(|step| (end - start).div_ceil(step));
    let rows: Vec<Value> = stats
        .iter()
        .map(|s| {
            #[allow(clippy::cast_precision_loss)]
            let (count, errors) = (s.count as f64, s.errors as f64);
            let mut row = json!({
                "service": s.service,
                "operation": s.operation,
                "count": s.count,
                "errors": s.errors,
                "error_rate": if s.count == 0 { 0.0 } else { errors / count },
                "p50_ns": s.percentiles[0],
                "p95_ns": s.percentiles[1],
                "p99_ns": s.percentiles[2],
                "per_second": count / seconds,
            });
            if let Some(n) = intervals {
                // Dense: an interval missing from the store's answer had no spans.
                let counts = series
                    .get(&(s.service.clone(), s.operation.clone()))
                    .map_or(&[][..], Vec::as_slice);
                let at = |k: u64| {
                    usize::try_from(k)
                        .ok()
                        .and_then(|k| counts.get(k))
                        .copied()
                        .unwrap_or_default()
                };
                row["series"] = json!({
                    "count": (0..n).map(|k| at(k).0).collect::<Vec<u64>>(),
                    "errors": (0..n).map(|k| at(k).1).collect::<Vec<u64>>(),
                });
            }
            row
        })
        .collect();
    let mut answer = json!({"start": rfc3339(start), "end": rfc3339(end), "operations": rows});
    if let Some(step) = step {
        answer["step_seconds"] = json!(step / 1_000_000_000);
    }
    Ok(answer)
}

/// `GET /api/sluice/errors`: exception events over the window grouped by type and message,
/// the most frequent first, each with its newest trace and stack trace.
async fn errors(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    answer(errors_data(&api, &params::parse_query(raw.as_deref())).await)
}

/// The error groups' answer.
pub(crate) async fn errors_data(api: &Api, params: &[(String, String)]) -> Result<Value, Failure> {
    let (start, end) = window(params)?;
    let service = first(params, "service").map(str::to_owned);
    let groups = api
        .read(|r| async move { r.error_groups(service.as_deref(), start, end).await })
        .await?;
    {
        {
            let rows: Vec<Value> = groups
                .iter()
                .map(|g| {
                    json!({
                        "type": g.kind,
                        "message": g.message,
                        "count": g.count,
                        "last_seen": rfc3339(g.last_seen),
                        "trace_id": hex(&g.trace),
                        "stacktrace": g.stacktrace,
                    })
                })
                .collect();
            Ok(json!({"errors": rows}))
        }
    }
}

/// Per (service, operation) of a trace: how many spans and their total duration.
fn per_operation(trace: &Trace) -> BTreeMap<(String, String), (u64, u64)> {
    let mut out: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for r in &trace.resource_spans {
        for s in &r.scope_spans {
            for span in &s.spans {
                let entry = out
                    .entry((service_of(r).to_owned(), span.name.clone()))
                    .or_default();
                entry.0 += 1;
                entry.1 += span
                    .end_time_unix_nano
                    .saturating_sub(span.start_time_unix_nano);
            }
        }
    }
    out
}

/// `GET /api/sluice/compare?a=&b=`: two traces side by side, per service and operation: the
/// span count and total duration in each.
async fn compare(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    answer(compare_data(&api, &params::parse_query(raw.as_deref())).await)
}

/// The comparison's answer.
pub(crate) async fn compare_data(api: &Api, params: &[(String, String)]) -> Result<Value, Failure> {
    let ids: Vec<&str> = ["a", "b"].iter().filter_map(|k| first(params, k)).collect();
    if ids.len() != 2 || all(params, "a").count() > 1 {
        return Err(Failure::BadRequest(
            "parameters `a` and `b` (two trace ids) are required".into(),
        ));
    }
    let a = read_trace(api, ids[0]).await?;
    let b = read_trace(api, ids[1]).await?;
    let (left, right) = (per_operation(&a.1), per_operation(&b.1));
    let mut keys: Vec<&(String, String)> = left.keys().chain(right.keys()).collect();
    keys.sort();
    keys.dedup();
    let side = |m: &BTreeMap<(String, String), (u64, u64)>, k: &(String, String)| {
        let (count, duration) = m.get(k).copied().unwrap_or_default();
        json!({"count": count, "duration_ns": duration})
    };
    let rows: Vec<Value> = keys
        .iter()
        .map(|k| {
            json!({
                "service": k.0,
                "operation": k.1,
                "a": side(&left, k),
                "b": side(&right, k),
            })
        })
        .collect();
    Ok(json!({"a": hex(&a.0), "b": hex(&b.0), "operations": rows}))
}

/// Tokens and their cost, summed.
#[derive(Default)]
struct Tally {
    input: u64,
    output: u64,
    spans: u64,
    cost: f64,
    /// Whether some tokens counted have no price.
    unpriced: bool,
    traces: std::collections::BTreeSet<TraceId>,
}

impl Tally {
    fn add(&mut self, usage: &store::TokenUsage, cost: Option<f64>) {
        self.input += usage.input_tokens;
        self.output += usage.output_tokens;
        self.spans += usage.spans;
        match cost {
            Some(c) => self.cost += c,
            None => self.unpriced = true,
        }
        self.traces.insert(usage.trace);
    }

    fn json(&self, mut row: Value) -> Value {
        #[allow(clippy::cast_precision_loss)]
        let traces = self.traces.len() as f64;
        row["input_tokens"] = json!(self.input);
        row["output_tokens"] = json!(self.output);
        row["spans"] = json!(self.spans);
        row["traces"] = json!(self.traces.len());
        // Unpriced tokens make a cost unknown, never a smaller one.
        row["cost"] = if self.unpriced {
            Value::Null
        } else {
            json!(round(self.cost))
        };
        row["cost_per_trace"] = if !self.unpriced && traces > 0.0 {
            json!(round(self.cost / traces))
        } else {
            Value::Null
        };
        row
    }
}

/// Money to a millionth of the currency unit.
fn round(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

/// `GET /api/sluice/genai`: token usage (OpenTelemetry's GenAI conventions) over the window,
/// per model, operation, workflow (the trace's root span) and trace, with its cost where
/// `genai.prices` prices the model.
async fn genai(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    answer(genai_data(&api, &params::parse_query(raw.as_deref())).await)
}

/// The token usage's answer.
pub(crate) async fn genai_data(api: &Api, params: &[(String, String)]) -> Result<Value, Failure> {
    let (start, end) = window(params)?;
    let service = first(params, "service").map(str::to_owned);
    let usage = api
        .read(|r| async move { r.token_usage(service.as_deref(), start, end).await })
        .await?;
    let mut total = Tally::default();
    let mut models: BTreeMap<(String, String), Tally> = BTreeMap::new();
    let mut operations: BTreeMap<(String, String), Tally> = BTreeMap::new();
    let mut workflows: BTreeMap<String, Tally> = BTreeMap::new();
    let mut traces: BTreeMap<TraceId, (Option<String>, Tally)> = BTreeMap::new();
    let mut unpriced = std::collections::BTreeSet::new();
    for u in &usage {
        #[allow(clippy::cast_precision_loss)]
        let cost = api.genai.price(&u.model).map(|p| {
            (u.input_tokens as f64 * p.input_per_million
                + u.output_tokens as f64 * p.output_per_million)
                / 1e6
        });
        if cost.is_none() {
            unpriced.insert(u.model.clone());
        }
        total.add(u, cost);
        models
            .entry((u.model.clone(), u.system.clone()))
            .or_default()
            .add(u, cost);
        operations
            .entry((u.operation.clone(), u.model.clone()))
            .or_default()
            .add(u, cost);
        workflows
            .entry(u.workflow.clone().unwrap_or_default())
            .or_default()
            .add(u, cost);
        traces
            .entry(u.trace)
            .or_insert_with(|| (u.workflow.clone(), Tally::default()))
            .1
            .add(u, cost);
    }
    let mut top: Vec<(TraceId, Option<String>, Tally)> =
        traces.into_iter().map(|(id, (w, t))| (id, w, t)).collect();
    top.sort_by(|a, b| {
        b.2.cost
            .total_cmp(&a.2.cost)
            .then((b.2.input + b.2.output).cmp(&(a.2.input + a.2.output)))
            .then(a.0.cmp(&b.0))
    });
    top.truncate(50);
    Ok(json!({
        "currency": api.genai.currency,
        "start": rfc3339(start),
        "end": rfc3339(end),
        "total": total.json(json!({})),
        "models": models.iter().map(|((model, system), t)| t.json(json!({"model": model, "system": system}))).collect::<Vec<_>>(),
        "operations": operations.iter().map(|((operation, model), t)| t.json(json!({"operation": operation, "model": model}))).collect::<Vec<_>>(),
        "workflows": workflows.iter().map(|(workflow, t)| t.json(json!({"workflow": workflow}))).collect::<Vec<_>>(),
        "traces": top.iter().map(|(id, workflow, t)| t.json(json!({"trace_id": hex(id), "workflow": workflow}))).collect::<Vec<_>>(),
        "unpriced_models": unpriced,
    }))
}
