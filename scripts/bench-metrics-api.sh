#!/usr/bin/env bash
# metrics-api read rate with many runners loaded: writes RUNNERS ScaledActionRunners (default
# 10,000, over 2,500 repositories) as manifests, starts the release build on them, and has wrk
# GET random runners' /api/v1/namespaces/{ns}/scaledactionrunners/{name} for DURATION seconds.
# Prints requests/s, p50 and p99. Loopback only.
#
# environment: BENCH_RUNNERS=10000 BENCH_DURATION=10 BENCH_CONNECTIONS=32 BENCH_PORT=18180 BENCH_NO_BUILD=1
set -euo pipefail
cd "$(dirname "$0")/.."
RUNNERS=${BENCH_RUNNERS:-10000}
DURATION=${BENCH_DURATION:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
PORT=${BENCH_PORT:-18180}
command -v wrk >/dev/null || { echo "bench: installing wrk" >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
[[ -n "${BENCH_NO_BUILD:-}" ]] || cargo build --release --quiet --bin github-action-autoscaler
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gaa-metrics-bench.XXXXXX")
PID=""
cleanup() { [[ -z "$PID" ]] || { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; }; rm -rf "$WORK"; }
trap cleanup EXIT

mkdir -p "$WORK/manifests"
python3 scripts/bench/scale.py manifests "$WORK/manifests" "$RUNNERS" 2500
python3 scripts/bench/scale.py paths "$WORK/paths.lua" "$RUNNERS"
RUST_LOG=warn target/release/github-action-autoscaler serve --manifests "$WORK/manifests" --data-dir "$WORK/data" \
  --listen "127.0.0.1:$PORT" --unauthenticated-reads >"$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do curl -sf "127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
loaded=$(curl -s "127.0.0.1:$PORT/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["runners"])')
echo "runners loaded: $loaded"
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/paths.lua" "http://127.0.0.1:$PORT" | tee "$WORK/wrk.txt" |
  grep -E "Requests/sec|50%|99%|Non-2xx|requests in"
