#!/usr/bin/env bash
# The test command (README.md): installs what the tests need, then runs every test.
#   - the Python OpenTelemetry SDK, from PyPI into a private venv (target/py-venv);
#   - Prometheus (Debian's package), which the remote-write tests start on a free port;
#   - Tansu, a Kafka-protocol broker (crates.io, pinned, built once per machine outside the
#     checkout by scripts/tansu.sh), which the kafka tests start on free ports;
#   - Chromium and chromedriver (Debian's packages), which the admin view's tests drive headless;
#   - PostgreSQL: unless DATABASE_URL is set, a throwaway cluster from the system's initdb/pg_ctl
#     (scripts/pg.sh; Debian's package is installed when missing), stopped when the tests end;
#   - then `cargo test` over the whole workspace: unit tests, property tests, and the end-to-end
#     tests that start the real sluice binary against real OTLP clients;
#   - a smoke run of the load generator and bench/run.sh (debug build, a few seconds);
#   - a bounded run of every coverage-guided fuzz target (scripts/fuzz.sh, 10 seconds each).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "test.sh: installing python3 and venv support (apt-get)" >&2
  apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
fi

if ! command -v curl >/dev/null 2>&1 || ! command -v taskset >/dev/null 2>&1 || ! command -v unshare >/dev/null 2>&1; then
  echo "test.sh: installing curl and util-linux (taskset, unshare)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl util-linux >/dev/null
fi

if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists openssl zlib 2>/dev/null; then
  echo "test.sh: installing pkg-config, OpenSSL and zlib headers (librdkafka's TLS, SCRAM and gzip)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config libssl-dev zlib1g-dev >/dev/null
fi

if ! command -v g++ >/dev/null 2>&1; then
  echo "test.sh: installing g++ (libFuzzer, for scripts/fuzz.sh)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi

if ! command -v prometheus >/dev/null 2>&1; then
  echo "test.sh: installing Prometheus (Debian's package) for the remote-write tests" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus curl >/dev/null
fi

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "test.sh: installing Chromium and its WebDriver (Debian's packages) for the admin view's tests" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

venv="${SLUICE_VENV:-$PWD/target/py-venv}"
stamp="$venv/.requirements.sha256"
wanted="$(sha256sum tests/python/requirements.txt | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "test.sh: installing the Python OpenTelemetry SDK into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
  echo "$wanted" > "$stamp"
fi
export SLUICE_PYTHON="$venv/bin/python"

# Tansu, the Kafka-protocol broker the kafka tests start (scripts/tansu.sh: built once per machine).
if [ -z "${SLUICE_TANSU:-}" ]; then
  SLUICE_TANSU="$(scripts/tansu.sh)"
  export SLUICE_TANSU
fi

if [ -z "${DATABASE_URL:-}" ]; then
  pg_dir="$PWD/target/pg-test"
  eval "$(scripts/pg.sh start "$pg_dir")"
  trap 'scripts/pg.sh stop "$pg_dir"' EXIT
  echo "test.sh: PostgreSQL for the tests at $DATABASE_URL" >&2
fi

# On CI (a clean clone, built once) incremental state is only disk: about a quarter of target/.
if [ -n "${CI:-}" ]; then
  export CARGO_INCREMENTAL=0
fi

cargo test --workspace --all-targets "$@"

# A few seconds of the load generator and the benchmark scripts, so none of them rots.
bench/run.sh --smoke
bench/postgres.sh --smoke
bench/kafka.sh --smoke
bench/query.sh --smoke

# Every fuzz target, briefly, from its committed seeds: a crash fails the run.
scripts/fuzz.sh "${SLUICE_FUZZ_SECONDS:-10}"
