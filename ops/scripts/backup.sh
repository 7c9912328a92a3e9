#!/usr/bin/env bash
# Backs up the registry database into one timestamped archive:
#   backup_YYYYmmdd_HHMMSS.tar.gz = registry.dump (pg_dump custom format) + manifest.json
# The manifest holds the dump's sha256 and size and, per table, the row count and a content digest
# taken from the very snapshot pg_dump used; restore.sh checks all of them. Archives older than the
# retention period are deleted after a successful backup. Any failure exits non-zero and leaves no
# partial archive behind.
#
# Usage: ops/scripts/backup.sh [--dir DIR] [--keep-days N]
#   --dir DIR       where archives go (BACKUP_DIR, default backups/ in the project)
#   --keep-days N   delete archives older than N days; 0 keeps everything (BACKUP_RETENTION_DAYS, 14)
# Database: the compose "postgres" service (docker-compose.prod.yml, .env.prod), or DATABASE_URL when set.
# Cron, daily at 02:00:
#   0 2 * * * cd /opt/a2a-registry && ops/scripts/backup.sh >>/var/log/a2a-registry-backup.log 2>&1
set -Eeuo pipefail
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() { script_usage "${BASH_SOURCE[0]}"; }

# The environment, then .env.prod (a relative path there is relative to the project), then defaults.
BACKUP_DIR=${BACKUP_DIR:-$(env_value BACKUP_DIR)}
BACKUP_DIR=${BACKUP_DIR:-backups}
[[ $BACKUP_DIR == /* ]] || BACKUP_DIR=$PROJECT_DIR/$BACKUP_DIR
KEEP_DAYS=${BACKUP_RETENTION_DAYS:-$(env_value BACKUP_RETENTION_DAYS)}
KEEP_DAYS=${KEEP_DAYS:-14}
while (($#)); do
  case $1 in
    --dir) BACKUP_DIR=${2:?--dir needs a directory}; shift 2 ;;
    --keep-days) KEEP_DAYS=${2:?--keep-days needs a number}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ $KEEP_DAYS =~ ^[0-9]+$ ]] || die "--keep-days must be a whole number of days, got '$KEEP_DAYS'"
need tar gzip sha256sum
pg_init

umask 077
mkdir -p "$BACKUP_DIR"
stamp=$(date -u +%Y%m%d_%H%M%S)
archive="$BACKUP_DIR/backup_$stamp.tar.gz"
[[ ! -e $archive ]] || die "$archive already exists"
work=$(mktemp -d "$BACKUP_DIR/.backup_$stamp.XXXXXX")
snapshot_pid=""
cleanup() {
  if [[ -n $snapshot_pid ]]; then kill "$snapshot_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'die "backup failed (line $LINENO); no archive written"' ERR

log "backing up database $PG_DB ($PG_MODE) into $archive"

# One transaction exports its snapshot and stays open: pg_dump and the counts below both read exactly
# that state, so the manifest describes the dump even while the registry keeps writing.
coproc SNAPSHOT { pg_sql "$PG_DB" 2>&1; }
snapshot_pid=$!
snapshot_in=${SNAPSHOT[1]} snapshot_out=${SNAPSHOT[0]}
printf 'begin isolation level repeatable read read only;\nselect pg_export_snapshot();\n' >&"$snapshot_in"
IFS= read -r -t 60 snapshot <&"$snapshot_out" || die "could not open a snapshot on $PG_DB"
[[ $snapshot =~ ^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$ ]] || die "could not open a snapshot on $PG_DB: $snapshot"

pg_run "$PG_DB" pg_dump --format=custom --compress=6 --snapshot="$snapshot" \
  >"$work/registry.dump"
table_stats "$PG_DB" "$snapshot" >"$work/stats"
server_version=$(pg_sql "$PG_DB" <<<"show server_version;")
dump_version=$(pg_tool pg_dump --version)

printf "commit;\n" >&"$snapshot_in"
exec {snapshot_in}>&-
wait "$snapshot_pid" || die "the snapshot transaction failed"
snapshot_pid=""

# The dump must be readable by pg_restore, not just present; its sequence values go into the manifest.
dump_sequence_stats "$work/registry.dump" >>"$work/stats"
dump_sha=$(sha256sum "$work/registry.dump" | cut -d' ' -f1)
dump_bytes=$(wc -c <"$work/registry.dump" | tr -d ' ')

json_string() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}
{
  printf '{\n'
  printf '  "format": "a2a-registry-backup/1",\n'
  printf '  "created_at": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '  "database": %s,\n' "$(json_string "$PG_DB")"
  printf '  "server_version": %s,\n' "$(json_string "$server_version")"
  printf '  "pg_dump": %s,\n' "$(json_string "$dump_version")"
  printf '  "dump_file": "registry.dump",\n'
  printf '  "dump_bytes": %s,\n' "$dump_bytes"
  printf '  "dump_sha256": "%s",\n' "$dump_sha"
  render_stats_json <"$work/stats"
  printf '}\n'
} >"$work/manifest.json"

tar -czf "$work/archive.tar.gz" -C "$work" manifest.json registry.dump
mv "$work/archive.tar.gz" "$archive"
(cd "$BACKUP_DIR" && sha256sum "$(basename "$archive")" >"$(basename "$archive").sha256")
table_count=$(grep -c '"table":' "$work/manifest.json" || true)
log "wrote $archive ($(wc -c <"$archive" | tr -d ' ') bytes, $table_count tables, dump sha256 $dump_sha)"

if ((KEEP_DAYS > 0)); then
  while IFS= read -r old; do
    rm -f "$old" "$old.sha256"
    log "retention: removed $old (older than $KEEP_DAYS days)"
  done < <(find "$BACKUP_DIR" -maxdepth 1 -type f -name 'backup_*.tar.gz' -mmin "+$((KEEP_DAYS * 1440))" ! -path "$archive")
fi
printf '%s\n' "$archive"
