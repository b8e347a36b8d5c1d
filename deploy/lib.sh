# shellcheck shell=bash
# Shared by deploy/deploy.sh and deploy/destroy.sh: the settings file, derived names, and the
# helpers that make every step idempotent (look first, change only what is missing or differs)
# and that let `--plan` print each command instead of running it.
# The settings and derived names are set here for the scripts that source this file
# (SC2034), some through `printf -v` (SC2153).
# shellcheck disable=SC2034,SC2153

# A failure inside $(...) stops that substitution too, so a lookup that fails within a helper
# stops the run instead of reading as "nothing there".
shopt -s inherit_errexit

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$DEPLOY_DIR/.." && pwd)

# Every key the settings file may set, with its default ('' = none; required ones are checked
# in load_config).
declare -A DEFAULTS=(
    [PROJECT]='' [REGION]='' [NAME]=acme-edge [NETWORK]=default
    [DOMAINS]='' [CONTACT_EMAIL]='' [ACME_DIRECTORY]=letsencrypt [CERT_NAME]=site
    [KEY_TYPE]=ecdsa-p256 [BUCKET]='' [DNS_ZONE]=''
    [MODE]=job [SCHEDULE]='17 */12 * * *' [TIME_ZONE]=Etc/UTC [IMAGE_TAG]='' [ALERT_EMAIL]=''
    [CERT_EXPIRY_ALERT_DAYS]=14 [CERT_WAIT_MINUTES]=15
    [APP_IMAGE]='' [APP_PORT]=8080 [APP_HEALTH_PATH]=/healthz [WS_PATHS]=/ws
    [WS_ALLOW_PLAIN_HTTP]=0 [STICKY_PATHS]='' [ALLOWED_ORIGINS]='' [COOKIE_SAMESITE]=Lax
    [NODE_COUNT]=2 [MACHINE_TYPE]=e2-small [ENVOY_IMAGE]=envoyproxy/envoy:v1.40.0
)

PLAN=0

die() {
    echo "deploy: $*" >&2
    exit 1
}

log() {
    echo "deploy: $*" >&2
}

# Parse CONFIG (KEY=value lines, never executed) into the settings variables, apply defaults,
# and check every value. Errors name the file, line and key.
load_config() { # FILE
    # Lists are split on spaces below, never globbed (ALLOWED_ORIGINS may be '*').
    local -
    set -f
    local file=$1 line n=0 key value
    [ -f "$file" ] || die "$file: no such file (copy deploy/config.env.example to deploy/config.env)"
    declare -gA SETTING=()
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        line=${line%$'\r'}
        [[ $line =~ ^[[:space:]]*(#.*)?$ ]] && continue
        [[ $line =~ ^[[:space:]]*([A-Z_][A-Z0-9_]*)=(.*)$ ]] ||
            die "$file:$n: expected KEY=value"
        key=${BASH_REMATCH[1]}
        value=${BASH_REMATCH[2]}
        [[ -v DEFAULTS[$key] ]] || die "$file:$n: $key: unknown setting (see deploy/config.env.example)"
        # One layer of matching quotes; a trailing comment after whitespace is dropped.
        if [[ $value =~ ^\"([^\"]*)\"[[:space:]]*(#.*)?$ ]] || [[ $value =~ ^\'([^\']*)\'[[:space:]]*(#.*)?$ ]]; then
            value=${BASH_REMATCH[1]}
        else
            value=${value%%[[:space:]]#*}
            value=${value%"${value##*[![:space:]]}"}
        fi
        SETTING[$key]=$value
    done <"$file"
    for key in "${!DEFAULTS[@]}"; do
        if [ -n "${SETTING[$key]:-}" ]; then
            printf -v "$key" '%s' "${SETTING[$key]}"
        else
            printf -v "$key" '%s' "${DEFAULTS[$key]}"
        fi
    done
    CONFIG_FILE=$file
    [ -n "$BUCKET" ] || BUCKET="$PROJECT-$NAME"
    # The pages allowed to open WebSockets: by default the site itself on each name (for
    # *.example.com, https://*.example.com: every subdomain's pages).
    local d
    if [ -z "$ALLOWED_ORIGINS" ]; then
        for d in $DOMAINS; do ALLOWED_ORIGINS+="${ALLOWED_ORIGINS:+ }https://$d"; done
    fi
    check_config
    # DOMAINS as a list, never globbed (a wildcard name is a glob pattern to the shell), and
    # the names in it that are a host: a wildcard is no host an uptime check or a client
    # can reach, so everything that connects to the names uses HOST_NAMES.
    read -r -a DOMAIN_LIST <<<"$DOMAINS"
    HOST_NAMES=()
    for d in "${DOMAIN_LIST[@]}"; do
        [[ $d == '*.'* ]] || HOST_NAMES+=("$d")
    done
    HAS_WILDCARD=0
    [ "${#HOST_NAMES[@]}" -eq "${#DOMAIN_LIST[@]}" ] || HAS_WILDCARD=1
    derive_names
    schedule_silence
}

bad() { # KEY WHY
    die "$CONFIG_FILE: $1=${!1@Q}: $2"
}

check_config() {
    local d
    for d in PROJECT REGION DOMAINS CONTACT_EMAIL APP_IMAGE; do
        [ -n "${!d}" ] || bad "$d" "required"
    done
    [[ $PROJECT =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] || bad PROJECT "not a project id (6-30 of a-z 0-9 -)"
    [[ $REGION =~ ^[a-z]+-[a-z]+[0-9]+$ ]] || bad REGION "not a region such as europe-west1"
    [[ $NAME =~ ^[a-z][a-z0-9-]{0,16}[a-z0-9]$ ]] ||
        bad NAME "2-18 of a-z 0-9 -, starting with a letter (service account ids add 9 characters)"
    [[ $NETWORK =~ ^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$ ]] || bad NETWORK "not a network name"
    # A managed zone name as Cloud DNS allows it. The renewer reads RENEWER__DNS__ZONE as a
    # TOML value when it is one: these four names would not arrive as a string.
    if [ -n "$DNS_ZONE" ]; then
        [[ $DNS_ZONE =~ ^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$ ]] ||
            bad DNS_ZONE "not a Cloud DNS managed zone name (1-63 of a-z 0-9 -, starting with a letter), such as example-com"
        [[ ! $DNS_ZONE =~ ^(true|false|inf|nan)$ ]] ||
            bad DNS_ZONE "the renewer would read this name as a TOML value; use another zone"
    fi
    # A wildcard (*.example.com, RFC 8555 §7.1.3) can only be validated with DNS-01.
    for d in $DOMAINS; do
        if [[ $d == '*.'* ]] && [ -z "$DNS_ZONE" ]; then
            bad DOMAINS "$d is a wildcard: HTTP-01 cannot validate it; set DNS_ZONE to issue with DNS-01 (docs/deploy.md, \"DNS-01\")"
        fi
        [[ ${d#'*.'} =~ ^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$ ]] ||
            bad DOMAINS "$d is not a lowercase DNS name (or, with DNS_ZONE, *. and one)"
    done
    [[ $CONTACT_EMAIL =~ ^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$ ]] || bad CONTACT_EMAIL "not an email address"
    if ! [[ $CERT_EXPIRY_ALERT_DAYS =~ ^[0-9]+$ ]] || ((CERT_EXPIRY_ALERT_DAYS < 1 || CERT_EXPIRY_ALERT_DAYS > 60)); then
        bad CERT_EXPIRY_ALERT_DAYS "expected 1-60 (days left on the served certificate that raise the alert)"
    fi
    if ! [[ $CERT_WAIT_MINUTES =~ ^[0-9]+$ ]] || ((CERT_WAIT_MINUTES < 1 || CERT_WAIT_MINUTES > 120)); then
        bad CERT_WAIT_MINUTES "expected 1-120 (how long deploy waits for a certificate with new names before it rolls the nodes)"
    fi
    [ -z "$ALERT_EMAIL" ] || [[ $ALERT_EMAIL =~ ^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$ ]] ||
        bad ALERT_EMAIL "not an email address"
    [[ $ACME_DIRECTORY =~ ^(letsencrypt|letsencrypt-staging|https://[A-Za-z0-9./:_-]+)$ ]] ||
        bad ACME_DIRECTORY "expected letsencrypt, letsencrypt-staging or an https:// URL"
    [[ $CERT_NAME =~ ^[a-z0-9][a-z0-9-]{0,30}$ ]] || bad CERT_NAME "1-31 of a-z 0-9 - (it is part of a secret id)"
    [[ $KEY_TYPE =~ ^(ecdsa-p256|ecdsa-p384|rsa-2048|rsa-4096)$ ]] || bad KEY_TYPE "expected ecdsa-p256, ecdsa-p384, rsa-2048 or rsa-4096"
    [[ $BUCKET =~ ^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$ ]] || bad BUCKET "not a bucket name (3-63 of a-z 0-9 _ -)"
    [[ $MODE =~ ^(job|service)$ ]] || bad MODE "expected job or service"
    [[ $SCHEDULE =~ ^[0-9*/,-]+( [0-9*/,A-Za-z-]+){4}$ ]] || bad SCHEDULE "not a 5-field cron schedule"
    [[ $TIME_ZONE =~ ^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$ ]] || bad TIME_ZONE "not a tz database name such as Etc/UTC"
    [ -z "$IMAGE_TAG" ] || [[ $IMAGE_TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || bad IMAGE_TAG "not a Docker tag"
    [[ $APP_IMAGE =~ ^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9_.-]+|@sha256:[0-9a-f]{64})?$ ]] ||
        bad APP_IMAGE "not an image reference such as REGION-docker.pkg.dev/PROJECT/REPO/IMAGE:TAG"
    [[ $ENVOY_IMAGE =~ ^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9_.-]+|@sha256:[0-9a-f]{64})?$ ]] ||
        bad ENVOY_IMAGE "not an image reference"
    if ! [[ $APP_PORT =~ ^[0-9]+$ ]] || ((APP_PORT < 1024 || APP_PORT > 65535 || APP_PORT == 9901)); then
        bad APP_PORT "expected 1024-65535 (80, 443 and 9901 are Envoy's)"
    fi
    [[ $APP_HEALTH_PATH =~ ^/[A-Za-z0-9._~/-]*$ ]] || bad APP_HEALTH_PATH "not a path"
    for d in $WS_PATHS; do
        [[ $d =~ ^/[A-Za-z0-9._~/-]*$ ]] || bad WS_PATHS "$d is not a path"
    done
    for d in $STICKY_PATHS; do
        [[ $d =~ ^/[A-Za-z0-9._~/-]*$ ]] || bad STICKY_PATHS "$d is not a path"
    done
    [[ $WS_ALLOW_PLAIN_HTTP =~ ^[01]$ ]] || bad WS_ALLOW_PLAIN_HTTP "expected 0 or 1"
    local o
    for o in $ALLOWED_ORIGINS; do
        [[ $o == '*' || $o =~ ^https?://(\*\.)?[a-z0-9.-]+(:[0-9]{1,5})?$ ]] ||
            bad ALLOWED_ORIGINS "$o is not an origin such as https://app.example.com, https://*.example.com or *"
    done
    [[ $COOKIE_SAMESITE =~ ^(Lax|Strict|None)$ ]] || bad COOKIE_SAMESITE "expected Lax, Strict or None"
    if ! [[ $NODE_COUNT =~ ^[0-9]+$ ]] || ((NODE_COUNT < 1 || NODE_COUNT > 100)); then
        bad NODE_COUNT "expected 1-100"
    fi
    [[ $MACHINE_TYPE =~ ^[a-z0-9]+-[a-z0-9-]+$ ]] || bad MACHINE_TYPE "not a machine type such as e2-small"
}

# Resource names, all derived from NAME so that destroy finds exactly what deploy made.
derive_names() {
    REPO="$NAME"
    RENEWER="$NAME-renewer"              # Cloud Run job or service
    SCHEDULER_JOB="$NAME-renewal"
    SA_RENEWER="$NAME-renewer@$PROJECT.iam.gserviceaccount.com"
    SA_SCHEDULER="$NAME-scheduler@$PROJECT.iam.gserviceaccount.com"
    SA_NODE="$NAME-node@$PROJECT.iam.gserviceaccount.com"
    SA_BUILD="$NAME-build@$PROJECT.iam.gserviceaccount.com"
    CERT_SECRET="$NAME-$CERT_NAME"       # = secret_manager.secret_prefix + certificate name
    COOKIE_SECRET="$NAME-cookie-secret"
    IMAGE_PATH="$REGION-docker.pkg.dev/$PROJECT/$REPO/renewer"
    ENVOY_MIRROR_PATH="$REGION-docker.pkg.dev/$PROJECT/$REPO/envoy"
    ADDRESS="$NAME-ip"
    HEALTH_CHECK="$NAME-hc"
    MIG="$NAME-nodes"
    BACKEND="$NAME-backend"
    FORWARDING_RULE="$NAME-lb"
    FW_LB="$NAME-allow-lb"
    FW_HC="$NAME-allow-health-checks"
    FW_NODES="$NAME-allow-nodes-app"
    # Custom role ids allow letters, digits, _ and . only.
    ROLE_MEMBERS="acmeEdgeMembers_${NAME//-/_}"
    ROLE_DNS="acmeEdgeDns_${NAME//-/_}"
    ROUTER="$NAME-router"
    NAT="$NAME-nat"
    NODE_TAG="$NAME-node"
    LOG_METRIC="$NAME-renewal-failures"
    LOG_METRIC_OK="$NAME-renewal-successes"
    ALERT_NAME="$NAME: renewal failed"
    ALERT_SILENT_NAME="$NAME: no successful renewal pass"
    ALERT_TRIGGER_NAME="$NAME: renewal trigger failed"
    ALERT_HTTPS_NAME="$NAME: HTTPS check failing"
    ALERT_EXPIRY_NAME="$NAME: certificate expires soon"
    ALERT_NAMES=("$ALERT_NAME" "$ALERT_SILENT_NAME" "$ALERT_TRIGGER_NAME" "$ALERT_HTTPS_NAME" "$ALERT_EXPIRY_NAME")
    # The address is in the name: a new ALERT_EMAIL makes a new channel, and the policy
    # (whose spec then differs) moves to it.
    CHANNEL_PREFIX="$NAME renewal alerts"
    CHANNEL_NAME="$CHANNEL_PREFIX: $ALERT_EMAIL"
    # Generated files live next to the settings file (deploy/.out/ for deploy/config.env),
    # so deploys from different settings files never share them.
    OUT_DIR="$(cd "$(dirname "$CONFIG_FILE")" && pwd)/.out"
}

# How long without a successful pass before "no successful renewal pass" fires: two schedule
# periods, at most 23.5 hours (the longest absence Monitoring accepts). SCHEDULE_MINUTES is
# the period read from the cron expression; a sparser schedule than that cannot be watched
# this way (SILENCE_SECONDS stays empty and deploy says so).
schedule_silence() {
    local -a f
    read -r -a f <<<"$SCHEDULE"
    local minute=${f[0]} hour=${f[1]} period
    if [ "${f[2]}${f[3]}${f[4]}" != '***' ]; then
        period=10080 # day-of-month, month or weekday limits: assume weekly or sparser
    elif [ "$hour" = '*' ]; then
        if [[ $minute =~ ^\*/([0-9]+)$ ]]; then period=${BASH_REMATCH[1]}; else period=60; fi
    elif [[ $hour =~ ^\*/([0-9]+)$ ]]; then
        period=$((BASH_REMATCH[1] * 60))
    elif [[ $hour =~ ^[0-9]+(,[0-9]+)+$ ]]; then
        local n=${hour//[^,]/}
        period=$((1440 / (${#n} + 1)))
    else
        period=1440
    fi
    SCHEDULE_MINUTES=$period
    local silence=$((2 * period * 60))
    ((silence <= 84600)) || silence=84600
    SILENCE_SECONDS='' SILENCE_HUMAN=''
    if ((silence > period * 60)); then
        SILENCE_SECONDS=$silence
        SILENCE_HUMAN="$((silence / 3600)) h $((silence % 3600 / 60)) min"
    fi
}

# --- running commands -----------------------------------------------------------------------

# Print a command the way a shell would read it back.
show() {
    local out='' a
    for a in "$@"; do
        if [[ $a =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
            out+=" $a"
        else
            out+=" ${a@Q}"
        fi
    done
    printf '%s\n' "${out# }"
}

# A command that changes something: printed in plan mode, logged and run otherwise.
run() {
    if [ "$PLAN" = 1 ]; then
        show "$@"
    else
        echo "+ $(show "$@")" >&2
        "$@"
    fi
}

# Google Cloud is eventually consistent in a few documented places; these stderr patterns are
# the transient errors deploy waits out (anything else stops it at once):
#   a service account created seconds ago is not yet visible to IAM policies (up to minutes);
#   a log-based metric created seconds ago is not yet known to alerting ("could take up to 10
#   minutes").
TRANSIENT_NEW_ACCOUNT='Service account [^ ]+ does not exist'
TRANSIENT_NEW_METRIC='Cannot find metric\(s\)'

# Like `run`, but while the command fails with the transient error PATTERN, wait and try again
# (2 s, doubling, at most 60 s apart) for up to MAX_SECONDS, saying what it waits for. Any
# other failure, or the same one after MAX_SECONDS, stops the deploy with gcloud's message.
run_retrying() { # WHAT PATTERN MAX_SECONDS command...
    local what=$1 pattern=$2 max=$3 delay=2 waited=0 rc out err
    shift 3
    if [ "$PLAN" = 1 ]; then
        show "$@"
        return 0
    fi
    echo "+ $(show "$@")" >&2
    err=$(mktemp)
    while :; do
        rc=0
        out=$("$@" 2>"$err") || rc=$?
        if [ "$rc" -eq 0 ]; then
            cat "$err" >&2
            rm -f "$err"
            printf '%s' "$out"
            return 0
        fi
        if ! grep -qE "$pattern" "$err" || [ "$waited" -ge "$max" ]; then
            cat "$err" >&2
            rm -f "$err"
            [ "$waited" -lt "$max" ] || die "still failing after ${waited}s waiting for $what"
            die "this command failed: $(show "$@")"
        fi
        log "waiting for $what: $(grep -oE "$pattern" "$err" | head -n1); retrying in ${delay}s"
        sleep "$delay"
        waited=$((waited + delay))
        delay=$((delay * 2 > 60 ? 60 : delay * 2))
    done
}

# Run a read-only command and print its stdout; empty when the resource does not exist.
# Any other failure (permission, network) stops the deploy with gcloud's message: guessing
# "absent" there would make the next create fail confusingly.
lookup() {
    local out err rc=0
    err=$(mktemp)
    out=$("$@" 2>"$err") || rc=$?
    if [ "$rc" -ne 0 ]; then
        if grep -qiE 'NOT_FOUND|not found|404|was not found|does not exist|Cannot find|matched no objects' "$err"; then
            rm -f "$err"
            return 0
        fi
        echo "deploy: this lookup failed: $(show "$@")" >&2
        cat "$err" >&2
        rm -f "$err"
        exit 1
    fi
    rm -f "$err"
    printf '%s' "$out"
}

# True when the resource a describe command names does not exist. Plan mode assumes a fresh
# project: everything is absent, and the check is printed as a comment.
absent() {
    if [ "$PLAN" = 1 ]; then
        echo "# if absent: $(show "$@")"
        return 0
    fi
    [ -z "$(lookup "$@" --format='value(name)')" ]
}

step() {
    CURRENT_STEP=$*
    if [ "$PLAN" = 1 ]; then
        printf '\n# --- %s\n' "$*"
    else
        printf '\n==> %s\n' "$*" >&2
    fi
}

# On a failed run, say where it stopped and that a rerun resumes (installed by the scripts
# once the settings are read).
CURRENT_STEP=''
resume_hint() { # WHAT (make deploy, make destroy)
    local rc=$?
    if [ "$rc" -ne 0 ] && [ -n "$CURRENT_STEP" ]; then
        echo "deploy: stopped during \"$CURRENT_STEP\" (exit $rc). What was done before stays; fix the cause above and run $1 again: every step looks before it changes anything." >&2
    fi
    return "$rc"
}

declare -A POLICY_CACHE=()

# Add ROLE for MEMBER to a resource's IAM policy unless it is there. GET and ADD are the
# resource's get-iam-policy and add-iam-policy-binding commands (without ROLE/MEMBER); an
# optional CONDITION_TITLE:EXPRESSION binds conditionally.
ensure_binding() { # "GET CMD" "ADD CMD" ROLE MEMBER [TITLE EXPRESSION]
    local -a get add
    read -r -a get <<<"$1"
    read -r -a add <<<"$2"
    local role=$3 member=$4 title=${5:-} expression=${6:-}
    if [ "$PLAN" != 1 ]; then
        # One read per resource and run: the bindings this run adds are appended.
        if [[ ! -v POLICY_CACHE[$1] ]]; then
            POLICY_CACHE[$1]=$(lookup "${get[@]}" --flatten='bindings[].members' \
                --format='csv[no-heading,separator="|"](bindings.role,bindings.members,bindings.condition.title)')
        fi
        if grep -qxF "$role|$member|$title" <<<"${POLICY_CACHE[$1]}"; then
            return 0
        fi
    fi
    # A member created moments ago may not be visible to IAM yet.
    local wait=(run_retrying "IAM to see $member" "$TRANSIENT_NEW_ACCOUNT" 300)
    if [ -n "$title" ]; then
        "${wait[@]}" "${add[@]}" --role="$role" --member="$member" \
            --condition="title=$title,expression=$expression"
    elif [[ " ${add[*]} " == *" run jobs "* ]]; then
        "${wait[@]}" "${add[@]}" --role="$role" --member="$member" # no --condition flag
    else
        # Explicit, or gcloud refuses to add to a policy that holds conditional bindings.
        "${wait[@]}" "${add[@]}" --role="$role" --member="$member" --condition=None
    fi
    [ "$PLAN" = 1 ] || POLICY_CACHE[$1]+=$'\n'"$role|$member|$title"
}

# --- the renewer's DNS-01 grant on a Cloud DNS managed zone ------------------------------------

# The custom role ROLE_DNS says in its description which zone it is bound on: the one place
# that remembers it when DNS_ZONE changes or goes.
role_description() { # ZONE
    printf 'Bound by acme-edge on Cloud DNS managed zone %s only: the DNS-01 challenge records of %s' "$1" "$NAME"
}
role_zone() { # DESCRIPTION -> ZONE ('' when it names none)
    if [[ $1 =~ managed\ zone\ ([a-z][a-z0-9-]*)\  ]]; then
        printf '%s' "${BASH_REMATCH[1]}"
    fi
}

# zone_binding add|remove ZONE ROLE_ID MEMBER: bind the project's custom role ROLE_ID to
# MEMBER on the managed zone ZONE, or take it off; nothing when it already is (or is not).
# gcloud has no add- or remove-iam-policy-binding for managed zones (get-iam-policy and
# set-iam-policy only), so the policy is read once, the one binding added or removed with jq,
# and written back whole: its etag makes the write fail, rather than undo a change made in
# between, and a rerun starts over from the new policy.
# shellcheck disable=SC2016 # $role and $member are jq's (--arg)
zone_binding() {
    local verb=$1 zone=$2 role="projects/$PROJECT/roles/$3" member=$4 policy edit file
    local -a get=(gcloud dns managed-zones get-iam-policy "$zone" --project="$PROJECT" --format=json)
    local -a set=(gcloud dns managed-zones set-iam-policy "$zone" --project="$PROJECT" --quiet)
    local -a args=(--arg role "$role" --arg member "$member")
    # Unconditional bindings only: a conditional one for the same role is someone else's.
    local has='any(.bindings[]?; .role == $role and .condition == null and any(.members[]?; . == $member))'
    if [ "$verb" = add ]; then
        edit='if any(.bindings[]?; .role == $role and .condition == null)
            then .bindings |= map(if .role == $role and .condition == null then .members += [$member] else . end)
            else .bindings += [{role: $role, members: [$member]}] end'
    else
        edit='.bindings = [.bindings[]? | if .role == $role and .condition == null
            then .members -= [$member] else . end | select(.members | length > 0)]'
    fi
    edit=$(printf '%s' "$edit" | tr -s ' \n' ' ')
    mkdir -p "$OUT_DIR"
    file="$OUT_DIR/dns-zone-policy.json"
    if [ "$PLAN" = 1 ]; then
        echo "# unless $member has $role on zone $zone already:"
        printf '%s | %s >%s\n' "$(show "${get[@]}")" "$(show jq "${args[@]}" "$edit")" "$(show "$file")"
        show "${set[@]}" --policy-file="$file"
        return 0
    fi
    command -v jq >/dev/null || die "jq not found: it edits the IAM policy of Cloud DNS zone $zone"
    policy=$(lookup "${get[@]}")
    if [ -z "$policy" ]; then
        [ "$verb" = remove ] || die "Cloud DNS zone $zone: no IAM policy to add to"
        log "zone $zone: gone, and its grant with it"
        return 0
    fi
    # jq -e: 0 when the binding is there, 1 when not, more when the policy did not parse.
    local absent=0
    jq -e "${args[@]}" "$has" <<<"$policy" >/dev/null || absent=$?
    [ "$absent" -le 1 ] || die "the IAM policy of Cloud DNS zone $zone did not parse (jq exit $absent)"
    case $verb$absent in
    add0) return 0 ;;
    remove1)
        log "zone $zone: $member holds no $role there"
        return 0
        ;;
    esac
    jq "${args[@]}" "$edit" <<<"$policy" >"$file"
    # A renewer account created moments ago may not be visible to IAM yet.
    run_retrying "IAM to see $member" "$TRANSIENT_NEW_ACCOUNT" 300 "${set[@]}" --policy-file="$file"
}

# A short hash of the arguments: labels and names that change when a spec does.
# Paths are left out (where the checkout or the settings file lives is not part of a spec).
spec_hash() {
    local a
    for a in "$@"; do
        a=${a//"$OUT_DIR"/OUT}
        printf '%s\n' "${a//"$REPO_DIR"/REPO}"
    done | sha256sum | cut -c1-10
}

# What the image is built from; a change anywhere else (docs, deploy scripts) reuses the image.
# tests/ is a workspace member, so the build reads its manifest, not its code. Docs are no
# build input either.
BUILD_INPUTS=(Cargo.toml Cargo.lock Dockerfile .dockerignore syntax renewer edge-filter tests/Cargo.toml)

# The renewer image tag: a hash of the build inputs as committed plus any uncommitted change to
# them, so the same sources never build twice and different sources never share a tag.
image_tag() {
    if [ -n "$IMAGE_TAG" ]; then
        printf '%s' "$IMAGE_TAG"
        return
    fi
    git -C "$REPO_DIR" rev-parse --git-dir >/dev/null 2>&1 ||
        die "not a git checkout: set IMAGE_TAG in $CONFIG_FILE"
    local hash
    hash=$(
        cd "$REPO_DIR" && {
            git ls-tree -r HEAD -- "${BUILD_INPUTS[@]}" | grep -v '\.md$'
            git diff HEAD -- "${BUILD_INPUTS[@]}" ':(exclude)*.md'
            git ls-files -o --exclude-standard -z -- "${BUILD_INPUTS[@]}" ':(exclude)*.md' | xargs -0 -r sha256sum
        } | sha256sum | cut -c1-12
    )
    printf 'src-%s' "$hash"
}
