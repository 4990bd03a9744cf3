"""The one connection module: connections, a pool, and retried transactions.

Every query covenant's adapters send goes through :class:`Connector`, which
maps database errors to covenant exceptions (:func:`covenant.errors.translate`)
and retries a whole transaction on 40001/40P01 with exponential backoff and
full jitter (``COVENANT_RETRY_MAX_ATTEMPTS`` tries in all). Retries and
exhausted retries are counted on the connector and in the
``covenant_serialization_retries*`` metrics (:mod:`covenant.metrics`).

Callers may pass their own connection (``conn=``) so covenant calls compose
with the application's own transaction; then covenant neither commits nor
retries — the transaction is the caller's.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from covenant import metrics
from covenant.config import Settings, load_settings
from covenant.errors import RETRYABLE_SQLSTATES, translate

T = TypeVar("T")
Conn = psycopg.Connection[dict[str, Any]]


@dataclass
class RetryStats:
    retries: int = 0
    exhausted: int = 0


class Connector:
    """A small front of psycopg: ``execute``, ``fetch_one``, ``fetch_all``, ``transaction``."""

    def __init__(self, settings: Settings | None = None, *, database_url: str | None = None):
        self.settings = settings or load_settings()
        url = database_url or self.settings.database_url
        if not url:
            raise ValueError("no database URL: set COVENANT_DATABASE_URL or pass database_url")
        self.pool: ConnectionPool[Conn] = ConnectionPool(
            url,
            min_size=self.settings.pool_min_size,
            max_size=self.settings.pool_max_size,
            kwargs={
                "row_factory": dict_row,
                "connect_timeout": self.settings.connect_timeout_s,
                "application_name": "covenant",
                # Single statements go as they are (their own transaction);
                # everything else runs in ``conn.transaction()`` (BEGIN ... COMMIT).
                "autocommit": True,
            },
            open=False,
            connection_class=psycopg.Connection,
            # How long a caller waits for a pooled connection before failing
            # (PoolTimeout): bounded like a new connection, not psycopg_pool's 30 s.
            timeout=self.settings.connect_timeout_s,
        )
        self.stats = RetryStats()
        self._lock = threading.Lock()

    def open(self, wait: bool = True) -> Connector:
        self.pool.open(wait=wait, timeout=self.settings.connect_timeout_s)
        return self

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Connector:
        return self.open()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def run(
        self, work: Callable[[Conn], T], *, conn: Conn | None = None, single: bool = False
    ) -> T:
        """Run ``work`` in a transaction, retried on serialization failure/deadlock.

        ``single``: ``work`` sends exactly one statement, which is then sent in
        autocommit mode: the statement is its own transaction, without the
        BEGIN and COMMIT round trips. Besides the latency, this matters for
        the locks a covenant function takes (an audit domain's, an account's):
        they are held until commit, and a COMMIT sent from the client comes a
        round trip — and, under load, a scheduling delay — later.
        """
        if conn is not None:
            try:
                return work(conn)
            except psycopg.Error as exc:
                raise translate(exc) from exc
        attempts = self.settings.retry_max_attempts
        for attempt in range(1, attempts + 1):
            try:
                with self.pool.connection() as pooled:
                    if single:
                        return work(pooled)
                    with pooled.transaction():
                        return work(pooled)
            except psycopg.Error as exc:
                if exc.sqlstate in RETRYABLE_SQLSTATES and attempt < attempts:
                    with self._lock:
                        self.stats.retries += 1
                    metrics.record_retry(exc.sqlstate, exhausted=False)
                    time.sleep(self._backoff(attempt))
                    continue
                if exc.sqlstate in RETRYABLE_SQLSTATES:
                    with self._lock:
                        self.stats.exhausted += 1
                    metrics.record_retry(exc.sqlstate, exhausted=True)
                raise translate(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        cap = self.settings.retry_base_delay_ms * (2 ** (attempt - 1)) / 1000
        return random.uniform(0, cap)  # noqa: S311 - jitter, not cryptography

    def execute(
        self,
        query: LiteralString,
        params: Sequence[Any] | dict[str, Any] | None = None,
        *,
        conn: Conn | None = None,
    ) -> None:
        self.run(lambda c: c.execute(query, params), conn=conn, single=True)

    def fetch_one(
        self,
        query: LiteralString,
        params: Sequence[Any] | dict[str, Any] | None = None,
        *,
        conn: Conn | None = None,
    ) -> dict[str, Any] | None:
        return self.run(lambda c: c.execute(query, params).fetchone(), conn=conn, single=True)

    def fetch_all(
        self,
        query: LiteralString,
        params: Sequence[Any] | dict[str, Any] | None = None,
        *,
        conn: Conn | None = None,
    ) -> list[dict[str, Any]]:
        return self.run(lambda c: c.execute(query, params).fetchall(), conn=conn, single=True)
