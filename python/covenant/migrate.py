"""The migration runner: versioned migrations plus repeatable definitions.

One run (``covenant migrate``), under a session advisory lock:

1. validate ``migrations/`` before connecting (names ``NNNN_name.sql``,
   numbered 1..N without gaps or duplicates);
2. connect, refuse a server older than PostgreSQL 14;
3. take the advisory lock with ``lock_timeout`` (30 s by default), then
   reset ``lock_timeout``;
4. run ``sql/bootstrap.sql`` as the connecting login (roles, schema,
   pgcrypto, bookkeeping tables) in one transaction;
5. refuse if an applied migration's file was edited, renamed or removed;
6. apply each pending migration in its own transaction, as
   ``covenant_migrator``, recording its checksum in the same transaction;
7. if any file under ``sql/functions``, ``sql/triggers``, ``sql/policies``
   changed (or is new or gone), or any migration was applied, re-apply all of
   them in that order (by file name within a directory) in one transaction,
   and record their checksums;
8. unlock and close the connection, on every path.

Repeatables run after the versioned migrations, so a migration must never
depend on a repeatable definition. They are re-applied as one set so that
the grants in ``sql/policies`` always match the current functions.

Session-scoped lock: connect ``covenant migrate`` to the server directly,
not through a transaction-pooling PgBouncer.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

# 'covenant' in ASCII, as a bigint: the key of the migration advisory lock.
LOCK_KEY = int.from_bytes(b"covenant", "big")
MIN_SERVER_VERSION = 140000
REPEATABLE_DIRS = ("functions", "triggers", "policies")
APPLICATION_NAME = "covenant migrate"

_MIGRATION_NAME = re.compile(r"^(?P<version>[0-9]{4})_(?P<name>[a-z0-9][a-z0-9_]*)\.sql$")


class MigrationError(RuntimeError):
    """A migration run was refused or failed. ``str()`` is one clear line."""


@dataclass(frozen=True)
class SqlFile:
    path: Path
    label: str  # what messages and the bookkeeping tables call it
    body: bytes

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@dataclass(frozen=True)
class Migration(SqlFile):
    version: int = 0
    name: str = ""


@dataclass
class Plan:
    pending: list[Migration]
    applied: dict[int, tuple[str, str]]  # version -> (name, checksum)
    repeatables: list[SqlFile]
    repeatables_changed: list[str]
    repeatables_removed: list[str]


@dataclass
class MigrateResult:
    server_version: int
    applied: list[str] = field(default_factory=list)
    repeatables_applied: list[str] = field(default_factory=list)
    elapsed_ms: int = 0
    ddl_guard: bool = False
    cron_job: bool = False

    @property
    def changed_anything(self) -> bool:
        return bool(self.applied or self.repeatables_applied)


@dataclass
class Status:
    server_version: int
    rows: list[tuple[str, str, str]]  # (kind, label, state)
    pending: int

    def render(self) -> str:
        width = max((len(label) for _, label, _ in self.rows), default=10)
        lines = [f"{kind:<11} {label:<{width}}  {state}" for kind, label, state in self.rows]
        lines.append(
            "up to date" if self.pending == 0 else f"{self.pending} pending (run covenant migrate)"
        )
        return "\n".join(lines)


# --------------------------------------------------------------------------
# files


def default_sql_root() -> Path:
    """Where ``migrations/`` and ``sql/`` are: the wheel's copy, else the checkout."""
    packaged = Path(__file__).resolve().parent / "_sql"
    if (packaged / "migrations").is_dir():
        return packaged
    return Path(__file__).resolve().parents[2]


def discover_migrations(directory: Path) -> list[Migration]:
    """Read and validate ``NNNN_name.sql`` files; refuse anything off."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.name.lower().startswith("readme"):
            continue
        match = _MIGRATION_NAME.match(path.name)
        if not match or not path.is_file():
            raise MigrationError(
                f"bad migration file name {path.name} in {directory} "
                "(expected NNNN_lower_snake_name.sql)"
            )
        version = int(match.group("version"))
        if version == 0:
            raise MigrationError(f"{path.name}: migration numbers start at 0001")
        if version in found:
            raise MigrationError(
                f"duplicate migration number {version:04d}: {found[version].path.name} "
                f"and {path.name}"
            )
        found[version] = Migration(
            path=path,
            label=f"migrations/{path.name}",
            body=path.read_bytes(),
            version=version,
            name=match.group("name"),
        )
    if not found:
        raise MigrationError(f"no migrations found in {directory}")
    expected = list(range(1, max(found) + 1))
    missing = [v for v in expected if v not in found]
    if missing:
        raise MigrationError(
            "gap in migration numbers: missing "
            + ", ".join(f"{v:04d}" for v in missing)
            + f" in {directory}"
        )
    return [found[v] for v in sorted(found)]


def discover_repeatables(sql_dir: Path) -> list[SqlFile]:
    """The repeatable files in application order: functions, triggers, policies."""
    if not sql_dir.is_dir():
        raise MigrationError(f"sql directory {sql_dir} does not exist")
    files: list[SqlFile] = []
    for sub in REPEATABLE_DIRS:
        folder = sql_dir / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.sql")):
            files.append(SqlFile(path=path, label=f"sql/{sub}/{path.name}", body=path.read_bytes()))
    return files


# --------------------------------------------------------------------------
# database


def describe_target(url: str) -> str:
    """``user@host:port/dbname`` for messages: never the password."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable database URL>"
    user = params.get("user") or "?"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or user
    return f"{user}@{host}:{port}/{dbname}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # libpq prefixes connection failures with 'connection to server at ... failed:'
    for line in lines:
        if "FATAL:" in line:
            return line.split("FATAL:", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__


def connect(url: str, *, connect_timeout: int = 10) -> psycopg.Connection[tuple[object, ...]]:
    if not url:
        raise MigrationError("no database URL: pass --database-url or set COVENANT_DATABASE_URL")
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise MigrationError(f"malformed database URL: {_first_line(exc)}") from None
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            application_name=APPLICATION_NAME,
            connect_timeout=connect_timeout,
        )
    except psycopg.OperationalError as exc:
        raise MigrationError(
            f"cannot connect to {describe_target(url)}: {_first_line(exc)}"
        ) from None
    # The runner's own queries must not resolve through the login's search
    # path (a function planted in a writable schema would run as this login).
    conn.execute("SET search_path = pg_catalog, pg_temp")
    return conn


def _check_server(conn: psycopg.Connection[tuple[object, ...]], minimum: int) -> int:
    version = conn.info.server_version
    if version < minimum:
        have = f"{version // 10000}.{version % 10000}"
        raise MigrationError(
            f"covenant needs PostgreSQL {minimum // 10000} or newer; the server runs {have}"
        )
    return version


@contextmanager
def _migration_lock(
    conn: psycopg.Connection[tuple[object, ...]], timeout_s: float
) -> Iterator[None]:
    conn.execute(
        "SELECT pg_catalog.set_config('lock_timeout', %s, false)", [f"{int(timeout_s * 1000)}ms"]
    )
    try:
        conn.execute("SELECT pg_catalog.pg_advisory_lock(%s)", [LOCK_KEY])
    except psycopg.errors.LockNotAvailable:
        holder = _lock_holder(conn)
        raise MigrationError(
            f"another covenant migrate holds the migration lock{holder}; "
            f"gave up after {timeout_s:g}s (lock_timeout)"
        ) from None
    finally:
        # The timeout is for the lock only; migrations must not inherit it.
        if not conn.closed:
            conn.execute("RESET lock_timeout")
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:
            conn.execute("SELECT pg_catalog.pg_advisory_unlock(%s)", [LOCK_KEY])


def _lock_holder(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    row = conn.execute(
        """
        SELECT l.pid, a.application_name, a.backend_start
        FROM pg_catalog.pg_locks AS l
        LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted
          AND l.database = (SELECT oid FROM pg_catalog.pg_database
                            WHERE datname = pg_catalog.current_database())
          AND l.classid = (%s >> 32)::oid AND l.objid = (%s & 4294967295)::oid
          AND l.objsubid = 1
        LIMIT 1
        """,
        [LOCK_KEY, LOCK_KEY],
    ).fetchone()
    if row is None:
        return ""
    return f" (pid {row[0]}, {row[1] or 'unknown client'})"


def _db_error(where: str, exc: psycopg.Error) -> MigrationError:
    diag = exc.diag
    message = diag.message_primary or _first_line(exc)
    text = f"{where}: {exc.sqlstate or 'error'}: {message}"
    if diag.message_hint:
        text += f" (hint: {diag.message_hint})"
    return MigrationError(text)


def _bootstrap(conn: psycopg.Connection[tuple[object, ...]], sql_dir: Path) -> None:
    path = sql_dir / "bootstrap.sql"
    if not path.is_file():
        raise MigrationError(f"{path} does not exist")
    try:
        with conn.transaction():
            conn.execute(path.read_bytes())
    except psycopg.Error as exc:
        raise _db_error("bootstrap (sql/bootstrap.sql) failed", exc) from None


def has_table(conn: psycopg.Connection[tuple[object, ...]], name: str) -> bool:
    row = conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL", [name]).fetchone()
    return bool(row and row[0])


def _read_applied(conn: psycopg.Connection[tuple[object, ...]]) -> dict[int, tuple[str, str]]:
    if not has_table(conn, "covenant.schema_migrations"):
        return {}
    rows = conn.execute(
        "SELECT version, name, checksum FROM covenant.schema_migrations ORDER BY version"
    ).fetchall()
    return {int(str(v)): (str(n), str(c)) for v, n, c in rows}


def _read_repeatables(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, str]:
    if not has_table(conn, "covenant.schema_repeatables"):
        return {}
    rows = conn.execute("SELECT path, checksum FROM covenant.schema_repeatables").fetchall()
    return {str(p): str(c) for p, c in rows}


def _plan(
    conn: psycopg.Connection[tuple[object, ...]],
    migrations: list[Migration],
    repeatables: list[SqlFile],
) -> Plan:
    applied = _read_applied(conn)
    by_version = {m.version: m for m in migrations}
    for version, (name, checksum) in sorted(applied.items()):
        current = by_version.get(version)
        if current is None:
            raise MigrationError(
                f"the database has migration {version:04d}_{name}.sql, which is not in "
                "migrations/ (is this an older covenant than the one that migrated it?)"
            )
        if current.name != name:
            raise MigrationError(
                f"{current.label} was renamed after it was applied (applied as "
                f"{version:04d}_{name}.sql); released migrations are immutable"
            )
        if current.checksum != checksum:
            raise MigrationError(
                f"{current.label} was edited after it was applied (recorded sha256 "
                f"{checksum[:12]}…, file {current.checksum[:12]}…); released migrations are "
                "immutable: add a new migration instead"
            )
    recorded = _read_repeatables(conn)
    changed = [f.label for f in repeatables if recorded.get(f.label) != f.checksum]
    present = {f.label for f in repeatables}
    removed = sorted(label for label in recorded if label not in present)
    return Plan(
        pending=[m for m in migrations if m.version not in applied],
        applied=applied,
        repeatables=repeatables,
        repeatables_changed=changed,
        repeatables_removed=removed,
    )


def _enter_migrator(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute("SET LOCAL ROLE covenant_migrator")
    # Nothing resolves through the search path: every covenant name is qualified.
    conn.execute("SET LOCAL search_path TO pg_catalog, pg_temp")
    # The DDL guard (event triggers, where a superuser installed covenant)
    # lets this transaction's DDL through.
    conn.execute("SET LOCAL covenant.ddl = 'migrate'")


def _apply_migration(conn: psycopg.Connection[tuple[object, ...]], migration: Migration) -> None:
    started = time.monotonic()
    try:
        with conn.transaction():
            _enter_migrator(conn)
            already = conn.execute(
                "SELECT 1 FROM covenant.schema_migrations WHERE version = %s", [migration.version]
            ).fetchone()
            if already:  # applied by a run that did not hold our lock: nothing to do
                return
            conn.execute(migration.body)
            conn.execute("SET LOCAL ROLE covenant_migrator")  # whatever the file did
            conn.execute(
                """
                INSERT INTO covenant.schema_migrations (version, name, checksum, applied_by,
                                                        execution_ms)
                VALUES (%s, %s, %s, session_user, %s)
                """,
                [
                    migration.version,
                    migration.name,
                    migration.checksum,
                    int((time.monotonic() - started) * 1000),
                ],
            )
    except psycopg.Error as exc:
        raise _db_error(
            f"{migration.label} failed and was rolled back (migrations before it are applied)",
            exc,
        ) from None


def _apply_repeatables(conn: psycopg.Connection[tuple[object, ...]], plan: Plan) -> None:
    current: SqlFile | None = None
    try:
        with conn.transaction():
            _enter_migrator(conn)
            for current in plan.repeatables:
                conn.execute(current.body)
                # A repeatable may not leave a role or search_path behind.
                conn.execute("SET LOCAL ROLE covenant_migrator")
                conn.execute("SET LOCAL search_path TO pg_catalog, pg_temp")
            current = None
            for item in plan.repeatables:
                conn.execute(
                    """
                    INSERT INTO covenant.schema_repeatables (path, checksum, applied_by)
                    VALUES (%s, %s, session_user)
                    ON CONFLICT (path) DO UPDATE
                    SET checksum = excluded.checksum, applied_by = excluded.applied_by,
                        applied_at = pg_catalog.now()
                    """,
                    [item.label, item.checksum],
                )
            if plan.repeatables_removed:
                conn.execute(
                    "DELETE FROM covenant.schema_repeatables WHERE path = ANY(%s)",
                    [plan.repeatables_removed],
                )
    except psycopg.Error as exc:
        where = current.label if current else "recording repeatable checksums"
        raise _db_error(f"{where} failed; no repeatable definition was changed", exc) from None


def _apply_plan(
    conn: psycopg.Connection[tuple[object, ...]],
    plan: Plan,
    result: MigrateResult,
    say: Callable[[str], None],
) -> None:
    for migration in plan.pending:
        say(f"applying {migration.label}")
        _apply_migration(conn, migration)
        result.applied.append(migration.label)
    # After any migration the whole set is re-applied too: a migration that
    # recreated a table or function dropped its grants.
    if not (plan.repeatables_changed or plan.repeatables_removed or result.applied):
        return
    for label in plan.repeatables_changed:
        say(f"changed {label}")
    for label in plan.repeatables_removed:
        say(f"removed {label} (its objects stay until a migration drops them)")
    say(f"re-applying {len(plan.repeatables)} repeatable definitions")
    _apply_repeatables(conn, plan)
    result.repeatables_applied = [f.label for f in plan.repeatables]


CRON_JOB = "covenant-audit-partitions"
CRON_SCHEDULE = "17 3 * * *"
CRON_COMMAND = "SELECT covenant.create_audit_partitions(3)"
EXPIRY_CRON_JOB = "covenant-expire-reservations"
EXPIRY_CRON_SCHEDULE = "* * * * *"
EXPIRY_CRON_COMMAND = "SELECT covenant.expire_reservations()"

# (job, schedule, command, what to run instead without pg_cron)
CRON_JOBS = (
    (CRON_JOB, CRON_SCHEDULE, CRON_COMMAND, "`covenant partitions ensure` daily"),
    (
        EXPIRY_CRON_JOB,
        EXPIRY_CRON_SCHEDULE,
        EXPIRY_CRON_COMMAND,
        "`covenant ledger expire` every minute",
    ),
)


def _schedule_partitions(
    conn: psycopg.Connection[tuple[object, ...]], say: Callable[[str], None]
) -> bool:
    """Where pg_cron is installed in this database, schedule covenant's jobs.

    Partitions are kept ahead daily and the reservation expiry sweep runs every
    minute (the fairness assumption of invariant I-12). Idempotent: pg_cron
    (1.3+) replaces a job of the same name. Without pg_cron, or without the
    right to use it, say so and go on: the CLI verbs do the same from any
    scheduler.
    """
    instead = " and ".join(job[3] for job in CRON_JOBS)
    row = conn.execute(
        "SELECT pg_catalog.to_regprocedure('cron.schedule(text,text,text)') IS NOT NULL"
    ).fetchone()
    if not (row and row[0]):
        say(f"pg_cron is not installed here: schedule {instead}")
        return False
    try:
        with conn.transaction():
            for job, schedule, command, _ in CRON_JOBS:
                conn.execute("SELECT cron.schedule(%s, %s, %s)", [job, schedule, command])
    except psycopg.errors.InsufficientPrivilege:
        say(f"no right to use pg_cron: schedule {instead}")
        return False
    for job, schedule, command, _ in CRON_JOBS:
        say(f"pg_cron job {job} ({schedule}): {command}")
    return True


def _install_event_triggers(
    conn: psycopg.Connection[tuple[object, ...]], sql_dir: Path, say: Callable[[str], None]
) -> bool:
    """The DDL guard needs CREATE EVENT TRIGGER, i.e. a superuser; else skip it."""
    row = conn.execute(
        "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"
    ).fetchone()
    path = sql_dir / "superuser" / "event_triggers.sql"
    if not (row and row[0]) or not path.is_file():
        say("not a superuser: the DDL guard (event triggers) is not installed")
        return False
    try:
        with conn.transaction():
            conn.execute("SET LOCAL search_path TO pg_catalog, pg_temp")
            conn.execute("SET LOCAL covenant.ddl = 'migrate'")
            conn.execute(path.read_bytes())
    except psycopg.Error as exc:
        raise _db_error("sql/superuser/event_triggers.sql failed", exc) from None
    return True


def migrate(
    database_url: str,
    *,
    sql_root: Path | None = None,
    migrations_dir: Path | None = None,
    sql_dir: Path | None = None,
    lock_timeout_s: float = 30,
    connect_timeout_s: int = 10,
    min_server_version: int = MIN_SERVER_VERSION,
    progress: Callable[[str], None] | None = None,
) -> MigrateResult:
    """Install or upgrade covenant on ``database_url``. Raises :class:`MigrationError`."""
    root = sql_root or default_sql_root()
    migrations = discover_migrations(migrations_dir or root / "migrations")
    sql_folder = sql_dir or root / "sql"
    repeatables = discover_repeatables(sql_folder)
    if not lock_timeout_s >= 0.001:  # also refuses NaN
        raise MigrationError(f"lock timeout must be at least 0.001 s, got {lock_timeout_s!r}")
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    with connect(database_url, connect_timeout=connect_timeout_s) as conn:
        result = MigrateResult(server_version=_check_server(conn, min_server_version))
        try:
            with _migration_lock(conn, lock_timeout_s):
                _bootstrap(conn, sql_folder)
                _apply_plan(conn, _plan(conn, migrations, repeatables), result, say)
                result.ddl_guard = _install_event_triggers(conn, sql_folder, say)
                result.cron_job = _schedule_partitions(conn, say)
        except psycopg.OperationalError as exc:
            raise MigrationError(f"lost the connection: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            raise _db_error("covenant migrate", exc) from None
    result.elapsed_ms = int((time.monotonic() - started) * 1000)
    return result


def status(
    database_url: str,
    *,
    sql_root: Path | None = None,
    migrations_dir: Path | None = None,
    sql_dir: Path | None = None,
    connect_timeout_s: int = 10,
) -> Status:
    """What is applied, pending or changed; reads only, takes no lock."""
    root = sql_root or default_sql_root()
    migrations = discover_migrations(migrations_dir or root / "migrations")
    repeatables = discover_repeatables(sql_dir or root / "sql")
    with connect(database_url, connect_timeout=connect_timeout_s) as conn:
        version = conn.info.server_version
        try:
            applied = _read_applied(conn)
            recorded = _read_repeatables(conn)
            applied_at: dict[int, str] = {}
            if applied:
                applied_at = {
                    int(str(v)): str(t)
                    for v, t in conn.execute(
                        "SELECT version, to_char(applied_at AT TIME ZONE 'UTC', "
                        "'YYYY-MM-DD HH24:MI:SS\"Z\"') FROM covenant.schema_migrations"
                    ).fetchall()
                }
        except psycopg.Error as exc:
            raise _db_error("covenant migrate --status", exc) from None
    rows, pending = _migration_rows(migrations, applied, applied_at)
    more_rows, more_pending = _repeatable_rows(repeatables, recorded)
    return Status(server_version=version, rows=rows + more_rows, pending=pending + more_pending)


def _migration_rows(
    migrations: list[Migration],
    applied: dict[int, tuple[str, str]],
    applied_at: dict[int, str],
) -> tuple[list[tuple[str, str, str]], int]:
    rows: list[tuple[str, str, str]] = []
    pending = 0
    for m in migrations:
        if m.version not in applied:
            rows.append(("migration", m.label, "pending"))
            pending += 1
        elif applied[m.version][1] != m.checksum or applied[m.version][0] != m.name:
            rows.append(("migration", m.label, "EDITED after it was applied (refused)"))
        else:
            rows.append(("migration", m.label, f"applied {applied_at.get(m.version, '')}"))
    for v, (name, _) in sorted(applied.items()):
        if v > len(migrations):
            rows.append(("migration", f"{v:04d}_{name}.sql", "applied, file MISSING"))
    return rows, pending


def _repeatable_rows(
    repeatables: list[SqlFile], recorded: dict[str, str]
) -> tuple[list[tuple[str, str, str]], int]:
    rows: list[tuple[str, str, str]] = []
    pending = 0
    for f in repeatables:
        state = recorded.get(f.label)
        if state is None:
            rows.append(("repeatable", f.label, "pending"))
            pending += 1
        elif state != f.checksum:
            rows.append(("repeatable", f.label, "changed (will be re-applied)"))
            pending += 1
        else:
            rows.append(("repeatable", f.label, "current"))
    for label in sorted(set(recorded) - {f.label for f in repeatables}):
        rows.append(("repeatable", label, "removed from sql/"))
        pending += 1
    return rows, pending
