"""Optional OpenTelemetry spans, through a sanitizer.

Usage::

    with span("covenant.ledger.reserve", account_id=acct, amount=10) as s:
        ...
        s.set(outcome="ok")

**When spans are emitted.** Only when both hold: the OpenTelemetry API is
installed (the ``otel`` extra) and ``COVENANT_OTEL_ENABLED=true`` (or
:func:`configure` ``(enabled=True)``). Otherwise :func:`span` yields a no-op
and costs one flag check. covenant is a library: it never installs a
tracer provider or an exporter itself; spans go to the application's global
provider (``opentelemetry-instrument``, or the SDK set up by the host), or
to the provider given to :func:`configure`. Enabled without an SDK
provider, the API's own no-op tracer drops them.

**What a span may carry.** :data:`ALLOWED` is an allow-list of attribute
keys per span name; any other key is dropped, and a span name that is not
in it carries no attributes at all. Identity attributes
(:data:`IDENTITY_KEYS`: agent, account, actor, domain, reservation, ...)
are replaced by :func:`hash_identity`, SHA-256 truncated to 12 hex
characters, so traces can be correlated without exporting who did what.
Values are coerced to OpenTelemetry types (str, bool, int, float; UUIDs and
enums as text, timedeltas as seconds); anything else is dropped. An
exception marks the span ERROR with ``error.type`` (the class name) but its
message is not recorded: messages can name accounts and domains.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from covenant import __version__
from covenant.config import load_settings

try:
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import Span, Status, StatusCode, TracerProvider

    HAVE_OTEL = True
except ImportError:  # the otel extra is not installed: spans are no-ops
    HAVE_OTEL = False

__all__ = [
    "ALLOWED",
    "IDENTITY_KEYS",
    "SanitizedSpan",
    "configure",
    "enabled",
    "hash_identity",
    "sanitize",
    "shutdown",
    "span",
]

log = logging.getLogger("covenant.telemetry")

AttributeValue = str | bool | int | float

# Hashed wherever they appear.
IDENTITY_KEYS: Final = frozenset(
    {
        "agent_id",
        "account_id",
        "actor_id",
        "domain_tag",
        "from_account",
        "to_account",
        "reservation_id",
        "mutation_id",
        "lot_id",
        "entry_id",
        "operator_id",
        "jti",
    }
)

_ERROR = frozenset({"error.type", "outcome"})


def _ledger(*keys: str) -> frozenset[str]:
    return frozenset({"actor_id", *keys}) | _ERROR


# The allow-list, per span name. A span name missing here carries nothing.
ALLOWED: Final[Mapping[str, frozenset[str]]] = {
    # the audit trail
    "covenant.audit.append": frozenset({"domain_tag", "event_type", "actor_id", "kind", "entries"})
    | _ERROR,
    "covenant.audit.verify": frozenset({"domain_tag", "from_seq", "checked", "ok"}) | _ERROR,
    # the ledger adapter (covenant.metrics.ledger_operations names them after the method)
    "covenant.ledger.create_account": _ledger("account_id", "kind"),
    "covenant.ledger.set_receivable_bound": _ledger("account_id", "bound"),
    "covenant.ledger.allocate": _ledger("account_id", "amount", "source_type"),
    "covenant.ledger.reserve": _ledger("account_id", "amount", "amount_micro", "ttl"),
    "covenant.ledger.finalize": _ledger("reservation_id", "actual"),
    "covenant.ledger.release": _ledger("reservation_id"),
    "covenant.ledger.finalize_usage_report": _ledger("reservation_id", "actual"),
    "covenant.ledger.expire": _ledger("limit"),
    "covenant.ledger.transfer": _ledger("from_account", "to_account", "amount"),
    "covenant.ledger.distribute": _ledger("from_account", "amount"),
    "covenant.ledger.record_reputation_event": _ledger("agent_id", "event_type", "task_type"),
    "covenant.ledger.balance": _ledger("account_id"),
    "covenant.ledger.lots": _ledger("account_id"),
    "covenant.ledger.reservation": _ledger("reservation_id"),
    "covenant.ledger.reputation": _ledger("agent_id"),
    "covenant.ledger.reconcile": _ledger("sweep_grace", "ok", "failing"),
    "covenant.ledger.invariants": _ledger(),
    # usage reports (covenant.usage)
    "covenant.usage.verify": frozenset({"reservation_id", "jti", "code", "permanent"}) | _ERROR,
    # covenant serve
    "covenant.serve.request": frozenset({"http.method", "http.route", "http.status_code"}),
}


def hash_identity(value: object) -> str:
    """SHA-256 of the value's text, truncated to 12 hex characters."""
    return hashlib.sha256(str(value).encode("utf-8")).hexdigest()[:12]


def _coerce(value: object) -> AttributeValue | None:
    if isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return int(value)  # MicroUSD, BasisPoints: plain int
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    return None


def sanitize(span_name: str, attributes: Mapping[str, object]) -> dict[str, AttributeValue]:
    """The attributes ``span_name`` may carry: allow-listed, identities hashed, coerced."""
    allowed = ALLOWED.get(span_name)
    if not allowed:
        return {}
    clean: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if key not in allowed or value is None:
            continue
        if key in IDENTITY_KEYS:
            clean[key] = hash_identity(value)
            continue
        coerced = _coerce(value)
        if coerced is not None:
            clean[key] = coerced
    return clean


@dataclass
class _State:
    enabled: bool | None = None  # None: COVENANT_OTEL_ENABLED, read on first use
    provider: Any = None  # an OpenTelemetry TracerProvider; None: the global one


_state = _State()


def configure(*, enabled: bool | None = None, tracer_provider: Any = None) -> None:
    """Turn spans on or off (``None``: back to ``COVENANT_OTEL_ENABLED``) and pick the provider.

    ``tracer_provider`` (an OpenTelemetry ``TracerProvider``; ``None``: the
    global one) is where spans go; tests pass an SDK provider with an
    in-memory exporter.
    """
    _state.enabled = enabled
    _state.provider = tracer_provider


def enabled() -> bool:
    """Whether :func:`span` records anything."""
    if not HAVE_OTEL:
        return False
    if _state.enabled is None:
        _state.enabled = load_settings().otel_enabled
    return _state.enabled


class SanitizedSpan:
    """A span whose attributes pass the sanitizer; a no-op when telemetry is off."""

    __slots__ = ("_span", "name")

    def __init__(self, name: str, span: Span | None = None) -> None:
        self.name = name
        self._span = span

    @property
    def recording(self) -> bool:
        return self._span is not None and self._span.is_recording()

    def set(self, **attributes: object) -> None:
        if self._span is not None:
            self._span.set_attributes(sanitize(self.name, attributes))


_NOOP: Final = SanitizedSpan("")


@contextmanager
def span(name: str, **attributes: object) -> Iterator[SanitizedSpan]:
    """A span named ``name`` with the sanitized ``attributes``; a no-op when disabled."""
    if not enabled():
        yield _NOOP
        return
    provider: TracerProvider | None = _state.provider
    tracer = otel_trace.get_tracer("covenant", __version__, tracer_provider=provider)
    with tracer.start_as_current_span(
        name,
        attributes=sanitize(name, attributes),
        record_exception=False,  # exception messages can name accounts and domains
        set_status_on_exception=False,
    ) as otel_span:
        wrapped = SanitizedSpan(name, otel_span)
        try:
            yield wrapped
        except BaseException as exc:
            wrapped.set(**{"error.type": type(exc).__name__})
            otel_span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def shutdown(timeout_s: float = 5.0) -> None:
    """Flush the provider's pending spans, waiting at most ``timeout_s`` (``covenant serve``
    calls it on shutdown: an unreachable collector must not hold the exit for the SDK's 30 s).
    """
    if not HAVE_OTEL or not enabled():
        return
    provider = _state.provider or otel_trace.get_tracer_provider()
    flush = getattr(provider, "force_flush", None)
    if callable(flush):
        try:
            if flush(timeout_millis=max(1, int(timeout_s * 1000))) is False:
                log.warning("flushing OpenTelemetry spans timed out after %g s", timeout_s)
        except Exception:  # a failing exporter must not fail the shutdown
            log.warning("flushing OpenTelemetry spans failed", exc_info=True)
