"""``covenant contract validate|show`` as a deploy pipeline runs them: a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from covenant.contracts import EXIT_CODES, MAX_OVERRIDE_BYTES, shipped_contract

SHIPPED = Path(__file__).resolve().parents[1] / "covenant" / "default_contract.json"


def covenant(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COVENANT_")}
    return subprocess.run(
        [sys.executable, "-m", "covenant.cli", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
        check=False,
    )


def test_validate_accepts_the_shipped_contract() -> None:
    done = covenant("contract", "validate", str(SHIPPED))
    assert done.returncode == 0, done.stderr
    assert "covenant-default" in done.stdout and "valid" in done.stdout


def non_monotonic(tmp_path: Path) -> Path:
    document = json.loads(SHIPPED.read_text())
    document["surfaces"]["warming"]["capabilities"].remove("inference.basic")
    path = tmp_path / "non_monotonic.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("mode", "content"),
    [
        ("missing", None),
        ("unparsable", "{"),
        ("schema_invalid", '{"contract_id": "x"}'),
        ("non_monotonic", "NON_MONOTONIC"),
        ("override_too_large", " " * (MAX_OVERRIDE_BYTES + 1)),
    ],
)
def test_validate_names_each_failure_mode_with_its_exit_code(
    tmp_path: Path, mode: str, content: str | None
) -> None:
    path = tmp_path / "contract.json"
    if content == "NON_MONOTONIC":
        path = non_monotonic(tmp_path)
    elif content is not None:
        path.write_text(content)
    done = covenant("contract", "validate", str(path))
    assert done.returncode == EXIT_CODES[mode], (done.stdout, done.stderr)
    assert mode in done.stderr
    assert done.stdout == ""


def test_validate_as_override_in_production_is_refused() -> None:
    done = covenant(
        "contract",
        "validate",
        str(SHIPPED),
        "--as-override",
        COVENANT_ENV="production",
        COVENANT_ALLOW_CONTRACT_OVERRIDE="true",
    )
    assert done.returncode == EXIT_CODES["override_not_allowed"]
    assert "override_not_allowed" in done.stderr


def test_show_prints_every_surface_and_one_on_request() -> None:
    done = covenant("contract", "show")
    assert done.returncode == 0, done.stderr
    surfaces = json.loads(done.stdout)
    contract = shipped_contract()
    assert list(surfaces) == ["cold", "warming", "established", "authoritative"]
    for state, surface in surfaces.items():
        assert surface["capabilities"] == sorted(contract.surface(state).capabilities)
    one = covenant("contract", "show", "--state", "warming")
    assert list(json.loads(one.stdout)) == ["warming"]
    assert covenant("contract", "show", "--state", "root").returncode == 2


def test_show_refuses_an_override_that_is_not_allowed(tmp_path: Path) -> None:
    done = covenant("contract", "show", "--file", str(non_monotonic(tmp_path)))
    assert done.returncode == EXIT_CODES["override_not_allowed"]
    assert "override_not_allowed" in done.stderr
