"""Signed usage reports: verify an Ed25519 JWT, then finalize its reservation once.

A producer that ran a reserved job reports what it actually cost in a JWT
signed with its Ed25519 key (``alg`` EdDSA, nothing else). The verifier
checks, in this order, and stops at the first failure:

1. the token's shape and its unverified header: ``alg`` must be ``EdDSA``
   (``ALGORITHM_REJECTED`` otherwise, decided *before* any key is used, so
   an HS256 token "signed" with the public key as HMAC secret never reaches
   a verifier);
2. the key: an :class:`Ed25519PublicKey`, PEM text, or a zero-argument
   callable that fetches one (``KEY_FETCH_FAILED`` when it cannot be had or
   is not an Ed25519 public key: the verifier's configuration is at fault,
   the report was not judged, and the same token succeeds once it is fixed);
3. the signature (``SIGNATURE_INVALID``);
4. the claims, by :class:`UsageClaims` (``CLAIMS_SCHEMA``), and the clock;
5. one database transaction: ``covenant.finalize_usage_report`` records the
   ``jti`` in ``covenant.usage_tokens`` (its primary key: a replay is refused
   even across processes) and finalizes the reservation with the actual
   cost; the reservation is read back in the same transaction.

Every failure is a :class:`UsageReportError` with a ``code`` and a
``permanent`` flag, and a rejected report changes nothing. Failures of the
verifier's own environment — the database unreachable, the audit domain
quarantined, the verifying actor not allowed by the mutation policy,
retries exhausted — are not verdicts on the report: they propagate as the
covenant exception of their kind (:mod:`covenant.errors`), and nothing was
written. See docs/usage-reports.md.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, NoReturn, TypeAlias

import jwt
import psycopg
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, field_validator

from covenant import errors, metrics
from covenant.db import Connector
from covenant.governance import is_actor_id
from covenant.ledger import Reservation, apply_usage_report
from covenant.money import BIGINT_MAX, MicroUSD

ALGORITHM: Final = "EdDSA"
DEFAULT_ACTOR_ID: Final = "service:covenant.usage"
DEFAULT_LEEWAY: Final = timedelta(seconds=30)
DEFAULT_TTL: Final = timedelta(minutes=5)
MAX_TOKEN_BYTES: Final = 8192
MAX_COST_DIGITS: Final = 256

KeyMaterial: TypeAlias = Ed25519PublicKey | bytes | str
PublicKeySource: TypeAlias = KeyMaterial | Callable[[], KeyMaterial]


class UsageErrorCode(StrEnum):
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    ALGORITHM_REJECTED = "ALGORITHM_REJECTED"
    CLAIMS_SCHEMA = "CLAIMS_SCHEMA"
    RESERVATION_UNKNOWN = "RESERVATION_UNKNOWN"
    OVERSPEND = "OVERSPEND"
    REPLAY = "REPLAY"
    KEY_FETCH_FAILED = "KEY_FETCH_FAILED"


# Permanent: the producer must not resend the token; it will be refused
# again (a report issued in the future or not valid yet could pass later,
# but by policy the producer's clock is wrong and it signs a new report).
# KEY_FETCH_FAILED is the one transient code: the report was never judged
# (no usable key could be had), so the same token may succeed once the key
# source answers or the verifier's key is fixed.
PERMANENT: Final[dict[UsageErrorCode, bool]] = {
    code: code is not UsageErrorCode.KEY_FETCH_FAILED for code in UsageErrorCode
}


class UsageReportError(Exception):
    """A usage report was refused: ``code``, ``permanent``, ``detail``; nothing was written.

    ``sqlstate`` is the CV code when the database refused it (for example
    ``CV015`` behind a RESERVATION_UNKNOWN for an expired reservation);
    the original exception is chained as ``__cause__``. ``claims`` are the
    report's verified claims when the refusal came after verification
    (RESERVATION_UNKNOWN, OVERSPEND, REPLAY), else ``None``.
    """

    def __init__(
        self,
        code: UsageErrorCode | str,
        detail: str,
        *,
        sqlstate: str | None = None,
        claims: UsageClaims | None = None,
    ) -> None:
        self.code = UsageErrorCode(code)
        self.permanent = PERMANENT[self.code]
        self.detail = detail
        self.sqlstate = sqlstate
        self.claims = claims
        super().__init__(f"{self.code}: {detail}")


def _fail(
    code: UsageErrorCode,
    detail: str,
    *,
    sqlstate: str | None = None,
    claims: UsageClaims | None = None,
) -> NoReturn:
    raise UsageReportError(code, detail, sqlstate=sqlstate, claims=claims)


# -- claims ---------------------------------------------------------------------

_UUID_TEXT: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_DECIMAL_TEXT: Final = re.compile(r"0|[1-9][0-9]*")


def _uuid_text(value: Any) -> uuid.UUID:
    if not isinstance(value, str) or not _UUID_TEXT.fullmatch(value):
        raise ValueError("must be a UUID string (8-4-4-4-12 hex digits)")
    return uuid.UUID(value)


def _decimal_text(value: Any) -> int:
    # A string, never a JSON number: a number above 2**53 does not survive
    # a JavaScript producer, and a float has no place on a money path.
    if not isinstance(value, str):
        raise ValueError("must be a decimal string, not a JSON number")
    if len(value) > MAX_COST_DIGITS or not _DECIMAL_TEXT.fullmatch(value):
        raise ValueError(
            f"must match ^(0|[1-9][0-9]*)$ (at most {MAX_COST_DIGITS} digits, no sign, "
            "no leading zeros)"
        )
    return int(value)


def _numeric_date(value: Any) -> int:
    # NumericDate as whole seconds; bool is an int in Python, not in JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a whole number of seconds since the epoch")
    if not 0 < value < 253402300800:  # 9999-12-31T23:59:59Z + 1 s
        raise ValueError("is out of range")
    return value


UuidText = Annotated[uuid.UUID, BeforeValidator(_uuid_text)]
CostText = Annotated[int, BeforeValidator(_decimal_text)]
NumericDate = Annotated[int, BeforeValidator(_numeric_date)]


class UsageClaims(BaseModel):
    """The claims of a usage report. Other claims (iss, sub, aud, ...) are ignored."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    jti: UuidText
    reservation_id: UuidText
    actual_cost_micro: CostText
    finalized: bool
    iat: NumericDate
    exp: NumericDate
    nbf: NumericDate | None = None

    @field_validator("finalized", mode="before")
    @classmethod
    def _literally_true(cls, value: Any) -> bool:
        if value is not True:
            raise ValueError("must be the JSON literal true")
        return True

    @property
    def issued_at(self) -> datetime:
        return datetime.fromtimestamp(self.iat, UTC)

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.exp, UTC)


class VerifiedUsageReport(BaseModel):
    """A usage report that was verified and applied: its claims and the finalized reservation."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    jti: uuid.UUID
    reservation_id: uuid.UUID
    actual_cost_micro: MicroUSD
    issued_at: datetime
    expires_at: datetime
    reservation: Reservation

    _coerce = field_validator("actual_cost_micro", mode="before")(MicroUSD)


# -- verification ---------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate claim {key!r}")
        seen[key] = value
    return seen


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _parse_payload(payload: bytes) -> dict[str, Any]:
    try:
        # A claims set is UTF-8 (RFC 7519 7.2): decoded strictly here, because
        # json.loads(bytes) would also take UTF-16, UTF-32 and a BOM. Duplicate
        # names are refused rather than "last one wins"; NaN and Infinity are
        # not JSON. (Floats parse, and every claim refuses them.)
        data = json.loads(
            payload.decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
        )
    except (ValueError, RecursionError) as exc:
        raise UsageReportError(
            UsageErrorCode.CLAIMS_SCHEMA, f"payload is not valid claims JSON: {exc}"
        ) from exc
    if not isinstance(data, dict):
        _fail(UsageErrorCode.CLAIMS_SCHEMA, "payload is not a JSON object")
    return data


def _load_key(source: PublicKeySource) -> Ed25519PublicKey:
    material: object = source
    if callable(source) and not isinstance(source, Ed25519PublicKey):
        try:
            material = source()
        except Exception as exc:
            raise UsageReportError(
                UsageErrorCode.KEY_FETCH_FAILED,
                f"the key fetcher raised {type(exc).__name__}: {exc}",
            ) from exc
    if isinstance(material, Ed25519PublicKey):
        return material
    if isinstance(material, str):
        material = material.encode()
    if isinstance(material, bytes):
        try:
            loaded = serialization.load_pem_public_key(material)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise UsageReportError(
                UsageErrorCode.KEY_FETCH_FAILED, f"the key is not a PEM public key: {exc}"
            ) from exc
        material = loaded
    if isinstance(material, Ed25519PrivateKey):
        _fail(
            UsageErrorCode.KEY_FETCH_FAILED,
            "the verification key is an Ed25519 *private* key; pass its public key",
        )
    if isinstance(material, Ed25519PublicKey):
        return material
    if _is_asymmetric_key(material):
        _fail(
            UsageErrorCode.KEY_FETCH_FAILED,
            f"the verification key is {type(material).__name__}; only Ed25519 public keys verify "
            "usage reports",
        )
    _fail(
        UsageErrorCode.KEY_FETCH_FAILED,
        f"no usable key: got {type(material).__name__}, not an Ed25519 public key or PEM text",
    )


_OTHER_KEY_TYPES: Final[tuple[type, ...]] = (
    rsa.RSAPublicKey,
    rsa.RSAPrivateKey,
    ec.EllipticCurvePublicKey,
    ec.EllipticCurvePrivateKey,
    dsa.DSAPublicKey,
    dsa.DSAPrivateKey,
    ed448.Ed448PublicKey,
    ed448.Ed448PrivateKey,
    x25519.X25519PublicKey,
    x25519.X25519PrivateKey,
    x448.X448PublicKey,
    x448.X448PrivateKey,
)


def _is_asymmetric_key(value: object) -> bool:
    return isinstance(value, _OTHER_KEY_TYPES)


def decode_usage_report(
    token: str,
    public_key: PublicKeySource,
    *,
    clock: Callable[[], datetime] | None = None,
    leeway: timedelta = DEFAULT_LEEWAY,
) -> UsageClaims:
    """Verify a usage report's algorithm, signature and claims; touch no database.

    Raises :class:`UsageReportError` (SIGNATURE_INVALID, ALGORITHM_REJECTED,
    KEY_FETCH_FAILED, CLAIMS_SCHEMA). The cost may still exceed what any
    reservation can hold; :func:`verify_usage_report` decides that.
    """
    if not isinstance(token, str):
        _fail(UsageErrorCode.SIGNATURE_INVALID, f"a token is a str, not {type(token).__name__}")
    if len(token) > MAX_TOKEN_BYTES:
        _fail(UsageErrorCode.SIGNATURE_INVALID, f"the token is over {MAX_TOKEN_BYTES} bytes")
    if not token.isascii():
        _fail(UsageErrorCode.SIGNATURE_INVALID, "the token is not compact JWS (non-ASCII)")
    jws = jwt.PyJWS()
    try:
        header = jws.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise UsageReportError(UsageErrorCode.SIGNATURE_INVALID, f"malformed token: {exc}") from exc
    alg = header.get("alg")
    if alg != ALGORITHM:
        _fail(UsageErrorCode.ALGORITHM_REJECTED, f"alg {alg!r} is refused; only EdDSA is accepted")
    key = _load_key(public_key)
    try:
        decoded = jws.decode_complete(token, key, algorithms=[ALGORITHM])
    except jwt.PyJWTError as exc:
        raise UsageReportError(
            UsageErrorCode.SIGNATURE_INVALID, f"signature verification failed: {exc}"
        ) from exc
    data = _parse_payload(decoded["payload"])
    try:
        claims = UsageClaims.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in exc.errors()
        )
        raise UsageReportError(UsageErrorCode.CLAIMS_SCHEMA, problems) from exc
    _check_times(claims, (clock or _utcnow)(), leeway)
    return claims


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _check_times(claims: UsageClaims, now: datetime, leeway: timedelta) -> None:
    # The leeway moves ``now``, never a claim: a claim may be the last second
    # a datetime holds (9999-12-31T23:59:59Z), and adding to it overflows.
    if claims.exp <= claims.iat:
        _fail(UsageErrorCode.CLAIMS_SCHEMA, "exp must be after iat")
    if claims.expires_at <= now - leeway:
        _fail(UsageErrorCode.CLAIMS_SCHEMA, f"the report expired at {claims.expires_at}")
    if claims.issued_at > now + leeway:
        _fail(UsageErrorCode.CLAIMS_SCHEMA, f"iat {claims.issued_at} is in the future")
    if claims.nbf is not None and datetime.fromtimestamp(claims.nbf, UTC) > now + leeway:
        _fail(UsageErrorCode.CLAIMS_SCHEMA, "the report is not valid yet (nbf)")


# How the database's refusals of a verified report map to report codes.
# CV013 (the reservation is already finalized, released or expired) and
# CV015 (its TTL passed; only the expiry sweep resolves it now) mean there
# is no open reservation to apply the report to: RESERVATION_UNKNOWN, with
# the CV code kept in ``sqlstate``. CV002 means the jti was already used as
# the id of another mutation: the id is spent, so REPLAY.
_DB_REFUSALS: Final[dict[type[errors.CovenantError], UsageErrorCode]] = {
    errors.UsageReplay: UsageErrorCode.REPLAY,
    errors.IdempotencyConflict: UsageErrorCode.REPLAY,
    errors.ReservationUnknown: UsageErrorCode.RESERVATION_UNKNOWN,
    errors.InvalidTransition: UsageErrorCode.RESERVATION_UNKNOWN,
    errors.ReservationExpired: UsageErrorCode.RESERVATION_UNKNOWN,
    errors.BudgetOverspend: UsageErrorCode.OVERSPEND,
}


def _apply(c: psycopg.Connection[Any], claims: UsageClaims, actor_id: str) -> Reservation:
    return apply_usage_report(
        c, claims.jti, claims.reservation_id, claims.actual_cost_micro, actor_id
    )


def _in_caller_transaction(
    c: psycopg.Connection[Any], claims: UsageClaims, actor_id: str
) -> Reservation:
    """Run in the caller's transaction, behind a savepoint so a refusal leaves it usable.

    An autocommit connection outside a transaction gets a transaction of its
    own (committed here); otherwise the commit is the caller's."""
    try:
        if c.autocommit and c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            with c.transaction():
                return _apply(c, claims, actor_id)
        c.execute("SAVEPOINT covenant_usage_report")
        try:
            result = _apply(c, claims, actor_id)
        except BaseException:
            c.execute("ROLLBACK TO SAVEPOINT covenant_usage_report")
            c.execute("RELEASE SAVEPOINT covenant_usage_report")
            raise
        c.execute("RELEASE SAVEPOINT covenant_usage_report")
        return result
    except psycopg.Error as exc:
        translated = errors.translate(exc)
        if translated is exc:
            raise
        raise translated from exc


def verify_usage_report(
    conn: Connector | psycopg.Connection[Any],
    token: str,
    public_key: PublicKeySource,
    *,
    actor_id: str = DEFAULT_ACTOR_ID,
    clock: Callable[[], datetime] | None = None,
    leeway: timedelta = DEFAULT_LEEWAY,
    reservation_id: uuid.UUID | None = None,
) -> VerifiedUsageReport:
    """Verify a signed usage report and finalize its reservation with the actual cost.

    ``conn`` is a :class:`~covenant.db.Connector` (a transaction of its own,
    retried on serialization failure) or a psycopg connection (the caller's
    transaction; covenant neither commits nor retries, and a refusal rolls
    back only to a savepoint). ``actor_id`` is the verifying service
    (``service:<name>``; the mutation policy allows only services).
    ``clock`` returns an aware datetime; ``leeway`` is allowed clock skew.
    ``reservation_id``: the report must be for this reservation (else
    RESERVATION_UNKNOWN, before the database is touched).

    Raises :class:`UsageReportError`; nothing is written when it does.

    Counted in ``covenant_usage_reports_total{outcome}`` (``ok``, the code,
    or ``other`` for an error that is not a report's fault).
    """
    try:
        report = _verify(
            conn,
            token,
            public_key,
            actor_id=actor_id,
            clock=clock,
            leeway=leeway,
            reservation_id=reservation_id,
        )
    except UsageReportError as exc:
        metrics.record_usage_report(exc.code)
        raise
    except Exception:
        metrics.record_usage_report("other")
        raise
    metrics.record_usage_report(None)
    return report


def _verify(
    conn: Connector | psycopg.Connection[Any],
    token: str,
    public_key: PublicKeySource,
    *,
    actor_id: str,
    clock: Callable[[], datetime] | None,
    leeway: timedelta,
    reservation_id: uuid.UUID | None,
) -> VerifiedUsageReport:
    if not is_actor_id(actor_id):
        raise errors.InvalidArgument(f"malformed actor_id {actor_id!r}")
    claims = decode_usage_report(token, public_key, clock=clock, leeway=leeway)
    if reservation_id is not None and claims.reservation_id != reservation_id:
        _fail(
            UsageErrorCode.RESERVATION_UNKNOWN,
            f"the report is for reservation {claims.reservation_id}, not {reservation_id}",
            claims=claims,
        )
    if claims.actual_cost_micro > BIGINT_MAX:
        # No reservation can hold it (amounts are bigint): refused without a query.
        _fail(
            UsageErrorCode.OVERSPEND,
            f"actual_cost_micro {claims.actual_cost_micro} exceeds any reservation "
            f"(at most {BIGINT_MAX})",
            claims=claims,
        )
    try:
        if isinstance(conn, Connector):
            reservation = conn.run(lambda c: _apply(c, claims, actor_id))
        else:
            reservation = _in_caller_transaction(conn, claims, actor_id)
    except errors.CovenantError as exc:
        code = _DB_REFUSALS.get(type(exc))
        if code is None:
            raise
        raise UsageReportError(
            code, exc.message or str(exc), sqlstate=exc.code, claims=claims
        ) from exc
    return VerifiedUsageReport(
        jti=claims.jti,
        reservation_id=claims.reservation_id,
        actual_cost_micro=MicroUSD(claims.actual_cost_micro),
        issued_at=claims.issued_at,
        expires_at=claims.expires_at,
        reservation=reservation,
    )


# -- producing ------------------------------------------------------------------


def sign_usage_report(
    private_key: Ed25519PrivateKey,
    *,
    reservation_id: uuid.UUID,
    actual_cost_micro: int,
    jti: uuid.UUID | None = None,
    ttl: timedelta = DEFAULT_TTL,
    now: datetime | None = None,
) -> str:
    """A usage report as a producer signs it: EdDSA, the cost as a decimal string.

    ``actual_cost_micro`` is any non-negative int (not bounded here: the
    verifier decides what a reservation can hold); ``jti`` defaults to a
    random UUID; ``iat`` is ``now`` and ``exp`` is ``now + ttl``.
    """
    if not isinstance(private_key, Ed25519PrivateKey):
        raise TypeError("usage reports are signed with an Ed25519 private key")
    if isinstance(actual_cost_micro, bool) or not isinstance(actual_cost_micro, int):
        raise TypeError("actual_cost_micro must be an int (micro-USD), never float")
    if actual_cost_micro < 0:
        raise ValueError(f"actual_cost_micro cannot be negative: {actual_cost_micro}")
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    issued = now or _utcnow()
    iat = int(issued.timestamp())
    claims = {
        "jti": str(jti or uuid.uuid4()),
        "reservation_id": str(reservation_id),
        "actual_cost_micro": str(int(actual_cost_micro)),
        "finalized": True,
        "iat": iat,
        "exp": iat + max(1, int(ttl.total_seconds())),
    }
    return jwt.encode(claims, private_key, algorithm=ALGORITHM, headers={"typ": "JWT"})
