#!/usr/bin/env bash
# What the edge filter costs: the same Envoy and the same rendered config with the filter
# (EDGE_FILTER=1) and without it (EDGE_FILTER=0), measured in alternating rounds.
#
#   make bench                               # bootstrap --bench, make wasm, then this script
#   bash scripts/bench-filter.sh --help      # the benchmark's options
#   bash scripts/bench-filter.sh --duration 4 --rounds 3
#
# Measures plain HTTPS requests/s and latency (wrk), WebSocket echo messages/s and WebSocket
# handshakes/s (in-process client), with the targets from the issue marked PASS or MISS.
# The work is done by the `edge-bench` binary of the tests crate (tests/src/bin/edge-bench.rs),
# built in release mode here. The report goes to stdout and to target/bench/filter.md.
#
# A measurement, not a test: exits 0 when a target is missed; non-zero only if something
# could not run. Takes about 2.5 minutes with the defaults (plus the first release build).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() {
    echo "bench-filter: $*" >&2
    exit 1
}

for arg in "$@"; do
    case $arg in
    -h | --help)
        cargo run --quiet --release --locked -p acme-edge-tests --bin edge-bench -- --help
        exit 0
        ;;
    esac
done

command -v wrk >/dev/null 2>&1 ||
    die "wrk is not installed: run 'bash scripts/bootstrap.sh --bench' (make bench does)"
wasm=${EDGE_FILTER_WASM:-target/wasm/edge_filter.wasm}
[ -f "$wasm" ] || die "$wasm is missing: run 'make wasm' (make bench does)"
envoy=${ENVOY:-.venv/bin/envoy}
[ -x "$envoy" ] || die "$envoy is missing: run 'make bootstrap'"

out=target/bench/filter.md
# Cargo's build output goes to stderr; stdout gets the report, then where it was saved.
cargo run --release --locked -p acme-edge-tests --bin edge-bench -- --out "$out" "$@"
echo
echo "bench-filter: report written to $out"
