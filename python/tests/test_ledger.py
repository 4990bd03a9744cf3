"""The ledger through the Python adapter: money types, actors, bad input, scenarios.

Every rejected call is checked to have changed nothing (the account's
footprint, read in a transaction of its own). The end-to-end scenarios are
those of seed 003 Task 4.4, each ending with ``reconcile()`` all ok.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from ledger_support import footprint

from covenant import errors
from covenant.cli import main
from covenant.db import Connector
from covenant.governance import (
    MutationContext,
    authorize_mutation,
    is_actor_id,
    is_authorized,
    resolve_actor_id,
)
from covenant.ledger import Ledger
from covenant.money import BasisPoints, MicroUSD, split_by_bps

SVC = "service:billing"
HOUR = timedelta(hours=1)
PERSON = "6f1e0c1e-8d0b-4a57-9b43-2a6f1f0e9c11"


def account(ledger: Ledger, funds: int = 0, kind: str = "user") -> uuid.UUID:
    a = ledger.create_account(uuid.uuid4(), kind, actor_id=SVC)
    if funds:
        ledger.allocate(a, funds, "deposit", actor_id=SVC)
    return a


def assert_reconciled(ledger: Ledger) -> None:
    report = ledger.reconcile()
    assert report.ok, [c.model_dump() for c in report.failures]


# -- money --------------------------------------------------------------------


def test_money_types_validate() -> None:
    assert MicroUSD(0) == 0 and MicroUSD("1500000") == 1_500_000
    assert f"{MicroUSD(2**60)}" == str(2**60) and repr(BasisPoints(5)) == "BasisPoints(5)"
    assert MicroUSD.from_usd("1.50") == 1_500_000 and MicroUSD(1_500_000).to_usd() == Decimal("1.5")
    for bad in (-1, 2**63, "1.5", "-3", "", "١٢"):
        with pytest.raises(ValueError):
            MicroUSD(bad)
    for wrong in (1.0, True, None):
        with pytest.raises(TypeError):
            MicroUSD(wrong)
    with pytest.raises(ValueError):
        MicroUSD.from_usd("0.0000001")  # finer than a micro-USD
    assert BasisPoints(10_000) == 10_000
    for bad_bps in (-1, 10_001):
        with pytest.raises(ValueError):
            BasisPoints(bad_bps)


def test_python_split_equals_sql_split(connector: Connector) -> None:
    cases = [
        (100, [3_333, 3_333, 3_334]),
        (1_000_001, [3_333, 6_667]),
        (2**62 + 3, [1, 9_999]),
        (7, [10_000]),
    ]
    for amount, bps in cases:
        row = connector.fetch_one("SELECT covenant.split_by_bps(%s, %s) AS p", [amount, bps])
        assert row is not None
        assert row["p"] == split_by_bps(amount, bps)
        assert sum(split_by_bps(amount, bps)) == amount


def test_amounts_above_2_53_round_trip(ledger: Ledger) -> None:
    big = 2**60 + 7
    a = account(ledger, big)
    r = ledger.reserve(a, big - 1, HOUR, actor_id=SVC)
    done = ledger.finalize(r, 2**53 + 1, actor_id=SVC)
    assert done.consumed_micro == 2**53 + 1 and isinstance(done.consumed_micro, MicroUSD)
    balance = ledger.balance(a)
    assert balance.available == big - 2**53 - 1 and balance.allocated == big
    assert_reconciled(ledger)


# -- actors -------------------------------------------------------------------


def test_resolve_actor_id() -> None:
    assert resolve_actor_id(jwt_sub=PERSON.upper()) == PERSON
    assert resolve_actor_id(mtls_service="billing") == "service:billing"
    assert resolve_actor_id(mtls_service="service:billing") == "service:billing"
    assert resolve_actor_id(jwt_sub=PERSON, mtls_service="billing") == PERSON
    with pytest.raises(errors.NotAuthorized):
        resolve_actor_id()
    for sub in ("", "bob", "{" + PERSON + "}", PERSON.replace("-", "")):
        with pytest.raises(errors.InvalidArgument):
            resolve_actor_id(jwt_sub=sub)
    for name in ("", "Billing", "-x", "a" * 65, "bill ing"):
        with pytest.raises(errors.InvalidArgument):
            resolve_actor_id(mtls_service=name)
    assert all(map(is_actor_id, [PERSON, "service:a", "service:" + "a" * 64]))
    assert not any(map(is_actor_id, ["", "service:", "service:A", PERSON.upper(), None]))
    with pytest.raises(errors.InvalidArgument):
        MutationContext("")


def test_authorization_follows_the_policy_table(connector: Connector, ledger: Ledger) -> None:
    assert is_authorized(connector, "allocate_credits", SVC)
    assert not is_authorized(connector, "allocate_credits", PERSON)
    assert is_authorized(connector, "reserve_credits", PERSON)
    assert not is_authorized(connector, "expire_reservation", SVC)
    with pytest.raises(errors.NotAuthorized):
        authorize_mutation(connector, "allocate_credits", PERSON)
    a = account(ledger)
    before = footprint(connector, a)
    with pytest.raises(errors.NotAuthorized) as exc:
        ledger.allocate(a, 10, actor_id=PERSON)  # the SQL function checks the same table
    assert exc.value.code == "CV005"
    assert footprint(connector, a) == before


# -- bad input: the documented code, and nothing written -------------------------


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda lg, a, r: lg.reserve(a, 0, HOUR, actor_id=SVC), errors.InvalidArgument),
        (
            lambda lg, a, r: lg.db.execute(
                "SELECT covenant.reserve_credits(%s, -5, '1 hour', %s, gen_random_uuid())", [a, SVC]
            ),
            errors.InvalidArgument,
        ),
        (lambda lg, a, r: lg.reserve(a, 10, timedelta(0), actor_id=SVC), errors.InvalidArgument),
        (
            lambda lg, a, r: lg.reserve(a, 10, timedelta(days=31), actor_id=SVC),
            errors.InvalidArgument,
        ),
        (lambda lg, a, r: lg.reserve(a, 10, HOUR, actor_id="service:"), errors.InvalidArgument),
        (lambda lg, a, r: lg.reserve(a, 10, HOUR, actor_id="bob"), errors.InvalidArgument),
        (lambda lg, a, r: lg.allocate(a, 10, "transfer", actor_id=SVC), errors.InvalidArgument),
        (lambda lg, a, r: lg.allocate(a, 10, "gift", actor_id=SVC), errors.InvalidArgument),
        (
            lambda lg, a, r: lg.allocate(a, 10, actor_id=SVC, expires_at=datetime.now(UTC) - HOUR),
            errors.InvalidArgument,
        ),
        (lambda lg, a, r: lg.reserve(a, 10**12, HOUR, actor_id=SVC), errors.InsufficientBalance),
        (lambda lg, a, r: lg.transfer(a, uuid.uuid4(), 10, actor_id=SVC), errors.AccountUnknown),
        (lambda lg, a, r: lg.transfer(a, a, 10, actor_id=SVC), errors.InvalidArgument),
        (lambda lg, a, r: lg.finalize(uuid.uuid4(), 10, actor_id=SVC), errors.ReservationUnknown),
        (lambda lg, a, r: lg.finalize(r, 10**6 + 1, actor_id=SVC), errors.BudgetOverspend),
        (
            lambda lg, a, r: lg.distribute(a, 10, {a: 10_000, uuid.uuid4(): 0}, actor_id=SVC),
            errors.AccountUnknown,
        ),
        (lambda lg, a, r: lg.distribute(a, 10, {a: 9_000}, actor_id=SVC), errors.BpsSumInvalid),
        (
            lambda lg, a, r: lg.db.execute(
                'SELECT covenant.distribute_revenue(%s, 10, \'[{"account_id": 1, "bps": 10000}]\', %s, gen_random_uuid())',
                [a, SVC],
            ),
            errors.InvalidArgument,
        ),
        (
            lambda lg, a, r: lg.db.execute(
                "SELECT covenant.distribute_revenue(%s, 10, '{}', %s, gen_random_uuid())", [a, SVC]
            ),
            errors.InvalidArgument,
        ),
        (
            lambda lg, a, r: lg.record_reputation_event(a, "quality_signal", 5000, actor_id=SVC),
            errors.InvalidArgument,
        ),
        (
            lambda lg, a, r: lg.db.execute(
                "SELECT covenant.expire_reservations(now() + interval '1 day')"
            ),
            errors.InvalidArgument,
        ),
        (lambda lg, a, r: lg.create_account(a, "user", actor_id=SVC), errors.AccountExists),
        (
            lambda lg, a, r: lg.create_account(uuid.uuid4(), "whale", actor_id=SVC),
            errors.InvalidArgument,
        ),
    ],
)
def test_refusals_change_nothing(
    ledger: Ledger, connector: Connector, call: Any, error: type[errors.CovenantError]
) -> None:
    a = account(ledger, 2_000_000)
    r = ledger.reserve(a, 1_000_000, HOUR, actor_id=SVC)
    before = footprint(connector, a)
    with pytest.raises(error) as exc:
        call(ledger, a, r)
    assert exc.value.code == error.code
    assert footprint(connector, a) == before


def test_unknown_account_everywhere(ledger: Ledger) -> None:
    ghost = uuid.uuid4()
    for call in (
        lambda: ledger.allocate(ghost, 10, actor_id=SVC),
        lambda: ledger.reserve(ghost, 10, HOUR, actor_id=SVC),
        lambda: ledger.balance(ghost),
        lambda: ledger.set_receivable_bound(ghost, 1, actor_id=SVC),
    ):
        with pytest.raises(errors.AccountUnknown):
            call()


def test_idempotent_retries_return_the_first_result(ledger: Ledger, connector: Connector) -> None:
    a = account(ledger, 1_000)
    mid = uuid.uuid4()
    lot = ledger.allocate(a, 500, actor_id=SVC, mutation_id=mid)
    assert ledger.allocate(a, 500, actor_id=SVC, mutation_id=mid) == lot
    r = ledger.reserve(a, 300, HOUR, actor_id=SVC)
    fin = uuid.uuid4()
    first = ledger.finalize(r, 100, actor_id=SVC, mutation_id=fin)
    before = footprint(connector, a)
    assert ledger.finalize(r, 100, actor_id=SVC, mutation_id=fin) == first  # not CV013
    assert footprint(connector, a) == before
    with pytest.raises(errors.IdempotencyConflict):
        ledger.finalize(r, 101, actor_id=SVC, mutation_id=fin)
    with pytest.raises(errors.IdempotencyConflict):  # another account, same id
        ledger.allocate(account(ledger), 500, actor_id=SVC, mutation_id=mid)
    # create_account replays too, and refuses an existing account under a new id
    cid = uuid.uuid4()
    b = ledger.create_account(uuid.uuid4(), "agent", actor_id=SVC, mutation_id=cid)
    ledger.create_account(b, "agent", actor_id=SVC, mutation_id=cid)
    with pytest.raises(errors.AccountExists):
        ledger.create_account(b, "agent", actor_id=SVC)


def test_audit_entries_are_the_mutations(ledger: Ledger, connector: Connector) -> None:
    a = account(ledger, 1_000)
    mid = uuid.uuid4()
    r = ledger.reserve(a, 400, HOUR, actor_id=PERSON, mutation_id=mid)
    row = connector.fetch_one(
        "SELECT domain_tag, event_type, actor_id, payload FROM covenant.audit_trail WHERE entry_id = %s",
        [mid],
    )
    assert row is not None
    assert (row["domain_tag"], row["event_type"], row["actor_id"]) == (
        f"account:{a}",
        "reserve_credits",
        PERSON,
    )
    assert row["payload"]["reservation_id"] == str(r) and row["payload"]["amount_micro"] == "400"
    verified = connector.fetch_one(
        "SELECT * FROM covenant.verify_audit_chain(%s)", [f"account:{a}"]
    )
    assert verified is not None and verified["ok"] and verified["checked"] == 3


def test_earliest_expiring_lots_first_and_expired_lots_skipped(ledger: Ledger) -> None:
    a = account(ledger)
    never = ledger.allocate(a, 1_000, actor_id=SVC)
    late = ledger.allocate(
        a, 1_000, actor_id=SVC, expires_at=datetime.now(UTC) + timedelta(days=30)
    )
    soon = ledger.allocate(a, 1_000, actor_id=SVC, expires_at=datetime.now(UTC) + timedelta(days=1))
    brief = ledger.allocate(
        a, 1_000, actor_id=SVC, expires_at=datetime.now(UTC) + timedelta(milliseconds=50)
    )
    time.sleep(0.06)  # `brief` has expired
    ledger.reserve(a, 1_500, HOUR, actor_id=SVC)
    lots = {lot.lot_id: lot for lot in ledger.lots(a)}
    assert lots[soon].reserved == 1_000 and lots[late].reserved == 500
    assert lots[never].reserved == 0 and lots[brief].reserved == 0
    b = ledger.balance(a)
    assert (b.available, b.reserved, b.expired) == (1_500, 1_500, 1_000)
    assert b.allocated == b.available + b.expired + b.reserved + b.consumed


def test_transfers_keep_the_expiry_of_the_credits(ledger: Ledger) -> None:
    a, b = account(ledger), account(ledger)
    soon = datetime.now(UTC) + timedelta(days=1)
    ledger.allocate(a, 100, actor_id=SVC, expires_at=soon)
    ledger.allocate(a, 100, actor_id=SVC)
    ledger.transfer(a, b, 150, actor_id=SVC)
    got = sorted((lot.balance, lot.expires_at is None) for lot in ledger.lots(b))
    assert got == [(50, True), (100, False)]
    assert ledger.balance(a).available == 50
    assert_reconciled(ledger)


def test_reputation_moves_and_downgrades_are_notified(ledger: Ledger, module_db_url: str) -> None:
    agent = account(ledger, kind="agent")
    with psycopg.connect(module_db_url, autocommit=True) as listener:
        listener.execute("LISTEN covenant_reputation")
        states = [
            ledger.record_reputation_event(
                agent, "quality_signal", 10_000, actor_id="service:router"
            ).state
            for _ in range(4)
        ]
        assert states == ["cold", "cold", "cold", "warming"]  # score 2000, 3600, 4880, 5904
        out = ledger.record_reputation_event(
            agent, "task_completed", 0, actor_id="service:router", task_type="code"
        )
        assert out.downgraded and out.state == "cold" and out.score_bps == 4723
        ledger.record_reputation_event(agent, "credential_update", None, actor_id="service:router")
        notes = [json.loads(n.payload) for n in listener.notifies(timeout=1, stop_after=2)]
    assert [(n["from"], n["to"], n["direction"]) for n in notes] == [
        ("cold", "warming", "upgrade"),
        ("warming", "cold", "downgrade"),
    ]
    assert ledger.reputation(agent) == "cold"
    with pytest.raises(errors.InvalidArgument):
        ledger.record_reputation_event(agent, "credential_update", 5000, actor_id="service:router")
    with pytest.raises(errors.NotAuthorized):
        ledger.record_reputation_event(agent, "quality_signal", 5000, actor_id=PERSON)


# -- end-to-end scenarios (seed 003, Task 4.4) -----------------------------------


def test_scenario_happy_path(ledger: Ledger) -> None:
    a = account(ledger, 5_000_000)
    r = ledger.reserve(a, 1_000_000, HOUR, actor_id=PERSON)
    done = ledger.finalize(r, 1_000_000, actor_id="service:runner")
    assert (done.status, done.consumed_micro, done.released_micro) == ("finalized", 1_000_000, 0)
    assert ledger.balance(a).available == 4_000_000
    assert_reconciled(ledger)


def test_scenario_partial_use(ledger: Ledger) -> None:
    a = account(ledger, 5_000_000)
    r = ledger.reserve(a, MicroUSD.from_usd("1.00"), HOUR, actor_id=PERSON)
    done = ledger.finalize(r, MicroUSD.from_usd("0.60"), actor_id="service:runner")
    assert (done.consumed_micro, done.released_micro) == (600_000, 400_000)
    b = ledger.balance(a)
    assert (b.available, b.reserved, b.consumed) == (4_400_000, 0, 600_000)
    assert_reconciled(ledger)


def test_scenario_timeout(ledger: Ledger) -> None:
    a = account(ledger, 5_000_000)
    r = ledger.reserve(a, 1_000_000, timedelta(milliseconds=1), actor_id=PERSON)
    time.sleep(0.002)  # time advances beyond the TTL
    assert ledger.expire() >= 1
    assert ledger.reservation(r).status == "expired"
    assert ledger.balance(a).available == 5_000_000
    assert_reconciled(ledger)


def test_scenario_ensemble(ledger: Ledger) -> None:
    a = account(ledger, 5_000_000)
    r = ledger.reserve(a, 3_000_000, HOUR, actor_id=PERSON)
    calls = [MicroUSD(700_000), MicroUSD(900_000), MicroUSD(250_001)]  # three model calls
    done = ledger.finalize(r, sum(calls), actor_id="service:runner")
    assert done.consumed_micro == 1_850_001 and done.released_micro == 1_149_999
    assert ledger.balance(a).available == 3_149_999
    assert_reconciled(ledger)


# -- the CLI -------------------------------------------------------------------


def test_cli_reconcile_exits_non_zero_on_failure(
    migrated_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Connector(database_url=migrated_url) as db:
        ledger = Ledger(db)
        a = account(ledger, 1_000)
        r = ledger.reserve(a, 10, timedelta(milliseconds=1), actor_id=SVC)
        assert main(["reconcile", "--database-url", migrated_url]) == 0
        time.sleep(0.002)
        assert main(["reconcile", "--database-url", migrated_url, "--sweep-grace", "0"]) == 1
        assert "FAIL RESERVATION_SWEEP_OVERDUE" in capsys.readouterr().out
        assert main(["ledger", "expire", "--database-url", migrated_url]) == 0
        assert "expired 1 reservation(s)" in capsys.readouterr().out
        assert ledger.reservation(r).status == "expired"
        db.execute(
            "UPDATE covenant.credit_lots SET original_allocation = original_allocation + 1, balance = balance + 1"
        )
        assert main(["reconcile", "--database-url", migrated_url, "--json"]) == 1
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert {r["invariant_id"]: r["failure_code"] for r in rows if not r["ok"]} == {
            "I-4": "PLATFORM_CONSERVATION_DRIFT"
        }
        assert main(["ledger", "balance", str(a), "--database-url", migrated_url]) == 0
        assert "available 1001  reserved 0" in capsys.readouterr().out


def test_no_credits_flow_into_a_quarantined_account(ledger: Ledger, connector: Connector) -> None:
    payer, frozen = account(ledger, 1_000), account(ledger)
    for _ in range(3):
        connector.execute(
            "SELECT * FROM covenant.record_audit_verification_failure(%s, 'service:verifier', 'test')",
            [f"account:{frozen}"],
        )
    before = (footprint(connector, payer), footprint(connector, frozen))
    with pytest.raises(errors.AuditQuarantine):
        ledger.transfer(payer, frozen, 10, actor_id=SVC)
    with pytest.raises(errors.AuditQuarantine):
        ledger.distribute(payer, 10, {payer: 5_000, frozen: 5_000}, actor_id=SVC)
    assert (footprint(connector, payer), footprint(connector, frozen)) == before


def test_replays_do_not_depend_on_session_settings(ledger: Ledger, module_db_url: str) -> None:
    a = account(ledger, 1_000)
    mid = uuid.uuid4()
    with psycopg.connect(module_db_url, autocommit=True) as c:
        c.execute("SET TimeZone = 'Pacific/Auckland'")
        c.execute("SET IntervalStyle = 'iso_8601'")
        first = c.execute(
            "SELECT covenant.reserve_credits(%s, 10, '90 minutes', %s, %s)", [a, SVC, mid]
        ).fetchone()
    again = ledger.reserve(a, 10, timedelta(minutes=90), actor_id=SVC, mutation_id=mid)
    assert first is not None and first[0] == again


def test_nobody_can_stall_the_sweep_by_claiming_ids(ledger: Ledger, connector: Connector) -> None:
    """Regression: the sweep's mutation ids were derived from the reservation, so a client
    could take one first (as a mutation or an audit entry) and make every sweep fail."""
    a = account(ledger, 1_000)
    r = ledger.reserve(a, 10, timedelta(milliseconds=1), actor_id=PERSON)
    derived = connector.fetch_one("SELECT md5('covenant.expire:' || %s::text)::uuid AS id", [r])
    assert derived is not None
    connector.execute(
        "SELECT covenant.append_audit_entry('orders:x', %s, 'note', 'service:jobs', '{}')",
        [derived["id"]],
    )
    ledger.reserve(a, 1, HOUR, actor_id=PERSON, mutation_id=uuid.uuid4())
    time.sleep(0.002)
    assert ledger.expire() >= 1
    assert ledger.reservation(r).status == "expired"
