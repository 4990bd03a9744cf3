"""Dynamic contracts: the shipped one, the six failure modes, overrides, surfaces, the CLI gate.

No database is needed: a contract is a file and a pure function of it.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from covenant import contracts
from covenant.catalogue import REPUTATION_RANK, ReputationState
from covenant.config import Settings, load_settings
from covenant.contracts import (
    MAX_OVERRIDE_BYTES,
    ContractError,
    ContractMissingError,
    ContractNotMonotonicError,
    ContractOverrideNotAllowedError,
    ContractOverrideTooLargeError,
    ContractSchemaError,
    ContractUnparsableError,
    DynamicContract,
    cli_validate,
    is_capability_granted,
    is_schema_granted,
    load_contract,
    read_contract_file,
    resolve_surface,
    validate_contract_file,
)

STATES = sorted(ReputationState, key=REPUTATION_RANK.__getitem__)
SECRET = "tools.secretsauce"  # a name that must never reach a log line


def shipped_document() -> dict[str, Any]:
    text = resources.files("covenant").joinpath("default_contract.json").read_text("utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


def override_document() -> dict[str, Any]:
    """A valid contract that differs from the shipped one (and names SECRET)."""
    doc = shipped_document()
    doc["contract_id"] = "tenant-override"
    doc["surfaces"]["authoritative"]["capabilities"].append(SECRET)
    return doc


def write(path: Path, doc: dict[str, Any] | str | bytes) -> Path:
    if isinstance(doc, bytes):
        path.write_bytes(doc)
    else:
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2), "utf-8")
    return path


def settings(**env: str) -> Settings:
    return load_settings({f"COVENANT_{k.upper()}": v for k, v in env.items()})


def allowing(path: Path | str) -> Settings:
    return settings(contract_path=str(path), allow_contract_override="true")


def contract_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "covenant.contracts"]


# -- the shipped contract -----------------------------------------------------


def test_shipped_contract_loads_and_is_monotonic() -> None:
    contract = load_contract(settings=settings())
    assert contract.contract_id == "covenant-default"
    assert contracts.monotonicity_violations(contract) == []
    assert contracts.is_monotonic(contract)
    assert contract == contracts.shipped_contract()
    assert contract == DynamicContract.model_validate(shipped_document())
    surfaces = [resolve_surface(contract, s) for s in STATES]
    for lower, higher in itertools.pairwise(surfaces):
        assert lower.capabilities <= higher.capabilities
        assert lower.schemas <= higher.schemas
        assert (lower.capabilities, lower.schemas) != (higher.capabilities, higher.schemas)
        assert lower.limits.max_reservation_micro <= higher.limits.max_reservation_micro
    cold, authoritative = surfaces[0], surfaces[-1]
    assert {"inference.basic", "tools.read", "credits.reserve"} <= cold.capabilities
    assert "usage-report/v1" in cold.schemas
    assert "inference.frontier" in authoritative.capabilities - cold.capabilities
    assert contract.capabilities == authoritative.capabilities


def test_shipped_contract_is_well_under_the_override_limit() -> None:
    size = len(resources.files("covenant").joinpath("default_contract.json").read_bytes())
    assert 0 < size < MAX_OVERRIDE_BYTES // 4


def test_production_without_an_override_loads_the_shipped_contract() -> None:
    contract = load_contract(settings=settings(env="production", allow_contract_override="true"))
    assert contract.contract_id == "covenant-default"


# -- the six failure modes ----------------------------------------------------

Case = Callable[[Path], tuple[str | None, Settings]]


def _missing(tmp: Path) -> tuple[str | None, Settings]:
    return None, allowing(tmp / "nowhere.json")


def _unparsable(tmp: Path) -> tuple[str | None, Settings]:
    path = write(tmp / "c.json", '{"contract_id": "x", "surfaces": {')
    return None, allowing(path)


def _schema_invalid(tmp: Path) -> tuple[str | None, Settings]:
    doc = override_document()
    doc["surfaces"]["cold"]["capabilities"].append("Tools/READ")
    return str(write(tmp / "c.json", doc)), settings(allow_contract_override="true")


def _non_monotonic(tmp: Path) -> tuple[str | None, Settings]:
    doc = override_document()
    doc["surfaces"]["warming"]["capabilities"].remove("tools.read")
    doc["surfaces"]["cold"]["capabilities"].append(SECRET)
    doc["surfaces"]["warming"]["capabilities"].append(SECRET)
    doc["surfaces"]["established"]["capabilities"].append(SECRET)
    return None, allowing(write(tmp / "c.json", doc))


def _not_allowed(tmp: Path) -> tuple[str | None, Settings]:
    path = write(tmp / "c.json", override_document())
    return None, settings(contract_path=str(path))


def _too_large(tmp: Path) -> tuple[str | None, Settings]:
    path = write(tmp / "c.json", b"{" + b" " * MAX_OVERRIDE_BYTES + b"}")
    return None, allowing(path)


FAILURES: list[tuple[str, type[ContractError], Case]] = [
    ("missing", ContractMissingError, _missing),
    ("unparsable", ContractUnparsableError, _unparsable),
    ("schema_invalid", ContractSchemaError, _schema_invalid),
    ("non_monotonic", ContractNotMonotonicError, _non_monotonic),
    ("override_not_allowed", ContractOverrideNotAllowedError, _not_allowed),
    ("override_too_large", ContractOverrideTooLargeError, _too_large),
]


def test_failure_modes_are_distinct() -> None:
    classes = [cls for _, cls, _ in FAILURES]
    assert tuple(classes) == contracts.FAILURE_MODES
    assert len(set(classes)) == 6 and all(issubclass(c, ContractError) for c in classes)
    assert [c.mode for c in classes] == [mode for mode, _, _ in FAILURES]
    codes = [c.exit_code for c in classes]
    assert codes == [3, 4, 5, 6, 7, 8] and not {0, 1, 2} & set(codes)
    assert len({c.name for c in classes}) == 6
    for cls in classes:  # no mode is a special case of another
        assert not any(issubclass(cls, other) for other in classes if other is not cls)


@pytest.mark.parametrize(("mode", "cls", "case"), FAILURES, ids=[f[0] for f in FAILURES])
def test_each_failure_mode_raises_its_class_and_logs_one_line(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    cls: type[ContractError],
    case: Case,
) -> None:
    path, config = case(tmp_path)
    caplog.set_level(logging.DEBUG, logger="covenant.contracts")
    with pytest.raises(ContractError) as raised:
        load_contract(path, settings=config)
    assert type(raised.value) is cls
    assert raised.value.mode == mode and raised.value.exit_code == contracts.EXIT_CODES[mode]
    expected_path = path or config.contract_path
    assert raised.value.path == expected_path and raised.value.detail
    records = contract_records(caplog)
    assert len(records) == 1
    (record,) = records
    assert record.levelno == logging.ERROR
    assert record.__dict__["mode"] == mode
    assert record.__dict__["path"] == expected_path
    assert record.__dict__["detail"] == raised.value.detail
    assert mode in record.getMessage()
    # the log line carries no contract contents, and no pydantic text is chained
    assert SECRET not in record.getMessage() and "tools.read" not in record.getMessage()
    assert "Tools/READ" not in record.getMessage()
    assert raised.value.__cause__ is None


def test_missing_also_covers_directories_and_the_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ContractMissingError, match="not a regular file"):
        load_contract(settings=allowing(tmp_path))
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # opening must not block waiting for a writer
    with pytest.raises(ContractMissingError, match="not a regular file"):
        load_contract(settings=allowing(fifo))
    with pytest.raises(ContractMissingError, match="cannot be opened"):
        load_contract(settings=allowing(write(tmp_path / "f", "{}") / "below"))
    # a NUL byte (from the Python API) is a name no file has, not a ValueError
    with pytest.raises(ContractMissingError, match="cannot be opened"):
        load_contract(settings=allowing(f"{tmp_path}/c\0.json"))
    assert cli_validate(f"{tmp_path}/c\0.json") == ContractMissingError.exit_code


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b'{"contract_id": "a",}',
        b"\xff\xfe{}",
        b'{"contract_id": "a", "contract_id": "b"}',
        b'{"version": NaN}',
        b"[" * 50_000 + b"]" * 10_000,
    ],
    ids=["empty", "text", "trailing-comma", "not-utf8", "duplicate-key", "nan", "deep"],
)
def test_unparsable_variants(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(ContractUnparsableError):
        read_contract_file(write(tmp_path / "c.json", content))


def _mutate(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    doc = copy.deepcopy(shipped_document())
    change(doc)
    return doc


SCHEMA_INVALID: dict[str, dict[str, Any] | list[Any]] = {
    "top-level-array": [],
    "missing-state": _mutate(lambda d: d["surfaces"].pop("warming")),
    "unknown-state": _mutate(lambda d: d["surfaces"].update(legendary=d["surfaces"]["cold"])),
    "unknown-key": _mutate(lambda d: d.update(owner="ops")),
    "unknown-surface-key": _mutate(lambda d: d["surfaces"]["cold"].update(tier=1)),
    "missing-limits": _mutate(lambda d: d["surfaces"]["cold"].pop("limits")),
    "capability-pattern": _mutate(lambda d: d["surfaces"]["cold"]["capabilities"].append("tools")),
    "schema-pattern": _mutate(lambda d: d["surfaces"]["cold"]["schemas"].append("usage-report")),
    "duplicate-capability": _mutate(
        lambda d: d["surfaces"]["cold"]["capabilities"].append("tools.read")
    ),
    "capabilities-object": _mutate(
        lambda d: d["surfaces"]["cold"].update(capabilities={"tools.read": True})
    ),
    "version-number": _mutate(lambda d: d.update(version=1)),
    "version-not-semver": _mutate(lambda d: d.update(version="1.0")),
    "contract-id": _mutate(lambda d: d.update(contract_id="Default Contract")),
    "negative-limit": _mutate(
        lambda d: d["surfaces"]["cold"]["limits"].update(max_reservation_micro=-1)
    ),
    "bool-limit": _mutate(
        lambda d: d["surfaces"]["cold"]["limits"].update(requests_per_minute=True)
    ),
    "string-limit": _mutate(
        lambda d: d["surfaces"]["cold"]["limits"].update(max_reservation_micro="100")
    ),
    "float-limit": _mutate(
        lambda d: d["surfaces"]["cold"]["limits"].update(max_reservation_micro=1.5)
    ),
    "limit-over-bigint": _mutate(
        lambda d: d["surfaces"]["authoritative"]["limits"].update(max_reservation_micro=2**63)
    ),
}


@pytest.mark.parametrize("name", sorted(SCHEMA_INVALID))
def test_schema_invalid_variants(tmp_path: Path, name: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(SCHEMA_INVALID[name]), "utf-8")
    with pytest.raises(ContractSchemaError) as raised:
        read_contract_file(path)
    assert raised.value.detail  # says where, e.g. "surfaces.cold.limits..."


NON_MONOTONIC: dict[str, tuple[dict[str, Any], str]] = {
    "capability-taken-away": (
        _mutate(lambda d: d["surfaces"]["established"]["capabilities"].remove("memory.read")),
        "established vs warming: lacks 1 capability(ies) and 0 schema(s)",
    ),
    "schema-taken-away": (
        _mutate(lambda d: d["surfaces"]["authoritative"]["schemas"].remove("usage-report/v1")),
        "authoritative vs established: lacks 0 capability(ies) and 1 schema(s)",
    ),
    "equal-surfaces": (
        _mutate(lambda d: d["surfaces"].update(warming={**d["surfaces"]["cold"]})),
        "warming vs cold: adds no capability or schema",
    ),
    "limit-lowered": (
        _mutate(lambda d: d["surfaces"]["established"]["limits"].update(max_concurrent_requests=2)),
        "established vs warming: lowers limit(s) max_concurrent_requests",
    ),
}


@pytest.mark.parametrize("name", sorted(NON_MONOTONIC))
def test_non_monotonic_variants(tmp_path: Path, name: str) -> None:
    doc, message = NON_MONOTONIC[name]
    with pytest.raises(ContractNotMonotonicError) as raised:
        read_contract_file(write(tmp_path / "c.json", doc))
    assert message in raised.value.detail
    assert len(raised.value.violations) >= 1


def test_violations_keep_the_names_for_programs() -> None:
    doc = _mutate(lambda d: d["surfaces"]["established"]["capabilities"].remove("memory.read"))
    contract = DynamicContract.model_validate(doc)
    (violation,) = contracts.monotonicity_violations(contract)
    assert violation.lower is ReputationState.WARMING
    assert violation.higher is ReputationState.ESTABLISHED
    assert violation.missing_capabilities == {"memory.read"}
    assert "memory.read" not in violation.describe()


# -- overrides ----------------------------------------------------------------


@pytest.mark.parametrize("env", ["development", "test", "staging", "production"])
@pytest.mark.parametrize("allow", ["true", "false", ""])
def test_override_matrix(tmp_path: Path, env: str, allow: str) -> None:
    path = write(tmp_path / "c.json", override_document())
    config = settings(env=env, allow_contract_override=allow, contract_path=str(path))
    if allow == "true" and env != "production":
        assert load_contract(settings=config).contract_id == "tenant-override"
    else:
        with pytest.raises(ContractOverrideNotAllowedError) as raised:
            load_contract(settings=config)
        assert ("production" in raised.value.detail) == (env == "production")
    # without a path every combination loads the shipped contract
    shipped = settings(env=env, allow_contract_override=allow)
    assert load_contract(settings=shipped).contract_id == "covenant-default"


def test_explicit_path_is_an_override_too(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", override_document())
    with pytest.raises(ContractOverrideNotAllowedError):
        load_contract(path, settings=settings())
    allowed = settings(allow_contract_override="true", contract_path="/elsewhere.json")
    assert load_contract(path, settings=allowed).contract_id == "tenant-override"


def test_production_refuses_before_opening_the_file(tmp_path: Path) -> None:
    config = settings(
        env="production",
        allow_contract_override="true",
        contract_path=str(tmp_path / "absent.json"),
    )
    with pytest.raises(ContractOverrideNotAllowedError):
        load_contract(settings=config)


def test_override_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "c.json", override_document())
    monkeypatch.setenv("COVENANT_CONTRACT_PATH", str(path))
    monkeypatch.setenv("COVENANT_ALLOW_CONTRACT_OVERRIDE", "true")
    monkeypatch.setenv("COVENANT_ENV", "staging")
    assert load_contract().contract_id == "tenant-override"
    monkeypatch.setenv("COVENANT_ENV", "production")
    with pytest.raises(ContractOverrideNotAllowedError):
        load_contract()


# -- the 64 KiB limit ---------------------------------------------------------


def _padded(size: int) -> bytes:
    body = json.dumps(override_document()).encode()
    assert len(body) < size
    return body + b" " * (size - len(body))  # trailing whitespace is valid JSON


def test_exactly_64_kib_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", _padded(MAX_OVERRIDE_BYTES))
    assert path.stat().st_size == 65_536
    assert load_contract(settings=allowing(path)).contract_id == "tenant-override"
    assert validate_contract_file(path) == 0


def test_one_byte_over_64_kib_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", _padded(MAX_OVERRIDE_BYTES + 1))
    assert path.stat().st_size == 65_537
    with pytest.raises(ContractOverrideTooLargeError):
        load_contract(settings=allowing(path))


def test_size_is_checked_before_parsing(tmp_path: Path) -> None:
    # garbage that is also too large: the size wins, so it was never parsed
    path = write(tmp_path / "c.json", b"\xff" * (MAX_OVERRIDE_BYTES + 1))
    with pytest.raises(ContractOverrideTooLargeError):
        load_contract(settings=allowing(path))
    # a huge (sparse) file is refused without being read in full
    huge = tmp_path / "huge.json"
    with huge.open("wb") as handle:
        handle.truncate(8 * 2**30)
    with pytest.raises(ContractOverrideTooLargeError):
        read_contract_file(huge)


# -- surfaces -----------------------------------------------------------------


def test_resolve_surface_per_state() -> None:
    contract = contracts.shipped_contract()
    for state in STATES:
        surface = resolve_surface(contract, state)
        assert surface == getattr(contract.surfaces, state.value)
        assert resolve_surface(contract, state.value) == surface
        assert contract.surface(state) == surface
    assert len({resolve_surface(contract, s).capabilities for s in STATES}) == 4


@pytest.mark.parametrize("state", [None, "", "AUTHORITATIVE", "Established", "root", "admin"])
def test_unknown_states_fail_closed_to_cold(
    caplog: pytest.LogCaptureFixture, state: str | None
) -> None:
    contract = contracts.shipped_contract()
    caplog.set_level(logging.WARNING, logger="covenant.contracts")
    assert resolve_surface(contract, state) == contract.surfaces.cold
    warnings = contract_records(caplog)
    assert len(warnings) == (0 if state is None else 1)


def test_is_capability_granted_filters_exactly() -> None:
    contract = contracts.shipped_contract()
    cold = resolve_surface(contract, "cold")
    top = resolve_surface(contract, ReputationState.AUTHORITATIVE)
    assert is_capability_granted(cold, "inference.basic")
    assert not is_capability_granted(cold, "inference.frontier")
    assert is_capability_granted(top, "inference.frontier")
    for near_miss in ("inference", "inference.", "Inference.basic", "inference.basic ", "*"):
        assert not is_capability_granted(top, near_miss)
    assert not is_capability_granted(top, None)  # type: ignore[arg-type]
    assert is_schema_granted(cold, "usage-report/v1")
    assert not is_schema_granted(cold, "revenue-share/v1")
    assert is_schema_granted(top, "revenue-share/v1")
    assert not is_schema_granted(top, "usage-report/v2")


# -- the pre-deploy gate ------------------------------------------------------


def test_cli_validate_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shipped = resources.files("covenant").joinpath("default_contract.json")
    path = write(tmp_path / "c.json", shipped.read_bytes())
    assert cli_validate(str(path)) == 0
    out, err = capsys.readouterr()
    assert out == "contract covenant-default v1.0.0: valid (4 surfaces, 18 capabilities)\n"
    assert err == ""
    assert validate_contract_file(path) == 0


@pytest.mark.parametrize(("mode", "cls", "case"), FAILURES, ids=[f[0] for f in FAILURES])
def test_cli_validate_exit_code_per_mode(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    mode: str,
    cls: type[ContractError],
    case: Case,
) -> None:
    path, config = case(tmp_path)
    target = path or config.contract_path
    caplog.set_level(logging.DEBUG, logger="covenant.contracts")
    code = cli_validate(target, as_override=True, settings=config)
    out, err = capsys.readouterr()
    assert code == cls.exit_code
    assert out == ""
    assert err.count("\n") == 1 and f": invalid: {mode}: " in err
    assert err.startswith(f"contract {target}: ")
    assert contract_records(caplog) == []  # the printed line is the report
    if cls is not ContractOverrideNotAllowedError:  # a property of the file alone
        assert cli_validate(target) == cls.exit_code
        assert validate_contract_file(target) == cls.exit_code
        capsys.readouterr()


def test_cli_validate_as_override_accepts_when_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "c.json", override_document())
    assert cli_validate(str(path), as_override=True, settings=allowing(path)) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("contract tenant-override v1.0.0: valid (4 surfaces, 19 capabilities)")
    production = settings(env="production", allow_contract_override="true")
    assert cli_validate(str(path), as_override=True, settings=production) == 7
