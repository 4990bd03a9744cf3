"""One source of truth: the database's catalogues and machines equal the Python mirror.

Read from the catalog (catalogue tables, ``pg_constraint``) and compared as
sets, never as strings: a value or a transition added on one side only fails
here.
"""

from __future__ import annotations

import re
from enum import StrEnum

import psycopg
import pytest

from covenant import catalogue as cat


def values(conn: psycopg.Connection[tuple[object, ...]], query: str) -> set[str]:
    return {str(r[0]) for r in conn.execute(query).fetchall()}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("enum", "query"),
    [
        (cat.AccountKind, "SELECT kind FROM covenant.account_kinds"),
        (cat.LotSourceType, "SELECT source_type FROM covenant.lot_source_types"),
        (cat.EntryType, "SELECT entry_type FROM covenant.ledger_entry_types"),
        (cat.Operation, "SELECT operation FROM covenant.ledger_operations"),
        (cat.ReputationEventType, "SELECT event_type FROM covenant.reputation_event_types"),
        (cat.ReputationState, "SELECT state FROM covenant.reputation_states"),
    ],
)
def test_type_catalogue_equals_enum(
    conn: psycopg.Connection[tuple[object, ...]], enum: type[StrEnum], query: str
) -> None:
    assert values(conn, query) == {m.value for m in enum}


def test_allocatable_sources(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    got = values(conn, "SELECT source_type FROM covenant.lot_source_types WHERE allocatable")
    assert got == {s.value for s in cat.ALLOCATABLE_SOURCES}


def test_reputation_ranks(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    rows = conn.execute("SELECT state, rank FROM covenant.reputation_states").fetchall()
    assert {str(s): int(r) for s, r in rows} == {s.value: n for s, n in cat.REPUTATION_RANK.items()}  # type: ignore[call-overload]


# Columns that hold catalogue values: enforced by a foreign key to the
# catalogue table (read from pg_constraint).
FOREIGN_KEYED = {
    ("covenant.accounts", "kind"): "covenant.account_kinds",
    ("covenant.credit_lots", "source_type"): "covenant.lot_source_types",
    ("covenant.credit_ledger", "entry_type"): "covenant.ledger_entry_types",
    ("covenant.ledger_mutations", "operation"): "covenant.ledger_operations",
    ("covenant.mutation_policy", "operation"): "covenant.ledger_operations",
    ("covenant.agent_reputation", "state"): "covenant.reputation_states",
}


def test_catalogue_columns_are_enforced_by_foreign_keys(
    conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    rows = conn.execute(
        "SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text "
        "FROM pg_constraint AS c "
        "JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey) "
        "WHERE c.contype = 'f' AND cardinality(c.conkey) = 1"
    ).fetchall()
    found = {(str(t), str(col)): str(ref) for t, col, ref in rows}
    for key, referenced in FOREIGN_KEYED.items():
        assert found.get(key) == referenced, key


# State columns constrained by a CHECK (status IN (...)): the literal set of
# the constraint, parsed from its definition, equals the machine's states.
CHECKED = {
    "reservation_status_known": "reservation",
    "lot_status_known": "lot",
    "audit_quarantine_state_known": "audit_quarantine",
}


def check_literals(conn: psycopg.Connection[tuple[object, ...]], name: str) -> set[str]:
    row = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = %s", [name]
    ).fetchone()
    assert row is not None, name
    return set(re.findall(r"'([^']*)'::text", str(row[0])))


@pytest.mark.parametrize(("constraint", "machine"), sorted(CHECKED.items()))
def test_state_check_equals_machine_states(
    conn: psycopg.Connection[tuple[object, ...]], constraint: str, machine: str
) -> None:
    assert check_literals(conn, constraint) == cat.MACHINE_STATES[machine]


def test_check_parser_is_not_blind(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    # Counterexample, rolled back: a widened CHECK no longer equals the machine.
    conn.execute("SET LOCAL covenant.ddl = 'test'")
    conn.execute("ALTER TABLE covenant.credit_lots DROP CONSTRAINT lot_status_known")
    conn.execute(
        "ALTER TABLE covenant.credit_lots ADD CONSTRAINT lot_status_known "
        "CHECK (status IN ('active', 'exhausted', 'frozen'))"
    )
    assert check_literals(conn, "lot_status_known") != cat.MACHINE_STATES["lot"]


def test_machines_equal_state_transitions(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    rows = conn.execute(
        "SELECT machine, from_state, to_state FROM covenant.state_transitions"
    ).fetchall()
    db: dict[str, set[tuple[str, str]]] = {}
    for machine, src, dst in rows:
        db.setdefault(str(machine), set()).add((str(src), str(dst)))
    assert set(db) == set(cat.MACHINES)
    for machine, edges in cat.MACHINES.items():
        assert db[machine] == set(edges), machine
        states = {s for edge in edges for s in edge}
        assert states <= cat.MACHINE_STATES[machine]


def test_python_refuses_what_the_machine_refuses() -> None:
    cat.check_transition("reservation", "pending", "finalized")
    with pytest.raises(cat.InvalidTransitionError):
        cat.check_transition("reservation", "finalized", "pending")
    with pytest.raises(cat.InvalidTransitionError):
        cat.check_transition("reputation", "cold", "established")  # one step up at a time


def test_database_refuses_what_the_machine_refuses(
    conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    for machine, edges in cat.MACHINES.items():
        states = sorted(cat.MACHINE_STATES[machine])
        for src in states:
            for dst in states:
                conn.execute("SAVEPOINT t")
                try:
                    conn.execute("SELECT covenant._transition(%s, %s, %s)", [machine, src, dst])
                    allowed = True
                except psycopg.Error as exc:
                    assert exc.sqlstate == "CV013"
                    allowed = False
                conn.execute("ROLLBACK TO SAVEPOINT t")
                assert allowed == ((src, dst) in edges), (machine, src, dst)
