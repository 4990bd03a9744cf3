"""Dynamic contracts: which protocol surface each reputation state may use.

A dynamic contract is a JSON document (schema: :class:`DynamicContract`,
reference: ``docs/contracts.md``) giving, for each reputation state
``cold < warming < established < authoritative``, a **surface**: the
capabilities an agent in that state may use, the message schemas it may
speak, and its limits. The package ships a real one
(``covenant/default_contract.json``).

Monotonic expansion, formally. Write the states in rank order
``s0 < s1 < s2 < s3`` (:data:`covenant.catalogue.REPUTATION_RANK`) and the
surface of ``si`` as ``(Ci, Ki, Li)``: capability names, schema names and
limits. The grant of ``si`` is the tagged union
``Gi = {("capability", c) for c in Ci} | {("schema", k) for k in Ki}``. The
contract is monotonic iff for i = 1, 2, 3::

    C(i-1) ⊆ Ci  and  K(i-1) ⊆ Ki        (nothing granted below is taken away)
    G(i-1) ⊊ Gi                           (the surface strictly grows)
    L(i-1)[l] ≤ Li[l] for every limit l   (limits never tighten going up)

By transitivity the same holds for every pair of states, not only adjacent
ones, so ``granted(lower) ⊆ granted(higher)`` always. "Strict superset of
surfaces" means the *surface* (capabilities and schemas together) grows at
each step: a step may add only capabilities or only schemas, but never
nothing; requiring both to grow at every step would force contracts to pad
states with dummy names.

Loading is fail-closed and fatal: each of the six failure modes is its own
exception class (base :class:`ContractError`, stable ``.mode`` and
``.exit_code``), and :func:`load_contract` emits exactly one structured log
line per failure (logger ``covenant.contracts``, ``extra`` fields ``mode``,
``path`` and ``detail``). Details name rules and positions, never the
contract's values, and pydantic's errors are not chained (their text holds
the input).

An override (``COVENANT_CONTRACT_PATH``) replaces the shipped contract only
when ``COVENANT_ALLOW_CONTRACT_OVERRIDE`` is true and ``COVENANT_ENV`` is not
``production``; its size is checked before it is parsed (at most 64 KiB + 1
bytes are ever read).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import stat
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, ClassVar, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    field_validator,
)

from covenant.catalogue import REPUTATION_RANK, ReputationState
from covenant.config import Settings, load_settings
from covenant.errors import CovenantError
from covenant.money import BIGINT_MAX

log = logging.getLogger("covenant.contracts")

MAX_OVERRIDE_BYTES: Final = 64 * 1024
SHIPPED_CONTRACT: Final = "default_contract.json"
SHIPPED_SOURCE: Final = f"package:covenant/{SHIPPED_CONTRACT}"

# Names, as regular expressions (pydantic anchors nothing; these are anchored).
CONTRACT_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
VERSION_PATTERN: Final = r"^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})$"
# ``inference.basic``, ``tools.read``, ``credits.reserve``: 2 to 4 dotted segments.
CAPABILITY_PATTERN: Final = r"^[a-z][a-z0-9_]{0,31}(\.[a-z][a-z0-9_]{0,31}){1,3}$"
# ``usage-report/v1``: a kebab-case name and a major version.
SCHEMA_PATTERN: Final = r"^[a-z][a-z0-9-]{0,63}/v[1-9][0-9]{0,3}$"
MAX_NAMES_PER_SURFACE: Final = 256

# States in rank order, lowest first.
STATES: Final = tuple(sorted(REPUTATION_RANK, key=REPUTATION_RANK.__getitem__))

ContractId = Annotated[str, StringConstraints(strict=True, pattern=CONTRACT_ID_PATTERN)]
Version = Annotated[str, StringConstraints(strict=True, pattern=VERSION_PATTERN)]
CapabilityName = Annotated[str, StringConstraints(strict=True, pattern=CAPABILITY_PATTERN)]
SchemaName = Annotated[str, StringConstraints(strict=True, pattern=SCHEMA_PATTERN)]
Description = Annotated[StrictStr, Field(max_length=500)]


# -- the schema ---------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SurfaceLimits(_Strict):
    """Per-state limits; each is non-decreasing from one state to the next.

    ``max_reservation_micro`` is enforced by :mod:`covenant.requests` (a
    larger reservation fails the request before anything is reserved); the
    rate and concurrency limits are for the gateway in front of covenant.
    """

    max_reservation_micro: Annotated[StrictInt, Field(ge=0, le=BIGINT_MAX)]
    requests_per_minute: Annotated[StrictInt, Field(ge=1, le=1_000_000)]
    max_concurrent_requests: Annotated[StrictInt, Field(ge=1, le=100_000)]


def _no_duplicates(value: Any) -> Any:
    if isinstance(value, list):
        try:
            distinct = len(set(value))
        except TypeError:  # unhashable items: let the item type report them
            return value
        if distinct != len(value):
            raise ValueError("names must be unique")
    return value


class Surface(_Strict):
    """What one reputation state grants: exact names (no wildcards, no prefixes)."""

    description: Description = ""
    capabilities: Annotated[frozenset[CapabilityName], Field(max_length=MAX_NAMES_PER_SURFACE)]
    schemas: Annotated[frozenset[SchemaName], Field(max_length=MAX_NAMES_PER_SURFACE)]
    limits: SurfaceLimits

    _unique = field_validator("capabilities", "schemas", mode="before")(_no_duplicates)

    @field_validator("capabilities", "schemas", mode="before")
    @classmethod
    def _json_array(cls, value: Any) -> Any:
        # Lax frozenset validation would also take a dict's keys or a set;
        # the document's form is a JSON array.
        if not isinstance(value, list | tuple | set | frozenset):
            raise ValueError("must be an array of names")
        return value


class Surfaces(_Strict):
    """All four states, each required."""

    cold: Surface
    warming: Surface
    established: Surface
    authoritative: Surface

    def of(self, state: ReputationState) -> Surface:
        surface: Surface = getattr(self, state.value)
        return surface


class DynamicContract(_Strict):
    contract_id: ContractId
    version: Version
    description: Description = ""
    surfaces: Surfaces

    def surface(self, state: ReputationState | str | None) -> Surface:
        return resolve_surface(self, state)

    @property
    def capabilities(self) -> frozenset[str]:
        """Every capability some state grants."""
        return frozenset[str]().union(*(self.surfaces.of(s).capabilities for s in STATES))

    @property
    def schemas(self) -> frozenset[str]:
        return frozenset[str]().union(*(self.surfaces.of(s).schemas for s in STATES))


# -- monotonic expansion ------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One way a state's surface fails to expand its lower neighbour's.

    ``missing_*`` hold names (contract contents); :meth:`describe` does not.
    """

    lower: ReputationState
    higher: ReputationState
    missing_capabilities: frozenset[str] = frozenset()
    missing_schemas: frozenset[str] = frozenset()
    lowered_limits: tuple[str, ...] = ()
    not_strict: bool = False

    def describe(self) -> str:
        where = f"{self.higher.value} vs {self.lower.value}"
        parts = []
        if self.missing_capabilities or self.missing_schemas:
            parts.append(
                f"lacks {len(self.missing_capabilities)} capability(ies) and "
                f"{len(self.missing_schemas)} schema(s) granted to {self.lower.value}"
            )
        if self.not_strict:
            parts.append("adds no capability or schema (the surface must strictly grow)")
        if self.lowered_limits:
            parts.append(f"lowers limit(s) {', '.join(self.lowered_limits)}")
        return f"{where}: {'; '.join(parts)}"


def monotonicity_violations(contract: DynamicContract) -> list[Violation]:
    """Every adjacent pair of states that breaks monotonic expansion (empty: monotonic)."""
    found: list[Violation] = []
    for lower, higher in itertools.pairwise(STATES):
        lo, hi = contract.surfaces.of(lower), contract.surfaces.of(higher)
        missing_caps = lo.capabilities - hi.capabilities
        missing_schemas = lo.schemas - hi.schemas
        grows = bool(hi.capabilities - lo.capabilities or hi.schemas - lo.schemas)
        lowered = tuple(
            name
            for name in SurfaceLimits.model_fields
            if getattr(hi.limits, name) < getattr(lo.limits, name)
        )
        if missing_caps or missing_schemas or not grows or lowered:
            found.append(
                Violation(
                    lower=lower,
                    higher=higher,
                    missing_capabilities=frozenset(missing_caps),
                    missing_schemas=frozenset(missing_schemas),
                    lowered_limits=lowered,
                    not_strict=not grows,
                )
            )
    return found


def is_monotonic(contract: DynamicContract) -> bool:
    return not monotonicity_violations(contract)


# -- errors -------------------------------------------------------------------


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


class ContractError(CovenantError):
    """A dynamic contract was refused; fatal at startup.

    ``mode`` and ``exit_code`` are stable (docs/contracts.md); ``path`` is
    where the contract came from and ``detail`` why, without its contents.
    """

    mode: ClassVar[str] = ""
    exit_code: ClassVar[int] = 1

    def __init__(self, path: str, detail: str) -> None:
        self.path = _one_line(path)
        line = _one_line(detail)
        super().__init__(f"contract {self.mode}: {line} ({self.path})", detail=line)
        self.detail: str = line


class ContractMissingError(ContractError):
    mode, exit_code, name = "missing", 3, "CONTRACT_MISSING"


class ContractUnparsableError(ContractError):
    mode, exit_code, name = "unparsable", 4, "CONTRACT_UNPARSABLE"


class ContractSchemaError(ContractError):
    mode, exit_code, name = "schema_invalid", 5, "CONTRACT_SCHEMA_INVALID"


class ContractNotMonotonicError(ContractError):
    mode, exit_code, name = "non_monotonic", 6, "CONTRACT_NOT_MONOTONIC"

    def __init__(self, path: str, violations: list[Violation]) -> None:
        super().__init__(path, "; ".join(v.describe() for v in violations))
        self.violations = tuple(violations)


class ContractOverrideNotAllowedError(ContractError):
    mode, exit_code, name = "override_not_allowed", 7, "CONTRACT_OVERRIDE_NOT_ALLOWED"


class ContractOverrideTooLargeError(ContractError):
    mode, exit_code, name = "override_too_large", 8, "CONTRACT_OVERRIDE_TOO_LARGE"


FAILURE_MODES: Final[tuple[type[ContractError], ...]] = (
    ContractMissingError,
    ContractUnparsableError,
    ContractSchemaError,
    ContractNotMonotonicError,
    ContractOverrideNotAllowedError,
    ContractOverrideTooLargeError,
)
EXIT_VALID: Final = 0
EXIT_CODES: Final = {cls.mode: cls.exit_code for cls in FAILURE_MODES}


def _log_failure(exc: ContractError) -> None:
    log.error(
        "dynamic contract refused: mode=%s path=%s detail=%s",
        exc.mode,
        exc.path,
        exc.detail,
        extra={"mode": exc.mode, "path": exc.path, "detail": exc.detail},
    )


# -- parsing ------------------------------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # Two values for one key: which one wins depends on the reader.
            raise ValueError("duplicate object key")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_input=False, include_url=False)
    shown = [
        f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}" for e in errors[:3]
    ]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(shown) + more


def parse_contract(data: bytes | str, *, source: str = "<memory>") -> DynamicContract:
    """Parse and check a contract document; raises, does not log.

    Raises :class:`ContractUnparsableError` (not UTF-8, not JSON, a duplicate
    key, NaN/Infinity), :class:`ContractSchemaError` or
    :class:`ContractNotMonotonicError`.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        document = json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant
        )
    except UnicodeDecodeError as exc:
        raise ContractUnparsableError(source, f"not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ContractUnparsableError(
            source, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ContractUnparsableError(source, "not JSON: nested too deeply") from None
    except ValueError as exc:  # from the hooks above
        raise ContractUnparsableError(source, f"not JSON: {exc}") from None
    try:
        contract = DynamicContract.model_validate(document)
    except ValidationError as exc:
        # Not chained: a ValidationError's text carries the input values.
        raise ContractSchemaError(source, _describe(exc)) from None
    violations = monotonicity_violations(contract)
    if violations:
        raise ContractNotMonotonicError(source, violations)
    return contract


def _read_bounded(path: str) -> bytes:
    """The file's bytes, refusing more than :data:`MAX_OVERRIDE_BYTES` before parsing."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ContractMissingError(path, "no such file") from None
    except PermissionError:
        raise ContractMissingError(path, "not readable (permission denied)") from None
    except OSError as exc:
        raise ContractMissingError(path, f"cannot be opened ({exc.strerror})") from None
    except ValueError:  # os.open's "embedded null byte": no file has that name
        raise ContractMissingError(path, "cannot be opened (a NUL byte in the path)") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ContractMissingError(path, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_OVERRIDE_BYTES + 1)
    except OSError as exc:
        raise ContractMissingError(path, f"cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_OVERRIDE_BYTES:
        raise ContractOverrideTooLargeError(
            path, f"larger than {MAX_OVERRIDE_BYTES} bytes (64 KiB), refused before parsing"
        )
    return data


def _read_shipped() -> bytes:
    try:
        return resources.files("covenant").joinpath(SHIPPED_CONTRACT).read_bytes()
    except OSError:
        raise ContractMissingError(
            SHIPPED_SOURCE, "the shipped contract is not installed"
        ) from None


def _override_refusal(settings: Settings) -> str | None:
    if settings.env == "production":
        return "contract overrides are never allowed when COVENANT_ENV=production"
    if not settings.allow_contract_override:
        return "COVENANT_CONTRACT_PATH is set but COVENANT_ALLOW_CONTRACT_OVERRIDE is not true"
    return None


def _load(override: str | None, settings: Settings) -> tuple[DynamicContract, str]:
    if not override:
        return parse_contract(_read_shipped(), source=SHIPPED_SOURCE), SHIPPED_SOURCE
    refusal = _override_refusal(settings)
    if refusal is not None:  # decided before the file is even opened
        raise ContractOverrideNotAllowedError(override, refusal)
    return parse_contract(_read_bounded(override), source=override), override


# -- the API ------------------------------------------------------------------


def load_contract(
    path: str | os.PathLike[str] | None = None, *, settings: Settings | None = None
) -> DynamicContract:
    """The contract in force: the override, if one is set and allowed, else the shipped one.

    ``path`` is an override file and takes the place of
    ``settings.contract_path`` (``COVENANT_CONTRACT_PATH``); either is
    subject to the override rules. With neither, the shipped contract is
    loaded (always allowed, whatever the environment). Any failure raises
    its :class:`ContractError` subclass after exactly one ERROR log line.
    """
    settings = settings if settings is not None else load_settings()
    override = os.fspath(path) if path is not None else settings.contract_path
    try:
        contract, source = _load(override, settings)
    except ContractError as exc:
        _log_failure(exc)
        raise
    log.info(
        "dynamic contract %s v%s loaded from %s",
        contract.contract_id,
        contract.version,
        source,
        extra={"path": source},
    )
    return contract


@functools.cache
def shipped_contract() -> DynamicContract:
    """The contract shipped with the package (no override rules apply)."""
    return load_contract(settings=load_settings({}))


def read_contract_file(path: str | os.PathLike[str]) -> DynamicContract:
    """Check one file as the pre-deploy gate does: size, JSON, schema, monotonicity.

    No override policy applies (that depends on where the file is deployed);
    the 64 KiB limit does, because a contract file deployed anywhere but the
    package is an override. Failures are logged once, like :func:`load_contract`.
    """
    name = os.fspath(path)
    try:
        return parse_contract(_read_bounded(name), source=name)
    except ContractError as exc:
        _log_failure(exc)
        raise


def validate_contract_file(path: str | os.PathLike[str]) -> int:
    """The exit code of checking ``path``: 0 valid, else its mode's code (3..8)."""
    try:
        read_contract_file(path)
    except ContractError as exc:
        return exc.exit_code
    return EXIT_VALID


def cli_validate(path: str, *, as_override: bool = False, settings: Settings | None = None) -> int:
    """``covenant contract validate FILE [--as-override]``: one line, an exit code.

    Valid: ``contract <id> v<version>: valid (4 surfaces, N capabilities)`` on
    stdout, exit 0. Invalid: ``contract <path>: invalid: <mode>: <detail>`` on
    stderr, exit :attr:`ContractError.exit_code` of the mode (3..8). With
    ``as_override`` the file is also checked against this environment's
    override rules, as if it were ``COVENANT_CONTRACT_PATH``. Nothing is
    logged: the printed line is the report (the CLI's log handler would
    print it a second time).
    """
    try:
        if not path:
            raise ContractMissingError(path, "no path given")
        if as_override:
            effective = settings if settings is not None else load_settings()
            contract, _ = _load(path, effective)
        else:
            contract = parse_contract(_read_bounded(path), source=path)
    except ContractError as exc:
        print(f"contract {exc.path}: invalid: {exc.mode}: {exc.detail}", file=sys.stderr)
        return exc.exit_code
    print(
        f"contract {contract.contract_id} v{contract.version}: valid "
        f"({len(STATES)} surfaces, {len(contract.capabilities)} capabilities)"
    )
    return EXIT_VALID


def as_state(state: ReputationState | str | None) -> ReputationState:
    """A reputation state, failing closed: anything unknown is ``cold``.

    ``None`` (no reputation recorded) is ``cold``. An unknown string — a
    typo, another case, a state this version does not know — is ``cold``
    too, with a warning: never more than the lowest surface.
    """
    if isinstance(state, ReputationState):
        return state
    if isinstance(state, str):
        try:
            return ReputationState(state)
        except ValueError:
            pass
    if state is not None:
        log.warning(
            "unknown reputation state %.40r: resolved as cold",
            state,
            extra={"state": repr(state)[:40]},
        )
    return ReputationState.COLD


def resolve_surface(contract: DynamicContract, state: ReputationState | str | None) -> Surface:
    """The surface of ``state`` (fail-closed: unknown or ``None`` → the ``cold`` surface)."""
    return contract.surfaces.of(as_state(state))


def is_capability_granted(surface: Surface, capability: str) -> bool:
    """Exact membership: ``tools`` does not grant ``tools.read``; non-strings are never granted."""
    return isinstance(capability, str) and capability in surface.capabilities


def is_schema_granted(surface: Surface, schema: str) -> bool:
    return isinstance(schema, str) and schema in surface.schemas
