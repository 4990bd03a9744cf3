"""Signed usage reports (covenant.usage): every error code, exact money, one use per jti.

Real Ed25519 keys (cryptography), a real PostgreSQL. After every refusal the
account's footprint (journal lines, mutations, audit entries, reservations,
lots) and the number of redeemed usage tokens are checked unchanged. The
negative cases are those of seed 003 Task 4.5, plus the classic algorithm
confusion attacks and a replay raced between two processes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_support import footprint

from covenant import errors, metrics
from covenant.db import Connector
from covenant.ledger import Ledger
from covenant.money import BIGINT_MAX
from covenant.usage import (
    DEFAULT_ACTOR_ID,
    PERMANENT,
    UsageErrorCode,
    UsageReportError,
    decode_usage_report,
    sign_usage_report,
    verify_usage_report,
)

ROOT = Path(__file__).resolve().parents[2]
SVC = "service:billing"
HOUR = timedelta(hours=1)
RESERVED = 1_000

PRODUCER = Ed25519PrivateKey.generate()
PUBLIC = PRODUCER.public_key()
PUBLIC_PEM = PUBLIC.public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
PUBLIC_RAW = PUBLIC.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# -- helpers ------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def forge(header: dict[str, Any], payload: bytes | dict[str, Any], signature: bytes = b"") -> str:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return f"{b64(json.dumps(header).encode())}.{b64(body)}.{b64(signature)}"


def signed(payload: bytes | dict[str, Any], key: Ed25519PrivateKey = PRODUCER) -> str:
    """EdDSA over an arbitrary payload (also payloads that are not valid claims)."""
    header = b64(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
    body = b64(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    return f"{header}.{body}.{b64(key.sign(f'{header}.{body}'.encode()))}"


def claims(reservation_id: uuid.UUID, /, cost: Any = "60", **over: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "jti": str(uuid.uuid4()),
        "reservation_id": str(reservation_id),
        "actual_cost_micro": cost,
        "finalized": True,
        "iat": now,
        "exp": now + 300,
    }
    base.update(over)
    return base


def funded(ledger: Ledger, funds: int = 10_000) -> uuid.UUID:
    account = ledger.create_account(uuid.uuid4(), "user", actor_id=SVC)
    ledger.allocate(account, funds, "deposit", actor_id=SVC)
    return account


def state(db: Connector, account: uuid.UUID) -> dict[str, Any]:
    row = db.fetch_one("SELECT count(*) AS n FROM covenant.usage_tokens")
    assert row is not None
    return {**footprint(db, account), "usage_tokens": row["n"]}


def refuse(
    db: Connector,
    account: uuid.UUID,
    token: str,
    code: UsageErrorCode,
    *,
    key: Any = PUBLIC,
    conn: Any = None,
    **kwargs: Any,
) -> UsageReportError:
    """Assert the report is refused with ``code`` and that nothing changed."""
    before = state(db, account)
    with pytest.raises(UsageReportError) as exc:
        verify_usage_report(db if conn is None else conn, token, key, **kwargs)
    assert exc.value.code == code, exc.value
    assert exc.value.permanent is (code != UsageErrorCode.KEY_FETCH_FAILED)
    assert state(db, account) == before
    return exc.value


@pytest.fixture(scope="module")
def target(ledger: Ledger) -> tuple[uuid.UUID, uuid.UUID]:
    """An account with one pending reservation that every refused report aims at."""
    account = funded(ledger)
    return account, ledger.reserve(account, RESERVED, HOUR, actor_id=SVC)


# -- the error type -------------------------------------------------------------------


def test_error_codes_and_permanence() -> None:
    assert {c.value for c in UsageErrorCode} == {
        "SIGNATURE_INVALID",
        "ALGORITHM_REJECTED",
        "CLAIMS_SCHEMA",
        "RESERVATION_UNKNOWN",
        "OVERSPEND",
        "REPLAY",
        "KEY_FETCH_FAILED",
    }
    assert [c for c, permanent in PERMANENT.items() if not permanent] == [
        UsageErrorCode.KEY_FETCH_FAILED
    ]
    err = UsageReportError("REPLAY", "used", sqlstate="CV020")
    assert err.code == "REPLAY" and err.permanent and err.detail == "used"
    assert str(err) == "REPLAY: used" and isinstance(err, Exception)
    with pytest.raises(ValueError):
        UsageReportError("NOT_A_CODE", "x")


# -- happy path -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [PUBLIC, PUBLIC_PEM, PUBLIC_PEM.decode(), lambda: PUBLIC, PUBLIC_PEM.decode],
    ids=["object", "pem-bytes", "pem-str", "fetch-object", "fetch-pem"],
)
def test_report_finalizes_with_the_exact_cost(
    connector: Connector, ledger: Ledger, key: Any
) -> None:
    account = funded(ledger)
    rid = ledger.reserve(account, RESERVED, HOUR, actor_id=SVC)
    before = ledger.balance(account)
    jti = uuid.uuid4()
    token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=637, jti=jti)

    result = verify_usage_report(connector, token, key)

    assert result.jti == jti and result.reservation_id == rid and result.actual_cost_micro == 637
    assert result.expires_at - result.issued_at == timedelta(minutes=5)
    r = result.reservation
    assert (r.status, r.amount_micro, r.consumed_micro, r.released_micro) == (
        "finalized",
        RESERVED,
        637,
        RESERVED - 637,
    )
    after = ledger.balance(account)
    assert after.consumed == before.consumed + 637
    assert after.available == before.available + RESERVED - 637 and after.reserved == 0
    token_row = connector.fetch_one(
        "SELECT account_id, reservation_id, actual_micro, actor_id FROM covenant.usage_tokens "
        "WHERE jti = %s",
        [jti],
    )
    assert token_row == {
        "account_id": account,
        "reservation_id": rid,
        "actual_micro": 637,
        "actor_id": DEFAULT_ACTOR_ID,
    }
    audit = connector.fetch_one(
        "SELECT domain_tag, event_type, actor_id, payload FROM covenant.audit_trail "
        "WHERE entry_id = %s",
        [jti],
    )
    assert audit is not None
    assert audit["domain_tag"] == f"account:{account}"
    assert audit["event_type"] == "finalize_usage_report"
    assert audit["actor_id"] == DEFAULT_ACTOR_ID
    assert audit["payload"]["jti"] == str(jti)
    assert audit["payload"]["consumed_micro"] == "637"
    assert ledger.reconcile().ok


def test_zero_cost_and_custom_actor(connector: Connector, ledger: Ledger) -> None:
    account = funded(ledger)
    rid = ledger.reserve(account, RESERVED, HOUR, actor_id=SVC)
    token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=0)
    result = verify_usage_report(connector, token, PUBLIC, actor_id="service:gateway")
    assert result.reservation.consumed_micro == 0
    assert result.reservation.released_micro == RESERVED
    row = connector.fetch_one(
        "SELECT actor_id FROM covenant.usage_tokens WHERE jti = %s", [result.jti]
    )
    assert row == {"actor_id": "service:gateway"}


def test_cost_above_2_pow_53_survives_exactly(connector: Connector, ledger: Ledger) -> None:
    big = 2**53 + 1  # a float cannot hold it: float(big) == 2**53
    assert float(big) != big
    account = funded(ledger, 2**53 + 10)
    rid = ledger.reserve(account, 2**53 + 5, HOUR, actor_id=SVC)
    token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=big)
    assert json.loads(unb64(token.split(".")[1]))["actual_cost_micro"] == "9007199254740993"

    result = verify_usage_report(connector, token, PUBLIC)

    assert result.actual_cost_micro == big and result.reservation.consumed_micro == big
    assert result.reservation.released_micro == 4
    row = connector.fetch_one(
        "SELECT actual_micro::text AS t FROM covenant.usage_tokens WHERE jti = %s", [result.jti]
    )
    assert row == {"t": "9007199254740993"}
    assert ledger.balance(account).consumed == big


@settings(max_examples=40, deadline=None)
@given(cost=st.integers(min_value=0, max_value=BIGINT_MAX))
def test_cost_round_trips_sign_decode(cost: int) -> None:
    rid = uuid.uuid4()
    token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=cost)
    decoded = decode_usage_report(token, PUBLIC)
    assert decoded.actual_cost_micro == cost and decoded.reservation_id == rid


def test_signer_refuses_bad_input() -> None:
    rid = uuid.uuid4()
    with pytest.raises(TypeError):
        sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=True)
    with pytest.raises(ValueError):
        sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=-1)
    with pytest.raises(ValueError):
        sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=1, ttl=timedelta(0))
    with pytest.raises(TypeError):
        sign_usage_report(
            rsa.generate_private_key(65537, 2048),  # type: ignore[arg-type]
            reservation_id=rid,
            actual_cost_micro=1,
        )
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    token = sign_usage_report(
        PRODUCER, reservation_id=rid, actual_cost_micro=5, ttl=timedelta(minutes=2), now=now
    )
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "typ": "JWT"}
    body = json.loads(unb64(token.split(".")[1]))
    assert body["iat"] == int(now.timestamp()) and body["exp"] - body["iat"] == 120
    assert body["finalized"] is True and body["actual_cost_micro"] == "5"


# -- SIGNATURE_INVALID -----------------------------------------------------------------


def test_flipped_signature_byte(connector: Connector, target: tuple[uuid.UUID, uuid.UUID]) -> None:
    account, rid = target
    header, body, sig = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=5).split(
        "."
    )
    for i in (0, 31, 63):
        raw = bytearray(unb64(sig))
        raw[i] ^= 0x01
        refuse(connector, account, f"{header}.{body}.{b64(bytes(raw))}", "SIGNATURE_INVALID")


def test_tampered_payload(connector: Connector, target: tuple[uuid.UUID, uuid.UUID]) -> None:
    account, rid = target
    header, body, sig = sign_usage_report(
        PRODUCER, reservation_id=rid, actual_cost_micro=900
    ).split(".")
    cheaper = json.loads(unb64(body)) | {"actual_cost_micro": "1"}
    refuse(
        connector,
        account,
        f"{header}.{b64(json.dumps(cheaper).encode())}.{sig}",
        "SIGNATURE_INVALID",
    )
    flipped = bytearray(unb64(body))
    flipped[5] ^= 0x20
    refuse(connector, account, f"{header}.{b64(bytes(flipped))}.{sig}", "SIGNATURE_INVALID")


def test_signed_by_another_key(connector: Connector, target: tuple[uuid.UUID, uuid.UUID]) -> None:
    account, rid = target
    other = Ed25519PrivateKey.generate()
    token = sign_usage_report(other, reservation_id=rid, actual_cost_micro=5)
    refuse(connector, account, token, "SIGNATURE_INVALID")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        "a.b",
        "a.b.c",
        "...",
        "eyJhbGciOiJFZERTQSJ9.e30",  # two segments
        "eyJhbGciOiJFZERTQSJ9.!!!.AAAA",
        b64(b"[1,2]") + ".e30.AAAA",  # header not an object
        "é.e30.AAAA",
        "e30." * 3000 + "e30",  # oversized
    ],
)
def test_malformed_tokens(
    connector: Connector, target: tuple[uuid.UUID, uuid.UUID], token: str
) -> None:
    account, _ = target
    refuse(connector, account, token, "SIGNATURE_INVALID")


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "EdDSA", "crit": ["exp"]},  # a critical extension nobody implements
        {"alg": "EdDSA", "crit": "b64"},
        {"alg": "EdDSA", "kid": 5},
    ],
)
def test_properly_signed_but_unsupported_headers(
    connector: Connector, target: tuple[uuid.UUID, uuid.UUID], header: dict[str, Any]
) -> None:
    account, rid = target
    h = b64(json.dumps(header).encode())
    body = b64(json.dumps(claims(rid)).encode())
    token = f"{h}.{body}.{b64(PRODUCER.sign(f'{h}.{body}'.encode()))}"
    refuse(connector, account, token, "SIGNATURE_INVALID")
    # detached payload (RFC 7797): the signed payload is not in the token at all
    h = b64(json.dumps({"alg": "EdDSA", "b64": False, "crit": ["b64"]}).encode())
    raw = json.dumps(claims(rid)).encode()
    detached = f"{h}..{b64(PRODUCER.sign(h.encode() + b'.' + raw))}"
    refuse(connector, account, detached, "SIGNATURE_INVALID")


def test_the_key_is_never_taken_from_the_header(
    connector: Connector, target: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """An attacker signs with its own key and names it in ``jwk``/``jku``/``x5u``/``kid``."""
    account, rid = target
    attacker = Ed25519PrivateKey.generate()
    raw = attacker.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
    for extra in (
        {"jwk": jwk},
        {"jku": "https://attacker.example/jwks.json"},
        {"x5u": "https://attacker.example/cert.pem"},
        {"kid": "attacker"},
        {"jwk": jwk, "kid": "attacker", "jku": "https://attacker.example/jwks.json"},
    ):
        h = b64(json.dumps({"alg": "EdDSA", "typ": "JWT", **extra}).encode())
        body = b64(json.dumps(claims(rid, cost="1")).encode())
        token = f"{h}.{body}.{b64(attacker.sign(f'{h}.{body}'.encode()))}"
        refuse(connector, account, token, "SIGNATURE_INVALID")


def test_token_must_be_text(connector: Connector, target: tuple[uuid.UUID, uuid.UUID]) -> None:
    account, rid = target
    token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=5)
    refuse(connector, account, token.encode(), "SIGNATURE_INVALID")  # type: ignore[arg-type]


# -- ALGORITHM_REJECTED --------------------------------------------------------------


def test_hs256_with_the_public_key_as_secret(
    connector: Connector, target: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """The confusion attack: an HMAC "signed" with the verifier's own public key."""
    account, rid = target
    fetches: list[int] = []

    def fetch() -> Ed25519PublicKey:
        fetches.append(1)
        return PUBLIC

    for secret in (PUBLIC_PEM, PUBLIC_RAW):
        header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64(json.dumps(claims(rid)).encode())
        mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
        token = f"{header}.{body}.{b64(mac)}"
        for key in (PUBLIC, PUBLIC_PEM, PUBLIC_PEM.decode(), fetch):
            refuse(connector, account, token, "ALGORITHM_REJECTED", key=key)
    assert fetches == []  # decided from the header, before any key is fetched


def test_rs256_and_es256(connector: Connector, target: tuple[uuid.UUID, uuid.UUID]) -> None:
    account, rid = target
    rsa_key = rsa.generate_private_key(65537, 2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    for alg, key in (("RS256", rsa_key), ("PS256", rsa_key), ("ES256", ec_key)):
        token = jwt.encode(claims(rid), key, algorithm=alg)
        refuse(connector, account, token, "ALGORITHM_REJECTED")
        # even when the verifier is (wrongly) handed the matching key
        refuse(connector, account, token, "ALGORITHM_REJECTED", key=key.public_key())


@pytest.mark.parametrize(
    "alg", ["none", "None", "NONE", "eddsa", "Ed25519", "", None, 1, ["EdDSA"]]
)
def test_other_alg_values(
    connector: Connector, target: tuple[uuid.UUID, uuid.UUID], alg: Any
) -> None:
    account, rid = target
    signature = b"" if alg in ("none", "None", "NONE") else b"\x00" * 64
    refuse(connector, account, forge({"alg": alg}, claims(rid), signature), "ALGORITHM_REJECTED")


def test_missing_alg(connector: Connector, target: tuple[uuid.UUID, uuid.UUID]) -> None:
    account, rid = target
    refuse(connector, account, forge({"typ": "JWT"}, claims(rid)), "ALGORITHM_REJECTED")


# -- KEY_FETCH_FAILED ------------------------------------------------------------------


def test_verifier_key_of_another_algorithm_is_transient(
    connector: Connector, target: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A good EdDSA report, but the *verifier* holds an RSA, Ed448 or private key.

    The report was not judged: the verifier's configuration is wrong, and the
    same token succeeds once it is fixed, so the producer must not drop it
    (KEY_FETCH_FAILED, not a permanent ALGORITHM_REJECTED)."""
    account, rid = target
    token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=5)
    rsa_pub = rsa.generate_private_key(65537, 2048).public_key()
    ed448_pub = ed448.Ed448PrivateKey.generate().public_key()  # PyJWT's EdDSA would take it
    rsa_pem = rsa_pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for key in (rsa_pub, ed448_pub, rsa_pem, PRODUCER, lambda: ed448_pub):
        err = refuse(connector, account, token, "KEY_FETCH_FAILED", key=key)
        assert "Ed25519" in err.detail and err.permanent is False
    # fixed configuration, same token: accepted
    assert decode_usage_report(token, PUBLIC).reservation_id == rid


def test_key_fetch_failure_is_transient(
    connector: Connector, target: tuple[uuid.UUID, uuid.UUID]
) -> None:
    account, rid = target
    token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=5)
    boom = ConnectionError("JWKS endpoint timed out")

    def fetch() -> Ed25519PublicKey:
        raise boom

    err = refuse(connector, account, token, "KEY_FETCH_FAILED", key=fetch)
    assert err.permanent is False and err.__cause__ is boom
    assert "timed out" in err.detail
    for bad in (lambda: None, lambda: b"not a pem", "-----BEGIN PUBLIC KEY-----\nxx\n", 42):
        refuse(connector, account, token, "KEY_FETCH_FAILED", key=bad)


# -- CLAIMS_SCHEMA ---------------------------------------------------------------------

REQUIRED = ("jti", "reservation_id", "actual_cost_micro", "finalized", "iat", "exp")


@pytest.mark.parametrize("missing", REQUIRED)
def test_missing_claim(
    connector: Connector, target: tuple[uuid.UUID, uuid.UUID], missing: str
) -> None:
    account, rid = target
    body = claims(rid)
    del body[missing]
    err = refuse(connector, account, signed(body), "CLAIMS_SCHEMA")
    assert missing in err.detail


BAD_CLAIMS: list[tuple[str, Any]] = [
    ("jti", "not-a-uuid"),
    ("jti", 12345),
    ("jti", uuid.uuid4().hex),  # no hyphens
    ("jti", "{" + str(uuid.uuid4()) + "}"),
    ("jti", "urn:uuid:" + str(uuid.uuid4())),
    ("jti", None),
    ("reservation_id", "reservation-1"),
    ("reservation_id", ["x"]),
    ("actual_cost_micro", 60),  # a JSON number
    ("actual_cost_micro", 2**60),
    ("actual_cost_micro", 60.0),
    ("actual_cost_micro", "60.0"),  # a float string
    ("actual_cost_micro", "6e1"),
    ("actual_cost_micro", "-5"),  # negative
    ("actual_cost_micro", -5),
    ("actual_cost_micro", "007"),  # leading zeros
    ("actual_cost_micro", "00"),
    ("actual_cost_micro", "+60"),
    ("actual_cost_micro", " 60"),
    ("actual_cost_micro", "60\n"),
    ("actual_cost_micro", ""),
    ("actual_cost_micro", "0x3c"),
    ("actual_cost_micro", "\uff16\uff10"),  # full-width digits
    ("actual_cost_micro", "1" * 257),  # over the 256-digit bound
    ("actual_cost_micro", True),
    ("actual_cost_micro", None),
    ("finalized", False),
    ("finalized", "true"),
    ("finalized", 1),
    ("finalized", None),
    ("iat", "1700000000"),
    ("iat", 1.7e9),
    ("iat", True),
    ("iat", -1),
    ("exp", 10**20),
]


@pytest.mark.parametrize(
    ("claim", "value"), BAD_CLAIMS, ids=[f"{c}={v!r}"[:40] for c, v in BAD_CLAIMS]
)
def test_malformed_claim(
    connector: Connector, target: tuple[uuid.UUID, uuid.UUID], claim: str, value: Any
) -> None:
    account, rid = target
    err = refuse(connector, account, signed(claims(rid, **{claim: value})), "CLAIMS_SCHEMA")
    assert claim in err.detail


@pytest.mark.parametrize(
    "payload",
    [
        b"[]",
        b'"claims"',
        b"not json",
        b"",
        b'{"actual_cost_micro": NaN}',
    ],
)
def test_payload_not_a_claims_object(
    connector: Connector, target: tuple[uuid.UUID, uuid.UUID], payload: bytes
) -> None:
    account, _ = target
    refuse(connector, account, signed(payload), "CLAIMS_SCHEMA")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_refused_by_the_parser(
    connector: Connector, target: tuple[uuid.UUID, uuid.UUID], constant: str
) -> None:
    """Refused as not JSON, not merely because a float claim fails its schema."""
    account, rid = target
    text = json.dumps(claims(rid))[:-1] + f', "note": {constant}}}'
    err = refuse(connector, account, signed(text.encode()), "CLAIMS_SCHEMA")
    assert "is not JSON" in err.detail


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_claims_are_utf8_only(
    connector: Connector, target: tuple[uuid.UUID, uuid.UUID], encoding: str
) -> None:
    """RFC 7519 7.2: the claims set is UTF-8. json.loads(bytes) would sniff UTF-16/32 and a BOM."""
    account, _ = target
    body = json.dumps(claims(uuid.uuid4())).encode(encoding)
    refuse(connector, account, signed(body), "CLAIMS_SCHEMA")


def test_duplicate_claim_names_are_refused(
    connector: Connector, target: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """``{"actual_cost_micro": "1", ..., "actual_cost_micro": "900"}``: never "last one wins"."""
    account, rid = target
    text = json.dumps(claims(rid, cost="1"))[:-1] + ', "actual_cost_micro": "900"}'
    err = refuse(connector, account, signed(text.encode()), "CLAIMS_SCHEMA")
    assert "duplicate" in err.detail


def test_clock_checks(connector: Connector, target: tuple[uuid.UUID, uuid.UUID]) -> None:
    account, rid = target
    now = int(time.time())
    cases = {
        "expired": claims(rid, iat=now - 600, exp=now - 120),
        "issued in the future": claims(rid, iat=now + 600, exp=now + 900),
        "exp before iat": claims(rid, iat=now, exp=now - 1),
        "exp equals iat": claims(rid, iat=now, exp=now),
        "not yet valid": claims(rid, nbf=now + 600),
    }
    for name, body in cases.items():
        err = refuse(connector, account, signed(body), "CLAIMS_SCHEMA")
        assert err.detail, name
    # within the leeway (30 s by default) both edges are accepted, without a database
    assert decode_usage_report(signed(claims(rid, iat=now - 300, exp=now - 10)), PUBLIC)
    assert decode_usage_report(signed(claims(rid, iat=now + 10, exp=now + 300)), PUBLIC)
    late = signed(claims(rid, iat=now - 300, exp=now - 10))
    with pytest.raises(UsageReportError) as exc:
        decode_usage_report(late, PUBLIC, leeway=timedelta(0))
    assert exc.value.code == "CLAIMS_SCHEMA"
    future = datetime.fromtimestamp(now + 3600, UTC)
    with pytest.raises(UsageReportError):
        decode_usage_report(signed(claims(rid)), PUBLIC, clock=lambda: future)


def test_exp_at_the_last_second_a_datetime_holds() -> None:
    """The largest exp the schema allows is 9999-12-31T23:59:59Z; the leeway must not
    overflow it into a bare OverflowError (every refusal is a UsageReportError)."""
    rid = uuid.uuid4()
    last = 253402300799
    assert decode_usage_report(signed(claims(rid, exp=last)), PUBLIC).exp == last
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    with pytest.raises(UsageReportError) as exc:
        decode_usage_report(signed(claims(rid, exp=last - 60)), PUBLIC, clock=lambda: late)
    assert exc.value.code == "CLAIMS_SCHEMA" and "expired" in exc.value.detail


def test_extra_claims_are_ignored() -> None:
    rid = uuid.uuid4()
    body = claims(rid, iss="finn", sub="agent-7", aud=["covenant"], cost="12")
    assert decode_usage_report(signed(body), PUBLIC).actual_cost_micro == 12


# -- RESERVATION_UNKNOWN ---------------------------------------------------------------


def test_unknown_reservation(connector: Connector, target: tuple[uuid.UUID, uuid.UUID]) -> None:
    account, _ = target
    token = sign_usage_report(PRODUCER, reservation_id=uuid.uuid4(), actual_cost_micro=5)
    err = refuse(connector, account, token, "RESERVATION_UNKNOWN")
    assert err.sqlstate == "CV014" and isinstance(err.__cause__, errors.ReservationUnknown)


def test_resolved_reservation_is_unknown_not_replay(connector: Connector, ledger: Ledger) -> None:
    """A different jti for an already finalized (or released) reservation: CV013."""
    account = funded(ledger)
    rid = ledger.reserve(account, RESERVED, HOUR, actor_id=SVC)
    verify_usage_report(
        connector, sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=5), PUBLIC
    )
    second = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=5)
    err = refuse(connector, account, second, "RESERVATION_UNKNOWN")
    assert err.sqlstate == "CV013"
    released = ledger.reserve(account, RESERVED, HOUR, actor_id=SVC)
    ledger.release(released, actor_id=SVC)
    token = sign_usage_report(PRODUCER, reservation_id=released, actual_cost_micro=5)
    assert refuse(connector, account, token, "RESERVATION_UNKNOWN").sqlstate == "CV013"


def test_expired_reservation(connector: Connector, ledger: Ledger) -> None:
    account = funded(ledger)
    rid = ledger.reserve(account, RESERVED, timedelta(milliseconds=200), actor_id=SVC)
    time.sleep(0.4)
    token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=5)
    err = refuse(connector, account, token, "RESERVATION_UNKNOWN")
    assert err.sqlstate == "CV015" and isinstance(err.__cause__, errors.ReservationExpired)


# -- OVERSPEND -------------------------------------------------------------------------


def test_overspend(connector: Connector, target: tuple[uuid.UUID, uuid.UUID]) -> None:
    account, rid = target
    token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=RESERVED + 1)
    err = refuse(connector, account, token, "OVERSPEND")
    assert err.sqlstate == "CV011" and isinstance(err.__cause__, errors.BudgetOverspend)


@pytest.mark.parametrize("cost", [BIGINT_MAX + 1, 2**64, 10**255])
def test_cost_above_bigint_is_overspend_without_the_database(migrated_url: str, cost: int) -> None:
    closed = psycopg.connect(migrated_url)
    closed.close()  # any query on it would raise OperationalError
    token = sign_usage_report(PRODUCER, reservation_id=uuid.uuid4(), actual_cost_micro=cost)
    with pytest.raises(UsageReportError) as exc:
        verify_usage_report(closed, token, PUBLIC)
    assert exc.value.code == "OVERSPEND" and exc.value.permanent and exc.value.sqlstate is None
    assert str(cost) in exc.value.detail


def test_cost_at_bigint_max_decodes_exactly() -> None:
    token = sign_usage_report(PRODUCER, reservation_id=uuid.uuid4(), actual_cost_micro=BIGINT_MAX)
    assert decode_usage_report(token, PUBLIC).actual_cost_micro == BIGINT_MAX


# -- REPLAY ----------------------------------------------------------------------------


def test_replay_in_one_process(connector: Connector, ledger: Ledger) -> None:
    account = funded(ledger)
    rid = ledger.reserve(account, RESERVED, HOUR, actor_id=SVC)
    token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=100)
    verify_usage_report(connector, token, PUBLIC)
    err = refuse(connector, account, token, "REPLAY")
    assert err.sqlstate == "CV020" and isinstance(err.__cause__, errors.UsageReplay)
    # the same jti aimed at another open reservation is still a replay
    other = ledger.reserve(account, RESERVED, HOUR, actor_id=SVC)
    jti = uuid.UUID(jwt.decode(token, options={"verify_signature": False})["jti"])
    again = sign_usage_report(PRODUCER, reservation_id=other, actual_cost_micro=100, jti=jti)
    assert refuse(connector, account, again, "REPLAY").sqlstate == "CV020"


def test_jti_already_spent_as_a_mutation_id(connector: Connector, ledger: Ledger) -> None:
    account = funded(ledger)
    spent = uuid.uuid4()
    rid = ledger.reserve(account, RESERVED, HOUR, actor_id=SVC, mutation_id=spent)
    token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=5, jti=spent)
    assert refuse(connector, account, token, "REPLAY").sqlstate == "CV002"


CHILD = """
import json, sys
from covenant.db import Connector
from covenant.usage import UsageReportError, verify_usage_report

url, token, pem = sys.argv[1:4]
with Connector(database_url=url) as db:
    try:
        r = verify_usage_report(db, token, pem)
        print(json.dumps({"ok": True, "consumed": int(r.reservation.consumed_micro)}))
    except UsageReportError as e:
        print(json.dumps({"ok": False, "code": str(e.code), "permanent": e.permanent}))
"""


def test_replay_across_two_processes(migrated_url: str) -> None:
    """Two processes redeem one token at once: exactly one wins, the other gets REPLAY.

    The test holds the account's row lock until both processes are waiting
    on it inside ``finalize_usage_report``, so the two really overlap."""
    with Connector(database_url=migrated_url) as db:
        ledger = Ledger(db)
        account = funded(ledger)
        rid = ledger.reserve(account, RESERVED, HOUR, actor_id=SVC)
        token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=250)
        before = state(db, account)

        with psycopg.connect(migrated_url) as holder:
            holder.execute(
                "SELECT FROM covenant.accounts WHERE account_id = %s FOR NO KEY UPDATE", [account]
            )
            children = [
                subprocess.Popen(
                    [sys.executable, "-c", CHILD, migrated_url, token, PUBLIC_PEM.decode()],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            waiting = 0
            deadline = time.monotonic() + 60
            with psycopg.connect(migrated_url, autocommit=True) as probe:
                while waiting < 2 and time.monotonic() < deadline:
                    row = probe.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name = 'covenant' AND wait_event_type = 'Lock'"
                    ).fetchone()
                    waiting = row[0] if row else 0
                    time.sleep(0.05)
            assert waiting == 2, "both processes should be waiting on the account lock"
            holder.rollback()
            outputs = [c.communicate(timeout=60) for c in children]

        results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
        assert sorted(r["ok"] for r in results) == [False, True], outputs
        assert [r for r in results if not r["ok"]] == [
            {"ok": False, "code": "REPLAY", "permanent": True}
        ]
        assert [r["consumed"] for r in results if r["ok"]] == [250]
        after = state(db, account)
        assert after["usage_tokens"] == before["usage_tokens"] + 1
        assert after["mutations"] == before["mutations"] + 1
        assert after["entries"] == before["entries"] + 1
        assert ledger.reservation(rid).consumed_micro == 250


# -- the caller's transaction ----------------------------------------------------------


@pytest.fixture
def caller(module_db_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(module_db_url) as c:
        yield c
        c.rollback()


def test_caller_transaction_rolls_back_with_the_caller(
    connector: Connector, ledger: Ledger, caller: psycopg.Connection[tuple[Any, ...]]
) -> None:
    account = funded(ledger)
    rid = ledger.reserve(account, RESERVED, HOUR, actor_id=SVC)
    token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=42)
    before = state(connector, account)

    result = verify_usage_report(caller, token, PUBLIC)

    assert result.reservation.status == "finalized" and result.reservation.consumed_micro == 42
    assert caller.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    seen = caller.execute("SELECT count(*) FROM covenant.usage_tokens WHERE jti = %s", [result.jti])
    assert seen.fetchone() == (1,)
    assert state(connector, account) == before  # not committed: invisible outside
    caller.rollback()
    assert state(connector, account) == before
    assert ledger.reservation(rid).status == "pending"
    # rolled back means not redeemed: the same token still works, once
    assert verify_usage_report(connector, token, PUBLIC).reservation.consumed_micro == 42
    refuse(connector, account, token, "REPLAY")


def test_caller_transaction_survives_a_refusal(
    connector: Connector, ledger: Ledger, caller: psycopg.Connection[tuple[Any, ...]]
) -> None:
    account = funded(ledger)
    rid = ledger.reserve(account, RESERVED, HOUR, actor_id=SVC)
    before = state(connector, account)
    caller_ledger = Ledger(connector)
    mine = caller_ledger.create_account(uuid.uuid4(), "user", actor_id=SVC, conn=caller)  # type: ignore[arg-type]
    over = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=RESERVED + 1)
    refuse(connector, account, over, "OVERSPEND", conn=caller)
    # the caller's transaction is intact and still usable: its own work, then a good report
    ok = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=7)
    assert verify_usage_report(caller, ok, PUBLIC).reservation.consumed_micro == 7
    refuse(connector, account, ok, "REPLAY", conn=caller)
    assert state(connector, account) == before
    caller.commit()
    assert ledger.reservation(rid).consumed_micro == 7
    assert connector.fetch_one(
        "SELECT count(*) AS n FROM covenant.accounts WHERE account_id = %s", [mine]
    ) == {"n": 1}


def test_autocommit_connection_gets_its_own_transaction(
    connector: Connector, ledger: Ledger, module_db_url: str
) -> None:
    account = funded(ledger)
    rid = ledger.reserve(account, RESERVED, HOUR, actor_id=SVC)
    with psycopg.connect(module_db_url, autocommit=True) as auto:
        token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=3)
        assert verify_usage_report(auto, token, PUBLIC).reservation.consumed_micro == 3
        refuse(connector, account, token, "REPLAY", conn=auto)
    assert ledger.reservation(rid).consumed_micro == 3  # committed


# -- the verifier's own environment ----------------------------------------------------


def test_environment_failures_are_not_report_verdicts(
    connector: Connector, target: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A person may not finalize usage reports (policy: services only); a malformed actor
    is refused before anything. Neither is a UsageReportError: the report was not judged."""
    account, rid = target
    token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=5)
    before = state(connector, account)
    with pytest.raises(errors.NotAuthorized):
        verify_usage_report(
            connector, token, PUBLIC, actor_id="6f1e0c1e-8d0b-4a57-9b43-2a6f1f0e9c11"
        )
    for actor in ("", "service:", "billing", "service:Billing"):
        with pytest.raises(errors.InvalidArgument):
            verify_usage_report(connector, token, PUBLIC, actor_id=actor)
    assert state(connector, account) == before


def test_outcomes_are_counted_in_the_metrics(
    connector: Connector, ledger: Ledger, target: tuple[uuid.UUID, uuid.UUID]
) -> None:
    def count(outcome: str) -> float:
        return metrics.sample("covenant_usage_reports_total", outcome=outcome)

    account = funded(ledger)
    rid = ledger.reserve(account, RESERVED, HOUR, actor_id=SVC)
    token = sign_usage_report(PRODUCER, reservation_id=rid, actual_cost_micro=1)
    ok, replay, invalid = count("ok"), count("REPLAY"), count("SIGNATURE_INVALID")
    verify_usage_report(connector, token, PUBLIC)
    refuse(connector, account, token, UsageErrorCode.REPLAY)
    refuse(connector, target[0], "not.a.token", UsageErrorCode.SIGNATURE_INVALID)
    assert (count("ok"), count("REPLAY"), count("SIGNATURE_INVALID")) == (
        ok + 1,
        replay + 1,
        invalid + 1,
    )
