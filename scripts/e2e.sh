#!/usr/bin/env bash
# The end-to-end suite on a real control plane: brings a cluster up with scripts/dev-cluster
# (kube-apiserver, etcd, kube-controller-manager and the KEDA operator on loopback), runs
# `cargo test --test e2e` against it, and tears it down. A missing tool or a cluster that does
# not come up is a failure, never a skip. The suite's last line is `N passed, N failed`.
#
# usage: scripts/e2e.sh [STEP-FILTER]
#   GAA_E2E_KEEP=1   leave the cluster up afterwards (scripts/dev-cluster down removes it)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-0}"

started=$(date +%s)
# Debian's Prometheus scrapes serve and the operator in the suite.
if ! command -v prometheus >/dev/null 2>&1; then
  echo "e2e: installing prometheus (Debian package)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# The Prometheus operator's ServiceMonitor CRD, from its pinned Go module (the suite's core names
# a Prometheus namespace, so the operator writes a ServiceMonitor).
PROMETHEUS_OPERATOR=github.com/prometheus-operator/prometheus-operator@v0.85.0
crd_dir="$(cd /tmp && go mod download -json "$PROMETHEUS_OPERATOR" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
export GAA_E2E_SERVICEMONITOR_CRD="$crd_dir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"
[ -f "$GAA_E2E_SERVICEMONITOR_CRD" ] || { echo "e2e: no ServiceMonitor CRD at $GAA_E2E_SERVICEMONITOR_CRD" >&2; exit 1; }

# Build first, so the cluster is not kept waiting for the compiler.
cargo build --locked --quiet --bin github-action-autoscaler --test e2e

up="$(mktemp)"
if ! scripts/dev-cluster up >"$up"; then
  # One more try from a clean state, saying so: a component that dies while starting on a busy
  # machine should not fail the run on its own; a second failure does.
  cat "$up" >&2
  echo "e2e: the cluster did not come up; once more from a clean state" >&2
  scripts/dev-cluster down >/dev/null 2>&1 || true
  if ! scripts/dev-cluster up >"$up"; then
    cat "$up" >&2
    echo "e2e: the cluster did not come up" >&2
    echo "0 passed, 1 failed"
    exit 1
  fi
fi
if [ -z "${GAA_E2E_KEEP:-}" ]; then
  trap 'scripts/dev-cluster down >/dev/null 2>&1 || true' EXIT
fi
# shellcheck disable=SC1090
eval "$(grep '^export ' "$up")"
rm -f "$up"
echo "e2e: cluster up after $(( $(date +%s) - started )) s"

status=0
cargo test --locked --quiet --test e2e -- "$@" || status=$?
echo "e2e: finished after $(( $(date +%s) - started )) s"
exit "$status"
