"""Crash test: kill -9 the server during a multi-writer append load.

After the restart every acknowledged append is present with its seq and hash,
and the chain verifies. Runs on a private cluster with durable settings
(fsync and synchronous_commit on), as a user's server would be.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from covenant import embedded
from covenant.migrate import migrate

APPEND = (
    "SELECT seq, entry_id, entry_hash FROM covenant.append_audit_entry("
    "'orders:crash', gen_random_uuid(), 'load', 'service:crash-test', %s::jsonb)"
)


def _kill_server(cluster: embedded.Cluster) -> None:
    pid = int(Path(cluster.data_dir, "postmaster.pid").read_text().splitlines()[0])
    subprocess.run(["pkill", "-KILL", "-P", str(pid)], check=False)  # the backends first
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):  # wait until the postmaster is gone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError("the postmaster survived SIGKILL")


def test_acknowledged_appends_survive_kill_9(tmp_path: Path) -> None:
    if embedded.find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries for a private cluster")
    cluster = embedded.start_cluster("crash", home=tmp_path, fast=False)
    try:
        migrate(cluster.dsn)
        acked: list[tuple[int, object, bytes]] = []
        lock = threading.Lock()
        enough = threading.Event()

        def writer(w: int) -> None:
            try:
                with psycopg.connect(cluster.dsn, autocommit=True) as conn:
                    i = 0
                    while True:
                        row = conn.execute(APPEND, [f'{{"w": {w}, "i": {i}}}']).fetchone()
                        assert row is not None
                        with lock:  # autocommit: returned means committed
                            acked.append((int(str(row[0])), row[1], bytes(row[2])))
                            if len(acked) >= 400:
                                enough.set()
                        i += 1
            except psycopg.Error:
                return  # the server went away mid-append: that one was never acknowledged

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        assert enough.wait(120), "the load never reached 400 appends"
        _kill_server(cluster)
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)

        restarted = embedded.start_cluster("crash", home=tmp_path, fast=False)
        with psycopg.connect(restarted.dsn) as conn:
            stored = {
                int(str(seq)): (entry_id, bytes(entry_hash))
                for seq, entry_id, entry_hash in conn.execute(
                    "SELECT seq, entry_id, entry_hash FROM covenant.audit_trail "
                    "WHERE domain_tag = 'orders:crash'"
                ).fetchall()
            }
            verdict = conn.execute(
                "SELECT ok, checked, reason FROM covenant.verify_audit_chain('orders:crash', 1)"
            ).fetchone()
        missing = [seq for seq, entry_id, h in acked if stored.get(seq) != (entry_id, h)]
        assert missing == [], f"{len(missing)} acknowledged appends lost"
        assert sorted(stored) == list(range(1, len(stored) + 1))
        assert verdict is not None and verdict[0] is True, verdict
        assert len(stored) >= len(acked)
    finally:
        embedded.stop_cluster("crash", home=tmp_path, remove=True)
