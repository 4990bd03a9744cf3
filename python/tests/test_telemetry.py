"""OpenTelemetry spans through the sanitizer: allow-lists, hashed identities, no-op when off."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from covenant import errors, telemetry
from covenant.audit import AuditTrail
from covenant.db import Connector
from covenant.ledger import Ledger
from covenant.money import MicroUSD

SVC = "service:billing"
HEX12 = re.compile(r"[0-9a-f]{12}")


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans on: an SDK provider with an in-memory exporter (not the global provider)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    telemetry.configure(enabled=True, tracer_provider=provider)
    try:
        yield memory
    finally:
        telemetry.configure()
        provider.shutdown()


def only(memory: InMemorySpanExporter, name: str) -> ReadableSpan:
    spans = [s for s in memory.get_finished_spans() if s.name == name]
    assert len(spans) == 1, [s.name for s in memory.get_finished_spans()]
    return spans[0]


def test_identities_hash_to_12_hex_chars_of_sha256() -> None:
    account = uuid.UUID("6f1e0c1e-8d0b-4a57-9b43-2a6f1f0e9c11")
    hashed = telemetry.hash_identity(account)
    assert HEX12.fullmatch(hashed)
    assert hashed == hashlib.sha256(str(account).encode()).hexdigest()[:12]
    assert telemetry.hash_identity(account) == hashed  # deterministic: traces correlate
    assert telemetry.hash_identity("account:x") != telemetry.hash_identity("account:y")


def test_the_allow_list_keeps_only_known_keys_and_hashes_identities() -> None:
    account = uuid.uuid4()
    clean = telemetry.sanitize(
        "covenant.ledger.reserve",
        {
            "account_id": account,
            "actor_id": SVC,
            "amount": MicroUSD(2**60),
            "ttl": timedelta(minutes=2),
            "payload": {"secret": "x"},  # not allowed
            "conn": object(),  # not allowed
            "wallet": "0xabc",  # not allowed
        },
    )
    assert clean == {
        "account_id": telemetry.hash_identity(account),
        "actor_id": telemetry.hash_identity(SVC),
        "amount": 2**60,
        "ttl": 120.0,
    }
    assert type(clean["amount"]) is int


def test_unknown_span_names_carry_no_attributes() -> None:
    assert telemetry.sanitize("covenant.something.new", {"account_id": "a", "ok": True}) == {}
    assert telemetry.sanitize("", {"http.method": "GET"}) == {}


def test_identity_keys_are_hashed_wherever_they_are_allowed() -> None:
    for name, allowed in telemetry.ALLOWED.items():
        for key in allowed & telemetry.IDENTITY_KEYS:
            value = telemetry.sanitize(name, {key: "raw-identity"})[key]
            assert value == telemetry.hash_identity("raw-identity"), (name, key)


def test_spans_are_exported_sanitized(exporter: InMemorySpanExporter) -> None:
    account = uuid.uuid4()
    with telemetry.span(
        "covenant.ledger.reserve", account_id=account, amount=5, password="hunter2"
    ) as span:
        assert span.recording
        span.set(outcome="ok", note="dropped")
    exported = only(exporter, "covenant.ledger.reserve")
    assert dict(exported.attributes or {}) == {
        "account_id": telemetry.hash_identity(account),
        "amount": 5,
        "outcome": "ok",
    }


def test_an_unknown_span_is_exported_bare(exporter: InMemorySpanExporter) -> None:
    with telemetry.span("covenant.unlisted", account_id="acct-1", ok=True) as span:
        span.set(more="x")
    assert dict(only(exporter, "covenant.unlisted").attributes or {}) == {}


def test_an_error_marks_the_span_without_its_message(exporter: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="account 42"), telemetry.span("covenant.audit.append"):
        raise ValueError("account 42 is secret")
    exported = only(exporter, "covenant.audit.append")
    assert exported.status.status_code is StatusCode.ERROR
    assert dict(exported.attributes or {}) == {"error.type": "ValueError"}
    assert not exported.events  # no exception event carrying the message


def test_no_op_when_not_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    try:
        # COVENANT_OTEL_ENABLED unset: off, even with a provider at hand
        monkeypatch.delenv("COVENANT_OTEL_ENABLED", raising=False)
        telemetry.configure(tracer_provider=provider)
        assert not telemetry.enabled()
        with telemetry.span("covenant.ledger.reserve", account_id="a") as span:
            assert not span.recording
            span.set(outcome="ok")
        # explicitly off
        telemetry.configure(enabled=False, tracer_provider=provider)
        with telemetry.span("covenant.ledger.reserve", account_id="a"):
            pass
        # on, but OpenTelemetry missing (the otel extra not installed)
        telemetry.configure(enabled=True, tracer_provider=provider)
        monkeypatch.setattr(telemetry, "HAVE_OTEL", False)
        assert not telemetry.enabled()
        with telemetry.span("covenant.ledger.reserve", account_id="a"):
            pass
        telemetry.shutdown()  # a no-op too
        assert memory.get_finished_spans() == ()
    finally:
        telemetry.configure()
        provider.shutdown()


def test_enabled_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setenv("COVENANT_OTEL_ENABLED", "true")
    telemetry.configure(tracer_provider=provider)
    try:
        assert telemetry.enabled()
        with telemetry.span("covenant.ledger.release", reservation_id="r-1"):
            pass
        assert [s.name for s in memory.get_finished_spans()] == ["covenant.ledger.release"]
    finally:
        telemetry.configure()
        provider.shutdown()


def _values(span: ReadableSpan) -> list[str]:
    return [str(v) for v in (span.attributes or {}).values()]


def test_ledger_calls_are_traced_without_raw_identities(
    ledger: Ledger, exporter: InMemorySpanExporter
) -> None:
    account = ledger.create_account(uuid.uuid4(), "user", actor_id=SVC)
    ledger.allocate(account, 100, "deposit", actor_id=SVC)
    ledger.reserve(account, 40, timedelta(hours=1), actor_id=SVC)
    with pytest.raises(errors.InsufficientBalance):
        ledger.reserve(account, 1_000, timedelta(hours=1), actor_id=SVC)

    reserves = [s for s in exporter.get_finished_spans() if s.name == "covenant.ledger.reserve"]
    assert len(reserves) == 2
    ok, refused = reserves
    assert dict(ok.attributes or {}) == {
        "account_id": telemetry.hash_identity(account),
        "actor_id": telemetry.hash_identity(SVC),
        "amount": 40,
        "ttl": 3600.0,
        "outcome": "ok",
    }
    assert (refused.attributes or {})["outcome"] == "CV010"
    assert (refused.attributes or {})["error.type"] == "InsufficientBalance"
    assert refused.status.status_code is StatusCode.ERROR
    for span in exporter.get_finished_spans():
        assert str(account) not in _values(span)
        assert SVC not in _values(span)


def test_audit_appends_are_traced_with_a_hashed_domain(
    connector: Connector, exporter: InMemorySpanExporter
) -> None:
    tag = f"telemetry:{uuid.uuid4().hex[:8]}"
    AuditTrail(connector).append(tag, "order.created", SVC, {"secret": "payload"})
    span = only(exporter, "covenant.audit.append")
    assert dict(span.attributes or {}) == {
        "domain_tag": telemetry.hash_identity(tag),
        "event_type": "order.created",
        "actor_id": telemetry.hash_identity(SVC),
        "kind": "single",
        "entries": 1,
    }


def test_a_bad_ledger_call_fails_as_without_telemetry(
    ledger: Ledger, exporter: InMemorySpanExporter
) -> None:
    """Spans on, a call with wrong arguments raises Python's own TypeError, counted and traced."""
    from covenant import metrics  # noqa: PLC0415

    before = metrics.sample(
        "covenant_ledger_operations_total", operation="balance", outcome="error"
    )
    with pytest.raises(TypeError, match=r"Ledger\.balance\(\) got an unexpected keyword"):
        ledger.balance(uuid.uuid4(), bogus=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"Ledger\.balance\(\) takes 2 positional"):
        ledger.balance(uuid.uuid4(), None)  # type: ignore[misc]
    after = metrics.sample("covenant_ledger_operations_total", operation="balance", outcome="error")
    assert after - before == 2
    spans = [s for s in exporter.get_finished_spans() if s.name == "covenant.ledger.balance"]
    assert [(s.attributes or {}).get("error.type") for s in spans] == ["TypeError", "TypeError"]


def test_shutdown_flushes_within_a_bound() -> None:
    """The SDK waits 30 s by default for a dead collector; shutdown passes its own bound."""
    asked: list[int] = []

    class Provider(TracerProvider):
        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            asked.append(timeout_millis)
            return False  # timed out

    provider = Provider()
    telemetry.configure(enabled=True, tracer_provider=provider)
    try:
        telemetry.shutdown(2.5)
        telemetry.shutdown()
    finally:
        telemetry.configure()
        provider.shutdown()
    assert asked[0] == 2500
    assert asked[1] < 30_000


def test_every_span_covenant_opens_has_an_allow_list() -> None:
    """A ledger method added without its ALLOWED line would export its spans bare."""
    import inspect  # noqa: PLC0415

    methods = [
        n for n, m in vars(Ledger).items() if not n.startswith("_") and inspect.isfunction(m)
    ]
    assert methods
    missing = [n for n in methods if f"covenant.ledger.{n}" not in telemetry.ALLOWED]
    assert missing == []
    for name in ("covenant.audit.append", "covenant.audit.verify", "covenant.serve.request"):
        assert name in telemetry.ALLOWED
