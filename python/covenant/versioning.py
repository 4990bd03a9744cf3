"""Protocol version negotiation: which contract version covenant speaks with a peer.

covenant speaks protocol 8.2.0 (preferred) and 7.11.0 (the dual-accept
window of a rollout: a peer still on 7.11.0 keeps working while it
upgrades). Versions are strict semver ``MAJOR.MINOR.PATCH`` — no ``v``
prefix, no leading zeros, no pre-release or build suffix — and follow
the protocol's policy: PATCH fixes, MINOR adds optional things only,
MAJOR breaks.

A peer version is compatible when covenant supports a version of the same
major and the peer is at or above it: the peer then understands that
version's messages (minor releases are additive). So 8.2.5 is compatible
(speak 8.2.0), 8.3.0 and 7.12.0 are compatible with a warning (the peer is
ahead by a minor; speak 8.2.0 / 7.11.0), while 8.1.0 and 7.10.0 (older
than anything covenant speaks in their major), 6.0.0 and 9.0.0 (a major
covenant does not speak) are not. See docs/versioning.md, which also gives
the criteria for closing the 7.11.0 window.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict

MAX_OFFERED_VERSIONS: Final = 32

PREFERRED_VERSION: Final = "8.2.0"
# In order of preference: negotiation picks the first one the peer can speak.
SUPPORTED_VERSIONS: Final[tuple[str, ...]] = ("8.2.0", "7.11.0")
MIN_SUPPORTED_VERSION: Final = "7.11.0"
MAX_VERSION_LENGTH: Final = 64

_SEMVER: Final = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")


class VersionError(ValueError):
    """Base of the versioning errors."""


class InvalidVersionError(VersionError):
    """A version string is not strict ``MAJOR.MINOR.PATCH``."""

    def __init__(self, value: object, reason: str) -> None:
        super().__init__(f"invalid protocol version {value!r}: {reason}")
        self.value = value
        self.reason = reason


class VersionNegotiationError(VersionError):
    """No protocol version is spoken by both sides."""

    def __init__(self, offered: tuple[str, ...], reasons: tuple[str, ...] = ()) -> None:
        offer = ", ".join(offered) or "nothing"
        detail = f" ({'; '.join(reasons)})" if reasons else ""
        super().__init__(
            f"no protocol version in common: the peer offers {offer}, covenant speaks "
            f"{', '.join(SUPPORTED_VERSIONS)}{detail}"
        )
        self.offered = offered
        self.supported = SUPPORTED_VERSIONS


@dataclass(frozen=True, order=True)
class SemVer:
    """A strict ``MAJOR.MINOR.PATCH`` version; ordered numerically."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: object) -> SemVer:
        if not isinstance(text, str):
            raise InvalidVersionError(text, f"a version is a str, not {type(text).__name__}")
        if len(text) > MAX_VERSION_LENGTH:
            raise InvalidVersionError(text[:MAX_VERSION_LENGTH] + "...", "too long")
        if not text.isascii():
            raise InvalidVersionError(text, "only ASCII digits and dots")
        match = _SEMVER.fullmatch(text)
        if match is None:
            raise InvalidVersionError(text, _why_not(text))
        major, minor, patch = (int(g) for g in match.groups())
        return cls(major, minor, patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def _why_not(text: str) -> str:
    """Say what is wrong with a string that is not strict semver (for the error)."""
    parts = text.split(".")
    checks: tuple[tuple[bool, str], ...] = (
        (not text, "empty"),
        (text != text.strip(), "surrounding whitespace"),
        (text[:1] in ("v", "V"), "no 'v' prefix: write MAJOR.MINOR.PATCH"),
        (
            re.match(r"[0-9]+\.[0-9]+\.[0-9]+[-+]", text) is not None,
            "pre-release and build suffixes are not protocol versions",
        ),
        (
            len(parts) != len(("MAJOR", "MINOR", "PATCH")),
            f"expected MAJOR.MINOR.PATCH, got {len(parts)} part(s)",
        ),
        (any(len(p) > 1 and p.startswith("0") for p in parts), "no leading zeros"),
    )
    return next((why for failed, why in checks if failed), "each part must be a decimal number")


_SUPPORTED: Final[tuple[SemVer, ...]] = tuple(SemVer.parse(v) for v in SUPPORTED_VERSIONS)


class CompatibilityResult(BaseModel):
    """Whether a peer at ``peer_version`` can talk to covenant, and in which version.

    ``negotiated`` is the version covenant speaks with it (None when not
    compatible); ``warning`` is set when the peer is a minor release ahead
    (it works, but the peer has features covenant does not use);
    ``reason`` says why an incompatible peer is refused.
    """

    model_config = ConfigDict(frozen=True)

    peer_version: str
    compatible: bool
    negotiated: str | None = None
    warning: str | None = None
    reason: str | None = None


def _check(peer: SemVer) -> CompatibilityResult:
    text = str(peer)
    same_major = [s for s in _SUPPORTED if s.major == peer.major]
    if not same_major:
        majors = sorted({s.major for s in _SUPPORTED})
        lowest = min(_SUPPORTED)
        if peer < lowest:
            why = f"{text} is below the minimum supported version {lowest}"
        else:
            why = f"major {peer.major} is not spoken (supported majors: {majors})"
        return CompatibilityResult(peer_version=text, compatible=False, reason=why)
    ours = min(same_major)
    if peer < ours:
        return CompatibilityResult(
            peer_version=text,
            compatible=False,
            reason=f"{text} predates {ours}, the oldest {peer.major}.x version covenant speaks",
        )
    # The newest version of that major the peer can understand (ours ≤ peer).
    spoken = max(s for s in same_major if s <= peer)
    warning = None
    if peer.minor > spoken.minor:
        warning = (
            f"peer {text} is ahead of {spoken} by a minor release; speaking {spoken} "
            "(minor releases are additive)"
        )
    return CompatibilityResult(
        peer_version=text, compatible=True, negotiated=str(spoken), warning=warning
    )


def validate_compatibility(peer_version: str) -> CompatibilityResult:
    """Whether a peer at ``peer_version`` is accepted (7.11.0 yes, 6.0.0 no).

    Raises :class:`InvalidVersionError` when the string is not strict semver.
    """
    return _check(SemVer.parse(peer_version))


def negotiate_version(peer_versions: Iterable[str]) -> str:
    """The version to speak with a peer offering ``peer_versions``.

    The first of :data:`SUPPORTED_VERSIONS` (8.2.0, then 7.11.0) that some
    offered version is compatible with. Raises :class:`InvalidVersionError`
    when an offered version is malformed (a peer that advertises garbage is
    refused, not half-understood) and :class:`VersionNegotiationError` when
    nothing is in common (including an empty offer). An offer of more than
    :data:`MAX_OFFERED_VERSIONS` versions is malformed too (it is read no
    further, so a hostile peer cannot make the error, or the work, large).
    """
    if isinstance(peer_versions, str | bytes):
        raise TypeError("peer_versions is a collection of version strings, not one string")
    raw = tuple(itertools.islice(peer_versions, MAX_OFFERED_VERSIONS + 1))
    if len(raw) > MAX_OFFERED_VERSIONS:
        raise InvalidVersionError(
            f"{MAX_OFFERED_VERSIONS + 1}+ versions",
            f"at most {MAX_OFFERED_VERSIONS} may be offered",
        )
    offered = tuple(SemVer.parse(v) for v in raw)
    results = [_check(v) for v in offered]
    spoken = {r.negotiated for r in results if r.compatible}
    for version in SUPPORTED_VERSIONS:
        if version in spoken:
            return version
    raise VersionNegotiationError(
        tuple(str(v) for v in offered), tuple(r.reason for r in results if r.reason)
    )
