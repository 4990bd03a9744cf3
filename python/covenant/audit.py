"""The audit trail from Python: typed receipts, retries, and group commit.

Every call goes to the SQL API (``covenant.append_audit_entry``,
``append_audit_entries``, ``verify_audit_chain``, ...) through
:class:`covenant.db.Connector`, which retries a transaction on 40001/40P01
(3 tries, backoff, counted) and maps SQLSTATEs to covenant exceptions.

Idempotent retries: :meth:`AuditTrail.append` fixes the ``entry_id`` and the
``event_time`` before the first attempt, so every retry sends the same entry
and a retry after an unknown outcome returns the first receipt with
``duplicate = True``.

:class:`GroupCommitAppender` lets many threads append concurrently: the
entries waiting for one domain are sent as one ``append_audit_entries`` call
in one transaction, and each caller returns only after the transaction that
holds its entry has committed (a durable acknowledgement).

Appends and verifications are timed in :mod:`covenant.metrics`
(``covenant_audit_append_seconds``, ``covenant_audit_verify_seconds``) and,
with telemetry on, traced as ``covenant.audit.append`` / ``covenant.audit.verify``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from covenant import metrics, telemetry
from covenant.db import Conn, Connector
from covenant.errors import CovenantError


class AuditReceipt(BaseModel):
    """What an append returns (``covenant.audit_receipt``)."""

    model_config = ConfigDict(frozen=True)

    entry_id: uuid.UUID
    domain_tag: str
    seq: int
    previous_hash: bytes
    entry_hash: bytes
    created_at: datetime
    duplicate: bool


class Verification(BaseModel):
    model_config = ConfigDict(frozen=True)

    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str | None


class Checkpoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    domain_tag: str
    seq: int | None
    entry_hash: bytes | None
    created: bool
    reason: str | None


class PartitionHealth(BaseModel):
    model_config = ConfigDict(frozen=True)

    months_ahead: int
    default_rows: int
    newest_partition: str | None
    partitions: int


class QuarantineState(BaseModel):
    """A domain whose quarantine breaker is not closed (``covenant.audit_quarantine``)."""

    model_config = ConfigDict(frozen=True)

    domain_tag: str
    state: str
    reason: str | None
    first_bad_seq: int | None
    opened_at: datetime | None
    since: datetime  # the last change of the breaker


class DomainState(BaseModel):
    """A row of ``covenant.audit_domains``."""

    model_config = ConfigDict(frozen=True)

    domain_tag: str
    head_seq: int
    head_hash: bytes
    updated_at: datetime
    last_checkpoint_seq: int | None
    quarantine_state: str
    quarantine_reason: str | None
    first_bad_seq: int | None


class ProbeResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    state: str
    ok: bool
    reason: str | None


class ResetResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    state: str
    approvals: int
    ok: bool | None
    reason: str | None


@dataclass(frozen=True)
class AuditEntry:
    """One entry to append; ``entry_id`` and ``event_time`` are fixed at creation."""

    event_type: str
    actor_id: str
    payload: Any
    entry_id: uuid.UUID = field(default_factory=uuid.uuid4)
    event_time: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def new(
        cls,
        event_type: str,
        actor_id: str,
        payload: Any,
        entry_id: uuid.UUID | None = None,
        event_time: datetime | None = None,
    ) -> AuditEntry:
        """An entry whose id and time are fixed now unless given (retries resend them)."""
        return cls(
            event_type, actor_id, payload, entry_id or uuid.uuid4(), event_time or datetime.now(UTC)
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "entry_id": str(self.entry_id),
            "event_type": self.event_type,
            "actor_id": self.actor_id,
            "payload": self.payload,
            "event_time": self.event_time.isoformat(),
        }


class AuditTrail:
    """The audit trail's SQL API with typed results."""

    def __init__(self, connector: Connector) -> None:
        self.db = connector

    def append(
        self,
        domain_tag: str,
        event_type: str,
        actor_id: str,
        payload: Any,
        *,
        entry_id: uuid.UUID | None = None,
        event_time: datetime | None = None,
        conn: Conn | None = None,
    ) -> AuditReceipt:
        entry = AuditEntry.new(event_type, actor_id, payload, entry_id, event_time)
        with (
            telemetry.span(
                "covenant.audit.append",
                domain_tag=domain_tag,
                event_type=event_type,
                actor_id=actor_id,
                kind="single",
                entries=1,
            ),
            metrics.observe_append("single", 1),
        ):
            row = self.db.fetch_one(
                "SELECT * FROM covenant.append_audit_entry(%s, %s, %s, %s, %s, %s)",
                [
                    domain_tag,
                    entry.entry_id,
                    entry.event_type,
                    entry.actor_id,
                    Jsonb(entry.payload),
                    entry.event_time,
                ],
                conn=conn,
            )
        assert row is not None
        return AuditReceipt.model_validate(row)

    def append_many(
        self, domain_tag: str, entries: Sequence[AuditEntry], *, conn: Conn | None = None
    ) -> list[AuditReceipt]:
        with (
            telemetry.span(
                "covenant.audit.append", domain_tag=domain_tag, kind="batch", entries=len(entries)
            ),
            metrics.observe_append("batch", len(entries)),
        ):
            rows = self.db.fetch_all(
                "SELECT * FROM covenant.append_audit_entries(%s, %s)",
                [domain_tag, Jsonb([e.as_json() for e in entries])],
                conn=conn,
            )
        return [AuditReceipt.model_validate(r) for r in rows]

    def verify(
        self, domain_tag: str, from_seq: int | None = None, *, conn: Conn | None = None
    ) -> Verification:
        started = time.perf_counter()
        ok: bool | None = None
        with telemetry.span("covenant.audit.verify", domain_tag=domain_tag, from_seq=from_seq) as s:
            try:
                row = self.db.fetch_one(
                    "SELECT * FROM covenant.verify_audit_chain(%s, %s)",
                    [domain_tag, from_seq],
                    conn=conn,
                )
                assert row is not None
                result = Verification.model_validate(row)
                ok = result.ok
                s.set(ok=result.ok, checked=result.checked)
            finally:
                metrics.observe_verification("database", started, ok)
        return result

    def checkpoint(self, domain_tag: str, actor_id: str) -> Checkpoint:
        row = self.db.fetch_one(
            "SELECT * FROM covenant.create_audit_checkpoint(%s, %s)", [domain_tag, actor_id]
        )
        assert row is not None
        return Checkpoint.model_validate(row)

    def ensure_partitions(self, months_ahead: int = 2) -> int:
        row = self.db.fetch_one(
            "SELECT covenant.create_audit_partitions(%s) AS created", [months_ahead]
        )
        assert row is not None
        return int(row["created"])

    def partition_health(self, *, conn: Conn | None = None) -> PartitionHealth:
        row = self.db.fetch_one("SELECT * FROM covenant.audit_partition_health()", conn=conn)
        assert row is not None
        return PartitionHealth.model_validate(row)

    def quarantines(self, *, conn: Conn | None = None) -> list[QuarantineState]:
        """Every domain whose breaker is open or half_open (a closed one has no entry here)."""
        rows = self.db.fetch_all(
            "SELECT domain_tag, state, reason, first_bad_seq, opened_at, updated_at AS since "
            "FROM covenant.audit_quarantine WHERE state <> 'closed' ORDER BY domain_tag",
            conn=conn,
        )
        return [QuarantineState.model_validate(r) for r in rows]

    def domains(self, domain_tag: str | None = None) -> list[DomainState]:
        rows = self.db.fetch_all(
            "SELECT * FROM covenant.audit_domains WHERE %s::text IS NULL OR domain_tag = %s "
            "ORDER BY domain_tag",
            [domain_tag, domain_tag],
        )
        return [DomainState.model_validate(r) for r in rows]

    def approve_probe(self, domain_tag: str, operator_id: str, last_n: int = 1000) -> ProbeResult:
        row = self.db.fetch_one(
            "SELECT * FROM covenant.approve_audit_probe(%s, %s, %s)",
            [domain_tag, operator_id, last_n],
        )
        assert row is not None
        return ProbeResult.model_validate(row)

    def approve_reset(self, domain_tag: str, operator_id: str) -> ResetResult:
        row = self.db.fetch_one(
            "SELECT * FROM covenant.approve_audit_reset(%s, %s)", [domain_tag, operator_id]
        )
        assert row is not None
        return ResetResult.model_validate(row)


@dataclass
class _Pending:
    entry: AuditEntry
    future: Future[AuditReceipt]


@dataclass
class GroupCommitStats:
    batches: int = 0
    entries: int = 0
    fallbacks: int = 0  # batches refused whole, then appended one by one

    @property
    def mean_batch(self) -> float:
        return self.entries / self.batches if self.batches else 0.0


class GroupCommitAppender:
    """Batch concurrent appends per domain; acknowledge each after its commit.

    ``append()`` blocks until the transaction holding the entry has committed
    and returns its receipt, or raises the entry's own error. While one batch
    of a domain is being committed, new entries for it queue up and go in the
    next batch (up to ``max_batch``). A batch refused as a whole (one bad
    entry makes ``append_audit_entries`` refuse all) is retried entry by
    entry, so one caller's bad input never fails another's append.
    """

    def __init__(self, connector: Connector, *, max_batch: int = 1000, workers: int | None = None):
        if max_batch < 1 or max_batch > 10_000:
            raise ValueError("max_batch must be between 1 and 10000")
        self.db = connector
        self.max_batch = max_batch
        self.stats = GroupCommitStats()
        self._lock = threading.Lock()
        self._queues: dict[str, list[_Pending]] = defaultdict(list)
        self._draining: set[str] = set()
        self._closed = False
        self._executor = ThreadPoolExecutor(
            max_workers=workers or connector.settings.pool_max_size,
            thread_name_prefix="covenant-group-commit",
        )

    def submit(
        self,
        domain_tag: str,
        event_type: str,
        actor_id: str,
        payload: Any,
        *,
        entry_id: uuid.UUID | None = None,
        event_time: datetime | None = None,
    ) -> Future[AuditReceipt]:
        entry = AuditEntry.new(event_type, actor_id, payload, entry_id, event_time)
        pending = _Pending(entry, Future())
        with self._lock:
            if self._closed:
                raise RuntimeError("the appender is closed")
            self._queues[domain_tag].append(pending)
            if domain_tag not in self._draining:
                self._draining.add(domain_tag)
                self._executor.submit(self._drain, domain_tag)
        return pending.future

    def append(
        self,
        domain_tag: str,
        event_type: str,
        actor_id: str,
        payload: Any,
        *,
        entry_id: uuid.UUID | None = None,
        event_time: datetime | None = None,
    ) -> AuditReceipt:
        return self.submit(
            domain_tag, event_type, actor_id, payload, entry_id=entry_id, event_time=event_time
        ).result()

    def close(self) -> None:
        """Stop accepting entries, finish the queued ones, stop the workers."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=True)

    def __enter__(self) -> GroupCommitAppender:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _drain(self, domain_tag: str) -> None:
        while True:
            with self._lock:
                queue = self._queues[domain_tag]
                batch = queue[: self.max_batch]
                del queue[: self.max_batch]
                if not batch:
                    self._draining.discard(domain_tag)
                    return
            self._commit(domain_tag, batch)

    def _commit(self, domain_tag: str, batch: list[_Pending]) -> None:
        payload = Jsonb([p.entry.as_json() for p in batch])
        try:
            with metrics.observe_append("batch", len(batch)):
                rows = self.db.fetch_all(
                    "SELECT * FROM covenant.append_audit_entries(%s, %s)", [domain_tag, payload]
                )
        except CovenantError as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            with self._lock:
                self.stats.fallbacks += 1
            for pending in batch:
                self._commit(domain_tag, [pending])
            return
        except Exception as exc:
            for pending in batch:
                pending.future.set_exception(exc)
            return
        with self._lock:
            self.stats.batches += 1
            self.stats.entries += len(batch)
        # the transaction has committed: acknowledge
        for pending, row in zip(batch, rows, strict=True):
            pending.future.set_result(AuditReceipt.model_validate(row))
