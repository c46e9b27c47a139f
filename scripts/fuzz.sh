#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, through the libfuzzer-sys crate) of everything sluice parses
# from outside: builds the targets in fuzz/ with coverage instrumentation, then runs each for
# SECONDS (default 10) from its committed seed corpus (fuzz/corpus/<target>, if any).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs on the stable toolchain: the instrumentation is rustc's sancov pass, set with -C flags; no
# sanitizer is needed for code that forbids `unsafe`. New inputs go to target/fuzz/corpus/<target>,
# crashes to target/fuzz/artifacts/<target>/ (and fail the run: turn each into a seed and a test).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-10}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(intake_traces http_request decompress config ottl disk_log)
fi

export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
export CARGO_TARGET_DIR="$PWD/target/fuzz/build"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros (they run on the host
# without libFuzzer's runtime).
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --manifest-path fuzz/Cargo.toml --bins --target "$host"
bin="$CARGO_TARGET_DIR/$host/release"

status=0
for t in "${targets[@]}"; do
  corpus="target/fuzz/corpus/$t"
  artifacts="target/fuzz/artifacts/$t/"
  mkdir -p "$corpus" "$artifacts"
  seeds=()
  [ -d "fuzz/corpus/$t" ] && seeds=("fuzz/corpus/$t")
  echo "fuzz.sh: $t for ${seconds}s" >&2
  if ! "$bin/$t" -max_total_time="$seconds" -rss_limit_mb=2048 \
      -timeout=10 -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts" \
      "$corpus" "${seeds[@]}" 2> "target/fuzz/$t.log"; then
    echo "fuzz.sh: $t FAILED; the input is in $artifacts, the log in target/fuzz/$t.log" >&2
    tail -40 "target/fuzz/$t.log" >&2
    status=1
  else
    grep -E "^stat::number_of_executed_units|^stat::new_units_added" "target/fuzz/$t.log" \
      | sed "s/^/fuzz.sh: $t /" >&2 || true
  fi
done
exit $status
