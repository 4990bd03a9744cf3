"""The invariant catalogue I-1 … I-14: a positive test and a counterexample each.

Each counterexample asserts the specific failure its enforcement names in
``covenant.invariants``: the constraint (CHECK, UNIQUE) that fires on a raw
write, the CV code a governed function raises, or the failure code
``covenant.reconcile()`` reports on corrupted state. Corruption happens in a
transaction that is rolled back (the ``tx`` fixture), as a superuser.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from ledger_support import footprint
from psycopg.rows import dict_row

from covenant import errors
from covenant.db import Conn, Connector
from covenant.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]
SVC = "service:billing"
HOUR = timedelta(hours=1)


@pytest.fixture
def tx(module_db_url: str) -> Iterator[Conn]:
    """One transaction, rolled back: governed calls pass ``conn=tx``."""
    with psycopg.connect(module_db_url, row_factory=dict_row) as c:
        yield c
        c.rollback()


def funded(ledger: Ledger, amount: int = 1_000_000, *, conn: Conn | None = None) -> uuid.UUID:
    account = ledger.create_account(uuid.uuid4(), "user", actor_id=SVC, conn=conn)
    ledger.allocate(account, amount, "deposit", actor_id=SVC, conn=conn)
    return account


def check(ledger: Ledger, invariant_id: str, conn: Conn) -> Any:
    (row,) = [c for c in ledger.reconcile(conn=conn).checks if c.invariant_id == invariant_id]
    return row


def constraint_of(exc: pytest.ExceptionInfo[psycopg.Error]) -> str | None:
    return exc.value.diag.constraint_name


# -- the catalogue itself ------------------------------------------------------


def test_catalogue_has_fourteen_invariants_with_their_enforcement(ledger: Ledger) -> None:
    invariants = ledger.invariants()
    assert [i.invariant_id for i in invariants] == [f"I-{n}" for n in range(1, 15)]
    by_id = {i.invariant_id: i for i in invariants}
    assert by_id["I-3"].error_code == "CV012"
    assert by_id["I-5"].error_code == "CV011"
    assert by_id["I-4"].failure_code == "PLATFORM_CONSERVATION_DRIFT"
    assert by_id["I-13"].failure_code == "TREASURY_INADEQUATE"
    assert {i.invariant_id for i in invariants if i.kind == "liveness"} == {"I-11", "I-12"}
    assert all(i.fairness for i in invariants if i.kind == "liveness")


def test_reconcile_reports_every_reconciliation_invariant(ledger: Ledger) -> None:
    reconciled = {c.invariant_id for c in ledger.reconcile().checks}
    catalogued = {i.invariant_id for i in ledger.invariants() if i.failure_code}
    assert reconciled == catalogued


def test_every_named_constraint_exists(tx: Conn, ledger: Ledger) -> None:
    names = {r["conname"] for r in tx.execute("SELECT conname FROM pg_constraint").fetchall()}
    for invariant in ledger.invariants():
        assert set(invariant.constraint_names) <= names, invariant.invariant_id


def test_docs_list_every_invariant(ledger: Ledger) -> None:
    doc = (ROOT / "docs" / "invariants.md").read_text()
    for invariant in ledger.invariants():
        assert re.search(rf"^\| {invariant.invariant_id} \| `{invariant.name}` \|", doc, re.M), (
            f"docs/invariants.md lacks {invariant.invariant_id}"
        )
        for code in filter(None, [invariant.error_code, invariant.failure_code]):
            assert code in doc


# -- I-1 lot conservation (CHECK lot_conservation) -------------------------------


def test_i1_lots_conserve(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    r = ledger.reserve(account, 400_000, HOUR, actor_id=SVC, conn=tx)
    ledger.finalize(r, 150_000, actor_id=SVC, conn=tx)
    (lot,) = ledger.lots(account, conn=tx)
    assert lot.balance + lot.reserved + lot.consumed == lot.original_allocation
    assert check(ledger, "I-1", tx).ok


def test_i1_counterexample_check_fires(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    with pytest.raises(psycopg.errors.CheckViolation) as exc:
        tx.execute(
            "UPDATE covenant.credit_lots SET balance = balance + 1 WHERE account_id = %s", [account]
        )
    assert constraint_of(exc) == "lot_conservation"


# -- I-2 non-negativity (CHECK lot_nonnegative, domain micro_usd) ----------------


def test_i2_nothing_negative(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    ledger.reserve(account, 1_000_000, HOUR, actor_id=SVC, conn=tx)  # balance exactly 0
    (lot,) = ledger.lots(account, conn=tx)
    assert lot.balance == 0 and lot.reserved == 1_000_000
    assert check(ledger, "I-2", tx).ok


def test_i2_counterexample_check_fires(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    with pytest.raises(psycopg.errors.CheckViolation) as exc:
        tx.execute(
            "UPDATE covenant.credit_lots SET balance = -1, consumed = consumed + balance + 1 "
            "WHERE account_id = %s",
            [account],
        )
    (invariant,) = [i for i in ledger.invariants() if i.invariant_id == "I-2"]
    assert constraint_of(exc) in invariant.constraint_names


# -- I-3 receivable bound (CV012) -------------------------------------------------


def test_i3_reservations_within_the_bound(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    ledger.set_receivable_bound(account, 500_000, actor_id=SVC, conn=tx)
    ledger.reserve(account, 300_000, HOUR, actor_id=SVC, conn=tx)
    ledger.reserve(account, 200_000, HOUR, actor_id=SVC, conn=tx)  # exactly at the bound
    assert ledger.balance(account, conn=tx).reserved == 500_000


def test_i3_counterexample_bound_exceeded(ledger: Ledger, connector: Connector) -> None:
    account = funded(ledger)
    ledger.set_receivable_bound(account, 500_000, actor_id=SVC)
    ledger.reserve(account, 300_000, HOUR, actor_id=SVC)
    before = footprint(connector, account)
    with pytest.raises(errors.ReceivableBoundExceeded) as exc:
        ledger.reserve(account, 200_001, HOUR, actor_id=SVC)
    assert exc.value.code == "CV012"
    assert footprint(connector, account) == before


# -- I-4 platform conservation (PLATFORM_CONSERVATION_DRIFT) ----------------------


def test_i4_platform_conserves(ledger: Ledger, tx: Conn) -> None:
    a, b = funded(ledger, conn=tx), funded(ledger, conn=tx)
    ledger.transfer(a, b, 250_000, actor_id=SVC, conn=tx)
    ledger.distribute(b, 99_999, {a: 5_000, b: 5_000}, actor_id=SVC, conn=tx)
    r = ledger.reserve(b, 100_000, HOUR, actor_id=SVC, conn=tx)
    ledger.finalize(r, 1, actor_id=SVC, conn=tx)
    assert check(ledger, "I-4", tx).ok


@pytest.mark.parametrize(
    "corruption",
    [
        # a lot grows, conserving itself: money from nowhere
        "UPDATE covenant.credit_lots SET original_allocation = original_allocation + 5, "
        "balance = balance + 5 WHERE account_id = %s",
        # a lot moves balance to consumed without a journal line
        "UPDATE covenant.credit_lots SET balance = balance - 5, consumed = consumed + 5 "
        "WHERE account_id = %s",
    ],
)
def test_i4_counterexample_drift_detected(ledger: Ledger, tx: Conn, corruption: str) -> None:
    account = funded(ledger, conn=tx)
    tx.execute(corruption.replace("%s", "%(a)s"), {"a": account})
    row = check(ledger, "I-4", tx)
    assert not row.ok and row.failure_code == "PLATFORM_CONSERVATION_DRIFT"
    assert row.detail["lots_off_journal"] == 1


# -- I-5 finalize ≤ reserved (CV011) ---------------------------------------------


def test_i5_finalize_up_to_the_reservation(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    r = ledger.reserve(account, 400_000, HOUR, actor_id=SVC, conn=tx)
    done = ledger.finalize(r, 400_000, actor_id=SVC, conn=tx)
    assert done.consumed_micro == 400_000 and done.released_micro == 0


def test_i5_counterexample_overspend(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    r = ledger.reserve(account, 400_000, HOUR, actor_id=SVC, conn=tx)
    with pytest.raises(errors.BudgetOverspend) as exc:
        ledger.finalize(r, 400_001, actor_id=SVC, conn=tx)
    assert exc.value.code == "CV011"


# -- I-6 a mutation applies once (UNIQUE ledger_mutations_pkey, CV002) ------------


def test_i6_replay_applies_once(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    mid = uuid.uuid4()
    first = ledger.reserve(account, 10, HOUR, actor_id=SVC, mutation_id=mid, conn=tx)
    again = ledger.reserve(account, 10, HOUR, actor_id=SVC, mutation_id=mid, conn=tx)
    assert first == again
    assert ledger.balance(account, conn=tx).reserved == 10
    n = tx.execute(
        "SELECT count(*) AS n FROM covenant.ledger_mutations WHERE mutation_id = %s", [mid]
    )
    assert n.fetchone() == {"n": 1}


def test_i6_counterexample_unique_fires_and_reuse_conflicts(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    mid = uuid.uuid4()
    ledger.reserve(account, 10, HOUR, actor_id=SVC, mutation_id=mid, conn=tx)
    tx.execute("SAVEPOINT s")
    with pytest.raises(psycopg.errors.UniqueViolation) as exc:
        tx.execute(
            "INSERT INTO covenant.ledger_mutations (mutation_id, account_id, operation, actor_id, "
            "request, result) VALUES (%s, %s, 'reserve_credits', %s, '{}', '{}')",
            [mid, account, SVC],
        )
    assert constraint_of(exc) == "ledger_mutations_pkey"
    tx.execute("ROLLBACK TO SAVEPOINT s")
    with pytest.raises(errors.IdempotencyConflict):
        ledger.reserve(account, 11, HOUR, actor_id=SVC, mutation_id=mid, conn=tx)


# -- I-7 a reservation resolves once (CV013) --------------------------------------


def test_i7_one_resolution(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    r = ledger.reserve(account, 10, HOUR, actor_id=SVC, conn=tx)
    assert ledger.release(r, actor_id=SVC, conn=tx).status == "released"


@pytest.mark.parametrize("first", ["finalize", "release"])
def test_i7_counterexample_second_resolution(ledger: Ledger, tx: Conn, first: str) -> None:
    account = funded(ledger, conn=tx)
    r = ledger.reserve(account, 10, HOUR, actor_id=SVC, conn=tx)
    if first == "finalize":
        ledger.finalize(r, 5, actor_id=SVC, conn=tx)
    else:
        ledger.release(r, actor_id=SVC, conn=tx)
    with pytest.raises(errors.InvalidTransition) as exc:
        ledger.finalize(r, 5, actor_id=SVC, conn=tx)
    assert exc.value.code == "CV013"


# -- I-8 basis points sum to 10000 (CV016) ----------------------------------------


def test_i8_parts_sum_to_the_whole(ledger: Ledger, tx: Conn) -> None:
    payer = funded(ledger, conn=tx)
    others = [ledger.create_account(uuid.uuid4(), "agent", actor_id=SVC, conn=tx) for _ in range(3)]
    parts = ledger.distribute(
        payer, 100, dict(zip(others, [3_333, 3_333, 3_334], strict=True)), actor_id=SVC, conn=tx
    )
    assert [p.amount_micro for p in parts] == [33, 33, 34]
    assert sum(p.amount_micro for p in parts) == 100


def test_i8_counterexample_bps_sum(ledger: Ledger, tx: Conn) -> None:
    payer = funded(ledger, conn=tx)
    other = ledger.create_account(uuid.uuid4(), "agent", actor_id=SVC, conn=tx)
    with pytest.raises(errors.BpsSumInvalid) as exc:
        ledger.distribute(payer, 100, {payer: 5_000, other: 4_999}, actor_id=SVC, conn=tx)
    assert exc.value.code == "CV016"


# -- I-9 a usage token is redeemed once (UNIQUE usage_tokens_pkey, CV020) ---------


def test_i9_token_redeemed(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    r = ledger.reserve(account, 100, HOUR, actor_id=SVC, conn=tx)
    jti = uuid.uuid4()
    assert (
        ledger.finalize_usage_report(jti, r, 60, actor_id="service:usage", conn=tx).consumed_micro
        == 60
    )


def test_i9_counterexample_replay(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    r1 = ledger.reserve(account, 100, HOUR, actor_id=SVC, conn=tx)
    r2 = ledger.reserve(account, 100, HOUR, actor_id=SVC, conn=tx)
    jti = uuid.uuid4()
    ledger.finalize_usage_report(jti, r1, 60, actor_id="service:usage", conn=tx)
    tx.execute("SAVEPOINT s")
    with pytest.raises(errors.UsageReplay) as exc:
        ledger.finalize_usage_report(jti, r2, 60, actor_id="service:usage", conn=tx)
    assert exc.value.code == "CV020"
    tx.execute("ROLLBACK TO SAVEPOINT s")
    with pytest.raises(psycopg.errors.UniqueViolation) as raw:
        tx.execute(
            "INSERT INTO covenant.usage_tokens (jti, account_id, reservation_id, actual_micro, actor_id) "
            "VALUES (%s, %s, %s, 1, 'service:usage')",
            [jti, account, r2],
        )
    assert constraint_of(raw) == "usage_tokens_pkey"


# -- I-10 reservation conservation (CHECK reservation_conservation) ----------------


def test_i10_resolved_reservations_split_exactly(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    r = ledger.reserve(account, 1_000, HOUR, actor_id=SVC, conn=tx)
    done = ledger.finalize(r, 600, actor_id=SVC, conn=tx)
    assert done.consumed_micro + done.released_micro == done.amount_micro
    assert check(ledger, "I-10", tx).ok


def test_i10_counterexample_check_fires(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    r = ledger.reserve(account, 1_000, HOUR, actor_id=SVC, conn=tx)
    with pytest.raises(psycopg.errors.CheckViolation) as exc:
        tx.execute(
            "UPDATE covenant.credit_reservations SET consumed_micro = 1 WHERE reservation_id = %s",
            [r],
        )
    assert constraint_of(exc) == "reservation_conservation"


# -- I-11 no use after the TTL (CV015) ---------------------------------------------


def test_i11_resolved_before_the_ttl(ledger: Ledger) -> None:
    account = funded(ledger)
    r = ledger.reserve(account, 100, HOUR, actor_id=SVC)
    assert ledger.finalize(r, 100, actor_id=SVC).status == "finalized"


def test_i11_counterexample_finalize_after_ttl(ledger: Ledger) -> None:
    account = funded(ledger)
    r = ledger.reserve(account, 100, timedelta(milliseconds=1), actor_id=SVC)
    time.sleep(0.002)  # the next transaction starts after the TTL
    with pytest.raises(errors.ReservationExpired) as exc:
        ledger.finalize(r, 50, actor_id=SVC)
    assert exc.value.code == "CV015"
    with pytest.raises(errors.ReservationExpired):
        ledger.release(r, actor_id=SVC)
    assert ledger.reservation(r).status == "pending"  # nothing changed: only the sweep resolves it
    assert ledger.expire() >= 1
    assert ledger.reservation(r).status == "expired"


# -- I-12 expired within one sweep (RESERVATION_SWEEP_OVERDUE) ---------------------


def test_i12_one_sweep_after_the_ttl_expires_it(ledger: Ledger) -> None:
    account = funded(ledger)
    r = ledger.reserve(account, 100, timedelta(milliseconds=1), actor_id=SVC)
    time.sleep(0.002)
    ledger.expire()  # the fairness assumption: the sweep runs at least once
    assert ledger.reservation(r).status == "expired"
    assert ledger.balance(account).available == 1_000_000
    row = [c for c in ledger.reconcile(sweep_grace=timedelta(0)).checks if c.invariant_id == "I-12"]
    assert row[0].ok


def test_i12_counterexample_overdue_reported(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    r = ledger.reserve(account, 100, HOUR, actor_id=SVC, conn=tx)
    # time passes with no sweep (simulated: the TTL moved into the past)
    tx.execute(
        "UPDATE covenant.credit_reservations SET expires_at = now() - interval '1 hour' "
        "WHERE reservation_id = %s",
        [r],
    )
    row = check(ledger, "I-12", tx)
    assert not row.ok and row.failure_code == "RESERVATION_SWEEP_OVERDUE"


# -- I-13 treasury adequacy (TREASURY_INADEQUATE) ----------------------------------


def test_i13_treasury_covers_grants(ledger: Ledger, tx: Conn) -> None:
    treasury = ledger.create_account(uuid.uuid4(), "treasury", actor_id=SVC, conn=tx)
    ledger.allocate(treasury, 10**12, "deposit", actor_id=SVC, conn=tx)
    user = ledger.create_account(uuid.uuid4(), "user", actor_id=SVC, conn=tx)
    ledger.allocate(user, 5_000_000, "grant", actor_id=SVC, conn=tx)
    assert check(ledger, "I-13", tx).ok


def test_i13_counterexample_unbacked_grant(ledger: Ledger, tx: Conn) -> None:
    # whatever treasury the module's database holds, this grant exceeds it
    user = ledger.create_account(uuid.uuid4(), "user", actor_id=SVC, conn=tx)
    ledger.allocate(user, 2**62, "grant", actor_id=SVC, conn=tx)
    row = check(ledger, "I-13", tx)
    assert not row.ok and row.failure_code == "TREASURY_INADEQUATE"


# -- I-14 one audit entry per mutation (CV001, AUDIT_COVERAGE_GAP) ------------------


def test_i14_each_mutation_has_its_entry(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    mid = uuid.uuid4()
    ledger.reserve(account, 5, HOUR, actor_id=SVC, mutation_id=mid, conn=tx)
    row = tx.execute(
        "SELECT domain_tag FROM covenant.audit_trail_chain_links WHERE entry_id = %s", [mid]
    ).fetchall()
    assert row == [{"domain_tag": f"account:{account}"}]
    assert check(ledger, "I-14", tx).ok


def test_i14_counterexample_quarantine_fails_closed(ledger: Ledger, connector: Connector) -> None:
    account = funded(ledger)
    for _ in range(3):
        connector.execute(
            "SELECT * FROM covenant.record_audit_verification_failure(%s, 'service:verifier', 'test')",
            [f"account:{account}"],
        )
    before = footprint(connector, account)
    with pytest.raises(errors.AuditQuarantine) as exc:
        ledger.reserve(account, 5, HOUR, actor_id=SVC)
    assert exc.value.code == "CV001"
    with pytest.raises(errors.AuditQuarantine):
        ledger.transfer(account, funded(ledger), 5, actor_id=SVC)
    assert footprint(connector, account) == before


def test_i14_counterexample_mutation_without_entry(ledger: Ledger, tx: Conn) -> None:
    account = funded(ledger, conn=tx)
    tx.execute(
        "INSERT INTO covenant.ledger_mutations (mutation_id, account_id, operation, actor_id, "
        "request, result) VALUES (%s, %s, 'set_receivable_bound', %s, '{}', '{}')",
        [uuid.uuid4(), account, SVC],
    )
    row = check(ledger, "I-14", tx)
    assert not row.ok and row.failure_code == "AUDIT_COVERAGE_GAP"
    assert row.detail["mutations_without_entry"] == 1
