-- Sluice's PostgreSQL schema for traces and logs (applied by the `postgres` exporter when
-- `migrate: true`, or by hand: `psql -f migrations/0001_traces_and_logs.sql`).
--
-- Choices, and why:
-- * Ids are lowercase hex text in the C collation, so a person can type
--   `WHERE trace_id = '4bf92f3577b34da6a3ce929d0e0e4736'` and compare them with what logs and UIs
--   show. (bytea would be 16 bytes smaller per id, but could not be typed that way.)
-- * Times are timestamptz (microseconds, PostgreSQL's resolution); span durations are kept exactly,
--   in nanoseconds, in `duration_ns`.
-- * Attributes are JSONB (GIN-indexed with jsonb_path_ops: cheaper to maintain than jsonb_ops and
--   serves `@>` containment), in the OTLP/JSON value convention: strings, numbers, booleans,
--   arrays and maps as themselves; bytes as base64 strings; NaN and infinities as the strings
--   "NaN", "Infinity", "-Infinity"; an empty value as null. `span_attributes` is a view over them.
-- * spans, span_events, span_links and logs are range-partitioned by time; the exporter creates
--   partitions ahead of need and drops whole partitions for retention (no row-by-row DELETE, no
--   bloat). `traces` has one row per trace, merged as its spans arrive, so it is not partitioned;
--   retention deletes the rows whose spans are all gone.
-- * Every table has a key that makes writes idempotent: the exporter inserts with
--   `ON CONFLICT DO NOTHING`, so a batch replayed after a timeout or a crash adds nothing.

CREATE TABLE resources (
    -- First 8 bytes of SHA-256 over the resource's attributes as JSON.
    resource_id bigint PRIMARY KEY,
    service_name text,
    attributes jsonb NOT NULL,
    dropped_attributes_count integer NOT NULL DEFAULT 0,
    first_seen timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resources_service_name ON resources (service_name);

CREATE TABLE traces (
    trace_id text COLLATE "C" PRIMARY KEY,
    root_service_name text,
    root_span_name text,
    start_time timestamptz NOT NULL,
    end_time timestamptz NOT NULL,
    duration_ns bigint GENERATED ALWAYS AS
        ((extract(epoch FROM end_time - start_time) * 1000000000)::bigint) STORED,
    span_count integer NOT NULL,
    error_count integer NOT NULL,
    ok_count integer NOT NULL,
    status text GENERATED ALWAYS AS
        (CASE WHEN error_count > 0 THEN 'error' WHEN ok_count > 0 THEN 'ok' ELSE 'unset' END) STORED,
    -- The exporter's `promoted_attributes`, taken from the trace's spans.
    attributes jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX traces_start_time ON traces (start_time DESC);
CREATE INDEX traces_service_start ON traces (root_service_name, start_time DESC);
CREATE INDEX traces_status_start ON traces (status, start_time DESC);
CREATE INDEX traces_duration ON traces (duration_ns DESC);
CREATE INDEX traces_end_time ON traces (end_time);
CREATE INDEX traces_attributes ON traces USING gin (attributes jsonb_path_ops);

CREATE TABLE spans (
    trace_id text COLLATE "C" NOT NULL,
    span_id text COLLATE "C" NOT NULL,
    -- NULL for a root span.
    parent_span_id text COLLATE "C",
    trace_state text NOT NULL DEFAULT '',
    flags integer NOT NULL DEFAULT 0,
    name text NOT NULL,
    -- unspecified | internal | server | client | producer | consumer
    kind text NOT NULL,
    start_time timestamptz NOT NULL,
    end_time timestamptz NOT NULL,
    duration_ns bigint NOT NULL,
    -- unset | ok | error
    status_code text NOT NULL,
    status_message text NOT NULL DEFAULT '',
    service_name text,
    resource_id bigint NOT NULL,
    scope_name text NOT NULL DEFAULT '',
    scope_version text NOT NULL DEFAULT '',
    attributes jsonb NOT NULL DEFAULT '{}',
    dropped_attributes_count integer NOT NULL DEFAULT 0,
    dropped_events_count integer NOT NULL DEFAULT 0,
    dropped_links_count integer NOT NULL DEFAULT 0,
    PRIMARY KEY (trace_id, span_id, start_time)
) PARTITION BY RANGE (start_time);
CREATE INDEX spans_name_start ON spans (name, start_time DESC);
CREATE INDEX spans_service_name_start ON spans (service_name, name, start_time DESC);
-- Spans arrive roughly in time order: a BRIN index serves time ranges within a partition at a
-- fraction of a btree's write cost.
CREATE INDEX spans_start_time ON spans USING brin (start_time);
CREATE INDEX spans_attributes ON spans USING gin (attributes jsonb_path_ops);

-- Partitioned by the start time of the span they belong to, so they live and die with it.
CREATE TABLE span_events (
    trace_id text COLLATE "C" NOT NULL,
    span_id text COLLATE "C" NOT NULL,
    span_start_time timestamptz NOT NULL,
    -- The event's position in its span.
    event_index integer NOT NULL,
    time timestamptz NOT NULL,
    name text NOT NULL,
    attributes jsonb NOT NULL DEFAULT '{}',
    dropped_attributes_count integer NOT NULL DEFAULT 0,
    PRIMARY KEY (trace_id, span_id, span_start_time, event_index)
) PARTITION BY RANGE (span_start_time);
CREATE INDEX span_events_name_time ON span_events (name, time DESC);

CREATE TABLE span_links (
    trace_id text COLLATE "C" NOT NULL,
    span_id text COLLATE "C" NOT NULL,
    span_start_time timestamptz NOT NULL,
    link_index integer NOT NULL,
    linked_trace_id text COLLATE "C" NOT NULL,
    linked_span_id text COLLATE "C" NOT NULL,
    trace_state text NOT NULL DEFAULT '',
    flags integer NOT NULL DEFAULT 0,
    attributes jsonb NOT NULL DEFAULT '{}',
    dropped_attributes_count integer NOT NULL DEFAULT 0,
    PRIMARY KEY (trace_id, span_id, span_start_time, link_index)
) PARTITION BY RANGE (span_start_time);
CREATE INDEX span_links_linked ON span_links (linked_trace_id, linked_span_id);

CREATE TABLE logs (
    -- The record's time, or its observed time when the record has none.
    time timestamptz NOT NULL,
    -- First 8 bytes of SHA-256 over the record and its resource and scope: replays collide.
    log_id bigint NOT NULL,
    observed_time timestamptz,
    severity_number smallint NOT NULL DEFAULT 0,
    severity_text text NOT NULL DEFAULT '',
    -- A string body as it is; any other body as JSON text (see body_kind).
    body text,
    -- string | int | double | bool | bytes | array | map | empty
    body_kind text NOT NULL,
    event_name text NOT NULL DEFAULT '',
    trace_id text COLLATE "C",
    span_id text COLLATE "C",
    flags integer NOT NULL DEFAULT 0,
    service_name text,
    resource_id bigint NOT NULL,
    scope_name text NOT NULL DEFAULT '',
    scope_version text NOT NULL DEFAULT '',
    attributes jsonb NOT NULL DEFAULT '{}',
    dropped_attributes_count integer NOT NULL DEFAULT 0,
    PRIMARY KEY (time, log_id)
) PARTITION BY RANGE (time);
CREATE INDEX logs_severity_time ON logs (severity_number, time DESC);
CREATE INDEX logs_service_time ON logs (service_name, time DESC);
CREATE INDEX logs_trace_id ON logs (trace_id) WHERE trace_id IS NOT NULL;

-- One row per span attribute: the key / value / value_type shape, computed from spans.attributes.
CREATE VIEW span_attributes AS
SELECT s.trace_id,
       s.span_id,
       s.start_time,
       a.key,
       a.value,
       CASE jsonb_typeof(a.value)
           WHEN 'string' THEN 'string'
           WHEN 'boolean' THEN 'bool'
           WHEN 'number' THEN CASE WHEN a.value::text ~ '^-?[0-9]+$' THEN 'int' ELSE 'double' END
           WHEN 'array' THEN 'array'
           WHEN 'object' THEN 'map'
           ELSE 'empty'
       END AS value_type
FROM spans s, jsonb_each(s.attributes) a;

-- The partitions of a partitioned table, with their bounds.
CREATE FUNCTION sluice_partitions(parent regclass)
RETURNS TABLE (partition regclass, lower_bound timestamptz, upper_bound timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT c.oid::regclass, m[1]::timestamptz, m[2]::timestamptz
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid,
         regexp_match(pg_get_expr(c.relpartbound, c.oid),
                      'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)') AS m
    WHERE i.inhparent = parent
$$;

-- Makes sure a partition of `parent` holds `at`: the interval-aligned range around it (aligned to
-- the Unix epoch, so daily partitions start at midnight UTC), clipped where partitions made with
-- another interval already exist. Returns true when it created one. Serialized with an advisory
-- lock, so several collectors can share a database.
CREATE FUNCTION sluice_ensure_partition(parent regclass, at timestamptz, step interval)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    step_s double precision := extract(epoch FROM step);
    lo timestamptz;
    hi timestamptz;
    clip timestamptz;
    name text;
BEGIN
    IF step_s < 60 THEN
        RAISE EXCEPTION 'partition interval % is shorter than a minute', step;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('sluice_partitions'), parent::oid::int);
    IF EXISTS (SELECT 1 FROM sluice_partitions(parent) p
               WHERE p.lower_bound <= at AND at < p.upper_bound) THEN
        RETURN false;
    END IF;
    lo := to_timestamp(floor(extract(epoch FROM at) / step_s) * step_s);
    hi := lo + step;
    SELECT max(p.upper_bound) INTO clip FROM sluice_partitions(parent) p
        WHERE p.upper_bound > lo AND p.upper_bound <= at;
    IF clip IS NOT NULL THEN lo := clip; END IF;
    SELECT min(p.lower_bound) INTO clip FROM sluice_partitions(parent) p
        WHERE p.lower_bound < hi AND p.lower_bound > at;
    IF clip IS NOT NULL THEN hi := clip; END IF;
    name := (SELECT c.relname FROM pg_class c WHERE c.oid = parent)
        || '_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MISS');
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                   (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.oid = parent),
                   name, parent, lo, hi);
    RETURN true;
END
$$;

-- Drops the partitions of `parent` whose whole range is older than `horizon`; returns how many.
CREATE FUNCTION sluice_drop_partitions(parent regclass, horizon timestamptz)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    p record;
    dropped integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('sluice_partitions'), parent::oid::int);
    FOR p IN SELECT * FROM sluice_partitions(parent) WHERE upper_bound <= horizon LOOP
        EXECUTE format('DROP TABLE %s', p.partition);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;
