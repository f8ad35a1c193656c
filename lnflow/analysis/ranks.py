"""Nearest-rank percentiles, the one definition the analysis and the store share.

The nearest rank of ``p`` percent among ``n`` values is the ⌈p·n/100⌉-th smallest (the
first when p·n < 100): the smallest value with at least ``p`` % of the values at or
below it. p50 is the median (for an even count, the lower middle).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from fractions import Fraction

__all__ = ["nearest_rank", "percentile", "percentiles_of"]


def nearest_rank(count: int, p: float | Fraction) -> int:
    """The 1-based rank of the ``p`` th percentile among ``count`` values (``count > 0``)."""
    rank = -(-p * count // 100) if isinstance(p, int) else math.ceil(Fraction(p) * count / 100)
    return max(rank, 1)


def percentiles_of(ordered: Sequence[int], percents: Sequence[int]) -> tuple[int, ...]:
    """The nearest-rank percentiles of sorted values, one per percent (none for no values)."""
    if not ordered:
        return ()
    return tuple(ordered[nearest_rank(len(ordered), p) - 1] for p in percents)


def percentile(values: Iterable[int], p: float | Fraction) -> int:
    """Nearest-rank percentile: the smallest value with at least ``p`` % of values at or below.

    ``p`` is in [0, 100]; p50 is the median (for an even count, the lower middle).
    """
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    return ordered[nearest_rank(len(ordered), p) - 1]
