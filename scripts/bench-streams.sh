#!/usr/bin/env bash
# KEDA stream fan-out: 5,000 open StreamIsActive streams and 1,000 demand changes a second, each
# flipping one runner; prints the CPU time the process spent per delivery (benches/streams.rs).
#
# environment: BENCH_RUNNERS=5000 BENCH_DELIVERIES=10000 BENCH_RATE=1000
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --quiet --bench streams -- \
  --runners "${BENCH_RUNNERS:-5000}" --deliveries "${BENCH_DELIVERIES:-10000}" --rate "${BENCH_RATE:-1000}"
