#!/usr/bin/env bash
# Hostile-traffic benchmark: starts the real `serve` (release build, demo runners, embedded
# journal) and runs scripts/bench/hostile.py against it: peak RSS growth under concurrent
# 25 MiB bodies that are not signed with any secret the server holds, and a signed delivery's
# latency while connections push 1 MiB wrongly signed bodies naming a served repository.
#
# usage: scripts/bench-hostile.sh [hostile.py options, e.g. --bodies 32 --cpu-connections 4]
#
# environment:
#   BENCH_PORT=18180     BENCH_NO_BUILD=1 (use target/release as it is)
#   BENCH_BIN=           another binary to measure (e.g. an older build), instead of building
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${BENCH_PORT:-18180}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
BIN=${BENCH_BIN:-$TARGET_DIR/release/github-action-autoscaler}
if [ -z "${BENCH_BIN:-}" ] && [ -z "${BENCH_NO_BUILD:-}" ]; then
  cargo build --release --locked --quiet
fi
work=$(mktemp -d)
"$BIN" serve --manifests fixtures/manifests/demo --listen "127.0.0.1:$PORT" --data-dir "$work/data" \
  >"$work/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  curl -fs "127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "127.0.0.1:$PORT/healthz" >/dev/null || { cat "$work/server.log" >&2; echo "server did not start" >&2; exit 1; }
echo "server: $BIN (pid $pid), $(nproc) cores"
python3 scripts/bench/hostile.py --pid "$pid" --port "$PORT" "$@"
kill -0 "$pid" || { echo "the server died under the attack" >&2; cat "$work/server.log" >&2; exit 1; }
