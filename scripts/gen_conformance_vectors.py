"""Generate conformance/audit_hash_v1.json from the database.

The expected values of every vector (``payload_canonical`` and
``entry_hash``) are computed by PostgreSQL — ``payload_json::jsonb::text``
and ``covenant.audit_entry_hash_v1(...)`` — never by covenant's Python, which
the vectors exist to check.

Usage (a migrated database; ``covenant db up`` then ``covenant migrate``)::

    .venv/bin/python scripts/gen_conformance_vectors.py postgresql://...
    .venv/bin/python scripts/gen_conformance_vectors.py  # COVENANT_DATABASE_URL

The inputs below are the source of truth; the JSON file is their output.
Add a vector by appending an input, rerun, review the diff, commit both.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "conformance" / "audit_hash_v1.json"
FORMAT = "covenant.conformance.audit_hash.v1"

_NAMESPACE = uuid.UUID("6f1c1d0e-8a4b-4c55-9d7e-2f0a3b4c5d6e")
GENESIS = "00" * 32
PERSON = "3f2b8c1e-9d4a-4e6f-b7c8-0a1b2c3d4e5f"
SERVICE = "service:billing-api"
MAX_TAG = "t" + "a0_.:-" * 21 + "z"  # 128 characters, every allowed class


def _prev(name: str) -> str:
    return hashlib.sha256(f"previous of {name}".encode()).hexdigest()


def _long_string() -> str:
    # 4 KiB-ish of mixed text, escapes and multi-byte characters
    chunk = r"lorem ipsum \"quoted\" \\ back\/slash \u00e9t\u00e9 \ud83d\ude80 tab\t "
    return '{"text": "' + chunk * 60 + '", "n": 1}'


def _many_keys() -> str:
    keys = [f"k{(i * 37) % 101:03d}" + "x" * (i % 5) for i in range(60)]
    return "{" + ", ".join(f'"{k}": {i}' for i, k in enumerate(reversed(keys))) + "}"


def _deep_array(depth: int) -> str:
    return "[ " * depth + '"core"' + " ]" * depth


# (name, payload_json, overrides). Defaults: domain "tenant:acme.billing",
# event "ledger.transfer", the person actor, a non-genesis previous hash.
_CASES: list[tuple[str, str, dict[str, Any]]] = [
    # --- objects, key order, duplicates
    ("empty object with spaces", "{ }", {}),
    ("empty array with newline", "[\n]", {}),
    ("keys unordered", '{"zeta": 1, "alpha": 2, "mid": 3}', {}),
    ("keys by length then bytes", '{"bbb":1,"aa":2,"c":3,"ab":4,"":5}', {}),
    ("keys upper before lower", '{"b":1,"B":2,"a":3,"A":4,"_":5}', {}),
    ("key byte length not char length", '{"\u00e9": 1, "ab": 2, "z": 3, "\u00e9\u00e9": 4}', {}),
    ("astral key sorts by 4 bytes", '{"\U0001f600": 1, "abcd": 2, "abc": 3, "abcde": 4}', {}),
    ("duplicate key keeps last", '{"a": 1, "b": 2, "a": 3}', {}),
    (
        "duplicate key across types",
        '{"x": {"y": 1}, "x": [1, 2], "w": 0, "x": "last"}',
        {},
    ),
    ("duplicate key with decimal scale", '{"a": 1.0, "a": 2.00}', {}),
    (
        "nested duplicates",
        '{"outer": {"k": 1, "k": {"k": 2, "k": 3}}, "outer2": [{"d": 1, "d": 2}]}',
        {},
    ),
    ("many keys shuffled", _many_keys(), {}),
    # --- unicode
    (
        "unicode bmp raw",
        '{"name": "Zo\u00eb \u00c5ngstr\u00f6m \u2014 \u6771\u4eac", '
        '"ru": "\u041f\u0440\u0438\u0432\u0435\u0442"}',
        {},
    ),
    (
        "emoji raw with zwj sequence",
        '{"emoji" :"\U0001f600\U0001f389\U0001f469\u200d\U0001f469\u200d\U0001f467"}',
        {},
    ),
    (
        "emoji via surrogate escapes",
        r'{"e": "\ud83d\ude00", "flag": "\uD83C\uDDEB\uD83C\uDDF7"}',
        {},
    ),
    (
        "combining vs precomposed keys",
        '{"cafe\u0301": "decomposed", "caf\u00e9": "precomposed"}',
        {},
    ),
    (
        "rtl and bidi controls",
        '{"he": "\u05e9\u05dc\u05d5\u05dd", "ar": "\u0645\u0631\u062d\u0628\u0627", '
        '"mixed": "abc \u202e fed \u202c"}',
        {},
    ),
    ("bom and nonchars", r'{"s": "\ufeffstart\uffff\ufffe end"}', {}),
    ("line and paragraph separators", r'{"s": "a\u2028b\u2029c", "raw": "x' + "\u2028" + 'y"}', {}),
    ("c1 controls and del stay raw", r'{"s": "\u007f\u0080\u0085\u009f"}', {}),
    # --- escapes and control characters
    ("quotes and backslashes", r'{"q": "say \"hi\"", "path": "C:\\dir\\file", "both": "\\\""}', {}),
    ("solidus escaped in input", r'{"url": "http:\/\/example.com\/a/b"}', {}),
    ("ascii unicode escapes", r'{"\u0061": "\u0062\u0063", "\u0041\u0042": "\u007a"}', {}),
    ("upper-case hex escapes", r'{"s": "\u00E9\u00C9\u20AC"}', {}),
    ("short escapes", r'{"s":"\b\f\n\r\t"}', {}),
    ("other control characters", r'{"s" : "\u0001\u0002\u000b\u000e\u001b\u001f"}', {}),
    ("control characters in keys", r'{"a\nb": 1, "tab\tkey": 2, "\u0007bell": 3}', {}),
    ("html-ish characters stay raw", r'{"s": "<script>&amp;</script>\u003c\u003e\u0026"}', {}),
    ("string holding json", r' "{\"a\": 1, \"b\": [true]}" ', {}),
    ("numeric-looking strings", '{"c": "-0", "b": "1e2", "a": "1.0"}', {}),
    # --- numbers
    (
        "integers above 2^53",
        "[9007199254740993,-9007199254740993,18446744073709551616,123456789012345678901234567890]",
        {},
    ),
    ("bigint bounds", "[9223372036854775807,-9223372036854775808,9223372036854775808e0]", {}),
    ("negative zero forms", "[-0, -0.0, 0, -0e10, 0.000, -0.00e1, 0E-2]", {}),
    ("trailing zeros kept", "[1.50, 100.000, 0.10, -2.500, 1.50e0, 25.00e-1]", {}),
    (
        "exponents positive",
        "[1e2, 1E+2, 1.0e2, 1.50e1, 1.23456e3, 12.5E1, 5e0]",
        {},
    ),
    ("exponents negative", "[1e-3, -2.5E-3, 12e-1, 1.0e-1, 100e-2]", {}),
    (
        "very long decimals",
        "[3.14159265358979323846264338327950288419716939937510582097494459230781640628,"
        " 1e-30, 0.000000000000000000000000000001, -1234567890.0987654321098765432109876543210]",
        {},
    ),
    ("large exponents", "[1e100, -1e-100, 1.5e40]", {}),
    ("micro-usd amounts", '{"amount_micro_usd": 12345678901234567, "fee": 0, "share_bp": 250}', {}),
    # --- structure
    ("booleans and null", '{"t": true, "f": false, "n": null}', {}),
    ("nested empties", '{"o": {}, "a": [], "n": [[], {}, [{}], {"e": []}]}', {}),
    (
        "deep nesting",
        '{"a":{"b":{"c":{"d":[1,[2,[3,{"e":null,"dd":[{}]}]]]}}}}',
        {},
    ),
    ("deep array", _deep_array(40), {}),
    ("array order and duplicates kept", "[3,1,2,1,3]", {}),
    ("whitespace everywhere", ' \n\t {  "b" :\r\n [ 1 ,2 ] ,\t"a":\n{ }  }  \r\n', {}),
    ("long string", _long_string(), {}),
    # --- top-level scalars and arrays
    ("top-level string", '  "hello"  ', {}),
    ("top-level number with exponent", " 1.50e1 ", {}),
    ("top-level true", "true\n", {}),
    ("top-level null", "\tnull", {}),
    ("top-level negative zero", "-0.0", {}),
    ("top-level mixed array", '[1, "two", {"three": 3, "a": 0}, [4], null, true, false]', {}),
    # --- fields other than the payload
    ("genesis previous hash", '{"first":true}', {"seq": 1, "previous_hash": GENESIS}),
    ("service actor", '{"by" : "service"}', {"actor_id": SERVICE}),
    ("max-length domain tag", '{"tag":"max","tag":"max"}', {"domain_tag": MAX_TAG}),
    ("max-length event type", "{\n}", {"event_type": MAX_TAG[::-1]}),
    ("single character tags", "[ ]", {"domain_tag": "a", "event_type": "0"}),
    (
        "seq at bigint max",
        '{"seq":"max","n":1e0}',
        {"seq": 9223372036854775807, "actor_id": "service:a"},
    ),
    # --- event times
    ("time utc z suffix", '{"tz":"Z","n":1.0}', {"event_time": "2024-01-01T00:00:00Z"}),
    (
        "time whole second keeps .000000",
        '{"us":0,"s":"x"}',
        {"event_time": "2024-06-15T12:00:00.000000+00:00"},
    ),
    ("time microseconds", '{"us": 1E0}', {"event_time": "2024-06-15T12:34:56.000001+00:00"}),
    (
        "time positive offset",
        '{"b": 2, "a": 1}',
        {"event_time": "2024-06-15T17:04:56.123456+05:30"},
    ),
    (
        "time negative offset",
        '{"offset":"-08:00" }',
        {"event_time": "2024-06-15T04:34:56.654321-08:00"},
    ),
    ("time nepal offset", '{"np":"+05:45","np":1}', {"event_time": "2024-06-15T18:19:56.5+05:45"}),
    (
        "time leap day crosses into march",
        '{"leap": true, "day": 29}',
        {"event_time": "2024-02-29T23:59:59.999999-01:00"},
    ),
    (
        "time leap day from plus 14",
        '{"z":{},"a":[]}',
        {"event_time": "2024-03-01T09:30:00.25+14:00"},
    ),
    (
        "time new year crosses back",
        '{"year":2025.0}',
        {"event_time": "2025-01-01T00:15:00.1+01:00"},
    ),
    (
        "time millisecond precision",
        '{"ms" :0.999e3}',
        {"event_time": "2023-12-31T23:59:59.999-12:00"},
    ),
    ("time before the epoch", "[ -1 ]", {"event_time": "1969-12-31T23:59:59.999999+00:00"}),
    ("time year with leading zeros", '{"y" : 5}', {"event_time": "0005-03-01T00:00:00+00:00"}),
]


def _inputs() -> list[dict[str, Any]]:
    vectors = []
    for index, (name, payload_json, overrides) in enumerate(_CASES):
        vector: dict[str, Any] = {
            "name": name,
            "domain_tag": "tenant:acme.billing",
            "seq": 1000 + index,
            "entry_id": str(uuid.uuid5(_NAMESPACE, name)),
            "event_type": "ledger.transfer",
            "actor_id": SERVICE if index % 3 == 0 else PERSON,
            "event_time": f"2024-{1 + index % 12:02d}-{1 + index % 28:02d}T"
            f"{index % 24:02d}:{(7 * index) % 60:02d}:{(13 * index) % 60:02d}."
            f"{(index * 104729) % 1000000:06d}+00:00",
            "previous_hash": _prev(name),
            "payload_json": payload_json,
        }
        vector.update(overrides)
        vectors.append(vector)
    names = [v["name"] for v in vectors]
    if len(set(names)) != len(names):
        raise SystemExit("vector names must be unique")
    return vectors


_QUERY = """
SELECT
    %(payload_json)s::jsonb::text,
    pg_catalog.encode(covenant.audit_entry_hash_v1(
        %(domain_tag)s, %(seq)s, %(entry_id)s::uuid, %(event_type)s, %(actor_id)s,
        %(event_time)s::timestamptz, pg_catalog.decode(%(previous_hash)s, 'hex'),
        %(payload_json)s::jsonb
    ), 'hex')
"""


def generate(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The conformance document, every expected value computed by ``conn``."""
    vectors = []
    for vector in _inputs():
        row = conn.execute(_QUERY, vector).fetchone()
        assert row is not None
        canonical, entry_hash = row
        vectors.append({**vector, "payload_canonical": canonical, "entry_hash": entry_hash})
    return {
        "format": FORMAT,
        "description": (
            "Conformance vectors for covenant's canonical audit hash, version 1 (SPEC 3.2). "
            "payload_canonical is payload_json::jsonb::text and entry_hash is "
            "covenant.audit_entry_hash_v1(domain_tag, seq, entry_id, event_type, actor_id, "
            "event_time::timestamptz, decode(previous_hash, 'hex'), payload_json::jsonb), "
            "both computed by PostgreSQL."
        ),
        "vectors": vectors,
    }


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else os.environ.get("COVENANT_DATABASE_URL")
    if not url:
        print(__doc__, file=sys.stderr)
        return 2
    with psycopg.connect(url) as conn:
        # the session time zone must not matter: pick an awkward one
        conn.execute("SET TIME ZONE 'Pacific/Chatham'")
        document = generate(conn)
        conn.rollback()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(document, indent=2, ensure_ascii=True) + "\n", encoding="utf-8")
    print(f"wrote {len(document['vectors'])} vectors to {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
