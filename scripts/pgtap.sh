#!/usr/bin/env bash
# Run the pgTAP suite (sql/tests/*.sql) with pg_prove against a fresh,
# migrated database on the server that PGHOST/PGPORT/PGUSER point at.
set -euo pipefail
cd "$(dirname "$0")/.."

db="covenant_tap_$$"
export PGDATABASE=postgres
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
psql -X -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS ${db}" -c "CREATE DATABASE ${db}"
trap 'psql -X -q -c "DROP DATABASE IF EXISTS ${db}" >/dev/null 2>&1 || true' EXIT

url="postgresql:///${db}?host=${PGHOST}&port=${PGPORT}&user=${PGUSER}"
.venv/bin/covenant migrate --database-url "$url" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d "$db" -c "CREATE EXTENSION IF NOT EXISTS pgtap" \
    -f sql/tests/helpers/tests_schema.sql
pg_prove --ext .sql -d "$db" sql/tests/*.sql
