#!/usr/bin/env bash
# Runs every test of github-action-autoscaler on a Debian/Ubuntu machine with Rust (and Go, for
# the control plane the end-to-end suite builds): formatting, lints, unit, router, property,
# process and durability tests, fuzzing, a 3-minute soak with faults, then the end-to-end suite
# on a real control plane.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Debug info doubles the target folder and is not needed to run tests.
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-0}"

step() { printf '\n== %s\n' "$*"; }

# The shared-store tests run against a real memcached (Debian's package), and the SASL test
# needs saslpasswd2 (sasl2-bin) to make its password database. The tests start their own
# servers on free loopback ports; the packages only have to be installed.
# The durability tests (tests/it/durability.rs) run as root: they make an ext4 image (e2fsprogs),
# attach it to a loop device and mount it (util-linux, mount), cut its power with an ioctl made
# by python3, and mount a small tmpfs to fill. They fail, never skip, without these.
packages=()
command -v memcached >/dev/null 2>&1 || packages+=(memcached)
command -v saslpasswd2 >/dev/null 2>&1 || packages+=(sasl2-bin)
command -v mkfs.ext4 >/dev/null 2>&1 || packages+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || packages+=(util-linux)
command -v mount >/dev/null 2>&1 || packages+=(mount)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
# The end-to-end suite (scripts/e2e.sh) runs a real control plane built from Go modules: it needs
# Go (on the machine already), openssl and curl for scripts/dev-cluster, and Debian's prometheus.
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
command -v curl >/dev/null 2>&1 || packages+=(curl)
command -v prometheus >/dev/null 2>&1 || packages+=(prometheus)
if [ "${#packages[@]}" -gt 0 ]; then
  step "installing ${packages[*]} (Debian packages)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
memcached -V

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings
# The soak driver is no test of `cargo test` (test = false), so --all-targets leaves it out.
cargo clippy --locked --test soak -- -D warnings

step "CRDs are current"
cargo run --locked --quiet -- crds | diff -u crds/runner.devjoes.com.yaml - \
  || { echo "crds/ is stale: run 'cargo run -- crds > crds/runner.devjoes.com.yaml'" >&2; exit 1; }

step "cargo test"
cargo test --locked

step "fuzzing, a minute per target (scripts/fuzz.sh)"
# Payloads, the signature header, manifests, durations and the shared memcached value, each
# fuzzed for 60 s with libFuzzer (cargo-fuzz, installed at a pinned version); a crash fails.
scripts/fuzz.sh --seconds 60

step "soak test with faults, 3 minutes (scripts/soak.sh)"
# Two release-build replicas on a real memcached and the fake GitHub, with memcached, the
# replicas and GitHub failing on a plan; fails on a lost delivery, wrong demand or growing memory.
scripts/soak.sh --minutes 3

step "manifests match their schemas (scripts/validate-manifests)"
# Strict schema checks of what the operator applies: built-in kinds against Kubernetes 1.33's
# schemas, KEDA, ServiceMonitor and runner.devjoes.com kinds against their CRDs (deploy/schemas/,
# crds/). The Python environment is .venv-validate/, from scripts/requirements-validate.txt.
scripts/validate-env.sh
cargo build --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/github-action-autoscaler"
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
manifests=()
# What the operator would apply: each fixture (runner fixtures beside the original example core,
# so ScaledObjects and Secret access are rendered too), and the full operator example.
for fixture in fixtures/original/*.yaml fixtures/manifests/demo/*.yaml; do
  out="$rendered/render-$(basename "$(dirname "$fixture")")-$(basename "$fixture")"
  with_core=(-f fixtures/original/core-example.yaml)
  grep -q '^kind: ScaledActionRunnerCore' "$fixture" && with_core=()
  "$bin" render "${with_core[@]}" -f "$fixture" >"$out" 2>"$rendered/notes" \
    || { cat "$rendered/notes" >&2; echo "render -f $fixture failed" >&2; exit 1; }
  manifests+=("$out")
done
"$bin" render -f fixtures/operator/example.yaml >"$rendered/render-operator-example.yaml" 2>"$rendered/notes" \
  || { cat "$rendered/notes" >&2; echo "render -f fixtures/operator/example.yaml failed" >&2; exit 1; }
manifests+=("$rendered/render-operator-example.yaml")
# The install manifests (the Helm chart renders to exactly these: tests/e2e checks it with real
# Helm) and what `onboard --dry-run` printed in `cargo test --test it onboard::`.
manifests+=(deploy/install.yaml "${CARGO_TARGET_DIR:-target}/onboard-rendered.yaml")

scripts/validate-manifests --quiet --self-test
scripts/validate-manifests --quiet --only runner.devjoes.com --only Secret --only CustomResourceDefinition \
  crds/runner.devjoes.com.yaml fixtures/original/*.yaml fixtures/manifests/demo/*.yaml
if [ "${#manifests[@]}" -gt 0 ]; then
  scripts/validate-manifests --quiet "${manifests[@]}"
fi

step "end-to-end suite on a real control plane (scripts/e2e.sh)"
command -v go >/dev/null 2>&1 || { echo "the end-to-end suite needs Go (1.26 or newer) to build its control plane" >&2; exit 1; }
scripts/e2e.sh
