#!/usr/bin/env bash
# Fuzzes the parsers that read what others write: webhook payloads and their signature header,
# manifests, durations, and the value replicas share through memcached.
#
#   scripts/fuzz.sh [--seconds N] [target...]
#
# Runs each target (all of fuzz/fuzz_targets/ by default) for N seconds (60 by default) with
# libFuzzer, through cargo-fuzz on stable Rust: no sanitizer (the crate forbids unsafe code), with
# debug assertions and overflow checks. A crash fails the run and names its reproducer. Prints the
# executions of each target. New inputs go to fuzz/target/corpus/<target> (seeded from the
# committed fuzz/corpus/<target>), so later runs start from what earlier ones found.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2

usage() { sed -n '2,12s/^# \{0,1\}//p' "$0"; }

seconds=60
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="${2:-}"; shift 2 || { usage >&2; exit 2; } ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "--seconds takes a positive whole number, not '$seconds'" >&2; exit 2; }
if [ "${#targets[@]}" -eq 0 ]; then
  for file in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$file" .rs)"); done
fi
for target in "${targets[@]}"; do
  [ -f "fuzz/fuzz_targets/$target.rs" ] || { echo "no fuzz target '$target' in fuzz/fuzz_targets/" >&2; exit 2; }
done

# libfuzzer-sys compiles libFuzzer, which is C++; cargo-fuzz is pinned and comes from crates.io.
if ! command -v c++ >/dev/null 2>&1; then
  echo "installing g++ (Debian package): libFuzzer is built from C++ sources"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --quiet --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

# The fuzz crate is its own workspace with its own Cargo.lock, which must be current.
cargo fetch --quiet --locked --manifest-path fuzz/Cargo.toml || {
  echo "fuzz/Cargo.lock is stale (the product's dependencies changed): run" >&2
  echo "  cargo update --manifest-path fuzz/Cargo.toml -p github-action-autoscaler" >&2
  exit 1
}
# No sanitizer: AddressSanitizer needs nightly Rust, and safe Rust has nothing for it to find
# that the fuzzer would not see as a panic.
fuzz=(--sanitizer none)
logs=fuzz/target/logs
mkdir -p "$logs"
echo "building the fuzz targets (log: $logs/build.log)"
if ! cargo fuzz build "${fuzz[@]}" >"$logs/build.log" 2>&1; then
  tail -n 60 "$logs/build.log" >&2
  echo "building the fuzz targets failed" >&2
  exit 1
fi
failed=()
total_runs=0
total_seconds=0
printf '\n%-24s %8s %14s %10s %8s\n' target seconds executions "exec/s" corpus
for target in "${targets[@]}"; do
  corpus="fuzz/target/corpus/$target"
  mkdir -p "$corpus"
  options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  [ -f "fuzz/dictionaries/$target.dict" ] && options+=(-dict="fuzz/dictionaries/$target.dict")
  log="$logs/$target.log"
  started=$(date +%s)
  status=0
  # New inputs are written to the first corpus directory: the scratch one, never the seeds.
  cargo fuzz run "${fuzz[@]}" "$target" "$corpus" "fuzz/corpus/$target" -- "${options[@]}" >"$log" 2>&1 || status=$?
  elapsed=$(($(date +%s) - started))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  size=$(find "$corpus" -type f | wc -l)
  printf '%-24s %8s %14s %10s %8s\n' "$target" "$elapsed" "${runs:-?}" "${rate:-?}" "$size"
  total_runs=$((total_runs + ${runs:-0}))
  total_seconds=$((total_seconds + elapsed))
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    {
      echo
      echo "== $target FAILED (exit $status); the end of $log:"
      tail -n 40 "$log"
      reproducer=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
      if [ -n "$reproducer" ]; then
        echo
        echo "reproducer: $reproducer"
        echo "reproduce with: cargo fuzz run ${fuzz[*]} $target $reproducer"
      fi
      echo
    } >&2
  fi
done
printf '%-24s %8s %14s\n' total "$total_seconds" "$total_runs"

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found a failure in: ${failed[*]}" >&2
  exit 1
fi
