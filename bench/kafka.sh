#!/usr/bin/env bash
# Kafka: spans per CPU-second through the `kafka` exporter and through the `kafka` receiver,
# beside OTLP passthrough, in the same run, against a real Kafka-protocol broker (Tansu, built by
# scripts/tansu.sh, in memory).
#
#   bench/kafka.sh           release build, REPS (3) alternating reps of DURATION (10) s each;
#                            one JSON line per run in target/bench-kafka/runs.jsonl and a summary
#   bench/kafka.sh --smoke   debug build, one 2 s rep, asserts that every span crossed Kafka
#
# Per rep, at a fixed RATE (default 50000 spans/s; ITEMS spans per request):
#  1. passthrough: sluice, OTLP/gRPC in -> batch -> `otlp` out (no compression) to the counting
#     sink. Its CPU seconds per span delivered.
#  2. export: sluice A, OTLP/gRPC in -> batch -> `kafka` out (otlp_proto, acks 1, no
#     compression) to Tansu. A's CPU seconds per span the broker acknowledged
#     (`otelcol_exporter_sent_spans`).
#  3. receive: then sluice B, `kafka` in (earliest) -> `otlp` out to the sink, drains what A wrote.
#     B's CPU seconds per span delivered, from its start until the sink has every span.
# The collector under test runs alone on core 1 (taskset); the load generator, the sink and the
# broker share core 0, as in bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. bench/lib.sh

smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
REPS=${REPS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-50000}
ITEMS=${ITEMS:-100}
out=${OUT:-$root/target/bench-kafka}
[ $smoke = 1 ] && { REPS=1; DURATION=2; RATE=5000; out=${OUT:-$root/target/bench-kafka-smoke}; }
mkdir -p "$out"
build_binaries
tansu=${SLUICE_TANSU:-$(scripts/tansu.sh)}

if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  load_cpu="taskset -c 0"; collector_cpu="taskset -c 1"
else
  load_cpu=""; collector_cpu=""
fi

metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" 'index($0, m) == 1 { s += $NF } END { printf "%d", s }'; }
delivered() { curl -s "http://127.0.0.1:$1/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['traces']['items'])"; }

# collector CONFIG_FILE METRICS_PORT: starts sluice on core 1; sets pid.
collector() {
  $collector_cpu "$bin/sluice" --config "$1" > "$1.log" 2>&1 &
  pid=$!
  wait_port "$2"
}

# load PORT: RATE spans/s for DURATION to sluice's OTLP/gRPC port; sets sent (spans accepted).
load() {
  $load_cpu "$bin/sluice-loadgen" send --signal traces --protocol grpc --endpoint http://127.0.0.1:$1 \
    --duration "${DURATION}s" --items "$ITEMS" --rate "$RATE" > "$out/send.json"
  sent=$(python3 -c "import json; print(json.load(open('$out/send.json'))['items_accepted'])")
}

config() { # NAME RECEIVER EXPORTER METRICS_PORT
  cat > "$out/$1.yaml" <<YAML
receivers:
$2
processors:
  batch: { send_batch_size: 8192, timeout: 200ms }
exporters:
$3
service:
  pipelines:
    traces: { receivers: [$(echo "$2" | awk 'NR==1 { sub(":", ""); print $1 }')], processors: [batch], exporters: [$(echo "$3" | awk 'NR==1 { sub(":", ""); print $1 }')] }
  telemetry: { metrics: { address: "127.0.0.1:$4" }, logs: { level: warn } }
YAML
}

: > "$out/runs.jsonl"
record() { # SCENARIO CPU0 CPU1 ITEMS RSS
  python3 -c "
import json, sys
s, c0, c1, n, rss = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
cpu = c1 - c0
print(json.dumps({'scenario': s, 'cpu_seconds': cpu, 'spans': n, 'spans_per_cpu_second': n / cpu if cpu > 0 else 0.0, 'peak_rss_mib': rss}))
" "$@" | tee -a "$out/runs.jsonl"
}

for rep in $(seq 1 "$REPS"); do
  sink_grpc=$(free_port); sink_http=$(free_port)
  $load_cpu "$bin/sluice-loadgen" sink --grpc 127.0.0.1:$sink_grpc --http 127.0.0.1:$sink_http > /dev/null 2>&1 &
  sink_pid=$!
  wait_port $sink_http
  broker=$(free_port)
  $load_cpu "$tansu" broker --listener-url tcp://127.0.0.1:$broker --advertised-listener-url tcp://127.0.0.1:$broker \
    --storage-engine memory://tansu/ > "$out/tansu.log" 2>&1 &
  tansu_pid=$!
  wait_port $broker
  otlp_out="  otlp: { endpoint: http://127.0.0.1:$sink_grpc, compression: none }"

  # 1. passthrough
  grpc=$(free_port); m=$(free_port)
  config passthrough "  otlp: { protocols: { grpc: { endpoint: 127.0.0.1:$grpc } } }" "$otlp_out" "$m"
  collector "$out/passthrough.yaml" "$grpc"
  cpu0=$(cpu_seconds $pid)
  load $grpc
  for _ in $(seq 1 100); do [ "$(delivered $sink_http)" -ge "$sent" ] && break; sleep 0.2; done
  record passthrough "$cpu0" "$(cpu_seconds $pid)" "$(delivered $sink_http)" "$(peak_rss_mib $pid)"
  kill $pid; wait $pid 2>/dev/null || true
  base=$(delivered $sink_http)

  # 2. export into Kafka
  topic=bench_spans_$rep
  "$tansu" topic create --broker tcp://127.0.0.1:$broker --partitions 3 "$topic" > /dev/null
  grpc=$(free_port); m=$(free_port)
  config export "  otlp: { protocols: { grpc: { endpoint: 127.0.0.1:$grpc } } }" \
    "  kafka: { brokers: [127.0.0.1:$broker], traces: { topic: $topic } }" "$m"
  collector "$out/export.yaml" "$grpc"
  cpu0=$(cpu_seconds $pid)
  load $grpc
  for _ in $(seq 1 100); do [ "$(metric $m 'otelcol_exporter_sent_spans{')" -ge "$sent" ] && break; sleep 0.2; done
  written=$(metric $m 'otelcol_exporter_sent_spans{')
  record export "$cpu0" "$(cpu_seconds $pid)" "$written" "$(peak_rss_mib $pid)"
  kill $pid; wait $pid 2>/dev/null || true

  # 3. receive from Kafka
  m=$(free_port)
  # Fetches large enough for any record batch whole: Tansu answers a fetch at an offset inside a
  # batch with nothing, so a fetch truncated mid-batch would stall there (README, "Kafka").
  config receive "  kafka: { brokers: [127.0.0.1:$broker], group_id: bench-$rep, initial_offset: earliest, traces: { topics: [$topic] }, max_fetch_size: 67108864, max_partition_fetch_size: 16777216 }" \
    "$otlp_out" "$m"
  collector "$out/receive.yaml" "$m"
  cpu0=$(cpu_seconds $pid)
  for _ in $(seq 1 600); do [ $(( $(delivered $sink_http) - base )) -ge "$written" ] && break; sleep 0.1; done
  got=$(( $(delivered $sink_http) - base ))
  record receive "$cpu0" "$(cpu_seconds $pid)" "$got" "$(peak_rss_mib $pid)"
  kill $pid; wait $pid 2>/dev/null || true
  kill $tansu_pid $sink_pid 2>/dev/null || true; wait $tansu_pid $sink_pid 2>/dev/null || true
  if [ $smoke = 1 ] && [ "$got" -lt "$written" -o "$written" -lt "$sent" ]; then
    echo "bench/kafka.sh --smoke: $sent spans accepted, $written written to Kafka, $got read back" >&2; exit 1
  fi
done

python3 - "$out/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in runs:
    by.setdefault(r["scenario"], []).append(r["spans_per_cpu_second"])
base = statistics.median(by["passthrough"])
for s, v in by.items():
    m = statistics.median(v)
    print(f"{s:12s} median {m:10.0f} spans per CPU-second ({m / base:.2f}x passthrough), runs {[round(x) for x in v]}")
PY
