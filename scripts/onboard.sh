#!/usr/bin/env bash
# Onboards a repository and applies the result: runs `github-action-autoscaler onboard` with the
# arguments given and pipes its YAML (Secrets + ScaledActionRunner) into `kubectl apply -f -`.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/onboard.sh ONBOARD-ARGUMENTS...

Runs `github-action-autoscaler onboard ONBOARD-ARGUMENTS...` (creates or updates the repository's
workflow_job webhook, or with --org the organisation's) and applies the printed Secrets and
ScaledActionRunner with kubectl.

  --dry-run      passed to onboard (GitHub is not changed) and nothing is applied: the YAML is
                 printed instead
  -f, --output   passed to onboard; the file it writes is then applied
  -h, --help     this help; `github-action-autoscaler onboard --help` lists the onboard arguments

example:
  scripts/onboard.sh -n example-repo -o acme -r example-repo -m 4 \
    -p read-token.txt -a admin-token.txt -s example-repo \
    --webhook-url https://ci.example.com/webhook --labels linux

The namespaces (-s, -g) must exist. The admin token is only used for the GitHub calls; the
read token and the webhook secret end up in the applied Secrets.

environment:
  GAA_BIN   the github-action-autoscaler binary (default: the one on PATH, else
            `cargo run --release --quiet --` in this repository)
  KUBECTL   kubectl command (default: kubectl), e.g. "kubectl --context prod"
USAGE
}

dry_run=0
output=""
previous=""
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --dry-run) dry_run=1 ;;
    --output=*) output="${arg#--output=}" ;;
  esac
  case "$previous" in
    -f | --output) output="$arg" ;;
  esac
  previous="$arg"
done
if [ "$#" -eq 0 ]; then
  usage >&2
  exit 2
fi

if [ -n "${GAA_BIN:-}" ]; then
  bin=("$GAA_BIN")
elif command -v github-action-autoscaler >/dev/null 2>&1; then
  bin=(github-action-autoscaler)
else
  bin=(cargo run --release --quiet --manifest-path "$(dirname "$0")/../Cargo.toml" --)
fi
read -r -a kubectl <<<"${KUBECTL:-kubectl}"

if [ "$dry_run" = 1 ]; then
  exec "${bin[@]}" onboard "$@"
fi
if [ -n "$output" ]; then
  "${bin[@]}" onboard "$@"
  "${kubectl[@]}" apply -f "$output"
else
  # Captured first: a failed onboard must not feed kubectl a partial stream.
  yaml="$("${bin[@]}" onboard "$@")"
  printf '%s\n' "$yaml" | "${kubectl[@]}" apply -f -
fi
