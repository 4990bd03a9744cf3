"""``covenant serve``: the endpoints, governance status, and graceful shutdown."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from covenant import __version__
from covenant.config import load_settings
from covenant.db import Connector
from covenant.serve import HealthServer, Response, serve

ACTOR = "service:serve-test"
WAIT = 30.0  # an upper bound for anything a test waits for, never an expectation


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(url: str, method: str = "GET", timeout: float = WAIT) -> Reply:
    req = urllib.request.Request(url, method=method)  # noqa: S310 - http to a local test server
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, dict(err.headers), err.read())


def eventually(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting: {what}")


def refused(port: int) -> bool:
    """Whether a new connection is refused (one queued while the socket closed is reset)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False


def quarantine(url: str, tag: str) -> None:
    with Connector(load_settings({"COVENANT_POOL_MIN_SIZE": "0"}), database_url=url) as db:
        for _ in range(3):
            db.execute(
                "SELECT * FROM covenant.record_audit_verification_failure(%s, %s, 'test')",
                [tag, ACTOR],
            )


@pytest.fixture
def app(migrated_url: str) -> Iterator[HealthServer]:
    server = HealthServer(
        migrated_url, 0, host="127.0.0.1", reconcile_interval_s=3600, grace_s=10, timeout_s=5
    )
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


def test_health_reports_the_database(app: HealthServer) -> None:
    reply = request(app.url + "/health")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.headers["Server"] == f"covenant/{__version__}"  # no Python version
    doc = reply.json()
    assert doc["status"] == "ok"
    assert doc["version"]
    database = doc["dependencies"]["database"]
    assert database["reachable"] is True
    assert database["latency_ms"] >= 0
    assert database["server_version"]
    assert database["migrations"]["current"] is True
    assert database["migrations"]["pending"] == []
    head = request(app.url + "/health", method="HEAD")
    assert (head.status, head.body) == (200, b"")


def test_health_is_degraded_when_migrations_are_not_current(
    app: HealthServer, migrated_url: str
) -> None:
    with Connector(database_url=migrated_url) as db:
        db.execute("DELETE FROM covenant.schema_migrations WHERE version = 3")
    doc = request(app.url + "/health")
    assert doc.status == 200
    assert doc.json()["status"] == "degraded"
    assert doc.json()["dependencies"]["database"]["migrations"]["pending"] == [3]


def test_health_is_down_without_a_database() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://nobody@127.0.0.1:{port}/none?connect_timeout=1"
    settings = load_settings({"COVENANT_POOL_MIN_SIZE": "0", "COVENANT_CONNECT_TIMEOUT_S": "1"})
    with HealthServer(
        url, 0, host="127.0.0.1", settings=settings, reconcile_interval_s=3600, timeout_s=1
    ) as server:
        reply = request(server.url + "/health")
        assert reply.status == 503
        assert reply.json()["status"] == "down"
        assert reply.json()["dependencies"]["database"]["reachable"] is False
        assert "error" in reply.json()["dependencies"]["database"]
        governance = request(server.url + "/health/governance")
        assert governance.status == 503
        assert governance.json()["problems"][0].startswith("database")
        scrape = request(server.url + "/metrics")
        assert scrape.status == 200  # a scrape still answers, with the database down
        assert b"covenant_database_up 0.0" in scrape.body


def test_governance_ok(app: HealthServer) -> None:
    app.reconcile_now()
    reply = request(app.url + "/health/governance")
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert doc["status"] == "ok"
    assert doc["problems"] == []
    assert doc["quarantine"] == {"domains": [], "open": 0, "half_open": 0}
    assert doc["partitions"]["months_ahead"] >= 2
    assert doc["partitions"]["default_rows"] == 0
    assert doc["reconciliation"]["ok"] is True
    assert doc["reconciliation"]["failing"] == []
    assert doc["reconciliation"]["last_run_at"]


def test_governance_503_when_a_domain_is_quarantined(app: HealthServer, migrated_url: str) -> None:
    tag = f"serve:{uuid.uuid4().hex[:8]}"
    quarantine(migrated_url, tag)
    reply = request(app.url + "/health/governance")
    assert reply.status == 503
    doc = reply.json()
    assert doc["status"] == "failing"
    assert doc["quarantine"]["open"] == 1
    (entry,) = doc["quarantine"]["domains"]
    assert (entry["domain_tag"], entry["state"]) == (tag, "open")
    assert entry["since"] and entry["reason"]
    assert f"quarantine: {tag} is open" in doc["problems"]
    # and the gauge says so at the next scrape
    scrape = request(app.url + "/metrics").body.decode()
    assert f'covenant_audit_quarantine_state{{domain_tag="{tag}"}} 2.0' in scrape


def test_governance_503_when_reconciliation_fails(app: HealthServer, migrated_url: str) -> None:
    with Connector(database_url=migrated_url) as db:
        account = uuid.uuid4()
        db.execute(
            "SELECT covenant.create_account(%s, 'user', 'service:billing', %s)",
            [account, uuid.uuid4()],
        )
        db.execute(
            "SELECT covenant.allocate_credits(%s, 100, 'deposit', 'service:billing', %s)",
            [account, uuid.uuid4()],
        )
        db.execute(
            "UPDATE covenant.credit_lots SET original_allocation = original_allocation + 1, "
            "balance = balance + 1"
        )
    state = app.reconcile_now()
    assert state.ok is False
    reply = request(app.url + "/health/governance")
    assert reply.status == 503
    doc = reply.json()
    assert doc["reconciliation"]["failing"] == ["I-4"]
    assert doc["reconciliation"]["failures"] == [
        {"invariant_id": "I-4", "failure_code": "PLATFORM_CONSERVATION_DRIFT"}
    ]
    assert "reconciliation: failing I-4" in doc["problems"]


def test_the_background_loop_reconciles(migrated_url: str) -> None:
    with HealthServer(migrated_url, 0, host="127.0.0.1", reconcile_interval_s=1) as server:
        eventually(
            lambda: request(server.url + "/health/governance").json()["reconciliation"][
                "last_run_at"
            ],
            "a first reconciliation",
        )
        first = request(server.url + "/health/governance").json()["reconciliation"]["last_run_at"]
        eventually(
            lambda: (
                request(server.url + "/health/governance").json()["reconciliation"]["last_run_at"]
                != first
            ),
            "a second reconciliation",
        )


def test_metrics_exposition(app: HealthServer) -> None:
    reply = request(app.url + "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    text = reply.body.decode()
    for series in (
        "covenant_audit_partition_headroom_months",
        "covenant_audit_default_partition_rows",
        'covenant_audit_quarantined_domains{state="open"}',
        'covenant_lock_waiters{locktype="advisory"}',
        "covenant_serialization_retries_total",
        "covenant_database_up 1.0",
    ):
        assert series in text


def test_unknown_paths_and_methods(app: HealthServer) -> None:
    missing = request(app.url + "/admin")
    assert missing.status == 404
    assert missing.json()["error"] == "not_found"
    assert request(app.url + "/health/").status == 404
    posted = request(app.url + "/health", method="POST")
    assert posted.status == 405
    assert posted.headers["Allow"] == "GET, HEAD"
    assert posted.json()["error"] == "method_not_allowed"
    assert request(app.url + "/health?verbose=1").status == 200  # a query string is ignored


class SlowServer(HealthServer):
    """``/slow`` waits for the test to release it: an in-flight request on demand."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()
        self.release = threading.Event()

    def route(self, path: str) -> Response:
        if path == "/slow":
            self.entered.set()
            self.release.wait(WAIT)
            return Response.json(200, {"slow": "done"})
        return super().route(path)


def test_shutdown_drains_in_flight_requests_and_refuses_new_ones(migrated_url: str) -> None:
    server = SlowServer(migrated_url, 0, host="127.0.0.1", reconcile_interval_s=3600, grace_s=WAIT)
    server.start()
    port = server.port
    replies: queue.Queue[Reply] = queue.Queue()
    client = threading.Thread(target=lambda: replies.put(request(server.url + "/slow")))
    client.start()
    assert server.entered.wait(WAIT)

    drained: list[bool] = []
    stopper = threading.Thread(target=lambda: drained.append(server.shutdown()))
    stopper.start()
    eventually(lambda: refused(port), "the listening socket to close")
    assert replies.empty()  # the in-flight request is still running
    assert stopper.is_alive()  # and shutdown waits for it
    assert not server.db.pool.closed

    server.release.set()
    client.join(WAIT)
    stopper.join(WAIT)
    reply = replies.get_nowait()
    assert (reply.status, reply.json()) == (200, {"slow": "done"})
    assert drained == [True]
    assert server.db.pool.closed
    assert refused(port)


def test_shutdown_gives_up_after_the_grace_period(migrated_url: str) -> None:
    server = SlowServer(migrated_url, 0, host="127.0.0.1", reconcile_interval_s=3600, grace_s=0)
    server.start()
    client = threading.Thread(target=lambda: request(server.url + "/slow"), daemon=True)
    client.start()
    assert server.entered.wait(WAIT)
    try:
        assert server.shutdown() is False  # the request was still running
        assert server.db.pool.closed
    finally:
        server.release.set()
        client.join(WAIT)


def test_serve_in_a_thread(migrated_url: str) -> None:
    ready, stop = threading.Event(), threading.Event()
    started: list[HealthServer] = []
    result: list[bool] = []
    thread = threading.Thread(
        target=lambda: result.append(
            serve(
                migrated_url, 0, host="127.0.0.1", ready=ready, stop=stop, on_start=started.append
            )
        )
    )
    thread.start()
    try:
        assert ready.wait(WAIT)
        assert request(started[0].url + "/health").json()["status"] == "ok"
    finally:
        stop.set()
        thread.join(WAIT)
    assert result == [True]
    assert started[0].db.pool.closed


def test_covenant_serve_exits_0_on_sigterm(migrated_url: str) -> None:
    env = {**os.environ, "COVENANT_LOG_LEVEL": "INFO", "COVENANT_DATABASE_URL": ""}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "covenant.cli", "serve"),
            *("--database-url", migrated_url, "--port", "0", "--host", "127.0.0.1"),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    stderr = proc.stderr
    reader = threading.Thread(target=lambda: [lines.put(line) for line in stderr], daemon=True)
    reader.start()
    try:
        url = None
        deadline = time.monotonic() + WAIT
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, "covenant serve exited early"
                continue
            if "listening on " in line:
                url = line.split("listening on ", 1)[1].strip()
        assert url, "covenant serve never said where it listens"
        eventually(lambda: request(url + "/health").status == 200, "/health to answer")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    reader.join(WAIT)
    said = []
    while not lines.empty():
        said.append(lines.get_nowait())
    assert any("SIGTERM" in line for line in said), said
    assert any("stopped" in line for line in said), said


class BrokenServer(HealthServer):
    def route(self, path: str) -> Response:
        raise RuntimeError("a bug with a secret in its message")


def test_a_failing_handler_answers_500_without_details(migrated_url: str) -> None:
    with BrokenServer(migrated_url, 0, host="127.0.0.1", reconcile_interval_s=3600) as server:
        reply = request(server.url + "/health")
    assert (reply.status, reply.json()) == (500, {"error": "internal"})


def test_any_other_method_is_405_json(app: HealthServer) -> None:
    for method in ("TRACE", "CONNECT", "PROPFIND", "FOO"):
        reply = request(app.url + "/health", method=method)
        assert reply.status == 405, (method, reply.status, reply.body[:80])
        assert reply.headers["Allow"] == "GET, HEAD"
        assert reply.json()["error"] == "method_not_allowed"


def _recv_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_client_that_sends_nothing_is_dropped_and_does_not_hold_shutdown(
    migrated_url: str,
) -> None:
    server = HealthServer(
        migrated_url, 0, host="127.0.0.1", reconcile_interval_s=3600, grace_s=WAIT, timeout_s=1
    )
    server.start()
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    try:
        # the server hangs up on a silent client after the timeout (not after WAIT)
        assert _recv_all(idle) == b""
        # and one that is silent when shutdown begins does not count as a request in flight
        again = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
        eventually(lambda: server._httpd is not None and server._httpd.in_flight == 1, "accept")
        assert server.shutdown() is True
        again.close()
    finally:
        idle.close()
        server.shutdown()


def test_control_characters_in_a_request_are_escaped_in_the_log(
    app: HealthServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="covenant.serve")
    with socket.create_connection(("127.0.0.1", app.port), timeout=WAIT) as sock:
        sock.sendall(b"GET /x\x1b[2J\x07 HTTP/1.0\r\n\r\n")
        assert _recv_all(sock).startswith(b"HTTP/1.0 404")
    eventually(lambda: any("404" in r.getMessage() for r in caplog.records), "the access log")
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "\x1b" not in logged and "\x07" not in logged
    assert "\\x1b" in logged


def test_a_stuck_refresh_does_not_queue_scrapes_past_the_timeout(migrated_url: str) -> None:
    with HealthServer(
        migrated_url, 0, host="127.0.0.1", reconcile_interval_s=3600, timeout_s=1
    ) as server:
        with server._refresh_lock:  # another refresh that does not come back
            scrape = request(server.url + "/metrics", timeout=10)
            assert scrape.status == 200
            assert b"covenant_database_up 0.0" in scrape.body
            governance = request(server.url + "/health/governance", timeout=10)
            assert governance.status == 503
            assert governance.json()["problems"][0].startswith("database")
        # once it is released, scrapes refresh again
        assert b"covenant_database_up 1.0" in request(server.url + "/metrics").body


def test_malformed_requests_get_json_refusals(app: HealthServer) -> None:
    for raw, status in (
        (b"GET /health HTTP/2.0\r\n\r\n", 505),
        (b"GET /health HTTP/1.0\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.0\r\n\r\n", 414),
        (b"NONSENSE\r\n\r\n", 400),
    ):
        with socket.create_connection(("127.0.0.1", app.port), timeout=WAIT) as sock:
            sock.sendall(raw)
            head, _, body = _recv_all(sock).partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == str(status).encode(), head
        assert b"application/json" in head
        assert json.loads(body)["error"]


def test_a_reconciliation_that_could_not_run_is_retried_before_the_interval(
    migrated_url: str,
) -> None:
    """A database not up yet at start must not leave /health/governance 503 for a whole interval."""
    server = HealthServer(migrated_url, 0, host="127.0.0.1", reconcile_interval_s=3600)
    server.reconcile_retry_s = 0.2
    real = server.ledger.reconcile
    calls: list[int] = []

    def flaky(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database starting up")
        return real(**kwargs)

    server.ledger.reconcile = flaky  # type: ignore[method-assign]
    with server:
        eventually(
            lambda: (
                request(server.url + "/health/governance").json()["reconciliation"]["ok"] is True
            ),
            "a retried reconciliation",
        )
        assert request(server.url + "/health/governance").status == 200
    assert len(calls) == 2  # then the interval again, not a retry loop
