"""Prometheus metrics, ``covenant_*``, on covenant's own registry.

Every metric lives on :data:`REGISTRY`, not on prometheus_client's global
default, so an application decides whether to expose it (``covenant serve``
does, at ``/metrics``; an application with its own exporter can add it with
``prometheus_client.REGISTRY.register(...)`` or serve :func:`render`) and
tests read it in isolation. docs/observability.md lists every series.

Two kinds of series:

* **events**, fed by the adapters as they happen: audit append latency
  (:mod:`covenant.audit`), verification time (:mod:`covenant.audit`,
  :mod:`covenant.verify`), serialization retries and their exhaustion
  (:class:`covenant.db.Connector`), ledger operations by outcome
  (:func:`ledger_operations` on :class:`covenant.ledger.Ledger`), usage
  reports by outcome (:func:`record_usage_report`);
* **database state**, refreshed by :func:`refresh_database_gauges` (``serve``
  calls it on every scrape): quarantine states, partition headroom,
  DEFAULT-partition rows, lock waits.

Labels are bounded: operation names, outcome codes (``ok``, a CV code, a
fixed name), SQLSTATEs, lock types. The one exception is ``domain_tag`` on
``covenant_audit_quarantine_state``, which carries only domains whose
breaker is not closed — a handful, set by operators' and verifiers' actions,
never by request input.

Lock wait: the domain lock is taken inside the SQL append
(``pg_advisory_xact_lock`` in ``covenant._append_audit_entries``), where the
adapter cannot time it on its own, so it is sampled from ``pg_locks``
(``waitstart``, PostgreSQL 14+) at refresh time: how many backends of this
database wait for a lock now, and the longest current wait, by lock type.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from covenant import __version__, telemetry
from covenant.errors import CovenantError

if TYPE_CHECKING:
    from covenant.audit import PartitionHealth, QuarantineState
    from covenant.db import Conn, Connector

__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "DatabaseState",
    "ledger_operations",
    "observe_append",
    "observe_verification",
    "outcome_of",
    "record_reconciliation",
    "record_refresh_failure",
    "record_retry",
    "record_usage_report",
    "refresh_database_gauges",
    "render",
    "sample",
]

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)

REGISTRY: Final = CollectorRegistry()
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LONG = (0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

# Quarantine breaker states as gauge values (closed domains are not exported).
QUARANTINE_VALUES: Final = {"closed": 0, "half_open": 1, "open": 2}

# Lock types PostgreSQL reports in pg_locks; anything else is counted as "other".
LOCK_TYPES: Final = (
    "advisory",
    "relation",
    "extend",
    "page",
    "tuple",
    "transactionid",
    "virtualxid",
    "object",
    "other",
)


BUILD: Final = Info("covenant_build", "The covenant package version.", registry=REGISTRY)
BUILD.info({"version": __version__})

APPEND_SECONDS: Final = Histogram(
    "covenant_audit_append_seconds",
    "Time of an audit append call (transaction and retries included), by kind.",
    ["kind"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
APPENDS: Final = Counter(
    "covenant_audit_appends",
    "Audit append calls by kind and outcome (ok, a CV code, or error).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
APPENDED_ENTRIES: Final = Counter(
    "covenant_audit_appended_entries",
    "Audit entries committed (a batch counts each of its entries).",
    ["kind"],
    registry=REGISTRY,
)
VERIFY_SECONDS: Final = Histogram(
    "covenant_audit_verify_seconds",
    "Time of a chain verification, in the database or of an export, by outcome.",
    ["source", "outcome"],
    buckets=_LONG,
    registry=REGISTRY,
)
RETRIES: Final = Counter(
    "covenant_serialization_retries",
    "Transactions retried after a serialization failure (40001) or deadlock (40P01).",
    ["sqlstate"],
    registry=REGISTRY,
)
RETRIES_EXHAUSTED: Final = Counter(
    "covenant_serialization_retries_exhausted",
    "Transactions that failed with 40001/40P01 on their last allowed try.",
    ["sqlstate"],
    registry=REGISTRY,
)
LEDGER_OPERATIONS: Final = Counter(
    "covenant_ledger_operations",
    "Ledger adapter calls by operation and outcome (ok, a CV code, or error).",
    ["operation", "outcome"],
    registry=REGISTRY,
)
LEDGER_SECONDS: Final = Histogram(
    "covenant_ledger_operation_seconds",
    "Time of a ledger adapter call (transaction and retries included), by operation.",
    ["operation"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
USAGE_REPORTS: Final = Counter(
    "covenant_usage_reports",
    "Verified usage reports by outcome: ok, or the UsageReportError code.",
    ["outcome"],
    registry=REGISTRY,
)
RECONCILE_RUNS: Final = Counter(
    "covenant_reconcile_runs",
    "Reconciliations run by `covenant serve`: ok, failed (an invariant fails) or error.",
    ["outcome"],
    registry=REGISTRY,
)
RECONCILE_FAILING: Final = Gauge(
    "covenant_reconcile_failing_invariants",
    "Invariants failing at the last completed reconciliation.",
    registry=REGISTRY,
)
RECONCILE_LAST_RUN: Final = Gauge(
    "covenant_reconcile_last_run_timestamp_seconds",
    "Unix time the last reconciliation completed (0: never).",
    registry=REGISTRY,
)
QUARANTINE_STATE: Final = Gauge(
    "covenant_audit_quarantine_state",
    "Quarantine breaker of a domain whose breaker is not closed: 1 half_open, 2 open.",
    ["domain_tag"],
    registry=REGISTRY,
)
QUARANTINED_DOMAINS: Final = Gauge(
    "covenant_audit_quarantined_domains",
    "Domains whose quarantine breaker is in this state.",
    ["state"],
    registry=REGISTRY,
)
PARTITION_HEADROOM: Final = Gauge(
    "covenant_audit_partition_headroom_months",
    "Future months that already have an audit partition (alarm below 2).",
    registry=REGISTRY,
)
DEFAULT_PARTITION_ROWS: Final = Gauge(
    "covenant_audit_default_partition_rows",
    "Rows in the audit DEFAULT partition (alarm above 0).",
    registry=REGISTRY,
)
LOCK_WAITERS: Final = Gauge(
    "covenant_lock_waiters",
    "Backends of covenant's database waiting for a lock at the last refresh (pg_locks).",
    ["locktype"],
    registry=REGISTRY,
)
LOCK_WAIT_LONGEST: Final = Gauge(
    "covenant_lock_wait_longest_seconds",
    "Longest lock wait in progress at the last refresh (pg_locks.waitstart).",
    ["locktype"],
    registry=REGISTRY,
)
DATABASE_UP: Final = Gauge(
    "covenant_database_up",
    "1 if the last refresh of the database gauges succeeded, else 0.",
    registry=REGISTRY,
)
REFRESH_ERRORS: Final = Counter(
    "covenant_metrics_refresh_errors",
    "Refreshes of the database gauges that failed or timed out.",
    registry=REGISTRY,
)

# The series of bounded label sets exist (at 0) before anything happens, so
# an alert on rate() or absence works from the first scrape.
for _state in ("half_open", "open"):
    QUARANTINED_DOMAINS.labels(_state).set(0)
for _locktype in LOCK_TYPES:
    LOCK_WAITERS.labels(_locktype).set(0)
    LOCK_WAIT_LONGEST.labels(_locktype).set(0)
for _sqlstate in ("40001", "40P01"):
    RETRIES.labels(_sqlstate)
    RETRIES_EXHAUSTED.labels(_sqlstate)


def outcome_of(exc: BaseException | None) -> str:
    """``ok``; the CV code of a covenant error (or its name for 40001/40P01); else ``error``."""
    if exc is None:
        return "ok"
    if isinstance(exc, CovenantError):
        return exc.code or exc.name or "error"
    return "error"


def render() -> bytes:
    """The text exposition of :data:`REGISTRY`."""
    return generate_latest(REGISTRY)


def sample(name: str, **labels: str) -> float:
    """The current value of one series (0.0 when it has no sample yet)."""
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


# -- events ----------------------------------------------------------------------


def record_retry(sqlstate: str | None, *, exhausted: bool) -> None:
    """One retried transaction, or one that ran out of tries (from Connector.run)."""
    (RETRIES_EXHAUSTED if exhausted else RETRIES).labels(sqlstate or "unknown").inc()


@contextmanager
def observe_append(kind: str, entries: int) -> Iterator[None]:
    """Time an append call of ``kind`` (single or batch) and count its outcome."""
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        APPEND_SECONDS.labels(kind).observe(time.perf_counter() - started)
        APPENDS.labels(kind, outcome_of(exc)).inc()
        raise
    APPEND_SECONDS.labels(kind).observe(time.perf_counter() - started)
    APPENDS.labels(kind, "ok").inc()
    APPENDED_ENTRIES.labels(kind).inc(entries)


def observe_verification(source: str, started: float, ok: bool | None) -> None:
    """A verification that began at ``started`` (perf_counter) ended: ok, broken or error."""
    outcome = "error" if ok is None else "ok" if ok else "broken"
    VERIFY_SECONDS.labels(source, outcome).observe(time.perf_counter() - started)


def record_usage_report(code: str | None) -> None:
    """A usage report was verified (``None``) or refused with ``code``."""
    from covenant.usage import UsageErrorCode  # noqa: PLC0415 - usage imports this module

    if code is None:
        outcome = "ok"
    elif code in UsageErrorCode.__members__:
        outcome = code
    else:
        outcome = "other"
    USAGE_REPORTS.labels(outcome).inc()


def record_reconciliation(failing: int | None, *, finished_at: float | None = None) -> None:
    """A reconciliation finished with ``failing`` invariants failing (``None``: it errored)."""
    if failing is None:
        RECONCILE_RUNS.labels("error").inc()
        return
    RECONCILE_RUNS.labels("failed" if failing else "ok").inc()
    RECONCILE_FAILING.set(failing)
    RECONCILE_LAST_RUN.set(time.time() if finished_at is None else finished_at)


def _measured(operation: str, method: Callable[P, R]) -> Callable[P, R]:
    span_name = f"covenant.ledger.{operation}"
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        attributes: dict[str, Any] = {}
        if telemetry.enabled():
            try:
                bound = signature.bind_partial(*args, **kwargs)
            except TypeError:  # a bad call: the method itself raises it, counted and traced
                pass
            else:
                attributes = {k: v for k, v in bound.arguments.items() if k != "self"}
        with telemetry.span(span_name, **attributes) as span:
            started = time.perf_counter()
            outcome = "ok"
            try:
                return method(*args, **kwargs)
            except BaseException as exc:
                outcome = outcome_of(exc)
                raise
            finally:
                LEDGER_SECONDS.labels(operation).observe(time.perf_counter() - started)
                LEDGER_OPERATIONS.labels(operation, outcome).inc()
                span.set(outcome=outcome)

    return wrapper


def ledger_operations(cls: C) -> C:
    """Class decorator: time and count every public method of the ledger adapter.

    One wrapper for the whole adapter, so a new method is measured without
    anyone remembering to; the ``operation`` label is the method's name (a
    bounded set) and the outcome ``ok`` or the error's CV code. With
    telemetry on, each call is also a ``covenant.ledger.<method>`` span.
    """
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(member):
            setattr(cls, name, _measured(name, member))
    return cls


def record_refresh_failure() -> None:
    """A refresh of the database gauges failed or timed out: database down, gauges stale."""
    DATABASE_UP.set(0)
    REFRESH_ERRORS.inc()


# -- database state --------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseState:
    """What one refresh read: the gauges' values, for /health/governance too."""

    partitions: PartitionHealth
    quarantines: list[QuarantineState]
    lock_waits: Mapping[str, tuple[int, float]] = field(default_factory=dict)


_LOCK_WAITS = """
SELECT l.locktype, count(*)::integer AS waiters,
       coalesce(extract(epoch FROM max(pg_catalog.clock_timestamp() - l.waitstart)), 0)::float8
           AS longest_s
FROM pg_catalog.pg_locks AS l
JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
WHERE NOT l.granted AND a.datname = pg_catalog.current_database()
GROUP BY l.locktype
"""


def refresh_database_gauges(db: Connector, *, conn: Conn | None = None) -> DatabaseState:
    """Read partition health, quarantines and lock waits; set the gauges; return them.

    Pass ``conn`` to read in your own transaction (``serve`` does, with a
    statement timeout). Errors propagate and leave the gauges as they were;
    the caller reports them with :func:`record_refresh_failure`.
    """
    # covenant.audit imports this module (append latency), so not at the top.
    from covenant.audit import AuditTrail  # noqa: PLC0415

    audit = AuditTrail(db)
    partitions = audit.partition_health(conn=conn)
    quarantines = audit.quarantines(conn=conn)
    rows = db.fetch_all(_LOCK_WAITS, conn=conn)
    waits: dict[str, tuple[int, float]] = {}
    for row in rows:
        locktype = row["locktype"] if row["locktype"] in LOCK_TYPES else "other"
        count, longest = waits.get(locktype, (0, 0.0))
        waits[locktype] = (count + int(row["waiters"]), max(longest, float(row["longest_s"])))
    PARTITION_HEADROOM.set(partitions.months_ahead)
    DEFAULT_PARTITION_ROWS.set(partitions.default_rows)
    QUARANTINE_STATE.clear()
    counts = {"half_open": 0, "open": 0}
    for q in quarantines:
        QUARANTINE_STATE.labels(q.domain_tag).set(QUARANTINE_VALUES.get(q.state, 2))
        counts[q.state] = counts.get(q.state, 0) + 1
    for state, count in counts.items():
        QUARANTINED_DOMAINS.labels(state).set(count)
    for locktype in LOCK_TYPES:
        count, longest = waits.get(locktype, (0, 0.0))
        LOCK_WAITERS.labels(locktype).set(count)
        LOCK_WAIT_LONGEST.labels(locktype).set(longest)
    DATABASE_UP.set(1)
    return DatabaseState(partitions=partitions, quarantines=quarantines, lock_waits=waits)
