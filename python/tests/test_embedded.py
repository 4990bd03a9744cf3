"""The embedded cluster: no Docker, root-safe, clear messages when tools are missing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psycopg
import pytest

from covenant import embedded


def test_start_is_idempotent_and_stop_removes(tmp_path: Path) -> None:
    if embedded.find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries")
    cluster = embedded.start_cluster("idem", home=tmp_path, fast=True)
    try:
        again = embedded.start_cluster("idem", home=tmp_path, fast=True)
        assert (again.port, again.data_dir) == (cluster.port, cluster.data_dir)
        with psycopg.connect(cluster.dsn) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
            data_dir = conn.execute("SHOW data_directory").fetchone()
            assert data_dir == (cluster.data_dir,)
        with psycopg.connect(cluster.socket_dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # TCP needs the password (SCRAM); only the private socket is trusted
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(cluster.dsn_for("postgres", password="not-the-password")).close()
        owner = os.stat(cluster.data_dir).st_uid
        if os.geteuid() == 0:
            assert owner != 0, "the server must not run as root"
            # tmp_path lives under a mode-700 root directory: the data went elsewhere
            assert cluster.owns_data_dir_outside
        assert len(cluster.socket_dir) <= embedded._MAX_SOCKET_DIR
        assert stat.S_IMODE(os.stat(Path(cluster.state_dir) / "cluster.json").st_mode) == 0o600
        # a stopped cluster restarts with its data
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE survives")
        embedded.stop_cluster("idem", home=tmp_path)
        assert not cluster.is_running()
        restarted = embedded.start_cluster("idem", home=tmp_path, fast=True)
        with psycopg.connect(restarted.dsn_for("survives")) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("survives",)
    finally:
        embedded.stop_cluster("idem", home=tmp_path, remove=True)
    assert not Path(cluster.data_dir).exists()
    assert embedded.load_cluster("idem", tmp_path) is None


def test_missing_server_binaries_name_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded, "find_bindir", lambda: None)
    monkeypatch.setattr(embedded, "_is_root", lambda: False)
    with pytest.raises(embedded.EmbeddedError) as exc:
        embedded.ensure_tools()
    assert "sudo apt-get install -y postgresql" in str(exc.value)


def test_missing_pgtap_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = embedded.find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries")
    monkeypatch.setattr(embedded, "pgtap_available", lambda _b: False)
    monkeypatch.setattr(embedded, "_is_root", lambda: False)
    major = embedded.server_major(bindir)
    with pytest.raises(embedded.EmbeddedError) as exc:
        embedded.ensure_tools(pgtap=True)
    assert (
        f"sudo apt-get install -y postgresql-{major}-pgtap libtap-parser-sourcehandler-pgtap-perl"
        in str(exc.value)
    )


def test_bindir_override_must_hold_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = embedded.find_bindir()
    if real is None:
        pytest.skip("no PostgreSQL server binaries")
    monkeypatch.setenv("COVENANT_PG_BINDIR", str(tmp_path))  # empty: not a server bindir
    assert embedded.find_bindir() == real, "an override without initdb/pg_ctl/postgres is skipped"
    monkeypatch.setenv("COVENANT_PG_BINDIR", str(real))
    assert embedded.find_bindir() == real
