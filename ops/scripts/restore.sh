#!/usr/bin/env bash
# Restores a backup made by backup.sh and proves it: the archive's dump must match the sha256 in its
# manifest, and after pg_restore every table's row count and content digest, and every sequence, must
# equal the manifest. The dump is restored into a new scratch database first; the target database is
# replaced only once that copy checks out, and the replaced one is kept (renamed) unless --drop-old.
#
# Usage: ops/scripts/restore.sh [--yes] [--drop-old] [--verify-only] ARCHIVE
#   --yes          do not ask before replacing the target database (needed without a terminal)
#   --drop-old     drop the replaced database afterwards instead of keeping it as <db>_pre_restore_<time>
#   --verify-only  restore into the scratch database, check it, drop it; the target is not touched
# Database: the compose "postgres" service (docker-compose.prod.yml, .env.prod), or DATABASE_URL when set.
# Under compose the registry service is stopped while the database is swapped, then started again.
set -Eeuo pipefail
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() { script_usage "${BASH_SOURCE[0]}"; }

ASSUME_YES=false DROP_OLD=false VERIFY_ONLY=false ARCHIVE=""
while (($#)); do
  case $1 in
    --yes | -y) ASSUME_YES=true; shift ;;
    --drop-old) DROP_OLD=true; shift ;;
    --verify-only) VERIFY_ONLY=true; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option: $1" ;;
    *) [[ -z $ARCHIVE ]] || die "one archive at a time"; ARCHIVE=$1; shift ;;
  esac
done
[[ -n $ARCHIVE ]] || { usage >&2; die "which archive? (ARCHIVE is required)"; }
[[ -f $ARCHIVE ]] || die "no such archive: $ARCHIVE"
need tar gzip sha256sum
pg_init

work=$(mktemp -d "${TMPDIR:-/tmp}/a2a-restore.XXXXXX")
scratch="" registry_stopped=false
cleanup() {
  local status=$?
  if [[ -n $scratch ]]; then
    pg_sql "$PG_ADMIN_DB" <<<"drop database if exists \"$scratch\" with (force);" >/dev/null 2>&1 || true
  fi
  if $registry_stopped; then
    log "starting the registry again"
    "${COMPOSE[@]}" start registry >/dev/null 2>&1 || log "warning: could not start the registry; run: docker compose start registry"
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'die "restore failed (line $LINENO)"' ERR

# 1. The archive: exactly the two expected members, the dump matching its recorded sha256.
if [[ -f $ARCHIVE.sha256 ]]; then
  (cd "$(dirname "$ARCHIVE")" && sha256sum --check --status "$(basename "$ARCHIVE").sha256") ||
    die "$ARCHIVE does not match $ARCHIVE.sha256"
fi
members=$(tar -tzf "$ARCHIVE" | LC_ALL=C sort | tr '\n' ' ')
[[ $members == "manifest.json registry.dump " ]] ||
  die "$ARCHIVE is not a registry backup (members: $members)"
tar -xzf "$ARCHIVE" -C "$work" manifest.json registry.dump
[[ $(manifest_field "$work/manifest.json" format) == "a2a-registry-backup/1" ]] ||
  die "unknown manifest format in $ARCHIVE"
expected_sha=$(manifest_field "$work/manifest.json" dump_sha256)
actual_sha=$(sha256sum "$work/registry.dump" | cut -d' ' -f1)
[[ -n $expected_sha && $expected_sha == "$actual_sha" ]] ||
  die "dump checksum mismatch: manifest says ${expected_sha:-nothing}, dump is $actual_sha"
manifest_stats "$work/manifest.json" >"$work/expected"
[[ -s $work/expected ]] || die "the manifest lists no tables"
log "archive verified: $(grep -vc '^sequence ' "$work/expected") tables, dump sha256 $actual_sha" \
  "(taken $(manifest_field "$work/manifest.json" created_at) from $(manifest_field "$work/manifest.json" database))"

# 2. A scratch database with the dump restored, checked against the manifest.
stamp=$(date -u +%Y%m%d%H%M%S)
scratch="${PG_DB:0:40}_restore_$stamp"
pg_sql "$PG_ADMIN_DB" <<<"create database \"$scratch\";"
log "restoring into scratch database $scratch"
pg_run "$scratch" pg_restore --no-owner --no-privileges --exit-on-error --single-transaction \
  <"$work/registry.dump"
{ table_stats "$scratch" && sequence_stats "$scratch"; } | LC_ALL=C sort >"$work/actual"
if ! diff -u "$work/expected" "$work/actual" >"$work/diff"; then
  log "restored data does not match the manifest (expected -, restored +):"
  sed -n '3,$p' "$work/diff" | grep '^[-+]' >&2 || true
  die "verification failed; $PG_DB was not touched"
fi
log "verified: every table's row count and digest and every sequence equal the manifest"
while IFS='|' read -r name rows _; do
  [[ $name == sequence* ]] || log "  $name: $rows rows"
done <"$work/actual"

if $VERIFY_ONLY; then
  log "verify only: dropping $scratch, $PG_DB untouched"
  exit 0
fi

# 3. Swap: the target is renamed aside (or absent), the checked copy takes its name.
if ! $ASSUME_YES; then
  [[ -t 0 ]] || die "replacing $PG_DB needs confirmation: run with --yes"
  read -r -p "Replace database $PG_DB with this backup? Type the database name to confirm: " answer
  [[ $answer == "$PG_DB" ]] || die "not confirmed; $PG_DB untouched"
fi
if [[ $PG_MODE == compose ]] && [[ -n $("${COMPOSE[@]}" ps -q registry 2>/dev/null) ]]; then
  log "stopping the registry while the database is swapped"
  "${COMPOSE[@]}" stop registry >/dev/null
  registry_stopped=true
fi
exists=$(pg_sql "$PG_ADMIN_DB" <<<"select 1 from pg_database where datname = '$PG_DB';")
old="" swap=""
if [[ $exists == 1 ]]; then
  old="${PG_DB:0:36}_pre_restore_$stamp"
  swap="alter database \"$PG_DB\" rename to \"$old\";"
fi
# Both renames in one transaction: the target name never points at nothing. A client that reconnects
# between the terminate and the rename makes it fail; it is tried again.
for attempt in 1 2 3 4 5; do
  if pg_sql "$PG_ADMIN_DB" <<SQL >/dev/null; then break; fi
begin;
select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = '$PG_DB' and pid <> pg_backend_pid();
$swap
alter database "$scratch" rename to "$PG_DB";
commit;
SQL
  ((attempt < 5)) || die "could not swap the databases: $PG_DB is still in use"
  sleep 1
done
scratch=""
log "restored $PG_DB from $ARCHIVE"
if [[ -n $old ]]; then
  if $DROP_OLD; then
    pg_sql "$PG_ADMIN_DB" <<<"drop database \"$old\" with (force);"
    log "dropped the replaced database $old"
  else
    log "the replaced database is kept as $old; drop it when satisfied: drop database \"$old\";"
  fi
fi
