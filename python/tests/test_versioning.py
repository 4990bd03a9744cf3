"""Protocol version negotiation (covenant.versioning): seed 000 Task 1.3's mixed-version peers.

covenant prefers 8.2.0 and also speaks 7.11.0 (the dual-accept window); a
peer at 7.11.0 is accepted and one at 6.0.0 refused. The edge cases
(8.2.5, 8.3.0, 7.12.0, 8.1.0, 9.0.0) follow the rule in docs/versioning.md.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from covenant.versioning import (
    MAX_OFFERED_VERSIONS,
    MIN_SUPPORTED_VERSION,
    PREFERRED_VERSION,
    SUPPORTED_VERSIONS,
    CompatibilityResult,
    InvalidVersionError,
    SemVer,
    VersionError,
    VersionNegotiationError,
    negotiate_version,
    validate_compatibility,
)


def test_constants() -> None:
    assert PREFERRED_VERSION == "8.2.0"
    assert set(SUPPORTED_VERSIONS) == {"7.11.0", "8.2.0"}
    assert SUPPORTED_VERSIONS[0] == PREFERRED_VERSION
    assert MIN_SUPPORTED_VERSION == "7.11.0"


# -- mixed-version peers (seed: arrakis 8.2.0 <-> finn 7.11.0 PASS, <-> finn 6.0.0 FAIL) --


def test_peer_at_7_11_0_is_accepted() -> None:
    assert validate_compatibility("7.11.0") == CompatibilityResult(
        peer_version="7.11.0", compatible=True, negotiated="7.11.0"
    )


def test_peer_at_6_0_0_is_rejected() -> None:
    result = validate_compatibility("6.0.0")
    assert not result.compatible and result.negotiated is None
    assert result.reason is not None and "7.11.0" in result.reason


def test_peer_at_8_2_0_is_accepted_exactly() -> None:
    result = validate_compatibility("8.2.0")
    assert result.compatible and result.negotiated == "8.2.0" and result.warning is None


@pytest.mark.parametrize(
    ("peer", "compatible", "negotiated", "warned"),
    [
        ("8.2.5", True, "8.2.0", False),  # a patch: bug fixes, same contract
        ("8.3.0", True, "8.2.0", True),  # a minor ahead: additive, works, warned
        ("8.10.0", True, "8.2.0", True),  # numeric, not lexicographic
        ("7.12.0", True, "7.11.0", True),
        ("7.11.9", True, "7.11.0", False),
        ("8.1.0", False, None, False),  # older than anything we speak in 8.x
        ("8.0.0", False, None, False),
        ("7.10.0", False, None, False),
        ("7.2.0", False, None, False),  # 7.2 < 7.11 numerically
        ("9.0.0", False, None, False),  # a major we do not speak
        ("0.0.0", False, None, False),
        ("6.99.99", False, None, False),
    ],
)
def test_compatibility_rule(
    peer: str, compatible: bool, negotiated: str | None, warned: bool
) -> None:
    result = validate_compatibility(peer)
    assert result.peer_version == peer
    assert result.compatible is compatible
    assert result.negotiated == negotiated
    assert (result.warning is not None) is warned
    assert (result.reason is None) is compatible


def test_negotiation_prefers_8_2_0() -> None:
    assert negotiate_version(["7.11.0", "8.2.0"]) == "8.2.0"
    assert negotiate_version(["8.2.0", "7.11.0"]) == "8.2.0"
    assert negotiate_version(("8.2.0",)) == "8.2.0"


def test_negotiation_falls_back_to_7_11_0() -> None:
    assert negotiate_version(["7.11.0"]) == "7.11.0"
    assert negotiate_version(["6.0.0", "7.11.0"]) == "7.11.0"
    assert negotiate_version(["8.1.0", "7.12.0"]) == "7.11.0"
    assert negotiate_version(iter(["7.11.0"])) == "7.11.0"


def test_negotiation_with_newer_peers() -> None:
    assert negotiate_version(["8.3.0"]) == "8.2.0"
    assert negotiate_version(["9.0.0", "8.2.7"]) == "8.2.0"


@pytest.mark.parametrize("offer", [[], ["6.0.0"], ["9.0.0", "6.0.0"], ["8.1.0", "7.10.0"]])
def test_negotiation_fails_when_disjoint(offer: list[str]) -> None:
    with pytest.raises(VersionNegotiationError) as exc:
        negotiate_version(offer)
    assert exc.value.offered == tuple(offer)
    assert exc.value.supported == SUPPORTED_VERSIONS
    assert "no protocol version in common" in str(exc.value)
    assert isinstance(exc.value, VersionError) and isinstance(exc.value, ValueError)


def test_negotiation_refuses_a_single_string() -> None:
    with pytest.raises(TypeError):
        negotiate_version("8.2.0")


def test_negotiation_refuses_garbage_offers() -> None:
    with pytest.raises(InvalidVersionError):
        negotiate_version(["8.2.0", "latest"])


# -- strict parsing ----------------------------------------------------------------------

MALFORMED: list[tuple[object, str]] = [
    ("", "empty"),
    ("8.2", "MAJOR.MINOR.PATCH"),
    ("8", "MAJOR.MINOR.PATCH"),
    ("8.2.0.1", "MAJOR.MINOR.PATCH"),
    ("v8.2.0", "'v' prefix"),
    ("V8.2.0", "'v' prefix"),
    ("08.2.0", "leading zeros"),
    ("8.02.0", "leading zeros"),
    ("8.2.00", "leading zeros"),
    ("8.2.0-rc.1", "pre-release"),
    ("8.2.0+build.5", "build"),
    (" 8.2.0", "whitespace"),
    ("8.2.0\n", "whitespace"),
    ("8.x.0", "decimal"),
    ("8..0", "decimal"),
    ("-1.2.0", "decimal"),
    ("8.2.0" + "0" * 100, "too long"),
    ("\u0668.2.0", "ASCII"),  # Arabic-Indic eight
    ("\uff18.2.0", "ASCII"),  # full-width eight
    ("latest", "MAJOR.MINOR.PATCH"),
    (None, "not NoneType"),
    (820, "not int"),
    (b"8.2.0", "not bytes"),
]


@pytest.mark.parametrize(("text", "why"), MALFORMED)
def test_malformed_versions(text: object, why: str) -> None:
    with pytest.raises(InvalidVersionError) as exc:
        SemVer.parse(text)
    assert why in str(exc.value)
    with pytest.raises(InvalidVersionError):
        validate_compatibility(text)  # type: ignore[arg-type]


def test_ordering_is_numeric() -> None:
    assert SemVer.parse("7.11.0") > SemVer.parse("7.2.0")
    assert SemVer.parse("8.2.0") > SemVer.parse("7.99.99")
    assert sorted(SemVer.parse(v) for v in ("8.2.0", "7.11.0", "8.10.0", "8.2.1")) == [
        SemVer(7, 11, 0),
        SemVer(8, 2, 0),
        SemVer(8, 2, 1),
        SemVer(8, 10, 0),
    ]


versions = st.tuples(*(st.integers(min_value=0, max_value=10**6) for _ in range(3)))


@given(versions)
def test_parse_round_trips(parts: tuple[int, int, int]) -> None:
    text = ".".join(str(p) for p in parts)
    parsed = SemVer.parse(text)
    assert (parsed.major, parsed.minor, parsed.patch) == parts
    assert str(parsed) == text and SemVer.parse(str(parsed)) == parsed


@given(versions)
def test_compatibility_is_total_and_consistent(parts: tuple[int, int, int]) -> None:
    """Every well-formed version gets an answer; compatible ones negotiate what they say."""
    text = ".".join(str(p) for p in parts)
    result = validate_compatibility(text)
    if result.compatible:
        assert result.negotiated in SUPPORTED_VERSIONS
        assert negotiate_version([text]) == result.negotiated
        spoken = SemVer.parse(result.negotiated)
        assert spoken.major == parts[0] and spoken <= SemVer(*parts)
    else:
        with pytest.raises(VersionNegotiationError):
            negotiate_version([text])


@given(st.text(max_size=20))
def test_parse_never_crashes(text: str) -> None:
    try:
        parsed = SemVer.parse(text)
    except InvalidVersionError:
        return
    assert str(parsed) == text


def test_an_offer_longer_than_the_bound_is_refused_without_reading_it_all() -> None:
    assert negotiate_version(["6.0.0"] * (MAX_OFFERED_VERSIONS - 1) + ["8.2.0"]) == "8.2.0"

    def endless() -> Iterator[str]:
        while True:
            yield "8.2.0"

    with pytest.raises(InvalidVersionError, match="at most 32"):
        negotiate_version(endless())
