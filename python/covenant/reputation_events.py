"""The reputation event router: four typed events, routed exhaustively.

A reputation event is one of four variants, told apart by ``event_type``
(a pydantic discriminated union, :data:`ReputationEvent`):
``quality_signal``, ``task_completed``, ``credential_update`` and
``model_performance`` (docs/reputation-events.md). :func:`parse_event`
validates untrusted input; :class:`ReputationEventRouter` turns an event into
one call of ``covenant.record_reputation_event`` through
:meth:`covenant.ledger.Ledger.record_reputation_event`, so the score, the
mutation record and the audit entry are written in one transaction. An audit
failure (AUDIT_QUARANTINE, CV001) therefore fails the event: the exception
propagates and the reputation is unchanged.

The routing ``match`` ends in :func:`typing.assert_never`: a fifth variant
added to the union without its ``case`` fails ``mypy --strict``.

The ``event_id`` is the mutation id, so routing the same event twice returns
the first outcome and changes nothing (the same id with different content is
IDEMPOTENCY_CONFLICT). Only non-personal, pattern-bound fields reach the
database payload and the logs: identifiers (model, provider, pool, credential,
evaluator) match :data:`IDENTIFIER_PATTERN` — no spaces, no ``@`` — so they
cannot carry free text or an e-mail address, and the actor is logged by kind
(``person`` or ``service``), never by id.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Final, Literal, TypeAlias, assert_never

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from covenant.catalogue import ReputationEventType
from covenant.db import Conn
from covenant.errors import CovenantError, InvalidArgument
from covenant.governance import is_actor_id
from covenant.ledger import Ledger, ReputationOutcome
from covenant.money import BPS_WHOLE, BasisPoints

log = logging.getLogger("covenant.reputation_events")

# The SQL rule of covenant.record_reputation_event (and of
# agent_task_reputation_task_type_format), so a bad task type fails here.
TASK_TYPE_PATTERN: Final = r"^[a-z0-9][a-z0-9_.:-]{0,63}$"
# The task type that feeds only the aggregate score, never a per-task score.
UNSPECIFIED_TASK_TYPE: Final = "unspecified"
DIMENSION_NAME_PATTERN: Final = r"^[a-z][a-z0-9_]{0,31}$"
MAX_DIMENSIONS: Final = 32
# An opaque identifier: no whitespace and no '@', so never free text or an
# e-mail address. Model ids such as "meta-llama/Llama-3-70b" fit.
IDENTIFIER_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:/+-]{0,127}$"
# The largest integer a JSON number carries exactly (2**53 - 1).
JSON_SAFE_INT: Final = 2**53 - 1

TaskType: TypeAlias = Annotated[str, StringConstraints(pattern=TASK_TYPE_PATTERN)]
Identifier: TypeAlias = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]
DimensionName: TypeAlias = Annotated[str, StringConstraints(pattern=DIMENSION_NAME_PATTERN)]
# A unit-interval value: a JSON number (an int or a float, never a bool or a
# string), finite, 0 ≤ x ≤ 1.
UnitScore: TypeAlias = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
Milliseconds: TypeAlias = Annotated[int, Field(strict=True, ge=0, le=JSON_SAFE_INT)]


def score_to_bps(score: float) -> BasisPoints:
    """A score in [0, 1] as basis points, deterministically.

    The score is read as the decimal its shortest ``repr`` spells (the
    number the producer wrote, not its binary approximation), multiplied by
    10000 and rounded half away from zero (half up, the score being
    non-negative) — the rounding of PostgreSQL's ``round(numeric)``. So
    ``0.00015`` is 2 bps and ``0.12345`` is 1235 bps, while the float product
    ``0.00015 * 10000`` is 1.4999999999999998 and would round to 1.
    """
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise TypeError(f"a score is a number, not {type(score).__name__}")
    exact = Decimal(repr(float(score)))
    if not exact.is_finite() or not 0 <= exact <= 1:
        raise ValueError("a score is a finite number in [0, 1]")
    return BasisPoints(int((exact * BPS_WHOLE).to_integral_value(rounding=ROUND_HALF_UP)))


class _Frozen(BaseModel):
    # extra="forbid": an unknown field is refused, so nothing unvalidated
    # rides along with an event.
    model_config = ConfigDict(frozen=True, extra="forbid")


class QualityObservation(_Frozen):
    """A measured quality: an overall score and optional named dimensions, all in [0, 1]."""

    score: UnitScore
    dimensions: Annotated[dict[DimensionName, UnitScore], Field(max_length=MAX_DIMENSIONS)] = Field(
        default_factory=dict
    )
    latency_ms: Milliseconds | None = None
    # The evaluator (a service or an evaluation model), not a person.
    evaluated_by: Identifier | None = None

    @property
    def score_bps(self) -> BasisPoints:
        return score_to_bps(self.score)

    def payload(self) -> dict[str, Any]:
        """The observation as the database records it: basis points, never floats."""
        body: dict[str, Any] = {"score_bps": int(self.score_bps)}
        if self.dimensions:
            body["dimensions_bps"] = {
                name: int(score_to_bps(v)) for name, v in sorted(self.dimensions.items())
            }
        if self.latency_ms is not None:
            body["latency_ms"] = self.latency_ms
        if self.evaluated_by is not None:
            body["evaluated_by"] = self.evaluated_by
        return body


class _EventBase(_Frozen):
    event_id: uuid.UUID  # the mutation id: routing the same event twice is a replay
    agent_id: uuid.UUID
    occurred_at: AwareDatetime
    actor_id: str

    @field_validator("actor_id")
    @classmethod
    def _actor(cls, value: str) -> str:
        if not is_actor_id(value):
            # the value is not echoed: it may be a person's identity
            raise ValueError("actor_id must be a person's UUID or service:<name>")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _utc_representable(cls, value: datetime) -> datetime:
        # 0001-01-01T00:00+01:00 is valid ISO 8601 but has no UTC form: the
        # payload (below) would raise OverflowError, a bare internal error.
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("occurred_at is out of range in UTC") from None
        return value

    @property
    def actor_kind(self) -> Literal["person", "service"]:
        return "service" if self.actor_id.startswith("service:") else "person"

    def _common_payload(self) -> dict[str, Any]:
        # UTC, so the same event always yields the same payload (a replay must
        # match the recorded request exactly).
        return {
            "event_id": str(self.event_id),
            "occurred_at": self.occurred_at.astimezone(UTC).isoformat(),
        }


class QualitySignalEvent(_EventBase):
    """A quality observation of an agent's output."""

    event_type: Literal["quality_signal"]
    quality_observation: QualityObservation
    task_type: TaskType = UNSPECIFIED_TASK_TYPE


class TaskCompletedEvent(_EventBase):
    """A task finished; its outcome (and optionally its measured quality)."""

    event_type: Literal["task_completed"]
    task_type: TaskType
    outcome: Literal["succeeded", "failed"]
    quality_observation: QualityObservation | None = None
    duration_ms: Milliseconds | None = None

    @property
    def observation_bps(self) -> BasisPoints:
        """The measured quality when given, else 10000 for success and 0 for failure."""
        if self.quality_observation is not None:
            return self.quality_observation.score_bps
        return BasisPoints(BPS_WHOLE if self.outcome == "succeeded" else 0)


class CredentialUpdateEvent(_EventBase):
    """An agent's credential changed: recorded on the chain, the score does not move."""

    event_type: Literal["credential_update"]
    credential_id: Identifier  # an opaque id, never the credential itself
    action: Literal["issued", "renewed", "revoked", "expired"]


class ModelPerformanceEvent(_EventBase):
    """How a model served an agent's task, as a quality observation."""

    event_type: Literal["model_performance"]
    model_id: Identifier
    provider: Identifier
    pool_id: Identifier
    task_type: TaskType
    quality_observation: QualityObservation


ReputationEvent: TypeAlias = Annotated[
    QualitySignalEvent | TaskCompletedEvent | CredentialUpdateEvent | ModelPerformanceEvent,
    Field(discriminator="event_type"),
]

REPUTATION_EVENT: Final[TypeAdapter[ReputationEvent]] = TypeAdapter(ReputationEvent)

# Location parts shown as they are: field names and valid dimension names
# (both match the dimension-name rule) and pydantic's "[key]"; any other dict
# key is input that failed validation, maybe personal, and is masked.
_SAFE_LOC: Final = re.compile(rf"{DIMENSION_NAME_PATTERN[1:-1]}|\[key\]")
_EVENT_TYPES: Final = ", ".join(t.value for t in ReputationEventType)


class InvalidReputationEvent(InvalidArgument):
    """An event failed validation (INVALID_ARGUMENT, CV004).

    ``errors`` lists ``{"loc", "type", "msg"}`` per failure; neither they nor
    the message echo the input, which may hold personal data.
    """

    def __init__(self, errors: list[dict[str, str]]) -> None:
        summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
        super().__init__(f"invalid reputation event: {summary}")
        self.errors = errors


def _loc(parts: tuple[int | str, ...]) -> str:
    shown = [
        str(p) if isinstance(p, int) or _SAFE_LOC.fullmatch(p) else "<invalid key>" for p in parts
    ]
    return ".".join(shown) or "<event>"


def _describe(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc, msg = _loc(tuple(err["loc"])), err["msg"]
        if err["type"] in {"union_tag_invalid", "union_tag_not_found"}:
            # pydantic's message quotes the tag given; name the choices instead
            loc, msg = "event_type", f"event_type must be one of {_EVENT_TYPES}"
        out.append({"loc": loc, "type": err["type"], "msg": msg})
    return out


def parse_event(data: Mapping[str, Any] | str | bytes) -> ReputationEvent:
    """Validate a JSON document (``str``/``bytes``) or a mapping into its variant.

    Raises :class:`InvalidReputationEvent` naming every failing field.
    """
    try:
        if isinstance(data, str | bytes):
            return REPUTATION_EVENT.validate_json(data)
        return REPUTATION_EVENT.validate_python(data)
    except ValidationError as exc:
        # Not chained: a ValidationError's text quotes the input, and a logged
        # traceback would print it.
        raise InvalidReputationEvent(_describe(exc)) from None


@dataclass(frozen=True)
class LedgerCall:
    """The arguments of ``covenant.record_reputation_event`` for one event."""

    event_type: ReputationEventType
    observation_bps: BasisPoints | None
    task_type: str | None
    payload: dict[str, Any]


def ledger_call(event: ReputationEvent) -> LedgerCall:
    """Map an event to its SQL event type, observation and non-personal payload.

    The ``match`` is exhaustive: a new variant without a ``case`` fails type
    checking at :func:`assert_never`.
    """
    base = event._common_payload()
    match event:
        case QualitySignalEvent():
            return LedgerCall(
                ReputationEventType.QUALITY_SIGNAL,
                event.quality_observation.score_bps,
                event.task_type,
                base | {"quality_observation": event.quality_observation.payload()},
            )
        case TaskCompletedEvent():
            body = base | {"outcome": event.outcome}
            if event.quality_observation is not None:
                body["quality_observation"] = event.quality_observation.payload()
            if event.duration_ms is not None:
                body["duration_ms"] = event.duration_ms
            return LedgerCall(
                ReputationEventType.TASK_COMPLETED, event.observation_bps, event.task_type, body
            )
        case CredentialUpdateEvent():
            return LedgerCall(
                ReputationEventType.CREDENTIAL_UPDATE,
                None,
                None,
                base | {"credential_id": event.credential_id, "action": event.action},
            )
        case ModelPerformanceEvent():
            return LedgerCall(
                ReputationEventType.MODEL_PERFORMANCE,
                event.quality_observation.score_bps,
                event.task_type,
                base
                | {
                    "model_id": event.model_id,
                    "provider": event.provider,
                    "pool_id": event.pool_id,
                    "quality_observation": event.quality_observation.payload(),
                },
            )
        case _:
            assert_never(event)


def _log_fields(event: ReputationEvent, call: LedgerCall) -> dict[str, Any]:
    """What a log line may say about an event: nothing personal, no free text."""
    model = event if isinstance(event, ModelPerformanceEvent) else None
    observation = getattr(event, "quality_observation", None)
    return {
        "event_type": call.event_type.value,
        "event_id": str(event.event_id),
        "actor_kind": event.actor_kind,
        "task_type": call.task_type,
        "model_id": model.model_id if model else None,
        "provider": model.provider if model else None,
        "pool_id": model.pool_id if model else None,
        "score": observation.score if isinstance(observation, QualityObservation) else None,
        "observation_bps": None if call.observation_bps is None else int(call.observation_bps),
    }


class ReputationEventRouter:
    """Routes each event to ``covenant.record_reputation_event``, with its audit entry.

    ``route`` returns the ledger's :class:`~covenant.ledger.ReputationOutcome`;
    pass ``conn=`` to make it part of your own transaction.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def route(self, event: ReputationEvent, *, conn: Conn | None = None) -> ReputationOutcome:
        call = ledger_call(event)
        fields = _log_fields(event, call)
        try:
            outcome = self.ledger.record_reputation_event(
                event.agent_id,
                call.event_type,
                call.observation_bps,
                actor_id=event.actor_id,
                task_type=call.task_type,
                payload=call.payload,
                mutation_id=event.event_id,
                conn=conn,
            )
        except CovenantError as exc:
            log.warning(
                "reputation event refused", extra=fields | {"error": exc.name or type(exc).__name__}
            )
            raise
        except Exception as exc:
            log.error("reputation event failed", extra=fields | {"error": type(exc).__name__})
            raise
        log.info(
            "reputation event routed",
            extra=fields
            | {
                "score_bps": int(outcome.score_bps),
                "state": outcome.state.value,
                "previous_state": outcome.previous_state.value,
            },
        )
        return outcome

    def route_raw(
        self, data: Mapping[str, Any] | str | bytes, *, conn: Conn | None = None
    ) -> ReputationOutcome:
        """:func:`parse_event`, then :meth:`route`."""
        return self.route(parse_event(data), conn=conn)
