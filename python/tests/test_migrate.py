"""The migration runner against a real server: happy paths and every refusal."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from conftest import ROOT, Server

from covenant import embedded
from covenant.migrate import (
    APPLICATION_NAME,
    LOCK_KEY,
    MigrationError,
    discover_migrations,
    discover_repeatables,
    migrate,
    status,
)

MIGRATION_COUNT = len(list((ROOT / "migrations").glob("*.sql")))


def _scalar(url: str, query: str, params: list[object] | None = None) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query.encode() if params is None else query, params).fetchone()  # type: ignore[call-overload]
        return None if row is None else row[0]


def _schema_exists(url: str) -> bool:
    return bool(_scalar(url, "SELECT to_regnamespace('covenant') IS NOT NULL"))


def _no_leftovers(url: str) -> None:
    """No migration lock held and no runner connection left on the server."""
    dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url) as conn:
        locks = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND classid = (%s >> 32)::oid AND objid = (%s & 4294967295)::oid",
            [LOCK_KEY, LOCK_KEY],
        ).fetchone()
        runners = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND datname = %s",
            [APPLICATION_NAME, dbname],
        ).fetchone()
    assert locks == (0,), "the migration lock was left held"
    assert runners == (0,), "a runner connection was left open"


# ---------------------------------------------------------------- happy paths


def test_fresh_install_then_noop(empty_url: str) -> None:
    first = migrate(empty_url)
    assert first.applied == [
        f"migrations/{p.name}" for p in sorted((ROOT / "migrations").glob("*.sql"))
    ]
    assert first.repeatables_applied, "repeatable definitions were applied"
    assert first.server_version >= 140000
    assert first.ddl_guard, "a superuser install gets the DDL guard (event triggers)"
    second = migrate(empty_url)
    assert not second.changed_anything
    assert _scalar(empty_url, "SELECT count(*) FROM covenant.schema_migrations") == MIGRATION_COUNT
    assert _scalar(empty_url, "SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypto'") == 1
    roles = _scalar(
        empty_url,
        "SELECT array_agg(rolname ORDER BY rolname) FROM pg_roles WHERE rolname LIKE 'covenant%'",
    )
    assert roles == ["covenant_app", "covenant_dba", "covenant_migrator"]
    _no_leftovers(empty_url)


def test_status_reports_pending_then_current(empty_url: str) -> None:
    before = status(empty_url)
    assert before.pending == MIGRATION_COUNT + len(discover_repeatables(ROOT / "sql"))
    assert all(state == "pending" for _, _, state in before.rows)
    migrate(empty_url)
    after = status(empty_url)
    assert after.pending == 0
    assert "up to date" in after.render()


def test_objects_are_owned_by_migrator(migrated_url: str) -> None:
    owners = _scalar(
        migrated_url,
        "SELECT array_agg(DISTINCT pg_get_userbyid(c.relowner)) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'covenant'",
    )
    assert owners == ["covenant_migrator"]


def test_two_concurrent_cli_runs_both_succeed_and_apply_once(empty_url: str) -> None:
    env = dict(os.environ, COVENANT_DATABASE_URL=empty_url)
    cmd = [sys.executable, "-m", "covenant.cli", "migrate"]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    stdout = [out for out, _ in outputs]
    # exactly one of them did the work; the other waited for the lock and found nothing to do
    assert sum("already up to date" in out for out in stdout) == 1, stdout
    assert _scalar(empty_url, "SELECT count(*) FROM covenant.schema_migrations") == MIGRATION_COUNT
    _no_leftovers(empty_url)


def test_concurrent_runs_in_threads_apply_each_migration_once(empty_url: str) -> None:
    results: list[object] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(empty_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    applied = [label for r in results for label in r.applied]  # type: ignore[attr-defined]
    assert len(applied) == MIGRATION_COUNT == len(set(applied))


def test_repeatable_change_is_reapplied_in_the_same_run(empty_url: str, sql_tree: Path) -> None:
    migrate(empty_url, sql_root=sql_tree)
    raise_sql = sql_tree / "sql" / "functions" / "raise.sql"
    raise_sql.write_text(
        raise_sql.read_text().replace(
            "-- A programming error in covenant itself",
            "-- (changed) A programming error in covenant itself",
        )
    )
    report = status(empty_url, sql_root=sql_tree)
    assert ("repeatable", "sql/functions/raise.sql", "changed (will be re-applied)") in report.rows
    result = migrate(empty_url, sql_root=sql_tree)
    assert result.applied == []
    assert "sql/functions/raise.sql" in result.repeatables_applied
    assert "(changed)" in str(
        _scalar(empty_url, "SELECT prosrc FROM pg_proc WHERE proname = '_raise'")
    )
    assert status(empty_url, sql_root=sql_tree).pending == 0


def test_new_migration_is_applied_on_upgrade(empty_url: str, sql_tree: Path) -> None:
    migrate(empty_url, sql_root=sql_tree)
    n = MIGRATION_COUNT + 1
    (sql_tree / "migrations" / f"{n:04d}_add_probe.sql").write_text(
        "CREATE TABLE covenant.probe (id integer PRIMARY KEY);\n"
    )
    result = migrate(empty_url, sql_root=sql_tree)
    assert result.applied == [f"migrations/{n:04d}_add_probe.sql"]
    assert result.repeatables_applied, "a migration re-applies the repeatable set"
    owner = _scalar(
        empty_url,
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'covenant.probe'::regclass",
    )
    assert owner == "covenant_migrator"


def test_grants_survive_a_migration_that_recreates_a_table(empty_url: str, sql_tree: Path) -> None:
    migrate(empty_url, sql_root=sql_tree)
    n = MIGRATION_COUNT + 1
    (sql_tree / "migrations" / f"{n:04d}_rebuild_event_types.sql").write_text(
        "CREATE TABLE covenant.reputation_event_types_new\n"
        "    (LIKE covenant.reputation_event_types INCLUDING ALL);\n"
        "INSERT INTO covenant.reputation_event_types_new\n"
        "    SELECT * FROM covenant.reputation_event_types;\n"
        "DROP TABLE covenant.reputation_event_types;\n"
        "ALTER TABLE covenant.reputation_event_types_new RENAME TO reputation_event_types;\n"
    )
    migrate(empty_url, sql_root=sql_tree)
    assert _scalar(
        empty_url,
        "SELECT has_table_privilege('covenant_app', 'covenant.reputation_event_types', 'SELECT')",
    ), "sql/policies was re-applied after the migration"


def test_planted_function_does_not_run(tmp_path: Path) -> None:
    """A function planted in a PUBLIC-writable schema public never runs as the migrating login.

    A fresh cluster, so that the bootstrap really creates the roles (the path
    that formats SQL), and a database where PUBLIC may CREATE in public, as one
    created under PostgreSQL 14 is.
    """
    if embedded.find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries for a private cluster")
    cluster = embedded.start_cluster("planted", home=tmp_path, fast=True)
    try:
        with psycopg.connect(cluster.dsn, autocommit=True) as admin:
            admin.execute("CREATE DATABASE victim")
        url = cluster.dsn_for("victim")
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
            admin.execute("CREATE ROLE mallory LOGIN")
            admin.execute("SET ROLE mallory")
            body = "BEGIN EXECUTE 'ALTER ROLE mallory SUPERUSER'; RETURN ''; END"
            for signature in (
                "format(text, text)",
                "format(text, text, text)",
                "format(text, name)",
                "to_regclass(text)",
            ):
                admin.execute(
                    f"CREATE FUNCTION public.{signature} RETURNS text LANGUAGE plpgsql "
                    f"AS $${body}$$".encode()
                )
            admin.execute("RESET ROLE")
        migrate(url)
        status(url)
        with psycopg.connect(url) as check:
            assert check.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"
            ).fetchone() == (False,)
            assert check.execute(
                "SELECT has_schema_privilege('public', 'public', 'CREATE')"
            ).fetchone() == (False,)
    finally:
        embedded.stop_cluster("planted", home=tmp_path, remove=True)


def test_concurrent_first_installs_on_two_databases_of_a_fresh_cluster(
    tmp_path: Path,
) -> None:
    """Role creation races between databases (the migration lock is per database)."""
    if embedded.find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries for a private cluster")
    cluster = embedded.start_cluster("race", home=tmp_path, fast=True)
    errors: list[BaseException] = []

    def run(db: str) -> None:
        try:
            migrate(cluster.dsn_for(db))
        except BaseException as exc:
            errors.append(exc)

    try:
        for attempt in range(4):
            dbs = [f"race_{attempt}_a", f"race_{attempt}_b"]
            with psycopg.connect(cluster.dsn, autocommit=True) as admin:
                for db in dbs:
                    admin.execute(f"CREATE DATABASE {db}".encode())

            threads = [threading.Thread(target=run, args=(db,)) for db in dbs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == [], f"attempt {attempt}: {errors}"
            with psycopg.connect(cluster.dsn, autocommit=True) as admin:
                for db in dbs:
                    admin.execute(f"DROP DATABASE {db}".encode())
                admin.execute("DROP ROLE covenant_app, covenant_dba, covenant_migrator")
    finally:
        embedded.stop_cluster("race", home=tmp_path, remove=True)


def test_non_superuser_deployer_with_createrole(tmp_path: Path) -> None:
    """A fresh cluster: a deployer without CREATEROLE is refused cleanly; with it, installs."""
    if embedded.find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries for a private cluster")
    cluster = embedded.start_cluster("deployer", home=tmp_path, fast=True)
    try:
        with psycopg.connect(cluster.dsn, autocommit=True) as admin:
            admin.execute("CREATE ROLE deployer LOGIN PASSWORD 'deployer-pw'")
            admin.execute("CREATE DATABASE app OWNER deployer")
        url = cluster.dsn_for("app", user="deployer", password="deployer-pw")
        with pytest.raises(MigrationError) as refused:
            migrate(url)
        text = str(refused.value)
        assert "role covenant_migrator does not exist and deployer cannot create it" in text
        assert "CREATEROLE" in text
        assert not _schema_exists(url), "nothing half-applied"
        with psycopg.connect(cluster.dsn, autocommit=True) as admin:
            assert admin.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'covenant%'"
            ).fetchone() == (0,)
            admin.execute("ALTER ROLE deployer CREATEROLE")
        result = migrate(url)
        assert len(result.applied) == MIGRATION_COUNT
        assert not result.ddl_guard, "event triggers need a superuser: skipped, and said so"
        assert not migrate(url).changed_anything
        # a second login that is neither a member nor able to grant is refused by name
        with psycopg.connect(cluster.dsn, autocommit=True) as admin:
            admin.execute("CREATE ROLE outsider LOGIN PASSWORD 'outsider-pw'")
            admin.execute("GRANT CREATE ON DATABASE app TO outsider")
        outsider = cluster.dsn_for("app", user="outsider", password="outsider-pw")
        with pytest.raises(MigrationError, match="outsider is not a member of covenant_migrator"):
            migrate(outsider)
    finally:
        embedded.stop_cluster("deployer", home=tmp_path, remove=True)


# ---------------------------------------------------------------- refusals


def test_edited_migration_is_refused_by_name(empty_url: str, sql_tree: Path) -> None:
    migrate(empty_url, sql_root=sql_tree)
    first = sorted((sql_tree / "migrations").glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(MigrationError) as exc:
        migrate(empty_url, sql_root=sql_tree)
    assert f"migrations/{first.name} was edited after it was applied" in str(exc.value)
    assert "EDITED" in status(empty_url, sql_root=sql_tree).render()
    _no_leftovers(empty_url)


def test_renamed_and_removed_migrations_are_refused(empty_url: str, sql_tree: Path) -> None:
    migrate(empty_url, sql_root=sql_tree)
    first = sorted((sql_tree / "migrations").glob("*.sql"))[0]
    renamed = first.with_name(first.name[:5] + "renamed.sql")
    first.rename(renamed)
    with pytest.raises(MigrationError, match="was renamed after it was applied"):
        migrate(empty_url, sql_root=sql_tree)
    with psycopg.connect(empty_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO covenant.schema_migrations (version, name, checksum, execution_ms) "
            "VALUES (9999, 'from_the_future', repeat('0', 64), 0)"
        )
    renamed.rename(first)
    with pytest.raises(
        MigrationError, match=re.escape("9999_from_the_future.sql, which is not in")
    ):
        migrate(empty_url, sql_root=sql_tree)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["0001_a.sql", "0003_c.sql"], "gap in migration numbers: missing 0002"),
        (["0001_a.sql", "0001_b.sql"], "duplicate migration number 0001"),
        (["0001_a.sql", "2_b.sql"], "bad migration file name 2_b.sql"),
        (["0001_a.sql", "0002_Bad-Name.sql"], "bad migration file name 0002_Bad-Name.sql"),
        (["0000_zero.sql"], "migration numbers start at 0001"),
        ([], "no migrations found"),
    ],
)
def test_bad_migration_sets_are_refused_before_anything_runs(
    empty_url: str, tmp_path: Path, files: list[str], message: str
) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("CREATE TABLE covenant.should_not_exist (i integer);\n")
    with pytest.raises(MigrationError, match=message):
        migrate(empty_url, migrations_dir=folder)
    assert not _schema_exists(empty_url)


def test_missing_migrations_directory(empty_url: str, tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        migrate(empty_url, migrations_dir=tmp_path / "nowhere")
    assert not _schema_exists(empty_url)


def test_failed_step_releases_lock_and_connection(empty_url: str, sql_tree: Path) -> None:
    n = MIGRATION_COUNT + 1
    broken = sql_tree / "migrations" / f"{n:04d}_broken.sql"
    broken.write_text("CREATE TABLE covenant.half (i integer);\nSELECT 1 / 0;\n")
    with pytest.raises(MigrationError) as exc:
        migrate(empty_url, sql_root=sql_tree)
    text = str(exc.value)
    assert f"migrations/{n:04d}_broken.sql failed and was rolled back" in text
    assert "22012" in text
    assert _scalar(empty_url, "SELECT to_regclass('covenant.half')") is None, "rolled back"
    assert _scalar(empty_url, "SELECT max(version) FROM covenant.schema_migrations") == n - 1
    _no_leftovers(empty_url)
    # Fixed, and run again from a new connection with a 1 s lock timeout:
    # if anything still held the lock this would fail instead of waiting.
    broken.write_text("CREATE TABLE covenant.half (i integer);\n")
    started = time.monotonic()
    result = migrate(empty_url, sql_root=sql_tree, lock_timeout_s=1)
    assert result.applied == [f"migrations/{n:04d}_broken.sql"]
    assert time.monotonic() - started < 30
    _no_leftovers(empty_url)


def test_failed_repeatable_changes_nothing(empty_url: str, sql_tree: Path) -> None:
    migrate(empty_url, sql_root=sql_tree)
    (sql_tree / "sql" / "functions" / "zz_broken.sql").write_text(
        "CREATE OR REPLACE FUNCTION covenant.zz() RETURNS integer LANGUAGE sql AS 'SELEC 1';\n"
    )
    raise_sql = sql_tree / "sql" / "functions" / "raise.sql"
    raise_sql.write_text(raise_sql.read_text().replace("unknown error name", "UNKNOWN NAME"))
    with pytest.raises(MigrationError, match=re.escape("sql/functions/zz_broken.sql failed")):
        migrate(empty_url, sql_root=sql_tree)
    src = str(_scalar(empty_url, "SELECT prosrc FROM pg_proc WHERE proname = '_raise'"))
    assert "unknown error name" in src, "the set is one transaction: raise.sql was rolled back"
    _no_leftovers(empty_url)


def test_held_lock_times_out_with_a_clear_error(empty_url: str) -> None:
    with psycopg.connect(empty_url, autocommit=True, application_name="lock holder") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        pid = holder.info.backend_pid
        started = time.monotonic()
        with pytest.raises(MigrationError) as exc:
            migrate(empty_url, lock_timeout_s=1)
        waited = time.monotonic() - started
    assert f"another covenant migrate holds the migration lock (pid {pid}, lock holder)" in str(
        exc.value
    )
    assert "gave up after 1s" in str(exc.value)
    assert waited < 20
    assert not _schema_exists(empty_url)
    _no_leftovers(empty_url)


def test_lock_timeout_is_reset_after_acquiring(empty_url: str, sql_tree: Path) -> None:
    n = MIGRATION_COUNT + 1
    (sql_tree / "migrations" / f"{n:04d}_show_timeout.sql").write_text(
        "CREATE TABLE covenant.seen AS SELECT current_setting('lock_timeout') AS lock_timeout;\n"
    )
    server_default = _scalar(empty_url, "SHOW lock_timeout")
    migrate(empty_url, sql_root=sql_tree, lock_timeout_s=7)
    # the 7 s was for the advisory lock only; the migration ran with the server's own value
    assert _scalar(empty_url, "SELECT lock_timeout FROM covenant.seen") == server_default


def test_unreachable_server(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(MigrationError, match=rf"cannot connect to postgres@127.0.0.1:{port}/x"):
        migrate(f"postgresql://postgres:pw@127.0.0.1:{port}/x", connect_timeout_s=3)


def test_wrong_credentials(server: Server, empty_url: str) -> None:
    role = f"cv_login_{uuid.uuid4().hex[:8]}"
    with server.admin() as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'right-password'".encode())
    try:
        wrong = psycopg.conninfo.make_conninfo(
            empty_url, user=role, password="wrong-password", host="127.0.0.1"
        )
        try:
            psycopg.connect(wrong).close()
        except psycopg.OperationalError:
            pass
        else:
            pytest.skip("this server does not check passwords on TCP connections")
        with pytest.raises(MigrationError) as exc:
            migrate(wrong)
        assert f"cannot connect to {role}@127.0.0.1" in str(exc.value)
        assert "password authentication failed" in str(exc.value)
        assert "wrong-password" not in str(exc.value)
    finally:
        with server.admin() as admin:
            admin.execute(f"DROP ROLE {role}".encode())


def test_server_older_than_minimum_is_refused(empty_url: str) -> None:
    version = int(str(_scalar(empty_url, "SHOW server_version_num")))
    too_new = (version // 10000 + 1) * 10000
    with pytest.raises(MigrationError) as exc:
        migrate(empty_url, min_server_version=too_new)
    assert f"covenant needs PostgreSQL {too_new // 10000} or newer" in str(exc.value)
    assert not _schema_exists(empty_url)


@pytest.mark.parametrize("timeout", [0, -1, 0.0001, float("nan")])
def test_bad_lock_timeout_is_refused(empty_url: str, timeout: float) -> None:
    with pytest.raises(MigrationError, match=re.escape("lock timeout must be at least 0.001 s")):
        migrate(empty_url, lock_timeout_s=timeout)
    assert not _schema_exists(empty_url)


def test_status_without_privileges_is_one_clear_error(server: Server, migrated_url: str) -> None:
    role = f"cv_app_{uuid.uuid4().hex[:8]}"
    with server.admin() as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'app-pw' IN ROLE covenant_app".encode())
    try:
        url = psycopg.conninfo.make_conninfo(
            migrated_url, user=role, password="app-pw", host="127.0.0.1"
        )
        with pytest.raises(MigrationError, match=r"--status: 42501: permission denied"):
            status(url)
        with pytest.raises(MigrationError, match="42501"):
            migrate(url)
    finally:
        with server.admin() as admin:
            admin.execute(f"DROP ROLE {role}".encode())


def test_malformed_and_missing_urls() -> None:
    with pytest.raises(MigrationError, match="no database URL"):
        migrate("")
    with pytest.raises(MigrationError, match="malformed database URL"):
        migrate("postgresql://a b c d = =")


def test_cli_prints_one_line_and_exits_nonzero(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "covenant.cli",
            "migrate",
            "--database-url",
            f"postgresql://postgres:secret@127.0.0.1:{port}/db",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("covenant migrate: error: cannot connect to postgres@127.0.0.1")
    assert "secret" not in proc.stderr


def test_cli_status_and_migrate(empty_url: str) -> None:
    env = dict(os.environ, COVENANT_DATABASE_URL=empty_url)
    run = [sys.executable, "-m", "covenant.cli", "migrate"]
    pending = subprocess.run(
        [*run, "--status"], env=env, capture_output=True, text=True, check=True
    )
    assert "pending (run covenant migrate)" in pending.stdout
    done = subprocess.run(run, env=env, capture_output=True, text=True, check=True)
    assert "covenant migrate: done:" in done.stdout
    again = subprocess.run(run, env=env, capture_output=True, text=True, check=True)
    assert "already up to date" in again.stdout


def test_discover_migrations_reads_the_real_tree() -> None:
    found = discover_migrations(ROOT / "migrations")
    assert [m.version for m in found] == list(range(1, MIGRATION_COUNT + 1))
    assert all(len(m.checksum) == 64 for m in found)


def test_pg_cron_keeps_partitions_ahead_where_it_is_installed(tmp_path: Path) -> None:
    """A cluster with pg_cron: the runner schedules create_audit_partitions, once."""
    bindir = embedded.find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries for a private cluster")
    major = embedded.server_major(bindir)
    share = subprocess.run(
        [str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not Path(share, "extension", "pg_cron.control").exists():
        if os.geteuid() != 0 or not Path("/etc/debian_version").exists():
            pytest.skip(f"pg_cron not installed (apt-get install postgresql-{major}-cron)")
        embedded._apt_install([f"postgresql-{major}-cron"])
    cluster = embedded.start_cluster(
        "cron",
        home=tmp_path,
        fast=True,
        settings={"shared_preload_libraries": "'pg_cron'", "cron.database_name": "'postgres'"},
    )
    try:
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_cron")
        first = migrate(cluster.dsn)
        again = migrate(cluster.dsn)
        assert first.cron_job and again.cron_job
        with psycopg.connect(cluster.dsn) as conn:
            jobs = conn.execute(
                "SELECT jobname, schedule, command FROM cron.job WHERE jobname LIKE 'covenant-%' "
                "ORDER BY jobname"
            ).fetchall()
        assert jobs == [
            (
                "covenant-audit-partitions",
                "17 3 * * *",
                "SELECT covenant.create_audit_partitions(3)",
            ),
            ("covenant-expire-reservations", "* * * * *", "SELECT covenant.expire_reservations()"),
        ]
    finally:
        embedded.stop_cluster("cron", home=tmp_path, remove=True)


def test_without_pg_cron_the_runner_says_so(empty_url: str) -> None:
    said: list[str] = []
    result = migrate(empty_url, progress=said.append)
    assert not result.cron_job
    assert any("pg_cron is not installed here" in line for line in said)
