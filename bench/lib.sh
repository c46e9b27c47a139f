# Helpers shared by the benchmark scripts (sourced, not run).

# A loopback port nobody listens on right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits up to 20 s for something to listen on a loopback port.
wait_port() { for _ in $(seq 1 400); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
# A process's user + system CPU seconds (clock ticks are 100 per second on Linux).
cpu_seconds() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }
# A process's peak resident set size in MiB.
peak_rss_mib() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# Builds sluice and the load generator: debug for smoke runs (smoke=1), release otherwise; sets bin.
build_binaries() {
  if [ "${smoke:-0}" = 1 ]; then
    cargo build -q -p sluice -p sluice-loadgen
    bin=$root/target/debug
  else
    cargo build -q --release -p sluice -p sluice-loadgen
    bin=$root/target/release
  fi
}
