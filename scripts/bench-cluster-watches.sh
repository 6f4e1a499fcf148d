#!/usr/bin/env bash
# serve's cluster watches at scale: 5,000 ScaledActionRunners in 500 namespaces, each naming a
# webhook and a token Secret, against a mock Kubernetes API in a child process (plain HTTP on
# loopback). Prints the watches open at the API server, the requests sent, and serve's resident
# memory and open file descriptors once the first full catalog is loaded
# (benches/cluster_watches.rs). Each watch that is its own HTTP/1.1 request holds a connection,
# so the open-files limit is raised to its hard limit first.
#
# environment: BENCH_RUNNERS=5000 BENCH_NAMESPACES=500 BENCH_OTHERS=4
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"
exec cargo bench --quiet --bench cluster_watches -- \
  --runners "${BENCH_RUNNERS:-5000}" --namespaces "${BENCH_NAMESPACES:-500}" --others "${BENCH_OTHERS:-4}"
