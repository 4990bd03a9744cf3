"""Strict configuration parsing and the .env.example contract."""

from __future__ import annotations

import logging
import re

import pytest
from conftest import ROOT

from covenant.config import BY_NAME, SPECS, Settings, env_example, load_settings
from covenant.contracts import ContractOverrideNotAllowedError, load_contract


def test_defaults() -> None:
    s = load_settings({})
    assert s.pool_max_size == 10
    assert s.retry_max_attempts == 3
    assert s.migrate_lock_timeout_s == 30
    assert s.allow_contract_override is False
    assert s.env == "development"


@pytest.mark.parametrize("raw", ["abc", "1.5", "1e3", "", "  ", "+5", "0x10", "５"])  # noqa: RUF001 - a non-ASCII digit int() accepts
def test_non_numbers_fall_back_to_default_with_a_warning(
    raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="covenant.config"):
        s = load_settings({"COVENANT_POOL_MAX_SIZE": raw})
    assert s.pool_max_size == 10
    if raw.strip():
        assert "COVENANT_POOL_MAX_SIZE" in caplog.text
        assert "using the default 10" in caplog.text


def test_negative_falls_back_to_default(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="covenant.config"):
        s = load_settings({"COVENANT_RETRY_MAX_ATTEMPTS": "-2"})
    assert s.retry_max_attempts == 3
    assert "is negative" in caplog.text


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("COVENANT_RETRY_MAX_ATTEMPTS", "0", 1),
        ("COVENANT_RETRY_MAX_ATTEMPTS", "99", 10),
        ("COVENANT_METRICS_PORT", "70000", 65535),
        ("COVENANT_MIGRATE_LOCK_TIMEOUT_S", "100000", 3600),
        ("COVENANT_POOL_MAX_SIZE", " 25 ", 25),
        ("COVENANT_POOL_MAX_SIZE", "99999999999999999999999", 1000),
    ],
)
def test_out_of_range_is_clamped(
    name: str, raw: str, expected: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="covenant.config"):
        s = load_settings({name: raw})
    assert getattr(s, BY_NAME[name].field) == expected
    if str(expected) != raw.strip():
        assert "clamped" in caplog.text


def test_pool_min_above_max_is_lowered(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="covenant.config"):
        s = load_settings({"COVENANT_POOL_MIN_SIZE": "50", "COVENANT_POOL_MAX_SIZE": "5"})
    assert (s.pool_min_size, s.pool_max_size) == (5, 5)
    assert "exceeds" in caplog.text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("0", False),
        ("maybe", False),
    ],
)
def test_booleans(raw: str, expected: bool) -> None:
    assert load_settings({"COVENANT_ALLOW_CONTRACT_OVERRIDE": raw}).allow_contract_override is (
        expected
    )


def test_choices(caplog: pytest.LogCaptureFixture) -> None:
    assert load_settings({"COVENANT_ENV": "PRODUCTION"}).env == "production"
    with caplog.at_level(logging.WARNING, logger="covenant.config"):
        assert load_settings({"COVENANT_LOG_LEVEL": "loud"}).log_level == "INFO"
    assert "not one of" in caplog.text and "using INFO" in caplog.text


def test_a_mistyped_environment_fails_closed_to_production(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="covenant.config"):
        assert load_settings({"COVENANT_ENV": "prod"}).env == "production"
    assert "using production" in caplog.text
    # ... so an override allowed by the flag is still refused there
    settings = load_settings(
        {
            "COVENANT_ENV": "prodcution",
            "COVENANT_ALLOW_CONTRACT_OVERRIDE": "true",
            "COVENANT_CONTRACT_PATH": "/etc/covenant/contract.json",
        }
    )
    with pytest.raises(ContractOverrideNotAllowedError):
        load_contract(settings=settings)


def test_settings_model_and_specs_list_the_same_variables() -> None:
    assert {spec.field for spec in SPECS} == set(Settings.model_fields)
    assert all(spec.name.startswith("COVENANT_") for spec in SPECS)


def test_env_example_lists_exactly_the_settings_with_type_default_and_meaning() -> None:
    text = (ROOT / ".env.example").read_text()
    assert text == env_example(), "regenerate with: make env-example"
    names = re.findall(r"^(COVENANT_[A-Z0-9_]+)=", text, flags=re.MULTILINE)
    assert sorted(names) == sorted(spec.name for spec in SPECS)
    for spec in SPECS:
        block = text.split(f"\n{spec.name}=")[0].rsplit("\n\n", 1)[-1]
        assert "# type:" in block and "default:" in block, spec.name
        assert spec.meaning in block


def test_every_covenant_variable_read_by_the_package_is_a_setting() -> None:
    """No module reads a COVENANT_* variable that .env.example does not list."""
    used: set[str] = set()
    for path in (ROOT / "python" / "covenant").rglob("*.py"):
        used |= set(re.findall(r"[\"'](COVENANT_[A-Z0-9_]+)[\"']", path.read_text()))
    assert used <= set(BY_NAME), used - set(BY_NAME)
