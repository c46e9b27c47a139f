-- Rollups of spans per minute and per hour, for the query service's per-operation statistics
-- (count, errors, p50/p95/p99) over long windows without reading every span.
--
-- Choices, and why:
-- * Counts are exact. Each trace batch's statement appends one `span_stats_pending` row per
--   minute, service and span name from the spans it actually inserted (`RETURNING`), so a replayed
--   batch adds nothing, as it adds no spans. The exporter folds pending rows into
--   `span_stats_minute` and `span_stats_hour` every few seconds, in one transaction under an
--   advisory lock (several collectors can share a database); a reader adds the pending rows not
--   yet folded. Appending instead of updating a per-minute row keeps concurrent batches from
--   queueing on the same hot row.
-- * Durations are kept as a histogram: bucket i holds durations in (2^((i-1)/8), 2^(i/8)]
--   nanoseconds (the bucket layout of Prometheus's native histograms at schema 3); bucket 0 holds
--   durations of at most 1 ns. A percentile read from it is reported as the bucket's
--   2*2^(i/8)/(1+2^(1/8)), within 4.33% of the exact value (percentile_disc's). A histogram is
--   two arrays: the buckets used, ascending, and their counts.
-- * Time keys are whole UTC minutes and hours; service_name is '' when spans have none.
-- * Rows are deleted with the spans' partitions by retention, so statistics and stored spans
--   cover the same time.

CREATE FUNCTION sluice_duration_bucket(duration_ns bigint) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN duration_ns <= 1 THEN 0
                ELSE ceil(ln(duration_ns::double precision) * (8 / ln(2::double precision)))
           END::smallint
$$;

CREATE TABLE span_stats_pending (
    minute timestamptz NOT NULL,
    service_name text NOT NULL,
    name text NOT NULL,
    spans bigint NOT NULL,
    errors bigint NOT NULL,
    buckets smallint[] NOT NULL,
    counts bigint[] NOT NULL
);

CREATE TABLE span_stats_minute (
    minute timestamptz NOT NULL,
    service_name text NOT NULL,
    name text NOT NULL,
    spans bigint NOT NULL,
    errors bigint NOT NULL,
    buckets smallint[] NOT NULL,
    counts bigint[] NOT NULL,
    PRIMARY KEY (minute, service_name, name)
);

CREATE TABLE span_stats_hour (
    hour timestamptz NOT NULL,
    service_name text NOT NULL,
    name text NOT NULL,
    spans bigint NOT NULL,
    errors bigint NOT NULL,
    buckets smallint[] NOT NULL,
    counts bigint[] NOT NULL,
    PRIMARY KEY (hour, service_name, name)
);

-- Spans stored before this migration.
INSERT INTO span_stats_minute
SELECT minute, service_name, name, sum(n)::bigint, sum(e)::bigint,
       array_agg(bucket ORDER BY bucket), array_agg(n ORDER BY bucket)
FROM (SELECT date_trunc('minute', start_time, 'UTC') AS minute,
             coalesce(service_name, '') AS service_name, name,
             sluice_duration_bucket(duration_ns) AS bucket, count(*) AS n,
             count(*) FILTER (WHERE status_code = 'error') AS e
      FROM spans GROUP BY 1, 2, 3, 4) AS b
GROUP BY 1, 2, 3;

INSERT INTO span_stats_hour
SELECT hour, service_name, name, sum(n)::bigint, sum(e)::bigint,
       array_agg(bucket ORDER BY bucket), array_agg(n ORDER BY bucket)
FROM (SELECT date_trunc('hour', start_time, 'UTC') AS hour,
             coalesce(service_name, '') AS service_name, name,
             sluice_duration_bucket(duration_ns) AS bucket, count(*) AS n,
             count(*) FILTER (WHERE status_code = 'error') AS e
      FROM spans GROUP BY 1, 2, 3, 4) AS b
GROUP BY 1, 2, 3;
