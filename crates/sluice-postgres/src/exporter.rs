//! The `postgres` exporter: one statement per batch, idempotent, into partitioned tables.
//!
//! A traces batch is written by a single statement whose data-modifying CTEs insert resources,
//! events, links and spans with `ON CONFLICT DO NOTHING`, then merge one row per trace into
//! `traces` from the spans that were actually new (`RETURNING`), so a replayed batch changes
//! nothing, counts included. A single statement is its own transaction and one round trip.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use metrics::{Counter, Histogram};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;
use sluice_config::Problem;
use sluice_core::{
    Batch, BuildError, BuiltExporter, ExportError, Exporter, ExporterFactory, HelperSettings,
    Signal, check_typed, typed,
};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{PostgresConfig, redacted};
use crate::error::{NO_PARTITION, export_error, retryable_sqlstate, sqlstate};
use crate::metrics as names;
use crate::stats;
use crate::translate::{self, LogRows, ResourceRows, TraceRows};
use crate::types::Timestamp;

/// The schema, embedded from the top-level `migrations/` at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// The tables partitioned by span start time, and the one partitioned by log time.
const SPAN_TABLES: &[&str] = &["spans", "span_events", "span_links"];
const LOG_TABLES: &[&str] = &["logs"];

const ENSURE_PARTITIONS: &str = "SELECT count(*) FILTER (WHERE created) FROM \
     (SELECT sluice_ensure_partition(p::regclass, t, $3 * interval '1 second') AS created \
      FROM unnest($1::text[]) AS p, unnest($2::timestamptz[]) AS t) AS x";

const INSERT_TRACES: &str = r"
WITH resource_rows AS (
    INSERT INTO resources (resource_id, service_name, attributes, dropped_attributes_count)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::jsonb[], $4::integer[])
    ON CONFLICT DO NOTHING
), event_rows AS (
    INSERT INTO span_events (trace_id, span_id, span_start_time, event_index, time, name,
                             attributes, dropped_attributes_count)
    SELECT * FROM unnest($5::text[], $6::text[], $7::timestamptz[], $8::integer[],
                         $9::timestamptz[], $10::text[], $11::jsonb[], $12::integer[])
    ON CONFLICT DO NOTHING
), link_rows AS (
    INSERT INTO span_links (trace_id, span_id, span_start_time, link_index, linked_trace_id,
                            linked_span_id, trace_state, flags, attributes,
                            dropped_attributes_count)
    SELECT * FROM unnest($13::text[], $14::text[], $15::timestamptz[], $16::integer[],
                         $17::text[], $18::text[], $19::text[], $20::integer[], $21::jsonb[],
                         $22::integer[])
    ON CONFLICT DO NOTHING
), span_rows AS (
    INSERT INTO spans (trace_id, span_id, parent_span_id, trace_state, flags, name, kind,
                       start_time, end_time, duration_ns, status_code, status_message,
                       service_name, resource_id, scope_name, scope_version, attributes,
                       dropped_attributes_count, dropped_events_count, dropped_links_count)
    SELECT * FROM unnest($23::text[], $24::text[], $25::text[], $26::text[], $27::integer[],
                         $28::text[], $29::text[], $30::timestamptz[], $31::timestamptz[],
                         $32::bigint[], $33::text[], $34::text[], $35::text[], $36::bigint[],
                         $37::text[], $38::text[], $39::jsonb[], $40::integer[], $41::integer[],
                         $42::integer[])
    ON CONFLICT DO NOTHING
    RETURNING trace_id, parent_span_id, name, service_name, start_time, end_time, duration_ns,
              status_code
), stat_rows AS (
    -- The new spans' statistics, one row per minute, service and name (migration 0002).
    INSERT INTO span_stats_pending (minute, service_name, name, spans, errors, buckets, counts)
    SELECT minute, service_name, name, sum(n)::bigint, sum(e)::bigint,
           array_agg(bucket ORDER BY bucket), array_agg(n ORDER BY bucket)
    FROM (SELECT date_trunc('minute', start_time, 'UTC') AS minute,
                 coalesce(service_name, '') AS service_name, name,
                 sluice_duration_bucket(duration_ns) AS bucket, count(*) AS n,
                 count(*) FILTER (WHERE status_code = 'error') AS e
          FROM span_rows GROUP BY 1, 2, 3, 4) AS b
    GROUP BY 1, 2, 3
), per_trace AS (
    SELECT trace_id,
           min(start_time) AS start_time,
           max(end_time) AS end_time,
           count(*) AS span_count,
           count(*) FILTER (WHERE status_code = 'error') AS error_count,
           count(*) FILTER (WHERE status_code = 'ok') AS ok_count,
           (array_agg(service_name ORDER BY start_time)
               FILTER (WHERE parent_span_id IS NULL))[1] AS root_service_name,
           (array_agg(name ORDER BY start_time)
               FILTER (WHERE parent_span_id IS NULL))[1] AS root_span_name
    FROM span_rows
    GROUP BY trace_id
), trace_rows AS (
    INSERT INTO traces AS t (trace_id, root_service_name, root_span_name, start_time, end_time,
                             span_count, error_count, ok_count, attributes)
    SELECT p.trace_id, p.root_service_name, p.root_span_name, p.start_time, p.end_time,
           p.span_count, p.error_count, p.ok_count, coalesce(a.attributes, '{}')
    FROM per_trace AS p
    LEFT JOIN unnest($43::text[], $44::jsonb[]) AS a (trace_id, attributes)
        ON a.trace_id = p.trace_id
    -- Rows are locked in this order, so concurrent writers never deadlock on each other.
    ORDER BY p.trace_id
    ON CONFLICT (trace_id) DO UPDATE SET
        start_time = least(t.start_time, excluded.start_time),
        end_time = greatest(t.end_time, excluded.end_time),
        span_count = t.span_count + excluded.span_count,
        error_count = t.error_count + excluded.error_count,
        ok_count = t.ok_count + excluded.ok_count,
        root_service_name = coalesce(excluded.root_service_name, t.root_service_name),
        root_span_name = coalesce(excluded.root_span_name, t.root_span_name),
        attributes = t.attributes || excluded.attributes
    RETURNING 1
)
SELECT (SELECT count(*) FROM span_rows), (SELECT count(*) FROM trace_rows)";

const INSERT_LOGS: &str = r"
WITH resource_rows AS (
    INSERT INTO resources (resource_id, service_name, attributes, dropped_attributes_count)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::jsonb[], $4::integer[])
    ON CONFLICT DO NOTHING
), log_rows AS (
    INSERT INTO logs (time, log_id, observed_time, severity_number, severity_text, body,
                      body_kind, event_name, trace_id, span_id, flags, service_name, resource_id,
                      scope_name, scope_version, attributes, dropped_attributes_count)
    SELECT * FROM unnest($5::timestamptz[], $6::bigint[], $7::timestamptz[], $8::smallint[],
                         $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
                         $14::text[], $15::integer[], $16::text[], $17::bigint[], $18::text[],
                         $19::text[], $20::jsonb[], $21::integer[])
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM log_rows";

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A connection pool and what it has learned about the database, shared by the traces and logs
/// exporters of one `postgres/<name>` id.
struct Store {
    id: String,
    pool: PgPool,
    migrate: bool,
    retention: Duration,
    partition_interval: Duration,
    promoted: Vec<String>,
    /// Set once the schema is known to be in place (migrated or checked).
    ready: OnceCell<()>,
    /// Partition buckets (`unix micros / interval`) known to exist, per table family.
    partitions: Mutex<HashSet<(&'static str, i64)>>,
    /// Resources known to be stored; cleared when it grows past `RESOURCE_CACHE`.
    resources: Mutex<HashSet<i64>>,
}

/// Resource ids remembered before the cache starts over.
const RESOURCE_CACHE: usize = 16_384;

impl Store {
    fn interval_micros(&self) -> i64 {
        i64::try_from(self.partition_interval.as_micros()).unwrap_or(i64::MAX)
    }

    /// Migrates or checks the schema, once, then makes the partitions for now and the next
    /// interval; from then on the maintenance task keeps them ahead.
    async fn ensure_ready(self: &Arc<Self>) -> Result<(), ExportError> {
        self.ready
            .get_or_try_init(|| async {
                if self.migrate {
                    MIGRATOR.run(&self.pool).await.map_err(migrate_error)?;
                    tracing::info!(exporter = %self.id, "postgres schema migrated");
                } else {
                    self.check_schema().await?;
                }
                self.maintain()
                    .await
                    .map_err(|e| export_error("partition maintenance failed", &e))?;
                Ok(())
            })
            .await
            .map(|_| ())
    }

    async fn check_schema(&self) -> Result<(), ExportError> {
        let wanted = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Result<Option<i64>, sqlx::Error> =
            sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await;
        match applied {
            Ok(Some(version)) if version == wanted => Ok(()),
            Ok(version) => Err(ExportError::permanent(format!(
                "the database schema is at version {}, this sluice needs {wanted}: apply migrations/ or set migrate: true",
                version.unwrap_or(0)
            ))),
            Err(e) if sqlstate(&e).as_deref() == Some("42P01") => Err(ExportError::permanent(
                "the database has no sluice schema: apply migrations/ or set migrate: true",
            )),
            Err(e) => Err(export_error("cannot read the schema version", &e)),
        }
    }

    /// Creates the partitions for now and the next interval; drops what retention says is
    /// gone, and the `traces` rows whose spans all went with it.
    async fn maintain(&self) -> Result<(), sqlx::Error> {
        let now = now_micros();
        let ahead = now.saturating_add(self.interval_micros());
        for (family, tables) in [("spans", SPAN_TABLES), ("logs", LOG_TABLES)] {
            let times = [now, ahead].map(|t| Timestamp::from_unix_nanos(t as u64 * 1000));
            self.ensure_partitions(family, tables, &times).await?;
        }
        if self.retention.is_zero() {
            return Ok(());
        }
        let horizon = Timestamp::from_unix_nanos(
            now.saturating_sub(i64::try_from(self.retention.as_micros()).unwrap_or(i64::MAX))
                .max(0) as u64
                * 1000,
        );
        let mut dropped = 0;
        for table in SPAN_TABLES.iter().chain(LOG_TABLES) {
            let n: i32 = sqlx::query_scalar("SELECT sluice_drop_partitions($1::regclass, $2)")
                .bind(*table)
                .bind(horizon)
                .fetch_one(&self.pool)
                .await?;
            dropped += n;
        }
        let traces = sqlx::query(
            "DELETE FROM traces WHERE end_time < coalesce(\
                 (SELECT min(lower_bound) FROM sluice_partitions('spans'::regclass)), $1)",
        )
        .bind(horizon)
        .execute(&self.pool)
        .await?
        .rows_affected();
        // Statistics go with the spans they count (an hour row once all of its hour is gone).
        let stats = sqlx::query(
            "WITH bound AS (SELECT coalesce(\
                 (SELECT min(lower_bound) FROM sluice_partitions('spans'::regclass)), $1) AS t), \
             minutes AS (DELETE FROM span_stats_minute WHERE minute < (SELECT t FROM bound) \
                         RETURNING 1), \
             hours AS (DELETE FROM span_stats_hour \
                       WHERE hour + interval '1 hour' <= (SELECT t FROM bound) RETURNING 1), \
             pending AS (DELETE FROM span_stats_pending WHERE minute < (SELECT t FROM bound) \
                         RETURNING 1) \
             SELECT (SELECT count(*) FROM minutes) + (SELECT count(*) FROM hours) \
                  + (SELECT count(*) FROM pending)",
        )
        .bind(horizon)
        .fetch_one(&self.pool)
        .await?;
        let stats: i64 = stats.try_get(0)?;
        if dropped > 0 || traces > 0 || stats > 0 {
            self.partitions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
            tracing::info!(exporter = %self.id, partitions = dropped, traces, stats, "retention dropped old data");
        }
        Ok(())
    }

    /// Makes sure partitions hold every one of `times` in each table of a family; remembers the
    /// buckets it has seen, so most batches skip this.
    async fn ensure_partitions(
        &self,
        family: &'static str,
        tables: &[&str],
        times: &[Timestamp],
    ) -> Result<(), sqlx::Error> {
        let interval = self.interval_micros().max(1);
        // Per bucket, the earliest and latest time: partitions made with another interval may
        // split a bucket, and those two are what must be covered in the common case.
        let mut spans: BTreeMap<i64, (Timestamp, Timestamp)> = BTreeMap::new();
        {
            let known = self
                .partitions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for t in times {
                let bucket = t.unix_micros().div_euclid(interval);
                if known.contains(&(family, bucket)) {
                    continue;
                }
                let entry = spans.entry(bucket).or_insert((*t, *t));
                entry.0 = entry.0.min(*t);
                entry.1 = entry.1.max(*t);
            }
        }
        if spans.is_empty() {
            return Ok(());
        }
        let wanted: Vec<Timestamp> = spans.values().flat_map(|(lo, hi)| [*lo, *hi]).collect();
        self.create_partitions(tables, &wanted).await?;
        let mut known = self
            .partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        known.extend(spans.keys().map(|b| (family, *b)));
        Ok(())
    }

    async fn create_partitions(
        &self,
        tables: &[&str],
        times: &[Timestamp],
    ) -> Result<(), sqlx::Error> {
        let created: i64 = sqlx::query_scalar(ENSURE_PARTITIONS)
            .bind(tables)
            .bind(times)
            .bind(self.partition_interval.as_secs_f64())
            .fetch_one(&self.pool)
            .await?;
        if created > 0 {
            tracing::info!(exporter = %self.id, created, "created partitions");
        }
        Ok(())
    }

    /// Resource rows not yet known to be stored.
    fn new_resources(&self, rows: &ResourceRows) -> ResourceRows {
        let known = self
            .resources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut fresh = ResourceRows::default();
        for (i, id) in rows.resource_id.iter().enumerate() {
            if known.contains(id) {
                continue;
            }
            fresh.resource_id.push(*id);
            fresh.service_name.push(rows.service_name[i].clone());
            fresh.attributes.push(rows.attributes[i].clone());
            fresh
                .dropped_attributes_count
                .push(rows.dropped_attributes_count[i]);
        }
        fresh
    }

    fn remember_resources(&self, rows: &ResourceRows) {
        let mut known = self
            .resources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() + rows.resource_id.len() > RESOURCE_CACHE {
            known.clear();
        }
        known.extend(rows.resource_id.iter().copied());
    }

    /// Runs a write; when a partition turns out to be missing (dropped by another collector's
    /// retention, or a clipped range), forgets what it knew, creates partitions for every row's
    /// time, and tries once more.
    async fn with_partitions<F, Fut, T>(
        &self,
        family: &'static str,
        tables: &[&str],
        times: &[Timestamp],
        write: F,
    ) -> Result<T, ExportError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        self.ensure_partitions(family, tables, times)
            .await
            .map_err(|e| export_error("cannot create partitions", &e))?;
        match write().await {
            Err(e) if sqlstate(&e).as_deref() == Some(NO_PARTITION) => {
                self.partitions
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clear();
                let mut distinct = times.to_vec();
                distinct.sort_unstable();
                distinct.dedup();
                self.create_partitions(tables, &distinct)
                    .await
                    .map_err(|e| export_error("cannot create partitions", &e))?;
                write().await.map_err(|e| export_error("write failed", &e))
            }
            other => other.map_err(|e| export_error("write failed", &e)),
        }
    }
}

/// Creates partitions ahead and drops expired ones every quarter interval (at most hourly), once
/// the schema is ready, until `shutdown`.
async fn maintenance_loop(store: Arc<Store>, shutdown: CancellationToken) {
    let period = (store.partition_interval / 4).min(Duration::from_secs(3600));
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = shutdown.cancelled() => return,
        }
        if store.ready.get().is_none() {
            // The first export migrates and makes today's partitions; nothing to keep up yet.
            continue;
        }
        match store.maintain().await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                let retryable = sqlstate(&e).is_none_or(|c| retryable_sqlstate(&c));
                tracing::warn!(exporter = %store.id, error = %e, failures, retryable, "partition maintenance failed, will try again");
            }
        }
    }
}

/// Folds pending span statistics into the rollups every [`stats::FOLD_PERIOD`], once the schema
/// is ready, until `shutdown`. A failed fold leaves the rows pending (readers count them), and
/// the next one takes them.
async fn fold_loop(store: Arc<Store>, shutdown: CancellationToken) {
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = tokio::time::sleep(stats::FOLD_PERIOD) => {}
            () = shutdown.cancelled() => return,
        }
        if store.ready.get().is_none() {
            continue;
        }
        match stats::fold(&store.pool).await {
            Ok(moved) => {
                failures = 0;
                tracing::trace!(exporter = %store.id, ?moved, "span statistics folded");
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(exporter = %store.id, error = %e, failures, "folding span statistics failed, will try again");
            }
        }
    }
}

fn migrate_error(error: MigrateError) -> ExportError {
    match error {
        MigrateError::Execute(e) => export_error("migration failed", &e),
        MigrateError::ExecuteMigration(e, version) => {
            export_error(&format!("migration {version} failed"), &e)
        }
        other => ExportError::permanent(format!("cannot migrate the schema: {other}")),
    }
}

/// Per-exporter metrics beyond the helper's.
struct Metrics {
    write_duration: Histogram,
    duplicates: Counter,
}

impl Metrics {
    fn new(id: &str, signal: Signal) -> Self {
        let labels = [
            ("exporter", id.to_owned()),
            ("data_type", signal.as_str().to_owned()),
        ];
        Metrics {
            write_duration: metrics::histogram!(names::WRITE_DURATION, &labels),
            duplicates: metrics::counter!(names::DUPLICATES, &labels),
        }
    }
}

/// One per exporter id, for traces and logs alike: one pool, one maintenance task, one fold of
/// span statistics.
struct PostgresExporter {
    store: Arc<Store>,
    traces: Metrics,
    logs: Metrics,
}

/// The rows of one batch, ready to bind.
enum Rows {
    Traces(Box<TraceRows>),
    Logs(Box<LogRows>),
}

/// Decodes a batch and turns it into rows: all the CPU work of an export.
fn prepare(signal: Signal, data: &Bytes, promoted: &[String]) -> Result<Rows, ExportError> {
    let error = |e: prost::DecodeError| ExportError::permanent(format!("cannot decode batch: {e}"));
    match signal {
        Signal::Traces => {
            let request = ExportTraceServiceRequest::decode(data.clone()).map_err(error)?;
            Ok(Rows::Traces(Box::new(translate::traces(
                &request, promoted,
            ))))
        }
        Signal::Logs => {
            let request = ExportLogsServiceRequest::decode(data.clone()).map_err(error)?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            Ok(Rows::Logs(Box::new(translate::logs(&request, now))))
        }
        Signal::Metrics => Err(ExportError::permanent(
            "the postgres exporter does not store metrics",
        )),
    }
}

impl PostgresExporter {
    async fn write_traces(&self, rows: &TraceRows) -> Result<u64, ExportError> {
        let resources = self.store.new_resources(&rows.resources);
        let (spans, events, links) = (&rows.spans, &rows.events, &rows.links);
        let (inserted, _traces): (i64, i64) = self
            .store
            .with_partitions("spans", SPAN_TABLES, &spans.start_time, || {
                sqlx::query_as(INSERT_TRACES)
                    .bind(&resources.resource_id)
                    .bind(&resources.service_name)
                    .bind(&resources.attributes)
                    .bind(&resources.dropped_attributes_count)
                    .bind(&events.trace_id)
                    .bind(&events.span_id)
                    .bind(&events.span_start_time)
                    .bind(&events.event_index)
                    .bind(&events.time)
                    .bind(&events.name)
                    .bind(&events.attributes)
                    .bind(&events.dropped_attributes_count)
                    .bind(&links.trace_id)
                    .bind(&links.span_id)
                    .bind(&links.span_start_time)
                    .bind(&links.link_index)
                    .bind(&links.linked_trace_id)
                    .bind(&links.linked_span_id)
                    .bind(&links.trace_state)
                    .bind(&links.flags)
                    .bind(&links.attributes)
                    .bind(&links.dropped_attributes_count)
                    .bind(&spans.trace_id)
                    .bind(&spans.span_id)
                    .bind(&spans.parent_span_id)
                    .bind(&spans.trace_state)
                    .bind(&spans.flags)
                    .bind(&spans.name)
                    .bind(&spans.kind)
                    .bind(&spans.start_time)
                    .bind(&spans.end_time)
                    .bind(&spans.duration_ns)
                    .bind(&spans.status_code)
                    .bind(&spans.status_message)
                    .bind(&spans.service_name)
                    .bind(&spans.resource_id)
                    .bind(&spans.scope_name)
                    .bind(&spans.scope_version)
                    .bind(&spans.attributes)
                    .bind(&spans.dropped_attributes_count)
                    .bind(&spans.dropped_events_count)
                    .bind(&spans.dropped_links_count)
                    .bind(&rows.promoted_trace_id)
                    .bind(&rows.promoted_attributes)
                    .fetch_one(&self.store.pool)
            })
            .await?;
        self.store.remember_resources(&resources);
        Ok(spans.trace_id.len() as u64 - inserted.max(0) as u64)
    }

    async fn write_logs(&self, rows: &LogRows) -> Result<u64, ExportError> {
        let resources = self.store.new_resources(&rows.resources);
        let inserted: i64 = self
            .store
            .with_partitions("logs", LOG_TABLES, &rows.time, || {
                sqlx::query_scalar(INSERT_LOGS)
                    .bind(&resources.resource_id)
                    .bind(&resources.service_name)
                    .bind(&resources.attributes)
                    .bind(&resources.dropped_attributes_count)
                    .bind(&rows.time)
                    .bind(&rows.log_id)
                    .bind(&rows.observed_time)
                    .bind(&rows.severity_number)
                    .bind(&rows.severity_text)
                    .bind(&rows.body)
                    .bind(&rows.body_kind)
                    .bind(&rows.event_name)
                    .bind(&rows.trace_id)
                    .bind(&rows.span_id)
                    .bind(&rows.flags)
                    .bind(&rows.service_name)
                    .bind(&rows.resource_id)
                    .bind(&rows.scope_name)
                    .bind(&rows.scope_version)
                    .bind(&rows.attributes)
                    .bind(&rows.dropped_attributes_count)
                    .fetch_one(&self.store.pool)
            })
            .await?;
        self.store.remember_resources(&resources);
        Ok(rows.time.len() as u64 - inserted.max(0) as u64)
    }
}

#[async_trait]
impl Exporter for PostgresExporter {
    /// The rows of a batch, ready to bind: all the CPU work of an export, done once.
    type Encoded = (Signal, Rows);

    fn encode(&self, batch: &Batch) -> Result<(Signal, Rows), ExportError> {
        Ok((
            batch.signal(),
            prepare(batch.signal(), batch.data(), &self.store.promoted)?,
        ))
    }

    async fn send(&self, (signal, rows): &(Signal, Rows)) -> Result<(), ExportError> {
        self.store.ensure_ready().await?;
        let started = Instant::now();
        let metrics = if *signal == Signal::Logs {
            &self.logs
        } else {
            &self.traces
        };
        let duplicates = match rows {
            Rows::Traces(rows) => self.write_traces(rows).await?,
            Rows::Logs(rows) => self.write_logs(rows).await?,
        };
        metrics
            .write_duration
            .record(started.elapsed().as_secs_f64());
        if duplicates > 0 {
            metrics.duplicates.increment(duplicates);
        }
        Ok(())
    }

    fn start(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(maintenance_loop(Arc::clone(&self.store), shutdown.clone())),
            tokio::spawn(fold_loop(Arc::clone(&self.store), shutdown)),
        ]
    }
}

/// Builds `postgres` exporters.
#[derive(Debug, Default)]
pub struct PostgresExporterFactory;

impl ExporterFactory for PostgresExporterFactory {
    fn type_name(&self) -> &'static str {
        "postgres"
    }

    fn signals(&self) -> &'static [&'static str] {
        &["traces", "logs"]
    }

    fn helper_defaults(&self) -> Option<HelperSettings> {
        Some(crate::config::helper_defaults())
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        check_typed(path, config, |c: &PostgresConfig| c.check(path))
    }

    fn build(
        &self,
        id: &str,
        config: &Value,
        helper: &mut HelperSettings,
        context: &sluice_core::ExporterContext,
    ) -> Result<BuiltExporter, BuildError> {
        let path = format!("exporters.{id}");
        let c: PostgresConfig = typed(&path, config)?;
        let options = c
            .connect_options()
            .map_err(|m| BuildError::Config(Problem::error(format!("{path}.endpoint"), m)))?;
        let query_options = c
            .query_options()
            .map_err(|m| BuildError::Config(Problem::error(format!("{path}.query.endpoint"), m)))?;
        // The reads' own pool, lazy too: no connection is opened until something reads.
        let readers = PgPoolOptions::new()
            .max_connections(c.query.max_connections)
            .acquire_timeout(c.pool.connect_timeout.get())
            .connect_lazy_with(query_options);
        context
            .stores
            .register(id, Arc::new(crate::reader::PgReader::new(readers)));
        c.tighten(helper);
        // Lazy: the collector starts, and stays up, while PostgreSQL is away.
        let pool = PgPoolOptions::new()
            .max_connections(c.pool.max_connections)
            .acquire_timeout(c.pool.connect_timeout.get())
            .connect_lazy_with(options);
        tracing::debug!(exporter = %id, endpoint = %redacted(&c.endpoint), "postgres pool created");
        let store = Arc::new(Store {
            id: id.to_owned(),
            pool,
            migrate: c.migrate,
            retention: c.retention.get(),
            partition_interval: c.partition_interval(),
            promoted: c.promoted_attributes.clone(),
            ready: OnceCell::new(),
            partitions: Mutex::new(HashSet::new()),
            resources: Mutex::new(HashSet::new()),
        });
        Ok(BuiltExporter::Push(Arc::new(PostgresExporter {
            store,
            traces: Metrics::new(id, Signal::Traces),
            logs: Metrics::new(id, Signal::Logs),
        })))
    }
}
