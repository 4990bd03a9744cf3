"""The reputation event router: parsing, validation, routing against a real server, logs, mypy.

Routing is checked by reading back what the database wrote: the agent's
aggregate and per-task scores, the mutation record and the audit entry on the
agent's chain (``account:<id>``), whose entry id is the event id.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from ledger_support import footprint
from psycopg.rows import dict_row

from covenant import errors
from covenant.catalogue import ReputationEventType
from covenant.db import Connector
from covenant.ledger import Ledger
from covenant.reputation_events import (
    REPUTATION_EVENT,
    CredentialUpdateEvent,
    InvalidReputationEvent,
    ModelPerformanceEvent,
    QualityObservation,
    QualitySignalEvent,
    ReputationEventRouter,
    TaskCompletedEvent,
    ledger_call,
    parse_event,
    score_to_bps,
)

ROOT = Path(__file__).resolve().parents[2]
SVC = "service:billing"
ROUTER = "service:dixie-router"
PERSON = "6f1e0c1e-8d0b-4a57-9b43-2a6f1f0e9c11"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def agent(ledger: Ledger) -> uuid.UUID:
    return ledger.create_account(uuid.uuid4(), "agent", actor_id=SVC)


def event(event_type: str, agent_id: uuid.UUID | None = None, **fields: Any) -> dict[str, Any]:
    """A valid document of the variant; ``fields`` override or add."""
    common: dict[str, Any] = {
        "event_type": event_type,
        "event_id": str(uuid.uuid4()),
        "agent_id": str(agent_id or uuid.uuid4()),
        "occurred_at": NOW.isoformat(),
        "actor_id": ROUTER,
    }
    specific: dict[str, dict[str, Any]] = {
        "quality_signal": {"quality_observation": {"score": 0.8}, "task_type": "code"},
        "task_completed": {"task_type": "code", "outcome": "succeeded"},
        "credential_update": {"credential_id": "cred-7f3a", "action": "issued"},
        "model_performance": {
            "model_id": "meta-llama/Llama-3-70b",
            "provider": "together",
            "pool_id": "pool.fast",
            "task_type": "summarize",
            "quality_observation": {
                "score": 0.91,
                "dimensions": {"coherence": 0.95, "safety": 1},
                "latency_ms": 2340,
                "evaluated_by": "dixie-eval-v2",
            },
        },
    }
    return common | specific[event_type] | fields


def ema(score: int, observation: int) -> int:
    """The SQL's moving average: score + round((obs - score) * 2000 / 10000), half away from 0."""
    step = (Decimal(observation - score) * 2000 / 10000).quantize(Decimal(1), ROUND_HALF_UP)
    return score + int(step)


def reputation_row(db: Connector, agent_id: uuid.UUID) -> dict[str, Any]:
    row = db.fetch_one(
        "SELECT score_bps, state, event_count FROM covenant.agent_reputation WHERE agent_id = %s",
        [agent_id],
    )
    assert row is not None
    return row


def task_scores(db: Connector, agent_id: uuid.UUID) -> dict[str, tuple[int, int]]:
    rows = db.fetch_all(
        "SELECT task_type, score_bps, event_count FROM covenant.agent_task_reputation "
        "WHERE agent_id = %s",
        [agent_id],
    )
    return {r["task_type"]: (r["score_bps"], r["event_count"]) for r in rows}


def audit_entry(db: Connector, agent_id: uuid.UUID, entry_id: uuid.UUID) -> dict[str, Any] | None:
    return db.fetch_one(
        "SELECT event_type, actor_id, payload FROM covenant.audit_trail "
        "WHERE domain_tag = %s AND entry_id = %s",
        [f"account:{agent_id}", entry_id],
    )


def mutations(db: Connector, mutation_id: uuid.UUID) -> list[dict[str, Any]]:
    return db.fetch_all(
        "SELECT operation, request FROM covenant.ledger_mutations WHERE mutation_id = %s",
        [mutation_id],
    )


@pytest.fixture(scope="module")
def router(ledger: Ledger) -> ReputationEventRouter:
    return ReputationEventRouter(ledger)


# -- parsing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "cls"),
    [
        ("quality_signal", QualitySignalEvent),
        ("task_completed", TaskCompletedEvent),
        ("credential_update", CredentialUpdateEvent),
        ("model_performance", ModelPerformanceEvent),
    ],
)
def test_each_variant_parses_from_a_mapping_and_from_json(event_type: str, cls: type) -> None:
    doc = event(event_type)
    from_mapping = parse_event(doc)
    from_json = parse_event(json.dumps(doc))
    assert type(from_mapping) is cls and from_json == from_mapping
    assert from_mapping.event_type == event_type
    assert str(from_mapping.event_id) == doc["event_id"]
    assert from_mapping.occurred_at == NOW
    assert from_mapping.actor_kind == "service"
    assert from_mapping.model_dump(mode="json") == REPUTATION_EVENT.dump_python(
        from_json, mode="json"
    )


def test_variant_fields_and_defaults() -> None:
    mp = parse_event(event("model_performance"))
    assert isinstance(mp, ModelPerformanceEvent)
    assert (mp.model_id, mp.provider, mp.pool_id, mp.task_type) == (
        "meta-llama/Llama-3-70b",
        "together",
        "pool.fast",
        "summarize",
    )
    obs = mp.quality_observation
    assert (obs.score, obs.dimensions, obs.latency_ms, obs.evaluated_by) == (
        0.91,
        {"coherence": 0.95, "safety": 1.0},
        2340,
        "dixie-eval-v2",
    )
    bare = {k: v for k, v in event("quality_signal").items() if k != "task_type"}
    qs = parse_event(bare)
    assert isinstance(qs, QualitySignalEvent) and qs.task_type == "unspecified"
    tc = parse_event(event("task_completed", outcome="failed", duration_ms=0))
    assert isinstance(tc, TaskCompletedEvent) and tc.quality_observation is None
    person = parse_event(event("credential_update", actor_id=PERSON))
    assert person.actor_kind == "person"
    with pytest.raises(Exception, match="frozen"):
        mp.model_id = "other"  # type: ignore[misc]


def test_scores_become_basis_points_deterministically() -> None:
    assert [score_to_bps(s) for s in (0, 1, 0.5, 0.8, 0.91, 0.0001)] == [
        0,
        10_000,
        5_000,
        8_000,
        9_100,
        1,
    ]
    # the decimal the producer wrote, rounded half away from zero (not the binary product)
    assert 0.00015 * 10_000 < 1.5 and score_to_bps(0.00015) == 2
    assert score_to_bps(0.12345) == 1235
    assert score_to_bps(0.00005) == 1 and score_to_bps(0.000049999) == 0
    assert score_to_bps(0.99995) == 10_000 and score_to_bps(0.99994) == 9_999
    for bad in (-0.1, 1.0000001, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            score_to_bps(bad)
    with pytest.raises(TypeError):
        score_to_bps(True)
    assert QualityObservation(score=1).score_bps == 10_000


def _obs(**over: Any) -> dict[str, Any]:
    return {"quality_observation": {"score": 0.5} | over}


BAD_EVENTS: list[tuple[str, dict[str, Any], str, str]] = [
    # (id, document changes to a model_performance event, expected loc suffix, error type)
    ("score>1", _obs(score=1.01), "quality_observation.score", "less_than_equal"),
    ("score<0", _obs(score=-0.01), "quality_observation.score", "greater_than_equal"),
    ("score-bool", _obs(score=True), "quality_observation.score", "float_type"),
    ("score-string", _obs(score="0.5"), "quality_observation.score", "float_type"),
    ("score-missing", {"quality_observation": {}}, "quality_observation.score", "missing"),
    (
        "dimension-name-upper",
        _obs(dimensions={"Coherence": 0.5}),
        "quality_observation.dimensions.<invalid key>.[key]",
        "string_pattern_mismatch",
    ),
    (
        "dimension-name-digit",
        _obs(dimensions={"1st": 0.5}),
        "quality_observation.dimensions.<invalid key>.[key]",
        "string_pattern_mismatch",
    ),
    (
        "dimension-name-long",
        _obs(dimensions={"d" * 33: 0.5}),
        "quality_observation.dimensions.<invalid key>.[key]",
        "string_pattern_mismatch",
    ),
    (
        "dimension-value>1",
        _obs(dimensions={"safety": 1.5}),
        "quality_observation.dimensions.safety",
        "less_than_equal",
    ),
    (
        "dimension-value<0",
        _obs(dimensions={"safety": -1}),
        "quality_observation.dimensions.safety",
        "greater_than_equal",
    ),
    (
        "dimension-value-bool",
        _obs(dimensions={"safety": False}),
        "quality_observation.dimensions.safety",
        "float_type",
    ),
    (
        "too-many-dimensions",
        _obs(dimensions={f"d{i}": 0.5 for i in range(33)}),
        "quality_observation.dimensions",
        "too_long",
    ),
    ("latency<0", _obs(latency_ms=-1), "quality_observation.latency_ms", "greater_than_equal"),
    ("latency-float", _obs(latency_ms=1.5), "quality_observation.latency_ms", "int_type"),
    (
        "evaluator-email",
        _obs(evaluated_by="alice@example.com"),
        "quality_observation.evaluated_by",
        "string_pattern_mismatch",
    ),
    ("task-type-upper", {"task_type": "Code"}, "task_type", "string_pattern_mismatch"),
    ("task-type-space", {"task_type": "code review"}, "task_type", "string_pattern_mismatch"),
    ("task-type-empty", {"task_type": ""}, "task_type", "string_pattern_mismatch"),
    ("task-type-long", {"task_type": "t" * 65}, "task_type", "string_pattern_mismatch"),
    ("model-id-free-text", {"model_id": "my model"}, "model_id", "string_pattern_mismatch"),
    ("pool-missing", {"pool_id": None}, "pool_id", "string_type"),
    ("actor-malformed", {"actor_id": "user:alice"}, "actor_id", "value_error"),
    ("event-id-not-uuid", {"event_id": "42"}, "event_id", "uuid_parsing"),
    ("naive-time", {"occurred_at": "2025-03-01T12:00:00"}, "occurred_at", "timezone_aware"),
    ("extra-field", {"note": "free text"}, "note", "extra_forbidden"),
]


@pytest.mark.parametrize(
    ("changes", "loc", "error_type"),
    [case[1:] for case in BAD_EVENTS],
    ids=[case[0] for case in BAD_EVENTS],
)
def test_validation_failures_name_the_field(
    changes: dict[str, Any], loc: str, error_type: str
) -> None:
    doc = event("model_performance") | changes
    with pytest.raises(InvalidReputationEvent) as caught:
        parse_event(doc)
    err = caught.value
    assert isinstance(err, errors.InvalidArgument) and err.code == "CV004"
    assert [(e["loc"], e["type"]) for e in err.errors] == [(f"model_performance.{loc}", error_type)]
    assert str(err).startswith("invalid reputation event: model_performance.")


def test_nan_and_infinity_are_refused_from_python_and_json() -> None:
    for value in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(InvalidReputationEvent) as caught:
            parse_event(event("quality_signal", quality_observation={"score": value}))
        assert caught.value.errors[0]["type"] == "finite_number"
    raw = json.dumps(event("quality_signal")).replace('"score": 0.8', '"score": NaN')
    with pytest.raises(InvalidReputationEvent) as from_json:
        parse_event(raw)
    assert from_json.value.errors[0]["loc"].endswith("quality_observation.score")


@pytest.mark.parametrize("tag", ["reputation_rumour", "QUALITY_SIGNAL", None])
def test_unknown_or_missing_event_type_is_refused(tag: str | None) -> None:
    doc = event("quality_signal")
    if tag is None:
        del doc["event_type"]
    else:
        doc["event_type"] = tag
    with pytest.raises(InvalidReputationEvent) as caught:
        parse_event(doc)
    (only,) = caught.value.errors
    assert only["loc"] == "event_type"
    assert only["type"] == ("union_tag_not_found" if tag is None else "union_tag_invalid")
    assert "quality_signal, task_completed, credential_update, model_performance" in only["msg"]
    assert tag is None or tag not in str(caught.value)


@pytest.mark.parametrize(
    ("event_type", "required"),
    [
        (
            "quality_signal",
            {"event_id", "agent_id", "occurred_at", "actor_id", "quality_observation"},
        ),
        ("task_completed", {"task_type", "outcome"}),
        ("credential_update", {"credential_id", "action"}),
        (
            "model_performance",
            {"model_id", "provider", "pool_id", "task_type", "quality_observation"},
        ),
    ],
)
def test_missing_fields_are_each_reported(event_type: str, required: set[str]) -> None:
    doc = {k: v for k, v in event(event_type).items() if k not in required}
    with pytest.raises(InvalidReputationEvent) as caught:
        parse_event(doc)
    missing = {e["loc"] for e in caught.value.errors if e["type"] == "missing"}
    assert missing == {f"{event_type}.{name}" for name in required}


def test_variant_specific_rules() -> None:
    # credential_update carries no score, task_completed only two outcomes
    with pytest.raises(InvalidReputationEvent) as no_score:
        parse_event(event("credential_update", quality_observation={"score": 0.5}))
    assert no_score.value.errors[0]["type"] == "extra_forbidden"
    with pytest.raises(InvalidReputationEvent) as caught:
        parse_event(event("task_completed", outcome="partial"))
    assert caught.value.errors[0]["loc"] == "task_completed.outcome"
    with pytest.raises(InvalidReputationEvent):
        parse_event(event("credential_update", action="leaked"))
    with pytest.raises(InvalidReputationEvent):
        parse_event([1, 2])  # type: ignore[arg-type]


def test_validation_errors_do_not_echo_personal_input() -> None:
    secret = "alice.smith@example.com"
    doc = event(
        "model_performance",
        actor_id=f"user:{secret}",
        model_id=secret,
        quality_observation={"score": 0.5, "dimensions": {secret: 0.5}},
    )
    with pytest.raises(InvalidReputationEvent) as caught:
        parse_event(doc)
    assert len(caught.value.errors) == 3
    assert secret not in str(caught.value) and secret not in json.dumps(caught.value.errors)
    # nor does a logged traceback: pydantic's error (which quotes the input) is not chained
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    logger = logging.getLogger("test.reputation_events.traceback")
    with pytest.raises(InvalidReputationEvent), _capture(logger) as lines:
        try:
            parse_event(doc)
        except InvalidReputationEvent:
            logger.exception("refused")
            raise
    assert "refused" in lines.getvalue() and secret not in lines.getvalue()


@contextlib.contextmanager
def _capture(logger: logging.Logger) -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger.addHandler(handler)
    try:
        yield out
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamps_without_a_utc_form_are_invalid_not_a_crash(occurred_at: str) -> None:
    doc = event("credential_update", occurred_at=occurred_at)
    with pytest.raises(InvalidReputationEvent) as caught:
        ledger_call(parse_event(doc))  # before: OverflowError from the payload
    assert caught.value.errors[0]["loc"] == "credential_update.occurred_at"
    with pytest.raises(InvalidReputationEvent):
        parse_event(json.dumps(doc))


# -- mapping (no database) ---------------------------------------------------------


def test_each_variant_maps_to_its_sql_event_type_and_bps() -> None:
    cases = {
        "quality_signal": (ReputationEventType.QUALITY_SIGNAL, 8_000, "code"),
        "task_completed": (ReputationEventType.TASK_COMPLETED, 10_000, "code"),
        "credential_update": (ReputationEventType.CREDENTIAL_UPDATE, None, None),
        "model_performance": (ReputationEventType.MODEL_PERFORMANCE, 9_100, "summarize"),
    }
    for event_type, expected in cases.items():
        call = ledger_call(parse_event(event(event_type)))
        assert (call.event_type, call.observation_bps, call.task_type) == expected
        assert "actor_id" not in call.payload and "agent_id" not in call.payload
    failed = ledger_call(parse_event(event("task_completed", outcome="failed")))
    measured = ledger_call(
        parse_event(event("task_completed", quality_observation={"score": 0.42}))
    )
    assert (failed.observation_bps, measured.observation_bps) == (0, 4_200)


def test_payload_is_integer_and_deterministic() -> None:
    doc = event("model_performance", occurred_at="2025-03-01T14:00:00+02:00")
    first = ledger_call(parse_event(doc)).payload
    assert first == ledger_call(parse_event(json.dumps(doc))).payload
    assert first == {
        "event_id": doc["event_id"],
        "occurred_at": "2025-03-01T12:00:00+00:00",
        "model_id": "meta-llama/Llama-3-70b",
        "provider": "together",
        "pool_id": "pool.fast",
        "quality_observation": {
            "score_bps": 9_100,
            "dimensions_bps": {"coherence": 9_500, "safety": 10_000},
            "latency_ms": 2340,
            "evaluated_by": "dixie-eval-v2",
        },
    }
    other_zone = doc | {"occurred_at": "2025-03-01T12:00:00+00:00"}
    assert ledger_call(parse_event(other_zone)).payload == first


# -- routing against the database -----------------------------------------------------


def test_each_variant_is_routed_with_its_audit_entry(
    router: ReputationEventRouter, ledger: Ledger, connector: Connector
) -> None:
    a = agent(ledger)
    score, scored = 0, 0
    for event_type, bps, task_type in [
        ("quality_signal", 8_000, "code"),
        ("task_completed", 10_000, "code"),
        ("credential_update", None, None),
        ("model_performance", 9_100, "summarize"),
    ]:
        ev = parse_event(event(event_type, a))
        out = router.route(ev)
        if bps is not None:
            score, scored = ema(score, bps), scored + 1
        assert (out.agent_id, out.score_bps, out.event_count) == (a, score, scored)
        row = reputation_row(connector, a)
        assert (row["score_bps"], row["event_count"]) == (score, scored)
        entry = audit_entry(connector, a, ev.event_id)
        assert entry is not None, f"no audit entry for {event_type}"
        assert entry["event_type"] == "record_reputation_event" and entry["actor_id"] == ROUTER
        recorded = entry["payload"]
        assert (recorded["event_type"], recorded["observation_bps"], recorded["task_type"]) == (
            event_type,
            bps,
            task_type,
        )
        assert recorded["score_bps"] == score
        assert recorded["payload"] == ledger_call(ev).payload
        assert "actor_id" not in recorded["payload"]
        (mutation,) = mutations(connector, ev.event_id)
        assert mutation["operation"] == "record_reputation_event"
        assert mutation["request"]["event_type"] == event_type
    assert task_scores(connector, a) == {
        "code": (ema(ema(0, 8_000), 10_000), 2),
        "summarize": (ema(0, 9_100), 1),
    }
    assert score == 4_444  # 0 → 1600 → 3280 → 3280 (credential_update moves nothing) → 4444


def test_rerouting_the_same_event_is_idempotent(
    router: ReputationEventRouter, ledger: Ledger, connector: Connector
) -> None:
    a = agent(ledger)
    ev = parse_event(event("model_performance", a))
    first = router.route(ev)
    before = footprint(connector, a), reputation_row(connector, a)
    again = router.route(parse_event(ev.model_dump_json()))
    assert again == first
    assert (footprint(connector, a), reputation_row(connector, a)) == before
    assert len(mutations(connector, ev.event_id)) == 1
    changed = ev.model_copy(update={"pool_id": "pool.slow"})
    with pytest.raises(errors.IdempotencyConflict):
        router.route(changed)
    assert (footprint(connector, a), reputation_row(connector, a)) == before


def test_unspecified_task_type_feeds_only_the_aggregate(
    router: ReputationEventRouter, ledger: Ledger, connector: Connector
) -> None:
    a = agent(ledger)
    router.route(parse_event(event("model_performance", a, task_type="unspecified")))
    router.route(
        parse_event({k: v for k, v in event("quality_signal", a).items() if k != "task_type"})
    )
    router.route(parse_event(event("task_completed", a, task_type="unspecified")))
    row = reputation_row(connector, a)
    assert row["event_count"] == 3 and row["score_bps"] == ema(ema(ema(0, 9_100), 8_000), 10_000)
    assert task_scores(connector, a) == {}
    router.route(parse_event(event("model_performance", a, task_type="code")))
    assert task_scores(connector, a) == {"code": (ema(0, 9_100), 1)}
    assert reputation_row(connector, a)["event_count"] == 4


def test_an_audit_failure_fails_the_event(
    router: ReputationEventRouter,
    ledger: Ledger,
    connector: Connector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = agent(ledger)
    router.route(parse_event(event("quality_signal", a)))
    for _ in range(3):
        connector.execute(
            "SELECT * FROM covenant.record_audit_verification_failure(%s, 'service:verifier', 'test')",
            [f"account:{a}"],
        )
    before = footprint(connector, a), reputation_row(connector, a), task_scores(connector, a)
    for event_type in ("model_performance", "credential_update"):
        ev = parse_event(event(event_type, a))
        with (
            caplog.at_level(logging.INFO, logger="covenant.reputation_events"),
            pytest.raises(errors.AuditQuarantine) as caught,
        ):
            router.route(ev)
        assert caught.value.sqlstate == "CV001"
        assert mutations(connector, ev.event_id) == []
        assert audit_entry(connector, a, ev.event_id) is None
    assert (
        footprint(connector, a),
        reputation_row(connector, a),
        task_scores(connector, a),
    ) == before
    refused = [r for r in caplog.records if r.getMessage() == "reputation event refused"]
    assert [r.__dict__["error"] for r in refused] == ["AUDIT_QUARANTINE", "AUDIT_QUARANTINE"]
    assert [r.levelno for r in refused] == [logging.WARNING, logging.WARNING]


def test_routing_composes_with_the_callers_transaction(
    router: ReputationEventRouter, ledger: Ledger, connector: Connector, module_db_url: str
) -> None:
    a = agent(ledger)
    ev = parse_event(event("quality_signal", a))
    with psycopg.connect(module_db_url, row_factory=dict_row) as c:
        out = router.route(ev, conn=c)
        assert out.event_count == 1
        c.rollback()
    assert reputation_row(connector, a)["event_count"] == 0
    assert mutations(connector, ev.event_id) == []


def test_route_raw_parses_then_routes(
    router: ReputationEventRouter, ledger: Ledger, connector: Connector
) -> None:
    a = agent(ledger)
    out = router.route_raw(json.dumps(event("task_completed", a, outcome="failed")))
    assert (out.score_bps, out.event_count) == (0, 1)
    with pytest.raises(InvalidReputationEvent):
        router.route_raw(event("task_completed", a, outcome="maybe"))
    assert reputation_row(connector, a)["event_count"] == 1


# -- logs ----------------------------------------------------------------------------


def _record_text(record: logging.LogRecord) -> str:
    return record.getMessage() + " " + " ".join(repr(v) for v in record.__dict__.values())


def test_logs_carry_model_provider_pool_score_and_nothing_personal(
    router: ReputationEventRouter, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    a = agent(ledger)
    mp = parse_event(event("model_performance", a))
    cred = parse_event(event("credential_update", a, credential_id="cred-alice-laptop"))
    person = parse_event(event("quality_signal", a, actor_id=PERSON))
    with caplog.at_level(logging.INFO, logger="covenant.reputation_events"):
        router.route(mp)
        router.route(cred)
        with pytest.raises(errors.NotAuthorized):  # persons may not record reputation
            router.route(person)
    records = [r for r in caplog.records if r.name == "covenant.reputation_events"]
    assert [r.getMessage() for r in records] == [
        "reputation event routed",
        "reputation event routed",
        "reputation event refused",
    ]
    routed = records[0].__dict__
    assert {k: routed[k] for k in ("event_type", "model_id", "provider", "pool_id", "score")} == {
        "event_type": "model_performance",
        "model_id": "meta-llama/Llama-3-70b",
        "provider": "together",
        "pool_id": "pool.fast",
        "score": 0.91,
    }
    assert routed["observation_bps"] == 9_100 and routed["score_bps"] == ema(0, 9_100)
    assert routed["actor_kind"] == "service" and routed["task_type"] == "summarize"
    assert records[1].__dict__["event_type"] == "credential_update"
    assert records[1].__dict__["score"] is None and records[1].__dict__["model_id"] is None
    assert records[2].__dict__["actor_kind"] == "person"
    assert records[2].__dict__["error"] == "NOT_AUTHORIZED"
    personal = [ROUTER, "dixie-router", PERSON, str(a), "cred-alice-laptop", "dixie-eval-v2"]
    for record in records:
        text = _record_text(record)
        assert not [p for p in personal if p in text], record.__dict__


# -- exhaustiveness, proved by mypy ----------------------------------------------------------

FIFTH_VARIANT = """
from __future__ import annotations

from typing import Annotated, Literal, TypeAlias, assert_never

from pydantic import BaseModel, Field

from covenant.reputation_events import (
    CredentialUpdateEvent,
    ModelPerformanceEvent,
    QualitySignalEvent,
    TaskCompletedEvent,
)


class PeerReviewEvent(BaseModel):
    event_type: Literal["peer_review"]


ExtendedEvent: TypeAlias = Annotated[
    QualitySignalEvent
    | TaskCompletedEvent
    | CredentialUpdateEvent
    | ModelPerformanceEvent
    | PeerReviewEvent,
    Field(discriminator="event_type"),
]


def complete(event: ExtendedEvent) -> str:
    match event:
        case QualitySignalEvent():
            return "quality_signal"
        case TaskCompletedEvent():
            return "task_completed"
        case CredentialUpdateEvent():
            return "credential_update"
        case ModelPerformanceEvent():
            return "model_performance"
        case PeerReviewEvent():
            return "peer_review"
        case _:
            assert_never(event)


def incomplete(event: ExtendedEvent) -> str:
    match event:
        case QualitySignalEvent():
            return "quality_signal"
        case TaskCompletedEvent():
            return "task_completed"
        case CredentialUpdateEvent():
            return "credential_update"
        case ModelPerformanceEvent():
            return "model_performance"
        case _:
            assert_never(event)  # MISSING-CASE
"""


def test_mypy_proves_the_match_is_exhaustive(tmp_path: Path) -> None:
    module = tmp_path / "fifth_variant.py"
    module.write_text(FIFTH_VARIANT)
    missing_line = FIFTH_VARIANT.splitlines().index(
        "            assert_never(event)  # MISSING-CASE"
    )
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")
    mypy = Path(sys.executable).with_name("mypy")
    # The real module and the temporary one in one run, from scratch and away
    # from the repository's cache and configuration.
    proc = subprocess.run(
        [
            str(mypy),
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--config-file",
            str(config),
            "-m",
            "covenant.reputation_events",
            "-m",
            "fifth_variant",
        ],
        cwd=tmp_path,
        env=os.environ | {"MYPYPATH": f"{ROOT / 'python'}{os.pathsep}{tmp_path}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    errors_found = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert len(errors_found) == 1, proc.stdout
    (only,) = errors_found
    assert only.startswith(f"fifth_variant.py:{missing_line + 1}:"), only
    assert '"assert_never"' in only and '"PeerReviewEvent"' in only, only
