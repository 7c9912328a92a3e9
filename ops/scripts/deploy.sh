#!/usr/bin/env bash
# Deploys or updates the production stack (docker-compose.prod.yml) without downtime:
#   1. preflight  tools; .env.prod complete, no placeholders, URL-safe passwords; TLS certificate
#                 present, matching its key, covering REGISTRY_DOMAIN, valid for 14 more days
#   2. backup     ops/scripts/backup.sh, when a database is already running
#   3. build      the registry image, tagged with this release (REGISTRY_TAG, default: git commit)
#   4. data       postgres, redis and elasticsearch up and healthy
#   5. migrate    bun run db:migrate, once, in a one-off container of the new image
#   6. roll       new registry containers start beside the running ones; when every new one answers
#                 /health/ready, nginx is reloaded onto them and the old ones drain (SIGTERM) and go
#   7. edge       nginx, prometheus and grafana up; nginx reloaded
#   8. verify     GET https://REGISTRY_DOMAIN/health through nginx
# If 6-8 fail, the new containers are removed and the previous ones keep (or go back to) serving.
# Migrations must stay compatible with the previous release, which runs beside them during step 6;
# the step 2 backup is the way back for data (ops/scripts/restore.sh).
#
# Usage: ops/scripts/deploy.sh [--dry-run] [--skip-backup] [--no-build] [--timeout SECONDS]
#   --dry-run      run the preflight checks and print the plan with every command; change nothing
#   --skip-backup  no pre-deploy backup
#   --no-build     use the image REGISTRY_TAG names as it is (e.g. to roll back to an earlier release)
#   --timeout S    how long new containers may take to become ready (default 180)
# Environment: ENV_FILE (.env.prod), COMPOSE_FILE (docker-compose.prod.yml), SSL_DIR (./ssl),
#   REGISTRY_TAG, BACKUP_DIR, VERIFY_URL (default https://REGISTRY_DOMAIN/health via 127.0.0.1)
set -Eeuo pipefail
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() { script_usage "${BASH_SOURCE[0]}"; }

DRY_RUN=false SKIP_BACKUP=false BUILD=true TIMEOUT=180
while (($#)); do
  case $1 in
    --dry-run) DRY_RUN=true; shift ;;
    --skip-backup) SKIP_BACKUP=true; shift ;;
    --no-build) BUILD=false; shift ;;
    --timeout) TIMEOUT=${2:?--timeout needs seconds}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a number of seconds"
SSL_DIR=${SSL_DIR:-$PROJECT_DIR/ssl}
if [[ -z ${REGISTRY_TAG:-} ]]; then
  REGISTRY_TAG=$(git -C "$PROJECT_DIR" rev-parse --short=12 HEAD 2>/dev/null || date -u +%Y%m%d%H%M%S)
  if [[ -n $(git -C "$PROJECT_DIR" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    REGISTRY_TAG+="-dirty-$(date -u +%Y%m%d%H%M%S)"
  fi
fi
export REGISTRY_TAG

# --- 1. preflight -------------------------------------------------------------------------------------
failures=0
ok() { printf '  ok    %s\n' "$*"; }
fail() {
  printf '  FAIL  %s\n' "$*"
  failures=$((failures + 1))
}
warn() { printf '  warn  %s\n' "$*"; }

preflight() {
  printf '1. preflight\n'
  local tool
  for tool in openssl curl; do
    if command -v "$tool" >/dev/null 2>&1; then ok "$tool"; else fail "$tool is not installed"; fi
  done
  if command -v docker >/dev/null 2>&1 && compose_cmd; then
    ok "docker and compose (${COMPOSE[*]:0:2})"
    HAVE_COMPOSE=true
  elif $DRY_RUN; then
    warn "docker compose not found here (a real deploy needs it)"
    COMPOSE=(docker compose --project-directory "$PROJECT_DIR" -f "$COMPOSE_FILE" --env-file "$ENV_FILE")
  else
    fail "docker with the compose plugin (or docker-compose) is not installed"
  fi

  if [[ ! -r $ENV_FILE ]]; then
    fail "$ENV_FILE is missing: cp ops/env.prod.example .env.prod and fill it in"
    return
  fi
  ok "$ENV_FILE"
  if [[ $(stat -c %a "$ENV_FILE" 2>/dev/null || echo 600) =~ [1-7]$ ]]; then
    warn "$ENV_FILE is readable by other users: chmod 600 $ENV_FILE"
  fi
  local key value
  for key in SECRET_KEY POSTGRES_PASSWORD REDIS_PASSWORD ELASTIC_PASSWORD GRAFANA_ADMIN_PASSWORD \
    REGISTRY_DOMAIN REGISTRY_BASE_URL REGISTRY_ID; do
    value=$(env_value "$key")
    if [[ -z $value ]]; then
      fail "$key is not set in $ENV_FILE"
    elif [[ $value == *change-me* || $value == *example.com* || $value == *example.org* ]]; then
      fail "$key still holds the example's placeholder"
    else
      ok "$key is set"
    fi
  done
  value=$(env_value SECRET_KEY)
  ((${#value} >= 32)) || fail "SECRET_KEY must be at least 32 characters (openssl rand -hex 32)"
  for key in POSTGRES_PASSWORD REDIS_PASSWORD ELASTIC_PASSWORD; do
    value=$(env_value "$key")
    # These go into connection URLs: unreserved characters only, and long enough.
    [[ -z $value || ($value =~ ^[A-Za-z0-9._~-]+$ && ${#value} -ge 16) ]] ||
      fail "$key must be 16+ characters of A-Z a-z 0-9 . _ ~ - (it is used in URLs; openssl rand -hex 24)"
  done
  local domain base
  domain=$(env_value REGISTRY_DOMAIN)
  base=$(env_value REGISTRY_BASE_URL)
  if [[ -n $base && $base != "https://$domain" && $base != "https://$domain/"* ]]; then
    fail "REGISTRY_BASE_URL ($base) must be https://$domain: clients reach the registry through nginx"
  fi
  local admin_id admin_secret
  admin_id=$(env_value ADMIN_CLIENT_ID)
  admin_secret=$(env_value ADMIN_CLIENT_SECRET)
  if [[ -n $admin_id && -z $admin_secret ]] || [[ -z $admin_id && -n $admin_secret ]]; then
    fail "ADMIN_CLIENT_ID and ADMIN_CLIENT_SECRET: set both or neither"
  fi

  local cert=$SSL_DIR/cert.pem key_file=$SSL_DIR/key.pem
  if [[ ! -r $cert || ! -r $key_file ]]; then
    fail "TLS certificate missing: put the chain in $cert and the key in $key_file"
  elif ! command -v openssl >/dev/null 2>&1; then
    warn "certificate not checked (no openssl)"
  else
    if [[ $(openssl x509 -in "$cert" -noout -pubkey 2>/dev/null) == "$(openssl pkey -in "$key_file" -pubout 2>/dev/null)" ]] &&
      [[ -n $(openssl pkey -in "$key_file" -pubout 2>/dev/null) ]]; then
      ok "certificate and key match"
    else
      fail "$key_file is not the key of $cert"
    fi
    if openssl x509 -in "$cert" -noout -checkend $((14 * 86400)) >/dev/null 2>&1; then
      ok "certificate valid for 14 more days ($(openssl x509 -in "$cert" -noout -enddate | cut -d= -f2))"
    else
      fail "certificate expires within 14 days ($(openssl x509 -in "$cert" -noout -enddate | cut -d= -f2))"
    fi
    if [[ -n $domain ]] && openssl x509 -in "$cert" -noout -checkhost "$domain" 2>/dev/null | grep -q 'does match'; then
      ok "certificate covers $domain"
    elif [[ -n $domain ]]; then
      fail "certificate does not cover $domain"
    fi
  fi

  local map_count
  map_count=$(sysctl -n vm.max_map_count 2>/dev/null || echo 0)
  if ((map_count >= 262144)); then
    ok "vm.max_map_count=$map_count (elasticsearch)"
  else
    warn "vm.max_map_count=$map_count; elasticsearch wants 262144 (sysctl -w vm.max_map_count=262144)"
  fi
  if $HAVE_COMPOSE; then
    if "${COMPOSE[@]}" config --quiet 2>/dev/null; then ok "compose file valid"; else fail "docker compose config rejects $COMPOSE_FILE"; fi
  fi
}

COMPOSE=() HAVE_COMPOSE=false
preflight
if ((failures > 0)); then
  printf '%d preflight check(s) failed; nothing was changed.\n' "$failures"
  exit 1
fi

# --- the plan -----------------------------------------------------------------------------------------
# Each step runs its commands, or in a dry run prints them.
run() {
  if $DRY_RUN; then
    printf '  $'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}
step() { printf '%s\n' "$*"; }

REPLICAS=$(env_value REGISTRY_REPLICAS)
REPLICAS=${REPLICAS:-2}
DOMAIN=$(env_value REGISTRY_DOMAIN)
VERIFY_URL=${VERIFY_URL:-https://$DOMAIN/health}
if $DRY_RUN; then
  printf '\nDry run: release %s, %s registry replicas. Nothing below is executed.\n' "$REGISTRY_TAG" "$REPLICAS"
fi

old_ids=() new_ids=() previous_image="" phase=start
running_registry() { "${COMPOSE[@]}" ps --status running -q registry 2>/dev/null | LC_ALL=C sort; }

# Waits until container $1 answers 200 on /health/ready from inside (the port is not published).
wait_ready() {
  local id=$1 deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    if docker exec "$id" bun -e \
      "const r = await fetch('http://127.0.0.1:8000/health/ready').catch(() => null); process.exit(r?.status === 200 ? 0 : 1)" \
      >/dev/null 2>&1; then
      return 0
    fi
    sleep 2
  done
  return 1
}

reload_nginx() {
  if [[ -n $("${COMPOSE[@]}" ps --status running -q nginx 2>/dev/null) ]]; then
    "${COMPOSE[@]}" exec -T nginx nginx -s reload
  fi
}

# On any failure (an error under set -e, or die): undo what the current phase started.
rollback() {
  local status=$?
  ((status != 0)) || return 0
  case $phase in
    rolling)
      log "deploy failed while starting the new release: removing the new containers, the previous ones keep serving"
      ((${#new_ids[@]} == 0)) || docker rm -f "${new_ids[@]}" >/dev/null 2>&1 || true
      reload_nginx || true
      ;;
    switched)
      if [[ -n $previous_image ]]; then
        log "deploy failed after the switch: starting $previous_image again"
        REGISTRY_TAG=${previous_image##*:} "${COMPOSE[@]}" up -d --no-deps --no-build --scale "registry=$REPLICAS" \
          --force-recreate registry || log "roll back failed: run REGISTRY_TAG=${previous_image##*:} $0 --no-build"
        reload_nginx || true
      fi
      ;;
    *) ;;
  esac
  "${COMPOSE[@]}" logs --tail 50 registry >&2 2>/dev/null || true
  log "deploy of $REGISTRY_TAG failed (exit $status)"
}
$DRY_RUN || trap rollback EXIT

step "2. backup"
if $SKIP_BACKUP; then
  printf '  skipped (--skip-backup)\n'
elif $DRY_RUN; then
  printf '  when postgres is already running:\n'
  run "$SCRIPT_DIR/backup.sh"
elif [[ -n $("${COMPOSE[@]}" ps --status running -q "$POSTGRES_SERVICE" 2>/dev/null) ]]; then
  "$SCRIPT_DIR/backup.sh"
else
  printf '  no running database: first deploy, nothing to back up\n'
fi

step "3. build registry image ${REGISTRY_IMAGE:-a2a-registry}:$REGISTRY_TAG"
if $BUILD; then run "${COMPOSE[@]}" build --pull registry; else printf '  skipped (--no-build)\n'; fi

step "4. data services"
run "${COMPOSE[@]}" up -d --wait postgres redis elasticsearch

step "5. migrate"
run "${COMPOSE[@]}" run --rm --no-deps registry bun run db:migrate

step "6. roll out $REPLICAS registry replicas"
if $DRY_RUN; then
  printf '  with running registry containers OLD (N of them):\n'
  run "${COMPOSE[@]}" up -d --no-deps --no-recreate --scale "registry=N+$REPLICAS" registry
  printf '  wait for /health/ready in every new container (%ss at most), then:\n' "$TIMEOUT"
  run "${COMPOSE[@]}" exec -T nginx nginx -s reload
  run docker stop --time 30 OLD
  run docker rm OLD
  run "${COMPOSE[@]}" exec -T nginx nginx -s reload
  printf '  on the first deploy:\n'
  run "${COMPOSE[@]}" up -d --no-deps --scale "registry=$REPLICAS" registry
else
  mapfile -t old_ids < <(running_registry)
  phase=rolling
  if ((${#old_ids[@]} > 0)); then
    previous_image=$(docker inspect --format '{{.Config.Image}}' "${old_ids[0]}")
    "${COMPOSE[@]}" up -d --no-deps --no-recreate --scale "registry=$((${#old_ids[@]} + REPLICAS))" registry
  else
    "${COMPOSE[@]}" up -d --no-deps --scale "registry=$REPLICAS" registry
  fi
  mapfile -t new_ids < <(LC_ALL=C comm -13 <(printf '%s\n' "${old_ids[@]}" | LC_ALL=C sort) <(running_registry))
  ((${#new_ids[@]} > 0)) || die "no new registry containers started"
  for id in "${new_ids[@]}"; do
    wait_ready "$id" || die "registry container ${id:0:12} not ready within ${TIMEOUT}s"
    log "registry container ${id:0:12} ready"
  done
  reload_nginx
  phase=switched
  if ((${#old_ids[@]} > 0)); then
    docker stop --time 30 "${old_ids[@]}" >/dev/null
    docker rm "${old_ids[@]}" >/dev/null
    reload_nginx
    log "previous release ${previous_image} stopped (${#old_ids[@]} containers)"
  fi
fi

step "7. edge and monitoring"
run "${COMPOSE[@]}" up -d --no-deps nginx prometheus grafana
$DRY_RUN || reload_nginx

step "8. verify $VERIFY_URL"
verify() {
  local host=${VERIFY_URL#https://}
  host=${host%%/*}
  curl -fsS --max-time 10 --retry 10 --retry-delay 3 --retry-all-errors --resolve "$host:443:127.0.0.1" "$VERIFY_URL" ||
    curl -fsS --max-time 10 --retry 3 --retry-delay 3 --retry-all-errors --cacert "$SSL_DIR/cert.pem" \
      --resolve "$host:443:127.0.0.1" "$VERIFY_URL"
}
if $DRY_RUN; then
  run curl -fsS --resolve "$DOMAIN:443:127.0.0.1" "$VERIFY_URL"
  printf '\nPlan complete; run without --dry-run to deploy.\n'
  exit 0
fi
verify >/dev/null
phase=verified
log "deployed $REGISTRY_TAG: $REPLICAS registry replicas ready behind https://$DOMAIN"
[[ -z $previous_image ]] || log "to roll back: REGISTRY_TAG=${previous_image##*:} $0 --no-build --skip-backup"
