#!/usr/bin/env bash
# `make test`: install what is missing, start a throwaway cluster, run lint,
# the pgTAP suite and pytest, tear the cluster down.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

bash scripts/bootstrap.sh --pgtap

name="test-$$"
cleanup() { .venv/bin/covenant db down --name "$name" --remove >/dev/null 2>&1 || true; }
trap cleanup EXIT
.venv/bin/covenant db up --name "$name" --fast --pgtap >/dev/null
eval "$(.venv/bin/covenant db env --name "$name")"
echo "covenant: throwaway cluster '$name' on port $PGPORT"

echo "== lint"
bash scripts/lint.sh

echo "== pgTAP (pg_prove)"
bash scripts/pgtap.sh

echo "== pytest"
COVENANT_TEST_DATABASE_URL="$(.venv/bin/covenant db url --name "$name")" \
    .venv/bin/python -m pytest "$@"

echo "covenant: make test took $(( $(date +%s) - started ))s"
