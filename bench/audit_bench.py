"""Audit-trail benchmark: appends, batches, group commit, verification.

    .venv/bin/python bench/audit_bench.py [--seconds 10] [--chain 1000000] [--database-url URL]

Without --database-url it starts a private embedded cluster ``bench-audit``
with durable settings (fsync on, synchronous_commit on) and removes it
afterwards. Everything runs in one process, in one run, so the figures are
comparable; the plain-INSERT baseline writes the same row into an
unpartitioned table without triggers or RLS. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from covenant import embedded
from covenant.audit import GroupCommitAppender
from covenant.config import load_settings
from covenant.db import Connector
from covenant.migrate import migrate
from covenant.verify import export_domain, verify_export

PAYLOAD = {"amount_micro": "1500000", "reservation_id": str(uuid.uuid4()), "kind": "bench"}
ACTOR = "service:bench"


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def _run_writers(
    url: str,
    writers: int,
    seconds: float,
    work: Callable[[psycopg.Connection, int], float | None],
    autocommit: bool = False,
) -> tuple[int, list[float], list[float], int]:
    """Run `work` in a loop on `writers` connections.

    Returns the count, the latencies, the lock waits and the serialization errors.
    """
    latencies: list[float] = []
    waits: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def loop(w: int) -> None:
        nonlocal errors
        mine: list[float] = []
        mine_waits: list[float] = []
        failed = 0
        with psycopg.connect(url, autocommit=autocommit) as conn:
            while time.monotonic() < stop:
                started = time.perf_counter()
                try:
                    wait = work(conn, w)
                    if not autocommit:
                        conn.commit()
                except psycopg.errors.SerializationFailure:
                    conn.rollback()
                    failed += 1
                    continue
                mine.append(time.perf_counter() - started)
                if wait is not None:
                    mine_waits.append(wait)
        with lock:
            latencies.extend(mine)
            waits.extend(mine_waits)
            errors += failed

    threads = [threading.Thread(target=loop, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies), latencies, waits, errors


def bench_appends(url: str, seconds: float, results: dict[str, object]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS public.bench_plain (entry_id uuid, domain_tag text, "
            "seq bigint, event_type text, actor_id text, payload jsonb, event_time timestamptz, "
            "created_at timestamptz DEFAULT clock_timestamp(), previous_hash bytea, "
            "entry_hash bytea, hash_version smallint)"
        )

    def plain(conn: psycopg.Connection, w: int) -> None:
        conn.execute(
            "INSERT INTO public.bench_plain VALUES (gen_random_uuid(), %s, 1, 'bench', %s, %s, "
            "now(), clock_timestamp(), %s, %s, 1)",
            [f"orders:{w % 16}", ACTOR, Jsonb(PAYLOAD), bytes(32), bytes(32)],
        )

    def append(domains: int) -> Callable[[psycopg.Connection, int], float | None]:
        def work(conn: psycopg.Connection, w: int) -> float | None:
            tag = f"orders:bench-{domains}-{w % domains}"
            conn.execute(
                "SELECT * FROM covenant.append_audit_entry(%s, gen_random_uuid(), 'bench', %s, %s)",
                [tag, ACTOR, Jsonb(PAYLOAD)],
            )
            return None

        return work

    def append_probed(domains: int) -> Callable[[psycopg.Connection, int], float | None]:
        """In an explicit transaction, with the lock's wait measured on its own."""

        def work(conn: psycopg.Connection, w: int) -> float | None:
            tag = f"orders:bench-{domains}-{w % domains}"
            t0 = time.perf_counter()
            # the same lock the append takes (re-entrant): its wait, measured alone
            conn.execute("SELECT pg_advisory_xact_lock(covenant._audit_lock_key(%s))", [tag])
            wait = time.perf_counter() - t0
            conn.execute(
                "SELECT * FROM covenant.append_audit_entry(%s, gen_random_uuid(), 'bench', %s, %s)",
                [tag, ACTOR, Jsonb(PAYLOAD)],
            )
            return wait

        return work

    for label, writers, work, autocommit in (
        ("plain INSERT, 10 writers", 10, plain, True),
        ("append, 1 writer, 1 domain", 1, append(1), True),
        ("append, 10 writers, 1 domain", 10, append(1), True),
        ("append, 50 writers, 1 domain", 50, append(1), True),
        ("append, 10 writers, 16 domains", 10, append(16), True),
        ("append, 50 writers, 16 domains", 50, append(16), True),
        ("append+lock probe, 10 writers, 1 domain", 10, append_probed(1), False),
        ("append+lock probe, 10 writers, 16 domains", 10, append_probed(16), False),
    ):
        n, lat, waits, errors = _run_writers(url, writers, seconds, work, autocommit)
        row = {
            "per_s": round(n / seconds),
            "p50_ms": round(_pct(lat, 0.50), 2),
            "p95_ms": round(_pct(lat, 0.95), 2),
            "p99_ms": round(_pct(lat, 0.99), 2),
            "retry_rate": round(errors / max(1, n + errors), 4),
        }
        if waits:
            row["lock_wait_p95_ms"] = round(_pct(waits, 0.95), 2)
            row["lock_wait_p99_ms"] = round(_pct(waits, 0.99), 2)
        results[label] = row
        print(f"{label:<42} {json.dumps(row)}", flush=True)
    base = results["plain INSERT, 10 writers"]["per_s"]  # type: ignore[index]
    spread = results["append, 10 writers, 16 domains"]["per_s"]  # type: ignore[index]
    results["16 domains / plain INSERT"] = round(spread / base, 3)
    print(f"{'16 domains / plain INSERT':<34} {results['16 domains / plain INSERT']}")


def bench_batches(url: str, results: dict[str, object]) -> None:
    for size in (100, 1000):
        entries = [
            {"entry_id": None, "event_type": "bench", "actor_id": ACTOR, "payload": PAYLOAD}
            for _ in range(size)
        ]
        rounds = max(3, 20_000 // size)
        started = time.perf_counter()
        with psycopg.connect(url) as conn:
            for _ in range(rounds):
                for e in entries:
                    e["entry_id"] = str(uuid.uuid4())
                conn.execute(
                    "SELECT count(*) FROM covenant.append_audit_entries('orders:batch', %s)",
                    [Jsonb(entries)],
                )
                conn.commit()
        per_s = round(rounds * size / (time.perf_counter() - started))
        results[f"batch API, {size} per call"] = {"entries_per_s": per_s}
        print(f"{'batch API, ' + str(size) + ' per call':<34} {per_s} entries/s", flush=True)


def group_commit(url: str, callers: int, seconds: float) -> dict[str, float]:
    """``callers`` threads append through one ``GroupCommitAppender`` (durable acks)."""
    settings = load_settings({"COVENANT_POOL_MAX_SIZE": "4"})
    count = 0
    lock = threading.Lock()
    with (
        Connector(settings, database_url=url) as db,
        GroupCommitAppender(db, max_batch=5000, workers=2) as appender,
    ):
        stop = time.monotonic() + seconds

        def caller() -> None:
            nonlocal count
            n = 0
            while time.monotonic() < stop:
                appender.append("orders:group", "bench", ACTOR, PAYLOAD)
                n += 1
            with lock:
                count += n

        threads = [threading.Thread(target=caller) for _ in range(callers)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        mean_batch = appender.stats.mean_batch
    return {"per_s": round(count / elapsed, 1), "mean_batch": round(mean_batch, 1)}


def bench_group_commit(url: str, seconds: float, results: dict[str, object]) -> None:
    row = {**group_commit(url, 200, seconds), "callers": 200}
    results["group commit, 200 callers, 1 domain"] = row
    print(f"{'group commit, 200 callers, 1 domain':<34} {json.dumps(row)}", flush=True)


def bench_verify(url: str, chain: int, results: dict[str, object]) -> None:
    tag = "orders:verify"
    with psycopg.connect(url) as conn:
        done = 0
        started = time.perf_counter()
        while done < chain:
            size = min(10_000, chain - done)
            conn.execute(
                "SELECT count(*) FROM covenant.append_audit_entries(%s, ("
                "SELECT jsonb_agg(jsonb_build_object('entry_id', gen_random_uuid(), "
                "'event_type', 'bench', 'actor_id', %s::text, 'payload', %s::jsonb)) "
                "FROM generate_series(1, %s)))",
                [tag, ACTOR, Jsonb(PAYLOAD), size],
            )
            conn.commit()
            done += size
        build = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE covenant.audit_trail_chain_links")
        conn.execute("VACUUM ANALYZE covenant.audit_trail")
        started = time.perf_counter()
        row = conn.execute(
            "SELECT ok, checked FROM covenant.verify_audit_chain(%s, 1)", [tag]
        ).fetchone()
        elapsed = time.perf_counter() - started
    assert row is not None
    results["verify_audit_chain (SQL)"] = {
        "entries": row[1],
        "ok": row[0],
        "seconds": round(elapsed, 2),
        "entries_per_s": round(int(row[1]) / elapsed),
        "chain_build_s": round(build, 1),
    }
    print(f"{'verify_audit_chain (SQL)':<34} {json.dumps(results['verify_audit_chain (SQL)'])}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chain.jsonl"
        started = time.perf_counter()
        with psycopg.connect(url) as conn, path.open("w") as out:
            for line in export_domain(conn, tag):
                out.write(line + "\n")
        exported = time.perf_counter() - started
        started = time.perf_counter()
        with path.open() as handle:
            verdict = verify_export(handle)
        elapsed = time.perf_counter() - started
    results["offline verifier (Python)"] = {
        "entries": verdict.checked,
        "ok": verdict.ok,
        "seconds": round(elapsed, 2),
        "entries_per_s": round(verdict.checked / elapsed),
        "export_s": round(exported, 1),
    }
    print(f"{'offline verifier (Python)':<34} {json.dumps(results['offline verifier (Python)'])}")


def bench_pgbench(url: str, seconds: int, results: dict[str, object]) -> None:
    """The same append through pgbench (C client), 10 clients, 16 domains and 1 domain."""
    if shutil.which("pgbench") is None:
        print("pgbench not found: skipped")
        return
    here = Path(__file__).resolve().parent
    for script in ("append_16_domains.pgbench", "append_1_domain.pgbench", "plain_insert.pgbench"):
        out = subprocess.run(
            [
                "pgbench",
                "-n",
                "-c",
                "10",
                "-j",
                "2",
                "-T",
                str(seconds),
                "-f",
                str(here / script),
                url,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        tps = [line for line in out.stdout.splitlines() if line.startswith("tps")]
        lat = [line for line in out.stdout.splitlines() if "latency average" in line]
        results[f"pgbench {script}"] = {
            "tps": tps[0] if tps else out.stderr.strip()[-200:],
            "latency": lat[0] if lat else None,
        }
        print(f"pgbench {script:<26} {tps[0] if tps else out.stderr.strip()[-200:]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--chain", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results: dict[str, object] = {}
    cluster = None
    url = args.database_url
    if not url:
        cluster = embedded.start_cluster("bench-audit")
        url = cluster.dsn
        print(f"server: embedded cluster, fsync on, port {cluster.port}")
    try:
        migrate(url)
        bench_appends(url, args.seconds, results)
        bench_pgbench(url, int(args.seconds), results)
        bench_batches(url, results)
        bench_group_commit(url, args.seconds, results)
        bench_verify(url, args.chain, results)
    finally:
        if cluster is not None:
            embedded.stop_cluster("bench-audit", remove=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
