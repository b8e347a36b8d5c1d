#!/usr/bin/env bash
# App-node startup script. Compute Engine runs it as root at every boot of a node made from
# the instance template `make deploy` creates; every step is safe to repeat.
#
#   startup.sh                          set the node up (what GCE runs)
#   startup.sh render SETTINGS RENDER   print this node's Envoy config (tests; needs COOKIE_SECRET)
#   startup.sh members-env SETTINGS     print the [members] settings of this node's agent (tests)
#   startup.sh sync-env SETTINGS IP     print the readiness settings of `renewer sync` for a node
#                                       whose internal address is IP (tests)
#   startup.sh metadata-firewall [BRIDGE]
#                                       install the rules that keep the app's docker network
#                                       (bridge BRIDGE, default acme-app0) away from the
#                                       metadata server, print `iptables -S DOCKER-USER`
#
# What the node runs (systemd units, each a container, logs to Cloud Logging):
#   acme-edge-app      the application, published on the node's internal address, APP_PORT:
#                      every node's Envoy routes to every node's app (a firewall rule admits
#                      only the nodes). It runs on its own docker network (acme-edge-app,
#                      bridge acme-app0) that has no route to the metadata server
#   acme-edge-sync     `renewer sync --watch`: installs the current certificate from Secret Manager,
#                      and answers /ready on 127.0.0.1:9903: Envoy's /.edge/healthz (the health
#                      check of the load balancer, the group's autohealing and rolling updates)
#                      is 200 only when this node's app answers and Envoy serves the certificate
#   acme-edge-members  `renewer members --watch`: the group's healthy nodes, as Envoy's EDS file
#   acme-edge-envoy    Envoy with the edge filter on :80 and :443; starts after `renewer sync
#                      --init` and `renewer members --init`
#
# Inputs are instance metadata written by deploy/deploy.sh: acme-edge-settings (node.env),
# acme-edge-renewer-env (the renewer's RENEWER__* settings) and acme-edge-render (render.sh).
set -euo pipefail

ETC=/etc/acme-edge
OPT=/opt/acme-edge
TLS_DIR_NODE=/var/lib/acme-edge/tls
MEMBERS_DIR_NODE=/var/lib/acme-edge/members
# Where `renewer sync --watch` answers /ready (and /metrics); Envoy asks it for /.edge/healthz.
READY_ADDRESS_NODE=127.0.0.1:9903
# Envoy's official image runs Envoy as uid/gid 101; sync writes files Envoy can read.
ENVOY_ID=101
MD=http://metadata.google.internal/computeMetadata/v1
# The app's docker network and the name of its Linux bridge (what the firewall matches).
APP_NETWORK=acme-edge-app
APP_BRIDGE=acme-app0

log() {
    echo "acme-edge-startup: $*" >&2
}

die() {
    log "$*"
    exit 1
}

# KEY=value lines, never executed; only the keys deploy.sh writes.
load_settings() { # FILE
    local line key value
    while IFS= read -r line || [ -n "$line" ]; do
        [[ $line =~ ^[[:space:]]*(#.*)?$ ]] && continue
        [[ $line =~ ^([A-Z_]+)=(.*)$ ]] || die "$1: bad line: $line"
        key=${BASH_REMATCH[1]}
        value=${BASH_REMATCH[2]}
        case "$key" in
        PROJECT | REGION | RENEWER_IMAGE | ENVOY_IMAGE | APP_IMAGE | APP_PORT | APP_HEALTH_PATH | \
            WS_PATHS | WS_ALLOW_PLAIN_HTTP | STICKY_PATHS | ALLOWED_ORIGINS | COOKIE_SAMESITE | \
            DOMAINS | BUCKET | COOKIE_SECRET_NAME | MEMBERS_GROUP)
            printf -v "$key" '%s' "$value"
            ;;
        *) die "$1: unknown setting $key" ;;
        esac
    done <"$1"
    local k
    for k in PROJECT REGION RENEWER_IMAGE ENVOY_IMAGE APP_IMAGE APP_PORT BUCKET COOKIE_SECRET_NAME \
        ALLOWED_ORIGINS MEMBERS_GROUP; do
        [ -n "${!k:-}" ] || die "$1: $k is missing"
    done
}

# The Envoy config: deploy/envoy/render.sh with this node's settings. Challenges are answered
# from the bucket (store mode, with the node's service-account token), so the nodes never
# need the ACME account. The app cluster is the membership `renewer members` keeps.
render() { # RENDER_SH
    ACME_MODE=store BUCKET=$BUCKET DOMAINS=${DOMAINS:-} \
        MEMBERS_DIR=${MEMBERS_DIR:-$MEMBERS_DIR_NODE} APP_HEALTH_PATH=${APP_HEALTH_PATH:-/healthz} \
        WS_PATHS=${WS_PATHS:-/ws} WS_ALLOW_PLAIN_HTTP=${WS_ALLOW_PLAIN_HTTP:-0} \
        STICKY_PATHS=${STICKY_PATHS:-} ALLOWED_ORIGINS=$ALLOWED_ORIGINS \
        COOKIE_SAMESITE=${COOKIE_SAMESITE:-Lax} COOKIE_SECRET=${COOKIE_SECRET:?COOKIE_SECRET is not set} \
        READY_ADDRESS=${READY_ADDRESS:-$READY_ADDRESS_NODE} \
        NODE_ID=${NODE_ID:-$(hostname)} \
        WASM_PATH=${WASM_PATH:-$OPT/edge_filter.wasm} TLS_DIR=${TLS_DIR:-$TLS_DIR_NODE} \
        bash "$1"
}

# The [members] settings of `renewer members` on this node: the group whose healthy
# instances' apps Envoy routes to (on top of the renewer's own settings).
members_env() {
    cat <<EOF
RENEWER__MEMBERS__PROJECT=$PROJECT
RENEWER__MEMBERS__REGION=$REGION
RENEWER__MEMBERS__GROUP=$MEMBERS_GROUP
RENEWER__MEMBERS__PORT=$APP_PORT
RENEWER__MEMBERS__DIR=$MEMBERS_DIR_NODE
EOF
}

# The app must not reach the metadata server (169.254.169.254, and fd20:ce::254 over IPv6):
# whoever reaches it gets the node service account's access token, and with it the TLS
# private key and the cookie key in Secret Manager
# (https://cloud.google.com/compute/docs/metadata/overview). Envoy and the agents run with
# `--network host`, so their traffic is not forwarded and they keep their access; the app's
# is forwarded from its bridge, and DOCKER-USER is the chain docker leaves to the operator
# and consults first in FORWARD ("Docker and iptables",
# https://docs.docker.com/engine/network/packet-filtering-firewalls/). The rules go at its
# top, so a RETURN rule docker appends cannot bypass them. TCP is answered with a reset,
# anything else with an ICMP error, so the app fails at once instead of hanging.
# DNS (port 53, UDP and TCP) still passes: the same address is the VM's DNS resolver
# (https://cloud.google.com/compute/docs/internal-dns), it hands out no credentials, and
# docker's embedded DNS server forwards the app's queries to it from the container's network
# namespace, through the bridge. RETURN hands those back to docker's own FORWARD rules.
# Idempotent. Every step ends in `|| return 1`: callers use `metadata_firewall ... || die`,
# and `set -e` does not apply inside a function called that way.
metadata_firewall() { # BRIDGE
    local bridge=$1
    [[ $bridge =~ ^[A-Za-z0-9_.-]{1,15}$ ]] || {
        log "metadata_firewall: bad bridge name: $bridge"
        return 1
    }
    command -v iptables >/dev/null || {
        log "metadata_firewall: iptables not found"
        return 1
    }
    metadata_reject iptables "$bridge" 169.254.169.254/32 || return 1
    # IPv6: docker makes DOCKER-USER in ip6tables only when it filters IPv6 itself, and the
    # app's network is created without IPv6, so the app has no IPv6 route to the metadata
    # server anyway. Where the chain exists, the same rules go in; otherwise nothing to do.
    if command -v ip6tables >/dev/null && ip6tables -n -L DOCKER-USER >/dev/null 2>&1; then
        metadata_reject ip6tables "$bridge" fd20:ce::254/128 || return 1
    fi
}

metadata_reject() { # IPTABLES BRIDGE ADDRESS: reject BRIDGE -> ADDRESS at the top of DOCKER-USER
    local ipt=$1 match=(-i "$2" -d "$3")
    # Docker creates the chain and the jump; make them if docker has not (yet), as it would.
    "$ipt" -n -L DOCKER-USER >/dev/null 2>&1 || "$ipt" -N DOCKER-USER || return 1
    "$ipt" -C FORWARD -j DOCKER-USER 2>/dev/null || "$ipt" -I FORWARD 1 -j DOCKER-USER || return 1
    # Each one inserted at 1 when missing, last first: they end up in the order of the
    # comment above (DNS, TCP, the rest), and an interrupted run leaves them in that order too.
    local rule
    for rule in "-j REJECT" "-p tcp -j REJECT --reject-with tcp-reset" \
        "-p tcp --dport 53 -j RETURN" "-p udp --dport 53 -j RETURN"; do
        # shellcheck disable=SC2086 # $rule: words, none with a space or a glob
        "$ipt" -C DOCKER-USER "${match[@]}" $rule 2>/dev/null ||
            "$ipt" -I DOCKER-USER 1 "${match[@]}" $rule || return 1
    done
}

# The readiness settings of `renewer sync --watch` on this node: ready when its app answers
# on the address the other nodes use, and Envoy's :443 presents the installed certificate.
sync_env() { # INTERNAL_IP
    cat <<EOF
RENEWER__SYNC__STATUS_ADDRESS=$READY_ADDRESS_NODE
RENEWER__SYNC__READY_TLS_ADDRESS=127.0.0.1:443
RENEWER__SYNC__READY_APP_URL=http://$1:$APP_PORT${APP_HEALTH_PATH:-/healthz}
EOF
}

if [ "${1:-}" = render ]; then
    [ $# -eq 3 ] || die "usage: startup.sh render SETTINGS RENDER_SH"
    load_settings "$2"
    render "$3"
    exit 0
fi
if [ "${1:-}" = members-env ]; then
    [ $# -eq 2 ] || die "usage: startup.sh members-env SETTINGS"
    load_settings "$2"
    members_env
    exit 0
fi
if [ "${1:-}" = metadata-firewall ]; then
    [ $# -le 2 ] || die "usage: startup.sh metadata-firewall [BRIDGE]"
    metadata_firewall "${2:-$APP_BRIDGE}" || die "cannot install the metadata firewall"
    iptables -S DOCKER-USER
    exit 0
fi
if [ "${1:-}" = sync-env ]; then
    [ $# -eq 3 ] || die "usage: startup.sh sync-env SETTINGS INTERNAL_IP"
    load_settings "$2"
    sync_env "$3"
    exit 0
fi
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
    sed -n '2,/^set -euo pipefail$/p' "$0" | sed '$d'
    exit 0
fi

metadata() { # ATTRIBUTE
    curl -fsS --retry 5 -H 'Metadata-Flavor: Google' "$MD/instance/attributes/$1"
}

retry() { # command...: images and apt mirrors are sometimes briefly unreachable
    local n
    for n in 1 2 3 4 5; do
        "$@" && return 0
        log "attempt $n failed: $*"
        sleep $((n * 5))
    done
    return 1
}

install -d -m 0755 "$ETC" "$OPT"
metadata acme-edge-settings >"$ETC/node.env"
(
    umask 077
    metadata acme-edge-renewer-env >"$ETC/renewer.env"
)
metadata acme-edge-render >"$OPT/render.sh"
load_settings "$ETC/node.env"
members_env >"$ETC/members.env"
# The address the other nodes reach this node's app on (the firewall admits only them).
INTERNAL_IP=$(curl -fsS --retry 5 -H 'Metadata-Flavor: Google' "$MD/instance/network-interfaces/0/ip")
[[ $INTERNAL_IP =~ ^[0-9.]+$ ]] || die "no internal address from the metadata server: $INTERNAL_IP"
sync_env "$INTERNAL_IP" >"$ETC/sync.env"

# Envoy binds :80 and :443 without root.
echo 'net.ipv4.ip_unprivileged_port_start = 80' >/etc/sysctl.d/60-acme-edge.conf
sysctl -q -p /etc/sysctl.d/60-acme-edge.conf

if ! command -v docker >/dev/null; then
    log "installing docker"
    export DEBIAN_FRONTEND=noninteractive
    retry apt-get update -q
    retry apt-get install -y -q docker.io
fi
systemctl enable --now docker
# The app's own network, so the firewall can tell its traffic by the bridge's name. Then the
# firewall, before any unit (re)starts: without it the app does not start (fail closed).
docker network inspect "$APP_NETWORK" >/dev/null 2>&1 ||
    docker network create --driver bridge --opt "com.docker.network.bridge.name=$APP_BRIDGE" \
        "$APP_NETWORK" >/dev/null || die "cannot create the docker network $APP_NETWORK"
metadata_firewall "$APP_BRIDGE" || die "cannot install the metadata firewall; the app stays stopped"
# iptables rules do not survive a reboot, and at boot systemd starts the enabled app unit
# without waiting for this script: the unit installs them itself first (ExecStartPre), from
# this copy of the functions above.
(
    echo '#!/usr/bin/env bash'
    echo '# Written by the acme-edge startup script: the app'"'"'s metadata firewall (see there).'
    echo 'set -euo pipefail'
    declare -f log metadata_firewall metadata_reject
    printf 'metadata_firewall %q\n' "$APP_BRIDGE"
) >"$OPT/metadata-firewall.sh.new"
chmod 0755 "$OPT/metadata-firewall.sh.new"
mv -f "$OPT/metadata-firewall.sh.new" "$OPT/metadata-firewall.sh"
# Pulls from Artifact Registry with the node's service account (gcloud ships in GCE images):
# the renewer's repository, and the app's registry when it is a Google one (the node account
# needs read access there; deploy grants only its own repository).
registries="$REGION-docker.pkg.dev"
app_registry=${APP_IMAGE%%/*}
case "$app_registry" in
*-docker.pkg.dev | gcr.io | *.gcr.io) [ "$app_registry" = "$registries" ] || registries+=",$app_registry" ;;
esac
gcloud auth configure-docker "$registries" --quiet >/dev/null 2>&1
for image in "$RENEWER_IMAGE" "$ENVOY_IMAGE" "$APP_IMAGE"; do
    retry docker pull -q "$image" >/dev/null || die "cannot pull $image"
done

# The filter ships inside the renewer image, so filter and renewer always match.
cid=$(docker create "$RENEWER_IMAGE")
docker cp "$cid:/opt/acme-edge/edge_filter.wasm" "$OPT/edge_filter.wasm.new"
docker rm -f "$cid" >/dev/null
chmod 0644 "$OPT/edge_filter.wasm.new"
mv -f "$OPT/edge_filter.wasm.new" "$OPT/edge_filter.wasm"

install -d -m 0750 -o "$ENVOY_ID" -g "$ENVOY_ID" "$TLS_DIR_NODE" "$MEMBERS_DIR_NODE"

COOKIE_SECRET=$(retry gcloud secrets versions access latest --secret="$COOKIE_SECRET_NAME" \
    --project="$PROJECT" --quiet) || die "cannot read secret $COOKIE_SECRET_NAME"
render "$OPT/render.sh" >"$ETC/envoy.yaml.new"
chown "root:$ENVOY_ID" "$ETC/envoy.yaml.new"
chmod 0640 "$ETC/envoy.yaml.new"
mv -f "$ETC/envoy.yaml.new" "$ETC/envoy.yaml"
unset COOKIE_SECRET

# A systemd unit that runs one container; it replaces a leftover container of the same name.
container_unit() { # NAME DESCRIPTION AFTER EXTRA_SERVICE_LINES EXEC_START
    cat >"/etc/systemd/system/$1.service" <<EOF
[Unit]
Description=acme-edge: $2
After=docker.service $3
Requires=docker.service

[Service]
ExecStartPre=-/usr/bin/docker rm -f $1
$4
ExecStart=$5
ExecStop=/usr/bin/docker stop $1
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
EOF
}

docker_run="/usr/bin/docker run --rm --log-driver gcplogs"
sync_run="$docker_run --network host --user $ENVOY_ID:$ENVOY_ID --env-file $ETC/renewer.env --env-file $ETC/sync.env -v $TLS_DIR_NODE:$TLS_DIR_NODE"
members_run="$docker_run --network host --user $ENVOY_ID:$ENVOY_ID --env-file $ETC/renewer.env --env-file $ETC/members.env -v $MEMBERS_DIR_NODE:$MEMBERS_DIR_NODE"

# Published on the node's internal address: every node's Envoy routes keys to every node's
# app; the firewall rule NAME-allow-nodes-app admits APP_PORT from the nodes only. On its own
# network, which the metadata firewall cuts off from the metadata server; the unit does not
# start if the firewall cannot be installed.
container_unit acme-edge-app "the application" "" "ExecStartPre=/bin/bash $OPT/metadata-firewall.sh" \
    "$docker_run --name acme-edge-app --network $APP_NETWORK -e PORT=$APP_PORT -p $INTERNAL_IP:$APP_PORT:$APP_PORT $APP_IMAGE"
container_unit acme-edge-sync "keep Envoy's certificate current (renewer sync)" "" "" \
    "$sync_run --name acme-edge-sync $RENEWER_IMAGE sync --watch"
container_unit acme-edge-members "keep Envoy's view of the cluster current (renewer members)" "" "" \
    "$members_run --name acme-edge-members $RENEWER_IMAGE members --watch"
# Envoy refuses to start without the SDS and EDS files; `sync --init` writes the first (no
# certificate is needed: challenges on :80 work before the first issuance), `members --init`
# the second (the group's healthy nodes, or an empty list if the API cannot be read yet).
container_unit acme-edge-envoy "Envoy with the edge filter" acme-edge-app.service \
    "ExecStartPre=$sync_run $RENEWER_IMAGE sync --init
ExecStartPre=$members_run $RENEWER_IMAGE members --init" \
    "$docker_run --network host --name acme-edge-envoy -e ENVOY_UID=$ENVOY_ID -e ENVOY_GID=$ENVOY_ID -v $ETC/envoy.yaml:$ETC/envoy.yaml:ro -v $OPT/edge_filter.wasm:$OPT/edge_filter.wasm:ro -v $TLS_DIR_NODE:$TLS_DIR_NODE:ro -v $MEMBERS_DIR_NODE:$MEMBERS_DIR_NODE:ro $ENVOY_IMAGE -c $ETC/envoy.yaml"

systemctl daemon-reload
for unit in acme-edge-app acme-edge-sync acme-edge-members acme-edge-envoy; do
    systemctl enable "$unit" >/dev/null 2>&1
    systemctl restart "$unit"
done
log "node ready: $(systemctl is-active acme-edge-app acme-edge-sync acme-edge-members acme-edge-envoy | tr '\n' ' ')"
