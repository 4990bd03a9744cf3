"""The credit ledger against a model: random operation sequences through the SQL API.

* a hypothesis state machine drives allocations, reservations (long and
  already-expired TTLs), finalizations, releases, expiry sweeps, transfers,
  distributions and idempotent replays; a Python model predicts every
  outcome (success, or the exact CV code) and every account's available and
  reserved credits;
* after every step the raw tables are checked: lots conserve and are never
  negative, lots equal the sum of their journal lines, each mutation has
  exactly one audit entry on its account's chain, reserved equals pending,
  and ``covenant.reconcile()`` holds (all but I-13, treasury adequacy, which
  grants without a funded treasury legitimately break);
* a refused call changes nothing;
* ``covenant.split_by_bps`` against the largest-remainder method, and an
  amount above 2**60 through a whole reservation cycle.

Amounts are Python ints throughout, many of them above 2**53.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any, ClassVar

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from psycopg.types.json import Jsonb

from covenant import errors

Conn = psycopg.Connection[tuple[Any, ...]]

BIGINT_MAX = 2**63 - 1
BILLING = "service:billing"
SETTLEMENT = "service:settlement"
NOT_A_SERVICE = "00000000-0000-4000-8000-000000000001"  # a person: may not allocate

CREATE_ACCOUNT = (
    "SELECT covenant.create_account(p_account_id => %(a)s, p_kind => %(kind)s, "
    "p_actor_id => %(actor)s, p_mutation_id => %(m)s)"
)
ALLOCATE = (
    "SELECT covenant.allocate_credits(%(a)s, %(amount)s::bigint, %(source)s, %(actor)s, %(m)s, "
    "%(expires)s::timestamptz)"
)
RESERVE = (
    "SELECT covenant.reserve_credits(p_account_id => %(a)s, p_amount_micro => %(amount)s::bigint, "
    "p_ttl => %(ttl)s::interval, p_actor_id => %(actor)s, p_mutation_id => %(m)s)"
)
FINALIZE = "SELECT covenant.finalize_reservation(%(r)s, %(actual)s::bigint, %(actor)s, %(m)s)"
RELEASE = (
    "SELECT covenant.release_reservation(p_reservation_id => %(r)s, p_actor_id => %(actor)s, "
    "p_mutation_id => %(m)s)"
)
EXPIRE_DEFAULT = "SELECT covenant.expire_reservations()"
EXPIRE_LIMIT = "SELECT covenant.expire_reservations(now(), %(limit)s::integer)"
TRANSFER = (
    "SELECT covenant.transfer_credits(p_from_account => %(from)s, p_to_account => %(to)s, "
    "p_amount_micro => %(amount)s::bigint, p_actor_id => %(actor)s, p_mutation_id => %(m)s)"
)
DISTRIBUTE = (
    "SELECT covenant.distribute_revenue(%(from)s, %(amount)s::bigint, %(shares)s::jsonb, "
    "%(actor)s, %(m)s)"
)

FINGERPRINT = """
SELECT
    (SELECT count(*) FROM covenant.credit_ledger),
    (SELECT count(*) FROM covenant.ledger_mutations),
    (SELECT count(*) FROM covenant.audit_trail_chain_links),
    (SELECT count(*) FROM covenant.credit_lots),
    (SELECT count(*) FROM covenant.credit_reservations),
    (SELECT count(*) FROM covenant.credit_reservations WHERE status = 'pending'),
    (SELECT coalesce(sum(balance), 0) FROM covenant.credit_lots),
    (SELECT coalesce(sum(reserved), 0) FROM covenant.credit_lots),
    (SELECT coalesce(sum(consumed), 0) FROM covenant.credit_lots)
"""


# ------------------------------------------------------------------ helpers


def call(conn: Conn, query: str, params: dict[str, Any]) -> tuple[Any, str | None]:
    """Run one governed call in its own transaction: (its value, None) or (None, CV code).

    Any error that is not a covenant domain error (an internal error, a
    deadlock, a constraint violation) propagates and fails the test.
    """
    try:
        row = conn.execute(query.encode(), params).fetchone()
    except psycopg.Error as exc:
        err = errors.translate(exc)
        if isinstance(err, errors.CovenantError) and err.code:
            return None, err.code
        raise
    return (row[0] if row else None), None


def fingerprint(conn: Conn) -> tuple[Any, ...]:
    row = conn.execute(FINGERPRINT.encode()).fetchone()
    assert row is not None
    return tuple(row)


def split_by_bps(amount: int, bps: Sequence[int]) -> list[int]:
    """The largest-remainder split, as documented for covenant.split_by_bps."""
    base = [amount * b // 10000 for b in bps]
    rem = [amount * b % 10000 for b in bps]
    leftover = amount - sum(base)
    for i in sorted(range(len(bps)), key=lambda i: (-rem[i], i))[:leftover]:
        base[i] += 1
    return base


def assert_ledger_consistent(conn: Conn, skip: Sequence[str] = ("I-13",)) -> None:
    """Check the ledger's invariants from the raw tables (all rows of the database)."""
    bad = conn.execute(
        b"SELECT account_id, lot_id, original_allocation, balance, reserved, consumed "
        b"FROM covenant.credit_lots "
        b"WHERE balance::numeric + reserved + consumed <> original_allocation "
        b"OR balance < 0 OR reserved < 0 OR consumed < 0 LIMIT 5"
    ).fetchall()
    assert bad == [], f"lots that do not conserve: {bad}"

    bad = conn.execute(
        b"""
        WITH j AS (
            SELECT x.account_id, x.lot_id,
                sum(x.amount_micro::numeric * t.allocation_sign) AS a,
                sum(x.amount_micro::numeric * t.balance_sign) AS b,
                sum(x.amount_micro::numeric * t.reserved_sign) AS r,
                sum(x.amount_micro::numeric * t.consumed_sign) AS c
            FROM covenant.credit_ledger AS x
            JOIN covenant.ledger_entry_types AS t USING (entry_type)
            GROUP BY x.account_id, x.lot_id
        )
        SELECT l.account_id, l.lot_id, j.lot_id, l.original_allocation, j.a, l.balance, j.b,
            l.reserved, j.r, l.consumed, j.c
        FROM covenant.credit_lots AS l
        FULL JOIN j ON l.account_id = j.account_id AND l.lot_id = j.lot_id
        WHERE l.lot_id IS NULL OR j.lot_id IS NULL OR j.a <> l.original_allocation
            OR j.b <> l.balance OR j.r <> l.reserved OR j.c <> l.consumed
        LIMIT 5
        """
    ).fetchall()
    assert bad == [], f"lots that differ from their journal lines: {bad}"

    bad = conn.execute(
        b"""
        SELECT m.mutation_id, m.operation, count(k.entry_id)
        FROM covenant.ledger_mutations AS m
        LEFT JOIN covenant.audit_trail_chain_links AS k
            ON k.entry_id = m.mutation_id AND k.domain_tag = 'account:' || m.account_id::text
        GROUP BY m.mutation_id, m.operation
        HAVING count(k.entry_id) <> 1
        LIMIT 5
        """
    ).fetchall()
    assert bad == [], f"mutations without exactly one audit entry on their chain: {bad}"

    bad = conn.execute(
        b"""
        SELECT k.domain_tag, k.seq, k.entry_id FROM covenant.audit_trail_chain_links AS k
        WHERE k.domain_tag LIKE 'account:%'
          AND NOT EXISTS (
              SELECT FROM covenant.ledger_mutations AS m
              WHERE m.mutation_id = k.entry_id AND 'account:' || m.account_id::text = k.domain_tag
          )
        LIMIT 5
        """
    ).fetchall()
    assert bad == [], f"account: audit entries without their mutation: {bad}"

    bad = conn.execute(
        b"""
        SELECT coalesce(h.account_id, p.account_id), h.held, p.pending
        FROM (
            SELECT account_id, sum(reserved) AS held FROM covenant.credit_lots
            GROUP BY account_id
        ) AS h
        FULL JOIN (
            SELECT account_id, sum(amount_micro) AS pending FROM covenant.credit_reservations
            WHERE status = 'pending' GROUP BY account_id
        ) AS p ON h.account_id = p.account_id
        WHERE coalesce(h.held, 0) <> coalesce(p.pending, 0)
        LIMIT 5
        """
    ).fetchall()
    assert bad == [], f"accounts whose reserved differs from their pending reservations: {bad}"

    rows = conn.execute(
        b"SELECT invariant_id, ok, failure_code, detail FROM covenant.reconcile()"
    ).fetchall()
    assert len(rows) >= 7, rows
    failing = [r for r in rows if not r[1] and r[0] not in skip]
    assert failing == [], f"reconcile() fails: {failing}"


# ------------------------------------------------------------------ the model


@dataclass
class Reservation:
    account: uuid.UUID
    amount: int
    short: bool  # TTL of 1 microsecond: overdue from the next transaction on
    state: str = "pending"
    consumed: int = 0


@dataclass
class Call:
    query: str
    params: dict[str, Any]
    result: Any
    varied: str | None  # the parameter to change for an IDEMPOTENCY_CONFLICT


# small amounts, amounts around 2**53, and amounts far above it
AMOUNTS = st.one_of(
    st.integers(1, 10**6),
    st.integers(2**53 - 3, 2**53 + 3),
    st.integers(2**53, 2**60),
)
KINDS = ("user", "agent", "platform", "user")


class LedgerMachine(RuleBasedStateMachine):
    db_url: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        assert self.db_url, "the module fixture sets LedgerMachine.db_url"
        self.conn: Conn = psycopg.connect(self.db_url, autocommit=True)
        self.accounts: list[uuid.UUID] = []
        self.available: dict[uuid.UUID, int] = {}
        self.reservations: dict[uuid.UUID, Reservation] = {}  # in creation order
        self.last: Call | None = None

    # -- plumbing

    def expect(
        self, query: str, params: dict[str, Any], expected: str | None, varied: str | None = None
    ) -> Any:
        """Make the call; assert its outcome is `expected` (None: success).

        A refused call must leave the fingerprint unchanged.
        """
        before = fingerprint(self.conn)
        value, code = call(self.conn, query, params)
        name = query.split("(", maxsplit=1)[0].removeprefix("SELECT covenant.")
        event(f"{name}: {code or 'ok'}")
        assert code == expected, f"{name} {params}: got {code}, model {expected}"
        if code is not None:
            assert fingerprint(self.conn) == before, f"refused {code} changed the ledger"
        else:
            self.last = Call(query, params, value, varied)
        return value

    def pick_amount(self, data: st.DataObject, available: int) -> int:
        """Mostly a positive amount within `available`; sometimes (or when nothing is left) more."""
        over = available < BIGINT_MAX and (available == 0 or data.draw(st.integers(0, 4)) == 0)
        if over:
            top = min(BIGINT_MAX, available + 2**55)
            return data.draw(st.just(available + 1) | st.integers(available + 1, top))
        cap = max(1, min(available, BIGINT_MAX))
        return data.draw(st.integers(1, cap) | st.just(cap))

    @staticmethod
    def actor(data: st.DataObject) -> str:
        return data.draw(
            st.sampled_from(["service:agent-runner", "service:jobs.v2"]) | st.uuids().map(str)
        )

    # -- setup

    @initialize(funding=st.lists(AMOUNTS, min_size=len(KINDS), max_size=len(KINDS)))
    def open_accounts(self, funding: list[int]) -> None:
        # leftovers of earlier runs (overdue reservations) out of the way, so
        # the sweep counts below are this run's own
        call(self.conn, EXPIRE_DEFAULT, {})
        for kind, amount in zip(KINDS, funding, strict=True):
            account = uuid.uuid4()
            self.expect(
                CREATE_ACCOUNT,
                {"a": account, "kind": kind, "actor": BILLING, "m": uuid.uuid4()},
                None,
            )
            self.accounts.append(account)
            self.available[account] = 0
            params = {
                "a": account,
                "amount": amount,
                "source": "deposit",
                "actor": BILLING,
                "m": uuid.uuid4(),
                "expires": None,
            }
            self.expect(ALLOCATE, params, None)
            self.available[account] = amount

    def teardown(self) -> None:
        try:
            call(self.conn, EXPIRE_DEFAULT, {})
        finally:
            self.conn.close()

    # -- rules

    @rule(data=st.data(), amount=AMOUNTS, source=st.sampled_from(["deposit", "grant"]))
    def allocate(self, data: st.DataObject, amount: int, source: str) -> None:
        account = data.draw(st.sampled_from(self.accounts))
        expires = data.draw(
            st.none() | st.integers(1, 3650).map(lambda d: datetime.now(UTC) + timedelta(days=d))
        )
        actor = data.draw(st.sampled_from([BILLING, BILLING, BILLING, NOT_A_SERVICE]))
        params = {
            "a": account,
            "amount": amount,
            "source": source,
            "actor": actor,
            "m": uuid.uuid4(),
            "expires": expires,
        }
        if not actor.startswith("service:"):
            self.expect(ALLOCATE, params, "CV005")
            return
        lot = self.expect(ALLOCATE, params, None, varied="amount")
        assert isinstance(lot, uuid.UUID)
        self.available[account] += amount

    @rule(data=st.data(), short=st.integers(0, 3).map(lambda n: n == 0))
    def reserve(self, data: st.DataObject, short: bool) -> None:
        account = data.draw(st.sampled_from(self.accounts))
        self.reserve_one(data, account, self.pick_amount(data, self.available[account]), short)

    @rule(data=st.data(), n=st.integers(2, 3))
    def reserve_expired_burst(self, data: st.DataObject, n: int) -> None:
        """Several already-overdue reservations, so that a limited sweep has to choose."""
        account = data.draw(st.sampled_from(self.accounts))
        for _ in range(n):
            amount = data.draw(st.integers(1, 10**6))
            self.reserve_one(data, account, amount, short=True)

    def reserve_one(
        self, data: st.DataObject, account: uuid.UUID, amount: int, short: bool
    ) -> None:
        params = {
            "a": account,
            "amount": amount,
            "ttl": "1 microsecond" if short else "1 hour",
            "actor": self.actor(data),
            "m": uuid.uuid4(),
        }
        if amount > self.available[account]:
            self.expect(RESERVE, params, "CV010")
            return
        rid = self.expect(RESERVE, params, None, varied="amount")
        assert isinstance(rid, uuid.UUID) and rid not in self.reservations
        self.available[account] -= amount
        self.reservations[rid] = Reservation(account, amount, short)

    def pick_reservation(self, data: st.DataObject) -> tuple[uuid.UUID, Reservation | None]:
        """Mostly a reservation that can still be settled; sometimes any, or an unknown id."""
        live = [rid for rid, r in self.reservations.items() if r.state == "pending" and not r.short]
        choice = data.draw(st.integers(0, 9))
        if choice == 0:
            return uuid.uuid4(), None
        rid = data.draw(st.sampled_from(live if live and choice > 3 else list(self.reservations)))
        return rid, self.reservations[rid]

    @staticmethod
    def settle_error(res: Reservation | None) -> str | None:
        if res is None:
            return "CV014"  # RESERVATION_UNKNOWN
        if res.state != "pending":
            return "CV013"  # INVALID_TRANSITION: resolved once
        if res.short:
            return "CV015"  # RESERVATION_EXPIRED: only the sweep resolves it now
        return None

    @precondition(lambda self: bool(self.reservations))
    @rule(data=st.data())
    def finalize(self, data: st.DataObject) -> None:
        rid, res = self.pick_reservation(data)
        reserved = res.amount if res else 10**6
        if data.draw(st.integers(0, 3)) == 0:
            top = min(BIGINT_MAX, reserved + 2**40)
            actual = data.draw(st.just(reserved + 1) | st.integers(reserved + 1, top))
        else:
            actual = data.draw(st.integers(0, reserved) | st.sampled_from([0, reserved]))
        params = {"r": rid, "actual": actual, "actor": self.actor(data), "m": uuid.uuid4()}
        expected = self.settle_error(res)
        if expected is None and actual > reserved:
            expected = "CV011"  # BUDGET_OVERSPEND
        self.expect(FINALIZE, params, expected, varied="actual")
        if expected is None:
            assert res is not None
            res.state, res.consumed = "finalized", actual
            self.available[res.account] += res.amount - actual

    @precondition(lambda self: bool(self.reservations))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        rid, res = self.pick_reservation(data)
        params = {"r": rid, "actor": self.actor(data), "m": uuid.uuid4()}
        expected = self.settle_error(res)
        self.expect(RELEASE, params, expected)
        if expected is None:
            assert res is not None
            res.state = "released"
            self.available[res.account] += res.amount

    @precondition(
        lambda self: any(r.short and r.state == "pending" for r in self.reservations.values())
    )
    @rule(limit=st.none() | st.integers(1, 3))
    def expire(self, limit: int | None) -> None:
        due = [r for r in self.reservations.values() if r.state == "pending" and r.short]
        if limit is None:
            count = self.expect(EXPIRE_DEFAULT, {}, None)
        else:
            count = self.expect(EXPIRE_LIMIT, {"limit": limit}, None)
            due = due[:limit]  # oldest first: creation order
        assert count == len(due)
        for res in due:
            res.state = "expired"
            self.available[res.account] += res.amount

    @rule(data=st.data())
    def transfer(self, data: st.DataObject) -> None:
        source = data.draw(st.sampled_from(self.accounts))
        if data.draw(st.integers(0, 14)) == 0:
            target = source  # a transfer needs two different accounts
        else:
            target = data.draw(st.sampled_from([a for a in self.accounts if a != source]))
        amount = self.pick_amount(data, self.available[source])
        params = {
            "from": source,
            "to": target,
            "amount": amount,
            "actor": self.actor(data),
            "m": uuid.uuid4(),
        }
        if target == source:
            self.expect(TRANSFER, params, "CV004")
        elif amount > self.available[source]:
            self.expect(TRANSFER, params, "CV010")
        else:
            self.expect(TRANSFER, params, None, varied="amount")
            self.available[source] -= amount
            self.available[target] += amount

    @rule(data=st.data(), valid=st.integers(0, 4).map(bool))
    def distribute(self, data: st.DataObject, valid: bool) -> None:
        source = data.draw(st.sampled_from(self.accounts))
        recipients = data.draw(
            st.lists(st.sampled_from(self.accounts), min_size=1, max_size=4, unique=True)
        )
        n = len(recipients) - 1
        cuts = sorted(data.draw(st.lists(st.integers(0, 10000), min_size=n, max_size=n)))
        bps = [b - a for a, b in zip([0, *cuts], [*cuts, 10000], strict=True)]
        if not valid:
            i = data.draw(st.integers(0, len(bps) - 1))
            delta = data.draw(st.integers(-bps[i], 10000 - bps[i]).filter(lambda d: d != 0))
            bps[i] += delta
        amount = self.pick_amount(data, self.available[source])
        shares = Jsonb(
            [{"account_id": str(a), "bps": b} for a, b in zip(recipients, bps, strict=True)]
        )
        params = {
            "from": source,
            "amount": amount,
            "shares": shares,
            "actor": SETTLEMENT,
            "m": uuid.uuid4(),
        }
        if sum(bps) != 10000:
            self.expect(DISTRIBUTE, params, "CV016")  # BPS_SUM_INVALID, checked first
        elif amount > self.available[source]:
            self.expect(DISTRIBUTE, params, "CV010")
        else:
            self.expect(DISTRIBUTE, params, None, varied="amount")
            self.available[source] -= amount
            for account, part in zip(recipients, split_by_bps(amount, bps), strict=True):
                self.available[account] += part

    @precondition(lambda self: self.last is not None)
    @rule(conflict=st.booleans())
    def replay(self, conflict: bool) -> None:
        """The last applied call again: the same answer and no change, or CV002 when it differs."""
        last = self.last
        assert last is not None
        if last.query in (EXPIRE_DEFAULT, EXPIRE_LIMIT, CREATE_ACCOUNT):
            return
        before = fingerprint(self.conn)
        params = dict(last.params)
        expected: str | None = None
        if conflict and last.varied is not None:
            value = params[last.varied]
            params[last.varied] = value + 1 if value < BIGINT_MAX else value - 1
            expected = "CV002"  # IDEMPOTENCY_CONFLICT
        value, code = call(self.conn, last.query, params)
        event(f"replay: {code or 'ok'}")
        assert code == expected, (
            f"replay of {last.query.split('(', maxsplit=1)[0]}: {code}, not {expected}"
        )
        if code is None:
            assert value == last.result
        assert fingerprint(self.conn) == before, "a replay changed the ledger"

    # -- invariants

    @invariant()
    def ledger_consistent(self) -> None:
        assert_ledger_consistent(self.conn)

    @invariant()
    def matches_model(self) -> None:
        if not self.accounts:
            return
        rows = self.conn.execute(
            b"SELECT account_id, sum(balance) FILTER (WHERE expires_at IS NULL OR expires_at > now()), "
            b"sum(reserved) FROM covenant.credit_lots WHERE account_id = ANY(%s) GROUP BY account_id",
            [self.accounts],
        ).fetchall()
        got = {a: (int(b or 0), int(r or 0)) for a, b, r in rows}
        for account in self.accounts:
            held = sum(
                r.amount
                for r in self.reservations.values()
                if r.account == account and r.state == "pending"
            )
            assert got.get(account, (0, 0)) == (self.available[account], held), account
        if self.reservations:
            rows = self.conn.execute(
                b"SELECT reservation_id, account_id, amount_micro, status, consumed_micro "
                b"FROM covenant.credit_reservations WHERE reservation_id = ANY(%s)",
                [list(self.reservations)],
            ).fetchall()
            assert {r[0]: tuple(r[1:]) for r in rows} == {
                rid: (r.account, r.amount, r.state, r.consumed)
                for rid, r in self.reservations.items()
            }


LedgerMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TestLedgerMachine = LedgerMachine.TestCase


@pytest.fixture(scope="module", autouse=True)
def _ledger_machine_db(module_db_url: str) -> Iterator[None]:
    """The state machine runs on this module's database (nothing else writes to it meanwhile)."""
    LedgerMachine.db_url = module_db_url
    yield
    LedgerMachine.db_url = ""


# ------------------------------------------------------------------ plain properties


@st.composite
def bps_lists(draw: st.DrawFn) -> list[int]:
    cuts = sorted(draw(st.lists(st.integers(0, 10000), max_size=11)))
    return [b - a for a, b in zip([0, *cuts], [*cuts, 10000], strict=True)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    amount=st.integers(0, 2**62) | st.sampled_from([1, 2**53 + 1, 2**62, 2**62 - 1]),
    bps=bps_lists(),
)
def test_split_by_bps_parts_sum_to_the_whole(
    module_db_url: str, amount: int, bps: list[int]
) -> None:
    with psycopg.connect(module_db_url, autocommit=True) as conn:
        row = conn.execute(
            b"SELECT covenant.split_by_bps(%s::bigint, %s::integer[])", [amount, bps]
        ).fetchone()
    assert row is not None
    parts: list[int] = row[0]
    assert all(type(p) is int for p in parts)
    assert len(parts) == len(bps)
    assert sum(parts) == amount
    for part, b in zip(parts, bps, strict=True):
        assert abs(part - Fraction(amount * b, 10000)) < 1
    assert parts == split_by_bps(amount, bps)


def test_an_amount_above_2_pow_60_round_trips_exactly(module_db_url: str) -> None:
    amount = 2**60 + 7
    actual = 2**60 + 3
    account = uuid.uuid4()
    with psycopg.connect(module_db_url, autocommit=True) as conn:
        _, code = call(
            conn,
            CREATE_ACCOUNT,
            {"a": account, "kind": "agent", "actor": BILLING, "m": uuid.uuid4()},
        )
        assert code is None
        lot, code = call(
            conn,
            ALLOCATE,
            {
                "a": account,
                "amount": amount,
                "source": "deposit",
                "actor": BILLING,
                "m": uuid.uuid4(),
                "expires": None,
            },
        )
        assert code is None
        m_reserve = uuid.uuid4()
        rid, code = call(
            conn,
            RESERVE,
            {"a": account, "amount": amount, "ttl": "1 hour", "actor": BILLING, "m": m_reserve},
        )
        assert code is None
        lots = conn.execute(
            b"SELECT original_allocation, balance, reserved, consumed, status "
            b"FROM covenant.credit_lots WHERE lot_id = %s",
            [lot],
        ).fetchall()
        assert lots == [(amount, 0, amount, 0, "active")]
        assert type(lots[0][0]) is int
        m_final = uuid.uuid4()
        _, code = call(conn, FINALIZE, {"r": rid, "actual": actual, "actor": BILLING, "m": m_final})
        assert code is None

        lots = conn.execute(
            b"SELECT original_allocation, balance, reserved, consumed, status "
            b"FROM covenant.credit_lots WHERE lot_id = %s",
            [lot],
        ).fetchall()
        assert lots == [(amount, amount - actual, 0, actual, "active")]
        res = conn.execute(
            b"SELECT amount_micro, consumed_micro, released_micro, status "
            b"FROM covenant.credit_reservations WHERE reservation_id = %s",
            [rid],
        ).fetchone()
        assert res == (amount, actual, 4, "finalized")
        bal = conn.execute(
            b"SELECT available, reserved, consumed, allocated, expired "
            b"FROM covenant.account_balance(%s)",
            [account],
        ).fetchone()
        assert bal is not None
        assert [int(v) for v in bal] == [4, 0, actual, amount, 0]
        assert all(int(v) == v for v in bal)  # numeric comes back exact
        # the request, the audit payloads and the journal carry the exact digits
        req = conn.execute(
            b"SELECT request ->> 'amount_micro' FROM covenant.ledger_mutations WHERE mutation_id = %s",
            [m_reserve],
        ).fetchone()
        assert req == (str(amount),)
        payload = conn.execute(
            b"SELECT payload FROM covenant.audit_trail WHERE entry_id = %s", [m_final]
        ).fetchone()
        assert payload is not None
        assert payload[0]["reserved_micro"] == str(amount)
        assert payload[0]["consumed_micro"] == str(actual)
        assert payload[0]["returned_micro"] == "4"
        journal = conn.execute(
            b"SELECT entry_type, amount_micro FROM covenant.credit_ledger "
            b"WHERE account_id = %s ORDER BY created_at, mutation_id, line_no",
            [account],
        ).fetchall()
        assert sorted(journal) == sorted(
            [("deposit", amount), ("reserve", amount), ("finalize", actual), ("release", 4)]
        )
        assert_ledger_consistent(conn)
