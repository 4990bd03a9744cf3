"""The type catalogues and state machines, mirrored from the database.

The database is the one source of truth (tables of migration 0003 and
``covenant.state_transitions``), enforced there by foreign keys, CHECKs,
triggers and the governed functions. These enums and graphs are the Python
mirror; ``python/tests/test_catalogue.py`` reads the catalog and proves them
equal set-wise, so a change on either side alone fails the build.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class AccountKind(StrEnum):
    USER = "user"
    AGENT = "agent"
    PLATFORM = "platform"
    TREASURY = "treasury"


class LotSourceType(StrEnum):
    DEPOSIT = "deposit"
    GRANT = "grant"
    TRANSFER = "transfer"
    REVENUE_SHARE = "revenue_share"


ALLOCATABLE_SOURCES: Final = frozenset({LotSourceType.DEPOSIT, LotSourceType.GRANT})


class EntryType(StrEnum):
    """Journal entry types (``covenant.ledger_entry_types``)."""

    DEPOSIT = "deposit"
    GRANT = "grant"
    RESERVE = "reserve"
    FINALIZE = "finalize"
    RELEASE = "release"
    EXPIRE = "expire"
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"
    REVENUE_OUT = "revenue_out"
    REVENUE_IN = "revenue_in"


class Operation(StrEnum):
    """Governed operations (``covenant.ledger_operations``); also audit event types."""

    CREATE_ACCOUNT = "create_account"
    SET_RECEIVABLE_BOUND = "set_receivable_bound"
    ALLOCATE_CREDITS = "allocate_credits"
    RESERVE_CREDITS = "reserve_credits"
    FINALIZE_RESERVATION = "finalize_reservation"
    RELEASE_RESERVATION = "release_reservation"
    EXPIRE_RESERVATION = "expire_reservation"
    FINALIZE_USAGE_REPORT = "finalize_usage_report"
    TRANSFER_CREDITS = "transfer_credits"
    DISTRIBUTE_REVENUE = "distribute_revenue"
    RECORD_REPUTATION_EVENT = "record_reputation_event"


class ReputationEventType(StrEnum):
    QUALITY_SIGNAL = "quality_signal"
    TASK_COMPLETED = "task_completed"
    CREDENTIAL_UPDATE = "credential_update"
    MODEL_PERFORMANCE = "model_performance"


class ReservationStatus(StrEnum):
    PENDING = "pending"
    FINALIZED = "finalized"
    RELEASED = "released"
    EXPIRED = "expired"


class LotStatus(StrEnum):
    ACTIVE = "active"
    EXHAUSTED = "exhausted"


class ReputationState(StrEnum):
    """Ordered: ``cold < warming < established < authoritative`` (see :data:`REPUTATION_RANK`)."""

    COLD = "cold"
    WARMING = "warming"
    ESTABLISHED = "established"
    AUTHORITATIVE = "authoritative"


REPUTATION_RANK: Final = {
    ReputationState.COLD: 0,
    ReputationState.WARMING: 1,
    ReputationState.ESTABLISHED: 2,
    ReputationState.AUTHORITATIVE: 3,
}


class QuarantineState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class RequestState(StrEnum):
    RECEIVED = "received"
    VALIDATED = "validated"
    RESERVED = "reserved"
    EXECUTING = "executing"
    FINALIZED = "finalized"
    FAILED = "failed"


def _downgrades() -> frozenset[tuple[str, str]]:
    states = sorted(REPUTATION_RANK, key=REPUTATION_RANK.__getitem__)
    return frozenset((states[hi], states[lo]) for hi in range(len(states)) for lo in range(hi))


# machine -> the set of allowed (from, to) transitions, as in
# covenant.state_transitions.
MACHINES: Final[dict[str, frozenset[tuple[str, str]]]] = {
    "reservation": frozenset(
        (ReservationStatus.PENDING.value, s.value)
        for s in (
            ReservationStatus.FINALIZED,
            ReservationStatus.RELEASED,
            ReservationStatus.EXPIRED,
        )
    ),
    "lot": frozenset({(LotStatus.ACTIVE.value, LotStatus.EXHAUSTED.value)}),
    "audit_quarantine": frozenset(
        {
            (QuarantineState.CLOSED.value, QuarantineState.OPEN.value),
            (QuarantineState.OPEN.value, QuarantineState.HALF_OPEN.value),
            (QuarantineState.HALF_OPEN.value, QuarantineState.OPEN.value),
            (QuarantineState.HALF_OPEN.value, QuarantineState.CLOSED.value),
        }
    ),
    "reputation": frozenset(
        {
            ("cold", "warming"),
            ("warming", "established"),
            ("established", "authoritative"),
        }
    )
    | _downgrades(),
    "request": frozenset(
        {
            ("received", "validated"),
            ("validated", "reserved"),
            ("reserved", "executing"),
            ("executing", "finalized"),
        }
    )
    | frozenset((s, "failed") for s in ("received", "validated", "reserved", "executing")),
}

# The states each machine's column may hold (CHECK constraints and catalogue
# tables in the database).
MACHINE_STATES: Final[dict[str, frozenset[str]]] = {
    "reservation": frozenset(s.value for s in ReservationStatus),
    "lot": frozenset(s.value for s in LotStatus),
    "audit_quarantine": frozenset(s.value for s in QuarantineState),
    "reputation": frozenset(s.value for s in ReputationState),
    "request": frozenset(s.value for s in RequestState),
}


class InvalidTransitionError(ValueError):
    """A transition the machine does not allow (the Python side of CV013)."""


def check_transition(machine: str, from_state: str, to_state: str) -> None:
    if (from_state, to_state) not in MACHINES[machine]:
        raise InvalidTransitionError(f"{machine} cannot go from {from_state} to {to_state}")
