"""The window of an analysis and how it splits over the rollups (pure arithmetic).

:func:`window_for` gives ``[until_ns − hours h, until_ns)``: every figure describes what
happened in that half-open range, so a window is always ``hours`` long and the monthly
extrapolation (× 720 / hours) scales what was really seen.

:func:`span_of` splits a range into what each source answers: whole UTC days (the daily
rollups), whole 6-hour blocks around them (the 6-hourly ones), whole clock hours around
those (the hourly ones) and the partial hour at each end (raw rows). Any range is then
at most one run of days, 2 runs of blocks (up to 3 blocks each), 2 runs of hours (up to
5 each) and 2 partial hours. The failures also have weekly rollups:
:meth:`Span.failure_params` splits the days further into whole weeks (day // 7) and up
to 2 × 6 days around them.
"""

from __future__ import annotations

from dataclasses import dataclass

from lnflow.store.rollups import BLOCK_HOURS, DAYS_PER_WEEK, HOURS_PER_DAY, NS_PER_HOUR

__all__ = ["EMPTY", "Span", "UnitRange", "span_of", "window_for"]

#: units ``first..last``, inclusive; empty when first > last
UnitRange = tuple[int, int]
EMPTY: UnitRange = (1, 0)


def window_for(until_ns: int, hours: int) -> tuple[int, int]:
    """``(since_ns, until_ns)`` of exactly the last ``hours`` hours before ``until_ns``.

    ``since_ns = until_ns − hours × NS_PER_HOUR``; the window is ``[since_ns, until_ns)``.
    At 10:20 a 2-hour window runs from 08:20 to 10:20.
    """
    if hours < 1:
        raise ValueError("hours must be >= 1")
    return until_ns - hours * NS_PER_HOUR, until_ns


@dataclass(frozen=True, slots=True)
class Span:
    """``[lo, hi)`` as whole UTC days, whole 6-hour blocks outside them, whole clock hours
    outside those, and partial hours.

    Days are numbered hour // 24, blocks hour // BLOCK_HOURS, hours ns // NS_PER_HOUR.
    """

    days: UnitRange
    blocks: tuple[UnitRange, UnitRange]  # before and after the days
    hours: tuple[UnitRange, UnitRange]  # before and after the blocks
    parts: tuple[tuple[int, int], ...]  # partial ranges [lo, hi), each inside one clock hour

    @property
    def has_rollups(self) -> bool:
        """Whether any whole day, block or hour is in the span."""
        return any(first <= last for first, last in (self.days, *self.blocks, *self.hours))

    def range_params(self) -> dict[str, int]:
        """The bounds as the rollup statements name them (see :mod:`.sql`)."""
        (d0, d1), ((c0, c1), (e0, e1)), ((a0, a1), (b0, b1)) = self.days, self.blocks, self.hours
        return {
            "d0": d0,
            "d1": d1,
            "c0": c0,
            "c1": c1,
            "e0": e0,
            "e1": e1,
            "a0": a0,
            "a1": a1,
            "b0": b0,
            "b1": b1,
        }

    def failure_params(self) -> dict[str, int]:
        """:meth:`range_params` with the days split into whole weeks (``w0``, ``w1``) and
        the days before (``d0``, ``d1``) and after them (``f0``, ``f1``): the failure
        rollups' bounds. Without a whole week, all days are before (no week, none after).
        """
        (d0, d1), (w0, w1), (f0, f1) = _whole(self.days[0], self.days[1] + 1, DAYS_PER_WEEK)
        return self.range_params() | {"d0": d0, "d1": d1, "w0": w0, "w1": w1, "f0": f0, "f1": f1}


def _whole(first: int, end: int, size: int) -> tuple[UnitRange, UnitRange, UnitRange]:
    """Units ``first .. end − 1`` as (before, whole groups of ``size`` units, after).

    The groups are numbered unit // size; the ranges before and after are in units.
    """
    first_group = -(-first // size)
    end_group = end // size
    if first_group >= end_group:  # no whole group
        return (first, end - 1), EMPTY, EMPTY
    return (
        (first, first_group * size - 1),
        (first_group, end_group - 1),
        (end_group * size, end - 1),
    )


def span_of(lo: int, hi: int) -> Span:
    """``[lo, hi)`` (ns) split into days, blocks, hours and partial hours."""
    if lo >= hi:
        return Span(EMPTY, (EMPTY, EMPTY), (EMPTY, EMPTY), ())
    first = -(-lo // NS_PER_HOUR)  # the first hour starting at or after lo
    end = hi // NS_PER_HOUR  # the hour hi falls in (not whole unless hi is its start)
    if first > end:  # lo and hi inside one clock hour
        return Span(EMPTY, (EMPTY, EMPTY), (EMPTY, EMPTY), ((lo, hi),))
    parts = []
    if lo < first * NS_PER_HOUR:
        parts.append((lo, first * NS_PER_HOUR))
    if end * NS_PER_HOUR < hi:
        parts.append((end * NS_PER_HOUR, hi))
    hours_before, blocks, hours_after = _whole(first, end, BLOCK_HOURS)
    if blocks == EMPTY:
        return Span(EMPTY, (EMPTY, EMPTY), (hours_before, EMPTY), tuple(parts))
    blocks_before, days, blocks_after = _whole(
        blocks[0], blocks[1] + 1, HOURS_PER_DAY // BLOCK_HOURS
    )
    return Span(days, (blocks_before, blocks_after), (hours_before, hours_after), tuple(parts))
