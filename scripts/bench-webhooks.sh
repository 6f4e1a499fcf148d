#!/usr/bin/env bash
# Webhook receiver benchmark: how many signed workflow_job deliveries per second the real
# `serve` accepts (journal on, its default), against the ceiling of an HMAC-only receiver
# (examples/hmac_ceiling.rs), with the same never-repeated deliveries.
#
# Throughput is what a target sustains once it is saturated, so every target is run at several
# connection counts and compared at its best. A receiver that flushes to disk before answering
# spends part of each request waiting for the disk, not the CPU: with few connections it runs
# out of requests to work on before it runs out of CPU, while the HMAC-only ceiling is busy at
# any count. The table shows every count, so the figures at each are there to read.
#
# usage: scripts/bench-webhooks.sh
#
# environment:
#   BENCH_DELIVERIES=480000  deliveries per run (a third each queued / in_progress / completed);
#                            enough for the server to run past its 10 s checkpoint interval
#   BENCH_CONNECTIONS="32 64 128"  wrk connection counts to run each target at
#   BENCH_REPEAT=3           runs of each target at each count; the table shows the median run
#                            (by deliveries/s), since one run of a few seconds varies by +-5%
#   BENCH_THREADS=2          wrk threads
#   BENCH_TARGET_ONLY=       "server" or "ceiling" to run only one of the two
#   BENCH_SERVER_PORT=18080  BENCH_CEILING_PORT=18090
#   BENCH_TIMEOUT=300        seconds before a run that has not finished is cut off
#   BENCH_NO_BUILD=1         use the binaries already in target/release
#   BENCH_KEEP=1             keep the work directory (requests, logs, server data) afterwards
#   BENCH_SERVER_WRAP=       command prefix for the server, e.g. "perf record -g -o /tmp/perf.data"
#                            (the CPU column then counts the wrapper's process, not the server's)
#   BENCH_CEILING_WRAP=      the same for the ceiling
#   BENCH_STORE=sled         "sled", "memcached" (starts a local memcached and serves with
#                            --store memcached://…), or "both" (sled and memcached in one run)
#   BENCH_MEMCACHED_PORT=18211
#
# Each delivery is sent exactly once (scripts/bench/replay.lua), so the server's dedupe never
# short-circuits. Exits 1 if any delivery was refused, lost or answered non-2xx.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

DELIVERIES=${BENCH_DELIVERIES:-480000}
read -r -a CONNECTION_COUNTS <<<"${BENCH_CONNECTIONS:-32 64 128}"
REPEAT=${BENCH_REPEAT:-3}
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "bench: BENCH_REPEAT must be a positive count" >&2; exit 2; }
for c in "${CONNECTION_COUNTS[@]}"; do
  [[ "$c" =~ ^[1-9][0-9]*$ ]] || { echo "bench: BENCH_CONNECTIONS must be connection counts, got '$c'" >&2; exit 2; }
done
THREADS=${BENCH_THREADS:-2}
ONLY=${BENCH_TARGET_ONLY:-}
SERVER_PORT=${BENCH_SERVER_PORT:-18080}
CEILING_PORT=${BENCH_CEILING_PORT:-18090}
TIMEOUT=${BENCH_TIMEOUT:-300}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
FIXTURE=fixtures/webhooks/workflow_job.queued.json
MANIFESTS=fixtures/manifests/demo

STORE=${BENCH_STORE:-sled}
MEMCACHED_PORT=${BENCH_MEMCACHED_PORT:-18211}
case "$STORE" in
  sled) SERVERS=(server) ;;
  memcached) SERVERS=(server-memcached) ;;
  both) SERVERS=(server server-memcached) ;;
  *) echo "bench: BENCH_STORE must be sled, memcached or both" >&2; exit 2 ;;
esac
case "$ONLY" in
  "") TARGETS=("${SERVERS[@]}" ceiling) ;;
  server) TARGETS=("${SERVERS[@]}") ;;
  ceiling) TARGETS=(ceiling) ;;
  *) echo "bench: BENCH_TARGET_ONLY must be server or ceiling" >&2; exit 2 ;;
esac

log() { printf 'bench: %s\n' "$*" >&2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gaa-bench.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n "${BENCH_KEEP:-}" ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools --------------------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
  log "installing wrk (Debian package)"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
for tool in curl python3 wrk; do
  command -v "$tool" >/dev/null || { log "needs $tool"; exit 2; }
done

# --- build --------------------------------------------------------------------------------------
if [[ -z "${BENCH_NO_BUILD:-}" ]]; then
  if [[ "$ONLY" == ceiling ]]; then
    cargo build --release --example hmac_ceiling
  else
    cargo build --release --bin github-action-autoscaler --example hmac_ceiling
  fi
fi
SERVER_BIN=$TARGET_DIR/release/github-action-autoscaler
CEILING_BIN=$TARGET_DIR/release/examples/hmac_ceiling

# --- requests -----------------------------------------------------------------------------------
GEN=$(python3 scripts/bench/gen-requests.py --fixture "$FIXTURE" --deliveries "$DELIVERIES" \
  --secret demo-webhook-secret -o "$WORK/requests.txt" 2>&1)
log "${GEN#gen-requests: }"
MEAN_BYTES=$(sed -n 's/.*mean \([0-9]*\).*/\1/p' <<<"$GEN")
DELIVERIES=$(sed -n 's/^gen-requests: \([0-9]*\) deliveries.*/\1/p' <<<"$GEN") # rounded to whole jobs

# --- one run ------------------------------------------------------------------------------------
wait_ready() { # url, want ("200" or "any"), pid, name
  local url=$1 want=$2 pid=$3 name=$4 code
  for _ in $(seq 1 600); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited before it was ready; its log:"
      cat "$WORK/$name.log" >&2
      exit 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
    if [[ "$want" == any && "$code" != 000 ]] || [[ "$code" == "$want" ]]; then return 0; fi
    sleep 0.1
  done
  log "$name not ready at $url after 60 s; its log:"
  cat "$WORK/$name.log" >&2
  exit 1
}

port_free() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/" || true)
  [[ "$code" == 000 ]] || { log "port $1 is already in use"; exit 2; }
}

cpu_ticks() { # pid: user + system clock ticks of the process so far (0 if it is gone)
  awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

declare -A RESULT CPU_US
run() { # name, connections, repetition
  local name=$1 conns=$2 rep=$3 port pid ready want memcached_pid=""
  case "$name" in
    server | server-memcached)
      port=$SERVER_PORT
      mkdir -p "$WORK/$name-data"
      port_free "$port"
      local store=(--store sled)
      if [[ "$name" == server-memcached ]]; then
        port_free "$MEMCACHED_PORT"
        memcached -l 127.0.0.1 -p "$MEMCACHED_PORT" -U 0 -m 256 -u nobody >"$WORK/memcached.log" 2>&1 &
        memcached_pid=$!
        PIDS+=("$memcached_pid")
        store=(--store "memcached://127.0.0.1:$MEMCACHED_PORT")
      fi
      # shellcheck disable=SC2086 # BENCH_SERVER_WRAP is a command prefix, e.g. "perf record -g -o F"
      RUST_LOG=warn ${BENCH_SERVER_WRAP:-} "$SERVER_BIN" serve --manifests "$MANIFESTS" --data-dir "$WORK/$name-data" \
        --listen "127.0.0.1:$port" --unauthenticated-reads "${store[@]}" >"$WORK/$name.log" 2>&1 &
      ready="http://127.0.0.1:$port/healthz" want=200
      ;;
    ceiling)
      port=$CEILING_PORT
      port_free "$port"
      # shellcheck disable=SC2086
      RUST_LOG=warn ${BENCH_CEILING_WRAP:-} "$CEILING_BIN" --listen "127.0.0.1:$port" >"$WORK/ceiling.log" 2>&1 &
      ready="http://127.0.0.1:$port/webhook" want=any # it serves nothing but POST /webhook
      ;;
  esac
  pid=$!
  PIDS+=("$pid")
  wait_ready "$ready" "$want" "$pid" "$name"

  log "$name: replaying $DELIVERIES deliveries with $THREADS threads, $conns connections (run $rep of $REPEAT)"
  rm -rf "$WORK/$name.done"
  mkdir -p "$WORK/$name.done"
  local cpu_before
  cpu_before=$(cpu_ticks "$pid")
  wrk -t"$THREADS" -c"$conns" -d"${TIMEOUT}s" --timeout 10s --latency \
    -s scripts/bench/replay.lua "http://127.0.0.1:$port/webhook" -- \
    file="$WORK/requests.txt" threads="$THREADS" donedir="$WORK/$name.done" | tee "$WORK/$name.$conns.$rep.wrk.txt"
  # CPU the target spent on the run (all its threads), per delivery: less noisy than the rate
  # when the machine's speed drifts, and what the two targets are really compared on.
  local cpu_after
  cpu_after=$(cpu_ticks "$pid")
  CPU_US[$name@$conns@$rep]=$(awk -v a="$cpu_before" -v b="$cpu_after" -v hz="$(getconf CLK_TCK)" -v n="$DELIVERIES" \
    'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }')

  if [[ "$name" == server* ]]; then
    # Every job was completed, so every runner's demand should be back to zero.
    log "server: GET /api/v1/scaledactionrunners after the run:"
    curl -s --max-time 5 "http://127.0.0.1:$port/api/v1/scaledactionrunners" | python3 -c '
import json, sys
raw = sys.stdin.read()
try:
    doc = json.loads(raw)
    items = doc.get("items", doc) if isinstance(doc, dict) else doc
    for r in items:
        meta = r.get("metadata", r)
        print("  %s/%s demand=%s queued=%s inProgress=%s desiredRunners=%s" % (
            meta.get("namespace"), meta.get("name"), r.get("demand"), r.get("queued"),
            r.get("inProgress"), r.get("desiredRunners")))
except Exception:
    print("  " + raw[:400])
' >&2 || true
    du -sh "$WORK/$name-data" | sed 's/^/  journal: /' >&2 || true
    # Group commit at work: deliveries per flush and flush time, from the server's own metrics.
    curl -s --max-time 5 "http://127.0.0.1:$port/metrics" | python3 -c '
import sys
m = {}
for line in sys.stdin:
    if line.startswith("gaa_journal_") and not line.startswith("#"):
        name, _, value = line.rpartition(" ")
        m[name] = float(value)
def mean(h):
    n = m.get(h + "_count", 0)
    return (m.get(h + "_sum", 0) / n, n) if n else (0, 0)
size, batches = mean("gaa_journal_batch_deliveries")
flush, flushes = mean("gaa_journal_flush_seconds")
print("  group commit: %d batches, %.1f deliveries per batch; %d flushes, mean flush %.2f ms" % (
    batches, size, flushes, flush * 1000))
' >&2 || true
  fi

  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  RUNS[$name@$conns]+="$(grep '^GAA-BENCH ' "$WORK/$name.$conns.$rep.wrk.txt" || echo "GAA-BENCH missing=1 rate=0") cpu_us=${CPU_US[$name@$conns@$rep]}"$'\n'
  if [[ -n "$memcached_pid" ]]; then
    kill "$memcached_pid" 2>/dev/null || true
    wait "$memcached_pid" 2>/dev/null || true
  fi
  # Each run starts from an empty journal (and an empty memcached).
  rm -rf "$WORK/$name-data"
}

declare -A RUNS
# Repetitions are interleaved, so a slow spell of the machine does not fall on one target only.
for rep in $(seq 1 "$REPEAT"); do
  for conns in "${CONNECTION_COUNTS[@]}"; do
    for target in "${TARGETS[@]}"; do run "$target" "$conns" "$rep"; done
  done
done
# The median run of each target and count, by deliveries/s.
for key in "${!RUNS[@]}"; do
  RESULT[$key]=$(printf '%s' "${RUNS[$key]}" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^rate=/) r = substr($i, 6); print r "\t" $0 }' |
    sort -g | awk -v n="$REPEAT" 'NR == int((n + 1) / 2) { sub(/^[^\t]*\t/, ""); print }')
  bad=$(printf '%s' "${RUNS[$key]}" | awk '{ e = a = n = ""; for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "expected") e = kv[2]; if (kv[1] == "answered") a = kv[2]; if (kv[1] == "non2xx") n = kv[2] } if (e == "" || e != a || n != 0) c++ } END { print c + 0 }')
  if [[ "$bad" != 0 ]]; then
    log "${key%@*} at ${key#*@} connections: $bad run(s) did not answer every delivery 2xx (see $WORK/${key%@*}.${key#*@}.*.wrk.txt)"
    FAILED_RUNS=1
  fi
done

# --- summary ------------------------------------------------------------------------------------
field() { # "GAA-BENCH k=v ...", key
  sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" ${1#GAA-BENCH}"
}
ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }

status=0
echo
echo "Webhook benchmark: median of $REPEAT runs, $DELIVERIES deliveries per run (from $FIXTURE, mean body $MEAN_BYTES bytes), wrk $THREADS threads, $(nproc) CPUs, data dir on $(stat -f -c %T "$WORK")"
printf '%-17s %11s %11s %9s %8s %9s %13s %10s %10s %9s\n' target connections deliveries answered non-2xx seconds deliveries/s p50 p99 cpu-us/dlv
declare -A PEAK
for target in "${TARGETS[@]}"; do
  for conns in "${CONNECTION_COUNTS[@]}"; do
    r=${RESULT[$target@$conns]}
    printf '%-17s %11s %11s %9s %8s %9s %13s %10s %10s %9s\n' "$target" "$conns" "$(field "$r" expected)" \
      "$(field "$r" answered)" "$(field "$r" non2xx)" "$(field "$r" seconds)" "$(field "$r" rate)" \
      "$(ms "$(field "$r" p50_us)")" "$(ms "$(field "$r" p99_us)")" "$(field "$r" cpu_us)"
    if [[ "$(field "$r" answered)" != "$(field "$r" expected)" || "$(field "$r" non2xx)" != 0 ]]; then
      status=1
    fi
    best=${PEAK[$target]:-}
    if [[ -z "$best" ]] || awk -v a="$(field "$r" rate)" -v b="$(field "${RESULT[$target@$best]}" rate)" 'BEGIN { exit !(a > b) }'; then
      PEAK[$target]=$conns
    fi
  done
done
if [[ "$REPEAT" -gt 1 ]]; then
  echo "every run, deliveries/s (the target's CPU microseconds per delivery):"
  for target in "${TARGETS[@]}"; do
    for conns in "${CONNECTION_COUNTS[@]}"; do
      printf '  %-17s %4s connections: %s\n' "$target" "$conns" "$(printf '%s' "${RUNS[$target@$conns]}" |
        awk '{ r = c = ""; for (i = 1; i <= NF; i++) { if ($i ~ /^rate=/) r = substr($i, 6); if ($i ~ /^cpu_us=/) c = substr($i, 8) }
               printf "%s%.0f (%s)", (NR > 1 ? "  " : ""), r, c }')"
    done
  done
fi
if [[ -n "${PEAK[ceiling]:-}" ]]; then
  c=${RESULT[ceiling@${PEAK[ceiling]}]}
  for target in "${SERVERS[@]}"; do
    [[ -n "${PEAK[$target]:-}" ]] || continue
    s=${RESULT[$target@${PEAK[$target]}]}
    awk -v name="$target" -v sn="${PEAK[$target]}" -v cn="${PEAK[ceiling]}" -v sr="$(field "$s" rate)" \
      -v cr="$(field "$c" rate)" -v s99="$(field "$s" p99_us)" 'BEGIN {
        printf "%s/ceiling at their best: %.0f/s (%d connections, p99 %.2f ms) / %.0f/s (%d connections) = %.2f\n",
          name, sr, sn, s99 / 1000, cr, cn, (cr > 0 ? sr / cr : 0) }'
  done
fi
if [[ -n "${FAILED_RUNS:-}" ]]; then status=1; fi
if [[ $status -ne 0 ]]; then BENCH_KEEP=1; fi # the messages above point into $WORK
exit $status
