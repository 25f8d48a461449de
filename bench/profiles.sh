#!/usr/bin/env bash
# Measures release-profile variants for BENCHMARKS.md "Release profile": for
# each, a release build in its own target directory (profile settings passed as
# CARGO_PROFILE_RELEASE_* overrides), the size of the stripped binary, and the
# median wall time of `cdc-batcher replay` over the end-to-end benchmark events
# (made by bench/run.sh) on one core, and (when valgrind is installed) the
# instructions callgrind counts for a replay of the first 5 event files, which
# unlike wall time does not vary with the machine's load.
# Env: RUNS (5), VARIANTS (all of the list below, by name).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
EVENTS=target/bench/events
[ -f "$EVENTS/manifest.json" ] || { echo "run bench/run.sh first (it makes $EVENTS)" >&2; exit 1; }
OUT=target/bench/profiles.md

# name | overrides (KEY=VALUE ...)
# Each variant is a full build (about 8 minutes on 2 cores); the current
# profile reuses target/ (set VARIANTS to pick some by their first word).
variants=(
  "current (fat LTO, 1 codegen unit, opt-level 3)|"
  "thin-lto|CARGO_PROFILE_RELEASE_LTO=thin"
  "fat-lto-abort (fat LTO, panic = abort)|CARGO_PROFILE_RELEASE_PANIC=abort"
  "opt-s (thin LTO, opt-level s)|CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_OPT_LEVEL=s"
)

echo "| variant | build (s) | stripped binary (bytes) | replay wall time, median of $RUNS (s) | all runs (s) | instructions, 5 files |" > "$OUT"
echo "|---|---|---|---|---|---|" >> "$OUT"
for v in "${variants[@]}"; do
  name=${v%%|*}
  overrides=${v#*|}
  if [ -n "${VARIANTS:-}" ] && [[ " $VARIANTS " != *" ${name%% *} "* ]]; then continue; fi
  dir=target/profile-${name%% *}
  [ -z "$overrides" ] && dir=target
  start=$(date +%s)
  env $overrides cargo build --release --quiet --target-dir "$dir"
  build=$(( $(date +%s) - start ))
  strip -o "$dir/release/cdc-batcher.stripped" "$dir/release/cdc-batcher"
  size=$(stat -c %s "$dir/release/cdc-batcher.stripped")
  times=()
  for _ in $(seq "$RUNS"); do
    rm -rf target/bench/out-profile
    /usr/bin/time -o target/bench/profile-time -f "%e" taskset -c 0 "$dir/release/cdc-batcher" \
      replay --output target/bench/out-profile "$EVENTS"/shard*.json >/dev/null 2>&1
    times+=("$(cat target/bench/profile-time)")
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  instructions=n/a
  if command -v valgrind >/dev/null; then
    rm -rf target/bench/out-profile
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$dir/release/cdc-batcher" replay \
      --output target/bench/out-profile "$EVENTS"/shard000-batch0000[0-4].json \
      >/dev/null 2>target/bench/profile-callgrind
    instructions=$(sed -n 's/.*Collected : //p' target/bench/profile-callgrind)
  fi
  echo "| $name | $build | $size | $median | ${times[*]} | $instructions |" | tee -a "$OUT"
done
echo "written: $OUT"
