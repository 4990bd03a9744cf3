#!/usr/bin/env bash
# Lint: sqlfluff over migrations/ and sql/, ruff and mypy --strict over the package.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/sqlfluff lint migrations sql
.venv/bin/ruff check python bench scripts
.venv/bin/ruff format --check python bench scripts
.venv/bin/mypy
