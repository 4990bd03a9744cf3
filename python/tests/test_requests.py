"""The request lifecycle against the shipped contract and a real ledger.

A denied request must leave the paying account's footprint unchanged (no
reservation, no journal line, no audit entry); a request that fails after
reserving must end with its reservation released.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from ledger_support import footprint

from covenant import errors
from covenant.catalogue import (
    MACHINES,
    InvalidTransitionError,
    ReputationState,
    RequestState,
)
from covenant.contracts import DynamicContract, shipped_contract
from covenant.db import Connector
from covenant.ledger import Ledger
from covenant.requests import (
    CapabilityDenied,
    GovernedRequest,
    RequestFlow,
    RequestIntent,
    ReservationLimitExceeded,
    SchemaDenied,
    SurfaceDenied,
)
from covenant.usage import (
    UsageErrorCode,
    UsageReportError,
    sign_usage_report,
    verify_usage_report,
)

SVC = "service:gateway"
FUNDS = 50_000_000  # 50 USD
R = RequestState


@pytest.fixture
def contract() -> DynamicContract:
    return shipped_contract()


@pytest.fixture
def reputations() -> dict[uuid.UUID, ReputationState | str]:
    return {}


@pytest.fixture
def flow(
    contract: DynamicContract, ledger: Ledger, reputations: dict[uuid.UUID, ReputationState | str]
) -> RequestFlow:
    return RequestFlow(contract, reputations.get, ledger, actor_id=SVC)


def funded_account(ledger: Ledger, funds: int = FUNDS) -> uuid.UUID:
    account = ledger.create_account(uuid.uuid4(), "agent", actor_id="service:billing")
    ledger.allocate(account, funds, "deposit", actor_id="service:billing")
    return account


def agent(
    reputations: dict[uuid.UUID, ReputationState | str], state: ReputationState | str | None
) -> uuid.UUID:
    agent_id = uuid.uuid4()
    if state is not None:
        reputations[agent_id] = state
    return agent_id


def intent(
    agent_id: uuid.UUID,
    account: uuid.UUID,
    capability: str,
    estimate: int = 2_000_000,
    schema: str | None = None,
) -> RequestIntent:
    return RequestIntent(agent_id, account, capability, estimate, schema=schema)


# -- the happy path -----------------------------------------------------------


def test_happy_path_reserves_then_finalizes_the_actual_cost(
    flow: RequestFlow,
    ledger: Ledger,
    connector: Connector,
    reputations: dict[uuid.UUID, ReputationState | str],
) -> None:
    account = funded_account(ledger)
    who = agent(reputations, ReputationState.AUTHORITATIVE)
    request = flow.receive(
        intent(who, account, "inference.frontier", 5_000_000, schema="task-request/v1")
    )
    assert request.state is R.RECEIVED

    flow.admit(request)
    assert request.state is R.RESERVED and request.reservation_id is not None
    assert request.reputation is ReputationState.AUTHORITATIVE
    assert request.surface == flow.contract.surfaces.authoritative
    held = ledger.reservation(request.reservation_id)
    assert held.status == "pending" and held.amount_micro == 5_000_000
    assert held.mutation_id == request.mutation_id("reserve")
    assert ledger.balance(account).reserved == 5_000_000

    flow.start(request)
    assert request.state is R.EXECUTING
    flow.finalize(request, 3_200_000)

    assert request.state is R.FINALIZED and request.failure is None
    assert request.history == [R.RECEIVED, R.VALIDATED, R.RESERVED, R.EXECUTING, R.FINALIZED]
    assert request.settled is not None and request.settled.status == "finalized"
    assert request.settled.consumed_micro == 3_200_000
    assert request.settled.released_micro == 1_800_000
    balance = ledger.balance(account)
    assert (balance.available, balance.reserved, balance.consumed) == (
        FUNDS - 3_200_000,
        0,
        3_200_000,
    )
    after = footprint(connector, account)
    assert after["reservations"] == 1
    assert ledger.reconcile().ok


def test_run_drives_the_whole_lifecycle(
    flow: RequestFlow, ledger: Ledger, reputations: dict[uuid.UUID, ReputationState | str]
) -> None:
    account = funded_account(ledger)
    who = agent(reputations, "warming")
    seen: list[RequestState] = []

    def work(request: GovernedRequest) -> int:
        seen.append(request.state)
        return 700_000

    done = flow.run(intent(who, account, "tools.search", 1_000_000), work)
    assert seen == [R.EXECUTING]
    assert done.state is R.FINALIZED
    assert ledger.balance(account).consumed == 700_000


# -- denied by the surface: failed before anything is reserved ----------------

DENIALS: list[tuple[str, ReputationState | str | None, str, int, str | None]] = [
    ("capability", ReputationState.COLD, "inference.frontier", 1_000, None),
    ("capability-unknown-agent", None, "tools.write", 1_000, None),
    ("capability-unknown-state", "root", "tools.write", 1_000, None),
    ("schema", ReputationState.WARMING, "tools.read", 1_000, "revenue-share/v1"),
    ("limit", ReputationState.COLD, "inference.basic", 1_000_001, None),
]
DENIAL_CLASSES: dict[str, type[SurfaceDenied]] = {
    "capability": CapabilityDenied,
    "capability-unknown-agent": CapabilityDenied,
    "capability-unknown-state": CapabilityDenied,
    "schema": SchemaDenied,
    "limit": ReservationLimitExceeded,
}


@pytest.mark.parametrize(
    ("case", "state", "capability", "estimate", "schema"), DENIALS, ids=[d[0] for d in DENIALS]
)
def test_surface_denial_fails_before_reserving(
    flow: RequestFlow,
    ledger: Ledger,
    connector: Connector,
    reputations: dict[uuid.UUID, ReputationState | str],
    case: str,
    state: ReputationState | str | None,
    capability: str,
    estimate: int,
    schema: str | None,
) -> None:
    account = funded_account(ledger)
    before = footprint(connector, account)
    request = flow.receive(intent(agent(reputations, state), account, capability, estimate, schema))
    with pytest.raises(SurfaceDenied) as raised:
        flow.admit(request)
    assert type(raised.value) is DENIAL_CLASSES[case]
    assert raised.value.http_status == 403
    assert request.state is R.FAILED
    assert request.history == [R.RECEIVED, R.VALIDATED, R.FAILED]
    assert request.failure == str(raised.value)
    assert request.reservation_id is None and request.settled is None
    expected = ReputationState.COLD if case.startswith("capability-unknown") else state
    assert request.reputation == expected == raised.value.state
    assert footprint(connector, account) == before


def test_the_same_request_is_granted_one_state_up(
    flow: RequestFlow, ledger: Ledger, reputations: dict[uuid.UUID, ReputationState | str]
) -> None:
    account = funded_account(ledger)
    who = agent(reputations, ReputationState.WARMING)
    denied = flow.receive(intent(who, account, "tools.write", 1_000))
    with pytest.raises(CapabilityDenied):
        flow.admit(denied)
    reputations[who] = ReputationState.ESTABLISHED
    assert flow.admit(flow.receive(intent(who, account, "tools.write", 1_000))).state is R.RESERVED


def test_a_downgrade_applies_to_the_next_request(
    flow: RequestFlow, ledger: Ledger, reputations: dict[uuid.UUID, ReputationState | str]
) -> None:
    account = funded_account(ledger)
    who = agent(reputations, ReputationState.AUTHORITATIVE)
    first = flow.admit(flow.receive(intent(who, account, "agents.spawn", 1_000)))
    reputations[who] = ReputationState.COLD  # pushed downgrade between requests
    second = flow.receive(intent(who, account, "agents.spawn", 1_000))
    with pytest.raises(CapabilityDenied):
        flow.admit(second)
    assert first.state is R.RESERVED and second.state is R.FAILED


def test_reputation_outage_fails_closed_to_cold(
    contract: DynamicContract, ledger: Ledger, connector: Connector
) -> None:
    def down(_agent: uuid.UUID) -> ReputationState:
        raise ConnectionError("reputation service unavailable")

    flow = RequestFlow(contract, down, ledger, actor_id=SVC)
    account = funded_account(ledger)
    granted = flow.admit(flow.receive(intent(uuid.uuid4(), account, "inference.basic", 1_000)))
    assert granted.reputation is ReputationState.COLD and granted.state is R.RESERVED
    before = footprint(connector, account)
    with pytest.raises(CapabilityDenied):
        flow.admit(flow.receive(intent(uuid.uuid4(), account, "inference.standard", 1_000)))
    assert footprint(connector, account) == before


def test_reputation_from_the_database_composes(contract: DynamicContract, ledger: Ledger) -> None:
    # the flow takes any state_of; here the ledger's own read (None: no record → cold)
    flow = RequestFlow(contract, ledger.reputation, ledger, actor_id=SVC)
    account = funded_account(ledger)
    request = flow.admit(flow.receive(intent(uuid.uuid4(), account, "usage.report", 1_000)))
    assert request.reputation is ReputationState.COLD and request.state is R.RESERVED


@pytest.mark.parametrize(
    ("capability", "schema"),
    [("Inference.Basic", None), ("inference", None), ("tools.read", "usage-report")],
)
def test_malformed_request_fails_from_received(
    flow: RequestFlow,
    ledger: Ledger,
    connector: Connector,
    reputations: dict[uuid.UUID, ReputationState | str],
    capability: str,
    schema: str | None,
) -> None:
    account = funded_account(ledger)
    before = footprint(connector, account)
    who = agent(reputations, ReputationState.AUTHORITATIVE)
    request = flow.receive(intent(who, account, capability, 1_000, schema))
    with pytest.raises(errors.InvalidArgument):
        flow.admit(request)
    assert request.history == [R.RECEIVED, R.FAILED] and request.reputation is None
    assert footprint(connector, account) == before


def test_intent_amounts_are_exact_money() -> None:
    for bad in (1.5, True, -1):
        with pytest.raises((TypeError, ValueError)):
            RequestIntent(uuid.uuid4(), uuid.uuid4(), "tools.read", bad)  # type: ignore[arg-type]


def test_reservation_refused_by_the_ledger_fails_with_nothing_reserved(
    flow: RequestFlow,
    ledger: Ledger,
    connector: Connector,
    reputations: dict[uuid.UUID, ReputationState | str],
) -> None:
    account = funded_account(ledger, funds=500_000)
    before = footprint(connector, account)
    who = agent(reputations, ReputationState.COLD)
    request = flow.receive(intent(who, account, "inference.basic", 900_000))
    with pytest.raises(errors.InsufficientBalance):
        flow.admit(request)
    assert request.history == [R.RECEIVED, R.VALIDATED, R.FAILED]
    assert request.failure is not None and request.failure.startswith("reservation refused")
    assert footprint(connector, account) == before


# -- failure after reserving: the reservation is released ---------------------


def _reserved(
    flow: RequestFlow, ledger: Ledger, reputations: dict[uuid.UUID, ReputationState | str]
) -> tuple[GovernedRequest, uuid.UUID]:
    account = funded_account(ledger)
    who = agent(reputations, ReputationState.ESTABLISHED)
    request = flow.admit(flow.receive(intent(who, account, "tools.write", 4_000_000)))
    assert ledger.balance(account).reserved == 4_000_000
    return request, account


def _assert_released(ledger: Ledger, request: GovernedRequest, account: uuid.UUID) -> None:
    assert request.state is R.FAILED and request.failure
    assert request.reservation_id is not None
    held = ledger.reservation(request.reservation_id)
    assert held.status == "released" and held.released_micro == 4_000_000
    assert held.consumed_micro == 0
    assert request.settled == held
    balance = ledger.balance(account)
    assert (balance.available, balance.reserved, balance.consumed) == (FUNDS, 0, 0)


def test_work_failing_after_reserve_releases(
    flow: RequestFlow, ledger: Ledger, reputations: dict[uuid.UUID, ReputationState | str]
) -> None:
    account = funded_account(ledger)
    who = agent(reputations, ReputationState.ESTABLISHED)

    def crash(_request: GovernedRequest) -> int:
        raise RuntimeError("model backend timed out")

    with pytest.raises(RuntimeError, match="timed out"):
        flow.run(intent(who, account, "tools.write", 4_000_000), crash)
    (reservation,) = ledger.db.fetch_all(
        "SELECT reservation_id FROM covenant.credit_reservations WHERE account_id = %s", [account]
    )
    held = ledger.reservation(reservation["reservation_id"])
    assert held.status == "released"
    assert ledger.balance(account).available == FUNDS and ledger.reconcile().ok


@pytest.mark.parametrize("at", [R.RESERVED, R.EXECUTING])
def test_explicit_fail_releases(
    flow: RequestFlow,
    ledger: Ledger,
    reputations: dict[uuid.UUID, ReputationState | str],
    at: RequestState,
) -> None:
    request, account = _reserved(flow, ledger, reputations)
    if at is R.EXECUTING:
        flow.start(request)
    flow.fail(request, "client went away")
    assert request.failure == "client went away"
    assert request.history[-2:] == [at, R.FAILED]
    _assert_released(ledger, request, account)


def test_overspend_at_finalize_fails_and_releases(
    flow: RequestFlow, ledger: Ledger, reputations: dict[uuid.UUID, ReputationState | str]
) -> None:
    request, account = _reserved(flow, ledger, reputations)
    flow.start(request)
    with pytest.raises(errors.BudgetOverspend):
        flow.finalize(request, 4_000_001)
    assert request.history == [R.RECEIVED, R.VALIDATED, R.RESERVED, R.EXECUTING, R.FAILED]
    _assert_released(ledger, request, account)


def test_a_failed_release_still_fails_the_request(
    flow: RequestFlow, ledger: Ledger, reputations: dict[uuid.UUID, ReputationState | str]
) -> None:
    request, _ = _reserved(flow, ledger, reputations)
    assert request.reservation_id is not None
    ledger.release(request.reservation_id, actor_id=SVC)  # resolved behind the flow's back
    flow.fail(request, "cancelled")
    assert request.state is R.FAILED
    assert request.failure == "cancelled; release failed: InvalidTransition"


# -- illegal transitions ------------------------------------------------------

Step = Callable[[RequestFlow, GovernedRequest], object]
STEPS: dict[str, Step] = {
    "admit": lambda f, r: f.admit(r),
    "start": lambda f, r: f.start(r),
    "finalize": lambda f, r: f.finalize(r, 1),
    "fail": lambda f, r: f.fail(r, "x"),
}
# the step each state allows (fail aside); everything else is illegal
LEGAL = {R.RECEIVED: "admit", R.RESERVED: "start", R.EXECUTING: "finalize"}


def _request_in(
    state: RequestState,
    flow: RequestFlow,
    ledger: Ledger,
    reputations: dict[uuid.UUID, ReputationState | str],
) -> tuple[GovernedRequest, uuid.UUID]:
    account = funded_account(ledger)
    who = agent(reputations, ReputationState.WARMING)
    request = flow.receive(intent(who, account, "tools.read", 10_000))
    if state is R.FAILED:
        flow.fail(request, "x")
        return request, account
    if state is not R.RECEIVED:
        flow.admit(request)
    if state in (R.EXECUTING, R.FINALIZED):
        flow.start(request)
    if state is R.FINALIZED:
        flow.finalize(request, 10_000)
    assert request.state is state
    return request, account


ILLEGAL = [
    (state, step)
    for state in (R.RECEIVED, R.RESERVED, R.EXECUTING, R.FINALIZED, R.FAILED)
    for step in STEPS
    if LEGAL.get(state) != step and not (step == "fail" and state in LEGAL)
]


@pytest.mark.parametrize(("state", "step"), ILLEGAL, ids=[f"{s.value}-{t}" for s, t in ILLEGAL])
def test_illegal_transitions_are_refused_and_change_nothing(
    flow: RequestFlow,
    ledger: Ledger,
    connector: Connector,
    reputations: dict[uuid.UUID, ReputationState | str],
    state: RequestState,
    step: str,
) -> None:
    request, account = _request_in(state, flow, ledger, reputations)
    history = list(request.history)
    before = footprint(connector, account)
    with pytest.raises(InvalidTransitionError):
        STEPS[step](flow, request)
    assert request.state is state and request.history == history
    assert footprint(connector, account) == before


def test_every_move_follows_the_request_machine() -> None:
    request = GovernedRequest(intent=RequestIntent(uuid.uuid4(), uuid.uuid4(), "tools.read", 1))
    with pytest.raises(InvalidTransitionError):
        request.move(R.EXECUTING)
    for to in (R.VALIDATED, R.RESERVED, R.EXECUTING, R.FINALIZED):
        assert (request.state.value, to.value) in MACHINES["request"]
        request.move(to)
    with pytest.raises(InvalidTransitionError):
        request.move(R.FAILED)  # terminal
    assert request.history == [R.RECEIVED, R.VALIDATED, R.RESERVED, R.EXECUTING, R.FINALIZED]


def test_flow_refuses_a_malformed_actor(contract: DynamicContract, ledger: Ledger) -> None:
    with pytest.raises(errors.InvalidArgument):
        RequestFlow(contract, lambda _a: None, ledger, actor_id="gateway")


# -- settling from a signed usage report ------------------------------------------


@pytest.fixture(scope="module")
def runner_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def executing(
    flow: RequestFlow, ledger: Ledger, reputations: dict[uuid.UUID, ReputationState | str]
) -> tuple[GovernedRequest, uuid.UUID]:
    account = funded_account(ledger)
    request = flow.admit(
        flow.receive(intent(agent(reputations, "cold"), account, "inference.basic", 900_000))
    )
    flow.start(request)
    return request, account


def test_finalize_from_report_settles_the_request(
    flow: RequestFlow,
    ledger: Ledger,
    reputations: dict[uuid.UUID, ReputationState | str],
    runner_key: Ed25519PrivateKey,
) -> None:
    request, _ = executing(flow, ledger, reputations)
    assert request.reservation_id is not None
    token = sign_usage_report(
        runner_key, reservation_id=request.reservation_id, actual_cost_micro=654_321
    )
    flow.finalize_from_report(request, token, runner_key.public_key())
    assert request.state is R.FINALIZED
    assert request.settled is not None
    assert (request.settled.consumed_micro, request.settled.released_micro) == (654_321, 245_679)
    assert ledger.reservation(request.reservation_id).status == "finalized"


@pytest.mark.parametrize(
    ("cost", "other_reservation", "code"),
    [
        (900_001, False, UsageErrorCode.OVERSPEND),
        (1, True, UsageErrorCode.RESERVATION_UNKNOWN),
    ],
)
def test_a_refused_report_leaves_the_request_executing_and_changes_nothing(
    flow: RequestFlow,
    ledger: Ledger,
    connector: Connector,
    reputations: dict[uuid.UUID, ReputationState | str],
    runner_key: Ed25519PrivateKey,
    cost: int,
    other_reservation: bool,
    code: UsageErrorCode,
) -> None:
    request, account = executing(flow, ledger, reputations)
    assert request.reservation_id is not None
    target = uuid.uuid4() if other_reservation else request.reservation_id
    token = sign_usage_report(runner_key, reservation_id=target, actual_cost_micro=cost)
    before = footprint(connector, account)
    with pytest.raises(UsageReportError) as caught:
        flow.finalize_from_report(request, token, runner_key.public_key())
    assert caught.value.code is code
    assert request.state is R.EXECUTING
    assert footprint(connector, account) == before
    # a corrected report still settles it
    good = sign_usage_report(
        runner_key, reservation_id=request.reservation_id, actual_cost_micro=900_000
    )
    flow.finalize_from_report(request, good, runner_key.public_key())
    assert request.state is R.FINALIZED


def test_finalize_from_report_outside_executing_is_an_illegal_transition(
    flow: RequestFlow,
    ledger: Ledger,
    reputations: dict[uuid.UUID, ReputationState | str],
    runner_key: Ed25519PrivateKey,
) -> None:
    account = funded_account(ledger)
    request = flow.admit(
        flow.receive(intent(agent(reputations, "cold"), account, "inference.basic", 900_000))
    )
    assert request.reservation_id is not None
    token = sign_usage_report(
        runner_key, reservation_id=request.reservation_id, actual_cost_micro=1
    )
    with pytest.raises(InvalidTransitionError):
        flow.finalize_from_report(request, token, runner_key.public_key())  # still reserved
    assert ledger.reservation(request.reservation_id).status == "pending"


def test_finalize_from_report_fetches_the_key_once(
    flow: RequestFlow,
    ledger: Ledger,
    reputations: dict[uuid.UUID, ReputationState | str],
    runner_key: Ed25519PrivateKey,
) -> None:
    """A key callable (a JWKS fetch) is called once per report, as verify_usage_report does."""
    request, _ = executing(flow, ledger, reputations)
    assert request.reservation_id is not None
    fetches: list[int] = []

    def fetch() -> Ed25519PublicKey:
        fetches.append(1)
        return runner_key.public_key()

    hs256 = jwt.encode({"jti": str(uuid.uuid4())}, "s" * 32, algorithm="HS256")
    with pytest.raises(UsageReportError) as caught:
        flow.finalize_from_report(request, hs256, fetch)
    assert caught.value.code is UsageErrorCode.ALGORITHM_REJECTED and fetches == []
    token = sign_usage_report(
        runner_key, reservation_id=request.reservation_id, actual_cost_micro=5
    )
    flow.finalize_from_report(request, token, fetch)
    assert request.state is R.FINALIZED and fetches == [1]


def test_resending_a_report_whose_commit_was_not_acknowledged_settles_the_request(
    flow: RequestFlow,
    ledger: Ledger,
    connector: Connector,
    reputations: dict[uuid.UUID, ReputationState | str],
    runner_key: Ed25519PrivateKey,
) -> None:
    request, account = executing(flow, ledger, reputations)
    assert request.reservation_id is not None
    token = sign_usage_report(
        runner_key, reservation_id=request.reservation_id, actual_cost_micro=123_456
    )
    # The first attempt committed, but the gateway never saw the answer.
    verify_usage_report(connector, token, runner_key.public_key(), actor_id=SVC)
    before = footprint(connector, account)
    flow.finalize_from_report(request, token, runner_key.public_key())
    assert request.state is R.FINALIZED
    assert request.settled is not None and request.settled.consumed_micro == 123_456
    assert footprint(connector, account) == before  # nothing applied twice


def test_another_report_for_a_settled_reservation_is_still_refused(
    flow: RequestFlow,
    ledger: Ledger,
    connector: Connector,
    reputations: dict[uuid.UUID, ReputationState | str],
    runner_key: Ed25519PrivateKey,
) -> None:
    request, account = executing(flow, ledger, reputations)
    assert request.reservation_id is not None
    first = sign_usage_report(
        runner_key, reservation_id=request.reservation_id, actual_cost_micro=5
    )
    verify_usage_report(connector, first, runner_key.public_key(), actor_id=SVC)
    before = footprint(connector, account)
    # A different report (another jti and cost), and the same jti replayed by another request.
    second = sign_usage_report(
        runner_key, reservation_id=request.reservation_id, actual_cost_micro=6
    )
    with pytest.raises(UsageReportError) as caught:
        flow.finalize_from_report(request, second, runner_key.public_key())
    assert caught.value.code is UsageErrorCode.RESERVATION_UNKNOWN  # CV013: already finalized
    assert request.state is R.EXECUTING
    other, _ = executing(flow, ledger, reputations)
    with pytest.raises(UsageReportError) as caught:
        flow.finalize_from_report(other, first, runner_key.public_key())
    assert caught.value.code is UsageErrorCode.RESERVATION_UNKNOWN  # not its reservation
    assert footprint(connector, account) == before
