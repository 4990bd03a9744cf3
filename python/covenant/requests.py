"""The request lifecycle: a governed request from arrival to settlement.

::

    received ──> validated ──> reserved ──> executing ──> finalized
        │            │             │             │
        └────────────┴─────────────┴─────────────┴──────> failed

The states and edges are the ``request`` machine of
:data:`covenant.catalogue.MACHINES` (the database's
``covenant.state_transitions``); every move is checked with
:func:`~covenant.catalogue.check_transition`, and an illegal one raises
:class:`~covenant.catalogue.InvalidTransitionError` before anything happens.

- received → validated: the request is well formed (capability and schema
  names, amount).
- validated → reserved: the agent's reputation state is resolved (through
  ``state_of``, fail-closed to ``cold``), the contract's surface for it must
  grant the capability and the schema and allow the estimate; only then are
  credits reserved (:meth:`covenant.ledger.Ledger.reserve`). A surface that
  does not grant the request sends it to failed with nothing reserved.
- reserved → executing → finalized: the work runs; the reservation is
  finalized with the actual cost, either as the gateway measured it
  (:meth:`RequestFlow.finalize`) or as the worker reported it in a signed
  usage report (:meth:`RequestFlow.finalize_from_report`, through
  :func:`covenant.usage.verify_usage_report`). A refused report changes
  nothing, the request included: it stays executing, so a corrected report
  can still settle it, and if none comes the reservation's TTL and the expiry
  sweep return the credits.
- any failure → failed; a reservation still held is released (if even that
  fails, the reservation's TTL and the expiry sweep return the credits).

The ledger mutations of a request have ids derived from its ``request_id``
(``uuid5(request_id, step)``), so the audit record ties them to the request.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import ClassVar, Final

from covenant.catalogue import ReputationState, RequestState, check_transition
from covenant.contracts import (
    CAPABILITY_PATTERN,
    SCHEMA_PATTERN,
    DynamicContract,
    Surface,
    as_state,
    is_capability_granted,
    is_schema_granted,
    resolve_surface,
)
from covenant.errors import CovenantError, InvalidArgument
from covenant.governance import is_actor_id
from covenant.ledger import Ledger, Reservation
from covenant.money import MicroUSD
from covenant.usage import (
    PublicKeySource,
    UsageErrorCode,
    UsageReportError,
    verify_usage_report,
)

log = logging.getLogger("covenant.requests")

MACHINE: Final = "request"
DEFAULT_RESERVATION_TTL: Final = timedelta(minutes=15)
_CAPABILITY: Final = re.compile(CAPABILITY_PATTERN)
_SCHEMA: Final = re.compile(SCHEMA_PATTERN)

StateOf = Callable[[uuid.UUID], ReputationState | str | None]
"""How the flow learns an agent's reputation state (e.g. ``covenant.reputation``)."""


class SurfaceDenied(CovenantError):
    """The agent's surface does not allow the request; nothing was reserved."""

    name, http_status = "SURFACE_DENIED", 403

    def __init__(self, message: str, *, state: ReputationState) -> None:
        super().__init__(message)
        self.state = state


class CapabilityDenied(SurfaceDenied):
    name = "CAPABILITY_DENIED"


class SchemaDenied(SurfaceDenied):
    name = "SCHEMA_DENIED"


class ReservationLimitExceeded(SurfaceDenied):
    name = "RESERVATION_LIMIT_EXCEEDED"


@dataclass(frozen=True)
class RequestIntent:
    """What an agent asks for: a capability, optionally a schema, and an estimate to reserve."""

    agent_id: uuid.UUID
    account_id: uuid.UUID
    capability: str
    estimate_micro: MicroUSD | int
    schema: str | None = None
    request_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def __post_init__(self) -> None:
        # Exact money or nothing: a float, bool or negative amount is refused here.
        object.__setattr__(self, "estimate_micro", MicroUSD(self.estimate_micro))


@dataclass
class GovernedRequest:
    """One request and where it is in its lifecycle."""

    intent: RequestIntent
    state: RequestState = RequestState.RECEIVED
    history: list[RequestState] = field(default_factory=lambda: [RequestState.RECEIVED])
    reputation: ReputationState | None = None
    surface: Surface | None = None
    reservation_id: uuid.UUID | None = None
    settled: Reservation | None = None
    failure: str | None = None

    terminal: ClassVar[frozenset[RequestState]] = frozenset(
        {RequestState.FINALIZED, RequestState.FAILED}
    )

    def check(self, to: RequestState) -> None:
        """Raise :class:`InvalidTransitionError` unless ``state → to`` is an edge."""
        check_transition(MACHINE, self.state.value, to.value)

    def move(self, to: RequestState) -> None:
        self.check(to)
        self.state = to
        self.history.append(to)

    def mutation_id(self, step: str) -> uuid.UUID:
        return uuid.uuid5(self.intent.request_id, step)


class RequestFlow:
    """Drives requests through the lifecycle against a contract and a ledger.

    ``actor_id`` is the service performing the ledger mutations (for example
    ``service:gateway``); ``state_of`` answers an agent's reputation state.
    """

    def __init__(
        self,
        contract: DynamicContract,
        state_of: StateOf,
        ledger: Ledger,
        *,
        actor_id: str,
        reservation_ttl: timedelta = DEFAULT_RESERVATION_TTL,
    ) -> None:
        if not is_actor_id(actor_id):
            raise InvalidArgument(f"malformed actor_id {actor_id!r}")
        self.contract = contract
        self.state_of = state_of
        self.ledger = ledger
        self.actor_id = actor_id
        self.reservation_ttl = reservation_ttl

    def receive(self, intent: RequestIntent) -> GovernedRequest:
        return GovernedRequest(intent=intent)

    def reputation_of(self, agent_id: uuid.UUID) -> ReputationState:
        """``state_of``'s answer, fail-closed: an error or an unknown answer is ``cold``."""
        try:
            answer = self.state_of(agent_id)
        except Exception as exc:
            log.warning(
                "reputation unavailable (%s): resolved as cold",
                type(exc).__name__,
                extra={"agent_id": str(agent_id)},
            )
            return ReputationState.COLD
        return as_state(answer)

    def admit(self, request: GovernedRequest) -> GovernedRequest:
        """received → validated → reserved, or failed (raising why).

        Raises :class:`InvalidArgument` for a malformed request,
        :class:`SurfaceDenied` (one of its subclasses) when the surface does
        not allow it — both before anything is reserved — and the ledger's
        error when the reservation is refused.
        """
        request.check(RequestState.VALIDATED)
        intent = request.intent
        problem = _malformed(intent)
        if problem is not None:
            self._fail(request, problem)
            raise InvalidArgument(problem)
        request.move(RequestState.VALIDATED)

        state = self.reputation_of(intent.agent_id)
        surface = resolve_surface(self.contract, state)
        request.reputation, request.surface = state, surface
        denial = _denial(surface, intent, state)
        if denial is not None:
            self._fail(request, str(denial))
            raise denial

        request.check(RequestState.RESERVED)
        try:
            request.reservation_id = self.ledger.reserve(
                intent.account_id,
                intent.estimate_micro,
                self.reservation_ttl,
                actor_id=self.actor_id,
                mutation_id=request.mutation_id("reserve"),
            )
        except Exception as exc:
            self._fail(request, f"reservation refused: {exc}")
            raise
        request.move(RequestState.RESERVED)
        return request

    def start(self, request: GovernedRequest) -> GovernedRequest:
        request.move(RequestState.EXECUTING)
        return request

    def finalize(self, request: GovernedRequest, actual: MicroUSD | int) -> GovernedRequest:
        """executing → finalized: consume ``actual`` (≤ the estimate), return the rest."""
        request.check(RequestState.FINALIZED)
        assert request.reservation_id is not None  # executing implies reserved
        try:
            request.settled = self.ledger.finalize(
                request.reservation_id,
                actual,
                actor_id=self.actor_id,
                mutation_id=request.mutation_id("finalize"),
            )
        except Exception as exc:
            self._fail(request, f"finalization refused: {exc}")
            raise
        request.move(RequestState.FINALIZED)
        return request

    def finalize_from_report(
        self, request: GovernedRequest, token: str, public_key: PublicKeySource
    ) -> GovernedRequest:
        """executing → finalized from the worker's signed usage report.

        The report must be for this request's reservation (else
        RESERVATION_UNKNOWN, checked before the database is touched). Raises
        :class:`~covenant.usage.UsageReportError` and leaves the request
        executing when the report is refused.

        Sending the same report again after a commit whose acknowledgement
        was lost is safe: a REPLAY of this report's ``jti`` that was redeemed
        on this request's reservation with this cost settles the request.
        """
        request.check(RequestState.FINALIZED)
        assert request.reservation_id is not None  # executing implies reserved
        try:
            report = verify_usage_report(
                self.ledger.db,
                token,
                public_key,
                actor_id=self.actor_id,
                reservation_id=request.reservation_id,
            )
        except UsageReportError as exc:
            claims = exc.claims
            if (
                exc.code is not UsageErrorCode.REPLAY
                or claims is None
                or not self._redeemed_for(
                    request.reservation_id, claims.jti, claims.actual_cost_micro
                )
            ):
                raise
            log.info(
                "request %s: its usage report was already redeemed (a retry): finalized",
                request.intent.request_id,
                extra={"request_id": str(request.intent.request_id)},
            )
            request.settled = self.ledger.reservation(request.reservation_id)
        else:
            request.settled = report.reservation
        request.move(RequestState.FINALIZED)
        return request

    def _redeemed_for(self, reservation_id: uuid.UUID, jti: uuid.UUID, actual: int) -> bool:
        row = self.ledger.db.fetch_one(
            "SELECT reservation_id, actual_micro FROM covenant.usage_tokens WHERE jti = %s",
            [jti],
        )
        return row is not None and (row["reservation_id"], row["actual_micro"]) == (
            reservation_id,
            actual,
        )

    def fail(self, request: GovernedRequest, reason: str) -> GovernedRequest:
        """→ failed, releasing the reservation if one is held."""
        self._fail(request, reason)
        return request

    def run(
        self, intent: RequestIntent, work: Callable[[GovernedRequest], MicroUSD | int]
    ) -> GovernedRequest:
        """The whole lifecycle: admit, run ``work`` (it returns the actual cost), finalize.

        Any exception fails the request (releasing its reservation) and is re-raised.
        """
        request = self.admit(self.receive(intent))
        self.start(request)
        try:
            actual = work(request)
        except Exception as exc:
            if request.state not in GovernedRequest.terminal:  # unless work failed it itself
                self._fail(request, f"execution failed: {type(exc).__name__}: {exc}")
            raise
        return self.finalize(request, actual)

    def _fail(self, request: GovernedRequest, reason: str) -> None:
        request.check(RequestState.FAILED)
        if request.reservation_id is not None and request.settled is None:
            try:
                request.settled = self.ledger.release(
                    request.reservation_id,
                    actor_id=self.actor_id,
                    mutation_id=request.mutation_id("release"),
                )
            except Exception as exc:
                # The TTL and the expiry sweep return the credits in the end.
                reason = f"{reason}; release failed: {type(exc).__name__}"
                log.warning(
                    "request %s: reservation not released (%s); it expires after its TTL",
                    request.intent.request_id,
                    type(exc).__name__,
                    extra={"request_id": str(request.intent.request_id)},
                )
        request.failure = reason
        request.move(RequestState.FAILED)


def _malformed(intent: RequestIntent) -> str | None:
    if not isinstance(intent.capability, str) or not _CAPABILITY.fullmatch(intent.capability):
        return "malformed capability name"
    if intent.schema is not None and (
        not isinstance(intent.schema, str) or not _SCHEMA.fullmatch(intent.schema)
    ):
        return "malformed schema name"
    return None


def _denial(
    surface: Surface, intent: RequestIntent, state: ReputationState
) -> SurfaceDenied | None:
    if not is_capability_granted(surface, intent.capability):
        return CapabilityDenied(
            f"capability {intent.capability} is not granted to reputation state {state.value}",
            state=state,
        )
    if intent.schema is not None and not is_schema_granted(surface, intent.schema):
        return SchemaDenied(
            f"schema {intent.schema} is not granted to reputation state {state.value}",
            state=state,
        )
    if intent.estimate_micro > surface.limits.max_reservation_micro:
        return ReservationLimitExceeded(
            f"estimate {intent.estimate_micro} exceeds the {state.value} limit of "
            f"{surface.limits.max_reservation_micro} micro-USD per reservation",
            state=state,
        )
    return None
