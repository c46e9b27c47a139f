#!/usr/bin/env bash
# Prints the path of the Tansu Kafka-protocol broker the kafka tests start, installing it first
# when it is missing: a pinned version from crates.io, built once per machine into a cache
# outside the checkout (SLUICE_TOOLS, default ~/.cache/sluice), so that a clean clone reuses it.
# The `dynostore` feature is what lets its in-memory storage engine start.
set -euo pipefail
version=0.6.0
root="${SLUICE_TOOLS:-$HOME/.cache/sluice}/tansu-$version"
bin="$root/bin/tansu"
if [ ! -x "$bin" ]; then
  echo "tansu.sh: building Tansu $version into $root (once per machine; several minutes)" >&2
  mkdir -p "$root"
  build="$(mktemp -d)"
  CARGO_TARGET_DIR="$build" cargo install tansu --version "$version" --locked \
    --features dynostore --root "$root" --quiet >&2
  rm -rf "$build"
fi
echo "$bin"
