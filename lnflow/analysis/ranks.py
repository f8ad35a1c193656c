"""Nearest-rank percentiles (:func:`lnflow.domain.nearest_rank`, the one definition),
as the analysis and the store read them.

The nearest rank of ``p`` percent among ``n`` values is the ⌈p·n/100⌉-th smallest (the
first when p·n < 100): the smallest value with at least ``p`` % of the values at or
below it. p50 is the median (for an even count, the lower middle).
"""

from __future__ import annotations

from collections.abc import Sequence

from lnflow.domain import nearest_rank, percentile

__all__ = ["nearest_rank", "percentile", "percentiles_of"]


def percentiles_of(ordered: Sequence[int], percents: Sequence[int]) -> tuple[int, ...]:
    """The nearest-rank percentiles of sorted values, one per percent (none for no values)."""
    if not ordered:
        return ()
    return tuple(ordered[nearest_rank(len(ordered), p) - 1] for p in percents)
