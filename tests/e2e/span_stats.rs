//! The postgres exporter's span statistics rollups (migration 0002), against a real
//! PostgreSQL: per-operation counts exact and percentiles within the stated error of
//! `percentile_disc` over the stored spans, for windows of whole hours, part hours and minutes,
//! with two collectors writing into one database and batches replayed; and the migration's
//! backfill of spans stored before it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::Value as Json;
use sluice_core::store::whole_minutes;
use sluice_postgres::stats::RELATIVE_ERROR;
use sqlx::{PgPool, Row};

use crate::postgres::{fresh_database, now_nanos, send_traces, server_url};
use crate::support::{Ports, Sluice, free_port, kv, string};

/// Per (service, operation): spans, errors, p50/p95/p99.
type Table = BTreeMap<(String, String), (u64, u64, [u64; 3])>;

/// What PostgreSQL computes from the stored spans over the whole minutes covering the window.
async fn exact(pool: &PgPool, start: u64, end: u64) -> Table {
    let (first, after) = whole_minutes(start, end);
    let rows = sqlx::query(
        "SELECT coalesce(nullif(service_name, ''), 'unknown_service'), name, count(*), \
         count(*) FILTER (WHERE status_code = 'error'), \
         percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY duration_ns) \
         FROM spans WHERE start_time >= to_timestamp($1 / 1e9) AND start_time < to_timestamp($2 / 1e9) \
         GROUP BY 1, 2",
    )
    .bind(i64::try_from(first).unwrap())
    .bind(i64::try_from(after).unwrap())
    .fetch_all(pool)
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            let p: Vec<i64> = r.get(4);
            let p = |i: usize| u64::try_from(p[i]).unwrap();
            (
                (r.get(0), r.get(1)),
                (
                    u64::try_from(r.get::<i64, _>(2)).unwrap(),
                    u64::try_from(r.get::<i64, _>(3)).unwrap(),
                    [p(0), p(1), p(2)],
                ),
            )
        })
        .collect()
}

/// What the query service answers.
async fn answered(port: u16, start: u64, end: u64) -> Table {
    let rfc = |t: u64| {
        humantime::format_rfc3339_nanos(std::time::UNIX_EPOCH + Duration::from_nanos(t)).to_string()
    };
    let url = format!(
        "http://127.0.0.1:{port}/api/sluice/operations?start={}&end={}",
        rfc(start),
        rfc(end)
    );
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let answer: Json = response.json().await.unwrap();
    let (first, after) = whole_minutes(start, end);
    assert_eq!(answer["start"], rfc(first).as_str());
    assert_eq!(answer["end"], rfc(after).as_str());
    answer["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let n = |k: &str| o[k].as_u64().unwrap();
            (
                (
                    o["service"].as_str().unwrap().to_owned(),
                    o["operation"].as_str().unwrap().to_owned(),
                ),
                (
                    n("count"),
                    n("errors"),
                    [n("p50_ns"), n("p95_ns"), n("p99_ns")],
                ),
            )
        })
        .collect()
}

/// Counts equal; each percentile within the histograms' stated error.
fn assert_matches(got: &Table, want: &Table, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (key, (spans, errors, p)) in want {
        let (got_spans, got_errors, got_p) = &got[key];
        assert_eq!((got_spans, got_errors), (spans, errors), "{what} {key:?}");
        for (g, w) in got_p.iter().zip(p) {
            #[allow(clippy::cast_precision_loss)]
            let error = (*g as f64 - *w as f64).abs() / *w as f64;
            assert!(
                error <= RELATIVE_ERROR + 1e-9,
                "{what} {key:?}: {got_p:?} vs exact {p:?}"
            );
        }
    }
}

/// `n` spans of three services (one with no service.name), four operations each, starting
/// over the `hours` before `end`, lasting 10 µs to 5 s log-uniformly, one in ten failing; as
/// requests of 100 spans.
fn spread_spans(n: u64, end: u64, hours: u64) -> Vec<ExportTraceServiceRequest> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        // xorshift64*: deterministic, so a failure can be replayed.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let span_of = hours * 3_600_000_000_000;
    let mut requests = Vec::new();
    for chunk in 0..n.div_ceil(100) {
        let mut by_service: BTreeMap<u64, Vec<Span>> = BTreeMap::new();
        // Ids from 1: an all-zero span id is invalid.
        for i in chunk * 100 + 1..=((chunk + 1) * 100).min(n) {
            let start = end - 1 - next() % span_of;
            #[allow(clippy::cast_precision_loss)]
            let unit = (next() % 1_000_000) as f64 / 1e6;
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let duration = (10_000f64 * (5e9f64 / 1e4).powf(unit)) as u64;
            let failed = next() % 10 == 0;
            by_service.entry(next() % 3).or_default().push(Span {
                trace_id: [&i.to_be_bytes()[..], &[7u8; 8][..]].concat(),
                span_id: i.to_be_bytes().to_vec(),
                name: format!("op{}", next() % 4),
                kind: 2,
                start_time_unix_nano: start,
                end_time_unix_nano: start + duration,
                status: failed.then(|| Status {
                    code: 2,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        requests.push(ExportTraceServiceRequest {
            resource_spans: by_service
                .into_iter()
                .map(|(s, spans)| ResourceSpans {
                    resource: Some(Resource {
                        attributes: match s {
                            0 => vec![kv("service.name", string("api"))],
                            1 => vec![kv("service.name", string("db"))],
                            _ => vec![kv("host.name", string("anonymous"))],
                        },
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        });
    }
    requests
}

fn config(ports: &Ports, url: &str, query: Option<u16>) -> String {
    let (extension, enabled) = query.map_or((String::new(), ""), |port| {
        (
            format!(
                "  jaeger_query:\n    storage: {{traces: postgres}}\n    http: {{endpoint: 127.0.0.1:{port}}}\n"
            ),
            ", jaeger_query",
        )
    });
    format!(
        "{common}{extension}processors:\n  batch:\n    timeout: 50ms\nexporters:\n  postgres:\n    endpoint: {url}\nservice:\n  extensions: [health_check{enabled}]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [postgres]\n  telemetry:\n    metrics:\n      address: 127.0.0.1:{metrics}\n",
        common = ports.common(),
        metrics = ports.metrics,
    )
}

/// The spans stored so far; 0 until the first exporter has migrated the fresh database.
async fn stored_spans(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM spans")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// Waits until no statistics row is pending: the collectors have folded them all.
async fn wait_folded(pool: &PgPool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM span_stats_pending")
            .fetch_one(pool)
            .await
            .unwrap();
        if pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} statistics rows still pending"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_operation_statistics_from_rollups_match_the_stored_spans_across_collectors_and_replays()
 {
    let (url, pool) = fresh_database(&server_url(), "stats").await;
    let query = free_port();
    let (ports_a, ports_b) = (Ports::new(), Ports::new());
    let (grpc_a, grpc_b) = (ports_a.grpc, ports_b.grpc);
    let text_a = config(&ports_a, &url, Some(query));
    let text_b = config(&ports_b, &url, None);
    let _a = Sluice::start(ports_a, &text_a);
    let _b = Sluice::start(ports_b, &text_b);

    // Two collectors write into one database, each folding; a tenth of the requests is
    // replayed through the other collector, and must add nothing.
    let end = now_nanos();
    let requests = spread_spans(6_000, end, 3);
    for (i, request) in requests.iter().enumerate() {
        let (to, again) = if i % 2 == 0 {
            (grpc_a, grpc_b)
        } else {
            (grpc_b, grpc_a)
        };
        send_traces(to, request.clone()).await;
        if i % 10 == 0 {
            send_traces(again, request.clone()).await;
        }
        if i == requests.len() / 2 {
            // The first half stored and folded before the rest arrives: the second half's
            // statistics merge into rows that exist, minute and hour alike.
            let sent = i64::try_from((i + 1) * 100).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while stored_spans(&pool).await < sent {
                assert!(Instant::now() < deadline, "the first half was not stored");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            wait_folded(&pool).await;
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM span_stats_hour")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert!(rows > 0, "the first half was folded");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored: i64 = loop {
        let n = stored_spans(&pool).await;
        if n >= 6_000 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stored, 6_000);

    const MINUTE: u64 = 60_000_000_000;
    const HOUR: u64 = 60 * MINUTE;
    let windows = [
        ("the last 4 hours", end - 4 * HOUR, end),
        (
            "whole hours",
            end - end % HOUR - 2 * HOUR,
            end - end % HOUR - 1,
        ),
        (
            "part hours on both sides of a whole one",
            end - 150 * MINUTE + 17_000_000_000,
            end - 25 * MINUTE,
        ),
        (
            "minutes inside one hour",
            end - 47 * MINUTE,
            end - 31 * MINUTE,
        ),
        ("one minute", end - 90 * MINUTE, end - 90 * MINUTE),
    ];
    // Read at once (the last rows are likely still pending), then again once everything is
    // folded: the same answer, equal to the spans'.
    let mut first_answers = Vec::new();
    for (what, start, stop) in windows {
        let got = answered(query, start, stop).await;
        assert_matches(&got, &exact(&pool, start, stop).await, what);
        first_answers.push(got);
    }
    wait_folded(&pool).await;
    for ((what, start, stop), before) in windows.iter().zip(first_answers) {
        let got = answered(query, *start, *stop).await;
        assert_eq!(got, before, "{what}: folding changed the answer");
    }
    // Throughput per 10 minutes over 4 hours, against the spans counted per interval.
    let (first, after) = whole_minutes(end - 4 * HOUR, end);
    let step = 10 * MINUTE;
    let rows = sqlx::query(
        "SELECT coalesce(nullif(service_name, ''), 'unknown_service'), name, \
         ((extract(epoch FROM start_time) * 1e9)::bigint - $1) / $3, count(*), \
         count(*) FILTER (WHERE status_code = 'error') \
         FROM spans WHERE start_time >= to_timestamp($1 / 1e9) AND start_time < to_timestamp($2 / 1e9) \
         GROUP BY 1, 2, 3",
    )
    .bind(i64::try_from(first).unwrap())
    .bind(i64::try_from(after).unwrap())
    .bind(i64::try_from(step).unwrap())
    .fetch_all(&pool)
    .await
    .unwrap();
    let intervals = usize::try_from((after - first).div_ceil(step)).unwrap();
    let mut want: BTreeMap<(String, String), Vec<(u64, u64)>> = BTreeMap::new();
    for r in &rows {
        let counts = want
            .entry((r.get(0), r.get(1)))
            .or_insert_with(|| vec![(0, 0); intervals]);
        let k = usize::try_from(r.get::<i64, _>(2)).unwrap();
        counts[k] = (
            u64::try_from(r.get::<i64, _>(3)).unwrap(),
            u64::try_from(r.get::<i64, _>(4)).unwrap(),
        );
    }
    let rfc = |t: u64| {
        humantime::format_rfc3339_nanos(std::time::UNIX_EPOCH + Duration::from_nanos(t)).to_string()
    };
    let answer: Json = reqwest::get(format!(
        "http://127.0.0.1:{query}/api/sluice/operations?start={}&end={}&step=10m",
        rfc(end - 4 * HOUR),
        rfc(end)
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let got: BTreeMap<(String, String), Vec<(u64, u64)>> = answer["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                (
                    o["service"].as_str().unwrap().to_owned(),
                    o["operation"].as_str().unwrap().to_owned(),
                ),
                o["series"]["count"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(o["series"]["errors"].as_array().unwrap())
                    .map(|(n, e)| (n.as_u64().unwrap(), e.as_u64().unwrap()))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(got, want, "throughput per 10 minutes");

    let whole = exact(&pool, end - 4 * HOUR, end).await;
    assert!(
        whole.contains_key(&("unknown_service".to_owned(), "op0".to_owned())),
        "{whole:?}"
    );
    let (minute_spans, hour_spans): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(spans)::bigint FROM span_stats_minute), \
                (SELECT sum(spans)::bigint FROM span_stats_hour)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((minute_spans, hour_spans), (6_000, 6_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_counts_spans_stored_before_it() {
    let (_, pool) = fresh_database(&server_url(), "backfill").await;
    sqlx::raw_sql(include_str!("../../migrations/0001_traces_and_logs.sql"))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::raw_sql(
        "SELECT sluice_ensure_partition('spans'::regclass, now() - interval '3 hours', interval '1 hour'); \
         SELECT sluice_ensure_partition('spans'::regclass, now() - interval '2 hours', interval '1 hour'); \
         SELECT sluice_ensure_partition('spans'::regclass, now() - interval '1 hours', interval '1 hour'); \
         SELECT sluice_ensure_partition('spans'::regclass, now(), interval '1 hour'); \
         INSERT INTO spans (trace_id, span_id, name, kind, start_time, end_time, duration_ns, \
                            status_code, service_name, resource_id) \
         SELECT 't' || i, 's', 'op' || (i % 3), 'server', now() - (i || ' s')::interval, now(), \
                (i::bigint * 1000003) % 1000000000, \
                CASE WHEN i % 10 = 0 THEN 'error' ELSE 'ok' END, \
                CASE WHEN i % 5 = 0 THEN NULL ELSE 'svc' END, 1 \
         FROM generate_series(1, 10000) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::raw_sql(include_str!("../../migrations/0002_span_stats.sql"))
        .execute(&pool)
        .await
        .unwrap();
    for (table, unit) in [("span_stats_minute", "minute"), ("span_stats_hour", "hour")] {
        // Names from the two constants above.
        let mismatched: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "WITH want AS (
                 SELECT date_trunc('{unit}', start_time, 'UTC') AS t,
                        coalesce(service_name, '') AS service_name, name, count(*) AS spans,
                        count(*) FILTER (WHERE status_code = 'error') AS errors,
                        array_agg(sluice_duration_bucket(duration_ns)
                                  ORDER BY sluice_duration_bucket(duration_ns)) AS each
                 FROM spans GROUP BY 1, 2, 3),
             got AS (
                 SELECT {unit} AS t, service_name, name, spans, errors,
                        (SELECT array_agg(b ORDER BY b)
                         FROM unnest(buckets, counts) AS u (b, n), generate_series(1, n)) AS each
                 FROM {table})
             SELECT count(*) FROM want FULL JOIN got USING (t, service_name, name)
             WHERE want.spans IS DISTINCT FROM got.spans
                OR want.errors IS DISTINCT FROM got.errors
                OR want.each IS DISTINCT FROM got.each"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(mismatched, 0, "{table}");
    }
    let total: i64 = sqlx::query_scalar("SELECT sum(spans)::bigint FROM span_stats_hour")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(total, 10_000);
}
