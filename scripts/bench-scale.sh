#!/usr/bin/env bash
# Scale: the release build with RUNNERS ScaledActionRunners (default 10,000, over 2,500
# repositories) and JOBS open jobs (default 100,000 queued deliveries). Reports
#   - memory (VmRSS, and the peak VmHWM) with the runners alone, and with every job open;
#   - metrics-api latency (GET a random runner, `wrk`, CONNECTIONS connections, DURATION s);
#   - start-up: SIGTERM, start again on the same data directory, time until /readyz answers 200
#     (the journal is replayed before it does; every job is checked to be back), and the memory
#     after it.
# Loopback only.
#
# environment: BENCH_RUNNERS=10000 BENCH_REPOS=2500 BENCH_JOBS=100000 BENCH_DURATION=10
#              BENCH_CONNECTIONS=4 BENCH_PORT=18190 BENCH_NO_BUILD=1
set -euo pipefail
cd "$(dirname "$0")/.."
RUNNERS=${BENCH_RUNNERS:-10000}
REPOS=${BENCH_REPOS:-2500}
JOBS=${BENCH_JOBS:-100000}
DURATION=${BENCH_DURATION:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-4}
PORT=${BENCH_PORT:-18190}
HELPER=scripts/bench/scale.py
command -v wrk >/dev/null || { echo "bench: installing wrk" >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
[[ -n "${BENCH_NO_BUILD:-}" ]] || cargo build --release --quiet --bin github-action-autoscaler
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gaa-scale-bench.XXXXXX")
PID=""
stop() { [[ -z "$PID" ]] || { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; PID=""; }; }
cleanup() { stop; rm -rf "$WORK"; }
trap cleanup EXIT
log() { echo "bench-scale: $*"; }

mkdir -p "$WORK/manifests"
python3 "$HELPER" manifests "$WORK/manifests" "$RUNNERS" "$REPOS"
python3 "$HELPER" paths "$WORK/paths.lua" "$RUNNERS"
printf 'scale-bench-secret' >"$WORK/webhook-secret"

start() {
  RUST_LOG=warn target/release/github-action-autoscaler serve --manifests "$WORK/manifests" \
    --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --unauthenticated-reads \
    --webhook-secret-file "$WORK/webhook-secret" >>"$WORK/server.log" 2>&1 &
  PID=$!
}
ready() { curl -sf "127.0.0.1:$PORT/readyz" >/dev/null; }
# total_is N: the runners' demand adds up to N jobs (each job matches one runner).
total_is() {
  local total
  total=$(curl -sf "127.0.0.1:$PORT/api/v1/scaledactionrunners" |
    python3 -c 'import json,sys; print(sum(r["demand"] for r in json.load(sys.stdin)["items"]))')
  [[ "$total" == "$1" ]] || { log "the runners' demand adds up to $total, not $1"; exit 1; }
}
wait_until() {
  for _ in $(seq 1 3000); do "$@" && return 0; sleep 0.05; done
  log "timed out: $*"; tail -20 "$WORK/server.log"; exit 1
}
rss() { python3 "$HELPER" rss "$PID"; }

t0=$(date +%s.%N)
start
wait_until ready
total_is 0
log "$RUNNERS runners over $REPOS repositories loaded in $(python3 -c "print(f'{$(date +%s.%N) - $t0:.2f}')") s"
read -r idle_rss idle_hwm <<<"$(rss)"
log "memory with the runners alone: RSS ${idle_rss} MiB (peak ${idle_hwm} MiB)"

python3 "$HELPER" send "http://127.0.0.1:$PORT" scale-bench-secret "$JOBS" "$REPOS" | sed 's/^/bench-scale: /'
total_is "$JOBS"
sleep 12 # one checkpoint interval: the journal compacts into a checkpoint
read -r jobs_rss jobs_hwm <<<"$(rss)"
log "memory with $JOBS open jobs: RSS ${jobs_rss} MiB (peak ${jobs_hwm} MiB)"

wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/paths.lua" "http://127.0.0.1:$PORT" >"$WORK/wrk.txt"
python3 - "$WORK/wrk.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rate = re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)
p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)
p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"bench-scale: metrics-api GET of a random runner: {float(rate):,.0f} requests/s, p50 {p50}, p99 {p99}"
      + (f", {errors.group(1)} not 2xx" if errors else ""))
PY

stop
t0=$(date +%s.%N)
start
wait_until ready
log "start-up with $JOBS open jobs in the journal: ready with all of them in $(python3 -c "print(f'{$(date +%s.%N) - $t0:.2f}')") s"
read -r restart_rss restart_hwm <<<"$(rss)"
total_is "$JOBS"
log "memory after the restart: RSS ${restart_rss} MiB (peak ${restart_hwm} MiB)"
