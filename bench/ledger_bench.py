"""Ledger benchmark: governed reserve -> finalize cycles, and two baselines.

    .venv/bin/python bench/ledger_bench.py [--seconds 20] [--clients 8] [--database-url URL]

Without --database-url it starts a private embedded cluster ``bench-ledger``
with durable settings (fsync on, synchronous_commit on) and removes it
afterwards. pgbench (the C client, prepared statements) runs, in one run
against one server:

1. ``ledger_cycle.pgbench``: a cycle is ``reserve_credits`` then
   ``finalize_reservation``, each its own transaction with its audit entry,
   over 10 accounts — the figure of issue 4;
2. ``plain_insert.pgbench``: the plain-INSERT baseline (one row, no
   triggers, no RLS, no chain);
3. ``plain_transfer.pgbench``: a strong ledger in pure SQL (two balance
   updates in a fixed order and a journal row per transaction, no audit chain,
   no idempotency record).

Latency percentiles come from pgbench's per-transaction log. It checks
``reconcile()`` afterwards. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from covenant import embedded
from covenant.migrate import migrate

HERE = Path(__file__).resolve().parent
ACCOUNTS = [uuid.UUID(f"00000000-0000-4000-8000-0000000000{n:02d}") for n in range(1, 11)]


def setup(url: str) -> None:
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for account in ACCOUNTS:
            exists = conn.execute(
                "SELECT 1 FROM covenant.accounts WHERE account_id = %s", [account]
            ).fetchone()
            if not exists:
                conn.execute(
                    "SELECT covenant.create_account(%s, 'user', 'service:bench', "
                    "gen_random_uuid())",
                    [account],
                )
            conn.execute(
                "SELECT covenant.allocate_credits(%s, 1000000000000000, 'deposit', "
                "'service:bench', gen_random_uuid())",
                [account],
            )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS public.bench_plain (entry_id uuid, domain_tag text, "
            "seq bigint, event_type text, actor_id text, payload jsonb, event_time timestamptz, "
            "created_at timestamptz, previous_hash bytea, entry_hash bytea, hash_version smallint)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS public.bench_balances (id integer PRIMARY KEY, "
            "balance bigint NOT NULL CHECK (balance >= 0))"
        )
        conn.execute(
            "INSERT INTO public.bench_balances SELECT g, 1000000000000 FROM generate_series(1, 10) "
            "AS g ON CONFLICT DO NOTHING"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS public.bench_journal (id bigserial PRIMARY KEY, "
            "from_id integer NOT NULL, to_id integer NOT NULL, amount bigint NOT NULL, "
            "at timestamptz NOT NULL DEFAULT now())"
        )


def pgbench(url: str, script: str, clients: int, seconds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "log"
        out = subprocess.run(
            [
                "pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "2",
                "-T", str(seconds), "-l", "--log-prefix", str(prefix),
                "-f", str(HERE / script), url,
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        latencies: list[int] = []
        failed = 0
        for log in Path(tmp).glob("log*"):
            for line in log.read_text().splitlines():
                fields = line.split()
                if fields[2] in ("failed", "skipped"):
                    failed += 1
                else:
                    latencies.append(int(fields[2]))
    if out.returncode != 0 and not latencies:
        raise SystemExit(f"pgbench {script} failed: {out.stderr.strip()[-400:]}")
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * q))] / 1000, 2)

    return {
        "per_second": round(len(latencies) / seconds, 1),
        "count": len(latencies),
        "failed": failed,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "errors": [ln for ln in out.stderr.splitlines() if "ERROR" in ln][:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if shutil.which("pgbench") is None:
        raise SystemExit("pgbench not found (it comes with the PostgreSQL client)")
    cluster = None
    url = args.database_url
    if not url:
        cluster = embedded.start_cluster("bench-ledger")
        url = cluster.dsn
        print(f"server: embedded cluster, fsync on, port {cluster.port}", flush=True)
    results: dict[str, object] = {"clients": args.clients, "seconds": args.seconds}
    try:
        setup(url)
        for name, script in (
            ("governed reserve->finalize cycles", "ledger_cycle.pgbench"),
            ("plain INSERT baseline", "plain_insert.pgbench"),
            ("pure-SQL transfer baseline", "plain_transfer.pgbench"),
        ):
            figures = pgbench(url, script, args.clients, args.seconds)
            results[name] = figures
            print(f"{name:<36} {json.dumps(figures)}", flush=True)
        cycles = results["governed reserve->finalize cycles"]
        assert isinstance(cycles, dict)
        print(
            f"governed transactions/s (2 per cycle): {2 * float(cycles['per_second']):.0f}",
            flush=True,
        )
        with psycopg.connect(url) as conn:
            bad = conn.execute(
                "SELECT invariant_id, failure_code FROM covenant.reconcile() WHERE NOT ok"
            ).fetchall()
        results["reconcile_failures"] = bad
        print(f"reconcile() after the run: {bad if bad else 'all ok'}")
    finally:
        if cluster is not None:
            embedded.stop_cluster("bench-ledger", remove=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
