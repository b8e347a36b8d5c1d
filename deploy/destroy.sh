#!/usr/bin/env bash
# Remove what deploy/deploy.sh created; see docs/deploy.md ("Teardown").
#
#   deploy/destroy.sh [--yes] [--purge] [CONFIG]      (make destroy [YES=1] [PURGE=1])
#
# By default the certificates stay: the bucket (certificates, ACME account), the secrets and
# the image repository are kept, so a later deploy serves the same certificate at once and
# does not spend Let's Encrypt rate limits. --purge deletes them too.
set -euo pipefail
# shellcheck source=deploy/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage: deploy/destroy.sh [--yes] [--purge] [--plan] [CONFIG]

Deletes the acme-edge resources in the project CONFIG names: load balancer, nodes, network
rules, renewer (Cloud Run + Scheduler), alerting, service accounts and their project grant,
and with DNS_ZONE the renewer's grant on that zone (never the zone).

  --purge    also delete the bucket (certificates, ACME account), the secrets and the image
             repository: the next deploy starts from nothing
  --yes      do not ask for confirmation
  --plan     print the commands; run nothing
  CONFIG     settings file [deploy/config.env]

Exit codes: 0 removed (or nothing was there); 1 a setting or a call failed (rerun to resume).
EOF
}

config="$DEPLOY_DIR/config.env"
yes=0
purge=0
while [ $# -gt 0 ]; do
    case "$1" in
    --yes) yes=1 ;;
    --purge) purge=1 ;;
    --plan) PLAN=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) config=$1 ;;
    esac
    shift
done

load_config "$config"
trap 'resume_hint "make destroy"' EXIT
command -v gcloud >/dev/null || die "gcloud not found"
G=(--project="$PROJECT" --quiet)

if [ "$PLAN" != 1 ] && [ "$yes" != 1 ]; then
    what="acme-edge ($NAME-*) in project $PROJECT"
    [ "$purge" = 1 ] && what+=", INCLUDING its certificates (bucket gs://$BUCKET and secrets)"
    [ -t 0 ] || die "refusing to delete $what without --yes (no terminal to ask on)"
    read -r -p "Delete $what? Type the project id to confirm: " answer
    [ "$answer" = "$PROJECT" ] || die "not confirmed; nothing deleted"
fi

# Delete what a describe command finds; the delete command is the describe's with `delete`.
remove() { # WHAT describe-args...
    local what=$1
    shift
    if [ "$PLAN" = 1 ] || [ -n "$(lookup "$@" --format='value(name)')" ]; then
        local -a cmd=("$@")
        local i
        for i in "${!cmd[@]}"; do
            if [ "${cmd[$i]}" = describe ]; then
                cmd[i]=delete
                break
            fi
        done
        run "${cmd[@]}"
    else
        log "$what: already gone"
    fi
}

step "load balancer and nodes"
remove "forwarding rule" gcloud compute forwarding-rules describe "$FORWARDING_RULE" --region="$REGION" "${G[@]}"
remove "backend service" gcloud compute backend-services describe "$BACKEND" --region="$REGION" "${G[@]}"
remove "instance group" gcloud compute instance-groups managed describe "$MIG" --region="$REGION" "${G[@]}"
templates="$NAME-node-TEMPLATE"
[ "$PLAN" = 1 ] || templates=$(lookup gcloud compute instance-templates list "${G[@]}" \
    --filter="name ~ ^$NAME-node-" --format='value(name)')
for t in $templates; do
    run gcloud compute instance-templates delete "$t" "${G[@]}"
done
remove "health check" gcloud compute health-checks describe "$HEALTH_CHECK" --region="$REGION" "${G[@]}"

step "network"
remove "firewall rule" gcloud compute firewall-rules describe "$FW_LB" "${G[@]}"
remove "firewall rule" gcloud compute firewall-rules describe "$FW_HC" "${G[@]}"
remove "firewall rule" gcloud compute firewall-rules describe "$FW_NODES" "${G[@]}"
remove "NAT" gcloud compute routers nats describe "$NAT" --router="$ROUTER" --region="$REGION" "${G[@]}"
remove "router" gcloud compute routers describe "$ROUTER" --region="$REGION" "${G[@]}"
remove "static IP" gcloud compute addresses describe "$ADDRESS" --region="$REGION" "${G[@]}"

step "renewer"
remove "Scheduler job" gcloud scheduler jobs describe "$SCHEDULER_JOB" --location="$REGION" "${G[@]}"
# Whichever mode was deployed last (the other one may be left from an earlier mode).
remove "Cloud Run job" gcloud run jobs describe "$RENEWER" --region="$REGION" "${G[@]}"
remove "Cloud Run service" gcloud run services describe "$RENEWER" --region="$REGION" "${G[@]}"

step "alerting"
# Listed by display name (the policy exactly; channels by prefix, one per address used).
delete_listed() { # FILTER gcloud-group-words...
    local filter=$1 names=NAME n
    shift
    [ "$PLAN" = 1 ] || names=$(lookup gcloud "$@" list "${G[@]}" --filter="$filter" --format='value(name)')
    for n in $names; do
        run gcloud "$@" delete "$n" "${G[@]}"
    done
}
for alert in "${ALERT_NAMES[@]}"; do
    delete_listed "displayName=\"$alert\"" alpha monitoring policies
done
delete_listed "displayName:\"$CHANNEL_PREFIX\"" beta monitoring channels
# Uptime checks: `delete` takes the check's id (the last part of its name).
checks=NAME
[ "$PLAN" = 1 ] || checks=$(lookup gcloud monitoring uptime list-configs "${G[@]}" \
    --filter="displayName:\"$NAME https \"" --format='value(name)')
for c in $checks; do
    run gcloud monitoring uptime delete "${c##*/}" "${G[@]}"
done
remove "log metric" gcloud logging metrics describe "$LOG_METRIC" "${G[@]}"
remove "log metric" gcloud logging metrics describe "$LOG_METRIC_OK" "${G[@]}"

step "service accounts, their project and zone grants, and the custom roles"
granted=''
[ "$PLAN" = 1 ] || granted=$(lookup gcloud projects get-iam-policy "$PROJECT" --flatten='bindings[].members' \
    --format='csv[no-heading,separator="|"](bindings.role,bindings.members)')
for grant in "roles/logging.logWriter|$SA_NODE" "projects/$PROJECT/roles/$ROLE_MEMBERS|$SA_NODE" \
    "roles/logging.logWriter|$SA_BUILD"; do
    role=${grant%%|*} sa=${grant#*|}
    if [ "$PLAN" = 1 ] || grep -qxF "$role|serviceAccount:$sa" <<<"$granted"; then
        run gcloud projects remove-iam-policy-binding "$PROJECT" --quiet \
            --role="$role" --member="serviceAccount:$sa" --condition=None
    fi
done
# name|deleted: a live role has no `deleted`; a deleted one stays 7 days, marked True.
role=''
[ "$PLAN" = 1 ] || role=$(lookup gcloud iam roles describe "$ROLE_MEMBERS" --project="$PROJECT" \
    --format='value[separator="|"](name,deleted)')
if [ "$PLAN" = 1 ] || { [ -n "${role%%|*}" ] && [ "${role#*|}" != True ]; }; then
    run gcloud iam roles delete "$ROLE_MEMBERS" --project="$PROJECT" --quiet
elif [ -n "$role" ]; then
    log "membership role: already deleted"
fi
# The renewer's DNS-01 grant (DNS_ZONE): taken off the zone named in the settings and off the
# one the role says it is bound on, if another; then the role. The zone itself stays.
dns_role=''
[ "$PLAN" = 1 ] || dns_role=$(lookup gcloud iam roles describe "$ROLE_DNS" --project="$PROJECT" \
    --format='value[separator="|"](name,deleted,description)')
zones=()
[ -z "$DNS_ZONE" ] || zones+=("$DNS_ZONE")
bound_on=$(role_zone "${dns_role##*|}")
[ -z "$bound_on" ] || [ "$bound_on" = "$DNS_ZONE" ] || zones+=("$bound_on")
for zone in "${zones[@]}"; do
    zone_binding remove "$zone" "$ROLE_DNS" "serviceAccount:$SA_RENEWER"
done
if { [ "$PLAN" = 1 ] && [ -n "$DNS_ZONE" ]; } || { [ -n "${dns_role%%|*}" ] && [ "$(cut -d'|' -f2 <<<"$dns_role")" != True ]; }; then
    run gcloud iam roles delete "$ROLE_DNS" --project="$PROJECT" --quiet
fi
for sa in "$SA_RENEWER" "$SA_SCHEDULER" "$SA_NODE" "$SA_BUILD"; do
    remove "service account" gcloud iam service-accounts describe "$sa" "${G[@]}"
done

if [ "$purge" = 1 ]; then
    step "data: certificates, account, secrets, images (--purge)"
    if [ "$PLAN" = 1 ] || [ -n "$(lookup gcloud storage buckets describe "gs://$BUCKET" "${G[@]}" --format='value(name)')" ]; then
        run gcloud storage rm --recursive "gs://$BUCKET" "${G[@]}"
    fi
    remove "secret" gcloud secrets describe "$CERT_SECRET" "${G[@]}"
    remove "secret" gcloud secrets describe "$COOKIE_SECRET" "${G[@]}"
    remove "repository" gcloud artifacts repositories describe "$REPO" --location="$REGION" "${G[@]}"
else
    log "kept: bucket gs://$BUCKET, secrets $CERT_SECRET and $COOKIE_SECRET, repository $REPO (--purge deletes them)"
fi
log "done"
