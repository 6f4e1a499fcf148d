#!/usr/bin/env bash
# Scale: the release build with RUNNERS ScaledActionRunners (default 10,000, over 2,500
# repositories) and JOBS open jobs (default 100,000 queued deliveries). Reports
#   - memory (VmRSS, and the peak VmHWM) with the runners alone, with every job open, and after
#     a restart on the journal those jobs left;
#   - the latency of three reads of a random runner (`wrk`, DURATION s each), with the server's
#     CPU time per request: the read API that KEDA's metrics-api trigger reads, the
#     custom.metrics.k8s.io value of one runner, and of every runner of a namespace (`*`, 200
#     runners at the defaults);
#   - start-up: SIGTERM, start again on the same data directory, time until /readyz answers 200
#     (the journal is opened and replayed before it does; every job is checked to be back), and
#     how much of it was opening the journal and replaying it.
# A summary of every figure ends the output. Loopback only.
#
# Latency is measured with one connection by default: a request at a time shows what a request
# costs. On a 2-core machine more connections measure wrk and the server competing for the
# cores (each saturates one). On a machine others use too, the p99 is mostly the time spent
# waiting for a core behind their work; the server's CPU time per request is the figure that
# holds there. (Real-time priority is no way around it: under SCHED_FIFO the server once took
# both cores at start-up and never became ready, starving everything else on the machine.)
#
# environment: BENCH_RUNNERS=10000 BENCH_REPOS=2500 BENCH_JOBS=100000 BENCH_DURATION=10
#              BENCH_CONNECTIONS=1 BENCH_THREADS=1 BENCH_PORT=18190 BENCH_NO_BUILD=1
set -euo pipefail
cd "$(dirname "$0")/.."
RUNNERS=${BENCH_RUNNERS:-10000}
REPOS=${BENCH_REPOS:-2500}
JOBS=${BENCH_JOBS:-100000}
DURATION=${BENCH_DURATION:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-1}
THREADS=${BENCH_THREADS:-1}
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
since() { python3 -c "print(f'{$(date +%s.%N) - $1:.2f}')"; }

mkdir -p "$WORK/manifests"
python3 "$HELPER" manifests "$WORK/manifests" "$RUNNERS" "$REPOS"
READS=(runner custom namespace)
declare -A READ_NAME=(
  [runner]="read API, one runner (KEDA metrics-api)"
  [custom]="custom metrics, one runner"
  [namespace]="custom metrics, a namespace's runners (*)"
)
for read in "${READS[@]}"; do python3 "$HELPER" paths "$WORK/$read.lua" "$RUNNERS" "$read"; done
printf 'scale-bench-secret' >"$WORK/webhook-secret"

# The journal's own start-up lines (opened, recovered, with their seconds) are logged.
start() {
  RUST_LOG=warn,gaa::store::writer=info target/release/github-action-autoscaler serve \
    --manifests "$WORK/manifests" --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --unauthenticated-reads \
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
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
# seconds NAME: the `seconds` field of the last log line with that message.
seconds() { sed -n "s/.*$1.* seconds=\([0-9.]*\).*/\1/p" "$WORK/server.log" | tail -1 | xargs printf '%.2f'; }

# Memory is read before each check that every job counts: the check lists every runner, and
# the memory that request frees would be counted until the next request frees some more.
t0=$(date +%s.%N)
start
wait_until ready
log "$RUNNERS runners over $REPOS repositories loaded in $(since "$t0") s"
read -r idle_rss idle_hwm <<<"$(rss)"
total_is 0
log "memory with the runners alone: RSS ${idle_rss} MiB (peak ${idle_hwm} MiB)"

python3 "$HELPER" send "http://127.0.0.1:$PORT" scale-bench-secret "$JOBS" "$REPOS" | sed 's/^/bench-scale: /'
sleep 12 # one checkpoint interval: the journal compacts into a checkpoint
read -r jobs_rss jobs_hwm <<<"$(rss)"
total_is "$JOBS"
log "memory with $JOBS open jobs: RSS ${jobs_rss} MiB (peak ${jobs_hwm} MiB)"

declare -A LATENCY
for read in "${READS[@]}"; do
  before=$(cpu_ticks)
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/$read.lua" \
    "http://127.0.0.1:$PORT" >"$WORK/wrk-$read.txt"
  after=$(cpu_ticks)
  LATENCY[$read]=$(python3 - "$WORK/wrk-$read.txt" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
before, after, tick = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
requests = int(re.search(r"(\d+) requests in", text).group(1))
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)
p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
cpu = (after - before) / tick / max(requests, 1) * 1e6
print(f"p50 {p50:>8}  p99 {p99:>8}  {rate:>9,.0f} requests/s  {cpu:6.1f} us of server CPU each"
      + (f"  ({errors.group(1)} not 2xx)" if errors else ""))
PY
)
  log "${READ_NAME[$read]}: ${LATENCY[$read]}"
done

stop
t0=$(date +%s.%N)
start
wait_until ready
startup=$(since "$t0")
read -r restart_rss restart_hwm <<<"$(rss)"
opened=$(seconds "journal opened")
recovered=$(seconds "journal recovered")
log "start-up with $JOBS open jobs in the journal: ready in $startup s (journal opened in $opened s, replayed in $recovered s)"
total_is "$JOBS"
log "memory after the restart: RSS ${restart_rss} MiB (peak ${restart_hwm} MiB)"

cat <<EOF

bench-scale: $RUNNERS runners over $REPOS repositories, $JOBS open jobs
  memory (VmRSS)     runners alone      ${idle_rss} MiB (peak ${idle_hwm} MiB)
                     every job open     ${jobs_rss} MiB (peak ${jobs_hwm} MiB)
                     after a restart    ${restart_rss} MiB (peak ${restart_hwm} MiB)
  start-up           ready in ${startup} s with every job back (journal opened in ${opened} s, replayed in ${recovered} s)
  reads              wrk, ${THREADS} thread(s), ${CONNECTIONS} connection(s), ${DURATION} s each
EOF
for read in "${READS[@]}"; do printf '    %-44s %s\n' "${READ_NAME[$read]}" "${LATENCY[$read]}"; done
