"""``Connector``: single statements in autocommit, everything else in one transaction."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from covenant.db import Conn, Connector


def test_a_single_statement_is_its_own_transaction(connector: Connector) -> None:
    # In autocommit the statement starts its transaction: now() = statement_timestamp().
    # After an explicit BEGIN sent by the client, now() is the BEGIN's time, earlier.
    row = connector.fetch_one("SELECT now() = statement_timestamp() AS own")
    assert row == {"own": True}


def test_run_keeps_several_statements_in_one_transaction(connector: Connector) -> None:
    def work(c: Conn) -> tuple[Any, Any, bool]:
        first = c.execute("SELECT pg_current_xact_id()::text AS x").fetchone()
        c.execute("SELECT pg_sleep(0.01)")
        second = c.execute(
            "SELECT pg_current_xact_id()::text AS x, now() < statement_timestamp() AS begun"
        ).fetchone()
        assert first is not None and second is not None
        return first["x"], second["x"], second["begun"]

    for _ in range(3):  # also after single statements have used the pooled connections
        connector.fetch_one("SELECT 1 AS one")
        first, second, begun = connector.run(work)
        assert first == second
        assert begun is True


def test_an_error_in_a_single_statement_leaves_the_pool_usable(connector: Connector) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero):
        connector.fetch_one("SELECT 1 / 0 AS boom")
    assert connector.fetch_one("SELECT 2 AS two") == {"two": 2}
    with connector.pool.connection() as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
