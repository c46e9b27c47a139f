#!/usr/bin/env bash
# PostgreSQL ingest: sluice's `postgres` exporter against PostgreSQL's own COPY, on the same rows,
# in the same run, on the same throwaway cluster.
#
#   bench/postgres.sh           release build, REPS (3) alternating reps of DURATION (10) s each;
#                               prints one JSON line per run and a summary (target/bench-postgres/)
#   bench/postgres.sh --smoke   debug build, one 2 s rep, asserts that spans were stored and a
#                               ratio came out; no report (target/bench-postgres-smoke/)
#
# Per rep:
#  1. sluice: a fresh database; sluice (OTLP/gRPC -> batch 1000 -> postgres exporter with
#     CONNECTIONS=4 connections and as many consumers, queue of 100 batches) migrates it on first
#     connect. sluice-loadgen offers RATE spans/s (default 40000, about twice what the exporter
#     stores on a 2-core machine) for DURATION, so the exporter queue fills and the excess is
#     refused (back-pressure): the exporter is the bottleneck. Then we wait until
#     `otelcol_exporter_sent_spans` stops growing and the queue is empty.
#     Rate = spans stored / (first request -> last batch written).
#  2. COPY: the five tables sluice wrote (resources, traces, spans, span_events, span_links) are
#     dumped with server-side `COPY ... TO '<file>' WITH (FORMAT binary)`; a second fresh database
#     gets migrations/0001 through psql and the same daily partitions; then one psql session runs
#     server-side `COPY <table> FROM '<file>' WITH (FORMAT binary)` for the five tables (each COPY
#     its own transaction). Rate = spans / sum of the five COPY statement times (psql \timing).
#     The COPY target has every index the migration creates, as sluice's target does; its schema
#     and partitions are made before the clock starts (sluice's wall time includes its migration).
#  Both databases are dropped at the end of the rep.
#
# Knobs: REPS DURATION RATE POOL ITEMS CONCURRENCY CONNECTIONS OUT (environment).
#
# Why the loadgen runs at a fixed rate with a pool as large as the run: its requests are generated
# once, up front, and cycled (`--pool`, default 32 requests, so 3200 distinct spans); every span id,
# trace id and timestamp repeats each time the pool wraps, and the exporter's idempotent inserts
# (ON CONFLICT DO NOTHING) then store nothing. A closed loop refused by back-pressure spins fast
# (thousands of refused requests a second), so no affordable pool covers it; a fixed rate bounds
# the number of requests, and POOL = RATE * DURATION / ITEMS (+5%) means no request is sent twice.
# The script checks `otelcol_exporter_postgres_duplicate_items` and the stored row count.
#
# CPU: sluice from /proc/<pid>/stat; PostgreSQL = utime + stime of the postmaster's children
# (backends, walwriter, checkpointer, autovacuum, ...) plus the postmaster's own and its reaped
# children's (cutime + cstime), so backends that exit between the two readings still count.
# Pinning: only the load generator, on core 0 (taskset); sluice and PostgreSQL are not pinned.
# A CHECKPOINT is issued before each timed phase, so neither starts with the other's dirty pages.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. bench/lib.sh

smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
REPS=${REPS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-40000}
ITEMS=${ITEMS:-100}
CONCURRENCY=${CONCURRENCY:-8}
CONNECTIONS=${CONNECTIONS:-4}   # the exporter's pool.max_connections and sending_queue.num_consumers

if [ $smoke = 1 ]; then
  REPS=1; DURATION=2; RATE=${SMOKE_RATE:-5000}
  out=${OUT:-$root/target/bench-postgres-smoke}
  pgdir=$root/target/bench-pg-smoke
else
  out=${OUT:-$root/target/bench-postgres}
  pgdir=$root/target/bench-pg
fi
build_binaries
POOL=${POOL:-$(python3 -c "import math; print(math.ceil($RATE * $DURATION / $ITEMS * 1.05) + 16)")}
rm -rf "$out"
mkdir -p "$out"

if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  load_cpu=(taskset -c 0); pinning="loadgen on core 0, sluice and PostgreSQL unpinned"
else
  load_cpu=(); pinning="nothing pinned"
fi


sluice_pid=""; poll_pid=""
cleanup() {
  [ -n "$poll_pid" ] && kill "$poll_pid" 2>/dev/null || true
  [ -n "$sluice_pid" ] && kill "$sluice_pid" 2>/dev/null || true
  scripts/pg.sh stop "$pgdir" || true
}
trap cleanup EXIT

eval "$(scripts/pg.sh start "$pgdir")"
base=${DATABASE_URL%/*}
pm_pid_file=$SLUICE_PG_DIR/data/postmaster.pid
q() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 "$@"; }

# CPU seconds of the whole PostgreSQL server (see the header).
pg_cpu() {
  python3 - "$pm_pid_file" <<'EOF'
import os, sys
pm = int(open(sys.argv[1]).readline())
hz = os.sysconf("SC_CLK_TCK")
def fields(pid):
    s = open(f"/proc/{pid}/stat").read()
    return s[s.rindex(")") + 2:].split()   # fields[0] is stat field 3 (state)
f = fields(pm)
ticks = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])   # utime stime cutime cstime
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        f = fields(d)
    except OSError:
        continue
    if int(f[1]) == pm:
        ticks += int(f[11]) + int(f[12])
print(ticks / hz)
EOF
}

# Polls sluice's self-metrics until the loadgen is done ($2 exists) and everything is written;
# writes the time of the last growth of otelcol_exporter_sent_spans and the final counters.
cat > "$out/poll.py" <<'EOF'
import json, re, sys, time, os, urllib.request
url, done_flag, out = sys.argv[1:4]
line = re.compile(r'^([a-z_]+)(\{[^}]*\})?\s+(\S+)$')
def scrape():
    m = {}
    for l in urllib.request.urlopen(url, timeout=2).read().decode().splitlines():
        g = line.match(l)
        if g:
            m[g.group(1)] = m.get(g.group(1), 0.0) + float(g.group(3))
    return m
sent, t_last, m, t_done = -1.0, None, {}, None
deadline = time.time() + 600
while time.time() < deadline:
    try:
        m = scrape()
    except Exception:
        time.sleep(0.025); continue
    now = time.time()
    s = m.get("otelcol_exporter_sent_spans", 0.0)
    if s != sent:
        sent, t_last = s, now
    if os.path.exists(done_flag):
        t_done = t_done or now
        idle = m.get("otelcol_exporter_queue_size", 0.0) == 0 and m.get("otelcol_exporter_in_flight_requests", 0.0) == 0
        settled = sent + m.get("otelcol_exporter_send_failed_spans", 0.0) >= m.get("otelcol_receiver_accepted_spans", 0.0)
        if idle and ((settled and now - t_last > 0.5) or now - t_last > 5):
            break
    time.sleep(0.025)
json.dump({"t_last_sent": t_last, "drained": time.time() < deadline, "metrics": m}, open(out, "w"))
EOF

# Runs a command, then records its exit time, its CPU seconds and its JSON output.
cat > "$out/timed.py" <<'EOF'
import json, resource, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
p = subprocess.run(cmd, stdout=subprocess.PIPE, check=True)
t = time.time()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
s = json.loads(p.stdout)
s["t_exit"] = t
s["cpu_seconds"] = ru.ru_utime + ru.ru_stime
json.dump(s, open(out, "w"))
EOF

TRACES_COLS="trace_id, root_service_name, root_span_name, start_time, end_time, span_count, error_count, ok_count, attributes"
RESOURCES_COLS="resource_id, service_name, attributes, dropped_attributes_count, first_seen"

run_sluice() {
  local rep=$1 db=$2
  q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  local grpc mport
  grpc=$(free_port); mport=$(free_port)
  cat > "$out/sluice.yaml" <<EOF
receivers:
  otlp:
    protocols:
      grpc: { endpoint: 127.0.0.1:$grpc }
processors:
  batch: { send_batch_size: 1000, timeout: 200ms }
exporters:
  postgres:
    endpoint: $base/$db
    pool: { max_connections: $CONNECTIONS }
    sending_queue: { num_consumers: $CONNECTIONS, queue_size: 100 }
service:
  pipelines:
    traces: { receivers: [otlp], processors: [batch], exporters: [postgres] }
  telemetry: { metrics: { address: "127.0.0.1:$mport" }, logs: { level: warn } }
EOF
  "$bin/sluice" --config "$out/sluice.yaml" > "$out/sluice-r$rep.log" 2>&1 &
  sluice_pid=$!
  wait_port "$grpc"; wait_port "$mport"
  q "$DATABASE_URL" -c "CHECKPOINT"
  local flag=$out/loadgen-done-r$rep
  rm -f "$flag"
  python3 "$out/poll.py" "http://127.0.0.1:$mport/metrics" "$flag" "$out/poll-r$rep.json" &
  poll_pid=$!
  local pg0 s0 pg1 s1
  pg0=$(pg_cpu); s0=$(cpu_seconds $sluice_pid)
  python3 "$out/timed.py" "$out/send-r$rep.json" "${load_cpu[@]}" "$bin/sluice-loadgen" send \
    --signal traces --protocol grpc --endpoint "http://127.0.0.1:$grpc" --duration "${DURATION}s" \
    --items "$ITEMS" --concurrency "$CONCURRENCY" --rate "$RATE" --pool "$POOL"
  touch "$flag"
  wait "$poll_pid"; poll_pid=""
  pg1=$(pg_cpu); s1=$(cpu_seconds $sluice_pid)
  kill "$sluice_pid"; wait "$sluice_pid" 2>/dev/null || true; sluice_pid=""
  local counts
  counts=$(q -tA -F' ' "$base/$db" -c "SELECT (SELECT count(*) FROM spans), (SELECT count(DISTINCT (trace_id, span_id)) FROM spans), (SELECT count(*) FROM span_events), (SELECT count(*) FROM span_links), (SELECT count(*) FROM traces), (SELECT count(*) FROM resources)")
  python3 - "$rep" "$out/send-r$rep.json" "$out/poll-r$rep.json" "$pg0" "$pg1" "$s0" "$s1" $counts >> "$out/runs.jsonl" <<'EOF'
import json, sys
rep, send, poll, pg0, pg1, s0, s1, spans, distinct, events, links, traces, resources = sys.argv[1:]
s, p = json.load(open(send)), json.load(open(poll))
m = p["metrics"]
t_start = s["t_exit"] - s["seconds"]
wall = p["t_last_sent"] - t_start
spans = int(spans)
print(json.dumps({
    "rep": int(rep), "run": "sluice", "spans": spans, "distinct_span_ids": int(distinct),
    "span_events": int(events), "span_links": int(links), "traces": int(traces), "resources": int(resources),
    "wall_seconds": round(wall, 3), "spans_per_second": round(spans / wall, 1),
    "sluice_cpu_seconds": round(float(s1) - float(s0), 2), "postgres_cpu_seconds": round(float(pg1) - float(pg0), 2),
    "loadgen_cpu_seconds": round(s["cpu_seconds"], 2),
    "offered_spans": s["items_sent"], "accepted_spans": s["items_accepted"], "refused": s["refused"], "errors": s["errors"],
    "exporter_sent_spans": int(m.get("otelcol_exporter_sent_spans", 0)),
    "duplicate_spans": int(m.get("otelcol_exporter_postgres_duplicate_items", 0)),
    "send_failed_spans": int(m.get("otelcol_exporter_send_failed_spans", 0)),
    "drained": p["drained"],
}))
EOF
  tail -1 "$out/runs.jsonl"
}

run_copy() {
  local rep=$1 src=$2 db=$3
  local dir=$SLUICE_PG_DIR/copy-r$rep
  rm -rf "$dir"; mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  q "$base/$src" \
    -c "COPY resources ($RESOURCES_COLS) TO '$dir/resources' WITH (FORMAT binary)" \
    -c "COPY traces ($TRACES_COLS) TO '$dir/traces' WITH (FORMAT binary)" \
    -c "COPY (SELECT * FROM spans) TO '$dir/spans' WITH (FORMAT binary)" \
    -c "COPY (SELECT * FROM span_events) TO '$dir/span_events' WITH (FORMAT binary)" \
    -c "COPY (SELECT * FROM span_links) TO '$dir/span_links' WITH (FORMAT binary)"
  q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  q "$base/$db" -f migrations/0001_traces_and_logs.sql > /dev/null
  local lo
  for lo in $(q -tA "$base/$src" -c "SELECT extract(epoch FROM lower_bound)::bigint FROM sluice_partitions('spans') ORDER BY 1"); do
    q "$base/$db" -c "SELECT sluice_ensure_partition(t::regclass, to_timestamp($lo), '1 day') FROM unnest(array['spans', 'span_events', 'span_links']) AS t" > /dev/null
  done
  local bounds="SELECT string_agg(format('%s %s %s', split_part(partition::text, '_p', 1), lower_bound, upper_bound), ',' ORDER BY 1) FROM (SELECT * FROM sluice_partitions('spans') UNION ALL SELECT * FROM sluice_partitions('span_events') UNION ALL SELECT * FROM sluice_partitions('span_links')) p"
  [ "$(q -tA "$base/$src" -c "$bounds")" = "$(q -tA "$base/$db" -c "$bounds")" ] \
    || { echo "partitions differ between $src and $db" >&2; exit 1; }
  q "$DATABASE_URL" -c "CHECKPOINT"
  local pg0 pg1
  pg0=$(pg_cpu)
  python3 - "$out/copy-r$rep.log" psql -X -v ON_ERROR_STOP=1 "$base/$db" > "$out/copy-r$rep.time" <<EOF
import subprocess, sys, time
script = r"""\\timing on
COPY resources ($RESOURCES_COLS) FROM '$dir/resources' WITH (FORMAT binary);
COPY traces ($TRACES_COLS) FROM '$dir/traces' WITH (FORMAT binary);
COPY spans FROM '$dir/spans' WITH (FORMAT binary);
COPY span_events FROM '$dir/span_events' WITH (FORMAT binary);
COPY span_links FROM '$dir/span_links' WITH (FORMAT binary);
"""
t0 = time.time()
p = subprocess.run(sys.argv[2:], input=script.encode(), stdout=open(sys.argv[1], "wb"), stderr=subprocess.STDOUT)
print(time.time() - t0)
sys.exit(p.returncode)
EOF
  pg1=$(pg_cpu)
  local counts bytes
  counts=$(q -tA -F' ' "$base/$db" -c "SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM span_events), (SELECT count(*) FROM span_links), (SELECT count(*) FROM traces), (SELECT count(*) FROM resources)")
  bytes=$(du -sb "$dir" | cut -f1)
  python3 - "$rep" "$out/copy-r$rep.log" "$(cat "$out/copy-r$rep.time")" "$pg0" "$pg1" "$bytes" $counts >> "$out/runs.jsonl" <<'EOF'
import json, re, sys
rep, log, session, pg0, pg1, nbytes, spans, events, links, traces, resources = sys.argv[1:]
text = open(log).read()
times = [float(t) / 1000 for t in re.findall(r"Time: ([0-9.]+) ms", text)]
assert len(times) == 5 and text.count("COPY ") == 5, f"unexpected psql output: {text}"
tables = ["resources", "traces", "spans", "span_events", "span_links"]
total = sum(times)
spans = int(spans)
print(json.dumps({
    "rep": int(rep), "run": "copy", "spans": spans, "span_events": int(events), "span_links": int(links),
    "traces": int(traces), "resources": int(resources),
    "copy_seconds": round(total, 3), "psql_session_seconds": round(float(session), 3),
    "table_seconds": {t: round(s, 3) for t, s in zip(tables, times)},
    "spans_per_second": round(spans / total, 1),
    "postgres_cpu_seconds": round(float(pg1) - float(pg0), 2), "file_mib": round(int(nbytes) / 2**20, 1),
}))
EOF
  tail -1 "$out/runs.jsonl"
  rm -rf "$dir"
}

echo "bench/postgres.sh: REPS=$REPS DURATION=$DURATION RATE=$RATE POOL=$POOL ITEMS=$ITEMS CONCURRENCY=$CONCURRENCY CONNECTIONS=$CONNECTIONS; $pinning; $bin" >&2
: > "$out/runs.jsonl"
for rep in $(seq 1 "$REPS"); do
  run_sluice "$rep" "sluice_r$rep"
  run_copy "$rep" "sluice_r$rep" "copy_r$rep"
  q "$DATABASE_URL" -c "DROP DATABASE sluice_r$rep" -c "DROP DATABASE copy_r$rep"
done

python3 - "$out/runs.jsonl" "$smoke" "$pinning" > "$out/summary.json" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
smoke = sys.argv[2] == "1"
sl = [r for r in runs if r["run"] == "sluice"]
cp = [r for r in runs if r["run"] == "copy"]
med = lambda rs, k: statistics.median(r[k] for r in rs)
for s, c in zip(sl, cp):
    assert s["spans"] == c["spans"] and s["span_events"] == c["span_events"] and s["span_links"] == c["span_links"], (s, c)
sluice_rate, copy_rate = med(sl, "spans_per_second"), med(cp, "spans_per_second")
per100k = lambda rs, k: statistics.median(r[k] / r["spans"] * 1e5 for r in rs)
summary = {
    "reps": len(sl),
    "sluice_spans_per_second": sluice_rate,
    "copy_spans_per_second": copy_rate,
    "ratio": sluice_rate / copy_rate,
    "ratio_per_rep_median": statistics.median(s["spans_per_second"] / c["spans_per_second"] for s, c in zip(sl, cp)),
    "target": 0.7,
    "spans_stored": med(sl, "spans"),
    "sluice_wall_seconds": med(sl, "wall_seconds"),
    "copy_seconds": med(cp, "copy_seconds"),
    "cpu_seconds_per_100k_spans": {
        "sluice_run": {"sluice": per100k(sl, "sluice_cpu_seconds"), "postgres": per100k(sl, "postgres_cpu_seconds"),
                       "loadgen": per100k(sl, "loadgen_cpu_seconds")},
        "copy_run": {"postgres": per100k(cp, "postgres_cpu_seconds")},
    },
    "cpu_cores_busy": {
        "sluice_run": {"sluice": med(sl, "sluice_cpu_seconds") / med(sl, "wall_seconds"),
                       "postgres": med(sl, "postgres_cpu_seconds") / med(sl, "wall_seconds")},
        "copy_run": {"postgres": med(cp, "postgres_cpu_seconds") / med(cp, "copy_seconds")},
    },
    "copy_table_seconds": {t: statistics.median(r["table_seconds"][t] for r in cp) for t in cp[0]["table_seconds"]},
    "duplicate_spans": sum(r["duplicate_spans"] for r in sl),
    "distinct_equals_stored": all(r["distinct_span_ids"] == r["spans"] for r in sl),
    "saturated": all(sum(r["refused"].values()) > 0 for r in sl),
    "pinning": sys.argv[3],
}
print(json.dumps(summary, indent=1))
if smoke:
    assert summary["spans_stored"] > 0, "no spans stored"
    assert summary["ratio"] > 0 and summary["ratio"] == summary["ratio"], "no ratio"
EOF
python3 - "$out/summary.json" "$smoke" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
c = s["cpu_seconds_per_100k_spans"]
tag = "bench/postgres.sh --smoke (debug build)" if sys.argv[2] == "1" else "bench/postgres.sh"
print(f"{tag}: median over {s['reps']} reps, {s['spans_stored']:.0f} spans per rep")
print(f"  sluice postgres exporter {s['sluice_spans_per_second']:>10.0f} spans/s  ({s['sluice_wall_seconds']:.2f} s)")
print(f"  COPY FROM binary files   {s['copy_spans_per_second']:>10.0f} spans/s  ({s['copy_seconds']:.2f} s)")
print(f"  ratio sluice/COPY        {s['ratio']:>10.2f}   (target >= {s['target']}: {'met' if s['ratio'] >= s['target'] else 'not met'})")
print(f"  CPU s per 100k spans: sluice run: sluice {c['sluice_run']['sluice']:.2f}, postgres {c['sluice_run']['postgres']:.2f}, "
      f"loadgen {c['sluice_run']['loadgen']:.2f}; COPY run: postgres {c['copy_run']['postgres']:.2f}")
print(f"  duplicates {s['duplicate_spans']}, ids distinct {s['distinct_equals_stored']}, exporter saturated {s['saturated']}; {s['pinning']}")
EOF
