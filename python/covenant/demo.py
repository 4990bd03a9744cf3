"""The demo: migrate a database, show what covenant installed, and tell a story.

``make demo`` runs it against the embedded cluster: a ledger scenario
(accounts, allocations, reservations finalized partly, one expired, a
transfer, a revenue distribution, a refused overspend, reconciliation), then
the audit trail (appends, verification, a superuser tamper caught and the
quarantine refusing the next append).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from covenant.audit import AuditEntry, AuditTrail
from covenant.config import load_settings
from covenant.db import Connector
from covenant.errors import AuditQuarantine, BudgetOverspend, ReservationExpired
from covenant.ledger import Ledger
from covenant.migrate import connect, describe_target, has_table, migrate, status
from covenant.money import MicroUSD


def print_installation(url: str) -> None:
    """Print the roles, the schema and the migration status of ``url``."""
    with connect(url) as conn:
        print(
            f"server: PostgreSQL {conn.execute('SHOW server_version').fetchone()[0]}"  # type: ignore[index]
            f" at {describe_target(url)}"
        )
        print("\nroles (cluster-wide):")
        for name, login, superuser, bypassrls, members in conn.execute(
            """
            SELECT r.rolname, r.rolcanlogin, r.rolsuper, r.rolbypassrls,
                   coalesce((SELECT string_agg(m.rolname, ', ' ORDER BY m.rolname)
                             FROM pg_catalog.pg_auth_members AS am
                             JOIN pg_catalog.pg_roles AS m ON m.oid = am.member
                             WHERE am.roleid = r.oid), '-')
            FROM pg_catalog.pg_roles AS r
            WHERE r.rolname IN ('covenant_migrator', 'covenant_app', 'covenant_dba')
            ORDER BY r.rolname
            """
        ).fetchall():
            print(
                f"  {name:<18} login={_yn(login)} superuser={_yn(superuser)} "
                f"bypassrls={_yn(bypassrls)} granted to: {members}"
            )
        print("\nschema covenant:")
        row = conn.execute(
            "SELECT pg_catalog.pg_get_userbyid(nspowner) FROM pg_catalog.pg_namespace "
            "WHERE nspname = 'covenant'"
        ).fetchone()
        print(f"  owner: {row[0] if row else '(not installed)'}")
        for kind, count in conn.execute(
            """
            SELECT kind, count(*) FROM (
                SELECT CASE c.relkind WHEN 'r' THEN 'tables' WHEN 'p' THEN 'tables'
                       WHEN 'v' THEN 'views' ELSE 'other relations' END AS kind
                FROM pg_catalog.pg_class AS c
                JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
                WHERE n.nspname = 'covenant' AND c.relkind IN ('r', 'p', 'v', 'm')
                UNION ALL
                SELECT 'functions' FROM pg_catalog.pg_proc AS p
                JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
                WHERE n.nspname = 'covenant'
            ) AS objects GROUP BY kind ORDER BY kind
            """
        ).fetchall():
            print(f"  {kind}: {count}")
        public_create = conn.execute(
            "SELECT pg_catalog.has_schema_privilege('public', 'public', 'CREATE')"
        ).fetchone()
        print(f"  PUBLIC may CREATE in schema public: {_yn(public_create and public_create[0])}")
        codes = (
            conn.execute("SELECT count(*) FROM covenant.error_codes").fetchone()
            if has_table(conn, "covenant.error_codes")
            else None
        )
        print(f"  error codes catalogued: {codes[0] if codes else 0}")
    print("\nmigration status:")
    for line in status(url).render().splitlines():
        print(f"  {line}")


def _yn(value: object) -> str:
    return "yes" if value else "no"


def _usd(micro: int) -> str:
    return f"${MicroUSD(micro).to_usd():,.6f}".rstrip("0").rstrip(".")


def ledger_story(url: str) -> None:
    """A realistic ledger scenario through the governed functions, then reconcile()."""
    billing, router = "service:billing", "service:router"
    alice = str(uuid.uuid4())  # a person: the JWT subject behind her requests
    settings = load_settings({"COVENANT_POOL_MAX_SIZE": "4"})
    with Connector(settings, database_url=url) as db:
        ledger = Ledger(db)
        print("\n== the credit ledger")
        treasury = ledger.create_account(uuid.uuid4(), "treasury", actor_id=billing)
        platform = ledger.create_account(uuid.uuid4(), "platform", actor_id=billing)
        user = ledger.create_account(uuid.uuid4(), "user", actor_id=billing)
        coder = ledger.create_account(uuid.uuid4(), "agent", actor_id=billing)
        writer = ledger.create_account(uuid.uuid4(), "agent", actor_id=billing)
        names = {
            treasury: "treasury",
            platform: "platform",
            user: "user",
            coder: "agent:coder",
            writer: "agent:writer",
        }
        print("  accounts: " + ", ".join(f"{n} {str(a)[:8]}" for a, n in names.items()))
        ledger.allocate(treasury, MicroUSD.from_usd("1000"), "deposit", actor_id=billing)
        ledger.allocate(user, MicroUSD.from_usd("25"), "deposit", actor_id=billing)
        ledger.allocate(
            user,
            MicroUSD.from_usd("5"),
            "grant",
            actor_id=billing,
            expires_at=datetime.now(UTC) + timedelta(days=30),
        )
        print(
            "  the treasury is funded with $1,000; the user deposits $25 and is granted $5 "
            "(expiring in 30 days, so it is spent first)"
        )

        job = ledger.reserve(user, MicroUSD.from_usd("8"), timedelta(minutes=10), actor_id=alice)
        print(
            f"  reserve $8 for a job: reservation {str(job)[:8]} (draws the $5 grant, then $3 of "
            "the deposit)"
        )
        done = ledger.finalize(job, MicroUSD.from_usd("6.25"), actor_id="service:runner")
        print(
            f"  the job used {_usd(done.consumed_micro)}: finalized, "
            f"{_usd(done.released_micro)} back to the balance"
        )

        over = ledger.reserve(user, MicroUSD.from_usd("2"), timedelta(minutes=10), actor_id=alice)
        try:
            ledger.finalize(over, MicroUSD.from_usd("2.50"), actor_id="service:runner")
        except BudgetOverspend as exc:
            print(
                f"  a job reporting $2.50 against a $2 reservation is refused: {exc.code} "
                f"{exc.name}"
            )
        ledger.finalize(over, MicroUSD.from_usd("2"), actor_id="service:runner")

        stale = ledger.reserve(
            user, MicroUSD.from_usd("1"), timedelta(milliseconds=5), actor_id=alice
        )
        time.sleep(0.01)
        try:
            ledger.finalize(stale, 1, actor_id="service:runner")
        except ReservationExpired as exc:
            print(
                f"  a reservation whose job never reported, after its TTL: finalize refused "
                f"({exc.code} {exc.name})"
            )
        print(
            f"  the expiry sweep: {ledger.expire()} reservation(s) expired, "
            f"{ledger.reservation(stale).status}"
        )

        ledger.transfer(user, platform, MicroUSD.from_usd("6.25"), actor_id=billing)
        print("  the user pays the platform $6.25 for the job (a transfer)")
        parts = ledger.distribute(
            platform,
            MicroUSD.from_usd("6.25"),
            {coder: 6_000, writer: 3_333, treasury: 667},
            actor_id="service:settlement",
        )
        print(
            "  the platform distributes it, 60% / 33.33% / 6.67%: "
            + ", ".join(f"{names[p.account_id]} {_usd(p.amount_micro)}" for p in parts)
            + f" (sum {_usd(sum(p.amount_micro for p in parts))})"
        )

        outcome = ledger.record_reputation_event(
            coder, "quality_signal", 9_000, actor_id=router, task_type="code"
        )
        print(
            f"  a quality signal for agent:coder: score {outcome.score_bps} bps, "
            f"state {outcome.state}"
        )

        print("  balances:")
        for a, n in names.items():
            b = ledger.balance(a)
            print(
                f"    {n:<13} available {_usd(b.available):>12}  reserved {_usd(b.reserved):>6}"
                f"  consumed {_usd(b.consumed):>8}"
            )
        report = ledger.reconcile()
        print(
            "  reconcile(): "
            + ", ".join(
                f"{c.invariant_id} {'ok' if c.ok else c.failure_code}" for c in report.checks
            )
        )
        v = db.fetch_one("SELECT * FROM covenant.verify_audit_chain(%s)", [f"account:{user}"])
        assert v is not None
        print(
            f"  the user's audit chain account:{str(user)[:8]}…: {v['checked']} entries, "
            f"ok={v['ok']} (one per mutation)"
        )


def audit_story(url: str) -> None:
    """Appends, a verification, a superuser tamper caught, the quarantine refusing."""
    domain = f"orders:demo-{uuid.uuid4().hex[:8]}"
    settings = load_settings({"COVENANT_POOL_MAX_SIZE": "4"})
    with Connector(settings, database_url=url) as db:
        audit = AuditTrail(db)
        print(f"\n== the audit trail: domain {domain}")
        for event, payload in (
            ("credit.allocated", {"amount_micro": "25000000", "source": "deposit"}),
            ("credit.reserved", {"amount_micro": "1500000", "ttl": "PT10M"}),
            ("credit.finalized", {"actual_micro": "1234567"}),
        ):
            r = audit.append(domain, event, "service:ledger", payload)
            print(
                f"  seq {r.seq}  {event:<17} {r.entry_hash.hex()[:16]}…  "
                f"(follows {r.previous_hash.hex()[:16]}…)"
            )
        batch = [AuditEntry("usage.reported", "service:metering", {"job": i}) for i in range(5)]
        receipts = audit.append_many(domain, batch)
        print(
            f"  a batch of {len(receipts)} in one call: seq {receipts[0].seq}..{receipts[-1].seq}"
        )
        retry = audit.append_many(domain, batch[:1])[0]
        print(f"  the same entry sent again: seq {retry.seq}, duplicate={retry.duplicate}")
        v = audit.verify(domain, 1)
        print(f"  verify_audit_chain: ok={v.ok}, {v.checked} entries checked")
        cp = audit.checkpoint(domain, "service:ops")
        print(f"  checkpoint at seq {cp.seq}")
        with psycopg.connect(url, autocommit=True) as su:
            su.execute("BEGIN")
            su.execute("SET LOCAL covenant.ddl = 'tamper'")  # a superuser passes the DDL guard
            su.execute("ALTER TABLE covenant.audit_trail DISABLE TRIGGER audit_trail_append_only")
            su.execute(
                'UPDATE covenant.audit_trail SET payload = \'{"actual_micro": "1"}\' '
                "WHERE domain_tag = %s AND seq = 3",
                [domain],
            )
            su.execute(
                "ALTER TABLE covenant.audit_trail ENABLE ALWAYS TRIGGER audit_trail_append_only"
            )
            su.execute("COMMIT")
        print("  a superuser disables the trigger and rewrites seq 3's payload …")
        v = audit.verify(domain, 1)
        print(f"  verify_audit_chain: ok={v.ok}, first bad seq {v.first_bad_seq}: {v.reason}")
        [state] = audit.domains(domain)
        print(f"  quarantine: {state.quarantine_state}")
        try:
            audit.append(domain, "credit.reserved", "service:ledger", {"amount_micro": "1"})
        except AuditQuarantine as exc:
            print(f"  the next append is refused: {exc.code} {exc.message}")


def run_demo(url: str) -> None:
    print("== covenant demo ==")
    print(f"migrating {describe_target(url)} ...")
    result = migrate(url, progress=lambda msg: print(f"  {msg}"))
    if result.changed_anything:
        print(
            f"  applied {len(result.applied)} migration(s) and "
            f"{len(result.repeatables_applied)} repeatable definition(s) "
            f"in {result.elapsed_ms} ms"
        )
    else:
        print("  already up to date")
    second = migrate(url)
    print(f"  a second run changes nothing: {not second.changed_anything}")
    print()
    print_installation(url)
    ledger_story(url)
    audit_story(url)
