"""The audit trail against a real server: appends, refusals, concurrency, tamper, quarantine."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import Server
from psycopg.types.json import Jsonb

from covenant import errors
from covenant.audit import AuditEntry, AuditTrail, GroupCommitAppender
from covenant.config import load_settings
from covenant.db import Connector
from covenant.verify import GENESIS_HASH

ACTOR = "service:ledger"


@pytest.fixture
def db(migrated_url: str) -> Iterator[Connector]:
    settings = load_settings({"COVENANT_POOL_MAX_SIZE": "25", "COVENANT_RETRY_BASE_DELAY_MS": "1"})
    with Connector(settings, database_url=migrated_url) as connector:
        yield connector


@pytest.fixture
def audit(db: Connector) -> AuditTrail:
    return AuditTrail(db)


def _count(url: str, domain: str | None = None) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM covenant.audit_trail WHERE %(d)s::text IS NULL "
            "OR domain_tag = %(d)s) + (SELECT count(*) FROM covenant.audit_trail_chain_links "
            "WHERE %(d)s::text IS NULL OR domain_tag = %(d)s)",
            {"d": domain},
        ).fetchone()
    assert row is not None
    return int(row[0])


def _superuser(url: str, *statements: str) -> None:
    """Tamper as a superuser: the triggers are disabled for the edit only."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL covenant.ddl = 'tamper'")  # a superuser gets past the guard
        for table in ("audit_trail", "audit_trail_chain_links", "audit_trail_head"):
            conn.execute(f"ALTER TABLE covenant.{table} DISABLE TRIGGER USER".encode())
        for statement in statements:
            conn.execute(statement.encode())
        names = conn.execute(
            "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal "
            "AND tgrelid IN ('covenant.audit_trail'::regclass, "
            "'covenant.audit_trail_chain_links'::regclass, 'covenant.audit_trail_head'::regclass)"
        ).fetchall()
        for table, trigger in names:
            conn.execute(f'ALTER TABLE {table} ENABLE ALWAYS TRIGGER "{trigger}"'.encode())


# ------------------------------------------------------------------ appends


def test_append_links_entries_into_a_chain(audit: AuditTrail) -> None:
    first = audit.append("orders:a", "credit.allocated", ACTOR, {"amount": "10"})
    second = audit.append("orders:a", "credit.reserved", ACTOR, {"amount": "4"})
    other = audit.append("orders:b", "credit.allocated", ACTOR, {})
    assert (first.seq, second.seq, other.seq) == (1, 2, 1)
    assert first.previous_hash == GENESIS_HASH == other.previous_hash
    assert second.previous_hash == first.entry_hash
    assert not first.duplicate
    assert audit.verify("orders:a", 1).ok


def test_same_entry_id_same_content_is_a_duplicate(audit: AuditTrail, migrated_url: str) -> None:
    entry_id = uuid.uuid4()
    first = audit.append("orders:a", "x", ACTOR, {"n": 1}, entry_id=entry_id)
    before = _count(migrated_url)
    again = audit.append("orders:a", "x", ACTOR, {"n": 1}, entry_id=entry_id)
    assert again.duplicate
    assert (again.seq, again.entry_hash) == (first.seq, first.entry_hash)
    assert _count(migrated_url) == before


@pytest.mark.parametrize(
    ("domain", "event_type", "actor", "payload"),
    [
        ("orders:a", "y", ACTOR, {"n": 1}),  # another type
        ("orders:a", "x", "service:other", {"n": 1}),  # another actor
        ("orders:a", "x", ACTOR, {"n": 2}),  # another payload
        ("orders:b", "x", ACTOR, {"n": 1}),  # another domain
    ],
)
def test_same_entry_id_other_content_conflicts(
    audit: AuditTrail, migrated_url: str, domain: str, event_type: str, actor: str, payload: Any
) -> None:
    entry_id = uuid.uuid4()
    audit.append("orders:a", "x", ACTOR, {"n": 1}, entry_id=entry_id)
    before = _count(migrated_url)
    with pytest.raises(errors.IdempotencyConflict):
        audit.append(domain, event_type, actor, payload, entry_id=entry_id)
    assert _count(migrated_url) == before


BAD_INPUT = [
    ("domain", ""),
    ("domain", "Account:a"),
    ("domain", "a" * 129),
    ("domain", "a b"),
    ("domain", "a\nb"),
    ("domain", "_leading"),
    ("event_type", ""),
    ("event_type", "Credit"),
    ("event_type", "x\ny"),
    ("actor", ""),
    ("actor", "SERVICE:ledger"),
    ("actor", "service:"),
    ("actor", "user:42"),
    ("actor", "0B8C4B0E-6A0B-4D5E-9E7E-3F1F5C3A2B10"),
    ("actor", "0b8c4b0e6a0b4d5e9e7e3f1f5c3a2b10"),
    ("actor", "service:ledger\n"),
    ("payload", None),
]


@pytest.mark.parametrize(("field", "value"), BAD_INPUT)
def test_bad_input_is_cv004_and_writes_nothing(migrated_url: str, field: str, value: Any) -> None:
    args = {"domain": "orders:a", "event_type": "x", "actor": ACTOR, "payload": Jsonb({})}
    args[field] = Jsonb(value) if field == "payload" and value is not None else value
    with psycopg.connect(migrated_url) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute(
            "SELECT * FROM covenant.append_audit_entry(%s, %s, %s, %s, %s)",
            [args["domain"], uuid.uuid4(), args["event_type"], args["actor"], args["payload"]],
        )
    assert isinstance(errors.translate(caught.value), errors.InvalidArgument)
    assert _count(migrated_url) == 0


@pytest.mark.parametrize("offset", [timedelta(minutes=6), timedelta(minutes=-6), timedelta(days=1)])
def test_event_time_skew_is_cv003(audit: AuditTrail, migrated_url: str, offset: timedelta) -> None:
    with pytest.raises(errors.EventTimeSkew):
        audit.append("orders:a", "x", ACTOR, {}, event_time=datetime.now(UTC) + offset)
    assert _count(migrated_url) == 0


def test_event_time_within_skew_is_accepted(audit: AuditTrail) -> None:
    receipt = audit.append(
        "orders:a", "x", ACTOR, {}, event_time=datetime.now(UTC) - timedelta(minutes=4)
    )
    assert receipt.seq == 1


def test_batch_is_all_or_nothing_and_ordered(audit: AuditTrail, migrated_url: str) -> None:
    good = [AuditEntry("x", ACTOR, {"i": i}) for i in range(5)]
    bad = [*good[:2], AuditEntry("x", "not an actor", {}), *good[2:]]
    with pytest.raises(errors.InvalidArgument, match="entry 2: actor_id"):
        audit.append_many("orders:a", bad)
    assert _count(migrated_url) == 0
    receipts = audit.append_many("orders:a", good)
    assert [r.seq for r in receipts] == [1, 2, 3, 4, 5]
    assert [r.entry_id for r in receipts] == [e.entry_id for e in good]
    again = audit.append_many("orders:a", [*good[3:], AuditEntry("x", ACTOR, {"i": 5})])
    assert [(r.seq, r.duplicate) for r in again] == [(4, True), (5, True), (6, False)]
    assert audit.verify("orders:a", 1).ok


@pytest.mark.parametrize(
    "entries",
    [
        "{}",
        "[]",
        '"x"',
        "[1]",
        '[{"entry_id": "nope", "event_type": "x", "actor_id": "service:a", "payload": {}}]',
        '[{"entry_id": "6f1e4d1c-0000-4000-8000-000000000001", "event_type": "x", '
        '"actor_id": "service:a", "payload": {}, "event_time": "yesterday-ish"}]',
        '[{"entry_id": "6f1e4d1c-0000-4000-8000-000000000001", "event_type": "x", '
        '"actor_id": "service:a", "payload": {}, "event_time": "2026-11-21 10:24:00+99"}]',
        '[{"entry_id": "6f1e4d1c-0000-4000-8000-000000000001", "event_type": "x", '
        '"actor_id": "service:a"}]',
    ],
)
def test_malformed_batches_are_cv004(migrated_url: str, entries: str) -> None:
    with psycopg.connect(migrated_url) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute(
            "SELECT * FROM covenant.append_audit_entries('orders:a', %s::jsonb)", [entries]
        )
    assert isinstance(errors.translate(caught.value), errors.InvalidArgument)
    assert _count(migrated_url) == 0


@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
def test_non_read_committed_callers_get_a_clear_error(migrated_url: str, level: str) -> None:
    with psycopg.connect(migrated_url) as conn:
        conn.execute(f"SET TRANSACTION ISOLATION LEVEL {level}".encode())
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(
                "SELECT * FROM covenant.append_audit_entry('orders:a', gen_random_uuid(), 'x', "
                "'service:a', '{}')"
            )
    assert isinstance(errors.translate(caught.value), errors.IsolationLevelUnsupported)


def test_audit_composes_with_the_callers_transaction(audit: AuditTrail, migrated_url: str) -> None:
    with psycopg.connect(migrated_url, row_factory=psycopg.rows.dict_row) as conn:
        audit.append("orders:a", "x", ACTOR, {}, conn=conn)
        conn.rollback()
    assert _count(migrated_url) == 0, "the caller's rollback took the entry with it"


# ------------------------------------------------------------------ concurrency


def test_twenty_writers_on_one_domain_make_one_chain(
    audit: AuditTrail, db: Connector, migrated_url: str
) -> None:
    writers, per_writer = 20, 25
    failures: list[BaseException] = []

    def write(w: int) -> None:
        try:
            for i in range(per_writer):
                audit.append("orders:hot", "x", ACTOR, {"writer": w, "i": i})
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    with psycopg.connect(migrated_url) as conn:
        seqs = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM covenant.audit_trail WHERE domain_tag = 'orders:hot' ORDER BY seq"
            ).fetchall()
        ]
    assert seqs == list(range(1, writers * per_writer + 1)), "no gaps, no duplicates"
    result = audit.verify("orders:hot", 1)
    assert result.ok and result.checked == writers * per_writer, result
    assert db.stats.retries == 0


def test_different_domains_never_wait_for_each_other(migrated_url: str) -> None:
    append = (
        "SELECT * FROM covenant.append_audit_entry(%s, gen_random_uuid(), 'x', 'service:a', '{}')"
    )
    with psycopg.connect(migrated_url) as holder:
        holder.execute(append, ["orders:one"])  # holds orders:one's lock until rollback
        with psycopg.connect(migrated_url) as other:
            other.execute("SET lock_timeout = '500ms'")
            other.execute(append, ["orders:two"])  # would time out if it waited
            other.commit()
            other.execute("SET lock_timeout = '500ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute(append, ["orders:one"])  # the same domain does wait
        holder.rollback()


# ------------------------------------------------------------------ group commit


def test_group_commit_batches_and_acknowledges_each_entry(db: Connector, audit: AuditTrail) -> None:
    threads_n, per_thread = 40, 25
    receipts: list[Any] = []
    lock = threading.Lock()
    with GroupCommitAppender(db, max_batch=500) as appender:

        def work(t: int) -> None:
            for i in range(per_thread):
                r = appender.append("orders:gc", "x", ACTOR, {"t": t, "i": i})
                with lock:
                    receipts.append(r)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = appender.stats
    total = threads_n * per_thread
    assert sorted(r.seq for r in receipts) == list(range(1, total + 1))
    assert stats.entries == total
    assert stats.batches < total, "entries were grouped into fewer transactions"
    assert audit.verify("orders:gc", 1).ok


def test_group_commit_isolates_one_bad_entry(db: Connector) -> None:
    with GroupCommitAppender(db) as appender:
        futures = [appender.submit("orders:gc", "x", ACTOR, {"i": i}) for i in range(20)]
        bad = appender.submit("orders:gc", "x", "NOT AN ACTOR", {})
        futures += [appender.submit("orders:gc", "x", ACTOR, {"i": i}) for i in range(20, 40)]
        with pytest.raises(errors.InvalidArgument):
            bad.result()
        seqs = sorted(f.result().seq for f in futures)
    assert seqs == list(range(1, 41))


# ------------------------------------------------------------------ tamper


def _chain(audit: AuditTrail, n: int = 10, domain: str = "orders:t") -> None:
    for i in range(n):
        audit.append(domain, "x", ACTOR, {"i": i})


TAMPER = {
    "edited": (
        [
            "UPDATE covenant.audit_trail SET payload = '{\"i\": 999}' "
            "WHERE domain_tag = 'orders:t' AND seq = 5"
        ],
        5,
        "hash mismatch",
    ),
    "deleted entry": (
        ["DELETE FROM covenant.audit_trail WHERE domain_tag = 'orders:t' AND seq = 5"],
        5,
        "entry missing",
    ),
    "deleted entry and link": (
        [
            "DELETE FROM covenant.audit_trail WHERE domain_tag = 'orders:t' AND seq = 5",
            "DELETE FROM covenant.audit_trail_chain_links WHERE domain_tag = 'orders:t' AND seq = 5",
        ],
        6,
        "seq gap",
    ),
    "reordered": (
        [
            f"UPDATE covenant.{table} SET seq = {new} WHERE domain_tag = 'orders:t' AND seq = {old}"
            for table in ("audit_trail", "audit_trail_chain_links")
            for old, new in ((4, 1000), (5, 4), (1000, 5))
        ],
        4,
        "link does not follow",
    ),
    "renumbered": (
        [
            "DELETE FROM covenant.audit_trail WHERE domain_tag = 'orders:t' AND seq = 5",
            "DELETE FROM covenant.audit_trail_chain_links WHERE domain_tag = 'orders:t' AND seq = 5",
            "UPDATE covenant.audit_trail SET seq = seq - 1 WHERE domain_tag = 'orders:t' AND seq > 5",
            "UPDATE covenant.audit_trail_chain_links SET seq = seq - 1 "
            "WHERE domain_tag = 'orders:t' AND seq > 5",
            "UPDATE covenant.audit_trail_head SET seq = 9 WHERE domain_tag = 'orders:t'",
        ],
        5,
        "link does not follow",
    ),
    "planted row": (
        [
            "INSERT INTO covenant.audit_trail SELECT gen_random_uuid(), domain_tag, 11, event_type, "
            "actor_id, payload, event_time, created_at, entry_hash, entry_hash, 1 "
            "FROM covenant.audit_trail WHERE domain_tag = 'orders:t' AND seq = 10"
        ],
        11,
        "without a chain link",
    ),
    "head moved back": (
        [
            "UPDATE covenant.audit_trail_head h SET seq = 9, entry_hash = l.entry_hash "
            "FROM covenant.audit_trail_chain_links l "
            "WHERE h.domain_tag = 'orders:t' AND l.domain_tag = 'orders:t' AND l.seq = 9"
        ],
        9,
        "head (seq 9) does not match",
    ),
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_superuser_tamper_is_caught_and_quarantines(
    audit: AuditTrail, migrated_url: str, case: str
) -> None:
    statements, first_bad, reason = TAMPER[case]
    _chain(audit)
    assert audit.verify("orders:t", 1).ok
    _superuser(migrated_url, *statements)
    result = audit.verify("orders:t", 1)
    assert not result.ok
    assert result.first_bad_seq == first_bad, result
    assert result.reason is not None and reason in result.reason
    [state] = audit.domains("orders:t")
    assert state.quarantine_state == "open"
    with pytest.raises(errors.AuditQuarantine):
        audit.append("orders:t", "x", ACTOR, {})


def test_truncation_after_a_checkpoint_is_caught(audit: AuditTrail, migrated_url: str) -> None:
    _chain(audit)
    assert audit.checkpoint("orders:t", "service:ops").seq == 10
    _superuser(
        migrated_url,
        "DELETE FROM covenant.audit_trail WHERE domain_tag = 'orders:t' AND seq > 7",
        "DELETE FROM covenant.audit_trail_chain_links WHERE domain_tag = 'orders:t' AND seq > 7",
        "UPDATE covenant.audit_trail_head h SET seq = 7, entry_hash = l.entry_hash "
        "FROM covenant.audit_trail_chain_links l "
        "WHERE h.domain_tag = 'orders:t' AND l.domain_tag = 'orders:t' AND l.seq = 7",
    )
    result = audit.verify("orders:t")
    assert not result.ok and result.first_bad_seq == 10
    assert result.reason is not None and "checkpoint at seq 10" in result.reason


def test_a_detached_partition_is_caught(audit: AuditTrail, migrated_url: str) -> None:
    _chain(audit)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT tableoid::regclass::text FROM covenant.audit_trail "
            "WHERE domain_tag = 'orders:t' LIMIT 1"
        ).fetchone()
        assert row is not None
        conn.execute("SET covenant.ddl = 'tamper'")  # a superuser gets past the DDL guard
        conn.execute(f"ALTER TABLE covenant.audit_trail DETACH PARTITION {row[0]}".encode())
    result = audit.verify("orders:t", 1)
    assert not result.ok and result.first_bad_seq == 1
    assert result.reason is not None and "entry missing" in result.reason


def test_incremental_verification_starts_at_the_last_checkpoint(audit: AuditTrail) -> None:
    _chain(audit, 10)
    audit.checkpoint("orders:t", "service:ops")
    _chain(audit, 5)
    result = audit.verify("orders:t")
    assert result.ok and result.checked == 5
    assert audit.verify("orders:t", 1).checked == 15


# ------------------------------------------------------------------ quarantine


@pytest.fixture
def operators(server: Server, migrated_url: str) -> Iterator[list[AuditTrail]]:
    """Two operator logins, each granted covenant_dba, each with its own adapter."""
    names = [f"cv_op_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    with server.admin() as admin:
        for name in names:
            admin.execute(
                f"CREATE ROLE {name} LOGIN PASSWORD 'op-pw' IN ROLE covenant_dba".encode()
            )
    settings = load_settings({"COVENANT_POOL_MAX_SIZE": "2"})
    connectors = [
        Connector(
            settings,
            database_url=psycopg.conninfo.make_conninfo(
                migrated_url, user=name, password="op-pw", host="127.0.0.1"
            ),
        ).open()
        for name in names
    ]
    try:
        yield [AuditTrail(c) for c in connectors]
    finally:
        for c in connectors:
            c.close()
        with server.admin() as admin:
            for name in names:
                admin.execute(f"DROP OWNED BY {name}".encode())
                admin.execute(f"DROP ROLE {name}".encode())


def test_quarantine_recovery_needs_a_probe_and_two_operators(
    audit: AuditTrail, migrated_url: str, operators: list[AuditTrail]
) -> None:
    op_a, op_b = operators
    _chain(audit)
    original = '{"i": 4}'
    _superuser(
        migrated_url,
        "UPDATE covenant.audit_trail SET payload = '{\"i\": 999}' "
        "WHERE domain_tag = 'orders:t' AND seq = 5",
    )
    assert not audit.verify("orders:t", 1).ok
    # a probe over the broken range fails and the breaker stays open
    assert op_a.approve_probe("orders:t", "service:op-a", last_n=10).state == "open"
    with pytest.raises(errors.InvalidTransition):
        op_a.approve_reset("orders:t", "service:op-a")
    # repaired (restored from the export), the probe passes: half_open
    _superuser(
        migrated_url,
        f"UPDATE covenant.audit_trail SET payload = '{original}' "
        "WHERE domain_tag = 'orders:t' AND seq = 5",
    )
    assert op_a.approve_probe("orders:t", "service:op-a", last_n=10).state == "half_open"
    with pytest.raises(errors.AuditQuarantine):
        audit.append("orders:t", "x", ACTOR, {}), "half_open still refuses appends"
    first = op_a.approve_reset("orders:t", "service:op-a")
    assert (first.state, first.approvals) == ("half_open", 1)
    with pytest.raises(errors.NotAuthorized):
        op_a.approve_reset("orders:t", "service:op-a")
    with pytest.raises(errors.NotAuthorized, match="another login"):
        op_a.approve_reset("orders:t", "0b8c4b0e-6a0b-4d5e-9e7e-3f1f5c3a2b10")  # same login
    second = op_b.approve_reset("orders:t", "0b8c4b0e-6a0b-4d5e-9e7e-3f1f5c3a2b10")
    assert (second.state, second.ok) == ("closed", True)
    assert audit.append("orders:t", "x", ACTOR, {}).seq == 11
    # every transition is on the system chain, with the login behind it, and it verifies
    with psycopg.connect(migrated_url) as conn:
        rows = conn.execute(
            "SELECT event_type, payload->>'login' FROM covenant.audit_trail "
            "WHERE domain_tag = 'system:quarantine' ORDER BY seq"
        ).fetchall()
    assert [r[0] for r in rows] == [
        "quarantine.open",
        "quarantine.probe_failed",
        "quarantine.half_open",
        "quarantine.reset_approved",
        "quarantine.reset_approved",
        "quarantine.closed",
    ]
    assert rows[3][1] != rows[4][1], "two different logins approved"
    assert audit.verify("system:quarantine", 1).ok


def test_a_reset_does_not_close_over_a_break_behind_a_checkpoint(
    audit: AuditTrail, migrated_url: str, operators: list[AuditTrail]
) -> None:
    op_a, op_b = operators
    _chain(audit, 6)
    audit.checkpoint("orders:t", "service:ops")  # seals seq 1..6
    _superuser(
        migrated_url,
        "UPDATE covenant.audit_trail SET payload = '{\"forged\": 1}' "
        "WHERE domain_tag = 'orders:t' AND seq = 2",
    )
    assert audit.verify("orders:t", 1).first_bad_seq == 2
    assert op_a.approve_probe("orders:t", "service:op-a", last_n=1).state == "half_open"
    op_a.approve_reset("orders:t", "service:op-a")
    final = op_b.approve_reset("orders:t", "service:op-b")
    assert (final.state, final.ok) == ("open", False), "seq 2 is still forged"


def test_the_breaker_cannot_be_closed_by_hand(audit: AuditTrail, migrated_url: str) -> None:
    _chain(audit, 3)
    _superuser(
        migrated_url,
        "UPDATE covenant.audit_trail SET payload = '{}' WHERE domain_tag = 'orders:t' AND seq = 2",
    )
    assert not audit.verify("orders:t", 1).ok
    with psycopg.connect(migrated_url) as conn:
        conn.execute("SET ROLE covenant_migrator")
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(
                "UPDATE covenant.audit_quarantine SET state = 'closed' WHERE domain_tag = 'orders:t'"
            )
    assert isinstance(errors.translate(caught.value), errors.InvalidTransition)
    with psycopg.connect(migrated_url) as conn:
        conn.execute("SET ROLE covenant_migrator")
        conn.execute(
            "UPDATE covenant.audit_quarantine SET state = 'half_open' WHERE domain_tag = 'orders:t'"
        )
        conn.commit()
        recorded = conn.execute(
            "SELECT payload->>'to', payload->>'login' FROM covenant.audit_trail "
            "WHERE domain_tag = 'system:quarantine' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert recorded is not None and recorded[0] == "half_open", "a change by hand is recorded"


def test_verifying_past_the_head_is_an_argument_error(audit: AuditTrail) -> None:
    _chain(audit, 2)
    with pytest.raises(errors.InvalidArgument, match="past the head"):
        audit.verify("orders:t", 100)
    assert audit.domains("orders:t")[0].quarantine_state == "closed"
    assert audit.verify("orders:t", 3).ok, "right after the head: nothing to check"


def test_three_failed_verifications_open_the_breaker(audit: AuditTrail, db: Connector) -> None:
    _chain(audit, 2)
    for expected in (1, 2):
        row = db.fetch_one(
            "SELECT * FROM covenant.record_audit_verification_failure(%s, %s, %s)",
            ["orders:t", "service:verifier", "statement timeout"],
        )
        assert row == {"state": "closed", "consecutive_failures": expected}
    assert audit.verify("orders:t", 1).ok  # a pass resets the count
    for _ in range(3):
        row = db.fetch_one(
            "SELECT * FROM covenant.record_audit_verification_failure(%s, %s, %s)",
            ["orders:t", "service:verifier", "statement timeout"],
        )
    assert row == {"state": "open", "consecutive_failures": 3}
    with pytest.raises(errors.AuditQuarantine):
        audit.append("orders:t", "x", ACTOR, {})


# ------------------------------------------------------------------ partitions


def test_partitions_are_idempotent_and_healthy(audit: AuditTrail) -> None:
    health = audit.partition_health()
    assert health.months_ahead >= 2 and health.default_rows == 0
    assert audit.ensure_partitions(2) == 0
    assert audit.ensure_partitions(4) == 2
    assert audit.ensure_partitions(4) == 0
    assert audit.partition_health().months_ahead == 4
    with pytest.raises(errors.InvalidArgument):
        audit.ensure_partitions(-1)


def test_retention_detaches_only_past_months(db: Connector, migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("SET ROLE covenant_migrator")
        conn.execute("SET covenant.ddl = 'test'")
        conn.execute(
            "CREATE TABLE covenant.audit_trail_p200001 PARTITION OF covenant.audit_trail "
            "FOR VALUES FROM ('2000-01-01 00:00:00+00') TO ('2000-02-01 00:00:00+00')"
        )
    current = datetime.now(UTC).strftime("audit_trail_p%Y%m")
    with pytest.raises(errors.InvalidArgument, match="not a past month"):
        db.fetch_one(
            "SELECT * FROM covenant.detach_audit_partition(%s, %s)", [current, "service:ops"]
        )
    with pytest.raises(errors.InvalidArgument, match="not an attached audit partition"):
        db.fetch_one(
            "SELECT * FROM covenant.detach_audit_partition(%s, %s)",
            ["audit_trail_p199901", "service:ops"],
        )
    row = db.fetch_one(
        "SELECT * FROM covenant.detach_audit_partition(%s, %s)",
        ["audit_trail_p200001", "service:ops"],
    )
    assert row is not None and row["row_count"] == 0
    with psycopg.connect(migrated_url) as conn:
        attached = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhrelid = "
            "'covenant.audit_trail_p200001'::regclass"
        ).fetchone()
        triggers = conn.execute(
            "SELECT array_agg(tgname::text ORDER BY tgname) FROM pg_trigger WHERE tgrelid = "
            "'covenant.audit_trail_p200001'::regclass AND tgenabled = 'A'"
        ).fetchone()
    assert attached == (0,), "detached, and still there (never dropped)"
    assert triggers == (["audit_trail_append_only", "audit_trail_no_truncate"],)


def test_builtin_sha256_equals_pgcrypto_digest(
    conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pgcrypto'"
    ).fetchone()
    assert row is not None, "covenant migrate installs pgcrypto"
    digest = f"{row[0]}.digest"
    same = conn.execute(
        f"SELECT bool_and(sha256(convert_to(s, 'UTF8')) = {digest}(convert_to(s, 'UTF8'), 'sha256')) "
        "FROM (VALUES (''), ('covenant.audit.v1'), (repeat('é✓𝄞', 1000))) AS v(s)".encode()
    ).fetchone()
    assert same == (True,)


# ------------------------------------------------------------------ command line


def _cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "covenant.cli", *args, "--database-url", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_export_then_offline_verify(
    audit: AuditTrail, migrated_url: str, tmp_path: Path
) -> None:
    _chain(audit, 12)
    exported = _cli("export", "--domain", "orders:t", url=migrated_url)
    assert exported.returncode == 0, exported.stderr
    path = tmp_path / "chain.jsonl"
    path.write_text(exported.stdout)
    ok = subprocess.run(
        [sys.executable, "-m", "covenant.cli", "verify", "--export", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0 and "ok: 12 entries verified" in ok.stdout
    lines = exported.stdout.splitlines()
    entry = json.loads(lines[6])  # line 0 is the header: this is seq 6
    assert entry["seq"] == 6
    entry["payload"] = '{"i": 600}'  # edit one exported entry's payload
    lines[6] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")
    bad = subprocess.run(
        [sys.executable, "-m", "covenant.cli", "verify", "--export", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "BROKEN at seq 6" in bad.stdout, bad.stdout


def test_cli_verify_checkpoint_partitions_and_quarantine(
    audit: AuditTrail, migrated_url: str
) -> None:
    _chain(audit, 3)
    assert (
        _cli("verify", "--domain", "orders:t", "--from-seq", "1", url=migrated_url).returncode == 0
    )
    cp = _cli("checkpoint", "--domain", "orders:t", "--actor", "service:ops", url=migrated_url)
    assert cp.returncode == 0 and "checkpoint at seq 3" in cp.stdout
    health = _cli("partitions", "health", url=migrated_url)
    assert health.returncode == 0 and "months ahead: 2" in health.stdout
    alarm = _cli("partitions", "health", "--min-months", "6", url=migrated_url)
    assert alarm.returncode == 1 and "ALERT: headroom 2 < 6 months" in alarm.stderr
    assert _cli("partitions", "ensure", "--months-ahead", "6", url=migrated_url).returncode == 0
    assert _cli("quarantine", "status", url=migrated_url).returncode == 0
    _superuser(
        migrated_url,
        "UPDATE covenant.audit_trail SET payload = '{}' WHERE domain_tag = 'orders:t' AND seq = 2",
    )
    broken = _cli("verify", "--domain", "orders:t", "--from-seq", "1", url=migrated_url)
    assert broken.returncode == 1 and "BROKEN at seq 2" in broken.stdout
    status = _cli("quarantine", "status", url=migrated_url)
    assert status.returncode == 1 and "open" in status.stdout
    refused = _cli(
        "quarantine",
        "approve-reset",
        "--domain",
        "orders:t",
        "--operator",
        "service:op",
        url=migrated_url,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().startswith("covenant quarantine: error: INVALID_TRANSITION")


@pytest.mark.parametrize("tag", ["system:quarantine", "system:anything"])
def test_system_domains_are_reserved(audit: AuditTrail, migrated_url: str, tag: str) -> None:
    with pytest.raises(errors.NotAuthorized):
        audit.append(tag, "quarantine.closed", "service:forger", {"domain_tag": "orders:t"})
    with pytest.raises(errors.NotAuthorized):
        audit.append_many(tag, [AuditEntry("quarantine.closed", "service:forger", {})])
    assert _count(migrated_url) == 0


def test_partition_export_carries_and_checks_the_checksum(
    audit: AuditTrail, migrated_url: str, tmp_path: Path
) -> None:
    _chain(audit, 6, "orders:r1")
    _chain(audit, 4, "orders:r2")
    partition = datetime.now(UTC).strftime("audit_trail_p%Y%m")
    exported = _cli("export", "--partition", partition, url=migrated_url)
    assert exported.returncode == 0, exported.stderr
    with psycopg.connect(migrated_url) as conn:
        expected = conn.execute(
            "SELECT encode(sha256(convert_to(string_agg(encode(entry_hash, 'hex'), '' "
            "ORDER BY domain_tag, seq), 'UTF8')), 'hex') FROM covenant.audit_trail"
        ).fetchone()
    trailer = json.loads(exported.stdout.splitlines()[-1])
    assert trailer == {"trailer": True, "count": 10, "checksum": expected[0] if expected else None}
    path = tmp_path / "partition.jsonl"
    path.write_text(exported.stdout)
    ok = subprocess.run(
        [sys.executable, "-m", "covenant.cli", "verify", "--partition-export", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0 and "ok: 10 rows" in ok.stdout
    lines = exported.stdout.splitlines()
    row = json.loads(lines[3])
    row["payload"] = '{"i": 77}'
    lines[3] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    bad = subprocess.run(
        [sys.executable, "-m", "covenant.cli", "verify", "--partition-export", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "hash mismatch at orders:r1 seq 3" in bad.stdout
    refused = _cli("export", "--partition", "audit_trail; DROP TABLE x", url=migrated_url)
    assert refused.returncode == 1 and "not an audit partition name" in refused.stderr


def test_detached_partition_export_matches_the_retention_record(
    db: Connector, migrated_url: str
) -> None:
    from covenant.retention import export_partition, verify_partition_export  # noqa: PLC0415

    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("SET ROLE covenant_migrator")
        conn.execute("SET covenant.ddl = 'test'")
        conn.execute(
            "CREATE TABLE covenant.audit_trail_p200002 PARTITION OF covenant.audit_trail "
            "FOR VALUES FROM ('2000-02-01 00:00:00+00') TO ('2000-03-01 00:00:00+00')"
        )
    db.fetch_one(
        "SELECT * FROM covenant.detach_audit_partition(%s, %s)",
        ["audit_trail_p200002", "service:ops"],
    )
    with psycopg.connect(migrated_url) as conn:
        lines = list(export_partition(conn, "audit_trail_p200002"))
    header = json.loads(lines[0])
    assert header["recorded_rows"] == 0
    assert header["recorded_checksum"] == hashlib.sha256(b"").hexdigest()
    assert verify_partition_export(lines).ok
    forged = json.loads(lines[0])
    forged["recorded_checksum"] = "0" * 64
    assert not verify_partition_export([json.dumps(forged), *lines[1:]]).ok
