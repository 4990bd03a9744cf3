"""The optional testcontainers backend: used when a Docker engine answers."""

from __future__ import annotations

import psycopg
import pytest
from conftest import _docker_reason

from covenant.migrate import migrate


@pytest.mark.containers
def test_migrate_on_a_postgres_container() -> None:
    reason = _docker_reason()
    if reason is not None:
        pytest.skip(f"testcontainers backend not exercised: {reason}")
    from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

    with PostgresContainer("postgres:15", driver=None) as pg:
        url = pg.get_connection_url()
        assert len(migrate(url).applied) >= 1
        assert not migrate(url).changed_anything
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regnamespace('covenant') IS NOT NULL").fetchone() == (
                True,
            )
