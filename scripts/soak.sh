#!/usr/bin/env bash
# Soak test with faults: two `serve` replicas (the release build) sharing a real memcached and
# resyncing from the fake GitHub of tests/common/fake_github.rs, fed signed workflow_job
# deliveries built from fixtures/webhooks/ (late, out of order, duplicated, 5% never sent) for
# N minutes while memcached and the replicas are killed and restarted and GitHub answers 5xx and
# secondary limits; then it checks that no acknowledged delivery was lost, that every runner's
# demand on both replicas equals what GitHub holds, and that each replica's memory stayed flat.
# The driver is tests/soak/ (`cargo test --release --test soak`); it prints a summary and ends
# with `soak: 1 passed, 0 failed` or the failures.
#
#   scripts/soak.sh [--minutes N] [--seed N] [--settle SECONDS] [--keep-replicas] [--retention-minutes N]
#
# --keep-replicas leaves the replicas running (memcached and GitHub still fail), to follow one
# process's memory over the whole run; the samples are in the work directory's rss.tsv.
# --retention-minutes N (default 10, at least 2) is the replicas' --journal-retention: memory
# grows until then and is judged from two minutes after it.
# Everything listens on loopback only, on free ports. Needs Debian's memcached (installed here
# when missing). The processes the run starts are listed in its work directory's `pids` file and
# ended by their ids if the run itself dies; the work directory (journals, logs) is kept when the
# soak fails and removed when it passes (GAA_SOAK_KEEP=1 keeps it anyway).
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=3
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="${2:?--minutes needs a value}"; shift 2 ;;
    --seed|--settle|--retention-minutes) args+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    --keep-replicas) args+=("$1"); shift ;;
    *) echo "usage: scripts/soak.sh [--minutes N] [--seed N] [--settle SECONDS] [--keep-replicas] [--retention-minutes N]" >&2; exit 2 ;;
  esac
done

if ! command -v memcached >/dev/null 2>&1; then
  echo "== installing memcached (Debian package)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends memcached >/dev/null
fi
command -v memcached >/dev/null 2>&1 || { echo "memcached is not installed and could not be" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/gaa-soak.XXXXXX")"
status=1
cleanup() {
  # Only the processes this run started, by id, and only while they still are what we started.
  if [ -f "$work/pids" ]; then
    while read -r pid name; do
      if [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && grep -q "$(printf '%.15s' "$name")" "/proc/$pid/comm"; then
        kill -9 "$pid" 2>/dev/null || true
      fi
    done <"$work/pids"
  fi
  if [ "$status" -eq 0 ] && [ -z "${GAA_SOAK_KEEP:-}" ]; then
    rm -rf "$work"
  else
    echo "soak: journals and logs kept in $work" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
set +e
cargo test --release --locked --test soak -- --minutes "$minutes" --work-dir "$work" "${args[@]}"
status=$?
set -e
exit "$status"
