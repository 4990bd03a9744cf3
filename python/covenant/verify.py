"""The offline verifier: the audit chain checked without trusting the database.

A second implementation of the canonical hash, version 1 (SPEC §3.2; the first
is ``covenant.audit_entry_hash_v1`` in ``sql/functions/audit_hash.sql``). The
two are held together by the conformance vectors in
``conformance/audit_hash_v1.json``. Nothing here touches a database except
:func:`export_domain`, which writes the export that :func:`verify_export`
checks.

The hash covers ``payload::text``, PostgreSQL's rendering of the jsonb value.
:func:`jsonb_text` reproduces that rendering from a parsed JSON value:

* objects: keys sorted by UTF-8 byte length, then by bytes (jsonb's order,
  not alphabetical); a duplicate key keeps its LAST value; ``", "`` and
  ``": "`` separators; ``{}`` and ``[]`` when empty;
* strings: ``escape_json`` — ``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``, other
  characters below U+0020 as ``\\u00xx`` (lower-case hex), everything else
  raw UTF-8 (non-ASCII, ``/`` and U+007F included);
* numbers: PostgreSQL ``numeric`` output — plain decimal notation with
  ``scale = max(0, -exponent)`` of the written number (``1.0e2`` → ``100``,
  ``1.50e1`` → ``15.0``, ``1e-3`` → ``0.001``), no negative zero (``-0.0`` →
  ``0.0``), integers of any size exact. Numbers are parsed as
  :class:`decimal.Decimal`, never as ``float``.

Export format (JSON Lines, ``covenant.audit.export.v1``), one JSON object per
line:

1. a header ``{"format": "covenant.audit.export.v1", "domain_tag",
   "hash_version": 1, "from_seq", "anchor_hash", "exported_at"}`` where
   ``anchor_hash`` is the hex ``previous_hash`` that entry ``from_seq`` must
   carry (64 zeros when ``from_seq`` is 1);
2. one line per entry, in seq order: ``{"seq", "entry_id", "event_type",
   "actor_id", "event_time", "payload", "previous_hash", "entry_hash"}`` with
   ``event_time`` the canonical UTC string (``YYYY-MM-DDTHH:MM:SS.ffffffZ``),
   ``payload`` the jsonb text as a JSON string, hashes in lower-case hex;
3. optionally a trailer ``{"trailer": true, "count", "last_hash"}``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeAlias

import psycopg
from psycopg.rows import tuple_row

from covenant import metrics

__all__ = [
    "EXPORT_FORMAT",
    "GENESIS_HASH",
    "HASH_PREFIX",
    "JsonValue",
    "VerifyResult",
    "canonical_payload",
    "canonical_time",
    "entry_hash_v1",
    "export_domain",
    "json_line",
    "jsonb_text",
    "verify_export",
]

HASH_PREFIX = "covenant.audit.v1"
EXPORT_FORMAT = "covenant.audit.export.v1"
GENESIS_HASH = bytes(32)

JsonValue: TypeAlias = "bool | int | Decimal | str | list[JsonValue] | dict[str, JsonValue] | None"

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_HEX64 = re.compile(r"[0-9a-f]{64}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_LONG_FRACTION = re.compile(r"[.,]\d{7}")
_CANONICAL_TIME = re.compile(r"\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


# --------------------------------------------------------------------------
# jsonb text rendering


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _string_text(value: str) -> str:
    if "\x00" in value:
        # PostgreSQL refuses it too: "\u0000 cannot be converted to text"
        raise ValueError("U+0000 cannot be stored in jsonb")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"string is not valid Unicode (lone surrogate?): {exc}") from None
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, value) + '"'


def _number_text(value: Decimal) -> str:
    """PostgreSQL numeric_out of the value numeric_in would have made of it."""
    sign, digit_tuple, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise ValueError(f"{value} is not a JSON number")
    digits = "".join(map(str, digit_tuple))
    if exponent >= 0:
        text = (digits + "0" * exponent).lstrip("0") or "0"
    else:
        scale = -exponent
        digits = digits.rjust(scale + 1, "0")
        whole = digits[:-scale].lstrip("0") or "0"
        text = f"{whole}.{digits[-scale:]}"
    if sign and any(d != 0 for d in digit_tuple):
        text = "-" + text
    return text


def jsonb_text(value: JsonValue) -> str:
    """Render a parsed JSON value exactly as PostgreSQL's ``jsonb::text`` does.

    Numbers must be :class:`int` or :class:`decimal.Decimal` (as
    :func:`canonical_payload` parses them); a ``float`` is refused, since its
    binary value has lost the written digits that jsonb keeps.
    """
    match value:
        case None:
            text = "null"
        case bool():
            text = "true" if value else "false"
        case str():
            text = _string_text(value)
        case int():
            text = str(value)
        case Decimal():
            text = _number_text(value)
        case list():
            text = "[" + ", ".join(jsonb_text(item) for item in value) + "]"
        case dict():
            keys = sorted(value, key=_key_order)
            text = "{" + ", ".join(f"{_string_text(k)}: {jsonb_text(value[k])}" for k in keys) + "}"
        case _:
            raise TypeError(f"not a JSON value for jsonb: {type(value).__name__}")
    return text


def _key_order(key: str) -> tuple[int, bytes]:
    raw = key.encode("utf-8")
    return len(raw), raw


def _keep_last(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # dict() keeps the last value of a repeated key, as jsonb does
    return dict(pairs)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(text: str) -> JsonValue:
    value: JsonValue = json.loads(
        text,
        object_pairs_hook=_keep_last,
        parse_float=Decimal,
        parse_int=Decimal,
        parse_constant=_refuse_constant,
    )
    return value


def canonical_payload(json_text: str) -> str:
    """``json_text::jsonb::text``, computed without a database.

    Raises :class:`ValueError` for input PostgreSQL would refuse as well
    (invalid JSON, ``NaN``/``Infinity``, ``\\u0000``, lone surrogates).
    """
    return jsonb_text(_parse_json(json_text))


# --------------------------------------------------------------------------
# the hash


def canonical_time(event_time: datetime | str) -> str:
    """``to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')``."""
    if isinstance(event_time, str):
        if _LONG_FRACTION.search(event_time):
            # Python truncates a 7th digit, PostgreSQL rounds it: refuse, not guess
            raise ValueError("event_time has more than 6 fractional digits")
        moment = datetime.fromisoformat(event_time)
    else:
        moment = event_time
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("event_time needs a time zone offset (a timestamptz)")
    utc = moment.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond:06d}Z"
    )


def entry_hash_v1(  # noqa: PLR0917 - the hash's fields, in the hash's order
    domain_tag: str,
    seq: int,
    entry_id: uuid.UUID | str,
    event_type: str,
    actor_id: str,
    event_time: datetime | str,
    previous_hash: bytes,
    payload_text: str,
) -> bytes:
    """The canonical entry hash, version 1 (SPEC §3.2), as 32 raw bytes.

    ``payload_text`` is the jsonb text (``payload::text``), hashed as given;
    use :func:`canonical_payload` to obtain it from arbitrary JSON text.
    ``event_time`` is a tz-aware datetime or an ISO-8601 string with offset.
    """
    entry = entry_id if isinstance(entry_id, uuid.UUID) else uuid.UUID(entry_id)
    message = "\n".join(
        [
            HASH_PREFIX,
            domain_tag,
            str(int(seq)),
            str(entry),
            event_type,
            actor_id,
            canonical_time(event_time),
            bytes(previous_hash).hex(),
            payload_text,
        ]
    )
    return hashlib.sha256(message.encode("utf-8")).digest()


# --------------------------------------------------------------------------
# verification of an export


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :func:`verify_export`, shaped like ``verify_audit_chain``.

    ``checked`` counts the entries verified intact. On failure they are the
    trusted prefix ``from_seq .. from_seq + checked - 1``, and
    ``first_bad_seq`` is the seq of the first position that fails (for an
    entry-level failure, ``from_seq + checked``).
    """

    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str | None


class _Bad(Exception):
    def __init__(self, reason: str, seq: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seq = seq


def _load_object(line: str | bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Bad(f"{what} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _Bad(f"{what} is not a JSON object")
    return value


def _field(obj: dict[str, Any], name: str, kind: type[Any], what: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Bad(f"{what}: field {name!r} is missing or not a {kind.__name__}")
    return value


def _hex_field(obj: dict[str, Any], name: str, what: str) -> bytes:
    value = _field(obj, name, str, what)
    if not _HEX64.fullmatch(value):
        raise _Bad(f"{what}: field {name!r} is not 64 lower-case hex digits")
    return bytes.fromhex(value)


def _lines(lines: Iterable[str | bytes]) -> Iterator[tuple[int, str | bytes]]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, line


def _read_header(line: str | bytes) -> tuple[str, int, bytes]:
    """The domain tag, from_seq and anchor of a header line, or :class:`_Bad`."""
    header = _load_object(line, "header")
    if header.get("format") != EXPORT_FORMAT:
        raise _Bad(f"header: format is not {EXPORT_FORMAT!r}")
    if _field(header, "hash_version", int, "header") != 1:
        raise _Bad("header: unknown hash version")
    domain_tag: str = _field(header, "domain_tag", str, "header")
    from_seq: int = _field(header, "from_seq", int, "header")
    if from_seq < 1:
        raise _Bad("header: from_seq must be 1 or more")
    anchor = _hex_field(header, "anchor_hash", "header")
    if from_seq == 1 and anchor != GENESIS_HASH:
        raise _Bad("anchor of an export from seq 1 is not the genesis hash (32 zero bytes)", 1)
    return domain_tag, from_seq, anchor


def verify_export(lines: Iterable[str | bytes], *, require_trailer: bool = False) -> VerifyResult:
    """Verify an exported domain (JSON Lines) without a database.

    Recomputes every entry hash from the exported fields and checks seq
    continuity from the header's ``from_seq``, that each entry links to the
    one before (the first to the header's anchor; the genesis hash when
    ``from_seq`` is 1), and the trailer's count and last hash. Stops at the
    first failure. Without a trailer, a truncated export cannot be told from
    a shorter one: pass ``require_trailer=True`` to insist on it. Timed as
    ``covenant_audit_verify_seconds{source="export"}``.
    """
    started = time.perf_counter()
    ok: bool | None = None
    try:
        result = _verify_export(lines, require_trailer)
        ok = result.ok
        return result
    finally:
        metrics.observe_verification("export", started, ok)


def _verify_export(lines: Iterable[str | bytes], require_trailer: bool) -> VerifyResult:
    stream = _lines(lines)
    first = next(stream, None)
    if first is None:
        return VerifyResult(False, 0, None, "the export is empty (no header)")
    try:
        domain_tag, from_seq, anchor = _read_header(first[1])
    except _Bad as bad:
        return VerifyResult(False, 0, bad.seq, bad.reason)

    checked = 0
    expected_prev = anchor
    trailer: dict[str, Any] | None = None
    for number, line in stream:
        what = f"line {number}"
        try:
            obj = _load_object(line, what)
            if trailer is not None:
                raise _Bad(f"{what}: content after the trailer")
            if obj.get("trailer") is True:
                trailer = obj
                continue
            expected_prev = _check_entry(
                obj, what, domain_tag, from_seq + checked, expected_prev, first=checked == 0
            )
        except _Bad as bad:
            return VerifyResult(False, checked, from_seq + checked, bad.reason)
        checked += 1

    if trailer is None:
        if require_trailer:
            return VerifyResult(
                False, checked, from_seq + checked, "no trailer (the export may be truncated)"
            )
        return VerifyResult(True, checked, None, None)
    return _check_trailer(trailer, from_seq, checked, expected_prev)


def _check_trailer(
    trailer: dict[str, Any], from_seq: int, checked: int, last_hash: bytes
) -> VerifyResult:
    try:
        count: int = _field(trailer, "count", int, "trailer")
        claimed = _hex_field(trailer, "last_hash", "trailer")
    except _Bad as bad:
        return VerifyResult(False, checked, from_seq + checked, bad.reason)
    if count != checked:
        # the first seq the trailer and the entries disagree about
        return VerifyResult(
            False,
            checked,
            from_seq + min(count, checked),
            f"trailer count {count} does not match the {checked} entries exported "
            "(truncated or extended)",
        )
    if claimed != last_hash:
        return VerifyResult(
            False,
            checked,
            max(from_seq, from_seq + checked - 1),
            "trailer last_hash does not match the last entry",
        )
    return VerifyResult(True, checked, None, None)


def _check_entry(
    obj: dict[str, Any],
    what: str,
    domain_tag: str,
    expected_seq: int,
    expected_prev: bytes,
    *,
    first: bool,
) -> bytes:
    """The entry's hash if it is sound, else :class:`_Bad` (the SQL verifier's wording)."""
    seq: int = _field(obj, "seq", int, what)
    if seq != expected_seq:
        raise _Bad(
            f"seq gap: expected {expected_seq}, found {seq} (entries removed, reordered or "
            "renumbered)"
        )
    entry_id: str = _field(obj, "entry_id", str, what)
    if not _UUID.fullmatch(entry_id):
        raise _Bad(f"{what}: entry_id is not a lower-case hyphenated UUID")
    event_type: str = _field(obj, "event_type", str, what)
    actor_id: str = _field(obj, "actor_id", str, what)
    event_time: str = _field(obj, "event_time", str, what)
    if not _CANONICAL_TIME.fullmatch(event_time):
        raise _Bad(f"{what}: event_time is not the canonical UTC form YYYY-MM-DDTHH:MM:SS.ffffffZ")
    payload: str = _field(obj, "payload", str, what)
    previous_hash = _hex_field(obj, "previous_hash", what)
    entry_hash = _hex_field(obj, "entry_hash", what)
    if previous_hash != expected_prev:
        if first:
            raise _Bad("previous_hash does not match the export's anchor")
        raise _Bad("link does not follow the previous entry (reordered or rewritten)")
    try:
        recomputed = entry_hash_v1(
            domain_tag,
            seq,
            entry_id,
            event_type,
            actor_id,
            event_time.replace("Z", "+00:00"),
            previous_hash,
            payload,
        )
    except ValueError as exc:
        raise _Bad(f"{what}: {exc}") from None
    if recomputed != entry_hash:
        raise _Bad("hash mismatch: the entry was edited")
    return entry_hash


# --------------------------------------------------------------------------
# export


_HEAD_QUERY = """
SELECT h.seq
FROM covenant.audit_trail_head AS h
WHERE h.domain_tag = %(domain_tag)s
"""

_ANCHOR_QUERY = """
SELECT l.entry_hash
FROM covenant.audit_trail_chain_links AS l
WHERE l.domain_tag = %(domain_tag)s AND l.seq = %(seq)s
"""

# Content from the entry, the hashes from its chain link (append-only, never
# partitioned): a row rewritten together with its own hash still fails the
# recomputation against the link. A row missing from audit_trail leaves a gap.
_PAGE_QUERY = """
SELECT
    t.seq,
    t.entry_id::text,
    t.event_type,
    t.actor_id,
    pg_catalog.to_char(t.event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    t.payload::text,
    pg_catalog.encode(l.previous_hash, 'hex'),
    pg_catalog.encode(l.entry_hash, 'hex')
FROM covenant.audit_trail_chain_links AS l
JOIN covenant.audit_trail AS t
    ON t.domain_tag = l.domain_tag AND t.seq = l.seq AND t.created_at = l.created_at
WHERE l.domain_tag = %(domain_tag)s AND l.seq >= %(after)s AND l.seq <= %(head)s
ORDER BY l.seq
LIMIT %(limit)s
"""

_PAGE_SIZE = 1000


def json_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def export_domain(
    conn: psycopg.Connection[Any], domain_tag: str, from_seq: int = 1
) -> Iterator[str]:
    """Yield the export of one domain's chain, one JSON Lines line at a time.

    The lines carry no line terminator: write each followed by ``"\n"`` to
    make the file that :func:`verify_export` checks (which accepts lines with
    or without one, and skips blank lines). The range ends at the head read first, so
    concurrent appends do not tear it; pages are read by seq. The exported
    values are what the database holds: nothing is recomputed here. Content
    comes from ``audit_trail``, the hashes from ``audit_trail_chain_links``,
    so a row missing from ``audit_trail`` shows as a seq gap: entries sealed
    and detached by retention are such rows, so export a domain with
    detached history from the seq after the sealed one (its anchor then
    comes from the chain links, and should be compared with a checkpoint).
    Raises :class:`LookupError` when seq ``from_seq - 1`` is not in the chain.
    """
    if from_seq < 1:
        raise ValueError("from_seq must be 1 or more")
    with conn.cursor(row_factory=tuple_row) as cur:
        found = cur.execute(_HEAD_QUERY, {"domain_tag": domain_tag}).fetchone()
        head = int(found[0]) if found else 0
        if from_seq == 1:
            anchor = GENESIS_HASH
        else:
            row = cur.execute(_ANCHOR_QUERY, {"domain_tag": domain_tag, "seq": from_seq - 1})
            found_anchor = row.fetchone()
            if found_anchor is None:
                raise LookupError(f"seq {from_seq - 1} of domain {domain_tag} is not in the chain")
            anchor = bytes(found_anchor[0])
        yield json_line(
            {
                "format": EXPORT_FORMAT,
                "domain_tag": domain_tag,
                "hash_version": 1,
                "from_seq": from_seq,
                "anchor_hash": anchor.hex(),
                "exported_at": canonical_time(datetime.now(UTC)),
            }
        )
        count = 0
        last_hash = anchor.hex()
        after = from_seq
        while after <= head:
            rows = cur.execute(
                _PAGE_QUERY,
                {"domain_tag": domain_tag, "after": after, "head": head, "limit": _PAGE_SIZE},
            ).fetchall()
            if not rows:
                break
            for seq, entry_id, event_type, actor_id, event_time, payload, prev, ehash in rows:
                yield json_line(
                    {
                        "seq": seq,
                        "entry_id": entry_id,
                        "event_type": event_type,
                        "actor_id": actor_id,
                        "event_time": event_time,
                        "payload": payload,
                        "previous_hash": prev,
                        "entry_hash": ehash,
                    }
                )
                count += 1
                last_hash = ehash
            after = int(rows[-1][0]) + 1
        yield json_line({"trailer": True, "count": count, "last_hash": last_hash})
