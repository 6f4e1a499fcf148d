#!/usr/bin/env bash
# Runs every test of github-action-autoscaler on a Debian/Ubuntu machine with Rust:
# formatting, lints, unit, router, property and process tests.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Debug info doubles the target folder and is not needed to run tests.
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-0}"

step() { printf '\n== %s\n' "$*"; }

# The shared-store tests run against a real memcached (Debian's package), and the SASL test
# needs saslpasswd2 (sasl2-bin) to make its password database. The tests start their own
# servers on free loopback ports; the packages only have to be installed.
if ! command -v memcached >/dev/null 2>&1 || ! command -v saslpasswd2 >/dev/null 2>&1; then
  step "installing memcached and sasl2-bin (Debian packages)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends memcached sasl2-bin >/dev/null
fi
memcached -V

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings

step "CRDs are current"
cargo run --locked --quiet -- crds | diff -u crds/runner.devjoes.com.yaml - \
  || { echo "crds/ is stale: run 'cargo run -- crds > crds/runner.devjoes.com.yaml'" >&2; exit 1; }

step "cargo test"
cargo test --locked
