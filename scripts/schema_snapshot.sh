#!/usr/bin/env bash
# Print the normalized schema of a fresh database migrated from zero
# (what docs/schema-snapshot.txt must contain).
set -euo pipefail
cd "$(dirname "$0")/.."
name="snapshot-$$"
trap '.venv/bin/covenant db down --name "$name" --remove >/dev/null 2>&1 || true' EXIT
.venv/bin/covenant db up --name "$name" --fast >/dev/null
url="$(.venv/bin/covenant db url --name "$name")"
.venv/bin/covenant migrate --database-url "$url" >/dev/null
.venv/bin/covenant schema snapshot --database-url "$url"
