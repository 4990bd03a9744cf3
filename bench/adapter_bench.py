"""The Python adapter against pgbench, calling the same SQL function in the same run.

    .venv/bin/python bench/adapter_bench.py [--seconds 10] [--rounds 2] [--database-url URL]

What it measures (issue 5's target: the adapter at >= 80 % of pgbench):

- ``AuditTrail.append`` — the shipped adapter, through a ``Connector`` (its
  pool, its retry loop, its typed receipt, its metrics) — from 10 threads,
  on 1 domain and spread over 16;
- ``pgbench -c 10 -j 2`` running ``covenant.append_audit_entry`` with the same
  arguments (``append_1_domain.pgbench``, ``append_16_domains.pgbench``);
- the ``GroupCommitAppender`` with 10 and with 200 calling threads, on one
  domain (each call returns after its batch's durable commit).

Python and pgbench alternate ``--rounds`` times so that both see the same
server state (table and index sizes, checkpoints); the ratio is computed per
round and for the totals. Without ``--database-url`` a private embedded
cluster ``bench-adapter`` with durable settings (fsync on) is started and
removed afterwards. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psycopg
from audit_bench import group_commit  # bench/ is on sys.path when run as a script
from psycopg.types.json import Jsonb

from covenant import embedded
from covenant.audit import AuditTrail
from covenant.config import load_settings
from covenant.db import Connector
from covenant.migrate import migrate

HERE = Path(__file__).resolve().parent
ACTOR = "service:bench"
PAYLOAD = {"amount_micro": "1500000", "kind": "bench"}
THREADS = 10


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def python_appends(url: str, domains: int, seconds: float) -> dict[str, float]:
    """10 threads sharing one Connector (pool of 10) call ``AuditTrail.append``."""
    settings = load_settings({"COVENANT_POOL_MIN_SIZE": "10", "COVENANT_POOL_MAX_SIZE": "10"})
    latencies: list[float] = []
    lock = threading.Lock()
    with Connector(settings, database_url=url) as db:
        trail = AuditTrail(db)
        trail.append("orders:warm-up", "bench", ACTOR, PAYLOAD)
        stop = time.monotonic() + seconds

        def loop(w: int) -> None:
            tag = f"orders:pgbench-{w % 16}" if domains == 16 else "orders:pgbench-hot"
            mine: list[float] = []
            while time.monotonic() < stop:
                started = time.perf_counter()
                trail.append(tag, "bench", ACTOR, PAYLOAD)
                mine.append(time.perf_counter() - started)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=loop, args=(w,)) for w in range(THREADS)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        retries = db.stats.retries
    return {
        "per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_pct(latencies, 0.50), 2),
        "p99_ms": round(_pct(latencies, 0.99), 2),
        "retries": retries,
    }


def psycopg_appends(url: str, domains: int, seconds: float) -> dict[str, float]:
    """The ceiling of any Python client: 10 threads, raw psycopg, one connection each."""
    count = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def loop(w: int) -> None:
        nonlocal count
        tag = f"orders:pgbench-{w % 16}" if domains == 16 else "orders:pgbench-hot"
        n = 0
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < stop:
                conn.execute(
                    "SELECT * FROM covenant.append_audit_entry(%s, gen_random_uuid(), 'bench', "
                    "%s, %s)",
                    [tag, ACTOR, Jsonb(PAYLOAD)],
                ).fetchone()
                n += 1
        with lock:
            count += n

    threads = [threading.Thread(target=loop, args=(w,)) for w in range(THREADS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"per_s": round(count / (time.perf_counter() - started), 1)}


def pgbench_appends(url: str, domains: int, seconds: float) -> dict[str, float]:
    script = HERE / ("append_16_domains.pgbench" if domains == 16 else "append_1_domain.pgbench")
    argv = ["pgbench", "-n", "-c", str(THREADS), "-j", "2", "-T", str(int(seconds))]
    out = subprocess.run(
        [*argv, "-f", str(script), url],
        capture_output=True,
        text=True,
        check=False,
    )
    tps = re.search(r"^tps = ([0-9.]+)", out.stdout, re.MULTILINE)
    lat = re.search(r"^latency average = ([0-9.]+) ms", out.stdout, re.MULTILINE)
    if tps is None:
        raise SystemExit(f"pgbench failed: {out.stderr.strip()[-400:]}")
    return {"per_s": float(tps.group(1)), "latency_avg_ms": float(lat.group(1)) if lat else -1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if shutil.which("pgbench") is None:
        raise SystemExit("pgbench is not on PATH (Debian: postgresql-client-15)")
    url = args.database_url
    cluster = None
    if not url:
        cluster = embedded.start_cluster("bench-adapter")
        url = cluster.dsn
        print(f"server: embedded cluster, fsync on, port {cluster.port}", flush=True)
    results: dict[str, object] = {}
    try:
        migrate(url)
        for domains in (1, 16):
            py_total = pg_total = raw_total = 0.0
            for r in range(1, args.rounds + 1):
                pg = pgbench_appends(url, domains, args.seconds)
                py = python_appends(url, domains, args.seconds)
                raw = psycopg_appends(url, domains, args.seconds)
                py_total += py["per_s"]
                pg_total += pg["per_s"]
                raw_total += raw["per_s"]
                ratio = py["per_s"] / pg["per_s"]
                label = f"{domains} domain(s), round {r}"
                results[label] = {
                    "python": py,
                    "pgbench": pg,
                    "raw_psycopg": raw,
                    "ratio": round(ratio, 3),
                }
                print(
                    f"{label:<24} adapter {py['per_s']:>7.1f}/s (p50 {py['p50_ms']} ms, "
                    f"p99 {py['p99_ms']} ms, retries {py['retries']})  pgbench "
                    f"{pg['per_s']:>7.1f}/s  raw psycopg {raw['per_s']:>7.1f}/s  "
                    f"adapter/pgbench {ratio:.1%}",
                    flush=True,
                )
            overall = py_total / pg_total
            results[f"{domains} domain(s), all rounds"] = round(overall, 3)
            verdict = "met" if overall >= 0.8 else "NOT met"
            print(
                f"{domains} domain(s): adapter/pgbench {overall:.1%} (target >= 80 %: {verdict}); "
                f"raw psycopg/pgbench {raw_total / pg_total:.1%}"
            )
        for callers in (10, 200):
            row = group_commit(url, callers, args.seconds)
            results[f"group commit, {callers} callers"] = row
            print(f"group commit, {callers:>3} callers: {json.dumps(row)}", flush=True)
    finally:
        if cluster is not None:
            embedded.stop_cluster("bench-adapter", remove=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
