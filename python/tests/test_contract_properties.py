"""Monotonic expansion as properties (hypothesis), against the formal definition.

Contracts are generated as documents: a universe of names, each introduced
at some state and inherited by every higher one. The loader must accept
exactly the documents the definition in ``covenant.contracts`` accepts.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from covenant.catalogue import REPUTATION_RANK, ReputationState
from covenant.contracts import (
    ContractNotMonotonicError,
    DynamicContract,
    is_capability_granted,
    is_schema_granted,
    monotonicity_violations,
    parse_contract,
    resolve_surface,
)
from covenant.money import BIGINT_MAX

STATES = sorted(ReputationState, key=REPUTATION_RANK.__getitem__)
LIMITS = ("max_reservation_micro", "requests_per_minute", "max_concurrent_requests")
BOUNDS = {
    "max_reservation_micro": (0, BIGINT_MAX),
    "requests_per_minute": (1, 1_000_000),
    "max_concurrent_requests": (1, 100_000),
}

segment = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
capability_names = st.builds(lambda a, b: f"{a}.{b}", segment, segment)
schema_names = st.builds(
    lambda name, v: f"{name}/v{v}",
    st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
    st.integers(1, 9),
)
EXAMPLES = settings(max_examples=100, deadline=None)


def _limits_strategy() -> st.SearchStrategy[list[dict[str, int]]]:
    """Non-decreasing limits, cold to authoritative."""
    columns = [
        st.lists(st.integers(*BOUNDS[name]), min_size=4, max_size=4).map(sorted) for name in LIMITS
    ]
    return st.tuples(*columns).map(
        lambda cols: [{name: cols[i][s] for i, name in enumerate(LIMITS)} for s in range(4)]
    )


def _document(
    caps: list[frozenset[str]], schemas: list[frozenset[str]], limits: list[dict[str, int]]
) -> dict[str, Any]:
    return {
        "contract_id": "generated",
        "version": "1.0.0",
        "surfaces": {
            state.value: {
                "capabilities": sorted(caps[i]),
                "schemas": sorted(schemas[i]),
                "limits": limits[i],
            }
            for i, state in enumerate(STATES)
        },
    }


@st.composite
def monotonic_documents(draw: st.DrawFn) -> dict[str, Any]:
    caps = draw(st.lists(capability_names, min_size=3, max_size=20, unique=True))
    schemas = draw(st.lists(schema_names, max_size=10, unique=True))
    items = [("c", c) for c in caps] + [("s", s) for s in schemas]
    # the state at which each item is first granted; three items pinned to
    # warming, established and authoritative make every step strict
    levels = draw(st.lists(st.integers(0, 3), min_size=len(items), max_size=len(items)))
    order = draw(st.permutations(range(len(items))))
    for pinned, level in zip(order[:3], (1, 2, 3), strict=True):
        levels[pinned] = level
    granted_caps = [
        frozenset(n for (kind, n), lv in zip(items, levels, strict=True) if kind == "c" and lv <= i)
        for i in range(4)
    ]
    granted_schemas = [
        frozenset(n for (kind, n), lv in zip(items, levels, strict=True) if kind == "s" and lv <= i)
        for i in range(4)
    ]
    return _document(granted_caps, granted_schemas, draw(_limits_strategy()))


@st.composite
def perturbed_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Monotonic documents after 0..4 random edits: some still monotonic, most not."""
    doc = draw(monotonic_documents())
    surfaces = [doc["surfaces"][s.value] for s in STATES]
    universe = {
        kind: sorted({n for surface in surfaces for n in surface[kind]})
        for kind in ("capabilities", "schemas")
    }
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, 3))
        edit = draw(st.sampled_from(["remove", "add", "copy_lower", "limit"]))
        kind = draw(st.sampled_from(["capabilities", "schemas"]))
        names = surfaces[i][kind]
        if edit == "remove" and names:
            names.remove(draw(st.sampled_from(names)))
        elif edit == "add" and universe[kind]:
            extra = draw(st.sampled_from(universe[kind]))
            if extra not in names:
                names.append(extra)
        elif edit == "copy_lower" and i > 0:
            surfaces[i][kind] = list(surfaces[i - 1][kind])
        elif edit == "limit":
            name = draw(st.sampled_from(LIMITS))
            surfaces[i]["limits"][name] = draw(st.integers(*BOUNDS[name]))
    return doc


def definition_holds(doc: dict[str, Any]) -> bool:
    """The formal definition, written independently of the implementation."""
    surfaces = [doc["surfaces"][s.value] for s in STATES]
    for lo, hi in itertools.pairwise(surfaces):
        lo_g = {("c", c) for c in lo["capabilities"]} | {("s", s) for s in lo["schemas"]}
        hi_g = {("c", c) for c in hi["capabilities"]} | {("s", s) for s in hi["schemas"]}
        if not set(lo["capabilities"]) <= set(hi["capabilities"]):
            return False
        if not set(lo["schemas"]) <= set(hi["schemas"]):
            return False
        if not lo_g < hi_g:
            return False
        if any(lo["limits"][n] > hi["limits"][n] for n in LIMITS):
            return False
    return True


def parse(doc: dict[str, Any]) -> DynamicContract:
    return parse_contract(json.dumps(doc).encode(), source="<generated>")


@EXAMPLES
@given(monotonic_documents())
def test_generated_monotonic_contracts_are_accepted(doc: dict[str, Any]) -> None:
    assert definition_holds(doc)
    contract = parse(doc)
    assert monotonicity_violations(contract) == []
    assert parse(json.loads(contract.model_dump_json())) == contract  # round trip


@EXAMPLES
@given(monotonic_documents(), st.data())
def test_removing_an_inherited_name_is_non_monotonic(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    surfaces = doc["surfaces"]
    # (higher state, kind, name) for every name a higher state inherits from its lower neighbour
    inherited = [
        (hi.value, kind, name)
        for lo, hi in itertools.pairwise(STATES)
        for kind in ("capabilities", "schemas")
        for name in surfaces[lo.value][kind]
    ]
    # warming always grants a pinned item, so established and authoritative inherit something
    assert inherited
    state, kind, name = data.draw(st.sampled_from(inherited))
    surfaces[state][kind].remove(name)
    assert not definition_holds(doc)
    try:
        parse(doc)
    except ContractNotMonotonicError as exc:
        assert any(v.higher.value == state for v in exc.violations)
        assert any(
            name in (v.missing_capabilities if kind == "capabilities" else v.missing_schemas)
            for v in exc.violations
        )
    else:
        raise AssertionError(f"removing {name} from {state} was accepted")


@EXAMPLES
@given(perturbed_documents())
def test_loader_accepts_exactly_the_definition(doc: dict[str, Any]) -> None:
    try:
        parse(doc)
    except ContractNotMonotonicError:
        accepted = False
    else:
        accepted = True
    event("accepted" if accepted else "refused")
    assert accepted == definition_holds(doc)


@EXAMPLES
@given(monotonic_documents(), st.lists(capability_names | schema_names, max_size=5))
def test_granted_lower_is_a_subset_of_granted_higher(
    doc: dict[str, Any], strangers: list[str]
) -> None:
    contract = parse(doc)
    names = set(strangers) | contract.capabilities | contract.schemas
    for lower, higher in itertools.combinations(STATES, 2):
        lo, hi = resolve_surface(contract, lower), resolve_surface(contract, higher)
        for name in names:
            if is_capability_granted(lo, name):
                assert is_capability_granted(hi, name)
            if is_schema_granted(lo, name):
                assert is_schema_granted(hi, name)
        # the two namespaces are disjoint (a capability has a dot, a schema a slash)
        assert lo.capabilities | lo.schemas < hi.capabilities | hi.schemas
        for limit in LIMITS:
            assert getattr(lo.limits, limit) <= getattr(hi.limits, limit)
    # fail-closed: an unknown state never gets more than cold
    assert resolve_surface(contract, "superuser") == resolve_surface(contract, "cold")
