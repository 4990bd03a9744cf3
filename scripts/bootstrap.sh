#!/usr/bin/env bash
# Install what covenant's make targets need, idempotently:
#   - a virtualenv in .venv with the package (editable) and its dev tools;
#   - the PostgreSQL server binaries and, with --pgtap, pgTAP and pg_prove
#     (apt-get on Debian/Ubuntu as root; elsewhere a clear message says what
#     to install).
set -euo pipefail
cd "$(dirname "$0")/.."

want_pgtap=0
[[ "${1:-}" == "--pgtap" ]] && want_pgtap=1

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "covenant: Python 3.11 or newer is required (found: $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi

if [[ ! -x .venv/bin/python ]]; then
    echo "covenant: creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.covenant-installed
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
    echo "covenant: installing the package and its dev tools into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
    touch "$stamp"
fi

if [[ $want_pgtap == 1 ]]; then
    .venv/bin/covenant db tools --pgtap >/dev/null
else
    .venv/bin/covenant db tools >/dev/null
fi
