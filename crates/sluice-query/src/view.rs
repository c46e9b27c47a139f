//! The admin view at `/`: server-rendered pages over sluice's own API, for when no Jaeger or
//! Grafana runs: recent traces with filters, one trace as a waterfall with its span tree and
//! each span's attributes and events, errors grouped by exception with their stack traces, the
//! performance table per operation, and two traces compared. Plain HTML forms, links and
//! `<details>`, so it works from the keyboard and a screen reader and needs no script or build
//! step; templates (minijinja, escaped) are compiled into the binary.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use minijinja::Environment;
use serde_json::{Value, json};

use crate::api;
use crate::extension::{Api, Failure};
use crate::params::{self, first};

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in [
        ("base.html", include_str!("../templates/base.html")),
        ("traces.html", include_str!("../templates/traces.html")),
        ("trace.html", include_str!("../templates/trace.html")),
        ("errors.html", include_str!("../templates/errors.html")),
        (
            "operations.html",
            include_str!("../templates/operations.html"),
        ),
        ("compare.html", include_str!("../templates/compare.html")),
        ("genai.html", include_str!("../templates/genai.html")),
    ] {
        // The templates are part of the binary and tested: a syntax error fails the tests.
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "admin view template does not compile");
        }
    }
    env
});

/// The pages, over `api`.
pub(crate) fn routes(api: Arc<Api>) -> Router {
    Router::new()
        .route("/", get(traces))
        .route("/trace/{id}", get(trace))
        .route("/errors", get(errors))
        .route("/operations", get(operations))
        .route("/compare", get(compare))
        .route("/genai", get(genai))
        .with_state(api)
}

/// Renders `template` with `context` (plus the store's name), or the failure in its place.
fn page(api: &Api, template: &str, status: StatusCode, mut context: Value) -> Response {
    context["store"] = json!(api.storage());
    match TEMPLATES
        .get_template(template)
        .and_then(|t| t.render(minijinja::value::Serde(&context)))
    {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the admin view failed to render {template}: {e}"),
        )
            .into_response(),
    }
}

fn failed(api: &Api, template: &str, failure: &Failure, mut context: Value) -> Response {
    context["failure"] = json!(failure.message());
    page(api, template, failure.status(), context)
}

/// A duration for people: `850 ns`, `12.3 µs`, `4.56 ms`, `1.23 s`.
fn human(nanos: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let n = nanos as f64;
    if nanos < 1_000 {
        format!("{nanos} ns")
    } else if nanos < 1_000_000 {
        format!("{:.1} µs", n / 1e3)
    } else if nanos < 1_000_000_000 {
        format!("{:.2} ms", n / 1e6)
    } else {
        format!("{:.2} s", n / 1e9)
    }
}

/// `params` with a default `lookback` when neither it nor `start` is given.
fn with_lookback(mut params: Vec<(String, String)>, default: &str) -> Vec<(String, String)> {
    if first(&params, "lookback").is_none() && first(&params, "start").is_none() {
        params.push(("lookback".into(), default.into()));
    }
    params
}

async fn traces(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    let params = with_lookback(params::parse_query(raw.as_deref()), "1h");
    let form: HashMap<&str, &str> = [
        "service",
        "operation",
        "status",
        "text",
        "min_duration",
        "lookback",
    ]
    .into_iter()
    .map(|k| (k, first(&params, k).unwrap_or("")))
    .collect();
    let services = api
        .read(|r| async move { r.services().await })
        .await
        .unwrap_or_default();
    let mut context = json!({"form": form, "services": services});
    match api::search_data(&api, &params).await {
        Ok(found) => {
            let traces: Vec<Value> = found["traces"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let mut t = t.clone();
                    t["duration"] = json!(human(t["duration_ns"].as_u64().unwrap_or(0)));
                    t
                })
                .collect();
            // The next page: the same search, continued after the last trace shown.
            let next = found["next_cursor"].as_str().map(|cursor| {
                let mut query: Vec<String> = params
                    .iter()
                    .filter(|(k, v)| k != "cursor" && !v.is_empty())
                    .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                    .collect();
                query.push(format!("cursor={}", encode(cursor)));
                format!("/?{}", query.join("&"))
            });
            context["traces"] = json!(traces);
            context["next"] = json!(next);
            page(&api, "traces.html", StatusCode::OK, context)
        }
        Err(f) => failed(&api, "traces.html", &f, context),
    }
}

/// Percent-encodes a query string component.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The spans of a trace in tree order (each parent before its children, siblings by start),
/// with their depth and their bar's place on the trace's timeline (percent).
fn waterfall(spans: &[Value]) -> (Vec<Value>, u64) {
    let start_of = |s: &Value| {
        s["start_unix_nano"]
            .as_str()
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let duration_of = |s: &Value| s["duration_ns"].as_u64().unwrap_or(0);
    let begin = spans.iter().map(start_of).min().unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| start_of(s).saturating_add(duration_of(s)))
        .max()
        .unwrap_or(0);
    let total = end.saturating_sub(begin).max(1);
    let ids: std::collections::HashSet<&str> =
        spans.iter().filter_map(|s| s["span_id"].as_str()).collect();
    let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s["parent_span_id"].as_str().filter(|p| ids.contains(p)) {
            Some(parent) => children.entry(parent).or_default().push(i),
            None => roots.push(i),
        }
    }
    // `spans` comes sorted by start, so each list is too.
    let mut out = Vec::with_capacity(spans.len());
    let mut stack: Vec<(usize, usize)> = roots.into_iter().rev().map(|i| (i, 0)).collect();
    let mut seen = vec![false; spans.len()];
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        let s = &spans[i];
        let (start, duration) = (start_of(s), duration_of(s));
        #[allow(clippy::cast_precision_loss)]
        let pct = |n: u64| (n as f64 / total as f64 * 100.0 * 100.0).round() / 100.0;
        let mut row = s.clone();
        row["depth"] = json!(depth);
        row["left"] = json!(pct(start - begin));
        row["width"] = json!(pct(duration).max(0.2));
        row["offset"] = json!(human(start - begin));
        row["duration"] = json!(human(duration));
        out.push(row);
        if let Some(kids) = s["span_id"].as_str().and_then(|id| children.get(id)) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    // Spans in a cycle of parents (malformed data) are shown at the top level, not lost.
    for (i, s) in spans.iter().enumerate() {
        if !seen[i] {
            let mut row = s.clone();
            row["depth"] = json!(0);
            row["left"] = json!(0);
            row["width"] = json!(100);
            row["offset"] = json!("?");
            row["duration"] = json!(human(duration_of(s)));
            out.push(row);
        }
    }
    (out, total)
}

async fn trace(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    match api::trace_data(&api, &id).await {
        Ok(found) => {
            let spans = found["spans"].as_array().cloned().unwrap_or_default();
            let (rows, total) = waterfall(&spans);
            page(
                &api,
                "trace.html",
                StatusCode::OK,
                json!({"trace_id": found["trace_id"], "spans": rows, "total": human(total), "logs": found["logs"]}),
            )
        }
        Err(f) => failed(&api, "trace.html", &f, json!({"trace_id": id, "spans": []})),
    }
}

async fn errors(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    let params = with_lookback(params::parse_query(raw.as_deref()), "24h");
    let lookback = first(&params, "lookback").unwrap_or("window").to_owned();
    match api::errors_data(&api, &params).await {
        Ok(found) => page(
            &api,
            "errors.html",
            StatusCode::OK,
            json!({"errors": found["errors"], "lookback": lookback}),
        ),
        Err(f) => failed(
            &api,
            "errors.html",
            &f,
            json!({"errors": [], "lookback": lookback}),
        ),
    }
}

/// The points of a 120 × 24 SVG polyline drawing `counts` left to right, the highest at the
/// top; a flat line at the bottom when all are zero.
fn sparkline(counts: &[u64]) -> String {
    let high = counts.iter().max().copied().unwrap_or(0).max(1);
    let last = counts.len().saturating_sub(1).max(1);
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            #[allow(clippy::cast_precision_loss)]
            let (x, y) = (
                i as f64 * 120.0 / last as f64,
                23.0 - *c as f64 * 22.0 / high as f64,
            );
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn operations(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    const MINUTE: u64 = sluice_core::store::MINUTE_NANOS;
    let mut params = with_lookback(params::parse_query(raw.as_deref()), "1h");
    let lookback = first(&params, "lookback").unwrap_or("window").to_owned();
    // About 30 points of throughput per operation, each a whole number of minutes.
    let window = params::lookback(&lookback).unwrap_or(60 * MINUTE);
    let step = (window / 30).div_ceil(MINUTE).max(1);
    if first(&params, "step").is_none() {
        params.push(("step".into(), format!("{step}m")));
    }
    match api::operations_data(&api, &params).await {
        Ok(found) => {
            let rows: Vec<Value> = found["operations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| {
                    let mut o = o.clone();
                    for p in ["p50", "p95", "p99"] {
                        o[p] = json!(human(o[format!("{p}_ns")].as_u64().unwrap_or(0)));
                    }
                    o["per_second"] =
                        json!(format!("{:.2}", o["per_second"].as_f64().unwrap_or(0.0)));
                    if let Some(series) = o["series"]["count"].as_array() {
                        let counts: Vec<u64> = series.iter().filter_map(Value::as_u64).collect();
                        o["spark"] = json!(sparkline(&counts));
                        let (low, high) = (
                            counts.iter().min().copied().unwrap_or(0),
                            counts.iter().max().copied().unwrap_or(0),
                        );
                        o["spark_label"] = json!(format!(
                            "Spans per {step} min over the window: from {low} to {high}, {} in the last",
                            counts.last().copied().unwrap_or(0)
                        ));
                    }
                    o["error_rate"] = json!(format!(
                        "{:.1}%",
                        o["error_rate"].as_f64().unwrap_or(0.0) * 100.0
                    ));
                    o
                })
                .collect();
            page(
                &api,
                "operations.html",
                StatusCode::OK,
                json!({"operations": rows, "lookback": lookback}),
            )
        }
        Err(f) => failed(
            &api,
            "operations.html",
            &f,
            json!({"operations": [], "lookback": lookback}),
        ),
    }
}

async fn compare(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    let params = params::parse_query(raw.as_deref());
    match api::compare_data(&api, &params).await {
        Ok(mut found) => {
            if let Some(rows) = found["operations"].as_array_mut() {
                for row in rows {
                    for side in ["a", "b"] {
                        let ns = row[side]["duration_ns"].as_u64().unwrap_or(0);
                        row[side]["time"] = json!(human(ns));
                    }
                }
            }
            page(&api, "compare.html", StatusCode::OK, found)
        }
        Err(f) => failed(&api, "compare.html", &f, json!({"operations": []})),
    }
}

async fn genai(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    let params = with_lookback(params::parse_query(raw.as_deref()), "24h");
    let lookback = first(&params, "lookback").unwrap_or("window").to_owned();
    match api::genai_data(&api, &params).await {
        Ok(mut found) => {
            found["lookback"] = json!(lookback);
            page(&api, "genai.html", StatusCode::OK, found)
        }
        Err(f) => failed(
            &api,
            "genai.html",
            &f,
            json!({"lookback": lookback, "total": {}, "currency": ""}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for name in [
            "traces.html",
            "trace.html",
            "errors.html",
            "operations.html",
            "compare.html",
            "genai.html",
        ] {
            assert!(TEMPLATES.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn the_waterfall_puts_children_under_parents_by_start_and_keeps_orphans_and_cycles() {
        let span = |id: &str, parent: Option<&str>, start: u64, duration: u64| json!({"span_id": id, "parent_span_id": parent, "start_unix_nano": start.to_string(), "duration_ns": duration});
        let spans = vec![
            span("r", None, 0, 100),
            span("a", Some("r"), 10, 20),
            span("x", Some("y"), 15, 5),
            span("b", Some("r"), 40, 50),
            span("a1", Some("a"), 12, 5),
            span("c1", Some("c2"), 60, 1),
            span("c2", Some("c1"), 61, 1),
        ];
        // Sorted by start, as the API returns them.
        let mut spans = spans;
        spans.sort_by_key(|s| {
            s["start_unix_nano"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        });
        let (rows, total) = waterfall(&spans);
        let order: Vec<(&str, u64)> = rows
            .iter()
            .map(|r| (r["span_id"].as_str().unwrap(), r["depth"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            order,
            [
                ("r", 0),
                ("a", 1),
                ("a1", 2),
                ("b", 1),
                ("x", 0),
                ("c1", 0),
                ("c2", 0)
            ]
        );
        assert_eq!(total, 100);
        assert_eq!(rows[3]["left"], 40.0);
        assert_eq!(rows[3]["width"], 50.0);
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(850), "850 ns");
        assert_eq!(human(12_345), "12.3 µs");
        assert_eq!(human(4_560_000), "4.56 ms");
        assert_eq!(human(1_234_000_000), "1.23 s");
        assert_eq!(encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
