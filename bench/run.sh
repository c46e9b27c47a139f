#!/usr/bin/env bash
# Side-by-side benchmarks: sluice and rotel, alternately, in the same run.
#
#   bench/run.sh              full run: release build, rotel from PyPI, every scenario x REPS,
#                             then bench/RESULTS.md and bench/results.png
#   bench/run.sh --smoke      a few seconds with the debug binaries, sluice only, no report
#                             (part of the README test command, so the script does not rot)
#   BASELINE=old/sluice COLLECTORS="sluice sluice-baseline" SCENARIOS=traces-grpc bench/run.sh
#                             this build against an older binary, alternately, in one run
#
# Layout per run: the load generator and the counting sink share core 0, the collector runs
# alone on core 1 (taskset). The collector's CPU seconds come from /proc/<pid>/stat (utime +
# stime), its peak RSS from VmHWM, and items delivered are counted at the sink, so loss shows.
# The full run also measures sluice alone into real backends: its `jaeger` exporter into the sink's
# Jaeger PostSpans, and its `prometheusremotewrite` exporter into a real Prometheus (Debian's
# package; installed when missing). PostgreSQL has its own script, bench/postgres.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. bench/lib.sh

smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
REPS=${REPS:-3}
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-8}
ITEMS=${ITEMS:-100}
out=${OUT:-$root/target/bench}
mkdir -p "$out"

[ $smoke = 1 ] && { REPS=1; DURATION=2; }
build_binaries

venv=$root/target/bench-venv
if [ $smoke = 0 ]; then
  if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check rotel matplotlib
  rotel=$(ls "$venv"/lib/python3*/site-packages/rotel/rotel-agent)
fi

if ! command -v prometheus > /dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus > /dev/null
  else
    echo "bench/run.sh needs Prometheus: apt-get install prometheus" >&2; exit 1
  fi
fi

if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  load_cpu="taskset -c 0"; collector_cpu="taskset -c 1"
else
  load_cpu=""; collector_cpu=""
fi


# The sending queue of sluice's exporter: in memory, or persistent on disk for the
# `*-disk-<fsync>` scenarios (a fresh directory per run).
queue_config() {
  case "$1" in
    *-disk-*)
      rm -rf "$out/queue"
      printf '    sending_queue: { storage: file, directory: %s, fsync: %s, fsync_interval: 1s, max_bytes: 1GiB }\n' \
        "$out/queue" "${1##*-disk-}" ;;
    *) ;;
  esac
}

# Sluice's exporter by scenario: OTLP into the counting sink (every side-by-side scenario), the
# `jaeger` exporter into the sink's Jaeger PostSpans (`*-jaeger`), or `prometheusremotewrite`
# into a real Prometheus (`*-prometheus`).
exporter_id() {
  case "$1" in *-jaeger) echo jaeger ;; *-prometheus) echo prometheusremotewrite ;; *) echo otlp ;; esac
}
exporter_config() {
  case "$1" in
    *-jaeger)
      printf '  jaeger:\n    endpoint: http://127.0.0.1:%s\n    compression: none\n' "$sink_grpc" ;;
    *-prometheus)
      printf '  prometheusremotewrite:\n    endpoint: http://127.0.0.1:%s/api/v1/write\n' "$prom_port" ;;
    *)
      printf '  otlp:\n    endpoint: http://127.0.0.1:%s\n    compression: %s\n' "$sink_grpc" "$(otlp_compression "$1")"
      queue_config "$1" ;;
  esac
}

# A real Prometheus with its remote-write receiver, on the load generator's core, a fresh TSDB per
# run. Out-of-order ingestion is on (10m window) because sluice exports batches concurrently, as
# the Collector does, so two batches may land out of order.
start_prometheus() {
  prom_port=$(free_port)
  rm -rf "$out/prometheus"; mkdir -p "$out/prometheus"
  printf 'global: { scrape_interval: 1m }\nstorage: { tsdb: { out_of_order_time_window: 10m } }\n' \
    > "$out/prometheus/prometheus.yml"
  $load_cpu prometheus --config.file="$out/prometheus/prometheus.yml" \
    --storage.tsdb.path="$out/prometheus/data" --web.listen-address=127.0.0.1:$prom_port \
    --web.enable-remote-write-receiver > "$out/prometheus/log" 2>&1 &
  prom_pid=$!
  for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$prom_port/-/ready" > /dev/null && return 0; sleep 0.1; done
  echo "prometheus did not become ready: $out/prometheus/log" >&2; return 1
}
# Samples Prometheus has appended to its head block.
prometheus_samples() {
  curl -s "http://127.0.0.1:$prom_port/metrics" | awk '/^prometheus_tsdb_head_samples_appended_total/ { s += $2 } END { printf "%d", s }'
}

# The OTLP exporters' compression: gzip on both sides (the default of the Collector and of
# sluice, and what rotel sends whatever its flag says); in the sluice-only rows, none (`*-plain`)
# or zstd (`*-zstd-out`).
otlp_compression() {
  case "$1" in *-plain|*-plain-*) echo none ;; *-zstd-out) echo zstd ;; *) echo gzip ;; esac
}

# How the load generator compresses what it sends: gzip (`*-gzip-in`), zstd (`*-zstd-in`) or not.
load_compression() {
  case "$1" in *-gzip-in) echo gzip ;; *-zstd-in) echo zstd ;; *) echo none ;; esac
}

# expected_encoding SCENARIO: how every export request should reach the counting sink, as the
# collectors are configured; empty when the backend is not the sink (Prometheus).
expected_encoding() {
  case "$1" in
    *-prometheus) echo "" ;;
    *-jaeger) echo identity ;;
    *) case "$(otlp_compression "$1")" in none) echo identity ;; *) otlp_compression "$1" ;; esac ;;
  esac
}

# delivered_items SCENARIO SIGNAL SINK_HTTP_PORT: the items that reached the backend so far.
delivered_items() {
  case "$1" in
    *-jaeger)
      curl -s "http://127.0.0.1:$3/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['jaeger']['spans'])" ;;
    *-prometheus)
      # Points, from the samples Prometheus appended: a request of ITEMS points is the load
      # generator's metrics in groups of 5 points (every third a histogram of 15 buckets:
      # 15 `_bucket` + `_sum` + `_count` samples per point), plus one `target_info`.
      python3 -c "
items, n, samples = $ITEMS, 0, 1
while items > 0:
    p = min(5, items); items -= p; samples += p * (17 if n % 3 == 0 else 1); n += 1
print(int($(prometheus_samples) / samples * $ITEMS))" ;;
    *)
      curl -s "http://127.0.0.1:$3/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2']['items'])" ;;
  esac
}

# A CA and a server certificate for localhost, for the `*-tls` scenarios (openssl; made once).
make_certs() {
  certs="$out/tls"
  [ -f "$certs/server.pem" ] && return
  mkdir -p "$certs"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
    -keyout "$certs/ca.key" -out "$certs/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$certs/server.key" -out "$certs/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$certs/ext.cnf"
  openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" -CAcreateserial \
    -days 2 -extfile "$certs/ext.cnf" -out "$certs/server.pem" 2>/dev/null
}

# run COLLECTOR SCENARIO SIGNAL PROTOCOL [RATE]
run() {
  local collector=$1 scenario=$2 signal=$3 protocol=$4 rate=${5:-}
  local sink_grpc sink_http grpc http pid sink_pid
  sink_grpc=$(free_port); sink_http=$(free_port); grpc=$(free_port); http=$(free_port)
  $load_cpu "$bin/sluice-loadgen" sink --grpc 127.0.0.1:$sink_grpc --http 127.0.0.1:$sink_http > /dev/null 2>&1 &
  sink_pid=$!
  wait_port $sink_http
  prom_pid=""
  case "$scenario" in *-prometheus) start_prometheus ;; esac
  if [ "$collector" = sluice ] || [ "$collector" = sluice-baseline ]; then
    local exporters exporter exe=$bin/sluice
    [ "$collector" = sluice-baseline ] && exe=$BASELINE
    exporters=$(exporter_config "$scenario"); exporter=$(exporter_id "$scenario")
    # `*-redaction`: the redaction processor with the built-in pii and secrets sets, before batch.
    local redaction="" chain="memory_limiter, resource, batch" grpc_tls=""
    # `*-tls`: the gRPC receiver speaks TLS (ECDSA P-256 certificate; the load generator trusts
    # the CA and keeps its connections, as SDKs do).
    case "$scenario" in
      *-tls) make_certs; grpc_tls=", tls: { cert_file: $certs/server.pem, key_file: $certs/server.key }" ;;
    esac
    case "$scenario" in
      *-redaction)
        redaction="  redaction: { allow_all_keys: true, builtin_patterns: [pii, secrets] }"
        chain="memory_limiter, resource, redaction, batch" ;;
      # `*-tail-keep-all`: tail_sampling holding every trace 10 s and keeping it (the most work:
      # every span held, decided and sent on); `*-tail-errors-slow-10pct`: the issue's policy.
      *-tail-keep-all)
        redaction="  tail_sampling: { decision_wait: 10s, num_traces: 1000000, policies: [{ name: all, type: always_sample }] }"
        chain="memory_limiter, tail_sampling, resource, batch" ;;
      *-tail-errors-slow-10pct)
        redaction="  tail_sampling: { decision_wait: 10s, num_traces: 1000000, policies: [{ name: errors, type: status_code, status_code: { status_codes: [ERROR] } }, { name: slow, type: latency, latency: { threshold_ms: 5000 } }, { name: rest, type: probabilistic, probabilistic: { sampling_percentage: 10 } }] }"
        chain="memory_limiter, tail_sampling, resource, batch" ;;
    esac
    cat > "$out/sluice.yaml" <<EOF
receivers:
  otlp:
    protocols:
      grpc: { endpoint: 127.0.0.1:$grpc$grpc_tls }
      http: { endpoint: 127.0.0.1:$http }
processors:
  memory_limiter: { check_interval: 1s, limit_mib: 1024 }
  resource:
    attributes: [{ key: bench.collector, value: sluice, action: upsert }]
  batch: { send_batch_size: 8192, timeout: 200ms }
$redaction
exporters:
$exporters
service:
  pipelines:
    $signal: { receivers: [otlp], processors: [$chain], exporters: [$exporter] }
  telemetry: { metrics: { address: "" }, logs: { level: warn } }
EOF
    $collector_cpu "$exe" --config "$out/sluice.yaml" > "$out/collector.log" 2>&1 &
  else
    $collector_cpu "$rotel" start --otlp-grpc-endpoint 127.0.0.1:$grpc --otlp-http-endpoint 127.0.0.1:$http \
      --otel-resource-attributes bench.collector=rotel --batch-max-size 8192 --batch-timeout 200ms \
      --exporter otlp --otlp-exporter-endpoint http://127.0.0.1:$sink_grpc --otlp-exporter-compression gzip \
      --pid-file "$out/rotel.pid" > "$out/collector.log" 2>&1 &
  fi
  pid=$!
  wait_port $grpc; wait_port $http
  local cpu0 port
  cpu0=$(cpu_seconds $pid)
  port=$grpc; [ "$protocol" = http ] && port=$http
  local target="http://127.0.0.1:$port"
  case "$scenario" in *-tls) target="https://localhost:$port" ;; esac
  local args=(send --signal "$signal" --protocol "$protocol" --endpoint "$target"
              --duration "${DURATION}s" --items "$ITEMS" --concurrency "$CONCURRENCY"
              --compression "$(load_compression "$scenario")")
  case "$scenario" in *-tls) args+=(--ca-file "$certs/ca.pem") ;; esac
  [ -n "$rate" ] && args+=(--rate "$rate")
  # Prometheus refuses repeated or older samples: fresh timestamps. Each of the 32 pooled requests
  # is its own instance, so the load is about 21k series, each sampled every 32 requests.
  case "$scenario" in *-prometheus) args+=(--fresh-timestamps) ;; esac
  # Tail sampling must see new traces, not the pool's few again and again: so must its baseline.
  case "$scenario" in *-fresh-traces*) args+=(--fresh-trace-ids) ;; esac
  $load_cpu "$bin/sluice-loadgen" "${args[@]}" > "$out/send.json"
  # Let the last batches flush: wait until the delivered count holds still for a second (at most
  # 20 s). An exporter that lags behind shows as CPU spent after the load stopped.
  local cpu1 rss delivered previous=-1
  sleep 1.5
  for _ in $(seq 1 20); do
    delivered=$(delivered_items "$scenario" "$signal" "$sink_http")
    [ "$delivered" = "$previous" ] && break
    previous=$delivered; sleep 1
  done
  cpu1=$(cpu_seconds $pid); rss=$(peak_rss_mib $pid)
  # How the requests really arrived at the sink, by compression: checked against the scenario.
  local encodings
  local stats
  stats=$(curl -s "http://127.0.0.1:$sink_http/stats")
  encodings=$(python3 -c "import json,sys; print(json.dumps(json.loads(sys.argv[1]).get('encodings', {})))" "$stats")
  kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  kill $sink_pid 2>/dev/null || true; wait $sink_pid 2>/dev/null || true
  if [ -n "$prom_pid" ]; then kill $prom_pid 2>/dev/null || true; wait $prom_pid 2>/dev/null || true; fi
  python3 - "$collector" "$scenario" "$cpu0" "$cpu1" "$rss" "$delivered" "$DURATION" "$out/send.json" "$encodings" "$(expected_encoding "$scenario")" "$stats" >> "$out/runs.jsonl" <<'EOF'
import json, sys
collector, scenario, cpu0, cpu1, rss, delivered, duration, send, encodings, expected, stats = sys.argv[1:]
wire = sum(json.loads(stats).get("wire_bytes", {}).values()) if expected else 0
s = json.load(open(send))
cpu = float(cpu1) - float(cpu0)
delivered = int(delivered)
print(json.dumps({
    "collector": collector, "scenario": scenario, "cpu_seconds": cpu, "peak_rss_mib": float(rss),
    "items_sent": s["items_sent"], "items_accepted": s["items_accepted"], "items_delivered": delivered,
    "items_per_cpu_second": delivered / cpu if cpu > 0 else 0.0,
    "cpu_percent_of_one_core": 100.0 * cpu / float(duration),
    "accepted_per_second": s["items_accepted_per_second"], "latency_p99_ms": s["latency_ms"]["p99"],
    "refused": s["refused"], "errors": s["errors"],
    "encodings": json.loads(encodings), "expected_encoding": expected,
    "load_compression": s.get("compression", "none"),
    "sink_bytes_per_item": wire / delivered if delivered else 0.0,
}))
EOF
  tail -1 "$out/runs.jsonl"
}

: > "$out/runs.jsonl"
scenarios=("traces-grpc traces grpc" "traces-http traces http" "logs-grpc logs grpc" "metrics-grpc metrics grpc" "traces-10k-per-second traces grpc 10000")
# The persistent queue's cost (sluice only; rotel has none): COLLECTORS=sluice SCENARIOS="traces-grpc traces-grpc-disk-always traces-grpc-disk-interval"
persistent=("traces-grpc-disk-always traces grpc" "traces-grpc-disk-interval traces grpc" "traces-grpc-disk-never traces grpc")
# What TLS on the receiver costs (sluice only): COLLECTORS=sluice SCENARIOS="traces-grpc-plain traces-grpc-plain-tls"
persistent+=("traces-grpc-plain-tls traces grpc")
# Receiving compressed requests: the load generator gzips, or zstd-compresses, what it sends.
scenarios+=("traces-grpc-gzip-in traces grpc" "traces-grpc-zstd-in traces grpc")
# Sluice alone without compressing its export (rotel compresses whatever its flag says), and
# exporting with zstd (rotel's OTLP exporter has gzip only):
scenarios+=("traces-grpc-plain traces grpc" "traces-grpc-zstd-out traces grpc")
# What the redaction processor costs (built-in pii and secrets sets, no personal data in the
# load), beside traces-grpc-plain:
scenarios+=("traces-grpc-plain-redaction traces grpc")
# What tail sampling costs at 100k spans/s with decision_wait 10s (sluice only; rotel has no tail
# sampler), each trace new: COLLECTORS=sluice SCENARIOS="traces-grpc-plain-fresh-traces-100k
# traces-grpc-plain-fresh-traces-100k-tail-keep-all traces-grpc-plain-fresh-traces-100k-tail-errors-slow-10pct"
persistent+=("traces-grpc-plain-fresh-traces-100k traces grpc 100000"
             "traces-grpc-plain-fresh-traces-100k-tail-keep-all traces grpc 100000"
             "traces-grpc-plain-fresh-traces-100k-tail-errors-slow-10pct traces grpc 100000")
# Sluice alone into real backends (rotel has no Jaeger gRPC or remote-write exporter to compare):
# COLLECTORS=sluice SCENARIOS="traces-50k-per-second-jaeger metrics-20k-per-second-prometheus"
backends=("traces-50k-per-second-jaeger traces grpc 50000" "metrics-20k-per-second-prometheus metrics grpc 20000")
scenarios+=("${backends[@]}")
# The smoke run takes one scenario per exporter path, with real Prometheus (installed by the README
# test command), so none of them rots.
[ $smoke = 1 ] && scenarios=("traces-grpc traces grpc" "traces-5k-per-second-jaeger traces grpc 5000"
                              "metrics-2k-per-second-prometheus metrics grpc 2000")
collectors=(sluice rotel)
[ $smoke = 1 ] && collectors=(sluice)
# Optional filters: COLLECTORS="sluice" SCENARIOS="traces-grpc logs-grpc" bench/run.sh
[ -n "${COLLECTORS:-}" ] && read -r -a collectors <<< "$COLLECTORS"
# Before and after a change, in one run: BASELINE=/path/to/an/older/sluice adds the collector
# `sluice-baseline`, run alternately with the same config (COLLECTORS="sluice sluice-baseline").
if [ -n "${SCENARIOS:-}" ]; then
  filtered=()
  for s in "${scenarios[@]}" "${persistent[@]}"; do
    for want in $SCENARIOS; do [ "${s%% *}" = "$want" ] && filtered+=("$s"); done
  done
  scenarios=("${filtered[@]}")
fi

for rep in $(seq 1 "$REPS"); do
  for s in "${scenarios[@]}"; do
    read -r name signal protocol rate <<< "$s"
    for c in "${collectors[@]}"; do
      # rotel has no persistent queue, Jaeger gRPC exporter or remote-write exporter to compare,
      # does not send uncompressed, and its OTLP exporter has gzip only.
      # rotel answers zstd-compressed gRPC requests with UNIMPLEMENTED (measured).
      case "$name" in *-disk-*|*-jaeger|*-prometheus|*-plain|*-plain-*|*-zstd-out|*-zstd-in) [ "$c" = rotel ] && continue ;; esac
      run "$c" "$name" "$signal" "$protocol" "${rate:-}"
    done
  done
done

# A table compares like with like only if every collector sent what its configuration says: a
# collector that compresses anyway is named, and no table is written.
python3 - "$out/runs.jsonl" <<'EOF' || { echo "bench/run.sh: a collector did not send what it was configured to send; no table written" >&2; exit 1; }
import json, sys
bad = []
for r in (json.loads(l) for l in open(sys.argv[1])):
    expected = r.get("expected_encoding")
    if expected and set(r.get("encodings", {})) - {expected}:
        bad.append(f"{r['collector']} {r['scenario']}: expected {expected}, the sink saw {r['encodings']}")
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF

if [ $smoke = 1 ]; then
  python3 - "$out/runs.jsonl" <<'EOF'
import json, sys
for r in (json.loads(l) for l in open(sys.argv[1])):
    assert r["items_delivered"] > 0, f"nothing delivered: {r}"
    assert r["items_delivered"] >= r["items_accepted"], f"accepted items lost: {r}"
    print(f"bench smoke: {r['scenario']}: {r['items_delivered']} items delivered, "
          f"{r['items_per_cpu_second']:.0f} per collector CPU-second (debug build)")
EOF
  exit 0
fi

[ -n "${COLLECTORS:-}${SCENARIOS:-}" ] && { echo "filtered run: report not written"; exit 0; }
"$venv/bin/python" bench/report.py "$out/runs.jsonl" bench/RESULTS.md bench/results.png \
  "REPS=$REPS DURATION=$DURATION CONCURRENCY=$CONCURRENCY ITEMS=$ITEMS bench/run.sh"
echo "wrote bench/RESULTS.md and bench/results.png"
