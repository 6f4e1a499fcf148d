#!/usr/bin/env bash
# The operator at scale, on the real control plane of scripts/dev-cluster: installs
# deploy/install.yaml, runs the release build's `operator` out of cluster with a token of its own
# ServiceAccount, applies a core and RUNNERS ScaledActionRunners (default 1,000, over NAMESPACES
# namespaces, 10 by default) at once, and reports from the API server's audit log
#   - the time from the apply until every runner is Ready=True (convergence from nothing);
#   - the operator's requests while converging, by verb, and per runner;
#   - its requests in the idle minute that follows, by verb (idle means no writes).
# Uses its own cluster state directory, so it can run beside a cluster of scripts/dev-cluster.
#
# environment: BENCH_RUNNERS=1000 BENCH_NAMESPACES=10 BENCH_IDLE=60 BENCH_NO_BUILD=1
#              GAA_DEV_CLUSTER_DIR=/tmp/gaa-bench-operator
set -euo pipefail
cd "$(dirname "$0")/.."
RUNNERS=${BENCH_RUNNERS:-1000}
NAMESPACES=${BENCH_NAMESPACES:-10}
IDLE=${BENCH_IDLE:-60}
export GAA_DEV_CLUSTER_DIR=${GAA_DEV_CLUSTER_DIR:-/tmp/gaa-bench-operator}
log() { echo "bench-operator: $*"; }

[[ -n "${BENCH_NO_BUILD:-}" ]] || cargo build --release --quiet --bin github-action-autoscaler
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gaa-operator-bench.XXXXXX")
OPERATOR=""
cleanup() {
  [[ -z "$OPERATOR" ]] || { kill "$OPERATOR" 2>/dev/null; wait "$OPERATOR" 2>/dev/null || true; }
  scripts/dev-cluster down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

eval "$(scripts/dev-cluster up | tail -n 2)"
kubectl apply --server-side -f deploy/install.yaml >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
  crd/scaledactionrunners.runner.devjoes.com crd/scaledactionrunnercore.runner.devjoes.com >/dev/null

# The operator as itself: a kubeconfig with a token of its ServiceAccount.
ACCOUNT=github-action-autoscaler-operator
NS=github-action-autoscaler
kubeconfig="$WORK/operator.kubeconfig"
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' |
  base64 -d >"$WORK/ca.crt"
KUBECONFIG="$kubeconfig" kubectl config set-cluster bench --server="$server" \
  --certificate-authority="$WORK/ca.crt" --embed-certs >/dev/null
KUBECONFIG="$kubeconfig" kubectl config set-credentials "$ACCOUNT" \
  --token="$(kubectl -n "$NS" create token "$ACCOUNT" --duration=2h)" >/dev/null
KUBECONFIG="$kubeconfig" kubectl config set-context bench --cluster=bench --user="$ACCOUNT" >/dev/null
KUBECONFIG="$kubeconfig" kubectl config use-context bench >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
KUBECONFIG="$kubeconfig" RUST_LOG=warn target/release/github-action-autoscaler operator \
  --listen "127.0.0.1:$port" >"$WORK/operator.log" 2>&1 &
OPERATOR=$!
for _ in $(seq 1 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done

python3 - "$RUNNERS" "$NAMESPACES" >"$WORK/objects.yaml" <<'PY'
import sys
runners, namespaces = int(sys.argv[1]), int(sys.argv[2])
print("apiVersion: v1\nkind: Namespace\nmetadata: {name: github}")
print("---\nkind: ScaledActionRunnerCore\napiVersion: runner.devjoes.com/v1alpha1\nmetadata: {name: core}\n"
      "spec: {apiServerName: metrics, apiServerNamespace: github, sslCertSecret: tls-cert}")
for n in range(namespaces):
    print(f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: team-{n}}}")
for i in range(runners):
    print(f"---\napiVersion: runner.devjoes.com/v1alpha1\nkind: ScaledActionRunner\n"
          f"metadata: {{name: runner-{i}, namespace: team-{i % namespaces}}}\n"
          f"spec: {{owner: acme, repo: repo-{i}, maxRunners: 4, runner: {{runnerLabels: linux}}}}")
PY

# audit SINCE UNTIL: the operator's requests in [SINCE, UNTIL), counted by verb.
audit() {
  python3 - "$GAA_DEV_CLUSTER_DIR/audit.log" "system:serviceaccount:$NS:$ACCOUNT" "$1" "$2" <<'PY'
import collections, json, sys
path, user, since, until = sys.argv[1:]
verbs = collections.Counter()
for line in open(path):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if event.get("stage") != "ResponseComplete" or event["user"].get("username") != user:
        continue
    if since <= event["requestReceivedTimestamp"] < until:
        verbs[event["verb"]] += 1
print(sum(verbs.values()), " ".join(f"{verb} {count}" for verb, count in sorted(verbs.items())))
PY
}
now() { date -u +%Y-%m-%dT%H:%M:%S.%6NZ; }

started=$(now)
t0=$(date +%s.%N)
kubectl apply --server-side -f "$WORK/objects.yaml" >/dev/null
ready_count() {
  kubectl get scaledactionrunners -A -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
print(sum(any(c["type"] == "Ready" and c["status"] == "True" for c in (i.get("status") or {}).get("conditions", []))
          for i in items))'
}
for _ in $(seq 1 600); do
  ready=$(ready_count)
  [[ "$ready" == "$RUNNERS" ]] && break
  sleep 1
done
converged=$(now)
took=$(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')")
[[ "$ready" == "$RUNNERS" ]] || { log "only $ready of $RUNNERS runners Ready after 600 s"; tail -20 "$WORK/operator.log"; exit 1; }
log "$RUNNERS runners in $NAMESPACES namespaces Ready $took s after they were applied"
read -r total verbs <<<"$(audit "$started" "$converged")"
log "requests while converging: $total ($verbs), $(python3 -c "print(f'{$total / $RUNNERS:.1f}')") per runner"

sleep 15 # the last reconciles and status writes settle
idle_from=$(now)
sleep "$IDLE"
idle_until=$(now)
read -r total verbs <<<"$(audit "$idle_from" "$idle_until")"
log "requests in an idle ${IDLE} s: $total (${verbs:-none})"
case " $verbs " in
  *" create "* | *" update "* | *" patch "* | *" delete "*) log "the idle operator wrote"; exit 1 ;;
esac
