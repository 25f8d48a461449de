#!/usr/bin/env bash
# Measures release-profile variants for BENCHMARKS.md "Release profile": for
# each, a release build in its own target directory (profile settings passed as
# CARGO_PROFILE_RELEASE_* overrides), the size of the stripped binary, and the
# median wall time of `cdc-batcher replay` over the end-to-end benchmark events
# (made by bench/run.sh) on one core.
# Env: RUNS (5), VARIANTS (all of the list below, by name).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
EVENTS=target/bench/events
[ -f "$EVENTS/manifest.json" ] || { echo "run bench/run.sh first (it makes $EVENTS)" >&2; exit 1; }
OUT=target/bench/profiles.md

# name | overrides (KEY=VALUE ...)
variants=(
  "thin-lto-cgu1 (current)|"
  "no-lto-cgu16|CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16"
  "fat-lto-cgu1|CARGO_PROFILE_RELEASE_LTO=fat"
  "fat-lto-cgu1-abort|CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_PANIC=abort"
  "thin-lto-cgu1-opt-s|CARGO_PROFILE_RELEASE_OPT_LEVEL=s"
)

echo "| variant | build (s) | stripped binary (bytes) | replay wall time, median of $RUNS (s) | all runs (s) |" > "$OUT"
echo "|---|---|---|---|---|" >> "$OUT"
for v in "${variants[@]}"; do
  name=${v%%|*}
  overrides=${v#*|}
  if [ -n "${VARIANTS:-}" ] && [[ " $VARIANTS " != *" ${name%% *} "* ]]; then continue; fi
  dir=target/profile-${name%% *}
  start=$(date +%s)
  env $overrides cargo build --release --quiet --target-dir "$dir"
  build=$(( $(date +%s) - start ))
  strip -o "$dir/cdc-batcher.stripped" "$dir/release/cdc-batcher"
  size=$(stat -c %s "$dir/cdc-batcher.stripped")
  times=()
  for _ in $(seq "$RUNS"); do
    rm -rf target/bench/out-profile
    t=$( { /usr/bin/time -f "%e" taskset -c 0 "$dir/release/cdc-batcher" replay \
          --output target/bench/out-profile "$EVENTS"/shard*.json >/dev/null 2>/dev/null; } 2>&1 | tail -1)
    times+=("$t")
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "| $name | $build | $size | $median | ${times[*]} |" | tee -a "$OUT"
done
echo "written: $OUT"
