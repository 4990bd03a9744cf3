"""Test databases: a real PostgreSQL, found in this order.

1. ``COVENANT_TEST_DATABASE_URL`` — an existing server (``make test`` sets it
   to its throwaway cluster). The role needs CREATEDB and CREATEROLE.
2. testcontainers, when the ``testcontainers`` package is installed and a
   Docker engine answers (otherwise the reason is shown in the header).
3. The embedded private cluster (:mod:`covenant.embedded`), started for the
   session and removed at its end.

Isolation: a template database is migrated once per session; each test that
commits gets its own ``CREATE DATABASE ... TEMPLATE`` clone (``migrated_url``)
or an empty database (``empty_url``); ``conn`` is a transaction on a
per-module clone that is rolled back after the test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from covenant import embedded
from covenant.config import load_settings
from covenant.db import Connector
from covenant.ledger import Ledger
from covenant.migrate import migrate

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    """A PostgreSQL server the suite may create databases (and roles) on."""

    admin_url: str
    backend: str
    cluster: embedded.Cluster | None = None
    notes: list[str] = field(default_factory=list)

    def url_for(self, dbname: str, **overrides: str) -> str:
        return make_conninfo(self.admin_url, dbname=dbname, **overrides)

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.admin_url, autocommit=True)

    def create_database(self, template: str | None = None) -> str:
        name = f"cvt_{uuid.uuid4().hex[:16]}"
        with self.admin() as conn:
            if template:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'.encode())
            else:
                conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def _docker_reason() -> str | None:
    """None when testcontainers can be used, else why not."""
    try:
        import docker  # noqa: PLC0415 - optional dependency
        import testcontainers  # noqa: F401, PLC0415
    except ImportError:
        return "testcontainers is not installed (pip install 'covenant[dev]')"
    try:
        docker.from_env(timeout=3).ping()
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"no Docker engine answers ({first[:120]})"
    return None


_SERVER: Server | None = None


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    global _SERVER  # noqa: PLW0603 - shared with the report header
    url = load_settings().test_database_url
    if url:
        _SERVER = Server(admin_url=url, backend="COVENANT_TEST_DATABASE_URL")
        yield _SERVER
        return
    reason = _docker_reason()
    if reason is None:
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

        with PostgresContainer("postgres:15", driver=None) as pg:
            _SERVER = Server(admin_url=pg.get_connection_url(), backend="testcontainers")
            yield _SERVER
        return
    name = f"pytest-{os.getpid()}"
    cluster = embedded.start_cluster(name, fast=True)
    _SERVER = Server(
        admin_url=cluster.dsn,
        backend="embedded",
        cluster=cluster,
        notes=[f"testcontainers skipped: {reason}"],
    )
    try:
        yield _SERVER
    finally:
        embedded.stop_cluster(name, remove=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    url = load_settings().test_database_url
    if url:
        target = conninfo_to_dict(url)
        return [f"database: COVENANT_TEST_DATABASE_URL ({target.get('host')}:{target.get('port')})"]
    reason = _docker_reason()
    if reason is None:
        return ["database: testcontainers (postgres:15)"]
    return [f"database: embedded cluster; testcontainers skipped: {reason}"]


@pytest.fixture(scope="session")
def template_db(server: Server) -> Iterator[str]:
    """A database migrated once per session; tests clone it."""
    name = server.create_database()
    migrate(server.url_for(name))
    yield name
    server.drop_database(name)


@pytest.fixture
def migrated_url(server: Server, template_db: str) -> Iterator[str]:
    """A fresh, fully migrated database of this test's own."""
    name = server.create_database(template=template_db)
    yield server.url_for(name)
    server.drop_database(name)


@pytest.fixture
def empty_url(server: Server) -> Iterator[str]:
    """An empty database of this test's own (for migration tests)."""
    name = server.create_database()
    yield server.url_for(name)
    server.drop_database(name)


@pytest.fixture(scope="module")
def module_db_url(server: Server, template_db: str) -> Iterator[str]:
    name = server.create_database(template=template_db)
    yield server.url_for(name)
    server.drop_database(name)


@pytest.fixture
def conn(module_db_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A transaction on the module's migrated database, rolled back afterwards."""
    with psycopg.connect(module_db_url) as connection:
        yield connection
        connection.rollback()


@pytest.fixture
def sql_tree(tmp_path: Path) -> Path:
    """A private copy of migrations/ and sql/ that a test may edit."""
    import shutil  # noqa: PLC0415

    shutil.copytree(ROOT / "migrations", tmp_path / "migrations")
    shutil.copytree(ROOT / "sql", tmp_path / "sql", ignore=shutil.ignore_patterns("tests"))
    return tmp_path


@pytest.fixture(scope="module")
def connector(module_db_url: str) -> Iterator[Connector]:
    """A covenant connector (pool) on the module's migrated database."""
    with Connector(database_url=module_db_url) as db:
        yield db


@pytest.fixture(scope="module")
def ledger(connector: Connector) -> Ledger:
    return Ledger(connector)
