"""Benchmark: covenant migrate (fresh install and no-op) and per-test DB clones.

    .venv/bin/python bench/migrate_bench.py [--database-url URL] [--runs N]

Without --database-url it starts the embedded cluster ``bench`` (fsync on,
as a user's server would be) and removes it afterwards. Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import psycopg
from psycopg.conninfo import make_conninfo

from covenant import embedded
from covenant.migrate import migrate


def _ms(samples: list[float]) -> str:
    samples_ms = sorted(s * 1000 for s in samples)
    p95 = samples_ms[min(len(samples_ms) - 1, int(len(samples_ms) * 0.95))]
    return f"median {statistics.median(samples_ms):7.1f} ms   p95 {p95:7.1f} ms   n={len(samples)}"


def run(admin_url: str, runs: int) -> None:
    fresh: list[float] = []
    noop: list[float] = []
    clone: list[float] = []
    template = f"bench_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{template}"'.encode())
    migrate(make_conninfo(admin_url, dbname=template))
    try:
        for _ in range(runs):
            name = f"bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"'.encode())
            url = make_conninfo(admin_url, dbname=name)
            started = time.perf_counter()
            migrate(url)
            fresh.append(time.perf_counter() - started)
            started = time.perf_counter()
            migrate(url)
            noop.append(time.perf_counter() - started)
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())
                started = time.perf_counter()
                admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'.encode())
                clone.append(time.perf_counter() - started)
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'.encode())
    print(f"covenant migrate, fresh install   {_ms(fresh)}")
    print(f"covenant migrate, up to date      {_ms(noop)}")
    print(f"CREATE DATABASE ... TEMPLATE      {_ms(clone)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="a superuser URL; default: embedded cluster")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if args.database_url:
        run(args.database_url, args.runs)
        return
    cluster = embedded.start_cluster("bench")
    try:
        print(f"server: embedded cluster (fsync on), port {cluster.port}")
        run(cluster.dsn, args.runs)
    finally:
        embedded.stop_cluster("bench", remove=True)


if __name__ == "__main__":
    main()
