"""covenant's error model: one exception per SQLSTATE, mapped in one place.

Domain errors are raised in SQL with custom SQLSTATEs of class ``CV``
(``RAISE ... USING ERRCODE = 'CV001'``, through ``covenant._raise``). The
table below mirrors ``covenant.error_codes`` and ``docs/errors.md``; a test
proves the three equal. :func:`translate` is the only place that turns a
psycopg error into a covenant exception, by ``sqlstate`` or by constraint
name, never by message text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import psycopg


@dataclass(frozen=True)
class ErrorCode:
    code: str
    name: str
    meaning: str
    retryable: bool
    http_status: int


class CovenantError(Exception):
    """Base of every error covenant raises on purpose."""

    code: ClassVar[str] = ""
    name: ClassVar[str] = ""
    retryable: ClassVar[bool] = False
    http_status: ClassVar[int] = 500

    def __init__(
        self,
        message: str = "",
        *,
        sqlstate: str | None = None,
        constraint: str | None = None,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message or self.name or type(self).__name__)
        self.message = message
        self.sqlstate = sqlstate
        self.constraint = constraint
        self.detail = detail
        self.hint = hint


class AuditQuarantine(CovenantError):
    code, name, http_status = "CV001", "AUDIT_QUARANTINE", 503


class IdempotencyConflict(CovenantError):
    code, name, http_status = "CV002", "IDEMPOTENCY_CONFLICT", 409


class EventTimeSkew(CovenantError):
    code, name, http_status = "CV003", "EVENT_TIME_SKEW", 422


class InvalidArgument(CovenantError):
    code, name, http_status = "CV004", "INVALID_ARGUMENT", 400


class NotAuthorized(CovenantError):
    code, name, http_status = "CV005", "NOT_AUTHORIZED", 403


class InsufficientBalance(CovenantError):
    code, name, http_status = "CV010", "INSUFFICIENT_BALANCE", 402


class BudgetOverspend(CovenantError):
    code, name, http_status = "CV011", "BUDGET_OVERSPEND", 409


class ReceivableBoundExceeded(CovenantError):
    code, name, http_status = "CV012", "RECEIVABLE_BOUND_EXCEEDED", 409


class InvalidTransition(CovenantError):
    code, name, http_status = "CV013", "INVALID_TRANSITION", 409


class ReservationUnknown(CovenantError):
    code, name, http_status = "CV014", "RESERVATION_UNKNOWN", 404


class ReservationExpired(CovenantError):
    code, name, http_status = "CV015", "RESERVATION_EXPIRED", 410


class BpsSumInvalid(CovenantError):
    code, name, http_status = "CV016", "BPS_SUM_INVALID", 422


class AccountUnknown(CovenantError):
    code, name, http_status = "CV017", "ACCOUNT_UNKNOWN", 404


class IsolationLevelUnsupported(CovenantError):
    code, name, http_status = "CV018", "ISOLATION_LEVEL_UNSUPPORTED", 400


class AuditAppendOnly(CovenantError):
    code, name, http_status = "CV019", "AUDIT_APPEND_ONLY", 403


class UsageReplay(CovenantError):
    code, name, http_status = "CV020", "USAGE_REPLAY", 409


class AccountExists(CovenantError):
    code, name, http_status = "CV021", "ACCOUNT_EXISTS", 409


class JournalAppendOnly(CovenantError):
    code, name, http_status = "CV022", "JOURNAL_APPEND_ONLY", 403


# Transient conditions of PostgreSQL itself (not CV codes): the adapter
# retries these with backoff; callers see them only when retries run out.
class SerializationFailure(CovenantError):
    name, retryable, http_status = "SERIALIZATION_FAILURE", True, 503


class DeadlockDetected(CovenantError):
    name, retryable, http_status = "DEADLOCK_DETECTED", True, 503


DOMAIN_ERRORS: tuple[type[CovenantError], ...] = (
    AuditQuarantine,
    IdempotencyConflict,
    EventTimeSkew,
    InvalidArgument,
    NotAuthorized,
    InsufficientBalance,
    BudgetOverspend,
    ReceivableBoundExceeded,
    InvalidTransition,
    ReservationUnknown,
    ReservationExpired,
    BpsSumInvalid,
    AccountUnknown,
    IsolationLevelUnsupported,
    AuditAppendOnly,
    UsageReplay,
    AccountExists,
    JournalAppendOnly,
)

BY_SQLSTATE: dict[str, type[CovenantError]] = {cls.code: cls for cls in DOMAIN_ERRORS}
BY_SQLSTATE["40001"] = SerializationFailure
BY_SQLSTATE["40P01"] = DeadlockDetected

BY_NAME: dict[str, type[CovenantError]] = {cls.name: cls for cls in DOMAIN_ERRORS}

# Named constraints whose violation is a domain error. Constraint names are
# part of the API (clients see them); later sections register theirs here.
BY_CONSTRAINT: dict[str, type[CovenantError]] = {
    "event_time_skew": EventTimeSkew,
}

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def translate(exc: BaseException) -> BaseException:
    """Return the covenant exception for a database error, else ``exc`` itself.

    The result carries the original as ``__cause__``; raise it with
    ``raise translate(e) from e``.
    """
    if not isinstance(exc, psycopg.Error):
        return exc
    diag = exc.diag
    sqlstate = exc.sqlstate or diag.sqlstate
    constraint = diag.constraint_name
    cls: type[CovenantError] | None = None
    if sqlstate is not None:
        cls = BY_SQLSTATE.get(sqlstate)
    if cls is None and constraint is not None:
        cls = BY_CONSTRAINT.get(constraint)
    if cls is None:
        return exc
    err = cls(
        diag.message_primary or str(exc),
        sqlstate=sqlstate,
        constraint=constraint,
        detail=diag.message_detail or None,
        hint=diag.message_hint or None,
    )
    err.__cause__ = exc
    return err


def catalogue() -> list[ErrorCode]:
    """The CV codes as data (for docs and the database comparison test)."""
    return [
        ErrorCode(cls.code, cls.name, _MEANINGS[cls.name], cls.retryable, cls.http_status)
        for cls in DOMAIN_ERRORS
    ]


_MEANINGS: dict[str, str] = {
    "USAGE_REPLAY": "This usage report (jti) was already redeemed; a report finalizes at most "
    "once.",
    "ACCOUNT_EXISTS": "An account with this id already exists (created by another mutation).",
    "JOURNAL_APPEND_ONLY": "The ledger journal, the mutation record and the usage tokens are "
    "append-only: UPDATE, DELETE and TRUNCATE are refused.",
    "AUDIT_QUARANTINE": "The audit domain is quarantined; appends and governed mutations of it "
    "are refused.",
    "IDEMPOTENCY_CONFLICT": "The idempotency key (entry_id or mutation_id) was already used for a "
    "different request.",
    "EVENT_TIME_SKEW": "event_time is more than 5 minutes away from the server clock.",
    "INVALID_ARGUMENT": "An argument is malformed: tag, actor, type, amount, interval or payload.",
    "NOT_AUTHORIZED": "The actor is not allowed to perform this mutation by the mutation policy "
    "table.",
    "INSUFFICIENT_BALANCE": "The account's unexpired available balance is smaller than the amount "
    "requested.",
    "BUDGET_OVERSPEND": "The actual amount to finalize exceeds the amount reserved.",
    "RECEIVABLE_BOUND_EXCEEDED": "The movement would take a receivable beyond its bound.",
    "INVALID_TRANSITION": "The state machine does not allow this transition (for example, "
    "resolving a reservation twice).",
    "RESERVATION_UNKNOWN": "No reservation has this id.",
    "RESERVATION_EXPIRED": "The reservation's TTL has passed; it can only be expired.",
    "BPS_SUM_INVALID": "Revenue shares in basis points do not sum to exactly 10000.",
    "ACCOUNT_UNKNOWN": "No account has this id.",
    "ISOLATION_LEVEL_UNSUPPORTED": "covenant's appends and governed mutations run in READ "
    "COMMITTED; the calling transaction is REPEATABLE READ or SERIALIZABLE.",
    "AUDIT_APPEND_ONLY": "The audit record is append-only: UPDATE, DELETE and TRUNCATE are "
    "refused.",
}
