#!/usr/bin/env bash
# Deploy acme-edge to Google Cloud from one settings file; see docs/deploy.md.
#
#   deploy/deploy.sh [--plan] [CONFIG]     (make deploy / make deploy-plan; CONFIG=deploy/config.env)
#
# Every step looks before it changes anything, so a second run changes nothing, and a run
# after a settings change updates only what the change touches. --plan prints the commands a
# deploy into an empty project would run, and runs nothing (not even the lookups).
set -euo pipefail
# shellcheck source=deploy/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage: deploy/deploy.sh [--plan] [CONFIG]

Deploys acme-edge (renewer on Cloud Run + Scheduler, bucket, secrets, service accounts, app
nodes behind a network load balancer) into the project CONFIG names.

  --plan     print every command a first deploy runs; run nothing
  CONFIG     settings file [deploy/config.env]; see deploy/config.env.example

Exit codes: 0 deployed (or plan printed); 1 a setting or a Google Cloud call failed (the
message says which; rerunning resumes where it stopped).
EOF
}

config="$DEPLOY_DIR/config.env"
while [ $# -gt 0 ]; do
    case "$1" in
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
trap 'resume_hint "make deploy"' EXIT
command -v gcloud >/dev/null || die "gcloud not found: install the Google Cloud CLI (docs/deploy.md)"
command -v openssl >/dev/null || die "openssl not found (it generates the affinity cookie key)"
# gcloud edits a managed zone's IAM policy only whole (get-iam-policy, set-iam-policy): jq adds
# the one binding to the policy as read.
[ "$PLAN" = 1 ] || [ -z "$DNS_ZONE" ] || command -v jq >/dev/null || die "jq not found (with DNS_ZONE it adds the renewer's binding to the zone's IAM policy)"
if [ "$PLAN" != 1 ]; then
    # Alert policies and channels exist only in these command groups; find out now, not after
    # half the resources are made.
    for group in alpha beta; do
        CLOUDSDK_CORE_DISABLE_PROMPTS=1 gcloud "$group" monitoring --help >/dev/null 2>&1 </dev/null ||
            die "gcloud's $group component is missing: gcloud components install $group"
    done
fi
TAG=$(image_tag)
IMAGE="$IMAGE_PATH:$TAG"
mkdir -p "$OUT_DIR"
G=(--project="$PROJECT" --quiet)

# --- generated files (kept in deploy/.out/ for reading; printed in plan mode) ----------------

toml_list() { # words -> ["a", "b"]
    local out='' w
    for w in "$@"; do out+="${out:+, }\"$w\""; done
    printf '[%s]' "$out"
}

# With DNS_ZONE the CA validates the names with DNS-01: the renewer writes the answers as TXT
# records in that zone (of this project), through Cloud DNS.
CHALLENGE=''
[ -z "$DNS_ZONE" ] || CHALLENGE=', challenge = "dns-01"'

# Renewer settings as RENEWER__* variables: the image's config file is empty on purpose.
renewer_env() { # KEY=value lines, shared by Cloud Run and the nodes' `renewer sync`
    cat <<EOF
RENEWER__ACME__DIRECTORY=$ACME_DIRECTORY
RENEWER__ACME__CONTACT=$(toml_list "$CONTACT_EMAIL")
RENEWER__STORE__URL=gs://$BUCKET
RENEWER__SECRET_MANAGER__PROJECT=$PROJECT
RENEWER__SECRET_MANAGER__SECRET_PREFIX=$NAME-
RENEWER__CERTIFICATES=[{name = "$CERT_NAME", domains = $(toml_list "${DOMAIN_LIST[@]}"), key_type = "$KEY_TYPE"$CHALLENGE}]
RENEWER__SYNC__SOURCE=secret-manager
RENEWER_LOG_FORMAT=json
EOF
    if [ -n "$DNS_ZONE" ]; then
        echo "RENEWER__DNS__PROJECT=$PROJECT"
        echo "RENEWER__DNS__ZONE=$DNS_ZONE"
    fi
}

# The roots `renewer sync` accepts chains to, shipped in the image (renewer/roots/): a
# certificate someone else put in the bucket or the secret is refused unless the CA signed it.
# One file for Let's Encrypt's production and staging roots, so moving between the two does
# not roll the nodes. A CA given by URL has no known roots: the nodes then accept any chain
# (docs/deploy.md).
trusted_roots() {
    case $ACME_DIRECTORY in
    letsencrypt | letsencrypt-staging) echo /etc/acme-edge/roots/letsencrypt.pem ;;
    *) echo '' ;;
    esac
}

# The nodes' agents (`renewer sync`, `renewer members`) need the store, the mirror, the
# names and the CA's roots, not the CA itself: settings only the renewer reads do not change
# the nodes' template. The challenge is one of those, but the renewer's settings accept a
# wildcard name only in a dns-01 certificate with a [dns] section: with a wildcard in DOMAINS
# the nodes get both (the zone stays the renewer's: moving it does not roll the nodes).
node_renewer_env() {
    local challenge=''
    [ "$HAS_WILDCARD" = 0 ] || challenge=$CHALLENGE
    cat <<EOF
RENEWER__STORE__URL=gs://$BUCKET
RENEWER__SECRET_MANAGER__PROJECT=$PROJECT
RENEWER__SECRET_MANAGER__SECRET_PREFIX=$NAME-
RENEWER__CERTIFICATES=[{name = "$CERT_NAME", domains = $(toml_list "${DOMAIN_LIST[@]}")$challenge}]
RENEWER__SYNC__SOURCE=secret-manager
RENEWER_LOG_FORMAT=json
EOF
    [ "$HAS_WILDCARD" = 0 ] || echo "RENEWER__DNS__PROJECT=$PROJECT"
    local roots
    roots=$(trusted_roots)
    [ -z "$roots" ] || echo "RENEWER__SYNC__TRUSTED_ROOTS=$roots"
}

renewer_env >"$OUT_DIR/renewer.env"
node_renewer_env >"$OUT_DIR/node-renewer.env"
# Cloud Run takes a YAML map; single quotes keep TOML's double quotes literal.
sed -E "s/^([A-Z_]+)=(.*)$/\1: '\2'/" "$OUT_DIR/renewer.env" >"$OUT_DIR/renewer-env.yaml"


# Challenge answers are removed by the renewer; anything left goes after a day. Build sources
# (the deployer uploads them for Cloud Build) go after a week.
cat >"$OUT_DIR/lifecycle.json" <<'EOF'
{"rule": [{"action": {"type": "Delete"}, "condition": {"age": 1, "matchesPrefix": ["acme-challenge/"]}},
          {"action": {"type": "Delete"}, "condition": {"age": 7, "matchesPrefix": ["build-source/"]}}]}
EOF

# The renewer image, built from the Dockerfile by the build account.
cat >"$OUT_DIR/cloudbuild-renewer.json" <<EOF
{
  "steps": [{"name": "gcr.io/cloud-builders/docker", "args": ["build", "--tag", "$IMAGE", "."]}],
  "images": ["$IMAGE"],
  "serviceAccount": "projects/$PROJECT/serviceAccounts/$SA_BUILD",
  "options": {"logging": "CLOUD_LOGGING_ONLY"},
  "timeout": "1800s"
}
EOF

if [ "$PLAN" = 1 ]; then
    echo "# acme-edge deploy plan for project $PROJECT ($CONFIG_FILE); nothing was run."
    echo "# Generated files (deploy/.out/):"
    for f in renewer-env.yaml node-renewer.env lifecycle.json cloudbuild-renewer.json; do
        echo "# $f:"
        sed 's/^/#   /' "$OUT_DIR/$f"
    done
fi

# --- 1. APIs, registry, image -----------------------------------------------------------------

step "APIs"
APIS=(run.googleapis.com cloudscheduler.googleapis.com artifactregistry.googleapis.com
    cloudbuild.googleapis.com secretmanager.googleapis.com compute.googleapis.com
    iam.googleapis.com storage.googleapis.com logging.googleapis.com monitoring.googleapis.com)
# Cloud DNS only for DNS-01 (the renewer writes the challenge records through it).
[ -z "$DNS_ZONE" ] || APIS+=(dns.googleapis.com)
missing=("${APIS[@]}")
if [ "$PLAN" != 1 ]; then
    enabled=$(lookup gcloud services list --enabled "${G[@]}" --format='value(config.name)')
    missing=()
    for api in "${APIS[@]}"; do
        grep -qxF "$api" <<<"$enabled" || missing+=("$api")
    done
fi
[ ${#missing[@]} -eq 0 ] || run gcloud services enable "${missing[@]}" "${G[@]}"

if [ -n "$DNS_ZONE" ]; then
    step "Cloud DNS zone $DNS_ZONE (DNS-01: the renewer writes the challenge records there)"
    # Deploy never creates, changes or deletes the zone: it must exist, be public (the CA
    # looks the records up on the internet) and hold every name, wildcards by their base.
    if [ "$PLAN" = 1 ]; then
        echo "# must exist, be public and hold every name in DOMAINS: $(show gcloud dns managed-zones describe "$DNS_ZONE" "${G[@]}")"
    else
        zone=$(lookup gcloud dns managed-zones describe "$DNS_ZONE" "${G[@]}" --format='value[separator=" "](dnsName,visibility)')
        [ -n "$zone" ] || bad DNS_ZONE "no such Cloud DNS managed zone in project $PROJECT (deploy does not create zones; gcloud dns managed-zones list --project=$PROJECT lists them)"
        read -r zone_dns_name zone_visibility <<<"$zone"
        [ "${zone_visibility:-public}" = public ] ||
            bad DNS_ZONE "the zone is $zone_visibility; the CA looks the challenge records up in public DNS"
        for d in "${DOMAIN_LIST[@]}"; do
            base="${d#'*.'}."
            [ "$base" = "$zone_dns_name" ] || [[ $base == *".$zone_dns_name" ]] ||
                bad DOMAINS "$d is not in the zone DNS_ZONE=$DNS_ZONE names ($zone_dns_name): the renewer writes every name's challenge record there"
        done
    fi
fi

step "Artifact Registry repository $REPO"
if absent gcloud artifacts repositories describe "$REPO" --location="$REGION" "${G[@]}"; then
    run gcloud artifacts repositories create "$REPO" --location="$REGION" "${G[@]}" \
        --repository-format=docker --description="acme-edge images"
fi

# --- 2. storage and secrets -------------------------------------------------------------------

step "bucket gs://$BUCKET (uniform access, public access prevented, challenges and build sources expire)"
bucket=''
if [ "$PLAN" = 1 ]; then
    echo "# if absent: $(show gcloud storage buckets describe "gs://$BUCKET" "${G[@]}")"
else
    bucket=$(lookup gcloud storage buckets describe "gs://$BUCKET" "${G[@]}" \
        --format='value(name,uniform_bucket_level_access,public_access_prevention,lifecycle_config.rule[0].condition.matchesPrefix[0],lifecycle_config.rule[1].condition.matchesPrefix[0])')
fi
if [ -z "$bucket" ]; then
    run gcloud storage buckets create "gs://$BUCKET" "${G[@]}" --location="$REGION" \
        --uniform-bucket-level-access --public-access-prevention \
        --lifecycle-file="$OUT_DIR/lifecycle.json"
elif [ "${bucket#*$'\t'}" != $'True\tenforced\tacme-challenge/\tbuild-source/' ]; then
    # An existing bucket (chosen by the operator) is brought to the same settings.
    run gcloud storage buckets update "gs://$BUCKET" "${G[@]}" \
        --uniform-bucket-level-access --public-access-prevention \
        --lifecycle-file="$OUT_DIR/lifecycle.json"
fi

step "secrets $CERT_SECRET (certificate mirror) and $COOKIE_SECRET (affinity cookie key)"
if absent gcloud secrets describe "$CERT_SECRET" "${G[@]}"; then
    run gcloud secrets create "$CERT_SECRET" "${G[@]}" --replication-policy=automatic \
        --labels="managed-by=acme-edge,certificate=$CERT_NAME"
fi
if absent gcloud secrets describe "$COOKIE_SECRET" "${G[@]}"; then
    run gcloud secrets create "$COOKIE_SECRET" "${G[@]}" --replication-policy=automatic \
        --labels=managed-by=acme-edge
fi
has_version=''
[ "$PLAN" = 1 ] || has_version=$(lookup gcloud secrets versions list "$COOKIE_SECRET" "${G[@]}" --limit=1 --format='value(name)')
if [ -z "$has_version" ]; then
    # The key never touches disk or the command line.
    if [ "$PLAN" = 1 ]; then
        printf '%s\n' "openssl rand -base64 48 | tr -d '\\n' | $(show gcloud secrets versions add "$COOKIE_SECRET" "${G[@]}" --data-file=-)"
    else
        printf '+ %s\n' "openssl rand -base64 48 | tr -d '\\n' | $(show gcloud secrets versions add "$COOKIE_SECRET" "${G[@]}" --data-file=-)" >&2
        openssl rand -base64 48 | tr -d '\n' | gcloud secrets versions add "$COOKIE_SECRET" "${G[@]}" --data-file=-
    fi
fi

# --- 3. service accounts and least-privilege grants -------------------------------------------

step "service accounts"
for sa in renewer scheduler node build; do
    if absent gcloud iam service-accounts describe "$NAME-$sa@$PROJECT.iam.gserviceaccount.com" "${G[@]}"; then
        run gcloud iam service-accounts create "$NAME-$sa" "${G[@]}" --display-name="acme-edge $sa"
    fi
done

step "grants: renewer writes its bucket and adds versions to its secret; nodes only read"
bucket_get="gcloud storage buckets get-iam-policy gs://$BUCKET --project=$PROJECT"
bucket_add="gcloud storage buckets add-iam-policy-binding gs://$BUCKET --project=$PROJECT --quiet"
ensure_binding "$bucket_get" "$bucket_add" roles/storage.objectAdmin "serviceAccount:$SA_RENEWER"
# Nodes read challenge answers (Envoy's store mode) and nothing else in the bucket: not the
# account key, not the private keys.
ensure_binding "$bucket_get" "$bucket_add" roles/storage.objectViewer "serviceAccount:$SA_NODE" \
    acme-challenge-only "resource.name.startsWith(\"projects/_/buckets/$BUCKET/objects/acme-challenge/\")"
cert_get="gcloud secrets get-iam-policy $CERT_SECRET --project=$PROJECT"
cert_add="gcloud secrets add-iam-policy-binding $CERT_SECRET --project=$PROJECT --quiet"
# Add versions, disable old ones, read the newest: no create or delete of secrets.
for role in roles/secretmanager.secretVersionManager roles/secretmanager.secretAccessor roles/secretmanager.viewer; do
    ensure_binding "$cert_get" "$cert_add" "$role" "serviceAccount:$SA_RENEWER"
done
for role in roles/secretmanager.secretAccessor roles/secretmanager.viewer; do
    ensure_binding "$cert_get" "$cert_add" "$role" "serviceAccount:$SA_NODE"
done
ensure_binding "gcloud secrets get-iam-policy $COOKIE_SECRET --project=$PROJECT" \
    "gcloud secrets add-iam-policy-binding $COOKIE_SECRET --project=$PROJECT --quiet" \
    roles/secretmanager.secretAccessor "serviceAccount:$SA_NODE"
ensure_binding "gcloud artifacts repositories get-iam-policy $REPO --location=$REGION --project=$PROJECT" \
    "gcloud artifacts repositories add-iam-policy-binding $REPO --location=$REGION --project=$PROJECT --quiet" \
    roles/artifactregistry.reader "serviceAccount:$SA_NODE"
# The build account: read its staged source (and only that) in the bucket, push to the one
# repository, write build logs to Cloud Logging. Projects made since 2024 would otherwise
# build as the Compute Engine default account, which organisations often strip of roles.
ensure_binding "$bucket_get" "$bucket_add" roles/storage.objectViewer "serviceAccount:$SA_BUILD" \
    build-source-only "resource.name.startsWith(\"projects/_/buckets/$BUCKET/objects/build-source/\")"
ensure_binding "gcloud artifacts repositories get-iam-policy $REPO --location=$REGION --project=$PROJECT" \
    "gcloud artifacts repositories add-iam-policy-binding $REPO --location=$REGION --project=$PROJECT --quiet" \
    roles/artifactregistry.writer "serviceAccount:$SA_BUILD"
ensure_binding "gcloud projects get-iam-policy $PROJECT" \
    "gcloud projects add-iam-policy-binding $PROJECT --quiet" \
    roles/logging.logWriter "serviceAccount:$SA_BUILD"
# Container logs of the nodes go to Cloud Logging (docker's gcplogs driver).
ensure_binding "gcloud projects get-iam-policy $PROJECT" \
    "gcloud projects add-iam-policy-binding $PROJECT --quiet" \
    roles/logging.logWriter "serviceAccount:$SA_NODE"
# `renewer members` on each node reads the group's instances and their addresses: two
# permissions, in a custom role (roles/compute.viewer would expose every compute resource).
# Listing instances cannot be granted per resource, so the role is bound on the project.
MEMBERS_PERMISSIONS=compute.instanceGroupManagers.get,compute.instances.list

# ensure_role ID TITLE PERMISSIONS [DESCRIPTION]: the project's custom role ID holds exactly
# PERMISSIONS (sorted, comma-separated, as IAM lists them) and DESCRIPTION.
ensure_role() {
    local id=$1 title=$2 permissions=$3 description=${4:-} role=''
    [ "$PLAN" = 1 ] || role=$(lookup gcloud iam roles describe "$id" --project="$PROJECT" \
        --format='value[separator="|"](deleted,includedPermissions.list(separator=","),description)')
    local -a about=()
    [ -z "$description" ] || about=(--description="$description")
    if [ "$PLAN" = 1 ] || [ -z "$role" ]; then
        [ "$PLAN" != 1 ] || echo "# if absent: $(show gcloud iam roles describe "$id" --project="$PROJECT")"
        run gcloud iam roles create "$id" --project="$PROJECT" --quiet \
            --title="$title" "${about[@]}" --stage=GA --permissions="$permissions"
    else
        local deleted=${role%%|*} rest=${role#*|}
        # A role deleted by `make destroy` stays for 7 days under its id: bring it back.
        if [ "$deleted" = True ]; then
            run gcloud iam roles undelete "$id" --project="$PROJECT" --quiet
        fi
        if [ "${rest%%|*}" != "$permissions" ]; then
            run gcloud iam roles update "$id" --project="$PROJECT" --quiet \
                --permissions="$permissions"
        fi
        if [ -n "$description" ] && [ "${rest#*|}" != "$description" ]; then
            run gcloud iam roles update "$id" --project="$PROJECT" --quiet "${about[@]}"
        fi
    fi
}
ensure_role "$ROLE_MEMBERS" "acme-edge node membership ($NAME)" "$MEMBERS_PERMISSIONS"
ensure_binding "gcloud projects get-iam-policy $PROJECT" \
    "gcloud projects add-iam-policy-binding $PROJECT --quiet" \
    "projects/$PROJECT/roles/$ROLE_MEMBERS" "serviceAccount:$SA_NODE"

# DNS-01: the renewer writes and removes the challenge TXT records in DNS_ZONE, and nowhere
# else. Its role is bound on that managed zone, not on the project. roles/dns.admin is the
# only predefined role that can change records, and on the zone it would also let the renewer
# delete the zone, change its DNSSEC keys and rewrite its IAM policy (grant anyone anything
# on it): a custom role holds what the renewer calls, and nothing else. Cloud DNS accepts
# custom roles on a zone (docs: "IAM per resource zones"). The role's description names the
# zone it is bound on, so that a new DNS_ZONE, or none, takes the grant off the old zone.
DNS_PERMISSIONS=dns.changes.create,dns.changes.get,dns.managedZones.get,dns.resourceRecordSets.create,dns.resourceRecordSets.delete,dns.resourceRecordSets.list,dns.resourceRecordSets.update
dns_role=''
[ "$PLAN" = 1 ] || dns_role=$(lookup gcloud iam roles describe "$ROLE_DNS" --project="$PROJECT" \
    --format='value[separator="|"](deleted,description)')
old_zone=$(role_zone "${dns_role#*|}")
if [ -n "$old_zone" ] && [ "$old_zone" != "$DNS_ZONE" ]; then
    step "grants: the renewer's DNS-01 role off zone $old_zone (DNS_ZONE is ${DNS_ZONE:-not set} now)"
    zone_binding remove "$old_zone" "$ROLE_DNS" "serviceAccount:$SA_RENEWER"
fi
if [ -n "$DNS_ZONE" ]; then
    step "grants: the renewer changes records in Cloud DNS zone $DNS_ZONE, nothing else in DNS"
    ensure_role "$ROLE_DNS" "acme-edge DNS-01 records ($NAME)" "$DNS_PERMISSIONS" \
        "$(role_description "$DNS_ZONE")"
    zone_binding add "$DNS_ZONE" "$ROLE_DNS" "serviceAccount:$SA_RENEWER"
elif [ -n "$dns_role" ] && [ "${dns_role%%|*}" != True ]; then
    # No DNS_ZONE any more: HTTP-01 again, and the role goes too (as in `make destroy`).
    run gcloud iam roles delete "$ROLE_DNS" --project="$PROJECT" --quiet
fi

# build_and_wait CONFIG [SOURCE_DIR]: a Cloud Build from CONFIG, as the build service account
# (its own narrow grants, logs in Cloud Logging only), submitted `--async` and polled:
# streaming the log needs read access to a log bucket new projects do not grant, and a
# dropped stream would fail a deploy whose build succeeded. Prints the build id. A failed
# build stops the deploy with the build's log URL; nothing after it runs.
build_and_wait() { # CONFIG [SOURCE_DIR]
    local config=$1 source=${2:-} id status
    local -a where=(--no-source)
    [ -z "$source" ] || where=("$source" --gcs-source-staging-dir="gs://$BUCKET/build-source")
    id=$(run gcloud builds submit "${where[@]}" --config="$config" "${G[@]}" --async --format='value(id)')
    if [ "$PLAN" = 1 ]; then
        echo "$id"
        echo "# then wait until \`gcloud builds describe BUILD_ID\` says SUCCESS (up to 30 min)"
        BUILD_ID=BUILD_ID
        return 0
    fi
    local url="https://console.cloud.google.com/cloud-build/builds/$id?project=$PROJECT"
    log "build $id: $url"
    status=''
    for _ in $(seq 1 360); do
        status=$(gcloud builds describe "$id" "${G[@]}" --format='value(status)')
        case "$status" in
        SUCCESS) break ;;
        QUEUED | PENDING | WORKING | '') sleep 5 ;;
        *) die "build $id ended $status; its log: $url (or: gcloud logging read 'resource.type=\"build\" AND resource.labels.build_id=\"$id\"' --project=$PROJECT)" ;;
        esac
    done
    [ "$status" = SUCCESS ] || die "build $id still $status after 30 minutes; its log: $url"
    BUILD_ID=$id
}

step "renewer image $IMAGE (Cloud Build, from Dockerfile, as $SA_BUILD)"
built=''
if [ "$PLAN" != 1 ]; then
    built=$(lookup gcloud artifacts docker tags list "$IMAGE_PATH" "${G[@]}" --format='value(tag)')
else
    echo "# if absent: $(show gcloud artifacts docker tags list "$IMAGE_PATH" "${G[@]}" --format='value(tag)')"
fi
if ! grep -qxF "$TAG" <<<"$built"; then
    build_and_wait "$OUT_DIR/cloudbuild-renewer.json" "$REPO_DIR"
fi

step "Envoy image $ENVOY_IMAGE, mirrored into $REPO and pinned by digest"
# The nodes run Envoy from this project's repository, by digest: a tag upstream can move, and
# a fleet must not change under it. The mirror is made once per ENVOY_IMAGE (its tag carries a
# hash of the setting); to upgrade Envoy, change ENVOY_IMAGE and deploy (docs/deploy.md).
envoy_tag=${ENVOY_IMAGE##*/}
envoy_tag=${envoy_tag%%@*}
[[ $envoy_tag == *:* ]] && envoy_tag=${envoy_tag#*:} || envoy_tag=latest
envoy_tag="$envoy_tag-$(spec_hash "$ENVOY_IMAGE" | cut -c1-6)"
envoy_digest=''
if [ "$PLAN" != 1 ]; then
    envoy_digest=$(lookup gcloud artifacts docker tags list "$ENVOY_MIRROR_PATH" "${G[@]}" \
        --format='value[separator=" "](tag.basename(),version.basename())' |
        awk -v t="$envoy_tag" '$1 == t {print $2}')
else
    echo "# if absent: $(show gcloud artifacts docker tags list "$ENVOY_MIRROR_PATH" "${G[@]}")"
fi
if [ -z "$envoy_digest" ]; then
    cat >"$OUT_DIR/cloudbuild-envoy.json" <<EOF
{
  "steps": [
    {"name": "gcr.io/cloud-builders/docker", "args": ["pull", "$ENVOY_IMAGE"]},
    {"name": "gcr.io/cloud-builders/docker", "args": ["tag", "$ENVOY_IMAGE", "$ENVOY_MIRROR_PATH:$envoy_tag"]}
  ],
  "images": ["$ENVOY_MIRROR_PATH:$envoy_tag"],
  "serviceAccount": "projects/$PROJECT/serviceAccounts/$SA_BUILD",
  "options": {"logging": "CLOUD_LOGGING_ONLY"},
  "timeout": "600s"
}
EOF
    build_and_wait "$OUT_DIR/cloudbuild-envoy.json"
    if [ "$PLAN" = 1 ]; then
        envoy_digest='sha256:DIGEST_OF_THE_MIRROR'
    else
        envoy_digest=$(gcloud builds describe "$BUILD_ID" "${G[@]}" --format='value(results.images[0].digest)')
        [[ $envoy_digest =~ ^sha256:[0-9a-f]{64}$ ]] || die "build $BUILD_ID reported no digest for the Envoy mirror"
    fi
fi
ENVOY_PINNED="$ENVOY_MIRROR_PATH@$envoy_digest"
log "nodes run Envoy $ENVOY_PINNED ($ENVOY_IMAGE)"

# The names Envoy redirects from HTTP to HTTPS (others get 421). Its list takes host names
# only: with a wildcard in DOMAINS it is left empty, which redirects every name (the
# wildcard's subdomains are not known in advance).
REDIRECT_HOSTS=$DOMAINS
[ "$HAS_WILDCARD" = 0 ] || REDIRECT_HOSTS=''
# What the node startup script reads from instance metadata (deploy/node/startup.sh).
cat >"$OUT_DIR/node.env" <<EOF
PROJECT=$PROJECT
REGION=$REGION
RENEWER_IMAGE=$IMAGE
ENVOY_IMAGE=$ENVOY_PINNED
APP_IMAGE=$APP_IMAGE
APP_PORT=$APP_PORT
APP_HEALTH_PATH=$APP_HEALTH_PATH
WS_PATHS=$WS_PATHS
WS_ALLOW_PLAIN_HTTP=$WS_ALLOW_PLAIN_HTTP
STICKY_PATHS=$STICKY_PATHS
ALLOWED_ORIGINS=$ALLOWED_ORIGINS
COOKIE_SAMESITE=$COOKIE_SAMESITE
DOMAINS=$REDIRECT_HOSTS
BUCKET=$BUCKET
COOKIE_SECRET_NAME=$COOKIE_SECRET
MEMBERS_GROUP=$MIG
EOF
if [ "$PLAN" = 1 ]; then
    echo "# node.env:"
    sed 's/^/#   /' "$OUT_DIR/node.env"
fi

# --- 4. the renewer on Cloud Run, started by Scheduler ----------------------------------------

RUN_FLAGS=(--image="$IMAGE" --region="$REGION" "${G[@]}" --service-account="$SA_RENEWER"
    --env-vars-file="$OUT_DIR/renewer-env.yaml" --cpu=1 --memory=512Mi)
if [ "$MODE" = job ]; then
    # One task, one retry: the renewer backs off by itself, and Scheduler comes back anyway.
    RUN_FLAGS+=(--args=run --tasks=1 --max-retries=1 --task-timeout=15m)
    kind="jobs"
else
    # One instance: passes are joined in-process; the lease guards against a second one.
    RUN_FLAGS+=(--args=serve --no-allow-unauthenticated --ingress=all --min-instances=0
        --max-instances=1 --timeout=900 --concurrency=10)
    kind="services"
fi
spec=$(spec_hash "${RUN_FLAGS[@]}" "$(cat "$OUT_DIR/renewer-env.yaml")")
labels="managed-by=acme-edge,acme-edge-spec=$spec"

step "Cloud Run $kind $RENEWER ($MODE mode)"
existing=''
[ "$PLAN" = 1 ] || existing=$(lookup gcloud run "$kind" describe "$RENEWER" --region="$REGION" "${G[@]}" \
    --format='value[separator=" "](metadata.name,metadata.labels.acme-edge-spec)')
if [ "$PLAN" = 1 ]; then
    echo "# if absent or its acme-edge-spec label differs: $(show gcloud run "$kind" describe "$RENEWER" --region="$REGION" "${G[@]}")"
fi
read -r existing_name current <<<"$existing" || true
if [ "${current:-}" != "$spec" ]; then
    if [ "$MODE" = job ]; then
        if [ -z "${existing_name:-}" ]; then
            run gcloud run jobs create "$RENEWER" "${RUN_FLAGS[@]}" --labels="$labels"
        else
            run gcloud run jobs update "$RENEWER" "${RUN_FLAGS[@]}" --labels="$labels"
        fi
    else
        run gcloud run deploy "$RENEWER" "${RUN_FLAGS[@]}" --labels="$labels"
    fi
fi

if [ "$MODE" = job ]; then
    ensure_binding "gcloud run jobs get-iam-policy $RENEWER --region=$REGION --project=$PROJECT" \
        "gcloud run jobs add-iam-policy-binding $RENEWER --region=$REGION --project=$PROJECT --quiet" \
        roles/run.invoker "serviceAccount:$SA_SCHEDULER"
    target="https://run.googleapis.com/v2/projects/$PROJECT/locations/$REGION/jobs/$RENEWER:run"
    AUTH=(--oauth-service-account-email="$SA_SCHEDULER"
        --oauth-token-scope=https://www.googleapis.com/auth/cloud-platform)
    HEADERS=''
else
    ensure_binding "gcloud run services get-iam-policy $RENEWER --region=$REGION --project=$PROJECT" \
        "gcloud run services add-iam-policy-binding $RENEWER --region=$REGION --project=$PROJECT --quiet" \
        roles/run.invoker "serviceAccount:$SA_SCHEDULER"
    if [ "$PLAN" = 1 ]; then
        target='SERVICE_URL'
        echo "# SERVICE_URL=\$($(show gcloud run services describe "$RENEWER" --region="$REGION" "${G[@]}" --format='value(status.url)'))"
    else
        target=$(lookup gcloud run services describe "$RENEWER" --region="$REGION" "${G[@]}" --format='value(status.url)')
        [ -n "$target" ] || die "Cloud Run service $RENEWER has no URL yet; rerun in a minute"
    fi
    AUTH=(--oidc-service-account-email="$SA_SCHEDULER" --oidc-token-audience="$target"
        --message-body='{}')
    HEADERS=Content-Type=application/json
fi
SCHED_FLAGS=(--location="$REGION" "${G[@]}" --schedule="$SCHEDULE" --time-zone="$TIME_ZONE"
    --uri="$target" --http-method=POST "${AUTH[@]}" --attempt-deadline=900s)
sched_spec=$(spec_hash "${SCHED_FLAGS[@]}" "$HEADERS")
description="acme-edge renewal pass (spec $sched_spec)"

step "Scheduler job $SCHEDULER_JOB ($SCHEDULE, $TIME_ZONE)"
current=''
[ "$PLAN" = 1 ] || current=$(lookup gcloud scheduler jobs describe "$SCHEDULER_JOB" --location="$REGION" "${G[@]}" --format='value(description)')
if [ "$PLAN" = 1 ]; then
    echo "# if absent or its description's spec differs: $(show gcloud scheduler jobs describe "$SCHEDULER_JOB" --location="$REGION" "${G[@]}")"
fi
if [ "$current" != "$description" ]; then
    if [ -z "$current" ]; then
        run gcloud scheduler jobs create http "$SCHEDULER_JOB" "${SCHED_FLAGS[@]}" --description="$description" \
            ${HEADERS:+--headers="$HEADERS"}
    else
        # `update` names the headers flag differently.
        run gcloud scheduler jobs update http "$SCHEDULER_JOB" "${SCHED_FLAGS[@]}" --description="$description" \
            ${HEADERS:+--update-headers="$HEADERS"}
    fi
fi

# A switch of MODE leaves the other kind behind: remove it once Scheduler points at the new one
# (its settings and grants went with it; the bucket, secrets and accounts are shared).
if [ "$MODE" = job ]; then other="services"; else other="jobs"; fi
if [ "$PLAN" = 1 ]; then
    echo "# if MODE changed: $(show gcloud run "$other" delete "$RENEWER" --region="$REGION" "${G[@]}")"
elif [ -n "$(lookup gcloud run "$other" describe "$RENEWER" --region="$REGION" "${G[@]}" --format='value(metadata.name)')" ]; then
    step "Cloud Run $other $RENEWER (the other MODE): removed"
    run gcloud run "$other" delete "$RENEWER" --region="$REGION" "${G[@]}"
fi

# --- 5. alerting: failed and missing renewals, the trigger, and what users see ---------------

step "alerts: renewal errors, no successful pass, failed triggers; HTTPS checks and certificate expiry"
# What the renewer logs (JSON on Cloud Run: the message is jsonPayload.message).
RENEWER_LOGS="resource.type=(\"cloud_run_job\" OR \"cloud_run_revision\") AND (resource.labels.job_name=\"$RENEWER\" OR resource.labels.service_name=\"$RENEWER\")"
# ensure_log_metric NAME DESCRIPTION LOGGING_FILTER (Logging's filter language).
ensure_log_metric() {
    if absent gcloud logging metrics describe "$1" "${G[@]}"; then
        run gcloud logging metrics create "$1" "${G[@]}" --description="$2" --log-filter="$3"
    fi
}
ensure_log_metric "$LOG_METRIC" "acme-edge renewer errors (a failed renewal logs at ERROR)" \
    "$RENEWER_LOGS AND severity>=ERROR"
ensure_log_metric "$LOG_METRIC_OK" "acme-edge certificates checked or renewed without error" \
    "$RENEWER_LOGS AND severity=INFO AND (jsonPayload.message=\"renewed\" OR jsonPayload.message=\"no renewal needed\")"

channels=()
if [ -n "$ALERT_EMAIL" ]; then
    channel=''
    [ "$PLAN" = 1 ] || channel=$(lookup gcloud beta monitoring channels list "${G[@]}" \
        --filter="displayName=\"$CHANNEL_NAME\"" --format='value(name)' | head -n1)
    if [ -z "$channel" ]; then
        # The create prints the new channel's name (in plan mode: the command itself).
        channel=$(run gcloud beta monitoring channels create "${G[@]}" --display-name="$CHANNEL_NAME" \
            --type=email --channel-labels="email_address=$ALERT_EMAIL" --format='value(name)')
        if [ "$PLAN" = 1 ]; then
            echo "$channel"
            channel='CHANNEL'
        fi
    fi
    channels=("$channel")
fi
CHANNELS_JSON=$(for c in "${channels[@]}"; do printf '"%s"' "$c"; done)

# ensure_policy DISPLAY_NAME FILE BODY: create the alert policy, or update it when its spec (a
# hash of BODY, kept in a user label) differs. BODY is the policy's JSON fields but the labels.
# A policy on a log-based metric created moments ago is refused for a while ("Cannot find
# metric(s)… up to 10 minutes"): wait that out.
ensure_policy() {
    local display=$1 file=$OUT_DIR/$2 body=$3 spec policy name current
    spec=$(spec_hash "$body")
    printf '{\n  "userLabels": {"managed-by": "acme-edge", "acme-edge-spec": "%s"},\n%s\n}\n' \
        "$spec" "$body" >"$file"
    policy=''
    [ "$PLAN" = 1 ] || policy=$(lookup gcloud alpha monitoring policies list "${G[@]}" \
        --filter="displayName=\"$display\"" --format='value[separator=" "](name,userLabels.acme-edge-spec)')
    if [ "$PLAN" = 1 ]; then
        echo "# if absent or its acme-edge-spec label differs: $(show gcloud alpha monitoring policies list "${G[@]}" --filter="displayName=\"$display\"")"
        echo "# $2:"
        sed 's/^/#   /' "$file"
    fi
    read -r name current <<<"$policy" || true
    if [ -z "${name:-}" ]; then
        run_retrying "the log-based metrics to reach alerting" "$TRANSIENT_NEW_METRIC" 600 \
            gcloud alpha monitoring policies create "${G[@]}" --policy-from-file="$file"
    elif [ "${current:-}" != "$spec" ]; then
        run_retrying "the log-based metrics to reach alerting" "$TRANSIENT_NEW_METRIC" 600 \
            gcloud alpha monitoring policies update "$name" "${G[@]}" --policy-from-file="$file"
    fi
}
# drop_policy DISPLAY_NAME: delete the alert policy of that name, if there is one.
drop_policy() {
    local policies='' p
    [ "$PLAN" = 1 ] || policies=$(lookup gcloud alpha monitoring policies list "${G[@]}" \
        --filter="displayName=\"$1\"" --format='value(name)')
    for p in $policies; do
        run gcloud alpha monitoring policies delete "$p" "${G[@]}"
    done
}
# Monitoring filters are not Logging filters: a choice of values is one_of(...).
RENEWER_RESOURCES='resource.type = one_of(\"cloud_run_job\", \"cloud_run_revision\")'

ensure_policy "$ALERT_NAME" alert-renewal-failed.json "$(
    cat <<EOF
  "displayName": "$ALERT_NAME",
  "documentation": {"content": "The acme-edge renewer logged an error: a certificate was not renewed. The certificate in service is unchanged. See docs/deploy.md (Alerts).", "mimeType": "text/markdown"},
  "combiner": "OR",
  "conditions": [{
    "displayName": "renewer errors",
    "conditionThreshold": {
      "filter": "metric.type = \"logging.googleapis.com/user/$LOG_METRIC\" AND $RENEWER_RESOURCES",
      "comparison": "COMPARISON_GT",
      "thresholdValue": 0,
      "duration": "0s",
      "aggregations": [{"alignmentPeriod": "300s", "perSeriesAligner": "ALIGN_DELTA", "crossSeriesReducer": "REDUCE_SUM"}]
    }
  }],
  "alertStrategy": {"autoClose": "604800s"},
  "notificationChannels": [$CHANNELS_JSON]
EOF
)"

if [ -z "$SILENCE_SECONDS" ]; then
    log "no \"$ALERT_SILENT_NAME\" alert: SCHEDULE runs every $SCHEDULE_MINUTES min or less often, and Monitoring cannot watch for a silence longer than 23.5 h (schedule at least twice a day; the certificate expiry alert still fires)"
    # One left from a denser schedule would fire every day.
    drop_policy "$ALERT_SILENT_NAME"
else
ensure_policy "$ALERT_SILENT_NAME" alert-renewer-silent.json "$(
    cat <<EOF
  "displayName": "$ALERT_SILENT_NAME",
  "documentation": {"content": "No acme-edge renewal pass succeeded for $SILENCE_HUMAN (about two schedule periods): the job is not running (Scheduler, paused or deleted job, image, permissions) or every pass fails. Certificates are not being renewed. See docs/deploy.md (Alerts).", "mimeType": "text/markdown"},
  "combiner": "OR",
  "conditions": [{
    "displayName": "no successful renewal pass",
    "conditionAbsent": {
      "filter": "metric.type = \"logging.googleapis.com/user/$LOG_METRIC_OK\" AND $RENEWER_RESOURCES",
      "duration": "${SILENCE_SECONDS}s",
      "aggregations": [{"alignmentPeriod": "300s", "perSeriesAligner": "ALIGN_DELTA", "crossSeriesReducer": "REDUCE_SUM"}]
    }
  }],
  "alertStrategy": {"autoClose": "604800s"},
  "notificationChannels": [$CHANNELS_JSON]
EOF
)"
fi

ensure_policy "$ALERT_TRIGGER_NAME" alert-trigger-failed.json "$(
    cat <<EOF
  "displayName": "$ALERT_TRIGGER_NAME",
  "documentation": {"content": "Cloud Scheduler could not start an acme-edge renewal pass (its attempt failed: the job or service is missing, the scheduler account lost its permission, or the target errored). See docs/deploy.md (Alerts).", "mimeType": "text/markdown"},
  "combiner": "OR",
  "conditions": [{
    "displayName": "renewal trigger failed",
    "conditionMatchedLog": {
      "filter": "resource.type=\"cloud_scheduler_job\" AND resource.labels.job_id=\"$SCHEDULER_JOB\" AND severity>=ERROR"
    }
  }],
  "alertStrategy": {"notificationRateLimit": {"period": "3600s"}, "autoClose": "604800s"},
  "notificationChannels": [$CHANNELS_JSON]
EOF
)"

# What users see: HTTPS on every name, certificate validated, every 5 minutes from several
# regions. /.edge/healthz on :443 is the node's readiness (its app answers, Envoy serves the
# certificate). An uptime check's settings are in its display name (a short hash): gcloud
# does not send --user-labels on create, so a label could not tell a changed check.
# A wildcard name (*.example.com, DNS-01 only) is no host a check can connect to: the checks
# are for the other names (HOST_NAMES), and a certificate with only wildcards has none.
declare -A WANT_CHECK=()
WANT_ORDER=()
for d in "${HOST_NAMES[@]}"; do
    uptime_flags=(--resource-type=uptime-url --resource-labels="host=$d,project_id=$PROJECT"
        --protocol=https --port=443 --path=/.edge/healthz --validate-ssl=true
        --period=5 --timeout=10)
    display="$NAME https $d ($(spec_hash "${uptime_flags[@]}" | cut -c1-6))"
    WANT_CHECK[$display]=$d
    WANT_ORDER+=("$display")
done
existing_checks=''
if [ "$PLAN" = 1 ]; then
    echo "# checks absent (or with other settings, deleted first): $(show gcloud monitoring uptime list-configs "${G[@]}" --filter="displayName:\"$NAME https \"")"
else
    existing_checks=$(lookup gcloud monitoring uptime list-configs "${G[@]}" \
        --filter="displayName:\"$NAME https \"" --format='value[separator="|"](name,displayName)')
fi
declare -A HAVE_CHECK=()
while IFS='|' read -r check_name check_display; do
    [ -n "$check_name" ] || continue
    if [[ -v WANT_CHECK[$check_display] ]]; then
        HAVE_CHECK[$check_display]=1
    else
        # A name no longer in DOMAINS, or a check with other settings: `delete` takes its id.
        run gcloud monitoring uptime delete "${check_name##*/}" "${G[@]}"
    fi
done <<<"$existing_checks"
for display in "${WANT_ORDER[@]}"; do
    [[ -v HAVE_CHECK[$display] ]] && continue
    d=${WANT_CHECK[$display]}
    run gcloud monitoring uptime create "$display" "${G[@]}" --resource-type=uptime-url \
        --resource-labels="host=$d,project_id=$PROJECT" --protocol=https --port=443 \
        --path=/.edge/healthz --validate-ssl=true --period=5 --timeout=10 --user-labels=managed-by=acme-edge
done
HOSTS_ONE_OF=$(for d in "${HOST_NAMES[@]}"; do printf '%s\\"%s\\"' "${sep:-}" "$d"; sep=', '; done)
UPTIME_HOSTS="resource.type = \\\"uptime_url\\\" AND resource.label.host = one_of($HOSTS_ONE_OF)"

if [ "${#HOST_NAMES[@]}" -eq 0 ]; then
    log "no \"$ALERT_HTTPS_NAME\" and \"$ALERT_EXPIRY_NAME\" alerts: DOMAINS has only wildcard names, which no uptime check can reach (add a name such as ${DOMAIN_LIST[0]#'*.'} to get them)"
    drop_policy "$ALERT_HTTPS_NAME"
    drop_policy "$ALERT_EXPIRY_NAME"
else
ensure_policy "$ALERT_HTTPS_NAME" alert-https-failing.json "$(
    cat <<EOF
  "displayName": "$ALERT_HTTPS_NAME",
  "documentation": {"content": "HTTPS to one of the acme-edge names fails from two or more checker regions: no valid certificate, no node serving, or no healthy app. See docs/deploy.md (Alerts).", "mimeType": "text/markdown"},
  "combiner": "OR",
  "conditions": [{
    "displayName": "HTTPS check failing",
    "conditionThreshold": {
      "filter": "metric.type = \"monitoring.googleapis.com/uptime_check/check_passed\" AND $UPTIME_HOSTS",
      "comparison": "COMPARISON_GT",
      "thresholdValue": 1,
      "duration": "600s",
      "aggregations": [{"alignmentPeriod": "1200s", "perSeriesAligner": "ALIGN_NEXT_OLDER", "crossSeriesReducer": "REDUCE_COUNT_FALSE", "groupByFields": ["resource.label.host"]}]
    }
  }],
  "alertStrategy": {"autoClose": "604800s"},
  "notificationChannels": [$CHANNELS_JSON]
EOF
)"

ensure_policy "$ALERT_EXPIRY_NAME" alert-certificate-expiry.json "$(
    cat <<EOF
  "displayName": "$ALERT_EXPIRY_NAME",
  "documentation": {"content": "The certificate served on an acme-edge name expires in less than $CERT_EXPIRY_ALERT_DAYS days: renewals are failing or not reaching the nodes. See docs/deploy.md (Alerts).", "mimeType": "text/markdown"},
  "combiner": "OR",
  "conditions": [{
    "displayName": "certificate expires in less than $CERT_EXPIRY_ALERT_DAYS days",
    "conditionThreshold": {
      "filter": "metric.type = \"monitoring.googleapis.com/uptime_check/time_until_ssl_cert_expires\" AND $UPTIME_HOSTS",
      "comparison": "COMPARISON_LT",
      "thresholdValue": $CERT_EXPIRY_ALERT_DAYS,
      "duration": "600s",
      "aggregations": [{"alignmentPeriod": "1200s", "perSeriesAligner": "ALIGN_NEXT_OLDER", "crossSeriesReducer": "REDUCE_MIN", "groupByFields": ["resource.label.host"]}]
    }
  }],
  "alertStrategy": {"autoClose": "604800s"},
  "notificationChannels": [$CHANNELS_JSON]
EOF
)"
fi

# --- 6. network: static IP, egress, firewall ---------------------------------------------------

step "static IP $ADDRESS"
if absent gcloud compute addresses describe "$ADDRESS" --region="$REGION" "${G[@]}"; then
    run gcloud compute addresses create "$ADDRESS" --region="$REGION" "${G[@]}" --network-tier=PREMIUM
fi

step "egress for the nodes (no external IPs): Cloud Router $ROUTER + NAT $NAT"
if absent gcloud compute routers describe "$ROUTER" --region="$REGION" "${G[@]}"; then
    run gcloud compute routers create "$ROUTER" --region="$REGION" "${G[@]}" --network="$NETWORK"
fi
if absent gcloud compute routers nats describe "$NAT" --router="$ROUTER" --region="$REGION" "${G[@]}"; then
    run gcloud compute routers nats create "$NAT" --router="$ROUTER" --region="$REGION" "${G[@]}" \
        --auto-allocate-nat-external-ips --nat-all-subnet-ip-ranges
fi

step "firewall: load-balanced traffic, health checks, and the nodes' apps to each other; nothing else"
# Health probes come from 35.191.0.0/16 and 209.85.152.0/22, 209.85.204.0/22 (passthrough load
# balancer) and 130.211.0.0/22 (the group's autohealing uses the same check).
# A passthrough load balancer keeps the client's address, so traffic it forwards arrives from
# anywhere; the nodes have no external IP, so only the load balancer forwards to them.
if absent gcloud compute firewall-rules describe "$FW_LB" "${G[@]}"; then
    run gcloud compute firewall-rules create "$FW_LB" "${G[@]}" --network="$NETWORK" \
        --direction=INGRESS --action=ALLOW --rules=tcp:80,tcp:443 \
        --source-ranges=0.0.0.0/0 --target-tags="$NODE_TAG"
fi
if absent gcloud compute firewall-rules describe "$FW_HC" "${G[@]}"; then
    run gcloud compute firewall-rules create "$FW_HC" "${G[@]}" --network="$NETWORK" \
        --direction=INGRESS --action=ALLOW --rules=tcp:80 \
        --source-ranges=35.191.0.0/16,130.211.0.0/22,209.85.152.0/22,209.85.204.0/22 --target-tags="$NODE_TAG"
fi
# Every node's Envoy routes keys to every node's app (sticky routing across the cluster): the
# app port is open to the nodes, by their tag, and to nothing else.
app_port=''
[ "$PLAN" = 1 ] || app_port=$(lookup gcloud compute firewall-rules describe "$FW_NODES" "${G[@]}" \
    --format='value(allowed[0].ports[0])')
if [ "$PLAN" = 1 ] || [ -z "$app_port" ]; then
    [ "$PLAN" != 1 ] || echo "# if absent: $(show gcloud compute firewall-rules describe "$FW_NODES" "${G[@]}")"
    run gcloud compute firewall-rules create "$FW_NODES" "${G[@]}" --network="$NETWORK" \
        --direction=INGRESS --action=ALLOW --rules="tcp:$APP_PORT" \
        --source-tags="$NODE_TAG" --target-tags="$NODE_TAG"
elif [ "$app_port" != "$APP_PORT" ]; then
    run gcloud compute firewall-rules update "$FW_NODES" "${G[@]}" --rules="tcp:$APP_PORT"
fi

# --- 7. app nodes --------------------------------------------------------------------------------

step "health check $HEALTH_CHECK (Envoy's /.edge/healthz on :80)"
if absent gcloud compute health-checks describe "$HEALTH_CHECK" --region="$REGION" "${G[@]}"; then
    run gcloud compute health-checks create http "$HEALTH_CHECK" --region="$REGION" "${G[@]}" \
        --port=80 --request-path=/.edge/healthz --check-interval=10s --timeout=5s \
        --healthy-threshold=2 --unhealthy-threshold=3
fi

# Instance templates cannot change: the name carries a hash of everything in it, and the group
# rolls over to a new one when the hash changes.
TEMPLATE_FLAGS=("${G[@]}" --machine-type="$MACHINE_TYPE"
    --image-family=debian-12 --image-project=debian-cloud --boot-disk-size=20GB
    --network="$NETWORK" --no-address --tags="$NODE_TAG"
    --service-account="$SA_NODE" --scopes=cloud-platform
    --shielded-secure-boot --shielded-vtpm --shielded-integrity-monitoring
    --metadata=enable-oslogin=TRUE
    --metadata-from-file="startup-script=$DEPLOY_DIR/node/startup.sh,acme-edge-settings=$OUT_DIR/node.env,acme-edge-renewer-env=$OUT_DIR/node-renewer.env,acme-edge-render=$DEPLOY_DIR/envoy/render.sh"
    --labels="managed-by=acme-edge,acme-edge-group=$MIG")
template="$NAME-node-$(spec_hash "${TEMPLATE_FLAGS[@]}" "$(cat "$DEPLOY_DIR/node/startup.sh" \
    "$OUT_DIR/node.env" "$OUT_DIR/node-renewer.env" "$DEPLOY_DIR/envoy/render.sh")")"

step "instance template $template"
if absent gcloud compute instance-templates describe "$template" "${G[@]}"; then
    run gcloud compute instance-templates create "$template" "${TEMPLATE_FLAGS[@]}"
fi

# issued_names: the names of the certificate the renewer made current, from its public record
# in the bucket (certs/NAME/current.json; no private key is read). Empty: none issued yet.
issued_names() {
    local json
    json=$(lookup gcloud storage cat "gs://$BUCKET/certs/$CERT_NAME/current.json" "${G[@]}")
    tr -d ' \n\t' <<<"$json" | grep -o '"domains":\[[^]]*\]' | grep -o '"[^"]*"' | tr -d '"' |
        grep -vx domains || true
}

# names_missing: the names in DOMAINS that the current certificate lacks ('' when it has them
# all, or when there is no certificate yet: then every node is bootstrapping alike). A
# wildcard is compared as written: the certificate names *.example.com as such.
names_missing() {
    local have d lacking=''
    have=$(issued_names)
    [ -n "$have" ] || return 0
    for d in "${DOMAIN_LIST[@]}"; do grep -qxF "$d" <<<"$have" || lacking+="${lacking:+ }$d"; done
    printf '%s' "$lacking"
}

# Before the nodes change, the certificate must cover every name in DOMAINS: new nodes serve
# the certificate there is, and old nodes are removed. Ask the renewer for a pass now and wait
# for the names (CERT_WAIT_MINUTES); on a timeout stop, with the nodes untouched.
ensure_names_issued() {
    local lacking waited=0 limit=$((CERT_WAIT_MINUTES * 60))
    if [ "$PLAN" = 1 ]; then
        echo "# if the group exists with another template and the certificate in gs://$BUCKET/certs/$CERT_NAME/current.json"
        echo "# lacks a name in DOMAINS: run a renewal pass and wait (up to $CERT_WAIT_MINUTES min) before the rolling update:"
        if [ "$MODE" = job ]; then
            echo "# $(show gcloud run jobs execute "$RENEWER" --region="$REGION" "${G[@]}" --wait)"
        else
            echo "# $(show gcloud scheduler jobs run "$SCHEDULER_JOB" --location="$REGION" "${G[@]}")"
        fi
        return 0
    fi
    lacking=$(names_missing)
    [ -n "$lacking" ] || return 0
    local why="the certificate does not cover $lacking yet"
    local logs="gcloud logging read 'resource.labels.job_name=\"$RENEWER\" OR resource.labels.service_name=\"$RENEWER\"' --project=$PROJECT --limit=50"
    local hint="The nodes were not changed: they keep serving the current certificate. ACME validates each new name over HTTP on the load balancer's address: check that DNS for $lacking points at it, then run make deploy again. Renewer logs: $logs"
    [ -z "$DNS_ZONE" ] || hint="The nodes were not changed: they keep serving the current certificate. ACME validates each new name with a TXT record the renewer writes in Cloud DNS zone $DNS_ZONE: check that the zone is the one the internet sees for $lacking (its NS records at the parent), then run make deploy again. Renewer logs: $logs"
    log "$why: running a renewal pass, and waiting up to $CERT_WAIT_MINUTES min for it before the nodes are replaced"
    if [ "$MODE" = job ]; then
        run gcloud run jobs execute "$RENEWER" --region="$REGION" "${G[@]}" --wait ||
            die "the renewal pass failed, so $why. $hint"
    else
        run gcloud scheduler jobs run "$SCHEDULER_JOB" --location="$REGION" "${G[@]}"
    fi
    while :; do
        # (Not in the loop's condition: there a failed lookup would not stop the deploy.)
        lacking=$(names_missing)
        [ -n "$lacking" ] || break
        [ "$waited" -lt "$limit" ] || die "after $CERT_WAIT_MINUTES min, $why. $hint"
        sleep 10
        waited=$((waited + 10))
    done
    log "the certificate covers $DOMAINS"
}

step "managed instance group $MIG ($NODE_COUNT nodes, autohealing)"
group=''
[ "$PLAN" = 1 ] || group=$(lookup gcloud compute instance-groups managed describe "$MIG" --region="$REGION" "${G[@]}" \
    --format='value[separator=" "](targetSize,autoHealingPolicies[0].initialDelaySec,instanceTemplate.basename(),versions[].instanceTemplate.basename())')
# Autohealing waits this long for a new node (docker install, image pulls) before its health
# check counts; a rolling update still waits for the node to be healthy before it is available.
INITIAL_DELAY=600
if [ -z "$group" ]; then
    [ "$PLAN" != 1 ] || echo "# if absent: $(show gcloud compute instance-groups managed describe "$MIG" --region="$REGION" "${G[@]}")"
    run gcloud compute instance-groups managed create "$MIG" --region="$REGION" "${G[@]}" \
        --template="$template" --size="$NODE_COUNT" --base-instance-name="$NAME-node" \
        --health-check="projects/$PROJECT/regions/$REGION/healthChecks/$HEALTH_CHECK" --initial-delay="$INITIAL_DELAY"
    # (New nodes have no old ones to protect: they start with the certificate there is.)
    [ "$PLAN" != 1 ] || ensure_names_issued
else
    # After a rolling update the group's template is its version's; before, the top-level one.
    read -r -a fields <<<"${group//;/ }"
    current_size=${fields[0]}
    current_delay=${fields[1]}
    current_template=${fields[${#fields[@]} - 1]}
    if [ "$current_delay" != "$INITIAL_DELAY" ]; then
        run gcloud compute instance-groups managed update "$MIG" --region="$REGION" "${G[@]}" \
            --health-check="projects/$PROJECT/regions/$REGION/healthChecks/$HEALTH_CHECK" --initial-delay="$INITIAL_DELAY"
    fi
    if [ "$current_template" != "$template" ]; then
        ensure_names_issued
        # Replace nodes one at a time: a new one is created and must pass the health check
        # (Envoy's /.edge/healthz, which is the node's readiness: its app answers and Envoy
        # serves the certificate) before an old one goes. With max-unavailable=0 the group
        # counts a node as available only once its health check said HEALTHY.
        run gcloud compute instance-groups managed rolling-action start-update "$MIG" --region="$REGION" "${G[@]}" \
            --version="template=$template" --max-unavailable=0 --max-surge=3
    fi
    if [ "$current_size" != "$NODE_COUNT" ]; then
        run gcloud compute instance-groups managed resize "$MIG" --region="$REGION" "${G[@]}" --size="$NODE_COUNT"
    fi
fi

# --- 8. network load balancer ---------------------------------------------------------------------

step "backend service $BACKEND (TCP passthrough, client-IP affinity)"
if absent gcloud compute backend-services describe "$BACKEND" --region="$REGION" "${G[@]}"; then
    run gcloud compute backend-services create "$BACKEND" --region="$REGION" "${G[@]}" \
        --load-balancing-scheme=EXTERNAL --protocol=TCP \
        --health-checks="$HEALTH_CHECK" --health-checks-region="$REGION" \
        --session-affinity=CLIENT_IP --connection-draining-timeout=60s
fi
backends=''
[ "$PLAN" = 1 ] || backends=$(lookup gcloud compute backend-services describe "$BACKEND" --region="$REGION" "${G[@]}" \
    --format='value(backends[].group)')
if [[ $backends != *"/instanceGroups/$MIG"* ]]; then
    run gcloud compute backend-services add-backend "$BACKEND" --region="$REGION" "${G[@]}" \
        --instance-group="$MIG" --instance-group-region="$REGION"
fi

step "forwarding rule $FORWARDING_RULE (TCP 80 and 443 on $ADDRESS)"
if absent gcloud compute forwarding-rules describe "$FORWARDING_RULE" --region="$REGION" "${G[@]}"; then
    run gcloud compute forwarding-rules create "$FORWARDING_RULE" --region="$REGION" "${G[@]}" \
        --load-balancing-scheme=EXTERNAL --ip-protocol=TCP --ports=80,443 \
        --address="$ADDRESS" --backend-service="$BACKEND" --backend-service-region="$REGION"
fi

# --- done -----------------------------------------------------------------------------------------

if [ "$PLAN" = 1 ]; then
    printf '\n# Then point %s at the static IP (docs/deploy.md, "DNS").\n' "$DOMAINS"
    exit 0
fi
ip=$(lookup gcloud compute addresses describe "$ADDRESS" --region="$REGION" "${G[@]}" --format='value(address)')
if [ "$MODE" = job ]; then
    manual="gcloud run jobs execute $RENEWER --region=$REGION --project=$PROJECT --wait"
else
    manual="gcloud scheduler jobs run $SCHEDULER_JOB --location=$REGION --project=$PROJECT"
fi
dns="point $DOMAINS at $ip (A records), then run a renewal:"
# DNS-01 does not need the names to reach the nodes: issue now, move traffic when ready.
[ -z "$DNS_ZONE" ] || dns="point $DOMAINS at $ip (A records) when traffic should come here; the certificate does not wait for that (DNS-01 in zone $DNS_ZONE):"
cat <<EOF

acme-edge is deployed in $PROJECT (renewer image $IMAGE).

  Static IP:  $ip
  DNS:        $dns
  Renew now:  $manual
  Status:     gcloud logging read 'resource.labels.job_name="$RENEWER" OR resource.labels.service_name="$RENEWER"' --project=$PROJECT --limit=20

docs/deploy.md explains each of these.
EOF
