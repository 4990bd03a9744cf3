"""The credit ledger under concurrency: real threads, one connection each, through the SQL API.

* many reservations against one account never overdraw it, and every
  refusal is INSUFFICIENT_BALANCE;
* transfers in opposite directions (two accounts, and a ring of four with
  distributions) never deadlock and conserve the money;
* concurrent duplicates of one mutation id apply once and all get its
  answer; the same id for another request is IDEMPOTENCY_CONFLICT;
* two expiry sweeps racing finalizations resolve every reservation exactly
  once.

Every thread is joined with a timeout, so a hang fails the test instead of
blocking the run; a deadlock (SQLSTATE 40P01) fails it too.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from test_ledger_properties import (
    ALLOCATE,
    BILLING,
    CREATE_ACCOUNT,
    DISTRIBUTE,
    EXPIRE_DEFAULT,
    FINALIZE,
    RESERVE,
    SETTLEMENT,
    TRANSFER,
    Conn,
    assert_ledger_consistent,
    call,
)

JOIN_TIMEOUT = 60.0
RING_STEPS = 50
RESOLVING = (
    "finalize_reservation",
    "release_reservation",
    "expire_reservation",
    "finalize_usage_report",
)


def seeded(seed: int) -> random.Random:
    """A reproducible source of test data (sizes, order, pauses)."""
    return random.Random(seed)  # noqa: S311 - test data, not cryptography


def connect(url: str) -> Conn:
    # a lock wait this long is a hang, not contention: fail with an error instead
    return psycopg.connect(url, autocommit=True, options="-c lock_timeout=30s")


def governed(conn: Conn, query: str, params: dict[str, Any]) -> tuple[Any, str | None]:
    """`call`, but a deadlock fails the test by name."""
    try:
        return call(conn, query, params)
    except psycopg.errors.DeadlockDetected as exc:
        pytest.fail(f"deadlock (40P01) in {query.split('(', maxsplit=1)[0]}: {exc}")


def run_threads(workers: Sequence[Callable[[], None]], timeout: float = JOIN_TIMEOUT) -> None:
    """Run each worker in its own thread; fail on a hang or on any worker's exception."""
    failures: list[BaseException] = []

    def wrap(worker: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                worker()
            except BaseException as exc:
                failures.append(exc)

        return run

    threads = [
        threading.Thread(target=wrap(w), daemon=True, name=f"w{i}") for i, w in enumerate(workers)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = [t.name for t in threads if t.is_alive()]
    if hung:
        pytest.fail(f"threads {hung} still running after {timeout:.0f}s: a hang")
    if failures:
        raise failures[0]


def open_account(conn: Conn, funding: Sequence[int], kind: str = "user") -> uuid.UUID:
    """A new account with one deposit lot per amount (expiries far away, and none)."""
    account = uuid.uuid4()
    _, code = call(
        conn, CREATE_ACCOUNT, {"a": account, "kind": kind, "actor": BILLING, "m": uuid.uuid4()}
    )
    assert code is None
    for i, amount in enumerate(funding):
        expires = None if i % 2 == 0 else datetime.now(UTC) + timedelta(days=30 * (i + 1))
        _, code = call(
            conn,
            ALLOCATE,
            {
                "a": account,
                "amount": amount,
                "source": "deposit",
                "actor": BILLING,
                "m": uuid.uuid4(),
                "expires": expires,
            },
        )
        assert code is None
    return account


def held(conn: Conn, accounts: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[int, int, int]]:
    """(available, reserved, consumed) of each account, as exact ints."""
    out = {}
    for account in accounts:
        row = conn.execute(
            b"SELECT available, reserved, consumed FROM covenant.account_balance(%s)", [account]
        ).fetchone()
        assert row is not None
        out[account] = (int(row[0]), int(row[1]), int(row[2]))
    return out


# ------------------------------------------------------------------ (a) no overdraw


def test_concurrent_reservations_never_overdraw(migrated_url: str) -> None:
    funding = 2**60 + 12345
    lots = [funding // 2, funding // 3, funding - funding // 2 - funding // 3]
    with connect(migrated_url) as conn:
        account = open_account(conn, lots)

    n_threads, attempts = 16, 30
    barrier = threading.Barrier(n_threads)
    successes: list[tuple[uuid.UUID, int]] = []
    refusals: list[tuple[str | None, int]] = []

    def worker(seed: int) -> Callable[[], None]:
        def run() -> None:
            rng = seeded(seed)
            with connect(migrated_url) as conn:
                barrier.wait(timeout=JOIN_TIMEOUT)
                for _ in range(attempts):
                    if rng.random() < 0.2:
                        amount = rng.randint(1, 10**6)
                    else:
                        amount = rng.randint(1, funding // 150)
                    rid, code = governed(
                        conn,
                        RESERVE,
                        {
                            "a": account,
                            "amount": amount,
                            "ttl": "1 hour",
                            "actor": str(uuid.uuid4()),
                            "m": uuid.uuid4(),
                        },
                    )
                    if code is None:
                        successes.append((rid, amount))
                    else:
                        refusals.append((code, amount))

        return run

    run_threads([worker(1000 + i) for i in range(n_threads)])

    assert len(successes) + len(refusals) == n_threads * attempts
    assert {code for code, _ in refusals} <= {"CV010"}
    total = sum(amount for _, amount in successes)
    assert total <= funding
    assert successes and refusals, "the funding should run out part way"
    with connect(migrated_url) as conn:
        [(available, reserved, consumed)] = held(conn, [account]).values()
        assert (available, reserved, consumed) == (funding - total, total, 0)
        # the balance only fell, so every refused amount exceeded what is left now
        assert all(amount > available for _, amount in refusals)
        rows = conn.execute(
            b"SELECT reservation_id, amount_micro FROM covenant.credit_reservations "
            b"WHERE account_id = %s AND status = 'pending'",
            [account],
        ).fetchall()
        assert sorted(rows) == sorted(successes)
        assert len({rid for rid, _ in successes}) == len(successes)
        assert_ledger_consistent(conn, skip=())


# ------------------------------------------------------------------ (b) opposite directions


def test_opposite_transfers_between_two_accounts(migrated_url: str) -> None:
    funding = [10**15, 2**60 + 3]
    with connect(migrated_url) as conn:
        a = open_account(conn, funding)
        b = open_account(conn, funding)
    total = 2 * sum(funding)
    moved: list[int] = []

    def worker(seed: int) -> Callable[[], None]:
        def run() -> None:
            rng = seeded(seed)
            with connect(migrated_url) as conn:
                for k in range(80):
                    src, dst = (a, b) if (seed + k) % 2 == 0 else (b, a)
                    amount = rng.choice([rng.randint(1, 10**6), rng.randint(1, 10**12), 2**53 + 1])
                    _, code = governed(
                        conn,
                        TRANSFER,
                        {
                            "from": src,
                            "to": dst,
                            "amount": amount,
                            "actor": str(uuid.uuid4()),
                            "m": uuid.uuid4(),
                        },
                    )
                    assert code is None, code  # each side holds far more than all moves together
                    moved.append(amount)

        return run

    run_threads([worker(i) for i in range(8)])

    with connect(migrated_url) as conn:
        balances = held(conn, [a, b])
        assert sum(av + res for av, res, _ in balances.values()) == total
        assert sum(c for _, _, c in balances.values()) == sum(moved)
        count = conn.execute(
            b"SELECT count(*) FROM covenant.ledger_mutations WHERE operation = 'transfer_credits'"
        ).fetchone()
        assert count == (len(moved),)
        assert_ledger_consistent(conn, skip=())


def test_transfers_and_distributions_around_a_ring(migrated_url: str) -> None:
    funding = [10**15, 2**56 + 1]
    with connect(migrated_url) as conn:
        ring = [open_account(conn, funding, kind=k) for k in ("user", "agent", "agent", "platform")]
    total = len(ring) * sum(funding)
    ops: Counter[str] = Counter()

    def worker(seed: int) -> Callable[[], None]:
        def run() -> None:
            rng = seeded(seed)
            step = 1 if seed % 2 == 0 else -1
            k = seed % len(ring)
            with connect(migrated_url) as conn:
                for _ in range(RING_STEPS):
                    src, dst = ring[k], ring[(k + step) % len(ring)]
                    amount = rng.randint(1, 10**12)
                    if rng.random() < 0.25:
                        order = rng.sample(ring, len(ring))
                        cuts = sorted(rng.randint(0, 10000) for _ in range(len(ring) - 1))
                        bps = [y - x for x, y in zip([0, *cuts], [*cuts, 10000], strict=True)]
                        shares = Jsonb(
                            [
                                {"account_id": str(r), "bps": p}
                                for r, p in zip(order, bps, strict=True)
                            ]
                        )
                        _, code = governed(
                            conn,
                            DISTRIBUTE,
                            {
                                "from": src,
                                "amount": amount,
                                "shares": shares,
                                "actor": SETTLEMENT,
                                "m": uuid.uuid4(),
                            },
                        )
                        ops["distribute_revenue"] += code is None
                    else:
                        _, code = governed(
                            conn,
                            TRANSFER,
                            {
                                "from": src,
                                "to": dst,
                                "amount": amount,
                                "actor": "service:router",
                                "m": uuid.uuid4(),
                            },
                        )
                        ops["transfer_credits"] += code is None
                    assert code is None, code
                    k = (k + step) % len(ring)

        return run

    run_threads([worker(i) for i in range(8)])

    assert sum(ops.values()) == 8 * RING_STEPS
    with connect(migrated_url) as conn:
        balances = held(conn, ring)
        assert sum(av + res for av, res, _ in balances.values()) == total
        rows = conn.execute(
            b"SELECT operation, count(*) FROM covenant.ledger_mutations "
            b"WHERE operation IN ('transfer_credits', 'distribute_revenue') GROUP BY operation"
        ).fetchall()
        assert dict(rows) == {op: n for op, n in ops.items() if n}
        assert_ledger_consistent(conn, skip=())


# ------------------------------------------------------------------ (c) duplicates


def _mutation_rows(conn: Conn, mutation_id: uuid.UUID) -> tuple[int, int, int]:
    row = conn.execute(
        b"SELECT (SELECT count(*) FROM covenant.ledger_mutations WHERE mutation_id = %(m)s), "
        b"(SELECT count(*) FROM covenant.credit_reservations WHERE mutation_id = %(m)s), "
        b"(SELECT count(*) FROM covenant.audit_trail_chain_links WHERE entry_id = %(m)s)",
        {"m": mutation_id},
    ).fetchone()
    assert row is not None
    return (int(row[0]), int(row[1]), int(row[2]))


def test_concurrent_duplicates_apply_once(migrated_url: str) -> None:
    funding = 2**60
    with connect(migrated_url) as conn:
        account = open_account(conn, [funding])
        other = open_account(conn, [funding])
    mutation = uuid.uuid4()
    amount = 2**53 + 1
    request: dict[str, Any] = {
        "a": account,
        "amount": amount,
        "ttl": "1 hour",
        "actor": "service:jobs",
        "m": mutation,
    }
    barrier = threading.Barrier(8)
    outcomes: list[tuple[Any, str | None]] = []

    def duplicate(params: dict[str, Any]) -> Callable[[], None]:
        def run() -> None:
            with connect(migrated_url) as conn:
                barrier.wait(timeout=JOIN_TIMEOUT)
                outcomes.append(governed(conn, RESERVE, params))

        return run

    run_threads([duplicate(request)] * 8)
    assert [code for _, code in outcomes] == [None] * 8
    rids = {rid for rid, _ in outcomes}
    assert len(rids) == 1
    with connect(migrated_url) as conn:
        assert _mutation_rows(conn, mutation) == (1, 1, 1)
        [rid] = rids
        row = conn.execute(
            b"SELECT reservation_id FROM covenant.credit_reservations WHERE mutation_id = %s",
            [mutation],
        ).fetchone()
        assert row == (rid,)
        assert held(conn, [account])[account] == (funding - amount, amount, 0)

    # the same id for other requests, from other threads: refused, nothing applied
    conflicts = [
        (RESERVE, {**request, "amount": amount + 1}),
        (RESERVE, {**request, "ttl": "2 hours"}),
        (RESERVE, {**request, "a": other}),
        (
            TRANSFER,
            {"from": account, "to": other, "amount": 5, "actor": "service:jobs", "m": mutation},
        ),
    ]
    codes: list[str | None] = []

    def conflicting(query: str, params: dict[str, Any]) -> Callable[[], None]:
        def run() -> None:
            with connect(migrated_url) as conn:
                codes.append(governed(conn, query, params)[1])

        return run

    run_threads([conflicting(q, p) for q, p in conflicts])
    assert codes == ["CV002"] * len(conflicts)
    with connect(migrated_url) as conn:
        assert _mutation_rows(conn, mutation) == (1, 1, 1)
        assert held(conn, [account, other]) == {
            account: (funding - amount, amount, 0),
            other: (funding, 0, 0),
        }
        assert_ledger_consistent(conn, skip=())


def _race_one_id(url: str, x: uuid.UUID, y: uuid.UUID) -> str:
    """7 identical reservations on x and 1 on y, one mutation id, at once; which side won."""
    mutation = uuid.uuid4()
    same = {"a": x, "amount": 1000, "ttl": "1 hour", "actor": "service:jobs", "m": mutation}
    odd = {**same, "a": y}
    barrier = threading.Barrier(8)
    outcomes: list[tuple[str, Any, str | None]] = []

    def attempt(label: str, params: dict[str, Any]) -> Callable[[], None]:
        def run() -> None:
            with connect(url) as conn:
                barrier.wait(timeout=JOIN_TIMEOUT)
                outcomes.append((label, *governed(conn, RESERVE, params)))

        return run

    run_threads([attempt("same", same)] * 7 + [attempt("odd", odd)])
    same_codes = [code for label, _, code in outcomes if label == "same"]
    [odd_code] = [code for label, _, code in outcomes if label == "odd"]
    with connect(url) as conn:
        assert _mutation_rows(conn, mutation) == (1, 1, 1)
    if odd_code is None:
        assert same_codes == ["CV002"] * 7
        return "odd"
    assert odd_code == "CV002"
    assert same_codes == [None] * 7
    assert len({rid for label, rid, _ in outcomes if label == "same"}) == 1
    return "same"


def test_concurrent_duplicates_racing_a_conflicting_request(migrated_url: str) -> None:
    """One id, two requests at once (on two accounts): one side wins whole, the other is CV002."""
    with connect(migrated_url) as conn:
        x = open_account(conn, [10**12])
        y = open_account(conn, [10**12])
    wins = Counter(_race_one_id(migrated_url, x, y) for _ in range(6))
    with connect(migrated_url) as conn:
        balances = held(conn, [x, y])
        assert balances[x][1] == 1000 * wins["same"]
        assert balances[y][1] == 1000 * wins["odd"]
        assert_ledger_consistent(conn, skip=())


# ------------------------------------------------------------------ (d) sweeps and finalizations


def test_concurrent_sweeps_and_finalizations_resolve_each_reservation_once(
    migrated_url: str,
) -> None:
    ttls = {"short": "1 microsecond", "long": "1 hour"}
    rng = seeded(7)
    with connect(migrated_url) as conn:
        accounts = [open_account(conn, [10**13, 2**58]) for _ in range(5)]
        reservations: dict[uuid.UUID, tuple[str, int]] = {}
        for i in range(50):
            kind = ("short", "long", "edge")[i % 3]
            amount = rng.choice([rng.randint(1, 10**9), 2**53 + i])
            rid, code = call(
                conn,
                RESERVE,
                {
                    "a": accounts[i % 5],
                    "amount": amount,
                    "ttl": ttls.get(kind, f"{150 + 8 * i} milliseconds"),  # edge: 150..542 ms
                    "actor": "service:jobs",
                    "m": uuid.uuid4(),
                },
            )
            assert code is None
            reservations[rid] = (kind, amount)

    finalized: dict[uuid.UUID, int] = {}
    refused: dict[uuid.UUID, str] = {}
    swept: list[int] = []
    finalizers_left = [4]
    lock = threading.Lock()
    order = list(reservations)
    rng.shuffle(order)
    start = threading.Barrier(6)

    def finalizer(share: list[uuid.UUID], seed: int) -> Callable[[], None]:
        def run() -> None:
            rng = seeded(seed)
            try:
                with connect(migrated_url) as conn:
                    start.wait(timeout=JOIN_TIMEOUT)
                    for rid in share:
                        time.sleep(rng.uniform(0, 0.08))
                        actual = rng.randint(0, reservations[rid][1])
                        params = {
                            "r": rid,
                            "actual": actual,
                            "actor": str(uuid.uuid4()),
                            "m": uuid.uuid4(),
                        }
                        _, code = governed(conn, FINALIZE, params)
                        if code is None:
                            finalized[rid] = actual
                        else:
                            refused[rid] = code
            finally:
                with lock:
                    finalizers_left[0] -= 1

        return run

    def sweeper(seed: int) -> Callable[[], None]:
        def run() -> None:
            rng = seeded(seed)
            with connect(migrated_url) as conn:
                start.wait(timeout=JOIN_TIMEOUT)
                while True:
                    count, code = governed(conn, EXPIRE_DEFAULT, {})
                    assert code is None, code
                    swept.append(count)
                    with lock:
                        done = finalizers_left[0] == 0
                    if done:
                        due = conn.execute(
                            b"SELECT count(*) FROM covenant.credit_reservations "
                            b"WHERE status = 'pending' AND expires_at <= now()"
                        ).fetchone()
                        if due == (0,):
                            return
                    time.sleep(rng.uniform(0, 0.03))

        return run

    run_threads([finalizer(order[j::4], 100 + j) for j in range(4)] + [sweeper(200), sweeper(201)])

    assert set(finalized) | set(refused) == set(reservations)
    assert set(refused.values()) <= {"CV013", "CV015"}
    with connect(migrated_url) as conn:
        rows = conn.execute(
            b"SELECT reservation_id, status, consumed_micro, resolved_by "
            b"FROM covenant.credit_reservations WHERE reservation_id = ANY(%s)",
            [list(reservations)],
        ).fetchall()
        status = {rid: (st, consumed, by) for rid, st, consumed, by in rows}
        assert len(status) == 50
        resolving = conn.execute(
            b"SELECT (request ->> 'reservation_id')::uuid, operation, mutation_id "
            b"FROM covenant.ledger_mutations WHERE operation = ANY(%s)",
            [list(RESOLVING)],
        ).fetchall()
        by_reservation: dict[uuid.UUID, list[tuple[str, uuid.UUID]]] = {}
        for rid, operation, mutation in resolving:
            by_reservation.setdefault(rid, []).append((operation, mutation))
        lines = conn.execute(
            b"SELECT reservation_id, array_agg(DISTINCT mutation_id) FROM covenant.credit_ledger "
            b"WHERE entry_type IN ('finalize', 'release', 'expire') AND reservation_id = ANY(%s) "
            b"GROUP BY reservation_id",
            [list(reservations)],
        ).fetchall()
        resolution_lines: dict[uuid.UUID, list[uuid.UUID]] = dict(lines)

        for rid, (kind, _) in reservations.items():
            st, consumed, resolved_by = status[rid]
            assert st in ("finalized", "expired"), (rid, kind, st)
            if kind == "long":
                assert st == "finalized", (rid, refused.get(rid))
            if kind == "short":
                assert st == "expired" and refused[rid] in ("CV013", "CV015")
            if st == "finalized":
                assert rid not in refused and consumed == finalized[rid]
                expected = [("finalize_reservation", resolved_by)]
            else:
                assert rid not in finalized and consumed == 0
                expected = [("expire_reservation", resolved_by)]
            assert by_reservation.get(rid) == expected, (rid, by_reservation.get(rid))
            assert resolution_lines.get(rid) == [resolved_by], rid

        n_expired = sum(1 for st, _, _ in status.values() if st == "expired")
        assert sum(swept) == n_expired
        assert len(finalized) == 50 - n_expired
        assert_ledger_consistent(conn, skip=())
        for account, (available, reserved, consumed) in held(conn, accounts).items():
            assert reserved == 0
            assert available + consumed == 10**13 + 2**58, account
