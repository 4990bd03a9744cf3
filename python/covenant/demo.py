"""The demo: migrate a database and show what covenant installed.

``make demo`` runs it against the embedded cluster. Later sections extend it
into the full scenario (accounts, reservations, usage reports, reputation,
the audit chain and a tamper caught).
"""

from __future__ import annotations

import uuid

import psycopg

from covenant.audit import AuditEntry, AuditTrail
from covenant.config import load_settings
from covenant.db import Connector
from covenant.errors import AuditQuarantine
from covenant.migrate import connect, describe_target, has_table, migrate, status


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
    audit_story(url)
