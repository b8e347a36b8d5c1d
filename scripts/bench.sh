#!/usr/bin/env bash
# Every benchmark, in one run on this machine, into BENCHMARKS.md.
#
#   make bench                         # bootstrap --bench, make wasm, then this script
#   bash scripts/bench.sh --quick      # a smoke run: few repetitions, report in target/bench/
#   bash scripts/bench.sh --only filter,acme
#   bash scripts/bench.sh --help
#
# The benchmarks are binaries of the tests crate, built here in release mode:
#   filter  tests/src/bin/edge-bench/  Envoy: no filter vs an empty wasm filter vs the edge filter
#                                      vs a Lua equivalent; memory per held WebSocket
#   ws      tests/src/bin/ws-bench/    sticky routing spread and movement; 10,000 held WebSockets
#   acme    tests/src/bin/acme-bench/  renewer vs lego vs certbot on Pebble; cold start; sizes
# Each writes one Markdown section to target/bench/<name>.md; this script puts them under a
# header (machine, date, commit, commands) and a summary of the targets.
#
# A measurement, not a test: a missed target is reported (MISS) and the exit status is still
# 0; it is non-zero only when something could not run. Not part of `make test`. A full run
# takes about an hour on a 2-core machine (mostly lego and certbot issuing 255 certificates
# each); keep the machine otherwise idle.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
    cat <<'EOF'
Usage: bash scripts/bench.sh [--quick] [--only LIST] [--out FILE]

  --quick       few repetitions, to check the benchmarks run (report: target/bench/BENCHMARKS.quick.md)
  --only LIST   comma-separated subset of: filter, ws, acme
  --out FILE    where the report goes [BENCHMARKS.md; with --quick, target/bench/BENCHMARKS.quick.md]
  -h, --help    this text

Each benchmark binary has its own --help (target/release/edge-bench --help, ...) for finer runs.
EOF
}

die() {
    echo "bench: $*" >&2
    exit 1
}

quick=0 only="filter,ws,acme" out=""
while [ $# -gt 0 ]; do
    case $1 in
    --quick) quick=1 ;;
    --only) [ $# -ge 2 ] || die "--only needs a list"; only=$2; shift ;;
    --only=*) only=${1#--only=} ;;
    --out) [ $# -ge 2 ] || die "--out needs a file"; out=$2; shift ;;
    --out=*) out=${1#--out=} ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done
IFS=, read -r -a benches <<<"$only"
for b in "${benches[@]}"; do
    case $b in filter | ws | acme) ;; *) die "--only: unknown benchmark '$b' (filter, ws, acme)" ;; esac
done
if [ -z "$out" ]; then
    if ((quick)); then out=target/bench/BENCHMARKS.quick.md; else out=BENCHMARKS.md; fi
fi

# What the benchmarks run, checked up front rather than after ten minutes.
need() { # PATH-OR-COMMAND HOW
    command -v "$1" >/dev/null 2>&1 || [ -x "$1" ] || die "$1 is missing: $2"
}
need wrk "run 'bash scripts/bootstrap.sh --bench' (make bench does)"
need /usr/bin/time "run 'bash scripts/bootstrap.sh --bench' (make bench does)"
need lego "run 'make bootstrap'"
need .venv/bin/certbot "run 'bash scripts/bootstrap.sh --bench' (make bench does)"
need "${ENVOY:-.venv/bin/envoy}" "run 'make bootstrap'"
need pebble "run 'make bootstrap'"
wasm=${EDGE_FILTER_WASM:-target/wasm/edge_filter.wasm}
[ -f "$wasm" ] || die "$wasm is missing: run 'make wasm' (make bench does)"
empty=${EMPTY_FILTER_WASM:-$(dirname "$wasm")/empty_filter.wasm}
[ -f "$empty" ] || die "$empty is missing: run 'make wasm' (make bench does)"
read_floor=${READ_FLOOR_WASM:-$(dirname "$wasm")/read_floor.wasm}
[ -f "$read_floor" ] || die "$read_floor is missing: run 'make wasm' (make bench does)"

echo "bench: building the renewer and the benchmarks (release)" >&2
cargo build --release --locked -p renewer --bin renewer
cargo build --release --locked -p acme-edge-tests --bin edge-bench --bin ws-bench --bin acme-bench

# Quick runs: enough to see every path work, not to trust the numbers.
declare -A args=(
    [filter]="" [ws]="" [acme]=""
)
if ((quick)); then
    args[filter]="--rounds 1 --duration 2 --warmup 1 --held-connections 200"
    args[ws]="--keys 1000 --trials 1 --cluster-trials 1 --connections 1000 --rounds 1"
    args[acme]="--reps 1 --certs 5 --cold-starts 5"
fi
declare -A bins=([filter]=edge-bench [ws]=ws-bench [acme]=acme-bench)

mkdir -p target/bench
sections=()
began=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for b in "${benches[@]}"; do
    section=target/bench/$b.md
    cmd="target/release/${bins[$b]} ${args[$b]} --out $section"
    echo "bench: $cmd" >&2
    # shellcheck disable=SC2086 # the arguments are words on purpose
    target/release/"${bins[$b]}" ${args[$b]} --out "$section" >/dev/null
done
elapsed=$(($(date +%s) - began))
# With --only, the other benchmarks' sections from an earlier run are kept, each marked with
# when it was written, so BENCHMARKS.md stays whole and says what is not from this run. The
# sections keep one order (filter, ws, acme) whichever of them were re-run.
earlier=()
for b in filter ws acme; do
    section=target/bench/$b.md
    [ -f "$section" ] || continue
    sections+=("$section")
    [[ ,$only, == *",$b,"* ]] || earlier+=("$b ($(date -u -r "$section" '+%Y-%m-%d %H:%M UTC'))")
done
cmdline="bash scripts/bench.sh"
((quick)) && cmdline+=" --quick"
[ "$only" = filter,ws,acme ] || cmdline+=" --only $only"

# The machine, as the benchmarks see it.
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
commit=$(git describe --always --dirty 2>/dev/null || echo unknown)

{
    echo "# Benchmarks"
    echo
    echo "Written by \`make bench\` (\`scripts/bench.sh\`); do not edit by hand. The figures come from"
    echo "this machine, in the order of the sections; the commands are in each section. A benchmark"
    echo "is a measurement, not a test: a missed target says MISS, and the section says why."
    ((quick)) && echo && echo "**Quick run (\`--quick\`): too few repetitions to trust the figures.**"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
    echo "| commit | $commit |"
    echo "| CPUs (nproc) | $(nproc) |"
    echo "| CPU model | ${cpu_model:-unknown} |"
    echo "| memory | $mem |"
    echo "| kernel | $(uname -r) |"
    echo "| OS | $(. /etc/os-release && echo "$PRETTY_NAME") |"
    echo "| load average before | $load_before |"
    echo "| total time | $((elapsed / 60)) min $((elapsed % 60)) s |"
    echo "| command | \`$cmdline\` |"
    if [ ${#earlier[@]} -gt 0 ]; then
        echo "| not re-run by this command | sections from an earlier run of the same binaries: ${earlier[*]} |"
    fi
    echo
    echo "## Targets"
    echo
    echo "| target | measured | result |"
    echo "|---|---:|---|"
    # Every section has a targets table (under a heading with "Targets"); collect its rows.
    for s in "${sections[@]}"; do
        # (Rows about a comparison setting that is not shipped stay in their section.)
        awk 'tolower($0) ~ /^#+ .*targets/ {t = 1; next} /^#/ {t = 0}
             t && /\| *\**(PASS|MISS)\** *\|$/ && !/^\| *\(comparison/' "$s"
    done
    echo
    for s in "${sections[@]}"; do
        cat "$s"
        echo
    done
} >"$out"
echo "bench: report written to $out" >&2
