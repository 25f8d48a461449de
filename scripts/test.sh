#!/usr/bin/env bash
# The whole test suite: lint, unit and integration tests (against a real S3
# server, read back with pyarrow), the cargo-lambda smoke test, and the
# deployment template checks. Installs what it needs (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export SAM_CLI_TELEMETRY=0
# One pass over a clean tree: incremental caches would only take disk (1 GB).
export CARGO_INCREMENTAL=0
# Each step's duration is printed when the next starts, and the total at the end.
step_name="" step_start=$SECONDS
step_done() { [ -z "$step_name" ] || printf '=== %s: %ds\n' "$step_name" $((SECONDS - step_start)); }
step() { step_done; step_name="$*" step_start=$SECONDS; printf '\n=== %s\n' "$*"; }

step setup
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "template: sam validate --lint, cfn-lint, the IAM role as SAM renders it, checkov"
sam validate --lint
cfn-lint template.yaml
python tests/template/check_template.py
.venv-checkov/bin/checkov -f template.yaml --framework cloudformation --skip-download --compact --quiet

step "cargo test (unit, integration with moto + pyarrow)"
# The simulation runs 40 seeds per test by default; the whole suite runs 200.
SIM_SEEDS=${SIM_SEEDS:-200} cargo test

step "smoke: cargo lambda (Lambda APIs) + invoke, SIGTERM flush"
# The binary `cargo test` built: no second build of every dependency.
FUNCTION_BINARY="$PWD/target/debug/cdc-batcher" tests/smoke_cargo_lambda.sh

step "sam build (arm64, provided.al2023, via cargo lambda)"
# This checks that the template builds; thin LTO and parallel codegen keep the
# step short on CI's two cores. `sam build` by hand uses the release profile
# of Cargo.toml, the one BENCHMARKS.md measures.
CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 sam build
ls -l .aws-sam/build/CdcBatcherFunction/bootstrap

step_done
# CI's disk is not ours to size: the log keeps what the run took.
echo; du -sh target .aws-sam 2>/dev/null || true
echo
echo "all checks passed in ${SECONDS}s"
