"""The demo: migrate a database, show what covenant installed, and tell a story.

``make demo`` runs it against the embedded cluster, one story end to end:
accounts and allocations; the shipped dynamic contract resolving surfaces by
reputation; a request denied for a capability before anything is reserved;
reservations settled by Ed25519-signed usage reports (a replay and an
overspend refused); a reservation expiring; reputation events moving an
agent up, and a downgrade pushed by NOTIFY invalidating its surface at once;
a revenue distribution; ``reconcile()`` all ok and the audit chain verified;
then a superuser tamper caught, the quarantine refusing the next append, and
``covenant serve``'s endpoints reporting it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from covenant.audit import AuditEntry, AuditTrail
from covenant.catalogue import ReputationState
from covenant.config import load_settings
from covenant.contracts import load_contract, resolve_surface
from covenant.db import Connector
from covenant.errors import AuditQuarantine
from covenant.ledger import Ledger, ReputationOutcome
from covenant.migrate import connect, describe_target, has_table, migrate, status
from covenant.money import MicroUSD
from covenant.reputation import ReputationListener, ReputationResolver
from covenant.reputation_events import ReputationEventRouter, parse_event
from covenant.requests import GovernedRequest, RequestFlow, RequestIntent, SurfaceDenied
from covenant.serve import HealthServer
from covenant.usage import UsageReportError, sign_usage_report, verify_usage_report


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


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passes (the demo's only waits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class _Story:
    """The demo's cast and its helpers: one connector, the ledger, a contract, a resolver."""

    def __init__(self, db: Connector, url: str) -> None:
        self.db = db
        self.ledger = Ledger(db)
        self.contract = load_contract()
        self.resolver = ReputationResolver(db)
        self.listener = ReputationListener(self.resolver, url)
        self.gateway = RequestFlow(
            self.contract, self.resolver.state_of, self.ledger, actor_id="service:gateway"
        )
        self.router = ReputationEventRouter(self.ledger)
        self.runner_key = Ed25519PrivateKey.generate()  # the job runner signs usage reports
        self.runner_public = self.runner_key.public_key()
        self.names: dict[uuid.UUID, str] = {}

    def account(self, kind: str, name: str) -> uuid.UUID:
        account = self.ledger.create_account(uuid.uuid4(), kind, actor_id="service:billing")
        self.names[account] = name
        return account

    def report(self, reservation: uuid.UUID, actual_micro: int) -> str:
        return sign_usage_report(
            self.runner_key, reservation_id=reservation, actual_cost_micro=actual_micro
        )

    def ask(self, agent: uuid.UUID, payer: uuid.UUID, capability: str, usd: str) -> GovernedRequest:
        """A request through the gateway; a denial is printed and the request returned failed."""
        request = self.gateway.receive(
            RequestIntent(agent, payer, capability, MicroUSD.from_usd(usd))
        )
        try:
            self.gateway.admit(request)
        except SurfaceDenied as exc:
            print(
                f"  {self.names[agent]} asks for {capability}: DENIED ({exc.name}) as "
                f"{exc.state.value}; lifecycle {' -> '.join(s.value for s in request.history)}"
            )
            return request
        assert request.reputation is not None
        print(
            f"  {self.names[agent]} asks for {capability} (${usd}) as "
            f"{request.reputation.value}: {' -> '.join(s.value for s in request.history)}, "
            f"reservation {str(request.reservation_id)[:8]}"
        )
        return request

    def signal(self, agent: uuid.UUID, score: float) -> ReputationOutcome:
        event = parse_event(
            {
                "event_type": "model_performance",
                "event_id": str(uuid.uuid4()),
                "agent_id": str(agent),
                "occurred_at": datetime.now(UTC).isoformat(),
                "actor_id": "service:evaluator",
                "model_id": "claude-sonnet-4",
                "provider": "anthropic",
                "pool_id": "pool-eu-1",
                "task_type": "code",
                "quality_observation": {"score": score, "dimensions": {"correctness": score}},
            }
        )
        return self.router.route(event)


def governance_story(url: str) -> None:
    """The whole story: money, contracts, reputation, usage reports, reconciliation."""
    settings = load_settings({"COVENANT_POOL_MAX_SIZE": "4"})
    with Connector(settings, database_url=url) as db:
        story = _Story(db, url)
        story.listener.start()
        try:
            _tell(story)
        finally:
            story.listener.close()
            story.resolver.close()


def _tell(s: _Story) -> None:  # noqa: PLR0915 - a story is a sequence
    ledger = s.ledger
    print("\n== accounts and allocations")
    treasury = s.account("treasury", "treasury")
    platform = s.account("platform", "platform")
    user = s.account("user", "user")
    coder = s.account("agent", "agent:coder")
    print("  " + ", ".join(f"{n} {str(a)[:8]}" for a, n in s.names.items()))
    ledger.allocate(treasury, MicroUSD.from_usd("1000"), "deposit", actor_id="service:billing")
    ledger.allocate(user, MicroUSD.from_usd("40"), "deposit", actor_id="service:billing")
    ledger.allocate(
        user,
        MicroUSD.from_usd("5"),
        "grant",
        actor_id="service:billing",
        expires_at=datetime.now(UTC) + timedelta(days=30),
    )
    print(
        "  treasury funded with $1,000; the user deposits $40 and is granted $5 "
        "(expiring in 30 days, so spent first); agent:coder works on the user's account"
    )

    print(f"\n== the dynamic contract {s.contract.contract_id} v{s.contract.version}")
    for state in ReputationState:
        surface = resolve_surface(s.contract, state)
        print(
            f"  {state.value:<13} {len(surface.capabilities):>2} capabilities, "
            f"{len(surface.schemas)} schemas, at most "
            f"{_usd(surface.limits.max_reservation_micro)} per reservation"
        )
    print("  (each state's surface strictly contains the one below: monotonic expansion)")
    first = s.resolver.resolve(coder)
    print(f"  agent:coder resolves as {first.state.value} (source: {first.source})")

    print("\n== requests through the gateway (received -> validated -> reserved -> ...)")
    denied = s.ask(coder, user, "inference.advanced", "0.50")
    held = ledger.balance(user).reserved
    print(f"  the denied request failed before anything was reserved: reserved {_usd(held)}")
    job = s.ask(coder, user, "inference.basic", "0.80")
    assert denied.state.value == "failed" and job.reservation_id is not None
    s.gateway.start(job)

    print("\n== signed usage reports (Ed25519, EdDSA only)")
    token = s.report(job.reservation_id, MicroUSD.from_usd("0.62"))
    s.gateway.finalize_from_report(job, token, s.runner_public)
    assert job.settled is not None
    print(
        f"  the runner reports $0.62: verified, jti redeemed, {job.state.value} "
        f"(consumed {_usd(job.settled.consumed_micro)}, "
        f"released {_usd(job.settled.released_micro)})"
    )
    try:
        verify_usage_report(s.db, token, s.runner_public, actor_id="service:gateway")
    except UsageReportError as exc:
        print(f"  the same report sent again: refused {exc.code} (permanent={exc.permanent})")
    quick = RequestFlow(
        s.contract,
        s.resolver.state_of,
        ledger,
        actor_id="service:gateway",
        reservation_ttl=timedelta(milliseconds=300),
    )
    crash = quick.start(
        quick.admit(
            quick.receive(RequestIntent(coder, user, "inference.basic", MicroUSD.from_usd("0.90")))
        )
    )
    assert crash.reservation_id is not None
    crashed = crash.reservation_id
    try:
        quick.finalize_from_report(
            crash, s.report(crashed, MicroUSD.from_usd("1.20")), s.runner_public
        )
    except UsageReportError as exc:
        print(
            f"  a report of $1.20 against a $0.90 reservation: refused {exc.code}; "
            f"the request is still {crash.state.value}, nothing changed"
        )
    print("  ... and the runner never sends a correct one")
    _wait_for(lambda: datetime.now(UTC) > ledger.reservation(crashed).expires_at)
    expired = ledger.expire()
    print(
        f"  after its TTL the expiry sweep expires {expired} reservation(s): "
        f"{ledger.reservation(crashed).status}, the $0.90 is available again"
    )

    print("\n== reputation events move agent:coder up (one state per event at most)")
    before = s.resolver.stats.invalidations
    path: list[tuple[int, str]] = []
    for _ in range(10):
        outcome = s.signal(coder, 0.9)
        if outcome.state != outcome.previous_state:
            path.append((outcome.event_count, outcome.state))
    print(
        "  10 model_performance events (score 0.9): "
        + ", ".join(f"{state} after event {n}" for n, state in path)
    )
    _wait_for(lambda: s.resolver.stats.invalidations >= before + 2)
    now = s.resolver.resolve(coder)
    print(
        f"  each upgrade was pushed (NOTIFY) and invalidated the cache: {now.state.value} "
        f"(source: {now.source})"
    )
    big = s.ask(coder, user, "inference.advanced", "3")
    assert big.reservation_id is not None
    s.gateway.start(big)
    s.gateway.finalize_from_report(
        big, s.report(big.reservation_id, MicroUSD.from_usd("2.40")), s.runner_public
    )
    print(f"  the runner reports $2.40: {big.state.value}")
    cached = s.resolver.resolve(coder)
    print(f"  a moment later the state is served from {cached.source}: {cached.state.value}")

    print("\n== a bad result downgrades at once")
    before = s.resolver.stats.invalidations
    outcome = s.signal(coder, 0.1)
    print(
        f"  a model_performance event with score 0.1: score {outcome.score_bps} bps, "
        f"{outcome.previous_state} -> {outcome.state}"
    )
    _wait_for(lambda: s.resolver.stats.invalidations > before)
    after = s.resolver.resolve(coder)
    print(f"  the push invalidated the cache: {after.state.value} (source: {after.source})")
    s.ask(coder, user, "inference.advanced", "3")

    print("\n== revenue distribution")
    ledger.transfer(user, platform, MicroUSD.from_usd("3.02"), actor_id="service:billing")
    parts = ledger.distribute(
        platform,
        MicroUSD.from_usd("3.02"),
        {coder: 7_000, treasury: 3_000},
        actor_id="service:settlement",
    )
    print(
        "  the user pays the platform's $3.02 monthly fee (a transfer); the platform "
        "distributes it 70/30: "
        + ", ".join(f"{s.names[p.account_id]} {_usd(p.amount_micro)}" for p in parts)
    )
    print("  balances:")
    for a, n in s.names.items():
        b = ledger.balance(a)
        print(
            f"    {n:<12} available {_usd(b.available):>10}  reserved {_usd(b.reserved):>3}"
            f"  consumed {_usd(b.consumed):>6}"
        )
    report = ledger.reconcile()
    print(
        "  reconcile(): "
        + ", ".join(f"{c.invariant_id} {'ok' if c.ok else c.failure_code}" for c in report.checks)
    )
    v = s.db.fetch_one("SELECT * FROM covenant.verify_audit_chain(%s)", [f"account:{user}"])
    assert v is not None
    print(
        f"  the user's audit chain account:{str(user)[:8]}...: {v['checked']} entries, "
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
    with HealthServer(url, 0, host="127.0.0.1") as server:
        print(f"\n== covenant serve (here on {server.url})")
        status, health = _get(f"{server.url}/health")
        database = health["dependencies"]["database"]
        print(
            f"  GET /health -> {status} {health['status']}: database reachable="
            f"{database['reachable']}, migrations current={database['migrations']['current']}"
        )
        status, governance = _get(f"{server.url}/health/governance")
        mine = [d for d in governance["quarantine"]["domains"] if d["domain_tag"] == domain]
        print(
            f"  GET /health/governance -> {status}: {len(governance['quarantine']['domains'])} "
            f"quarantined domain(s), {domain} {mine[0]['state'] if mine else '?'}; "
            f"partitions {governance['partitions']['months_ahead']} months ahead"
        )
        status, text = _get(f"{server.url}/metrics", raw=True)
        series = [
            line
            for line in text.decode().splitlines()
            if line.startswith(("covenant_usage_reports_total{", "covenant_audit_quarantined"))
        ]
        print(f"  GET /metrics -> {status}, Prometheus text; among its series:")
        for line in series:
            print(f"    {line}")


def _get(url: str, *, raw: bool = False) -> tuple[int, Any]:
    """GET a local serve endpoint: (status, parsed JSON body) — also for a 503."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own http URL
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    return status, body if raw else json.loads(body)


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
    governance_story(url)
    audit_story(url)
