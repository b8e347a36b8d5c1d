#!/usr/bin/env bash
# make fuzz: run every cargo-fuzz target (fuzz/fuzz_targets/) for a bounded time, keep what
# libFuzzer learned (the minimized corpus, fuzz/corpus/<target>/, committed), and write the
# executions reached into fuzz/README.md. Exits 1 when a target found a crash; the input is
# in fuzz/artifacts/<target>/ (fix it, then move it into the corpus: `make test` replays the
# corpus through the same target functions without libFuzzer).
#
#   FUZZ_SECONDS=120   seconds per target (default 120)
#   FUZZ_TARGETS="classify sync_bundle"   a subset (default: all)
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO/fuzz"
seconds=${FUZZ_SECONDS:-120}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: FUZZ_SECONDS=$seconds is not a number of seconds" >&2; exit 2; }
read -r -a targets <<<"${FUZZ_TARGETS:-classify renewer_config sync_bundle}"

# cargo-fuzz passes a few -Z flags to rustc; the stable toolchain accepts them with this.
# `-s none`: no sanitizer. Every crate here forbids `unsafe`, so what the fuzzer looks for
# is panics and broken properties (the targets assert them), not memory errors; ASan would
# need a nightly std and triple the build.
export RUSTC_BOOTSTRAP=1
fuzz=(cargo fuzz)
echo "fuzz: building the targets (release, coverage instrumented)"
"${fuzz[@]}" build -s none >/dev/null

rows=()
failed=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    before=$(find "corpus/$target" -type f | wc -l)
    log="target/fuzz-$target.log"
    echo "fuzz: $target for ${seconds}s (corpus: $before inputs)"
    rc=0
    "${fuzz[@]}" run -s none "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    found=$(find "artifacts/$target" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
    if ((rc != 0)) || ((found > 0)); then
        failed=1
        echo "fuzz: $target FOUND A PROBLEM (exit $rc); the input is in fuzz/artifacts/$target/:" >&2
        grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 >&2 || true
    fi
    # Keep the corpus small: only inputs that add coverage.
    # Edges only (no hit counters): a few hundred inputs per target instead of thousands.
    "${fuzz[@]}" cmin -s none "$target" "corpus/$target" -- -use_counters=0 >"target/cmin-$target.log" 2>&1 ||
        echo "fuzz: warning: cmin failed for $target (target/cmin-$target.log)" >&2
    after=$(find "corpus/$target" -type f | wc -l)
    echo "fuzz: $target: ${runs:-?} executions, coverage ${cov:-?}, corpus $before -> $after, $found crash inputs"
    rows+=("| \`$target\` | ${seconds} s | ${runs:-?} | ${cov:-?} | $after | $found |")
done

# The results table in fuzz/README.md, between its markers.
{
    echo "Last \`make fuzz\`: $(date -u +%Y-%m-%d), commit $(git -C "$REPO" rev-parse --short HEAD), FUZZ_SECONDS=$seconds, $(nproc) cores."
    echo
    echo "| target | time | executions | coverage (edges) | corpus after cmin | crash inputs |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} >target/results.md
awk -v results=target/results.md '
    /<!-- fuzz-results -->/ { print; while ((getline line < results) > 0) print line; skip = 1; next }
    /<!-- \/fuzz-results -->/ { skip = 0 }
    !skip { print }
' README.md >target/README.md.new && mv target/README.md.new README.md
echo "fuzz: results written to fuzz/README.md"
exit "$failed"
