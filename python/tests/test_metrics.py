"""Prometheus metrics: the adapters move the right series; the refresh reads the database."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import psycopg
import pytest

from covenant import errors, metrics
from covenant.audit import AuditEntry, AuditTrail, GroupCommitAppender
from covenant.db import Conn, Connector
from covenant.ledger import Ledger
from covenant.verify import export_domain, verify_export

SVC = "service:billing"
ACTOR = "service:metrics-test"


def delta(name: str, **labels: str) -> Callable[[], float]:
    """How much a series moved since this call."""
    before = metrics.sample(name, **labels)
    return lambda: metrics.sample(name, **labels) - before


def domain() -> str:
    return f"metrics:{uuid.uuid4().hex[:12]}"


def quarantine(connector: Connector, tag: str) -> None:
    """Three failed verifications in a row open the breaker."""
    for _ in range(3):
        connector.execute(
            "SELECT * FROM covenant.record_audit_verification_failure(%s, %s, 'test')",
            [tag, ACTOR],
        )


@pytest.fixture(scope="module")
def audit(connector: Connector) -> AuditTrail:
    return AuditTrail(connector)


def test_the_registry_is_covenants_own() -> None:
    from prometheus_client import REGISTRY as GLOBAL  # noqa: PLC0415

    assert GLOBAL.get_sample_value("covenant_database_up") is None
    text = metrics.render().decode()
    assert "# TYPE covenant_audit_append_seconds histogram" in text
    assert 'covenant_build_info{version="' in text


def test_appends_move_the_append_series(audit: AuditTrail, connector: Connector) -> None:
    tag = domain()
    single = delta("covenant_audit_append_seconds_count", kind="single")
    single_ok = delta("covenant_audit_appends_total", kind="single", outcome="ok")
    batch = delta("covenant_audit_append_seconds_count", kind="batch")
    batch_entries = delta("covenant_audit_appended_entries_total", kind="batch")

    audit.append(tag, "order.created", ACTOR, {"n": 1})
    audit.append_many(tag, [AuditEntry.new("order.updated", ACTOR, {"n": i}) for i in range(3)])
    with GroupCommitAppender(connector, max_batch=10) as appender:
        appender.append(tag, "order.closed", ACTOR, {})

    assert single() == 1
    assert single_ok() == 1
    assert batch() == 2  # append_many and the group-commit batch
    assert batch_entries() == 4


def test_a_refused_append_counts_its_cv_code(audit: AuditTrail, connector: Connector) -> None:
    tag = domain()
    quarantine(connector, tag)
    refused = delta("covenant_audit_appends_total", kind="single", outcome="CV001")
    timed = delta("covenant_audit_append_seconds_count", kind="single")
    with pytest.raises(errors.AuditQuarantine):
        audit.append(tag, "x", ACTOR, {})
    assert refused() == 1
    assert timed() == 1


def test_ledger_operations_by_operation_and_outcome(ledger: Ledger) -> None:
    reserved = delta("covenant_ledger_operations_total", operation="reserve", outcome="ok")
    short = delta("covenant_ledger_operations_total", operation="reserve", outcome="CV010")
    timed = delta("covenant_ledger_operation_seconds_count", operation="reserve")
    allocated = delta("covenant_ledger_operations_total", operation="allocate", outcome="ok")

    account = ledger.create_account(uuid.uuid4(), "user", actor_id=SVC)
    ledger.allocate(account, 100, "deposit", actor_id=SVC)
    ledger.reserve(account, 40, timedelta(hours=1), actor_id=SVC)
    with pytest.raises(errors.InsufficientBalance):
        ledger.reserve(account, 1_000, timedelta(hours=1), actor_id=SVC)

    assert reserved() == 1
    assert short() == 1
    assert timed() == 2
    assert allocated() == 1
    # the account id is never a label value
    assert str(account) not in metrics.render().decode()


def test_every_public_ledger_method_is_measured(ledger: Ledger) -> None:
    unknown = delta("covenant_ledger_operations_total", operation="balance", outcome="CV017")
    with pytest.raises(errors.AccountUnknown):
        ledger.balance(uuid.uuid4())
    assert unknown() == 1
    assert Ledger.reserve.__name__ == "reserve"  # functools.wraps keeps the method's identity


def _raise_sqlstate(conn: Conn, sqlstate: str) -> None:
    conn.execute(
        f"DO $$ BEGIN RAISE EXCEPTION 'induced' USING ERRCODE = '{sqlstate}'; END $$".encode()
    )


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
def test_retries_and_their_exhaustion_are_counted(connector: Connector, sqlstate: str) -> None:
    retries = delta("covenant_serialization_retries_total", sqlstate=sqlstate)
    exhausted = delta("covenant_serialization_retries_exhausted_total", sqlstate=sqlstate)
    stats_before = (connector.stats.retries, connector.stats.exhausted)

    calls = 0

    def flaky(conn: Conn) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            _raise_sqlstate(conn, sqlstate)
        return "done"

    assert connector.run(flaky) == "done"
    assert (retries(), exhausted()) == (1, 0)

    with pytest.raises((errors.SerializationFailure, errors.DeadlockDetected)):
        connector.run(lambda conn: _raise_sqlstate(conn, sqlstate))
    attempts = connector.settings.retry_max_attempts
    assert (retries(), exhausted()) == (1 + attempts - 1, 1)
    # the connector's own counters agree
    assert (connector.stats.retries, connector.stats.exhausted) == (
        stats_before[0] + attempts,
        stats_before[1] + 1,
    )


def test_verification_time_in_the_database_and_of_an_export(
    audit: AuditTrail, connector: Connector
) -> None:
    tag = domain()
    for i in range(3):
        audit.append(tag, "e", ACTOR, {"i": i})
    in_db = delta("covenant_audit_verify_seconds_count", source="database", outcome="ok")
    offline = delta("covenant_audit_verify_seconds_count", source="export", outcome="ok")
    broken = delta("covenant_audit_verify_seconds_count", source="export", outcome="broken")

    assert audit.verify(tag, 1).ok
    with connector.pool.connection() as conn:
        lines = list(export_domain(conn, tag, 1))
    assert verify_export(io.StringIO("\n".join(lines))).ok
    assert not verify_export(io.StringIO(lines[0] + "\n" + lines[2])).ok

    assert (in_db(), offline(), broken()) == (1, 1, 1)


def test_usage_report_outcomes_are_bounded() -> None:
    ok = delta("covenant_usage_reports_total", outcome="ok")
    replay = delta("covenant_usage_reports_total", outcome="REPLAY")
    other = delta("covenant_usage_reports_total", outcome="other")
    metrics.record_usage_report(None)
    metrics.record_usage_report("REPLAY")
    metrics.record_usage_report("made-up code from somewhere")
    assert (ok(), replay(), other()) == (1, 1, 1)
    assert "made-up" not in metrics.render().decode()


def test_quarantine_gauge_follows_the_breaker(audit: AuditTrail, connector: Connector) -> None:
    tag = domain()
    audit.append(tag, "e", ACTOR, {})
    metrics.refresh_database_gauges(connector)
    assert (
        metrics.REGISTRY.get_sample_value("covenant_audit_quarantine_state", {"domain_tag": tag})
        is None
    )  # closed domains are not exported

    quarantine(connector, tag)
    state = metrics.refresh_database_gauges(connector)
    assert metrics.sample("covenant_audit_quarantine_state", domain_tag=tag) == 2
    assert metrics.sample("covenant_audit_quarantined_domains", state="open") >= 1
    assert [q.state for q in state.quarantines if q.domain_tag == tag] == ["open"]

    # the probe passes (nothing is broken): half_open
    assert audit.approve_probe(tag, "service:operator-a").state == "half_open"
    metrics.refresh_database_gauges(connector)
    assert metrics.sample("covenant_audit_quarantine_state", domain_tag=tag) == 1
    assert metrics.sample("covenant_audit_quarantined_domains", state="half_open") >= 1
    assert metrics.sample("covenant_database_up") == 1


def test_partition_gauges(audit: AuditTrail, connector: Connector) -> None:
    metrics.refresh_database_gauges(connector)
    health = audit.partition_health()
    assert metrics.sample("covenant_audit_partition_headroom_months") == health.months_ahead
    assert metrics.sample("covenant_audit_default_partition_rows") == health.default_rows

    audit.ensure_partitions(health.months_ahead + 2)
    state = metrics.refresh_database_gauges(connector)
    assert state.partitions.months_ahead == health.months_ahead + 2
    assert metrics.sample("covenant_audit_partition_headroom_months") == health.months_ahead + 2


@pytest.fixture
def held_advisory_lock(module_db_url: str) -> Iterator[None]:
    """Session 1 holds an advisory lock; session 2 waits for it until the test ends."""
    key = 727_272
    holder = psycopg.connect(module_db_url, autocommit=True)
    waiter = psycopg.connect(module_db_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", [key])
    blocked = threading.Thread(
        target=lambda: waiter.execute("SELECT pg_advisory_lock(%s)", [key]), daemon=True
    )
    blocked.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            row = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            if row and row[0]:
                break
            time.sleep(0.02)
        yield
    finally:
        holder.execute("SELECT pg_advisory_unlock(%s)", [key])
        blocked.join(timeout=30)
        waiter.close()
        holder.close()


def test_lock_waits_are_sampled_from_pg_locks(
    connector: Connector, held_advisory_lock: None
) -> None:
    state = metrics.refresh_database_gauges(connector)
    assert state.lock_waits["advisory"][0] >= 1
    assert metrics.sample("covenant_lock_waiters", locktype="advisory") >= 1
    assert metrics.sample("covenant_lock_wait_longest_seconds", locktype="advisory") >= 0
    # every bounded lock type is exported, waiting or not
    assert (
        metrics.REGISTRY.get_sample_value("covenant_lock_waiters", {"locktype": "tuple"})
        is not None
    )


def test_lock_waits_drop_back_to_zero(connector: Connector) -> None:
    metrics.refresh_database_gauges(connector)
    assert metrics.sample("covenant_lock_waiters", locktype="advisory") == 0


def test_a_failed_refresh_marks_the_database_down() -> None:
    errors_before = metrics.sample("covenant_metrics_refresh_errors_total")
    metrics.record_refresh_failure()
    assert metrics.sample("covenant_database_up") == 0
    assert metrics.sample("covenant_metrics_refresh_errors_total") == errors_before + 1
