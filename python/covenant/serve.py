"""``covenant serve``: health, governance status and metrics over HTTP.

Endpoints (GET or HEAD; anything else is 405, an unknown path 404, all JSON
but ``/metrics``):

* ``/health`` — liveness of the process and its dependencies: the database
  (reachable, round-trip latency, server version, whether the applied
  migrations are exactly the ones this package ships). ``ok`` or
  ``degraded`` (migrations not current) answer 200, ``down`` (database
  unreachable) 503.
* ``/health/governance`` — quarantine breakers that are not closed, audit
  partition headroom and DEFAULT-partition rows, the last reconciliation
  (run in the background every ``COVENANT_RECONCILE_INTERVAL_S``; a run
  that could not complete is retried after ``RECONCILE_RETRY_S``). 503 when
  a breaker is open or half_open, the headroom is under 2 months, the last
  reconciliation found a failing invariant or could not run, or the
  database cannot be read.
* ``/metrics`` — :data:`covenant.metrics.REGISTRY` in the Prometheus text
  format; the database gauges are refreshed first.

Every database read of a request runs in one transaction with
``statement_timeout`` and a pool wait of ``COVENANT_HEALTH_TIMEOUT_S``, so
a slow or dead database answers ``down`` instead of hanging the probe; a
request waits for a gauge refresh already in progress at most as long.
Each read and write of a connection is bounded by the same timeout: a
client that sends nothing, or stops reading, is dropped.

Shutdown (:meth:`HealthServer.shutdown`, and SIGTERM/SIGINT under
:func:`run_server`): stop accepting (the listening socket is closed, so new
connections are refused), let in-flight requests finish for up to
``COVENANT_SHUTDOWN_GRACE_S``, stop the reconciliation loop, close the pool,
flush telemetry.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Final
from urllib.parse import urlsplit

import psycopg

from covenant import __version__, metrics, telemetry
from covenant.config import Settings, load_settings
from covenant.db import Conn, Connector
from covenant.ledger import Ledger
from covenant.migrate import MigrationError, default_sql_root, discover_migrations

__all__ = ["HealthServer", "Response", "run_server", "serve"]

log = logging.getLogger("covenant.serve")

MIN_PARTITION_MONTHS: Final = 2  # SPEC §8: at least 2 months of partitions ahead
RECONCILE_RETRY_S: Final = 5.0  # after a reconciliation that could not run (interval if shorter)
ROUTES: Final = ("/health", "/health/governance", "/metrics")
JSON_TYPE: Final = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, document: Any, *headers: tuple[str, str]) -> Response:
        body = json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        return cls(status, body, JSON_TYPE, headers)


@dataclass
class ReconcileState:
    """The last reconciliation the background loop ran."""

    last_run_at: datetime | None = None
    ok: bool | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    duration_ms: int | None = None

    def as_json(self, interval_s: float) -> dict[str, Any]:
        return {
            "last_run_at": _iso(self.last_run_at),
            "ok": self.ok,
            "failing": [f["invariant_id"] for f in self.failures],
            "failures": self.failures,
            "error": self.error,
            "duration_ms": self.duration_ms,
            "interval_s": interval_s,
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _short(exc: BaseException) -> str:
    """One line about an error, for a JSON body (never the DSN: psycopg does not echo it)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]


# Control characters (C0, DEL, C1) and the backslash, escaped as http.server's own log does.
_CONTROL_CHARS: Final = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    ord("\\"): "\\\\"
}


class _HTTPServer(ThreadingHTTPServer):
    """A threading server that counts requests in flight, so shutdown can drain them."""

    daemon_threads = True  # a request still running after the grace period does not hold exit
    block_on_close = False  # draining is ours, bounded (drain())

    def __init__(self, address: tuple[str, int], app: HealthServer) -> None:
        self.app = app
        self._in_flight = 0
        self._idle = threading.Condition()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # runs on the serving thread: once serve_forever() has returned, nothing is added
        with self._idle:
            self._in_flight += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that resets or hangs up mid-response: a log line, not a traceback on stderr
        log.debug("connection from %s failed", client_address, exc_info=True)

    def _done(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    @property
    def in_flight(self) -> int:
        with self._idle:
            return self._in_flight

    def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight, at most ``timeout`` seconds; whether it drained."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = f"covenant/{__version__}"

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    protocol_version = "HTTP/1.0"  # one request per connection: in flight = connection

    def setup(self) -> None:
        # Every read and write of the connection is bounded: a client that sends
        # nothing (or stops reading) is dropped instead of holding a thread, and
        # the shutdown, forever.
        super().setup()
        self.connection.settimeout(self.server.app.timeout_s)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.command in ("GET", "HEAD"):
            return True
        # any other method, known to http.server or not (TRACE, CONNECT, FOO): 405
        self._send(
            Response.json(
                HTTPStatus.METHOD_NOT_ALLOWED,
                {"error": "method_not_allowed", "allowed": ["GET", "HEAD"]},
                ("Allow", "GET, HEAD"),
            ),
            send_body=True,
        )
        return False

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (400, 414, 431, 505, ...): JSON like ours, not HTML."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        self.request_version = self.protocol_version  # a status line even before one is parsed
        status = HTTPStatus(code)
        body = Response.json(status, {"error": status.name.lower()})
        self._send(body, send_body=self.command != "HEAD")

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        path = urlsplit(self.path).path
        route = path if path in ROUTES else "unknown"
        with telemetry.span(
            "covenant.serve.request", **{"http.method": self.command, "http.route": route}
        ) as span:
            try:
                response = self.server.app.route(path)
            except Exception:  # a bug here must still answer, and say nothing internal
                log.exception("%s %s failed", self.command, route)
                response = Response.json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal"})
            span.set(**{"http.status_code": response.status})
        self._send(response, send_body=send_body)

    def _send(self, response: Response, *, send_body: bool) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        # the request line is the client's: no raw control characters into the log
        log.debug("%s %s", self.address_string(), (format % args).translate(_CONTROL_CHARS))


class HealthServer:
    """The server behind ``covenant serve``: :meth:`start`, then :meth:`shutdown`.

    ``port=0`` binds a free port (see :attr:`port`). Arguments left ``None``
    come from the settings (``COVENANT_*``).
    """

    def __init__(
        self,
        database_url: str,
        port: int,
        *,
        host: str | None = None,
        settings: Settings | None = None,
        reconcile_interval_s: float | None = None,
        grace_s: float | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self.host = self.settings.serve_host if host is None else host
        self.requested_port = port
        self.reconcile_interval_s = float(
            self.settings.reconcile_interval_s
            if reconcile_interval_s is None
            else reconcile_interval_s
        )
        self.reconcile_retry_s = min(RECONCILE_RETRY_S, self.reconcile_interval_s)
        self.grace_s = float(self.settings.shutdown_grace_s if grace_s is None else grace_s)
        self.timeout_s = float(self.settings.health_timeout_s if timeout_s is None else timeout_s)
        self.db = Connector(self.settings, database_url=database_url)
        self.ledger = Ledger(self.db)
        self.started_at = datetime.now(UTC)
        self._expected = self._expected_migrations()
        self._httpd: _HTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._reconcile_lock = threading.Lock()
        self._reconcile = ReconcileState()
        self._refresh_lock = threading.Lock()
        self._shutdown_lock = threading.Lock()
        self._shut_down = False

    # -- lifecycle -------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> HealthServer:
        """Bind and serve in background threads; the database may still be down."""
        self._httpd = _HTTPServer((self.host, self.requested_port), self)  # may raise: port taken
        self.db.open(wait=False)  # /health reports a dead database; it does not stop serving
        serving = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="covenant-serve",
            daemon=True,
        )
        reconciling = threading.Thread(
            target=self._reconcile_loop, name="covenant-reconcile", daemon=True
        )
        self._threads = [serving, reconciling]
        for thread in self._threads:
            thread.start()
        log.info("listening on %s", self.url)
        return self

    def shutdown(self) -> bool:
        """Stop accepting, drain in-flight requests (bounded), stop the loop, close the pool.

        Returns whether every in-flight request finished within the grace
        period. Safe to call twice.
        """
        with self._shutdown_lock:
            if self._shut_down:
                return True
            self._shut_down = True
        deadline = time.monotonic() + self.grace_s
        self._stop.set()
        drained = True
        if self._httpd is not None:
            self._httpd.shutdown()  # serve_forever() returns: nothing new is accepted
            self._httpd.server_close()  # and the socket is gone: new connections are refused
            drained = self._httpd.drain(self.grace_s)
            if not drained:
                log.warning(
                    "%d request(s) still running after %.0f s; closing anyway",
                    self._httpd.in_flight,
                    self.grace_s,
                )
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.db.close()
        telemetry.shutdown(max(1.0, deadline - time.monotonic()))
        log.info("stopped")
        return drained

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.shutdown()

    # -- routing ---------------------------------------------------------------

    def route(self, path: str) -> Response:
        """The response for a GET of ``path``."""
        if path == "/health":
            return self.health()
        if path == "/health/governance":
            return self.governance()
        if path == "/metrics":
            return self.metrics()
        return Response.json(
            HTTPStatus.NOT_FOUND, {"error": "not_found", "endpoints": list(ROUTES)}
        )

    @contextmanager
    def _transaction(self) -> Iterator[Conn]:
        """A pooled transaction bounded by the health timeout (pool wait and each statement)."""
        with self.db.pool.connection(timeout=self.timeout_s) as conn, conn.transaction():
            conn.execute(
                "SELECT pg_catalog.set_config('statement_timeout', %s, true)",
                [str(int(self.timeout_s * 1000))],
            )
            yield conn

    # -- /health ---------------------------------------------------------------

    def _expected_migrations(self) -> dict[int, str] | None:
        try:
            found = discover_migrations(default_sql_root() / "migrations")
        except MigrationError:
            log.warning("no migrations found; /health cannot compare them")
            return None
        return {m.version: m.checksum for m in found}

    def _migrations(self, conn: Conn) -> dict[str, Any]:
        if self._expected is None:
            return {"current": None, "reason": "this installation ships no migrations"}
        try:
            with conn.transaction():  # a savepoint: a refusal leaves the transaction usable
                rows = conn.execute(
                    "SELECT version, checksum FROM covenant.schema_migrations"
                ).fetchall()
        except psycopg.errors.InsufficientPrivilege:
            return {"current": None, "reason": "covenant.schema_migrations is not readable"}
        except psycopg.errors.UndefinedTable:
            rows = []
        applied = {int(r["version"]): str(r["checksum"]) for r in rows}
        pending = sorted(set(self._expected) - set(applied))
        unknown = sorted(set(applied) - set(self._expected))
        edited = sorted(v for v, c in applied.items() if self._expected.get(v, c) != c)
        return {
            "current": not (pending or unknown or edited),
            "applied": len(applied),
            "expected": len(self._expected),
            "pending": pending,
            "unknown": unknown,
            "edited": edited,
        }

    def health(self) -> Response:
        database: dict[str, Any] = {"reachable": False}
        started = time.perf_counter()
        try:
            with self._transaction() as conn:
                row = conn.execute(
                    "SELECT pg_catalog.current_setting('server_version') AS server_version"
                ).fetchone()
                database["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
                database["reachable"] = True
                database["server_version"] = None if row is None else row["server_version"]
                database["migrations"] = self._migrations(conn)
        except Exception as exc:
            database["error"] = _short(exc)
        if not database["reachable"]:
            status = "down"
        elif database["migrations"].get("current") is False:
            status = "degraded"
        else:
            status = "ok"
        document = {
            "status": status,
            "version": __version__,
            "started_at": _iso(self.started_at),
            "dependencies": {"database": database},
        }
        code = HTTPStatus.SERVICE_UNAVAILABLE if status == "down" else HTTPStatus.OK
        return Response.json(code, document)

    # -- /health/governance ----------------------------------------------------

    def _refresh(self) -> metrics.DatabaseState:
        # One refresh at a time (the gauges are set as a whole); a scrape waits
        # for the one in progress at most the health timeout, not in a queue.
        if not self._refresh_lock.acquire(timeout=self.timeout_s):
            metrics.record_refresh_failure()
            raise TimeoutError(
                f"another refresh of the database gauges is running after {self.timeout_s:g} s"
            )
        try:
            with self._transaction() as conn:
                return metrics.refresh_database_gauges(self.db, conn=conn)
        except Exception:
            metrics.record_refresh_failure()
            raise
        finally:
            self._refresh_lock.release()

    def governance(self) -> Response:
        problems: list[str] = []
        warnings: list[str] = []
        document: dict[str, Any] = {"version": __version__}
        try:
            state = self._refresh()
        except Exception as exc:
            problems.append("database: cannot read governance state")
            document["database_error"] = _short(exc)
            document["quarantine"] = None
            document["partitions"] = None
        else:
            document["quarantine"] = {
                "domains": [q.model_dump(mode="json") for q in state.quarantines],
                "open": sum(1 for q in state.quarantines if q.state == "open"),
                "half_open": sum(1 for q in state.quarantines if q.state == "half_open"),
            }
            for q in state.quarantines:
                problems.append(f"quarantine: {q.domain_tag} is {q.state}")
            p = state.partitions
            document["partitions"] = {
                **p.model_dump(mode="json"),
                "min_months_ahead": MIN_PARTITION_MONTHS,
            }
            if p.months_ahead < MIN_PARTITION_MONTHS:
                problems.append(
                    f"partitions: {p.months_ahead} month(s) ahead, fewer than "
                    f"{MIN_PARTITION_MONTHS} (covenant partitions ensure)"
                )
            if p.default_rows:
                warnings.append(f"partitions: {p.default_rows} row(s) in the DEFAULT partition")
        with self._reconcile_lock:
            reconcile = self._reconcile.as_json(self.reconcile_interval_s)
        document["reconciliation"] = reconcile
        if reconcile["error"] is not None:
            problems.append("reconciliation: the last run failed to complete")
        elif reconcile["ok"] is False:
            problems.append("reconciliation: failing " + ", ".join(reconcile["failing"]))
        elif reconcile["last_run_at"] is None:
            warnings.append("reconciliation: not run yet")
        document["status"] = "failing" if problems else "ok"
        document["problems"] = problems
        document["warnings"] = warnings
        code = HTTPStatus.SERVICE_UNAVAILABLE if problems else HTTPStatus.OK
        return Response.json(code, document)

    def reconcile_now(self) -> ReconcileState:
        """Run ``Ledger.reconcile()`` once and record it (the loop calls this)."""
        started = time.perf_counter()
        try:
            # the pool wait is bounded (a dead database must not pin the loop), the
            # reconciliation itself is not: it reads every account
            with self.db.pool.connection(timeout=self.timeout_s) as conn, conn.transaction():
                report = self.ledger.reconcile(conn=conn)
        except Exception as exc:
            log.warning("reconciliation failed to run: %s", _short(exc))
            state = ReconcileState(
                last_run_at=datetime.now(UTC),
                error=_short(exc),
                duration_ms=int((time.perf_counter() - started) * 1000),
            )
            metrics.record_reconciliation(None)
        else:
            state = ReconcileState(
                last_run_at=datetime.now(UTC),
                ok=report.ok,
                failures=[
                    {"invariant_id": c.invariant_id, "failure_code": c.failure_code}
                    for c in report.failures
                ],
                duration_ms=int((time.perf_counter() - started) * 1000),
            )
            metrics.record_reconciliation(len(report.failures))
            if not report.ok:
                log.warning(
                    "reconciliation failing: %s",
                    ", ".join(f"{c.invariant_id} {c.failure_code}" for c in report.failures),
                )
        with self._reconcile_lock:
            self._reconcile = state
        return state

    def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            # a run that could not complete (the database not up yet, a blip) is
            # retried soon: /health/governance must not report it for a whole interval
            failed = self.reconcile_now().error is not None
            if self._stop.wait(self.reconcile_retry_s if failed else self.reconcile_interval_s):
                return

    # -- /metrics --------------------------------------------------------------

    def metrics(self) -> Response:
        try:
            self._refresh()
        except Exception as exc:  # stale gauges, covenant_database_up 0: still a scrape
            log.warning("refreshing the database gauges failed: %s", _short(exc))
        return Response(HTTPStatus.OK, metrics.render(), metrics.CONTENT_TYPE)


def serve(
    database_url: str,
    port: int,
    *,
    host: str | None = None,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
    settings: Settings | None = None,
    on_start: Callable[[HealthServer], None] | None = None,
) -> bool:
    """Serve until ``stop`` is set, then shut down gracefully; whether it drained.

    For a thread: ``ready`` is set once the socket listens (``on_start``
    receives the server first, e.g. to learn the port of ``port=0``).
    """
    server = HealthServer(database_url, port, host=host, settings=settings)
    server.start()
    try:
        if on_start is not None:
            on_start(server)
        if ready is not None:
            ready.set()
        stop = stop or threading.Event()
        while not stop.wait(0.5):  # a timed wait: signal handlers run promptly in the main thread
            pass
    finally:
        drained = server.shutdown()
    return drained


def run_server(
    database_url: str,
    port: int,
    *,
    host: str | None = None,
    settings: Settings | None = None,
) -> int:
    """``covenant serve``: serve until SIGTERM or SIGINT, then shut down; the exit code (0)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s, shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve(database_url, port, host=host, settings=settings, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
