#!/usr/bin/env bash
# Build (or lint) edge-filter for wasm32-unknown-unknown.
#
#   scripts/wasm.sh build   -> target/wasm/edge_filter.wasm (release, LTO), size printed, and
#                              target/wasm/empty_filter.wasm and read_floor.wasm (the benchmarks'
#                              floors: no work; only the Cookie header read)
#   scripts/wasm.sh clippy  -> clippy with -D warnings for the wasm32 target
#
# Toolchain choice: a rustup toolchain with the wasm32 target installed (developer laptops)
# is used as is. Otherwise we use Debian's rustc-web/cargo-web and build std from
# rust-web-src with -Zbuild-std (RUSTC_BOOTSTRAP lets a stable compiler accept -Z flags);
# that is the path on machines where rustup cannot download targets.
# The wasm build has its own target dir so it never invalidates the host build's cache.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=${1:-build}
target_dir=target/wasm-build
out_dir=target/wasm
wasm_target=wasm32-unknown-unknown

# The host toolchain, before the Debian branch below changes PATH and RUSTC: it builds the
# small host tool that trims the module's exports.
host_cargo=(env "PATH=$PATH" cargo)

if command -v rustup >/dev/null 2>&1 &&
    rustup target list --installed 2>/dev/null | grep -qx "$wasm_target"; then
    toolchain="rustup ($(rustc --version))"
    cargo_cmd=(cargo)
    build_std=()
elif [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] &&
    /usr/bin/rustc --print target-list | grep -qx "$wasm_target"; then
    toolchain="Debian rustc-web ($(/usr/bin/rustc --version)) with -Zbuild-std"
    # /usr/bin first, so cargo finds Debian's cargo-clippy/clippy-driver, not rustup's.
    export PATH="/usr/bin:$PATH"
    export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
    unset RUSTC_WRAPPER
    cargo_cmd=(/usr/bin/cargo)
    build_std=("-Zbuild-std=std,panic_abort")
else
    echo "wasm.sh: no wasm32 toolchain; run 'make bootstrap' (or 'rustup target add $wasm_target')" >&2
    exit 1
fi

# --lib: the crate's host tool (src/bin) is not part of the module.
common=(--release --locked --target "$wasm_target" --target-dir "$target_dir" -p edge-filter --lib "${build_std[@]}")

case "$mode" in
build)
    echo "wasm: building edge-filter with $toolchain"
    "${cargo_cmd[@]}" build "${common[@]}"
    mkdir -p "$out_dir"
    # Drop the exports of callbacks the filter leaves empty: Envoy then skips them instead of
    # entering the VM per body chunk and per request (edge-filter/src/bin/trim-exports.rs).
    env -u RUSTC -u RUSTC_BOOTSTRAP "${host_cargo[@]}" run --quiet --locked -p edge-filter \
        --bin trim-exports -- "$target_dir/$wasm_target/release/edge_filter.wasm" \
        "$out_dir/edge_filter.wasm"
    size=$(stat -c %s "$out_dir/edge_filter.wasm")
    echo "wasm: $out_dir/edge_filter.wasm $((size / 1024)) KiB ($size bytes)"
    # The benchmarks' floors: same toolchain, profile and trimmed exports, no work
    # (edge-filter/examples/empty_filter.rs), and no work but the read of the Cookie header
    # (edge-filter/examples/read_floor.rs).
    for example in empty_filter read_floor; do
        "${cargo_cmd[@]}" build "${common[@]/--lib/--example=$example}"
        env -u RUSTC -u RUSTC_BOOTSTRAP "${host_cargo[@]}" run --quiet --locked -p edge-filter \
            --bin trim-exports -- "$target_dir/$wasm_target/release/examples/$example.wasm" \
            "$out_dir/$example.wasm"
    done
    ;;
clippy)
    echo "wasm: clippy for $wasm_target with $toolchain"
    "${cargo_cmd[@]}" clippy "${common[@]}" -- -D warnings
    ;;
*)
    echo "usage: scripts/wasm.sh [build|clippy]" >&2
    exit 2
    ;;
esac
