"""The credit ledger from Python: typed results over the governed SQL API.

Every mutation is one call of a governed SQL function (docs/ledger.md) in
one transaction, through :class:`covenant.db.Connector`: errors arrive as
the covenant exception of their CV code, and a transaction that meets a
serialization failure or deadlock is retried. The ``mutation_id`` is fixed
before the first attempt (pass your own to make a retry across processes
idempotent), so a retry after an unknown outcome returns the first result
instead of applying the mutation twice.

Amounts are :class:`~covenant.money.MicroUSD` (exact ints, never float);
values above 2**53 round-trip exactly.

Every public method is timed and counted by operation and outcome
(``covenant_ledger_operation_seconds``, ``covenant_ledger_operations_total``)
by one class decorator, :func:`covenant.metrics.ledger_operations`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, field_validator

from covenant import metrics
from covenant.catalogue import (
    REPUTATION_RANK,
    AccountKind,
    LotSourceType,
    ReputationEventType,
    ReputationState,
)
from covenant.db import Conn, Connector
from covenant.errors import ReservationUnknown
from covenant.money import BasisPoints, MicroUSD


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)


def _micro(value: Any) -> MicroUSD:
    return MicroUSD(value)


class Balance(_Model):
    """``covenant.account_balance``: allocated = available + expired + reserved + consumed."""

    available: MicroUSD
    reserved: MicroUSD
    consumed: MicroUSD
    allocated: MicroUSD
    expired: MicroUSD

    _coerce = field_validator(
        "available", "reserved", "consumed", "allocated", "expired", mode="before"
    )(_micro)


class Lot(_Model):
    account_id: uuid.UUID
    lot_id: uuid.UUID
    source_type: LotSourceType
    original_allocation: MicroUSD
    balance: MicroUSD
    reserved: MicroUSD
    consumed: MicroUSD
    status: str
    expires_at: datetime | None

    _coerce = field_validator(
        "original_allocation", "balance", "reserved", "consumed", mode="before"
    )(_micro)


class Reservation(_Model):
    account_id: uuid.UUID
    reservation_id: uuid.UUID
    amount_micro: MicroUSD
    status: str
    expires_at: datetime
    consumed_micro: MicroUSD
    released_micro: MicroUSD
    mutation_id: uuid.UUID
    resolved_by: uuid.UUID | None

    _coerce = field_validator("amount_micro", "consumed_micro", "released_micro", mode="before")(
        _micro
    )


class Share(_Model):
    account_id: uuid.UUID
    bps: BasisPoints

    _coerce = field_validator("bps", mode="before")(BasisPoints)


class Part(_Model):
    account_id: uuid.UUID
    amount_micro: MicroUSD

    _coerce = field_validator("amount_micro", mode="before")(_micro)


class ReputationOutcome(_Model):
    agent_id: uuid.UUID
    score_bps: BasisPoints
    state: ReputationState
    previous_state: ReputationState
    event_count: int

    _coerce = field_validator("score_bps", mode="before")(BasisPoints)

    @property
    def downgraded(self) -> bool:
        return REPUTATION_RANK[self.state] < REPUTATION_RANK[self.previous_state]


class InvariantCheck(_Model):
    """A row of ``covenant.reconcile()``."""

    invariant_id: str
    ok: bool
    failure_code: str | None
    detail: dict[str, Any]


class Reconciliation(_Model):
    checks: list[InvariantCheck]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[InvariantCheck]:
        return [c for c in self.checks if not c.ok]


class Invariant(_Model):
    """A row of the invariant catalogue ``covenant.invariants``."""

    invariant_id: str
    name: str
    statement: str
    scope: str
    kind: str
    enforced_by: list[str]
    constraint_names: list[str]
    error_code: str | None
    failure_code: str | None
    fairness: str | None


def _mid(mutation_id: uuid.UUID | None) -> uuid.UUID:
    return mutation_id or uuid.uuid4()


@metrics.ledger_operations
class Ledger:
    """The governed ledger API with typed results.

    Every mutation takes the ``actor_id`` performing it (see
    :func:`covenant.governance.resolve_actor_id`) and an optional
    ``mutation_id``; pass ``conn=`` to make it part of your own transaction
    (then covenant neither commits nor retries).
    """

    def __init__(self, connector: Connector) -> None:
        self.db = connector

    # -- mutations -----------------------------------------------------------

    def create_account(
        self,
        account_id: uuid.UUID,
        kind: AccountKind | str,
        *,
        actor_id: str,
        mutation_id: uuid.UUID | None = None,
        conn: Conn | None = None,
    ) -> uuid.UUID:
        self.db.execute(
            "SELECT covenant.create_account(p_account_id => %s, p_kind => %s, p_actor_id => %s, "
            "p_mutation_id => %s)",
            [account_id, str(kind), actor_id, _mid(mutation_id)],
            conn=conn,
        )
        return account_id

    def set_receivable_bound(
        self,
        account_id: uuid.UUID,
        bound: MicroUSD | int | None,
        *,
        actor_id: str,
        mutation_id: uuid.UUID | None = None,
        conn: Conn | None = None,
    ) -> None:
        self.db.execute(
            "SELECT covenant.set_receivable_bound(%s, %s, %s, %s)",
            [
                account_id,
                None if bound is None else int(MicroUSD(bound)),
                actor_id,
                _mid(mutation_id),
            ],
            conn=conn,
        )

    def allocate(
        self,
        account_id: uuid.UUID,
        amount: MicroUSD | int,
        source_type: LotSourceType | str = LotSourceType.DEPOSIT,
        *,
        actor_id: str,
        expires_at: datetime | None = None,
        mutation_id: uuid.UUID | None = None,
        conn: Conn | None = None,
    ) -> uuid.UUID:
        """Open a lot (``deposit`` or ``grant``); returns its id."""
        row = self.db.fetch_one(
            "SELECT covenant.allocate_credits(p_account_id => %s, p_amount_micro => %s, "
            "p_source_type => %s, p_actor_id => %s, p_mutation_id => %s, "
            "p_expires_at => %s) AS lot_id",
            [
                account_id,
                int(MicroUSD(amount)),
                str(source_type),
                actor_id,
                _mid(mutation_id),
                expires_at,
            ],
            conn=conn,
        )
        assert row is not None
        return uuid.UUID(str(row["lot_id"]))

    def reserve(
        self,
        account_id: uuid.UUID,
        amount: MicroUSD | int,
        ttl: timedelta,
        *,
        actor_id: str,
        mutation_id: uuid.UUID | None = None,
        conn: Conn | None = None,
    ) -> uuid.UUID:
        """Set credits aside for a job (earliest-expiring lots first); the reservation id."""
        row = self.db.fetch_one(
            "SELECT covenant.reserve_credits(p_account_id => %s, p_amount_micro => %s, "
            "p_ttl => %s, p_actor_id => %s, p_mutation_id => %s) AS reservation_id",
            [account_id, int(MicroUSD(amount)), ttl, actor_id, _mid(mutation_id)],
            conn=conn,
        )
        assert row is not None
        return uuid.UUID(str(row["reservation_id"]))

    def finalize(
        self,
        reservation_id: uuid.UUID,
        actual: MicroUSD | int,
        *,
        actor_id: str,
        mutation_id: uuid.UUID | None = None,
        conn: Conn | None = None,
    ) -> Reservation:
        """Consume ``actual`` (≤ reserved), return the rest; the resolved reservation."""
        return self._settle(
            "SELECT covenant.finalize_reservation(p_reservation_id => %s, "
            "p_actual_micro => %s, p_actor_id => %s, p_mutation_id => %s)",
            [reservation_id, int(MicroUSD(actual)), actor_id, _mid(mutation_id)],
            reservation_id,
            conn,
        )

    def release(
        self,
        reservation_id: uuid.UUID,
        *,
        actor_id: str,
        mutation_id: uuid.UUID | None = None,
        conn: Conn | None = None,
    ) -> Reservation:
        return self._settle(
            "SELECT covenant.release_reservation(p_reservation_id => %s, p_actor_id => %s, "
            "p_mutation_id => %s)",
            [reservation_id, actor_id, _mid(mutation_id)],
            reservation_id,
            conn,
        )

    def finalize_usage_report(
        self,
        jti: uuid.UUID,
        reservation_id: uuid.UUID,
        actual: MicroUSD | int,
        *,
        actor_id: str,
        conn: Conn | None = None,
    ) -> Reservation:
        """Finalize from a verified usage report; its ``jti`` is redeemed once (USAGE_REPLAY).

        :func:`covenant.usage.verify_usage_report` verifies the report first."""
        return self.db.run(
            lambda c: apply_usage_report(c, jti, reservation_id, actual, actor_id), conn=conn
        )

    def _settle(
        self, query: LiteralString, params: list[Any], reservation_id: uuid.UUID, conn: Conn | None
    ) -> Reservation:
        """Resolve a reservation and read it back in the same transaction.

        The params (the mutation id among them) are fixed before the first
        attempt, so a retry is a replay."""

        def work(c: Conn) -> Reservation:
            c.execute(query, params)
            return read_reservation(c, reservation_id)

        return self.db.run(work, conn=conn)

    def expire(
        self, *, now: datetime | None = None, limit: int = 1000, conn: Conn | None = None
    ) -> int:
        """Run the expiry sweep once; how many reservations it expired."""
        row = self.db.fetch_one(
            "SELECT covenant.expire_reservations(coalesce(%s::timestamptz, now()), %s) AS n",
            [now, limit],
            conn=conn,
        )
        assert row is not None
        return int(row["n"])

    def transfer(
        self,
        from_account: uuid.UUID,
        to_account: uuid.UUID,
        amount: MicroUSD | int,
        *,
        actor_id: str,
        mutation_id: uuid.UUID | None = None,
        conn: Conn | None = None,
    ) -> uuid.UUID:
        """Move available credits; returns the mutation id."""
        mid = _mid(mutation_id)
        self.db.execute(
            "SELECT covenant.transfer_credits(p_from_account => %s, p_to_account => %s, "
            "p_amount_micro => %s, p_actor_id => %s, p_mutation_id => %s)",
            [from_account, to_account, int(MicroUSD(amount)), actor_id, mid],
            conn=conn,
        )
        return mid

    def distribute(
        self,
        from_account: uuid.UUID,
        amount: MicroUSD | int,
        shares: Mapping[uuid.UUID, BasisPoints | int] | Iterable[Share],
        *,
        actor_id: str,
        mutation_id: uuid.UUID | None = None,
        conn: Conn | None = None,
    ) -> list[Part]:
        """Split ``amount`` by basis points (largest remainder); the parts per account."""
        items = (
            [Share(account_id=a, bps=BasisPoints(b)) for a, b in shares.items()]
            if isinstance(shares, Mapping)
            else list(shares)
        )
        payload = [{"account_id": str(s.account_id), "bps": int(s.bps)} for s in items]
        mid = _mid(mutation_id)

        def work(c: Conn) -> list[Part]:
            c.execute(
                "SELECT covenant.distribute_revenue(p_from_account => %s, p_amount_micro => %s, "
                "p_shares => %s, p_actor_id => %s, p_mutation_id => %s)",
                [from_account, int(MicroUSD(amount)), Jsonb(payload), actor_id, mid],
            )
            rows = c.execute(
                "SELECT account_id, sum(amount_micro) AS amount_micro FROM covenant.credit_ledger "
                "WHERE mutation_id = %s AND entry_type = 'revenue_in' GROUP BY account_id",
                [mid],
            ).fetchall()
            got = {r["account_id"]: r["amount_micro"] for r in rows}
            return [
                Part(account_id=s.account_id, amount_micro=got.get(s.account_id, 0)) for s in items
            ]

        return self.db.run(work, conn=conn)

    def record_reputation_event(
        self,
        agent_id: uuid.UUID,
        event_type: ReputationEventType | str,
        observation: BasisPoints | int | None,
        *,
        actor_id: str,
        task_type: str | None = None,
        payload: Mapping[str, Any] | None = None,
        mutation_id: uuid.UUID | None = None,
        conn: Conn | None = None,
    ) -> ReputationOutcome:
        row = self.db.fetch_one(
            "SELECT * FROM covenant.record_reputation_event(p_agent_id => %s, p_event_type => %s, "
            "p_observation_bps => %s, p_actor_id => %s, p_mutation_id => %s, p_task_type => %s, "
            "p_payload => %s)",
            [
                agent_id,
                str(event_type),
                None if observation is None else int(BasisPoints(observation)),
                actor_id,
                _mid(mutation_id),
                task_type,
                Jsonb(dict(payload or {})),
            ],
            conn=conn,
        )
        assert row is not None
        return ReputationOutcome.model_validate(row)

    # -- reads ---------------------------------------------------------------

    def balance(self, account_id: uuid.UUID, *, conn: Conn | None = None) -> Balance:
        row = self.db.fetch_one(
            "SELECT * FROM covenant.account_balance(%s)", [account_id], conn=conn
        )
        assert row is not None
        return Balance.model_validate(row)

    def lots(self, account_id: uuid.UUID, *, conn: Conn | None = None) -> list[Lot]:
        rows = self.db.fetch_all(
            "SELECT account_id, lot_id, source_type, original_allocation, balance, reserved, "
            "consumed, status, expires_at FROM covenant.credit_lots WHERE account_id = %s "
            "ORDER BY created_at, lot_id",
            [account_id],
            conn=conn,
        )
        return [Lot.model_validate(r) for r in rows]

    def reservation(self, reservation_id: uuid.UUID, *, conn: Conn | None = None) -> Reservation:
        return self.db.run(lambda c: read_reservation(c, reservation_id), conn=conn)

    def reputation(
        self, agent_id: uuid.UUID, *, conn: Conn | None = None
    ) -> ReputationState | None:
        row = self.db.fetch_one(
            "SELECT state FROM covenant.agent_reputation WHERE agent_id = %s", [agent_id], conn=conn
        )
        return None if row is None else ReputationState(row["state"])

    def reconcile(
        self, *, sweep_grace: timedelta = timedelta(minutes=5), conn: Conn | None = None
    ) -> Reconciliation:
        rows = self.db.fetch_all("SELECT * FROM covenant.reconcile(%s)", [sweep_grace], conn=conn)
        return Reconciliation(checks=[InvariantCheck.model_validate(r) for r in rows])

    def invariants(self, *, conn: Conn | None = None) -> list[Invariant]:
        rows = self.db.fetch_all(
            "SELECT * FROM covenant.invariants ORDER BY substr(invariant_id, 3)::integer", conn=conn
        )
        return [Invariant.model_validate(r) for r in rows]


def read_reservation(c: psycopg.Connection[Any], reservation_id: uuid.UUID) -> Reservation:
    """One reservation, read on ``c`` (any row factory); ReservationUnknown if there is none."""
    with c.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT account_id, reservation_id, amount_micro, status, expires_at, consumed_micro, "
            "released_micro, mutation_id, resolved_by FROM covenant.credit_reservations "
            "WHERE reservation_id = %s",
            [reservation_id],
        ).fetchone()
    if row is None:
        raise ReservationUnknown(f"no reservation {reservation_id}")
    return Reservation.model_validate(row)


def apply_usage_report(
    c: psycopg.Connection[Any],
    jti: uuid.UUID,
    reservation_id: uuid.UUID,
    actual: MicroUSD | int,
    actor_id: str,
) -> Reservation:
    """``covenant.finalize_usage_report`` and the reservation it resolved, on ``c``.

    The transaction is the caller's (the adapter's retried one, or
    :mod:`covenant.usage`'s savepoint in a caller's transaction)."""
    c.execute(
        "SELECT covenant.finalize_usage_report(p_jti => %s, p_reservation_id => %s, "
        "p_actual_micro => %s, p_actor_id => %s)",
        [jti, reservation_id, int(MicroUSD(actual)), actor_id],
    )
    return read_reservation(c, reservation_id)
