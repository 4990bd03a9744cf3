"""Configuration: every ``COVENANT_*`` environment variable, in one place.

:data:`SPECS` is the single list; ``.env.example`` is generated from it
(``covenant config example``) and a test keeps the two equal.

Parsing is strict and never fatal: an integer must be plain decimal digits;
a non-number or a negative number falls back to the default with a warning;
a number outside the documented bounds is clamped to them with a warning.
Booleans accept true/false/1/0/yes/no/on/off; anything else is the default
with a warning.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

log = logging.getLogger("covenant.config")

Kind = Literal["str", "int", "bool", "choice"]


@dataclass(frozen=True)
class SettingSpec:
    name: str
    kind: Kind
    default: str | int | bool
    meaning: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    # A choice that is set but not recognised falls back to this instead of
    # the default (fail closed: a mistyped COVENANT_ENV is production).
    invalid_choice: str | None = None

    @property
    def field(self) -> str:
        return self.name.removeprefix("COVENANT_").lower()

    def type_text(self) -> str:
        if self.kind == "int":
            return f"int, {self.minimum}..{self.maximum}"
        if self.kind == "choice":
            return "one of " + "|".join(self.choices)
        return self.kind


SPECS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "COVENANT_DATABASE_URL",
        "str",
        "",
        "PostgreSQL URL for `covenant migrate`, `serve` and the adapters "
        "(postgresql://user:pass@host:port/db).",
    ),
    SettingSpec(
        "COVENANT_TEST_DATABASE_URL",
        "str",
        "",
        "An existing server for the test suite (needs CREATEDB and CREATEROLE); "
        "empty: testcontainers if a Docker engine answers, else the embedded cluster.",
    ),
    SettingSpec(
        "COVENANT_ENV",
        "choice",
        "development",
        "Deployment environment; `production` forbids contract overrides. "
        "An unrecognised value is treated as production (fail closed).",
        choices=("development", "test", "staging", "production"),
        invalid_choice="production",
    ),
    SettingSpec(
        "COVENANT_HOME",
        "str",
        "",
        "Directory of embedded clusters; empty: .covenant/ in the checkout.",
    ),
    SettingSpec(
        "COVENANT_PG_BINDIR",
        "str",
        "",
        "Directory of initdb/pg_ctl/postgres for the embedded cluster; "
        "empty: PATH, then pg_config, then /usr/lib/postgresql/*/bin.",
    ),
    SettingSpec(
        "COVENANT_PG_OS_USER",
        "str",
        "",
        "OS user that runs the embedded server when covenant runs as root; "
        "empty: postgres if it exists, else a system user covenant-pg.",
    ),
    SettingSpec(
        "COVENANT_POOL_MIN_SIZE",
        "int",
        1,
        "Connections the pool keeps open.",
        minimum=0,
        maximum=100,
    ),
    SettingSpec(
        "COVENANT_POOL_MAX_SIZE",
        "int",
        10,
        "Most connections the pool opens.",
        minimum=1,
        maximum=1000,
    ),
    SettingSpec(
        "COVENANT_CONNECT_TIMEOUT_S",
        "int",
        10,
        "Seconds to wait for a new database connection.",
        minimum=1,
        maximum=300,
    ),
    SettingSpec(
        "COVENANT_RETRY_MAX_ATTEMPTS",
        "int",
        3,
        "Tries of a transaction that fails with 40001/40P01 (first try included).",
        minimum=1,
        maximum=10,
    ),
    SettingSpec(
        "COVENANT_RETRY_BASE_DELAY_MS",
        "int",
        20,
        "First retry backoff in ms; doubles each try, with full jitter.",
        minimum=1,
        maximum=10_000,
    ),
    SettingSpec(
        "COVENANT_MIGRATE_LOCK_TIMEOUT_S",
        "int",
        30,
        "Seconds `covenant migrate` waits for the migration advisory lock.",
        minimum=1,
        maximum=3600,
    ),
    SettingSpec(
        "COVENANT_CONTRACT_PATH",
        "str",
        "",
        "Dynamic contract override file; empty: the contract shipped with the package.",
    ),
    SettingSpec(
        "COVENANT_ALLOW_CONTRACT_OVERRIDE",
        "bool",
        False,
        "Allow COVENANT_CONTRACT_PATH to replace the shipped contract (never in production).",
    ),
    SettingSpec(
        "COVENANT_METRICS_PORT",
        "int",
        9464,
        "Port of `covenant serve` (/health, /health/governance, /metrics).",
        minimum=1,
        maximum=65535,
    ),
    SettingSpec(
        "COVENANT_SERVE_HOST",
        "str",
        "127.0.0.1",
        "Address `covenant serve` binds; 0.0.0.0 to be reachable from outside "
        "(containers, a Prometheus on another host).",
    ),
    SettingSpec(
        "COVENANT_SHUTDOWN_GRACE_S",
        "int",
        10,
        "Seconds `covenant serve` lets in-flight requests finish after SIGTERM/SIGINT.",
        minimum=0,
        maximum=300,
    ),
    SettingSpec(
        "COVENANT_HEALTH_TIMEOUT_S",
        "int",
        5,
        "Seconds a /health, /health/governance or /metrics request may spend on the database.",
        minimum=1,
        maximum=60,
    ),
    SettingSpec(
        "COVENANT_RECONCILE_INTERVAL_S",
        "int",
        300,
        "Seconds between the reconciliations `covenant serve` runs for /health/governance.",
        minimum=1,
        maximum=86_400,
    ),
    SettingSpec(
        "COVENANT_OTEL_ENABLED",
        "bool",
        False,
        "Emit OpenTelemetry spans (sanitized) through the application's tracer provider; "
        "needs the otel extra.",
    ),
    SettingSpec(
        "COVENANT_LOG_LEVEL",
        "choice",
        "INFO",
        "Log level of the covenant loggers.",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    ),
)

BY_NAME: dict[str, SettingSpec] = {spec.name: spec for spec in SPECS}

_DIGITS = re.compile(r"[0-9]+")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class Settings(BaseModel):
    """The parsed configuration (immutable)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: str
    test_database_url: str
    env: str
    home: str
    pg_bindir: str
    pg_os_user: str
    pool_min_size: int
    pool_max_size: int
    connect_timeout_s: int
    retry_max_attempts: int
    retry_base_delay_ms: int
    migrate_lock_timeout_s: int
    contract_path: str
    allow_contract_override: bool
    metrics_port: int
    serve_host: str
    shutdown_grace_s: int
    health_timeout_s: int
    reconcile_interval_s: int
    otel_enabled: bool
    log_level: str


def parse_int(spec: SettingSpec, raw: str) -> int:
    """Strict integer: digits only; bad or negative → default; out of range → clamped."""
    assert isinstance(spec.default, int)
    text = raw.strip()
    if not _DIGITS.fullmatch(text):
        kind = "negative" if re.fullmatch(r"-[0-9]+", text) else "not a whole number"
        log.warning("%s=%r is %s; using the default %s", spec.name, raw, kind, spec.default)
        return spec.default
    value = int(text)
    lo = spec.minimum if spec.minimum is not None else value
    hi = spec.maximum if spec.maximum is not None else value
    if value < lo or value > hi:
        clamped = min(max(value, lo), hi)
        log.warning("%s=%s is outside %s..%s; clamped to %s", spec.name, value, lo, hi, clamped)
        return clamped
    return value


def parse_bool(spec: SettingSpec, raw: str) -> bool:
    assert isinstance(spec.default, bool)
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    log.warning("%s=%r is not a boolean; using the default %s", spec.name, raw, spec.default)
    return spec.default


def parse_choice(spec: SettingSpec, raw: str) -> str:
    text = raw.strip()
    for choice in spec.choices:
        if text.lower() == choice.lower():
            return choice
    fallback = spec.default if spec.invalid_choice is None else spec.invalid_choice
    log.warning(
        "%s=%r is not one of %s; using %s",
        spec.name,
        raw,
        "|".join(spec.choices),
        fallback,
    )
    return str(fallback)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every ``COVENANT_*`` variable from ``environ`` (default: os.environ)."""
    env = os.environ if environ is None else environ
    values: dict[str, str | int | bool] = {}
    for spec in SPECS:
        raw = env.get(spec.name)
        if raw is None or (raw.strip() == "" and spec.kind != "str"):
            values[spec.field] = spec.default
        elif spec.kind == "int":
            values[spec.field] = parse_int(spec, raw)
        elif spec.kind == "bool":
            values[spec.field] = parse_bool(spec, raw)
        elif spec.kind == "choice":
            values[spec.field] = parse_choice(spec, raw)
        else:
            values[spec.field] = raw.strip()
    settings = Settings.model_validate(values)
    if settings.pool_min_size > settings.pool_max_size:
        log.warning(
            "COVENANT_POOL_MIN_SIZE=%s exceeds COVENANT_POOL_MAX_SIZE=%s; using %s for both",
            settings.pool_min_size,
            settings.pool_max_size,
            settings.pool_max_size,
        )
        settings = settings.model_copy(update={"pool_min_size": settings.pool_max_size})
    return settings


def _default_text(spec: SettingSpec) -> str:
    if isinstance(spec.default, bool):
        return "true" if spec.default else "false"
    return str(spec.default)


def env_example() -> str:
    """The text of ``.env.example``: every variable with type, default and meaning."""
    lines = [
        "# covenant configuration. Every variable covenant reads, generated from",
        "# python/covenant/config.py by `covenant config example > .env.example`.",
        "# Integers: plain digits; a non-number or negative value falls back to the",
        "# default with a warning, a value out of range is clamped with a warning.",
        "",
    ]
    for spec in SPECS:
        lines.append(f"# {spec.meaning}")
        lines.append(f"# type: {spec.type_text()}; default: {_default_text(spec) or '(empty)'}")
        lines.append(f"{spec.name}={_default_text(spec)}")
        lines.append("")
    return "\n".join(lines)
