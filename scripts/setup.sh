#!/usr/bin/env bash
# Installs what the local run and the tests need, into .venv (idempotent).
# Needs: the Rust toolchain (cargo) and Python 3.11 with pip.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "setup: cargo not found; install the Rust toolchain first" >&2; exit 1; }
if ! command -v java >/dev/null; then
  # Spark (a reader in the tests) needs a Java runtime.
  echo "setup: installing a Java runtime (apt)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq openjdk-17-jre-headless >/dev/null; fi
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    # Some distributions ship python without the venv module.
    "$PY" -m pip install --quiet virtualenv
    "$PY" -m virtualenv --quiet .venv
  fi
fi
stamp=.venv/.requirements-dev.txt
if ! cmp -s requirements-dev.txt "$stamp"; then
  echo "setup: installing Python tools into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements-dev.txt
  cp requirements-dev.txt "$stamp"
fi
# checkov pins its own versions of boto3 and friends: it gets a virtualenv of its own.
CHECKOV=checkov==3.3.30
if [ ! -x .venv-checkov/bin/checkov ] || ! .venv-checkov/bin/pip show checkov 2>/dev/null | grep -q "^Version: ${CHECKOV#*==}$"; then
  echo "setup: installing $CHECKOV into .venv-checkov"
  rm -rf .venv-checkov
  "$PY" -m venv .venv-checkov 2>/dev/null || "$PY" -m virtualenv --quiet .venv-checkov
  .venv-checkov/bin/python -m pip install --quiet "$CHECKOV"
fi
echo "setup: ready ($(.venv/bin/cargo-lambda lambda --version 2>/dev/null | head -1))"
