"""Exports of audit partitions, with the checksum retention recorded.

``covenant.detach_audit_partition`` records, for each partition it detaches,
the row count and a SHA-256 checksum: the hash of the concatenated lower-case
hex ``entry_hash`` of its rows ordered by ``(domain_tag, seq)``. This module
exports a partition (attached or detached) as JSON Lines carrying that
checksum, and verifies such an export offline: every row's hash recomputed
(:func:`covenant.verify.entry_hash_v1`), links followed within each domain's
run of seqs, and the checksum and count compared with the header's.

Format ``covenant.audit.partition.v1``: a header ``{"format", "partition",
"range_from", "range_to", "recorded_checksum", "recorded_rows",
"exported_at"}`` (the recorded values are null for a partition retention has
not detached), one line per row ``{"domain_tag", "seq", "entry_id",
"event_type", "actor_id", "event_time", "payload", "previous_hash",
"entry_hash"}``, and a trailer ``{"trailer": true, "count", "checksum"}``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from covenant.verify import canonical_time, entry_hash_v1, json_line

PARTITION_FORMAT = "covenant.audit.partition.v1"
_NAME = re.compile(r"^audit_trail_(p[0-9]{6}|default)$")

_RECORD_QUERY = """
SELECT r.range_from::text, r.range_to::text, r.checksum, r.row_count
FROM covenant.audit_trail_retention AS r WHERE r.partition_name = %s
"""

_ROWS_QUERY = """
SELECT t.domain_tag, t.seq, t.entry_id::text, t.event_type, t.actor_id,
       to_char(t.event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       t.payload::text, encode(t.previous_hash, 'hex'), encode(t.entry_hash, 'hex')
FROM {table} AS t
ORDER BY t.domain_tag, t.seq
"""


@dataclass(frozen=True)
class PartitionVerdict:
    ok: bool
    rows: int
    reason: str | None


def export_partition(conn: psycopg.Connection[Any], partition: str) -> Iterator[str]:
    """Yield the export of ``covenant.<partition>``, one JSON Lines line at a time.

    Reading a partition directly needs its owner's rights (a covenant_migrator
    login) or a superuser: partitions carry forced RLS with an owner-only
    SELECT policy, and no grants.
    """
    if not _NAME.match(partition):
        raise ValueError(f"{partition!r} is not an audit partition name")
    with conn.cursor(row_factory=tuple_row) as cur:
        record = cur.execute(_RECORD_QUERY, [partition]).fetchone()
        yield json_line(
            {
                "format": PARTITION_FORMAT,
                "partition": partition,
                "range_from": record[0] if record else None,
                "range_to": record[1] if record else None,
                "recorded_checksum": record[2] if record else None,
                "recorded_rows": int(record[3]) if record else None,
                "exported_at": canonical_time(datetime.now(UTC)),
            }
        )
        digest = hashlib.sha256()
        count = 0
        query = sql.SQL(_ROWS_QUERY).format(table=sql.Identifier("covenant", partition))
        for row in cur.execute(query):
            domain, seq, entry_id, event_type, actor, time, payload, prev, ehash = row
            digest.update(str(ehash).encode("ascii"))
            count += 1
            yield json_line(
                {
                    "domain_tag": domain,
                    "seq": seq,
                    "entry_id": entry_id,
                    "event_type": event_type,
                    "actor_id": actor,
                    "event_time": time,
                    "payload": payload,
                    "previous_hash": prev,
                    "entry_hash": ehash,
                }
            )
        yield json_line({"trailer": True, "count": count, "checksum": digest.hexdigest()})


def verify_partition_export(lines: Iterable[str | bytes]) -> PartitionVerdict:
    """Check a partition export offline: hashes, links, count and checksum."""
    objects = [json.loads(line) for line in lines if str(line).strip()]
    if not objects or objects[0].get("format") != PARTITION_FORMAT:
        return PartitionVerdict(False, 0, f"not a {PARTITION_FORMAT} export")
    header, body = objects[0], objects[1:]
    if not body or body[-1].get("trailer") is not True:
        return PartitionVerdict(False, 0, "the trailer is missing (truncated export)")
    trailer, rows = body[-1], body[:-1]
    reason, checksum = _check_rows(rows)
    if reason is None and (
        trailer.get("count") != len(rows) or trailer.get("checksum") != checksum
    ):
        reason = "the trailer does not match the rows"
    recorded = header.get("recorded_checksum")
    if (
        reason is None
        and recorded is not None
        and (recorded != checksum or header.get("recorded_rows") != len(rows))
    ):
        reason = "the rows do not match the checksum recorded at retention"
    return PartitionVerdict(reason is None, len(rows), reason)


def _check_rows(rows: list[dict[str, Any]]) -> tuple[str | None, str]:
    """The first broken row (hash or link), and the checksum of the rows."""
    digest = hashlib.sha256()
    previous: dict[str, tuple[int, str]] = {}
    for row in rows:
        domain, seq = row["domain_tag"], int(row["seq"])
        recomputed = entry_hash_v1(
            domain,
            seq,
            row["entry_id"],
            row["event_type"],
            row["actor_id"],
            row["event_time"],
            bytes.fromhex(row["previous_hash"]),
            row["payload"],
        ).hex()
        if recomputed != row["entry_hash"]:
            return f"hash mismatch at {domain} seq {seq}", ""
        last = previous.get(domain)
        if last is not None and (seq != last[0] + 1 or row["previous_hash"] != last[1]):
            return f"link broken at {domain} seq {seq}", ""
        previous[domain] = (seq, row["entry_hash"])
        digest.update(row["entry_hash"].encode("ascii"))
    return None, digest.hexdigest()
