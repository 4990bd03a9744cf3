"""Versioned + repeatable SQL is one database: snapshot, idempotence, foreign keys."""

from __future__ import annotations

import difflib
import shutil
import tempfile
from pathlib import Path

import psycopg
from conftest import ROOT

from covenant.migrate import migrate
from covenant.schema import snapshot

SNAPSHOT = ROOT / "docs" / "schema-snapshot.txt"

# Every foreign key covenant declares: (table, constraint) -> referenced table.
# A migration that adds, drops or re-points a foreign key updates this map.
EXPECTED_FOREIGN_KEYS: dict[tuple[str, str], str] = {
    ("covenant.accounts", "accounts_kind_fkey"): "covenant.account_kinds",
    ("covenant.agent_reputation", "agent_reputation_agent_fkey"): "covenant.accounts",
    ("covenant.agent_reputation", "agent_reputation_state_fkey"): "covenant.reputation_states",
    (
        "covenant.agent_task_reputation",
        "agent_task_reputation_agent_fkey",
    ): "covenant.agent_reputation",
    ("covenant.credit_ledger", "credit_ledger_entry_type_fkey"): "covenant.ledger_entry_types",
    ("covenant.credit_ledger", "credit_ledger_lot_fkey"): "covenant.credit_lots",
    ("covenant.credit_ledger", "credit_ledger_mutation_fkey"): "covenant.ledger_mutations",
    ("covenant.credit_ledger", "credit_ledger_reservation_fkey"): "covenant.credit_reservations",
    ("covenant.credit_lots", "credit_lots_account_fkey"): "covenant.accounts",
    ("covenant.credit_lots", "credit_lots_mutation_fkey"): "covenant.ledger_mutations",
    ("covenant.credit_lots", "credit_lots_source_type_fkey"): "covenant.lot_source_types",
    ("covenant.credit_reservations", "credit_reservations_account_fkey"): "covenant.accounts",
    (
        "covenant.credit_reservations",
        "credit_reservations_mutation_fkey",
    ): "covenant.ledger_mutations",
    (
        "covenant.credit_reservations",
        "credit_reservations_resolved_by_fkey",
    ): "covenant.ledger_mutations",
    ("covenant.invariants", "invariants_error_code_fkey"): "covenant.error_codes",
    ("covenant.ledger_mutations", "ledger_mutations_account_fkey"): "covenant.accounts",
    ("covenant.ledger_mutations", "ledger_mutations_operation_fkey"): "covenant.ledger_operations",
    (
        "covenant.lot_source_types",
        "lot_source_types_opening_entry_type_fkey",
    ): "covenant.ledger_entry_types",
    ("covenant.mutation_policy", "mutation_policy_operation_fkey"): "covenant.ledger_operations",
    ("covenant.reservation_lots", "reservation_lots_lot_fkey"): "covenant.credit_lots",
    (
        "covenant.reservation_lots",
        "reservation_lots_reservation_fkey",
    ): "covenant.credit_reservations",
    ("covenant.usage_tokens", "usage_tokens_reservation_fkey"): "covenant.credit_reservations",
}

_FOREIGN_KEYS = """
    SELECT c.conrelid::regclass::text, c.conname, c.confrelid::regclass::text,
           rn.nspname, rc.relispartition
    FROM pg_catalog.pg_constraint AS c
    JOIN pg_catalog.pg_class AS t ON t.oid = c.conrelid
    JOIN pg_catalog.pg_namespace AS tn ON tn.oid = t.relnamespace
    JOIN pg_catalog.pg_class AS rc ON rc.oid = c.confrelid
    JOIN pg_catalog.pg_namespace AS rn ON rn.oid = rc.relnamespace
    WHERE c.contype = 'f' AND tn.nspname = 'covenant'
      AND NOT t.relispartition  -- partitions inherit their parent's keys
      AND c.conparentid = 0
"""


def foreign_key_problems(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    problems = []
    actual: dict[tuple[str, str], str] = {}
    for table, name, referenced, ref_schema, ref_is_partition in conn.execute(
        _FOREIGN_KEYS
    ).fetchall():
        actual[(str(table), str(name))] = str(referenced)
        if ref_schema != "covenant":
            problems.append(f"{table}.{name} references {referenced} outside schema covenant")
        if ref_is_partition:
            problems.append(f"{table}.{name} references partition {referenced}, not its parent")
    for key in sorted(set(actual) | set(EXPECTED_FOREIGN_KEYS)):
        want, have = EXPECTED_FOREIGN_KEYS.get(key), actual.get(key)
        if want != have:
            problems.append(f"{key[0]}.{key[1]}: expected to reference {want}, references {have}")
    return problems


def test_fresh_database_matches_committed_snapshot(migrated_url: str) -> None:
    with psycopg.connect(migrated_url) as conn:
        current = snapshot(conn)
    committed = SNAPSHOT.read_text()
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            current.splitlines(keepends=True),
            "docs/schema-snapshot.txt",
            "fresh database",
        )
    )
    assert current == committed, f"schema drift (make schema-snapshot if intended):\n{diff}"


def test_reapplying_repeatables_changes_nothing(migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        before = snapshot(conn)
        conn.execute("DELETE FROM covenant.schema_repeatables")
    result = migrate(migrated_url)
    assert result.applied == [] and result.repeatables_applied
    with psycopg.connect(migrated_url) as conn:
        assert snapshot(conn) == before


def test_upgrade_from_every_earlier_version_matches_fresh(server, template_db: str) -> None:  # type: ignore[no-untyped-def]
    """Migrating 1..k, then upgrading to N, gives the same schema as 1..N at once.

    The first step applies versioned migrations only: the repeatable
    definitions of today may need tables of later migrations, and the upgrade
    re-applies all of them anyway.

    k = N is included: an up-to-date database that is migrated again.
    """
    with psycopg.connect(server.url_for(template_db)) as conn:
        fresh = snapshot(conn)
    migrations = sorted((ROOT / "migrations").glob("*.sql"))
    for k in range(1, len(migrations) + 1):
        name = server.create_database()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                partial = Path(tmp) / "migrations"
                partial.mkdir()
                for m in migrations[:k]:
                    shutil.copy(m, partial / m.name)
                # versioned migrations only: today's repeatables need today's tables
                bare = Path(tmp) / "sql"
                bare.mkdir()
                shutil.copy(ROOT / "sql" / "bootstrap.sql", bare / "bootstrap.sql")
                migrate(server.url_for(name), migrations_dir=partial, sql_dir=bare)
            migrate(server.url_for(name))
            with psycopg.connect(server.url_for(name)) as conn:
                assert snapshot(conn) == fresh, f"upgrade from {k} differs"
        finally:
            server.drop_database(name)


def test_every_foreign_key_references_the_table_it_should(
    conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    assert foreign_key_problems(conn) == []


def test_foreign_key_check_catches_a_misdirected_key(
    conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    # Counterexample, rolled back: a rename-and-recreate migration that left a
    # key pointing at the old table.
    conn.execute("SET LOCAL covenant.ddl = 'test'")  # past the DDL guard
    conn.execute("CREATE TABLE covenant.wallets_old (id integer PRIMARY KEY)")
    conn.execute("CREATE TABLE covenant.wallets (id integer PRIMARY KEY)")
    conn.execute(
        "CREATE TABLE covenant.lots (id integer PRIMARY KEY, "
        "wallet_id integer CONSTRAINT lots_wallet_fk REFERENCES covenant.wallets_old)"
    )
    conn.execute("CREATE TABLE public.outside (id integer PRIMARY KEY)")
    conn.execute(
        "CREATE TABLE covenant.notes (id integer PRIMARY KEY, "
        "o integer CONSTRAINT notes_outside_fk REFERENCES public.outside)"
    )
    problems = foreign_key_problems(conn)
    assert (
        "covenant.lots.lots_wallet_fk: expected to reference None, references "
        "covenant.wallets_old" in problems
    )
    assert any("references outside outside schema covenant" in p for p in problems)


def test_snapshot_sees_what_matters(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """The snapshot is not blind: grants, defaults and function bodies show up in it."""
    before = snapshot(conn)
    conn.execute("SET LOCAL covenant.ddl = 'test'")  # past the DDL guard
    conn.execute("GRANT SELECT ON covenant.schema_migrations TO covenant_app")
    after_grant = snapshot(conn)
    assert after_grant != before
    conn.execute(
        "CREATE OR REPLACE FUNCTION covenant._raise(p_name text, p_message text, "
        "p_detail text DEFAULT NULL, p_hint text DEFAULT NULL) RETURNS void "
        "LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$ BEGIN END $$"
    )
    assert snapshot(conn) != after_grant
