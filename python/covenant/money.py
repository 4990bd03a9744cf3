"""Money types: integer micro-USD and basis points, never float.

:class:`MicroUSD` mirrors the SQL domain ``covenant.micro_usd`` (a
``bigint`` ≥ 0) and :class:`BasisPoints` mirrors ``covenant.basis_points``
(0..10000). Both are ``int`` subclasses with validating constructors, so a
value of either type is known to be in range, arithmetic stays exact (Python
ints are unbounded, and every value up to 2**63 - 1 round-trips through
PostgreSQL's ``bigint``), and mypy keeps them apart from plain ints where a
signature asks for one. A ``float`` or a ``bool`` is refused outright: there
is no float on a money path.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

BIGINT_MAX: Final = 2**63 - 1
BPS_WHOLE: Final = 10_000


def _exact_int(value: Any, what: str) -> int:
    if isinstance(value, bool | float):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}")
    if isinstance(value, Decimal):
        if value != value.to_integral_value():
            raise ValueError(f"{what} must be a whole number, not {value}")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit() or not text.isascii():
            raise ValueError(f"{what} must be a decimal string of digits, not {value!r}")
        return int(text)
    if isinstance(value, int):
        return int(value)
    raise TypeError(f"{what} must be an integer, not {type(value).__name__}")


class MicroUSD(int):
    """An amount of micro-USD (1 USD = 1,000,000): 0 ≤ value ≤ 2**63 - 1."""

    def __new__(cls, value: Any) -> MicroUSD:
        n = _exact_int(value, "a micro-USD amount")
        if n < 0:
            raise ValueError(f"a micro-USD amount cannot be negative: {n}")
        if n > BIGINT_MAX:
            raise ValueError(f"a micro-USD amount is at most 2**63 - 1: {n}")
        return super().__new__(cls, n)

    @classmethod
    def from_usd(cls, usd: str | Decimal) -> MicroUSD:
        """``MicroUSD.from_usd("1.50")`` is 1,500,000; finer than a micro-USD is refused."""
        if isinstance(usd, float):
            raise TypeError("USD amounts are given as str or Decimal, never float")
        micro = Decimal(usd) * 1_000_000
        return cls(micro)

    def to_usd(self) -> Decimal:
        return Decimal(int(self)) / 1_000_000

    def __repr__(self) -> str:
        return f"MicroUSD({int(self)})"

    def __str__(self) -> str:
        return int.__repr__(self)


class BasisPoints(int):
    """A share in basis points: 0 ≤ value ≤ 10000 (10000 is the whole)."""

    def __new__(cls, value: Any) -> BasisPoints:
        n = _exact_int(value, "basis points")
        if not 0 <= n <= BPS_WHOLE:
            raise ValueError(f"basis points are 0..10000, not {n}")
        return super().__new__(cls, n)

    def __repr__(self) -> str:
        return f"BasisPoints({int(self)})"

    def __str__(self) -> str:
        return int.__repr__(self)


def split_by_bps(amount: MicroUSD | int, shares: list[BasisPoints] | list[int]) -> list[MicroUSD]:
    """The parts of ``amount`` for ``shares``, exactly as ``covenant.split_by_bps`` computes them.

    Each part is ``floor(amount * bps / 10000)``; the remainder (fewer
    micro-USD than there are shares) goes one each to the largest fractional
    remainders, ties to the earlier share. The parts sum to ``amount`` when the
    shares sum to 10000.
    """
    total = MicroUSD(amount)
    bps = [BasisPoints(s) for s in shares]
    if sum(bps) != BPS_WHOLE:
        raise ValueError(f"shares must sum to 10000 basis points, not {sum(bps)}")
    bases = [total * b // BPS_WHOLE for b in bps]
    rems = [total * b % BPS_WHOLE for b in bps]
    leftover = total - sum(bases)
    order = sorted(range(len(bps)), key=lambda i: (-rems[i], i))
    for i in order[:leftover]:
        bases[i] += 1
    return [MicroUSD(b) for b in bases]
