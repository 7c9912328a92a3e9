# shellcheck shell=bash
# Shared by deploy.sh, backup.sh and restore.sh: logging, the compose command line, and database access
# that works the same against the compose "postgres" service and against a DATABASE_URL.

# The repository root: every default path below is relative to it.
PROJECT_DIR=${PROJECT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}
COMPOSE_FILE=${COMPOSE_FILE:-$PROJECT_DIR/docker-compose.prod.yml}
ENV_FILE=${ENV_FILE:-$PROJECT_DIR/.env.prod}
POSTGRES_SERVICE=${POSTGRES_SERVICE:-postgres}
# The database to connect to for creating, renaming and dropping others.
PG_ADMIN_DB=${PG_ADMIN_DB:-postgres}

log() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
need() {
  local tool
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || die "$tool is required but not installed"; done
}

# docker compose v2 (plugin) or the standalone docker-compose, always with this project's files.
compose_cmd() {
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
  else
    return 1
  fi
  COMPOSE+=(--project-directory "$PROJECT_DIR" -f "$COMPOSE_FILE" --env-file "$ENV_FILE")
}

# A value from the env file (KEY=value lines; surrounding quotes removed), or empty.
env_value() {
  local key=$1 line value=""
  [[ -r $ENV_FILE ]] || return 0
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line == "$key="* ]] || continue
    value=${line#*=}
    value=${value%$'\r'}
    if [[ $value == \"*\" || $value == \'*\' ]]; then value=${value:1:${#value}-2}; fi
  done <"$ENV_FILE"
  printf '%s' "$value"
}

# --- database access ---------------------------------------------------------------------------------
# With DATABASE_URL set, the local psql/pg_dump/pg_restore talk to that server. Otherwise they run inside
# the compose postgres container (same major version as the server, no published port needed).

pg_init() {
  if [[ -n ${DATABASE_URL:-} ]]; then
    PG_MODE=url
    local pattern='^(postgres(ql)?://[^/?#]*)/([A-Za-z0-9_]+)(\?.*)?$'
    [[ $DATABASE_URL =~ $pattern ]] ||
      die "DATABASE_URL must look like postgres://user:password@host:port/database (plain database name)"
    PG_URL_PREFIX=${BASH_REMATCH[1]}
    PG_DB=${BASH_REMATCH[3]}
    PG_URL_QUERY=${BASH_REMATCH[4]}
    need psql pg_dump pg_restore
  else
    PG_MODE=compose
    need docker
    compose_cmd || die "docker compose is required (or set DATABASE_URL to reach Postgres directly)"
    PG_USER=${POSTGRES_USER:-$(env_value POSTGRES_USER)}
    PG_USER=${PG_USER:-registry}
    PG_DB=${POSTGRES_DB:-$(env_value POSTGRES_DB)}
    PG_DB=${PG_DB:-registry}
  fi
}

# pg_tool TOOL [ARGS...]: a client tool that needs no database (pg_restore --list, --version).
pg_tool() {
  if [[ $PG_MODE == url ]]; then "$@"; else "${COMPOSE[@]}" exec -T "$POSTGRES_SERVICE" "$@"; fi
}

# pg_run DATABASE TOOL [ARGS...]: runs psql, pg_dump or pg_restore against DATABASE on the same server.
pg_run() {
  local db=$1 tool=$2
  shift 2
  if [[ $PG_MODE == url ]]; then
    "$tool" --dbname="$PG_URL_PREFIX/$db$PG_URL_QUERY" "$@"
  else
    "${COMPOSE[@]}" exec -T "$POSTGRES_SERVICE" "$tool" --username="$PG_USER" --dbname="$db" "$@"
  fi
}

# pg_sql DATABASE: runs the SQL on stdin, unaligned and quiet, stopping at the first error.
pg_sql() { pg_run "$1" psql -qAtX -v ON_ERROR_STOP=1; }

# Settings that make row text identical on any server and session, so digests compare across restores.
PG_STABLE_TEXT="set timezone = 'UTC'; set datestyle = 'ISO, YMD'; set intervalstyle = 'postgres';
set extra_float_digits = 1; set bytea_output = 'hex';"

# table_stats DATABASE [SNAPSHOT]: one line per user table, "schema.table|rows|digest", sorted. The
# digest is the sha256 of the row count and the sums of every row's md5: it does not depend on physical
# row order and needs no sort or buffering, and any changed, missing or extra row changes it. With
# SNAPSHOT, the numbers are those of that exported snapshot (the one pg_dump used).
table_stats() {
  local db=$1 snapshot=${2:-} tables query="" table tables_list
  local begin="begin isolation level repeatable read read only;"
  [[ -n $snapshot ]] && begin+=" set transaction snapshot '$snapshot';"
  tables=$(pg_sql "$db" <<SQL
$begin
select format('%I.%I', table_schema, table_name) from information_schema.tables
where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')
order by 1;
commit;
SQL
  )
  mapfile -t tables_list <<<"$tables"
  for table in "${tables_list[@]}"; do
    [[ -n $table ]] || continue
    [[ -n $query ]] && query+=$'\nunion all '
    query+="select '$table', count(*)::text || '|' || encode(sha256(convert_to(count(*)::text || ':' ||
      coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint), 0)::text || ':' ||
      coalesce(sum(('x' || substr(md5(t::text), 17, 16))::bit(64)::bigint), 0)::text, 'UTF8')), 'hex')
      from $table t"
  done
  pg_sql "$db" <<SQL | LC_ALL=C sort
$begin
$PG_STABLE_TEXT
${query:-select null, null where false};
commit;
SQL
}

# sequence_stats DATABASE: "sequence schema.name|last_value" per sequence ("unset" before first use).
sequence_stats() {
  pg_sql "$1" <<SQL | LC_ALL=C sort
select 'sequence ' || format('%I.%I', schemaname, sequencename), coalesce(last_value::text, 'unset')
from pg_sequences where schemaname not in ('pg_catalog', 'information_schema');
SQL
}

# dump_sequence_stats < DUMP: the same lines for the values a custom-format dump will set. Sequences are
# not transactional: pg_dump reads them after its snapshot, so they come from the dump, not the database.
dump_sequence_stats() {
  local dump=$1 names=() line toc
  toc=$(pg_tool pg_restore --list <"$dump")
  while IFS= read -r line; do
    # "123; 0 16400 SEQUENCE SET public agent_seq owner"
    if [[ $line =~ \ SEQUENCE\ SET\ [^\ ]+\ ([^\ ]+)\  ]]; then names+=(-t "${BASH_REMATCH[1]}"); fi
  done <<<"$toc"
  ((${#names[@]} > 0)) || return 0
  pg_tool pg_restore --data-only --file=- "${names[@]}" <"$dump" |
    sed -n "s/^SELECT pg_catalog.setval('\(.*\)', \([0-9-]*\), \(true\|false\));\$/\1 \2 \3/p" |
    while read -r name value called; do
      [[ $called == true ]] || value="unset"
      printf 'sequence %s|%s\n' "$name" "$value"
    done | LC_ALL=C sort
}

# Lines of table_stats as the manifest's "tables" and "sequences" arrays, one entry per line.
render_stats_json() {
  local line name rest rows digest tables=() sequences=() i
  while IFS= read -r line; do
    [[ -n $line ]] || continue
    if [[ $line == "sequence "* ]]; then
      name=${line#sequence }
      sequences+=("    {\"sequence\": \"${name%%|*}\", \"last_value\": \"${name#*|}\"}")
    else
      name=${line%%|*} rest=${line#*|}
      rows=${rest%%|*} digest=${rest#*|}
      tables+=("    {\"table\": \"$name\", \"rows\": $rows, \"digest\": \"$digest\"}")
    fi
  done
  printf '  "tables": [\n'
  for i in "${!tables[@]}"; do
    printf '%s%s\n' "${tables[i]}" "$([[ $i -lt $((${#tables[@]} - 1)) ]] && printf ,)"
  done
  printf '  ],\n  "sequences": [\n'
  for i in "${!sequences[@]}"; do
    printf '%s%s\n' "${sequences[i]}" "$([[ $i -lt $((${#sequences[@]} - 1)) ]] && printf ,)"
  done
  printf '  ]\n'
}

# The inverse of render_stats_json: the manifest's entries back as table_stats lines, sorted.
manifest_stats() {
  sed -n \
    -e 's/^ *{"table": "\(.*\)", "rows": \([0-9]*\), "digest": "\([0-9a-f]*\)"},\{0,1\}$/\1|\2|\3/p' \
    -e 's/^ *{"sequence": "\(.*\)", "last_value": "\(.*\)"},\{0,1\}$/sequence \1|\2/p' \
    "$1" | LC_ALL=C sort
}

# A string field of the manifest (our own one-key-per-line JSON).
manifest_field() {
  sed -n "s/^  \"$2\": \"\\{0,1\\}\\([^\"]*\\)\"\\{0,1\\},\\{0,1\\}\$/\\1/p" "$1" | head -n 1
}

# A script's usage text: the comment block under its shebang.
script_usage() { sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p;};}' "$1"; }
