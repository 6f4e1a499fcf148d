#!/usr/bin/env bash
# Creates .venv-validate/, the Python environment of scripts/validate-manifests, from the pinned
# scripts/requirements-validate.txt. Does nothing when the environment already matches that file.
# Needs python3 (3.10 or newer) with venv; on Debian/Ubuntu it installs python3-venv when missing.
# PYTHON=/path/to/python3 picks another interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-validate
REQ=scripts/requirements-validate.txt
PYTHON="${PYTHON:-python3}"

# The copy of the requirements is written last, so an interrupted install is redone next time.
if [ -x "$VENV/bin/python" ] && cmp -s "$REQ" "$VENV/requirements.txt"; then
  exit 0
fi

echo "validate-env: creating $VENV with $REQ" >&2
rm -rf "$VENV"
if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
  # Debian's python3 has no ensurepip without python3-venv.
  rm -rf "$VENV"
  echo "validate-env: installing python3-venv (Debian package)" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$REQ" >&2
cp "$REQ" "$VENV/requirements.txt"
