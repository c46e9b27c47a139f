#!/usr/bin/env bash
# Side-by-side benchmarks: sluice and rotel, alternately, in the same run.
#
#   bench/run.sh              full run: release build, rotel from PyPI, every scenario x REPS,
#                             then bench/RESULTS.md and bench/results.png
#   bench/run.sh --smoke      a few seconds with the debug binaries, sluice only, no report
#                             (part of the README test command, so the script does not rot)
#
# Layout per run: the load generator and the counting sink share core 0, the collector runs
# alone on core 1 (taskset). The collector's CPU seconds come from /proc/<pid>/stat (utime +
# stime), its peak RSS from VmHWM, and items delivered are counted at the sink, so loss shows.
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

# run COLLECTOR SCENARIO SIGNAL PROTOCOL [RATE]
run() {
  local collector=$1 scenario=$2 signal=$3 protocol=$4 rate=${5:-}
  local sink_grpc sink_http grpc http pid sink_pid
  sink_grpc=$(free_port); sink_http=$(free_port); grpc=$(free_port); http=$(free_port)
  $load_cpu "$bin/sluice-loadgen" sink --grpc 127.0.0.1:$sink_grpc --http 127.0.0.1:$sink_http > /dev/null 2>&1 &
  sink_pid=$!
  wait_port $sink_http
  if [ "$collector" = sluice ]; then
    cat > "$out/sluice.yaml" <<EOF
receivers:
  otlp:
    protocols:
      grpc: { endpoint: 127.0.0.1:$grpc }
      http: { endpoint: 127.0.0.1:$http }
processors:
  memory_limiter: { check_interval: 1s, limit_mib: 1024 }
  resource:
    attributes: [{ key: bench.collector, value: sluice, action: upsert }]
  batch: { send_batch_size: 8192, timeout: 200ms }
exporters:
  otlp:
    endpoint: http://127.0.0.1:$sink_grpc
    compression: none
$(queue_config "$scenario")
service:
  pipelines:
    traces: { receivers: [otlp], processors: [memory_limiter, resource, batch], exporters: [otlp] }
    metrics: { receivers: [otlp], processors: [memory_limiter, resource, batch], exporters: [otlp] }
    logs: { receivers: [otlp], processors: [memory_limiter, resource, batch], exporters: [otlp] }
  telemetry: { metrics: { address: "" }, logs: { level: warn } }
EOF
    $collector_cpu "$bin/sluice" --config "$out/sluice.yaml" > "$out/collector.log" 2>&1 &
  else
    $collector_cpu "$rotel" start --otlp-grpc-endpoint 127.0.0.1:$grpc --otlp-http-endpoint 127.0.0.1:$http \
      --otel-resource-attributes bench.collector=rotel --batch-max-size 8192 --batch-timeout 200ms \
      --exporter otlp --otlp-exporter-endpoint http://127.0.0.1:$sink_grpc --otlp-exporter-compression none \
      --pid-file "$out/rotel.pid" > "$out/collector.log" 2>&1 &
  fi
  pid=$!
  wait_port $grpc; wait_port $http
  local cpu0 port
  cpu0=$(cpu_seconds $pid)
  port=$grpc; [ "$protocol" = http ] && port=$http
  local args=(send --signal "$signal" --protocol "$protocol" --endpoint "http://127.0.0.1:$port"
              --duration "${DURATION}s" --items "$ITEMS" --concurrency "$CONCURRENCY")
  [ -n "$rate" ] && args+=(--rate "$rate")
  $load_cpu "$bin/sluice-loadgen" "${args[@]}" > "$out/send.json"
  sleep 1.5   # let the last batches flush
  local cpu1 rss delivered
  cpu1=$(cpu_seconds $pid); rss=$(peak_rss_mib $pid)
  delivered=$(curl -s "http://127.0.0.1:$sink_http/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$signal']['items'])")
  kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  kill $sink_pid 2>/dev/null || true; wait $sink_pid 2>/dev/null || true
  python3 - "$collector" "$scenario" "$cpu0" "$cpu1" "$rss" "$delivered" "$DURATION" "$out/send.json" >> "$out/runs.jsonl" <<'EOF'
import json, sys
collector, scenario, cpu0, cpu1, rss, delivered, duration, send = sys.argv[1:]
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
}))
EOF
  tail -1 "$out/runs.jsonl"
}

: > "$out/runs.jsonl"
scenarios=("traces-grpc traces grpc" "traces-http traces http" "logs-grpc logs grpc" "metrics-grpc metrics grpc" "traces-10k-per-second traces grpc 10000")
# The persistent queue's cost (sluice only; rotel has none): COLLECTORS=sluice SCENARIOS="traces-grpc traces-grpc-disk-always traces-grpc-disk-interval"
persistent=("traces-grpc-disk-always traces grpc" "traces-grpc-disk-interval traces grpc" "traces-grpc-disk-never traces grpc")
[ $smoke = 1 ] && scenarios=("traces-grpc traces grpc")
collectors=(sluice rotel)
[ $smoke = 1 ] && collectors=(sluice)
# Optional filters: COLLECTORS="sluice" SCENARIOS="traces-grpc logs-grpc" bench/run.sh
[ -n "${COLLECTORS:-}" ] && read -r -a collectors <<< "$COLLECTORS"
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
      run "$c" "$name" "$signal" "$protocol" "${rate:-}"
    done
  done
done

if [ $smoke = 1 ]; then
  python3 - "$out/runs.jsonl" <<'EOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
r = runs[-1]
assert r["items_delivered"] > 0, f"nothing delivered: {r}"
assert r["items_delivered"] >= r["items_accepted"], f"accepted items lost: {r}"
print(f"bench smoke: {r['items_delivered']} spans delivered, {r['items_per_cpu_second']:.0f} per collector CPU-second (debug build)")
EOF
  exit 0
fi

[ -n "${COLLECTORS:-}${SCENARIOS:-}" ] && { echo "filtered run: report not written"; exit 0; }
"$venv/bin/python" bench/report.py "$out/runs.jsonl" bench/RESULTS.md bench/results.png \
  "REPS=$REPS DURATION=$DURATION CONCURRENCY=$CONCURRENCY ITEMS=$ITEMS bench/run.sh"
echo "wrote bench/RESULTS.md and bench/results.png"
