#!/usr/bin/env bash
# Render the app-node Envoy configuration to stdout.
#
#   COOKIE_SECRET=$(openssl rand -base64 48) ACME_THUMBPRINT=... deploy/envoy/render.sh > envoy.yaml
#
# Every setting is an environment variable; `deploy/envoy/render.sh --help` lists them with
# their defaults. The same script renders the config for app nodes (their startup script),
# for the integration tests and for the demo, so what is tested is what is shipped.
# deploy/envoy/app-node.yaml is this script's output with the defaults (an example to read;
# a test keeps it in step).
set -euo pipefail

usage() {
    cat <<'EOF'
Render the acme-edge app-node Envoy config to stdout.

Settings (environment variables, default in brackets):
  LISTEN_ADDRESS       address both listeners bind                     [0.0.0.0]
  HTTP_PORT            plain listener: ACME challenges + redirect       [80]
  HTTPS_PORT           TLS listener: the app                            [443]
  PUBLIC_HTTPS_PORT    HTTPS port clients use, for the redirect         [443]
  ADMIN_PORT           Envoy admin, on 127.0.0.1 only                   [9901]
  WASM_PATH            edge_filter.wasm                                 [/opt/acme-edge/edge_filter.wasm]
  TLS_DIR              directory `renewer sync` writes (sds.yaml, current/) [/var/lib/acme-edge/tls]
                       (run `renewer sync --init` before Envoy starts: it writes sds.yaml)
  DOMAINS              space-separated names redirected; empty = any    []
  ACME_MODE            stateless | store                                [stateless]
  ACME_THUMBPRINT      account JWK thumbprint (stateless; `renewer account` prints it)
  STORE_ADDRESS        host:port of the challenge store (store mode)    [storage.googleapis.com:443]
  STORE_TLS            1 to use TLS to the store                        [1]
  STORE_AUTHORITY      Host sent to the store                           [storage.googleapis.com]
  STORE_PATH           path with {token}                                [/storage/v1/b/$BUCKET/o/acme-challenge%2F{token}?alt=media]
  BUCKET               bucket name used by the default STORE_PATH
  STORE_METADATA_TOKEN 1 to send the node's service-account token (GCE) [1]
  STORE_TIMEOUT_MS     store (and metadata server) timeout              [2000]
  MEMBERS_DIR          directory of eds.json, kept by `renewer members`:
                       the app cluster's endpoints are every healthy
                       node's app, read by Envoy as EDS from that file
                       (what app nodes run); empty: APP_BACKENDS        []
  APP_BACKENDS         space-separated host:port of static app backends
                       (when MEMBERS_DIR is empty)                      [127.0.0.1:8080]
  APP_HEALTH_PATH      HTTP health-check path on the backends           [/healthz]
  READY_ADDRESS        host:port of \`renewer sync --watch\`'s status endpoint:
                       /.edge/healthz on both listeners answers from its
                       /ready (this node's readiness: its app answers and
                       Envoy serves the installed certificate); empty:
                       Envoy answers 200 itself                         []
  SOURCE_ADDRESS       address connections to the app leave from; empty:
                       the kernel's choice (a node's own address)       []
  WS_PATHS             space-separated WebSocket path prefixes          [/ws]
                       (the filter checks handshakes and sets the affinity key here;
                       an upgrade on any other path is refused with 404)
  WS_ALLOW_PLAIN_HTTP  1: plain requests on WS_PATHS go on (long-polling
                       fallbacks on the same path, as socket.io's); 0: 400 [0]
  STICKY_PATHS         more path prefixes where the filter sets the
                       affinity key on plain requests (e.g. /poll for
                       polling fallbacks; / for every request)          []
                       A request there with no Cookie, no Origin and no
                       Upgrade skips the filter (nothing for it to do)
                       and is hashed natively, as on the app route; one
                       with a Cookie and no Upgrade or room takes a
                       cookie route, where the filter reads that header
                       alone if the cookie decides (the route hashes it).
                       Elsewhere the filter does not run: Envoy hashes natively on
                       the query:/header:/client_address sources (same backend for
                       the same key; the cookie is only read on filter paths).
  ALLOWED_ORIGINS      space-separated Origins whose pages may open
                       WebSockets: https://app.example.com,
                       https://*.example.com; * allows any site         (required)
                       (the guard against cross-site WebSocket hijacking, RFC 6455 §10.2)
  AFFINITY_SOURCES     space-separated key sources in order:
                       query:NAME header:NAME cookie client_address     [query:room cookie client_address]
                       (client_address, if present, last: Envoy hashes the peer IP
                       itself when no earlier source gave the filter a key)
  AFFINITY_HEADER      internal header Envoy hashes on                  [x-edge-affinity]
  COOKIE_SECRET        HMAC key for affinity cookies, >= 32 chars of
                       [A-Za-z0-9+/=_-] (openssl rand -base64 48)       (required)
  COOKIE_MAX_AGE       cookie lifetime in seconds                       [86400]
  COOKIE_SAMESITE      the cookie's SameSite: Lax, Strict or None       [Lax]
                       (Lax/Strict: a page on another site gets no stickiness from the
                       cookie; None lets it, and relies on ALLOWED_ORIGINS alone)
  WS_IDLE_TIMEOUT      idle WebSocket lifetime                          [3600s]
  MAX_CONNECTIONS      downstream connection limit (overload manager)   [100000]
  NODE_ID              Envoy node id (the instance name on GCE)         [app-node]
  EDGE_FILTER          1: the edge filter (wasm); 0: none, and lua: the
                       Lua equivalent on the TLS listener (benchmarks
                       only; nothing answers challenges or redirects)   [1]
  LUA_FILTER           the Lua equivalent's source (EDGE_FILTER=lua)    []
  METADATA_ADDRESS     metadata server address (store mode)             [169.254.169.254]
  METADATA_PORT        metadata server port                             [80]
EOF
}

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    usage
    exit 0
fi

die() {
    echo "render.sh: $*" >&2
    exit 1
}

# Values go into YAML and JSON unquoted-safe only if they are plain: check, don't escape.
check() { # NAME VALUE REGEX WHAT
    [[ $2 =~ $3 ]] || die "$1=${2@Q} is not $4"
}

LISTEN_ADDRESS=${LISTEN_ADDRESS:-0.0.0.0}
HTTP_PORT=${HTTP_PORT:-80}
HTTPS_PORT=${HTTPS_PORT:-443}
PUBLIC_HTTPS_PORT=${PUBLIC_HTTPS_PORT:-443}
ADMIN_PORT=${ADMIN_PORT:-9901}
WASM_PATH=${WASM_PATH:-/opt/acme-edge/edge_filter.wasm}
TLS_DIR=${TLS_DIR:-/var/lib/acme-edge/tls}
DOMAINS=${DOMAINS:-}
ACME_MODE=${ACME_MODE:-stateless}
ACME_THUMBPRINT=${ACME_THUMBPRINT:-}
STORE_ADDRESS=${STORE_ADDRESS:-storage.googleapis.com:443}
STORE_TLS=${STORE_TLS:-1}
STORE_AUTHORITY=${STORE_AUTHORITY:-storage.googleapis.com}
BUCKET=${BUCKET:-}
STORE_PATH=${STORE_PATH:-"/storage/v1/b/${BUCKET}/o/acme-challenge%2F{token}?alt=media"}
STORE_METADATA_TOKEN=${STORE_METADATA_TOKEN:-1}
STORE_TIMEOUT_MS=${STORE_TIMEOUT_MS:-2000}
MEMBERS_DIR=${MEMBERS_DIR:-}
SOURCE_ADDRESS=${SOURCE_ADDRESS:-}
READY_ADDRESS=${READY_ADDRESS:-}
APP_BACKENDS=${APP_BACKENDS:-127.0.0.1:8080}
APP_HEALTH_PATH=${APP_HEALTH_PATH:-/healthz}
WS_PATHS=${WS_PATHS:-/ws}
WS_ALLOW_PLAIN_HTTP=${WS_ALLOW_PLAIN_HTTP:-0}
STICKY_PATHS=${STICKY_PATHS:-}
ALLOWED_ORIGINS=${ALLOWED_ORIGINS:-}
AFFINITY_SOURCES=${AFFINITY_SOURCES:-query:room cookie client_address}
AFFINITY_HEADER=${AFFINITY_HEADER:-x-edge-affinity}
COOKIE_SECRET=${COOKIE_SECRET:-}
COOKIE_MAX_AGE=${COOKIE_MAX_AGE:-86400}
COOKIE_SAMESITE=${COOKIE_SAMESITE:-Lax}
WS_IDLE_TIMEOUT=${WS_IDLE_TIMEOUT:-3600s}
MAX_CONNECTIONS=${MAX_CONNECTIONS:-100000}
NODE_ID=${NODE_ID:-app-node}
EDGE_FILTER=${EDGE_FILTER:-1}
LUA_FILTER=${LUA_FILTER:-}

port_re='^[0-9]{1,5}$'
path_re='^/[A-Za-z0-9._~/%{}?=&:+-]*$'
host_re='^[A-Za-z0-9.-]+$'
hostport_re='^[A-Za-z0-9.-]+:[0-9]{1,5}$'
for v in HTTP_PORT HTTPS_PORT PUBLIC_HTTPS_PORT ADMIN_PORT; do
    check "$v" "${!v}" "$port_re" "a port"
done
check LISTEN_ADDRESS "$LISTEN_ADDRESS" '^[0-9a-fA-F.:]+$' "an IP address"
check WASM_PATH "$WASM_PATH" '^/[A-Za-z0-9._/-]+$' "an absolute path"
check TLS_DIR "$TLS_DIR" '^/[A-Za-z0-9._/-]+$' "an absolute path"
[ -z "$READY_ADDRESS" ] || check READY_ADDRESS "$READY_ADDRESS" "$hostport_re" "host:port"
[ -z "$SOURCE_ADDRESS" ] || check SOURCE_ADDRESS "$SOURCE_ADDRESS" '^[0-9a-fA-F.:]+$' "an IP address"
[ -z "$MEMBERS_DIR" ] || check MEMBERS_DIR "$MEMBERS_DIR" '^/[A-Za-z0-9._/-]+$' "an absolute path"
check APP_HEALTH_PATH "$APP_HEALTH_PATH" "$path_re" "a path"
check AFFINITY_HEADER "$AFFINITY_HEADER" '^[a-z0-9-]+$' "a lower-case header name"
check COOKIE_MAX_AGE "$COOKIE_MAX_AGE" '^[1-9][0-9]*$' "a number of seconds"
check COOKIE_SAMESITE "$COOKIE_SAMESITE" '^(Lax|Strict|None)$' "Lax, Strict or None"
case "$WS_ALLOW_PLAIN_HTTP" in
1) ws_plain_json=true ;;
0) ws_plain_json=false ;;
*) die "WS_ALLOW_PLAIN_HTTP must be 0 or 1" ;;
esac
check WS_IDLE_TIMEOUT "$WS_IDLE_TIMEOUT" '^[0-9]+s$' "a duration like 3600s"
check MAX_CONNECTIONS "$MAX_CONNECTIONS" '^[1-9][0-9]*$' "a number"
check NODE_ID "$NODE_ID" '^[A-Za-z0-9._-]+$' "a node name"
case "$EDGE_FILTER" in
1) https_filter_name=envoy.filters.http.wasm ;;
0) https_filter_name="" ;;
lua)
    https_filter_name=envoy.filters.http.lua
    [ -f "$LUA_FILTER" ] || die "EDGE_FILTER=lua needs LUA_FILTER, the Lua source (tests/bench/edge_filter.lua)"
    ;;
*) die "EDGE_FILTER must be 1 (the edge filter), 0 (none) or lua (the benchmarks' Lua equivalent)" ;;
esac
METADATA_ADDRESS=${METADATA_ADDRESS:-169.254.169.254}
METADATA_PORT=${METADATA_PORT:-80}
check METADATA_ADDRESS "$METADATA_ADDRESS" "$host_re" "an address"
check METADATA_PORT "$METADATA_PORT" "$port_re" "a port"
[ -n "$COOKIE_SECRET" ] || die "COOKIE_SECRET is required (e.g. COOKIE_SECRET=\$(openssl rand -base64 48))"
check COOKIE_SECRET "$COOKIE_SECRET" '^[A-Za-z0-9+/=_-]{32,}$' "at least 32 characters of [A-Za-z0-9+/=_-]"

# json_list REGEX WHAT NAME VALUES... -> ["a","b"]
json_list() {
    local re=$1 what=$2 name=$3 out="" item
    shift 3
    for item in "$@"; do
        check "$name" "$item" "$re" "$what"
        out+="${out:+, }\"$item\""
    done
    printf '[%s]' "$out"
}

read -r -a domains <<<"$DOMAINS"
read -r -a ws_paths <<<"$WS_PATHS"
read -r -a sticky_paths <<<"$STICKY_PATHS"
read -r -a origins <<<"$ALLOWED_ORIGINS"
read -r -a sources <<<"$AFFINITY_SOURCES"
read -r -a backends <<<"$APP_BACKENDS"
[ "${#ws_paths[@]}" -gt 0 ] || die "WS_PATHS must name at least one path prefix"
[ -n "$MEMBERS_DIR" ] || [ "${#backends[@]}" -gt 0 ] || die "APP_BACKENDS must name at least one backend (or set MEMBERS_DIR)"
hosts_json=$(json_list "$host_re" "a host name" DOMAINS "${domains[@]}")
# Route prefixes: no query or fragment characters (Envoy matches the path only).
prefix_re='^/[A-Za-z0-9._~/%:+-]*$'
ws_paths_json=$(json_list "$prefix_re" "a path prefix" WS_PATHS "${ws_paths[@]}")
json_list "$prefix_re" "a path prefix" STICKY_PATHS "${sticky_paths[@]}" >/dev/null
# The Origin allow-list is the only guard a browser's cookies have against another site's
# page opening a WebSocket as its user: there is no default, and "any" must be said as '*'.
[ "${#origins[@]}" -gt 0 ] || die "ALLOWED_ORIGINS is required: the origins of the pages that \
may open WebSockets here (e.g. ALLOWED_ORIGINS=\"https://app.example.com\"); without it any \
site could open one with a visitor's cookies (cross-site WebSocket hijacking). \
Set ALLOWED_ORIGINS='*' to allow every site on purpose"
origins_json=$(json_list '^(\*|[a-z][a-z0-9+.-]*://[A-Za-z0-9.*-]+(:[0-9]{1,5})?)$' "an origin" ALLOWED_ORIGINS "${origins[@]}")

# The sources three ways: the filter's JSON, the Lua equivalent's table, and Envoy's own
# hash_policy for the routes the filter does not run on. A query or header value and the
# client IP hash natively to the same ring point as the filter's header with that value;
# a signed cookie can only be checked by the filter.
#
# A client_address source is last (it always yields a key: nothing after it is reached),
# and on the filter's routes Envoy takes it over too: the filter leaves the header unset when
# no earlier source gives a key, and the route's hash_policy falls back to the peer IP, the
# same ring point the filter's header with that IP would reach. The filter then never reads
# the peer address (a host call and a call back into the VM per request: most of its cost
# on a plain request, see edge-filter/README.md "What it costs").
sources_json="" sources_lua="" native_hash="" peer_fallback="" route_cookie=""
before_cookie_query="" before_cookie_headers=""
n_sources=${#sources[@]}
for i in "${!sources[@]}"; do
    s=${sources[$i]}
    if [ "$s" = client_address ] && [ "$i" -ne $((n_sources - 1)) ]; then
        die "AFFINITY_SOURCES: client_address must be the last source (it always gives a key, so the sources after it would never be used)"
    fi
    case "$s" in
    query:*)
        check AFFINITY_SOURCES "${s#query:}" '^[A-Za-z0-9._~-]+$' "a query parameter name"
        [ -n "$route_cookie" ] || before_cookie_query+="                  - { name: ${s#query:}, present_match: false }"$'\n'
        item="{\"query\": \"${s#query:}\"}"
        lua="{ query = \"${s#query:}\" }"
        native="- query_parameter: { name: ${s#query:} }"
        ;;
    header:*)
        check AFFINITY_SOURCES "${s#header:}" '^[a-z0-9-]+$' "a lower-case header name"
        [ -n "$route_cookie" ] || before_cookie_headers+="                  - { name: ${s#header:}, present_match: false }"$'\n'
        item="{\"header\": \"${s#header:}\"}"
        lua="{ header = \"${s#header:}\" }"
        native="- header: { header_name: ${s#header:} }"
        ;;
    cookie)
        item='"cookie"' lua="{ cookie = true }" native=""
        # The edge filter's routes hash the cookie themselves, right after the header (see
        # https_routes); the Lua equivalent always sets the header.
        [ "$EDGE_FILTER" = 1 ] && route_cookie=1
        ;;
    client_address)
        item='"client_address"' lua="{ client_address = true }"
        native="- connection_properties: { source_ip: true }"
        ;;
    *) die "AFFINITY_SOURCES: unknown source ${s@Q} (query:NAME, header:NAME, cookie, client_address)" ;;
    esac
    if [ "$s" = client_address ] && [ "$n_sources" -gt 1 ]; then
        # Envoy's hash_policy on the filter's routes (above); alone, it stays the filter's
        # (an affinity section needs a source).
        peer_fallback=1
    else
        sources_json+="${sources_json:+, }$item"
        sources_lua+="${sources_lua:+, }$lua"
    fi
    if [ -n "$native" ]; then
        native_hash+="                  $native"$'\n'"                    terminal: true"$'\n'
    fi
done

case "$ACME_MODE" in
stateless)
    check ACME_THUMBPRINT "$ACME_THUMBPRINT" '^[A-Za-z0-9_-]{43}$' \
        "a 43-character JWK thumbprint (run 'renewer account')"
    acme_json="{\"thumbprint\": \"$ACME_THUMBPRINT\"}"
    ;;
store)
    check STORE_ADDRESS "$STORE_ADDRESS" "$hostport_re" "host:port"
    check STORE_AUTHORITY "$STORE_AUTHORITY" '^[A-Za-z0-9.:-]+$' "a host[:port]"
    check STORE_PATH "$STORE_PATH" "$path_re" "a path"
    check STORE_TIMEOUT_MS "$STORE_TIMEOUT_MS" '^[1-9][0-9]{0,4}$' "milliseconds (1-60000)"
    [[ $STORE_PATH == *"{token}"* ]] || die "STORE_PATH must contain {token}"
    [[ $STORE_PATH != *"/b//o/"* ]] || die "set BUCKET (or STORE_PATH) for store mode"
    meta=""
    if [ "$STORE_METADATA_TOKEN" = 1 ]; then
        meta=", \"metadata_token\": {\"cluster\": \"gce_metadata\", \"timeout_ms\": $STORE_TIMEOUT_MS}"
    fi
    acme_json="{\"store\": {\"cluster\": \"acme_store\", \"authority\": \"$STORE_AUTHORITY\", \"path\": \"$STORE_PATH\", \"timeout_ms\": $STORE_TIMEOUT_MS$meta}}"
    ;;
*) die "ACME_MODE must be stateless or store" ;;
esac

# https_plugin_json EXTRA: the TLS listener's plugin configuration, EXTRA added to its
# affinity section.
https_plugin_json() {
    printf '{"stat_prefix": "edge_https", "websocket": {"path_prefixes": %s, "allowed_origins": %s, "allow_plain_http": %s}, "affinity": {"header": "%s", "sources": [%s], "cookie": {"secret": "%s", "max_age_s": %s, "same_site": "%s"%s}%s}}' \
        "$ws_paths_json" "$origins_json" "$ws_plain_json" "$AFFINITY_HEADER" "$sources_json" \
        "$COOKIE_SECRET" "$COOKIE_MAX_AGE" "$COOKIE_SAMESITE" "${route_cookie:+, \"route_hashes\": true}" "$1"
}

# The second instance of the edge filter on the TLS listener: the cookie routes' (see
# cookie_route), off everywhere else.
cookie_filter_name=edge.cookie_route

# wasm_filter NAME JSON [CHAIN_NAME]: the edge filter with one plugin configuration; with a
# CHAIN_NAME, an instance that is off except on the routes that enable it by that name.
wasm_filter() {
    if [ "$EDGE_FILTER" = lua ] && [ "$1" = edge_https ]; then
        lua_filter
        return 0
    fi
    # Without the filter (benchmarks only) nothing answers challenges or redirects.
    [ "$EDGE_FILTER" = 1 ] || return 0
    cat <<EOF
          - name: ${3:-envoy.filters.http.wasm}
EOF
    if [ -n "${3:-}" ]; then
        cat <<EOF
            # Off unless a route turns it on (the cookie routes, see cookie_route).
            disabled: true
EOF
    fi
    cat <<EOF
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: $1
                root_id: edge
                vm_config:
                  # One VM per worker, shared by every plugin configuration.
                  vm_id: edge
                  runtime: envoy.wasm.runtime.v8
                  code: { local: { filename: $WASM_PATH } }
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: |
                    $2
                # A filter that fails must not let requests through unchecked.
                failure_policy: FAIL_CLOSED
EOF
}

# lua_filter: the Lua equivalent of the TLS listener's edge filter (benchmarks only), with
# its settings prepended as a CONFIG table.
lua_filter() {
    local p ws_lua="" origins_lua=""
    for p in "${ws_paths[@]}"; do ws_lua+="${ws_lua:+, }\"$p\""; done
    for p in "${origins[@]}"; do origins_lua+="${origins_lua:+, }\"$p\""; done
    cat <<LUA
          - name: envoy.filters.http.lua
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
              default_source_code:
                inline_string: |
                  CONFIG = {
                    ws_paths = { $ws_lua },
                    allowed_origins = { $origins_lua },
                    affinity_header = "$AFFINITY_HEADER",
                    sources = { $sources_lua },
                    cookie_name = "edge_affinity",
                    cookie_secret = "$COOKIE_SECRET",
                    cookie_max_age = $COOKIE_MAX_AGE,
                  }
$(sed 's/^/                  /' "$LUA_FILTER")
LUA
}

# healthz_route [FILTER_TO_SKIP]: /.edge/healthz, what the load balancer's health check, the
# group's autohealing and the uptime checks ask. With READY_ADDRESS it is the node's
# readiness from \`renewer sync\` (503 when the app does not answer or Envoy does not serve
# the installed certificate; also 503 when the agent is down, so a stuck sync shows); without,
# Envoy answers 200 itself.
healthz_route() {
    if [ -z "$READY_ADDRESS" ]; then
        cat <<ROUTE
              - match: { path: /.edge/healthz }
                direct_response: { status: 200, body: { inline_string: "ok\n" } }
ROUTE
        return 0
    fi
    cat <<ROUTE
              - match: { path: /.edge/healthz }
ROUTE
    if [ -n "${1:-}" ]; then
        cat <<ROUTE
                typed_per_filter_config:
                  $1:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
ROUTE
    fi
    cat <<ROUTE
                route:
                  cluster: node_ready
                  prefix_rewrite: /ready
                  timeout: 3s
ROUTE
}

# sticky_bypass_route MATCH: on a sticky path, a plain request with no Cookie and no Origin
# leaves the filter nothing to do that Envoy cannot: no cookie to verify, none to issue (new
# cookies go to clients that send Origin, as browsers do), no handshake to check (an Upgrade
# goes to the filter, which refuses it off WS_PATHS). Such a request skips the filter and is
# hashed natively on the same sources, as on the app route (the same ring point as the key
# the filter would set); a client's copy of the internal header is dropped. Clients without
# cookies (apps, scripts, health probes) then cost no VM call at all.
sticky_bypass_route() {
    cat <<ROUTE
              - match:
                  $1
                  headers:
                  - { name: cookie, present_match: false }
                  - { name: origin, present_match: false }
                  - { name: upgrade, present_match: false }
                request_headers_to_remove: [$AFFINITY_HEADER]
                # Counted as vhost.app.route.sticky_no_filter.upstream_rq_*: how many sticky
                # requests needed no filter.
                stat_prefix: sticky_no_filter
ROUTE
    native_route
}

# native_route: the rest of a route the filter skips: the filter disabled on it (if there is
# one), the app cluster hashed natively on the affinity sources.
native_route() {
    if [ -n "$https_filter_name" ]; then
        cat <<ROUTE
                typed_per_filter_config:
                  $https_filter_name:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
ROUTE
    fi
    cat <<ROUTE
                route:
                  cluster: app
                  timeout: 0s
                  idle_timeout: $WS_IDLE_TIMEOUT
ROUTE
    if [ -n "$native_hash" ]; then
        printf '                  hash_policy:\n%s' "$native_hash"
    fi
}

# filter_route_action: the rest of a route the filter runs on: the app cluster, hashed on the
# header the filter sets, else (in the shipped config) on the cookie, else on the peer.
filter_route_action() {
    cat <<ROUTE
                route:
                  cluster: app
                  # No overall timeout (upgraded streams live long); idle ones end here.
                  timeout: 0s
                  idle_timeout: $WS_IDLE_TIMEOUT
                  # The edge filter put the affinity key in this header; the Maglev hash
                  # turns it into a backend, the same one for the same key.
                  hash_policy:
                  - header: { header_name: $AFFINITY_HEADER }
                    terminal: true
ROUTE
    if [ -n "$route_cookie" ]; then
        cat <<ROUTE
                  # The filter leaves the header unset when this cookie alone, valid, gives
                  # the key (the header's value would be the cookie's): the same backend
                  # without a header write. It sets the header whenever the cookie must not
                  # decide, so an unverified cookie never gets here.
                  - cookie: { name: edge_affinity }
                    terminal: true
ROUTE
    fi
    if [ -n "$peer_fallback" ]; then
        cat <<ROUTE
                  # No key from the filter: the client_address source, hashed by Envoy.
                  - connection_properties: { source_ip: true }
                    terminal: true
ROUTE
    fi
}

# cookie_route MATCH: on a sticky path, a request with a Cookie and no Upgrade, no client
# copy of the internal header and no key source listed before the cookie: what a browser
# sends once it has its cookie. It takes the second instance of the filter, whose plugin
# configuration says so (affinity.cookie_route): if the first Cookie header holds the only
# copy of a valid cookie, it lets the request through after reading that one header (the
# route hashes the cookie), instead of reading all headers; anything else gets the full
# filter's treatment from it, and once it sets the header Envoy matches the route again
# (the filter's route below, the same hash). So vhost.app.route.sticky_cookie.* counts the
# requests the cookie alone decided.
cookie_route() {
    cat <<ROUTE
              - match:
                  $1
                  headers:
                  - { name: cookie, present_match: true }
                  - { name: upgrade, present_match: false }
                  - { name: $AFFINITY_HEADER, present_match: false }
ROUTE
    printf '%s' "$before_cookie_headers"
    # present_match: false on a query parameter means "absent" in Envoy 1.40 (before
    # enable_new_query_param_present_match_behavior it meant the opposite); the edge_filter
    # test sends a room with a valid cookie and checks the room still decides.
    if [ -n "$before_cookie_query" ]; then
        printf '                  query_parameters:\n%s' "$before_cookie_query"
    fi
    cat <<ROUTE
                stat_prefix: sticky_cookie
                typed_per_filter_config:
                  $https_filter_name:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
                  $cookie_filter_name:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    # An empty config turns on a filter that is off in the chain.
                    config: {}
ROUTE
    filter_route_action
}

# https_routes: the node's health first, then the filter's paths (WebSocket, then sticky),
# hashed on the key the filter sets; then the rest of the app without the filter, hashed
# natively.
https_routes() {
    local p match
    healthz_route "$https_filter_name"
    for p in "${ws_paths[@]}" "${sticky_paths[@]}"; do
        # path_separated_prefix /ws matches /ws, /ws/… and /ws?…, not /wsx (as the filter).
        if [[ $p == */ ]]; then match="prefix: $p"; else match="path_separated_prefix: $p"; fi
        if [ -n "$https_filter_name" ] && [[ " ${sticky_paths[*]} " == *" $p "* ]]; then
            sticky_bypass_route "$match"
        fi
        if [ -n "$route_cookie" ] && [[ " ${sticky_paths[*]} " == *" $p "* ]]; then
            cookie_route "$match"
        fi
        cat <<ROUTE
              - match: { $match }
ROUTE
        filter_route_action
    done
    # Upgrades are enabled on the whole listener (HTTP/1.1 Upgrade and RFC 8441 CONNECT,
    # which Envoy turns into an Upgrade header before routing), so every other request that
    # asks for one goes through the filter, which refuses it (404, counted as
    # upgrade.refused.path) whatever the spelling of its path: only WS_PATHS take WebSockets.
    # Should no filter run (the benchmarks' variants), the route answers 404 itself.
    cat <<ROUTE
              - match:
                  prefix: /
                  headers:
                  - name: upgrade
                    present_match: true
                direct_response:
                  status: 404
                  body: { inline_string: "no websocket endpoint at this path\n" }
              # The rest of the app. The filter would only set the key here, and a wasm
              # filter costs VM calls on every request and body chunk, so it is skipped and
              # Envoy hashes the same sources itself. A client's copy of the header is dropped.
              - match: { prefix: / }
                request_headers_to_remove: [$AFFINITY_HEADER]
ROUTE
    native_route
}

# app_endpoints: where the app cluster's endpoints come from. On app nodes, the membership:
# `renewer members` keeps eds.json (every healthy node's app, sorted the same way everywhere,
# so Maglev maps a key to the same instance from every node) and swaps it by rename; Envoy
# watches the directory and reloads the endpoints without a restart or dropped connection.
app_endpoints() {
    if [ -n "$MEMBERS_DIR" ]; then
        cat <<EOF
    type: EDS
    eds_cluster_config:
      service_name: app
      eds_config:
        resource_api_version: V3
        path_config_source:
          path: $MEMBERS_DIR/eds.json
          watched_directory: { path: $MEMBERS_DIR }
    # A node that leaves the list (the group is removing it, or it failed the group's health
    # check) gets no new keys from now on; by default Envoy would keep a removed host while
    # it passes this Envoy's own health checks. Its open connections are left alone.
    ignore_health_on_host_removal: true
EOF
    else
        cat <<EOF
    type: STATIC
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
$(endpoints "${backends[@]}")
EOF
    fi
}

# source_address: where connections to the app leave from, when the node has several addresses
# (the local cluster's nodes share one loopback interface).
source_address() {
    [ -n "$SOURCE_ADDRESS" ] || return 0
    cat <<EOF
    upstream_bind_config: { source_address: { address: $SOURCE_ADDRESS, port_value: 0 } }
EOF
}

# endpoints HOST:PORT... — lb_endpoints entries of a static cluster.
endpoints() {
    local hp
    for hp in "$@"; do
        check APP_BACKENDS "$hp" "$hostport_re" "host:port"
        cat <<EOF
          - endpoint: { address: { socket_address: { address: ${hp%:*}, port_value: ${hp##*:} } } }
EOF
    done
}

cat <<EOF
# acme-edge app-node Envoy configuration.
# Generated by deploy/envoy/render.sh; change the script or its settings, not this output.
node:
  # SDS from files needs a node identity; it also names the node in Envoy's stats and logs.
  id: $NODE_ID
  cluster: acme-edge
admin:
  # Loopback only: the admin interface can stop Envoy and dump its config.
  address: { socket_address: { address: 127.0.0.1, port_value: $ADMIN_PORT } }

layered_runtime:
  layers:
  - name: static
    static_layer:
      # Since Envoy 1.38, load-balancer rebuilds of a batch host update are coalesced (and
      # 1.40 batches the updates sent to workers), and a worker can keep a stale Maglev table
      # after a membership change until the next one (envoyproxy/envoy#45055, #45212): two
      # workers, or two nodes, then send the same key to different instances. Seen here with
      # Envoy 1.40 when a node joins the cluster. Both off: every update rebuilds at once.
      envoy.reloadable_features.coalesce_lb_rebuilds_on_batch_update: false
      envoy.reloadable_features.enable_batch_aware_update: false
  - name: admin
    admin_layer: {}

overload_manager:
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: $MAX_CONNECTIONS

static_resources:
  listeners:
  # :80 — ACME HTTP-01 answers and the redirect to HTTPS. Nothing here reaches the app.
  - name: http
    address: { socket_address: { address: $LISTEN_ADDRESS, port_value: $HTTP_PORT } }
    per_connection_buffer_limit_bytes: 32768
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http
          use_remote_address: true
          normalize_path: true
          merge_slashes: true
          request_headers_timeout: 10s
          common_http_protocol_options:
            idle_timeout: 60s
            headers_with_underscores_action: REJECT_REQUEST
          http_filters:
$(wasm_filter edge_http "{\"stat_prefix\": \"edge_http\", \"acme\": $acme_json, \"redirect\": {\"https_port\": $PUBLIC_HTTPS_PORT, \"allowed_hosts\": $hosts_json, \"passthrough_prefixes\": [\"/.edge/healthz\"]}}")
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: http
            virtual_hosts:
            - name: http
              domains: ["*"]
              routes:
              # Load-balancer health check of the node itself.
$(healthz_route)
              - match: { prefix: / }
                direct_response: { status: 404 }

  # :443 — TLS with the certificate \`renewer sync\` installs, then the app.
  - name: https
    address: { socket_address: { address: $LISTEN_ADDRESS, port_value: $HTTPS_PORT } }
    per_connection_buffer_limit_bytes: 65536
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: ["h2", "http/1.1"]
            tls_params: { tls_minimum_protocol_version: TLSv1_2 }
            tls_certificate_sds_secret_configs:
            - name: server_cert
              sds_config:
                resource_api_version: V3
                # renewer sync writes a new directory and swaps the \`current\` symlink by
                # rename; Envoy watches the directory and reloads without a restart.
                # sds.yaml must exist when Envoy starts: \`renewer sync --init\` writes it.
                path_config_source:
                  path: $TLS_DIR/sds.yaml
                  watched_directory: { path: $TLS_DIR }
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: https
          codec_type: AUTO
          use_remote_address: true
          normalize_path: true
          merge_slashes: true
          request_headers_timeout: 10s
          # WebSockets are long-lived and often quiet: the per-route idle timeout below is
          # the one that ends them; this only bounds streams outside that route.
          stream_idle_timeout: $WS_IDLE_TIMEOUT
          common_http_protocol_options:
            idle_timeout: $WS_IDLE_TIMEOUT
            headers_with_underscores_action: REJECT_REQUEST
          http2_protocol_options:
            # RFC 8441 WebSockets over HTTP/2.
            allow_connect: true
            max_concurrent_streams: 128
          upgrade_configs:
          - upgrade_type: websocket
          http_filters:
$(wasm_filter edge_https "$(https_plugin_json "")")
$(if [ -n "$route_cookie" ] && [ "${#sticky_paths[@]}" -gt 0 ]; then wasm_filter edge_https_cookie "$(https_plugin_json ', "cookie_route": true')" "$cookie_filter_name"; fi)
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: app
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
$(https_routes)

  clusters:
  - name: app
$(app_endpoints)
    connect_timeout: 2s
$(source_address)
    # Maglev (table of 65537 entries): when a backend joins, about 1/n of the keys move, all
    # to the new one. Envoy's RING_HASH gives each host ring_size/hosts entries, so every old
    # host loses some and keys also move between old hosts: make bench measured 1.39× the
    # ideal movement for the 4th backend with RING_HASH, 1.01× with Maglev, and a more even
    # spread. (Both hash the same key to the same backend while the hosts do not change.)
    lb_policy: MAGLEV
    circuit_breakers:
      thresholds:
      # Envoy's defaults (1024) would cap held WebSockets per node far too low.
      - priority: DEFAULT
        max_connections: $MAX_CONNECTIONS
        max_pending_requests: $MAX_CONNECTIONS
        max_requests: $MAX_CONNECTIONS
        max_retries: 3
    health_checks:
    - timeout: 2s
      interval: 5s
      no_traffic_interval: 5s
      unhealthy_threshold: 2
      healthy_threshold: 1
      http_health_check: { path: $APP_HEALTH_PATH }
EOF

if [ -n "$READY_ADDRESS" ]; then
    cat <<EOF
  # \`renewer sync --watch\`'s status endpoint on this node (/.edge/healthz asks its /ready).
  - name: node_ready
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: node_ready
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: ${READY_ADDRESS%:*}, port_value: ${READY_ADDRESS##*:} } } }
EOF
fi

if [ "$ACME_MODE" = store ]; then
    store_host=${STORE_ADDRESS%:*}
    cat <<EOF
  # Where store-mode challenges are looked up (the GCS JSON API by default).
  - name: acme_store
    type: LOGICAL_DNS
    dns_lookup_family: V4_ONLY
    connect_timeout: 2s
    load_assignment:
      cluster_name: acme_store
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: $store_host, port_value: ${STORE_ADDRESS##*:} } } }
EOF
    if [ "$STORE_TLS" = 1 ]; then
        cat <<EOF
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: $store_host
        common_tls_context:
          validation_context:
            trusted_ca: { filename: /etc/ssl/certs/ca-certificates.crt }
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: { exact: $store_host }
EOF
    fi
    if [ "$STORE_METADATA_TOKEN" = 1 ]; then
        cat <<EOF
  # The GCE metadata server, for the node service account's access token.
  - name: gce_metadata
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: gce_metadata
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: $METADATA_ADDRESS, port_value: $METADATA_PORT } } }
EOF
    fi
fi
