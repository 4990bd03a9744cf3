# covenant: `make demo` and `make test` work on a fresh machine; the rest
# are the pieces they are made of.
SHELL := /bin/bash
COVENANT := .venv/bin/covenant
DB_NAME ?= dev

.PHONY: help demo test install venv lint fmt pgtap pytest db-up db-down db-url schema-snapshot env-example clean

help:
	@echo "make demo             start the embedded PostgreSQL, migrate, show covenant at work"
	@echo "make test             lint + pgTAP + pytest on a throwaway cluster"
	@echo "make install          .venv with covenant and its dev tools; server binaries and pgTAP"
	@echo "make lint             sqlfluff, ruff, mypy --strict"
	@echo "make pgtap / pytest   one suite, against the embedded cluster"
	@echo "make db-up / db-down  start / stop the embedded cluster under .covenant/$(DB_NAME)"
	@echo "make schema-snapshot  rewrite docs/schema-snapshot.txt after an intended schema change"
	@echo "make env-example      rewrite .env.example from python/covenant/config.py"

demo: venv
	@$(COVENANT) db up --name $(DB_NAME) >/dev/null
	@$(COVENANT) demo --database-url "$$($(COVENANT) db url --name $(DB_NAME))"
	@echo
	@echo "The cluster keeps running: psql \"$$($(COVENANT) db url --name $(DB_NAME))\"  (stop: make db-down)"

test:
	@bash scripts/test.sh

install:
	@bash scripts/bootstrap.sh --pgtap

venv:
	@bash scripts/bootstrap.sh

lint: install
	@bash scripts/lint.sh

fmt: install
	.venv/bin/ruff format python
	.venv/bin/ruff check --fix python
	.venv/bin/sqlfluff fix --processes 2 migrations sql

pgtap: install
	@$(COVENANT) db up --name $(DB_NAME) >/dev/null
	@eval "$$($(COVENANT) db env --name $(DB_NAME))" && bash scripts/pgtap.sh

pytest: venv
	.venv/bin/python -m pytest

db-up: venv
	@$(COVENANT) db up --name $(DB_NAME)

db-down:
	@$(COVENANT) db down --name $(DB_NAME)

db-url:
	@$(COVENANT) db url --name $(DB_NAME)

schema-snapshot: venv
	@bash scripts/schema_snapshot.sh > docs/schema-snapshot.txt
	@echo "wrote docs/schema-snapshot.txt"

env-example: venv
	@$(COVENANT) config example > .env.example

clean:
	-$(COVENANT) db down --name $(DB_NAME) --remove
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .hypothesis
